//! The master's event bus: Salt's master events (`salt/auth`, `salt/key`,
//! `salt/minion/<id>/start`, `salt/job/<jid>/new`, `salt/job/<jid>/ret/<id>`,
//! `salt/presence/*`, `salt/run/<jid>/*`) and the events minions send,
//! delivered to local subscribers (`salt-run state.event`) whose tag
//! pattern matches as Salt's `tagmatch` does (exact or `fnmatch`).
//!
//! Invariant: firing never blocks and never waits for a subscriber. Each
//! subscriber has a bounded queue ([`SUBSCRIBER_QUEUE`] events); when it is
//! full the event is dropped for that subscriber alone and counted
//! (`events_dropped`), so a slow watcher loses events and the master does
//! not slow down. Every event carries `_stamp` (Salt's ISO time, UTC, no
//! zone). The bus lock is held only to walk the subscriber list.
//!
//! Events from minions are checked here ([`check_minion_event`]) before
//! they reach the bus: a minion may not speak in the master's `salt/`
//! namespace except under `salt/beacon/<its own id>/`.

use brine_common::glob::Glob;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Events queued per subscriber before it starts losing them.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// Most subscribers at once (each is a local, token-holding client).
pub const MAX_SUBSCRIBERS: usize = 256;

/// Longest tag a minion may send (Salt's tags are short paths).
pub const MAX_TAG_BYTES: usize = 512;

/// One event: its tag and its data (a JSON object with `_stamp`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub tag: String,
    pub data: Value,
}

/// What a subscriber receives.
pub struct Subscription {
    pub rx: mpsc::Receiver<Arc<Event>>,
}

struct Subscriber {
    /// The tag patterns it listens to (any of them).
    patterns: Vec<(String, Glob)>,
    /// Tags it never gets, whatever the patterns say.
    skip: Option<fn(&str) -> bool>,
    tx: mpsc::Sender<Arc<Event>>,
}

impl Subscriber {
    fn wants(&self, tag: &str) -> bool {
        !self.skip.is_some_and(|f| f(tag))
            && self.patterns.iter().any(|(p, g)| tag_matches(p, g, tag))
    }
}

/// The bus: subscribers and counters.
#[derive(Default)]
pub struct EventBus {
    subs: Mutex<Vec<Subscriber>>,
    /// Events fired on the bus (whether anyone listened or not).
    pub published: AtomicU64,
    /// Events a subscriber lost because its queue was full.
    pub dropped: AtomicU64,
    /// Subscriptions opened since the master started (a watcher knows it
    /// is in place when this grows, whoever hangs up meanwhile).
    pub subscribed: AtomicU64,
    /// Events from minions refused (namespace, size, shape).
    pub refused: AtomicU64,
    /// Events this syndic sent to the master above (acknowledged).
    pub forwarded: AtomicU64,
    /// Events this syndic did not send up: its queue was full, or the
    /// master above did not take the batch.
    pub forward_dropped: AtomicU64,
    /// Events a syndic below forwarded and this master fired.
    pub from_below: AtomicU64,
    /// Events a syndic below forwarded and this master refused (shape,
    /// size, path, or a sender without the syndic role).
    pub from_below_refused: AtomicU64,
    /// Key states as last seen, to tell `salt/key` changes apart.
    keys_seen: Mutex<BTreeMap<String, &'static str>>,
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
#[error("too many event subscribers (at most {MAX_SUBSCRIBERS})")]
pub struct TooManySubscribers;

/// Salt's `tagmatch`: the tag itself or an `fnmatch` pattern.
pub fn tag_matches(pattern: &str, glob: &Glob, tag: &str) -> bool {
    pattern.is_empty() || pattern == tag || glob.matches(tag)
}

/// Salt's `_stamp`: `datetime.utcnow().isoformat()` (microseconds left
/// out when they are zero, as Python does).
pub fn stamp() -> String {
    let now = chrono::Utc::now();
    if now.timestamp_subsec_micros() == 0 {
        now.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        now.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EventBus {
    /// Subscribe to the tags `tagmatch` matches (`""` or `*`: all), with a
    /// queue of `queue` events.
    pub fn subscribe(
        &self,
        tagmatch: &str,
        queue: usize,
    ) -> Result<Subscription, TooManySubscribers> {
        self.subscribe_any(&[tagmatch.to_string()], None, queue)
    }

    /// Subscribe to the tags any of `patterns` matches (as
    /// [`EventBus::subscribe`]; none: nothing) except those `skip` names,
    /// with a queue of `queue` events. Tags skipped cost the bus nothing
    /// (their data is not built for this subscriber).
    pub fn subscribe_any(
        &self,
        patterns: &[String],
        skip: Option<fn(&str) -> bool>,
        queue: usize,
    ) -> Result<Subscription, TooManySubscribers> {
        let mut subs = lock(&self.subs);
        subs.retain(|s| !s.tx.is_closed());
        if subs.len() >= MAX_SUBSCRIBERS {
            return Err(TooManySubscribers);
        }
        let (tx, rx) = mpsc::channel(queue.max(1));
        subs.push(Subscriber {
            patterns: patterns.iter().map(|p| (p.clone(), Glob::new(p))).collect(),
            skip,
            tx,
        });
        self.subscribed.fetch_add(1, Ordering::Relaxed);
        Ok(Subscription { rx })
    }

    /// Subscribers still listening.
    pub fn subscribers(&self) -> usize {
        lock(&self.subs)
            .iter()
            .filter(|s| !s.tx.is_closed())
            .count()
    }

    /// Fire `data` (an object; anything else is wrapped as Salt wraps a
    /// non-dict: `{"data": ...}`) under `tag`, with `_stamp` set.
    pub fn fire(&self, tag: &str, data: Value) {
        self.fire_with(tag, || data);
    }

    /// [`EventBus::fire`] with the data built only when some subscriber's
    /// pattern matches `tag` (returns carry whole job results).
    pub fn fire_with(&self, tag: &str, data: impl FnOnce() -> Value) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let mut subs = lock(&self.subs);
        if subs.is_empty() {
            return;
        }
        let mut data = Some(data);
        let mut event: Option<Arc<Event>> = None;
        subs.retain(|s| {
            if s.tx.is_closed() {
                return false;
            }
            if !s.wants(tag) {
                return true;
            }
            let ev = event
                .get_or_insert_with(|| {
                    let d = data.take().map_or(Value::Null, |f| f());
                    Arc::new(Event {
                        tag: tag.to_string(),
                        data: with_stamp(d),
                    })
                })
                .clone();
            match s.tx.try_send(ev) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        warn!(
                            tag,
                            count = n,
                            "event subscriber is not reading: event dropped for it"
                        );
                    }
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Count and log a minion event refused.
    pub fn refuse(&self, id: &str, why: &str) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            warn!(id = %id.escape_debug(), count = n, why, "minion event refused");
        } else {
            info!(id = %id.escape_debug(), why, "minion event refused");
        }
    }

    /// Remember the key states now (at start, after a sign-in).
    pub fn keys_seen(&self, states: impl IntoIterator<Item = (String, &'static str)>) {
        lock(&self.keys_seen).extend(states);
    }

    /// The `salt/key` events between the key states last seen and `now`
    /// (every key by its state directory name); `now` becomes the last seen.
    pub fn key_changes(&self, now: BTreeMap<String, &'static str>) -> Vec<(String, &'static str)> {
        let mut seen = lock(&self.keys_seen);
        let mut acts = Vec::new();
        for (id, state) in &now {
            if seen.get(id) != Some(state) {
                match *state {
                    "minions" => acts.push((id.clone(), "accept")),
                    "minions_rejected" => acts.push((id.clone(), "reject")),
                    _ => {}
                }
            }
        }
        for id in seen.keys() {
            if !now.contains_key(id) {
                acts.push((id.clone(), "delete"));
            }
        }
        *seen = now;
        acts
    }
}

/// The data with `_stamp` set (a non-object is wrapped as `{"data": ...}`).
fn with_stamp(data: Value) -> Value {
    let mut m = match data {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("data".into(), other);
            m
        }
    };
    m.insert("_stamp".into(), Value::String(stamp()));
    Value::Object(m)
}

/// A tag any event may carry: non-empty, at most [`MAX_TAG_BYTES`], no
/// control characters.
fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("empty tag".into());
    }
    if tag.len() > MAX_TAG_BYTES {
        return Err(format!(
            "tag of {} bytes (at most {MAX_TAG_BYTES})",
            tag.len()
        ));
    }
    if tag.chars().any(char::is_control) {
        return Err("tag with control characters".into());
    }
    Ok(())
}

/// Check an event a minion (or syndic) `id` sent: a tag of 1 to
/// [`MAX_TAG_BYTES`] bytes without control characters, outside `salt/`
/// except `salt/beacon/<id>/...`, data a JSON object, tag and data
/// together at most `max_bytes`. `Err` says why, for the sender.
pub fn check_minion_event(
    id: &str,
    tag: &str,
    data: &Value,
    max_bytes: usize,
) -> Result<(), String> {
    check_tag(tag)?;
    if tag.starts_with("salt/") {
        let own = format!("salt/beacon/{id}/");
        if !tag.starts_with(&own) || tag.len() == own.len() {
            return Err(format!(
                "tag '{}' is in the master's namespace (a minion may use salt/beacon/{id}/... only)",
                tag.escape_debug()
            ));
        }
    }
    if !data.is_object() {
        return Err("data is not a dict".into());
    }
    let size = tag.len() + serde_json::to_vec(data).map_or(usize::MAX, |b| b.len());
    if size > max_bytes {
        return Err(format!(
            "event of {size} bytes (at most {max_bytes}, max_event_size)"
        ));
    }
    Ok(())
}

/// The data the master fires for an accepted minion event, as Salt's
/// master does: a beacon's data as sent with the sender's `id`; any other
/// tag the whole load `{"cmd": "_minion_event", "id", "tag", "data",
/// "pretag": null}`.
pub fn minion_event_data(id: &str, tag: &str, data: Value) -> Value {
    if tag.starts_with("salt/beacon/") {
        let mut m = match data {
            Value::Object(m) => m,
            other => Map::from_iter([("data".to_string(), other)]),
        };
        m.insert("id".into(), Value::String(id.to_string()));
        Value::Object(m)
    } else {
        json!({
            "cmd": "_minion_event",
            "id": id,
            "tag": tag,
            "data": data,
            "pretag": null,
        })
    }
}

/// The data key that names the syndics a forwarded event came through
/// (in the order it travelled, the sender last).
pub const SYNDIC_PATH: &str = "__syndic_path";

/// Tags a syndic never forwards whatever `syndic_forward_events` says:
/// `salt/job/<jid>/ret/<id>`. The master above fires its own when it
/// accepts the forwarded return, so forwarding it would show it twice.
pub fn never_forwarded(tag: &str) -> bool {
    let mut parts = tag.split('/');
    parts.next() == Some("salt")
        && parts.next() == Some("job")
        && parts.next().is_some()
        && parts.next() == Some("ret")
}

/// Check an event syndic `sender` forwarded, as received by `me`: a tag
/// as for a minion's (not empty, at most [`MAX_TAG_BYTES`], no control
/// characters; the `salt/` namespace is allowed, a syndic relays its
/// master's events), data an object within `max_bytes`, a path of syndic
/// ids ending with the sender and not naming `me` (a loop). On success the
/// data to fire: the event's data with [`SYNDIC_PATH`] set to the path.
pub fn check_forwarded_event(
    sender: &str,
    me: &str,
    ev: brine_common::proto::ForwardedEvent,
    max_bytes: usize,
) -> Result<(String, Value), String> {
    let brine_common::proto::ForwardedEvent { tag, data, path } = ev;
    check_tag(&tag)?;
    if never_forwarded(&tag) {
        return Err("a return event (this master fires its own for the return)".into());
    }
    if path.last().map(String::as_str) != Some(sender) {
        return Err(format!("path {path:?} does not end with the sender"));
    }
    if path.iter().any(|p| p == me) {
        return Err(format!("path {path:?} already came through {me} (loop)"));
    }
    if path.len() > 64 || path.iter().any(|p| p.is_empty() || p.len() > 256) {
        return Err("path too long".into());
    }
    let Value::Object(mut m) = data else {
        return Err("data is not a dict".into());
    };
    m.remove("_stamp");
    m.insert(
        SYNDIC_PATH.into(),
        Value::Array(path.into_iter().map(Value::String).collect()),
    );
    let data = Value::Object(m);
    let size = tag.len() + serde_json::to_vec(&data).map_or(usize::MAX, |b| b.len());
    if size > max_bytes {
        return Err(format!(
            "event of {size} bytes (at most {max_bytes}, max_event_size)"
        ));
    }
    Ok((tag, data))
}

/// The event as a syndic `me` forwards it upward: its data without the
/// stamp and path, and the path it came by (from below, if it did) with
/// `me` appended.
pub fn to_forward(me: &str, ev: &Event) -> brine_common::proto::ForwardedEvent {
    let mut data = ev.data.clone();
    let mut path = Vec::new();
    if let Value::Object(m) = &mut data {
        m.remove("_stamp");
        if let Some(Value::Array(p)) = m.remove(SYNDIC_PATH) {
            path = p
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
        }
    }
    path.push(me.to_string());
    brine_common::proto::ForwardedEvent {
        tag: ev.tag.clone(),
        data,
        path,
    }
}

/// Every key's state directory name (`minions`, `minions_pre`, ...), as
/// [`EventBus::key_changes`] compares them; `None` when the key
/// directories cannot be read.
pub(crate) fn key_states(keys: &crate::keys::KeyStore) -> Option<BTreeMap<String, &'static str>> {
    let listing = match keys.list() {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "cannot list keys for salt/key events");
            return None;
        }
    };
    let mut out = BTreeMap::new();
    for state in crate::keys::KeyState::ALL {
        for id in listing.get(state) {
            out.insert(id.clone(), state.dir_name());
        }
    }
    Some(out)
}

/// `salt/key` for every key an operator accepted, rejected or deleted
/// since the key states were last seen: `{"id", "act", "result": true}`.
pub(crate) fn fire_key_changes(bus: &EventBus, keys: &crate::keys::KeyStore) {
    let Some(now) = key_states(keys) else { return };
    for (id, act) in bus.key_changes(now) {
        bus.fire("salt/key", json!({"id": id, "act": act, "result": true}));
    }
}

/// `salt/auth` for a sign-in decision (`act`: `accept`, `pend`,
/// `reject`, `denied`, `full`), as Salt's master fires it; the key state
/// it leaves is remembered for `salt/key`.
pub fn sign_in(bus: &EventBus, id: &str, act: &str, pub_pem: &str) {
    let result = matches!(act, "accept" | "pend");
    bus.fire(
        "salt/auth",
        json!({"id": id, "act": act, "pub": pub_pem, "result": result}),
    );
    let state = match act {
        "accept" => "minions",
        "pend" => "minions_pre",
        "reject" => "minions_rejected",
        _ => return,
    };
    bus.keys_seen([(id.to_string(), state)]);
}

/// Salt's `arg` of a job event: the positional arguments, then the
/// keyword ones as one `{"__kwarg__": true, ...}` dict when there are any.
fn salt_args(arg: &[Value], kwarg: &BTreeMap<String, Value>) -> Value {
    let mut out = arg.to_vec();
    if !kwarg.is_empty() {
        let mut m: Map<String, Value> = kwarg.clone().into_iter().collect();
        m.insert("__kwarg__".into(), Value::Bool(true));
        out.push(Value::Object(m));
    }
    Value::Array(out)
}

/// Salt's `fun_args` of a runner event: positional arguments, then the
/// keyword ones as one dict.
pub fn runner_args(args: &[Value], kwargs: &BTreeMap<String, Value>) -> Value {
    let mut out = args.to_vec();
    if !kwargs.is_empty() {
        out.push(Value::Object(kwargs.clone().into_iter().collect()));
    }
    Value::Array(out)
}

/// `salt/job/<jid>/new` for a job this master published or relayed:
/// `{"jid", "tgt", "tgt_type", "fun", "arg", "minions", "missing", "user"}`.
pub fn job_new(
    bus: &EventBus,
    job: &brine_common::proto::JobLoad,
    minions: &[String],
    missing: &[String],
) {
    let tag = format!("salt/job/{}/new", job.jid);
    bus.fire_with(&tag, || {
        json!({
            "jid": job.jid.as_str(),
            "tgt": job.tgt,
            "tgt_type": job.tgt_type,
            "fun": job.fun,
            "arg": salt_args(&job.arg, &job.kwarg),
            "minions": minions,
            "missing": missing,
            "user": job.user,
        })
    });
}

/// `salt/job/<jid>/ret/<id>` for a return this master admitted:
/// `{"cmd": "_return", "id", "jid", "fun", "fun_args", "return",
/// "retcode", "success"}` (and `out` when the minion named one).
pub fn job_ret(bus: &EventBus, ret: &brine_common::proto::ReturnLoad) {
    let tag = format!("salt/job/{}/ret/{}", ret.jid, ret.id);
    bus.fire_with(&tag, || {
        let mut d = json!({
            "cmd": "_return",
            "id": ret.id,
            "jid": ret.jid.as_str(),
            "fun": ret.fun,
            "fun_args": ret.fun_args,
            "return": ret.ret,
            "retcode": ret.retcode,
            "success": ret.success,
        });
        if let (Some(out), Value::Object(m)) = (&ret.out, &mut d) {
            m.insert("out".into(), Value::String(out.clone()));
        }
        d
    });
}

/// `salt/minion/<id>/start` (and Salt's old `minion_start`) as the
/// master fires them when a minion says hello after signing in.
pub fn minion_start(bus: &EventBus, id: &str) {
    let text = format!(
        "Minion {id} started at {}",
        chrono::Utc::now().format("%a %b %e %H:%M:%S %Y")
    );
    for tag in [
        "minion_start".to_string(),
        format!("salt/minion/{id}/start"),
    ] {
        let data = json!({
            "cmd": "_minion_event",
            "id": id,
            "tag": tag,
            "data": text,
            "pretag": null,
        });
        bus.fire(&tag, data);
    }
}

/// `salt/presence/change` (when the set changed) and `salt/presence/present`,
/// from the ids connected now and those connected at the last round.
pub fn presence(bus: &EventBus, last: &mut Option<Vec<String>>, mut now: Vec<String>) {
    now.sort();
    now.dedup();
    if let Some(before) = last.as_ref() {
        let new: Vec<&String> = now.iter().filter(|i| !before.contains(i)).collect();
        let lost: Vec<&String> = before.iter().filter(|i| !now.contains(i)).collect();
        if !new.is_empty() || !lost.is_empty() {
            bus.fire("salt/presence/change", json!({"new": new, "lost": lost}));
        }
    }
    bus.fire("salt/presence/present", json!({ "present": now }));
    *last = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv_now(s: &mut Subscription) -> Option<Arc<Event>> {
        s.rx.try_recv().ok()
    }

    #[test]
    fn subscribers_get_the_tags_their_pattern_matches() {
        let bus = EventBus::default();
        let mut all = bus.subscribe("*", 8).expect("sub");
        let mut jobs = bus.subscribe("salt/job/*/ret/*", 8).expect("sub");
        let mut exact = bus.subscribe("salt/auth", 8).expect("sub");
        bus.fire("salt/auth", json!({"id": "web1", "act": "accept"}));
        bus.fire("salt/job/1/ret/web1", json!({"id": "web1"}));
        bus.fire("salt/job/1/new", json!({}));
        assert_eq!(bus.published.load(Ordering::Relaxed), 3);
        let tags: Vec<String> = std::iter::from_fn(|| recv_now(&mut all))
            .map(|e| e.tag.clone())
            .collect();
        assert_eq!(tags, ["salt/auth", "salt/job/1/ret/web1", "salt/job/1/new"]);
        let e = recv_now(&mut jobs).expect("ret");
        assert_eq!(e.tag, "salt/job/1/ret/web1");
        assert!(recv_now(&mut jobs).is_none(), "new is not a ret");
        let e = recv_now(&mut exact).expect("auth");
        assert_eq!(e.data["act"], "accept");
        assert!(e.data["_stamp"].as_str().is_some_and(|s| s.len() >= 19));
        assert!(recv_now(&mut exact).is_none());
    }

    #[test]
    fn a_slow_subscriber_loses_events_counted_and_others_do_not() {
        let bus = EventBus::default();
        let mut slow = bus.subscribe("*", 2).expect("sub");
        let mut fast = bus.subscribe("*", 100).expect("sub");
        let started = std::time::Instant::now();
        for i in 0..10 {
            bus.fire("t", json!({ "i": i }));
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "firing never waits"
        );
        assert_eq!(bus.dropped.load(Ordering::Relaxed), 8);
        assert_eq!(recv_now(&mut slow).expect("first").data["i"], 0);
        assert_eq!(recv_now(&mut slow).expect("second").data["i"], 1);
        assert!(recv_now(&mut slow).is_none());
        assert_eq!(std::iter::from_fn(|| recv_now(&mut fast)).count(), 10);
    }

    #[test]
    fn data_is_built_only_for_a_listener_and_gone_subscribers_are_forgotten() {
        let bus = EventBus::default();
        let mut built = 0;
        bus.fire_with("salt/job/1/ret/a", || {
            built += 1;
            json!({})
        });
        assert_eq!(built, 0, "nobody listens");
        let sub = bus.subscribe("other", 4).expect("sub");
        bus.fire_with("salt/job/1/ret/a", || {
            built += 1;
            json!({})
        });
        assert_eq!(built, 0, "nobody listens to that tag");
        assert_eq!(bus.subscribers(), 1);
        drop(sub);
        bus.fire("other", json!({}));
        assert_eq!(bus.subscribers(), 0);
        assert_eq!(lock(&bus.subs).len(), 0);
    }

    #[test]
    fn a_subscriber_may_listen_to_several_patterns_and_skip_some_tags() {
        let bus = EventBus::default();
        let pats = ["myapp/*".to_string(), "salt/job/*".to_string()];
        let mut sub = bus
            .subscribe_any(&pats, Some(never_forwarded), 8)
            .expect("sub");
        let mut none = bus.subscribe_any(&[], None, 8).expect("sub");
        let mut built = 0;
        bus.fire_with("salt/job/1/ret/a", || {
            built += 1;
            json!({})
        });
        assert_eq!(built, 0, "skipped tags cost nothing");
        bus.fire("salt/job/1/new", json!({}));
        bus.fire("myapp/x", json!({}));
        bus.fire("other", json!({}));
        let tags: Vec<String> = std::iter::from_fn(|| recv_now(&mut sub))
            .map(|e| e.tag.clone())
            .collect();
        assert_eq!(tags, ["salt/job/1/new", "myapp/x"]);
        assert!(recv_now(&mut none).is_none());
    }

    #[test]
    fn subscribers_are_bounded() {
        let bus = EventBus::default();
        let subs: Vec<Subscription> = (0..MAX_SUBSCRIBERS)
            .map(|_| bus.subscribe("*", 1).expect("sub"))
            .collect();
        assert!(bus.subscribe("*", 1).is_err());
        drop(subs);
        assert!(bus.subscribe("*", 1).is_ok(), "closed ones make room");
    }

    #[test]
    fn stamps_look_like_pythons_isoformat() {
        let s = stamp();
        let (date, time) = s.split_once('T').expect("T");
        assert_eq!(date.len(), 10);
        assert!(time.len() == 8 || time.len() == 15, "{s}");
        assert!(!s.ends_with('Z'));
        let wrapped = with_stamp(json!("text"));
        assert_eq!(wrapped["data"], "text");
    }

    #[test]
    fn minion_tags_stay_out_of_the_masters_namespace() {
        let d = json!({"k": 1});
        let max = 1 << 20;
        assert!(check_minion_event("web1", "myapp/deploy/done", &d, max).is_ok());
        assert!(check_minion_event("web1", "salt/beacon/web1/inotify//etc", &d, max).is_ok());
        for bad in [
            "",
            "salt/auth",
            "salt/job/1/ret/web1",
            "salt/key",
            "salt/beacon/web2/inotify",
            "salt/beacon/web1/",
            "salt/beacon/web1",
            "salt/minion/web1/start",
        ] {
            let e = check_minion_event("web1", bad, &d, max).expect_err(bad);
            assert!(!e.is_empty());
        }
        let long = "x".repeat(MAX_TAG_BYTES + 1);
        assert!(check_minion_event("web1", &long, &d, max)
            .expect_err("long")
            .contains("at most 512"));
        assert!(check_minion_event("web1", "a\nb", &d, max).is_err());
        assert!(check_minion_event("web1", "app", &json!([1]), max).is_err());
        let big = json!({"blob": "y".repeat(2000)});
        let e = check_minion_event("web1", "app", &big, 1000).expect_err("big");
        assert!(e.contains("max_event_size"), "{e}");
    }

    #[test]
    fn minion_events_are_fired_in_salts_shapes() {
        let d = minion_event_data("web1", "app/x", json!({"a": 1}));
        assert_eq!(
            d,
            json!({"cmd": "_minion_event", "id": "web1", "tag": "app/x",
                   "data": {"a": 1}, "pretag": null})
        );
        let d = minion_event_data(
            "web1",
            "salt/beacon/web1/load/",
            json!({"1m": 0.5, "id": "x"}),
        );
        assert_eq!(d, json!({"1m": 0.5, "id": "web1"}), "the sender's own id");
    }

    #[test]
    fn forwarded_events_carry_their_path_and_rets_never_go_up() {
        assert!(never_forwarded("salt/job/20260101/ret/web1"));
        assert!(!never_forwarded("salt/job/20260101/new"));
        assert!(!never_forwarded("myapp/job/1/ret/x"));
        let bus = EventBus::default();
        let mut sub = bus.subscribe("*", 4).expect("sub");
        bus.fire("myapp/x", json!({"a": 1}));
        let ev = recv_now(&mut sub).expect("ev");
        let f = to_forward("syn2", &ev);
        assert_eq!(f.path, ["syn2"]);
        assert_eq!(f.data, json!({"a": 1}), "no stamp");
        let (tag, data) = check_forwarded_event("syn2", "syn1", f, 1 << 20).expect("ok");
        assert_eq!(tag, "myapp/x");
        assert_eq!(data, json!({"a": 1, SYNDIC_PATH: ["syn2"]}));
        bus.fire(&tag, data);
        let ev = recv_now(&mut sub).expect("again");
        let f = to_forward("syn1", &ev);
        assert_eq!(f.path, ["syn2", "syn1"], "appended, origin side first");
        let ok = check_forwarded_event("syn1", "top", f.clone(), 1 << 20).expect("ok");
        assert_eq!(ok.1[SYNDIC_PATH], json!(["syn2", "syn1"]));
        let bad = |sender: &str, me: &str, f: brine_common::proto::ForwardedEvent| {
            check_forwarded_event(sender, me, f, 1 << 20).expect_err("refused")
        };
        assert!(bad("other", "top", f.clone()).contains("sender"));
        assert!(bad("syn1", "syn2", f.clone()).contains("loop"));
        let mut g = f.clone();
        g.tag = "salt/job/1/ret/m".into();
        assert!(bad("syn1", "top", g).contains("return"));
        let mut g = f.clone();
        g.data = json!([1]);
        assert!(bad("syn1", "top", g).contains("dict"));
        let mut g = f.clone();
        g.tag = String::new();
        assert!(bad("syn1", "top", g).contains("empty"));
        assert!(check_forwarded_event("syn1", "top", f, 10)
            .expect_err("big")
            .contains("max_event_size"));
    }

    #[test]
    fn presence_reports_who_came_and_went() {
        let bus = EventBus::default();
        let mut sub = bus.subscribe("salt/presence/*", 16).expect("sub");
        let mut last = None;
        presence(&bus, &mut last, vec!["b".into(), "a".into()]);
        let e = recv_now(&mut sub).expect("present");
        assert_eq!(e.tag, "salt/presence/present");
        assert_eq!(e.data["present"], json!(["a", "b"]));
        assert!(recv_now(&mut sub).is_none(), "no change on the first round");
        presence(&bus, &mut last, vec!["a".into(), "c".into()]);
        let e = recv_now(&mut sub).expect("change");
        assert_eq!(e.tag, "salt/presence/change");
        assert_eq!(e.data["new"], json!(["c"]));
        assert_eq!(e.data["lost"], json!(["b"]));
        assert_eq!(
            recv_now(&mut sub).expect("present").tag,
            "salt/presence/present"
        );
        presence(&bus, &mut last, vec!["c".into(), "a".into()]);
        assert_eq!(
            recv_now(&mut sub).expect("present").tag,
            "salt/presence/present"
        );
    }

    #[test]
    fn key_changes_name_salts_acts() {
        let bus = EventBus::default();
        bus.keys_seen([
            ("a".to_string(), "minions_pre"),
            ("b".to_string(), "minions"),
            ("c".to_string(), "minions"),
        ]);
        let now = BTreeMap::from([
            ("a".to_string(), "minions"),
            ("b".to_string(), "minions_rejected"),
            ("d".to_string(), "minions_pre"),
        ]);
        let mut acts = bus.key_changes(now.clone());
        acts.sort();
        assert_eq!(
            acts,
            [
                ("a".to_string(), "accept"),
                ("b".to_string(), "reject"),
                ("c".to_string(), "delete"),
            ]
        );
        assert!(bus.key_changes(now).is_empty(), "nothing changed since");
    }
}
