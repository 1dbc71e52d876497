//! Salt's `cmd` state module: `cmd.run`, `cmd.wait`, `cmd.script` and
//! their `mod_watch`, with `unless`, `onlyif` and `creates` checks.
//!
//! The commands run through the `cmd` execution module (`cmd.run_all`,
//! `cmd.retcode`, `cmd.script`), so `cwd`, `runas`, `env`, `shell`,
//! `timeout`, `stdin` and `umask`-free options behave exactly as they do
//! for `salt '*' cmd.run`. A command is never run in test mode; the checks
//! (`unless`/`onlyif`) are, as in Salt, since they change nothing.

use super::{StateCall, StateFunction};
use crate::state::StateOutcome;
use serde_json::{json, Map, Value};

pub const FUNCTIONS: &[StateFunction] = &[
    StateFunction {
        name: "cmd.run",
        run,
        mod_watch: None,
    },
    StateFunction {
        name: "cmd.wait",
        run: wait,
        mod_watch: Some(run),
    },
    StateFunction {
        name: "cmd.script",
        run: script,
        mod_watch: None,
    },
    StateFunction {
        name: "cmd.wait_script",
        run: wait,
        mod_watch: Some(script),
    },
];

/// The options handed on to the execution module as they are.
const PASSED: &[&str] = &[
    "cwd",
    "runas",
    "env",
    "shell",
    "timeout",
    "stdin",
    "clean_env",
    "rstrip",
];

fn options(c: &StateCall<'_>) -> Map<String, Value> {
    PASSED
        .iter()
        .filter_map(|k| c.arg(k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

/// A check's commands: a string or a list of strings (Salt also takes
/// dicts of module calls there; those are refused with a message).
fn commands(c: &StateCall<'_>, key: &str) -> Result<Vec<String>, String> {
    c.list_arg(key)
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            other => Err(format!(
                "{key} entries must be shell commands; '{other}' is not supported"
            )),
        })
        .collect()
}

fn retcode(c: &StateCall<'_>, cmd: &str) -> Result<i64, String> {
    let mut kw = options(c);
    kw.insert("ignore_retcode".into(), Value::Bool(true));
    let out = c.call_exec("cmd.retcode", vec![json!(cmd)], kw);
    out.ret
        .as_i64()
        .ok_or_else(|| format!("check '{cmd}' did not run: {}", out.ret))
}

/// A check said not to run: success, and no `mod_watch` either.
fn skip(comment: &str) -> StateOutcome {
    StateOutcome {
        skip_watch: true,
        ..StateOutcome::ok(comment)
    }
}

/// Salt's `_run_check`: `Some(outcome)` when the command must not run.
fn check(c: &StateCall<'_>) -> Option<StateOutcome> {
    let onlyif = match commands(c, "onlyif") {
        Ok(v) => v,
        Err(e) => return Some(StateOutcome::fail(e)),
    };
    for cmd in &onlyif {
        match retcode(c, cmd) {
            Ok(0) => {}
            Ok(_) => return Some(skip("onlyif condition is false")),
            Err(e) => return Some(StateOutcome::fail(e)),
        }
    }
    let unless = match commands(c, "unless") {
        Ok(v) => v,
        Err(e) => return Some(StateOutcome::fail(e)),
    };
    if !unless.is_empty() {
        let mut all_true = true;
        for cmd in &unless {
            match retcode(c, cmd) {
                Ok(0) => {}
                Ok(_) => {
                    all_true = false;
                    break;
                }
                Err(e) => return Some(StateOutcome::fail(e)),
            }
        }
        if all_true {
            return Some(skip("unless condition is true"));
        }
    }
    let creates: Vec<String> = c
        .list_arg("creates")
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if !creates.is_empty() && creates.iter().all(|p| std::path::Path::new(p).exists()) {
        let shown = if creates.len() == 1 {
            creates[0].clone()
        } else {
            format!("{creates:?}")
        };
        return Some(skip(&format!("{shown} exists")));
    }
    None
}

/// The result of a finished command as Salt's state shows it.
fn finished(c: &StateCall<'_>, what: &str, ret: Value, retcode: i32) -> StateOutcome {
    let ok_codes: Vec<i64> = c
        .list_arg("success_retcodes")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    let code = ret
        .get("retcode")
        .and_then(Value::as_i64)
        .unwrap_or(i64::from(retcode));
    let good = code == 0 || ok_codes.contains(&code);
    let comment = format!("Command \"{what}\" run");
    let changes = match ret {
        Value::Object(_) => ret,
        Value::String(msg) => return StateOutcome::fail(msg),
        other => json!({"retcode": code, "stdout": other}),
    };
    if good {
        StateOutcome::changed(comment, changes)
    } else {
        StateOutcome::fail_with(comment, changes)
    }
}

fn run(c: &StateCall<'_>) -> StateOutcome {
    if let Some(skip) = check(c) {
        return skip;
    }
    let name = c.name().to_string();
    if c.test() {
        return StateOutcome::would(
            format!("Command \"{name}\" would have been executed"),
            json!({"cmd": name}),
        );
    }
    let out = c.call_exec("cmd.run_all", vec![json!(name)], options(c));
    finished(c, &name, out.ret, out.retcode)
}

/// `cmd.wait`/`cmd.wait_script`: nothing unless a watch fires (then
/// `mod_watch` runs the command).
fn wait(_c: &StateCall<'_>) -> StateOutcome {
    StateOutcome::ok("")
}

fn script(c: &StateCall<'_>) -> StateOutcome {
    if let Some(skip) = check(c) {
        return skip;
    }
    let name = c.name().to_string();
    let source = c.str_arg("source").unwrap_or_else(|| name.clone());
    if c.test() {
        return StateOutcome::would(
            format!("Command \"{name}\" would have been executed"),
            json!({"cmd": name}),
        );
    }
    let mut kw = options(c);
    for k in ["args", "template", "saltenv"] {
        if let Some(v) = c.arg(k) {
            kw.insert(k.to_string(), v.clone());
        }
    }
    if !kw.contains_key("saltenv") {
        kw.insert("saltenv".into(), json!(c.saltenv()));
    }
    let out = c.call_exec("cmd.script", vec![json!(source)], kw);
    finished(c, &name, out.ret, out.retcode)
}

#[cfg(test)]
mod tests {
    use crate::states::testutil::{apply, only};
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_unless_onlyif_creates_and_test_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("marker");
        let m = marker.display();
        let sls =
            format!("make:\n  cmd.run:\n    - name: echo hi && touch {m}\n    - creates: {m}\n");
        let t = apply(&sls, true).await;
        let r = only(&t);
        assert_eq!(r.result, None);
        assert!(
            r.comment.ends_with("would have been executed"),
            "{}",
            r.comment
        );
        assert!(!marker.exists(), "test mode ran nothing");

        let first = apply(&sls, false).await;
        let r = only(&first);
        assert_eq!(r.result, Some(true));
        assert_eq!(r.changes["retcode"], 0);
        assert_eq!(r.changes["stdout"], "hi");
        assert_eq!(r.comment, format!("Command \"echo hi && touch {m}\" run"));
        let second = apply(&sls, false).await;
        assert_eq!(only(&second).comment, format!("{m} exists"));
        assert_eq!(only(&second).changes, json!({}));

        let u = apply(
            "x:\n  cmd.run:\n    - name: 'false'\n    - unless: 'true'\n",
            false,
        )
        .await;
        assert_eq!(only(&u).comment, "unless condition is true");
        let o = apply(
            "x:\n  cmd.run:\n    - name: 'false'\n    - onlyif: 'false'\n",
            false,
        )
        .await;
        assert_eq!(only(&o).comment, "onlyif condition is false");
        let f = apply("x:\n  cmd.run:\n    - name: echo no; exit 3\n", false).await;
        let r = only(&f);
        assert_eq!(
            (r.result, r.changes["retcode"].clone()),
            (Some(false), json!(3))
        );
        let ok = apply(
            "x:\n  cmd.run:\n    - name: exit 3\n    - success_retcodes: [3]\n",
            false,
        )
        .await;
        assert_eq!(only(&ok).result, Some(true));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_runs_only_when_a_watch_fires() {
        let r = apply(
            "a:\n  test.nop: []\nw:\n  cmd.wait:\n    - name: echo ran\n    - watch:\n      - test: a\n",
            false,
        )
        .await;
        let w = &r["cmd_|-w_|-echo ran_|-wait"];
        assert_eq!((w.result, w.comment.as_str()), (Some(true), ""));
        assert_eq!(w.changes, json!({}));
        let r = apply(
            "a:\n  test.succeed_with_changes: []\nw:\n  cmd.wait:\n    - name: echo ran\n    - watch:\n      - test: a\n",
            false,
        )
        .await;
        let w = &r["cmd_|-w_|-echo ran_|-wait"];
        assert_eq!(w.changes["stdout"], "ran");
        assert_eq!(w.comment, "Command \"echo ran\" run");
    }
}
