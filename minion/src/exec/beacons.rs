//! The `beacons` module: show and change the running beacons (Salt's
//! `beacons.list`, `add`, `modify`, `delete`, `enable`, `disable`,
//! `enable_beacon`, `disable_beacon`, `save`, `list_available`). Changes
//! apply to the minion's beacon loop at once (it reads the same
//! [`crate::beacons::Beacons`]); only `beacons.save` makes them outlive a
//! restart, by writing `<config dir>/minion.d/beacons.conf`. Beacons from
//! the pillar are listed but not changed here. Results are Salt's
//! `{comment, result}`; `test=True` says what would change and changes
//! nothing.

use super::user::handler;
use super::{opt, req, Call, CallFuture, ExecError, Function, Outcome};
use crate::beacons::{Change, AVAILABLE};
use serde_json::{json, Value};

const fn f(
    name: &'static str,
    params: &'static [super::Param],
    doc: &'static str,
    handler: super::Handler,
) -> Function {
    Function {
        name,
        params,
        varargs: false,
        kwargs: true,
        doc,
        handler,
    }
}

pub(super) const FUNCTIONS: &[Function] = &[
    f(
        "beacons.list",
        &[opt("return_yaml"), opt("include_pillar"), opt("include_opts")],
        "List the beacons currently configured on the minion (pillar's and the\n\
         config's; the config's win per name), as YAML unless return_yaml=False.\n\n\
         CLI Example:\n\n    salt '*' beacons.list\n",
        list_h,
    ),
    f(
        "beacons.list_available",
        &[opt("return_yaml")],
        "List the beacon modules available on the minion.\n\n\
         CLI Example:\n\n    salt '*' beacons.list_available\n",
        list_available_h,
    ),
    f(
        "beacons.add",
        &[req("name"), req("beacon_data")],
        "Add a beacon on the minion (running at once; beacons.save keeps it).\n\n\
         CLI Example:\n\n    salt '*' beacons.add ps \"[{'processes': {'salt-master': 'stopped'}}]\"\n    \
         salt '*' beacons.add load \"[{'averages': {'1m': [0.0, 2.0]}}, {'interval': 10}]\"\n",
        add_h,
    ),
    f(
        "beacons.modify",
        &[req("name"), req("beacon_data")],
        "Modify an existing beacon.\n\n\
         CLI Example:\n\n    salt '*' beacons.modify memusage \"[{'percent': '80%'}]\"\n",
        modify_h,
    ),
    f(
        "beacons.delete",
        &[req("name")],
        "Delete a beacon item.\n\n\
         CLI Example:\n\n    salt '*' beacons.delete ps\n",
        delete_h,
    ),
    f(
        "beacons.enable",
        &[opt("name")],
        "Enable all beacons on the minion (or only the one named with name=).\n\n\
         CLI Example:\n\n    salt '*' beacons.enable\n",
        enable_h,
    ),
    f(
        "beacons.disable",
        &[opt("name")],
        "Disable all beacons on the minion (or only the one named with name=).\n\n\
         CLI Example:\n\n    salt '*' beacons.disable\n",
        disable_h,
    ),
    f(
        "beacons.enable_beacon",
        &[req("name")],
        "Enable one beacon on the minion.\n\n\
         CLI Example:\n\n    salt '*' beacons.enable_beacon ps\n",
        enable_one_h,
    ),
    f(
        "beacons.disable_beacon",
        &[req("name")],
        "Disable one beacon on the minion.\n\n\
         CLI Example:\n\n    salt '*' beacons.disable_beacon ps\n",
        disable_one_h,
    ),
    f(
        "beacons.reset",
        &[],
        "Reset the beacon configuration on the minion: the beacons of the\n\
         config and those added at run time stop (the pillar's stay) until\n\
         the minion restarts.\n\n\
         CLI Example:\n\n    salt '*' beacons.reset\n",
        reset_h,
    ),
    f(
        "beacons.save",
        &[],
        "Save the beacons configured on the minion (not the pillar's) to\n\
         <config dir>/minion.d/beacons.conf.\n\n\
         CLI Example:\n\n    salt '*' beacons.save\n",
        save_h,
    ),
];

fn yaml(v: &Value) -> Result<Value, ExecError> {
    serde_norway::to_string(v)
        .map(Value::String)
        .map_err(|e| ExecError::Execution(format!("cannot write YAML: {e}")))
}

/// The beacons config as listed: `{beacons: {}}` when there is none,
/// else the map, or its YAML `beacons:` document (Salt's shapes).
fn listed(items: Value, empty: bool, as_yaml: bool) -> Result<Value, ExecError> {
    if empty {
        return Ok(json!({"beacons": {}}));
    }
    if as_yaml {
        return yaml(&json!({ "beacons": items }));
    }
    Ok(items)
}

handler!(list_h, |c| {
    c.ctx.beacons.set_pillar(&c.ctx.pillar.snapshot());
    let m = c.ctx.beacons.list(
        c.bool_arg("include_pillar", true)?,
        c.bool_arg("include_opts", true)?,
    );
    let empty = m.is_empty();
    Ok(Outcome::ok(listed(
        Value::Object(m),
        empty,
        c.bool_arg("return_yaml", true)?,
    )?))
});

handler!(list_available_h, |c| {
    let names: Vec<Value> = AVAILABLE.iter().map(|n| json!(n)).collect();
    Ok(Outcome::ok(listed(
        Value::Array(names),
        AVAILABLE.is_empty(),
        c.bool_arg("return_yaml", true)?,
    )?))
});

/// `beacon_data` as given: a list or dict, or its YAML/JSON text (CLI).
fn beacon_data(c: &Call<'_>) -> Result<Value, ExecError> {
    match c.arg("beacon_data") {
        Some(Value::String(s)) => serde_norway::from_str::<Value>(s).map_err(|e| {
            ExecError::InvalidArgs(format!("beacon_data is not a list of dicts: {e}"))
        }),
        Some(v) => Ok(v.clone()),
        None => Err(ExecError::InvalidArgs("beacon_data is required".into())),
    }
}

fn name(c: &Call<'_>) -> Result<String, ExecError> {
    c.str_arg("name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ExecError::InvalidArgs("name is required".into()))
}

fn done(change: Change) -> super::CallResult {
    Ok(Outcome::ok(change.to_value()))
}

fn refresh(c: &Call<'_>) {
    c.ctx.beacons.set_pillar(&c.ctx.pillar.snapshot());
}

handler!(add_h, |c| {
    refresh(c);
    let (n, data) = (name(c)?, beacon_data(c)?);
    done(c.ctx.beacons.add(&n, &data, c.kwarg_bool("test", false)?))
});

handler!(modify_h, |c| {
    refresh(c);
    let (n, data) = (name(c)?, beacon_data(c)?);
    done(
        c.ctx
            .beacons
            .modify(&n, &data, c.kwarg_bool("test", false)?),
    )
});

handler!(delete_h, |c| {
    refresh(c);
    done(
        c.ctx
            .beacons
            .delete(&name(c)?, c.kwarg_bool("test", false)?),
    )
});

/// `beacons.enable`/`beacons.disable`: all beacons, or one with `name=`.
fn set_enabled(c: &Call<'_>, on: bool) -> super::CallResult {
    refresh(c);
    let n = c.str_arg("name")?;
    done(
        c.ctx
            .beacons
            .set_enabled(n.as_deref(), on, c.kwarg_bool("test", false)?),
    )
}

handler!(enable_h, |c| { set_enabled(c, true) });

handler!(disable_h, |c| { set_enabled(c, false) });

handler!(enable_one_h, |c| {
    refresh(c);
    let n = name(c)?;
    done(
        c.ctx
            .beacons
            .set_enabled(Some(&n), true, c.kwarg_bool("test", false)?),
    )
});

handler!(disable_one_h, |c| {
    refresh(c);
    let n = name(c)?;
    done(
        c.ctx
            .beacons
            .set_enabled(Some(&n), false, c.kwarg_bool("test", false)?),
    )
});

handler!(reset_h, |c| {
    refresh(c);
    done(c.ctx.beacons.reset(c.kwarg_bool("test", false)?))
});

handler!(save_h, |c| {
    let b = c.ctx.beacons.clone();
    let change = tokio::task::spawn_blocking(move || b.save())
        .await
        .map_err(|e| ExecError::Execution(format!("beacons.save: {e}")))?;
    done(change)
});

#[cfg(test)]
mod tests {
    use super::super::testutil::ctx;
    use super::super::{Ctx, Registry};
    use crate::beacons::Beacons;
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn with(b: &Arc<Beacons>, fun: &str, args: Vec<Value>, kw: Value) -> Ctx {
        let mut c = ctx(fun, args, kw);
        c.beacons = b.clone();
        c
    }

    async fn run_with(
        b: &Arc<Beacons>,
        pillar: &Arc<crate::pillar::Pillar>,
        fun: &str,
        args: Vec<Value>,
        kw: Value,
    ) -> Value {
        let mut c = with(b, fun, args, kw);
        c.pillar = pillar.clone();
        let o = Registry::new().call(c).await;
        assert!(o.success, "{fun}: {o:?}");
        o.ret
    }

    async fn run(b: &Arc<Beacons>, fun: &str, args: Vec<Value>, kw: Value) -> Value {
        let o = Registry::new().call(with(b, fun, args, kw)).await;
        assert!(o.success, "{fun}: {o:?}");
        o.ret
    }

    #[tokio::test]
    async fn add_list_modify_disable_delete_save() {
        let dir = tempfile::tempdir().expect("tmp");
        let save = dir.path().join("minion.d/beacons.conf");
        let b = Arc::new(Beacons::new(&json!({}), Some(save.clone()), None));
        assert_eq!(
            run(&b, "beacons.list", vec![], json!({})).await,
            json!({"beacons": {}})
        );

        let load = json!([{"averages": {"1m": [0.0, 2.0]}}, {"interval": 10}]);
        let r = run(
            &b,
            "beacons.add",
            vec![json!("load"), load.clone()],
            json!({"test": true}),
        )
        .await;
        assert_eq!(
            r,
            json!({"comment": "Beacon: load would be added.", "result": true})
        );
        assert!(b.list(true, true).is_empty(), "test=True changes nothing");
        let r = run(
            &b,
            "beacons.add",
            vec![json!("load"), load.clone()],
            json!({}),
        )
        .await;
        assert_eq!(r, json!({"comment": "Added beacon: load.", "result": true}));
        let r = run(
            &b,
            "beacons.add",
            vec![json!("load"), load.clone()],
            json!({}),
        )
        .await;
        assert_eq!(r["comment"], "Beacon load is already configured.");

        // CLI text, a bad config and an unknown module.
        let r = run(
            &b,
            "beacons.add",
            vec![
                json!("mem"),
                json!("[{beacon_module: memusage}, {percent: '63%'}]"),
            ],
            json!({}),
        )
        .await;
        assert_eq!(r["result"], true, "{r}");
        let r = run(
            &b,
            "beacons.add",
            vec![json!("memusage"), json!([{"percent": "lots"}])],
            json!({}),
        )
        .await;
        assert_eq!(r["result"], false);
        assert!(
            r["comment"].as_str().expect("s").starts_with(
                "Beacon memusage configuration invalid, not adding.\npercent must be a number"
            ),
            "{r}"
        );
        let r = run(
            &b,
            "beacons.add",
            vec![json!("ps"), json!([{"processes": {}}])],
            json!({}),
        )
        .await;
        assert_eq!(
            r,
            json!({"comment": "Beacon \"ps\" is not available.", "result": false})
        );

        let listed = run(&b, "beacons.list", vec![], json!({})).await;
        let text = listed.as_str().expect("yaml");
        assert!(text.starts_with("beacons:\n"), "{text}");
        let back: Value = serde_norway::from_str(text).expect("yaml");
        assert_eq!(back["beacons"]["load"], load);
        let map = run(&b, "beacons.list", vec![], json!({"return_yaml": false})).await;
        assert_eq!(
            map["mem"],
            json!([{"beacon_module": "memusage"}, {"percent": "63%"}])
        );

        let r = run(&b, "beacons.disable_beacon", vec![json!("load")], json!({})).await;
        assert_eq!(r["comment"], "Disabled beacon load on minion.");
        assert_eq!(b.list(true, true)["load"][2], json!({"enabled": false}));
        let r = run(&b, "beacons.enable", vec![], json!({"name": "load"})).await;
        assert_eq!(r["comment"], "Enabled beacon load on minion.");
        assert_eq!(b.list(true, true)["load"][2], json!({"enabled": true}));
        let r = run(&b, "beacons.disable", vec![], json!({})).await;
        assert_eq!(r["comment"], "Disabled beacons on minion.");
        assert_eq!(b.list(true, true)["enabled"], false);
        let r = run(&b, "beacons.enable", vec![], json!({})).await;
        assert_eq!(r["comment"], "Enabled beacons on minion.");

        let r = run(
            &b,
            "beacons.modify",
            vec![
                json!("mem"),
                json!([{"beacon_module": "memusage"}, {"percent": 80}]),
            ],
            json!({}),
        )
        .await;
        assert_eq!(r["comment"], "Modified beacon: mem.");
        let r = run(&b, "beacons.delete", vec![json!("mem")], json!({})).await;
        assert_eq!(
            r,
            json!({"comment": "Deleted beacon: mem.", "result": true})
        );
        let r = run(&b, "beacons.delete", vec![json!("mem")], json!({})).await;
        assert_eq!(r["result"], false);

        let r = run(&b, "beacons.save", vec![], json!({})).await;
        assert_eq!(
            r["comment"],
            format!("Beacons saved to {}.", save.display())
        );
        let saved: Value =
            serde_norway::from_str(&std::fs::read_to_string(&save).expect("read")).expect("yaml");
        assert_eq!(
            saved["beacons"]["load"][0],
            json!({"averages": {"1m": [0.0, 2.0]}})
        );
        assert_eq!(saved["beacons"]["enabled"], true);

        let r = run(&b, "beacons.reset", vec![], json!({"test": true})).await;
        assert_eq!(r["comment"], "Beacons would be reset.");
        assert_ne!(
            run(&b, "beacons.list", vec![], json!({"return_yaml": false})).await,
            json!({"beacons": {}})
        );
        let r = run(&b, "beacons.reset", vec![], json!({})).await;
        assert_eq!(
            r,
            json!({"comment": "Beacon configuration reset.", "result": true})
        );
        assert_eq!(
            run(&b, "beacons.list", vec![], json!({"return_yaml": false})).await,
            json!({"beacons": {}})
        );
    }

    #[tokio::test]
    async fn pillar_beacons_are_listed_not_changed() {
        let b = Arc::new(Beacons::new(
            &json!({"memusage": [{"percent": 90}]}),
            None,
            None,
        ));
        let p = ctx("x.y", vec![], json!({})).pillar;
        p.store(json!({"beacons": {"memusage": [{"percent": 10}], "load": [{"averages": {"1m": [0, 1]}}]}}));
        let r = run_with(
            &b,
            &p,
            "beacons.list",
            vec![],
            json!({"return_yaml": false}),
        )
        .await;
        assert_eq!(r["memusage"], json!([{"percent": 90}]), "config wins");
        assert_eq!(r["load"], json!([{"averages": {"1m": [0, 1]}}]));
        let r = run_with(&b, &p, "beacons.delete", vec![json!("load")], json!({})).await;
        assert_eq!(
            r["comment"],
            "Cannot delete beacon item load, it is configured in pillar."
        );
        let r = run(&b, "beacons.save", vec![], json!({})).await;
        assert_eq!(r["result"], false, "no config dir known");
    }

    #[tokio::test]
    async fn list_available() {
        let b = Arc::new(Beacons::new(&json!({}), None, None));
        let r = run(
            &b,
            "beacons.list_available",
            vec![],
            json!({"return_yaml": false}),
        )
        .await;
        assert_eq!(
            r,
            json!([
                "diskusage",
                "inotify",
                "load",
                "memusage",
                "service",
                "status"
            ])
        );
        let r = run(&b, "beacons.list_available", vec![], json!({})).await;
        assert!(r.as_str().expect("yaml").contains("- inotify\n"));
    }
}
