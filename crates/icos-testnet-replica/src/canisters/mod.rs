//! The built-in canisters. A testnet replica runs no Wasm: each subnet hosts
//! the same two canisters, implemented here and speaking Candid.
//!
//! | canister | interface |
//! |----------|-----------|
//! | [`counter::Counter`] | `inc : () -> (nat)`, `read : () -> (nat) query`, `get : () -> (nat) query` |
//! | [`assets::Assets`] | `http_request : (HttpRequest) -> (HttpResponse) query`, certified (v2) |

pub mod assets;
pub mod counter;

use candid::Principal;

use crate::hash::Hash;

/// Reject code 3, DESTINATION_INVALID.
pub const DESTINATION_INVALID: u64 = 3;
/// Reject code 4, CANISTER_REJECT.
pub const CANISTER_REJECT: u64 = 4;
/// Reject code 5, CANISTER_ERROR.
pub const CANISTER_ERROR: u64 = 5;

/// A reject, as a canister or the replica gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The reject code (1..=6).
    pub code: u64,
    /// The message.
    pub message: String,
    /// The error code, e.g. `IC0302`.
    pub error_code: String,
}

impl Reject {
    /// The canister has no such method (`IC0302`).
    pub fn no_method(canister: &Principal, kind: &str, method: &str) -> Self {
        Reject {
            code: DESTINATION_INVALID,
            message: format!(
                "Canister {} has no {kind} method '{method}'",
                canister.to_text()
            ),
            error_code: "IC0302".into(),
        }
    }

    /// The canister trapped (`IC0503`), e.g. on an argument it cannot decode.
    pub fn trap(canister: &Principal, why: impl std::fmt::Display) -> Self {
        Reject {
            code: CANISTER_ERROR,
            message: format!(
                "Error from Canister {}: Canister called `ic0.trap` with message: {why}",
                canister.to_text()
            ),
            error_code: "IC0503".into(),
        }
    }

    /// There is no such canister (`IC0301`).
    pub fn not_found(canister: &Principal) -> Self {
        Reject {
            code: DESTINATION_INVALID,
            message: format!("Canister {} not found", canister.to_text()),
            error_code: "IC0301".into(),
        }
    }
}

/// What a method returns: a Candid reply or a reject.
pub type Outcome = Result<Vec<u8>, Reject>;

/// What a method can see of its call.
pub struct CallContext<'a> {
    /// The caller.
    pub caller: Principal,
    /// Produces the canister's data certificate (a certificate over its
    /// `certified_data` and `/time`), as `ic0.data_certificate` does.
    pub data_certificate: &'a dyn Fn() -> Vec<u8>,
}

/// A built-in canister.
pub trait Canister: Send + Sync {
    /// The canister id.
    fn id(&self) -> Principal;
    /// A stand-in for the Wasm module's hash, in `/canister/<id>/module_hash`.
    fn module_hash(&self) -> Hash;
    /// The certified data, in `/canister/<id>/certified_data`.
    fn certified_data(&self) -> Vec<u8>;
    /// Runs a query method; `None` when there is no such query method.
    fn query(&self, method: &str, arg: &[u8], ctx: &CallContext<'_>) -> Option<Outcome>;
    /// Runs an update method; `None` when there is no such update method.
    fn update(&mut self, method: &str, arg: &[u8], ctx: &CallContext<'_>) -> Option<Outcome>;
}
