//! The command line, and its translation into a router configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use icos_boundary::RouterConfig;
use icos_boundary::cache::CacheConfig;
use icos_boundary::health::HealthConfig;
use icos_boundary::retry::RetryPolicy;

const AFTER_HELP: &str = "\
Durations are written as a number and a unit: 500ms, 1s, 2m.

Exit codes:
  0  stopped by SIGINT or SIGTERM
  1  failure: the router could not start or run (e.g. a port is taken)
  2  usage error: a flag or value broke a rule";

/// Route IC API requests (/api/v2, /api/v3, /api/v4) to healthy replicas of
/// the subnet that hosts each canister, as ic-boundary does.
#[derive(Debug, Parser)]
#[command(name = "icos-boundary", version, about, after_help = AFTER_HELP)]
#[command(help_expected = true)]
pub struct Cli {
    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Routing table and replica list (JSON; see the crate README); reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub routing_table: PathBuf,

    /// How often the routing-table file is checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = icos_main::parse_duration)]
    pub routing_table_poll_interval: Duration,

    /// Address the IC API is served on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address Prometheus metrics are served on (GET /metrics).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    pub obs_metrics_addr: SocketAddr,

    /// Serve no metrics.
    #[arg(long)]
    pub obs_disable_metrics: bool,

    /// Largest request body in bytes (413 payload_too_large above).
    #[arg(long, value_name = "BYTES", default_value_t = icos_boundary::MAX_REQUEST_BODY_SIZE)]
    pub max_request_body_size: usize,

    /// Time allowed to receive a request's headers and body (408 body_timed_out after).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = icos_main::parse_duration)]
    pub read_timeout: Duration,

    /// Time allowed for a replica to answer a request.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = icos_main::parse_duration)]
    pub replica_timeout: Duration,

    /// Time allowed to connect to a replica.
    #[arg(long, value_name = "DURATION", default_value = "4s", value_parser = icos_main::parse_duration)]
    pub replica_connect_timeout: Duration,

    /// Time between two health checks of a replica.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = icos_main::parse_duration)]
    pub health_check_interval: Duration,

    /// Time a health check may take.
    #[arg(long, value_name = "DURATION", default_value = "4s", value_parser = icos_main::parse_duration)]
    pub health_check_timeout: Duration,

    /// Time between recomputations of the routable replicas when no health flips.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = icos_main::parse_duration)]
    pub health_update_interval: Duration,

    /// Replicas whose certified height is more than this below their subnet's median are dropped.
    #[arg(long, value_name = "BLOCKS", default_value_t = 50)]
    pub health_max_height_lag: u64,

    /// Share of a subnet's replicas that must be healthy for the subnet to be alive.
    #[arg(long, value_name = "RATIO", default_value_t = 0.6666)]
    pub health_nodes_per_subnet_alive_threshold: f64,

    /// Share of subnets that must be alive for /health and /api/v2/status to report healthy.
    #[arg(long, value_name = "RATIO", default_value_t = 0.51)]
    pub health_subnets_alive_threshold: f64,

    /// Retries on other replicas after 429, 5xx or replica errors (0 to 10).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=10))]
    pub retry_count: u8,

    /// Retry update calls too (a replica may already have accepted them).
    #[arg(long)]
    pub retry_update_call: bool,

    /// Send update calls to any healthy replica, not only the f+1 lowest-latency ones.
    #[arg(long)]
    pub retry_disable_latency_routing: bool,

    /// Update calls per second allowed from one client IP (429 rate_limited above).
    #[arg(long, value_name = "N")]
    pub rate_limit_per_second_per_ip: Option<u32>,

    /// Update calls per second allowed to one subnet (429 rate_limited above).
    #[arg(long, value_name = "N")]
    pub rate_limit_per_second_per_subnet: Option<u32>,

    /// Enable the query cache, with this total size in bytes.
    #[arg(long, value_name = "BYTES")]
    pub cache_size: Option<usize>,

    /// Largest reply the query cache stores, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 10 * 1024 * 1024)]
    pub cache_max_item_size: usize,

    /// How long the query cache serves a reply.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = icos_main::parse_duration)]
    pub cache_ttl: Duration,

    /// Cache queries from non-anonymous senders too.
    #[arg(long)]
    pub cache_non_anonymous: bool,

    /// Threads serving the API, each with its own replica connections [default: one per CPU core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

impl Cli {
    /// The router configuration; fails on values that break a rule.
    pub fn to_config(&self) -> anyhow::Result<RouterConfig> {
        for (name, v) in [
            (
                "--health-nodes-per-subnet-alive-threshold",
                self.health_nodes_per_subnet_alive_threshold,
            ),
            (
                "--health-subnets-alive-threshold",
                self.health_subnets_alive_threshold,
            ),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name}: {v} is not between 0 and 1");
            }
        }
        for (name, d) in [
            ("--health-check-interval", self.health_check_interval),
            (
                "--routing-table-poll-interval",
                self.routing_table_poll_interval,
            ),
            ("--health-update-interval", self.health_update_interval),
        ] {
            if d.is_zero() {
                bail!("{name}: must be longer than 0");
            }
        }
        let mut c = RouterConfig::new(self.listen, self.routing_table.clone());
        c.metrics_listen = (!self.obs_disable_metrics).then_some(self.obs_metrics_addr);
        c.table_poll_interval = self.routing_table_poll_interval;
        c.max_body = self.max_request_body_size;
        c.read_timeout = self.read_timeout;
        c.upstream_timeout = self.replica_timeout;
        c.connect_timeout = self.replica_connect_timeout;
        c.health = HealthConfig {
            check_interval: self.health_check_interval,
            check_timeout: self.health_check_timeout,
            update_interval: self.health_update_interval,
            max_height_lag: self.health_max_height_lag,
            nodes_alive_threshold: self.health_nodes_per_subnet_alive_threshold,
            subnets_alive_threshold: self.health_subnets_alive_threshold,
        };
        c.retry = RetryPolicy {
            count: usize::from(self.retry_count),
            retry_update_calls: self.retry_update_call,
        };
        c.latency_routing = !self.retry_disable_latency_routing;
        c.rate_limit_per_ip = self.rate_limit_per_second_per_ip;
        c.rate_limit_per_subnet = self.rate_limit_per_second_per_subnet;
        c.cache = self.cache_size.map(|max_size| CacheConfig {
            max_size,
            max_item_size: self.cache_max_item_size,
            ttl: self.cache_ttl,
            cache_non_anonymous: self.cache_non_anonymous,
        });
        if let Some(n) = self.worker_threads {
            c.workers = usize::from(n);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_follow_ic_boundary() {
        let cli = Cli::parse_from(["icos-boundary", "--routing-table", "t.json"]);
        let c = cli.to_config().unwrap();
        assert_eq!(c.max_body, 4 * 1024 * 1024);
        assert_eq!(c.health.max_height_lag, 50);
        assert_eq!(c.retry.count, 2);
        assert!(!c.retry.retry_update_calls);
        assert!(c.latency_routing);
        assert!(c.cache.is_none());
        assert_eq!(c.workers, icos_boundary::default_workers());
        let cli = Cli::parse_from([
            "icos-boundary",
            "--routing-table",
            "t.json",
            "--worker-threads",
            "3",
        ]);
        assert_eq!(cli.to_config().unwrap().workers, 3);
        assert!(
            Cli::try_parse_from([
                "icos-boundary",
                "--routing-table",
                "t.json",
                "--worker-threads",
                "0"
            ])
            .is_err()
        );
        let cli = Cli::parse_from([
            "icos-boundary",
            "--routing-table",
            "t.json",
            "--health-subnets-alive-threshold",
            "1.5",
        ]);
        assert!(cli.to_config().is_err());
    }
}
