//! The `jobs` runner: what the job cache knows about jobs
//! (`jobs.lookup_jid`, `list_job`, `list_jobs`, `exit_success`) and what
//! the minions are running now (`jobs.active`, which publishes
//! `saltutil.running`).

use super::{Call, Function, RunFuture, RunnerError};
use crate::job_cache::{JobFilter, JobRecord};
use crate::state::MasterState;
use brine_common::jid::Jid;
use brine_common::proto::client::PublishRequest;
use brine_common::proto::TargetType;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "jobs.active",
        doc: "Return a report on all actively running jobs from a job id centric\n\
              perspective (asks every minion with saltutil.running).\n\n\
              CLI Example:\n\n    salt-run jobs.active\n",
        run: active,
    },
    Function {
        name: "jobs.exit_success",
        doc: "Check if a job has been executed and exit successfully: for each\n\
              expected minion, whether it returned a true value without failing.\n\n\
              CLI Example:\n\n    salt-run jobs.exit_success 20160520145827701627\n",
        run: exit_success,
    },
    Function {
        name: "jobs.list_job",
        doc: "List a specific job given by its jid: its load, expected minions\n\
              and returns.\n\n\
              CLI Example:\n\n    salt-run jobs.list_job 20130916125524463507\n",
        run: list_job,
    },
    Function {
        name: "jobs.list_jobs",
        doc: "List all detectable jobs and associated functions (search_function,\n\
              search_target and limit narrow the list).\n\n\
              CLI Example:\n\n    salt-run jobs.list_jobs search_function='test.*'\n",
        run: list_jobs,
    },
    Function {
        name: "jobs.lookup_jid",
        doc: "Return the printout from a previously executed job (missing=True\n\
              also names the minions that did not return).\n\n\
              CLI Example:\n\n    salt-run jobs.lookup_jid 20130916125524463507\n",
        run: lookup_jid,
    },
];

/// Commit pending writes and read one job, on a blocking thread (SQLite
/// must not stall the async workers).
async fn stored_job(state: &Arc<MasterState>, jid: Jid) -> Result<Option<JobRecord>, RunnerError> {
    let cache = state.jobs().clone();
    let rec = tokio::task::spawn_blocking(move || {
        cache.flush()?;
        cache.lookup_jid(&jid)
    })
    .await??;
    Ok(rec)
}

fn lookup_jid<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move {
        let jid = c.need_jid(0)?;
        let Some(rec) = stored_job(c.state, jid).await? else {
            return Ok(json!({}));
        };
        let mut out = Map::new();
        for (id, r) in &rec.returns {
            out.insert(id.clone(), r.ret.clone());
        }
        if c.flag("missing") {
            for id in &rec.minions {
                if !rec.returns.contains_key(id) {
                    out.insert(id.clone(), json!("Minion did not return. [No response]"));
                }
            }
        }
        Ok(Value::Object(out))
    })
}

fn list_jobs<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move {
        let filter = JobFilter {
            search_function: c.str_arg(usize::MAX, "search_function"),
            search_target: c.str_arg(usize::MAX, "search_target"),
            limit: c
                .kwargs
                .get("limit")
                .and_then(Value::as_u64)
                .map(|n| n as usize),
        };
        let cache = c.state.jobs().clone();
        let jobs = tokio::task::spawn_blocking(move || {
            cache.flush()?;
            cache.list_jobs(&filter)
        })
        .await??;
        let mut out = Map::new();
        for j in jobs {
            out.insert(
                j.jid.to_string(),
                json!({
                    "Function": j.function,
                    "Arguments": j.arguments,
                    "Target": j.target,
                    "Target-type": j.target_type,
                    "User": j.user,
                    "StartTime": j.start_time,
                }),
            );
        }
        Ok(Value::Object(out))
    })
}

fn list_job<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move {
        let jid = c.need_jid(0)?;
        let Some(rec) = stored_job(c.state, jid.clone()).await? else {
            return Ok(json!({}));
        };
        let mut result = Map::new();
        for (id, r) in &rec.returns {
            result.insert(
                id.clone(),
                json!({"return": r.ret, "retcode": r.retcode, "success": r.success}),
            );
        }
        Ok(json!({
            "jid": jid,
            "Function": rec.load.fun,
            "Arguments": rec.load.arg,
            "Target": rec.load.tgt,
            "Target-type": rec.load.tgt_type.as_str(),
            "User": rec.load.user,
            "StartTime": rec.start_time,
            "Minions": rec.minions,
            "Result": result,
        }))
    })
}

fn exit_success<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move {
        let jid = c.need_jid(0)?;
        let Some(rec) = stored_job(c.state, jid).await? else {
            return Ok(json!({}));
        };
        let mut out = Map::new();
        for id in &rec.minions {
            // Salt's rule (a truthy return), and the job must not have
            // failed either.
            let ok = rec
                .returns
                .get(id)
                .is_some_and(|r| r.success && r.retcode == 0 && truthy(&r.ret));
            out.insert(id.clone(), json!(ok));
        }
        Ok(Value::Object(out))
    })
}

/// Python's truth value of a return (`False`, `None`, `0`, `""`, `[]`,
/// `{}` are false).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `jobs.active`: ask every minion what it runs (saltutil.running).
fn active<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move {
        let state = c.state;
        let req = PublishRequest {
            tgt: "*".into(),
            tgt_type: TargetType::Glob,
            fun: "saltutil.running".into(),
            arg: vec![],
            kwarg: BTreeMap::new(),
            timeout: state.cfg().timeout,
            user: "root".into(),
            delimiter: ":".into(),
            trace: false,
        };
        let target = state.parse_target(&req.tgt, req.tgt_type, &req.delimiter)?;
        let (published, rx) = state.publish_async(req, target, true).await?;
        let Some(mut rx) = rx else {
            return Ok(json!({}));
        };
        let mut pending: HashSet<String> = published
            .minions
            .iter()
            .filter(|m| m.connected)
            .map(|m| m.id.clone())
            .collect();
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(state.cfg().timeout.max(1));
        let mut jobs: BTreeMap<String, Value> = BTreeMap::new();
        while !pending.is_empty() {
            let ret = tokio::select! {
                r = rx.recv() => r,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let Some(ret) = ret else { break };
            pending.remove(&ret.id);
            let Value::Array(list) = &ret.ret else {
                continue;
            };
            for j in list {
                let Some(jid) = j.get("jid").and_then(Value::as_str) else {
                    continue;
                };
                if published.jid == jid {
                    continue;
                }
                let entry = jobs.entry(jid.to_string()).or_insert_with(|| {
                    json!({
                        "Function": j.get("fun").cloned().unwrap_or(Value::Null),
                        "Arguments": j.get("arg").cloned().unwrap_or(json!([])),
                        "Target": j.get("tgt").cloned().unwrap_or(Value::Null),
                        "Target-type": j.get("tgt_type").cloned().unwrap_or(Value::Null),
                        "User": j.get("user").cloned().unwrap_or(Value::Null),
                        "StartTime": j.get("start").cloned().unwrap_or(Value::Null),
                        "Running": [],
                    })
                });
                if let Some(Value::Array(r)) = entry.get_mut("Running") {
                    r.push(json!({ret.id.clone(): j.get("pid").cloned().unwrap_or(Value::Null)}));
                }
            }
        }
        Ok(serde_json::to_value(jobs).unwrap_or(Value::Null))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_is_pythons() {
        for v in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!truthy(&v), "{v} is false");
        }
        for v in [
            json!(true),
            json!(1),
            json!(-2.5),
            json!("x"),
            json!([0]),
            json!({"a": null}),
        ] {
            assert!(truthy(&v), "{v} is true");
        }
    }
}
