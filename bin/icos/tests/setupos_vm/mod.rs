//! Helpers of the SetupOS machine tests (`setupos_install`,
//! `setupos_refusal`): the SetupOS build, an NNS on this machine, the node
//! provider's inputs, and `icos run setupos` with its output kept.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::{require, source_root, testnet_replica_binary};

/// The node's /64 in the tests; QEMU's user network advertises it.
pub const IPV6_PREFIX: &str = "2602:fb2b:110:10";
/// The node's gateway; QEMU's host answers there.
pub const IPV6_GATEWAY: &str = "2602:fb2b:110:10::1";
/// The management MAC (no BMC in a VM).
pub const MGMT_MAC: &str = "3c:ec:ef:6b:37:99";
/// A one-node testnet serving as the NNS.
const TESTNET: &str = r#"{
  "root_key_seed": "73657475706f73206d616368696e65207465737473206e6e73",
  "subnets": [{
    "id": "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe",
    "nodes": 1,
    "canister_ranges": [["rwlgt-iiaaa-aaaaa-aaaaa-cai", "renrk-eyaaa-aaaaa-aaada-cai"]]
  }]
}"#;
const SUBNET: &str = "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe";

/// Fails unless every host tool of a SetupOS machine run is installed.
pub fn require_tools() {
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("chronyd", "chrony"),
        ("mcopy", "mtools"),
        ("mkfs.vfat", "dosfstools"),
        ("debugfs", "e2fsprogs"),
        ("mke2fs", "e2fsprogs"),
        ("veritysetup", "cryptsetup-bin"),
        ("sfdisk", "fdisk"),
        ("mmdebstrap", "mmdebstrap"),
        ("zstd", "zstd"),
        ("losetup", "mount"),
        ("lvm", "lvm2"),
    ] {
        require(tool, package);
    }
    assert!(
        Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").is_file(),
        "OVMF is missing: install the Debian package `ovmf` (./scripts/prereqs.sh)"
    );
}

/// `icos` of this build.
pub fn icos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_icos"))
}

/// The variable naming a SetupOS image to test instead of building one
/// (e.g. a build of another source tree).
pub const IMAGE_VAR: &str = "ICOS_TEST_SETUPOS_IMAGE";

/// `icos build setupos --env dev` into `out`; returns the artifact and the
/// build time. With `$ICOS_TEST_SETUPOS_IMAGE` set, that image is used
/// and nothing is built.
pub fn build_setupos(out: &Path) -> (PathBuf, Duration) {
    if let Some(image) = std::env::var_os(IMAGE_VAR) {
        let image = PathBuf::from(image);
        assert!(
            image.is_file(),
            "{IMAGE_VAR}: {} is no file",
            image.display()
        );
        eprintln!(
            "testing {} ({IMAGE_VAR}), not a fresh build",
            image.display()
        );
        return (image, Duration::ZERO);
    }
    let started = Instant::now();
    let status = icos()
        .args(["build", "setupos", "--env", "dev", "--source"])
        .arg(source_root())
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "icos build setupos failed: {status}");
    let image = out.join("setupos").join("disk-img.tar.zst");
    assert!(image.is_file(), "{} missing", image.display());
    (image, started.elapsed())
}

/// An `icos-testnet-replica serve` on 127.0.0.1, the machine's NNS at
/// `http://10.0.2.2:PORT`; killed on drop.
pub struct Nns {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Nns {
    /// Starts it, logging into `dir/nns.log`, and waits until it listens.
    pub fn start(dir: &Path) -> Nns {
        let replica = testnet_replica_binary(env!("CARGO_BIN_EXE_icos"));
        let testnet = dir.join("testnet.json");
        fs::write(&testnet, TESTNET).unwrap();
        let port = TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(replica)
            .arg("serve")
            .arg("--config")
            .arg(&testnet)
            .args(["--subnet", SUBNET])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("nns.log")).unwrap())
            .spawn()
            .unwrap();
        let nns = Nns { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the NNS replica did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        nns
    }

    /// The URL the machine uses.
    pub fn url(&self) -> String {
        format!("http://10.0.2.2:{}", self.port)
    }
}

impl Drop for Nns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node provider's files.
pub struct NodeInputs {
    /// config.ini.
    pub config_ini: PathBuf,
    /// deployment.json.
    pub deployment_json: PathBuf,
    /// The node operator key.
    pub node_operator_key: PathBuf,
    /// The SSH key folder.
    pub ssh_keys: PathBuf,
}

/// A config.ini for QEMU's network: the test /64 and gateway, IPv4
/// 10.0.2.15/24 via 10.0.2.2 with a domain, verbose (GuestOS's console on
/// HostOS's).
pub fn config_ini_text() -> String {
    format!(
        "# A node on QEMU's user network.\n\
         ipv6_prefix={IPV6_PREFIX}\n\
         ipv6_gateway={IPV6_GATEWAY}\n\
         ipv4_address=10.0.2.15\n\
         ipv4_prefix_length=24\n\
         ipv4_gateway=10.0.2.2\n\
         domain=node1.example.com\n\
         node_reward_type=type3.1\n\
         verbose=true\n"
    )
}

/// Writes the inputs into `dir`: testnet, the management MAC, `nns_url`,
/// a 2 GiB GuestOS under KVM with
/// [`NESTED_GUEST_VCPUS`](crate::common::hostos::NESTED_GUEST_VCPUS).
pub fn write_inputs(dir: &Path, nns_url: &str) -> NodeInputs {
    let config_ini = dir.join("config.ini");
    fs::write(&config_ini, config_ini_text()).unwrap();
    let deployment = serde_json::json!({
        "deployment": {"deployment_environment": "testnet", "mgmt_mac": MGMT_MAC},
        "logging": {},
        "nns": {"urls": [nns_url]},
        "dev_vm_resources": {
            "memory": "2",
            "cpu": "kvm",
            "nr_of_vcpus": crate::common::hostos::NESTED_GUEST_VCPUS
        }
    });
    let deployment_json = dir.join("deployment.json");
    fs::write(
        &deployment_json,
        serde_json::to_vec_pretty(&deployment).unwrap(),
    )
    .unwrap();
    let examples = source_root().join("examples");
    NodeInputs {
        config_ini,
        deployment_json,
        node_operator_key: examples.join("node_operator_private_key.pem"),
        ssh_keys: examples.join("ssh_authorized_keys"),
    }
}

/// What one `icos run setupos` did.
pub struct RunResult {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (progress and the console).
    pub stderr: String,
    /// The kept run folder.
    pub work: PathBuf,
    /// How long it took.
    pub took: Duration,
}

/// Runs `icos run setupos ARGS --work DIR --keep`, its stderr into
/// `dir/NAME.log` (`tail -f` it to watch).
pub fn run_setupos(dir: &Path, name: &str, args: &[&std::ffi::OsStr]) -> RunResult {
    let log = dir.join(format!("{name}.log"));
    let started = Instant::now();
    let out = icos()
        .args(["run", "setupos"])
        .args(args)
        .arg("--work")
        .arg(dir)
        .arg("--keep")
        .stdin(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = fs::read_to_string(&log).unwrap();
    let work = stderr
        .lines()
        .find_map(|l| l.strip_prefix("icos run setupos: kept "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no kept run folder in {}:\n{stderr}", log.display()));
    RunResult {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        work,
        took,
    }
}

/// The stage lines (`==> [  12.3 s] stage: checks`): (seconds, text).
pub fn stage_lines(stderr: &str) -> Vec<(f64, String)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("==> ["))
        .filter_map(|rest| {
            let (secs, text) = rest.split_once(" s] ")?;
            Some((secs.trim().parse().ok()?, text.to_owned()))
        })
        .collect()
}

/// The target disks of a run folder, in order.
pub fn targets(work: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("target-") && n.ends_with(".img"))
        })
        .collect();
    found.sort();
    found
}
