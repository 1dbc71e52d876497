//! Pillar end to end: compiled on the top master from its `pillar_roots`
//! for each minion (a minion on the top and two behind a syndic), each
//! minion reading only its own secrets; the command-line override, a
//! refresh after a change, `-I`/`-J`/`I@` targeting with exact expected
//! sets through the syndic, a Jinja error reported with file and line, and
//! a minion asking for another's pillar (refused, counted). The syndic
//! relays pillars sealed to each minion's key and never holds one in clear.

use brine_common::proto::{ReplyBody, RequestBody, Role};
use brine_deploy::peer::HandPeer;
use brine_deploy::topology::Topology;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// Generous: other test binaries share the two cores.
const WAIT: Duration = Duration::from_secs(60);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", text(out)))
}

fn salt_out(topo: &Topology, args: &[&str]) -> Output {
    let mut a = args.to_vec();
    a.extend(["--out", "json", "--static", "-t", "30"]);
    topo.salt(&a).expect("salt")
}

fn salt(topo: &Topology, args: &[&str]) -> Value {
    json_of(&salt_out(topo, args))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

fn pillar_tree(dir: &Path) {
    write(
        &dir.join("top.sls"),
        "base:\n  '*':\n    - common\n  minion1:\n    - secrets.minion1\n  s1m1:\n    - secrets.s1m1\n  s1m2:\n    - secrets.s1m2\n  'role:web':\n    - match: grain\n    - web\n",
    );
    write(
        &dir.join("common.sls"),
        "{% import_yaml 'defaults.yaml' as defaults %}\ncommon:\n  greeting: hello {{ grains['id'] }}\n  port: {{ defaults.port }}\n",
    );
    write(&dir.join("defaults.yaml"), "port: 8080\n");
    write(&dir.join("secrets/minion1.sls"), "secret: apple\n");
    write(&dir.join("secrets/s1m1.sls"), "secret: banana\n");
    write(
        &dir.join("secrets/s1m2.sls"),
        "include:\n  - .shared\nsecret: cherry\n",
    );
    write(&dir.join("secrets/shared.sls"), "shared:\n  flag: true\n");
    write(&dir.join("web.sls"), "role: web\n");
}

fn topology(pillar: &Path) -> Topology {
    pillar_tree(pillar);
    Topology::builder()
        .syndics(1)
        .direct_minions(1)
        .minions_per_syndic(2)
        .grains("s1m2", json!({"role": "web"}))
        .top_config(&format!("pillar_roots: {}", json!({"base": [pillar]})))
        .start(WAIT)
        .expect("topology")
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = vec![];
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            assert!(seen < 100_000, "bounded walk");
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn each_minion_sees_its_own_pillar_through_every_tier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topo = topology(dir.path());

    // The pillars reached the minions (each matches its own pillar
    // target) while the syndic relayed them sealed: no secret in clear on
    // its disk. (A job that returns pillar data, like pillar.items below,
    // is stored on the way up like any return.)
    // (Right after start: a minion that has not fetched its pillar yet
    // fetches it before deciding, so it answers, without a wait.)
    let r = salt(&topo, &["-I", "secret:ban*", "test.ping"]);
    assert_eq!(r, json!({"s1m1": true}));
    let syndic_dir = topo.root.path().join("syndic1");
    let hits = files_containing(&syndic_dir, b"banana");
    assert!(
        hits.is_empty(),
        "the syndic holds a pillar in clear: {hits:?}"
    );

    // Every minion: common data rendered for it, its own secret only.
    let r = salt(&topo, &["*", "pillar.items"]);
    assert_eq!(keys(&r), set(&["minion1", "s1m1", "s1m2"]), "{r}");
    for (m, secret) in [("minion1", "apple"), ("s1m1", "banana"), ("s1m2", "cherry")] {
        assert_eq!(r[m]["secret"], json!(secret), "{m}: {r}");
        assert_eq!(r[m]["common"]["greeting"], json!(format!("hello {m}")));
        assert_eq!(r[m]["common"]["port"], json!(8080));
        let all = r[m].to_string();
        for other in ["apple", "banana", "cherry"] {
            if other != secret {
                assert!(!all.contains(other), "{m} sees {other}: {all}");
            }
        }
    }
    assert_eq!(r["s1m2"]["role"], json!("web"));
    assert_eq!(r["s1m2"]["shared"]["flag"], json!(true), "include");
    assert!(r["s1m1"].get("role").is_none());

    // pillar.get with a nested key and a default; pillar.item; pillar.ls.
    let r = salt(&topo, &["s1m1", "pillar.get", "common:greeting"]);
    assert_eq!(r["s1m1"], json!("hello s1m1"));
    let r = salt(
        &topo,
        &["s1m1", "pillar.get", "nope:missing", "default=dflt"],
    );
    assert_eq!(r["s1m1"], json!("dflt"));
    let r = salt(&topo, &["minion1", "pillar.item", "secret"]);
    assert_eq!(r["minion1"], json!({"secret": "apple"}));
    let r = salt(&topo, &["minion1", "pillar.ls"]);
    let ls: BTreeSet<String> = serde_json::from_value(r["minion1"].clone()).expect("ls");
    assert_eq!(ls, set(&["common", "secret"]));

    // The command-line override goes on top for that call only.
    let r = salt(
        &topo,
        &[
            "s1m1",
            "pillar.items",
            "pillar={\"extra\": {\"k\": 1}, \"secret\": \"over\"}",
        ],
    );
    assert_eq!(r["s1m1"]["extra"]["k"], json!(1), "{r}");
    assert_eq!(r["s1m1"]["secret"], json!("over"));
    let r = salt(&topo, &["s1m1", "pillar.get", "secret"]);
    assert_eq!(r["s1m1"], json!("banana"), "override not kept");

    // Pillar targeting, exact through the syndic.
    let r = salt(&topo, &["-I", "secret:apple", "test.ping"]);
    assert_eq!(r, json!({"minion1": true}));
    let out = salt_out(&topo, &["-I", "role:web", "test.ping"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(keys(&json_of(&out)), set(&["s1m2"]));
    let r = salt(&topo, &["-J", "secret:^(banana|cherry)$", "test.ping"]);
    assert_eq!(r, json!({"s1m1": true, "s1m2": true}));
    let r = salt(&topo, &["-C", "I@role:web or L@minion1", "test.ping"]);
    assert_eq!(r, json!({"minion1": true, "s1m2": true}));
    // The top knows every pillar: nothing to send, said at once.
    let out = salt_out(
        &topo,
        &["-C", "G@role:web and not I@secret:cherry", "test.ping"],
    );
    assert!(text(&out).contains("No minions matched"), "{}", text(&out));

    // A change is seen after saltutil.refresh_pillar.
    write(
        &dir.path().join("common.sls"),
        "common:\n  greeting: bye {{ grains['id'] }}\n",
    );
    let r = salt(&topo, &["*", "saltutil.refresh_pillar"]);
    for m in ["minion1", "s1m1", "s1m2"] {
        assert_eq!(r[m], json!(true), "{r}");
    }
    let r = salt(&topo, &["*", "pillar.get", "common:greeting"]);
    assert_eq!(r["s1m2"], json!("bye s1m2"), "{r}");
    assert_eq!(r["minion1"], json!("bye minion1"), "{r}");
    // ... and targeting follows the refreshed pillar.
    write(&dir.path().join("web.sls"), "role: db\n");
    salt(&topo, &["*", "saltutil.refresh_pillar"]);
    let r = salt(&topo, &["-I", "role:db", "test.ping"]);
    assert_eq!(r, json!({"s1m2": true}));

    // A Jinja error reaches the operator with the file and the line.
    write(
        &dir.path().join("secrets/s1m1.sls"),
        "secret: banana\nother: 1\nbroken: {{ grains['id'] | nosuchfilter }}\n",
    );
    let r = salt(&topo, &["s1m1", "pillar.items"]);
    let errors = r["s1m1"]["_errors"].to_string();
    assert!(errors.contains("secrets"), "{r}");
    assert!(errors.contains("line 3"), "{r}");
    // ... without emptying the rest of the pillar.
    assert_eq!(r["s1m1"]["common"]["greeting"], json!("bye s1m1"), "{r}");
}

#[test]
fn a_minion_cannot_ask_for_another_minions_pillar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topo = topology(dir.path());
    let ctx = zmq::Context::new();
    let mut evil = HandPeer::new(&ctx, &topo.top.addr, "evil", Role::Minion).expect("peer");
    brine_deploy::launch::poll_until(WAIT, Duration::from_millis(200), || evil.sign_in().is_ok());
    let before = topo.stat("pillar_refused");
    // A minion may only ask for its own pillar (its session names it);
    // asking for another id, as only a syndic may for its subtree, is
    // refused and counted.
    let r = evil
        .request(RequestBody::PillarFor {
            id: "minion1".into(),
            grains: json!({}),
            pub_pem: String::new(),
            pillarenv: None,
        })
        .expect("answer");
    assert!(matches!(r, ReplyBody::Refused(_)), "{r:?}");
    assert!(topo.stat("pillar_refused") > before);
    // Its own pillar has none of the others' secrets.
    let r = evil
        .request(RequestBody::Pillar { pillarenv: None })
        .expect("answer");
    let ReplyBody::Pillar(p) = r else {
        panic!("own pillar: {r:?}")
    };
    assert!(!p.to_string().contains("secret"), "{p}");
    assert!(p.get("common").is_some(), "{p}");
}
