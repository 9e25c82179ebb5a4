#!/usr/bin/env bash
# The main job: derive a sample node from the node provider's inputs in
# examples/ and print its SetupOS, HostOS and GuestOS configs and its
# deterministic MAC and IPv6 addresses. The three configs are also written
# to out/node/ (override with OUT=DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prereqs.sh
cargo build --release --locked -p icos >&2
out=${OUT:-out/node}

exec target/release/icos node derive \
  --config-ini examples/config.ini \
  --deployment-json examples/deployment.json \
  --ssh-keys examples/ssh_authorized_keys \
  --node-operator-key examples/node_operator_private_key.pem \
  --out-dir "$out" "$@"
