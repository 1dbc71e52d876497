//! The master's event bus end to end: `salt-run state.event` started in
//! the background (the real CLI against a real top master with one
//! minion) sees Salt's events: `salt/job/<jid>/new` and
//! `salt/job/<jid>/ret/<id>` of a `salt '*' test.ping`, `salt/run/<jid>/*`
//! of a runner (printed as Salt prints them, `<tag>\t<json>`),
//! `salt/presence/change` when the minion stops (`presence_events: True`,
//! `loop_interval: 1`), `salt/auth` and `salt/minion/<id>/start` when it
//! starts again, `salt/key` when `salt-key` deletes a key; and a hand-driven minion's events: one in its own
//! namespace published in Salt's shape, ones in the master's refused with
//! `BadEvent` and counted. Every watcher process is killed by its guard.

use brine_common::proto::{EventLoad, Refusal, ReplyBody, RequestBody, Role};
use brine_deploy::peer::HandPeer;
use brine_deploy::topology::Topology;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous: other test binaries share the two cores.
const WAIT: Duration = Duration::from_secs(60);

/// A `salt-run state.event ...` process; killed and reaped on drop.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watch {
    /// Start `salt-run state.event ARGS` on the top master and wait until
    /// the master counts one more subscription opened.
    fn start(topo: &Topology, args: &[&str]) -> Watch {
        let before = subscriptions(topo);
        let mut child = Command::new(topo.bin.join("salt-run"))
            .arg("-c")
            .arg(&topo.top.config_dir)
            .arg("state.event")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("salt-run state.event");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let w = Watch { child, lines };
        topo.eventually(WAIT, "the watcher subscribed", || {
            subscriptions(topo) > before
        })
        .expect("subscribed");
        w
    }

    /// The next `n` lines (panics after [`WAIT`]).
    fn take(&self, n: usize) -> Vec<String> {
        let until = Instant::now() + WAIT;
        (0..n)
            .map(|i| {
                let left = until.saturating_duration_since(Instant::now());
                self.lines
                    .recv_timeout(left)
                    .unwrap_or_else(|e| panic!("event {i} of {n} not printed: {e}"))
            })
            .collect()
    }

    /// The next `n` events of a `--out json` watcher, as (tag, data).
    fn events(&self, n: usize) -> Vec<(String, Value)> {
        self.take(n)
            .into_iter()
            .map(|l| {
                let v: Value = serde_json::from_str(&l)
                    .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}"));
                let tag = v["tag"].as_str().expect("tag").to_string();
                (tag, v["data"].clone())
            })
            .collect()
    }

    /// The exit code once it stopped by itself (count reached).
    fn exit_code(&mut self) -> i32 {
        let until = Instant::now() + WAIT;
        while Instant::now() < until {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("state.event did not stop after its count");
    }
}

fn subscriptions(topo: &Topology) -> u64 {
    // Opened since start, not live: a watcher killed just before would
    // still count as live until the master sees it hang up.
    topo.stat("events_subscriptions")
}

fn is_stamp(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() >= 19 && s.as_bytes()[10] == b'T' && !s.ends_with('Z'))
}

#[test]
fn the_event_bus_as_salts() {
    let mut topo = Topology::builder()
        .direct_minions(1)
        .top_config("presence_events: True")
        .top_config("loop_interval: 1")
        .start(WAIT)
        .expect("topology");
    let id = topo.minions[0].id.clone();

    // A job: its `new` event, then its return.
    let mut jobs = Watch::start(&topo, &["salt/job/*", "count=2", "--out", "json"]);
    let out = topo
        .salt(&["*", "test.ping", "--out", "json", "--static", "-t", "60"])
        .expect("salt");
    assert!(out.status.success(), "{out:?}");
    let ev = jobs.events(2);
    let (new_tag, new) = &ev[0];
    let jid = new["jid"].as_str().expect("jid").to_string();
    assert_eq!(new_tag, &format!("salt/job/{jid}/new"));
    assert_eq!(new["fun"], "test.ping");
    assert_eq!(new["tgt"], "*");
    assert_eq!(new["tgt_type"], "glob");
    assert_eq!(new["minions"], json!([id]));
    assert_eq!(new["arg"], json!([]));
    assert!(is_stamp(&new["_stamp"]), "{new}");
    let (ret_tag, ret) = &ev[1];
    assert_eq!(ret_tag, &format!("salt/job/{jid}/ret/{id}"));
    assert_eq!(ret["cmd"], "_return");
    assert_eq!(ret["id"], json!(id));
    assert_eq!(ret["jid"], json!(jid));
    assert_eq!(ret["fun"], "test.ping");
    assert_eq!(ret["return"], true);
    assert_eq!(ret["success"], true);
    assert_eq!(ret["retcode"], 0);
    assert!(is_stamp(&ret["_stamp"]), "{ret}");
    assert_eq!(jobs.exit_code(), 0, "stops after count=2");

    // A runner, printed as Salt prints it: `<tag>\t<json.dumps(data)>`
    // (the watcher's own `manage.stats` polls show up too).
    let runs = Watch::start(&topo, &["salt/run/*/new"]);
    let up = topo
        .cli("top", "salt-run", &["manage.up", "--out", "json"])
        .expect("manage.up");
    assert!(up.status.success());
    let line = (0..50)
        .map(|_| runs.take(1).remove(0))
        .find(|l| l.contains("runner.manage.up"))
        .expect("manage.up's event");
    let (tag, data) = line.split_once('\t').expect("tag TAB data");
    assert!(
        tag.starts_with("salt/run/") && tag.ends_with("/new"),
        "{line}"
    );
    assert!(
        data.starts_with("{\"_stamp\": \""),
        "json.dumps' separators: {line}"
    );
    assert!(data.contains("\"fun\": \"runner.manage.up\""), "{line}");
    drop(runs);

    // Presence rounds see the minion (`salt/presence/present`) ...
    let present = Watch::start(&topo, &["salt/presence/present", "--out", "json"]);
    (0..30)
        .map(|_| present.events(1).remove(0).1)
        .find(|d| d["present"] == json!([id]))
        .expect("a round with the minion present");
    drop(present);
    // ... then it stops: presence says it was lost.
    let lost = Watch::start(&topo, &["salt/presence/change", "count=1", "--out", "json"]);
    topo.stop(&id, false).expect("stop minion");
    let (tag, change) = lost.events(1).remove(0);
    assert_eq!(tag, "salt/presence/change");
    assert_eq!(change["lost"], json!([id]), "{change}");
    assert_eq!(change["new"], json!([]));
    drop(lost);

    // It starts again: its sign-in and its start.
    let auth = Watch::start(&topo, &["salt/auth", "count=1", "--out", "json"]);
    let start = Watch::start(&topo, &["salt/minion/*/start", "count=1", "--out", "json"]);
    let back = Watch::start(&topo, &["salt/presence/change", "count=1", "--out", "json"]);
    topo.spawn_minion(&id).expect("restart minion");
    let (_, a) = auth.events(1).remove(0);
    assert_eq!(a["id"], json!(id));
    assert_eq!(a["act"], "accept");
    assert_eq!(a["result"], true);
    assert!(
        a["pub"].as_str().is_some_and(|p| p.contains("PUBLIC KEY")),
        "{a}"
    );
    let (tag, s) = start.events(1).remove(0);
    assert_eq!(tag, format!("salt/minion/{id}/start"));
    assert_eq!(s["id"], json!(id));
    assert_eq!(s["cmd"], "_minion_event");
    assert!(s["data"]
        .as_str()
        .is_some_and(|d| d.starts_with(&format!("Minion {id} started at "))));
    let (_, change) = back.events(1).remove(0);
    assert_eq!(change["new"], json!([id]), "{change}");

    // A hand-driven minion's own events: published in Salt's shape; the
    // master's namespace (and another minion's beacons) refused, counted.
    let ctx = zmq::Context::new();
    let hand = "brine-test-evhand";
    let mut peer = HandPeer::new(&ctx, &topo.top.addr, hand, Role::Minion).expect("peer");
    brine_deploy::launch::poll_until(WAIT, Duration::from_millis(200), || peer.sign_in().is_ok());
    let mine = Watch::start(&topo, &["myapp/*", "count=1", "--out", "json"]);
    let beacon = Watch::start(&topo, &["salt/beacon/*", "count=1", "--out", "json"]);
    let refused_before = topo.stat("events_refused");
    for tag in [
        "salt/auth".to_string(),
        format!("salt/job/1/ret/{id}"),
        format!("salt/beacon/{id}/load/"),
        String::new(),
        "x".repeat(600),
    ] {
        let r = peer
            .request(RequestBody::Event(EventLoad {
                tag: tag.clone(),
                data: json!({"forged": true}),
            }))
            .expect("answer");
        assert!(
            matches!(r, ReplyBody::Refused(Refusal::BadEvent(_))),
            "{tag}: {r:?}"
        );
    }
    // A payload over max_event_size (1 MiB) and data that is not a mapping.
    for data in [json!({"blob": "x".repeat(1_200_000)}), json!([1, 2])] {
        let r = peer
            .request(RequestBody::Event(EventLoad {
                tag: "myapp/big".into(),
                data,
            }))
            .expect("answer");
        assert!(
            matches!(r, ReplyBody::Refused(Refusal::BadEvent(_))),
            "{r:?}"
        );
    }
    let r = peer
        .request(RequestBody::Event(EventLoad {
            tag: "myapp/deploy/done".into(),
            data: json!({"version": 3}),
        }))
        .expect("answer");
    assert_eq!(r, ReplyBody::Ok);
    let r = peer
        .request(RequestBody::Event(EventLoad {
            tag: format!("salt/beacon/{hand}/load/"),
            data: json!({"1m": 0.5, "id": "someone-else"}),
        }))
        .expect("answer");
    assert_eq!(r, ReplyBody::Ok);
    let (tag, d) = mine.events(1).remove(0);
    assert_eq!(tag, "myapp/deploy/done");
    assert_eq!(d["cmd"], "_minion_event");
    assert_eq!(d["id"], hand);
    assert_eq!(d["tag"], "myapp/deploy/done");
    assert_eq!(d["data"], json!({"version": 3}));
    assert!(is_stamp(&d["_stamp"]));
    let (tag, d) = beacon.events(1).remove(0);
    assert_eq!(tag, format!("salt/beacon/{hand}/load/"));
    assert_eq!(d["id"], hand, "the sender's own id, whatever it claims");
    assert_eq!(d["1m"], 0.5);
    assert!(topo.stat("events_refused") >= refused_before + 7);

    // salt-key deletes the hand peer's key: `salt/key`.
    let key = Watch::start(&topo, &["salt/key", "count=1", "--out", "json"]);
    let out = topo
        .cli("top", "salt-key", &["-d", hand, "-y"])
        .expect("salt-key");
    assert!(out.status.success(), "{out:?}");
    let (_, k) = key.events(1).remove(0);
    assert_eq!(k["id"], hand);
    assert_eq!(k["act"], "delete");
    assert_eq!(k["result"], true);
    let stats = topo.stats();
    assert!(
        stats["events_published"].as_u64().unwrap_or(0) >= 8,
        "{stats}"
    );
    assert!(stats["events_dropped"].is_u64(), "{stats}");
}

/// A minion's own events reach the top's bus: `event.send` and
/// `event.fire_master` through the CLI, a `load` beacon (out of its range
/// it fires every interval, as Salt's does without `onchangeonly`), and a
/// tag in the master's namespace
/// refused with the reason.
#[test]
fn minion_events_and_a_beacon_reach_the_bus() {
    // A load is never below 0, so above this range: the beacon fires
    // every interval, even on an idle machine.
    let topo = Topology::builder()
        .direct_minions(1)
        .minion_config("beacons: {load: [{averages: {1m: [-1.0, -0.5]}}, {interval: 1}]}")
        .start(WAIT)
        .expect("topology");
    let w = Watch::start(&topo, &["tagmatch=myapp/*", "--out", "json"]);
    let out = topo
        .salt(&[
            "minion1",
            "event.send",
            "myapp/deploy/done",
            r#"data={"version": 3}"#,
            "--out",
            "json",
            "--static",
            "-t",
            "30",
        ])
        .expect("salt");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["minion1"], json!(true), "{v}");
    let ev = w.events(1);
    assert_eq!(ev[0].0, "myapp/deploy/done");
    assert_eq!(ev[0].1["id"], "minion1", "{}", ev[0].1);
    assert_eq!(ev[0].1["data"]["version"], 3, "{}", ev[0].1);

    let out = topo
        .salt(&[
            "minion1",
            "event.send",
            "salt/auth",
            r#"data={"forged": true}"#,
            "--out",
            "json",
            "--static",
            "-t",
            "30",
        ])
        .expect("salt");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let msg = v["minion1"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("event refused"), "{v}");
    assert!(topo.stat("events_refused") >= 1);

    // `salt-call event.send`: through the running daemon's link, then,
    // with the daemon stopped, over salt-call's own sign-in.
    let mut topo = topo;
    let calls = Watch::start(&topo, &["tagmatch=myapp/call/*", "--out", "json"]);
    let salt_call = |topo: &Topology, tag: &str| {
        let out = std::process::Command::new(topo.bin.join("salt-call"))
            .arg("-c")
            .arg(&topo.minions[0].config_dir)
            .args(["event.send", tag, r#"data={"n": 1}"#, "--out", "json"])
            .output()
            .expect("salt-call");
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["local"], json!(true), "{v}");
    };
    salt_call(&topo, "myapp/call/daemon");
    let ev = calls.events(1);
    assert_eq!(ev[0].0, "myapp/call/daemon");
    assert_eq!(ev[0].1["id"], "minion1", "{}", ev[0].1);
    assert_eq!(ev[0].1["data"]["n"], 1, "{}", ev[0].1);
    topo.stop("minion1", false).expect("stop minion1");
    salt_call(&topo, "myapp/call/alone");
    let ev = calls.events(1);
    assert_eq!(ev[0].0, "myapp/call/alone");
    assert_eq!(ev[0].1["id"], "minion1", "{}", ev[0].1);
    drop(calls);
    topo.spawn_minion("minion1").expect("restart minion1");

    let b = Watch::start(
        &topo,
        &[
            "tagmatch=salt/beacon/minion1/load/*",
            "count=1",
            "--out",
            "json",
        ],
    );
    let ev = b.events(1);
    assert!(
        ev[0].0.starts_with("salt/beacon/minion1/load/"),
        "{}",
        ev[0].0
    );
    assert!(
        ev[0].1["1m"].is_number(),
        "Salt's load beacon data: {}",
        ev[0].1
    );
}
