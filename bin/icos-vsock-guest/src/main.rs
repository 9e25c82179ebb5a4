//! `icos-vsock-guest`: send one allow-listed request to the HostOS agent.
//!
//! Prints the payload of an `Ok` answer (or the raw JSON with `--json`) and
//! maps the outcome to an exit code: 0 for `Ok`, 1 for an `Err` answer or
//! no answer, 2 for a usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use icos_vsock::client::{self, CLIENT_TIMEOUT};
use icos_vsock::protocol::{
    self, Command, GUEST_CID, HOST_CID, NodeIdData, NotifyData, PORT, Request, UpgradeData,
};
use icos_vsock::transport::Endpoint;

const AFTER_HELP: &str = "\
Exit codes:
  0  the host answered Ok
  1  the host answered Err, or no answer came (connection, timeout, garbage)
  2  usage error: a flag or value is invalid";

/// Send one request to the HostOS vsock agent (IC protocol) and print the answer.
#[derive(Debug, Parser)]
#[command(name = "icos-vsock-guest", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// The host's vsock port.
    #[arg(long, default_value_t = PORT)]
    port: u32,

    /// The host's CID.
    #[arg(long, default_value_t = HOST_CID)]
    cid: u32,

    /// Connect to this Unix socket instead of AF_VSOCK.
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,

    /// The sender_cid to put in the request (this guest's CID).
    #[arg(long, default_value_t = GUEST_CID, value_name = "CID")]
    sender_cid: u32,

    /// How long to wait for the answer, in seconds.
    #[arg(long, default_value_t = CLIENT_TIMEOUT.as_secs(), value_name = "SECS")]
    timeout_secs: u64,

    /// Print the raw JSON response instead of the payload.
    #[arg(long)]
    json: bool,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Ask for the vsock protocol version (GetVsockProtocol).
    GetVsockProtocol,
    /// Ask for the HostOS version (GetHostOSVersion).
    GetHostosVersion,
    /// Print MESSAGE on the host console COUNT times (at most 10).
    Notify {
        /// How many times.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// The text.
        message: String,
    },
    /// Store this node's id on the host.
    SetNodeId {
        /// The node id.
        id: String,
    },
    /// Have the host download and verify a HostOS upgrade image.
    Upgrade {
        /// The image URL.
        #[arg(long)]
        url: String,
        /// Its SHA-256 (64 hex digits).
        #[arg(long)]
        hash: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    icos_main::init_logging(0, "warn");
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let endpoint = match cli.unix {
        Some(path) => Endpoint::Unix(path),
        None => Endpoint::Vsock {
            cid: cli.cid,
            port: cli.port,
        },
    };
    let command = match cli.command {
        Cmd::GetVsockProtocol => Command::GetVsockProtocol,
        Cmd::GetHostosVersion => Command::GetHostOSVersion,
        Cmd::Notify { count, message } => Command::Notify(NotifyData { count, message }),
        Cmd::SetNodeId { id } => Command::SetNodeId(NodeIdData { node_id: id }),
        Cmd::Upgrade { url, hash } => Command::Upgrade(UpgradeData {
            url,
            target_hash: hash,
        }),
    };
    let request = protocol::encode_request(&Request {
        sender_cid: cli.sender_cid,
        message: command,
    })?;
    let raw = client::send_raw(&endpoint, &request, Duration::from_secs(cli.timeout_secs))?;
    let response = protocol::parse_response(&raw)?;
    if cli.json {
        println!("{}", String::from_utf8_lossy(&raw));
    }
    Ok(match response {
        Ok(payload) => {
            if !cli.json {
                println!("{payload}");
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            if !cli.json {
                eprintln!("host refused: {message}");
            }
            ExitCode::from(1)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
