#!/usr/bin/env bash
# The main job:
#   1. derive a sample node from the node provider's inputs in examples/ and
#      print its SetupOS, HostOS and GuestOS configs and its deterministic
#      MAC and IPv6 addresses (the configs are written to out/node/);
#   2. build the GuestOS image reproducibly (out/guestos/; cached after the
#      first run);
#   3. boot it in QEMU with the node's GuestOS config on its CONFIG media and
#      wait for the boot marker.
# Set OUT=DIR to write somewhere else than out/. Needs root (image builds use
# mmdebstrap).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prereqs.sh
cargo build --release --locked -p icos >&2
icos=target/release/icos
out=${OUT:-out}

printf '\n== 1/3 the sample node\n\n' >&2
"$icos" node derive \
  --config-ini examples/config.ini \
  --deployment-json examples/deployment.json \
  --ssh-keys examples/ssh_authorized_keys \
  --node-operator-key examples/node_operator_private_key.pem \
  --out-dir "$out/node"

printf '\n== 2/3 build GuestOS\n\n' >&2
"$icos" build guestos --out "$out"

printf '\n== 3/3 boot GuestOS\n\n' >&2
"$icos" run guestos --image "$out/guestos/disk-img.tar.zst" --config "$out/node/guestos.json"
