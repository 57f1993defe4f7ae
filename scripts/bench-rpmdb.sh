#!/usr/bin/env bash
# Benchmarks guestward's pure-Rust rpm database reader against `rpm -qa --dbpath` (Debian's
# rpm 4.18, apt package `rpm`) on every fixture database, with hyperfine.
# Writes hyperfine's markdown tables to $OUT (default: target/bench-rpmdb/) and prints them.
#
# usage: scripts/bench-rpmdb.sh            (needs: cargo, hyperfine, rpm)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in hyperfine rpm cargo; do
    command -v "$tool" >/dev/null || { echo "bench-rpmdb: $tool is not installed (apt-get install -y hyperfine rpm)" >&2; exit 1; }
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}"
cargo build --release -q -p guestward-rpmdb --example rpmdb-list
ours="$CARGO_TARGET_DIR/release/examples/rpmdb-list"
OUT="${OUT:-target/bench-rpmdb}"
mkdir -p "$OUT"
# rpm writes next to a database it opens (-shm, Index.db, locks): query copies only.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r tests/fixtures/rpmdb/. "$work/"
chmod -R u+w "$work"
qf='%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\n'

# dir, rpm backend name ("" when Debian's rpm cannot read that format)
while read -r dir backend; do
    db="$work/$dir"
    # Same answer first: the comparison is meaningless otherwise.
    "$ours" "$db" | LC_ALL=C sort | diff -q - "$db/expected.sorted.tsv" >/dev/null \
        || { echo "bench-rpmdb: $dir: our output differs from rpm's" >&2; exit 1; }
    if [ -n "$backend" ]; then
        hyperfine -N --warmup 5 --min-runs 30 \
            --export-markdown "$OUT/$dir.md" \
            -n "rpm -qa ($backend)" "rpm --dbpath $db --define '_db_backend $backend' -qa --qf '$qf'" \
            -n "guestward rpmdb-list" "$ours $db"
    else
        echo "== $dir: Debian's rpm is built without ndb support; timing guestward alone"
        hyperfine -N --warmup 5 --min-runs 30 --export-markdown "$OUT/$dir.md" \
            -n "guestward rpmdb-list" "$ours $db"
    fi
done <<'LIST'
amazonlinux2023-plain sqlite
libuuid bdb_ro
synthetic-bdb-al2023-le-4k bdb_ro
synthetic-bdb-al2023-be-4k bdb_ro
sle15-bci
sle15-bci-v2022
LIST
for f in "$OUT"/*.md; do echo "### $(basename "$f" .md)"; cat "$f"; echo; done
