#!/usr/bin/env bash
# Installs the system packages icos needs to build and test, idempotently:
# nothing is downloaded when everything is already installed.
#
# QEMU comes from bookworm-backports (QEMU 10): installing bookworm's own
# qemu-system-x86 would replace qemu-utils 10 (qemu-img) with 7.2.
set -euo pipefail

# "package:command" (the command tells whether the package is there);
# a package marked "@backports" is installed from bookworm-backports.
packages=(
  "grub-common:grub-editenv"          # grubenv interoperability tests
  "fdisk:sfdisk"                      # GPT checks
  "gdisk:sgdisk"                      # GPT checks
  "openssl:openssl"                   # sample key checks
  "build-essential:c++"               # libFuzzer in the fuzz targets
  "busybox-static:busybox"            # test initramfs for VM tests
  "ovmf:/usr/share/OVMF/OVMF_CODE_4M.fd"  # UEFI firmware for VMs
  "qemu-system-x86@backports:qemu-system-x86_64"
  "qemu-utils@backports:qemu-img"
  "apt-utils:apt-ftparchive"          # local apt repositories (icos packages repo)
  "debian-archive-keyring:/usr/share/keyrings/debian-archive-keyring.gpg"  # archive signatures (icos packages lock)
  "e2fsprogs@backports:/sbin/mke2fs"  # ext4 images (icos-imagefs); version checked below
  "libarchive13:/usr/lib/x86_64-linux-gnu/libarchive.so.13"  # tar input of mke2fs -d
  "dosfstools:/sbin/mkfs.vfat"        # FAT images (ESP, grub)
  "mtools:mcopy"                      # files into/out of FAT images without mounting
  "cryptsetup-bin:/sbin/veritysetup"  # dm-verity hash trees
  "cpio:cpio"                         # initramfs archive checks
  "nodejs:node"                       # the JavaScript agent test (icos-testnet-replica)
  "npm:npm"                           # its pinned packages (npm ci)
  "iproute2:ip"                       # network namespaces, bridges and taps of VM tests
  "iputils-ping:ping"                 # VM tests ping the guest's IPv6 address
  "mmdebstrap:mmdebstrap"             # GuestOS root file system (icos build)
  "xz-utils:xz"                       # uncompressing a kernel's .ko.xz modules (icos build)
  "dpkg:dpkg-deb"                     # unpacking the locked GRUB packages (icos build)
  "git:git"                           # image version = git rev-parse HEAD (icos build)
  "lvm2:/sbin/pvs"                    # LVM metadata checks (icos-lvm, HostOS hostlvm)
  "chrony:chronyd"                    # NTP for QEMU node machines (icos run setupos)
)

# mke2fs must be >= 1.47.2 (bookworm-backports): deterministic ctime and tar
# input for `mke2fs -d`. An older one is upgraded from backports (the entry's
# command never exists, which marks the package as missing).
mke2fs_version=$({ /sbin/mke2fs -V 2>&1 || true; } | awk '/^mke2fs /{print $2; exit}')
if ! printf '1.47.2\n%s\n' "${mke2fs_version:-0}" | sort -V -C; then
  packages+=("e2fsprogs@backports:/nonexistent/mke2fs-1.47.2")
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
backports_list=/etc/apt/sources.list.d/icos-bookworm-backports.list
updated=""
apt_update() {
  if [ -z "$updated" ]; then
    $SUDO apt-get -o Acquire::Retries=5 update -qq
    updated=1
  fi
}

have() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

missing=()
missing_bp=()
for entry in "${packages[@]}"; do
  pkg=${entry%%:*}
  cmd=${entry#*:}
  if have "$cmd"; then continue; fi
  case "$pkg" in
    *@backports) missing_bp+=("${pkg%@backports}") ;;
    *) missing+=("$pkg") ;;
  esac
done

if ((${#missing_bp[@]})) && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee "$backports_list" >/dev/null
fi

export DEBIAN_FRONTEND=noninteractive
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  apt_update
  $SUDO apt-get -o Acquire::Retries=5 install -y -qq --no-install-recommends "${missing[@]}"
fi
if ((${#missing_bp[@]})); then
  echo "installing from bookworm-backports: ${missing_bp[*]}" >&2
  apt_update
  $SUDO apt-get -o Acquire::Retries=5 install -y -qq --no-install-recommends -t bookworm-backports "${missing_bp[@]}"
fi

# Tests fetch a kernel package with `apt-get download`, which needs the
# package lists; a fresh machine may have none.
if ! compgen -G "/var/lib/apt/lists/*_dists_bookworm_main_binary-amd64_Packages*" >/dev/null; then
  apt_update
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust with rustup (the toolchain is pinned in rust-toolchain.toml)" >&2
  exit 1
fi

# The userspace vhost-user vsock backend: this machine's kernel has no
# vhost-vsock, so VM tests reach a guest's AF_VSOCK through it.
# Installed once into ~/.cache/icos/tools (scripts/test.sh puts it on PATH).
tools=${ICOS_TOOLS:-$HOME/.cache/icos/tools}
if [ ! -x "$tools/bin/vhost-device-vsock" ]; then
  echo "installing vhost-device-vsock 0.3.0 into $tools" >&2
  cargo install vhost-device-vsock --version 0.3.0 --locked --root "$tools" >&2
fi
