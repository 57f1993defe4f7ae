#!/usr/bin/env bash
# Two (or more) builds of guestward-agent compared on one FIM command, in alternation: each
# round runs every build once, so the machine's drift (page-cache reclaim, other load) falls
# on all of them alike. Every binary is first evicted from the page cache and read again
# (`posix_fadvise(POSIX_FADV_DONTNEED)`, then `cat`), so that each starts with its code cached
# the same way (see docs/benchmarks.md on the file-backed part of the RSS), and run once
# unrecorded. Prints, per build, the mean wall time (and the fastest), user and system CPU,
# and the mean peak RSS from `/usr/bin/time`.
#
#   CONFIG=fim.toml STATE=state ROUNDS=8 scripts/bench-fim-alternate.sh "check --fast" OLD NEW
#
# All builds share the state directory STATE (a baseline made beforehand with `fim init`), so
# they compare the same rows; `init` replaces that baseline on each run. With SEPARATE=1 each
# build runs on its own copy of STATE instead: for `init`, whose writes (and the WAL they leave
# for the next run to checkpoint) would otherwise fall on the build that runs after it.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 \"init|check|check --fast\" BIN BIN..." >&2; exit 2; }
CONFIG="${CONFIG:?CONFIG: a fim config file ([fim] paths = [...])}"
STATE="${STATE:?STATE: the state directory holding the baseline}"
ROUNDS="${ROUNDS:-8}"
ARGS="$1"
shift
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 2; }
OUT="$(mktemp /tmp/gw-fimalt.XXXXXX)"
trap 'rm -rf "$OUT" "$OUT.err" "$OUT.states"' EXIT
# The state directory each build runs on (by its position among the builds).
states=()
for ((b = 1; b <= $#; b++)); do
  if [ "${SEPARATE:-0}" = 1 ]; then
    mkdir -p "$OUT.states"
    cp -a "$STATE" "$OUT.states/$b"
    states+=("$OUT.states/$b")
  else
    states+=("$STATE")
  fi
done
b=0
for bin in "$@"; do
  state="${states[$b]}"
  b=$((b + 1))
  python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$bin"
  cat "$bin" >/dev/null
  # Exit 1 is a check that found changes, or an init whose package files already differ from
  # their packages; anything else is a failure, shown as it is.
  rc=0
  # shellcheck disable=SC2086
  "$bin" fim --config "$CONFIG" $ARGS --state-dir "$state" --no-progress >/dev/null 2>"$OUT.err" || rc=$?
  [ "$rc" -le 1 ] || { echo "$bin fim $ARGS failed (exit $rc):" >&2; cat "$OUT.err" >&2; exit 1; }
done
for ((i = 0; i < ROUNDS; i++)); do
  b=0
  for bin in "$@"; do
    state="${states[$b]}"
    b=$((b + 1))
    rc=0
    # shellcheck disable=SC2086
    /usr/bin/time -f "$bin %e %U %S %M" -a -o "$OUT" "$bin" fim --config "$CONFIG" $ARGS \
      --state-dir "$state" --no-progress >/dev/null 2>&1 || rc=$?
    [ "$rc" -le 1 ] || { echo "$bin fim $ARGS failed (exit $rc)" >&2; exit 1; }
  done
done
grep -v '^Command' "$OUT" | awk '
  { w[$1] += $2; u[$1] += $3; s[$1] += $4; m[$1] += $5; n[$1]++
    if (!($1 in min) || $2 < min[$1]) min[$1] = $2 }
  END { for (b in w) printf "%s: wall %.3f s (fastest %.2f), user %.3f s, sys %.3f s, peak RSS %.0f KiB, %d runs\n",
                            b, w[b] / n[b], min[b], u[b] / n[b], s[b] / n[b], m[b] / n[b], n[b] }'
