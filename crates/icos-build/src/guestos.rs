//! The GuestOS build pipeline (see the crate docs for the stages).

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use icos_imagefs::{Ext4Source, Ext4Spec, Tools, VeritySpec};
use icos_layout::{OsKind, Slot};
use icos_packages::Lock;
use uuid::{Uuid, uuid};

use crate::boot::{self, BootArgs};
use crate::cache::{KeyBuilder, sha256_bytes, sha256_file};
use crate::error::{BuildError, Result};
use crate::initramfs;
use crate::pipeline;
use crate::progress::{ProgressMode, StageStatus, StageTiming, Stages, mib};
use crate::rootfs::{self, Kind, Node};
use crate::tools::{self, GIT};

/// The default `SOURCE_DATE_EPOCH` of every build (2023-11-14 22:13:20 UTC):
/// all mtimes in the image and the file system times. Not zero, because a
/// zero "last password change" in `/etc/shadow` forces a password change.
pub const DEFAULT_EPOCH: u64 = 1_700_000_000;

/// dm-verity hash offset inside A_root: 10 GiB − 128 MiB, as IC.
pub const VERITY_HASH_OFFSET: u64 = 10_603_200_512;
/// The ext4 file system inside A_root: 3 GiB, as IC; dm-verity covers it.
pub const ROOT_FS_SIZE: u64 = 3 << 30;
/// The dm-verity superblock UUID, as IC.
pub const VERITY_UUID: Uuid = uuid!("1736291d-aceb-42d7-b044-43ee31d86cd4");
/// The dm-verity salt: SHA-256 of `icos GuestOS dm-verity salt v1`.
pub const VERITY_SALT: &str = "1d899cd347e3cd5a8165bd15ff289332af44d0c759fcd11636f14a29b911d9ed";
/// ext4 directory hash seed, as IC.
pub const HASH_SEED: Uuid = uuid!("c61251eb-100b-48fe-b089-57dea7368612");
/// File system UUID of A_root / B_root.
pub const ROOT_FS_UUID: Uuid = uuid!("6a5c1b1e-0000-4000-8000-000000000001");
/// File system UUID of A_boot / B_boot.
pub const BOOT_FS_UUID: Uuid = uuid!("6a5c1b1e-0000-4000-8000-000000000002");
/// File system UUID of the config partition.
pub const CONFIG_FS_UUID: Uuid = uuid!("6a5c1b1e-0000-4000-8000-000000000003");
/// Volume id of the EFI system partition.
pub const ESP_VOLUME_ID: u32 = 0x0b00_70e5;
/// Volume id of the grub partition.
pub const GRUB_VOLUME_ID: u32 = 0x0b00_70e6;
/// Root's password hash in dev images: the password is `guestos-dev`
/// (`openssl passwd -6 -salt icosdevroot guestos-dev`).
pub const DEV_ROOT_PASSWORD_HASH: &str = "$6$icosdevroot$Q3N5Sw3ERtSJCl12tyBzXGodDB6swzl/vDXH6cGjSNupryMPqjPET.GTsXu6I2.1UMlQHWpwrh483JJtV5tS2/";
/// Bumped whenever the customisation code changes what it writes.
const CUSTOMISE_VERSION: &str = "5";

/// Build flavour, as IC's `prod` and `dev` images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    /// Console login as root (password `guestos-dev`) on tty1.
    Dev,
    /// No console login: root locked, every getty masked.
    Prod,
}

impl Env {
    /// `dev` or `prod`.
    pub fn as_str(self) -> &'static str {
        match self {
            Env::Dev => "dev",
            Env::Prod => "prod",
        }
    }
}

/// What the GuestOS image runs: IC-OS's GuestOS (the replica) or
/// Boundary-GuestOS (the IC API router and the HTTP gateway). Both share
/// the GuestOS base: layout, packages, early boot, A/B slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// GuestOS: `/opt/ic/bin/replica` and its units
    /// (`images/guestos/rootfs-replica`).
    Replica,
    /// Boundary-GuestOS: `icos-boundary` and `icos-gateway` and their units
    /// (`images/boundary-guestos/rootfs`), ports 80 and 443.
    Boundary,
}

impl Role {
    /// The output folder's name: `guestos` or `boundary-guestos`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Role::Replica => "guestos",
            Role::Boundary => "boundary-guestos",
        }
    }

    /// The role's overlay, above the common GuestOS one.
    fn overlay(self, images: &Path) -> PathBuf {
        match self {
            Role::Replica => images.join("guestos").join("rootfs-replica"),
            Role::Boundary => images.join("boundary-guestos").join("rootfs"),
        }
    }

    /// Our programs in the image: (package, binary, path in the image).
    fn binaries(self) -> Vec<(&'static str, &'static str, &'static str)> {
        let own: &[_] = match self {
            Role::Replica => &REPLICA_ROLE_BINARIES,
            Role::Boundary => &BOUNDARY_ROLE_BINARIES,
        };
        BASE_BINARIES.iter().chain(own).copied().collect()
    }
}

/// What to build and where.
#[derive(Debug, Clone)]
pub struct GuestOsOptions {
    /// The source tree (the workspace root with `images/`).
    pub source: PathBuf,
    /// The output folder; artifacts go to `<out>/guestos/`.
    pub out: PathBuf,
    /// `dev` or `prod`.
    pub env: Env,
    /// GuestOS or Boundary-GuestOS.
    pub role: Role,
    /// The version; `None`: `git rev-parse HEAD` of the source tree.
    pub version: Option<String>,
    /// The replica binary to install as `/opt/ic/bin/replica`; `None`:
    /// `icos-testnet-replica`, built from the source tree. GuestOS only.
    pub replica: Option<PathBuf>,
    /// The registry's trust root (a TUF `root.json` signed by its own
    /// governance quorum), baked in as `/opt/ic/share/registry-root.json`.
    pub registry_root: Option<PathBuf>,
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

impl GuestOsOptions {
    /// Defaults: GuestOS, dev, `out/`, version from git, the built-in
    /// replica, default cache.
    pub fn new(source: impl Into<PathBuf>) -> GuestOsOptions {
        GuestOsOptions {
            source: source.into(),
            out: PathBuf::from("out"),
            env: Env::Dev,
            role: Role::Replica,
            version: None,
            replica: None,
            registry_root: None,
            cache: None,
            offline: false,
            mirror: None,
            epoch: DEFAULT_EPOCH,
            progress: ProgressMode::Auto,
        }
    }
}

/// One artifact in the output folder.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Artifact {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 (hex).
    pub sha256: String,
}

/// What a build produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    /// `<out>/guestos` (`<out>/boundary-guestos`, `<out>/hostos`).
    pub dir: PathBuf,
    /// The version built.
    pub version: String,
    /// The dm-verity root hash of A_root.
    pub root_hash: String,
    /// The artifacts, sorted by name.
    pub artifacts: Vec<Artifact>,
    /// Every stage with its time.
    pub stages: Vec<StageTiming>,
}

/// The output folder's file names.
pub const DISK_IMG: &str = "disk-img.tar.zst";
/// The upgrade image.
pub const UPDATE_IMG: &str = "update-img.tar.zst";
/// Checksums of the other three files, `sha256sum` format.
pub const SHA256SUMS: &str = "SHA256SUMS";
/// The version, one line.
pub const VERSION_TXT: &str = "VERSION.TXT";
/// The artifacts of an image with an upgrade image, in the report's
/// order.
pub(crate) const ARTIFACTS: [&str; 4] = [VERSION_TXT, DISK_IMG, SHA256SUMS, UPDATE_IMG];

const STAGES: usize = 13;

/// Removes the temporary folders of a build that did not finish.
pub(crate) struct Cleanup(pub(crate) Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.exists() {
                let _ = fs::remove_dir_all(p);
            }
        }
    }
}

pub(crate) fn input(path: &Path) -> Result<PathBuf> {
    if path.exists() {
        Ok(path.to_path_buf())
    } else {
        Err(BuildError::Input {
            path: path.to_path_buf(),
            message: "missing (is --source the icos source tree?)".into(),
        })
    }
}

/// Builds GuestOS (see the crate docs).
pub fn build_guestos(opts: &GuestOsOptions) -> Result<BuildReport> {
    let src = fs::canonicalize(&opts.source).map_err(BuildError::io("reading", &opts.source))?;
    let images = src.join("images");
    let guest_dir = images.join("guestos");
    let lock_path = input(&guest_dir.join("packages.lock"))?;
    let grub_cfg = input(&guest_dir.join("grub/grub.cfg"))?;
    let grub_early = input(&guest_dir.join("grub/grub-early.cfg"))?;
    let grub_modules = input(&guest_dir.join("grub/modules.list"))?;
    let init_script = input(&guest_dir.join("initramfs/init"))?;
    let overlay_common = input(&guest_dir.join("rootfs"))?;
    let overlay_env = guest_dir.join(format!("rootfs-{}", opts.env.as_str()));
    let overlay_role = input(&opts.role.overlay(&images))?;
    if let Some(r) = &opts.replica {
        if opts.role != Role::Replica {
            return Err(BuildError::Input {
                path: r.clone(),
                message: "--replica: only GuestOS runs a replica".into(),
            });
        }
        if !r.is_file() {
            return Err(BuildError::Input {
                path: r.clone(),
                message: "--replica: not a file".into(),
            });
        }
    }

    let registry_root = match &opts.registry_root {
        Some(path) => {
            icos_registry::client::check_trust_root(path).map_err(|e| BuildError::Input {
                path: path.clone(),
                message: format!("--registry-root: {e}"),
            })?;
            Some(fs::read(path).map_err(BuildError::io("reading", path))?)
        }
        None => None,
    };

    let c = pipeline::load_common(
        &images,
        lock_path,
        &[
            "busybox-static",
            "cryptsetup-bin",
            "linux-image-amd64",
            "systemd",
        ],
    )?;
    let fs_tools = &c.fs_tools;
    let version = pipeline::image_version(&src, opts.version.as_ref())?;

    let name = opts.role.dir_name();
    let run = pipeline::start(
        &opts.out,
        name,
        opts.cache.as_ref(),
        opts.mirror.as_ref(),
        opts.offline,
        opts.epoch,
    )?;
    let ctx = run.ctx();
    let sc = ctx.sc;
    let mut st = Stages::new(opts.progress, STAGES);
    let epoch = opts.epoch;
    let layout = OsKind::GuestOs.layout();
    let part = |name: &str| {
        layout
            .partition(name)
            .cloned()
            .ok_or_else(|| BuildError::Input {
                path: PathBuf::from("icos_layout::guestos"),
                message: format!("no partition {name}"),
            })
    };
    let a_root = part("A_root")?;
    let a_boot = part("A_boot")?;
    let esp_part = part("esp")?;
    let grub_part = part("grub")?;
    let config_part = part("config")?;
    let slot_a = layout
        .slot_partitions(Slot::A)
        .ok_or_else(|| BuildError::Input {
            path: PathBuf::from("icos_layout::guestos"),
            message: "no slot A".into(),
        })?;
    debug_assert_eq!(slot_a.root.uuid, a_root.uuid);

    // 1 to 4. Packages, our binaries, mmdebstrap's root file system.
    let pipeline::Base {
        mut installed,
        raw_dir,
        raw_key,
    } = pipeline::base_stages(
        &mut st,
        &ctx,
        &c,
        &src,
        &opts.role.binaries(),
        name,
        "rootfs-raw",
    )?;
    if let Some(replica) = &opts.replica {
        for (path, bin) in &mut installed {
            if *path == REPLICA_PATH {
                bin.clone_from(replica);
            }
        }
    }

    // 5. Customisation.
    let custom_key = {
        let mut k = KeyBuilder::new("rootfs-custom")
            .str("version", CUSTOMISE_VERSION)
            .key("raw", &raw_key)
            .str("env", opts.env.as_str())
            .dir("overlay", &overlay_common)?
            .dir("overlay-role", &overlay_role)?
            .dir("overlay-env", &overlay_env)?
            .str("image-version", &version)
            .str("epoch", &epoch.to_string())
            .str(
                "registry-root",
                &registry_root
                    .as_deref()
                    .map(sha256_bytes)
                    .unwrap_or_default(),
            );
        for (path, bin) in &installed {
            k = k.str(path, &sha256_file(bin)?);
        }
        k.finish()
    };
    let (custom_dir, kernel_version) =
        pipeline::customise_stage(&mut st, sc, "rootfs-custom", &custom_key, |tmp| {
            customise(
                &raw_dir.join("rootfs.tar"),
                tmp,
                opts,
                &[&overlay_common, &overlay_role, &overlay_env],
                &installed,
                &version,
                registry_root.as_deref(),
            )
        })?;

    // 6. Initramfs.
    let initrd_key = KeyBuilder::new("initramfs")
        .str("format", "2")
        .key("custom", &custom_key)
        .file("init", &init_script)?
        .str("modules", &initramfs::MODULES.join(" "))
        .str("applets", &initramfs::APPLETS.join(" "))
        .str("programs", &initramfs::PROGRAMS.join(" "))
        .str("hash-offset", &VERITY_HASH_OFFSET.to_string())
        .finish();
    let initrd_dir = pipeline::initramfs_stage(&mut st, sc, "initramfs", &initrd_key, |tmp| {
        make_initramfs(&custom_dir, &kernel_version, &init_script, tmp)
    })?;

    // 7. A_root.
    let root_key = KeyBuilder::new("a-root")
        .key("custom", &custom_key)
        .str("e2fsprogs", &fs_tools.e2fsprogs_version.to_string())
        .str("veritysetup", &fs_tools.veritysetup_version.to_string())
        .str("fs-size", &ROOT_FS_SIZE.to_string())
        .str("part-size", &a_root.size_bytes().to_string())
        .str("hash-offset", &VERITY_HASH_OFFSET.to_string())
        .str("salt", VERITY_SALT)
        .str("uuid", &format!("{VERITY_UUID}/{ROOT_FS_UUID}/{HASH_SEED}"))
        .str("epoch", &epoch.to_string())
        .finish();
    let (root_dir, root_hash) = pipeline::verity_root_stage(
        &mut st,
        sc,
        "A_root (ext4 + dm-verity)",
        "a-root",
        &root_key,
        |tmp| {
            make_root(
                fs_tools,
                &custom_dir.join("rootfs.tar"),
                a_root.size_bytes(),
                epoch,
                tmp,
            )
        },
    )?;

    // 8. A_boot.
    let boot_args = BootArgs {
        a_root_partuuid: a_root.uuid,
        b_root_partuuid: part("B_root")?.uuid,
        root_hash: root_hash.clone(),
        extra: Vec::new(),
    }
    .render()
    .map_err(|message| BuildError::Input {
        path: root_dir.join("root_hash"),
        message,
    })?;
    let (boot_dir, boot_key) = pipeline::boot_stage(
        &mut st,
        &ctx,
        &c,
        &pipeline::BootPart {
            stage: "a-boot",
            title: "A_boot (ext4)",
            format: "2",
            size_bytes: a_boot.size_bytes(),
            uuid: BOOT_FS_UUID,
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
            stage: "esp",
            size_bytes: esp_part.size_bytes(),
            volume_id: ESP_VOLUME_ID,
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
            stage: "grub",
            size_bytes: grub_part.size_bytes(),
            volume_id: GRUB_VOLUME_ID,
        },
        &grub_cfg,
        &grubenv,
    )?;

    // 11. config partition.
    let (config_dir, config_key) = pipeline::empty_config_stage(
        &mut st,
        &ctx,
        &c,
        &pipeline::EmptyConfig {
            stage: "config",
            title: "config (ext4, empty)",
            step: "making the config partition",
            size_bytes: config_part.size_bytes(),
            uuid: CONFIG_FS_UUID,
        },
    )?;

    // 12 + 13. Disk and artifacts.
    let artifacts_key = KeyBuilder::new("artifacts")
        .key("esp", &esp_key)
        .key("grub", &grub_key)
        .key("config", &config_key)
        .key("a-boot", &boot_key)
        .key("a-root", &root_key)
        .str("version", &version)
        .str("layout", &format!("{layout:?}"))
        .finish();
    let art_dir = pipeline::disk_and_artifacts_stages(
        &mut st,
        &ctx,
        &pipeline::DiskArtifacts {
            stage: "artifacts",
            key: &artifacts_key,
            disk_title: "disk image (GPT, 50 GiB sparse)",
            layout: &layout,
            boot_img: &boot_dir.join("boot.img"),
            root_img: &root_dir.join("root.img"),
            version: &version,
        },
        || {
            Ok(vec![
                ("esp", esp_dir.join("esp.img")),
                ("grub", grub_dir.join("grub.img")),
                ("config", config_dir.join("config.img")),
                ("A_boot", boot_dir.join("boot.img")),
                ("A_root", root_dir.join("root.img")),
            ])
        },
    )?;

    // Publish: link (or copy) into the temporary folder, then rename.
    let artifacts = pipeline::publish_artifacts(&art_dir, &run.dirs, &ARTIFACTS, true)?;

    pipeline::prune_stages(
        sc,
        &[
            ("rootfs-raw", &raw_key, 2),
            ("rootfs-custom", &custom_key, 3),
            ("initramfs", &initrd_key, 3),
            ("a-root", &root_key, 3),
            ("a-boot", &boot_key, 3),
            ("esp", &esp_key, 2),
            ("grub", &grub_key, 2),
            ("config", &config_key, 2),
            ("artifacts", &artifacts_key, 3),
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

pub(crate) fn status(cached: bool) -> StageStatus {
    if cached {
        StageStatus::Cached
    } else {
        StageStatus::Built
    }
}

pub(crate) fn file_len(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path)
        .map_err(BuildError::io("reading", path))?
        .len())
}

pub(crate) fn allocated_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::metadata(path)
        .map_err(BuildError::io("reading", path))?
        .blocks()
        * 512)
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    Ok(fs::read_to_string(path)
        .map_err(BuildError::io("reading", path))?
        .trim()
        .to_owned())
}

pub(crate) fn write(path: &Path, data: &[u8]) -> Result<()> {
    fs::write(path, data).map_err(BuildError::io("writing", path))
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(BuildError::io("setting mode of", path))
}

pub(crate) fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to).map_err(BuildError::io("copying to", to))?;
    Ok(())
}

/// `git rev-parse HEAD` in `src`.
pub(crate) fn git_head(src: &Path) -> Result<String> {
    let git = tools::find(GIT)?;
    let out = tools::run(
        Command::new(git)
            .arg("-C")
            .arg(src)
            .args(["rev-parse", "HEAD"]),
    )
    .map_err(|e| BuildError::Input {
        path: src.to_path_buf(),
        message: format!("cannot tell the version (pass --version): {e}"),
    })?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// Where the payload goes; `--replica FILE` replaces what is built there.
const REPLICA_PATH: &str = "opt/ic/bin/replica";

/// The programs of every GuestOS-based image: (package, binary, path in
/// the image).
const BASE_BINARIES: [(&str, &str, &str); 3] = [
    ("icos", "icos", "opt/ic/bin/icos"),
    (
        "icos-guestos-init-bin",
        "icos-guestos-init",
        "opt/ic/bin/icos-guestos-init",
    ),
    (
        "icos-vsock-guest",
        "icos-vsock-guest",
        "opt/ic/bin/icos-vsock-guest",
    ),
];

/// GuestOS's own programs: the orchestrator and the replica.
const REPLICA_ROLE_BINARIES: [(&str, &str, &str); 2] = [
    (
        "icos-orchestrator-bin",
        "icos-orchestrator",
        "opt/ic/bin/icos-orchestrator",
    ),
    (
        "icos-testnet-replica-bin",
        "icos-testnet-replica",
        REPLICA_PATH,
    ),
];

/// Boundary-GuestOS's own programs: the router and the gateway.
const BOUNDARY_ROLE_BINARIES: [(&str, &str, &str); 2] = [
    (
        "icos-boundary-bin",
        "icos-boundary",
        "opt/ic/bin/icos-boundary",
    ),
    (
        "icos-gateway-bin",
        "icos-gateway",
        "opt/ic/bin/icos-gateway",
    ),
];

/// Every program of every image: (package, binary), sorted, each once.
///
/// Each image build compiles all of them in one cargo run. Cargo resolves
/// the dependencies' features for the packages of a run together, so with
/// one set for all images the dependencies are compiled once, not once per
/// image, and a program is the same binary in every image that carries it.
pub(crate) fn all_image_programs() -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<(&'static str, &'static str)> = BASE_BINARIES
        .iter()
        .chain(&REPLICA_ROLE_BINARIES)
        .chain(&BOUNDARY_ROLE_BINARIES)
        .chain(&crate::hostos::HOSTOS_BINARIES)
        .chain(&crate::setupos::SETUPOS_BINARIES)
        .map(|(package, bin, _)| (*package, *bin))
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Programs to put in an image: (path in the image, built binary).
pub(crate) type Installed = Vec<(&'static str, PathBuf)>;

/// Builds our programs for an image (`list`: package, binary, path in the
/// image) with `cargo build --release --locked` into `target/image`, with
/// the source tree and `CARGO_HOME` remapped so no build path leaks into
/// the binaries. The run builds [`all_image_programs`], so that every image
/// shares one dependency build. Logs to `cargo-<log>.log` in `work`.
pub(crate) fn build_release_binaries(
    cargo: &Path,
    src: &Path,
    work: &Path,
    list: &[(&str, &str, &'static str)],
    log: &str,
) -> Result<(Installed, StageStatus, String)> {
    let target = src.join("target").join("image");
    let release = target.join("release");
    let stamp = |name: &str| {
        fs::metadata(release.join(name))
            .and_then(|m| m.modified())
            .ok()
    };
    let before: Vec<_> = list.iter().map(|(_, b, _)| stamp(b)).collect();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    let rustflags = format!(
        "--remap-path-prefix={}=/icos --remap-path-prefix={}=/cargo",
        src.display(),
        cargo_home.display()
    );
    let mut cmd = Command::new(cargo);
    cmd.current_dir(src)
        .args(["build", "--release", "--locked"]);
    for (package, bin) in all_image_programs() {
        cmd.args(["-p", package, "--bin", bin]);
    }
    cmd.arg("--target-dir")
        .arg(&target)
        .env("RUSTFLAGS", rustflags)
        // Images carry no symbol tables (a fifth of each binary).
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    // What cargo sets for the crate it builds or the test it runs must not
    // reach this cargo (a test that runs `icos build` hands on its
    // `CARGO_MANIFEST_DIR`, say): build scripts that watch such a variable
    // (ring's does) would run again, and everything above them would be
    // compiled again whenever the caller changes.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_per_crate_cargo_var) {
            cmd.env_remove(&name);
        }
    }
    tools::run_logged(&mut cmd, &work.join(format!("cargo-{log}.log")))?;
    let after: Vec<_> = list.iter().map(|(_, b, _)| stamp(b)).collect();
    let status = if before.iter().all(Option::is_some) && before == after {
        StageStatus::Cached
    } else {
        StageStatus::Built
    };
    let mut installed = Vec::new();
    let mut notes = Vec::new();
    for (_, bin, path) in list {
        let built = release.join(bin);
        notes.push(format!("{bin} {}", mib(file_len(&built)?)));
        installed.push((*path, built));
    }
    Ok((installed, status, notes.join(", ")))
}

/// Whether `name` is one of the variables cargo sets for one crate's
/// compile, build script or test run (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`,
/// `OUT_DIR`, …), as opposed to the user's own settings (`CARGO_HOME`,
/// `CARGO_NET_OFFLINE`, …).
pub(crate) fn is_per_crate_cargo_var(name: &str) -> bool {
    const PREFIXES: [&str; 4] = ["CARGO_PKG_", "CARGO_BIN_", "CARGO_CFG_", "CARGO_FEATURE_"];
    const NAMES: [&str; 8] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The mmdebstrap arguments, with `{include}` filled in and the
/// repository and output paths left out (they do not change the result).
pub fn mmdebstrap_args_template(include: &str) -> String {
    mmdebstrap_args(include, Path::new("REPO"), Path::new("OUT")).join(" ")
}

/// mmdebstrap's customize hook (run by `sh` with the tree in `$1`):
/// uncompresses the kernel modules that the kernel package ships
/// xz-compressed (`*.ko.xz`, as Debian's 6.12 kernels do) and runs the
/// image's own `depmod` for that kernel, so that `modules.dep` and its
/// indexes name the `.ko` files. A kernel with plain `.ko` modules is left
/// as it is.
///
/// Why: under TCG every module load would otherwise pay for an xz
/// decompression, the initramfs' busybox `insmod` takes plain modules only,
/// and the image compresses better as a whole.
pub const UNCOMPRESS_MODULES_HOOK: &str = "for d in \"$1\"/usr/lib/modules/*/; do \
[ -n \"$(find \"$d\" -name '*.ko.xz' -print -quit)\" ] || continue; \
find \"$d\" -name '*.ko.xz' -exec xz --decompress {} +; \
chroot \"$1\" /sbin/depmod \"$(basename \"$d\")\"; \
done";

/// The mmdebstrap command line (without the program).
pub fn mmdebstrap_args(include: &str, repo: &Path, out: &Path) -> Vec<String> {
    vec![
        "--variant=required".into(),
        "--mode=root".into(),
        "--format=tar".into(),
        format!("--include={include}"),
        format!("--customize-hook={UNCOMPRESS_MODULES_HOOK}"),
        "--aptopt=Acquire::Languages \"none\"".into(),
        "--aptopt=Apt::Install-Recommends \"false\"".into(),
        // Never drop to the _apt user: whether it could read the repository
        // (umask) would otherwise change owners in the result.
        "--aptopt=APT::Sandbox::User \"root\"".into(),
        "bookworm".into(),
        out.display().to_string(),
        format!("deb [trusted=yes] copy://{}/ ./", repo.display()),
    ]
}

pub(crate) fn run_mmdebstrap(
    mmdebstrap: &Path,
    lock: &Lock,
    repo: &Path,
    out: &Path,
    work: &Path,
    epoch: u64,
) -> Result<()> {
    let include = lock.requested_names().join(",");
    let tmp = work.join("mmdebstrap-tmp");
    fs::create_dir_all(&tmp).map_err(BuildError::io("creating", &tmp))?;
    let mut cmd = Command::new(mmdebstrap);
    cmd.args(mmdebstrap_args(&include, repo, out))
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        // The image boots its own initramfs: no initramfs-tools run.
        .env("INITRD", "No")
        .env("TMPDIR", &tmp)
        .env("TZ", "UTC")
        .env("LC_ALL", "C.UTF-8");
    tools::run_logged(&mut cmd, &work.join("mmdebstrap.log"))
}

fn customise(
    raw_tar: &Path,
    out: &Path,
    opts: &GuestOsOptions,
    overlays: &[&Path],
    installed: &[(&str, PathBuf)],
    version: &str,
    registry_root: Option<&[u8]>,
) -> Result<()> {
    let mut c = rootfs::read_rootfs_tar(raw_tar)?;
    // In order: common, role, then env (which may be absent).
    for dir in overlays.iter().filter(|d| d.is_dir()) {
        c.tree.overlay_dir(dir)?;
    }
    for (path, bin) in installed {
        let data = fs::read(bin).map_err(BuildError::io("reading", bin))?;
        c.tree.insert(path, Node::new(Kind::File(data), 0o755));
    }
    // Mount points on the read-only root: the config partition and the
    // CONFIG media.
    for dir in ["boot/config", "mnt/config"] {
        c.tree.insert(dir, Node::new(Kind::Dir, 0o755));
    }
    rootfs::add_system_accounts(&mut c.tree, rootfs::GUESTOS_ACCOUNTS)?;
    c.tree.insert(
        "opt/ic/share/version.txt",
        Node::new(Kind::File(format!("{version}\n").into_bytes()), 0o644),
    );
    if let Some(root) = registry_root {
        c.tree.insert(
            "opt/ic/share/registry-root.json",
            Node::new(Kind::File(root.to_vec()), 0o644),
        );
    }
    if opts.env == Env::Dev {
        rootfs::set_root_password(&mut c.tree, DEV_ROOT_PASSWORD_HASH)?;
    }
    c.tree.fix_hardlinks();
    let tar_path = out.join("rootfs.tar");
    let file = fs::File::create(&tar_path).map_err(BuildError::io("creating", &tar_path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    c.tree
        .write_tar(&mut w, opts.epoch)
        .map_err(|source| BuildError::Tar {
            step: "writing",
            path: tar_path.clone(),
            source,
        })?;
    w.flush().map_err(BuildError::io("writing", &tar_path))?;
    write(&out.join("vmlinuz"), &c.kernel)?;
    write(&out.join("kernel-version"), c.kernel_version.as_bytes())?;
    let info = serde_json::json!({
        "entries": c.tree.nodes.len(),
        "file_bytes": c.tree.file_bytes(),
        "dropped": c.dropped,
        "kernel_version": c.kernel_version,
    });
    write(&out.join("info.json"), info.to_string().as_bytes())
}

fn make_initramfs(custom_dir: &Path, kernel_version: &str, init: &Path, out: &Path) -> Result<()> {
    let root = rootfs::read_tree(&custom_dir.join("rootfs.tar"))?;
    let ir = initramfs::build(&root, kernel_version, VERITY_HASH_OFFSET)?;
    initramfs::write_image(ir.tree, init, out)?;
    write(
        &out.join("verity.conf"),
        initramfs::verity_conf(VERITY_HASH_OFFSET, &ir.modules, &ir.probe_files).as_bytes(),
    )
}

pub(crate) fn make_root(
    tools: &Tools,
    tar: &Path,
    part_size: u64,
    epoch: u64,
    out: &Path,
) -> Result<()> {
    make_verity_root(
        tools,
        tar,
        part_size,
        ROOT_FS_SIZE,
        VERITY_HASH_OFFSET,
        epoch,
        out,
    )
}

/// Makes `root.img` in `out`: an ext4 of `fs_size` from `tar`, extended to
/// `part_size`, with dm-verity's hash tree at `hash_offset` (fixed salt and
/// UUID), and `root_hash` next to it.
pub(crate) fn make_verity_root(
    tools: &Tools,
    tar: &Path,
    part_size: u64,
    fs_size: u64,
    hash_offset: u64,
    epoch: u64,
    out: &Path,
) -> Result<()> {
    let img = out.join("root.img");
    let spec = Ext4Spec {
        size_bytes: fs_size,
        label: "root".into(),
        uuid: ROOT_FS_UUID,
        hash_seed: HASH_SEED,
        epoch,
    };
    icos_imagefs::make_ext4(tools, &spec, Ext4Source::Tar(tar), &img)
        .map_err(BuildError::imagefs("making A_root"))?;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .map_err(BuildError::io("opening", &img))?;
    f.set_len(part_size)
        .map_err(BuildError::io("extending", &img))?;
    f.sync_all().map_err(BuildError::io("syncing", &img))?;
    drop(f);
    let mut salt = [0u8; 32];
    hex::decode_to_slice(VERITY_SALT, &mut salt).map_err(|e| BuildError::Input {
        path: PathBuf::from("VERITY_SALT"),
        message: e.to_string(),
    })?;
    let vspec = VeritySpec {
        hash_offset,
        data_blocks: fs_size / icos_imagefs::BLOCK_SIZE,
        salt,
        uuid: VERITY_UUID,
    };
    let hash = icos_imagefs::verity_format(tools, &img, &vspec)
        .map_err(BuildError::imagefs("formatting dm-verity on A_root"))?;
    write(&out.join("root_hash"), format!("{hash}\n").as_bytes())
}

/// The verity parameters of A_root, for checks (`veritysetup verify`).
pub fn root_verity_spec() -> VeritySpec {
    let mut salt = [0u8; 32];
    // VERITY_SALT is a valid 64-digit constant (checked by a unit test).
    let _ = hex::decode_to_slice(VERITY_SALT, &mut salt);
    VeritySpec {
        hash_offset: VERITY_HASH_OFFSET,
        data_blocks: ROOT_FS_SIZE / icos_imagefs::BLOCK_SIZE,
        salt,
        uuid: VERITY_UUID,
    }
}

pub(crate) fn write_artifacts(
    out: &Path,
    disk: &Path,
    boot_img: &Path,
    root_img: &Path,
    version: &str,
    work: &Path,
) -> Result<()> {
    let version_file = out.join(VERSION_TXT);
    write(&version_file, format!("{version}\n").as_bytes())?;
    // The upgrade image carries the same version file.
    let upd_version = work.join(VERSION_TXT);
    write(&upd_version, format!("{version}\n").as_bytes())?;
    let zopts = icos_sparse_tar::ZstdOptions::default();
    let tar_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::SparseTar {
            path,
            source: Box::new(source),
        }
    };

    write_disk_tar(disk, &out.join(DISK_IMG))?;

    let upd_out = out.join(UPDATE_IMG);
    let mut b = icos_sparse_tar::TarBuilder::new();
    b.add_file("boot.img", boot_img)
        .add_file("root.img", root_img)
        .add_file(VERSION_TXT, &upd_version);
    let plan = b.plan(&mut |_| {}).map_err(tar_err(&upd_out))?;
    plan.write_tar_zst(&upd_out, &zopts, &mut |_| {})
        .map_err(tar_err(&upd_out))?;

    write_sha256sums(out, &[VERSION_TXT, DISK_IMG, UPDATE_IMG])
}

/// Writes `SHA256SUMS` in `dir`: one `sha256sum` line for each file of
/// `names` there, in that order.
pub(crate) fn write_sha256sums(dir: &Path, names: &[&str]) -> Result<()> {
    let mut sums = String::new();
    for name in names {
        sums.push_str(&format!("{}  {name}\n", sha256_file(&dir.join(name))?));
    }
    write(&dir.join(SHA256SUMS), sums.as_bytes())
}

/// Writes `disk` as the sparse tar `out` holding `disk.img`, zstd
/// compressed (IC's `disk-img.tar.zst`).
pub(crate) fn write_disk_tar(disk: &Path, out: &Path) -> Result<()> {
    let tar_err = |source| BuildError::SparseTar {
        path: out.to_path_buf(),
        source: Box::new(source),
    };
    let mut b = icos_sparse_tar::TarBuilder::new();
    b.add_file("disk.img", disk);
    let plan = b.plan(&mut |_| {}).map_err(tar_err)?;
    plan.write_tar_zst(out, &icos_sparse_tar::ZstdOptions::default(), &mut |_| {})
        .map_err(tar_err)?;
    Ok(())
}

/// Moves `tmp` to `dest`, replacing an older `dest` (moved aside first and
/// removed after).
pub(crate) fn publish(tmp: &Path, dest: &Path) -> Result<()> {
    let old = dest.with_file_name(format!(".guestos.old-{}", std::process::id()));
    let had_old = dest.exists();
    if had_old {
        fs::rename(dest, &old).map_err(BuildError::io("moving aside", dest))?;
    }
    if let Err(e) = fs::rename(tmp, dest) {
        if had_old {
            let _ = fs::rename(&old, dest);
        }
        return Err(BuildError::io("renaming into", dest)(e));
    }
    if had_old {
        fs::remove_dir_all(&old).map_err(BuildError::io("removing", &old))?;
    }
    if let Some(parent) = dest.parent()
        && let Ok(d) = fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_what_cargo_sets_per_crate_is_kept_from_the_image_cargo() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_BIN_EXE_icos",
            "CARGO_BIN_NAME",
            "CARGO_TARGET_TMPDIR",
            "CARGO_CFG_TARGET_OS",
            "OUT_DIR",
        ] {
            assert!(is_per_crate_cargo_var(name), "{name}");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_NET_OFFLINE",
            "CARGO_PROFILE_RELEASE_STRIP",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!is_per_crate_cargo_var(name), "{name}");
        }
    }

    #[test]
    fn one_cargo_run_builds_the_programs_of_every_image() {
        let all = all_image_programs();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(all, sorted, "sorted, each once");
        let images: [&[(&str, &str, &str)]; 5] = [
            &BASE_BINARIES,
            &REPLICA_ROLE_BINARIES,
            &BOUNDARY_ROLE_BINARIES,
            &crate::hostos::HOSTOS_BINARIES,
            &crate::setupos::SETUPOS_BINARIES,
        ];
        for (package, bin, _) in images.iter().flat_map(|l| l.iter()) {
            assert!(all.contains(&(*package, *bin)), "{package} {bin}");
        }
        // icos is in every image, listed once.
        assert_eq!(all.iter().filter(|(_, b)| *b == "icos").count(), 1);
    }

    #[test]
    fn constants() {
        assert_eq!(VERITY_HASH_OFFSET, 10 * (1 << 30) - 128 * (1 << 20));
        assert_eq!(
            root_verity_spec().salt.to_vec(),
            hex::decode(VERITY_SALT).unwrap()
        );
        assert_eq!(root_verity_spec().data_blocks, 786_432);
        assert!(ROOT_FS_SIZE + icos_imagefs::verity_hash_size(786_432) <= VERITY_HASH_OFFSET);
        assert_eq!(sha256_bytes(b"icos GuestOS dm-verity salt v1"), VERITY_SALT);
    }

    #[test]
    fn mmdebstrap_command_line() {
        let args = mmdebstrap_args("a,b", Path::new("/r"), Path::new("/o/rootfs.tar"));
        assert!(args.contains(&"--variant=required".to_string()));
        assert!(args.contains(&"--include=a,b".to_string()));
        assert_eq!(args.last().unwrap(), "deb [trusted=yes] copy:///r/ ./");
        // The template leaves the paths out of the cache key.
        assert!(!mmdebstrap_args_template("a").contains("/o/"));
    }

    /// Runs the hook with `sh` as mmdebstrap does, with a `chroot` on
    /// `PATH` that records its arguments instead of changing root.
    fn run_hook(root: &Path, bin: &Path) -> String {
        let log = bin.join("chroot.log");
        let chroot = bin.join("chroot");
        fs::write(
            &chroot,
            format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()),
        )
        .unwrap();
        fs::set_permissions(&chroot, fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        tools::run(
            Command::new("sh")
                .args(["-c", UNCOMPRESS_MODULES_HOOK, "sh"])
                .arg(root)
                .env("PATH", path),
        )
        .unwrap();
        fs::read_to_string(&log).unwrap_or_default()
    }

    /// A temporary tree `root/usr/lib/modules/<version>/kernel/<sub>` and
    /// a `bin` folder for [`run_hook`]; returns the folder, root, bin and
    /// the kernel subfolder.
    fn hook_tree(version: &str, sub: &str) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (root, bin) = (dir.path().join("root"), dir.path().join("bin"));
        let kernel = root.join(format!("usr/lib/modules/{version}/kernel/{sub}"));
        fs::create_dir_all(&kernel).unwrap();
        fs::create_dir_all(&bin).unwrap();
        (dir, root, bin, kernel)
    }

    #[test]
    fn modules_hook_uncompresses_xz_modules_and_runs_depmod() {
        let (_dir, root, bin, kernel) = hook_tree("6.12.9-amd64", "fs/ext4");
        let module = kernel.join("ext4.ko");
        fs::write(&module, b"\x7fELF module bytes").unwrap();
        tools::run(Command::new("xz").arg(&module)).unwrap();
        assert!(!module.exists());

        let calls = run_hook(&root, &bin);
        assert_eq!(fs::read(&module).unwrap(), b"\x7fELF module bytes");
        assert!(!kernel.join("ext4.ko.xz").exists());
        assert_eq!(
            calls,
            format!("{} /sbin/depmod 6.12.9-amd64\n", root.display())
        );
    }

    #[test]
    fn modules_hook_leaves_plain_modules_alone() {
        let (dir, root, bin, kernel) = hook_tree("6.1.0-50-amd64", "fs");
        fs::write(kernel.join("ext4.ko"), b"module").unwrap();
        assert_eq!(run_hook(&root, &bin), "");
        assert_eq!(fs::read(kernel.join("ext4.ko")).unwrap(), b"module");
        // No kernel at all: nothing to do either.
        assert_eq!(run_hook(&dir.path().join("empty"), &bin), "");
    }
}
