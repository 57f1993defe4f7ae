#!/usr/bin/env bash
# What shipping costs the daemon (issue 11): the same daemon (release build, FIM off, a scan
# every 10 s) runs for DURATION seconds twice, once with `[transport]` off and once shipping
# every report to a local collector over mTLS; prints peak and current RSS of each run and how
# many reports the collector stored.
# Usage: scripts/bench-transport.sh [DURATION]   (default 60; needs curl)
# AGENT / COLLECTOR override the binaries (default: target/release/guestward-agent, built here,
# and target/debug/guestward-collector, built if missing: only the agent is measured).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-60}
if [[ -z "${AGENT:-}" ]]; then
  cargo build --release --locked -q -p guestward-agent
  AGENT=target/release/guestward-agent
fi
if [[ -z "${COLLECTOR:-}" ]]; then
  cargo build --locked -q -p guestward-collector
  COLLECTOR=target/debug/guestward-collector
fi
tmp=$(mktemp -d /tmp/gw-bench-transport.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp"' EXIT

pki=$tmp/pki
"$COLLECTOR" pki init --dir "$pki" >/dev/null
"$COLLECTOR" pki issue-agent --dir "$pki" --host-id bench-host >/dev/null
"$COLLECTOR" pki issue-operator --dir "$pki" --name bench >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$COLLECTOR" serve --listen "127.0.0.1:$port" --pki-dir "$pki" --db "$tmp/collector.db" >"$tmp/collector.log" 2>&1 &
pids+=($!)
op=(--cacert "$pki/ca.pem" --cert "$pki/operators/bench/cert.pem" --key "$pki/operators/bench/key.pem")
for _ in $(seq 100); do curl -sf "${op[@]}" "https://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

run() { # name, transport (true|false)
  local dir=$tmp/$1
  mkdir -p "$dir"
  cat >"$dir/agent.toml" <<TOML
[agent]
state_dir = "$dir/state"
host_id = "bench-host"
scan_interval_secs = 10
[control]
socket_path = "$dir/agent.sock"
[fim]
enabled = false
[transport]
enabled = $2
url = "https://127.0.0.1:$port"
ca_file = "$pki/ca.pem"
cert_file = "$pki/agents/bench-host/cert.pem"
key_file = "$pki/agents/bench-host/key.pem"
flush_interval_secs = 1
TOML
  "$AGENT" run --config "$dir/agent.toml" >"$dir/agent.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  sleep "$DURATION"
  local hwm rss
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  printf '%-14s peak RSS %6d KiB   RSS at the end %6d KiB\n' "$1" "$hwm" "$rss"
}
echo "== $DURATION s each, a full scan every 10 s, FIM off ($AGENT)"
run transport-off false
run transport-on true
stored=$(curl -sf "${op[@]}" "https://127.0.0.1:$port/v1/hosts/bench-host" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["reports_stored"])')
echo "reports stored by the collector during the shipping run: $stored"
