//! Choosing the accelerator: KVM only when it demonstrably boots a stock
//! kernel, TCG otherwise.
//!
//! `/dev/kvm` existing is not enough. On a host whose KVM is paravirtual
//! (PVM, as in some microVM sandboxes) the CPU flags lack `vmx`/`svm`, and
//! stock kernels either spin in the decompressor or stop with
//! `KVM internal error … emulation failure`, after which QEMU hangs instead
//! of exiting. So [`probe_accel`] answers [`Accel::Kvm`] only when all of
//! these hold:
//!
//! 1. the KVM device (`/dev/kvm`) exists;
//! 2. `/proc/cpuinfo` lists `vmx` or `svm`;
//! 3. a boot probe succeeds: QEMU with `-accel kvm` direct-boots a kernel
//!    with no root file system and no init, and the kernel prints
//!    [`PROBE_MARKER`] (its panic on the missing root) on the serial console
//!    within the timeout (15 s by default). Getting there means the kernel
//!    ran its whole early boot under KVM. QEMU is killed afterwards.
//!
//! The answer is cached as JSON in `CACHE_DIR/accel-probe.json` with a key
//! made of the host kernel release, the QEMU binary and the probe kernel
//! (path, size, mtime), and the results of checks 1 and 2; when the key
//! changes the probe runs again.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{Accel, Console, DirectKernel, VmConfig};
use crate::runner::{Outcome, RunError, Runner, Watch};

/// What the probe kernel prints when it has booted as far as mounting root.
pub const PROBE_MARKER: &str = "Unable to mount root fs";

/// The probe kernel's command line: serial console, no init, reboot at
/// once on panic (QEMU exits thanks to `-no-reboot`).
pub const PROBE_CMDLINE: &str = "console=ttyS0 panic=-1 loglevel=4 rdinit=/icos-no-init";

/// The default boot probe timeout.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The cache file name inside the cache directory.
pub const PROBE_CACHE_FILE: &str = "accel-probe.json";

const CACHE_KEY_VERSION: &str = "icos-qemu-probe-v1";

/// The accelerator probe failed to run (as opposed to answering TCG).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The cache directory could not be created.
    #[error("creating probe cache directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The CPU info file could not be read.
    #[error("reading {}: {source}", path.display())]
    ReadCpuinfo {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The cache file could not be read.
    #[error("reading probe cache {}: {source}", path.display())]
    ReadCache {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The cache file could not be written.
    #[error("writing probe cache: {0}")]
    WriteCache(#[from] icos_fs::FsError),
    /// The boot probe could not be run (e.g. QEMU is missing).
    #[error("KVM boot probe: {0}")]
    Run(#[from] RunError),
}

/// Inputs of [`probe_accel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Where the cache file and the probe's scratch files go.
    pub cache_dir: PathBuf,
    /// The kernel to boot. `None`: `/boot/vmlinuz-$(uname -r)`, then
    /// `/boot/vmlinuz`; without either, the answer is TCG.
    pub kernel: Option<PathBuf>,
    /// How long the kernel gets to print [`PROBE_MARKER`].
    pub timeout: Duration,
    /// The KVM device.
    pub kvm_device: PathBuf,
    /// The CPU info file.
    pub cpuinfo: PathBuf,
}

impl ProbeOptions {
    /// Probes with `qemu`, caching in `cache_dir`, with the default kernel,
    /// timeout, `/dev/kvm` and `/proc/cpuinfo`.
    pub fn new(qemu: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> ProbeOptions {
        ProbeOptions {
            qemu: qemu.into(),
            cache_dir: cache_dir.into(),
            kernel: None,
            timeout: PROBE_TIMEOUT,
            kvm_device: PathBuf::from("/dev/kvm"),
            cpuinfo: PathBuf::from("/proc/cpuinfo"),
        }
    }
}

/// The probe's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelProbe {
    /// The accelerator to use.
    pub accel: Accel,
    /// Why, in one line.
    pub reason: String,
    /// Whether the answer came from the cache.
    #[serde(skip)]
    pub cached: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    key: String,
    #[serde(flatten)]
    probe: AccelProbe,
}

/// Chooses the accelerator (see the module docs): KVM only if the device
/// exists, the CPU flags show `vmx`/`svm`, and a real boot probe passes;
/// TCG otherwise. The answer is cached under `opts.cache_dir`.
pub fn probe_accel(opts: &ProbeOptions) -> Result<AccelProbe, ProbeError> {
    let kvm_present = opts.kvm_device.exists();
    let cpuinfo =
        std::fs::read_to_string(&opts.cpuinfo).map_err(|source| ProbeError::ReadCpuinfo {
            path: opts.cpuinfo.clone(),
            source,
        })?;
    let virt = has_virt_flags(&cpuinfo);
    let kernel = opts.kernel.clone().or_else(default_probe_kernel);
    let key = format!(
        "{CACHE_KEY_VERSION};host={};qemu={};kernel={};kvm={kvm_present};vmx/svm={virt};timeout={}",
        host_release(),
        file_id(&resolve_program(&opts.qemu)),
        kernel.as_deref().map(file_id).unwrap_or_default(),
        opts.timeout.as_millis(),
    );

    std::fs::create_dir_all(&opts.cache_dir).map_err(|source| ProbeError::CreateDir {
        path: opts.cache_dir.clone(),
        source,
    })?;
    let cache = opts.cache_dir.join(PROBE_CACHE_FILE);
    match std::fs::read(&cache) {
        Ok(bytes) => match serde_json::from_slice::<CacheEntry>(&bytes) {
            Ok(entry) if entry.key == key => {
                return Ok(AccelProbe {
                    cached: true,
                    ..entry.probe
                });
            }
            Ok(_) => tracing::debug!(cache = %cache.display(), "probe cache is stale"),
            Err(e) => {
                tracing::warn!(cache = %cache.display(), error = %e, "ignoring bad probe cache")
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ProbeError::ReadCache {
                path: cache,
                source,
            });
        }
    }

    let tcg = |reason: String| AccelProbe {
        accel: Accel::Tcg,
        reason,
        cached: false,
    };
    let probe = if !kvm_present {
        tcg(format!("{} does not exist", opts.kvm_device.display()))
    } else if !virt {
        tcg(format!(
            "{} lists neither vmx nor svm, so {} is not hardware KVM (e.g. a paravirtual PVM host)",
            opts.cpuinfo.display(),
            opts.kvm_device.display()
        ))
    } else if let Some(kernel) = kernel {
        let scratch = tempfile::Builder::new()
            .prefix("probe-")
            .tempdir_in(&opts.cache_dir)
            .map_err(|source| ProbeError::CreateDir {
                path: opts.cache_dir.clone(),
                source,
            })?;
        let runner = Runner::new(&opts.qemu);
        let outcome = boot_probe(&runner, &kernel, Accel::Kvm, opts.timeout, scratch.path())?;
        if outcome.is_success() {
            AccelProbe {
                accel: Accel::Kvm,
                reason: format!(
                    "{} booted under KVM in {:.1} s",
                    kernel.display(),
                    outcome.elapsed().as_secs_f64()
                ),
                cached: false,
            }
        } else {
            tcg(format!(
                "{} did not boot under KVM: {}",
                kernel.display(),
                summarize(&outcome)
            ))
        }
    } else {
        tcg("no kernel to boot-probe KVM with (none given, no /boot/vmlinuz)".to_owned())
    };
    tracing::info!(accel = %probe.accel, reason = %probe.reason, "accelerator probe");
    let entry = CacheEntry {
        key,
        probe: probe.clone(),
    };
    let json = serde_json::to_vec_pretty(&entry).unwrap_or_default();
    icos_fs::write_atomic(&cache, &json)?;
    Ok(probe)
}

/// The VM the boot probe starts: q35, 256 MiB, 1 vCPU, the accelerator's
/// default CPU model, the kernel with [`PROBE_CMDLINE`], serial to
/// `serial_log`.
pub fn probe_vm(accel: Accel, kernel: &Path, serial_log: &Path) -> VmConfig {
    let mut vm = VmConfig::new(accel, 256, 1);
    vm.kernel = Some(DirectKernel {
        kernel: kernel.to_owned(),
        initrd: None,
        cmdline: PROBE_CMDLINE.to_owned(),
    });
    vm.serial = Some(Console::file(serial_log));
    vm
}

/// Boots `kernel` with [`probe_vm`] under `accel` and waits up to `timeout`
/// for [`PROBE_MARKER`]; QEMU is killed before this returns. Scratch files
/// go to `workdir`.
pub fn boot_probe(
    runner: &Runner,
    kernel: &Path,
    accel: Accel,
    timeout: Duration,
    workdir: &Path,
) -> Result<Outcome, RunError> {
    let vm = probe_vm(accel, kernel, &workdir.join("probe-serial.log"));
    let watch = Watch::new(timeout).success(PROBE_MARKER);
    runner.run(&vm, &watch, |line| tracing::trace!(line, "probe serial"))
}

fn summarize(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Success { line, .. } => format!("success: {line}"),
        Outcome::Failure { line, .. } => format!("failure: {line}"),
        Outcome::Timeout { elapsed, tail } => format!(
            "no marker within {:.0} s (last serial line: {})",
            elapsed.as_secs_f64(),
            tail.iter()
                .rev()
                .map(|l| printable(l))
                .find(|l| !l.is_empty())
                .map_or("none".to_owned(), |l| format!("'{l}'"))
        ),
        Outcome::Exited {
            status,
            qemu_output,
            ..
        } => {
            let last = qemu_output.lines().rev().find(|l| !l.trim().is_empty());
            format!("QEMU exited ({status}): {}", last.unwrap_or("no output"))
        }
    }
}

/// A serial line without terminal escape sequences and control characters.
fn printable(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte; otherwise ESC plus one char.
            if chars.next_if_eq(&'[').is_some() {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out.trim().to_owned()
}

/// Whether any `flags` line of `/proc/cpuinfo` has `vmx` or `svm`.
pub fn has_virt_flags(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .filter_map(|l| l.split_once(':'))
        .any(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn default_probe_kernel() -> Option<PathBuf> {
    let release = host_release();
    [
        PathBuf::from(format!("/boot/vmlinuz-{release}")),
        PathBuf::from("/boot/vmlinuz"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// A program name without a slash is looked up in `PATH`.
fn resolve_program(program: &Path) -> PathBuf {
    if program.components().count() > 1 {
        return program.to_owned();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| program.to_owned())
}

/// `path:size:mtime`, or `path:missing`.
fn file_id(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or_default();
            format!("{}:{}:{mtime}", path.display(), m.len())
        }
        Err(_) => format!("{}:missing", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_terminal_escapes() {
        assert_eq!(
            printable("\u{1b}c\u{1b}[?7l\u{1b}[2J\u{1b}[0mSeaBIOS (version 1.16.3)\r"),
            "SeaBIOS (version 1.16.3)"
        );
    }

    #[test]
    fn detects_virt_flags() {
        assert!(has_virt_flags("processor : 0\nflags\t\t: fpu vme svm lm\n"));
        assert!(has_virt_flags("flags : fpu vmx\n"));
        assert!(!has_virt_flags("flags : fpu hypervisor svm_lock\n"));
        assert!(!has_virt_flags("model name : svm vmx\n"));
    }

    #[test]
    fn no_kvm_device_means_tcg_and_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cpuinfo = dir.path().join("cpuinfo");
        std::fs::write(&cpuinfo, "flags : fpu svm\n").unwrap();
        let mut opts = ProbeOptions::new("/nonexistent/qemu", dir.path().join("cache"));
        opts.kvm_device = dir.path().join("kvm");
        opts.cpuinfo = cpuinfo;
        let first = probe_accel(&opts).unwrap();
        assert_eq!(first.accel, Accel::Tcg);
        assert!(first.reason.contains("does not exist"), "{}", first.reason);
        assert!(!first.cached);
        let second = probe_accel(&opts).unwrap();
        assert!(second.cached);
        assert_eq!(second.reason, first.reason);

        // A changed input invalidates the cache.
        std::fs::write(&opts.kvm_device, "").unwrap();
        opts.kernel = Some(dir.path().join("no-such-kernel"));
        let third = probe_accel(&opts);
        // The kvm device now "exists" and svm is listed, so the boot probe
        // runs, and fails to start the missing QEMU.
        assert!(
            matches!(third, Err(ProbeError::Run(RunError::Spawn { .. }))),
            "{third:?}"
        );
    }

    #[test]
    fn no_virt_flags_means_tcg() {
        let dir = tempfile::tempdir().unwrap();
        let cpuinfo = dir.path().join("cpuinfo");
        std::fs::write(&cpuinfo, "flags : fpu hypervisor\n").unwrap();
        let kvm = dir.path().join("kvm");
        std::fs::write(&kvm, "").unwrap();
        let mut opts = ProbeOptions::new("/nonexistent/qemu", dir.path());
        opts.kvm_device = kvm;
        opts.cpuinfo = cpuinfo;
        let probe = probe_accel(&opts).unwrap();
        assert_eq!(probe.accel, Accel::Tcg);
        assert!(
            probe.reason.contains("neither vmx nor svm"),
            "{}",
            probe.reason
        );
    }
}
