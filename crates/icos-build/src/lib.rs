//! The reproducible IC-OS image builder: `icos build guestos`,
//! `icos build boundary-guestos`, `icos build hostos` and
//! `icos build setupos` ([`setupos`]: the installer image carrying the
//! HostOS and GuestOS of the same build).
//!
//! [`build_guestos`] turns pinned inputs into a bootable GuestOS disk image
//! and its upgrade image, bit for bit the same on every machine. With
//! [`Role::Boundary`] it builds Boundary-GuestOS the same way: the GuestOS
//! base (layout, packages, early boot, A/B slots) with the IC API router
//! `icos-boundary` and the HTTP gateway `icos-gateway` instead of the
//! replica, the overlay `images/boundary-guestos/rootfs/` instead of
//! `images/guestos/rootfs-replica/`, and the output in
//! `<out>/boundary-guestos/`:
//!
//! | # | stage | what | cached by |
//! |---|-------|------|-----------|
//! | 1 | fetch packages | every `.deb` of `images/guestos/packages.lock` and `images/build/packages.lock`, verified against the lock, into the content-addressed cache | package SHA-256 |
//! | 2 | build our binaries | `icos`, `icos-guestos-init`, `icos-vsock-guest`, `icos-orchestrator` and `icos-testnet-replica` (the default payload; Boundary-GuestOS: `icos-boundary` and `icos-gateway` instead): `cargo build --release --locked` with `--remap-path-prefix` for the source tree and `CARGO_HOME` (own target dir `target/image`); one cargo run builds the programs of every image (HostOS's and SetupOS's too), so that all images share one dependency build | cargo |
//! | 3 | local apt repository | the locked `.deb`s and their index ([`icos_packages::write_repo`]), only when stage 4 runs | — |
//! | 4 | root file system | `mmdebstrap --variant=required --include=<requested> bookworm rootfs.tar "deb [trusted=yes] copy://REPO/ ./"` with `SOURCE_DATE_EPOCH`, `INITRD=No`; a customize hook uncompresses `*.ko.xz` modules and reruns the image's `depmod` ([`guestos::UNCOMPRESS_MODULES_HOOK`]) | lock bytes, mmdebstrap version, arguments |
//! | 5 | customise | mmdebstrap's tar read with the `tar` crate; [`rootfs::classify`] drops variable and unneeded files; `images/guestos/rootfs/`, the role's overlay (`images/guestos/rootfs-replica/` or `images/boundary-guestos/rootfs/`) and `rootfs-<env>/` are added, plus `/opt/ic/bin/{icos,icos-guestos-init,icos-vsock-guest}` (and `icos-orchestrator` on GuestOS), `/opt/ic/bin/replica` (`--replica FILE`, else `icos-testnet-replica`), `/opt/ic/share/version.txt`, the mount points `/boot/config` and `/mnt/config`, and the accounts of `rootfs::GUESTOS_ACCOUNTS`; every mtime is the epoch; a sorted tar is written | stage 4 key, overlays, binaries, env, version |
//! | 6 | initramfs | busybox-static, `veritysetup`, `dmsetup`, `blkid` and their libraries ([`elf`]), the modules of [`initramfs::MODULES`] in dependency order, `verity.conf` and `images/guestos/initramfs/init`; newc cpio + zstd | stage 5 key, init script |
//! | 7 | A_root | `mke2fs -d rootfs.tar` (3 GiB ext4 in the 10 GiB partition) + `veritysetup format` in place at 10603200512 with a fixed salt and IC's verity UUID | stage 5 key, tool versions |
//! | 8 | A_boot | ext4 with `vmlinuz`, `initrd.img`, `boot_args` (`BOOT_ARGS_A` and `BOOT_ARGS_B`: each slot's root PARTUUID and `dfinity.system=`, `root_hash=`), `version.txt` | stages 5–7 |
//! | 9 | esp | vfat with `EFI/BOOT/BOOTX64.EFI` from `grub-mkimage` of the locked grub-common / grub-efi-amd64-bin (`dpkg-deb -x`), early config `images/guestos/grub/grub-early.cfg` embedded | package hashes, config, module list |
//! | 10 | grub | vfat with `grub.cfg` and a 1024-byte grubenv (`boot_alternative=A`, `boot_cycle=stable`) | files |
//! | 11 | config | empty ext4 | tool version |
//! | 12 | disk | GPT of IC's GuestOS layout, images at their offsets, B slots empty, 50 GiB sparse | all partition keys |
//! | 13 | artifacts | `disk-img.tar.zst`, `update-img.tar.zst` (`boot.img`, `root.img`, `VERSION.TXT`), `SHA256SUMS`, `VERSION.TXT` | same as 12 |
//!
//! Each stage prints its name and time, and "cached" when its output was
//! reused. Stage outputs live in `<cache>/build/<stage>/<key>/`
//! ([`cache::StageCache`]); keys are SHA-256 digests of everything a stage
//! depends on ([`cache::KeyBuilder`]).
//!
//! The artifacts are written into `<out>/.guestos.tmp-<pid>/` and renamed to
//! `<out>/guestos/` only when complete; a failed build leaves the previous
//! output untouched.

pub mod boot;
pub mod cache;
pub mod elf;
pub mod error;
pub mod guestos;
pub mod hostos;
pub mod initramfs;
mod pipeline;
pub mod progress;
pub mod rootfs;
pub mod setupos;
pub mod tools;

pub use error::{BuildError, Result};
pub use guestos::{
    Artifact, BuildReport, DEFAULT_EPOCH, DISK_IMG, Env, GuestOsOptions, Role, SHA256SUMS,
    UPDATE_IMG, VERSION_TXT, build_guestos, root_verity_spec,
};
pub use hostos::{HostOsOptions, build_hostos};
pub use progress::{ProgressMode, StageStatus, StageTiming};
pub use setupos::{SetupOsOptions, SetupOsReport, build_setupos};
