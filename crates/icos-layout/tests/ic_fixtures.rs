//! The built-in layouts against IC's own `partitions.csv` and `volumes.csv`.

#![allow(clippy::expect_used)]

use std::path::PathBuf;

use icos_layout::{
    GIB, Layout, LogicalVolume, OsKind, Partition, PartitionType, read_partitions_csv,
    read_volumes_csv,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn partitions(name: &str) -> Vec<Partition> {
    read_partitions_csv(&fixture(name)).expect("fixture parses")
}

#[test]
fn hostos_partitions_match_the_fixture() {
    assert_eq!(
        partitions("hostos-partitions.csv"),
        OsKind::HostOs.layout().partitions
    );
}

#[test]
fn hostos_volumes_match_the_fixture() {
    let volumes: Vec<LogicalVolume> =
        read_volumes_csv(&fixture("hostos-volumes.csv")).expect("fixture parses");
    let lvm = OsKind::HostOs.layout().lvm.expect("hostos has LVM");
    assert_eq!(volumes, lvm.volumes);
    assert_eq!(volumes.len(), 8);
    assert_eq!(volumes[7].name, "guestos");
    assert_eq!(
        volumes[7].uuid.as_str(),
        "woW7RT-t6jS-cRo2-uENw-iQXu-ni2u-AZdHpq"
    );
}

#[test]
fn setupos_partitions_match_the_fixture() {
    let parsed = partitions("setupos-partitions.csv");
    assert_eq!(parsed, OsKind::SetupOs.layout().partitions);
    assert_eq!(parsed[2].kind, PartitionType::MicrosoftBasicData);
    assert_eq!(parsed[2].comment, "External config");
}

#[test]
fn guestos_fixture_parses_exactly() {
    let parsed = partitions("guestos-partitions.csv");
    let rows: Vec<(&str, u64, u64, char, String)> = parsed
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.start,
                p.size,
                p.kind.code(),
                p.uuid.hyphenated().to_string().to_uppercase(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "esp",
                2048,
                204800,
                'U',
                "B78084E2-3363-1346-8C25-D426F26B8928".into()
            ),
            (
                "grub",
                206848,
                204800,
                'L',
                "6788E4CF-F456-104E-9A34-A2C58CFB0EE6".into()
            ),
            (
                "config",
                411648,
                204800,
                'L',
                "A5BA3816-BEAA-D74D-993E-CFA5AA6BA1F6".into()
            ),
            (
                "A_boot",
                616448,
                2097152,
                'L',
                "DDF618FE-7244-B446-A175-3296E6B9D02E".into()
            ),
            (
                "A_root",
                2713600,
                20971520,
                'L',
                "7C0A626E-E5EA-E543-B5C5-300EB8304DB7".into()
            ),
            (
                "A_var",
                23685120,
                20971520,
                'L',
                "22D2F5A6-1E39-D247-81CF-90C95C113E21".into()
            ),
            (
                "A_exe",
                44656640,
                20971520,
                'L',
                "3CD8EEFF-7BDE-48AB-BB6A-75BA6E5C7954".into()
            ),
            (
                "B_boot",
                65628160,
                2097152,
                'L',
                "D5214E4F-F7B0-B945-9A9B-52B9188DF4C5".into()
            ),
            (
                "B_root",
                67725312,
                20971520,
                'L',
                "A78BC3A8-376C-054A-96E7-3904B915D0C5".into()
            ),
            (
                "B_var",
                88696832,
                20971520,
                'L',
                "2237D1D1-CE96-584E-8EC5-8AE6661FAAE9".into()
            ),
            // The file spells this one with a lower-case run ("1481d9BD697A").
            (
                "B_exe",
                109668352,
                20971520,
                'L',
                "25F6ED8C-0277-46DF-A995-1481D9BD697A".into()
            ),
        ]
    );
    assert_eq!(parsed[10].comment, "Mutable data partition for execution B");
}

#[test]
fn builtin_guestos_is_the_fixture_without_the_exe_partitions() {
    let parsed = partitions("guestos-partitions.csv");
    let exe = parsed
        .iter()
        .find(|p| p.name == "A_exe")
        .expect("A_exe row")
        .size;
    let mut expected: Vec<Partition> = parsed
        .into_iter()
        .filter(|p| !p.name.ends_with("_exe"))
        .collect();
    for p in expected.iter_mut().filter(|p| p.name.starts_with("B_")) {
        p.start -= exe;
    }
    assert_eq!(OsKind::GuestOs.layout().partitions, expected);
}

#[test]
fn the_newer_guestos_fixture_is_a_valid_layout_too() {
    let layout = Layout::from_partitions("guestos-exe", partitions("guestos-partitions.csv"));
    assert_eq!(layout.validate(), Ok(()));
    assert_eq!(layout.disk_size, (109_668_352 + 20_971_520 + 2048) * 512);
    // It does not fit the 50 GiB GuestOS image.
    assert!(layout.validate_for(50 * GIB).is_err());
}

#[test]
fn fixtures_validate_as_ic_builds_them() {
    for (os, file) in [
        (OsKind::HostOs, "hostos-partitions.csv"),
        (OsKind::SetupOs, "setupos-partitions.csv"),
    ] {
        let layout = Layout::from_partitions(os.as_str(), partitions(file));
        assert_eq!(layout.validate(), Ok(()), "{file}");
        assert_eq!(layout.disk_size, os.layout().disk_size, "{file}");
    }
}

#[test]
fn layouts_round_trip_through_json() {
    for os in OsKind::ALL {
        let layout = os.layout();
        let text = serde_json::to_string(&layout).expect("serializes");
        let back: Layout = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, layout, "{os}");
    }
    let text = serde_json::to_string(&OsKind::SetupOs.layout()).expect("serializes");
    assert!(
        text.contains(r#""type":"M","uuid":"A5BA3816-BEAA-D74D-993E-CFA5AA6BA1F6""#),
        "{text}"
    );
    let bad = text.replace("A5BA3816-BEAA-D74D-993E-CFA5AA6BA1F6", "nope");
    assert!(serde_json::from_str::<Layout>(&bad).is_err());
    let hostos = serde_json::to_string(&OsKind::HostOs.layout()).expect("serializes");
    let bad = hostos.replace("4c7GVZ-Df82", "4c7GVZ-Df8");
    assert!(serde_json::from_str::<Layout>(&bad).is_err());
}
