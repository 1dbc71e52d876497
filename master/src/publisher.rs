//! The publisher: owns the PUB socket on `interface:publish_port` (4505).
//!
//! Jobs are sealed once under the current publish key and signed once with
//! the master's publish signing key (Ed25519, ~20 µs; derived from its RSA
//! key, `crypto::KeyPair::pub_signer`), then sent to one topic per destination:
//! the broadcast topic for direct minions and each selected syndic's own
//! topic. Every publish carries a strictly increasing sequence number
//! (microseconds, never going backwards) so subscribers drop replays. Key
//! updates at rotation go to each peer's own topic, sealed under that
//! peer's session key.
//!
//! The socket is an XPUB so that the io thread sees every subscription an
//! (unauthenticated) peer sends: libzmq would otherwise keep any number of
//! them, of any shape, in its subscription tree (8 MiB of subscriptions
//! cost 256 MiB). A [`SubscriptionGuard`] lets through only the topics a
//! minion or syndic uses (`B\0`, `S\0`, `M:<valid id>\0`), at most
//! [`MAX_SUBSCRIPTIONS_PER_PEER`] per connection, and closes the connection
//! of any peer that sends more or anything else, which frees all libzmq
//! kept for it. Inbound frames are capped at [`MAX_INBOUND_FRAME`] bytes,
//! so a forged frame header (up to 2^64 bytes) ends the connection before
//! anything is allocated. See docs/SECURITY.md for the measured bounds.

use brine_common::codec;
use brine_common::crypto::{self, AesKey, KeyPair, PubSigner, PubVerifier};
use brine_common::proto::*;
use brine_common::sync::lock;
use brine_common::transport::{self, ConnGuard, Guarded, IoThread, Verdict};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("could not bind the publisher on {endpoint}: {source}")]
    Bind {
        endpoint: String,
        #[source]
        source: zmq::Error,
    },
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    #[error(transparent)]
    Proto(#[from] codec::ProtoError),
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    #[error("zmq: {0}")]
    Zmq(#[from] zmq::Error),
}

/// Topic the syndics listen on for messages meant for all of them.
pub const TOPIC_SYNDICS: &[u8] = b"S\0";

/// Subscription messages (subscribe or cancel) one connection may send. A
/// minion sends two (`B\0` and its own topic), a syndic two (`S\0` and
/// its own); the rest is room for a peer that cancels and subscribes again.
pub const MAX_SUBSCRIPTIONS_PER_PEER: u32 = 8;

/// Largest frame accepted from a peer on the publish port. The longest
/// legitimate one is a subscription to `M:<255-byte id>\0` sent as a ZMTP
/// 3.1 SUBSCRIBE command (10 + 258 bytes); the READY command of a SUB is
/// shorter. libzmq checks it when it reads a frame header, before it
/// allocates the frame.
pub const MAX_INBOUND_FRAME: i64 = 1024;

/// Complete inbound messages libzmq queues per peer before it stops reading
/// that peer's connection: subscriptions are read off at once by the io
/// thread, so a short queue only limits what a flood gets into libzmq's
/// tree between two reads.
const SUBSCRIPTION_QUEUE: i32 = 16;

/// Marks a connection being closed until the monitor reports it gone.
const CLOSING: u32 = u32::MAX;

/// What the subscription guard refused (exported by `manage.stats`).
#[derive(Debug, Default)]
pub struct SubscriptionStats {
    /// Subscription messages refused: bad shape, unknown topic, too many.
    pub refused: AtomicU64,
    /// Connections to 4505 closed because of them.
    pub peers_dropped: AtomicU64,
}

/// Is `topic` one a minion or syndic subscribes to?
pub fn valid_topic(topic: &[u8]) -> bool {
    if topic == TOPIC_BROADCAST || topic == TOPIC_SYNDICS {
        return true;
    }
    let Some(id) = topic
        .strip_prefix(b"M:")
        .and_then(|t| t.strip_suffix(b"\0"))
    else {
        return false;
    };
    std::str::from_utf8(id).is_ok_and(crate::keys::KeyStore::valid_id)
}

/// Runs on the publisher's io thread: checks each subscription message and
/// counts them per connection (see the module doc).
pub struct SubscriptionGuard {
    per_peer: HashMap<i32, u32>,
    stats: Arc<SubscriptionStats>,
}

impl SubscriptionGuard {
    pub fn new(stats: Arc<SubscriptionStats>) -> Self {
        Self {
            per_peer: HashMap::new(),
            stats,
        }
    }

    fn refuse(&mut self, fd: i32, why: &'static str) -> Verdict {
        self.per_peer.insert(fd, CLOSING);
        let n = self.stats.refused.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.peers_dropped.fetch_add(1, Ordering::Relaxed);
        if n.is_power_of_two() {
            warn!(
                fd,
                refused = n,
                reason = why,
                "publish port: subscription refused; peer disconnected"
            );
        }
        Verdict::Disconnect
    }
}

impl ConnGuard for SubscriptionGuard {
    fn inspect(&mut self, fd: Option<i32>, frames: &[Vec<u8>]) -> Verdict {
        // Without a connection: libzmq's own notice that a departed peer's
        // topics are gone. Nothing to check.
        let Some(fd) = fd else {
            return Verdict::Drop;
        };
        let count = self.per_peer.entry(fd).or_insert(0);
        if *count == CLOSING {
            // What a refused peer still had in flight.
            return Verdict::Drop;
        }
        *count += 1;
        if *count > MAX_SUBSCRIPTIONS_PER_PEER {
            return self.refuse(fd, "too many subscriptions");
        }
        match frames {
            [f] => match f.split_first() {
                Some((1, topic)) if valid_topic(topic) => Verdict::Drop,
                Some((1, _)) => self.refuse(fd, "unknown topic"),
                // A cancel changes nothing we pay for; it is counted above.
                Some((0, _)) => Verdict::Drop,
                _ => self.refuse(fd, "not a subscription"),
            },
            _ => self.refuse(fd, "multipart message"),
        }
    }

    fn forget(&mut self, fd: i32) {
        self.per_peer.remove(&fd);
    }
}

pub struct Publisher {
    io: IoThread,
    /// Signs publishes (Ed25519, derived from the master's RSA key).
    signer: PubSigner,
    master_id: String,
    seq: AtomicU64,
    pub port: u16,
    pub published: AtomicU64,
    pub subscriptions: Arc<SubscriptionStats>,
    /// The newest job publishes, for peers that missed them.
    recent: Mutex<Recent>,
}

/// Job publishes kept for [`Publisher::recent_after`]: the newest
/// [`RECENT_MAX`], none older than [`RECENT_AGE`]. A peer cut off for a
/// moment (its subscription not back yet when the job went out: a syndic
/// frozen and resumed relays its backlog before its minions' SUB sockets
/// have reconnected) asks for them after it signs in again.
struct Recent {
    /// Oldest first.
    items: VecDeque<RecentPublish>,
    /// Bytes of the frames kept.
    bytes: usize,
}

/// One kept job publish.
struct RecentPublish {
    seq: u64,
    at: Instant,
    topics: Vec<Vec<u8>>,
    frame: Arc<Vec<u8>>,
}

/// Job publishes kept for late peers, at most.
pub const RECENT_MAX: usize = 1024;
/// Bytes of job publishes kept, at most (jobs are small; a few with large
/// arguments push the small ones out sooner).
pub const RECENT_BYTES: usize = 32 * 1024 * 1024;
/// How old a kept job publish may be.
pub const RECENT_AGE: Duration = Duration::from_secs(60);
/// Bytes of publishes one catch-up answer carries at most (it travels in
/// one frame); the peer asks again for the rest.
pub const CATCHUP_BYTES: usize = 4 * 1024 * 1024;

impl Publisher {
    pub fn bind(
        ctx: &zmq::Context,
        interface: &str,
        port: u16,
        hwm: i32,
        backlog: i32,
        key: Arc<KeyPair>,
        master_id: &str,
    ) -> Result<Self, PublishError> {
        let sock = ctx.socket(zmq::XPUB)?;
        transport::tune(&sock, backlog, hwm, transport::Side::Server)?;
        // Every subscription reaches the guard, duplicates included.
        sock.set_xpub_verbose(true)?;
        sock.set_maxmsgsize(MAX_INBOUND_FRAME)?;
        sock.set_rcvhwm(SUBSCRIPTION_QUEUE)?;
        let endpoint = transport::tcp_endpoint(interface, port);
        sock.bind(&endpoint).map_err(|source| PublishError::Bind {
            endpoint: endpoint.clone(),
            source,
        })?;
        let port = transport::bound_port(&sock).unwrap_or(port);
        let subscriptions = Arc::new(SubscriptionStats::default());
        let guard = Guarded {
            index: 0,
            guard: Box::new(SubscriptionGuard::new(subscriptions.clone())),
        };
        let signer = key.pub_signer()?;
        let (io, _rx) =
            IoThread::spawn_guarded(ctx, "publisher", vec![sock], &[0], 1, Some(guard))?;
        Ok(Self {
            io,
            signer,
            master_id: master_id.to_string(),
            seq: AtomicU64::new(0),
            port,
            published: AtomicU64::new(0),
            subscriptions,
            recent: Mutex::new(Recent {
                items: VecDeque::new(),
                bytes: 0,
            }),
        })
    }

    /// The public half of the publish signing key (sent in `AuthAccept`).
    pub fn verifier(&self) -> PubVerifier {
        self.signer.verifier()
    }

    /// The sequence number of the newest publish (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    fn next_seq(&self) -> u64 {
        let now = now_us();
        let prev = self.seq.fetch_max(now, Ordering::SeqCst);
        if prev >= now {
            self.seq.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            now
        }
    }

    fn frame(&self, kind: PubKind, sign: bool) -> Result<Vec<u8>, PublishError> {
        Ok(self.frame_seq(kind, sign)?.1)
    }

    /// A signed publish frame and its sequence number.
    fn frame_seq(&self, kind: PubKind, sign: bool) -> Result<(u64, Vec<u8>), PublishError> {
        let seq = self.next_seq();
        let body = codec::encode(&PubBody {
            seq,
            master_id: self.master_id.clone(),
            kind,
        })?;
        let sig = if sign {
            self.signer.sign(&body)
        } else {
            vec![]
        };
        Ok((
            seq,
            codec::encode(&SignedPub {
                v: PROTO_VERSION,
                body,
                sig,
            })?,
        ))
    }

    /// Job publishes newer than `after_seq` sent to any of `topics` in the
    /// last [`RECENT_AGE`], oldest first, at most [`CATCHUP_BYTES`].
    pub fn recent_after(&self, after_seq: u64, topics: &[Vec<u8>]) -> Vec<Arc<Vec<u8>>> {
        let g = lock(&self.recent);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for p in &g.items {
            if p.seq <= after_seq
                || p.at.elapsed() > RECENT_AGE
                || !p.topics.iter().any(|t| topics.contains(t))
            {
                continue;
            }
            bytes += p.frame.len();
            if bytes > CATCHUP_BYTES && !out.is_empty() {
                break;
            }
            out.push(p.frame.clone());
        }
        out
    }

    fn remember(&self, seq: u64, topics: &[Vec<u8>], frame: Arc<Vec<u8>>) {
        let mut g = lock(&self.recent);
        while g.items.len() >= RECENT_MAX
            || (!g.items.is_empty() && g.bytes + frame.len() > RECENT_BYTES)
            || g.items.front().is_some_and(|p| p.at.elapsed() > RECENT_AGE)
        {
            if let Some(p) = g.items.pop_front() {
                g.bytes -= p.frame.len();
            }
        }
        g.bytes += frame.len();
        g.items.push_back(RecentPublish {
            seq,
            at: Instant::now(),
            topics: topics.to_vec(),
            frame,
        });
    }

    /// Seal, sign and send one job to every topic in `topics`.
    pub fn publish_job(
        &self,
        job: &JobLoad,
        key_id: u32,
        key: &AesKey,
        topics: &[Vec<u8>],
    ) -> Result<(), PublishError> {
        if topics.is_empty() {
            return Ok(());
        }
        let data = key.seal(
            &crypto::aad_publish(&self.master_id, key_id),
            &codec::encode(job)?,
        );
        let (seq, frame) = self.frame_seq(PubKind::Job { key_id, data }, true)?;
        for t in topics {
            self.io.send(0, vec![t.clone(), frame.clone()])?;
        }
        self.remember(seq, topics, Arc::new(frame));
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Hand the new publish key to one peer, sealed under its session key.
    pub fn key_update(
        &self,
        id: &str,
        session: &AesKey,
        key_id: u32,
        key: &AesKey,
    ) -> Result<(), PublishError> {
        let plain = codec::encode(&(key_id, serde_bytes::Bytes::new(key.as_bytes())))?;
        let data = session.seal(&crypto::aad_key_update(id), &plain);
        let frame = self.frame(
            PubKind::KeyUpdate {
                id: id.to_string(),
                data,
            },
            false,
        )?;
        self.io.send(0, vec![topic_for(id), frame])?;
        Ok(())
    }

    /// Ask every minion and syndic to sign in again (sent at start).
    pub fn reauth_all(&self, key_id: u32) -> Result<(), PublishError> {
        let frame = self.frame(PubKind::Reauth { key_id }, true)?;
        self.io
            .send(0, vec![TOPIC_BROADCAST.to_vec(), frame.clone()])?;
        self.io.send(0, vec![TOPIC_SYNDICS.to_vec(), frame])?;
        Ok(())
    }

    pub fn dropped(&self) -> u64 {
        self.io.stats.dropped_hwm.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_topics_peers_use_are_valid() {
        for ok in [&b"B\0"[..], b"S\0", b"M:web1\0", b"M:a.b-c_d\0"] {
            assert!(valid_topic(ok), "{ok:?}");
        }
        for bad in [&b""[..], b"B", b"M:\0", b"M:web1", b"M:a/b\0", b"X:web1\0"] {
            assert!(!valid_topic(bad), "{bad:?}");
        }
        let long = [b"M:".to_vec(), vec![b'x'; 256], vec![0]].concat();
        assert!(!valid_topic(&long));
    }

    #[test]
    fn guard_closes_a_peer_that_subscribes_too_much_or_wrongly() {
        let stats = Arc::new(SubscriptionStats::default());
        let mut g = SubscriptionGuard::new(stats.clone());
        let sub = |t: &[u8]| vec![[&[1u8][..], t].concat()];
        for _ in 0..MAX_SUBSCRIPTIONS_PER_PEER {
            assert_eq!(g.inspect(Some(7), &sub(b"B\0")), Verdict::Drop);
        }
        assert_eq!(g.inspect(Some(7), &sub(b"B\0")), Verdict::Disconnect);
        // What it still had in flight is dropped without more counting.
        assert_eq!(g.inspect(Some(7), &sub(b"B\0")), Verdict::Drop);
        assert_eq!(g.inspect(Some(8), &sub(b"")), Verdict::Disconnect);
        assert_eq!(
            g.inspect(Some(9), &[b"\x01B\0".to_vec(), b"x".to_vec()]),
            Verdict::Disconnect
        );
        assert_eq!(stats.refused.load(Ordering::Relaxed), 3);
        // libzmq's own unsubscriptions carry no connection.
        assert_eq!(g.inspect(None, &[b"\0M:x\0".to_vec()]), Verdict::Drop);
        // A reused descriptor starts afresh.
        g.forget(7);
        assert_eq!(g.inspect(Some(7), &sub(b"M:web1\0")), Verdict::Drop);
    }
}
