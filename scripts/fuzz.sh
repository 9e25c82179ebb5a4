#!/usr/bin/env bash
# Runs one fuzz target (or all) for a number of seconds each.
#   scripts/fuzz.sh [TARGET|all] [SECONDS]     (default: all, 60)
# Targets: config_ini (SetupOS config.ini parser), grubenv (GRUB environment block parser).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-all}
seconds=${2:-60}

scripts/prereqs.sh
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

if [ "$target" = all ]; then
  targets=$(cargo +nightly fuzz list)
else
  targets=$target
fi
for t in $targets; do
  echo "== fuzzing $t for ${seconds}s" >&2
  cargo +nightly fuzz run "$t" -- -max_total_time="$seconds"
done
