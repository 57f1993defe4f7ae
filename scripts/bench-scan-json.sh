#!/usr/bin/env bash
# `guestward-agent scan --only network --json > file` against `ss -tanp > file` with N loopback
# TCP sockets held open (issue 12: the scan must take at most 1/3 of ss's wall time at 20,000).
# Same helpers as scripts/bench-network.sh (N/2 accepted + N/2 connected, two processes).
#
# usage: scripts/bench-scan-json.sh [N ...]     (default: 20000)
# needs: hyperfine, iproute2 (ss); a release build of guestward-agent
#   (cargo build --release -p guestward-agent) and the bench helper
#   (cargo build -p guestward-network --examples; a debug build is enough: it only holds sockets).
# Run as root so both tools see every process's descriptors.
set -euo pipefail

counts=("$@")
[ ${#counts[@]} -eq 0 ] && counts=(20000)
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
agent="$target/release/guestward-agent"
helper=${BENCH_HELPER:-$target/debug/examples/bench_helper}
[ -x "$agent" ] || { echo "build it first: cargo build --release -p guestward-agent" >&2; exit 2; }
[ -x "$helper" ] || { echo "build it first: cargo build -p guestward-network --examples" >&2; exit 2; }
work=$(mktemp -d)
. scripts/lib/socket-helpers.sh
config="$work/agent.toml"
: >"$config"
# The collection alone (no owners, for its share): the same scan without the `/proc/*/fd` walk.
printf '[network]\nresolve_owners = false\n' >"$work/no-owners.toml"

for n in "${counts[@]}"; do
    hold_sockets "$helper" "$n"
    echo "== $n sockets: $(ss -Htan | wc -l) TCP sockets on the host; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$agent" --config "$config" scan --only network --json >"$work/scan.json" || true
    ss -tanp >"$work/ss.txt"
    echo "output: scan --json $(stat -c %s "$work/scan.json") bytes ($(($(stat -c %s "$work/scan.json") / n)) a socket), ss -tanp $(stat -c %s "$work/ss.txt") bytes"
    # Through a shell for the redirection (hyperfine subtracts the shell's own start-up time).
    # The scan exits 1 when a process could not be inspected (not as root): -i keeps going.
    hyperfine -i --style basic --warmup 3 --runs 20 --export-json "$work/$n.json" \
        -n "ss -tanp > file" "ss -tanp > $work/ss.out" \
        -n "scan --only network --json > file" \
        "$agent --config $config scan --only network --json > $work/scan.out" \
        -n "scan --only network > file (human: the collection alone)" \
        "$agent --config $config scan --only network > $work/human.out" \
        -n "scan --only network --json > file, resolve_owners = false" \
        "$agent --config $work/no-owners.toml scan --only network --json > $work/no-owners.out"
    python3 - "$work/$n.json" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
ss, scan = r["ss -tanp > file"], r["scan --only network --json > file"]
cpu = lambda x: (x["user"] + x["system"]) * 1000
print(f"| ss -tanp > file | {ss['mean']*1000:.1f} ± {ss['stddev']*1000:.1f} ms | CPU {cpu(ss):.1f} ms |")
print(f"| scan --only network --json > file | {scan['mean']*1000:.1f} ± {scan['stddev']*1000:.1f} ms | CPU {cpu(scan):.1f} ms |")
print(f"ratio wall {scan['mean']/ss['mean']:.2f}x, CPU {cpu(scan)/cpu(ss):.2f}x (target: wall <= 0.33x)")
EOF
    stop_helpers
done
