//! The `event` module: send an event to the master's event bus, Salt's
//! `event.send` and `event.fire_master` (a reactor on the master can act
//! on it). The event goes over the minion's link as
//! `RequestBody::Event{tag, data}` and the function waits for the master's
//! answer: `True` when it took the event, an error with the master's reason
//! when it refused it, an error when there is no master (`salt-call`,
//! which runs without the minion's link).
//!
//! `event.fire` (Salt: the minion's local event bus) is an error here: a
//! Brine minion has no local bus and nothing local would read the event;
//! the message says to use `event.send` or `event.fire_master`, so an
//! event is never silently lost.

use super::user::handler;
use super::{opt, req, Call, CallFuture, Ctx, ExecError, Function, Outcome};
use brine_common::proto::EventLoad;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Seconds `event.send` waits for the master by default (Salt's `timeout`).
const DEFAULT_TIMEOUT: f64 = 60.0;

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "event.fire",
        params: &[req("data"), req("tag"), opt("timeout")],
        varargs: false,
        kwargs: false,
        doc: "Fire an event on the local minion event bus. A Brine minion has no\n\
              local event bus: this returns an error; use event.send or\n\
              event.fire_master to send the event to the master.\n\n\
              CLI Example:\n\n    salt '*' event.fire '{\"data\":\"my event data\"}' 'tag'\n",
        handler: fire_h,
    },
    Function {
        name: "event.fire_master",
        params: &[req("data"), req("tag"), opt("preload"), opt("timeout")],
        varargs: false,
        kwargs: false,
        doc: "Fire an event off up to the master server. Returns True when the\n\
              master took it; an error with the master's reason otherwise.\n\n\
              CLI Example:\n\n    salt '*' event.fire_master '{\"data\":\"my event data\"}' 'tag'\n",
        handler: fire_master_h,
    },
    Function {
        name: "event.send",
        params: &[
            req("tag"),
            opt("data"),
            opt("preload"),
            opt("with_env"),
            opt("with_grains"),
            opt("with_pillar"),
            opt("with_env_opts"),
            opt("timeout"),
        ],
        varargs: false,
        kwargs: true,
        doc: "Send an event to the Salt Master.\n\n\
              tag\n    The tag to send with the event.\n\
              data\n    A dictionary of data to send with the event.\n\
              with_env\n    True: add the minion's environment as ``environ``; a list:\n    only those variables.\n\
              with_grains\n    True: add all grains as ``grains``; a list: only those.\n\
              with_pillar\n    True: add the pillar as ``pillar``; a list: only those keys.\n\
              with_env_opts\n    Add ``saltenv`` and ``pillarenv``.\n\
              timeout\n    Seconds to wait for the master (default 60).\n\
              Other keyword arguments are added to the data.\n\n\
              CLI Example:\n\n    salt-call event.send myco/mytag foo=Foo bar=Bar\n    \
              salt-call event.send 'myco/mytag' '{foo: Foo, bar: Bar}' with_grains=True\n",
        handler: send_h,
    },
];

fn timeout(c: &Call<'_>) -> Result<Duration, ExecError> {
    let t = c.f64_arg("timeout")?.unwrap_or(DEFAULT_TIMEOUT);
    if !(t > 0.0 && t.is_finite()) {
        return Err(ExecError::InvalidArgs(format!(
            "timeout must be a positive number of seconds, not {t}"
        )));
    }
    Ok(Duration::from_secs_f64(t.min(3600.0)))
}

/// Sends `tag` + `data` to the master over the minion's link.
pub async fn fire_master(
    ctx: &Ctx,
    tag: &str,
    data: Value,
    timeout: Duration,
) -> Result<(), ExecError> {
    if tag.trim().is_empty() {
        return Err(ExecError::InvalidArgs("tag must not be empty".into()));
    }
    let Some(master) = &ctx.master else {
        return Err(ExecError::Execution(format!(
            "{} needs the master, and this process has no connection to it (salt-call runs without the minion's link)",
            ctx.fun
        )));
    };
    let ev = EventLoad {
        tag: tag.to_string(),
        data,
    };
    crate::beacons::send_event(master.as_ref(), ev, timeout)
        .await
        .map_err(ExecError::Execution)
}

handler!(fire_h, |c| {
    let _ = c;
    Err(ExecError::Execution(
        "event.fire: this minion has no local event bus; use event.send or event.fire_master to send the event to the master".into(),
    ))
});

handler!(fire_master_h, |c| {
    let tag = c.str_arg("tag")?.unwrap_or_default();
    let data = c.arg("data").cloned().unwrap_or(Value::Null);
    fire_master(c.ctx, &tag, data, timeout(c)?).await?;
    Ok(Outcome::ok(json!(true)))
});

/// `with_grains`-style argument: `True` takes all of `source`, a list
/// (or comma-separated string) only those keys; `None` when not asked.
fn subset(
    c: &Call<'_>,
    name: &str,
    source: impl FnOnce() -> Value,
) -> Result<Option<Value>, ExecError> {
    let keys: Vec<String> = match c.arg(name) {
        None => return Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) if s.contains(',') => {
            s.split(',').map(|k| k.trim().to_string()).collect()
        }
        Some(_) => {
            return Ok(c.bool_arg(name, false)?.then(source));
        }
    };
    let all = source();
    let picked: Map<String, Value> = keys
        .into_iter()
        .filter_map(|k| all.get(&k).map(|v| (k, v.clone())))
        .collect();
    Ok(Some(Value::Object(picked)))
}

/// The data `event.send` sends: the `with_*` additions, then the extra
/// keyword arguments, then `data` (a dict) over them, as Salt merges them.
pub fn send_data(c: &Call<'_>) -> Result<Value, ExecError> {
    let mut out = Map::new();
    if let Some(env) = subset(c, "with_env", || {
        Value::Object(
            std::env::vars()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    })? {
        out.insert("environ".into(), env);
    }
    if let Some(g) = subset(c, "with_grains", || {
        brine_common::sync::read(&c.ctx.grains).clone()
    })? {
        out.insert("grains".into(), g);
    }
    if let Some(p) = subset(c, "with_pillar", || {
        brine_common::sync::read(&c.ctx.pillar.shared()).clone()
    })? {
        out.insert("pillar".into(), p);
    }
    if c.bool_arg("with_env_opts", false)? {
        out.insert(
            "saltenv".into(),
            json!(c.ctx.saltenv.clone().unwrap_or_else(|| "base".into())),
        );
        out.insert("pillarenv".into(), json!(c.ctx.pillar.pillarenv()));
    }
    out.extend(c.args.kwargs.iter().map(|(k, v)| (k.clone(), v.clone())));
    match c.arg("data") {
        None => {}
        Some(Value::Object(d)) => out.extend(d.clone()),
        Some(other) => {
            return Err(ExecError::InvalidArgs(format!(
                "data must be a dictionary, not {other}"
            )))
        }
    }
    Ok(Value::Object(out))
}

handler!(send_h, |c| {
    let tag = c.str_arg("tag")?.unwrap_or_default();
    let data = send_data(c)?;
    fire_master(c.ctx, &tag, data, timeout(c)?).await?;
    Ok(Outcome::ok(json!(true)))
});

#[cfg(test)]
mod tests {
    use super::super::testutil::ctx;
    use super::super::Registry;
    use crate::files::fake::FakeMaster;
    use brine_common::proto::{EventLoad, Refusal, RequestBody};
    use brine_common::sync::lock;
    use serde_json::{json, Value};
    use std::sync::Arc;

    async fn call(
        master: &Arc<FakeMaster>,
        fun: &str,
        args: Vec<Value>,
        kw: Value,
    ) -> super::Outcome {
        let mut c = ctx(fun, args, kw);
        c.master = Some(master.clone());
        *brine_common::sync::write(&c.grains) = json!({"id": "m1", "os": "Debian", "cpus": 2});
        Registry::new().call(c).await
    }

    fn sent(master: &FakeMaster) -> Vec<EventLoad> {
        lock(&master.asked)
            .iter()
            .filter_map(|b| match b {
                RequestBody::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn send_shapes_data_like_salt() {
        let m = Arc::new(FakeMaster::default());
        let o = call(
            &m,
            "event.send",
            vec![json!("myco/deploy/done")],
            json!({"data": {"a": 1, "foo": "from-data"}, "foo": "kw", "bar": "Bar",
                   "with_grains": ["os", "nosuch"], "with_env_opts": true, "__pub_jid": "1"}),
        )
        .await;
        assert_eq!(o.ret, json!(true), "{o:?}");
        let ev = sent(&m);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].tag, "myco/deploy/done");
        assert_eq!(
            ev[0].data,
            json!({"a": 1, "foo": "from-data", "bar": "Bar", "grains": {"os": "Debian"},
                   "saltenv": "base", "pillarenv": null})
        );

        let o = call(
            &m,
            "event.send",
            vec![json!("t")],
            json!({"with_grains": true}),
        )
        .await;
        assert!(o.success);
        assert_eq!(sent(&m)[1].data["grains"]["cpus"], 2);
        let o = call(
            &m,
            "event.send",
            vec![json!("t")],
            json!({"with_pillar": true}),
        )
        .await;
        assert!(o.success);
        assert_eq!(sent(&m)[2].data, json!({"pillar": {}}));
    }

    #[tokio::test]
    async fn fire_master_and_refusals() {
        let m = Arc::new(FakeMaster::default());
        let o = call(
            &m,
            "event.fire_master",
            vec![json!({"x": 1}), json!("my/tag")],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, json!(true));
        assert_eq!(
            sent(&m)[0],
            EventLoad {
                tag: "my/tag".into(),
                data: json!({"x": 1})
            }
        );

        let refusing = Arc::new(FakeMaster {
            refuse_event: Some(Refusal::BadEvent("tag salt/auth is the master's".into())),
            ..FakeMaster::default()
        });
        let o = call(&refusing, "event.send", vec![json!("salt/auth")], json!({})).await;
        assert!(!o.success);
        assert_eq!(
            o.ret,
            json!("ERROR: event refused: tag salt/auth is the master's")
        );

        let down = Arc::new(FakeMaster {
            down: true,
            ..FakeMaster::default()
        });
        let o = call(&down, "event.send", vec![json!("t")], json!({})).await;
        assert!(o
            .ret
            .as_str()
            .expect("s")
            .starts_with("ERROR: sending the event to the master"));

        let o = call(&m, "event.send", vec![json!("t")], json!({"data": "text"})).await;
        assert!(o
            .ret
            .as_str()
            .expect("s")
            .contains("data must be a dictionary"));
        let o = call(&m, "event.send", vec![json!("")], json!({})).await;
        assert!(o.ret.as_str().expect("s").contains("tag must not be empty"));
    }

    #[tokio::test]
    async fn without_a_master_or_a_local_bus() {
        let o = Registry::new()
            .call(ctx("event.send", vec![json!("t")], json!({})))
            .await;
        assert!(!o.success);
        let msg = o.ret.as_str().expect("s");
        assert!(msg.contains("event.send needs the master"), "{msg}");
        let o = Registry::new()
            .call(ctx("event.fire", vec![json!({}), json!("t")], json!({})))
            .await;
        assert!(o.ret.as_str().expect("s").contains("no local event bus"));
    }
}
