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
//!
//! # Layout
//! This file is the driver: it talks to the master (publish, returns,
//! find_job), listens for Ctrl-C and prints. The decisions are pure units
//! beside it, fed with events and the time they happened:
//! - `args`: the command line ([`SaltArgs`]);
//! - `waiter`: who still owes a return, when to ask find_job, when a busy
//!   minion gets more time, when to give up;
//! - `batch`: the batch size and the sliding window;
//! - `report`: the tally, the "did not return" reasons and the exit code.

pub(crate) mod args;
mod batch;
mod report;
mod waiter;

pub use args::SaltArgs;

use crate::output::{OutFormat, Printer};
use batch::Window;
use brine_common::client::{ClientError, LocalClient};
use brine_common::exit;
use brine_common::jid::Jid;
use brine_common::proto::client::Expected;
use brine_common::proto::client::{ClientEvent, PublishRequest, Published};
use brine_common::proto::{ReturnLoad, TargetType};
use report::{Ending, Tally};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;
use waiter::{FindJob, Waiter};

/// Where the master is and its defaults (from the master config).
#[derive(Debug, Clone)]
pub struct MasterRef {
    pub sock_dir: PathBuf,
    pub cachedir: PathBuf,
    pub timeout: u64,
    pub gather_job_timeout: u64,
    pub nodegroups: BTreeMap<String, String>,
}

/// Run `salt`; returns the exit code.
pub async fn run(args: SaltArgs, master: MasterRef) -> i32 {
    let plan = match Plan::new(&args, &master) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut printer = match open_printer(&args) {
        Ok(p) => p,
        Err(code) => return code,
    };
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
    if args.async_ {
        return publish_async(&master, plan.base).await;
    }
    let mut session = Session::new(master, &plan);
    if let Err(code) = session.begin(&args, &plan).await {
        return code;
    }
    let progress = progress_bar(&args, session.tally.targeted);
    let ended = session
        .wait(&args, &mut printer, &mut sigint, &progress)
        .await;
    if let Some(b) = &progress {
        b.finish_and_clear();
    }
    match ended {
        Ok(interrupted) => session.finish(&args, printer, interrupted),
        Err(code) => code,
    }
}

/// What every publish of the run shares, checked before anything is sent.
struct Plan {
    base: PublishRequest,
    timeout: Duration,
    gather: Duration,
    batch_wait: Duration,
}

impl Plan {
    /// A bad target or `--batch-wait` is a usage error (64).
    fn new(args: &SaltArgs, master: &MasterRef) -> Result<Plan, i32> {
        let (arg, kwarg) = brine_common::args::parse_cli_args(&args.args);
        let tgt_type =
            args.flags
                .checked_type("salt", &args.target, args.compound, &master.nodegroups)?;
        let batch_wait = batch::batch_wait(args.batch_wait).map_err(|e| {
            eprintln!("salt: {e}");
            exit::USAGE
        })?;
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
            delimiter: args.flags.delimiter.clone(),
            trace: false,
        };
        Ok(Plan {
            base,
            timeout: Duration::from_secs(timeout),
            gather: Duration::from_secs(gather),
            batch_wait,
        })
    }
}

/// The printer on stdout or `--out-file` (64 if it cannot be created).
fn open_printer(args: &SaltArgs) -> Result<Printer<Box<dyn Write + Send>>, i32> {
    let out: Box<dyn Write + Send> = match &args.out_file {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("salt: cannot write {}: {e}", p.display());
                return Err(exit::USAGE);
            }
        },
        None => Box::new(std::io::stdout()),
    };
    let is_tty = args.out_file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    Ok(Printer::new(
        out,
        args.output.opts(args.static_mode, is_tty),
    ))
}

/// `-p` on a terminal (not with `--out json`): a bar of returns.
fn progress_bar(args: &SaltArgs, targeted: usize) -> Option<indicatif::ProgressBar> {
    let on = args.progress
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
        && args.output.out != OutFormat::Json;
    on.then(|| {
        let b = indicatif::ProgressBar::new(targeted as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("Returns: [{bar:40}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    })
}

/// `--async`: publish, print the jid, do not wait.
async fn publish_async(master: &MasterRef, base: PublishRequest) -> i32 {
    let published = match LocalClient::connect(&master.sock_dir, &master.cachedir).await {
        Ok(mut c) => c.publish(base).await,
        Err(e) => Err(e),
    };
    match published {
        Ok(p) if report::matched_nothing(&p) => {
            eprintln!("{}", report::NO_MATCH_MESSAGE);
            exit::NO_MATCH
        }
        Ok(p) => {
            println!("Executed command with job ID: {}", p.jid);
            exit::OK
        }
        Err(e) => client_error(&e),
    }
}

/// Prints a client error; its exit code.
fn client_error(e: &ClientError) -> i32 {
    eprintln!("salt: {e}");
    report::client_error_code(e)
}

/// What the event loop waits on.
enum Event {
    Return(ReturnLoad),
    /// A find_job question about these ids was answered: those still busy.
    Checked(Vec<String>, BTreeSet<String>),
    Deadline,
    /// A batch slot held by `--batch-wait` is free again.
    Refill,
    Interrupt,
    /// The master could not store a return (why).
    CacheFailing(String),
}

/// The I/O side of a run: connections to the master and the channels the
/// tasks reading them report on.
struct Session {
    master: MasterRef,
    base: PublishRequest,
    gather: Duration,
    waiter: Waiter,
    /// The batch window (unbatched: never starts anyone).
    window: Window,
    tally: Tally,
    /// Every jid published, in order (sub-jobs of a batch run).
    jids: Vec<Jid>,
    cache_failing: bool,
    ret_tx: mpsc::UnboundedSender<ReturnLoad>,
    ret_rx: mpsc::UnboundedReceiver<ReturnLoad>,
    /// News from the master that its job cache could not store a return.
    warn_tx: mpsc::UnboundedSender<String>,
    warn_rx: mpsc::UnboundedReceiver<String>,
    fj_tx: mpsc::UnboundedSender<(Vec<String>, BTreeSet<String>)>,
    fj_rx: mpsc::UnboundedReceiver<(Vec<String>, BTreeSet<String>)>,
}

impl Session {
    fn new(master: MasterRef, plan: &Plan) -> Self {
        let (ret_tx, ret_rx) = mpsc::unbounded_channel();
        let (fj_tx, fj_rx) = mpsc::unbounded_channel();
        let (warn_tx, warn_rx) = mpsc::unbounded_channel();
        Session {
            master,
            base: plan.base.clone(),
            gather: plan.gather,
            waiter: Waiter::new(plan.timeout),
            window: Window::unbatched(),
            tally: Tally::default(),
            jids: Vec::new(),
            cache_failing: false,
            ret_tx,
            ret_rx,
            warn_tx,
            warn_rx,
            fj_tx,
            fj_rx,
        }
    }

    /// Publish `req`, stream its returns into the shared channel and wait
    /// for the minions it expects.
    async fn publish(&mut self, req: PublishRequest) -> Result<Published, ClientError> {
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
        self.waiter
            .expect(&published.jid, &published.minions, Instant::now());
        self.jids.push(published.jid.clone());
        Ok(published)
    }

    /// The first publish, or in batch mode the expected set and the window
    /// over it. Errors are exit codes (already explained on stderr).
    async fn begin(&mut self, args: &SaltArgs, plan: &Plan) -> Result<(), i32> {
        let tally = &mut self.tally;
        if let Some(spec) = &args.batch {
            let (up, gone) = expected_set(&self.master, &self.base).await?;
            if up.is_empty() && gone.is_empty() {
                eprintln!("{}", report::NO_MATCH_MESSAGE);
                return Err(exit::NO_MATCH);
            }
            let size = batch::batch_size(spec, up.len()).map_err(|e| {
                eprintln!("salt: {e}");
                exit::USAGE
            })?;
            tally.targeted = up.len() + gone.len();
            tally.not_connected(gone);
            if args.verbose {
                let _ = writeln!(
                    std::io::stderr(),
                    "Executing run on {} minions in batches of {size}",
                    tally.targeted
                );
            }
            self.window = Window::new(size, up, plan.batch_wait);
            return Ok(());
        }
        let published = self
            .publish(self.base.clone())
            .await
            .map_err(|e| client_error(&e))?;
        let tally = &mut self.tally;
        if report::matched_nothing(&published) {
            eprintln!("{}", report::NO_MATCH_MESSAGE);
            return Err(exit::NO_MATCH);
        }
        tally.targeted = published.minions.len() + published.missing.len();
        tally.not_connected(published.missing.iter().cloned());
        if args.verbose {
            println!("Executing job with jid {}", published.jid);
            println!("-------------------------------------------");
            let ids: Vec<&str> = published.minions.iter().map(|m| m.id.as_str()).collect();
            eprintln!(
                "Expected minions ({}): {}",
                ids.len() + published.missing.len(),
                ids.join(", ")
            );
        } else if args.show_jid {
            println!("jid: {}", published.jid);
        }
        Ok(())
    }

    /// Starts the minions the batch window has room for.
    async fn fill(&mut self, args: &SaltArgs) -> Result<(), i32> {
        let take = self.window.take(Instant::now());
        if take.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = take.iter().map(|m| m.id.as_str()).collect();
        let mut req = self.base.clone();
        req.tgt = ids.join(",");
        req.tgt_type = TargetType::List;
        let p = self.publish(req).await.map_err(|e| client_error(&e))?;
        self.window.started(p.minions.len());
        if args.verbose {
            eprintln!("Executing job with jid {} on {}", p.jid, ids.join(", "));
        }
        self.tally.not_connected(p.missing);
        Ok(())
    }

    /// Sends the find_job questions that are due; each answer comes back
    /// as [`Event::Checked`].
    fn ask_overdue(&mut self) {
        for job in self.waiter.overdue(Instant::now()) {
            let req = waiter::find_job_request(&self.base, &job, self.gather);
            let (master, tx, gather) = (self.master.clone(), self.fj_tx.clone(), self.gather);
            tokio::spawn(async move {
                let running = find_job(&master, req, gather).await;
                let FindJob { ids, .. } = job;
                let _ = tx.send((ids, running));
            });
        }
    }

    /// The event loop: until every minion returned or was given up on and
    /// the batch window is empty (Ok(false)), or Ctrl-C (Ok(true)).
    async fn wait(
        &mut self,
        args: &SaltArgs,
        printer: &mut Printer<Box<dyn Write + Send>>,
        sigint: &mut Signal,
        progress: &Option<indicatif::ProgressBar>,
    ) -> Result<bool, i32> {
        // Each round handles one event; the run ends when nothing is owed.
        loop {
            self.fill(args).await?;
            if self.waiter.is_empty() && self.window.exhausted() {
                return Ok(false);
            }
            match self.next_event(sigint).await {
                Event::Return(r) => {
                    if !self.waiter.on_return(&r.id, &r.jid) {
                        continue;
                    }
                    self.window.returned(Instant::now());
                    let failed = self.tally.returned(r.retcode, r.success);
                    if let Some(b) = progress {
                        b.inc(1);
                    }
                    if let Err(e) = printer.minion(&r.id, &r.ret, r.out.as_deref()) {
                        eprintln!("salt: output failed: {e}");
                    }
                    if failed && args.failhard {
                        self.window.fail_hard();
                    }
                }
                Event::Checked(ids, busy) => {
                    for (id, why) in self.waiter.on_checked(ids, &busy, Instant::now()) {
                        self.window.gave_up();
                        self.tally.did_not_return(id, why);
                    }
                }
                Event::Deadline => self.ask_overdue(),
                Event::Refill => {}
                Event::CacheFailing(why) => {
                    if !self.cache_failing {
                        self.cache_failing = true;
                        eprintln!("salt: WARNING: {why}: the master's job cache is failing (is its cachedir full?). Returns are printed only once stored; the minions resend the others until the master can store them.");
                    }
                }
                Event::Interrupt => return Ok(true),
            }
        }
    }

    /// The next thing to happen: a return, a find_job answer, a deadline,
    /// a held batch slot opening, Ctrl-C or a job cache warning.
    async fn next_event(&mut self, sigint: &mut Signal) -> Event {
        let next = self.waiter.next_deadline();
        let refill = self.window.wake_at();
        tokio::select! {
            r = self.ret_rx.recv() => match r { Some(r) => Event::Return(r), None => Event::Deadline },
            c = self.fj_rx.recv() => match c { Some((ids, busy)) => Event::Checked(ids, busy), None => Event::Deadline },
            _ = sleep_until(next) => Event::Deadline,
            _ = sigint.recv() => Event::Interrupt,
            w = self.warn_rx.recv() => match w { Some(w) => Event::CacheFailing(w), None => Event::Deadline },
            _ = sleep_until(refill) => Event::Refill,
        }
    }

    /// Prints what is left to print and chooses the exit code.
    fn finish(
        mut self,
        args: &SaltArgs,
        mut printer: Printer<Box<dyn Write + Send>>,
        interrupted: bool,
    ) -> i32 {
        let tally = &mut self.tally;
        let ending = Ending {
            interrupted,
            cache_failing: self.cache_failing,
            retcode_passthrough: args.retcode_passthrough,
        };
        if interrupted {
            let _ = printer.finish();
            eprint!("{}", report::interrupted_message(&self.jids));
            return tally.exit_code(ending);
        }
        tally.sort();
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
            for line in tally.summary() {
                println!("{line}");
            }
        }
        let _ = std::io::stdout().flush();
        if self.cache_failing {
            eprintln!(
                "salt: the master's job cache failed during this run; once it has room, read the stored returns with: salt-run jobs.lookup_jid {}",
                self.jids.iter().map(Jid::as_str).collect::<Vec<_>>().join(" / ")
            );
        }
        let code = tally.exit_code(ending);
        if tally.failed > 0 && code != exit::OK {
            // Salt's words, which scripts and CI logs look for.
            eprintln!("ERROR: Minions returned with non-zero exit code");
        }
        code
    }
}

/// Sleeps until `t`, or forever when there is no `t`.
async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Sends one find_job question and collects, for up to `gather`, the ids
/// that still run the job (none if the master cannot be reached).
async fn find_job(master: &MasterRef, req: PublishRequest, gather: Duration) -> BTreeSet<String> {
    let mut running = BTreeSet::new();
    let Ok(mut c) = LocalClient::connect(&master.sock_dir, &master.cachedir).await else {
        return running;
    };
    let Ok(p) = c.publish(req).await else {
        return running;
    };
    let deadline = Instant::now() + gather;
    let mut left = waiter::answers_expected(&p.minions);
    while left > 0 {
        let r = tokio::select! {
            r = c.next_return() => r,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        match r {
            Ok(Some(r)) => {
                left -= 1;
                if waiter::still_running(&r.ret) {
                    running.insert(r.id);
                }
            }
            _ => break,
        }
    }
    running
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
