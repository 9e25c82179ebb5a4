//! The stream transports the protocol runs over: AF_VSOCK, or a Unix socket.
//!
//! The server only sees [`Listener`] and [`Connection`]; which socket family
//! is behind them is decided by the caller. A Unix socket serves two cases:
//! vhost-user-vsock (`vhost-device-vsock` exposes guest connections to host
//! port P as a Unix socket `PATH_P`) and tests. A Unix socket carries no CID,
//! so its listener is given the CID its peer is expected to have.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use vsock::{VsockListener, VsockStream};

/// One accepted or opened stream.
pub trait Connection: Read + Write + Send {
    /// Sets both the read and the write timeout.
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()>;
    /// Closes the writing half, so the peer reads end-of-file.
    fn shutdown_write(&self) -> io::Result<()>;
}

/// A bound socket that hands out connections with their peer's CID.
pub trait Listener: Send {
    /// Waits for the next connection; returns it and the peer's CID.
    fn accept(&self) -> io::Result<(Box<dyn Connection>, u32)>;
    /// Where it listens, for logs.
    fn describe(&self) -> String;
}

impl Connection for UnixStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Connection for VsockStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// A Unix socket listener whose peers are taken to have a configured CID.
#[derive(Debug)]
pub struct UnixTransport {
    listener: UnixListener,
    path: PathBuf,
    peer_cid: u32,
}

impl UnixTransport {
    /// Binds `path`, first removing a stale socket file left there.
    pub fn bind(path: &Path, peer_cid: u32) -> io::Result<Self> {
        if std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            std::fs::remove_file(path)?;
        }
        Ok(Self {
            listener: UnixListener::bind(path)?,
            path: path.to_path_buf(),
            peer_cid,
        })
    }
}

impl Listener for UnixTransport {
    fn accept(&self) -> io::Result<(Box<dyn Connection>, u32)> {
        let (stream, _) = self.listener.accept()?;
        Ok((Box::new(stream), self.peer_cid))
    }
    fn describe(&self) -> String {
        format!("unix:{} (peer CID {})", self.path.display(), self.peer_cid)
    }
}

/// An AF_VSOCK listener; the peer CID is the kernel's.
#[derive(Debug)]
pub struct VsockTransport {
    listener: VsockListener,
    cid: u32,
    port: u32,
}

impl VsockTransport {
    /// Binds `cid:port` (`VMADDR_CID_ANY` = `u32::MAX` for every CID).
    pub fn bind(cid: u32, port: u32) -> io::Result<Self> {
        Ok(Self {
            listener: VsockListener::bind_with_cid_port(cid, port)?,
            cid,
            port,
        })
    }
}

impl Listener for VsockTransport {
    fn accept(&self) -> io::Result<(Box<dyn Connection>, u32)> {
        let (stream, addr) = self.listener.accept()?;
        Ok((Box::new(stream), addr.cid()))
    }
    fn describe(&self) -> String {
        format!("vsock:{}:{}", self.cid, self.port)
    }
}

/// Where a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// AF_VSOCK `cid:port`.
    Vsock {
        /// The host's CID (2 from a guest).
        cid: u32,
        /// The port (19090).
        port: u32,
    },
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Endpoint {
    /// Opens a connection.
    pub fn connect(&self) -> io::Result<Box<dyn Connection>> {
        Ok(match self {
            Endpoint::Vsock { cid, port } => {
                Box::new(VsockStream::connect_with_cid_port(*cid, *port)?)
            }
            Endpoint::Unix(path) => Box::new(UnixStream::connect(path)?),
        })
    }
}
