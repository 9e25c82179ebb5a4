//! The built-in IC-OS layouts, transcribed from IC's `partitions.csv` and
//! `volumes.csv` files (see the crate docs for which revision of each).

use uuid::{Uuid, uuid};

use crate::layout::{Layout, LogicalVolume, LvmLayout, LvmUuid, Partition, PartitionType};
use crate::{GIB, IC_LABEL_ID, MIB};

use PartitionType::{Efi as U, Linux as L, MicrosoftBasicData as M};

/// One built-in partition row: name, start, size, type, uuid, comment.
type Row = (&'static str, u64, u64, PartitionType, Uuid, &'static str);

/// One built-in volume row: name, start extent, size in extents, uuid, comment.
type VolumeRow = (&'static str, u64, u64, &'static str, &'static str);

/// GuestOS: the nine-partition layout (esp, grub, config, then A and B
/// boot/root/var). The `store` partition is appended by the GuestOS itself on
/// first boot and is not part of the image's table.
const GUESTOS: [Row; 9] = [
    (
        "esp",
        2048,
        204800,
        U,
        uuid!("B78084E2-3363-1346-8C25-D426F26B8928"),
        "EFI system partition",
    ),
    (
        "grub",
        206848,
        204800,
        L,
        uuid!("6788E4CF-F456-104E-9A34-A2C58CFB0EE6"),
        "Grub bootloader modules and config",
    ),
    (
        "config",
        411648,
        204800,
        L,
        uuid!("A5BA3816-BEAA-D74D-993E-CFA5AA6BA1F6"),
        "System config store",
    ),
    (
        "A_boot",
        616448,
        2097152,
        L,
        uuid!("DDF618FE-7244-B446-A175-3296E6B9D02E"),
        "Boot partition for system A",
    ),
    (
        "A_root",
        2713600,
        20971520,
        L,
        uuid!("7C0A626E-E5EA-E543-B5C5-300EB8304DB7"),
        "Root partition for system A",
    ),
    (
        "A_var",
        23685120,
        20971520,
        L,
        uuid!("22D2F5A6-1E39-D247-81CF-90C95C113E21"),
        "Mutable data partition for system A",
    ),
    (
        "B_boot",
        44656640,
        2097152,
        L,
        uuid!("D5214E4F-F7B0-B945-9A9B-52B9188DF4C5"),
        "Boot partition for system B",
    ),
    (
        "B_root",
        46753792,
        20971520,
        L,
        uuid!("A78BC3A8-376C-054A-96E7-3904B915D0C5"),
        "Root partition for system B",
    ),
    (
        "B_var",
        67725312,
        20971520,
        L,
        uuid!("2237D1D1-CE96-584E-8EC5-8AE6661FAAE9"),
        "Mutable data partition for system B",
    ),
];

/// The GuestOS image size: IC pads the disk image to `expanded_size = 50G`
/// (GNU `truncate` units, so GiB) to leave room for the `store` partition.
pub const GUESTOS_DISK_SIZE: u64 = 50 * GIB;

/// HostOS GPT: esp, grub and the LVM physical volume.
const HOSTOS: [Row; 3] = [
    (
        "esp",
        2048,
        204800,
        U,
        uuid!("f46600e3-d0e6-4258-9607-e64b13cf7595"),
        "EFI system partition",
    ),
    (
        "grub",
        206848,
        204800,
        L,
        uuid!("1a7c28b7-efe0-4f17-9230-678cf2df8db2"),
        "Grub bootloader modules and config",
    ),
    (
        "hostlvm",
        411648,
        209715200,
        L,
        uuid!("735a766a-2047-45c2-ab48-d5ec948de550"),
        "Partition for LVM PV",
    ),
];

/// The HostOS image size: IC's build leaves 1 MiB behind the last partition
/// and does not expand the image (the installer grows `hostlvm` on the target
/// drive instead).
pub const HOSTOS_DISK_SIZE: u64 = (411648 + 209715200 + 2048) * crate::SECTOR_SIZE;

/// HostOS logical volumes in the `hostlvm` volume group.
const HOSTOS_VOLUMES: [VolumeRow; 8] = [
    (
        "config",
        0,
        25,
        "SIs20R-l6gh-2Rli-KAP0-ZO88-3Y4q-G9JPAm",
        "Config partition for HostOS",
    ),
    (
        "A_boot",
        25,
        256,
        "0BQNUA-dzGu-wvW5-mMRh-Ptr6-J6DT-Ff2a9x",
        "Boot partition for system A",
    ),
    (
        "A_root",
        281,
        2560,
        "RM99J5-B2t1-JU3l-HNco-J2f2-1808-eJGo3s",
        "Root partition for system A",
    ),
    (
        "A_var",
        2841,
        2560,
        "AkcyNt-TkgJ-JL7M-UNoP-jWWC-Fhvh-86QyHG",
        "Mutable data partition for system A",
    ),
    (
        "B_boot",
        5401,
        256,
        "6gl2Fd-qm1V-9E3W-Arjv-J5mW-RqFO-EgYiNC",
        "Boot partition for system B",
    ),
    (
        "B_root",
        5657,
        2560,
        "UVBREu-GuBh-VHHb-RUAp-jjhQ-blIy-ez3Tjr",
        "Root partition for system B",
    ),
    (
        "B_var",
        8217,
        2560,
        "VNZoZ9-013f-hbEJ-Xd9C-AH6E-vAhI-KkzZ4p",
        "Mutable data partition for system B",
    ),
    (
        "guestos",
        10777,
        12800,
        "woW7RT-t6jS-cRo2-uENw-iQXu-ni2u-AZdHpq",
        "GuestOS LVM partition",
    ),
];

/// HostOS volume group name.
pub const HOSTOS_VG_NAME: &str = "hostlvm";
/// HostOS volume group UUID.
pub const HOSTOS_VG_UUID: &str = "4c7GVZ-Df82-QEcJ-xXtV-JgRL-IjLE-hK0FgA";
/// HostOS physical volume UUID.
pub const HOSTOS_PV_UUID: &str = "eu0VQE-HlTi-EyRc-GceP-xZtn-3j6t-iqEwyv";
/// HostOS LVM extent size (`extent_size = 8192` sectors).
pub const HOSTOS_EXTENT_SIZE: u64 = 4 * MIB;
/// Offset of the first HostOS physical extent inside the PV (`pe_start = 2048`).
pub const HOSTOS_PE_START: u64 = MIB;

/// SetupOS: esp, grub, the FAT config partition, the data partition holding
/// the HostOS and GuestOS images, and one boot/root pair (no A/B).
const SETUPOS: [Row; 6] = [
    (
        "esp",
        2048,
        204800,
        U,
        uuid!("B78084E2-3363-1346-8C25-D426F26B8928"),
        "EFI system partition",
    ),
    (
        "grub",
        206848,
        204800,
        L,
        uuid!("6788E4CF-F456-104E-9A34-A2C58CFB0EE6"),
        "Grub bootloader modules and config",
    ),
    (
        "config",
        411648,
        102400,
        M,
        uuid!("A5BA3816-BEAA-D74D-993E-CFA5AA6BA1F6"),
        "External config",
    ),
    (
        "data",
        514048,
        7168000,
        L,
        uuid!("E97BF7B1-9400-439F-93D0-13276111F989"),
        "External data",
    ),
    (
        "boot",
        7682048,
        204800,
        L,
        uuid!("DDF618FE-7244-B446-A175-3296E6B9D02E"),
        "Boot partition for system",
    ),
    (
        "root",
        7886848,
        3584000,
        L,
        uuid!("7C0A626E-E5EA-E543-B5C5-300EB8304DB7"),
        "Root partition for system",
    ),
];

/// The SetupOS image size: the end of the last partition plus 1 MiB, as IC
/// builds it.
pub const SETUPOS_DISK_SIZE: u64 = (7886848 + 3584000 + 2048) * crate::SECTOR_SIZE;

fn partitions(rows: &[Row]) -> Vec<Partition> {
    rows.iter()
        .map(|&(name, start, size, kind, uuid, comment)| Partition {
            name: name.to_owned(),
            start,
            size,
            kind,
            uuid,
            comment: comment.to_owned(),
        })
        .collect()
}

fn layout(name: &str, disk_size: u64, rows: &[Row]) -> Layout {
    Layout {
        name: name.to_owned(),
        disk_guid: IC_LABEL_ID,
        disk_size,
        partitions: partitions(rows),
        lvm: None,
    }
}

/// The built-in GuestOS layout.
pub fn guestos() -> Layout {
    layout("guestos", GUESTOS_DISK_SIZE, &GUESTOS)
}

/// The built-in HostOS layout, including the `hostlvm` volume group.
pub fn hostos() -> Layout {
    let mut layout = layout("hostos", HOSTOS_DISK_SIZE, &HOSTOS);
    layout.lvm = Some(LvmLayout {
        pv_partition: "hostlvm".to_owned(),
        vg_name: HOSTOS_VG_NAME.to_owned(),
        vg_uuid: LvmUuid::from_static(HOSTOS_VG_UUID),
        pv_uuid: LvmUuid::from_static(HOSTOS_PV_UUID),
        extent_size: HOSTOS_EXTENT_SIZE,
        pe_start: HOSTOS_PE_START,
        volumes: HOSTOS_VOLUMES
            .iter()
            .map(|&(name, start, size, uuid, comment)| LogicalVolume {
                name: name.to_owned(),
                start_extent: start,
                size_extents: size,
                uuid: LvmUuid::from_static(uuid),
                comment: comment.to_owned(),
            })
            .collect(),
    });
    layout
}

/// The built-in SetupOS layout.
pub fn setupos() -> Layout {
    layout("setupos", SETUPOS_DISK_SIZE, &SETUPOS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{OsKind, Slot};

    #[test]
    fn every_builtin_lvm_uuid_is_well_formed() {
        let lvm = hostos().lvm.expect("hostos has LVM");
        assert!(LvmUuid::is_valid(lvm.vg_uuid.as_str()));
        assert!(LvmUuid::is_valid(lvm.pv_uuid.as_str()));
        for v in &lvm.volumes {
            assert!(LvmUuid::is_valid(v.uuid.as_str()), "{}", v.name);
        }
    }

    #[test]
    fn every_builtin_layout_validates_at_its_own_size() {
        for kind in OsKind::ALL {
            let layout = kind.layout();
            assert_eq!(layout.violations(layout.disk_size), vec![], "{kind}");
            assert!(layout.min_disk_size() <= layout.disk_size, "{kind}");
        }
    }

    #[test]
    fn disk_sizes() {
        assert_eq!(GUESTOS_DISK_SIZE, 53_687_091_200);
        assert_eq!(HOSTOS_DISK_SIZE, 107_585_994_752);
        assert_eq!(SETUPOS_DISK_SIZE, 5_874_122_752);
        assert_eq!(hostos().ic_image_size(), HOSTOS_DISK_SIZE);
        assert_eq!(setupos().ic_image_size(), SETUPOS_DISK_SIZE);
        // IC builds the GuestOS image at its minimal size, then expands it.
        assert_eq!(guestos().ic_image_size(), (88_696_832 + 2048) * 512);
    }

    #[test]
    fn partitions_are_contiguous() {
        for kind in OsKind::ALL {
            let layout = kind.layout();
            for pair in layout.partitions.windows(2) {
                assert_eq!(pair[0].end(), pair[1].start, "{kind}: {}", pair[1].name);
            }
        }
    }

    #[test]
    fn guestos_slots() {
        let layout = guestos();
        let a = layout.slot_partitions(Slot::A).expect("slot A");
        assert_eq!(
            (
                a.boot.name.as_str(),
                a.root.name.as_str(),
                a.var.name.as_str()
            ),
            ("A_boot", "A_root", "A_var")
        );
        let b = layout.slot_partitions(Slot::B).expect("slot B");
        assert_eq!(b.boot.start, 44_656_640);
        assert_eq!(b.root.uuid, uuid!("A78BC3A8-376C-054A-96E7-3904B915D0C5"));
        assert_eq!(layout.partition_number("B_var"), Some(9));
        assert!(setupos().slot_partitions(Slot::A).is_none());
        assert!(hostos().slot_partitions(Slot::A).is_none());
    }

    #[test]
    fn hostos_volumes() {
        let layout = hostos();
        let lvm = layout.lvm.as_ref().expect("lvm");
        let b = lvm.slot_volumes(Slot::B).expect("slot B volumes");
        assert_eq!((b.boot.start_extent, b.root.start_extent), (5401, 5657));
        assert_eq!(lvm.volume("guestos").map(|v| v.size_extents), Some(12800));
        // hostlvm starts at sector 411648; extents start 1 MiB into it.
        let (offset, size) = layout.volume_byte_range("A_root").expect("A_root");
        assert_eq!(offset, 411_648 * 512 + MIB + 281 * 4 * MIB);
        assert_eq!(size, 10 * GIB);
        assert_eq!(
            lvm.extents_in(layout.partition("hostlvm").map_or(0, |p| p.size_bytes())),
            25_599
        );
    }

    #[test]
    fn byte_ranges() {
        let layout = setupos();
        assert_eq!(layout.byte_range("config"), Some((411_648 * 512, 50 * MIB)));
        assert_eq!(layout.byte_range("nope"), None);
        assert_eq!(
            layout.partition("config").map(|p| p.kind.type_guid()),
            Some(uuid!("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"))
        );
    }
}
