//! Health checks of replicas and the set of replicas requests may go to.
//!
//! Every replica of the current table gets `GET /api/v2/status` once per
//! check interval (default 1 s, 4 s timeout). It is healthy when it answers
//! 200 with a status document that says `healthy` and carries an
//! `impl_version`. Of the healthy replicas of a subnet, those whose
//! `certified_height` is more than `max_height_lag` (50) below the subnet's
//! median are dropped: the median resists a replica reporting a huge height.
//!
//! The routable set ([`HealthView`]) is recomputed at once when a replica's
//! health flips and otherwise every update interval, and published
//! atomically. A replica's latency is the mean of its last 10 checks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::metrics::{CheckLabels, Metrics, NodeLabels};
use crate::principal::Principal;
use crate::routing::{Node, RoutingTable, TableHandle};
use crate::status::{HealthStatus, decode_status};
use crate::upstream::Upstream;
use crate::warn_limited;

/// Health-check settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthConfig {
    /// Time between two checks of one replica.
    pub check_interval: Duration,
    /// Time a check may take.
    pub check_timeout: Duration,
    /// Time between two recomputations of the routable set when no health
    /// flips.
    pub update_interval: Duration,
    /// Replicas this far below the subnet's median height are dropped.
    pub max_height_lag: u64,
    /// Share of a subnet's replicas that must be healthy for the subnet to
    /// count as alive.
    pub nodes_alive_threshold: f64,
    /// Share of subnets that must be alive for the router to be healthy.
    pub subnets_alive_threshold: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check_interval: Duration::from_secs(1),
            check_timeout: Duration::from_secs(4),
            update_interval: Duration::from_secs(5),
            max_height_lag: 50,
            nodes_alive_threshold: 0.6666,
            subnets_alive_threshold: 0.51,
        }
    }
}

/// A replica that requests may go to.
#[derive(Debug, Clone)]
pub struct HealthyNode {
    /// The replica.
    pub node: Arc<Node>,
    /// Its mean check latency, in seconds.
    pub latency: f64,
}

/// The routable replicas of one subnet.
#[derive(Debug, Clone, Default)]
pub struct SubnetHealth {
    /// Healthy replicas that do not lag.
    pub healthy: Vec<HealthyNode>,
    /// All replicas of the subnet.
    pub total: usize,
}

/// The routable replicas of every subnet, published atomically.
#[derive(Debug, Clone, Default)]
pub struct HealthView {
    subnets: HashMap<Principal, SubnetHealth>,
}

impl HealthView {
    /// The routable replicas of `subnet_id` (empty when unknown).
    pub fn healthy(&self, subnet_id: &Principal) -> &[HealthyNode] {
        self.subnets
            .get(subnet_id)
            .map_or(&[][..], |s| s.healthy.as_slice())
    }

    /// The router's aggregate health: `healthy` when at least
    /// `subnets_alive_threshold` of the subnets have at least
    /// `nodes_alive_threshold` of their replicas routable; `starting`
    /// without a table.
    pub fn overall(&self, has_table: bool, cfg: &HealthConfig) -> HealthStatus {
        if !has_table {
            return HealthStatus::Starting;
        }
        if self.subnets.is_empty() {
            return HealthStatus::CertifiedStateBehind;
        }
        let alive = self
            .subnets
            .values()
            .filter(|s| s.total > 0 && ratio(s.healthy.len(), s.total) >= cfg.nodes_alive_threshold)
            .count();
        if ratio(alive, self.subnets.len()) >= cfg.subnets_alive_threshold {
            HealthStatus::Healthy
        } else {
            HealthStatus::CertifiedStateBehind
        }
    }
}

#[allow(clippy::cast_precision_loss)]
fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The median of `heights` (the upper one for an even count).
pub fn median(heights: &mut [u64]) -> Option<u64> {
    if heights.is_empty() {
        return None;
    }
    heights.sort_unstable();
    Some(heights[heights.len() / 2])
}

/// Keeps the candidates whose height is at most `max_lag` below the median
/// of the known heights. Candidates without a height are kept.
pub fn drop_lagging<T>(candidates: Vec<(T, Option<u64>)>, max_lag: u64) -> Vec<T> {
    let mut heights: Vec<u64> = candidates.iter().filter_map(|(_, h)| *h).collect();
    let Some(median) = median(&mut heights) else {
        return candidates.into_iter().map(|(t, _)| t).collect();
    };
    let floor = median.saturating_sub(max_lag);
    candidates
        .into_iter()
        .filter(|(_, h)| h.is_none_or(|h| h >= floor))
        .map(|(t, _)| t)
        .collect()
}

#[derive(Debug, Clone, Default)]
struct NodeState {
    healthy: bool,
    height: Option<u64>,
    latencies: VecDeque<f64>,
}

impl NodeState {
    fn latency(&self) -> f64 {
        if self.latencies.is_empty() {
            return f64::MAX;
        }
        #[allow(clippy::cast_precision_loss)]
        let n = self.latencies.len() as f64;
        self.latencies.iter().sum::<f64>() / n
    }
}

type States = Arc<Mutex<HashMap<Principal, NodeState>>>;

/// Computes the routable set of every subnet of `table` from node states.
fn compute_view(
    table: &RoutingTable,
    states: &HashMap<Principal, NodeState>,
    max_lag: u64,
) -> HealthView {
    let mut subnets = HashMap::new();
    for subnet in table.subnets() {
        let candidates: Vec<(HealthyNode, Option<u64>)> = subnet
            .nodes
            .iter()
            .filter_map(|node| {
                let state = states.get(&node.id).filter(|s| s.healthy)?;
                Some((
                    HealthyNode {
                        node: node.clone(),
                        latency: state.latency(),
                    },
                    state.height,
                ))
            })
            .collect();
        subnets.insert(
            subnet.id,
            SubnetHealth {
                healthy: drop_lagging(candidates, max_lag),
                total: subnet.nodes.len(),
            },
        );
    }
    HealthView { subnets }
}

/// Runs health checks for whatever table `table` holds, publishing routable
/// sets into `view`. Runs until dropped.
pub async fn run_health_checks(
    table: Arc<TableHandle>,
    view: Arc<ArcSwap<HealthView>>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    cfg: HealthConfig,
) {
    let mut current: Option<Arc<RoutingTable>> = None;
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut states: States = Arc::default();
    let flipped = Arc::new(Notify::new());
    let mut table_tick = tokio::time::interval(Duration::from_millis(200));
    let mut update_tick = tokio::time::interval(cfg.update_interval);
    loop {
        tokio::select! {
            _ = table_tick.tick() => {
                let latest = table.load();
                let changed = match (&current, &latest) {
                    (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                    (None, None) => false,
                    _ => true,
                };
                if !changed {
                    continue;
                }
                let Some(latest) = latest else { continue };
                // Dropping the old set aborts its checks.
                drop(std::mem::take(&mut tasks));
                metrics.clear_node_series();
                // Keep what is known of replicas that stay, so a reload does
                // not empty the routable set until the next checks.
                let carried: HashMap<Principal, NodeState> = {
                    let old = states.lock().unwrap_or_else(PoisonError::into_inner);
                    latest
                        .subnets()
                        .iter()
                        .flat_map(|s| s.nodes.iter())
                        .filter(|n| current.as_ref().is_some_and(|c| same_node_in(c, n)))
                        .filter_map(|n| old.get(&n.id).map(|s| (n.id, s.clone())))
                        .collect()
                };
                states = Arc::new(Mutex::new(carried));
                for node in latest.subnets().iter().flat_map(|s| s.nodes.iter()) {
                    tasks.spawn(check_node(
                        node.clone(),
                        states.clone(),
                        flipped.clone(),
                        upstream.clone(),
                        metrics.clone(),
                        cfg,
                    ));
                }
                current = Some(latest);
            }
            () = flipped.notified() => {}
            _ = update_tick.tick() => {}
        }
        if let Some(table) = &current {
            let new_view = {
                let states = states.lock().unwrap_or_else(PoisonError::into_inner);
                compute_view(table, &states, cfg.max_height_lag)
            };
            view.store(Arc::new(new_view));
        }
    }
}

fn same_node_in(table: &RoutingTable, node: &Node) -> bool {
    table
        .subnet(&node.subnet_id)
        .is_some_and(|s| s.nodes.iter().any(|n| **n == *node))
}

async fn check_node(
    node: Arc<Node>,
    states: States,
    flipped: Arc<Notify>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    cfg: HealthConfig,
) {
    let addr = node
        .url
        .authority()
        .map(ToString::to_string)
        .unwrap_or_default();
    let node_labels = NodeLabels {
        node_id: node.id.to_string(),
        subnet_id: node.subnet_id.to_string(),
        addr: addr.clone(),
    };
    let mut ticker = tokio::time::interval(cfg.check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let result = upstream
            .send(
                &node,
                Method::GET,
                http::uri::PathAndQuery::from_static(crate::routes::PATH_STATUS),
                &HeaderMap::new(),
                Bytes::new(),
                cfg.check_timeout,
            )
            .await;
        let elapsed = started.elapsed().as_secs_f64();
        let (healthy, height, outcome) = match result {
            Ok(r) if r.status == StatusCode::OK => match decode_status(&r.body) {
                Ok(s) if s.is_healthy() => (true, s.certified_height, "ok".to_string()),
                Ok(s) => (
                    false,
                    s.certified_height,
                    s.health.map_or("unknown", HealthStatus::as_str).to_string(),
                ),
                Err(_) => (false, None, "unable_to_parse_cbor".into()),
            },
            Ok(r) => (false, None, format!("http_{}", r.status.as_u16())),
            Err(cause) => (false, None, cause.name().to_string()),
        };
        let check_labels = CheckLabels {
            status: outcome.clone(),
            node_id: node_labels.node_id.clone(),
            subnet_id: node_labels.subnet_id.clone(),
            addr: addr.clone(),
        };
        metrics.checks.get_or_create(&check_labels).inc();
        metrics
            .check_duration
            .get_or_create(&check_labels)
            .observe(elapsed);
        metrics
            .check_status
            .get_or_create(&node_labels)
            .set(i64::from(healthy));

        let was_healthy = {
            let mut states = states.lock().unwrap_or_else(PoisonError::into_inner);
            let state = states.entry(node.id).or_default();
            let was = state.healthy;
            state.healthy = healthy;
            state.height = height;
            if healthy {
                if state.latencies.len() == 10 {
                    state.latencies.pop_front();
                }
                state.latencies.push_back(elapsed);
            }
            was
        };
        if was_healthy != healthy {
            if healthy {
                tracing::info!(node = %node.id, subnet = %node.subnet_id, "replica is healthy");
            } else {
                warn_limited!(node = %node.id, subnet = %node.subnet_id, outcome, "replica is unhealthy");
            }
            flipped.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Subnet;

    #[test]
    fn median_is_robust_to_one_huge_height() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5]), Some(5));
        assert_eq!(median(&mut [100, 100, 100, u64::MAX]), Some(100));
        assert_eq!(median(&mut [3, 1, 2]), Some(2));
    }

    #[test]
    fn nodes_lagging_more_than_50_below_the_median_are_dropped() {
        let kept = drop_lagging(
            vec![
                ("a", Some(1000)),
                ("b", Some(1000)),
                ("c", Some(950)),
                ("d", Some(949)),
            ],
            50,
        );
        assert_eq!(kept, vec!["a", "b", "c"]);
        // A liar far ahead does not move the median: nobody honest is dropped.
        let kept = drop_lagging(
            vec![
                ("a", Some(1000)),
                ("b", Some(990)),
                ("c", Some(1_000_000)),
                ("d", Some(995)),
            ],
            50,
        );
        assert_eq!(kept.len(), 4);
        // Unknown heights are kept; heights near zero do not underflow.
        let kept = drop_lagging(vec![("a", None), ("b", Some(10)), ("c", Some(0))], 50);
        assert_eq!(kept, vec!["a", "b", "c"]);
        let kept: Vec<&str> = drop_lagging(vec![("a", None)], 50);
        assert_eq!(kept, vec!["a"]);
    }

    fn table(nodes_per_subnet: &[usize]) -> RoutingTable {
        let subnets = nodes_per_subnet
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let i = u8::try_from(i).unwrap();
                let id = Principal::from_slice(&[i, 0xaa]).unwrap();
                Subnet {
                    id,
                    nodes: (0..n)
                        .map(|j| {
                            Arc::new(Node {
                                id: Principal::from_slice(&[i, u8::try_from(j).unwrap()]).unwrap(),
                                subnet_id: id,
                                url: "http://127.0.0.1:1".parse().unwrap(),
                            })
                        })
                        .collect(),
                    ranges: vec![],
                }
            })
            .collect();
        RoutingTable::new(subnets, None).unwrap()
    }

    #[test]
    fn view_keeps_healthy_non_lagging_nodes_and_judges_overall_health() {
        let t = table(&[4, 4]);
        let s0 = t.subnets()[0].clone();
        let s1 = t.subnets()[1].clone();
        let mut states = HashMap::new();
        let healthy = |h: u64| NodeState {
            healthy: true,
            height: Some(h),
            latencies: VecDeque::from([0.01]),
        };
        states.insert(s0.nodes[0].id, healthy(1000));
        states.insert(s0.nodes[1].id, healthy(1000));
        states.insert(s0.nodes[2].id, healthy(900)); // lags
        states.insert(s0.nodes[3].id, NodeState::default()); // unhealthy
        states.insert(s1.nodes[0].id, healthy(5));
        let cfg = HealthConfig::default();
        let v = compute_view(&t, &states, 50);
        let ids: Vec<_> = v.healthy(&s0.id).iter().map(|n| n.node.id).collect();
        assert_eq!(ids, vec![s0.nodes[0].id, s0.nodes[1].id]);
        assert_eq!(v.healthy(&s1.id).len(), 1);
        assert!(v.healthy(&Principal::ANONYMOUS).is_empty());
        // 2/4 and 1/4 healthy: no subnet is alive.
        assert_eq!(v.overall(true, &cfg), HealthStatus::CertifiedStateBehind);
        states.insert(s0.nodes[2].id, healthy(1000));
        let v = compute_view(&t, &states, 50);
        // Subnet 0 has 3/4 ≥ 0.6666: 1 of 2 subnets alive is < 0.51.
        assert_eq!(v.overall(true, &cfg), HealthStatus::CertifiedStateBehind);
        for n in &s1.nodes[1..] {
            states.insert(n.id, healthy(5));
        }
        let v = compute_view(&t, &states, 50);
        assert_eq!(v.overall(true, &cfg), HealthStatus::Healthy);
        assert_eq!(v.overall(false, &cfg), HealthStatus::Starting);
        assert_eq!(
            HealthView::default().overall(true, &cfg),
            HealthStatus::CertifiedStateBehind
        );
    }
}
