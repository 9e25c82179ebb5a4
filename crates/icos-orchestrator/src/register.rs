//! Node registration from the node's side: the node key and the join
//! request.
//!
//! At first boot the node generates its Ed25519 key ([`load_or_generate`],
//! PEM, mode 0600, written to a temporary name, synced and renamed, so a
//! crash never leaves half a key) in a directory that survives reboots and
//! upgrades. Its node id derives from the public key as the registry
//! derives it ([`node_id`]). [`join`] then fetches the verified registry
//! (the URLs rotated by the node id); when the node is not in it and a
//! node operator key is given, it signs a
//! [`JoinRequest`](icos_registry::join::JoinRequest) with the node key and
//! the operator key for the node's IPv6 address and posts it to
//! `<registry URL>/join`, the URLs in the same rotated order.
//!
//! A refusal (HTTP 4xx: unknown operator, bad signature, no allowance
//! left, node or address taken) stops with the registry's reason; network
//! errors and server errors (5xx) are retried with backoff.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use icos_registry::SigningKey;
use icos_registry::client::{ClientOptions, FetchError, Verified, fetch_any, rotated};
use icos_registry::join::{JOIN_SUCCESS, JoinRequest, JoinResponse};
use icos_registry::model::self_authenticating_id;
use url::Url;

use crate::target::seed_of;

/// Why registering the node failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The node key or the operator key is unusable.
    #[error("{0}")]
    Key(#[from] icos_registry::RepoError),
    /// Writing the node key failed.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The registry refused what it served (forged, rolled back ...) or the
    /// trust root is unusable.
    #[error("registry: {0}")]
    Registry(FetchError),
    /// The node is not registered and there is no operator key to join.
    #[error(
        "node {node_id} is not in registry version {registry_version} and no node operator key was given to join"
    )]
    NoOperatorKey {
        /// The node id.
        node_id: String,
        /// The registry version searched.
        registry_version: u64,
    },
    /// The registry service refused the join request.
    #[error("join request refused by {url} (HTTP {status}): {reason}")]
    Refused {
        /// The join URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's reason.
        reason: String,
    },
    /// No registry URL accepts join requests (`file://` URLs, read-only
    /// servers).
    #[error("no registry URL accepts join requests: {0}")]
    NoJoinUrl(String),
    /// Every attempt failed on the network.
    #[error("gave up after {attempts} attempt(s): {detail}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last errors.
        detail: String,
    },
}

/// The node id of a node key: SHA-224 of the DER public key, then `0x02`,
/// as text (the registry's rule).
pub fn node_id(key: &SigningKey) -> String {
    self_authenticating_id(&key.public_bytes())
}

/// Loads the node key at `path`, or generates it (mode 0600; the
/// directory is created with mode 0700). Returns the key and whether it
/// was generated now.
pub fn load_or_generate(path: &Path) -> Result<(SigningKey, bool), RegisterError> {
    use std::os::unix::fs::DirBuilderExt;
    if path.exists() {
        return Ok((SigningKey::load(path)?, false));
    }
    let io = |path: &Path, action| {
        let path = path.to_owned();
        move |source| RegisterError::Io {
            path,
            action,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io(&dir, "creating the key directory"))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&tmp, "removing a partial key")(e)),
    }
    SigningKey::generate(&tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp, "syncing"))?;
    std::fs::rename(&tmp, path).map_err(io(path, "renaming the new key into place"))?;
    std::fs::File::open(&dir)
        .and_then(|f| f.sync_all())
        .map_err(io(&dir, "syncing"))?;
    Ok((SigningKey::load(path)?, true))
}

/// Why one `POST /join` did not admit the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostError {
    /// The URL takes no join requests (HTTP 404 or 405: a read-only
    /// mirror): the next URL is tried.
    NotAccepted(String),
    /// The service answered another 4xx: a refusal, final.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The reason from the body (`error`), or the body.
        reason: String,
    },
    /// The network failed, or the service answered 5xx or garbage: worth
    /// retrying.
    Unavailable(String),
}

/// The join URL of a registry base URL.
pub fn join_url(base: &Url) -> Option<Url> {
    matches!(base.scheme(), "http" | "https")
        .then(|| base.join("join").ok())
        .flatten()
}

/// Posts `request` to `url` once.
pub async fn post_join(
    client: &reqwest::Client,
    url: &Url,
    request: &JoinRequest,
) -> Result<JoinResponse, PostError> {
    let body = serde_json::to_vec(request).map_err(|e| PostError::Unavailable(e.to_string()))?;
    let resp = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| PostError::Unavailable(format!("{url}: {e}")))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| PostError::Unavailable(format!("{url}: reading the answer: {e}")))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| {
            PostError::Unavailable(format!("{url}: HTTP {status} with an unexpected body: {e}"))
        });
    }
    let reason = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::METHOD_NOT_ALLOWED
    {
        Err(PostError::NotAccepted(format!(
            "{url}: HTTP {status}: no join service"
        )))
    } else if status.is_client_error() {
        Err(PostError::Refused {
            status: status.as_u16(),
            reason,
        })
    } else {
        Err(PostError::Unavailable(format!(
            "{url}: HTTP {status}: {reason}"
        )))
    }
}

/// What [`join`] needs.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// The registry base URLs (`nns_urls`).
    pub registry_urls: Vec<Url>,
    /// The registry trust root.
    pub trust_root: PathBuf,
    /// The client's datastore (shared with the orchestrator's passes).
    pub datastore: PathBuf,
    /// The node key file (generated when missing).
    pub node_key: PathBuf,
    /// The node operator's key file; without it an unregistered node
    /// cannot join.
    pub operator_key: Option<PathBuf>,
    /// The node's IPv6 address.
    pub ipv6: Ipv6Addr,
    /// Timeout of each request.
    pub timeout: Duration,
    /// The first wait after a round where every URL failed; doubles up to
    /// `max_backoff`.
    pub backoff: Duration,
    /// The longest wait between rounds.
    pub max_backoff: Duration,
    /// Rounds before giving up (`None`: until it works or is refused).
    pub attempts: Option<u32>,
}

/// How [`join`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// The node was already in the verified registry: nothing sent.
    AlreadyRegistered {
        /// The node id.
        node_id: String,
        /// The registry version it was found in.
        registry_version: u64,
    },
    /// The registry service admitted the node (or answered that it already
    /// was, for a repeated request).
    Admitted {
        /// The service's answer.
        response: JoinResponse,
        /// The join URL that answered.
        url: String,
    },
}

impl Joined {
    /// The node id.
    pub fn node_id(&self) -> &str {
        match self {
            Joined::AlreadyRegistered { node_id, .. } => node_id,
            Joined::Admitted { response, .. } => &response.node_id,
        }
    }
}

/// What one round decided.
enum Round {
    Done(Joined),
    Retry(String),
}

async fn round(
    cfg: &JoinConfig,
    node: &SigningKey,
    id: &str,
    seed: u64,
    client: &reqwest::Client,
) -> Result<Round, RegisterError> {
    let options = ClientOptions {
        timeout: cfg.timeout,
    };
    let verified: Verified = match fetch_any(
        &cfg.registry_urls,
        seed,
        &cfg.trust_root,
        &cfg.datastore,
        &options,
    )
    .await
    {
        Ok(a) => a.verified,
        Err(FetchError::NoneAvailable(detail)) => return Ok(Round::Retry(detail)),
        Err(e) => return Err(RegisterError::Registry(e)),
    };
    if verified.registry.nodes.contains_key(id) {
        return Ok(Round::Done(Joined::AlreadyRegistered {
            node_id: id.to_owned(),
            registry_version: verified.registry.version,
        }));
    }
    let Some(op_path) = &cfg.operator_key else {
        if verified.stale {
            return Ok(Round::Retry(
                "no registry URL answered; the kept registry does not list the node".into(),
            ));
        }
        return Err(RegisterError::NoOperatorKey {
            node_id: id.to_owned(),
            registry_version: verified.registry.version,
        });
    };
    let operator = icos_registry::operator::OperatorKey::load(op_path)?;
    let request = JoinRequest::sign(node, &operator, cfg.ipv6);
    let mut errors = Vec::new();
    let mut not_accepted = Vec::new();
    for base in rotated(&cfg.registry_urls, seed) {
        let Some(url) = join_url(&base) else {
            not_accepted.push(format!("{base}: not an http:// or https:// URL"));
            continue;
        };
        match post_join(client, &url, &request).await {
            Ok(response) => {
                return Ok(Round::Done(Joined::Admitted {
                    response,
                    url: url.to_string(),
                }));
            }
            Err(PostError::Refused { status, reason }) => {
                return Err(RegisterError::Refused {
                    url: url.to_string(),
                    status,
                    reason,
                });
            }
            Err(PostError::NotAccepted(detail)) => {
                tracing::warn!(url = %url, "{detail}");
                not_accepted.push(detail);
            }
            Err(PostError::Unavailable(detail)) => {
                tracing::warn!(url = %url, error = %detail, "join request not delivered");
                errors.push(detail);
            }
        }
    }
    if errors.is_empty() {
        return Err(RegisterError::NoJoinUrl(not_accepted.join("; ")));
    }
    Ok(Round::Retry(errors.join("; ")))
}

/// Registers the node: loads or generates its key, and joins unless the
/// verified registry already lists it. Retries network failures with
/// backoff; a refusal ends it with the registry's reason.
pub async fn join(cfg: &JoinConfig) -> Result<Joined, RegisterError> {
    let (node, generated) = load_or_generate(&cfg.node_key)?;
    let id = node_id(&node);
    if generated {
        tracing::info!(node = %id, key = %cfg.node_key.display(), "node key generated");
    }
    let seed = seed_of(&id);
    let client = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .build()
        .map_err(|e| RegisterError::GaveUp {
            attempts: 0,
            detail: format!("building the HTTP client: {e}"),
        })?;
    let mut backoff = icos_registry::client::Backoff::new(cfg.backoff, cfg.max_backoff);
    let mut wait = cfg.backoff;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match round(cfg, &node, &id, seed, &client).await? {
            Round::Done(joined) => {
                if let Joined::Admitted { response, url } = &joined {
                    tracing::info!(node = %response.node_id, url = %url, "{}", response.message);
                }
                return Ok(joined);
            }
            Round::Retry(detail) => {
                if cfg.attempts.is_some_and(|n| attempts >= n) {
                    return Err(RegisterError::GaveUp { attempts, detail });
                }
                tracing::warn!(attempt = attempts, retry_in = ?wait, error = %detail, "joining failed, retrying");
                tokio::time::sleep(wait).await;
                wait = backoff.next(false);
            }
        }
    }
}

/// The line printed on success: `Join request successful!` when the
/// registry admitted the node now.
pub fn summary(joined: &Joined) -> String {
    match joined {
        Joined::AlreadyRegistered {
            node_id,
            registry_version,
        } => format!("node {node_id} is already registered (registry version {registry_version})"),
        Joined::Admitted { response, .. } if response.admitted => {
            format!("{JOIN_SUCCESS}\nnode id: {}", response.node_id)
        }
        Joined::Admitted { response, .. } => response.message.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_node_key_is_generated_once_with_mode_0600() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("crypto").join("node_key.pem");
        let (k1, generated) = load_or_generate(&path).unwrap();
        assert!(generated);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(!d.path().join("crypto").join("node_key.pem.new").exists());
        let (k2, generated) = load_or_generate(&path).unwrap();
        assert!(!generated);
        assert_eq!(node_id(&k1), node_id(&k2));
        assert_eq!(node_id(&k1), self_authenticating_id(&k1.public_bytes()));
        // A stale partial key from a crash is replaced, a broken key is not.
        std::fs::write(d.path().join("other.pem.new"), "partial").unwrap();
        let (_, generated) = load_or_generate(&d.path().join("other.pem")).unwrap();
        assert!(generated);
        std::fs::write(d.path().join("bad.pem"), "not a key").unwrap();
        let err = load_or_generate(&d.path().join("bad.pem")).unwrap_err();
        assert!(err.to_string().contains("bad.pem"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_registries_are_retried_then_given_up() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root.json");
        std::fs::write(&root, "{}").unwrap();
        let cfg = JoinConfig {
            registry_urls: vec![Url::parse("http://127.0.0.1:1/").unwrap()],
            trust_root: root,
            datastore: d.path().join("store"),
            node_key: d.path().join("node_key.pem"),
            operator_key: None,
            ipv6: "2001:db8::7".parse().unwrap(),
            timeout: Duration::from_secs(2),
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            attempts: Some(2),
        };
        match join(&cfg).await {
            Err(RegisterError::GaveUp { attempts: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        // The key was generated on the way.
        assert!(cfg.node_key.is_file());
    }

    #[test]
    fn only_http_urls_take_join_requests() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            join_url(&u("http://[2001:db8::1]:8080/reg/"))
                .unwrap()
                .as_str(),
            "http://[2001:db8::1]:8080/reg/join"
        );
        assert_eq!(
            join_url(&u("https://registry.example/")).unwrap().as_str(),
            "https://registry.example/join"
        );
        assert_eq!(join_url(&u("file:///srv/registry/")), None);
    }

    #[test]
    fn summaries_name_the_node() {
        let response = JoinResponse {
            message: JOIN_SUCCESS.into(),
            node_id: "abc".into(),
            operator: "op".into(),
            remaining_allowance: 0,
            admitted: true,
        };
        let admitted = Joined::Admitted {
            response: response.clone(),
            url: "http://x/join".into(),
        };
        assert_eq!(summary(&admitted), "Join request successful!\nnode id: abc");
        assert_eq!(admitted.node_id(), "abc");
        let again = Joined::Admitted {
            response: JoinResponse {
                message: "node abc is already registered".into(),
                admitted: false,
                ..response
            },
            url: "http://x/join".into(),
        };
        assert_eq!(summary(&again), "node abc is already registered");
        let known = Joined::AlreadyRegistered {
            node_id: "abc".into(),
            registry_version: 3,
        };
        assert!(summary(&known).contains("already registered (registry version 3)"));
    }
}
