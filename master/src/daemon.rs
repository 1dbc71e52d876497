//! The master daemon: wires the publisher (4505), the request server
//! (4506), the key store, the roster, the job cache and the local client
//! socket together, and owns the state they share.
//!
//! [`Master::start`] binds everything and returns a handle; the syndic
//! embeds a master this way, tests start one on `127.0.0.1:0`. One
//! cancellation token stops it all.

use crate::challenge::{Challenges, Check};
use crate::job_cache::{JobCache, JobCacheOptions};
use crate::keys::{KeyStore, SignIn};
use crate::published::{self, ForwardUp, JobScope, NotAdmitted, Published as PublishedJobs};
use crate::publisher::{PublishError, Publisher};
use crate::roster::{Expected, Roster};
use brine_common::codec;
use brine_common::config::MasterConfig;
use brine_common::crypto::{self, AesKey, KeyPair, PublicKey};
use brine_common::jid::JidGen;
use brine_common::proto::*;
use brine_common::target::{self, TargetType};
use brine_common::transport::{self, IoThread};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
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
    Transport(#[from] transport::TransportError),
    #[error("zmq: {0}")]
    Zmq(#[from] zmq::Error),
    #[error("could not bind the request server on {endpoint}: {source}")]
    Bind {
        endpoint: String,
        #[source]
        source: zmq::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

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
}

fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed) + 1
}

/// A signed-in peer.
struct Session {
    key: AesKey,
    last_seq: u64,
    role: Role,
}

/// Who wants to see returns. A job's watchers (`salt` on the client
/// socket) are told a return only once the job cache has stored it, and
/// told when it could not. (A syndic's forwarder reads the job cache's
/// outbox instead.)
#[derive(Default)]
struct Watchers {
    by_jid: HashMap<String, Vec<JobWatcher>>,
}

/// What a job's watcher is told.
#[derive(Debug)]
pub enum JobEvent {
    /// A stored return, charged `bytes` to the watcher's queue
    /// ([`WatchQueue::sent`] gives them back).
    Return { ret: ReturnLoad, bytes: usize },
    /// A return of this job could not be stored (why): the job cache is
    /// failing; its sender was not acknowledged and will resend it.
    CacheFailing(String),
}

/// How far one watcher is behind: bytes of returns queued for it, and the
/// minions whose returns were left in the job cache instead because the
/// queue was over [`WATCH_BYTES`].
#[derive(Debug, Default)]
pub struct WatchQueue {
    queued: std::sync::atomic::AtomicUsize,
    deferred: Mutex<Vec<String>>,
}

impl WatchQueue {
    /// The watcher has written a return of `bytes` out.
    pub fn sent(&self, bytes: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(bytes))
            });
    }

    /// Minions whose returns the watcher must read from the job cache.
    pub fn take_deferred(&self) -> Vec<String> {
        std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The master's side of one job's watcher.
struct JobWatcher {
    tx: mpsc::UnboundedSender<JobEvent>,
    queue: Arc<WatchQueue>,
}

/// One job's returns as a watcher receives them.
pub struct JobReturns {
    pub rx: mpsc::UnboundedReceiver<JobEvent>,
    pub queue: Arc<WatchQueue>,
}

impl JobReturns {
    /// The next stored return, for a consumer that reads them as they come
    /// (the runner): news of failures are skipped, and it is never far
    /// enough behind to have returns deferred to the job cache.
    pub async fn recv(&mut self) -> Option<ReturnLoad> {
        // Each round takes one message off the channel.
        loop {
            match self.rx.recv().await? {
                JobEvent::Return { ret, bytes } => {
                    self.queue.sent(bytes);
                    return Some(ret);
                }
                JobEvent::CacheFailing(_) => {}
            }
        }
    }
}

/// Bytes of returns queued for one job's watcher (a `salt` process) before
/// further returns are left in the job cache for it to read when it
/// catches up. A `salt` that stops reading (a paused terminal) costs the
/// master at most this (plus one return) instead of every return of its
/// job: 2000 minions x 30 kB held ~60 MiB per stalled client.
pub const WATCH_BYTES: usize = 4 << 20;

impl Watchers {
    /// Forgets the watchers of jobs whose `salt` has gone (it got every
    /// return, or timed out, or was interrupted); returns how many. A
    /// watcher is otherwise only noticed gone when a later return of its
    /// job comes, which for a finished job never happens: each finished
    /// job left ~28 KiB behind (its channel), +0.3 MB/s on a top master
    /// running 10 jobs/s.
    fn forget_closed(&mut self) -> usize {
        let before = self.by_jid.len();
        self.by_jid.retain(|_, list| {
            list.retain(|w| !w.tx.is_closed());
            !list.is_empty()
        });
        before - self.by_jid.len()
    }
}

/// Sign-ins waiting for an RSA worker. Beyond this a sign-in is dropped
/// and counted (`auth_dropped`); the peer signs in again after its auth
/// timeout, as a Salt minion does when its master is busy.
const AUTH_QUEUE: usize = 4096;

/// Requests read off 4506 and waiting for the request loop (beyond this
/// the io thread waits and libzmq's per-peer queues fill).
const REQUEST_QUEUE: usize = 4096;

/// Requests queued per peer on the request port. libzmq receives without
/// copying: a queued message keeps its whole 8 KiB read buffer alive, so
/// under overload this costs up to peers x 8 x 8 KiB (measured: 64 pinned
/// ~160 MB at 2000 minions). A peer keeps what is not acknowledged and the
/// rest waits in its own socket and the kernel.
const ROUTER_PEER_HWM: i32 = 8;

/// Replies queued per peer on the request port. A reply that does not fit
/// is dropped (counted) and the peer sends its request again, which costs
/// the whole request's work twice: with 8 here a busy syndic dropped over
/// 65000 acknowledgements a minute and its minions resent 820000 returns.
/// Replies are small (~150 bytes with the pipe slot): 2000 peers x 256
/// is at most ~80 MB, reached only by peers that stop reading.
const ROUTER_REPLY_HWM: i32 = 256;

/// Dedup memory: (jid, minion) pairs kept for the newest jobs. Bounded by
/// pairs, not jobs (a job of 5000 minions costs 5000): about 100 bytes a
/// pair, so at most ~20 MB. Older duplicates still never reach the job
/// cache twice (it keeps the first return) and `salt` ignores them.
const DEDUP_PAIRS: usize = 200_000;

/// Which minions returned, for the newest jobs (jids sort by time). A
/// pair counts as returned only once the job cache has stored it: while
/// its write is under way a copy is written again (so that the copy's
/// acknowledgement also waits for a commit), and a failed write is
/// forgotten, so the sender's resend is stored.
#[derive(Default)]
struct Dedup {
    jobs: BTreeMap<String, HashMap<String, Pair>>,
    pairs: usize,
}

/// Where one (jid, minion) return stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pair {
    /// This many writes of it are queued in the job cache.
    Writing(u32),
    Stored,
}

impl Dedup {
    /// A return arrives: what was known of its pair before (None: new).
    fn begin(&mut self, jid: &str, id: &str) -> Option<Pair> {
        if let Some(p) = self.jobs.get_mut(jid).and_then(|m| m.get_mut(id)) {
            let before = *p;
            if let Pair::Writing(n) = p {
                *n = n.saturating_add(1);
            }
            return Some(before);
        }
        self.jobs
            .entry(jid.to_string())
            .or_default()
            .insert(id.to_string(), Pair::Writing(1));
        self.pairs += 1;
        while self.pairs > DEDUP_PAIRS && self.jobs.len() > 1 {
            if let Some((_, old)) = self.jobs.pop_first() {
                self.pairs -= old.len();
            }
        }
        None
    }

    /// One write of the pair ended; true when it is newly stored.
    fn written(&mut self, jid: &str, id: &str, stored: bool) -> bool {
        let Some(map) = self.jobs.get_mut(jid) else {
            // Evicted meanwhile: a newly stored return is news.
            return stored;
        };
        let Some(p) = map.get_mut(id) else {
            return stored;
        };
        match (*p, stored) {
            (Pair::Stored, _) => false,
            (Pair::Writing(_), true) => {
                *p = Pair::Stored;
                true
            }
            (Pair::Writing(n), false) if n > 1 => {
                *p = Pair::Writing(n - 1);
                false
            }
            (Pair::Writing(_), false) => {
                map.remove(id);
                self.pairs = self.pairs.saturating_sub(1);
                if map.is_empty() {
                    self.jobs.remove(jid);
                }
                false
            }
        }
    }
}

/// What to publish (from the CLI, the runner or a syndic).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PublishRequest {
    pub tgt: String,
    pub tgt_type: TargetType,
    pub fun: String,
    pub arg: Vec<serde_json::Value>,
    pub kwarg: BTreeMap<String, serde_json::Value>,
    pub timeout: u64,
    pub user: String,
    pub delimiter: String,
    /// Stamp every hop (load test).
    pub trace: bool,
}

/// A job as published: its jid and exactly whom it expects.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Published {
    pub jid: String,
    pub minions: Vec<Expected>,
    /// Ids named by a list target that this master does not know.
    pub missing: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Target(#[from] target::TargetError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("publish task failed: {0}")]
    Task(String),
}

/// Everything the master's tasks share.
pub struct MasterState {
    pub cfg: MasterConfig,
    pub keys: KeyStore,
    pub master_key: Arc<KeyPair>,
    pub roster: Roster,
    pub jobs: JobCache,
    pub counters: Counters,
    pub publisher: Publisher,
    pub ret_port: u16,
    router: IoThread,
    sessions: Mutex<HashMap<String, Session>>,
    publish_key: RwLock<(u32, AesKey)>,
    watchers: Mutex<Watchers>,
    seen: Mutex<Dedup>,
    jidgen: JidGen,
    challenges: Challenges,
    /// Jobs sent out by this master: which returns it admits.
    sent: PublishedJobs,
    /// Connections to 4506 closed for holding more than one unfinished
    /// frame (`brine_common::unfinished`); made before the request
    /// server's io thread, which counts into it, hence not in `counters`.
    request_peers_dropped: Arc<AtomicU64>,
}

/// A running master.
pub struct Master {
    pub state: Arc<MasterState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> MasterError + '_ {
    move |source| MasterError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Create a directory (and parents) with mode 0700.
pub fn private_dir(path: &std::path::Path) -> Result<(), MasterError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err(path))
}

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
        let iface = cfg.interface.to_string();
        let publisher = Publisher::bind(
            &ctx,
            &iface,
            cfg.publish_port,
            cfg.pub_hwm,
            cfg.zmq_backlog,
            master_key.clone(),
            &cfg.id,
        )?;
        let router = ctx.socket(zmq::ROUTER)?;
        transport::tune(
            &router,
            cfg.zmq_backlog,
            cfg.pub_hwm,
            transport::Side::Server,
        )?;
        // Per-peer request queues on the request port are short: a peer
        // keeps whatever is not acknowledged and sends it again, so under
        // overload memory stays bounded (peers × ROUTER_PEER_HWM) instead of
        // peers × pub_hwm, and the back-pressure reaches the peers. Replies
        // get room so that they are not dropped under load.
        router.set_rcvhwm(ROUTER_PEER_HWM)?;
        router.set_sndhwm(ROUTER_REPLY_HWM)?;
        router.set_router_mandatory(true)?;
        router.set_maxmsgsize(cfg.max_frame_bytes as i64)?;
        let endpoint = transport::tcp_endpoint(&iface, cfg.ret_port);
        router.bind(&endpoint).map_err(|source| MasterError::Bind {
            endpoint: endpoint.clone(),
            source,
        })?;
        let ret_port = transport::bound_port(&router).unwrap_or(cfg.ret_port);
        let request_peers_dropped = Arc::new(AtomicU64::new(0));
        let (router, rx) = IoThread::spawn_guarded(
            &ctx,
            "request-server",
            vec![router],
            &[],
            REQUEST_QUEUE,
            Some(brine_common::unfinished::guarded(
                0,
                cfg.max_frame_bytes,
                request_peers_dropped.clone(),
            )?),
        )?;
        let key_id = (now_us() / 1_000_000) as u32;
        let roster = Roster::new(Duration::from_secs(cfg.heartbeat_interval.max(1)));
        let snapshot = cfg.cachedir.join("roster.json");
        if let Ok(text) = std::fs::read_to_string(&snapshot) {
            match serde_json::from_str(&text) {
                Ok(snap) => roster.restore(snap),
                Err(e) => {
                    warn!(file = %snapshot.display(), error = %e, "roster snapshot unreadable; starting empty")
                }
            }
        }
        let state = Arc::new(MasterState {
            keys,
            master_key,
            roster,
            jobs,
            counters: Counters::default(),
            publisher,
            ret_port,
            router,
            sessions: Mutex::new(HashMap::new()),
            publish_key: RwLock::new((key_id, AesKey::random())),
            watchers: Mutex::new(Watchers::default()),
            seen: Mutex::new(Dedup::default()),
            jidgen: JidGen::new(),
            challenges: Challenges::new(),
            sent: PublishedJobs::default(),
            request_peers_dropped,
            cfg,
        });
        info!(
            id = %state.cfg.id,
            publish_port = state.publisher.port,
            ret_port,
            "master listening"
        );
        let mut tasks = Vec::new();
        let (auth_tx, auth_rx) = mpsc::channel(AUTH_QUEUE);
        tasks.push(tokio::spawn(auth_workers(state.clone(), auth_rx)));
        tasks.push(tokio::spawn(request_loop(
            state.clone(),
            rx,
            auth_tx,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(housekeeping(state.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(crate::client_api::serve(
            state.clone(),
            shutdown.clone(),
        )));
        // A restarted master has new keys: tell whoever still listens to
        // sign in again now rather than at its next heartbeat. Sent a few
        // times because subscribers reconnect at their own pace.
        let st = state.clone();
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            for delay in [200u64, 1000, 3000] {
                tokio::select! {
                    _ = sd.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
                }
                let key_id = st
                    .publish_key
                    .read()
                    .map(|g| g.0)
                    .unwrap_or_else(|e| e.into_inner().0);
                if let Err(e) = st.publisher.reauth_all(key_id) {
                    warn!(error = %e, "could not publish re-auth request");
                }
            }
        }));
        Ok(Self { state, tasks })
    }

    /// Wait until every task has stopped (after the token is cancelled),
    /// then flush the job cache.
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        self.state.save_roster();
        if let Err(e) = self.state.jobs.flush() {
            warn!(error = %e, "job cache flush at shutdown failed");
        }
    }
}

impl MasterState {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connected peers' ids and roles.
    pub fn session_ids(&self) -> Vec<(String, Role)> {
        self.sessions()
            .iter()
            .map(|(k, s)| (k.clone(), s.role))
            .collect()
    }

    /// The exact expected set of a target, and the ids a list target names
    /// that this master does not know.
    pub fn expected(
        &self,
        tgt: &str,
        tgt_type: TargetType,
        delimiter: &str,
    ) -> Result<(Vec<Expected>, Vec<String>), JobError> {
        let t = target::parse_with_delimiter(tgt, tgt_type, &self.cfg.nodegroups, delimiter)?;
        let minions = self.roster.expected(&t, delimiter);
        let known: HashSet<&str> = minions.iter().map(|m| m.id.as_str()).collect();
        let missing: Vec<String> = t
            .listed_ids()
            .unwrap_or_default()
            .into_iter()
            .filter(|id| !known.contains(id.as_str()))
            .collect();
        Ok((minions, missing))
    }

    /// Compute the expected set of a target, assign a jid, store and
    /// publish the job. `watch` registers a return watcher before the
    /// publish goes out, so no early return is missed.
    pub fn publish(
        &self,
        req: &PublishRequest,
        watch: bool,
    ) -> Result<(Published, Option<JobReturns>), JobError> {
        let (minions, missing) = self.expected(&req.tgt, req.tgt_type, &req.delimiter)?;
        let jid = self.jidgen.next();
        // Minions do not know the nodegroups: send them the expansion.
        let (tgt_pub, type_pub) = expand_nodegroups(&req.tgt, req.tgt_type, &self.cfg.nodegroups);
        let job = JobLoad {
            jid: jid.clone(),
            tgt: tgt_pub,
            tgt_type: type_pub,
            fun: req.fun.clone(),
            arg: req.arg.clone(),
            kwarg: req.kwarg.clone(),
            user: req.user.clone(),
            timeout: req.timeout,
            delimiter: req.delimiter.clone(),
            path: vec![self.cfg.id.clone()],
            trace: req.trace.then(|| {
                vec![Stamp {
                    who: self.cfg.id.clone(),
                    what: "pub".into(),
                    us: now_us(),
                }]
            }),
        };
        let rx = watch.then(|| self.watch_job(&jid));
        let ids: Vec<String> = minions.iter().map(|m| m.id.clone()).collect();
        self.remember_sent(&job, false);
        self.jobs.record_job(&job, &ids);
        if !minions.is_empty() {
            self.send_job(&job, &minions)?;
        }
        Ok((
            Published {
                jid,
                minions,
                missing,
            },
            rx,
        ))
    }

    /// [`MasterState::publish`] on a blocking thread, for async callers: it
    /// signs the job (RSA, ~2 ms) and may wait for room in the job cache.
    pub async fn publish_async(
        self: &Arc<Self>,
        req: PublishRequest,
        watch: bool,
    ) -> Result<(Published, Option<JobReturns>), JobError> {
        let st = self.clone();
        tokio::task::spawn_blocking(move || st.publish(&req, watch))
            .await
            .map_err(|e| JobError::Task(e.to_string()))?
    }

    /// [`MasterState::relay`] on a blocking thread, for async callers.
    pub async fn relay_async(self: &Arc<Self>, job: JobLoad) -> Result<Vec<Expected>, JobError> {
        let st = self.clone();
        tokio::task::spawn_blocking(move || st.relay(job))
            .await
            .map_err(|e| JobError::Task(e.to_string()))?
    }

    /// Re-publish a job that came from above (syndic), with the same jid.
    /// Returns the expected set below this master.
    pub fn relay(&self, mut job: JobLoad) -> Result<Vec<Expected>, JobError> {
        let tgt = target::parse_with_delimiter(
            &job.tgt,
            job.tgt_type,
            &self.cfg.nodegroups,
            &job.delimiter,
        )?;
        let minions = self.roster.expected(&tgt, &job.delimiter);
        job.path.push(self.cfg.id.clone());
        if let Some(t) = job.trace.as_mut() {
            t.push(Stamp {
                who: self.cfg.id.clone(),
                what: "relay".into(),
                us: now_us(),
            });
        }
        let ids: Vec<String> = minions.iter().map(|m| m.id.clone()).collect();
        self.remember_sent(&job, true);
        self.jobs.record_job(&job, &ids);
        self.send_job(&job, &minions)?;
        Ok(minions)
    }

    /// Connections to the request port closed by its unfinished-message
    /// guard (`manage.stats`).
    pub fn request_peers_dropped(&self) -> u64 {
        self.request_peers_dropped.load(Ordering::Relaxed)
    }

    /// `from_above`: a job this syndic relays down (its returns go up).
    fn remember_sent(&self, job: &JobLoad, from_above: bool) {
        match JobScope::of(job, &self.cfg.nodegroups) {
            Ok(scope) if from_above => self.sent.insert(&job.jid, scope.relayed()),
            Ok(scope) => self.sent.insert(&job.jid, scope),
            // Parsed already before it was published; cannot happen.
            Err(e) => {
                warn!(jid = %job.jid, error = %e, "job target does not parse; its returns will be refused")
            }
        }
    }

    /// The scope of a stored job: a load whose path does not name this
    /// master came up from the syndic at the end of its path (see
    /// [`MasterState::job_from_below`]); one that names it after another
    /// master came down from above (relayed).
    fn stored_scope(&self, load: &JobLoad) -> Option<JobScope> {
        let scope = JobScope::of(load, &self.cfg.nodegroups).ok()?;
        if load.path.contains(&self.cfg.id) {
            if load.path.first() != Some(&self.cfg.id) {
                Some(scope.relayed())
            } else {
                Some(scope)
            }
        } else {
            load.path.last().map(|s| scope.from_below(s))
        }
    }

    /// Record a job that syndic `syndic` published itself (or got from
    /// below) and sends up with `syndic_forward_all`: stored under its own
    /// jid with the syndic appended to its path, expecting the minions of
    /// that syndic's subtree the target reaches, and admitting returns
    /// from that subtree only. Never re-published. A jid this master
    /// already knows from elsewhere, a load whose path names this master
    /// (a loop) or a sender that is not a syndic is refused.
    fn job_from_below(&self, syndic: &str, role: Role, mut load: JobLoad) -> ReplyBody {
        let jid = load.jid.clone();
        let refuse = |why: String| {
            let n = bump(&self.counters.syndic_refused);
            if n.is_power_of_two() {
                warn!(syndic = %syndic.escape_debug(), jid = %jid.escape_debug(), count = n, reason = %why, "job sent up from below refused");
            }
            ReplyBody::Refused(why)
        };
        if role != Role::Syndic {
            return refuse("not a syndic".into());
        }
        if !brine_common::jid::is_jid(&load.jid) {
            return refuse("not a jid".into());
        }
        if load.path.contains(&self.cfg.id) {
            return refuse(format!("the job already came through {}", self.cfg.id));
        }
        if load.path.last().map(String::as_str) != Some(syndic) {
            load.path.push(syndic.to_string());
        }
        let known = self.sent.get(&load.jid).or_else(|| {
            let stored = self.jobs.job_load(&load.jid).ok()??;
            self.stored_scope(&stored).map(std::sync::Arc::new)
        });
        if let Some(k) = known {
            // A resend of the same job is fine; anything else under that
            // jid is somebody else's job.
            return if k.origin() == Some(syndic) {
                ReplyBody::Ok
            } else {
                refuse(format!("jid {} is already in use here", load.jid))
            };
        }
        let scope = match JobScope::of(&load, &self.cfg.nodegroups) {
            Ok(s) => s.from_below(syndic),
            Err(e) => return refuse(format!("target does not parse: {e}")),
        };
        let target = match target::parse_with_delimiter(
            &load.tgt,
            load.tgt_type,
            &self.cfg.nodegroups,
            &load.delimiter,
        ) {
            Ok(t) => t,
            Err(e) => return refuse(format!("target does not parse: {e}")),
        };
        let ids: Vec<String> = self
            .roster
            .expected(&target, &load.delimiter)
            .into_iter()
            .filter(|m| m.via.first().map(String::as_str) == Some(syndic))
            .map(|m| m.id)
            .collect();
        self.sent.insert(&load.jid, scope);
        self.jobs.record_job(&load, &ids);
        bump(&self.counters.jobs_from_below);
        debug!(jid = %load.jid, syndic = %syndic, minions = ids.len(), "job sent up from a syndic recorded");
        ReplyBody::Ok
    }

    /// Whether a return belongs to a job this master sent out (or a
    /// syndic sent up, then only from that syndic's subtree) and to a
    /// minion that job reaches (see [`crate::published`]). Counted when
    /// not.
    fn admit_return(&self, ret: &ReturnLoad) -> Result<(), NotAdmitted> {
        let scope = self.sent.get(&ret.jid).or_else(|| {
            // An older job, or one from before a restart: ask the job
            // cache (a SQLite point read, only on this rare path).
            if !brine_common::jid::is_jid(&ret.jid) {
                return None;
            }
            let load = self.jobs.job_load(&ret.jid).ok()??;
            let scope = self.stored_scope(&load)?;
            self.sent.insert(&ret.jid, scope);
            self.sent.get(&ret.jid)
        });
        let verdict = published::admit(
            scope.as_deref(),
            |s| self.roster.reached_by(&ret.id, s),
            || {
                // A job from below admits only its own subtree, whatever
                // the job cache says.
                scope.as_ref().is_some_and(|s| s.origin().is_none())
                    && self.jobs.is_expected(&ret.jid, &ret.id).unwrap_or(false)
            },
        );
        if let Err(why) = &verdict {
            let (counter, text) = match why {
                NotAdmitted::UnknownJob => (
                    &self.counters.returns_unknown_job,
                    "return for a job this master never sent refused",
                ),
                NotAdmitted::NotTargeted => (
                    &self.counters.returns_not_targeted,
                    "return from a minion the job does not target refused",
                ),
            };
            let n = bump(counter);
            if n.is_power_of_two() {
                warn!(jid = %ret.jid.escape_debug(), minion = %ret.id.escape_debug(), count = n, "{text}");
            }
        }
        verdict
    }

    /// A return over `max_return_bytes` (`size`, as it came on the wire)
    /// is kept as an error return that says so: the job shows why, and
    /// the stored bytes stay bounded.
    fn cap_return(&self, ret: &mut ReturnLoad, size: usize) {
        let max = self.cfg.max_return_bytes;
        if size <= max {
            return;
        }
        let n = bump(&self.counters.returns_too_large);
        if n.is_power_of_two() {
            warn!(jid = %ret.jid, minion = %ret.id, bytes = size, max, count = n, "return over max_return_bytes replaced by an error");
        }
        ret.ret = serde_json::Value::String(format!(
            "The return of {} bytes was refused by master {}: it is larger than max_return_bytes ({max})",
            size, self.cfg.id
        ));
        ret.retcode = 1;
        ret.success = false;
        ret.out = None;
    }

    /// Publish to the broadcast topic if a direct minion may match, and to
    /// each syndic whose subtree may match (or whose subtree is unknown).
    fn send_job(&self, job: &JobLoad, minions: &[Expected]) -> Result<(), PublishError> {
        let mut topics: Vec<Vec<u8>> = Vec::new();
        let mut syndics: HashSet<String> = self.roster.unknown_syndics().into_iter().collect();
        let mut direct = false;
        for m in minions {
            match m.via.first() {
                None => direct = true,
                Some(s) => {
                    syndics.insert(s.clone());
                }
            }
        }
        if direct {
            topics.push(TOPIC_BROADCAST.to_vec());
        }
        for s in syndics {
            // Never send a job back to a master it came through.
            if !job.path.contains(&s) {
                topics.push(topic_for(&s));
            }
        }
        let (key_id, key) = self
            .publish_key
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        self.publisher.publish_job(job, key_id, &key, &topics)?;
        bump(&self.counters.jobs_published);
        debug!(jid = %job.jid, topics = topics.len(), minions = minions.len(), "job published");
        Ok(())
    }

    /// Returns of one job, once stored (deduplicated), and news of
    /// returns the job cache could not store. At most [`WATCH_BYTES`] wait
    /// in the receiver; beyond that the watcher is given the minions' ids
    /// to read from the job cache ([`WatchQueue::take_deferred`]).
    pub fn watch_job(&self, jid: &str) -> JobReturns {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(WatchQueue::default());
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_jid
            .entry(jid.to_string())
            .or_default()
            .push(JobWatcher {
                tx,
                queue: queue.clone(),
            });
        JobReturns { rx, queue }
    }

    /// Accept a return (after authentication): dedup, store, tell watchers.
    /// Returns false for a duplicate.
    ///
    /// The job's watchers are told once the job cache has stored it
    /// ([`MasterState::return_written`]). On a syndic, a return of a job
    /// that goes up ([`ForwardUp::of`]) is queued in the job cache's
    /// outbox in the same transaction, so its acknowledgement also means
    /// "on its way up". A copy that comes while the first is still being
    /// written is written again (the job cache keeps one), so that
    /// whatever acknowledges the copy waits for a commit too.
    pub fn accept_return(self: &Arc<Self>, mut ret: ReturnLoad) -> bool {
        let up = self
            .sent
            .get(&ret.jid)
            .map_or(ForwardUp::Stay, |scope| ForwardUp::of(&self.cfg, &scope));
        let before = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .begin(&ret.jid, &ret.id);
        match before {
            Some(Pair::Stored) => {
                bump(&self.counters.duplicate_returns);
                return false;
            }
            Some(Pair::Writing(_)) => {
                bump(&self.counters.duplicate_returns);
                let st = self.clone();
                let (jid, id) = (ret.jid.clone(), ret.id.clone());
                self.jobs.record_return_up_then(
                    &ret,
                    up,
                    Box::new(move |w| st.return_written(&jid, &id, None, w)),
                );
                return false;
            }
            None => {}
        }
        bump(&self.counters.returns);
        if let Some(t) = ret.trace.as_mut() {
            t.push(Stamp {
                who: self.cfg.id.clone(),
                what: "ret".into(),
                us: now_us(),
            });
        }
        let watched = self
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_jid
            .contains_key(&ret.jid);
        let st = self.clone();
        let (jid, id) = (ret.jid.clone(), ret.id.clone());
        // Kept for the job's watchers only when it has some.
        let copy = watched.then(|| ret.clone());
        self.jobs.record_return_up_then(
            &ret,
            up,
            Box::new(move |w| st.return_written(&jid, &id, copy, w)),
        );
        true
    }

    /// The job cache's answer for one return (on its writer thread):
    /// promote or forget the pair in the dedup memory, then tell the job's
    /// watchers the stored return, or that the job cache is failing.
    fn return_written(
        &self,
        jid: &str,
        id: &str,
        ret: Option<ReturnLoad>,
        w: crate::job_cache::ReturnWritten,
    ) {
        let newly = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .written(jid, id, w.stored);
        if !w.stored {
            let n = bump(&self.counters.returns_not_stored);
            if n.is_power_of_two() {
                warn!(jid = %jid, minion = %id, count = n, "return not stored (job cache failing); not acknowledged, the sender will resend it");
            }
        }
        let mut g = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = g.by_jid.get_mut(jid) else {
            return;
        };
        if w.stored {
            if !newly {
                return;
            }
            // A copy written after the first failed has no return with it:
            // read it back for the watchers (rare: after a failure).
            let ret = match ret {
                Some(r) => r,
                None => match self.jobs.get_return(jid, id) {
                    Ok(Some(r)) => r,
                    _ => return,
                },
            };
            list.retain(|watcher| {
                let q = &watcher.queue;
                let queued = q.queued.load(Ordering::Relaxed);
                if queued > 0 && queued.saturating_add(w.bytes) > WATCH_BYTES {
                    q.deferred
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(id.to_string());
                    let n = bump(&self.counters.watch_returns_deferred);
                    if n.is_power_of_two() {
                        info!(jid = %jid, minion = %id, queued_bytes = queued, max = WATCH_BYTES, count = n, "salt client is not reading: return left in the job cache for it");
                    }
                    return !watcher.tx.is_closed();
                }
                q.queued.fetch_add(w.bytes, Ordering::Relaxed);
                watcher
                    .tx
                    .send(JobEvent::Return {
                        ret: ret.clone(),
                        bytes: w.bytes,
                    })
                    .is_ok()
            });
        } else {
            let why = format!(
                "the job cache of master {} could not store the return of {id}",
                self.cfg.id
            );
            list.retain(|watcher| watcher.tx.send(JobEvent::CacheFailing(why.clone())).is_ok());
        }
        if list.is_empty() {
            g.by_jid.remove(jid);
        }
    }

    /// New publish key, handed at once to every signed-in peer but the ones
    /// in `revoked` (whose sessions are dropped): a deleted or rejected
    /// minion cannot read anything published from now on.
    pub fn rotate_publish_key(&self, revoked: &[String]) {
        let (key_id, key) = {
            let mut g = self.publish_key.write().unwrap_or_else(|e| e.into_inner());
            g.0 = g.0.wrapping_add(1);
            g.1 = AesKey::random();
            g.clone()
        };
        let peers: Vec<(String, AesKey)> = {
            let mut s = self.sessions();
            for id in revoked {
                s.remove(id);
            }
            s.iter().map(|(k, v)| (k.clone(), v.key.clone())).collect()
        };
        for id in revoked {
            self.roster.remove(id);
        }
        for (id, session) in &peers {
            if let Err(e) = self.publisher.key_update(id, session, key_id, &key) {
                warn!(id = %id, error = %e, "could not send key update");
            }
        }
        info!(
            key_id,
            peers = peers.len(),
            revoked = revoked.len(),
            "publish key rotated"
        );
    }

    pub fn save_roster(&self) {
        let path = self.cfg.cachedir.join("roster.json");
        let tmp = self.cfg.cachedir.join("roster.json.tmp");
        match serde_json::to_vec(&self.roster.snapshot()) {
            Ok(bytes) => {
                if let Err(e) =
                    std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &path))
                {
                    warn!(file = %path.display(), error = %e, "could not save roster");
                }
            }
            Err(e) => warn!(error = %e, "could not encode roster"),
        }
    }

    fn reply(&self, routing: &[u8], wire: Wire) {
        match codec::encode_wire(wire) {
            Ok(frame) => {
                if let Err(e) = self.router.send(0, vec![routing.to_vec(), frame]) {
                    warn!(error = %e, "could not queue reply");
                }
            }
            Err(e) => warn!(error = %e, "could not encode reply"),
        }
    }

    fn sealed_reply(&self, routing: &[u8], id: &str, key: &AesKey, reply: Reply) {
        match codec::encode(&reply) {
            Ok(plain) => {
                let data = key.seal(&crypto::aad_reply(id), &plain);
                self.reply(routing, Wire::SealedReply { data });
            }
            Err(e) => warn!(error = %e, "could not encode reply"),
        }
    }

    /// First look at a sign-in, on the request loop (no RSA): the first
    /// round gets a challenge; the second is queued for an RSA worker only
    /// with a fresh, first-use challenge of ours. Returns the request to
    /// queue, if any.
    fn screen_auth(&self, routing: &[u8], req: AuthRequest) -> Option<AuthRequest> {
        if !KeyStore::valid_id(&req.id) || req.nonce.len() != 32 {
            bump(&self.counters.auth_refused);
            warn!(id = %req.id.escape_debug(), "sign-in with an invalid id or nonce refused");
            self.reply(
                routing,
                Wire::AuthReply(AuthReply {
                    status: AuthStatus::Rejected,
                    accept: vec![],
                    sig: vec![],
                }),
            );
            return None;
        }
        let check = if req.challenge.is_empty() {
            Check::Invalid
        } else {
            self.challenges.check(&req.id, &req.nonce, &req.challenge)
        };
        match check {
            Check::Fresh => return Some(req),
            Check::Invalid => {
                bump(&self.counters.auth_challenges);
                let challenge = self.challenges.issue(&req.id, &req.nonce);
                self.reply(
                    routing,
                    Wire::AuthChallenge {
                        nonce: req.nonce,
                        challenge,
                    },
                );
            }
            Check::Replayed => {
                let n = bump(&self.counters.auth_replayed);
                if n.is_power_of_two() {
                    warn!(id = %req.id, count = n, "replayed sign-in refused (its challenge was used already)");
                }
                self.reply(routing, Wire::Error("replayed sign-in refused".into()));
            }
            Check::Busy => {
                let n = bump(&self.counters.auth_dropped);
                if n.is_power_of_two() {
                    warn!(count = n, "sign-in dropped: too many sign-ins in the last minute to remember; the peer will sign in again");
                }
            }
        }
        None
    }

    /// Sign-in, second round (on a blocking thread: RSA). Nothing is
    /// touched (sessions, roster, key store) before the peer has proven
    /// that it holds the private key of the public key it presents.
    fn handle_auth(&self, routing: &[u8], req: AuthRequest) {
        bump(&self.counters.auth_requests);
        let refuse = |status: AuthStatus| AuthReply {
            status,
            accept: vec![],
            sig: vec![],
        };
        let proven = PublicKey::from_pem(&req.pub_pem)
            .and_then(|k| {
                let proof = req
                    .proof_bytes()
                    .map_err(|e| crypto::CryptoError::Rsa(e.to_string()))?;
                k.verify(&proof, &req.sig)
            })
            .is_ok();
        if !proven {
            let n = bump(&self.counters.auth_bad_proof);
            if n.is_power_of_two() {
                warn!(id = %req.id, count = n, "sign-in refused: its signature does not verify against the key it presents (someone else's public key?)");
            }
            return self.reply(
                routing,
                Wire::Error("sign-in refused: the signature does not prove the key".into()),
            );
        }
        if req.role == Role::Syndic && !self.cfg.order_masters {
            bump(&self.counters.auth_refused);
            warn!(id = %req.id, "syndic sign-in refused: set 'order_masters: True' on this master to accept syndics");
            return self.reply(routing, Wire::AuthReply(refuse(AuthStatus::Rejected)));
        }
        let peer = match self.keys.sign_in(&req.id, &req.pub_pem) {
            Ok(SignIn::Accepted(k)) => k,
            Ok(other) => {
                let status = match other {
                    SignIn::Pending => AuthStatus::Pending,
                    SignIn::Rejected => AuthStatus::Rejected,
                    _ => AuthStatus::Denied,
                };
                if status != AuthStatus::Pending {
                    bump(&self.counters.auth_refused);
                }
                info!(id = %req.id, status = ?status, "sign-in not accepted");
                return self.reply(routing, Wire::AuthReply(refuse(status)));
            }
            Err(e) => {
                bump(&self.counters.auth_refused);
                warn!(id = %req.id, error = %e, "sign-in failed");
                return self.reply(routing, Wire::Error(format!("sign-in failed: {e}")));
            }
        };
        if req.role == Role::Syndic && !self.keys.syndic_granted(&req.id, &peer) {
            bump(&self.counters.auth_refused);
            warn!(id = %req.id, "syndic sign-in refused: the key is accepted but not granted the syndic role (grant it on this master with 'salt-key --grant-syndic <id>')");
            // Not `Rejected`: the key is fine, the role is what is missing,
            // and the syndic's log should say so.
            return self.reply(
                routing,
                Wire::Error(format!(
                    "syndic role not granted to {}: run 'salt-key --grant-syndic {}' on the master",
                    req.id, req.id
                )),
            );
        }
        if self.cfg.max_minions > 0 {
            let n = self.sessions().len();
            if n >= self.cfg.max_minions && !self.sessions().contains_key(&req.id) {
                bump(&self.counters.auth_refused);
                warn!(id = %req.id, max_minions = self.cfg.max_minions, "sign-in refused: master is full");
                return self.reply(routing, Wire::Error("master is full (max_minions)".into()));
            }
        }
        let session = AesKey::random();
        let (key_id, pkey) = self
            .publish_key
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let built = (|| -> Result<AuthReply, MasterError> {
            let accept = AuthAccept {
                master_pub_pem: self.master_key.public().pem().to_string(),
                master_id: self.cfg.id.clone(),
                publish_port: self.publisher.port,
                key_id,
                publish_key: peer.encrypt(pkey.as_bytes())?,
                session_key: peer.encrypt(session.as_bytes())?,
                nonce: req.nonce.clone(),
                heartbeat_interval: self.cfg.heartbeat_interval,
                pub_seq: self.publisher.last_seq(),
            };
            let accept =
                codec::encode(&accept).map_err(|e| crypto::CryptoError::Rsa(e.to_string()))?;
            let sig = self.master_key.sign(&accept)?;
            Ok(AuthReply {
                status: AuthStatus::Accepted,
                accept,
                sig,
            })
        })();
        match built {
            Ok(reply) => {
                self.sessions().insert(
                    req.id.clone(),
                    Session {
                        key: session,
                        last_seq: 0,
                        role: req.role,
                    },
                );
                if req.role == Role::Syndic {
                    self.roster.syndic_seen(&req.id);
                }
                debug!(id = %req.id, role = ?req.role, "signed in");
                self.reply(routing, Wire::AuthReply(reply));
            }
            Err(e) => warn!(id = %req.id, error = %e, "could not build sign-in answer"),
        }
    }

    fn handle_sealed(self: &Arc<Self>, routing: &[u8], id: &str, data: &[u8]) {
        let (key, role) = {
            let s = self.sessions();
            match s.get(id) {
                Some(sess) => (sess.key.clone(), sess.role),
                None => {
                    drop(s);
                    let n = bump(&self.counters.unknown_session);
                    if n.is_power_of_two() {
                        info!(id = %id.escape_debug(), count = n, "request without a session: asking to sign in again");
                    }
                    return self.reply(routing, Wire::ReAuth);
                }
            }
        };
        let plain = match key.open(&crypto::aad_request(id), data) {
            Ok(p) => p,
            Err(_) => {
                let n = bump(&self.counters.bad_seal);
                if n.is_power_of_two() {
                    warn!(id = %id.escape_debug(), count = n, "request does not open under the session key of the id it claims (forged or stale); refused");
                }
                return self.reply(routing, Wire::ReAuth);
            }
        };
        let plain_len = plain.len();
        let req: Request = match codec::decode(&plain, self.cfg.max_frame_bytes) {
            Ok(r) => r,
            Err(e) => {
                bump(&self.counters.malformed_frames);
                warn!(id = %id, error = %e, "malformed sealed request");
                return;
            }
        };
        {
            let mut s = self.sessions();
            let Some(sess) = s.get_mut(id) else { return };
            if req.seq <= sess.last_seq {
                drop(s);
                bump(&self.counters.replays);
                warn!(id = %id, seq = req.seq, "replayed request refused");
                return self.sealed_reply(
                    routing,
                    id,
                    &key,
                    Reply {
                        req_id: req.req_id,
                        body: ReplyBody::Refused("replayed request".into()),
                    },
                );
            }
            sess.last_seq = req.seq;
        }
        self.roster.touch(id);
        let carries_returns = matches!(
            req.body,
            RequestBody::Return(_) | RequestBody::SyndicReturns(_)
        );
        let body = match req.body {
            RequestBody::Hello { grains, .. } | RequestBody::Grains(grains) => {
                if role == Role::Minion {
                    self.roster.upsert_direct(id, grains);
                }
                ReplyBody::Ok
            }
            RequestBody::Heartbeat => ReplyBody::Ok,
            RequestBody::Catchup { after_seq } => {
                let own = topic_for(id);
                let topics = match role {
                    Role::Minion => vec![TOPIC_BROADCAST.to_vec(), own],
                    Role::Syndic => vec![crate::publisher::TOPIC_SYNDICS.to_vec(), own],
                };
                let frames = self.publisher.recent_after(after_seq, &topics);
                self.counters
                    .catchup_publishes
                    .fetch_add(frames.len() as u64, Ordering::Relaxed);
                if !frames.is_empty() {
                    debug!(id = %id, publishes = frames.len(), "publishes sent again to a peer that may have missed them");
                }
                ReplyBody::Publishes(
                    frames
                        .iter()
                        .map(|f| serde_bytes::ByteBuf::from(f.as_slice()))
                        .collect(),
                )
            }
            RequestBody::Return(mut ret) => {
                if ret.id != id || role != Role::Minion {
                    let n = bump(&self.counters.forged_returns);
                    warn!(sender = %id, claimed = %ret.id.escape_debug(), count = n, "return for another minion refused");
                    ReplyBody::Refused(format!("{id} may not return for {}", ret.id))
                } else if let Err(why) = self.admit_return(&ret) {
                    ReplyBody::Refused(format!("return to {} refused: {why}", ret.jid))
                } else {
                    self.cap_return(&mut ret, plain_len);
                    self.accept_return(ret);
                    ReplyBody::Ok
                }
            }
            RequestBody::SyndicReturns(rets) => {
                if role != Role::Syndic {
                    bump(&self.counters.syndic_refused);
                    ReplyBody::Refused("not a syndic".into())
                } else {
                    let (mut outside, mut not_admitted) = (0usize, 0usize);
                    // Sizes are looked at one by one only when the whole
                    // batch is over the limit (rare).
                    let check_sizes = plain_len > self.cfg.max_return_bytes;
                    for mut ret in rets {
                        if !self.roster.behind(&ret.id, id) {
                            outside += 1;
                            let n = bump(&self.counters.syndic_refused);
                            if n.is_power_of_two() {
                                warn!(syndic = %id, minion = %ret.id.escape_debug(), count = n, "syndic return for a minion outside its subtree refused");
                            }
                        } else if self.admit_return(&ret).is_err() {
                            not_admitted += 1;
                        } else {
                            if check_sizes {
                                let size = codec::encode(&ret).map_or(usize::MAX, |b| b.len());
                                self.cap_return(&mut ret, size);
                            }
                            self.accept_return(ret);
                        }
                    }
                    if outside + not_admitted > 0 {
                        ReplyBody::Refused(format!(
                            "{outside} returns for minions outside {id}'s subtree, {not_admitted} for jobs this master did not send them"
                        ))
                    } else {
                        ReplyBody::Ok
                    }
                }
            }
            RequestBody::SyndicJob(load) => self.job_from_below(id, role, load),
            RequestBody::Roster(delta) => {
                if role == Role::Syndic {
                    let out = self
                        .roster
                        .apply_syndic_delta(id, &delta, |m| self.keys.is_accepted(m));
                    if !out.refused.is_empty() {
                        let n = self
                            .counters
                            .roster_claims_refused
                            .fetch_add(out.refused.len() as u64, Ordering::Relaxed);
                        let (first, why) = &out.refused[0];
                        warn!(syndic = %id, refused = out.refused.len(), first = %first.escape_debug(), reason = ?why, total = n + out.refused.len() as u64, "roster report names ids that belong to someone else; refused (see manage.list_syndics)");
                    }
                    for (m, from) in &out.moved {
                        info!(minion = %m, from = %from, to = %id, "minion moved to another syndic (the one before is gone)");
                    }
                    ReplyBody::Ok
                } else {
                    bump(&self.counters.syndic_refused);
                    ReplyBody::Refused("not a syndic".into())
                }
            }
        };
        let reply = Reply {
            req_id: req.req_id,
            body,
        };
        if carries_returns {
            // Acknowledge only once the returns are on disk: a minion (or
            // syndic) keeps and resends anything not acknowledged, so a
            // master killed now, or whose disk is full, loses nothing it
            // said it had. `after_commit` answers for the writes this
            // thread queued for this request (and any it lost before).
            let st = self.clone();
            let routing = routing.to_vec();
            let id = id.to_string();
            self.jobs.after_commit(move |ok| {
                if ok {
                    st.sealed_reply(&routing, &id, &key, reply);
                } else {
                    debug!(id = %id, "returns not committed; not acknowledged (the sender will resend)");
                }
            });
        } else {
            self.sealed_reply(routing, id, &key, reply);
        }
    }
}

/// Sign-ins: RSA work on at most one blocking thread per CPU. A burst of
/// thousands of sign-ins (every minion after a master restart) used to
/// start one blocking thread each, ~300 threads in a syndic, each with
/// its own allocator arena, for no gain on two cores.
async fn auth_workers(state: Arc<MasterState>, mut rx: mpsc::Receiver<(Vec<u8>, AuthRequest)>) {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let permits = Arc::new(tokio::sync::Semaphore::new(cpus));
    while let Some((routing, req)) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let st = state.clone();
        tokio::task::spawn_blocking(move || {
            st.handle_auth(&routing, req);
            drop(permit);
        });
    }
}

async fn request_loop(
    state: Arc<MasterState>,
    mut rx: mpsc::Receiver<(usize, transport::Frames)>,
    auth: mpsc::Sender<(Vec<u8>, AuthRequest)>,
    shutdown: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => m,
        };
        let Some((_, frames)) = msg else { return };
        if frames.len() != 2 {
            let n = bump(&state.counters.malformed_frames);
            if n.is_power_of_two() {
                warn!(
                    frames = frames.len(),
                    count = n,
                    "malformed request (wrong frame count) dropped"
                );
            }
            continue;
        }
        let routing = &frames[0];
        let wire = match codec::decode_wire(&frames[1], state.cfg.max_frame_bytes) {
            Ok(w) => w,
            Err(e) => {
                let n = bump(&state.counters.malformed_frames);
                if n.is_power_of_two() {
                    warn!(error = %e, count = n, "malformed request dropped");
                }
                state.reply(routing, Wire::Error(format!("malformed request: {e}")));
                continue;
            }
        };
        match wire {
            Wire::Auth(req) => {
                let Some(req) = state.screen_auth(routing, req) else {
                    continue;
                };
                if auth.try_send((routing.clone(), req)).is_err() {
                    let n = bump(&state.counters.auth_dropped);
                    if n.is_power_of_two() {
                        warn!(
                            count = n,
                            queued = AUTH_QUEUE,
                            "sign-in dropped: too many waiting; the peer will sign in again"
                        );
                    }
                }
            }
            Wire::Sealed { id, data } => {
                state.handle_sealed(routing, &id, &data);
            }
            _ => {
                bump(&state.counters.malformed_frames);
                state.reply(routing, Wire::Error("unexpected message kind".into()));
            }
        }
    }
}

/// Presence sweeps, roster snapshots, counters in the log.
async fn housekeeping(state: Arc<MasterState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    let mut last_version = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        state.roster.sweep();
        for (m, to, from) in state.roster.retry_claims(|m| state.keys.is_accepted(m)) {
            info!(minion = %m, syndic = %to, before = ?from, "claim refused earlier granted: its owner is gone");
        }
        state
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_closed();
        if n.is_multiple_of(10) {
            let v = state.roster.version();
            if v != last_version {
                state.save_roster();
                last_version = v;
            }
        }
        if n.is_multiple_of(300) {
            debug!(counters = ?serde_json::to_string(&state.counters).ok(), "master counters");
        }
    }
}

/// Rewrite a nodegroup target (or `N@` terms of a compound one) into the
/// compound expression it stands for, as Salt's master does before
/// publishing. The target was validated already, so unknown groups are
/// left as they are.
pub fn expand_nodegroups(
    tgt: &str,
    tgt_type: TargetType,
    groups: &BTreeMap<String, String>,
) -> (String, TargetType) {
    fn expand(expr: &str, groups: &BTreeMap<String, String>, depth: usize) -> String {
        if depth > 16 {
            return expr.to_string();
        }
        let mut out = String::with_capacity(expr.len());
        let mut rest = expr;
        while let Some(pos) = rest.find("N@") {
            let boundary = pos == 0
                || rest[..pos]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_whitespace() || c == '(');
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 2..];
            let end = after
                .find(|c: char| c.is_whitespace() || c == '(' || c == ')')
                .unwrap_or(after.len());
            let name = &after[..end];
            match groups.get(name) {
                Some(e) if boundary => {
                    out.push_str("( ");
                    out.push_str(&expand(e, groups, depth + 1));
                    out.push_str(" )");
                }
                _ => {
                    out.push_str("N@");
                    out.push_str(name);
                }
            }
            rest = &after[end..];
        }
        out.push_str(rest);
        out
    }
    match tgt_type {
        TargetType::Nodegroup => match groups.get(tgt) {
            Some(e) => (expand(e, groups, 1), TargetType::Compound),
            None => (tgt.to_string(), tgt_type),
        },
        TargetType::Compound if tgt.contains("N@") => {
            (expand(tgt, groups, 0), TargetType::Compound)
        }
        _ => (tgt.to_string(), tgt_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_of_finished_jobs_are_forgotten() {
        let mut w = Watchers::default();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (live_tx, _live_rx) = mpsc::unbounded_channel();
        let (gone_tx, gone_rx) = mpsc::unbounded_channel();
        let watcher = |tx| JobWatcher {
            tx,
            queue: Arc::new(WatchQueue::default()),
        };
        w.by_jid.insert("j1".into(), vec![watcher(done_tx)]);
        w.by_jid
            .insert("j2".into(), vec![watcher(live_tx), watcher(gone_tx)]);
        assert_eq!(w.forget_closed(), 0, "every watcher still listens");
        drop(done_rx);
        drop(gone_rx);
        assert_eq!(w.forget_closed(), 1);
        assert!(!w.by_jid.contains_key("j1"));
        assert_eq!(w.by_jid["j2"].len(), 1, "the live watcher of j2 stays");
    }

    #[test]
    fn dedup_remembers_only_stored_returns() {
        let mut d = Dedup::default();
        assert_eq!(d.begin("j", "m1"), None, "first copy");
        assert_eq!(d.begin("j", "m1"), Some(Pair::Writing(1)), "copy in flight");
        // Both writes fail (a full disk): the pair is forgotten, so the
        // sender's resend is taken as new.
        assert!(!d.written("j", "m1", false));
        assert!(!d.written("j", "m1", false));
        assert_eq!(d.pairs, 0);
        assert_eq!(d.begin("j", "m1"), None, "resend after a failed write");
        assert!(d.written("j", "m1", true), "newly stored");
        assert_eq!(d.begin("j", "m1"), Some(Pair::Stored));
        assert!(
            !d.written("j", "m1", true),
            "a stored pair is not news twice"
        );
        // A first write that fails while a copy's write succeeds: stored.
        assert_eq!(d.begin("j", "m2"), None);
        assert_eq!(d.begin("j", "m2"), Some(Pair::Writing(1)));
        assert!(!d.written("j", "m2", false));
        assert!(d.written("j", "m2", true));
        assert_eq!(d.begin("j", "m2"), Some(Pair::Stored));
    }

    #[test]
    fn nodegroups_expand_for_minions() {
        let g: BTreeMap<String, String> = [
            ("web".to_string(), "L@web1,web2".to_string()),
            ("east".to_string(), "G@dc:east and N@web".to_string()),
        ]
        .into();
        assert_eq!(
            expand_nodegroups("web", TargetType::Nodegroup, &g),
            ("L@web1,web2".to_string(), TargetType::Compound)
        );
        assert_eq!(
            expand_nodegroups("east", TargetType::Nodegroup, &g).0,
            "G@dc:east and ( L@web1,web2 )"
        );
        assert_eq!(
            expand_nodegroups("not N@web or (N@east)", TargetType::Compound, &g).0,
            "not ( L@web1,web2 ) or (( G@dc:east and ( L@web1,web2 ) ))"
        );
        assert_eq!(
            expand_nodegroups("db*", TargetType::Glob, &g),
            ("db*".to_string(), TargetType::Glob)
        );
    }
}
