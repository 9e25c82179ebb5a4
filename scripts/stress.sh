#!/usr/bin/env bash
# The stress VM test: a GuestOS node asked to move between v1 and v2 over
# and over, with QEMU killed at a random point of each upgrade (download,
# install or commit, plus up to 4 s); after every cut the node must boot a
# good version from what grubenv says and carry on. ICOS_POWER_CUTS sets the
# number of cuts (50 by default, about a minute each under TCG);
# ICOS_STRESS_SEED repeats a run's cut points. Then the nested HostOS
# upgrade: HostOS h1 with GuestOS inside, under TCG, upgraded to h2 when the
# registry says so (GuestOS asks over vsock), rebooted into slot B and
# confirmed once GuestOS runs again (about 20 minutes). Installs its own
# system prerequisites first. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prereqs.sh
export PATH="${ICOS_TOOLS:-$HOME/.cache/icos/tools}/bin:$PATH"

cargo test -p icos --locked --test guestos_upgrade -- --ignored --nocapture --test-threads 1 power_cuts_at_random_points
cargo test -p icos --locked --test hostos_upgrade -- --ignored --nocapture --test-threads 1
