//! The file server: `salt://` files from `file_roots` ([`roots`]), served
//! in chunks of at most `file_buffer_size` over the request channel, and
//! `cp.push` uploads ([`push`]). One [`FileServer`] per master, built from
//! its config at start ([`MasterState::files`]).
//!
//! On a syndic (a master with an [`Upstream`]) the rule is: **a file
//! present in the syndic's own `file_roots` is served from them; anything
//! else comes from the master above**, and listings are the union of both.
//! Answers from above are cached ([`cache`]): `FileFind` for 2 s per
//! (saltenv, path), one question in flight; file versions in a
//! content-addressed store under `cachedir/file_cache` (1 GiB, least
//! recently used evicted), each filled once, chunk by chunk, by one asker
//! while the others wait, verified by SHA-256 before use. So a file
//! version crosses each link once, not once per minion. A version larger
//! than the store is passed through chunk by chunk. Memory per request is
//! one chunk.
//!
//! Counted in [`Counters`]: `file_paths_refused` (hostile paths, symlinks
//! leaving a root, malformed hashes, push paths outside the minion's
//! directory) and `file_bytes_served` (chunk bytes answered).

pub mod cache;
pub mod push;
pub mod roots;

use crate::state::{bump, Counters, MasterState, Upstream};
use brine_common::config::MasterConfig;
use brine_common::proto::{FileMeta, ListKind, PushChunk, Refusal, ReplyBody, RequestBody, Role};
use cache::{is_sha256_hex, BlobCache, BlobError, FindAnswer, FindCache, CACHE_MAX_BYTES};
use push::{PushError, PushStore};
use roots::{Lookup, Roots, RootsError};
use serde_bytes::ByteBuf;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{debug, info, warn};

/// Why the file server could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum FileServerError {
    #[error(transparent)]
    Roots(#[from] RootsError),
    #[error("file server cache under cachedir: {0}")]
    Cache(#[from] BlobError),
}

/// Create a directory (and parents) with mode 0700.
pub(crate) fn private_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// What a request is answered with besides the file server itself: the
/// master's counters and, on a syndic, the master above.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub counters: &'a Counters,
    pub upstream: Option<&'a dyn Upstream>,
}

/// A master's file server: its roots, the syndic caches, the push store.
pub struct FileServer {
    roots: Roots,
    /// `file_buffer_size`: the largest chunk answered or asked for.
    buffer: usize,
    /// `file_recv`.
    recv: bool,
    push: PushStore,
    blobs: Arc<BlobCache>,
    finds: FindCache,
}

/// A file server question's answer before it becomes a [`ReplyBody`].
type Answer<T> = Result<T, Refusal>;

fn unavailable(why: impl Into<String>) -> Refusal {
    Refusal::Unavailable(why.into())
}

/// `salt://path?saltenv=env` → (env, path): the URL scheme is optional,
/// a `saltenv` in the query wins over the request's, an empty saltenv is
/// `base`.
fn split_url(saltenv: &str, path: &str) -> (String, String) {
    let p = path.strip_prefix("salt://").unwrap_or(path);
    let (p, env) = match p.rsplit_once('?') {
        Some((p, q)) => match q.split('&').find_map(|kv| kv.strip_prefix("saltenv=")) {
            Some(env) => (p, env),
            None => (p, saltenv),
        },
        None => (p, saltenv),
    };
    let env = if env.is_empty() { "base" } else { env };
    (env.to_string(), p.to_string())
}

/// Up to `len` bytes at `offset` of the file at `path` (fewer at its end).
fn read_chunk(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    if offset >= size {
        return Ok(Vec::new());
    }
    let n = (size - offset).min(len as u64) as usize;
    let mut buf = vec![0u8; n];
    let mut done = 0;
    // Each round reads at least one byte or stops: at most `n` rounds.
    while done < n {
        let r = f.read_at(&mut buf[done..], offset + done as u64)?;
        if r == 0 {
            break;
        }
        done += r;
    }
    buf.truncate(done);
    Ok(buf)
}

/// Run blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| unavailable(format!("file server task failed: {e}")))
}

impl FileServer {
    /// The file server `cfg` describes: `file_roots` (when
    /// `fileserver_backend` has `roots`) with the ignore options, pushes
    /// under `cachedir/minions`, the syndic's store under
    /// `cachedir/file_cache` (created 0700).
    pub fn new(cfg: &MasterConfig) -> Result<FileServer, FileServerError> {
        Self::with_cache_bound(cfg, CACHE_MAX_BYTES)
    }

    /// [`FileServer::new`] with a blob cache of at most `cache_max` bytes.
    pub(crate) fn with_cache_bound(
        cfg: &MasterConfig,
        cache_max: u64,
    ) -> Result<FileServer, FileServerError> {
        let envs = if cfg.fileserver_backend.iter().any(|b| b == "roots") {
            cfg.file_roots.clone()
        } else {
            BTreeMap::new()
        };
        let roots = Roots::new(&envs, &cfg.file_ignore_regex, &cfg.file_ignore_glob)?;
        let blobs = BlobCache::open(&cfg.cachedir.join("file_cache"), cache_max)?;
        Ok(FileServer {
            roots,
            buffer: cfg.file_buffer_size.max(1),
            recv: cfg.file_recv,
            push: PushStore::new(cfg.cachedir.join("minions"), cfg.file_recv_max_size),
            blobs: Arc::new(blobs),
            finds: FindCache::default(),
        })
    }

    /// Forget remembered hashes and answers from above
    /// (`fileserver.update`); cached blobs stay (they are verified by
    /// their content).
    pub fn clear_caches(&self) {
        self.roots.clear_cache();
        self.finds.clear();
    }

    /// Answer a file server request from signed-in peer `id`.
    pub async fn answer(&self, cx: Ctx<'_>, id: &str, role: Role, body: RequestBody) -> ReplyBody {
        let refused = ReplyBody::Refused;
        match body {
            RequestBody::FileFind { saltenv, path } => match self.find(cx, &saltenv, &path).await {
                Ok(meta) => ReplyBody::FileMeta(meta),
                Err(r) => refused(r),
            },
            RequestBody::FileChunk {
                saltenv,
                path,
                hash,
                offset,
                len,
            } => match self.chunk(cx, &saltenv, &path, &hash, offset, len).await {
                Ok(bytes) => {
                    cx.counters
                        .file_bytes_served
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    ReplyBody::FileChunk(ByteBuf::from(bytes))
                }
                Err(r) => refused(r),
            },
            RequestBody::FileList {
                saltenv,
                prefix,
                kind,
            } => match self.list(cx, &saltenv, &prefix, kind).await {
                Ok(v) => ReplyBody::FileList(v),
                Err(r) => refused(r),
            },
            RequestBody::FilePush(chunk) => match self.push(cx, id, role, chunk).await {
                Ok(()) => ReplyBody::Ok,
                Err(r) => refused(r),
            },
            _ => refused(unavailable("not a file server request")),
        }
    }

    /// Count and refuse a hostile path.
    fn refuse_path(&self, cx: Ctx<'_>, path: &str, why: &str) -> Refusal {
        let n = bump(&cx.counters.file_paths_refused);
        if n.is_power_of_two() {
            warn!(count = n, path = %path.chars().take(256).collect::<String>(), why, "file server path refused");
        }
        Refusal::BadPath {
            path: path.chars().take(256).collect(),
        }
    }

    /// A roots error as a refusal: hostile paths counted, the rest logged
    /// (the asker is not told the master's real paths).
    fn roots_refusal(&self, cx: Ctx<'_>, path: &str, e: RootsError) -> Refusal {
        match e {
            RootsError::BadPath { why, .. } => self.refuse_path(cx, path, why),
            e => {
                warn!(error = %e, "file server error");
                unavailable("file server error on the master (see its log)")
            }
        }
    }

    /// Look `path` up in the local roots; an escaping symlink is counted
    /// and treated as absent.
    async fn local(
        &self,
        cx: Ctx<'_>,
        env: &str,
        path: &str,
    ) -> Answer<Option<(FileMeta, std::path::PathBuf)>> {
        let roots = self.roots.clone();
        let (e, p) = (env.to_string(), path.to_string());
        match blocking(move || roots.find_lookup(&e, &p)).await? {
            Ok(Lookup::Found(found)) => Ok(Some(found)),
            Ok(Lookup::Absent) => Ok(None),
            Ok(Lookup::Escapes) => {
                self.refuse_path(cx, path, "a symlink leaving its root");
                Ok(None)
            }
            Err(e) => Err(self.roots_refusal(cx, path, e)),
        }
    }

    /// `FileFind`: the local file, else (on a syndic) the master above's.
    async fn find(&self, cx: Ctx<'_>, saltenv: &str, path: &str) -> Answer<Option<FileMeta>> {
        let (env, path) = split_url(saltenv, path);
        if let Some((meta, _)) = self.local(cx, &env, &path).await? {
            return Ok(Some(meta));
        }
        match cx.upstream {
            Some(up) => self.find_above(up, &env, &path).await,
            None => Ok(None),
        }
    }

    /// The master above's `FileFind` answer, cached for a moment, asked
    /// once however many ask at the same time. `path` passed the local
    /// path checks.
    async fn find_above(&self, up: &dyn Upstream, env: &str, path: &str) -> FindAnswer {
        let key = (
            env.to_string(),
            roots::normalise(path).unwrap_or_else(|_| path.to_string()),
        );
        if let Some(a) = self.finds.get(&key) {
            return Ok(a);
        }
        let ask = || async {
            if let Some(a) = self.finds.get(&key) {
                return Ok(a);
            }
            let body = RequestBody::FileFind {
                saltenv: key.0.clone(),
                path: key.1.clone(),
            };
            match up.ask(body).await {
                Ok(ReplyBody::FileMeta(meta)) => {
                    self.finds.put(key.clone(), meta.clone());
                    Ok(meta)
                }
                Ok(ReplyBody::Refused(r)) => Err(r),
                Ok(_) => Err(unavailable(
                    "the master above answered FileFind with another kind",
                )),
                Err(e) => Err(unavailable(format!("master above: {e}"))),
            }
        };
        self.finds
            .flights
            .run(key.clone(), ask)
            .await
            .unwrap_or_else(|| Err(unavailable("file lookup abandoned")))
    }

    /// `FileChunk`: from the local file when it is there (its hash must
    /// match), else from the content cache of the master above's files.
    async fn chunk(
        &self,
        cx: Ctx<'_>,
        saltenv: &str,
        path: &str,
        hash: &str,
        offset: u64,
        len: u32,
    ) -> Answer<Vec<u8>> {
        let (env, path) = split_url(saltenv, path);
        if !is_sha256_hex(hash) {
            return Err(self.refuse_path(cx, &path, "the hash is not a sha256 in hex"));
        }
        let len = (len as usize).min(self.buffer);
        let changed = || Refusal::FileChanged { path: path.clone() };
        if let Some((meta, real)) = self.local(cx, &env, &path).await? {
            if meta.hash != hash {
                return Err(changed());
            }
            return blocking(move || read_chunk(&real, offset, len))
                .await?
                .map_err(|e| {
                    warn!(error = %e, "file server: cannot read a chunk");
                    changed()
                });
        }
        match cx.upstream {
            Some(up) => self.chunk_above(up, &env, &path, hash, offset, len).await,
            None => Err(changed()),
        }
    }

    /// A chunk of a file of the master above, through the blob cache.
    async fn chunk_above(
        &self,
        up: &dyn Upstream,
        env: &str,
        path: &str,
        hash: &str,
        offset: u64,
        len: usize,
    ) -> Answer<Vec<u8>> {
        let changed = || Refusal::FileChanged {
            path: path.to_string(),
        };
        // Twice at most: a blob evicted between the fill and the read is
        // fetched once more.
        for _ in 0..2 {
            if let Some(blob) = self.blobs.lookup(hash) {
                match blocking(move || read_chunk(&blob, offset, len)).await? {
                    Ok(bytes) => return Ok(bytes),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => self.blobs.forget(hash),
                    Err(e) => {
                        warn!(error = %e, "file cache: cannot read a blob");
                        return Err(unavailable("file cache error on the syndic (see its log)"));
                    }
                }
            }
            let Some(meta) = self.find_above(up, env, path).await? else {
                return Err(changed());
            };
            if meta.hash != hash {
                return Err(changed());
            }
            if !self.blobs.fits(meta.size) {
                return self.pass_through(up, env, path, hash, offset, len).await;
            }
            self.blobs
                .fills
                .run(hash.to_string(), || self.fill(up, env, &meta))
                .await
                .unwrap_or_else(|| Err(unavailable("file fetch abandoned")))?;
        }
        Err(unavailable("file cache: the blob went away twice"))
    }

    /// Fetch version `meta` of a file from above into the blob cache,
    /// chunk by chunk, verifying its hash before it is used.
    async fn fill(&self, up: &dyn Upstream, env: &str, meta: &FileMeta) -> Answer<()> {
        if self.blobs.lookup(&meta.hash).is_some() {
            return Ok(());
        }
        let key = (env.to_string(), meta.path.clone());
        let changed = || {
            self.finds.clear_one(&key);
            Refusal::FileChanged {
                path: meta.path.clone(),
            }
        };
        let blobs = self.blobs.clone();
        let mut fill = blocking(move || blobs.begin()).await?.map_err(|e| {
            warn!(error = %e, "file cache: cannot start a fill");
            unavailable("file cache error on the syndic (see its log)")
        })?;
        debug!(path = %meta.path, size = meta.size, "file cache: fetching from the master above");
        // Each round adds at least one byte or returns: at most `size` rounds.
        while fill.written() < meta.size {
            let want = (meta.size - fill.written()).min(self.buffer as u64) as u32;
            let body = RequestBody::FileChunk {
                saltenv: env.to_string(),
                path: meta.path.clone(),
                hash: meta.hash.clone(),
                offset: fill.written(),
                len: want,
            };
            let data = match up.ask(body).await {
                Ok(ReplyBody::FileChunk(b)) => b.into_vec(),
                Ok(ReplyBody::Refused(Refusal::FileChanged { .. })) => return Err(changed()),
                Ok(ReplyBody::Refused(r)) => return Err(r),
                Ok(_) => {
                    return Err(unavailable(
                        "the master above answered FileChunk with another kind",
                    ))
                }
                Err(e) => return Err(unavailable(format!("master above: {e}"))),
            };
            if data.is_empty() {
                return Err(changed());
            }
            if data.len() > want as usize {
                return Err(unavailable(
                    "the master above sent a chunk larger than asked",
                ));
            }
            fill = blocking(move || fill.write(&data).map(|()| fill))
                .await?
                .map_err(|e| {
                    warn!(error = %e, "file cache: cannot write a fill");
                    unavailable("file cache error on the syndic (see its log)")
                })?;
        }
        let blobs = self.blobs.clone();
        let hash = meta.hash.clone();
        match blocking(move || blobs.finish(fill, &hash)).await? {
            Ok(_) => Ok(()),
            Err(e @ BlobError::Mismatch { .. }) => {
                warn!(path = %meta.path, error = %e, "file cache: fetched file does not match its hash");
                Err(changed())
            }
            Err(e) => {
                warn!(error = %e, "file cache: cannot store a fill");
                Err(unavailable("file cache error on the syndic (see its log)"))
            }
        }
    }

    /// A chunk of a file too large to cache, asked from above as is.
    async fn pass_through(
        &self,
        up: &dyn Upstream,
        env: &str,
        path: &str,
        hash: &str,
        offset: u64,
        len: usize,
    ) -> Answer<Vec<u8>> {
        let body = RequestBody::FileChunk {
            saltenv: env.to_string(),
            path: path.to_string(),
            hash: hash.to_string(),
            offset,
            len: len as u32,
        };
        match up.ask(body).await {
            Ok(ReplyBody::FileChunk(b)) if b.len() <= len => Ok(b.into_vec()),
            Ok(ReplyBody::Refused(r)) => Err(r),
            Ok(_) => Err(unavailable(
                "the master above answered FileChunk unexpectedly",
            )),
            Err(e) => Err(unavailable(format!("master above: {e}"))),
        }
    }

    /// `FileList`: the local listing, on a syndic united with the master
    /// above's.
    pub(crate) async fn list(
        &self,
        cx: Ctx<'_>,
        saltenv: &str,
        prefix: &str,
        kind: ListKind,
    ) -> Answer<Vec<String>> {
        let env = if saltenv.is_empty() { "base" } else { saltenv };
        let local = |kind| {
            let roots = self.roots.clone();
            let (e, p) = (env.to_string(), prefix.to_string());
            async move {
                match blocking(move || roots.list(&e, &p, kind)).await? {
                    Ok(v) => Ok(v),
                    Err(e) => Err(self.roots_refusal(cx, prefix, e)),
                }
            }
        };
        let Some(up) = cx.upstream else {
            return local(kind).await;
        };
        let above = |kind| async move {
            let body = RequestBody::FileList {
                saltenv: env.to_string(),
                prefix: prefix.to_string(),
                kind,
            };
            match up.ask(body).await {
                Ok(ReplyBody::FileList(v)) => Ok(v),
                Ok(ReplyBody::Refused(r)) => Err(r),
                Ok(_) => Err(unavailable(
                    "the master above answered FileList with another kind",
                )),
                Err(e) => Err(unavailable(format!("master above: {e}"))),
            }
        };
        if kind != ListKind::EmptyDirs {
            let mut all: BTreeSet<String> = local(kind).await?.into_iter().collect();
            all.extend(above(kind).await?);
            return Ok(all.into_iter().collect());
        }
        // A directory is empty in the union when it is empty on every
        // side that has it.
        let mut dirs_full = BTreeSet::new();
        let mut empty = BTreeSet::new();
        for (dirs, empties) in [
            (
                local(ListKind::Dirs).await?,
                local(ListKind::EmptyDirs).await?,
            ),
            (
                above(ListKind::Dirs).await?,
                above(ListKind::EmptyDirs).await?,
            ),
        ] {
            let empties: BTreeSet<String> = empties.into_iter().collect();
            dirs_full.extend(dirs.into_iter().filter(|d| !empties.contains(d)));
            empty.extend(empties);
        }
        Ok(empty.difference(&dirs_full).cloned().collect())
    }

    /// `FilePush`: one chunk of a minion's `cp.push`.
    async fn push(&self, cx: Ctx<'_>, id: &str, role: Role, chunk: PushChunk) -> Answer<()> {
        if role != Role::Minion {
            return Err(unavailable("only minions push files"));
        }
        if !self.recv {
            return Err(Refusal::FileRecvDisabled);
        }
        let store = self.push.clone();
        let who = id.to_string();
        let path = chunk.path.clone();
        match blocking(move || store.store(&who, &chunk)).await? {
            Ok(Some(dest)) => {
                info!(minion = %id, dest = %dest.display(), "cp.push stored");
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(PushError::TooLarge { max_mib, .. }) => Err(Refusal::FileRecvTooLarge { max_mib }),
            Err(PushError::BadPath { why, .. }) => Err(self.refuse_path(cx, &path, why)),
            Err(e @ (PushError::BadChunk { .. } | PushError::Incomplete { .. })) => {
                warn!(minion = %id, error = %e, "cp.push refused");
                Err(unavailable(e.to_string()))
            }
            Err(e @ PushError::Io { .. }) => {
                warn!(minion = %id, error = %e, "cp.push: cannot store");
                Err(unavailable(
                    "cannot store the pushed file on the master (see its log)",
                ))
            }
        }
    }
}

/// Answer a file server request (`FileFind`, `FileChunk`, `FileList`,
/// `FilePush`) from signed-in peer `id`.
pub(crate) async fn serve(
    state: Arc<MasterState>,
    id: String,
    role: Role,
    body: RequestBody,
) -> ReplyBody {
    let cx = Ctx {
        counters: state.counters(),
        upstream: state.upstream().map(|u| &**u),
    };
    state.files().answer(cx, &id, role, body).await
}

#[cfg(test)]
mod tests;
