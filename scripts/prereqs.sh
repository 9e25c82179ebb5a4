#!/usr/bin/env bash
# Installs the system packages icos needs to build and test, idempotently:
# nothing is downloaded when everything is already installed.
set -euo pipefail

# package -> a command it provides (checked before installing)
packages=(
  "grub-common:grub-editenv"   # grubenv interoperability tests
  "fdisk:sfdisk"               # GPT checks
  "gdisk:sgdisk"               # GPT checks
  "openssl:openssl"            # sample key checks
  "build-essential:c++"        # libFuzzer in the fuzz targets
)

missing=()
for entry in "${packages[@]}"; do
  pkg=${entry%%:*}
  cmd=${entry#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && ! dpkg -s "$pkg" >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust with rustup (the toolchain is pinned in rust-toolchain.toml)" >&2
  exit 1
fi
