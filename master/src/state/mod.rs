//! What a master's tasks share: config, keys, roster, job cache, publisher,
//! sessions, the publish key, the jobs it sent and the return watchers.
//!
//! Fields are private; the other modules (and the syndic, which embeds a
//! master) go through a narrow API: accessors for the long-lived parts,
//! [`returns`] for accepting returns and watching them, [`publish`] for
//! sending jobs and rotating the publish key. Every lock here is held only
//! for a map operation, never across an await or I/O.

pub mod publish;
pub mod returns;

use crate::job_cache::JobCache;
use crate::keys::KeyStore;
use crate::published::Published as PublishedJobs;
use crate::publisher::{PublishError, Publisher};
use crate::roster::Roster;
use crate::sessions::Sessions;
use brine_common::config::MasterConfig;
use brine_common::crypto::{AesKey, KeyPair};
use brine_common::jid::JidGen;
use brine_common::target;
use returns::{Dedup, Watchers};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use returns::{JobEvent, JobReturns, WatchQueue, WATCH_BYTES};

/// Counters of everything that went wrong on the wire (never silent).
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    pub malformed_frames: AtomicU64,
    pub auth_requests: AtomicU64,
    pub auth_refused: AtomicU64,
    pub auth_dropped: AtomicU64,
    /// First rounds of sign-ins answered with a challenge.
    pub auth_challenges: AtomicU64,
    /// Sign-ins whose signature does not verify against the key they
    /// present (someone using another's public key).
    pub auth_bad_proof: AtomicU64,
    /// Sign-ins bringing back a challenge already used (replays).
    pub auth_replayed: AtomicU64,
    pub unknown_session: AtomicU64,
    pub bad_seal: AtomicU64,
    pub replays: AtomicU64,
    pub forged_returns: AtomicU64,
    pub syndic_refused: AtomicU64,
    /// Ids a syndic's roster report named that belong to someone else.
    pub roster_claims_refused: AtomicU64,
    /// Job publishes sent again to peers that asked after a new sign-in.
    pub catchup_publishes: AtomicU64,
    pub returns: AtomicU64,
    pub duplicate_returns: AtomicU64,
    /// Returns for a jid this master never published or relayed.
    pub returns_unknown_job: AtomicU64,
    /// Returns from a minion the job's target does not reach.
    pub returns_not_targeted: AtomicU64,
    /// Returns over `max_return_bytes`, stored as an error return.
    pub returns_too_large: AtomicU64,
    pub jobs_published: AtomicU64,
    /// Returns the job cache could not store (a full disk): not
    /// acknowledged, so their senders resend them; `salt` is told.
    pub returns_not_stored: AtomicU64,
    /// Returns a `salt` client that stopped reading was not sent live (its
    /// queue was over [`WATCH_BYTES`]); it reads them from the job cache
    /// once it catches up.
    pub watch_returns_deferred: AtomicU64,
    /// Jobs a syndic sent up (`syndic_forward_all`) and this master recorded.
    pub jobs_from_below: AtomicU64,
    /// File server and pillar questions refused because too many were
    /// waiting (the asker asks again).
    pub queries_busy: AtomicU64,
    /// Hostile or impossible file server paths refused (`..`, absolute,
    /// out of a root by a symlink, a push outside its directory).
    pub file_paths_refused: AtomicU64,
    /// File chunk bytes this master sent on its request port.
    pub file_bytes_served: AtomicU64,
    /// Pillar requests refused (another subtree's minion, a role that may
    /// not ask).
    pub pillar_refused: AtomicU64,
    /// Reactions the reactor ran (jobs published, runners, wheel calls).
    pub reactor_jobs: AtomicU64,
    /// Reactor files that did not render or parse, reactions that failed.
    pub reactor_errors: AtomicU64,
    /// Reactions dropped because `reactor_worker_hwm` were waiting.
    pub reactor_dropped: AtomicU64,
}

/// A syndic's way to ask the master above (file server and pillar
/// questions it cannot answer itself). Installed once with
/// [`MasterState::set_upstream`].
pub trait Upstream: Send + Sync {
    /// Ask the master above; `Err` says why there is no answer.
    fn ask(
        &self,
        body: brine_common::proto::RequestBody,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<brine_common::proto::ReplyBody, String>>
                + Send
                + '_,
        >,
    >;
}

/// Add one to a counter; the new count (callers log at powers of two).
pub(crate) fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed) + 1
}

/// Why a job could not be published (or its target resolved).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Target(#[from] target::TargetError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("publish task failed: {0}")]
    Task(String),
}

/// The shared AES key every publish is sealed under, and its id (peers
/// learn which key a publish needs from the id).
#[derive(Clone)]
pub(crate) struct PublishKey {
    pub(crate) id: u32,
    pub(crate) key: AesKey,
}

/// Everything the master's tasks share.
pub struct MasterState {
    cfg: MasterConfig,
    keys: KeyStore,
    master_key: Arc<KeyPair>,
    roster: Roster,
    jobs: JobCache,
    counters: Counters,
    publisher: Publisher,
    /// The request port as bound (the config may say 0).
    ret_port: u16,
    sessions: Sessions,
    publish_key: RwLock<PublishKey>,
    watchers: Mutex<Watchers>,
    seen: Mutex<Dedup>,
    jidgen: JidGen,
    /// Jobs sent out by this master: which returns it admits.
    sent: PublishedJobs,
    /// Connections to 4506 closed for holding more than one unfinished
    /// frame (`brine_common::unfinished`); made before the request
    /// server's io thread, which counts into it, hence not in `counters`.
    request_peers_dropped: Arc<AtomicU64>,
    /// A syndic's master above (file server and pillar questions).
    upstream: std::sync::OnceLock<Arc<dyn Upstream>>,
    /// The file server (`file_roots`, a syndic's cache, `cp.push`).
    files: crate::fileserver::FileServer,
    /// The event bus (`salt-run state.event`).
    events: crate::events::EventBus,
    /// The metric values not read from the fields above (`crate::metrics`).
    metrics: crate::metrics::MasterMetrics,
}

/// The long-lived parts a [`MasterState`] is made of.
pub(crate) struct Parts {
    pub(crate) cfg: MasterConfig,
    pub(crate) keys: KeyStore,
    pub(crate) master_key: Arc<KeyPair>,
    pub(crate) roster: Roster,
    pub(crate) jobs: JobCache,
    pub(crate) publisher: Publisher,
    pub(crate) ret_port: u16,
    pub(crate) request_peers_dropped: Arc<AtomicU64>,
    /// Id of the first publish key (distinct across restarts).
    pub(crate) key_id: u32,
    /// Built from `cfg` by `Master::start` (building can fail).
    pub(crate) files: crate::fileserver::FileServer,
}

impl MasterState {
    pub(crate) fn new(p: Parts) -> Self {
        Self {
            cfg: p.cfg,
            keys: p.keys,
            master_key: p.master_key,
            roster: p.roster,
            jobs: p.jobs,
            counters: Counters::default(),
            publisher: p.publisher,
            ret_port: p.ret_port,
            sessions: Sessions::default(),
            publish_key: RwLock::new(PublishKey {
                id: p.key_id,
                key: AesKey::random(),
            }),
            watchers: Mutex::new(Watchers::default()),
            seen: Mutex::new(Dedup::default()),
            jidgen: JidGen::new(),
            sent: PublishedJobs::default(),
            request_peers_dropped: p.request_peers_dropped,
            upstream: std::sync::OnceLock::new(),
            files: p.files,
            events: crate::events::EventBus::default(),
            metrics: crate::metrics::MasterMetrics::default(),
        }
    }

    /// The event bus.
    pub fn events(&self) -> &crate::events::EventBus {
        &self.events
    }

    /// The metric values kept for the metrics endpoint (return latency).
    pub fn metrics(&self) -> &crate::metrics::MasterMetrics {
        &self.metrics
    }

    /// A fresh jid (runner calls are jobs too, for their events).
    pub(crate) fn next_jid(&self) -> brine_common::jid::Jid {
        self.jidgen.next()
    }

    /// The master's config (as loaded and validated).
    pub fn cfg(&self) -> &MasterConfig {
        &self.cfg
    }

    /// The job cache.
    pub fn jobs(&self) -> &JobCache {
        &self.jobs
    }

    /// Every reachable minion, its grains and presence.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Minion key states on disk.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// What went wrong on the wire, counted.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The PUB socket (4505).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The request port as bound.
    pub fn ret_port(&self) -> u16 {
        self.ret_port
    }

    /// Connections to the request port closed by its unfinished-message
    /// guard (`manage.stats`).
    pub fn request_peers_dropped(&self) -> u64 {
        self.request_peers_dropped.load(Ordering::Relaxed)
    }

    /// Install the master above (a syndic does, once, after its link
    /// starts); later calls are ignored.
    pub fn set_upstream(&self, up: Arc<dyn Upstream>) {
        let _ = self.upstream.set(up);
    }

    /// The master above, on a syndic.
    pub fn upstream(&self) -> Option<&Arc<dyn Upstream>> {
        self.upstream.get()
    }

    /// The file server.
    pub(crate) fn files(&self) -> &crate::fileserver::FileServer {
        &self.files
    }

    /// The master's own key pair (signs publishes and sign-in answers).
    pub(crate) fn master_key(&self) -> &KeyPair {
        &self.master_key
    }

    /// The signed-in peers.
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The current publish key.
    pub(crate) fn publish_key(&self) -> PublishKey {
        self.publish_key
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}
