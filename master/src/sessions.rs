//! The signed-in peers of a master (minions and syndics): each one's
//! session key, role and the highest request sequence number seen.
//!
//! A session is created only by a sign-in that proved its key (see
//! [`crate::request_server`]); every sealed request must open under its
//! sender's session key and carry a sequence number above the last one
//! (a replayed request is refused). Dropping a session (a revoked key)
//! makes the peer's next request answer "sign in again".

use brine_common::crypto::AesKey;
use brine_common::proto::Role;
use brine_common::sync::lock;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// A signed-in peer.
struct Session {
    key: AesKey,
    last_seq: u64,
    role: Role,
}

/// What [`Sessions::advance`] found for a request's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seq {
    /// Newer than every request before it: taken.
    Fresh,
    /// Not newer than the last one: a replay, refused.
    Replayed,
    /// The session is gone (revoked meanwhile).
    NoSession,
}

/// Every signed-in peer, by id.
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        lock(&self.by_id)
    }

    /// The session key and role of `id`, if it is signed in.
    pub(crate) fn get(&self, id: &str) -> Option<(AesKey, Role)> {
        self.lock().get(id).map(|s| (s.key.clone(), s.role))
    }

    /// Take `seq` as the newest request of `id` if it is newer than the
    /// last one.
    pub(crate) fn advance(&self, id: &str, seq: u64) -> Seq {
        let mut g = self.lock();
        let Some(s) = g.get_mut(id) else {
            return Seq::NoSession;
        };
        if seq <= s.last_seq {
            return Seq::Replayed;
        }
        s.last_seq = seq;
        Seq::Fresh
    }

    /// A new session for `id` (replacing any older one).
    pub(crate) fn insert(&self, id: &str, key: AesKey, role: Role) {
        self.lock().insert(
            id.to_string(),
            Session {
                key,
                last_seq: 0,
                role,
            },
        );
    }

    /// Whether a sign-in of `id` must be refused because `max` peers are
    /// signed in already (0: no limit). A peer signing in again always
    /// has room.
    pub(crate) fn full_for(&self, id: &str, max: usize) -> bool {
        if max == 0 {
            return false;
        }
        let g = self.lock();
        g.len() >= max && !g.contains_key(id)
    }

    /// Drop the sessions of `revoked`; the remaining peers and their
    /// session keys (to hand them a new publish key).
    pub(crate) fn revoke(&self, revoked: &[String]) -> Vec<(String, AesKey)> {
        let mut g = self.lock();
        for id in revoked {
            g.remove(id);
        }
        g.iter().map(|(k, v)| (k.clone(), v.key.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_only_go_up() {
        let s = Sessions::default();
        assert_eq!(s.advance("m1", 1), Seq::NoSession);
        s.insert("m1", AesKey::random(), Role::Minion);
        assert_eq!(s.advance("m1", 0), Seq::Replayed, "0 is never fresh");
        assert_eq!(s.advance("m1", 5), Seq::Fresh);
        assert_eq!(s.advance("m1", 5), Seq::Replayed);
        assert_eq!(s.advance("m1", 3), Seq::Replayed);
        assert_eq!(s.advance("m1", 6), Seq::Fresh);
        // A new sign-in starts over.
        s.insert("m1", AesKey::random(), Role::Minion);
        assert_eq!(s.advance("m1", 1), Seq::Fresh);
    }

    #[test]
    fn revoked_sessions_are_gone_and_the_rest_listed() {
        let s = Sessions::default();
        s.insert("m1", AesKey::random(), Role::Minion);
        s.insert("s1", AesKey::random(), Role::Syndic);
        assert_eq!(s.get("s1").map(|(_, r)| r), Some(Role::Syndic));
        let rest = s.revoke(&["m1".to_string()]);
        assert_eq!(
            rest.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ["s1"]
        );
        assert!(s.get("m1").is_none());
        assert_eq!(s.advance("m1", 9), Seq::NoSession);
    }

    #[test]
    fn a_full_master_still_takes_known_peers() {
        let s = Sessions::default();
        assert!(!s.full_for("m1", 0));
        s.insert("m1", AesKey::random(), Role::Minion);
        assert!(s.full_for("m2", 1));
        assert!(!s.full_for("m1", 1), "signing in again is not a new peer");
        assert!(!s.full_for("m2", 2));
        assert!(!s.full_for("m2", 0), "0 is no limit");
    }
}
