//! `icos node`: a whole node derived from the node provider's inputs.
//!
//! This runs the same chain a real node runs across its three systems:
//! SetupOS turns `config.ini` and `deployment.json` into its config, hands
//! the HostOS config to the host, and the host generates the GuestOS config
//! (with the guest's fixed deterministic IPv6 address) at every VM start.

use std::net::Ipv6Addr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use icos_config::{
    AnyConfig, GuestOSConfig, GuestOsOptions, GuestVmType, HostOSConfig, Ipv6Config, SetupOSConfig,
    generate_guestos_config, generate_hostos_config,
};
use icos_deterministic_ips::{self as ips, NodeType};
use icos_setupos_config::setupos_config_from;
use serde::Serialize;

use crate::cmd::config::SetupOsInputArgs;
use crate::exit::{Classify, CmdResult, Failure};

/// `icos node` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Derive a node's SetupOS, HostOS and GuestOS configs and its addresses,
    /// and print them (optionally writing the three configs to a folder).
    Derive(DeriveArgs),
    /// Show the upgrade status the GuestOS orchestrator writes
    /// (`icos-orchestrator status` shows the same).
    Status(StatusArgs),
}

/// Inputs of `icos node status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The orchestrator's status file.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/run/ic-node/orchestrator/status.json"
    )]
    status_file: PathBuf,
    /// Print the JSON as written.
    #[arg(long)]
    json: bool,
}

/// Prints the orchestrator's status file.
fn status(args: &StatusArgs) -> CmdResult {
    let path = &args.status_file;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))
        .failed()?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a status file", path.display()))
        .bad_input()?;
    if args.json {
        print!("{text}");
        return Ok(());
    }
    let field = |k: &str| match &doc[k] {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let state = &doc["state"];
    let state = match (state["state"].as_str(), state["version"].as_str()) {
        (Some(s), Some(v)) => format!("{s} {v}"),
        (Some(s), None) => match state["reason"].as_str() {
            Some(r) => format!("{s} ({r})"),
            None => s.to_owned(),
        },
        _ => "-".to_owned(),
    };
    println!("state:           {state}");
    println!("running version: {}", field("running_version"));
    println!("target version:  {}", field("target_version"));
    println!("registry:        {}", field("registry_version"));
    println!(
        "hostos:          {}",
        doc["hostos"]["running"].as_str().unwrap_or("-")
    );
    println!("last error:      {}", field("last_error"));
    Ok(())
}

/// Inputs of `icos node derive`.
#[derive(Debug, Args)]
pub struct DeriveArgs {
    #[command(flatten)]
    inputs: SetupOsInputArgs,
    /// Write setupos.json, hostos.json and guestos.json into this folder.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Print one JSON object (addresses and the three configs) instead of text.
    #[arg(long)]
    json: bool,
}

/// One interface of the node.
#[derive(Debug, Serialize)]
struct Interface {
    node_type: NodeType,
    mac: String,
    ipv6: Option<Ipv6Addr>,
}

/// Everything derived for one node.
#[derive(Debug, Serialize)]
struct Node {
    mgmt_mac: String,
    deployment_environment: String,
    ipv6_prefix: Option<String>,
    interfaces: Vec<Interface>,
    setupos: SetupOSConfig,
    hostos: HostOSConfig,
    guestos: GuestOSConfig,
}

fn derive(args: &DeriveArgs) -> CmdResult<Node> {
    let paths = args.inputs.paths();
    let setupos = setupos_config_from(&paths).bad_input()?;
    let hostos = generate_hostos_config(&setupos);
    let guestos =
        generate_guestos_config(&hostos, GuestVmType::Default, &GuestOsOptions::default())
            .context("generating the GuestOS config")
            .bad_input()?;

    // Each stage must produce a config that its consumer accepts.
    for config in [
        AnyConfig::SetupOS(setupos.clone()),
        AnyConfig::HostOS(hostos.clone()),
        AnyConfig::GuestOS(guestos.clone()),
    ] {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(Failure::Failed(anyhow::anyhow!(
                "the derived {} config is invalid: {}",
                config.kind().as_str(),
                icos_config::Problems::new(problems)
            )));
        }
    }

    let icos = &setupos.icos_settings;
    let environment = icos.deployment_environment.as_str();
    let prefix = match &setupos.network_settings.ipv6_config {
        Ipv6Config::Deterministic(d) => Some(d.prefix.clone()),
        _ => None,
    };
    let interfaces = NodeType::ALL
        .into_iter()
        .map(|node_type| {
            let mac = ips::deterministic_mac(&icos.mgmt_mac, environment, node_type, 0);
            let ipv6 = prefix
                .as_deref()
                .map(|p| ips::slaac_ipv6(&mac, p))
                .transpose()
                .bad_input()?;
            Ok(Interface {
                node_type,
                mac: ips::format_mac(&mac),
                ipv6,
            })
        })
        .collect::<CmdResult<Vec<_>>>()?;

    Ok(Node {
        mgmt_mac: ips::format_mac(&icos.mgmt_mac),
        deployment_environment: environment.to_string(),
        ipv6_prefix: prefix,
        interfaces,
        setupos,
        hostos,
        guestos,
    })
}

fn write_configs(dir: &std::path::Path, node: &Node) -> CmdResult {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {}", dir.display()))
        .failed()?;
    let files: [(&str, String); 3] = [
        (
            "setupos.json",
            icos_config::to_json_pretty(&node.setupos).failed()?,
        ),
        (
            "hostos.json",
            icos_config::to_json_pretty(&node.hostos).failed()?,
        ),
        (
            "guestos.json",
            icos_config::to_json_pretty(&node.guestos).failed()?,
        ),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        icos_fs::write_atomic(&path, format!("{text}\n").as_bytes()).failed()?;
        tracing::info!(path = %path.display(), "wrote");
    }
    Ok(())
}

/// Pretty JSON of a config for the terminal, with the node operator private
/// key replaced by a note: the files carry it, a screen or a log must not.
fn redacted_json<T: Serialize>(config: &T) -> CmdResult<String> {
    let mut value = serde_json::to_value(config).failed()?;
    if let Some(key) = value.pointer_mut("/icos_settings/node_operator_private_key")
        && let Some(pem) = key.as_str()
    {
        *key =
            serde_json::Value::String(format!("<PEM private key, {} bytes, not shown>", pem.len()));
    }
    icos_config::to_json_pretty(&value).failed()
}

fn print_text(node: &Node) -> CmdResult {
    println!("Node");
    println!("  management MAC          {}", node.mgmt_mac);
    println!("  deployment environment  {}", node.deployment_environment);
    if let Some(prefix) = &node.ipv6_prefix {
        println!("  IPv6 prefix             {prefix}::/64");
    }
    println!();
    println!("Addresses");
    println!("  {:<16} {:<18} IPv6", "system", "MAC");
    for i in &node.interfaces {
        let ipv6 = i.ipv6.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        println!("  {:<16} {:<18} {ipv6}", i.node_type.as_str(), i.mac);
    }
    for (title, text) in [
        ("SetupOS config", redacted_json(&node.setupos)?),
        ("HostOS config", redacted_json(&node.hostos)?),
        (
            "GuestOS config (generated by HostOS at every VM start)",
            redacted_json(&node.guestos)?,
        ),
    ] {
        println!();
        println!("{title}");
        for line in text.lines() {
            println!("  {line}");
        }
    }
    Ok(())
}

/// Runs an `icos node` subcommand.
pub fn run(cmd: NodeCmd) -> CmdResult {
    match cmd {
        NodeCmd::Derive(args) => {
            let node = derive(&args)?;
            if let Some(dir) = &args.out_dir {
                write_configs(dir, &node)?;
            }
            if args.json {
                println!("{}", icos_config::to_json_pretty(&node).failed()?);
                Ok(())
            } else {
                print_text(&node)
            }
        }
        NodeCmd::Status(args) => status(&args),
    }
}
