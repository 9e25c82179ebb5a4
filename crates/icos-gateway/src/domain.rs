//! Host authority → canister id.
//!
//! A request is served when its host is `<canister-id>.<domain>` (the
//! response certification is checked) or `<canister-id>.raw.<domain>` (it
//! is not), for one of the configured domains. The canister label may carry
//! a prefix ending in `--` (`myapp--<canister-id>`); names with more labels
//! in front of the canister id are refused. The port, a trailing dot and the
//! case of the host are ignored.

use candid::Principal;

/// The canister a host names, and whether responses must be verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The canister that serves the request.
    pub canister_id: Principal,
    /// `false` on `raw` domains: the response is passed on unchecked.
    pub verify: bool,
}

/// Why a domain list is refused.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// No domain was given.
    #[error("at least one domain is needed")]
    Empty,
    /// A domain is not a valid DNS name.
    #[error("'{0}' is not a domain name")]
    Invalid(String),
}

/// Why a host names no canister.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// Neither `:authority` nor `Host` was sent.
    #[error("the request names no host")]
    MissingHost,
    /// The host is not under a served domain.
    #[error("host '{host}' is not under a domain served here ({domains})")]
    UnknownDomain {
        /// The host as sent.
        host: String,
        /// The served domains, comma-separated.
        domains: String,
    },
    /// The host is a served domain, or its `raw` subdomain, without a canister id.
    #[error("host '{0}' names no canister: use <canister-id>.{0} or <canister-id>.raw.{0}")]
    NoCanister(String),
    /// The label before the domain is not a canister id.
    #[error(
        "'{label}' in host '{host}' is not a canister id (<canister-id>.<domain> or <canister-id>.raw.<domain>)"
    )]
    BadCanisterId {
        /// The host as sent.
        host: String,
        /// The label that failed to parse.
        label: String,
    },
}

/// Resolves hosts against the served domains.
#[derive(Debug, Clone)]
pub struct DomainResolver {
    /// Lower-case, longest first.
    domains: Vec<String>,
}

impl DomainResolver {
    /// A resolver for these base domains (e.g. `icp0.io`, `localhost`).
    pub fn new<S: AsRef<str>>(domains: impl IntoIterator<Item = S>) -> Result<Self, DomainError> {
        let mut out = Vec::new();
        for d in domains {
            let d = d.as_ref().trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = !d.is_empty()
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                return Err(DomainError::Invalid(d));
            }
            if !out.contains(&d) {
                out.push(d);
            }
        }
        if out.is_empty() {
            return Err(DomainError::Empty);
        }
        out.sort_by_key(|d| std::cmp::Reverse(d.len()));
        Ok(DomainResolver { domains: out })
    }

    /// The served domains.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// The canister an authority (`host` or `host:port`) names.
    pub fn resolve(&self, authority: &str) -> Result<Target, ResolveError> {
        let host = strip_port(authority.trim())
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(ResolveError::MissingHost);
        }
        for domain in &self.domains {
            if host == *domain {
                return Err(ResolveError::NoCanister(domain.clone()));
            }
            let Some(prefix) = host
                .strip_suffix(domain.as_str())
                .and_then(|p| p.strip_suffix('.'))
            else {
                continue;
            };
            let (label, verify) = match prefix.strip_suffix(".raw") {
                Some(l) => (l, false),
                None if prefix == "raw" => return Err(ResolveError::NoCanister(domain.clone())),
                None => (prefix, true),
            };
            let bad = || ResolveError::BadCanisterId {
                host: host.clone(),
                label: label.to_string(),
            };
            if label.contains('.') {
                return Err(bad());
            }
            let id_text = label.rsplit_once("--").map_or(label, |(_, id)| id);
            let canister_id = Principal::from_text(id_text).map_err(|_| bad())?;
            if canister_id.to_text() != id_text {
                return Err(bad());
            }
            return Ok(Target {
                canister_id,
                verify,
            });
        }
        Err(ResolveError::UnknownDomain {
            host,
            domains: self.domains.join(", "),
        })
    }
}

/// `host:port` → `host`; bracketed IPv6 literals keep their brackets.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ID: &str = "rwlgt-iiaaa-aaaaa-aaaaa-cai";

    fn r() -> DomainResolver {
        DomainResolver::new(["icp0.io", "localhost", "gw.example.org."]).unwrap()
    }

    #[test]
    fn canister_subdomains() {
        let id = Principal::from_text(ID).unwrap();
        let ok = |host: &str, verify| {
            assert_eq!(
                r().resolve(host),
                Ok(Target {
                    canister_id: id,
                    verify
                }),
                "{host}"
            );
        };
        ok(&format!("{ID}.icp0.io"), true);
        ok(&format!("{ID}.raw.icp0.io"), false);
        ok(&format!("{ID}.localhost:8080"), true);
        ok(&format!("{ID}.raw.localhost:8080"), false);
        ok(&format!("{}.ICP0.IO.", ID.to_uppercase()), true);
        ok(&format!("myapp--{ID}.gw.example.org"), true);
    }

    #[test]
    fn refusals() {
        let r = r();
        assert!(matches!(
            r.resolve("example.com"),
            Err(ResolveError::UnknownDomain { .. })
        ));
        assert!(matches!(
            r.resolve("icp0.io"),
            Err(ResolveError::NoCanister(_))
        ));
        assert!(matches!(
            r.resolve("raw.icp0.io"),
            Err(ResolveError::NoCanister(_))
        ));
        assert!(matches!(
            r.resolve("foo.icp0.io"),
            Err(ResolveError::BadCanisterId { .. })
        ));
        // Checksum broken.
        assert!(matches!(
            r.resolve("rwlgt-iiaaa-aaaaa-aaaaa-caa.icp0.io"),
            Err(ResolveError::BadCanisterId { .. })
        ));
        assert!(matches!(
            r.resolve(&format!("a.{ID}.icp0.io")),
            Err(ResolveError::BadCanisterId { .. })
        ));
        assert!(matches!(
            r.resolve(&format!("{ID}.icp0.io.evil.com")),
            Err(ResolveError::UnknownDomain { .. })
        ));
        assert!(matches!(
            r.resolve(&format!("{ID}xicp0.io")),
            Err(ResolveError::UnknownDomain { .. })
        ));
        assert_eq!(r.resolve(""), Err(ResolveError::MissingHost));
        assert!(matches!(
            r.resolve("[::1]:8080"),
            Err(ResolveError::UnknownDomain { .. })
        ));
    }

    #[test]
    fn bad_domains() {
        assert!(DomainResolver::new(Vec::<String>::new()).is_err());
        assert!(DomainResolver::new(["a..b"]).is_err());
        assert!(DomainResolver::new(["a b"]).is_err());
    }
}
