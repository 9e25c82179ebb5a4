//! The NTP server the machine's clock check needs.
//!
//! The installer wants chrony synchronised before it installs. On QEMU's
//! user network the guest's NTP packets to 10.0.2.2:123 arrive at this
//! machine's 127.0.0.1:123, where [`NtpServer`] runs `chronyd` serving
//! this machine's clock: `-x` (never touch the host clock), `-d` (stay in
//! the foreground, log to stderr), `-u root` (no privilege drop, so it can
//! write its files in the run folder), and a config of its own
//! ([`chrony_conf`]): `local stratum 8`, `allow all`, bound to 127.0.0.1
//! port 123, no command port or socket, pid and drift files in the run
//! folder. [`NtpServer::start`] returns once a real NTP request gets a
//! synchronised answer; dropping the server kills chronyd.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;

/// The NTP port.
pub const NTP_PORT: u16 = 123;
/// How long chronyd gets to answer a first request.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The chronyd config: serve this machine's clock on 127.0.0.1:`port`,
/// with its files in `dir`.
pub fn chrony_conf(dir: &Path, port: u16) -> String {
    format!(
        "# chronyd serving this machine's clock to a QEMU machine (10.0.2.2:123).\n\
         local stratum 8\n\
         allow all\n\
         bindaddress 127.0.0.1\n\
         port {port}\n\
         cmdport 0\n\
         bindcmdaddress /\n\
         pidfile {}\n\
         driftfile {}\n",
        dir.join("chronyd.pid").display(),
        dir.join("chronyd.drift").display(),
    )
}

/// A running chronyd, killed on drop.
#[derive(Debug)]
pub struct NtpServer {
    child: Child,
    config: PathBuf,
    log: PathBuf,
}

/// A client request: LI 0, version 4, mode 3 (client), the rest zero.
fn request() -> [u8; 48] {
    let mut packet = [0u8; 48];
    packet[0] = 0x23;
    packet
}

/// Whether `reply` is a server answer (mode 4) from a synchronised clock
/// (leap indicator not 3, stratum 1 to 15).
pub fn is_synchronised_reply(reply: &[u8]) -> bool {
    reply.len() >= 48 && reply[0] & 0x07 == 4 && reply[0] >> 6 != 3 && (1..16).contains(&reply[1])
}

impl NtpServer {
    /// Writes the config into `dir` and starts `chronyd` (in a process
    /// group of its own), its log in `dir/chronyd.log`; waits until it
    /// answers on 127.0.0.1:`port`.
    pub fn start(chronyd: &Path, dir: &Path, port: u16) -> Result<NtpServer, Error> {
        let config = dir.join("chrony.conf");
        std::fs::write(&config, chrony_conf(dir, port)).map_err(Error::io("writing", &config))?;
        let log = dir.join("chronyd.log");
        let log_file = File::create(&log).map_err(Error::io("creating", &log))?;
        let err = |reason: String| Error::Ntp {
            config: config.clone(),
            reason,
        };
        let child = Command::new(chronyd)
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(&config)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| {
                err(format!(
                    "cannot start {}: {e} (install the Debian package chrony: ./scripts/prereqs.sh)",
                    chronyd.display()
                ))
            })?;
        let mut server = NtpServer { child, config, log };
        server.wait_ready(port)?;
        Ok(server)
    }

    fn wait_ready(&mut self, port: u16) -> Result<(), Error> {
        let config = self.config.clone();
        let log = self.log.clone();
        let err = |reason: String, log: &Path| Error::Ntp {
            config: config.clone(),
            reason: format!(
                "{reason}; its log {}: {}",
                log.display(),
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or("(empty)")
            ),
        };
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| err(format!("a client socket: {e}"), &log))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .map_err(|e| err(format!("a client socket: {e}"), &log))?;
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = [0u8; 128];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(err(format!("chronyd exited ({status})"), &log));
            }
            // Refused until chronyd binds the port; no answer until then.
            let _ = socket.send_to(&request(), server);
            if let Ok((n, from)) = socket.recv_from(&mut buf)
                && from == server
                && is_synchronised_reply(&buf[..n])
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(err(
                    format!(
                        "no synchronised NTP answer on {server} within {} s \
                         (is another NTP server holding port {port}?)",
                        READY_TIMEOUT.as_secs()
                    ),
                    &log,
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// chronyd's pid (also its process group).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its config file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for NtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_serves_only_loopback_without_control_channels() {
        let conf = chrony_conf(Path::new("/run/x"), 123);
        let lines: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "local stratum 8",
                "allow all",
                "bindaddress 127.0.0.1",
                "port 123",
                "cmdport 0",
                "bindcmdaddress /",
                "pidfile /run/x/chronyd.pid",
                "driftfile /run/x/chronyd.drift",
            ]
        );
    }

    /// The real chronyd (scripts/prereqs.sh installs it; needs root, like
    /// `icos run setupos`), on a free port instead of 123.
    #[test]
    fn chronyd_serves_synchronised_time_and_stops_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let chronyd = ["/usr/sbin/chronyd", "/sbin/chronyd"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .expect("chronyd is missing: install the Debian package chrony (./scripts/prereqs.sh)");
        let server = NtpServer::start(chronyd, dir.path(), port).unwrap();
        let pid = server.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        let pidfile = std::fs::read_to_string(dir.path().join("chronyd.pid")).unwrap();
        assert_eq!(pidfile.trim(), pid.to_string());
        drop(server);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn only_synchronised_server_replies_count() {
        let mut reply = [0u8; 48];
        reply[0] = 0x24; // LI 0, VN 4, mode 4
        reply[1] = 8;
        assert!(is_synchronised_reply(&reply));
        reply[0] = 0xe4; // LI 3: unsynchronised
        assert!(!is_synchronised_reply(&reply));
        reply[0] = 0x23; // a client packet
        assert!(!is_synchronised_reply(&reply));
        reply[0] = 0x24;
        reply[1] = 0; // kiss-o'-death / unspecified stratum
        assert!(!is_synchronised_reply(&reply));
        assert!(!is_synchronised_reply(&reply[..47]));
        assert_eq!(request()[0], 0x23);
    }
}
