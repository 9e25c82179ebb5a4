//! From the HostOS config and a prepared boot to a QEMU command line, and
//! the whole preparation of one VM start ([`prepare_launch`]).

use std::path::{Path, PathBuf};

use icos_config::{GuestOsOptions, GuestVmType, HostOSConfig};
use icos_config_media::{Extras, MediaSummary};
use icos_deterministic_ips::{MacAddr6, NodeType, deterministic_mac};
use icos_qemu::{
    Accel, CacheMode, Console, DirectKernel, Discard, Disk, NetBackend, Nic, UserNet, VmConfig,
    Vsock,
};
use serde::Serialize;

use crate::prepare::{BootFiles, BootPlan, GrubenvUpdate, GuestDisk, PrepareError, describe};

/// The VM's name (`-name guest=guestos`), as IC names the domain.
pub const VM_NAME: &str = "guestos";
/// The VM's SMBIOS UUID, IC's for the default GuestOS domain.
pub const VM_UUID: &str = "fd897da5-8017-41c8-8575-a706dba30766";
/// The guest's vsock CID: IC's host agent serves only CID 3.
pub const GUEST_CID: u32 = 3;
/// The host bridge IC-OS puts the guest NIC on.
pub const DEFAULT_BRIDGE: &str = "br6";
/// The CONFIG media's USB serial number.
pub const CONFIG_SERIAL: &str = "config";

/// Where the guest NIC goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "name")]
pub enum Network {
    /// A tap QEMU creates on this host bridge (`qemu-bridge-helper`).
    Bridge(String),
    /// An existing tap device.
    Tap(String),
    /// QEMU's user-mode networking, restricted (a developer machine).
    User,
    /// No NIC.
    None,
}

/// How the guest gets its vsock device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum VsockMode {
    /// The kernel's vhost-vsock (`/dev/vhost-vsock`), as HostOS has it.
    Kernel {
        /// The guest CID.
        guest_cid: u32,
    },
    /// vhost-user-vsock: a `vhost-device-vsock` daemon on this socket.
    VhostUser {
        /// The daemon's vhost-user socket.
        socket: PathBuf,
    },
    /// No vsock device.
    None,
}

/// Everything about the VM that does not come from the guest disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// The accelerator.
    pub accel: Accel,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// The guest disk.
    pub disk: PathBuf,
    /// Its host cache mode (`none` for block devices, as IC; a file on a
    /// file system without O_DIRECT needs `writeback`).
    pub disk_cache: CacheMode,
    /// The guest NIC's MAC.
    pub mac: MacAddr6,
    /// Where the NIC goes.
    pub network: Network,
    /// The vsock device.
    pub vsock: VsockMode,
    /// The CONFIG media image.
    pub config_media: PathBuf,
    /// The serial console log.
    pub serial_log: PathBuf,
    /// The QMP socket.
    pub qmp_socket: PathBuf,
}

/// The QEMU description of the GuestOS VM: direct kernel boot of the
/// prepared slot, the guest disk on virtio, the CONFIG media as a removable
/// read-only USB disk, the NIC with the deterministic MAC, the serial
/// console into a log file, QMP, virtio-rng, a balloon and vsock.
pub fn vm_config(spec: &VmSpec, boot: &BootFiles) -> VmConfig {
    let mut vm = VmConfig::new(spec.accel, spec.memory_mib, spec.vcpus);
    vm.name = Some(VM_NAME.to_owned());
    vm.uuid = Some(VM_UUID.to_owned());
    vm.kernel = Some(DirectKernel {
        kernel: boot.kernel.clone(),
        initrd: Some(boot.initrd.clone()),
        cmdline: boot.boot_args.cmdline.clone(),
    });
    vm.disks.push(
        Disk::virtio(&spec.disk)
            .with_cache(spec.disk_cache)
            .with_discard(Discard::Unmap),
    );
    vm.disks.push(
        Disk::usb_removable(&spec.config_media)
            .read_only()
            .with_serial(CONFIG_SERIAL),
    );
    let backend = match &spec.network {
        Network::Bridge(bridge) => Some(NetBackend::Bridge {
            bridge: bridge.clone(),
        }),
        Network::Tap(ifname) => Some(NetBackend::Tap {
            ifname: ifname.clone(),
        }),
        Network::User => Some(NetBackend::User(UserNet::default())),
        Network::None => None,
    };
    if let Some(backend) = backend {
        vm.nics.push(Nic {
            mac: Some(spec.mac),
            backend,
        });
    }
    vm.serial = Some(Console::file(&spec.serial_log));
    vm.qmp_socket = Some(spec.qmp_socket.clone());
    vm.rng = true;
    vm.balloon = true;
    vm.vsock = match &spec.vsock {
        VsockMode::Kernel { guest_cid } => Some(Vsock::Vhost {
            guest_cid: *guest_cid,
        }),
        VsockMode::VhostUser { socket } => Some(Vsock::VhostUser {
            socket: socket.clone(),
        }),
        VsockMode::None => None,
    };
    vm
}

/// The deterministic MAC of the (first, default) GuestOS VM's NIC.
pub fn guestos_mac(config: &HostOSConfig) -> MacAddr6 {
    deterministic_mac(
        &config.icos_settings.mgmt_mac,
        config.icos_settings.deployment_environment.as_str(),
        NodeType::GuestOS,
        0,
    )
}

/// The VM resources the HostOS config asks for: memory in MiB, vCPUs, and
/// whether it asks for KVM (`vm_cpu: "kvm"`) rather than TCG (`"qemu"`).
pub fn resources(config: &HostOSConfig) -> (u64, u32, bool) {
    let r = config.hostos_settings.vm_resources();
    (
        u64::from(r.memory_gib) * 1024,
        r.nr_of_vcpus,
        r.cpu != "qemu",
    )
}

/// A VM start could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Reading the guest disk failed.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The GuestOS config could not be derived from the HostOS config.
    #[error("deriving the GuestOS config from the HostOS config: {0}")]
    Derive(#[from] icos_config::DeriveError),
    /// The CONFIG media could not be built.
    #[error("building the CONFIG media {}: {source}", path.display())]
    Media {
        /// The media image.
        path: PathBuf,
        /// The cause.
        source: icos_config_media::MediaError,
    },
    /// The QEMU command line could not be rendered.
    #[error("QEMU command line: {0}")]
    Qemu(#[from] icos_qemu::ConfigError),
}

impl LaunchError {
    /// Whether the input (disk content, config) is at fault.
    pub fn is_bad_input(&self) -> bool {
        match self {
            LaunchError::Prepare(e) => e.is_bad_input(),
            LaunchError::Derive(_) | LaunchError::Qemu(_) => true,
            LaunchError::Media { source, .. } => source.is_bad_input(),
        }
    }
}

/// A prepared VM start: the boot decision, the extracted files, the CONFIG
/// media, the QEMU description and argv, and the pending `grubenv` write.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The boot decision.
    pub plan: BootPlan,
    /// The extracted files.
    pub boot: BootFiles,
    /// The CONFIG media written.
    pub media: MediaSummary,
    /// The VM.
    pub vm: VmConfig,
    /// Its QEMU arguments.
    pub args: Vec<String>,
    /// The `grubenv` write to do before QEMU starts.
    pub grubenv: GrubenvUpdate,
}

/// Prepares one VM start, writing only into `work_dir` (the kernel, initrd
/// and CONFIG media): reads the disk's grubenv and boot partition, derives
/// the GuestOS config from the HostOS config, builds the CONFIG media and
/// renders the QEMU arguments. The guest disk itself is not written: call
/// [`GrubenvUpdate::commit`] on the result once it is to be booted.
pub fn prepare_launch(
    config: &HostOSConfig,
    extras: &Extras,
    spec: &VmSpec,
    work_dir: &Path,
) -> Result<Launch, LaunchError> {
    let mut disk = GuestDisk::open(&spec.disk)?;
    let plan = disk.plan_boot()?;
    tracing::info!(disk = %spec.disk.display(), "{}", describe(&plan));
    let boot = disk.extract(plan.slot(), work_dir)?;
    drop(disk);
    let guest = icos_config::generate_guestos_config(
        config,
        GuestVmType::Default,
        &GuestOsOptions::default(),
    )?;
    let media =
        icos_config_media::build_media(&guest, extras, &spec.config_media).map_err(|source| {
            LaunchError::Media {
                path: spec.config_media.clone(),
                source,
            }
        })?;
    let vm = vm_config(spec, &boot);
    let args = vm.to_args()?;
    let grubenv = GrubenvUpdate::new(&spec.disk, plan.clone());
    Ok(Launch {
        plan,
        boot,
        media,
        vm,
        args,
        grubenv,
    })
}

/// A disk's host cache mode: `none` (O_DIRECT, as IC) for a block device,
/// `writeback` for an image file, which may sit on a file system without
/// O_DIRECT (tmpfs).
pub fn cache_for(disk: &Path) -> CacheMode {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(disk) {
        Ok(m) if m.file_type().is_block_device() => CacheMode::None,
        _ => CacheMode::Writeback,
    }
}
