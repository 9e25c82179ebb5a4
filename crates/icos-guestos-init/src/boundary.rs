//! Boundary-GuestOS: the command lines of the router (`icos-boundary`) and
//! the HTTP gateway (`icos-gateway`), and the gateway's TLS certificate.
//! Replaces the replica's configuration step on a boundary node.
//!
//! * The router listens on loopback only (`[::1]:8080`) and reads its
//!   routing table from `/run/config/routing_table.json`, which the
//!   bootstrap step takes from the CONFIG media (it answers 503 until the
//!   file exists, and reloads it when it changes).
//! * The gateway serves the world on `[::]:80` and, with TLS, `[::]:443`;
//!   it sends `/api/...` and its canister calls to the router.
//! * The domain is, in order: `generate_ic_boundary_tls_cert` of the dev
//!   settings (as IC-OS names the domain of a test boundary node),
//!   `network_settings.domain_name`, else `localhost`.
//! * The certificate is self-signed for the domain and its subdomains
//!   (`*.domain`, `*.raw.domain`). It is made once and kept on the
//!   encrypted `/var` (key 0600, written before the certificate), and made
//!   again only when the domain changes.
//! * The root key: when the routing table names one (a testnet), the
//!   gateway takes it from the router, which serves the table's key from
//!   the CONFIG media; otherwise the image's NNS public key
//!   (`/run/config/nns_public_key.pem`).

use std::path::PathBuf;

use icos_config::GuestOSConfig;

use crate::{InitError, Paths, Result, write_file};

/// The router's port, on loopback.
pub const ROUTER_PORT: u16 = 8080;
/// The router's metrics port, on loopback.
pub const ROUTER_METRICS_PORT: u16 = 9324;
/// The gateway's metrics port, on loopback.
pub const GATEWAY_METRICS_PORT: u16 = 9325;
/// The domain when the config names none.
pub const DEFAULT_DOMAIN: &str = "localhost";
/// The environment file both units read, in the node config folder.
pub const BOUNDARY_ENV: &str = "boundary.env";
/// Where systemd hands the gateway its certificate and key
/// (`LoadCredential=` of `icos-gateway.service`).
pub const CREDENTIALS_DIR: &str = "/run/credentials/icos-gateway.service";

/// Where the domain came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainSource {
    /// `guestos_settings.guestos_dev_settings.generate_ic_boundary_tls_cert`.
    DevSettings,
    /// `network_settings.domain_name`.
    NetworkSettings,
    /// Neither: [`DEFAULT_DOMAIN`].
    Default,
}

/// The domain the gateway serves, and where it came from.
pub fn domain(config: &GuestOSConfig) -> Result<(String, DomainSource)> {
    let dev = &config
        .guestos_settings
        .guestos_dev_settings
        .generate_ic_boundary_tls_cert;
    if let Some(d) = dev.as_deref().filter(|d| !d.is_empty()) {
        icos_config::check_domain_name(d).map_err(|rule| InitError::Config {
            field: "guestos_settings.guestos_dev_settings.generate_ic_boundary_tls_cert",
            reason: rule.to_string(),
        })?;
        return Ok((d.to_owned(), DomainSource::DevSettings));
    }
    if let Some(d) = config.network_settings.domain_name.as_deref() {
        return Ok((d.to_owned(), DomainSource::NetworkSettings));
    }
    Ok((DEFAULT_DOMAIN.to_owned(), DomainSource::Default))
}

/// The folder of the gateway's certificate on `/var`.
fn tls_dir(paths: &Paths) -> PathBuf {
    paths.at("/var/lib/ic/data/boundary-tls")
}

/// The certificate (PEM).
pub fn tls_cert(paths: &Paths) -> PathBuf {
    tls_dir(paths).join("cert.pem")
}

/// The private key (PEM, PKCS#8).
pub fn tls_key(paths: &Paths) -> PathBuf {
    tls_dir(paths).join("key.pem")
}

/// The domain the certificate was made for.
fn tls_domain(paths: &Paths) -> PathBuf {
    tls_dir(paths).join("domain")
}

/// Makes the self-signed certificate for `domain` unless one for it is
/// already there; returns whether it made one.
pub fn ensure_certificate(paths: &Paths, domain: &str) -> Result<bool> {
    let (cert, key, stamp) = (tls_cert(paths), tls_key(paths), tls_domain(paths));
    let kept = std::fs::read_to_string(&stamp).ok();
    if kept.as_deref().map(str::trim) == Some(domain)
        && [&cert, &key]
            .iter()
            .all(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    {
        return Ok(false);
    }
    let names = vec![
        domain.to_owned(),
        format!("*.{domain}"),
        format!("*.raw.{domain}"),
    ];
    let made = rcgen::generate_simple_self_signed(names).map_err(|e| InitError::Command {
        command: format!("making a self-signed certificate for {domain}"),
        detail: e.to_string(),
    })?;
    write_file(&key, made.signing_key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert, made.cert.pem().as_bytes(), 0o644)?;
    write_file(&stamp, format!("{domain}\n").as_bytes(), 0o644)?;
    Ok(true)
}

/// Whether the routing table on the media names a root key (a testnet).
fn table_has_root_key(paths: &Paths) -> bool {
    std::fs::read(paths.routing_table())
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|v| v.get("root_key").is_some_and(|k| !k.is_null()))
}

/// The router's command line (after the program), with GuestOS paths.
pub fn router_args() -> String {
    format!(
        "--listen [::1]:{ROUTER_PORT} --routing-table /run/config/routing_table.json \
         --obs-metrics-addr [::1]:{ROUTER_METRICS_PORT}"
    )
}

/// The gateway's command line (after the program), with GuestOS paths.
pub fn gateway_args(domain: &str, fetch_root_key: bool) -> String {
    let root_key = if fetch_root_key {
        "--fetch-root-key".to_owned()
    } else {
        "--root-key-file /run/config/nns_public_key.pem".to_owned()
    };
    format!(
        "--domain {domain} --upstream http://[::1]:{ROUTER_PORT} --listen [::]:80 \
         --tls-listen [::]:443 --tls-cert-file {CREDENTIALS_DIR}/tls.crt \
         --tls-key-file {CREDENTIALS_DIR}/tls.key \
         --obs-metrics-addr [::1]:{GATEWAY_METRICS_PORT} {root_key}"
    )
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The domain served.
    pub domain: String,
    /// Where it came from.
    pub source: DomainSource,
    /// Whether a new certificate was made.
    pub new_certificate: bool,
    /// Whether the gateway takes the root key from the router.
    pub fetch_root_key: bool,
}

/// Makes the certificate if needed and writes `boundary.env`.
pub fn apply(paths: &Paths, config: &GuestOSConfig) -> Result<Applied> {
    let (domain, source) = domain(config)?;
    let new_certificate = ensure_certificate(paths, &domain)?;
    let fetch_root_key = table_has_root_key(paths);
    let env = format!(
        "ROUTER_ARGS={}\nGATEWAY_ARGS={}\n",
        router_args(),
        gateway_args(&domain, fetch_root_key)
    );
    write_file(
        &paths.node_config_dir().join(BOUNDARY_ENV),
        env.as_bytes(),
        0o644,
    )?;
    Ok(Applied {
        domain,
        source,
        new_certificate,
        fetch_root_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GuestOSConfig {
        icos_config_media::dev_guestos_config().unwrap()
    }

    #[test]
    fn domain_order() {
        let mut c = config();
        c.network_settings.domain_name = None;
        assert_eq!(
            domain(&c).unwrap(),
            ("localhost".to_owned(), DomainSource::Default)
        );
        c.network_settings.domain_name = Some("node.example.org".into());
        assert_eq!(
            domain(&c).unwrap(),
            ("node.example.org".to_owned(), DomainSource::NetworkSettings)
        );
        c.guestos_settings
            .guestos_dev_settings
            .generate_ic_boundary_tls_cert = Some("boundary.example.org".into());
        assert_eq!(
            domain(&c).unwrap(),
            ("boundary.example.org".to_owned(), DomainSource::DevSettings)
        );
        c.guestos_settings
            .guestos_dev_settings
            .generate_ic_boundary_tls_cert = Some("-bad".into());
        let err = domain(&c).unwrap_err().to_string();
        assert!(err.contains("generate_ic_boundary_tls_cert"), "{err}");
    }

    #[test]
    fn certificate_is_made_once_per_domain() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        assert!(ensure_certificate(&p, "localhost").unwrap());
        let cert = std::fs::read_to_string(tls_cert(&p)).unwrap();
        let key = std::fs::read_to_string(tls_key(&p)).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tls_key(&p)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Kept on the next boot.
        assert!(!ensure_certificate(&p, "localhost").unwrap());
        assert_eq!(std::fs::read_to_string(tls_cert(&p)).unwrap(), cert);
        // Made again for another domain.
        assert!(ensure_certificate(&p, "boundary.example.org").unwrap());
        assert_ne!(std::fs::read_to_string(tls_cert(&p)).unwrap(), cert);
        // And again when the key is lost.
        std::fs::write(tls_key(&p), "").unwrap();
        assert!(ensure_certificate(&p, "boundary.example.org").unwrap());
    }

    #[test]
    fn env_file_names_the_root_key_source() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let mut c = config();
        c.network_settings.domain_name = None;
        let a = apply(&p, &c).unwrap();
        assert!(!a.fetch_root_key);
        let env = std::fs::read_to_string(p.node_config_dir().join(BOUNDARY_ENV)).unwrap();
        assert_eq!(
            env,
            "ROUTER_ARGS=--listen [::1]:8080 --routing-table /run/config/routing_table.json \
             --obs-metrics-addr [::1]:9324\n\
             GATEWAY_ARGS=--domain localhost --upstream http://[::1]:8080 --listen [::]:80 \
             --tls-listen [::]:443 --tls-cert-file /run/credentials/icos-gateway.service/tls.crt \
             --tls-key-file /run/credentials/icos-gateway.service/tls.key \
             --obs-metrics-addr [::1]:9325 --root-key-file /run/config/nns_public_key.pem\n"
        );
        write_file(
            &p.routing_table(),
            br#"{"root_key": "3082", "subnets": []}"#,
            0o644,
        )
        .unwrap();
        let a = apply(&p, &c).unwrap();
        assert!(a.fetch_root_key);
        assert!(!a.new_certificate);
        let env = std::fs::read_to_string(p.node_config_dir().join(BOUNDARY_ENV)).unwrap();
        assert!(env.ends_with(" --fetch-root-key\n"), "{env}");
    }
}
