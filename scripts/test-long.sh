#!/usr/bin/env bash
# The long VM test, kept out of ./scripts/test.sh to bound its time: a
# GuestOS node upgrading itself from v1 to v2 when governance elects and
# deploys v2 (two image builds, the registry and the release served over
# HTTP; the download, install, reboot and confirmation under TCG), printing
# the BENCH timings of docs/BENCHMARKS.md; about 6 minutes here.
# Installs its own system prerequisites first. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prereqs.sh
export PATH="${ICOS_TOOLS:-$HOME/.cache/icos/tools}/bin:$PATH"

cargo test -p icos --locked --test guestos_upgrade -- --ignored --nocapture --test-threads 1 a_node_follows_governance
