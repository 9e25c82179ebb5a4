//! The HostOS build pipeline: `icos build hostos`.
//!
//! | # | stage | what |
//! |---|-------|------|
//! | 1 | fetch packages | every `.deb` of `images/hostos/packages.lock` and `images/build/packages.lock` |
//! | 2 | build our binaries | `icos`, `icos-hostos-agent`, `icos-guestos-vm` and `icos-hostos-network` (`cargo build --release --locked`, paths remapped) |
//! | 3 | local apt repository | only when stage 4 runs |
//! | 4 | root file system | mmdebstrap of the HostOS lock (same arguments as GuestOS) |
//! | 5 | customise | GuestOS's rules, but keeping the hypervisor's kernel modules ([`HOSTOS_EXTRA_MODULES`]); `images/hostos/rootfs/`, `/opt/ic/bin/*`, `/opt/ic/share/version.txt`, mount point `/boot/config` |
//! | 6 | initramfs | GuestOS's (busybox, `veritysetup`, `dmsetup`, `blkid`, modules), with `images/hostos/initramfs/init` |
//! | 7 | A_root | ext4 + dm-verity exactly as GuestOS (the LV is 10 GiB, like GuestOS's A_root) |
//! | 8 | A_boot | ext4: `vmlinuz`, `initrd.img`, `boot_args` ([`hostos_boot_args`]), `version.txt` |
//! | 9 | esp | GRUB EFI from the locked GRUB packages with `images/hostos/grub/grub-early.cfg` and the `lvm` module |
//! | 10 | grub | `grub.cfg` + grubenv (`boot_alternative=A`, `boot_cycle=stable`) |
//! | 11 | config | empty ext4 for the `config` LV |
//! | 12 | disk | IC's HostOS GPT; the `hostlvm` PV with the VG written by [`icos_lvm`]; `config`, `A_boot`, `A_root` at their extents; `B_*`, `A_var` and `guestos` empty |
//! | 13 | artifacts | `disk-img.tar.zst`, `update-img.tar.zst` (`boot.img`, `root.img`, `VERSION.TXT`), `SHA256SUMS`, `VERSION.TXT` |
//!
//! The root volume is found without LVM's userland in the initramfs: the
//! boot arguments carry the hostlvm partition's PARTUUID and the root LV's
//! place on the PV (`icos.root_lv=NAME:DM_UUID:START:SECTORS`), computed from
//! the same [`VolumeGroupSpec`] that writes the LVM metadata, and `/init`
//! creates the linear device-mapper table with `dmsetup create` under LVM's
//! own name and UUID for the volume.
//!
//! The `guestos` LV stays empty in the published image: SetupOS writes
//! GuestOS there at install time, as IC does.

use std::fs;
use std::path::{Path, PathBuf};

use icos_layout::{OsKind, Slot};
use icos_lvm::VolumeGroupSpec;
use uuid::{Uuid, uuid};

use crate::boot;
use crate::cache::{KeyBuilder, sha256_file};
use crate::error::{BuildError, Result};
use crate::guestos::{
    ARTIFACTS, BuildReport, DEFAULT_EPOCH, HASH_SEED, Installed, ROOT_FS_SIZE, VERITY_HASH_OFFSET,
    VERITY_SALT, VERITY_UUID, input, make_root, write,
};
use crate::initramfs;
use crate::pipeline;
use crate::progress::{ProgressMode, Stages};
use crate::rootfs::{self, Kind, Node, Rule};

/// File system UUID of the HostOS A_boot / B_boot volumes.
pub const HOSTOS_BOOT_FS_UUID: Uuid = uuid!("6a5c1b1e-0000-4000-8000-000000000012");
/// File system UUID of the HostOS config volume.
pub const HOSTOS_CONFIG_FS_UUID: Uuid = uuid!("6a5c1b1e-0000-4000-8000-000000000013");
/// Volume id of the HostOS EFI system partition.
pub const HOSTOS_ESP_VOLUME_ID: u32 = 0x0b00_70f5;
/// Volume id of the HostOS grub partition.
pub const HOSTOS_GRUB_VOLUME_ID: u32 = 0x0b00_70f6;

/// Kernel modules HostOS keeps on top of GuestOS's
/// [`rootfs::KEEP_MODULES`] (prefixes under `lib/modules/<version>/kernel/`):
/// KVM (with `irqbypass`, and `ccp`, which `kvm_amd` needs for SEV), vhost
/// (vsock, net), tap devices, the bridge, NVMe and AHCI disks.
pub const HOSTOS_EXTRA_MODULES: &[&str] = &[
    "arch/x86/kvm/",
    "virt/lib/",
    "drivers/crypto/ccp/",
    "drivers/vhost/",
    "drivers/net/tun.ko",
    "drivers/net/tap.ko",
    "drivers/net/macvlan.ko",
    "drivers/net/macvtap.ko",
    "net/bridge/",
    "net/802/",
    "net/llc/",
    "drivers/nvme/",
    "drivers/ata/",
    "drivers/scsi/",
];

/// Bumped whenever the customisation code changes what it writes.
const CUSTOMISE_VERSION: &str = "2";
const STAGES: usize = 13;

/// Our programs in the image: (cargo package, binary, path in the image).
pub(crate) const HOSTOS_BINARIES: [(&str, &str, &str); 4] = [
    ("icos", "icos", "opt/ic/bin/icos"),
    (
        "icos-hostos-agent",
        "icos-hostos-agent",
        "opt/ic/bin/icos-hostos-agent",
    ),
    (
        "icos-guestos-vm-bin",
        "icos-guestos-vm",
        "opt/ic/bin/icos-guestos-vm",
    ),
    (
        "icos-hostos-network-bin",
        "icos-hostos-network",
        "opt/ic/bin/icos-hostos-network",
    ),
];

/// What to build and where.
#[derive(Debug, Clone)]
pub struct HostOsOptions {
    /// The source tree (the workspace root with `images/`).
    pub source: PathBuf,
    /// The output folder; artifacts go to `<out>/hostos/`.
    pub out: PathBuf,
    /// The version; `None`: `git rev-parse HEAD` of the source tree.
    pub version: Option<String>,
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

impl HostOsOptions {
    /// Defaults: `out/`, version from git, default cache.
    pub fn new(source: impl Into<PathBuf>) -> HostOsOptions {
        HostOsOptions {
            source: source.into(),
            out: PathBuf::from("out"),
            version: None,
            cache: None,
            offline: false,
            mirror: None,
            epoch: DEFAULT_EPOCH,
            progress: ProgressMode::Auto,
        }
    }
}

/// The rule for a path of mmdebstrap's HostOS archive: GuestOS's
/// [`rootfs::classify`], except that the modules of
/// [`HOSTOS_EXTRA_MODULES`] stay.
pub fn classify_hostos(path: &str, is_dir: bool) -> Rule {
    if let Some(rest) = rootfs::module_path(path)
        && HOSTOS_EXTRA_MODULES.iter().any(|k| rest.starts_with(k))
    {
        return Rule::Keep;
    }
    rootfs::classify(path, is_dir)
}

/// The device-mapper UUID LVM gives an active LV: `LVM-` and the VG and LV
/// UUIDs without hyphens.
pub fn lvm_dm_uuid(vg_uuid: &str, lv_uuid: &str) -> String {
    let strip = |s: &str| s.chars().filter(|&c| c != '-').collect::<String>();
    format!("LVM-{}{}", strip(vg_uuid), strip(lv_uuid))
}

/// The `boot_args` file of HostOS: `BOOT_ARGS_A` and `BOOT_ARGS_B`, each
/// naming the hostlvm partition, its slot's root LV (device-mapper name,
/// UUID, start sector on the PV, length in sectors) and `dfinity.system=`.
pub fn hostos_boot_args(
    pv_partuuid: Uuid,
    vg: &VolumeGroupSpec,
    root_hash: &str,
) -> std::result::Result<String, String> {
    boot::check_root_hash(root_hash)?;
    let mut out = String::from(
        "# HostOS kernel command lines, one per slot; grub.cfg picks the booted slot's.\n",
    );
    for slot in [Slot::A, Slot::B] {
        let [_, root, _] = slot.names();
        let lv = vg
            .volume(root)
            .ok_or_else(|| format!("volume group {} has no volume {root}", vg.vg_name))?;
        let (offset, size) = vg
            .volume_byte_range(root)
            .ok_or_else(|| format!("volume group {} has no volume {root}", vg.vg_name))?;
        let line = format!(
            "icos.hostlvm=PARTUUID={} icos.root_lv={}-{root}:{}:{}:{} console=ttyS0 quiet \
             panic=-1 ro dfinity.system={slot} root_hash={root_hash}",
            pv_partuuid.hyphenated(),
            vg.vg_name,
            lvm_dm_uuid(vg.vg_uuid.as_str(), lv.uuid.as_str()),
            offset / icos_lvm::SECTOR_SIZE,
            size / icos_lvm::SECTOR_SIZE,
        );
        let var = match slot {
            Slot::A => boot::boot_args_var(icos_grubenv::Slot::A),
            Slot::B => boot::boot_args_var(icos_grubenv::Slot::B),
        };
        out.push_str(&format!("set {var}=\"{line}\"\n"));
    }
    Ok(out)
}

/// Builds HostOS (see the module docs).
pub fn build_hostos(opts: &HostOsOptions) -> Result<BuildReport> {
    let src = fs::canonicalize(&opts.source).map_err(BuildError::io("reading", &opts.source))?;
    let images = src.join("images");
    let host_dir = images.join("hostos");
    let lock_path = input(&host_dir.join("packages.lock"))?;
    let grub_cfg = input(&host_dir.join("grub/grub.cfg"))?;
    let grub_early = input(&host_dir.join("grub/grub-early.cfg"))?;
    let grub_modules = input(&host_dir.join("grub/modules.list"))?;
    let init_script = input(&host_dir.join("initramfs/init"))?;
    let overlay = input(&host_dir.join("rootfs"))?;
    let c = pipeline::load_common(
        &images,
        lock_path,
        &[
            "busybox-static",
            "cryptsetup-bin",
            "dmsetup",
            "linux-image-amd64",
            "lvm2",
            "ovmf",
            "qemu-system-x86",
            "systemd",
        ],
    )?;
    let fs_tools = &c.fs_tools;
    let version = pipeline::image_version(&src, opts.version.as_ref())?;

    let layout = OsKind::HostOs.layout();
    let vg = VolumeGroupSpec::ic_hostos();
    vg.validate().map_err(|e| BuildError::Input {
        path: PathBuf::from("icos_lvm::ic_hostos"),
        message: e.to_string(),
    })?;
    let layout_err = |message: String| BuildError::Input {
        path: PathBuf::from("icos_layout::hostos"),
        message,
    };
    let part = |name: &str| {
        layout
            .partition(name)
            .cloned()
            .ok_or_else(|| layout_err(format!("no partition {name}")))
    };
    let lv_size = |name: &str| {
        layout
            .volume_byte_range(name)
            .map(|(_, size)| size)
            .ok_or_else(|| layout_err(format!("no volume {name}")))
    };
    let esp_part = part("esp")?;
    let grub_part = part("grub")?;
    let pv_part = part("hostlvm")?;
    let a_root_size = lv_size("A_root")?;
    let a_boot_size = lv_size("A_boot")?;
    let config_size = lv_size("config")?;
    if pv_part.size_bytes() < vg.pv_size {
        return Err(layout_err(format!(
            "partition hostlvm ({} bytes) is smaller than the PV ({} bytes)",
            pv_part.size_bytes(),
            vg.pv_size
        )));
    }

    let epoch = opts.epoch;
    let run = pipeline::start(
        &opts.out,
        "hostos",
        opts.cache.as_ref(),
        opts.mirror.as_ref(),
        opts.offline,
        epoch,
    )?;
    let ctx = run.ctx();
    let sc = ctx.sc;
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
        &HOSTOS_BINARIES,
        "hostos",
        "hostos-rootfs-raw",
    )?;

    // 5. Customisation.
    let custom_key = {
        let mut k = KeyBuilder::new("hostos-rootfs-custom")
            .str("version", CUSTOMISE_VERSION)
            .key("raw", &raw_key)
            .str("extra-modules", &HOSTOS_EXTRA_MODULES.join(" "))
            .dir("overlay", &overlay)?
            .str("image-version", &version)
            .str("epoch", &epoch.to_string());
        for (path, bin) in &installed {
            k = k.str(path, &sha256_file(bin)?);
        }
        k.finish()
    };
    let (custom_dir, kernel_version) =
        pipeline::customise_stage(&mut st, sc, "hostos-rootfs-custom", &custom_key, |tmp| {
            customise_hostos(
                &raw_dir.join("rootfs.tar"),
                tmp,
                &overlay,
                &installed,
                &version,
                epoch,
            )
        })?;

    // 6. Initramfs.
    let initrd_key = KeyBuilder::new("hostos-initramfs")
        .str("format", "1")
        .key("custom", &custom_key)
        .file("init", &init_script)?
        .str("modules", &initramfs::MODULES.join(" "))
        .str("applets", &initramfs::APPLETS.join(" "))
        .str("programs", &initramfs::PROGRAMS.join(" "))
        .str("hash-offset", &VERITY_HASH_OFFSET.to_string())
        .finish();
    let initrd_dir =
        pipeline::initramfs_stage(&mut st, sc, "hostos-initramfs", &initrd_key, |tmp| {
            make_hostos_initramfs(&custom_dir, &kernel_version, &init_script, tmp)
        })?;

    // 7. A_root.
    let root_key = KeyBuilder::new("hostos-a-root")
        .key("custom", &custom_key)
        .str("e2fsprogs", &fs_tools.e2fsprogs_version.to_string())
        .str("veritysetup", &fs_tools.veritysetup_version.to_string())
        .str("fs-size", &ROOT_FS_SIZE.to_string())
        .str("part-size", &a_root_size.to_string())
        .str("hash-offset", &VERITY_HASH_OFFSET.to_string())
        .str("salt", VERITY_SALT)
        .str("uuid", &format!("{VERITY_UUID}/{HASH_SEED}"))
        .str("epoch", &epoch.to_string())
        .finish();
    let (root_dir, root_hash) = pipeline::verity_root_stage(
        &mut st,
        sc,
        "A_root (ext4 + dm-verity)",
        "hostos-a-root",
        &root_key,
        |tmp| {
            make_root(
                fs_tools,
                &custom_dir.join("rootfs.tar"),
                a_root_size,
                epoch,
                tmp,
            )
        },
    )?;

    // 8. A_boot.
    let boot_args =
        hostos_boot_args(pv_part.uuid, &vg, &root_hash).map_err(|message| BuildError::Input {
            path: root_dir.join("root_hash"),
            message,
        })?;
    let (boot_dir, boot_key) = pipeline::boot_stage(
        &mut st,
        &ctx,
        &c,
        &pipeline::BootPart {
            stage: "hostos-a-boot",
            title: "A_boot (ext4)",
            format: "1",
            size_bytes: a_boot_size,
            uuid: HOSTOS_BOOT_FS_UUID,
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
            stage: "hostos-esp",
            size_bytes: esp_part.size_bytes(),
            volume_id: HOSTOS_ESP_VOLUME_ID,
        },
        &grub_early,
        &grub_modules,
    )?;
    let grubenv = boot::initial_grubenv().map_err(BuildError::Grubenv)?;
    let (grub_dir, grub_key) = pipeline::grub_stage(
        &mut st,
        &ctx,
        &c,
        &pipeline::FatPart {
            stage: "hostos-grub",
            size_bytes: grub_part.size_bytes(),
            volume_id: HOSTOS_GRUB_VOLUME_ID,
        },
        &grub_cfg,
        &grubenv,
    )?;

    // 11. config volume.
    let (config_dir, config_key) = pipeline::empty_config_stage(
        &mut st,
        &ctx,
        &c,
        &pipeline::EmptyConfig {
            stage: "hostos-config",
            title: "config volume (ext4, empty)",
            step: "making the config volume",
            size_bytes: config_size,
            uuid: HOSTOS_CONFIG_FS_UUID,
        },
    )?;

    // 12 + 13. Disk and artifacts.
    let pv_header = icos_lvm::header_region(&vg).map_err(|e| BuildError::Input {
        path: PathBuf::from("icos_lvm::ic_hostos"),
        message: e.to_string(),
    })?;
    let artifacts_key = KeyBuilder::new("hostos-artifacts")
        .key("esp", &esp_key)
        .key("grub", &grub_key)
        .key("config", &config_key)
        .key("a-boot", &boot_key)
        .key("a-root", &root_key)
        .bytes("pv-header", &pv_header)
        .str("version", &version)
        .str("layout", &format!("{layout:?}"))
        .finish();
    let art_dir = pipeline::disk_and_artifacts_stages(
        &mut st,
        &ctx,
        &pipeline::DiskArtifacts {
            stage: "hostos-artifacts",
            key: &artifacts_key,
            disk_title: "disk image (GPT + hostlvm, sparse)",
            layout: &layout,
            boot_img: &boot_dir.join("boot.img"),
            root_img: &root_dir.join("root.img"),
            version: &version,
        },
        || {
            let header_img = ctx.work.join("hostlvm-header.img");
            write(&header_img, &pv_header)?;
            Ok(vec![
                ("esp", esp_dir.join("esp.img")),
                ("grub", grub_dir.join("grub.img")),
                ("hostlvm", header_img),
                ("config", config_dir.join("config.img")),
                ("A_boot", boot_dir.join("boot.img")),
                ("A_root", root_dir.join("root.img")),
            ])
        },
    )?;

    let artifacts = pipeline::publish_artifacts(&art_dir, &run.dirs, &ARTIFACTS, true)?;

    pipeline::prune_stages(
        sc,
        &[
            ("hostos-rootfs-raw", &raw_key, 2),
            ("hostos-rootfs-custom", &custom_key, 2),
            ("hostos-initramfs", &initrd_key, 2),
            ("hostos-a-root", &root_key, 2),
            ("hostos-a-boot", &boot_key, 2),
            ("hostos-esp", &esp_key, 2),
            ("hostos-grub", &grub_key, 2),
            ("hostos-config", &config_key, 2),
            ("hostos-artifacts", &artifacts_key, 2),
        ],
    )?;

    Ok(BuildReport {
        dir: run.dirs.final_dir.clone(),
        version,
        root_hash,
        artifacts,
        stages: st.timings().to_vec(),
    })
}

/// Reads mmdebstrap's archive with [`classify_hostos`] and writes the
/// customised `rootfs.tar`, `vmlinuz` and `kernel-version` into `out`.
fn customise_hostos(
    raw_tar: &Path,
    out: &Path,
    overlay: &Path,
    installed: &Installed,
    version: &str,
    epoch: u64,
) -> Result<()> {
    let mut tree = rootfs::read_tree(raw_tar)?;
    let (kernel_version, kernel) = rootfs::take_kernel(&mut tree)?;
    rootfs::apply_rules(&mut tree, classify_hostos);
    tree.overlay_dir(overlay)?;
    for (path, bin) in installed {
        let data = fs::read(bin).map_err(BuildError::io("reading", bin))?;
        tree.insert(path, Node::new(Kind::File(data), 0o755));
    }
    // Mount point of the config volume on the read-only root.
    tree.insert("boot/config", Node::new(Kind::Dir, 0o755));
    tree.insert(
        "opt/ic/share/version.txt",
        Node::new(Kind::File(format!("{version}\n").into_bytes()), 0o644),
    );
    rootfs::write_customised(&mut tree, out, &kernel_version, &kernel, epoch)
}

/// GuestOS's initramfs (which has `dmsetup` for the LVM mapping) with the
/// HostOS `/init`; writes `initrd.img` (newc cpio, zstd) into `out`.
fn make_hostos_initramfs(
    custom_dir: &Path,
    kernel_version: &str,
    init: &Path,
    out: &Path,
) -> Result<()> {
    let root = rootfs::read_tree(&custom_dir.join("rootfs.tar"))?;
    let ir = initramfs::build(&root, kernel_version, VERITY_HASH_OFFSET)?;
    initramfs::write_image(ir.tree, init, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_hypervisor_modules() {
        let m = "usr/lib/modules/6.1.0-40-amd64/kernel/";
        assert_eq!(
            classify_hostos(&format!("{m}arch/x86/kvm/kvm-intel.ko"), false),
            Rule::Keep
        );
        assert_eq!(
            classify_hostos(&format!("{m}drivers/vhost/vhost_vsock.ko"), false),
            Rule::Keep
        );
        // kvm.ko needs irqbypass, kvm-amd.ko also ccp.
        for dep in ["virt/lib/irqbypass.ko", "drivers/crypto/ccp/ccp.ko"] {
            assert_eq!(classify_hostos(&format!("{m}{dep}"), false), Rule::Keep);
        }
        assert_eq!(
            classify_hostos(&format!("{m}net/bridge/bridge.ko"), false),
            Rule::Keep
        );
        // GuestOS's rules still apply to everything else.
        assert_eq!(
            classify_hostos(&format!("{m}sound/core/snd.ko"), false),
            Rule::Drop
        );
        assert_eq!(
            classify_hostos(&format!("{m}fs/ext4/ext4.ko"), false),
            Rule::Keep
        );
        assert_eq!(classify_hostos("etc/machine-id", false), Rule::Empty);
        assert_eq!(classify_hostos("boot/vmlinuz-6.1", false), Rule::Drop);
    }

    #[test]
    fn boot_args_name_each_slots_root_volume() {
        let vg = VolumeGroupSpec::ic_hostos();
        let pv = uuid!("735a766a-2047-45c2-ab48-d5ec948de550");
        let hash = "ab".repeat(32);
        let text = hostos_boot_args(pv, &vg, &hash).expect("valid");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        // A_root: extent 281 of 4 MiB after the 1 MiB header, 2560 extents.
        assert_eq!(
            lines[1],
            format!(
                "set BOOT_ARGS_A=\"icos.hostlvm=PARTUUID=735a766a-2047-45c2-ab48-d5ec948de550 \
                 icos.root_lv=hostlvm-A_root:LVM-4c7GVZDf82QEcJxXtVJgRLIjLEhK0FgARM99J5B2t1JU3lHNcoJ2f21808eJGo3s:{}:{} \
                 console=ttyS0 quiet panic=-1 ro dfinity.system=A root_hash={hash}\"",
                2048 + 281 * 8192,
                2560 * 8192
            )
        );
        assert!(lines[2].starts_with("set BOOT_ARGS_B=\""));
        assert!(lines[2].contains(&format!(
            "icos.root_lv=hostlvm-B_root:LVM-4c7GVZDf82QEcJxXtVJgRLIjLEhK0FgAUVBREuGuBhVHHbRUApjjhQblIyez3Tjr:{}:",
            2048 + 5657 * 8192
        )));
        assert!(lines[2].contains("dfinity.system=B"));
        assert!(hostos_boot_args(pv, &vg, "xyz").is_err());
    }

    #[test]
    fn takes_exactly_one_kernel() {
        let mut tree = rootfs::Tree::default();
        tree.insert(
            "boot/vmlinuz-6.1.0-1-amd64",
            Node::new(Kind::File(b"kernel".to_vec()), 0o644),
        );
        tree.insert(
            "etc/machine-id",
            Node::new(Kind::File(b"x\n".to_vec()), 0o444),
        );
        let (version, data) = rootfs::take_kernel(&mut tree).expect("one kernel");
        assert_eq!(version, "6.1.0-1-amd64");
        assert_eq!(data, b"kernel");
        rootfs::apply_rules(&mut tree, classify_hostos);
        assert_eq!(
            tree.nodes.get("etc/machine-id").map(|n| &n.kind),
            Some(&Kind::File(Vec::new()))
        );
        assert!(rootfs::take_kernel(&mut tree).is_err());
    }
}
