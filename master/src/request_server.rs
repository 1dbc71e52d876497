//! The request server: the ROUTER socket on `ret_port` (4506), where
//! minions and syndics sign in and send sealed requests (returns,
//! heartbeats, grains, catch-up, roster reports, jobs from below).
//!
//! One task reads the socket's frames ([`request_loop`]); sign-ins are
//! screened there (a first round gets a one-time challenge, no RSA) and
//! the second round goes to at most one blocking RSA worker per CPU
//! ([`auth_workers`]). Nothing (sessions, roster, key store) is touched
//! before a peer has proven that it holds the key it presents. A sealed
//! request must open under its sender's session key and carry a fresh
//! sequence number; each request kind has its own handler. A request that
//! carries returns is acknowledged only once the job cache has committed
//! them. Queues are bounded and every drop is counted.

use crate::challenge::{Challenges, Check};
use crate::events;
use crate::keys::{KeyStore, SignIn};
use crate::sessions::Seq;
use crate::state::{bump, MasterState, PublishKey};
use brine_common::codec;
use brine_common::config::MasterConfig;
use brine_common::crypto::{self, AesKey, PublicKey};
use brine_common::proto::*;
use brine_common::transport::{self, IoThread};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// File server and pillar questions answered at once: each holds at most
/// one chunk (`file_buffer_size`) or one pillar in memory.
const QUERIES_RUNNING: usize = 32;

/// File server and pillar questions waiting or running; past this the
/// asker is told to ask again.
const QUERIES_WAITING: usize = 4096;

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

/// Why the request server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RequestServerError {
    #[error("zmq: {0}")]
    Zmq(#[from] zmq::Error),
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    #[error("could not bind the request server on {endpoint}: {source}")]
    Bind {
        endpoint: String,
        #[source]
        source: zmq::Error,
    },
}

/// A bound request port, not yet served.
pub(crate) struct Bound {
    router: IoThread,
    frames: mpsc::Receiver<(usize, transport::Frames)>,
    /// The port as bound (the config may say 0).
    pub(crate) port: u16,
    /// Connections closed by the unfinished-message guard (counted by the
    /// io thread).
    pub(crate) peers_dropped: Arc<AtomicU64>,
}

/// Bind the ROUTER socket on `interface:ret_port` and start its io thread.
pub(crate) fn bind(ctx: &zmq::Context, cfg: &MasterConfig) -> Result<Bound, RequestServerError> {
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
    let endpoint = transport::tcp_endpoint(&cfg.interface.to_string(), cfg.ret_port);
    router
        .bind(&endpoint)
        .map_err(|source| RequestServerError::Bind {
            endpoint: endpoint.clone(),
            source,
        })?;
    let port = transport::bound_port(&router).unwrap_or(cfg.ret_port);
    let peers_dropped = Arc::new(AtomicU64::new(0));
    let (router, frames) = IoThread::spawn_guarded(
        ctx,
        "request-server",
        vec![router],
        &[],
        REQUEST_QUEUE,
        Some(brine_common::unfinished::guarded(
            0,
            cfg.max_frame_bytes,
            peers_dropped.clone(),
        )?),
    )?;
    Ok(Bound {
        router,
        frames,
        port,
        peers_dropped,
    })
}

/// Serve a bound request port until `shutdown`: the request loop and the
/// sign-in workers.
pub(crate) fn spawn(
    state: Arc<MasterState>,
    bound: Bound,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let server = Arc::new(RequestServer {
        state,
        router: bound.router,
        challenges: Challenges::new(),
        queries_running: Arc::new(tokio::sync::Semaphore::new(QUERIES_RUNNING)),
        queries_waiting: AtomicUsize::new(0),
    });
    let (auth_tx, auth_rx) = mpsc::channel(AUTH_QUEUE);
    vec![
        tokio::spawn(auth_workers(server.clone(), auth_rx)),
        tokio::spawn(request_loop(server, bound.frames, auth_tx, shutdown)),
    ]
}

/// The request server's own parts beside the shared state.
struct RequestServer {
    state: Arc<MasterState>,
    /// Replies go out through the io thread that owns the socket.
    router: IoThread,
    challenges: Challenges,
    /// Questions answered at once (see [`RequestServer::answer_later`]).
    queries_running: Arc<tokio::sync::Semaphore>,
    /// Questions waiting or running.
    queries_waiting: AtomicUsize,
}

/// What a sealed request is, once opened and checked.
struct Opened {
    key: AesKey,
    role: Role,
    /// Size of the opened request (returns are capped by it).
    plain_len: usize,
    req: Request,
}

/// Sign-ins: RSA work on at most one blocking thread per CPU, so a burst
/// of sign-ins (every minion after a master restart) does not start a
/// blocking thread each.
async fn auth_workers(server: Arc<RequestServer>, mut rx: mpsc::Receiver<(Vec<u8>, AuthRequest)>) {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let permits = Arc::new(tokio::sync::Semaphore::new(cpus));
    while let Some((routing, req)) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            server.handle_auth(&routing, req);
            drop(permit);
        });
    }
}

async fn request_loop(
    server: Arc<RequestServer>,
    mut rx: mpsc::Receiver<(usize, transport::Frames)>,
    auth: mpsc::Sender<(Vec<u8>, AuthRequest)>,
    shutdown: CancellationToken,
) {
    let counters = server.state.counters();
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => m,
        };
        let Some((_, frames)) = msg else { return };
        if frames.len() != 2 {
            let n = bump(&counters.malformed_frames);
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
        let wire = match codec::decode_wire(&frames[1], server.state.cfg().max_frame_bytes) {
            Ok(w) => w,
            Err(e) => {
                let n = bump(&counters.malformed_frames);
                if n.is_power_of_two() {
                    warn!(error = %e, count = n, "malformed request dropped");
                }
                server.reply(routing, Wire::Error(format!("malformed request: {e}")));
                continue;
            }
        };
        match wire {
            Wire::Auth(req) => {
                let Some(req) = server.screen_auth(routing, req) else {
                    continue;
                };
                if auth.try_send((routing.clone(), req)).is_err() {
                    let n = bump(&counters.auth_dropped);
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
                server.handle_sealed(routing, &id, &data);
            }
            _ => {
                bump(&counters.malformed_frames);
                server.reply(routing, Wire::Error("unexpected message kind".into()));
            }
        }
    }
}

impl RequestServer {
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
        let counters = self.state.counters();
        if !KeyStore::valid_id(&req.id) || req.nonce.len() != 32 {
            bump(&counters.auth_refused);
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
                bump(&counters.auth_challenges);
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
                let n = bump(&counters.auth_replayed);
                if n.is_power_of_two() {
                    warn!(id = %req.id, count = n, "replayed sign-in refused (its challenge was used already)");
                }
                self.reply(routing, Wire::Error("replayed sign-in refused".into()));
            }
            Check::Busy => {
                let n = bump(&counters.auth_dropped);
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
        let st = &self.state;
        let counters = st.counters();
        let cfg = st.cfg();
        bump(&counters.auth_requests);
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
            let n = bump(&counters.auth_bad_proof);
            if n.is_power_of_two() {
                warn!(id = %req.id, count = n, "sign-in refused: its signature does not verify against the key it presents (someone else's public key?)");
            }
            return self.reply(
                routing,
                Wire::Error("sign-in refused: the signature does not prove the key".into()),
            );
        }
        if req.role == Role::Syndic && !cfg.order_masters {
            bump(&counters.auth_refused);
            warn!(id = %req.id, "syndic sign-in refused: set 'order_masters: True' on this master to accept syndics");
            return self.reply(routing, Wire::AuthReply(refuse(AuthStatus::Rejected)));
        }
        let peer = match st.keys().sign_in(&req.id, &req.pub_pem) {
            Ok(SignIn::Accepted(k)) => k,
            Ok(other) => {
                let (status, act) = match other {
                    SignIn::Pending => (AuthStatus::Pending, "pend"),
                    SignIn::Rejected => (AuthStatus::Rejected, "reject"),
                    _ => (AuthStatus::Denied, "denied"),
                };
                events::sign_in(st.events(), &req.id, act, &req.pub_pem);
                if status != AuthStatus::Pending {
                    bump(&counters.auth_refused);
                }
                info!(id = %req.id, status = ?status, "sign-in not accepted");
                return self.reply(routing, Wire::AuthReply(refuse(status)));
            }
            Err(e) => {
                bump(&counters.auth_refused);
                warn!(id = %req.id, error = %e, "sign-in failed");
                return self.reply(routing, Wire::Error(format!("sign-in failed: {e}")));
            }
        };
        if req.role == Role::Syndic && !st.keys().syndic_granted(&req.id, &peer) {
            bump(&counters.auth_refused);
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
        if st.sessions().full_for(&req.id, cfg.max_minions) {
            bump(&counters.auth_refused);
            warn!(id = %req.id, max_minions = cfg.max_minions, "sign-in refused: master is full");
            events::sign_in(st.events(), &req.id, "full", &req.pub_pem);
            return self.reply(routing, Wire::Error("master is full (max_minions)".into()));
        }
        let session = AesKey::random();
        let PublishKey {
            id: key_id,
            key: pkey,
        } = st.publish_key();
        let built = (|| -> Result<AuthReply, crypto::CryptoError> {
            let accept = AuthAccept {
                master_pub_pem: st.master_key().public().pem().to_string(),
                master_id: cfg.id.clone(),
                publish_port: st.publisher().port,
                key_id,
                publish_key: peer.encrypt(pkey.as_bytes())?,
                session_key: peer.encrypt(session.as_bytes())?,
                nonce: req.nonce.clone(),
                heartbeat_interval: cfg.heartbeat_interval,
                pub_seq: st.publisher().last_seq(),
                pub_sign_key: st.publisher().verifier().as_bytes().to_vec(),
            };
            let accept =
                codec::encode(&accept).map_err(|e| crypto::CryptoError::Rsa(e.to_string()))?;
            let sig = st.master_key().sign(&accept)?;
            Ok(AuthReply {
                status: AuthStatus::Accepted,
                accept,
                sig,
            })
        })();
        match built {
            Ok(reply) => {
                st.sessions().insert(&req.id, session, req.role);
                events::sign_in(st.events(), &req.id, "accept", &req.pub_pem);
                if req.role == Role::Syndic {
                    st.roster().syndic_seen(&req.id);
                }
                debug!(id = %req.id, role = ?req.role, "signed in");
                self.reply(routing, Wire::AuthReply(reply));
            }
            Err(e) => warn!(id = %req.id, error = %e, "could not build sign-in answer"),
        }
    }

    /// Open a sealed request from `id` and check its sequence number; on
    /// failure the peer has been answered (or the request dropped).
    fn open(&self, routing: &[u8], id: &str, data: &[u8]) -> Option<Opened> {
        let counters = self.state.counters();
        let Some((key, role)) = self.state.sessions().get(id) else {
            let n = bump(&counters.unknown_session);
            if n.is_power_of_two() {
                info!(id = %id.escape_debug(), count = n, "request without a session: asking to sign in again");
            }
            self.reply(routing, Wire::ReAuth);
            return None;
        };
        let plain = match key.open(&crypto::aad_request(id), data) {
            Ok(p) => p,
            Err(_) => {
                let n = bump(&counters.bad_seal);
                if n.is_power_of_two() {
                    warn!(id = %id.escape_debug(), count = n, "request does not open under the session key of the id it claims (forged or stale); refused");
                }
                self.reply(routing, Wire::ReAuth);
                return None;
            }
        };
        let plain_len = plain.len();
        let req: Request = match codec::decode(&plain, self.state.cfg().max_frame_bytes) {
            Ok(r) => r,
            Err(e) => {
                bump(&counters.malformed_frames);
                warn!(id = %id, error = %e, "malformed sealed request");
                return None;
            }
        };
        match self.state.sessions().advance(id, req.seq) {
            Seq::Fresh => {}
            Seq::NoSession => return None,
            Seq::Replayed => {
                bump(&counters.replays);
                warn!(id = %id, seq = req.seq, "replayed request refused");
                self.sealed_reply(
                    routing,
                    id,
                    &key,
                    Reply {
                        req_id: req.req_id,
                        body: ReplyBody::Refused(Refusal::Replayed),
                    },
                );
                return None;
            }
        }
        Some(Opened {
            key,
            role,
            plain_len,
            req,
        })
    }

    /// A sealed request: open it, hand it to the handler of its kind,
    /// answer (for returns, once they are committed).
    fn handle_sealed(self: &Arc<Self>, routing: &[u8], id: &str, data: &[u8]) {
        let Some(Opened {
            key,
            role,
            plain_len,
            req,
        }) = self.open(routing, id, data)
        else {
            return;
        };
        self.state.roster().touch(id);
        let carries_returns = matches!(
            req.body,
            RequestBody::Return(_) | RequestBody::SyndicReturns(_)
        );
        let body = match req.body {
            RequestBody::Hello { grains, .. } => {
                if role == Role::Minion {
                    events::minion_start(self.state.events(), id);
                }
                self.on_grains(id, role, grains)
            }
            RequestBody::Grains(grains) => self.on_grains(id, role, grains),
            RequestBody::Event(load) => self.on_event(id, load),
            RequestBody::SyndicEvents(evs) => self.on_syndic_events(id, role, evs),
            RequestBody::Heartbeat => ReplyBody::Ok,
            RequestBody::Catchup { after_seq } => self.on_catchup(id, role, after_seq),
            RequestBody::Return(ret) => self.on_return(id, role, ret, plain_len),
            RequestBody::SyndicReturns(rets) => self.on_syndic_returns(id, role, rets, plain_len),
            RequestBody::SyndicJob(load) => self.state.job_from_below(id, role, load),
            RequestBody::Roster(delta) => self.on_roster(id, role, &delta),
            q @ (RequestBody::FileFind { .. }
            | RequestBody::FileChunk { .. }
            | RequestBody::FileList { .. }
            | RequestBody::FilePush(_)
            | RequestBody::Pillar { .. }
            | RequestBody::PillarFor { .. }) => {
                return self.answer_later(routing, id, role, key, req.req_id, q);
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
            let server = self.clone();
            let routing = routing.to_vec();
            let id = id.to_string();
            self.state.jobs().after_commit(move |ok| {
                if ok {
                    server.sealed_reply(&routing, &id, &key, reply);
                } else {
                    debug!(id = %id, "returns not committed; not acknowledged (the sender will resend)");
                }
            });
        } else {
            self.sealed_reply(routing, id, &key, reply);
        }
    }

    /// File server and pillar questions: answered from a task (they read
    /// files, render templates or ask the master above), at most
    /// [`QUERIES_RUNNING`] at a time and [`QUERIES_WAITING`] waiting; past
    /// that the asker is told the master is busy (counted) and asks again.
    fn answer_later(
        self: &Arc<Self>,
        routing: &[u8],
        id: &str,
        role: Role,
        key: AesKey,
        req_id: u64,
        body: RequestBody,
    ) {
        if self.queries_waiting.fetch_add(1, Ordering::Relaxed) >= QUERIES_WAITING {
            self.queries_waiting.fetch_sub(1, Ordering::Relaxed);
            let n = bump(&self.state.counters().queries_busy);
            if n.is_power_of_two() {
                warn!(
                    count = n,
                    "file server or pillar question refused: too many waiting"
                );
            }
            let body = ReplyBody::Refused(Refusal::Unavailable("master busy, ask again".into()));
            return self.sealed_reply(routing, id, &key, Reply { req_id, body });
        }
        let server = self.clone();
        let routing = routing.to_vec();
        let id = id.to_string();
        tokio::spawn(async move {
            let permit = server.queries_running.clone().acquire_owned().await;
            server.queries_waiting.fetch_sub(1, Ordering::Relaxed);
            let Ok(_permit) = permit else { return };
            let state = server.state.clone();
            let body = match body {
                b @ (RequestBody::Pillar { .. } | RequestBody::PillarFor { .. }) => {
                    crate::pillar::serve(state, id.clone(), role, b).await
                }
                b => crate::fileserver::serve(state, id.clone(), role, b).await,
            };
            server.sealed_reply(&routing, &id, &key, Reply { req_id, body });
        });
    }

    /// `Hello` / `Grains`: a direct minion's grains go into the roster.
    fn on_grains(&self, id: &str, role: Role, grains: serde_json::Value) -> ReplyBody {
        if role == Role::Minion {
            self.state.roster().upsert_direct(id, grains);
        }
        ReplyBody::Ok
    }

    /// `Event`: a minion's event, checked ([`events::check_minion_event`])
    /// and fired on the bus in Salt's shape, or refused and counted.
    fn on_event(&self, id: &str, load: EventLoad) -> ReplyBody {
        let bus = self.state.events();
        let max = self.state.cfg().max_event_size;
        if let Err(why) = events::check_minion_event(id, &load.tag, &load.data, max) {
            bus.refuse(id, &why);
            return ReplyBody::Refused(Refusal::BadEvent(why));
        }
        let data = events::minion_event_data(id, &load.tag, load.data);
        bus.fire(&load.tag, data);
        ReplyBody::Ok
    }

    /// `SyndicEvents`: events a syndic forwarded from its bus, each
    /// checked ([`events::check_forwarded_event`]) and fired with its
    /// syndic path, or counted as refused; the batch is answered `Ok`
    /// unless the sender is not a syndic (events are not resent).
    fn on_syndic_events(&self, id: &str, role: Role, evs: Vec<ForwardedEvent>) -> ReplyBody {
        let bus = self.state.events();
        if role != Role::Syndic {
            bus.from_below_refused
                .fetch_add(evs.len() as u64, Ordering::Relaxed);
            bump(&self.state.counters().syndic_refused);
            return ReplyBody::Refused(Refusal::NotASyndic);
        }
        let max = self.state.cfg().max_event_size;
        let me = &self.state.cfg().id;
        for ev in evs {
            match events::check_forwarded_event(id, me, ev, max) {
                Ok((tag, data)) => {
                    bus.from_below.fetch_add(1, Ordering::Relaxed);
                    bus.fire(&tag, data);
                }
                Err(why) => {
                    let n = bus.from_below_refused.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        warn!(syndic = %id, count = n, why, "event forwarded from below refused");
                    }
                }
            }
        }
        ReplyBody::Ok
    }

    /// `Catchup`: the publishes after `after_seq` the peer may have missed.
    fn on_catchup(&self, id: &str, role: Role, after_seq: u64) -> ReplyBody {
        let own = topic_for(id);
        let topics = match role {
            Role::Minion => vec![TOPIC_BROADCAST.to_vec(), own],
            Role::Syndic => vec![crate::publisher::TOPIC_SYNDICS.to_vec(), own],
        };
        let frames = self.state.publisher().recent_after(after_seq, &topics);
        self.state
            .counters()
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

    /// `Return`: a minion's own return to a job sent to it.
    fn on_return(&self, id: &str, role: Role, mut ret: ReturnLoad, size: usize) -> ReplyBody {
        if ret.id != id || role != Role::Minion {
            let n = bump(&self.state.counters().forged_returns);
            warn!(sender = %id, claimed = %ret.id.escape_debug(), count = n, "return for another minion refused");
            ReplyBody::Refused(Refusal::ForeignReturn {
                sender: id.to_string(),
                claimed: ret.id,
            })
        } else if let Err(why) = self.state.admit_return(&ret) {
            ReplyBody::Refused(why.refusal(ret.jid.into()))
        } else {
            self.state.cap_return(&mut ret, size);
            self.state.accept_return(ret);
            ReplyBody::Ok
        }
    }

    /// `SyndicReturns`: a batch of returns from a syndic's subtree.
    fn on_syndic_returns(
        &self,
        id: &str,
        role: Role,
        batch: SyndicBatch,
        size: usize,
    ) -> ReplyBody {
        let st = &self.state;
        if role != Role::Syndic {
            bump(&st.counters().syndic_refused);
            return ReplyBody::Refused(Refusal::NotASyndic);
        }
        let (mut outside, mut not_admitted) = (0u64, 0u64);
        // Sizes are looked at one by one only when the whole batch is over
        // the limit (rare).
        let check_sizes = size > st.cfg().max_return_bytes;
        // An entry whose jid did not parse is refused alone, counted as a
        // return to a job this master never sent (inside the subtree).
        for minion in &batch.bad_jids {
            if !st.roster().behind(minion, id) {
                outside += 1;
                bump(&st.counters().syndic_refused);
            } else {
                not_admitted += 1;
                let n = bump(&st.counters().returns_unknown_job);
                if n.is_power_of_two() {
                    warn!(syndic = %id, minion = %minion.escape_debug(), count = n, "syndic return with a malformed jid refused");
                }
            }
        }
        for mut ret in batch.returns {
            if !st.roster().behind(&ret.id, id) {
                outside += 1;
                let n = bump(&st.counters().syndic_refused);
                if n.is_power_of_two() {
                    warn!(syndic = %id, minion = %ret.id.escape_debug(), count = n, "syndic return for a minion outside its subtree refused");
                }
            } else if st.admit_return(&ret).is_err() {
                not_admitted += 1;
            } else {
                if check_sizes {
                    let size = codec::encode(&ret).map_or(usize::MAX, |b| b.len());
                    st.cap_return(&mut ret, size);
                }
                st.accept_return(ret);
            }
        }
        if outside + not_admitted > 0 {
            ReplyBody::Refused(Refusal::SyndicReturns {
                syndic: id.to_string(),
                outside,
                not_admitted,
            })
        } else {
            ReplyBody::Ok
        }
    }

    /// `Roster`: a syndic reports its subtree (a delta).
    fn on_roster(&self, id: &str, role: Role, delta: &RosterDelta) -> ReplyBody {
        let st = &self.state;
        if role != Role::Syndic {
            bump(&st.counters().syndic_refused);
            return ReplyBody::Refused(Refusal::NotASyndic);
        }
        let out = st
            .roster()
            .apply_syndic_delta(id, delta, |m| st.keys().is_accepted(m));
        if !out.refused.is_empty() {
            let n = st
                .counters()
                .roster_claims_refused
                .fetch_add(out.refused.len() as u64, Ordering::Relaxed);
            let (first, why) = &out.refused[0];
            warn!(syndic = %id, refused = out.refused.len(), first = %first.escape_debug(), reason = ?why, total = n + out.refused.len() as u64, "roster report names ids that belong to someone else; refused (see manage.list_syndics)");
        }
        for (m, from) in &out.moved {
            info!(minion = %m, from = %from, to = %id, "minion moved to another syndic (the one before is gone)");
        }
        ReplyBody::Ok
    }
}
