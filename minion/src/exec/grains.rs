//! The `grains` module: read this minion's grains (`grains.items`,
//! `grains.get`, `grains.item`, `grains.ls`).
//!
//! Reads only: it takes the live grains under a read lock and never holds the
//! lock across an await. Refreshing lives in `saltutil`.

use super::{opt, req, Call, CallFuture, Function, Outcome};
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
