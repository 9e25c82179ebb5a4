//! Compatibility with every config version: IC's fixtures from 1.1.0 to
//! 1.17.0 and synthetic documents of a newer version load, validate and
//! survive a read and a write without losing anything.

// Helpers outside `#[test]` functions panic on purpose, like the tests.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use icos_config::{
    AnyConfig, CONFIG_VERSION, ConfigDocument, ConfigKind, GuestOSConfig, GuestOsOptions,
    GuestVmType, HostOSConfig, Ipv6Config, SetupOSConfig, VmResourcesSource, check_file,
    from_json_str, generate_guestos_config, generate_hostos_config, load, load_any, parse_any,
    to_json_pretty,
};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> PathBuf {
    fixture_dir().join(name)
}

/// Every JSON fixture with the kind it must be detected as.
fn all_fixtures() -> Vec<(PathBuf, ConfigKind)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let kind = if name.contains("setupos") {
            ConfigKind::SetupOS
        } else if name.contains("hostos") {
            ConfigKind::HostOS
        } else if name.contains("guestos") {
            ConfigKind::GuestOS
        } else {
            panic!("fixture {name} does not name its kind");
        };
        found.push((path, kind));
    }
    found.sort();
    found
}

const IC_FIXTURES: [&str; 10] = [
    "guestos_v1.4.0.json",
    "guestos_v1.8.0.json",
    "guestos_v1.12.0.json",
    "guestos_v1.14.0.json",
    "guestos_v1.17.0.json",
    "hostos_v1.1.0.json",
    "hostos_v1.6.0.json",
    "hostos_v1.12.0.json",
    "hostos_v1.14.0.json",
    "hostos_v1.17.0.json",
];

/// Asserts that every path of `original` is in `written` with the same value.
fn assert_nothing_lost(original: &Value, written: &Value, path: &str, file: &Path) {
    match (original, written) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let sub = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let Some(other) = b.get(key) else {
                    panic!("{}: {sub} was lost", file.display());
                };
                assert_nothing_lost(value, other, &sub, file);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(
                a.len(),
                b.len(),
                "{}: {path} changed length",
                file.display()
            );
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_nothing_lost(x, y, &format!("{path}[{i}]"), file);
            }
        }
        (a, b) => assert_eq!(a, b, "{}: {path} changed", file.display()),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn there_are_ten_ic_fixtures_and_the_synthetic_ones() {
    let names: Vec<String> = all_fixtures()
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in IC_FIXTURES {
        assert!(names.iter().any(|n| n == name), "missing fixture {name}");
    }
    assert_eq!(names.len(), 13, "{names:?}");
}

#[test]
fn every_fixture_loads_with_the_right_kind_and_validates() {
    for (path, kind) in all_fixtures() {
        let config = load_any(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.kind(), kind, "{}", path.display());
        let problems = config.validate();
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());
        let checked = check_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(checked, config);
    }
}

#[test]
fn every_fixture_round_trips_without_losing_anything() {
    for (path, _) in all_fixtures() {
        let text = read(&path);
        let original: Value = serde_json::from_str(&text).unwrap();
        let config = parse_any(&text).unwrap();
        let written: Value = serde_json::from_str(&config.to_json_pretty().unwrap()).unwrap();
        assert_nothing_lost(&original, &written, "", &path);
        assert_eq!(config.to_value().unwrap(), written);
    }
}

#[test]
fn writing_again_changes_nothing() {
    for (path, _) in all_fixtures() {
        let once = parse_any(&read(&path)).unwrap().to_json_pretty().unwrap();
        let again = parse_any(&once).unwrap();
        assert_eq!(again.to_json_pretty().unwrap(), once, "{}", path.display());
        assert_eq!(again, parse_any(&read(&path)).unwrap());
    }
}

#[test]
fn current_version_fixtures_are_written_back_byte_for_byte() {
    for name in [
        "guestos_v1.17.0.json",
        "hostos_v1.17.0.json",
        "setupos_v1.17.0.json",
    ] {
        let text = read(&fixture(name));
        assert_eq!(
            parse_any(&text).unwrap().to_json_pretty().unwrap(),
            text,
            "{name}"
        );
    }
}

#[test]
fn typed_loading_matches_detection() {
    let guest: GuestOSConfig = load(&fixture("guestos_v1.17.0.json")).unwrap();
    assert_eq!(guest.config_version(), "1.17.0");
    assert_eq!(guest.guest_vm_type, GuestVmType::Default);
    let host: HostOSConfig = load(&fixture("hostos_v1.14.0.json")).unwrap();
    assert_eq!(host.hostos_settings.vm_resources().nr_of_vcpus, 64);
    let setup: SetupOSConfig = load(&fixture("setupos_v1.17.0.json")).unwrap();
    assert!(setup.setupos_settings.extra.is_empty());
    // A GuestOS document is not a HostOS config.
    let err = load::<HostOSConfig>(&fixture("guestos_v1.17.0.json")).unwrap_err();
    let problems = err.problems().unwrap();
    assert_eq!(problems.problems[0].path, "hostos_settings");
    assert!(
        err.to_string()
            .contains("guestos_v1.17.0.json: hostos_settings: missing field")
    );
}

#[test]
fn removed_fields_are_kept() {
    let AnyConfig::GuestOS(old) = load_any(&fixture("guestos_v1.4.0.json")).unwrap() else {
        panic!("not a GuestOS config");
    };
    let icos = &old.icos_settings.extra;
    assert!(icos["logging"].is_object());
    assert_eq!(icos["use_nns_public_key"], Value::Bool(false));
    assert_eq!(icos["use_node_operator_private_key"], Value::Bool(true));
    assert_eq!(
        old.guestos_settings.extra["inject_ic_crypto"],
        Value::Bool(false)
    );
    // The comma-joined URL of old versions is one (odd but valid) https URL.
    assert_eq!(old.icos_settings.nns_urls.len(), 1);
    assert_eq!(
        old.icos_settings.nns_urls[0].as_str(),
        "https://icp-api.io,https//icp0.io,https://ic0.app"
    );
}

#[test]
fn legacy_flat_vm_settings_are_understood_and_kept() {
    for name in ["hostos_v1.1.0.json", "hostos_v1.6.0.json"] {
        let host: HostOSConfig = load(&fixture(name)).unwrap();
        let settings = &host.hostos_settings;
        assert!(settings.hostos_dev_settings.is_none());
        assert!(settings.has_legacy_vm_fields());
        let resources = settings.vm_resources();
        assert_eq!(resources.source, VmResourcesSource::LegacyFlat);
        assert_eq!(resources.memory_gib, 4096);
        assert_eq!(resources.cpu, "kvm");
        assert_eq!(resources.nr_of_vcpus, 64);
        // Written back flat, without a nested member IC-OS did not write then.
        let written = serde_json::to_value(&host).unwrap();
        assert_eq!(written["hostos_settings"]["vm_memory"], 4096);
        assert!(
            written["hostos_settings"]
                .get("hostos_dev_settings")
                .is_none()
        );
    }
    let nested: HostOSConfig = load(&fixture("hostos_v1.12.0.json")).unwrap();
    let resources = nested.hostos_settings.vm_resources();
    assert_eq!(resources.source, VmResourcesSource::DevSettings);
    assert_eq!(resources.memory_gib, 16);
}

#[test]
fn a_future_guestos_config_keeps_everything() {
    let config: GuestOSConfig = load(&fixture("future_guestos_v1.99.0.json")).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    assert_eq!(
        config.guest_vm_type,
        GuestVmType::Unknown(Value::String("recovery".to_string()))
    );
    let Ipv6Config::Unknown(raw) = &config.network_settings.ipv6_config else {
        panic!("expected an unknown IPv6 variant");
    };
    assert_eq!(raw["Dhcp6"]["rapid_commit"], Value::Bool(true));
    assert_eq!(
        config.network_settings.ipv6_config.variant_name(),
        Some("Dhcp6")
    );
    assert!(config.extra.contains_key("attestation"));
    assert!(config.network_settings.extra.contains_key("mtu"));
    assert!(config.icos_settings.extra.contains_key("telemetry"));
    assert!(
        config
            .icos_settings
            .icos_dev_settings
            .extra
            .contains_key("serial_console")
    );
    assert!(
        config
            .guestos_settings
            .guestos_dev_settings
            .extra
            .contains_key("chaos_monkey")
    );
    assert!(
        config
            .upgrade_config
            .extra
            .contains_key("handover_timeout_seconds")
    );
    assert_eq!(
        config.recovery_config.as_ref().unwrap().extra["recovery_source"],
        "https://download.example.org/"
    );
    // Nothing else to check here: the generic round-trip tests cover the file.
}

#[test]
fn a_future_hostos_config_keeps_everything() {
    let config: HostOSConfig = load(&fixture("future_hostos_v1.99.0.json")).unwrap();
    assert!(config.validate().is_empty());
    assert_eq!(
        config.network_settings.ipv6_config,
        Ipv6Config::Unknown(Value::String("Slaac".to_string()))
    );
    let dev = config.hostos_settings.hostos_dev_settings.as_ref().unwrap();
    assert_eq!(dev.extra["vm_hugepages"], Value::Bool(true));
    assert_eq!(config.hostos_settings.extra["guest_vm_slots"], 2);
    assert_eq!(config.extra["setupos_version"], "2.0.0-rc1");
}

#[test]
fn a_newer_major_version_is_a_problem_but_still_loads() {
    let text = read(&fixture("hostos_v1.17.0.json")).replace("\"1.17.0\"", "\"2.0.0\"");
    let config = parse_any(&text).unwrap();
    let problems = config.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "config_version");
}

#[test]
fn check_file_reports_all_problems_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let text = read(&fixture("guestos_v1.17.0.json"))
        .replace("\"type3.1\"", "\"gen2\"")
        .replace("\"ic.test\"", "\"localhost\"")
        .replace("\"prefix_length\": 24", "\"prefix_length\": 40");
    std::fs::write(&path, text).unwrap();
    let err = check_file(&path).unwrap_err();
    assert!(err.is_invalid_input());
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    let file = path.display().to_string();
    assert!(lines[0].starts_with(&format!(
        "{file}: network_settings.ipv4_config.prefix_length: "
    )));
    assert!(lines[1].starts_with(&format!("{file}: network_settings.domain_name: ")));
    assert!(lines[2].starts_with(&format!("{file}: icos_settings.node_reward_type: ")));
}

#[test]
fn check_file_reports_unreadable_and_unrecognised_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let err = check_file(&missing).unwrap_err();
    assert!(!err.is_invalid_input());
    assert!(err.to_string().contains("missing.json"));

    let other = dir.path().join("other.json");
    std::fs::write(&other, r#"{"config_version": "1.17.0"}"#).unwrap();
    let err = check_file(&other).unwrap_err();
    assert!(err.is_invalid_input());
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot tell", other.display()))
    );

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\n  \"config_version\": \n").unwrap();
    let err = check_file(&broken).unwrap_err();
    assert!(err.to_string().contains("line 3"), "{err}");
}

#[test]
fn setupos_to_hostos_to_guestos() {
    let setup: SetupOSConfig = load(&fixture("setupos_v1.17.0.json")).unwrap();
    let host = generate_hostos_config(&setup);
    assert_eq!(host.config_version, CONFIG_VERSION);
    assert!(host.validate().is_empty());
    assert_eq!(host.network_settings, setup.network_settings);
    assert_eq!(host.icos_settings, setup.icos_settings);
    assert_eq!(host.hostos_settings, setup.hostos_settings);
    assert_eq!(host.guestos_settings, setup.guestos_settings);

    let guest =
        generate_guestos_config(&host, GuestVmType::Default, &GuestOsOptions::default()).unwrap();
    assert!(guest.validate().is_empty());
    let Ipv6Config::Fixed(fixed) = &guest.network_settings.ipv6_config else {
        panic!("expected a fixed address");
    };
    assert_eq!(fixed.address, "2602:ffe4:801:17:6801:ff:feec:bd51/64");
    assert_eq!(fixed.gateway.to_string(), "2602:ffe4:801:17::1");
    assert_eq!(
        guest
            .upgrade_config
            .peer_guest_vm_address
            .unwrap()
            .to_string(),
        "2602:ffe4:801:17:6802:ff:feec:bd51"
    );

    // The derived config survives being written and read back.
    let text = to_json_pretty(&guest).unwrap();
    let back: GuestOSConfig = from_json_str(&text).unwrap();
    assert_eq!(back, guest);
}

#[test]
fn derivation_from_an_old_hostos_config_drops_removed_fields() {
    let mut host: HostOSConfig = load(&fixture("hostos_v1.6.0.json")).unwrap();
    host.network_settings.ipv6_config =
        icos_config::Ipv6Config::Deterministic(icos_config::DeterministicIpv6Config {
            prefix: "2a00:fb01:400:200".to_string(),
            prefix_length: 64,
            gateway: "2a00:fb01:400:200::1".parse().unwrap(),
            extra: Default::default(),
        });
    let guest =
        generate_guestos_config(&host, GuestVmType::Upgrade, &GuestOsOptions::default()).unwrap();
    let written = serde_json::to_value(&guest).unwrap();
    assert!(written["icos_settings"].get("logging").is_none());
    assert!(
        written["guestos_settings"]
            .get("inject_ic_crypto")
            .is_none()
    );
    assert_eq!(written["guest_vm_type"], "upgrade");
    assert!(guest.validate().is_empty());
}
