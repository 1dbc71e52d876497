//! Wire types: every message that crosses a socket, in one place.
//!
//! Three channels carry these types:
//! - the **publish channel** (master PUB on `publish_port`, 4505): frames
//!   `[topic, msgpack(SignedPub)]`; see [`PubBody`];
//! - the **request channel** (master ROUTER on `ret_port`, 4506, minion
//!   DEALER): one frame `msgpack(Envelope)` each way; see [`Wire`];
//! - the **local client channel** (unix socket in `sock_dir`) used by the
//!   CLIs; see [`client`].
//!
//! Every envelope carries [`PROTO_VERSION`]; decoding (see [`crate::codec`])
//! enforces a maximum frame size and never panics on hostile bytes. The
//! request and event message sets are open enums so later request kinds
//! (file server, pillar, events) are additions, not breaking changes.

pub mod client;
pub mod files;

pub use files::{FileMeta, ListKind, PushChunk, SealedPillar};

use crate::jid::Jid;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
/// Bytes that encode as a msgpack binary (re-exported for the crates that
/// read [`ReplyBody::Publishes`]).
pub use serde_bytes::ByteBuf;
use serde_json::Value;
use std::collections::BTreeMap;

/// Version of the wire format; a peer with another version is refused with
/// a clear error instead of a confusing decode failure.
pub const PROTO_VERSION: u8 = 1;

/// Topic every minion and syndic subscribes to.
pub const TOPIC_BROADCAST: &[u8] = b"B\0";

/// Topic that reaches one minion (or one syndic) only. The trailing NUL keeps
/// `web1` from also subscribing to `web10` (zmq subscriptions are prefixes).
pub fn topic_for(id: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(id.len() + 3);
    t.extend_from_slice(b"M:");
    t.extend_from_slice(id.as_bytes());
    t.push(0);
    t
}

/// How a target expression is to be read (Salt's `tgt_type`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum TargetType {
    #[default]
    Glob,
    Pcre,
    List,
    Grain,
    GrainPcre,
    Ipcidr,
    Compound,
    Nodegroup,
    /// `-I`: a glob on a key path of the minion's compiled pillar.
    Pillar,
    /// `-J`: a regex on a key path of the minion's compiled pillar.
    PillarPcre,
}

impl TargetType {
    /// Salt's name for the type, as shown in job listings.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetType::Glob => "glob",
            TargetType::Pcre => "pcre",
            TargetType::List => "list",
            TargetType::Grain => "grain",
            TargetType::GrainPcre => "grain_pcre",
            TargetType::Ipcidr => "ipcidr",
            TargetType::Compound => "compound",
            TargetType::Nodegroup => "nodegroup",
            TargetType::Pillar => "pillar",
            TargetType::PillarPcre => "pillar_pcre",
        }
    }
}

/// One point on a job's way through the topology, for latency accounting.
/// Only filled when the job asks for it (`JobLoad::trace`), as `loadtest` does.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Stamp {
    /// Who stamped: a master, syndic or minion id.
    pub who: String,
    /// What happened: `pub`, `relay`, `recv`, `done`, `ret`.
    pub what: String,
    /// Wall clock, microseconds since the Unix epoch.
    pub us: u64,
}

/// Microseconds since the Unix epoch (for [`Stamp`]).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A job as published (Salt's publish load).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JobLoad {
    pub jid: Jid,
    pub tgt: String,
    pub tgt_type: TargetType,
    pub fun: String,
    #[serde(default)]
    pub arg: Vec<Value>,
    #[serde(default)]
    pub kwarg: BTreeMap<String, Value>,
    #[serde(default)]
    pub user: String,
    /// Seconds the client waits before asking `saltutil.find_job`.
    #[serde(default)]
    pub timeout: u64,
    /// Key delimiter for grain and pillar targets (`-G`/`-P`/`-I`/`-J`,
    /// `:` by default).
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Ids of the masters this job came through, top first; a master that
    /// finds its own id here drops the job (loop guard).
    #[serde(default)]
    pub path: Vec<String>,
    /// Set by `loadtest`: every hop appends a [`Stamp`].
    #[serde(default)]
    pub trace: Option<Vec<Stamp>>,
}

fn default_delimiter() -> String {
    ":".to_string()
}

/// A minion's answer to one job (Salt's `_return` load).
///
/// `J` is the jid's type: a checked [`Jid`] everywhere, except while a
/// [`SyndicBatch`] is decoded entry by entry (`ReturnLoad<String>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReturnLoad<J = Jid> {
    pub jid: J,
    pub id: String,
    pub fun: String,
    #[serde(default)]
    pub fun_args: Vec<Value>,
    #[serde(rename = "return")]
    pub ret: Value,
    pub retcode: i32,
    pub success: bool,
    /// Outputter the function prefers (`nested` when absent).
    #[serde(default)]
    pub out: Option<String>,
    /// Copied from the job and extended by each hop on the way back.
    #[serde(default)]
    pub trace: Option<Vec<Stamp>>,
}

/// A syndic's batch of returns. On the wire a plain list of
/// [`ReturnLoad`]s; decoded entry by entry so that one entry whose jid is
/// not a jid is refused alone (counted like any return to an unknown job)
/// instead of making the whole batch undecodable.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SyndicBatch {
    pub returns: Vec<ReturnLoad>,
    /// Minion ids of the entries whose jid did not parse (never sent: a
    /// [`ReturnLoad`] always holds a checked jid).
    pub bad_jids: Vec<String>,
}

impl From<Vec<ReturnLoad>> for SyndicBatch {
    fn from(returns: Vec<ReturnLoad>) -> Self {
        SyndicBatch {
            returns,
            bad_jids: Vec::new(),
        }
    }
}

impl Serialize for SyndicBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.returns.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SyndicBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Vec::<ReturnLoad<String>>::deserialize(d)?;
        let mut batch = SyndicBatch::default();
        for r in raw {
            match Jid::try_from(r.jid) {
                Ok(jid) => batch.returns.push(ReturnLoad {
                    jid,
                    id: r.id,
                    fun: r.fun,
                    fun_args: r.fun_args,
                    ret: r.ret,
                    retcode: r.retcode,
                    success: r.success,
                    out: r.out,
                    trace: r.trace,
                }),
                Err(_) => batch.bad_jids.push(r.id),
            }
        }
        Ok(batch)
    }
}

/// The role a peer claims when it authenticates on the request channel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Minion,
    Syndic,
}

/// Clear-text sign-in request (Salt's `_auth`).
///
/// A sign-in takes two rounds. The first carries no `challenge`: the
/// master answers [`Wire::AuthChallenge`] without any RSA work. The second
/// repeats the request with that challenge and `sig`, the peer's signature
/// over [`AuthRequest::proof_bytes`]: it proves the peer holds the private
/// key of `pub_pem` (which travels in clear, so knowing it gives nothing),
/// and since the master takes each challenge once, a captured sign-in
/// cannot be replayed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuthRequest {
    pub id: String,
    /// The peer's RSA public key, PEM (SPKI).
    pub pub_pem: String,
    /// 32 random bytes echoed in the signed answer, so an old answer cannot
    /// be replayed to the peer.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    pub role: Role,
    /// The master's challenge, echoed (empty in the first round).
    #[serde(with = "serde_bytes", default)]
    pub challenge: Vec<u8>,
    /// RSA-PSS-SHA256 by the peer's key over [`AuthRequest::proof_bytes`]
    /// (empty in the first round).
    #[serde(with = "serde_bytes", default)]
    pub sig: Vec<u8>,
}

/// What a sign-in signature covers: every field the master acts on.
#[derive(Serialize)]
struct AuthProof<'a> {
    domain: &'static str,
    id: &'a str,
    pub_pem: &'a str,
    #[serde(with = "serde_bytes")]
    nonce: &'a [u8],
    role: Role,
    #[serde(with = "serde_bytes")]
    challenge: &'a [u8],
}

impl AuthRequest {
    /// The bytes the peer signs and the master verifies (msgpack of the
    /// request without its signature, under a domain tag so the signature
    /// means nothing in any other context).
    pub fn proof_bytes(&self) -> Result<Vec<u8>, crate::codec::ProtoError> {
        crate::codec::encode(&AuthProof {
            domain: "brine-auth-v1",
            id: &self.id,
            pub_pem: &self.pub_pem,
            nonce: &self.nonce,
            role: self.role,
            challenge: &self.challenge,
        })
    }
}

/// Outcome of a sign-in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthStatus {
    Accepted,
    Pending,
    Rejected,
    Denied,
}

/// The body of an accepted sign-in; the master signs its msgpack bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuthAccept {
    /// The master's public key (the minion pins it on first contact).
    pub master_pub_pem: String,
    /// The master's id (`master_id`/`id` in its config).
    pub master_id: String,
    pub publish_port: u16,
    /// Which publish key this is; publishes name the key they use.
    pub key_id: u32,
    /// RSA-OAEP-SHA256(peer key, 32-byte publish key).
    #[serde(with = "serde_bytes")]
    pub publish_key: Vec<u8>,
    /// RSA-OAEP-SHA256(peer key, 32-byte per-peer session key).
    #[serde(with = "serde_bytes")]
    pub session_key: Vec<u8>,
    /// The request's nonce, echoed.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// Heartbeat interval the master wants, seconds.
    pub heartbeat_interval: u64,
    /// Sequence number of the master's newest publish at sign-in: the peer
    /// refuses any publish not newer (a publish captured before a minion
    /// restarted cannot be replayed to it).
    #[serde(default)]
    pub pub_seq: u64,
    /// The master's Ed25519 publish verifying key (32 bytes): publishes are
    /// signed with it, and this answer's RSA signature vouches for it.
    #[serde(with = "serde_bytes", default)]
    pub pub_sign_key: Vec<u8>,
}

/// Answer to an [`AuthRequest`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuthReply {
    pub status: AuthStatus,
    /// msgpack([`AuthAccept`]) when accepted.
    #[serde(with = "serde_bytes", default)]
    pub accept: Vec<u8>,
    /// Master's RSA-PSS-SHA256 signature over `accept`.
    #[serde(with = "serde_bytes", default)]
    pub sig: Vec<u8>,
}

/// A grains/presence record of one minion, as rosters carry it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RosterEntry {
    pub id: String,
    pub grains: Value,
    pub connected: bool,
    /// Syndic ids between the reporting master and the minion, nearest
    /// first; empty for a minion attached directly to the reporter.
    #[serde(default)]
    pub via: Vec<String>,
}

/// A change to a syndic's subtree, reported upward.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct RosterDelta {
    /// Full state instead of a delta: the receiver replaces what it had.
    pub full: bool,
    pub upsert: Vec<RosterEntry>,
    pub remove: Vec<String>,
}

/// What an authenticated peer may ask of its master (sealed under its
/// session key). New kinds are added at the end.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum RequestBody {
    /// First message after sign-in: grains and version.
    Hello { grains: Value, version: String },
    /// Presence; answered with `Ok`.
    Heartbeat,
    /// One job return.
    Return(ReturnLoad),
    /// Grains changed (`saltutil.sync_grains`, `grains.refresh`).
    Grains(Value),
    /// A syndic's batch of returns from its subtree.
    SyndicReturns(SyndicBatch),
    /// A syndic's subtree changed.
    Roster(RosterDelta),
    /// The job publishes of the last minute newer than `after_seq` on the
    /// asker's topics, answered with [`ReplyBody::Publishes`]: what a peer
    /// that was cut off (its subscription not yet back when the master
    /// published) missed. Asked after every sign-in (a fresh process only
    /// for what came after its first one).
    Catchup { after_seq: u64 },
    /// A job published at a syndic itself (or sent up to it from below),
    /// sent upward before its returns when `syndic_forward_all` is on, so
    /// the master above records it as a job relayed up from that syndic
    /// and admits its returns from that syndic's subtree only.
    SyndicJob(JobLoad),
    /// Where a `salt://` file is in `saltenv` and what it holds, answered
    /// [`ReplyBody::FileMeta`] (`None`: not there or not visible).
    FileFind { saltenv: String, path: String },
    /// `len` bytes (at most `file_buffer_size`) at `offset` of version
    /// `hash` of a file, answered [`ReplyBody::FileChunk`]; a file that
    /// changed since its [`FileMeta`] is refused with
    /// [`Refusal::FileChanged`]. A master that serves from a content cache
    /// (a syndic) looks the version up by `hash` alone.
    FileChunk {
        saltenv: String,
        path: String,
        hash: String,
        offset: u64,
        len: u32,
    },
    /// A file server listing, answered [`ReplyBody::FileList`].
    FileList {
        saltenv: String,
        prefix: String,
        kind: ListKind,
    },
    /// `cp.push`: one chunk of a file the minion sends to its master.
    FilePush(PushChunk),
    /// The asking minion's own pillar, answered [`ReplyBody::Pillar`]
    /// (under the session key: only that minion can read it) or, when the
    /// master relays it from above, [`ReplyBody::SealedPillar`].
    Pillar {
        /// Only this pillar environment (`pillarenv`); all when `None`.
        pillarenv: Option<String>,
    },
    /// A syndic asks the master above for the pillar of a minion in its
    /// subtree: compiled above, sealed to `pub_pem` (the minion's key as
    /// the syndic accepted it), answered [`ReplyBody::SealedPillar`].
    PillarFor {
        id: String,
        grains: Value,
        pub_pem: String,
        pillarenv: Option<String>,
    },
    /// An event from the peer (`event.send`, beacons): published on the
    /// master's event bus when its tag and data are allowed, else refused
    /// with [`Refusal::BadEvent`].
    Event(EventLoad),
    /// A syndic's batch of events from its own bus (its subtree's events
    /// and its downstream master's own), fired again on the receiver's
    /// bus with the path marked; refused with [`Refusal::NotASyndic`]
    /// from a peer without the syndic role.
    SyndicEvents(Vec<ForwardedEvent>),
}

/// An event a peer sends its master: a tag and a JSON object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EventLoad {
    pub tag: String,
    pub data: Value,
}

/// One event a syndic forwards upward.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ForwardedEvent {
    pub tag: String,
    /// The data as fired where the event came from (without the path).
    pub data: Value,
    /// The syndics the event came through, in the order it travelled:
    /// the one nearest its origin first, the sender last.
    pub path: Vec<String>,
}

/// A sealed request with its replay-protection counter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Request {
    /// Strictly increasing per session; the master refuses anything else.
    pub seq: u64,
    /// Echoed in the reply so the peer can match answers to questions.
    pub req_id: u64,
    pub body: RequestBody,
}

/// The master's answer to a [`Request`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum ReplyBody {
    Ok,
    /// The request was understood but refused; the [`Refusal`] says why
    /// (as data: peers act on the kind, people read its `Display`).
    Refused(Refusal),
    /// Publish frames (each a msgpack [`SignedPub`], checked like any
    /// publish), oldest first: the answer to [`RequestBody::Catchup`].
    Publishes(Vec<ByteBuf>),
    /// Answer to [`RequestBody::FileFind`].
    FileMeta(Option<FileMeta>),
    /// Answer to [`RequestBody::FileChunk`]: the bytes (fewer than asked
    /// at the end of the file).
    FileChunk(ByteBuf),
    /// Answer to [`RequestBody::FileList`]: paths relative to the
    /// environment's roots, sorted, `/`-separated.
    FileList(Vec<String>),
    /// Answer to [`RequestBody::Pillar`]: the asking minion's pillar.
    Pillar(Value),
    /// A pillar sealed to one minion's key (see [`SealedPillar`]).
    SealedPillar(SealedPillar),
}

impl ReplyBody {
    /// The name of the answer's kind, for error messages ("the master
    /// answered with an unexpected FileList").
    pub fn kind(&self) -> &'static str {
        match self {
            ReplyBody::Ok => "Ok",
            ReplyBody::Refused(_) => "Refused",
            ReplyBody::Publishes(_) => "Publishes",
            ReplyBody::FileMeta(_) => "FileMeta",
            ReplyBody::FileChunk(_) => "FileChunk",
            ReplyBody::FileList(_) => "FileList",
            ReplyBody::Pillar(_) => "Pillar",
            ReplyBody::SealedPillar(_) => "SealedPillar",
        }
    }
}

/// Why a master refused a request. Peers and tests match on the variant;
/// the text (`Display`) is only for logs and operators.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A sealed request whose sequence number was already used.
    #[error("replayed request")]
    Replayed,
    /// A minion returned under another minion's id.
    #[error("{sender} may not return for {claimed}")]
    ForeignReturn { sender: String, claimed: String },
    /// A return to a jid this master never published or relayed.
    #[error("return to {jid} refused: this master never sent that job")]
    UnknownJob { jid: String },
    /// A return from a minion the job's target does not reach.
    #[error("return to {jid} refused: the job does not target this minion")]
    NotTargeted { jid: String },
    /// A syndic-only request from a peer without the syndic role.
    #[error("not a syndic")]
    NotASyndic,
    /// Part of a syndic's batch was refused (the rest was accepted).
    #[error("{outside} returns for minions outside {syndic}'s subtree, {not_admitted} for jobs this master did not send them")]
    SyndicReturns {
        syndic: String,
        outside: u64,
        not_admitted: u64,
    },
    /// A job sent up from below whose jid is not a jid. Kept for older
    /// peers: this version no longer sends it, because a [`JobLoad`] whose
    /// jid is not a [`Jid`] does not decode (counted as malformed).
    #[error("not a jid")]
    NotAJid,
    /// A job sent up from below that already passed through this master.
    #[error("the job already came through {master}")]
    Loop { master: String },
    /// A job sent up from below under a jid this master uses for another.
    #[error("jid {jid} is already in use here")]
    JidInUse { jid: String },
    /// A job sent up from below whose target does not parse here.
    #[error("target does not parse: {why}")]
    BadTarget { why: String },
    /// A file changed (or went away) between its [`FileMeta`] and a chunk.
    #[error("{path} changed on the master; fetch it again")]
    FileChanged { path: String },
    /// A `salt://` path or push destination that leaves its root, is
    /// absolute or otherwise not allowed.
    #[error("path not allowed: {path}")]
    BadPath { path: String },
    /// `cp.push` while the master does not set `file_recv: True`.
    #[error("file_recv is disabled on the master")]
    FileRecvDisabled,
    /// `cp.push` of a file larger than `file_recv_max_size`.
    #[error("file is larger than file_recv_max_size ({max_mib} MiB)")]
    FileRecvTooLarge { max_mib: u64 },
    /// A syndic asked for the pillar of a minion outside its subtree.
    #[error("{id} is not in {syndic}'s subtree")]
    NotInSubtree { syndic: String, id: String },
    /// The master cannot answer now (no master above reachable, a file
    /// server error); the text says why.
    #[error("{0}")]
    Unavailable(String),
    /// An event whose tag or data is not allowed (too large, empty, in the
    /// master's namespace); the text says why.
    #[error("event refused: {0}")]
    BadEvent(String),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Reply {
    pub req_id: u64,
    pub body: ReplyBody,
}

/// One frame on the request channel (either direction).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Wire {
    Auth(AuthRequest),
    AuthReply(AuthReply),
    /// AES-256-GCM(session key of `id`, msgpack([`Request`])).
    Sealed {
        id: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// AES-256-GCM(session key, msgpack([`Reply`])).
    SealedReply {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The master has no session for this peer (restart, rotation): sign in again.
    ReAuth,
    /// A clear-text refusal of a frame that could not be handled.
    Error(String),
    /// The master's answer to the first round of a sign-in: sign this
    /// challenge (see [`AuthRequest`]). It echoes the request's nonce so a
    /// peer answers only the challenge of its current attempt.
    AuthChallenge {
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        #[serde(with = "serde_bytes")]
        challenge: Vec<u8>,
    },
}

/// The outer frame of the request channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Envelope {
    pub v: u8,
    pub wire: Wire,
}

/// What a publish carries, inside [`SignedPub`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum PubKind {
    /// AES-256-GCM(publish key `key_id`, msgpack([`JobLoad`])).
    Job {
        key_id: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A new publish key for one peer, sealed under that peer's session key:
    /// msgpack((key_id, key)). Sent on the peer's own topic at rotation.
    KeyUpdate {
        id: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Every peer that does not hold publish key `key_id` should sign in
    /// again (sent after a master restart; peers already signed in to this
    /// master ignore it).
    Reauth { key_id: u32 },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PubBody {
    /// Strictly increasing per master; subscribers drop anything not newer
    /// than what they have seen (replays and stale publishes).
    pub seq: u64,
    /// The publishing master's id.
    pub master_id: String,
    pub kind: PubKind,
}

/// A publish frame: the body's msgpack bytes and the master's Ed25519
/// publish signature (`AuthAccept::pub_sign_key` checks it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SignedPub {
    pub v: u8,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ret(jid: &str, id: &str) -> ReturnLoad<String> {
        ReturnLoad {
            jid: jid.into(),
            id: id.into(),
            fun: "test.ping".into(),
            fun_args: vec![],
            ret: Value::Bool(true),
            retcode: 0,
            success: true,
            out: None,
            trace: None,
        }
    }

    #[test]
    fn a_bad_jid_is_refused_alone_in_a_syndic_batch() {
        // Encoded as a peer with unchecked jids would send it.
        let raw = vec![
            ret("20261126120000000001", "m1"),
            ret("not-a-jid", "m2"),
            ret("20261126120000000002", "m3"),
        ];
        let encoded = rmp_serde::to_vec(&raw).unwrap();
        let batch: SyndicBatch = rmp_serde::from_slice(&encoded).unwrap();
        let ids: Vec<&str> = batch.returns.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m3"]);
        assert_eq!(batch.bad_jids, ["m2"]);
        assert_eq!(batch.returns[1].jid, "20261126120000000002");
        // The good entries encode exactly as a plain list of returns.
        let good: SyndicBatch = rmp_serde::from_slice(&rmp_serde::to_vec(&batch).unwrap()).unwrap();
        assert_eq!(good, SyndicBatch::from(batch.returns.clone()));
    }

    #[test]
    fn a_bad_jid_makes_a_single_return_or_job_undecodable() {
        let encoded = rmp_serde::to_vec(&ret("2026", "m1")).unwrap();
        assert!(rmp_serde::from_slice::<ReturnLoad>(&encoded).is_err());
        let good = rmp_serde::to_vec(&ret("20261126120000000001", "m1")).unwrap();
        let back: ReturnLoad = rmp_serde::from_slice(&good).unwrap();
        assert_eq!(back.jid.as_str(), "20261126120000000001");
    }

    #[test]
    fn refusals_cross_the_wire_as_data_and_read_as_before() {
        let cases = [
            (Refusal::Replayed, "replayed request"),
            (
                Refusal::ForeignReturn {
                    sender: "m1".into(),
                    claimed: "m2".into(),
                },
                "m1 may not return for m2",
            ),
            (
                Refusal::UnknownJob { jid: "j1".into() },
                "return to j1 refused: this master never sent that job",
            ),
            (
                Refusal::SyndicReturns {
                    syndic: "s1".into(),
                    outside: 1,
                    not_admitted: 2,
                },
                "1 returns for minions outside s1's subtree, 2 for jobs this master did not send them",
            ),
            (
                Refusal::Loop {
                    master: "top".into(),
                },
                "the job already came through top",
            ),
        ];
        for (refusal, text) in cases {
            assert_eq!(refusal.to_string(), text);
            let reply = Reply {
                req_id: 7,
                body: ReplyBody::Refused(refusal),
            };
            let bytes = crate::codec::encode(&reply).unwrap();
            let back: Reply = crate::codec::decode(&bytes, 1 << 16).unwrap();
            assert_eq!(back, reply);
        }
    }
}
