#![allow(clippy::unwrap_used)]

use super::*;
use brine_common::crypto::KeyPair;
use std::collections::BTreeMap;

fn own(pillarenv: Option<&str>) -> RequestBody {
    RequestBody::Pillar {
        pillarenv: pillarenv.map(str::to_string),
    }
}

fn for_minion(id: &str) -> RequestBody {
    RequestBody::PillarFor {
        id: id.to_string(),
        grains: json!({"os": "Debian"}),
        pub_pem: "PEM".to_string(),
        pillarenv: None,
    }
}

fn q(id: &str) -> ForMinion {
    ForMinion {
        id: id.to_string(),
        grains: json!({"os": "Debian"}),
        pub_pem: "PEM".to_string(),
        pillarenv: None,
    }
}

#[test]
fn a_minion_gets_its_own_pillar_compiled_here_or_from_above() {
    assert_eq!(
        plan(Role::Minion, "m1", own(Some("dev")), false, |_| false),
        Plan::CompileOwn {
            pillarenv: Some("dev".into())
        }
    );
    assert_eq!(
        plan(Role::Minion, "m1", own(None), true, |_| false),
        Plan::ForwardOwn { pillarenv: None }
    );
}

#[test]
fn a_syndic_gets_pillars_of_its_subtree_only() {
    let mine = |id: &str| id == "m1";
    assert_eq!(
        plan(Role::Syndic, "s1", for_minion("m1"), false, mine),
        Plan::CompileFor(q("m1"))
    );
    assert_eq!(
        plan(Role::Syndic, "s1", for_minion("m1"), true, mine),
        Plan::ForwardFor(q("m1"))
    );
    for other in ["m2", "s1", "../x", ""] {
        assert_eq!(
            plan(Role::Syndic, "s1", for_minion(other), false, |id: &str| id
                != "m2"),
            Plan::Refuse(Refusal::NotInSubtree {
                syndic: "s1".into(),
                id: other.into()
            }),
            "{other}"
        );
    }
}

#[test]
fn a_minion_cannot_ask_for_another_and_a_syndic_has_no_own_pillar() {
    assert!(matches!(
        plan(Role::Minion, "m1", for_minion("m2"), false, |_| true),
        Plan::Refuse(Refusal::Unavailable(_))
    ));
    assert!(matches!(
        plan(Role::Minion, "m1", for_minion("m1"), true, |_| true),
        Plan::Refuse(Refusal::Unavailable(_))
    ));
    assert!(matches!(
        plan(Role::Syndic, "s1", own(None), false, |_| true),
        Plan::Refuse(Refusal::Unavailable(_))
    ));
    assert!(matches!(
        plan(
            Role::Minion,
            "m1",
            RequestBody::FileList {
                saltenv: "base".into(),
                prefix: String::new(),
                kind: brine_common::proto::ListKind::Files
            },
            false,
            |_| true
        ),
        Plan::Refuse(Refusal::Unavailable(_))
    ));
}

fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, MasterConfig) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let cfg = MasterConfig {
        pillar_roots: BTreeMap::from([("base".to_string(), vec![dir.path().to_path_buf()])]),
        ..MasterConfig::default()
    };
    (dir, cfg)
}

#[test]
fn compiled_and_sealed_for_one_minion_only() {
    let (_dir, cfg) = tree(&[
        ("top.sls", "base:\n  m1: [s1]\n  m2: [s2]\n"),
        ("s1.sls", "secret: one\nos: {{ grains.os }}\n"),
        ("s2.sls", "secret: two\n"),
    ]);
    let pillar = compile_checked(&cfg, "m1", &json!({"os": "Debian"}), None).unwrap();
    assert_eq!(*pillar, json!({"secret": "one", "os": "Debian"}));
    let m1 = KeyPair::generate().unwrap();
    let m2 = KeyPair::generate().unwrap();
    let sealed = seal("m1", m1.public().pem(), &pillar).unwrap();
    assert_eq!(sealed.open(&m1, "m1", 1 << 20).unwrap(), *pillar);
    assert!(sealed.open(&m2, "m1", 1 << 20).is_err());
    assert!(seal("m1", "not a key", &pillar).is_err());
}

#[test]
fn a_pillar_too_big_for_a_frame_becomes_an_error() {
    let big = "x".repeat(20_000);
    let (_dir, mut cfg) = tree(&[
        ("top.sls", "base:\n  '*': [big]\n"),
        ("big.sls", &format!("blob: {big}\n")),
    ]);
    cfg.max_frame_bytes = FRAME_MARGIN + 10_000;
    let pillar = compile_checked(&cfg, "m1", &Value::Null, None).unwrap();
    assert!(pillar.get("blob").is_none());
    let errs = pillar["_errors"].as_array().unwrap();
    assert!(errs[0]
        .as_str()
        .unwrap()
        .contains("larger than max_frame_bytes"));
}
