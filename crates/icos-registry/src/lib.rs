//! The governance registry of an icos network, certified with TUF.
//!
//! - [`model`]: the registry document (`registry.json`): elected GuestOS and
//!   HostOS versions, subnets, nodes, node operators, the unassigned-nodes
//!   version, the routing table, API boundary nodes and firewall rules, with
//!   a version that grows by one per change, validated as a whole.
//! - [`proposal`]: the proposal kinds and the pure function applying one to
//!   a registry, refusing invalid changes with the reason.
//! - [`repo`]: the TUF repository on disk: `init`, `propose`, `vote`,
//!   `execute` (only with a quorum of governance votes), `refresh`, root
//!   rotation by the old quorum.
//! - [`client`]: fetching and verifying the registry on a node, from a list
//!   of URLs in rotated order, keeping the last verified copy.
//! - [`join`]: node registration without a vote: join requests signed by
//!   an authorized node operator, within its allowance.
//! - [`serve`]: serving a repository as static files over HTTP.
//! - [`release`]: the SHA-256 of a release package, from the file or from
//!   `SHA256SUMS`.
//!
//! Roles: governance keys (Ed25519, `k` of `n`) hold root and targets; one
//! online key holds snapshot and timestamp. The registry document is the
//! TUF target `registry.json`; a vote is a governance signature over the
//! exact targets metadata a proposal would publish.

pub mod client;
pub mod error;
pub mod join;
pub mod keys;
pub mod model;
pub mod operator;
pub mod proposal;
pub mod release;
pub mod repo;
pub mod serve;

#[cfg(test)]
mod flow_tests;

pub use client::{FetchError, Verified, fetch, fetch_any};
pub use error::RepoError;
pub use keys::SigningKey;
pub use model::Registry;
pub use proposal::{Proposal, ProposalError};
pub use repo::{Lifetimes, Repo};
