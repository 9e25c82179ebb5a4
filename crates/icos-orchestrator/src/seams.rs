//! The side effects the orchestrator asks for, behind traits: the disk, the
//! reboot, and the HostOS agent.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use icos_slots::{Device, SlotDisk, SlotsError};
use icos_vsock::protocol::{Command as VsockCommand, Payload, UpgradeData};
use icos_vsock::transport::Endpoint;

/// Opens the GuestOS disk for the A/B operations.
pub trait DiskSource {
    /// The device type.
    type Dev: Device;
    /// Opens the disk for reading and writing.
    fn open(&mut self) -> Result<SlotDisk<Self::Dev>, SlotsError>;
    /// The disk's name, for the status.
    fn name(&self) -> String;
}

/// A disk (block device or image file) at a path.
#[derive(Debug, Clone)]
pub struct DiskPath(pub PathBuf);

impl DiskSource for DiskPath {
    type Dev = std::fs::File;
    fn open(&mut self) -> Result<SlotDisk<std::fs::File>, SlotsError> {
        icos_slots::open(&self.0, true)
    }
    fn name(&self) -> String {
        self.0.display().to_string()
    }
}

/// Reboots the machine.
pub trait Rebooter {
    /// Asks for a reboot; returns once asked.
    fn reboot(&mut self) -> Result<(), String>;
}

/// `systemctl reboot`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemctlReboot;

impl Rebooter for SystemctlReboot {
    fn reboot(&mut self) -> Result<(), String> {
        let status = Command::new("systemctl")
            .arg("reboot")
            .status()
            .map_err(|e| format!("running systemctl reboot: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("systemctl reboot: {status}"))
        }
    }
}

/// The HostOS agent, reached over vsock.
pub trait HostAgent {
    /// The running HostOS version (`GetHostOSVersion`).
    fn hostos_version(&mut self) -> Result<String, String>;
    /// Asks HostOS to download, verify and install `url` with SHA-256
    /// `sha256` (`upgrade`); HostOS reboots itself once committed.
    fn upgrade(&mut self, url: &str, sha256: &str) -> Result<(), String>;
}

/// The HostOS agent over AF_VSOCK (or a Unix socket), with IC's protocol.
#[derive(Debug, Clone)]
pub struct VsockHostAgent {
    /// Where the agent listens.
    pub endpoint: Endpoint,
    /// This guest's CID, put in each request.
    pub sender_cid: u32,
    /// How long to wait for an answer (an upgrade downloads first).
    pub timeout: Duration,
}

impl VsockHostAgent {
    /// The agent at the host's CID and IC's port, as seen from the guest.
    pub fn standard() -> Self {
        VsockHostAgent {
            endpoint: Endpoint::Vsock {
                cid: icos_vsock::protocol::HOST_CID,
                port: icos_vsock::protocol::PORT,
            },
            sender_cid: icos_vsock::protocol::GUEST_CID,
            timeout: icos_vsock::client::CLIENT_TIMEOUT,
        }
    }

    fn send(&self, command: VsockCommand) -> Result<Payload, String> {
        let name = command.name();
        icos_vsock::client::send(&self.endpoint, self.sender_cid, command, self.timeout)
            .map_err(|e| format!("{name}: {e}"))?
            .map_err(|e| format!("{name} refused by {}: {e}", self.endpoint))
    }
}

impl HostAgent for VsockHostAgent {
    fn hostos_version(&mut self) -> Result<String, String> {
        match self.send(VsockCommand::GetHostOSVersion)? {
            Payload::HostOSVersion(v) => Ok(v.trim().to_owned()),
            other => Err(format!("GetHostOSVersion: unexpected answer {other}")),
        }
    }

    fn upgrade(&mut self, url: &str, sha256: &str) -> Result<(), String> {
        self.send(VsockCommand::Upgrade(UpgradeData {
            url: url.to_owned(),
            target_hash: sha256.to_owned(),
        }))
        .map(|_| ())
    }
}
