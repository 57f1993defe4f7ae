#!/usr/bin/env bash
# Benchmarks the cloud collector against the IMDS emulator on 127.0.0.1 (never the real
# 169.254.169.254), with hyperfine. Peer: the same metadata walk done with curl, the way AWS's
# `ec2-metadata` script and most shell tooling read IMDS (one token PUT, then GETs).
# Usage: scripts/bench-cloud.sh   (needs hyperfine and curl)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}"
cargo build --release --quiet -p guestward-cloud --examples
bin="$CARGO_TARGET_DIR/release/examples"

"$bin/imds_emulator_serve" > /tmp/imds-emu-url &
emu_pid=$!
trap 'kill "$emu_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s /tmp/imds-emu-url ] && break; sleep 0.1; done
url="$(head -n1 /tmp/imds-emu-url)"
echo "emulator at $url"

cat > /tmp/imds-curl-peer.sh <<PEER
#!/usr/bin/env bash
set -eu
u="$url"
t=\$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600' "\$u/latest/api/token")
g() { curl -sf -H "X-aws-ec2-metadata-token: \$t" "\$u/latest/\$1" || true; echo; }
for p in dynamic/instance-identity/document dynamic/instance-identity/rsa2048 dynamic/instance-identity/signature \
  meta-data/instance-id meta-data/instance-type meta-data/ami-id meta-data/placement/region \
  meta-data/placement/availability-zone meta-data/placement/availability-zone-id meta-data/instance-life-cycle \
  meta-data/local-ipv4 meta-data/public-ipv4 meta-data/ipv6 meta-data/local-hostname meta-data/iam/info \
  meta-data/events/maintenance/scheduled meta-data/spot/instance-action meta-data/events/recommendations/rebalance \
  meta-data/autoscaling/target-lifecycle-state; do g "\$p"; done
for mac in \$(g meta-data/network/interfaces/macs/); do
  for k in device-number interface-id subnet-id vpc-id security-group-ids local-ipv4s public-ipv4s ipv6s; do
    g "meta-data/network/interfaces/macs/\$mac\$k"; done; done
for k in \$(g meta-data/tags/instance | tr ' ' '+'); do g "meta-data/tags/instance/\${k//+/%20}"; done
curl -s -o /dev/null -w '%{http_code}\n' "\$u/latest/meta-data/instance-id"
PEER
chmod +x /tmp/imds-curl-peer.sh

hyperfine --warmup 3 --runs 30 --export-markdown /tmp/bench-cloud-walk.md \
  -n "guestward imds_collect (full cloud section)" "AWS_EC2_METADATA_SERVICE_ENDPOINT=$url $bin/imds_collect --json" \
  -n "curl walk (same items)" "/tmp/imds-curl-peer.sh"

# Off EC2 (this machine has no EC2 DMI data): the pre-check decides without any request.
hyperfine --warmup 3 --runs 30 --export-markdown /tmp/bench-cloud-offec2.md \
  -n "guestward imds_collect off EC2 (pre-check only)" "env -u AWS_EC2_METADATA_SERVICE_ENDPOINT $bin/imds_collect --json"
cat /tmp/bench-cloud-walk.md /tmp/bench-cloud-offec2.md
