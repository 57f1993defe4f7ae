#!/usr/bin/env bash
# dpkg inventory: our parser vs dpkg-query on this machine's database, same fields.
# Also the peak RSS of `guestward-agent scan --only host,packages`.
# Needs: hyperfine, GNU time (/usr/bin/time). Writes nothing; paste the output into docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p guestward-packages --example dpkg_list
cargo build --release --locked -p guestward-agent --bin guestward-agent
echo "packages: $(grep -c '^Package:' /var/lib/dpkg/status)"
hyperfine --warmup 5 --runs 50 -N \
  "dpkg-query -W -f '\${binary:Package}\t\${Version}\t\${Architecture}\t\${db:Status-Abbrev}\n'" \
  "target/release/examples/dpkg_list"
empty=$(mktemp); trap 'rm -f "$empty"' EXIT
for i in 1 2 3; do
  /usr/bin/time -f "scan --only host,packages: peak RSS %M KiB, wall %e s" \
    target/release/guestward-agent scan --config "$empty" --only host,packages --json > /dev/null
done
