//! The install steps: the disk work ([`disk`]), writing the HostOS and
//! GuestOS disk images ([`image`]) and the HostOS config volume
//! ([`hostos_config`]).

pub mod disk;
pub mod hostos_config;
pub mod image;

pub use disk::{grow_hostos, partition_path, set_boot_entry, setup_disks};
pub use hostos_config::{ConfigFile, hostos_config_files, write_config_files};
pub use image::{
    HoleCheck, ImageArchive, ImageError, Verified, WriteProgress, Written, ZeroMethod, Zeroer,
    inspect_archive, install_image, verify_written, write_image,
};
