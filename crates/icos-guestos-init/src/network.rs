//! Step 2: systemd-networkd configuration from `network_settings`.
//!
//! One `.network` file for the VM's Ethernet interface, written to
//! `/run/systemd/network/` (the root file system is read-only) before
//! `systemd-networkd` starts:
//!
//! | `ipv6_config` | result |
//! |---------------|--------|
//! | `Fixed{address, gateway}` | that address (`/64` when no length is given) and a default route via `gateway`; router advertisements ignored |
//! | `Deterministic{prefix, prefix_length, gateway}` | the GuestOS address derived from the management MAC (as HostOS derives it), and `gateway` |
//! | `RouterAdvertisement` | addresses and routes from router advertisements |
//!
//! `ipv4_config` adds an IPv4 address and gateway; `domain_name` becomes the
//! search domain. GuestOS configs carry no name servers, so the public
//! DNS64 resolvers of [`NAME_SERVERS`] are used (IC nodes are IPv6-only).

use std::fmt::Write;

use icos_config::GuestOSConfig;
use icos_deterministic_ips::NodeType;

use crate::{InitError, Paths, Result, write_file};

/// The file written under `/run/systemd/network/`.
pub const NETWORK_FILE: &str = "10-icos-guestos.network";

/// Name servers: Google's and Cloudflare's public DNS64 resolvers.
pub const NAME_SERVERS: &[&str] = &[
    "2001:4860:4860::6464",
    "2001:4860:4860::64",
    "2606:4700:4700::6400",
    "2606:4700:4700::64",
];

/// The contents of [`NETWORK_FILE`] for `config`.
pub fn render(config: &GuestOSConfig) -> Result<String> {
    let net = &config.network_settings;
    let mut s = String::from(
        "# Generated at boot by icos-guestos-init from network_settings of\n\
         # /run/config/config.json. Do not edit.\n\n\
         [Match]\nType=ether\n\n[Network]\nLinkLocalAddressing=ipv6\n",
    );
    let mut addresses = Vec::new();
    match net
        .ipv6_config
        .static_address(
            &config.icos_settings.mgmt_mac,
            config.icos_settings.deployment_environment.as_str(),
            NodeType::GuestOS,
        )
        .map_err(InitError::from)?
    {
        Some(a) => {
            s.push_str("IPv6AcceptRA=no\n");
            addresses.push((
                format!("{}/{}", a.address, a.prefix_length),
                a.gateway.to_string(),
            ));
        }
        None => s.push_str("IPv6AcceptRA=yes\n"),
    }
    if let Some(v4) = &net.ipv4_config {
        addresses.push((
            format!("{}/{}", v4.address, v4.prefix_length),
            v4.gateway.to_string(),
        ));
    }
    for (address, gateway) in &addresses {
        let _ = writeln!(s, "Address={address}");
        let _ = writeln!(s, "Gateway={gateway}");
    }
    for ns in NAME_SERVERS {
        let _ = writeln!(s, "DNS={ns}");
    }
    if let Some(domain) = &net.domain_name {
        let _ = writeln!(s, "Domains={domain}");
    }
    Ok(s)
}

/// Writes [`NETWORK_FILE`] for `config`; returns its path.
pub fn apply(paths: &Paths, config: &GuestOSConfig) -> Result<std::path::PathBuf> {
    let text = render(config)?;
    let path = paths.networkd_dir().join(NETWORK_FILE);
    write_file(&path, text.as_bytes(), 0o644)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use icos_config::{FixedIpv6Config, Ipv4Config, Ipv6Config};

    use crate::golden;

    fn dev() -> GuestOSConfig {
        icos_config_media::dev_guestos_config().unwrap()
    }

    #[test]
    fn fixed_ipv6_only() {
        golden("networkd-fixed.network", &render(&dev()).unwrap());
    }

    #[test]
    fn fixed_ipv6_with_ipv4_and_domain() {
        let mut c = dev();
        c.network_settings.ipv4_config = Some(Ipv4Config {
            address: "192.0.2.10".parse().unwrap(),
            gateway: "192.0.2.1".parse().unwrap(),
            prefix_length: 24,
            extra: Default::default(),
        });
        c.network_settings.domain_name = Some("node.example.org".into());
        golden("networkd-fixed-ipv4.network", &render(&c).unwrap());
    }

    #[test]
    fn router_advertisement() {
        let mut c = dev();
        c.network_settings.ipv6_config = Ipv6Config::RouterAdvertisement;
        golden("networkd-ra.network", &render(&c).unwrap());
    }

    #[test]
    fn deterministic_matches_what_hostos_derives() {
        let fixed = render(&dev()).unwrap();
        let hostos: icos_config::HostOSConfig =
            icos_config::from_json_str(icos_config_media::DEV_HOSTOS_CONFIG).unwrap();
        let mut c = dev();
        c.network_settings = hostos.network_settings;
        assert_eq!(render(&c).unwrap(), fixed);
    }

    #[test]
    fn bad_fixed_address_names_the_field() {
        let mut c = dev();
        c.network_settings.ipv6_config = Ipv6Config::Fixed(FixedIpv6Config {
            address: "2001:db8::5/200".into(),
            gateway: "2001:db8::1".parse().unwrap(),
            extra: Default::default(),
        });
        let err = render(&c).unwrap_err().to_string();
        assert!(
            err.starts_with("network_settings.ipv6_config.Fixed.address: '2001:db8::5/200'"),
            "{err}"
        );
    }

    #[test]
    fn apply_writes_the_runtime_file() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        let path = apply(&p, &dev()).unwrap();
        assert_eq!(
            path,
            d.path().join("run/systemd/network").join(NETWORK_FILE)
        );
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            render(&dev()).unwrap()
        );
    }
}
