//! The forwarder's state machine on paused time, against an in-memory
//! outbox and roster ([`FakeBelow`]) and a link that hands each request
//! to the test with the sender of its answer ([`FakeUp`]).

use super::*;
use crate::test_util::ret;
use brine_common::proto::{RosterEntry, TargetType};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::{mpsc, Notify};

#[derive(Default)]
struct BelowState {
    rows: BTreeMap<i64, OutboxEntry>,
    next_seq: i64,
    /// Minion → roster version it joined at.
    minions: BTreeMap<String, u64>,
    version: u64,
    jobs: HashMap<String, JobLoad>,
    acks: Vec<i64>,
}

#[derive(Clone, Default)]
struct FakeBelow {
    state: Arc<Mutex<BelowState>>,
    wake: Arc<Notify>,
}

impl FakeBelow {
    fn lock(&self) -> std::sync::MutexGuard<'_, BelowState> {
        self.state.lock().expect("below")
    }

    /// A minion joins the subtree (a new roster version).
    fn join(&self, id: &str) {
        let mut g = self.lock();
        g.version += 1;
        let v = g.version;
        g.minions.insert(id.to_string(), v);
    }

    /// Returns of `ids` to `jid` land in the outbox.
    fn returns(&self, jid: &str, ids: &[&str], up: ForwardUp) {
        {
            let mut g = self.lock();
            for id in ids {
                g.next_seq += 1;
                let seq = g.next_seq;
                g.rows.insert(
                    seq,
                    OutboxEntry {
                        seq,
                        up,
                        ret: ret(jid, id),
                    },
                );
            }
        }
        self.wake.notify_one();
    }

    fn left(&self) -> Vec<String> {
        self.lock()
            .rows
            .values()
            .map(|e| e.ret.id.clone())
            .collect()
    }
}

impl Below for FakeBelow {
    fn outbox_after(
        &self,
        cursor: i64,
        limit: usize,
    ) -> impl Future<Output = Vec<OutboxEntry>> + Send {
        let rows: Vec<OutboxEntry> = self
            .lock()
            .rows
            .range(cursor.saturating_add(1)..)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect();
        async move { rows }
    }

    fn outbox_ack(&self, up_to: i64) -> impl Future<Output = ()> + Send {
        let mut g = self.lock();
        g.rows.retain(|seq, _| *seq > up_to);
        g.acks.push(up_to);
        async {}
    }

    fn outbox_len(&self) -> usize {
        self.lock().rows.len()
    }

    fn outbox_added(&self) -> impl Future<Output = ()> + Send {
        let wake = self.wake.clone();
        async move { wake.notified().await }
    }

    fn roster_version(&self) -> u64 {
        self.lock().version
    }

    fn roster_delta_since(&self, version: u64) -> (RosterDelta, u64) {
        let g = self.lock();
        let upsert = g
            .minions
            .iter()
            .filter(|(_, v)| **v > version)
            .map(|(id, _)| RosterEntry {
                id: id.clone(),
                grains: json!({}),
                connected: true,
                via: vec![],
            })
            .collect();
        (
            RosterDelta {
                full: version == 0,
                upsert,
                remove: vec![],
            },
            g.version,
        )
    }

    fn unreported(&self, ids: &[&str], version: u64) -> usize {
        let g = self.lock();
        ids.iter()
            .filter(|id| g.minions.get(**id).is_some_and(|v| *v > version))
            .count()
    }

    fn unknown(&self, ids: &[&str]) -> usize {
        let g = self.lock();
        ids.iter()
            .filter(|id| !g.minions.contains_key(**id))
            .count()
    }

    fn job_load(&self, jid: &Jid) -> impl Future<Output = Option<JobLoad>> + Send {
        let load = self.lock().jobs.get(jid.as_str()).cloned();
        async move { load }
    }
}

type Sent = (RequestBody, oneshot::Sender<bool>);

/// The link: session 0 is "not signed in".
#[derive(Clone)]
struct FakeUp {
    session: Arc<AtomicU64>,
    tx: mpsc::UnboundedSender<Sent>,
}

impl Uplink for FakeUp {
    fn session(&self) -> Option<u64> {
        Some(self.session.load(Ordering::Relaxed)).filter(|s| *s != 0)
    }

    fn send(&self, body: RequestBody) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send((body, tx));
        rx
    }
}

const JID: &str = "20261202000000000001";

/// A running forwarder with its fakes.
struct Rig {
    below: FakeBelow,
    session: Arc<AtomicU64>,
    rx: mpsc::UnboundedReceiver<Sent>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Rig {
    /// Minions `m0..m{n}` in the roster, signed in above (session 1).
    fn start(minions: usize, batch: usize) -> Rig {
        let below = FakeBelow::default();
        for i in 0..minions {
            below.join(&format!("m{i}"));
        }
        let session = Arc::new(AtomicU64::new(1));
        let (tx, rx) = mpsc::unbounded_channel();
        let up = FakeUp {
            session: session.clone(),
            tx,
        };
        let pace = Pace {
            interval: Duration::from_millis(100),
            batch,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(Forwarder::new(below.clone(), up, pace).run(shutdown.clone()));
        Rig {
            below,
            session,
            rx,
            shutdown,
            task,
        }
    }

    /// The next request sent upward (within a minute of paused time).
    async fn next(&mut self) -> Sent {
        tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
            .await
            .expect("a request within a minute")
            .expect("forwarder running")
    }

    /// Nothing is sent for 5 s of paused time.
    async fn quiet(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .is_err()
    }

    /// The session's full roster report, acknowledged.
    async fn roster_acked(&mut self) -> RosterDelta {
        let (body, ack) = self.next().await;
        let RequestBody::Roster(delta) = body else {
            panic!("expected a roster report, got {body:?}");
        };
        let _ = ack.send(true);
        delta
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

fn ids(body: &RequestBody) -> Vec<String> {
    match body {
        RequestBody::SyndicReturns(rets) => rets.returns.iter().map(|r| r.id.clone()).collect(),
        other => panic!("expected a batch of returns, got {other:?}"),
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn returns_go_up_in_order_after_the_roster_and_leave_the_outbox_when_acknowledged() {
    let mut rig = Rig::start(10, 4);
    let all: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    rig.below.returns(JID, &refs, ForwardUp::Relayed);
    // The session's full report first, and nothing before its answer.
    let (body, ack) = rig.next().await;
    let RequestBody::Roster(delta) = body else {
        panic!("roster first, got {body:?}");
    };
    assert!(delta.full);
    assert_eq!(delta.upsert.len(), 10);
    assert!(rig.quiet().await, "no batch before the report is answered");
    let _ = ack.send(true);
    // Then the batches, in outbox order, pipelined.
    let mut acks = Vec::new();
    let mut got = Vec::new();
    for _ in 0..3 {
        let (body, ack) = rig.next().await;
        got.extend(ids(&body));
        acks.push(ack);
    }
    assert_eq!(got, all);
    assert_eq!(
        rig.below.left().len(),
        10,
        "nothing deleted before an answer"
    );
    for ack in acks {
        let _ = ack.send(true);
    }
    assert!(rig.quiet().await);
    assert!(rig.below.left().is_empty());
    assert_eq!(rig.below.lock().acks, vec![4, 8, 10]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn at_most_sixteen_requests_are_on_their_way() {
    let mut rig = Rig::start(40, 1);
    let all: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    rig.below.returns(JID, &refs, ForwardUp::Relayed);
    rig.roster_acked().await;
    let mut pending = VecDeque::new();
    for i in 0..MAX_IN_FLIGHT {
        let (body, ack) = rig.next().await;
        assert_eq!(ids(&body), names(&[&format!("m{i}")]));
        pending.push_back(ack);
    }
    assert!(rig.quiet().await, "the window is full");
    // One answer makes room for exactly one more.
    let _ = pending.pop_front().expect("oldest").send(true);
    let (body, ack) = rig.next().await;
    assert_eq!(ids(&body), names(&["m16"]));
    pending.push_back(ack);
    assert!(rig.quiet().await);
    // An answer to a later request waits behind the oldest one.
    let _ = pending.pop_back().expect("newest").send(true);
    assert!(rig.quiet().await);
    assert_eq!(rig.below.left().len(), 39);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_session_sends_the_roster_then_the_oldest_unacknowledged_again() {
    let mut rig = Rig::start(6, 3);
    rig.below.returns(
        JID,
        &["m0", "m1", "m2", "m3", "m4", "m5"],
        ForwardUp::Relayed,
    );
    rig.roster_acked().await;
    let (first, ack1) = rig.next().await;
    let (second, _lost) = rig.next().await;
    assert_eq!(ids(&first), names(&["m0", "m1", "m2"]));
    assert_eq!(ids(&second), names(&["m3", "m4", "m5"]));
    let _ = ack1.send(true);
    // The master above restarts: a new sign-in, a new session. The second
    // batch may never have arrived.
    rig.session.store(2, Ordering::Relaxed);
    let delta = rig.roster_acked().await;
    assert!(delta.full, "a full report in every new session");
    assert_eq!(delta.upsert.len(), 6);
    let (again, ack) = rig.next().await;
    assert_eq!(ids(&again), names(&["m3", "m4", "m5"]));
    let _ = ack.send(true);
    assert!(rig.quiet().await);
    assert!(rig.below.left().is_empty());
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn nothing_goes_up_while_not_signed_in() {
    let mut rig = Rig::start(1, 10);
    rig.session.store(0, Ordering::Relaxed);
    rig.below.returns(JID, &["m0"], ForwardUp::Relayed);
    assert!(rig.quiet().await);
    rig.session.store(7, Ordering::Relaxed);
    rig.roster_acked().await;
    let (body, _ack) = rig.next().await;
    assert_eq!(ids(&body), names(&["m0"]));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_minion_that_joined_since_the_last_report_is_reported_before_its_return() {
    let mut rig = Rig::start(1, 10);
    rig.roster_acked().await;
    rig.below.returns(JID, &["m0"], ForwardUp::Relayed);
    let (body, ack) = rig.next().await;
    assert_eq!(ids(&body), names(&["m0"]));
    let _ = ack.send(true);
    // A minion joins and returns at once.
    rig.below.join("late");
    rig.below.returns(JID, &["late"], ForwardUp::Relayed);
    let (body, ack) = rig.next().await;
    let RequestBody::Roster(delta) = body else {
        panic!("the report naming the minion comes first, got {body:?}");
    };
    assert!(!delta.full);
    assert_eq!(
        delta
            .upsert
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["late"]
    );
    assert!(rig.quiet().await, "the batch waits for the report's answer");
    let _ = ack.send(true);
    let (body, ack) = rig.next().await;
    assert_eq!(ids(&body), names(&["late"]));
    let _ = ack.send(true);
    assert!(rig.quiet().await);
    assert!(rig.below.left().is_empty());
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn roster_changes_go_up_without_returns() {
    let mut rig = Rig::start(1, 10);
    rig.roster_acked().await;
    rig.below.join("new");
    let (body, ack) = rig.next().await;
    let RequestBody::Roster(delta) = body else {
        panic!("a delta, got {body:?}");
    };
    assert_eq!(delta.upsert.len(), 1);
    let _ = ack.send(true);
    assert!(rig.quiet().await, "nothing changed since");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_batch_is_sent_again_after_the_ack_timeout() {
    let mut rig = Rig::start(2, 10);
    rig.below.returns(JID, &["m0", "m1"], ForwardUp::Relayed);
    rig.roster_acked().await;
    let t0 = Instant::now();
    let (body, _never) = rig.next().await;
    assert_eq!(ids(&body), names(&["m0", "m1"]));
    // No answer: after ACK_TIMEOUT everything goes again, roster first.
    rig.roster_acked().await;
    assert!(t0.elapsed() >= ACK_TIMEOUT, "{:?}", t0.elapsed());
    let (body, ack) = rig.next().await;
    assert_eq!(ids(&body), names(&["m0", "m1"]));
    let _ = ack.send(true);
    assert!(rig.quiet().await);
    assert!(rig.below.left().is_empty());
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_batch_is_settled() {
    let mut rig = Rig::start(1, 10);
    rig.below.returns(JID, &["m0"], ForwardUp::Relayed);
    rig.roster_acked().await;
    let (_, ack) = rig.next().await;
    let _ = ack.send(false);
    assert!(rig.quiet().await, "a refusal is an answer: not resent");
    assert!(rig.below.left().is_empty());
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_published_here_goes_up_before_its_returns_once() {
    let mut rig = Rig::start(2, 1);
    let local = "20261202000000000099";
    rig.below.lock().jobs.insert(
        local.to_string(),
        JobLoad {
            jid: local.parse().expect("jid"),
            tgt: "*".into(),
            tgt_type: TargetType::Glob,
            fun: "test.ping".into(),
            arg: vec![],
            kwarg: Default::default(),
            user: "root".into(),
            timeout: 5,
            delimiter: ":".into(),
            path: vec!["syndic1".into()],
            trace: None,
        },
    );
    rig.below
        .returns(local, &["m0", "m1"], ForwardUp::Published);
    rig.roster_acked().await;
    let (body, ack) = rig.next().await;
    let RequestBody::SyndicJob(load) = body else {
        panic!("the job's load first, got {body:?}");
    };
    assert_eq!(load.jid, local);
    assert!(rig.quiet().await, "its returns wait for the answer");
    let _ = ack.send(true);
    for id in ["m0", "m1"] {
        let (body, ack) = rig.next().await;
        assert_eq!(ids(&body), names(&[id]), "the load is sent once");
        let _ = ack.send(true);
    }
    assert!(rig.quiet().await);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn returns_of_minions_the_roster_lost_wait_for_them_to_sign_in_again() {
    // After a restart the roster (from a snapshot) may lack a minion whose
    // acknowledged return is in the outbox.
    let mut rig = Rig::start(1, 10);
    rig.roster_acked().await;
    rig.below.returns(JID, &["gone"], ForwardUp::Relayed);
    assert!(rig.quiet().await, "held while the minion is unknown");
    // It signs in again: reported first, then its return goes up.
    rig.below.join("gone");
    let (body, ack) = rig.next().await;
    let RequestBody::Roster(delta) = body else {
        panic!("the report naming the minion comes first, got {body:?}");
    };
    assert_eq!(delta.upsert.len(), 1);
    let _ = ack.send(true);
    let (body, ack) = rig.next().await;
    assert_eq!(ids(&body), names(&["gone"]));
    let _ = ack.send(true);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn returns_of_minions_that_never_come_back_go_up_after_the_roster_wait() {
    let start = Instant::now();
    let mut rig = Rig::start(1, 10);
    rig.roster_acked().await;
    rig.below.returns(JID, &["never"], ForwardUp::Relayed);
    let (body, ack) = tokio::time::timeout(ROSTER_WAIT * 2, rig.rx.recv())
        .await
        .expect("sent within twice the wait")
        .expect("forwarder running");
    assert!(start.elapsed() >= ROSTER_WAIT, "not before the wait");
    assert_eq!(ids(&body), names(&["never"]));
    let _ = ack.send(false);
    assert!(rig.quiet().await);
    assert!(rig.below.left().is_empty(), "settled, not retried forever");
    // Later on, an unknown minion holds nothing back.
    rig.below.returns(JID, &["deleted"], ForwardUp::Relayed);
    let (body, _ack) = rig.next().await;
    assert_eq!(ids(&body), names(&["deleted"]));
    rig.stop().await;
}

#[test]
fn the_batching_rule_sends_at_once_when_nothing_is_on_its_way() {
    let ms = Duration::from_millis;
    let every = ms(100);
    // Nothing waiting: nothing to send, whatever else holds.
    assert!(!batch_due(0, 10, 0, ms(500), Duration::ZERO, every));
    // A quiet fleet: one return, nothing on its way, no time passed.
    assert!(batch_due(1, 10, 0, ms(0), Duration::ZERO, every));
    // Under load: a partial batch waits behind one on its way...
    assert!(!batch_due(3, 10, 1, ms(5), Duration::ZERO, every));
    assert!(!batch_due(
        9,
        10,
        EAGER_IN_FLIGHT,
        ms(99),
        Duration::ZERO,
        every
    ));
    // ...until the batch is full,
    assert!(batch_due(10, 10, 1, ms(0), Duration::ZERO, every));
    assert!(batch_due(25, 10, 5, ms(0), Duration::ZERO, every));
    // or the interval since the last batch passed (the bound on waiting).
    assert!(batch_due(3, 10, 1, ms(100), Duration::ZERO, every));
    assert!(
        batch_due(1, 1, 3, ms(0), Duration::ZERO, every),
        "a batch of one is always full"
    );
    // With a gap (events): eager only once the gap passed since the last.
    assert!(!batch_due(1, 10, 0, ms(5), ms(10), every));
    assert!(batch_due(1, 10, 0, ms(10), ms(10), every));
    assert!(
        !batch_due(1, 10, 1, ms(50), ms(10), every),
        "still one on its way"
    );
}

#[test]
fn the_batching_clock_wakes_when_a_partial_batch_falls_due() {
    let ms = Duration::from_millis;
    let every = ms(100);
    for (on_way, since, gap) in [(0, 3, 10), (0, 12, 10), (1, 30, 10), (2, 150, 0), (0, 0, 0)] {
        let wait = batch_wait(on_way, ms(since), ms(gap), every);
        // Not due before the wait is over (unless due already), due after.
        assert!(batch_due(1, 10, on_way, ms(since) + wait, ms(gap), every));
        if !wait.is_zero() {
            assert!(!batch_due(1, 10, on_way, ms(since), ms(gap), every));
            assert!(!batch_due(
                1,
                10,
                on_way,
                ms(since) + wait - ms(1),
                ms(gap),
                every
            ));
        }
    }
    assert_eq!(batch_wait(0, ms(3), ms(10), every), ms(7), "the gap");
    assert_eq!(batch_wait(1, ms(30), ms(10), every), ms(70), "the interval");
    assert_eq!(
        batch_wait(0, ms(0), ms(500), every),
        every,
        "never past the interval"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lone_return_goes_up_at_once_and_others_gather_behind_a_batch_on_its_way() {
    let mut rig = Rig::start(4, 10);
    rig.roster_acked().await;
    let t0 = Instant::now();
    rig.below.returns(JID, &["m0"], ForwardUp::Relayed);
    let (body, ack) = rig.next().await;
    assert_eq!(ids(&body), names(&["m0"]));
    assert_eq!(t0.elapsed(), Duration::ZERO, "no batching delay");
    // While it is on its way, the next returns gather...
    rig.below.returns(JID, &["m1"], ForwardUp::Relayed);
    rig.below.returns(JID, &["m2"], ForwardUp::Relayed);
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(rig.rx.try_recv().is_err(), "gathered behind the batch");
    // ...and leave together with its answer, still without waiting.
    let _ = ack.send(true);
    let (body, _unanswered) = rig.next().await;
    assert_eq!(ids(&body), names(&["m1", "m2"]));
    assert_eq!(t0.elapsed(), Duration::ZERO);
    // An answer that does not come holds the next return an interval at
    // most.
    rig.below.returns(JID, &["m3"], ForwardUp::Relayed);
    let (body, ack) = rig.next().await;
    assert_eq!(ids(&body), names(&["m3"]));
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    let _ = ack.send(true);
    rig.stop().await;
}
