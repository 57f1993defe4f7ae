#!/usr/bin/env bash
# Peak RSS of `fim init`, `fim check` and `fim check --fast` (issue 14's memory budget) and what
# it is made of: sampled every 20 ms, the file-backed part (`RssFile`: the binary's code and
# read-only data, the C library) and the anonymous part (`RssAnon`: heap, thread stacks,
# SQLite's page caches) of /proc/PID/status at the highest sample, with GNU time's `%M` as the
# peak itself. The binary is read into the page cache first (`cat`), as in
# `scripts/bench-fim.sh`; with `LOAD=exec` it is evicted from the page cache before each run
# instead (`posix_fadvise(POSIX_FADV_DONTNEED)`), so that the run's own page faults load it.
# The file-backed part depends on which: the kernel keeps what `cat` read in large folios, and
# a fault maps the whole folio (see docs/benchmarks.md).
#
#   BIN=target/release/guestward-agent TREE=/usr RUNS=3 [LOAD=exec] scripts/bench-fim-rss.sh
#
# The baseline is built once first (state in a scratch directory), so `init` runs with a
# baseline there, as in `scripts/bench-fim.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-target/release/guestward-agent}"
TREE="${TREE:-/usr}"
RUNS="${RUNS:-3}"
LOAD="${LOAD:-cat}"
case "$LOAD" in
  cat | exec) ;;
  *) echo "LOAD is cat (the default) or exec, not $LOAD" >&2; exit 2 ;;
esac
[ -x "$BIN" ] || { echo "build it first: cargo build --release -p guestward-agent ($BIN)" >&2; exit 2; }
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 2; }
W="$(mktemp -d /tmp/gw-fimrss.XXXXXX)"
trap 'rm -rf "$W"' EXIT
printf '[fim]\npaths = ["%s"]\n' "$TREE" > "$W/fim.toml"
fim() { "$BIN" fim --config "$W/fim.toml" "$@" --state-dir "$W/state" --no-progress; }
# Exit 1: built, with package files that already differ from their packages (still measured).
fim init >/dev/null 2>"$W/init.err" || [ $? -eq 1 ] || { echo "fim init of $TREE failed:" >&2; cat "$W/init.err" >&2; exit 1; }

# One run: peak RSS and its split at the highest sample, in KiB.
measure() {
  /usr/bin/time -f '%M' -o "$W/time" "$BIN" fim --config "$W/fim.toml" "$@" --state-dir "$W/state" \
    --no-progress >/dev/null 2>&1 &
  local tpid=$! pid="" best=0 file=0 anon=0
  while kill -0 "$tpid" 2>/dev/null; do
    [ -z "$pid" ] && pid=$(pgrep -P "$tpid" || true)
    if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
      read -r rss f a < <(awk '/^VmRSS:/ {r=$2} /^RssFile:/ {f=$2} /^RssAnon:/ {a=$2}
                               END {print r+0, f+0, a+0}' "/proc/$pid/status" 2>/dev/null || echo "0 0 0")
      if (( rss > best )); then best=$rss; file=$f; anon=$a; fi
    fi
    sleep 0.02
  done
  wait "$tpid" || true
  # The last line: GNU time puts "Command exited with non-zero status N" before it. 1 is a
  # check that found changes; anything else is a failed run, whose figures mean nothing.
  if grep -q 'non-zero status' "$W/time" && ! grep -q 'non-zero status 1$' "$W/time"; then
    echo "guestward-agent fim $* failed: $(head -n 1 "$W/time")" >&2
    return 1
  fi
  echo "$(tail -n 1 "$W/time") $file $anon"
}

printf '%-14s %10s %12s %12s\n' command 'peak KiB' 'RssFile KiB' 'RssAnon KiB'
for args in "init" "check" "check --fast"; do
  for ((i = 0; i < RUNS; i++)); do
    if [ "$LOAD" = exec ]; then
      python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$BIN"
    else
      cat "$BIN" > /dev/null
    fi
    # shellcheck disable=SC2086
    measure $args > "$W/measured"
    read -r peak file anon < "$W/measured"
    printf '%-14s %10s %12s %12s\n' "$args" "$peak" "$file" "$anon"
  done
done
