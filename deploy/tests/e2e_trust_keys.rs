//! Trust decisions a peer must not be able to make for itself, against real
//! processes on loopback (issue 9, items 2, 8 and 9): the syndic role is
//! granted by the operator with `salt-key --grant-syndic`, never claimed by
//! an accepted key; ids the key listing would hide or show misleadingly are
//! refused even under `auto_accept`; a syndic pins the master above with
//! `syndic_finger` before first contact.

use brine_common::config;
use brine_common::proto::Role;
use brine_deploy::peer::HandPeer;
use brine_deploy::topology::Topology;
use serde_json::Value;
use std::time::Duration;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn key_list(topo: &Topology) -> Value {
    json(
        &topo
            .cli("top", "salt-key", &["-L", "--out", "json"])
            .expect("salt-key -L"),
    )
}

fn salt_key_ok(topo: &Topology, args: &[&str]) -> String {
    let out = topo.cli("top", "salt-key", args).expect("salt-key");
    assert_eq!(out.status.code(), Some(0), "salt-key {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Item 2: an accepted key that asks for role Syndic on an `order_masters`
/// top is refused until the operator grants the role, and loses it when
/// the grant is revoked.
#[test]
fn syndic_role_is_granted_by_the_operator() {
    let topo = Topology::builder()
        .direct_minions(1)
        .start(Duration::from_secs(30))
        .expect("topology");
    let ctx = zmq::Context::new();
    let mut rogue = HandPeer::new(&ctx, &topo.top.addr, "rogue", Role::Syndic).expect("peer");
    let refused_before = topo.stat("auth_refused");
    // auto_accept accepts the key, never the role: the first attempt stores
    // the key, the second is an accepted key asking for the role.
    for attempt in 0..2 {
        let r = rogue.sign_in();
        assert!(
            r.is_err(),
            "attempt {attempt}: syndic role claimed without a grant"
        );
    }
    let keys = key_list(&topo);
    assert!(
        keys["minions"]
            .as_array()
            .is_some_and(|a| a.contains(&"rogue".into())),
        "{keys}"
    );
    assert_eq!(keys["syndics"], serde_json::json!([]), "{keys}");
    assert!(topo.stat("auth_refused") >= refused_before + 2);
    assert!(
        topo.log("top").contains("salt-key --grant-syndic"),
        "the refusal names the command that grants the role"
    );

    // The operator grants it: the same key now signs in as a syndic.
    let out = salt_key_ok(&topo, &["--grant-syndic", "rogue", "-y"]);
    assert!(
        out.contains("Syndic role granted to minion rogue."),
        "{out}"
    );
    rogue.sign_in().expect("granted syndic signs in");
    assert_eq!(key_list(&topo)["syndics"], serde_json::json!(["rogue"]));
    let text = salt_key_ok(&topo, &["-L"]);
    assert!(
        text.contains("Accepted Keys:\nminion1\nrogue\nSyndics:\nrogue\n"),
        "{text}"
    );

    // Revoked: the session ends at once and the role is refused again.
    salt_key_ok(&topo, &["--revoke-syndic", "rogue", "-y"]);
    let m = rogue.request_raw(brine_common::proto::RequestBody::Hello {
        grains: serde_json::json!({}),
        version: "x".into(),
    });
    assert!(
        matches!(m, Ok((_, brine_common::session::ServerMsg::ReAuth))),
        "{m:?}"
    );
    assert!(rogue.sign_in().is_err(), "revoked syndic signed in again");
    assert_eq!(key_list(&topo)["syndics"], serde_json::json!([]));
}

/// Item 8: with `auto_accept: True`, ids that `salt-key -L` would hide
/// (leading dot) or show misleadingly (zero-width, bidi override) are
/// refused and leave no key file behind.
#[test]
fn hidden_ids_are_refused_under_auto_accept() {
    let topo = Topology::builder()
        .direct_minions(1)
        .start(Duration::from_secs(30))
        .expect("topology");
    let ctx = zmq::Context::new();
    let ids = [
        ".hidden",
        "minion\u{200b}1",
        "\u{202e}1noinim",
        "web\u{2066}x\u{2069}",
    ];
    for id in ids {
        let mut p = HandPeer::new(&ctx, &topo.top.addr, id, Role::Minion).expect("peer");
        assert!(p.sign_in().is_err(), "{id:?} was accepted");
    }
    let cfg = config::load_master(&topo.top.config_dir, &[]).expect("config");
    for state in [
        "minions",
        "minions_pre",
        "minions_rejected",
        "minions_denied",
    ] {
        let names: Vec<String> = std::fs::read_dir(cfg.pki_dir.join(state))
            .expect("key dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        let want: Vec<String> = if state == "minions" {
            vec!["minion1".into()]
        } else {
            vec![]
        };
        assert_eq!(names, want, "{state}");
    }
    // The fleet is unaffected.
    let out = topo
        .salt(&["*", "test.ping", "--out", "json", "--static"])
        .expect("ping");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json(&out), serde_json::json!({"minion1": true}));
}

/// Item 9: a syndic whose `syndic_finger` does not match the master above
/// never signs in to it (its log says why); one with the right fingerprint
/// does, and pins the key.
#[test]
fn syndic_finger_pins_the_master_above() {
    let mut topo = Topology::builder()
        .syndics(2)
        .start(Duration::from_secs(30))
        .expect("topology");
    let top = config::load_master(&topo.top.config_dir, &[]).expect("top config");
    let pem = std::fs::read_to_string(top.pki_dir.join("master.pub")).expect("master.pub");
    let finger = brine_common::crypto::PublicKey::from_pem(&pem)
        .expect("key")
        .fingerprint();
    let pin_of = |id: &str| {
        let node = topo.syndics.iter().find(|s| s.id == id).expect("node");
        let cfg = config::load_master(&node.config_dir, &[]).expect("config");
        cfg.syndic_pki_dir
            .expect("syndic pki")
            .join("syndic_master.pub")
    };
    let pins = [pin_of("syndic1"), pin_of("syndic2")];
    // Both first sign in as the topology grants them the role.
    topo.eventually(Duration::from_secs(20), "both syndics pin the top", || {
        pins.iter().all(|p| p.exists())
    })
    .expect("first contact");
    let wrong = ["ab"; 32].join(":");
    let mut marks = vec![];
    for (id, f) in [("syndic1", wrong.as_str()), ("syndic2", finger.as_str())] {
        topo.stop(id, false).expect("stop");
        let node = topo
            .syndics
            .iter()
            .find(|s| s.id == id)
            .expect("node")
            .clone();
        let cfg = config::load_master(&node.config_dir, &[]).expect("config");
        let pki = cfg.syndic_pki_dir.expect("syndic pki");
        // Forget the key pinned at the first start: this is first contact.
        std::fs::remove_file(pki.join("syndic_master.pub")).expect("pinned key");
        let file = node.config_dir.join("master");
        let mut text = std::fs::read_to_string(&file).expect("config");
        text.push_str(&format!("syndic_finger: '{f}'\n"));
        std::fs::write(&file, text).expect("config");
        marks.push((id, pki, topo.log(id).len()));
        topo.start_syndic(id).expect("restart");
    }
    let new_log = |id: &str, from: usize| topo.log(id).get(from..).unwrap_or("").to_string();
    let (_, pki1, from1) = &marks[0];
    let (_, pki2, from2) = &marks[1];
    topo.eventually(Duration::from_secs(20), "syndic2 signs in", || {
        new_log("syndic2", *from2).contains("signed in") && pki2.join("syndic_master.pub").exists()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", new_log("syndic2", *from2)));
    topo.eventually(
        Duration::from_secs(20),
        "syndic1 refuses the top's key",
        || new_log("syndic1", *from1).contains("does not match the pinned/expected key"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", new_log("syndic1", *from1)));
    let log1 = new_log("syndic1", *from1);
    assert!(!log1.contains("signed in"), "{log1}");
    assert!(
        !pki1.join("syndic_master.pub").exists(),
        "a refused key was pinned"
    );
}
