//! `icos gov`: governance over a registry repository: propose a change,
//! vote on it with a governance key, execute it once a quorum voted, show
//! the registry.

use std::net::Ipv6Addr;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use icos_registry::join::JoinRequest;
use icos_registry::model::{FirewallRule, RoutingEntry};
use icos_registry::operator::OperatorKey;
use icos_registry::release::{UPDATE_IMG, sha256_from_sums, sha256_of_file};
use icos_registry::{Lifetimes, Proposal, Registry, Repo, SigningKey};
use url::Url;

use super::registry::{classify, online_key, parse_lifetime};
use crate::exit::{Classify, CmdResult, Failure};

/// `icos gov` subcommands.
#[derive(Debug, Subcommand)]
pub enum GovCmd {
    /// Write a proposal (REPO/governance/proposals/N.json) against the
    /// published registry; an invalid change is refused here (exit 2).
    Propose(ProposeArgs),
    /// Vote for a proposal: sign its targets metadata with a governance key.
    Vote(VoteArgs),
    /// Publish a proposal that has a quorum of votes: new targets
    /// metadata (the votes are its signatures), the registry, snapshot and
    /// timestamp. Refused below the threshold (exit 1).
    Execute(ExecuteArgs),
    /// Show the published registry (versions, subnets, nodes) and the
    /// proposals.
    Show(ShowArgs),
    /// Make a join request (node side): the node's public key, its
    /// operator and IPv6 address, signed by the node key and the operator
    /// key. Writes JSON to --out or stdout.
    JoinRequest(JoinRequestArgs),
    /// Admit a node on a join request, without a vote: checked against the
    /// registry (operator, signatures, allowance, duplicates) and published
    /// with the online key. Prints "Join request successful!".
    Join(JoinArgs),
}

/// Arguments of `icos gov join-request`.
#[derive(Debug, Args)]
pub struct JoinRequestArgs {
    /// The node's private key (PEM).
    #[arg(long, value_name = "FILE")]
    node_key: PathBuf,
    /// The node operator's private key (PEM: secp256k1 `EC PRIVATE KEY` as
    /// `dfx identity` makes it, or Ed25519 PKCS#8).
    #[arg(long, value_name = "FILE")]
    operator_key: PathBuf,
    /// The node's IPv6 address.
    #[arg(long, value_name = "ADDR")]
    ipv6: Ipv6Addr,
    /// Where to write the request (default: stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Arguments of `icos gov join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    #[command(flatten)]
    repo: RepoArg,
    /// A join request file (from `icos gov join-request`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["node_key", "operator_key", "ipv6"])]
    request: Option<PathBuf>,
    /// Or make the request here: the node's private key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["operator_key", "ipv6"])]
    node_key: Option<PathBuf>,
    /// The node operator's private key (PEM: secp256k1 `EC PRIVATE KEY` as
    /// `dfx identity` makes it, or Ed25519 PKCS#8).
    #[arg(long, value_name = "FILE")]
    operator_key: Option<PathBuf>,
    /// The node's IPv6 address.
    #[arg(long, value_name = "ADDR")]
    ipv6: Option<Ipv6Addr>,
    /// The online key (default REPO/keys/online.pem).
    #[arg(long, value_name = "FILE")]
    online_key: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The repository flag shared by every subcommand.
#[derive(Debug, Args)]
pub struct RepoArg {
    /// The registry repository directory.
    #[arg(long = "repo", value_name = "DIR")]
    dir: PathBuf,
}

/// Arguments of `icos gov propose`.
#[derive(Debug, Args)]
pub struct ProposeArgs {
    #[command(flatten)]
    repo: RepoArg,
    /// A one-line summary.
    #[arg(long, value_name = "TEXT", default_value = "")]
    summary: String,
    /// How long the targets metadata stays valid once executed.
    #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = parse_lifetime)]
    targets_expires: jiff::SignedDuration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    kind: Kind,
}

/// Where the release package's SHA-256 comes from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Sha256Source {
    /// The SHA-256 of update-img.tar.zst, hex.
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// Read it from a SHA256SUMS file (`icos build` output).
    #[arg(long, value_name = "FILE")]
    sha256sums: Option<PathBuf>,
    /// Compute it from the update-img.tar.zst file.
    #[arg(long, value_name = "FILE")]
    update_img: Option<PathBuf>,
}

impl Sha256Source {
    fn resolve(&self) -> CmdResult<String> {
        if let Some(s) = &self.sha256 {
            return Ok(s.to_ascii_lowercase());
        }
        if let Some(p) = &self.sha256sums {
            return sha256_from_sums(p, UPDATE_IMG).bad_input();
        }
        if let Some(p) = &self.update_img {
            return sha256_of_file(p).bad_input();
        }
        Err(Failure::BadInput(anyhow!(
            "one of --sha256, --sha256sums, --update-img is needed"
        )))
    }
}

/// The proposal kinds.
#[derive(Debug, Subcommand)]
pub enum Kind {
    /// Elect a GuestOS version (records the SHA-256 of its update-img.tar.zst).
    ElectGuestosVersion {
        /// Version id.
        #[arg(long = "version-id", value_name = "ID")]
        version_id: String,
        /// Release package URL; repeat for mirrors.
        #[arg(long = "url", value_name = "URL", required = true)]
        urls: Vec<Url>,
        #[command(flatten)]
        sha: Sha256Source,
        /// SEV-SNP launch measurement (hex); repeat.
        #[arg(long = "launch-measurement", value_name = "HEX")]
        launch_measurements: Vec<String>,
    },
    /// Elect a HostOS version.
    ElectHostosVersion {
        /// Version id.
        #[arg(long = "version-id", value_name = "ID")]
        version_id: String,
        /// Release package URL; repeat for mirrors.
        #[arg(long = "url", value_name = "URL", required = true)]
        urls: Vec<Url>,
        #[command(flatten)]
        sha: Sha256Source,
    },
    /// Make a subnet run an elected GuestOS version.
    DeployGuestosToSubnet {
        /// Subnet id.
        #[arg(long, value_name = "ID")]
        subnet: String,
        /// Version id.
        #[arg(long = "version-id", value_name = "ID")]
        version_id: String,
    },
    /// Make unassigned nodes run an elected GuestOS version.
    DeployGuestosToUnassignedNodes {
        /// Version id.
        #[arg(long = "version-id", value_name = "ID")]
        version_id: String,
    },
    /// Make nodes run an elected HostOS version.
    DeployHostosToNodes {
        /// Node id; repeat.
        #[arg(long = "node", value_name = "ID", required = true)]
        nodes: Vec<String>,
        /// Version id.
        #[arg(long = "version-id", value_name = "ID")]
        version_id: String,
    },
    /// Add a node operator (its id derives from its public key).
    AddNodeOperator {
        /// The operator's public key, hex: Ed25519 (32 bytes) or a secp256k1
        /// point (33 bytes compressed, or 65).
        #[arg(long, value_name = "HEX", required_unless_present = "key")]
        public_key: Option<String>,
        /// Or the operator's key file (PEM); only its public half is used.
        #[arg(long, value_name = "FILE", conflicts_with = "public_key")]
        key: Option<PathBuf>,
        /// How many nodes it may add.
        #[arg(long, value_name = "N")]
        allowance: u64,
    },
    /// Set how many more nodes an operator may add.
    SetNodeOperatorAllowance {
        /// Operator id.
        #[arg(long, value_name = "ID")]
        operator: String,
        /// The new allowance.
        #[arg(long, value_name = "N")]
        allowance: u64,
    },
    /// Register a node for an operator (spends one of its allowance).
    AddNode {
        /// The node's Ed25519 public key, hex.
        #[arg(long, value_name = "HEX")]
        public_key: String,
        /// Operator id.
        #[arg(long, value_name = "ID")]
        operator: String,
        /// The node's IPv6 address.
        #[arg(long, value_name = "ADDR")]
        ipv6: Ipv6Addr,
    },
    /// Create a subnet from unassigned nodes.
    CreateSubnet {
        /// The subnet id (textual principal).
        #[arg(long, value_name = "ID")]
        subnet: String,
        /// Member node id; repeat.
        #[arg(long = "node", value_name = "ID", required = true)]
        nodes: Vec<String>,
        /// Elected GuestOS version.
        #[arg(long = "version-id", value_name = "ID")]
        version_id: String,
        /// SSH read-only public key; repeat.
        #[arg(long = "ssh-readonly-key", value_name = "KEY")]
        ssh_readonly_keys: Vec<String>,
        /// SSH backup public key; repeat.
        #[arg(long = "ssh-backup-key", value_name = "KEY")]
        ssh_backup_keys: Vec<String>,
    },
    /// Add unassigned nodes to a subnet.
    AddNodesToSubnet {
        /// Subnet id.
        #[arg(long, value_name = "ID")]
        subnet: String,
        /// Node id; repeat.
        #[arg(long = "node", value_name = "ID", required = true)]
        nodes: Vec<String>,
    },
    /// Replace a subnet's SSH read-only and backup keys.
    SetSubnetSshKeys {
        /// Subnet id.
        #[arg(long, value_name = "ID")]
        subnet: String,
        /// SSH read-only public key; repeat (none: no read-only access).
        #[arg(long = "readonly-key", value_name = "KEY")]
        readonly: Vec<String>,
        /// SSH backup public key; repeat (none: no backup access).
        #[arg(long = "backup-key", value_name = "KEY")]
        backup: Vec<String>,
    },
    /// Make an unassigned node an API boundary node.
    AddApiBoundaryNode {
        /// Node id.
        #[arg(long, value_name = "ID")]
        node: String,
        /// The domain it serves.
        #[arg(long, value_name = "DOMAIN")]
        domain: String,
        /// Elected GuestOS version it runs.
        #[arg(long = "version-id", value_name = "ID")]
        version_id: String,
    },
    /// Stop nodes being API boundary nodes.
    RemoveApiBoundaryNodes {
        /// Node id; repeat.
        #[arg(long = "node", value_name = "ID", required = true)]
        nodes: Vec<String>,
    },
    /// Replace the routing table.
    SetRoutingTable {
        /// A range `START,END,SUBNET` (textual principals, both ends
        /// included); repeat.
        #[arg(long = "range", value_name = "START,END,SUBNET", required = true)]
        ranges: Vec<String>,
    },
    /// Replace the firewall rules with those of a JSON file (a list of
    /// `{"prefixes": [...], "ports": [...], "action": "allow"|"deny", "comment": ""}`).
    SetFirewallRules {
        /// The rules file.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

/// Arguments of `icos gov vote`.
#[derive(Debug, Args)]
pub struct VoteArgs {
    #[command(flatten)]
    repo: RepoArg,
    /// The governance private key (PEM).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The proposal: its number or its file.
    #[arg(value_name = "PROPOSAL")]
    proposal: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `icos gov execute`.
#[derive(Debug, Args)]
pub struct ExecuteArgs {
    #[command(flatten)]
    repo: RepoArg,
    /// The online key (default REPO/keys/online.pem).
    #[arg(long, value_name = "FILE")]
    online_key: Option<PathBuf>,
    /// The proposal: its number or its file.
    #[arg(value_name = "PROPOSAL")]
    proposal: String,
    /// Lifetime of the new timestamp metadata.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_lifetime)]
    timestamp_expires: jiff::SignedDuration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `icos gov show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    repo: RepoArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs an `icos gov` subcommand.
pub fn run(cmd: GovCmd) -> CmdResult {
    match cmd {
        GovCmd::Propose(a) => propose(a),
        GovCmd::Vote(a) => vote(&a),
        GovCmd::Execute(a) => execute(&a),
        GovCmd::Show(a) => show(&a),
        GovCmd::JoinRequest(a) => join_request(&a),
        GovCmd::Join(a) => join(&a),
    }
}

fn join_request(a: &JoinRequestArgs) -> CmdResult {
    let node = SigningKey::load(&a.node_key).map_err(classify)?;
    let operator = OperatorKey::load(&a.operator_key).map_err(classify)?;
    let req = JoinRequest::sign(&node, &operator, a.ipv6);
    let json = serde_json::to_string_pretty(&req).failed()?;
    match &a.out {
        Some(path) => std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))
            .failed()?,
        None => println!("{json}"),
    }
    Ok(())
}

fn join(a: &JoinArgs) -> CmdResult {
    let repo = Repo::new(&a.repo.dir);
    let req = match (&a.request, &a.node_key, &a.operator_key, a.ipv6) {
        (Some(path), _, _, _) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading {}", path.display()))
                .bad_input()?;
            serde_json::from_slice::<JoinRequest>(&bytes)
                .with_context(|| format!("{}: not a join request", path.display()))
                .bad_input()?
        }
        (None, Some(node), Some(op), Some(ipv6)) => {
            let node = SigningKey::load(node).map_err(classify)?;
            let op = OperatorKey::load(op).map_err(classify)?;
            JoinRequest::sign(&node, &op, ipv6)
        }
        _ => {
            return Err(Failure::BadInput(anyhow!(
                "give --request FILE, or --node-key, --operator-key and --ipv6"
            )));
        }
    };
    let online = online_key(&repo, a.online_key.as_deref())?;
    let (id, registry) = repo
        .join(&req, &online, &Lifetimes::default())
        .map_err(classify)?;
    if a.json {
        let out = serde_json::json!({
            "node_id": id,
            "operator": req.operator,
            "remaining_allowance": registry.node_operators.get(&req.operator).map(|o| o.allowance),
        });
        println!("{}", serde_json::to_string_pretty(&out).failed()?);
    } else {
        println!("Join request successful!");
        println!("node id: {id}");
        if let Some(op) = registry.node_operators.get(&req.operator) {
            println!(
                "operator {} has {} node(s) of allowance left",
                req.operator, op.allowance
            );
        }
    }
    Ok(())
}

fn proposal_path(repo: &Repo, arg: &str) -> PathBuf {
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
        repo.proposals_dir().join(format!("{arg}.json"))
    } else {
        PathBuf::from(arg)
    }
}

fn parse_range(text: &str) -> CmdResult<RoutingEntry> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    match parts.as_slice() {
        [start, end, subnet] => Ok(RoutingEntry {
            start: (*start).to_owned(),
            end: (*end).to_owned(),
            subnet: (*subnet).to_owned(),
        }),
        _ => Err(Failure::BadInput(anyhow!(
            "--range {text:?}: expected START,END,SUBNET"
        ))),
    }
}

fn to_proposal(kind: Kind) -> CmdResult<Proposal> {
    Ok(match kind {
        Kind::ElectGuestosVersion {
            version_id,
            urls,
            sha,
            launch_measurements,
        } => Proposal::ElectGuestosVersion {
            version: version_id,
            urls,
            sha256: sha.resolve()?,
            launch_measurements: (!launch_measurements.is_empty()).then_some(launch_measurements),
        },
        Kind::ElectHostosVersion {
            version_id,
            urls,
            sha,
        } => Proposal::ElectHostosVersion {
            version: version_id,
            urls,
            sha256: sha.resolve()?,
        },
        Kind::DeployGuestosToSubnet { subnet, version_id } => Proposal::DeployGuestosToSubnet {
            subnet,
            version: version_id,
        },
        Kind::DeployGuestosToUnassignedNodes { version_id } => {
            Proposal::DeployGuestosToUnassignedNodes {
                version: version_id,
            }
        }
        Kind::DeployHostosToNodes { nodes, version_id } => Proposal::DeployHostosToNodes {
            nodes,
            version: version_id,
        },
        Kind::AddNodeOperator {
            public_key,
            key,
            allowance,
        } => {
            let public_key = match (public_key, key) {
                (Some(p), _) => p,
                (None, Some(path)) => OperatorKey::load(&path)
                    .map_err(classify)?
                    .public()
                    .to_hex(),
                (None, None) => {
                    return Err(Failure::BadInput(anyhow!(
                        "--public-key or --key is needed"
                    )));
                }
            };
            Proposal::AddNodeOperator {
                public_key,
                allowance,
            }
        }
        Kind::SetNodeOperatorAllowance {
            operator,
            allowance,
        } => Proposal::SetNodeOperatorAllowance {
            operator,
            allowance,
        },
        Kind::AddNode {
            public_key,
            operator,
            ipv6,
        } => Proposal::AddNode {
            public_key,
            operator,
            ipv6,
        },
        Kind::CreateSubnet {
            subnet,
            nodes,
            version_id,
            ssh_readonly_keys,
            ssh_backup_keys,
        } => Proposal::CreateSubnet {
            subnet,
            nodes,
            version: version_id,
            ssh_readonly_keys,
            ssh_backup_keys,
        },
        Kind::AddNodesToSubnet { subnet, nodes } => Proposal::AddNodesToSubnet { subnet, nodes },
        Kind::SetSubnetSshKeys {
            subnet,
            readonly,
            backup,
        } => Proposal::SetSubnetSshKeys {
            subnet,
            readonly,
            backup,
        },
        Kind::AddApiBoundaryNode {
            node,
            domain,
            version_id,
        } => Proposal::AddApiBoundaryNode {
            node,
            domain,
            version: version_id,
        },
        Kind::RemoveApiBoundaryNodes { nodes } => Proposal::RemoveApiBoundaryNodes { nodes },
        Kind::SetRoutingTable { ranges } => Proposal::SetRoutingTable {
            entries: ranges
                .iter()
                .map(|r| parse_range(r))
                .collect::<CmdResult<_>>()?,
        },
        Kind::SetFirewallRules { file } => {
            let bytes = std::fs::read(&file)
                .with_context(|| format!("reading {}", file.display()))
                .bad_input()?;
            let rules: Vec<FirewallRule> = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a list of firewall rules", file.display()))
                .bad_input()?;
            Proposal::SetFirewallRules { rules }
        }
    })
}

fn propose(a: ProposeArgs) -> CmdResult {
    let repo = Repo::new(&a.repo.dir);
    let proposal = to_proposal(a.kind)?;
    let lifetimes = Lifetimes {
        targets: a.targets_expires,
        ..Lifetimes::default()
    };
    let (path, file) = repo
        .propose(proposal, &a.summary, &lifetimes)
        .map_err(classify)?;
    if a.json {
        let out = serde_json::json!({
            "proposal": file.id,
            "file": path,
            "kind": file.proposal.kind(),
            "registry_version": file.registry.version,
            "targets_version": file.targets.version.get(),
        });
        println!("{}", serde_json::to_string_pretty(&out).failed()?);
    } else {
        println!(
            "proposal {} ({}): {}",
            file.id,
            file.proposal.kind(),
            path.display()
        );
        println!(
            "registry version {} -> {} once executed; vote with `icos gov vote --repo {} --key KEY {}`",
            file.registry.version - 1,
            file.registry.version,
            a.repo.dir.display(),
            file.id
        );
    }
    Ok(())
}

fn vote(a: &VoteArgs) -> CmdResult {
    let repo = Repo::new(&a.repo.dir);
    let key = SigningKey::load(&a.key).map_err(classify)?;
    let path = proposal_path(&repo, &a.proposal);
    let tally = repo.vote(&path, &key).map_err(classify)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&tally).failed()?);
    } else {
        println!(
            "vote recorded ({}): {} of {} needed votes ({} governance keys){}",
            hex::encode(key.key_id()),
            tally.have,
            tally.need,
            tally.of,
            if tally.have >= tally.need {
                "; ready to execute"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn execute(a: &ExecuteArgs) -> CmdResult {
    let repo = Repo::new(&a.repo.dir);
    let online = online_key(&repo, a.online_key.as_deref())?;
    let path = proposal_path(&repo, &a.proposal);
    let lifetimes = Lifetimes {
        timestamp: a.timestamp_expires,
        ..Lifetimes::default()
    };
    let (tally, registry) = repo.execute(&path, &online, &lifetimes).map_err(classify)?;
    if a.json {
        let out = serde_json::json!({
            "executed": path,
            "votes": tally,
            "registry_version": registry.version,
        });
        println!("{}", serde_json::to_string_pretty(&out).failed()?);
    } else {
        println!(
            "executed {} with {} of {} needed votes: registry version {} published",
            path.display(),
            tally.have,
            tally.need,
            registry.version
        );
    }
    Ok(())
}

fn show(a: &ShowArgs) -> CmdResult {
    let repo = Repo::new(&a.repo.dir);
    let published = repo.published().map_err(classify)?;
    let proposals = repo.proposals().map_err(classify)?;
    if a.json {
        let list: Vec<serde_json::Value> = proposals
            .iter()
            .map(|(path, f)| {
                serde_json::json!({
                    "id": f.id,
                    "file": path,
                    "kind": f.proposal.kind(),
                    "summary": f.summary,
                    "votes": f.votes.len(),
                    "executed": f.executed,
                })
            })
            .collect();
        let out = serde_json::json!({
            "registry": published.registry,
            "targets_version": published.targets.signed.version.get(),
            "timestamp_expires": published.timestamp.signed.expires.to_string(),
            "proposals": list,
        });
        println!("{}", serde_json::to_string_pretty(&out).failed()?);
        return Ok(());
    }
    println!(
        "registry version {} (targets version {}, timestamp expires {})",
        published.registry.version,
        published.targets.signed.version.get(),
        published.timestamp.signed.expires
    );
    print_registry(&published.registry);
    if !proposals.is_empty() {
        println!("proposals:");
        for (_, f) in &proposals {
            println!(
                "  {} {} ({} vote(s)){}: {}",
                f.id,
                f.proposal.kind(),
                f.votes.len(),
                if f.executed { ", executed" } else { "" },
                f.summary
            );
        }
    }
    Ok(())
}

/// Prints a section title, and `(none)` under it when the section is empty.
fn heading(title: &str, empty: bool) {
    println!("{title}:");
    if empty {
        println!("  (none)");
    }
}

/// Prints the registry's versions, subnets and nodes as text.
pub fn print_registry(r: &Registry) {
    let versions = |name: &str, map: &std::collections::BTreeMap<String, _>| {
        heading(&format!("{name} versions"), map.is_empty());
        for (id, v) in map {
            let v: &icos_registry::model::ElectedVersion = v;
            println!("  {id} sha256 {}", v.release_package_sha256);
            for u in &v.release_package_urls {
                println!("    {u}");
            }
        }
    };
    versions("GuestOS", &r.guestos_versions);
    versions("HostOS", &r.hostos_versions);
    println!(
        "unassigned nodes GuestOS version: {}",
        r.unassigned_nodes_guestos_version.as_deref().unwrap_or("-")
    );
    heading("subnets", r.subnets.is_empty());
    for (id, s) in &r.subnets {
        println!(
            "  {id} GuestOS {} ({} node(s))",
            s.guestos_version,
            s.members.len()
        );
    }
    heading("nodes", r.nodes.is_empty());
    for (id, n) in &r.nodes {
        println!(
            "  {id} {} operator {} HostOS {} subnet {}",
            n.ipv6,
            n.operator,
            n.hostos_version.as_deref().unwrap_or("-"),
            r.subnet_of(id).unwrap_or("-")
        );
    }
    heading("node operators", r.node_operators.is_empty());
    for (id, o) in &r.node_operators {
        println!("  {id} allowance {}", o.allowance);
    }
    if !r.api_boundary_nodes.is_empty() {
        println!("API boundary nodes:");
        for (id, b) in &r.api_boundary_nodes {
            println!("  {id} {} GuestOS {}", b.domain, b.guestos_version);
        }
    }
    if !r.routing_table.is_empty() {
        println!("routing table:");
        for e in &r.routing_table {
            println!("  {} ..= {} -> {}", e.start, e.end, e.subnet);
        }
    }
}
