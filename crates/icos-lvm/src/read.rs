//! Reading a physical volume back: the label, the metadata area header, the
//! current metadata text and the volume group it describes, and the mapping
//! of a linear LV onto the PV.

use std::io::{self, Read, Seek, SeekFrom};

use icos_layout::{InvalidLvmUuid, LvmUuid};

use crate::crc;
use crate::spec::format_uuid_chars;
use crate::text::{SyntaxError, Value, parse};
use crate::{
    FMTT_MAGIC, LABEL_ID, LABEL_SCAN_SECTORS, LVM2_TYPE, MDA_HEADER_SIZE, RAW_LOCN_IGNORED,
    SECTOR_SIZE,
};

/// The largest metadata text the reader accepts (LVM's own limit is far
/// below this for any realistic VG).
pub const MAX_METADATA_SIZE: u64 = 64 << 20;

/// An offset and size pair from the PV header, in bytes from the PV start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskArea {
    /// Offset from the start of the PV.
    pub offset: u64,
    /// Size; 0 for a data area means "to the end of the device".
    pub size: u64,
}

/// The LVM label and PV header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// The sector (0-3) the label was found in.
    pub sector: u64,
    /// The PV UUID.
    pub pv_uuid: LvmUuid,
    /// The PV size in bytes recorded in the header.
    pub device_size: u64,
    /// Data areas (normally one, starting at `pe_start`).
    pub data_areas: Vec<DiskArea>,
    /// Metadata areas (normally one, at 4 KiB).
    pub metadata_areas: Vec<DiskArea>,
    /// Version of the header extension (0 when absent).
    pub extension_version: u32,
    /// Flags of the header extension (`1` = PV used by a VG).
    pub extension_flags: u32,
}

/// One raw location in a metadata area header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLocation {
    /// Offset of the text from the start of the metadata area.
    pub offset: u64,
    /// Length of the text in bytes (with its terminating NUL).
    pub size: u64,
    /// Checksum of the text.
    pub checksum: u32,
    /// Flags (`1` = ignored).
    pub flags: u32,
}

/// A metadata area header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdaHeader {
    /// Absolute start of the area from the PV start.
    pub start: u64,
    /// Size of the area.
    pub size: u64,
    /// The raw locations; the first one that is neither empty nor ignored
    /// holds the current metadata.
    pub locations: Vec<RawLocation>,
}

/// A PV as listed in the VG metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvInfo {
    /// The key in `physical_volumes` (`pv0`, ...).
    pub key: String,
    /// The PV UUID.
    pub uuid: String,
    /// The device hint, if recorded.
    pub device: Option<String>,
    /// Size in bytes.
    pub dev_size: u64,
    /// First extent's offset from the PV start, in bytes.
    pub pe_start: u64,
    /// Number of extents.
    pub pe_count: u64,
}

/// One stripe of a segment: a PV key and the first physical extent on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripe {
    /// The PV key (`pv0`).
    pub pv: String,
    /// First physical extent.
    pub start_extent: u64,
}

/// A segment of an LV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First logical extent of the segment within the LV.
    pub start_extent: u64,
    /// Length in extents.
    pub extent_count: u64,
    /// The segment type (`striped` for linear and striped LVs).
    pub kind: String,
    /// Stripe size in bytes (for more than one stripe).
    pub stripe_size: Option<u64>,
    /// The stripes (empty for non-striped types).
    pub stripes: Vec<Stripe>,
}

/// A logical volume as listed in the VG metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvInfo {
    /// The LV name.
    pub name: String,
    /// The LV UUID.
    pub uuid: String,
    /// The `status` flags (`READ`, `WRITE`, `VISIBLE`, ...).
    pub status: Vec<String>,
    /// The segments in order.
    pub segments: Vec<Segment>,
}

impl LvInfo {
    /// The LV's size in extents.
    pub fn extent_count(&self) -> u64 {
        self.segments.iter().map(|s| s.extent_count).sum()
    }
}

/// The volume group described by the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroup {
    /// The VG name.
    pub name: String,
    /// The VG UUID.
    pub uuid: String,
    /// The metadata sequence number.
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// The PVs.
    pub physical_volumes: Vec<PvInfo>,
    /// The LVs in metadata order.
    pub logical_volumes: Vec<LvInfo>,
}

impl VolumeGroup {
    /// The LV called `name`.
    pub fn lv(&self, name: &str) -> Option<&LvInfo> {
        self.logical_volumes.iter().find(|l| l.name == name)
    }

    /// The PV whose UUID is `uuid` (compared without hyphens).
    pub fn pv_by_uuid(&self, uuid: &str) -> Option<&PvInfo> {
        let want: String = uuid.chars().filter(|&c| c != '-').collect();
        self.physical_volumes
            .iter()
            .find(|p| p.uuid.chars().filter(|&c| c != '-').eq(want.chars()))
    }
}

/// A contiguous piece of a linear LV on one PV, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearRange {
    /// Offset within the LV.
    pub lv_offset: u64,
    /// Offset from the start of the PV.
    pub pv_offset: u64,
    /// Length.
    pub length: u64,
}

/// Everything read from one PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalVolume {
    /// The label and PV header.
    pub label: PvLabel,
    /// The first metadata area's header.
    pub mda: MdaHeader,
    /// The current metadata text (without the terminating NUL).
    pub metadata: String,
    /// The volume group the metadata describes.
    pub vg: VolumeGroup,
}

impl PhysicalVolume {
    /// This PV's entry in the VG metadata.
    pub fn this_pv(&self) -> Result<&PvInfo, MapError> {
        self.vg
            .pv_by_uuid(self.label.pv_uuid.as_str())
            .ok_or_else(|| MapError::PvNotInVg {
                uuid: self.label.pv_uuid.to_string(),
                vg: self.vg.name.clone(),
            })
    }

    /// The pieces of LV `name` on this PV, in LV order, for a linear LV (every
    /// segment `striped` with one stripe, on this PV).
    pub fn linear_ranges(&self, name: &str) -> Result<Vec<LinearRange>, MapError> {
        let pv = self.this_pv()?;
        let lv = self.vg.lv(name).ok_or_else(|| MapError::NoSuchLv {
            name: name.to_owned(),
            vg: self.vg.name.clone(),
        })?;
        let extent = self.vg.extent_size;
        let mut out = Vec::with_capacity(lv.segments.len());
        for (i, seg) in lv.segments.iter().enumerate() {
            let unsupported = |reason: String| MapError::NotLinear {
                lv: name.to_owned(),
                segment: i + 1,
                reason,
            };
            if seg.kind != "striped" {
                return Err(unsupported(format!("segment type is {:?}", seg.kind)));
            }
            let [stripe] = seg.stripes.as_slice() else {
                return Err(unsupported(format!("it has {} stripes", seg.stripes.len())));
            };
            if stripe.pv != pv.key {
                return Err(unsupported(format!(
                    "it lies on {} rather than this PV ({})",
                    stripe.pv, pv.key
                )));
            }
            if stripe.start_extent.saturating_add(seg.extent_count) > pv.pe_count {
                return Err(unsupported(format!(
                    "extents {}+{} exceed the PV's {} extents",
                    stripe.start_extent, seg.extent_count, pv.pe_count
                )));
            }
            out.push(LinearRange {
                lv_offset: seg.start_extent.saturating_mul(extent),
                pv_offset: pv
                    .pe_start
                    .saturating_add(stripe.start_extent.saturating_mul(extent)),
                length: seg.extent_count.saturating_mul(extent),
            });
        }
        Ok(out)
    }

    /// Offset from the PV start and length of LV `name` when it is one
    /// contiguous run of extents on this PV.
    pub fn lv_byte_range(&self, name: &str) -> Result<(u64, u64), MapError> {
        let ranges = self.linear_ranges(name)?;
        let mut iter = ranges.iter();
        let Some(first) = iter.next() else {
            return Err(MapError::NotLinear {
                lv: name.to_owned(),
                segment: 0,
                reason: "it has no segments".to_owned(),
            });
        };
        let mut length = first.length;
        for r in iter {
            if r.pv_offset != first.pv_offset.saturating_add(length) {
                return Err(MapError::NotLinear {
                    lv: name.to_owned(),
                    segment: 0,
                    reason: "its segments are not contiguous on the PV".to_owned(),
                });
            }
            length = length.saturating_add(r.length);
        }
        Ok((first.pv_offset, length))
    }

    /// A device-mapper table (`dmsetup create NAME --table ...` input, one
    /// line per segment) mapping LV `name` onto `device`, the block device of
    /// this PV. Sectors are 512 bytes.
    pub fn dm_linear_table(&self, name: &str, device: &str) -> Result<String, MapError> {
        let mut table = String::new();
        for r in self.linear_ranges(name)? {
            table.push_str(&format!(
                "{} {} linear {device} {}\n",
                r.lv_offset / SECTOR_SIZE,
                r.length / SECTOR_SIZE,
                r.pv_offset / SECTOR_SIZE
            ));
        }
        Ok(table)
    }
}

/// Why an LV could not be mapped onto the PV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The VG has no such LV.
    #[error("volume group {vg:?} has no logical volume {name:?}")]
    NoSuchLv {
        /// The LV asked for.
        name: String,
        /// The VG.
        vg: String,
    },
    /// The label's PV is not listed in the metadata.
    #[error("PV {uuid} is not listed in the metadata of volume group {vg:?}")]
    PvNotInVg {
        /// The label's PV UUID.
        uuid: String,
        /// The VG.
        vg: String,
    },
    /// The LV is not a linear run of extents on this PV.
    #[error("logical volume {lv:?} is not linear on this PV (segment {segment}): {reason}")]
    NotLinear {
        /// The LV.
        lv: String,
        /// 1-based segment number (0 for the LV as a whole).
        segment: usize,
        /// What was found.
        reason: String,
    },
}

/// Why a PV could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Seeking or reading failed.
    #[error("reading {what} at byte {offset}: {source}")]
    Io {
        /// What was being read.
        what: &'static str,
        /// Absolute offset on the device.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// No sector among the first four holds an LVM label.
    #[error("no LVM label (LABELONE) in sectors 0-3 of the region at byte {base}")]
    NoLabel {
        /// Absolute offset of the region.
        base: u64,
    },
    /// The label names a different sector than the one it is in.
    #[error("LVM label in sector {sector} records sector {recorded}")]
    LabelSector {
        /// Where it was found.
        sector: u64,
        /// What it says.
        recorded: u64,
    },
    /// A stored checksum does not match the data.
    #[error("{what} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// `label`, `metadata area header` or `metadata text`.
        what: &'static str,
        /// The checksum on disk.
        stored: u32,
        /// The checksum of the data.
        computed: u32,
    },
    /// The label is not an LVM2 PV label.
    #[error("label type is {found:?}, expected \"LVM2 001\"")]
    LabelType {
        /// The type bytes found.
        found: String,
    },
    /// The PV header is malformed.
    #[error("PV header: {0}")]
    PvHeader(String),
    /// The PV UUID is malformed.
    #[error("PV header: {0}")]
    PvUuid(#[from] InvalidLvmUuid),
    /// The PV has no metadata area.
    #[error("the PV has no metadata area")]
    NoMetadataArea,
    /// The metadata area header is malformed.
    #[error("metadata area header at PV offset {offset}: {problem}")]
    MdaHeader {
        /// Offset of the area from the PV start.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// The metadata area holds no metadata (a PV not in any VG).
    #[error("the metadata area at PV offset {offset} holds no metadata (PV in no volume group)")]
    NoMetadata {
        /// Offset of the area from the PV start.
        offset: u64,
    },
    /// The metadata text is not UTF-8.
    #[error("metadata text is not UTF-8")]
    NotUtf8,
    /// The metadata text does not parse.
    #[error("metadata text: {0}")]
    Syntax(#[from] SyntaxError),
    /// A field is missing or has the wrong type.
    #[error("metadata text: {section}: field {field:?} missing or not {expected}")]
    Field {
        /// The section path (`hostlvm/logical_volumes/A_root`).
        section: String,
        /// The field.
        field: String,
        /// What it should be.
        expected: &'static str,
    },
    /// The metadata text has no volume group section.
    #[error("metadata text holds no volume group section")]
    NoVolumeGroup,
}

/// Reads the PV whose region starts at byte `base` of `device`.
pub fn read_pv<D: Read + Seek>(device: &mut D, base: u64) -> Result<PhysicalVolume, ReadError> {
    let mut head = vec![0u8; usize_of(LABEL_SCAN_SECTORS * SECTOR_SIZE)];
    read_at(device, base, &mut head, "the label sectors")?;
    let label = parse_label(&head, base)?;
    let area = *label
        .metadata_areas
        .first()
        .ok_or(ReadError::NoMetadataArea)?;
    let mut raw = vec![0u8; usize_of(MDA_HEADER_SIZE)];
    read_at(
        device,
        base.saturating_add(area.offset),
        &mut raw,
        "the metadata area header",
    )?;
    let mda = parse_mda_header(&raw, area)?;
    let location = mda
        .locations
        .iter()
        .find(|l| l.size > 0 && l.flags & RAW_LOCN_IGNORED == 0)
        .copied()
        .ok_or(ReadError::NoMetadata {
            offset: area.offset,
        })?;
    let text = read_text(device, base, &mda, location)?;
    let computed = crc::checksum(&text);
    if computed != location.checksum {
        return Err(ReadError::Checksum {
            what: "metadata text",
            stored: location.checksum,
            computed,
        });
    }
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let metadata = String::from_utf8(text[..end].to_vec()).map_err(|_| ReadError::NotUtf8)?;
    let vg = volume_group(&parse(&metadata)?)?;
    Ok(PhysicalVolume {
        label,
        mda,
        metadata,
        vg,
    })
}

fn read_at<D: Read + Seek>(
    device: &mut D,
    offset: u64,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), ReadError> {
    let io = |source| ReadError::Io {
        what,
        offset,
        source,
    };
    device.seek(SeekFrom::Start(offset)).map_err(io)?;
    device.read_exact(buf).map_err(io)
}

fn parse_label(head: &[u8], base: u64) -> Result<PvLabel, ReadError> {
    let sector_size = usize_of(SECTOR_SIZE);
    for (index, sector) in head.chunks_exact(sector_size).enumerate() {
        if &sector[0..8] != LABEL_ID {
            continue;
        }
        let sector_no = u64::try_from(index).unwrap_or(u64::MAX);
        let recorded = u64_at(sector, 8);
        if recorded != sector_no {
            return Err(ReadError::LabelSector {
                sector: sector_no,
                recorded,
            });
        }
        let stored = u32_at(sector, 16);
        let computed = crc::checksum(&sector[20..]);
        if stored != computed {
            return Err(ReadError::Checksum {
                what: "label",
                stored,
                computed,
            });
        }
        if &sector[24..32] != LVM2_TYPE {
            return Err(ReadError::LabelType {
                found: String::from_utf8_lossy(&sector[24..32]).into_owned(),
            });
        }
        return parse_pv_header(sector, sector_no);
    }
    Err(ReadError::NoLabel { base })
}

fn parse_pv_header(sector: &[u8], sector_no: u64) -> Result<PvLabel, ReadError> {
    let offset = usize_of(u64::from(u32_at(sector, 20)));
    if offset < 32 || offset + 40 > sector.len() {
        return Err(ReadError::PvHeader(format!(
            "PV header offset {offset} is outside the label sector"
        )));
    }
    let pv = &sector[offset..];
    let uuid = String::from_utf8_lossy(&pv[0..32]).into_owned();
    let pv_uuid = LvmUuid::new(&format_uuid_chars(uuid.as_bytes()))?;
    let device_size = u64_at(pv, 32);
    let mut at = 40;
    let mut lists = [Vec::new(), Vec::new()];
    for (n, list) in lists.iter_mut().enumerate() {
        loop {
            if at + 16 > pv.len() {
                let which = ["data", "metadata"][n];
                return Err(ReadError::PvHeader(format!(
                    "the {which} area list has no terminator inside the label sector"
                )));
            }
            let area = DiskArea {
                offset: u64_at(pv, at),
                size: u64_at(pv, at + 8),
            };
            at += 16;
            if area.offset == 0 {
                break;
            }
            list.push(area);
        }
    }
    let (extension_version, extension_flags) = if at + 8 <= pv.len() {
        (u32_at(pv, at), u32_at(pv, at + 4))
    } else {
        (0, 0)
    };
    let [data_areas, metadata_areas] = lists;
    Ok(PvLabel {
        sector: sector_no,
        pv_uuid,
        device_size,
        data_areas,
        metadata_areas,
        extension_version,
        extension_flags,
    })
}

fn parse_mda_header(raw: &[u8], area: DiskArea) -> Result<MdaHeader, ReadError> {
    let problem = |problem: String| ReadError::MdaHeader {
        offset: area.offset,
        problem,
    };
    if &raw[4..20] != FMTT_MAGIC {
        return Err(problem("no LVM2 metadata magic".to_owned()));
    }
    let stored = u32_at(raw, 0);
    let computed = crc::checksum(&raw[4..]);
    if stored != computed {
        return Err(ReadError::Checksum {
            what: "metadata area header",
            stored,
            computed,
        });
    }
    let version = u32_at(raw, 20);
    if version != 1 {
        return Err(problem(format!("version {version}, expected 1")));
    }
    let start = u64_at(raw, 24);
    let size = u64_at(raw, 32);
    if start != area.offset {
        return Err(problem(format!(
            "records start {start} but the PV header places it at {}",
            area.offset
        )));
    }
    if size <= MDA_HEADER_SIZE {
        return Err(problem(format!("size {size} leaves no room for metadata")));
    }
    let mut locations = Vec::new();
    let mut at = 40;
    while at + 24 <= raw.len() {
        let location = RawLocation {
            offset: u64_at(raw, at),
            size: u64_at(raw, at + 8),
            checksum: u32_at(raw, at + 16),
            flags: u32_at(raw, at + 20),
        };
        if location.offset == 0 {
            break;
        }
        if location.offset < MDA_HEADER_SIZE
            || location.offset >= size
            || location.size > size - MDA_HEADER_SIZE
            || location.size > MAX_METADATA_SIZE
        {
            return Err(problem(format!(
                "raw location {}+{} lies outside the {size}-byte area",
                location.offset, location.size
            )));
        }
        locations.push(location);
        at += 24;
    }
    Ok(MdaHeader {
        start,
        size,
        locations,
    })
}

/// Reads the text of `location`, which may wrap from the end of the area
/// back to just after its header (LVM's circular buffer).
fn read_text<D: Read + Seek>(
    device: &mut D,
    base: u64,
    mda: &MdaHeader,
    location: RawLocation,
) -> Result<Vec<u8>, ReadError> {
    let area_base = base.saturating_add(mda.start);
    let first = location.size.min(mda.size - location.offset);
    let mut text = vec![0u8; usize_of(location.size)];
    let (head, tail) = text.split_at_mut(usize_of(first));
    read_at(
        device,
        area_base.saturating_add(location.offset),
        head,
        "the metadata text",
    )?;
    if !tail.is_empty() {
        read_at(
            device,
            area_base.saturating_add(MDA_HEADER_SIZE),
            tail,
            "the wrapped metadata text",
        )?;
    }
    Ok(text)
}

fn volume_group(root: &Value) -> Result<VolumeGroup, ReadError> {
    let (name, vg) = root
        .entries()
        .iter()
        .find(|(_, v)| matches!(v, Value::Section(_)))
        .ok_or(ReadError::NoVolumeGroup)?;
    let path = name.clone();
    let extent_sectors = int(vg, &path, "extent_size")?;
    let mut physical_volumes = Vec::new();
    let pvs_path = format!("{path}/physical_volumes");
    for (key, pv) in section(vg, &path, "physical_volumes")?.entries() {
        let here = format!("{pvs_path}/{key}");
        physical_volumes.push(PvInfo {
            key: key.clone(),
            uuid: string(pv, &here, "id")?,
            device: match pv.get("device") {
                Some(Value::Str(s)) => Some(s.clone()),
                _ => None,
            },
            dev_size: int(pv, &here, "dev_size")?.saturating_mul(SECTOR_SIZE),
            pe_start: int(pv, &here, "pe_start")?.saturating_mul(SECTOR_SIZE),
            pe_count: int(pv, &here, "pe_count")?,
        });
    }
    let mut logical_volumes = Vec::new();
    if let Some(lvs) = vg.get("logical_volumes") {
        let lvs_path = format!("{path}/logical_volumes");
        for (lv_name, lv) in lvs.entries() {
            let here = format!("{lvs_path}/{lv_name}");
            let count = int(lv, &here, "segment_count")?;
            let mut segments = Vec::new();
            for n in 1..=count {
                let seg_key = format!("segment{n}");
                let seg = section(lv, &here, &seg_key)?;
                segments.push(segment(seg, &format!("{here}/{seg_key}"))?);
            }
            logical_volumes.push(LvInfo {
                name: lv_name.clone(),
                uuid: string(lv, &here, "id")?,
                status: strings(lv, &here, "status")?,
                segments,
            });
        }
    }
    Ok(VolumeGroup {
        name: name.clone(),
        uuid: string(vg, &path, "id")?,
        seqno: int(vg, &path, "seqno")?,
        extent_size: extent_sectors.saturating_mul(SECTOR_SIZE),
        physical_volumes,
        logical_volumes,
    })
}

fn segment(seg: &Value, path: &str) -> Result<Segment, ReadError> {
    let kind = string(seg, path, "type")?;
    let mut stripes = Vec::new();
    if kind == "striped" {
        let bad = || ReadError::Field {
            section: path.to_owned(),
            field: "stripes".to_owned(),
            expected: "a list of PV name and extent pairs",
        };
        let Some(Value::List(items)) = seg.get("stripes") else {
            return Err(bad());
        };
        if items.is_empty() || items.len() % 2 != 0 {
            return Err(bad());
        }
        for pair in items.chunks_exact(2) {
            match pair {
                [Value::Str(pv), Value::Int(pe)] => stripes.push(Stripe {
                    pv: pv.clone(),
                    start_extent: u64::try_from(*pe).map_err(|_| bad())?,
                }),
                _ => return Err(bad()),
            }
        }
        let count = int(seg, path, "stripe_count")?;
        if usize::try_from(count).ok() != Some(stripes.len()) {
            return Err(ReadError::Field {
                section: path.to_owned(),
                field: "stripe_count".to_owned(),
                expected: "equal to the number of stripes listed",
            });
        }
    }
    Ok(Segment {
        start_extent: int(seg, path, "start_extent")?,
        extent_count: int(seg, path, "extent_count")?,
        kind,
        stripe_size: match seg.get("stripe_size") {
            Some(Value::Int(n)) => u64::try_from(*n)
                .ok()
                .map(|s| s.saturating_mul(SECTOR_SIZE)),
            _ => None,
        },
        stripes,
    })
}

fn missing(section: &str, field: &str, expected: &'static str) -> ReadError {
    ReadError::Field {
        section: section.to_owned(),
        field: field.to_owned(),
        expected,
    }
}

fn int(v: &Value, path: &str, field: &str) -> Result<u64, ReadError> {
    match v.get(field) {
        Some(Value::Int(n)) => {
            u64::try_from(*n).map_err(|_| missing(path, field, "a non-negative integer"))
        }
        _ => Err(missing(path, field, "a non-negative integer")),
    }
}

fn string(v: &Value, path: &str, field: &str) -> Result<String, ReadError> {
    match v.get(field) {
        Some(Value::Str(s)) => Ok(s.clone()),
        _ => Err(missing(path, field, "a string")),
    }
}

fn strings(v: &Value, path: &str, field: &str) -> Result<Vec<String>, ReadError> {
    match v.get(field) {
        Some(Value::List(items)) => items
            .iter()
            .map(|i| match i {
                Value::Str(s) => Ok(s.clone()),
                _ => Err(missing(path, field, "a list of strings")),
            })
            .collect(),
        _ => Err(missing(path, field, "a list of strings")),
    }
}

fn section<'v>(v: &'v Value, path: &str, field: &str) -> Result<&'v Value, ReadError> {
    match v.get(field) {
        Some(s @ Value::Section(_)) => Ok(s),
        _ => Err(missing(path, field, "a section")),
    }
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Sizes read from the device, bounded by the metadata area size checks.
fn usize_of(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::Cursor;

    use super::*;
    use crate::{VolumeGroupSpec, header_region, write_pv};

    fn written(spec: &VolumeGroupSpec, base: u64) -> Cursor<Vec<u8>> {
        let mut dev = Cursor::new(vec![0xAA; usize_of(base) + (2 << 20)]);
        write_pv(&mut dev, base, spec).unwrap();
        dev
    }

    #[test]
    fn round_trip_of_ic_hostos() {
        let spec = VolumeGroupSpec::ic_hostos();
        let mut dev = written(&spec, 3 * 512);
        let pv = read_pv(&mut dev, 3 * 512).unwrap();
        assert_eq!(pv.label.sector, 1);
        assert_eq!(pv.label.pv_uuid, spec.pv_uuid);
        assert_eq!(pv.label.device_size, spec.pv_size);
        assert_eq!(
            pv.label.data_areas,
            [DiskArea {
                offset: 1 << 20,
                size: 0
            }]
        );
        assert_eq!(
            pv.label.metadata_areas,
            [DiskArea {
                offset: 4096,
                size: (1 << 20) - 4096
            }]
        );
        assert_eq!(
            (pv.label.extension_version, pv.label.extension_flags),
            (2, 1)
        );
        assert_eq!(pv.vg.name, "hostlvm");
        assert_eq!(pv.vg.uuid, spec.vg_uuid.as_str());
        assert_eq!(pv.vg.seqno, 1);
        assert_eq!(pv.vg.extent_size, 4 << 20);
        let this = pv.this_pv().unwrap();
        assert_eq!(this.key, "pv0");
        assert_eq!(this.device.as_deref(), Some("/dev/nvme0n1p3"));
        assert_eq!(this.pe_count, 23577);
        assert_eq!(this.pe_start, 1 << 20);
        for want in &spec.volumes {
            let lv = pv.vg.lv(&want.name).unwrap();
            assert_eq!(lv.uuid, want.uuid.as_str());
            assert_eq!(lv.status, ["READ", "WRITE", "VISIBLE"]);
            assert_eq!(lv.extent_count(), want.extent_count);
            assert_eq!(
                pv.lv_byte_range(&want.name).unwrap(),
                spec.volume_byte_range(&want.name).unwrap()
            );
        }
        assert_eq!(
            pv.dm_linear_table("A_root", "/dev/vda3").unwrap(),
            format!("0 {} linear /dev/vda3 {}\n", 2560 * 8192, 2048 + 281 * 8192)
        );
        assert!(matches!(
            pv.lv_byte_range("nope"),
            Err(MapError::NoSuchLv { .. })
        ));
    }

    #[test]
    fn identical_specs_give_identical_bytes() {
        let spec = VolumeGroupSpec::ic_hostos();
        let a = written(&spec, 0).into_inner();
        let b = written(&spec.clone(), 0).into_inner();
        assert_eq!(a, b);
        // Everything between the text and pe_start is zeroed, whatever was there.
        let region = header_region(&spec).unwrap();
        assert!(a[region.len()..1 << 20].iter().all(|&b| b == 0));
        assert_eq!(&a[..region.len()], region.as_slice());
        // Extents are left alone.
        assert!(a[1 << 20..].iter().all(|&b| b == 0xAA));
        let mut other = spec.clone();
        other.creation_time += 1;
        assert_ne!(header_region(&other).unwrap(), region);
    }

    #[test]
    fn reads_a_pv_written_by_lvm() {
        let bytes = include_bytes!("../tests/fixtures/lvm2-2.03.16-vgcreate.pv");
        let pv = read_pv(&mut Cursor::new(&bytes[..]), 0).unwrap();
        assert_eq!(
            pv.label.pv_uuid.as_str(),
            "eu0VQE-HlTi-EyRc-GceP-xZtn-3j6t-iqEwyv"
        );
        assert_eq!(pv.label.device_size, 200 << 20);
        assert_eq!(pv.vg.name, "hostlvm");
        assert_eq!(pv.vg.extent_size, 4 << 20);
        let this = pv.this_pv().unwrap();
        assert_eq!((this.pe_start, this.pe_count), (1 << 20, 49));
        assert_eq!(this.device.as_deref(), Some("/dev/loop0"));
        assert!(pv.vg.logical_volumes.is_empty());
    }

    /// The written header region with one byte changed, read back.
    fn corrupted(at: usize, value: u8) -> ReadError {
        let spec = VolumeGroupSpec::ic_hostos();
        let mut bytes = written(&spec, 0).into_inner();
        bytes[at] = value;
        read_pv(&mut Cursor::new(bytes), 0).unwrap_err()
    }

    #[test]
    fn corruption_is_named() {
        assert!(matches!(
            corrupted(600, b'X'),
            ReadError::Checksum { what: "label", .. }
        ));
        assert!(matches!(
            corrupted(512, b'X'),
            ReadError::NoLabel { base: 0 }
        ));
        assert!(matches!(
            corrupted(4096 + 30, 7),
            ReadError::Checksum {
                what: "metadata area header",
                ..
            }
        ));
        assert!(matches!(
            corrupted(4096 + 5, b'x'),
            ReadError::MdaHeader { .. }
        ));
        assert!(matches!(
            corrupted(4096 + 512 + 3, b'Q'),
            ReadError::Checksum {
                what: "metadata text",
                ..
            }
        ));
        let err = read_pv(&mut Cursor::new(vec![0u8; 4096]), 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no LVM label (LABELONE) in sectors 0-3 of the region at byte 0"
        );
        let err = read_pv(&mut Cursor::new(vec![0u8; 100]), 0).unwrap_err();
        assert!(matches!(err, ReadError::Io { .. }), "{err}");
    }

    /// A header region whose metadata text is replaced by `text`, with valid
    /// checksums.
    fn with_text(text: &str) -> Cursor<Vec<u8>> {
        let spec = VolumeGroupSpec::ic_hostos();
        let mut bytes = written(&spec, 0).into_inner();
        let mut t = text.as_bytes().to_vec();
        t.push(0);
        let at = 4096 + 512;
        bytes[at..at + t.len()].copy_from_slice(&t);
        let size = u64::try_from(t.len()).unwrap();
        bytes[4096 + 48..4096 + 56].copy_from_slice(&size.to_le_bytes());
        let sum = crc::checksum(&t);
        bytes[4096 + 56..4096 + 60].copy_from_slice(&sum.to_le_bytes());
        let header = crc::checksum(&bytes[4096 + 4..4096 + 512]);
        bytes[4096..4096 + 4].copy_from_slice(&header.to_le_bytes());
        Cursor::new(bytes)
    }

    #[test]
    fn bad_metadata_fields_are_named() {
        let err = read_pv(&mut with_text("contents = \"x\"\n"), 0).unwrap_err();
        assert!(matches!(err, ReadError::NoVolumeGroup), "{err}");
        let err = read_pv(&mut with_text("vg {\nid = \"x\"\n}\n"), 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metadata text: vg: field \"extent_size\" missing or not a non-negative integer"
        );
        let err = read_pv(&mut with_text("vg {\nid = \n}\n"), 0).unwrap_err();
        assert!(
            matches!(err, ReadError::Syntax(SyntaxError { line: 3, .. })),
            "{err}"
        );
    }

    #[test]
    fn maps_multi_segment_and_rejects_other_layouts() {
        let text = "vg {\n id = \"v\"\n seqno = 4\n extent_size = 8\n\
            physical_volumes { pv0 { id = \"eu0VQE-HlTi-EyRc-GceP-xZtn-3j6t-iqEwyv\"\n\
              dev_size = 4096\n pe_start = 2048\n pe_count = 256 }\n\
              pv1 { id = \"other\" dev_size = 4096 pe_start = 2048 pe_count = 256 } }\n\
            logical_volumes {\n\
              two { id = \"a\" status = [\"READ\"] segment_count = 2\n\
                segment1 { start_extent = 0 extent_count = 2 type = \"striped\" stripe_count = 1 stripes = [\"pv0\", 10] }\n\
                segment2 { start_extent = 2 extent_count = 3 type = \"striped\" stripe_count = 1 stripes = [\"pv0\", 20] } }\n\
              wide { id = \"b\" status = [] segment_count = 1\n\
                segment1 { start_extent = 0 extent_count = 2 type = \"striped\" stripe_count = 2 stripe_size = 128 stripes = [\"pv0\", 30, \"pv1\", 0] } }\n\
              away { id = \"c\" status = [] segment_count = 1\n\
                segment1 { start_extent = 0 extent_count = 2 type = \"striped\" stripe_count = 1 stripes = [\"pv1\", 0] } }\n\
              thin { id = \"d\" status = [] segment_count = 1\n\
                segment1 { start_extent = 0 extent_count = 2 type = \"thin-pool\" } }\n\
            }\n}\n";
        let pv = read_pv(&mut with_text(text), 0).unwrap();
        assert_eq!(pv.vg.seqno, 4);
        assert_eq!(
            pv.linear_ranges("two").unwrap(),
            [
                LinearRange {
                    lv_offset: 0,
                    pv_offset: (1 << 20) + 10 * 4096,
                    length: 2 * 4096
                },
                LinearRange {
                    lv_offset: 2 * 4096,
                    pv_offset: (1 << 20) + 20 * 4096,
                    length: 3 * 4096
                },
            ]
        );
        assert_eq!(
            pv.dm_linear_table("two", "/dev/sda3").unwrap(),
            "0 16 linear /dev/sda3 2128\n16 24 linear /dev/sda3 2208\n"
        );
        assert!(matches!(
            pv.lv_byte_range("two"),
            Err(MapError::NotLinear { segment: 0, .. })
        ));
        assert_eq!(
            pv.vg.lv("wide").unwrap().segments[0].stripe_size,
            Some(65536)
        );
        for lv in ["wide", "away", "thin"] {
            let err = pv.linear_ranges(lv).unwrap_err();
            assert!(
                matches!(err, MapError::NotLinear { segment: 1, .. }),
                "{lv}: {err}"
            );
        }
    }

    #[test]
    fn reads_wrapped_metadata() {
        // A 64 KiB metadata area whose text starts 30 bytes before its end
        // and continues right after the area header.
        let text = b"vg {\nid = \"v\"\nseqno = 9\nextent_size = 8\nphysical_volumes {\n}\n}\n\0";
        let mda_size: u64 = 64 * 1024;
        let mut bytes = vec![0u8; 4096 + 64 * 1024];
        let sector = &mut bytes[512..1024];
        sector[0..8].copy_from_slice(LABEL_ID);
        sector[8..16].copy_from_slice(&1u64.to_le_bytes());
        sector[20..24].copy_from_slice(&32u32.to_le_bytes());
        sector[24..32].copy_from_slice(LVM2_TYPE);
        sector[32..64].copy_from_slice(b"eu0VQEHlTiEyRcGceePxZtn3j6tiqEwy");
        // No data area: the data list ends at once (72..88); the metadata
        // list follows.
        sector[88..96].copy_from_slice(&4096u64.to_le_bytes());
        sector[96..104].copy_from_slice(&mda_size.to_le_bytes());
        let sum = crc::checksum(&sector[20..]);
        sector[16..20].copy_from_slice(&sum.to_le_bytes());
        let offset = mda_size - 30;
        let (head, tail) = text.split_at(30);
        let start = usize_of(4096 + offset);
        bytes[start..start + 30].copy_from_slice(head);
        bytes[4096 + 512..4096 + 512 + tail.len()].copy_from_slice(tail);
        let mda = &mut bytes[4096..4096 + 512];
        mda[4..20].copy_from_slice(FMTT_MAGIC);
        mda[20..24].copy_from_slice(&1u32.to_le_bytes());
        mda[24..32].copy_from_slice(&4096u64.to_le_bytes());
        mda[32..40].copy_from_slice(&mda_size.to_le_bytes());
        mda[40..48].copy_from_slice(&offset.to_le_bytes());
        mda[48..56].copy_from_slice(&u64::try_from(text.len()).unwrap().to_le_bytes());
        mda[56..60].copy_from_slice(&crc::checksum(text).to_le_bytes());
        let sum = crc::checksum(&mda[4..]);
        mda[0..4].copy_from_slice(&sum.to_le_bytes());
        let pv = read_pv(&mut Cursor::new(bytes), 0).unwrap();
        assert_eq!(pv.vg.seqno, 9);
        assert!(pv.label.data_areas.is_empty());
        assert!(matches!(pv.this_pv(), Err(MapError::PvNotInVg { .. })));
    }
}
