//! `salt`: publish a job from the master and wait for exactly the minions
//! it expects.
//!
//! The master's roster gives the exact expected set, so the command ends as
//! soon as every expected minion has returned — no fixed wait. When a
//! minion's timeout passes, `saltutil.find_job` asks whether it is still
//! running the job; if it is, its deadline is extended (Salt's semantics),
//! otherwise it is reported as "did not return" with the reason (not
//! connected, behind which syndic). Batch mode (`-b`) keeps a sliding
//! window of at most N minions running; each sub-job has its own jid and
//! the output reads as one run.
//!
//! `salt` prints only returns the master has stored in its job cache. When
//! the master says it could not store one (a full disk), `salt` warns on
//! stderr once and exits with [`exit::JOB_CACHE_FAILING`] (74), whatever
//! else happened: the returns it waited for will be stored, and can be
//! read with `salt-run jobs.lookup_jid`, only once the master's disk has
//! room again (the minions resend them).

use crate::output::{NoReturn, OutFormat, OutputArgs, Printer};
use brine_common::client::{ClientError, LocalClient};
use brine_common::exit;
use brine_common::proto::client::{ClientEvent, Expected, PublishRequest, Published};
use brine_common::proto::{ReturnLoad, TargetType};
use clap::Parser;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "salt",
    version,
    about = "Run a function on the minions a target matches"
)]
pub struct SaltArgs {
    #[command(flatten)]
    pub client: brine_common::cli::ClientArgs,
    /// Target is a regular expression (PCRE) on minion ids.
    #[arg(short = 'E', long = "pcre", group = "tt")]
    pub pcre: bool,
    /// Target is a comma-separated list of ids.
    #[arg(short = 'L', long = "list", group = "tt")]
    pub list: bool,
    /// Target is a grain glob: key:value.
    #[arg(short = 'G', long = "grain", group = "tt")]
    pub grain: bool,
    /// Target is a grain regex: key:regex.
    #[arg(short = 'P', long = "grain-pcre", group = "tt")]
    pub grain_pcre: bool,
    /// Target is an IP address or CIDR network.
    #[arg(short = 'S', long = "ipcidr", group = "tt")]
    pub ipcidr: bool,
    /// Target is a compound expression (G@os:Debian and web*).
    #[arg(short = 'C', long = "compound", group = "tt")]
    pub compound: bool,
    /// Target is a nodegroup from the master config.
    #[arg(short = 'N', long = "nodegroup", group = "tt")]
    pub nodegroup: bool,
    /// Grain key path delimiter.
    #[arg(long, default_value = ":")]
    pub delimiter: String,
    /// Seconds to wait before asking minions whether they still run the job.
    #[arg(short = 't', long)]
    pub timeout: Option<u64>,
    /// Seconds to wait for answers to saltutil.find_job.
    #[arg(long = "gather-job-timeout")]
    pub gather_job_timeout: Option<u64>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Write the output to this file instead of stdout.
    #[arg(long = "out-file", visible_alias = "output-file")]
    pub out_file: Option<PathBuf>,
    /// Wait for every return and print one document.
    #[arg(short = 's', long = "static")]
    pub static_mode: bool,
    /// Print the jid and the minions that did not return.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Print the jid.
    #[arg(long = "show-jid")]
    pub show_jid: bool,
    /// Do not print minions that did not return.
    #[arg(long = "hide-timeout")]
    pub hide_timeout: bool,
    /// Print a summary of the run at the end.
    #[arg(long)]
    pub summary: bool,
    /// Show a progress bar (terminal only).
    #[arg(short = 'p', long)]
    pub progress: bool,
    /// Publish and exit at once, printing the jid.
    #[arg(long = "async")]
    pub async_: bool,
    /// Run on at most N (or N%) minions at a time.
    #[arg(short = 'b', long = "batch-size", visible_alias = "batch")]
    pub batch: Option<String>,
    /// Seconds to wait after a minion returns before filling its batch slot.
    #[arg(long = "batch-wait", default_value_t = 0.0)]
    pub batch_wait: f64,
    /// Stop at the first failing minion.
    #[arg(long)]
    pub failhard: bool,
    /// Exit with the highest retcode of the minions.
    #[arg(long = "retcode-passthrough")]
    pub retcode_passthrough: bool,
    /// Target expression.
    pub target: String,
    /// Function to run (module.function).
    pub fun: String,
    /// Arguments: positional values and key=value pairs.
    pub args: Vec<String>,
}

impl SaltArgs {
    pub fn tgt_type(&self) -> TargetType {
        if self.pcre {
            TargetType::Pcre
        } else if self.list {
            TargetType::List
        } else if self.grain {
            TargetType::Grain
        } else if self.grain_pcre {
            TargetType::GrainPcre
        } else if self.ipcidr {
            TargetType::Ipcidr
        } else if self.compound {
            TargetType::Compound
        } else if self.nodegroup {
            TargetType::Nodegroup
        } else {
            TargetType::Glob
        }
    }
}

/// Where the master is and its defaults (from the master config).
#[derive(Debug, Clone)]
pub struct MasterRef {
    pub sock_dir: PathBuf,
    pub cachedir: PathBuf,
    pub timeout: u64,
    pub gather_job_timeout: u64,
    pub nodegroups: BTreeMap<String, String>,
}

/// Parse a batch size: "10" or "25%" of `total` (at least 1).
pub fn batch_size(spec: &str, total: usize) -> Result<usize, String> {
    let s = spec.trim();
    let n = if let Some(p) = s.strip_suffix('%') {
        let pct: f64 = p
            .parse()
            .map_err(|_| format!("invalid batch size '{spec}'"))?;
        if !(pct > 0.0 && pct <= 100.0) {
            return Err(format!(
                "invalid batch size '{spec}': percentage must be in (0, 100]"
            ));
        }
        ((total as f64) * pct / 100.0).ceil() as usize
    } else {
        s.parse::<usize>()
            .map_err(|_| format!("invalid batch size '{spec}'"))?
    };
    if n == 0 {
        return Err(format!("invalid batch size '{spec}': must be at least 1"));
    }
    Ok(n.max(1))
}

struct Pend {
    jid: String,
    deadline: Instant,
    checking: bool,
    connected: bool,
    via: Vec<String>,
}

/// Tally of a run.
#[derive(Default, Debug)]
struct Tally {
    targeted: usize,
    returned: usize,
    failed: usize,
    max_retcode: i32,
    no_return: Vec<(String, NoReturn)>,
}

fn reason(connected: bool, via: &[String]) -> NoReturn {
    match via.first() {
        Some(s) => NoReturn::BehindSyndic {
            syndic: s.clone(),
            connected,
        },
        None if connected => NoReturn::NoResponse,
        None => NoReturn::NotConnected,
    }
}

struct Run {
    master: MasterRef,
    timeout: Duration,
    gather: Duration,
    base: PublishRequest,
    ret_tx: mpsc::UnboundedSender<ReturnLoad>,
    ret_rx: mpsc::UnboundedReceiver<ReturnLoad>,
    /// News from the master that its job cache could not store a return.
    warn_tx: mpsc::UnboundedSender<String>,
    warn_rx: mpsc::UnboundedReceiver<String>,
    fj_tx: mpsc::UnboundedSender<(Vec<String>, BTreeSet<String>)>,
    fj_rx: mpsc::UnboundedReceiver<(Vec<String>, BTreeSet<String>)>,
    pending: HashMap<String, Pend>,
    jids: Vec<String>,
}

impl Run {
    /// Publish `req`, stream its returns into the shared channel.
    async fn start(&mut self, req: PublishRequest) -> Result<Published, ClientError> {
        let mut client = LocalClient::connect(&self.master.sock_dir, &self.master.cachedir).await?;
        let published = client.publish(req).await?;
        let tx = self.ret_tx.clone();
        let warn = self.warn_tx.clone();
        let n = published.minions.len();
        tokio::spawn(async move {
            let mut got = 0usize;
            // Ends when every return came or the master went away (each
            // round reads one message).
            while got < n {
                match client.next_event().await {
                    Ok(Some(ClientEvent::Return(r))) => {
                        got += 1;
                        if tx.send(r).is_err() {
                            break;
                        }
                    }
                    Ok(Some(ClientEvent::JobCacheFailing(why))) => {
                        if warn.send(why).is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        });
        let deadline = Instant::now() + self.timeout;
        for m in &published.minions {
            self.pending.insert(
                m.id.clone(),
                Pend {
                    jid: published.jid.clone(),
                    deadline,
                    checking: false,
                    // Behind a syndic, what the operator needs to know is
                    // whether that syndic is connected.
                    connected: if m.via.is_empty() {
                        m.connected
                    } else {
                        m.syndic_connected
                    },
                    via: m.via.clone(),
                },
            );
        }
        self.jids.push(published.jid.clone());
        Ok(published)
    }

    /// Ask minions past their deadline whether they still run their job.
    fn check_overdue(&mut self) {
        let now = Instant::now();
        let mut by_jid: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, p) in self.pending.iter_mut() {
            if !p.checking && p.deadline <= now {
                p.checking = true;
                by_jid.entry(p.jid.clone()).or_default().push(id.clone());
            }
        }
        for (jid, ids) in by_jid {
            let master = self.master.clone();
            let tx = self.fj_tx.clone();
            let gather = self.gather;
            let mut req = self.base.clone();
            req.tgt = ids.join(",");
            req.tgt_type = TargetType::List;
            req.fun = "saltutil.find_job".into();
            req.arg = vec![Value::String(jid)];
            req.kwarg = BTreeMap::new();
            req.timeout = gather.as_secs();
            req.trace = false;
            tokio::spawn(async move {
                let mut running = BTreeSet::new();
                if let Ok(mut c) = LocalClient::connect(&master.sock_dir, &master.cachedir).await {
                    if let Ok(p) = c.publish(req).await {
                        let deadline = Instant::now() + gather;
                        let mut left = p
                            .minions
                            .iter()
                            .filter(|m| m.connected || !m.via.is_empty())
                            .count();
                        while left > 0 {
                            let r = tokio::select! {
                                r = c.next_return() => r,
                                _ = tokio::time::sleep_until(deadline) => break,
                            };
                            match r {
                                Ok(Some(r)) => {
                                    left -= 1;
                                    let busy = matches!(&r.ret, Value::Object(m) if !m.is_empty());
                                    if busy {
                                        running.insert(r.id);
                                    }
                                }
                                _ => break,
                            }
                        }
                    }
                }
                let _ = tx.send((ids, running));
            });
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .filter(|p| !p.checking)
            .map(|p| p.deadline)
            .min()
    }
}

enum Event {
    Return(ReturnLoad),
    Checked(Vec<String>, BTreeSet<String>),
    Deadline,
    /// A batch slot held by `--batch-wait` is free again.
    Refill,
    Interrupt,
    /// The master could not store a return (why).
    CacheFailing(String),
}

/// Run `salt`; returns the exit code.
pub async fn run(args: SaltArgs, master: MasterRef) -> i32 {
    let (arg, kwarg) = brine_common::args::parse_cli_args(&args.args);
    let tgt_type = args.tgt_type();
    // Validate the expression here so a typo is a usage error (64).
    if let Err(e) = brine_common::target::parse_with_delimiter(
        &args.target,
        tgt_type,
        &master.nodegroups,
        &args.delimiter,
    ) {
        eprintln!("salt: invalid target '{}': {e}", args.target);
        return exit::USAGE;
    }
    let timeout = args.timeout.unwrap_or(master.timeout).max(1);
    let gather = args
        .gather_job_timeout
        .unwrap_or(master.gather_job_timeout)
        .max(1);
    let base = PublishRequest {
        tgt: args.target.clone(),
        tgt_type,
        fun: args.fun.clone(),
        arg,
        kwarg,
        timeout,
        user: std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "root".into()),
        delimiter: args.delimiter.clone(),
        trace: false,
    };
    let out: Box<dyn Write + Send> = match &args.out_file {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("salt: cannot write {}: {e}", p.display());
                return exit::USAGE;
            }
        },
        None => Box::new(std::io::stdout()),
    };
    let is_tty = args.out_file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut printer = Printer::new(out, args.output.opts(args.static_mode, is_tty));

    // Listen for Ctrl-C from the start: a SIGINT while publishing or
    // between two events is kept and handled, never the default death.
    let mut sigint = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("salt: cannot listen for Ctrl-C: {e}");
            return exit::SOFTWARE;
        }
    };
    let (ret_tx, ret_rx) = mpsc::unbounded_channel();
    let (fj_tx, fj_rx) = mpsc::unbounded_channel();
    let (warn_tx, warn_rx) = mpsc::unbounded_channel();
    let mut run = Run {
        warn_tx,
        warn_rx,
        master: master.clone(),
        timeout: Duration::from_secs(timeout),
        gather: Duration::from_secs(gather),
        base: base.clone(),
        ret_tx,
        ret_rx,
        fj_tx,
        fj_rx,
        pending: HashMap::new(),
        jids: vec![],
    };

    if args.async_ {
        return match LocalClient::connect(&master.sock_dir, &master.cachedir).await {
            Ok(mut c) => {
                match c.publish(base).await {
                    Ok(p) if p.minions.is_empty() && p.missing.is_empty() => {
                        eprintln!("No minions matched the target. No command was sent, no jid was assigned.");
                        exit::NO_MATCH
                    }
                    Ok(p) => {
                        println!("Executed command with job ID: {}", p.jid);
                        exit::OK
                    }
                    Err(e) => client_error(&e),
                }
            }
            Err(e) => client_error(&e),
        };
    }

    let mut tally = Tally::default();
    let mut queue: VecDeque<Expected> = VecDeque::new();
    let mut window = usize::MAX;
    let progress_on = args.progress
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
        && args.output.out != OutFormat::Json;

    if let Some(spec) = &args.batch {
        // Batch: find the expected set first, then feed a sliding window.
        let expected = match expected_set(&master, &base).await {
            Ok(e) => e,
            Err(code) => return code,
        };
        if expected.0.is_empty() && expected.1.is_empty() {
            eprintln!("No minions matched the target. No command was sent, no jid was assigned.");
            return exit::NO_MATCH;
        }
        window = match batch_size(spec, expected.0.len()) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("salt: {e}");
                return exit::USAGE;
            }
        };
        tally.targeted = expected.0.len() + expected.1.len();
        for id in expected.1 {
            tally.no_return.push((id, NoReturn::NotConnected));
        }
        queue.extend(expected.0);
        if args.verbose {
            let _ = writeln!(
                std::io::stderr(),
                "Executing run on {} minions in batches of {window}",
                tally.targeted
            );
        }
    } else {
        let published = match run.start(base.clone()).await {
            Ok(p) => p,
            Err(e) => return client_error(&e),
        };
        if published.minions.is_empty() && published.missing.is_empty() {
            eprintln!("No minions matched the target. No command was sent, no jid was assigned.");
            return exit::NO_MATCH;
        }
        tally.targeted = published.minions.len() + published.missing.len();
        for id in &published.missing {
            tally.no_return.push((id.clone(), NoReturn::NotConnected));
        }
        if args.verbose {
            println!("Executing job with jid {}", published.jid);
            println!("-------------------------------------------");
        } else if args.show_jid {
            println!("jid: {}", published.jid);
        }
        if args.verbose {
            let ids: Vec<&str> = published.minions.iter().map(|m| m.id.as_str()).collect();
            eprintln!(
                "Expected minions ({}): {}",
                ids.len() + published.missing.len(),
                ids.join(", ")
            );
        }
    }

    let bar = progress_on.then(|| {
        let b = indicatif::ProgressBar::new(tally.targeted as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("Returns: [{bar:40}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });

    let mut in_flight = 0usize;
    let mut stop_batches = false;
    let mut refill_at: VecDeque<Instant> = VecDeque::new();
    let mut interrupted = false;
    let mut cache_failing = false;
    loop {
        // Fill the batch window.
        if !stop_batches {
            let now = Instant::now();
            // Slots freed less than --batch-wait ago stay closed.
            refill_at.retain(|t| *t > now);
            let free = window
                .saturating_sub(in_flight)
                .saturating_sub(refill_at.len());
            if free > 0 && !queue.is_empty() && window != usize::MAX {
                let take: Vec<Expected> = (0..free).filter_map(|_| queue.pop_front()).collect();
                let mut req = base.clone();
                req.tgt = take
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                req.tgt_type = TargetType::List;
                match run.start(req).await {
                    Ok(p) => {
                        in_flight += p.minions.len();
                        if args.verbose {
                            eprintln!(
                                "Executing job with jid {} on {}",
                                p.jid,
                                take.iter()
                                    .map(|m| m.id.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            );
                        }
                        for id in p.missing {
                            tally.no_return.push((id, NoReturn::NotConnected));
                        }
                    }
                    Err(e) => return client_error(&e),
                }
            }
        }
        if run.pending.is_empty() && (queue.is_empty() || stop_batches) {
            break;
        }
        // Wake when a held slot opens while minions still wait to start.
        let refill_wake = if queue.is_empty() || stop_batches {
            None
        } else {
            refill_at.iter().min().copied()
        };
        let next = run.next_deadline();
        let ev = tokio::select! {
            r = run.ret_rx.recv() => match r { Some(r) => Event::Return(r), None => Event::Deadline },
            c = run.fj_rx.recv() => match c { Some((ids, busy)) => Event::Checked(ids, busy), None => Event::Deadline },
            _ = async { match next { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => Event::Deadline,
            _ = sigint.recv() => Event::Interrupt,
            w = run.warn_rx.recv() => match w { Some(w) => Event::CacheFailing(w), None => Event::Deadline },
            _ = async { match refill_wake { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => Event::Refill,
        };
        match ev {
            Event::Return(r) => {
                let Some(p) = run.pending.get(&r.id) else {
                    continue;
                };
                if p.jid != r.jid {
                    continue;
                }
                run.pending.remove(&r.id);
                in_flight = in_flight.saturating_sub(1);
                tally.returned += 1;
                let failed = r.retcode != 0 || !r.success;
                if failed {
                    tally.failed += 1;
                    tally.max_retcode = tally.max_retcode.max(r.retcode.max(1));
                }
                if let Some(b) = &bar {
                    b.inc(1);
                }
                if let Err(e) = printer.minion(&r.id, &r.ret, r.out.as_deref()) {
                    eprintln!("salt: output failed: {e}");
                }
                if args.batch_wait > 0.0 {
                    refill_at.push_back(Instant::now() + Duration::from_secs_f64(args.batch_wait));
                }
                if failed && args.failhard {
                    stop_batches = true;
                    // Stop waiting for anything not yet started.
                    queue.clear();
                }
            }
            Event::Checked(ids, busy) => {
                let now = Instant::now();
                for id in ids {
                    let Some(p) = run.pending.get_mut(&id) else {
                        continue;
                    };
                    if busy.contains(&id) {
                        p.checking = false;
                        p.deadline = now + run.timeout;
                    } else {
                        let p = run.pending.remove(&id);
                        in_flight = in_flight.saturating_sub(1);
                        if let Some(p) = p {
                            tally.no_return.push((id, reason(p.connected, &p.via)));
                        }
                    }
                }
            }
            Event::Deadline => run.check_overdue(),
            Event::Refill => {}
            Event::CacheFailing(why) => {
                if !cache_failing {
                    cache_failing = true;
                    eprintln!("salt: WARNING: {why}: the master's job cache is failing (is its cachedir full?). Returns are printed only once stored; the minions resend the others until the master can store them.");
                }
            }
            Event::Interrupt => {
                interrupted = true;
                break;
            }
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if interrupted {
        let _ = printer.finish();
        eprintln!("Exiting gracefully on Ctrl-c");
        for jid in &run.jids {
            eprintln!("This job's jid is: {jid}");
        }
        eprintln!("The minions may not have all finished running and any remaining returns may be missing.");
        eprintln!("To look up the return data for this job later, run the following command:\n");
        for jid in &run.jids {
            eprintln!("salt-run jobs.lookup_jid {jid}");
        }
        return 130;
    }
    tally.no_return.sort_by(|a, b| a.0.cmp(&b.0));
    if !args.hide_timeout {
        for (id, why) in &tally.no_return {
            if let Err(e) = printer.no_return(id, why) {
                eprintln!("salt: output failed: {e}");
            }
        }
    }
    if let Err(e) = printer.finish() {
        eprintln!("salt: output failed: {e}");
    }
    if args.verbose && !tally.no_return.is_empty() {
        let ids: Vec<&str> = tally.no_return.iter().map(|(i, _)| i.as_str()).collect();
        eprintln!(
            "Minions that did not return ({}): {}",
            ids.len(),
            ids.join(", ")
        );
    }
    if args.summary {
        println!("\n-------------------------------------------");
        println!("Summary");
        println!("-------------------------------------------");
        println!("# of minions targeted: {}", tally.targeted);
        println!("# of minions returned: {}", tally.returned);
        println!(
            "# of minions that did not return: {}",
            tally.no_return.len()
        );
        println!("# of minions with errors: {}", tally.failed);
        println!("-------------------------------------------");
    }
    let _ = std::io::stdout().flush();
    if cache_failing {
        eprintln!(
            "salt: the master's job cache failed during this run; once it has room, read the stored returns with: salt-run jobs.lookup_jid {}",
            run.jids.join(" / ")
        );
        return exit::JOB_CACHE_FAILING;
    }
    if args.retcode_passthrough && tally.max_retcode > 0 {
        return tally.max_retcode;
    }
    if !tally.no_return.is_empty() {
        exit::DID_NOT_RETURN
    } else if tally.failed > 0 {
        exit::JOB_FAILED
    } else {
        exit::OK
    }
}

/// The expected set of a target without running anything: (connected or
/// behind a syndic, not connected / unknown).
async fn expected_set(
    master: &MasterRef,
    base: &PublishRequest,
) -> Result<(Vec<Expected>, Vec<String>), i32> {
    let mut c = LocalClient::connect(&master.sock_dir, &master.cachedir)
        .await
        .map_err(|e| client_error(&e))?;
    let (minions, missing) = c
        .expected(&base.tgt, base.tgt_type, &base.delimiter)
        .await
        .map_err(|e| client_error(&e))?;
    let (up, down): (Vec<Expected>, Vec<Expected>) = minions
        .into_iter()
        .partition(|m| m.connected || !m.via.is_empty());
    let mut gone: Vec<String> = down.into_iter().map(|m| m.id).collect();
    gone.extend(missing);
    Ok((up, gone))
}

fn client_error(e: &ClientError) -> i32 {
    eprintln!("salt: {e}");
    e.exit_code()
}
