//! SetupOS disk images with IC's layout: the CONFIG partition (FAT, label
//! `CONFIG`) and the data partition (ext4) filled with given files, the
//! other partitions left as the caller's build fills them (zero here).

use std::path::{Path, PathBuf};

use icos_imagefs::{Ext4Source, Ext4Spec, ImageFsError, Tools, VfatSpec, make_ext4, make_vfat};
use icos_layout::{MIB, OsKind, Uuid};

/// The label of the CONFIG partition's FAT filesystem; GuestOS and node
/// providers find the partition by it.
pub const CONFIG_LABEL: &str = "CONFIG";
/// The size of the ext4 filesystem in the data partition (IC: 2250M; the
/// partition is larger).
pub const DATA_FS_SIZE: u64 = 2250 * MIB;
/// The FAT volume id of the CONFIG partition.
pub const CONFIG_VOLUME_ID: u32 = 0x1c0f_5e70;
/// The filesystem UUID of the data partition.
pub const DATA_FS_UUID: Uuid = Uuid::from_u128(0x5e7a_0d47_a000_4000_8000_0000_0000_0001);
/// The ext4 directory hash seed of the data partition.
pub const DATA_FS_HASH_SEED: Uuid = Uuid::from_u128(0x5e7a_0d47_a000_4000_8000_0000_0000_0002);

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageFsError {
    let path = path.to_path_buf();
    move |source| ImageFsError::Io {
        action,
        path,
        source,
    }
}

/// What goes into the CONFIG and data partitions. Paths inside are
/// relative and `/`-separated (`ssh_authorized_keys/admin`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupOsDiskContents {
    /// Files of the CONFIG partition: (path inside, source file).
    pub config_files: Vec<(String, PathBuf)>,
    /// Files of the data partition: (path inside, source file).
    pub data_files: Vec<(String, PathBuf)>,
    /// The date of every file and directory, seconds since 1970.
    pub epoch: u64,
}

/// Builds the sparse SetupOS disk image `out` (IC's layout and size):
/// GPT, a FAT CONFIG partition and an ext4 data partition holding
/// `contents`; esp, grub, boot and root stay zero for the caller to fill.
/// The same contents give the same bytes. Temporary partition images are
/// made next to `out`.
pub fn build_setupos_disk(
    tools: &Tools,
    contents: &SetupOsDiskContents,
    out: &Path,
) -> Result<(), ImageFsError> {
    let layout = OsKind::SetupOs.layout();
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".icos-setupos-")
        .tempdir_in(dir)
        .map_err(io_err("creating a temporary directory in", dir))?;
    let config_size = layout
        .partition("config")
        .map(|p| p.size_bytes())
        .unwrap_or(50 * MIB);

    let config_img = work.path().join("config.img");
    make_vfat(
        tools,
        &VfatSpec {
            size_bytes: config_size,
            label: CONFIG_LABEL.into(),
            volume_id: CONFIG_VOLUME_ID,
            epoch: contents.epoch,
        },
        &contents.config_files,
        &config_img,
    )?;

    let tree = work.path().join("data");
    for (inside, source) in &contents.data_files {
        let dest = tree.join(inside);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        std::fs::copy(source, &dest).map_err(io_err("copying", source))?;
    }
    std::fs::create_dir_all(&tree).map_err(io_err("creating", &tree))?;
    let data_img = work.path().join("data.img");
    make_ext4(
        tools,
        &Ext4Spec {
            size_bytes: DATA_FS_SIZE,
            label: String::new(),
            uuid: DATA_FS_UUID,
            hash_seed: DATA_FS_HASH_SEED,
            epoch: contents.epoch,
        },
        Ext4Source::DirRootOwned(&tree),
        &data_img,
    )?;
    icos_imagefs::assemble_disk(
        &layout,
        &[("config", &config_img), ("data", &data_img)],
        out,
    )
}

/// A SetupOS disk with empty CONFIG and data filesystems.
pub fn blank_setupos_disk(tools: &Tools, out: &Path) -> Result<(), ImageFsError> {
    build_setupos_disk(tools, &SetupOsDiskContents::default(), out)
}
