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
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous: other test binaries share the two cores.
const WAIT: Duration = Duration::from_secs(60);

/// `salt-run state.event --out json` on the top; killed and reaped on drop.
struct TopWatch {
    child: Child,
    events: mpsc::Receiver<(String, Value)>,
}

impl Drop for TopWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TopWatch {
    /// Start it and wait until the top counts one more subscriber.
    fn start(topo: &Topology) -> TopWatch {
        let before = topo.stat("event_subscribers");
        let mut child = Command::new(topo.bin.join("salt-run"))
            .arg("-c")
            .arg(&topo.top.config_dir)
            .args(["state.event", "--out", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("salt-run state.event");
        let out = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let tag = v["tag"].as_str().unwrap_or_default().to_string();
                if tx.send((tag, v["data"].clone())).is_err() {
                    return;
                }
            }
        });
        let w = TopWatch { child, events };
        topo.eventually(WAIT, "the watcher subscribed", || {
            topo.stat("event_subscribers") > before
        })
        .expect("subscribed");
        w
    }

    /// Every event printed during `d`.
    fn during(&self, d: Duration) -> Vec<(String, Value)> {
        let until = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(e) => out.push(e),
                Err(_) => break,
            }
        }
        out
    }

    /// The first event `want` accepts (panics after [`WAIT`]).
    fn first(&self, what: &str, want: impl Fn(&str, &Value) -> bool) -> (String, Value) {
        let until = Instant::now() + WAIT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((t, d)) if want(&t, &d) => return (t, d),
                Ok(_) => {}
                Err(e) => panic!("{what}: not seen on the top's bus ({e})"),
            }
        }
    }
}

fn stats_of(topo: &Topology, on: &str) -> Value {
    topo.cli(on, "salt-run", &["manage.stats", "--out", "json"])
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(Value::Null)
}

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
    let w = TopWatch::start(&topo);
    let out = topo
        .salt(&["*", "test.ping", "--out", "json", "--static", "-t", "60"])
        .expect("salt");
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[&bottom], json!(true), "{v}");
    let suffix = format!("/ret/{bottom}");
    let (tag, ret) = w.first("the ret", |t, _| {
        t.starts_with("salt/job/") && t.ends_with(&suffix)
    });
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
    let (_, d) = w.first("myapp/x", |t, _| t == "myapp/x");
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
        let st = stats_of(&topo, s);
        assert!(
            st["events_forwarded"].as_u64().unwrap_or(0) >= 1,
            "{s}: {st}"
        );
        assert!(st["events_forward_dropped"].is_u64(), "{s}: {st}");
    }
    let mid = stats_of(&topo, &t1);
    assert!(mid["events_from_below"].as_u64().unwrap_or(0) >= 1, "{mid}");
}
