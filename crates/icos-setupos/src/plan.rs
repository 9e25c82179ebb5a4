//! The install plan: which drive gets HostOS and which drives join the
//! `hostlvm` volume group to carry the `guestos` volume.
//!
//! As in IC: the large drives are taken in the order `lsblk` lists them;
//! the first one is the system drive (HostOS is written to it, its third
//! partition is grown to the end of the drive), and every other large
//! drive becomes an extra LVM physical volume; the `guestos` volume is then
//! extended over all of them, striped once per physical volume. Drives that
//! are not large (the SetupOS USB stick, optical drives, loop devices) are
//! never touched.

use std::fmt;

use serde::Serialize;

use crate::hardware::{Drive, LARGE_DRIVE_MIN_BYTES, format_bytes};

/// What qualifies a drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanRules {
    /// A whole disk of at least this size is a large drive; IC: 1 TiB.
    pub large_drive_min: u64,
    /// The system drive must hold at least this much: the HostOS image.
    pub system_drive_min: u64,
}

impl Default for PlanRules {
    /// IC's rules: large drives of 1 TiB or more, the system drive at least
    /// the size of the HostOS disk image.
    fn default() -> Self {
        PlanRules {
            large_drive_min: LARGE_DRIVE_MIN_BYTES,
            system_drive_min: icos_layout::HOSTOS_DISK_SIZE,
        }
    }
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstallPlan {
    /// The drive HostOS is written to.
    pub system_drive: Drive,
    /// The drives that become extra physical volumes of `hostlvm`.
    pub extra_pvs: Vec<Drive>,
    /// Drives left alone.
    pub untouched: Vec<Drive>,
}

impl InstallPlan {
    /// The stripes of the `guestos` volume (`lvextend -i N`): one per
    /// physical volume.
    pub fn guestos_stripes(&self) -> usize {
        1 + self.extra_pvs.len()
    }

    /// Every drive that will be wiped.
    pub fn wiped(&self) -> impl Iterator<Item = &Drive> {
        std::iter::once(&self.system_drive).chain(&self.extra_pvs)
    }
}

impl fmt::Display for InstallPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HostOS onto {} ({})",
            self.system_drive.name,
            format_bytes(self.system_drive.size)
        )?;
        if self.extra_pvs.is_empty() {
            write!(f, "; guestos volume on {} only", self.system_drive.name)?;
        } else {
            write!(
                f,
                "; guestos volume striped over {} drives: {}",
                self.guestos_stripes(),
                self.wiped()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        Ok(())
    }
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No drive is large enough.
    #[error(
        "no drive to install onto: HostOS goes onto a whole disk of at least {}, and the \
         machine has {}",
        format_bytes(*min),
        if seen.is_empty() { "no block devices".to_string() } else { seen.join(", ") }
    )]
    NoLargeDrive {
        /// The threshold.
        min: u64,
        /// Every device seen, described.
        seen: Vec<String>,
    },
    /// The first large drive cannot hold the HostOS image.
    #[error("the system drive {name} holds {}, less than the {} HostOS needs", format_bytes(*size), format_bytes(*min))]
    SystemDriveTooSmall {
        /// The drive.
        name: String,
        /// Its size.
        size: u64,
        /// What HostOS needs.
        min: u64,
    },
    /// A drive name is listed twice (a broken inventory).
    #[error("drive {0} is listed twice")]
    Duplicate(String),
}

/// Computes the plan from the drive inventory, in `lsblk` order.
pub fn plan_install(drives: &[Drive], rules: &PlanRules) -> Result<InstallPlan, PlanError> {
    for (i, d) in drives.iter().enumerate() {
        if drives[..i].iter().any(|e| e.name == d.name) {
            return Err(PlanError::Duplicate(d.name.clone()));
        }
    }
    let qualifies = |d: &Drive| d.kind == "disk" && d.size >= rules.large_drive_min;
    let (large, untouched): (Vec<Drive>, Vec<Drive>) =
        drives.iter().cloned().partition(|d| qualifies(d));
    let mut large = large.into_iter();
    let Some(system_drive) = large.next() else {
        return Err(PlanError::NoLargeDrive {
            min: rules.large_drive_min,
            seen: drives
                .iter()
                .map(|d| format!("{} {} ({})", d.name, format_bytes(d.size), d.kind))
                .collect(),
        });
    };
    if system_drive.size < rules.system_drive_min {
        return Err(PlanError::SystemDriveTooSmall {
            name: system_drive.name,
            size: system_drive.size,
            min: rules.system_drive_min,
        });
    }
    Ok(InstallPlan {
        system_drive,
        extra_pvs: large.collect(),
        untouched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: u64 = 1_000_000_000_000;

    fn drive(name: &str, size: u64, kind: &str) -> Drive {
        Drive {
            name: name.into(),
            size,
            kind: kind.into(),
        }
    }

    fn names(ds: &[Drive]) -> Vec<&str> {
        ds.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn gen2_server_first_large_drive_gets_hostos() {
        let mut drives = vec![drive("sda", 32_015_679_488, "disk")];
        drives.extend((0..5).map(|i| drive(&format!("nvme{i}n1"), 7_681_501_126_656, "disk")));
        let plan = plan_install(&drives, &PlanRules::default()).unwrap();
        assert_eq!(plan.system_drive.name, "nvme0n1");
        assert_eq!(
            names(&plan.extra_pvs),
            ["nvme1n1", "nvme2n1", "nvme3n1", "nvme4n1"]
        );
        assert_eq!(names(&plan.untouched), ["sda"]);
        assert_eq!(plan.guestos_stripes(), 5);
        assert_eq!(
            plan.to_string(),
            "HostOS onto nvme0n1 (7.68 TB (6.99 TiB)); guestos volume striped over 5 drives: \
             nvme0n1, nvme1n1, nvme2n1, nvme3n1, nvme4n1"
        );
    }

    #[test]
    fn lsblk_order_decides_not_size_or_name() {
        let drives = vec![
            drive("nvme3n1", 4 * TB, "disk"),
            drive("nvme0n1", 8 * TB, "disk"),
        ];
        let plan = plan_install(&drives, &PlanRules::default()).unwrap();
        assert_eq!(plan.system_drive.name, "nvme3n1");
        assert_eq!(names(&plan.extra_pvs), ["nvme0n1"]);
    }

    #[test]
    fn a_single_large_drive_holds_everything() {
        let plan = plan_install(&[drive("sda", 2 * TB, "disk")], &PlanRules::default()).unwrap();
        assert!(plan.extra_pvs.is_empty());
        assert_eq!(plan.guestos_stripes(), 1);
        assert_eq!(plan.wiped().count(), 1);
        assert!(plan.to_string().ends_with("guestos volume on sda only"));
    }

    #[test]
    fn only_whole_disks_of_at_least_one_tib_qualify() {
        let tib = 1u64 << 40;
        let drives = vec![
            drive("loop0", 4 * tib, "loop"),
            drive("sr0", 2 * tib, "rom"),
            drive("md0", 4 * tib, "raid1"),
            drive("sdb", tib - 512, "disk"),
            drive("sdc", tib, "disk"),
        ];
        let plan = plan_install(&drives, &PlanRules::default()).unwrap();
        assert_eq!(plan.system_drive.name, "sdc");
        assert_eq!(names(&plan.untouched), ["loop0", "sr0", "md0", "sdb"]);
    }

    #[test]
    fn refusals_say_why() {
        let err = plan_install(
            &[drive("vda", 20 << 30, "disk"), drive("sr0", 1 << 30, "rom")],
            &PlanRules::default(),
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::NoLargeDrive { .. }));
        let text = err.to_string();
        assert!(text.contains("at least 1.10 TB (1.00 TiB)"), "{text}");
        assert!(text.contains("vda 21.47 GB (20.00 GiB) (disk)"), "{text}");
        assert!(text.contains("sr0"), "{text}");

        let err = plan_install(&[], &PlanRules::default()).unwrap_err();
        assert!(err.to_string().ends_with("no block devices"), "{err}");

        let rules = PlanRules {
            large_drive_min: 10 << 30,
            system_drive_min: icos_layout::HOSTOS_DISK_SIZE,
        };
        let err = plan_install(&[drive("vda", 20 << 30, "disk")], &rules).unwrap_err();
        assert!(
            matches!(err, PlanError::SystemDriveTooSmall { .. }),
            "{err}"
        );

        let err = plan_install(
            &[drive("sda", 2 * TB, "disk"), drive("sda", 2 * TB, "disk")],
            &PlanRules::default(),
        )
        .unwrap_err();
        assert_eq!(err, PlanError::Duplicate("sda".into()));
    }

    #[test]
    fn test_rules_allow_small_virtual_disks() {
        let rules = PlanRules {
            large_drive_min: 100 << 30,
            system_drive_min: icos_layout::HOSTOS_DISK_SIZE,
        };
        let drives = vec![
            drive("vda", 8 << 30, "disk"),
            drive("vdb", 110 << 30, "disk"),
            drive("vdc", 100 << 30, "disk"),
        ];
        let plan = plan_install(&drives, &rules).unwrap();
        assert_eq!(plan.system_drive.name, "vdb");
        assert_eq!(names(&plan.extra_pvs), ["vdc"]);
        assert_eq!(names(&plan.untouched), ["vda"]);
    }
}
