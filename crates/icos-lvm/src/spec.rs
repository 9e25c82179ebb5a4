//! What to write: one physical volume holding one volume group of linear
//! logical volumes, and the rules such a description must follow.

use std::fmt;

use icos_layout::{LvmLayout, LvmUuid};
use sha2::{Digest, Sha256};

use crate::{LABEL_SECTOR, MDA_HEADER_SIZE, MDA_OFFSET, SECTOR_SIZE};

/// The `creation_time` IC's HostOS build writes (2021-05-07 00:00:00 UTC).
pub const IC_CREATION_TIME: u64 = 1_620_345_600;
/// The `creation_host` IC's HostOS build writes.
pub const IC_CREATION_HOST: &str = "builder";
/// The device hint IC writes for the HostOS PV (LVM only uses it to speed up
/// scanning; the PV is found by its label wherever it is).
pub const IC_HOSTOS_DEVICE_HINT: &str = "/dev/nvme0n1p3";
/// The smallest metadata area this crate writes (LVM's minimum is eight
/// pages: 32 KiB).
pub const MIN_MDA_SIZE: u64 = 32 * 1024;

/// One linear logical volume: a run of extents on the single PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvSpec {
    /// The LV name (`config`, `A_boot`, ...).
    pub name: String,
    /// The LV UUID.
    pub uuid: LvmUuid,
    /// The first physical extent on the PV.
    pub start_extent: u64,
    /// Length in extents.
    pub extent_count: u64,
}

impl LvSpec {
    /// One past the last physical extent.
    pub fn end_extent(&self) -> u64 {
        self.start_extent.saturating_add(self.extent_count)
    }
}

/// A physical volume holding one volume group, described completely so that
/// the bytes written depend on nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroupSpec {
    /// The VG name.
    pub vg_name: String,
    /// The VG UUID.
    pub vg_uuid: LvmUuid,
    /// The PV UUID.
    pub pv_uuid: LvmUuid,
    /// The size of the PV in bytes, as recorded in the label and metadata
    /// (`dev_size`). It may be smaller than the region it is written into;
    /// `pvresize` grows it later.
    pub pv_size: u64,
    /// Extent size in bytes (a multiple of 512).
    pub extent_size: u64,
    /// Offset of the first extent from the start of the PV in bytes. The
    /// metadata area fills everything from 4 KiB up to here.
    pub pe_start: u64,
    /// `creation_time` of the metadata and every LV (seconds since the epoch).
    pub creation_time: u64,
    /// `creation_host` of the metadata and every LV.
    pub creation_host: String,
    /// The `device` hint of the PV in the metadata, if any.
    pub device_hint: Option<String>,
    /// The `description` line of the metadata.
    pub description: String,
    /// The logical volumes, in metadata order.
    pub volumes: Vec<LvSpec>,
}

impl VolumeGroupSpec {
    /// A spec from a layout's LVM description, with IC's fixed creation
    /// time and host and a PV just large enough for the last volume (as IC's
    /// HostOS build sizes it).
    pub fn from_layout(lvm: &LvmLayout) -> VolumeGroupSpec {
        let last_end = lvm
            .volumes
            .iter()
            .map(|v| v.end_extent())
            .max()
            .unwrap_or(0);
        VolumeGroupSpec {
            vg_name: lvm.vg_name.clone(),
            vg_uuid: lvm.vg_uuid.clone(),
            pv_uuid: lvm.pv_uuid.clone(),
            pv_size: lvm
                .pe_start
                .saturating_add(last_end.saturating_mul(lvm.extent_size)),
            extent_size: lvm.extent_size,
            pe_start: lvm.pe_start,
            creation_time: IC_CREATION_TIME,
            creation_host: IC_CREATION_HOST.to_owned(),
            device_hint: None,
            description: format!("Written by icos-lvm: volume group {}.", lvm.vg_name),
            volumes: lvm
                .volumes
                .iter()
                .map(|v| LvSpec {
                    name: v.name.clone(),
                    uuid: v.uuid.clone(),
                    start_extent: v.start_extent,
                    extent_count: v.size_extents,
                })
                .collect(),
        }
    }

    /// IC's HostOS `hostlvm` volume group as the HostOS image carries it:
    /// IC's UUIDs, extents and volumes, the PV sized to end after `guestos`,
    /// and IC's device hint.
    pub fn ic_hostos() -> VolumeGroupSpec {
        let layout = icos_layout::OsKind::HostOs.layout();
        let mut spec = match layout.lvm.as_ref() {
            Some(lvm) => VolumeGroupSpec::from_layout(lvm),
            // The built-in HostOS layout always has its VG (checked by a test).
            None => unreachable_hostos(),
        };
        spec.device_hint = Some(IC_HOSTOS_DEVICE_HINT.to_owned());
        spec
    }

    /// The number of whole extents in the PV (`pe_count`).
    pub fn pe_count(&self) -> u64 {
        match self.extent_size {
            0 => 0,
            e => self.pv_size.saturating_sub(self.pe_start) / e,
        }
    }

    /// The size of the metadata area in bytes (from 4 KiB to `pe_start`).
    pub fn mda_size(&self) -> u64 {
        self.pe_start.saturating_sub(MDA_OFFSET)
    }

    /// The LV called `name`.
    pub fn volume(&self, name: &str) -> Option<&LvSpec> {
        self.volumes.iter().find(|v| v.name == name)
    }

    /// Byte offset from the start of the PV and length of LV `name`.
    pub fn volume_byte_range(&self, name: &str) -> Option<(u64, u64)> {
        let lv = self.volume(name)?;
        Some((
            self.pe_start
                .saturating_add(lv.start_extent.saturating_mul(self.extent_size)),
            lv.extent_count.saturating_mul(self.extent_size),
        ))
    }

    /// Every rule this spec breaks; empty when it can be written.
    pub fn violations(&self) -> Vec<SpecViolation> {
        let mut out = Vec::new();
        if let Err(rule) = check_name(&self.vg_name, false) {
            out.push(SpecViolation::BadName {
                what: "VG",
                name: self.vg_name.clone(),
                rule,
            });
        }
        if self.extent_size == 0 || !self.extent_size.is_multiple_of(SECTOR_SIZE) {
            out.push(SpecViolation::ExtentSize(self.extent_size));
        }
        if !self.pe_start.is_multiple_of(SECTOR_SIZE) || self.pe_start < MDA_OFFSET + MIN_MDA_SIZE {
            out.push(SpecViolation::PeStart(self.pe_start));
        }
        if self.pv_size < self.pe_start || !self.pv_size.is_multiple_of(SECTOR_SIZE) {
            out.push(SpecViolation::PvSize {
                pv_size: self.pv_size,
                pe_start: self.pe_start,
            });
        }
        if self.vg_uuid == self.pv_uuid {
            out.push(SpecViolation::SharedUuid {
                first: "VG".to_owned(),
                second: "PV".to_owned(),
                uuid: self.vg_uuid.to_string(),
            });
        }
        for (field, value) in [
            ("creation_host", &self.creation_host),
            ("description", &self.description),
        ] {
            if let Some(c) = value.chars().find(|c| !is_plain_text(*c)) {
                out.push(SpecViolation::BadText { field, found: c });
            }
        }
        if let Some(hint) = &self.device_hint
            && let Some(c) = hint.chars().find(|c| !is_plain_text(*c))
        {
            out.push(SpecViolation::BadText {
                field: "device_hint",
                found: c,
            });
        }
        if self.volumes.is_empty() {
            out.push(SpecViolation::NoVolumes);
        }
        let pe_count = self.pe_count();
        for (i, lv) in self.volumes.iter().enumerate() {
            if let Err(rule) = check_name(&lv.name, true) {
                out.push(SpecViolation::BadName {
                    what: "LV",
                    name: lv.name.clone(),
                    rule,
                });
            }
            if lv.extent_count == 0 {
                out.push(SpecViolation::EmptyVolume(lv.name.clone()));
            }
            if lv.end_extent() > pe_count {
                out.push(SpecViolation::OutsidePv {
                    name: lv.name.clone(),
                    end_extent: lv.end_extent(),
                    pe_count,
                });
            }
            for earlier in &self.volumes[..i] {
                if earlier.name == lv.name {
                    out.push(SpecViolation::DuplicateName(lv.name.clone()));
                }
                if earlier.uuid == lv.uuid {
                    out.push(SpecViolation::SharedUuid {
                        first: earlier.name.clone(),
                        second: lv.name.clone(),
                        uuid: lv.uuid.to_string(),
                    });
                }
                if lv.start_extent < earlier.end_extent() && earlier.start_extent < lv.end_extent()
                {
                    out.push(SpecViolation::Overlap {
                        first: earlier.name.clone(),
                        second: lv.name.clone(),
                    });
                }
            }
            for (what, uuid) in [("VG", &self.vg_uuid), ("PV", &self.pv_uuid)] {
                if *uuid == lv.uuid {
                    out.push(SpecViolation::SharedUuid {
                        first: what.to_owned(),
                        second: lv.name.clone(),
                        uuid: uuid.to_string(),
                    });
                }
            }
        }
        out
    }

    /// `Ok` when [`VolumeGroupSpec::violations`] is empty.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let violations = self.violations();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(InvalidSpec {
                vg_name: self.vg_name.clone(),
                violations,
            })
        }
    }
}

#[cold]
fn unreachable_hostos() -> ! {
    panic!("the built-in HostOS layout has no LVM volume group")
}

/// Text written between quotes in the metadata: printable ASCII without `"`
/// and `\`, so that no escaping is needed and every reader agrees.
fn is_plain_text(c: char) -> bool {
    (c == ' ' || c.is_ascii_graphic()) && c != '"' && c != '\\'
}

/// Names LVM reserves for its own hidden volumes.
const RESERVED_LV_PARTS: &[&str] = &[
    "_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_mimage", "_mlog", "_pmspare", "_rimage",
    "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig",
];

/// LVM's naming rules: 1-127 characters of `a-z A-Z 0-9 + _ . -`, not
/// starting with `-`, not `.` or `..`; LV names also not `snapshot`/`pvmove`
/// prefixed and without LVM's internal suffixes.
fn check_name(name: &str, is_lv: bool) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 127 {
        return Err("must be 1 to 127 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
    {
        return Err("may only contain a-z, A-Z, 0-9, '+', '_', '.' and '-'");
    }
    if name.starts_with('-') {
        return Err("must not start with '-'");
    }
    if name == "." || name == ".." {
        return Err("must not be '.' or '..'");
    }
    if is_lv {
        if name.starts_with("snapshot") || name.starts_with("pvmove") {
            return Err("must not start with 'snapshot' or 'pvmove' (reserved by LVM)");
        }
        if RESERVED_LV_PARTS.iter().any(|part| name.contains(part)) {
            return Err("must not contain LVM's internal suffixes such as '_mimage' or '_tdata'");
        }
    }
    Ok(())
}

/// A deterministic LVM UUID for `name`, derived from `seed` (SHA-256 of both,
/// mapped onto LVM's 62 alphanumeric characters). Different names under one
/// seed give different UUIDs.
pub fn derive_uuid(seed: &str, name: &str) -> LvmUuid {
    const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let digest = Sha256::new()
        .chain_update(b"icos-lvm uuid\0")
        .chain_update(seed.as_bytes())
        .chain_update([0])
        .chain_update(name.as_bytes())
        .finalize();
    let chars: Vec<u8> = digest
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()])
        .collect();
    let text = format_uuid_chars(&chars);
    match LvmUuid::new(&text) {
        Ok(uuid) => uuid,
        // 32 alphanumeric characters in LVM's grouping are always valid.
        Err(e) => panic!("derived UUID rejected: {e}"),
    }
}

/// Groups 32 UUID characters 6-4-4-4-4-4-6 with hyphens.
pub(crate) fn format_uuid_chars(chars: &[u8]) -> String {
    let mut out = String::with_capacity(38);
    let mut pos = 0;
    for (i, len) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for &c in chars.iter().skip(pos).take(len) {
            out.push(char::from(c));
        }
        pos += len;
    }
    out
}

/// One broken rule of a [`VolumeGroupSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecViolation {
    /// A VG or LV name breaks LVM's naming rules.
    BadName {
        /// `VG` or `LV`.
        what: &'static str,
        /// The name.
        name: String,
        /// The rule broken.
        rule: &'static str,
    },
    /// The extent size is zero or not a multiple of 512 bytes.
    ExtentSize(u64),
    /// `pe_start` is not sector aligned or leaves no room for the label and a
    /// 32 KiB metadata area.
    PeStart(u64),
    /// The PV size is below `pe_start` or not sector aligned.
    PvSize {
        /// The PV size in bytes.
        pv_size: u64,
        /// The first extent's offset in bytes.
        pe_start: u64,
    },
    /// A quoted text field holds a character the writer does not accept.
    BadText {
        /// The field.
        field: &'static str,
        /// The first offending character.
        found: char,
    },
    /// The VG has no logical volumes.
    NoVolumes,
    /// An LV has no extents.
    EmptyVolume(String),
    /// An LV ends beyond the last extent of the PV.
    OutsidePv {
        /// The LV.
        name: String,
        /// One past its last extent.
        end_extent: u64,
        /// Extents in the PV.
        pe_count: u64,
    },
    /// Two LVs share a name.
    DuplicateName(String),
    /// Two objects share a UUID.
    SharedUuid {
        /// The first object.
        first: String,
        /// The second object.
        second: String,
        /// The UUID.
        uuid: String,
    },
    /// Two LVs share extents.
    Overlap {
        /// The earlier LV.
        first: String,
        /// The later LV.
        second: String,
    },
}

impl fmt::Display for SpecViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecViolation::BadName { what, name, rule } => {
                write!(f, "{what} name {name:?} {rule}")
            }
            SpecViolation::ExtentSize(size) => write!(
                f,
                "extent_size {size} must be a non-zero multiple of {SECTOR_SIZE} bytes"
            ),
            SpecViolation::PeStart(pe_start) => write!(
                f,
                "pe_start {pe_start} must be a multiple of {SECTOR_SIZE} bytes and at least {} \
                 (label in sector {LABEL_SECTOR}, metadata area of at least {MIN_MDA_SIZE} bytes \
                 from offset {MDA_OFFSET})",
                MDA_OFFSET + MIN_MDA_SIZE
            ),
            SpecViolation::PvSize { pv_size, pe_start } => write!(
                f,
                "pv_size {pv_size} must be a multiple of {SECTOR_SIZE} bytes and at least \
                 pe_start {pe_start}"
            ),
            SpecViolation::BadText { field, found } => write!(
                f,
                "{field} contains {found:?}: only printable ASCII without '\"' and '\\' is written"
            ),
            SpecViolation::NoVolumes => write!(f, "the volume group has no logical volumes"),
            SpecViolation::EmptyVolume(name) => write!(f, "LV {name:?} has no extents"),
            SpecViolation::OutsidePv {
                name,
                end_extent,
                pe_count,
            } => write!(
                f,
                "LV {name:?} ends at extent {end_extent}, beyond the PV's {pe_count} extents"
            ),
            SpecViolation::DuplicateName(name) => write!(f, "LV name {name:?} is used twice"),
            SpecViolation::SharedUuid {
                first,
                second,
                uuid,
            } => write!(f, "{first} and {second} share UUID {uuid}"),
            SpecViolation::Overlap { first, second } => {
                write!(f, "LVs {first:?} and {second:?} overlap")
            }
        }
    }
}

/// A [`VolumeGroupSpec`] that breaks at least one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid volume group {vg_name:?}: {}", join(violations))]
pub struct InvalidSpec {
    /// The VG name.
    pub vg_name: String,
    /// Every broken rule.
    pub violations: Vec<SpecViolation>,
}

fn join(violations: &[SpecViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The MDA header must fit before the metadata text (checked at compile time).
const _: () = assert!(MDA_HEADER_SIZE <= MIN_MDA_SIZE);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn small() -> VolumeGroupSpec {
        VolumeGroupSpec {
            vg_name: "vg".into(),
            vg_uuid: derive_uuid("t", "vg"),
            pv_uuid: derive_uuid("t", "pv"),
            pv_size: 1024 * 1024 + 10 * 4096,
            extent_size: 4096,
            pe_start: 1024 * 1024,
            creation_time: 1,
            creation_host: "h".into(),
            device_hint: None,
            description: "d".into(),
            volumes: vec![
                LvSpec {
                    name: "a".into(),
                    uuid: derive_uuid("t", "a"),
                    start_extent: 0,
                    extent_count: 4,
                },
                LvSpec {
                    name: "b".into(),
                    uuid: derive_uuid("t", "b"),
                    start_extent: 4,
                    extent_count: 6,
                },
            ],
        }
    }

    #[test]
    fn ic_hostos_matches_ic() {
        let spec = VolumeGroupSpec::ic_hostos();
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(spec.vg_name, "hostlvm");
        assert_eq!(
            spec.vg_uuid.as_str(),
            "4c7GVZ-Df82-QEcJ-xXtV-JgRL-IjLE-hK0FgA"
        );
        assert_eq!(
            spec.pv_uuid.as_str(),
            "eu0VQE-HlTi-EyRc-GceP-xZtn-3j6t-iqEwyv"
        );
        assert_eq!(spec.extent_size, 4 << 20);
        assert_eq!(spec.pe_start, 1 << 20);
        // IC: 1 MiB header plus the extents up to the end of `guestos`.
        assert_eq!(spec.pe_count(), 10777 + 12800);
        assert_eq!(spec.pv_size, (1 << 20) + 23577 * (4 << 20));
        let names: Vec<&str> = spec.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "config", "A_boot", "A_root", "A_var", "B_boot", "B_root", "B_var", "guestos"
            ]
        );
        assert_eq!(
            spec.volume_byte_range("A_root"),
            Some(((1 << 20) + 281 * (4 << 20), 2560 * (4 << 20)))
        );
    }

    #[test]
    fn valid_small_spec() {
        assert_eq!(small().violations(), vec![]);
    }

    #[test]
    fn every_rule_is_reported() {
        let mut spec = small();
        spec.vg_name = "-vg".into();
        spec.volumes[1].start_extent = 2;
        spec.volumes[1].name = "a".into();
        spec.volumes[1].uuid = spec.volumes[0].uuid.clone();
        spec.volumes.push(LvSpec {
            name: "snapshot1".into(),
            uuid: derive_uuid("t", "c"),
            start_extent: 9,
            extent_count: 0,
        });
        spec.volumes.push(LvSpec {
            name: "far".into(),
            uuid: spec.pv_uuid.clone(),
            start_extent: 100,
            extent_count: 1,
        });
        spec.creation_host = "a\"b".into();
        let v = spec.violations();
        let text: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert!(
            matches!(v[0], SpecViolation::BadName { what: "VG", .. }),
            "{text:?}"
        );
        assert!(
            v.contains(&SpecViolation::DuplicateName("a".into())),
            "{text:?}"
        );
        assert!(v.contains(&SpecViolation::Overlap {
            first: "a".into(),
            second: "a".into()
        }));
        assert!(v.contains(&SpecViolation::EmptyVolume("snapshot1".into())));
        assert!(v.contains(&SpecViolation::OutsidePv {
            name: "far".into(),
            end_extent: 101,
            pe_count: 10
        }));
        assert!(
            v.iter()
                .any(|x| matches!(x, SpecViolation::SharedUuid { first, .. } if first == "PV"))
        );
        assert!(v.iter().any(|x| matches!(
            x,
            SpecViolation::BadText {
                field: "creation_host",
                ..
            }
        )));
        assert!(v.iter().any(
            |x| matches!(x, SpecViolation::BadName { what: "LV", name, .. } if name == "snapshot1")
        ));
        let err = spec.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("invalid volume group \"-vg\": VG name \"-vg\" must not start"),
            "{err}"
        );
    }

    #[test]
    fn geometry_rules() {
        let mut spec = small();
        spec.extent_size = 1000;
        spec.pe_start = 8192;
        spec.pv_size = 100;
        let v = spec.violations();
        assert!(v.contains(&SpecViolation::ExtentSize(1000)));
        assert!(v.contains(&SpecViolation::PeStart(8192)));
        assert!(v.contains(&SpecViolation::PvSize {
            pv_size: 100,
            pe_start: 8192
        }));
    }

    #[test]
    fn lv_names() {
        assert!(check_name("A_boot", true).is_ok());
        assert!(check_name("guestos", true).is_ok());
        assert!(check_name("x_tmeta", true).is_err());
        assert!(check_name("pvmove0", true).is_err());
        assert!(check_name("..", false).is_err());
        assert!(check_name("a/b", false).is_err());
        assert!(check_name(&"a".repeat(128), false).is_err());
    }

    #[test]
    fn derived_uuids_are_stable_and_distinct() {
        let a = derive_uuid("seed", "config");
        assert_eq!(a, derive_uuid("seed", "config"));
        assert_ne!(a, derive_uuid("seed", "A_boot"));
        assert_ne!(a, derive_uuid("other", "config"));
        assert!(LvmUuid::is_valid(a.as_str()));
    }
}
