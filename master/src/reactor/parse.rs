//! Reactions read from a rendered reactor SLS file, in Salt's formats:
//! each id maps `local.<fun>` (`cmd.<fun>`, Salt's older name),
//! `runner.<fun>` or `wheel.<fun>` to a list of one-key mappings. The
//! current form passes the function's arguments as `args` (a list of
//! one-key mappings, the keyword arguments); the legacy form passes `arg`
//! (positional) and `kwarg` (a mapping) to `local`, and the remaining keys
//! themselves as keyword arguments to `runner` and `wheel`. `local` needs
//! `tgt` and takes `tgt_type` (or Salt's older `expr_form`, glob by
//! default) and `timeout`.
//!
//! Invariant: pure; nothing here runs anything. A malformed action is an
//! [`ActionError`] naming the id and, when it can be found in the rendered
//! text, its line; the caller runs none of a file's actions when one of
//! them is malformed (Salt runs nothing when its high data has errors).

use brine_common::proto::TargetType;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Keyword arguments of a call.
pub(crate) type Kw = BTreeMap<String, Value>;

/// One reaction to run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Publish a job, as `salt` does.
    Local {
        id: String,
        fun: String,
        tgt: String,
        tgt_type: TargetType,
        arg: Vec<Value>,
        kwarg: Kw,
        timeout: Option<u64>,
    },
    /// Call a runner function on this master.
    Runner {
        id: String,
        fun: String,
        args: Vec<Value>,
        kwargs: Kw,
    },
    /// A wheel function: `key.accept`, `key.reject`, `key.delete`.
    Wheel { id: String, fun: String, kwargs: Kw },
}

impl Action {
    /// The SLS id the action was declared under.
    pub(crate) fn id(&self) -> &str {
        match self {
            Action::Local { id, .. } | Action::Runner { id, .. } | Action::Wheel { id, .. } => id,
        }
    }

    /// `local.cmd.run`, `runner.manage.up`...: how the file named it.
    pub(crate) fn name(&self) -> String {
        match self {
            Action::Local { fun, .. } => format!("local.{fun}"),
            Action::Runner { fun, .. } => format!("runner.{fun}"),
            Action::Wheel { fun, .. } => format!("wheel.{fun}"),
        }
    }
}

/// Why an action could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActionError {
    pub(crate) id: String,
    /// 1-based line of the id in the rendered text, when found.
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

/// The wheel functions this master has.
pub(crate) const WHEEL_FUNCTIONS: [&str; 3] = ["key.accept", "key.reject", "key.delete"];

/// Keys of the low data that are Salt's own, never a function argument.
const RESERVED: [&str; 6] = ["name", "state", "fun", "order", "__id__", "__sls__"];

/// The actions of a rendered file `data` (a mapping of id to states), in
/// `order` (the ids as the file wrote them; ids it misses follow
/// sorted). `text` is the rendered text, for line numbers. Every
/// malformed action is reported; the actions are only meaningful when
/// there are no errors.
pub(crate) fn actions(
    data: &Value,
    order: &[String],
    text: &str,
) -> Result<Vec<Action>, Vec<ActionError>> {
    let Value::Object(top) = data else {
        return Err(vec![ActionError {
            id: String::new(),
            line: Some(1),
            message: "a reactor SLS file must be a mapping of ids to reactions".into(),
        }]);
    };
    let mut ids: Vec<&String> = order.iter().filter(|k| top.contains_key(*k)).collect();
    let mut rest: Vec<&String> = top.keys().filter(|k| !order.contains(k)).collect();
    rest.sort();
    ids.extend(rest);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for id in ids {
        let fail = |message: String| ActionError {
            id: id.clone(),
            line: line_of(text, id),
            message,
        };
        let Value::Object(states) = &top[id.as_str()] else {
            errors.push(fail(format!(
                "id '{id}' is not a mapping of a function (local.<fun>, runner.<fun>, wheel.<fun>) to its arguments"
            )));
            continue;
        };
        for (key, body) in states {
            if key.starts_with("__") {
                continue;
            }
            match action(id, key, body) {
                Ok(a) => out.push(a),
                Err(m) => errors.push(fail(m)),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The 1-based line where `id` starts a top-level key in `text`.
fn line_of(text: &str, id: &str) -> Option<usize> {
    let forms = [format!("{id}:"), format!("'{id}':"), format!("\"{id}\":")];
    text.lines()
        .position(|l| forms.iter().any(|f| l.starts_with(f.as_str())))
        .map(|i| i + 1)
}

/// One `kind.fun: [args]` of id `id`.
fn action(id: &str, key: &str, body: &Value) -> Result<Action, String> {
    let (kind, fun) = key.split_once('.').unwrap_or((key, ""));
    let valid_fun = fun
        .split_once('.')
        .is_some_and(|(m, f)| !m.is_empty() && !f.is_empty());
    if !valid_fun {
        return Err(format!(
            "'{key}' is not local.<module>.<function>, runner.<module>.<function> or wheel.<module>.<function>"
        ));
    }
    let low = low_data(body).map_err(|m| format!("{key}: {m}"))?;
    let id = id.to_string();
    let fun = fun.to_string();
    match kind {
        "local" | "cmd" => local(id, fun, low).map_err(|m| format!("{key}: {m}")),
        "runner" => {
            let (args, kwargs) = call_args(low).map_err(|m| format!("{key}: {m}"))?;
            Ok(Action::Runner {
                id,
                fun,
                args,
                kwargs,
            })
        }
        "wheel" => {
            if !WHEEL_FUNCTIONS.contains(&fun.as_str()) {
                return Err(format!(
                    "{key}: wheel function '{fun}' is not available (these are: {})",
                    WHEEL_FUNCTIONS.join(", ")
                ));
            }
            let (args, kwargs) = call_args(low).map_err(|m| format!("{key}: {m}"))?;
            if !args.is_empty() {
                return Err(format!("{key}: takes keyword arguments only (match, ...)"));
            }
            Ok(Action::Wheel { id, fun, kwargs })
        }
        "caller" => Err(format!(
            "{key}: caller reactions run on a masterless minion, not on the master"
        )),
        other => Err(format!(
            "'{key}': unknown reaction type '{other}' (local, runner or wheel)"
        )),
    }
}

/// The arguments of a state: Salt's list of one-key mappings merged
/// (`null` or an empty list: none; a mapping is taken as it is).
fn low_data(body: &Value) -> Result<Map<String, Value>, String> {
    match body {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m.clone()),
        Value::Array(items) => repack(items).ok_or_else(|| {
            "arguments must be a list of one-key mappings (- tgt: ..., - args: ...)".to_string()
        }),
        _ => Err("arguments must be a list of one-key mappings".into()),
    }
}

/// Salt's `repack_dictlist`: a list of mappings merged into one; `None`
/// when an item is not a mapping.
fn repack(items: &[Value]) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    for item in items {
        out.extend(item.as_object()?.clone());
    }
    Some(out)
}

/// `args` (current form: keyword arguments as a list of one-key mappings
/// or a mapping) or the legacy `arg` and `kwarg`.
fn new_or_legacy(low: &mut Map<String, Value>) -> Result<Option<Kw>, String> {
    let Some(args) = low.remove("args") else {
        return Ok(None);
    };
    let kw = match &args {
        Value::Object(m) => Some(m.clone()),
        Value::Array(items) if !items.is_empty() => repack(items),
        Value::Array(_) | Value::Null => Some(Map::new()),
        _ => None,
    }
    .ok_or_else(|| {
        "'args' must be a list of one-key mappings (- cmd: ..., - match: ...): \
         positional arguments go in 'arg'"
            .to_string()
    })?;
    Ok(Some(kw.into_iter().collect()))
}

/// Legacy `arg`: a list, or one value.
fn legacy_arg(v: Option<Value>) -> Vec<Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(other) => vec![other],
    }
}

/// Legacy `kwarg`: a mapping.
fn legacy_kwarg(v: Option<Value>) -> Result<Kw, String> {
    match v {
        None | Some(Value::Null) => Ok(Kw::new()),
        Some(Value::Object(m)) => Ok(m.into_iter().collect()),
        Some(_) => Err("'kwarg' must be a mapping".into()),
    }
}

fn local(id: String, fun: String, mut low: Map<String, Value>) -> Result<Action, String> {
    let tgt_type = match low.remove("tgt_type").or_else(|| low.remove("expr_form")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            serde_json::from_value::<TargetType>(Value::String(s.trim().to_ascii_lowercase()))
                .map_err(|_| format!("unknown tgt_type '{s}'"))?,
        ),
        Some(other) => return Err(format!("tgt_type must be a string, not {other}")),
    };
    low.remove("expr_form");
    let (tgt, tgt_type) = match low.remove("tgt") {
        Some(Value::String(s)) if !s.trim().is_empty() => (s, tgt_type.unwrap_or_default()),
        Some(Value::Array(ids)) => {
            let ids: Option<Vec<&str>> = ids.iter().map(Value::as_str).collect();
            let ids = ids
                .filter(|v| !v.is_empty())
                .ok_or("tgt list must hold minion ids")?;
            (ids.join(","), tgt_type.unwrap_or(TargetType::List))
        }
        Some(Value::Number(n)) => (n.to_string(), tgt_type.unwrap_or_default()),
        None | Some(Value::Null) => return Err("needs a tgt".into()),
        Some(other) => return Err(format!("tgt must be a string or a list, not {other}")),
    };
    let timeout = match low.remove("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or("timeout must be a whole number of seconds")?,
        ),
    };
    let (arg, kwarg) = match new_or_legacy(&mut low)? {
        Some(kw) => (Vec::new(), kw),
        None => (
            legacy_arg(low.remove("arg")),
            legacy_kwarg(low.remove("kwarg"))?,
        ),
    };
    Ok(Action::Local {
        id,
        fun,
        tgt,
        tgt_type,
        arg,
        kwarg,
        timeout,
    })
}

/// Runner and wheel arguments: `args` (keyword), else the legacy `arg`,
/// `kwarg` and every other key as a keyword argument.
fn call_args(mut low: Map<String, Value>) -> Result<(Vec<Value>, Kw), String> {
    if let Some(kw) = new_or_legacy(&mut low)? {
        return Ok((Vec::new(), kw));
    }
    let args = legacy_arg(low.remove("arg"));
    let mut kwargs = legacy_kwarg(low.remove("kwarg"))?;
    for (k, v) in low {
        if !RESERVED.contains(&k.as_str()) {
            kwargs.insert(k, v);
        }
    }
    Ok((args, kwargs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> Result<Vec<Action>, Vec<ActionError>> {
        actions(&v, &[], "")
    }

    #[test]
    fn salts_current_forms() {
        let v = json!({
            "restart_on_load": {"local.cmd.run": [
                {"tgt": "web1"}, {"tgt_type": "glob"},
                {"args": [{"cmd": "echo high load"}]}
            ]},
            "accept_new": {"wheel.key.accept": [{"args": [{"match": "web1"}]}]},
            "run_something": {"runner.manage.up": []},
        });
        let got = actions(&v, &["restart_on_load".into(), "accept_new".into()], "").expect("ok");
        assert_eq!(
            got,
            [
                Action::Local {
                    id: "restart_on_load".into(),
                    fun: "cmd.run".into(),
                    tgt: "web1".into(),
                    tgt_type: TargetType::Glob,
                    arg: vec![],
                    kwarg: Kw::from([("cmd".into(), json!("echo high load"))]),
                    timeout: None,
                },
                Action::Wheel {
                    id: "accept_new".into(),
                    fun: "key.accept".into(),
                    kwargs: Kw::from([("match".into(), json!("web1"))]),
                },
                Action::Runner {
                    id: "run_something".into(),
                    fun: "manage.up".into(),
                    args: vec![],
                    kwargs: Kw::new(),
                },
            ]
        );
        assert_eq!(got[0].name(), "local.cmd.run");
        assert_eq!(got[1].id(), "accept_new");
    }

    #[test]
    fn legacy_arg_kwarg_expr_form_and_keys_as_kwargs() {
        let got = read(json!({
            "a": {"cmd.state.sls": [
                {"tgt": "G@role:web"}, {"expr_form": "compound"},
                {"arg": ["web", "test=True"]}, {"kwarg": {"pillar": {"x": 1}}},
                {"timeout": 30}
            ]},
        }))
        .expect("ok");
        assert_eq!(
            got[0],
            Action::Local {
                id: "a".into(),
                fun: "state.sls".into(),
                tgt: "G@role:web".into(),
                tgt_type: TargetType::Compound,
                arg: vec![json!("web"), json!("test=True")],
                kwarg: Kw::from([("pillar".into(), json!({"x": 1}))]),
                timeout: Some(30),
            }
        );
        let got = read(json!({"k": {"wheel.key.reject": [{"match": "bad*"}]}})).expect("ok");
        assert_eq!(
            got[0],
            Action::Wheel {
                id: "k".into(),
                fun: "key.reject".into(),
                kwargs: Kw::from([("match".into(), json!("bad*"))]),
            }
        );
        let got = read(json!({"j": {"runner.jobs.lookup_jid": [{"jid": "1"}, {"name": "x"}]}}))
            .expect("ok");
        assert_eq!(
            got[0],
            Action::Runner {
                id: "j".into(),
                fun: "jobs.lookup_jid".into(),
                args: vec![],
                kwargs: Kw::from([("jid".into(), json!("1"))]),
            }
        );
        let got = read(json!({"l": {"local.test.ping": {"tgt": ["a", "b"]}}})).expect("ok");
        assert!(
            matches!(&got[0], Action::Local { tgt, tgt_type: TargetType::List, .. } if tgt == "a,b")
        );
        assert!(matches!(&got[0], Action::Local { tgt_type, .. } if *tgt_type == TargetType::List));
    }

    #[test]
    fn args_wins_over_arg_and_must_be_keyword_arguments() {
        let got = read(json!({"a": {"local.cmd.run": [
            {"tgt": "*"}, {"arg": ["ignored"]}, {"args": {"cmd": "true"}}
        ]}}))
        .expect("ok");
        assert!(matches!(&got[0], Action::Local { arg, kwarg, .. }
            if arg.is_empty() && kwarg["cmd"] == "true"));
        let e = read(json!({"a": {"local.cmd.run": [{"tgt": "*"}, {"args": ["echo hi"]}]}}))
            .expect_err("positional args");
        assert!(
            e[0].message.contains("positional arguments go in 'arg'"),
            "{e:?}"
        );
    }

    #[test]
    fn malformed_actions_are_named_with_their_line() {
        let text =
            "ok:\n  runner.manage.up: []\nbad:\n  local.cmd.run: []\n'weird':\n  nope.x.y: []\n";
        let v = json!({
            "ok": {"runner.manage.up": []},
            "bad": {"local.cmd.run": []},
            "weird": {"nope.x.y": []},
        });
        let e =
            actions(&v, &["ok".into(), "bad".into(), "weird".into()], text).expect_err("errors");
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].id.as_str(), e[0].line), ("bad", Some(3)));
        assert!(e[0].message.contains("needs a tgt"), "{e:?}");
        assert_eq!((e[1].id.as_str(), e[1].line), ("weird", Some(5)));
        assert!(
            e[1].message.contains("unknown reaction type 'nope'"),
            "{e:?}"
        );
        for bad in [
            json!({"a": {"local": []}}),
            json!({"a": {"local.cmd": []}}),
            json!({"a": {"wheel.key.gen": []}}),
            json!({"a": {"caller.cmd.run": []}}),
            json!({"a": {"local.cmd.run": [{"tgt": "*"}, {"tgt_type": "bogus"}]}}),
            json!({"a": {"local.cmd.run": ["tgt"]}}),
            json!({"a": {"local.cmd.run": [{"tgt": "*"}, {"timeout": "soon"}]}}),
            json!({"a": "text"}),
            json!(["not", "a", "mapping"]),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
    }
}
