#!/usr/bin/env bash
# Idle footprint of the daemon (issue 12): RSS and CPU in steady state with the DEFAULT policy
# (packaging/agent.toml's defaults: default FIM trees, IMDS on, 900 s scans, [limits] on), after
# the first scan and the FIM baseline. Only the state directory and the socket are moved to a
# scratch directory. Budget: RSS <= 15 MB, CPU <= 0.1% of one core averaged over 5 minutes.
#
#   BIN=target/release/guestward-agent MEASURE_SECS=300 scripts/bench-idle.sh
#
# Extra environment for the daemon (e.g. MALLOC_ARENA_MAX=2) is passed through `DAEMON_ENV`,
# extra configuration (appended to agent.toml, e.g. `[updates]\nenabled = false` to see one
# collector's share) through `EXTRA_CONFIG`.
# Run as root: the default trees include root-only files, as under systemd.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-target/release/guestward-agent}"
MEASURE_SECS="${MEASURE_SECS:-300}"
SETTLE_SECS="${SETTLE_SECS:-30}"
CTL="${CTL:-$(dirname "$BIN")/agentctl}"
[ -x "$BIN" ] || { echo "build it first: cargo build --release -p guestward-agent ($BIN)" >&2; exit 2; }
[ -x "$CTL" ] || { echo "build it first: cargo build --release -p guestward-ctl ($CTL)" >&2; exit 2; }
W="$(mktemp -d /tmp/gw-idle.XXXXXX)"
PID=
trap '[ -n "$PID" ] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }; rm -rf "$W"' EXIT
cat > "$W/agent.toml" <<TOML
[agent]
state_dir = "$W/state"
[control]
socket_path = "$W/run/agent.sock"
TOML
printf '%b\n' "${EXTRA_CONFIG:-}" >> "$W/agent.toml"
# shellcheck disable=SC2086
env ${DAEMON_ENV:-} "$BIN" --config "$W/agent.toml" run 2> "$W/daemon.log" &
PID=$!
status() { "$CTL" --socket "$W/run/agent.sock" "$@" 2>/dev/null || true; }
echo "== waiting for the first scan and the FIM baseline (pid $PID)"
start=$(date +%s)
until status status --json | grep -Eq '"last_scan": *\{' \
   && status fim status --json | grep -Eq '"state": *"watching"'; do
  sleep 2
  kill -0 "$PID" 2>/dev/null || { echo "the daemon exited:" >&2; cat "$W/daemon.log" >&2; exit 1; }
  if (( $(date +%s) - start > 1800 )); then echo "not ready after 30 min"; exit 1; fi
done
echo "ready after $(( $(date +%s) - start )) s; settling ${SETTLE_SECS} s"
sleep "$SETTLE_SECS"
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$PID/status"; }
t0=$(ticks); r0=$(rss_kb); s0=$(date +%s.%N)
max=$r0
for ((i = 0; i < MEASURE_SECS / 5; i++)); do
  sleep 5
  r=$(rss_kb); (( r > max )) && max=$r
done
t1=$(ticks); r1=$(rss_kb); s1=$(date +%s.%N)
echo "threads: $(ls /proc/$PID/task | wc -l)"
awk -v t0="$t0" -v t1="$t1" -v hz="$hz" -v s0="$s0" -v s1="$s1" -v r0="$r0" -v r1="$r1" -v max="$max" 'BEGIN {
  wall = s1 - s0; cpu = (t1 - t0) / hz;
  printf "wall %.0f s, cpu %.2f s = %.3f%% of one core\n", wall, cpu, 100 * cpu / wall;
  printf "VmRSS start %.1f MB, end %.1f MB, max %.1f MB (MB = 10^6 bytes; %.1f MiB at the end)\n",
         r0 * 1024 / 1e6, r1 * 1024 / 1e6, max * 1024 / 1e6, r1 / 1024 }'
echo "RssAnon $(awk '/^RssAnon:/ {print $2}' "/proc/$PID/status") kB, RssFile $(awk '/^RssFile:/ {print $2}' "/proc/$PID/status") kB"
status status --json | grep -E '"(cpu_percent|rss_bytes|throttled|throttle_episodes_total)"' || true
