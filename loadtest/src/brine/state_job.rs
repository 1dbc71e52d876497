//! State jobs of the simulated minions: `state.apply`, `state.sls`,
//! `state.highstate` and `state.test` run a small built-in state tree
//! ([`TREE`], ten `test` states with Jinja, `require`, `watch` and
//! `onchanges`) through the real pipeline of a Brine minion: Jinja + YAML
//! rendering (`brine_common::render`), the state compiler and scheduler
//! (`brine_minion::state`) and the `test` state module's own behaviour
//! (`brine_minion::states::test::outcome`), so the load test measures
//! what rendering, compiling and running costs per minion and what a
//! highstate return weighs on the wire.
//!
//! Invariant: nothing here touches the system or blocks on I/O (every
//! state is a `test` state), so a job can run inline on a worker's event
//! loop; any error is an answer (Salt's list of errors, retcode 1), never
//! a panic.

use brine_minion::state::{compile, run, RunOptions, StateOutcome};
use brine_minion::states::test::outcome;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The built-in state tree (SLS `loadtest` of `base`).
pub const TREE: &str = include_str!("loadtest.sls");
/// The SLS name the tree's states report (`__sls__`).
pub const SLS: &str = "loadtest";
/// Retcode of a run with a failed state, and of a tree that did not
/// render or compile (the real minion's `state` module).
pub const RETCODE_FAILED: i32 = 2;
pub const RETCODE_COMPILE: i32 = 1;

/// Whether `fun` is one of the state functions a simulated minion runs.
pub fn is_state_fun(fun: &str) -> bool {
    matches!(
        fun,
        "state.apply" | "state.sls" | "state.highstate" | "state.test"
    )
}

/// Salt's test mode for a state job: `state.test`, or a truthy `test`
/// keyword argument (`test=True` on the command line).
pub fn test_mode(fun: &str, kwarg: &BTreeMap<String, Value>) -> bool {
    if fun == "state.test" {
        return true;
    }
    match kwarg.get("test") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => {
            matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "1" | "on")
        }
        _ => false,
    }
}

/// Renders [`TREE`] for minion `id` (Jinja context: `grains`, `pillar`
/// {}, `opts` {id, saltenv}, `saltenv` base), compiles and runs it, and
/// returns the job's `return` and retcode as the real minion does: the
/// state results keyed `<module>_|-<id>_|-<name>_|-<fun>` with retcode 0,
/// or 2 when a state failed; a render or compile error is a list of
/// errors with retcode 1.
pub fn answer(id: &str, grains: &Value, test: bool) -> (Value, i32) {
    match run_tree(id, grains, test) {
        Ok(r) => r,
        Err(errors) => (json!(errors), RETCODE_COMPILE),
    }
}

fn run_tree(id: &str, grains: &Value, test: bool) -> Result<(Value, i32), Vec<String>> {
    let ctx = json!({
        "grains": grains,
        "pillar": {},
        "opts": {"id": id, "saltenv": "base"},
        "saltenv": "base",
        "env": "base",
    });
    let one = |e: String| vec![e];
    let rendered = brine_common::render::render_sls_text(TREE, "loadtest.sls", &ctx, None)
        .map_err(|e| one(format!("Rendering SLS 'base:{SLS}' failed: {e}")))?;
    let Value::Object(mut high) = rendered
        .load()
        .map_err(|e| one(format!("Rendering SLS 'base:{SLS}' failed: {e}")))?
    else {
        return Err(one(format!("SLS '{SLS}' does not render to a dictionary")));
    };
    for body in high.values_mut() {
        if let Value::Object(b) = body {
            b.insert("__sls__".into(), SLS.into());
            b.insert("__env__".into(), "base".into());
        }
    }
    let low = compile(&high, &rendered.key_order())?;
    let results = run(
        &low,
        RunOptions {
            test,
            failhard: false,
        },
        &mut |chunk, rc| {
            let known = (chunk.state() == "test")
                .then(|| {
                    outcome(
                        chunk.fun(),
                        chunk.name(),
                        &chunk.args(),
                        rc.test,
                        rc.mod_watch,
                    )
                })
                .flatten();
            known.unwrap_or_else(|| {
                StateOutcome::fail(format!(
                    "'{}.{}' is not available on a simulated minion (only test states are)",
                    chunk.state(),
                    chunk.fun()
                ))
            })
        },
    );
    let failed = results.values().any(|r| r.result == Some(false));
    let ret = serde_json::to_value(&results).map_err(|e| one(e.to_string()))?;
    Ok((ret, if failed { RETCODE_FAILED } else { 0 }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn results(test: bool) -> (Map<String, Value>, i32) {
        let id = "lt-00042";
        let (ret, rc) = answer(id, &json!({"id": id}), test);
        let Value::Object(m) = ret else {
            panic!("not a state return: {ret}")
        };
        (m, rc)
    }

    #[test]
    fn builtin_tree_runs_like_a_highstate() {
        let (m, rc) = results(false);
        assert_eq!(rc, 0);
        assert_eq!(m.len(), 10, "{:?}", m.keys().collect::<Vec<_>>());
        for (k, r) in &m {
            assert_eq!(r["result"], json!(true), "{k}: {r}");
            assert_eq!(r["__sls__"], json!(SLS), "{k}");
            for field in [
                "name",
                "changes",
                "comment",
                "__run_num__",
                "start_time",
                "duration",
                "__id__",
            ] {
                assert!(r.get(field).is_some(), "{k} lacks {field}");
            }
        }
        // Keys in Salt's format, Jinja rendered with the minion's grains.
        let motd = &m["test_|-motd_lt-00042_|-motd_lt-00042_|-succeed_with_changes"];
        assert_eq!(motd["comment"], "motd written for lt-00042");
        assert_eq!(motd["__run_num__"], 0);
        let conf = &m["test_|-config_db_|-/etc/db/lt-00042.conf_|-succeed_with_changes"];
        assert_eq!(conf["changes"]["testing"]["old"], "Unchanged");
        // The watch fired, the onchanges ran, the notification is last.
        let svc = &m["test_|-service_web_|-service_web_|-nop"];
        assert_eq!(svc["comment"], "Watch statement fired.");
        assert_eq!(svc["changes"], json!({"watch": true}));
        let fw = &m["test_|-reload_firewall_|-reload_firewall_|-succeed_with_changes"];
        assert_eq!(fw["result"], json!(true));
        assert_ne!(fw["changes"], json!({}));
        let report = &m["test_|-report_|-report_|-show_notification"];
        assert_eq!(report["comment"], "lt-00042 is configured");
        assert_eq!(report["__run_num__"], 9);
        // Every run number once.
        let mut nums: Vec<u64> = m
            .values()
            .filter_map(|r| r["__run_num__"].as_u64())
            .collect();
        nums.sort_unstable();
        assert_eq!(nums, (0..10).collect::<Vec<u64>>());
    }

    #[test]
    fn test_mode_changes_nothing_and_says_what_would() {
        let (m, rc) = results(true);
        assert_eq!(rc, 0);
        assert_eq!(m.len(), 10);
        let none = m.values().filter(|r| r["result"].is_null()).count();
        assert!(none >= 5, "{m:?}");
        assert!(m.values().all(|r| r["result"] != json!(false)), "{m:?}");
        let motd = &m["test_|-motd_lt-00042_|-motd_lt-00042_|-succeed_with_changes"];
        assert!(motd["result"].is_null());
        assert_eq!(
            motd["comment"],
            "If we weren't testing, this would be successful with changes"
        );
        let svc = &m["test_|-service_db_|-service_db_|-nop"];
        assert!(svc["result"].is_null());
        assert_eq!(svc["comment"], "Watch statement would fire.");
    }

    #[test]
    fn state_functions_and_test_mode() {
        for f in ["state.apply", "state.sls", "state.highstate", "state.test"] {
            assert!(is_state_fun(f));
        }
        assert!(!is_state_fun("state.show_sls") && !is_state_fun("test.ping"));
        let kw = |v: Value| BTreeMap::from([("test".to_string(), v)]);
        assert!(test_mode("state.test", &BTreeMap::new()));
        assert!(!test_mode("state.apply", &BTreeMap::new()));
        assert!(test_mode("state.apply", &kw(json!(true))));
        assert!(test_mode("state.apply", &kw(json!("True"))));
        assert!(!test_mode("state.apply", &kw(json!("false"))));
    }
}
