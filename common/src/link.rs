//! The authenticated link from a minion (or a syndic, upward) to its master.
//!
//! One task owns the [`ClientSession`] and two io threads: a DEALER to the
//! master's request port and, once signed in, a SUB to the publish port the
//! master announced. It signs in (retrying with back-off while the key is
//! pending or the master is away), says hello with the grains, heartbeats,
//! delivers verified jobs on a channel and sends requests. Requests that
//! carry data (returns, rosters, grains) stay queued until the master
//! acknowledges them and are sent again after a re-sign-in, so a master
//! restart loses no return (the master drops duplicates).
//!
//! Used by the minion daemon and by the syndic's upstream link; its timings
//! come from the config ([`LinkConfig::from`] a [`MinionConfig`],
//! [`LinkConfig::for_syndic`] from the `syndic_*` options). A master name
//! that does not resolve is said once at WARN, with the option and the
//! file that set it ([`watch_master_name`]), while the link keeps retrying.

use crate::config::{LinkTimings, MinionConfig, SyndicConfig};
use crate::crypto::{KeyPair, PublicKey};
use crate::proto::*;
use crate::session::{
    ClientSession, PubEvent, ServerMsg, SessionError, SignInOutcome, Unacked, SIGN_IN_ANSWER_WAIT,
    SIGN_IN_PROVEN_WAIT,
};
use crate::transport::{self, IoThread};
use rand::Rng;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A request and, optionally, who waits for its answer.
type Outgoing = (RequestBody, Option<Waiter>);

/// Who waits for the answer to a request.
enum Waiter {
    /// Acknowledged (`true`) or refused (`false`).
    Ack(oneshot::Sender<bool>),
    /// The answer itself ([`LinkHandle::ask`]).
    Answer(oneshot::Sender<ReplyBody>),
}

impl Waiter {
    fn answer(self, body: ReplyBody) {
        match self {
            Waiter::Ack(tx) => {
                let _ = tx.send(!matches!(body, ReplyBody::Refused(_)));
            }
            Waiter::Answer(tx) => {
                let _ = tx.send(body);
            }
        }
    }
}

/// Why [`LinkHandle::ask`] got no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AskError {
    /// Not signed in to the master when the question was asked, or the
    /// link stopped before an answer came.
    #[error("not connected to the master")]
    NotConnected,
    /// No answer within the time the caller allowed.
    #[error("the master did not answer within {0:?}")]
    Timeout(Duration),
}
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// What the link needs to know.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub id: String,
    pub role: Role,
    pub master: String,
    pub master_port: u16,
    pub pki_dir: PathBuf,
    /// File the master's key is pinned in (`minion_master.pub`).
    pub pin_file: PathBuf,
    pub master_finger: Option<String>,
    pub timings: LinkTimings,
    pub max_frame: usize,
}

impl From<&MinionConfig> for LinkConfig {
    /// A minion's link to `master`, with the minion's back-off options.
    fn from(cfg: &MinionConfig) -> Self {
        LinkConfig {
            id: cfg.id.clone(),
            role: Role::Minion,
            master: cfg.master.clone(),
            master_port: cfg.master_port,
            pki_dir: cfg.pki_dir.clone(),
            pin_file: cfg.pki_dir.join("minion_master.pub"),
            master_finger: cfg.master_finger.clone(),
            timings: LinkTimings::from(cfg),
            max_frame: cfg.max_frame_bytes,
        }
    }
}

impl LinkConfig {
    /// A syndic's link upward, with the `syndic_*` back-off options. The
    /// master is left empty and the key is pinned in `syndic_master.pub`:
    /// the upstream failover loop fills in each `syndic_master` entry (and
    /// its own pin file when there are several).
    pub fn for_syndic(cfg: &SyndicConfig) -> Self {
        LinkConfig {
            id: cfg.id.clone(),
            role: Role::Syndic,
            master: String::new(),
            master_port: cfg.master_port,
            pki_dir: cfg.pki_dir.clone(),
            pin_file: cfg.pki_dir.join("syndic_master.pub"),
            // Pins the upper master's key before first contact; after it
            // the key stored in the pin file is what must match.
            master_finger: cfg.finger.clone(),
            timings: cfg.timings.clone(),
            max_frame: cfg.max_frame_bytes,
        }
    }
}

/// Counters of the link (bad publishes never pass silently).
#[derive(Debug, Default)]
pub struct LinkStats {
    pub jobs: AtomicU64,
    pub bad_publishes: AtomicU64,
    pub replays: AtomicU64,
    pub sign_ins: AtomicU64,
    pub refused: AtomicU64,
    pub resent: AtomicU64,
    /// Clear-text sign-in requests not acted on (one came moments ago).
    pub reauth_ignored: AtomicU64,
    /// Jobs received through a catch-up after a new sign-in.
    pub caught_up: AtomicU64,
}

/// The other tasks' handle on the link.
#[derive(Clone)]
pub struct LinkHandle {
    tx: mpsc::UnboundedSender<Outgoing>,
    pub stats: Arc<LinkStats>,
    connected: Arc<AtomicBool>,
}

impl LinkHandle {
    /// Queue a request; data-carrying ones are kept until acknowledged.
    pub fn send(&self, body: RequestBody) {
        if self.tx.send((body, None)).is_err() {
            warn!("link is stopped; request dropped");
        }
    }

    /// Queue a request and learn when the master acknowledged it (`true`)
    /// or refused it (`false`). The request is resent across re-sign-ins
    /// until one of the two happens.
    pub fn send_acked(&self, body: RequestBody) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send((body, Some(Waiter::Ack(tx)))).is_err() {
            warn!("link is stopped; request dropped");
        }
        rx
    }

    /// Ask the master a question (a file, a listing, a pillar) and wait at
    /// most `timeout` for its answer. The question is resent across
    /// re-sign-ins like any unacknowledged request (every question is
    /// idempotent); a refusal is an answer ([`ReplyBody::Refused`]).
    pub async fn ask(&self, body: RequestBody, timeout: Duration) -> Result<ReplyBody, AskError> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send((body, Some(Waiter::Answer(tx)))).is_err() {
            return Err(AskError::NotConnected);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => Err(AskError::NotConnected),
            Err(_) => Err(AskError::Timeout(timeout)),
        }
    }

    /// How many times the link has signed in (a change means a new session
    /// upstream, e.g. after a master restart).
    pub fn sign_ins(&self) -> u64 {
        self.stats.sign_ins.load(Ordering::Relaxed)
    }

    /// Signed in right now?
    pub fn is_up(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    #[error("zmq: {0}")]
    Zmq(#[from] zmq::Error),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
}

/// Provides the `Hello` body at each sign-in (grains change over time).
pub type HelloFn = Box<dyn Fn() -> RequestBody + Send + Sync>;

/// Start the link. Jobs arrive on the returned receiver.
pub fn start(
    cfg: LinkConfig,
    keys: Arc<KeyPair>,
    hello: HelloFn,
    shutdown: CancellationToken,
) -> Result<
    (
        LinkHandle,
        mpsc::Receiver<JobLoad>,
        tokio::task::JoinHandle<()>,
    ),
    LinkError,
> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (job_tx, job_rx) = mpsc::channel(10_000);
    let stats = Arc::new(LinkStats::default());
    let connected = Arc::new(AtomicBool::new(false));
    let pinned = std::fs::read_to_string(&cfg.pin_file)
        .ok()
        .and_then(|p| PublicKey::from_pem(&p).ok());
    let session = ClientSession::new(
        &cfg.id,
        cfg.role,
        keys,
        pinned,
        cfg.master_finger.clone(),
        cfg.max_frame,
    );
    let ctx = zmq::Context::new();
    let (dealer, dealer_rx) = open_dealer(&ctx, &cfg)?;
    let task = Task {
        cfg,
        ctx,
        session,
        dealer,
        dealer_rx,
        sub: None,
        sub_port: 0,
        hello,
        requests: rx,
        jobs: job_tx,
        pending: Unacked::new(MAX_PENDING),
        catchup: Vec::new(),
        stats: stats.clone(),
        connected: connected.clone(),
        shutdown,
    };
    let join = tokio::spawn(task.run());
    Ok((
        LinkHandle {
            tx,
            stats,
            connected,
        },
        job_rx,
        join,
    ))
}

fn jitter(base_ms: u64, randomize: bool) -> u64 {
    if randomize && base_ms > 0 {
        base_ms + rand::thread_rng().gen_range(0..base_ms)
    } else {
        base_ms
    }
}

/// The DEALER to the master's request port, on its own io thread.
fn open_dealer(
    ctx: &zmq::Context,
    cfg: &LinkConfig,
) -> Result<(IoThread, mpsc::Receiver<(usize, transport::Frames)>), LinkError> {
    let dealer = ctx.socket(zmq::DEALER)?;
    transport::tune(&dealer, 100, 10_000, transport::Side::Request)?;
    let ivl = jitter(cfg.timings.recon_default, cfg.timings.recon_randomize);
    transport::tune_reconnect(&dealer, ivl as i32, cfg.timings.recon_max.max(ivl) as i32)?;
    dealer.set_maxmsgsize(cfg.max_frame as i64)?;
    dealer.connect(&transport::tcp_endpoint(&cfg.master, cfg.master_port))?;
    Ok(IoThread::spawn(ctx, "link-req", vec![dealer], &[], 10_000)?)
}

/// Kinds that must reach the master (kept until acknowledged).
fn reliable(body: &RequestBody) -> bool {
    !matches!(
        body,
        RequestBody::Heartbeat | RequestBody::Hello { .. } | RequestBody::Catchup { .. }
    )
}

/// When, after a sign-in, the link asks the master for publishes it may
/// have missed: at once, and again once its subscription is surely back
/// (a subscription reaches the master over its own connection, which may
/// come back after the sign-in did).
const CATCHUP_AFTER: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(5),
];

/// Bound of unacknowledged requests kept for resending.
const MAX_PENDING: usize = 100_000;

struct Task {
    cfg: LinkConfig,
    ctx: zmq::Context,
    session: ClientSession,
    dealer: IoThread,
    dealer_rx: mpsc::Receiver<(usize, transport::Frames)>,
    sub: Option<(IoThread, mpsc::Receiver<(usize, transport::Frames)>)>,
    sub_port: u16,
    hello: HelloFn,
    requests: mpsc::UnboundedReceiver<Outgoing>,
    jobs: mpsc::Sender<JobLoad>,
    /// Unacknowledged reliable requests.
    pending: Unacked<Outgoing>,
    /// When to ask for missed publishes again after the last sign-in.
    catchup: Vec<Instant>,
    stats: Arc<LinkStats>,
    connected: Arc<AtomicBool>,
    shutdown: CancellationToken,
}

enum Next {
    SignIn,
    SignInAfter(Duration),
    Stop,
}

impl Task {
    async fn run(mut self) {
        let mut next = Next::SignIn;
        loop {
            next = match next {
                Next::Stop => break,
                Next::SignInAfter(d) => {
                    self.connected.store(false, Ordering::Relaxed);
                    tokio::select! {
                        _ = self.shutdown.cancelled() => Next::Stop,
                        _ = tokio::time::sleep(d) => Next::SignIn,
                    }
                }
                Next::SignIn => {
                    self.connected.store(false, Ordering::Relaxed);
                    match self.sign_in().await {
                        Some(true) => self.serve().await,
                        Some(false) => Next::Stop,
                        None => Next::Stop,
                    }
                }
            };
        }
        self.connected.store(false, Ordering::Relaxed);
        if let Some((mut s, _)) = self.sub.take() {
            s.stop();
        }
        self.dealer.stop();
    }

    fn send_frame(&self, frame: Vec<u8>) {
        if let Err(e) = self.dealer.send(0, vec![frame]) {
            warn!(error = %e, "could not queue request");
        }
    }

    /// Sign in until accepted. Some(true): signed in; None/Some(false): stop.
    async fn sign_in(&mut self) -> Option<bool> {
        let mut backoff = Duration::from_millis(self.cfg.timings.recon_default.max(100));
        let max_backoff = Duration::from_millis(self.cfg.timings.recon_max.max(1000));
        let mut wait = Duration::from_secs(self.cfg.timings.acceptance_wait_time.max(1));
        loop {
            let frame = match self.session.auth_frame() {
                Ok(f) => f,
                Err(e) => {
                    error!(error = %e, "cannot build a sign-in request");
                    return Some(false);
                }
            };
            // Answers to earlier attempts (queued while the master was
            // away and delivered all at once) must not be taken for the
            // answer to this one: drop what is already waiting...
            let mut stale = 0usize;
            while self.dealer_rx.try_recv().is_ok() {
                stale += 1;
            }
            if stale > 0 {
                debug!(stale, "dropped answers to earlier sign-in attempts");
            }
            self.send_frame(frame);
            let deadline = tokio::time::sleep(SIGN_IN_ANSWER_WAIT);
            tokio::pin!(deadline);
            let outcome = loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    _ = &mut deadline => break None,
                    m = self.dealer_rx.recv() => {
                        let (_, frames) = m?;
                        let Some(frame) = frames.last() else { continue };
                        match self.session.open_reply(frame) {
                            // ...and skip accepts that echo an earlier nonce.
                            Ok(ServerMsg::AuthReply(r)) => match self.session.handle_auth_reply(&r) {
                                Err(SessionError::NonceMismatch) => debug!("answer to an earlier sign-in attempt skipped"),
                                other => break Some(other),
                            },
                            // First round answered: prove the key (once per
                            // attempt), then wait for the master's RSA
                            // workers to reach the proof instead of queueing
                            // another one behind it.
                            Ok(ServerMsg::Challenge { nonce, challenge }) => match self.session.answer_challenge(&nonce, challenge) {
                                Ok(f) => {
                                    self.send_frame(f);
                                    deadline.as_mut().reset(tokio::time::Instant::now() + SIGN_IN_PROVEN_WAIT);
                                }
                                Err(e) => debug!(error = %e, "challenge skipped"),
                            },
                            Ok(ServerMsg::Error(e)) => { warn!(error = %e, "master refused the sign-in"); }
                            Ok(_) => {} // stale replies from an old session
                            Err(e) => debug!(error = %e, "unreadable frame while signing in"),
                        }
                    }
                }
            };
            let pause = match outcome {
                None => {
                    self.reconnect();
                    let d = backoff.mul_f64(1.0 + rand::thread_rng().gen_range(0.0..0.5));
                    backoff = (backoff * 2).min(max_backoff);
                    info!(master = %self.cfg.master, port = self.cfg.master_port, retry_in_ms = d.as_millis() as u64, "master did not answer the sign-in");
                    d
                }
                Some(Ok(SignInOutcome::Accepted { pin })) => {
                    if let Some(pem) = pin {
                        if let Err(e) = std::fs::write(&self.cfg.pin_file, pem) {
                            warn!(file = %self.cfg.pin_file.display(), error = %e, "could not store the master key");
                        } else {
                            info!(file = %self.cfg.pin_file.display(), "master key pinned");
                        }
                    }
                    self.stats.sign_ins.fetch_add(1, Ordering::Relaxed);
                    return Some(self.after_sign_in());
                }
                Some(Ok(SignInOutcome::Pending)) => {
                    info!(id = %self.cfg.id, wait_s = wait.as_secs(), "key is pending acceptance on the master (salt-key -a)");
                    let d = wait;
                    if self.cfg.timings.acceptance_wait_time_max
                        > self.cfg.timings.acceptance_wait_time
                    {
                        wait = (wait
                            + Duration::from_secs(self.cfg.timings.acceptance_wait_time.max(1)))
                        .min(Duration::from_secs(
                            self.cfg.timings.acceptance_wait_time_max,
                        ));
                    }
                    d
                }
                Some(Ok(SignInOutcome::Rejected)) => {
                    error!(id = %self.cfg.id, "the master rejected this key; delete it on the master (salt-key -d) to sign in again");
                    wait
                }
                Some(Ok(SignInOutcome::Denied)) => {
                    error!(id = %self.cfg.id, "the master holds a different key for this id (denied); fix the key on the master");
                    wait
                }
                Some(Err(e @ SessionError::MasterKeyMismatch { .. })) => {
                    error!(error = %e, file = %self.cfg.pin_file.display(), "master key changed: refusing it (remove the pinned key if the change is expected)");
                    wait
                }
                Some(Err(e)) => {
                    warn!(error = %e, "bad sign-in answer");
                    backoff
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn after_sign_in(&mut self) -> bool {
        let Some(est) = self.session.established().cloned() else {
            return false;
        };
        if self.sub.is_none() || self.sub_port != est.publish_port {
            if let Some((mut old, _)) = self.sub.take() {
                old.stop();
            }
            match self.open_sub(est.publish_port) {
                Ok(s) => {
                    self.sub = Some(s);
                    self.sub_port = est.publish_port;
                }
                Err(e) => {
                    error!(error = %e, "cannot subscribe to the master's publisher");
                    return false;
                }
            }
        }
        info!(master = %est.master_id, id = %self.cfg.id, "signed in");
        let hello = (self.hello)();
        match self.session.seal(hello) {
            Ok((_, f)) => self.send_frame(f),
            Err(e) => warn!(error = %e, "cannot send hello"),
        }
        // Everything not acknowledged before goes again under the new key,
        // but for requests whose sender waits for the answer (the
        // syndic's forwarder and roster reports): their sender resends
        // them itself, in its own order (a batch of returns must follow
        // the roster report that names its minions, which a master that
        // restarted has not had yet). Dropping the answer channel tells
        // it the request was not acknowledged.
        for ((body, ack), attempts) in self.pending.take_all() {
            if ack.is_some() {
                continue;
            }
            self.stats.resent.fetch_add(1, Ordering::Relaxed);
            self.send_request_again(body, ack, attempts);
        }
        // What was published while we were cut off (not after a first
        // sign-in: a fresh process runs nothing published before it).
        self.catchup = CATCHUP_AFTER.iter().map(|d| Instant::now() + *d).collect();
        self.connected.store(true, Ordering::Relaxed);
        true
    }

    fn open_sub(
        &self,
        port: u16,
    ) -> Result<(IoThread, mpsc::Receiver<(usize, transport::Frames)>), LinkError> {
        let sub = self.ctx.socket(zmq::SUB)?;
        transport::tune(&sub, 100, 100_000, transport::Side::Client)?;
        let ivl = jitter(
            self.cfg.timings.recon_default,
            self.cfg.timings.recon_randomize,
        );
        transport::tune_reconnect(&sub, ivl as i32, self.cfg.timings.recon_max.max(ivl) as i32)?;
        sub.set_maxmsgsize(self.cfg.max_frame as i64)?;
        match self.cfg.role {
            Role::Minion => sub.set_subscribe(TOPIC_BROADCAST)?,
            Role::Syndic => sub.set_subscribe(b"S\0")?,
        }
        sub.set_subscribe(&topic_for(&self.cfg.id))?;
        sub.connect(&transport::tcp_endpoint(&self.cfg.master, port))?;
        Ok(IoThread::spawn(
            &self.ctx,
            "link-pub",
            vec![sub],
            &[],
            10_000,
        )?)
    }

    fn send_request(&mut self, body: RequestBody, ack: Option<Waiter>) {
        self.send_request_again(body, ack, 0);
    }

    /// Send `body`, which was sent `attempts` times before.
    fn send_request_again(&mut self, body: RequestBody, ack: Option<Waiter>, attempts: u32) {
        let keep = reliable(&body) || ack.is_some();
        let copy = keep.then(|| body.clone());
        let dropped = match self.session.seal(body) {
            Ok((req_id, frame)) => {
                self.send_frame(frame);
                copy.is_some_and(|b| self.pending.sent(req_id, (b, ack), attempts))
            }
            // Not signed in, and its sender waits for the acknowledgement:
            // tell it now (dropping the channel), it sends again itself. A
            // question waits for the sign-in (its asker has a timeout).
            Err(_) if matches!(ack, Some(Waiter::Ack(_))) => false,
            Err(e) => {
                // Not signed in: keep it for after the next sign-in.
                debug!(error = %e, "request kept until signed in");
                copy.is_some_and(|b| self.pending.hold((b, ack), attempts))
            }
        };
        if dropped {
            warn!(
                max = MAX_PENDING,
                "too many unacknowledged requests; the oldest was dropped"
            );
        }
    }

    /// A new connection to the request port: the old one may be dead
    /// without libzmq knowing (no ZMTP heartbeats on it, see
    /// `transport::Side::Request`).
    fn reconnect(&mut self) {
        match open_dealer(&self.ctx, &self.cfg) {
            Ok((d, rx)) => {
                let mut old = std::mem::replace(&mut self.dealer, d);
                old.stop();
                self.dealer_rx = rx;
            }
            Err(e) => warn!(error = %e, "cannot open a new connection to the master"),
        }
    }

    /// Runs the jobs among publishes sent again after a catch-up request;
    /// those already seen are refused by the replay window, quietly. Err
    /// when the job runner is gone.
    async fn caught_up(&mut self, frames: Vec<ByteBuf>) -> Result<(), ()> {
        for f in frames {
            match self.session.open_publish(&f) {
                Ok(PubEvent::Job(mut job)) => {
                    self.stats.jobs.fetch_add(1, Ordering::Relaxed);
                    self.stats.caught_up.fetch_add(1, Ordering::Relaxed);
                    info!(jid = %job.jid, fun = %job.fun, "job missed while cut off, caught up");
                    if let Some(t) = job.trace.as_mut() {
                        t.push(Stamp {
                            who: self.cfg.id.clone(),
                            what: "recv".into(),
                            us: now_us(),
                        });
                    }
                    self.jobs.send(*job).await.map_err(|_| ())?;
                }
                Ok(_) | Err(SessionError::Replay { .. }) => {}
                Err(e) => debug!(error = %e, "caught-up publish skipped"),
            }
        }
        Ok(())
    }

    /// Signed in: serve until the master asks for a new sign-in or goes away.
    async fn serve(&mut self) -> Next {
        let hb_secs = self
            .session
            .established()
            .map(|e| e.heartbeat_interval)
            .unwrap_or(2)
            .max(1);
        let mut hb = tokio::time::interval(Duration::from_secs(hb_secs));
        hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let silence = Duration::from_secs(hb_secs * 4);
        loop {
            let sub_rx = async {
                match self.sub.as_mut() {
                    Some((_, rx)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return Next::Stop,
                m = self.dealer_rx.recv() => {
                    let Some((_, frames)) = m else { return Next::Stop };
                    last_heard = Instant::now();
                    let Some(frame) = frames.last() else { continue };
                    match self.session.open_reply(frame) {
                        Ok(ServerMsg::Reply(Reply { body: ReplyBody::Publishes(frames), .. })) => {
                            if self.caught_up(frames).await.is_err() {
                                return Next::Stop;
                            }
                        }
                        Ok(ServerMsg::Reply(r)) => {
                            let pending = self.pending.ack(r.req_id);
                            if let ReplyBody::Refused(why) = &r.body {
                                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                                // A question's refusal is its answer; the
                                // asker reports it.
                                if !matches!(pending, Some((_, Some(Waiter::Answer(_))))) {
                                    warn!(reason = %why, "master refused a request");
                                }
                            }
                            if let Some((_, Some(waiter))) = pending {
                                waiter.answer(r.body);
                            }
                        }
                        // Clear text, so anyone could have sent it: acted
                        // on at most once per REAUTH_HINT_GAP.
                        Ok(ServerMsg::ReAuth) => {
                            if self.session.reauth_hint() {
                                info!("master asks for a new sign-in");
                                return Next::SignIn;
                            }
                            let n = self.stats.reauth_ignored.fetch_add(1, Ordering::Relaxed) + 1;
                            if n.is_power_of_two() {
                                info!(count = n, "sign-in request ignored: signed in moments ago");
                            }
                        }
                        Ok(ServerMsg::Error(e)) => warn!(error = %e, "master reported an error"),
                        Ok(ServerMsg::AuthReply(_)) | Ok(ServerMsg::Challenge { .. }) => {}
                        Err(e) => debug!(error = %e, "unreadable reply"),
                    }
                }
                m = sub_rx => {
                    let Some((_, frames)) = m else { return Next::SignIn };
                    let Some(payload) = frames.get(1) else {
                        self.stats.bad_publishes.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    match self.session.open_publish(payload) {
                        Ok(PubEvent::Job(mut job)) => {
                            self.stats.jobs.fetch_add(1, Ordering::Relaxed);
                            if let Some(t) = job.trace.as_mut() {
                                t.push(Stamp { who: self.cfg.id.clone(), what: "recv".into(), us: now_us() });
                            }
                            if self.jobs.send(*job).await.is_err() {
                                return Next::Stop;
                            }
                        }
                        Ok(PubEvent::KeyUpdated) => debug!("publish key updated"),
                        Ok(PubEvent::NotForUs) => {}
                        Ok(PubEvent::Reauth) => {
                            let max = self.cfg.timings.random_reauth_delay.max(1) * 1000;
                            let d = Duration::from_millis(rand::thread_rng().gen_range(0..max));
                            info!(delay_ms = d.as_millis() as u64, "master restarted; signing in again");
                            return Next::SignInAfter(d);
                        }
                        Err(SessionError::UnknownPublishKey { .. }) => {
                            info!("publish under a key we do not hold; signing in again");
                            return Next::SignIn;
                        }
                        Err(e @ SessionError::Replay { .. }) => {
                            self.stats.replays.fetch_add(1, Ordering::Relaxed);
                            warn!(error = %e, "publish refused");
                        }
                        Err(e) => {
                            let n = self.stats.bad_publishes.fetch_add(1, Ordering::Relaxed) + 1;
                            if n.is_power_of_two() {
                                warn!(error = %e, count = n, "publish refused");
                            }
                        }
                    }
                }
                r = self.requests.recv() => {
                    let Some((body, ack)) = r else { return Next::Stop };
                    self.send_request(body, ack);
                }
                _ = async {
                    match self.catchup.first() {
                        Some(t) => tokio::time::sleep_until((*t).into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.catchup.remove(0);
                    if let Some(after_seq) = self.session.catchup_after() {
                        self.send_request(RequestBody::Catchup { after_seq }, None);
                    }
                }
                _ = hb.tick() => {
                    if last_heard.elapsed() > silence {
                        info!(silent_s = last_heard.elapsed().as_secs(), "no answer from the master; signing in again");
                        self.reconnect();
                        return Next::SignIn;
                    }
                    self.send_request(RequestBody::Heartbeat, None);
                    // Resend what has waited too long for an answer
                    // (the wait doubles with each attempt).
                    for ((body, ack), attempts) in self.pending.due(Instant::now(), 1000) {
                        self.stats.resent.fetch_add(1, Ordering::Relaxed);
                        self.send_request_again(body, ack, attempts);
                    }
                }
            }
        }
    }
}

/// A configured master name to watch: the option (`master`,
/// `syndic_master`), its value, where it was set and the main config file
/// (named when the option was not set at all).
#[derive(Debug, Clone)]
pub struct MasterName {
    pub key: &'static str,
    pub host: String,
    pub port: u16,
    pub origin: String,
    pub main_file: std::path::PathBuf,
}

/// First wait between name lookups; doubles up to the caller's bound.
const RESOLVE_FIRST_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Resolve the master's name until it resolves or `shutdown`: the first
/// failure is logged at WARN with the name, the option and the file it
/// came from (libzmq retries an unresolvable name silently, so a minion
/// left with Salt's default `salt` would otherwise wait forever without a
/// word), later ones at debug with back-off up to `max_wait`. An IP
/// address needs no lookup.
pub async fn watch_master_name(
    name: MasterName,
    max_wait: std::time::Duration,
    shutdown: CancellationToken,
) {
    if name.host.parse::<std::net::IpAddr>().is_ok() {
        return;
    }
    let mut warned = false;
    let mut wait = RESOLVE_FIRST_WAIT;
    let mut failures = 0u64;
    loop {
        let res = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::net::lookup_host((name.host.as_str(), name.port)) => r,
        };
        let why = match res {
            Ok(mut addrs) => match addrs.next() {
                Some(addr) => {
                    if warned {
                        info!(master = %name.host, address = %addr, failures, "the master's name resolves now");
                    } else {
                        debug!(master = %name.host, address = %addr, "master name resolved");
                    }
                    return;
                }
                None => "no addresses".to_string(),
            },
            Err(e) => e.to_string(),
        };
        failures += 1;
        if !warned {
            warned = true;
            if name.origin == crate::config::DEFAULTS_ORIGIN {
                warn!(
                    key = name.key,
                    master = %name.host,
                    file = %name.main_file.display(),
                    error = %why,
                    "{} is not set in the config file and the default name does not resolve; set {} to the master's host name or address (still retrying)",
                    name.key,
                    name.key
                );
            } else {
                warn!(
                    key = name.key,
                    master = %name.host,
                    file = %name.origin,
                    error = %why,
                    "cannot resolve the master's name; fix {} or the resolver (still retrying)",
                    name.key
                );
            }
        } else {
            debug!(master = %name.host, failures, retry_in_ms = wait.as_millis() as u64, error = %why, "master name still does not resolve");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(max_wait.max(RESOLVE_FIRST_WAIT));
    }
}
