//! A replica for local testnets.
//!
//! It serves the IC HTTP interface (`/api/v2/status`, query, call v2/v3/v4,
//! read_state) for the canisters in its subnet's ranges, so that clients no
//! one here wrote — `ic-agent`, `@dfinity/agent` — and routers can be tested
//! against it on one machine. What it does for real: request ids (the
//! representation-independent hash), sender authentication (Ed25519,
//! secp256k1 and P-256 DER keys, anonymous senders, the expiry window),
//! BLS12-381 certificates signed by a subnet key that the testnet's root key
//! delegates to, node-signed query responses, and a state tree per the
//! specification. What it does not do: consensus, Wasm execution, or any
//! replication of state between replicas; its canisters are built in
//! ([`canisters`]).
//!
//! | module | concern |
//! |--------|---------|
//! | [`config`] | the testnet configuration file and derived ids |
//! | [`keys`] | key derivation and DER encodings |
//! | [`hash`] | representation-independent hash, request ids, LEB128 |
//! | [`cbor`] | CBOR helpers |
//! | [`envelope`] | envelope decoding, expiry, sender authentication |
//! | [`tree`] | state tree, witnesses, certificates |
//! | [`canisters`] | the built-in counter and asset canisters |
//! | [`replica`] | request handling and state |
//! | [`server`] | HTTP endpoints |
//!
//! [`start`] binds and serves; [`RunningReplica::shutdown`] stops.

pub mod canisters;
pub mod cbor;
pub mod config;
pub mod envelope;
pub mod hash;
pub mod keys;
pub mod replica;
pub mod server;
pub mod tree;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::Testnet;
pub use ed25519_consensus::SigningKey;
pub use replica::now_ns;
pub use replica::{Replica, ReplicaSettings};

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The replica's settings do not fit the testnet.
    #[error(transparent)]
    Setup(#[from] replica::SetupError),
    /// The address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A replica serving in the background.
#[derive(Debug)]
pub struct RunningReplica {
    addr: SocketAddr,
    replica: Arc<Replica>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningReplica {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The replica.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Stops accepting and waits for open connections to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Stops at once, dropping open connections (as a killed process would).
    pub fn abort(self) {
        self.task.abort();
    }

    /// Waits until the server stops (it stops on its own only on an error).
    pub async fn wait(mut self) -> std::io::Result<()> {
        let _keep = self.stop.take();
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Sets up a replica, binds `addr` and serves in the background. Must be
/// called within a Tokio runtime.
pub async fn start(
    settings: ReplicaSettings,
    addr: SocketAddr,
) -> Result<RunningReplica, StartError> {
    let replica = Arc::new(Replica::new(settings)?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, replica.clone(), async move {
        let _ = stopped.await;
    }));
    tracing::info!(
        addr = %bound,
        subnet = %replica.subnet().id,
        node = %replica.node_id(),
        "testnet replica listening"
    );
    Ok(RunningReplica {
        addr: bound,
        replica,
        stop: Some(stop),
        task,
    })
}
