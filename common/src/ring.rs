//! Consistent hashing of ids onto syndics, with virtual nodes: where the
//! load test puts its simulated minions and where `brine-fleet` puts a
//! datacenter's hosts (and a nested datacenter's syndics).
//!
//! Each syndic is placed on a `hashring` ring `vnodes` times (as the
//! replica key `name#k`), so ids spread evenly and adding one syndic moves
//! only about `1/(S+1)` of them. Invariant: the same syndic names and vnode
//! count always give the same assignment, in every process, because the
//! ring's hasher is SipHash with fixed keys.

use hashring::HashRing;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// Errors building a syndic ring.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    /// A ring without syndics cannot place any minion.
    #[error("ring needs at least one syndic")]
    Empty,
    /// Zero virtual nodes would leave the ring empty.
    #[error("ring needs at least one virtual node per syndic")]
    NoVnodes,
    /// Two syndics with one name would be indistinguishable on the ring.
    #[error("duplicate syndic name {0}")]
    Duplicate(String),
}

/// One virtual node: the syndic's index plus its replica number. Only the
/// name and replica number are hashed, so the position does not depend on
/// the index (adding a syndic leaves old positions where they were).
#[derive(Debug, Clone)]
struct VNode {
    /// Index into `SyndicRing::names`; not hashed.
    syndic: usize,
    /// Hashed: the syndic's name.
    name: String,
    /// Hashed: which replica of the syndic this is.
    replica: u32,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.replica.hash(state);
    }
}

/// A consistent-hash ring of syndic names.
#[derive(Debug)]
pub struct SyndicRing {
    /// Syndic names in the order given; indices returned by `assign_index`.
    names: Vec<String>,
    /// Virtual nodes per syndic, kept to rebuild the ring with one more.
    vnodes: u32,
    ring: HashRing<VNode>,
}

impl SyndicRing {
    /// Builds a ring with `vnodes` virtual nodes per syndic.
    pub fn new<S: AsRef<str>>(names: &[S], vnodes: u32) -> Result<Self, RingError> {
        if names.is_empty() {
            return Err(RingError::Empty);
        }
        if vnodes == 0 {
            return Err(RingError::NoVnodes);
        }
        let mut owned: Vec<String> = Vec::with_capacity(names.len());
        for n in names {
            let n = n.as_ref().to_string();
            if owned.contains(&n) {
                return Err(RingError::Duplicate(n));
            }
            owned.push(n);
        }
        let mut nodes = Vec::with_capacity(owned.len() * vnodes as usize);
        for (syndic, name) in owned.iter().enumerate() {
            for replica in 0..vnodes {
                nodes.push(VNode {
                    syndic,
                    name: name.clone(),
                    replica,
                });
            }
        }
        let mut ring = HashRing::new();
        ring.batch_add(nodes);
        Ok(Self {
            names: owned,
            vnodes,
            ring,
        })
    }

    /// Index (into `names()`) of the syndic that owns `id`.
    pub fn assign_index(&self, id: &str) -> usize {
        // The ring is never empty (checked in `new`), so `get` is `Some`.
        self.ring.get(&id).map_or(0, |v| v.syndic)
    }

    /// Name of the syndic that owns `id`.
    pub fn assign(&self, id: &str) -> &str {
        &self.names[self.assign_index(id)]
    }

    /// How many of `ids` each syndic owns, by name (every syndic listed).
    pub fn balance<S: AsRef<str>>(&self, ids: &[S]) -> BTreeMap<String, usize> {
        let mut counts: Vec<usize> = vec![0; self.names.len()];
        for id in ids {
            counts[self.assign_index(id.as_ref())] += 1;
        }
        self.names.iter().cloned().zip(counts).collect()
    }

    /// Fraction of `ids` whose syndic changes when `new_syndic` joins.
    pub fn moved_fraction<S: AsRef<str>>(
        &self,
        ids: &[S],
        new_syndic: &str,
    ) -> Result<f64, RingError> {
        if ids.is_empty() {
            return Ok(0.0);
        }
        let mut names = self.names.clone();
        names.push(new_syndic.to_string());
        let bigger = SyndicRing::new(&names, self.vnodes)?;
        let moved = ids
            .iter()
            .filter(|id| bigger.assign(id.as_ref()) != self.assign(id.as_ref()))
            .count();
        Ok(moved as f64 / ids.len() as f64)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("lt-{i:05}")).collect()
    }

    #[test]
    fn rejects_bad_input() {
        let none: [&str; 0] = [];
        assert_eq!(SyndicRing::new(&none, 10).err(), Some(RingError::Empty));
        assert_eq!(SyndicRing::new(&["a"], 0).err(), Some(RingError::NoVnodes));
        assert_eq!(
            SyndicRing::new(&["a", "a"], 4).err(),
            Some(RingError::Duplicate("a".into()))
        );
    }

    #[test]
    fn assignment_is_deterministic() {
        let a = SyndicRing::new(&["s1", "s2", "s3"], 100).unwrap();
        let b = SyndicRing::new(&["s1", "s2", "s3"], 100).unwrap();
        for id in ids(500) {
            assert_eq!(a.assign(&id), b.assign(&id));
        }
    }

    #[test]
    fn balance_is_within_tolerance_and_complete() {
        let ring = SyndicRing::new(&["s1", "s2", "s3", "s4"], 160).unwrap();
        let all = ids(5000);
        let bal = ring.balance(&all);
        assert_eq!(bal.len(), 4);
        assert_eq!(bal.values().sum::<usize>(), 5000);
        for (name, n) in &bal {
            assert!((900..=1600).contains(n), "{name} got {n}");
        }
    }

    #[test]
    fn adding_a_syndic_moves_about_one_in_s_plus_one() {
        let ring = SyndicRing::new(&["s1", "s2", "s3", "s4"], 160).unwrap();
        let f = ring.moved_fraction(&ids(5000), "s5").unwrap();
        assert!((0.12..=0.28).contains(&f), "moved {f}");
        // Moved ids only ever go to the new syndic.
        let bigger = SyndicRing::new(&["s1", "s2", "s3", "s4", "s5"], 160).unwrap();
        for id in ids(2000) {
            let (old, new) = (ring.assign(&id), bigger.assign(&id));
            assert!(old == new || new == "s5");
        }
    }

    #[test]
    fn single_syndic_owns_everything() {
        let ring = SyndicRing::new(&["only"], 1).unwrap();
        assert_eq!(ring.balance(&ids(10))["only"], 10);
        assert_eq!(ring.moved_fraction::<String>(&[], "x").unwrap(), 0.0);
    }
}
