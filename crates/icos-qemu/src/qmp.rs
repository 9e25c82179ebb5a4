//! A small QMP (QEMU Machine Protocol) client: line-delimited JSON over a
//! Unix socket, with a timeout on every operation.
//!
//! ```no_run
//! # fn main() -> Result<(), icos_qemu::QmpError> {
//! use std::time::Duration;
//! let mut qmp = icos_qemu::Qmp::connect("/run/vm/qmp.sock".as_ref(), Duration::from_secs(5))?;
//! if qmp.query_status()?.running {
//!     qmp.system_powerdown()?;
//! }
//! # Ok(()) }
//! ```

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

/// A QMP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected to before the timeout.
    #[error("connecting to QMP socket {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The last connect error.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("QMP socket {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("QMP socket {}: no answer to '{command}' within {timeout:?}", path.display())]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// The command, or `greeting`.
        command: String,
        /// The timeout.
        timeout: Duration,
    },
    /// QEMU closed the connection.
    #[error("QMP socket {}: connection closed while waiting for '{command}'", path.display())]
    Closed {
        /// The socket.
        path: PathBuf,
        /// The command, or `greeting`.
        command: String,
    },
    /// QEMU sent something that is not QMP.
    #[error("QMP socket {}: {message}", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// QEMU answered the command with an error.
    #[error("QMP socket {}: '{command}' failed: {class}: {desc}", path.display())]
    Command {
        /// The socket.
        path: PathBuf,
        /// The command.
        command: String,
        /// QMP error class, e.g. `GenericError`.
        class: String,
        /// QMP error description.
        desc: String,
    },
}

/// The answer to `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VmStatus {
    /// Whether the vCPUs run.
    pub running: bool,
    /// QEMU's run state: `running`, `paused`, `shutdown`,
    /// `internal-error`, …
    pub status: String,
}

/// A QMP event QEMU sent while a command was outstanding.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// The event name, e.g. `POWERDOWN`, `SHUTDOWN`.
    pub event: String,
    /// Its data (`null` when none).
    pub data: Value,
}

/// A connected QMP session in command mode.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    path: PathBuf,
    timeout: Duration,
    next_id: u64,
    events: Vec<QmpEvent>,
    greeting: Value,
}

impl Qmp {
    /// Connects to `path`, retrying while the socket does not exist yet or
    /// refuses connections (QEMU still starting), reads the greeting, and
    /// negotiates capabilities. `timeout` bounds the connect and every later
    /// command.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e)
                    if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused)
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(QmpError::Connect {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
        };
        let io = |source| QmpError::Io {
            path: path.to_owned(),
            source,
        };
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            path: path.to_owned(),
            timeout,
            next_id: 1,
            events: Vec::new(),
            greeting: Value::Null,
        };
        let deadline = Instant::now() + timeout;
        let greeting = qmp.read_message("greeting", deadline)?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol {
                path: path.to_owned(),
                message: format!("expected the QMP greeting, got {greeting}"),
            });
        }
        qmp.greeting = greeting;
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// The greeting QEMU sent (holds its version).
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// Events received so far, oldest first.
    pub fn events(&self) -> &[QmpEvent] {
        &self.events
    }

    /// Runs a command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let id = format!("icos-{}", self.next_id);
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        let path = self.path.clone();
        self.reader
            .get_mut()
            .write_all(line.as_bytes())
            .map_err(|source| QmpError::Io {
                path: path.clone(),
                source,
            })?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let msg = self.read_message(command, deadline)?;
            if msg.get("id").and_then(Value::as_str) != Some(id.as_str()) {
                // An event (recorded by read_message) or a stale answer.
                continue;
            }
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                let field = |k: &str| {
                    err.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                return Err(QmpError::Command {
                    path,
                    command: command.to_owned(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(QmpError::Protocol {
                path,
                message: format!("answer to '{command}' has neither return nor error: {msg}"),
            });
        }
    }

    /// `query-status`.
    pub fn query_status(&mut self) -> Result<VmStatus, QmpError> {
        let ret = self.execute("query-status", None)?;
        serde_json::from_value(ret.clone()).map_err(|e| QmpError::Protocol {
            path: self.path.clone(),
            message: format!("bad query-status answer {ret}: {e}"),
        })
    }

    /// `system_powerdown`: presses the ACPI power button. The guest decides
    /// whether and when to power off.
    pub fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).map(drop)
    }

    /// `quit`: QEMU exits at once, like pulling the plug. A connection
    /// closed before the answer arrived also counts as success.
    pub fn quit(mut self) -> Result<(), QmpError> {
        match self.execute("quit", None) {
            Ok(_) | Err(QmpError::Closed { .. }) => Ok(()),
            Err(QmpError::Io { source, .. })
                if matches!(
                    source.kind(),
                    ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads one JSON message; events are recorded and also returned.
    fn read_message(&mut self, command: &str, deadline: Instant) -> Result<Value, QmpError> {
        let mut line = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timeout_error(command));
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|source| QmpError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            match self.reader.read_line(&mut line) {
                Ok(0) => {
                    return Err(QmpError::Closed {
                        path: self.path.clone(),
                        command: command.to_owned(),
                    });
                }
                Ok(_) if line.ends_with('\n') => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.timeout_error(command));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(QmpError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        let msg: Value = serde_json::from_str(line.trim()).map_err(|e| QmpError::Protocol {
            path: self.path.clone(),
            message: format!("not JSON: {e}: {}", line.trim()),
        })?;
        if let Some(event) = msg.get("event").and_then(Value::as_str) {
            self.events.push(QmpEvent {
                event: event.to_owned(),
                data: msg.get("data").cloned().unwrap_or(Value::Null),
            });
        }
        Ok(msg)
    }

    fn timeout_error(&self, command: &str) -> QmpError {
        QmpError::Timeout {
            path: self.path.clone(),
            command: command.to_owned(),
            timeout: self.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A fake QMP server that answers each command from a script.
    fn serve(listener: UnixListener, answers: Vec<&'static str>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            for answer in answers {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    return;
                }
                let req: Value = serde_json::from_str(&line).unwrap();
                let id = req["id"].as_str().unwrap();
                if answer.is_empty() {
                    continue; // never answer
                }
                s.write_all(b"{\"event\": \"POWERDOWN\", \"timestamp\": {}}\r\n")
                    .unwrap();
                s.write_all(answer.replace("ID", id).as_bytes()).unwrap();
                s.write_all(b"\r\n").unwrap();
            }
            std::thread::sleep(Duration::from_millis(500));
        })
    }

    #[test]
    fn negotiates_runs_commands_and_records_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let server = serve(
            UnixListener::bind(&path).unwrap(),
            vec![
                r#"{"return": {}, "id": "ID"}"#,
                r#"{"return": {"status": "running", "singlestep": false, "running": true}, "id": "ID"}"#,
                r#"{"error": {"class": "GenericError", "desc": "nope"}, "id": "ID"}"#,
                "",
            ],
        );
        let mut qmp = Qmp::connect(&path, Duration::from_secs(2)).unwrap();
        let status = qmp.query_status().unwrap();
        assert!(status.running);
        assert_eq!(status.status, "running");
        let e = qmp.system_powerdown().unwrap_err();
        assert!(
            matches!(&e, QmpError::Command { class, desc, .. } if class == "GenericError" && desc == "nope"),
            "{e}"
        );
        assert!(qmp.events().iter().all(|e| e.event == "POWERDOWN"));
        assert_eq!(qmp.events().len(), 3);

        let mut qmp = qmp;
        qmp.timeout = Duration::from_millis(200);
        let e = qmp.execute("query-status", None).unwrap_err();
        assert!(matches!(e, QmpError::Timeout { .. }), "{e}");
        server.join().unwrap();
    }

    #[test]
    fn connect_times_out_on_a_missing_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let start = Instant::now();
        let e = Qmp::connect(&path, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, QmpError::Connect { .. }), "{e}");
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(e.to_string().contains("none.sock"));
    }
}
