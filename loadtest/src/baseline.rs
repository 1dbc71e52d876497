//! The coordinator of a raw ZeroMQ baseline run (`loadtest baseline`).
//!
//! It places minions on syndics with the consistent-hash ring, starts the
//! top, `syndics x tiers` relays (tier t, chain j on 127.0.t.(j+1)) and the
//! minion workers as child processes of this binary, waits for the top's
//! result and the workers' reports, and turns them into a `Report`.
//! Invariant: every child is owned by a `ChildProc`, so whatever way this
//! function returns (result, error, timeout, Ctrl-C) no child survives it.

use crate::raw::wire::WireTarget;
use crate::raw::worker::{MinionGroup, WorkerSpec};
use crate::raw::{self, RawError};
use crate::report::RunMeta;
use crate::ring::{RingError, SyndicRing};
use crate::stats::{StatsError, TierStats};
use crate::workers::{self, ChildEvent, ChildProc, WorkerError};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Errors of a coordinated run.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Raw(#[from] RawError),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error(transparent)]
    Stats(#[from] StatsError),
    #[error("cannot encode worker spec: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Topo(#[from] crate::brine::topo::TopoError),
    #[error(transparent)]
    KeyPool(#[from] crate::brine::keypool::KeyPoolError),
    #[error("client channel: {0}")]
    Client(String),
    #[error("worker {worker}: only {done} of {total} simulated minions signed in before --ready-timeout")]
    NotSignedIn { worker: u32, done: u32, total: u32 },
    #[error("only {up} of {want} minions came up on the top master")]
    NotUp { up: usize, want: usize },
}

/// Everything a baseline run needs (validated by `validate`).
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub minions: u32,
    pub syndics: u32,
    pub tiers: u32,
    pub jobs: u32,
    pub warmup: u32,
    pub rate: f64,
    pub target: String,
    pub fun: String,
    pub payload: usize,
    /// Loopback address the top binds.
    pub master: String,
    /// Ports every master binds on its own address (0 = any free port).
    pub pub_port: u16,
    pub ret_port: u16,
    pub minions_per_worker: usize,
    pub minions_per_context: usize,
    pub vnodes: u32,
    pub job_timeout_secs: u64,
    pub ready_timeout_secs: u64,
    /// Draw a progress bar (only honoured when stderr is a terminal).
    pub progress: bool,
    /// This binary, run again for each child.
    pub exe: PathBuf,
    /// Brine run: masters' `heartbeat_interval` (seconds).
    pub heartbeat_secs: u64,
    /// Brine run: syndics' `syndic_forward_interval_ms`.
    pub forward_ms: u64,
    /// Brine run: attach to the running top master with this config dir.
    pub master_config: Option<PathBuf>,
    /// Brine run: the job's arguments, Salt style (`max=0.2`).
    pub fun_args: Vec<String>,
    /// Brine run: RSA keys shared by the simulated minions.
    pub key_pool: usize,
    /// Brine run: each simulated minion checks every publish signature
    /// (instead of once per distinct publish and worker).
    pub verify_each: bool,
    /// Brine run: where the key pool is cached (default under ~/.cache).
    pub key_dir: Option<PathBuf>,
    /// Brine run: also run the raw baseline for `ratio_p50`.
    pub with_baseline: bool,
    /// Brine run: bytes of the `salt://big.bin` the top master serves
    /// (`None`: no file).
    pub file_size: Option<u64>,
    /// Brine run: the event benchmark's events per second per minion (0:
    /// no event benchmark, the jobs run instead) and its seconds.
    pub events_per_sec: f64,
    pub events_secs: u64,
}

/// Largest `--file-size` (the file is written to the run's temp dir).
pub const MAX_FILE_SIZE: u64 = 16 << 30;

/// The outcome of a baseline run: histograms and the facts for a report.
#[derive(Debug)]
pub struct BaselineRun {
    pub stats: TierStats,
    pub meta: RunMeta,
}

impl RunConfig {
    /// Longest a run may take: sign-in, every job (plus `slack_jobs`) at
    /// its timeout, the rate's schedule, and `margin`. Children give up
    /// after it even if never told to stop.
    pub fn run_budget(&self, slack_jobs: u32, margin: Duration) -> Duration {
        let total_jobs = self.jobs + self.warmup;
        let schedule = if self.rate > 0.0 {
            Duration::from_secs_f64(f64::from(total_jobs) / self.rate)
        } else {
            Duration::ZERO
        };
        Duration::from_secs(self.ready_timeout_secs)
            + Duration::from_secs(self.job_timeout_secs).saturating_mul(total_jobs + slack_jobs)
            + schedule
            + margin
    }

    /// The report's facts that come from the flags of a `mode` run.
    pub fn meta(&self, mode: &str) -> RunMeta {
        RunMeta {
            mode: mode.into(),
            minions: self.minions,
            syndics: self.syndics,
            tiers: self.tiers,
            jobs: self.jobs,
            warmup: self.warmup,
            target: self.target.clone(),
            fun: self.fun.clone(),
            payload: self.payload,
            ..RunMeta::default()
        }
    }

    /// Checks sizes and addresses before anything starts.
    pub fn validate(&self) -> Result<(), HarnessError> {
        let bad = |m: &str| Err(HarnessError::Config(m.to_string()));
        if self.minions == 0 {
            return bad("--minions must be at least 1");
        }
        if !self.events_per_sec.is_finite() || !(0.0..=1000.0).contains(&self.events_per_sec) {
            return bad("--events-per-sec must be 0..=1000");
        }
        let events = self.events_per_sec > 0.0;
        if events && !(1..=3600).contains(&self.events_secs) {
            return bad("--events-secs must be 1..=3600");
        }
        let total = f64::from(self.minions) * self.events_per_sec * self.events_secs as f64;
        if total > crate::brine::events::MAX_EVENTS {
            return bad("--minions x --events-per-sec x --events-secs must be at most 1e9 events");
        }
        // Minions straight on the top: only for the event benchmark.
        let least = if events { 0 } else { 1 };
        if !(least..=254).contains(&self.syndics) {
            return bad("--syndics must be 1..=254 (one loopback address each; 0 only with --events-per-sec)");
        }
        if !(1..=254).contains(&self.tiers) {
            return bad("--tiers must be 1..=254");
        }
        if self.jobs == 0 {
            return bad("--jobs must be at least 1");
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return bad("--rate must be a non-negative number");
        }
        if self.heartbeat_secs == 0 || self.key_pool == 0 {
            return bad("--heartbeat-interval and --key-pool must be at least 1");
        }
        if self.minions_per_context == 0 || self.minions_per_context > 500 {
            return bad("minions per context must be 1..=500 (two sockets each, limit 1023)");
        }
        if let Some(size) = self.file_size {
            if self.master_config.is_some() {
                return bad("--file-size needs a top master started by loadtest (not --master-config): its file_roots are set up by the run");
            }
            if size > MAX_FILE_SIZE {
                return bad(
                    "--file-size is at most 16 GiB (the file is written to the run's temp dir)",
                );
            }
        }
        raw::check_loopback(&self.master)?;
        WireTarget::parse(&self.target, self.minions)?;
        Ok(())
    }

    /// The loopback address of relay `chain` at tier `tier` (both from 1).
    pub fn relay_addr(tier: u32, chain: u32) -> String {
        format!("127.0.{tier}.{chain}")
    }
}

/// Runs the raw baseline end to end.
pub fn run_baseline(
    cfg: &RunConfig,
    interrupted: &AtomicBool,
) -> Result<BaselineRun, HarnessError> {
    cfg.validate()?;
    let started = Instant::now();
    let names: Vec<String> = (1..=cfg.syndics).map(|i| format!("syndic-{i}")).collect();
    let ring = SyndicRing::new(&names, cfg.vnodes)?;
    let ids: Vec<String> = (0..cfg.minions).map(raw::minion_id).collect();
    let chain_of: Vec<usize> = ids.iter().map(|id| ring.assign_index(id)).collect();
    let balance = ring.balance(&ids);
    let moved = ring.moved_fraction(&ids, &format!("syndic-{}", cfg.syndics + 1))?;
    let plan = workers::plan_workers(
        cfg.minions as usize,
        workers::fd_limit(),
        cfg.minions_per_worker,
    )?;

    let run_budget = cfg.run_budget(1, Duration::from_secs(30));

    let is_ready = |ev: ChildEvent| match ev {
        ChildEvent::Ready {
            pub_endpoint,
            ret_endpoint,
        } => Ok((pub_endpoint, ret_endpoint)),
        other => Err(other),
    };

    // Top.
    let mut cmd = Command::new(&cfg.exe);
    cmd.arg("raw-top")
        .args(["--bind", &cfg.master])
        .args(["--pub-port", &cfg.pub_port.to_string()])
        .args(["--ret-port", &cfg.ret_port.to_string()])
        .args(["--minions", &cfg.minions.to_string()])
        .args(["--jobs", &cfg.jobs.to_string()])
        .args(["--warmup", &cfg.warmup.to_string()])
        .args(["--rate", &cfg.rate.to_string()])
        .args(["--target", &cfg.target])
        .args(["--fun", &cfg.fun])
        .args(["--job-timeout-secs", &cfg.job_timeout_secs.to_string()])
        .args(["--ready-timeout-secs", &cfg.ready_timeout_secs.to_string()]);
    let mut top = ChildProc::spawn("raw-top", cmd, None)?;
    let short = Instant::now() + Duration::from_secs(20);
    let top_eps = top.wait_for(short, interrupted, is_ready, |_| {})?;

    // Relays, tier by tier; chain j of tier t hangs off chain j of tier t-1.
    let mut relays: Vec<ChildProc> = Vec::new();
    let mut parents: Vec<(String, String)> = vec![top_eps; cfg.syndics as usize];
    for tier in 1..=cfg.tiers {
        let mut these = Vec::with_capacity(cfg.syndics as usize);
        for chain in 1..=cfg.syndics {
            let (up_pub, up_ret) = &parents[(chain - 1) as usize];
            let addr = RunConfig::relay_addr(tier, chain);
            let mut cmd = Command::new(&cfg.exe);
            cmd.arg("raw-relay")
                .args(["--up-pub", up_pub, "--up-ret", up_ret, "--bind", &addr])
                .args(["--pub-port", &cfg.pub_port.to_string()])
                .args(["--ret-port", &cfg.ret_port.to_string()])
                .args(["--max-secs", &run_budget.as_secs().to_string()]);
            let mut relay = ChildProc::spawn(&format!("relay {addr}"), cmd, None)?;
            these.push(relay.wait_for(short, interrupted, is_ready, |_| {})?);
            relays.push(relay);
        }
        parents = these;
    }

    // Workers: contiguous slices of minion indices, grouped by relay.
    let mut worker_procs: Vec<ChildProc> = Vec::new();
    let mut first = 0u32;
    for (w, &count) in plan.iter().enumerate() {
        let mut groups: Vec<MinionGroup> = parents
            .iter()
            .map(|(p, r)| MinionGroup {
                pub_endpoint: p.clone(),
                ret_endpoint: r.clone(),
                minions: Vec::new(),
            })
            .collect();
        for idx in first..first + count as u32 {
            groups[chain_of[idx as usize]].minions.push(idx);
        }
        first += count as u32;
        groups.retain(|g| !g.minions.is_empty());
        let spec = WorkerSpec {
            worker: w as u32,
            payload: cfg.payload,
            minions_per_context: cfg.minions_per_context,
            max_secs: run_budget.as_secs(),
            groups,
        };
        let mut cmd = Command::new(&cfg.exe);
        cmd.arg("raw-worker");
        let data = serde_json::to_vec(&spec)?;
        worker_procs.push(ChildProc::spawn(&format!("worker {w}"), cmd, Some(&data))?);
    }

    // The top's result, with a progress bar on a terminal.
    let bar = if cfg.progress && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(u64::from(cfg.jobs + cfg.warmup));
        b.set_message("waiting for minions");
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let deadline = Instant::now() + run_budget;
    let top_result = top.wait_for(
        deadline,
        interrupted,
        |ev| match ev {
            ChildEvent::TopResult(r) => Ok(r),
            other => Err(other),
        },
        |ev| {
            if let ChildEvent::Progress { phase, done, .. } = ev {
                bar.set_message(phase.clone());
                if phase == "jobs" {
                    bar.set_position(u64::from(*done));
                }
            }
        },
    )?;
    bar.finish_and_clear();

    let mut results = Vec::with_capacity(worker_procs.len());
    let collect_by = Instant::now() + Duration::from_secs(20);
    for w in &mut worker_procs {
        results.push(w.wait_for(
            collect_by,
            interrupted,
            |ev| match ev {
                ChildEvent::WorkerResult(r) => Ok(r),
                other => Err(other),
            },
            |_| {},
        )?);
    }
    for p in relays.iter_mut().chain(worker_procs.iter_mut()) {
        p.finish(Duration::from_secs(3));
    }
    top.finish(Duration::from_secs(3));

    let stats = TierStats::from_snapshot(&top_result.stats)?;
    let total_minions: u32 = results.iter().map(|r| r.minions).sum();
    let fds_per_minion = if total_minions == 0 {
        0.0
    } else {
        results
            .iter()
            .map(|r| r.fds_per_minion * f64::from(r.minions))
            .sum::<f64>()
            / f64::from(total_minions)
    };
    let rss: u64 = results.iter().map(|r| r.rss_kib).sum();
    let meta = RunMeta {
        expected_returns: u64::from(top_result.expected_per_job) * u64::from(cfg.jobs),
        received_returns: top_result.received,
        lost_returns: top_result.lost_returns,
        duplicate_returns: top_result.duplicate_returns,
        unexpected_returns: top_result.unexpected_returns,
        completed_jobs: top_result.completed_jobs,
        timed_out_jobs: top_result.timed_out_jobs,
        balance,
        moved_fraction_on_add: moved,
        fds_per_minion,
        worker_processes: results.len() as u32,
        minion_rss_kib: rss as f64 / f64::from(cfg.minions),
        wall_secs: started.elapsed().as_secs_f64(),
        ..cfg.meta("baseline")
    };
    Ok(BaselineRun { stats, meta })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RunConfig {
        RunConfig {
            minions: 10,
            syndics: 2,
            tiers: 1,
            jobs: 1,
            warmup: 0,
            rate: 0.0,
            target: "all".into(),
            fun: "test.ping".into(),
            payload: 10,
            master: "127.0.0.1".into(),
            pub_port: 0,
            ret_port: 0,
            minions_per_worker: 100,
            minions_per_context: 400,
            vnodes: 10,
            job_timeout_secs: 1,
            ready_timeout_secs: 1,
            progress: false,
            exe: PathBuf::from("/nonexistent"),
            heartbeat_secs: 5,
            forward_ms: 20,
            master_config: None,
            fun_args: Vec::new(),
            key_pool: 1,
            verify_each: false,
            key_dir: None,
            with_baseline: false,
            file_size: None,
            events_per_sec: 0.0,
            events_secs: 0,
        }
    }

    #[test]
    fn validation() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.master = "192.168.1.1".into();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.syndics = 255;
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.target = "list:11".into();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.rate = f64::NAN;
        assert!(c.validate().is_err());
        assert_eq!(RunConfig::relay_addr(2, 3), "127.0.2.3");
        // A file for the top's file server: only on a top the run starts.
        let mut c = cfg();
        c.file_size = Some(10 << 20);
        assert!(c.validate().is_ok());
        c.master_config = Some(PathBuf::from("/etc/salt"));
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("--file-size") && e.contains("--master-config"),
            "{e}"
        );
        let mut c = cfg();
        c.file_size = Some(MAX_FILE_SIZE + 1);
        assert!(c.validate().unwrap_err().to_string().contains("16 GiB"));
        // The event benchmark: minions may sit on the top (no syndics).
        let mut c = cfg();
        c.syndics = 0;
        assert!(c.validate().is_err());
        c.events_per_sec = 1.0;
        c.events_secs = 3;
        assert!(c.validate().is_ok());
        c.events_secs = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--events-secs"));
        c.events_secs = 3;
        c.events_per_sec = f64::INFINITY;
        assert!(c.validate().is_err());
        c.events_per_sec = 1000.0;
        c.events_secs = 3600;
        c.minions = 1000;
        c.target = "all".into();
        assert!(c.validate().unwrap_err().to_string().contains("1e9"));
    }

    #[test]
    fn missing_binary_is_an_error_not_a_hang() {
        let stop = AtomicBool::new(false);
        assert!(matches!(
            run_baseline(&cfg(), &stop),
            Err(HarnessError::Worker(WorkerError::Spawn { .. }))
        ));
    }
}
