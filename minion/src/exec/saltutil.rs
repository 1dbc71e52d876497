//! The `saltutil` module: job control, grain and pillar refresh
//! (`saltutil.running`, `saltutil.find_job`, `saltutil.kill_job`,
//! `saltutil.sync_grains`, `saltutil.refresh_grains`,
//! `saltutil.refresh_pillar`).
//!
//! Job control reads [`RunningJobs`](crate::running::RunningJobs); like Salt,
//! a job never lists itself. A grain refresh re-collects grains, replaces the
//! live grains in one write and then tells the master (when there is one), so
//! the master never hears of grains the minion does not have. A pillar
//! refresh asks the master for a freshly compiled pillar (the master keeps
//! it for pillar targeting) and replaces the one in memory; a failed one
//! leaves it as it was.

use super::{opt, req, Call, CallFuture, ExecError, Function, MinionEvent, Outcome};
use brine_common::sync::write;
use serde_json::{json, Value};

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "saltutil.running",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Return the data on all running salt processes on the minion\n\n\
              CLI Example:\n\n    salt '*' saltutil.running\n",
        handler: running,
    },
    Function {
        name: "saltutil.find_job",
        params: &[req("jid")],
        varargs: false,
        kwargs: false,
        doc: "Return the data for a specific job id that is currently running, or an\n\
              empty dict if it is not running.\n\n\
              jid\n    The job id to search for and return data.\n\n\
              CLI Example:\n\n    salt '*' saltutil.find_job <job id>\n",
        handler: find_job,
    },
    Function {
        name: "saltutil.kill_job",
        params: &[req("jid")],
        varargs: false,
        kwargs: false,
        doc: "Sends a kill signal (SIGKILL 9) to the named salt job's process; its\n\
              child processes are killed with it.\n\n\
              CLI Example:\n\n    salt '*' saltutil.kill_job <job id>\n",
        handler: kill_job,
    },
    Function {
        name: "saltutil.sync_grains",
        params: &[
            opt("saltenv"),
            opt("refresh"),
            opt("extmod_whitelist"),
            opt("extmod_blacklist"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Sync custom grain modules and refresh the grains (unless\n\
              ``refresh=False``). Brine has no custom grain modules, so the list of\n\
              synced modules is always empty.\n\n\
              CLI Example:\n\n    salt '*' saltutil.sync_grains\n",
        handler: sync_grains,
    },
    Function {
        name: "saltutil.sync_all",
        params: &[
            opt("saltenv"),
            opt("refresh"),
            opt("extmod_whitelist"),
            opt("extmod_blacklist"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Sync everything syncable and refresh grains and pillar (unless\n\
              ``refresh=False``). Brine's modules (execution, state, grains) are built\n\
              into the minion, not files under ``_modules``/``_states``/``_grains``, so\n\
              every list of synced modules is empty; the refresh is what remains.\n\n\
              CLI Example:\n\n    salt '*' saltutil.sync_all\n",
        handler: sync_all,
    },
    Function {
        name: "saltutil.sync_modules",
        params: &[opt("saltenv"), opt("refresh")],
        varargs: false,
        kwargs: false,
        doc: "Sync custom execution modules. Brine's are built in, so the list is empty.\n\n\
              CLI Example:\n\n    salt '*' saltutil.sync_modules\n",
        handler: sync_nothing,
    },
    Function {
        name: "saltutil.sync_states",
        params: &[opt("saltenv"), opt("refresh")],
        varargs: false,
        kwargs: false,
        doc: "Sync custom state modules. Brine's are built in, so the list is empty.\n\n\
              CLI Example:\n\n    salt '*' saltutil.sync_states\n",
        handler: sync_nothing,
    },
    Function {
        name: "saltutil.refresh_grains",
        params: &[],
        varargs: false,
        kwargs: true,
        doc: "Refresh the minion's grains: collect them again, keep them for targeting\n\
              and send them to the master. Returns ``True``.\n\n\
              CLI Example:\n\n    salt '*' saltutil.refresh_grains\n",
        handler: refresh_grains,
    },
    Function {
        name: "saltutil.refresh_pillar",
        params: &[opt("wait"), opt("timeout"), opt("clean_cache")],
        varargs: false,
        kwargs: true,
        doc: "Ask the master for a freshly compiled pillar and keep it in memory (the\n\
              master keeps it too, for pillar targeting). Returns ``True``; the\n\
              refresh is done when the call returns, so ``wait`` is accepted and has\n\
              nothing to wait for. A failed refresh is an error and leaves the pillar\n\
              as it was.\n\n\
              CLI Example:\n\n    salt '*' saltutil.refresh_pillar\n",
        handler: refresh_pillar,
    },
];

fn running<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let jobs: Vec<_> = c
            .ctx
            .running
            .list()
            .into_iter()
            .filter(|j| j.jid != c.ctx.jid)
            .collect();
        Ok(Outcome::ok(json!(jobs)))
    })
}

fn jid_arg(c: &Call<'_>) -> Result<String, ExecError> {
    c.str_arg("jid")?
        .ok_or_else(|| ExecError::InvalidArgs("jid must be given".into()))
}

fn find_job<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let jid = jid_arg(c)?;
        let found = c.ctx.running.find(&jid).filter(|j| j.jid != c.ctx.jid);
        Ok(Outcome::ok(match found {
            Some(info) => json!(info),
            None => json!({}),
        }))
    })
}

fn kill_job<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let jid = jid_arg(c)?;
        let target = c.ctx.running.find(&jid).filter(|j| j.jid != c.ctx.jid);
        let ret = match target {
            Some(info) if c.ctx.running.kill(&jid) => {
                tracing::info!(jid = %jid, by = %c.ctx.jid, "job killed");
                format!("Signal 9 sent to job {jid} at pid {}", info.pid)
            }
            _ => String::new(),
        };
        Ok(Outcome::ok(Value::String(ret)))
    })
}

/// Collect grains again, store them and tell the master.
pub async fn refresh(c: &Call<'_>) -> Result<Value, ExecError> {
    let id = c.ctx.id.clone();
    let (statics, file) = (c.ctx.static_grains.clone(), c.ctx.grains_file.clone());
    let fresh = tokio::task::spawn_blocking(move || {
        crate::grains::collect_with_file(&id, &statics, file.as_deref())
    })
    .await
    .map_err(|e| ExecError::Execution(format!("grain collection failed: {e}")))?;
    *write(&c.ctx.grains) = fresh.clone();
    if let Some(tx) = &c.ctx.events {
        if tx.send(MinionEvent::GrainsChanged(fresh.clone())).is_err() {
            tracing::warn!(jid = %c.ctx.jid, "grains refreshed but the master link is gone");
        }
    }
    Ok(fresh)
}

fn sync_grains<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        if c.bool_arg("refresh", true)? {
            refresh(c).await?;
        }
        Ok(Outcome::ok(json!([])))
    })
}

/// The kinds `saltutil.sync_all` reports, as Salt lists them.
const SYNC_KINDS: &[&str] = &[
    "beacons",
    "clouds",
    "engines",
    "executors",
    "grains",
    "log_handlers",
    "matchers",
    "modules",
    "output",
    "pillar",
    "proxymodules",
    "renderers",
    "returners",
    "sdb",
    "serializers",
    "states",
    "thorium",
    "utils",
    "wrapper",
];

fn sync_all<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        if c.bool_arg("refresh", true)? {
            refresh(c).await?;
            if c.ctx.files.has_master() {
                c.ctx
                    .pillar
                    .refresh()
                    .await
                    .map_err(|e| ExecError::Execution(format!("pillar refresh failed: {e}")))?;
            }
        }
        let all: serde_json::Map<String, serde_json::Value> = SYNC_KINDS
            .iter()
            .map(|k| (k.to_string(), json!([])))
            .collect();
        Ok(Outcome::ok(serde_json::Value::Object(all)))
    })
}

fn sync_nothing<'a>(_c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move { Ok(Outcome::ok(json!([]))) })
}

fn refresh_grains<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        refresh(c).await?;
        Ok(Outcome::ok(json!(true)))
    })
}

fn refresh_pillar<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        c.ctx
            .pillar
            .refresh()
            .await
            .map_err(|e| ExecError::Execution(format!("pillar refresh failed: {e}")))?;
        tracing::info!(jid = %c.ctx.jid, "pillar refreshed");
        Ok(Outcome::ok(json!(true)))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::ctx;
    use super::super::{MinionEvent, Registry};
    use crate::running::RunningInfo;
    use serde_json::json;
    use std::time::{Duration, Instant};
    use tokio_util::sync::CancellationToken;

    fn info(jid: &str, fun: &str) -> RunningInfo {
        RunningInfo {
            jid: jid.parse().expect("jid"),
            fun: fun.into(),
            arg: vec![json!(30)],
            pid: 4242,
            tgt: "*".into(),
            tgt_type: "glob".into(),
            user: "root".into(),
            start: jid.into(),
        }
    }

    #[tokio::test]
    async fn running_and_find_job_skip_the_asking_job() {
        let c = ctx("saltutil.running", vec![], json!({}));
        c.running.insert(
            info("20250101000000000111", "test.sleep"),
            CancellationToken::new(),
        );
        c.running
            .insert(info(&c.jid, "saltutil.running"), CancellationToken::new());
        let running = c.running.clone();
        let reg = Registry::new();
        let o = reg.call(c).await;
        assert_eq!(o.ret.as_array().map(Vec::len), Some(1));
        assert_eq!(o.ret[0]["jid"], "20250101000000000111");
        assert_eq!(o.ret[0]["fun"], "test.sleep");
        assert_eq!(o.ret[0]["pid"], 4242);

        let mut c = ctx(
            "saltutil.find_job",
            vec![json!("20250101000000000111")],
            json!({}),
        );
        c.running = running.clone();
        let o = reg.call(c).await;
        assert_eq!(o.ret["jid"], "20250101000000000111");
        assert_eq!(o.ret["tgt_type"], "glob");

        let mut c = ctx("saltutil.find_job", vec![json!("999")], json!({}));
        c.running = running;
        assert_eq!(reg.call(c).await.ret, json!({}));
    }

    #[tokio::test]
    async fn kill_job_stops_a_running_sleep() {
        let reg = Registry::new();
        let sleeper = ctx("test.sleep", vec![json!(30)], json!({}));
        let sleeper_jid = "20250101000000000009".to_string();
        let running = sleeper.running.clone();
        running.insert(info(&sleeper_jid, "test.sleep"), sleeper.cancel.clone());

        let mut killer = ctx(
            "saltutil.kill_job",
            vec![json!(sleeper_jid.clone())],
            json!({}),
        );
        killer.running = running.clone();
        let started = Instant::now();
        let (slept, killed) = tokio::join!(reg.call(sleeper), async {
            tokio::task::yield_now().await;
            reg.call(killer).await
        });
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            killed.ret,
            json!(format!("Signal 9 sent to job {sleeper_jid} at pid 4242"))
        );
        assert!(!slept.success);
        assert_eq!(slept.ret, json!("ERROR: job was cancelled"));

        let mut again = ctx("saltutil.kill_job", vec![json!("nope")], json!({}));
        again.running = running;
        assert_eq!(reg.call(again).await.ret, json!(""));
    }

    #[tokio::test]
    async fn refresh_grains_stores_and_announces() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut c = ctx("saltutil.refresh_grains", vec![], json!({}));
        c.events = Some(tx);
        c.static_grains = json!({"role": "db"});
        let grains = c.grains.clone();
        let o = Registry::new().call(c).await;
        assert_eq!(o.ret, json!(true));
        let live = grains.read().expect("lock").clone();
        assert_eq!(live["role"], "db");
        assert_eq!(live["id"], "m1");
        assert!(live["kernel"].is_string());
        match rx.try_recv() {
            Ok(MinionEvent::GrainsChanged(g)) => assert_eq!(g, live),
            other => panic!("expected a grains event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn refresh_pillar_stores_or_keeps_the_old_one() {
        use crate::files::{fake::FakeMaster, Ask};
        use brine_common::proto::{Refusal, ReplyBody};
        use std::sync::Arc;
        let m = Arc::new(FakeMaster::default());
        m.pillars
            .lock()
            .expect("lock")
            .push_back(ReplyBody::Pillar(json!({"role": "web"})));
        m.pillars
            .lock()
            .expect("lock")
            .push_back(ReplyBody::Refused(Refusal::Unavailable("down".into())));
        let asker: Arc<dyn Ask> = m;
        let pillar = Arc::new(crate::pillar::Pillar::new(
            Some(asker),
            None,
            "m1",
            None,
            1 << 20,
        ));
        let mut c = ctx("saltutil.refresh_pillar", vec![], json!({}));
        c.pillar = pillar.clone();
        let o = Registry::new().call(c).await;
        assert_eq!(o.ret, json!(true));
        assert_eq!(pillar.snapshot(), json!({"role": "web"}));
        let mut c = ctx("saltutil.refresh_pillar", vec![], json!({"wait": true}));
        c.pillar = pillar.clone();
        let o = Registry::new().call(c).await;
        assert!(!o.success);
        assert_eq!(
            o.ret,
            json!("ERROR: pillar refresh failed: the master refused the pillar: down")
        );
        assert_eq!(pillar.snapshot(), json!({"role": "web"}), "kept");
    }

    #[tokio::test]
    async fn sync_all_lists_every_kind_empty() {
        let o = Registry::new()
            .call(ctx("saltutil.sync_all", vec![], json!({"refresh": false})))
            .await;
        assert_eq!(o.ret["states"], json!([]));
        assert_eq!(o.ret.as_object().map(|m| m.len()), Some(19));
        let o = Registry::new()
            .call(ctx("saltutil.sync_states", vec![], json!({})))
            .await;
        assert_eq!(o.ret, json!([]));
    }

    #[tokio::test]
    async fn sync_grains_refreshes_unless_told_not_to() {
        let c = ctx("saltutil.sync_grains", vec![], json!({}));
        let grains = c.grains.clone();
        let o = Registry::new().call(c).await;
        assert_eq!(o.ret, json!([]));
        assert!(grains.read().expect("lock")["kernel"].is_string());

        let c = ctx("saltutil.sync_grains", vec![], json!({"refresh": false}));
        let grains = c.grains.clone();
        let o = Registry::new().call(c).await;
        assert!(o.success);
        assert!(grains.read().expect("lock").get("kernel").is_none());
    }
}
