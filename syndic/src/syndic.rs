//! `salt-syndic`: a downstream master plus an upstream link.
//!
//! Jobs from above are re-published below with the same jid (and dropped if
//! this syndic is already on their path: loop guard); returns of those jobs
//! go up through [`crate::forward`], and with `syndic_forward_all` so do
//! the jobs published here (an operator's `salt` on the syndic) with their
//! returns, as Salt's syndic does. The downstream master is a complete
//! master: its own keys, job cache, roster and `salt` CLI.

use crate::{forward, upstream};
use brine_common::config::{ConfigError, MasterConfig, SyndicConfig};
use brine_common::crypto::KeyPair;
use brine_common::link::{self, MasterName};
use brine_master::daemon::Master;
use brine_master::spool::Spool;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum SyndicError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Master(#[from] brine_master::daemon::MasterError),
    #[error(transparent)]
    Crypto(#[from] brine_common::crypto::CryptoError),
    #[error(transparent)]
    Spool(#[from] brine_master::spool::SpoolError),
}

/// Run a syndic until `shutdown` is cancelled.
pub async fn run(cfg: MasterConfig, shutdown: CancellationToken) -> Result<(), SyndicError> {
    let syn = SyndicConfig::of(&cfg)?;
    brine_master::daemon::private_dir(&syn.pki_dir)?;
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
            Duration::from_millis(syn.recon_max.max(1000)),
            shutdown.clone(),
        ));
    }
    let master = Master::start(cfg.clone(), shutdown.clone()).await?;
    let state = master.state.clone();
    let spool = Arc::new(Spool::open(
        &cfg.cachedir.join("syndic_spool.sqlite"),
        cfg.syndic_spool_max,
    )?);
    let relayed = Arc::new(forward::Relayed::default());
    let (up, mut jobs) = upstream::start(&syn, Arc::new(keys), shutdown.clone());
    let wake = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(forward::RosterGate::default());
    let interval = Duration::from_millis(cfg.syndic_forward_interval_ms.max(1));
    let mut tasks = vec![
        tokio::spawn(forward::spool_returns(
            state.clone(),
            relayed.clone(),
            spool.clone(),
            state.watch_all(),
            wake.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(forward::forward_returns(
            state.clone(),
            relayed.clone(),
            up.clone(),
            gate.clone(),
            spool.clone(),
            forward::Pace {
                interval,
                batch: cfg.syndic_forward_batch,
            },
            wake,
            shutdown.clone(),
        )),
        tokio::spawn(forward::report_roster(
            state.clone(),
            up.clone(),
            gate,
            // Deltas go up at least every second, whatever the return
            // interval: returns wait for the first report of a session.
            interval.clamp(Duration::from_millis(200), Duration::from_secs(1)),
            shutdown.clone(),
        )),
    ];
    let st = state.clone();
    let sd = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let job = tokio::select! {
                _ = sd.cancelled() => return,
                j = jobs.recv() => j,
            };
            let Some(job) = job else { return };
            if job.path.iter().any(|p| p == &st.cfg.id) {
                warn!(jid = %job.jid, path = ?job.path, "job already came through this syndic; dropped (loop)");
                continue;
            }
            relayed.insert(&job.jid);
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
