//! Returns on their way in: deduplication per (jid, minion), admission
//! (only for jobs this master sent, from minions they reach), the size
//! cap, and the watchers told once the job cache has stored a return (a
//! `salt` client per job, with a bounded queue). On a syndic, a return of
//! a job that goes up is queued in the job cache's outbox in the same
//! transaction ([`ForwardUp`]); the forwarder reads it from there.
//!
//! Invariant: a (jid, minion) pair counts as returned only once the job
//! cache has committed it, so a failed write is never mistaken for a
//! stored return and the sender's resend is taken.

use super::{bump, MasterState};
use crate::published::{self, ForwardUp, NotAdmitted};
use brine_common::jid::Jid;
use brine_common::proto::{now_us, ReturnLoad, Stamp};
use brine_common::sync::lock;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Who wants to see returns. A job's watchers (`salt` on the client
/// socket) are told a return only once the job cache has stored it, and
/// told when it could not. (A syndic's forwarder reads the job cache's
/// outbox instead.)
#[derive(Default)]
pub(super) struct Watchers {
    by_jid: HashMap<Jid, Vec<JobWatcher>>,
}

/// What a job's watcher is told.
#[derive(Debug)]
pub enum JobEvent {
    /// A stored return, charged `bytes` to the watcher's queue
    /// ([`WatchQueue::sent`] gives them back).
    Return { ret: ReturnLoad, bytes: usize },
    /// A return of this job could not be stored (why): the job cache is
    /// failing; its sender was not acknowledged and will resend it.
    CacheFailing(String),
}

/// How far one watcher is behind: bytes of returns queued for it, and the
/// minions whose returns were left in the job cache instead because the
/// queue was over [`WATCH_BYTES`].
#[derive(Debug, Default)]
pub struct WatchQueue {
    queued: std::sync::atomic::AtomicUsize,
    deferred: Mutex<Vec<String>>,
}

impl WatchQueue {
    /// The watcher has written a return of `bytes` out.
    pub fn sent(&self, bytes: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(bytes))
            });
    }

    /// Minions whose returns the watcher must read from the job cache.
    pub fn take_deferred(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.deferred))
    }
}

/// The master's side of one job's watcher.
struct JobWatcher {
    tx: mpsc::UnboundedSender<JobEvent>,
    queue: Arc<WatchQueue>,
}

/// One job's returns as a watcher receives them.
pub struct JobReturns {
    pub rx: mpsc::UnboundedReceiver<JobEvent>,
    pub queue: Arc<WatchQueue>,
}

impl JobReturns {
    /// The next stored return, for a consumer that reads them as they come
    /// (the runner): news of failures are skipped, and it is never far
    /// enough behind to have returns deferred to the job cache.
    pub async fn recv(&mut self) -> Option<ReturnLoad> {
        // Each round takes one message off the channel.
        loop {
            match self.rx.recv().await? {
                JobEvent::Return { ret, bytes } => {
                    self.queue.sent(bytes);
                    return Some(ret);
                }
                JobEvent::CacheFailing(_) => {}
            }
        }
    }
}

/// Bytes of returns queued for one job's watcher (a `salt` process) before
/// further returns are left in the job cache for it to read when it
/// catches up. A `salt` that stops reading (a paused terminal) costs the
/// master at most this (plus one return) instead of every return of its
/// job: 2000 minions x 30 kB held ~60 MiB per stalled client.
pub const WATCH_BYTES: usize = 4 << 20;

impl Watchers {
    /// Forgets the watchers of jobs whose `salt` has gone (it got every
    /// return, or timed out, or was interrupted); returns how many. A
    /// watcher is otherwise only noticed gone when a later return of its
    /// job comes, which for a finished job never happens: each finished
    /// job left ~28 KiB behind (its channel), +0.3 MB/s on a top master
    /// running 10 jobs/s.
    pub(super) fn forget_closed(&mut self) -> usize {
        let before = self.by_jid.len();
        self.by_jid.retain(|_, list| {
            list.retain(|w| !w.tx.is_closed());
            !list.is_empty()
        });
        before - self.by_jid.len()
    }
}

/// Dedup memory: (jid, minion) pairs kept for the newest jobs. Bounded by
/// pairs, not jobs (a job of 5000 minions costs 5000): about 100 bytes a
/// pair, so at most ~20 MB. Older duplicates still never reach the job
/// cache twice (it keeps the first return) and `salt` ignores them.
const DEDUP_PAIRS: usize = 200_000;

/// Which minions returned, for the newest jobs (jids sort by time). A
/// pair counts as returned only once the job cache has stored it: while
/// its write is under way a copy is written again (so that the copy's
/// acknowledgement also waits for a commit), and a failed write is
/// forgotten, so the sender's resend is stored.
#[derive(Default)]
pub(super) struct Dedup {
    jobs: BTreeMap<Jid, HashMap<String, Pair>>,
    pairs: usize,
}

/// Where one (jid, minion) return stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pair {
    /// This many writes of it are queued in the job cache.
    Writing(u32),
    Stored,
}

impl Dedup {
    /// A return arrives: what was known of its pair before (None: new).
    pub(super) fn begin(&mut self, jid: &Jid, id: &str) -> Option<Pair> {
        if let Some(p) = self.jobs.get_mut(jid).and_then(|m| m.get_mut(id)) {
            let before = *p;
            if let Pair::Writing(n) = p {
                *n = n.saturating_add(1);
            }
            return Some(before);
        }
        self.jobs
            .entry(jid.clone())
            .or_default()
            .insert(id.to_string(), Pair::Writing(1));
        self.pairs += 1;
        while self.pairs > DEDUP_PAIRS && self.jobs.len() > 1 {
            if let Some((_, old)) = self.jobs.pop_first() {
                self.pairs -= old.len();
            }
        }
        None
    }

    /// One write of the pair ended; true when it is newly stored.
    pub(super) fn written(&mut self, jid: &Jid, id: &str, stored: bool) -> bool {
        let Some(map) = self.jobs.get_mut(jid) else {
            // Evicted meanwhile: a newly stored return is news.
            return stored;
        };
        let Some(p) = map.get_mut(id) else {
            return stored;
        };
        match (*p, stored) {
            (Pair::Stored, _) => false,
            (Pair::Writing(_), true) => {
                *p = Pair::Stored;
                true
            }
            (Pair::Writing(n), false) if n > 1 => {
                *p = Pair::Writing(n - 1);
                false
            }
            (Pair::Writing(_), false) => {
                map.remove(id);
                self.pairs = self.pairs.saturating_sub(1);
                if map.is_empty() {
                    self.jobs.remove(jid);
                }
                false
            }
        }
    }
}

impl MasterState {
    /// Returns of one job, once stored (deduplicated), and news of
    /// returns the job cache could not store. At most [`WATCH_BYTES`] wait
    /// in the receiver; beyond that the watcher is given the minions' ids
    /// to read from the job cache ([`WatchQueue::take_deferred`]).
    pub fn watch_job(&self, jid: &Jid) -> JobReturns {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(WatchQueue::default());
        lock(&self.watchers)
            .by_jid
            .entry(jid.clone())
            .or_default()
            .push(JobWatcher {
                tx,
                queue: queue.clone(),
            });
        JobReturns { rx, queue }
    }

    /// Accept a return (after authentication): dedup, store, tell watchers.
    /// Returns false for a duplicate.
    ///
    /// The job's watchers are told once the job cache has stored it
    /// (`MasterState::return_written`). On a syndic, a return of a job
    /// that goes up ([`ForwardUp::of`]) is queued in the job cache's
    /// outbox in the same transaction, so its acknowledgement also means
    /// "on its way up". A copy that comes while the first is still being
    /// written is written again (the job cache keeps one), so that
    /// whatever acknowledges the copy waits for a commit too.
    pub fn accept_return(self: &Arc<Self>, mut ret: ReturnLoad) -> bool {
        let up = self
            .sent
            .get(&ret.jid)
            .map_or(ForwardUp::Stay, |scope| ForwardUp::of(&self.cfg, &scope));
        let before = lock(&self.seen).begin(&ret.jid, &ret.id);
        match before {
            Some(Pair::Stored) => {
                bump(&self.counters.duplicate_returns);
                return false;
            }
            Some(Pair::Writing(_)) => {
                bump(&self.counters.duplicate_returns);
                let st = self.clone();
                let (jid, id) = (ret.jid.clone(), ret.id.clone());
                self.jobs.record_return_up_then(
                    &ret,
                    up,
                    Box::new(move |w| st.return_written(&jid, &id, None, w)),
                );
                return false;
            }
            None => {}
        }
        bump(&self.counters.returns);
        crate::events::job_ret(&self.events, &ret);
        self.metrics.return_accepted(&ret.jid);
        if let Some(t) = ret.trace.as_mut() {
            t.push(Stamp {
                who: self.cfg.id.clone(),
                what: "ret".into(),
                us: now_us(),
            });
        }
        let watched = lock(&self.watchers).by_jid.contains_key(ret.jid.as_str());
        let st = self.clone();
        let (jid, id) = (ret.jid.clone(), ret.id.clone());
        // Kept for the job's watchers only when it has some.
        let copy = watched.then(|| ret.clone());
        self.jobs.record_return_up_then(
            &ret,
            up,
            Box::new(move |w| st.return_written(&jid, &id, copy, w)),
        );
        true
    }

    /// The job cache's answer for one return (on its writer thread):
    /// promote or forget the pair in the dedup memory, then tell the job's
    /// watchers the stored return, or that the job cache is failing.
    fn return_written(
        &self,
        jid: &Jid,
        id: &str,
        ret: Option<ReturnLoad>,
        w: crate::job_cache::ReturnWritten,
    ) {
        let newly = lock(&self.seen).written(jid, id, w.stored);
        if !w.stored {
            let n = bump(&self.counters.returns_not_stored);
            if n.is_power_of_two() {
                warn!(jid = %jid, minion = %id, count = n, "return not stored (job cache failing); not acknowledged, the sender will resend it");
            }
        }
        let mut g = lock(&self.watchers);
        let Some(list) = g.by_jid.get_mut(jid) else {
            return;
        };
        if w.stored {
            if !newly {
                return;
            }
            // A copy written after the first failed has no return with it:
            // read it back for the watchers (rare: after a failure).
            let ret = match ret {
                Some(r) => r,
                None => match self.jobs.get_return(jid, id) {
                    Ok(Some(r)) => r,
                    _ => return,
                },
            };
            // The last watcher (usually the only one: the `salt` that
            // published) takes the return itself; the others get copies
            // (a copy was 5% of the top's CPU at 1000 minions).
            let mut ret = Some(ret);
            let last = list.len().saturating_sub(1);
            let mut index = 0usize;
            list.retain(|watcher| {
                let this = index;
                index += 1;
                let q = &watcher.queue;
                let queued = q.queued.load(Ordering::Relaxed);
                if queued > 0 && queued.saturating_add(w.bytes) > WATCH_BYTES {
                    lock(&q.deferred)
                        .push(id.to_string());
                    let n = bump(&self.counters.watch_returns_deferred);
                    if n.is_power_of_two() {
                        info!(jid = %jid, minion = %id, queued_bytes = queued, max = WATCH_BYTES, count = n, "salt client is not reading: return left in the job cache for it");
                    }
                    return !watcher.tx.is_closed();
                }
                let copy = if this == last {
                    ret.take()
                } else {
                    ret.clone()
                };
                let Some(copy) = copy else {
                    return !watcher.tx.is_closed();
                };
                q.queued.fetch_add(w.bytes, Ordering::Relaxed);
                watcher
                    .tx
                    .send(JobEvent::Return {
                        ret: copy,
                        bytes: w.bytes,
                    })
                    .is_ok()
            });
        } else {
            let why = format!(
                "the job cache of master {} could not store the return of {id}",
                self.cfg.id
            );
            list.retain(|watcher| watcher.tx.send(JobEvent::CacheFailing(why.clone())).is_ok());
        }
        if list.is_empty() {
            g.by_jid.remove(jid);
        }
    }

    /// Whether a return belongs to a job this master sent out (or a
    /// syndic sent up, then only from that syndic's subtree) and to a
    /// minion that job may reach (see [`crate::published`]; a pillar term
    /// never refuses a return, the minion matched with its own pillar).
    /// Counted when not.
    pub(crate) fn admit_return(&self, ret: &ReturnLoad) -> Result<(), NotAdmitted> {
        let scope = self.sent.get(&ret.jid).or_else(|| {
            // An older job, or one from before a restart: ask the job
            // cache (a SQLite point read, only on this rare path).
            let load = self.jobs.job_load(&ret.jid).ok()??;
            let scope = self.stored_scope(&load)?;
            self.sent.insert(&ret.jid, scope);
            self.sent.get(&ret.jid)
        });
        let verdict = published::admit(
            scope.as_deref(),
            |s| self.roster.reached_by(&ret.id, s),
            || {
                // A job from below admits only its own subtree, whatever
                // the job cache says.
                scope.as_ref().is_some_and(|s| s.origin().is_none())
                    && self.jobs.is_expected(&ret.jid, &ret.id).unwrap_or(false)
            },
        );
        if let Err(why) = &verdict {
            let (counter, text) = match why {
                NotAdmitted::UnknownJob => (
                    &self.counters.returns_unknown_job,
                    "return for a job this master never sent refused",
                ),
                NotAdmitted::NotTargeted => (
                    &self.counters.returns_not_targeted,
                    "return from a minion the job does not target refused",
                ),
            };
            let n = bump(counter);
            if n.is_power_of_two() {
                warn!(jid = %ret.jid.escape_debug(), minion = %ret.id.escape_debug(), count = n, "{text}");
            }
        }
        verdict
    }

    /// A return over `max_return_bytes` (`size`, as it came on the wire)
    /// is kept as an error return that says so: the job shows why, and
    /// the stored bytes stay bounded.
    pub(crate) fn cap_return(&self, ret: &mut ReturnLoad, size: usize) {
        let max = self.cfg.max_return_bytes;
        if size <= max {
            return;
        }
        let n = bump(&self.counters.returns_too_large);
        if n.is_power_of_two() {
            warn!(jid = %ret.jid, minion = %ret.id, bytes = size, max, count = n, "return over max_return_bytes replaced by an error");
        }
        ret.ret = serde_json::Value::String(format!(
            "The return of {} bytes was refused by master {}: it is larger than max_return_bytes ({max})",
            size, self.cfg.id
        ));
        ret.retcode = 1;
        ret.success = false;
        ret.out = None;
    }

    /// Forget the watchers of jobs whose `salt` has gone (housekeeping).
    pub(crate) fn forget_closed_watchers(&self) -> usize {
        lock(&self.watchers).forget_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const J1: &str = "20260101000000000001";
    const J2: &str = "20260101000000000002";

    fn jid(text: &str) -> Jid {
        Jid::parse(text).expect("jid")
    }

    #[test]
    fn watchers_of_finished_jobs_are_forgotten() {
        let mut w = Watchers::default();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (live_tx, _live_rx) = mpsc::unbounded_channel();
        let (gone_tx, gone_rx) = mpsc::unbounded_channel();
        let watcher = |tx| JobWatcher {
            tx,
            queue: Arc::new(WatchQueue::default()),
        };
        w.by_jid.insert(jid(J1), vec![watcher(done_tx)]);
        w.by_jid
            .insert(jid(J2), vec![watcher(live_tx), watcher(gone_tx)]);
        assert_eq!(w.forget_closed(), 0, "every watcher still listens");
        drop(done_rx);
        drop(gone_rx);
        assert_eq!(w.forget_closed(), 1);
        assert!(!w.by_jid.contains_key(J1));
        assert_eq!(w.by_jid[J2].len(), 1, "the live watcher of j2 stays");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_watcher_of_a_job_gets_each_stored_return_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = brine_common::config::MasterConfig {
            id: "watchers_test_master".into(),
            ..crate::master::test_config(dir.path())
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let master = crate::master::Master::start(cfg, shutdown.clone())
            .await
            .expect("master starts");
        let state = master.state().clone();
        let jid = Jid::from_micros(chrono::Utc::now().timestamp_micros());
        // Three watchers, the middle one gone before the return: the first
        // gets a copy, the last the return itself.
        let mut first = state.watch_job(&jid);
        drop(state.watch_job(&jid));
        let mut last = state.watch_job(&jid);
        let ret = ReturnLoad {
            jid: jid.clone(),
            id: "m1".into(),
            fun: "test.ping".into(),
            fun_args: vec![serde_json::json!("arg")],
            ret: serde_json::json!({"deep": [1, 2, 3]}),
            retcode: 0,
            success: true,
            out: None,
            trace: None,
        };
        assert!(state.accept_return(ret.clone()));
        assert!(!state.accept_return(ret.clone()), "duplicate");
        let wait = std::time::Duration::from_secs(10);
        for w in [&mut first, &mut last] {
            let got = tokio::time::timeout(wait, w.recv())
                .await
                .expect("a return within 10 s")
                .expect("a return");
            assert_eq!(got, ret);
            assert!(w.rx.try_recv().is_err(), "the duplicate is not sent");
        }
        assert_eq!(
            lock(&state.watchers).by_jid[&jid].len(),
            2,
            "the gone one is forgotten"
        );
        shutdown.cancel();
    }

    #[test]
    fn dedup_remembers_only_stored_returns() {
        let mut d = Dedup::default();
        let j = jid(J1);
        assert_eq!(d.begin(&j, "m1"), None, "first copy");
        assert_eq!(d.begin(&j, "m1"), Some(Pair::Writing(1)), "copy in flight");
        // Both writes fail (a full disk): the pair is forgotten, so the
        // sender's resend is taken as new.
        assert!(!d.written(&j, "m1", false));
        assert!(!d.written(&j, "m1", false));
        assert_eq!(d.pairs, 0);
        assert_eq!(d.begin(&j, "m1"), None, "resend after a failed write");
        assert!(d.written(&j, "m1", true), "newly stored");
        assert_eq!(d.begin(&j, "m1"), Some(Pair::Stored));
        assert!(
            !d.written(&j, "m1", true),
            "a stored pair is not news twice"
        );
        // A first write that fails while a copy's write succeeds: stored.
        assert_eq!(d.begin(&j, "m2"), None);
        assert_eq!(d.begin(&j, "m2"), Some(Pair::Writing(1)));
        assert!(!d.written(&j, "m2", false));
        assert!(d.written(&j, "m2", true));
        assert_eq!(d.begin(&j, "m2"), Some(Pair::Stored));
    }
}
