//! Step 6: the orchestrator's configuration.
//!
//! `icos-orchestrator.service` starts `/opt/ic/bin/icos-orchestrator run`
//! with the `ORCHESTRATOR_ARGS` of `/run/ic-node/config/orchestrator.env`,
//! written here from the GuestOS config on every boot:
//!
//! * one `--registry-url` per `icos_settings.nns_urls` entry (the registry
//!   is served where the NNS is);
//! * `--root`: the registry trust root, `/run/config/registry_root.json`
//!   when the CONFIG media carried one (dev and test networks with their
//!   own governance keys), else the image's `/opt/ic/share/registry-root.json`;
//! * `--ipv6`: the node's address, which finds it in the registry: the
//!   `Fixed` address, or the `Deterministic` one derived from the
//!   management MAC as the network step derives it;
//! * `--no-hostos` when the VM has no vsock device (no HostOS to ask).
//!
//! When one of them is missing (no trust root, no NNS URL, or an address
//! only router advertisements will give), no file is written and the step
//! says why: the unit's `ConditionPathExists` then skips the daemon instead
//! of failing the boot. Without an orchestrator nothing confirms the boot,
//! so a trial slot is left by GRUB at the next boot.

use std::fmt::Write;
use std::net::Ipv6Addr;
use std::path::PathBuf;

use icos_config::{GuestOSConfig, Ipv6Config};
use icos_deterministic_ips::NodeType;

use crate::{InitError, Paths, Result, write_file};

/// The environment file name under [`Paths::node_config_dir`].
pub const ORCHESTRATOR_ENV: &str = "orchestrator.env";

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
    match &config.network_settings.ipv6_config {
        Ipv6Config::Fixed(f) => {
            let text = f.address.split('/').next().unwrap_or_default();
            text.parse::<Ipv6Addr>()
                .map(Some)
                .map_err(|e| InitError::Config {
                    field: "network_settings.ipv6_config.Fixed.address",
                    reason: format!("'{}': {e}", f.address),
                })
        }
        Ipv6Config::Deterministic(d) => icos_deterministic_ips::deterministic_ipv6(
            &config.icos_settings.mgmt_mac,
            config.icos_settings.deployment_environment.as_str(),
            NodeType::GuestOS,
            0,
            &d.prefix,
        )
        .map(Some)
        .map_err(|e| InitError::Config {
            field: "network_settings.ipv6_config.Deterministic",
            reason: e.to_string(),
        }),
        Ipv6Config::RouterAdvertisement => Ok(None),
        Ipv6Config::Unknown(v) => Err(InitError::Config {
            field: "network_settings.ipv6_config",
            reason: format!(
                "unknown variant {v}; expected Fixed, Deterministic or RouterAdvertisement"
            ),
        }),
    }
}

/// The settings for `config` on the system under `paths`.
pub fn settings(
    paths: &Paths,
    config: &GuestOSConfig,
    hostos: bool,
) -> Result<std::result::Result<Settings, Off>> {
    let root = if paths.registry_root().is_file() {
        "/run/config/registry_root.json"
    } else if paths.builtin_registry_root().is_file() {
        "/opt/ic/share/registry-root.json"
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
    Ok(Ok(Settings {
        registry_urls,
        root: PathBuf::from(root),
        ipv6,
        hostos,
    }))
}

/// The contents of [`ORCHESTRATOR_ENV`].
pub fn render(s: &Settings) -> String {
    let mut args = String::new();
    for url in &s.registry_urls {
        let _ = write!(args, "--registry-url {url} ");
    }
    let _ = write!(args, "--root {} --ipv6 {}", s.root.display(), s.ipv6);
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
    use icos_config::FixedIpv6Config;
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
    fn the_media_root_wins_over_the_image_one() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let c = fixed("2001:db8::5/64");
        write_file(&p.builtin_registry_root(), b"{}", 0o644).unwrap();
        let s = apply(&p, &c, true).unwrap().unwrap();
        assert_eq!(s.root, Path::new("/opt/ic/share/registry-root.json"));
        write_file(&p.registry_root(), b"{}", 0o644).unwrap();
        let s = apply(&p, &c, false).unwrap().unwrap();
        assert_eq!(s.root, Path::new("/run/config/registry_root.json"));
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
                 ORCHESTRATOR_ARGS={}--root /run/config/registry_root.json --ipv6 2001:db8::5 --no-hostos\n",
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
