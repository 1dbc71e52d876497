//! The minion daemon: one [`brine_common::link`] to the master, a matcher that
//! decides (authoritatively) whether a job is for this minion, and a job
//! runner that runs each job in its own task, so a slow job never holds up
//! the next one. A master name that does not resolve is said once at WARN
//! (the name, the file that set it), then retried quietly
//! ([`link::watch_master_name`]); the link keeps reconnecting meanwhile.
//!
//! Every job shares one file client ([`crate::files`], `salt://` over the
//! link, cached under `cachedir/files`) and the pillar in memory
//! ([`crate::pillar`]), which is fetched after each new sign-in and on
//! `saltutil.refresh_pillar`.
//!
//! Beside the jobs runs the beacon loop ([`crate::beacons::run`]): the
//! config's and the pillar's `beacons:`, their events sent to the master
//! over the same link.

use crate::beacons::Beacons;
use crate::exec::{Ctx, MinionEvent, Registry};
use crate::files::{Ask, FileClient};
use crate::pillar::Pillar;
use crate::running::{RunningInfo, RunningJobs};
use brine_common::config::MinionConfig;
use brine_common::crypto::KeyPair;
use brine_common::link::{self, LinkConfig, LinkHandle, MasterName};
use brine_common::proto::*;
use brine_common::target;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum MinionError {
    #[error(transparent)]
    Crypto(#[from] brine_common::crypto::CryptoError),
    #[error(transparent)]
    Link(#[from] link::LinkError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Run a minion until `shutdown` is cancelled.
pub async fn run(cfg: MinionConfig, shutdown: CancellationToken) -> Result<(), MinionError> {
    {
        use std::os::unix::fs::DirBuilderExt;
        for d in [&cfg.pki_dir, &cfg.cachedir] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|source| MinionError::Io {
                    path: d.display().to_string(),
                    source,
                })?;
        }
    }
    let (keys, created) = KeyPair::load_or_generate(&cfg.pki_dir, "minion")?;
    if created {
        info!(pki_dir = %cfg.pki_dir.display(), "generated minion key pair");
    }
    info!(id = %cfg.id, fingerprint = %keys.public().fingerprint(), "minion key");
    let grains_file = crate::grains::grains_file_for(&cfg.load_notes.main_file);
    let grains = Arc::new(RwLock::new(crate::grains::collect_with_file(
        &cfg.id,
        &cfg.grains,
        grains_file.as_deref(),
    )));
    let g2 = grains.clone();
    let hello: link::HelloFn = Box::new(move || RequestBody::Hello {
        grains: g2.read().map(|g| g.clone()).unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    });
    let lcfg = LinkConfig::from(&cfg);
    tokio::spawn(link::watch_master_name(
        MasterName {
            key: "master",
            host: cfg.master.clone(),
            port: cfg.master_port,
            origin: cfg.load_notes.origin("master").to_string(),
            main_file: cfg.load_notes.main_file.clone(),
        },
        std::time::Duration::from_millis(cfg.recon_max.max(1000)),
        shutdown.clone(),
    ));
    let keys = Arc::new(keys);
    let (link, mut jobs, link_task) = link::start(lcfg, keys.clone(), hello, shutdown.clone())?;
    let asker: Arc<dyn Ask> = Arc::new(link.clone());
    let pillar = Arc::new(Pillar::new(
        Some(asker.clone()),
        Some(keys),
        &cfg.id,
        cfg.pillarenv.clone(),
        cfg.max_frame_bytes,
    ));
    let session = link.clone();
    tokio::spawn(pillar.clone().follow_sign_ins(
        move || session.is_up().then(|| session.sign_ins()),
        shutdown.clone(),
    ));
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<MinionEvent>();
    let counts = JobCounts::default();
    let running = Arc::new(RunningJobs::new());
    let _metrics = brine_common::metrics::start_if_configured(
        cfg.metrics_bind.as_deref(),
        || counts.registry(&link, &running),
        metrics_ready(&link),
        &shutdown,
    )
    .await
    .map_err(|source| MinionError::Io {
        path: "metrics endpoint".into(),
        source,
    })?;
    let beacons = Arc::new(Beacons::new(
        &cfg.beacons,
        Beacons::save_path_for(&cfg.load_notes.main_file),
        Some(running.clone()),
    ));
    tokio::spawn(crate::beacons::run(
        beacons.clone(),
        cfg.id.clone(),
        pillar.shared(),
        asker.clone(),
        shutdown.clone(),
    ));
    // `salt-call` asks the master through this link (one session per id);
    // without the socket it signs in itself.
    let call_socket = crate::caller::socket_path(&cfg);
    if let Err(e) = crate::caller::serve(&call_socket, asker.clone(), shutdown.clone()) {
        warn!(path = %call_socket.display(), error = %e, "no salt-call socket: salt-call will sign in on its own");
    }
    let runner = Arc::new(Runner {
        id: cfg.id.clone(),
        registry: Registry::new(),
        running,
        counts,
        grains,
        pillar: pillar.shared(),
        pillar_source: pillar,
        files: Arc::new(FileClient::new(Some(asker.clone()), cfg.cachedir.clone())),
        master: asker,
        beacons,
        saltenv: cfg.saltenv.clone(),
        static_grains: cfg.grains.clone(),
        grains_file,
        pki_dir: cfg.pki_dir.clone(),
        link: link.clone(),
        events: ev_tx,
        shutdown: shutdown.clone(),
    });
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = ev_rx.recv() => {
                if let Some(MinionEvent::GrainsChanged(g)) = ev {
                    link.send(RequestBody::Grains(g));
                }
            }
            job = jobs.recv() => {
                let Some(job) = job else { break };
                runner.clone().dispatch(job);
            }
        }
    }
    // Cancel what is running; the link stops with the same token.
    for j in runner.running.list() {
        runner.running.kill(&j.jid);
    }
    let _ = link_task.await;
    Ok(())
}

struct Runner {
    id: String,
    registry: Registry,
    running: Arc<RunningJobs>,
    counts: JobCounts,
    grains: Arc<RwLock<serde_json::Value>>,
    /// The live pillar (the same lock [`Pillar`] replaces), for pillar
    /// targeting (`-I`, `I@`): this minion decides with its own pillar.
    pillar: Arc<RwLock<serde_json::Value>>,
    pillar_source: Arc<Pillar>,
    files: Arc<FileClient>,
    /// The config's `saltenv` (`cmd.script`'s default).
    saltenv: Option<String>,
    static_grains: serde_json::Value,
    grains_file: Option<std::path::PathBuf>,
    pki_dir: std::path::PathBuf,
    link: LinkHandle,
    events: mpsc::UnboundedSender<MinionEvent>,
    shutdown: CancellationToken,
    /// The master, for `event.send` / `event.fire_master`.
    master: Arc<dyn Ask>,
    /// The running beacons (`beacons.*` change them, the loop runs them).
    beacons: Arc<Beacons>,
}

impl Runner {
    fn target(&self, job: &JobLoad) -> Option<target::Target> {
        match target::parse_with_delimiter(&job.tgt, job.tgt_type, &BTreeMap::new(), &job.delimiter)
        {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(jid = %job.jid, error = %e, "job with an unreadable target ignored");
                None
            }
        }
    }

    fn matches(&self, t: &target::Target, job: &JobLoad) -> bool {
        let grains = self.grains.read().map(|g| g.clone()).unwrap_or_default();
        if !t.uses_pillar() {
            return t.matches(&self.id, &grains, &job.delimiter);
        }
        let pillar = brine_common::sync::read(&self.pillar).clone();
        t.matches_with(&self.id, &grains, Some(&pillar), &job.delimiter)
    }

    fn dispatch(self: Arc<Self>, job: JobLoad) {
        let Some(t) = self.target(&job) else { return };
        if t.uses_pillar() && !self.pillar_source.loaded() {
            // A pillar target before this minion has its pillar (it has
            // just started): fetch it first, then decide, so the job is
            // neither missed nor run on an empty pillar.
            tokio::spawn(async move {
                if let Err(e) = self.pillar_source.refresh().await {
                    warn!(jid = %job.jid, error = %e, "pillar target before the pillar could be fetched");
                }
                if self.matches(&t, &job) {
                    self.execute(job).await;
                }
            });
            return;
        }
        if !self.matches(&t, &job) {
            debug!(jid = %job.jid, "job not for this minion");
            return;
        }
        tokio::spawn(async move { self.execute(job).await });
    }

    async fn execute(&self, job: JobLoad) {
        let cancel = self.shutdown.child_token();
        self.running.insert(
            RunningInfo {
                jid: job.jid.clone(),
                fun: job.fun.clone(),
                arg: job.arg.clone(),
                pid: std::process::id(),
                tgt: job.tgt.clone(),
                tgt_type: job.tgt_type.as_str().to_string(),
                user: job.user.clone(),
                start: job.jid.to_string(),
            },
            cancel.clone(),
        );
        info!(jid = %job.jid, fun = %job.fun, user = %job.user, "job started");
        let ctx = Ctx {
            jid: job.jid.clone(),
            fun: job.fun.clone(),
            args: job.arg.clone(),
            kwargs: job.kwarg.clone(),
            grains: self.grains.clone(),
            static_grains: self.static_grains.clone(),
            grains_file: self.grains_file.clone(),
            id: self.id.clone(),
            pki_dir: self.pki_dir.clone(),
            running: self.running.clone(),
            cancel,
            events: Some(self.events.clone()),
            files: self.files.clone(),
            pillar: self.pillar_source.clone(),
            saltenv: self.saltenv.clone(),
            master: Some(self.master.clone()),
            beacons: self.beacons.clone(),
        };
        let out = self.registry.call(ctx).await;
        self.counts.finished(out.success);
        let outputter = crate::exec::outputter(&job.fun).map(str::to_string);
        self.running.remove(&job.jid);
        let mut trace = job.trace;
        if let Some(t) = trace.as_mut() {
            t.push(Stamp {
                who: self.id.clone(),
                what: "done".into(),
                us: now_us(),
            });
        }
        let mut fun_args = job.arg;
        if !job.kwarg.is_empty() {
            let mut kw: serde_json::Map<String, serde_json::Value> =
                job.kwarg.into_iter().collect();
            kw.insert("__kwarg__".into(), serde_json::Value::Bool(true));
            fun_args.push(serde_json::Value::Object(kw));
        }
        self.link.send(RequestBody::Return(ReturnLoad {
            jid: job.jid,
            id: self.id.clone(),
            fun: job.fun,
            fun_args,
            ret: out.ret,
            retcode: out.retcode,
            success: out.success,
            out: outputter,
            trace,
        }));
    }
}

/// The minion's metrics (`metrics_bind`): jobs run and failed, counted
/// here; the link and the running jobs, read at scrape time.
#[derive(Debug, Clone, Default)]
struct JobCounts {
    run: brine_common::metrics::Counter,
    failed: brine_common::metrics::Counter,
}

impl JobCounts {
    fn finished(&self, success: bool) {
        self.run.inc();
        if !success {
            self.failed.inc();
        }
    }

    fn registry(
        &self,
        link: &LinkHandle,
        running: &Arc<RunningJobs>,
    ) -> brine_common::metrics::Registry {
        let mut r = brine_common::metrics::registry();
        r.register(
            "brine_minion_jobs",
            "Jobs this minion ran to the end.",
            self.run.clone(),
        );
        r.register(
            "brine_minion_jobs_failed",
            "Jobs that ended unsuccessfully (success false).",
            self.failed.clone(),
        );
        r.register_collector(Box::new(LinkCollector {
            link: link.clone(),
            running: running.clone(),
        }));
        r
    }
}

/// Ready while signed in to the master.
fn metrics_ready(link: &LinkHandle) -> brine_common::metrics::ReadyFn {
    let link = link.clone();
    Arc::new(move || match link.is_up() {
        true => Ok(()),
        false => Err("not signed in to the master".into()),
    })
}

struct LinkCollector {
    link: LinkHandle,
    running: Arc<RunningJobs>,
}

impl std::fmt::Debug for LinkCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkCollector")
    }
}

impl brine_common::metrics::Collector for LinkCollector {
    fn encode(&self, enc: brine_common::metrics::DescriptorEncoder) -> std::fmt::Result {
        let mut s = brine_common::metrics::Scrape::new(enc);
        s.gauge(
            "brine_minion_signed_in",
            "1 while this minion is signed in to its master.",
            i64::from(self.link.is_up()),
        )?;
        s.counter(
            "brine_minion_sign_ins",
            "Sign-ins to the master since start.",
            self.link.sign_ins(),
        )?;
        s.gauge(
            "brine_minion_jobs_running",
            "Jobs running now.",
            self.running.list().len() as i64,
        )
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;
    use brine_common::metrics::{render, sample};

    #[test]
    fn job_counts_show_in_the_exposition() {
        let counts = JobCounts::default();
        counts.finished(true);
        counts.finished(false);
        counts.finished(true);
        let mut r = brine_common::metrics::registry();
        r.register("brine_minion_jobs", "run", counts.run.clone());
        r.register("brine_minion_jobs_failed", "failed", counts.failed.clone());
        let t = render(&r).expect("render");
        assert_eq!(sample(&t, "brine_minion_jobs_total"), Some(3.0), "{t}");
        assert_eq!(
            sample(&t, "brine_minion_jobs_failed_total"),
            Some(1.0),
            "{t}"
        );
    }
}
