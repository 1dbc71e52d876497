//! `loadtest brine-worker`: many simulated Brine minions in one process.
//!
//! Each simulated minion speaks the real protocol through a
//! [`ClientSession`] (role minion): a DEALER to its syndic's request port
//! for sign-in, hello, heartbeats and returns, and, once signed in, a SUB
//! to the publish port the sign-in answer names. It verifies and opens
//! every publish, matches the job's target like a real minion, answers
//! `test.ping` (`true`), `test.sleep` (fixed seconds, first argument) and
//! `test.rand_sleep` (random up to `max`), `cp.get_file` and
//! `cp.cache_file` of `salt://` files (fetched over the request channel
//! in chunks by a [`Fetch`] per job, hashed and dropped: nothing is
//! written, and a fetch holds at most its window of chunks), state jobs
//! (`state.apply`/`sls`/`highstate`/`test`: the built-in tree of
//! [`super::state_job`], rendered, compiled and run inline, its cost and
//! return size recorded per job), stamps the
//! trace (`recv` on receipt, `done` after execution) and keeps every
//! return until the master acknowledges it, resending after a re-sign-in
//! or after the real link's back-off (10 s, doubling to 160 s). Answers
//! are matched to questions by `req_id`: a fetch's go to that fetch, the
//! rest acknowledge returns. Sockets are spread over
//! several zmq contexts and read through one edge-triggered epoll (see
//! `raw::worker`).
//! Invariant: a socket waits for its next edge only after a `recv` said
//! `EAGAIN`, and a DEALER is re-read after every send on it (a send can
//! consume the edge of a pending message), so no message is missed.

use super::events::{self, EventPlan};
use super::fetch::{Fetch, FetchSpec, Verdict};
use super::state_job;
use crate::raw::{minion_id, RawError};
use crate::stats::{new_histogram, recorded, Recorded, MAX_MICROS};
use crate::workers::{count_fds, emit, ChildEvent};
use brine_common::crypto::KeyPair;
use brine_common::jid::Jid;
use brine_common::proto::*;
use brine_common::session::{
    ClientSession, PubEvent, ServerMsg, SessionError, SignInOutcome, SignatureMemo, Unacked,
    SIGN_IN_PROVEN_WAIT,
};
use brine_common::target::{self, Target};
use brine_common::transport::tcp_endpoint;
use brine_deploy::memory::rss_kib;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest frame a simulated minion accepts (the master's default).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// A sign-in not answered after this long is sent again.
const SIGN_IN_RETRY: Duration = Duration::from_secs(10);
/// Most unacknowledged returns one minion keeps.
const MAX_PENDING: usize = 10_000;
/// Most `salt://` fetches one minion runs at once (more fail at once).
const MAX_FETCHES: usize = 8;
/// Where a simulated minion says `cp.cache_file` put a file (Salt's
/// default minion `cachedir`, then `files/<saltenv>/<path>`).
const CACHE_DIR: &str = "/var/cache/salt/minion";

/// What one Brine worker runs, sent as JSON on its stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimSpec {
    pub worker: u32,
    /// Bytes of padding in each return.
    pub payload: usize,
    pub minions_per_context: usize,
    /// Give up after this long even without the stop file.
    pub max_secs: u64,
    /// The shared key pool (minion `idx` uses key `idx % len`).
    pub key_files: Vec<PathBuf>,
    /// The coordinator creates this file to end the run.
    pub stop_file: PathBuf,
    pub groups: Vec<SimGroup>,
    /// Every minion checks every publish signature itself (else the
    /// worker's minions share one check per distinct publish).
    #[serde(default)]
    pub verify_each: bool,
    /// Send `loadtest/event/<n>` events at this plan's pace once its go
    /// file appears (the event benchmark; see `super::events`).
    #[serde(default)]
    pub events: Option<EventPlan>,
}

/// Minions attached to one (last-tier) syndic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimGroup {
    /// The syndic's id (the key of its sign-in counts).
    #[serde(default)]
    pub id: String,
    /// The syndic's address; the publish port comes from the sign-in answer.
    pub master: String,
    pub ret_port: u16,
    pub minions: Vec<u32>,
}

/// Final report of one Brine worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimResult {
    pub worker: u32,
    pub minions: u32,
    pub contexts: u32,
    pub fds_per_minion: f64,
    pub rss_kib: u64,
    /// Minions signed in at the end.
    pub signed_in: u32,
    /// Accepted sign-ins, re-sign-ins included.
    pub sign_ins: u64,
    pub jobs_seen: u64,
    pub returns_sent: u64,
    pub returns_resent: u64,
    pub refused: u64,
    pub bad_publishes: u64,
    pub replays: u64,
    /// Re-sign-ins by cause: the master answered `ReAuth`, published a
    /// re-auth, used a publish key we lack, or went silent.
    pub reauths: u64,
    pub reauth_replies: u64,
    pub reauth_publishes: u64,
    /// `ReAuth` answers not acted on: the session was signed in moments
    /// ago (requests under the replaced session still in flight).
    #[serde(default)]
    pub reauth_ignored: u64,
    pub unknown_key: u64,
    pub silent_master: u64,
    pub send_errors: u64,
    pub recv_errors: u64,
    pub timed_out: bool,
    /// Publish signatures checked (Ed25519), and checks answered by the
    /// worker's memo of valid signatures (see `SimSpec::verify_each`).
    #[serde(default)]
    pub signature_checks: u64,
    #[serde(default)]
    pub signature_shared: u64,
    /// `cp.get_file` / `cp.cache_file` jobs whose file arrived whole with
    /// the master's hash, and those that failed (not found, refused,
    /// wrong hash, no answer).
    #[serde(default)]
    pub files_fetched: u64,
    #[serde(default)]
    pub files_failed: u64,
    /// Fetches still running when the worker stopped (their counts below
    /// are included).
    #[serde(default)]
    pub files_unfinished: u64,
    /// File chunk bytes received (each accepted chunk once).
    #[serde(default)]
    pub file_bytes: u64,
    /// File questions asked again (unanswered in time, or a new session),
    /// `Unavailable` answers waited out, and fetches started over because
    /// the file changed.
    #[serde(default)]
    pub file_asked_again: u64,
    #[serde(default)]
    pub file_busy: u64,
    #[serde(default)]
    pub file_restarts: u64,
    /// State jobs answered (warm-up included), the worker thread's CPU
    /// time to render + compile + run the tree for one minion (µs), the
    /// wall time the event loop spent on it (µs, preemption included), and
    /// the size of each return's `return` as JSON (bytes), as histograms.
    #[serde(default)]
    pub state_jobs: u64,
    #[serde(default)]
    pub state_job_us: Recorded,
    #[serde(default)]
    pub state_job_wall_us: Recorded,
    #[serde(default)]
    pub state_return_bytes: Recorded,
    /// Events handed to a socket, not sent (signing in, socket full),
    /// answered `Ok`, and refused by the master.
    #[serde(default)]
    pub events_sent: u64,
    #[serde(default)]
    pub events_unsent: u64,
    #[serde(default)]
    pub events_acked: u64,
    #[serde(default)]
    pub events_refused: u64,
    /// Sign-ins of each group's minions, by the id of the syndic (or
    /// master) they sign in to.
    #[serde(default)]
    pub sign_ins_by_group: BTreeMap<String, SignIns>,
}

/// Sign-ins of the minions of one syndic (or master), and why a minion
/// signed in more than once: each sign-in after a minion's first is
/// counted once, under the cause that started it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignIns {
    /// Accepted sign-ins, first and later ones.
    pub accepted: u64,
    /// Accepted sign-ins after a minion's first.
    pub again: u64,
    /// ... because the master answered a request with `ReAuth` (no
    /// session for the id, or a request that does not open under it).
    pub reauth_reply: u64,
    /// ... because the master published a re-auth.
    pub reauth_publish: u64,
    /// ... because a publish came under an unknown publish key.
    pub unknown_key: u64,
    /// ... because the master answered nothing for 4 heartbeats.
    pub silent_master: u64,
    /// Sign-in requests sent again because no answer came in time (each
    /// a new nonce; not a sign-in of its own).
    pub resent: u64,
    /// The slowest first sign-in, from the first request to acceptance,
    /// ms.
    pub first_max_ms: u64,
}

impl SignIns {
    /// Adds `o`'s counts (the slowest of both).
    pub fn add(&mut self, o: &SignIns) {
        self.accepted += o.accepted;
        self.again += o.again;
        self.reauth_reply += o.reauth_reply;
        self.reauth_publish += o.reauth_publish;
        self.unknown_key += o.unknown_key;
        self.silent_master += o.silent_master;
        self.resent += o.resent;
        self.first_max_ms = self.first_max_ms.max(o.first_max_ms);
    }
}

/// What started a minion's sign-in after its first.
#[derive(Debug, Clone, Copy)]
enum Again {
    ReauthReply,
    ReauthPublish,
    UnknownKey,
    SilentMaster,
}

/// Reads the spec from stdin and runs the worker.
pub fn run_from_stdin() -> Result<(), RawError> {
    let spec: SimSpec = serde_json::from_reader(std::io::stdin().lock())?;
    run(&spec)
}

enum Timer {
    /// Heartbeat tick: heartbeat, resend stale returns, retry a sign-in.
    Tick(usize),
    /// Sign in (again) now.
    SignIn(usize),
    /// A sleeping job is done.
    Finish(usize, Box<JobLoad>),
    /// A minion's fetches have a question to ask again or a back-off over.
    Fetch(usize),
    /// Minion `i` sends its event number `k`.
    Event(usize, u64),
}

struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    items: HashMap<u64, Timer>,
    seq: u64,
}

impl Timers {
    fn add(&mut self, at: Instant, t: Timer) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.items.insert(self.seq, t);
    }
    fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }
    fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => {
                let Reverse((_, k)) = self.heap.pop()?;
                self.items.remove(&k)
            }
            _ => None,
        }
    }
}

struct Sim {
    id: String,
    /// The minion's number in the run.
    idx: u32,
    group: usize,
    ctx: usize,
    session: ClientSession,
    dealer: zmq::Socket,
    sub: Option<zmq::Socket>,
    sub_port: u16,
    grains: Value,
    /// When the last sign-in request went out (None: signed in).
    signing_in: Option<Instant>,
    /// How long an unanswered sign-in waits before it is sent again;
    /// doubles up to a minute so a loaded master is not flooded.
    retry_after: Duration,
    last_heard: Instant,
    hb: Duration,
    /// Unacknowledged returns.
    pending: Unacked<ReturnLoad>,
    /// Accepted sign-ins of this minion.
    accepted: u32,
    /// When its first sign-in began.
    created: Instant,
    /// What started the sign-in under way, if it is not the first.
    again: Option<Again>,
    /// `cp` jobs fetching a file (at most [`MAX_FETCHES`]).
    fetches: Vec<Fetching>,
    /// When the earliest `Timer::Fetch` of this minion fires.
    fetch_wake: Option<Instant>,
    /// `req_id`s of events sent and not yet answered.
    event_reqs: HashSet<u64>,
}

/// A `cp` job and its fetch.
struct Fetching {
    job: JobLoad,
    call: CpCall,
    fetch: Fetch,
}

/// Worker-wide state besides the minions.
struct World {
    spec_groups: Vec<SimGroup>,
    contexts: Vec<zmq::Context>,
    poll: Poll,
    timers: Timers,
    /// Sockets that may have more to read: (minion, is_sub).
    ready: Vec<(usize, bool)>,
    counts: SimResult,
    /// Sign-ins of each group's minions (by group index).
    sign_ins: Vec<SignIns>,
    pad: String,
    targets: HashMap<Jid, Option<Target>>,
    /// Shared signature checks (None: `verify_each`).
    memo: Option<SignatureMemo>,
    /// Per state job: render + compile + run, CPU and wall (µs), return
    /// bytes.
    state_us: hdrhistogram::Histogram<u64>,
    state_wall_us: hdrhistogram::Histogram<u64>,
    state_bytes: hdrhistogram::Histogram<u64>,
}

fn token(i: usize, sub: bool) -> Token {
    Token(i * 2 + usize::from(sub))
}

/// Runs every minion of `spec` until the stop file appears or time runs out.
pub fn run(spec: &SimSpec) -> Result<(), RawError> {
    let fds_before = count_fds().unwrap_or(0);
    let keys: Vec<Arc<KeyPair>> = super::keypool::load(&spec.key_files)
        .map_err(|e| RawError::Io(std::io::Error::other(e.to_string())))?;
    let per_ctx = spec.minions_per_context.clamp(1, 500);
    let mut w = World {
        spec_groups: spec.groups.clone(),
        contexts: Vec::new(),
        poll: Poll::new()?,
        timers: Timers {
            heap: BinaryHeap::new(),
            items: HashMap::new(),
            seq: 0,
        },
        ready: Vec::new(),
        counts: SimResult {
            worker: spec.worker,
            ..SimResult::default()
        },
        sign_ins: vec![SignIns::default(); spec.groups.len()],
        pad: "x".repeat(spec.payload),
        targets: HashMap::new(),
        memo: (!spec.verify_each).then(SignatureMemo::default),
        state_us: new_histogram()?,
        state_wall_us: new_histogram()?,
        state_bytes: new_histogram()?,
    };
    let mut sims: Vec<Sim> = Vec::new();
    let mut rng = rand::thread_rng();
    for (g, group) in spec.groups.iter().enumerate() {
        for &idx in &group.minions {
            if sims.len().is_multiple_of(per_ctx) {
                w.contexts.push(zmq::Context::new());
            }
            let ctx = w.contexts.len() - 1;
            let dealer = w.contexts[ctx].socket(zmq::DEALER)?;
            dealer.set_linger(0)?;
            dealer.set_sndhwm(10_000)?;
            dealer.set_rcvhwm(10_000)?;
            dealer.set_reconnect_ivl(200 + rng.gen_range(0..200))?;
            dealer.set_reconnect_ivl_max(2000)?;
            dealer.set_maxmsgsize(MAX_FRAME as i64)?;
            dealer.connect(&tcp_endpoint(&group.master, group.ret_port))?;
            let fd = dealer.get_fd()?;
            let i = sims.len();
            w.poll
                .registry()
                .register(&mut SourceFd(&fd), token(i, false), Interest::READABLE)?;
            let id = minion_id(idx);
            let key = keys[idx as usize % keys.len()].clone();
            sims.push(Sim {
                session: ClientSession::new(&id, Role::Minion, key, None, None, MAX_FRAME),
                grains: json!({"id": id, "loadtest": true, "worker": spec.worker}),
                id,
                idx,
                group: g,
                ctx,
                dealer,
                sub: None,
                sub_port: 0,
                signing_in: None,
                retry_after: SIGN_IN_RETRY,
                last_heard: Instant::now(),
                hb: Duration::from_secs(5),
                pending: Unacked::new(MAX_PENDING),
                accepted: 0,
                created: Instant::now(),
                again: None,
                fetches: Vec::new(),
                fetch_wake: None,
                event_reqs: HashSet::new(),
            });
            sign_in(&mut sims[i], i, &mut w);
        }
    }
    let total = sims.len();
    // Ticks are spread over the first second so heartbeats do not come in
    // one burst per interval.
    let now = Instant::now();
    for i in 0..total {
        let at = now + Duration::from_millis(1000 * i as u64 / total.max(1) as u64);
        w.timers.add(at + Duration::from_secs(1), Timer::Tick(i));
    }
    let deadline = Instant::now() + Duration::from_secs(spec.max_secs);
    let mut events = Events::with_capacity(4096);
    let mut fds_per_minion = None;
    let mut next_stop_check = Instant::now();
    let mut next_progress = Instant::now();
    let mut signed_in;
    // When the event benchmark's sends begin (once its go file is read).
    let mut events_from: Option<Instant> = None;
    w.counts.timed_out = true;
    while Instant::now() < deadline {
        // Read every socket that may hold messages.
        let mut rounds = 0;
        while !w.ready.is_empty() && rounds < 64 {
            rounds += 1;
            let batch = std::mem::take(&mut w.ready);
            // Publishes are read off every ready SUB first, stamped with
            // their arrival time, and only then verified and run: one
            // thread serves many minions, and a minion's `recv` must not
            // include the time spent opening its neighbours' publishes.
            let mut arrived: Vec<(usize, u64, Vec<Vec<u8>>)> = Vec::new();
            for &(i, is_sub) in &batch {
                if !is_sub {
                    continue;
                }
                let Some(s) = sims.get_mut(i) else { continue };
                if read_sub(s, &mut arrived, i, &mut w) {
                    w.ready.push((i, true));
                }
            }
            for (i, at_us, frames) in arrived {
                if let Some(s) = sims.get_mut(i) {
                    on_publish(s, i, at_us, &frames, &mut w);
                }
            }
            for &(i, is_sub) in &batch {
                if is_sub {
                    continue;
                }
                let Some(s) = sims.get_mut(i) else { continue };
                if drain_dealer(s, i, &mut w) {
                    w.ready.push((i, false));
                }
            }
        }
        // Timers due now.
        let now = Instant::now();
        let mut fired = 0;
        while fired < 100_000 {
            let Some(t) = w.timers.pop_due(now) else {
                break;
            };
            fired += 1;
            match t {
                Timer::Tick(i) => {
                    if let Some(s) = sims.get_mut(i) {
                        tick(s, i, &mut w);
                        let hb = s.hb;
                        w.timers.add(now + hb, Timer::Tick(i));
                    }
                }
                Timer::SignIn(i) => {
                    // Only if still signing in: a matching answer may
                    // have arrived since the retry was scheduled.
                    if let Some(s) = sims.get_mut(i).filter(|s| s.signing_in.is_some()) {
                        sign_in(s, i, &mut w);
                    }
                }
                Timer::Finish(i, job) => {
                    if let Some(s) = sims.get_mut(i) {
                        finish(s, i, *job, true, &mut w);
                    }
                }
                Timer::Event(i, k) => {
                    if let (Some(s), Some(p), Some(t0)) =
                        (sims.get_mut(i), spec.events.as_ref(), events_from)
                    {
                        send_event(s, i, k, p, t0, &mut w);
                    }
                }
                Timer::Fetch(i) => {
                    if let Some(s) = sims.get_mut(i) {
                        if s.fetch_wake.is_some_and(|at| at <= now) {
                            s.fetch_wake = None;
                        }
                        drive_fetches(s, i, now, &mut w);
                    }
                }
            }
        }
        signed_in = sims.iter().filter(|s| s.signing_in.is_none()).count();
        if now >= next_progress {
            next_progress = now + Duration::from_secs(1);
            if fds_per_minion.is_none() {
                emit(&ChildEvent::Progress {
                    phase: "sign-in".into(),
                    done: signed_in as u32,
                    total: total as u32,
                })?;
            }
        }
        if fds_per_minion.is_none() && signed_in >= total {
            let after = count_fds().unwrap_or(0);
            let per = after.saturating_sub(fds_before) as f64 / total.max(1) as f64;
            fds_per_minion = Some(per);
            emit(&ChildEvent::SimReady {
                worker: spec.worker,
                minions: total as u32,
                fds_per_minion: per,
            })?;
        }
        if now >= next_stop_check {
            next_stop_check = now + Duration::from_millis(200);
            if spec.stop_file.exists() {
                w.counts.timed_out = false;
                break;
            }
            if let (Some(p), None) = (spec.events.as_ref(), events_from) {
                events_from = start_events(p, &sims, &mut w);
            }
        }
        let wait = if !w.ready.is_empty() {
            Duration::ZERO
        } else {
            let until_timer = w.timers.next_at().map_or(Duration::from_millis(200), |at| {
                at.saturating_duration_since(Instant::now())
            });
            until_timer.min(Duration::from_millis(200))
        };
        match w.poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for e in events.iter() {
            let t = e.token().0;
            w.ready.push((t / 2, t % 2 == 1));
        }
    }
    if let Some(m) = &w.memo {
        w.counts.signature_checks = m.checks;
        w.counts.signature_shared = m.hits;
    }
    for f in sims.iter().flat_map(|s| &s.fetches) {
        w.counts.files_unfinished += 1;
        add_fetch_stats(&mut w.counts, &f.fetch);
    }
    let c = &mut w.counts;
    c.minions = total as u32;
    c.contexts = w.contexts.len() as u32;
    c.fds_per_minion = fds_per_minion.unwrap_or(0.0);
    c.rss_kib = rss_kib(std::process::id());
    c.signed_in = sims.iter().filter(|s| s.signing_in.is_none()).count() as u32;
    c.state_jobs = w.state_us.len();
    c.state_job_us = recorded(&w.state_us);
    c.state_job_wall_us = recorded(&w.state_wall_us);
    c.state_return_bytes = recorded(&w.state_bytes);
    for (g, n) in w.spec_groups.iter().zip(&w.sign_ins) {
        c.sign_ins_by_group.entry(g.id.clone()).or_default().add(n);
    }
    emit(&ChildEvent::SimResult(Box::new(c.clone())))?;
    Ok(())
}

/// Reads the event plan's go file: once it holds the start time, every
/// minion's first event is scheduled at its offset after it; `None`
/// while the file is not there (or not yet whole).
fn start_events(p: &EventPlan, sims: &[Sim], w: &mut World) -> Option<Instant> {
    let text = std::fs::read_to_string(&p.go_file).ok()?;
    let start_us: u64 = text.trim().parse().ok()?;
    let t0 = Instant::now() + Duration::from_micros(start_us.saturating_sub(now_us()));
    for (i, s) in sims.iter().enumerate() {
        let off = events::send_offset(s.idx, p.minions, p.rate);
        if events::planned(off, p.rate, p.secs) > 0 {
            w.timers
                .add(t0 + Duration::from_secs_f64(off), Timer::Event(i, 0));
        }
    }
    Some(t0)
}

/// Sends event `k` of minion `i` (counted unsent while it signs in or
/// when the socket refuses it) and schedules the next one.
fn send_event(s: &mut Sim, i: usize, k: u64, p: &EventPlan, t0: Instant, w: &mut World) {
    let off = events::send_offset(s.idx, p.minions, p.rate);
    if k + 1 < events::planned(off, p.rate, p.secs) {
        let at = t0 + Duration::from_secs_f64(events::send_at(off, k + 1, p.rate));
        w.timers.add(at, Timer::Event(i, k + 1));
    }
    if s.signing_in.is_some() {
        w.counts.events_unsent += 1;
        return;
    }
    if s.event_reqs.len() >= MAX_PENDING {
        // Unanswered for long: forget the oldest answers' ids.
        s.event_reqs.clear();
    }
    let (tag, data) = events::event_load(s.idx, k, now_us());
    let errors = w.counts.send_errors;
    match request(s, i, RequestBody::Event(EventLoad { tag, data }), w) {
        Some(req_id) if w.counts.send_errors == errors => {
            s.event_reqs.insert(req_id);
            w.counts.events_sent += 1;
        }
        _ => w.counts.events_unsent += 1,
    }
}

/// Sends one frame on the minion's DEALER; the DEALER is re-read after.
fn send(s: &Sim, i: usize, frame: Vec<u8>, w: &mut World) -> bool {
    send_on(&s.dealer, i, frame, w)
}

/// [`send`] on minion `i`'s DEALER.
fn send_on(dealer: &zmq::Socket, i: usize, frame: Vec<u8>, w: &mut World) -> bool {
    let ok = dealer.send(frame, zmq::DONTWAIT).is_ok();
    if !ok {
        w.counts.send_errors += 1;
    }
    w.ready.push((i, false));
    ok
}

fn sign_in(s: &mut Sim, i: usize, w: &mut World) {
    s.signing_in = Some(Instant::now());
    match s.session.auth_frame() {
        Ok(f) => {
            send(s, i, f, w);
        }
        Err(_) => w.counts.send_errors += 1,
    }
}

/// Counts an accepted sign-in of `s` in its group, and its cause if it
/// is not the minion's first.
fn count_sign_in(s: &mut Sim, w: &mut World) {
    let Some(g) = w.sign_ins.get_mut(s.group) else {
        return;
    };
    g.accepted += 1;
    if s.accepted == 0 {
        let ms = u64::try_from(s.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        g.first_max_ms = g.first_max_ms.max(ms);
    } else {
        g.again += 1;
        match s.again.take() {
            Some(Again::ReauthReply) => g.reauth_reply += 1,
            Some(Again::ReauthPublish) => g.reauth_publish += 1,
            Some(Again::UnknownKey) => g.unknown_key += 1,
            Some(Again::SilentMaster) => g.silent_master += 1,
            None => {}
        }
    }
    s.accepted = s.accepted.saturating_add(1);
}

fn retry_sign_in(i: usize, after: Duration, w: &mut World) {
    w.timers.add(Instant::now() + after, Timer::SignIn(i));
}

/// Seals and sends a request; returns its `req_id` once sealed (a failed
/// send is counted; a kept request goes again after its back-off).
fn request(s: &mut Sim, i: usize, body: RequestBody, w: &mut World) -> Option<u64> {
    seal_send(&mut s.session, &s.dealer, i, body, w)
}

/// [`request`] on the parts of a minion it needs (so a fetch of the same
/// minion can be borrowed meanwhile).
fn seal_send(
    session: &mut ClientSession,
    dealer: &zmq::Socket,
    i: usize,
    body: RequestBody,
    w: &mut World,
) -> Option<u64> {
    match session.seal(body) {
        Ok((req_id, frame)) => {
            send_on(dealer, i, frame, w);
            Some(req_id)
        }
        Err(_) => {
            w.counts.send_errors += 1;
            None
        }
    }
}

/// Sends `ret`, which was sent `attempts` times before; keeps it until
/// acknowledged, to send again after the minion's back-off.
fn send_return(s: &mut Sim, i: usize, ret: ReturnLoad, attempts: u32, w: &mut World) {
    if s.signing_in.is_some() {
        // Kept until the next sign-in sends it.
        s.pending.hold(ret, attempts);
        return;
    }
    match request(s, i, RequestBody::Return(ret.clone()), w) {
        Some(req_id) => s.pending.sent(req_id, ret, attempts),
        // Not sealed (no session): kept for the next sign-in.
        None => s.pending.hold(ret, attempts),
    };
}

fn after_sign_in(s: &mut Sim, i: usize, w: &mut World) -> Result<(), RawError> {
    let Some(est) = s.session.established().cloned() else {
        return Ok(());
    };
    s.signing_in = None;
    s.retry_after = SIGN_IN_RETRY;
    s.hb = Duration::from_secs(est.heartbeat_interval.max(1));
    w.counts.sign_ins += 1;
    count_sign_in(s, w);
    if s.sub.is_none() || s.sub_port != est.publish_port {
        if let Some(old) = s.sub.take() {
            let fd = old.get_fd()?;
            let _ = w.poll.registry().deregister(&mut SourceFd(&fd));
        }
        let group = &w.spec_groups[s.group];
        let sub = w.contexts[s.ctx].socket(zmq::SUB)?;
        sub.set_linger(0)?;
        sub.set_rcvhwm(100_000)?;
        sub.set_maxmsgsize(MAX_FRAME as i64)?;
        sub.set_subscribe(TOPIC_BROADCAST)?;
        sub.set_subscribe(&topic_for(&s.id))?;
        sub.connect(&tcp_endpoint(&group.master, est.publish_port))?;
        let fd = sub.get_fd()?;
        w.poll
            .registry()
            .register(&mut SourceFd(&fd), token(i, true), Interest::READABLE)?;
        s.sub = Some(sub);
        s.sub_port = est.publish_port;
        w.ready.push((i, true));
    }
    let hello = RequestBody::Hello {
        grains: s.grains.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    request(s, i, hello, w);
    for (r, attempts) in s.pending.take_all() {
        w.counts.returns_resent += 1;
        send_return(s, i, r, attempts, w);
    }
    // Answers to what the fetches asked under the old session will not
    // come: ask again under this one.
    let now = Instant::now();
    for f in &mut s.fetches {
        f.fetch.ask_again(now);
    }
    drive_fetches(s, i, now, w);
    Ok(())
}

/// Reads the DEALER until `EAGAIN`; `true` if it should be read again.
fn drain_dealer(s: &mut Sim, i: usize, w: &mut World) -> bool {
    for _ in 0..1000 {
        let frames = match s.dealer.recv_multipart(zmq::DONTWAIT) {
            Ok(f) => f,
            Err(zmq::Error::EAGAIN) => return false,
            Err(_) => {
                w.counts.recv_errors += 1;
                return false;
            }
        };
        s.last_heard = Instant::now();
        let Some(frame) = frames.last() else { continue };
        match s.session.open_reply(frame) {
            Ok(ServerMsg::AuthReply(r)) => {
                if s.signing_in.is_none() {
                    continue; // a late answer to an earlier attempt
                }
                match s.session.handle_auth_reply(&r) {
                    Ok(SignInOutcome::Accepted { .. }) => {
                        if after_sign_in(s, i, w).is_err() {
                            w.counts.recv_errors += 1;
                            retry_sign_in(i, Duration::from_secs(1), w);
                        }
                    }
                    Ok(SignInOutcome::Pending) => retry_sign_in(i, Duration::from_secs(1), w),
                    Ok(_) => retry_sign_in(i, Duration::from_secs(5), w),
                    // The answer to an earlier attempt (we resent with a
                    // new nonce): wait for the answer to the latest one.
                    Err(SessionError::NonceMismatch) => {}
                    Err(_) => {
                        w.counts.recv_errors += 1;
                        retry_sign_in(i, Duration::from_secs(2), w);
                    }
                }
            }
            Ok(ServerMsg::Reply(r)) => {
                if let Some(k) = s.fetches.iter().position(|f| f.fetch.owns(r.req_id)) {
                    let now = Instant::now();
                    s.fetches[k].fetch.on_reply(r.req_id, r.body, now);
                    drive_fetches(s, i, now, w);
                    continue;
                }
                if s.event_reqs.remove(&r.req_id) {
                    match r.body {
                        ReplyBody::Refused(_) => w.counts.events_refused += 1,
                        _ => w.counts.events_acked += 1,
                    }
                    continue;
                }
                if matches!(r.body, ReplyBody::Refused(_)) {
                    w.counts.refused += 1;
                }
                s.pending.ack(r.req_id);
            }
            Ok(ServerMsg::Challenge { nonce, challenge }) => {
                if s.signing_in.is_none() {
                    continue;
                }
                match s.session.answer_challenge(&nonce, challenge) {
                    Ok(f) => {
                        // The master is up and has our proof queued:
                        // wait for its turn rather than queue another.
                        s.signing_in = Some(Instant::now());
                        s.retry_after = s.retry_after.max(SIGN_IN_PROVEN_WAIT);
                        send(s, i, f, w);
                    }
                    // For an earlier attempt: wait for the latest one's.
                    Err(SessionError::StaleChallenge) => {}
                    Err(_) => {
                        w.counts.recv_errors += 1;
                        retry_sign_in(i, Duration::from_secs(2), w);
                    }
                }
            }
            Ok(ServerMsg::ReAuth) => {
                if s.session.reauth_hint() {
                    w.counts.reauths += 1;
                    w.counts.reauth_replies += 1;
                    s.again = Some(Again::ReauthReply);
                    sign_in(s, i, w);
                } else {
                    w.counts.reauth_ignored += 1;
                }
            }
            Ok(ServerMsg::Error(_)) | Err(_) => w.counts.recv_errors += 1,
        }
    }
    true
}

/// Reads the SUB until `EAGAIN` into `arrived` (with the arrival time);
/// `true` if it should be read again.
fn read_sub(
    s: &mut Sim,
    arrived: &mut Vec<(usize, u64, Vec<Vec<u8>>)>,
    i: usize,
    w: &mut World,
) -> bool {
    let Some(sub) = s.sub.as_ref() else {
        return false;
    };
    for _ in 0..1000 {
        match sub.recv_multipart(zmq::DONTWAIT) {
            Ok(f) => arrived.push((i, now_us(), f)),
            Err(zmq::Error::EAGAIN) => return false,
            Err(_) => {
                w.counts.recv_errors += 1;
                return false;
            }
        }
    }
    true
}

/// Verifies and handles one publish that arrived at `at_us`.
fn on_publish(s: &mut Sim, i: usize, at_us: u64, frames: &[Vec<u8>], w: &mut World) {
    let Some(payload) = frames.get(1) else {
        w.counts.bad_publishes += 1;
        return;
    };
    let opened = match w.memo.as_mut() {
        Some(memo) => s.session.open_publish_memo(payload, Some(memo)),
        None => {
            w.counts.signature_checks += 1;
            s.session.open_publish(payload)
        }
    };
    match opened {
        Ok(PubEvent::Job(job)) => on_job(s, i, *job, at_us, w),
        Ok(PubEvent::KeyUpdated) | Ok(PubEvent::NotForUs) => {}
        Ok(PubEvent::Reauth) => {
            w.counts.reauths += 1;
            w.counts.reauth_publishes += 1;
            s.again = Some(Again::ReauthPublish);
            let d = Duration::from_millis(rand::thread_rng().gen_range(0..1000));
            s.signing_in = Some(Instant::now());
            retry_sign_in(i, d, w);
        }
        Err(SessionError::UnknownPublishKey { .. }) => {
            w.counts.reauths += 1;
            w.counts.unknown_key += 1;
            s.again = Some(Again::UnknownKey);
            sign_in(s, i, w);
        }
        Err(SessionError::Replay { .. }) => w.counts.replays += 1,
        Err(_) => w.counts.bad_publishes += 1,
    }
}

fn matches(s: &Sim, job: &JobLoad, w: &mut World) -> bool {
    if w.targets.len() > 256 {
        w.targets.clear();
    }
    let t = w
        .targets
        .entry(job.jid.clone())
        .or_insert_with(|| target::parse(&job.tgt, job.tgt_type, &BTreeMap::new()).ok());
    t.as_ref()
        .is_some_and(|t| t.matches(&s.id, &s.grains, &job.delimiter))
}

fn seconds(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite() && *x >= 0.0)
}

fn on_job(s: &mut Sim, i: usize, mut job: JobLoad, at_us: u64, w: &mut World) {
    w.counts.jobs_seen += 1;
    if !matches(s, &job, w) {
        return;
    }
    if let Some(t) = job.trace.as_mut() {
        t.push(Stamp {
            who: s.id.clone(),
            what: "recv".into(),
            us: at_us,
        });
    }
    if matches!(job.fun.as_str(), "cp.get_file" | "cp.cache_file") {
        return start_fetch(s, i, job, w);
    }
    if state_job::is_state_fun(&job.fun) {
        return state_job(s, i, job, w);
    }
    let delay = match job.fun.as_str() {
        "test.sleep" => seconds(job.arg.first()).or_else(|| seconds(job.kwarg.get("length"))),
        "test.rand_sleep" => {
            let max = seconds(job.kwarg.get("max"))
                .or_else(|| seconds(job.arg.first()))
                .unwrap_or(1.0);
            Some(rand::thread_rng().gen_range(0.0..=max))
        }
        _ => None,
    };
    match delay {
        Some(d) if d > 0.0 => {
            let at = Instant::now() + Duration::from_secs_f64(d.min(3600.0));
            w.timers.add(at, Timer::Finish(i, Box::new(job)));
        }
        _ => {
            let ok = matches!(
                job.fun.as_str(),
                "test.ping" | "test.sleep" | "test.rand_sleep"
            ) && (job.fun != "test.sleep" || delay.is_some());
            finish(s, i, job, ok, w);
        }
    }
}

/// Runs the built-in state tree for minion `i` inline (a small tree: one
/// job costs about a millisecond, see the README) and sends the return;
/// the time it took and the return's size go into the worker's figures.
fn state_job(s: &mut Sim, i: usize, job: JobLoad, w: &mut World) {
    let test = state_job::test_mode(&job.fun, &job.kwarg);
    let (cpu, t) = (thread_cpu_us(), Instant::now());
    let (ret, retcode) = state_job::answer(&s.id, &s.grains, test);
    let wall = u64::try_from(t.elapsed().as_micros()).unwrap_or(MAX_MICROS);
    w.state_wall_us.saturating_record(wall.clamp(1, MAX_MICROS));
    // Without a thread CPU clock, the wall time stands in.
    let used = match (cpu, thread_cpu_us()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => wall,
    };
    w.state_us.saturating_record(used.clamp(1, MAX_MICROS));
    let bytes = serde_json::to_vec(&ret).map_or(0, |v| v.len() as u64);
    w.state_bytes.saturating_record(bytes.clamp(1, MAX_MICROS));
    send_result(s, i, job, ret, retcode, w);
}

/// CPU time this thread has used, µs (`None` if the clock is missing).
fn thread_cpu_us() -> Option<u64> {
    use nix::time::{clock_gettime, ClockId};
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    let us = t.tv_sec() as i128 * 1_000_000 + t.tv_nsec() as i128 / 1000;
    u64::try_from(us).ok()
}

/// Sends the return of a `test` job (`ok`: the function exists and ran).
fn finish(s: &mut Sim, i: usize, job: JobLoad, ok: bool, w: &mut World) {
    let (ret, retcode) = if ok {
        (Value::Bool(true), 0)
    } else if job.fun == "test.sleep" {
        (json!("test.sleep needs a length in seconds"), 1)
    } else {
        (json!(format!("'{}' is not available.", job.fun)), 1)
    };
    send_result(s, i, job, ret, retcode, w);
}

/// Stamps `done` and sends the return of `job` (`success` when `retcode`
/// is 0).
fn send_result(s: &mut Sim, i: usize, mut job: JobLoad, ret: Value, retcode: i32, w: &mut World) {
    if let Some(t) = job.trace.as_mut() {
        t.push(Stamp {
            who: s.id.clone(),
            what: "done".into(),
            us: now_us(),
        });
    }
    let ok = retcode == 0;
    // The real minion's outputter for state runs.
    let out = state_job::is_state_fun(&job.fun).then(|| "highstate".to_string());
    let mut fun_args = job.arg;
    if !job.kwarg.is_empty() {
        let mut kw: serde_json::Map<String, Value> = job.kwarg.into_iter().collect();
        kw.insert("__kwarg__".into(), Value::Bool(true));
        fun_args.push(Value::Object(kw));
    }
    if !w.pad.is_empty() {
        // The load test's return size; kept out of `return` so a ping
        // still answers `true`.
        fun_args.push(json!({ "__pad__": w.pad }));
    }
    let ret = ReturnLoad {
        jid: job.jid,
        id: s.id.clone(),
        fun: job.fun,
        fun_args,
        ret,
        retcode,
        success: ok,
        out,
        trace: job.trace,
    };
    w.counts.returns_sent += 1;
    send_return(s, i, ret, 0, w);
}

/// A `cp.get_file` / `cp.cache_file` call, from the job's arguments.
#[derive(Debug, Clone, PartialEq)]
struct CpCall {
    saltenv: String,
    /// The path under the environment's roots (`salt://` stripped).
    path: String,
    /// What the job returns once the file is here: `cp.get_file`'s
    /// destination (a directory, ending in `/`, gets the file's name), or
    /// for `cp.cache_file` (and `cp.get_file` without one) the path in
    /// the minion's cache, as Salt returns them.
    ret: String,
}

impl CpCall {
    /// `salt://path[?saltenv=ENV] [dest]`, `path=`/`dest=`/`saltenv=`
    /// kwargs (the kwarg wins over the URL's query, as in Salt).
    fn parse(job: &JobLoad) -> Result<Self, String> {
        let fun = job.fun.as_str();
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let url = text(job.kwarg.get("path"))
            .or_else(|| text(job.arg.first()))
            .ok_or_else(|| format!("{fun} needs a salt:// path"))?;
        let rest = url.strip_prefix("salt://").ok_or_else(|| {
            format!("{fun}: {url}: the simulated minion fetches salt:// URLs only")
        })?;
        let rest = rest.strip_prefix('|').unwrap_or(rest);
        let (path, query_env) = match rest.split_once("?saltenv=") {
            Some((p, env)) => (p, Some(env.to_string())),
            None => (rest, None),
        };
        if path.is_empty() || path.ends_with('/') {
            return Err(format!("{fun}: {url} names no file"));
        }
        let saltenv = text(job.kwarg.get("saltenv"))
            .or(query_env)
            .unwrap_or_else(|| "base".to_string());
        let cached = format!("{CACHE_DIR}/files/{saltenv}/{path}");
        let dest = if fun == "cp.get_file" {
            text(job.kwarg.get("dest")).or_else(|| text(job.arg.get(1)))
        } else {
            None
        };
        let ret = match dest {
            Some(d) if d.ends_with('/') => {
                let name = path.rsplit('/').next().unwrap_or(path);
                format!("{d}{name}")
            }
            Some(d) => d,
            None => cached,
        };
        Ok(Self {
            saltenv,
            path: path.to_string(),
            ret,
        })
    }

    /// The job's return and retcode for how the fetch ended: the path on
    /// success, `False` when the master has no such file, the reason
    /// otherwise.
    fn outcome(&self, fun: &str, v: &Verdict) -> (Value, i32) {
        match v {
            Verdict::Fetched { .. } => (json!(self.ret), 0),
            Verdict::NotFound => (Value::Bool(false), 1),
            Verdict::Failed(why) => (json!(format!("{fun}: {why}")), 1),
        }
    }
}

/// Starts fetching the file of a `cp` job (or answers at once when the
/// arguments are wrong or the minion already runs [`MAX_FETCHES`]).
fn start_fetch(s: &mut Sim, i: usize, job: JobLoad, w: &mut World) {
    let call = match CpCall::parse(&job) {
        Ok(c) => c,
        Err(why) => {
            w.counts.files_failed += 1;
            return send_result(s, i, job, json!(why), 1, w);
        }
    };
    if s.fetches.len() >= MAX_FETCHES {
        w.counts.files_failed += 1;
        let why = format!("{}: {MAX_FETCHES} fetches already running", job.fun);
        return send_result(s, i, job, json!(why), 1, w);
    }
    let now = Instant::now();
    let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..500));
    let fetch = Fetch::new(FetchSpec::new(&call.saltenv, &call.path, jitter), now);
    s.fetches.push(Fetching { job, call, fetch });
    drive_fetches(s, i, now, w);
}

/// Sends what the minion's fetches have due, returns the jobs of those
/// that ended, and sets a timer for the next thing one has to do.
fn drive_fetches(s: &mut Sim, i: usize, now: Instant, w: &mut World) {
    if s.signing_in.is_none() {
        let (session, dealer) = (&mut s.session, &s.dealer);
        for f in &mut s.fetches {
            f.fetch
                .pump(now, &mut |body| seal_send(session, dealer, i, body, w));
        }
    }
    let mut k = 0;
    while k < s.fetches.len() {
        let Some(verdict) = s.fetches[k].fetch.verdict().cloned() else {
            k += 1;
            continue;
        };
        let done = s.fetches.swap_remove(k);
        add_fetch_stats(&mut w.counts, &done.fetch);
        if matches!(verdict, Verdict::Fetched { .. }) {
            w.counts.files_fetched += 1;
        } else {
            w.counts.files_failed += 1;
        }
        let (ret, retcode) = done.call.outcome(&done.job.fun, &verdict);
        send_result(s, i, done.job, ret, retcode, w);
    }
    if s.signing_in.is_some() {
        return; // the next sign-in drives them
    }
    let wake = s.fetches.iter().filter_map(|f| f.fetch.next_wake()).min();
    if let Some(at) = wake {
        // Never a timer in the past: a question that could not be sent
        // waits a moment instead of spinning.
        let at = at.max(now + Duration::from_millis(10));
        if s.fetch_wake.is_none_or(|t| at < t) {
            s.fetch_wake = Some(at);
            w.timers.add(at, Timer::Fetch(i));
        }
    }
}

/// Adds the counts of one fetch to the worker's.
fn add_fetch_stats(c: &mut SimResult, f: &Fetch) {
    let st = f.stats();
    c.file_bytes += st.bytes;
    c.file_asked_again += st.asked_again;
    c.file_busy += st.busy;
    c.file_restarts += st.restarts;
}

/// Heartbeat tick: heartbeat, resend stale returns, retry a stuck sign-in.
fn tick(s: &mut Sim, i: usize, w: &mut World) {
    match s.signing_in {
        Some(since) => {
            if since.elapsed() >= s.retry_after {
                let jitter = rand::thread_rng().gen_range(0..5000);
                s.retry_after = (s.retry_after * 2 + Duration::from_millis(jitter))
                    .min(Duration::from_secs(60));
                if let Some(g) = w.sign_ins.get_mut(s.group) {
                    g.resent += 1;
                }
                sign_in(s, i, w);
            }
        }
        None => {
            if s.last_heard.elapsed() > s.hb * 4 {
                // The master stopped answering: sign in again.
                w.counts.reauths += 1;
                w.counts.silent_master += 1;
                s.again = Some(Again::SilentMaster);
                sign_in(s, i, w);
                return;
            }
            request(s, i, RequestBody::Heartbeat, w);
            for (r, attempts) in s.pending.due(Instant::now(), 1000) {
                w.counts.returns_resent += 1;
                send_return(s, i, r, attempts, w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_from_args() {
        assert_eq!(seconds(Some(&json!(0.5))), Some(0.5));
        assert_eq!(seconds(Some(&json!("2"))), Some(2.0));
        assert_eq!(seconds(Some(&json!(-1))), None);
        assert_eq!(seconds(Some(&json!("x"))), None);
        assert_eq!(seconds(None), None);
    }

    fn cp_job(fun: &str, words: &[&str]) -> JobLoad {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let (arg, kwarg) = brine_common::args::parse_cli_args(&words);
        JobLoad {
            jid: Jid::parse("20250101000000000001").unwrap(),
            tgt: "*".into(),
            tgt_type: TargetType::Glob,
            fun: fun.into(),
            arg,
            kwarg,
            user: "loadtest".into(),
            timeout: 5,
            delimiter: ":".into(),
            path: Vec::new(),
            trace: None,
        }
    }

    #[test]
    fn cp_arguments_like_salt() {
        let call = |fun: &str, words: &[&str]| CpCall::parse(&cp_job(fun, words));
        let c = call("cp.get_file", &["salt://big.bin", "/tmp/dest.bin"]).unwrap();
        assert_eq!(
            (c.saltenv.as_str(), c.path.as_str(), c.ret.as_str()),
            ("base", "big.bin", "/tmp/dest.bin")
        );
        // A directory destination gets the file's name.
        let c = call("cp.get_file", &["salt://a/b/c.txt", "/tmp/d/"]).unwrap();
        assert_eq!(
            (c.path.as_str(), c.ret.as_str()),
            ("a/b/c.txt", "/tmp/d/c.txt")
        );
        // saltenv from the URL's query, overridden by the kwarg.
        let c = call("cp.cache_file", &["salt://x.conf?saltenv=dev"]).unwrap();
        assert_eq!(
            (c.saltenv.as_str(), c.path.as_str(), c.ret.as_str()),
            ("dev", "x.conf", "/var/cache/salt/minion/files/dev/x.conf")
        );
        let c = call(
            "cp.cache_file",
            &["salt://x.conf?saltenv=dev", "saltenv=prod"],
        )
        .unwrap();
        assert_eq!(c.saltenv, "prod");
        // Keyword path and dest; no dest: the cache path.
        let c = call("cp.get_file", &["path=salt://big.bin", "dest=/srv/b"]).unwrap();
        assert_eq!(c.ret, "/srv/b");
        let c = call("cp.get_file", &["salt://big.bin"]).unwrap();
        assert_eq!(c.ret, "/var/cache/salt/minion/files/base/big.bin");
        // Hostile paths go to the master as they are (it refuses them).
        let c = call("cp.get_file", &["salt://../../etc/passwd", "/tmp/p"]).unwrap();
        assert_eq!(c.path, "../../etc/passwd");
        for (words, why) in [
            (&[][..], "needs a salt:// path"),
            (&["/etc/hosts"][..], "salt:// URLs only"),
            (&["salt://"][..], "names no file"),
            (&["salt://dir/"][..], "names no file"),
        ] {
            let e = call("cp.get_file", words).unwrap_err();
            assert!(e.contains(why) && e.starts_with("cp.get_file"), "{e}");
        }
    }

    #[test]
    fn cp_outcomes_are_salts_returns() {
        let c = CpCall::parse(&cp_job("cp.get_file", &["salt://big.bin", "/tmp/b"])).unwrap();
        assert_eq!(
            c.outcome("cp.get_file", &Verdict::Fetched { size: 3 }),
            (json!("/tmp/b"), 0)
        );
        assert_eq!(
            c.outcome("cp.get_file", &Verdict::NotFound),
            (json!(false), 1)
        );
        assert_eq!(
            c.outcome("cp.get_file", &Verdict::Failed("sha256 mismatch".into())),
            (json!("cp.get_file: sha256 mismatch"), 1)
        );
    }

    #[test]
    fn timers_fire_in_order() {
        let mut t = Timers {
            heap: BinaryHeap::new(),
            items: HashMap::new(),
            seq: 0,
        };
        let now = Instant::now();
        t.add(now + Duration::from_secs(5), Timer::Tick(2));
        t.add(now, Timer::Tick(1));
        t.add(now, Timer::SignIn(3));
        assert!(matches!(t.pop_due(now), Some(Timer::Tick(1))));
        assert!(matches!(t.pop_due(now), Some(Timer::SignIn(3))));
        assert!(t.pop_due(now).is_none());
        assert_eq!(t.next_at(), Some(now + Duration::from_secs(5)));
    }
}
