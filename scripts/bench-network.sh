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
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}
cd "$(dirname "$0")/.."
cargo build --quiet --release -p guestward-network --examples
bin="$CARGO_TARGET_DIR/release/examples"
work=$(mktemp -d)
. scripts/lib/socket-helpers.sh

summary="$work/summary.md"
echo "| TCP sockets (helpers / host) | ss -tan | ss -tanp | ports netlink | ports procfs | ratio netlink / ss -tanp | peak RSS (KB) |" >"$summary"
echo "|---|---|---|---|---|---|---|" >>"$summary"

for n in "${counts[@]}"; do
    hold_sockets "$bin/bench_helper" "$n"
    host_sockets=$(ss -Htan | wc -l)
    echo "== $n sockets: $host_sockets TCP sockets on the host; load: $(cut -d' ' -f1-3 /proc/loadavg)"

    # -N: no intermediate shell; hyperfine discards the commands' output itself.
    hyperfine -N --style basic --warmup 3 --runs 20 --export-json "$work/$n.json" \
        -n "ss -tan" "ss -tan" \
        -n "ss -tanp" "ss -tanp" \
        -n "ports netlink" "$bin/ports --backend netlink --format json" \
        -n "ports procfs" "$bin/ports --backend procfs --format json"

    /usr/bin/time -v "$bin/ports" --backend netlink --format json >/dev/null 2>"$work/time.txt"
    rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")
    # Each cell: mean wall ms (mean user+system CPU ms). On a shared, loaded machine the CPU
    # time is the steadier measure; both ratios are printed.
    python3 - "$work/$n.json" "$n/$host_sockets" "$rss" >>"$summary" <<'PY'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
wall = {k: r["mean"] * 1000 for k, r in res.items()}
cpu = {k: (r["user"] + r["system"]) * 1000 for k, r in res.items()}
cell = lambda k: f"{wall[k]:.1f} ({cpu[k]:.1f})"
n, rss = sys.argv[2], sys.argv[3]
print(f'| {n} | {cell("ss -tan")} | {cell("ss -tanp")} | {cell("ports netlink")} | {cell("ports procfs")} '
      f'| {wall["ports netlink"] / wall["ss -tanp"]:.2f} ({cpu["ports netlink"] / cpu["ss -tanp"]:.2f}) | {rss} |')
PY
    stop_helpers
done
echo
cat "$summary"
