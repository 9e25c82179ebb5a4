#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, all tests (unit, CLI
# and VM tests: the GuestOS image is built and booted), the two-build
# reproducibility check, and a build of the fuzz targets. Installs its own
# system prerequisites first. Needs root (image builds use mmdebstrap).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prereqs.sh
# vhost-device-vsock (installed by prereqs.sh); with it, the VM tests
# require the guest to reach the host agent over vsock.
export PATH="${ICOS_TOOLS:-$HOME/.cache/icos/tools}/bin:$PATH"
export ICOS_EXPECT_GUEST_VSOCK=1

step() { printf '\n== [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2; }

step "JavaScript agent packages (npm ci)"
(cd crates/icos-testnet-replica/tests/js && npm ci --ignore-scripts --no-audit --no-fund)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked --no-fail-fast

step "reproducibility: GuestOS, Boundary-GuestOS, HostOS and SetupOS built from nothing in another path, TZ and umask must be bit-identical to this tree's build"
cargo test -p icos --locked --test repro_cli -- --ignored --nocapture

step "fuzz targets build"
cargo build --manifest-path fuzz/Cargo.toml --locked --bins

step "all checks passed"
