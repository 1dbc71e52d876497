//! Hostile peers against the roster and the return path of real processes
//! on loopback (issue 9, items 3 and 4):
//! - a syndic's roster report cannot take over a direct minion's id or
//!   another syndic's minion: the claims are refused, counted and shown in
//!   `manage.list_syndics`, and jobs keep reaching the real minions;
//! - an accepted minion cannot store returns for jobs that were never
//!   published or that target someone else, and a return over
//!   `max_return_bytes` is stored as an error saying so.

use brine_common::proto::*;
use brine_deploy::peer::HandPeer;
use brine_deploy::topology::Topology;
use serde_json::{json, Value};
use std::time::Duration;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn run(topo: &Topology, args: &[&str]) -> Value {
    json(&topo.cli("top", "salt-run", args).expect("salt-run"))
}

fn pings(topo: &Topology, id: &str) -> bool {
    let out = topo
        .salt(&[id, "test.ping", "--out", "json", "-t", "10"])
        .expect("salt");
    json(&out)[id] == Value::Bool(true)
}

/// `salt TGT FUN --async`: the jid.
fn publish_async(topo: &Topology, tgt: &str, fun: &str) -> String {
    topo.salt_async("top", &[tgt, fun]).expect("salt --async")
}

fn ret(jid: &str, id: &str, value: Value) -> ReturnLoad {
    ReturnLoad {
        jid: jid.parse().expect("jid"),
        id: id.into(),
        fun: "test.ping".into(),
        fun_args: vec![],
        ret: value,
        retcode: 0,
        success: true,
        out: None,
        trace: None,
    }
}

fn refused(body: &ReplyBody) -> bool {
    matches!(body, ReplyBody::Refused(_))
}

#[test]
fn a_syndic_report_cannot_take_over_ids() {
    let topo = Topology::builder()
        .direct_minions(1)
        .syndics(1)
        .minions_per_syndic(1)
        .start(Duration::from_secs(40))
        .expect("topology");
    let addr = topo.top.addr.clone();
    let ctx = zmq::Context::new();
    // An operator granted this peer the syndic role: it is trusted to
    // report its own subtree, not anybody else's.
    let mut evil = HandPeer::new(&ctx, &addr, "evilsyn", Role::Syndic).expect("peer");
    assert!(evil.sign_in().is_err(), "no grant yet");
    let out = topo
        .cli("top", "salt-key", &["--grant-syndic", "evilsyn", "-y"])
        .expect("salt-key");
    assert!(out.status.success(), "{out:?}");
    evil.sign_in().expect("sign in as a granted syndic");
    let claim = |id: &str| RosterEntry {
        id: id.into(),
        grains: json!({}),
        connected: true,
        via: vec![],
    };
    let answer = evil
        .request(RequestBody::Roster(RosterDelta {
            full: true,
            upsert: vec![claim("minion1"), claim("s1m1"), claim("evil-own")],
            remove: vec![],
        }))
        .expect("answer");
    assert_eq!(answer, ReplyBody::Ok);

    let syndics = run(&topo, &["manage.list_syndics", "--out", "json"]);
    let ev = &syndics["evilsyn"];
    assert_eq!(ev["claims_refused"], json!(2), "{syndics}");
    assert_eq!(ev["conflicts"]["minion1"], json!("direct"), "{syndics}");
    assert_eq!(ev["conflicts"]["s1m1"], json!("syndic1"), "{syndics}");
    assert_eq!(ev["minions"], json!(1), "only its own minion: {syndics}");
    assert!(topo.stat("roster_claims_refused") >= 2);

    // Jobs still reach the real minions, and the claimer cannot answer
    // for them.
    assert!(pings(&topo, "minion1"));
    assert!(pings(&topo, "s1m1"));
    let jid = publish_async(&topo, "minion1", "test.ping");
    let answer = evil
        .request(RequestBody::SyndicReturns(
            vec![ret(&jid, "minion1", json!("forged"))].into(),
        ))
        .expect("answer");
    assert!(refused(&answer), "{answer:?}");
    topo.eventually(Duration::from_secs(10), "minion1's own return", || {
        run(&topo, &["jobs.lookup_jid", &jid, "--out", "json"])["minion1"] == json!(true)
    })
    .expect("minion1 returned its own answer");
}

#[test]
fn a_return_needs_a_published_job_that_targets_the_minion() {
    let topo = Topology::builder()
        .direct_minions(1)
        .master_config("max_return_bytes: 2048")
        .start(Duration::from_secs(30))
        .expect("topology");
    let addr = topo.top.addr.clone();
    let ctx = zmq::Context::new();
    let mut evil = HandPeer::new(&ctx, &addr, "evil", Role::Minion).expect("peer");
    evil.sign_in().expect("sign in");
    let hello = RequestBody::Hello {
        grains: json!({}),
        version: "x".into(),
    };
    assert_eq!(evil.request(hello).expect("answer"), ReplyBody::Ok);

    // A jid nobody published.
    let never = "20261202000000000001";
    let answer = evil
        .request(RequestBody::Return(ret(never, "evil", json!("made up"))))
        .expect("answer");
    assert!(refused(&answer), "{answer:?}");
    assert!(topo.stat("returns_unknown_job") >= 1);
    assert_eq!(
        run(&topo, &["jobs.lookup_jid", never, "--out", "json"]),
        json!({})
    );

    // A job for minion1 only: evil's answer to it is refused.
    let jid = publish_async(&topo, "minion1", "test.ping");
    let answer = evil
        .request(RequestBody::Return(ret(&jid, "evil", json!("injected"))))
        .expect("answer");
    assert!(refused(&answer), "{answer:?}");
    assert!(topo.stat("returns_not_targeted") >= 1);
    topo.eventually(Duration::from_secs(10), "minion1's return", || {
        run(&topo, &["jobs.lookup_jid", &jid, "--out", "json"])["minion1"] == json!(true)
    })
    .expect("minion1 returned");
    let stored = run(&topo, &["jobs.lookup_jid", &jid, "--out", "json"]);
    assert!(stored.get("evil").is_none(), "{stored}");

    // A job for evil, answered with 4 KiB over a 2 KiB limit: stored as
    // an error that says why.
    let jid = publish_async(&topo, "evil", "test.ping");
    let big = "x".repeat(4096);
    let answer = evil
        .request(RequestBody::Return(ret(&jid, "evil", json!(big))))
        .expect("answer");
    assert_eq!(answer, ReplyBody::Ok);
    assert!(topo.stat("returns_too_large") >= 1);
    let stored = run(&topo, &["jobs.lookup_jid", &jid, "--out", "json"]);
    let text = stored["evil"].as_str().unwrap_or_default().to_string();
    assert!(text.contains("max_return_bytes"), "{stored}");
    assert!(text.len() < 2048);
}
