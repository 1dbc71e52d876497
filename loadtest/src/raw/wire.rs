//! Messages of the raw baseline, msgpack-encoded in the first frame.
//!
//! Down (PUB) frames: `[Down, ts_tier1, .., ts_tierT]`; each relay appends
//! the time it received the message. Up (DEALER) frames from a minion:
//! `[Up, payload]`; each relay appends its receive time, so the top sees
//! `[Up, payload, ts_tierT, .., ts_tier1]`. Invariant: decoding never
//! panics; a bad frame is an error the caller counts.

use serde::{Deserialize, Serialize};

/// Which minions a job is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireTarget {
    /// Every minion.
    All,
    /// Minions whose id matches the glob.
    Glob(String),
    /// Minions with these indices (sorted, so minions binary-search).
    List(Vec<u32>),
}

impl WireTarget {
    /// Whether minion `idx` with id `id` is targeted.
    pub fn matches(&self, idx: u32, id: &str) -> bool {
        match self {
            WireTarget::All => true,
            WireTarget::Glob(g) => brine_common::glob::fnmatch(g, id),
            WireTarget::List(l) => l.binary_search(&idx).is_ok(),
        }
    }

    /// Parses `all`, `list:K` (K minions spread evenly over `0..total`) or
    /// any other string as a glob.
    pub fn parse(spec: &str, total: u32) -> Result<Self, super::RawError> {
        if spec == "all" || spec == "*" {
            return Ok(WireTarget::All);
        }
        if let Some(k) = spec.strip_prefix("list:") {
            let k: u64 = k
                .parse()
                .map_err(|_| super::RawError::Target(spec.to_string()))?;
            if k == 0 || k > u64::from(total) {
                return Err(super::RawError::Target(spec.to_string()));
            }
            let mut v: Vec<u32> = (0..k).map(|i| (i * u64::from(total) / k) as u32).collect();
            v.dedup();
            return Ok(WireTarget::List(v));
        }
        if spec.is_empty() {
            return Err(super::RawError::Target(spec.to_string()));
        }
        Ok(WireTarget::Glob(spec.to_string()))
    }

    /// How many of minions `0..total` are targeted.
    pub fn expected(&self, total: u32) -> u32 {
        match self {
            WireTarget::All => total,
            WireTarget::List(l) => l.len() as u32,
            WireTarget::Glob(_) => (0..total)
                .filter(|&i| self.matches(i, &super::minion_id(i)))
                .count() as u32,
        }
    }
}

/// A message published by the top.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Down {
    /// Readiness probe: every minion acks the first one it sees.
    Probe { seq: u32 },
    /// A job; `t_pub_ns` is the top's clock when it was published.
    Job {
        jid: u64,
        t_pub_ns: u64,
        target: WireTarget,
        fun: String,
    },
    /// End of run: relays forward it and exit, minions exit.
    Stop,
}

/// A message sent by a minion towards the top.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Up {
    /// Sent once after connecting: proves the DEALER path.
    Hello { idx: u32 },
    /// Answer to the first probe seen: proves the SUB path.
    ProbeAck { idx: u32, seq: u32 },
    /// A job return; the payload travels in the next frame.
    Reply {
        idx: u32,
        jid: u64,
        t_pub_ns: u64,
        /// When the first-tier relay received the publish.
        t_relay_first_ns: u64,
        /// When the last-tier relay (the minion's own) received it.
        t_relay_last_ns: u64,
        t_recv_ns: u64,
        t_sent_ns: u64,
    },
}

/// Encodes a message for a frame.
pub fn encode<T: Serialize>(m: &T) -> Result<Vec<u8>, super::RawError> {
    Ok(rmp_serde::to_vec(m)?)
}

/// Decodes a frame.
pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, super::RawError> {
    Ok(rmp_serde::from_slice(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(WireTarget::parse("all", 10).unwrap(), WireTarget::All);
        let l = WireTarget::parse("list:4", 10).unwrap();
        assert_eq!(l, WireTarget::List(vec![0, 2, 5, 7]));
        assert!(l.matches(5, "lt-00005") && !l.matches(4, "lt-00004"));
        assert!(WireTarget::parse("list:0", 10).is_err());
        assert!(WireTarget::parse("list:11", 10).is_err());
        assert!(WireTarget::parse("list:x", 10).is_err());
        let g = WireTarget::parse("lt-0000[", 10).unwrap();
        assert_eq!(g.expected(10), 0);
        assert_eq!(WireTarget::parse("lt-0000*", 20).unwrap().expected(20), 10);
    }

    #[test]
    fn round_trip_and_garbage() {
        let m = Up::Reply {
            idx: 3,
            jid: 9,
            t_pub_ns: 1,
            t_relay_first_ns: 2,
            t_relay_last_ns: 3,
            t_recv_ns: 4,
            t_sent_ns: 5,
        };
        let back: Up = decode(&encode(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert!(decode::<Down>(&[0xc1, 0xff, 0x00]).is_err());
        assert!(decode::<Down>(&[]).is_err());
    }
}
