//! The layout types: partitions, LVM volumes, whole-disk layouts and A/B slots.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ALIGNMENT_SECTORS, IC_LABEL_ID, SECTOR_SIZE};

/// The partition types IC-OS layouts use, by their one-letter `sfdisk` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PartitionType {
    /// `U`: EFI system partition.
    #[serde(rename = "U")]
    Efi,
    /// `L`: Linux filesystem.
    #[serde(rename = "L")]
    Linux,
    /// `M`: Microsoft basic data (the SetupOS FAT config partition).
    #[serde(rename = "M")]
    MicrosoftBasicData,
}

impl PartitionType {
    /// Every type, in code order `U`, `L`, `M`.
    pub const ALL: [PartitionType; 3] = [
        PartitionType::Efi,
        PartitionType::Linux,
        PartitionType::MicrosoftBasicData,
    ];

    /// The one-letter code used in IC's `partitions.csv` (`U`, `L` or `M`).
    pub const fn code(self) -> char {
        match self {
            PartitionType::Efi => 'U',
            PartitionType::Linux => 'L',
            PartitionType::MicrosoftBasicData => 'M',
        }
    }

    /// The GPT partition type GUID.
    pub const fn type_guid(self) -> Uuid {
        match self {
            PartitionType::Efi => uuid::uuid!("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            PartitionType::Linux => uuid::uuid!("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            PartitionType::MicrosoftBasicData => {
                uuid::uuid!("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")
            }
        }
    }

    /// A short human name ("EFI System", "Linux filesystem", "Microsoft basic data").
    pub const fn description(self) -> &'static str {
        match self {
            PartitionType::Efi => "EFI System",
            PartitionType::Linux => "Linux filesystem",
            PartitionType::MicrosoftBasicData => "Microsoft basic data",
        }
    }

    /// The type for a one-letter code; `None` for any other code.
    pub fn from_code(code: &str) -> Option<PartitionType> {
        Self::ALL
            .into_iter()
            .find(|t| code.len() == 1 && code.starts_with(t.code()))
    }

    /// The type whose GUID is `guid`; `None` for a GUID outside the three.
    pub fn from_type_guid(guid: Uuid) -> Option<PartitionType> {
        Self::ALL.into_iter().find(|t| t.type_guid() == guid)
    }
}

impl fmt::Display for PartitionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// One GPT partition of a layout. Start and size are in 512-byte sectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// The IC name (`esp`, `A_root`, ...); also written as the GPT partition name.
    pub name: String,
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub size: u64,
    /// The partition type.
    #[serde(rename = "type")]
    pub kind: PartitionType,
    /// The fixed partition UUID (PARTUUID).
    #[serde(serialize_with = "crate::layout::serialize_uuid_upper")]
    pub uuid: Uuid,
    /// The free-form comment from the CSV row.
    #[serde(default)]
    pub comment: String,
}

impl Partition {
    /// One past the last sector (`start + size`).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }

    /// The last sector, inclusive (the GPT "ending LBA").
    pub fn last_sector(&self) -> u64 {
        self.end().saturating_sub(1)
    }

    /// Byte offset of the partition from the start of the disk.
    pub fn offset_bytes(&self) -> u64 {
        self.start.saturating_mul(SECTOR_SIZE)
    }

    /// Length of the partition in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size.saturating_mul(SECTOR_SIZE)
    }
}

/// Serializes a UUID in upper-case hyphenated form, as `sfdisk` prints it.
pub(crate) fn serialize_uuid_upper<S: serde::Serializer>(
    uuid: &Uuid,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut buf = Uuid::encode_buffer();
    serializer.serialize_str(uuid.hyphenated().encode_upper(&mut buf))
}

/// An LVM UUID such as `4c7GVZ-Df82-QEcJ-xXtV-JgRL-IjLE-hK0FgA`: 32 characters from
/// LVM's alphabet (`0-9`, `a-z`, `A-Z`, `!`, `#`) in groups of 6-4-4-4-4-4-6.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LvmUuid(Cow<'static, str>);

/// Lengths of the hyphen-separated groups of an LVM UUID.
const LVM_UUID_GROUPS: [usize; 7] = [6, 4, 4, 4, 4, 4, 6];

impl LvmUuid {
    /// Checks the format and wraps the text.
    pub fn new(text: &str) -> Result<LvmUuid, InvalidLvmUuid> {
        if Self::is_valid(text) {
            Ok(LvmUuid(Cow::Owned(text.to_owned())))
        } else {
            Err(InvalidLvmUuid {
                value: text.to_owned(),
            })
        }
    }

    /// Wraps a built-in constant; unit tests check every such constant.
    pub(crate) const fn from_static(text: &'static str) -> LvmUuid {
        LvmUuid(Cow::Borrowed(text))
    }

    /// Whether `text` has the LVM UUID format.
    pub fn is_valid(text: &str) -> bool {
        let mut groups = text.split('-');
        for expected in LVM_UUID_GROUPS {
            match groups.next() {
                Some(g) if g.len() == expected && g.bytes().all(is_lvm_uuid_char) => {}
                _ => return false,
            }
        }
        groups.next().is_none()
    }

    /// The UUID text, with hyphens.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_lvm_uuid_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'!' || b == b'#'
}

impl fmt::Display for LvmUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for LvmUuid {
    type Err = InvalidLvmUuid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LvmUuid::new(s)
    }
}

impl TryFrom<String> for LvmUuid {
    type Error = InvalidLvmUuid;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if Self::is_valid(&s) {
            Ok(LvmUuid(Cow::Owned(s)))
        } else {
            Err(InvalidLvmUuid { value: s })
        }
    }
}

impl From<LvmUuid> for String {
    fn from(u: LvmUuid) -> String {
        u.0.into_owned()
    }
}

/// A string that is not an LVM UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is not an LVM UUID (32 characters of 0-9, a-z, A-Z, '!' or '#' grouped 6-4-4-4-4-4-6)"
)]
pub struct InvalidLvmUuid {
    /// The rejected text.
    pub value: String,
}

/// One LVM logical volume, placed in physical extents of the PV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalVolume {
    /// The LV name (`config`, `A_boot`, ..., `guestos`).
    pub name: String,
    /// First physical extent.
    pub start_extent: u64,
    /// Length in extents.
    pub size_extents: u64,
    /// The fixed LV UUID.
    pub uuid: LvmUuid,
    /// The free-form comment from the CSV row.
    #[serde(default)]
    pub comment: String,
}

impl LogicalVolume {
    /// One past the last extent.
    pub fn end_extent(&self) -> u64 {
        self.start_extent.saturating_add(self.size_extents)
    }
}

/// The LVM volume group that lives in one GPT partition (HostOS `hostlvm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvmLayout {
    /// The GPT partition holding the single physical volume.
    pub pv_partition: String,
    /// Volume group name.
    pub vg_name: String,
    /// Volume group UUID.
    pub vg_uuid: LvmUuid,
    /// Physical volume UUID.
    pub pv_uuid: LvmUuid,
    /// Extent size in bytes (4 MiB for HostOS).
    pub extent_size: u64,
    /// Offset of the first extent from the start of the PV, in bytes (1 MiB:
    /// the label, the PV header and the metadata area come before it).
    pub pe_start: u64,
    /// The logical volumes in table order.
    pub volumes: Vec<LogicalVolume>,
}

impl LvmLayout {
    /// The volume called `name`.
    pub fn volume(&self, name: &str) -> Option<&LogicalVolume> {
        self.volumes.iter().find(|v| v.name == name)
    }

    /// Byte offset of `volume` from the start of the PV.
    pub fn volume_offset_in_pv(&self, volume: &LogicalVolume) -> u64 {
        self.pe_start
            .saturating_add(volume.start_extent.saturating_mul(self.extent_size))
    }

    /// Length of `volume` in bytes.
    pub fn volume_size_bytes(&self, volume: &LogicalVolume) -> u64 {
        volume.size_extents.saturating_mul(self.extent_size)
    }

    /// How many whole extents fit in a PV of `pv_bytes` bytes.
    pub fn extents_in(&self, pv_bytes: u64) -> u64 {
        match self.extent_size {
            0 => 0,
            e => pv_bytes.saturating_sub(self.pe_start) / e,
        }
    }

    /// The boot, root and var volumes of one slot, if all three exist.
    pub fn slot_volumes(&self, slot: Slot) -> Option<SlotParts<&LogicalVolume>> {
        let [boot, root, var] = slot.names();
        Some(SlotParts {
            boot: self.volume(boot)?,
            root: self.volume(root)?,
            var: self.volume(var)?,
        })
    }
}

/// One of the two system slots of an A/B layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Slot {
    /// Slot A: `A_boot`, `A_root`, `A_var`.
    A,
    /// Slot B: `B_boot`, `B_root`, `B_var`.
    B,
}

impl Slot {
    /// The other slot (the upgrade target when this one is running).
    pub const fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The partition (or LV) names of this slot: boot, root, var.
    pub const fn names(self) -> [&'static str; 3] {
        match self {
            Slot::A => ["A_boot", "A_root", "A_var"],
            Slot::B => ["B_boot", "B_root", "B_var"],
        }
    }

    /// `"A"` or `"B"`, as in `dfinity.system=A`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Slot {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "A" | "a" => Ok(Slot::A),
            "B" | "b" => Ok(Slot::B),
            _ => Err(UnknownName {
                what: "slot",
                value: s.to_owned(),
                expected: "A or B",
            }),
        }
    }
}

/// The three parts of a system slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotParts<T> {
    /// `X_boot`: kernel, initrd, boot args.
    pub boot: T,
    /// `X_root`: the root filesystem.
    pub root: T,
    /// `X_var`: mutable data.
    pub var: T,
}

/// A name that matched none of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}: expected {expected}")]
pub struct UnknownName {
    /// What kind of name it was ("layout", "slot").
    pub what: &'static str,
    /// The rejected text.
    pub value: String,
    /// The accepted names.
    pub expected: &'static str,
}

/// The three IC-OS images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsKind {
    /// The GuestOS disk (the replica VM's virtual disk).
    GuestOs,
    /// The HostOS disk (the node's first drive).
    HostOs,
    /// The SetupOS installer image (USB stick).
    SetupOs,
}

impl OsKind {
    /// All three: GuestOS, HostOS, SetupOS.
    pub const ALL: [OsKind; 3] = [OsKind::GuestOs, OsKind::HostOs, OsKind::SetupOs];

    /// `guestos`, `hostos` or `setupos`.
    pub const fn as_str(self) -> &'static str {
        match self {
            OsKind::GuestOs => "guestos",
            OsKind::HostOs => "hostos",
            OsKind::SetupOs => "setupos",
        }
    }

    /// The built-in layout of this image.
    pub fn layout(self) -> Layout {
        match self {
            OsKind::GuestOs => crate::builtin::guestos(),
            OsKind::HostOs => crate::builtin::hostos(),
            OsKind::SetupOs => crate::builtin::setupos(),
        }
    }
}

impl fmt::Display for OsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OsKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OsKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownName {
                what: "layout",
                value: s.to_owned(),
                expected: "guestos, hostos or setupos",
            })
    }
}

/// A whole-disk layout: GPT identifiers, partitions, the image size and, for
/// HostOS, the LVM volume group inside one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The layout's name (`guestos`, `hostos`, `setupos`, or any for a CSV layout).
    pub name: String,
    /// The GPT disk GUID (`sfdisk` label-id).
    #[serde(serialize_with = "crate::layout::serialize_uuid_upper")]
    pub disk_guid: Uuid,
    /// The image size in bytes that `write-gpt` uses by default.
    pub disk_size: u64,
    /// The partitions, in GPT entry order (entry 1 first).
    pub partitions: Vec<Partition>,
    /// The LVM volume group, if the layout has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm: Option<LvmLayout>,
}

impl Layout {
    /// A layout from parsed partitions, with IC's label-id and the image size
    /// IC's `build_disk_image.py` would use (see [`Layout::ic_image_size`]).
    pub fn from_partitions(name: impl Into<String>, partitions: Vec<Partition>) -> Layout {
        let mut layout = Layout {
            name: name.into(),
            disk_guid: IC_LABEL_ID,
            disk_size: 0,
            partitions,
            lvm: None,
        };
        layout.disk_size = layout.ic_image_size();
        layout
    }

    /// The partition called `name`.
    pub fn partition(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// The 1-based GPT entry number of the partition called `name`.
    pub fn partition_number(&self, name: &str) -> Option<u32> {
        let index = self.partitions.iter().position(|p| p.name == name)?;
        u32::try_from(index + 1).ok()
    }

    /// Byte offset and length of the partition called `name`.
    pub fn byte_range(&self, name: &str) -> Option<(u64, u64)> {
        self.partition(name)
            .map(|p| (p.offset_bytes(), p.size_bytes()))
    }

    /// The boot, root and var partitions of one slot (GuestOS); `None` when the
    /// layout has no such GPT partitions (HostOS keeps them in LVM, see
    /// [`LvmLayout::slot_volumes`]; SetupOS has no slots).
    pub fn slot_partitions(&self, slot: Slot) -> Option<SlotParts<&Partition>> {
        let [boot, root, var] = slot.names();
        Some(SlotParts {
            boot: self.partition(boot)?,
            root: self.partition(root)?,
            var: self.partition(var)?,
        })
    }

    /// Byte offset from the start of the disk and length of LVM volume `name`.
    pub fn volume_byte_range(&self, name: &str) -> Option<(u64, u64)> {
        let lvm = self.lvm.as_ref()?;
        let pv = self.partition(&lvm.pv_partition)?;
        let volume = lvm.volume(name)?;
        Some((
            pv.offset_bytes()
                .saturating_add(lvm.volume_offset_in_pv(volume)),
            lvm.volume_size_bytes(volume),
        ))
    }

    /// One past the highest partition sector (0 for no partitions).
    pub fn end_sector(&self) -> u64 {
        self.partitions
            .iter()
            .map(Partition::end)
            .max()
            .unwrap_or(0)
    }

    /// The smallest disk, in bytes, that holds every partition plus the backup
    /// GPT (partition entry array and header, 33 sectors) behind them.
    pub fn min_disk_size(&self) -> u64 {
        self.end_sector()
            .max(ALIGNMENT_SECTORS)
            .saturating_add(crate::GPT_TABLE_SECTORS + 1)
            .saturating_mul(SECTOR_SIZE)
    }

    /// The size IC's `build_disk_image.py` gives the image before any expansion:
    /// the end of the last partition plus 1 MiB.
    pub fn ic_image_size(&self) -> u64 {
        self.partitions
            .last()
            .map_or(0, Partition::end)
            .saturating_add(ALIGNMENT_SECTORS)
            .saturating_mul(SECTOR_SIZE)
    }
}
