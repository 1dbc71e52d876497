//! The minion's file client: `salt://` files from its master's file server,
//! over the authenticated request channel ([`Ask`], which the link
//! implements and tests fake).
//!
//! A file is cached under `cachedir/files/<saltenv>/<path>` (Salt's
//! layout). [`FileClient::cache_file`] asks for the file's [`FileMeta`]
//! (`FileFind`); a cached copy whose SHA-256 matches is used as it is, so a
//! file crosses the network only when it changed. Otherwise the file comes
//! in `FileChunk`s of [`CHUNK_SIZE`], at most [`IN_FLIGHT`] on their way at
//! once (memory: that many chunks, whatever the file's size), into a
//! temporary file beside its destination, which is checked against the hash
//! and then renamed into place: a reader never sees half a file. A file that
//! changes on the master while it is fetched (`Refused(FileChanged)`, or a
//! hash that does not match) is fetched again from the start, at most
//! [`ATTEMPTS`] times.
//!
//! The invariant: nothing the master answers makes the minion write outside
//! the destination it chose. Every `salt://` path and saltenv is checked
//! here before it becomes part of a local path ([`clean_path`],
//! [`check_saltenv`]): no `..`, no absolute path, no empty name.

use brine_common::link::{AskError, LinkHandle};
use brine_common::proto::{FileMeta, ListKind, PushChunk, Refusal, ReplyBody, RequestBody};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::future::Future;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

/// Bytes asked for in one `FileChunk` (Salt's `file_buffer_size` default);
/// a master that serves less per chunk is followed.
pub const CHUNK_SIZE: u32 = 256 * 1024;
/// Chunks of one file on their way at once.
pub const IN_FLIGHT: usize = 4;
/// Fetches of one file before giving up when it keeps changing.
pub const ATTEMPTS: u32 = 3;
/// The longest a single question to the master may take.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(60);
/// Entries `cp.list_minion` walks at most.
const MAX_LOCAL_ENTRIES: usize = 1_000_000;
/// Directory depth `cp.list_minion` walks at most.
const MAX_LOCAL_DEPTH: usize = 64;

/// A question's answer, or why none came.
pub type AskFuture<'a> = Pin<Box<dyn Future<Output = Result<ReplyBody, AskError>> + Send + 'a>>;

/// Asks the master a question: the link in the daemon, a fake in tests.
pub trait Ask: Send + Sync {
    fn ask(&self, body: RequestBody, timeout: Duration) -> AskFuture<'_>;
}

impl Ask for LinkHandle {
    fn ask(&self, body: RequestBody, timeout: Duration) -> AskFuture<'_> {
        Box::pin(LinkHandle::ask(self, body, timeout))
    }
}

/// Why a file operation failed. Messages name the file and the saltenv.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{what} needs the master, and this process has no connection to it (salt-call runs without the minion's link)")]
    NoMaster { what: String },
    #[error("path not allowed: {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("saltenv not allowed: {saltenv:?}: {why}")]
    BadSaltenv { saltenv: String, why: &'static str },
    #[error("asking the master for {what}: {source}")]
    Ask {
        what: String,
        #[source]
        source: AskError,
    },
    #[error("the master refused {what}: {refusal}")]
    Refused { what: String, refusal: Refusal },
    #[error("the master answered {what} with an unexpected {got} answer")]
    Unexpected { what: String, got: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("salt://{path} (saltenv {saltenv}) changed on the master during each of {attempts} fetches; giving up")]
    KeptChanging {
        path: String,
        saltenv: String,
        attempts: u32,
    },
    #[error("bad download of salt://{path} (saltenv {saltenv}): {why}")]
    BadDownload {
        path: String,
        saltenv: String,
        why: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A `salt://` URL split into its path and the saltenv its query names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaltUrl {
    /// The path as written (not yet checked: see [`clean_path`]).
    pub path: String,
    /// `?saltenv=` (or the old `?env=`); it wins over a `saltenv` argument.
    pub saltenv: Option<String>,
}

/// Split `salt://path?saltenv=env`; `None` when `url` is not a `salt://`
/// URL. `salt://|path` escapes the path, as in Salt: a `?` in it is kept.
pub fn parse_salt_url(url: &str) -> Option<SaltUrl> {
    let rest = url.strip_prefix("salt://")?;
    if let Some(escaped) = rest.strip_prefix('|') {
        return Some(SaltUrl {
            path: escaped.to_string(),
            saltenv: None,
        });
    }
    for marker in ["?saltenv=", "?env="] {
        if let Some((path, env)) = rest.split_once(marker) {
            return Some(SaltUrl {
                path: path.to_string(),
                saltenv: Some(env.to_string()),
            });
        }
    }
    Some(SaltUrl {
        path: rest.to_string(),
        saltenv: None,
    })
}

/// A `salt://` path made safe to join under a local directory: relative,
/// `/`-separated, without `..`, empty or `.` parts. A trailing `/` is
/// dropped. Everything else is refused.
pub fn clean_path(path: &str) -> Result<String, FileError> {
    let bad = |why| FileError::BadPath {
        path: path.to_string(),
        why,
    };
    if path.starts_with('/') {
        return Err(bad("absolute paths are not salt:// paths"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(bad("'..' leaves the file roots")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad("names no file"));
    }
    Ok(parts.join("/"))
}

/// A saltenv is one plain directory name under the cache.
pub fn check_saltenv(saltenv: &str) -> Result<(), FileError> {
    let bad = |why| FileError::BadSaltenv {
        saltenv: saltenv.to_string(),
        why,
    };
    if saltenv.is_empty() {
        return Err(bad("empty"));
    }
    if saltenv == "." || saltenv == ".." {
        return Err(bad("not a name"));
    }
    if saltenv.contains(['/', '\0']) {
        return Err(bad("contains '/' or a NUL byte"));
    }
    Ok(())
}

/// Aborts a spawned question when the fetch that asked it is dropped (a
/// cancelled job stops asking).
struct Pending(tokio::task::JoinHandle<Result<ReplyBody, AskError>>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes a temporary file unless it was moved into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A unique name beside `dest` for its download in progress.
fn temp_beside(dest: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!(".{name}.part-{}-{n}", std::process::id()))
}

/// Why a download attempt ended without a file.
enum Failed {
    /// The file changed on the master: find it again and start over.
    Changed(String),
    Fatal(FileError),
}

impl From<FileError> for Failed {
    fn from(e: FileError) -> Self {
        Failed::Fatal(e)
    }
}

/// SHA-256 (hex) of a local file; `None` if it is not a readable regular
/// file. Runs on a blocking thread.
pub async fn hash_local(path: &Path) -> Option<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || hash_local_blocking(&path).ok())
        .await
        .ok()
        .flatten()
}

fn hash_local_blocking(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Ends at end-of-file; each pass consumes input.
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Create `dir` and its parents (new ones get `mode`).
pub fn make_dirs(dir: &Path, mode: u32) -> Result<(), FileError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io_err(dir))
}

/// The file client of one minion (or of `salt-call`, which has no master).
pub struct FileClient {
    asker: Option<Arc<dyn Ask>>,
    cachedir: PathBuf,
    timeout: Duration,
    chunk: u32,
}

impl FileClient {
    /// A client asking through `asker` (`None`: no master; `salt://` fails
    /// with a clear error, local paths and the cache still work).
    pub fn new(asker: Option<Arc<dyn Ask>>, cachedir: PathBuf) -> Self {
        FileClient {
            asker,
            cachedir,
            timeout: ASK_TIMEOUT,
            chunk: CHUNK_SIZE,
        }
    }

    /// Ask for `chunk` bytes per `FileChunk` instead of [`CHUNK_SIZE`].
    pub fn with_chunk_size(mut self, chunk: u32) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// The minion's `cachedir`.
    pub fn cachedir(&self) -> &Path {
        &self.cachedir
    }

    /// True when `salt://` questions can be asked.
    pub fn has_master(&self) -> bool {
        self.asker.is_some()
    }

    fn asker(&self, what: &str) -> Result<&Arc<dyn Ask>, FileError> {
        self.asker.as_ref().ok_or_else(|| FileError::NoMaster {
            what: what.to_string(),
        })
    }

    /// One question; a refusal comes back as the answer it is.
    async fn call(&self, what: &str, body: RequestBody) -> Result<ReplyBody, FileError> {
        self.asker(what)?
            .ask(body, self.timeout)
            .await
            .map_err(|source| FileError::Ask {
                what: what.to_string(),
                source,
            })
    }

    /// Where `salt://path` of `saltenv` is cached.
    pub fn cache_path(&self, saltenv: &str, path: &str) -> Result<PathBuf, FileError> {
        check_saltenv(saltenv)?;
        let clean = clean_path(path)?;
        Ok(self.cachedir.join("files").join(saltenv).join(clean))
    }

    /// `cachedir/localfiles`, where Salt keeps copies of local files.
    pub fn localfiles_dir(&self) -> PathBuf {
        self.cachedir.join("localfiles")
    }

    /// The file's size, hash and mode on the master (`None`: not there).
    pub async fn find(&self, saltenv: &str, path: &str) -> Result<Option<FileMeta>, FileError> {
        check_saltenv(saltenv)?;
        let clean = clean_path(path)?;
        let what = format!("salt://{clean} (saltenv {saltenv})");
        let body = RequestBody::FileFind {
            saltenv: saltenv.to_string(),
            path: clean.clone(),
        };
        match self.call(&what, body).await? {
            ReplyBody::FileMeta(None) => Ok(None),
            ReplyBody::FileMeta(Some(meta)) => {
                let hex_ok =
                    meta.hash.len() == 64 && meta.hash.bytes().all(|b| b.is_ascii_hexdigit());
                if !hex_ok {
                    return Err(FileError::BadDownload {
                        path: clean,
                        saltenv: saltenv.to_string(),
                        why: format!("the master's hash {:?} is not a SHA-256", meta.hash),
                    });
                }
                Ok(Some(FileMeta {
                    hash: meta.hash.to_ascii_lowercase(),
                    ..meta
                }))
            }
            ReplyBody::Refused(refusal) => Err(FileError::Refused { what, refusal }),
            other => Err(FileError::Unexpected {
                what,
                got: other.kind(),
            }),
        }
    }

    /// Cache `salt://path` of `saltenv`; its local path, or `None` when the
    /// master has no such file.
    pub async fn cache_file(
        &self,
        saltenv: &str,
        path: &str,
    ) -> Result<Option<PathBuf>, FileError> {
        let dest = self.cache_path(saltenv, path)?;
        if let Some(dir) = dest.parent() {
            make_dirs(dir, 0o700)?;
        }
        self.fetch_to(saltenv, path, &dest, 0o600).await
    }

    /// Fetch `salt://path` of `saltenv` into `dest` (whose directory must
    /// exist); `None` when the master has no such file. A `dest` that
    /// already holds the same content is left alone.
    pub async fn get_file(
        &self,
        saltenv: &str,
        path: &str,
        dest: &Path,
    ) -> Result<Option<PathBuf>, FileError> {
        let mode = match tokio::fs::metadata(dest).await {
            Ok(m) if m.is_file() => m.permissions().mode() & 0o7777,
            _ => 0o644,
        };
        // Through the cache, as Salt's get_file: a version already cached
        // is not fetched again, whatever the destination.
        let Some(cached) = self.cache_file(saltenv, path).await? else {
            return Ok(None);
        };
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| FileError::Io { path, source }
        };
        let tmp = temp_beside(dest);
        let copied = async {
            tokio::fs::copy(&cached, &tmp).await.map_err(io(&tmp))?;
            tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
                .await
                .map_err(io(&tmp))?;
            tokio::fs::rename(&tmp, dest).await.map_err(io(dest))
        }
        .await;
        if copied.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        copied.map(|()| Some(dest.to_path_buf()))
    }

    async fn fetch_to(
        &self,
        saltenv: &str,
        path: &str,
        dest: &Path,
        mode: u32,
    ) -> Result<Option<PathBuf>, FileError> {
        let clean = clean_path(path)?;
        for attempt in 1..=ATTEMPTS {
            let Some(meta) = self.find(saltenv, &clean).await? else {
                debug!(path = %clean, saltenv, "file not found on the master");
                return Ok(None);
            };
            if hash_local(dest).await.as_deref() == Some(meta.hash.as_str()) {
                debug!(path = %clean, saltenv, dest = %dest.display(), "local copy is current");
                return Ok(Some(dest.to_path_buf()));
            }
            match self.download(saltenv, &clean, &meta, dest, mode).await {
                Ok(()) => {
                    info!(path = %clean, saltenv, dest = %dest.display(), bytes = meta.size, "file fetched");
                    return Ok(Some(dest.to_path_buf()));
                }
                Err(Failed::Changed(why)) => {
                    warn!(path = %clean, saltenv, attempt, why = %why, "file changed while fetched, fetching again");
                }
                Err(Failed::Fatal(e)) => return Err(e),
            }
        }
        Err(FileError::KeptChanging {
            path: clean,
            saltenv: saltenv.to_string(),
            attempts: ATTEMPTS,
        })
    }

    /// One download of the version `meta` names into a temporary file
    /// beside `dest`, checked and renamed into place.
    async fn download(
        &self,
        saltenv: &str,
        path: &str,
        meta: &FileMeta,
        dest: &Path,
        mode: u32,
    ) -> Result<(), Failed> {
        let what = format!("salt://{path} (saltenv {saltenv})");
        let bad = |why: String| FileError::BadDownload {
            path: path.to_string(),
            saltenv: saltenv.to_string(),
            why,
        };
        let asker = self.asker(&what)?.clone();
        let tmp = TempFile {
            path: temp_beside(dest),
            keep: false,
        };
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp.path)
            .await
            .map_err(io_err(&tmp.path))?;
        let mut hasher = Sha256::new();
        let size = meta.size;
        let mut chunk = u64::from(self.chunk);
        let mut written: u64 = 0;
        let mut next: u64 = 0;
        let mut in_flight: VecDeque<(u64, u64, Pending)> = VecDeque::new();
        // Each round writes at least one byte or ends the download, so it
        // runs at most `size` rounds (plus the last, empty one).
        loop {
            while in_flight.len() < IN_FLIGHT && next < size {
                let len = chunk.min(size - next);
                let body = RequestBody::FileChunk {
                    saltenv: saltenv.to_string(),
                    path: path.to_string(),
                    hash: meta.hash.clone(),
                    offset: next,
                    len: u32::try_from(len).unwrap_or(u32::MAX),
                };
                let a = asker.clone();
                let timeout = self.timeout;
                let task = tokio::spawn(async move { a.ask(body, timeout).await });
                in_flight.push_back((next, len, Pending(task)));
                next += len;
            }
            let Some((offset, len, mut pending)) = in_flight.pop_front() else {
                break;
            };
            let answer = (&mut pending.0)
                .await
                .map_err(|e| bad(format!("chunk task failed: {e}")))?
                .map_err(|source| FileError::Ask {
                    what: format!("{what} at offset {offset}"),
                    source,
                })?;
            let data = match answer {
                ReplyBody::FileChunk(data) => data.into_vec(),
                ReplyBody::Refused(Refusal::FileChanged { .. }) => {
                    return Err(Failed::Changed(format!("refused at offset {offset}")))
                }
                ReplyBody::Refused(refusal) => {
                    return Err(Failed::Fatal(FileError::Refused { what, refusal }))
                }
                other => {
                    return Err(Failed::Fatal(FileError::Unexpected {
                        what,
                        got: other.kind(),
                    }))
                }
            };
            let n = data.len() as u64;
            if n > len {
                return Err(bad(format!("{n} bytes at offset {offset}, {len} asked")).into());
            }
            if n == 0 {
                return Err(bad(format!("no bytes at offset {offset} of {size}")).into());
            }
            out.write_all(&data).await.map_err(io_err(&tmp.path))?;
            hasher.update(&data);
            written += n;
            if n < len {
                // The master serves less per chunk than asked: follow it and
                // ask again for everything after what arrived.
                chunk = n;
                in_flight.clear();
                next = written;
            }
        }
        if written != size {
            return Err(bad(format!("{written} bytes arrived, {size} announced")).into());
        }
        out.flush().await.map_err(io_err(&tmp.path))?;
        drop(out);
        let got = hex::encode(hasher.finalize());
        if got != meta.hash {
            return Err(Failed::Changed(format!(
                "content hash {got} is not the announced {}",
                meta.hash
            )));
        }
        if tokio::fs::symlink_metadata(dest)
            .await
            .is_ok_and(|m| m.is_dir())
        {
            return Err(bad(format!("{} is a directory", dest.display())).into());
        }
        let mut tmp = tmp;
        tokio::fs::rename(&tmp.path, dest)
            .await
            .map_err(io_err(dest))?;
        tmp.keep = true;
        Ok(())
    }

    /// A file server listing (`ListKind::Envs` ignores `saltenv`).
    pub async fn list(
        &self,
        saltenv: &str,
        prefix: &str,
        kind: ListKind,
    ) -> Result<Vec<String>, FileError> {
        if kind != ListKind::Envs {
            check_saltenv(saltenv)?;
        }
        let what = format!("the {kind:?} list of saltenv {saltenv}");
        let body = RequestBody::FileList {
            saltenv: saltenv.to_string(),
            prefix: prefix.to_string(),
            kind,
        };
        match self.call(&what, body).await? {
            ReplyBody::FileList(list) => Ok(list),
            ReplyBody::Refused(refusal) => Err(FileError::Refused { what, refusal }),
            other => Err(FileError::Unexpected {
                what,
                got: other.kind(),
            }),
        }
    }

    /// The cached copy of `path` (a `salt://` path of `saltenv`, or a local
    /// path kept in `localfiles`), if there is one.
    pub fn is_cached(&self, saltenv: &str, path: &str) -> Option<PathBuf> {
        let (path, saltenv) = match parse_salt_url(path) {
            Some(u) => (u.path, u.saltenv.unwrap_or_else(|| saltenv.to_string())),
            None => (path.to_string(), saltenv.to_string()),
        };
        let rel = clean_path(path.trim_start_matches('/')).ok()?;
        let in_files = self.cache_path(&saltenv, &rel).ok()?;
        if in_files.exists() {
            return Some(in_files);
        }
        let local = self.localfiles_dir().join(&rel);
        local.exists().then_some(local)
    }

    /// Every cached file of `saltenv` and every file in `localfiles`, as
    /// sorted absolute paths (Salt's `cp.list_minion`). Symlinks are not
    /// followed.
    pub fn list_local(&self, saltenv: &str) -> Result<Vec<String>, FileError> {
        check_saltenv(saltenv)?;
        let mut out = Vec::new();
        for root in [
            self.cachedir.join("files").join(saltenv),
            self.localfiles_dir(),
        ] {
            walk_files(&root, &mut out)?;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// `cp.push`: send `local` to the master in chunks of `chunk` bytes,
    /// to be stored under `remote` (a relative path) in the master's
    /// directory for this minion. Each chunk waits for its answer.
    pub async fn push(&self, local: &Path, remote: &str, chunk: usize) -> Result<(), FileError> {
        let what = format!("the push of {}", local.display());
        self.asker(&what)?;
        let mut f = tokio::fs::File::open(local).await.map_err(io_err(local))?;
        let size = f.metadata().await.map_err(io_err(local))?.len();
        let chunk = chunk.max(1);
        let mut offset: u64 = 0;
        let mut buf = vec![0u8; chunk];
        // Each round sends one chunk and advances by its length; the round
        // that reaches the size (or the end of the file) is the last.
        loop {
            let want = usize::try_from(size.saturating_sub(offset))
                .unwrap_or(usize::MAX)
                .min(chunk);
            let mut got = 0;
            while got < want {
                let n = f.read(&mut buf[got..want]).await.map_err(io_err(local))?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            let last = got < chunk || offset + got as u64 >= size;
            let body = RequestBody::FilePush(PushChunk {
                path: remote.to_string(),
                size,
                offset,
                data: ByteBuf::from(buf[..got].to_vec()),
                last,
            });
            match self.call(&what, body).await? {
                ReplyBody::Ok => {}
                ReplyBody::Refused(refusal) => return Err(FileError::Refused { what, refusal }),
                other => {
                    return Err(FileError::Unexpected {
                        what,
                        got: other.kind(),
                    })
                }
            }
            offset += got as u64;
            if last {
                return Ok(());
            }
        }
    }
}

/// A download in progress (or left by a crash): see [`temp_beside`].
fn is_partial(name: &str) -> bool {
    name.starts_with('.') && name.contains(".part-")
}

/// Regular files under `root` (missing root: none), depth and count capped;
/// downloads in progress are left out.
fn walk_files(root: &Path, out: &mut Vec<String>) -> Result<(), FileError> {
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    // Each round takes one directory off the stack; entries are capped.
    while let Some((dir, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let ft = entry.file_type().map_err(io_err(&entry.path()))?;
            if ft.is_dir() && depth < MAX_LOCAL_DEPTH {
                stack.push((entry.path(), depth + 1));
            } else if ft.is_file() && !is_partial(&entry.file_name().to_string_lossy()) {
                out.push(entry.path().display().to_string());
                if out.len() >= MAX_LOCAL_ENTRIES {
                    warn!(
                        root = %root.display(),
                        max = MAX_LOCAL_ENTRIES,
                        "cache listing cut short"
                    );
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod fake {
    //! A master's file server in a tempdir, answering like the real one,
    //! with knobs for the awkward cases.
    use super::*;
    use brine_common::sync::lock;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// What the fake should do to the next chunk question.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Trick {
        /// Refuse it as `FileChanged`.
        Changed,
        /// Answer with these bytes instead.
        Bytes(Vec<u8>),
    }

    #[derive(Default)]
    pub struct FakeMaster {
        /// saltenv → root directory.
        pub roots: BTreeMap<String, PathBuf>,
        /// Largest chunk served (0: whatever is asked).
        pub max_chunk: usize,
        pub asked: Mutex<Vec<RequestBody>>,
        pub tricks: Mutex<VecDeque<Trick>>,
        /// Answers to pillar questions, in order (then `Pillar({})`).
        pub pillars: Mutex<VecDeque<ReplyBody>>,
        /// Pushed chunks.
        pub pushed: Mutex<Vec<PushChunk>>,
        /// Refuse pushes with this.
        pub refuse_push: Option<Refusal>,
        /// Do not answer at all (an `AskError::NotConnected`).
        pub down: bool,
        /// Extra names in every `Files` listing (a hostile master).
        pub extra_files: Vec<String>,
        /// Refuse events with this (else they are answered `Ok`).
        pub refuse_event: Option<Refusal>,
    }

    impl FakeMaster {
        pub fn serving(saltenv: &str, root: &Path) -> Self {
            let mut m = FakeMaster::default();
            m.roots.insert(saltenv.to_string(), root.to_path_buf());
            m
        }

        pub fn count(&self, pred: impl Fn(&RequestBody) -> bool) -> usize {
            lock(&self.asked).iter().filter(|b| pred(b)).count()
        }

        pub fn chunks_asked(&self) -> usize {
            self.count(|b| matches!(b, RequestBody::FileChunk { .. }))
        }

        fn file(&self, saltenv: &str, path: &str) -> Option<PathBuf> {
            let p = self.roots.get(saltenv)?.join(path);
            p.is_file().then_some(p)
        }

        fn answer(&self, body: RequestBody) -> ReplyBody {
            match body {
                RequestBody::FileFind { saltenv, path } => {
                    ReplyBody::FileMeta(self.file(&saltenv, &path).map(|p| {
                        let data = std::fs::read(&p).unwrap_or_default();
                        FileMeta {
                            path,
                            size: data.len() as u64,
                            hash: hex::encode(Sha256::digest(&data)),
                            mode: 0o644,
                        }
                    }))
                }
                RequestBody::FileChunk {
                    saltenv,
                    path,
                    hash,
                    offset,
                    len,
                } => {
                    match lock(&self.tricks).pop_front() {
                        Some(Trick::Changed) => {
                            return ReplyBody::Refused(Refusal::FileChanged { path })
                        }
                        Some(Trick::Bytes(b)) => return ReplyBody::FileChunk(ByteBuf::from(b)),
                        None => {}
                    }
                    let Some(p) = self.file(&saltenv, &path) else {
                        return ReplyBody::Refused(Refusal::FileChanged { path });
                    };
                    let data = std::fs::read(p).unwrap_or_default();
                    if hex::encode(Sha256::digest(&data)) != hash {
                        return ReplyBody::Refused(Refusal::FileChanged { path });
                    }
                    let mut len = len as usize;
                    if self.max_chunk > 0 {
                        len = len.min(self.max_chunk);
                    }
                    let start = (offset as usize).min(data.len());
                    let end = (start + len).min(data.len());
                    ReplyBody::FileChunk(ByteBuf::from(data[start..end].to_vec()))
                }
                RequestBody::FileList {
                    saltenv,
                    prefix,
                    kind,
                } => {
                    if kind == ListKind::Envs {
                        return ReplyBody::FileList(self.roots.keys().cloned().collect());
                    }
                    let Some(root) = self.roots.get(&saltenv) else {
                        return ReplyBody::FileList(vec![]);
                    };
                    let mut files = Vec::new();
                    let mut dirs = Vec::new();
                    let mut empty = Vec::new();
                    list_tree(root, root, &mut files, &mut dirs, &mut empty);
                    files.extend(self.extra_files.iter().cloned());
                    let pick = match kind {
                        ListKind::Files => files,
                        ListKind::Dirs => dirs,
                        ListKind::EmptyDirs => empty,
                        ListKind::Envs => vec![],
                    };
                    let mut pick: Vec<String> = pick
                        .into_iter()
                        .filter(|p| p.starts_with(&prefix))
                        .collect();
                    pick.sort();
                    ReplyBody::FileList(pick)
                }
                RequestBody::FilePush(c) => {
                    if let Some(r) = &self.refuse_push {
                        return ReplyBody::Refused(r.clone());
                    }
                    lock(&self.pushed).push(c);
                    ReplyBody::Ok
                }
                RequestBody::Pillar { .. } => lock(&self.pillars)
                    .pop_front()
                    .unwrap_or_else(|| ReplyBody::Pillar(serde_json::json!({}))),
                RequestBody::Event(_) => match &self.refuse_event {
                    Some(r) => ReplyBody::Refused(r.clone()),
                    None => ReplyBody::Ok,
                },
                _ => ReplyBody::Refused(Refusal::Unavailable("not faked".into())),
            }
        }
    }

    fn list_tree(
        root: &Path,
        dir: &Path,
        files: &mut Vec<String>,
        dirs: &mut Vec<String>,
        empty: &mut Vec<String>,
    ) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut any = false;
        for e in rd.flatten() {
            any = true;
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .map(|r| r.display().to_string())
                .unwrap_or_default();
            if p.is_dir() {
                dirs.push(rel);
                list_tree(root, &p, files, dirs, empty);
            } else {
                files.push(rel);
            }
        }
        if !any && dir != root {
            if let Ok(rel) = dir.strip_prefix(root) {
                empty.push(rel.display().to_string());
            }
        }
    }

    impl Ask for FakeMaster {
        fn ask(&self, body: RequestBody, _timeout: Duration) -> AskFuture<'_> {
            lock(&self.asked).push(body.clone());
            let down = self.down;
            let answer = (!down).then(|| self.answer(body));
            Box::pin(async move { answer.ok_or(AskError::NotConnected) })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::fake::{FakeMaster, Trick};
    use super::*;

    struct Setup {
        _dir: tempfile::TempDir,
        root: PathBuf,
        cache: PathBuf,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("srv");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        Setup {
            _dir: dir,
            root,
            cache,
        }
    }

    fn client(m: &Arc<FakeMaster>, cache: &Path) -> FileClient {
        let asker: Arc<dyn Ask> = m.clone();
        FileClient::new(Some(asker), cache.to_path_buf())
    }

    fn content(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn salt_urls_and_their_saltenv() {
        assert_eq!(
            parse_salt_url("salt://a/b.txt?saltenv=dev"),
            Some(SaltUrl {
                path: "a/b.txt".into(),
                saltenv: Some("dev".into())
            })
        );
        assert_eq!(
            parse_salt_url("salt://a?env=old").and_then(|u| u.saltenv),
            Some("old".into())
        );
        assert_eq!(
            parse_salt_url("salt://|odd?name").map(|u| u.path),
            Some("odd?name".into())
        );
        assert_eq!(parse_salt_url("/etc/hosts"), None);
    }

    #[test]
    fn hostile_paths_and_saltenvs_are_refused() {
        for bad in [
            "../../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "",
            "/",
            "./",
            "a/..",
            "x\0y",
        ] {
            assert!(
                matches!(clean_path(bad), Err(FileError::BadPath { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(clean_path("a//b/./c/").unwrap(), "a/b/c");
        for bad in ["", ".", "..", "a/b", "x\0"] {
            assert!(check_saltenv(bad).is_err(), "{bad:?}");
        }
        let s = setup();
        let m = Arc::new(FakeMaster::serving("base", &s.root));
        let c = client(&m, &s.cache);
        assert!(c.cache_path("base", "../x").is_err());
        assert!(c.cache_path("../base", "x").is_err());
    }

    #[tokio::test]
    async fn hostile_path_is_refused_before_asking() {
        let s = setup();
        let m = Arc::new(FakeMaster::serving("base", &s.root));
        let c = client(&m, &s.cache);
        let e = c.cache_file("base", "../../etc/passwd").await.unwrap_err();
        assert!(matches!(e, FileError::BadPath { .. }), "{e}");
        assert_eq!(m.count(|_| true), 0, "nothing was asked");
    }

    #[tokio::test]
    async fn cache_file_fetches_in_chunks_and_a_hit_does_not_fetch_again() {
        let s = setup();
        let data = content(1000);
        std::fs::write(s.root.join("sub/f.bin"), &data).unwrap();
        let m = Arc::new(FakeMaster::serving("base", &s.root));
        let c = client(&m, &s.cache).with_chunk_size(64);
        let p = c.cache_file("base", "sub/f.bin").await.unwrap().unwrap();
        assert_eq!(p, s.cache.join("files/base/sub/f.bin"));
        assert_eq!(std::fs::read(&p).unwrap(), data);
        assert_eq!(m.chunks_asked(), 16, "1000 bytes in chunks of 64");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "cached files are private");

        let again = c.cache_file("base", "sub/f.bin").await.unwrap().unwrap();
        assert_eq!(again, p);
        assert_eq!(m.chunks_asked(), 16, "a cache hit fetches nothing");

        // The master's copy changes: fetched again.
        let changed = content(300);
        std::fs::write(s.root.join("sub/f.bin"), &changed).unwrap();
        c.cache_file("base", "sub/f.bin").await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), changed);
        assert_eq!(m.chunks_asked(), 16 + 5);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[tokio::test]
    async fn missing_file_and_empty_file() {
        let s = setup();
        std::fs::write(s.root.join("empty"), b"").unwrap();
        let m = Arc::new(FakeMaster::serving("base", &s.root));
        let c = client(&m, &s.cache);
        assert_eq!(c.cache_file("base", "nope").await.unwrap(), None);
        assert_eq!(c.cache_file("dev", "empty").await.unwrap(), None);
        let p = c.cache_file("base", "empty").await.unwrap().unwrap();
        assert_eq!(std::fs::read(p).unwrap(), b"");
        assert_eq!(m.chunks_asked(), 0);
    }

    #[tokio::test]
    async fn file_changed_is_fetched_again_at_most_three_times() {
        let s = setup();
        std::fs::write(s.root.join("f"), content(200)).unwrap();
        let m = Arc::new(FakeMaster::serving("base", &s.root));
        m.tricks.lock().unwrap().push_back(Trick::Changed);
        let c = client(&m, &s.cache).with_chunk_size(100);
        let p = c.cache_file("base", "f").await.unwrap().unwrap();
        assert_eq!(std::fs::read(p).unwrap(), content(200));
        assert_eq!(
            m.count(|b| matches!(b, RequestBody::FileFind { .. })),
            2,
            "found again after the refusal"
        );

        let s = setup();
        std::fs::write(s.root.join("f"), content(200)).unwrap();
        let m = Arc::new(FakeMaster::serving("base", &s.root));
        for _ in 0..3 {
            m.tricks.lock().unwrap().push_back(Trick::Changed);
        }
        let c = client(&m, &s.cache).with_chunk_size(500);
        let e = c.cache_file("base", "f").await.unwrap_err();
        assert!(
            matches!(e, FileError::KeptChanging { attempts: 3, .. }),
            "{e}"
        );
        assert!(!s.cache.join("files/base/f").exists());
    }

    #[tokio::test]
    async fn wrong_content_is_not_kept() {
        let s = setup();
        std::fs::write(s.root.join("f"), content(10)).unwrap();
        let m = Arc::new(FakeMaster::serving("base", &s.root));
        for _ in 0..3 {
            m.tricks
                .lock()
                .unwrap()
                .push_back(Trick::Bytes(vec![0; 10]));
        }
        let c = client(&m, &s.cache);
        let e = c.cache_file("base", "f").await.unwrap_err();
        assert!(matches!(e, FileError::KeptChanging { .. }), "{e}");
        assert!(!s.cache.join("files/base/f").exists());

        // More bytes than asked is a bad download, not a retry.
        m.tricks
            .lock()
            .unwrap()
            .push_back(Trick::Bytes(vec![0; 11]));
        let e = c.cache_file("base", "f").await.unwrap_err();
        assert!(matches!(e, FileError::BadDownload { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_master_serving_smaller_chunks_is_followed() {
        let s = setup();
        std::fs::write(s.root.join("f"), content(1000)).unwrap();
        let mut m = FakeMaster::serving("base", &s.root);
        m.max_chunk = 100;
        let m = Arc::new(m);
        let c = client(&m, &s.cache).with_chunk_size(256);
        let p = c.cache_file("base", "f").await.unwrap().unwrap();
        assert_eq!(std::fs::read(p).unwrap(), content(1000));
    }

    #[tokio::test]
    async fn get_file_writes_dest_and_skips_an_identical_one() {
        let s = setup();
        std::fs::write(s.root.join("f"), b"hello").unwrap();
        let m = Arc::new(FakeMaster::serving("base", &s.root));
        let c = client(&m, &s.cache);
        let dest = s.cache.join("out.txt");
        assert_eq!(
            c.get_file("base", "f", &dest).await.unwrap(),
            Some(dest.clone())
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(m.chunks_asked(), 1);
        c.get_file("base", "f", &dest).await.unwrap();
        assert_eq!(m.chunks_asked(), 1, "same content: not fetched");
    }

    #[tokio::test]
    async fn no_master_is_a_clear_error() {
        let s = setup();
        let c = FileClient::new(None, s.cache.clone());
        let e = c.cache_file("base", "f").await.unwrap_err();
        assert!(e.to_string().contains("no connection"), "{e}");
        let m = Arc::new(FakeMaster {
            down: true,
            ..FakeMaster::default()
        });
        let c = client(&m, &s.cache);
        let e = c.find("base", "f").await.unwrap_err();
        assert!(matches!(e, FileError::Ask { .. }), "{e}");
    }

    #[tokio::test]
    async fn push_sends_offset_chunks_with_last_on_the_final_one() {
        let s = setup();
        let local = s.cache.join("up.bin");
        std::fs::write(&local, content(250)).unwrap();
        let m = Arc::new(FakeMaster::default());
        let c = client(&m, &s.cache);
        c.push(&local, "tmp/up.bin", 100).await.unwrap();
        let pushed = m.pushed.lock().unwrap().clone();
        let shape: Vec<(u64, usize, bool)> = pushed
            .iter()
            .map(|p| (p.offset, p.data.len(), p.last))
            .collect();
        assert_eq!(
            shape,
            vec![(0, 100, false), (100, 100, false), (200, 50, true)]
        );
        assert!(pushed
            .iter()
            .all(|p| p.size == 250 && p.path == "tmp/up.bin"));
        let joined: Vec<u8> = pushed.iter().flat_map(|p| p.data.to_vec()).collect();
        assert_eq!(joined, content(250));

        // An exact multiple ends on a full chunk marked last; an empty file
        // is one empty last chunk.
        m.pushed.lock().unwrap().clear();
        std::fs::write(&local, content(200)).unwrap();
        c.push(&local, "x", 100).await.unwrap();
        let last: Vec<bool> = m.pushed.lock().unwrap().iter().map(|p| p.last).collect();
        assert_eq!(last, vec![false, true]);
        m.pushed.lock().unwrap().clear();
        std::fs::write(&local, b"").unwrap();
        c.push(&local, "x", 100).await.unwrap();
        let pushed = m.pushed.lock().unwrap().clone();
        assert_eq!(pushed.len(), 1);
        assert!(pushed[0].last && pushed[0].data.is_empty());

        let refusing = Arc::new(FakeMaster {
            refuse_push: Some(Refusal::FileRecvDisabled),
            ..FakeMaster::default()
        });
        let c = client(&refusing, &s.cache);
        let e = c.push(&local, "x", 100).await.unwrap_err();
        assert!(
            matches!(
                e,
                FileError::Refused {
                    refusal: Refusal::FileRecvDisabled,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn local_listing_and_is_cached() {
        let s = setup();
        let c = FileClient::new(None, s.cache.clone());
        std::fs::create_dir_all(s.cache.join("files/base/a")).unwrap();
        std::fs::write(s.cache.join("files/base/a/x"), b"1").unwrap();
        std::fs::create_dir_all(s.cache.join("localfiles/etc")).unwrap();
        std::fs::write(s.cache.join("localfiles/etc/hosts"), b"1").unwrap();
        std::fs::write(s.cache.join("files/base/a/.x.part-1-0"), b"half").unwrap();
        let list = c.list_local("base").unwrap();
        assert_eq!(
            list,
            vec![
                s.cache.join("files/base/a/x").display().to_string(),
                s.cache.join("localfiles/etc/hosts").display().to_string(),
            ]
        );
        assert_eq!(
            c.is_cached("base", "salt://a/x"),
            Some(s.cache.join("files/base/a/x"))
        );
        assert!(c.is_cached("dev", "salt://a/x?saltenv=base").is_some());
        assert_eq!(
            c.is_cached("base", "/etc/hosts"),
            Some(s.cache.join("localfiles/etc/hosts"))
        );
        assert_eq!(c.is_cached("base", "salt://nope"), None);
        assert_eq!(c.is_cached("base", "salt://../x"), None);
    }
}
