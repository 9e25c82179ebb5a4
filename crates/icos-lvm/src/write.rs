//! Writing a physical volume's header region: label, metadata area header
//! and VG metadata text.

use std::io::{self, Seek, SeekFrom, Write};

use crate::crc;
use crate::spec::{InvalidSpec, VolumeGroupSpec};
use crate::text::format_metadata;
use crate::{
    FMTT_MAGIC, LABEL_ID, LABEL_SECTOR, LVM2_TYPE, MDA_HEADER_SIZE, MDA_OFFSET, PV_EXT_USED,
    PV_HEADER_EXTENSION_VERSION, PV_HEADER_OFFSET, SECTOR_SIZE,
};

/// Why a PV could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The spec breaks a rule.
    #[error(transparent)]
    Invalid(#[from] InvalidSpec),
    /// The metadata text does not fit in the metadata area.
    #[error(
        "volume group {vg_name:?}: the metadata text needs {needed} bytes but the metadata area \
         holds {available} (raise pe_start)"
    )]
    MetadataTooLarge {
        /// The VG name.
        vg_name: String,
        /// Bytes of text including the terminating NUL.
        needed: u64,
        /// Bytes available after the metadata area header.
        available: u64,
    },
    /// The target region is smaller than the PV.
    #[error("the target region holds {region} bytes but the PV is {pv_size} bytes")]
    RegionTooSmall {
        /// Bytes available.
        region: u64,
        /// `pv_size` of the spec.
        pv_size: u64,
    },
    /// Seeking or writing failed.
    #[error("writing the PV header region at byte {offset}: {source}")]
    Io {
        /// Absolute offset of the region on the device.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// The meaningful start of the PV: zeros, the label in sector 1, the metadata
/// area header at 4 KiB and the metadata text (NUL terminated) right after
/// it, padded with zeros to a whole sector. Everything after it up to
/// `pe_start` is zero. Identical specs give identical bytes.
pub fn header_region(spec: &VolumeGroupSpec) -> Result<Vec<u8>, WriteError> {
    spec.validate()?;
    let text = format_metadata(spec);
    let mut metadata = text.into_bytes();
    metadata.push(0);
    let needed = len64(&metadata);
    let available = spec.mda_size().saturating_sub(MDA_HEADER_SIZE);
    if needed > available {
        return Err(WriteError::MetadataTooLarge {
            vg_name: spec.vg_name.clone(),
            needed,
            available,
        });
    }

    let text_end = MDA_OFFSET + MDA_HEADER_SIZE + needed;
    let mut region = vec![0u8; to_usize(text_end.next_multiple_of(SECTOR_SIZE))];
    let label_start = to_usize(LABEL_SECTOR * SECTOR_SIZE);
    let label = &mut region[label_start..label_start + to_usize(SECTOR_SIZE)];
    fill_label(label, spec);

    let mda_start = to_usize(MDA_OFFSET);
    let text_start = mda_start + to_usize(MDA_HEADER_SIZE);
    region[text_start..text_start + metadata.len()].copy_from_slice(&metadata);
    let mda = &mut region[mda_start..mda_start + to_usize(MDA_HEADER_SIZE)];
    fill_mda_header(mda, spec, needed, crc::checksum(&metadata));
    Ok(region)
}

/// Writes the PV header region of `spec` to `device` at byte `base` (the
/// start of the partition or LV that becomes the PV): [`header_region`], then
/// zeros up to `pe_start`, so that nothing older survives in the metadata
/// area. The extents are not touched; write the volumes' contents at
/// [`VolumeGroupSpec::volume_byte_range`] afterwards.
pub fn write_pv<D: Write + Seek>(
    device: &mut D,
    base: u64,
    spec: &VolumeGroupSpec,
) -> Result<(), WriteError> {
    let region = header_region(spec)?;
    let io = |source| WriteError::Io {
        offset: base,
        source,
    };
    device.seek(SeekFrom::Start(base)).map_err(io)?;
    device.write_all(&region).map_err(io)?;
    let zeros = [0u8; 64 * 1024];
    let mut left = spec.pe_start.saturating_sub(len64(&region));
    while left > 0 {
        let n = left.min(len64(&zeros));
        device.write_all(&zeros[..to_usize(n)]).map_err(io)?;
        left -= n;
    }
    device.flush().map_err(io)
}

/// Like [`write_pv`], but first checks that the region of `region_size`
/// bytes holds the whole PV.
pub fn write_pv_in_region<D: Write + Seek>(
    device: &mut D,
    base: u64,
    region_size: u64,
    spec: &VolumeGroupSpec,
) -> Result<(), WriteError> {
    if region_size < spec.pv_size {
        return Err(WriteError::RegionTooSmall {
            region: region_size,
            pv_size: spec.pv_size,
        });
    }
    write_pv(device, base, spec)
}

fn fill_label(label: &mut [u8], spec: &VolumeGroupSpec) {
    label[0..8].copy_from_slice(LABEL_ID);
    put_u64(label, 8, LABEL_SECTOR);
    put_u32(label, 20, u32_of(PV_HEADER_OFFSET));
    label[24..32].copy_from_slice(LVM2_TYPE);
    let pv = to_usize(PV_HEADER_OFFSET);
    let uuid: Vec<u8> = spec
        .pv_uuid
        .as_str()
        .bytes()
        .filter(|&b| b != b'-')
        .collect();
    label[pv..pv + 32].copy_from_slice(&uuid);
    put_u64(label, pv + 32, spec.pv_size);
    // Data areas: one, from pe_start to the end of the device (size 0).
    let mut at = pv + 40;
    put_u64(label, at, spec.pe_start);
    put_u64(label, at + 8, 0);
    at += 32; // entry and terminator
    // Metadata areas: one, from 4 KiB up to pe_start.
    put_u64(label, at, MDA_OFFSET);
    put_u64(label, at + 8, spec.mda_size());
    at += 32;
    put_u32(label, at, PV_HEADER_EXTENSION_VERSION);
    put_u32(label, at + 4, PV_EXT_USED);
    // An empty bootloader area list follows (zeros).
    let sum = crc::checksum(&label[20..]);
    put_u32(label, 16, sum);
}

fn fill_mda_header(mda: &mut [u8], spec: &VolumeGroupSpec, text_len: u64, text_crc: u32) {
    mda[4..20].copy_from_slice(FMTT_MAGIC);
    put_u32(mda, 20, 1);
    put_u64(mda, 24, MDA_OFFSET);
    put_u64(mda, 32, spec.mda_size());
    // raw_locns[0]: the metadata text right after this header.
    put_u64(mda, 40, MDA_HEADER_SIZE);
    put_u64(mda, 48, text_len);
    put_u32(mda, 56, text_crc);
    put_u32(mda, 60, 0);
    let sum = crc::checksum(&mda[4..]);
    put_u32(mda, 0, sum);
}

fn put_u64(buf: &mut [u8], at: usize, value: u64) {
    buf[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn len64(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

/// Offsets and lengths inside the header region (bounded by the metadata
/// area, which was checked to hold the text).
fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn u32_of(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}
