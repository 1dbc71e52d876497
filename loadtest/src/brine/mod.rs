//! The Brine run (`loadtest` with no subcommand): simulated minions
//! against a real Brine topology, jobs through the top master's client
//! channel, per-tier latency from the jobs' trace stamps.
//!
//! Order of a run: key pool, topology (`topo`), minion workers (`sim`,
//! placed on the last-tier syndics with the ring), wait until every worker
//! signed in and the top's `manage.up` counts every minion, probe pings
//! until one job completes (slow joiners), warmup and measured jobs (or,
//! with `--events-per-sec`, the event benchmark of `events` instead), stop
//! file, worker reports, memory samples, then the raw baseline with the
//! same layout. With `--file-size` the top serves `salt://big.bin`, and
//! every master's `file_bytes_served` (`manage.stats`) is read just before
//! the first job and after the last, so the report says what the file
//! server moved through each request port during the jobs. Invariant: every expected return is accounted for exactly
//! once, as received, lost (never arrived before the job timeout) or
//! duplicate; a return for another job or an id that was not expected is
//! counted as unexpected, never as received.

pub mod events;
pub mod fetch;
pub mod keypool;
pub mod sim;
pub mod state_job;
pub mod topo;
pub mod trace;

use crate::baseline::{run_baseline, HarnessError, RunConfig};
use crate::report::{FileBench, MicroPercentiles, RunMeta, StateJobBench};
use crate::ring::SyndicRing;
use crate::stats::{Tier, TierStats};
use crate::workers::{self, ChildEvent, ChildProc};
use brine_common::client::LocalClient;
use brine_common::proto::client::PublishRequest;
use brine_common::proto::{now_us, TargetType};
use serde_json::{json, Value};
use sim::{SimGroup, SimSpec};
use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use topo::{Topo, TopoOptions};

/// How long the event benchmark waits after the last send for events
/// still on their way before it counts them lost.
const EVENT_GRACE: Duration = Duration::from_secs(10);

/// The outcome of a Brine run.
#[derive(Debug)]
pub struct BrineRun {
    pub stats: TierStats,
    /// The raw baseline's histograms (`None` with `--no-baseline`).
    pub baseline: Option<TierStats>,
    pub meta: RunMeta,
}

/// The job target for `--target`: `all` is `*`, `list:K` the first K
/// minion ids, anything else a glob.
pub fn job_target(target: &str, minions: u32) -> Result<(String, TargetType), HarnessError> {
    if target == "all" {
        return Ok(("*".into(), TargetType::Glob));
    }
    if let Some(k) = target.strip_prefix("list:") {
        let k: u32 = k
            .parse()
            .map_err(|_| HarnessError::Config(format!("bad target {target:?}")))?;
        if k == 0 || k > minions {
            return Err(HarnessError::Config(format!(
                "target {target:?} needs 1..={minions} minions"
            )));
        }
        let ids: Vec<String> = (0..k).map(crate::raw::minion_id).collect();
        return Ok((ids.join(","), TargetType::List));
    }
    if target.trim().is_empty() {
        return Err(HarnessError::Config("empty target".into()));
    }
    Ok((target.to_string(), TargetType::Glob))
}

/// What one job's returns amounted to.
#[derive(Debug, Default)]
struct JobOutcome {
    expected: u64,
    received: u64,
    lost: u64,
    duplicate: u64,
    unexpected: u64,
    failed: u64,
    /// Returns whose legs add up to more than their own arrival time
    /// (publish to receipt): impossible unless stamps are wrong.
    over_completion: u64,
    timed_out: bool,
    legs: Vec<(Tier, u64)>,
    first_us: Option<u64>,
    completion_us: Option<u64>,
}

/// Publishes one traced job and collects its returns until every expected
/// minion answered or `timeout` passed. `also_expect` are ids the harness
/// knows must answer even if the master's expected set lacks them.
async fn one_job(
    sock_dir: &Path,
    cachedir: &Path,
    req: PublishRequest,
    also_expect: &HashSet<String>,
    top_id: &str,
    timeout: Duration,
) -> Result<JobOutcome, HarnessError> {
    let client_err = |e: brine_common::client::ClientError| HarnessError::Client(e.to_string());
    let mut client = LocalClient::connect(sock_dir, cachedir)
        .await
        .map_err(client_err)?;
    let t_start = now_us();
    let published = client.publish(req).await.map_err(client_err)?;
    let mut expected: HashSet<String> = published.minions.into_iter().map(|m| m.id).collect();
    expected.extend(also_expect.iter().cloned());
    let mut out = JobOutcome {
        expected: expected.len() as u64,
        ..JobOutcome::default()
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut pub_us: Option<u64> = None;
    let deadline = tokio::time::Instant::now() + timeout;
    while seen.len() < expected.len() {
        let ret = match tokio::time::timeout_at(deadline, client.next_return()).await {
            Err(_) => {
                out.timed_out = true;
                break;
            }
            Ok(Err(e)) => return Err(client_err(e)),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(r))) => r,
        };
        let now = now_us();
        if ret.jid != published.jid || !expected.contains(&ret.id) {
            out.unexpected += 1;
            continue;
        }
        if !seen.insert(ret.id.clone()) {
            out.duplicate += 1;
            continue;
        }
        out.received += 1;
        if !ret.success {
            out.failed += 1;
        }
        let legs = ret
            .trace
            .as_deref()
            .map(|t| trace::split(t, top_id, &ret.id))
            .unwrap_or_default();
        let origin = *pub_us.get_or_insert(legs.pub_us.unwrap_or(t_start));
        let since = now.saturating_sub(origin);
        if legs.legs.iter().map(|(_, us)| us).sum::<u64>() > since {
            out.over_completion += 1;
        }
        out.legs.extend(legs.legs);
        out.first_us.get_or_insert(since);
        if seen.len() == expected.len() {
            out.completion_us = Some(since);
        }
    }
    out.lost = (expected.len() - seen.len()) as u64;
    Ok(out)
}

/// Waits until the top's `manage.up` lists `want` minions.
async fn wait_up(
    sock_dir: &Path,
    cachedir: &Path,
    want: usize,
    deadline: Instant,
    interrupted: &AtomicBool,
) -> Result<(), HarnessError> {
    let mut last = 0usize;
    let mut client: Option<LocalClient> = None;
    loop {
        if interrupted.load(Ordering::SeqCst) {
            return Err(workers::WorkerError::Interrupted.into());
        }
        if client.is_none() {
            client = LocalClient::connect(sock_dir, cachedir).await.ok();
        }
        if let Some(c) = client.as_mut() {
            match c.runner("manage.up", Vec::new(), BTreeMap::new()).await {
                Ok(Value::Array(ids)) => {
                    last = ids.len();
                    if last >= want {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(_) => client = None,
            }
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::NotUp { up: last, want });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `file_bytes_served` of each master's `manage.stats`, by id; a master
/// that does not answer within 10 s, or whose stats lack the counter, is
/// left out.
async fn file_bytes_served(
    masters: &[(String, std::path::PathBuf, std::path::PathBuf)],
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (id, sock_dir, cachedir) in masters {
        let ask = async {
            let mut c = LocalClient::connect(sock_dir, cachedir).await.ok()?;
            let stats = c
                .runner("manage.stats", Vec::new(), BTreeMap::new())
                .await
                .ok()?;
            stats.get("file_bytes_served")?.as_u64()
        };
        if let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(10), ask).await {
            out.insert(id.clone(), n);
        }
    }
    out
}

/// What each master served between two readings of its counter (only
/// masters read both times; a counter that went back, a restarted master,
/// counts from zero).
fn served_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(id, a)| {
            let b = before.get(id)?;
            Some((id.clone(), if a >= b { a - b } else { *a }))
        })
        .collect()
}

/// Runs the Brine load test end to end.
pub fn run_brine(cfg: &RunConfig, interrupted: &AtomicBool) -> Result<BrineRun, HarnessError> {
    cfg.validate()?;
    let started = Instant::now();
    let (tgt, tgt_type) = job_target(&cfg.target, cfg.minions)?;
    let ids: Vec<String> = (0..cfg.minions).map(crate::raw::minion_id).collect();
    let parsed = brine_common::target::parse(&tgt, tgt_type, &BTreeMap::new())
        .map_err(|e| HarnessError::Config(format!("target: {e}")))?;
    let also_expect: HashSet<String> = ids
        .iter()
        .filter(|id| parsed.matches(id, &json!({ "id": id }), ":"))
        .cloned()
        .collect();
    if also_expect.is_empty() {
        return Err(HarnessError::Config(format!(
            "target {:?} matches no simulated minion",
            cfg.target
        )));
    }
    let key_dir = cfg.key_dir.clone().unwrap_or_else(keypool::default_dir);
    let key_files = keypool::ensure(&key_dir, cfg.key_pool)?;
    let plan = workers::plan_workers(ids.len(), workers::fd_limit(), cfg.minions_per_worker)?;

    let mut topo = Topo::start(&TopoOptions {
        syndics: cfg.syndics,
        tiers: cfg.tiers,
        heartbeat_secs: cfg.heartbeat_secs,
        forward_ms: cfg.forward_ms,
        pub_port: cfg.pub_port,
        ret_port: cfg.ret_port,
        attach: cfg.master_config.clone(),
        attach_addr: cfg.master.clone(),
        bin_dir: topo::bin_dir(),
        ready_secs: 30,
        file_size: cfg.file_size,
    })?;
    topo.start_sampling();
    // A fresh master's re-auth publishes name its key: minions that
    // signed in to it ignore them, so no settling time is needed.
    let leaves: Vec<(String, String)> = topo
        .leaves()
        .iter()
        .map(|m| (m.id.clone(), m.addr.clone()))
        .collect();
    let names: Vec<&str> = leaves.iter().map(|(n, _)| n.as_str()).collect();
    let ring = SyndicRing::new(&names, cfg.vnodes)?;
    let chain_of: Vec<usize> = ids.iter().map(|id| ring.assign_index(id)).collect();
    let balance = ring.balance(&ids);
    let moved = ring.moved_fraction(&ids, &format!("syndic{}", cfg.syndics + 1))?;

    let event_plan = (cfg.events_per_sec > 0.0).then(|| events::EventPlan {
        rate: cfg.events_per_sec,
        secs: cfg.events_secs as f64,
        minions: cfg.minions,
        go_file: topo.root.path().join("events-go"),
    });
    // The event benchmark runs instead of the jobs.
    let total_jobs = if event_plan.is_some() {
        0
    } else {
        cfg.jobs + cfg.warmup
    };
    let run_budget = cfg.run_budget(
        2,
        Duration::from_secs(60 + cfg.events_secs + EVENT_GRACE.as_secs()),
    );
    let stop_file = topo.root.path().join("stop-workers");
    let mut procs: Vec<ChildProc> = Vec::new();
    let mut first = 0usize;
    for (w, &count) in plan.iter().enumerate() {
        let mut groups: Vec<SimGroup> = leaves
            .iter()
            .map(|(id, addr)| SimGroup {
                id: id.clone(),
                master: addr.clone(),
                ret_port: topo.ret_port,
                minions: Vec::new(),
            })
            .collect();
        for idx in first..first + count {
            groups[chain_of[idx]].minions.push(idx as u32);
        }
        first += count;
        groups.retain(|g| !g.minions.is_empty());
        let spec = SimSpec {
            worker: w as u32,
            payload: cfg.payload,
            minions_per_context: cfg.minions_per_context,
            max_secs: run_budget.as_secs(),
            key_files: key_files.clone(),
            stop_file: stop_file.clone(),
            groups,
            verify_each: cfg.verify_each,
            events: event_plan.clone(),
        };
        let mut cmd = Command::new(&cfg.exe);
        cmd.arg("brine-worker");
        let data = serde_json::to_vec(&spec)?;
        procs.push(ChildProc::spawn(
            &format!("brine worker {w}"),
            cmd,
            Some(&data),
        )?);
    }

    let bar = if cfg.progress && std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(u64::from(total_jobs))
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message("minions signing in");
    let ready_by = Instant::now() + Duration::from_secs(cfg.ready_timeout_secs);
    let mut fds_per_minion = 0.0;
    for (w, p) in procs.iter_mut().enumerate() {
        let mut signed = (0u32, 0u32);
        let got = p.wait_for(
            ready_by,
            interrupted,
            |ev| match ev {
                ChildEvent::SimReady {
                    minions,
                    fds_per_minion,
                    ..
                } => Ok((minions, fds_per_minion)),
                other => Err(other),
            },
            |ev| {
                if let ChildEvent::Progress { done, total, .. } = ev {
                    signed = (*done, *total);
                    bar.set_message(format!("worker {w}: {done}/{total} minions signed in"));
                }
            },
        );
        match got {
            Ok((m, f)) => fds_per_minion += f * f64::from(m),
            Err(workers::WorkerError::Timeout(_)) => {
                topo.check_alive()?;
                return Err(HarnessError::NotSignedIn {
                    worker: w as u32,
                    done: signed.0,
                    total: signed.1,
                });
            }
            Err(e) => {
                topo.check_alive()?;
                return Err(e.into());
            }
        }
    }
    fds_per_minion /= ids.len().max(1) as f64;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HarnessError::Client(format!("cannot start a runtime: {e}")))?;
    let (args, kwargs) = brine_common::args::parse_cli_args(&cfg.fun_args);
    let request = |fun: &str, arg: Vec<Value>, kwarg: BTreeMap<String, Value>| PublishRequest {
        tgt: tgt.clone(),
        tgt_type,
        fun: fun.to_string(),
        arg,
        kwarg,
        timeout: cfg.job_timeout_secs,
        user: "loadtest".into(),
        delimiter: ":".into(),
        trace: true,
    };
    let (sock_dir, cachedir) = (topo.sock_dir.clone(), topo.cachedir.clone());
    let top_id = topo.top.id.clone();
    // Whose file server counters to read (top first), with a file only.
    let counted: Vec<(String, std::path::PathBuf, std::path::PathBuf)> = match &topo.file {
        Some(_) => std::iter::once((top_id.clone(), sock_dir.clone(), cachedir.clone()))
            .chain(topo.syndic_clients())
            .collect(),
        None => Vec::new(),
    };
    let mut served_before = BTreeMap::new();
    let mut served_after = BTreeMap::new();
    let mut jobs_span = None;
    let job_timeout = Duration::from_secs(cfg.job_timeout_secs);
    let mut tally = Tally {
        stats: TierStats::new()?,
        totals: JobOutcome::default(),
        completed: 0,
        timed_out: 0,
        done: 0,
    };
    let mut measured_from = None;
    let mut event_bench = None;
    let top_pid = topo.top.pid();
    let syndic_pids: Vec<(String, u32)> = topo
        .syndics
        .iter()
        .filter_map(|m| Some((m.id.clone(), m.pid()?)))
        .collect();
    let cpu_pids = crate::cpu::Pids {
        top: top_pid,
        syndics: syndic_pids.clone(),
    };
    let mut cpu_marks = (crate::cpu::Mark::default(), None);
    let leaf_ids: HashSet<&str> = leaves.iter().map(|(id, _)| id.as_str()).collect();
    let leaf_clients: Vec<_> = topo
        .syndic_clients()
        .into_iter()
        .filter(|(id, _, _)| leaf_ids.contains(id.as_str()))
        .collect();
    rt.block_on(async {
        bar.set_message("waiting for manage.up");
        wait_up(&sock_dir, &cachedir, ids.len(), ready_by, interrupted).await?;
        // Probe pings until one completes: every subscription is in place.
        bar.set_message("probing");
        loop {
            if interrupted.load(Ordering::SeqCst) {
                return Err(workers::WorkerError::Interrupted.into());
            }
            let o = one_job(
                &sock_dir,
                &cachedir,
                request("test.ping", Vec::new(), BTreeMap::new()),
                &also_expect,
                &top_id,
                Duration::from_secs(5),
            )
            .await?;
            if o.lost == 0 {
                break;
            }
            if Instant::now() >= ready_by {
                return Err(HarnessError::NotUp {
                    up: (o.expected - o.lost) as usize,
                    want: o.expected as usize,
                });
            }
        }
        if let Some(plan) = &event_plan {
            bar.set_message("events");
            let phase = events::Phase {
                sock_dir: &sock_dir,
                cachedir: &cachedir,
                plan,
                top_pid,
                syndic_pids,
                leaves: leaf_clients,
                grace: EVENT_GRACE,
                interrupted,
            };
            let b = events::run_phase(&phase)
                .await
                .map_err(|e| HarnessError::Client(format!("event benchmark: {e}")))?;
            event_bench = Some(b);
            return Ok(());
        }
        bar.set_message("jobs");
        served_before = file_bytes_served(&counted).await;
        let jobs_from = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        let t0 = tokio::time::Instant::now();
        for j in 0..total_jobs {
            if interrupted.load(Ordering::SeqCst) {
                return Err(workers::WorkerError::Interrupted.into());
            }
            let req = request(&cfg.fun, args.clone(), kwargs.clone());
            let (sd, cd, ae, tid) = (
                sock_dir.clone(),
                cachedir.clone(),
                also_expect.clone(),
                top_id.clone(),
            );
            let warm = j < cfg.warmup;
            if !warm && measured_from.is_none() {
                measured_from = Some(Instant::now());
                cpu_marks.0 = cpu_pids.mark();
            }
            let fut = async move { (warm, one_job(&sd, &cd, req, &ae, &tid, job_timeout).await) };
            if cfg.rate > 0.0 {
                tokio::time::sleep_until(t0 + Duration::from_secs_f64(f64::from(j) / cfg.rate))
                    .await;
                set.spawn(fut);
            } else {
                set.spawn(fut);
                // One job at a time: wait for it before the next.
                while !set.is_empty() {
                    if let Some(r) = set.join_next().await {
                        tally.add(r, &bar)?;
                    }
                }
            }
            while let Some(r) = set.try_join_next() {
                tally.add(r, &bar)?;
            }
        }
        while let Some(r) = set.join_next().await {
            tally.add(r, &bar)?;
        }
        jobs_span = Some(jobs_from.elapsed());
        cpu_marks.1 = Some((cpu_pids.mark(), Instant::now()));
        served_after = file_bytes_served(&counted).await;
        Ok::<(), HarnessError>(())
    })?;
    bar.finish_and_clear();
    let cpu = match (measured_from, &cpu_marks.1) {
        (Some(t), Some((end, at))) => Some(crate::cpu::cost(
            &cpu_marks.0,
            end,
            at.duration_since(t).as_secs_f64(),
            cfg.jobs,
            tally.totals.received,
            &balance,
        )),
        _ => None,
    };
    let measured_secs =
        measured_from.map(|t| (topo.sampling_secs(t), topo.sampling_secs(Instant::now())));

    // Stop the workers and collect their reports.
    std::fs::write(&stop_file, b"stop").map_err(|e| HarnessError::Client(e.to_string()))?;
    let collect_by = Instant::now() + Duration::from_secs(30);
    let mut results = Vec::with_capacity(procs.len());
    for p in &mut procs {
        results.push(p.wait_for(
            collect_by,
            interrupted,
            |ev| match ev {
                ChildEvent::SimResult(r) => Ok(*r),
                other => Err(other),
            },
            |_| {},
        )?);
    }
    for p in &mut procs {
        p.finish(Duration::from_secs(3));
    }
    let samples = topo.stop_sampling();
    let served_file = topo.file.clone();
    topo.stop();
    drop(topo);

    // No raw baseline for the event benchmark (it has no event bus).
    let baseline = if cfg.with_baseline && event_plan.is_none() {
        let mut b = cfg.clone();
        b.progress = false;
        Some(run_baseline(&b, interrupted)?.stats)
    } else {
        None
    };

    let file = served_file.map(|f| {
        let mut served = served_delta(&served_before, &served_after);
        FileBench {
            url: f.url(),
            size: f.size,
            jobs: total_jobs,
            jobs_secs: jobs_span.map_or(0.0, |d| d.as_secs_f64()),
            top_bytes_served: served.remove(&top_id),
            syndic_bytes_served: served,
            fetched: results.iter().map(|r| r.files_fetched).sum(),
            failed: results.iter().map(|r| r.files_failed).sum(),
            unfinished: results.iter().map(|r| r.files_unfinished).sum(),
            bytes_received: results.iter().map(|r| r.file_bytes).sum(),
            asked_again: results.iter().map(|r| r.file_asked_again).sum(),
            busy: results.iter().map(|r| r.file_busy).sum(),
            restarts: results.iter().map(|r| r.file_restarts).sum(),
        }
    });
    let state_job = state_job_bench(&results)?;
    let events = event_bench.map(|mut b| {
        let sum = |f: fn(&sim::SimResult) -> u64| results.iter().map(f).sum::<u64>();
        events::add_sent(
            &mut b,
            sum(|r| r.events_sent),
            sum(|r| r.events_unsent),
            sum(|r| r.events_acked),
            sum(|r| r.events_refused),
        );
        b
    });
    let rss: u64 = results.iter().map(|r| r.rss_kib).sum();
    let (top_rss, syndic_rss): (Vec<_>, BTreeMap<_, _>) = {
        let mut top = Vec::new();
        let mut syn = BTreeMap::new();
        for (id, v) in samples {
            if id == top_id {
                top = v;
            } else {
                syn.insert(id, v);
            }
        }
        (top, syn)
    };
    let meta = RunMeta {
        expected_returns: tally.totals.expected,
        received_returns: tally.totals.received,
        lost_returns: tally.totals.lost,
        duplicate_returns: tally.totals.duplicate,
        unexpected_returns: tally.totals.unexpected,
        failed_returns: tally.totals.failed,
        completed_jobs: tally.completed,
        timed_out_jobs: tally.timed_out,
        balance,
        moved_fraction_on_add: moved,
        fds_per_minion,
        worker_processes: results.len() as u32,
        minion_rss_kib: rss as f64 / f64::from(cfg.minions),
        wall_secs: started.elapsed().as_secs_f64(),
        top_rss_kib: top_rss,
        syndic_rss_kib: syndic_rss,
        measured_secs,
        sign_ins: results.iter().map(|r| r.sign_ins).sum(),
        returns_resent: results.iter().map(|r| r.returns_resent).sum(),
        trace_over_completion: tally.totals.over_completion,
        minion_reauths: results.iter().map(|r| r.reauths).sum(),
        sign_ins_by_tier: {
            let mut by: BTreeMap<String, sim::SignIns> = BTreeMap::new();
            for (id, n) in results.iter().flat_map(|r| &r.sign_ins_by_group) {
                by.entry(id.clone()).or_default().add(n);
            }
            by
        },
        signature_checks: results.iter().map(|r| r.signature_checks).sum(),
        signature_shared: results.iter().map(|r| r.signature_shared).sum(),
        file,
        state_job,
        events,
        cpu,
        ..cfg.meta("brine")
    };
    let meta = if meta.events.is_some() {
        // The event benchmark ran instead of the jobs.
        RunMeta {
            jobs: 0,
            warmup: 0,
            ..meta
        }
    } else {
        meta
    };
    Ok(BrineRun {
        stats: tally.stats,
        baseline,
        meta,
    })
}

/// The workers' state-job histograms merged (`None` when no worker ran
/// a state job).
fn state_job_bench(results: &[sim::SimResult]) -> Result<Option<StateJobBench>, HarnessError> {
    let jobs: u64 = results.iter().map(|r| r.state_jobs).sum();
    if jobs == 0 {
        return Ok(None);
    }
    let merged = |pick: fn(&sim::SimResult) -> &crate::stats::Recorded| {
        let mut h = crate::stats::new_histogram()?;
        for (v, n) in results.iter().flat_map(|r| pick(r).iter()) {
            h.saturating_record_n((*v).clamp(1, crate::stats::MAX_MICROS), *n);
        }
        Ok::<_, crate::stats::StatsError>(MicroPercentiles::of(&h))
    };
    Ok(Some(StateJobBench {
        jobs,
        cost_us: merged(|r| &r.state_job_us)?,
        wall_us: merged(|r| &r.state_job_wall_us)?,
        return_bytes: merged(|r| &r.state_return_bytes)?,
    }))
}

/// Figures of the measured jobs (warm-up jobs are not counted), added up
/// as each job ends.
struct Tally {
    stats: TierStats,
    totals: JobOutcome,
    completed: u32,
    timed_out: u32,
    /// Jobs ended, warm-up included (the progress bar).
    done: u32,
}

impl Tally {
    fn add(
        &mut self,
        r: Result<(bool, Result<JobOutcome, HarnessError>), tokio::task::JoinError>,
        bar: &indicatif::ProgressBar,
    ) -> Result<(), HarnessError> {
        self.done += 1;
        bar.set_position(u64::from(self.done));
        let (warm, o) = r.map_err(|e| HarnessError::Client(format!("job task: {e}")))?;
        let o = o?;
        if warm {
            return Ok(());
        }
        let totals = &mut self.totals;
        totals.expected += o.expected;
        totals.received += o.received;
        totals.lost += o.lost;
        totals.duplicate += o.duplicate;
        totals.unexpected += o.unexpected;
        totals.failed += o.failed;
        totals.over_completion += o.over_completion;
        if o.lost == 0 && !o.timed_out {
            self.completed += 1;
        } else {
            self.timed_out += 1;
        }
        for (t, us) in o.legs {
            self.stats.record(t, us);
        }
        if let Some(us) = o.first_us {
            self.stats.record(Tier::FirstReturn, us);
        }
        if let Some(us) = o.completion_us {
            self.stats.record(Tier::Completion, us);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            job_target("all", 5).unwrap(),
            ("*".to_string(), TargetType::Glob)
        );
        assert_eq!(
            job_target("list:2", 5).unwrap(),
            ("lt-00000,lt-00001".to_string(), TargetType::List)
        );
        assert!(job_target("list:6", 5).is_err());
        assert!(job_target("list:x", 5).is_err());
        assert!(job_target(" ", 5).is_err());
        assert_eq!(job_target("lt-0*", 5).unwrap().1, TargetType::Glob);
    }

    #[test]
    fn state_job_figures_merge_the_workers() {
        assert_eq!(state_job_bench(&[sim::SimResult::default()]).unwrap(), None);
        let w = |jobs: u64, us: u64, bytes: u64| sim::SimResult {
            state_jobs: jobs,
            state_job_us: vec![(us, jobs)],
            state_job_wall_us: vec![(us + 10, jobs)],
            state_return_bytes: vec![(bytes, jobs)],
            ..sim::SimResult::default()
        };
        let b = state_job_bench(&[w(90, 200, 2845), w(10, 5000, 2843)])
            .unwrap()
            .unwrap();
        assert_eq!(b.jobs, 100);
        assert_eq!((b.cost_us.p50, b.cost_us.p90), (200, 200));
        assert!(b.cost_us.p99 >= 4990 && b.cost_us.max >= 4990, "{b:?}");
        assert_eq!(b.return_bytes.p50, 2845);
        let line = b.line();
        assert!(
            line.contains("p50 200 µs") && line.contains("2845 B p50"),
            "{line}"
        );
    }

    #[test]
    fn bytes_served_between_two_readings() {
        let m = |v: &[(&str, u64)]| -> BTreeMap<String, u64> {
            v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        let before = m(&[("top", 100), ("syndic1", 0), ("syndic2", 50)]);
        let after = m(&[
            ("top", 300),
            ("syndic1", 900),
            ("syndic3", 7),
            ("syndic2", 20),
        ]);
        assert_eq!(
            served_delta(&before, &after),
            m(&[("top", 200), ("syndic1", 900), ("syndic2", 20)])
        );
    }
}
