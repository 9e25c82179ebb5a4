#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

const CONFIG: &str = include_str!("../../icos-config/tests/fixtures/hostos_v1.17.0.json");

/// The HostOS config fixture with `ipv6_config` replaced and the
/// management MAC of icos-anatomy's worked example.
fn config(ipv6: Value) -> HostOSConfig {
    let mut v: Value = serde_json::from_str(CONFIG).unwrap();
    v["network_settings"]["ipv6_config"] = ipv6;
    v["icos_settings"]["mgmt_mac"] = json!("b0:7b:25:c8:f6:c0");
    icos_config::from_json_value(&v).unwrap()
}

fn deterministic() -> HostOSConfig {
    config(json!({"Deterministic": {
        "prefix": "2602:FFE4:801:17",
        "prefix_length": 64,
        "gateway": "2602:ffe4:801:17::1"
    }}))
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{} differs", path.display());
}

fn p() -> &'static Path {
    Path::new("/boot/config/config.json")
}

#[test]
fn the_deterministic_address_is_the_hostos_one_of_the_management_mac() {
    let plan = plan(p(), &deterministic()).unwrap();
    // HostOS's MAC starts 6a:00 (node type 0, slot 0), GuestOS's 6a:01; the
    // rest is the same hash of MAC and environment.
    assert_eq!(format_mac(&plan.mac), "6a:00:00:ec:bd:51");
    assert_eq!(
        plan.addressing,
        Addressing::Static {
            address: "2602:ffe4:801:17:6800:ff:feec:bd51".parse().unwrap(),
            prefix_length: 64,
            gateway: "2602:ffe4:801:17::1".parse().unwrap(),
        }
    );
    let guest = icos_deterministic_ips::deterministic_ipv6(
        &"b0:7b:25:c8:f6:c0".parse().unwrap(),
        "mainnet",
        NodeType::GuestOS,
        0,
        "2602:FFE4:801:17",
    )
    .unwrap();
    assert_eq!(guest.to_string(), "2602:ffe4:801:17:6801:ff:feec:bd51");
}

#[test]
fn networkd_files_for_a_deterministic_address() {
    let plan = plan(p(), &deterministic()).unwrap();
    let files = render(&plan, "enp65s0f1");
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["20-enp65s0f1.network", "20-br6.netdev", "20-br6.network"]
    );
    for f in &files {
        golden(&format!("deterministic-{}", f.name), &f.text);
    }
}

#[test]
fn networkd_files_for_a_fixed_address_and_for_router_advertisements() {
    let fixed = config(json!({"Fixed": {
        "address": "2a00:fb01:400:200::5/56",
        "gateway": "2a00:fb01:400:200::1"
    }}));
    let plan_fixed = plan(p(), &fixed).unwrap();
    let bridge = &render(&plan_fixed, "eno1")[2];
    golden("fixed-20-br6.network", &bridge.text);
    let ra = plan(p(), &config(json!("RouterAdvertisement"))).unwrap();
    assert_eq!(ra.addressing, Addressing::RouterAdvertisement);
    golden("ra-20-br6.network", &render(&ra, "eno1")[2].text);
}

#[test]
fn bad_address_settings_name_the_file_and_field() {
    let cases = [
        (
            json!({"Fixed": {"address": "2a00::1/129", "gateway": "2a00::1"}}),
            "network_settings.ipv6_config.Fixed.address",
        ),
        (
            json!({"Fixed": {"address": "not-an-address", "gateway": "2a00::1"}}),
            "network_settings.ipv6_config.Fixed.address",
        ),
        (
            json!({"Deterministic": {"prefix": "2a00:1:2:3:4", "prefix_length": 64, "gateway": "2a00::1"}}),
            "network_settings.ipv6_config.Deterministic.prefix",
        ),
    ];
    for (ipv6, field) in cases {
        let err = plan(p(), &config(ipv6.clone())).unwrap_err().to_string();
        assert!(
            err.starts_with("/boot/config/config.json: ") && err.contains(field),
            "{ipv6}: {err}"
        );
    }
}

fn nic(name: &str, carrier: bool, speed: Option<u32>) -> Nic {
    Nic {
        name: name.into(),
        carrier,
        speed_mbps: speed,
    }
}

#[test]
fn candidates_are_linked_eno_enp_ens_fastest_first() {
    let nics = [
        nic("lo", true, None),
        nic("enx0a1b2c3d4e5f", true, Some(100_000)),
        nic("br6", true, None),
        nic("eno1", true, Some(1000)),
        nic("enp65s0f0", false, Some(10_000)),
        nic("enp65s0f1", true, Some(10_000)),
        nic("ens3", true, None),
        nic("eno2", true, Some(1000)),
        nic("wlan0", true, Some(300)),
    ];
    let names: Vec<&str> = order(&nics).iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["enp65s0f1", "eno1", "eno2", "ens3"]);
    assert!(order(&[]).is_empty());
}

/// A machine made of maps: interface name -> (carrier, speed, answers).
#[derive(Default)]
struct FakeHost {
    nics: BTreeMap<String, (bool, Option<u32>, bool)>,
    up: Vec<String>,
    pinged: Vec<(String, Ipv6Addr)>,
}

impl FakeHost {
    fn with(mut self, name: &str, carrier: bool, speed: Option<u32>, answers: bool) -> Self {
        self.nics.insert(name.into(), (carrier, speed, answers));
        self
    }
}

impl Host for FakeHost {
    fn interfaces(&mut self) -> Result<Vec<String>> {
        Ok(self.nics.keys().cloned().collect())
    }
    fn link_up(&mut self, nic: &str) -> Result<()> {
        self.up.push(nic.into());
        Ok(())
    }
    fn carrier(&mut self, nic: &str) -> bool {
        self.up.iter().any(|n| n == nic) && self.nics[nic].0
    }
    fn speed(&mut self, nic: &str) -> Option<u32> {
        self.nics[nic].1
    }
    fn reaches_gateway(
        &mut self,
        nic: &str,
        address: Ipv6Addr,
        _prefix_length: u8,
        _gateway: Ipv6Addr,
    ) -> Result<bool> {
        self.pinged.push((nic.into(), address));
        Ok(self.nics[nic].2)
    }
}

#[test]
fn the_first_nic_that_reaches_the_gateway_is_chosen() {
    let plan = plan(p(), &deterministic()).unwrap();
    let mut host = FakeHost::default()
        .with("lo", true, None, false)
        .with("eno1", true, Some(1000), true)
        .with("enp65s0f0", true, Some(10_000), false)
        .with("enp65s0f1", false, Some(10_000), true);
    let choice = choose(&mut host, &plan).unwrap();
    assert_eq!(choice.nic, "eno1");
    assert!(choice.reached_gateway);
    assert_eq!(choice.tried, ["enp65s0f0", "eno1"]);
    // Only candidates are brought up, every one of them.
    assert_eq!(host.up, ["eno1", "enp65s0f0", "enp65s0f1"]);
    let Addressing::Static { address, .. } = plan.addressing else {
        panic!("static")
    };
    assert!(host.pinged.iter().all(|(_, a)| *a == address));
}

#[test]
fn without_an_answer_the_fastest_linked_nic_is_used() {
    let plan = plan(p(), &deterministic()).unwrap();
    let mut host = FakeHost::default()
        .with("eno1", true, Some(1000), false)
        .with("enp1s0", true, Some(25_000), false);
    let choice = choose(&mut host, &plan).unwrap();
    assert_eq!(choice.nic, "enp1s0");
    assert!(!choice.reached_gateway);
    assert_eq!(choice.tried, ["enp1s0", "eno1"]);
}

#[test]
fn router_advertisements_take_the_fastest_linked_nic_without_pinging() {
    let plan = plan(p(), &config(json!("RouterAdvertisement"))).unwrap();
    let mut host = FakeHost::default()
        .with("eno1", true, Some(1000), true)
        .with("eno2", true, Some(1000), true);
    let choice = choose(&mut host, &plan).unwrap();
    assert_eq!(choice.nic, "eno1");
    assert!(host.pinged.is_empty());
    assert!(choice.tried.is_empty());
}

#[test]
fn no_linked_candidate_is_an_error_listing_what_was_there() {
    let plan = plan(p(), &deterministic()).unwrap();
    let mut host =
        FakeHost::default()
            .with("lo", true, None, true)
            .with("eno1", false, Some(1000), true);
    let err = choose(&mut host, &plan).unwrap_err().to_string();
    assert!(
        err.contains("no Ethernet NIC") && err.contains("eno1") && err.contains("lo"),
        "{err}"
    );
}

#[test]
fn files_are_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run/systemd/network");
    let plan = plan(p(), &deterministic()).unwrap();
    let files = render(&plan, "ens3");
    let written = write(&out, &files).unwrap();
    assert_eq!(written.len(), 3);
    for (path, f) in written.iter().zip(&files) {
        assert_eq!(std::fs::read_to_string(path).unwrap(), f.text);
    }
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["20-br6.netdev", "20-br6.network", "20-ens3.network"]
    );
}

#[test]
fn the_system_host_reads_names_carrier_and_speed_from_sysfs() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path();
    for (name, carrier, speed) in [
        ("lo", Some("1"), None),
        ("enp1s0", Some("1\n"), Some("10000\n")),
        ("eno1", Some("0\n"), Some("-1\n")),
        ("eno2", None, None),
    ] {
        std::fs::create_dir(net.join(name)).unwrap();
        if let Some(c) = carrier {
            std::fs::write(net.join(name).join("carrier"), c).unwrap();
        }
        if let Some(s) = speed {
            std::fs::write(net.join(name).join("speed"), s).unwrap();
        }
    }
    let mut host = SystemHost::new(net).with_waits(Duration::ZERO, Duration::ZERO);
    assert_eq!(host.interfaces().unwrap(), ["eno1", "eno2", "enp1s0", "lo"]);
    assert!(host.carrier("enp1s0"));
    assert!(!host.carrier("eno1"));
    assert!(!host.carrier("eno2"));
    assert_eq!(host.speed("enp1s0"), Some(10_000));
    assert_eq!(host.speed("eno1"), None);
    assert_eq!(host.speed("eno2"), None);
    let missing = SystemHost::new(net.join("absent"))
        .interfaces()
        .unwrap_err();
    assert!(missing.to_string().contains("absent"), "{missing}");
}

#[test]
fn a_nic_to_bridge_gets_no_ipv6_autoconfiguration() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(conf.join("enp1s0")).unwrap();
    for key in ["accept_ra", "autoconf"] {
        std::fs::write(conf.join("enp1s0").join(key), "1\n").unwrap();
    }
    let host = SystemHost::new(dir.path().join("net")).with_ipv6_conf(&conf);
    host.no_autoconf("enp1s0");
    for key in ["accept_ra", "autoconf"] {
        let v = std::fs::read_to_string(conf.join("enp1s0").join(key)).unwrap();
        assert_eq!(v.trim(), "0", "{key}");
    }
    // A kernel without IPv6 settings for the NIC: logged, not fatal.
    host.no_autoconf("eno9");
}
