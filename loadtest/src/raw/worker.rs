//! `loadtest raw-worker`: many simulated minions in one process.
//!
//! Each minion has a SUB (connected to its relay's PUB) and a DEALER (to
//! its relay's ROUTER) and answers every targeted job with `payload` bytes.
//! Sockets are spread over several zmq contexts (at most
//! `minions_per_context` minions each) to stay under `ZMQ_MAX_SOCKETS`.
//! Reception does not `zmq::poll` thousands of sockets: each SUB's
//! `ZMQ_FD` is registered once in an edge-triggered epoll (mio, with the
//! safe `SourceFd`), and only sockets whose fd fired are drained until
//! `EAGAIN`: the cost per publish is O(ready sockets), not O(all sockets).
//! One thread serves all minions of the worker (the machine has 2 cores).
//! Invariant: a socket is left to wait for its next edge only after a
//! `recv` returned `EAGAIN`; otherwise it is queued for another round, so
//! no edge (and no message) is ever missed.

use super::wire::{self, Down, Up};
use super::{now_ns, read_ts, RawError};
use crate::workers::{count_fds, emit, ChildEvent, WorkerResult};
use brine_deploy::memory::rss_kib;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What one worker runs, sent as JSON on its stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub worker: u32,
    /// Bytes of each job return.
    pub payload: usize,
    /// Minions per zmq context (two sockets each; the limit is 1023).
    pub minions_per_context: usize,
    /// Give up after this long even without a stop message.
    pub max_secs: u64,
    pub groups: Vec<MinionGroup>,
}

/// Minions attached to one relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinionGroup {
    pub pub_endpoint: String,
    pub ret_endpoint: String,
    pub minions: Vec<u32>,
}

/// Counters of a worker.
#[derive(Default)]
struct Counts {
    jobs_seen: u64,
    replies_sent: u64,
    send_errors: u64,
    recv_errors: u64,
    /// Minions that saw a probe; when all did, the worker is ready.
    probed: usize,
    /// Minions that saw the stop message.
    stopped: usize,
}

/// One simulated minion.
struct Minion {
    idx: u32,
    id: String,
    sub: zmq::Socket,
    dealer: zmq::Socket,
    probed: bool,
    stopped: bool,
}

/// Reads the spec from stdin and runs the worker.
pub fn run_from_stdin() -> Result<(), RawError> {
    let spec: WorkerSpec = serde_json::from_reader(std::io::stdin().lock())?;
    run(&spec)
}

/// Runs every minion of `spec` until a stop arrives or time runs out.
pub fn run(spec: &WorkerSpec) -> Result<(), RawError> {
    let fds_before = count_fds().unwrap_or(0);
    let per_ctx = spec.minions_per_context.clamp(1, 500);
    let payload = vec![b'x'; spec.payload];
    let mut poll = Poll::new()?;
    let mut contexts: Vec<zmq::Context> = Vec::new();
    let mut minions: Vec<Minion> = Vec::new();
    for g in &spec.groups {
        for &idx in &g.minions {
            if minions.len().is_multiple_of(per_ctx) {
                contexts.push(zmq::Context::new());
            }
            let ctx = contexts.last().ok_or(RawError::Malformed("no context"))?;
            let sub = ctx.socket(zmq::SUB)?;
            sub.set_linger(0)?;
            sub.set_subscribe(b"")?;
            sub.connect(&g.pub_endpoint)?;
            let dealer = ctx.socket(zmq::DEALER)?;
            dealer.set_linger(0)?;
            dealer.connect(&g.ret_endpoint)?;
            dealer.send_multipart([wire::encode(&Up::Hello { idx })?, Vec::new()], 0)?;
            let fd = sub.get_fd()?;
            poll.registry().register(
                &mut SourceFd(&fd),
                Token(minions.len()),
                Interest::READABLE,
            )?;
            minions.push(Minion {
                idx,
                id: super::minion_id(idx),
                sub,
                dealer,
                probed: false,
                stopped: false,
            });
        }
    }
    let total = minions.len();
    let mut counts = Counts::default();
    let deadline = Instant::now() + Duration::from_secs(spec.max_secs);
    let mut events = Events::with_capacity(1024);
    let mut fds_per_minion = None;
    // Every socket starts "possibly readable": zmq may hold commands that
    // raised the fd before registration.
    let mut pending: Vec<usize> = (0..total).collect();
    let mut timed_out = true;
    while Instant::now() < deadline {
        let mut again = Vec::new();
        for i in pending.drain(..) {
            if let Some(m) = minions.get_mut(i) {
                if !drain(m, &payload, &mut counts)? {
                    again.push(i);
                }
            }
        }
        pending = again;
        if fds_per_minion.is_none() && counts.probed >= total {
            let after = count_fds().unwrap_or(0);
            let per = after.saturating_sub(fds_before) as f64 / total.max(1) as f64;
            fds_per_minion = Some(per);
            emit(&ChildEvent::WorkerReady {
                worker: spec.worker,
                minions: total as u32,
                fds_per_minion: per,
            })?;
        }
        if counts.stopped >= total {
            timed_out = false;
            break;
        }
        let wait = if pending.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        pending.extend(events.iter().map(|e| e.token().0));
    }
    let rss = rss_kib(std::process::id());
    emit(&ChildEvent::WorkerResult(WorkerResult {
        worker: spec.worker,
        minions: total as u32,
        contexts: contexts.len() as u32,
        fds_per_minion: fds_per_minion.unwrap_or(0.0),
        rss_kib: rss,
        jobs_seen: counts.jobs_seen,
        replies_sent: counts.replies_sent,
        send_errors: counts.send_errors,
        recv_errors: counts.recv_errors,
        failed_minions: (total - counts.stopped.min(total)) as u32,
        timed_out,
    }))?;
    for m in &minions {
        let fd = m.sub.get_fd()?;
        let _ = poll.registry().deregister(&mut SourceFd(&fd));
    }
    Ok(())
}

/// Receives what is queued on a minion's SUB. Returns `true` once `recv`
/// said `EAGAIN` (or the minion stopped), `false` after 10000 messages
/// with more possibly queued: no new edge will come, so call again.
fn drain(m: &mut Minion, payload: &[u8], counts: &mut Counts) -> Result<bool, RawError> {
    if m.stopped {
        return Ok(true);
    }
    for _ in 0..10_000 {
        let frames = match m.sub.recv_multipart(zmq::DONTWAIT) {
            Ok(f) => f,
            Err(zmq::Error::EAGAIN) => return Ok(true),
            Err(e) => {
                counts.recv_errors += 1;
                return Err(e.into());
            }
        };
        let t_recv_ns = now_ns();
        let Some(first) = frames.first() else {
            continue;
        };
        let Ok(msg) = wire::decode::<Down>(first) else {
            counts.recv_errors += 1;
            continue;
        };
        match msg {
            Down::Stop => {
                m.stopped = true;
                counts.stopped += 1;
                return Ok(true);
            }
            Down::Probe { seq } => {
                if !m.probed {
                    m.probed = true;
                    counts.probed += 1;
                    let ack = wire::encode(&Up::ProbeAck { idx: m.idx, seq })?;
                    send(&m.dealer, ack, Vec::new(), counts);
                }
            }
            Down::Job {
                jid,
                t_pub_ns,
                target,
                fun: _,
            } => {
                counts.jobs_seen += 1;
                if !target.matches(m.idx, &m.id) {
                    continue;
                }
                let stamp = |i: usize| frames.get(i).and_then(|f| read_ts(f).ok());
                let reply = Up::Reply {
                    idx: m.idx,
                    jid,
                    t_pub_ns,
                    t_relay_first_ns: stamp(1).unwrap_or(t_pub_ns),
                    t_relay_last_ns: stamp(frames.len() - 1).unwrap_or(t_pub_ns),
                    t_recv_ns,
                    t_sent_ns: now_ns(),
                };
                if send(&m.dealer, wire::encode(&reply)?, payload.to_vec(), counts) {
                    counts.replies_sent += 1;
                }
            }
        }
    }
    Ok(false)
}

/// Sends `[msg, payload]` without blocking; a failure is counted.
fn send(dealer: &zmq::Socket, msg: Vec<u8>, payload: Vec<u8>, counts: &mut Counts) -> bool {
    let ok = dealer.send_multipart([msg, payload], zmq::DONTWAIT).is_ok();
    if !ok {
        counts.send_errors += 1;
    }
    ok
}
