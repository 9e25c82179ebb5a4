//! Access in line with the registry: the `readonly` and `backup` accounts'
//! SSH keys and the nftables ruleset.
//!
//! - **SSH keys.** A subnet member's `readonly` and `backup` accounts get
//!   their subnet's `ssh_readonly_keys` and `ssh_backup_keys`; nodes outside
//!   any subnet and API boundary nodes get none from the registry. The keys
//!   that came with the bootstrap
//!   (`/boot/config/accounts_ssh_authorized_keys/<account>`) stay first, so
//!   a registry change never locks out what the node operator set up. The
//!   file is `<homes>/<account>/.ssh/authorized_keys` (where `sshd` looks),
//!   0600 in a 0700 `.ssh`, owned as the home is, written atomically and
//!   only when it changes.
//! - **Firewall.** The boot's ruleset (`icos_guestos_init::firewall`) with
//!   the registry's rules, the node's subnet peers and every node, written
//!   atomically when it changes and loaded through [`FirewallLoader`]
//!   (`nft -f FILE`) when it differs from what was last loaded.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use icos_config::GuestOSConfig;
use icos_guestos_init::firewall::{self, Profile, RegistryRules, Rule};
use icos_registry::Registry;
use icos_registry::model::FirewallAction;

use crate::error::Error;
use crate::files::write_if_changed;
use crate::metrics::Metrics;

/// The accounts whose keys follow the registry.
pub const ACCOUNTS: [&str; 2] = ["readonly", "backup"];

/// The registry's keys for `account` on node `node_id`, and the subnet
/// they come from.
pub fn registry_keys<'a>(
    registry: &'a Registry,
    node_id: &str,
    account: &str,
) -> (&'a [String], Option<&'a str>) {
    if registry.api_boundary_nodes.contains_key(node_id) {
        return (&[], None);
    }
    let Some(id) = registry.subnet_of(node_id) else {
        return (&[], None);
    };
    let Some(subnet) = registry.subnets.get(id) else {
        return (&[], None);
    };
    let keys = match account {
        "readonly" => &subnet.ssh_readonly_keys[..],
        "backup" => &subnet.ssh_backup_keys[..],
        _ => &[],
    };
    (keys, Some(id))
}

fn usable(origin: &str, line: &str) -> bool {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return false;
    }
    if t.chars().any(char::is_control) {
        tracing::warn!(origin, "an SSH key with control characters is left out");
        return false;
    }
    true
}

/// The `authorized_keys` text: the bootstrap's keys, then the registry's.
pub fn authorized_keys(
    bootstrap: Option<&str>,
    registry: &[String],
    subnet: Option<&str>,
) -> String {
    let mut out =
        String::from("# Managed by icos-orchestrator: the bootstrap's keys, then the registry's");
    match subnet {
        Some(s) => out.push_str(&format!(" (subnet {s}).\n")),
        None => out.push_str(" (none: the node is in no subnet).\n"),
    }
    for line in bootstrap.unwrap_or_default().lines() {
        if usable("bootstrap", line) {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    for key in registry {
        // A key holding a line break would smuggle in another line.
        if usable("registry", key) {
            out.push_str(key.trim());
            out.push('\n');
        }
    }
    out
}

/// Where the keys go and where the bootstrap's are.
#[derive(Debug, Clone)]
pub struct SshSync {
    /// The folder of the accounts' homes (`/var/lib`).
    pub homes: PathBuf,
    /// The bootstrap's keys, one file per account
    /// (`/boot/config/accounts_ssh_authorized_keys`).
    pub bootstrap_keys: Option<PathBuf>,
}

fn chown_like(path: &Path, uid: u32, gid: u32) -> Result<(), Error> {
    let m = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, "reading", e))?;
    if m.uid() != uid || m.gid() != gid {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| Error::io(path, "changing the owner of", e))?;
    }
    Ok(())
}

impl SshSync {
    /// The `authorized_keys` file of `account`.
    pub fn file(&self, account: &str) -> PathBuf {
        self.homes.join(account).join(".ssh/authorized_keys")
    }

    /// Writes each account's keys for node `node_id` of `registry`;
    /// returns the accounts whose file changed.
    pub fn sync(
        &self,
        registry: &Registry,
        node_id: &str,
        metrics: &Metrics,
    ) -> Result<Vec<&'static str>, Error> {
        let mut changed = Vec::new();
        for account in ACCOUNTS {
            let bootstrap = match &self.bootstrap_keys {
                Some(dir) => {
                    let p = dir.join(account);
                    match std::fs::read_to_string(&p) {
                        Ok(t) => Some(t),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                        Err(e) => return Err(Error::io(p, "reading", e)),
                    }
                }
                None => None,
            };
            let (keys, subnet) = registry_keys(registry, node_id, account);
            let text = authorized_keys(bootstrap.as_deref(), keys, subnet);
            let home = self.homes.join(account);
            std::fs::create_dir_all(&home).map_err(|e| Error::io(&home, "creating", e))?;
            let owner = std::fs::metadata(&home).map_err(|e| Error::io(&home, "reading", e))?;
            let ssh = home.join(".ssh");
            std::fs::create_dir_all(&ssh).map_err(|e| Error::io(&ssh, "creating", e))?;
            std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(&ssh, "setting the mode of", e))?;
            chown_like(&ssh, owner.uid(), owner.gid())?;
            let file = ssh.join("authorized_keys");
            let wrote = write_if_changed(&file, text.as_bytes(), 0o600)?;
            chown_like(&file, owner.uid(), owner.gid())?;
            if wrote {
                tracing::info!(
                    account,
                    keys = keys.len(),
                    file = %file.display(),
                    "SSH keys follow the registry"
                );
                metrics.access_updated(&format!("ssh_{account}"));
                changed.push(account);
            }
        }
        Ok(changed)
    }
}

/// The registry's part of the ruleset for node `node_id` (`None`: not in
/// the registry).
pub fn registry_rules(registry: &Registry, node_id: Option<&str>) -> RegistryRules {
    let rules = registry
        .firewall_rules
        .iter()
        .map(|r| Rule {
            prefixes: r.prefixes.clone(),
            tcp_ports: r.ports.clone(),
            accept: r.action == FirewallAction::Allow,
            comment: r.comment.clone(),
        })
        .collect();
    let subnet_peers: Vec<std::net::Ipv6Addr> = node_id
        .and_then(|id| {
            let subnet = registry.subnet_of(id)?;
            let members = &registry.subnets.get(subnet)?.members;
            Some(
                members
                    .iter()
                    .filter(|m| m.as_str() != id)
                    .filter_map(|m| registry.nodes.get(m).map(|n| n.ipv6))
                    .collect(),
            )
        })
        .unwrap_or_default();
    let mut subnet_peers: Vec<_> = subnet_peers;
    subnet_peers.sort();
    let mut nodes: Vec<_> = registry.nodes.values().map(|n| n.ipv6).collect();
    nodes.sort();
    RegistryRules {
        rules,
        subnet_peers,
        nodes,
    }
}

/// Loads an nftables ruleset file.
pub trait FirewallLoader {
    /// Loads `path`; the error says why not.
    fn load(&mut self, path: &Path) -> Result<(), String>;
}

/// `nft -f FILE`.
#[derive(Debug, Clone)]
pub struct Nft {
    /// The `nft` program.
    pub program: PathBuf,
}

impl FirewallLoader for Nft {
    fn load(&mut self, path: &Path) -> Result<(), String> {
        let out = Command::new(&self.program)
            .arg("-f")
            .arg(path)
            .output()
            .map_err(|e| format!("running {}: {e}", self.program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} -f: {}: {}",
                self.program.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// The ruleset file, its loader, and what was last loaded.
pub struct FirewallSync<L> {
    /// The ruleset file (`/run/ic-node/nftables-ruleset/nftables.conf`).
    pub file: PathBuf,
    /// Loads it.
    pub loader: L,
    /// The GuestOS config (IPv4 or not).
    pub guestos: GuestOSConfig,
    loaded: Option<String>,
}

impl<L: FirewallLoader> FirewallSync<L> {
    /// Nothing loaded yet: the first [`FirewallSync::sync`] loads.
    pub fn new(file: PathBuf, loader: L, guestos: GuestOSConfig) -> Self {
        FirewallSync {
            file,
            loader,
            guestos,
            loaded: None,
        }
    }

    /// Renders the ruleset for `registry` and node `node_id`, writes it
    /// when it changed and loads it when it differs from the last one
    /// loaded; returns whether it loaded. A failed load is tried again at
    /// the next call.
    pub fn sync(
        &mut self,
        registry: &Registry,
        node_id: Option<&str>,
        metrics: &Metrics,
    ) -> Result<bool, Error> {
        let text = firewall::render_with_registry(
            &self.guestos,
            Profile::Replica,
            &registry_rules(registry, node_id),
        );
        write_if_changed(&self.file, text.as_bytes(), 0o644)?;
        if self.loaded.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        self.loader
            .load(&self.file)
            .map_err(|e| Error::io(&self.file, "loading the ruleset", std::io::Error::other(e)))?;
        tracing::info!(
            file = %self.file.display(),
            rules = registry.firewall_rules.len(),
            "firewall follows the registry"
        );
        metrics.access_updated("firewall");
        self.loaded = Some(text);
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::replica::tests::registry;
    use icos_registry::model::FirewallRule;

    fn id(n: u8) -> String {
        icos_registry::model::self_authenticating_id(&[n; 32])
    }

    const SUBNET_A: &str = "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe";

    #[test]
    fn members_get_their_subnets_keys_others_none() {
        let r = registry();
        let (ro, s) = registry_keys(&r, &id(10), "readonly");
        assert_eq!(ro, ["ssh-ed25519 AAAAro readonly@ops".to_string()]);
        assert_eq!(s, Some(SUBNET_A));
        let (bk, _) = registry_keys(&r, &id(11), "backup");
        assert_eq!(bk, ["ssh-ed25519 AAAAbk backup@ops".to_string()]);
        assert!(registry_keys(&r, &id(13), "readonly").0.is_empty());
        assert!(registry_keys(&r, &id(10), "admin").0.is_empty());
    }

    #[test]
    fn keys_text_keeps_the_bootstrap_and_drops_injections() {
        let text = authorized_keys(
            Some("# ops\nssh-ed25519 BOOT op\n\n"),
            &[
                "ssh-ed25519 REG a".into(),
                "ssh-ed25519 X\nssh-ed25519 SMUGGLED".into(),
                " ".into(),
            ],
            Some("s1"),
        );
        assert_eq!(
            text,
            "# Managed by icos-orchestrator: the bootstrap's keys, then the registry's (subnet s1).\n\
             ssh-ed25519 BOOT op\n\
             ssh-ed25519 REG a\n"
        );
    }

    #[test]
    fn ssh_sync_writes_0600_files_only_on_change() {
        let d = tempfile::tempdir().unwrap();
        let boot = d.path().join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("backup"), "ssh-ed25519 BOOTBK b\n").unwrap();
        let sync = SshSync {
            homes: d.path().join("homes"),
            bootstrap_keys: Some(boot),
        };
        let m = Metrics::new();
        let mut r = registry();
        assert_eq!(sync.sync(&r, &id(10), &m).unwrap(), ["readonly", "backup"]);
        assert!(sync.sync(&r, &id(10), &m).unwrap().is_empty());
        let ro = std::fs::read_to_string(sync.file("readonly")).unwrap();
        assert!(ro.ends_with("ssh-ed25519 AAAAro readonly@ops\n"), "{ro}");
        let bk = std::fs::read_to_string(sync.file("backup")).unwrap();
        assert!(bk.contains("BOOTBK") && bk.contains("AAAAbk"), "{bk}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sync.file("readonly")), 0o600);
        assert_eq!(mode(sync.file("readonly").parent().unwrap()), 0o700);
        // A key removed from the registry goes.
        r.subnets
            .get_mut(SUBNET_A)
            .unwrap()
            .ssh_readonly_keys
            .clear();
        assert_eq!(sync.sync(&r, &id(10), &m).unwrap(), ["readonly"]);
        let ro = std::fs::read_to_string(sync.file("readonly")).unwrap();
        assert!(!ro.contains("AAAAro"), "{ro}");
        assert!(
            m.render()
                .contains("icos_orchestrator_access_updates_total{what=\"ssh_readonly\"} 2")
        );
    }

    #[derive(Default)]
    struct Recorder {
        loads: Vec<String>,
        fail: bool,
    }

    impl FirewallLoader for &mut Recorder {
        fn load(&mut self, path: &Path) -> Result<(), String> {
            if self.fail {
                return Err("nft said no".into());
            }
            self.loads.push(std::fs::read_to_string(path).unwrap());
            Ok(())
        }
    }

    #[test]
    fn firewall_is_rendered_written_and_loaded_on_change() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("nftables-ruleset/nftables.conf");
        let guestos = icos_config_media::dev_guestos_config().unwrap();
        let m = Metrics::new();
        let mut rec = Recorder::default();
        let mut r = registry();
        r.firewall_rules.push(FirewallRule {
            prefixes: vec!["2001:db8:bad::/48".into()],
            ports: vec![22],
            action: FirewallAction::Deny,
            comment: "blocked".into(),
        });
        {
            let mut fw = FirewallSync::new(file.clone(), &mut rec, guestos.clone());
            assert!(fw.sync(&r, Some(&id(10)), &m).unwrap());
            assert!(!fw.sync(&r, Some(&id(10)), &m).unwrap());
            r.firewall_rules[0].ports.push(8080);
            assert!(fw.sync(&r, Some(&id(10)), &m).unwrap());
        }
        assert_eq!(rec.loads.len(), 2);
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(rec.loads[1], text);
        assert!(
            text.contains("ip6 saddr { 2001:db8:bad::/48 } tcp dport { 22, 8080 } counter drop"),
            "{text}"
        );
        // The peer (node 11), not the node itself.
        assert!(
            text.contains("ip6 saddr { 2001:db8::11 } tcp dport { 22, 8080 } counter accept"),
            "{text}"
        );
        assert!(
            text.contains(
                "2001:db8::10, 2001:db8::11, 2001:db8::12, 2001:db8::13 } tcp dport 2497"
            ),
            "{text}"
        );
        // A failed load names the file and is tried again.
        rec.fail = true;
        let mut fw = FirewallSync::new(file.clone(), &mut rec, guestos);
        let err = fw.sync(&r, Some(&id(10)), &m).unwrap_err().to_string();
        assert!(
            err.contains("nftables.conf: loading the ruleset: nft said no"),
            "{err}"
        );
        fw.loader.fail = false;
        assert!(fw.sync(&r, Some(&id(10)), &m).unwrap());
    }

    #[test]
    fn nft_runs_the_program_with_the_file() {
        let d = tempfile::tempdir().unwrap();
        let prog = d.path().join("nft");
        let seen = d.path().join("seen");
        std::fs::write(
            &prog,
            format!(
                "#!/bin/sh\necho \"$@\" > {}\n[ \"$1\" = -f ] && [ -f \"$2\" ]\n",
                seen.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = d.path().join("rules.conf");
        std::fs::write(&file, "flush ruleset\n").unwrap();
        let mut nft = Nft { program: prog };
        nft.load(&file).unwrap();
        assert_eq!(
            std::fs::read_to_string(&seen).unwrap(),
            format!("-f {}\n", file.display())
        );
        let err = nft.load(&d.path().join("none")).unwrap_err();
        assert!(err.contains("exit status: 1"), "{err}");
        let err = Nft {
            program: d.path().join("missing"),
        }
        .load(&file)
        .unwrap_err();
        assert!(err.contains("running"), "{err}");
    }
}
