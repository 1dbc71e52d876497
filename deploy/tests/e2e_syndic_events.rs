//! Events through two syndic tiers: a top, `syndic1-t1` under it,
//! `syndic1-t2` under that and minion `s1m1` at the bottom. A `salt-run
//! state.event --out json` on the top (killed by its guard) sees exactly
//! one `salt/job/<jid>/ret/s1m1` per `salt '*' test.ping` (the top fires
//! it when it accepts the forwarded return; syndics never forward rets),
//! and the bottom minion's `event.send myapp/x` arrives marked with the
//! path of both syndics, origin side first. A minion that sends
//! `SyndicEvents` is refused and counted.

use brine_common::proto::{ForwardedEvent, Refusal, ReplyBody, RequestBody, Role};
use brine_deploy::peer::HandPeer;
use brine_deploy::topology::Topology;
use brine_deploy::watch::EventWatch;
use serde_json::{json, Value};
use std::time::Duration;

/// Generous: other test binaries share the two cores.
const WAIT: Duration = Duration::from_secs(60);

#[test]
fn events_of_a_minion_two_tiers_down_reach_the_top_once_with_their_path() {
    let topo = Topology::builder()
        .syndics(1)
        .tiers(2)
        .minions_per_syndic(1)
        .start(WAIT)
        .expect("topology");
    let bottom = topo.minions[0].id.clone();
    let (t1, t2) = (topo.syndics[0].id.clone(), topo.syndics[1].id.clone());
    assert_eq!(
        topo.minions[0].master, t2,
        "the minion is under the second tier"
    );

    // One ping: one ret event on the top, whatever the syndics forward.
    let w = EventWatch::start(&topo, "top", WAIT).expect("watch");
    let out = topo
        .salt(&["*", "test.ping", "--out", "json", "--static", "-t", "60"])
        .expect("salt");
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[&bottom], json!(true), "{v}");
    let suffix = format!("/ret/{bottom}");
    let (tag, ret) = w
        .first("the ret", |t, _| {
            t.starts_with("salt/job/") && t.ends_with(&suffix)
        })
        .expect("ret");
    assert_eq!(ret["fun"], "test.ping");
    assert_eq!(ret["return"], true);
    // Anything forwarded would come within a few batches.
    let later = w.during(Duration::from_secs(3));
    let again: Vec<&(String, Value)> = later.iter().filter(|(t, _)| t == &tag).collect();
    assert!(again.is_empty(), "{tag} shown twice: {again:?}");

    // An event sent at the bottom: on the top with both syndics' path.
    let out = topo
        .salt(&[
            &bottom,
            "event.send",
            "myapp/x",
            r#"data={"a": 1}"#,
            "--out",
            "json",
            "--static",
            "-t",
            "60",
        ])
        .expect("salt");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[&bottom], json!(true), "{v}");
    let (_, d) = w.first("myapp/x", |t, _| t == "myapp/x").expect("myapp/x");
    assert_eq!(d["__syndic_path"], json!([t2, t1]), "{d}");
    assert_eq!(d["id"], json!(bottom), "{d}");
    assert_eq!(d["cmd"], "_minion_event", "{d}");
    assert_eq!(d["data"], json!({"a": 1}), "{d}");
    assert!(d["_stamp"].is_string(), "{d}");
    let later = w.during(Duration::from_secs(2));
    assert!(
        !later.iter().any(|(t, _)| t == "myapp/x"),
        "myapp/x shown twice: {later:?}"
    );
    drop(w);

    // A minion may not forward events.
    let top_before = topo.stats();
    let ctx = zmq::Context::new();
    let mut peer =
        HandPeer::new(&ctx, &topo.top.addr, "brine-test-synev", Role::Minion).expect("peer");
    brine_deploy::launch::poll_until(WAIT, Duration::from_millis(200), || peer.sign_in().is_ok());
    let r = peer
        .request(RequestBody::SyndicEvents(vec![ForwardedEvent {
            tag: "myapp/forged".into(),
            data: json!({}),
            path: vec!["brine-test-synev".into()],
        }]))
        .expect("answer");
    assert_eq!(r, ReplyBody::Refused(Refusal::NotASyndic));

    // The counters: forwarded on both syndics, received by the top.
    let top = topo.stats();
    assert!(top["events_from_below"].as_u64().unwrap_or(0) >= 2, "{top}");
    assert!(
        top["events_from_below_refused"].as_u64().unwrap_or(0)
            > top_before["events_from_below_refused"]
                .as_u64()
                .unwrap_or(0),
        "{top}"
    );
    for s in [&t1, &t2] {
        let st = topo.stats_on(s);
        assert!(
            st["events_forwarded"].as_u64().unwrap_or(0) >= 1,
            "{s}: {st}"
        );
        assert!(st["events_forward_dropped"].is_u64(), "{s}: {st}");
    }
    let mid = topo.stats_on(&t1);
    assert!(mid["events_from_below"].as_u64().unwrap_or(0) >= 1, "{mid}");
}
