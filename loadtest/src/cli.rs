//! The `loadtest` command line and what each subcommand does.
//!
//! `loadtest [run flags]` is the Brine run (integrated later), `loadtest
//! baseline [run flags]` the raw ZeroMQ baseline, `loadtest plan` a
//! capacity grid; `raw-top`, `raw-relay` and `raw-worker` are hidden
//! subcommands the coordinator starts as child processes. Invariant: all
//! flags are validated before any process starts, and every outcome maps
//! to one of Brine's named exit codes.

use crate::baseline::{run_baseline, HarnessError, RunConfig};
use crate::plan::run_plan;
use crate::raw::{relay::RelayArgs, top::TopArgs};
use crate::report::Report;
use brine_common::exit;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Load-test a Brine topology on one machine.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run only the raw ZeroMQ baseline with the same layout and flags.
    Baseline(RunArgs),
    /// Run a grid of sizes and recommend a syndic count per minion count.
    Plan(PlanArgs),
    #[command(hide = true)]
    RawTop(TopArgs),
    #[command(hide = true)]
    RawRelay(RelayArgs),
    /// Reads its `WorkerSpec` as JSON on stdin.
    #[command(hide = true)]
    RawWorker,
}

/// Flags of a run (Brine or baseline).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Simulated minions.
    #[arg(long, default_value_t = 100)]
    pub minions: u32,
    /// Syndics per tier (each on its own 127.0.T.x address).
    #[arg(long, default_value_t = 2)]
    pub syndics: u32,
    /// Syndic tiers between the top master and the minions.
    #[arg(long, default_value_t = 1)]
    pub tiers: u32,
    /// Measured jobs.
    #[arg(long, default_value_t = 10)]
    pub jobs: u32,
    /// Jobs per second (0 = each job after the previous one completes).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// `all`, `list:K` (K minions) or a glob on minion ids (`lt-000*`).
    #[arg(long, default_value = "all")]
    pub target: String,
    /// Execution function the jobs call.
    #[arg(long, default_value = "test.ping")]
    pub fun: String,
    /// Bytes in each return.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Unmeasured jobs before the measured ones.
    #[arg(long, default_value_t = 1)]
    pub warmup: u32,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Add one syndic during the run and measure the rebalancing (Brine
    /// run only; every report states the fraction that would move).
    #[arg(long)]
    pub add_syndic: bool,
    /// Loopback address the top master binds.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub master: String,
    /// Publish port of every master (0 = any free port).
    #[arg(long, default_value_t = 4505)]
    pub publish_port: u16,
    /// Return port of every master (0 = any free port).
    #[arg(long, default_value_t = 4506)]
    pub ret_port: u16,
    /// Most simulated minions per worker process.
    #[arg(long, default_value_t = 1250)]
    pub minions_per_worker: usize,
    /// Most simulated minions per zmq context (2 sockets each, max 1023).
    #[arg(long, default_value_t = 400)]
    pub minions_per_context: usize,
    /// Virtual nodes per syndic on the hash ring.
    #[arg(long, default_value_t = 160)]
    pub vnodes: u32,
    /// Seconds a job may take before its missing returns count as lost.
    #[arg(long, default_value_t = 30)]
    pub job_timeout: u64,
    /// Seconds for every minion to connect and subscribe.
    #[arg(long, default_value_t = 180)]
    pub ready_timeout: u64,
}

/// Flags of `loadtest plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Minion counts to try, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,5000")]
    pub minions: Vec<u32>,
    /// Syndic counts to try, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub syndics: Vec<u32>,
    /// Highest acceptable p99 job completion.
    #[arg(long, default_value_t = 500.0)]
    pub p99_target_ms: f64,
    /// Everything else, as for a run (`--minions`/`--syndics` are ignored).
    #[command(flatten)]
    pub run: PlanRunArgs,
}

/// Run flags that apply to every cell of a plan.
#[derive(Debug, Clone, Args)]
pub struct PlanRunArgs {
    #[arg(long, default_value_t = 1)]
    pub tiers: u32,
    #[arg(long, default_value_t = 10)]
    pub jobs: u32,
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    #[arg(long, default_value = "all")]
    pub target: String,
    #[arg(long, default_value_t = 1)]
    pub warmup: u32,
    /// Write the plan as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl RunArgs {
    /// The coordinator's config; `exe` is this binary.
    pub fn to_config(&self, exe: PathBuf) -> RunConfig {
        RunConfig {
            minions: self.minions,
            syndics: self.syndics,
            tiers: self.tiers,
            jobs: self.jobs,
            warmup: self.warmup,
            rate: self.rate,
            target: self.target.clone(),
            fun: self.fun.clone(),
            payload: self.payload,
            master: self.master.clone(),
            pub_port: self.publish_port,
            ret_port: self.ret_port,
            minions_per_worker: self.minions_per_worker,
            minions_per_context: self.minions_per_context,
            vnodes: self.vnodes,
            job_timeout_secs: self.job_timeout,
            ready_timeout_secs: self.ready_timeout,
            progress: true,
            exe,
        }
    }
}

/// Exit code for a harness error.
fn error_code(e: &HarnessError) -> i32 {
    match e {
        HarnessError::Config(_) | HarnessError::Ring(_) => exit::USAGE,
        HarnessError::Raw(crate::raw::RawError::Target(_))
        | HarnessError::Raw(crate::raw::RawError::NotLoopback(_)) => exit::USAGE,
        _ => exit::SOFTWARE,
    }
}

fn write_file(path: &PathBuf, text: &str) -> Result<(), i32> {
    std::fs::write(path, text).map_err(|e| {
        eprintln!("loadtest: cannot write {}: {e}", path.display());
        exit::SOFTWARE
    })
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("loadtest: cannot find own binary: {e}");
            return exit::SOFTWARE;
        }
    };
    match cli.command {
        None => {
            eprintln!(
                "loadtest: the Brine run is not integrated yet; `loadtest baseline` runs the raw ZeroMQ baseline with the same flags"
            );
            exit::USAGE
        }
        Some(Command::RawTop(a)) => {
            crate::workers::die_with_parent();
            child_code(crate::raw::top::run(&a))
        }
        Some(Command::RawRelay(a)) => {
            crate::workers::die_with_parent();
            child_code(crate::raw::relay::run(&a))
        }
        Some(Command::RawWorker) => {
            crate::workers::die_with_parent();
            child_code(crate::raw::worker::run_from_stdin())
        }
        Some(Command::Baseline(a)) => baseline(&a, exe),
        Some(Command::Plan(p)) => plan(&p, exe),
    }
}

fn child_code(r: Result<(), crate::raw::RawError>) -> i32 {
    match r {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("loadtest child: {e}");
            exit::SOFTWARE
        }
    }
}

fn baseline(a: &RunArgs, exe: PathBuf) -> i32 {
    if a.add_syndic {
        eprintln!("loadtest: --add-syndic needs the Brine run; the baseline report already states moved_fraction_on_add");
        return exit::USAGE;
    }
    let interrupted = crate::workers::interrupt_flag();
    let cfg = a.to_config(exe);
    let run = match run_baseline(&cfg, &interrupted) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return error_code(&e);
        }
    };
    let report = Report::build(run.meta, &run.stats, &run.stats);
    print!("{}", report.table());
    if let Some(p) = &a.json {
        let json = match report.to_json() {
            Ok(j) => j,
            Err(e) => {
                eprintln!("loadtest: cannot encode report: {e}");
                return exit::SOFTWARE;
            }
        };
        if let Err(c) = write_file(p, &json) {
            return c;
        }
    }
    if let Some(p) = &a.html {
        if let Err(c) = write_file(p, &report.html()) {
            return c;
        }
    }
    if report.meta.lost_returns > 0 || report.meta.timed_out_jobs > 0 {
        exit::DID_NOT_RETURN
    } else {
        exit::OK
    }
}

fn plan(p: &PlanArgs, exe: PathBuf) -> i32 {
    let interrupted = crate::workers::interrupt_flag();
    let base = RunArgs {
        minions: 1,
        syndics: 1,
        tiers: p.run.tiers,
        jobs: p.run.jobs,
        rate: 0.0,
        target: p.run.target.clone(),
        fun: "test.ping".into(),
        payload: p.run.payload,
        warmup: p.run.warmup,
        json: None,
        html: None,
        add_syndic: false,
        master: "127.0.0.1".into(),
        publish_port: 0,
        ret_port: 0,
        minions_per_worker: 1250,
        minions_per_context: 400,
        vnodes: 160,
        job_timeout: 30,
        ready_timeout: 180,
    }
    .to_config(exe);
    match run_plan(&base, &p.minions, &p.syndics, p.p99_target_ms, &interrupted) {
        Ok(r) => {
            print!("{}", r.table());
            if let Some(path) = &p.run.json {
                match serde_json::to_string_pretty(&r) {
                    Ok(j) => {
                        if let Err(c) = write_file(path, &j) {
                            return c;
                        }
                    }
                    Err(e) => {
                        eprintln!("loadtest: cannot encode plan: {e}");
                        return exit::SOFTWARE;
                    }
                }
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            error_code(&e)
        }
    }
}
