//! `salt-ssh`: run Brine execution functions on hosts of a Salt roster that
//! have no minion, over the system OpenSSH client with connection sharing.
//! This build's `salt-call` is the "thin", kept on each host under a
//! directory named by its hash and uploaded only when missing; the file
//! server and pillar questions of a run are answered here from the local
//! master config. Invariant: every targeted host gets exactly one line in
//! the output (its return, or Salt-ssh's `{retcode, stderr, stdout}`), and
//! no host waits longer than its deadline.

pub mod command;
pub mod host;
pub mod remote;
pub mod roster;

use brine_common::exit;
use brine_common::output::{OutputArgs, Printer};
use clap::Parser;
use command::{Common, HostKeys};
use host::{Env, HostResult, Job, Thin};
use roster::TgtType;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Salt's exit code when any host failed (`EX_AGGREGATE`).
pub const EX_AGGREGATE: i32 = 20;

#[derive(Parser, Debug)]
#[command(
    name = "salt-ssh",
    version,
    about = "Run functions on hosts over SSH, without a minion"
)]
pub struct SshArgs {
    #[command(flatten)]
    pub client: brine_common::cli::ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// The target is a regular expression over roster ids.
    #[arg(short = 'E', long = "pcre")]
    pub pcre: bool,
    /// The target is a comma-separated list of roster ids.
    #[arg(short = 'L', long = "list")]
    pub list: bool,
    /// Do not check host keys (StrictHostKeyChecking=no).
    #[arg(short = 'i', long = "ignore-host-keys")]
    pub ignore_host_keys: bool,
    /// Remove all host key checking.
    #[arg(long = "no-host-keys")]
    pub no_host_keys: bool,
    /// known_hosts file to check host keys against.
    #[arg(long = "known-hosts-file")]
    pub known_hosts_file: Option<PathBuf>,
    /// Private key for login (default: the master config's `ssh_priv`).
    #[arg(long = "priv")]
    pub privkey: Option<PathBuf>,
    /// Default user for login (default: `ssh_user`, else the current user).
    #[arg(long = "user")]
    pub user: Option<String>,
    /// Default password for login (prefer the roster or a key: command
    /// lines are visible to other users).
    #[arg(long = "passwd")]
    pub passwd: Option<String>,
    /// Hosts run at once (default: `ssh_max_procs`, else 25).
    #[arg(long = "max-procs")]
    pub max_procs: Option<usize>,
    /// Run the function through `sudo` on hosts whose roster entry does
    /// not say (default: `ssh_sudo`).
    #[arg(long = "sudo")]
    pub sudo: bool,
    /// Offer only the key of --priv (default: `ssh_identities_only`).
    #[arg(long = "identities-only")]
    pub identities_only: bool,
    /// Run the arguments as a shell command.
    #[arg(short = 'r', long = "raw-shell", visible_alias = "raw")]
    pub raw: bool,
    /// When key login fails and a password is known, install the key of
    /// --priv with the password and go on with the key.
    #[arg(long = "key-deploy")]
    pub key_deploy: bool,
    /// Roster file (default: the master config's roster_file, else
    /// CONFIG_DIR/roster).
    #[arg(long = "roster-file")]
    pub roster_file: Option<PathBuf>,
    /// Print all returns at the end as one document.
    #[arg(long = "static")]
    pub static_out: bool,
    /// SSH connect timeout in seconds (default: `ssh_timeout`, else 60).
    #[arg(short = 't', long = "timeout")]
    pub timeout: Option<u64>,
    /// The longest one host may take, connection and run, in seconds.
    #[arg(long = "deadline", default_value_t = 600)]
    pub deadline: u64,
    /// Where the thin lives on the hosts (default /var/tmp/.USER_brine).
    #[arg(long = "thin-dir")]
    pub thin_dir: Option<String>,
    /// The runner to upload (default: salt-call beside salt-ssh).
    #[arg(long = "thin-bin")]
    pub thin_bin: Option<PathBuf>,
    /// Target: roster ids (a glob; -E a regular expression, -L a list).
    pub target: String,
    /// The function and its arguments (or the shell command with -r).
    /// Everything after the function is an argument, even words that look
    /// like flags (`salt-ssh -r '*' uname -a`).
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub words: Vec<String>,
}

/// Askpass mode: when `ssh` runs this executable for a password, print
/// the one its environment holds. `Some(exit code)` when in that mode.
pub fn askpass() -> Option<i32> {
    let secret = std::env::var_os(command::ASKPASS_ENV)?;
    use std::io::Write;
    let mut out = std::io::stdout();
    let mut line = secret.into_encoded_bytes();
    line.push(b'\n');
    Some(match out.write_all(&line).and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    })
}

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".to_string())
}

fn job_of(args: &SshArgs, rest: &[String]) -> Result<Job, String> {
    if args.raw {
        if rest.is_empty() {
            return Err("-r needs a command".into());
        }
        return Ok(Job::Raw(rest.join(" ")));
    }
    let Some((fun, words)) = rest.split_first() else {
        return Err("a function is required (e.g. salt-ssh '*' test.ping)".into());
    };
    let (args, kwargs) = brine_common::args::parse_cli_args(words);
    Ok(Job::Fun {
        fun: fun.clone(),
        args,
        kwargs,
    })
}

/// The whole command; returns the exit code.
pub async fn run(args: SshArgs, master: brine_common::config::MasterConfig) -> i32 {
    let (tgt, rest) = (&args.target, &args.words[..]);
    let defaults = match roster::SshOptions::load(&args.client.config_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("salt-ssh: {e}");
            return exit::CONFIG;
        }
    };
    let job = match job_of(&args, rest) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("salt-ssh: {e}");
            return exit::USAGE;
        }
    };
    let roster_path = args
        .roster_file
        .clone()
        .or_else(|| defaults.roster_file.clone())
        .unwrap_or_else(|| args.client.config_dir.join("roster"));
    let hosts = match roster::load(&roster_path) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("salt-ssh: {e}");
            return exit::CONFIG;
        }
    };
    let kind = if args.pcre {
        TgtType::Pcre
    } else if args.list {
        TgtType::List
    } else {
        TgtType::Glob
    };
    let selected = match roster::select(&hosts, tgt, kind) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("salt-ssh: {e}");
            return exit::USAGE;
        }
    };
    if selected.is_empty() {
        eprintln!("No hosts found with target {tgt} of type {kind:?}");
        return exit::NO_MATCH;
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let thin_path = args.thin_bin.clone().unwrap_or_else(|| {
        exe.parent()
            .map(|d| d.join("salt-call"))
            .unwrap_or_default()
    });
    // Hashing (when not cached) and stripping read the whole runner: off
    // the runtime's threads.
    let cache = master.cachedir.join("salt-ssh");
    let (p2, c2) = (thin_path.clone(), cache.clone());
    let thin = tokio::task::spawn_blocking(move || {
        Thin::cached(p2, &c2).map(|mut t| {
            t.strip_debug(&c2);
            t
        })
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let thin = match thin {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "salt-ssh: the runner {}: {e} (give it with --thin-bin)",
                thin_path.display()
            );
            return exit::CONFIG;
        }
    };
    let files = match brine_master::FileServer::new(&master) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("salt-ssh: file server: {e}");
            return exit::CONFIG;
        }
    };
    let host_keys = if args.ignore_host_keys || args.no_host_keys {
        HostKeys::Ignore
    } else {
        HostKeys::Strict
    };
    let base = std::env::var_os("BRINE_SSH_CONTROL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/brine-ssh-{}", nix::unistd::getuid())));
    let known_hosts = args
        .known_hosts_file
        .clone()
        .or_else(|| defaults.known_hosts_file.clone());
    let wanted = command::control_dir(&base, host_keys, known_hosts.as_deref());
    let control_dir = command::fit_control_dir(&wanted, nix::unistd::getuid().as_raw());
    if control_dir != wanted {
        tracing::warn!(
            wanted = %wanted.display(),
            using = %control_dir.display(),
            "control socket directory too long for a socket path"
        );
    }
    let parent = control_dir.parent().unwrap_or(&base).to_path_buf();
    if let Err(e) = command::private_dir(&parent).and_then(|_| command::private_dir(&control_dir)) {
        eprintln!("salt-ssh: {}: {e}", control_dir.display());
        return exit::CONFIG;
    }
    let env = Arc::new(Env {
        common: Common {
            host_keys,
            known_hosts,
            control_dir,
            control_persist: 60,
            askpass: exe,
            identities_only: args.identities_only || defaults.identities_only.unwrap_or(false),
        },
        thin,
        master: Arc::new(master),
        files: Arc::new(files),
        counters: Default::default(),
        user: args
            .user
            .clone()
            .or_else(|| defaults.user.clone())
            .unwrap_or_else(current_user),
        privkey: args.privkey.clone().or_else(|| defaults.privkey.clone()),
        passwd: args.passwd.clone().or_else(|| defaults.passwd.clone()),
        timeout: args.timeout.or(defaults.timeout).unwrap_or(60),
        port: defaults.port.unwrap_or(22),
        sudo: args.sudo || defaults.sudo.unwrap_or(false),
        thin_dir: args.thin_dir.clone(),
        key_deploy: args.key_deploy,
        log_level: args.client.log_level.clone(),
    });
    let job = Arc::new(job);
    let max_procs = args.max_procs.or(defaults.max_procs).unwrap_or(25);
    let sem = Arc::new(tokio::sync::Semaphore::new(max_procs.max(1)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<HostResult>();
    let deadline = Duration::from_secs(args.deadline.max(1));
    let total = selected.len();
    for h in selected {
        let (env, job, sem, tx) = (env.clone(), job.clone(), sem.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = match tokio::time::timeout(deadline, host::run(&env, &h, &job)).await {
                Ok(r) => r,
                Err(_) => HostResult::failed(
                    &h.id,
                    255,
                    &format!("salt-ssh: {} did not finish within {deadline:?}", h.id),
                    "",
                ),
            };
            let _ = tx.send(r);
        });
    }
    drop(tx);
    let mut p = Printer::new(
        std::io::stdout(),
        args.output.opts(
            args.static_out,
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
        ),
    );
    let mut failed = 0usize;
    let mut seen = 0usize;
    while let Some(r) = rx.recv().await {
        seen += 1;
        if !(r.success && r.retcode == 0) {
            failed += 1;
        }
        if let Err(e) = p.minion_with_retcode(&r.id, &r.ret, r.out.as_deref(), r.retcode) {
            eprintln!("salt-ssh: output failed: {e}");
            return exit::SOFTWARE;
        }
    }
    if let Err(e) = p.finish() {
        eprintln!("salt-ssh: output failed: {e}");
        return exit::SOFTWARE;
    }
    if seen < total {
        eprintln!("salt-ssh: {} hosts gave no result", total - seen);
        return exit::SOFTWARE;
    }
    if failed > 0 {
        EX_AGGREGATE
    } else {
        exit::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn salt_flags_parse() {
        let a = SshArgs::try_parse_from([
            "salt-ssh",
            "-i",
            "-E",
            "web.*",
            "--priv",
            "/k",
            "--user",
            "u",
            "--max-procs",
            "5",
            "-t",
            "3",
            "--static",
            "--out",
            "json",
            "test.ping",
        ])
        .expect("parse");
        assert!(a.ignore_host_keys && a.pcre && a.static_out);
        assert_eq!(a.max_procs, Some(5));
        assert_eq!(a.timeout, Some(3));
        assert_eq!(a.target, "web.*");
        assert_eq!(a.words, ["test.ping"]);
        let a = SshArgs::try_parse_from(["salt-ssh", "-r", "*", "uname -a"]).expect("raw");
        match job_of(&a, &a.words).expect("job") {
            Job::Raw(c) => assert_eq!(c, "uname -a"),
            j => panic!("{j:?}"),
        }
    }

    #[test]
    fn flags_stop_at_the_function() {
        // The command's own flags are arguments, not salt-ssh's.
        let a = SshArgs::try_parse_from(["salt-ssh", "-r", "*", "uname", "-a"]).expect("parse");
        assert!(a.raw);
        assert_eq!(a.target, "*");
        match job_of(&a, &a.words).expect("job") {
            Job::Raw(c) => assert_eq!(c, "uname -a"),
            j => panic!("{j:?}"),
        }
        // Even ones salt-ssh also has (-t, -i, --out), after the function.
        let a = SshArgs::try_parse_from([
            "salt-ssh", "-i", "web*", "--out", "json", "cmd.run", "ls", "-t", "-i", "--out",
        ])
        .expect("parse");
        assert!(a.ignore_host_keys);
        assert_eq!(a.timeout, None);
        assert_eq!(a.words, ["cmd.run", "ls", "-t", "-i", "--out"]);
        match job_of(&a, &a.words).expect("job") {
            Job::Fun { fun, args, .. } => {
                assert_eq!(fun, "cmd.run");
                assert_eq!(
                    args,
                    [json!("ls"), json!("-t"), json!("-i"), json!("--out")]
                );
            }
            j => panic!("{j:?}"),
        }
        // Salt's quoted form still works.
        let a = SshArgs::try_parse_from(["salt-ssh", "*", "cmd.run", "ls -l"]).expect("parse");
        assert_eq!(a.words, ["cmd.run", "ls -l"]);
        assert!(SshArgs::try_parse_from(["salt-ssh", "*"]).is_err());
    }
}
