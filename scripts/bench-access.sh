#!/usr/bin/env bash
# What the access collector adds to `scan` (issue 15: < 100 ms and < 5 MB): `scan --only host`
# against `scan --only host,access` on this machine, and on the fixture tree with --root.
# Wall time with hyperfine (no shell, warm cache; -i: the fixture scan exits 1, its section is
# degraded by design), peak RSS with GNU time.
#
# usage: scripts/bench-access.sh
# needs: hyperfine, GNU time (/usr/bin/time); a release build of guestward-agent
#   (cargo build --release -p guestward-agent). Run as root (as the agent runs: /etc/shadow,
#   every home directory).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
agent="$target/release/guestward-agent"
[ -x "$agent" ] || { echo "build it first: cargo build --release -p guestward-agent" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
config="$work/agent.toml"
: >"$config"
fixture=tests/fixtures/access/root

echo "== load: $(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine -N -i --warmup 5 --runs 50 \
    "$agent --config $config scan --json --only host" \
    "$agent --config $config scan --json --only host,access" \
    "$agent --config $config scan --json --only access --root $fixture"
for only in host host,access; do
    for _ in 1 2 3; do
        /usr/bin/time -f "scan --only $only: peak RSS %M KiB, %e s" \
            "$agent" --config "$config" scan --json --only "$only" >/dev/null
    done
done
# The collector's own time as it reports it (the section's duration_ms), 5 runs.
for _ in 1 2 3 4 5; do
    "$agent" --config "$config" scan --json --only access | python3 -c \
        'import json,sys; s=json.load(sys.stdin)["access"]; d=s["data"]; print("access duration_ms", s["duration_ms"], "accounts", len(d["accounts"]), "keys", len(d["authorized_keys"]))'
done
