//! `salt-syndic`: a downstream master plus an upstream link.
//!
//! Jobs from above are re-published below with the same jid (and dropped if
//! this syndic is already on their path: loop guard); the downstream master
//! marks them as relayed, so their returns are written to the job cache's
//! outbox with the returns themselves, and `crate::forward` sends them up.
//! With `syndic_forward_all` so do the jobs published here (an operator's
//! `salt` on the syndic) with their returns, as Salt's syndic does. The
//! downstream master is a complete master: its own keys, job cache, roster
//! and `salt` CLI. Its bus's events go up too (`crate::events_up`,
//! `syndic_forward_events`), marked with the syndics they came through.

use crate::forward::{Forwarder, Pace, SyndicBelow};
use crate::{legacy_spool, upstream};
use brine_common::config::{ConfigError, MasterConfig, SyndicConfig};
use brine_common::crypto::KeyPair;
use brine_common::link::{self, MasterName};
use brine_master::master::Master;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum SyndicError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Master(#[from] brine_master::master::MasterError),
    #[error(transparent)]
    Crypto(#[from] brine_common::crypto::CryptoError),
}

/// Run a syndic until `shutdown` is cancelled.
pub async fn run(cfg: MasterConfig, shutdown: CancellationToken) -> Result<(), SyndicError> {
    let syn = SyndicConfig::of(&cfg)?;
    brine_master::master::private_dir(&syn.pki_dir)?;
    let (keys, created) = KeyPair::load_or_generate(&syn.pki_dir, "minion")?;
    if created {
        info!(pki_dir = %syn.pki_dir.display(), "generated the syndic's upstream key pair");
    }
    info!(id = %syn.id, fingerprint = %keys.public().fingerprint(), "syndic upstream key");
    for m in &syn.masters {
        let (host, port) = upstream::split_host_port(m, syn.master_port);
        tokio::spawn(link::watch_master_name(
            MasterName {
                key: "syndic_master",
                host,
                port,
                origin: syn.masters_origin.clone(),
                main_file: syn.main_file.clone(),
            },
            Duration::from_millis(syn.timings.recon_max.max(1000)),
            shutdown.clone(),
        ));
    }
    let master = Master::start(cfg.clone(), shutdown.clone()).await?;
    let state = master.state().clone();
    import_old_spool(&cfg, &state).await;
    let (up, mut jobs) = upstream::start(&syn, Arc::new(keys), shutdown.clone());
    // File server and pillar questions this syndic cannot answer go up.
    state.set_upstream(Arc::new(up.clone()));
    let metrics_task = brine_common::metrics::start_if_configured(
        syn.metrics_bind.as_deref(),
        || metrics_registry(&state, &up),
        metrics_ready(&up),
        &shutdown,
    )
    .await
    .map_err(|source| brine_master::master::MasterError::Io {
        path: "metrics endpoint".into(),
        source,
    })?;
    let forwarder = Forwarder::new(
        SyndicBelow::new(state.clone()),
        up.clone(),
        Pace {
            interval: syn.forward_interval,
            batch: syn.forward_batch,
        },
    );
    let mut tasks = vec![tokio::spawn(forwarder.run(shutdown.clone()))];
    if let Some(sub) = crate::events_up::subscribe(state.events(), &syn.forward_events) {
        tasks.push(tokio::spawn(crate::events_up::run(
            state.clone(),
            sub,
            up.clone(),
            syn.id.clone(),
            shutdown.clone(),
        )));
    }
    tasks.extend(metrics_task);
    let st = state.clone();
    let sd = shutdown.clone();
    let me = syn.id.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let job = tokio::select! {
                _ = sd.cancelled() => return,
                j = jobs.recv() => j,
            };
            let Some(job) = job else { return };
            if job.path.iter().any(|p| p == &me) {
                warn!(jid = %job.jid, path = ?job.path, "job already came through this syndic; dropped (loop)");
                continue;
            }
            let jid = job.jid.clone();
            match st.relay_async(job).await {
                Ok(expected) => debug!(jid = %jid, minions = expected.len(), "job relayed"),
                Err(e) => warn!(jid = %jid, error = %e, "could not relay job"),
            }
        }
    }));
    shutdown.cancelled().await;
    for t in tasks {
        let _ = t.await;
    }
    master.join().await;
    Ok(())
}

/// The syndic's metrics: its master's (`brine_master_*`, see
/// `brine_master::metrics`) and its link above, read at scrape time.
fn metrics_registry(
    state: &Arc<brine_master::state::MasterState>,
    up: &upstream::Upstream,
) -> brine_common::metrics::Registry {
    let mut r = brine_master::metrics::registry(state);
    r.register_collector(Box::new(UpstreamCollector(up.clone())));
    r
}

/// Ready once signed in to a master above (jobs can come down).
fn metrics_ready(up: &upstream::Upstream) -> brine_common::metrics::ReadyFn {
    let up = up.clone();
    Arc::new(move || match up.session() {
        Some(_) => Ok(()),
        None => Err("not signed in to a master above".into()),
    })
}

struct UpstreamCollector(upstream::Upstream);

impl std::fmt::Debug for UpstreamCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamCollector")
    }
}

impl brine_common::metrics::Collector for UpstreamCollector {
    fn encode(&self, enc: brine_common::metrics::DescriptorEncoder) -> std::fmt::Result {
        let mut s = brine_common::metrics::Scrape::new(enc);
        let link = self.0.link();
        s.gauge(
            "brine_syndic_upstream_up",
            "1 while the syndic is signed in to a master above.",
            i64::from(link.as_ref().is_some_and(|l| l.is_up())),
        )?;
        s.counter(
            "brine_syndic_upstream_sign_ins",
            "Sign-ins of the current link above.",
            link.map_or(0, |l| l.sign_ins()),
        )
    }
}

/// Import a spool file left by an older version into the outbox (once;
/// a failure is a warning naming the file, which stays for the next start).
async fn import_old_spool(cfg: &MasterConfig, state: &Arc<brine_master::state::MasterState>) {
    let (dir, jobs, me) = (cfg.cachedir.clone(), state.jobs().clone(), cfg.id.clone());
    match tokio::task::spawn_blocking(move || legacy_spool::import(&dir, &jobs, &me)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "old syndic spool not imported; its returns stay in it"),
        Err(e) => warn!(error = %e, "old syndic spool import failed"),
    }
}
