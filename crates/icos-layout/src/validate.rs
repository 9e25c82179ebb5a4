//! Layout validation: every broken rule is reported, each naming the partition
//! or volume it is about.

use std::collections::BTreeSet;
use std::fmt;

use crate::layout::{Layout, LvmLayout, Partition};
use crate::{
    ALIGNMENT_SECTORS, FIRST_USABLE_LBA, GPT_ENTRIES, GPT_NAME_UNITS, GPT_TABLE_SECTORS,
    SECTOR_SIZE,
};

/// One rule a layout breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The disk size is not a whole number of sectors.
    DiskSizeNotSectorMultiple {
        /// Disk size in bytes.
        disk_size: u64,
    },
    /// The disk cannot even hold the two GPTs and the 1 MiB lead-in.
    DiskTooSmallForGpt {
        /// Disk size in bytes.
        disk_size: u64,
    },
    /// The layout has no partitions.
    NoPartitions,
    /// More partitions than GPT entries.
    TooManyPartitions {
        /// How many partitions the layout has.
        count: usize,
    },
    /// A partition name is empty.
    EmptyName {
        /// 1-based position of the partition.
        number: usize,
    },
    /// A name does not fit the 36 UTF-16 units of a GPT entry.
    NameTooLong {
        /// The partition.
        name: String,
    },
    /// Two partitions share a name.
    DuplicateName {
        /// The name.
        name: String,
    },
    /// Two partitions share a UUID.
    DuplicateUuid {
        /// The second partition with the UUID.
        name: String,
        /// The UUID.
        uuid: uuid::Uuid,
    },
    /// A partition has no sectors.
    EmptyPartition {
        /// The partition.
        name: String,
    },
    /// A partition starts before sector 2048.
    StartsTooEarly {
        /// The partition.
        name: String,
        /// Its start sector.
        start: u64,
    },
    /// A partition start is not on a 1 MiB boundary.
    StartNotAligned {
        /// The partition.
        name: String,
        /// Its start sector.
        start: u64,
    },
    /// A partition size is not a whole number of MiB.
    SizeNotAligned {
        /// The partition.
        name: String,
        /// Its size in sectors.
        size: u64,
    },
    /// Two partitions share sectors.
    Overlap {
        /// The partition that starts first.
        first: String,
        /// The partition that starts inside `first`.
        second: String,
    },
    /// A partition runs past the last usable sector of the disk.
    BeyondDisk {
        /// The partition.
        name: String,
        /// Its last sector.
        last_sector: u64,
        /// The last sector a partition may use on this disk.
        last_usable: u64,
    },
    /// The LVM physical volume partition does not exist.
    MissingPvPartition {
        /// The partition name the LVM layout refers to.
        name: String,
    },
    /// The LVM extent size is zero or not a multiple of the sector size.
    BadExtentSize {
        /// The extent size in bytes.
        extent_size: u64,
    },
    /// Two logical volumes share a name.
    DuplicateVolume {
        /// The name.
        name: String,
    },
    /// A logical volume has no extents.
    EmptyVolume {
        /// The volume.
        name: String,
    },
    /// Two logical volumes share extents.
    VolumeOverlap {
        /// The volume that starts first.
        first: String,
        /// The volume that starts inside `first`.
        second: String,
    },
    /// A logical volume runs past the extents the PV partition holds.
    VolumeBeyondPv {
        /// The volume.
        name: String,
        /// One past its last extent.
        end_extent: u64,
        /// The number of extents the PV holds.
        pv_extents: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Violation::*;
        match self {
            DiskSizeNotSectorMultiple { disk_size } => write!(
                f,
                "disk size {disk_size} is not a multiple of {SECTOR_SIZE} bytes"
            ),
            DiskTooSmallForGpt { disk_size } => write!(
                f,
                "disk size {disk_size} bytes cannot hold a GPT with partitions from sector {FIRST_USABLE_LBA}"
            ),
            NoPartitions => write!(f, "the layout has no partitions"),
            TooManyPartitions { count } => write!(
                f,
                "{count} partitions, but a GPT holds at most {GPT_ENTRIES}"
            ),
            EmptyName { number } => write!(f, "partition {number} has an empty name"),
            NameTooLong { name } => write!(
                f,
                "partition name {name:?} is longer than {GPT_NAME_UNITS} UTF-16 units"
            ),
            DuplicateName { name } => write!(f, "partition name {name:?} is used twice"),
            DuplicateUuid { name, uuid } => write!(
                f,
                "partition {name} reuses UUID {uuid} of an earlier partition"
            ),
            EmptyPartition { name } => write!(f, "partition {name} has size 0"),
            StartsTooEarly { name, start } => write!(
                f,
                "partition {name} starts at sector {start}, before sector {FIRST_USABLE_LBA}"
            ),
            StartNotAligned { name, start } => write!(
                f,
                "partition {name} start {start} is not aligned to 1 MiB ({ALIGNMENT_SECTORS} sectors)"
            ),
            SizeNotAligned { name, size } => write!(
                f,
                "partition {name} size {size} is not a multiple of 1 MiB ({ALIGNMENT_SECTORS} sectors)"
            ),
            Overlap { first, second } => {
                write!(f, "partition {second} overlaps partition {first}")
            }
            BeyondDisk {
                name,
                last_sector,
                last_usable,
            } => write!(
                f,
                "partition {name} ends at sector {last_sector}, past the last usable sector {last_usable}"
            ),
            MissingPvPartition { name } => write!(
                f,
                "the LVM physical volume partition {name:?} is not in the layout"
            ),
            BadExtentSize { extent_size } => write!(
                f,
                "LVM extent size {extent_size} is not a positive multiple of {SECTOR_SIZE}"
            ),
            DuplicateVolume { name } => write!(f, "logical volume name {name:?} is used twice"),
            EmptyVolume { name } => write!(f, "logical volume {name} has size 0"),
            VolumeOverlap { first, second } => {
                write!(f, "logical volume {second} overlaps logical volume {first}")
            }
            VolumeBeyondPv {
                name,
                end_extent,
                pv_extents,
            } => write!(
                f,
                "logical volume {name} ends at extent {end_extent}, but the PV holds {pv_extents} extents"
            ),
        }
    }
}

/// The rules a layout broke, all of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("layout {layout} is invalid for a {disk_size}-byte disk: {}", join(.violations))]
pub struct InvalidLayout {
    /// The layout's name.
    pub layout: String,
    /// The disk size checked against, in bytes.
    pub disk_size: u64,
    /// Every broken rule (never empty).
    pub violations: Vec<Violation>,
}

fn join(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The last sector a partition may use on a disk of `total_sectors` sectors:
/// the backup partition entry array and header take the last 33.
pub fn last_usable_lba(total_sectors: u64) -> Option<u64> {
    total_sectors.checked_sub(GPT_TABLE_SECTORS + 2)
}

impl Layout {
    /// Checks the layout against its own [`Layout::disk_size`].
    pub fn validate(&self) -> Result<(), InvalidLayout> {
        self.validate_for(self.disk_size)
    }

    /// Checks the layout against a disk of `disk_size` bytes.
    pub fn validate_for(&self, disk_size: u64) -> Result<(), InvalidLayout> {
        let violations = self.violations(disk_size);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(InvalidLayout {
                layout: self.name.clone(),
                disk_size,
                violations,
            })
        }
    }

    /// Every rule the layout breaks on a disk of `disk_size` bytes: partitions
    /// start at or after sector 2048, start and size are multiples of 1 MiB,
    /// nothing overlaps, everything fits in front of the backup GPT, names and
    /// UUIDs are unique, and LVM volumes fit their physical volume.
    pub fn violations(&self, disk_size: u64) -> Vec<Violation> {
        let mut out = Vec::new();
        if !disk_size.is_multiple_of(SECTOR_SIZE) {
            out.push(Violation::DiskSizeNotSectorMultiple { disk_size });
        }
        let total_sectors = disk_size / SECTOR_SIZE;
        let last_usable = last_usable_lba(total_sectors).filter(|&l| l >= FIRST_USABLE_LBA);
        if last_usable.is_none() {
            out.push(Violation::DiskTooSmallForGpt { disk_size });
        }
        if self.partitions.is_empty() {
            out.push(Violation::NoPartitions);
        }
        if self.partitions.len() > GPT_ENTRIES as usize {
            out.push(Violation::TooManyPartitions {
                count: self.partitions.len(),
            });
        }

        let mut names = BTreeSet::new();
        let mut uuids = BTreeSet::new();
        for (index, p) in self.partitions.iter().enumerate() {
            check_partition(p, index + 1, last_usable, &mut out);
            if !p.name.is_empty() && !names.insert(p.name.as_str()) {
                out.push(Violation::DuplicateName {
                    name: p.name.clone(),
                });
            }
            if !uuids.insert(p.uuid) {
                out.push(Violation::DuplicateUuid {
                    name: p.name.clone(),
                    uuid: p.uuid,
                });
            }
        }
        overlaps(
            self.partitions
                .iter()
                .filter(|p| p.size > 0)
                .map(|p| (p.name.as_str(), p.start, p.end())),
            |first, second| Violation::Overlap { first, second },
            &mut out,
        );
        if let Some(lvm) = &self.lvm {
            check_lvm(self, lvm, &mut out);
        }
        out
    }
}

fn check_partition(
    p: &Partition,
    number: usize,
    last_usable: Option<u64>,
    out: &mut Vec<Violation>,
) {
    let name = || p.name.clone();
    if p.name.is_empty() {
        out.push(Violation::EmptyName { number });
    }
    if p.name.encode_utf16().count() > GPT_NAME_UNITS {
        out.push(Violation::NameTooLong { name: name() });
    }
    if p.size == 0 {
        out.push(Violation::EmptyPartition { name: name() });
    }
    if p.start < FIRST_USABLE_LBA {
        out.push(Violation::StartsTooEarly {
            name: name(),
            start: p.start,
        });
    }
    if !p.start.is_multiple_of(ALIGNMENT_SECTORS) {
        out.push(Violation::StartNotAligned {
            name: name(),
            start: p.start,
        });
    }
    if !p.size.is_multiple_of(ALIGNMENT_SECTORS) {
        out.push(Violation::SizeNotAligned {
            name: name(),
            size: p.size,
        });
    }
    if let Some(last_usable) = last_usable {
        let last_sector = p.start.checked_add(p.size).and_then(|e| e.checked_sub(1));
        match last_sector {
            Some(last_sector) if last_sector <= last_usable => {}
            Some(last_sector) => out.push(Violation::BeyondDisk {
                name: name(),
                last_sector,
                last_usable,
            }),
            None if p.size == 0 => {}
            None => out.push(Violation::BeyondDisk {
                name: name(),
                last_sector: u64::MAX,
                last_usable,
            }),
        }
    }
}

/// Reports each range that starts before the end of an earlier-starting one.
fn overlaps<'a>(
    ranges: impl Iterator<Item = (&'a str, u64, u64)>,
    violation: impl Fn(String, String) -> Violation,
    out: &mut Vec<Violation>,
) {
    let mut sorted: Vec<_> = ranges.collect();
    sorted.sort_by_key(|&(_, start, end)| (start, end));
    // The range reaching furthest so far, which any later start must clear.
    let mut furthest: Option<(&str, u64)> = None;
    for (name, start, end) in sorted {
        if let Some((prev, prev_end)) = furthest {
            if start < prev_end {
                out.push(violation(prev.to_owned(), name.to_owned()));
            }
            if end > prev_end {
                furthest = Some((name, end));
            }
        } else {
            furthest = Some((name, end));
        }
    }
}

fn check_lvm(layout: &Layout, lvm: &LvmLayout, out: &mut Vec<Violation>) {
    let pv = layout.partition(&lvm.pv_partition);
    if pv.is_none() {
        out.push(Violation::MissingPvPartition {
            name: lvm.pv_partition.clone(),
        });
    }
    if lvm.extent_size == 0 || !lvm.extent_size.is_multiple_of(SECTOR_SIZE) {
        out.push(Violation::BadExtentSize {
            extent_size: lvm.extent_size,
        });
    }
    let pv_extents = pv.map(|p| lvm.extents_in(p.size_bytes()));
    let mut names = BTreeSet::new();
    for v in &lvm.volumes {
        if !names.insert(v.name.as_str()) {
            out.push(Violation::DuplicateVolume {
                name: v.name.clone(),
            });
        }
        if v.size_extents == 0 {
            out.push(Violation::EmptyVolume {
                name: v.name.clone(),
            });
        }
        if let Some(pv_extents) = pv_extents
            && (v.end_extent() > pv_extents || v.start_extent.checked_add(v.size_extents).is_none())
        {
            out.push(Violation::VolumeBeyondPv {
                name: v.name.clone(),
                end_extent: v.end_extent(),
                pv_extents,
            });
        }
    }
    overlaps(
        lvm.volumes
            .iter()
            .filter(|v| v.size_extents > 0)
            .map(|v| (v.name.as_str(), v.start_extent, v.end_extent())),
        |first, second| Violation::VolumeOverlap { first, second },
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{OsKind, PartitionType};
    use crate::{GIB, MIB};

    fn part(name: &str, start: u64, size: u64) -> Partition {
        Partition {
            name: name.to_owned(),
            start,
            size,
            kind: PartitionType::Linux,
            uuid: uuid::Uuid::from_u128(u128::from(start) + 1),
            comment: String::new(),
        }
    }

    fn layout(parts: Vec<Partition>) -> Layout {
        Layout::from_partitions("test", parts)
    }

    #[test]
    fn good_layout_has_no_violations() {
        let l = layout(vec![part("a", 2048, 2048), part("b", 4096, 2048)]);
        assert_eq!(l.disk_size, (6144 + 2048) * 512);
        assert_eq!(l.validate(), Ok(()));
    }

    #[test]
    fn each_violation_is_named() {
        let mut parts = vec![
            part("early", 34, 2048),
            part("odd", 4097, 100),
            part("over", 4096, 4096),
            part("", 1 << 20, 2048),
            part("far", 1 << 30, 2048),
        ];
        parts.push(part("over", 1 << 21, 2048));
        let l = layout(parts);
        let v = l.violations(2 * GIB);
        let text: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert!(
            v.contains(&Violation::StartsTooEarly {
                name: "early".into(),
                start: 34
            }),
            "{text:?}"
        );
        assert!(v.contains(&Violation::StartNotAligned {
            name: "early".into(),
            start: 34
        }));
        assert!(v.contains(&Violation::StartNotAligned {
            name: "odd".into(),
            start: 4097
        }));
        assert!(v.contains(&Violation::SizeNotAligned {
            name: "odd".into(),
            size: 100
        }));
        assert!(v.contains(&Violation::Overlap {
            first: "over".into(),
            second: "odd".into()
        }));
        assert!(v.contains(&Violation::EmptyName { number: 4 }));
        assert!(v.contains(&Violation::DuplicateName {
            name: "over".into()
        }));
        assert!(
            v.iter()
                .any(|x| matches!(x, Violation::BeyondDisk { name, .. } if name == "far"))
        );
        assert!(
            text.iter()
                .any(|t| t.contains("partition far ends at sector"))
        );
    }

    #[test]
    fn disk_size_rules() {
        let l = layout(vec![part("a", 2048, 2048)]);
        assert!(
            l.violations(4096 * 512 + 1)
                .contains(&Violation::DiskSizeNotSectorMultiple {
                    disk_size: 4096 * 512 + 1
                })
        );
        assert!(
            l.violations(1000 * 512)
                .contains(&Violation::DiskTooSmallForGpt {
                    disk_size: 1000 * 512
                })
        );
        // The minimum size fits exactly; one sector less does not.
        assert_eq!(l.violations(l.min_disk_size()), vec![]);
        let v = l.violations(l.min_disk_size() - 512);
        assert_eq!(
            v,
            vec![Violation::BeyondDisk {
                name: "a".into(),
                last_sector: 4095,
                last_usable: 4094
            }]
        );
    }

    #[test]
    fn builtin_layouts_reject_a_small_disk() {
        let g = OsKind::GuestOs.layout();
        let err = g.validate_for(GIB).expect_err("1 GiB is too small");
        assert!(
            err.to_string().starts_with(
                "layout guestos is invalid for a 1073741824-byte disk: partition A_boot ends"
            ),
            "{err}"
        );
        assert!(err.violations.len() >= 6);
    }

    #[test]
    fn duplicate_uuid_and_long_name() {
        let mut a = part("a", 2048, 2048);
        let mut b = part("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 4096, 2048);
        b.uuid = a.uuid;
        a.size = 0;
        let v = layout(vec![a, b]).violations(GIB);
        assert!(v.contains(&Violation::EmptyPartition { name: "a".into() }));
        assert!(
            v.iter()
                .any(|x| matches!(x, Violation::DuplicateUuid { .. }))
        );
        assert!(v.iter().any(|x| matches!(x, Violation::NameTooLong { .. })));
    }

    #[test]
    fn lvm_rules() {
        let mut h = OsKind::HostOs.layout();
        let lvm = h.lvm.as_mut().expect("lvm");
        lvm.volumes[1].start_extent = 20; // A_boot now overlaps config
        lvm.volumes[7].size_extents = 20_000; // guestos runs past the PV
        lvm.volumes[2].name = "A_boot".into();
        let v = h.violations(h.disk_size);
        assert!(
            v.contains(&Violation::VolumeOverlap {
                first: "config".into(),
                second: "A_boot".into()
            }),
            "{v:?}"
        );
        assert!(v.contains(&Violation::VolumeBeyondPv {
            name: "guestos".into(),
            end_extent: 30_777,
            pv_extents: 25_599
        }));
        assert!(v.contains(&Violation::DuplicateVolume {
            name: "A_boot".into()
        }));
        h.lvm.as_mut().expect("lvm").pv_partition = "nope".into();
        assert!(
            h.violations(h.disk_size)
                .contains(&Violation::MissingPvPartition {
                    name: "nope".into()
                })
        );
        assert_eq!(
            MIB * 4,
            OsKind::HostOs.layout().lvm.map_or(0, |l| l.extent_size)
        );
    }
}
