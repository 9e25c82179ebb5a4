//! Prerequisites for the real-boot tests: QEMU, a static busybox, a Debian
//! kernel (with the `evdev` and `button` modules), and a busybox initramfs
//! built here. Missing prerequisites fail the test with the package to
//! install; nothing is skipped.

#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Serializes the tests that start QEMU: one VM at a time.
pub fn one_vm_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything a test VM needs.
pub struct Fixture {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The Debian kernel.
    pub kernel: PathBuf,
    /// The busybox initramfs (uncompressed newc cpio).
    pub initrd: PathBuf,
}

/// Builds (once per test process) or reuses the cached fixture under
/// `target/tmp/icos-qemu-fixture/`.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("icos-qemu-fixture");
        std::fs::create_dir_all(&dir).unwrap();
        let qemu = find_qemu();
        let busybox = find_static_busybox();
        let (kernel, modules) = kernel(&dir);
        let initrd = dir.join("initramfs-test.cpio");
        std::fs::write(&initrd, initramfs(&busybox, &modules)).unwrap();
        Fixture {
            qemu,
            kernel,
            initrd,
        }
    })
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn find_qemu() -> PathBuf {
    find_in_path("qemu-system-x86_64").unwrap_or_else(|| {
        panic!(
            "qemu-system-x86_64 is not installed: install the Debian packages qemu-system-x86 \
             qemu-utils ovmf from bookworm-backports \
             (apt-get install -y -t bookworm-backports qemu-system-x86 qemu-utils ovmf)"
        )
    })
}

/// Whether an ELF file has no program interpreter (is statically linked).
fn is_static_elf(bytes: &[u8]) -> bool {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = usize::try_from(u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap())).unwrap();
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        bytes.len() >= o + 4 && u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) != 3
    })
}

fn find_static_busybox() -> Vec<u8> {
    for path in ["/bin/busybox", "/usr/bin/busybox"] {
        if let Ok(bytes) = std::fs::read(path)
            && is_static_elf(&bytes)
        {
            return bytes;
        }
    }
    panic!("no statically linked busybox: install the Debian package busybox-static");
}

/// Modules the powerdown test loads: input events and the ACPI power button.
const MODULES: [&str; 2] = ["evdev.ko", "button.ko"];

/// The newest `linux-image-*-cloud-amd64` from apt, fetched once with
/// `apt-get download` and unpacked with `dpkg -x`; the kernel and the two
/// modules are cached in `dir`.
fn kernel(dir: &Path) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let kernel = dir.join("vmlinuz");
    let cached = kernel.is_file() && MODULES.iter().all(|m| dir.join(m).is_file());
    if !cached {
        fetch_kernel(dir);
    }
    let modules = MODULES
        .iter()
        .map(|m| (m.to_string(), std::fs::read(dir.join(m)).unwrap()))
        .collect();
    (kernel, modules)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (install apt and dpkg)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fetch_kernel(dir: &Path) {
    let hint = "a Debian kernel package is needed: run `apt-get update` so that \
                `apt-cache search linux-image-6.1.0` lists linux-image-6.1.0-*-cloud-amd64";
    let list = run(Command::new("apt-cache").args([
        "search",
        "--names-only",
        r"^linux-image-[0-9.]+-[0-9]+-cloud-amd64$",
    ]));
    let version = |name: &str| -> Vec<u64> {
        name.split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap_or(0))
            .collect()
    };
    let package = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .max_by_key(|name| version(name))
        .unwrap_or_else(|| panic!("{hint}"))
        .to_owned();
    eprintln!("fetching kernel package {package}");
    let work = tempfile::tempdir_in(dir).unwrap();
    run(Command::new("apt-get")
        .args(["-o", "Acquire::Retries=5", "download", "-q", &package])
        .current_dir(work.path()));
    let deb = std::fs::read_dir(work.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("apt-get download {package} produced no .deb; {hint}"));
    let root = work.path().join("root");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
    let vmlinuz = std::fs::read_dir(root.join("boot"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .unwrap_or_else(|| panic!("{package} has no /boot/vmlinuz-*"));
    for module in MODULES {
        let found = find_file(&root.join("lib/modules"), module)
            .or_else(|| find_file(&root.join("usr/lib/modules"), module))
            .unwrap_or_else(|| panic!("{package} has no {module}"));
        std::fs::copy(found, dir.join(module)).unwrap();
    }
    std::fs::write(dir.join("kernel-package"), &package).unwrap();
    // The kernel last: its presence marks a complete cache.
    std::fs::copy(vmlinuz, dir.join("vmlinuz")).unwrap();
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

/// The test guest's /init. The mode comes from `icos_test=` on the kernel
/// command line.
const INIT: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mode=$(sed -n 's/.*icos_test=\([a-z]*\).*/\1/p' /proc/cmdline)
echo "ICOS-TEST init mode=$mode"
case "$mode" in
success)
  echo "GUESTOS BOOT SUCCESS"
  poweroff -f
  ;;
failure)
  echo "GUESTOS BOOT FAILURE: icos test guest"
  ;;
powerdown)
  insmod /lib/modules/evdev.ko
  insmod /lib/modules/button.ko
  n=0
  for d in /sys/class/input/event*; do
    if grep -q "Power Button" "$d/device/name"; then
      ( dd if=/dev/input/${d##*/} of=/dev/null bs=24 count=1 2>/dev/null
        echo "ICOS-TEST power button pressed"
        poweroff -f ) &
      n=$((n+1))
    fi
  done
  echo "ICOS-TEST waiting for the power button on $n devices"
  ;;
esac
while true; do sleep 1000; done
"#;

/// An uncompressed newc cpio archive.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            u32::try_from(data.len()).unwrap(),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(namesize).unwrap(),
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

fn initramfs(busybox: &[u8], modules: &[(String, Vec<u8>)]) -> Vec<u8> {
    const DIR: u32 = 0o040755;
    const EXE: u32 = 0o100755;
    const FILE: u32 = 0o100644;
    const LINK: u32 = 0o120777;
    const CHR: u32 = 0o020600;
    let mut c = Cpio {
        out: Vec::new(),
        ino: 0,
    };
    for d in ["bin", "dev", "proc", "sys", "lib", "lib/modules"] {
        c.entry(d, DIR, &[], (0, 0));
    }
    c.entry("dev/console", CHR, &[], (5, 1));
    c.entry("bin/busybox", EXE, busybox, (0, 0));
    c.entry("bin/sh", LINK, b"busybox", (0, 0));
    for (name, data) in modules {
        c.entry(&format!("lib/modules/{name}"), FILE, data, (0, 0));
    }
    c.entry("init", EXE, INIT.as_bytes(), (0, 0));
    c.entry("TRAILER!!!", 0, &[], (0, 0));
    c.out
}

/// Pids of live processes whose command line mentions `token`.
pub fn processes_mentioning(token: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(token))
                .unwrap_or(false)
        })
        .collect()
}

/// Whether a process exists (zombies included).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
