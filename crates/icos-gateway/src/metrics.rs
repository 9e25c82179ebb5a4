//! Prometheus metrics of the gateway, served as text on `GET /metrics`.
//!
//! | metric | labels |
//! |--------|--------|
//! | `http_gateway_requests_total` | `status`, `error_cause` (`none` on success), `verification` (`v2`, `v2_skip`, `v1`, `skipped_raw`, `skipped_update`, `none`) |
//! | `http_gateway_request_duration_seconds` | `verification` |
//! | `http_gateway_denylist_canisters` | — |
//! | `http_gateway_denylist_reloads_total` | `result` (`ok`, `error`) |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    status: String,
    error_cause: &'static str,
    verification: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    verification: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram>,
    denylist_size: Gauge,
    denylist_reloads: Family<ReloadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("http_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "HTTP requests served", requests.clone());
        let durations = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer an HTTP request",
            durations.clone(),
        );
        let denylist_size = Gauge::default();
        registry.register(
            "denylist_canisters",
            "Canisters on the denylist",
            denylist_size.clone(),
        );
        let denylist_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "denylist_reloads",
            "Denylist reloads after a change",
            denylist_reloads.clone(),
        );
        Metrics {
            registry,
            requests,
            durations,
            denylist_size,
            denylist_reloads,
        }
    }

    /// Counts one answered request.
    pub fn request(
        &self,
        status: u16,
        error_cause: &'static str,
        verification: &'static str,
        secs: f64,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                status: status.to_string(),
                error_cause,
                verification,
            })
            .inc();
        self.durations
            .get_or_create(&DurationLabels { verification })
            .observe(secs);
    }

    /// Records the denylist size.
    pub fn denylist_size(&self, n: usize) {
        self.denylist_size.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a denylist reload.
    pub fn denylist_reload(&self, ok: bool) {
        self.denylist_reloads
            .get_or_create(&ReloadLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
