//! Prometheus metrics, named as ic-boundary names them.
//!
//! | metric | type | labels |
//! |--------|------|--------|
//! | `http_request_total` | counter | request_type, status_code, subnet_id, error_cause, cache_status, cache_bypass, retry |
//! | `http_request_duration_sec` | histogram | same |
//! | `http_request_request_size` | histogram | same |
//! | `http_request_response_size` | histogram | same |
//! | `http_request_status_total` | counter | health |
//! | `check_total` | counter | status, node_id, subnet_id, addr |
//! | `check_duration_sec` | histogram | status, node_id, subnet_id, addr |
//! | `check_status` | gauge (1 healthy, 0 not) | node_id, subnet_id, addr |
//! | `persist_ranges` | gauge | |
//! | `persist_nodes` | gauge | |
//! | `cache_items` | gauge | |
//! | `cache_size` | gauge (bytes) | |
//!
//! Node series are dropped when a new routing table is published.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::principal::Principal;

const KB: f64 = 1024.0;
const DURATION_BUCKETS: [f64; 8] = [0.05, 0.2, 0.5, 1.0, 2.0, 4.0, 7.0, 11.0];
const REQUEST_SIZE_BUCKETS: [f64; 5] = [128.0, KB, 2.0 * KB, 4.0 * KB, 8.0 * KB];
const RESPONSE_SIZE_BUCKETS: [f64; 4] = [KB, 8.0 * KB, 64.0 * KB, 256.0 * KB];

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the `http_request_*` series. Plain values, so that recording
/// a request allocates nothing; they are turned into text only when the
/// metrics are read.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// e.g. `query_v3`.
    pub request_type: &'static str,
    /// e.g. `200`.
    pub status_code: u16,
    /// The subnet, or `unknown`.
    pub subnet_id: SubnetLabel,
    /// The precise error cause, or `none`.
    pub error_cause: &'static str,
    /// `HIT`, `MISS`, `BYPASS` or `DISABLED`.
    pub cache_status: &'static str,
    /// The bypass reason, or `none`.
    pub cache_bypass: &'static str,
    /// Retries done (`0`, `1`, …).
    pub retry: usize,
}

/// A subnet as a label value: its textual id, or `unknown`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct SubnetLabel(pub Option<Principal>);

impl EncodeLabelValue for SubnetLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self.0 {
            Some(id) => {
                let text = id.to_text();
                let text: &str = &text;
                text.encode(encoder)
            }
            None => "unknown".encode(encoder),
        }
    }
}

/// Labels of `http_request_status_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// The health reported.
    pub health: String,
}

/// Labels of `check_total` and `check_duration_sec`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// `ok` or the failure.
    pub status: String,
    /// The node.
    pub node_id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// Its URL's host and port.
    pub addr: String,
}

/// Labels of `check_status`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// The node.
    pub node_id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// Its URL's host and port.
    pub addr: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}
fn request_size_histogram() -> Histogram {
    Histogram::new(REQUEST_SIZE_BUCKETS)
}
fn response_size_histogram() -> Histogram {
    Histogram::new(RESPONSE_SIZE_BUCKETS)
}

/// Every metric, and the registry that exports them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `http_request_total`.
    pub http_requests: Family<HttpLabels, Counter>,
    /// `http_request_duration_sec`.
    pub http_duration: HistogramFamily<HttpLabels>,
    /// `http_request_request_size`.
    pub http_request_size: HistogramFamily<HttpLabels>,
    /// `http_request_response_size`.
    pub http_response_size: HistogramFamily<HttpLabels>,
    /// `http_request_status_total`.
    pub status_requests: Family<StatusLabels, Counter>,
    /// `check_total`.
    pub checks: Family<CheckLabels, Counter>,
    /// `check_duration_sec`.
    pub check_duration: HistogramFamily<CheckLabels>,
    /// `check_status`.
    pub check_status: Family<NodeLabels, Gauge>,
    /// `persist_ranges`.
    pub persist_ranges: Gauge,
    /// `persist_nodes`.
    pub persist_nodes: Gauge,
    /// `cache_items`.
    pub cache_items: Gauge,
    /// `cache_size`.
    pub cache_size: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(duration_histogram);
        let http_request_size: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(request_size_histogram);
        let http_response_size: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(response_size_histogram);
        let status_requests = Family::<StatusLabels, Counter>::default();
        let checks = Family::<CheckLabels, Counter>::default();
        let check_duration: HistogramFamily<CheckLabels> =
            Family::new_with_constructor(duration_histogram);
        let check_status = Family::<NodeLabels, Gauge>::default();
        let persist_ranges = Gauge::default();
        let persist_nodes = Gauge::default();
        let cache_items = Gauge::default();
        let cache_size = Gauge::default();

        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "http_request",
            "Counts occurrences of http_request calls",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_sec",
            "Records the duration of http_request processing in seconds",
            http_duration.clone(),
        );
        registry.register(
            "http_request_request_size",
            "Records the size of http_request requests",
            http_request_size.clone(),
        );
        registry.register(
            "http_request_response_size",
            "Records the size of http_request responses",
            http_response_size.clone(),
        );
        registry.register(
            "http_request_status",
            "Counts occurrences of status calls",
            status_requests.clone(),
        );
        registry.register("check", "Counts occurrences of check calls", checks.clone());
        registry.register(
            "check_duration_sec",
            "Records the duration of check calls in seconds",
            check_duration.clone(),
        );
        registry.register(
            "check_status",
            "Last check result of a given node",
            check_status.clone(),
        );
        registry.register(
            "persist_ranges",
            "Number of canister ranges currently published",
            persist_ranges.clone(),
        );
        registry.register(
            "persist_nodes",
            "Number of nodes currently published",
            persist_nodes.clone(),
        );
        registry.register(
            "cache_items",
            "Number of items in the request cache",
            cache_items.clone(),
        );
        registry.register(
            "cache_size",
            "Size of items in the request cache in bytes",
            cache_size.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            http_request_size,
            http_response_size,
            status_requests,
            checks,
            check_duration,
            check_status,
            persist_ranges,
            persist_nodes,
            cache_items,
            cache_size,
        }
    }

    /// Drops every per-node series (a new table was published).
    pub fn clear_node_series(&self) {
        self.checks.clear();
        self.check_duration.clear();
        self.check_status.clear();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Saturating conversion for gauges.
pub(crate) fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_ic_boundary() {
        let m = Metrics::new();
        m.http_requests
            .get_or_create(&HttpLabels {
                request_type: "query_v3",
                status_code: 200,
                subnet_id: SubnetLabel(Some(Principal::ANONYMOUS)),
                error_cause: "none",
                cache_status: "MISS",
                cache_bypass: "none",
                retry: 0,
            })
            .inc();
        m.http_requests
            .get_or_create(&HttpLabels {
                request_type: "call_v3",
                status_code: 400,
                subnet_id: SubnetLabel(None),
                error_cause: "canister_not_found",
                cache_status: "DISABLED",
                cache_bypass: "none",
                retry: 1,
            })
            .inc();
        m.persist_nodes.set(gauge_value(3));
        let text = m.encode();
        assert!(
            text.contains(
                "http_request_total{request_type=\"query_v3\",status_code=\"200\",\
                 subnet_id=\"2vxsx-fae\",error_cause=\"none\",cache_status=\"MISS\",\
                 cache_bypass=\"none\",retry=\"0\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "http_request_total{request_type=\"call_v3\",status_code=\"400\",\
                 subnet_id=\"unknown\",error_cause=\"canister_not_found\",\
                 cache_status=\"DISABLED\",cache_bypass=\"none\",retry=\"1\"} 1"
            ),
            "{text}"
        );
        m.checks
            .get_or_create(&CheckLabels {
                status: "ok".into(),
                node_id: "n".into(),
                subnet_id: "s".into(),
                addr: "a".into(),
            })
            .inc();
        assert!(text.contains("# TYPE http_request counter"), "{text}");
        let text = m.encode();
        assert!(text.contains("check_total{status=\"ok\""), "{text}");
        assert!(text.contains("persist_nodes 3"), "{text}");
    }
}
