//! The jobs this master published or relayed, in memory: which minions may
//! return to each.
//!
//! A return is admitted only for a jid this master sent out, from a minion
//! the job's target reaches (matched against the roster entry of the
//! minion, so a minion that joined after the publish still counts; pillar
//! terms count as may-match, so they never refuse a return), or that was
//! in the job's expected set. Without this, an accepted minion
//! could store returns for jobs that never existed or push its own answer
//! into somebody else's job.
//!
//! Bounded: the newest [`LIVE_JOBS`] jobs stay here with their parsed
//! target (a few hundred bytes each; jids sort by time, so the oldest go
//! first). A return for an older job, or one arriving after a restart, is
//! checked against the job cache (its stored load and expected set), and
//! the job is then kept here again. The expected sets themselves stay in
//! the job cache: at 5000 minions a job they would cost ~250 KB each here.
//!
//! A scope also says where its job came from, which decides whether a
//! syndic sends the job's returns up ([`ForwardUp::of`]): a job relayed
//! down from the master above ([`JobScope::relayed`]) always, one published
//! here or sent up from below only with `syndic_forward_all`.

use brine_common::config::MasterConfig;
use brine_common::jid::Jid;
use brine_common::proto::JobLoad;
use brine_common::sync::lock;
use brine_common::target::{self, Target};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Jobs kept in memory (at 10 jobs/s, the last ~2.7 hours).
pub const LIVE_JOBS: usize = 100_000;

/// What the master needs to judge a return to one job.
#[derive(Debug, Clone)]
pub struct JobScope {
    target: Target,
    delimiter: String,
    /// For a job relayed *up* from a syndic (`syndic_forward_all`), that
    /// syndic: only minions behind it may return to the job.
    origin: Option<String>,
    /// The job came down from the master above (this master is a syndic
    /// and relayed it): its returns go up.
    relayed: bool,
}

impl JobScope {
    /// The scope of a job whose target (with its `delimiter`) is parsed.
    pub fn new(target: Target, delimiter: String) -> Self {
        Self {
            target,
            delimiter,
            origin: None,
            relayed: false,
        }
    }

    /// The scope of a job as published (its target parsed again).
    pub fn of(
        load: &JobLoad,
        nodegroups: &BTreeMap<String, String>,
    ) -> Result<Self, target::TargetError> {
        let target =
            target::parse_with_delimiter(&load.tgt, load.tgt_type, nodegroups, &load.delimiter)?;
        Ok(Self::new(target, load.delimiter.clone()))
    }

    /// This scope, marked as a job that came from the master above (a
    /// syndic relaying it down).
    pub fn relayed(mut self) -> Self {
        self.relayed = true;
        self
    }

    /// Did the job come down from the master above?
    pub fn from_above(&self) -> bool {
        self.relayed
    }

    /// This scope, restricted to the subtree of `syndic` (a job that
    /// syndic sent up rather than one this master sent down).
    pub fn from_below(mut self, syndic: &str) -> Self {
        self.origin = Some(syndic.to_string());
        self
    }

    /// The syndic a job came up from, if it did.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// Whether the job's target may reach minion `id` with `grains`. A
    /// pillar term never refuses a return: it counts as unknown (the
    /// target is evaluated three-valued, [`Target::matches_with`] with no
    /// pillar), so only the rest of the target can rule the minion out.
    /// The minion matched with its own pillar, and its match is
    /// authoritative.
    pub fn reaches(&self, id: &str, grains: &serde_json::Value) -> bool {
        self.target.matches_with(id, grains, None, &self.delimiter)
    }
}

/// Whether a return accepted here goes on to the master above, and what
/// it needs there first. Decided once per return, from its job's scope,
/// and stored with it in the job cache's outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardUp {
    /// Stays here: not a syndic, or a job published here without
    /// `syndic_forward_all`.
    Stay,
    /// A job relayed down from above: the master above knows it.
    Relayed,
    /// A job published here or sent up from below, forwarded with
    /// `syndic_forward_all`: its load goes up (`SyndicJob`) before its
    /// first return.
    Published,
}

impl ForwardUp {
    /// The decision for a return to the job of `scope` on master `cfg`.
    pub fn of(cfg: &MasterConfig, scope: &JobScope) -> Self {
        if !cfg.is_syndic() {
            ForwardUp::Stay
        } else if scope.from_above() {
            ForwardUp::Relayed
        } else if cfg.syndic_forward_all {
            ForwardUp::Published
        } else {
            ForwardUp::Stay
        }
    }

    /// Goes up at all?
    pub fn goes_up(self) -> bool {
        self != ForwardUp::Stay
    }
}

#[derive(Default)]
pub struct Published {
    /// Shared, so a lookup per return costs a pointer copy, not a parsed
    /// target.
    jobs: Mutex<BTreeMap<Jid, Arc<JobScope>>>,
}

impl Published {
    /// Remember a job this master sends out.
    pub fn insert(&self, jid: &Jid, scope: JobScope) {
        let mut g = lock(&self.jobs);
        g.insert(jid.clone(), Arc::new(scope));
        while g.len() > LIVE_JOBS {
            g.pop_first();
        }
    }

    pub fn get(&self, jid: &str) -> Option<Arc<JobScope>> {
        lock(&self.jobs).get(jid).cloned()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.jobs).len()
    }
}

/// Why a return is not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// This master never published or relayed that jid.
    #[error("this master never sent that job")]
    UnknownJob,
    /// The job's target does not reach this minion.
    #[error("the job does not target this minion")]
    NotTargeted,
}

impl NotAdmitted {
    /// How the refusal of a return to `jid` goes on the wire.
    pub fn refusal(self, jid: String) -> brine_common::proto::Refusal {
        use brine_common::proto::Refusal;
        match self {
            NotAdmitted::UnknownJob => Refusal::UnknownJob { jid },
            NotAdmitted::NotTargeted => Refusal::NotTargeted { jid },
        }
    }
}

/// The decision for one return, given the job's scope (if known), whether
/// it reaches the minion (`reaches`: the roster matches it without copying
/// the minion's grains) and, only when it does not, whether the job cache
/// lists the minion as expected.
pub fn admit(
    scope: Option<&JobScope>,
    reaches: impl FnOnce(&JobScope) -> bool,
    expected: impl FnOnce() -> bool,
) -> Result<(), NotAdmitted> {
    let Some(scope) = scope else {
        return Err(NotAdmitted::UnknownJob);
    };
    if reaches(scope) || expected() {
        Ok(())
    } else {
        Err(NotAdmitted::NotTargeted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brine_common::proto::TargetType;
    use serde_json::json;

    fn load(jid: &str, tgt: &str, tgt_type: TargetType) -> JobLoad {
        JobLoad {
            jid: Jid::parse(jid).expect("jid"),
            tgt: tgt.into(),
            tgt_type,
            fun: "test.ping".into(),
            arg: vec![],
            kwarg: Default::default(),
            user: "root".into(),
            timeout: 5,
            delimiter: ":".into(),
            path: vec![],
            trace: None,
        }
    }

    #[test]
    fn a_return_needs_a_known_job_that_reaches_the_minion() {
        let p = Published::default();
        let j = load("20261202000000000001", "web*", TargetType::Glob);
        p.insert(&j.jid, JobScope::of(&j, &BTreeMap::new()).expect("scope"));
        let scope = p.get(&j.jid);
        let to = |id: &'static str| move |s: &JobScope| s.reaches(id, &json!({}));
        assert_eq!(admit(scope.as_deref(), to("web1"), || false), Ok(()));
        assert_eq!(
            admit(scope.as_deref(), to("db1"), || false),
            Err(NotAdmitted::NotTargeted)
        );
        // Listed as expected in the job cache (grains changed meanwhile).
        assert_eq!(admit(scope.as_deref(), to("db1"), || true), Ok(()));
        assert_eq!(
            admit(p.get("20261202000000000002").as_deref(), to("web1"), || {
                true
            }),
            Err(NotAdmitted::UnknownJob)
        );
        let g = load("20261202000000000003", "os:Debian", TargetType::Grain);
        let s = JobScope::of(&g, &BTreeMap::new()).expect("scope");
        assert!(s.reaches("x", &json!({"os": "Debian"})));
        assert!(!s.reaches("x", &json!({"os": "Arch"})));
    }

    #[test]
    fn pillar_terms_never_refuse_a_return() {
        let scope = |tgt: &str, tt| {
            JobScope::of(&load("20261202000000000004", tgt, tt), &BTreeMap::new()).expect("scope")
        };
        let debian = json!({"os": "Debian"});
        let arch = json!({"os": "Arch"});
        // Any minion may hold the pillar: the minion decides.
        assert!(scope("role:web", TargetType::Pillar).reaches("x", &arch));
        assert!(scope("role:w.*", TargetType::PillarPcre).reaches("x", &json!(null)));
        let c = |tgt: &str| scope(tgt, TargetType::Compound);
        assert!(c("not I@role:web").reaches("x", &arch));
        // The rest of the target still rules minions out.
        assert!(c("G@os:Debian and I@role:web").reaches("x", &debian));
        assert!(!c("G@os:Debian and I@role:web").reaches("x", &arch));
        assert!(!c("web* and not J@env:pr.*").reaches("db1", &debian));
        assert!(c("web* and not J@env:pr.*").reaches("web1", &debian));
        assert!(c("db* or I@role:web").reaches("web1", &arch));
    }

    #[test]
    fn returns_go_up_from_a_syndic_only() {
        let j = load("20261202000000000001", "*", TargetType::Glob);
        let here = JobScope::of(&j, &BTreeMap::new()).expect("scope");
        let above = here.clone().relayed();
        assert!(above.from_above() && !here.from_above());
        let mut cfg = MasterConfig::default();
        assert_eq!(ForwardUp::of(&cfg, &above), ForwardUp::Stay, "a top master");
        cfg.syndic_master = vec!["top".into()];
        assert_eq!(ForwardUp::of(&cfg, &above), ForwardUp::Relayed);
        assert_eq!(ForwardUp::of(&cfg, &here), ForwardUp::Stay);
        cfg.syndic_forward_all = true;
        assert_eq!(ForwardUp::of(&cfg, &above), ForwardUp::Relayed);
        assert_eq!(ForwardUp::of(&cfg, &here), ForwardUp::Published);
        let below = here.from_below("s9");
        assert_eq!(ForwardUp::of(&cfg, &below), ForwardUp::Published);
        assert!(!ForwardUp::Stay.goes_up() && ForwardUp::Published.goes_up());
    }

    #[test]
    fn only_the_newest_jobs_stay_in_memory() {
        let p = Published::default();
        let j = load("00000000000000000000", "*", TargetType::Glob);
        let s = JobScope::of(&j, &BTreeMap::new()).expect("scope");
        for i in 0..LIVE_JOBS + 5 {
            p.insert(&Jid::parse(&format!("{i:020}")).expect("jid"), s.clone());
        }
        assert_eq!(p.len(), LIVE_JOBS);
        assert!(
            p.get(&format!("{:020}", 0)).is_none(),
            "the oldest went first"
        );
        assert!(p.get(&format!("{:020}", LIVE_JOBS + 4)).is_some());
    }
}
