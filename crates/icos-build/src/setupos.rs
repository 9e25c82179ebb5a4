//! The SetupOS build pipeline: `icos build setupos`.
//!
//! SetupOS is the installer a node provider boots from a USB stick. Its
//! image carries the HostOS and GuestOS disk images of the same build, so
//! [`build_setupos`] first builds both (each with its own cached stages,
//! into `<out>/hostos/` and `<out>/guestos/`), then:
//!
//! | # | stage | what |
//! |---|-------|------|
//! | 1 | fetch packages | every `.deb` of `images/setupos/packages.lock` and `images/build/packages.lock` |
//! | 2 | build our binaries | `icos` and `icos-setupos-install` (`cargo build --release --locked`, paths remapped) |
//! | 3 | local apt repository | only when stage 4 runs |
//! | 4 | root file system | mmdebstrap of the SetupOS lock (same arguments as GuestOS) |
//! | 5 | customise | GuestOS's rules, but keeping every kernel module except those of [`SETUPOS_DROP_MODULES`] (a node machine's disks and network cards must work); `images/setupos/rootfs/` and `rootfs-<env>/`, `/opt/ic/bin/*`, `/opt/ic/share/version.txt`, `/commit-time`, mount points `/config` and `/data` |
//! | 6 | initramfs | GuestOS's (busybox, `veritysetup`, `dmsetup`, `blkid`) with the modules of [`SETUPOS_INITRAMFS_MODULES`] (USB sticks, NVMe, AHCI) and `images/setupos/initramfs/init` |
//! | 7 | root | ext4 of [`SETUPOS_ROOT_FS_SIZE`] + dm-verity right after it, in the 1750 MiB `root` partition |
//! | 8 | boot | ext4: `vmlinuz`, `initrd.img`, `boot_args` ([`setupos_boot_args`]), `version.txt` |
//! | 9 | esp | GRUB EFI from the locked GRUB packages with `images/setupos/grub/grub-early.cfg` |
//! | 10 | grub | `grub.cfg` + a grubenv without variables (`icos setupos switches` sets `setupos_switches` there) |
//! | 11 | config | FAT, label `CONFIG`: the `config.ini` template `images/setupos/config/config.ini` |
//! | 12 | data | ext4: `deployment.json` (`images/setupos/data/deployment.json`), `host-os.img.tar.zst`, `guest-os.img.tar.zst` |
//! | 13 | disk + artifacts | IC's SetupOS GPT; `disk-img.tar.zst`, `SHA256SUMS`, `VERSION.TXT` |
//!
//! The output is `<out>/setupos/`. SetupOS has no upgrade image: a node is
//! reinstalled with a new stick, never upgraded in place.
//!
//! `/commit-time` holds the commit time of the source (seconds since 1970):
//! [`SetupOsOptions::commit_time`], else the commit time of the source
//! tree's git `HEAD`, else the build epoch. The installer's image-age check
//! compares it with the clock, as IC's does. A rebuild from a copy without
//! `.git` must pass the release's commit time to get the same bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use icos_imagefs::{Ext4Source, Ext4Spec, VfatSpec};
use icos_layout::{MIB, OsKind};
// The names the installer looks for in the data partition.
use icos_setupos::run::{GUESTOS_ARCHIVE as GUESTOS_IMAGE, HOSTOS_ARCHIVE as HOSTOS_IMAGE};
use uuid::{Uuid, uuid};

use crate::boot;
use crate::cache::{KeyBuilder, sha256_file};
use crate::error::{BuildError, Result};
use crate::guestos::{
    BuildReport, DEFAULT_EPOCH, DISK_IMG, Env, GuestOsOptions, Installed, SHA256SUMS, VERSION_TXT,
    build_guestos, copy, file_len, input, make_verity_root, set_mode, write, write_disk_tar,
    write_sha256sums,
};
use crate::hostos::{HostOsOptions, build_hostos};
use crate::initramfs;
use crate::pipeline;
use crate::progress::{ProgressMode, Stages, mib};
use crate::rootfs::{self, Kind, Node, Rule};

/// Size of the SetupOS root file system; dm-verity's hash tree follows it
/// in the same partition.
pub const SETUPOS_ROOT_FS_SIZE: u64 = 1600 * MIB;
/// Where the hash tree starts in the root partition.
pub const SETUPOS_VERITY_HASH_OFFSET: u64 = SETUPOS_ROOT_FS_SIZE;
/// File system UUID of the SetupOS boot partition.
pub const SETUPOS_BOOT_FS_UUID: Uuid = uuid!("6a5c1b1e-0000-4000-8000-000000000022");
/// Volume id of the SetupOS EFI system partition.
pub const SETUPOS_ESP_VOLUME_ID: u32 = 0x0b00_70c5;
/// Volume id of the SetupOS grub partition.
pub const SETUPOS_GRUB_VOLUME_ID: u32 = 0x0b00_70c6;

/// Kernel modules SetupOS leaves out (prefixes under
/// `lib/modules/<version>/kernel/`): sound, video, radio and staging
/// drivers. Everything else stays, so that the disks and network cards of
/// any node machine work.
pub const SETUPOS_DROP_MODULES: &[&str] = &[
    "sound/",
    "drivers/media/",
    "drivers/gpu/",
    "drivers/staging/",
    "drivers/bluetooth/",
    "net/bluetooth/",
    "drivers/net/wireless/",
    "net/wireless/",
    "net/mac80211/",
    "drivers/iio/",
    "drivers/input/joystick/",
    "drivers/input/touchscreen/",
];

/// Modules the SetupOS initramfs loads to find its root: GuestOS's
/// ([`initramfs::MODULES`]) plus USB sticks (xHCI, EHCI, mass storage,
/// UAS) and the disks of node machines (NVMe, AHCI, SCSI disks).
pub const SETUPOS_INITRAMFS_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "xhci_pci",
    "ehci_pci",
    "usb_storage",
    "uas",
    "sd_mod",
    "nvme",
    "ahci",
    "dm_verity",
    "crc32c_generic",
    "ext4",
    "sha256_ssse3",
];

/// Bumped whenever the customisation code changes what it writes.
const CUSTOMISE_VERSION: &str = "1";
const STAGES: usize = 13;

/// Our programs in the image: (cargo package, binary, path in the image).
pub(crate) const SETUPOS_BINARIES: [(&str, &str, &str); 2] = [
    ("icos", "icos", "opt/ic/bin/icos"),
    (
        "icos-setupos-install-bin",
        "icos-setupos-install",
        "opt/ic/bin/icos-setupos-install",
    ),
];

/// What to build and where.
#[derive(Debug, Clone)]
pub struct SetupOsOptions {
    /// The source tree (the workspace root with `images/`).
    pub source: PathBuf,
    /// The output folder; artifacts go to `<out>/setupos/` (and the HostOS
    /// and GuestOS it carries to `<out>/hostos/` and `<out>/guestos/`).
    pub out: PathBuf,
    /// dev or prod, for SetupOS and the GuestOS it carries.
    pub env: Env,
    /// The version; `None`: `git rev-parse HEAD` of the source tree.
    pub version: Option<String>,
    /// The replica binary of the GuestOS it carries.
    pub replica: Option<PathBuf>,
    /// The registry trust root baked into the GuestOS it carries.
    pub registry_root: Option<PathBuf>,
    /// The commit time written to `/commit-time`; `None`: git's time of
    /// `HEAD`, else the epoch.
    pub commit_time: Option<u64>,
    /// The cache root; `None`: [`Cache::default_location`].
    pub cache: Option<PathBuf>,
    /// Use only cached packages.
    pub offline: bool,
    /// A mirror instead of the lock's.
    pub mirror: Option<String>,
    /// The epoch of every timestamp.
    pub epoch: u64,
    /// How to show progress.
    pub progress: ProgressMode,
}

impl SetupOsOptions {
    /// Defaults: `out/`, dev, version from git, default cache.
    pub fn new(source: impl Into<PathBuf>) -> SetupOsOptions {
        SetupOsOptions {
            source: source.into(),
            out: PathBuf::from("out"),
            env: Env::Dev,
            version: None,
            replica: None,
            registry_root: None,
            commit_time: None,
            cache: None,
            offline: false,
            mirror: None,
            epoch: DEFAULT_EPOCH,
            progress: ProgressMode::Auto,
        }
    }
}

/// What a SetupOS build made: its own report and those of the HostOS and
/// GuestOS it carries.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SetupOsReport {
    /// SetupOS.
    pub setupos: BuildReport,
    /// The HostOS in the data partition.
    pub hostos: BuildReport,
    /// The GuestOS in the data partition.
    pub guestos: BuildReport,
}

/// The rule for a path of mmdebstrap's SetupOS archive: GuestOS's
/// [`rootfs::classify`], except that every kernel module stays but those
/// of [`SETUPOS_DROP_MODULES`].
pub fn classify_setupos(path: &str, is_dir: bool) -> Rule {
    if let Some(rest) = rootfs::module_path(path) {
        if SETUPOS_DROP_MODULES.iter().any(|k| rest.starts_with(k)) {
            return Rule::Drop;
        }
        return Rule::Keep;
    }
    rootfs::classify(path, is_dir)
}

/// The `boot_args` file of SetupOS: one `BOOT_ARGS` line naming the root
/// partition and its verity root hash. Both consoles get the kernel's
/// messages; the serial one (last) is `/dev/console`, where the installer
/// prints.
pub fn setupos_boot_args(
    root_partuuid: Uuid,
    root_hash: &str,
) -> std::result::Result<String, String> {
    boot::check_root_hash(root_hash)?;
    Ok(format!(
        "# SetupOS kernel command line; grub.cfg appends the grubenv's setupos_switches.\n\
         set BOOT_ARGS=\"root=PARTUUID={} console=tty0 console=ttyS0 quiet panic=-1 ro \
         root_hash={root_hash}\"\n",
        root_partuuid.hyphenated()
    ))
}

/// The commit time of `HEAD` in `src`, or `None` outside a git checkout.
fn commit_time(src: &Path) -> Option<u64> {
    let out = Command::new("git")
        .arg("-C")
        .arg(src)
        .args(["log", "-1", "--format=%ct", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Builds SetupOS (see the module docs).
pub fn build_setupos(opts: &SetupOsOptions) -> Result<SetupOsReport> {
    let src = fs::canonicalize(&opts.source).map_err(BuildError::io("reading", &opts.source))?;
    let images = src.join("images");
    let dir = images.join("setupos");
    let lock_path = input(&dir.join("packages.lock"))?;
    let grub_cfg = input(&dir.join("grub/grub.cfg"))?;
    let grub_early = input(&dir.join("grub/grub-early.cfg"))?;
    let grub_modules = input(&dir.join("grub/modules.list"))?;
    let init_script = input(&dir.join("initramfs/init"))?;
    let overlay = input(&dir.join("rootfs"))?;
    let env_overlay = dir.join(format!("rootfs-{}", opts.env.as_str()));
    let config_ini = input(&dir.join("config/config.ini"))?;
    let deployment_json = input(&dir.join("data/deployment.json"))?;
    let c = pipeline::load_common(
        &images,
        lock_path,
        &[
            "busybox-static",
            "cryptsetup-bin",
            "linux-image-amd64",
            "lvm2",
            "systemd",
        ],
    )?;
    let fs_tools = &c.fs_tools;
    let version = pipeline::image_version(&src, opts.version.as_ref())?;
    let commit_time = opts
        .commit_time
        .or_else(|| commit_time(&src))
        .unwrap_or(opts.epoch);

    let layout = OsKind::SetupOs.layout();
    let layout_err = |message: String| BuildError::Input {
        path: PathBuf::from("icos_layout::setupos"),
        message,
    };
    let part = |name: &str| {
        layout
            .partition(name)
            .cloned()
            .ok_or_else(|| layout_err(format!("no partition {name}")))
    };
    let esp_part = part("esp")?;
    let grub_part = part("grub")?;
    let config_part = part("config")?;
    let boot_part = part("boot")?;
    let root_part = part("root")?;
    let root_needed = SETUPOS_VERITY_HASH_OFFSET
        + icos_imagefs::verity_hash_size(SETUPOS_ROOT_FS_SIZE / icos_imagefs::BLOCK_SIZE);
    if root_part.size_bytes() < root_needed {
        return Err(layout_err(format!(
            "partition root ({} bytes) cannot hold the file system and its hash tree ({root_needed} bytes)",
            root_part.size_bytes()
        )));
    }

    // The images SetupOS installs, from the same source and version.
    let hostos = build_hostos(&HostOsOptions {
        source: src.clone(),
        out: opts.out.clone(),
        version: Some(version.clone()),
        cache: opts.cache.clone(),
        offline: opts.offline,
        mirror: opts.mirror.clone(),
        epoch: opts.epoch,
        progress: opts.progress,
    })?;
    let mut guest_opts = GuestOsOptions::new(&src);
    guest_opts.out = opts.out.clone();
    guest_opts.env = opts.env;
    guest_opts.version = Some(version.clone());
    guest_opts.replica = opts.replica.clone();
    guest_opts.registry_root = opts.registry_root.clone();
    guest_opts.cache = opts.cache.clone();
    guest_opts.offline = opts.offline;
    guest_opts.mirror = opts.mirror.clone();
    guest_opts.epoch = opts.epoch;
    guest_opts.progress = opts.progress;
    let guestos = build_guestos(&guest_opts)?;

    let epoch = opts.epoch;
    let run = pipeline::start(
        &opts.out,
        "setupos",
        opts.cache.as_ref(),
        opts.mirror.as_ref(),
        opts.offline,
        epoch,
    )?;
    let ctx = run.ctx();
    let (sc, work) = (ctx.sc, ctx.work);
    let mut st = Stages::new(opts.progress, STAGES);

    // 1 to 4. Packages, our binaries, mmdebstrap's root file system.
    let pipeline::Base {
        installed,
        raw_dir,
        raw_key,
    } = pipeline::base_stages(
        &mut st,
        &ctx,
        &c,
        &src,
        &SETUPOS_BINARIES,
        "setupos",
        "setupos-rootfs-raw",
    )?;

    // 5. Customisation.
    let custom_key = {
        let mut k = KeyBuilder::new("setupos-rootfs-custom")
            .str("version", CUSTOMISE_VERSION)
            .key("raw", &raw_key)
            .str("drop-modules", &SETUPOS_DROP_MODULES.join(" "))
            .dir("overlay", &overlay)?
            .str("env", opts.env.as_str())
            .str("image-version", &version)
            .str("commit-time", &commit_time.to_string())
            .str("epoch", &epoch.to_string());
        if env_overlay.is_dir() {
            k = k.dir("env-overlay", &env_overlay)?;
        }
        for (path, bin) in &installed {
            k = k.str(path, &sha256_file(bin)?);
        }
        k.finish()
    };
    let (custom_dir, kernel_version) =
        pipeline::customise_stage(&mut st, sc, "setupos-rootfs-custom", &custom_key, |tmp| {
            customise_setupos(
                &raw_dir.join("rootfs.tar"),
                tmp,
                &[&overlay, &env_overlay],
                &installed,
                &version,
                commit_time,
                epoch,
            )
        })?;

    // 6. Initramfs.
    let initrd_key = KeyBuilder::new("setupos-initramfs")
        .str("format", "1")
        .key("custom", &custom_key)
        .file("init", &init_script)?
        .str("modules", &SETUPOS_INITRAMFS_MODULES.join(" "))
        .str("applets", &initramfs::APPLETS.join(" "))
        .str("programs", &initramfs::PROGRAMS.join(" "))
        .str("hash-offset", &SETUPOS_VERITY_HASH_OFFSET.to_string())
        .finish();
    let initrd_dir =
        pipeline::initramfs_stage(&mut st, sc, "setupos-initramfs", &initrd_key, |tmp| {
            let root = rootfs::read_tree(&custom_dir.join("rootfs.tar"))?;
            let ir = initramfs::build_with(
                &root,
                &kernel_version,
                SETUPOS_VERITY_HASH_OFFSET,
                SETUPOS_INITRAMFS_MODULES,
            )?;
            initramfs::write_image(ir.tree, &init_script, tmp)
        })?;

    // 7. root.
    let root_key = KeyBuilder::new("setupos-root")
        .key("custom", &custom_key)
        .str("e2fsprogs", &fs_tools.e2fsprogs_version.to_string())
        .str("veritysetup", &fs_tools.veritysetup_version.to_string())
        .str("fs-size", &SETUPOS_ROOT_FS_SIZE.to_string())
        .str("part-size", &root_part.size_bytes().to_string())
        .str("hash-offset", &SETUPOS_VERITY_HASH_OFFSET.to_string())
        .str("epoch", &epoch.to_string())
        .finish();
    let (root_dir, root_hash) = pipeline::verity_root_stage(
        &mut st,
        sc,
        "root (ext4 + dm-verity)",
        "setupos-root",
        &root_key,
        |tmp| {
            make_verity_root(
                fs_tools,
                &custom_dir.join("rootfs.tar"),
                root_part.size_bytes(),
                SETUPOS_ROOT_FS_SIZE,
                SETUPOS_VERITY_HASH_OFFSET,
                epoch,
                tmp,
            )
        },
    )?;

    // 8. boot.
    let boot_args =
        setupos_boot_args(root_part.uuid, &root_hash).map_err(|message| BuildError::Input {
            path: root_dir.join("root_hash"),
            message,
        })?;
    let (boot_dir, boot_key) = pipeline::boot_stage(
        &mut st,
        &ctx,
        &c,
        &pipeline::BootPart {
            stage: "setupos-boot",
            title: "boot (ext4)",
            format: "1",
            size_bytes: boot_part.size_bytes(),
            uuid: SETUPOS_BOOT_FS_UUID,
            custom: (&custom_key, &custom_dir),
            initramfs: (&initrd_key, &initrd_dir),
            boot_args: &boot_args,
            version: &version,
        },
    )?;

    // 9 + 10. ESP and grub partition.
    let (esp_dir, esp_key) = pipeline::esp_stage(
        &mut st,
        &ctx,
        &c,
        &pipeline::FatPart {
            stage: "setupos-esp",
            size_bytes: esp_part.size_bytes(),
            volume_id: SETUPOS_ESP_VOLUME_ID,
        },
        &grub_early,
        &grub_modules,
    )?;
    let grubenv = icos_grubenv::GrubEnv::new()
        .to_bytes()
        .map_err(|e| BuildError::Grubenv(e.to_string()))?;
    let (grub_dir, grub_key) = pipeline::grub_stage(
        &mut st,
        &ctx,
        &c,
        &pipeline::FatPart {
            stage: "setupos-grub",
            size_bytes: grub_part.size_bytes(),
            volume_id: SETUPOS_GRUB_VOLUME_ID,
        },
        &grub_cfg,
        &grubenv,
    )?;

    // 11. CONFIG partition.
    let config_key = KeyBuilder::new("setupos-config")
        .file("config.ini", &config_ini)?
        .str("mtools", &fs_tools.mtools_version.to_string())
        .str("size", &config_part.size_bytes().to_string())
        .str("epoch", &epoch.to_string())
        .finish();
    let config_dir = pipeline::cached_stage(
        &mut st,
        sc,
        "config (FAT CONFIG, config.ini template)",
        "setupos-config",
        &config_key,
        |tmp| {
            let spec = VfatSpec {
                size_bytes: config_part.size_bytes(),
                label: icos_setupos::CONFIG_LABEL.into(),
                volume_id: icos_setupos::CONFIG_VOLUME_ID,
                epoch,
            };
            icos_imagefs::make_vfat(
                fs_tools,
                &spec,
                &[("config.ini".to_owned(), config_ini.clone())],
                &tmp.join("config.img"),
            )
            .map_err(BuildError::imagefs("making the CONFIG partition"))
        },
        |_| Ok(String::new()),
    )?;

    // 12. data partition.
    let host_img = hostos.dir.join(DISK_IMG);
    let guest_img = guestos.dir.join(DISK_IMG);
    let data_key = KeyBuilder::new("setupos-data")
        .file("deployment.json", &deployment_json)?
        .str("hostos", &sha256_file(&host_img)?)
        .str("guestos", &sha256_file(&guest_img)?)
        .str("e2fsprogs", &fs_tools.e2fsprogs_version.to_string())
        .str("size", &icos_setupos::DATA_FS_SIZE.to_string())
        .str("epoch", &epoch.to_string())
        .finish();
    let data_dir = pipeline::cached_stage(
        &mut st,
        sc,
        "data (deployment.json, HostOS and GuestOS)",
        "setupos-data",
        &data_key,
        |tmp| {
            let tree = work.join("data-tree");
            fs::create_dir_all(&tree).map_err(BuildError::io("creating", &tree))?;
            copy(&deployment_json, &tree.join("deployment.json"))?;
            copy(&host_img, &tree.join(HOSTOS_IMAGE))?;
            copy(&guest_img, &tree.join(GUESTOS_IMAGE))?;
            set_mode(&tree, 0o755)?;
            for f in ["deployment.json", HOSTOS_IMAGE, GUESTOS_IMAGE] {
                set_mode(&tree.join(f), 0o644)?;
            }
            let spec = Ext4Spec {
                size_bytes: icos_setupos::DATA_FS_SIZE,
                label: String::new(),
                uuid: icos_setupos::DATA_FS_UUID,
                hash_seed: icos_setupos::DATA_FS_HASH_SEED,
                epoch,
            };
            icos_imagefs::make_ext4(
                fs_tools,
                &spec,
                Ext4Source::DirRootOwned(&tree),
                &tmp.join("data.img"),
            )
            .map_err(BuildError::imagefs("making the data partition"))
        },
        |_| {
            Ok(format!(
                "HostOS {}, GuestOS {}",
                mib(file_len(&host_img)?),
                mib(file_len(&guest_img)?)
            ))
        },
    )?;

    // 13. Disk and artifacts.
    let artifacts_key = KeyBuilder::new("setupos-artifacts")
        .key("esp", &esp_key)
        .key("grub", &grub_key)
        .key("config", &config_key)
        .key("data", &data_key)
        .key("boot", &boot_key)
        .key("root", &root_key)
        .str("version", &version)
        .str("layout", &format!("{layout:?}"))
        .finish();
    let art_dir = pipeline::cached_stage(
        &mut st,
        sc,
        "disk image and artifacts (GPT, sparse tar + zstd)",
        "setupos-artifacts",
        &artifacts_key,
        |tmp| {
            let disk = work.join("disk.img");
            let parts = [
                ("esp", esp_dir.join("esp.img")),
                ("grub", grub_dir.join("grub.img")),
                ("config", config_dir.join("config.img")),
                ("data", data_dir.join("data.img")),
                ("boot", boot_dir.join("boot.img")),
                ("root", root_dir.join("root.img")),
            ];
            pipeline::assemble_disk(&layout, &parts, &disk)?;
            write(&tmp.join(VERSION_TXT), format!("{version}\n").as_bytes())?;
            write_disk_tar(&disk, &tmp.join(DISK_IMG))?;
            write_sha256sums(tmp, &[VERSION_TXT, DISK_IMG])
        },
        |dir| Ok(format!("disk {}", mib(file_len(&dir.join(DISK_IMG))?))),
    )?;

    let artifacts = pipeline::publish_artifacts(
        &art_dir,
        &run.dirs,
        &[VERSION_TXT, DISK_IMG, SHA256SUMS],
        false,
    )?;

    pipeline::prune_stages(
        sc,
        &[
            ("setupos-rootfs-raw", &raw_key, 2),
            ("setupos-rootfs-custom", &custom_key, 2),
            ("setupos-initramfs", &initrd_key, 2),
            ("setupos-root", &root_key, 2),
            ("setupos-boot", &boot_key, 2),
            ("setupos-esp", &esp_key, 2),
            ("setupos-grub", &grub_key, 2),
            ("setupos-config", &config_key, 2),
            ("setupos-data", &data_key, 2),
            ("setupos-artifacts", &artifacts_key, 2),
        ],
    )?;

    Ok(SetupOsReport {
        setupos: BuildReport {
            dir: run.dirs.final_dir.clone(),
            version,
            root_hash,
            artifacts,
            stages: st.timings().to_vec(),
        },
        hostos,
        guestos,
    })
}

/// Reads mmdebstrap's archive with [`classify_setupos`] and writes the
/// customised `rootfs.tar`, `vmlinuz` and `kernel-version` into `out`.
fn customise_setupos(
    raw_tar: &Path,
    out: &Path,
    overlays: &[&Path],
    installed: &Installed,
    version: &str,
    commit_time: u64,
    epoch: u64,
) -> Result<()> {
    let mut tree = rootfs::read_tree(raw_tar)?;
    let (kernel_version, kernel) = rootfs::take_kernel(&mut tree)?;
    rootfs::apply_rules(&mut tree, classify_setupos);
    for dir in overlays.iter().filter(|d| d.is_dir()) {
        tree.overlay_dir(dir)?;
    }
    for (path, bin) in installed {
        let data = fs::read(bin).map_err(BuildError::io("reading", bin))?;
        tree.insert(path, Node::new(Kind::File(data), 0o755));
    }
    // Mount points of the CONFIG and data partitions on the read-only root.
    for dir in ["config", "data"] {
        tree.insert(dir, Node::new(Kind::Dir, 0o755));
    }
    tree.insert(
        "commit-time",
        Node::new(Kind::File(format!("{commit_time}\n").into_bytes()), 0o644),
    );
    tree.insert(
        "opt/ic/share/version.txt",
        Node::new(Kind::File(format!("{version}\n").into_bytes()), 0o644),
    );
    rootfs::write_customised(&mut tree, out, &kernel_version, &kernel, epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_hardware_modules_and_drops_the_rest() {
        let m = "usr/lib/modules/6.1.0-40-amd64/kernel/";
        for keep in [
            "drivers/net/ethernet/intel/ixgbe/ixgbe.ko",
            "drivers/net/ethernet/mellanox/mlx5/core/mlx5_core.ko",
            "drivers/nvme/host/nvme.ko",
            "drivers/ata/ahci.ko",
            "drivers/usb/storage/uas.ko",
            "drivers/md/dm-mod.ko",
            "fs/vfat/vfat.ko",
        ] {
            assert_eq!(
                classify_setupos(&format!("{m}{keep}"), false),
                Rule::Keep,
                "{keep}"
            );
        }
        for drop in [
            "sound/core/snd.ko",
            "drivers/gpu/drm/drm.ko",
            "net/wireless/cfg80211.ko",
        ] {
            assert_eq!(
                classify_setupos(&format!("{m}{drop}"), false),
                Rule::Drop,
                "{drop}"
            );
        }
        // GuestOS's rules for everything else.
        assert_eq!(classify_setupos("etc/machine-id", false), Rule::Empty);
        assert_eq!(classify_setupos("boot/vmlinuz-6.1", false), Rule::Drop);
        assert_eq!(classify_setupos("usr/bin/lsblk", false), Rule::Keep);
    }

    #[test]
    fn boot_args_name_the_root_partition() {
        let root = uuid!("7C0A626E-E5EA-E543-B5C5-300EB8304DB7");
        let hash = "cd".repeat(32);
        let text = setupos_boot_args(root, &hash).expect("valid");
        assert_eq!(
            text.lines().nth(1),
            Some(
                format!(
                    "set BOOT_ARGS=\"root=PARTUUID=7c0a626e-e5ea-e543-b5c5-300eb8304db7 \
                     console=tty0 console=ttyS0 quiet panic=-1 ro root_hash={hash}\""
                )
                .as_str()
            )
        );
        assert!(setupos_boot_args(root, "ABC").is_err());
    }

    #[test]
    fn root_partition_holds_file_system_and_hash_tree() {
        let layout = OsKind::SetupOs.layout();
        let root = layout.partition("root").expect("root");
        let needed = SETUPOS_VERITY_HASH_OFFSET
            + icos_imagefs::verity_hash_size(SETUPOS_ROOT_FS_SIZE / icos_imagefs::BLOCK_SIZE);
        assert!(
            needed <= root.size_bytes(),
            "{needed} > {}",
            root.size_bytes()
        );
    }
}
