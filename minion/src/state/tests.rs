//! Unit tests of the state compiler and scheduler.

use super::*;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

fn high(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Compile with ids in the order they are written in `order`.
fn low(v: Value, order: &[&str]) -> Lowstate {
    let order: Vec<(String, Vec<String>)> =
        order.iter().map(|s| (s.to_string(), Vec::new())).collect();
    match compile(&high(v), &order) {
        Ok(l) => l,
        Err(e) => panic!("compile failed: {e:?}"),
    }
}

fn errs(v: Value) -> Vec<String> {
    match compile(&high(v), &[]) {
        Ok(l) => panic!("expected errors, got {:?}", l.to_json()),
        Err(e) => e,
    }
}

fn ok(changes: Value) -> StateOutcome {
    StateOutcome {
        skip_watch: false,
        result: Some(true),
        comment: String::new(),
        changes,
    }
}

/// Runs every chunk: `fail` ids fail, `change` ids report changes; logs
/// (id, ctx) of every call.
fn run_with(
    l: &Lowstate,
    opts: RunOptions,
    fail: &[&str],
    change: &[&str],
    log: &mut Vec<(String, RunCtx)>,
) -> BTreeMap<String, StateResult> {
    let mut exec = |c: &LowChunk, ctx: RunCtx| {
        log.push((c.id().to_string(), ctx));
        if fail.contains(&c.id()) {
            StateOutcome {
                skip_watch: false,
                result: Some(false),
                comment: "boom".into(),
                changes: json!({}),
            }
        } else if change.contains(&c.id()) {
            ok(json!({"changed": true}))
        } else {
            ok(json!({}))
        }
    };
    run(l, opts, &mut exec)
}

fn by_id<'a>(r: &'a BTreeMap<String, StateResult>, id: &str) -> &'a StateResult {
    match r.values().find(|s| s.id == id) {
        Some(s) => s,
        None => panic!("no result for {id}: {r:?}"),
    }
}

#[test]
fn short_and_long_form_lowstate_shape() {
    let l = low(
        json!({
            "vim": {"pkg.installed": [], "__sls__": "edit", "__env__": "base"},
            "conf": {"file": ["managed", {"name": "/etc/x"}, {"mode": "0644"}], "__sls__": "edit", "__env__": "base"},
        }),
        &["vim", "conf"],
    );
    assert_eq!(
        l.to_json(),
        json!([
            {"state": "pkg", "name": "vim", "__sls__": "edit", "__env__": "base", "__id__": "vim", "fun": "installed", "order": 10000},
            {"state": "file", "name": "/etc/x", "mode": "0644", "__sls__": "edit", "__env__": "base", "__id__": "conf", "fun": "managed", "order": 10001},
        ])
    );
    assert_eq!(
        l.chunks()[1].args(),
        high(json!({"name": "/etc/x", "mode": "0644"}))
    );
}

#[test]
fn names_expand_with_per_name_args_in_order() {
    let l = low(
        json!({"pkgs": {"pkg.installed": [{"names": ["b", {"a": [{"version": "1"}]}]}], "__sls__": "s"}}),
        &["pkgs"],
    );
    let c = l.chunks();
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].name(), c[1].name()), ("b", "a"));
    assert_eq!(c[0].get("order"), Some(&json!(10000.0001)));
    assert_eq!(c[1].get("version"), Some(&json!("1")));
    assert_eq!(c[0].get("names"), None);
}

#[test]
fn order_numbers_first_and_last_last() {
    let l = low(
        json!({
            "a": {"test.nop": [{"order": "last"}], "__sls__": "s"},
            "b": {"test.nop": [], "__sls__": "s"},
            "c": {"test.nop": [{"order": 1}], "__sls__": "s"},
        }),
        &["a", "b", "c"],
    );
    let ids: Vec<&str> = l.chunks().iter().map(LowChunk::id).collect();
    assert_eq!(ids, ["c", "b", "a"]);
}

#[test]
fn validation_errors_use_salts_wording() {
    let e = errs(json!({"x": "text"}));
    assert_eq!(e, ["ID x in SLS  is not a dictionary"]);
    let e = errs(json!({"x": {"file": "managed", "__sls__": "y"}}));
    assert_eq!(e, ["State 'x' in SLS 'y' is not formed as a list"]);
    let e = errs(json!({"x": {"file": ["managed", "absent"], "__sls__": "y"}}));
    assert_eq!(
        e,
        ["Too many functions declared in state 'file' in SLS 'y'"]
    );
    let e = errs(json!({"x": {"file": [{"name": "a"}], "__sls__": "y"}}));
    assert_eq!(e, ["No function declared in state 'file' in SLS 'y'"]);
}

#[test]
fn extend_merges_and_unknown_id_is_an_error() {
    let l = low(
        json!({
            "svc": {"service.running": [{"require": [{"pkg": "p"}]}], "__sls__": "s"},
            "p": {"pkg.installed": [], "__sls__": "s"},
            "f": {"file.managed": [], "__sls__": "s"},
            "extend": {"svc": {"service": [{"watch": [{"file": "f"}]}, {"enable": true}]}},
        }),
        &["svc", "p", "f"],
    );
    let svc = &l.chunks()[0];
    assert_eq!(svc.get("watch"), Some(&json!([{"file": "f"}])));
    assert_eq!(svc.get("enable"), Some(&json!(true)));
    let e = errs(json!({"extend": {"nope": {"file": [{"mode": "1"}], "__sls__": "t"}}}));
    assert!(
        e[0].starts_with("Cannot extend ID 'nope' in 'base:t'. It is not part of the high state."),
        "{e:?}"
    );
}

#[test]
fn unknown_requisite_target_is_an_error() {
    let e = errs(json!({"a": {"test.nop": [{"require": [{"pkg": "ghost"}]}], "__sls__": "s"}}));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("The following requisites were not found:"),
        "{e:?}"
    );
    assert!(e[0].contains("pkg: ghost"));
}

#[test]
fn requisites_reorder_and_bare_id_and_sls_targets_resolve() {
    let l = low(
        json!({
            "a": {"test.nop": [{"require": ["b"]}], "__sls__": "one"},
            "b": {"test.nop": [{"require": [{"sls": "two"}]}], "__sls__": "one"},
            "c": {"test.nop": [], "__sls__": "two"},
        }),
        &["a", "b", "c"],
    );
    let r = run_with(&l, RunOptions::default(), &[], &[], &mut Vec::new());
    assert_eq!(by_id(&r, "c").run_num, 0);
    assert_eq!(by_id(&r, "b").run_num, 1);
    assert_eq!(by_id(&r, "a").run_num, 2);
}

#[test]
fn require_failure_propagates_with_salts_comment() {
    let l = low(
        json!({
            "a": {"test.nop": [], "__sls__": "s"},
            "b": {"test.nop": [{"require": [{"test": "a"}]}], "__sls__": "s"},
            "c": {"test.nop": [{"require": ["b"]}], "__sls__": "s"},
        }),
        &["a", "b", "c"],
    );
    let mut log = Vec::new();
    let r = run_with(&l, RunOptions::default(), &["a"], &[], &mut log);
    assert_eq!(log.len(), 1, "only a runs");
    let b = by_id(&r, "b");
    assert_eq!(b.result, Some(false));
    assert_eq!(b.comment, "One or more requisite failed: s.a");
    assert_eq!(b.changes, json!({}));
    assert_eq!(by_id(&r, "c").comment, "One or more requisite failed: s.b");
}

#[test]
fn require_in_is_turned_onto_its_target() {
    let l = low(
        json!({
            "late": {"test.nop": [], "__sls__": "s"},
            "early": {"test.nop": [{"require_in": [{"test": "late"}]}], "__sls__": "s"},
        }),
        &["late", "early"],
    );
    assert_eq!(
        l.chunks()[0].get("require"),
        Some(&json!([{"test": "early"}]))
    );
    let r = run_with(&l, RunOptions::default(), &[], &[], &mut Vec::new());
    assert_eq!(by_id(&r, "early").run_num, 0);
    assert_eq!(by_id(&r, "late").run_num, 1);
}

#[test]
fn onchanges_runs_only_after_changes() {
    let l = low(
        json!({
            "src": {"test.nop": [], "__sls__": "s"},
            "quiet": {"test.nop": [], "__sls__": "s"},
            "on_src": {"cmd.run": [{"onchanges": ["src"]}], "__sls__": "s"},
            "on_quiet": {"cmd.run": [{"onchanges": ["quiet"]}], "__sls__": "s"},
        }),
        &["src", "quiet", "on_src", "on_quiet"],
    );
    let mut log = Vec::new();
    let r = run_with(&l, RunOptions::default(), &[], &["src"], &mut log);
    assert!(log.iter().any(|(id, _)| id == "on_src"));
    assert!(!log.iter().any(|(id, _)| id == "on_quiet"));
    let q = by_id(&r, "on_quiet");
    assert_eq!(q.result, Some(true));
    assert_eq!(
        q.comment,
        "State was not run because none of the onchanges reqs changed"
    );
}

#[test]
fn onchanges_in_form() {
    let l = low(
        json!({
            "src": {"test.nop": [{"onchanges_in": [{"cmd": "hook"}]}], "__sls__": "s"},
            "hook": {"cmd.run": [], "__sls__": "s"},
        }),
        &["src", "hook"],
    );
    let r = run_with(&l, RunOptions::default(), &[], &[], &mut Vec::new());
    assert_eq!(
        by_id(&r, "hook").comment,
        "State was not run because none of the onchanges reqs changed"
    );
}

#[test]
fn onfail_runs_only_after_a_failure() {
    let l = low(
        json!({
            "bad": {"test.nop": [], "__sls__": "s"},
            "good": {"test.nop": [], "__sls__": "s"},
            "rescue": {"cmd.run": [{"onfail": ["bad"]}], "__sls__": "s"},
            "idle": {"cmd.run": [{"onfail": ["good"]}], "__sls__": "s"},
        }),
        &["bad", "good", "rescue", "idle"],
    );
    let mut log = Vec::new();
    let r = run_with(&l, RunOptions::default(), &["bad"], &[], &mut log);
    assert!(log.iter().any(|(id, _)| id == "rescue"));
    assert_eq!(
        by_id(&r, "idle").comment,
        "State was not run because onfail req did not change"
    );
    assert_eq!(by_id(&r, "idle").result, Some(true));
}

#[test]
fn watch_with_changes_asks_for_mod_watch() {
    let l = low(
        json!({
            "conf": {"file.managed": [], "__sls__": "s"},
            "same": {"file.managed": [], "__sls__": "s"},
            "svc": {"service.running": [{"watch": [{"file": "conf"}]}], "__sls__": "s"},
            "svc2": {"service.running": [{"watch": [{"file": "same"}]}], "__sls__": "s"},
            "svc3": {"service.running": [], "__sls__": "s"},
            "bad": {"file.managed": [{"watch_in": [{"service": "svc3"}]}], "__sls__": "s"},
        }),
        &["conf", "same", "svc", "svc2", "svc3", "bad"],
    );
    let mut log = Vec::new();
    let r = run_with(&l, RunOptions::default(), &["bad"], &["conf"], &mut log);
    let ctx = |id: &str| log.iter().find(|(i, _)| i == id).map(|(_, c)| *c);
    assert_eq!(ctx("svc").map(|c| c.mod_watch), Some(true));
    assert_eq!(ctx("svc2").map(|c| c.mod_watch), Some(false));
    assert_eq!(ctx("svc3"), None, "a failed watch blocks like require");
    assert_eq!(
        by_id(&r, "svc3").comment,
        "One or more requisite failed: s.bad"
    );
}

#[test]
fn prereq_runs_target_in_test_mode_first() {
    let l = low(
        json!({
            "stop": {"service.dead": [{"prereq": [{"file": "site"}]}], "__sls__": "s"},
            "site": {"file.managed": [], "__sls__": "s"},
            "stop2": {"service.dead": [{"prereq": [{"file": "site2"}]}], "__sls__": "s"},
            "site2": {"file.managed": [], "__sls__": "s"},
        }),
        &["site", "stop", "site2", "stop2"],
    );
    let mut log = Vec::new();
    let r = run_with(&l, RunOptions::default(), &[], &["site"], &mut log);
    let ids: Vec<(&str, bool)> = log
        .iter()
        .map(|(i, c)| (i.as_str(), c.prerequired))
        .collect();
    assert_eq!(
        ids,
        [
            ("site", true),
            ("stop", false),
            ("site", false),
            ("site2", true),
            ("site2", false)
        ]
    );
    assert!(log[0].1.test);
    assert_eq!(by_id(&r, "stop2").comment, "No changes detected");
    assert!(by_id(&r, "stop").run_num < by_id(&r, "site").run_num);
}

#[test]
fn use_copies_arguments() {
    let l = low(
        json!({
            "a": {"file.managed": [{"user": "root"}, {"mode": "0600"}], "__sls__": "s"},
            "b": {"file.managed": [{"use": [{"file": "a"}]}, {"mode": "0644"}], "__sls__": "s"},
        }),
        &["a", "b"],
    );
    let b = &l.chunks()[1];
    assert_eq!(b.get("user"), Some(&json!("root")));
    assert_eq!(b.get("mode"), Some(&json!("0644")));
    assert_eq!(b.name(), "b");
}

#[test]
fn requisite_cycle_is_an_error_naming_states() {
    let e = errs(json!({
        "a": {"test.nop": [{"require": ["b"]}], "__sls__": "s"},
        "b": {"test.nop": [{"require": ["a"]}], "__sls__": "s"},
    }));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("Recursive requisite found: "), "{e:?}");
    assert!(e[0].contains("s.a") && e[0].contains("s.b"), "{e:?}");
}

#[test]
fn failhard_stops_after_first_failure() {
    let h = json!({
        "a": {"test.nop": [], "__sls__": "s"},
        "b": {"test.nop": [], "__sls__": "s"},
        "c": {"test.nop": [], "__sls__": "s"},
    });
    let l = low(h.clone(), &["a", "b", "c"]);
    let r = run_with(
        &l,
        RunOptions {
            test: false,
            failhard: true,
        },
        &["b"],
        &[],
        &mut Vec::new(),
    );
    assert_eq!(r.len(), 2);
    let r = run_with(&l, RunOptions::default(), &["b"], &[], &mut Vec::new());
    assert_eq!(r.len(), 3);
    let l = low(
        json!({
            "a": {"test.nop": [{"failhard": true}], "__sls__": "s"},
            "b": {"test.nop": [], "__sls__": "s"},
        }),
        &["a", "b"],
    );
    let r = run_with(&l, RunOptions::default(), &["a"], &[], &mut Vec::new());
    assert_eq!(r.len(), 1);
}

#[test]
fn test_mode_passes_through() {
    let l = low(json!({"a": {"test.nop": [], "__sls__": "s"}}), &["a"]);
    let mut log = Vec::new();
    run_with(
        &l,
        RunOptions {
            test: true,
            failhard: false,
        },
        &[],
        &[],
        &mut log,
    );
    assert!(log[0].1.test);
}

#[test]
fn key_format_and_json_fields_match_salt() {
    let l = low(
        json!({"demo_dir": {"file.directory": [{"name": "/run/demo"}], "__sls__": "demo"}}),
        &["demo_dir"],
    );
    assert_eq!(
        result_key(&l.chunks()[0]),
        "file_|-demo_dir_|-/run/demo_|-directory"
    );
    let r = run_with(
        &l,
        RunOptions::default(),
        &[],
        &["demo_dir"],
        &mut Vec::new(),
    );
    let (key, res) = match r.iter().next() {
        Some(kv) => kv,
        None => panic!("no result"),
    };
    assert_eq!(key, "file_|-demo_dir_|-/run/demo_|-directory");
    let v = serde_json::to_value(res).unwrap_or(Value::Null);
    let mut fields: Vec<&String> = v
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    fields.sort();
    // The field set of one entry in the research file's --out json run.
    let research: Value = serde_json::from_str(
        r#"{"name": "/run/demo/data/m0000", "changes": {}, "result": true, "comment": "",
            "__sls__": "demo", "__run_num__": 0, "start_time": "15:18:05.374739",
            "duration": 11.208, "__id__": "demo_dir"}"#,
    )
    .unwrap_or(Value::Null);
    let mut want: Vec<&String> = research
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    want.sort();
    assert_eq!(fields, want);
    assert!(v["duration"].is_f64());
    let st = res.start_time.as_bytes();
    assert_eq!(st.len(), 15);
    assert_eq!((st[2], st[5], st[8]), (b':', b':', b'.'));
    assert_eq!(v["__run_num__"], json!(0));
}

#[test]
fn failed_onchanges_target_fails_the_watcher() {
    let l = low(
        json!({
            "src": {"test.nop": [], "__sls__": "s"},
            "hook": {"cmd.run": [{"onchanges": ["src"]}], "__sls__": "s"},
        }),
        &["src", "hook"],
    );
    let r = run_with(&l, RunOptions::default(), &["src"], &[], &mut Vec::new());
    let h = by_id(&r, "hook");
    assert_eq!(h.result, Some(false));
    assert_eq!(h.comment, "One or more requisite failed: s.src");
}

#[test]
fn states_of_one_id_follow_file_order() {
    let h = high(json!({
        "nginx": {"pkg.installed": [], "service.running": [], "file": ["managed"], "__sls__": "web"},
        "extend": {"/etc/a.conf": {"file": [{"mode": "0600"}]}},
        "/etc/a.conf": {"file.managed": [], "__sls__": "web"},
    }));
    let order = vec![
        (
            "nginx".to_string(),
            vec![
                "service.running".to_string(),
                "file".to_string(),
                "pkg.installed".to_string(),
            ],
        ),
        ("/etc/a.conf".to_string(), vec![]),
    ];
    let l = match compile(&h, &order) {
        Ok(l) => l,
        Err(e) => panic!("{e:?}"),
    };
    let states: Vec<&str> = l.chunks().iter().map(LowChunk::state).collect();
    assert_eq!(states, ["service", "file", "pkg", "file"]);
    assert_eq!(
        l.chunks()[3].get("mode"),
        Some(&json!("0600")),
        "an id with dots extends"
    );
}

#[test]
fn failed_prereq_watcher_fails_its_target() {
    let l = low(
        json!({
            "stop": {"service.dead": [{"prereq": [{"file": "site"}]}], "__sls__": "s"},
            "site": {"file.managed": [], "__sls__": "s"},
        }),
        &["site", "stop"],
    );
    let mut log = Vec::new();
    let r = run_with(&l, RunOptions::default(), &["stop"], &["site"], &mut log);
    let site = by_id(&r, "site");
    assert_eq!(site.result, Some(false));
    assert_eq!(site.comment, "One or more requisite failed: s.stop");
    assert_eq!(log.len(), 2, "site ran only its test run");
}

#[test]
fn any_forms_need_only_one_target() {
    let l = low(
        json!({
            "bad": {"test.nop": [], "__sls__": "s"},
            "good": {"test.nop": [], "__sls__": "s"},
            "both_bad": {"test.nop": [], "__sls__": "s"},
            "req_any": {"cmd.run": [{"require_any": ["bad", "good"]}], "__sls__": "s"},
            "req_none": {"cmd.run": [{"require_any": ["bad", "both_bad"]}], "__sls__": "s"},
            "fail_any": {"cmd.run": [{"onfail_any": ["bad", "good"]}], "__sls__": "s"},
            "chg_any": {"cmd.run": [{"onchanges_any": ["bad", "good"]}], "__sls__": "s"},
        }),
        &[
            "bad", "good", "both_bad", "req_any", "req_none", "fail_any", "chg_any",
        ],
    );
    let mut log = Vec::new();
    let r = run_with(
        &l,
        RunOptions::default(),
        &["bad", "both_bad"],
        &["good"],
        &mut log,
    );
    let ran = |id: &str| log.iter().any(|(i, _)| i == id);
    assert!(ran("req_any") && ran("fail_any") && ran("chg_any"));
    assert!(!ran("req_none"));
    assert_eq!(by_id(&r, "req_none").result, Some(false));
}
