//! The whole chain on one QEMU machine: `icos build setupos --env dev`,
//! then `icos run setupos` with two blank 1100 GiB disks. SetupOS checks
//! the machine (hardware check off: a TCG machine is far below IC's
//! thresholds; the network check pings QEMU's host at the node's gateway
//! and asks an `icos-testnet-replica` on this machine, the NNS, at
//! `http://10.0.2.2:PORT`; the clock check syncs with the chronyd `icos
//! run setupos` runs), installs HostOS and GuestOS, reboots into HostOS,
//! and HostOS starts GuestOS, whose boot marker arrives on the HostOS
//! console. Then the installed disks are checked offline:
//!
//! - the first disk's GPT is HostOS's, its `hostlvm` partition grown to the
//!   end of the disk, the backup header in the last sector;
//! - HostOS's grubenv (slot A, booted);
//! - LVM's own tools (on read-only loop devices) see the `hostlvm` VG on
//!   both disks, every volume of HostOS, and `guestos` spread over both;
//! - the `config` volume holds the HostOS config derived from the inputs;
//! - the `guestos` volume holds a GuestOS disk (its GPT).
//!
//! Prints `BENCH` lines: the build, each stage and the whole chain.
//! Needs root and the tools of `scripts/prereqs.sh`; a missing tool is a
//! failure. Everything lives in `$CARGO_TARGET_TMPDIR/setupos_install/`;
//! `tail -f` its `run.log` to watch the console.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
mod setupos_vm;

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;

use common::{fresh_dir, run_ok};
use icos_imagefs::Tools;
use icos_layout::{OsKind, SECTOR_SIZE};
use setupos_vm::{
    IPV6_PREFIX, MGMT_MAC, Nns, build_setupos, require_tools, run_setupos, stage_lines, targets,
    write_inputs,
};

/// A read-only loop device over a byte range (the whole file without
/// one), detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, range: Option<(u64, u64)>) -> Loop {
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show", "--read-only"]);
        if let Some((offset, size)) = range {
            cmd.arg("-o")
                .arg(offset.to_string())
                .arg("--sizelimit")
                .arg(size.to_string());
        }
        Loop(run_ok(cmd.arg(file)).trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn setupos_installs_and_the_node_comes_up() {
    require_tools();
    let (dir, _lock) = fresh_dir("setupos_install");

    let (image, built) = build_setupos(&dir.join("out"));
    eprintln!("BENCH setupos_install build_s={:.1}", built.as_secs_f64());
    let nns = Nns::start(&dir);
    let inputs = write_inputs(&dir, &nns.url());

    let run = run_setupos(
        &dir,
        "run",
        &[
            "--image".as_ref(),
            image.as_os_str(),
            "--config-ini".as_ref(),
            inputs.config_ini.as_os_str(),
            "--deployment-json".as_ref(),
            inputs.deployment_json.as_os_str(),
            "--node-operator-key".as_ref(),
            inputs.node_operator_key.as_os_str(),
            "--ssh-keys".as_ref(),
            inputs.ssh_keys.as_os_str(),
            "--check-hardware".as_ref(),
            "false".as_ref(),
            "--timeout".as_ref(),
            "1800".as_ref(),
        ],
    );
    drop(nns);
    let stages = stage_lines(&run.stderr);
    for (at, text) in &stages {
        eprintln!("[{at:7.1} s] {text}");
    }
    assert!(
        run.status.success(),
        "icos run setupos failed ({}):\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );

    // The GuestOS marker came through HostOS, and the node's addresses
    // follow it.
    let first = run.stdout.lines().next().unwrap_or_default();
    assert!(first.contains("GUESTOS BOOT SUCCESS"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("HostOS reached by the firmware's IC-OS boot entry")
            || run
                .stdout
                .contains("HostOS reached by starting the machine again without the stick"),
        "{}",
        run.stdout
    );
    eprintln!("{}", run.stdout.trim());
    for system in ["setupos", "hostos", "guestos"] {
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(system) && l.contains(IPV6_PREFIX))
            .unwrap_or_else(|| panic!("no {system} address line:\n{}", run.stdout));
        assert!(line.contains(":6a:") || line.contains("6a:"), "{line}");
    }

    // Every stage, in order, with its time.
    let names: Vec<&str> = stages.iter().map(|(_, t)| t.as_str()).collect();
    let want = [
        "stage: checks",
        "stage: installing",
        "stage: rebooting",
        "stage: hostos-booting",
        "stage: guestos-booting",
        "done (guestos-up)",
    ];
    let mut at = 0;
    for w in want {
        let found = names[at..]
            .iter()
            .position(|n| *n == w)
            .unwrap_or_else(|| panic!("stage '{w}' missing or out of order: {names:?}"));
        at += found + 1;
    }
    let mut previous = ("setupos-booting".to_owned(), 0.0);
    for (t, text) in &stages {
        let name = text.strip_prefix("stage: ").unwrap_or(text);
        eprintln!(
            "BENCH setupos_install stage={} seconds={:.1}",
            previous.0,
            t - previous.1
        );
        previous = (name.to_owned(), *t);
    }
    eprintln!(
        "BENCH setupos_install chain_s={:.1} command_s={:.1}",
        previous.1,
        run.took.as_secs_f64()
    );

    check_disks(&run.work);
    fs::remove_dir_all(&dir).unwrap();
}

/// The installed disks, offline.
fn check_disks(work: &Path) {
    let disks = targets(work);
    assert_eq!(disks.len(), 2, "{disks:?}");
    let system = &disks[0];
    let tools = Tools::discover().unwrap();

    // GPT: HostOS's partitions, the last one grown to the end.
    let table = icos_layout::read_gpt_image(system).unwrap();
    let problems = table.problems();
    assert!(problems.is_empty(), "{problems:?}");
    let layout = OsKind::HostOs.layout();
    assert_eq!(table.partitions.len(), layout.partitions.len());
    for (got, want) in table.partitions.iter().zip(&layout.partitions) {
        assert_eq!(got.name, want.name);
        assert_eq!(got.uuid, want.uuid, "{}", want.name);
        assert_eq!(got.start, want.start, "{}", want.name);
    }
    let pv_part = table.partition("hostlvm").unwrap();
    assert_eq!(
        pv_part.start + pv_part.size - 1,
        table.last_usable_lba,
        "hostlvm does not reach the end of the disk"
    );
    let last_sector = table.disk_size / SECTOR_SIZE - 1;
    assert_eq!(table.backup.lba, last_sector);
    assert!(table.backup.valid, "{:?}", table.backup);

    // HostOS's grubenv: slot A, booted.
    let grub = table.partition("grub").unwrap();
    let grubenv =
        icos_imagefs::read_file_from_vfat(&tools, system, grub.start * SECTOR_SIZE, "grubenv")
            .unwrap();
    let env = icos_grubenv::parse(&grubenv).unwrap();
    eprintln!(
        "HostOS grubenv: boot_alternative={:?} boot_cycle={:?}",
        env.get("boot_alternative"),
        env.get("boot_cycle")
    );
    assert_eq!(env.get("boot_alternative"), Some("A"));
    assert_eq!(env.get("boot_cycle"), Some("stable"));

    // LVM, by its own tools on read-only loop devices.
    let pv_offset = pv_part.start * SECTOR_SIZE;
    let pv_len = pv_part.size * SECTOR_SIZE;
    let first = Loop::attach(system, Some((pv_offset, pv_len)));
    let second = Loop::attach(&disks[1], None);
    let config = format!(
        "devices {{ filter=[\"a|^{}$|\",\"a|^{}$|\",\"r|.*|\"] use_devicesfile=0 }} \
         backup {{ backup=0 archive=0 }}",
        first.0, second.0
    );
    let lvm = |args: &[&str]| {
        let out = Command::new("lvm")
            .arg(args[0])
            .args(["--config", &config])
            // The reports read only (vgck takes no such flag; the loop
            // devices are read-only anyway).
            .args((args[0] != "vgck").then_some("--readonly"))
            .args(&args[1..])
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lvm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let report = |args: &[&str]| -> Vec<Vec<String>> {
        let mut full = vec![
            args[0],
            "--noheadings",
            "--separator",
            "|",
            "--units",
            "b",
            "--nosuffix",
        ];
        full.extend(&args[1..]);
        lvm(&full)
            .lines()
            .map(|l| l.trim().split('|').map(str::to_owned).collect())
            .filter(|f: &Vec<String>| f.len() > 1)
            .collect()
    };
    let pvs = report(&["pvs", "-o", "pv_name,vg_name,pv_size,pe_start"]);
    eprintln!("pvs: {pvs:?}");
    assert_eq!(pvs.len(), 2, "{pvs:?}");
    for pv in &pvs {
        assert_eq!(pv[1], "hostlvm", "{pv:?}");
    }
    let vgs = report(&[
        "vgs",
        "-o",
        "vg_name,pv_count,lv_count,vg_free_count,vg_extent_size",
    ]);
    eprintln!("vgs: {vgs:?}");
    assert_eq!(vgs.len(), 1);
    assert_eq!(vgs[0][0], "hostlvm");
    assert_eq!(vgs[0][1], "2", "{vgs:?}");
    assert_eq!(vgs[0][2], "8", "{vgs:?}");
    let extent: u64 = vgs[0][4].parse().unwrap();
    let lvs = report(&[
        "lvs",
        "-o",
        "lv_name,seg_start_pe,seg_pe_ranges,segtype,stripes",
    ]);
    eprintln!("lvs: {lvs:?}");
    let mut names: Vec<&str> = lvs.iter().map(|l| l[0].as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names,
        [
            "A_boot", "A_root", "A_var", "B_boot", "B_root", "B_var", "config", "guestos"
        ]
    );
    // guestos: its first 50 GiB where the HostOS image put it, then a
    // segment striped over both disks (lvextend -i 2 -l +100%FREE).
    let guestos: Vec<&Vec<String>> = lvs.iter().filter(|l| l[0] == "guestos").collect();
    assert!(
        guestos.iter().any(|l| l[3] == "striped" && l[4] == "2"),
        "guestos has no segment striped over two disks: {guestos:?}"
    );
    let ranges: String = guestos
        .iter()
        .map(|l| l[2].clone())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        ranges.contains(&first.0) && ranges.contains(&second.0),
        "guestos does not span both disks: {guestos:?}"
    );
    lvm(&["vgck", "hostlvm"]);

    // Where a volume's first segment starts on the system disk.
    let pe_start: u64 = pvs
        .iter()
        .find(|p| p[0] == first.0)
        .map(|p| p[3].parse().unwrap())
        .unwrap();
    let lv_start = |name: &str| -> u64 {
        let seg = lvs
            .iter()
            .find(|l| l[0] == name && l[1] == "0")
            .unwrap_or_else(|| panic!("{name}: no first segment in {lvs:?}"));
        let (dev, range) = seg[2].split_once(':').unwrap();
        assert_eq!(dev, first.0, "{name} does not start on the system disk");
        let start_pe: u64 = range.split('-').next().unwrap().parse().unwrap();
        pv_offset + pe_start + start_pe * extent
    };

    // The HostOS config, as the installer derived it.
    let config_json =
        icos_imagefs::read_file_from_ext4(&tools, system, lv_start("config"), "/config.json")
            .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config_json).unwrap();
    let net = &config["network_settings"];
    let ipv6 = serde_json::to_string(&net["ipv6_config"]).unwrap();
    assert!(ipv6.contains(IPV6_PREFIX), "{ipv6}");
    assert_eq!(net["ipv4_config"]["address"], "10.0.2.15", "{net}");
    assert_eq!(net["domain_name"], "node1.example.com", "{net}");
    let icos = &config["icos_settings"];
    // IC writes the MAC in upper case.
    assert_eq!(
        icos["mgmt_mac"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some(MGMT_MAC),
        "{icos}"
    );
    assert_eq!(icos["deployment_environment"], "testnet", "{icos}");
    assert!(
        icos["node_operator_private_key"]
            .as_str()
            .is_some_and(|k| k.contains("PRIVATE KEY")),
        "{icos}"
    );
    assert_eq!(config["hostos_settings"]["verbose"], true);
    assert_eq!(
        config["hostos_settings"]["hostos_dev_settings"]["vm_memory"],
        2
    );

    // GuestOS in its volume: a GuestOS GPT at the volume's start.
    let mut window =
        icos_fat::Window::new(File::open(system).unwrap(), lv_start("guestos"), 50 << 30);
    let guest = icos_layout::read_gpt(&mut window).unwrap();
    let guest_layout = OsKind::GuestOs.layout();
    for want in &guest_layout.partitions {
        let got = guest
            .partition(&want.name)
            .unwrap_or_else(|| panic!("GuestOS partition {} missing: {guest:?}", want.name));
        assert_eq!(
            (got.start, got.uuid),
            (want.start, want.uuid),
            "{}",
            want.name
        );
    }
}
