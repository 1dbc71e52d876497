//! Consistent hashing of daemon ids onto the syndics that may serve them.
//!
//! Every syndic sits on a `hashring` ring [`VNODES`] times (its id plus a
//! replica number is what is hashed), so ids spread evenly and adding a
//! syndic to a datacenter moves only about `1/(S+1)` of its hosts, all of
//! them to the new syndic. Invariant: the same syndic ids give the same
//! owner for an id in every run and every process (the ring hashes with
//! SipHash under fixed keys), which is what makes rendering deterministic.
//! The same scheme as the load test's `SyndicRing`.

use hashring::HashRing;
use std::hash::{Hash, Hasher};

/// Virtual nodes per syndic: enough for an even spread over a handful of
/// syndics, cheap to build for hundreds.
pub const VNODES: u32 = 160;

/// One place of a syndic on the ring. Only `owner` and `replica` are
/// hashed, so a syndic's places do not depend on its position in the list.
#[derive(Debug, Clone)]
struct Point {
    owner: String,
    replica: u32,
}

impl Hash for Point {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.owner.hash(state);
        self.replica.hash(state);
    }
}

/// The syndics of one datacenter as a ring.
#[derive(Debug)]
pub struct Ring {
    ring: HashRing<Point>,
    /// The first syndic, the answer should the ring ever be empty.
    first: String,
}

impl Ring {
    /// A ring over `owners`; None when there are none.
    pub fn new<S: AsRef<str>>(owners: &[S]) -> Option<Ring> {
        let first = owners.first()?.as_ref().to_string();
        let mut ring = HashRing::new();
        ring.batch_add(
            owners
                .iter()
                .flat_map(|o| {
                    (0..VNODES).map(move |replica| Point {
                        owner: o.as_ref().to_string(),
                        replica,
                    })
                })
                .collect(),
        );
        Some(Ring { ring, first })
    }

    /// The syndic that serves `id`.
    pub fn owner(&self, id: &str) -> &str {
        self.ring.get(&id).map_or(self.first.as_str(), |p| &p.owner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("web{i}.dc1.example.com")).collect()
    }

    #[test]
    fn no_syndics_no_ring_and_one_syndic_serves_all() {
        let none: [&str; 0] = [];
        assert!(Ring::new(&none).is_none());
        let one = Ring::new(&["syn-a"]).unwrap();
        assert!(hosts(50).iter().all(|h| one.owner(h) == "syn-a"));
    }

    #[test]
    fn same_syndics_same_owner_whatever_their_order() {
        let a = Ring::new(&["s1", "s2", "s3"]).unwrap();
        let b = Ring::new(&["s3", "s1", "s2"]).unwrap();
        for h in hosts(1000) {
            assert_eq!(a.owner(&h), b.owner(&h));
        }
    }

    #[test]
    fn spread_is_even_enough() {
        let ring = Ring::new(&["s1", "s2", "s3", "s4"]).unwrap();
        let mut count = std::collections::BTreeMap::new();
        for h in hosts(4000) {
            *count.entry(ring.owner(&h).to_string()).or_insert(0usize) += 1;
        }
        assert_eq!(count.len(), 4);
        for (s, n) in &count {
            assert!((700..=1300).contains(n), "{s} serves {n} of 4000");
        }
    }

    #[test]
    fn adding_a_syndic_moves_about_one_in_s_plus_one_and_only_to_it() {
        let before = Ring::new(&["s1", "s2", "s3", "s4"]).unwrap();
        let after = Ring::new(&["s1", "s2", "s3", "s4", "s5"]).unwrap();
        let all = hosts(5000);
        let mut moved = 0usize;
        for h in &all {
            let (old, new) = (before.owner(h), after.owner(h));
            if old != new {
                assert_eq!(new, "s5", "{h} moved from {old} to {new}");
                moved += 1;
            }
        }
        let f = moved as f64 / all.len() as f64;
        assert!((0.12..=0.28).contains(&f), "moved {f}, expected about 0.2");
    }
}
