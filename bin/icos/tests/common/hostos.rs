//! A HostOS machine with GuestOS inside, as SetupOS leaves it, for the
//! nested VM tests: images built with `icos build` (the stage cache makes
//! repeated builds cheap), GuestOS copied into the `hostlvm/guestos` volume,
//! a HostOS config from `icos node derive` on `examples/` in the `config`
//! volume, and a QEMU machine for HostOS under TCG with `-cpu max,la57=off` (SVM/VMX
//! for the nested KVM) on a user network that carries the node's /64 with
//! QEMU at the configured gateway address.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use icos_build::hostos::HOSTOS_CONFIG_FS_UUID;
use icos_deterministic_ips::NodeType;
use icos_imagefs::{Ext4Source, Ext4Spec, Tools};
use icos_layout::OsKind;
use icos_qemu::{
    Accel, Console, Disk, Firmware, NetBackend, Nic, Ovmf, UserIpv6, UserNet, VmConfig, Watch,
};
use icos_setupos_vm::stage::{GUESTOS_NO_MARKER, HUNG_TASK, KERNEL_PANIC, RCU_STALL, SOFT_LOCKUP};

use super::{require, run_ok, source_root};

/// L1 (HostOS) memory: the 2 GiB guest, plus HostOS and its tmpfs /var.
pub const HOSTOS_MEMORY_MIB: u64 = 5120;
/// What the kernels print when nested KVM under TCG stalls: HostOS's
/// soft-lockup watchdog, an RCU stall of HostOS's or GuestOS's kernel, a
/// kernel panic, a GuestOS task whose I/O never completes (a lost
/// interrupt: the hung-task watchdog), and HostOS's runner when GuestOS
/// froze without a word (no boot marker within its wait).
/// The same lines `icos run setupos` power-cycles its machine on.
pub const NESTED_STALLS: [&str; 5] = [
    SOFT_LOCKUP,
    RCU_STALL,
    KERNEL_PANIC,
    HUNG_TASK,
    GUESTOS_NO_MARKER,
];

/// GuestOS's vCPUs when HostOS runs it nested (`dev_vm_resources` of the
/// nested tests' deployment.json). With two, nested KVM on TCG's SVM
/// emulation, on an Intel host, crashed HostOS's kernel or froze GuestOS
/// in every one of 3 boots in a row; with one, 7 of 9 boots came up (one
/// GuestOS panic, one silent freeze: the stall retry covers those), and
/// GuestOS reached its marker sooner. HostOS keeps its 2 vCPUs.
pub const NESTED_GUEST_VCPUS: u32 = 1;

/// `watch`, also ending on any of [`NESTED_STALLS`].
pub fn ends_on_stalls(watch: Watch) -> Watch {
    NESTED_STALLS.iter().fold(watch, |w, s| w.failure(*s))
}

/// Whether `line` is one of [`NESTED_STALLS`].
pub fn is_stall(line: &str) -> bool {
    NESTED_STALLS.iter().any(|s| line.contains(s))
}
/// The prefix of GuestOS console lines in the runner's log (with
/// `hostos_settings.verbose`).
pub const GUEST: &str = "guestos_console: ";
/// The node's /64 in `examples/config.ini`.
pub const NODE_PREFIX: &str = "2001:db8:1234:56";
/// The IPv6 gateway in `examples/config.ini`; QEMU answers there.
pub const GATEWAY: &str = "2001:db8:1234:56::1";
/// The management MAC and environment of `examples/deployment.json`.
pub const MGMT_MAC: &str = "3c:ec:ef:6b:37:99";
/// See [`MGMT_MAC`].
pub const ENVIRONMENT: &str = "testnet";

fn icos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_icos"))
}

/// Fails the test, naming the package, when a host tool the nested tests
/// use is missing.
pub fn require_nested_tools() {
    for (tool, package) in [
        ("sfdisk", "fdisk"),
        ("mke2fs", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("veritysetup", "cryptsetup-bin"),
        ("mmdebstrap", "mmdebstrap"),
        ("mcopy", "mtools"),
        ("mkfs.vfat", "dosfstools"),
        ("zstd", "zstd"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ] {
        require(tool, package);
    }
}

/// The node's deterministic address of `node_type` (HostOS or GuestOS).
pub fn node_ipv6(node_type: NodeType) -> Ipv6Addr {
    icos_deterministic_ips::deterministic_ipv6(
        &MGMT_MAC.parse().unwrap(),
        ENVIRONMENT,
        node_type,
        0,
        NODE_PREFIX,
    )
    .unwrap()
}

/// `icos build KIND` into `out`, then the disk extracted into `dest`;
/// returns the disk and the version.
pub fn build_image(kind: &str, extra: &[&str], out: &Path, dest: &Path) -> (PathBuf, String) {
    let art = super::build_release(kind, extra, out);
    fs::create_dir_all(dest).unwrap();
    let entries = icos_sparse_tar::extract(
        File::open(art.join("disk-img.tar.zst")).unwrap(),
        dest,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(entries.len(), 1, "{kind}: one disk in disk-img.tar.zst");
    let version = fs::read_to_string(art.join("VERSION.TXT"))
        .unwrap()
        .trim()
        .to_owned();
    (dest.join(&entries[0].name), version)
}

/// The HostOS config SetupOS would write: `icos node derive` on the
/// examples, with dev VM resources small enough for a nested guest,
/// `verbose=true` (the GuestOS console on the HostOS console), when given,
/// `nns_urls` as the NNS (registry) URLs, and the examples' node operator
/// key when `operator_key` is set (without it, an orchestrator finds its
/// node in the registry by its address instead of joining).
pub fn hostos_config(dir: &Path, nns_urls: &[String], operator_key: bool) -> PathBuf {
    let ex = source_root().join("examples");
    let ini = fs::read_to_string(ex.join("config.ini")).unwrap();
    assert!(
        ini.contains("\nverbose=false"),
        "examples/config.ini changed"
    );
    fs::write(
        dir.join("config.ini"),
        ini.replace("\nverbose=false", "\nverbose=true"),
    )
    .unwrap();
    let mut deployment: serde_json::Value =
        serde_json::from_slice(&fs::read(ex.join("deployment.json")).unwrap()).unwrap();
    deployment["dev_vm_resources"] = serde_json::json!({
        "memory": "2",
        "cpu": "kvm",
        "nr_of_vcpus": NESTED_GUEST_VCPUS
    });
    if !nns_urls.is_empty() {
        deployment["nns"]["urls"] = serde_json::json!(nns_urls);
    }
    fs::write(
        dir.join("deployment.json"),
        serde_json::to_vec_pretty(&deployment).unwrap(),
    )
    .unwrap();
    let out = dir.join("derived");
    let mut derive = icos();
    derive
        .args(["node", "derive", "--config-ini"])
        .arg(dir.join("config.ini"))
        .arg("--deployment-json")
        .arg(dir.join("deployment.json"))
        .arg("--ssh-keys")
        .arg(ex.join("ssh_authorized_keys"))
        .arg("--out-dir")
        .arg(&out);
    if operator_key {
        derive
            .arg("--node-operator-key")
            .arg(ex.join("node_operator_private_key.pem"));
    }
    run_ok(&mut derive);
    let path = out.join("hostos.json");
    let config: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let settings = &config["hostos_settings"];
    assert_eq!(settings["verbose"], true, "{settings}");
    assert_eq!(
        settings["hostos_dev_settings"],
        serde_json::json!({"vm_memory": 2, "vm_cpu": "kvm", "vm_nr_of_vcpus": NESTED_GUEST_VCPUS}),
        "{settings}"
    );
    run_ok(icos().args(["config", "check"]).arg(&path));
    path
}

/// Copies `src` into `dst` at `offset` through Write + Seek.
fn write_at(dst: &Path, offset: u64, src: &Path) {
    let mut out = OpenOptions::new().write(true).open(dst).unwrap();
    out.seek(SeekFrom::Start(offset)).unwrap();
    std::io::copy(&mut File::open(src).unwrap(), &mut out).unwrap();
    out.flush().unwrap();
}

/// Does SetupOS's part on the HostOS disk `host_disk`: the GuestOS disk
/// `guest_disk` into `hostlvm/guestos` (sparse; `guest_disk` is removed
/// afterwards), and a fresh ext4 holding `config` as `config.json` over the
/// whole `config` volume, with the `extras` (name, file) beside it, as
/// SetupOS copies the node operator key there. `dir` holds the work files.
pub fn install_guest_and_config(
    dir: &Path,
    host_disk: &Path,
    guest_disk: &Path,
    config: &Path,
    extras: &[(&str, &Path)],
) {
    let layout = OsKind::HostOs.layout();
    let (pv_offset, _) = layout.byte_range("hostlvm").unwrap();
    let pv = icos_lvm::read_pv_file(host_disk, pv_offset).unwrap();

    let (lv_off, lv_len) = pv.lv_byte_range("guestos").unwrap();
    let guest_len = fs::metadata(guest_disk).unwrap().len();
    assert!(
        guest_len <= lv_len,
        "the GuestOS disk ({guest_len} bytes) does not fit the guestos volume ({lv_len} bytes)"
    );
    let host = OpenOptions::new().write(true).open(host_disk).unwrap();
    let written =
        icos_imagefs::copy_sparse_at(guest_disk, &host, host_disk, pv_offset + lv_off).unwrap();
    drop(host);
    eprintln!(
        "GuestOS: {written} bytes of data written at {} (guestos volume)",
        pv_offset + lv_off
    );
    fs::remove_file(guest_disk).unwrap();

    let tree = dir.join("config-tree");
    fs::create_dir_all(&tree).unwrap();
    fs::copy(config, tree.join("config.json")).unwrap();
    for (name, file) in extras {
        fs::copy(file, tree.join(name)).unwrap();
    }
    let (cfg_off, cfg_len) = pv.lv_byte_range("config").unwrap();
    let tools = Tools::discover().unwrap();
    let cfg_img = dir.join("config.ext4");
    icos_imagefs::make_ext4(
        &tools,
        &Ext4Spec {
            size_bytes: cfg_len,
            label: "config".to_owned(),
            uuid: HOSTOS_CONFIG_FS_UUID,
            hash_seed: HOSTOS_CONFIG_FS_UUID,
            epoch: 1_700_000_000,
        },
        Ext4Source::Dir(&tree),
        &cfg_img,
    )
    .unwrap();
    write_at(host_disk, pv_offset + cfg_off, &cfg_img);
    let back =
        icos_imagefs::read_file_from_ext4(&tools, host_disk, pv_offset + cfg_off, "/config.json")
            .unwrap();
    assert_eq!(back, fs::read(config).unwrap());
}

/// HostOS on `host_disk` under TCG with `-cpu max,la57=off`, UEFI (its variables in
/// `dir`), its serial console into `log`, and one NIC on QEMU's user
/// network with the node's /64 ([`NODE_PREFIX`]) and QEMU at [`GATEWAY`],
/// open to this machine (`restrict=off`): the guest reaches this machine's
/// loopback at the gateway address.
pub fn hostos_vm(dir: &Path, host_disk: &Path, log: &Path) -> VmConfig {
    let mut vm = VmConfig::new(Accel::Tcg, HOSTOS_MEMORY_MIB, 2);
    vm.firmware = Firmware::Uefi(
        Ovmf::find()
            .unwrap()
            .prepare(dir.join("hostos.vars.fd"))
            .unwrap(),
    );
    vm.disks.push(Disk::virtio(host_disk).with_boot_index(1));
    vm.nics.push(Nic {
        mac: None,
        backend: NetBackend::User(UserNet {
            restrict: false,
            ipv6: Some(UserIpv6 {
                prefix: format!("{NODE_PREFIX}::").parse().unwrap(),
                prefix_len: 64,
                host: GATEWAY.parse().unwrap(),
            }),
            ..UserNet::default()
        }),
    });
    vm.serial = Some(Console::file(log));
    let args = vm.to_args().unwrap().join(" ");
    assert!(args.contains("-cpu max,la57=off"), "{args}");
    vm
}
