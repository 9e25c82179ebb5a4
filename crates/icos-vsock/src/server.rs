//! The host side: accept connections, check the sender, run allow-listed
//! commands, answer.
//!
//! Each connection carries one request (one read of at most
//! [`MAX_MESSAGE_BYTES`]) and gets one response; reads and writes time out
//! after [`AgentConfig::timeout`] (IC: 5 s). Connections are served on their
//! own threads, at most [`MAX_CONCURRENT`] at a time; one more is answered
//! with an `Err` and closed.
//!
//! # Commands
//!
//! | command | effect |
//! |---|---|
//! | `GetVsockProtocol` | `HostOSVsockVersion` 1.0.0 |
//! | `GetHostOSVersion` | the trimmed content of the version file |
//! | `set-node-id` | writes the node id (plus a newline) to the node-id file |
//! | `notify` | answers at once, then writes the message to the tty min(count, 10) times, an interval apart |
//! | `upgrade` | downloads and verifies the image ([`crate::upgrade`]); with an [`Upgrader`], also installs it into HostOS's spare slot, commits and reboots ([`crate::hostos_upgrade`]) |
//! | `attach-hsm`, `detach-hsm` | `Err("not supported on this host: …")`: this host passes no USB HSM through |
//! | `StartUpgradeGuestVM` | `Err("not supported on this host: …")`: the SEV-SNP upgrade VM is not part of this HostOS |
//!
//! A request whose `sender_cid` is not the peer's CID is refused, and so is
//! a peer other than [`AgentConfig::guest_cid`] (IC serves only CID 3). A request
//! that cannot be parsed gets an `Err`; such requests are logged at most
//! [`AgentConfig::log_per_second`] times a second, the rest only counted.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::hostos_upgrade::Upgrader;
use crate::protocol::{
    self, Command, GUEST_CID, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, Payload, ProtocolError, Response,
};
use crate::transport::{Connection, Listener};
use crate::upgrade;

/// The most connections served at once.
pub const MAX_CONCURRENT: usize = 16;
/// The most times `notify` prints one message.
pub const MAX_NOTIFY_COUNT: u32 = 10;
/// The most notifications printed at once; more get `Err("busy: …")`.
pub const MAX_CONCURRENT_NOTIFY: usize = 4;

/// Where the agent reads and writes, and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The HostOS version file (`GetHostOSVersion`).
    pub version_file: PathBuf,
    /// Where `set-node-id` writes the node id.
    pub node_id_file: PathBuf,
    /// Where `notify` prints (the console).
    pub tty: PathBuf,
    /// The pause between two `notify` prints.
    pub notify_interval: Duration,
    /// Where `upgrade` leaves the verified image and marker.
    pub upgrade_dir: PathBuf,
    /// The `upgrade` download timeout.
    pub download_timeout: Duration,
    /// The read/write timeout of a connection.
    pub timeout: Duration,
    /// The Prometheus textfile, if any.
    pub metrics_file: Option<PathBuf>,
    /// How many bad requests are logged per second at most.
    pub log_per_second: u32,
    /// The only CID served (IC: 3, the first GuestOS VM); `None` serves any
    /// CID that passes the sender check.
    pub guest_cid: Option<u32>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            version_file: PathBuf::from("/opt/ic/share/version.txt"),
            node_id_file: PathBuf::from("/boot/config/node-id"),
            tty: PathBuf::from("/dev/tty1"),
            notify_interval: Duration::from_secs(2),
            upgrade_dir: PathBuf::from("/var/lib/icos/hostos-upgrade"),
            download_timeout: upgrade::DOWNLOAD_TIMEOUT,
            timeout: Duration::from_secs(5),
            metrics_file: None,
            log_per_second: 5,
            guest_cid: Some(GUEST_CID),
        }
    }
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `accept` failed in a way that is not about a single connection.
    #[error("accepting on {listener}: {source}")]
    Accept {
        /// The listener.
        listener: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Lets through at most N events per second and counts the rest.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl RateLimiter {
    /// A limiter for `per_second` events a second.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether the event at `now` may be logged; counts it if not.
    pub fn allow(&mut self, now: Instant) -> bool {
        let fresh = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1));
        if fresh {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.per_second {
            self.in_window += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// How many events were not let through, in total.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// Request counters, by command and result.
#[derive(Debug, Default)]
struct Counters {
    requests: BTreeMap<(&'static str, &'static str), u64>,
    log_suppressed: u64,
}

/// The HostOS agent: the allow-listed commands and their state.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    counters: Mutex<Counters>,
    limiter: Mutex<RateLimiter>,
    upgrade_lock: Mutex<()>,
    upgrader: Option<Arc<Upgrader>>,
    guest_seen: Option<PathBuf>,
    guest_seen_written: AtomicBool,
    active: AtomicUsize,
    notifying: Arc<AtomicUsize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn not_supported(what: &str) -> Response {
    Err(format!("not supported on this host: {what}"))
}

impl Agent {
    /// An agent with this configuration.
    pub fn new(config: AgentConfig) -> Self {
        let limiter = RateLimiter::new(config.log_per_second);
        Self {
            config,
            counters: Mutex::default(),
            limiter: Mutex::new(limiter),
            upgrade_lock: Mutex::new(()),
            upgrader: None,
            guest_seen: None,
            guest_seen_written: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            notifying: Arc::default(),
        }
    }

    /// Makes `upgrade` install the verified image into HostOS's spare slot,
    /// commit it and reboot (see [`crate::hostos_upgrade`]); without it,
    /// `upgrade` only downloads and verifies.
    pub fn with_upgrader(mut self, upgrader: Arc<Upgrader>) -> Self {
        self.upgrader = Some(upgrader);
        self
    }

    /// Writes `path` when the served guest's first request arrives (it
    /// passed the sender and CID checks), so the boot confirmation knows
    /// GuestOS runs (see [`crate::hostos_upgrade::SystemdGuestProbe`]).
    pub fn with_guest_seen_file(mut self, path: PathBuf) -> Self {
        self.guest_seen = Some(path);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Serves `listener` until accepting fails for good.
    pub fn serve(self: &Arc<Self>, listener: &dyn Listener) -> Result<(), ServerError> {
        info!("listening on {}", listener.describe());
        self.write_metrics();
        loop {
            let (conn, peer_cid) = match listener.accept() {
                Ok(x) => x,
                Err(e) if is_transient(&e) => {
                    warn!("accept: {e}");
                    continue;
                }
                Err(source) => {
                    return Err(ServerError::Accept {
                        listener: listener.describe(),
                        source,
                    });
                }
            };
            let agent = Arc::clone(self);
            if agent.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONCURRENT {
                agent.active.fetch_sub(1, Ordering::SeqCst);
                agent.refuse_busy(conn);
                continue;
            }
            let spawned = std::thread::Builder::new()
                .name("vsock-conn".into())
                .spawn(move || {
                    agent.handle_connection(conn, peer_cid);
                    agent.active.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                self.active.fetch_sub(1, Ordering::SeqCst);
                warn!("spawning a connection thread: {e}");
            }
        }
    }

    fn refuse_busy(&self, mut conn: Box<dyn Connection>) {
        // Read the request first: closing with it unread would reset the
        // connection before the peer reads the answer.
        self.drain(conn.as_mut());
        let reply: Response = Err("busy: too many concurrent requests".into());
        let _ = conn.write_all(&protocol::encode_response(&reply));
        self.count("busy", "err");
    }

    /// Serves one connection: one read, one answer.
    pub fn handle_connection(&self, mut conn: Box<dyn Connection>, peer_cid: u32) {
        if let Err(e) = conn.set_timeouts(self.config.timeout) {
            warn!("setting timeouts: {e}");
            return;
        }
        let mut buf = vec![0u8; MAX_MESSAGE_BYTES + 1];
        let response = match conn.read(&mut buf) {
            Ok(n) => {
                if n > MAX_MESSAGE_BYTES {
                    self.drain(conn.as_mut());
                }
                self.handle_bytes(buf.get(..n).unwrap_or_default(), peer_cid)
            }
            Err(e) => {
                self.bad_request(&format!("reading request from CID {peer_cid}: {e}"));
                self.count("unreadable", "err");
                Err(format!("reading request: {e}"))
            }
        };
        if let Err(e) = conn
            .write_all(&protocol::encode_response(&response))
            .and_then(|()| conn.flush())
        {
            warn!("writing response: {e}");
        }
        let _ = conn.shutdown_write();
    }

    /// Reads and drops what is left of an oversize request (briefly, and at
    /// most 1 MiB), so closing the socket does not reset it before the peer
    /// has read the answer.
    fn drain(&self, conn: &mut dyn Connection) {
        let _ = conn.set_timeouts(self.config.timeout.min(Duration::from_millis(200)));
        let mut sink = [0u8; 4096];
        let mut left: usize = 1 << 20;
        while left > 0 {
            match conn.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
        let _ = conn.set_timeouts(self.config.timeout);
    }

    /// Answers one request's bytes from a peer with CID `peer_cid`.
    pub fn handle_bytes(&self, bytes: &[u8], peer_cid: u32) -> Response {
        let request = match protocol::parse_request(bytes) {
            Ok(r) => r,
            Err(e) => {
                let label = match e {
                    ProtocolError::TooLarge => "oversize",
                    _ => "malformed",
                };
                self.bad_request(&format!("{e} (from CID {peer_cid})"));
                self.count(label, "err");
                return Err(e.to_string());
            }
        };
        let name = request.message.name();
        if request.sender_cid != peer_cid {
            warn!(
                "refused {name}: sender_cid {} is not the peer CID {peer_cid}",
                request.sender_cid
            );
            self.count(name, "refused");
            return Err(format!(
                "refused: sender_cid {} does not match the connection's CID {peer_cid}",
                request.sender_cid
            ));
        }
        if let Some(only) = self.config.guest_cid.filter(|&c| c != peer_cid) {
            warn!("refused {name}: CID {peer_cid} is not the served guest CID {only}");
            self.count(name, "refused");
            return Err(format!(
                "refused: this host only serves the GuestOS VM with CID {only}"
            ));
        }
        info!("request from CID {peer_cid}: {}", request.message);
        self.note_guest_seen(peer_cid, name);
        let response = self.execute(request.message);
        match &response {
            Ok(_) => self.count(name, "ok"),
            Err(e) => {
                warn!("{name} failed: {e}");
                self.count(name, "err");
            }
        }
        response
    }

    /// Writes the guest-seen file once per agent run.
    fn note_guest_seen(&self, peer_cid: u32, command: &str) {
        let Some(path) = &self.guest_seen else {
            return;
        };
        if self.guest_seen_written.load(Ordering::SeqCst) {
            return;
        }
        let text = format!("cid={peer_cid}\ncommand={command}\n");
        let written = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| write_atomic(path, text.as_bytes()));
        match written {
            Ok(()) => {
                self.guest_seen_written.store(true, Ordering::SeqCst);
                info!(
                    "GuestOS (CID {peer_cid}) reached the agent; noted in {}",
                    path.display()
                );
            }
            Err(e) => warn!("writing {}: {e}", path.display()),
        }
    }

    /// Runs one allow-listed command.
    pub fn execute(&self, command: Command) -> Response {
        let c = &self.config;
        match command {
            Command::GetVsockProtocol => Ok(Payload::HostOSVsockVersion(PROTOCOL_VERSION)),
            Command::GetHostOSVersion => fs::read_to_string(&c.version_file)
                .map(|v| Payload::HostOSVersion(v.trim().to_string()))
                .map_err(|e| format!("reading {}: {e}", c.version_file.display())),
            Command::SetNodeId(data) => {
                let id = data.node_id.trim();
                if id.is_empty() || id.len() > 128 || id.chars().any(|ch| ch.is_control()) {
                    return Err(format!("node-id {:?} is not a node id", data.node_id));
                }
                write_atomic(&c.node_id_file, format!("{id}\n").as_bytes())
                    .map(|()| Payload::NoPayload)
                    .map_err(|e| format!("writing {}: {e}", c.node_id_file.display()))
            }
            Command::Notify(data) => self.notify(data.count, &data.message),
            Command::Upgrade(data) => {
                if let Some(upgrader) = &self.upgrader {
                    return upgrader
                        .start(
                            &c.upgrade_dir,
                            &data.url,
                            &data.target_hash,
                            c.download_timeout,
                        )
                        .map(|version| {
                            info!("upgrade: installing HostOS {version}; answering Ok");
                            Payload::NoPayload
                        })
                        .map_err(|e| e.to_string());
                }
                let Ok(_guard) = self.upgrade_lock.try_lock() else {
                    return Err("an upgrade download is already in progress".into());
                };
                upgrade::download_and_verify(
                    &c.upgrade_dir,
                    &data.url,
                    &data.target_hash,
                    c.download_timeout,
                )
                .map(|path| {
                    info!(
                        "upgrade image verified: {} (installing it is the upgrade installer's job)",
                        path.display()
                    );
                    Payload::NoPayload
                })
                .map_err(|e| e.to_string())
            }
            Command::AttachHsm | Command::DetachHsm => {
                not_supported("HSM passthrough (no USB HSM is passed to the guest)")
            }
            Command::StartUpgradeGuestVM => {
                not_supported("the SEV-SNP upgrade guest VM is not part of this HostOS")
            }
        }
    }

    /// Opens the console now (so a missing console is an `Err` reply), then
    /// prints from a background thread and answers at once, as IC does.
    fn notify(&self, count: u32, message: &str) -> Response {
        let times = count.min(MAX_NOTIFY_COUNT);
        // Control characters (escape sequences) are not passed to the console.
        let clean: String = message
            .chars()
            .map(|ch| {
                if ch.is_control() && ch != '\n' {
                    ' '
                } else {
                    ch
                }
            })
            .collect();
        let line = format!("\n{clean}\n");
        let tty = self.config.tty.clone();
        let mut console = fs::OpenOptions::new()
            .append(true)
            .open(&tty)
            .map_err(|e| format!("opening {}: {e}", tty.display()))?;
        if self.notifying.fetch_add(1, Ordering::SeqCst) >= MAX_CONCURRENT_NOTIFY {
            self.notifying.fetch_sub(1, Ordering::SeqCst);
            return Err("busy: too many notifications in progress".into());
        }
        let interval = self.config.notify_interval;
        let notifying = Arc::clone(&self.notifying);
        let job = move || {
            for i in 0..times {
                if i > 0 {
                    std::thread::sleep(interval);
                }
                if let Err(e) = console.write_all(line.as_bytes()) {
                    warn!("notify: writing to {}: {e}", tty.display());
                    break;
                }
            }
            notifying.fetch_sub(1, Ordering::SeqCst);
        };
        if let Err(e) = std::thread::Builder::new().name("notify".into()).spawn(job) {
            self.notifying.fetch_sub(1, Ordering::SeqCst);
            return Err(format!("starting the notification: {e}"));
        }
        Ok(Payload::NoPayload)
    }

    /// Whether no notification is being printed.
    pub fn notify_idle(&self) -> bool {
        self.notifying.load(Ordering::SeqCst) == 0
    }

    fn bad_request(&self, what: &str) {
        let allowed = lock(&self.limiter).allow(Instant::now());
        if allowed {
            warn!("bad request: {what}");
        } else {
            lock(&self.counters).log_suppressed += 1;
        }
    }

    fn count(&self, command: &'static str, result: &'static str) {
        *lock(&self.counters)
            .requests
            .entry((command, result))
            .or_insert(0) += 1;
        self.write_metrics();
    }

    /// How many bad-request log lines were suppressed by the rate limit.
    pub fn log_suppressed(&self) -> u64 {
        lock(&self.counters).log_suppressed
    }

    /// The request counter for `command` and `result` (`ok`, `err`, `refused`).
    pub fn requests(&self, command: &str, result: &str) -> u64 {
        lock(&self.counters)
            .requests
            .iter()
            .filter(|((c, r), _)| *c == command && *r == result)
            .map(|(_, n)| *n)
            .sum()
    }

    /// The metrics in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let counters = lock(&self.counters);
        let mut out = String::from(
            "# HELP hostos_vsock_requests_total vsock requests by command and result.\n\
             # TYPE hostos_vsock_requests_total counter\n",
        );
        for ((command, result), n) in &counters.requests {
            out.push_str(&format!(
                "hostos_vsock_requests_total{{command=\"{command}\",result=\"{result}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP hostos_vsock_bad_request_logs_suppressed_total Bad requests not logged because of the rate limit.\n\
             # TYPE hostos_vsock_bad_request_logs_suppressed_total counter\n\
             hostos_vsock_bad_request_logs_suppressed_total {}\n",
            counters.log_suppressed
        ));
        out
    }

    fn write_metrics(&self) {
        let Some(path) = &self.config.metrics_file else {
            return;
        };
        if let Err(e) = write_atomic(path, self.render_metrics().as_bytes()) {
            warn!("writing metrics {}: {e}", path.display());
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error().is_some_and(|code| {
        // EMFILE, ENFILE, ENOBUFS, ENOMEM: wait and retry rather than exit.
        let retry = matches!(code, 24 | 23 | 105 | 12);
        if retry {
            std::thread::sleep(Duration::from_millis(100));
        }
        retry
    })
}

/// Writes `path` through a temporary file in its directory and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn rate_limiter_allows_n_per_second() {
        let mut l = RateLimiter::new(2);
        let t0 = Instant::now();
        assert!(l.allow(t0));
        assert!(l.allow(t0));
        assert!(!l.allow(t0 + Duration::from_millis(500)));
        assert!(!l.allow(t0 + Duration::from_millis(900)));
        assert_eq!(l.suppressed(), 2);
        assert!(l.allow(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn unsupported_commands_say_so() {
        let agent = Agent::new(AgentConfig::default());
        for c in [
            Command::AttachHsm,
            Command::DetachHsm,
            Command::StartUpgradeGuestVM,
        ] {
            let e = agent.execute(c).unwrap_err();
            assert!(e.starts_with("not supported on this host: "), "{e}");
        }
    }
}
