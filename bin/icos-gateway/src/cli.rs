//! The command line, and its translation into a gateway configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use clap::Parser;
use icos_gateway::{GatewayConfig, RootKey};

const AFTER_HELP: &str = "\
Hosts served: <canister-id>.<domain> (response certification checked) and
<canister-id>.raw.<domain> (not checked), for every --domain. Other hosts get
400; denylisted canisters 451; responses failing certification 503.

Root key: production needs --root-key-file. --fetch-root-key trusts whatever
key the upstream reports and is for local testnets only.

Durations are written as a number and a unit: 500ms, 1s, 2m.

Exit codes:
  0  stopped by SIGINT or SIGTERM
  1  failure: the gateway could not start or run (e.g. a port is taken)
  2  usage error: a flag or value broke a rule";

/// Serve canisters' HTTP interface (http_request) to browsers, checking
/// response certification, as ic-gateway does.
#[derive(Debug, Parser)]
#[command(name = "icos-gateway", version, about, after_help = AFTER_HELP)]
#[command(help_expected = true)]
pub struct Cli {
    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// A base domain to serve (repeatable), e.g. icp0.io or localhost.
    #[arg(long = "domain", value_name = "DOMAIN", required = true)]
    pub domains: Vec<String>,

    /// The IC API endpoint the canisters are called through (the icos-boundary router).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub upstream: String,

    /// The IC root key: DER, as raw bytes, hex or base64 (PEM armour allowed).
    #[arg(long, value_name = "FILE", conflicts_with = "fetch_root_key")]
    pub root_key_file: Option<PathBuf>,

    /// Fetch the root key from the upstream's /api/v2/status. Testnets only: it trusts the upstream.
    #[arg(long)]
    pub fetch_root_key: bool,

    /// Address HTTP is served on (HTTP/1.1 and HTTP/2 with prior knowledge).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// Address HTTPS is served on (needs --tls-cert-file and --tls-key-file).
    #[arg(long, value_name = "ADDR", requires_all = ["tls_cert_file", "tls_key_file"])]
    pub tls_listen: Option<SocketAddr>,

    /// The TLS certificate chain (PEM, leaf first).
    #[arg(long, value_name = "FILE", requires = "tls_listen")]
    pub tls_cert_file: Option<PathBuf>,

    /// The TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_listen")]
    pub tls_key_file: Option<PathBuf>,

    /// Address Prometheus metrics are served on (GET /metrics).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9091")]
    pub obs_metrics_addr: SocketAddr,

    /// Serve no metrics.
    #[arg(long)]
    pub obs_disable_metrics: bool,

    /// Denylist: a JSON list of canister ids, served 451; reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub policy_denylist: Option<PathBuf>,

    /// How often the denylist file is checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = icos_main::parse_duration)]
    pub policy_denylist_poll_interval: Duration,

    /// Largest request body in bytes (413 above).
    #[arg(long, value_name = "BYTES", default_value_t = icos_gateway::MAX_REQUEST_BODY_SIZE)]
    pub max_request_body_size: usize,

    /// Largest response body in bytes, streamed chunks included (502 above).
    #[arg(long, value_name = "BYTES", default_value_t = icos_gateway::MAX_RESPONSE_BODY_SIZE)]
    pub max_response_body_size: usize,

    /// Time allowed for a canister to answer, upgrade and streaming included (504 after).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = icos_main::parse_duration)]
    pub request_timeout: Duration,
}

impl Cli {
    /// The gateway configuration; fails on values that break a rule.
    pub fn to_config(&self) -> anyhow::Result<GatewayConfig> {
        let root_key = match (&self.root_key_file, self.fetch_root_key) {
            (Some(path), false) => RootKey::Der(read_root_key(path)?),
            (None, true) => RootKey::Fetch,
            _ => bail!("give either --root-key-file FILE or --fetch-root-key (testnets only)"),
        };
        icos_gateway::DomainResolver::new(&self.domains)?;
        if !(self.upstream.starts_with("http://") || self.upstream.starts_with("https://")) {
            bail!("--upstream: '{}' is not an http(s) URL", self.upstream);
        }
        if self.policy_denylist_poll_interval.is_zero() {
            bail!("--policy-denylist-poll-interval: must be longer than 0");
        }
        let mut c = GatewayConfig::new(
            self.listen,
            self.upstream.clone(),
            self.domains.clone(),
            root_key,
        );
        c.metrics_listen = (!self.obs_disable_metrics).then_some(self.obs_metrics_addr);
        c.denylist = self.policy_denylist.clone();
        c.denylist_poll_interval = self.policy_denylist_poll_interval;
        c.max_request_body = self.max_request_body_size;
        c.max_response_body = self.max_response_body_size;
        c.request_timeout = self.request_timeout;
        if let (Some(listen), Some(cert), Some(key)) =
            (self.tls_listen, &self.tls_cert_file, &self.tls_key_file)
        {
            // Checked here so that a bad file is bad input (exit 2).
            icos_gateway::tls::server_config(cert, key)?;
            c.tls = Some(icos_gateway::tls::TlsConfig {
                listen,
                cert_chain: cert.clone(),
                key: key.clone(),
            });
        }
        Ok(c)
    }
}

/// Reads a DER root key stored as raw bytes, hex, or base64 (with or without PEM armour).
fn read_root_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading the root key {}", path.display()))?;
    decode_root_key(&bytes).with_context(|| format!("root key {}", path.display()))
}

fn decode_root_key(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let der = match std::str::from_utf8(bytes) {
        Ok(text)
            if text
                .trim()
                .bytes()
                .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()) =>
        {
            let body: String = text
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .flat_map(|l| l.split_whitespace())
                .collect();
            if let Ok(der) = hex::decode(&body) {
                der
            } else {
                base64::engine::general_purpose::STANDARD
                    .decode(&body)
                    .context("neither hex nor base64")?
            }
        }
        _ => bytes.to_vec(),
    };
    // DER SEQUENCE of a BLS12-381 key: 133 bytes, starting 0x30.
    if der.first() != Some(&0x30) || der.len() < 100 {
        bail!("not a DER-encoded public key ({} bytes)", der.len());
    }
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn root_key_encodings() {
        let mut der = vec![0x30, 0x81, 0x82];
        der.resize(133, 7);
        assert_eq!(decode_root_key(&der).unwrap(), der);
        assert_eq!(decode_root_key(hex::encode(&der).as_bytes()).unwrap(), der);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        assert_eq!(decode_root_key(pem.as_bytes()).unwrap(), der);
        assert!(decode_root_key(b"abcd").is_err());
    }

    #[test]
    fn config_rules() {
        let c = Cli::parse_from(["icos-gateway", "--domain", "localhost", "--fetch-root-key"])
            .to_config()
            .unwrap();
        assert_eq!(c.root_key, RootKey::Fetch);
        assert_eq!(c.domains, ["localhost"]);
        // No root key source.
        assert!(
            Cli::parse_from(["icos-gateway", "--domain", "localhost"])
                .to_config()
                .is_err()
        );
        assert!(
            Cli::parse_from(["icos-gateway", "--domain", "a..b", "--fetch-root-key"])
                .to_config()
                .is_err()
        );
        assert!(
            Cli::parse_from([
                "icos-gateway",
                "--domain",
                "localhost",
                "--fetch-root-key",
                "--upstream",
                "ftp://x"
            ])
            .to_config()
            .is_err()
        );
    }
}
