#!/usr/bin/env bash
# FIM benchmarks (issue 5), side by side with AIDE in one run:
#   1. baseline of /usr with SHA-256 + attributes, warm page cache: guestward vs
#      `aide --init --workers=2` with the equivalent rule (hyperfine, then peak RSS with
#      /usr/bin/time -v);
#   2. `check` of the same tree against the baseline (guestward's full check and its
#      metadata-first `check --fast` vs `aide --check --workers=2`);
#   3. realtime latency from a write's close to the emitted event at 1,000 changes/s;
#   4. idle CPU of the watcher with the default policy.
# Section 0 first times a reference for this machine: OpenSSL's SHA-256 (SHA-NI where the CPU
# has it) of the same regular files, two processes at a time, with nothing else: no walk, no
# attributes, no database, no MD5. The budgets are in seconds, and the machines these runs land
# on differ by 20% or more from day to day; the reference, measured in the same run, says how
# fast this one hashes.
# Needs: hyperfine, aide, openssl, python3 (the summary), /usr/bin/time
# (apt-get install -y hyperfine aide openssl python3 time).
# Sections 1-2 run the release `guestward-agent fim init|check`; sections 3-5 drive the engine
# through the crate's example binary (the same `guestward_fim::cli::run`, plus the
# latency/idle drivers). Every timed command also gets one run under /usr/bin/time: wall,
# CPU (user + sys), cores used ((user + sys) / wall) and peak RSS; the load average before each
# section is printed, since other work on the machine inflates wall times.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}"
RUNS="${RUNS:-3}"
TREE="${TREE:-/usr}"
W="${W:-/tmp/fim-bench}"
cargo build --release -q -p guestward-fim --example fim
cargo build --release -q -p guestward-agent
FIM="$CARGO_TARGET_DIR/release/examples/fim"
AGENT="$CARGO_TARGET_DIR/release/guestward-agent"
rm -rf "$W" && mkdir -p "$W"

# One run of "$@" under /usr/bin/time: wall, user + sys, cores used, peak RSS.
cpu() {
  local name="$1"; shift
  /usr/bin/time -f "%e %U %S %M" -o "$W/time.txt" "$@" > /dev/null 2>&1 || true
  # GNU time puts "Command exited with non-zero status N" first when the command fails.
  read -r wall user sys rss < <(tail -n 1 "$W/time.txt")
  awk -v n="$name" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" 'BEGIN {
    printf "%-28s wall %6.2f s  cpu %6.2f s (user %.2f + sys %.2f)  cores %.2f  peak RSS %.1f MiB\n",
      n, w, u + s, u, s, (w > 0 ? (u + s) / w : 0), r / 1024 }'
}
load() { echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"; }

cat > "$W/fim.toml" <<TOML
[fim]
# Default attributes: sha256, mode, uid, gid, size, mtime, ctime, inode, link target, xattrs.
paths = ["$TREE"]
TOML
cat > "$W/aide.conf" <<CONF
database_in=file:$W/aide.db
database_out=file:$W/aide.db.new
gzip_dbout=no
report_url=stdout
R = p+u+g+s+m+c+i+l+sha256+xattrs
$TREE R
CONF

echo "== tree: $TREE ($(find "$TREE" -xdev | wc -l) entries, $(du -sh "$TREE" 2>/dev/null | cut -f1))"
echo "== warming the page cache"
find "$TREE" -xdev -type f -print0 | xargs -0 cat > /dev/null 2>&1 || true

echo "== 0. reference: openssl dgst -sha256 of every regular file, two processes at a time"
find "$TREE" -xdev -type f -print0 > "$W/files.0"
# 2,000 files a process: fewer processes start, and the two keep each other company to the end.
REF="xargs -0 -P2 -n 2000 openssl dgst -sha256 < $W/files.0 > /dev/null"
load
hyperfine --warmup 1 --runs "$RUNS" --export-markdown "$W/reference.md" --export-json "$W/reference.json" -n "openssl sha256 x2" "$REF"
cpu "openssl dgst -sha256 x2" sh -c "$REF"

echo "== 1. baseline (init)"
load
# `fim init` exits 1 when package files in the tree already differ from their packages (a host
# where `npm install -g npm` rewrote nodejs's files, say): the baseline was built, so that counts
# as a run; exit 2 still fails hyperfine.
INIT="$AGENT fim init --config $W/fim.toml --state-dir $W/state --no-progress || [ \$? -eq 1 ]"
hyperfine --warmup 1 --runs "$RUNS" --export-markdown "$W/init.md" --export-json "$W/init.json" \
  --prepare "rm -rf $W/state $W/aide.db.new" \
  -n guestward "$INIT" \
  -n aide "aide --init --workers=2 -c $W/aide.conf"
rm -rf "$W/state" "$W/aide.db.new"
cpu "guestward fim init" "$AGENT" fim init --config "$W/fim.toml" --state-dir "$W/state" --no-progress
cpu "aide --init --workers=2" aide --init --workers=2 -c "$W/aide.conf"
ls -l "$W/state/fim.db" "$W/aide.db.new"
# Above, each init started from nothing and took every dpkg file's MD5 for the trust anchor;
# an init over an existing baseline carries those over (same SHA-256), as `check` does.
hyperfine --warmup 1 --runs "$RUNS" --export-markdown "$W/reinit.md" --export-json "$W/reinit.json" \
  -n "guestward (baseline there)" "$INIT"
cpu "guestward fim init (again)" "$AGENT" fim init --config "$W/fim.toml" --state-dir "$W/state" --no-progress

echo "== 2. check against the baseline"
mv "$W/aide.db.new" "$W/aide.db"
load
hyperfine --warmup 1 --runs "$RUNS" --export-markdown "$W/check.md" --export-json "$W/check.json" -i \
  -n guestward "$AGENT fim check --config $W/fim.toml --state-dir $W/state --no-progress" \
  -n "guestward --fast" "$AGENT fim check --fast --config $W/fim.toml --state-dir $W/state --no-progress" \
  -n aide "aide --check --workers=2 -c $W/aide.conf"
cpu "guestward fim check" "$AGENT" fim check --config "$W/fim.toml" --state-dir "$W/state" --no-progress
cpu "guestward fim check --fast" "$AGENT" fim check --fast --config "$W/fim.toml" --state-dir "$W/state" --no-progress
cpu "aide --check --workers=2" aide --check --workers=2 -c "$W/aide.conf"

echo "== against the reference and AIDE (hyperfine means of sections 0-2)"
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
mean = {}
for part in ("reference", "init", "reinit", "check"):
    for r in json.load(open(f"{w}/{part}.json"))["results"]:
        mean[(part, r["command"])] = r["mean"]
ref = mean[("reference", "openssl sha256 x2")]
print(f"{'':34} {'mean':>9} {'/ openssl':>10}")
for (part, name), m in mean.items():
    print(f"{part + ': ' + name:34} {m:8.3f}s {m / ref:9.2f}x")
print(f"aide --init / guestward first init: {mean[('init', 'aide')] / mean[('init', 'guestward')]:.1f}x; "
      f"aide --check / guestward check: {mean[('check', 'aide')] / mean[('check', 'guestward')]:.1f}x, "
      f"/ check --fast: {mean[('check', 'aide')] / mean[('check', 'guestward --fast')]:.0f}x")
PY

echo "== 3. realtime latency at 1,000 changes/s (10,000 distinct files, tree on tmpfs)"
LAT=$(mktemp -d /dev/shm/fim-lat-XXXXXX)
"$FIM" latency --dir "$LAT/tree" --state-dir "$LAT/state" --rate 1000 --seconds 10
rm -rf "$LAT"

echo "== 4. idle CPU with the default policy (30 s, nothing changing on purpose)"
"$FIM" idle --state-dir "$W/idle-state" --seconds 30

if [ "${MILLION:-0}" = 1 ]; then
  echo "== 5. memory bound: baseline of 1,000,000 (empty) files on tmpfs"
  M=$(mktemp -d /dev/shm/fim-1m-XXXXXX)
  python3 - "$M/tree" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(1000):
    p = os.path.join(root, "d%03d" % d)
    os.makedirs(p)
    for f in range(1000):
        open(os.path.join(p, "f%d" % f), "w").close()
PY
  printf '[fim]\npaths = ["%s"]\n' "$M/tree" > "$M/fim.toml"
  /usr/bin/time -v "$FIM" --config "$M/fim.toml" init --state-dir "$M/state" --no-progress 2> "$M/rss.txt"
  echo "peak RSS guestward (1M files): $(grep 'Maximum resident' "$M/rss.txt" | awk '{print $NF}') KiB"
  grep -E 'Elapsed' "$M/rss.txt"
  rm -rf "$M"
fi
