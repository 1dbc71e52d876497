//! Salt's `module.run` (and `module.wait`): execution functions called from
//! a state, in both of Salt's styles.
//!
//! New style (Salt 3005+ default): each function is a key of the state's
//! arguments, its value the argument list (`- text: hi` items are keyword
//! arguments, bare items positional):
//! `module.run: [{test.echo: [{text: hi}]}]` → changes `{test.echo: hi}`,
//! comment `test.echo: Success`.
//! Legacy style: `name: test.echo` plus keyword arguments (and `m_name`
//! for a function argument called `name`) → changes `{ret: ...}`, comment
//! `Module function test.echo executed`.
//!
//! A call fails its state when the function failed (non-zero retcode, an
//! error) or returned `False` or a dict with `result: False`.

use super::{StateCall, StateFunction};
use crate::exec::Outcome;
use crate::state::StateOutcome;
use serde_json::{json, Map, Value};

pub const FUNCTIONS: &[StateFunction] = &[
    StateFunction {
        name: "module.run",
        run,
        mod_watch: None,
    },
    StateFunction {
        name: "module.wait",
        run: wait,
        mod_watch: Some(run),
    },
];

/// The argument keys that belong to the state system, not to a function.
const STATE_KEYS: &[&str] = &["name", "saltenv", "m_name", "m_fun"];

fn wait(_c: &StateCall<'_>) -> StateOutcome {
    StateOutcome::ok("")
}

/// Positional and keyword arguments of one new-style call.
fn split_args(v: &Value) -> (Vec<Value>, Map<String, Value>) {
    let mut pos = Vec::new();
    let mut kw = Map::new();
    let items = match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    };
    for item in items {
        match item {
            Value::Object(m) if m.len() == 1 => kw.extend(m),
            other => pos.push(other),
        }
    }
    (pos, kw)
}

fn failed(o: &Outcome) -> bool {
    !o.success
        || o.retcode != 0
        || o.ret == Value::Bool(false)
        || o.ret.get("result") == Some(&Value::Bool(false))
}

fn run(c: &StateCall<'_>) -> StateOutcome {
    let funs: Vec<(&String, &Value)> = c
        .args
        .iter()
        .filter(|(k, _)| k.contains('.') && !STATE_KEYS.contains(&k.as_str()))
        .collect();
    if funs.is_empty() {
        legacy(c)
    } else {
        new_style(c, &funs)
    }
}

fn new_style(c: &StateCall<'_>, funs: &[(&String, &Value)]) -> StateOutcome {
    let names: Vec<&str> = funs.iter().map(|(k, _)| k.as_str()).collect();
    if c.test() {
        return StateOutcome::would(
            format!(
                "Function{} {} to be executed.",
                if names.len() > 1 { "s" } else { "" },
                names.join(", ")
            ),
            json!({}),
        );
    }
    let mut changes = Map::new();
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for (fun, args) in funs {
        let (pos, kw) = split_args(args);
        let out = c.call_exec(fun, pos, kw);
        if failed(&out) {
            bad.push(format!("'{fun}' failed: {}", describe(&out.ret)));
        } else {
            let note = out
                .ret
                .get("comment")
                .and_then(Value::as_str)
                .unwrap_or("Success")
                .to_string();
            ok.push(format!("{fun}: {note}"));
            changes.insert(fun.to_string(), out.ret);
        }
    }
    if bad.is_empty() {
        StateOutcome::changed(ok.join(", "), Value::Object(changes))
    } else {
        StateOutcome::fail_with(bad.join(", "), Value::Object(changes))
    }
}

fn describe(ret: &Value) -> String {
    match ret {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .get("comment")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| ret.to_string()),
        other => other.to_string(),
    }
}

fn legacy(c: &StateCall<'_>) -> StateOutcome {
    let fun = c.name().to_string();
    if !fun.contains('.') {
        return StateOutcome::fail(format!(
            "Module function {fun} is not available (name a function as module.function)"
        ));
    }
    if c.test() {
        return StateOutcome::would(
            format!("Module function {fun} is set to be executed"),
            json!({}),
        );
    }
    let mut kw: Map<String, Value> = c
        .args
        .iter()
        .filter(|(k, _)| {
            !STATE_KEYS.contains(&k.as_str()) && k.as_str() != "args" && k.as_str() != "kwargs"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(n) = c.arg("m_name") {
        kw.insert("name".into(), n.clone());
    }
    if let Some(Value::Object(m)) = c.arg("kwargs") {
        kw.extend(m.clone());
    }
    let pos = c.list_arg("args");
    let out = c.call_exec(&fun, pos, kw);
    if failed(&out) {
        return StateOutcome::fail_with(
            format!("Module function {fun} executed: {}", describe(&out.ret)),
            json!({"ret": out.ret}),
        );
    }
    StateOutcome::changed(
        format!("Module function {fun} executed"),
        json!({"ret": out.ret}),
    )
}

#[cfg(test)]
mod tests {
    use crate::states::testutil::{apply, only};
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_and_legacy_styles() {
        let r = apply(
            "echo:\n  module.run:\n    - test.echo:\n      - text: hello\n",
            false,
        )
        .await;
        let r = only(&r);
        assert_eq!(r.result, Some(true));
        assert_eq!(r.changes, json!({"test.echo": "hello"}));
        assert_eq!(r.comment, "test.echo: Success");

        let t = apply("echo:\n  module.run:\n    - test.echo:\n      - hi\n", true).await;
        assert_eq!(only(&t).comment, "Function test.echo to be executed.");
        assert_eq!(only(&t).result, None);

        let l = apply("test.echo:\n  module.run:\n    - text: old\n", false).await;
        assert_eq!(only(&l).changes, json!({"ret": "old"}));
        assert_eq!(only(&l).comment, "Module function test.echo executed");

        let f = apply("x:\n  module.run:\n    - cmd.run:\n      - exit 4\n", false).await;
        assert_eq!(only(&f).result, Some(false));
        let n = apply("x:\n  module.run:\n    - no.such: []\n", false).await;
        assert_eq!(only(&n).result, Some(false));
        assert!(
            only(&n).comment.contains("'no.such' is not available"),
            "{}",
            only(&n).comment
        );
    }
}
