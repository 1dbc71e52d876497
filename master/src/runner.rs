//! Master-side runner functions for `salt-run`: the jobs runner (reads the
//! job cache) and the manage runner (reads the roster; presence comes from
//! heartbeats and syndic reports, so nothing is published to answer
//! `manage.up`/`down`). As in Salt, "down" is every accepted key that does
//! not answer, including minions the roster has never seen.

use crate::job_cache::JobFilter;
use crate::keys::KeyState;
use crate::roster::Expected;
use crate::state::MasterState;
use brine_common::proto::client::PublishRequest;
use brine_common::proto::TargetType;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

type Kw = BTreeMap<String, Value>;

fn arg_str(args: &[Value], kwargs: &Kw, pos: usize, name: &str) -> Option<String> {
    kwargs.get(name).or_else(|| args.get(pos)).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn flag(kwargs: &Kw, name: &str) -> bool {
    match kwargs.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "1"),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0) != 0,
        _ => false,
    }
}

/// Every runner function, for `salt-run -d` style listings and errors.
pub const FUNCTIONS: &[&str] = &[
    "jobs.active",
    "jobs.exit_success",
    "jobs.list_job",
    "jobs.list_jobs",
    "jobs.lookup_jid",
    "manage.down",
    "manage.list_syndics",
    "manage.not_present",
    "manage.present",
    "manage.stats",
    "manage.status",
    "manage.up",
    "manage.versions",
];

/// Run one runner function; the error text is shown to the operator.
pub async fn run(
    state: &Arc<MasterState>,
    fun: &str,
    args: &[Value],
    kwargs: &Kw,
) -> Result<Value, String> {
    let need_jid = || arg_str(args, kwargs, 0, "jid").ok_or_else(|| format!("{fun} needs a jid"));
    match fun {
        "jobs.lookup_jid" => {
            let jid = need_jid()?;
            let rec = stored_job(state, jid).await?;
            let Some(rec) = rec else { return Ok(json!({})) };
            let mut out = Map::new();
            for (id, r) in &rec.returns {
                out.insert(id.clone(), r.ret.clone());
            }
            if flag(kwargs, "missing") {
                for id in &rec.minions {
                    if !rec.returns.contains_key(id) {
                        out.insert(id.clone(), json!("Minion did not return. [No response]"));
                    }
                }
            }
            Ok(Value::Object(out))
        }
        "jobs.list_jobs" => {
            let filter = JobFilter {
                search_function: arg_str(args, kwargs, usize::MAX, "search_function"),
                search_target: arg_str(args, kwargs, usize::MAX, "search_target"),
                limit: kwargs
                    .get("limit")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize),
            };
            let cache = state.jobs().clone();
            let jobs = tokio::task::spawn_blocking(move || {
                cache.flush()?;
                cache.list_jobs(&filter)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let mut out = Map::new();
            for j in jobs {
                out.insert(
                    j.jid.clone(),
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
        }
        "jobs.list_job" => {
            let jid = need_jid()?;
            let Some(rec) = stored_job(state, jid.clone()).await? else {
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
        }
        "jobs.exit_success" => {
            let jid = need_jid()?;
            let Some(rec) = stored_job(state, jid.clone()).await? else {
                return Ok(json!({}));
            };
            let mut out = Map::new();
            for id in &rec.minions {
                // Salt's rule (a truthy return), and the job must not
                // have failed either.
                let ok = rec
                    .returns
                    .get(id)
                    .is_some_and(|r| r.success && r.retcode == 0 && truthy(&r.ret));
                out.insert(id.clone(), json!(ok));
            }
            Ok(Value::Object(out))
        }
        "jobs.active" => active(state).await,
        "match.expected" => {
            let tgt = arg_str(args, kwargs, 0, "tgt").ok_or("match.expected needs tgt")?;
            let tt: TargetType = serde_json::from_value(
                kwargs
                    .get("tgt_type")
                    .cloned()
                    .unwrap_or(Value::String("glob".into())),
            )
            .map_err(|e| format!("bad tgt_type: {e}"))?;
            let delim =
                arg_str(args, kwargs, usize::MAX, "delimiter").unwrap_or_else(|| ":".into());
            let (minions, missing) = state
                .expected(&tgt, tt, &delim)
                .map_err(|e| e.to_string())?;
            Ok(json!({"minions": minions, "missing": missing}))
        }
        "manage.up" | "manage.present" => Ok(json!(ids(state, true))),
        "manage.down" | "manage.not_present" => {
            let down = down_ids(state)?;
            if fun == "manage.down" && flag(kwargs, "removekeys") {
                for id in &down {
                    if let Err(e) = state.keys().delete(id) {
                        return Err(format!("could not delete the key of {id}: {e}"));
                    }
                }
                state.rotate_publish_key(&down);
            }
            Ok(json!(down))
        }
        "manage.status" => Ok(json!({"up": ids(state, true), "down": down_ids(state)?})),
        "manage.versions" => {
            let mine = env!("CARGO_PKG_VERSION");
            let mut groups: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
            let presence = state.roster().presence();
            for m in &presence {
                let v = state.roster().grains(&m.id).and_then(|g| {
                    g.get("saltversion")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
                let group = match (&v, m.connected) {
                    (_, false) => "Minion offline",
                    (None, true) => "Minion did not return",
                    (Some(v), true) if v.as_str() == mine => "Up to date",
                    (Some(v), true) if version_lt(v, mine) => "Minion requires update",
                    _ => "Minion newer than master",
                };
                // Salt shows `false` as the version of an offline minion.
                let shown = match v {
                    Some(v) if m.connected => json!(v),
                    _ if !m.connected => json!(false),
                    _ => json!(""),
                };
                groups.entry(group).or_default().insert(m.id.clone(), shown);
            }
            // Accepted minions that never signed in are offline too.
            for id in never_seen(state, &presence)? {
                groups
                    .entry("Minion offline")
                    .or_default()
                    .insert(id, json!(false));
            }
            let mut out = Map::new();
            out.insert("Master".into(), json!(mine));
            for (k, v) in groups {
                out.insert(k.into(), Value::Object(v));
            }
            Ok(Value::Object(out))
        }
        "manage.list_syndics" => {
            let mut out = Map::new();
            for s in state.roster().syndics() {
                out.insert(
                    s.id.clone(),
                    json!({
                        "link": if s.connected { "up" } else { "down" },
                        "roster_known": s.roster_known,
                        "minions": s.minions,
                        "connected_minions": s.connected_minions,
                        "claims_refused": s.claims_refused,
                        "conflicts": s.conflicts,
                    }),
                );
            }
            Ok(Value::Object(out))
        }
        "manage.stats" => {
            let mut v = serde_json::to_value(state.counters()).map_err(|e| e.to_string())?;
            if let Value::Object(m) = &mut v {
                m.insert(
                    "publishes_dropped_hwm".into(),
                    json!(state.publisher().dropped()),
                );
                let subs = &state.publisher().subscriptions;
                m.insert(
                    "subscriptions_refused".into(),
                    json!(subs.refused.load(std::sync::atomic::Ordering::Relaxed)),
                );
                m.insert(
                    "publish_peers_dropped".into(),
                    json!(subs
                        .peers_dropped
                        .load(std::sync::atomic::Ordering::Relaxed)),
                );
                m.insert(
                    "request_peers_dropped".into(),
                    json!(state.request_peers_dropped()),
                );
                m.insert(
                    "job_cache".into(),
                    serde_json::to_value(state.jobs().stats()).unwrap_or(Value::Null),
                );
            }
            Ok(v)
        }
        other => Err(format!(
            "'{other}' is not available. Runner functions: {}",
            FUNCTIONS.join(", ")
        )),
    }
}

/// Commit pending writes and read one job, on a blocking thread (SQLite
/// must not stall the async workers).
async fn stored_job(
    state: &Arc<MasterState>,
    jid: String,
) -> Result<Option<crate::job_cache::JobRecord>, String> {
    let cache = state.jobs().clone();
    tokio::task::spawn_blocking(move || {
        cache.flush()?;
        cache.lookup_jid(&jid)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

fn ids(state: &MasterState, up: bool) -> Vec<String> {
    state
        .roster()
        .presence()
        .into_iter()
        .filter(|m| m.connected == up)
        .map(|m| m.id)
        .collect()
}

/// Down minions as Salt counts them: every accepted key that does not
/// answer. The roster knows who is connected; an accepted key whose minion
/// never signed in (since the roster was last saved) is down as well.
fn down_ids(state: &MasterState) -> Result<Vec<String>, String> {
    let presence = state.roster().presence();
    let mut down: BTreeSet<String> = presence
        .iter()
        .filter(|m| !m.connected)
        .map(|m| m.id.clone())
        .collect();
    down.extend(never_seen(state, &presence)?);
    Ok(down.into_iter().collect())
}

/// Accepted keys (not syndics) of minions the roster has never seen.
fn never_seen(state: &MasterState, presence: &[Expected]) -> Result<Vec<String>, String> {
    let known: HashSet<&str> = presence.iter().map(|m| m.id.as_str()).collect();
    let keys = state
        .keys()
        .list()
        .map_err(|e| format!("cannot list keys: {e}"))?;
    Ok(keys
        .get(KeyState::Accepted)
        .iter()
        .filter(|id| !known.contains(id.as_str()) && !state.roster().is_syndic(id))
        .cloned()
        .collect())
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

fn version_lt(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) < parse(b)
}

/// `jobs.active`: ask every minion what it runs (saltutil.running).
async fn active(state: &Arc<MasterState>) -> Result<Value, String> {
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
    let (published, rx) = state
        .publish_async(req, true)
        .await
        .map_err(|e| e.to_string())?;
    let Some(mut rx) = rx else {
        return Ok(json!({}));
    };
    let mut pending: std::collections::HashSet<String> = published
        .minions
        .iter()
        .filter(|m| m.connected)
        .map(|m| m.id.clone())
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(state.cfg().timeout.max(1));
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
            if jid == published.jid {
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

    #[test]
    fn versions_compare_numerically() {
        assert!(version_lt("0.1.9", "0.1.10"));
        assert!(!version_lt("0.2.0", "0.1.10"));
        assert!(!version_lt("0.1.0", "0.1.0"));
    }
}
