//! The certified state tree: labeled nodes, hash trees, witnesses and
//! certificates.
//!
//! [`StateNode`] is the full state as labeled subtrees and leaves.
//! [`StateNode::witness`] turns it into a [`HashTree`] that reveals the
//! requested paths (and the neighbouring labels that prove a requested label
//! absent) and prunes everything else; its digest equals the full tree's.

use std::collections::BTreeMap;

use ciborium::Value;
use ic_verify_bls_signature::PrivateKey;
use sha2::{Digest, Sha256};

use crate::hash::Hash;

/// The domain separator of a certificate signature.
pub const STATE_ROOT_DOMAIN: &[u8] = b"\x0Dic-state-root";

/// A node of the full state tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateNode {
    /// A value.
    Leaf(Vec<u8>),
    /// Labeled children.
    Sub(BTreeMap<Vec<u8>, StateNode>),
}

/// A (possibly pruned) hash tree as the interface specification defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashTree {
    /// No children.
    Empty,
    /// Two subtrees, left labels before right labels.
    Fork(Box<HashTree>, Box<HashTree>),
    /// A labeled subtree.
    Labeled(Vec<u8>, Box<HashTree>),
    /// A value.
    Leaf(Vec<u8>),
    /// A subtree replaced by its digest.
    Pruned(Hash),
}

fn domain_hash(domain: &[u8], parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    h.update([u8::try_from(domain.len()).unwrap_or(u8::MAX)]);
    h.update(domain);
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

impl HashTree {
    /// The digest of the tree (the same for a tree and any of its witnesses).
    pub fn digest(&self) -> Hash {
        match self {
            HashTree::Empty => domain_hash(b"ic-hashtree-empty", &[]),
            HashTree::Fork(l, r) => domain_hash(b"ic-hashtree-fork", &[&l.digest(), &r.digest()]),
            HashTree::Labeled(label, t) => {
                domain_hash(b"ic-hashtree-labeled", &[label, &t.digest()])
            }
            HashTree::Leaf(v) => domain_hash(b"ic-hashtree-leaf", &[v]),
            HashTree::Pruned(h) => *h,
        }
    }

    /// The CBOR form: `[0]`, `[1, l, r]`, `[2, label, t]`, `[3, v]`, `[4, h]`.
    pub fn to_cbor(&self) -> Value {
        let n = |i: u8| Value::Integer(i.into());
        match self {
            HashTree::Empty => Value::Array(vec![n(0)]),
            HashTree::Fork(l, r) => Value::Array(vec![n(1), l.to_cbor(), r.to_cbor()]),
            HashTree::Labeled(label, t) => {
                Value::Array(vec![n(2), Value::Bytes(label.clone()), t.to_cbor()])
            }
            HashTree::Leaf(v) => Value::Array(vec![n(3), Value::Bytes(v.clone())]),
            HashTree::Pruned(h) => Value::Array(vec![n(4), Value::Bytes(h.to_vec())]),
        }
    }
}

/// Which paths a witness reveals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    all: bool,
    children: BTreeMap<Vec<u8>, Selection>,
}

impl Selection {
    /// Selects everything below `path` (the empty path selects the whole tree).
    pub fn add(&mut self, path: &[Vec<u8>]) {
        let mut node = self;
        for label in path {
            if node.all {
                return;
            }
            node = node.children.entry(label.clone()).or_default();
        }
        node.all = true;
        node.children.clear();
    }

    /// A selection of the given paths.
    pub fn of(paths: &[Vec<Vec<u8>>]) -> Self {
        let mut s = Selection::default();
        for p in paths {
            s.add(p);
        }
        s
    }
}

impl StateNode {
    /// An empty labeled node.
    pub fn sub() -> Self {
        StateNode::Sub(BTreeMap::new())
    }

    /// Inserts `value` at `path`, creating labeled nodes on the way (a leaf on
    /// the way is replaced).
    pub fn insert(&mut self, path: &[&[u8]], value: StateNode) {
        let Some((last, init)) = path.split_last() else {
            *self = value;
            return;
        };
        let mut node = self;
        for label in init {
            if !matches!(node, StateNode::Sub(_)) {
                *node = StateNode::sub();
            }
            let StateNode::Sub(map) = node else { return };
            node = map.entry(label.to_vec()).or_insert_with(StateNode::sub);
        }
        if !matches!(node, StateNode::Sub(_)) {
            *node = StateNode::sub();
        }
        if let StateNode::Sub(map) = node {
            map.insert(last.to_vec(), value);
        }
    }

    /// The full hash tree.
    pub fn full(&self) -> HashTree {
        self.witness(&Selection {
            all: true,
            children: BTreeMap::new(),
        })
    }

    /// The witness revealing `sel` and pruning the rest.
    pub fn witness(&self, sel: &Selection) -> HashTree {
        match self {
            StateNode::Leaf(v) => HashTree::Leaf(v.clone()),
            StateNode::Sub(map) => {
                let entries: Vec<(&Vec<u8>, &StateNode)> = map.iter().collect();
                let mut keep = vec![Keep::No; entries.len()];
                if sel.all {
                    keep.fill(Keep::Full);
                } else {
                    for label in sel.children.keys() {
                        match entries.binary_search_by(|(l, _)| l.as_slice().cmp(label)) {
                            Ok(i) => keep[i] = Keep::Full,
                            Err(i) => {
                                // Absent: reveal the neighbours' labels.
                                if i > 0 && keep[i - 1] == Keep::No {
                                    keep[i - 1] = Keep::Label;
                                }
                                if i < entries.len() && keep[i] == Keep::No {
                                    keep[i] = Keep::Label;
                                }
                            }
                        }
                    }
                }
                build(&entries, &keep, sel)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    No,
    Label,
    Full,
}

fn build(entries: &[(&Vec<u8>, &StateNode)], keep: &[Keep], sel: &Selection) -> HashTree {
    match entries.len() {
        0 => HashTree::Empty,
        1 => {
            let (label, node) = entries[0];
            let child = match keep[0] {
                Keep::Full if sel.all => node.full(),
                Keep::Full => match sel.children.get(label) {
                    Some(s) => node.witness(s),
                    None => node.full(),
                },
                Keep::Label | Keep::No => HashTree::Pruned(node.full().digest()),
            };
            let t = HashTree::Labeled(label.clone(), Box::new(child));
            if keep[0] == Keep::No {
                HashTree::Pruned(t.digest())
            } else {
                t
            }
        }
        n => {
            let mid = n / 2;
            let l = build(&entries[..mid], &keep[..mid], sel);
            let r = build(&entries[mid..], &keep[mid..], sel);
            let t = HashTree::Fork(Box::new(l), Box::new(r));
            if keep.iter().all(|k| *k == Keep::No) {
                HashTree::Pruned(t.digest())
            } else {
                t
            }
        }
    }
}

/// A delegation from the root key to a subnet's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// The subnet's id (principal bytes).
    pub subnet_id: Vec<u8>,
    /// The root-signed certificate (CBOR) holding the subnet's key and ranges.
    pub certificate: Vec<u8>,
}

/// A certificate for `tree`, signed by `key`, as CBOR with the self-describe
/// tag: `{tree, signature, delegation?}`.
pub fn certificate(tree: &HashTree, key: &PrivateKey, delegation: Option<&Delegation>) -> Vec<u8> {
    let mut msg = STATE_ROOT_DOMAIN.to_vec();
    msg.extend_from_slice(&tree.digest());
    let signature = key.sign(&msg).serialize();
    let mut map = vec![
        (Value::Text("tree".into()), tree.to_cbor()),
        (
            Value::Text("signature".into()),
            Value::Bytes(signature.to_vec()),
        ),
    ];
    if let Some(d) = delegation {
        map.push((
            Value::Text("delegation".into()),
            Value::Map(vec![
                (
                    Value::Text("subnet_id".into()),
                    Value::Bytes(d.subnet_id.clone()),
                ),
                (
                    Value::Text("certificate".into()),
                    Value::Bytes(d.certificate.clone()),
                ),
            ]),
        ));
    }
    crate::cbor::encode_tagged(&Value::Map(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StateNode {
        let mut t = StateNode::sub();
        t.insert(&[b"time"], StateNode::Leaf(vec![1]));
        for i in 0u8..9 {
            t.insert(
                &[b"request_status", &[i * 2], b"status"],
                StateNode::Leaf(b"replied".to_vec()),
            );
        }
        t.insert(
            &[b"subnet", b"s", b"public_key"],
            StateNode::Leaf(vec![7; 4]),
        );
        t
    }

    fn lookup<'a>(t: &'a HashTree, path: &[&[u8]]) -> Result<Option<&'a HashTree>, ()> {
        // Ok(Some) found, Ok(None) proven absent, Err unknown.
        let Some((first, rest)) = path.split_first() else {
            return Ok(Some(t));
        };
        fn flatten<'b>(t: &'b HashTree, out: &mut Vec<&'b HashTree>) {
            match t {
                HashTree::Fork(l, r) => {
                    flatten(l, out);
                    flatten(r, out);
                }
                HashTree::Empty => {}
                other => out.push(other),
            }
        }
        let mut items = Vec::new();
        flatten(t, &mut items);
        let mut unknown = false;
        for item in items {
            match item {
                HashTree::Labeled(l, sub) if l.as_slice() == *first => return lookup(sub, rest),
                HashTree::Labeled(l, _) if l.as_slice() < *first => unknown = false,
                HashTree::Labeled(_, _) => return if unknown { Err(()) } else { Ok(None) },
                HashTree::Pruned(_) => unknown = true,
                _ => return Err(()),
            }
        }
        if unknown { Err(()) } else { Ok(None) }
    }

    #[test]
    fn witness_keeps_the_digest_and_reveals_what_was_asked() {
        let t = sample();
        let full = t.full();
        let w = t.witness(&Selection::of(&[
            vec![b"time".to_vec()],
            vec![b"request_status".to_vec(), vec![4]],
            vec![b"request_status".to_vec(), vec![5]],
        ]));
        assert_eq!(full.digest(), w.digest());
        assert!(matches!(lookup(&w, &[b"time"]), Ok(Some(HashTree::Leaf(v))) if v == &vec![1]));
        assert!(matches!(
            lookup(&w, &[b"request_status", &[4], b"status"]),
            Ok(Some(_))
        ));
        assert_eq!(lookup(&w, &[b"request_status", &[5], b"status"]), Ok(None));
        assert!(lookup(&w, &[b"request_status", &[8], b"status"]).is_err());
        assert!(lookup(&w, &[b"subnet", b"s", b"public_key"]).is_err());
    }

    #[test]
    fn empty_selection_prunes_everything() {
        let t = sample();
        let w = t.witness(&Selection::default());
        assert!(matches!(w, HashTree::Pruned(_)));
        assert_eq!(w.digest(), t.full().digest());
    }
}
