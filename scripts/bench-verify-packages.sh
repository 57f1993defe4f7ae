#!/usr/bin/env bash
# `guestward-agent fim verify-packages` against `debsums -s` on this machine's dpkg packages,
# warm page cache, with hyperfine; then CPU time and peak RSS of one run each with
# /usr/bin/time -v (other work on the machine shows in wall time, not in CPU time).
# Both read every file of every installed package's .md5sums; exit 1 (mismatches) is expected
# on a machine with changed files, hence `-i`.
# Needs: hyperfine, debsums, /usr/bin/time (apt-get install -y hyperfine debsums time).
# Usage: scripts/bench-verify-packages.sh   (RUNS=3 by default; BIN= an existing binary)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p guestward-agent
  BIN="${CARGO_TARGET_DIR:-target}/release/guestward-agent"
fi
echo "== $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== packages: $(dpkg-query -W | wc -l); files in .md5sums: $(cat /var/lib/dpkg/info/*.md5sums | wc -l)"
echo "== warming the page cache"
"$BIN" fim verify-packages --no-progress > /dev/null || true
hyperfine -i --warmup 0 --runs "$RUNS" \
  -n "guestward-agent fim verify-packages" "$BIN fim verify-packages --no-progress > /dev/null" \
  -n "debsums -s" "debsums -s > /dev/null 2>&1"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
for cmd in "$BIN fim verify-packages --no-progress" "debsums -s"; do
  echo "== /usr/bin/time -v $cmd"
  /usr/bin/time -v sh -c "$cmd > /dev/null 2>&1" 2>&1 | grep -E "Elapsed|User time|System time|Percent of CPU|Maximum resident" || true
done
