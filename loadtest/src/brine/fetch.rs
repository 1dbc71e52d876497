//! One `salt://` file fetch of a simulated minion, as a pure state machine
//! (no sockets, no clock: the caller passes `Instant`s and a `send`
//! closure that seals a request and hands back its `req_id`).
//!
//! A fetch asks `FileFind`, then `FileChunk`s of `chunk` bytes with at
//! most `window` chunks outstanding, hashes the bytes in file order
//! (SHA-256; a chunk that arrives early waits in a reorder buffer) and
//! drops them, and at the end compares the hash with the one `FileFind`
//! named. A request unanswered for [`ASK_TIMEOUT`] is asked again (at
//! most [`MAX_ASKS`] times); `Refused(Unavailable)` is asked again after
//! a back-off (at most [`MAX_BUSY`] times per fetch); `Refused(FileChanged)`
//! (or a chunk of the wrong length) starts the fetch over, once.
//! Invariant: every chunk asked for, buffered or in flight lies in
//! `[hashed, hashed + window * chunk)`, so a fetch holds at most `window`
//! chunks whatever the file size, and every loop is bounded by the window.

use brine_common::proto::{FileMeta, Refusal, ReplyBody, RequestBody};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Bytes asked per chunk (the master's default `file_buffer_size`).
pub const CHUNK: u32 = 256 * 1024;
/// Chunks outstanding (asked, or arrived early) per fetch.
pub const WINDOW: usize = 4;
/// A question unanswered this long is asked again.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(30);
/// Most times one question is asked without an answer before giving up.
pub const MAX_ASKS: u32 = 5;
/// Most `Unavailable` answers one fetch takes before giving up.
pub const MAX_BUSY: u32 = 20;

/// What to fetch and how.
#[derive(Debug, Clone)]
pub struct FetchSpec {
    pub saltenv: String,
    /// The path under the environment's roots (`salt://` stripped).
    pub path: String,
    pub chunk: u32,
    pub window: usize,
    /// Added to every back-off after `Unavailable`, so minions refused
    /// together do not all ask again at the same moment.
    pub jitter: Duration,
}

impl FetchSpec {
    /// A fetch of `path` in `saltenv` with the default chunk and window.
    pub fn new(saltenv: &str, path: &str, jitter: Duration) -> Self {
        Self {
            saltenv: saltenv.to_string(),
            path: path.to_string(),
            chunk: CHUNK,
            window: WINDOW,
            jitter,
        }
    }
}

/// How a fetch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every byte arrived and the SHA-256 matches the master's.
    Fetched { size: u64 },
    /// The master has no such file (or it is not visible).
    NotFound,
    /// Anything else, in words.
    Failed(String),
}

/// Counts of one fetch, for the worker's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Chunk bytes received (counted once per accepted chunk).
    pub bytes: u64,
    /// Questions asked again: unanswered in time, or after a re-sign-in.
    pub asked_again: u64,
    /// `Unavailable` answers waited out.
    pub busy: u64,
    /// Starts over after the file changed.
    pub restarts: u64,
}

/// One question of a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Find,
    /// The chunk at this offset.
    Chunk(u64),
}

/// A question in flight.
#[derive(Debug, Clone, Copy)]
struct Asked {
    part: Part,
    at: Instant,
    /// Times sent without an answer, this one included.
    asks: u32,
}

/// A question to send when `due`.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    due: Instant,
    asks: u32,
}

/// A fetch in progress (see the module header).
#[derive(Debug)]
pub struct Fetch {
    spec: FetchSpec,
    meta: Option<FileMeta>,
    asked: HashMap<u64, Asked>,
    waiting: BTreeMap<Part, Waiting>,
    /// Chunks below this offset have been asked at least once.
    next_offset: u64,
    /// Bytes hashed so far (all below this offset).
    hashed: u64,
    hasher: Sha256,
    /// Chunks that arrived before the bytes in front of them.
    early: BTreeMap<u64, Vec<u8>>,
    restarted: bool,
    busy: u32,
    verdict: Option<Verdict>,
    stats: FetchStats,
}

impl Fetch {
    /// A fetch that will ask `FileFind` on its first [`Fetch::pump`].
    pub fn new(spec: FetchSpec, now: Instant) -> Self {
        let mut spec = spec;
        spec.chunk = spec.chunk.max(1);
        spec.window = spec.window.max(1);
        Self {
            spec,
            meta: None,
            asked: HashMap::new(),
            waiting: BTreeMap::from([(Part::Find, Waiting { due: now, asks: 0 })]),
            next_offset: 0,
            hashed: 0,
            hasher: Sha256::new(),
            early: BTreeMap::new(),
            restarted: false,
            busy: 0,
            verdict: None,
            stats: FetchStats::default(),
        }
    }

    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref()
    }

    pub fn stats(&self) -> FetchStats {
        self.stats
    }

    /// Whether `req_id` is a question of this fetch still waiting for
    /// its answer (late answers to questions asked again are not).
    pub fn owns(&self, req_id: u64) -> bool {
        self.asked.contains_key(&req_id)
    }

    /// Chunks held in the reorder buffer.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.early.len()
    }

    /// When [`Fetch::pump`] has something to do next (`None`: only an
    /// answer can move the fetch on).
    pub fn next_wake(&self) -> Option<Instant> {
        if self.verdict.is_some() {
            return None;
        }
        let asked = self.asked.values().map(|a| a.at + ASK_TIMEOUT);
        let waiting = self.waiting.values().map(|w| w.due);
        asked.chain(waiting).min()
    }

    /// The session was replaced: answers to questions asked under the old
    /// one will not come, so every question in flight is asked again on
    /// the next [`Fetch::pump`].
    pub fn ask_again(&mut self, now: Instant) {
        for (_, a) in self.asked.drain() {
            self.stats.asked_again += 1;
            let asks = a.asks.saturating_sub(1);
            self.waiting.insert(a.part, Waiting { due: now, asks });
        }
    }

    /// Sends what is due at `now`: questions whose answer is overdue,
    /// questions waiting out a back-off, and new chunks while the window
    /// has room. `send` seals and sends one request and returns its
    /// `req_id` (`None`: not sent; it stays due).
    pub fn pump(&mut self, now: Instant, send: &mut dyn FnMut(RequestBody) -> Option<u64>) {
        if self.verdict.is_some() {
            return;
        }
        let overdue: Vec<u64> = self
            .asked
            .iter()
            .filter(|(_, a)| now >= a.at + ASK_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            let Some(a) = self.asked.remove(&id) else {
                continue;
            };
            if a.asks >= MAX_ASKS {
                return self.fail(format!(
                    "no answer to {} after {} asks",
                    self.describe(a.part),
                    a.asks
                ));
            }
            self.stats.asked_again += 1;
            self.waiting.insert(
                a.part,
                Waiting {
                    due: now,
                    asks: a.asks,
                },
            );
        }
        if let Some(size) = self.meta.as_ref().map(|m| m.size) {
            let end = self.window_end();
            while self.next_offset < size && self.next_offset < end {
                self.waiting
                    .insert(Part::Chunk(self.next_offset), Waiting { due: now, asks: 0 });
                self.next_offset += u64::from(self.spec.chunk);
            }
        }
        let due: Vec<Part> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.due <= now)
            .map(|(p, _)| *p)
            .collect();
        for part in due {
            let Some(w) = self.waiting.remove(&part) else {
                continue;
            };
            match send(self.body(part)) {
                Some(req_id) => {
                    self.asked.insert(
                        req_id,
                        Asked {
                            part,
                            at: now,
                            asks: w.asks + 1,
                        },
                    );
                }
                None => {
                    self.waiting.insert(part, w);
                    return;
                }
            }
        }
    }

    /// Takes the answer to request `req_id`; `false` if it is not a
    /// question of this fetch in flight (nothing changes then). Call
    /// [`Fetch::pump`] after it to ask for what comes next.
    pub fn on_reply(&mut self, req_id: u64, body: ReplyBody, now: Instant) -> bool {
        let Some(a) = self.asked.remove(&req_id) else {
            return false;
        };
        if self.verdict.is_some() {
            return true;
        }
        // The same question may be out twice (asked again after a
        // timeout): one answer settles it.
        self.asked.retain(|_, other| other.part != a.part);
        self.waiting.remove(&a.part);
        match (a.part, body) {
            (Part::Find, ReplyBody::FileMeta(None)) => self.verdict = Some(Verdict::NotFound),
            (Part::Find, ReplyBody::FileMeta(Some(meta))) => {
                let size = meta.size;
                self.meta = Some(meta);
                if size == 0 {
                    self.check_hash();
                }
            }
            (Part::Chunk(offset), ReplyBody::FileChunk(data)) => {
                self.on_chunk(offset, data.into_vec(), now)
            }
            (part, ReplyBody::Refused(Refusal::FileChanged { .. })) => self.start_over(
                now,
                format!("{} changed on the master", self.describe(part)),
            ),
            (part, ReplyBody::Refused(Refusal::Unavailable(why))) => self.on_busy(part, &why, now),
            (part, ReplyBody::Refused(r)) => {
                self.fail(format!("{} refused: {r}", self.describe(part)))
            }
            (part, other) => self.fail(format!(
                "unexpected answer to {}: {}",
                self.describe(part),
                other.kind()
            )),
        }
        true
    }

    /// `Unavailable`: ask again after a back-off, at most [`MAX_BUSY`]
    /// times per fetch.
    fn on_busy(&mut self, part: Part, why: &str, now: Instant) {
        self.busy += 1;
        self.stats.busy += 1;
        if self.busy > MAX_BUSY {
            return self.fail(format!(
                "master unavailable {} times, last for {}: {why}",
                self.busy,
                self.describe(part)
            ));
        }
        let due = now + busy_backoff(self.busy) + self.spec.jitter;
        self.waiting.insert(part, Waiting { due, asks: 0 });
    }

    /// End of the window: chunks at or past it wait for the hash to move.
    fn window_end(&self) -> u64 {
        self.hashed
            .saturating_add(u64::from(self.spec.chunk).saturating_mul(self.spec.window as u64))
    }

    fn on_chunk(&mut self, offset: u64, data: Vec<u8>, now: Instant) {
        let Some(size) = self.meta.as_ref().map(|m| m.size) else {
            return self.fail(format!("chunk at offset {offset} before the file's size"));
        };
        let want = size.saturating_sub(offset).min(u64::from(self.spec.chunk));
        if data.len() as u64 != want {
            // The file is not the size FileFind said: a newer version
            // (or a master whose file_buffer_size is below our chunk).
            let why = format!(
                "salt://{} at offset {offset}: {} bytes, expected {want}",
                self.spec.path,
                data.len()
            );
            return self.start_over(now, why);
        }
        if offset < self.hashed || self.early.contains_key(&offset) {
            return; // already here (cannot happen: one answer settles a question)
        }
        self.stats.bytes += want;
        if offset > self.hashed {
            self.early.insert(offset, data);
            return;
        }
        self.hasher.update(&data);
        self.hashed += want;
        // Everything that arrived early and now follows on; at most the
        // window's worth.
        while let Some(next) = self.early.remove(&self.hashed) {
            self.hasher.update(&next);
            self.hashed += next.len() as u64;
        }
        if self.hashed >= size {
            self.check_hash();
        }
    }

    fn check_hash(&mut self) {
        let Some(meta) = self.meta.as_ref() else {
            return;
        };
        let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
        self.verdict = Some(if got.eq_ignore_ascii_case(&meta.hash) {
            Verdict::Fetched { size: meta.size }
        } else {
            Verdict::Failed(format!(
                "sha256 mismatch for salt://{}: got {got}, the master said {}",
                self.spec.path, meta.hash
            ))
        });
        self.asked.clear();
        self.waiting.clear();
    }

    /// The file changed under the fetch: forget everything and ask
    /// `FileFind` again, once; a second change ends the fetch.
    fn start_over(&mut self, now: Instant, why: String) {
        if self.restarted {
            return self.fail(format!("{why}, again after starting over"));
        }
        self.restarted = true;
        self.stats.restarts += 1;
        self.meta = None;
        self.asked.clear();
        self.waiting.clear();
        self.waiting
            .insert(Part::Find, Waiting { due: now, asks: 0 });
        self.next_offset = 0;
        self.hashed = 0;
        self.hasher = Sha256::new();
        self.early.clear();
    }

    fn fail(&mut self, why: String) {
        self.verdict = Some(Verdict::Failed(why));
        self.asked.clear();
        self.waiting.clear();
        self.early.clear();
    }

    fn body(&self, part: Part) -> RequestBody {
        let (saltenv, path) = (self.spec.saltenv.clone(), self.spec.path.clone());
        match part {
            Part::Find => RequestBody::FileFind { saltenv, path },
            Part::Chunk(offset) => RequestBody::FileChunk {
                saltenv,
                path,
                hash: self
                    .meta
                    .as_ref()
                    .map(|m| m.hash.clone())
                    .unwrap_or_default(),
                offset,
                len: self.spec.chunk,
            },
        }
    }

    fn describe(&self, part: Part) -> String {
        match part {
            Part::Find => format!("the file server's entry for salt://{}", self.spec.path),
            Part::Chunk(o) => format!("salt://{} at offset {o}", self.spec.path),
        }
    }
}

/// Wait after the `n`th `Unavailable` answer: 0.5 s doubling, at most 8 s.
fn busy_backoff(n: u32) -> Duration {
    Duration::from_millis(500) * (1u32 << n.saturating_sub(1).min(4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use brine_common::proto::ByteBuf;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    /// Stands in for the session: numbers requests and keeps them.
    #[derive(Default)]
    struct Wire {
        next: u64,
        sent: Vec<(u64, RequestBody)>,
    }

    impl Wire {
        /// Pumps `f` and returns what it sent.
        fn pump(&mut self, f: &mut Fetch, now: Instant) -> Vec<(u64, RequestBody)> {
            let start = self.sent.len();
            f.pump(now, &mut |b| {
                self.next += 1;
                self.sent.push((self.next, b));
                Some(self.next)
            });
            self.sent[start..].to_vec()
        }
    }

    fn content(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn meta_of(data: &[u8]) -> FileMeta {
        FileMeta {
            path: "big.bin".into(),
            size: data.len() as u64,
            hash: hex::encode(Sha256::digest(data)),
            mode: 0o644,
        }
    }

    fn spec() -> FetchSpec {
        FetchSpec {
            saltenv: "base".into(),
            path: "big.bin".into(),
            chunk: 4,
            window: 4,
            jitter: Duration::ZERO,
        }
    }

    /// The offset a request asks for (`None`: a FileFind).
    fn offset(b: &RequestBody) -> Option<u64> {
        match b {
            RequestBody::FileChunk { offset, .. } => Some(*offset),
            RequestBody::FileFind { .. } => None,
            other => panic!("not a file request: {other:?}"),
        }
    }

    fn chunk(data: &[u8], b: &RequestBody) -> ReplyBody {
        let RequestBody::FileChunk { offset, len, .. } = b else {
            panic!("not a chunk request: {b:?}");
        };
        let from = (*offset as usize).min(data.len());
        let to = (from + *len as usize).min(data.len());
        ReplyBody::FileChunk(ByteBuf::from(data[from..to].to_vec()))
    }

    /// A fetch past its FileFind, with its first window of questions.
    fn started(data: &[u8], wire: &mut Wire, now: Instant) -> (Fetch, Vec<(u64, RequestBody)>) {
        let mut f = Fetch::new(spec(), now);
        let find = wire.pump(&mut f, now);
        assert_eq!(find.len(), 1);
        assert_eq!(
            find[0].1,
            RequestBody::FileFind {
                saltenv: "base".into(),
                path: "big.bin".into()
            }
        );
        assert!(f.on_reply(find[0].0, ReplyBody::FileMeta(Some(meta_of(data))), now));
        let asked = wire.pump(&mut f, now);
        (f, asked)
    }

    #[test]
    fn in_order_answers_fetch_the_file_within_the_window() {
        let now = Instant::now();
        let data = content(18); // chunks of 4, 4, 4, 4, 2
        let mut wire = Wire::default();
        let (mut f, first) = started(&data, &mut wire, now);
        assert_eq!(
            first.iter().map(|(_, b)| offset(b)).collect::<Vec<_>>(),
            [Some(0), Some(4), Some(8), Some(12)]
        );
        let RequestBody::FileChunk { hash, len, .. } = &first[0].1 else {
            panic!()
        };
        assert_eq!((hash.as_str(), *len), (meta_of(&data).hash.as_str(), 4));
        // Nothing more until an answer moves the window.
        assert!(wire.pump(&mut f, now).is_empty());
        assert!(f.on_reply(first[0].0, chunk(&data, &first[0].1), now));
        let next = wire.pump(&mut f, now);
        assert_eq!(next.len(), 1);
        assert_eq!(offset(&next[0].1), Some(16));
        for (id, b) in first[1..].iter().chain(&next) {
            assert!(f.verdict().is_none());
            assert!(f.on_reply(*id, chunk(&data, b), now));
        }
        assert_eq!(f.verdict(), Some(&Verdict::Fetched { size: 18 }));
        assert_eq!(f.stats().bytes, 18);
        assert_eq!(f.next_wake(), None);
        assert!(wire.pump(&mut f, now).is_empty());
    }

    #[test]
    fn answers_in_any_order_are_reordered_and_the_window_holds() {
        let now = Instant::now();
        let data = content(4 * 23 + 3);
        for seed in 0..40u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut wire = Wire::default();
            let (mut f, first) = started(&data, &mut wire, now);
            let mut out = first;
            let mut steps = 0;
            while f.verdict().is_none() {
                steps += 1;
                assert!(steps < 1000, "seed {seed}: no end");
                // Never more than the window asked or waiting.
                assert!(out.len() + f.buffered() <= 4, "seed {seed}");
                out.shuffle(&mut rng);
                let (id, b) = out.pop().unwrap();
                assert!(f.on_reply(id, chunk(&data, &b), now));
                out.extend(wire.pump(&mut f, now));
            }
            assert_eq!(
                f.verdict(),
                Some(&Verdict::Fetched {
                    size: data.len() as u64
                }),
                "seed {seed}"
            );
            assert!(out.is_empty());
            // Every chunk was asked exactly once.
            let mut offsets: Vec<u64> = wire.sent.iter().filter_map(|(_, b)| offset(b)).collect();
            offsets.sort_unstable();
            assert_eq!(offsets, (0..24).map(|k| k * 4).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_wrong_hash_fails_the_fetch() {
        let now = Instant::now();
        let data = content(10);
        let mut wire = Wire::default();
        let mut f = Fetch::new(spec(), now);
        let find = wire.pump(&mut f, now);
        let mut meta = meta_of(&data);
        meta.hash = hex::encode(Sha256::digest(b"something else"));
        f.on_reply(find[0].0, ReplyBody::FileMeta(Some(meta)), now);
        for (id, b) in wire.pump(&mut f, now) {
            f.on_reply(id, chunk(&data, &b), now);
        }
        let Some(Verdict::Failed(why)) = f.verdict() else {
            panic!("{:?}", f.verdict())
        };
        assert!(why.contains("sha256 mismatch"), "{why}");
    }

    #[test]
    fn an_empty_file_is_fetched_at_once() {
        let now = Instant::now();
        let mut wire = Wire::default();
        let (f, asked) = started(&[], &mut wire, now);
        assert!(asked.is_empty());
        assert_eq!(f.verdict(), Some(&Verdict::Fetched { size: 0 }));
    }

    #[test]
    fn a_changed_file_starts_over_once() {
        let now = Instant::now();
        let data = content(16);
        let mut wire = Wire::default();
        let (mut f, first) = started(&data, &mut wire, now);
        f.on_reply(first[0].0, chunk(&data, &first[0].1), now);
        let changed = ReplyBody::Refused(Refusal::FileChanged {
            path: "big.bin".into(),
        });
        assert!(f.on_reply(first[1].0, changed.clone(), now));
        assert!(f.verdict().is_none());
        // Questions of the old version are no longer ours.
        assert!(!f.owns(first[2].0) && !f.owns(first[3].0));
        assert!(!f.on_reply(first[2].0, chunk(&data, &first[2].1), now));
        let again = wire.pump(&mut f, now);
        assert_eq!(again.len(), 1);
        assert_eq!(offset(&again[0].1), None, "FileFind again");
        // The new version, fetched whole.
        let data2 = content(9);
        f.on_reply(again[0].0, ReplyBody::FileMeta(Some(meta_of(&data2))), now);
        let asked = wire.pump(&mut f, now);
        assert_eq!(asked.len(), 3);
        // A second change ends it.
        f.on_reply(asked[0].0, changed, now);
        let Some(Verdict::Failed(why)) = f.verdict() else {
            panic!("{:?}", f.verdict())
        };
        assert!(why.contains("again after starting over"), "{why}");
        assert_eq!(f.stats().restarts, 1);
    }

    #[test]
    fn a_chunk_of_the_wrong_length_starts_over() {
        let now = Instant::now();
        let data = content(16);
        let mut wire = Wire::default();
        let (mut f, first) = started(&data, &mut wire, now);
        f.on_reply(
            first[0].0,
            ReplyBody::FileChunk(ByteBuf::from(vec![1, 2])),
            now,
        );
        assert!(f.verdict().is_none());
        assert_eq!(f.stats().restarts, 1);
        assert_eq!(offset(&wire.pump(&mut f, now)[0].1), None);
    }

    #[test]
    fn unavailable_is_asked_again_after_a_back_off_a_bounded_number_of_times() {
        let t0 = Instant::now();
        let data = content(4);
        let mut wire = Wire::default();
        let (mut f, first) = started(&data, &mut wire, t0);
        assert_eq!(first.len(), 1);
        let busy = || ReplyBody::Refused(Refusal::Unavailable("master busy, ask again".into()));
        let (mut id, mut now) = (first[0].0, t0);
        for n in 1..=MAX_BUSY {
            assert!(f.on_reply(id, busy(), now));
            // 0.5 s doubling to 8 s, and not asked before.
            let wait = busy_backoff(n);
            assert_eq!(f.next_wake(), Some(now + wait), "answer {n}");
            assert!(wire
                .pump(&mut f, now + wait - Duration::from_millis(1))
                .is_empty());
            now += wait;
            let again = wire.pump(&mut f, now);
            assert_eq!(again.len(), 1);
            assert_eq!(offset(&again[0].1), Some(0));
            id = again[0].0;
        }
        assert_eq!(busy_backoff(1), Duration::from_millis(500));
        assert_eq!(busy_backoff(5), Duration::from_secs(8));
        assert_eq!(busy_backoff(30), Duration::from_secs(8));
        // One more is past the bound.
        f.on_reply(id, busy(), now);
        let Some(Verdict::Failed(why)) = f.verdict() else {
            panic!("{:?}", f.verdict())
        };
        assert!(
            why.contains("unavailable") && why.contains("master busy"),
            "{why}"
        );
        assert_eq!(f.stats().busy, u64::from(MAX_BUSY) + 1);
    }

    #[test]
    fn an_unanswered_question_is_asked_again_then_given_up() {
        let t0 = Instant::now();
        let data = content(4);
        let mut wire = Wire::default();
        let (mut f, first) = started(&data, &mut wire, t0);
        assert_eq!(first.len(), 1);
        assert_eq!(f.next_wake(), Some(t0 + ASK_TIMEOUT));
        assert!(wire
            .pump(&mut f, t0 + ASK_TIMEOUT - Duration::from_millis(1))
            .is_empty());
        let t1 = t0 + ASK_TIMEOUT;
        let again = wire.pump(&mut f, t1);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].0, first[0].0);
        assert_eq!(offset(&again[0].1), Some(0));
        // The first question is given up: a late answer is not ours.
        assert!(!f.owns(first[0].0));
        assert!(!f.on_reply(first[0].0, chunk(&data, &first[0].1), t1));
        assert!(f.on_reply(again[0].0, chunk(&data, &again[0].1), t1));
        assert_eq!(f.verdict(), Some(&Verdict::Fetched { size: 4 }));
        assert_eq!(f.stats().asked_again, 1);

        // Never answered: MAX_ASKS asks, then the fetch fails.
        let mut g = Fetch::new(spec(), t0);
        let mut now = t0;
        let mut asks = 0;
        while g.verdict().is_none() {
            asks += wire.pump(&mut g, now).len();
            now += ASK_TIMEOUT;
            assert!(asks <= MAX_ASKS as usize + 1);
        }
        assert_eq!(asks, MAX_ASKS as usize);
        let Some(Verdict::Failed(why)) = g.verdict() else {
            panic!("{:?}", g.verdict())
        };
        assert!(why.contains("no answer") && why.contains("5 asks"), "{why}");
    }

    #[test]
    fn after_a_new_session_everything_in_flight_is_asked_again() {
        let now = Instant::now();
        let data = content(12);
        let mut wire = Wire::default();
        let (mut f, first) = started(&data, &mut wire, now);
        f.on_reply(first[0].0, chunk(&data, &first[0].1), now);
        f.ask_again(now);
        assert!(first.iter().all(|(id, _)| !f.owns(*id)));
        let again = wire.pump(&mut f, now);
        assert_eq!(
            again.iter().map(|(_, b)| offset(b)).collect::<Vec<_>>(),
            [Some(4), Some(8)]
        );
        for (id, b) in again {
            f.on_reply(id, chunk(&data, &b), now);
        }
        assert_eq!(f.verdict(), Some(&Verdict::Fetched { size: 12 }));
        assert_eq!(f.stats().asked_again, 2);
    }

    #[test]
    fn a_question_not_sent_stays_due() {
        let now = Instant::now();
        let mut f = Fetch::new(spec(), now);
        f.pump(now, &mut |_| None);
        assert_eq!(f.next_wake(), Some(now));
        let mut wire = Wire::default();
        assert_eq!(wire.pump(&mut f, now).len(), 1);
    }

    #[test]
    fn missing_refused_and_odd_answers_end_the_fetch() {
        let now = Instant::now();
        let mut wire = Wire::default();
        let mut f = Fetch::new(spec(), now);
        let find = wire.pump(&mut f, now);
        assert!(!f.on_reply(find[0].0 + 100, ReplyBody::Ok, now), "not ours");
        f.on_reply(find[0].0, ReplyBody::FileMeta(None), now);
        assert_eq!(f.verdict(), Some(&Verdict::NotFound));

        let mut f = Fetch::new(spec(), now);
        let find = wire.pump(&mut f, now);
        let bad = Refusal::BadPath {
            path: "../../etc/passwd".into(),
        };
        f.on_reply(find[0].0, ReplyBody::Refused(bad), now);
        let Some(Verdict::Failed(why)) = f.verdict() else {
            panic!("{:?}", f.verdict())
        };
        assert!(why.contains("path not allowed: ../../etc/passwd"), "{why}");

        let mut f = Fetch::new(spec(), now);
        let find = wire.pump(&mut f, now);
        f.on_reply(find[0].0, ReplyBody::Ok, now);
        let Some(Verdict::Failed(why)) = f.verdict() else {
            panic!("{:?}", f.verdict())
        };
        assert!(
            why.contains("unexpected answer") && why.contains("Ok"),
            "{why}"
        );
    }
}
