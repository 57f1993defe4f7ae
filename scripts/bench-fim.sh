#!/usr/bin/env bash
# FIM benchmarks (issue 5), side by side with AIDE in one run:
#   1. baseline of /usr with SHA-256 + attributes, warm page cache: guestward vs
#      `aide --init --workers=2` with the equivalent rule (hyperfine, then peak RSS with
#      /usr/bin/time -v);
#   2. `check` of the same tree against the baseline (guestward vs `aide --check`);
#   3. realtime latency from a write's close to the emitted event at 1,000 changes/s;
#   4. idle CPU of the watcher with the default policy.
# Needs: hyperfine, aide, /usr/bin/time (apt-get install -y hyperfine aide time).
# The engine is driven by the crate's example binary: its init/check are the same
# `guestward_fim::cli::run` as `guestward-agent fim`, and it adds the latency/idle drivers.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/targets/fim}"
RUNS="${RUNS:-3}"
TREE="${TREE:-/usr}"
W="${W:-/tmp/fim-bench}"
cargo build --release -q -p guestward-fim --example fim
FIM="$CARGO_TARGET_DIR/release/examples/fim"
rm -rf "$W" && mkdir -p "$W"

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

echo "== 1. baseline (init)"
hyperfine --warmup 1 --runs "$RUNS" --export-markdown "$W/init.md" \
  --prepare "rm -rf $W/state $W/aide.db.new" \
  -n guestward "$FIM --config $W/fim.toml init --state-dir $W/state --no-progress" \
  -n aide "aide --init --workers=2 -c $W/aide.conf"
rm -rf "$W/state" "$W/aide.db.new"
/usr/bin/time -v "$FIM" --config "$W/fim.toml" init --state-dir "$W/state" --no-progress 2> "$W/rss-fim.txt" >/dev/null
/usr/bin/time -v aide --init --workers=2 -c "$W/aide.conf" 2> "$W/rss-aide.txt" >/dev/null || true
echo "peak RSS guestward: $(grep 'Maximum resident' "$W/rss-fim.txt" | awk '{print $NF}') KiB"
echo "peak RSS aide:      $(grep 'Maximum resident' "$W/rss-aide.txt" | awk '{print $NF}') KiB"
ls -l "$W/state/fim.db" "$W/aide.db.new"

echo "== 2. check against the baseline"
mv "$W/aide.db.new" "$W/aide.db"
hyperfine --warmup 1 --runs "$RUNS" --export-markdown "$W/check.md" -i \
  -n guestward "$FIM --config $W/fim.toml check --state-dir $W/state --no-progress" \
  -n aide "aide --check --workers=2 -c $W/aide.conf"

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
