//! Step 6: the orchestrator's configuration.
//!
//! `icos-orchestrator.service` starts `/opt/ic/bin/icos-orchestrator run`
//! with the `ORCHESTRATOR_ARGS` of `/run/ic-node/config/orchestrator.env`,
//! written here from the GuestOS config on every boot:
//!
//! * one `--registry-url` per `icos_settings.nns_urls` entry (the registry
//!   is served where the NNS is);
//! * `--root`: the registry trust root baked into the image
//!   (`/opt/ic/share/registry-root.json`, `icos build guestos
//!   --registry-root`), as IC bakes the NNS public key; only an image built
//!   without one takes `/run/config/registry_root.json` from the CONFIG
//!   media (dev and test networks with their own governance keys), so the
//!   host cannot swap the trust root of an image that has one;
//! * `--ipv6`: the node's address, which finds it in the registry: the
//!   `Fixed` address, or the `Deterministic` one derived from the
//!   management MAC as the network step derives it;
//! * `--no-hostos` when the VM has no vsock device (no HostOS to ask);
//! * `--node-key` and `--operator-key` when the node operator key from the
//!   CONFIG media is on the store (`/var/lib/ic/data/node_operator_private_key.pem`):
//!   the orchestrator generates the node key at first boot
//!   ([`NODE_KEY`], on the store, which survives reboots and upgrades;
//!   `/var` is per slot and wiped by upgrades), joins the registry with a
//!   request signed by the operator key for the `--ipv6` address unless
//!   it is registered already, and then follows the registry by the id of
//!   the node key. Without the operator key, a node key left by an earlier
//!   join still selects the node by id (`--node-key` alone); with neither,
//!   the node is found by its address.
//!
//! When one of them is missing (no trust root, no NNS URL, or an address
//! only router advertisements will give), no file is written and the step
//! says why: the unit's `ConditionPathExists` then skips the daemon instead
//! of failing the boot. Without an orchestrator nothing confirms the boot,
//! so a trial slot is left by GRUB at the next boot.

use std::fmt::Write;
use std::net::Ipv6Addr;
use std::path::PathBuf;

use icos_config::GuestOSConfig;
use icos_deterministic_ips::NodeType;

use crate::{InitError, Paths, Result, write_file};

/// The environment file name under [`Paths::node_config_dir`].
pub const ORCHESTRATOR_ENV: &str = "orchestrator.env";

/// The node's private key (a GuestOS path on the store).
pub const NODE_KEY: &str = "/var/lib/ic/data/crypto/node_key.pem";

/// The node operator key as the bootstrap step writes it (a GuestOS path).
pub const NODE_OPERATOR_KEY: &str = "/var/lib/ic/data/node_operator_private_key.pem";

/// How the node identifies itself to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// By its IPv6 address (no node or operator key).
    Address,
    /// By the id of its node key (GuestOS path), registered before.
    NodeKey(PathBuf),
    /// Join first with the operator key, then by the node key's id.
    Join {
        /// The node key (generated when missing).
        node_key: PathBuf,
        /// The node operator key.
        operator_key: PathBuf,
    },
}

/// What the orchestrator is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The registry's base URLs.
    pub registry_urls: Vec<String>,
    /// The trust root (a GuestOS path).
    pub root: PathBuf,
    /// The node's IPv6 address.
    pub ipv6: Ipv6Addr,
    /// Whether HostOS is reachable over vsock.
    pub hostos: bool,
    /// How the node identifies itself.
    pub identity: Identity,
}

/// Why the orchestrator does not run on this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Off {
    /// Neither the media nor the image has a registry trust root.
    NoTrustRoot,
    /// `icos_settings.nns_urls` is empty.
    NoRegistryUrl,
    /// The address comes from router advertisements, unknown at boot.
    AddressFromRouterAdvertisements,
}

impl std::fmt::Display for Off {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Off::NoTrustRoot => {
                "no registry trust root (neither /run/config/registry_root.json nor /opt/ic/share/registry-root.json)"
            }
            Off::NoRegistryUrl => "icos_settings.nns_urls is empty",
            Off::AddressFromRouterAdvertisements => {
                "network_settings.ipv6_config is RouterAdvertisement: the node's address is not known at boot"
            }
        })
    }
}

/// The node's IPv6 address as the network step configures it; `None` for
/// router advertisements.
pub fn node_ipv6(config: &GuestOSConfig) -> Result<Option<Ipv6Addr>> {
    Ok(config
        .network_settings
        .ipv6_config
        .static_address(
            &config.icos_settings.mgmt_mac,
            config.icos_settings.deployment_environment.as_str(),
            NodeType::GuestOS,
        )?
        .map(|a| a.address))
}

/// The settings for `config` on the system under `paths`.
pub fn settings(
    paths: &Paths,
    config: &GuestOSConfig,
    hostos: bool,
) -> Result<std::result::Result<Settings, Off>> {
    let root = if paths.builtin_registry_root().is_file() {
        if paths.registry_root().is_file() {
            tracing::warn!(
                "the CONFIG media's registry_root.json is ignored: the image has its own trust root"
            );
        }
        "/opt/ic/share/registry-root.json"
    } else if paths.registry_root().is_file() {
        "/run/config/registry_root.json"
    } else {
        return Ok(Err(Off::NoTrustRoot));
    };
    let registry_urls: Vec<String> = config
        .icos_settings
        .nns_urls
        .iter()
        .map(|u| u.as_str().to_owned())
        .collect();
    if registry_urls.is_empty() {
        return Ok(Err(Off::NoRegistryUrl));
    }
    let Some(ipv6) = node_ipv6(config)? else {
        return Ok(Err(Off::AddressFromRouterAdvertisements));
    };
    let identity = if paths.node_operator_key().is_file() {
        Identity::Join {
            node_key: PathBuf::from(NODE_KEY),
            operator_key: PathBuf::from(NODE_OPERATOR_KEY),
        }
    } else if paths.at(NODE_KEY).is_file() {
        Identity::NodeKey(PathBuf::from(NODE_KEY))
    } else {
        Identity::Address
    };
    Ok(Ok(Settings {
        registry_urls,
        root: PathBuf::from(root),
        ipv6,
        hostos,
        identity,
    }))
}

/// The contents of [`ORCHESTRATOR_ENV`].
pub fn render(s: &Settings) -> String {
    let mut args = String::new();
    for url in &s.registry_urls {
        let _ = write!(args, "--registry-url {url} ");
    }
    let _ = write!(args, "--root {} --ipv6 {}", s.root.display(), s.ipv6);
    match &s.identity {
        Identity::Address => {}
        Identity::NodeKey(key) => {
            let _ = write!(args, " --node-key {}", key.display());
        }
        Identity::Join {
            node_key,
            operator_key,
        } => {
            let _ = write!(
                args,
                " --node-key {} --operator-key {}",
                node_key.display(),
                operator_key.display()
            );
        }
    }
    if !s.hostos {
        args.push_str(" --no-hostos");
    }
    format!(
        "# Generated at boot by icos-guestos-init from /run/config/config.json.\n\
         ORCHESTRATOR_ARGS={args}\n"
    )
}

/// Writes [`ORCHESTRATOR_ENV`], or removes a stale one and says why the
/// orchestrator is off.
pub fn apply(
    paths: &Paths,
    config: &GuestOSConfig,
    hostos: bool,
) -> Result<std::result::Result<Settings, Off>> {
    let path = paths.node_config_dir().join(ORCHESTRATOR_ENV);
    let s = settings(paths, config, hostos)?;
    match &s {
        Ok(s) => write_file(&path, render(s).as_bytes(), 0o644)?,
        Err(_) => match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(InitError::io("removing", &path)(e)),
        },
    }
    Ok(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use icos_config::{FixedIpv6Config, Ipv6Config};
    use std::path::Path;

    fn fixed(address: &str) -> GuestOSConfig {
        let mut c = icos_config_media::dev_guestos_config().unwrap();
        c.network_settings.ipv6_config = Ipv6Config::Fixed(FixedIpv6Config {
            address: address.to_owned(),
            gateway: "2001:db8::1".parse().unwrap(),
            extra: Default::default(),
        });
        c
    }

    fn env(p: &Paths) -> PathBuf {
        p.node_config_dir().join(ORCHESTRATOR_ENV)
    }

    #[test]
    fn the_image_root_wins_over_the_media_one() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let c = fixed("2001:db8::5/64");
        write_file(&p.registry_root(), b"{}", 0o644).unwrap();
        let s = apply(&p, &c, true).unwrap().unwrap();
        assert_eq!(s.root, Path::new("/run/config/registry_root.json"));
        write_file(&p.builtin_registry_root(), b"{}", 0o644).unwrap();
        let s = apply(&p, &c, false).unwrap().unwrap();
        assert_eq!(s.root, Path::new("/opt/ic/share/registry-root.json"));
        assert_eq!(s.ipv6, "2001:db8::5".parse::<Ipv6Addr>().unwrap());
        let urls: Vec<String> = c
            .icos_settings
            .nns_urls
            .iter()
            .map(|u| format!("--registry-url {u} "))
            .collect();
        assert!(!urls.is_empty());
        assert_eq!(
            std::fs::read_to_string(env(&p)).unwrap(),
            format!(
                "# Generated at boot by icos-guestos-init from /run/config/config.json.\n\
                 ORCHESTRATOR_ARGS={}--root /opt/ic/share/registry-root.json --ipv6 2001:db8::5 --no-hostos\n",
                urls.concat()
            )
        );
    }

    #[test]
    fn without_a_root_url_or_address_the_daemon_is_off() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let c = fixed("2001:db8::5");
        write_file(&env(&p), b"stale", 0o644).unwrap();
        assert_eq!(apply(&p, &c, true).unwrap(), Err(Off::NoTrustRoot));
        assert!(!env(&p).exists());
        write_file(&p.registry_root(), b"{}", 0o644).unwrap();
        let mut none = c.clone();
        none.icos_settings.nns_urls.clear();
        assert_eq!(apply(&p, &none, true).unwrap(), Err(Off::NoRegistryUrl));
        let mut ra = c.clone();
        ra.network_settings.ipv6_config = Ipv6Config::RouterAdvertisement;
        assert_eq!(
            apply(&p, &ra, true).unwrap(),
            Err(Off::AddressFromRouterAdvertisements)
        );
        assert!(!env(&p).exists());
        assert!(apply(&p, &c, true).unwrap().is_ok());
        assert!(env(&p).exists());
    }

    #[test]
    fn with_the_operator_key_the_node_joins_then_follows_its_id() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let c = fixed("2001:db8::5/64");
        write_file(&p.registry_root(), b"{}", 0o644).unwrap();
        assert_eq!(p.node_operator_key(), p.at(NODE_OPERATOR_KEY));
        let urls: String = c
            .icos_settings
            .nns_urls
            .iter()
            .map(|u| format!("--registry-url {u} "))
            .collect();
        let expect = |tail: &str| {
            format!(
                "# Generated at boot by icos-guestos-init from /run/config/config.json.\n\
                 ORCHESTRATOR_ARGS={urls}--root /run/config/registry_root.json --ipv6 2001:db8::5{tail}\n"
            )
        };
        // No key: found by address.
        assert_eq!(
            apply(&p, &c, true).unwrap().unwrap().identity,
            Identity::Address
        );
        assert_eq!(std::fs::read_to_string(env(&p)).unwrap(), expect(""));
        // The operator key from the media: join first.
        write_file(&p.node_operator_key(), b"KEY", 0o400).unwrap();
        let s = apply(&p, &c, true).unwrap().unwrap();
        assert_eq!(
            s.identity,
            Identity::Join {
                node_key: PathBuf::from("/var/lib/ic/data/crypto/node_key.pem"),
                operator_key: PathBuf::from("/var/lib/ic/data/node_operator_private_key.pem"),
            }
        );
        assert_eq!(
            std::fs::read_to_string(env(&p)).unwrap(),
            expect(
                " --node-key /var/lib/ic/data/crypto/node_key.pem \
                 --operator-key /var/lib/ic/data/node_operator_private_key.pem"
            )
        );
        // The operator key removed after the join: the node key remains.
        std::fs::remove_file(p.node_operator_key()).unwrap();
        write_file(&p.at(NODE_KEY), b"NODE KEY", 0o600).unwrap();
        apply(&p, &c, false).unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(env(&p)).unwrap(),
            expect(" --node-key /var/lib/ic/data/crypto/node_key.pem --no-hostos")
        );
    }

    #[test]
    fn the_deterministic_address_is_the_network_steps() {
        let c = icos_config_media::dev_guestos_config().unwrap();
        if let Ipv6Config::Deterministic(_) = &c.network_settings.ipv6_config {
            let addr = node_ipv6(&c).unwrap().unwrap();
            let network = crate::network::render(&c).unwrap();
            assert!(network.contains(&format!("Address={addr}/")), "{network}");
        }
        let bad = fixed("not-an-address/64");
        let err = node_ipv6(&bad).unwrap_err().to_string();
        assert!(
            err.contains("network_settings.ipv6_config.Fixed.address"),
            "{err}"
        );
    }
}
