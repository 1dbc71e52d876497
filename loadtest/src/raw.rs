//! Raw ZeroMQ baseline: the same process layout and socket counts as a
//! Brine run, with no crypto, no auth and no job logic.
//!
//! `raw-top` (PUB + ROUTER) publishes jobs and times the returns,
//! `raw-relay` (SUB + DEALER up, PUB + ROUTER down) stands in for a syndic
//! and forwards every message unchanged apart from a timestamp frame, and
//! `raw-worker` runs many simulated minions (SUB + DEALER each). Invariant:
//! no job is published before every minion has proved, by answering a
//! probe publish, that its subscription reached the top (slow joiners).

pub mod relay;
pub mod top;
pub mod wire;
pub mod worker;

use std::time::{SystemTime, UNIX_EPOCH};

/// Errors of the raw baseline processes.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("zmq: {0}")]
    Zmq(#[from] zmq::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot decode message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("stats: {0}")]
    Stats(#[from] crate::stats::StatsError),
    #[error("bad target {0:?} (want all, list:K or a glob)")]
    Target(String),
    #[error("address {0} is not in 127.0.0.0/8")]
    NotLoopback(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// High-water mark on the fan-in/fan-out sockets of top and relays: large
/// enough that a burst of one return per minion never reaches it, bounded
/// so a stuck peer cannot eat all memory.
pub const BIG_HWM: i32 = 1_000_000;
/// Listen backlog: thousands of minions connect at once (see rust-deps §3).
pub const BACKLOG: i32 = 4096;

/// Nanoseconds since the Unix epoch; one clock shared by all processes on
/// this machine, so timestamps from different processes compare.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The id of simulated minion `idx` (the same in every process).
pub fn minion_id(idx: u32) -> String {
    format!("lt-{idx:05}")
}

/// A timestamp frame (8 bytes little-endian nanoseconds).
pub fn ts_frame(ns: u64) -> Vec<u8> {
    ns.to_le_bytes().to_vec()
}

/// Reads a timestamp frame; anything not 8 bytes long is malformed.
pub fn read_ts(frame: &[u8]) -> Result<u64, RawError> {
    let arr: [u8; 8] = frame
        .try_into()
        .map_err(|_| RawError::Malformed("timestamp frame is not 8 bytes"))?;
    Ok(u64::from_le_bytes(arr))
}

/// Checks that `addr` is an IPv4 loopback address (127.0.0.0/8).
pub fn check_loopback(addr: &str) -> Result<std::net::Ipv4Addr, RawError> {
    let ip: std::net::Ipv4Addr = addr
        .parse()
        .map_err(|_| RawError::NotLoopback(addr.to_string()))?;
    if ip.is_loopback() {
        Ok(ip)
    } else {
        Err(RawError::NotLoopback(addr.to_string()))
    }
}

/// `tcp://addr:port`, or `tcp://addr:*` (a free port) when `port` is 0.
pub fn bind_endpoint(addr: &str, port: u16) -> String {
    if port == 0 {
        format!("tcp://{addr}:*")
    } else {
        format!("tcp://{addr}:{port}")
    }
}

/// The endpoint a socket actually bound (resolves `:*`).
pub fn last_endpoint(sock: &zmq::Socket) -> Result<String, RawError> {
    sock.get_last_endpoint()?
        .map_err(|_| RawError::Malformed("last endpoint is not utf-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(check_loopback("127.0.1.3").is_ok());
        assert!(check_loopback("10.0.0.1").is_err());
        assert!(check_loopback("nonsense").is_err());
    }

    #[test]
    fn timestamps_round_trip() {
        let n = now_ns();
        assert_eq!(read_ts(&ts_frame(n)).unwrap(), n);
        assert!(read_ts(&[1, 2, 3]).is_err());
        assert_eq!(bind_endpoint("127.0.0.1", 0), "tcp://127.0.0.1:*");
        assert_eq!(minion_id(7), "lt-00007");
    }
}
