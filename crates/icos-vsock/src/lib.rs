//! The vsock control channel between GuestOS and HostOS, as IC defines it.
//!
//! GuestOS asks its host for a few allow-listed things over a vsock stream to
//! port 19090: the protocol and HostOS versions, a console notice, storing the
//! node id, and downloading a HostOS upgrade. This crate has:
//!
//! - [`protocol`]: the JSON request and response types, byte-compatible with
//!   IC (including the legacy string request form);
//! - [`transport`]: AF_VSOCK and Unix-socket listeners and connections behind
//!   one seam (Unix sockets serve vhost-user-vsock's `PATH_19090` and tests);
//! - [`server`]: the HostOS agent that checks the sender and runs commands;
//! - [`upgrade`]: the download-and-verify step of `upgrade`;
//! - [`hostos_upgrade`]: installing the verified image into HostOS's spare
//!   slot, committing and rebooting; confirming the boot once GuestOS runs;
//! - [`client`]: the guest side, one request per connection.
//!
//! The channel is a narrow, allow-listed control interface, not a trust
//! boundary: an `upgrade` is only kept when its SHA-256 matches.

pub mod client;
pub mod hostos_upgrade;
pub mod protocol;
pub mod server;
pub mod transport;
pub mod upgrade;

pub use protocol::{Command, Payload, Request, Response};
