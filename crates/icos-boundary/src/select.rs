//! Choosing replicas for a request.
//!
//! Queries and read_state go to replicas chosen uniformly at random: with
//! retries a client eventually reaches an honest one. Update calls go, by
//! default, to a random replica among the f+1 with the lowest latency, where
//! f = (n−1)/3 is the number of faulty replicas a subnet of n tolerates.
//! Each attempt of a request uses a different replica.

use std::sync::Arc;

use crate::health::HealthyNode;
use crate::routing::Node;

/// How many faulty replicas a subnet of `n` tolerates: ⌊(n−1)/3⌋.
pub fn fault_tolerance(n: usize) -> usize {
    n.saturating_sub(1) / 3
}

/// Up to `count` distinct replicas, uniformly at random.
pub fn pick_random(nodes: &[HealthyNode], count: usize, rng: &mut fastrand::Rng) -> Vec<Arc<Node>> {
    let mut all: Vec<Arc<Node>> = nodes.iter().map(|n| n.node.clone()).collect();
    rng.shuffle(&mut all);
    all.truncate(count);
    all
}

/// Up to `count` distinct replicas: first, in random order, the `closest`
/// with the lowest latency, then the others by increasing latency.
pub fn pick_closest(
    nodes: &[HealthyNode],
    count: usize,
    closest: usize,
    rng: &mut fastrand::Rng,
) -> Vec<Arc<Node>> {
    let mut sorted: Vec<&HealthyNode> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.latency.total_cmp(&b.latency));
    let split = closest.clamp(1, sorted.len().max(1)).min(sorted.len());
    let (head, tail) = sorted.split_at_mut(split);
    rng.shuffle(head);
    head.iter()
        .chain(tail.iter())
        .take(count)
        .map(|n| n.node.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Principal;
    use std::collections::HashSet;

    fn nodes(latencies: &[f64]) -> Vec<HealthyNode> {
        latencies
            .iter()
            .enumerate()
            .map(|(i, &latency)| HealthyNode {
                node: Arc::new(Node {
                    id: Principal::from_slice(&[u8::try_from(i).unwrap()]).unwrap(),
                    subnet_id: Principal::ANONYMOUS,
                    url: "http://127.0.0.1:1".parse().unwrap(),
                }),
                latency,
            })
            .collect()
    }

    fn first_byte(n: &Arc<Node>) -> u8 {
        n.id.as_slice()[0]
    }

    #[test]
    fn fault_tolerance_follows_the_3f_plus_1_rule() {
        assert_eq!(fault_tolerance(0), 0);
        assert_eq!(fault_tolerance(1), 0);
        assert_eq!(fault_tolerance(4), 1);
        assert_eq!(fault_tolerance(6), 1);
        assert_eq!(fault_tolerance(7), 2);
        assert_eq!(fault_tolerance(13), 4);
        assert_eq!(fault_tolerance(40), 13);
    }

    #[test]
    fn random_picks_are_distinct_and_cover_all_nodes() {
        let ns = nodes(&[1.0; 7]);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let picked = pick_random(&ns, 3, &mut rng);
            assert_eq!(picked.len(), 3);
            let ids: HashSet<u8> = picked.iter().map(first_byte).collect();
            assert_eq!(ids.len(), 3, "distinct");
            seen.insert(first_byte(&picked[0]));
        }
        assert_eq!(seen.len(), 7, "every node is eventually first");
        assert_eq!(pick_random(&ns, 10, &mut rng).len(), 7);
        assert!(pick_random(&[], 3, &mut rng).is_empty());
    }

    #[test]
    fn calls_go_to_the_f_plus_1_closest() {
        // 7 nodes: f = 2, so the first pick is among the 3 fastest.
        let ns = nodes(&[0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.7]);
        let mut rng = fastrand::Rng::with_seed(1);
        let mut firsts = HashSet::new();
        for _ in 0..200 {
            let picked = pick_closest(&ns, 3, fault_tolerance(ns.len()) + 1, &mut rng);
            assert_eq!(picked.len(), 3);
            let ids: HashSet<u8> = picked.iter().map(first_byte).collect();
            assert_eq!(
                ids,
                HashSet::from([1, 3, 5]),
                "the 3 fastest, in some order"
            );
            firsts.insert(first_byte(&picked[0]));
        }
        assert_eq!(firsts.len(), 3, "random among them");
        // More attempts than the closest set: the rest by latency.
        let picked = pick_closest(&ns, 5, 3, &mut rng);
        assert_eq!(first_byte(&picked[3]), 2);
        assert_eq!(first_byte(&picked[4]), 6);
        assert!(pick_closest(&[], 1, 1, &mut rng).is_empty());
        assert_eq!(pick_closest(&ns[..1], 3, 1, &mut rng).len(), 1);
    }
}
