//! Upward traffic of a syndic: one [`Forwarder`] sends the roster and the
//! returns to the master above as one ordered stream.
//!
//! The returns come from the job cache's outbox, where the downstream
//! master wrote each one in the same transaction as the return itself
//! (jobs relayed from above, and with `syndic_forward_all` the jobs
//! published here or sent up from below), before it acknowledged it to its
//! minion. The forwarder reads the outbox from a cursor, sends batches
//! by an adaptive rule ([`batch_due`]: at once while no batch is on its
//! way, else when an answer comes, when `syndic_forward_batch` returns
//! wait, or `syndic_forward_interval_ms` after the last batch at most)
//! with up to [`MAX_IN_FLIGHT`] requests on their way at once, and deletes a batch from the outbox
//! ([`Below::outbox_ack`]) only once the master above answered it. After a
//! new upstream session, or a request not answered in time, it starts
//! again from the oldest unacknowledged return (the master above keeps the
//! first copy). So a syndic killed at any moment, or cut off from above,
//! loses nothing it acknowledged.
//!
//! What a batch needs above travels in the same stream just before it, and
//! the batch waits for its answer: the full roster report at the start of
//! a session, a delta naming minions no acknowledged report has named yet
//! (a master above refuses returns of minions outside a syndic's reported
//! subtree, and a refused return is gone), and the load of a job published
//! here ([`RequestBody::SyndicJob`]). Roster deltas also go up on their own
//! at least every second when the subtree changed.
//!
//! The state machine is written against two small traits, [`Below`] (the
//! outbox and the roster) and [`Uplink`] (send a request, learn its
//! answer), so it is tested without sockets, on paused time.

use crate::upstream::Upstream;
use brine_common::jid::Jid;
use brine_common::proto::{JobLoad, RequestBody, ReturnLoad, RosterDelta};
use brine_master::job_cache::OutboxEntry;
use brine_master::published::ForwardUp;
use brine_master::state::MasterState;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Requests (batches, roster reports, job loads) sent upward and not yet
/// answered, at most. Each batch waits for the master above to commit it,
/// so this caps a syndic at `MAX_IN_FLIGHT x syndic_forward_batch` returns
/// per round trip: with 4 (2000 returns) and a ~100 ms round trip to a
/// busy top, 2000 minions returning 10 jobs a second were right at the
/// cap. 16 x 500 returns is ~8 MB held at most.
pub const MAX_IN_FLIGHT: usize = 16;

/// How long the master above has to answer a request before everything
/// not acknowledged is sent again.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// For how long after the forwarder starts a batch waits for minions its
/// returns name that the roster does not know at all. That happens after
/// a restart: the roster comes back from a snapshot taken every few
/// seconds, so a minion that joined just before a kill is missing until it
/// signs in again (it does once its heartbeat finds the old session gone).
/// Sent before, its returns would be refused above as coming from outside
/// this subtree, and lost. Later (a minion whose key was deleted since)
/// nothing waits.
pub const ROSTER_WAIT: Duration = Duration::from_secs(60);

/// How often the forwarder looks again while not signed in above.
const LINK_POLL: Duration = Duration::from_millis(200);

/// Jids whose load the master above has answered, remembered (the master
/// above keeps them in its job cache, so this outlives sessions); the
/// oldest are forgotten first, and a forgotten one is only sent again.
const JOBS_UP_MAX: usize = 100_000;

/// Batches on their way up below which a partial batch leaves at once.
/// One is Nagle's rule: a quiet fleet's return goes up as soon as it is
/// written; under load, returns gather while one batch is on its way and
/// leave together when its answer comes (or the batch fills).
pub const EAGER_IN_FLIGHT: usize = 1;

/// Whether a batch leaves now, given `waiting` items not yet on their
/// way, the batch size `full`, `on_way` batches sent and not answered,
/// the time `since_last` batch left, the `min_gap` an eager batch keeps
/// from the previous one and the pacing `interval`.
///
/// A full batch always leaves (the window permitting). A partial one
/// leaves at once while fewer than [`EAGER_IN_FLIGHT`] batches are on
/// their way and `min_gap` has passed, so nothing waits when nothing is in
/// flight on a quiet link; otherwise it waits for an answer (and the gap)
/// or the batch to fill, but never longer than `interval` after the last
/// batch (the bound the fixed pacing gave). Returns use no gap; events use
/// one so a steady stream goes in batches of many.
pub fn batch_due(
    waiting: usize,
    full: usize,
    on_way: usize,
    since_last: Duration,
    min_gap: Duration,
    interval: Duration,
) -> bool {
    waiting > 0
        && (waiting >= full
            || (on_way < EAGER_IN_FLIGHT && since_last >= min_gap)
            || since_last >= interval)
}

/// How long until a partial batch becomes due by [`batch_due`]'s clock
/// alone, `since_last` the previous batch left (an answer or more items
/// may make it due sooner): the gap while fewer than [`EAGER_IN_FLIGHT`]
/// batches are on their way, else the interval.
pub fn batch_wait(
    on_way: usize,
    since_last: Duration,
    min_gap: Duration,
    interval: Duration,
) -> Duration {
    let due_after = if on_way < EAGER_IN_FLIGHT {
        min_gap.min(interval)
    } else {
        interval
    };
    due_after.saturating_sub(since_last)
}

/// The side below the forwarder: the outbox and the roster of the subtree.
pub trait Below: Send + Sync + 'static {
    /// Up to `limit` outbox entries after `cursor`, oldest first (empty on
    /// a read error, which the implementation logs).
    fn outbox_after(
        &self,
        cursor: i64,
        limit: usize,
    ) -> impl Future<Output = Vec<OutboxEntry>> + Send;
    /// The master above has every entry up to `up_to`.
    fn outbox_ack(&self, up_to: i64) -> impl Future<Output = ()> + Send;
    /// Entries waiting (sent or not).
    fn outbox_len(&self) -> usize;
    /// Resolves once entries were added since it last resolved.
    fn outbox_added(&self) -> impl Future<Output = ()> + Send;
    /// The roster's version: it grows with every change of the subtree.
    fn roster_version(&self) -> u64;
    /// What changed after `version` (all of it for 0) and the version now.
    fn roster_delta_since(&self, version: u64) -> (RosterDelta, u64);
    /// How many of `ids` joined after roster version `version`.
    fn unreported(&self, ids: &[&str], version: u64) -> usize;
    /// How many of `ids` the roster does not know at all.
    fn unknown(&self, ids: &[&str]) -> usize;
    /// The stored load of a job published here (None if unknown).
    fn job_load(&self, jid: &Jid) -> impl Future<Output = Option<JobLoad>> + Send;
}

/// The link to the master above, as the forwarder uses it.
pub trait Uplink: Send + Sync + 'static {
    /// The current session above: changes with every sign-in and every
    /// failover, never otherwise; None while not signed in.
    fn session(&self) -> Option<u64>;
    /// Send `body` after everything sent before it. The answer: `true`
    /// acknowledged, `false` refused; a dropped sender means the request
    /// may not have arrived (no session, or a new one began).
    fn send(&self, body: RequestBody) -> oneshot::Receiver<bool>;
}

/// When batches leave: `syndic_forward_interval_ms` and
/// `syndic_forward_batch`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub interval: Duration,
    pub batch: usize,
}

impl Pace {
    /// How often roster deltas go up on their own: with the returns, but
    /// between 200 ms and 1 s.
    fn roster_every(&self) -> Duration {
        self.interval
            .clamp(Duration::from_millis(200), Duration::from_secs(1))
    }
}

/// What one request on its way up carries.
#[derive(Debug)]
enum Item {
    /// A roster report up to this roster version.
    Roster { version: u64 },
    /// The load of a job published here.
    Job { jid: Jid },
    /// Outbox entries up to `last` (and after the previous batch).
    Batch { last: i64, returns: usize },
}

/// One request on its way up and its answer (with its deadline).
struct InFlight {
    item: Item,
    answer: Pin<Box<tokio::time::Timeout<oneshot::Receiver<bool>>>>,
}

/// Jids remembered up to a bound, oldest forgotten first.
#[derive(Default)]
struct JidSet {
    set: HashSet<Jid>,
    order: VecDeque<Jid>,
}

impl JidSet {
    fn insert(&mut self, jid: &Jid) {
        if self.set.insert(jid.clone()) {
            self.order.push_back(jid.clone());
            while self.order.len() > JOBS_UP_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, jid: &Jid) -> bool {
        self.set.contains(jid)
    }
}

/// Why the next batch cannot go yet.
#[derive(Debug, PartialEq, Eq)]
enum Fill {
    /// Nothing (more) to send now.
    Idle,
    /// The window is full, or the batch waits for an answer to something
    /// it needs (a roster report, a job's load).
    Waiting,
}

/// The one task that sends a syndic's roster and returns upward.
pub struct Forwarder<B, U> {
    below: B,
    up: U,
    pace: Pace,
    /// The upstream session this state belongs to (0: none yet).
    session: u64,
    /// Highest outbox sequence number sent in this session.
    cursor: i64,
    /// Requests on their way, oldest first; answered in this order.
    window: VecDeque<InFlight>,
    /// Roster version the master above acknowledged in this session.
    roster_acked: Option<u64>,
    /// Roster version of the report on its way, if one is.
    roster_sent: Option<u64>,
    last_report: Instant,
    last_batch: Instant,
    /// Jobs published here whose load the master above answered.
    jobs_up: JidSet,
    /// Jobs whose load is on its way.
    jobs_sent: HashSet<Jid>,
    /// When this forwarder started ([`ROSTER_WAIT`]).
    started: Instant,
    /// The warning about minions the roster does not know was logged.
    unknown_warned: bool,
}

impl<B: Below, U: Uplink> Forwarder<B, U> {
    pub fn new(below: B, up: U, pace: Pace) -> Self {
        let now = Instant::now();
        Forwarder {
            below,
            up,
            pace: Pace {
                interval: pace.interval,
                batch: pace.batch.max(1),
            },
            session: 0,
            cursor: i64::MIN,
            window: VecDeque::new(),
            roster_acked: None,
            roster_sent: None,
            last_report: now,
            last_batch: now,
            jobs_up: JidSet::default(),
            jobs_sent: HashSet::new(),
            started: now,
            unknown_warned: false,
        }
    }

    /// Forward until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let signed_in = match self.up.session() {
                Some(s) => {
                    if s != self.session {
                        self.new_session(s);
                    }
                    true
                }
                None => false,
            };
            let fill = if signed_in {
                self.fill().await
            } else {
                Fill::Idle
            };
            let pause = self.pause(signed_in, &fill);
            let (window, below) = (&mut self.window, &self.below);
            let answer = async {
                match window.front_mut() {
                    Some(f) => f.answer.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                a = answer => self.answered(a).await,
                _ = below.outbox_added() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// A new session above: whatever was on its way may be lost, and the
    /// master there knows nothing of this subtree yet (it may have
    /// restarted, or be another master after a failover).
    fn new_session(&mut self, session: u64) {
        if self.session != 0 {
            info!(
                waiting = self.below.outbox_len(),
                "new session above: roster and unacknowledged returns go up again"
            );
        }
        self.session = session;
        self.restart();
    }

    /// Send again from the oldest unacknowledged return, after a full
    /// roster report.
    fn restart(&mut self) {
        self.window.clear();
        self.cursor = i64::MIN;
        self.roster_acked = None;
        self.roster_sent = None;
        self.jobs_sent.clear();
    }

    fn send(&mut self, body: RequestBody, item: Item) {
        let answer = self.up.send(body);
        self.window.push_back(InFlight {
            item,
            answer: Box::pin(tokio::time::timeout(ACK_TIMEOUT, answer)),
        });
    }

    /// Send a roster report of what changed after the acknowledged
    /// version (everything at the start of a session).
    fn report_roster(&mut self) {
        let since = self.roster_acked.unwrap_or(0);
        let (delta, version) = self.below.roster_delta_since(since);
        debug!(
            entries = delta.upsert.len(),
            removed = delta.remove.len(),
            full = delta.full,
            version,
            "roster report upward"
        );
        self.roster_sent = Some(version);
        self.last_report = Instant::now();
        self.send(RequestBody::Roster(delta), Item::Roster { version });
    }

    /// Returns waiting in the outbox and not yet on their way.
    fn waiting(&self) -> usize {
        let on_way: usize = self
            .window
            .iter()
            .map(|f| match f.item {
                Item::Batch { returns, .. } => returns,
                _ => 0,
            })
            .sum();
        self.below.outbox_len().saturating_sub(on_way)
    }

    /// Batches of returns on their way (roster reports and job loads
    /// not counted).
    fn batches_on_way(&self) -> usize {
        self.window
            .iter()
            .filter(|f| matches!(f.item, Item::Batch { .. }))
            .count()
    }

    /// Send what is due, in order, while the window has room.
    async fn fill(&mut self) -> Fill {
        // Bounded: every round sends one request into a window of
        // MAX_IN_FLIGHT, or returns.
        loop {
            if self.window.len() >= MAX_IN_FLIGHT {
                return Fill::Waiting;
            }
            let Some(acked) = self.roster_acked else {
                // The session's full report goes first; nothing else
                // goes before it is answered.
                if self.roster_sent.is_none() {
                    self.report_roster();
                }
                return Fill::Waiting;
            };
            if self.roster_sent.is_none()
                && self.below.roster_version() != acked
                && self.last_report.elapsed() >= self.pace.roster_every()
            {
                self.report_roster();
                continue;
            }
            let due = batch_due(
                self.waiting(),
                self.pace.batch,
                self.batches_on_way(),
                self.last_batch.elapsed(),
                Duration::ZERO,
                self.pace.interval,
            );
            if !due {
                return Fill::Idle;
            }
            let entries = self.below.outbox_after(self.cursor, self.pace.batch).await;
            let Some(last) = entries.last().map(|e| e.seq) else {
                // Counted but not readable (dropped meanwhile): wait an
                // interval rather than spin.
                self.last_batch = Instant::now();
                return Fill::Idle;
            };
            if self.needs_roster(&entries, acked) || self.needs_jobs(&entries).await {
                return Fill::Waiting;
            }
            let returns: Vec<ReturnLoad> = entries.into_iter().map(|e| e.ret).collect();
            let n = returns.len();
            self.send(
                RequestBody::SyndicReturns(returns.into()),
                Item::Batch { last, returns: n },
            );
            self.cursor = last;
            self.last_batch = Instant::now();
        }
    }

    /// Whether `entries` name minions that joined after the acknowledged
    /// report; if so a report naming them is sent (unless one is on its
    /// way: the batch waits for its answer either way).
    fn needs_roster(&mut self, entries: &[OutboxEntry], acked: u64) -> bool {
        let ids: Vec<&str> = entries.iter().map(|e| e.ret.id.as_str()).collect();
        let unknown = self.below.unknown(&ids);
        if unknown > 0 {
            if self.started.elapsed() < ROSTER_WAIT {
                debug!(
                    returns = unknown,
                    "batch waits for minions the restored roster lacks to sign in again"
                );
                return true;
            }
            if !self.unknown_warned {
                self.unknown_warned = true;
                warn!(
                    returns = unknown,
                    "returns of minions this syndic's roster does not know go up anyway; the master above will refuse them"
                );
            }
        }
        let missing = self.below.unreported(&ids, acked);
        if missing == 0 {
            return false;
        }
        if self.roster_sent.is_none() {
            debug!(
                returns = missing,
                "batch waits for a roster report naming its minions"
            );
            self.report_roster();
        }
        true
    }

    /// Whether `entries` hold returns of jobs published here whose load
    /// the master above has not answered; the loads not yet on their way
    /// are sent (as many as the window takes).
    async fn needs_jobs(&mut self, entries: &[OutboxEntry]) -> bool {
        let mut jids: Vec<&Jid> = entries
            .iter()
            .filter(|e| e.up == ForwardUp::Published)
            .map(|e| &e.ret.jid)
            .filter(|j| !self.jobs_up.contains(j))
            .collect();
        jids.sort_unstable();
        jids.dedup();
        let mut waits = false;
        for jid in jids {
            if self.jobs_sent.contains(jid) {
                waits = true;
                continue;
            }
            if self.window.len() >= MAX_IN_FLIGHT {
                return true;
            }
            match self.below.job_load(jid).await {
                Some(load) => {
                    self.jobs_sent.insert(jid.clone());
                    self.send(RequestBody::SyndicJob(load), Item::Job { jid: jid.clone() });
                    waits = true;
                }
                None => {
                    warn!(jid = %jid, "no stored load for a job published here; its returns will be refused above");
                    self.jobs_up.insert(jid);
                }
            }
        }
        waits
    }

    /// The oldest request on its way was answered (or not in time).
    async fn answered(
        &mut self,
        answer: Result<Result<bool, oneshot::error::RecvError>, tokio::time::error::Elapsed>,
    ) {
        let Some(front) = self.window.pop_front() else {
            return;
        };
        let ok = match answer {
            Ok(Ok(ok)) => ok,
            Ok(Err(_)) => {
                // Not sent (no session), or the session ended under it.
                debug!(item = ?front.item, "request upward dropped by the link; sending again from the oldest unacknowledged");
                self.restart();
                return;
            }
            Err(_) => {
                info!(
                    item = ?front.item,
                    waiting = self.below.outbox_len(),
                    "request upward not acknowledged in time; sending the outbox again"
                );
                self.restart();
                return;
            }
        };
        match front.item {
            Item::Roster { version } => {
                if !ok {
                    // Its returns would be refused; holding them back
                    // would hold them forever.
                    warn!(
                        version,
                        "the master above refused the roster report; returns go up anyway"
                    );
                }
                self.roster_sent = None;
                self.roster_acked = Some(version);
            }
            Item::Job { jid } => {
                if ok {
                    debug!(jid = %jid, "job published here sent upward");
                } else {
                    warn!(jid = %jid, "the master above refused a job published here; its returns will be refused there");
                }
                self.jobs_sent.remove(&jid);
                self.jobs_up.insert(&jid);
            }
            Item::Batch { last, returns } => {
                // Acknowledged, or refused for minions or jobs the master
                // above does not admit (logged and counted by the link):
                // either way it is settled.
                debug!(returns, accepted = ok, "forwarded returns upward");
                self.below.outbox_ack(last).await;
            }
        }
    }

    /// How long to wait when nothing answers and nothing new comes.
    fn pause(&self, signed_in: bool, fill: &Fill) -> Duration {
        if !signed_in {
            return LINK_POLL;
        }
        let roster = self.pace.roster_every();
        match fill {
            Fill::Waiting => roster,
            Fill::Idle if self.waiting() > 0 => batch_wait(
                self.batches_on_way(),
                self.last_batch.elapsed(),
                Duration::ZERO,
                self.pace.interval,
            )
            .min(roster),
            Fill::Idle => roster,
        }
    }
}

/// The real side below: the downstream master's job cache and roster.
pub struct SyndicBelow {
    state: Arc<MasterState>,
    wake: Arc<tokio::sync::Notify>,
}

impl SyndicBelow {
    pub fn new(state: Arc<MasterState>) -> Self {
        let wake = state.jobs().outbox_wakeup();
        SyndicBelow { state, wake }
    }
}

impl Below for SyndicBelow {
    fn outbox_after(
        &self,
        cursor: i64,
        limit: usize,
    ) -> impl Future<Output = Vec<OutboxEntry>> + Send {
        let st = self.state.clone();
        async move {
            match tokio::task::spawn_blocking(move || st.jobs().outbox_after(cursor, limit)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot read the outbox");
                    Vec::new()
                }
                Err(e) => {
                    warn!(error = %e, "outbox read failed");
                    Vec::new()
                }
            }
        }
    }

    fn outbox_ack(&self, up_to: i64) -> impl Future<Output = ()> + Send {
        let st = self.state.clone();
        async move {
            // Queues to the job cache's writer, which may make it wait.
            if let Err(e) = tokio::task::spawn_blocking(move || st.jobs().outbox_ack(up_to)).await {
                warn!(error = %e, "outbox acknowledgement failed");
            }
        }
    }

    fn outbox_len(&self) -> usize {
        self.state.jobs().outbox_len()
    }

    fn outbox_added(&self) -> impl Future<Output = ()> + Send {
        let wake = self.wake.clone();
        async move { wake.notified().await }
    }

    fn roster_version(&self) -> u64 {
        self.state.roster().version()
    }

    fn roster_delta_since(&self, version: u64) -> (RosterDelta, u64) {
        self.state.roster().delta_since(version)
    }

    fn unreported(&self, ids: &[&str], version: u64) -> usize {
        self.state.roster().unreported(ids.iter().copied(), version)
    }

    fn unknown(&self, ids: &[&str]) -> usize {
        self.state.roster().unknown(ids.iter().copied())
    }

    fn job_load(&self, jid: &Jid) -> impl Future<Output = Option<JobLoad>> + Send {
        let st = self.state.clone();
        let jid = jid.clone();
        async move {
            tokio::task::spawn_blocking(move || st.jobs().job_load(&jid).ok().flatten())
                .await
                .ok()
                .flatten()
        }
    }
}

impl Uplink for Upstream {
    fn session(&self) -> Option<u64> {
        Upstream::session(self).map(|(s, _)| s)
    }

    fn send(&self, body: RequestBody) -> oneshot::Receiver<bool> {
        match self.link() {
            Some(link) => link.send_acked(body),
            // No link yet: the dropped sender says "not sent".
            None => oneshot::channel().1,
        }
    }
}

#[cfg(test)]
mod tests;
