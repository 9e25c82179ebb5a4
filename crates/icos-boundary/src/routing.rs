//! The routing table: subnets, their replicas and their canister ranges, and
//! the canister-id → subnet lookup.
//!
//! Ranges are kept as 256-bit big-endian keys ([`Principal::to_u256`]),
//! sorted by start, and searched with a binary search. A table is immutable
//! once built; a new one replaces it atomically (see [`TableHandle`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::Uri;

use crate::principal::Principal;

/// A replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node id.
    pub id: Principal,
    /// The subnet it belongs to.
    pub subnet_id: Principal,
    /// Its base URL (`http://host:port`, no path).
    pub url: Uri,
}

/// A range of canister ids, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanisterRange {
    /// First canister id.
    pub start: Principal,
    /// Last canister id.
    pub end: Principal,
}

/// A subnet: its id, its replicas and its canister ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// The subnet id.
    pub id: Principal,
    /// Its replicas.
    pub nodes: Vec<Arc<Node>>,
    /// The canister ranges it hosts.
    pub ranges: Vec<CanisterRange>,
}

/// Why a set of subnets does not make a routing table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// No subnets at all (an empty table is never published).
    #[error("the routing table has no subnets")]
    Empty,
    /// Rule violations, all of them.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Copy)]
struct RangeEntry {
    start: [u8; 32],
    end: [u8; 32],
    subnet: usize,
}

/// An immutable routing table.
#[derive(Debug)]
pub struct RoutingTable {
    subnets: Vec<Arc<Subnet>>,
    ranges: Vec<RangeEntry>,
    by_subnet_id: HashMap<Principal, usize>,
    root_key: Option<Vec<u8>>,
}

impl RoutingTable {
    /// Builds a table, checking that subnet and node ids are unique, every
    /// range has start ≤ end, and no two ranges overlap. Every problem is
    /// reported.
    pub fn new(subnets: Vec<Subnet>, root_key: Option<Vec<u8>>) -> Result<Self, TableError> {
        if subnets.is_empty() {
            return Err(TableError::Empty);
        }
        let mut problems = Vec::new();
        let mut by_subnet_id = HashMap::new();
        let mut node_ids = HashSet::new();
        let mut ranges = Vec::new();
        for (i, subnet) in subnets.iter().enumerate() {
            if by_subnet_id.insert(subnet.id, i).is_some() {
                problems.push(format!("subnet {} is listed twice", subnet.id));
            }
            for node in &subnet.nodes {
                if !node_ids.insert(node.id) {
                    problems.push(format!("node {} is listed twice", node.id));
                }
            }
            for r in &subnet.ranges {
                let (start, end) = (r.start.to_u256(), r.end.to_u256());
                if start > end {
                    problems.push(format!(
                        "subnet {}: range start {} is after its end {}",
                        subnet.id, r.start, r.end
                    ));
                }
                ranges.push(RangeEntry {
                    start,
                    end,
                    subnet: i,
                });
            }
        }
        ranges.sort_by_key(|a| a.start);
        for pair in ranges.windows(2) {
            if pair[1].start <= pair[0].end {
                problems.push(format!(
                    "ranges of subnets {} and {} overlap",
                    subnets[pair[0].subnet].id, subnets[pair[1].subnet].id
                ));
            }
        }
        if !problems.is_empty() {
            return Err(TableError::Invalid(problems));
        }
        Ok(RoutingTable {
            subnets: subnets.into_iter().map(Arc::new).collect(),
            ranges,
            by_subnet_id,
            root_key,
        })
    }

    /// The subnet hosting `canister_id`, by binary search over the ranges.
    pub fn lookup_canister(&self, canister_id: &Principal) -> Option<&Arc<Subnet>> {
        let key = canister_id.to_u256();
        let after = self.ranges.partition_point(|r| r.start <= key);
        let candidate = self.ranges.get(after.checked_sub(1)?)?;
        (key <= candidate.end).then(|| &self.subnets[candidate.subnet])
    }

    /// The subnet with this id.
    pub fn subnet(&self, subnet_id: &Principal) -> Option<&Arc<Subnet>> {
        self.by_subnet_id.get(subnet_id).map(|&i| &self.subnets[i])
    }

    /// All subnets, in file order.
    pub fn subnets(&self) -> &[Arc<Subnet>] {
        &self.subnets
    }

    /// The number of canister ranges.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The number of replicas.
    pub fn node_count(&self) -> usize {
        self.subnets.iter().map(|s| s.nodes.len()).sum()
    }

    /// The NNS root key (DER), served in `/api/v2/status`.
    pub fn root_key(&self) -> Option<&[u8]> {
        self.root_key.as_deref()
    }
}

/// The published table, swapped atomically; empty before the first load.
#[derive(Debug, Default)]
pub struct TableHandle(ArcSwapOption<RoutingTable>);

impl TableHandle {
    /// The current table, if any.
    pub fn load(&self) -> Option<Arc<RoutingTable>> {
        self.0.load_full()
    }

    /// Publishes a new table.
    pub fn store(&self, table: Arc<RoutingTable>) {
        self.0.store(Some(table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> Principal {
        // Canister-id shaped: 8 bytes of number then 0x01 0x01.
        let mut b = n.to_be_bytes().to_vec();
        b.extend_from_slice(&[1, 1]);
        Principal::from_slice(&b).unwrap()
    }

    fn subnet(id: u8, ranges: &[(u64, u64)]) -> Subnet {
        let sid = Principal::from_slice(&[id; 29]).unwrap();
        Subnet {
            id: sid,
            nodes: vec![Arc::new(Node {
                id: Principal::from_slice(&[id, 0xee]).unwrap(),
                subnet_id: sid,
                url: "http://127.0.0.1:1".parse().unwrap(),
            })],
            ranges: ranges
                .iter()
                .map(|&(s, e)| CanisterRange {
                    start: p(s),
                    end: p(e),
                })
                .collect(),
        }
    }

    #[test]
    fn lookup_finds_the_range_holding_a_canister() {
        let t = RoutingTable::new(
            vec![
                subnet(1, &[(0, 99), (1000, 1999)]),
                subnet(2, &[(100, 999)]),
                subnet(3, &[(u64::MAX - 5, u64::MAX)]),
            ],
            None,
        )
        .unwrap();
        let id = |s: &Arc<Subnet>| s.id.as_slice()[0];
        assert_eq!(t.lookup_canister(&p(0)).map(id), Some(1));
        assert_eq!(t.lookup_canister(&p(99)).map(id), Some(1));
        assert_eq!(t.lookup_canister(&p(100)).map(id), Some(2));
        assert_eq!(t.lookup_canister(&p(999)).map(id), Some(2));
        assert_eq!(t.lookup_canister(&p(1000)).map(id), Some(1));
        assert_eq!(t.lookup_canister(&p(1999)).map(id), Some(1));
        assert_eq!(t.lookup_canister(&p(2000)), None);
        assert_eq!(t.lookup_canister(&p(u64::MAX)).map(id), Some(3));
        // Shorter principals are numerically smaller than every range here.
        assert_eq!(t.lookup_canister(&Principal::ANONYMOUS), None);
        assert_eq!(t.lookup_canister(&Principal::MANAGEMENT_CANISTER), None);
        // Longer ones are larger.
        assert_eq!(
            t.lookup_canister(&Principal::from_slice(&[0xff; 29]).unwrap()),
            None
        );
        assert_eq!(t.range_count(), 4);
        assert_eq!(t.node_count(), 3);
        assert!(
            t.subnet(&Principal::from_slice(&[2; 29]).unwrap())
                .is_some()
        );
        assert!(
            t.subnet(&Principal::from_slice(&[9; 29]).unwrap())
                .is_none()
        );
    }

    #[test]
    fn a_range_of_one_canister_is_found() {
        let t = RoutingTable::new(vec![subnet(1, &[(5, 5)]), subnet(2, &[(6, 6)])], None).unwrap();
        assert_eq!(t.lookup_canister(&p(5)).unwrap().id.as_slice()[0], 1);
        assert_eq!(t.lookup_canister(&p(6)).unwrap().id.as_slice()[0], 2);
        assert!(t.lookup_canister(&p(4)).is_none());
        assert!(t.lookup_canister(&p(7)).is_none());
    }

    #[test]
    fn invalid_tables_are_rejected_with_every_problem() {
        assert_eq!(
            RoutingTable::new(vec![], None).unwrap_err(),
            TableError::Empty
        );
        let err = RoutingTable::new(
            vec![subnet(1, &[(10, 5), (0, 20)]), subnet(1, &[(15, 30)])],
            None,
        )
        .unwrap_err();
        let TableError::Invalid(problems) = err else {
            panic!("expected Invalid")
        };
        let all = problems.join("\n");
        assert!(all.contains("listed twice"), "{all}");
        assert!(all.contains("after its end"), "{all}");
        assert!(all.contains("overlap"), "{all}");
    }

    #[test]
    fn handle_starts_empty_and_swaps() {
        let h = TableHandle::default();
        assert!(h.load().is_none());
        let t = Arc::new(RoutingTable::new(vec![subnet(1, &[(0, 1)])], Some(vec![1])).unwrap());
        h.store(t.clone());
        assert!(Arc::ptr_eq(&h.load().unwrap(), &t));
        assert_eq!(h.load().unwrap().root_key(), Some(&[1u8][..]));
    }
}
