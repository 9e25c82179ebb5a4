//! `icos grubenv`: read and edit a GRUB environment block (grubenv), and
//! apply the A/B boot-cycle refresh of one boot.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::{Args, Subcommand};
use icos_grubenv::{BOOT_ALTERNATIVE, BOOT_CYCLE, BootState, GrubEnv, refresh_for_boot};
use serde_json::{Map, Value, json};

use crate::exit::{Classify, CmdResult, Failure};

/// `icos grubenv` subcommands.
#[derive(Debug, Subcommand)]
pub enum GrubenvCmd {
    /// Print the variables of a grubenv file, one NAME=VALUE line each, in
    /// block order (values unescaped, as `grub-editenv FILE list` prints them).
    Show(ShowArgs),
    /// Set variables and write the file durably; a missing file is created
    /// first, as `grub-editenv FILE set` does.
    Set(SetArgs),
    /// Remove variables (absent ones are ignored) and write the file durably;
    /// a missing file is created first, as `grub-editenv FILE unset` does.
    Unset(UnsetArgs),
    /// Write a new grubenv file without variables, byte for byte what
    /// `grub-editenv FILE create` writes.
    Create(CreateArgs),
    /// Apply one boot's boot-cycle refresh, as a VM runner does when it starts
    /// the VM: print the slot to boot and the new state, and store the new
    /// state unless --dry-run.
    ///
    /// install becomes stable; first_boot becomes failsafe_check (the new
    /// slot boots on trial); failsafe_check switches to the other slot and
    /// becomes stable (rollback); stable is unchanged. A missing
    /// boot_alternative means A, a missing boot_cycle means stable; any other
    /// unknown value is an error (exit 2).
    Boot(BootArgs),
}

/// Arguments of `icos grubenv show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The grubenv file (exactly 1024 bytes).
    file: PathBuf,
    /// Print a JSON object of the variables instead (a repeated name shows
    /// its last value, the one GRUB uses).
    #[arg(long)]
    json: bool,
}

/// Arguments of `icos grubenv set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The grubenv file.
    file: PathBuf,
    /// The variables to set, as NAME=VALUE (the value runs from the first '='
    /// to the end and may contain spaces, '=', backslashes and newlines).
    #[arg(value_name = "NAME=VALUE", required = true)]
    assignments: Vec<String>,
}

/// Arguments of `icos grubenv unset`.
#[derive(Debug, Args)]
pub struct UnsetArgs {
    /// The grubenv file.
    file: PathBuf,
    /// The names of the variables to remove.
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
}

/// Arguments of `icos grubenv create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The grubenv file to write.
    file: PathBuf,
    /// Replace the file if it exists (its variables are lost).
    #[arg(long)]
    force: bool,
}

/// Arguments of `icos grubenv boot`.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// The grubenv file of the system being booted.
    file: PathBuf,
    /// Print what the boot would do, but leave the file unchanged.
    #[arg(long)]
    dry_run: bool,
    /// Print a JSON object instead of NAME=VALUE lines.
    #[arg(long)]
    json: bool,
}

/// Runs an `icos grubenv` subcommand.
pub fn run(cmd: GrubenvCmd) -> CmdResult {
    match cmd {
        GrubenvCmd::Show(args) => show(&args),
        GrubenvCmd::Set(args) => set(&args),
        GrubenvCmd::Unset(args) => unset(&args),
        GrubenvCmd::Create(args) => create(&args),
        GrubenvCmd::Boot(args) => boot(&args),
    }
}

/// Exit 2 for a corrupt block or one that overflows, exit 1 for I/O.
fn classify(e: icos_grubenv::Error) -> Failure {
    if e.is_bad_input() {
        Failure::BadInput(e.into())
    } else {
        Failure::Failed(e.into())
    }
}

fn load(path: &Path) -> CmdResult<GrubEnv> {
    GrubEnv::load(path).map_err(classify)
}

fn load_or_new(path: &Path) -> CmdResult<GrubEnv> {
    GrubEnv::load_or_new(path).map_err(classify)
}

fn store(env: &GrubEnv, path: &Path) -> CmdResult {
    env.store(path).map_err(classify)
}

fn show(args: &ShowArgs) -> CmdResult {
    let env = load(&args.file)?;
    if args.json {
        let object: Map<String, Value> = env
            .vars()
            .map(|(name, value)| (name.to_owned(), Value::from(value)))
            .collect();
        print_json(&Value::Object(object))
    } else {
        print!("{env}");
        Ok(())
    }
}

fn set(args: &SetArgs) -> CmdResult {
    let assignments = args
        .assignments
        .iter()
        .map(|text| {
            text.split_once('=')
                .ok_or_else(|| anyhow!("invalid assignment {text:?}: expected NAME=VALUE"))
        })
        .collect::<Result<Vec<_>, _>>()
        .bad_input()?;
    let mut env = load_or_new(&args.file)?;
    for (name, value) in assignments {
        env.set(name, value).bad_input()?;
    }
    store(&env, &args.file)
}

fn unset(args: &UnsetArgs) -> CmdResult {
    for name in &args.names {
        icos_grubenv::validate_name(name).bad_input()?;
    }
    let mut env = load_or_new(&args.file)?;
    for name in &args.names {
        env.unset(name);
    }
    store(&env, &args.file)
}

fn create(args: &CreateArgs) -> CmdResult {
    if !args.force && args.file.exists() {
        return Err(anyhow!(
            "grubenv {} exists already: pass --force to replace it",
            args.file.display()
        ))
        .failed();
    }
    store(&GrubEnv::new(), &args.file)
}

fn boot(args: &BootArgs) -> CmdResult {
    let env = load(&args.file)?;
    let refresh = refresh_for_boot(&env)
        .map_err(|e| anyhow!("{}: {e}", args.file.display()))
        .bad_input()?;
    let write = refresh.changed && !args.dry_run;
    if write {
        store(&refresh.env, &args.file)?;
    }
    if args.json {
        print_json(&json!({
            "slot": refresh.slot.as_str(),
            "kind": refresh.kind.as_str(),
            "before": state_json(refresh.before),
            "after": state_json(refresh.after),
            "changed": refresh.changed,
            "written": write,
        }))
    } else {
        println!("slot={}", refresh.slot);
        println!("kind={}", refresh.kind);
        println!("{BOOT_ALTERNATIVE}={}", refresh.after.alternative);
        println!("{BOOT_CYCLE}={}", refresh.after.cycle);
        println!("written={write}");
        Ok(())
    }
}

fn state_json(state: BootState) -> Value {
    json!({
        BOOT_ALTERNATIVE: state.alternative.as_str(),
        BOOT_CYCLE: state.cycle.as_str(),
    })
}

fn print_json(value: &Value) -> CmdResult {
    let text = serde_json::to_string_pretty(value).failed()?;
    println!("{text}");
    Ok(())
}
