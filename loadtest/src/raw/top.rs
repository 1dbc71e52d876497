//! `loadtest raw-top`: the baseline's top master (PUB + ROUTER).
//!
//! It waits for a hello from every minion, publishes probes until every
//! minion has acked one, then publishes the jobs and times the returns:
//! first and last return per job, and each leg from the frame timestamps.
//! Invariant: each (job, minion) return is counted once; repeats are
//! duplicates, returns for jobs or minions it does not expect are counted
//! as unexpected, and a job that times out reports its missing returns as
//! lost.

use super::wire::{self, Down, Up, WireTarget};
use super::{now_ns, read_ts, RawError};
use crate::stats::{Tier, TierStats};
use crate::workers::{emit, ChildEvent, TopResult};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Settings of the top process.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// Loopback address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Publish port (0 = any free port).
    #[arg(long, default_value_t = 4505)]
    pub pub_port: u16,
    /// Return port (0 = any free port).
    #[arg(long, default_value_t = 4506)]
    pub ret_port: u16,
    #[arg(long)]
    pub minions: u32,
    #[arg(long, default_value_t = 10)]
    pub jobs: u32,
    #[arg(long, default_value_t = 0)]
    pub warmup: u32,
    /// Jobs per second; 0 = next job when the previous one completes.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    #[arg(long, default_value = "all")]
    pub target: String,
    #[arg(long, default_value = "test.ping")]
    pub fun: String,
    #[arg(long, default_value_t = 30)]
    pub job_timeout_secs: u64,
    #[arg(long, default_value_t = 120)]
    pub ready_timeout_secs: u64,
}

/// Returns received per job, for completion timing.
struct JobTrack {
    t_pub_ns: u64,
    started: Instant,
    warmup: bool,
    expected: u32,
    /// Whether minion `idx` has returned; a second return is a duplicate.
    seen: Vec<bool>,
    count: u32,
    first_ns: Option<u64>,
    last_ns: u64,
}

/// Counters the top reports.
#[derive(Default)]
struct Counts {
    received: u64,
    duplicates: u64,
    unexpected: u64,
    malformed: u64,
    lost: u64,
    timed_out_jobs: u32,
    completed_jobs: u32,
}

/// Runs the top until all jobs are done; prints events as JSON lines.
pub fn run(args: &TopArgs) -> Result<(), RawError> {
    super::check_loopback(&args.bind)?;
    let target = WireTarget::parse(&args.target, args.minions)?;
    let expected = target.expected(args.minions);
    let ctx = zmq::Context::new();
    let publisher = ctx.socket(zmq::PUB)?;
    publisher.set_linger(1000)?;
    publisher.set_sndhwm(super::BIG_HWM)?;
    publisher.set_backlog(super::BACKLOG)?;
    publisher.bind(&super::bind_endpoint(&args.bind, args.pub_port))?;
    let router = ctx.socket(zmq::ROUTER)?;
    router.set_linger(0)?;
    router.set_rcvhwm(super::BIG_HWM)?;
    router.set_backlog(super::BACKLOG)?;
    router.bind(&super::bind_endpoint(&args.bind, args.ret_port))?;
    emit(&ChildEvent::Ready {
        pub_endpoint: super::last_endpoint(&publisher)?,
        ret_endpoint: super::last_endpoint(&router)?,
    })?;

    let n = args.minions as usize;
    let ready_deadline = Instant::now() + Duration::from_secs(args.ready_timeout_secs);
    let mut counts = Counts::default();

    // Phase 1: a hello from every minion (DEALER path up is complete).
    let mut hello = vec![false; n];
    let mut hellos = 0usize;
    while hellos < n {
        if Instant::now() > ready_deadline {
            return Err(RawError::Timeout(format!("hellos ({hellos} of {n})")));
        }
        for frames in recv_batch(&router, 100)? {
            if let Ok((Up::Hello { idx }, _)) = parse_up(&frames) {
                if let Some(h) = hello.get_mut(idx as usize) {
                    if !*h {
                        *h = true;
                        hellos += 1;
                    }
                }
            }
        }
    }
    emit(&ChildEvent::Progress {
        phase: "hello".into(),
        done: hellos as u32,
        total: n as u32,
    })?;

    // Phase 2: probes until every minion acked one (SUB path down works).
    let mut acked = vec![false; n];
    let mut acks = 0usize;
    let mut seq = 0u32;
    let mut next_probe = Instant::now();
    while acks < n {
        if Instant::now() > ready_deadline {
            return Err(RawError::Timeout(format!("probe acks ({acks} of {n})")));
        }
        if Instant::now() >= next_probe {
            publisher.send(wire::encode(&Down::Probe { seq })?, 0)?;
            seq = seq.saturating_add(1);
            next_probe = Instant::now() + Duration::from_millis(200);
        }
        for frames in recv_batch(&router, 50)? {
            if let Ok((Up::ProbeAck { idx, .. }, _)) = parse_up(&frames) {
                if let Some(a) = acked.get_mut(idx as usize) {
                    if !*a {
                        *a = true;
                        acks += 1;
                    }
                }
            }
        }
    }
    emit(&ChildEvent::Progress {
        phase: "ready".into(),
        done: acks as u32,
        total: n as u32,
    })?;

    // Phase 3: jobs.
    let mut stats = TierStats::new()?;
    let total_jobs = args.warmup + args.jobs;
    let interval = if args.rate > 0.0 {
        Some(Duration::from_secs_f64(1.0 / args.rate))
    } else {
        None
    };
    let job_timeout = Duration::from_secs(args.job_timeout_secs);
    let run_deadline = Instant::now()
        + job_timeout.saturating_mul(total_jobs.saturating_add(1))
        + interval.unwrap_or_default().saturating_mul(total_jobs);
    let mut active: HashMap<u64, JobTrack> = HashMap::new();
    let mut next_jid = 1u64;
    let mut next_pub = Instant::now();
    let mut finished = 0u32;
    while finished < total_jobs {
        if Instant::now() > run_deadline {
            return Err(RawError::Timeout("jobs".into()));
        }
        let may_publish = next_jid <= u64::from(total_jobs)
            && Instant::now() >= next_pub
            && (interval.is_some() || active.is_empty());
        if may_publish {
            let t_pub_ns = now_ns();
            let msg = Down::Job {
                jid: next_jid,
                t_pub_ns,
                target: target.clone(),
                fun: args.fun.clone(),
            };
            publisher.send(wire::encode(&msg)?, 0)?;
            active.insert(
                next_jid,
                JobTrack {
                    t_pub_ns,
                    started: Instant::now(),
                    warmup: next_jid <= u64::from(args.warmup),
                    expected,
                    seen: vec![false; n],
                    count: 0,
                    first_ns: None,
                    last_ns: 0,
                },
            );
            next_jid += 1;
            next_pub = Instant::now() + interval.unwrap_or_default();
        }
        let wait_ms = if interval.is_some() {
            next_pub
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1, 50) as i64
        } else {
            50
        };
        for frames in recv_batch(&router, wait_ms)? {
            let now = now_ns();
            handle_reply(&frames, now, &target, &mut active, &mut stats, &mut counts);
        }
        // Retire jobs that completed or timed out.
        let done: Vec<u64> = active
            .iter()
            .filter(|(_, j)| j.count >= j.expected || j.started.elapsed() > job_timeout)
            .map(|(jid, _)| *jid)
            .collect();
        for jid in done {
            if let Some(j) = active.remove(&jid) {
                finished += 1;
                if !j.warmup {
                    if let Some(first) = j.first_ns {
                        stats.record_span_ns(Tier::FirstReturn, j.t_pub_ns, first);
                    }
                    if j.count >= j.expected {
                        counts.completed_jobs += 1;
                        stats.record_span_ns(Tier::Completion, j.t_pub_ns, j.last_ns);
                    } else {
                        counts.timed_out_jobs += 1;
                        counts.lost += u64::from(j.expected - j.count);
                    }
                }
                emit(&ChildEvent::Progress {
                    phase: "jobs".into(),
                    done: finished,
                    total: total_jobs,
                })?;
            }
        }
    }

    // Phase 4: stop everyone; late returns are drained for a moment.
    for _ in 0..3 {
        publisher.send(wire::encode(&Down::Stop)?, 0)?;
        for frames in recv_batch(&router, 100)? {
            handle_reply(
                &frames,
                now_ns(),
                &target,
                &mut active,
                &mut stats,
                &mut counts,
            );
        }
    }
    emit(&ChildEvent::TopResult(TopResult {
        expected_per_job: expected,
        jobs: args.jobs,
        completed_jobs: counts.completed_jobs,
        timed_out_jobs: counts.timed_out_jobs,
        received: counts.received,
        lost_returns: counts.lost,
        duplicate_returns: counts.duplicates,
        unexpected_returns: counts.unexpected,
        malformed: counts.malformed,
        stats: stats.snapshot(),
    }))?;
    Ok(())
}

/// Polls `sock` for up to `timeout_ms`, then drains at most 100000 messages.
fn recv_batch(sock: &zmq::Socket, timeout_ms: i64) -> Result<Vec<Vec<Vec<u8>>>, RawError> {
    let mut out = Vec::new();
    let ready = zmq::poll(&mut [sock.as_poll_item(zmq::POLLIN)], timeout_ms)?;
    if ready == 0 {
        return Ok(out);
    }
    for _ in 0..100_000 {
        match sock.recv_multipart(zmq::DONTWAIT) {
            Ok(f) => out.push(f),
            Err(zmq::Error::EAGAIN) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Splits ROUTER frames `[relay_id, Up, payload, ts_tierT.., ts_tier1]`.
fn parse_up(frames: &[Vec<u8>]) -> Result<(Up, &[Vec<u8>]), RawError> {
    if frames.len() < 3 {
        return Err(RawError::Malformed("up message has too few frames"));
    }
    let up: Up = wire::decode(&frames[1])?;
    Ok((up, &frames[3..]))
}

/// Accounts one return and records its legs.
fn handle_reply(
    frames: &[Vec<u8>],
    now: u64,
    target: &WireTarget,
    active: &mut HashMap<u64, JobTrack>,
    stats: &mut TierStats,
    counts: &mut Counts,
) {
    let (up, stamps) = match parse_up(frames) {
        Ok(x) => x,
        Err(_) => {
            counts.malformed += 1;
            return;
        }
    };
    let Up::Reply {
        idx,
        jid,
        t_pub_ns,
        t_relay_first_ns,
        t_relay_last_ns,
        t_recv_ns,
        t_sent_ns,
    } = up
    else {
        // Late hellos and probe acks are harmless.
        return;
    };
    let Some(job) = active.get_mut(&jid) else {
        counts.unexpected += 1;
        return;
    };
    if !target.matches(idx, &super::minion_id(idx)) {
        counts.unexpected += 1;
        return;
    }
    match job.seen.get_mut(idx as usize) {
        Some(s) if !*s => *s = true,
        Some(_) => {
            counts.duplicates += 1;
            return;
        }
        None => {
            counts.unexpected += 1;
            return;
        }
    }
    job.count += 1;
    job.first_ns.get_or_insert(now);
    job.last_ns = now;
    if job.warmup {
        return;
    }
    counts.received += 1;
    let (Some(up_last), Some(up_first)) = (stamps.first(), stamps.last()) else {
        counts.malformed += 1;
        return;
    };
    let (Ok(up_last), Ok(up_first)) = (read_ts(up_last), read_ts(up_first)) else {
        counts.malformed += 1;
        return;
    };
    stats.record_span_ns(Tier::TopToSyndic, t_pub_ns, t_relay_first_ns);
    stats.record_span_ns(Tier::SyndicToMinion, t_relay_last_ns, t_recv_ns);
    stats.record_span_ns(Tier::MinionExec, t_recv_ns, t_sent_ns);
    stats.record_span_ns(Tier::MinionToSyndic, t_sent_ns, up_last);
    stats.record_span_ns(Tier::SyndicToTop, up_first, now);
}
