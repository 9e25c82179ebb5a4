//! systemd's readiness protocol (`sd_notify`): datagrams such as `READY=1`
//! and `STATUS=…` to the Unix socket named by `$NOTIFY_SOCKET` (a path, or
//! an abstract name starting with `@`). Without the variable nothing is
//! sent.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notifier {
    /// Not run under systemd's notify protocol.
    Off,
    /// A socket path (`/run/systemd/notify`).
    Path(PathBuf),
    /// An abstract socket name (without the leading `@`).
    Abstract(Vec<u8>),
}

/// A notification could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("sd_notify to {socket}: {source}")]
pub struct NotifyError {
    /// The socket.
    pub socket: String,
    /// The cause.
    pub source: std::io::Error,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for.
    pub fn from_env() -> Notifier {
        Notifier::from_value(std::env::var_os("NOTIFY_SOCKET").as_deref().map(|v| {
            use std::os::unix::ffi::OsStrExt;
            v.as_bytes()
        }))
    }

    /// The notifier for a `$NOTIFY_SOCKET` value.
    pub fn from_value(value: Option<&[u8]>) -> Notifier {
        match value {
            None | Some([]) => Notifier::Off,
            Some([b'@', name @ ..]) => Notifier::Abstract(name.to_vec()),
            Some(path) => {
                use std::os::unix::ffi::OsStrExt;
                Notifier::Path(Path::new(std::ffi::OsStr::from_bytes(path)).to_owned())
            }
        }
    }

    /// Sends one datagram of `KEY=VALUE` lines.
    pub fn notify(&self, fields: &[(&str, &str)]) -> Result<(), NotifyError> {
        let message: String = fields
            .iter()
            .map(|(k, v)| format!("{k}={}\n", v.replace('\n', " ")))
            .collect();
        let err = |source| NotifyError {
            socket: self.to_string(),
            source,
        };
        let socket = match self {
            Notifier::Off => return Ok(()),
            _ => UnixDatagram::unbound().map_err(err)?,
        };
        match self {
            Notifier::Off => Ok(()),
            Notifier::Path(path) => socket
                .send_to(message.as_bytes(), path)
                .map(drop)
                .map_err(err),
            Notifier::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(err)?;
                socket
                    .send_to_addr(message.as_bytes(), &addr)
                    .map(drop)
                    .map_err(err)
            }
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&[("READY", "1"), ("STATUS", status)])
    }

    /// A status line.
    pub fn status(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&[("STATUS", status)])
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&[("STOPPING", "1"), ("STATUS", status)])
    }
}

impl std::fmt::Display for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notifier::Off => f.write_str("(none)"),
            Notifier::Path(p) => write!(f, "{}", p.display()),
            Notifier::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(Notifier::from_value(None), Notifier::Off);
        assert_eq!(Notifier::from_value(Some(b"")), Notifier::Off);
        assert_eq!(
            Notifier::from_value(Some(b"@sd/notify")),
            Notifier::Abstract(b"sd/notify".to_vec())
        );
        assert_eq!(
            Notifier::from_value(Some(b"/run/systemd/notify")),
            Notifier::Path("/run/systemd/notify".into())
        );
        assert!(Notifier::Off.ready("x").is_ok());
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        Notifier::Path(path).ready("guest\nbooted").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=guest booted\n");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("icos-guestos-vm-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::from_value(Some(format!("@{name}").as_bytes()))
            .stopping("bye")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=bye\n");
    }

    #[test]
    fn a_missing_socket_is_an_error_naming_it() {
        let err = Notifier::Path("/nonexistent/notify".into())
            .ready("x")
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/notify"), "{err}");
    }
}
