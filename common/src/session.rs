//! The client side of the protocol, without I/O: sign-in, sealing requests,
//! opening replies and publishes.
//!
//! The real minion, the syndic's upstream link and the load test's
//! simulated minions all drive one [`ClientSession`], so they speak exactly
//! the same protocol. It keeps three invariants:
//! - the master's key is pinned: the first accepted answer pins it (unless
//!   `master_finger` fixed it in advance) and a different key later is
//!   refused;
//! - a sign-in proves possession of the peer's key: it signs the master's
//!   one-time challenge ([`ClientSession::answer_challenge`]);
//! - clear-text answers nobody signed (`ReAuth`, refusals) cost at most a
//!   bounded retry: a `ReAuth` is acted on at most once per
//!   [`REAUTH_HINT_GAP`] ([`ClientSession::reauth_hint`]);
//! - requests carry a strictly increasing `seq` (the master refuses replays);
//! - publishes must be signed by the publish signing key that the pinned
//!   key vouched for in its sign-in answer, newer than every publish
//!   seen before (replays and stale publishes are refused) and sealed under
//!   the current publish key.

use crate::codec::{self, ProtoError};
use crate::crypto::{self, AesKey, CryptoError, KeyPair, PubVerifier, PublicKey};
use crate::proto::*;
use rand::RngCore;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Publish signatures already found valid, for clients in one process that
/// receive the very same publish bytes (the simulated minions of a loadtest
/// worker, where thousands of "hosts" share two cores). A check is a pure
/// function of (master key, body, signature): only valid triples are kept,
/// compared byte for byte, and only the last few. A real minion checks
/// every publish itself ([`ClientSession::open_publish`]).
#[derive(Debug, Default)]
pub struct SignatureMemo {
    recent: std::collections::VecDeque<(Vec<u8>, Vec<u8>, [u8; 32])>,
    /// Checks answered from the memo.
    pub hits: u64,
    /// Checks done with the key (Ed25519).
    pub checks: u64,
}

/// Valid signatures a [`SignatureMemo`] keeps.
const SIGNATURE_MEMO: usize = 32;

impl SignatureMemo {
    fn verify(&mut self, key: &PubVerifier, body: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        let known = self
            .recent
            .iter()
            .any(|(s, b, k)| s == sig && b == body && k == key.as_bytes());
        if known {
            self.hits += 1;
            return Ok(());
        }
        self.checks += 1;
        key.verify(body, sig)?;
        if self.recent.len() >= SIGNATURE_MEMO {
            self.recent.pop_back();
        }
        self.recent
            .push_front((sig.to_vec(), body.to_vec(), *key.as_bytes()));
        Ok(())
    }
}

/// How long a peer waits for the master's first answer (the challenge)
/// to a sign-in before it tries again on a new connection.
pub const SIGN_IN_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// How long a sign-in whose challenge the master answered waits for the
/// acceptance before it is sent again. The master answers challenges at
/// once but queues the proofs for its few RSA workers, in order: 5000
/// peers signing in at once (a master restart) wait up to ~40 s on a
/// 2-core box. Sending again after a few seconds only queued one more RSA
/// check per peer (the master accepted both, the second replacing the
/// first's session): in the load test ~1900 of 5000 were resent and the
/// backlog grew by a third. As long as the master's challenge stays valid
/// (60 s), waiting for the answer is the fastest way in.
pub const SIGN_IN_PROVEN_WAIT: Duration = Duration::from_secs(60);

/// How long a client waits for the acknowledgement of a reliable request
/// before sending it again, after `attempt` earlier sends (1 = the first).
/// Doubling from 10 s to at most 160 s: an overloaded master that answers
/// late is not flooded with copies of everything it has not answered yet.
pub fn resend_after(attempt: u32) -> Duration {
    Duration::from_secs(10 << attempt.saturating_sub(1).min(4))
}

/// Reliable requests a client has not had acknowledged yet, with their
/// resend schedule ([`resend_after`]): the minion link's and the load
/// test's simulated minions'. Bounded: past `max`, the oldest is dropped.
///
/// A request past its resend time goes again only when it looks lost, not
/// merely queued: when the master has acknowledged nothing for
/// `resend_after(0)` (the link is stalled), or has acknowledged a newer
/// request (this one was overtaken). A master that is busy but answering
/// in order is not sent copies of what it is still working through: with
/// a fixed timeout, a syndic 10 s behind was sent 550000 copies of 1.2 M
/// returns in a minute, which kept it behind.
#[derive(Debug)]
pub struct Unacked<T> {
    /// Sent under the current session, by request id.
    sent: std::collections::BTreeMap<u64, (T, Instant, u32)>,
    /// Kept while signed out (with their earlier sends), oldest first.
    held: std::collections::VecDeque<(T, u32)>,
    max: usize,
    /// When the master last acknowledged anything.
    last_ack: Option<Instant>,
    /// The newest request id it acknowledged.
    newest_acked: u64,
}

impl<T> Unacked<T> {
    pub fn new(max: usize) -> Self {
        Self {
            sent: Default::default(),
            held: Default::default(),
            max: max.max(1),
            last_ack: None,
            newest_acked: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.sent.len() + self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for one more; true when the oldest had to go.
    fn room(&mut self) -> bool {
        if self.len() < self.max {
            return false;
        }
        self.sent.pop_first().is_some() || self.held.pop_front().is_some()
    }

    /// `item` went out as request `req_id` after `attempts` earlier sends.
    /// True when the oldest entry was dropped to stay within the bound.
    pub fn sent(&mut self, req_id: u64, item: T, attempts: u32) -> bool {
        let dropped = self.room();
        let attempts = attempts.saturating_add(1);
        let due = Instant::now() + resend_after(attempts);
        self.sent.insert(req_id, (item, due, attempts));
        dropped
    }

    /// Keep `item` (sent `attempts` times so far) for the next session.
    /// True when the oldest entry was dropped to stay within the bound.
    pub fn hold(&mut self, item: T, attempts: u32) -> bool {
        let dropped = self.room();
        self.held.push_back((item, attempts));
        dropped
    }

    /// The master answered request `req_id`.
    pub fn ack(&mut self, req_id: u64) -> Option<T> {
        self.acked_at(req_id, Instant::now())
    }

    fn acked_at(&mut self, req_id: u64, now: Instant) -> Option<T> {
        self.last_ack = Some(now);
        self.newest_acked = self.newest_acked.max(req_id);
        self.sent.remove(&req_id).map(|(item, _, _)| item)
    }

    /// Takes up to `max` entries whose resend time has come and that look
    /// lost (see the type's doc), with their sends so far.
    pub fn due(&mut self, now: Instant, max: usize) -> Vec<(T, u32)> {
        let stalled = self
            .last_ack
            .is_none_or(|t| now.saturating_duration_since(t) >= resend_after(0));
        let newest = self.newest_acked;
        let ids: Vec<u64> = self
            .sent
            .iter()
            .filter(|(id, (_, due, _))| *due <= now && (stalled || **id < newest))
            .map(|(id, _)| *id)
            .take(max)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.sent.remove(&id))
            .map(|(item, _, attempts)| (item, attempts))
            .collect()
    }

    /// Takes everything (a new session sends it all again), oldest first.
    pub fn take_all(&mut self) -> Vec<(T, u32)> {
        self.last_ack = None;
        self.newest_acked = 0;
        let mut all: Vec<(T, u32)> = std::mem::take(&mut self.sent)
            .into_values()
            .map(|(item, _, attempts)| (item, attempts))
            .collect();
        all.extend(std::mem::take(&mut self.held));
        all
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("master key {got} does not match the pinned/expected key {want}")]
    MasterKeyMismatch { got: String, want: String },
    #[error("sign-in answer does not echo our nonce (replayed answer)")]
    NonceMismatch,
    #[error("not signed in")]
    NotSignedIn,
    #[error("publish {seq} is not newer than {last} (replay or stale)")]
    Replay { seq: u64, last: u64 },
    #[error("publish uses key {got}, we hold key {want}: sign in again")]
    UnknownPublishKey { got: u32, want: u32 },
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    #[error("sign-in challenge for an earlier attempt (stale)")]
    StaleChallenge,
}

/// A clear-text `ReAuth` is not authenticated (the master has no session
/// to seal it with), so anyone on the path could send one. A peer acts on
/// one at most this often, counting from its last sign-in: a forged one
/// costs one extra sign-in, a flood of them no more. A real master restart
/// is also announced by a signed publish, and a silent master is noticed
/// by the heartbeat.
pub const REAUTH_HINT_GAP: Duration = Duration::from_secs(10);

/// What an accepted sign-in established.
#[derive(Debug, Clone)]
pub struct Established {
    pub master_id: String,
    pub publish_port: u16,
    pub key_id: u32,
    pub publish_key: AesKey,
    pub session_key: AesKey,
    pub heartbeat_interval: u64,
}

/// Result of handling a sign-in answer.
#[derive(Debug, Clone, PartialEq)]
pub enum SignInOutcome {
    /// Signed in. `pin` is the master's key when it was seen for the first
    /// time: the caller stores it (`minion_master.pub`).
    Accepted {
        pin: Option<String>,
    },
    Pending,
    Rejected,
    Denied,
}

/// A message from the master on the request channel.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMsg {
    Reply(Reply),
    AuthReply(AuthReply),
    /// First-round answer of a sign-in: answer it with
    /// [`ClientSession::answer_challenge`].
    Challenge {
        nonce: Vec<u8>,
        challenge: Vec<u8>,
    },
    ReAuth,
    Error(String),
}

/// A publish, opened.
#[derive(Debug, Clone, PartialEq)]
pub enum PubEvent {
    Job(Box<JobLoad>),
    /// The publish key was rotated and we got the new one.
    KeyUpdated,
    /// A key update addressed to someone else (should not reach us).
    NotForUs,
    /// The master asks every peer to sign in again.
    Reauth,
}

pub struct ClientSession {
    pub id: String,
    role: Role,
    keys: Arc<KeyPair>,
    master_pub: Option<PublicKey>,
    /// The master's publish signing key, from its last RSA-signed
    /// sign-in answer (kept across sessions: a restarted master's
    /// `Reauth` is signed with the same key).
    pub_verifier: Option<PubVerifier>,
    master_finger: Option<String>,
    nonce: Vec<u8>,
    est: Option<Established>,
    /// Whether any sign-in of this process was accepted (the first one sets
    /// the replay floor; later ones keep the window and catch up).
    signed_in_before: bool,
    seq: u64,
    req_id: u64,
    pubs: SeqWindow,
    max_frame: usize,
    /// When a sign-in was last accepted or a `ReAuth` last acted on.
    last_reauth: Option<Instant>,
}

impl ClientSession {
    /// `pinned`: the master key stored from an earlier contact;
    /// `master_finger`: a fingerprint configured in advance.
    pub fn new(
        id: &str,
        role: Role,
        keys: Arc<KeyPair>,
        pinned: Option<PublicKey>,
        master_finger: Option<String>,
        max_frame: usize,
    ) -> Self {
        Self {
            id: id.to_string(),
            role,
            keys,
            master_pub: pinned,
            pub_verifier: None,
            master_finger: master_finger.map(|f| f.trim().to_ascii_lowercase()),
            nonce: Vec::new(),
            est: None,
            signed_in_before: false,
            seq: 0,
            req_id: 0,
            pubs: SeqWindow::default(),
            max_frame,
            last_reauth: None,
        }
    }

    pub fn established(&self) -> Option<&Established> {
        self.est.as_ref()
    }

    pub fn is_signed_in(&self) -> bool {
        self.est.is_some()
    }

    /// Forget the session (the master asked for a new sign-in).
    pub fn drop_session(&mut self) {
        self.est = None;
    }

    pub fn master_pub(&self) -> Option<&PublicKey> {
        self.master_pub.as_ref()
    }

    /// A fresh sign-in (first round, new nonce each time): the master
    /// answers with a challenge ([`ServerMsg::Challenge`]).
    pub fn auth_frame(&mut self) -> Result<Vec<u8>, SessionError> {
        let mut nonce = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.nonce = nonce;
        Ok(codec::encode_wire(Wire::Auth(
            self.auth_request(Vec::new()),
        ))?)
    }

    fn auth_request(&self, challenge: Vec<u8>) -> AuthRequest {
        AuthRequest {
            id: self.id.clone(),
            pub_pem: self.keys.public().pem().to_string(),
            nonce: self.nonce.clone(),
            role: self.role,
            challenge,
            sig: Vec::new(),
        }
    }

    /// The second round of a sign-in: the request again, with the master's
    /// challenge signed by our key (one RSA signature per sign-in). A
    /// challenge that does not echo the current attempt's nonce is refused
    /// ([`SessionError::StaleChallenge`]).
    pub fn answer_challenge(
        &self,
        nonce: &[u8],
        challenge: Vec<u8>,
    ) -> Result<Vec<u8>, SessionError> {
        if self.nonce.is_empty() || nonce != self.nonce.as_slice() {
            return Err(SessionError::StaleChallenge);
        }
        let mut req = self.auth_request(challenge);
        req.sig = self.keys.sign(&req.proof_bytes()?)?;
        Ok(codec::encode_wire(Wire::Auth(req))?)
    }

    /// A clear-text `ReAuth` arrived: whether to act on it now (see
    /// [`REAUTH_HINT_GAP`]). Acting on it counts as a sign-in attempt.
    pub fn reauth_hint(&mut self) -> bool {
        self.reauth_hint_at(Instant::now())
    }

    fn reauth_hint_at(&mut self, now: Instant) -> bool {
        let recent = self
            .last_reauth
            .is_some_and(|t| now.saturating_duration_since(t) < REAUTH_HINT_GAP);
        if recent {
            return false;
        }
        self.last_reauth = Some(now);
        true
    }

    /// Check and apply the master's answer to our sign-in.
    pub fn handle_auth_reply(&mut self, reply: &AuthReply) -> Result<SignInOutcome, SessionError> {
        match reply.status {
            AuthStatus::Pending => return Ok(SignInOutcome::Pending),
            AuthStatus::Rejected => return Ok(SignInOutcome::Rejected),
            AuthStatus::Denied => return Ok(SignInOutcome::Denied),
            AuthStatus::Accepted => {}
        }
        let accept: AuthAccept = codec::decode(&reply.accept, self.max_frame)?;
        let offered = PublicKey::from_pem(&accept.master_pub_pem)?;
        let mut pin = None;
        match (&self.master_pub, &self.master_finger) {
            (Some(p), _) if p.pem() != offered.pem() => {
                return Err(SessionError::MasterKeyMismatch {
                    got: offered.fingerprint(),
                    want: p.fingerprint(),
                })
            }
            (Some(_), _) => {}
            (None, Some(f)) if offered.fingerprint() != *f => {
                return Err(SessionError::MasterKeyMismatch {
                    got: offered.fingerprint(),
                    want: f.clone(),
                })
            }
            (None, _) => pin = Some(offered.pem().to_string()),
        }
        offered.verify(&reply.accept, &reply.sig)?;
        if accept.nonce.is_empty() || accept.nonce != self.nonce {
            return Err(SessionError::NonceMismatch);
        }
        let pub_verifier = PubVerifier::from_bytes(&accept.pub_sign_key)?;
        let publish_key = AesKey::from_slice(&self.keys.decrypt(&accept.publish_key)?)?;
        let session_key = AesKey::from_slice(&self.keys.decrypt(&accept.session_key)?)?;
        if pin.is_some() {
            self.master_pub = Some(offered);
        }
        self.pub_verifier = Some(pub_verifier);
        let same_key = self.est.as_ref().map(|e| e.key_id) == Some(accept.key_id);
        if !same_key {
            // A new publish key cannot open old publishes, so the replay
            // window starts again with it.
            self.pubs = SeqWindow::default();
        }
        if !self.signed_in_before {
            // A fresh process runs nothing published before its first
            // sign-in: a publish captured earlier (before this process
            // restarted, say) and sent again is refused. Later sign-ins
            // keep the window, so what was published while the peer was
            // cut off can still be caught up ([`Self::catchup_after`]).
            self.pubs.raise_floor(accept.pub_seq);
            self.signed_in_before = true;
        }
        self.last_reauth = Some(Instant::now());
        self.est = Some(Established {
            master_id: accept.master_id,
            publish_port: accept.publish_port,
            key_id: accept.key_id,
            publish_key,
            session_key,
            heartbeat_interval: accept.heartbeat_interval,
        });
        self.seq = 0;
        Ok(SignInOutcome::Accepted { pin })
    }

    /// Seal a request; returns its `req_id` and the frame to send.
    pub fn seal(&mut self, body: RequestBody) -> Result<(u64, Vec<u8>), SessionError> {
        let est = self.est.as_ref().ok_or(SessionError::NotSignedIn)?;
        self.seq += 1;
        self.req_id += 1;
        let req = Request {
            seq: self.seq,
            req_id: self.req_id,
            body,
        };
        let data = est
            .session_key
            .seal(&crypto::aad_request(&self.id), &codec::encode(&req)?);
        let frame = codec::encode_wire(Wire::Sealed {
            id: self.id.clone(),
            data,
        })?;
        Ok((self.req_id, frame))
    }

    /// Decode a frame from the master's request channel.
    pub fn open_reply(&self, frame: &[u8]) -> Result<ServerMsg, SessionError> {
        match codec::decode_wire(frame, self.max_frame)? {
            Wire::SealedReply { data } => {
                let est = self.est.as_ref().ok_or(SessionError::NotSignedIn)?;
                let plain = est.session_key.open(&crypto::aad_reply(&self.id), &data)?;
                Ok(ServerMsg::Reply(codec::decode(&plain, self.max_frame)?))
            }
            Wire::AuthReply(r) => Ok(ServerMsg::AuthReply(r)),
            Wire::ReAuth => Ok(ServerMsg::ReAuth),
            Wire::Error(e) => Ok(ServerMsg::Error(e)),
            Wire::AuthChallenge { nonce, challenge } => {
                Ok(ServerMsg::Challenge { nonce, challenge })
            }
            Wire::Auth(_) | Wire::Sealed { .. } => {
                Err(SessionError::Unexpected("request from master"))
            }
        }
    }

    /// Verify and open a publish payload (the second frame after the topic).
    pub fn open_publish(&mut self, payload: &[u8]) -> Result<PubEvent, SessionError> {
        self.open_publish_memo(payload, None)
    }

    /// [`Self::open_publish`], taking signature checks already done by
    /// another session of this process from `memo`.
    pub fn open_publish_memo(
        &mut self,
        payload: &[u8],
        memo: Option<&mut SignatureMemo>,
    ) -> Result<PubEvent, SessionError> {
        let signed: SignedPub = codec::decode(payload, self.max_frame)?;
        if signed.v != PROTO_VERSION {
            return Err(ProtoError::Version(signed.v).into());
        }
        let body: PubBody = codec::decode(&signed.body, self.max_frame)?;
        // Jobs and re-auth requests must carry the master's publish
        // signature (Ed25519, its key vouched for by the RSA-signed sign-in
        // answer). A key update is sealed under our own session key, which
        // only the master shares with us: that authenticates it without a
        // signature per minion at every rotation.
        if !matches!(body.kind, PubKind::KeyUpdate { .. }) {
            let master = self
                .pub_verifier
                .as_ref()
                .ok_or(SessionError::NotSignedIn)?;
            match memo {
                Some(m) => m.verify(master, &signed.body, &signed.sig)?,
                None => master.verify(&signed.body, &signed.sig)?,
            }
        }
        match body.kind {
            PubKind::Reauth { key_id } => {
                // Not subject to the replay window: a restarted master
                // starts a new sequence; re-signing in is harmless. Peers
                // that already hold this master's key ignore it.
                match &self.est {
                    Some(est) if est.key_id == key_id => Ok(PubEvent::NotForUs),
                    _ => Ok(PubEvent::Reauth),
                }
            }
            PubKind::KeyUpdate { id, data } => {
                if id != self.id {
                    return Ok(PubEvent::NotForUs);
                }
                let est = self.est.as_mut().ok_or(SessionError::NotSignedIn)?;
                let plain = est
                    .session_key
                    .open(&crypto::aad_key_update(&self.id), &data)?;
                let (key_id, key): (u32, serde_bytes::ByteBuf) =
                    codec::decode(&plain, self.max_frame)?;
                // Key ids only grow: an old update replayed is refused.
                if key_id <= est.key_id {
                    return Err(SessionError::Replay {
                        seq: key_id as u64,
                        last: est.key_id as u64,
                    });
                }
                est.publish_key = AesKey::from_slice(&key)?;
                est.key_id = key_id;
                Ok(PubEvent::KeyUpdated)
            }
            PubKind::Job { key_id, data } => {
                let est = self.est.as_ref().ok_or(SessionError::NotSignedIn)?;
                if key_id != est.key_id {
                    return Err(SessionError::UnknownPublishKey {
                        got: key_id,
                        want: est.key_id,
                    });
                }
                let plain = est
                    .publish_key
                    .open(&crypto::aad_publish(&body.master_id, key_id), &data)?;
                self.check_seq(body.seq)?;
                Ok(PubEvent::Job(Box::new(codec::decode(
                    &plain,
                    self.max_frame,
                )?)))
            }
        }
    }

    fn check_seq(&mut self, seq: u64) -> Result<(), SessionError> {
        self.pubs.take(seq)
    }

    /// What to ask the master for after a sign-in
    /// ([`RequestBody::Catchup`]): every publish above the replay floor
    /// (the window refuses those already taken). For a fresh process the
    /// floor is its first sign-in, so it gets only what was published
    /// after it and missed while its subscription was not yet up. `None`
    /// before any sign-in.
    pub fn catchup_after(&self) -> Option<u64> {
        self.signed_in_before.then_some(self.pubs.floor)
    }
}

/// Publish sequence numbers already taken: everything up to `floor`, and
/// the newest ones above it one by one (a set, not a high-water mark, so a
/// publish missed and sent again later can still be taken once, after
/// newer ones).
#[derive(Debug, Default, Clone)]
struct SeqWindow {
    floor: u64,
    above: std::collections::BTreeSet<u64>,
}

/// Sequence numbers remembered one by one above the floor.
const SEQ_WINDOW: usize = 4096;

impl SeqWindow {
    fn take(&mut self, seq: u64) -> Result<(), SessionError> {
        if seq <= self.floor || self.above.contains(&seq) {
            return Err(SessionError::Replay {
                seq,
                last: self.above.last().copied().unwrap_or(self.floor),
            });
        }
        self.above.insert(seq);
        while self.above.len() > SEQ_WINDOW {
            if let Some(s) = self.above.pop_first() {
                self.floor = s;
            }
        }
        Ok(())
    }

    fn raise_floor(&mut self, to: u64) {
        self.floor = self.floor.max(to);
        self.above.retain(|s| *s > to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_back_off_to_a_cap() {
        let secs: Vec<u64> = (1..=7).map(|a| resend_after(a).as_secs()).collect();
        assert_eq!(secs, vec![10, 20, 40, 80, 160, 160, 160]);
        assert_eq!(resend_after(0).as_secs(), 10);
    }

    #[test]
    fn unacked_schedules_resends_and_stays_bounded() {
        let mut u: Unacked<&str> = Unacked::new(3);
        assert!(!u.sent(1, "a", 0));
        assert!(!u.hold("b", 2));
        assert!(!u.hold("c", 0));
        // Full: the oldest sent entry goes first.
        assert!(u.sent(2, "d", 1));
        assert_eq!(u.len(), 3);
        assert_eq!(u.ack(1), None);
        let now = Instant::now();
        assert!(u.due(now, 10).is_empty(), "nothing is due at once");
        // "d" was sent twice: due 20 s later, not 10.
        assert!(u.due(now + Duration::from_secs(15), 10).is_empty());
        assert_eq!(u.due(now + Duration::from_secs(21), 10), vec![("d", 2)]);
        assert_eq!(u.take_all(), vec![("b", 2), ("c", 0)]);
        assert!(u.is_empty());
        // Held entries never collide, however many come and go.
        for i in 0..3 {
            u.hold("x", i);
        }
        assert_eq!(u.take_all().len(), 3);
        u.sent(7, "y", 0);
        assert_eq!(u.ack(7), Some("y"));
    }

    #[test]
    fn a_master_answering_in_order_is_not_sent_copies() {
        let mut u: Unacked<&str> = Unacked::new(10);
        let t0 = Instant::now();
        u.sent(1, "a", 0);
        u.sent(2, "b", 0);
        u.sent(3, "c", 0);
        // Nothing acknowledged yet: past the resend time, everything goes.
        let late = t0 + Duration::from_secs(11);
        // The master is busy but answers in order: "a" at 11 s.
        assert_eq!(u.acked_at(1, late), Some("a"));
        assert!(
            u.due(late + Duration::from_secs(5), 10).is_empty(),
            "queued behind the master's backlog, not lost"
        );
        // It answers 3 but not 2: 2 was overtaken, so it is lost.
        assert_eq!(u.acked_at(3, late + Duration::from_secs(6)), Some("c"));
        assert_eq!(u.due(late + Duration::from_secs(6), 10), vec![("b", 1)]);
        // A silent master: everything past its time goes after 10 s of
        // silence.
        u.sent(4, "d", 0);
        let quiet = late + Duration::from_secs(6 + 10);
        assert!(u.due(quiet - Duration::from_secs(1), 10).is_empty());
        assert_eq!(u.due(quiet, 10), vec![("d", 1)]);
    }

    #[test]
    fn a_challenge_answer_proves_the_key_and_echoes_the_attempt() {
        let keys = Arc::new(KeyPair::generate().expect("key"));
        let mut s = ClientSession::new("m1", Role::Minion, keys.clone(), None, None, 1 << 20);
        let first = s.auth_frame().expect("frame");
        let Wire::Auth(req) = codec::decode_wire(&first, 1 << 20).expect("decode") else {
            panic!("not an auth frame")
        };
        assert!(req.challenge.is_empty() && req.sig.is_empty());
        assert!(matches!(
            s.answer_challenge(&[7u8; 32], b"c".to_vec()),
            Err(SessionError::StaleChallenge)
        ));
        let second = s
            .answer_challenge(&req.nonce, b"challenge".to_vec())
            .expect("answer");
        let Wire::Auth(signed) = codec::decode_wire(&second, 1 << 20).expect("decode") else {
            panic!("not an auth frame")
        };
        assert_eq!(signed.challenge, b"challenge");
        let proof = signed.proof_bytes().expect("proof");
        keys.public()
            .verify(&proof, &signed.sig)
            .expect("signature verifies");
        // The signature covers every field the master acts on.
        let mut other = signed.clone();
        other.role = Role::Syndic;
        assert!(keys
            .public()
            .verify(&other.proof_bytes().expect("proof"), &signed.sig)
            .is_err());
        other = signed.clone();
        other.id = "m2".into();
        assert!(keys
            .public()
            .verify(&other.proof_bytes().expect("proof"), &signed.sig)
            .is_err());
    }

    /// A master's accepted sign-in answer to `s`'s latest attempt, with
    /// `pub_sign_key` as its publish verifying key.
    fn accept_reply(s: &mut ClientSession, master: &KeyPair, pub_sign_key: Vec<u8>) -> AuthReply {
        let first = s.auth_frame().expect("frame");
        let Wire::Auth(req) = codec::decode_wire(&first, 1 << 20).expect("decode") else {
            panic!("not an auth frame")
        };
        let peer = PublicKey::from_pem(&req.pub_pem).expect("peer key");
        let accept = codec::encode(&AuthAccept {
            master_pub_pem: master.public().pem().to_string(),
            master_id: "top".into(),
            publish_port: 4505,
            key_id: 1,
            publish_key: peer.encrypt(AesKey::random().as_bytes()).expect("enc"),
            session_key: peer.encrypt(AesKey::random().as_bytes()).expect("enc"),
            nonce: req.nonce,
            heartbeat_interval: 5,
            pub_seq: 0,
            pub_sign_key,
        })
        .expect("encode");
        let sig = master.sign(&accept).expect("sign");
        AuthReply {
            status: AuthStatus::Accepted,
            accept,
            sig,
        }
    }

    #[test]
    fn publishes_verify_only_with_the_key_the_sign_in_answer_vouched_for() {
        let master = KeyPair::generate().expect("key");
        let signer = master.pub_signer().expect("signer");
        let keys = Arc::new(KeyPair::generate().expect("key"));
        let mut s = ClientSession::new("m1", Role::Minion, keys, None, None, 1 << 20);

        // No (or a malformed) publish key in the answer: no session.
        for bad in [vec![], vec![1u8; 31], vec![0u8; 32]] {
            let reply = accept_reply(&mut s, &master, bad);
            assert!(s.handle_auth_reply(&reply).is_err());
            assert!(!s.is_signed_in());
        }
        let reply = accept_reply(&mut s, &master, signer.verifier().as_bytes().to_vec());
        assert!(matches!(
            s.handle_auth_reply(&reply),
            Ok(SignInOutcome::Accepted { .. })
        ));

        let body = codec::encode(&PubBody {
            seq: 1,
            master_id: "top".into(),
            kind: PubKind::Reauth { key_id: 2 },
        })
        .expect("body");
        let publish = |sig: Vec<u8>| {
            codec::encode(&SignedPub {
                v: PROTO_VERSION,
                body: body.clone(),
                sig,
            })
            .expect("publish")
        };
        let other = KeyPair::generate()
            .expect("key")
            .pub_signer()
            .expect("signer");
        for (what, sig) in [
            ("the master's RSA key", master.sign(&body).expect("sign")),
            ("another master's publish key", other.sign(&body)),
            ("no signature", vec![]),
        ] {
            assert!(
                matches!(
                    s.open_publish(&publish(sig)),
                    Err(SessionError::Crypto(CryptoError::BadSignature))
                ),
                "signed with {what}"
            );
        }
        assert!(matches!(
            s.open_publish(&publish(signer.sign(&body))),
            Ok(PubEvent::Reauth)
        ));
    }

    #[test]
    fn the_replay_window_takes_each_publish_once_in_any_order() {
        let mut w = SeqWindow::default();
        w.take(10).expect("new");
        w.take(12).expect("new");
        // 11 was missed and comes later (caught up): taken once.
        w.take(11).expect("late but new");
        assert!(w.take(11).is_err() && w.take(12).is_err());
        w.raise_floor(20);
        assert!(w.take(15).is_err(), "below the floor");
        w.take(21).expect("new");
        for s in 100..100 + SEQ_WINDOW as u64 + 10 {
            w.take(s).expect("new");
        }
        assert!(w.above.len() <= SEQ_WINDOW);
        assert!(
            w.take(105).is_err(),
            "forgotten one by one: under the floor now"
        );
    }

    #[test]
    fn reauth_hints_are_acted_on_at_most_once_per_gap() {
        let keys = Arc::new(KeyPair::generate().expect("key"));
        let mut s = ClientSession::new("m1", Role::Minion, keys, None, None, 1 << 20);
        let t0 = Instant::now();
        assert!(s.reauth_hint_at(t0), "the first one is acted on");
        assert!(!s.reauth_hint_at(t0 + Duration::from_secs(1)));
        assert!(!s.reauth_hint_at(t0 + REAUTH_HINT_GAP - Duration::from_millis(1)));
        assert!(s.reauth_hint_at(t0 + REAUTH_HINT_GAP));
    }

    #[test]
    fn signature_memo_remembers_only_valid_exact_triples() {
        let a = KeyPair::generate()
            .expect("key")
            .pub_signer()
            .expect("signer");
        let b = KeyPair::generate()
            .expect("key")
            .pub_signer()
            .expect("signer");
        let (a_pub, b_pub) = (a.verifier(), b.verifier());
        let body = b"job body".to_vec();
        let sig = a.sign(&body);
        let mut memo = SignatureMemo::default();
        memo.verify(&a_pub, &body, &sig).expect("valid");
        memo.verify(&a_pub, &body, &sig).expect("valid again");
        assert_eq!((memo.checks, memo.hits), (1, 1));
        // Same signature, other body or other key: checked, and refused.
        assert!(memo.verify(&a_pub, b"job bodx", &sig).is_err());
        assert!(memo.verify(&b_pub, &body, &sig).is_err());
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(memo.verify(&a_pub, &body, &bad).is_err());
        assert_eq!((memo.checks, memo.hits), (4, 1));
        // Refusals are never remembered.
        assert!(memo.verify(&b_pub, &body, &sig).is_err());
        assert_eq!(memo.checks, 5);
    }
}
