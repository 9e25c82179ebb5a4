//! `deployment.json`: the settings of the image's deployment.
//!
//! ```json
//! {
//!   "deployment": { "deployment_environment": "mainnet", "mgmt_mac": null },
//!   "logging": {},
//!   "nns": { "urls": ["https://icp-api.io", "https://icp0.io", "https://ic0.app"] },
//!   "dev_vm_resources": { "memory": "16", "cpu": "kvm", "nr_of_vcpus": 64 }
//! }
//! ```
//!
//! | path | required | rule |
//! |------|----------|------|
//! | `deployment.deployment_environment` | yes | `mainnet` or `testnet`, in any case; the older `deployment.name` is read when it is absent |
//! | `deployment.mgmt_mac` | no | `null` or a MAC address such as `3c:ec:ef:6b:37:99` |
//! | `nns.urls` | yes | a non-empty array of `http`/`https` URLs; the older `nns.url`, one string of comma-separated URLs, is read when it is absent |
//! | `dev_vm_resources.memory` | no | GiB, at least 1: a number or a string of digits |
//! | `dev_vm_resources.cpu` | no | `kvm` or `qemu` |
//! | `dev_vm_resources.nr_of_vcpus` | no | at least 1: a number or a string of digits |
//!
//! The older names `vm_resources` and `resources` are read when
//! `dev_vm_resources` is absent. Each missing resource takes its default
//! (16 GiB, `kvm`, 16 vCPUs). `logging` and unknown members are ignored.

use std::path::Path;

use icos_config::{DeploymentEnvironment, HostOSDevSettings};
use icos_deterministic_ips::MacAddr6;
use serde_json::{Map, Value};
use url::Url;

use crate::ini::quote;
use crate::problem::{Problem, Problems};

/// The resources of the guest VM, used by development images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevVmResources {
    /// Memory in GiB.
    pub memory_gib: u32,
    /// The CPU model: `kvm` or `qemu`.
    pub cpu: String,
    /// The number of virtual CPUs.
    pub nr_of_vcpus: u32,
}

impl Default for DevVmResources {
    /// The defaults of IC-OS: 16 GiB, `kvm`, 16 vCPUs.
    fn default() -> Self {
        let d = HostOSDevSettings::default();
        DevVmResources {
            memory_gib: d.vm_memory,
            cpu: d.vm_cpu,
            nr_of_vcpus: d.vm_nr_of_vcpus,
        }
    }
}

/// The settings of a valid `deployment.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentJson {
    /// `mainnet` or `testnet`.
    pub deployment_environment: DeploymentEnvironment,
    /// The management MAC, when the file overrides it (nested test setups).
    pub mgmt_mac: Option<MacAddr6>,
    /// The NNS URLs, in file order.
    pub nns_urls: Vec<Url>,
    /// The guest VM resources, when the file gives any.
    pub dev_vm_resources: Option<DevVmResources>,
    /// Things that are allowed but suspicious.
    pub warnings: Vec<Problem>,
}

/// Placeholders of IC's build-time template; a file holding one was not filled in.
const TEMPLATE_PLACEHOLDERS: [&str; 2] = ["DEPLOYMENT_ENVIRONMENT", "NNS_URLS"];

/// Parses and checks the text of a `deployment.json`, returning every
/// problem, each keyed by its JSON path. Never panics.
pub fn parse_deployment_json(text: &str) -> Result<DeploymentJson, Problems> {
    let root: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let left: Vec<&str> = TEMPLATE_PLACEHOLDERS
                .into_iter()
                .filter(|p| text.contains(p))
                .collect();
            let hint = if left.is_empty() {
                String::new()
            } else {
                format!(
                    " (the template placeholders {} are still in the file)",
                    left.join(" and ")
                )
            };
            return Err(Problem::whole(format!("not valid JSON: {e}{hint}")).into());
        }
    };
    let Some(root) = root.as_object() else {
        return Err(Problem::whole("must be a JSON object").into());
    };
    let mut problems = Problems::new();
    let mut warnings = Vec::new();

    let deployment = object_at(root, "deployment", "deployment", true, &mut problems);
    let deployment_environment = deployment.and_then(|d| environment(d, &mut problems));
    let mgmt_mac = deployment.and_then(|d| mgmt_mac(d, &mut problems));

    let nns = object_at(root, "nns", "nns", true, &mut problems);
    let nns_urls = nns.and_then(|n| nns_urls(n, &mut problems));

    let mut resources = None;
    for name in ["dev_vm_resources", "vm_resources", "resources"] {
        if root.get(name).is_none() {
            continue;
        }
        if resources.is_some() {
            warnings.push(Problem::at(
                name,
                "ignored: an earlier resources object (dev_vm_resources, vm_resources, \
                 resources) is used",
            ));
            continue;
        }
        resources = Some(
            object_at(root, name, name, false, &mut problems)
                .and_then(|r| vm_resources(name, r, &mut problems)),
        );
    }

    match (deployment_environment, nns_urls) {
        (Some(deployment_environment), Some(nns_urls)) if problems.is_empty() => {
            Ok(DeploymentJson {
                deployment_environment,
                mgmt_mac: mgmt_mac.flatten(),
                nns_urls,
                dev_vm_resources: resources.flatten(),
                warnings,
            })
        }
        _ => Err(problems),
    }
}

/// Reads, parses and checks the `deployment.json` at `path`; every problem
/// names `path`.
pub fn load_deployment_json(path: &Path) -> Result<DeploymentJson, Problems> {
    let text = crate::read_text(path)?;
    let mut parsed = parse_deployment_json(&text).map_err(|p| p.in_file(path))?;
    parsed.warnings = std::mem::take(&mut parsed.warnings)
        .into_iter()
        .map(|w| w.in_file(path))
        .collect();
    for warning in &parsed.warnings {
        tracing::warn!("{warning}");
    }
    Ok(parsed)
}

/// A short description of a JSON value's type, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The object member `key` of `parent` (whose path is `path`). A missing
/// member is a problem only when `required`.
fn object_at<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    path: &str,
    required: bool,
    problems: &mut Problems,
) -> Option<&'a Map<String, Value>> {
    match parent.get(key) {
        Some(Value::Object(map)) => Some(map),
        Some(other) => {
            problems.at(path, format!("must be an object, not {}", kind(other)));
            None
        }
        None => {
            if required {
                problems.at(path, "missing");
            }
            None
        }
    }
}

fn environment(
    deployment: &Map<String, Value>,
    problems: &mut Problems,
) -> Option<DeploymentEnvironment> {
    let (path, value) = match (
        deployment.get("deployment_environment"),
        deployment.get("name"),
    ) {
        (Some(v), _) => ("deployment.deployment_environment", v),
        (None, Some(v)) => ("deployment.name", v),
        (None, None) => {
            problems.at(
                "deployment.deployment_environment",
                "missing; expected \"mainnet\" or \"testnet\"",
            );
            return None;
        }
    };
    match value {
        Value::String(text) => match text.parse::<DeploymentEnvironment>() {
            Ok(env) => Some(env),
            Err(_) => {
                problems.at(
                    path,
                    format!("{} is neither mainnet nor testnet", quote(text)),
                );
                None
            }
        },
        other => {
            problems.at(
                path,
                format!(
                    "must be the string \"mainnet\" or \"testnet\", not {}",
                    kind(other)
                ),
            );
            None
        }
    }
}

/// `Some(None)` when absent or null, `Some(Some(mac))` when valid, `None` on a problem.
fn mgmt_mac(deployment: &Map<String, Value>, problems: &mut Problems) -> Option<Option<MacAddr6>> {
    const PATH: &str = "deployment.mgmt_mac";
    match deployment.get("mgmt_mac") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(text)) => match icos_deterministic_ips::parse_mac(text) {
            Ok(mac) => Some(Some(mac)),
            Err(_) => {
                problems.at(
                    PATH,
                    format!(
                        "{} is not a MAC address (expected six hex octets such as \
                         3c:ec:ef:6b:37:99, or null)",
                        quote(text)
                    ),
                );
                None
            }
        },
        Some(other) => {
            problems.at(
                PATH,
                format!("must be a MAC address string or null, not {}", kind(other)),
            );
            None
        }
    }
}

fn parse_url(path: &str, text: &str, problems: &mut Problems) -> Option<Url> {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        Ok(url) => {
            problems.at(
                path,
                format!(
                    "{} is not an http or https URL with a host (scheme '{}')",
                    quote(text),
                    url.scheme()
                ),
            );
            None
        }
        Err(e) => {
            problems.at(path, format!("{} is not a URL: {e}", quote(text)));
            None
        }
    }
}

fn nns_urls(nns: &Map<String, Value>, problems: &mut Problems) -> Option<Vec<Url>> {
    let before = problems.len();
    let mut urls = Vec::new();
    match (nns.get("urls"), nns.get("url")) {
        (Some(Value::Array(items)), _) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("nns.urls[{i}]");
                match item {
                    Value::String(text) => urls.extend(parse_url(&path, text, problems)),
                    other => {
                        problems.at(path, format!("must be a URL string, not {}", kind(other)))
                    }
                }
            }
            if items.is_empty() {
                problems.at("nns.urls", "is empty; give at least one NNS URL");
            }
        }
        (Some(other), _) => problems.at(
            "nns.urls",
            format!("must be an array of URL strings, not {}", kind(other)),
        ),
        (None, Some(Value::String(joined))) => {
            for (i, part) in joined.split(',').enumerate() {
                let part = part.trim();
                if part.is_empty() {
                    problems.at("nns.url", format!("URL number {} is empty", i + 1));
                } else {
                    urls.extend(parse_url("nns.url", part, problems));
                }
            }
        }
        (None, Some(other)) => problems.at(
            "nns.url",
            format!(
                "must be a string of comma-separated URLs, not {}",
                kind(other)
            ),
        ),
        (None, None) => problems.at(
            "nns.urls",
            "missing; give an array of NNS URLs, e.g. [\"https://icp-api.io\"]",
        ),
    }
    (problems.len() == before).then_some(urls)
}

/// A positive number given as a JSON number or a string of digits.
fn positive(path: &str, value: &Value, problems: &mut Problems) -> Option<u32> {
    let parsed = match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u32>().ok()
        }
        _ => None,
    };
    match parsed {
        Some(n) if n >= 1 => Some(n),
        _ => {
            problems.at(
                path,
                format!(
                    "{} is not a whole number from 1 to {}",
                    value_text(value),
                    u32::MAX
                ),
            );
            None
        }
    }
}

/// A JSON value as it is written, quoted and shortened for messages.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => quote(&format!("\"{s}\"")),
        other => quote(&other.to_string()),
    }
}

fn vm_resources(
    name: &str,
    resources: &Map<String, Value>,
    problems: &mut Problems,
) -> Option<DevVmResources> {
    let before = problems.len();
    let mut out = DevVmResources::default();
    if let Some(v) = resources.get("memory") {
        out.memory_gib = positive(&format!("{name}.memory"), v, problems).unwrap_or(0);
    }
    if let Some(v) = resources.get("nr_of_vcpus") {
        out.nr_of_vcpus = positive(&format!("{name}.nr_of_vcpus"), v, problems).unwrap_or(0);
    }
    match resources.get("cpu") {
        None => {}
        Some(Value::String(cpu)) if cpu == "kvm" || cpu == "qemu" => out.cpu.clone_from(cpu),
        Some(other) => problems.at(
            format!("{name}.cpu"),
            format!("{} is neither \"kvm\" nor \"qemu\"", value_text(other)),
        ),
    }
    (problems.len() == before).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURRENT: &str = r#"{
      "deployment": { "deployment_environment": "mainnet", "mgmt_mac": null },
      "logging": {},
      "nns": { "urls": ["https://icp-api.io", "https://icp0.io", "https://ic0.app"] },
      "dev_vm_resources": { "memory": "16", "cpu": "kvm", "nr_of_vcpus": 64 }
    }"#;

    fn ok(text: &str) -> DeploymentJson {
        match parse_deployment_json(text) {
            Ok(d) => d,
            Err(p) => panic!("expected success, got {p}"),
        }
    }

    fn keys(text: &str) -> Vec<String> {
        parse_deployment_json(text)
            .unwrap_err()
            .iter()
            .map(|p| p.key.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn current_shape() {
        let d = ok(CURRENT);
        assert_eq!(d.deployment_environment, DeploymentEnvironment::Mainnet);
        assert_eq!(d.mgmt_mac, None);
        let urls: Vec<_> = d.nns_urls.iter().map(Url::as_str).collect();
        assert_eq!(
            urls,
            [
                "https://icp-api.io/",
                "https://icp0.io/",
                "https://ic0.app/"
            ]
        );
        assert_eq!(
            d.dev_vm_resources,
            Some(DevVmResources {
                memory_gib: 16,
                cpu: "kvm".into(),
                nr_of_vcpus: 64
            })
        );
    }

    #[test]
    fn ic_template_once_filled_in() {
        let template = include_str!("../tests/fixtures/deployment.json.template");
        let err = parse_deployment_json(template).unwrap_err().to_string();
        assert!(
            err.contains("placeholders DEPLOYMENT_ENVIRONMENT and NNS_URLS"),
            "{err}"
        );
        let filled = template
            .replace("DEPLOYMENT_ENVIRONMENT", "TestNet")
            .replace("NNS_URLS", r#"["http://[2001:db8::1]:8080"]"#);
        let d = ok(&filled);
        assert_eq!(d.deployment_environment, DeploymentEnvironment::Testnet);
        // vm_resources without memory: memory takes its default.
        assert_eq!(
            d.dev_vm_resources,
            Some(DevVmResources {
                memory_gib: 16,
                cpu: "kvm".into(),
                nr_of_vcpus: 64
            })
        );
    }

    #[test]
    fn oldest_shape() {
        let d = ok(r#"{
          "deployment": { "name": "mainnet", "mgmt_mac": "3C-EC-EF-6B-37-99" },
          "logging": { "hosts": "elasticsearch-node-0.example:443" },
          "nns": { "url": "https://icp-api.io,https://icp0.io, https://ic0.app" },
          "resources": { "memory": "490", "cpu": "qemu" }
        }"#);
        assert_eq!(d.deployment_environment, DeploymentEnvironment::Mainnet);
        assert_eq!(
            d.mgmt_mac
                .map(|m| icos_deterministic_ips::format_mac(&m))
                .as_deref(),
            Some("3c:ec:ef:6b:37:99")
        );
        assert_eq!(d.nns_urls.len(), 3);
        assert_eq!(
            d.dev_vm_resources,
            Some(DevVmResources {
                memory_gib: 490,
                cpu: "qemu".into(),
                nr_of_vcpus: 16
            })
        );
    }

    #[test]
    fn resources_are_optional() {
        let d = ok(
            r#"{"deployment":{"deployment_environment":"testnet"},"nns":{"urls":["https://ic0.app"]}}"#,
        );
        assert_eq!(d.dev_vm_resources, None);
        assert_eq!(d.mgmt_mac, None);
    }

    #[test]
    fn later_resource_objects_are_ignored_with_a_warning() {
        let d = ok(
            r#"{"deployment":{"deployment_environment":"testnet"},"nns":{"urls":["https://ic0.app"]},
                      "dev_vm_resources":{"memory":8},"resources":{"memory":"oops"}}"#,
        );
        assert_eq!(d.dev_vm_resources.map(|r| r.memory_gib), Some(8));
        assert_eq!(d.warnings.len(), 1);
        assert_eq!(d.warnings[0].key.as_deref(), Some("resources"));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let got = keys(
            r#"{
              "deployment": { "deployment_environment": "devnet", "mgmt_mac": "zz" },
              "nns": { "urls": ["https://ic0.app", "not a url", 7, "ftp://x.org"] },
              "dev_vm_resources": { "memory": "lots", "cpu": "arm", "nr_of_vcpus": 0 }
            }"#,
        );
        assert_eq!(
            got,
            [
                "deployment.deployment_environment",
                "deployment.mgmt_mac",
                "nns.urls[1]",
                "nns.urls[2]",
                "nns.urls[3]",
                "dev_vm_resources.memory",
                "dev_vm_resources.nr_of_vcpus",
                "dev_vm_resources.cpu",
            ]
        );
    }

    #[test]
    fn missing_and_mistyped_sections() {
        assert_eq!(keys("{}"), ["deployment", "nns"]);
        assert_eq!(
            keys(r#"{"deployment":{},"nns":{}}"#),
            ["deployment.deployment_environment", "nns.urls"]
        );
        assert_eq!(
            keys(r#"{"deployment":[],"nns":{"urls":"https://ic0.app"},"vm_resources":1}"#),
            ["deployment", "nns.urls", "vm_resources"]
        );
        assert_eq!(
            keys(r#"{"deployment":{"deployment_environment":1,"mgmt_mac":5},"nns":{"urls":[]}}"#),
            [
                "deployment.deployment_environment",
                "deployment.mgmt_mac",
                "nns.urls"
            ]
        );
        assert_eq!(
            keys(r#"{"deployment":{"name":"x"},"nns":{"url":"https://a.org,,"}}"#),
            ["deployment.name", "nns.url", "nns.url"]
        );
        let top = parse_deployment_json("[1]").unwrap_err().to_string();
        assert!(top.contains("must be a JSON object"), "{top}");
        let bad = parse_deployment_json("{").unwrap_err().to_string();
        assert!(bad.contains("not valid JSON"), "{bad}");
    }

    #[test]
    fn numbers_as_strings_and_limits() {
        let with = |mem: &str| {
            format!(
                r#"{{"deployment":{{"deployment_environment":"MAINNET"}},"nns":{{"urls":["https://ic0.app"]}},
                    "dev_vm_resources":{{"memory":{mem}}}}}"#
            )
        };
        assert_eq!(
            ok(&with("\"32\"")).dev_vm_resources.map(|r| r.memory_gib),
            Some(32)
        );
        assert_eq!(
            ok(&with("32")).dev_vm_resources.map(|r| r.memory_gib),
            Some(32)
        );
        for bad in [
            "0",
            "\"0\"",
            "-1",
            "1.5",
            "\"\"",
            "\" 8\"",
            "4294967296",
            "null",
        ] {
            assert_eq!(keys(&with(bad)), ["dev_vm_resources.memory"], "{bad}");
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deployment.json");
        std::fs::write(&path, "{}").unwrap();
        let text = load_deployment_json(&path).unwrap_err().to_string();
        assert!(
            text.contains(&format!("{}: deployment: missing", path.display())),
            "{text}"
        );
    }
}
