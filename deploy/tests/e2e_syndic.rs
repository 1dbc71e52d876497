//! Syndics end to end: a top master and syndics on their own loopback
//! addresses, minions behind each, driven through the real CLIs. Sign-in of
//! the syndic above, every targeting type from the top, exact expected sets
//! and "did not return" naming the syndic, targeted fan-out (a job never
//! reaches a syndic whose subtree cannot match), speed, a refused fake
//! syndic, a syndic killed mid-job, the master above down (the syndic's
//! outbox), failover over a `syndic_master` list, and a 3-tier chain. A
//! syndic killed again and again is `e2e_syndic_kill.rs`.

use brine_common::proto::*;
use brine_deploy::peer::HandPeer;
use brine_deploy::topology::Topology;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generous: other test binaries share the two cores.
const WAIT: Duration = Duration::from_secs(60);

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}):\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn keys_of(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// `salt-run FUN --out json` on master `on`.
fn run(topo: &Topology, on: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--out", "json"]);
    let out = topo.cli(on, "salt-run", &a).expect("salt-run");
    assert_eq!(code(&out), 0, "salt-run {args:?} on {on}: {}", text(&out));
    json_of(&out)
}

/// The jid printed by `salt --async`.
fn async_jid(out: &Output) -> String {
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        line.starts_with("Executed command with job ID: "),
        "{}",
        text(out)
    );
    line.rsplit(' ').next().expect("jid").to_string()
}

/// Override options of one master (read after `DIR/master`), then restart
/// it so they take effect.
fn override_master(topo: &Topology, id: &str, yaml: &str) {
    let node = topo
        .syndics
        .iter()
        .chain(std::iter::once(&topo.top))
        .find(|n| n.id == id)
        .expect("node")
        .clone();
    let dir = node.config_dir.join("master.d");
    std::fs::create_dir_all(&dir).expect("master.d");
    std::fs::write(dir.join("99-test.conf"), yaml).expect("write override");
}

fn ret(jid: &str, id: &str, value: &str) -> ReturnLoad {
    ReturnLoad {
        jid: jid.parse().expect("jid"),
        id: id.into(),
        fun: "test.echo".into(),
        fun_args: vec![json!(value)],
        ret: json!(value),
        retcode: 0,
        success: true,
        out: None,
        trace: None,
    }
}

#[test]
fn two_syndics_targeting_fanout_and_faults() {
    let mut b = Topology::builder()
        .direct_minions(1)
        .syndics(2)
        .minions_per_syndic(3)
        .master_config("gather_job_timeout: 3")
        .master_config("nodegroups:\n  west: 'G@dc:west and not s2m2'");
    for (id, dc, role, ip) in [
        ("minion1", "top", "db", "127.201.0.1"),
        ("s1m1", "east", "web", "127.201.1.1"),
        ("s1m2", "east", "db", "127.201.1.2"),
        ("s1m3", "east", "web", "127.201.1.3"),
        ("s2m1", "west", "web", "127.201.2.1"),
        ("s2m2", "west", "db", "127.201.2.2"),
        ("s2m3", "west", "web", "127.201.2.3"),
    ] {
        b = b.grains(id, json!({"dc": dc, "role": role, "ipv4": [ip]}));
    }
    let mut topo = b.start(WAIT).expect("topology");
    let all = ["minion1", "s1m1", "s1m2", "s1m3", "s2m1", "s2m2", "s2m3"];
    assert_ne!(topo.top.addr, topo.syndics[0].addr);
    assert_ne!(topo.syndics[0].addr, topo.syndics[1].addr);

    // Downward sign-in: each syndic's key is an accepted key above, and the
    // top lists it as a syndic with its subtree.
    let keys = json_of(
        &topo
            .cli("top", "salt-key", &["-L", "--out", "json"])
            .expect("salt-key"),
    );
    let accepted: BTreeSet<String> = keys["minions"]
        .as_array()
        .expect("accepted keys")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    assert!(
        accepted.is_superset(&set(&["minion1", "syndic1", "syndic2"])),
        "{keys}"
    );
    let t = &topo;
    t.eventually(WAIT, "both syndics listed with 3 connected minions", || {
        let s = run(t, "top", &["manage.list_syndics"]);
        ["syndic1", "syndic2"].iter().all(|id| {
            s[id]["link"] == "up" && s[id]["minions"] == 3 && s[id]["connected_minions"] == 3
        })
    })
    .expect("list_syndics");
    // The syndics' own minions are keys there, not above.
    let s1keys = json_of(
        &topo
            .cli("syndic1", "salt-key", &["-L", "--out", "json"])
            .expect("salt-key"),
    );
    assert_eq!(s1keys["minions"], json!(["s1m1", "s1m2", "s1m3"]));
    let status = run(&topo, "top", &["manage.status"]);
    assert_eq!(
        status,
        json!({"up": all, "down": []}),
        "manage.status on the top"
    );

    // Every targeting type from the top: exactly the expected minions
    // return, through whichever syndics hold them.
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["*"], all.to_vec()),
        (vec!["s1*"], vec!["s1m1", "s1m2", "s1m3"]),
        (vec!["-E", "^s[12]m1$"], vec!["s1m1", "s2m1"]),
        (vec!["-L", "minion1,s2m3"], vec!["minion1", "s2m3"]),
        (vec!["-G", "dc:west"], vec!["s2m1", "s2m2", "s2m3"]),
        (vec!["-G", "role:web"], vec!["s1m1", "s1m3", "s2m1", "s2m3"]),
        (
            vec!["-P", "dc:(top|east)"],
            vec!["minion1", "s1m1", "s1m2", "s1m3"],
        ),
        (vec!["-S", "127.201.1.0/24"], vec!["s1m1", "s1m2", "s1m3"]),
        (
            vec!["-C", "G@role:db or s2m3"],
            vec!["minion1", "s1m2", "s2m2", "s2m3"],
        ),
        (vec!["-C", "G@dc:east and not E@.*3$"], vec!["s1m1", "s1m2"]),
        (vec!["-N", "west"], vec!["s2m1", "s2m3"]),
    ];
    for (tgt, want) in &cases {
        let mut args = tgt.clone();
        args.extend(["test.ping", "--out", "json", "--static", "-t", "20"]);
        let out = topo.salt(&args).expect("salt");
        assert_eq!(code(&out), 0, "salt {args:?}: {}", text(&out));
        let got = keys_of(&json_of(&out));
        assert_eq!(got, set(want), "salt {args:?}");
    }

    // Speed: every minion answers, so `salt` ends as soon as the last
    // return is in, long before -t 30.
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        let out = topo
            .salt(&["*", "test.ping", "-t", "30", "--out", "json", "--static"])
            .expect("salt");
        let took = t0.elapsed();
        assert_eq!(code(&out), 0, "{}", text(&out));
        assert_eq!(keys_of(&json_of(&out)), set(&all));
        best = best.min(took);
        assert!(took < Duration::from_secs(2), "salt '*' took {took:?}");
    }
    eprintln!("salt '*' test.ping -t 30 through 2 syndics: best of 3 {best:?}");

    // Targeted fan-out, same jid below: a job for s1* reaches syndic1 with
    // the top's jid and never reaches syndic2.
    let out = topo
        .salt(&["s1*", "test.echo", "fanout", "--async"])
        .expect("async");
    let jid = async_jid(&out);
    let t = &topo;
    t.eventually(WAIT, "three returns of the s1* job at the top", || {
        keys_of(&t.lookup_jid("top", &jid)) == set(&["s1m1", "s1m2", "s1m3"])
    })
    .expect("returns");
    assert_eq!(topo.lookup_jid("top", &jid)["s1m2"], "fanout");
    let on1 = run(&topo, "syndic1", &["jobs.list_jobs"]);
    assert_eq!(
        on1[&jid]["Function"], "test.echo",
        "syndic1 relayed the job under the top's jid: {on1}"
    );
    let on2 = run(&topo, "syndic2", &["jobs.list_jobs"]);
    assert!(on2.get(&jid).is_none(), "syndic2 got the s1* job: {on2}");
    // And a job started on a syndic stays below it (never goes up).
    let out = topo
        .cli(
            "syndic1",
            "salt",
            &["s1m1", "test.echo", "local", "--async"],
        )
        .expect("salt on syndic1");
    let local = async_jid(&out);
    t.eventually(WAIT, "local job returned on syndic1", || {
        t.lookup_jid("syndic1", &local)["s1m1"] == "local"
    })
    .expect("local return");
    let top_jobs = run(&topo, "top", &["jobs.list_jobs"]);
    assert!(top_jobs.get(&local).is_none(), "{top_jobs}");
    assert_eq!(topo.lookup_jid("top", &local), json!({}));

    // A fake syndic may return only for minions in its own reported
    // subtree; the same return twice is stored once.
    let ctx = zmq::Context::new();
    let mut fake = HandPeer::new(&ctx, &topo.top.addr, "fakesyndic", Role::Syndic).expect("peer");
    // Its key is auto-accepted, but the role needs the operator's grant.
    assert!(
        fake.sign_in().is_err(),
        "a syndic without a grant signed in"
    );
    let out = topo
        .cli("top", "salt-key", &["--grant-syndic", "fakesyndic", "-y"])
        .expect("salt-key --grant-syndic");
    assert_eq!(code(&out), 0, "{}", text(&out));
    fake.sign_in().expect("sign in");
    let body = fake
        .request(RequestBody::Roster(RosterDelta {
            full: true,
            upsert: vec![RosterEntry {
                id: "fake1".into(),
                grains: json!({"id": "fake1"}),
                connected: true,
                via: vec![],
            }],
            remove: vec![],
        }))
        .expect("answer");
    assert_eq!(body, ReplyBody::Ok);
    // A real job for fake1 (a return needs a job this master sent).
    let forged_jid = topo
        .salt_async("top", &["fake1", "test.ping"])
        .expect("salt --async");
    let forged_jid = forged_jid.as_str();
    let body = fake
        .request(RequestBody::SyndicReturns(
            vec![
                ret(forged_jid, "s1m1", "forged"),
                ret(forged_jid, "fake1", "mine"),
            ]
            .into(),
        ))
        .expect("answer");
    assert!(
        matches!(
            &body,
            ReplyBody::Refused(Refusal::SyndicReturns { outside: 1, .. })
        ),
        "{body:?}"
    );
    let body = fake
        .request(RequestBody::SyndicReturns(
            vec![ret(forged_jid, "fake1", "again")].into(),
        ))
        .expect("answer");
    assert_eq!(body, ReplyBody::Ok);
    assert_eq!(topo.lookup_jid("top", forged_jid), json!({"fake1": "mine"}));
    let stats = run(&topo, "top", &["manage.stats"]);
    assert!(stats["syndic_refused"].as_u64() >= Some(1), "{stats}");
    assert!(stats["duplicate_returns"].as_u64() >= Some(1), "{stats}");
    // Deleting the syndic's key drops its subtree from the roster.
    let out = topo
        .cli("top", "salt-key", &["-d", "fakesyndic", "-y"])
        .expect("salt-key -d");
    assert_eq!(code(&out), 0, "{}", text(&out));
    let expected = run(&topo, "top", &["manage.status"]);
    assert_eq!(expected, json!({"up": all, "down": []}), "fake1 forgotten");
    drop(fake);

    // A killed minion behind a syndic: named with its syndic, exit 20.
    topo.stop("s2m3", true).expect("kill s2m3");
    let t0 = Instant::now();
    let out = topo
        .salt(&["*", "test.ping", "-t", "3", "-v"])
        .expect("salt");
    assert_eq!(code(&out), 20, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("s2m3:\n    Minion did not return. [No response via syndic syndic2]")
            && stdout.matches("did not return").count() == 1,
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Minions that did not return (1): s2m3"),
        "-v lists the non-returners: {}",
        text(&out)
    );
    for id in ["minion1", "s1m1", "s2m1", "s2m2"] {
        assert!(stdout.contains(&format!("{id}:\n    True")), "{stdout}");
    }
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let t = &topo;
    t.eventually(WAIT, "s2m3 reported down through syndic2", || {
        run(t, "top", &["manage.down"]) == json!(["s2m3"])
    })
    .expect("manage.down");
    let out = topo
        .salt(&["*", "test.ping", "-t", "3", "--out", "json", "--static"])
        .expect("salt");
    assert_eq!(code(&out), 20, "{}", text(&out));
    let doc = json_of(&out);
    assert_eq!(
        doc["s2m3"], "Minion did not return. [No response via syndic syndic2]",
        "{doc}"
    );
    assert_eq!(doc.as_object().map(|m| m.len()), Some(7), "{doc}");

    // A syndic killed (SIGKILL) mid-job and restarted: the returns it
    // gets afterwards still go up, and `salt` names exactly the minion
    // that did not return.
    topo.stop("s1m3", true).expect("kill s1m3");
    let mut salt = Command::new(topo.bin.join("salt"))
        .arg("-c")
        .arg(&topo.top.config_dir)
        .args([
            "s1*",
            "cmd.run",
            "sleep 3; echo done",
            "-t",
            "8",
            "--out",
            "json",
            "--static",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("salt");
    let t = &topo;
    let relayed = t.eventually(WAIT, "syndic1 relayed the sleep job", || {
        run(t, "syndic1", &["jobs.list_jobs"])
            .as_object()
            .is_some_and(|m| {
                m.values()
                    .any(|j| j["Arguments"] == json!(["sleep 3; echo done"]))
            })
    });
    if let Err(e) = relayed {
        let _ = salt.kill();
        let _ = salt.wait();
        panic!("{e}");
    }
    topo.stop("syndic1", true).expect("kill syndic1");
    topo.start_syndic("syndic1").expect("restart syndic1");
    let out = salt.wait_with_output().expect("salt output");
    assert_eq!(code(&out), 20, "{}", text(&out));
    let doc = json_of(&out);
    assert_eq!(doc["s1m1"], "done", "{doc}");
    assert_eq!(doc["s1m2"], "done", "{doc}");
    assert_eq!(
        doc["s1m3"], "Minion did not return. [No response via syndic syndic1]",
        "{doc}"
    );
    assert_eq!(keys_of(&doc), set(&["s1m1", "s1m2", "s1m3"]));
    topo.spawn_minion("s1m3").expect("restart s1m3");
    topo.spawn_minion("s2m3").expect("restart s2m3");
    topo.wait_up(&strings(&all), WAIT).expect("all up again");

    // The master above down: syndic1 keeps serving its own minions, keeps
    // the returns of a job from above in its outbox (also across a SIGKILL
    // of the syndic) and forwards them when the top is back.
    let out = topo
        .salt(&["s1*", "cmd.run", "sleep 2; echo late", "--async"])
        .expect("async");
    let late = async_jid(&out);
    let t = &topo;
    t.eventually(WAIT, "syndic1 relayed the late job", || {
        run(t, "syndic1", &["jobs.list_jobs"]).get(&late).is_some()
    })
    .expect("relayed");
    topo.stop("top", true).expect("kill top");
    let out = topo
        .cli(
            "syndic1",
            "salt",
            &["s1*", "test.ping", "--out", "json", "--static"],
        )
        .expect("salt on syndic1");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(keys_of(&json_of(&out)), set(&["s1m1", "s1m2", "s1m3"]));
    let t = &topo;
    t.eventually(WAIT, "late returns at syndic1", || {
        keys_of(&t.lookup_jid("syndic1", &late)) == set(&["s1m1", "s1m2", "s1m3"])
    })
    .expect("late returns below");
    topo.stop("syndic1", true).expect("kill syndic1");
    topo.start_syndic("syndic1").expect("restart syndic1");
    topo.wait_up_on("syndic1", &strings(&["s1m1", "s1m2", "s1m3"]), WAIT)
        .expect("syndic1 minions back");
    assert_eq!(topo.lookup_jid("top", &late), Value::Null, "top is down");
    topo.spawn_master("top", "salt-master")
        .expect("restart top");
    let t = &topo;
    t.eventually(WAIT, "spooled returns reach the top", || {
        let got = t.lookup_jid("top", &late);
        keys_of(&got) == set(&["s1m1", "s1m2", "s1m3"])
            && got
                .as_object()
                .is_some_and(|m| m.values().all(|v| v == "late"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", topo.log("syndic1")));
    topo.wait_up(&strings(&all), WAIT)
        .expect("all up after top restart");

    // A syndic that is down itself is named as such.
    topo.stop("syndic2", false).expect("stop syndic2");
    let t = &topo;
    t.eventually(WAIT, "syndic2 link down at the top", || {
        run(t, "top", &["manage.list_syndics"])["syndic2"]["link"] == "down"
    })
    .expect("link down");
    let out = topo
        .salt(&["s2*", "test.ping", "-t", "2", "--out", "json", "--static"])
        .expect("salt");
    assert_eq!(code(&out), 20, "{}", text(&out));
    let doc = json_of(&out);
    for id in ["s2m1", "s2m2", "s2m3"] {
        assert_eq!(
            doc[id], "Minion did not return. [Syndic syndic2 not connected]",
            "{doc}"
        );
    }

    // Failover: syndic2's first upper master does not exist; it moves on
    // to the next in its list and serves the top again.
    let dead = format!("{}.250", topo.top.addr.rsplit_once('.').expect("addr").0);
    let list = format!("syndic_master:\n  - {dead}\n  - {}\n", topo.top.addr);
    override_master(&topo, "syndic2", &list);
    topo.start_syndic("syndic2").expect("restart syndic2");
    let t = &topo;
    t.eventually(WAIT, "syndic2 failed over to the top", || {
        t.salt(&["s2*", "test.ping", "--out", "json", "--static", "-t", "5"])
            .map(|o| code(&o) == 0 && keys_of(&json_of(&o)) == set(&["s2m1", "s2m2", "s2m3"]))
            .unwrap_or(false)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", topo.log("syndic2")));
    assert!(
        topo.log("syndic2").contains("failing over"),
        "{}",
        topo.log("syndic2")
    );
}

#[test]
fn three_tier_chain() {
    let mut topo = Topology::builder()
        .syndics(1)
        .tiers(2)
        .minions_per_syndic(3)
        .master_config("gather_job_timeout: 3")
        .grains("s1m2", json!({"role": "db"}))
        .start(WAIT)
        .expect("topology");
    let all = ["s1m1", "s1m2", "s1m3"];
    let t = &topo;
    t.eventually(WAIT, "the chain is known at the top", || {
        let s = run(t, "top", &["manage.list_syndics"]);
        s["syndic1-t1"]["link"] == "up"
            && s["syndic1-t1"]["minions"] == 3
            && s.get("syndic1-t2").is_none()
    })
    .expect("list_syndics on the top");
    let mid = run(&topo, "syndic1-t1", &["manage.list_syndics"]);
    assert_eq!(mid["syndic1-t2"]["minions"], 3, "{mid}");

    let t0 = Instant::now();
    let out = topo
        .salt(&["*", "test.ping", "-t", "30", "--out", "json", "--static"])
        .expect("salt");
    let took = t0.elapsed();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(keys_of(&json_of(&out)), set(&all));
    eprintln!("salt '*' test.ping -t 30 through 2 tiers of syndics: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let out = topo
        .salt(&[
            "-G",
            "role:db",
            "test.echo",
            "deep",
            "--out",
            "json",
            "--static",
        ])
        .expect("salt");
    assert_eq!(json_of(&out), json!({"s1m2": "deep"}), "{}", text(&out));
    // The same jid at every tier.
    let out = topo
        .salt(&["s1m1", "test.echo", "jid", "--async"])
        .expect("async");
    let jid = async_jid(&out);
    let t = &topo;
    t.eventually(WAIT, "the return reaches the top", || {
        t.lookup_jid("top", &jid)["s1m1"] == "jid"
    })
    .expect("return at the top");
    for tier in ["syndic1-t1", "syndic1-t2"] {
        assert_eq!(topo.lookup_jid(tier, &jid)["s1m1"], "jid", "{tier}");
    }

    topo.stop("s1m3", true).expect("kill s1m3");
    let out = topo.salt(&["*", "test.ping", "-t", "3"]).expect("salt");
    assert_eq!(code(&out), 20, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("s1m3:\n    Minion did not return. [No response via syndic syndic1-t1]"),
        "{stdout}"
    );
    assert!(stdout.contains("s1m1:\n    True"), "{stdout}");
    let t = &topo;
    t.eventually(WAIT, "s1m3 down two tiers up", || {
        run(t, "top", &["manage.down"]) == json!(["s1m3"])
    })
    .expect("manage.down");

    // Batches leave when full, not only on the interval: with a 10-minute
    // interval and batches of 2, two returns go up at once.
    override_master(
        &topo,
        "syndic1-t2",
        "syndic_forward_interval_ms: 600000\nsyndic_forward_batch: 2\n",
    );
    topo.stop("syndic1-t2", false).expect("stop leaf syndic");
    topo.start_syndic("syndic1-t2")
        .expect("restart leaf syndic");
    let leaf = strings(&["s1m1", "s1m2"]);
    topo.wait_up_on("syndic1-t2", &leaf, WAIT)
        .expect("leaf minions back on the leaf");
    let t = &topo;
    t.eventually(WAIT, "the leaf reported up the chain again", || {
        run(t, "syndic1-t1", &["manage.list_syndics"])["syndic1-t2"]["link"] == "up"
    })
    .expect("leaf link");
    topo.wait_up(&leaf, WAIT)
        .expect("leaf minions up at the top");
    // Signed in again is not subscribed again: a minion's SUB socket
    // reconnects to the restarted leaf on its own back-off and misses
    // publishes until then. Wait until both answer a job of the leaf's own
    // (its returns do not go upward, so no half batch is left).
    let t = &topo;
    t.eventually(WAIT, "both leaf minions get jobs again", || {
        t.cli(
            "syndic1-t2",
            "salt",
            &["-L", "s1m1,s1m2", "test.ping", "-t", "5"],
        )
        .is_ok_and(|o| code(&o) == 0)
    })
    .expect("leaf minions subscribed again");
    let t0 = Instant::now();
    let out = topo
        .salt(&[
            "-L",
            "s1m1,s1m2",
            "test.ping",
            "-t",
            "30",
            "--out",
            "json",
            "--static",
        ])
        .expect("salt");
    let took = t0.elapsed();
    assert_eq!(
        code(&out),
        0,
        "{}\n--- top\n{}\n--- mid\n{}\n--- leaf\n{}\n--- s1m1\n{}",
        text(&out),
        topo.log("top"),
        topo.log("syndic1-t1"),
        topo.log("syndic1-t2"),
        topo.log("s1m1")
    );
    assert_eq!(keys_of(&json_of(&out)), set(&["s1m1", "s1m2"]));
    eprintln!("a full batch behind a 10-minute interval: {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "a full batch waited: {took:?}"
    );
}
