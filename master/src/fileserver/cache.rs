//! A syndic's caches of the master above: [`Flights`] (one question in
//! flight per key, its answer shared by every asker), [`FindCache`]
//! (`FileFind` answers for [`FIND_TTL`], so a fan-out to 500 minions asks
//! once) and [`BlobCache`], the content-addressed store of file versions
//! fetched from above under `cachedir/file_cache/<hash[..2]>/<hash>`.
//!
//! The invariants: a blob's name is the SHA-256 of its bytes (a fill is
//! written to `file_cache/tmp/`, verified, then renamed into place, so a
//! reader never sees a partial or wrong blob); the store holds at most
//! [`CACHE_MAX_BYTES`] (1 GiB, no option), evicting the least recently
//! used blobs after each fill; a file larger than that is not cached (the
//! server passes its chunks through). Only hashes that are 64 lowercase
//! hex digits are ever turned into paths.

use brine_common::proto::{FileMeta, Refusal};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::hash::Hash;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Total size of the blob cache (no option; documented).
pub const CACHE_MAX_BYTES: u64 = 1 << 30;
/// Most blobs the cache indexes.
pub const CACHE_MAX_BLOBS: usize = 100_000;
/// How long a `FileFind` answer from above is reused.
pub const FIND_TTL: Duration = Duration::from_secs(2);
/// Most `FileFind` answers remembered.
pub const FIND_MAX_ENTRIES: usize = 10_000;

/// Whether `s` is a SHA-256 in lowercase hex (safe as a file name).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One computation in flight per key: the first asker (the leader) runs
/// it, later askers wait for its value. The entry is gone once the leader
/// finishes (or is dropped), so a later ask computes again; callers check
/// their own cache first, inside the computation too.
pub struct Flights<K, V> {
    map: Mutex<HashMap<K, watch::Receiver<Option<V>>>>,
}

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            map: Mutex::new(HashMap::new()),
        }
    }
}

enum Role<V> {
    Lead(watch::Sender<Option<V>>),
    Wait(watch::Receiver<Option<V>>),
}

/// Removes a flight's entry when its leader is done or dropped.
struct Landing<'a, K: Hash + Eq, V> {
    flights: &'a Flights<K, V>,
    key: K,
}

impl<K: Hash + Eq, V> Drop for Landing<'_, K, V> {
    fn drop(&mut self) {
        let mut m = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&self.key);
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Flights<K, V> {
    /// The value of `make()` for `key`, computed once for every concurrent
    /// asker. `None` when the leader was dropped before it had a value.
    pub async fn run<F, Fut>(&self, key: K, make: F) -> Option<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let role = {
            let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
            match m.get(&key) {
                Some(rx) => Role::Wait(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    m.insert(key.clone(), rx);
                    Role::Lead(tx)
                }
            }
        };
        match role {
            Role::Wait(mut rx) => rx.wait_for(|v| v.is_some()).await.ok()?.clone(),
            Role::Lead(tx) => {
                let _landing = Landing { flights: self, key };
                let v = make().await;
                tx.send_replace(Some(v.clone()));
                Some(v)
            }
        }
    }

    /// Keys in flight.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// What the master above said about a file: its meta (or `None`, not
/// there), or a refusal to pass down.
pub type FindAnswer = Result<Option<FileMeta>, Refusal>;

/// (saltenv, normalised path).
pub type FindKey = (String, String);

/// An answer and when it came.
type Remembered = (Instant, Option<FileMeta>);

/// `FileFind` answers from above, reused for [`FIND_TTL`], one question in
/// flight per (saltenv, path).
#[derive(Default)]
pub struct FindCache {
    answers: Mutex<HashMap<FindKey, Remembered>>,
    pub(crate) flights: Flights<FindKey, FindAnswer>,
}

impl FindCache {
    /// A fresh remembered answer.
    pub fn get(&self, key: &FindKey) -> Option<Option<FileMeta>> {
        let m = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        m.get(key)
            .filter(|(at, _)| at.elapsed() < FIND_TTL)
            .map(|(_, meta)| meta.clone())
    }

    /// Remember an answer (refusals are not remembered).
    pub fn put(&self, key: FindKey, meta: Option<FileMeta>) {
        let mut m = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= FIND_MAX_ENTRIES {
            m.retain(|_, (at, _)| at.elapsed() < FIND_TTL);
            if m.len() >= FIND_MAX_ENTRIES {
                m.clear();
            }
        }
        m.insert(key, (Instant::now(), meta));
    }

    /// Forget one answer (the file changed above).
    pub fn clear_one(&self, key: &FindKey) {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Forget every answer (`fileserver.update`).
    pub fn clear(&self) {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Why a blob could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("fetched {got} bytes hash to {actual}, not {expected}")]
    Mismatch {
        expected: String,
        actual: String,
        got: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct Entry {
    size: u64,
    /// Last use, in ticks of [`Index::clock`] (higher is more recent).
    used: u64,
}

#[derive(Default)]
struct Index {
    blobs: HashMap<String, Entry>,
    total: u64,
    clock: u64,
}

/// The content-addressed store of file versions from the master above.
pub struct BlobCache {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    /// One fill in flight per hash; the value is the refusal to pass down
    /// when the fill failed.
    pub(crate) fills: Flights<String, Result<(), Refusal>>,
}

/// A fill in progress: bytes go to a temporary file while their hash is
/// computed; [`BlobCache::finish`] verifies and renames it into place.
pub struct Fill {
    tmp: PathBuf,
    file: fs::File,
    hasher: Sha256,
    written: u64,
}

impl Fill {
    /// Append the next bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.file.write_all(data).map_err(io_err(&self.tmp))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        // Renamed away on success; otherwise nothing is left behind.
        let _ = fs::remove_file(&self.tmp);
    }
}

impl BlobCache {
    /// The store under `dir` (created 0700), indexing the blobs a previous
    /// run left (oldest first by mtime) and removing unfinished fills.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<BlobCache, BlobError> {
        let tmp = dir.join("tmp");
        super::private_dir(&tmp).map_err(io_err(&tmp))?;
        if let Ok(rd) = fs::read_dir(dir.join("tmp")) {
            for e in rd.flatten().take(CACHE_MAX_BLOBS) {
                let _ = fs::remove_file(e.path());
            }
        }
        let mut found = Vec::new();
        let rd = fs::read_dir(dir).map_err(io_err(dir))?;
        for sub in rd.flatten().take(512) {
            let name = sub.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 2 || !sub.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let Ok(inner) = fs::read_dir(sub.path()) else {
                continue;
            };
            for blob in inner.flatten().take(CACHE_MAX_BLOBS) {
                let hash = blob.file_name();
                let Some(hash) = hash.to_str() else { continue };
                let Ok(meta) = blob.metadata() else { continue };
                if is_sha256_hex(hash) && hash.starts_with(name) && meta.is_file() {
                    let mtime = meta.modified().ok();
                    found.push((mtime, hash.to_string(), meta.len()));
                }
            }
        }
        found.sort();
        let cache = BlobCache {
            dir: dir.to_path_buf(),
            max_bytes,
            index: Mutex::new(Index::default()),
            fills: Flights::default(),
        };
        for (_, hash, size) in found {
            cache.remember(&hash, size);
        }
        Ok(cache)
    }

    /// Where blob `hash` lives (`hash` must pass [`is_sha256_hex`]).
    fn path_of(&self, hash: &str) -> PathBuf {
        self.dir.join(&hash[..2]).join(hash)
    }

    /// Whether files of `size` bytes can be cached at all.
    pub fn fits(&self, size: u64) -> bool {
        size <= self.max_bytes
    }

    /// The blob's path if it is in the store (marks it used).
    pub fn lookup(&self, hash: &str) -> Option<PathBuf> {
        if !is_sha256_hex(hash) {
            return None;
        }
        let mut ix = self.index.lock().unwrap_or_else(|p| p.into_inner());
        ix.clock += 1;
        let now = ix.clock;
        let e = ix.blobs.get_mut(hash)?;
        e.used = now;
        Some(self.path_of(hash))
    }

    /// Forget a blob that went missing on disk.
    pub fn forget(&self, hash: &str) {
        let mut ix = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = ix.blobs.remove(hash) {
            ix.total = ix.total.saturating_sub(e.size);
        }
    }

    /// Start writing a new blob.
    pub fn begin(&self) -> Result<Fill, BlobError> {
        let tmp = self.dir.join("tmp").join(format!(
            "{}.{}",
            std::process::id(),
            hex::encode(rand_suffix())
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        Ok(Fill {
            tmp,
            file,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Verify a fill against `hash` and move it into place; then evict
    /// least recently used blobs until the store fits its bound.
    pub fn finish(&self, mut fill: Fill, hash: &str) -> Result<PathBuf, BlobError> {
        let actual = hex::encode(std::mem::take(&mut fill.hasher).finalize());
        if actual != hash {
            return Err(BlobError::Mismatch {
                expected: hash.to_string(),
                actual,
                got: fill.written,
            });
        }
        fill.file.sync_all().map_err(io_err(&fill.tmp))?;
        let dest = self.path_of(hash);
        if let Some(parent) = dest.parent() {
            super::private_dir(parent).map_err(io_err(parent))?;
        }
        fs::rename(&fill.tmp, &dest).map_err(io_err(&dest))?;
        self.remember(hash, fill.written);
        Ok(dest)
    }

    /// Index a stored blob and evict what no longer fits.
    fn remember(&self, hash: &str, size: u64) {
        let mut evict = Vec::new();
        {
            let mut ix = self.index.lock().unwrap_or_else(|p| p.into_inner());
            ix.clock += 1;
            let used = ix.clock;
            if let Some(old) = ix.blobs.insert(hash.to_string(), Entry { size, used }) {
                ix.total = ix.total.saturating_sub(old.size);
            }
            ix.total += size;
            // Each round removes one blob: bounded by the number of blobs.
            while ix.total > self.max_bytes || ix.blobs.len() > CACHE_MAX_BLOBS {
                let Some(victim) = ix
                    .blobs
                    .iter()
                    .filter(|(h, _)| h.as_str() != hash)
                    .min_by_key(|(_, e)| e.used)
                    .map(|(h, _)| h.clone())
                else {
                    break;
                };
                if let Some(e) = ix.blobs.remove(&victim) {
                    ix.total = ix.total.saturating_sub(e.size);
                }
                evict.push(victim);
            }
        }
        for h in evict {
            let p = self.path_of(&h);
            if let Err(e) = fs::remove_file(&p) {
                tracing::debug!(path = %p.display(), error = %e, "evicted blob already gone");
            }
        }
    }

    /// Bytes and blobs in the store.
    #[cfg(test)]
    pub fn usage(&self) -> (u64, usize) {
        let ix = self.index.lock().unwrap_or_else(|p| p.into_inner());
        (ix.total, ix.blobs.len())
    }
}

/// A few unpredictable bytes for temporary names.
fn rand_suffix() -> [u8; 8] {
    let k = brine_common::crypto::AesKey::random();
    let mut out = [0u8; 8];
    out.copy_from_slice(&k.as_bytes()[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn store(cache: &BlobCache, data: &[u8]) -> PathBuf {
        let mut f = cache.begin().expect("begin");
        f.write(data).expect("write");
        cache.finish(f, &sha(data)).expect("finish")
    }

    #[test]
    fn hashes_are_checked_before_they_become_names() {
        assert!(is_sha256_hex(&sha(b"x")));
        assert!(!is_sha256_hex("../../etc/passwd"));
        assert!(!is_sha256_hex(&sha(b"x").to_uppercase()));
        assert!(!is_sha256_hex(&format!("{}/", &sha(b"x")[..63])));
        assert!(!is_sha256_hex(""));
    }

    #[test]
    fn a_verified_fill_is_stored_under_its_hash() {
        let d = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::open(d.path(), 1 << 20).expect("open");
        let p = store(&cache, b"hello");
        let h = sha(b"hello");
        assert_eq!(p, d.path().join(&h[..2]).join(&h));
        assert_eq!(fs::read(&p).expect("read"), b"hello");
        assert_eq!(cache.lookup(&h), Some(p));
        assert_eq!(cache.usage(), (5, 1));
        assert_eq!(fs::read_dir(d.path().join("tmp")).expect("tmp").count(), 0);
    }

    #[test]
    fn a_fill_that_does_not_match_its_hash_leaves_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::open(d.path(), 1 << 20).expect("open");
        let mut f = cache.begin().expect("begin");
        f.write(b"changed").expect("write");
        let err = cache.finish(f, &sha(b"original")).expect_err("mismatch");
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err}");
        assert_eq!(cache.lookup(&sha(b"original")), None);
        assert_eq!(cache.usage(), (0, 0));
        assert_eq!(fs::read_dir(d.path().join("tmp")).expect("tmp").count(), 0);
    }

    #[test]
    fn least_recently_used_blobs_are_evicted_past_the_bound() {
        let d = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::open(d.path(), 10).expect("open");
        let a = store(&cache, b"aaaa");
        let b = store(&cache, b"bbbb");
        assert!(cache.lookup(&sha(b"aaaa")).is_some(), "a used after b");
        store(&cache, b"cccc");
        assert!(a.exists(), "recently used a stays");
        assert!(!b.exists(), "b evicted");
        assert_eq!(cache.lookup(&sha(b"bbbb")), None);
        assert_eq!(cache.usage(), (8, 2));
        assert!(cache.fits(10) && !cache.fits(11));
    }

    #[test]
    fn a_reopened_store_knows_its_blobs_and_drops_unfinished_fills() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let cache = BlobCache::open(d.path(), 1 << 20).expect("open");
            store(&cache, b"kept");
        }
        fs::write(d.path().join("tmp/123.abc"), "partial").expect("write");
        let cache = BlobCache::open(d.path(), 1 << 20).expect("reopen");
        assert!(cache.lookup(&sha(b"kept")).is_some());
        assert_eq!(cache.usage(), (4, 1));
        assert_eq!(fs::read_dir(d.path().join("tmp")).expect("tmp").count(), 0);
    }

    #[tokio::test]
    async fn concurrent_askers_share_one_flight() {
        let flights: Arc<Flights<String, u32>> = Arc::new(Flights::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (go_tx, go_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let flights = flights.clone();
            let runs = runs.clone();
            let mut go = go_rx.clone();
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k".to_string(), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = go.wait_for(|g| *g).await;
                        7
                    })
                    .await
            }));
        }
        // Let every task join the flight before the leader may finish.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        go_tx.send_replace(true);
        for t in tasks {
            assert_eq!(t.await.expect("join"), Some(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn find_answers_expire() {
        let c = FindCache::default();
        let k = ("base".to_string(), "a".to_string());
        assert_eq!(c.get(&k), None);
        c.put(k.clone(), None);
        assert_eq!(c.get(&k), Some(None));
        tokio::time::advance(FIND_TTL).await;
        assert_eq!(c.get(&k), None);
    }
}
