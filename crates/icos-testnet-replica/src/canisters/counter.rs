//! The counter canister.
//!
//! ```candid
//! service : {
//!   inc : () -> (nat);
//!   read : () -> (nat) query;
//!   get : () -> (nat) query;
//! }
//! ```
//!
//! `inc` adds one and returns the new value; `read` and `get` return the
//! value. `__get_candid_interface_tmp_hack` returns the interface above.

use candid::{Nat, Principal};

use super::{CallContext, Canister, Outcome, Reject};
use crate::hash::{Hash, sha256};

/// The Candid interface of the counter.
pub const CANDID: &str = "service : {\n  inc : () -> (nat);\n  read : () -> (nat) query;\n  get : () -> (nat) query;\n}\n";

/// The counter canister's state.
#[derive(Debug, Clone)]
pub struct Counter {
    id: Principal,
    value: Nat,
}

impl Counter {
    /// A counter at zero.
    pub fn new(id: Principal) -> Self {
        Counter {
            id,
            value: Nat::from(0u8),
        }
    }

    /// The current value.
    pub fn value(&self) -> &Nat {
        &self.value
    }

    fn no_args(&self, arg: &[u8]) -> Result<(), Reject> {
        candid::decode_args::<()>(arg).map_err(|e| Reject::trap(&self.id, e))
    }

    fn reply<T: candid::CandidType>(&self, v: &T) -> Outcome {
        candid::encode_one(v).map_err(|e| Reject::trap(&self.id, e))
    }
}

impl Canister for Counter {
    fn id(&self) -> Principal {
        self.id
    }

    fn module_hash(&self) -> Hash {
        sha256(b"icos-testnet-replica built-in canister: counter")
    }

    fn certified_data(&self) -> Vec<u8> {
        Vec::new()
    }

    fn query(&self, method: &str, arg: &[u8], _ctx: &CallContext<'_>) -> Option<Outcome> {
        match method {
            "read" | "get" => Some(self.no_args(arg).and_then(|()| self.reply(&self.value))),
            "__get_candid_interface_tmp_hack" => Some(
                self.no_args(arg)
                    .and_then(|()| self.reply(&CANDID.to_string())),
            ),
            _ => None,
        }
    }

    fn update(&mut self, method: &str, arg: &[u8], ctx: &CallContext<'_>) -> Option<Outcome> {
        match method {
            "inc" => Some(self.no_args(arg).and_then(|()| {
                self.value += 1u8;
                self.reply(&self.value)
            })),
            // As on the IC, query methods can also be called as updates.
            other => self.query(other, arg, ctx),
        }
    }
}
