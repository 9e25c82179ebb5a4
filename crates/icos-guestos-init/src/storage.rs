//! Step 0 (before `/var` is mounted): the encrypted `var` of the booted slot
//! and the encrypted `store`.
//!
//! * The slot comes from `dfinity.system=A|B` on the kernel command line;
//!   its var partition is `A_var` or `B_var` of the GuestOS layout, found
//!   by PARTUUID in the disks' GPTs ([`find_partition`]): the step runs
//!   before udev's coldplug, so udev's links may not be there yet.
//! * The key is `/boot/config/store.keyfile` on the config partition
//!   (mounted by the initramfs):
//!   32 random bytes made on first boot (mode 0600), as IC-OS does without
//!   SEV. Because the key has full entropy, LUKS2 uses PBKDF2 with the
//!   minimum of 1000 iterations and no benchmark (IC-OS's parameters):
//!   stretching a 256-bit random key adds nothing and would cost seconds
//!   under emulation.
//! * `var` is opened as `/dev/mapper/var_crypt`; when it is not LUKS yet
//!   it is formatted (`aes-xts-plain64`, 512-bit volume key), and when it
//!   holds no ext4 yet one is made (lazy inode table and journal init) and
//!   seeded with the image's `/var`.
//! * `store` is created on first boot in the free space at the end of the
//!   disk (PARTUUID [`STORE_PARTUUID`], as IC-OS), told to the kernel with
//!   `partx`, and opened as `/dev/mapper/store-crypt` with discards, ext4
//!   inside, mounted at `/var/lib/ic/data`.
//!
//! The mounts themselves are `/etc/fstab` entries that require this step.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{InitError, Paths, Result, write_file};

/// The store partition's PARTUUID (IC-OS's).
pub const STORE_PARTUUID: &str = "231213c6-ec9e-11f0-b45f-b7bbea44aaf0";
/// The store partition's GPT name.
pub const STORE_NAME: &str = "store";
/// The key file on the config partition.
pub const KEYFILE: &str = "/boot/config/store.keyfile";
/// Key length in bytes.
pub const KEY_BYTES: usize = 32;
/// The var mapping.
pub const VAR_MAPPER: &str = "var_crypt";
/// The store mapping.
pub const STORE_MAPPER: &str = "store-crypt";
/// The var partitions' PARTUUIDs (GuestOS layout).
pub const A_VAR_PARTUUID: &str = "22d2f5a6-1e39-d247-81cf-90c95c113e21";
/// See [`A_VAR_PARTUUID`].
pub const B_VAR_PARTUUID: &str = "2237d1d1-ce96-584e-8ec5-8ae6661faae9";

/// The booted slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `dfinity.system=A`.
    A,
    /// `dfinity.system=B`.
    B,
}

impl Slot {
    /// The slot's var partition PARTUUID.
    pub fn var_partuuid(self) -> &'static str {
        match self {
            Slot::A => A_VAR_PARTUUID,
            Slot::B => B_VAR_PARTUUID,
        }
    }
}

/// The slot named by `dfinity.system=` in a kernel command line.
pub fn slot_from_cmdline(cmdline: &str) -> Result<Slot> {
    let value = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("dfinity.system="));
    match value {
        Some("A") => Ok(Slot::A),
        Some("B") => Ok(Slot::B),
        other => Err(InitError::Config {
            field: "/proc/cmdline",
            reason: format!(
                "dfinity.system= must be A or B, got {}",
                other.map_or("nothing".to_owned(), |v| format!("'{v}'"))
            ),
        }),
    }
}

/// What to do with one encrypted device, decided from what is on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Format LUKS2, open, make ext4 (and seed var).
    FormatOpenMake,
    /// Open; make ext4 (and seed var): a format that stopped before mkfs.
    OpenMake,
    /// Open; the file system is there.
    Open,
}

/// The action for a device: `luks` whether it has a LUKS header,
/// `new_key` whether the key file was just made (an old header cannot be
/// opened with a new key, so it is formatted again), `has_fs` whether the
/// opened device holds ext4 (only asked when it was LUKS already).
pub fn decide(luks: bool, new_key: bool, has_fs: impl FnOnce() -> bool) -> Action {
    match (luks, new_key) {
        (false, _) | (true, true) => Action::FormatOpenMake,
        (true, false) if has_fs() => Action::Open,
        (true, false) => Action::OpenMake,
    }
}

/// The magic at the start of a LUKS (1 and 2) primary header.
pub const LUKS_MAGIC: [u8; 6] = *b"LUKS\xba\xbe";

/// Whether `dev` starts with [`LUKS_MAGIC`]. Read directly: on a later
/// boot this spares a `cryptsetup isLuks` run per device (a process and a
/// crypto backend start each, slow under emulation); `cryptsetup` still
/// decides whenever the magic is missing or the open fails.
pub fn has_luks_magic(dev: &Path) -> bool {
    let mut magic = [0u8; 6];
    std::fs::File::open(dev)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == LUKS_MAGIC
}

/// Whether `dev` holds an ext2/3/4 superblock (magic 0xEF53 at byte 1080).
pub fn has_ext4(dev: &Path) -> bool {
    let mut magic = [0u8; 2];
    std::fs::File::open(dev)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(1080))?;
            f.read_exact(&mut magic)
        })
        .is_ok()
        && magic == [0x53, 0xef]
}

/// Makes the key file from `random` unless it exists; `true` when made.
pub fn ensure_keyfile(paths: &Paths, random: &Path) -> Result<bool> {
    let key = paths.at(KEYFILE);
    if key.is_file() {
        return Ok(false);
    }
    let mut bytes = [0u8; KEY_BYTES];
    std::fs::File::open(random)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(InitError::io("reading", random))?;
    write_file(&key, &bytes, 0o600)?;
    Ok(true)
}

/// Runs external programs (a seam: the step's logic is tested with a
/// recording runner). Shared by the var and store threads of [`apply`].
pub trait Runner: Sync {
    /// Runs `argv`; `Ok(true)` on exit status 0, `Ok(false)` otherwise
    /// (with `check` false), an error when it cannot start or fails with
    /// `check` true.
    fn run(&self, argv: &[String], check: bool) -> Result<bool>;
}

/// Runs programs for real.
#[derive(Debug, Default)]
pub struct Commands;

impl Runner for Commands {
    fn run(&self, argv: &[String], check: bool) -> Result<bool> {
        let (program, args) = argv.split_first().ok_or_else(|| InitError::Command {
            command: String::new(),
            detail: "empty command".into(),
        })?;
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .map_err(InitError::io("running", Path::new(program)))?;
        if check && !out.status.success() {
            return Err(InitError::failed(argv.join(" "), &out));
        }
        Ok(out.status.success())
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// `cryptsetup luksFormat` with IC-OS's parameters.
pub fn luks_format_argv(dev: &str, key: &str) -> Vec<String> {
    argv(&[
        "cryptsetup",
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--cipher",
        "aes-xts-plain64",
        "--key-size",
        "512",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        key,
        dev,
    ])
}

/// `cryptsetup open`.
pub fn luks_open_argv(dev: &str, key: &str, name: &str, discards: bool) -> Vec<String> {
    let mut a = argv(&["cryptsetup", "open", "--type", "luks2", "--key-file", key]);
    if discards {
        a.push("--allow-discards".into());
    }
    a.push(dev.into());
    a.push(name.into());
    a
}

/// `mke2fs` with lazy initialisation (cheap on first boot).
pub fn mkfs_argv(dev: &str, label: &str) -> Vec<String> {
    argv(&[
        "mke2fs",
        "-q",
        "-F",
        "-t",
        "ext4",
        "-L",
        label,
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1",
        dev,
    ])
}

/// The partition whose GPT unique GUID is `partuuid`: udev's
/// `/dev/disk/by-partuuid` link when it is there, else found by reading the
/// GPT of every disk in `/sys/block` (the step runs before udev's coldplug,
/// so the links may not exist yet). Polls until `timeout`.
pub fn find_partition(paths: &Paths, partuuid: &str, timeout: Duration) -> Result<PathBuf> {
    let link = paths.dev().join("disk/by-partuuid").join(partuuid);
    let want: uuid::Uuid = partuuid.parse().map_err(|e| InitError::Config {
        field: "PARTUUID",
        reason: format!("{partuuid}: {e}"),
    })?;
    poll(timeout, || {
        std::fs::canonicalize(&link)
            .ok()
            .or_else(|| scan_gpts(paths, want))
    })
    .ok_or_else(|| InitError::Io {
        action: "looking for the partition",
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no disk in {} has it after {} s",
                paths.sys().join("block").display(),
                timeout.as_secs()
            ),
        ),
        path: link,
    })
}

/// `/dev/<disk><nr>` for the first disk of `/sys/block` whose GPT has a
/// partition `want` (and whose node for it exists).
fn scan_gpts(paths: &Paths, want: uuid::Uuid) -> Option<PathBuf> {
    let mut disks: Vec<String> = std::fs::read_dir(paths.sys().join("block"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| {
            !["dm-", "loop", "ram", "sr", "zram"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    disks.sort();
    disks.into_iter().find_map(|disk| {
        let g = gpt::GptConfig::new()
            .writable(false)
            .open(paths.dev().join(&disk))
            .ok()?;
        let (nr, _) = g.partitions().iter().find(|(_, p)| p.part_guid == want)?;
        let dev = paths.dev().join(partition_name(&disk, *nr));
        dev.exists().then_some(dev)
    })
}

/// Waits until `path` exists.
pub fn wait_for(path: &Path, timeout: Duration) -> Result<PathBuf> {
    poll(timeout, || std::fs::canonicalize(path).ok()).ok_or_else(|| InitError::Io {
        action: "waiting for",
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("not there after {} s", timeout.as_secs()),
        ),
    })
}

/// Asks `found` every 50 ms until it gives a path or `timeout` has passed
/// (it is asked at least once).
fn poll(timeout: Duration, mut found: impl FnMut() -> Option<PathBuf>) -> Option<PathBuf> {
    let start = Instant::now();
    loop {
        if let Some(p) = found() {
            return Some(p);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What [`open_device`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// `/dev/mapper/<name>`.
    pub mapper: PathBuf,
    /// What was decided.
    pub action: Action,
}

/// Opens (formatting first when needed) `dev` as `name`, and makes an
/// ext4 labelled `label` in it when there is none. With the LUKS magic in
/// place and an old key, the open is tried first; `cryptsetup isLuks`
/// decides only when there is no magic or the open failed, so a header
/// `cryptsetup` does not recognise is formatted as before, and one it
/// recognises but cannot open is an error.
pub fn open_device(
    paths: &Paths,
    runner: &dyn Runner,
    dev: &Path,
    name: &str,
    label: &str,
    discards: bool,
    new_key: bool,
) -> Result<Opened> {
    let key = paths.at(KEYFILE).display().to_string();
    let d = dev.display().to_string();
    let mapper = paths.dev().join("mapper").join(name);
    let open = luks_open_argv(&d, &key, name, discards);
    let is_luks = argv(&["cryptsetup", "isLuks", &d]);
    let mut opened = !new_key && has_luks_magic(dev) && runner.run(&open, true).is_ok();
    let luks = opened || runner.run(&is_luks, false)?;
    let action = decide(luks, new_key, || {
        if !opened {
            opened = runner.run(&open, true).is_ok();
        }
        opened && has_ext4(&mapper)
    });
    if action == Action::FormatOpenMake {
        runner.run(&luks_format_argv(&d, &key), true)?;
    }
    if !opened {
        runner.run(&open, true)?;
    }
    if action != Action::Open {
        runner.run(&mkfs_argv(&mapper.display().to_string(), label), true)?;
    }
    Ok(Opened { mapper, action })
}

/// Copies the image's `/var` into a freshly made var file system.
pub fn seed_var(paths: &Paths, runner: &dyn Runner, mapper: &Path) -> Result<()> {
    let target = paths.at("/run/icos-storage/var");
    std::fs::create_dir_all(&target).map_err(InitError::io("creating", &target))?;
    let t = target.display().to_string();
    runner.run(
        &argv(&["mount", "-t", "ext4", &mapper.display().to_string(), &t]),
        true,
    )?;
    let copied = runner.run(
        &argv(&["cp", "-a", &format!("{}/.", paths.at("/var").display()), &t]),
        true,
    );
    let unmounted = runner.run(&argv(&["umount", &t]), true);
    copied.and(unmounted).map(|_| ())
}

/// The disk holding partition `part` (`/dev/vda6` → `/dev/vda`), from sysfs.
pub fn parent_disk(paths: &Paths, part: &Path) -> Result<PathBuf> {
    let name = part
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sys = paths.sys().join("class/block").join(&name);
    let real = std::fs::canonicalize(&sys).map_err(InitError::io("reading", &sys))?;
    let disk = real
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| InitError::Config {
            field: "sysfs",
            reason: format!("{} has no parent disk", real.display()),
        })?;
    Ok(paths.dev().join(disk))
}

/// Adds the store partition to the GPT of `disk` in its largest free
/// region unless a partition with [`STORE_PARTUUID`] exists; returns its
/// partition number and whether it was added.
pub fn ensure_store_partition(disk: &Path) -> Result<(u32, bool)> {
    let store: uuid::Uuid = STORE_PARTUUID.parse().map_err(|e| InitError::Config {
        field: "STORE_PARTUUID",
        reason: format!("{e}"),
    })?;
    let gpt_err = |e: gpt::GptError| InitError::Io {
        action: "editing the GPT of",
        path: disk.to_owned(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut g = gpt::GptConfig::new()
        .writable(true)
        .open(disk)
        .map_err(gpt_err)?;
    if let Some((id, _)) = g.partitions().iter().find(|(_, p)| p.part_guid == store) {
        return Ok((*id, false));
    }
    let lb: u64 = (*g.logical_block_size()).into();
    let align = 2048u64; // 1 MiB in 512-byte sectors
    let (start, len) = g
        .find_free_sectors()
        .into_iter()
        .max_by_key(|(_, len)| *len)
        .ok_or_else(|| InitError::Config {
            field: "disk",
            reason: format!("no free space on {} for the store", disk.display()),
        })?;
    let first = start.div_ceil(align) * align;
    let end = start + len; // exclusive
    if end <= first + align {
        return Err(InitError::Config {
            field: "disk",
            reason: format!(
                "{}: {} free sectors are too few for the store",
                disk.display(),
                len
            ),
        });
    }
    let size = (end - first) / align * align * lb;
    let id = g
        .add_partition_at(
            STORE_NAME,
            g.find_next_partition_id().unwrap_or(10),
            first,
            size / lb,
            gpt::partition_types::LINUX_FS,
            0,
        )
        .map_err(gpt_err)?;
    let mut parts = g.partitions().clone();
    if let Some(p) = parts.get_mut(&id) {
        p.part_guid = store;
    }
    g.update_partitions(parts).map_err(gpt_err)?;
    g.write().map_err(gpt_err)?;
    Ok((id, true))
}

/// The name of partition `nr` of `disk` (`vda` 10 → `vda10`, `nvme0n1` 10
/// → `nvme0n1p10`).
pub fn partition_name(disk: &str, nr: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{nr}")
    } else {
        format!("{disk}{nr}")
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageReport {
    /// The booted slot.
    pub slot: Slot,
    /// Whether the key was made now.
    pub new_key: bool,
    /// What happened to var.
    pub var: Action,
    /// Whether the store partition was created now.
    pub store_created: bool,
    /// What happened to the store.
    pub store: Action,
}

/// The whole step (see the module docs). var and the store are independent
/// once var's partition is found: they are opened (or formatted and made)
/// side by side, which halves the step's waits on `cryptsetup` and udev.
pub fn apply(paths: &Paths, runner: &dyn Runner, wait: Duration) -> Result<StorageReport> {
    let cmdline_path = paths.at("/proc/cmdline");
    let cmdline =
        std::fs::read_to_string(&cmdline_path).map_err(InitError::io("reading", &cmdline_path))?;
    let slot = slot_from_cmdline(&cmdline)?;
    let new_key = ensure_keyfile(paths, &paths.at("/dev/urandom"))?;
    let var_dev = find_partition(paths, slot.var_partuuid(), wait)?;
    let disk = parent_disk(paths, &var_dev)?;
    let (var, store) = std::thread::scope(|s| {
        let var = s.spawn(|| {
            let var = open_device(paths, runner, &var_dev, VAR_MAPPER, "var", false, new_key)?;
            if var.action != Action::Open {
                seed_var(paths, runner, &var.mapper)?;
            }
            Ok::<_, InitError>(var)
        });
        let store = open_store(paths, runner, &disk, wait, new_key);
        let var = var
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (var, store)
    });
    let var = var?;
    let (store_created, store) = store?;
    Ok(StorageReport {
        slot,
        new_key,
        var: var.action,
        store_created,
        store: store.action,
    })
}

/// The store half of [`apply`]: the partition (made when missing and told
/// to the kernel), then its LUKS2 and ext4. Returns whether the partition
/// was made now.
fn open_store(
    paths: &Paths,
    runner: &dyn Runner,
    disk: &Path,
    wait: Duration,
    new_key: bool,
) -> Result<(bool, Opened)> {
    let (nr, created) = ensure_store_partition(disk)?;
    let disk_name = disk
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dev = paths.dev().join(partition_name(&disk_name, nr));
    if created || !dev.exists() {
        runner.run(
            &argv(&[
                "partx",
                "--add",
                "--nr",
                &nr.to_string(),
                &disk.display().to_string(),
            ]),
            false,
        )?;
    }
    let dev = wait_for(&dev, wait)?;
    let store = open_device(
        paths,
        runner,
        &dev,
        STORE_MAPPER,
        "store",
        true,
        new_key || created,
    )?;
    Ok((created, store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots() {
        assert_eq!(
            slot_from_cmdline("root=x dfinity.system=A quiet").unwrap(),
            Slot::A
        );
        assert_eq!(slot_from_cmdline("dfinity.system=B").unwrap(), Slot::B);
        let err = slot_from_cmdline("dfinity.system=C")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/proc/cmdline: dfinity.system= must be A or B, got 'C'"
        );
        assert!(slot_from_cmdline("quiet").is_err());
        assert_eq!(Slot::B.var_partuuid(), B_VAR_PARTUUID);
    }

    #[test]
    fn var_uuids_match_the_layout() {
        let l = icos_layout::OsKind::GuestOs.layout();
        for (name, uuid) in [("A_var", A_VAR_PARTUUID), ("B_var", B_VAR_PARTUUID)] {
            assert_eq!(l.partition(name).unwrap().uuid.to_string(), uuid);
        }
    }

    #[test]
    fn decisions() {
        // Every combination of (luks, new_key, has_fs).
        for luks in [false, true] {
            for new_key in [false, true] {
                for fs in [false, true] {
                    let mut asked = false;
                    let a = decide(luks, new_key, || {
                        asked = true;
                        fs
                    });
                    let want = match (luks, new_key, fs) {
                        (false, _, _) | (true, true, _) => Action::FormatOpenMake,
                        (true, false, true) => Action::Open,
                        (true, false, false) => Action::OpenMake,
                    };
                    assert_eq!(a, want, "{luks} {new_key} {fs}");
                    assert_eq!(asked, luks && !new_key);
                }
            }
        }
    }

    #[test]
    fn keyfile_made_once() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let random = d.path().join("random");
        std::fs::write(&random, [7u8; 64]).unwrap();
        assert!(ensure_keyfile(&p, &random).unwrap());
        std::fs::write(&random, [9u8; 64]).unwrap();
        assert!(!ensure_keyfile(&p, &random).unwrap());
        let key = std::fs::read(p.at(KEYFILE)).unwrap();
        assert_eq!(key, [7u8; KEY_BYTES]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p.at(KEYFILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn ext4_magic() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("dev");
        let mut data = vec![0u8; 4096];
        std::fs::write(&f, &data).unwrap();
        assert!(!has_ext4(&f));
        data[1080] = 0x53;
        data[1081] = 0xef;
        std::fs::write(&f, &data).unwrap();
        assert!(has_ext4(&f));
        assert!(!has_ext4(&d.path().join("missing")));
    }

    /// Records commands; `isLuks` answers from `luks`, `open` from `opens`.
    struct Recorder {
        luks: bool,
        opens: bool,
        log: std::sync::Mutex<Vec<String>>,
    }

    impl Recorder {
        fn new(luks: bool) -> Recorder {
            Recorder {
                luks,
                opens: true,
                log: std::sync::Mutex::new(Vec::new()),
            }
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    impl Runner for Recorder {
        fn run(&self, argv: &[String], check: bool) -> Result<bool> {
            self.log.lock().unwrap().push(argv.join(" "));
            let ok = match argv.get(1).map(String::as_str) {
                Some("isLuks") => self.luks,
                Some("open") => self.opens,
                _ => true,
            };
            if check && !ok {
                return Err(InitError::Command {
                    command: argv.join(" "),
                    detail: "failed".into(),
                });
            }
            Ok(ok)
        }
    }

    /// The program and its first word of a recorded command line.
    fn verb(command: &str) -> String {
        command.split(' ').take(2).collect::<Vec<_>>().join(" ")
    }

    /// A device file holding the LUKS magic.
    fn luks_dev(dir: &Path) -> PathBuf {
        let dev = dir.join("vda10");
        let mut data = vec![0u8; 4096];
        data[..6].copy_from_slice(&LUKS_MAGIC);
        std::fs::write(&dev, data).unwrap();
        dev
    }

    /// An opened store mapping that holds ext4.
    fn ext4_mapper(p: &Paths) {
        let mapper = p.dev().join("mapper/store-crypt");
        std::fs::create_dir_all(mapper.parent().unwrap()).unwrap();
        let mut sb = vec![0u8; 2048];
        sb[1080] = 0x53;
        sb[1081] = 0xef;
        std::fs::write(&mapper, sb).unwrap();
    }

    #[test]
    fn luks_magic() {
        let d = tempfile::tempdir().unwrap();
        assert!(has_luks_magic(&luks_dev(d.path())));
        let plain = d.path().join("plain");
        std::fs::write(&plain, [0u8; 4096]).unwrap();
        assert!(!has_luks_magic(&plain));
        assert!(!has_luks_magic(&d.path().join("missing")));
    }

    #[test]
    fn first_boot_formats_opens_and_makes() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let r = Recorder::new(false);
        let o = open_device(
            &p,
            &r,
            Path::new("/dev/vda6"),
            "var_crypt",
            "var",
            false,
            true,
        )
        .unwrap();
        assert_eq!(o.action, Action::FormatOpenMake);
        let key = p.at(KEYFILE).display().to_string();
        let mapper = p.dev().join("mapper/var_crypt").display().to_string();
        assert_eq!(
            r.log(),
            [
                "cryptsetup isLuks /dev/vda6".to_owned(),
                format!(
                    "cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file {key} /dev/vda6"
                ),
                format!("cryptsetup open --type luks2 --key-file {key} /dev/vda6 var_crypt"),
                format!(
                    "mke2fs -q -F -t ext4 -L var -E lazy_itable_init=1,lazy_journal_init=1 {mapper}"
                ),
            ]
        );
    }

    #[test]
    fn later_boot_only_opens() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        ext4_mapper(&p);
        let dev = luks_dev(d.path());
        let r = Recorder::new(true);
        let o = open_device(&p, &r, &dev, "store-crypt", "store", true, false).unwrap();
        assert_eq!(o.action, Action::Open);
        // The magic is read directly: no isLuks run.
        let log = r.log();
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].ends_with(&format!("--allow-discards {} store-crypt", dev.display())));
    }

    #[test]
    fn a_header_that_does_not_open_is_an_error_not_a_format() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let dev = luks_dev(d.path());
        let r = Recorder {
            opens: false,
            ..Recorder::new(true)
        };
        let err = open_device(&p, &r, &dev, "store-crypt", "store", true, false).unwrap_err();
        assert!(err.to_string().contains("cryptsetup open"), "{err}");
        assert!(
            !r.log().iter().any(|c| c.contains("luksFormat")),
            "{:?}",
            r.log()
        );
    }

    #[test]
    fn magic_that_cryptsetup_rejects_is_formatted() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let dev = luks_dev(d.path());
        // The first open fails, isLuks says no: format as on a blank device.
        struct FirstOpenFails(Recorder);
        impl Runner for FirstOpenFails {
            fn run(&self, argv: &[String], check: bool) -> Result<bool> {
                let first_open =
                    argv[1] == "open" && !self.0.log().iter().any(|c| c.contains(" open "));
                if first_open {
                    self.0.log.lock().unwrap().push(argv.join(" "));
                    return Err(InitError::Command {
                        command: argv.join(" "),
                        detail: "failed".into(),
                    });
                }
                self.0.run(argv, check)
            }
        }
        let r = FirstOpenFails(Recorder::new(false));
        let o = open_device(&p, &r, &dev, "store-crypt", "store", true, false).unwrap();
        assert_eq!(o.action, Action::FormatOpenMake);
        let verbs: Vec<String> = r.0.log().iter().map(|c| verb(c)).collect();
        assert_eq!(
            verbs,
            [
                "cryptsetup open",
                "cryptsetup isLuks",
                "cryptsetup luksFormat",
                "cryptsetup open",
                "mke2fs -q"
            ]
        );
    }

    /// A root with the cmdline, the var partition's link, sysfs and a
    /// 64 MiB GPT disk file `vda` whose var partition `vda1` is blank.
    fn machine(root: &Path) -> Paths {
        let p = Paths::new(root);
        std::fs::create_dir_all(p.at("/proc")).unwrap();
        std::fs::write(p.at("/proc/cmdline"), "root=x dfinity.system=A").unwrap();
        std::fs::create_dir_all(p.at("/dev")).unwrap();
        std::fs::write(p.at("/dev/urandom"), [5u8; 64]).unwrap();
        let disk = p.dev().join("vda");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let mut g = gpt::GptConfig::new().writable(true).create(&disk).unwrap();
        g.add_partition("A_var", 16 << 20, gpt::partition_types::LINUX_FS, 0, None)
            .unwrap();
        g.write().unwrap();
        std::fs::write(p.dev().join("vda1"), [0u8; 4096]).unwrap();
        std::fs::write(p.dev().join("vda2"), [0u8; 4096]).unwrap();
        let links = p.dev().join("disk/by-partuuid");
        std::fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(p.dev().join("vda1"), links.join(A_VAR_PARTUUID)).unwrap();
        let sys_disk = p.sys().join("devices/virtual/vda");
        std::fs::create_dir_all(sys_disk.join("vda1")).unwrap();
        std::fs::create_dir_all(p.sys().join("class/block")).unwrap();
        std::os::unix::fs::symlink(sys_disk.join("vda1"), p.sys().join("class/block/vda1"))
            .unwrap();
        std::fs::create_dir_all(p.at("/var")).unwrap();
        p
    }

    #[test]
    fn var_is_found_in_the_gpt_before_udev_links_it() {
        let d = tempfile::tempdir().unwrap();
        let p = machine(d.path());
        std::fs::remove_file(p.dev().join("disk/by-partuuid").join(A_VAR_PARTUUID)).unwrap();
        let timeout = Duration::from_millis(120);
        // No link and no disk in /sys/block: not found, and the error says where it looked.
        let err = find_partition(&p, A_VAR_PARTUUID, timeout).unwrap_err();
        assert!(err.to_string().contains(A_VAR_PARTUUID), "{err}");
        assert!(err.to_string().contains("sys/block"), "{err}");
        // The disk is listed, but its GPT does not have the PARTUUID (yet).
        std::fs::create_dir_all(p.sys().join("block/vda")).unwrap();
        std::fs::create_dir_all(p.sys().join("block/dm-0")).unwrap();
        assert!(find_partition(&p, A_VAR_PARTUUID, timeout).is_err());
        let disk = p.dev().join("vda");
        let mut g = gpt::GptConfig::new().writable(true).open(&disk).unwrap();
        let mut parts = g.partitions().clone();
        parts.get_mut(&1).unwrap().part_guid = A_VAR_PARTUUID.parse().unwrap();
        g.update_partitions(parts).unwrap();
        g.write().unwrap();
        assert_eq!(
            find_partition(&p, A_VAR_PARTUUID, timeout).unwrap(),
            p.dev().join("vda1")
        );
        // B's var is on no disk.
        assert!(find_partition(&p, B_VAR_PARTUUID, timeout).is_err());
        // udev's link wins when it is there.
        let links = p.dev().join("disk/by-partuuid");
        std::os::unix::fs::symlink(p.dev().join("vda2"), links.join(B_VAR_PARTUUID)).unwrap();
        assert_eq!(
            find_partition(&p, B_VAR_PARTUUID, timeout).unwrap(),
            std::fs::canonicalize(p.dev().join("vda2")).unwrap()
        );
    }

    #[test]
    fn first_boot_makes_var_and_store_side_by_side() {
        let d = tempfile::tempdir().unwrap();
        let p = machine(d.path());
        let r = Recorder::new(false);
        let report = apply(&p, &r, Duration::from_secs(1)).unwrap();
        assert_eq!(
            report,
            StorageReport {
                slot: Slot::A,
                new_key: true,
                var: Action::FormatOpenMake,
                store_created: true,
                store: Action::FormatOpenMake,
            }
        );
        let log = r.log();
        // Each device's own commands keep their order; the two interleave.
        let of = |needle: &str| -> Vec<String> {
            log.iter()
                .filter(|c| c.contains(needle))
                .map(|c| verb(c))
                .collect()
        };
        assert_eq!(
            of("vda1"),
            [
                "cryptsetup isLuks",
                "cryptsetup luksFormat",
                "cryptsetup open"
            ]
        );
        assert_eq!(
            of("vda2"),
            [
                "cryptsetup isLuks",
                "cryptsetup luksFormat",
                "cryptsetup open"
            ]
        );
        assert_eq!(of("--nr 2"), ["partx --add"]);
        assert_eq!(of("mapper/var_crypt").len(), 2, "{log:?}"); // mke2fs, mount
        assert_eq!(of("mapper/store-crypt"), ["mke2fs -q"]);
        assert!(log.iter().any(|c| c.starts_with("cp -a ")), "{log:?}");
        // A second run finds the store partition and does not add it again.
        let again = ensure_store_partition(&p.dev().join("vda")).unwrap();
        assert_eq!(again, (2, false));
    }

    #[test]
    fn store_partition_in_the_free_space() {
        let d = tempfile::tempdir().unwrap();
        let disk = d.path().join("disk.img");
        let f = std::fs::File::create(&disk).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        // A protective MBR and a GPT with one partition in the first half.
        let mut g = gpt::GptConfig::new().writable(true).create(&disk).unwrap();
        g.add_partition("A_var", 16 << 20, gpt::partition_types::LINUX_FS, 0, None)
            .unwrap();
        g.write().unwrap();
        let (nr, added) = ensure_store_partition(&disk).unwrap();
        assert!(added);
        assert_eq!(nr, 2);
        let (again, added) = ensure_store_partition(&disk).unwrap();
        assert_eq!((again, added), (2, false));
        let g = gpt::GptConfig::new().open(&disk).unwrap();
        let p = &g.partitions()[&2];
        assert_eq!(p.name, STORE_NAME);
        assert_eq!(p.part_guid.to_string(), STORE_PARTUUID);
        assert_eq!(p.first_lba % 2048, 0);
        assert!(p.last_lba < (64 << 20) / 512 - 33);
        assert!(p.last_lba - p.first_lba + 1 >= (40 << 20) / 512);
    }

    #[test]
    fn partition_names() {
        assert_eq!(partition_name("vda", 10), "vda10");
        assert_eq!(partition_name("nvme0n1", 10), "nvme0n1p10");
    }
}
