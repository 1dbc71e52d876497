//! `brine-fleet`: check a fleet file, render it into every daemon's
//! config directory plus a Salt roster, or deploy its minions over SSH.
//! Exit codes: 0 fine, 64 bad command line, 65 bad fleet file (every
//! problem printed), 73 output not writable, 78 deploy setup (binary,
//! master config), 20 some hosts failed to deploy (each listed).

use brine_common::exit;
use brine_common::exit::{CANT_CREATE, DATA};
use brine_fleet::deploy::{self, Options, Report, ServiceMode};
use brine_fleet::{render, Daemon, Fleet};
use brine_ssh::command::HostKeys;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "brine-fleet",
    version,
    about = "Lay out a Brine fleet: top master, datacenters, syndics, minions"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check a fleet file: ids, hosts, ports, loops, loadable configs.
    Check {
        /// The fleet file (YAML).
        file: PathBuf,
    },
    /// Render every daemon's config (`DIR/<id>/master|minion`) and `DIR/roster`.
    Render {
        /// The fleet file (YAML).
        file: PathBuf,
        /// Where to write.
        #[arg(long)]
        out: PathBuf,
        /// Print what would be written where, and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Install every minion of the fleet on its host over SSH: binary,
    /// config, pre-accepted key pair, service.
    Deploy(DeployArgs),
}

#[derive(clap::Args, Debug)]
struct DeployArgs {
    /// The fleet file (YAML).
    file: PathBuf,
    /// Hosts worked on at once.
    #[arg(long = "max-procs", default_value_t = 25)]
    max_procs: usize,
    /// Replace a salt-minion binary of another version.
    #[arg(long)]
    upgrade: bool,
    /// Print what would be done per host, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The salt-minion binary to install (default: beside brine-fleet).
    #[arg(long = "minion-bin")]
    minion_bin: Option<PathBuf>,
    /// Deploy the syndics too (salt-syndic, key accepted and the syndic
    /// role granted on their master).
    #[arg(long)]
    syndics: bool,
    /// The salt-syndic binary to install (default: beside brine-fleet).
    #[arg(long = "syndic-bin")]
    syndic_bin: Option<PathBuf>,
    /// The config directory of the fleet's master on this machine: keys
    /// are pre-accepted there directly (else over ssh on its host).
    #[arg(long = "master-config")]
    master_config: Option<PathBuf>,
    /// systemd unit, background process, or auto (systemd when PID 1 is).
    #[arg(long, value_enum, default_value_t = ServiceMode::Auto)]
    service: ServiceMode,
    /// Do not check host keys (StrictHostKeyChecking=no).
    #[arg(short = 'i', long = "ignore-host-keys")]
    ignore_host_keys: bool,
    /// known_hosts file to check host keys against.
    #[arg(long = "known-hosts-file")]
    known_hosts_file: Option<PathBuf>,
    /// Private key for login (default: the roster's `priv`, or ssh's own).
    #[arg(long = "priv")]
    privkey: Option<PathBuf>,
    /// Default user for login.
    #[arg(long, default_value = "root")]
    user: String,
    /// SSH connect timeout in seconds.
    #[arg(short = 't', long = "timeout", default_value_t = 30)]
    timeout: u64,
    /// The longest one host may take, in seconds.
    #[arg(long, default_value_t = 600)]
    deadline: u64,
}

fn main() {
    // `ssh` runs this executable for a password (roster `passwd`).
    if let Some(code) = brine_ssh::askpass() {
        std::process::exit(code);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(run(cli));
}

fn run(cli: Cli) -> i32 {
    let file = match &cli.cmd {
        Cmd::Check { file } | Cmd::Render { file, .. } => file,
        Cmd::Deploy(a) => &a.file,
    };
    let fleet = match Fleet::load(file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("brine-fleet: {e}");
            return DATA;
        }
    };
    let daemons = match fleet.plan() {
        Ok(d) => d,
        Err(problems) => {
            eprintln!(
                "brine-fleet: {} has {} problem(s):",
                file.display(),
                problems.0.len()
            );
            for p in &problems.0 {
                eprintln!("  {p}");
            }
            return DATA;
        }
    };
    match cli.cmd {
        Cmd::Deploy(args) => run_deploy(args, daemons),
        Cmd::Check { .. } => {
            let count = |k| daemons.iter().filter(|d| d.kind == k).count();
            println!(
                "{}: fine: 1 master, {} syndic(s), {} minion(s)",
                file.display(),
                count(brine_fleet::Kind::Syndic),
                count(brine_fleet::Kind::Minion)
            );
            exit::OK
        }
        Cmd::Render { out, dry_run, .. } => {
            let outputs = render::outputs(&daemons, &out);
            if dry_run {
                for (path, text) in &outputs {
                    let same = std::fs::read(path).is_ok_and(|old| old == text.as_bytes());
                    let what = if same { "unchanged" } else { "would write" };
                    println!("==> {what} {} ({} bytes)", path.display(), text.len());
                    print!("{text}");
                }
                return exit::OK;
            }
            match render::write(&outputs) {
                Ok(done) => {
                    let changed = done
                        .iter()
                        .filter(|(_, w)| *w == render::Written::Changed)
                        .count();
                    for (path, w) in &done {
                        if *w == render::Written::Changed {
                            println!("wrote {}", path.display());
                        }
                    }
                    println!(
                        "{} file(s) written, {} unchanged, in {}",
                        changed,
                        done.len() - changed,
                        out.display()
                    );
                    for stale in render::stale_dirs(&daemons, &out) {
                        println!(
                            "note: {} is not a daemon of this fleet any more (left alone)",
                            stale.display()
                        );
                    }
                    exit::OK
                }
                Err(e) => {
                    eprintln!("brine-fleet: cannot write into {}: {e}", out.display());
                    CANT_CREATE
                }
            }
        }
    }
}

fn run_deploy(args: DeployArgs, daemons: Vec<Daemon>) -> i32 {
    let opts = Options {
        minion_bin: args
            .minion_bin
            .clone()
            .unwrap_or_else(|| deploy::beside_me("salt-minion")),
        syndics: args.syndics,
        syndic_bin: args
            .syndic_bin
            .clone()
            .unwrap_or_else(|| deploy::beside_me("salt-syndic")),
        upgrade: args.upgrade,
        dry_run: args.dry_run,
        max_procs: args.max_procs,
        host_keys: if args.ignore_host_keys {
            HostKeys::Ignore
        } else {
            HostKeys::Strict
        },
        known_hosts: args.known_hosts_file.clone(),
        privkey: args.privkey.clone(),
        user: args.user.clone(),
        timeout: args.timeout,
        deadline: args.deadline,
        master_config: args.master_config.clone(),
        service: args.service,
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("brine-fleet: cannot start the runtime: {e}");
            return exit::SOFTWARE;
        }
    };
    let total = daemons
        .iter()
        .filter(|d| {
            d.kind == brine_fleet::Kind::Minion
                || (args.syndics && d.kind == brine_fleet::Kind::Syndic)
        })
        .count();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new(total as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        ) {
            b.set_style(style);
        }
        b
    });
    let progress = |done: usize, total: usize, r: &Report| match &bar {
        Some(b) => {
            b.set_position(done as u64);
            b.set_message(format!("{}: {}", r.id, r.outcome));
        }
        None => eprintln!("deploy: {done}/{total} {}: {}", r.id, r.outcome),
    };
    let reports = match rt.block_on(deploy::deploy(opts, daemons, progress)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("brine-fleet: {e}");
            return exit::CONFIG;
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if args.dry_run {
        println!("dry run: nothing was changed");
    }
    print!("{}", deploy::table(&reports));
    println!("{}", deploy::summary(&reports));
    let failed: Vec<&Report> = reports
        .iter()
        .filter(|r| r.outcome == deploy::Outcome::Failed)
        .collect();
    if failed.is_empty() {
        return exit::OK;
    }
    eprintln!("brine-fleet: {} host(s) failed:", failed.len());
    for r in failed {
        eprintln!("  {} ({}): {}", r.id, r.host, r.reason);
    }
    brine_ssh::EX_AGGREGATE
}
