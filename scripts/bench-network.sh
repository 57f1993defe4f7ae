#!/usr/bin/env bash
# Network collector benchmark: full socket + owner scan vs `ss -tanp` with N loopback TCP
# sockets held open by two helper processes (N/2 accepted + N/2 connected, each process under
# the 20,000 open-files limit).
#
# usage: scripts/bench-network.sh [N ...]        (default: 1000 5000 10000 20000)
# needs: hyperfine, iproute2 (ss), GNU time (/usr/bin/time). Run as root so both tools see
# every process's descriptors.
set -euo pipefail

counts=("$@")
[ ${#counts[@]} -eq 0 ] && counts=(1000 5000 10000 20000)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/network}
cd "$(dirname "$0")/.."
cargo build --quiet --release -p guestward-network --examples
bin="$CARGO_TARGET_DIR/release/examples"
work=$(mktemp -d)
helper_pids=()

stop_helpers() {
    for p in "${helper_pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${helper_pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    helper_pids=()
}
cleanup() {
    stop_helpers
    exec 3>&- 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The helpers exit on stdin EOF: they read a FIFO this script holds open, so they also go away
# if the script dies without running the trap.
mkfifo "$work/hold"
exec 3<>"$work/hold"

# Waits (bounded: 60 s) for a file to appear.
wait_for() {
    for _ in $(seq 600); do
        [ -s "$1" ] && return 0
        sleep 0.1
    done
    echo "timed out waiting for $1" >&2
    return 1
}

summary="$work/summary.md"
echo "| sockets | ss -tan (ms) | ss -tanp (ms) | ports netlink json (ms) | ports procfs json (ms) | ratio vs ss -tanp | peak RSS (KB) |" >"$summary"
echo "|---|---|---|---|---|---|---|" >>"$summary"

for n in "${counts[@]}"; do
    half=$((n / 2))
    rm -f "$work/port" "$work/ready"
    "$bin/bench_helper" listen "$half" "$work/port" <"$work/hold" &
    helper_pids+=($!)
    wait_for "$work/port"
    "$bin/bench_helper" connect "$(cat "$work/port")" "$half" "$work/ready" <"$work/hold" &
    helper_pids+=($!)
    wait_for "$work/ready"
    sleep 1
    echo "== $n sockets: $(ss -Htan | wc -l) TCP sockets on the host"

    hyperfine --style basic --warmup 2 --runs 15 --export-json "$work/$n.json" \
        -n "ss -tan" "ss -tan >/dev/null" \
        -n "ss -tanp" "ss -tanp >/dev/null" \
        -n "ports netlink" "$bin/ports --backend netlink --format json >/dev/null" \
        -n "ports procfs" "$bin/ports --backend procfs --format json >/dev/null"

    /usr/bin/time -v "$bin/ports" --backend netlink --format json >/dev/null 2>"$work/time.txt"
    rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")
    python3 - "$work/$n.json" "$n" "$rss" >>"$summary" <<'PY'
import json, sys
data = {r["command"]: r["mean"] * 1000 for r in json.load(open(sys.argv[1]))["results"]}
n, rss = sys.argv[2], sys.argv[3]
ratio = data["ports netlink"] / data["ss -tanp"]
print(f'| {n} | {data["ss -tan"]:.1f} | {data["ss -tanp"]:.1f} | {data["ports netlink"]:.1f} | {data["ports procfs"]:.1f} | {ratio:.2f} | {rss} |')
PY
    stop_helpers
done
echo
cat "$summary"
