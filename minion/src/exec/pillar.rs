//! The `pillar` module: this minion's pillar (`pillar.items`, `pillar.get`,
//! `pillar.item`, `pillar.raw`, `pillar.ls`, `pillar.keys`, `pillar.fetch`,
//! `pillar.data`, `pillar.obfuscate`), with Salt's signatures and shapes.
//!
//! As in Salt, `pillar.items` (and `ls`, `data`, `obfuscate`) asks the
//! master for a freshly compiled pillar; Brine then keeps it in memory
//! (unless another `pillarenv` was asked for). `pillar.get`, `item`, `raw`
//! and `keys` read the pillar in memory, except that `get` and `item` with
//! `pillarenv=` (or `saltenv=`) ask the master, as Salt's do. A
//! `pillar='{"k": "v"}'` override is merged on top for that call only
//! (dicts merged deeply, everything else replaced). Errors the master hit
//! while compiling are in the data under `_errors`, where Salt puts them.

use super::grains::{traverse, DEFAULT_DELIMITER};
use super::{opt, req, Call, CallFuture, ExecError, Function, Outcome};
use serde_json::{json, Map, Value};

/// Keyword arguments of `pillar.items` and the functions built on it.
const ITEMS_KWARGS: &[&str] = &["pillar", "pillar_enc", "pillarenv", "saltenv"];
/// Keyword arguments of `pillar.item`.
const ITEM_KWARGS: &[&str] = &["default", "delimiter", "pillarenv", "saltenv"];

const GET_PARAMS: &[super::Param] = &[
    req("key"),
    opt("default"),
    opt("merge"),
    opt("merge_nested_lists"),
    opt("delimiter"),
    opt("pillarenv"),
    opt("saltenv"),
];

const GET_DOC: &str = "Attempt to retrieve the named value from the in-memory pillar data. If\n\
    the pillar key is not present, the value specified in ``default`` is\n\
    returned (an empty string when not given).\n\n\
    The value can also represent a value in a nested dict using a \":\"\n\
    delimiter for the dict: ``pkg:apache``.\n\n\
    merge : False\n    If ``True``, the retrieved values are merged into the passed default:\n    \
    dicts recursively, lists extended with the values they lack.\n\n\
    merge_nested_lists\n    With ``merge``, lists nested in the dicts are merged too (default\n    False).\n\n\
    delimiter\n    Specify an alternate delimiter to use when traversing a nested dict.\n\n\
    pillarenv\n    Ask the master for a fresh pillar of this environment instead of\n    \
    reading the pillar in memory (which is not changed).\n\n\
    CLI Example:\n\n    salt '*' pillar.get pkg:apache\n    \
    salt '*' pillar.get abc::def|ghi delimiter='|'\n";

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "pillar.items",
        params: &[],
        varargs: true,
        kwargs: true,
        doc: ITEMS_DOC,
        handler: items,
    },
    Function {
        name: "pillar.data",
        params: &[],
        varargs: true,
        kwargs: true,
        doc: "Calls the master for a fresh pillar, generates the pillar data on the\n\
              fly (same as ``pillar.items``)\n\n\
              CLI Example:\n\n    salt '*' pillar.data\n",
        handler: items,
    },
    Function {
        name: "pillar.ls",
        params: &[],
        varargs: true,
        kwargs: true,
        doc: "Calls the master for a fresh pillar, generates the pillar data on the\n\
              fly (same as ``pillar.items``), but only shows the available main keys.\n\n\
              CLI Example:\n\n    salt '*' pillar.ls\n",
        handler: ls,
    },
    Function {
        name: "pillar.obfuscate",
        params: &[],
        varargs: true,
        kwargs: true,
        doc: "Same as ``pillar.items``, but replace pillar values with a simple type\n\
              indication (``'<str>'``, ``'<int>'``...); dict keys are kept.\n\n\
              CLI Example:\n\n    salt '*' pillar.obfuscate\n",
        handler: obfuscate,
    },
    Function {
        name: "pillar.get",
        params: GET_PARAMS,
        varargs: false,
        kwargs: false,
        doc: GET_DOC,
        handler: get,
    },
    Function {
        name: "pillar.fetch",
        params: GET_PARAMS,
        varargs: false,
        kwargs: false,
        doc: GET_DOC,
        handler: get,
    },
    Function {
        name: "pillar.item",
        params: &[],
        varargs: true,
        kwargs: true,
        doc: "Return one or more pillar entries from the in-memory pillar data, as a\n\
              dict ``{key: value}``; nested keys use the ``delimiter`` (default\n\
              ``:``) and missing ones are ``default`` (default an empty string).\n\
              With ``pillarenv=`` a fresh pillar of that environment is asked for.\n\n\
              CLI Examples:\n\n    salt '*' pillar.item foo\n    \
              salt '*' pillar.item foo:bar\n    salt '*' pillar.item foo bar baz\n",
        handler: item,
    },
    Function {
        name: "pillar.raw",
        params: &[opt("key")],
        varargs: false,
        kwargs: false,
        doc: "Return the raw pillar data that is currently loaded into the minion.\n\
              With ``key``, only that top-level key (``{}`` when missing).\n\n\
              CLI Example:\n\n    salt '*' pillar.raw\n    salt '*' pillar.raw key='roles'\n",
        handler: raw,
    },
    Function {
        name: "pillar.keys",
        params: &[req("key"), opt("delimiter")],
        varargs: false,
        kwargs: false,
        doc: "Attempt to retrieve a list of keys from the named value from the pillar.\n\
              The value can also represent a value in a nested dict using a \":\"\n\
              delimiter for the dict, similar to how pillar.get works.\n\n\
              CLI Example:\n\n    salt '*' pillar.keys web:sites\n",
        handler: keys,
    },
];

/// `pillar.items`' docstring.
const ITEMS_DOC: &str = concat!(
    "Calls the master for a fresh pillar and generates the pillar data on the\n",
    "fly. Contrast with ``pillar.raw``, which returns the pillar data that is\n",
    "currently loaded into the minion.\n\n",
    "pillar\n    A dictionary of pillar data (or its JSON/YAML text) merged on top of\n    ",
    "the compiled pillar for this call only.\n\n",
    "pillarenv\n    Compile the pillar of this environment only (the minion's\n    ",
    "``pillarenv`` by default; all environments when that is unset).\n\n",
    "saltenv\n    Accepted for compatibility; ignored.\n\n",
    "CLI Example:\n\n    salt '*' pillar.items\n    ",
    "salt '*' pillar.items pillar='{\"k\": \"v\"}'\n"
);

/// Refuse keyword arguments the function does not take, as Python would.
fn only_kwargs(c: &Call<'_>, known: &[&str]) -> Result<(), ExecError> {
    let unknown: Vec<String> = c
        .args
        .kwargs
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ExecError::InvalidArgs(format!(
            "The following keyword arguments are not valid: {}",
            unknown.join(", ")
        )))
    }
}

fn kw_str(c: &Call<'_>, name: &str) -> Option<String> {
    match c.args.kwargs.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// A fresh pillar from the master: of `pillarenv` when given (memory is
/// left alone), else of the minion's `pillarenv` (kept in memory when
/// `store`).
async fn fresh(c: &Call<'_>, pillarenv: Option<String>, store: bool) -> Result<Value, ExecError> {
    let p = &c.ctx.pillar;
    let explicit = pillarenv.is_some();
    let env = pillarenv.or_else(|| p.pillarenv().map(str::to_string));
    let v = p
        .fetch(env)
        .await
        .map_err(|e| ExecError::Execution(e.to_string()))?;
    if store && !explicit {
        p.store(v.clone());
    }
    Ok(v)
}

/// The `pillar=` override: a dict, or its JSON or YAML text.
pub fn override_arg(v: Option<&Value>) -> Result<Option<Map<String, Value>>, ExecError> {
    let bad = || {
        ExecError::Execution(
            "Pillar data must be formatted as a dictionary, unless pillar_enc is specified."
                .to_string(),
        )
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(Value::String(s)) => {
            let parsed = serde_json::from_str::<Value>(s)
                .ok()
                .unwrap_or_else(|| brine_common::args::yamlify(s));
            match parsed {
                Value::Object(m) => Ok(Some(m)),
                _ => Err(bad()),
            }
        }
        Some(_) => Err(bad()),
    }
}

/// Salt's `dictupdate.update`: dicts merged key by key, recursively; lists
/// extended with the items they lack when `merge_lists`; anything else
/// replaced by `src`.
pub fn merge(dest: &mut Value, src: Value, merge_lists: bool) {
    match (dest, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(&k) {
                    Some(slot) if v.is_object() || (merge_lists && v.is_array()) => {
                        merge(slot, v, merge_lists)
                    }
                    _ => {
                        d.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(d), Value::Array(s)) if merge_lists => {
            for v in s {
                if !d.contains(&v) {
                    d.push(v);
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// `pillar.items` and friends: the fresh pillar with the override on top.
async fn items_value(c: &Call<'_>) -> Result<Value, ExecError> {
    only_kwargs(c, ITEMS_KWARGS)?;
    if c.args
        .kwargs
        .get("pillar_enc")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ExecError::Execution(
            "pillar_enc is not supported: pillar data travels encrypted to this minion already"
                .into(),
        ));
    }
    let over = override_arg(c.args.kwargs.get("pillar"))?;
    let pillarenv = kw_str(c, "pillarenv");
    if !c.args.varargs.is_empty() {
        let base = fresh(c, pillarenv, false).await?;
        return Ok(Value::Object(pick(c, &base, &json!(""), DEFAULT_DELIMITER)));
    }
    let mut v = fresh(c, pillarenv, true).await?;
    if let Some(m) = over {
        merge(&mut v, Value::Object(m), false);
    }
    Ok(v)
}

fn items<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move { Ok(Outcome::ok(items_value(c).await?)) })
}

fn ls<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let v = items_value(c).await?;
        let keys: Vec<String> = v
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        Ok(Outcome::ok(json!(keys)))
    })
}

/// Values replaced by Python's type names (`<str>`, `<int>`...).
fn obscure(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), obscure(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(obscure).collect()),
        Value::String(_) => json!("<str>"),
        Value::Bool(_) => json!("<bool>"),
        Value::Null => json!("<NoneType>"),
        Value::Number(n) if n.is_f64() => json!("<float>"),
        Value::Number(_) => json!("<int>"),
    }
}

fn obfuscate<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move { Ok(Outcome::ok(obscure(&items_value(c).await?))) })
}

/// The pillar `get`/`item` read: in memory, or fresh when a `pillarenv` or
/// `saltenv` is named.
async fn source_pillar(
    c: &Call<'_>,
    pillarenv: Option<String>,
    saltenv: Option<String>,
) -> Result<Value, ExecError> {
    if pillarenv.is_none() && saltenv.is_none() {
        Ok(c.ctx.pillar.snapshot())
    } else {
        fresh(c, pillarenv, false).await
    }
}

fn get<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let key = c.str_arg("key")?.unwrap_or_default();
        let default = c.arg("default").cloned().unwrap_or_else(|| json!(""));
        let delim = c
            .str_arg("delimiter")?
            .unwrap_or_else(|| DEFAULT_DELIMITER.to_string());
        let merge_lists = c.bool_arg("merge_nested_lists", false)?;
        let pillar = source_pillar(c, c.str_arg("pillarenv")?, c.str_arg("saltenv")?).await?;
        let found = traverse(&pillar, &key, &delim);
        if c.bool_arg("merge", false)? {
            match (&default, found) {
                (Value::Object(_), Some(v @ Value::Object(_))) => {
                    let mut out = default.clone();
                    merge(&mut out, v.clone(), merge_lists);
                    return Ok(Outcome::ok(out));
                }
                (Value::Object(_), None) => return Ok(Outcome::ok(default)),
                (Value::Array(d), Some(Value::Array(got))) => {
                    let mut out = d.clone();
                    for v in got {
                        if !out.contains(v) {
                            out.push(v.clone());
                        }
                    }
                    return Ok(Outcome::ok(Value::Array(out)));
                }
                (Value::Array(_), None) => return Ok(Outcome::ok(default)),
                (Value::Object(_) | Value::Array(_), Some(_)) => tracing::warn!(
                    key = %key,
                    "pillar.get: the default and the pillar value are not of the same type; merge skipped"
                ),
                _ => tracing::warn!(
                    key = %key,
                    "pillar.get: the default must be a dict or list to merge; merge skipped"
                ),
            }
        }
        Ok(Outcome::ok(found.cloned().unwrap_or(default)))
    })
}

/// `{arg: value-or-default}` for each `*args` key.
fn pick(c: &Call<'_>, pillar: &Value, default: &Value, delim: &str) -> Map<String, Value> {
    c.args
        .varargs
        .iter()
        .map(|k| {
            let key = match k {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let v = traverse(pillar, &key, delim)
                .cloned()
                .unwrap_or_else(|| default.clone());
            (key, v)
        })
        .collect()
}

fn item<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        only_kwargs(c, ITEM_KWARGS)?;
        let default = match c.args.kwargs.get("default") {
            None | Some(Value::Null) => json!(""),
            Some(v) => v.clone(),
        };
        let delim = kw_str(c, "delimiter").unwrap_or_else(|| DEFAULT_DELIMITER.to_string());
        let pillar = source_pillar(c, kw_str(c, "pillarenv"), kw_str(c, "saltenv")).await?;
        Ok(Outcome::ok(Value::Object(pick(
            c, &pillar, &default, &delim,
        ))))
    })
}

fn raw<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let pillar = c.ctx.pillar.snapshot();
        Ok(Outcome::ok(
            match c.str_arg("key")?.filter(|k| !k.is_empty()) {
                Some(k) => pillar.get(&k).cloned().unwrap_or_else(|| json!({})),
                None => pillar,
            },
        ))
    })
}

fn keys<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let key = c.str_arg("key")?.unwrap_or_default();
        let delim = c
            .str_arg("delimiter")?
            .unwrap_or_else(|| DEFAULT_DELIMITER.to_string());
        let pillar = c.ctx.pillar.snapshot();
        match traverse(&pillar, &key, &delim) {
            None => Err(ExecError::Execution(format!("Pillar key not found: {key}"))),
            Some(Value::Object(m)) => Ok(Outcome::ok(json!(m.keys().cloned().collect::<Vec<_>>()))),
            Some(_) => Err(ExecError::Execution(format!(
                "Pillar value in key {key} is not a dict"
            ))),
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::ctx;
    use super::super::{Ctx, Outcome, Registry};
    use super::*;
    use crate::files::fake::FakeMaster;
    use crate::files::Ask;
    use crate::pillar::Pillar;
    use brine_common::proto::{ReplyBody, RequestBody};
    use std::sync::Arc;

    fn pillar() -> Value {
        json!({
            "secret": "m1-only",
            "web": {"sites": {"a": {"port": 80}, "b": {"port": 81}}, "pkgs": ["nginx"]},
            "_errors": ["pillar/bad.sls, line 3: undefined variable"]
        })
    }

    /// A context whose master answers each pillar question with `answers`
    /// in order, with `memory` as the pillar in memory.
    fn with_master(
        fun: &str,
        args: Vec<Value>,
        kwargs: Value,
        answers: Vec<Value>,
        memory: Value,
    ) -> (Ctx, Arc<FakeMaster>) {
        let m = Arc::new(FakeMaster::default());
        for a in answers {
            m.pillars.lock().unwrap().push_back(ReplyBody::Pillar(a));
        }
        let mut c = ctx(fun, args, kwargs);
        let asker: Arc<dyn Ask> = m.clone();
        let p = Pillar::new(Some(asker), None, "m1", Some("base".into()), 1 << 20);
        p.store(memory);
        c.pillar = Arc::new(p);
        (c, m)
    }

    async fn call(c: Ctx) -> Outcome {
        Registry::new().call(c).await
    }

    #[tokio::test]
    async fn items_is_fresh_stored_and_keeps_errors() {
        let (c, m) = with_master("pillar.items", vec![], json!({}), vec![pillar()], json!({}));
        let p = c.pillar.clone();
        let o = call(c).await;
        assert_eq!(o, Outcome::ok(pillar()));
        assert_eq!(
            o.ret["_errors"][0],
            "pillar/bad.sls, line 3: undefined variable"
        );
        assert_eq!(p.snapshot(), pillar(), "stored");
        assert_eq!(
            m.count(|b| *b
                == RequestBody::Pillar {
                    pillarenv: Some("base".into())
                }),
            1
        );
    }

    #[tokio::test]
    async fn items_override_is_merged_for_this_call_only() {
        let (c, _) = with_master(
            "pillar.items",
            vec![],
            json!({"pillar": "{\"web\": {\"pkgs\": [\"apache\"], \"new\": 1}, \"k\": \"v\"}"}),
            vec![pillar()],
            json!({}),
        );
        let p = c.pillar.clone();
        let o = call(c).await;
        assert_eq!(o.ret["k"], "v");
        assert_eq!(o.ret["web"]["pkgs"], json!(["apache"]), "lists replaced");
        assert_eq!(o.ret["web"]["new"], 1);
        assert_eq!(o.ret["web"]["sites"]["a"]["port"], 80, "dicts merged");
        assert_eq!(p.snapshot(), pillar(), "memory holds the master's pillar");

        let (c, _) = with_master(
            "pillar.items",
            vec![],
            json!({"pillar": {"k": 2}}),
            vec![pillar()],
            json!({}),
        );
        assert_eq!(call(c).await.ret["k"], 2);
        let (c, _) = with_master(
            "pillar.items",
            vec![],
            json!({"pillar": "[1, 2]"}),
            vec![pillar()],
            json!({}),
        );
        let o = call(c).await;
        assert!(!o.success);
        assert!(o
            .ret
            .as_str()
            .unwrap()
            .contains("must be formatted as a dictionary"));
    }

    #[tokio::test]
    async fn items_with_another_pillarenv_or_args() {
        let (c, m) = with_master(
            "pillar.items",
            vec![],
            json!({"pillarenv": "dev"}),
            vec![json!({"dev": true})],
            json!({"mem": 1}),
        );
        let p = c.pillar.clone();
        assert_eq!(call(c).await.ret, json!({"dev": true}));
        assert_eq!(p.snapshot(), json!({"mem": 1}), "memory untouched");
        assert_eq!(
            m.count(|b| *b
                == RequestBody::Pillar {
                    pillarenv: Some("dev".into())
                }),
            1
        );
        let (c, _) = with_master(
            "pillar.items",
            vec![json!("secret"), json!("web:pkgs")],
            json!({}),
            vec![pillar()],
            json!({}),
        );
        assert_eq!(
            call(c).await.ret,
            json!({"secret": "m1-only", "web:pkgs": ["nginx"]})
        );
        let (c, _) = with_master(
            "pillar.items",
            vec![],
            json!({"bogus": 1}),
            vec![],
            json!({}),
        );
        assert!(call(c)
            .await
            .ret
            .as_str()
            .unwrap()
            .contains("not valid: bogus"));
    }

    #[tokio::test]
    async fn get_item_raw_keys_from_memory() {
        let run = |fun: &str, args: Vec<Value>, kwargs: Value| {
            let (c, m) = with_master(fun, args, kwargs, vec![], pillar());
            async move {
                let o = call(c).await;
                assert_eq!(m.count(|_| true), 0, "read from memory");
                o
            }
        };
        assert_eq!(
            run("pillar.get", vec![json!("web:sites:a:port")], json!({}))
                .await
                .ret,
            80
        );
        assert_eq!(
            run("pillar.get", vec![json!("nope")], json!({})).await.ret,
            ""
        );
        assert_eq!(
            run("pillar.get", vec![json!("nope"), json!("dflt")], json!({}))
                .await
                .ret,
            "dflt"
        );
        assert_eq!(
            run(
                "pillar.fetch",
                vec![json!("web|pkgs")],
                json!({"delimiter": "|"})
            )
            .await
            .ret,
            json!(["nginx"])
        );
        assert_eq!(
            run(
                "pillar.get",
                vec![
                    json!("web:sites"),
                    json!({"c": {"port": 1}, "a": {"tls": true}})
                ],
                json!({"merge": true})
            )
            .await
            .ret,
            json!({"a": {"port": 80, "tls": true}, "b": {"port": 81}, "c": {"port": 1}})
        );
        assert_eq!(
            run(
                "pillar.get",
                vec![json!("web:pkgs"), json!(["vim", "nginx"])],
                json!({"merge": true})
            )
            .await
            .ret,
            json!(["vim", "nginx"])
        );
        assert_eq!(
            run(
                "pillar.item",
                vec![json!("secret"), json!("web:nope")],
                json!({"default": "d"})
            )
            .await
            .ret,
            json!({"secret": "m1-only", "web:nope": "d"})
        );
        assert_eq!(run("pillar.raw", vec![], json!({})).await.ret, pillar());
        assert_eq!(
            run("pillar.raw", vec![json!("web:sites")], json!({}))
                .await
                .ret,
            json!({}),
            "raw reads top-level keys only"
        );
        assert_eq!(
            run("pillar.keys", vec![json!("web:sites")], json!({}))
                .await
                .ret,
            json!(["a", "b"])
        );
        let o = run("pillar.keys", vec![json!("secret")], json!({})).await;
        assert_eq!(
            o.ret,
            json!("ERROR: Pillar value in key secret is not a dict")
        );
        let o = run("pillar.keys", vec![json!("nope")], json!({})).await;
        assert_eq!(o.ret, json!("ERROR: Pillar key not found: nope"));
        assert!(!o.success);
    }

    #[tokio::test]
    async fn get_with_pillarenv_asks_the_master_and_ls_obfuscate() {
        let (c, m) = with_master(
            "pillar.get",
            vec![json!("x")],
            json!({"pillarenv": "dev"}),
            vec![json!({"x": "from-dev"})],
            json!({"x": "mem"}),
        );
        assert_eq!(call(c).await.ret, "from-dev");
        assert_eq!(m.count(|_| true), 1);
        let (c, _) = with_master("pillar.ls", vec![], json!({}), vec![pillar()], json!({}));
        assert_eq!(call(c).await.ret, json!(["_errors", "secret", "web"]));
        let (c, _) = with_master(
            "pillar.obfuscate",
            vec![],
            json!({}),
            vec![json!({"a": "pw", "b": [1, 2.5, true, null]})],
            json!({}),
        );
        assert_eq!(
            call(c).await.ret,
            json!({"a": "<str>", "b": ["<int>", "<float>", "<bool>", "<NoneType>"]})
        );
    }

    #[tokio::test]
    async fn without_a_master_items_is_an_error_and_get_reads_memory() {
        let o = super::super::testutil::run("pillar.items", vec![], json!({})).await;
        assert!(!o.success);
        assert!(o.ret.as_str().unwrap().contains("no connection"), "{o:?}");
        let o = super::super::testutil::run("pillar.get", vec![json!("k")], json!({})).await;
        assert_eq!(o, Outcome::ok(json!("")));
    }

    #[test]
    fn merge_rules() {
        let mut a = json!({"l": [1], "d": {"x": 1}, "s": 1});
        merge(
            &mut a,
            json!({"l": [2], "d": {"y": 2}, "s": {"n": 1}}),
            false,
        );
        assert_eq!(a, json!({"l": [2], "d": {"x": 1, "y": 2}, "s": {"n": 1}}));
        let mut a = json!({"l": [1, 2]});
        merge(&mut a, json!({"l": [2, 3]}), true);
        assert_eq!(a, json!({"l": [1, 2, 3]}));
    }
}
