#![doc = include_str!("../README.md")]

mod system;

use std::fmt::Write as _;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use icos_config::HostOSConfig;
use icos_deterministic_ips::{NodeType, format_mac};
use macaddr::MacAddr6;
use serde::Serialize;

pub use system::{Host, SystemHost};

/// The bridge HostOS and GuestOS share.
pub const BRIDGE: &str = "br6";

/// Where the files go: systemd-networkd's runtime directory.
pub const NETWORKD_DIR: &str = "/run/systemd/network";

/// Name servers of IC-OS's HostOS: Cloudflare's and Google's resolvers.
pub const NAME_SERVERS: &[&str] = &[
    "2606:4700:4700::1111",
    "2606:4700:4700::1001",
    "2001:4860:4860::8888",
    "2001:4860:4860::8844",
];

/// Name prefixes of the NICs that may carry the node's traffic.
pub const CANDIDATE_PREFIXES: &[&str] = &["eno", "enp", "ens"];

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The config's network settings cannot be used.
    #[error("{path}: {field}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No NIC to use.
    #[error("no Ethernet NIC ({}*) with a carrier among {seen:?}", CANDIDATE_PREFIXES.join("*, "))]
    NoNic {
        /// The interfaces that were there.
        seen: Vec<String>,
    },
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{command}: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// How it failed.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T, E = NetworkError> = std::result::Result<T, E>;

/// How `br6` gets its IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Addressing {
    /// A static address and a default route.
    Static {
        /// The node's HostOS address.
        address: Ipv6Addr,
        /// Its prefix length.
        prefix_length: u8,
        /// The IPv6 gateway.
        gateway: Ipv6Addr,
    },
    /// Addresses and routes from router advertisements.
    RouterAdvertisement,
}

/// What the config says the link must look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The HostOS MAC, on the NIC and on `br6`.
    #[serde(serialize_with = "mac_text")]
    pub mac: MacAddr6,
    /// The address.
    pub addressing: Addressing,
}

fn mac_text<S: serde::Serializer>(mac: &MacAddr6, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_mac(mac))
}

/// The link plan of `config` (read from `path`, named in errors).
pub fn plan(path: &Path, config: &HostOSConfig) -> Result<Plan> {
    let icos = &config.icos_settings;
    let env = icos.deployment_environment.as_str();
    let mac = icos_deterministic_ips::deterministic_mac(&icos.mgmt_mac, env, NodeType::HostOS, 0);
    let addressing = match config
        .network_settings
        .ipv6_config
        .static_address(&icos.mgmt_mac, env, NodeType::HostOS)
        .map_err(|e| NetworkError::Config {
            path: path.to_owned(),
            field: e.field,
            reason: e.reason,
        })? {
        Some(a) => Addressing::Static {
            address: a.address,
            prefix_length: a.prefix_length,
            gateway: a.gateway,
        },
        None => Addressing::RouterAdvertisement,
    };
    Ok(Plan { mac, addressing })
}

/// A NIC as the selection sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// Its kernel name.
    pub name: String,
    /// Whether it has a carrier once up.
    pub carrier: bool,
    /// Its speed in Mbit/s, when the driver knows it.
    pub speed_mbps: Option<u32>,
}

/// Whether `name` may be a node NIC (`eno*`, `enp*`, `ens*`).
pub fn is_candidate(name: &str) -> bool {
    CANDIDATE_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The NICs to try, in order: candidates with a carrier, fastest first,
/// then by name.
pub fn order(nics: &[Nic]) -> Vec<&Nic> {
    let mut out: Vec<&Nic> = nics
        .iter()
        .filter(|n| is_candidate(&n.name) && n.carrier)
        .collect();
    out.sort_by(|a, b| {
        b.speed_mbps
            .unwrap_or(0)
            .cmp(&a.speed_mbps.unwrap_or(0))
            .then_with(|| a.name.cmp(&b.name))
    });
    out
}

/// The chosen NIC, and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// The NIC that joins `br6`.
    pub nic: String,
    /// Whether it reached the gateway (always `false` when nothing was
    /// pinged: router advertisements, or no gateway answered).
    pub reached_gateway: bool,
    /// The NICs tried, in order.
    pub tried: Vec<String>,
    /// Every interface seen, with its facts.
    pub nics: Vec<Nic>,
}

/// Picks the NIC: the first in [`order`] that reaches the gateway with the
/// plan's address; the first of them when none does, or when addresses come
/// from router advertisements (nothing to ping from).
pub fn choose(host: &mut dyn Host, plan: &Plan) -> Result<Choice> {
    let names = host.interfaces()?;
    let mut nics = Vec::new();
    for name in &names {
        if is_candidate(name) {
            host.link_up(name)?;
        }
    }
    for name in &names {
        let candidate = is_candidate(name);
        nics.push(Nic {
            name: name.clone(),
            carrier: candidate && host.carrier(name),
            speed_mbps: if candidate { host.speed(name) } else { None },
        });
    }
    let ordered: Vec<String> = order(&nics).into_iter().map(|n| n.name.clone()).collect();
    let Some(first) = ordered.first().cloned() else {
        return Err(NetworkError::NoNic { seen: names });
    };
    let mut tried = Vec::new();
    if let Addressing::Static {
        address,
        prefix_length,
        gateway,
    } = plan.addressing
    {
        for name in &ordered {
            tried.push(name.clone());
            if host.reaches_gateway(name, address, prefix_length, gateway)? {
                return Ok(Choice {
                    nic: name.clone(),
                    reached_gateway: true,
                    tried,
                    nics,
                });
            }
            tracing::warn!(nic = %name, %gateway, "no answer from the gateway");
        }
    }
    Ok(Choice {
        nic: first,
        reached_gateway: false,
        tried,
        nics,
    })
}

/// A file for systemd-networkd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkdFile {
    /// File name in [`NETWORKD_DIR`].
    pub name: String,
    /// Contents.
    pub text: String,
}

const HEADER: &str = "# Generated at boot by icos-hostos-network from network_settings of\n\
                      # /boot/config/config.json. Do not edit.\n";

/// The networkd files that put `nic` on `br6` with the plan's MAC and
/// address.
pub fn render(plan: &Plan, nic: &str) -> Vec<NetworkdFile> {
    let mac = format_mac(&plan.mac);
    let member = format!(
        "{HEADER}\n[Match]\nName={nic}\n\n[Link]\nMACAddress={mac}\nMTUBytes=1500\n\n\
         [Network]\nBridge={BRIDGE}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\nLLDP=yes\nEmitLLDP=yes\n"
    );
    let netdev = format!(
        "{HEADER}\n[NetDev]\nName={BRIDGE}\nKind=bridge\nMACAddress={mac}\n\n\
         [Bridge]\nSTP=no\nForwardDelaySec=0\n"
    );
    let mut bridge = format!(
        "{HEADER}\n[Match]\nName={BRIDGE}\n\n[Link]\nMTUBytes=1500\n\n[Network]\n\
         DHCP=no\nLinkLocalAddressing=ipv6\nConfigureWithoutCarrier=yes\n"
    );
    match &plan.addressing {
        Addressing::Static {
            address,
            prefix_length,
            gateway,
        } => {
            let _ = write!(
                bridge,
                "IPv6AcceptRA=no\nAddress={address}/{prefix_length}\nGateway={gateway}\n"
            );
        }
        Addressing::RouterAdvertisement => bridge.push_str("IPv6AcceptRA=yes\n"),
    }
    for ns in NAME_SERVERS {
        let _ = writeln!(bridge, "DNS={ns}");
    }
    vec![
        NetworkdFile {
            name: format!("20-{nic}.network"),
            text: member,
        },
        NetworkdFile {
            name: format!("20-{BRIDGE}.netdev"),
            text: netdev,
        },
        NetworkdFile {
            name: format!("20-{BRIDGE}.network"),
            text: bridge,
        },
    ]
}

/// Writes `files` into `dir` (created if missing), each through a
/// temporary file and a rename; returns their paths.
pub fn write(dir: &Path, files: &[NetworkdFile]) -> Result<Vec<PathBuf>> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| NetworkError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut out = Vec::new();
    for f in files {
        let path = dir.join(&f.name);
        let tmp = dir.join(format!(".{}.tmp", f.name));
        std::fs::write(&tmp, &f.text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
