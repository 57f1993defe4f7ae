#!/usr/bin/env bash
# Language-package walk benchmark (docs/bench/lang.md).
#
# Generates a tree of about 100,000 files under $BENCH_DIR (default /tmp/gw-bench-lang):
# Python site-packages with dist-info directories, global and project node_modules, and jars
# (plain, a Spring Boot style fat jar with stored nested jars, a war with deflated nested jars),
# then times guestward's walk against GNU find doing only the name matching (no file is
# opened by find: it is the floor for any walk of the same tree).
#
# Needs: hyperfine, python3, cargo. Usage: scripts/bench-lang.sh [files]
set -euo pipefail
cd "$(dirname "$0")/.."
FILES="${1:-100000}"
BENCH_DIR="${BENCH_DIR:-/tmp/gw-bench-lang}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}"

cargo build --release -p guestward-lang --example lang_scan
BIN="$CARGO_TARGET_DIR/release/examples/lang_scan"

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
python3 - "$BENCH_DIR/root" "$FILES" <<'PY'
import io, os, sys, zipfile
root, target = sys.argv[1], int(sys.argv[2])
count = 0
def write(path, data):
    global count
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    count += 1
def jar(entries, method=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in entries:
            z.writestr(name, data)
    return buf.getvalue()
def maven(group, artifact, version, extra=0, jndi=False):
    entries = [(f"META-INF/maven/{group}/{artifact}/pom.properties",
                f"groupId={group}\nartifactId={artifact}\nversion={version}\n")]
    entries += [(f"{group.replace('.', '/')}/C{i}.class", b"\xca\xfe\xba\xbe" * 64) for i in range(extra)]
    if jndi:
        entries.append(("org/apache/logging/log4j/core/lookup/JndiLookup.class", b"\xca\xfe\xba\xbe"))
    return jar(entries)
# Jars: 200 plain, one fat jar with 60 stored nested jars, one war with 60 deflated ones.
for i in range(200):
    write(f"{root}/opt/apps/lib/lib{i}-1.{i}.0.jar", maven("org.example", f"lib{i}", f"1.{i}.0", extra=20))
nested = [(f"BOOT-INF/lib/dep{i}-2.{i}.jar", maven("org.dep", f"dep{i}", f"2.{i}", extra=10)) for i in range(59)]
nested.append(("BOOT-INF/lib/log4j-core-2.14.1.jar", maven("org.apache.logging.log4j", "log4j-core", "2.14.1", jndi=True)))
write(f"{root}/opt/apps/fat-app-1.0.jar", jar(nested, zipfile.ZIP_STORED))
write(f"{root}/srv/tomcat/webapps/shop.war", jar([(n.replace("BOOT-INF", "WEB-INF"), d) for n, d in nested]))
# Python: 2,000 distributions in a system site-packages and a virtualenv, with module files.
for base, n in ((f"{root}/usr/lib/python3.11/site-packages", 1000), (f"{root}/opt/venv/lib/python3.11/site-packages", 1000)):
    for i in range(n):
        d = f"{base}/pkg{i}-0.{i}.dist-info"
        write(f"{d}/METADATA", f"Metadata-Version: 2.1\nName: pkg{i}\nVersion: 0.{i}\n\n" + "description\n" * 50)
        write(f"{d}/INSTALLER", "pip\n")
        write(f"{d}/RECORD", "pkg/__init__.py,,\n")
        for m in range(12):
            write(f"{base}/pkg{i}/mod{m}.py", "x = 1\n")
# Node.js: packages with package.json and sources until the file budget is used.
i = 0
while count < target:
    base = f"{root}/usr/lib/node_modules" if i < 2000 else f"{root}/srv/web/node_modules"
    write(f"{base}/npm{i}/package.json", f'{{"name":"npm{i}","version":"1.0.{i}"}}')
    for m in range(min(9, max(0, target - count))):
        write(f"{base}/npm{i}/lib/f{m}.js", "module.exports = 1;\n")
    i += 1
print(f"generated {count} files under {root}")
PY

echo "guestward: $("$BIN" "$BENCH_DIR/root")"
sync
hyperfine --warmup 2 --min-runs 10 --export-markdown "$BENCH_DIR/hyperfine.md" \
  -n guestward "$BIN $BENCH_DIR/root" \
  -n 'find (names only)' "find $BENCH_DIR/root/opt $BENCH_DIR/root/srv $BENCH_DIR/root/usr/lib \\( -name '*.dist-info' -o -name '*.egg-info' -o -name package.json -o -name '*.jar' -o -name '*.war' -o -name '*.ear' \\) -print 2>/dev/null | wc -l"
cat "$BENCH_DIR/hyperfine.md"
