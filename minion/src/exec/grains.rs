//! The `grains` module: read this minion's grains (`grains.items`,
//! `grains.get`, `grains.item`, `grains.ls`) and set grains that persist
//! (`grains.setval`, `grains.setvals`, `grains.set`, `grains.append`,
//! `grains.remove`, `grains.delval`, `grains.delkey`).
//!
//! Reads take the live grains under a read lock and never hold the lock
//! across an await. A write goes to the grains file first
//! ([`crate::grains::set_file_grains`]) and then into the live grains, and
//! the master is told the new grains; a write that could not reach the
//! file changes nothing. Refreshing lives in `saltutil`.

use super::{opt, req, Call, CallFuture, ExecError, Function, MinionEvent, Outcome};
use brine_common::sync::read;
use serde_json::{json, Map, Value};

/// Salt's `DEFAULT_TARGET_DELIM`.
pub const DEFAULT_DELIMITER: &str = ":";

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "grains.items",
        params: &[opt("sanitize")],
        varargs: false,
        kwargs: false,
        doc: "Return all of the minion's grains\n\n\
              CLI Example:\n\n    salt '*' grains.items\n",
        handler: items,
    },
    Function {
        name: "grains.get",
        params: &[req("key"), opt("default"), opt("delimiter"), opt("ordered")],
        varargs: false,
        kwargs: false,
        doc: "Attempt to retrieve the named value from grains, if the named value is not\n\
              available return the passed default. The default return is an empty string.\n\n\
              The value can also represent a value in a nested dict using a \":\" delimiter\n\
              for the dict. This means that if a dict in grains looks like this::\n\n\
              \x20   {'pkg': {'apache': 'httpd'}}\n\n\
              To retrieve the value associated with the apache key in the pkg dict this\n\
              key can be passed::\n\n\
              \x20   pkg:apache\n\n\
              :param delimiter: Specify an alternate delimiter to use when traversing a\n\
              \x20   nested dict. List items can be addressed by index.\n\n\
              CLI Example:\n\n    salt '*' grains.get pkg:apache\n    \
              salt '*' grains.get abc::def|ghi delimiter='|'\n",
        handler: get,
    },
    Function {
        name: "grains.item",
        params: &[],
        varargs: true,
        kwargs: true,
        doc: "Return one or more grains as a dict ``{key: value}``; nested keys use the\n\
              ``delimiter`` (default ``:``) and missing ones are ``default`` (default\n\
              an empty string).\n\n\
              CLI Example:\n\n    salt '*' grains.item os\n    \
              salt '*' grains.item os osrelease oscodename\n",
        handler: item,
    },
    Function {
        name: "grains.ls",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Return a list of all available grains\n\n\
              CLI Example:\n\n    salt '*' grains.ls\n",
        handler: ls,
    },
    Function {
        name: "grains.setval",
        params: &[req("key"), req("val"), opt("destructive"), opt("refresh_pillar")],
        varargs: false,
        kwargs: false,
        doc: "Set a grains value in the grains config file (``<config dir>/grains``)\n\n\
              key\n    The grain key to be set.\n\n\
              val\n    The value to set the grain key to.\n\n\
              destructive\n    If an operation results in a key being removed, delete the key, too.\n\n\
              CLI Example:\n\n    salt '*' grains.setval key val\n    \
              salt '*' grains.setval key \"{'sub-key': 'val', 'sub-key2': 'val2'}\"\n",
        handler: setval,
    },
    Function {
        name: "grains.setvals",
        params: &[req("grains"), opt("destructive"), opt("refresh_pillar")],
        varargs: false,
        kwargs: false,
        doc: "Set new grains values in the grains config file\n\n\
              destructive\n    If an operation results in a key being removed, delete the key, too.\n\n\
              CLI Example:\n\n    salt '*' grains.setvals \"{'key1': 'val1', 'key2': 'val2'}\"\n",
        handler: setvals,
    },
    Function {
        name: "grains.set",
        params: &[
            req("key"),
            opt("val"),
            opt("force"),
            opt("destructive"),
            opt("delimiter"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Set a key to an arbitrary value; nested keys use ``delimiter`` (``:``).\n\
              A key holding a dict or a list is only replaced with ``force=True``.\n\
              Returns ``{'comment': ..., 'changes': ..., 'result': ...}``.\n\n\
              CLI Example:\n\n    salt '*' grains.set 'apps:myApp:port' 2209\n    \
              salt '*' grains.set 'apps:myApp' '{port: 2209}'\n",
        handler: set,
    },
    Function {
        name: "grains.append",
        params: &[req("key"), req("val"), opt("convert"), opt("delimiter")],
        varargs: false,
        kwargs: false,
        doc: "Append a value to a list in the grains config file. If the grain doesn't\n\
              exist, the grain key is added and the value is appended to the new grain\n\
              as a list item.\n\n\
              convert\n    If convert is True, convert non-list contents into a list.\n\n\
              CLI Example:\n\n    salt '*' grains.append key val\n",
        handler: append,
    },
    Function {
        name: "grains.remove",
        params: &[req("key"), req("val"), opt("delimiter")],
        varargs: false,
        kwargs: false,
        doc: "Remove a value from a list in the grains config file\n\n\
              CLI Example:\n\n    salt '*' grains.remove key val\n",
        handler: remove,
    },
    Function {
        name: "grains.delval",
        params: &[req("key"), opt("destructive")],
        varargs: false,
        kwargs: false,
        doc: "Delete a grain value from the grains config file. This will just set the\n\
              grain value to ``None``. To completely remove the grain, run\n\
              ``grains.delkey`` or pass ``destructive=True`` to ``grains.delval``.\n\n\
              CLI Example:\n\n    salt '*' grains.delval key\n",
        handler: delval,
    },
    Function {
        name: "grains.delkey",
        params: &[req("key"), opt("force")],
        varargs: false,
        kwargs: false,
        doc: "Remove a grain completely from the grain system, this will remove the\n\
              grain key and value\n\n\
              CLI Example:\n\n    salt '*' grains.delkey key\n",
        handler: delkey,
    },
];

fn snapshot(c: &Call<'_>) -> Value {
    read(&c.ctx.grains).clone()
}

/// Follow `key` split on `delimiter` through dicts and lists (by index, or
/// into the first dict element holding the key), as Salt's
/// `traverse_dict_and_list` does.
pub fn traverse<'v>(data: &'v Value, key: &str, delimiter: &str) -> Option<&'v Value> {
    if delimiter.is_empty() {
        return data.get(key);
    }
    let mut cur = data;
    for part in key.split(delimiter) {
        cur = match cur {
            Value::Object(m) => m.get(part)?,
            Value::Array(items) => match part.parse::<usize>() {
                Ok(i) => items.get(i)?,
                Err(_) => items.iter().find_map(|it| it.as_object()?.get(part))?,
            },
            _ => return None,
        };
    }
    Some(cur)
}

fn delimiter(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        _ => DEFAULT_DELIMITER.to_string(),
    }
}

fn items<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move { Ok(Outcome::ok(snapshot(c))) })
}

fn get<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let key = c.str_arg("key")?.unwrap_or_default();
        let delim = delimiter(c.arg("delimiter"));
        let default = c.arg("default").cloned().unwrap_or_else(|| json!(""));
        let grains = snapshot(c);
        Ok(Outcome::ok(
            traverse(&grains, &key, &delim).cloned().unwrap_or(default),
        ))
    })
}

fn item<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let delim = delimiter(c.args.kwargs.get("delimiter"));
        let default = c
            .args
            .kwargs
            .get("default")
            .cloned()
            .unwrap_or_else(|| json!(""));
        let grains = snapshot(c);
        let mut out = Map::new();
        for k in &c.args.varargs {
            let key = match k {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let v = traverse(&grains, &key, &delim)
                .cloned()
                .unwrap_or_else(|| default.clone());
            out.insert(key, v);
        }
        Ok(Outcome::ok(Value::Object(out)))
    })
}

fn ls<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let grains = snapshot(c);
        let mut keys: Vec<&String> = grains
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        keys.sort();
        Ok(Outcome::ok(json!(keys)))
    })
}

/// Write `updates` to the grains file and the live grains, then tell the
/// master.
async fn store(
    c: &Call<'_>,
    updates: Map<String, Value>,
    destructive: bool,
) -> Result<(), ExecError> {
    let path = c.ctx.grains_file.clone().ok_or_else(|| {
        ExecError::Execution("no grains file: the minion's config directory is not known".into())
    })?;
    let live = c.ctx.grains.clone();
    super::user::blocking(move || {
        crate::grains::set_file_grains(&path, &live, &updates, destructive)
    })
    .await?;
    if let Some(tx) = &c.ctx.events {
        if tx.send(MinionEvent::GrainsChanged(snapshot(c))).is_err() {
            tracing::warn!(jid = %c.ctx.jid, "grains set but the master link is gone");
        }
    }
    Ok(())
}

fn key_arg(c: &Call<'_>) -> Result<String, ExecError> {
    c.str_arg("key")?
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ExecError::InvalidArgs("key must be given".into()))
}

fn setval<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let mut m = Map::new();
        m.insert(key_arg(c)?, c.arg("val").cloned().unwrap_or(Value::Null));
        store(c, m.clone(), c.bool_arg("destructive", false)?).await?;
        Ok(Outcome::ok(Value::Object(m)))
    })
}

fn setvals<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let Some(Value::Object(m)) = c.arg("grains") else {
            return Err(ExecError::Execution(
                "setvals grains must be a dictionary.".into(),
            ));
        };
        store(c, m.clone(), c.bool_arg("destructive", false)?).await?;
        Ok(Outcome::ok(Value::Object(m.clone())))
    })
}

/// Salt's `{'comment', 'changes', 'result'}` of `grains.set`.
fn set_ret(comment: &str, changes: Value, result: bool) -> Outcome {
    Outcome::ok(json!({"comment": comment, "changes": changes, "result": result}))
}

/// Where a nested `key` (`a:b:c`) puts `value`: the top-level key and its
/// new whole value, built from the current grains. A null `value` with
/// `destructive` removes the innermost key.
fn nest(
    grains: &Value,
    key: &str,
    delim: &str,
    value: Value,
    destructive: bool,
) -> (String, Value) {
    let (mut key, mut value) = (key.to_string(), value);
    while let Some((head, rest)) = (!delim.is_empty())
        .then(|| key.rsplit_once(delim))
        .flatten()
    {
        let parent = traverse(grains, head, delim).cloned();
        value = match parent {
            Some(Value::Object(mut m)) => {
                if value.is_null() && destructive {
                    m.remove(rest);
                } else {
                    m.insert(rest.to_string(), value);
                }
                Value::Object(m)
            }
            Some(Value::Array(mut items)) => {
                let slot = items
                    .iter_mut()
                    .find_map(|it| it.as_object_mut().filter(|o| o.contains_key(rest)));
                match slot {
                    Some(o) => {
                        o.insert(rest.to_string(), value);
                    }
                    None => items.push(json!({ rest: value })),
                }
                Value::Array(items)
            }
            _ => json!({ rest: value }),
        };
        key = head.to_string();
    }
    (key, value)
}

/// `grains.set` (and `delval`/`delkey`, which set null).
async fn set_value(
    c: &Call<'_>,
    key: &str,
    val: Value,
    force: bool,
    destructive: bool,
) -> Result<Outcome, ExecError> {
    let delim = delimiter(c.arg("delimiter"));
    let grains = snapshot(c);
    let existing = traverse(&grains, key, &delim).cloned();
    let complex = |v: &Value| v.is_object() || v.is_array();
    if let Some(e) = &existing {
        if *e == val && (!val.is_null() || !destructive) {
            return Ok(set_ret("Grain is already set", json!({}), true));
        }
        if !e.is_null() && !force {
            if complex(e) {
                return Ok(set_ret(
                    &format!("The key '{key}' exists but is a dict or a list. Use 'force=True' to overwrite."),
                    json!({}),
                    false,
                ));
            }
            if complex(&val) {
                return Ok(set_ret(
                    &format!("The key '{key}' exists and the given value is a dict or a list. Use 'force=True' to overwrite."),
                    json!({}),
                    false,
                ));
            }
        }
    }
    let (top, value) = nest(&grains, key, &delim, val, destructive);
    let mut m = Map::new();
    m.insert(top, value);
    store(c, m.clone(), destructive).await?;
    Ok(set_ret("", Value::Object(m), true))
}

fn set<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let val = c
            .args
            .named
            .get("val")
            .cloned()
            .unwrap_or_else(|| json!(""));
        set_value(
            c,
            &key_arg(c)?,
            val,
            c.bool_arg("force", false)?,
            c.bool_arg("destructive", false)?,
        )
        .await
    })
}

fn delval<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let destructive = c.bool_arg("destructive", false)?;
        set_value(c, &key_arg(c)?, Value::Null, false, destructive).await
    })
}

fn delkey<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let force = c.bool_arg("force", false)?;
        set_value(c, &key_arg(c)?, Value::Null, force, true).await
    })
}

/// The list at `key` changed by `edit` (or its message), stored back.
async fn edit_list(
    c: &Call<'_>,
    edit: impl FnOnce(&str, Vec<Value>) -> Result<Vec<Value>, String>,
    convert: bool,
) -> Result<Outcome, ExecError> {
    let key = key_arg(c)?;
    let delim = delimiter(c.arg("delimiter"));
    let grains = snapshot(c);
    let list = match traverse(&grains, &key, &delim).cloned() {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) if convert => vec![other],
        Some(_) => {
            return Ok(Outcome::ok(json!(format!(
                "The key {key} is not a valid list"
            ))))
        }
    };
    let list = match edit(&key, list) {
        Ok(l) => l,
        Err(msg) => return Ok(Outcome::ok(json!(msg))),
    };
    let (top, value) = nest(&grains, &key, &delim, Value::Array(list), false);
    let mut m = Map::new();
    m.insert(top, value);
    store(c, m.clone(), false).await?;
    Ok(Outcome::ok(Value::Object(m)))
}

/// A value as text: strings bare, anything else as JSON.
pub fn val_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn append<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let val = c.arg("val").cloned().unwrap_or(Value::Null);
        let convert = c.bool_arg("convert", false)?;
        edit_list(
            c,
            |key, mut list| {
                if list.contains(&val) {
                    return Err(format!(
                        "The val {} was already in the list {key}",
                        val_text(&val)
                    ));
                }
                match val {
                    Value::Array(more) => list.extend(more),
                    one => list.push(one),
                }
                Ok(list)
            },
            convert,
        )
        .await
    })
}

fn remove<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let val = c.arg("val").cloned().unwrap_or(Value::Null);
        edit_list(
            c,
            |key, mut list| match list.iter().position(|v| *v == val) {
                Some(i) => {
                    list.remove(i);
                    Ok(list)
                }
                None => Err(format!(
                    "The val {} was not in the list {key}",
                    val_text(&val)
                )),
            },
            false,
        )
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::ctx;
    use super::super::{Ctx, Registry};
    use super::*;

    fn with_grains(fun: &str, args: Vec<Value>, kwargs: Value) -> Ctx {
        let c = ctx(fun, args, kwargs);
        *c.grains.write().expect("lock") = json!({
            "id": "m1",
            "os": "Debian",
            "pkg": {"apache": "httpd", "a:b": {"c": 1}},
            "roles": ["web", {"name": "db"}],
        });
        c
    }

    async fn call(fun: &str, args: Vec<Value>, kwargs: Value) -> Outcome {
        Registry::new().call(with_grains(fun, args, kwargs)).await
    }

    #[tokio::test]
    async fn items_and_ls() {
        let o = call("grains.items", vec![], json!({})).await;
        assert_eq!(o.ret["os"], "Debian");
        let o = call("grains.ls", vec![], json!({})).await;
        assert_eq!(o.ret, json!(["id", "os", "pkg", "roles"]));
    }

    #[tokio::test]
    async fn get_nested_default_and_delimiter() {
        let get = |args: Vec<Value>, kw: Value| call("grains.get", args, kw);
        assert_eq!(get(vec![json!("os")], json!({})).await.ret, json!("Debian"));
        assert_eq!(
            get(vec![json!("pkg:apache")], json!({})).await.ret,
            json!("httpd")
        );
        assert_eq!(
            get(vec![json!("roles:0")], json!({})).await.ret,
            json!("web")
        );
        assert_eq!(
            get(vec![json!("roles:name")], json!({})).await.ret,
            json!("db")
        );
        assert_eq!(get(vec![json!("nope")], json!({})).await.ret, json!(""));
        assert_eq!(
            get(vec![json!("nope"), json!("dflt")], json!({})).await.ret,
            json!("dflt")
        );
        assert_eq!(
            get(vec![json!("pkg|a:b|c")], json!({"delimiter": "|"}))
                .await
                .ret,
            json!(1)
        );
        assert_eq!(get(vec![json!("os:x")], json!({})).await.ret, json!(""));
        let o = get(vec![], json!({})).await;
        assert!(!o.success);
    }

    #[tokio::test]
    async fn setval_persists_updates_live_grains_and_tells_the_master() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("grains");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let reg = Registry::new();
        let grains = std::sync::Arc::new(std::sync::RwLock::new(json!({"id": "m1"})));
        let call = |fun: &str, args: Vec<Value>, kw: Value| {
            let mut c = ctx(fun, args, kw);
            c.grains = grains.clone();
            c.grains_file = Some(path.clone());
            c.events = Some(tx.clone());
            reg.call(c)
        };
        let o = call(
            "grains.setval",
            vec![json!("role"), json!("web")],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, json!({"role": "web"}));
        let text = std::fs::read_to_string(&path).expect("grains file");
        assert_eq!(text, "role: web\n");
        assert_eq!(
            crate::grains::read_grains_file(&path).expect("read")["role"],
            "web"
        );
        assert_eq!(grains.read().expect("lock")["role"], "web");
        match rx.try_recv() {
            Ok(MinionEvent::GrainsChanged(g)) => assert_eq!(g["role"], "web"),
            other => panic!("expected a grains event, got {other:?}"),
        }
        let o = call(
            "grains.setvals",
            vec![json!({"a": 1, "b": [1, 2]})],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, json!({"a": 1, "b": [1, 2]}));
        let o = call("grains.append", vec![json!("b"), json!(3)], json!({})).await;
        assert_eq!(o.ret, json!({"b": [1, 2, 3]}));
        let o = call("grains.append", vec![json!("b"), json!(3)], json!({})).await;
        assert_eq!(o.ret, json!("The val 3 was already in the list b"));
        let o = call("grains.append", vec![json!("role"), json!("db")], json!({})).await;
        assert_eq!(o.ret, json!("The key role is not a valid list"));
        let o = call(
            "grains.append",
            vec![json!("role"), json!("db")],
            json!({"convert": true}),
        )
        .await;
        assert_eq!(o.ret, json!({"role": ["web", "db"]}));
        let o = call("grains.remove", vec![json!("b"), json!(1)], json!({})).await;
        assert_eq!(o.ret, json!({"b": [2, 3]}));
        let o = call(
            "grains.set",
            vec![json!("apps:web:port"), json!(80)],
            json!({}),
        )
        .await;
        assert_eq!(o.ret["changes"], json!({"apps": {"web": {"port": 80}}}));
        let o = call("grains.delkey", vec![json!("b")], json!({})).await;
        assert_eq!(o.ret["result"], false, "a list needs force");
        let o = call("grains.delkey", vec![json!("b")], json!({"force": true})).await;
        assert_eq!(o.ret["changes"], json!({"b": null}));
        assert!(grains.read().expect("lock").get("b").is_none());
        let o = call("grains.delval", vec![json!("a")], json!({})).await;
        assert_eq!(o.ret["changes"], json!({"a": null}));
        let file = crate::grains::read_grains_file(&path).expect("read");
        assert_eq!(file.get("a"), Some(&Value::Null));
        assert!(!file.contains_key("b"));
        assert_eq!(file["apps"], json!({"web": {"port": 80}}));
        let again = crate::grains::collect_with_file("m1", &json!({}), Some(&path));
        assert_eq!(again["role"], json!(["web", "db"]));

        let o = Registry::new()
            .call(ctx(
                "grains.setval",
                vec![json!("k"), json!("v")],
                json!({}),
            ))
            .await;
        assert!(!o.success);
        assert!(o.ret.as_str().is_some_and(|s| s.contains("no grains file")));
    }

    #[tokio::test]
    async fn item_returns_dict() {
        let o = call(
            "grains.item",
            vec![json!("os"), json!("pkg:apache"), json!("zz")],
            json!({}),
        )
        .await;
        assert_eq!(
            o.ret,
            json!({"os": "Debian", "pkg:apache": "httpd", "zz": ""})
        );
        let o = call("grains.item", vec![json!("zz")], json!({"default": 0})).await;
        assert_eq!(o.ret, json!({"zz": 0}));
    }
}
