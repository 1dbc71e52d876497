//! Jobs on their way out: the expected set of a target, publishing a job
//! (from `salt`, a runner or `loadtest`), relaying one that came from
//! above (syndic), recording one a syndic sent up, the topics a job goes
//! to, and rotating the publish key.
//!
//! Invariant: a job is remembered as sent (so its returns are admitted)
//! and stored in the job cache before it is published, and a watcher is
//! registered before that, so no early return is missed.

use super::{bump, JobError, JobReturns, MasterState, PublishKey};
use crate::published::JobScope;
use crate::publisher::PublishError;
use crate::roster::Expected;
use brine_common::crypto::AesKey;
use brine_common::proto::client::{PublishRequest, Published};
use brine_common::proto::*;
use brine_common::sync::write;
use brine_common::target::{self, Target, TargetType};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use tracing::{debug, info, warn};

impl MasterState {
    /// Parse a target as it enters the master (from a client): checked
    /// once, this master's nodegroups expanded, then carried onward.
    pub fn parse_target(
        &self,
        tgt: &str,
        tgt_type: TargetType,
        delimiter: &str,
    ) -> Result<Target, JobError> {
        Ok(target::parse_with_delimiter(
            tgt,
            tgt_type,
            &self.cfg.nodegroups,
            delimiter,
        )?)
    }

    /// The exact expected set of a target, and the ids a list target names
    /// that this master does not know.
    pub fn expected(&self, t: &Target, delimiter: &str) -> (Vec<Expected>, Vec<String>) {
        let minions = self.roster.expected(t, delimiter);
        let known: HashSet<&str> = minions.iter().map(|m| m.id.as_str()).collect();
        let missing: Vec<String> = t
            .listed_ids()
            .unwrap_or_default()
            .into_iter()
            .filter(|id| !known.contains(id.as_str()))
            .collect();
        (minions, missing)
    }

    /// Compute the expected set of `target` (the request's, parsed by
    /// [`MasterState::parse_target`]), assign a jid, store and publish the
    /// job. `watch` registers a return watcher before the publish goes
    /// out, so no early return is missed.
    pub fn publish(
        &self,
        req: &PublishRequest,
        target: Target,
        watch: bool,
    ) -> Result<(Published, Option<JobReturns>), JobError> {
        let (minions, missing) = self.expected(&target, &req.delimiter);
        let jid = self.jidgen.next();
        // Minions do not know the nodegroups: send them the expansion.
        let (tgt_pub, type_pub) = match target.for_minions() {
            Some(expr) => (expr, TargetType::Compound),
            None => (req.tgt.clone(), req.tgt_type),
        };
        let job = JobLoad {
            jid: jid.clone(),
            tgt: tgt_pub,
            tgt_type: type_pub,
            fun: req.fun.clone(),
            arg: req.arg.clone(),
            kwarg: req.kwarg.clone(),
            user: req.user.clone(),
            timeout: req.timeout,
            delimiter: req.delimiter.clone(),
            path: vec![self.cfg.id.clone()],
            trace: req.trace.then(|| {
                vec![Stamp {
                    who: self.cfg.id.clone(),
                    what: "pub".into(),
                    us: now_us(),
                }]
            }),
        };
        let rx = watch.then(|| self.watch_job(&jid));
        let ids: Vec<String> = minions.iter().map(|m| m.id.clone()).collect();
        self.sent
            .insert(&jid, JobScope::new(target, job.delimiter.clone()));
        self.jobs.record_job(&job, &ids);
        crate::events::job_new(&self.events, &job, &ids, &missing);
        if !minions.is_empty() {
            self.send_job(&job, &minions)?;
        }
        Ok((
            Published {
                jid,
                minions,
                missing,
            },
            rx,
        ))
    }

    /// [`MasterState::publish`] on a blocking thread, for async callers: it
    /// signs the job (RSA, ~2 ms) and may wait for room in the job cache.
    pub async fn publish_async(
        self: &Arc<Self>,
        req: PublishRequest,
        target: Target,
        watch: bool,
    ) -> Result<(Published, Option<JobReturns>), JobError> {
        let st = self.clone();
        tokio::task::spawn_blocking(move || st.publish(&req, target, watch))
            .await
            .map_err(|e| JobError::Task(e.to_string()))?
    }

    /// [`MasterState::relay`] on a blocking thread, for async callers.
    pub async fn relay_async(self: &Arc<Self>, job: JobLoad) -> Result<Vec<Expected>, JobError> {
        let st = self.clone();
        tokio::task::spawn_blocking(move || st.relay(job))
            .await
            .map_err(|e| JobError::Task(e.to_string()))?
    }

    /// Re-publish a job that came from above (syndic), with the same jid.
    /// Returns the expected set below this master.
    pub fn relay(&self, mut job: JobLoad) -> Result<Vec<Expected>, JobError> {
        let tgt = target::parse_with_delimiter(
            &job.tgt,
            job.tgt_type,
            &self.cfg.nodegroups,
            &job.delimiter,
        )?;
        let minions = self.roster.expected(&tgt, &job.delimiter);
        job.path.push(self.cfg.id.clone());
        if let Some(t) = job.trace.as_mut() {
            t.push(Stamp {
                who: self.cfg.id.clone(),
                what: "relay".into(),
                us: now_us(),
            });
        }
        let ids: Vec<String> = minions.iter().map(|m| m.id.clone()).collect();
        self.sent.insert(
            &job.jid,
            JobScope::new(tgt, job.delimiter.clone()).relayed(),
        );
        self.jobs.record_job(&job, &ids);
        crate::events::job_new(&self.events, &job, &ids, &[]);
        self.send_job(&job, &minions)?;
        Ok(minions)
    }

    /// The scope of a stored job: a load whose path does not name this
    /// master came up from the syndic at the end of its path (see
    /// [`MasterState::job_from_below`]); one that names it after another
    /// master came down from above (relayed).
    pub(super) fn stored_scope(&self, load: &JobLoad) -> Option<JobScope> {
        let scope = JobScope::of(load, &self.cfg.nodegroups).ok()?;
        if load.path.contains(&self.cfg.id) {
            if load.path.first() != Some(&self.cfg.id) {
                Some(scope.relayed())
            } else {
                Some(scope)
            }
        } else {
            load.path.last().map(|s| scope.from_below(s))
        }
    }

    /// Record a job that syndic `syndic` published itself (or got from
    /// below) and sends up with `syndic_forward_all`: stored under its own
    /// jid with the syndic appended to its path, expecting the minions of
    /// that syndic's subtree the target reaches, and admitting returns
    /// from that subtree only. Never re-published. A jid this master
    /// already knows from elsewhere, a load whose path names this master
    /// (a loop) or a sender that is not a syndic is refused.
    pub(crate) fn job_from_below(&self, syndic: &str, role: Role, mut load: JobLoad) -> ReplyBody {
        let jid = load.jid.clone();
        let refuse = |why: Refusal| {
            let n = bump(&self.counters.syndic_refused);
            if n.is_power_of_two() {
                warn!(syndic = %syndic.escape_debug(), jid = %jid.escape_debug(), count = n, reason = %why, "job sent up from below refused");
            }
            ReplyBody::Refused(why)
        };
        if role != Role::Syndic {
            return refuse(Refusal::NotASyndic);
        }
        if load.path.contains(&self.cfg.id) {
            return refuse(Refusal::Loop {
                master: self.cfg.id.clone(),
            });
        }
        if load.path.last().map(String::as_str) != Some(syndic) {
            load.path.push(syndic.to_string());
        }
        let known = self.sent.get(&load.jid).or_else(|| {
            let stored = self.jobs.job_load(&load.jid).ok()??;
            self.stored_scope(&stored).map(std::sync::Arc::new)
        });
        if let Some(k) = known {
            // A resend of the same job is fine; anything else under that
            // jid is somebody else's job.
            return if k.origin() == Some(syndic) {
                ReplyBody::Ok
            } else {
                refuse(Refusal::JidInUse {
                    jid: load.jid.to_string(),
                })
            };
        }
        let scope = match JobScope::of(&load, &self.cfg.nodegroups) {
            Ok(s) => s.from_below(syndic),
            Err(e) => return refuse(Refusal::BadTarget { why: e.to_string() }),
        };
        let target = match target::parse_with_delimiter(
            &load.tgt,
            load.tgt_type,
            &self.cfg.nodegroups,
            &load.delimiter,
        ) {
            Ok(t) => t,
            Err(e) => return refuse(Refusal::BadTarget { why: e.to_string() }),
        };
        let ids: Vec<String> = self
            .roster
            .expected(&target, &load.delimiter)
            .into_iter()
            .filter(|m| m.via.first().map(String::as_str) == Some(syndic))
            .map(|m| m.id)
            .collect();
        self.sent.insert(&load.jid, scope);
        self.jobs.record_job(&load, &ids);
        bump(&self.counters.jobs_from_below);
        debug!(jid = %load.jid, syndic = %syndic, minions = ids.len(), "job sent up from a syndic recorded");
        ReplyBody::Ok
    }

    /// Publish to the topics of [`job_topics`].
    fn send_job(&self, job: &JobLoad, minions: &[Expected]) -> Result<(), PublishError> {
        let topics = job_topics(&job.path, minions, self.roster.unknown_syndics());
        let PublishKey { id: key_id, key } = self.publish_key();
        self.publisher.publish_job(job, key_id, &key, &topics)?;
        bump(&self.counters.jobs_published);
        debug!(jid = %job.jid, topics = topics.len(), minions = minions.len(), "job published");
        Ok(())
    }

    /// New publish key, handed at once to every signed-in peer but the ones
    /// in `revoked` (whose sessions are dropped): a deleted or rejected
    /// minion cannot read anything published from now on.
    pub fn rotate_publish_key(&self, revoked: &[String]) {
        let PublishKey { id: key_id, key } = {
            let mut g = write(&self.publish_key);
            g.id = g.id.wrapping_add(1);
            g.key = AesKey::random();
            g.clone()
        };
        let peers = self.sessions.revoke(revoked);
        for id in revoked {
            self.roster.remove(id);
        }
        for (id, session) in &peers {
            if let Err(e) = self.publisher.key_update(id, session, key_id, &key) {
                warn!(id = %id, error = %e, "could not send key update");
            }
        }
        info!(
            key_id,
            peers = peers.len(),
            revoked = revoked.len(),
            "publish key rotated"
        );
    }
}

/// The topics a job goes to, given its expected set `minions`: the
/// broadcast topic if a direct minion may match, and the topic of each
/// syndic whose subtree may match or whose subtree is not known yet
/// (`unknown_syndics`), never one of the masters on the job's `path`. With
/// a pillar target the expected set holds every minion that may match
/// ([`crate::roster::Roster::expected`]), so a syndic below gets the job
/// whenever one of its minions may hold the pillar; on the top, where the
/// pillars are compiled, only when one does.
fn job_topics(path: &[String], minions: &[Expected], unknown_syndics: Vec<String>) -> Vec<Vec<u8>> {
    let mut syndics: BTreeSet<String> = unknown_syndics.into_iter().collect();
    let mut direct = false;
    for m in minions {
        match m.via.first() {
            None => direct = true,
            Some(s) => {
                syndics.insert(s.clone());
            }
        }
    }
    let mut topics: Vec<Vec<u8>> = Vec::new();
    if direct {
        topics.push(TOPIC_BROADCAST.to_vec());
    }
    for s in syndics {
        // Never send a job back to a master it came through.
        if !path.contains(&s) {
            topics.push(topic_for(&s));
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::Roster;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    fn entry(id: &str, grains: Value) -> RosterEntry {
        RosterEntry {
            id: id.into(),
            grains,
            connected: true,
            via: vec![],
        }
    }

    /// A top master: direct minion d1, s1 with a1, a2, s2 with b1.
    fn top() -> Roster {
        let r = Roster::new(Duration::from_secs(60));
        r.upsert_direct("d1", json!({"os": "Debian"}));
        for (s, ids) in [("s1", vec!["a1", "a2"]), ("s2", vec!["b1"])] {
            r.syndic_seen(s);
            let upsert = ids
                .into_iter()
                .map(|id| entry(id, json!({"os": "Debian"})))
                .collect();
            r.apply_syndic_delta(
                s,
                &RosterDelta {
                    full: true,
                    upsert,
                    remove: vec![],
                },
                |_| false,
            );
        }
        r
    }

    fn topics(r: &Roster, tgt: &str, tt: TargetType, path: &[&str]) -> Vec<String> {
        let t = target::parse(tgt, tt, &BTreeMap::new()).expect("target");
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        job_topics(&path, &r.expected(&t, ":"), r.unknown_syndics())
            .into_iter()
            .map(|t| {
                String::from_utf8_lossy(&t)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn pillar_targets_reach_only_syndics_whose_subtree_may_match() {
        let r = top();
        // No pillar compiled yet: every minion may match.
        assert_eq!(
            topics(&r, "role:web", TargetType::Pillar, &["top"]),
            ["B", "M:s1", "M:s2"]
        );
        // The top compiled every pillar (direct and behind syndics).
        for (id, role) in [("d1", "db"), ("a1", "db"), ("a2", "web"), ("b1", "db")] {
            r.set_pillar(id, Arc::new(json!({ "role": role })));
        }
        assert_eq!(
            topics(&r, "role:web", TargetType::Pillar, &["top"]),
            ["M:s1"]
        );
        assert_eq!(
            topics(
                &r,
                "G@os:Debian and not I@role:web and not a1",
                TargetType::Compound,
                &["top"]
            ),
            ["B", "M:s2"],
            "d1 and b1 are not web; a2 is, a1 is left out by id"
        );
        assert!(topics(&r, "role:cache", TargetType::Pillar, &["top"]).is_empty());
        // b1 gone and back (its key deleted and accepted again): its pillar
        // is not compiled yet, so s2 may match.
        r.remove("b1");
        r.apply_syndic_delta(
            "s2",
            &RosterDelta {
                full: false,
                upsert: vec![entry("b1", json!({"os": "Debian"}))],
                remove: vec![],
            },
            |_| false,
        );
        assert_eq!(
            topics(&r, "I@role:web", TargetType::Compound, &["top"]),
            ["M:s1", "M:s2"]
        );
        // Never back up the path a relayed job came down.
        assert_eq!(
            topics(&r, "I@role:web", TargetType::Compound, &["s1"]),
            ["M:s2"]
        );
    }

    #[test]
    fn a_syndic_relays_a_pillar_job_to_every_minion_that_may_match() {
        // The syndic's own roster: direct minions and a lower syndic, no
        // pillars (a syndic never sees them).
        let r = Roster::new(Duration::from_secs(60));
        r.upsert_direct("m1", json!({"os": "Debian"}));
        r.upsert_direct("m2", json!({"os": "Arch"}));
        r.syndic_seen("low");
        r.apply_syndic_delta(
            "low",
            &RosterDelta {
                full: true,
                upsert: vec![entry("x1", json!({"os": "Arch"}))],
                remove: vec![],
            },
            |_| false,
        );
        let t =
            target::parse("I@role:web", TargetType::Compound, &BTreeMap::new()).expect("target");
        let expected: Vec<String> = r.expected(&t, ":").into_iter().map(|e| e.id).collect();
        assert_eq!(expected, ["m1", "m2", "x1"]);
        let path = ["top", "mid"];
        assert_eq!(
            topics(&r, "I@role:web", TargetType::Compound, &path).len(),
            2
        );
        // Grains still narrow it down: only the lower syndic's minion.
        assert_eq!(
            topics(
                &r,
                "G@os:Arch and I@role:web and not m2",
                TargetType::Compound,
                &path
            ),
            ["M:low"]
        );
    }
}
