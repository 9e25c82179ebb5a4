//! `icos config`: create the SetupOS config from the node provider's inputs,
//! derive the HostOS and GuestOS configs from it, and check config files.
//!
//! Every input is read and checked before anything is written, and all of
//! its problems are reported together (exit 2); the output is then written
//! atomically as pretty JSON, so a failed run leaves no output file behind
//! and an existing one untouched.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::{Args, Subcommand, ValueEnum};
use icos_config::{
    AnyConfig, ConfigError, ConfigKind, GuestOsOptions, GuestVmType, HostOSConfig, MacAddr6,
    SetupOSConfig,
};
use icos_setupos_config::{InputPaths, SetupOsInputs, create_setupos_config};
use serde_json::{Value, json};

use crate::exit::{Classify, CmdResult, Failure};

/// `icos config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Create the SetupOS config (config.json) from config.ini,
    /// deployment.json and the optional SSH key folder and node operator key.
    ///
    /// The management MAC is taken from --mgmt-mac, else from
    /// deployment.mgmt_mac in deployment.json, else from `ipmitool lan print`.
    CreateSetuposConfig(CreateSetuposArgs),
    /// Derive the HostOS config from a SetupOS config, as SetupOS does at the
    /// end of the installation.
    GenerateHostosConfig(GenerateHostosArgs),
    /// Derive a guest VM's GuestOS config from a HostOS config, as HostOS
    /// does on every VM start: the deterministic IPv6 settings become the
    /// VM's fixed address.
    GenerateGuestosConfig(GenerateGuestosArgs),
    /// Detect whether a file is a SetupOS, HostOS or GuestOS config and check
    /// every rule; print OK or all problems (exit 2 on problems).
    Check(CheckArgs),
}

/// The node provider's SetupOS inputs, as flags; shared with `icos node derive`.
#[derive(Debug, Args)]
pub struct SetupOsInputArgs {
    /// The node provider's config.ini (network settings, node reward type, flags).
    #[arg(long, value_name = "FILE")]
    config_ini: PathBuf,
    /// The deployment.json (mainnet or testnet, NNS URLs, VM resources).
    #[arg(long, value_name = "FILE")]
    deployment_json: PathBuf,
    /// A folder of SSH public keys: files named admin, backup and readonly.
    #[arg(long, value_name = "DIR")]
    ssh_keys: Option<PathBuf>,
    /// The node operator private key (PEM); its text is embedded in the config.
    #[arg(long, value_name = "FILE")]
    node_operator_key: Option<PathBuf>,
    /// The management (BMC) MAC address, e.g. 3c:ec:ef:6b:37:99; overrides
    /// deployment.json and ipmitool.
    #[arg(long, value_name = "MAC", value_parser = parse_mac_arg)]
    mgmt_mac: Option<MacAddr6>,
}

impl SetupOsInputArgs {
    /// Where the inputs are.
    pub fn paths(&self) -> InputPaths {
        InputPaths {
            config_ini: self.config_ini.clone(),
            deployment_json: self.deployment_json.clone(),
            ssh_keys: self.ssh_keys.clone(),
            node_operator_key: self.node_operator_key.clone(),
            mgmt_mac: self.mgmt_mac,
        }
    }
}

/// Arguments of `icos config create-setupos-config`.
#[derive(Debug, Args)]
pub struct CreateSetuposArgs {
    #[command(flatten)]
    inputs: SetupOsInputArgs,
    /// Where to write the SetupOS config.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

/// Arguments of `icos config generate-hostos-config`.
#[derive(Debug, Args)]
pub struct GenerateHostosArgs {
    /// The SetupOS config to derive from.
    #[arg(value_name = "SETUPOS_CONFIG")]
    input: PathBuf,
    /// Where to write the HostOS config.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

/// The guest VM a GuestOS config is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VmTypeArg {
    /// The VM that normally runs the replica.
    Default,
    /// The VM brought up temporarily during an upgrade.
    Upgrade,
}

/// Arguments of `icos config generate-guestos-config`.
#[derive(Debug, Args)]
pub struct GenerateGuestosArgs {
    /// The HostOS config to derive from.
    #[arg(value_name = "HOSTOS_CONFIG")]
    input: PathBuf,
    /// Where to write the GuestOS config.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Which guest VM the config is for; decides the VM's address and its peer's.
    #[arg(long, value_enum, default_value_t = VmTypeArg::Default)]
    vm_type: VmTypeArg,
    /// The AMD SEV-SNP certificate chain (PEM file); required when the
    /// trusted execution environment is enabled.
    #[arg(long, value_name = "FILE")]
    sev_cert_chain: Option<PathBuf>,
    /// A one-shot recovery hash to put in recovery_config.
    #[arg(long, value_name = "HASH")]
    recovery_hash: Option<String>,
}

/// Arguments of `icos config check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file to check.
    file: PathBuf,
    /// Print the result as a JSON object (file, kind, config_version, ok,
    /// problems) on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs an `icos config` subcommand.
pub fn run(cmd: ConfigCmd) -> CmdResult {
    match cmd {
        ConfigCmd::CreateSetuposConfig(args) => create_setupos(&args),
        ConfigCmd::GenerateHostosConfig(args) => generate_hostos(&args),
        ConfigCmd::GenerateGuestosConfig(args) => generate_guestos(&args),
        ConfigCmd::Check(args) => check(&args),
    }
}

fn parse_mac_arg(text: &str) -> Result<MacAddr6, String> {
    icos_deterministic_ips::parse_mac(text).map_err(|e| e.to_string())
}

/// Exit 2 when the content of a file is the problem or it cannot be read
/// (it names an input), exit 1 when serializing or writing failed.
fn classify(e: ConfigError) -> Failure {
    match e {
        ConfigError::Invalid(_) | ConfigError::Read { .. } => Failure::BadInput(e.into()),
        ConfigError::Serialize { .. } | ConfigError::Write(_) => Failure::Failed(e.into()),
    }
}

/// Fails with every problem when a config that is about to be written
/// breaks a rule.
fn ensure_valid(what: &str, problems: Vec<icos_config::Problem>) -> CmdResult {
    icos_config::Problems::check(problems)
        .map_err(|p| anyhow!("the {what} breaks rules:\n{p}"))
        .bad_input()
}

/// Loads a config of the expected kind and checks every rule.
fn load_checked(path: &Path, want: ConfigKind, command: &str) -> CmdResult<AnyConfig> {
    let config = icos_config::load_any(path).map_err(classify)?;
    if config.kind() != want {
        return Err(Failure::BadInput(anyhow!(
            "{}: is a {} config; {command} reads a {} config",
            path.display(),
            config.kind().as_str(),
            want.as_str()
        )));
    }
    icos_config::Problems::check(config.validate())
        .map_err(|p| ConfigError::Invalid(p.with_file(path)))
        .map_err(classify)?;
    Ok(config)
}

fn save<T: serde::Serialize>(path: &Path, config: &T, what: &str) -> CmdResult {
    icos_config::save(path, config).map_err(classify)?;
    println!("{what} written to {}", path.display());
    Ok(())
}

fn create_setupos(args: &CreateSetuposArgs) -> CmdResult {
    let paths = args.inputs.paths();
    let inputs = SetupOsInputs::load(&paths).bad_input()?;
    tracing::info!(
        "management MAC {} (from {})",
        inputs.mgmt_mac,
        inputs.mgmt_mac_source
    );
    let config: SetupOSConfig = create_setupos_config(&inputs);
    ensure_valid(
        "SetupOS config built from the inputs",
        icos_config::validate_setupos(&config),
    )?;
    save(&args.output, &config, "SetupOS config")
}

fn generate_hostos(args: &GenerateHostosArgs) -> CmdResult {
    let AnyConfig::SetupOS(setupos) =
        load_checked(&args.input, ConfigKind::SetupOS, "generate-hostos-config")?
    else {
        return Err(Failure::Failed(anyhow!("unexpected config kind")));
    };
    let hostos: HostOSConfig = icos_config::generate_hostos_config(&setupos);
    ensure_valid("HostOS config", icos_config::validate_hostos(&hostos))?;
    save(&args.output, &hostos, "HostOS config")
}

fn generate_guestos(args: &GenerateGuestosArgs) -> CmdResult {
    let AnyConfig::HostOS(hostos) =
        load_checked(&args.input, ConfigKind::HostOS, "generate-guestos-config")?
    else {
        return Err(Failure::Failed(anyhow!("unexpected config kind")));
    };
    let sev_cert_chain_pem = match &args.sev_cert_chain {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))
                .bad_input()?,
        ),
    };
    let options = GuestOsOptions {
        sev_cert_chain_pem,
        recovery_hash: args.recovery_hash.clone(),
    };
    let vm_type = match args.vm_type {
        VmTypeArg::Default => GuestVmType::Default,
        VmTypeArg::Upgrade => GuestVmType::Upgrade,
    };
    let guestos = icos_config::generate_guestos_config(&hostos, vm_type, &options)
        .map_err(|e| anyhow!("{}: {e}", args.input.display()))
        .bad_input()?;
    ensure_valid("GuestOS config", icos_config::validate_guestos(&guestos))?;
    save(&args.output, &guestos, "GuestOS config")
}

/// The kind of a JSON file, if it can be told, for reports on broken files.
fn sniff_kind(path: &Path) -> Option<ConfigKind> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    ConfigKind::detect(&value).ok()
}

fn check(args: &CheckArgs) -> CmdResult {
    let path = &args.file;
    let result = icos_config::check_file(path);
    if args.json {
        let report = match &result {
            Ok(config) => json!({
                "file": path.display().to_string(),
                "kind": config.kind().as_str(),
                "config_version": config.config_version(),
                "ok": true,
                "problems": [],
            }),
            Err(e) => {
                let problems: Vec<Value> = match e.problems() {
                    Some(p) => p
                        .problems
                        .iter()
                        .map(|p| json!({"path": p.path, "message": p.rule.to_string()}))
                        .collect(),
                    None => vec![json!({"path": "", "message": e.to_string()})],
                };
                json!({
                    "file": path.display().to_string(),
                    "kind": sniff_kind(path).map(ConfigKind::as_str),
                    "config_version": Value::Null,
                    "ok": false,
                    "problems": problems,
                })
            }
        };
        let text = serde_json::to_string_pretty(&report).failed()?;
        println!("{text}");
    }
    match result {
        Ok(config) => {
            if !args.json {
                println!(
                    "{}: {} config, version {}: OK",
                    path.display(),
                    config.kind().as_str(),
                    config.config_version()
                );
            }
            Ok(())
        }
        Err(e) => match e.problems() {
            None => Err(classify(e)),
            Some(problems) => {
                let kind = sniff_kind(path)
                    .map(|k| format!("{} config with ", k.as_str()))
                    .unwrap_or_default();
                let count = problems.problems.len();
                let noun = if count == 1 { "problem" } else { "problems" };
                Err(Failure::BadInput(anyhow!("{kind}{count} {noun}:\n{e}")))
            }
        },
    }
}
