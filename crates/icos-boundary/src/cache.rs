//! A short-lived cache of query replies.
//!
//! Only canister queries are cached, and only those without a nonce from
//! the anonymous sender (unless non-anonymous caching is enabled). The key
//! is (canister id, sender, method name, ingress expiry, arg): clients that
//! round their expiry share entries. Only 200 replies are stored, each for
//! `ttl`. Memory is bounded by a total size in bytes and a per-item size.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::envelope::Content;
use crate::principal::Principal;
use crate::routes::RequestType;

/// Bookkeeping overhead charged per entry, in bytes.
const ENTRY_OVERHEAD: usize = 256;

/// Why a request skipped the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// Not a canister query.
    IncorrectRequestType,
    /// The request has a nonce.
    Nonce,
    /// The sender is not anonymous.
    NonAnonymous,
}

impl BypassReason {
    /// The `x-ic-cache-bypass-reason` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IncorrectRequestType => "incorrect_request_type",
            Self::Nonce => "nonce",
            Self::NonAnonymous => "non_anonymous",
        }
    }
}

/// What the cache did for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// No cache configured.
    Disabled,
    /// Not cacheable.
    Bypass(BypassReason),
    /// Answered from the cache.
    Hit,
    /// Looked up, not found.
    Miss,
}

impl CacheStatus {
    /// The `x-ic-cache-status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "DISABLED",
            Self::Bypass(_) => "BYPASS",
            Self::Hit => "HIT",
            Self::Miss => "MISS",
        }
    }
}

/// Cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Total size bound, in bytes.
    pub max_size: usize,
    /// Largest reply stored, in bytes.
    pub max_item_size: usize,
    /// How long a reply is served.
    pub ttl: Duration,
    /// Whether queries from non-anonymous senders are cached too.
    pub cache_non_anonymous: bool,
}

/// The cache key of a query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    canister_id: Principal,
    sender: Option<Principal>,
    method_name: Option<String>,
    ingress_expiry: Option<u64>,
    arg: Option<Vec<u8>>,
}

impl CacheKey {
    /// The key of a query to `canister_id` with this content.
    pub fn new(canister_id: Principal, content: &Content) -> Self {
        CacheKey {
            canister_id,
            sender: content.sender,
            method_name: content.method_name.clone(),
            ingress_expiry: content.ingress_expiry,
            arg: content.arg.clone(),
        }
    }

    fn size(&self) -> usize {
        self.method_name.as_ref().map_or(0, String::len) + self.arg.as_ref().map_or(0, Vec::len)
    }
}

/// A stored reply.
#[derive(Debug, Clone)]
pub struct CachedReply {
    /// Its status (always 200).
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// The replica that gave it.
    pub node_id: Principal,
}

#[derive(Debug)]
struct Entry {
    reply: CachedReply,
    stored: Instant,
    size: usize,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<CacheKey, Entry>,
    size: usize,
}

/// The query cache.
#[derive(Debug)]
pub struct QueryCache {
    cfg: CacheConfig,
    inner: Mutex<Inner>,
}

/// Whether a request may use the cache, and if not why.
pub fn bypass_reason(
    request_type: RequestType,
    content: &Content,
    cache_non_anonymous: bool,
) -> Option<BypassReason> {
    if !request_type.is_query() {
        Some(BypassReason::IncorrectRequestType)
    } else if content.nonce.is_some() {
        Some(BypassReason::Nonce)
    } else if !content.is_anonymous() && !cache_non_anonymous {
        Some(BypassReason::NonAnonymous)
    } else {
        None
    }
}

impl QueryCache {
    /// An empty cache.
    pub fn new(cfg: CacheConfig) -> Self {
        QueryCache {
            cfg,
            inner: Mutex::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// The fresh reply for `key` at `now`, if any.
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<CachedReply> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = inner.map.get(key)?;
        if now.saturating_duration_since(entry.stored) < self.cfg.ttl {
            return Some(entry.reply.clone());
        }
        if let Some(old) = inner.map.remove(key) {
            inner.size -= old.size;
        }
        None
    }

    /// Stores a 200 reply; other replies, oversized ones, and replies that
    /// do not fit after dropping expired entries are not stored.
    pub fn insert(&self, key: CacheKey, reply: CachedReply, now: Instant) -> bool {
        if reply.status != StatusCode::OK || reply.body.len() > self.cfg.max_item_size {
            return false;
        }
        let size = reply.body.len() + key.size() + ENTRY_OVERHEAD;
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = inner.map.remove(&key) {
            inner.size -= old.size;
        }
        if inner.size + size > self.cfg.max_size {
            let ttl = self.cfg.ttl;
            let mut freed = 0;
            inner.map.retain(|_, e| {
                let keep = now.saturating_duration_since(e.stored) < ttl;
                if !keep {
                    freed += e.size;
                }
                keep
            });
            inner.size -= freed;
            if inner.size + size > self.cfg.max_size {
                return false;
            }
        }
        inner.size += size;
        inner.map.insert(
            key,
            Entry {
                reply,
                stored: now,
                size,
            },
        );
        true
    }

    /// Number of entries and their total size in bytes.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (inner.map.len(), inner.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(sender: Principal, nonce: bool, expiry: u64, arg: &[u8]) -> Content {
        Content {
            request_type: Some("query".into()),
            sender: Some(sender),
            canister_id: None,
            method_name: Some("get".into()),
            nonce: nonce.then(|| vec![1, 2]),
            ingress_expiry: Some(expiry),
            arg: Some(arg.to_vec()),
        }
    }

    fn reply(body: &'static [u8]) -> CachedReply {
        CachedReply {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body),
            node_id: Principal::ANONYMOUS,
        }
    }

    fn cache(ttl_ms: u64, max_size: usize) -> QueryCache {
        QueryCache::new(CacheConfig {
            max_size,
            max_item_size: 100,
            ttl: Duration::from_millis(ttl_ms),
            cache_non_anonymous: false,
        })
    }

    #[test]
    fn only_anonymous_nonce_free_queries_are_cacheable() {
        let anon = content(Principal::ANONYMOUS, false, 1, b"x");
        let user = content(Principal::from_slice(&[9; 29]).unwrap(), false, 1, b"x");
        let nonce = content(Principal::ANONYMOUS, true, 1, b"x");
        assert_eq!(bypass_reason(RequestType::QueryV3, &anon, false), None);
        assert_eq!(bypass_reason(RequestType::QueryV2, &anon, false), None);
        assert_eq!(
            bypass_reason(RequestType::CallV3, &anon, false),
            Some(BypassReason::IncorrectRequestType)
        );
        assert_eq!(
            bypass_reason(RequestType::ReadStateV3, &anon, false),
            Some(BypassReason::IncorrectRequestType)
        );
        assert_eq!(
            bypass_reason(RequestType::QueryV3, &nonce, false),
            Some(BypassReason::Nonce)
        );
        assert_eq!(
            bypass_reason(RequestType::QueryV3, &user, false),
            Some(BypassReason::NonAnonymous)
        );
        assert_eq!(bypass_reason(RequestType::QueryV3, &user, true), None);
    }

    #[test]
    fn keys_separate_canister_expiry_and_arg() {
        let c1 = Principal::from_slice(&[1]).unwrap();
        let c2 = Principal::from_slice(&[2]).unwrap();
        let a = content(Principal::ANONYMOUS, false, 1, b"x");
        assert_eq!(CacheKey::new(c1, &a), CacheKey::new(c1, &a.clone()));
        assert_ne!(CacheKey::new(c1, &a), CacheKey::new(c2, &a));
        let later = content(Principal::ANONYMOUS, false, 2, b"x");
        assert_ne!(CacheKey::new(c1, &a), CacheKey::new(c1, &later));
        let other_arg = content(Principal::ANONYMOUS, false, 1, b"y");
        assert_ne!(CacheKey::new(c1, &a), CacheKey::new(c1, &other_arg));
    }

    #[test]
    fn entries_expire_and_size_is_bounded() {
        let c = cache(1000, 2 * (ENTRY_OVERHEAD + 20));
        let t0 = Instant::now();
        let key = |n: u8| {
            CacheKey::new(
                Principal::from_slice(&[n]).unwrap(),
                &content(Principal::ANONYMOUS, false, 1, b"a"),
            )
        };
        assert!(c.insert(key(1), reply(b"0123456789"), t0));
        assert_eq!(
            c.get(&key(1), t0).unwrap().body,
            Bytes::from_static(b"0123456789")
        );
        assert!(c.get(&key(2), t0).is_none());
        assert!(c.insert(key(2), reply(b"0123456789"), t0));
        assert!(!c.insert(key(3), reply(b"0123456789"), t0), "full");
        // Expired entries make room and are not served.
        let t1 = t0 + Duration::from_millis(1500);
        assert!(c.get(&key(1), t1).is_none());
        assert!(c.insert(key(3), reply(b"0123456789"), t1));
        assert_eq!(
            c.usage().0,
            2,
            "the expired key 2 is only dropped when room is needed"
        );
        assert!(c.insert(key(5), reply(b"0123456789"), t1));
        assert_eq!(c.usage().0, 2);
        assert!(c.get(&key(2), t1).is_none());
        // Non-200 and oversized replies are not stored.
        let mut r = reply(b"x");
        r.status = StatusCode::ACCEPTED;
        assert!(!c.insert(key(4), r, t1));
        assert!(!c.insert(key(4), reply(&[0u8; 101]), t1));
    }
}
