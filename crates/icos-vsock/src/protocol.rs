//! The wire format: IC's JSON requests and responses, byte for byte.
//!
//! A request is `{"sender_cid": <u32>, "message": <Command>}`. Commands with
//! data are externally tagged objects (`{"notify": {"count": 2, "message":
//! "hi"}}`); commands without data are bare strings (`"attach-hsm"`,
//! `"GetVsockProtocol"`). The older string form (`LegacyRequest`, protocol
//! v0: `{"sender_cid": "3", "message": "notify [2, hi]"}`) is still
//! accepted by [`parse_request`].
//!
//! A response is a serialized `Result<Payload, String>`: `{"Ok": "NoPayload"}`,
//! `{"Ok": {"HostOSVersion": "…"}}`, `{"Err": "…"}`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The vsock port the HostOS agent listens on.
pub const PORT: u32 = 19090;
/// The CID of the host, as seen from a guest (`VMADDR_CID_HOST`).
pub const HOST_CID: u32 = 2;
/// The CID IC gives the (first) GuestOS VM.
pub const GUEST_CID: u32 = 3;
/// The largest request or response, in bytes: each is one read of this size.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// The protocol version this agent speaks (`GetVsockProtocol`).
pub const PROTOCOL_VERSION: HostOSVsockVersion = HostOSVsockVersion {
    major: 1,
    minor: 0,
    patch: 0,
};

/// What the host answers: the payload, or an error message.
pub type Response = Result<Payload, String>;

/// One request from a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The CID the guest claims to have; must be the connection's peer CID.
    pub sender_cid: u32,
    /// What the guest asks for.
    pub message: Command,
}

/// The allow-listed commands, with IC's serde names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Store the node id on the host.
    #[serde(rename = "set-node-id")]
    SetNodeId(NodeIdData),
    /// Pass a USB HSM through to the guest (not supported here).
    #[serde(rename = "attach-hsm")]
    AttachHsm,
    /// Remove a passed-through HSM (not supported here).
    #[serde(rename = "detach-hsm")]
    DetachHsm,
    /// Download and verify a HostOS upgrade image.
    #[serde(rename = "upgrade")]
    Upgrade(UpgradeData),
    /// Show a message on the host console.
    #[serde(rename = "notify")]
    Notify(NotifyData),
    /// Ask for the protocol version.
    GetVsockProtocol,
    /// Ask for the HostOS version.
    GetHostOSVersion,
    /// Launch the upgrade GuestOS VM (not supported here).
    StartUpgradeGuestVM,
}

impl Command {
    /// The command's wire name, as used in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::SetNodeId(_) => "set-node-id",
            Command::AttachHsm => "attach-hsm",
            Command::DetachHsm => "detach-hsm",
            Command::Upgrade(_) => "upgrade",
            Command::Notify(_) => "notify",
            Command::GetVsockProtocol => "GetVsockProtocol",
            Command::GetHostOSVersion => "GetHostOSVersion",
            Command::StartUpgradeGuestVM => "StartUpgradeGuestVM",
        }
    }

    /// Every command's wire name.
    pub const NAMES: [&'static str; 8] = [
        "set-node-id",
        "attach-hsm",
        "detach-hsm",
        "upgrade",
        "notify",
        "GetVsockProtocol",
        "GetHostOSVersion",
        "StartUpgradeGuestVM",
    ];
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::SetNodeId(d) => write!(f, "set-node-id {}", d.node_id),
            Command::Upgrade(d) => write!(f, "upgrade {} {}", d.url, d.target_hash),
            Command::Notify(d) => write!(f, "notify count={} {:?}", d.count, d.message),
            other => f.write_str(other.name()),
        }
    }
}

/// Data of `set-node-id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdData {
    /// The node id (a principal in text form).
    #[serde(rename = "node-id")]
    pub node_id: String,
}

/// Data of `upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeData {
    /// Where to download the HostOS upgrade image.
    pub url: String,
    /// Its SHA-256, 64 hex digits.
    #[serde(rename = "target-hash")]
    pub target_hash: String,
}

/// Data of `notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyData {
    /// How often to print it (the host caps this at 10).
    pub count: u32,
    /// The text.
    pub message: String,
}

/// The answer to a successful request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// The protocol version (`GetVsockProtocol`).
    HostOSVsockVersion(HostOSVsockVersion),
    /// The HostOS version string (`GetHostOSVersion`).
    HostOSVersion(String),
    /// Done, nothing to return.
    NoPayload,
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::HostOSVsockVersion(v) => write!(f, "{v}"),
            Payload::HostOSVersion(v) => f.write_str(v),
            Payload::NoPayload => f.write_str("ok"),
        }
    }
}

/// A protocol version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostOSVsockVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl fmt::Display for HostOSVsockVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The protocol v0 request: both fields are strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyRequest {
    /// The sender CID as decimal text.
    pub sender_cid: String,
    /// The command as text, arguments in brackets: `set-node-id [ID]`,
    /// `notify [COUNT, MESSAGE]`, `upgrade [URL HASH]`.
    pub message: String,
}

/// Why a request or response could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The bytes are not UTF-8.
    #[error("request is not UTF-8")]
    NotUtf8,
    /// The message is over [`MAX_MESSAGE_BYTES`].
    #[error("message too large: more than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    /// The JSON is neither a request nor a legacy request.
    #[error("unable to parse request: {0}")]
    Malformed(String),
    /// A legacy request names an unknown command or has bad arguments.
    #[error("bad legacy request: {0}")]
    BadLegacy(String),
    /// The response is not a serialized `Result<Payload, String>`.
    #[error("unable to parse response: {0}")]
    BadResponse(String),
    /// Serializing failed.
    #[error("serializing: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Reads a request: the current form first, then the legacy string form.
pub fn parse_request(bytes: &[u8]) -> Result<Request, ProtocolError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ProtocolError::NotUtf8)?;
    let current_err = match serde_json::from_str::<Request>(text) {
        Ok(request) => return Ok(request),
        Err(e) => e,
    };
    match serde_json::from_str::<LegacyRequest>(text) {
        Ok(legacy) => from_legacy(&legacy),
        Err(_) => Err(ProtocolError::Malformed(current_err.to_string())),
    }
}

/// Converts a protocol v0 request.
pub fn from_legacy(legacy: &LegacyRequest) -> Result<Request, ProtocolError> {
    let bad = |why: &str| ProtocolError::BadLegacy(format!("{why}: {:?}", legacy.message));
    let sender_cid = legacy
        .sender_cid
        .trim()
        .parse::<u32>()
        .map_err(|_| ProtocolError::BadLegacy(format!("sender_cid {:?}", legacy.sender_cid)))?;
    let text = legacy.message.trim();
    // Arguments sit between the first '[' and the last ']'.
    let args = || -> Result<&str, ProtocolError> {
        let open = text.find('[').ok_or_else(|| bad("missing '['"))?;
        let close = text.rfind(']').ok_or_else(|| bad("missing ']'"))?;
        text.get(open + 1..close)
            .ok_or_else(|| bad("misplaced brackets"))
    };
    let message = if text.starts_with("attach-hsm") {
        Command::AttachHsm
    } else if text.starts_with("detach-hsm") {
        Command::DetachHsm
    } else if text.starts_with("set-node-id") {
        Command::SetNodeId(NodeIdData {
            node_id: args()?.to_string(),
        })
    } else if text.starts_with("notify") {
        let inner = args()?;
        let (count, message) = match inner.split_once(',') {
            Some((c, m)) => (c, m.trim()),
            None => (inner, ""),
        };
        let count = count.trim().parse::<u32>().map_err(|_| bad("bad count"))?;
        Command::Notify(NotifyData {
            count,
            message: message.to_string(),
        })
    } else if text.starts_with("upgrade") {
        let inner = args()?;
        let (url, hash) = inner.split_once(' ').unwrap_or((inner, ""));
        Command::Upgrade(UpgradeData {
            url: url.to_string(),
            target_hash: hash.trim().to_string(),
        })
    } else {
        return Err(bad("unknown command"));
    };
    Ok(Request {
        sender_cid,
        message,
    })
}

/// Serializes a request to its exact wire bytes.
pub fn encode_request(request: &Request) -> Result<Vec<u8>, ProtocolError> {
    let bytes = serde_json::to_vec(request)?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge);
    }
    Ok(bytes)
}

/// Serializes a response to its exact wire bytes. A response that would be
/// over [`MAX_MESSAGE_BYTES`] becomes an `Err` saying so.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let fallback = || br#"{"Err":"response too large"}"#.to_vec();
    match serde_json::to_vec(response) {
        Ok(bytes) if bytes.len() <= MAX_MESSAGE_BYTES => bytes,
        Ok(_) => fallback(),
        Err(_) => br#"{"Err":"response could not be serialized"}"#.to_vec(),
    }
}

/// Reads a response.
pub fn parse_response(bytes: &[u8]) -> Result<Response, ProtocolError> {
    serde_json::from_slice::<Response>(bytes).map_err(|e| {
        ProtocolError::BadResponse(format!("{e}: {:?}", String::from_utf8_lossy(bytes)))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn wire(command: Command) -> String {
        String::from_utf8(
            encode_request(&Request {
                sender_cid: 3,
                message: command,
            })
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn request_bytes_are_ics() {
        let cases = [
            (
                Command::SetNodeId(NodeIdData {
                    node_id: "abc-def".into(),
                }),
                r#"{"sender_cid":3,"message":{"set-node-id":{"node-id":"abc-def"}}}"#,
            ),
            (
                Command::AttachHsm,
                r#"{"sender_cid":3,"message":"attach-hsm"}"#,
            ),
            (
                Command::DetachHsm,
                r#"{"sender_cid":3,"message":"detach-hsm"}"#,
            ),
            (
                Command::Upgrade(UpgradeData {
                    url: "https://example.com/u.tar.zst".into(),
                    target_hash: "ab12".into(),
                }),
                r#"{"sender_cid":3,"message":{"upgrade":{"url":"https://example.com/u.tar.zst","target-hash":"ab12"}}}"#,
            ),
            (
                Command::Notify(NotifyData {
                    count: 2,
                    message: "Hello".into(),
                }),
                r#"{"sender_cid":3,"message":{"notify":{"count":2,"message":"Hello"}}}"#,
            ),
            (
                Command::GetVsockProtocol,
                r#"{"sender_cid":3,"message":"GetVsockProtocol"}"#,
            ),
            (
                Command::GetHostOSVersion,
                r#"{"sender_cid":3,"message":"GetHostOSVersion"}"#,
            ),
            (
                Command::StartUpgradeGuestVM,
                r#"{"sender_cid":3,"message":"StartUpgradeGuestVM"}"#,
            ),
        ];
        assert_eq!(cases.len(), Command::NAMES.len());
        for (command, expected) in cases {
            assert_eq!(wire(command.clone()), expected);
            assert_eq!(parse_request(expected.as_bytes()).unwrap().message, command);
            assert!(Command::NAMES.contains(&command.name()));
        }
    }

    #[test]
    fn response_bytes_are_ics() {
        let cases: [(Response, &str); 4] = [
            (Ok(Payload::NoPayload), r#"{"Ok":"NoPayload"}"#),
            (
                Ok(Payload::HostOSVersion("1.2.3".into())),
                r#"{"Ok":{"HostOSVersion":"1.2.3"}}"#,
            ),
            (
                Ok(Payload::HostOSVsockVersion(PROTOCOL_VERSION)),
                r#"{"Ok":{"HostOSVsockVersion":{"major":1,"minor":0,"patch":0}}}"#,
            ),
            (Err("nope".into()), r#"{"Err":"nope"}"#),
        ];
        for (response, expected) in cases {
            assert_eq!(
                String::from_utf8(encode_response(&response)).unwrap(),
                expected
            );
            assert_eq!(parse_response(expected.as_bytes()).unwrap(), response);
        }
    }

    #[test]
    fn legacy_requests_are_accepted() {
        let parse = |s: &str| parse_request(s.as_bytes()).unwrap();
        assert_eq!(
            parse(r#"{"sender_cid":"3","message":"attach-hsm"}"#).message,
            Command::AttachHsm
        );
        assert_eq!(
            parse(r#"{"sender_cid":"3","message":"detach-hsm"}"#).message,
            Command::DetachHsm
        );
        assert_eq!(
            parse(r#"{"sender_cid":"3","message":"set-node-id [node-1]"}"#),
            Request {
                sender_cid: 3,
                message: Command::SetNodeId(NodeIdData {
                    node_id: "node-1".into()
                })
            }
        );
        assert_eq!(
            parse(r#"{"sender_cid":"7","message":"notify [2, Hello World]"}"#).message,
            Command::Notify(NotifyData {
                count: 2,
                message: "Hello World".into()
            })
        );
        assert_eq!(
            parse(r#"{"sender_cid":"3","message":"upgrade [https://e.com/x 0x11]"}"#).message,
            Command::Upgrade(UpgradeData {
                url: "https://e.com/x".into(),
                target_hash: "0x11".into()
            })
        );
    }

    #[test]
    fn bad_requests_are_errors() {
        for bad in [
            &br#"{"sender_cid":3,"message":"reboot"}"#[..],
            br#"{"sender_cid":"x","message":"attach-hsm"}"#,
            br#"{"sender_cid":"3","message":"rm -rf /"}"#,
            br#"{"sender_cid":"3","message":"notify [many, x]"}"#,
            b"not json",
            b"\xff\xfe",
            br#"{"sender_cid":3}"#,
        ] {
            assert!(
                parse_request(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_request(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
            Err(ProtocolError::TooLarge)
        ));
    }

    #[test]
    fn oversize_response_becomes_an_error() {
        let big: Response = Ok(Payload::HostOSVersion("x".repeat(MAX_MESSAGE_BYTES)));
        assert_eq!(encode_response(&big), br#"{"Err":"response too large"}"#);
    }
}
