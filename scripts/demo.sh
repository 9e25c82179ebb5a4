#!/usr/bin/env bash
# The main job: a node machine from blank disks to a running GuestOS.
#   1. derive the sample node's configs and deterministic addresses from the
#      node provider's inputs in examples/ (written to out/node/);
#   2. build SetupOS, which carries the HostOS and GuestOS of the same build
#      (out/setupos/, out/hostos/, out/guestos/; cached after the first run);
#   3. start the local testnet's NNS (a testnet replica on 127.0.0.1:18080);
#   4. run a node machine in QEMU (`icos run setupos`): the inputs of
#      examples/local-machine/ are injected into a copy of the SetupOS
#      image, SetupOS checks the machine, network and clock and installs
#      HostOS and GuestOS onto two blank drives, reboots into HostOS, and
#      HostOS starts GuestOS; the run ends with GuestOS's boot marker and the
#      node's addresses, and removes its work folder.
# Set OUT=DIR to write somewhere else than out/. Needs root (image builds use
# mmdebstrap).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prereqs.sh
cargo build --release --locked -p icos -p icos-testnet-replica-bin >&2
icos=target/release/icos
out=${OUT:-out}
lm=examples/local-machine

printf '\n== 1/4 the sample node\n\n' >&2
"$icos" node derive \
  --config-ini examples/config.ini \
  --deployment-json examples/deployment.json \
  --ssh-keys examples/ssh_authorized_keys \
  --node-operator-key examples/node_operator_private_key.pem \
  --out-dir "$out/node"

printf '\n== 2/4 build SetupOS (with HostOS and GuestOS)\n\n' >&2
"$icos" build setupos --out "$out"

printf '\n== 3/4 the testnet NNS on 127.0.0.1:18080\n\n' >&2
subnet=$(grep -o '"id": *"[^"]*"' "$lm/testnet.json" | head -n1 | cut -d'"' -f4)
target/release/icos-testnet-replica serve --config "$lm/testnet.json" --subnet "$subnet" \
  --listen 127.0.0.1:18080 2>"$out/nns.log" &
nns=$!
trap 'kill "$nns" 2>/dev/null || true' EXIT

printf '\n== 4/4 the node machine: SetupOS -> HostOS -> GuestOS\n\n' >&2
"$icos" run setupos \
  --image "$out/setupos/disk-img.tar.zst" \
  --work "$out/machine" \
  --config-ini "$lm/config.ini" \
  --deployment-json "$lm/deployment.json" \
  --ssh-keys examples/ssh_authorized_keys \
  --node-operator-key examples/node_operator_private_key.pem \
  --check-hardware false
