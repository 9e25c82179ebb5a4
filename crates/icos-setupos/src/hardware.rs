//! The hardware check: CPU generation and SEV capability, sockets, threads,
//! memory and drives, with IC's production thresholds.
//!
//! | | Gen1 | Gen2 |
//! |---|---|---|
//! | CPU product (`lshw -json -class cpu`) | contains `AMD EPYC 7302` | matches `AMD EPYC 7..3` |
//! | capability | `sev` | `sev_snp` |
//! | sockets | exactly 2 | exactly 2 |
//! | threads (`nproc`) | exactly 64 | at least 64 |
//! | each large drive | more than 3.2 TB | more than 6.4 TB |
//!
//! For both: every socket holds the same CPU, memory is more than
//! 547 608 330 240 bytes (510 GiB), and the large drives together hold more
//! than 32 TB.
//!
//! **Large drives.** IC counts the drives whose `lsblk` size (in lsblk's
//! human-readable binary units) ends in `T`. lsblk switches to `T` at
//! 2^40 bytes, so with `lsblk -b` sizes a large drive here is a whole disk
//! (`TYPE` `disk`) of at least 1 TiB ([`LARGE_DRIVE_MIN_BYTES`]).
//!
//! When the CPU is not one of the two generations, the check still reports
//! everything else, measured against the lower of the two requirements
//! (at least 64 threads, drives above 3.2 TB).

use std::collections::BTreeSet;
use std::fmt;

use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use crate::report::{CheckName, CheckResult};

/// Memory must be more than this many bytes (510 GiB).
pub const MIN_MEMORY_BYTES: u64 = 547_608_330_240;
/// A drive of at least this size (1 TiB) is a large drive.
pub const LARGE_DRIVE_MIN_BYTES: u64 = 1 << 40;
/// Each large drive of a Gen1 node must be larger than this (3.2 TB).
pub const GEN1_MIN_DRIVE_BYTES: u64 = 3_200_000_000_000;
/// Each large drive of a Gen2 node must be larger than this (6.4 TB).
pub const GEN2_MIN_DRIVE_BYTES: u64 = 6_400_000_000_000;
/// The large drives together must be larger than this (32 TB).
pub const MIN_AGGREGATE_DRIVE_BYTES: u64 = 32_000_000_000_000;
/// Sockets a node must have.
pub const REQUIRED_SOCKETS: usize = 2;
/// Threads a node must have (exactly, for Gen1; at least, for Gen2).
pub const REQUIRED_THREADS: u32 = 64;
/// The Gen1 CPU product.
pub const GEN1_CPU: &str = "AMD EPYC 7302";
/// The Gen2 CPU product pattern.
pub const GEN2_CPU_PATTERN: &str = "AMD EPYC 7..3";

/// A node hardware generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Generation {
    /// AMD EPYC 7302 with SEV.
    Gen1,
    /// AMD EPYC 7xx3 with SEV-SNP.
    Gen2,
}

impl Generation {
    /// The generation of a CPU product string, if it is a node CPU.
    pub fn of_product(product: &str) -> Option<Generation> {
        if product.contains(GEN1_CPU) {
            return Some(Generation::Gen1);
        }
        let gen2 = Regex::new(GEN2_CPU_PATTERN).ok()?;
        gen2.is_match(product).then_some(Generation::Gen2)
    }

    /// The CPU capability (flag) the generation needs.
    pub fn required_capability(self) -> &'static str {
        match self {
            Generation::Gen1 => "sev",
            Generation::Gen2 => "sev_snp",
        }
    }

    /// Each large drive must be larger than this.
    pub fn min_drive_bytes(self) -> u64 {
        match self {
            Generation::Gen1 => GEN1_MIN_DRIVE_BYTES,
            Generation::Gen2 => GEN2_MIN_DRIVE_BYTES,
        }
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Generation::Gen1 => "Gen1",
            Generation::Gen2 => "Gen2",
        })
    }
}

/// One populated CPU socket, as `lshw` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSocket {
    /// lshw's id (`cpu:0`).
    pub id: String,
    /// The product string (`AMD EPYC 7313 16-Core Processor`).
    pub product: String,
    /// The capability names (`sev`, `sev_snp`, `fpu`, ...).
    pub capabilities: BTreeSet<String>,
}

/// A block device, as `lsblk` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drive {
    /// The kernel name (`nvme0n1`).
    pub name: String,
    /// The size in bytes.
    pub size: u64,
    /// lsblk's type (`disk`, `loop`, `rom`, ...).
    pub kind: String,
}

impl Drive {
    /// True for a whole disk of at least [`LARGE_DRIVE_MIN_BYTES`].
    pub fn is_large(&self) -> bool {
        self.kind == "disk" && self.size >= LARGE_DRIVE_MIN_BYTES
    }
}

/// Where the memory size was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MemorySource {
    /// The `System Memory` node(s) of `lshw -json -class memory`: the
    /// installed memory, as IC measures it.
    Lshw,
    /// `MemTotal` of `/proc/meminfo`: what the kernel manages, which is less
    /// than what is installed by the firmware's and kernel's reservations.
    Meminfo,
}

/// The machine, as the hardware check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareFacts {
    /// The populated sockets.
    pub cpus: Vec<CpuSocket>,
    /// Online threads (`nproc`).
    pub threads: u32,
    /// Memory in bytes, and where it was read.
    pub memory: (u64, MemorySource),
    /// Every block device.
    pub drives: Vec<Drive>,
}

/// Captured output that does not have the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn bad(text: impl Into<String>) -> ParseError {
    ParseError(text.into())
}

/// Parses lshw's JSON: an array, or (older lshw with `-class`) objects
/// separated by commas without the brackets.
fn lshw_nodes(text: &str) -> Result<Vec<Value>, ParseError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("is empty"));
    }
    let value: Value = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed)
    } else {
        serde_json::from_str(&format!("[{trimmed}]"))
    }
    .map_err(|e| bad(format!("is not lshw JSON: {e}")))?;
    match value {
        Value::Array(nodes) => Ok(nodes),
        _ => Err(bad("is not a JSON array of lshw nodes")),
    }
}

/// The populated CPU sockets in `lshw -json -class cpu` output. Entries
/// marked `"disabled": true` (empty sockets) are left out.
pub fn parse_lshw_cpus(text: &str) -> Result<Vec<CpuSocket>, ParseError> {
    let mut cpus = Vec::new();
    for (i, node) in lshw_nodes(text)?.iter().enumerate() {
        let obj = node
            .as_object()
            .ok_or_else(|| bad(format!("entry {i} is not an object")))?;
        if obj.get("class").and_then(Value::as_str) != Some("processor") {
            continue;
        }
        if obj.get("disabled").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let capabilities = match obj.get("capabilities") {
            None => BTreeSet::new(),
            Some(Value::Object(caps)) => caps.keys().cloned().collect(),
            Some(_) => return Err(bad(format!("entry {i}: capabilities is not an object"))),
        };
        cpus.push(CpuSocket {
            id: obj
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("cpu")
                .to_string(),
            product: obj
                .get("product")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_string(),
            capabilities,
        });
    }
    Ok(cpus)
}

/// The installed memory in bytes from `lshw -json -class memory`: the sum of
/// the sizes of the `System Memory` nodes (one per board or NUMA node).
pub fn parse_lshw_memory(text: &str) -> Result<u64, ParseError> {
    fn walk(node: &Value, total: &mut u64, found: &mut bool) {
        let Some(obj) = node.as_object() else { return };
        if obj.get("description").and_then(Value::as_str) == Some("System Memory") {
            if let Some(size) = obj.get("size").and_then(Value::as_u64) {
                *total = total.saturating_add(size);
                *found = true;
            }
            return;
        }
        if let Some(Value::Array(children)) = obj.get("children") {
            for child in children {
                walk(child, total, found);
            }
        }
    }
    let (mut total, mut found) = (0, false);
    for node in lshw_nodes(text)? {
        walk(&node, &mut total, &mut found);
    }
    if found {
        Ok(total)
    } else {
        Err(bad("lists no 'System Memory' node with a size"))
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> Result<u64, ParseError> {
    let line = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .ok_or_else(|| bad("has no MemTotal line"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.as_slice() {
        ["MemTotal:", n, "kB"] => n
            .parse::<u64>()
            .map(|kib| kib.saturating_mul(1024))
            .map_err(|_| bad(format!("MemTotal '{n}' is not a number"))),
        _ => Err(bad(format!("'{line}' is not 'MemTotal: N kB'"))),
    }
}

/// The output of `nproc`.
pub fn parse_nproc(text: &str) -> Result<u32, ParseError> {
    let t = text.trim();
    t.parse()
        .map_err(|_| bad(format!("'{t}' is not a thread count")))
}

/// The top-level devices of `lsblk -J -b -o NAME,SIZE,TYPE[,...]`
/// (partitions, listed as children, are not drives). Sizes may be JSON
/// numbers or, from older lsblk, strings.
pub fn parse_lsblk(text: &str) -> Result<Vec<Drive>, ParseError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("is not lsblk JSON: {e}")))?;
    let devices = value
        .get("blockdevices")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("has no 'blockdevices' array"))?;
    let mut drives = Vec::new();
    for (i, dev) in devices.iter().enumerate() {
        let name = dev
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("blockdevices[{i}] has no name")))?;
        let size = match dev.get("size") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            bad(format!(
                "blockdevices[{i}] ({name}): size is not a byte count (capture with lsblk -b)"
            ))
        })?;
        let kind = dev.get("type").and_then(Value::as_str).ok_or_else(|| {
            bad(format!(
                "blockdevices[{i}] ({name}) has no type (capture with -o NAME,SIZE,TYPE)"
            ))
        })?;
        drives.push(Drive {
            name: name.to_string(),
            size,
            kind: kind.to_string(),
        });
    }
    Ok(drives)
}

/// `7.68 TB (6.99 TiB)`: decimal units as drive vendors use, binary beside.
pub fn format_bytes(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    if bytes >= 1_000_000_000_000 {
        format!("{:.2} TB ({:.2} TiB)", b / 1e12, b / (1u64 << 40) as f64)
    } else {
        format!("{:.2} GB ({:.2} GiB)", b / 1e9, b / (1u64 << 30) as f64)
    }
}

/// Runs the hardware check. `has_node_operator_key` tells whether the
/// image carries `node_operator_private_key.pem`. Returns the result and
/// the generation, when the CPUs name one.
pub fn check_hardware(
    facts: &HardwareFacts,
    has_node_operator_key: bool,
) -> (CheckResult, Option<Generation>) {
    let mut r = CheckResult::new(CheckName::Hardware);
    let generation = check_cpus(facts, &mut r);

    // Memory.
    let (memory, source) = facts.memory;
    let from = match source {
        MemorySource::Lshw => "lshw System Memory",
        MemorySource::Meminfo => "/proc/meminfo MemTotal",
    };
    r.fact(format!("memory: {} (from {from})", format_bytes(memory)));
    if memory <= MIN_MEMORY_BYTES {
        r.error(format!(
            "memory is {memory} bytes ({}); a node needs more than {MIN_MEMORY_BYTES} bytes (510 GiB)",
            format_bytes(memory)
        ));
    }

    // Drives.
    let large: Vec<&Drive> = facts.drives.iter().filter(|d| d.is_large()).collect();
    let small: Vec<String> = facts
        .drives
        .iter()
        .filter(|d| !d.is_large())
        .map(|d| format!("{} {} ({})", d.name, format_bytes(d.size), d.kind))
        .collect();
    r.fact(format!(
        "large drives (1 TiB or more): {}",
        if large.is_empty() {
            "none".to_string()
        } else {
            large
                .iter()
                .map(|d| format!("{} {}", d.name, format_bytes(d.size)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    if !small.is_empty() {
        r.fact(format!("other block devices: {}", small.join(", ")));
    }
    if large.is_empty() {
        r.error("no large drive: a node needs drives of 1 TiB or more to install onto");
    }
    let (min_drive, which) = match generation {
        Some(g) => (g.min_drive_bytes(), format!("a {g} node")),
        None => (GEN1_MIN_DRIVE_BYTES, "any node".to_string()),
    };
    for d in &large {
        if d.size <= min_drive {
            r.error(format!(
                "drive {} holds {}; {which} needs each large drive larger than {}",
                d.name,
                format_bytes(d.size),
                format_bytes(min_drive)
            ));
        }
    }
    let aggregate: u64 = large.iter().map(|d| d.size).sum();
    if aggregate <= MIN_AGGREGATE_DRIVE_BYTES {
        r.error(format!(
            "the large drives hold {} together; a node needs more than {}",
            format_bytes(aggregate),
            format_bytes(MIN_AGGREGATE_DRIVE_BYTES)
        ));
    }

    if generation == Some(Generation::Gen2) && !has_node_operator_key {
        r.warn(
            "a Gen2 node without node_operator_private_key.pem on the CONFIG partition: \
             the installer will fall back to registering with a hardware security module \
             (HSM) after a 5-minute pause; put the key on the CONFIG partition to avoid this",
        );
    }
    (r, generation)
}

/// Checks sockets, generation, capability and threads; returns the
/// generation when every socket names the same one.
fn check_cpus(facts: &HardwareFacts, r: &mut CheckResult) -> Option<Generation> {
    let cpus = &facts.cpus;
    let products: BTreeSet<&str> = cpus.iter().map(|c| c.product.as_str()).collect();
    r.fact(format!(
        "CPU: {} socket(s): {}",
        cpus.len(),
        if products.is_empty() {
            "none listed".to_string()
        } else {
            products.iter().copied().collect::<Vec<_>>().join(" | ")
        }
    ));
    r.fact(format!("threads: {}", facts.threads));

    if cpus.len() != REQUIRED_SOCKETS {
        r.error(format!(
            "{} CPU socket(s) populated; a node needs exactly {REQUIRED_SOCKETS}",
            cpus.len()
        ));
    }
    let generations: Vec<Option<Generation>> = cpus
        .iter()
        .map(|c| Generation::of_product(&c.product))
        .collect();
    for (cpu, g) in cpus.iter().zip(&generations) {
        if g.is_none() {
            r.error(format!(
                "{}: CPU '{}' is not a node CPU: Gen1 needs '{GEN1_CPU}', Gen2 one matching \
                 '{GEN2_CPU_PATTERN}'",
                cpu.id, cpu.product
            ));
        }
    }
    if products.len() > 1 {
        r.error(format!(
            "the sockets hold different CPUs ({}); all must be the same",
            products.iter().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    let generation = match generations.split_first() {
        Some((Some(first), rest)) if rest.iter().all(|g| g == &Some(*first)) => Some(*first),
        _ => None,
    };
    if let Some(g) = generation {
        r.fact(format!("generation: {g}"));
        let capability = g.required_capability();
        for cpu in cpus {
            if !cpu.capabilities.contains(capability) {
                r.error(format!(
                    "{}: CPU lacks the '{capability}' capability a {g} node needs \
                     (enable SEV{} in the firmware setup)",
                    cpu.id,
                    if g == Generation::Gen2 { "-SNP" } else { "" }
                ));
            }
        }
    }
    match generation {
        Some(Generation::Gen1) if facts.threads != REQUIRED_THREADS => r.error(format!(
            "{} threads; a Gen1 node needs exactly {REQUIRED_THREADS}",
            facts.threads
        )),
        Some(Generation::Gen2) | None if facts.threads < REQUIRED_THREADS => r.error(format!(
            "{} threads; a {} node needs at least {REQUIRED_THREADS}",
            facts.threads,
            generation.map_or("Gen2".to_string(), |g| g.to_string())
        )),
        _ => {}
    }
    generation
}

#[cfg(test)]
mod tests;
