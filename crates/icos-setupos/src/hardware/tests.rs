use super::*;

macro_rules! data {
    ($machine:literal, $file:literal) => {
        include_str!(concat!("../../tests/data/", $machine, "/", $file))
    };
}

fn facts(lshw: &str, nproc: &str, memory: (u64, MemorySource), lsblk: &str) -> HardwareFacts {
    HardwareFacts {
        cpus: parse_lshw_cpus(lshw).expect("lshw"),
        threads: parse_nproc(nproc).expect("nproc"),
        memory,
        drives: parse_lsblk(lsblk).expect("lsblk"),
    }
}

fn gen2() -> HardwareFacts {
    facts(
        data!("gen2-7313", "lshw.json"),
        data!("gen2-7313", "nproc"),
        (
            parse_lshw_memory(data!("gen2-7313", "lshw-memory.json")).expect("memory"),
            MemorySource::Lshw,
        ),
        data!("gen2-7313", "lsblk.json"),
    )
}

fn gen1() -> HardwareFacts {
    facts(
        data!("gen1-7302", "lshw.json"),
        data!("gen1-7302", "nproc"),
        (
            parse_lshw_memory(data!("gen1-7302", "lshw-memory.json")).expect("memory"),
            MemorySource::Lshw,
        ),
        data!("gen1-7302", "lsblk.json"),
    )
}

#[test]
fn generations_from_product_strings() {
    use Generation::*;
    for (product, want) in [
        ("AMD EPYC 7302 16-Core Processor", Some(Gen1)),
        ("AMD EPYC 7302P 16-Core Processor", Some(Gen1)),
        ("AMD EPYC 7313 16-Core Processor", Some(Gen2)),
        ("AMD EPYC 7343 16-Core Processor", Some(Gen2)),
        ("AMD EPYC 7763 64-Core Processor", Some(Gen2)),
        ("AMD EPYC 7543P 32-Core Processor", Some(Gen2)),
        ("AMD EPYC 7402 24-Core Processor", None),
        ("AMD EPYC 9354 32-Core Processor", None),
        ("AMD EPYC Processor", None),
        ("AMD EPYC-Milan Processor", None),
        ("QEMU Virtual CPU version 2.5+", None),
        ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", None),
        ("", None),
    ] {
        assert_eq!(Generation::of_product(product), want, "{product}");
    }
}

#[test]
fn lshw_array_and_old_comma_joined_forms_parse() {
    let g2 = parse_lshw_cpus(data!("gen2-7313", "lshw.json")).unwrap();
    assert_eq!(g2.len(), 2);
    assert_eq!(g2[1].id, "cpu:1");
    assert!(g2[0].capabilities.contains("sev_snp"));
    let g1 = parse_lshw_cpus(data!("gen1-7302", "lshw.json")).unwrap();
    assert_eq!(g1.len(), 2);
    assert!(g1[0].capabilities.contains("sev"));
    assert!(!g1[0].capabilities.contains("sev_snp"));
    // The empty third socket is not a CPU.
    assert_eq!(
        parse_lshw_cpus(data!("gen2-mixed", "lshw.json"))
            .unwrap()
            .len(),
        2
    );
    for bad in ["", "{\"id\": ", "7", "[3]"] {
        assert!(parse_lshw_cpus(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn memory_sources() {
    assert_eq!(
        parse_lshw_memory(data!("gen2-7313", "lshw-memory.json")),
        Ok(512 << 30)
    );
    assert_eq!(
        parse_meminfo(data!("gen2-7313", "meminfo")),
        Ok(528_147_772 * 1024)
    );
    assert!(
        parse_lshw_memory("[{\"id\":\"firmware\",\"class\":\"memory\",\"size\":65536}]").is_err()
    );
    assert!(parse_meminfo("MemFree: 1 kB\n").is_err());
    assert!(parse_meminfo("MemTotal: lots kB\n").is_err());
    // Two boards: both System Memory nodes count, their banks do not.
    let two = r#"[{"id":"memory:0","class":"memory","description":"System Memory","size":100,
        "children":[{"id":"bank:0","class":"memory","description":"DIMM","size":100}]},
        {"id":"memory:1","class":"memory","description":"System Memory","size":28}]"#;
    assert_eq!(parse_lshw_memory(two), Ok(128));
}

#[test]
fn lsblk_sizes_as_numbers_or_strings() {
    let drives = parse_lsblk(data!("gen2-7313", "lsblk.json")).unwrap();
    assert_eq!(drives.len(), 6);
    assert_eq!(drives[0].name, "sda");
    assert!(!drives[0].is_large());
    assert!(drives[1..].iter().all(Drive::is_large));
    let old = r#"{"blockdevices": [{"name":"sda","size":"4000787030016","type":"disk"}]}"#;
    assert_eq!(parse_lsblk(old).unwrap()[0].size, 4_000_787_030_016);
    let human = r#"{"blockdevices": [{"name":"sda","size":"3.6T","type":"disk"}]}"#;
    assert!(parse_lsblk(human).unwrap_err().0.contains("lsblk -b"));
    let no_type = r#"{"blockdevices": [{"name":"sda","size":1}]}"#;
    assert!(parse_lsblk(no_type).unwrap_err().0.contains("TYPE"));
}

#[test]
fn gen2_7313_server_passes() {
    let (r, g) = check_hardware(&gen2(), true);
    assert_eq!(g, Some(Generation::Gen2));
    assert!(r.passed(), "{r}");
    assert!(r.warnings.is_empty(), "{r}");
    assert!(r.facts.iter().any(|f| f == "generation: Gen2"), "{r}");
    assert!(
        r.facts
            .iter()
            .any(|f| f.starts_with("large drives (1 TiB or more): nvme0n1 7.68 TB")),
        "{r}"
    );
}

#[test]
fn gen2_without_operator_key_is_a_warning() {
    let (r, _) = check_hardware(&gen2(), false);
    assert!(r.passed(), "{r}");
    assert_eq!(r.warnings.len(), 1);
    assert!(r.warnings[0].contains("node_operator_private_key.pem"));
}

#[test]
fn gen1_7302_server_passes_and_needs_no_key() {
    let (r, g) = check_hardware(&gen1(), false);
    assert_eq!(g, Some(Generation::Gen1));
    assert!(r.passed(), "{r}");
    assert!(r.warnings.is_empty(), "{r}");
}

#[test]
fn meminfo_understates_installed_memory() {
    // MemTotal of the same 512 GiB machine is below the threshold, which is
    // why lshw's System Memory is preferred.
    let mut f = gen2();
    f.memory = (
        parse_meminfo(data!("gen2-7313", "meminfo")).unwrap(),
        MemorySource::Meminfo,
    );
    let (r, _) = check_hardware(&f, true);
    assert_eq!(r.errors.len(), 1, "{r}");
    assert!(
        r.errors[0].starts_with("memory is 540823318528 bytes"),
        "{r}"
    );
}

#[test]
fn thresholds_are_exclusive() {
    let mut f = gen2();
    f.memory = (MIN_MEMORY_BYTES, MemorySource::Lshw);
    assert_eq!(check_hardware(&f, true).0.errors.len(), 1);
    f.memory = (MIN_MEMORY_BYTES + 1, MemorySource::Lshw);
    assert!(check_hardware(&f, true).0.passed());

    // Gen2: each large drive above 6.4 TB (and 5 x 6.4 TB is exactly the
    // 32 TB the aggregate must exceed).
    let mut f = gen2();
    for d in f.drives.iter_mut().filter(|d| d.is_large()) {
        d.size = GEN2_MIN_DRIVE_BYTES;
    }
    let (r, _) = check_hardware(&f, true);
    assert_eq!(r.errors.len(), 6, "{r}");
    assert!(r.errors[0].contains("drive nvme0n1 holds 6.40 TB"), "{r}");
    assert!(
        r.errors[5].starts_with("the large drives hold 32.00 TB"),
        "{r}"
    );
    assert!(r.errors[0].contains("a Gen2 node needs each large drive larger than 6.40 TB"));

    // The aggregate: 10 x 3.2 TB + 1 byte each passes per drive, and the
    // total 32 TB + 10 bytes passes; exactly 32 TB does not.
    let mut f = gen1();
    for d in f.drives.iter_mut().filter(|d| d.is_large()) {
        d.size = GEN1_MIN_DRIVE_BYTES + 1;
    }
    assert!(check_hardware(&f, false).0.passed());
    f.drives.retain(|d| d.name != "nvme9n1");
    f.drives.push(Drive {
        name: "nvme9n1".into(),
        size: GEN1_MIN_DRIVE_BYTES + 1 - 10,
        kind: "disk".into(),
    });
    let (r, _) = check_hardware(&f, false);
    assert_eq!(r.errors.len(), 2, "{r}");
    assert!(
        r.errors[1].starts_with("the large drives hold 32.00 TB"),
        "{r}"
    );
}

#[test]
fn gen1_needs_exactly_64_threads_gen2_at_least() {
    let mut f = gen1();
    f.threads = 128;
    let (r, _) = check_hardware(&f, false);
    assert_eq!(r.errors, ["128 threads; a Gen1 node needs exactly 64"]);
    let mut f = gen2();
    f.threads = 128;
    assert!(check_hardware(&f, true).0.passed());
    f.threads = 63;
    assert_eq!(
        check_hardware(&f, true).0.errors,
        ["63 threads; a Gen2 node needs at least 64"]
    );
}

#[test]
fn missing_sev_is_named_per_socket() {
    let mut f = gen2();
    f.cpus[1].capabilities.remove("sev_snp");
    let (r, g) = check_hardware(&f, true);
    assert_eq!(g, Some(Generation::Gen2));
    assert_eq!(r.errors.len(), 1, "{r}");
    assert!(
        r.errors[0].starts_with("cpu:1: CPU lacks the 'sev_snp' capability"),
        "{r}"
    );
    let mut f = gen1();
    f.cpus[0].capabilities.remove("sev");
    let (r, _) = check_hardware(&f, false);
    assert!(
        r.errors[0].starts_with("cpu:0: CPU lacks the 'sev' capability"),
        "{r}"
    );
}

#[test]
fn mixed_sockets_are_refused_with_every_other_problem() {
    let f = facts(
        data!("gen2-mixed", "lshw.json"),
        data!("gen2-mixed", "nproc"),
        (
            parse_lshw_memory(data!("gen2-mixed", "lshw-memory.json")).unwrap(),
            MemorySource::Lshw,
        ),
        data!("gen2-mixed", "lsblk.json"),
    );
    let (r, g) = check_hardware(&f, true);
    // Both are Gen2 products, but different ones.
    assert_eq!(g, Some(Generation::Gen2));
    let e = &r.errors;
    assert!(
        e[0].starts_with("the sockets hold different CPUs (AMD EPYC 7313"),
        "{r}"
    );
    assert!(
        e[1].starts_with("cpu:1: CPU lacks the 'sev_snp' capability"),
        "{r}"
    );
    assert!(
        e[2].starts_with("48 threads; a Gen2 node needs at least 64"),
        "{r}"
    );
    assert!(e[3].starts_with("memory is 274877906944 bytes"), "{r}");
    // 4 x 3.84 TB: each too small for Gen2, and too little together; the
    // 2 TiB loop device is not a drive.
    for (i, name) in ["nvme0n1", "nvme1n1", "nvme2n1", "nvme3n1"]
        .iter()
        .enumerate()
    {
        assert!(
            e[4 + i].starts_with(&format!("drive {name} holds 3.84 TB")),
            "{r}"
        );
    }
    assert!(e[8].starts_with("the large drives hold 15.36 TB"), "{r}");
    assert_eq!(e.len(), 9, "{r}");
}

#[test]
fn qemu_vm_lists_every_shortfall() {
    let f = facts(
        data!("qemu-vm", "lshw.json"),
        data!("qemu-vm", "nproc"),
        (
            parse_meminfo(data!("qemu-vm", "meminfo")).unwrap(),
            MemorySource::Meminfo,
        ),
        data!("qemu-vm", "lsblk.json"),
    );
    let (r, g) = check_hardware(&f, false);
    assert_eq!(g, None);
    let want = [
        "1 CPU socket(s) populated; a node needs exactly 2",
        "cpu: CPU 'AMD EPYC Processor' is not a node CPU: Gen1 needs 'AMD EPYC 7302', Gen2 one matching 'AMD EPYC 7..3'",
        "4 threads; a Gen2 node needs at least 64",
        "memory is 33649852416 bytes (33.65 GB (31.34 GiB)); a node needs more than 547608330240 bytes (510 GiB)",
        "no large drive: a node needs drives of 1 TiB or more to install onto",
        "the large drives hold 0.00 GB (0.00 GiB) together; a node needs more than 32.00 TB (29.10 TiB)",
    ];
    assert_eq!(r.errors, want, "{r}");
    assert!(r.warnings.is_empty());
    assert!(
        r.facts
            .iter()
            .any(|f| f.contains("other block devices: sr0")),
        "{r}"
    );

    // The older QEMU model name is no node CPU either.
    let mut f = f;
    f.cpus[0].product = "QEMU Virtual CPU version 2.5+".into();
    assert!(check_hardware(&f, false).0.errors[1].contains("'QEMU Virtual CPU version 2.5+'"));
}
