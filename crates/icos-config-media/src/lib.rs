//! The GuestOS CONFIG media: how HostOS hands a GuestOS VM its
//! configuration, and how GuestOS reads it back.
//!
//! On every VM start, IC-OS's HostOS derives the [`GuestOSConfig`] and puts
//! it on a small FAT disk image labelled `CONFIG`, attached to the VM as a
//! removable USB disk. The image holds one file, `ic-bootstrap.tar`, which
//! holds `config.json` and a few allow-listed extras:
//!
//! | member | when |
//! |--------|------|
//! | `config.json` | always: the GuestOS config, pretty JSON |
//! | `node_operator_private_key.pem` | when the node operator key was given |
//! | `accounts_ssh_authorized_keys/{admin,backup,readonly}` | dev images |
//! | `nns_public_key_override.pem` | dev images |
//! | `routing_table.json` | Boundary-GuestOS: the router's routing table |
//! | `registry_root.json` | dev/testnet: a registry trust root for an image built without one |
//!
//! # Writing: byte-identical for the same inputs
//!
//! * [`bootstrap_tar`] writes the archive in memory: members sorted by name,
//!   GNU headers with uid/gid 0 and owner names `root`, mtime 0 (IC-OS's
//!   `tar --sort=name --owner=root:0 --group=root:0 --mtime='UTC 1970-01-01'`),
//!   fixed modes whatever the source files' modes or the umask were, padded
//!   to GNU tar's 10 240-byte record.
//! * [`build_media`] puts it on a FAT image of [`media_size`] bytes (twice
//!   the archive plus 1 MiB, as IC-OS sizes it, rounded up to 64 KiB), made
//!   by `mkfs.vfat --invariant -n CONFIG -i 49434F53`; the file is copied
//!   with `mcopy -m` after its times are set to 1980-01-01 00:00 UTC
//!   ([`FAT_EPOCH`], the earliest FAT date), with `TZ=UTC`. Nothing is
//!   mounted, and the result depends neither on the clock, the time zone,
//!   the umask nor the working folder.
//!
//! # Reading: the allow-list
//!
//! A malicious or broken host could put anything on the media, so the
//! reader ([`read_bootstrap`], [`read_bootstrap_tar`]) takes only the files
//! of the table above, each a regular file of at most [`MAX_MEMBER_SIZE`]
//! bytes, and only the first of duplicates. Everything else — unknown
//! names, links, devices, absolute or `..` names, and any file on the FAT
//! image other than `ic-bootstrap.tar` — is skipped, logged (a `tracing`
//! warning) and listed with its reason in [`Bootstrap::ignored`], so
//! callers can report it. `config.json` must be present, parse as a
//! GuestOS config and validate; otherwise the media is rejected.
//!
//! IC-OS test setups also inject `ic_crypto/`, `ic_state/` and
//! `ic_registry_local_store/`; this crate neither writes nor accepts them.
//!
//! # Example
//!
//! ```no_run
//! use icos_config_media::{Extras, build_media, dev_guestos_config, read_bootstrap};
//! # fn main() -> Result<(), icos_config_media::MediaError> {
//! let config = dev_guestos_config()?;
//! let summary = build_media(&config, &Extras::default(), "config.img".as_ref())?;
//! println!("{} bytes, members {:?}", summary.size, summary.members);
//!
//! let bootstrap = read_bootstrap("config.img".as_ref())?;
//! assert_eq!(bootstrap.config, config);
//! for ignored in &bootstrap.ignored {
//!     eprintln!("{ignored}");
//! }
//! # Ok(()) }
//! ```
//!
//! Host tools: `mkfs.vfat` (dosfstools) and `mcopy`, `mdir`, `mlabel`
//! (mtools).

mod archive;
mod error;
mod extras;
mod fat;

use std::path::{Path, PathBuf};

pub use archive::{Bootstrap, IgnoreReason, Ignored, bootstrap_tar, read_bootstrap_tar};
pub use error::MediaError;
pub use extras::{ExtraPaths, Extras, SshAccount};
pub use icos_config::GuestOSConfig;

/// The FAT volume label GuestOS looks for.
pub const MEDIA_LABEL: &str = "CONFIG";
/// The one file on the FAT image.
pub const BOOTSTRAP_TAR: &str = "ic-bootstrap.tar";
/// The GuestOS config inside the archive.
pub const CONFIG_JSON: &str = "config.json";
/// The node operator's private key inside the archive.
pub const NODE_OPERATOR_PRIVATE_KEY: &str = "node_operator_private_key.pem";
/// The NNS public key override inside the archive (dev).
pub const NNS_PUBLIC_KEY_OVERRIDE: &str = "nns_public_key_override.pem";
/// The boundary router's routing table inside the archive
/// (Boundary-GuestOS; the `icos-boundary --routing-table` file format).
pub const ROUTING_TABLE: &str = "routing_table.json";
/// The registry trust root inside the archive (dev/testnet: replaces the
/// one baked into the image; the `icos registry init` `root.json`).
pub const REGISTRY_ROOT: &str = "registry_root.json";
/// The folder of SSH authorized keys inside the archive (dev).
pub const SSH_KEYS_DIR: &str = "accounts_ssh_authorized_keys";
/// The fixed FAT volume id (`"ICOS"` in ASCII), shown as `4943-4F53`.
pub const VOLUME_ID: u32 = 0x4943_4F53;
/// The time of every file on the FAT image: 1980-01-01 00:00:00 UTC, in
/// seconds since the Unix epoch.
pub const FAT_EPOCH: u64 = 315_532_800;
/// The largest file the media may carry (and the reader accepts): 16 MiB.
pub const MAX_MEMBER_SIZE: u64 = 16 << 20;
/// The FAT image size is rounded up to a multiple of this (64 KiB).
pub const SIZE_ALIGN: u64 = 64 << 10;

/// The size of the FAT image for an archive of `tar_len` bytes: twice the
/// archive plus 1 MiB, rounded up to [`SIZE_ALIGN`].
pub fn media_size(tar_len: u64) -> u64 {
    tar_len
        .saturating_mul(2)
        .saturating_add(1 << 20)
        .div_ceil(SIZE_ALIGN)
        .saturating_mul(SIZE_ALIGN)
}

/// What [`build_media`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSummary {
    /// The FAT image.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The size of `ic-bootstrap.tar` in bytes.
    pub tar_size: u64,
    /// The archive members, in order.
    pub members: Vec<String>,
}

/// Writes the CONFIG media for `config` and `extras` to `out` (replacing
/// it). The config is validated first. Same inputs, same bytes.
///
/// The media is made next to `out` under a temporary name and renamed into
/// place, so a failure leaves no half-written `out`.
pub fn build_media(
    config: &GuestOSConfig,
    extras: &Extras,
    out: &Path,
) -> Result<MediaSummary, MediaError> {
    let tar = bootstrap_tar(config, extras)?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| MediaError::Io {
            action,
            path,
            source,
        }
    };
    let staging = tempfile::Builder::new()
        .prefix(".config-media-")
        .tempdir_in(&parent)
        .map_err(io("creating a folder in", &parent))?;
    let tar_path = staging.path().join(BOOTSTRAP_TAR);
    std::fs::write(&tar_path, &tar).map_err(io("writing", &tar_path))?;
    let image = staging.path().join("config.img");
    let size = media_size(tar.len() as u64);
    fat::make_fat(size, &[(BOOTSTRAP_TAR, &tar_path)], &image)?;
    std::fs::rename(&image, out).map_err(io("renaming into", out))?;
    let members = tar::Archive::new(tar.as_slice())
        .entries()
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| String::from_utf8_lossy(&e.path_bytes()).into_owned()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(io("listing", &tar_path))?;
    Ok(MediaSummary {
        path: out.to_owned(),
        size,
        tar_size: tar.len() as u64,
        members,
    })
}

/// Reads a CONFIG media (a FAT image file or block device) through the
/// allow-list (see the crate docs): its label must be `CONFIG` and it must
/// hold `ic-bootstrap.tar`; other files on it are ignored and reported.
/// Every ignored entry is also logged as a warning.
pub fn read_bootstrap(media: &Path) -> Result<Bootstrap, MediaError> {
    let label = fat::label(media)?;
    if label != MEDIA_LABEL {
        return Err(MediaError::BadMedia {
            media: media.to_owned(),
            reason: format!("the FAT label is {label:?}, not {MEDIA_LABEL:?}"),
        });
    }
    let names = fat::list(media)?;
    if !names.iter().any(|n| n == BOOTSTRAP_TAR) {
        return Err(MediaError::BadMedia {
            media: media.to_owned(),
            reason: format!("{BOOTSTRAP_TAR} is missing"),
        });
    }
    let scratch = tempfile::tempdir().map_err(|source| MediaError::Io {
        action: "creating",
        path: std::env::temp_dir(),
        source,
    })?;
    let tar_path = scratch.path().join(BOOTSTRAP_TAR);
    fat::read_file(media, BOOTSTRAP_TAR, &tar_path)?;
    let len = std::fs::metadata(&tar_path)
        .map_err(|source| MediaError::Io {
            action: "reading",
            path: tar_path.clone(),
            source,
        })?
        .len();
    if len > MAX_MEMBER_SIZE.saturating_mul(8) {
        return Err(MediaError::BadMedia {
            media: media.to_owned(),
            reason: format!("{BOOTSTRAP_TAR} is {len} bytes, too large for a CONFIG media"),
        });
    }
    let bytes = std::fs::read(&tar_path).map_err(|source| MediaError::Io {
        action: "reading",
        path: tar_path.clone(),
        source,
    })?;
    let mut bootstrap = read_bootstrap_tar(&bytes, &media.join(BOOTSTRAP_TAR))?;
    let on_media = names
        .into_iter()
        .filter(|n| n != BOOTSTRAP_TAR)
        .map(|name| Ignored {
            name: format!("media:{name}"),
            reason: IgnoreReason::NotAllowed,
        });
    let mut ignored: Vec<Ignored> = on_media.collect();
    ignored.append(&mut bootstrap.ignored);
    for item in &ignored {
        tracing::warn!(media = %media.display(), "{item}");
    }
    bootstrap.ignored = ignored;
    Ok(bootstrap)
}

/// The HostOS config the dev default GuestOS config is derived from: a
/// testnet node with documentation-range addresses
/// (`2001:db8:1234:56::/64`), the management MAC of `examples/`, and the
/// dev VM resources.
pub const DEV_HOSTOS_CONFIG: &str = r#"{
  "config_version": "1.17.0",
  "network_settings": {
    "ipv6_config": {
      "Deterministic": {
        "prefix": "2001:db8:1234:56",
        "prefix_length": 64,
        "gateway": "2001:db8:1234:56::1"
      }
    },
    "ipv4_config": null,
    "domain_name": null
  },
  "icos_settings": {
    "node_reward_type": null,
    "mgmt_mac": "3C:EC:EF:6B:37:99",
    "deployment_environment": "testnet",
    "nns_urls": ["http://[2001:db8:1234:56::10]:8080/"],
    "node_operator_private_key": null,
    "enable_trusted_execution_environment": false,
    "use_ssh_authorized_keys": false,
    "icos_dev_settings": {}
  },
  "hostos_settings": {
    "hostos_dev_settings": {"vm_memory": 16, "vm_cpu": "kvm", "vm_nr_of_vcpus": 16},
    "verbose": false
  },
  "guestos_settings": {"guestos_dev_settings": {}}
}"#;

/// A valid testnet GuestOS config for running a GuestOS image on a
/// developer machine: [`DEV_HOSTOS_CONFIG`] run through
/// [`icos_config::generate_guestos_config`] for the default VM, exactly as
/// HostOS derives it at a VM start (so the guest gets its deterministic
/// fixed IPv6 address in `2001:db8:1234:56::/64`).
pub fn dev_guestos_config() -> Result<GuestOSConfig, MediaError> {
    let bad = |reason: String| MediaError::BadInput {
        path: PathBuf::from("<built-in dev HostOS config>"),
        reason,
    };
    let hostos = icos_config::from_json_str::<icos_config::HostOSConfig>(DEV_HOSTOS_CONFIG)
        .map_err(|p| bad(p.to_string()))?;
    icos_config::generate_guestos_config(
        &hostos,
        icos_config::GuestVmType::Default,
        &icos_config::GuestOsOptions::default(),
    )
    .map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests;
