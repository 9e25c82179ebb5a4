//! The steps every image pipeline shares: loading and checking the inputs
//! and host tools, the output folders, and the stages that differ between
//! images only in their names and parameters (packages, raw root file
//! system, ESP, grub partition).

use std::fs;
use std::path::{Path, PathBuf};

use icos_imagefs::{Ext4Source, Ext4Spec, Tools, VfatSpec};
use icos_layout::Layout;
use icos_packages::{Cache, FetchOptions, Lock, LockedPackage, Progress};

use crate::boot;
use crate::cache::{CacheKey, KeyBuilder, StageCache, sha256_file};
use crate::error::{BuildError, Result};
use crate::guestos::{
    Artifact, Cleanup, DISK_IMG, HASH_SEED, Installed, SHA256SUMS, UPDATE_IMG, allocated_bytes,
    build_release_binaries, copy, file_len, git_head, input, mmdebstrap_args_template, publish,
    read_text, run_mmdebstrap, set_mode, status, write, write_artifacts,
};
use crate::progress::{StageStatus, Stages, mib};
use crate::tools::{self, CARGO, DPKG_DEB, MMDEBSTRAP};

/// The locks, GRUB packages and host tools of a build, all checked before
/// any work.
pub(crate) struct Common {
    /// The image's lock file.
    pub lock_path: PathBuf,
    /// The image's packages.
    pub lock: Lock,
    /// The build-only packages (`images/build/packages.lock`).
    pub build_lock: Lock,
    /// `grub-common` and `grub-efi-amd64-bin` of the build lock.
    pub grub_debs: Vec<LockedPackage>,
    /// mke2fs, mtools, veritysetup and friends.
    pub fs_tools: Tools,
    /// mmdebstrap.
    pub mmdebstrap: PathBuf,
    /// dpkg-deb.
    pub dpkg_deb: PathBuf,
    /// cargo (`$CARGO` when it names a file).
    pub cargo: PathBuf,
}

/// Loads the image lock `lock_path` (which must hold every package of
/// `needed`) and the build lock of `images`, and finds the host tools.
pub(crate) fn load_common(images: &Path, lock_path: PathBuf, needed: &[&str]) -> Result<Common> {
    let build_lock_path = input(&images.join("build/packages.lock"))?;
    let lock = Lock::load(&lock_path)?;
    let build_lock = Lock::load(&build_lock_path)?;
    let grub_debs: Vec<_> = ["grub-common", "grub-efi-amd64-bin"]
        .iter()
        .map(|name| {
            build_lock
                .package(name)
                .cloned()
                .ok_or_else(|| BuildError::NotLocked {
                    lock: build_lock_path.clone(),
                    package: (*name).to_owned(),
                })
        })
        .collect::<Result<_>>()?;
    for package in needed {
        if lock.package(package).is_none() {
            return Err(BuildError::NotLocked {
                lock: lock_path.clone(),
                package: (*package).to_owned(),
            });
        }
    }
    let fs_tools = Tools::discover()?;
    let mmdebstrap = tools::find(MMDEBSTRAP)?;
    let dpkg_deb = tools::find(DPKG_DEB)?;
    tools::find(tools::APT_FTPARCHIVE)?;
    tools::find(tools::XZ)?;
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .map_or_else(|| tools::find(CARGO), Ok)?;
    Ok(Common {
        lock_path,
        lock,
        build_lock,
        grub_debs,
        fs_tools,
        mmdebstrap,
        dpkg_deb,
        cargo,
    })
}

/// The image version: `given`, else `git rev-parse HEAD` of `src`; one
/// word.
pub(crate) fn image_version(src: &Path, given: Option<&String>) -> Result<String> {
    let version = match given {
        Some(v) => v.clone(),
        None => git_head(src)?,
    };
    if version.is_empty() || version.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BuildError::Input {
            path: PathBuf::from("--version"),
            message: format!("'{version}' must be one word"),
        });
    }
    Ok(version)
}

/// The folders of one build: artifacts go to `tmp_out` and are renamed to
/// `final_dir` when complete; `work` is scratch. Both temporary folders
/// are removed when this is dropped.
pub(crate) struct OutDirs {
    /// `<out>/<name>`.
    pub final_dir: PathBuf,
    /// `<out>/.<name>.tmp-<pid>`.
    pub tmp_out: PathBuf,
    /// `<out>/.<name>.work-<pid>`.
    pub work: PathBuf,
    _cleanup: Cleanup,
}

/// Creates the (empty) temporary folders of a build of `name` in `out`.
pub(crate) fn out_dirs(out: &Path, name: &str) -> Result<OutDirs> {
    fs::create_dir_all(out).map_err(BuildError::io("creating", out))?;
    let out = fs::canonicalize(out).map_err(BuildError::io("reading", out))?;
    let pid = std::process::id();
    let tmp_out = out.join(format!(".{name}.tmp-{pid}"));
    let work = out.join(format!(".{name}.work-{pid}"));
    for d in [&tmp_out, &work] {
        if d.exists() {
            fs::remove_dir_all(d).map_err(BuildError::io("removing", d))?;
        }
        fs::create_dir_all(d).map_err(BuildError::io("creating", d))?;
    }
    Ok(OutDirs {
        final_dir: out.join(name),
        _cleanup: Cleanup(vec![tmp_out.clone(), work.clone()]),
        tmp_out,
        work,
    })
}

/// The package cache (`given`, else the default location) and the stage
/// cache inside it.
pub(crate) fn caches(given: Option<&PathBuf>) -> Result<(Cache, StageCache)> {
    let cache = match given {
        Some(c) => Cache::new(c),
        None => Cache::default_location()?,
    };
    let sc = StageCache::new(cache.root().join("build"));
    Ok((cache, sc))
}

/// The stage cache and the package cache of a build, its scratch folder,
/// epoch and download settings.
pub(crate) struct Ctx<'a> {
    /// Stage outputs.
    pub sc: &'a StageCache,
    /// The verified `.deb` store.
    pub cache: &'a Cache,
    /// Scratch folder.
    pub work: &'a Path,
    /// The date of every file.
    pub epoch: u64,
    /// A mirror instead of the locks'.
    pub mirror: Option<&'a String>,
    /// Use only cached packages.
    pub offline: bool,
}

/// What the first stages of an image make: our binaries and mmdebstrap's
/// root file system.
pub(crate) struct Base {
    /// Our programs: (path in the image, built binary).
    pub installed: Installed,
    /// The stage folder holding `rootfs.tar`.
    pub raw_dir: PathBuf,
    /// Its key.
    pub raw_key: CacheKey,
}

/// Stages 1 to 4 of every image: the packages, our `binaries` (cargo's log
/// named after `log`), the local apt repository and the raw root file
/// system (cached as `raw_stage`).
pub(crate) fn base_stages(
    st: &mut Stages,
    ctx: &Ctx<'_>,
    c: &Common,
    src: &Path,
    binaries: &[(&str, &str, &'static str)],
    log: &str,
    raw_stage: &str,
) -> Result<Base> {
    fetch_stage(st, c, ctx.cache, ctx.mirror, ctx.offline)?;
    let installed = st.run("build our binaries (cargo --release --locked)", || {
        build_release_binaries(&c.cargo, src, ctx.work, binaries, log)
    })?;
    let (raw_dir, raw_key) = raw_rootfs_stages(st, ctx, c, raw_stage)?;
    Ok(Base {
        installed,
        raw_dir,
        raw_key,
    })
}

/// Stage: every package of both locks, verified (downloaded when missing).
fn fetch_stage(
    st: &mut Stages,
    c: &Common,
    cache: &Cache,
    mirror: Option<&String>,
    offline: bool,
) -> Result<()> {
    st.run("fetch packages", || {
        let fo = FetchOptions {
            mirror: mirror.cloned(),
            offline,
            progress: Progress::Quiet,
            ..FetchOptions::default()
        };
        let a = icos_packages::fetch(&c.lock, cache, &fo)?;
        let b = icos_packages::fetch(&c.build_lock, cache, &fo)?;
        let downloaded = a.downloaded + b.downloaded;
        Ok((
            (),
            status(downloaded == 0),
            format!(
                "{} packages verified, {downloaded} downloaded",
                a.packages + b.packages
            ),
        ))
    })
}

/// Stages: the local apt repository (only when needed) and mmdebstrap's
/// root file system of the image lock, cached as `stage`. Returns the
/// stage folder (holding `rootfs.tar`) and its key.
fn raw_rootfs_stages(
    st: &mut Stages,
    ctx: &Ctx<'_>,
    c: &Common,
    stage: &str,
) -> Result<(PathBuf, CacheKey)> {
    let mmdebstrap_version = tools::version_line(&c.mmdebstrap, &["--version"]);
    let lock_bytes = fs::read(&c.lock_path).map_err(BuildError::io("reading", &c.lock_path))?;
    let include = c.lock.requested_names().join(",");
    let raw_key = KeyBuilder::new(stage)
        .bytes("lock", &lock_bytes)
        .str("mmdebstrap", &mmdebstrap_version)
        .str("args", &mmdebstrap_args_template(&include))
        .str("epoch", &ctx.epoch.to_string())
        .finish();
    let raw_cached = ctx.sc.entry(stage, &raw_key).is_dir();
    let repo = ctx.work.join("repo");
    st.run("local apt repository", || {
        if raw_cached {
            return Ok(((), StageStatus::Cached, "not needed".into()));
        }
        let r = icos_packages::write_repo(&c.lock, ctx.cache, &repo)?;
        Ok(((), StageStatus::Built, format!("{} packages", r.packages)))
    })?;
    let raw_dir = cached_stage(
        st,
        ctx.sc,
        "root file system (mmdebstrap)",
        stage,
        &raw_key,
        |tmp| {
            run_mmdebstrap(
                &c.mmdebstrap,
                &c.lock,
                &repo,
                &tmp.join("rootfs.tar"),
                ctx.work,
                ctx.epoch,
            )
        },
        |dir| Ok(format!("{} tar", mib(file_len(&dir.join("rootfs.tar"))?))),
    )?;
    Ok((raw_dir, raw_key))
}

/// A FAT boot partition of an image: the ESP or the grub partition.
pub(crate) struct FatPart<'a> {
    /// The stage (and cache key) name.
    pub stage: &'a str,
    /// The partition size.
    pub size_bytes: u64,
    /// The FAT volume id.
    pub volume_id: u32,
}

/// Stage: the ESP with GRUB's EFI binary, its early config `early` and the
/// modules listed in `modules_list` built in. Returns the folder holding
/// `esp.img` and the key.
pub(crate) fn esp_stage(
    st: &mut Stages,
    ctx: &Ctx<'_>,
    c: &Common,
    part: &FatPart<'_>,
    early: &Path,
    modules_list: &Path,
) -> Result<(PathBuf, CacheKey)> {
    let modules = boot::parse_module_list(&read_text(modules_list)?);
    let mut k = KeyBuilder::new(part.stage)
        .file("early", early)?
        .str("modules", &modules.join(" "))
        .str("mtools", &c.fs_tools.mtools_version.to_string())
        .str("size", &part.size_bytes.to_string())
        .str("epoch", &ctx.epoch.to_string());
    for d in &c.grub_debs {
        k = k.str("deb", &d.sha256.to_string());
    }
    let key = k.finish();
    let make = |tmp: &Path| {
        let debs: Vec<PathBuf> = c
            .grub_debs
            .iter()
            .map(|d| ctx.cache.path_of(&d.sha256))
            .collect();
        boot::make_esp(
            &boot::EspSpec {
                dpkg_deb: &c.dpkg_deb,
                debs: &debs,
                early_config: early,
                modules: &modules,
                volume_id: part.volume_id,
                size_bytes: part.size_bytes,
                epoch: ctx.epoch,
            },
            &c.fs_tools,
            ctx.work,
            &tmp.join("esp.img"),
        )
    };
    let dir = cached_stage(st, ctx.sc, "esp (GRUB EFI)", part.stage, &key, make, |_| {
        Ok(String::new())
    })?;
    Ok((dir, key))
}

/// Stage: the grub partition, FAT labelled `GRUB`, holding `grub.cfg` and
/// the 1024-byte `grubenv` block. Returns the folder holding `grub.img` and
/// the key.
pub(crate) fn grub_stage(
    st: &mut Stages,
    ctx: &Ctx<'_>,
    c: &Common,
    part: &FatPart<'_>,
    grub_cfg: &Path,
    grubenv: &[u8],
) -> Result<(PathBuf, CacheKey)> {
    let key = KeyBuilder::new(part.stage)
        .file("grub.cfg", grub_cfg)?
        .bytes("grubenv", grubenv)
        .str("mtools", &c.fs_tools.mtools_version.to_string())
        .str("size", &part.size_bytes.to_string())
        .str("epoch", &ctx.epoch.to_string())
        .finish();
    let make = |tmp: &Path| {
        let env_file = ctx.work.join("grubenv");
        write(&env_file, grubenv)?;
        let spec = VfatSpec {
            size_bytes: part.size_bytes,
            label: "GRUB".into(),
            volume_id: part.volume_id,
            epoch: ctx.epoch,
        };
        icos_imagefs::make_vfat(
            &c.fs_tools,
            &spec,
            &[
                ("grub.cfg".to_owned(), grub_cfg.to_path_buf()),
                ("grubenv".to_owned(), env_file),
            ],
            &tmp.join("grub.img"),
        )
        .map_err(BuildError::imagefs("making the grub partition"))
    };
    let title = "grub (grub.cfg + grubenv)";
    let dir = cached_stage(st, ctx.sc, title, part.stage, &key, make, |_| {
        Ok(String::new())
    })?;
    Ok((dir, key))
}

/// A boot partition (or volume): ext4 labelled `boot` holding `vmlinuz`,
/// `initrd.img`, `boot_args` and `version.txt`.
pub(crate) struct BootPart<'a> {
    /// The stage (and cache key) name.
    pub stage: &'a str,
    /// What the progress line calls it (`A_boot (ext4)`).
    pub title: &'a str,
    /// The key's format number (bumped when the contents change shape).
    pub format: &'a str,
    /// The partition size.
    pub size_bytes: u64,
    /// The file system UUID.
    pub uuid: uuid::Uuid,
    /// The customised root's stage key and folder (`vmlinuz`).
    pub custom: (&'a CacheKey, &'a Path),
    /// The initramfs's stage key and folder (`initrd.img`).
    pub initramfs: (&'a CacheKey, &'a Path),
    /// The `boot_args` file.
    pub boot_args: &'a str,
    /// The image version.
    pub version: &'a str,
}

/// Stage: the boot partition `part`. Returns the folder holding `boot.img`
/// and the key.
pub(crate) fn boot_stage(
    st: &mut Stages,
    ctx: &Ctx<'_>,
    c: &Common,
    part: &BootPart<'_>,
) -> Result<(PathBuf, CacheKey)> {
    let key = KeyBuilder::new(part.stage)
        .str("format", part.format)
        .key("custom", part.custom.0)
        .key("initramfs", part.initramfs.0)
        .str("boot-args", part.boot_args)
        .str("version", part.version)
        .str("e2fsprogs", &c.fs_tools.e2fsprogs_version.to_string())
        .str("size", &part.size_bytes.to_string())
        .str("epoch", &ctx.epoch.to_string())
        .finish();
    let make = |tmp: &Path| {
        let tree = ctx.work.join(format!("{}-tree", part.stage));
        fs::create_dir_all(&tree).map_err(BuildError::io("creating", &tree))?;
        copy(&part.custom.1.join("vmlinuz"), &tree.join("vmlinuz"))?;
        copy(
            &part.initramfs.1.join("initrd.img"),
            &tree.join("initrd.img"),
        )?;
        write(&tree.join("boot_args"), part.boot_args.as_bytes())?;
        write(
            &tree.join("version.txt"),
            format!("{}\n", part.version).as_bytes(),
        )?;
        // Explicit modes: the file system must not depend on the umask.
        set_mode(&tree, 0o755)?;
        for f in ["vmlinuz", "initrd.img", "boot_args", "version.txt"] {
            set_mode(&tree.join(f), 0o644)?;
        }
        let spec = Ext4Spec {
            size_bytes: part.size_bytes,
            label: "boot".into(),
            uuid: part.uuid,
            hash_seed: HASH_SEED,
            epoch: ctx.epoch,
        };
        icos_imagefs::make_ext4(
            &c.fs_tools,
            &spec,
            Ext4Source::DirRootOwned(&tree),
            &tmp.join("boot.img"),
        )
        .map_err(BuildError::imagefs("making the boot file system"))
    };
    let dir = cached_stage(st, ctx.sc, part.title, part.stage, &key, make, |_| {
        Ok(String::new())
    })?;
    Ok((dir, key))
}

/// The caches and folders of one build and the download and date settings
/// every stage shares.
pub(crate) struct Run {
    /// The verified `.deb` store.
    pub cache: Cache,
    /// Stage outputs.
    pub sc: StageCache,
    /// The output and scratch folders.
    pub dirs: OutDirs,
    /// The date of every file.
    pub epoch: u64,
    /// A mirror instead of the locks'.
    pub mirror: Option<String>,
    /// Use only cached packages.
    pub offline: bool,
}

impl Run {
    /// The stage context of this build.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            sc: &self.sc,
            cache: &self.cache,
            work: &self.dirs.work,
            epoch: self.epoch,
            mirror: self.mirror.as_ref(),
            offline: self.offline,
        }
    }
}

/// Opens the caches ([`caches`] of `cache`) and creates the folders of a
/// build of `name` in `out` ([`out_dirs`]), in that order.
pub(crate) fn start(
    out: &Path,
    name: &str,
    cache: Option<&PathBuf>,
    mirror: Option<&String>,
    offline: bool,
    epoch: u64,
) -> Result<Run> {
    let (cache, sc) = caches(cache)?;
    let dirs = out_dirs(out, name)?;
    Ok(Run {
        cache,
        sc,
        dirs,
        epoch,
        mirror: mirror.cloned(),
        offline,
    })
}

/// Stage `title`: the entry of `stage` with `key` in the stage cache, made
/// by `make` when missing. `note` gives the progress line's note from the
/// entry folder. Returns the entry folder.
pub(crate) fn cached_stage(
    st: &mut Stages,
    sc: &StageCache,
    title: &str,
    stage: &str,
    key: &CacheKey,
    make: impl FnOnce(&Path) -> Result<()>,
    note: impl FnOnce(&Path) -> Result<String>,
) -> Result<PathBuf> {
    st.run(title, || {
        let (dir, cached) = sc.get_or_make(stage, key, make)?;
        let note = note(&dir)?;
        Ok((dir, status(cached), note))
    })
}

/// Stage: the customised root file system, cached as `stage`; `make`
/// writes `rootfs.tar`, `vmlinuz` and `kernel-version`. Returns the stage
/// folder and the kernel version.
pub(crate) fn customise_stage(
    st: &mut Stages,
    sc: &StageCache,
    stage: &str,
    key: &CacheKey,
    make: impl FnOnce(&Path) -> Result<()>,
) -> Result<(PathBuf, String)> {
    let dir = cached_stage(
        st,
        sc,
        "customise root file system",
        stage,
        key,
        make,
        |dir| Ok(format!("{} tar", mib(file_len(&dir.join("rootfs.tar"))?))),
    )?;
    let kernel_version = read_text(&dir.join("kernel-version"))?;
    Ok((dir, kernel_version))
}

/// Stage: the initramfs, cached as `stage`; `make` writes `initrd.img`.
/// Returns the stage folder.
pub(crate) fn initramfs_stage(
    st: &mut Stages,
    sc: &StageCache,
    stage: &str,
    key: &CacheKey,
    make: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    cached_stage(st, sc, "initramfs", stage, key, make, |dir| {
        Ok(mib(file_len(&dir.join("initrd.img"))?))
    })
}

/// Stage `title`: the dm-verity root, cached as `stage`; `make` writes
/// `root.img` and `root_hash`. Returns the stage folder and the root hash.
pub(crate) fn verity_root_stage(
    st: &mut Stages,
    sc: &StageCache,
    title: &str,
    stage: &str,
    key: &CacheKey,
    make: impl FnOnce(&Path) -> Result<()>,
) -> Result<(PathBuf, String)> {
    let mut root_hash = String::new();
    let dir = cached_stage(st, sc, title, stage, key, make, |dir| {
        root_hash = read_text(&dir.join("root_hash"))?;
        Ok(format!(
            "root hash {}",
            &root_hash[..16.min(root_hash.len())]
        ))
    })?;
    Ok((dir, root_hash))
}

/// An empty ext4 labelled `CONFIG`: the config partition (or volume).
pub(crate) struct EmptyConfig<'a> {
    /// The stage (and cache key) name.
    pub stage: &'a str,
    /// What the progress line calls it.
    pub title: &'a str,
    /// What the error names when mke2fs fails (`making the config partition`).
    pub step: &'static str,
    /// The file system size.
    pub size_bytes: u64,
    /// The file system UUID.
    pub uuid: uuid::Uuid,
}

/// Stage: the empty config file system `part`. Returns the folder holding
/// `config.img` and the key.
pub(crate) fn empty_config_stage(
    st: &mut Stages,
    ctx: &Ctx<'_>,
    c: &Common,
    part: &EmptyConfig<'_>,
) -> Result<(PathBuf, CacheKey)> {
    let key = KeyBuilder::new(part.stage)
        .str("e2fsprogs", &c.fs_tools.e2fsprogs_version.to_string())
        .str("size", &part.size_bytes.to_string())
        .str("uuid", &part.uuid.to_string())
        .str("epoch", &ctx.epoch.to_string())
        .finish();
    let make = |tmp: &Path| {
        let spec = Ext4Spec {
            size_bytes: part.size_bytes,
            label: "CONFIG".into(),
            uuid: part.uuid,
            hash_seed: HASH_SEED,
            epoch: ctx.epoch,
        };
        icos_imagefs::make_ext4(
            &c.fs_tools,
            &spec,
            Ext4Source::Empty,
            &tmp.join("config.img"),
        )
        .map_err(BuildError::imagefs(part.step))
    };
    let dir = cached_stage(st, ctx.sc, part.title, part.stage, &key, make, |_| {
        Ok(String::new())
    })?;
    Ok((dir, key))
}

/// Writes the sparse disk image `disk` of `layout` with each
/// `(partition or volume name, image)` of `parts` at its place.
pub(crate) fn assemble_disk(layout: &Layout, parts: &[(&str, PathBuf)], disk: &Path) -> Result<()> {
    let refs: Vec<(&str, &Path)> = parts.iter().map(|(n, p)| (*n, p.as_path())).collect();
    icos_imagefs::assemble_disk(layout, &refs, disk)
        .map_err(BuildError::imagefs("assembling the disk"))
}

/// The last two stages of an image with an upgrade image (GuestOS,
/// HostOS): the disk and the artifacts made from it.
pub(crate) struct DiskArtifacts<'a> {
    /// The artifacts' stage (and cache key) name.
    pub stage: &'a str,
    /// The artifacts' key.
    pub key: &'a CacheKey,
    /// What the disk stage's progress line calls it.
    pub disk_title: &'a str,
    /// The disk's partitions (and volumes).
    pub layout: &'a Layout,
    /// The boot partition's image, for the upgrade image.
    pub boot_img: &'a Path,
    /// The root partition's image, for the upgrade image.
    pub root_img: &'a Path,
    /// The image version.
    pub version: &'a str,
}

/// Stages: the disk image (`disk.img` in the scratch folder, skipped when
/// the artifacts are cached) with the images `parts` gives, and the
/// artifacts ([`write_artifacts`]). Returns the artifacts' stage folder.
pub(crate) fn disk_and_artifacts_stages(
    st: &mut Stages,
    ctx: &Ctx<'_>,
    d: &DiskArtifacts<'_>,
    parts: impl FnOnce() -> Result<Vec<(&'static str, PathBuf)>>,
) -> Result<PathBuf> {
    let artifacts_cached = ctx.sc.entry(d.stage, d.key).is_dir();
    let disk = ctx.work.join("disk.img");
    st.run(d.disk_title, || {
        if artifacts_cached {
            return Ok(((), StageStatus::Cached, String::new()));
        }
        assemble_disk(d.layout, &parts()?, &disk)?;
        let allocated = allocated_bytes(&disk)?;
        Ok((
            (),
            StageStatus::Built,
            format!("{} allocated", mib(allocated)),
        ))
    })?;
    cached_stage(
        st,
        ctx.sc,
        "artifacts (sparse tar + zstd)",
        d.stage,
        d.key,
        |tmp| write_artifacts(tmp, &disk, d.boot_img, d.root_img, d.version, ctx.work),
        |dir| {
            Ok(format!(
                "disk {}, update {}",
                mib(file_len(&dir.join(DISK_IMG))?),
                mib(file_len(&dir.join(UPDATE_IMG))?)
            ))
        },
    )
}

/// Links (or copies) the artifacts `names` of `art_dir` into the build's
/// temporary output folder and hashes each. With `check_sums`, each but
/// `SHA256SUMS` must be listed in the `SHA256SUMS` there with its hash.
/// Then the folder becomes `dirs.final_dir` ([`publish`]).
pub(crate) fn publish_artifacts(
    art_dir: &Path,
    dirs: &OutDirs,
    names: &[&str],
    check_sums: bool,
) -> Result<Vec<Artifact>> {
    let mut artifacts = Vec::new();
    for name in names {
        let from = art_dir.join(name);
        let to = dirs.tmp_out.join(name);
        if fs::hard_link(&from, &to).is_err() {
            copy(&from, &to)?;
        }
        artifacts.push(Artifact {
            name: (*name).to_owned(),
            size: file_len(&to)?,
            sha256: sha256_file(&to)?,
        });
    }
    if check_sums {
        let sums = read_text(&dirs.tmp_out.join(SHA256SUMS))?;
        for a in artifacts.iter().filter(|a| a.name != SHA256SUMS) {
            if !sums.contains(&format!("{}  {}", a.sha256, a.name)) {
                return Err(BuildError::Rootfs(format!(
                    "cached artifact {} does not match its SHA256SUMS; remove {}",
                    a.name,
                    art_dir.display()
                )));
            }
        }
    }
    publish(&dirs.tmp_out, &dirs.final_dir)?;
    Ok(artifacts)
}

/// Prunes the stage cache: for each `(stage, current key, keep)`, keeps
/// the `keep` most recently used entries of the stage, the current one
/// among them ([`StageCache::prune`]).
pub(crate) fn prune_stages(sc: &StageCache, stages: &[(&str, &CacheKey, usize)]) -> Result<()> {
    for (stage, key, keep) in stages {
        sc.prune(stage, key, *keep)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guestos::{VERSION_TXT, write_sha256sums};

    /// An artifacts folder with `VERSION.TXT`, `DISK_IMG` and their
    /// `SHA256SUMS`, and the output folders of a build named `name`.
    fn fixture(root: &Path, name: &str) -> (PathBuf, OutDirs) {
        let art = root.join("art");
        fs::create_dir_all(&art).unwrap();
        write(&art.join(VERSION_TXT), b"v1\n").unwrap();
        write(&art.join(DISK_IMG), b"disk").unwrap();
        write_sha256sums(&art, &[VERSION_TXT, DISK_IMG]).unwrap();
        let dirs = out_dirs(&root.join("out"), name).unwrap();
        (art, dirs)
    }

    #[test]
    fn publishes_linked_artifacts_with_their_hashes() {
        let tmp = tempfile::tempdir().unwrap();
        let (art, dirs) = fixture(tmp.path(), "img");
        let names = [VERSION_TXT, DISK_IMG, SHA256SUMS];
        let artifacts = publish_artifacts(&art, &dirs, &names, true).unwrap();
        assert_eq!(
            artifacts
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            names
        );
        assert_eq!(artifacts[1].size, 4);
        assert_eq!(
            artifacts[1].sha256,
            sha256_file(&art.join(DISK_IMG)).unwrap()
        );
        assert!(dirs.final_dir.join(SHA256SUMS).is_file());
        assert!(!dirs.tmp_out.exists());
    }

    #[test]
    fn refuses_artifacts_that_differ_from_their_sums() {
        let tmp = tempfile::tempdir().unwrap();
        let (art, dirs) = fixture(tmp.path(), "img");
        write(&art.join(DISK_IMG), b"changed").unwrap();
        let names = [VERSION_TXT, DISK_IMG, SHA256SUMS];
        let err = publish_artifacts(&art, &dirs, &names, true).unwrap_err();
        assert!(err.to_string().contains("does not match its SHA256SUMS"));
        assert!(!dirs.final_dir.exists());
        // Without the check the folder is published as it is.
        let (art, dirs) = fixture(&tmp.path().join("b"), "img");
        write(&art.join(DISK_IMG), b"changed").unwrap();
        assert!(publish_artifacts(&art, &dirs, &names, false).is_ok());
        assert!(dirs.final_dir.join(DISK_IMG).is_file());
    }

    #[test]
    fn prunes_each_stage_to_its_count() {
        let tmp = tempfile::tempdir().unwrap();
        let sc = StageCache::new(tmp.path());
        let keys: Vec<CacheKey> = (0..4)
            .map(|i| KeyBuilder::new("s").str("i", &i.to_string()).finish())
            .collect();
        for key in &keys {
            for stage in ["a", "b"] {
                sc.get_or_make(stage, key, |_| Ok(())).unwrap();
            }
        }
        prune_stages(&sc, &[("a", &keys[3], 2), ("b", &keys[3], 4)]).unwrap();
        let count = |stage: &str| fs::read_dir(tmp.path().join(stage)).unwrap().count();
        assert_eq!(count("a"), 2);
        assert_eq!(count("b"), 4);
        assert!(sc.entry("a", &keys[3]).is_dir());
    }
}
