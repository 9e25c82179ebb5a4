//! One replica: its canisters, the statuses of the calls it executed, its
//! state tree, and the handling of each kind of request, independent of
//! HTTP.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use candid::Principal;
use ciborium::Value;

use crate::canisters::assets::Assets;
use crate::canisters::counter::Counter;
use crate::canisters::{CallContext, Canister, Outcome, Reject};
use crate::cbor::{encode_tagged, map, nat};
use crate::config::{Subnet, Testnet};
use crate::envelope::{EnvelopeError, Request, RequestType, decode_request};
use crate::hash::{Hash, hash_of_map, leb128_u128};
use crate::tree::{Delegation, Selection, StateNode, certificate};

/// How long a call's status stays readable: 5 minutes plus 60 s of drift.
pub const STATUS_RETENTION_NS: u64 = 360 * 1_000_000_000;
/// At most this many call statuses are kept; the oldest go first.
pub const MAX_STATUSES: usize = 5_000;

/// The domain separator of query response signatures.
pub const RESPONSE_DOMAIN: &[u8] = b"\x0Bic-response";

/// Why a request was refused; [`RequestError::status`] is its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Malformed envelope, bad expiry or failed authentication (400).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The effective canister id is outside this subnet's ranges (400).
    #[error("Canister {canister} is not in the canister ranges of subnet {subnet}")]
    CanisterNotInSubnet {
        /// The canister id.
        canister: String,
        /// This replica's subnet.
        subnet: String,
    },
    /// The subnet id in the URL is not this replica's subnet (404).
    #[error("Subnet {0} is not served by this replica")]
    SubnetNotFound(String),
    /// The body's `canister_id` differs from the URL's (400).
    #[error("Specified CanisterId {content} does not match effective canister id in URL {url}")]
    CanisterIdMismatch {
        /// `canister_id` in the content.
        content: String,
        /// The effective canister id in the URL.
        url: String,
    },
    /// The body's `request_type` does not fit the endpoint (400).
    #[error("Expected a '{expected}' request, got '{got}'")]
    WrongRequestType {
        /// What the endpoint takes.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// A read_state path names a request of another sender (403).
    #[error("{0}")]
    Forbidden(String),
    /// A read_state path is not allowed on this endpoint (404).
    #[error("Invalid path requested: {0}")]
    InvalidPath(String),
    /// A read_state request is otherwise malformed (400).
    #[error("{0}")]
    BadPaths(String),
}

impl RequestError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::SubnetNotFound(_) | RequestError::InvalidPath(_) => 404,
            RequestError::Forbidden(_) => 403,
            _ => 400,
        }
    }
}

/// The outcome of a call request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallReply {
    /// 202 Accepted, empty body.
    Accepted,
    /// 200 with a CBOR body.
    Cbor(Vec<u8>),
}

/// What a replica is told at start.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// The testnet.
    pub testnet: Arc<Testnet>,
    /// Which subnet this replica belongs to.
    pub subnet: Principal,
    /// Which of the subnet's nodes it is (0-based).
    pub node_index: u32,
    /// `impl_version` in the status: the GuestOS version it runs in.
    pub impl_version: String,
    /// How far behind the wall clock the reported `certified_height` is
    /// (to test routers' height-lag rule).
    pub height_lag: u64,
}

struct StatusEntry {
    sender: Principal,
    outcome: Outcome,
    time_ns: u64,
}

struct State {
    canisters: Vec<Box<dyn Canister>>,
    statuses: HashMap<Hash, StatusEntry>,
    order: VecDeque<Hash>,
}

/// Why a replica could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The subnet is not in the testnet.
    #[error("subnet {0} is not in the testnet configuration")]
    UnknownSubnet(String),
    /// The node index is too large.
    #[error("subnet {subnet} has {nodes} nodes; node index {index} does not exist")]
    UnknownNode {
        /// The subnet.
        subnet: String,
        /// How many nodes it has.
        nodes: usize,
        /// The index asked for.
        index: u32,
    },
    /// A built-in canister could not be set up.
    #[error("setting up the asset canister: {0}")]
    Assets(String),
}

/// A running replica's state.
pub struct Replica {
    testnet: Arc<Testnet>,
    subnet: usize,
    node: usize,
    impl_version: String,
    height_lag: u64,
    delegation: Delegation,
    state: Mutex<State>,
    handled: AtomicU64,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("subnet", &self.subnet().id.to_text())
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn leb(n: u64) -> StateNode {
    StateNode::Leaf(leb128_u128(u128::from(n)))
}

fn ranges_cbor(ranges: &[(Principal, Principal)]) -> Vec<u8> {
    let v = Value::Array(
        ranges
            .iter()
            .map(|(a, b)| {
                Value::Array(vec![
                    Value::Bytes(a.as_slice().to_vec()),
                    Value::Bytes(b.as_slice().to_vec()),
                ])
            })
            .collect(),
    );
    encode_tagged(&v)
}

/// Adds `/canister_ranges/<sid>/<start>` (one shard per range) and
/// `/subnet/<sid>/{public_key, canister_ranges}`.
fn add_subnet_keys_and_ranges(tree: &mut StateNode, s: &Subnet) {
    let sid = s.id.as_slice();
    tree.insert(
        &[b"subnet", sid, b"public_key"],
        StateNode::Leaf(s.key_der.clone()),
    );
    tree.insert(
        &[b"subnet", sid, b"canister_ranges"],
        StateNode::Leaf(ranges_cbor(&s.ranges)),
    );
    for r in &s.ranges {
        tree.insert(
            &[b"canister_ranges", sid, r.0.as_slice()],
            StateNode::Leaf(ranges_cbor(std::slice::from_ref(r))),
        );
    }
}

impl Replica {
    /// Sets up a replica: its canisters and its root delegation.
    pub fn new(settings: ReplicaSettings) -> Result<Replica, SetupError> {
        let testnet = settings.testnet;
        let subnet = testnet
            .subnets
            .iter()
            .position(|s| s.id == settings.subnet)
            .ok_or_else(|| SetupError::UnknownSubnet(settings.subnet.to_text()))?;
        let s = &testnet.subnets[subnet];
        let node = usize::try_from(settings.node_index).unwrap_or(usize::MAX);
        if node >= s.nodes.len() {
            return Err(SetupError::UnknownNode {
                subnet: s.id.to_text(),
                nodes: s.nodes.len(),
                index: settings.node_index,
            });
        }
        let mut tree = StateNode::sub();
        tree.insert(&[b"time"], leb(now_ns()));
        add_subnet_keys_and_ranges(&mut tree, s);
        let delegation = Delegation {
            subnet_id: s.id.as_slice().to_vec(),
            certificate: certificate(&tree.full(), &testnet.root_key, None),
        };
        let canisters: Vec<Box<dyn Canister>> = vec![
            Box::new(Counter::new(s.counter_id)),
            Box::new(Assets::new(s.assets_id).map_err(SetupError::Assets)?),
        ];
        Ok(Replica {
            subnet,
            node,
            impl_version: settings.impl_version,
            height_lag: settings.height_lag,
            delegation,
            state: Mutex::new(State {
                canisters,
                statuses: HashMap::new(),
                order: VecDeque::new(),
            }),
            handled: AtomicU64::new(0),
            testnet,
        })
    }

    /// This replica's subnet.
    pub fn subnet(&self) -> &Subnet {
        &self.testnet.subnets[self.subnet]
    }

    /// This replica's node id.
    pub fn node_id(&self) -> Principal {
        self.subnet().nodes[self.node].id
    }

    /// The testnet.
    pub fn testnet(&self) -> &Testnet {
        &self.testnet
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many well-formed query, call and read_state requests this replica
    /// has handled (routers' tests use it to see where requests went).
    pub fn requests_handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// The certified height reported in the status: one block a second,
    /// counted from the Unix epoch (so all replicas of a subnet agree), less
    /// the configured lag.
    pub fn certified_height(&self) -> u64 {
        (now_ns() / 1_000_000_000).saturating_sub(self.height_lag)
    }

    /// The `/api/v2/status` body.
    pub fn status(&self) -> Vec<u8> {
        encode_tagged(&map(vec![
            ("root_key", Value::Bytes(self.testnet.root_key_der.clone())),
            ("impl_version", Value::Text(self.impl_version.clone())),
            ("replica_health_status", Value::Text("healthy".into())),
            ("certified_height", nat(self.certified_height())),
        ]))
    }

    fn state_tree(&self, state: &State, now: u64) -> StateNode {
        let mut tree = StateNode::sub();
        tree.insert(&[b"time"], leb(now));
        for s in &self.testnet.subnets {
            let sid = s.id.as_slice();
            tree.insert(
                &[b"subnet", sid, b"public_key"],
                StateNode::Leaf(s.key_der.clone()),
            );
            tree.insert(
                &[b"subnet", sid, b"type"],
                StateNode::Leaf(s.subnet_type.as_bytes().to_vec()),
            );
            tree.insert(
                &[b"subnet", sid, b"canister_ranges"],
                StateNode::Leaf(ranges_cbor(&s.ranges)),
            );
            for n in &s.nodes {
                tree.insert(
                    &[b"subnet", sid, b"node", n.id.as_slice(), b"public_key"],
                    StateNode::Leaf(n.key_der.clone()),
                );
            }
        }
        add_subnet_keys_and_ranges(&mut tree, self.subnet());
        for c in &state.canisters {
            let cid = c.id();
            let cid = cid.as_slice();
            tree.insert(
                &[b"canister", cid, b"certified_data"],
                StateNode::Leaf(c.certified_data()),
            );
            tree.insert(
                &[b"canister", cid, b"module_hash"],
                StateNode::Leaf(c.module_hash().to_vec()),
            );
            tree.insert(
                &[b"canister", cid, b"controllers"],
                StateNode::Leaf(encode_tagged(&Value::Array(Vec::new()))),
            );
        }
        for (id, st) in &state.statuses {
            let base: [&[u8]; 2] = [b"request_status", id];
            let put = |tree: &mut StateNode, k: &[u8], v: StateNode| {
                tree.insert(&[base[0], base[1], k], v);
            };
            match &st.outcome {
                Ok(reply) => {
                    put(&mut tree, b"status", StateNode::Leaf(b"replied".to_vec()));
                    put(&mut tree, b"reply", StateNode::Leaf(reply.clone()));
                }
                Err(r) => {
                    put(&mut tree, b"status", StateNode::Leaf(b"rejected".to_vec()));
                    put(&mut tree, b"reject_code", leb(r.code));
                    put(
                        &mut tree,
                        b"reject_message",
                        StateNode::Leaf(r.message.as_bytes().to_vec()),
                    );
                    put(
                        &mut tree,
                        b"error_code",
                        StateNode::Leaf(r.error_code.as_bytes().to_vec()),
                    );
                }
            }
        }
        tree
    }

    fn certify(&self, state: &State, paths: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let now = now_ns();
        let tree = self.state_tree(state, now);
        let mut sel = Selection::of(paths);
        sel.add(&[b"time".to_vec()]);
        certificate(
            &tree.witness(&sel),
            &self.subnet().key,
            Some(&self.delegation),
        )
    }

    fn check_canister(&self, ecid: &Principal) -> Result<(), RequestError> {
        if self.subnet().hosts(ecid) {
            Ok(())
        } else {
            Err(RequestError::CanisterNotInSubnet {
                canister: ecid.to_text(),
                subnet: self.subnet().id.to_text(),
            })
        }
    }

    fn decode(
        &self,
        body: &[u8],
        expected: RequestType,
        ecid: Option<&Principal>,
    ) -> Result<Request, RequestError> {
        let req = decode_request(body, now_ns())?;
        self.handled.fetch_add(1, Ordering::Relaxed);
        if req.request_type != expected {
            return Err(RequestError::WrongRequestType {
                expected: expected.as_str(),
                got: req.request_type.as_str(),
            });
        }
        if let (Some(ecid), Some(cid)) = (ecid, req.canister_id.as_ref())
            && ecid != cid
        {
            return Err(RequestError::CanisterIdMismatch {
                content: cid.to_text(),
                url: ecid.to_text(),
            });
        }
        Ok(req)
    }

    fn data_certificate_fn<'a>(
        &'a self,
        state: &'a State,
        cid: Principal,
    ) -> impl Fn() -> Vec<u8> + 'a {
        move || {
            self.certify(
                state,
                &[vec![
                    b"canister".to_vec(),
                    cid.as_slice().to_vec(),
                    b"certified_data".to_vec(),
                ]],
            )
        }
    }

    /// Handles a query to canister `ecid` (`/api/v2|v3/canister/<ecid>/query`).
    pub fn query(&self, ecid: &Principal, body: &[u8]) -> Result<Vec<u8>, RequestError> {
        self.check_canister(ecid)?;
        let req = self.decode(body, RequestType::Query, Some(ecid))?;
        let method = req.method_name.clone().unwrap_or_default();
        let outcome = {
            let state = self.lock();
            match state.canisters.iter().find(|c| c.id() == *ecid) {
                None => Err(Reject::not_found(ecid)),
                Some(c) => {
                    let cert = self.data_certificate_fn(&state, *ecid);
                    let ctx = CallContext {
                        caller: req.sender,
                        data_certificate: &cert,
                    };
                    c.query(&method, &req.arg, &ctx)
                        .unwrap_or_else(|| Err(Reject::no_method(ecid, "query", &method)))
                }
            }
        };
        Ok(self.signed_query_response(&req.id, outcome))
    }

    /// A subnet-scoped query (`/api/v3/subnet/<sid>/query`): only for the
    /// management canister, which this replica does not have.
    pub fn subnet_query(&self, sid: &Principal, body: &[u8]) -> Result<Vec<u8>, RequestError> {
        self.check_subnet(sid)?;
        let req = self.decode(body, RequestType::Query, None)?;
        let cid = req.canister_id.unwrap_or(Principal::management_canister());
        Ok(self.signed_query_response(&req.id, Err(Reject::not_found(&cid))))
    }

    fn signed_query_response(&self, request_id: &Hash, outcome: Outcome) -> Vec<u8> {
        let timestamp = now_ns();
        let mut signable: Vec<(Value, Value)> = vec![
            (
                Value::Text("request_id".into()),
                Value::Bytes(request_id.to_vec()),
            ),
            (Value::Text("timestamp".into()), nat(timestamp)),
        ];
        let mut body: Vec<(&str, Value)> = Vec::new();
        match &outcome {
            Ok(arg) => {
                let reply = map(vec![("arg", Value::Bytes(arg.clone()))]);
                signable.push((Value::Text("status".into()), Value::Text("replied".into())));
                signable.push((Value::Text("reply".into()), reply.clone()));
                body.push(("status", Value::Text("replied".into())));
                body.push(("reply", reply));
            }
            Err(r) => {
                let fields = [
                    ("status", Value::Text("rejected".into())),
                    ("reject_code", nat(r.code)),
                    ("reject_message", Value::Text(r.message.clone())),
                    ("error_code", Value::Text(r.error_code.clone())),
                ];
                for (k, v) in fields {
                    signable.push((Value::Text(k.into()), v.clone()));
                    body.push((k, v));
                }
            }
        }
        // Every value above has a hash: text keys, no floats.
        let digest = hash_of_map(&signable).unwrap_or([0; 32]);
        let mut msg = RESPONSE_DOMAIN.to_vec();
        msg.extend_from_slice(&digest);
        let node = &self.subnet().nodes[self.node];
        let signature = node.key.sign(&msg);
        body.push((
            "signatures",
            Value::Array(vec![map(vec![
                ("timestamp", nat(timestamp)),
                ("signature", Value::Bytes(signature.to_bytes().to_vec())),
                ("identity", Value::Bytes(node.id.as_slice().to_vec())),
            ])]),
        ));
        encode_tagged(&map(body))
    }

    /// Handles an update call to canister `ecid`: `/api/v2/.../call` when
    /// `sync` is false (202 once accepted), `/api/v3|v4/.../call` when true
    /// (200 with a certificate of the request's status).
    pub fn call(
        &self,
        ecid: &Principal,
        body: &[u8],
        sync: bool,
    ) -> Result<CallReply, RequestError> {
        self.check_canister(ecid)?;
        let req = self.decode(body, RequestType::Call, Some(ecid))?;
        let method = req.method_name.clone().unwrap_or_default();
        let now = now_ns();
        let mut state = self.lock();
        prune(&mut state, now);
        if !state.statuses.contains_key(&req.id) {
            let Some(pos) = state.canisters.iter().position(|c| c.id() == *ecid) else {
                return Ok(non_replicated(&Reject::not_found(ecid), sync));
            };
            // The data certificate is not available to update calls.
            let no_cert = Vec::new;
            let ctx = CallContext {
                caller: req.sender,
                data_certificate: &no_cert,
            };
            let outcome = state.canisters[pos]
                .update(&method, &req.arg, &ctx)
                .unwrap_or_else(|| Err(Reject::no_method(ecid, "update", &method)));
            state.statuses.insert(
                req.id,
                StatusEntry {
                    sender: req.sender,
                    outcome,
                    time_ns: now,
                },
            );
            state.order.push_back(req.id);
            tracing::debug!(canister = %ecid, %method, request_id = %hex::encode(req.id), "executed call");
        }
        if !sync {
            return Ok(CallReply::Accepted);
        }
        let cert = self.certify(&state, &[vec![b"request_status".to_vec(), req.id.to_vec()]]);
        Ok(CallReply::Cbor(encode_tagged(&map(vec![
            ("status", Value::Text("replied".into())),
            ("certificate", Value::Bytes(cert)),
        ]))))
    }

    /// A subnet-scoped call (`/api/v4/subnet/<sid>/call`): only for the
    /// management canister, which this replica does not have.
    pub fn subnet_call(&self, sid: &Principal, body: &[u8]) -> Result<CallReply, RequestError> {
        self.check_subnet(sid)?;
        let req = self.decode(body, RequestType::Call, None)?;
        let cid = req.canister_id.unwrap_or(Principal::management_canister());
        Ok(non_replicated(&Reject::not_found(&cid), true))
    }

    fn check_subnet(&self, sid: &Principal) -> Result<(), RequestError> {
        if *sid == self.subnet().id {
            Ok(())
        } else {
            Err(RequestError::SubnetNotFound(sid.to_text()))
        }
    }

    /// Handles `/api/v2|v3/canister/<ecid>/read_state`.
    pub fn read_state(&self, ecid: &Principal, body: &[u8]) -> Result<Vec<u8>, RequestError> {
        self.check_canister(ecid)?;
        let req = self.decode(body, RequestType::ReadState, None)?;
        self.read_state_inner(Some(ecid), &req)
    }

    /// Handles `/api/v2|v3/subnet/<sid>/read_state`.
    pub fn read_subnet_state(&self, sid: &Principal, body: &[u8]) -> Result<Vec<u8>, RequestError> {
        self.check_subnet(sid)?;
        let req = self.decode(body, RequestType::ReadState, None)?;
        self.read_state_inner(None, &req)
    }

    fn read_state_inner(
        &self,
        ecid: Option<&Principal>,
        req: &Request,
    ) -> Result<Vec<u8>, RequestError> {
        let mut state = self.lock();
        prune(&mut state, now_ns());
        let mut request_id: Option<&[u8]> = None;
        for path in &req.paths {
            let show = || {
                path.iter()
                    .map(|l| match std::str::from_utf8(l) {
                        Ok(s) if s.chars().all(|c| c.is_ascii_graphic()) => s.to_string(),
                        _ => hex::encode(l),
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            };
            let first = path.first().map(Vec::as_slice);
            match (first, ecid) {
                (Some(b"time" | b"subnet" | b"canister_ranges" | b"api_boundary_nodes"), _) => {}
                (Some(b"request_status"), Some(_)) => {
                    let Some(rid) = path.get(1) else {
                        return Err(RequestError::InvalidPath(format!("/{}", show())));
                    };
                    if let Some(prev) = request_id
                        && prev != rid.as_slice()
                    {
                        return Err(RequestError::BadPaths(
                            "Can only request a single request ID in request_status paths".into(),
                        ));
                    }
                    request_id = Some(rid);
                    if let Ok(id) = <[u8; 32]>::try_from(rid.as_slice())
                        && let Some(st) = state.statuses.get(&id)
                        && st.sender != req.sender
                    {
                        return Err(RequestError::Forbidden(format!(
                            "Request IDs must be for requests signed by the caller: {} is not the sender of request 0x{}",
                            req.sender.to_text(),
                            hex::encode(id)
                        )));
                    }
                }
                (Some(b"canister"), Some(ecid)) => {
                    let Some(cid) = path.get(1) else {
                        return Err(RequestError::InvalidPath(format!("/{}", show())));
                    };
                    if cid.as_slice() != ecid.as_slice() {
                        return Err(RequestError::BadPaths(format!(
                            "Effective canister id in URL {} does not match requested canister id {}",
                            ecid.to_text(),
                            Principal::try_from_slice(cid)
                                .map(|p| p.to_text())
                                .unwrap_or_else(|_| hex::encode(cid))
                        )));
                    }
                    match path.get(2).map(Vec::as_slice) {
                        Some(b"module_hash" | b"controllers" | b"metadata") => {}
                        _ => return Err(RequestError::InvalidPath(format!("/{}", show()))),
                    }
                }
                _ => return Err(RequestError::InvalidPath(format!("/{}", show()))),
            }
        }
        let cert = self.certify(&state, &req.paths);
        drop(state);
        Ok(encode_tagged(&map(vec![(
            "certificate",
            Value::Bytes(cert),
        )])))
    }
}

fn non_replicated(r: &Reject, sync: bool) -> CallReply {
    let mut fields = Vec::new();
    if sync {
        fields.push(("status", Value::Text("non_replicated_rejection".into())));
    }
    fields.push(("reject_code", nat(r.code)));
    fields.push(("reject_message", Value::Text(r.message.clone())));
    fields.push(("error_code", Value::Text(r.error_code.clone())));
    CallReply::Cbor(encode_tagged(&map(fields)))
}

fn prune(state: &mut State, now: u64) {
    while let Some(id) = state.order.front().copied() {
        let expired = state
            .statuses
            .get(&id)
            .is_none_or(|s| now.saturating_sub(s.time_ns) > STATUS_RETENTION_NS);
        if expired || state.order.len() > MAX_STATUSES {
            state.order.pop_front();
            state.statuses.remove(&id);
        } else {
            break;
        }
    }
}
