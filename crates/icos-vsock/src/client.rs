//! The guest side: send one request, read one response.

use std::io::{self, Read, Write};
use std::time::Duration;

use crate::protocol::{self, Command, MAX_MESSAGE_BYTES, ProtocolError, Request, Response};
use crate::transport::Endpoint;

/// IC's client timeout: long enough for the host to download an upgrade.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        /// Where.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Sending or receiving failed (a timeout shows here).
    #[error("{step} {endpoint}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// Where.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The request could not be encoded or the response not decoded.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Sends `command` as `sender_cid` to `endpoint` and waits up to `timeout`
/// for the answer. An `Err` answer from the host is `Ok(Err(..))`.
pub fn send(
    endpoint: &Endpoint,
    sender_cid: u32,
    command: Command,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let bytes = protocol::encode_request(&Request {
        sender_cid,
        message: command,
    })?;
    let raw = send_raw(endpoint, &bytes, timeout)?;
    Ok(protocol::parse_response(&raw)?)
}

/// Sends raw request bytes and returns the raw response bytes (at most
/// [`MAX_MESSAGE_BYTES`]).
pub fn send_raw(
    endpoint: &Endpoint,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let name = endpoint.to_string();
    let io_err = |step| {
        let endpoint = name.clone();
        move |source| ClientError::Io {
            step,
            endpoint,
            source,
        }
    };
    let mut conn = endpoint.connect().map_err(|source| ClientError::Connect {
        endpoint: name.clone(),
        source,
    })?;
    conn.set_timeouts(timeout).map_err(io_err("configuring"))?;
    conn.write_all(request).map_err(io_err("sending to"))?;
    conn.flush().map_err(io_err("sending to"))?;
    // The request is complete: a server waiting for more reads end-of-file.
    let _ = conn.shutdown_write();
    let mut response = Vec::with_capacity(256);
    conn.take(MAX_MESSAGE_BYTES as u64)
        .read_to_end(&mut response)
        .map_err(io_err("reading from"))?;
    Ok(response)
}
