#!/usr/bin/env bash
# The daemon through a storm of new files in a realtime-watched directory
# (docs/benchmarks.md, "A storm of 300,000 new files"): starts the release daemon on a
# scratch state directory (FIM on one directory, transport and IMDS off), waits for its first
# scan, writes N small files as fast as Python can, then waits until the daemon has reported
# every one of them (`agentctl fim status --json`) and prints the peak RSS (VmHWM, sampled every
# second), the RSS once done, the time from the storm's start until every change was reported,
# and the size of fim.db-wal.
#   scripts/bench-storm.sh [N]            N defaults to 300000
# CPU_PERCENT (default 400) is `[limits] cpu_percent`: the daemon's default, 5, throttles the
# rescan the storm causes to many minutes. W (default /tmp/bench-storm) is the scratch dir.
# Needs: python3.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(pwd)/target}"
N="${1:-300000}"
W="${W:-/tmp/bench-storm}"
CPU_PERCENT="${CPU_PERCENT:-400}"
cargo build --release -q -p guestward-agent -p guestward-ctl
AGENT="$CARGO_TARGET_DIR/release/guestward-agent"
CTL="$CARGO_TARGET_DIR/release/agentctl"

rm -rf "$W"
mkdir -p "$W/watch" "$W/run"
echo seed > "$W/watch/seed"
cat > "$W/agent.toml" <<EOF
[agent]
state_dir = "$W/state"
scan_interval_secs = 86400
[control]
socket_path = "$W/run/agent.sock"
[imds]
enabled = false
[transport]
enabled = false
[fim]
paths = ["$W/watch"]
[limits]
cpu_percent = $CPU_PERCENT
EOF

"$AGENT" run --config "$W/agent.toml" > "$W/daemon.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 120); do grep -q "scan complete" "$W/daemon.log" && break; sleep 1; done
grep -q "scan complete" "$W/daemon.log" || { echo "the daemon did not start; see $W/daemon.log" >&2; exit 1; }
sleep 3

# `fim status` exits 1 while coverage is degraded (an overflow's gap is open during the storm):
# its JSON is read whatever the exit code, and any failure reads as 0.
reported() {
  local json
  json=$("$CTL" --socket "$W/run/agent.sock" fim status --json 2>/dev/null || true)
  printf '%s' "$json" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("changes_reported", 0))' 2>/dev/null || echo 0
}
before=$(reported)
start=$(date +%s.%N)
python3 - "$W/watch" "$N" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    fd = os.open(os.path.join(d, f"f{i:07d}.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"x%d\n" % i)
    os.close(fd)
EOF
storm=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
peak=0
while :; do
  hwm=$(awk '/VmHWM/{print $2}' "/proc/$pid/status")
  [ "$hwm" -gt "$peak" ] && peak=$hwm
  now=$(reported)
  [ $((now - before)) -ge "$N" ] && break
  kill -0 $pid || { echo "the daemon exited; see $W/daemon.log" >&2; exit 1; }
  sleep 1
done
done_after=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
sleep 5
rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
anon=$(awk '/RssAnon/{print $2}' "/proc/$pid/status")
wal=$(stat -c %s "$W/state/fim.db-wal" 2>/dev/null || echo 0)
echo "files:                 $N (written in $storm s)"
echo "all reported after:    $done_after s"
echo "peak RSS (VmHWM):      $((peak / 1024)) MiB"
echo "RSS 5 s later:         $((rss / 1024)) MiB ($((anon / 1024)) MiB anonymous)"
echo "fim.db-wal:            $((wal / 1048576)) MiB"
