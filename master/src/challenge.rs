//! Sign-in challenges: the master's half of "a sign-in proves possession of
//! the private key".
//!
//! The first round of a sign-in gets a challenge that costs the master no
//! RSA work and no memory: it is the issue time sealed (AES-256-GCM) under
//! a key that lives only in this process, bound to the id and nonce it was
//! issued for. The second round must bring it back, signed by the peer's
//! key, within [`CHALLENGE_TTL`]. Each challenge is taken once: the set of
//! used ones is kept until they expire, so a captured signed sign-in sent
//! again is refused, and a restarted master (new key) accepts no challenge
//! of its previous life. The set is bounded ([`MAX_USED`]); past it, a
//! sign-in is turned away (counted) rather than remembered without bound.

use brine_common::crypto::AesKey;
use brine_common::proto::now_us;
use brine_common::sync::lock;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// How long a challenge may be answered. A peer answers at once (one RSA
/// signature); the margin covers a master whose sign-in queue is long.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);

/// Used challenges remembered at most (about 40 bytes each, with the
/// queue entry ~100 bytes: 10 MB). A sign-in storm of 5000 minions uses
/// 5000; reaching this takes ~1700 signed sign-ins a second for a minute.
pub const MAX_USED: usize = 100_000;

/// What a returned challenge is worth.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Issued by this process for this id and nonce, in time, first use.
    Fresh,
    /// Not ours, not for this id/nonce, or too old: ask for a new round.
    Invalid,
    /// Already used: a replayed sign-in.
    Replayed,
    /// Too many used challenges to remember: try again later.
    Busy,
}

#[derive(Default)]
struct Used {
    set: HashSet<Vec<u8>>,
    /// (issue time in µs, challenge), in the order they were used.
    order: VecDeque<(u64, Vec<u8>)>,
}

pub struct Challenges {
    key: AesKey,
    used: Mutex<Used>,
}

fn aad(id: &str, nonce: &[u8]) -> Vec<u8> {
    let mut v = b"chal:".to_vec();
    v.extend_from_slice(&(id.len() as u32).to_be_bytes());
    v.extend_from_slice(id.as_bytes());
    v.extend_from_slice(nonce);
    v
}

impl Default for Challenges {
    fn default() -> Self {
        Self::new()
    }
}

impl Challenges {
    pub fn new() -> Self {
        Self {
            key: AesKey::random(),
            used: Mutex::new(Used::default()),
        }
    }

    /// A challenge for a sign-in of `id` with `nonce` (no state kept).
    pub fn issue(&self, id: &str, nonce: &[u8]) -> Vec<u8> {
        self.issue_at(id, nonce, now_us())
    }

    fn issue_at(&self, id: &str, nonce: &[u8], now: u64) -> Vec<u8> {
        self.key.seal(&aad(id, nonce), &now.to_be_bytes())
    }

    /// Checks a challenge brought back by a signed sign-in and marks it
    /// used. Marking happens before the signature is checked, under one
    /// lock, so two copies of one sign-in can never both pass.
    pub fn check(&self, id: &str, nonce: &[u8], challenge: &[u8]) -> Check {
        self.check_at(id, nonce, challenge, now_us())
    }

    fn check_at(&self, id: &str, nonce: &[u8], challenge: &[u8], now: u64) -> Check {
        let Ok(plain) = self.key.open(&aad(id, nonce), challenge) else {
            return Check::Invalid;
        };
        let Ok(bytes) = <[u8; 8]>::try_from(plain.as_slice()) else {
            return Check::Invalid;
        };
        let issued = u64::from_be_bytes(bytes);
        let ttl = CHALLENGE_TTL.as_micros() as u64;
        if issued > now.saturating_add(1_000_000) || now.saturating_sub(issued) > ttl {
            return Check::Invalid;
        }
        let mut used = lock(&self.used);
        while let Some((t, _)) = used.order.front() {
            if now.saturating_sub(*t) <= ttl {
                break;
            }
            if let Some((_, c)) = used.order.pop_front() {
                used.set.remove(&c);
            }
        }
        if used.set.contains(challenge) {
            return Check::Replayed;
        }
        if used.set.len() >= MAX_USED {
            return Check::Busy;
        }
        used.set.insert(challenge.to_vec());
        used.order.push_back((issued, challenge.to_vec()));
        Check::Fresh
    }

    /// Used challenges remembered now.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        lock(&self.used).set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_good_once_for_its_id_and_nonce() {
        let c = Challenges::new();
        let ch = c.issue("m1", &[1; 32]);
        assert_eq!(c.check("m2", &[1; 32], &ch), Check::Invalid, "other id");
        assert_eq!(c.check("m1", &[2; 32], &ch), Check::Invalid, "other nonce");
        assert_eq!(c.check("m1", &[1; 32], &ch), Check::Fresh);
        assert_eq!(c.check("m1", &[1; 32], &ch), Check::Replayed);
        let mut forged = ch.clone();
        forged[20] ^= 1;
        assert_eq!(c.check("m1", &[1; 32], &forged), Check::Invalid);
        // Another master process (another key) issued it: not ours.
        let other = Challenges::new().issue("m1", &[1; 32]);
        assert_eq!(c.check("m1", &[1; 32], &other), Check::Invalid);
    }

    #[test]
    fn challenges_expire_and_the_used_set_forgets_expired_ones() {
        let c = Challenges::new();
        let ttl = CHALLENGE_TTL.as_micros() as u64;
        let t0 = now_us();
        let ch = c.issue_at("m1", &[1; 32], t0);
        assert_eq!(
            c.check_at("m1", &[1; 32], &ch, t0 + ttl + 1),
            Check::Invalid
        );
        assert_eq!(c.check_at("m1", &[1; 32], &ch, t0 + 1), Check::Fresh);
        assert_eq!(c.remembered(), 1);
        // Later, the first has expired: it is forgotten (it could not pass
        // any more anyway) when the next one is taken.
        let t1 = t0 + ttl + 10;
        let ch2 = c.issue_at("m2", &[2; 32], t1);
        assert_eq!(c.check_at("m2", &[2; 32], &ch2, t1 + 1), Check::Fresh);
        assert_eq!(c.remembered(), 1);
        assert_eq!(c.check_at("m1", &[1; 32], &ch, t1 + 1), Check::Invalid);
    }
}
