//! Hostile peers against the session protocol of real processes on
//! loopback (issue 9, items 1, 5 and 7):
//! - a sign-in with someone else's public key, or a captured sign-in sent
//!   again, gets nothing and leaves the victim's session alone;
//! - a publish captured before a minion restarted is not run again;
//! - clear-text answers injected by someone on the path (ReAuth,
//!   refusals) cost the minion at most one extra sign-in.
//!
//! The attacker is built from the wire types only: raw DEALER sockets and
//! a man in the middle ([`brine_deploy::mitm::Mitm`]) between one minion
//! and the top master.

use brine_common::codec;
use brine_common::crypto::KeyPair;
use brine_common::proto::*;
use brine_deploy::mitm::{Inject, Mitm};
use brine_deploy::peer::HandPeer;
use brine_deploy::topology::Topology;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn find(dir: &Path, tail: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find(&p, tail) {
                return Some(f);
            }
        } else if p.to_string_lossy().ends_with(tail) {
            return Some(p);
        }
    }
    None
}

fn pings(topo: &Topology, id: &str) -> bool {
    let out = topo
        .salt(&[id, "test.ping", "--out", "json", "-t", "10"])
        .expect("salt");
    json(&out)[id] == Value::Bool(true)
}

/// Accepted sign-ins in a minion's log.
fn sign_ins(topo: &Topology, id: &str) -> usize {
    topo.plain_log(id)
        .lines()
        .filter(|l| l.contains("link: signed in master="))
        .count()
}

fn dealer(ctx: &zmq::Context, addr: &str) -> zmq::Socket {
    let s = ctx.socket(zmq::DEALER).expect("dealer");
    s.set_linger(0).expect("linger");
    s.set_rcvtimeo(5000).expect("timeout");
    s.connect(&format!("tcp://{addr}:4506")).expect("connect");
    s
}

fn recv_wire(s: &zmq::Socket) -> Wire {
    let f = s.recv_bytes(0).expect("an answer");
    codec::decode_wire(&f, 1 << 20).expect("decodes")
}

fn send_wire(s: &zmq::Socket, w: Wire) {
    s.send(codec::encode_wire(w).expect("encode"), 0)
        .expect("send");
}

/// Sign in as `id` presenting `pub_pem`, but signing with `signer`: the
/// master's answer to the signed round.
fn forged_sign_in(s: &zmq::Socket, id: &str, pub_pem: &str, role: Role, signer: &KeyPair) -> Wire {
    let mut req = AuthRequest {
        id: id.into(),
        pub_pem: pub_pem.into(),
        nonce: vec![9u8; 32],
        role,
        challenge: vec![],
        sig: vec![],
    };
    send_wire(s, Wire::Auth(req.clone()));
    match recv_wire(s) {
        Wire::AuthChallenge { challenge, .. } => req.challenge = challenge,
        // Today's code answers at once: the forged key was taken.
        other => return other,
    }
    req.sig = signer
        .sign(&req.proof_bytes().expect("proof"))
        .expect("sign");
    send_wire(s, Wire::Auth(req));
    recv_wire(s)
}

#[test]
fn a_sign_in_must_prove_the_key_and_cannot_be_replayed() {
    let topo = Topology::builder()
        .direct_minions(1)
        .start(Duration::from_secs(30))
        .expect("topology");
    let addr = topo.top.addr.clone();
    let victim_pem = std::fs::read_to_string(
        find(topo.top.config_dir.as_path(), "minions/minion1").expect("minion1's accepted key"),
    )
    .expect("read key");
    assert!(pings(&topo, "minion1"));
    let before = sign_ins(&topo, "minion1");
    let ctx = zmq::Context::new();
    let attacker = KeyPair::generate().expect("key");

    // The victim's public key as a minion, and as a syndic, twenty times:
    // every one refused, the victim's session untouched.
    let s = dealer(&ctx, &addr);
    for i in 0..20 {
        let role = if i % 2 == 0 {
            Role::Minion
        } else {
            Role::Syndic
        };
        let answer = forged_sign_in(&s, "minion1", &victim_pem, role, &attacker);
        assert!(
            matches!(answer, Wire::Error(ref e) if e.contains("signature")),
            "forged sign-in {i} was not refused: {answer:?}"
        );
    }
    assert!(topo.stat("auth_bad_proof") >= 20);
    assert!(pings(&topo, "minion1"), "the victim still answers");
    assert_eq!(
        sign_ins(&topo, "minion1"),
        before,
        "the victim never had to sign in again"
    );
    let syndics = json(
        &topo
            .cli("top", "salt-run", &["manage.list_syndics", "--out", "json"])
            .expect("list"),
    );
    assert!(
        !syndics.to_string().contains("minion1"),
        "an unproven sign-in never touches the roster: {syndics}"
    );

    // A real sign-in captured and sent again is refused.
    let mut peer = HandPeer::new(&ctx, &addr, "replayed", Role::Minion).expect("peer");
    peer.sign_in().expect("sign in");
    let captured = peer.last_auth.clone();
    let s2 = dealer(&ctx, &addr);
    s2.send(captured, 0).expect("replay");
    let answer = recv_wire(&s2);
    assert!(
        matches!(answer, Wire::Error(ref e) if e.contains("replayed")),
        "{answer:?}"
    );
    assert!(topo.stat("auth_replayed") >= 1);
    // RSA work was done only for sign-ins that came back with a fresh
    // challenge: 20 forged + 1 real (+ the minion's own).
    let rsa = topo.stat("auth_requests");
    assert!(rsa <= 20 + 1 + 3, "RSA verifications: {rsa}");
}

/// Puts a man in the middle between minion1 and the top; returns it once
/// minion1 has signed in through it.
fn behind_mitm(topo: &mut Topology) -> Mitm {
    let top = topo.top.addr.clone();
    let relay = format!("{}.250", top.rsplit_once('.').expect("dotted").0);
    let mitm = Mitm::start(&relay, &top).expect("relay");
    let cfg_path = topo
        .minions
        .iter()
        .find(|m| m.id == "minion1")
        .expect("minion1")
        .config_dir
        .join("minion");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    let cfg: String = cfg
        .lines()
        .map(|l| {
            if l.starts_with("master:") {
                format!("master: {relay}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&cfg_path, cfg).expect("write config");
    let before = sign_ins(topo, "minion1");
    topo.stop("minion1", false).expect("stop");
    topo.spawn_minion("minion1").expect("spawn");
    if let Err(e) = topo.eventually(
        Duration::from_secs(20),
        "minion1 signs in through the relay",
        || sign_ins(topo, "minion1") > before,
    ) {
        panic!("{e}\n--- minion1 log:\n{}", topo.log("minion1"));
    }
    topo.eventually(
        Duration::from_secs(20),
        "minion1 answers through the relay",
        || pings(topo, "minion1"),
    )
    .expect("ping");
    mitm
}

#[test]
fn a_publish_captured_before_a_restart_is_not_run_again() {
    let mut topo = Topology::builder()
        .direct_minions(1)
        .start(Duration::from_secs(30))
        .expect("topology");
    let mitm = behind_mitm(&mut topo);
    let marker = topo.root.path().join("ran");
    let cmd = format!("echo ran >> {}", marker.display());
    let seen = mitm.recorded().len();
    let out = topo
        .salt(&["minion1", "cmd.run", &cmd, "--out", "json"])
        .expect("salt");
    assert!(out.status.success(), "{out:?}");
    let runs = || {
        std::fs::read_to_string(&marker)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(runs(), 1);
    let job = mitm.recorded()[seen..]
        .iter()
        .rev()
        .find(|m| m.first().is_some_and(|t| t.as_slice() == TOPIC_BROADCAST))
        .cloned()
        .expect("the job's publish was relayed");

    // The minion restarts (its in-memory replay window is gone), signs in
    // again through the same path, and the captured publish is sent again.
    // It must come before any newer publish (which would move the
    // ordinary replay window past it): right when the new process has
    // subscribed again.
    let before = sign_ins(&topo, "minion1");
    topo.stop("minion1", false).expect("stop");
    let subscribed = mitm.subscriptions.load(Ordering::Relaxed);
    topo.spawn_minion("minion1").expect("spawn");
    topo.eventually(Duration::from_secs(20), "minion1 signs in again", || {
        sign_ins(&topo, "minion1") > before
    })
    .expect("sign-in");
    topo.eventually(Duration::from_secs(20), "minion1 subscribes again", || {
        mitm.subscriptions.load(Ordering::Relaxed) >= subscribed + 2
    })
    .expect("subscribe");
    // libzmq applies a subscription when it reads it: let it settle.
    std::thread::sleep(Duration::from_millis(300));
    let refusals = || topo.plain_log("minion1").matches("not newer than").count();
    let refused_before = refusals();
    mitm.inject(Inject::Publish(job));
    if let Err(e) = topo.eventually(
        Duration::from_secs(10),
        "the minion refuses or runs the replayed publish",
        || refusals() > refused_before || runs() > 1,
    ) {
        panic!("{e}\n--- minion1 log:\n{}", topo.plain_log("minion1"));
    }
    assert_eq!(runs(), 1, "the replayed job ran again");
    assert!(pings(&topo, "minion1"), "the minion still works");
}

#[test]
fn forged_answers_on_the_path_cost_at_most_one_sign_in() {
    let mut topo = Topology::builder()
        .direct_minions(1)
        .start(Duration::from_secs(30))
        .expect("topology");
    let mitm = behind_mitm(&mut topo);
    let before = sign_ins(&topo, "minion1");
    let forged = [
        Wire::ReAuth,
        Wire::AuthReply(AuthReply {
            status: AuthStatus::Rejected,
            accept: vec![],
            sig: vec![],
        }),
        Wire::AuthReply(AuthReply {
            status: AuthStatus::Denied,
            accept: vec![],
            sig: vec![],
        }),
        Wire::Error("go away".into()),
    ];
    // 40 forged answers over 4 s, most of them ReAuth.
    for i in 0..40 {
        let w = if i % 2 == 0 {
            Wire::ReAuth
        } else {
            forged[(i / 2) % forged.len()].clone()
        };
        mitm.inject(Inject::ToMinion(codec::encode_wire(w).expect("encode")));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pings(&topo, "minion1"), "the minion still works");
    let extra = sign_ins(&topo, "minion1") - before;
    assert!(
        extra <= 1,
        "40 forged answers made the minion sign in {extra} more times"
    );
}
