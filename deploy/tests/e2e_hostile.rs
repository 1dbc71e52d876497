//! Hostile input against a real master: garbage bytes on 4505/4506,
//! malformed and oversized frames, a minion that forges another minion's
//! return or claims its id, a replayed request. Nothing crashes, each is
//! counted, the fleet keeps working.

use brine_common::codec;
use brine_common::proto::*;
use brine_common::session::ServerMsg;
use brine_deploy::peer::HandPeer;
use brine_deploy::topology::Topology;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn hostile_peers_are_refused_and_counted() {
    let topo = Topology::builder()
        .direct_minions(2)
        .start(Duration::from_secs(30))
        .expect("topology");
    let addr = topo.top.addr.clone();

    // Raw garbage on both ports.
    for port in [4505, 4506] {
        let mut s = std::net::TcpStream::connect((addr.as_str(), port)).expect("tcp");
        let _ = s.write_all(&[0xffu8; 4096]);
        let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n");
    }
    // Well-formed zmq, malformed payloads.
    let ctx = zmq::Context::new();
    let raw = ctx.socket(zmq::DEALER).expect("dealer");
    raw.set_linger(0).expect("linger");
    raw.set_rcvtimeo(5000).expect("timeout");
    raw.connect(&format!("tcp://{addr}:4506")).expect("connect");
    raw.send(&b"\xc1\xc1 not msgpack"[..], 0).expect("send");
    let answer = raw.recv_bytes(0).expect("an error answer, not silence");
    assert!(matches!(
        codec::decode_wire(&answer, 1 << 20),
        Ok(Wire::Error(_))
    ));
    raw.send_multipart([&b"two"[..], &b"frames"[..]], 0)
        .expect("send");
    // Oversized: over max_frame_bytes is cut by libzmq (maxmsgsize), not buffered.
    let _ = raw.send(vec![0u8; 17 * 1024 * 1024], 0);

    // A minion that forges minion1's return.
    let mut evil = HandPeer::new(&ctx, &addr, "evil", Role::Minion).expect("peer");
    evil.sign_in().expect("sign in");
    let (_, m) = evil
        .request_raw(RequestBody::Hello {
            grains: serde_json::json!({}),
            version: "x".into(),
        })
        .expect("answer");
    assert!(matches!(
        m,
        ServerMsg::Reply(Reply {
            body: ReplyBody::Ok,
            ..
        })
    ));
    let forged = ReturnLoad {
        jid: "20260101000000000000".parse().expect("jid"),
        id: "minion1".into(),
        fun: "test.ping".into(),
        fun_args: vec![],
        ret: Value::Bool(false),
        retcode: 0,
        success: true,
        out: None,
        trace: None,
    };
    let (frame, m) = evil
        .request_raw(RequestBody::Return(forged.clone()))
        .expect("answer");
    assert!(
        matches!(
            m,
            ServerMsg::Reply(Reply {
                body: ReplyBody::Refused(_),
                ..
            })
        ),
        "{m:?}"
    );
    // The same sealed frame again: a replay.
    evil.sock.send(frame, 0).expect("replay");
    let m = evil.recv().expect("answer");
    assert!(
        matches!(
            m,
            ServerMsg::Reply(Reply {
                body: ReplyBody::Refused(_),
                ..
            })
        ),
        "{m:?}"
    );
    // Claiming minion1's id on the outside, sealed with our own key.
    let sealed = codec::encode_wire(Wire::Sealed {
        id: "minion1".into(),
        data: vec![7u8; 64],
    })
    .expect("enc");
    evil.sock.send(sealed, 0).expect("send");
    assert_eq!(evil.recv().expect("answer"), ServerMsg::ReAuth);
    // A syndic-only request from a minion.
    let (_, m) = evil
        .request_raw(RequestBody::SyndicReturns(vec![forged].into()))
        .expect("answer");
    assert!(
        matches!(
            m,
            ServerMsg::Reply(Reply {
                body: ReplyBody::Refused(_),
                ..
            })
        ),
        "{m:?}"
    );

    let s = topo.stats();
    assert!(s["malformed_frames"].as_u64().unwrap_or(0) >= 2, "{s}");
    assert!(s["forged_returns"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert!(s["replays"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert!(s["bad_seal"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert!(s["syndic_refused"].as_u64().unwrap_or(0) >= 1, "{s}");
    // The forged return never reached the job cache.
    let looked = json(
        &topo
            .cli(
                "top",
                "salt-run",
                &["jobs.lookup_jid", "20260101000000000000", "--out", "json"],
            )
            .expect("lookup"),
    );
    assert_eq!(looked, serde_json::json!({}));
    // And the fleet still works.
    let out = topo
        .salt(&["minion*", "test.ping", "--out", "json", "--static"])
        .expect("ping");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json(&out).as_object().map(|m| m.len()), Some(2));
}
