//! The root file system as a tar stream: read mmdebstrap's archive, apply
//! the GuestOS customisation rules, add committed and generated files, and
//! write a sorted, normalised archive for `mke2fs -d`.
//!
//! # Rules
//!
//! [`classify`] decides per path (without the leading `./`):
//!
//! | path | rule | why |
//! |------|------|-----|
//! | `boot/*`, `vmlinuz*`, `initrd.img*` | drop | the kernel lives in A_boot; there is no initramfs-tools initrd |
//! | `dev/*`, `run/*`, `tmp/*`, `var/tmp/*` | drop | runtime state |
//! | files under `var/log/` | drop | build logs (directories stay) |
//! | files under `var/cache/apt/`, `var/lib/apt/lists/` | drop | package caches |
//! | `var/cache/ldconfig/aux-cache`, `var/cache/debconf/*-old`, `var/lib/dpkg/*-old`, `etc/*-` | drop | caches and backups that carry build-time state |
//! | `etc/ssh/ssh_host_*` | drop | per-build random host keys (made at first boot) |
//! | `var/lib/dbus/machine-id`, `var/lib/systemd/random-seed`, `etc/resolv.conf`, `etc/hostname` | drop | per-machine or copied from the build host |
//! | `etc/apt/sources.list` | drop | names the build's temporary repository (a committed one replaces it) |
//! | `var/cache/apt/archives/partial`, `var/lib/apt/lists/partial` | drop | apt's download directories; their owner depends on whether apt could sandbox |
//! | `etc/machine-id` | empty | systemd makes a transient id on a read-only root |
//! | `usr/share/man/*`, `usr/share/info/*`, `usr/share/locale/*` | drop | size |
//! | files under `usr/share/doc/` but `copyright` | drop | size; licences stay |
//! | `usr/share/perl/*`, `usr/lib/x86_64-linux-gnu/perl/*`, `libperl.so*`, `usr/bin/perl5.*-x86_64-linux-gnu` | drop | size: Perl's library beyond `perl-base`, pulled in by the kernel package's install-time tools; nothing on a running node uses it (`perl-base` stays, as Debian's Essential set has it) |
//! | `usr/lib/udev/hwdb.d/*`, `usr/lib/udev/hwdb.bin` | drop | size (22 MiB): udev's hardware database only adds descriptive names (vendor, model) and laptop key maps; device naming, the power button and every rule the nodes rely on work without it, and a read-only root never recompiles it |
//! | kernel modules outside [`KEEP_MODULES`], and the kernel's test modules (`lib/test_*`, `*-error-inject.ko`) | drop | size: only what a virtio VM with dm-verity, dm-crypt, ext4, vfat, XFS, vsock, nftables, a USB (xHCI) CONFIG disk and the ACPI power button need |
//!
//! Every entry then gets mtime = the build epoch; owners, modes, device
//! numbers, hard links and extended attributes (`SCHILY.xattr.*`) are kept.
//! Hard links always point at the first path of their group in name
//! order, so a reader sees the target before the link.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{BuildError, Result};

/// Prefixes (under `lib/modules/<version>/kernel/`) of the kernel modules
/// that stay in the image.
pub const KEEP_MODULES: &[&str] = &[
    "arch/x86/crypto/",
    "block/t10-pi.ko",
    "crypto/",
    // The ACPI power button and input events: logind powers the VM off
    // when the host presses the button (graceful shutdown by the runner).
    "drivers/acpi/button.ko",
    "drivers/block/virtio_blk.ko",
    "drivers/char/hw_random/virtio-rng.ko",
    "drivers/char/virtio_console.ko",
    "drivers/input/evdev.ko",
    "drivers/md/",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "drivers/scsi/scsi_common.ko",
    "drivers/scsi/scsi_mod.ko",
    "drivers/scsi/sd_mod.ko",
    "drivers/scsi/virtio_scsi.ko",
    "drivers/usb/common/",
    "drivers/usb/core/",
    "drivers/usb/host/xhci-",
    "drivers/usb/storage/",
    "drivers/virtio/",
    "fs/ext4/",
    "fs/fat/",
    "fs/jbd2/",
    "fs/mbcache.ko",
    "fs/nls/",
    "fs/xfs/",
    "lib/",
    "net/core/failover.ko",
    "net/ipv4/netfilter/",
    "net/ipv6/netfilter/",
    "net/netfilter/",
    "net/vmw_vsock/",
];

/// What happens to one entry of mmdebstrap's archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Kept as it is (mtime normalised).
    Keep,
    /// Left out.
    Drop,
    /// Kept as an empty file.
    Empty,
}

/// The rule for `path` (no leading `./` or `/`, no trailing `/`);
/// `is_dir` tells whether the entry is a directory. See the module docs.
pub fn classify(path: &str, is_dir: bool) -> Rule {
    let under = |prefix: &str| path.starts_with(prefix) && path.len() > prefix.len();
    const DROP_ALL_UNDER: [&str; 11] = [
        "boot/",
        "dev/",
        "run/",
        "tmp/",
        "var/tmp/",
        "usr/share/man/",
        "usr/share/info/",
        "usr/share/locale/",
        "usr/share/perl/",
        "usr/lib/x86_64-linux-gnu/perl/",
        "usr/lib/udev/hwdb.d/",
    ];
    if DROP_ALL_UNDER.iter().any(|p| under(p)) {
        return Rule::Drop;
    }
    if matches!(
        path,
        "vmlinuz"
            | "vmlinuz.old"
            | "initrd.img"
            | "initrd.img.old"
            | "var/cache/ldconfig/aux-cache"
            | "var/lib/dbus/machine-id"
            | "var/lib/systemd/random-seed"
            | "etc/resolv.conf"
            | "etc/hostname"
            | "etc/apt/sources.list"
            | "var/cache/apt/archives/partial"
            | "var/lib/apt/lists/partial"
            | "usr/lib/udev/hwdb.bin"
    ) {
        return Rule::Drop;
    }
    if path == "etc/machine-id" {
        return Rule::Empty;
    }
    if is_dir {
        return Rule::Keep;
    }
    const DROP_FILES_UNDER: [&str; 3] = ["var/log/", "var/cache/apt/", "var/lib/apt/lists/"];
    if DROP_FILES_UNDER.iter().any(|p| under(p)) {
        return Rule::Drop;
    }
    if (path.starts_with("var/cache/debconf/") || path.starts_with("var/lib/dpkg/"))
        && path.ends_with("-old")
    {
        return Rule::Drop;
    }
    if let Some(name) = path.strip_prefix("etc/")
        && !name.contains('/')
        && name.ends_with('-')
    {
        return Rule::Drop;
    }
    if path.starts_with("etc/ssh/ssh_host_") {
        return Rule::Drop;
    }
    if path.starts_with("usr/lib/x86_64-linux-gnu/libperl.so")
        || (path.starts_with("usr/bin/perl5.") && path.ends_with("-x86_64-linux-gnu"))
    {
        return Rule::Drop;
    }
    if under("usr/share/doc/") && !path.ends_with("/copyright") {
        return Rule::Drop;
    }
    if let Some(rest) = module_path(path)
        && (!KEEP_MODULES.iter().any(|k| rest.starts_with(k)) || is_test_module(rest))
    {
        return Rule::Drop;
    }
    Rule::Keep
}

/// The kernel's self-test and fault-injection modules (`lib/test_bpf.ko`
/// alone is 4.6 MiB), which a node never loads.
fn is_test_module(rest: &str) -> bool {
    rest.starts_with("lib/test_") || rest.ends_with("-error-inject.ko")
}

/// For `[usr/]lib/modules/<version>/kernel/<rest>`, the `<rest>`.
pub(crate) fn module_path(path: &str) -> Option<&str> {
    let p = path.strip_prefix("usr/").unwrap_or(path);
    let p = p.strip_prefix("lib/modules/")?;
    let (_version, rest) = p.split_once('/')?;
    rest.strip_prefix("kernel/")
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file and its contents.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Symlink(String),
    /// A hard link to another path of the tree.
    Hardlink(String),
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
    /// A named pipe.
    Fifo,
}

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Extended attributes (name without the `SCHILY.xattr.` prefix).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Node {
    /// A root-owned node.
    pub fn new(kind: Kind, mode: u32) -> Node {
        Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            xattrs: Vec::new(),
        }
    }
}

/// A root file system held in memory, sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// Entries by normalised path.
    pub nodes: BTreeMap<String, Node>,
}

/// The result of reading mmdebstrap's archive.
#[derive(Debug)]
pub struct Customised {
    /// The customised tree.
    pub tree: Tree,
    /// `boot/vmlinuz-<version>` contents.
    pub kernel: Vec<u8>,
    /// The kernel version.
    pub kernel_version: String,
    /// How many entries were dropped.
    pub dropped: usize,
}

/// Normalises an archive path: no leading `./` or `/`, no trailing `/`.
pub fn normalize(path: &str) -> String {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else {
            break;
        }
    }
    let p = p.trim_end_matches('/');
    if p == "." {
        String::new()
    } else {
        p.to_owned()
    }
}

/// Reads mmdebstrap's archive and applies [`classify`].
pub fn read_rootfs_tar(path: &Path) -> Result<Customised> {
    let (mut tree, mut kernels, dropped) = read_entries(path, true)?;
    if kernels.len() != 1 {
        return Err(BuildError::Rootfs(format!(
            "expected exactly one boot/vmlinuz-*, found {}",
            kernels.len()
        )));
    }
    let (kernel_version, kernel) = kernels.remove(0);
    tree.fix_hardlinks();
    Ok(Customised {
        tree,
        kernel,
        kernel_version,
        dropped,
    })
}

/// Reads an archive written by [`Tree::write_tar`] back, as it is.
pub fn read_tree(path: &Path) -> Result<Tree> {
    Ok(read_entries(path, false)?.0)
}

type Kernels = Vec<(String, Vec<u8>)>;

fn read_entries(path: &Path, rules: bool) -> Result<(Tree, Kernels, usize)> {
    let file = fs::File::open(path).map_err(BuildError::io("opening", path))?;
    let tar_err = |source| BuildError::Tar {
        step: "reading",
        path: path.to_path_buf(),
        source,
    };
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut tree = Tree::default();
    let mut kernels = Vec::new();
    let mut dropped = 0usize;
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let raw = entry
            .path()
            .map_err(tar_err)?
            .to_string_lossy()
            .into_owned();
        let name = normalize(&raw);
        if name.is_empty() {
            continue;
        }
        let header = entry.header().clone();
        let etype = header.entry_type();
        if rules && let Some(version) = name.strip_prefix("boot/vmlinuz-") {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(tar_err)?;
            kernels.push((version.to_owned(), data));
            dropped += 1;
            continue;
        }
        let rule = if rules {
            classify(&name, etype.is_dir())
        } else {
            Rule::Keep
        };
        if rule == Rule::Drop {
            dropped += 1;
            continue;
        }
        let mut xattrs = Vec::new();
        if let Some(ext) = entry.pax_extensions().map_err(tar_err)? {
            for e in ext {
                let e = e.map_err(tar_err)?;
                if let Ok(key) = e.key()
                    && let Some(attr) = key.strip_prefix("SCHILY.xattr.")
                {
                    xattrs.push((attr.to_owned(), e.value_bytes().to_vec()));
                }
            }
        }
        let link = || -> Result<String> {
            let l = entry
                .link_name()
                .map_err(tar_err)?
                .ok_or_else(|| BuildError::Rootfs(format!("{name}: link without a target")))?;
            Ok(l.to_string_lossy().into_owned())
        };
        let kind = if etype.is_dir() {
            Kind::Dir
        } else if etype.is_symlink() {
            Kind::Symlink(link()?)
        } else if etype.is_hard_link() {
            Kind::Hardlink(normalize(&link()?))
        } else if etype.is_character_special() || etype.is_block_special() {
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            if etype.is_character_special() {
                Kind::Char(major, minor)
            } else {
                Kind::Block(major, minor)
            }
        } else if etype.is_fifo() {
            Kind::Fifo
        } else if etype.is_file() {
            let mut data = Vec::new();
            if rule == Rule::Keep {
                entry.read_to_end(&mut data).map_err(tar_err)?;
            }
            Kind::File(data)
        } else {
            // Pax/GNU metadata entries are consumed by the reader; anything
            // else is unexpected in a root file system.
            return Err(BuildError::Rootfs(format!(
                "{name}: unsupported tar entry type {etype:?}"
            )));
        };
        let node = Node {
            kind,
            mode: header.mode().map_err(tar_err)? & 0o7777,
            uid: header.uid().map_err(tar_err)?,
            gid: header.gid().map_err(tar_err)?,
            xattrs,
        };
        tree.nodes.insert(name, node);
    }
    Ok((tree, kernels, dropped))
}

impl Tree {
    /// Adds or replaces `path`, creating missing parent directories
    /// (root-owned, 0755).
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = normalize(path);
        let mut parent = String::new();
        for comp in path
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            self.nodes
                .entry(parent.clone())
                .or_insert_with(|| Node::new(Kind::Dir, 0o755));
        }
        match (self.nodes.get(&path).map(|n| &n.kind), &node.kind) {
            // An existing directory keeps its owner and mode.
            (Some(Kind::Dir), Kind::Dir) => {}
            _ => {
                self.nodes.insert(path, node);
            }
        }
    }

    /// Adds a committed directory tree at the root: directories 0755,
    /// files 0755 when executable and 0644 otherwise, symbolic links as
    /// they are; everything root-owned.
    pub fn overlay_dir(&mut self, dir: &Path) -> Result<usize> {
        let mut count = 0;
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let abs = dir.join(&rel);
            let mut names: Vec<_> = fs::read_dir(&abs)
                .map_err(BuildError::io("reading", &abs))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()
                .map_err(BuildError::io("reading", &abs))?;
            names.sort();
            for name in names {
                let child = rel.join(&name);
                let path = dir.join(&child);
                let key = child.to_string_lossy().into_owned();
                let meta = fs::symlink_metadata(&path).map_err(BuildError::io("reading", &path))?;
                if meta.file_type().is_symlink() {
                    let target = fs::read_link(&path).map_err(BuildError::io("reading", &path))?;
                    self.insert(
                        &key,
                        Node::new(Kind::Symlink(target.to_string_lossy().into_owned()), 0o777),
                    );
                } else if meta.is_dir() {
                    self.insert(&key, Node::new(Kind::Dir, 0o755));
                    stack.push(child);
                } else {
                    let data = fs::read(&path).map_err(BuildError::io("reading", &path))?;
                    let mode = if meta.permissions().mode() & 0o111 != 0 {
                        0o755
                    } else {
                        0o644
                    };
                    self.insert(&key, Node::new(Kind::File(data), mode));
                }
                count += 1;
            }
        }
        Ok(count)
    }

    /// Makes every hard link point at the first path (in name order) of
    /// its group, which holds the data; a link whose target is gone
    /// becomes a copy.
    pub fn fix_hardlinks(&mut self) {
        // Group members by their final data-holding path.
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (path, node) in &self.nodes {
            if let Kind::Hardlink(target) = &node.kind {
                let mut t = target.clone();
                let mut hops = 0;
                while let Some(Node {
                    kind: Kind::Hardlink(next),
                    ..
                }) = self.nodes.get(&t)
                {
                    t = next.clone();
                    hops += 1;
                    if hops > 16 {
                        break;
                    }
                }
                groups.entry(t).or_default().push(path.clone());
            }
        }
        for (holder, links) in groups {
            let Some(data_node) = self.nodes.get(&holder).cloned() else {
                // The target was dropped: nothing to copy from; drop the links too.
                for l in links {
                    self.nodes.remove(&l);
                }
                continue;
            };
            if !matches!(data_node.kind, Kind::File(_)) {
                continue;
            }
            let mut members = links;
            members.push(holder.clone());
            members.sort();
            let first = members[0].clone();
            for m in &members {
                if *m == first {
                    self.nodes.insert(m.clone(), data_node.clone());
                } else {
                    let mut n = data_node.clone();
                    n.kind = Kind::Hardlink(first.clone());
                    self.nodes.insert(m.clone(), n);
                }
            }
        }
    }

    /// Follows symbolic links (in every component) to the real path of
    /// `path` inside the tree; `None` when it does not exist.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut pending: Vec<String> = normalize(path)
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .rev()
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(comp) = pending.pop() {
            match comp.as_str() {
                "." => continue,
                ".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            cur.push(comp);
            let joined = cur.join("/");
            match &self.nodes.get(&joined)?.kind {
                Kind::Symlink(target) => {
                    hops += 1;
                    if hops > 40 {
                        return None;
                    }
                    cur.pop();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    pending.extend(
                        target
                            .split('/')
                            .filter(|c| !c.is_empty())
                            .map(str::to_owned)
                            .rev(),
                    );
                }
                Kind::Hardlink(t) => {
                    cur = t.split('/').map(str::to_owned).collect();
                }
                _ => {}
            }
        }
        Some(cur.join("/"))
    }

    /// The contents of the regular file at `path` (symbolic links
    /// followed).
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        let real = self.resolve(path)?;
        match &self.nodes.get(&real)?.kind {
            Kind::File(data) => Some(data),
            _ => None,
        }
    }

    /// Writes the tree as a tar archive: sorted by name, every mtime, atime
    /// and ctime `epoch`, GNU headers, extended attributes as pax records.
    pub fn write_tar(&self, out: impl Write, epoch: u64) -> std::io::Result<()> {
        let mut b = tar::Builder::new(out);
        b.mode(tar::HeaderMode::Deterministic);
        for (path, node) in &self.nodes {
            if !node.xattrs.is_empty() {
                let records: Vec<(String, &[u8])> = node
                    .xattrs
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                    .collect();
                b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))?;
            }
            let mut h = tar::Header::new_gnu();
            h.set_mode(node.mode);
            h.set_uid(node.uid);
            h.set_gid(node.gid);
            h.set_mtime(epoch);
            // mke2fs takes atime and ctime from the archive (0 when absent):
            // give every inode the epoch for all three times.
            if let Some(gnu) = h.as_gnu_mut() {
                gnu.set_atime(epoch);
                gnu.set_ctime(epoch);
            }
            h.set_size(0);
            match &node.kind {
                Kind::File(data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_slice())?;
                }
                Kind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
                }
                Kind::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    b.append_link(&mut h, path, target)?;
                }
                Kind::Hardlink(target) => {
                    h.set_entry_type(tar::EntryType::Link);
                    b.append_link(&mut h, path, target)?;
                }
                Kind::Char(major, minor) | Kind::Block(major, minor) => {
                    h.set_entry_type(if matches!(node.kind, Kind::Char(..)) {
                        tar::EntryType::Char
                    } else {
                        tar::EntryType::Block
                    });
                    h.set_device_major(*major)?;
                    h.set_device_minor(*minor)?;
                    b.append_data(&mut h, path, std::io::empty())?;
                }
                Kind::Fifo => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    b.append_data(&mut h, path, std::io::empty())?;
                }
            }
        }
        b.into_inner()?.flush()
    }

    /// The total size of the regular files.
    pub fn file_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match &n.kind {
                Kind::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }
}

/// A system account added to the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// User and group name.
    pub name: &'static str,
    /// User and group id.
    pub id: u32,
    /// The home folder.
    pub home: &'static str,
    /// The login shell.
    pub shell: &'static str,
}

/// The GuestOS accounts: IC-OS's role accounts (SSH with keys, homes on
/// the encrypted `/var`) and the payload's own user.
pub const GUESTOS_ACCOUNTS: &[Account] = &[
    Account {
        name: "admin",
        id: 1000,
        home: "/var/lib/admin",
        shell: "/bin/bash",
    },
    Account {
        name: "backup",
        id: 1001,
        home: "/var/lib/backup",
        shell: "/bin/bash",
    },
    Account {
        name: "readonly",
        id: 1002,
        home: "/var/lib/readonly",
        shell: "/bin/bash",
    },
    Account {
        name: "ic-replica",
        id: 1100,
        home: "/var/lib/ic",
        shell: "/usr/sbin/nologin",
    },
];

fn file_text<'a>(tree: &'a mut Tree, path: &str) -> Result<&'a mut Vec<u8>> {
    let node = tree
        .nodes
        .get_mut(path)
        .ok_or_else(|| BuildError::Rootfs(format!("no {path}")))?;
    match &mut node.kind {
        Kind::File(data) => Ok(data),
        _ => Err(BuildError::Rootfs(format!("{path} is not a file"))),
    }
}

/// The line of `a` in `file` (`etc/passwd`, `etc/group`, `etc/shadow` or
/// `etc/gshadow`).
fn account_line(file: &str, a: &Account) -> String {
    match file {
        "etc/passwd" => format!("{0}:x:{1}:{1}::{2}:{3}", a.name, a.id, a.home, a.shell),
        "etc/group" => format!("{}:x:{}:", a.name, a.id),
        "etc/shadow" => format!("{}:*:19000:0:99999:7:::", a.name),
        _ => format!("{}:!::", a.name),
    }
}

/// Adds `accounts` to `etc/passwd`, `etc/group`, `etc/shadow` and
/// `etc/gshadow` (no password: `*`; a user group of the same id). An
/// account whose name exists already (Debian has a `backup` system user)
/// keeps its ids and entries, but gets the home folder and shell of
/// `accounts`; a new account whose id is taken is an error.
pub fn add_system_accounts(tree: &mut Tree, accounts: &[Account]) -> Result<()> {
    for path in ["etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"] {
        let data = file_text(tree, path)?;
        let text = String::from_utf8_lossy(data).into_owned();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for a in accounts {
            let existing = lines
                .iter()
                .position(|l| l.split(':').next() == Some(a.name));
            match existing {
                Some(i) if path == "etc/passwd" => {
                    let mut f: Vec<String> = lines[i].split(':').map(str::to_owned).collect();
                    if f.len() != 7 {
                        return Err(BuildError::Rootfs(format!(
                            "{path}: the entry of {} does not have 7 fields",
                            a.name
                        )));
                    }
                    f[5] = a.home.to_owned();
                    f[6] = a.shell.to_owned();
                    lines[i] = f.join(":");
                }
                Some(_) => {}
                None => {
                    let id = a.id.to_string();
                    let id_taken = matches!(path, "etc/passwd" | "etc/group")
                        && lines
                            .iter()
                            .any(|l| l.split(':').nth(2) == Some(id.as_str()));
                    if id_taken {
                        return Err(BuildError::Rootfs(format!(
                            "{path}: id {id} of the new account {} is taken",
                            a.name
                        )));
                    }
                    lines.push(account_line(path, a));
                }
            }
        }
        *data = (lines.join("\n") + "\n").into_bytes();
    }
    Ok(())
}

/// Sets root's password hash in `etc/shadow` (dev images).
pub fn set_root_password(tree: &mut Tree, hash: &str) -> Result<()> {
    let node = tree
        .nodes
        .get_mut("etc/shadow")
        .ok_or_else(|| BuildError::Rootfs("no etc/shadow".into()))?;
    let Kind::File(data) = &mut node.kind else {
        return Err(BuildError::Rootfs("etc/shadow is not a file".into()));
    };
    let text = String::from_utf8_lossy(data).into_owned();
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(':').collect();
            if fields.first() == Some(&"root") && fields.len() > 2 {
                found = true;
                fields[1] = hash;
                fields.join(":")
            } else {
                line.to_owned()
            }
        })
        .collect();
    if !found {
        return Err(BuildError::Rootfs("etc/shadow has no root entry".into()));
    }
    *data = (lines.join("\n") + "\n").into_bytes();
    Ok(())
}

/// Removes `boot/vmlinuz-<version>` from the tree and returns its version
/// and contents; exactly one kernel must be there.
pub fn take_kernel(tree: &mut Tree) -> Result<(String, Vec<u8>)> {
    let kernels: Vec<String> = tree
        .nodes
        .keys()
        .filter(|p| p.starts_with("boot/vmlinuz-"))
        .cloned()
        .collect();
    let [path] = kernels.as_slice() else {
        return Err(BuildError::Rootfs(format!(
            "expected exactly one boot/vmlinuz-*, found {}",
            kernels.len()
        )));
    };
    let version = path.trim_start_matches("boot/vmlinuz-").to_owned();
    let data = match tree.nodes.remove(path).map(|n| n.kind) {
        Some(Kind::File(data)) => data,
        _ => return Err(BuildError::Rootfs(format!("{path} is not a regular file"))),
    };
    Ok((version, data))
}

/// Applies `classify` to every entry of `tree`: drops entries, and empties
/// those it says to (`etc/machine-id`).
pub fn apply_rules(tree: &mut Tree, classify: fn(&str, bool) -> Rule) {
    let mut empty = Vec::new();
    tree.nodes.retain(
        |path, node| match classify(path, matches!(node.kind, Kind::Dir)) {
            Rule::Keep => true,
            Rule::Drop => false,
            Rule::Empty => {
                empty.push(path.clone());
                true
            }
        },
    );
    for path in empty {
        if let Some(node) = tree.nodes.get_mut(&path) {
            node.kind = Kind::File(Vec::new());
        }
    }
}

/// Writes a customised root: `rootfs.tar` (sorted, every date `epoch`),
/// `vmlinuz` and `kernel-version` into `out`.
pub fn write_customised(
    tree: &mut Tree,
    out: &Path,
    kernel_version: &str,
    kernel: &[u8],
    epoch: u64,
) -> Result<()> {
    tree.fix_hardlinks();
    let tar_path = out.join("rootfs.tar");
    let file = fs::File::create(&tar_path).map_err(BuildError::io("creating", &tar_path))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    tree.write_tar(&mut w, epoch)
        .map_err(|source| BuildError::Tar {
            step: "writing",
            path: tar_path.clone(),
            source,
        })?;
    w.flush().map_err(BuildError::io("writing", &tar_path))?;
    fs::write(out.join("vmlinuz"), kernel)
        .map_err(BuildError::io("writing", &out.join("vmlinuz")))?;
    let kv = out.join("kernel-version");
    fs::write(&kv, kernel_version.as_bytes()).map_err(BuildError::io("writing", &kv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("./etc/"), "etc");
        assert_eq!(normalize("/usr/bin/x"), "usr/bin/x");
        assert_eq!(normalize("./"), "");
        assert_eq!(normalize("."), "");
    }

    #[test]
    fn rules() {
        use Rule::*;
        let cases: &[(&str, bool, Rule)] = &[
            ("boot", true, Keep),
            ("boot/config-6.1.0-50-amd64", false, Drop),
            ("vmlinuz", false, Drop),
            ("initrd.img.old", false, Drop),
            ("dev", true, Keep),
            ("dev/null", false, Drop),
            ("var/log", true, Keep),
            ("var/log/journal", true, Keep),
            ("var/log/dpkg.log", false, Drop),
            ("var/log/apt/history.log", false, Drop),
            ("var/cache/ldconfig/aux-cache", false, Drop),
            ("var/lib/dpkg/status", false, Keep),
            ("var/lib/dpkg/status-old", false, Drop),
            ("var/cache/debconf/config.dat-old", false, Drop),
            ("var/cache/debconf/config.dat", false, Keep),
            ("etc/passwd", false, Keep),
            ("etc/passwd-", false, Drop),
            ("etc/shadow-", false, Drop),
            ("etc/ssh/ssh_host_ed25519_key", false, Drop),
            ("etc/ssh/sshd_config", false, Keep),
            ("etc/machine-id", false, Empty),
            ("etc/resolv.conf", false, Drop),
            ("etc/hostname", false, Drop),
            ("etc/apt/sources.list", false, Drop),
            ("var/lib/apt/lists/partial", true, Drop),
            ("var/lib/apt/lists", true, Keep),
            ("tmp", true, Keep),
            ("tmp/x", false, Drop),
            ("usr/share/man/man1/ls.1.gz", false, Drop),
            ("usr/share/doc/bash/copyright", false, Keep),
            ("usr/share/doc/bash/changelog.gz", false, Drop),
            ("usr/share/doc/bash", true, Keep),
            ("usr/share/locale/de/LC_MESSAGES/x.mo", false, Drop),
            ("usr/lib/modules/6.1.0-50-amd64/modules.dep", false, Keep),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/fs/ext4/ext4.ko",
                false,
                Keep,
            ),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/drivers/md/dm-verity.ko",
                false,
                Keep,
            ),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/net/netfilter/nf_tables.ko",
                false,
                Keep,
            ),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/drivers/gpu/drm/i915/i915.ko",
                false,
                Drop,
            ),
            (
                "lib/modules/6.1.0-50-amd64/kernel/sound/core/snd.ko",
                false,
                Drop,
            ),
            ("usr/lib/modules/6.1.0-50-amd64/kernel/sound", true, Keep),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/drivers/usb/storage/usb-storage.ko",
                false,
                Keep,
            ),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/drivers/usb/host/xhci-pci.ko",
                false,
                Keep,
            ),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/drivers/usb/host/ehci-hcd.ko",
                false,
                Drop,
            ),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
                false,
                Keep,
            ),
            ("usr/bin/busybox", false, Keep),
            ("usr/share/perl/5.36.0/strict.pm", false, Drop),
            ("usr/share/perl5/Debconf/Db.pm", false, Keep),
            ("usr/lib/x86_64-linux-gnu/perl/5.36.0/POSIX.pm", false, Drop),
            ("usr/lib/x86_64-linux-gnu/perl-base/strict.pm", false, Keep),
            ("usr/lib/x86_64-linux-gnu/libperl.so.5.36.0", false, Drop),
            ("usr/bin/perl5.36-x86_64-linux-gnu", false, Drop),
            ("usr/bin/perl", false, Keep),
            ("usr/bin/perl5.36.0", false, Keep),
            // mtools (HostOS's CONFIG media) converts names through
            // iconv's IBM850 module.
            ("usr/lib/x86_64-linux-gnu/gconv/IBM850.so", false, Keep),
            ("usr/lib/udev/hwdb.d/20-pci-vendor-model.hwdb", false, Drop),
            ("usr/lib/udev/hwdb.bin", false, Drop),
            (
                "usr/lib/udev/rules.d/60-persistent-storage.rules",
                false,
                Keep,
            ),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/lib/test_bpf.ko",
                false,
                Drop,
            ),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/lib/notifier-error-inject.ko",
                false,
                Drop,
            ),
            (
                "usr/lib/modules/6.1.0-50-amd64/kernel/lib/libcrc32c.ko",
                false,
                Keep,
            ),
        ];
        for (path, dir, want) in cases {
            assert_eq!(classify(path, *dir), *want, "{path}");
        }
    }

    fn file(data: &str) -> Node {
        Node::new(Kind::File(data.as_bytes().to_vec()), 0o644)
    }

    #[test]
    fn resolves_symlinks_in_every_component() {
        let mut t = Tree::default();
        t.insert("lib", Node::new(Kind::Symlink("usr/lib".into()), 0o777));
        t.insert("usr/lib/x86_64-linux-gnu/libc.so.6", file("libc"));
        t.insert(
            "usr/lib/x86_64-linux-gnu/libz.so.1",
            Node::new(Kind::Symlink("libz.so.1.2".into()), 0o777),
        );
        t.insert("usr/lib/x86_64-linux-gnu/libz.so.1.2", file("z"));
        t.insert("sbin", Node::new(Kind::Symlink("/usr/sbin".into()), 0o777));
        t.insert(
            "usr/sbin/tool",
            Node::new(
                Kind::Symlink("../lib/x86_64-linux-gnu/libc.so.6".into()),
                0o777,
            ),
        );
        assert_eq!(
            t.resolve("lib/x86_64-linux-gnu/libz.so.1").as_deref(),
            Some("usr/lib/x86_64-linux-gnu/libz.so.1.2")
        );
        assert_eq!(t.file("/sbin/tool"), Some(&b"libc"[..]));
        assert_eq!(t.resolve("lib/nope"), None);
        // Parents were created.
        assert_eq!(t.nodes["usr"].kind, Kind::Dir);
    }

    #[test]
    fn hardlinks_point_at_the_first_path() {
        let mut t = Tree::default();
        t.insert("usr/bin/perl5.36.0", file("perl"));
        t.insert(
            "usr/bin/perl",
            Node::new(Kind::Hardlink("usr/bin/perl5.36.0".into()), 0o755),
        );
        t.insert(
            "usr/bin/orphan",
            Node::new(Kind::Hardlink("usr/share/doc/gone".into()), 0o755),
        );
        t.fix_hardlinks();
        assert_eq!(t.nodes["usr/bin/perl"].kind, Kind::File(b"perl".to_vec()));
        assert_eq!(
            t.nodes["usr/bin/perl5.36.0"].kind,
            Kind::Hardlink("usr/bin/perl".into())
        );
        assert!(!t.nodes.contains_key("usr/bin/orphan"));
    }

    #[test]
    fn tar_is_sorted_normalised_and_round_trips() {
        let mut t = Tree::default();
        t.insert("etc/b", file("b"));
        t.insert("etc/a", file("a"));
        let mut ping = Node::new(Kind::File(b"elf".to_vec()), 0o755);
        ping.xattrs
            .push(("security.capability".into(), vec![1, 0, 0, 2]));
        t.insert("usr/bin/ping", ping);
        t.insert(&format!("usr/{}", "x".repeat(150)), file("long"));
        let mut one = Vec::new();
        t.write_tar(&mut one, 1_700_000_000).unwrap();
        let mut two = Vec::new();
        t.clone().write_tar(&mut two, 1_700_000_000).unwrap();
        assert_eq!(one, two);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar");
        // Add a kernel so the reader accepts it as a root file system.
        let mut t2 = t.clone();
        t2.insert("boot/vmlinuz-6.1.0-test", file("kernel"));
        t2.insert("var/log/dpkg.log", file("log"));
        let mut buf = Vec::new();
        t2.write_tar(&mut buf, 5).unwrap();
        fs::write(&path, &buf).unwrap();
        let c = read_rootfs_tar(&path).unwrap();
        assert_eq!(c.kernel, b"kernel");
        assert_eq!(c.kernel_version, "6.1.0-test");
        assert!(!c.tree.nodes.contains_key("var/log/dpkg.log"));
        assert!(c.tree.nodes.contains_key("var/log"));
        assert_eq!(
            c.tree.nodes["usr/bin/ping"].xattrs,
            t.nodes["usr/bin/ping"].xattrs
        );
        assert_eq!(
            c.tree.nodes[&format!("usr/{}", "x".repeat(150))].kind,
            Kind::File(b"long".to_vec())
        );
        let names: Vec<String> = tar::Archive::new(&one[..])
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(e.header().mtime().unwrap(), 1_700_000_000);
                e.path().unwrap().to_string_lossy().into_owned()
            })
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names[0], "etc/");
    }

    #[test]
    fn root_password() {
        let mut t = Tree::default();
        t.insert(
            "etc/shadow",
            file("root:*:19675:0:99999:7:::\ndaemon:*:19675:0:99999:7:::\n"),
        );
        set_root_password(&mut t, "$6$salt$hash").unwrap();
        assert_eq!(
            t.file("etc/shadow").unwrap(),
            b"root:$6$salt$hash:19675:0:99999:7:::\ndaemon:*:19675:0:99999:7:::\n"
        );
        let mut empty = Tree::default();
        assert!(set_root_password(&mut empty, "x").is_err());
    }

    #[test]
    fn system_accounts() {
        let mut t = Tree::default();
        t.insert("etc/passwd", file("root:x:0:0:root:/root:/bin/bash\n"));
        t.insert("etc/group", file("root:x:0:\n"));
        t.insert("etc/shadow", file("root:*:19675:0:99999:7:::\n"));
        t.insert("etc/gshadow", file("root:*::\n"));
        let admin = Account {
            name: "admin",
            id: 1000,
            home: "/var/lib/admin",
            shell: "/bin/bash",
        };
        add_system_accounts(&mut t, &[admin]).unwrap();
        assert_eq!(
            t.file("etc/passwd").unwrap(),
            b"root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000::/var/lib/admin:/bin/bash\n"
        );
        assert_eq!(t.file("etc/group").unwrap(), b"root:x:0:\nadmin:x:1000:\n");
        assert_eq!(
            t.file("etc/shadow").unwrap(),
            b"root:*:19675:0:99999:7:::\nadmin:*:19000:0:99999:7:::\n"
        );
        assert_eq!(t.file("etc/gshadow").unwrap(), b"root:*::\nadmin:!::\n");
        // Again: the existing entries stay; home and shell are set.
        t.insert(
            "etc/passwd",
            file("root:x:0:0:root:/root:/bin/bash\nadmin:x:34:34:admin:/var/backups:/usr/sbin/nologin\n"),
        );
        add_system_accounts(&mut t, &[admin]).unwrap();
        assert_eq!(
            t.file("etc/passwd").unwrap(),
            b"root:x:0:0:root:/root:/bin/bash\nadmin:x:34:34:admin:/var/lib/admin:/bin/bash\n"
        );
        assert_eq!(t.file("etc/group").unwrap(), b"root:x:0:\nadmin:x:1000:\n");
        // A new name with a taken id.
        let other = Account {
            name: "other",
            ..admin
        };
        let err = add_system_accounts(&mut t, &[other])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("id 1000 of the new account other is taken"),
            "{err}"
        );
        assert!(add_system_accounts(&mut Tree::default(), GUESTOS_ACCOUNTS).is_err());
    }
}
