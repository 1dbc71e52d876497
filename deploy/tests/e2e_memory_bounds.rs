//! Unauthenticated input cannot grow a real master's memory. Each test
//! drives a hand-made ZMTP peer (raw TCP on loopback, so it can send what
//! libzmq itself never would) against a running `salt-master`, measures
//! the master's resident memory (`VmRSS`) before and after the attack,
//! asserts a bound with a wide margin, and checks that the master still
//! answers `salt '*' test.ping`. The bounds and the figures measured are in
//! docs/SECURITY.md ("Memory bounds of unauthenticated input").

use brine_deploy::memory::rss_kib;
use brine_deploy::topology::Topology;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Growth of the master's RSS an attack may cause (the attacks below
/// would cost 128-256 MiB without the bounds).
const MAX_GROWTH_KIB: u64 = 48 * 1024;

fn start() -> (Topology, u32) {
    let topo = Topology::builder()
        .direct_minions(1)
        .start(Duration::from_secs(30))
        .expect("topology");
    let pid = topo.pid("top").expect("master pid");
    (topo, pid)
}

/// The master still serves: its minion answers a ping.
fn still_serves(topo: &Topology) {
    let out = topo
        .salt(&["*", "test.ping", "--out", "json", "--static"])
        .expect("ping");
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", topo.log("top"));
}

/// A ZMTP 3.0 peer over plain TCP: greeting with the NULL mechanism and a
/// READY command naming `socket_type`.
fn zmtp_peer(addr: &str, port: u16, socket_type: &str) -> TcpStream {
    brine_deploy::hostile::zmtp_peer(addr, port, socket_type, 0).expect("zmtp peer")
}

/// One ZMTP frame header (long form) for `size` bytes.
fn long_frame_header(size: u64, more: bool) -> Vec<u8> {
    let mut h = vec![if more { 0x03 } else { 0x02 }];
    h.extend(size.to_be_bytes());
    h
}

/// Writes `chunks` MiB of filler; stops at the first error (the master
/// closed the connection). Returns the MiB written.
fn write_mib(s: &mut TcpStream, chunks: usize, frame_each: bool) -> usize {
    let mib = vec![0x5au8; 1 << 20];
    for i in 0..chunks {
        if frame_each && s.write_all(&long_frame_header(1 << 20, true)).is_err() {
            return i;
        }
        if s.write_all(&mib).is_err() {
            return i;
        }
    }
    chunks
}

fn report(what: &str, before: u64, after: u64, extra: &str) {
    eprintln!(
        "{what}: master RSS {} KiB before, {} KiB after (+{} KiB){extra}",
        before,
        after,
        after.saturating_sub(before)
    );
}

#[test]
fn subscription_flood_on_the_publish_port_is_bounded() {
    let (topo, pid) = start();
    let before = rss_kib(pid);
    // 8 MiB of distinct subscriptions (65536 of 128 bytes), ZMTP 3.0 style
    // (a data frame: 0x01 + topic).
    let mut s = zmtp_peer(&topo.top.addr, 4505, "SUB");
    let mut sent = 0usize;
    let mut buf = Vec::with_capacity(1 << 20);
    for i in 0..65_536u32 {
        let mut topic = vec![0x01u8];
        topic.extend(format!("M:flood-{i:08}-").as_bytes());
        topic.resize(129, b'x');
        buf.push(0x00);
        buf.push(topic.len() as u8);
        buf.extend(topic);
        if buf.len() >= 1 << 20 {
            if s.write_all(&buf).is_err() {
                break;
            }
            sent += buf.len();
            buf.clear();
        }
    }
    if s.write_all(&buf).is_ok() {
        sent += buf.len();
    }
    // Wait until the master dealt with them: either it refused the peer
    // (counted) or its memory grew past the bound.
    let refused = |t: &Topology| {
        t.stats()["subscriptions_refused"].as_u64().unwrap_or(0) >= 1
            && t.stats()["publish_peers_dropped"].as_u64().unwrap_or(0) >= 1
    };
    let _ = topo.eventually(Duration::from_secs(20), "flood handled", || {
        refused(&topo) || rss_kib(pid) > before + MAX_GROWTH_KIB
    });
    let after = rss_kib(pid);
    report(
        "subscription flood",
        before,
        after,
        &format!(", {sent} bytes of subscriptions sent"),
    );
    assert!(
        after <= before + MAX_GROWTH_KIB,
        "RSS grew from {before} to {after} KiB"
    );
    assert!(refused(&topo), "{}", topo.stats());
    drop(s);
    still_serves(&topo);
}

#[test]
fn huge_frame_header_on_the_publish_port_is_refused() {
    let (topo, pid) = start();
    let before = rss_kib(pid);
    let mut s = zmtp_peer(&topo.top.addr, 4505, "SUB");
    // A 4 GiB frame, then 256 MiB of it.
    let header_ok = s.write_all(&long_frame_header(4 << 30, false)).is_ok();
    let t = Instant::now();
    let written = if header_ok {
        write_mib(&mut s, 256, false)
    } else {
        0
    };
    let after = rss_kib(pid);
    report(
        "4 GiB frame header on 4505",
        before,
        after,
        &format!(", {written} MiB written in {:?}", t.elapsed()),
    );
    assert!(
        after <= before + MAX_GROWTH_KIB,
        "RSS grew from {before} to {after} KiB"
    );
    drop(s);
    still_serves(&topo);
}

/// libzmq 4.3.4 keeps the frames of an unfinished message outside its
/// high-water mark; the master's request-port guard measures what each
/// connection holds and closes one holding more than one frame (see
/// docs/SECURITY.md), which frees it all.
#[test]
fn unfinished_multipart_on_the_request_port_is_bounded() {
    let (topo, pid) = start();
    let before = rss_kib(pid);
    let mut s = zmtp_peer(&topo.top.addr, 4506, "DEALER");
    // 256 frames of 1 MiB, each saying "more follows", and never the last.
    let t = Instant::now();
    let written = write_mib(&mut s, 256, true);
    let after = rss_kib(pid);
    report(
        "unfinished multipart on 4506",
        before,
        after,
        &format!(", {written} MiB written in {:?}", t.elapsed()),
    );
    assert!(
        after <= before + MAX_GROWTH_KIB,
        "RSS grew from {before} to {after} KiB"
    );
    assert!(written < 256, "the master never closed the connection");
    assert!(
        topo.eventually(Duration::from_secs(10), "drop counted", || {
            topo.stats()["request_peers_dropped"].as_u64().unwrap_or(0) >= 1
        })
        .is_ok(),
        "{}",
        topo.stats()
    );
    drop(s);
    still_serves(&topo);
}
