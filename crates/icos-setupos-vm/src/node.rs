//! The node the stick describes: its `config.ini` and `deployment.json` as
//! the installer will read them, the addresses derived from them, and the
//! QEMU user network that fits them.
//!
//! QEMU's user network plays the node's network: its router advertisements
//! carry the node's /64 (`ipv6-net=PREFIX::/64`), and its host answers at
//! the configured `ipv6_gateway` (`ipv6-host=`; QEMU's default would be
//! `PREFIX::2`), so the installer's gateway ping gets an answer for any
//! gateway inside the /64. Its IPv4 side is fixed: 10.0.2.0/24, with this
//! machine at 10.0.2.2 (also the NTP server and the NNS of test setups), so
//! an IPv4 config must live there.

use std::net::{Ipv4Addr, Ipv6Addr};

use icos_deterministic_ips::{self as ips, MacAddr6, NodeType};
use icos_setupos_config::{
    ConfigIni, DeploymentJson, Problems, parse_config_ini, parse_deployment_json,
};

use crate::error::Error;

/// The IPv4 network of QEMU's user network.
pub const QEMU_IPV4_NET: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 0);
/// Its prefix length.
pub const QEMU_IPV4_PREFIX_LEN: u8 = 24;
/// This machine as the guest sees it.
pub const QEMU_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// QEMU's DNS forwarder.
pub const QEMU_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

/// One interface of the node, derived as IC-OS derives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Which system.
    pub node_type: NodeType,
    /// Its deterministic MAC.
    pub mac: MacAddr6,
    /// Its IPv6 address in the node's /64.
    pub ipv6: Ipv6Addr,
}

/// What the stick says about the node.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// `config.ini`, or every problem the installer will find in it.
    pub config_ini: Result<ConfigIni, Problems>,
    /// `deployment.json`, or its problems.
    pub deployment: Result<DeploymentJson, Problems>,
}

/// The user network for the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    /// The node's /64 as QEMU takes it (`2001:db8:1:2::`), when the config
    /// has a usable one; QEMU's default network otherwise.
    pub ipv6_prefix: Option<Ipv6Addr>,
    /// Where QEMU's host answers (the config's `ipv6_gateway`).
    pub ipv6_host: Option<Ipv6Addr>,
    /// The MAC of the machine's NIC: the node's SetupOS MAC when known, so
    /// the address SLAAC forms is the derived SetupOS address.
    pub mac: Option<MacAddr6>,
    /// Things worth saying before the run (the installer will judge them).
    pub notes: Vec<String>,
}

impl NodeFacts {
    /// Parses the two files' text with the installer's rules.
    pub fn parse(config_ini: &str, deployment_json: &str) -> NodeFacts {
        NodeFacts {
            config_ini: parse_config_ini(config_ini),
            deployment: parse_deployment_json(deployment_json),
        }
    }

    /// The node's interfaces (SetupOS, HostOS, GuestOS, UpgradeGuestOS),
    /// when both files are valid and deployment.json names the management
    /// MAC.
    pub fn interfaces(&self) -> Option<Vec<Interface>> {
        let (Ok(ini), Ok(dep)) = (&self.config_ini, &self.deployment) else {
            return None;
        };
        let mgmt = dep.mgmt_mac?;
        let env = dep.deployment_environment.as_str();
        NodeType::ALL
            .into_iter()
            .map(|node_type| {
                let mac = ips::deterministic_mac(&mgmt, env, node_type, 0);
                let ipv6 = ips::slaac_ipv6(&mac, &ini.ipv6_prefix).ok()?;
                Some(Interface {
                    node_type,
                    mac,
                    ipv6,
                })
            })
            .collect()
    }

    /// The user network that lets the installer's checks pass with this
    /// config, or the rule the config breaks for a QEMU machine. A config
    /// the installer itself will refuse is no error here: the run is how
    /// its refusal is seen; it gets a note.
    ///
    /// `deployment_source` names the deployment.json in errors.
    pub fn net_plan(&self, deployment_source: &std::path::Path) -> Result<NetPlan, Error> {
        let mut plan = NetPlan {
            ipv6_prefix: None,
            ipv6_host: None,
            mac: None,
            notes: Vec::new(),
        };
        match &self.deployment {
            Ok(dep) if dep.mgmt_mac.is_none() => {
                return Err(Error::Input {
                    path: deployment_source.to_path_buf(),
                    reason: "deployment.mgmt_mac is required: a QEMU machine has no BMC \
                             for the installer to ask for the management MAC"
                        .into(),
                });
            }
            Ok(_) => {}
            Err(problems) => plan.notes.push(format!(
                "deployment.json breaks the installer's rules; it will refuse: {problems}"
            )),
        }
        let ini = match &self.config_ini {
            Ok(ini) => ini,
            Err(problems) => {
                plan.notes.push(format!(
                    "config.ini breaks the installer's rules; it will refuse, and the \
                     machine gets QEMU's default IPv6 network: {problems}"
                ));
                return Ok(plan);
            }
        };
        let upper = ips::parse_prefix(&ini.ipv6_prefix).map_err(|e| Error::Value {
            what: "config.ini ipv6_prefix",
            reason: e.to_string(),
        })?;
        let prefix = Ipv6Addr::from(u128::from(upper) << 64);
        let gateway = ini.ipv6_gateway;
        if u128::from(gateway) >> 64 != u128::from(upper) {
            return Err(Error::Value {
                what: "config.ini ipv6_gateway",
                reason: format!(
                    "{gateway} is outside the node's /64 {prefix}/64; QEMU's user network \
                     can only play a gateway inside it"
                ),
            });
        }
        let interfaces = self.interfaces();
        if let Some(node) = interfaces
            .as_ref()
            .and_then(|all| all.iter().find(|i| i.ipv6 == gateway))
        {
            return Err(Error::Value {
                what: "config.ini ipv6_gateway",
                reason: format!(
                    "{gateway} is the node's own {} address",
                    node.node_type.as_str()
                ),
            });
        }
        if let Some(v4) = &ini.ipv4 {
            let in_net = |a: Ipv4Addr| {
                u32::from(a) >> (32 - QEMU_IPV4_PREFIX_LEN)
                    == u32::from(QEMU_IPV4_NET) >> (32 - QEMU_IPV4_PREFIX_LEN)
            };
            let fits = in_net(v4.address)
                && v4.gateway == QEMU_HOST
                && v4.prefix_length == QEMU_IPV4_PREFIX_LEN
                && ![QEMU_IPV4_NET, QEMU_HOST, QEMU_DNS].contains(&v4.address)
                && v4.address.octets()[3] != 255;
            if !fits {
                return Err(Error::Value {
                    what: "config.ini IPv4",
                    reason: format!(
                        "{}/{} with gateway {} does not fit QEMU's user network \
                         {QEMU_IPV4_NET}/{QEMU_IPV4_PREFIX_LEN}, whose gateway is {QEMU_HOST} \
                         (this machine); use e.g. ipv4_address=10.0.2.15, \
                         ipv4_prefix_length=24, ipv4_gateway=10.0.2.2, or leave IPv4 out",
                        v4.address, v4.prefix_length, v4.gateway
                    ),
                });
            }
        }
        plan.ipv6_prefix = Some(prefix);
        plan.ipv6_host = Some(gateway);
        plan.mac = interfaces.and_then(|all| {
            all.into_iter()
                .find(|i| i.node_type == NodeType::SetupOS)
                .map(|i| i.mac)
        });
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const DEPLOYMENT: &str = r#"{
  "deployment": {"deployment_environment": "testnet", "mgmt_mac": "3c:ec:ef:6b:37:99"},
  "logging": {},
  "nns": {"urls": ["http://10.0.2.2:8080"]},
  "dev_vm_resources": {"memory": "2", "cpu": "kvm", "nr_of_vcpus": 2}
}"#;

    fn ini(extra: &str) -> String {
        format!("ipv6_prefix=2001:db8:1234:56\nipv6_gateway=2001:db8:1234:56::1\n{extra}")
    }

    fn plan(config: &str, deployment: &str) -> Result<NetPlan, Error> {
        NodeFacts::parse(config, deployment).net_plan(Path::new("deployment.json"))
    }

    #[test]
    fn the_network_carries_the_nodes_prefix_and_gateway() {
        let p = plan(&ini(""), DEPLOYMENT).unwrap();
        assert_eq!(p.ipv6_prefix, Some("2001:db8:1234:56::".parse().unwrap()));
        assert_eq!(p.ipv6_host, Some("2001:db8:1234:56::1".parse().unwrap()));
        assert!(p.notes.is_empty(), "{:?}", p.notes);
        // The NIC has the node's SetupOS MAC, as `icos node derive` gives it.
        let facts = NodeFacts::parse(&ini(""), DEPLOYMENT);
        let all = facts.interfaces().unwrap();
        assert_eq!(all.len(), 4);
        let mgmt: MacAddr6 = "3c:ec:ef:6b:37:99".parse().unwrap();
        let setupos = ips::deterministic_mac(&mgmt, "testnet", NodeType::SetupOS, 0);
        assert_eq!(p.mac, Some(setupos));
        assert_eq!(all[0].node_type, NodeType::SetupOS);
        assert_eq!(
            all[0].ipv6,
            ips::slaac_ipv6(&setupos, "2001:db8:1234:56").unwrap()
        );
        let v4 = "ipv4_address=10.0.2.15\nipv4_prefix_length=24\nipv4_gateway=10.0.2.2\ndomain=node.example.com\n";
        assert!(plan(&ini(v4), DEPLOYMENT).is_ok());
    }

    #[test]
    fn configs_a_qemu_network_cannot_serve_are_refused() {
        let outside = "ipv6_prefix=2001:db8:1234:56\nipv6_gateway=2001:db8:1234:57::1\n";
        let e = plan(outside, DEPLOYMENT).unwrap_err();
        assert!(e.is_bad_input());
        assert!(e.to_string().contains("ipv6_gateway"), "{e}");
        assert!(e.to_string().contains("outside the node's /64"), "{e}");

        for v4 in [
            "ipv4_address=203.0.113.18\nipv4_prefix_length=28\nipv4_gateway=203.0.113.17\ndomain=a.example.com\n",
            "ipv4_address=10.0.2.15\nipv4_prefix_length=24\nipv4_gateway=10.0.2.1\ndomain=a.example.com\n",
            "ipv4_address=10.0.2.2\nipv4_prefix_length=24\nipv4_gateway=10.0.2.2\ndomain=a.example.com\n",
        ] {
            let e = plan(&ini(v4), DEPLOYMENT).unwrap_err();
            assert!(e.to_string().contains("QEMU's user network"), "{e}");
        }

        let no_mac = DEPLOYMENT.replace(", \"mgmt_mac\": \"3c:ec:ef:6b:37:99\"", "");
        let e = plan(&ini(""), &no_mac).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("deployment.json: deployment.mgmt_mac"),
            "{e}"
        );
    }

    #[test]
    fn a_config_the_installer_refuses_is_only_noted() {
        let p = plan("ipv6_prefix=zz:1\nipv6_gateway=2001:db8::1\n", DEPLOYMENT).unwrap();
        assert_eq!(p.ipv6_prefix, None);
        assert_eq!(p.ipv6_host, None);
        assert_eq!(p.mac, None);
        assert_eq!(p.notes.len(), 1);
        assert!(p.notes[0].contains("ipv6_prefix"), "{:?}", p.notes);

        let p = plan(&ini(""), "{}").unwrap();
        assert!(p.notes[0].contains("deployment.json"), "{:?}", p.notes);
        // Without the management MAC the addresses are unknown.
        assert_eq!(p.mac, None);
    }
}
