//! `icos layout show`, `write-gpt` and `read-gpt`, end to end on sparse image
//! files.

#![allow(clippy::expect_used)]

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;
use serde_json::Value;

fn icos() -> Command {
    Command::cargo_bin("icos").expect("icos binary")
}

fn layout(args: &[&str]) -> assert_cmd::assert::Assert {
    icos().arg("layout").args(args).assert()
}

fn json_of(args: &[&str]) -> Value {
    let out = layout(args).success().get_output().stdout.clone();
    serde_json::from_slice(&out).expect("stdout is JSON")
}

/// (name, start, size, type, uuid) of each partition in a JSON listing.
fn rows(value: &Value) -> Vec<(String, u64, u64, String, String)> {
    value["partitions"]
        .as_array()
        .expect("partitions array")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name").to_owned(),
                p["start"].as_u64().expect("start"),
                p["size"].as_u64().expect("size"),
                p["type"].as_str().expect("type").to_owned(),
                p["uuid"].as_str().expect("uuid").to_owned(),
            )
        })
        .collect()
}

#[test]
fn show_guestos_table() {
    layout(&["show", "guestos"])
        .success()
        .stdout(contains("label-id:   2B110BB7-CDEC-7D41-B97E-893EDCBE5428"))
        .stdout(contains("53687091200 bytes (50 GiB)"))
        .stdout(contains(
            "5  A_root  2713600   20971520  10 GiB   L     7C0A626E-E5EA-E543-B5C5-300EB8304DB7",
        ))
        .stdout(contains("9  B_var"))
        .stdout(contains("A_exe").not());
}

#[test]
fn show_hostos_lists_the_lvm_volumes() {
    layout(&["show", "hostos"])
        .success()
        .stdout(contains("3  hostlvm  411648  209715200  100 GiB  L"))
        .stdout(contains(
            "LVM volume group hostlvm (uuid 4c7GVZ-Df82-QEcJ-xXtV-JgRL-IjLE-hK0FgA)",
        ))
        .stdout(contains(
            "PV uuid eu0VQE-HlTi-EyRc-GceP-xZtn-3j6t-iqEwyv, 4 MiB extents",
        ))
        .stdout(contains(
            "guestos  10777  12800    50 GiB   woW7RT-t6jS-cRo2-uENw-iQXu-ni2u-AZdHpq",
        ));
}

#[test]
fn show_json() {
    let setupos = json_of(&["show", "setupos", "--json"]);
    assert_eq!(setupos["name"], "setupos");
    assert_eq!(setupos["label_id"], "2B110BB7-CDEC-7D41-B97E-893EDCBE5428");
    assert_eq!(setupos["disk_size"], 5_874_122_752u64);
    let r = rows(&setupos);
    assert_eq!(r.len(), 6);
    assert_eq!(
        r[2],
        (
            "config".to_owned(),
            411_648,
            102_400,
            "M".to_owned(),
            "A5BA3816-BEAA-D74D-993E-CFA5AA6BA1F6".to_owned()
        )
    );
    assert_eq!(
        setupos["partitions"][2]["type_guid"],
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
    );
    assert!(setupos.get("lvm").is_none());

    let hostos = json_of(&["show", "hostos", "--json"]);
    let lvm = &hostos["lvm"];
    assert_eq!(lvm["vg_name"], "hostlvm");
    assert_eq!(lvm["extent_size"], 4u64 << 20);
    assert_eq!(lvm["volumes"].as_array().map(Vec::len), Some(8));
    assert_eq!(lvm["volumes"][2]["name"], "A_root");
    assert_eq!(lvm["volumes"][2]["start_extent"], 281);
    assert_eq!(
        lvm["volumes"][2]["offset_bytes"],
        411_648u64 * 512 + (1 << 20) + 281 * (4 << 20)
    );

    let guestos = json_of(&["show", "guestos", "--json"]);
    let names: Vec<String> = rows(&guestos).into_iter().map(|r| r.0).collect();
    assert_eq!(
        names,
        [
            "esp", "grub", "config", "A_boot", "A_root", "A_var", "B_boot", "B_root", "B_var"
        ]
    );
}

#[test]
fn unknown_layout_is_bad_input() {
    layout(&["show", "windows"])
        .code(2)
        .stderr(contains("invalid value 'windows'"));
    layout(&["write-gpt", "nope", "x.img"]).code(2);
}

#[test]
fn write_then_read_each_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    for os in ["guestos", "hostos", "setupos"] {
        let image = dir.path().join(format!("{os}.img"));
        let image_arg = image.to_str().expect("utf-8 path");
        layout(&["write-gpt", os, image_arg])
            .success()
            .stdout(contains(format!("wrote the {os} GPT")));

        let shown = json_of(&["show", os, "--json"]);
        let read = json_of(&["read-gpt", image_arg, "--json"]);
        assert_eq!(rows(&read), rows(&shown), "{os}");
        assert_eq!(read["label_id"], shown["label_id"]);
        assert_eq!(read["disk_size"], shown["disk_size"]);
        assert_eq!(read["problems"], Value::Array(vec![]));
        assert_eq!(read["primary_header"]["valid"], true);
        assert_eq!(read["backup_header"]["valid"], true);

        layout(&["read-gpt", image_arg])
            .success()
            .stdout(contains("protective MBR: yes"))
            .stdout(contains("problems: none"))
            .stdout(contains("1  esp"));
        std::fs::remove_file(&image).expect("remove");
    }
}

#[test]
fn write_gpt_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("setupos.img");
    let image_arg = image.to_str().expect("utf-8 path");
    layout(&["write-gpt", "setupos", image_arg]).success();
    layout(&["write-gpt", "setupos", image_arg])
        .code(2)
        .stderr(contains("refusing to overwrite"));
    layout(&["write-gpt", "setupos", image_arg, "--force", "--size", "6G"]).success();
    let read = json_of(&["read-gpt", image_arg, "--json"]);
    assert_eq!(read["disk_size"], 6u64 << 30);
    assert_eq!(read["backup_header"]["lba"], (6u64 << 30) / 512 - 1);
}

#[test]
fn write_gpt_rejects_a_too_small_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("small.img");
    layout(&[
        "write-gpt",
        "guestos",
        image.to_str().expect("utf-8 path"),
        "--size",
        "1G",
    ])
    .code(2)
    .stderr(contains("too small for layout guestos"))
    .stderr(contains("needs at least"));
    assert!(!image.exists());

    layout(&["write-gpt", "guestos", "x.img", "--size", "12Q"])
        .code(2)
        .stderr(contains("unknown size suffix"));
}

#[test]
fn read_gpt_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blank = dir.path().join("blank.img");
    std::fs::write(&blank, vec![0u8; 1 << 20]).expect("write");
    layout(&["read-gpt", blank.to_str().expect("utf-8 path")])
        .code(2)
        .stderr(contains("no valid GPT"));

    let missing = dir.path().join("missing.img");
    layout(&["read-gpt", missing.to_str().expect("utf-8 path")])
        .code(1)
        .stderr(contains("missing.img"));
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["show", "write-gpt", "read-gpt"] {
        layout(&[sub, "--help"])
            .success()
            .stdout(contains("Usage:"));
    }
    layout(&["--help"])
        .success()
        .stdout(contains("write-gpt"))
        .stdout(contains("read-gpt"));
}
