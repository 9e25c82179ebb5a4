//! The orchestrator against a real TUF registry and release packages served
//! over HTTP on 127.0.0.1, installing into GuestOS-layout disk files.
//!
//! Needs `mkfs.vfat` and mtools (for the FAT grub partition).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use icos_grubenv::{BootCycle, BootState, GrubEnv, Slot};
use icos_layout::{Layout, Partition, PartitionType};
use icos_orchestrator::attempt::ATTEMPT_FILE;
use icos_orchestrator::download::DownloadOptions;
use icos_orchestrator::{
    Config, DiskSource, Error, HostAgent, Metrics, NodeSelector, Orchestrator, Outcome, Rebooter,
    State, Status,
};
use icos_registry::keys::SigningKey;
use icos_registry::model::self_authenticating_id;
use icos_registry::{Lifetimes, Proposal, Repo};
use icos_slots::{Device, SlotDisk, SlotsError};
use sha2::{Digest, Sha256};
use url::Url;

const MIB: u64 = 1 << 20;
const SUBNET: &str = "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe";
const NODE_IP: &str = "2001:db8::10";

// ---------------------------------------------------------------- disks

/// Partition names and sizes in MiB of the small test disk.
const PARTITIONS: [(&str, u64); 7] = [
    ("grub", 2),
    ("A_boot", 2),
    ("A_root", 4),
    ("A_var", 2),
    ("B_boot", 2),
    ("B_root", 4),
    ("B_var", 2),
];

fn part_offset(layout: &Layout, name: &str) -> u64 {
    layout.partition(name).unwrap().offset_bytes()
}

fn put(path: &Path, at: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
}

fn get(path: &Path, at: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut v = vec![0u8; len];
    f.read_exact(&mut v).unwrap();
    v
}

/// Bytes that look like an ext4 image (magic at 1080), varied per `tag`.
fn image(len: u64, tag: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| u8::try_from((i.wrapping_mul(31) + u64::from(tag) * 7) % 253).unwrap())
        .collect();
    v[1080..1082].copy_from_slice(&[0x53, 0xEF]);
    v
}

/// A GuestOS-layout disk file: GPT with IC's names, a FAT grub partition
/// holding grubenv (A, stable), slot A filled, slot B empty.
fn make_disk(dir: &Path) -> (PathBuf, Layout) {
    let mut start = 2048u64;
    let mut parts = Vec::new();
    for (i, (name, mib)) in PARTITIONS.iter().enumerate() {
        parts.push(Partition {
            name: (*name).to_owned(),
            start,
            size: mib * 2048,
            kind: PartitionType::Linux,
            uuid: icos_layout::Uuid::from_bytes([u8::try_from(i).unwrap() + 0x40; 16]),
            comment: String::new(),
        });
        start += mib * 2048;
    }
    let layout = Layout::from_partitions("orchestrator-test", parts);
    let disk = dir.join("disk.img");
    let f = File::create(&disk).unwrap();
    f.set_len(layout.disk_size).unwrap();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    icos_layout::write_gpt(&mut f, &layout).unwrap();
    drop(f);

    let mut env = GrubEnv::new();
    BootState::new(Slot::A, BootCycle::Stable)
        .write_to_env(&mut env)
        .unwrap();
    let env_file = dir.join("grubenv");
    fs::write(&env_file, env.to_bytes().unwrap()).unwrap();
    let fat = dir.join("grub.img");
    let tools = icos_imagefs::Tools::discover().unwrap();
    icos_imagefs::make_vfat(
        &tools,
        &icos_imagefs::VfatSpec {
            size_bytes: 2 * MIB,
            label: "GRUB".into(),
            volume_id: 0x0dd5_eed5,
            epoch: 1_700_000_000,
        },
        &[("grubenv".into(), env_file)],
        &fat,
    )
    .unwrap();
    put(
        &disk,
        part_offset(&layout, "grub"),
        &fs::read(&fat).unwrap(),
    );
    put(&disk, part_offset(&layout, "A_boot"), &image(2 * MIB, 1));
    put(&disk, part_offset(&layout, "A_root"), &image(3 * MIB, 2));
    put(
        &disk,
        part_offset(&layout, "B_var"),
        &vec![0x5A; 2 * 1024 * 1024],
    );
    (disk, layout)
}

fn boot_state(disk: &Path) -> BootState {
    icos_slots::open(disk, false)
        .unwrap()
        .read_state()
        .unwrap()
        .1
}

fn file_sha(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// A device that loses every write after `budget` bytes: a power cut in
/// the middle of an install. `written` counts what reached the file.
struct CutDevice {
    file: File,
    budget: Option<u64>,
    written: Arc<Mutex<u64>>,
}

impl Read for CutDevice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for CutDevice {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Write for CutDevice {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = self.written.lock().unwrap();
        let allowed = match self.budget {
            Some(b) => usize::try_from(b.saturating_sub(*done))
                .unwrap_or(usize::MAX)
                .min(buf.len()),
            None => buf.len(),
        };
        if allowed == 0 {
            return Err(io::Error::other("power cut"));
        }
        let n = self.file.write(&buf[..allowed])?;
        *done += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Device for CutDevice {
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
}

struct TestDisk {
    path: PathBuf,
    budget: Option<u64>,
    written: Arc<Mutex<u64>>,
}

impl TestDisk {
    fn new(path: &Path, budget: Option<u64>) -> Self {
        TestDisk {
            path: path.to_owned(),
            budget,
            written: Arc::default(),
        }
    }
}

impl DiskSource for TestDisk {
    type Dev = CutDevice;
    fn open(&mut self) -> Result<SlotDisk<CutDevice>, SlotsError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .unwrap();
        SlotDisk::new(
            CutDevice {
                file,
                budget: self.budget,
                written: Arc::clone(&self.written),
            },
            &self.path,
        )
    }
    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

// ---------------------------------------------------------------- seams

/// Counts reboot requests; refuses them while `refuse` is set.
#[derive(Clone, Default)]
struct Reboots(Arc<AtomicUsize>, Arc<AtomicBool>);

impl Rebooter for Reboots {
    fn reboot(&mut self) -> Result<(), String> {
        if self.1.load(Ordering::SeqCst) {
            return Err("systemctl reboot: exit status: 1".into());
        }
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Clone, Default)]
struct FakeHost {
    version: Arc<Mutex<String>>,
    upgrades: Arc<Mutex<Vec<(String, String)>>>,
    refuse_first: bool,
}

impl HostAgent for FakeHost {
    fn hostos_version(&mut self) -> Result<String, String> {
        Ok(self.version.lock().unwrap().clone())
    }
    fn upgrade(&mut self, url: &str, sha256: &str) -> Result<(), String> {
        let mut u = self.upgrades.lock().unwrap();
        u.push((url.to_owned(), sha256.to_owned()));
        if self.refuse_first && u.len() == 1 {
            return Err("download failed: connection refused".into());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- network

/// Releases served from a directory with Range support; remembers the
/// Range header of every request and can cut the next body in half.
#[derive(Clone, Default)]
struct ReleaseServer {
    dir: Arc<PathBuf>,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
    cut_next: Arc<AtomicBool>,
}

async fn serve_release(srv: ReleaseServer, name: String, headers: HeaderMap) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    srv.ranges.lock().unwrap().push(range.clone());
    let Ok(bytes) = fs::read(srv.dir.join(&name)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let len = bytes.len();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    let (status, body, content_range) = match start {
        Some(s) if s >= len => {
            return (StatusCode::RANGE_NOT_SATISFIABLE, "").into_response();
        }
        Some(s) => (
            StatusCode::PARTIAL_CONTENT,
            bytes[s..].to_vec(),
            Some(format!("bytes {s}-{}/{len}", len - 1)),
        ),
        None => (StatusCode::OK, bytes, None),
    };
    let full = body.len();
    let body = if srv.cut_next.swap(false, Ordering::SeqCst) {
        let half = Bytes::from(body[..full / 2].to_vec());
        // The first half goes out; a moment later the connection drops.
        let first = futures_util::stream::iter([Ok::<Bytes, io::Error>(half)]);
        let cut = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Err::<Bytes, io::Error>(io::Error::other("connection cut"))
        });
        Body::from_stream(futures_util::StreamExt::chain(first, cut))
    } else {
        Body::from(body)
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, full.to_string());
    if let Some(cr) = content_range {
        resp = resp.header(header::CONTENT_RANGE, cr);
    }
    resp.body(body).unwrap()
}

async fn start_server(repo_dir: PathBuf, releases: ReleaseServer) -> SocketAddr {
    let rel = releases.clone();
    let app = axum::Router::new()
        .nest("/reg", icos_registry::serve::router(repo_dir))
        .route(
            "/releases/{name}",
            axum::routing::get(move |UrlPath(name): UrlPath<String>, headers: HeaderMap| {
                serve_release(rel.clone(), name, headers)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

// ---------------------------------------------------------------- network + registry

/// An update image in `icos build`'s format: zstd tar of VERSION.TXT,
/// boot.img, root.img.
fn update_image(version: &str, tag: u8) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let boot = image(MIB + 4096, tag);
    let root = image(3 * MIB - 8192, tag.wrapping_add(1));
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("VERSION.TXT", format!("{version}\n").into_bytes()),
        ("boot.img", boot.clone()),
        ("root.img", root.clone()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    (zstd::encode_all(&tar[..], 3).unwrap(), boot, root)
}

struct Net {
    tmp: tempfile::TempDir,
    repo: Repo,
    gov: Vec<SigningKey>,
    online: SigningKey,
    node_id: String,
    addr: SocketAddr,
    releases: ReleaseServer,
    disk: PathBuf,
    layout: Layout,
    reboots: Reboots,
}

impl Net {
    fn pass_proposal(&self, p: Proposal) {
        let (path, _) = self.repo.propose(p, "", &Lifetimes::default()).unwrap();
        for k in &self.gov[..2] {
            self.repo.vote(&path, k).unwrap();
        }
        self.repo
            .execute(&path, &self.online, &Lifetimes::default())
            .unwrap();
    }

    fn release_url(&self, file: &str) -> Url {
        Url::parse(&format!("http://{}/releases/{file}", self.addr)).unwrap()
    }

    /// Publishes `bytes` as `file` and elects it as GuestOS `version` with
    /// the given hash (its own unless overridden).
    fn elect(&self, version: &str, file: &str, bytes: &[u8], sha: Option<String>) {
        fs::write(self.releases.dir.join(file), bytes).unwrap();
        self.pass_proposal(Proposal::ElectGuestosVersion {
            version: version.into(),
            urls: vec![self.release_url(file)],
            sha256: sha.unwrap_or_else(|| hex::encode(Sha256::digest(bytes))),
            launch_measurements: None,
        });
    }

    fn deploy(&self, version: &str) {
        self.pass_proposal(Proposal::DeployGuestosToSubnet {
            subnet: SUBNET.into(),
            version: version.into(),
        });
    }

    fn config(&self, running: &str) -> Config {
        Config {
            registry_urls: vec![Url::parse(&format!("http://{}/reg/", self.addr)).unwrap()],
            trust_root: self.repo.trust_root_path(),
            datastore: self.tmp.path().join("datastore"),
            node: NodeSelector::Ipv6(NODE_IP.parse().unwrap()),
            running_version: running.into(),
            status_path: self.tmp.path().join("run/status.json"),
            download: DownloadOptions {
                connect_timeout: Duration::from_secs(5),
                read_timeout: Duration::from_secs(10),
            },
            registry_timeout: Duration::from_secs(10),
        }
    }

    fn orchestrator(
        &self,
        running: &str,
        budget: Option<u64>,
        host: Option<FakeHost>,
    ) -> Orchestrator<TestDisk, Reboots, FakeHost> {
        Orchestrator::new(
            self.config(running),
            TestDisk::new(&self.disk, budget),
            self.reboots.clone(),
            host,
            Arc::new(Metrics::new()),
        )
    }

    fn slot_bytes(&self, part: &str, len: usize) -> Vec<u8> {
        get(&self.disk, part_offset(&self.layout, part), len)
    }
}

/// A network with one node (found by IPv6) in a subnet running v1.
async fn network() -> Net {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let gov: Vec<SigningKey> = (0..3)
        .map(|i| SigningKey::generate(&keys.join(format!("gov{i}.pem"))).unwrap())
        .collect();
    let online = SigningKey::generate(&keys.join("online.pem")).unwrap();
    let operator = SigningKey::generate(&keys.join("operator.pem")).unwrap();
    let node_key = SigningKey::generate(&keys.join("node.pem")).unwrap();
    let repo_dir = tmp.path().join("repo");
    let repo = Repo::init(&repo_dir, &gov, 2, &online, &Lifetimes::default()).unwrap();
    let rel_dir = tmp.path().join("releases");
    fs::create_dir_all(&rel_dir).unwrap();
    let releases = ReleaseServer {
        dir: Arc::new(rel_dir),
        ..ReleaseServer::default()
    };
    let addr = start_server(repo_dir, releases.clone()).await;
    let (disk, layout) = make_disk(tmp.path());
    let node_id = self_authenticating_id(&node_key.public_bytes());
    let net = Net {
        tmp,
        repo,
        gov,
        online,
        node_id,
        addr,
        releases,
        disk,
        layout,
        reboots: Reboots::default(),
    };
    net.pass_proposal(Proposal::AddNodeOperator {
        public_key: hex::encode(operator.public_bytes()),
        allowance: 1,
    });
    net.pass_proposal(Proposal::AddNode {
        public_key: hex::encode(node_key.public_bytes()),
        operator: self_authenticating_id(&operator.public_bytes()),
        ipv6: NODE_IP.parse().unwrap(),
    });
    let (v1, _, _) = update_image("v1", 10);
    net.elect("v1", "v1.tar.zst", &v1, None);
    net.pass_proposal(Proposal::CreateSubnet {
        subnet: SUBNET.into(),
        nodes: vec![net.node_id.clone()],
        version: "v1".into(),
        ssh_readonly_keys: vec![],
        ssh_backup_keys: vec![],
    });
    net
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_version_is_installed_into_the_spare_slot_and_committed() {
    let net = network().await;
    let mut orch = net.orchestrator("v1", None, None);
    orch.start().unwrap();
    assert_eq!(
        orch.status().boot_confirm.as_deref(),
        Some(
            "boot_alternative=A boot_cycle=stable -> boot_alternative=A boot_cycle=stable (slot A, unchanged)"
        )
    );
    // v1 is what the subnet runs: nothing to do.
    assert_eq!(orch.pass().await.unwrap(), Outcome::UpToDate);
    assert_eq!(orch.state(), &State::Idle);
    let before = file_sha(&net.disk);

    let (v2, boot, root) = update_image("v2", 20);
    net.elect("v2", "v2.tar.zst", &v2, None);
    // Elected but not deployed: still nothing.
    assert_eq!(orch.pass().await.unwrap(), Outcome::UpToDate);
    assert_eq!(file_sha(&net.disk), before);

    net.deploy("v2");
    assert_eq!(
        orch.pass().await.unwrap(),
        Outcome::RebootRequested("v2".into())
    );
    assert_eq!(
        orch.state(),
        &State::RebootPending {
            version: "v2".into()
        }
    );
    assert_eq!(net.reboots.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        boot_state(&net.disk),
        BootState::new(Slot::B, BootCycle::FirstBoot)
    );
    assert_eq!(net.slot_bytes("B_boot", boot.len()), boot);
    assert_eq!(net.slot_bytes("B_root", root.len()), root);
    // The spare var header is wiped; slot A is untouched.
    assert!(net.slot_bytes("B_var", 4096).iter().all(|&b| b == 0));
    assert_eq!(net.slot_bytes("A_boot", 2048), image(2 * MIB, 1)[..2048]);

    // The status file tells the story.
    let status = Status::read(&net.tmp.path().join("run/status.json")).unwrap();
    assert_eq!(
        status.state,
        Some(State::RebootPending {
            version: "v2".into()
        })
    );
    assert_eq!(status.node_id.as_deref(), Some(net.node_id.as_str()));
    assert_eq!(status.target_version.as_deref(), Some("v2"));
    assert_eq!(status.bytes_downloaded, v2.len() as u64);
    let phases: Vec<&str> = status
        .phase_seconds
        .iter()
        .map(|(p, _)| p.as_str())
        .collect();
    for p in [
        "checking",
        "downloading",
        "verifying",
        "installing",
        "committing",
    ] {
        assert!(phases.contains(&p), "{p} missing from {phases:?}");
    }
    // The download is gone once it is in the slot.
    let releases = net.config("v1").releases_dir();
    assert_eq!(fs::read_dir(&releases).unwrap().count(), 0);

    // Waiting for the reboot: further passes do nothing.
    assert_eq!(
        orch.pass().await.unwrap(),
        Outcome::RebootPending("v2".into())
    );
    assert_eq!(net.reboots.0.load(Ordering::SeqCst), 1);

    // A restart before the reboot (first_boot on disk) asks for it again
    // instead of confirming a slot that has not booted.
    let mut again = net.orchestrator("v1", None, None);
    again.start().unwrap();
    assert_eq!(net.reboots.0.load(Ordering::SeqCst), 2);
    assert_eq!(again.state().name(), "reboot_pending");
    assert_eq!(
        boot_state(&net.disk),
        BootState::new(Slot::B, BootCycle::FirstBoot)
    );

    // The reboot: GRUB moves first_boot to failsafe_check and boots B;
    // v2's orchestrator confirms it and finds nothing more to do.
    grub_boot(&net.disk);
    assert_eq!(
        boot_state(&net.disk),
        BootState::new(Slot::B, BootCycle::FailsafeCheck)
    );
    let mut v2_orch = net.orchestrator("v2", None, None);
    v2_orch.start().unwrap();
    assert_eq!(
        boot_state(&net.disk),
        BootState::new(Slot::B, BootCycle::Stable)
    );
    assert_eq!(v2_orch.pass().await.unwrap(), Outcome::UpToDate);
    assert_eq!(net.reboots.0.load(Ordering::SeqCst), 2);
}

/// What GRUB does at boot: applies the boot cycle's `Boot` event to
/// grubenv, rewriting the 1024-byte block where it lies in the disk file.
fn grub_boot(disk: &Path) {
    let mut d = icos_slots::open(disk, false).unwrap();
    let old = d.read_grubenv_bytes().unwrap();
    let (mut env, state) = d.read_state().unwrap();
    drop(d);
    let (next, _) = icos_grubenv::transition(state, icos_grubenv::Event::Boot).unwrap();
    next.write_to_env(&mut env).unwrap();
    let new = env.to_bytes().unwrap();
    let mut bytes = fs::read(disk).unwrap();
    let at = bytes
        .windows(old.len())
        .position(|w| w == old)
        .expect("grubenv block in the disk file");
    bytes[at..at + new.len()].copy_from_slice(&new);
    fs::write(disk, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_with_the_wrong_hash_is_refused_and_the_disk_is_untouched() {
    let net = network().await;
    let (v4, _, _) = update_image("v4", 40);
    net.elect("v4", "v4.tar.zst", &v4, Some(hex::encode([0x44u8; 32])));
    net.deploy("v4");
    let before = file_sha(&net.disk);
    let mut orch = net.orchestrator("v1", None, None);
    orch.start().unwrap();
    let err = orch.pass().await.unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains(&hex::encode([0x44u8; 32]))
            && err.to_string().contains("nothing written to the disk"),
        "{err}"
    );
    assert_eq!(file_sha(&net.disk), before, "the disk changed");
    let State::Backoff { phase, reason } = orch.state() else {
        panic!("{}", orch.state())
    };
    assert_eq!(phase, "verifying");
    assert!(reason.contains("is not the elected"), "{reason}");
    let releases = net.config("v1").releases_dir();
    assert_eq!(fs::read_dir(&releases).unwrap().count(), 0, "file kept");
    assert_eq!(net.reboots.0.load(Ordering::SeqCst), 0);
    // The next pass downloads again and refuses again; still untouched.
    assert!(orch.pass().await.is_err());
    assert_eq!(file_sha(&net.disk), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_download_resumes_with_a_range_request() {
    let net = network().await;
    let (v2, boot, _) = update_image("v2", 20);
    net.elect("v2", "v2.tar.zst", &v2, None);
    net.deploy("v2");
    let before = file_sha(&net.disk);
    net.releases.cut_next.store(true, Ordering::SeqCst);
    let mut orch = net.orchestrator("v1", None, None);
    orch.start().unwrap();
    let err = orch.pass().await.unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "{err}");
    assert_eq!(orch.state().name(), "backoff");
    assert_eq!(file_sha(&net.disk), before);
    let sha = hex::encode(Sha256::digest(&v2));
    let part = icos_orchestrator::download::partial_path(&net.config("v1").releases_dir(), &sha);
    let have = fs::metadata(&part)
        .unwrap_or_else(|e| panic!("{}: {e}; pass error: {err}", part.display()))
        .len();
    assert!(
        have > 0 && have < v2.len() as u64,
        "partial {have} of {}",
        v2.len()
    );

    // A new process after the cut: it resumes where the file ends.
    let mut orch = net.orchestrator("v1", None, None);
    orch.start().unwrap();
    assert_eq!(
        orch.pass().await.unwrap(),
        Outcome::RebootRequested("v2".into())
    );
    let ranges = net.releases.ranges.lock().unwrap().clone();
    assert_eq!(ranges.first(), Some(&None), "{ranges:?}");
    assert_eq!(
        ranges.last(),
        Some(&Some(format!("bytes={have}-"))),
        "{ranges:?}"
    );
    assert_eq!(
        orch.status().bytes_downloaded,
        v2.len() as u64 - have,
        "only the rest was fetched"
    );
    assert_eq!(net.slot_bytes("B_boot", boot.len()), boot);
    assert_eq!(
        boot_state(&net.disk),
        BootState::new(Slot::B, BootCycle::FirstBoot)
    );
}

/// Whether a slot's boot and root partitions hold exactly the image, or
/// are invalid (zero headers): never a half-written slot that could boot.
fn slot_is_complete_or_invalid(net: &Net, boot: &[u8], root: &[u8]) -> &'static str {
    let b = net.slot_bytes("B_boot", boot.len());
    let r = net.slot_bytes("B_root", root.len());
    if b == boot && r == root {
        return "complete";
    }
    let zero_head = |v: &[u8]| v[..usize::try_from(MIB).unwrap()].iter().all(|&x| x == 0);
    assert!(
        zero_head(&b) || zero_head(&r),
        "slot B is neither complete nor invalid"
    );
    "invalid"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_at_any_point_of_the_install_leaves_a_bootable_disk() {
    let net = network().await;
    let (v2, boot, root) = update_image("v2", 20);
    net.elect("v2", "v2.tar.zst", &v2, None);
    net.deploy("v2");
    let pristine = fs::read(&net.disk).unwrap();

    // How many bytes a complete install writes.
    let total = {
        let mut disk = TestDisk::new(&net.disk, None);
        let file = net.releases.dir.join("v2.tar.zst");
        let mut d = disk.open().unwrap();
        d.install(File::open(&file).unwrap(), &file, &mut |_| {})
            .unwrap();
        disk.written.lock().map(|n| *n).unwrap()
    };
    fs::write(&net.disk, &pristine).unwrap();

    // Cuts: at the first write, inside the invalidation, in the middle of
    // the members, and after everything but the grubenv sector.
    for budget in [0, MIB / 2, total / 2, total - 512] {
        // A fresh node each time: the disk and the datastore (whose attempt
        // record of the last round would otherwise read as a rollback).
        fs::write(&net.disk, &pristine).unwrap();
        let _ = fs::remove_dir_all(net.tmp.path().join("datastore"));
        let mut orch = net.orchestrator("v1", Some(budget), None);
        orch.start().unwrap();
        let err = orch.pass().await.unwrap_err();
        assert!(matches!(err, Error::Slots(_)), "budget {budget}: {err}");
        assert!(err.to_string().contains("power cut"), "{err}");
        let State::Backoff { phase, .. } = orch.state() else {
            panic!("budget {budget}: {}", orch.state())
        };
        // The last cut hits the grubenv write: after the read-back.
        let expected = if budget == total - 512 {
            "committing"
        } else {
            "installing"
        };
        assert_eq!(phase, expected, "budget {budget}");
        // The disk boots A, as before, and B cannot boot half-written.
        assert_eq!(
            boot_state(&net.disk),
            BootState::new(Slot::A, BootCycle::Stable),
            "budget {budget}"
        );
        let b = slot_is_complete_or_invalid(&net, &boot, &root);
        if budget < total / 2 {
            assert_eq!(b, "invalid", "budget {budget}");
        }
        // After the restart, a new pass completes from that disk state.
        let mut orch = net.orchestrator("v1", None, None);
        orch.start().unwrap();
        assert_eq!(
            orch.pass().await.unwrap(),
            Outcome::RebootRequested("v2".into()),
            "budget {budget}"
        );
        assert_eq!(
            boot_state(&net.disk),
            BootState::new(Slot::B, BootCycle::FirstBoot)
        );
        assert_eq!(slot_is_complete_or_invalid(&net, &boot, &root), "complete");
    }
}

/// Replaces the signature of the published timestamp with another valid
/// hex string: a forgery.
fn forge_timestamp(repo: &Repo) {
    let path = repo.metadata_dir().join("timestamp.json");
    let mut doc: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let sig = doc["signatures"][0]["sig"].as_str().unwrap().to_owned();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    doc["signatures"][0]["sig"] = serde_json::Value::String(format!("{flipped}{}", &sig[1..]));
    fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_registry_data_is_refused_and_the_node_keeps_its_verified_registry() {
    let net = network().await;
    let mut orch = net.orchestrator("v1", None, None);
    orch.start().unwrap();
    assert_eq!(orch.pass().await.unwrap(), Outcome::UpToDate);
    let verified = orch.status().registry_version;
    assert!(!orch.status().registry_stale);

    // A v2 deployed with a forged timestamp on top: the node must not see it.
    let (v2, _, _) = update_image("v2", 20);
    net.elect("v2", "v2.tar.zst", &v2, None);
    net.deploy("v2");
    forge_timestamp(&net.repo);
    let before = file_sha(&net.disk);
    assert_eq!(orch.pass().await.unwrap(), Outcome::UpToDate);
    assert_eq!(orch.state(), &State::Idle);
    assert!(orch.status().registry_stale);
    assert_eq!(orch.status().registry_version, verified);
    let why = orch.status().last_error.clone().unwrap_or_default();
    assert!(why.contains("forged signature"), "{why}");
    assert_eq!(file_sha(&net.disk), before);

    // Once the repository is sound again the node follows it.
    net.repo
        .refresh(&net.online, &Lifetimes::default())
        .unwrap();
    assert_eq!(
        orch.pass().await.unwrap(),
        Outcome::RebootRequested("v2".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostos_is_asked_to_upgrade_when_its_version_differs() {
    let net = network().await;
    let image = b"hostos upgrade image".to_vec();
    let sha = hex::encode(Sha256::digest(&image));
    let urls = vec![
        net.release_url("hostos-a.tar.zst"),
        net.release_url("hostos-b.tar.zst"),
    ];
    net.pass_proposal(Proposal::ElectHostosVersion {
        version: "h2".into(),
        urls: urls.clone(),
        sha256: sha.clone(),
    });
    net.pass_proposal(Proposal::DeployHostosToNodes {
        nodes: vec![net.node_id.clone()],
        version: "h2".into(),
    });
    let host = FakeHost {
        version: Arc::new(Mutex::new("h1".into())),
        refuse_first: true,
        ..FakeHost::default()
    };
    let mut orch = net.orchestrator("v1", None, Some(host.clone()));
    orch.start().unwrap();
    assert_eq!(orch.pass().await.unwrap(), Outcome::UpToDate);
    let asked = host.upgrades.lock().unwrap().clone();
    let expected =
        icos_registry::client::rotated(&urls, icos_orchestrator::target::seed_of(&net.node_id));
    assert_eq!(
        asked,
        expected
            .iter()
            .map(|u| (u.to_string(), sha.clone()))
            .collect::<Vec<_>>(),
        "the first URL was refused, the second accepted"
    );
    let hs = &orch.status().hostos;
    assert_eq!(hs.running.as_deref(), Some("h1"));
    assert_eq!(hs.target.as_deref(), Some("h2"));
    assert!(
        hs.last_result
            .as_deref()
            .unwrap_or_default()
            .contains("accepted the upgrade to h2"),
        "{hs:?}"
    );

    // Once HostOS runs h2 nothing more is asked.
    *host.version.lock().unwrap() = "h2".into();
    host.upgrades.lock().unwrap().clear();
    assert_eq!(orch.pass().await.unwrap(), Outcome::UpToDate);
    assert!(host.upgrades.lock().unwrap().is_empty());
    assert_eq!(orch.status().hostos.target, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reboot_request_is_repeated_without_installing_again() {
    let net = network().await;
    let (v2, _, _) = update_image("v2", 20);
    net.elect("v2", "v2.tar.zst", &v2, None);
    net.deploy("v2");
    net.reboots.1.store(true, Ordering::SeqCst);
    let mut orch = net.orchestrator("v1", None, None);
    orch.start().unwrap();
    let err = orch.pass().await.unwrap_err();
    assert!(matches!(err, Error::Reboot(_)), "{err}");
    let State::Backoff { phase, .. } = orch.state() else {
        panic!("{}", orch.state())
    };
    assert_eq!(phase, "reboot_pending");
    assert_eq!(
        boot_state(&net.disk),
        BootState::new(Slot::B, BootCycle::FirstBoot)
    );
    let committed = file_sha(&net.disk);

    // The next pass sees the commit on disk and only asks for the reboot.
    net.reboots.1.store(false, Ordering::SeqCst);
    assert_eq!(
        orch.pass().await.unwrap(),
        Outcome::RebootRequested("slot B".into())
    );
    assert_eq!(net.reboots.0.load(Ordering::SeqCst), 1);
    assert_eq!(file_sha(&net.disk), committed, "installed twice");
    assert_eq!(orch.state().name(), "reboot_pending");
}

/// A version that boots but never confirms: GRUB goes back to the old
/// slot at the next boot, the old version's orchestrator finds the
/// rollback, remembers it, does not install that package again, and
/// follows the registry as soon as it names another version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_never_confirms_is_rolled_back_and_not_installed_again() {
    let net = network().await;
    let mut orch = net.orchestrator("v1", None, None);
    orch.start().unwrap();
    let (v2, _, _) = update_image("v2", 20);
    net.elect("v2", "v2.tar.zst", &v2, None);
    net.deploy("v2");
    assert_eq!(
        orch.pass().await.unwrap(),
        Outcome::RebootRequested("v2".into())
    );
    let record = net.tmp.path().join("datastore").join(ATTEMPT_FILE);
    let attempt: serde_json::Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    assert_eq!(attempt["version"], "v2");
    assert_eq!(attempt["slot"], "B");
    assert_eq!(attempt["committed"], true);

    // v2 boots on trial and dies before its orchestrator confirms; the
    // next boot rolls back.
    grub_boot(&net.disk);
    grub_boot(&net.disk);
    assert_eq!(
        boot_state(&net.disk),
        BootState::new(Slot::A, BootCycle::Stable)
    );

    let mut back = net.orchestrator("v1", None, None);
    back.start().unwrap();
    assert!(!record.exists(), "the attempt is judged and cleared");
    let failed = &back.status().failed_upgrades;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        (failed[0].version.as_str(), failed[0].slot),
        ("v2", Slot::B)
    );
    assert!(
        back.status()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("did not confirm its boot")),
        "{:?}",
        back.status().last_error
    );
    let before = file_sha(&net.disk);
    assert_eq!(
        back.pass().await.unwrap(),
        Outcome::NotRetrying("v2".into())
    );
    assert_eq!(back.state(), &State::Idle);
    assert!(
        back.status()
            .not_retrying
            .as_deref()
            .is_some_and(|w| w.contains("not installing v2 again")),
        "{:?}",
        back.status().not_retrying
    );
    assert_eq!(file_sha(&net.disk), before, "nothing written");
    assert_eq!(net.reboots.0.load(Ordering::SeqCst), 1);

    // Remembered across restarts.
    let mut restarted = net.orchestrator("v1", None, None);
    restarted.start().unwrap();
    assert_eq!(
        restarted.pass().await.unwrap(),
        Outcome::NotRetrying("v2".into())
    );

    // Governance names a fixed v3: the node follows.
    let (v3, boot, _) = update_image("v3", 30);
    net.elect("v3", "v3.tar.zst", &v3, None);
    net.deploy("v3");
    assert_eq!(
        restarted.pass().await.unwrap(),
        Outcome::RebootRequested("v3".into())
    );
    assert_eq!(restarted.status().not_retrying, None);
    assert_eq!(net.slot_bytes("B_boot", boot.len()), boot);
    grub_boot(&net.disk);
    let mut v3_orch = net.orchestrator("v3", None, None);
    v3_orch.start().unwrap();
    assert_eq!(
        boot_state(&net.disk),
        BootState::new(Slot::B, BootCycle::Stable)
    );
    assert!(!record.exists());
    assert_eq!(v3_orch.status().failed_upgrades.len(), 1);
}
