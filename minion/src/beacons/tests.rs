//! Config parsing, the loop's scheduling and event shapes, and the loop
//! sending to a fake master.

use super::*;
use crate::files::fake::FakeMaster;
use brine_common::sync::lock;
use serde_json::json;

#[test]
fn salt_list_of_dicts_and_meta_options() {
    let p = parse(
        "load",
        &json!([{"averages": {"1m": [0.0, 2.0], "15m": ["0.1", 1]}},
                {"onchangeonly": true}, {"interval": 10}, {"disable_during_state_run": true}]),
    )
    .expect("valid");
    assert_eq!(p.meta.interval, 10.0);
    assert!(p.meta.enabled && p.meta.disable_during_state_run);
    assert_eq!(p.meta.module, "load");
    let Kind::Load(l) = p.kind else {
        panic!("load")
    };
    assert_eq!(l.ranges, [Some((0.0, 2.0)), None, Some((0.1, 1.0))]);
    assert!(l.onchangeonly && l.emitatstartup);

    let p = parse(
        "mem",
        &json!([{"beacon_module": "memusage"}, {"percent": "63%"}, {"enabled": false}]),
    )
    .expect("valid");
    assert_eq!(p.meta.module, "memusage");
    assert!(!p.meta.enabled);
    assert!(matches!(p.kind, Kind::MemUsage(t, false) if t == 63.0));
    assert_eq!(
        parse("status", &json!(null)).expect("ok").meta.interval,
        1.0
    );

    let p = parse(
        "service",
        &json!([{"services": {"nginx": {"onchangeonly": true, "uncleanshutdown": "/run/nginx.pid"}, "sshd": null}}]),
    )
    .expect("valid");
    let Kind::Service(s) = p.kind else {
        panic!("service")
    };
    assert!(s["nginx"].onchangeonly && !s["sshd"].onchangeonly);

    let p = parse(
        "inotify",
        &json!([{"files": {"/etc/app/": {"mask": ["close_write", "create"], "recurse": true,
                 "exclude": ["/etc/app/tmp", {"/etc/app/.*\\.swp": {"regex": true}}]}}},
                {"coalesce": true}]),
    )
    .expect("valid");
    let Kind::Inotify(w) = p.kind else {
        panic!("inotify")
    };
    assert_eq!(w[0].path, "/etc/app");
    assert_eq!(w[0].mask["modify"], "IN_CLOSE_WRITE");
    assert_eq!(w[0].exclude.len(), 2);
}

#[test]
fn bad_configs_say_why() {
    let err = |name: &str, v: Value| parse(name, &v).expect_err("bad").to_string();
    assert!(err("load", json!("2.0")).contains("must be a list of dictionaries"));
    assert!(err("load", json!([{"averages": {"2m": [0, 1]}}])).contains("1m, 5m or 15m"));
    assert!(err("load", json!([{"averages": {"1m": [3]}}])).contains("list of two numbers"));
    assert!(err(
        "load",
        json!([{"interval": 0}, {"averages": {"1m": [0, 1]}}])
    )
    .contains("interval"));
    assert!(err("memusage", json!([{"percnt": 5}])).contains("requires percent"));
    assert!(err("memusage", json!([{"percent": 5}, {"x": 1}])).contains("unknown option \"x\""));
    assert!(err("diskusage", json!([{"/": "many"}])).contains("must be a number"));
    assert!(err("diskusage", json!([{"/(": 5}])).contains("regular expression"));
    assert!(err("inotify", json!([{"files": {"/x": {"mask": ["open"]}}}])).contains("polling"));
    assert!(err("inotify", json!([{"files": {"rel": null}}])).contains("absolute"));
    assert!(err("service", json!([{"services": {}}])).contains("empty"));
    assert!(err("ps", json!([])).contains("not available"));
}

#[test]
fn events_are_tagged_like_salt() {
    let ev = shape("m1", "load", json!({"1m": 3.0}));
    assert_eq!(ev.tag, "salt/beacon/m1/load/");
    assert_eq!(ev.data, json!({"1m": 3.0, "id": "m1"}));
    let ev = shape(
        "m1",
        "service",
        json!({"nginx": {"running": true}, "tag": "nginx"}),
    );
    assert_eq!(ev.tag, "salt/beacon/m1/service/nginx");
    assert!(ev.data.get("tag").is_none());
    let ev = shape(
        "m1",
        "inotify",
        json!({"tag": "/etc", "path": "/etc/x", "change": "IN_MODIFY"}),
    );
    assert_eq!(ev.tag, "salt/beacon/m1/inotify//etc");
}

#[test]
fn tick_runs_due_beacons_skips_bad_ones_and_follows_changes() {
    let b = Beacons::new(
        &json!({
            "memusage": [{"percent": 0}, {"interval": 10}],
            "broken": [{"x": 1}],
            "load": [{"averages": {"1m": [0, 1]}}, {"bogus": true}],
        }),
        None,
        None,
    );
    let t0 = Instant::now();
    let ev = b.tick(t0, "m1");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].tag, "salt/beacon/m1/memusage/");
    assert!(ev[0].data["memusage"].as_f64().is_some());
    assert_eq!(b.bad_configs(), 2, "broken and load, counted once");
    assert!(
        b.tick(t0 + Duration::from_secs(5), "m1").is_empty(),
        "not due"
    );
    assert_eq!(b.bad_configs(), 2, "not counted again");
    assert_eq!(
        b.tick(t0 + Duration::from_secs(10), "m1").len(),
        1,
        "due again"
    );

    // beacons.* changes apply at the next tick.
    assert!(b.set_enabled(Some("memusage"), false, false).result);
    assert!(
        b.tick(t0 + Duration::from_secs(30), "m1").is_empty(),
        "disabled"
    );
    assert!(b.set_enabled(Some("memusage"), true, false).result);
    assert!(b.set_enabled(None, false, false).result);
    assert!(
        b.tick(t0 + Duration::from_secs(60), "m1").is_empty(),
        "all off"
    );
    assert!(b.set_enabled(None, true, false).result);
    assert_eq!(b.tick(t0 + Duration::from_secs(90), "m1").len(), 1);
    assert!(b.delete("memusage", false).result);
    assert!(b.tick(t0 + Duration::from_secs(120), "m1").is_empty());
    assert!(
        b.add("status", &json!([{"loadavg": ["1-min"]}]), false)
            .result
    );
    let ev = b.tick(t0 + Duration::from_secs(121), "m1");
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0].tag.starts_with("salt/beacon/m1/status/20"),
        "{}",
        ev[0].tag
    );
    assert!(
        ev[0].data["data"]["loadavg"]["1-min"].is_number(),
        "{}",
        ev[0].data
    );
}

#[test]
fn pillar_beacons_run_and_config_wins() {
    let b = Beacons::new(&json!({"memusage": [{"percent": 101}]}), None, None);
    b.set_pillar(&json!({"beacons": {"memusage": [{"percent": 0}], "diskusage": [{"/": 0}]}}));
    let ev = b.tick(Instant::now(), "m1");
    let tags: Vec<&str> = ev.iter().map(|e| e.tag.as_str()).collect();
    assert_eq!(
        tags,
        vec!["salt/beacon/m1/diskusage/"],
        "memusage at 101% never fires"
    );
    assert_eq!(ev[0].data["mount"], "/");
    b.set_pillar(&json!({"beacons": "nonsense"}));
    assert!(b
        .tick(Instant::now() + Duration::from_secs(5), "m1")
        .is_empty());
}

#[test]
fn disable_during_state_run() {
    let running = Arc::new(RunningJobs::new());
    let b = Beacons::new(
        &json!({"memusage": [{"percent": 0}, {"disable_during_state_run": true}]}),
        None,
        Some(running.clone()),
    );
    let jid = "20250101000000000001".to_string();
    running.insert(
        crate::running::RunningInfo {
            jid: jid.parse().expect("jid"),
            fun: "state.apply".into(),
            arg: vec![],
            pid: 1,
            tgt: "*".into(),
            tgt_type: "glob".into(),
            user: "root".into(),
            start: jid.clone(),
        },
        CancellationToken::new(),
    );
    let t0 = Instant::now();
    assert!(b.tick(t0, "m1").is_empty());
    running.remove(&jid.parse().expect("jid"));
    assert_eq!(b.tick(t0 + Duration::from_secs(1), "m1").len(), 1);
}

#[test]
fn inotify_by_polling_sees_a_file_change() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().to_string_lossy().into_owned();
    let b = Beacons::new(
        &json!({"inotify": [{"files": {root.clone(): {"mask": ["create", "modify"]}}}]}),
        None,
        None,
    );
    let t0 = Instant::now();
    assert!(b.tick(t0, "m1").is_empty(), "baseline");
    std::fs::write(dir.path().join("new"), "x").expect("write");
    let ev = b.tick(t0 + Duration::from_secs(1), "m1");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].tag, format!("salt/beacon/m1/inotify/{root}"));
    assert_eq!(ev[0].data["change"], "IN_CREATE");
    assert_eq!(ev[0].data["path"], format!("{root}/new"));
    assert!(b.tick(t0 + Duration::from_secs(2), "m1").is_empty(), "once");
}

#[test]
fn save_writes_minion_d_beacons_conf() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = Beacons::save_path_for(&dir.path().join("minion")).expect("path");
    assert_eq!(path, dir.path().join("minion.d/beacons.conf"));
    let b = Beacons::new(
        &json!({"memusage": [{"percent": "63%"}]}),
        Some(path.clone()),
        None,
    );
    b.set_pillar(&json!({"beacons": {"load": [{"averages": {"1m": [0, 1]}}]}}));
    assert!(b.save().result);
    let text = std::fs::read_to_string(&path).expect("read");
    let v: Value = serde_norway::from_str(&text).expect("yaml");
    assert_eq!(
        v,
        json!({"beacons": {"memusage": [{"percent": "63%"}]}}),
        "pillar's not saved"
    );
    // The file reads back through the minion's config loader.
    let cfg = brine_common::config::load_minion_with_env(dir.path(), &[], &[]).expect("config");
    assert_eq!(cfg.beacons, json!({"memusage": [{"percent": "63%"}]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_sends_events_to_the_master() {
    let master = Arc::new(FakeMaster::default());
    let b = Arc::new(Beacons::new(
        &json!({"memusage": [{"percent": 0}, {"interval": 3600}]}),
        None,
        None,
    ));
    let pillar = Arc::new(RwLock::new(json!({})));
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(b, "m1".into(), pillar, master.clone(), stop.clone()));
    let sent = || {
        lock(&master.asked)
            .iter()
            .filter_map(|r| match r {
                RequestBody::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while sent().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("loop stops")
        .expect("join");
    let ev = sent();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].tag, "salt/beacon/m1/memusage/");
    assert_eq!(ev[0].data["id"], "m1");
}

#[test]
fn onchangeonly_threshold_beacons_fire_once_while_above() {
    let b = Beacons::new(
        &json!({
            "memusage": [{"percent": 0}, {"onchangeonly": true}, {"interval": 1}],
            "diskusage": [{"/": 0}, {"onchangeonly": true}, {"interval": 1}],
            "mem_every": [{"beacon_module": "memusage"}, {"percent": 0}, {"interval": 1}],
        }),
        None,
        None,
    );
    let t0 = Instant::now();
    let mut tags: Vec<String> = b.tick(t0, "m1").into_iter().map(|e| e.tag).collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            "salt/beacon/m1/diskusage/",
            "salt/beacon/m1/mem_every/",
            "salt/beacon/m1/memusage/"
        ]
    );
    for k in 1..4 {
        let ev = b.tick(t0 + Duration::from_secs(k), "m1");
        let tags: Vec<&str> = ev.iter().map(|e| e.tag.as_str()).collect();
        assert_eq!(tags, ["salt/beacon/m1/mem_every/"], "run {k}: still above");
    }
}
