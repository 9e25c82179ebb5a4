//! HostOS installing its own upgrade: the agent over a Unix socket, an HTTP
//! server with the image, HostOS's slots as files (a FAT grub partition made
//! by `mkfs.vfat` and six volume files), a recording reboot; and the boot
//! confirmation with a scripted guest probe.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::cell::Cell;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use icos_grubenv::{BootCycle, BootState, GrubEnv, Slot};
use icos_vsock::client;
use icos_vsock::hostos_upgrade::{
    CommandReboot, ConfirmOutcome, GuestProbe, HostSlots, HostUpgradeError, Phase, Reboot,
    Upgrader, confirm_when_guest_runs,
};
use icos_vsock::protocol::{Command, Payload, UpgradeData};
use icos_vsock::server::{Agent, AgentConfig};
use icos_vsock::transport::{Endpoint, UnixTransport};
use sha2::{Digest, Sha256};

const CID: u32 = 3;
const T: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;
const VOLUMES: [(&str, u64); 6] = [
    ("A_boot", 3),
    ("A_root", 6),
    ("A_var", 18),
    ("B_boot", 3),
    ("B_root", 6),
    ("B_var", 18),
];

/// Counts reboot requests instead of rebooting.
#[derive(Debug, Default)]
struct RecordingReboot(Arc<AtomicUsize>);

impl Reboot for RecordingReboot {
    fn reboot(&self) -> Result<(), String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A file-system-like image: ext4 magic at 1080, varied bytes.
fn fs_image(len: u64, seed: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| u8::try_from((i * 7 + u64::from(seed)) % 251).unwrap())
        .collect();
    v[1080] = 0x53;
    v[1081] = 0xEF;
    v
}

fn update_image(version: &str, boot: &[u8], root: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("VERSION.TXT", format!("{version}\n").as_bytes()),
        ("boot.img", boot),
        ("root.img", root),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
}

/// Serves `body` at /image (after `delay`) and counts the requests.
fn http_server(body: Vec<u8>, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            std::thread::sleep(delay);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    (format!("http://{addr}/image"), hits)
}

struct Host {
    dir: tempfile::TempDir,
    slots: HostSlots,
}

impl Host {
    /// Slot A holds file systems; grubenv holds `state`.
    fn new(state: BootState) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let tools = icos_imagefs::Tools::discover().unwrap();
        let mut env = GrubEnv::new();
        state.write_to_env(&mut env).unwrap();
        let env_file = dir.path().join("grubenv");
        fs::write(&env_file, env.to_bytes().unwrap()).unwrap();
        let grub = dir.path().join("grub");
        icos_imagefs::make_vfat(
            &tools,
            &icos_imagefs::VfatSpec {
                size_bytes: 2 * MIB,
                label: "GRUB".into(),
                volume_id: 0x0bad_cafe,
                epoch: 1_700_000_000,
            },
            &[("grubenv".into(), env_file)],
            &grub,
        )
        .unwrap();
        let volumes = dir.path().join("hostlvm");
        fs::create_dir(&volumes).unwrap();
        for (name, mib) in VOLUMES {
            fs::File::create(volumes.join(name))
                .unwrap()
                .set_len(mib * MIB)
                .unwrap();
        }
        let host = Host {
            slots: HostSlots { grub, volumes },
            dir,
        };
        write_start(&host.vol("A_boot"), &fs_image(2 * MIB, 1));
        write_start(&host.vol("A_root"), &fs_image(5 * MIB, 2));
        fs::write(host.path("version.txt"), "v1\n").unwrap();
        host
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn vol(&self, name: &str) -> PathBuf {
        self.slots.volumes.join(name)
    }

    fn state(&self) -> String {
        let st = self.slots.open(false).unwrap().status().unwrap();
        format!("{} {}", st.boot_alternative, st.boot_cycle)
    }

    fn upgrader(&self, reboot: Box<dyn Reboot>) -> Arc<Upgrader> {
        Arc::new(Upgrader::new(
            self.slots.clone(),
            self.path("version.txt"),
            reboot,
        ))
    }

    /// An agent with `upgrader` on a Unix socket.
    fn agent(&self, upgrader: &Arc<Upgrader>) -> Endpoint {
        let p = |n: &str| self.path(n);
        fs::write(p("tty"), "").unwrap();
        let config = AgentConfig {
            version_file: p("version.txt"),
            node_id_file: p("node-id"),
            tty: p("tty"),
            upgrade_dir: p("upgrade"),
            download_timeout: Duration::from_secs(10),
            ..AgentConfig::default()
        };
        let agent = Arc::new(
            Agent::new(config)
                .with_upgrader(Arc::clone(upgrader))
                .with_guest_seen_file(p("run/guest-seen")),
        );
        let socket = p("vsock.sock_19090");
        let listener = UnixTransport::bind(&socket, CID).unwrap();
        std::thread::spawn(move || agent.serve(&listener));
        Endpoint::Unix(socket)
    }
}

fn write_start(path: &Path, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn upgrade(endpoint: &Endpoint, url: &str, image: &[u8]) -> Result<Payload, String> {
    let hash = hex::encode(Sha256::digest(image));
    client::send(
        endpoint,
        CID,
        Command::Upgrade(UpgradeData {
            url: url.into(),
            target_hash: hash,
        }),
        T,
    )
    .unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn upgrade_installs_into_the_spare_slot_commits_and_reboots() {
    let host = Host::new(BootState::new(Slot::A, BootCycle::Stable));
    let reboots = Arc::new(AtomicUsize::new(0));
    let upgrader = host.upgrader(Box::new(RecordingReboot(Arc::clone(&reboots))));
    let endpoint = host.agent(&upgrader);

    // The guest's first request is noted for the boot confirmation.
    assert!(!host.path("run/guest-seen").exists());
    assert_eq!(
        client::send(&endpoint, CID, Command::GetHostOSVersion, T).unwrap(),
        Ok(Payload::HostOSVersion("v1".into()))
    );
    let seen = fs::read_to_string(host.path("run/guest-seen")).unwrap();
    assert!(
        seen.contains("cid=3") && seen.contains("GetHostOSVersion"),
        "{seen}"
    );

    let boot = fs_image(2 * MIB + 4096, 3);
    let root = fs_image(6 * MIB, 4);
    let image = update_image("v2", &boot, &root);
    let (url, _) = http_server(image.clone(), Duration::ZERO);
    assert_eq!(upgrade(&endpoint, &url, &image), Ok(Payload::NoPayload));
    assert_eq!(
        upgrader.wait_settled(T),
        Phase::Rebooting {
            version: "v2".into(),
            slot: "B".into()
        }
    );
    assert_eq!(reboots.load(Ordering::SeqCst), 1);
    assert_eq!(host.state(), "B first_boot");
    assert_eq!(fs::read(host.vol("B_root")).unwrap(), root);
    assert_eq!(
        fs::read(host.vol("B_boot")).unwrap()[..boot.len()],
        boot[..]
    );
    assert_eq!(
        fs::read(host.vol("A_root")).unwrap()[..5 * 1024 * 1024],
        fs_image(5 * MIB, 2)[..]
    );
    // The image is gone from the (tmpfs) upgrade directory.
    assert!(listing(&host.path("upgrade")).is_empty());

    // Committed: nothing more until the reboot.
    let err = upgrade(&endpoint, &url, &image).unwrap_err();
    assert!(
        err.contains("refused") && err.contains("rebooting"),
        "{err}"
    );
    assert_eq!(reboots.load(Ordering::SeqCst), 1);
}

#[test]
fn upgrade_is_refused_unless_stable_without_downloading() {
    for (state, want) in [
        (
            BootState::new(Slot::B, BootCycle::FirstBoot),
            "waits for the reboot",
        ),
        (
            BootState::new(Slot::B, BootCycle::FailsafeCheck),
            "on trial and not confirmed",
        ),
    ] {
        let host = Host::new(state);
        let reboots = Arc::new(AtomicUsize::new(0));
        let upgrader = host.upgrader(Box::new(RecordingReboot(Arc::clone(&reboots))));
        let endpoint = host.agent(&upgrader);
        let image = update_image("v2", &fs_image(MIB, 3), &fs_image(MIB, 4));
        let (url, hits) = http_server(image.clone(), Duration::ZERO);
        let err = upgrade(&endpoint, &url, &image).unwrap_err();
        assert!(err.contains("not stable") && err.contains(want), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        assert_eq!(upgrader.phase(), Phase::Idle);
        assert_eq!(reboots.load(Ordering::SeqCst), 0);
        assert_eq!(host.state(), format!("B {}", state.cycle));
    }
}

#[test]
fn the_running_version_and_bad_images_are_refused_then_a_good_one_installs() {
    let host = Host::new(BootState::new(Slot::A, BootCycle::Stable));
    let reboots = Arc::new(AtomicUsize::new(0));
    let upgrader = host.upgrader(Box::new(RecordingReboot(Arc::clone(&reboots))));
    let endpoint = host.agent(&upgrader);

    // The version running.
    let same = update_image("v1", &fs_image(MIB, 3), &fs_image(MIB, 4));
    let (url, _) = http_server(same.clone(), Duration::ZERO);
    let err = upgrade(&endpoint, &url, &same).unwrap_err();
    assert!(err.contains("v1, which is already running"), "{err}");
    assert!(listing(&host.path("upgrade")).is_empty());
    assert_eq!(host.state(), "A stable");

    // A wrong hash.
    let image = update_image("v2", &fs_image(MIB, 3), &fs_image(MIB, 4));
    let (url, _) = http_server(image.clone(), Duration::ZERO);
    let err = upgrade(&endpoint, &url, &same).unwrap_err();
    assert!(err.contains("SHA-256"), "{err}");
    assert_eq!(upgrader.phase(), Phase::Idle);

    // No running version to compare with: refused, image removed.
    fs::remove_file(host.path("version.txt")).unwrap();
    let err = upgrade(&endpoint, &url, &image).unwrap_err();
    assert!(err.contains("version.txt"), "{err}");
    assert!(listing(&host.path("upgrade")).is_empty());
    fs::write(host.path("version.txt"), "v1\n").unwrap();

    // An archive without VERSION.TXT.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "boot.img", &b"boot"[..]).unwrap();
    let bare = b.into_inner().unwrap();
    let (bare_url, _) = http_server(bare.clone(), Duration::ZERO);
    let err = upgrade(&endpoint, &bare_url, &bare).unwrap_err();
    assert!(err.contains("VERSION.TXT"), "{err}");
    assert_eq!(host.state(), "A stable");

    // root.img larger than B_root: accepted (the install is under way when
    // the answer goes out), then fails; nothing is committed or rebooted.
    let big = update_image("v3", &fs_image(MIB, 3), &fs_image(7 * MIB, 4));
    let (url, _) = http_server(big.clone(), Duration::ZERO);
    assert_eq!(upgrade(&endpoint, &url, &big), Ok(Payload::NoPayload));
    match upgrader.wait_settled(T) {
        Phase::Failed { error } => assert!(error.contains("B_root"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(reboots.load(Ordering::SeqCst), 0);
    assert_eq!(host.state(), "A stable");
    assert!(listing(&host.path("upgrade")).is_empty());

    // After all that, a good image installs.
    let (url, _) = http_server(image.clone(), Duration::ZERO);
    assert_eq!(upgrade(&endpoint, &url, &image), Ok(Payload::NoPayload));
    assert!(matches!(upgrader.wait_settled(T), Phase::Rebooting { .. }));
    assert_eq!(reboots.load(Ordering::SeqCst), 1);
    assert_eq!(host.state(), "B first_boot");
}

#[test]
fn two_upgrades_never_run_at_once() {
    let host = Host::new(BootState::new(Slot::A, BootCycle::Stable));
    let reboots = Arc::new(AtomicUsize::new(0));
    let upgrader = host.upgrader(Box::new(RecordingReboot(Arc::clone(&reboots))));
    let endpoint = host.agent(&upgrader);
    let image = update_image("v2", &fs_image(MIB, 3), &fs_image(MIB, 4));
    let (url, hits) = http_server(image.clone(), Duration::from_millis(1500));
    let first = {
        let (endpoint, url, image) = (endpoint.clone(), url.clone(), image.clone());
        std::thread::spawn(move || upgrade(&endpoint, &url, &image))
    };
    while hits.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = upgrade(&endpoint, &url, &image).unwrap_err();
    assert!(
        err.starts_with("busy: a HostOS upgrade is already under way"),
        "{err}"
    );
    assert_eq!(first.join().unwrap(), Ok(Payload::NoPayload));
    assert!(matches!(upgrader.wait_settled(T), Phase::Rebooting { .. }));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(reboots.load(Ordering::SeqCst), 1);
}

#[test]
fn a_failed_reboot_is_reported_and_the_commit_stands() {
    let host = Host::new(BootState::new(Slot::A, BootCycle::Stable));
    let upgrader = host.upgrader(Box::new(CommandReboot {
        argv: vec!["false".into()],
    }));
    let endpoint = host.agent(&upgrader);
    let image = update_image("v2", &fs_image(MIB, 3), &fs_image(MIB, 4));
    let (url, _) = http_server(image.clone(), Duration::ZERO);
    assert_eq!(upgrade(&endpoint, &url, &image), Ok(Payload::NoPayload));
    match upgrader.wait_settled(T) {
        Phase::Failed { error } => {
            assert!(
                error.contains("committed to slot B") && error.contains("false failed"),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(host.state(), "B first_boot");
    // grubenv still refuses another install.
    let err = upgrade(&endpoint, &url, &image).unwrap_err();
    assert!(err.contains("waits for the reboot"), "{err}");
}

/// Says "not running" `misses` times, then "running"; counts the looks.
struct ScriptedGuest {
    misses: usize,
    looks: Cell<usize>,
}

impl GuestProbe for ScriptedGuest {
    fn running(&self) -> Result<(), String> {
        let n = self.looks.get();
        self.looks.set(n + 1);
        if n < self.misses {
            Err("guestos.service is not active".into())
        } else {
            Ok(())
        }
    }
}

const POLL: Duration = Duration::from_millis(5);

#[test]
fn the_trial_boot_is_confirmed_once_the_guest_runs() {
    for cycle in [BootCycle::FailsafeCheck, BootCycle::Install] {
        let host = Host::new(BootState::new(Slot::B, cycle));
        let guest = ScriptedGuest {
            misses: 3,
            looks: Cell::new(0),
        };
        match confirm_when_guest_runs(&host.slots, &guest, T, POLL).unwrap() {
            ConfirmOutcome::Confirmed(r) => {
                assert_eq!(r.slot, "B");
                assert!(r.changed);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(guest.looks.get(), 4);
        assert_eq!(host.state(), "B stable");
    }
}

#[test]
fn a_stable_boot_is_left_alone_and_first_boot_is_refused() {
    let host = Host::new(BootState::new(Slot::A, BootCycle::Stable));
    let guest = ScriptedGuest {
        misses: usize::MAX,
        looks: Cell::new(0),
    };
    assert_eq!(
        confirm_when_guest_runs(&host.slots, &guest, T, POLL).unwrap(),
        ConfirmOutcome::AlreadyStable { slot: "A".into() }
    );
    assert_eq!(guest.looks.get(), 0);

    let host = Host::new(BootState::new(Slot::B, BootCycle::FirstBoot));
    let err = confirm_when_guest_runs(&host.slots, &guest, T, POLL).unwrap_err();
    assert!(matches!(err, HostUpgradeError::Slots(_)), "{err}");
    assert_eq!(guest.looks.get(), 0);
    assert_eq!(host.state(), "B first_boot");
}

#[test]
fn without_the_guest_the_boot_stays_unconfirmed() {
    let host = Host::new(BootState::new(Slot::B, BootCycle::FailsafeCheck));
    let guest = ScriptedGuest {
        misses: usize::MAX,
        looks: Cell::new(0),
    };
    let err =
        confirm_when_guest_runs(&host.slots, &guest, Duration::from_millis(100), POLL).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("guestos.service is not active") && msg.contains("rolls back"),
        "{msg}"
    );
    assert!(guest.looks.get() >= 2);
    assert_eq!(host.state(), "B failsafe_check");
    // Missing slots are named, not waited for.
    fs::remove_file(host.vol("A_var")).unwrap();
    let err = confirm_when_guest_runs(&host.slots, &guest, T, POLL).unwrap_err();
    assert!(err.to_string().contains("A_var"), "{err}");
}
