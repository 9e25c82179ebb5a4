//! The GuestOS initramfs: the static busybox, `veritysetup`, `dmsetup` and
//! `blkid` with the libraries they load, the kernel modules needed to reach a
//! dm-verity ext4 root on virtio, and `/etc/verity.conf` with build-time
//! constants. Everything comes from the (pinned) root file system; the
//! `/init` script is a committed file added in the initramfs stage.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::elf;
use crate::error::{BuildError, Result};
use crate::rootfs::{Kind, Node, Tree};

/// Modules loaded by `/init`, by name (their dependencies come first,
/// from `modules.dep`).
pub const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "dm_verity",
    "crc32c_generic",
    "ext4",
    "sha256_ssse3",
];

/// Busybox applets linked into `/bin`.
pub const APPLETS: &[&str] = &[
    "cat",
    "cp",
    "cut",
    "dd",
    "dmesg",
    "echo",
    "grep",
    "head",
    "insmod",
    "ls",
    "mkdir",
    "mount",
    "poweroff",
    "reboot",
    "sh",
    "sleep",
    "switch_root",
    "tail",
    "tr",
    "umount",
    "wc",
];

/// Dynamically linked programs copied into `/sbin` (path in the root
/// file system).
pub const PROGRAMS: &[&str] = &["usr/sbin/veritysetup", "usr/sbin/dmsetup", "usr/sbin/blkid"];

/// The program whose files `/init` reads through dm-verity before
/// switching root, so corruption there fails the boot with a message.
pub const PROBE_PROGRAM: &str = "usr/lib/systemd/systemd";

const LIB_DIRS: [&str; 4] = [
    "usr/lib/x86_64-linux-gnu",
    "lib/x86_64-linux-gnu",
    "usr/lib",
    "lib",
];

/// The initramfs contents (without `/init`) and what went into them.
#[derive(Debug)]
pub struct Initramfs {
    /// The tree.
    pub tree: Tree,
    /// Module file stems in load order.
    pub modules: Vec<String>,
    /// Files `/init` reads before `switch_root` (absolute paths).
    pub probe_files: Vec<String>,
}

/// Builds the initramfs tree from the root file system, with the modules
/// of [`MODULES`].
pub fn build(root: &Tree, kernel_version: &str, verity_hash_offset: u64) -> Result<Initramfs> {
    build_with(root, kernel_version, verity_hash_offset, MODULES)
}

/// Builds the initramfs tree from the root file system, with `modules`
/// (by name; their dependencies are added, built-in ones skipped).
pub fn build_with(
    root: &Tree,
    kernel_version: &str,
    verity_hash_offset: u64,
    modules: &[&str],
) -> Result<Initramfs> {
    let mut t = Tree::default();
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "etc",
        "newroot",
        "lib/modules",
    ] {
        t.insert(d, Node::new(Kind::Dir, 0o755));
    }
    let busybox = root
        .file("usr/bin/busybox")
        .ok_or_else(|| BuildError::Rootfs("no usr/bin/busybox (package busybox-static)".into()))?;
    if elf::dynamic_info(busybox)
        .map_err(|message| BuildError::Elf {
            path: "usr/bin/busybox".into(),
            message,
        })?
        .is_some_and(|i| i.interpreter.is_some())
    {
        return Err(BuildError::Rootfs(
            "usr/bin/busybox is dynamically linked; the initramfs needs busybox-static".into(),
        ));
    }
    t.insert(
        "bin/busybox",
        Node::new(Kind::File(busybox.to_vec()), 0o755),
    );
    for applet in APPLETS {
        t.insert(
            &format!("bin/{applet}"),
            Node::new(Kind::Symlink("busybox".into()), 0o777),
        );
    }

    let mut libs = BTreeMap::new();
    for program in PROGRAMS {
        let data = root
            .file(program)
            .ok_or_else(|| BuildError::Rootfs(format!("no {program}")))?;
        let name = program.rsplit('/').next().unwrap_or(program);
        t.insert(
            &format!("sbin/{name}"),
            Node::new(Kind::File(data.to_vec()), 0o755),
        );
        closure(root, program, &mut libs)?;
    }
    for (wanted_path, real) in &libs {
        let data = root
            .file(real)
            .ok_or_else(|| BuildError::Rootfs(format!("no {real}")))?;
        t.insert(wanted_path, Node::new(Kind::File(data.to_vec()), 0o755));
    }

    let modules = module_order(root, kernel_version, modules)?;
    let mut stems = Vec::new();
    for m in &modules {
        let data = root
            .file(m)
            .ok_or_else(|| BuildError::Rootfs(format!("no {m}")))?;
        let stem = m
            .rsplit('/')
            .next()
            .unwrap_or(m)
            .trim_end_matches(".ko")
            .to_owned();
        t.insert(
            &format!("lib/modules/{stem}.ko"),
            Node::new(Kind::File(data.to_vec()), 0o644),
        );
        stems.push(stem);
    }

    let mut probe = BTreeMap::new();
    closure(root, PROBE_PROGRAM, &mut probe)?;
    let mut probe_files: BTreeSet<String> = probe.values().map(|p| format!("/{p}")).collect();
    let systemd = root
        .resolve(PROBE_PROGRAM)
        .ok_or_else(|| BuildError::Rootfs(format!("no {PROBE_PROGRAM}")))?;
    probe_files.insert(format!("/{systemd}"));
    let probe_files: Vec<String> = probe_files.into_iter().collect();

    t.insert(
        "etc/verity.conf",
        Node::new(
            Kind::File(verity_conf(verity_hash_offset, &stems, &probe_files).into_bytes()),
            0o644,
        ),
    );
    Ok(Initramfs {
        tree: t,
        modules: stems,
        probe_files,
    })
}

/// The shell fragment `/init` sources.
pub fn verity_conf(hash_offset: u64, modules: &[String], probe_files: &[String]) -> String {
    format!(
        "VERITY_HASH_OFFSET={hash_offset}\nMODULES=\"{}\"\nPROBE_FILES=\"{}\"\n",
        modules.join(" "),
        probe_files.join(" ")
    )
}

/// Adds the interpreter and the libraries `program` loads, transitively:
/// `wanted path in the initramfs` → `real path in the root`.
pub(crate) fn closure(
    root: &Tree,
    program: &str,
    out: &mut BTreeMap<String, String>,
) -> Result<()> {
    let mut queue = vec![program.to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(path) = queue.pop() {
        let real = root.resolve(&path).ok_or_else(|| {
            BuildError::Rootfs(format!("{program}: needs {path}, which is missing"))
        })?;
        if !seen.insert(real.clone()) {
            continue;
        }
        let data = root
            .file(&real)
            .ok_or_else(|| BuildError::Rootfs(format!("{real}: not a file")))?;
        let Some(info) = elf::dynamic_info(data).map_err(|message| BuildError::Elf {
            path: real.clone(),
            message,
        })?
        else {
            continue;
        };
        if let Some(interp) = info.interpreter {
            let wanted = interp.trim_start_matches('/').to_owned();
            let r = root.resolve(&wanted).ok_or_else(|| {
                BuildError::Rootfs(format!("{real}: interpreter {interp} missing"))
            })?;
            out.insert(wanted, r);
        }
        for lib in info.needed {
            // Already loaded by an object earlier in the chain (through its
            // RUNPATH): the dynamic loader reuses it by soname.
            if let Some(wanted) = out
                .keys()
                .find(|k| k.rsplit('/').next() == Some(lib.as_str()))
                .cloned()
            {
                queue.push(wanted);
                continue;
            }
            let found = info
                .runpath
                .iter()
                .map(|d| d.trim_start_matches('/').to_owned())
                .chain(LIB_DIRS.iter().map(|d| (*d).to_owned()))
                .find_map(|d| {
                    let p = format!("{d}/{lib}");
                    root.resolve(&p).map(|r| (p, r))
                });
            let Some((wanted, r)) = found else {
                return Err(BuildError::Rootfs(format!(
                    "{real}: library {lib} not found"
                )));
            };
            // In the initramfs every library sits in the multiarch directory
            // under its soname, unless a RUNPATH put it elsewhere.
            let dest = if LIB_DIRS.iter().any(|d| wanted == format!("{d}/{lib}")) {
                format!("lib/x86_64-linux-gnu/{lib}")
            } else {
                wanted.clone()
            };
            out.insert(dest, r);
            queue.push(wanted);
        }
    }
    Ok(())
}

/// The module files (paths in the root file system) to load for `wanted`,
/// dependencies first, each once. Built-in modules are skipped.
pub fn module_order(root: &Tree, kernel_version: &str, wanted: &[&str]) -> Result<Vec<String>> {
    let base = format!("usr/lib/modules/{kernel_version}");
    let dep_text = root
        .file(&format!("{base}/modules.dep"))
        .ok_or_else(|| BuildError::Rootfs(format!("no {base}/modules.dep")))?;
    let builtin = root
        .file(&format!("{base}/modules.builtin"))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let deps = parse_modules_dep(&String::from_utf8_lossy(dep_text));
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let by_name: BTreeMap<String, &str> =
        deps.keys().map(|p| (module_name(p), p.as_str())).collect();
    let mut order = Vec::new();
    for w in wanted {
        let name = w.replace('-', "_");
        match by_name.get(&name) {
            Some(path) => visit(path, &deps, &mut order, 0)?,
            None if builtin.contains(&name) => {}
            None => {
                return Err(BuildError::Rootfs(format!(
                    "kernel module {w} is neither in {base}/modules.dep nor built in"
                )));
            }
        }
    }
    Ok(order.into_iter().map(|p| format!("{base}/{p}")).collect())
}

fn visit(
    path: &str,
    deps: &BTreeMap<String, Vec<String>>,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    if order.iter().any(|p| p == path) {
        return Ok(());
    }
    if depth > 64 {
        return Err(BuildError::Rootfs(format!(
            "module dependency loop at {path}"
        )));
    }
    // modules.dep lists the modules a module needs with the one to load
    // last first; visiting them in reverse loads the deepest first.
    for d in deps.get(path).into_iter().flatten().rev() {
        visit(d, deps, order, depth + 1)?;
    }
    order.push(path.to_owned());
    Ok(())
}

/// `kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko ...` lines.
pub fn parse_modules_dep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                m.trim().to_owned(),
                d.split_whitespace().map(str::to_owned).collect(),
            )
        })
        .collect()
}

/// `kernel/drivers/md/dm-verity.ko` → `dm_verity`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Writes `tree` into the empty directory `dir` (modes kept, symbolic
/// links as they are). `dir` itself gets mode 0755.
pub fn write_dir(tree: &Tree, dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(BuildError::io("setting mode of", dir))?;
    for (path, node) in &tree.nodes {
        let p = dir.join(path);
        match &node.kind {
            Kind::Dir => {
                fs::create_dir_all(&p).map_err(BuildError::io("creating", &p))?;
                // Explicit modes: the archive must not depend on the umask.
                fs::set_permissions(&p, fs::Permissions::from_mode(node.mode))
                    .map_err(BuildError::io("setting mode of", &p))?;
            }
            Kind::File(data) => {
                fs::write(&p, data).map_err(BuildError::io("writing", &p))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(node.mode))
                    .map_err(BuildError::io("setting mode of", &p))?;
            }
            Kind::Symlink(target) => {
                std::os::unix::fs::symlink(target, &p).map_err(BuildError::io("linking", &p))?;
            }
            other => {
                return Err(BuildError::Rootfs(format!(
                    "initramfs: {path}: cannot write {other:?}"
                )));
            }
        }
    }
    Ok(())
}

/// Adds the `/init` script to `tree` and writes the initramfs `initrd.img`
/// (newc cpio, zstd with checksum) into `out`, through a scratch folder
/// there.
pub fn write_image(mut tree: Tree, init: &Path, out: &Path) -> Result<()> {
    let init_data = fs::read(init).map_err(BuildError::io("reading", init))?;
    tree.insert("init", Node::new(Kind::File(init_data), 0o755));
    let tree_dir = out.join("tree");
    fs::create_dir_all(&tree_dir).map_err(BuildError::io("creating", &tree_dir))?;
    write_dir(&tree, &tree_dir)?;
    let img = out.join("initrd.img");
    let file = fs::File::create(&img).map_err(BuildError::io("creating", &img))?;
    let mut enc = zstd::stream::Encoder::new(std::io::BufWriter::new(file), 12)
        .map_err(BuildError::io("compressing", &img))?;
    enc.include_checksum(true)
        .map_err(BuildError::io("compressing", &img))?;
    icos_imagefs::write_cpio_newc(&tree_dir, &mut enc)
        .map_err(BuildError::imagefs("writing the initramfs cpio"))?;
    enc.finish()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(BuildError::io("writing", &img))?;
    fs::remove_dir_all(&tree_dir).map_err(BuildError::io("removing", &tree_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/drivers/md/dm-verity.ko"), "dm_verity");
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko.xz"), "ext4");
    }

    #[test]
    fn modules_load_dependencies_first_once() {
        let mut root = Tree::default();
        let base = "usr/lib/modules/6.1.0-x";
        let dep = "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
                   kernel/lib/crc16.ko:\nkernel/fs/mbcache.ko:\nkernel/fs/jbd2/jbd2.ko:\n\
                   kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko\n\
                   kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko\nkernel/drivers/md/dm-mod.ko:\n";
        root.insert(
            &format!("{base}/modules.dep"),
            Node::new(Kind::File(dep.as_bytes().to_vec()), 0o644),
        );
        root.insert(
            &format!("{base}/modules.builtin"),
            Node::new(
                Kind::File(b"kernel/drivers/virtio/virtio_pci.ko\n".to_vec()),
                0o644,
            ),
        );
        let order = module_order(&root, "6.1.0-x", &["virtio_pci", "dm-verity", "ext4"]).unwrap();
        let short: Vec<&str> = order
            .iter()
            .map(|p| p.rsplit('/').next().unwrap())
            .collect();
        assert_eq!(
            short,
            [
                "dm-mod.ko",
                "dm-bufio.ko",
                "dm-verity.ko",
                "jbd2.ko",
                "mbcache.ko",
                "crc16.ko",
                "ext4.ko"
            ]
        );
        assert!(module_order(&root, "6.1.0-x", &["nope"]).is_err());
    }

    #[test]
    fn verity_conf_is_shell() {
        assert_eq!(
            verity_conf(42, &["a".into(), "b".into()], &["/x".into()]),
            "VERITY_HASH_OFFSET=42\nMODULES=\"a b\"\nPROBE_FILES=\"/x\"\n"
        );
    }
}
