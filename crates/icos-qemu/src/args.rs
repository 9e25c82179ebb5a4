//! Rendering a [`VmConfig`] to a QEMU argv: pure and deterministic (the
//! same config always gives the same arguments in the same order).
//!
//! Order: identity, machine and CPU, global switches, firmware and kernel,
//! consoles and QMP, disks, NICs, other devices, extra arguments.

use std::path::{Path, PathBuf};

use crate::config::{
    Accel, Chardev, Console, Cpu, Disk, DiskBus, Firmware, NetBackend, Nic, Uefi, VmConfig, Vsock,
};

/// The longest Unix socket path (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The longest virtio-blk serial number.
pub const MAX_DISK_SERIAL: usize = 20;

/// The longest Linux interface name.
pub const MAX_IFNAME: usize = 15;

/// A [`VmConfig`] that cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A field broke a rule.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, e.g. `disks[1].serial`.
        field: String,
        /// The rule it broke.
        reason: String,
    },
    /// A path is not UTF-8 (QEMU option strings are text).
    #[error("{field}: path {} is not valid UTF-8", path.display())]
    NonUtf8Path {
        /// The field.
        field: String,
        /// The path.
        path: PathBuf,
    },
    /// A Unix socket path is too long for `sun_path`.
    #[error("{field}: socket path {} is {len} bytes, longer than {MAX_SOCKET_PATH}", path.display())]
    SocketPathTooLong {
        /// The field.
        field: String,
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Escapes a value inside a QEMU `key=value,…` option string: commas are
/// doubled.
pub fn escape_opt(value: &str) -> String {
    value.replace(',', ",,")
}

fn path_str<'a>(field: &str, path: &'a Path) -> Result<&'a str, ConfigError> {
    let s = path.to_str().ok_or_else(|| ConfigError::NonUtf8Path {
        field: field.to_owned(),
        path: path.to_owned(),
    })?;
    if s.is_empty() {
        return Err(invalid(field, "path is empty"));
    }
    Ok(s)
}

/// A path for an option string: UTF-8, escaped.
fn opt_path(field: &str, path: &Path) -> Result<String, ConfigError> {
    path_str(field, path).map(escape_opt)
}

fn socket_path(field: &str, path: &Path) -> Result<String, ConfigError> {
    let s = path_str(field, path)?;
    if s.len() > MAX_SOCKET_PATH {
        return Err(ConfigError::SocketPathTooLong {
            field: field.to_owned(),
            path: path.to_owned(),
            len: s.len(),
        });
    }
    Ok(escape_opt(s))
}

fn check_ifname(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > MAX_IFNAME {
        return Err(invalid(
            field,
            format!("interface name '{name}' must be 1 to {MAX_IFNAME} bytes"),
        ));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ',' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            field,
            format!("interface name '{name}' contains '/', ',', ':' or whitespace"),
        ));
    }
    Ok(())
}

fn check_uuid(uuid: &str) -> Result<(), ConfigError> {
    let groups: Vec<&str> = uuid.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == lens.len()
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "uuid",
            format!("'{uuid}' is not a UUID (8-4-4-4-12 hex digits)"),
        ))
    }
}

fn cpu_arg(cpu: &Cpu, accel: Accel) -> Result<String, ConfigError> {
    let (model, flags) = match cpu {
        Cpu::Max => ("max", &[][..]),
        Cpu::Host { flags } => {
            if accel != Accel::Kvm {
                return Err(invalid("cpu", "'host' needs the KVM accelerator"));
            }
            ("host", flags.as_slice())
        }
        Cpu::Named { model, flags } => {
            if model.is_empty() || model.contains(',') {
                return Err(invalid("cpu", format!("bad CPU model name '{model}'")));
            }
            (model.as_str(), flags.as_slice())
        }
    };
    let mut arg = model.to_owned();
    for flag in flags {
        if flag.is_empty() || flag.contains(',') {
            return Err(invalid("cpu", format!("bad CPU flag '{flag}'")));
        }
        arg.push(',');
        arg.push_str(flag);
    }
    Ok(arg)
}

/// The `-chardev` value for a console backend with id `id`.
fn chardev_arg(field: &str, id: &str, console: &Console) -> Result<String, ConfigError> {
    let mut arg = match &console.backend {
        Chardev::File { path } => {
            format!(
                "file,id={id},path={}",
                opt_path(&format!("{field}.path"), path)?
            )
        }
        Chardev::Socket { path } => format!(
            "socket,id={id},path={},server=on,wait=off",
            socket_path(&format!("{field}.path"), path)?
        ),
        Chardev::Pty => format!("pty,id={id}"),
        Chardev::Null => format!("null,id={id}"),
    };
    if let Some(log) = &console.log_file {
        arg.push_str(",logfile=");
        arg.push_str(&opt_path(&format!("{field}.log_file"), log)?);
    }
    Ok(arg)
}

fn push(args: &mut Vec<String>, flag: &str, value: impl Into<String>) {
    args.push(flag.to_owned());
    args.push(value.into());
}

fn disk_args(args: &mut Vec<String>, index: usize, disk: &Disk) -> Result<(), ConfigError> {
    let field = format!("disks[{index}]");
    let id = format!("disk{index}");
    let mut drive = format!(
        "file={},format={},if=none,id={id}",
        opt_path(&format!("{field}.path"), &disk.path)?,
        disk.format.as_str()
    );
    if disk.read_only {
        drive.push_str(",readonly=on");
    }
    if let Some(cache) = disk.cache {
        drive.push_str(",cache=");
        drive.push_str(cache.as_str());
    }
    if let Some(discard) = disk.discard {
        drive.push_str(",discard=");
        drive.push_str(discard.as_str());
    }
    push(args, "-drive", drive);

    let mut device = match disk.bus {
        DiskBus::Virtio => format!("virtio-blk-pci,drive={id}"),
        DiskBus::Usb { removable } => format!(
            "usb-storage,bus=usb.0,drive={id},removable={}",
            if removable { "on" } else { "off" }
        ),
    };
    if let Some(serial) = &disk.serial {
        if serial.is_empty()
            || serial.len() > MAX_DISK_SERIAL
            || !serial.chars().all(|c| c.is_ascii_graphic() && c != ',')
        {
            return Err(invalid(
                format!("{field}.serial"),
                format!(
                    "'{serial}' must be 1 to {MAX_DISK_SERIAL} printable ASCII characters without spaces or commas"
                ),
            ));
        }
        device.push_str(",serial=");
        device.push_str(serial);
    }
    if let Some(boot_index) = disk.boot_index {
        device.push_str(&format!(",bootindex={boot_index}"));
    }
    push(args, "-device", device);
    Ok(())
}

fn nic_args(args: &mut Vec<String>, index: usize, nic: &Nic) -> Result<(), ConfigError> {
    let field = format!("nics[{index}]");
    let id = format!("net{index}");
    let netdev = match &nic.backend {
        NetBackend::User(user) => {
            let mut s = format!("user,id={id}");
            if user.restrict {
                s.push_str(",restrict=on");
            }
            if let Some(v6) = &user.ipv6 {
                s.push_str(&format!(
                    ",ipv6-net={}/{},ipv6-host={}",
                    v6.prefix, v6.prefix_len, v6.host
                ));
            }
            for fwd in &user.host_forwards {
                let host = fwd.host_addr.map(|a| a.to_string()).unwrap_or_default();
                let guest = fwd.guest_addr.map(|a| a.to_string()).unwrap_or_default();
                s.push_str(&format!(
                    ",hostfwd={}:{host}:{}-{guest}:{}",
                    fwd.protocol.as_str(),
                    fwd.host_port,
                    fwd.guest_port
                ));
            }
            for fwd in &user.guest_forwards {
                s.push_str(&format!(
                    ",guestfwd=tcp:{}:{}-tcp:{}:{}",
                    fwd.guest_addr, fwd.guest_port, fwd.host_addr, fwd.host_port
                ));
            }
            s
        }
        NetBackend::Tap { ifname } => {
            check_ifname(&format!("{field}.ifname"), ifname)?;
            format!("tap,id={id},ifname={ifname},script=no,downscript=no")
        }
        NetBackend::Bridge { bridge } => {
            check_ifname(&format!("{field}.bridge"), bridge)?;
            format!("bridge,id={id},br={bridge}")
        }
    };
    push(args, "-netdev", netdev);
    let mut device = format!("virtio-net-pci,netdev={id}");
    if let Some(mac) = nic.mac {
        let b = mac.as_bytes();
        device.push_str(&format!(
            ",mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        ));
    }
    push(args, "-device", device);
    Ok(())
}

fn uefi_args(args: &mut Vec<String>, uefi: &Uefi) -> Result<(), ConfigError> {
    if uefi.code == uefi.vars {
        return Err(invalid(
            "firmware.vars",
            "the variable store must be a separate, private copy, not the code file",
        ));
    }
    push(
        args,
        "-drive",
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            opt_path("firmware.code", &uefi.code)?
        ),
    );
    push(
        args,
        "-drive",
        format!(
            "if=pflash,format=raw,unit=1,file={}",
            opt_path("firmware.vars", &uefi.vars)?
        ),
    );
    Ok(())
}

impl VmConfig {
    /// Renders the QEMU arguments (without the program name).
    ///
    /// Pure: nothing on disk is read or checked; the same config always
    /// gives the same argv. Fails when a field breaks a rule (see
    /// [`ConfigError`]).
    pub fn to_args(&self) -> Result<Vec<String>, ConfigError> {
        let mut args = Vec::new();

        if self.memory_mib == 0 {
            return Err(invalid("memory_mib", "must be at least 1"));
        }
        if !(1..=1024).contains(&self.vcpus) {
            return Err(invalid("vcpus", "must be between 1 and 1024"));
        }

        // Identity.
        if let Some(name) = &self.name {
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(invalid(
                    "name",
                    "must be non-empty, without control characters",
                ));
            }
            push(&mut args, "-name", format!("guest={}", escape_opt(name)));
        }
        if let Some(uuid) = &self.uuid {
            check_uuid(uuid)?;
            push(&mut args, "-uuid", uuid.clone());
        }

        // Machine, memory, CPU.
        let mut machine = self.machine.as_str().to_owned();
        if self.needs_shared_memory() {
            push(
                &mut args,
                "-object",
                format!(
                    "memory-backend-memfd,id=mem,size={}M,share=on",
                    self.memory_mib
                ),
            );
            machine.push_str(",memory-backend=mem");
        }
        push(&mut args, "-machine", machine);
        push(
            &mut args,
            "-accel",
            match self.accel {
                Accel::Tcg => "tcg,thread=multi",
                Accel::Kvm => "kvm",
            },
        );
        push(&mut args, "-cpu", cpu_arg(&self.cpu, self.accel)?);
        push(&mut args, "-m", self.memory_mib.to_string());
        push(&mut args, "-smp", self.vcpus.to_string());

        // Global switches: no default devices, no display, no monitor on
        // stdio.
        args.push("-nodefaults".to_owned());
        args.push("-nographic".to_owned());
        if self.no_reboot {
            args.push("-no-reboot".to_owned());
        }

        // Firmware and kernel.
        match &self.firmware {
            Firmware::Bios => {}
            Firmware::Uefi(uefi) => uefi_args(&mut args, uefi)?,
        }
        if let Some(kernel) = &self.kernel {
            push(
                &mut args,
                "-kernel",
                path_str("kernel.kernel", &kernel.kernel)?,
            );
            if let Some(initrd) = &kernel.initrd {
                push(&mut args, "-initrd", path_str("kernel.initrd", initrd)?);
            }
            if kernel.cmdline.contains('\0') {
                return Err(invalid("kernel.cmdline", "contains a NUL byte"));
            }
            push(&mut args, "-append", kernel.cmdline.clone());
        }

        // Consoles and QMP.
        if let Some(serial) = &self.serial {
            push(
                &mut args,
                "-chardev",
                chardev_arg("serial", "serial0", serial)?,
            );
            push(&mut args, "-serial", "chardev:serial0");
        }
        if let Some(console) = &self.virtio_console {
            push(&mut args, "-device", "virtio-serial-pci,id=virtio-serial0");
            push(
                &mut args,
                "-chardev",
                chardev_arg("virtio_console", "console0", console)?,
            );
            push(
                &mut args,
                "-device",
                "virtconsole,bus=virtio-serial0.0,chardev=console0",
            );
        }
        if let Some(qmp) = &self.qmp_socket {
            push(
                &mut args,
                "-chardev",
                format!(
                    "socket,id=qmp,path={},server=on,wait=off",
                    socket_path("qmp_socket", qmp)?
                ),
            );
            push(&mut args, "-mon", "chardev=qmp,mode=control");
        }

        // Disks.
        if self
            .disks
            .iter()
            .any(|d| matches!(d.bus, DiskBus::Usb { .. }))
        {
            push(&mut args, "-device", "qemu-xhci,id=usb");
        }
        for (i, disk) in self.disks.iter().enumerate() {
            disk_args(&mut args, i, disk)?;
        }

        // NICs.
        for (i, nic) in self.nics.iter().enumerate() {
            nic_args(&mut args, i, nic)?;
        }

        // Other devices.
        if self.rng {
            push(
                &mut args,
                "-object",
                "rng-random,id=rng0,filename=/dev/urandom",
            );
            push(&mut args, "-device", "virtio-rng-pci,rng=rng0");
        }
        match &self.vsock {
            None => {}
            Some(Vsock::Vhost { guest_cid }) => {
                if *guest_cid < 3 || *guest_cid == u32::MAX {
                    return Err(invalid(
                        "vsock.guest_cid",
                        format!("{guest_cid} is reserved; guest CIDs start at 3"),
                    ));
                }
                push(
                    &mut args,
                    "-device",
                    format!("vhost-vsock-pci,guest-cid={guest_cid}"),
                );
            }
            Some(Vsock::VhostUser { socket }) => {
                push(
                    &mut args,
                    "-chardev",
                    format!(
                        "socket,id=vsock0,path={}",
                        socket_path("vsock.socket", socket)?
                    ),
                );
                push(&mut args, "-device", "vhost-user-vsock-pci,chardev=vsock0");
            }
        }
        if self.balloon {
            push(&mut args, "-device", "virtio-balloon-pci");
        }

        args.extend(self.extra_args.iter().cloned());
        if let Some(bad) = args.iter().find(|a| a.contains('\0')) {
            return Err(invalid(
                "extra_args",
                format!("'{bad}' contains a NUL byte"),
            ));
        }
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DirectKernel, NetBackend, UserNet};

    fn direct() -> VmConfig {
        let mut vm = VmConfig::new(Accel::Tcg, 512, 2);
        vm.kernel = Some(DirectKernel {
            kernel: "/k".into(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
        });
        vm.serial = Some(Console::file("/tmp/serial.log"));
        vm
    }

    fn err(vm: &VmConfig) -> String {
        match vm.to_args() {
            Ok(args) => panic!("expected an error, got {args:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn escapes_commas_in_paths() {
        let mut vm = direct();
        vm.disks.push(Disk::virtio("/a,b.img"));
        let args = vm.to_args().unwrap_or_default();
        assert!(args.contains(&"file=/a,,b.img,format=raw,if=none,id=disk0".to_owned()));
    }

    #[test]
    fn rendering_is_deterministic() {
        let vm = direct();
        assert_eq!(vm.to_args(), vm.to_args());
    }

    #[test]
    fn rejects_bad_fields() {
        let mut vm = direct();
        vm.vcpus = 0;
        assert_eq!(err(&vm), "vcpus: must be between 1 and 1024");

        let mut vm = direct();
        vm.disks
            .push(Disk::virtio("/d").with_serial("a-serial-longer-than-20"));
        assert!(err(&vm).starts_with("disks[0].serial:"), "{}", err(&vm));

        let mut vm = direct();
        vm.qmp_socket = Some(PathBuf::from(format!("/{}", "s".repeat(120))));
        assert!(err(&vm).contains("longer than 107"), "{}", err(&vm));

        let mut vm = direct();
        vm.cpu = Cpu::Host { flags: vec![] };
        assert_eq!(err(&vm), "cpu: 'host' needs the KVM accelerator");

        let mut vm = direct();
        vm.vsock = Some(Vsock::Vhost { guest_cid: 2 });
        assert!(err(&vm).starts_with("vsock.guest_cid:"));

        let mut vm = direct();
        vm.nics.push(Nic {
            mac: None,
            backend: NetBackend::Tap {
                ifname: "a-very-long-tap-name".into(),
            },
        });
        assert!(err(&vm).starts_with("nics[0].ifname:"));

        let mut vm = direct();
        vm.uuid = Some("not-a-uuid".into());
        assert!(err(&vm).starts_with("uuid:"));

        let mut vm = direct();
        vm.firmware = Firmware::Uefi(Uefi {
            code: "/c.fd".into(),
            vars: "/c.fd".into(),
        });
        assert!(err(&vm).starts_with("firmware.vars:"));
    }

    #[test]
    fn user_net_defaults_to_restrict() {
        let mut vm = direct();
        vm.nics.push(Nic {
            mac: None,
            backend: NetBackend::User(UserNet::default()),
        });
        let args = vm.to_args().unwrap_or_default();
        assert!(args.contains(&"user,id=net0,restrict=on".to_owned()));
    }

    #[test]
    fn user_net_takes_the_node_ipv6_network_with_the_gateway_as_host() {
        let mut vm = direct();
        vm.nics.push(Nic {
            mac: None,
            backend: NetBackend::User(UserNet {
                restrict: false,
                ipv6: Some(crate::config::UserIpv6 {
                    prefix: "2001:db8:1234:56::"
                        .parse()
                        .unwrap_or(std::net::Ipv6Addr::UNSPECIFIED),
                    prefix_len: 64,
                    host: "2001:db8:1234:56::1"
                        .parse()
                        .unwrap_or(std::net::Ipv6Addr::UNSPECIFIED),
                }),
                ..UserNet::default()
            }),
        });
        let args = vm.to_args().unwrap_or_default();
        assert!(
            args.contains(
                &"user,id=net0,ipv6-net=2001:db8:1234:56::/64,ipv6-host=2001:db8:1234:56::1"
                    .to_owned()
            ),
            "{args:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn rejects_non_utf8_paths() {
        use std::os::unix::ffi::OsStrExt;
        let mut vm = direct();
        vm.disks
            .push(Disk::virtio(std::ffi::OsStr::from_bytes(b"/\xff")));
        assert!(matches!(vm.to_args(), Err(ConfigError::NonUtf8Path { .. })));
    }
}
