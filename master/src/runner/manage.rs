//! The `manage` runner: who is up or down, their versions, the syndics
//! and the master's counters. Presence comes from heartbeats and syndic
//! reports, so nothing is published to answer `manage.up`/`down`. As in
//! Salt, "down" is every accepted key that does not answer, including
//! minions the roster has never seen.

use super::{Call, Function, RunFuture, RunnerError};
use crate::keys::KeyState;
use crate::roster::Expected;
use crate::state::MasterState;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::Ordering;

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "manage.down",
        doc: "Print a list of all the down or unresponsive salt minions\n\
              (removekeys=True also deletes their keys).\n\n\
              CLI Example:\n\n    salt-run manage.down\n",
        run: down,
    },
    Function {
        name: "manage.list_syndics",
        doc: "Each syndic this master knows: its link, whether its roster is\n\
              known, its minions and refused claims.\n\n\
              CLI Example:\n\n    salt-run manage.list_syndics\n",
        run: list_syndics,
    },
    Function {
        name: "manage.not_present",
        doc: "Print a list of all minions that are NOT up according to the\n\
              master's roster.\n\n\
              CLI Example:\n\n    salt-run manage.not_present\n",
        run: not_present,
    },
    Function {
        name: "manage.present",
        doc: "Print a list of all minions that are up according to the\n\
              master's roster.\n\n\
              CLI Example:\n\n    salt-run manage.present\n",
        run: up,
    },
    Function {
        name: "manage.stats",
        doc: "The master's counters: refused, dropped and malformed traffic,\n\
              returns, publishes and the job cache.\n\n\
              CLI Example:\n\n    salt-run manage.stats\n",
        run: stats,
    },
    Function {
        name: "manage.status",
        doc: "Print the status of all known salt minions (up and down).\n\n\
              CLI Example:\n\n    salt-run manage.status\n",
        run: status,
    },
    Function {
        name: "manage.up",
        doc: "Print a list of all of the minions that are up.\n\n\
              CLI Example:\n\n    salt-run manage.up\n",
        run: up,
    },
    Function {
        name: "manage.versions",
        doc: "Check the version of active minions against the master's.\n\n\
              CLI Example:\n\n    salt-run manage.versions\n",
        run: versions,
    },
];

fn up<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move { Ok(json!(ids(c.state, true))) })
}

fn not_present<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move { Ok(json!(down_ids(c.state)?)) })
}

fn down<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move {
        let down = down_ids(c.state)?;
        if c.flag("removekeys") {
            for id in &down {
                if let Err(source) = c.state.keys().delete(id) {
                    return Err(RunnerError::DeleteKey {
                        id: id.clone(),
                        source,
                    });
                }
            }
            c.state.rotate_publish_key(&down);
        }
        Ok(json!(down))
    })
}

fn status<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move { Ok(json!({"up": ids(c.state, true), "down": down_ids(c.state)?})) })
}

fn versions<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move {
        let state = c.state;
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
    })
}

fn list_syndics<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move {
        let mut out = Map::new();
        for s in c.state.roster().syndics() {
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
    })
}

fn stats<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move { Ok(stats_of(c.state)) })
}

/// `manage.stats`: the master's counters, the publisher's and the request
/// port's drops, and the job cache's counters (`job_cache`). The metrics
/// endpoint exports the same value (`crate::metrics`).
pub(crate) fn stats_of(state: &MasterState) -> Value {
    let mut v = serde_json::to_value(state.counters()).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "publishes_dropped_hwm".into(),
            json!(state.publisher().dropped()),
        );
        let subs = &state.publisher().subscriptions;
        m.insert(
            "subscriptions_refused".into(),
            json!(subs.refused.load(Ordering::Relaxed)),
        );
        m.insert(
            "publish_peers_dropped".into(),
            json!(subs.peers_dropped.load(Ordering::Relaxed)),
        );
        m.insert(
            "request_peers_dropped".into(),
            json!(state.request_peers_dropped()),
        );
        let bus = state.events();
        for (k, c) in [
            ("events_published", &bus.published),
            ("events_dropped", &bus.dropped),
            ("events_subscriptions", &bus.subscribed),
            ("events_refused", &bus.refused),
            ("events_forwarded", &bus.forwarded),
            ("events_forward_dropped", &bus.forward_dropped),
            ("events_from_below", &bus.from_below),
            ("events_from_below_refused", &bus.from_below_refused),
        ] {
            m.insert(k.into(), json!(c.load(Ordering::Relaxed)));
        }
        m.insert("event_subscribers".into(), json!(bus.subscribers()));
        m.insert(
            "job_cache".into(),
            serde_json::to_value(state.jobs().stats()).unwrap_or(Value::Null),
        );
    }
    v
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
fn down_ids(state: &MasterState) -> Result<Vec<String>, RunnerError> {
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
fn never_seen(state: &MasterState, presence: &[Expected]) -> Result<Vec<String>, RunnerError> {
    let known: HashSet<&str> = presence.iter().map(|m| m.id.as_str()).collect();
    let keys = state.keys().list().map_err(RunnerError::ListKeys)?;
    Ok(keys
        .get(KeyState::Accepted)
        .iter()
        .filter(|id| !known.contains(id.as_str()) && !state.roster().is_syndic(id))
        .cloned()
        .collect())
}

fn version_lt(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) < parse(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_lt("0.1.9", "0.1.10"));
        assert!(!version_lt("0.2.0", "0.1.10"));
        assert!(!version_lt("0.1.0", "0.1.0"));
    }
}
