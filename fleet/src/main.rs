//! `brine-fleet`: check a fleet file, or render it into every daemon's
//! config directory plus a Salt roster. Exit codes: 0 fine, 64 bad command
//! line, 65 bad fleet file (every problem printed), 73 output not writable.

use brine_common::exit;
use brine_common::exit::{CANT_CREATE, DATA};
use brine_fleet::{render, Fleet};
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
}

fn main() {
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
