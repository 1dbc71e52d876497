//! Events upward: one task subscribes to the syndic's own bus with the
//! `syndic_forward_events` globs and sends what it gets to the master
//! above in [`RequestBody::SyndicEvents`] batches (up to [`BATCH`] events;
//! by the forwarder's adaptive rule [`batch_due`]: at once while none is
//! on its way and [`EAGER_GAP`] has passed since the last one, else on an
//! answer after that gap, a full batch, or after [`EVERY`]), each event with its syndic path: the path it came
//! by from below (if it did) with this syndic appended, so a tier above
//! that is itself a syndic forwards it further with its own id.
//!
//! Invariant: it never blocks the syndic. Events wait in a queue of at
//! most [`QUEUE`]; past it, and for batches the master above did not take
//! (refused, lost with its session, not answered in time), events are
//! dropped and counted (`events_forward_dropped`); events are not resent.
//! `salt/job/<jid>/ret/<id>` never goes up: the master above fires its own
//! when it accepts the forwarded return (see
//! [`brine_master::events::never_forwarded`]).

use crate::forward::{batch_due, batch_wait, Uplink};
use brine_common::proto::{ForwardedEvent, RequestBody};
use brine_master::events::{self, EventBus, Subscription};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Events waiting to go up, at most.
pub const QUEUE: usize = 10_000;

/// Most events in one request.
pub const BATCH: usize = 100;

/// How long an event waits behind a batch on its way, at most.
pub const EVERY: Duration = Duration::from_millis(50);

/// Batches on their way up and not yet answered, at most.
const IN_FLIGHT: usize = 4;

/// A partial batch leaves at once (nothing on its way) only this long
/// after the previous one: a quiet syndic's event goes up at once, but
/// under a steady stream events gather for this long, so the master above
/// opens one batch of many events instead of one per event (measured at
/// 5000 minions x 1 event/s through 4 syndics: without it the top spent
/// 4.5 CPU-s on 50 000 events, batches of ~1-2).
pub const EAGER_GAP: Duration = Duration::from_millis(10);

/// How long the master above has to answer a batch.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How often to look again while not signed in above.
const LINK_POLL: Duration = Duration::from_millis(200);

type Answer = Pin<Box<tokio::time::Timeout<oneshot::Receiver<bool>>>>;

/// Subscribe to `bus` for the events `globs` name (none: no task, None).
pub fn subscribe(bus: &EventBus, globs: &[String]) -> Option<Subscription> {
    let globs: Vec<String> = globs.iter().filter(|g| !g.is_empty()).cloned().collect();
    if globs.is_empty() {
        return None;
    }
    match bus.subscribe_any(
        &globs,
        Some(events::never_forwarded),
        events::SUBSCRIBER_QUEUE,
    ) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot subscribe to the bus; no events go up");
            None
        }
    }
}

/// What holds the bus whose counters the task bumps.
pub trait HasBus: Send + Sync + 'static {
    fn bus(&self) -> &EventBus;
}

impl HasBus for brine_master::state::MasterState {
    fn bus(&self) -> &EventBus {
        self.events()
    }
}

/// Forward the events of `sub` upward as syndic `me` until `shutdown`,
/// counting on `owner`'s bus.
pub async fn run<U: Uplink>(
    owner: Arc<impl HasBus>,
    mut sub: Subscription,
    up: U,
    me: String,
    shutdown: CancellationToken,
) {
    let bus = owner.bus();
    let mut queue: VecDeque<ForwardedEvent> = VecDeque::new();
    let mut window: VecDeque<(usize, Answer)> = VecDeque::new();
    let mut last_flush = Instant::now()
        .checked_sub(EAGER_GAP)
        .unwrap_or_else(Instant::now);
    loop {
        let signed_in = up.session().is_some();
        while signed_in
            && window.len() < IN_FLIGHT
            && batch_due(
                queue.len(),
                BATCH,
                window.len(),
                last_flush.elapsed(),
                EAGER_GAP,
                EVERY,
            )
        {
            let n = queue.len().min(BATCH);
            let batch: Vec<ForwardedEvent> = queue.drain(..n).collect();
            let answer = up.send(RequestBody::SyndicEvents(batch));
            window.push_back((n, Box::pin(tokio::time::timeout(ANSWER_TIMEOUT, answer))));
            last_flush = Instant::now();
        }
        let pause = if !signed_in {
            LINK_POLL
        } else if queue.is_empty() {
            Duration::from_secs(1)
        } else {
            batch_wait(window.len(), last_flush.elapsed(), EAGER_GAP, EVERY)
        };
        let answer = async {
            match window.front_mut() {
                Some((_, a)) => a.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            a = answer => {
                let Some((n, _)) = window.pop_front() else { continue };
                let n = n as u64;
                match a {
                    Ok(Ok(true)) => {
                        bus.forwarded.fetch_add(n, Ordering::Relaxed);
                    }
                    other => {
                        let c = bus.forward_dropped.fetch_add(n, Ordering::Relaxed) + n;
                        let why = match other {
                            Ok(Ok(_)) => "refused by the master above",
                            Ok(Err(_)) => "lost with the session above",
                            Err(_) => "not answered in time",
                        };
                        warn!(events = n, total = c, why, "events forwarded upward dropped");
                    }
                }
            }
            ev = sub.rx.recv() => {
                let Some(ev) = ev else {
                    debug!("event bus closed; no more events go up");
                    return;
                };
                push(bus, &mut queue, events::to_forward(&me, &ev));
                // Take what else is there now, up to a batch.
                for _ in 0..BATCH {
                    match sub.rx.try_recv() {
                        Ok(ev) => push(bus, &mut queue, events::to_forward(&me, &ev)),
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Queue `ev`, dropping (and counting) the oldest when the queue is full.
fn push(bus: &EventBus, queue: &mut VecDeque<ForwardedEvent>, ev: ForwardedEvent) {
    if queue.len() >= QUEUE {
        queue.pop_front();
        let n = bus.forward_dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            warn!(
                total = n,
                "events waiting to go up exceed {QUEUE}; the oldest dropped"
            );
        }
    }
    queue.push_back(ev);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    /// An uplink that records what is sent and answers as told.
    #[derive(Clone, Default)]
    struct FakeUp {
        down: Arc<AtomicBool>,
        refuse: Arc<AtomicBool>,
        sent: Arc<Mutex<Vec<Vec<ForwardedEvent>>>>,
    }

    impl Uplink for FakeUp {
        fn session(&self) -> Option<u64> {
            (!self.down.load(Ordering::Relaxed)).then_some(1)
        }
        fn send(&self, body: RequestBody) -> oneshot::Receiver<bool> {
            let (tx, rx) = oneshot::channel();
            if let RequestBody::SyndicEvents(evs) = body {
                self.sent.lock().expect("lock").push(evs);
            }
            let _ = tx.send(!self.refuse.load(Ordering::Relaxed));
            rx
        }
    }

    struct Bus(EventBus);
    impl HasBus for Bus {
        fn bus(&self) -> &EventBus {
            &self.0
        }
    }

    fn start(globs: &[&str]) -> (Arc<Bus>, FakeUp, CancellationToken) {
        let bus = Arc::new(Bus(EventBus::default()));
        let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
        let sub = subscribe(&bus.0, &globs).expect("sub");
        let up = FakeUp::default();
        let sd = CancellationToken::new();
        tokio::spawn(run(bus.clone(), sub, up.clone(), "syn1".into(), sd.clone()));
        (bus, up, sd)
    }

    fn sent(up: &FakeUp) -> Vec<ForwardedEvent> {
        up.sent
            .lock()
            .expect("lock")
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::time::sleep(EVERY).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_go_up_batched_with_the_path_and_rets_stay() {
        let (bus, up, sd) = start(&["*"]);
        tokio::task::yield_now().await;
        bus.0.fire("myapp/x", json!({"a": 1}));
        bus.0
            .fire("salt/job/20260101/ret/m1", json!({"return": true}));
        bus.0.fire(
            "salt/beacon/m1/load/",
            json!({"1m": 0.1, events::SYNDIC_PATH: ["syn2"]}),
        );
        for i in 0..(BATCH + 5) {
            bus.0.fire("bulk", json!({ "i": i }));
        }
        settle().await;
        let got = sent(&up);
        assert_eq!(got.len(), BATCH + 7, "every event but the ret");
        assert_eq!(got[0].tag, "myapp/x");
        assert_eq!(got[0].path, ["syn1"]);
        assert_eq!(got[0].data, json!({"a": 1}), "no stamp, no path in data");
        assert_eq!(got[1].tag, "salt/beacon/m1/load/");
        assert_eq!(got[1].path, ["syn2", "syn1"], "from below: appended");
        assert!(got.iter().all(|e| !e.tag.contains("/ret/")));
        assert!(up
            .sent
            .lock()
            .expect("lock")
            .iter()
            .all(|b| b.len() <= BATCH));
        assert_eq!(bus.0.forwarded.load(Ordering::Relaxed), BATCH as u64 + 7);
        assert_eq!(bus.0.forward_dropped.load(Ordering::Relaxed), 0);
        sd.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_configured_tags_go_up_and_refusals_are_counted() {
        let (bus, up, sd) = start(&["myapp/*", "salt/minion/*/start"]);
        tokio::task::yield_now().await;
        up.refuse.store(true, Ordering::Relaxed);
        bus.0.fire("myapp/x", json!({}));
        bus.0.fire("salt/minion/m1/start", json!({}));
        bus.0.fire("salt/auth", json!({}));
        bus.0.fire("other/y", json!({}));
        settle().await;
        let tags: Vec<String> = sent(&up).into_iter().map(|e| e.tag).collect();
        assert_eq!(tags, ["myapp/x", "salt/minion/m1/start"]);
        assert_eq!(bus.0.forward_dropped.load(Ordering::Relaxed), 2);
        assert_eq!(bus.0.forwarded.load(Ordering::Relaxed), 0);
        sd.cancel();
        assert!(
            subscribe(&bus.0, &[]).is_none(),
            "no globs: nothing goes up"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn while_cut_off_the_queue_is_bounded_and_drops_the_oldest() {
        let (bus, up, sd) = start(&["*"]);
        up.down.store(true, Ordering::Relaxed);
        tokio::task::yield_now().await;
        let total = QUEUE + 50;
        for i in 0..total {
            bus.0.fire("e", json!({ "i": i }));
            if i % 500 == 0 {
                // Let the task drain its subscription (as a running one does).
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        settle().await;
        assert!(sent(&up).is_empty(), "nothing goes while cut off");
        assert_eq!(bus.0.forward_dropped.load(Ordering::Relaxed), 50);
        up.down.store(false, Ordering::Relaxed);
        for _ in 0..200 {
            tokio::time::sleep(EVERY).await;
        }
        let got = sent(&up);
        assert_eq!(got.len(), QUEUE);
        assert_eq!(got[0].data["i"], 50, "the oldest were dropped");
        assert_eq!(bus.0.forwarded.load(Ordering::Relaxed), QUEUE as u64);
        sd.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_event_goes_at_once_and_a_stream_goes_in_few_batches() {
        let (bus, up, sd) = start(&["*"]);
        tokio::task::yield_now().await;
        bus.0.fire("lone", json!({}));
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        assert_eq!(up.sent.lock().expect("lock").len(), 1, "no wait when quiet");
        tokio::time::sleep(EAGER_GAP * 2).await;
        // 100 events, one per ms: gathered per gap, not one batch each.
        for i in 0..100 {
            bus.0.fire("stream", json!({ "i": i }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        settle().await;
        let batches = up.sent.lock().expect("lock").len() - 1;
        assert_eq!(sent(&up).len(), 101);
        assert!(
            (2..=13).contains(&batches),
            "100 events over 100 ms in {batches} batches"
        );
        sd.cancel();
    }
}
