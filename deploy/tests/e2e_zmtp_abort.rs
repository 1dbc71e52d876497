//! A libzmq 4.3.4 defect against a real master: an engine whose inbound
//! queue is full (4506 keeps 8 requests per peer), whose connection then
//! fails, aborts the whole process when it is restarted with a ZMTP PING
//! still buffered (`stream_engine_base.cpp:331`, `!_io_error`; libzmq
//! issue 4841). A syndic frozen for 20 s died this way as its own minions
//! reconnected; Brine's peers no longer send ZMTP PINGs on the request
//! channel (`transport::Side::Request`). Any TCP client can send one,
//! though: this drives 20 hand-made ZMTP 3.1 peers at once, each sending
//! a burst of requests, a PING and a reset, five times over, and checks
//! the master lives on. It did in every run so far (the master drains its
//! queues faster than the resets arrive); see docs/SECURITY.md.

use brine_deploy::topology::Topology;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// A ZMTP 3.1 DEALER over plain TCP: greeting (NULL mechanism) and READY.
fn zmtp31_dealer(addr: &str) -> TcpStream {
    brine_deploy::hostile::zmtp_peer(addr, 4506, "DEALER", 1).expect("zmtp peer")
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.contains("State:\tZ"))
        .unwrap_or(false)
}

#[test]
fn a_burst_a_ping_and_a_reset_do_not_kill_the_master() {
    let topo = Topology::builder()
        .direct_minions(1)
        .start(Duration::from_secs(30))
        .expect("topology");
    let pid = topo.pid("top").expect("pid");
    let addr = topo.top.addr.clone();
    // Many peers at once, so the master's request loop falls behind and
    // the per-peer queues stay full when the resets arrive.
    let mut burst = Vec::new();
    // 4000 one-byte requests each (msgpack nil: refused as malformed), far
    // more than the 8 the master queues per peer...
    for _ in 0..4000 {
        burst.extend([0u8, 1, 0xc0]);
    }
    // ...then a ZMTP PING (ttl 0)...
    burst.extend([0x04u8, 7, 4, b'P', b'I', b'N', b'G', 0, 0]);
    for _round in 0..5 {
        let mut peers: Vec<TcpStream> = (0..20).map(|_| zmtp31_dealer(&addr)).collect();
        for s in peers.iter_mut() {
            let _ = s.write_all(&burst);
        }
        // ...and a reset instead of a close.
        for s in peers {
            let _ = nix::sys::socket::setsockopt(
                &s,
                nix::sys::socket::sockopt::Linger,
                &nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            );
            drop(s);
        }
        std::thread::sleep(Duration::from_millis(300));
        if !alive(pid) {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(alive(pid), "the master died:\n{}", topo.log("top"));
    let out = topo
        .salt(&["*", "test.ping", "--out", "json"])
        .expect("salt");
    assert_eq!(out.status.code(), Some(0), "{}", topo.log("top"));
}
