//! `icos net`: a node's deterministic MAC and IPv6 addresses.

use std::net::Ipv6Addr;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use icos_deterministic_ips::{self as ips, MacAddr6, NodeType};
use serde::Serialize;

use crate::exit::{Classify, CmdResult};

/// `icos net` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetCmd {
    /// Print the deterministic MAC address of one of the node's interfaces.
    Mac(MacArgs),
    /// Print the deterministic (SLAAC EUI-64) IPv6 address of one of the node's interfaces.
    Ipv6(Ipv6Args),
}

/// Inputs shared by `mac` and `ipv6`.
#[derive(Debug, Args)]
pub struct MacArgs {
    /// The management (BMC/IPMI) MAC of the machine, e.g. 3c:ec:ef:6b:37:99.
    #[arg(long, value_name = "MAC")]
    mgmt_mac: String,
    /// The deployment environment: mainnet or testnet.
    #[arg(long, value_name = "ENV")]
    deployment_environment: String,
    /// Whose interface: setupos, hostos, guestos or upgrade-guestos.
    #[arg(long, value_name = "TYPE")]
    node_type: String,
    /// The VM slot on hosts that run several GuestOS VMs (0 for the usual single VM).
    #[arg(long, value_name = "N", default_value_t = 0)]
    slot: u8,
    /// Print a JSON object instead of just the address.
    #[arg(long)]
    json: bool,
}

/// Inputs of `ipv6`: those of `mac` plus the /64 prefix.
#[derive(Debug, Args)]
pub struct Ipv6Args {
    #[command(flatten)]
    mac: MacArgs,
    /// The network part of the node's /64, e.g. 2a00:fb01:400:44.
    #[arg(long, value_name = "PREFIX")]
    prefix: String,
}

/// The checked inputs of a derivation.
struct Inputs {
    mgmt_mac: MacAddr6,
    environment: &'static str,
    node_type: NodeType,
    slot: u8,
}

#[derive(Serialize)]
struct Output {
    mgmt_mac: String,
    deployment_environment: &'static str,
    node_type: NodeType,
    slot: u8,
    mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6: Option<Ipv6Addr>,
}

/// Parses `mainnet` or `testnet` (any case) into its canonical name.
pub fn parse_environment(text: &str) -> anyhow::Result<&'static str> {
    match text.to_ascii_lowercase().as_str() {
        "mainnet" => Ok("mainnet"),
        "testnet" => Ok("testnet"),
        _ => Err(anyhow!(
            "invalid deployment environment '{text}': expected mainnet or testnet"
        )),
    }
}

fn check(args: &MacArgs) -> CmdResult<Inputs> {
    Ok(Inputs {
        mgmt_mac: ips::parse_mac(&args.mgmt_mac).bad_input()?,
        environment: parse_environment(&args.deployment_environment).bad_input()?,
        node_type: args.node_type.parse().bad_input()?,
        slot: args.slot,
    })
}

fn output(inputs: &Inputs, mac: MacAddr6) -> Output {
    Output {
        mgmt_mac: ips::format_mac(&inputs.mgmt_mac),
        deployment_environment: inputs.environment,
        node_type: inputs.node_type,
        slot: inputs.slot,
        mac: ips::format_mac(&mac),
        prefix: None,
        ipv6: None,
    }
}

fn print(json: bool, out: &Output, plain: String) -> CmdResult {
    if json {
        println!("{}", serde_json::to_string_pretty(out).failed()?);
    } else {
        println!("{plain}");
    }
    Ok(())
}

/// Runs an `icos net` subcommand.
pub fn run(cmd: NetCmd) -> CmdResult {
    match cmd {
        NetCmd::Mac(args) => {
            let inputs = check(&args)?;
            let mac = ips::deterministic_mac(
                &inputs.mgmt_mac,
                inputs.environment,
                inputs.node_type,
                inputs.slot,
            );
            let out = output(&inputs, mac);
            print(args.json, &out, out.mac.clone())
        }
        NetCmd::Ipv6(args) => {
            let inputs = check(&args.mac)?;
            let mac = ips::deterministic_mac(
                &inputs.mgmt_mac,
                inputs.environment,
                inputs.node_type,
                inputs.slot,
            );
            let ipv6 = ips::slaac_ipv6(&mac, &args.prefix).bad_input()?;
            let mut out = output(&inputs, mac);
            out.prefix = Some(args.prefix.clone());
            out.ipv6 = Some(ipv6);
            print(args.mac.json, &out, ipv6.to_string())
        }
    }
}
