//! Pillar: compiled on the master from `pillar_roots` for one minion
//! ([`compile`]), answered to that minion only (or, through syndics,
//! sealed to its key).
//!
//! Who may ask what ([`plan`], pure):
//! - a minion asks `Pillar` for itself (the id is its session's, never the
//!   request's). A master without a master above compiles it (grains from
//!   its roster) and answers `Pillar`, which the request server seals
//!   under that minion's session key. A syndic forwards `PillarFor` (the
//!   minion's grains and its accepted key) up and passes the
//!   `SealedPillar` answer down unread; a minion without an accepted key
//!   is refused.
//! - a syndic asks `PillarFor` for a minion of its subtree: one its roster
//!   report placed behind it, or an id nobody else holds here (not in the
//!   roster, not an accepted key, not a syndic: the rule roster claims
//!   follow), whose report may still be on its way. Anything else is
//!   `NotInSubtree`. A master with a master above forwards the same
//!   question up; the top compiles with the grains given and seals the
//!   pillar to the key given ([`SealedPillar::seal`]), so the syndics in
//!   between relay it and cannot read it.
//! - a minion asking `PillarFor`, or a syndic asking `Pillar`, is refused.
//!
//! Every refusal is counted (`pillar_refused`). Compiling runs on a
//! blocking thread. A pillar too big for one frame is replaced by one
//! holding only `_errors`, saying so.

pub mod compile;

use crate::fileserver::roots::Roots;
use crate::keys::KeyStore;
use crate::state::{bump, MasterState};
use brine_common::config::MasterConfig;
use brine_common::crypto::PublicKey;
use brine_common::proto::{Refusal, ReplyBody, RequestBody, Role, SealedPillar};
use serde_json::{json, Value};
use std::sync::Arc;
use tracing::warn;

/// Room left in a frame for the reply's envelope and sealing.
const FRAME_MARGIN: usize = 64 * 1024;

/// What to do with a pillar request ([`plan`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    /// Compile the asking minion's pillar here; answer `Pillar`.
    CompileOwn {
        pillarenv: Option<String>,
    },
    /// Ask the master above for the asking minion's pillar (this master
    /// is a syndic); pass the sealed answer down.
    ForwardOwn {
        pillarenv: Option<String>,
    },
    /// Compile for a minion below a syndic and seal it to `pub_pem`.
    CompileFor(ForMinion),
    /// Pass a syndic's question further up.
    ForwardFor(ForMinion),
    Refuse(Refusal),
}

/// A `PillarFor` question.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ForMinion {
    pub(crate) id: String,
    pub(crate) grains: Value,
    pub(crate) pub_pem: String,
    pub(crate) pillarenv: Option<String>,
}

/// Decide what peer `asker` (signed in with `role`) may have: see the
/// module header. `has_upstream`: this master is a syndic;
/// `in_subtree(id)`: `id` is in `asker`'s subtree as this master knows it.
pub(crate) fn plan(
    role: Role,
    asker: &str,
    body: RequestBody,
    has_upstream: bool,
    in_subtree: impl Fn(&str) -> bool,
) -> Plan {
    match (role, body) {
        (Role::Minion, RequestBody::Pillar { pillarenv }) if has_upstream => {
            Plan::ForwardOwn { pillarenv }
        }
        (Role::Minion, RequestBody::Pillar { pillarenv }) => Plan::CompileOwn { pillarenv },
        (
            Role::Syndic,
            RequestBody::PillarFor {
                id,
                grains,
                pub_pem,
                pillarenv,
            },
        ) => {
            if !KeyStore::valid_id(&id) || id == asker || !in_subtree(&id) {
                return Plan::Refuse(Refusal::NotInSubtree {
                    syndic: asker.to_string(),
                    id,
                });
            }
            let q = ForMinion {
                id,
                grains,
                pub_pem,
                pillarenv,
            };
            if has_upstream {
                Plan::ForwardFor(q)
            } else {
                Plan::CompileFor(q)
            }
        }
        (Role::Minion, RequestBody::PillarFor { .. }) => Plan::Refuse(Refusal::Unavailable(
            "a minion may ask only for its own pillar".into(),
        )),
        (Role::Syndic, RequestBody::Pillar { .. }) => Plan::Refuse(Refusal::Unavailable(
            "a syndic has no pillar of its own here; it asks PillarFor its minions".into(),
        )),
        (_, _) => Plan::Refuse(Refusal::Unavailable("not a pillar request".into())),
    }
}

/// Whether `id` is in `syndic`'s subtree for a pillar question: reported
/// behind it, or held by nobody here (see the module header).
fn in_subtree(state: &MasterState, syndic: &str, id: &str) -> bool {
    let roster = state.roster();
    roster.behind(id, syndic)
        || (roster.grains(id).is_none() && !roster.is_syndic(id) && !state.keys().is_accepted(id))
}

/// Answer a pillar request (`Pillar`, `PillarFor`) from signed-in peer `id`.
pub(crate) async fn serve(
    state: Arc<MasterState>,
    id: String,
    role: Role,
    body: RequestBody,
) -> ReplyBody {
    let has_upstream = state.upstream().is_some();
    let decided = plan(role, &id, body, has_upstream, |m| {
        in_subtree(&state, &id, m)
    });
    match decided {
        Plan::Refuse(why) => refuse(&state, &id, why),
        Plan::CompileOwn { pillarenv } => {
            let grains = state.roster().grains(&id).unwrap_or(Value::Null);
            let st = state.clone();
            let minion = id.clone();
            let done = tokio::task::spawn_blocking(move || {
                compile_checked(st.cfg(), &minion, &grains, pillarenv.as_deref())
            })
            .await;
            match done {
                Ok(Ok(pillar)) => {
                    // Kept for pillar targeting (`-I`, `I@`).
                    state.roster().set_pillar(&id, pillar.clone());
                    ReplyBody::Pillar(pillar.as_ref().clone())
                }
                Ok(Err(why)) => unavailable(&id, why),
                Err(e) => unavailable(&id, format!("pillar task failed: {e}")),
            }
        }
        Plan::ForwardOwn { pillarenv } => {
            let Some(key) = state.keys().accepted_key(&id) else {
                return refuse(
                    &state,
                    &id,
                    Refusal::Unavailable(format!("no accepted key for {id}")),
                );
            };
            let q = RequestBody::PillarFor {
                grains: state.roster().grains(&id).unwrap_or(Value::Null),
                id: id.clone(),
                pub_pem: key.pem().to_string(),
                pillarenv,
            };
            forward(&state, &id, q).await
        }
        Plan::ForwardFor(q) => {
            let body = RequestBody::PillarFor {
                id: q.id,
                grains: q.grains,
                pub_pem: q.pub_pem,
                pillarenv: q.pillarenv,
            };
            forward(&state, &id, body).await
        }
        Plan::CompileFor(q) => {
            let st = state.clone();
            let done = tokio::task::spawn_blocking(move || {
                let pillar = compile_checked(st.cfg(), &q.id, &q.grains, q.pillarenv.as_deref())?;
                // Kept for pillar targeting of the minions behind syndics:
                // the top's expected sets are exact for them too.
                st.roster().set_pillar(&q.id, pillar.clone());
                seal(&q.id, &q.pub_pem, &pillar)
            })
            .await;
            match done {
                Ok(Ok(sealed)) => ReplyBody::SealedPillar(sealed),
                Ok(Err(why)) => unavailable(&id, why),
                Err(e) => unavailable(&id, format!("pillar task failed: {e}")),
            }
        }
    }
}

/// Most pillars [`fill_missing`] compiles for one job.
const FILL_MAX: usize = 10_000;

/// Before a pillar target is resolved on a master that compiles pillars
/// (one without a master above): compile the pillar of every minion in
/// the roster whose pillar is not known yet (one that signed in before
/// it asked, a master restarted since), with the grains the roster has,
/// so the expected set is exact instead of "may match" for them. At most
/// [`FILL_MAX`] per call, on a blocking thread. A syndic never compiles:
/// its pillar targets stay "may match" (the top's set is the exact one).
pub(crate) async fn fill_missing(state: &Arc<MasterState>) {
    if state.upstream().is_some() {
        return;
    }
    let st = state.clone();
    let filled = tokio::task::spawn_blocking(move || {
        let missing = st.roster().without_pillar(FILL_MAX);
        let n = missing.len();
        for (id, grains) in missing {
            match compile_checked(st.cfg(), &id, &grains, None) {
                Ok(p) => st.roster().set_pillar(&id, p),
                Err(e) => warn!(minion = %id, error = %e, "pillar not compiled for targeting"),
            }
        }
        n
    })
    .await;
    if let Ok(n @ 1..) = filled {
        tracing::debug!(count = n, "pillars compiled for a pillar target");
    }
}

/// Compile minion `id`'s pillar with this master's `pillar_roots`,
/// replaced by an `_errors`-only pillar when it would not fit in a frame.
pub fn compile_checked(
    cfg: &MasterConfig,
    id: &str,
    grains: &Value,
    pillarenv: Option<&str>,
) -> Result<Arc<Value>, String> {
    let roots =
        Roots::new(&cfg.pillar_roots, &[], &[]).map_err(|e| format!("pillar_roots: {e}"))?;
    // Grains come from the minion (or its syndic) and are its word; its
    // id is not: `grains['id']` in a template is the authenticated id.
    let mut grains = match grains {
        Value::Object(_) => grains.clone(),
        _ => json!({}),
    };
    grains["id"] = Value::String(id.to_string());
    let pillar = compile::compile(cfg, &roots, id, &grains, pillarenv);
    let size = brine_common::codec::encode(&pillar)
        .map_err(|e| format!("pillar of {id} does not encode: {e}"))?
        .len();
    let max = cfg.max_frame_bytes.saturating_sub(FRAME_MARGIN);
    if size > max {
        warn!(minion = %id, size, max, "pillar too large for one frame");
        return Ok(Arc::new(json!({
            "_errors": [format!(
                "Pillar of {size} bytes is larger than max_frame_bytes allows ({max} bytes); not sent"
            )]
        })));
    }
    Ok(Arc::new(pillar))
}

/// Seal `pillar` to the key `pub_pem` of minion `id`.
pub(crate) fn seal(id: &str, pub_pem: &str, pillar: &Value) -> Result<SealedPillar, String> {
    let key = PublicKey::from_pem(pub_pem).map_err(|e| format!("public key of {id}: {e}"))?;
    SealedPillar::seal(&key, id, pillar).map_err(|e| format!("sealing the pillar of {id}: {e}"))
}

/// Ask the master above; its answer (a sealed pillar or a refusal) goes
/// down as it is.
async fn forward(state: &MasterState, asker: &str, body: RequestBody) -> ReplyBody {
    let Some(up) = state.upstream() else {
        return unavailable(asker, "no master above".to_string());
    };
    match up.ask(body).await {
        Ok(reply @ (ReplyBody::SealedPillar(_) | ReplyBody::Refused(_))) => reply,
        Ok(other) => unavailable(
            asker,
            format!("unexpected answer from the master above: {other:?}")
                .chars()
                .take(200)
                .collect(),
        ),
        Err(e) => unavailable(asker, format!("master above: {e}")),
    }
}

fn refuse(state: &MasterState, asker: &str, why: Refusal) -> ReplyBody {
    let n = bump(&state.counters().pillar_refused);
    if n.is_power_of_two() {
        warn!(peer = %asker, reason = %why, count = n, "pillar request refused");
    }
    ReplyBody::Refused(why)
}

fn unavailable(asker: &str, why: String) -> ReplyBody {
    warn!(peer = %asker, reason = %why, "pillar not answered");
    ReplyBody::Refused(Refusal::Unavailable(why))
}

#[cfg(test)]
mod tests;
