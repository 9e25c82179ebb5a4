//! Shared helpers of the integration tests: tools, a sample tree, copies.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use icos_imagefs::{Tools, find_tool};

pub const EPOCH: u64 = 1_700_000_000;

/// The tools, or a panic naming the missing Debian package.
pub fn tools() -> Tools {
    match Tools::discover() {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// An extra command the tests use, or a panic naming its package.
pub fn tool(command: &str, package: &str) -> PathBuf {
    match find_tool(command, package) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn write_mode(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir_mode(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub const LONG_DIR: &str =
    "a-directory-name-that-is-quite-long-on-purpose/and-another-level-that-is-long-as-well-xyz";

/// Files of the sample tree and their contents (relative path → bytes).
pub fn sample_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut sparse = vec![0u8; 300 * 1024];
    sparse[..4096].copy_from_slice(&bytes(7, 4096));
    let tail = sparse.len() - 5000;
    sparse[tail..].copy_from_slice(&bytes(8, 5000));
    vec![
        ("bin/busybox", bytes(1, 10 * 1024 + 3)),
        ("etc/hostname", b"icos\n".to_vec()),
        ("etc/shadow", b"root:*:19000:0:99999:7:::\n".to_vec()),
        ("etc/hard1", b"linked twice\n".to_vec()),
        ("data/sparse.bin", sparse),
        ("data/empty", Vec::new()),
        (
            "a-directory-name-that-is-quite-long-on-purpose/and-another-level-that-is-long-as-well-xyz/file-with-a-long-name.txt",
            b"long\n".to_vec(),
        ),
    ]
}

/// Builds the sample tree at `root` with explicit modes (so the umask does
/// not matter): directories, files, a symlink, a hard link, an empty
/// directory, a FIFO, and as root a device node and a file capability.
pub fn make_tree(root: &Path) {
    mkdir_mode(root, 0o755);
    for d in ["bin", "etc", "data", LONG_DIR] {
        mkdir_mode(&root.join(d), 0o755);
    }
    mkdir_mode(
        &root.join("a-directory-name-that-is-quite-long-on-purpose"),
        0o755,
    );
    mkdir_mode(&root.join("empty"), 0o700);
    for (name, data) in sample_files() {
        let mode = match name {
            "bin/busybox" => 0o4755,
            "etc/shadow" => 0o640,
            _ => 0o644,
        };
        write_mode(&root.join(name), &data, mode);
    }
    fs::hard_link(root.join("etc/hard1"), root.join("etc/hard2")).unwrap();
    symlink("busybox", root.join("bin/sh")).unwrap();
    symlink("../etc/hostname", root.join("bin/hostname-link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    fs::set_permissions(root.join("fifo"), fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        mkdir_mode(&root.join("dev"), 0o755);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("dev/null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        fs::set_permissions(root.join("dev/null"), fs::Permissions::from_mode(0o666)).unwrap();
        // cap_net_raw+ep, as on /bin/ping
        let cap = [
            1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        xattr::set(root.join("bin/busybox"), "security.capability", &cap).unwrap();
        fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o4755)).unwrap();
    }
}

/// Copies the tree at `from` to `to` as new files (fresh inodes, times and
/// directory order: children are created in reverse order), keeping modes,
/// owners, symlinks, hard links, FIFOs, device nodes and xattrs.
pub fn copy_tree(from: &Path, to: &Path) {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    copy_dir(from, to, &mut links);
}

fn copy_dir(from: &Path, to: &Path, links: &mut HashMap<(u64, u64), PathBuf>) {
    let meta = fs::symlink_metadata(from).unwrap();
    fs::create_dir(to).unwrap();
    let mut names: Vec<_> = fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names.reverse();
    for name in names {
        let (src, dst) = (from.join(&name), to.join(&name));
        let m = fs::symlink_metadata(&src).unwrap();
        let ft = m.file_type();
        if ft.is_dir() {
            copy_dir(&src, &dst, links);
            continue;
        }
        if ft.is_symlink() {
            symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ft.is_file() {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, &dst).unwrap();
                continue;
            }
            fs::copy(&src, &dst).unwrap();
            if m.nlink() > 1 {
                links.insert((m.dev(), m.ino()), dst.clone());
            }
        } else {
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else {
                rustix::fs::FileType::BlockDevice
            };
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &dst,
                kind,
                rustix::fs::Mode::from_raw_mode(m.mode() & 0o7777),
                m.rdev(),
            )
            .unwrap();
        }
        // chown first: it clears set-id bits and file capabilities.
        std::os::unix::fs::lchown(&dst, Some(m.uid()), Some(m.gid())).unwrap();
        if !ft.is_symlink() {
            for attr in xattr::list(&src).unwrap() {
                if let Some(v) = xattr::get(&src, &attr).unwrap() {
                    xattr::set(&dst, &attr, &v).unwrap();
                }
            }
            fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777)).unwrap();
        }
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid())).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777)).unwrap();
}

/// Asserts two files are byte-identical, naming the first differing byte.
pub fn assert_same_bytes(a: &Path, b: &Path) {
    let (x, y) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    assert_eq!(
        x.len(),
        y.len(),
        "{} and {} differ in length",
        a.display(),
        b.display()
    );
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{} and {} differ at byte {i}", a.display(), b.display());
    }
}
