//! The `sys` module: what this minion can run (`sys.list_modules`,
//! `sys.list_functions`, `sys.doc`).
//!
//! Answers come from the [`Registry`](super::Registry) itself, so they always
//! match what a job can actually call.

use super::{Call, CallFuture, Function, Outcome};
use brine_common::glob::fnmatch as glob_match;
use serde_json::{json, Map, Value};

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "sys.list_modules",
        params: &[],
        varargs: true,
        kwargs: false,
        doc: "List the modules loaded on the minion; globs narrow the list.\n\n\
              CLI Example:\n\n    salt '*' sys.list_modules\n    \
              salt '*' sys.list_modules 's*'\n",
        handler: list_modules,
    },
    Function {
        name: "sys.list_functions",
        params: &[],
        varargs: true,
        kwargs: false,
        doc: "List the functions for all modules. Optionally, specify a module or\n\
              modules (or globs) from which to list.\n\n\
              CLI Example:\n\n    salt '*' sys.list_functions\n    \
              salt '*' sys.list_functions sys\n    salt '*' sys.list_functions 'sys.list_*'\n",
        handler: list_functions,
    },
    Function {
        name: "sys.doc",
        params: &[],
        varargs: true,
        kwargs: false,
        doc: "Return the docstrings for all modules. Optionally, specify a module or a\n\
              function to narrow the selection; globs are accepted.\n\n\
              The return is ``{function: docstring}``.\n\n\
              CLI Example:\n\n    salt '*' sys.doc\n    salt '*' sys.doc sys\n    \
              salt '*' sys.doc sys.doc\n    salt '*' sys.doc 'sys.*'\n",
        handler: doc,
    },
];

fn patterns(c: &Call<'_>) -> Vec<String> {
    c.args
        .varargs
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// Functions named by `sel` the way Salt's `sys.doc` selects them: a glob if
/// it holds `*`, else the function itself or every function of the module
/// (`sys` and `sys.` both mean module `sys`, never `sysctl`).
fn selected(all: &[String], sel: &[String]) -> Vec<String> {
    if sel.is_empty() {
        return all.to_vec();
    }
    all.iter()
        .filter(|fun| {
            sel.iter().any(|m| {
                if m.contains('*') || m.contains('?') {
                    glob_match(m, fun)
                } else {
                    let prefix = if m.ends_with('.') {
                        m.clone()
                    } else {
                        format!("{m}.")
                    };
                    fun.as_str() == m || fun.starts_with(&prefix)
                }
            })
        })
        .cloned()
        .collect()
}

fn list_modules<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let sel = patterns(c);
        let mods: Vec<String> = c
            .registry
            .modules()
            .into_iter()
            .filter(|m| sel.is_empty() || sel.iter().any(|p| glob_match(p, m)))
            .collect();
        Ok(Outcome::ok(json!(mods)))
    })
}

fn list_functions<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let funs = selected(&c.registry.functions(), &patterns(c));
        Ok(Outcome::ok(json!(funs)))
    })
}

fn doc<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let docs: Map<String, Value> = selected(&c.registry.functions(), &patterns(c))
            .into_iter()
            .map(|f| {
                let d = c.registry.doc(&f).unwrap_or_default();
                (f, Value::String(d.to_string()))
            })
            .collect();
        Ok(Outcome::ok(Value::Object(docs)))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::run;
    use super::super::Registry;
    use serde_json::json;

    #[tokio::test]
    async fn list_modules_with_and_without_globs() {
        let o = run("sys.list_modules", vec![], json!({})).await;
        assert_eq!(
            o.ret,
            json!([
                "cmd", "cp", "grains", "key", "pillar", "pkg", "saltutil", "service", "sys", "test"
            ])
        );
        let o = run("sys.list_modules", vec![json!("s*")], json!({})).await;
        assert_eq!(o.ret, json!(["saltutil", "service", "sys"]));
    }

    #[tokio::test]
    async fn list_functions_selects_like_salt() {
        let all = run("sys.list_functions", vec![], json!({})).await;
        assert_eq!(all.ret, json!(Registry::new().functions()));
        let o = run("sys.list_functions", vec![json!("sys")], json!({})).await;
        assert_eq!(
            o.ret,
            json!(["sys.doc", "sys.list_functions", "sys.list_modules"])
        );
        let o = run("sys.list_functions", vec![json!("sys.list_*")], json!({})).await;
        assert_eq!(o.ret, json!(["sys.list_functions", "sys.list_modules"]));
        let o = run(
            "sys.list_functions",
            vec![json!("cmd."), json!("key")],
            json!({}),
        )
        .await;
        assert_eq!(
            o.ret,
            json!([
                "cmd.retcode",
                "cmd.run",
                "cmd.run_all",
                "cmd.script",
                "key.finger"
            ])
        );
        let o = run("sys.list_functions", vec![json!("sy")], json!({})).await;
        assert_eq!(o.ret, json!([]));
    }

    #[tokio::test]
    async fn doc_returns_fun_to_docstring() {
        let o = run("sys.doc", vec![json!("test.ping")], json!({})).await;
        let m = o.ret.as_object().expect("dict");
        assert_eq!(m.len(), 1);
        assert!(m["test.ping"]
            .as_str()
            .expect("s")
            .contains("salt '*' test.ping"));
        let o = run("sys.doc", vec![json!("grains")], json!({})).await;
        assert_eq!(o.ret.as_object().expect("dict").len(), 4);
        let o = run("sys.doc", vec![], json!({})).await;
        assert_eq!(
            o.ret.as_object().expect("dict").len(),
            Registry::new().functions().len()
        );
    }
}
