//! The publisher: owns the PUB socket on `interface:publish_port` (4505).
//!
//! Jobs are sealed once under the current publish key and signed once with
//! the master key (RSA-PSS, ~2 ms), then sent to one topic per destination:
//! the broadcast topic for direct minions and each selected syndic's own
//! topic. Every publish carries a strictly increasing sequence number
//! (microseconds, never going backwards) so subscribers drop replays. Key
//! updates at rotation go to each peer's own topic, sealed under that
//! peer's session key.

use brine_common::codec;
use brine_common::crypto::{self, AesKey, KeyPair};
use brine_common::proto::*;
use brine_common::transport::{self, IoThread};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

pub struct Publisher {
    io: IoThread,
    key: Arc<KeyPair>,
    master_id: String,
    seq: AtomicU64,
    pub port: u16,
    pub published: AtomicU64,
}

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
        let sock = ctx.socket(zmq::PUB)?;
        transport::tune(&sock, backlog, hwm, transport::Side::Server)?;
        let endpoint = transport::tcp_endpoint(interface, port);
        sock.bind(&endpoint).map_err(|source| PublishError::Bind {
            endpoint: endpoint.clone(),
            source,
        })?;
        let port = transport::bound_port(&sock).unwrap_or(port);
        let (io, _rx) = IoThread::spawn(ctx, "publisher", vec![sock], &[0], 1)?;
        Ok(Self {
            io,
            key,
            master_id: master_id.to_string(),
            seq: AtomicU64::new(0),
            port,
            published: AtomicU64::new(0),
        })
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
        let body = codec::encode(&PubBody {
            seq: self.next_seq(),
            master_id: self.master_id.clone(),
            kind,
        })?;
        let sig = if sign { self.key.sign(&body)? } else { vec![] };
        Ok(codec::encode(&SignedPub {
            v: PROTO_VERSION,
            body,
            sig,
        })?)
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
        let frame = self.frame(PubKind::Job { key_id, data }, true)?;
        for t in topics {
            self.io.send(0, vec![t.clone(), frame.clone()])?;
        }
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
