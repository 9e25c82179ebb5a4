//! The machine, as the NIC selection needs it.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{NetworkError, Result, is_candidate};

/// What [`crate::choose`] asks of the machine.
pub trait Host {
    /// The network interfaces' names, sorted.
    fn interfaces(&mut self) -> Result<Vec<String>>;
    /// Brings `nic` up, so that its carrier can be read.
    fn link_up(&mut self, nic: &str) -> Result<()>;
    /// Whether `nic` has a carrier.
    fn carrier(&mut self, nic: &str) -> bool;
    /// `nic`'s speed in Mbit/s, when its driver knows it.
    fn speed(&mut self, nic: &str) -> Option<u32>;
    /// Whether `gateway` answers a ping sent from `address` on `nic`; the
    /// address is put on `nic` for the test and taken off again.
    fn reaches_gateway(
        &mut self,
        nic: &str,
        address: Ipv6Addr,
        prefix_length: u8,
        gateway: Ipv6Addr,
    ) -> Result<bool>;
}

/// The real machine: a sysfs directory of network interfaces (normally
/// `/sys/class/net`), `ip` and busybox's `ping`.
#[derive(Debug, Clone)]
pub struct SystemHost {
    class_net: PathBuf,
    settle: Duration,
    carrier_wait: Duration,
    ping_tries: u32,
    ping_interval: Duration,
    busybox: PathBuf,
    ipv6_conf: PathBuf,
    up_since: Option<Instant>,
}

impl SystemHost {
    /// The machine whose interfaces are listed in `class_net`, with
    /// IC-OS's timings: 10 pings of the gateway per NIC, 2 s apart; up to
    /// 30 s for a candidate NIC to appear (udev loads drivers and renames
    /// interfaces early in boot) and 10 s after the links came up for
    /// carriers.
    pub fn new(class_net: impl Into<PathBuf>) -> Self {
        SystemHost {
            class_net: class_net.into(),
            settle: Duration::from_secs(30),
            carrier_wait: Duration::from_secs(10),
            ping_tries: 10,
            ping_interval: Duration::from_secs(2),
            busybox: PathBuf::from("/bin/busybox"),
            ipv6_conf: PathBuf::from("/proc/sys/net/ipv6/conf"),
            up_since: None,
        }
    }

    /// Where the kernel's per-interface IPv6 settings are
    /// (`/proc/sys/net/ipv6/conf`).
    pub fn with_ipv6_conf(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ipv6_conf = dir.into();
        self
    }

    /// Keeps the kernel from configuring `nic` from router advertisements:
    /// a NIC that ends up as a port of `br6` must have no address or route
    /// of its own, or the host's own traffic may leave through the port
    /// while the bridge takes the answers. Best effort: a kernel without
    /// IPv6 has nothing to configure.
    pub(crate) fn no_autoconf(&self, nic: &str) {
        for key in ["accept_ra", "autoconf"] {
            let path = self.ipv6_conf.join(nic).join(key);
            if let Err(e) = std::fs::write(&path, "0\n") {
                tracing::warn!(path = %path.display(), error = %e, "could not turn IPv6 autoconfiguration off");
            }
        }
    }

    /// Pings per NIC and the pause between them.
    pub fn with_pings(mut self, tries: u32, interval: Duration) -> Self {
        self.ping_tries = tries.max(1);
        self.ping_interval = interval;
        self
    }

    /// How long to wait for a candidate NIC, and for carriers.
    pub fn with_waits(mut self, settle: Duration, carrier: Duration) -> Self {
        self.settle = settle;
        self.carrier_wait = carrier;
        self
    }

    /// The busybox binary that pings.
    pub fn with_busybox(mut self, busybox: impl Into<PathBuf>) -> Self {
        self.busybox = busybox.into();
        self
    }
}

fn run(program: &str, args: &[&str]) -> Result<std::process::Output> {
    let command = format!("{program} {}", args.join(" "));
    Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NetworkError::Command {
            command,
            reason: e.to_string(),
        })
}

fn run_ok(program: &str, args: &[&str]) -> Result<()> {
    let out = run(program, args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Command {
            command: format!("{program} {}", args.join(" ")),
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

impl SystemHost {
    fn read(&self, nic: &str, attr: &str) -> Option<String> {
        std::fs::read_to_string(self.class_net.join(nic).join(attr))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn names(&self) -> Result<Vec<String>> {
        let dir = std::fs::read_dir(&self.class_net).map_err(|source| NetworkError::Io {
            path: self.class_net.clone(),
            source,
        })?;
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }
}

impl Host for SystemHost {
    fn interfaces(&mut self) -> Result<Vec<String>> {
        let deadline = Instant::now() + self.settle;
        loop {
            let names = self.names()?;
            if names.iter().any(|n| is_candidate(n)) || Instant::now() >= deadline {
                return Ok(names);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn link_up(&mut self, nic: &str) -> Result<()> {
        self.no_autoconf(nic);
        self.up_since.get_or_insert_with(Instant::now);
        run_ok("ip", &["link", "set", "dev", nic, "up"])
    }

    fn carrier(&mut self, nic: &str) -> bool {
        // Links negotiate for a few seconds after they come up; all of them
        // share one wait.
        let deadline = self.up_since.unwrap_or_else(Instant::now) + self.carrier_wait;
        loop {
            if self.read(nic, "carrier").as_deref() == Some("1") {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn speed(&mut self, nic: &str) -> Option<u32> {
        // Unknown speeds read as -1 or fail with EINVAL.
        self.read(nic, "speed")?.parse::<u32>().ok()
    }

    fn reaches_gateway(
        &mut self,
        nic: &str,
        address: Ipv6Addr,
        prefix_length: u8,
        gateway: Ipv6Addr,
    ) -> Result<bool> {
        let cidr = format!("{address}/{prefix_length}");
        run_ok("ip", &["-6", "addr", "add", &cidr, "dev", nic, "nodad"])?;
        let busybox = self.busybox.to_string_lossy().into_owned();
        let gw = gateway.to_string();
        let mut reached = false;
        for attempt in 1..=self.ping_tries {
            let out = run(
                &busybox,
                &["ping", "-6", "-c", "1", "-W", "3", "-I", nic, &gw],
            )?;
            if out.status.success() {
                reached = true;
                break;
            }
            tracing::info!(%nic, %gateway, attempt, "gateway did not answer yet");
            if attempt < self.ping_tries {
                std::thread::sleep(self.ping_interval);
            }
        }
        run_ok("ip", &["-6", "addr", "del", &cidr, "dev", nic])?;
        Ok(reached)
    }
}
