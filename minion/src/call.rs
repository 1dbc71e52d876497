//! `salt-call`: run one execution function here, with the same modules and
//! outputters as a published job; the function always runs in this
//! process. Without `--local` it talks to the master as Salt's does: the
//! file server (`salt://`), this minion's pillar (fetched before the
//! function runs) and events (`event.send`, `event.fire_master`) go
//! through the running minion daemon's link ([`crate::caller`]), or, when
//! no daemon serves its socket, through a link of its own signed in with
//! the minion's key. With `--local` nothing is sent: `salt://` sources and
//! the pillar fail with an error saying so, while local paths, the
//! minion's file cache (`cp.is_cached`, `cp.list_minion`) and
//! `cp.recv_chunked` work.

use crate::exec::{Ctx, Registry};
use crate::running::RunningJobs;
use brine_common::config::MinionConfig;
use brine_common::exit;
use brine_common::output::{OutputArgs, Printer};
use clap::Parser;
use std::sync::{Arc, RwLock};

#[derive(Parser, Debug)]
#[command(
    name = "salt-call",
    version,
    about = "Run an execution function on this minion"
)]
pub struct CallArgs {
    #[command(flatten)]
    pub client: brine_common::cli::ClientArgs,
    /// Run without a master (the function always runs here).
    #[arg(long)]
    pub local: bool,
    /// Print this minion's grains (same as grains.items).
    #[arg(short = 'g', long = "grains")]
    pub grains: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Exit with the function's retcode.
    #[arg(long = "retcode-passthrough")]
    pub retcode_passthrough: bool,
    /// Serve one `salt-ssh` run over stdin/stdout (`ssh_run`); the
    /// function and the options come over the channel.
    #[arg(long = "ssh-stdio", hide = true)]
    pub ssh_stdio: bool,
    /// Function (module.function) and its arguments.
    pub words: Vec<String>,
}

pub async fn run(args: CallArgs, cfg: MinionConfig) -> i32 {
    let (fun, rest) = if args.grains {
        ("grains.items".to_string(), vec![])
    } else {
        match args.words.split_first() {
            Some((f, r)) => (f.clone(), r.to_vec()),
            None => {
                eprintln!("salt-call: a function is required (e.g. salt-call --local test.ping)");
                return exit::USAGE;
            }
        }
    };
    let (pos, kw) = brine_common::args::parse_cli_args(&rest);
    let fun_name = fun.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_link = stop.clone().drop_guard();
    let up = if args.local {
        None
    } else {
        match master(&cfg, &stop).await {
            Ok(up) => Some(up),
            Err(e) => {
                eprintln!("salt-call: {e} (or run it with --local)");
                return exit::UNAVAILABLE;
            }
        }
    };
    let mut ctx = local_ctx(&cfg, fun, pos, kw, up.as_ref().map(|(a, _)| a.clone()));
    if let Some((asker, keys)) = up {
        ctx.pillar = Arc::new(crate::pillar::Pillar::new(
            Some(asker.clone()),
            Some(keys),
            &cfg.id,
            cfg.pillarenv.clone(),
            cfg.max_frame_bytes,
        ));
        ctx.master = Some(asker);
        if let Err(e) = ctx.pillar.refresh().await {
            tracing::warn!(error = %e, "pillar not fetched");
        }
    }
    let out = Registry::new().call(ctx).await;
    let mut p = Printer::new(
        std::io::stdout(),
        args.output
            .opts(false, std::io::IsTerminal::is_terminal(&std::io::stdout())),
    );
    if let Err(e) = p
        .minion("local", &out.ret, crate::exec::outputter(&fun_name))
        .and_then(|_| p.finish())
    {
        eprintln!("salt-call: output failed: {e}");
        return exit::SOFTWARE;
    }
    if args.retcode_passthrough {
        out.retcode
    } else if out.success && out.retcode == 0 {
        exit::OK
    } else {
        exit::JOB_FAILED
    }
}

/// How long `salt-call` waits for its own link to sign in.
const SIGN_IN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The master, for a `salt-call` without `--local`: the daemon's call
/// socket when a daemon serves it, else a link of this process (stopped
/// with `stop`) once it signed in. With the minion's key pair, which opens
/// a pillar sealed to it.
async fn master(
    cfg: &MinionConfig,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<
    (
        Arc<dyn crate::files::Ask>,
        Arc<brine_common::crypto::KeyPair>,
    ),
    String,
> {
    let (keys, _) = brine_common::crypto::KeyPair::load_or_generate(&cfg.pki_dir, "minion")
        .map_err(|e| format!("the minion's key pair in {}: {e}", cfg.pki_dir.display()))?;
    let keys = Arc::new(keys);
    let sock = crate::caller::socket_path(cfg);
    if let Ok(d) = crate::caller::DaemonAsk::connect(&sock).await {
        tracing::debug!(socket = %sock.display(), "through the minion daemon");
        return Ok((Arc::new(d), keys));
    }
    let grains = crate::grains::collect_with_file(
        &cfg.id,
        &cfg.grains,
        crate::grains::grains_file_for(&cfg.load_notes.main_file).as_deref(),
    );
    // Grains, not `Hello`: a salt-call is not a minion starting.
    let hello: brine_common::link::HelloFn =
        Box::new(move || brine_common::proto::RequestBody::Grains(grains.clone()));
    let (link, jobs, _task) = brine_common::link::start(
        brine_common::link::LinkConfig::from(cfg),
        keys.clone(),
        hello,
        stop.clone(),
    )
    .map_err(|e| format!("cannot start a link to the master: {e}"))?;
    // Jobs published meanwhile are the daemon's business, not this run's.
    tokio::spawn(async move {
        let mut jobs = jobs;
        while jobs.recv().await.is_some() {}
    });
    let until = tokio::time::Instant::now() + SIGN_IN_WAIT;
    while !link.is_up() {
        if tokio::time::Instant::now() >= until || stop.is_cancelled() {
            return Err(format!(
                "could not sign in to the master {}:{} within {}s (is this minion's key accepted?)",
                cfg.master,
                cfg.master_port,
                SIGN_IN_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok((Arc::new(link), keys))
}

/// The context of one function run in this process: grains collected
/// here, the file client and pillar asking through `asker` (`None`: no
/// master, as plain `salt-call`; `salt-ssh` gives its channel).
pub fn local_ctx(
    cfg: &MinionConfig,
    fun: String,
    args: Vec<serde_json::Value>,
    kwargs: std::collections::BTreeMap<String, serde_json::Value>,
    asker: Option<Arc<dyn crate::files::Ask>>,
) -> Ctx {
    let grains_file = crate::grains::grains_file_for(&cfg.load_notes.main_file);
    let grains = crate::grains::collect_with_file(&cfg.id, &cfg.grains, grains_file.as_deref());
    Ctx {
        jid: brine_common::jid::JidGen::new().next(),
        fun,
        args,
        kwargs,
        grains: Arc::new(RwLock::new(grains)),
        static_grains: cfg.grains.clone(),
        grains_file,
        id: cfg.id.clone(),
        pki_dir: cfg.pki_dir.clone(),
        running: Arc::new(RunningJobs::new()),
        cancel: tokio_util::sync::CancellationToken::new(),
        events: None,
        files: Arc::new(crate::files::FileClient::new(
            asker.clone(),
            cfg.cachedir.clone(),
        )),
        pillar: Arc::new(crate::pillar::Pillar::new(
            asker,
            None,
            &cfg.id,
            cfg.pillarenv.clone(),
            cfg.max_frame_bytes,
        )),
        saltenv: cfg.saltenv.clone(),
        master: None,
        beacons: Arc::new(crate::beacons::Beacons::new(
            &cfg.beacons,
            crate::beacons::Beacons::save_path_for(&cfg.load_notes.main_file),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `salt-call` takes the shared client flags: `-c` (or
    /// `SALT_CONFIG_DIR`) and `-l`.
    #[test]
    fn client_flags() {
        let env = CallArgs::command()
            .get_arguments()
            .find(|a| a.get_id() == "config_dir")
            .and_then(|a| a.get_env().map(|e| e.to_owned()));
        assert_eq!(
            env.as_deref(),
            Some(std::ffi::OsStr::new("SALT_CONFIG_DIR"))
        );
        let a = CallArgs::try_parse_from([
            "salt-call",
            "-c",
            "/x",
            "-l",
            "debug",
            "--local",
            "test.ping",
        ])
        .expect("parse");
        assert_eq!(a.client.config_dir, std::path::PathBuf::from("/x"));
        assert_eq!(a.client.log_level, "debug");
        assert_eq!(a.words, vec!["test.ping".to_string()]);
    }
}
