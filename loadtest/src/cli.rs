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
    /// Simulated Brine minions; reads its `SimSpec` as JSON on stdin.
    #[command(hide = true)]
    BrineWorker,
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
    /// Before the run, show how the ring would rebalance with one more
    /// syndic: the balance per syndic before and after, and the fraction of
    /// minions that would move (every report also states that fraction).
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
    /// Arguments of the job's function, Salt style (`--arg 0.05`,
    /// `--arg max=0.2`); repeatable.
    #[arg(long = "arg", value_name = "ARG")]
    pub fun_args: Vec<String>,
    /// Masters' `heartbeat_interval` in seconds (Brine run).
    #[arg(long, default_value_t = 5)]
    pub heartbeat_interval: u64,
    /// Syndics' `syndic_forward_interval_ms` (Brine run).
    #[arg(long, default_value_t = 20)]
    pub syndic_forward_interval_ms: u64,
    /// Attach to a running top master: its config dir (for the client
    /// socket and the return port). Syndics and minions are still started
    /// by the harness; `--master` is the top's address if it binds 0.0.0.0.
    #[arg(long, value_name = "DIR")]
    pub master_config: Option<PathBuf>,
    /// RSA keys shared by the simulated minions (generated once, cached).
    #[arg(long, default_value_t = 16)]
    pub key_pool: usize,
    /// Every simulated minion checks every publish signature itself. By
    /// default the minions of one worker process check each distinct
    /// publish once and share the answer (a real fleet does these checks in
    /// parallel on its own hosts; here they would share two cores).
    #[arg(long)]
    pub verify_each: bool,
    /// Where the key pool is cached [default: ~/.cache/brine-loadtest/keys].
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
    /// Skip the raw baseline after the Brine run (no `ratio_p50`).
    #[arg(long)]
    pub no_baseline: bool,
    /// Brine run: put a file of this size with random content in the top
    /// master's `file_roots` (`base`) as `big.bin` (syndics get no
    /// `file_roots`) and report the file server's traffic; fetch it with
    /// `--fun cp.get_file --arg salt://big.bin`. Units: B, KiB, MiB, GiB
    /// (K, M, G are the same), KB, MB, GB.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub file_size: Option<u64>,
    /// Brine run: the event-bus benchmark instead of jobs. Every simulated
    /// minion sends `loadtest/event/<n>` events at this rate (spread
    /// evenly over the fleet) to its master, and a subscriber on the top
    /// counts what arrives: delivered, lost, latency, the masters' CPU.
    /// `--syndics 0` puts the minions straight on the top.
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub events_per_sec: f64,
    /// Seconds the event benchmark sends for.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub events_secs: u64,
}

/// A byte count with an optional unit: `10MiB`, `512k`, `1GB`, `4096`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let usage = || {
        format!("{text:?} is not a size: a whole number of bytes with an optional unit (10MiB, 512KiB, 1GB)")
    };
    if num.is_empty() || unit.starts_with(['.', ',']) {
        return Err(usage());
    }
    let n: u64 = num.parse().map_err(|_| format!("{text:?} is too large"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(usage()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
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
    #[arg(long, visible_alias = "p99-ms", default_value_t = 500.0)]
    pub p99_target_ms: f64,
    /// Jobs per second the answers are for (0 = one job at a time, as the
    /// grid runs); also the rate of the `--check` run.
    #[arg(long, default_value_t = 0.0)]
    pub jobs_per_sec: f64,
    /// Also answer: how many syndics does a fleet of N minions need.
    #[arg(long, value_name = "N")]
    pub for_minions: Option<u32>,
    /// After fitting, run N minions behind the syndics the model
    /// recommends and print predicted vs measured p99.
    #[arg(long, value_name = "N")]
    pub check: Option<u32>,
    /// Syndics of the `--check` run instead of the model's answer.
    #[arg(long, value_name = "S", requires = "check")]
    pub check_syndics: Option<u32>,
    /// Runs per cell (and of `--check`); the cell keeps the run with the
    /// median p99.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub repeat: u32,
    /// Fit the cells of an earlier `plan --json` file instead of running
    /// the grid (`--minions`/`--syndics` are then ignored).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
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
    /// Sweep the raw ZeroMQ baseline instead of Brine.
    #[arg(long)]
    pub baseline: bool,
    /// Seconds a job may take before its missing returns count as lost.
    #[arg(long, default_value_t = 30)]
    pub job_timeout: u64,
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
            heartbeat_secs: self.heartbeat_interval,
            forward_ms: self.syndic_forward_interval_ms,
            master_config: self.master_config.clone(),
            fun_args: self.fun_args.clone(),
            key_pool: self.key_pool,
            verify_each: self.verify_each,
            key_dir: self.key_dir.clone(),
            with_baseline: !self.no_baseline,
            file_size: self.file_size,
            events_per_sec: self.events_per_sec,
            events_secs: self.events_secs,
        }
    }
}

/// Exit code for a harness error.
fn error_code(e: &HarnessError) -> i32 {
    match e {
        HarnessError::Config(_) | HarnessError::Ring(_) => exit::USAGE,
        HarnessError::Raw(crate::raw::RawError::Target(_))
        | HarnessError::Raw(crate::raw::RawError::NotLoopback(_)) => exit::USAGE,
        HarnessError::Topo(crate::brine::topo::TopoError::Config(_)) => exit::CONFIG,
        HarnessError::Topo(crate::brine::topo::TopoError::Launch(
            brine_deploy::launch::LaunchError::MissingBinary { .. },
        ))
        | HarnessError::Client(_) => exit::UNAVAILABLE,
        HarnessError::NotUp { .. } | HarnessError::NotSignedIn { .. } => exit::DID_NOT_RETURN,
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
        None => brine(&cli.run, exe),
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
        Some(Command::BrineWorker) => {
            crate::workers::die_with_parent();
            child_code(crate::brine::sim::run_from_stdin())
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
    if a.file_size.is_some() {
        eprintln!("loadtest: --file-size applies to the Brine run only (the raw baseline has no file server)");
        return exit::USAGE;
    }
    if a.events_per_sec > 0.0 {
        eprintln!("loadtest: --events-per-sec applies to the Brine run only (the raw baseline has no event bus)");
        return exit::USAGE;
    }
    if a.add_syndic {
        print_add_syndic(a);
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
    emit_report(&report, a)
}

/// Prints the table, writes the JSON/HTML files, and maps the outcome to
/// an exit code (any lost return or timed-out job is a failure).
fn emit_report(report: &Report, a: &RunArgs) -> i32 {
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
    let lost_events = report.meta.events.as_ref().is_some_and(|e| e.lost > 0);
    if report.meta.lost_returns > 0 || report.meta.timed_out_jobs > 0 || lost_events {
        exit::DID_NOT_RETURN
    } else {
        exit::OK
    }
}

fn brine(a: &RunArgs, exe: PathBuf) -> i32 {
    if a.add_syndic {
        print_add_syndic(a);
    }
    let interrupted = crate::workers::interrupt_flag();
    let cfg = a.to_config(exe);
    let run = match crate::brine::run_brine(&cfg, &interrupted) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return error_code(&e);
        }
    };
    let report = match &run.baseline {
        Some(b) => Report::build(run.meta, &run.stats, b),
        None => {
            let empty = match crate::stats::TierStats::new() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("loadtest: {e}");
                    return exit::SOFTWARE;
                }
            };
            Report::build(run.meta, &run.stats, &empty)
        }
    };
    emit_report(&report, a)
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
        job_timeout: p.run.job_timeout,
        ready_timeout: 180,
        fun_args: Vec::new(),
        heartbeat_interval: 5,
        syndic_forward_interval_ms: 20,
        master_config: None,
        key_pool: 16,
        verify_each: false,
        key_dir: None,
        no_baseline: true,
        file_size: None,
        events_per_sec: 0.0,
        events_secs: 10,
    }
    .to_config(exe);
    let mode = if p.run.baseline {
        crate::plan::Mode::Baseline
    } else {
        crate::plan::Mode::Brine
    };
    let q = crate::plan::Question {
        p99_ms: p.p99_target_ms,
        jobs_per_sec: p.jobs_per_sec,
        for_minions: p.for_minions,
    };
    if !q.p99_ms.is_finite() || q.p99_ms <= 0.0 {
        eprintln!("loadtest: --p99-target-ms must be a positive number");
        return exit::USAGE;
    }
    if !q.jobs_per_sec.is_finite() || q.jobs_per_sec < 0.0 {
        eprintln!("loadtest: --jobs-per-sec must be 0 or more");
        return exit::USAGE;
    }
    let grid = match &p.from {
        Some(path) => match read_plan(path) {
            Ok(r) => Ok(crate::plan::summarise(
                q.p99_ms,
                crate::plan::retarget(q.p99_ms, r.cells),
            )),
            Err(c) => return c,
        },
        None => run_plan(
            &base,
            &p.minions,
            &p.syndics,
            p.p99_target_ms,
            mode,
            p.repeat,
            &interrupted,
        ),
    };
    let mut r = match grid {
        Ok(r) => crate::plan::with_prediction(r, q),
        Err(e) => {
            eprintln!("loadtest: {e}");
            return error_code(&e);
        }
    };
    print!("{}", r.table());
    if let Some(n) = p.check {
        let Some(pred) = &r.prediction else {
            eprintln!("loadtest: --check needs a fitted model");
            return exit::SOFTWARE;
        };
        let Some(sy) = p.check_syndics.or_else(|| crate::plan::check_size(pred, n)) else {
            eprintln!(
                "loadtest: no syndic count keeps {n} minions within the target; give --check-syndics"
            );
            return exit::USAGE;
        };
        match crate::plan::run_check(&base, pred, n, sy, mode, p.repeat, &interrupted) {
            Ok(c) => {
                println!("{}", c.line());
                r.check = Some(c);
            }
            Err(e) => {
                eprintln!("loadtest: {e}");
                return error_code(&e);
            }
        }
    }
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

/// An earlier `plan --json` file.
fn read_plan(path: &PathBuf) -> Result<crate::plan::PlanReport, i32> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("loadtest: cannot read {}: {e}", path.display());
        exit::USAGE
    })?;
    serde_json::from_str(&text).map_err(|e| {
        eprintln!("loadtest: {} is not a plan report: {e}", path.display());
        exit::DATA
    })
}

/// `--add-syndic`: the ring's balance with S and S+1 syndics and the
/// fraction of minions that would move to the new one.
fn print_add_syndic(a: &RunArgs) {
    let ids: Vec<String> = (0..a.minions).map(|i| format!("lt-{i:05}")).collect();
    let now: Vec<String> = (1..=a.syndics.max(1))
        .map(|i| format!("syndic{i}"))
        .collect();
    let mut more = now.clone();
    more.push(format!("syndic{}", now.len() + 1));
    let (Ok(r1), Ok(r2)) = (
        crate::ring::SyndicRing::new(&now, a.vnodes),
        crate::ring::SyndicRing::new(&more, a.vnodes),
    ) else {
        eprintln!("loadtest: cannot build the hash ring");
        return;
    };
    let moved = r1
        .moved_fraction(&ids, &more[more.len() - 1])
        .unwrap_or(f64::NAN);
    println!("ring with {} syndics: {:?}", now.len(), r1.balance(&ids));
    println!("ring with {} syndics: {:?}", more.len(), r2.balance(&ids));
    println!(
        "adding {} moves {:.1}% of the minions (ideal {:.1}%)",
        more[more.len() - 1],
        moved * 100.0,
        100.0 / more.len() as f64
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_units() {
        for (text, bytes) in [
            ("0", 0),
            ("4096", 4096),
            ("10MiB", 10 << 20),
            ("10 MiB", 10 << 20),
            ("10mib", 10 << 20),
            ("10M", 10 << 20),
            ("512k", 512 << 10),
            ("512KiB", 512 << 10),
            ("2G", 2 << 30),
            ("1GiB", 1 << 30),
            ("7B", 7),
            ("3KB", 3_000),
            ("5MB", 5_000_000),
            ("1GB", 1_000_000_000),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for text in ["", "MiB", "1.5MiB", "10 XB", "-1", "ten"] {
            let e = parse_size(text).unwrap_err();
            assert!(e.contains("not a size"), "{text}: {e}");
        }
        for text in ["99999999999999999999", "20000000000G"] {
            assert!(
                parse_size(text).unwrap_err().contains("too large"),
                "{text}"
            );
        }
    }

    #[test]
    fn file_size_flag() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "--file-size",
            "10MiB",
            "--fun",
            "cp.get_file",
            "--arg",
            "salt://big.bin",
        ])
        .unwrap();
        assert_eq!(cli.run.file_size, Some(10 << 20));
        assert_eq!(cli.run.fun_args, ["salt://big.bin"]);
        let cfg = cli.run.to_config(PathBuf::from("/nonexistent"));
        assert_eq!(cfg.file_size, Some(10 << 20));
        assert_eq!(
            Cli::try_parse_from(["loadtest"]).unwrap().run.file_size,
            None
        );
        let e = Cli::try_parse_from(["loadtest", "--file-size", "lots"]).unwrap_err();
        assert!(e.to_string().contains("not a size"), "{e}");
    }
}
