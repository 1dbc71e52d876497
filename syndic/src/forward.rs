//! Upward traffic of a syndic: returns and roster.
//!
//! Returns of jobs that came from above (and, with `syndic_forward_all`,
//! of jobs published at this syndic or sent up to it from below) are
//! written to a durable spool
//! (SQLite) as they arrive, then forwarded in batches (every
//! `syndic_forward_interval_ms` or `syndic_forward_batch` returns) and
//! deleted from the spool only once the master above acknowledged the
//! batch. So a syndic killed mid-job, or cut off from the master above,
//! loses nothing it had received; the spool is bounded and counts what it
//! would drop. The subtree is reported upward as roster deltas (a full
//! report after every new upstream session). A job that did not come from
//! above has its load sent up ([`RequestBody::SyndicJob`]) and
//! acknowledged before any of its returns, so the master above knows the
//! job (scoped to this syndic's subtree) when they arrive.

use crate::upstream::Upstream;
use brine_common::link::LinkHandle;
use brine_common::proto::{RequestBody, ReturnLoad};
use brine_master::daemon::MasterState;
use brine_master::spool::Spool;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Where recent jobs came from: jid → relayed from above (true) or
/// published here or sent up from below (false). Bounded; a jid not in memory (older, or from
/// before a restart) is looked up in the job cache once and remembered.
#[derive(Default)]
pub struct Relayed {
    seen: Mutex<(HashMap<String, bool>, VecDeque<String>)>,
}

const RELAYED_MAX: usize = 100_000;

impl Relayed {
    /// This job came from above.
    pub fn insert(&self, jid: &str) {
        self.remember(jid, true);
    }

    fn remember(&self, jid: &str, above: bool) {
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.insert(jid.to_string(), above).is_none() {
            g.1.push_back(jid.to_string());
            while g.1.len() > RELAYED_MAX {
                if let Some(old) = g.1.pop_front() {
                    g.0.remove(&old);
                }
            }
        }
    }

    pub(crate) fn get(&self, jid: &str) -> Option<bool> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(jid)
            .copied()
    }
}

/// Did this job come from above? Memory first; otherwise the job cache is
/// flushed and read once for the jid (blocking: call from a blocking
/// thread), so the returns of jobs published here cost one lookup per job,
/// not one per return.
fn from_above(state: &MasterState, relayed: &Relayed, jid: &str) -> bool {
    if let Some(above) = relayed.get(jid) {
        return above;
    }
    let _ = state.jobs.flush();
    match state.jobs.lookup_jid(jid) {
        Ok(Some(rec)) => {
            // Relayed jobs carry this syndic in their path after the
            // master(s) above; one published here starts with it, and one
            // sent up from below does not name it.
            let me = &state.cfg.id;
            let above =
                rec.load.path.first().is_some_and(|p| p != me) && rec.load.path.contains(me);
            relayed.remember(jid, above);
            above
        }
        // Unknown or unreadable: not remembered, asked again next time.
        _ => false,
    }
}

/// Collect returns into the spool (one transaction per burst).
pub async fn spool_returns(
    state: Arc<MasterState>,
    relayed: Arc<Relayed>,
    spool: Arc<Spool>,
    mut rx: mpsc::Receiver<ReturnLoad>,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.recv() => r,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < 5000 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let st = state.clone();
        let rel = relayed.clone();
        let sp = spool.clone();
        let res = tokio::task::spawn_blocking(move || {
            let all = st.cfg.syndic_forward_all;
            let keep: Vec<ReturnLoad> = batch
                .into_iter()
                .filter(|r| all || from_above(&st, &rel, &r.jid))
                .collect();
            if keep.is_empty() {
                return Ok(0);
            }
            sp.push(&keep)
        })
        .await;
        match res {
            Ok(Ok(n)) if n > 0 => wake.notify_one(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "could not spool returns"),
            Err(e) => warn!(error = %e, "spool task failed"),
        }
    }
}

/// Which upstream session has an acknowledged full roster report. Returns
/// are forwarded only within that session: a master that does not know a
/// syndic's subtree yet refuses its returns, and a refused return is gone.
///
/// It also knows which roster version the master above has acknowledged
/// in that session, and wakes the reporter when a return waits for a
/// minion that joined after the last report.
#[derive(Default)]
pub struct RosterGate {
    /// Session id (see [`Upstream::session`]; 0 = none yet) and the roster
    /// version acknowledged in it.
    reported: Mutex<(u64, u64)>,
    /// Ask for a report now instead of at the next tick.
    report_now: tokio::sync::Notify,
    /// A report was acknowledged (a held batch looks again).
    opened: tokio::sync::Notify,
}

impl RosterGate {
    fn open(&self, session: u64, version: u64) {
        *self.reported.lock().unwrap_or_else(|e| e.into_inner()) = (session, version);
        self.opened.notify_one();
    }

    /// May returns go up in this session?
    pub fn is_open(&self, session: u64) -> bool {
        session != 0 && self.reported(session).is_some()
    }

    /// The roster version acknowledged above in `session`.
    fn reported(&self, session: u64) -> Option<u64> {
        let (s, v) = *self.reported.lock().unwrap_or_else(|e| e.into_inner());
        (s == session).then_some(v)
    }
}

/// When batches of returns go up: `syndic_forward_interval_ms` and
/// `syndic_forward_batch`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub interval: Duration,
    pub batch: usize,
}

/// How long a batch waits for a roster report naming a minion that joined
/// after the last one. Reports go every second at most and are asked for
/// at once, so this is only reached when reporting is failing; the batch
/// then goes anyway (the master above may refuse those returns).
const ROSTER_WAIT: Duration = Duration::from_secs(5);

/// Batches sent upward and not yet answered, at most. Each waits for the
/// master above to commit it to its job cache, so this caps a syndic at
/// `MAX_IN_FLIGHT x batch` returns per round trip: with 4 (2000 returns)
/// and a ~100 ms round trip to a busy top, 2000 minions returning 10 jobs
/// a second were right at the cap, and a hiccup left a backlog (10 s of
/// returns) that never drained. 16 x 500 returns is ~8 MB held at most.
const MAX_IN_FLIGHT: usize = 16;

/// How long the master above has to answer a batch before it is sent
/// again (the link also resends it after a new sign-in).
const BATCH_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// One batch on its way up: spool sequence numbers and the answer.
struct InFlight {
    first: i64,
    last: i64,
    n: usize,
    ack: std::pin::Pin<Box<tokio::time::Timeout<tokio::sync::oneshot::Receiver<bool>>>>,
}

/// Send spooled returns upward in batches; delete each batch from the
/// spool once the master above acknowledged it.
///
/// A batch leaves as soon as `pace.batch` returns are waiting, or
/// `pace.interval` after the previous one left, whichever comes first. Up
/// to [`MAX_IN_FLIGHT`] batches are on their way at once; a batch that is
/// not answered in time, or a new upstream session, sends everything still
/// in the spool again (the master above keeps the first copy of a return).
#[allow(clippy::too_many_arguments)]
pub async fn forward_returns(
    state: Arc<MasterState>,
    relayed: Arc<Relayed>,
    up: Upstream,
    gate: Arc<RosterGate>,
    spool: Arc<Spool>,
    pace: Pace,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let (interval, batch) = (pace.interval, pace.batch.max(1));
    // Jobs not from above whose load the master above has answered
    // (`syndic_forward_all`); it keeps them in its job cache, so this
    // outlives upstream sessions.
    let sent_up = Relayed::default();
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    // Highest spool sequence number handed to the current session.
    let mut sent_upto = i64::MIN;
    let mut session = 0u64;
    let mut last_sent = tokio::time::Instant::now();
    // Since when the next batch waits for a roster report.
    let mut held_since: Option<tokio::time::Instant> = None;
    loop {
        let link = up.session().filter(|(s, _)| gate.is_open(*s));
        let mut holding = false;
        if let Some((sess, _)) = &link {
            if *sess != session {
                // New session above: whatever was on its way may be lost.
                session = *sess;
                in_flight.clear();
                sent_upto = i64::MIN;
            }
        }
        let on_way: usize = in_flight.iter().map(|f| f.n).sum();
        let sp = spool.clone();
        let waiting = tokio::task::spawn_blocking(move || sp.len())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0)
            .saturating_sub(on_way);
        let due = waiting >= batch || (waiting > 0 && last_sent.elapsed() >= interval);
        if let (Some((_, link)), true, true) = (&link, due, in_flight.len() < MAX_IN_FLIGHT) {
            let sp = spool.clone();
            let after = sent_upto;
            let items = match tokio::task::spawn_blocking(move || sp.peek_after(after, batch)).await
            {
                Ok(Ok(i)) => i,
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot read the spool");
                    vec![]
                }
                Err(_) => vec![],
            };
            // Returns of minions no acknowledged roster report has named
            // yet: the master above would refuse them (not in this
            // syndic's subtree), and a refused return is gone.
            let waiting_for = gate.reported(session).map_or(0, |v| {
                state
                    .roster
                    .unreported(items.iter().map(|(_, r)| r.id.as_str()), v)
            });
            if waiting_for > 0 {
                let since = *held_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() < ROSTER_WAIT {
                    holding = true;
                    gate.report_now.notify_one();
                } else {
                    warn!(
                        returns = waiting_for,
                        "minions not yet in a roster report above after {} s; sending their returns anyway",
                        ROSTER_WAIT.as_secs()
                    );
                }
            }
            if holding {
                debug!(
                    returns = waiting_for,
                    "batch waits for a roster report naming its minions"
                );
            } else if state.cfg.syndic_forward_all
                && !send_jobs_up(&state, &relayed, &sent_up, link, &items, &shutdown).await
            {
                // A job's load was not acknowledged above: its returns
                // would be refused, so the batch waits for the next round.
                last_sent = tokio::time::Instant::now();
            } else if let (Some((first, _)), Some((last, _))) = (items.first(), items.last()) {
                held_since = None;
                let (first, last) = (*first, *last);
                let rets: Vec<ReturnLoad> = items.into_iter().map(|(_, r)| r).collect();
                let n = rets.len();
                let ack = link.send_acked(RequestBody::SyndicReturns(rets));
                in_flight.push_back(InFlight {
                    first,
                    last,
                    n,
                    ack: Box::pin(tokio::time::timeout(BATCH_ACK_TIMEOUT, ack)),
                });
                sent_upto = last;
                last_sent = tokio::time::Instant::now();
                // Fill the pipeline before waiting.
                continue;
            }
            if !holding {
                // Counted but not readable (an undecodable entry was just
                // removed): wait an interval rather than spin.
                last_sent = tokio::time::Instant::now();
            }
        }
        // Wait for an answer, new returns, the interval or the link.
        let pause = match (&link, waiting) {
            // Held: look again when a report is acknowledged, or give up
            // waiting after ROSTER_WAIT.
            _ if holding => {
                held_since.map_or(Duration::ZERO, |t| ROSTER_WAIT.saturating_sub(t.elapsed()))
            }
            (None, _) => Duration::from_millis(200),
            (Some(_), 0) => Duration::from_secs(1),
            (Some(_), _) if in_flight.len() >= MAX_IN_FLIGHT => Duration::from_secs(1),
            (Some(_), _) => interval.saturating_sub(last_sent.elapsed()),
        };
        let answer = async {
            match in_flight.front_mut() {
                Some(f) => f.ack.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            acked = answer => {
                let Some(f) = in_flight.pop_front() else { continue };
                match acked {
                    Ok(Ok(ok)) => {
                        // Acknowledged, or refused for minions outside the
                        // subtree the master above acknowledged (logged and
                        // counted by the link): either way it is settled.
                        let sp = spool.clone();
                        let (first, last) = (f.first, f.last);
                        if let Ok(Err(e)) =
                            tokio::task::spawn_blocking(move || sp.ack_range(first, last)).await
                        {
                            warn!(error = %e, "cannot trim the spool");
                        }
                        debug!(returns = f.n, accepted = ok, "forwarded returns upward");
                    }
                    _ => {
                        info!(returns = f.n, "batch not acknowledged in time; sending the spool again");
                        in_flight.clear();
                        sent_upto = i64::MIN;
                    }
                }
            }
            _ = wake.notified() => {}
            _ = gate.opened.notified(), if holding => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// How long the master above has to answer a job sent up.
const JOB_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// With `syndic_forward_all`: sends up the load of every job in `items`
/// that did not come from above and has not been answered yet, one at a
/// time, each waiting for its answer. A refused job (or one whose load is
/// not in the job cache) is logged and settled: its returns will be
/// refused above. False when an answer did not come in time.
async fn send_jobs_up(
    state: &Arc<MasterState>,
    relayed: &Arc<Relayed>,
    sent_up: &Relayed,
    link: &LinkHandle,
    items: &[(i64, ReturnLoad)],
    shutdown: &CancellationToken,
) -> bool {
    let mut jids: Vec<String> = items
        .iter()
        .map(|(_, r)| r.jid.clone())
        .filter(|j| sent_up.get(j).is_none())
        .collect();
    jids.sort();
    jids.dedup();
    if jids.is_empty() {
        return true;
    }
    let (st, rel) = (state.clone(), relayed.clone());
    let loads = tokio::task::spawn_blocking(move || {
        jids.into_iter()
            .filter(|j| !from_above(&st, &rel, j))
            .map(|j| {
                let load = st.jobs.job_load(&j).ok().flatten();
                (j, load)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (jid, load) in loads {
        let Some(load) = load else {
            warn!(jid = %jid, "no stored load for a job published here; its returns will be refused above");
            sent_up.insert(&jid);
            continue;
        };
        let ack = link.send_acked(RequestBody::SyndicJob(load));
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return false,
            a = tokio::time::timeout(JOB_ACK_TIMEOUT, ack) => a,
        };
        match answer {
            Ok(Ok(true)) => debug!(jid = %jid, "job published here sent upward"),
            Ok(Ok(false)) => {
                warn!(jid = %jid, "the master above refused a job published here; its returns stay here")
            }
            _ => {
                info!(jid = %jid, "job sent upward not acknowledged in time; trying again");
                return false;
            }
        }
        sent_up.insert(&jid);
    }
    true
}

/// Report the subtree upward as deltas; a full report per new session
/// (a new sign-in above, or another master after failover). Opens `gate`
/// for the session once a report in it is acknowledged.
pub async fn report_roster(
    state: Arc<MasterState>,
    up: Upstream,
    gate: Arc<RosterGate>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut sent_version = 0u64;
    let mut session = 0u64;
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = gate.report_now.notified() => {}
        }
        let Some((sess, link)) = up.session() else {
            continue;
        };
        if sess != session {
            session = sess;
            sent_version = 0;
        }
        if sent_version != 0 && state.roster.version() == sent_version {
            continue;
        }
        let (delta, v) = state.roster.delta_since(sent_version);
        if sent_version != 0 && delta.upsert.is_empty() && delta.remove.is_empty() {
            sent_version = v;
            gate.open(sess, v);
            continue;
        }
        let n = delta.upsert.len();
        let ack = link.send_acked(RequestBody::Roster(delta));
        let acked = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = tokio::time::timeout(Duration::from_secs(30), ack) => a,
        };
        if let Ok(Ok(true)) = acked {
            debug!(entries = n, version = v, "roster reported upward");
            sent_version = v;
            gate.open(sess, v);
        }
    }
}
