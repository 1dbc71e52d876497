//! A master, wired: [`Master::start`] loads the keys, the job cache and the
//! roster snapshot, binds the publisher (4505), the request server (4506)
//! and the local client socket, and spawns their tasks plus housekeeping;
//! [`Master::join`] waits for them after the cancellation token fires and
//! saves what must survive a restart.
//!
//! The syndic embeds a master this way. Nothing here holds state of its
//! own: it is all in [`crate::state::MasterState`].

use crate::job_cache::{JobCache, JobCacheOptions};
use crate::keys::KeyStore;
use crate::publisher::{PublishError, Publisher};
use crate::request_server::{self, RequestServerError};
use crate::roster::Roster;
use crate::state::{MasterState, Parts};
use brine_common::config::MasterConfig;
use brine_common::crypto::{self, KeyPair};
use brine_common::proto::now_us;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    #[error(transparent)]
    JobCache(#[from] crate::job_cache::JobCacheError),
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    #[error(transparent)]
    RequestServer(#[from] RequestServerError),
    #[error(transparent)]
    FileServer(#[from] crate::fileserver::FileServerError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running master.
pub struct Master {
    state: Arc<MasterState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Create a directory (and parents) with mode 0700.
pub fn private_dir(path: &Path) -> Result<(), MasterError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| MasterError::Io {
            path: path.display().to_string(),
            source,
        })
}

/// The roster snapshot, in the cache directory.
const ROSTER_FILE: &str = "roster.json";

impl Master {
    /// Bind 4505/4506 and the client socket, load keys and the job cache,
    /// and start serving until `shutdown` is cancelled.
    pub async fn start(
        cfg: MasterConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, MasterError> {
        private_dir(&cfg.pki_dir)?;
        private_dir(&cfg.cachedir)?;
        private_dir(&cfg.sock_dir)?;
        let files = crate::fileserver::FileServer::new(&cfg)?;
        let (master_key, created) = KeyPair::load_or_generate(&cfg.pki_dir, "master")?;
        if created {
            info!(pki_dir = %cfg.pki_dir.display(), "generated master key pair");
        }
        let master_key = Arc::new(master_key);
        let keys = KeyStore::open(&cfg.pki_dir, cfg.auto_accept, cfg.autosign_file.as_deref())?;
        let jobs = JobCache::open_with(
            &cfg.cachedir,
            JobCacheOptions {
                keep_jobs_hours: cfg.keep_jobs,
                outbox_max: cfg.syndic_spool_max,
            },
        )?;
        let ctx = zmq::Context::new();
        let publisher = Publisher::bind(
            &ctx,
            &cfg.interface.to_string(),
            cfg.publish_port,
            cfg.pub_hwm,
            cfg.zmq_backlog,
            master_key.clone(),
            &cfg.id,
        )?;
        let bound = request_server::bind(&ctx, &cfg)?;
        let roster = Roster::new(Duration::from_secs(cfg.heartbeat_interval.max(1)));
        restore_roster(&roster, &cfg.cachedir.join(ROSTER_FILE));
        let state = Arc::new(MasterState::new(Parts {
            keys,
            master_key,
            roster,
            jobs,
            publisher,
            ret_port: bound.port,
            request_peers_dropped: bound.peers_dropped.clone(),
            key_id: (now_us() / 1_000_000) as u32,
            files,
            cfg,
        }));
        if let Some(seen) = crate::events::key_states(state.keys()) {
            state.events().keys_seen(seen);
        }
        info!(
            id = %state.cfg().id,
            publish_port = state.publisher().port,
            ret_port = state.ret_port(),
            "master listening"
        );
        // A syndic serves its own endpoint (ready = signed in above).
        let bind = match state.cfg().is_syndic() {
            true => None,
            false => state.cfg().metrics_bind.clone(),
        };
        let metrics_task = brine_common::metrics::start_if_configured(
            bind.as_deref(),
            || crate::metrics::registry(&state),
            crate::metrics::ready(&state),
            &shutdown,
        )
        .await
        .map_err(|source| MasterError::Io {
            path: "metrics endpoint".into(),
            source,
        })?;
        let mut tasks = request_server::spawn(state.clone(), bound, shutdown.clone());
        tasks.extend(metrics_task);
        tasks.push(tokio::spawn(housekeeping(state.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(crate::client_server::serve(
            state.clone(),
            shutdown.clone(),
        )));
        tasks.extend(crate::reactor::spawn(&state, &shutdown));
        tasks.push(tokio::spawn(ask_to_sign_in_again(
            state.clone(),
            shutdown.clone(),
        )));
        Ok(Self { state, tasks })
    }

    /// The state the master's tasks share (the syndic forwards from it).
    pub fn state(&self) -> &Arc<MasterState> {
        &self.state
    }

    /// Wait until every task has stopped (after the token is cancelled),
    /// then flush the job cache.
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        save_roster(&self.state);
        if let Err(e) = self.state.jobs().flush() {
            warn!(error = %e, "job cache flush at shutdown failed");
        }
    }
}

/// A restarted master has new keys: tell whoever still listens to sign in
/// again now rather than at its next heartbeat. Sent a few times because
/// subscribers reconnect at their own pace.
async fn ask_to_sign_in_again(state: Arc<MasterState>, shutdown: CancellationToken) {
    for delay in [200u64, 1000, 3000] {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
        }
        let key_id = state.publish_key().id;
        if let Err(e) = state.publisher().reauth_all(key_id) {
            warn!(error = %e, "could not publish re-auth request");
        }
    }
}

/// Load the roster snapshot, if there is a readable one.
fn restore_roster(roster: &Roster, snapshot: &Path) {
    if let Ok(text) = std::fs::read_to_string(snapshot) {
        match serde_json::from_str(&text) {
            Ok(snap) => roster.restore(snap),
            Err(e) => {
                warn!(file = %snapshot.display(), error = %e, "roster snapshot unreadable; starting empty")
            }
        }
    }
}

/// Write the roster snapshot (via a temporary file and a rename).
fn save_roster(state: &MasterState) {
    let dir = &state.cfg().cachedir;
    let path = dir.join(ROSTER_FILE);
    let tmp = dir.join("roster.json.tmp");
    match serde_json::to_vec(&state.roster().snapshot()) {
        Ok(bytes) => {
            if let Err(e) = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &path)) {
                warn!(file = %path.display(), error = %e, "could not save roster");
            }
        }
        Err(e) => warn!(error = %e, "could not encode roster"),
    }
}

/// Presence sweeps, roster snapshots, counters in the log, and Salt's
/// presence events every `loop_interval` seconds when `presence_events`.
async fn housekeeping(state: Arc<MasterState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    let mut last_version = 0;
    let mut last_present = None;
    let loop_interval = state.cfg().loop_interval.max(1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        let roster = state.roster();
        roster.sweep();
        for (m, to, from) in roster.retry_claims(|m| state.keys().is_accepted(m)) {
            info!(minion = %m, syndic = %to, before = ?from, "claim refused earlier granted: its owner is gone");
        }
        state.forget_closed_watchers();
        if state.cfg().presence_events && n.is_multiple_of(loop_interval) {
            let present = roster
                .presence()
                .into_iter()
                .filter(|m| m.connected)
                .map(|m| m.id)
                .collect();
            crate::events::presence(state.events(), &mut last_present, present);
        }
        if n.is_multiple_of(10) {
            let v = roster.version();
            if v != last_version {
                save_roster(&state);
                last_version = v;
            }
        }
        if n.is_multiple_of(300) {
            debug!(counters = ?serde_json::to_string(state.counters()).ok(), "master counters");
        }
    }
}

/// A master config for tests: loopback, any free ports, every path under
/// `d`.
#[cfg(test)]
pub(crate) fn test_config(d: &std::path::Path) -> brine_common::config::MasterConfig {
    brine_common::config::MasterConfig {
        interface: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        publish_port: 0,
        ret_port: 0,
        pki_dir: d.join("pki"),
        cachedir: d.join("cache"),
        sock_dir: d.join("sock"),
        root_dir: d.to_path_buf(),
        log_file: d.join("master.log"),
        file_roots: [("base".to_string(), vec![d.join("srv")])].into(),
        pillar_roots: [("base".to_string(), vec![d.join("pillar")])].into(),
        ..brine_common::config::MasterConfig::default()
    }
}
