//! The master's job cache: every job's publish load, the minions expected to
//! answer it and each return, in one embedded SQLite file
//! (`cachedir/jobs.sqlite`, WAL journal, `synchronous=NORMAL`).
//!
//! Writes never happen on the caller's thread: `record_*` only encode the
//! value and enqueue it on a bounded channel; one dedicated writer thread
//! takes the first queued item, adds up to [`BATCH_MAX`] more of those
//! already queued (it does not wait for more: an idle cache commits at once,
//! a busy one batches whatever queued during the last commit) and commits
//! them in one transaction. When the
//! channel is full the caller blocks until there is room (backpressure, counted
//! in [`JobCacheStats::backpressure_waits`]); nothing queued is ever dropped,
//! and dropping or closing the cache commits whatever is still queued. Reads go
//! through a second connection, which WAL lets run beside the writer; they do
//! file I/O, so async callers should use `spawn_blocking`.
//!
//! A batch that cannot be committed (a full disk) loses none of what no one
//! else keeps: its job records and expected-minion sets are carried into
//! the next batch and retried with back-off (at most [`CARRY_MAX`] of them),
//! and each of its returns is reported not stored to the caller that queued
//! it ([`JobCache::record_return_then`]), whose peer was not acknowledged
//! and sends it again. [`JobCache::after_commit`] answers `true` only when
//! every write its thread queued since its previous notification is
//! committed, so an acknowledgement never covers a lost return.
//!
//! Invariants: the first return stored for a (jid, minion) wins, later ones
//! are counted as duplicates; a job's expected-minion set only grows; jobs
//! older than `keep_jobs` hours (judged by the time in their jid) are deleted
//! with everything stored for them, by the writer at start and every ten
//! minutes (`keep_jobs = 0` keeps jobs forever).
//!
//! **The outbox** (a syndic's returns on their way up): a return queued
//! with [`ForwardUp::Relayed`] or [`ForwardUp::Published`]
//! ([`JobCache::record_return_up_then`]) gets an `outbox` row naming it *in
//! the same transaction* as the return itself, so a return acknowledged to
//! its minion is also on its way up, whenever the syndic is killed. The
//! forwarder reads the outbox in order from a cursor
//! ([`JobCache::outbox_after`], woken by [`JobCache::outbox_wakeup`]) and
//! deletes what the master above acknowledged ([`JobCache::outbox_ack`]).
//! Sequence numbers only grow (also across restarts and an emptied
//! outbox). The outbox holds at most `outbox_max` rows
//! (`syndic_spool_max`): beyond it the oldest are dropped in the same
//! transaction, counted (`outbox_dropped`) and logged.

use crate::published::ForwardUp;
use brine_common::codec;
use brine_common::glob::Glob;
use brine_common::jid::{is_jid, Jid};
use brine_common::metrics::Histogram;
use brine_common::proto::{JobLoad, ReturnLoad, TargetType};
use brine_common::sync::lock;
use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// File name of the database inside `cachedir`.
pub const DB_FILE: &str = "jobs.sqlite";

/// Queue length between the callers and the writer: large enough to absorb a
/// burst of returns from a big fleet while the writer commits.
pub const CHANNEL_CAPACITY: usize = 65_536;

/// Most items committed in one transaction (besides the first one).
pub const BATCH_MAX: usize = 1000;

/// How often the writer deletes expired jobs.
pub const EXPIRE_INTERVAL: Duration = Duration::from_secs(600);

/// Schema version kept in `PRAGMA user_version`: 1 had no outbox; 2 adds
/// it ([`init_schema`] migrates 1 to 2).
const SCHEMA_VERSION: i64 = 2;

/// Most rows in the outbox when the opener sets no bound.
pub const OUTBOX_MAX_DEFAULT: usize = 1_000_000;

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts at committing one batch before its failure is reported.
const COMMIT_ATTEMPTS: u32 = 3;

/// Job records and expected-minion sets of failed batches kept for the
/// next attempt (nobody sends them again, unlike returns). Beyond this the
/// oldest are dropped, logged and counted (`carry_dropped`): a disk full
/// for hours must not fill the master's memory instead.
pub const CARRY_MAX: usize = 10_000;

/// First and longest wait before the writer retries carried writes on its
/// own (when nothing else comes to commit them with).
const CARRY_RETRY_FIRST: Duration = Duration::from_secs(1);
const CARRY_RETRY_MAX: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    jid      TEXT PRIMARY KEY NOT NULL,
    fun      TEXT NOT NULL,
    tgt      TEXT NOT NULL,
    tgt_type TEXT NOT NULL,
    user     TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    load     BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_start ON jobs (start_us);
CREATE TABLE IF NOT EXISTS job_minions (
    jid      TEXT NOT NULL,
    minion   TEXT NOT NULL,
    added_us INTEGER NOT NULL,
    PRIMARY KEY (jid, minion)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS returns (
    jid       TEXT NOT NULL,
    minion    TEXT NOT NULL,
    stored_us INTEGER NOT NULL,
    ret       BLOB NOT NULL,
    PRIMARY KEY (jid, minion)
) WITHOUT ROWID;
";

/// Version 2: returns on their way to the master above, by reference (the
/// return itself is stored once, in `returns`). `up` is the
/// [`ForwardUp`] code ([`up_code`]). AUTOINCREMENT: a sequence number is
/// never given out twice, even after the table was emptied.
const SCHEMA_OUTBOX: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    jid    TEXT NOT NULL,
    minion TEXT NOT NULL,
    up     INTEGER NOT NULL
);
";

/// How a [`ForwardUp`] is stored in `outbox.up`.
fn up_code(up: ForwardUp) -> i64 {
    match up {
        ForwardUp::Stay => 0,
        ForwardUp::Relayed => 1,
        ForwardUp::Published => 2,
    }
}

fn up_of(code: i64) -> ForwardUp {
    match code {
        2 => ForwardUp::Published,
        // 1, or anything unknown: the job came from above (its load is
        // never sent up for it).
        _ => ForwardUp::Relayed,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobCacheError {
    #[error("cannot create job cache directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open job cache {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("job cache {path} is corrupt or not a database ({source}); move it away to start a new cache")]
    Corrupt {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("job cache {path} has schema version {found}, this build knows only {SCHEMA_VERSION}")]
    Schema { path: PathBuf, found: i64 },
    #[error("job cache {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("job cache {path}: stored {what} of job {jid} cannot be decoded: {reason}")]
    Decode {
        path: PathBuf,
        jid: String,
        what: String,
        reason: String,
    },
    #[error("cannot start the job cache writer thread: {0}")]
    Spawn(std::io::Error),
    #[error("job cache writer thread has stopped")]
    WriterGone,
    #[error("job cache writer thread panicked")]
    WriterPanicked,
    #[error("job cache write failed: {0}")]
    Write(String),
}

/// Everything stored for one job (what `salt-run jobs.lookup_jid` shows).
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub load: JobLoad,
    /// The expected minions, sorted.
    pub minions: Vec<String>,
    pub returns: BTreeMap<String, ReturnLoad>,
    /// Salt's `StartTime` shape: `2026, Nov 26 15:58:39.123456` (UTC).
    pub start_time: String,
}

/// One line of `salt-run jobs.list_jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub jid: Jid,
    pub function: String,
    /// Positional arguments; keyword arguments follow as one map marked
    /// `"__kwarg__": true`, as Salt lists them.
    pub arguments: Vec<serde_json::Value>,
    pub target: String,
    pub target_type: String,
    pub user: String,
    pub start_time: String,
    /// How many minions were expected to answer.
    pub minions: usize,
    /// How many have answered.
    pub returned: usize,
}

/// Which jobs `list_jobs` shows.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// fnmatch glob on the function name (`test.*`).
    pub search_function: Option<String>,
    /// fnmatch glob on the target expression.
    pub search_target: Option<String>,
    /// At most this many jobs (the newest).
    pub limit: Option<usize>,
}

/// Counters since this cache was opened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobCacheStats {
    pub jobs_written: u64,
    pub returns_written: u64,
    /// Returns ignored because one for the same (jid, minion) was stored.
    pub duplicates: u64,
    /// Times a caller found the queue full and had to wait.
    pub backpressure_waits: u64,
    /// Transactions committed by the writer.
    pub batches: u64,
    /// Jobs deleted because they were older than `keep_jobs`.
    pub expired: u64,
    /// Batches that could not be committed (after their retries): a full
    /// or failing disk. Their returns were not acknowledged.
    pub batches_failed: u64,
    /// Returns not stored because their batch failed (their senders were
    /// not acknowledged and send them again).
    pub returns_not_stored: u64,
    /// Job records / expected sets waiting in memory for the disk.
    pub carried: u64,
    /// Carried writes dropped past [`CARRY_MAX`].
    pub carry_dropped: u64,
    /// Whether the last batch failed (the job cache is failing now).
    pub failing: bool,
    /// Returns waiting in the outbox for the master above.
    pub outbox_len: u64,
    /// Outbox rows dropped: the oldest past `outbox_max`, or a stored
    /// return that could not be decoded any more.
    pub outbox_dropped: u64,
}

/// Counters shared by the handles and the writer thread.
#[derive(Debug, Default)]
struct Counters {
    jobs_written: AtomicU64,
    returns_written: AtomicU64,
    duplicates: AtomicU64,
    backpressure_waits: AtomicU64,
    batches: AtomicU64,
    expired: AtomicU64,
    batches_failed: AtomicU64,
    returns_not_stored: AtomicU64,
    carried: AtomicU64,
    carry_dropped: AtomicU64,
    failing: std::sync::atomic::AtomicBool,
    /// Kept by the writer (the only one that changes the outbox).
    outbox_len: AtomicU64,
    outbox_dropped: AtomicU64,
    commit_seconds: CommitSeconds,
}

/// Seconds each committed batch took to write (its transaction, from the
/// first statement to the commit), exported as a histogram.
#[derive(Debug, Clone)]
struct CommitSeconds(Histogram);

impl Default for CommitSeconds {
    fn default() -> Self {
        // 0.1 ms .. ~3.3 s.
        CommitSeconds(Histogram::new(brine_common::metrics::exponential_buckets(
            0.0001, 2.0, 16,
        )))
    }
}

/// Called on the writer thread once a queued return is committed or its
/// batch has failed for good.
pub type ReturnDone = Box<dyn FnOnce(ReturnWritten) + Send>;

/// The outcome of one queued return.
#[derive(Debug, Clone, Copy)]
pub struct ReturnWritten {
    /// On disk (or already there: a duplicate); false if its batch failed.
    pub stored: bool,
    /// Size of the encoded return (what a watcher's queue is charged).
    pub bytes: usize,
}

/// One write, already encoded by the caller so the writer only does I/O.
#[derive(Debug)]
enum Op {
    Job {
        jid: String,
        fun: String,
        tgt: String,
        tgt_type: &'static str,
        user: String,
        start_us: i64,
        load: Vec<u8>,
        minions: Vec<String>,
    },
    Minions {
        jid: String,
        minions: Vec<String>,
    },
    Return {
        jid: String,
        minion: String,
        blob: Vec<u8>,
        /// Also queued for the master above (an outbox row) when stored.
        up: ForwardUp,
        /// Told the outcome (see [`JobCache::record_return_then`]).
        done: Option<DoneHook>,
    },
    /// The master above has every outbox row up to `up_to`.
    OutboxAck {
        up_to: i64,
    },
    /// Outbox rows whose return cannot be read any more.
    OutboxForget {
        seqs: Vec<i64>,
    },
    /// Returns of an older syndic's spool: stored if missing and queued in
    /// the outbox whatever was stored before.
    OutboxImport {
        items: Vec<(String, String, Vec<u8>, ForwardUp)>,
    },
}

/// A [`ReturnDone`] that `Op` can carry (and print).
struct DoneHook(ReturnDone);

impl std::fmt::Debug for DoneHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DoneHook")
    }
}

impl Op {
    /// Writes that nobody sends again if they are lost (carried over a
    /// failed batch).
    fn is_carried(&self) -> bool {
        matches!(self, Op::Job { .. } | Op::Minions { .. })
    }
}

type ThreadId = std::thread::ThreadId;

/// What travels to the writer thread.
enum Msg {
    /// A write, with the thread that queued it.
    Op(Op, ThreadId),
    /// Answered once everything queued before it is committed, with the
    /// first write error seen since the previous flush.
    Flush(mpsc::Sender<Result<(), String>>),
    /// Delete expired jobs now; answered with how many.
    Expire(mpsc::Sender<Result<usize, String>>),
    /// Called (on the writer thread) once everything its thread queued
    /// before it is committed (`true`), or some of that was lost (`false`).
    Notify(Box<dyn FnOnce(bool) + Send>, ThreadId),
    /// Commit what is queued and end the thread.
    Stop,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Op(op, _) => write!(f, "Op({op:?})"),
            Msg::Flush(_) => f.write_str("Flush"),
            Msg::Expire(_) => f.write_str("Expire"),
            Msg::Notify(..) => f.write_str("Notify"),
            Msg::Stop => f.write_str("Stop"),
        }
    }
}

/// Handle on the job cache; clones share one writer thread and one reader.
#[derive(Clone)]
pub struct JobCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JobCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCache")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    tx: SyncSender<Msg>,
    /// Taken by whoever stops the writer first (`close` or the last drop).
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Reads have their own connection so they never queue behind writes.
    reader: Mutex<Connection>,
    counters: Arc<Counters>,
    /// Told (by the writer) when a commit added outbox rows.
    outbox_wake: Arc<tokio::sync::Notify>,
}

impl Inner {
    /// Ask the writer to commit what is queued and end, then wait for it.
    fn stop_writer(&self) -> Result<(), JobCacheError> {
        let handle = lock(&self.writer).take();
        let Some(handle) = handle else {
            return Ok(());
        };
        // A send error means the thread is already gone; join tells how.
        let _ = self.tx.send(Msg::Stop);
        handle.join().map_err(|_| JobCacheError::WriterPanicked)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.stop_writer() {
            error!(path = %self.path.display(), error = %e, "job cache writer did not stop cleanly");
        }
    }
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// Microseconds since the epoch encoded in a jid, if it is a real jid.
fn jid_time_us(jid: &str) -> Option<i64> {
    if !is_jid(jid) {
        return None;
    }
    let secs = NaiveDateTime::parse_from_str(jid.get(..14)?, "%Y%m%d%H%M%S").ok()?;
    let micros: i64 = jid.get(14..)?.parse().ok()?;
    Some(secs.and_utc().timestamp_micros() + micros)
}

/// Salt's `StartTime` text for a time in microseconds since the epoch.
fn start_time_text(us: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(us) {
        Some(t) => t.format("%Y, %b %d %H:%M:%S%.6f").to_string(),
        None => String::new(),
    }
}

/// Keyword arguments listed the way Salt shows them in `Arguments`.
fn listed_arguments(load: &JobLoad) -> Vec<serde_json::Value> {
    let mut args = load.arg.clone();
    if !load.kwarg.is_empty() {
        let mut map: serde_json::Map<String, serde_json::Value> = load
            .kwarg
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        map.insert("__kwarg__".to_string(), serde_json::Value::Bool(true));
        args.push(serde_json::Value::Object(map));
    }
    args
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt)
    )
}

/// Open one connection on the cache file with the pragmas every connection
/// needs; corruption is reported as such, naming the file.
fn connect(path: &Path) -> Result<Connection, JobCacheError> {
    let open_err = |source: rusqlite::Error| {
        if is_corruption(&source) {
            JobCacheError::Corrupt {
                path: path.to_path_buf(),
                source,
            }
        } else {
            JobCacheError::Open {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    open_wal(path, "job cache").map_err(open_err)
}

/// Open a SQLite file with what every Brine store uses: a busy timeout,
/// the WAL journal and `synchronous=NORMAL`.
fn open_wal(path: &Path, what: &str) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode answers with the mode now in force; it reads the header,
    // so a file that is not a database fails here.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        warn!(path = %path.display(), mode = %mode, "{what} could not switch to WAL journal");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Create or check the schema (on the writer's connection).
fn init_schema(conn: &Connection, path: &Path) -> Result<(), JobCacheError> {
    let db = |source: rusqlite::Error| {
        if is_corruption(&source) {
            JobCacheError::Corrupt {
                path: path.to_path_buf(),
                source,
            }
        } else {
            JobCacheError::Db {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    if found > SCHEMA_VERSION {
        return Err(JobCacheError::Schema {
            path: path.to_path_buf(),
            found,
        });
    }
    // 0 (a new file) and 1 get the tables they lack; the version is
    // raised in the same transaction, so a crash leaves the old version.
    let tx = conn.unchecked_transaction().map_err(db)?;
    tx.execute_batch(SCHEMA).map_err(db)?;
    tx.execute_batch(SCHEMA_OUTBOX).map_err(db)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(db)?;
    tx.commit().map_err(db)?;
    if found == 1 {
        info!(path = %path.display(), from = found, to = SCHEMA_VERSION, "job cache schema migrated (outbox added)");
    }
    Ok(())
}

/// What [`JobCache::open_with`] sets besides the directory.
#[derive(Debug, Clone, Copy)]
pub struct JobCacheOptions {
    /// Hours jobs are kept (`keep_jobs`); 0 keeps them forever.
    pub keep_jobs_hours: u64,
    /// Most outbox rows (`syndic_spool_max`).
    pub outbox_max: usize,
}

impl JobCacheOptions {
    /// `keep_jobs_hours` and the default outbox bound.
    pub fn keep_jobs(keep_jobs_hours: u64) -> Self {
        JobCacheOptions {
            keep_jobs_hours,
            outbox_max: OUTBOX_MAX_DEFAULT,
        }
    }
}

/// One return on its way up, as [`JobCache::outbox_after`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Its place in the outbox: acknowledging it acknowledges all before.
    pub seq: i64,
    /// [`ForwardUp::Relayed`] or [`ForwardUp::Published`].
    pub up: ForwardUp,
    pub ret: ReturnLoad,
}

impl JobCache {
    /// Open (or create) `cachedir/jobs.sqlite` and start the writer thread.
    /// `keep_jobs_hours = 0` keeps jobs forever.
    pub fn open(cachedir: &Path, keep_jobs_hours: u64) -> Result<Self, JobCacheError> {
        Self::open_with(cachedir, JobCacheOptions::keep_jobs(keep_jobs_hours))
    }

    /// [`JobCache::open`] with every option (a syndic bounds its outbox).
    pub fn open_with(cachedir: &Path, opts: JobCacheOptions) -> Result<Self, JobCacheError> {
        Self::open_with_capacity(cachedir, opts, CHANNEL_CAPACITY)
    }

    fn open_with_capacity(
        cachedir: &Path,
        opts: JobCacheOptions,
        capacity: usize,
    ) -> Result<Self, JobCacheError> {
        let keep_jobs_hours = opts.keep_jobs_hours;
        std::fs::create_dir_all(cachedir).map_err(|source| JobCacheError::CreateDir {
            path: cachedir.to_path_buf(),
            source,
        })?;
        let path = cachedir.join(DB_FILE);
        let writer_conn = connect(&path)?;
        init_schema(&writer_conn, &path)?;
        let reader = connect(&path)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(|source| JobCacheError::Db {
                path: path.clone(),
                source,
            })?;

        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let waiting = count_outbox(&writer_conn).map_err(|source| JobCacheError::Db {
            path: path.clone(),
            source,
        })?;
        counters.outbox_len.store(waiting, Ordering::Relaxed);
        if waiting > 0 {
            info!(path = %path.display(), returns = waiting, "outbox holds returns from before for the master above");
        }
        let outbox_wake = Arc::new(tokio::sync::Notify::new());
        let writer = Writer {
            conn: writer_conn,
            path: path.clone(),
            counters: counters.clone(),
            keep_jobs_hours,
            outbox_max: opts.outbox_max as u64,
            outbox_wake: outbox_wake.clone(),
            pending_error: None,
            carry: std::collections::VecDeque::new(),
            lost: std::collections::HashSet::new(),
            retry_wait: CARRY_RETRY_FIRST,
        };
        let handle = std::thread::Builder::new()
            .name("job-cache-writer".to_string())
            .spawn(move || writer.run(rx))
            .map_err(JobCacheError::Spawn)?;
        info!(path = %path.display(), keep_jobs = keep_jobs_hours, "job cache open");
        Ok(JobCache {
            inner: Arc::new(Inner {
                path,
                tx,
                writer: Mutex::new(Some(handle)),
                reader: Mutex::new(reader),
                counters,
                outbox_wake,
            }),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Queue a message; blocks while the queue is full. False when the writer
    /// has stopped (after `close`), which the caller logs.
    fn enqueue(&self, msg: Msg) -> bool {
        match self.inner.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(msg)) => {
                let waits = self
                    .inner
                    .counters
                    .backpressure_waits
                    .fetch_add(1, Ordering::Relaxed);
                if waits.is_multiple_of(1000) {
                    warn!(
                        waits = waits + 1,
                        "job cache queue full, callers are waiting"
                    );
                }
                // The caller may be an async task (the request loop): let
                // the runtime move its other tasks to another worker while
                // this one waits.
                let wait = || self.inner.tx.send(msg).is_ok();
                match tokio::runtime::Handle::try_current() {
                    Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                        tokio::task::block_in_place(wait)
                    }
                    _ => wait(),
                }
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Store a job's publish load and the minions expected to answer.
    pub fn record_job(&self, load: &JobLoad, minions: &[String]) {
        let blob = match codec::encode(load) {
            Ok(b) => b,
            Err(e) => {
                error!(jid = %load.jid, error = %e, "job load cannot be encoded, not cached");
                return;
            }
        };
        let op = Op::Job {
            jid: load.jid.to_string(),
            fun: load.fun.clone(),
            tgt: load.tgt.clone(),
            tgt_type: load.tgt_type.as_str(),
            user: load.user.clone(),
            start_us: jid_time_us(&load.jid).unwrap_or_else(now_us),
            load: blob,
            minions: minions.to_vec(),
        };
        if !self.enqueue(Msg::Op(op, std::thread::current().id())) {
            error!(jid = %load.jid, "job cache is closed, job not cached");
        }
    }

    /// Add minions to a job's expected set (a syndic reported more).
    pub fn add_minions(&self, jid: &Jid, minions: &[String]) {
        if minions.is_empty() {
            return;
        }
        let op = Op::Minions {
            jid: jid.to_string(),
            minions: minions.to_vec(),
        };
        if !self.enqueue(Msg::Op(op, std::thread::current().id())) {
            error!(jid = %jid, "job cache is closed, expected minions not cached");
        }
    }

    /// Store one return; a later one for the same (jid, minion) is ignored.
    pub fn record_return(&self, ret: &ReturnLoad) {
        self.queue_return(ret, ForwardUp::Stay, None);
    }

    /// Store one return and call `done` (on the writer thread) once it is
    /// committed or its batch failed for good. `done` is not called when
    /// the cache is closed (logged).
    pub fn record_return_then(&self, ret: &ReturnLoad, done: ReturnDone) {
        self.queue_return(ret, ForwardUp::Stay, Some(DoneHook(done)));
    }

    /// [`JobCache::record_return_then`], and when `up` says so, queue the
    /// return for the master above in the same transaction (an outbox row,
    /// added only if this copy is the one stored). `done` then means
    /// "stored and on its way up".
    pub fn record_return_up_then(&self, ret: &ReturnLoad, up: ForwardUp, done: ReturnDone) {
        self.queue_return(ret, up, Some(DoneHook(done)));
    }

    fn queue_return(&self, ret: &ReturnLoad, up: ForwardUp, done: Option<DoneHook>) {
        let blob = match codec::encode(ret) {
            Ok(b) => b,
            Err(e) => {
                error!(jid = %ret.jid, minion = %ret.id, error = %e, "return cannot be encoded, not cached");
                if let Some(DoneHook(f)) = done {
                    f(ReturnWritten {
                        stored: false,
                        bytes: 0,
                    });
                }
                return;
            }
        };
        let op = Op::Return {
            jid: ret.jid.to_string(),
            minion: ret.id.clone(),
            blob,
            up,
            done,
        };
        if !self.enqueue(Msg::Op(op, std::thread::current().id())) {
            error!(jid = %ret.jid, minion = %ret.id, "job cache is closed, return not cached");
        }
    }

    /// Run `done` on the writer thread once every write this thread queued
    /// since its previous `after_commit` is committed (`true`), or once one
    /// of them is lost (`false`; writes of other threads do not count).
    /// Never blocks on I/O: the master acknowledges a return to its minion
    /// only from here, so an acknowledged return is on disk.
    pub fn after_commit(&self, done: impl FnOnce(bool) + Send + 'static) {
        if !self.enqueue(Msg::Notify(Box::new(done), std::thread::current().id())) {
            error!("job cache is closed; commit notification dropped");
        }
    }

    /// Wait until everything queued before this call is committed; reports
    /// the first write failure since the previous flush. Blocks the calling
    /// thread (use `spawn_blocking` from async code).
    pub fn flush(&self) -> Result<(), JobCacheError> {
        let (tx, rx) = mpsc::channel();
        if !self.enqueue(Msg::Flush(tx)) {
            return Err(JobCacheError::WriterGone);
        }
        match rx.recv() {
            Ok(r) => r.map_err(JobCacheError::Write),
            Err(_) => Err(JobCacheError::WriterGone),
        }
    }

    /// Delete jobs older than `keep_jobs` now (after what is queued);
    /// returns how many jobs were deleted.
    pub fn expire_now(&self) -> Result<usize, JobCacheError> {
        let (tx, rx) = mpsc::channel();
        if !self.enqueue(Msg::Expire(tx)) {
            return Err(JobCacheError::WriterGone);
        }
        match rx.recv() {
            Ok(r) => r.map_err(JobCacheError::Write),
            Err(_) => Err(JobCacheError::WriterGone),
        }
    }

    fn db_err(&self, source: rusqlite::Error) -> JobCacheError {
        if is_corruption(&source) {
            JobCacheError::Corrupt {
                path: self.inner.path.clone(),
                source,
            }
        } else {
            JobCacheError::Db {
                path: self.inner.path.clone(),
                source,
            }
        }
    }

    fn decode_err(&self, jid: &str, what: String, e: impl std::fmt::Display) -> JobCacheError {
        JobCacheError::Decode {
            path: self.inner.path.clone(),
            jid: jid.to_string(),
            what,
            reason: e.to_string(),
        }
    }

    /// The publish load of a job this master recorded (`None` when it
    /// recorded none): what a return to an older job is checked against.
    pub fn job_load(&self, jid: &Jid) -> Result<Option<JobLoad>, JobCacheError> {
        let conn = lock(&self.inner.reader);
        let blob: Option<Vec<u8>> = conn
            .query_row(
                "SELECT load FROM jobs WHERE jid = ?1",
                params![jid.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        Ok(blob.and_then(|b| codec::decode(&b, usize::MAX).ok()))
    }

    /// Whether `minion` is in the expected set recorded for `jid`.
    pub fn is_expected(&self, jid: &Jid, minion: &str) -> Result<bool, JobCacheError> {
        let conn = lock(&self.inner.reader);
        conn.query_row(
            "SELECT 1 FROM job_minions WHERE jid = ?1 AND minion = ?2",
            params![jid.as_str(), minion],
            |_| Ok(()),
        )
        .optional()
        .map(|r| r.is_some())
        .map_err(|e| self.db_err(e))
    }

    /// Everything stored for one job, or `None` if nothing is known of it.
    /// A jid known only from returns (a job published by another master)
    /// gets a load rebuilt from the returns: its jid, function and arguments
    /// with an empty target.
    pub fn lookup_jid(&self, jid: &Jid) -> Result<Option<JobRecord>, JobCacheError> {
        let conn = lock(&self.inner.reader);
        let job: Option<(Vec<u8>, i64)> = conn
            .query_row(
                "SELECT load, start_us FROM jobs WHERE jid = ?1",
                params![jid.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;

        let mut minions = Vec::new();
        {
            let mut stmt = conn
                .prepare_cached("SELECT minion FROM job_minions WHERE jid = ?1 ORDER BY minion")
                .map_err(|e| self.db_err(e))?;
            let rows = stmt
                .query_map(params![jid.as_str()], |r| r.get::<_, String>(0))
                .map_err(|e| self.db_err(e))?;
            for row in rows {
                minions.push(row.map_err(|e| self.db_err(e))?);
            }
        }

        let mut returns = BTreeMap::new();
        {
            let mut stmt = conn
                .prepare_cached("SELECT minion, ret FROM returns WHERE jid = ?1")
                .map_err(|e| self.db_err(e))?;
            let rows = stmt
                .query_map(params![jid.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(|e| self.db_err(e))?;
            for row in rows {
                let (minion, blob) = row.map_err(|e| self.db_err(e))?;
                let ret: ReturnLoad = codec::decode(&blob, usize::MAX)
                    .map_err(|e| self.decode_err(jid, format!("return of {minion}"), e))?;
                returns.insert(minion, ret);
            }
        }
        drop(conn);

        let (load, start_us) = match job {
            Some((blob, start_us)) => {
                let load: JobLoad = codec::decode(&blob, usize::MAX)
                    .map_err(|e| self.decode_err(jid, "load".to_string(), e))?;
                (load, Some(start_us))
            }
            None if minions.is_empty() && returns.is_empty() => return Ok(None),
            None => {
                let first = returns.values().next();
                let load = JobLoad {
                    jid: jid.clone(),
                    tgt: String::new(),
                    tgt_type: TargetType::Glob,
                    fun: first.map(|r| r.fun.clone()).unwrap_or_default(),
                    arg: first.map(|r| r.fun_args.clone()).unwrap_or_default(),
                    kwarg: BTreeMap::new(),
                    user: String::new(),
                    timeout: 0,
                    delimiter: ":".to_string(),
                    path: Vec::new(),
                    trace: None,
                };
                (load, jid_time_us(jid))
            }
        };
        Ok(Some(JobRecord {
            load,
            minions,
            returns,
            start_time: start_us.map(start_time_text).unwrap_or_default(),
        }))
    }

    /// Stored jobs, newest first, filtered like `salt-run jobs.list_jobs`.
    pub fn list_jobs(&self, f: &JobFilter) -> Result<Vec<JobSummary>, JobCacheError> {
        let fun_glob = f.search_function.as_deref().map(Glob::new);
        let tgt_glob = f.search_target.as_deref().map(Glob::new);
        let limit = f.limit.unwrap_or(usize::MAX);
        let conn = lock(&self.inner.reader);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut stmt = conn
            .prepare_cached(
                "SELECT jid, fun, tgt, start_us, load,
                        (SELECT COUNT(*) FROM job_minions m WHERE m.jid = j.jid),
                        (SELECT COUNT(*) FROM returns r WHERE r.jid = j.jid)
                 FROM jobs j ORDER BY start_us DESC, jid DESC",
            )
            .map_err(|e| self.db_err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.db_err(e))?;
        // Bounded by the number of stored jobs; stops at `limit` matches.
        while let Some(row) = rows.next().map_err(|e| self.db_err(e))? {
            let fun: String = row.get(1).map_err(|e| self.db_err(e))?;
            let tgt: String = row.get(2).map_err(|e| self.db_err(e))?;
            if fun_glob.as_ref().is_some_and(|g| !g.matches(&fun))
                || tgt_glob.as_ref().is_some_and(|g| !g.matches(&tgt))
            {
                continue;
            }
            let jid: String = row.get(0).map_err(|e| self.db_err(e))?;
            let start_us: i64 = row.get(3).map_err(|e| self.db_err(e))?;
            let blob: Vec<u8> = row.get(4).map_err(|e| self.db_err(e))?;
            let minions: i64 = row.get(5).map_err(|e| self.db_err(e))?;
            let returned: i64 = row.get(6).map_err(|e| self.db_err(e))?;
            let load: JobLoad = codec::decode(&blob, usize::MAX)
                .map_err(|e| self.decode_err(&jid, "load".to_string(), e))?;
            let jid = Jid::parse(&jid).map_err(|e| self.decode_err(&jid, "jid".to_string(), e))?;
            out.push(JobSummary {
                arguments: listed_arguments(&load),
                target_type: load.tgt_type.as_str().to_string(),
                user: load.user,
                jid,
                function: fun,
                target: tgt,
                start_time: start_time_text(start_us),
                minions: usize::try_from(minions).unwrap_or(0),
                returned: usize::try_from(returned).unwrap_or(0),
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Counters since open.
    pub fn stats(&self) -> JobCacheStats {
        let c = &self.inner.counters;
        JobCacheStats {
            jobs_written: c.jobs_written.load(Ordering::Relaxed),
            returns_written: c.returns_written.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            backpressure_waits: c.backpressure_waits.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            batches_failed: c.batches_failed.load(Ordering::Relaxed),
            returns_not_stored: c.returns_not_stored.load(Ordering::Relaxed),
            carried: c.carried.load(Ordering::Relaxed),
            carry_dropped: c.carry_dropped.load(Ordering::Relaxed),
            failing: c.failing.load(Ordering::Relaxed),
            outbox_len: c.outbox_len.load(Ordering::Relaxed),
            outbox_dropped: c.outbox_dropped.load(Ordering::Relaxed),
        }
    }

    /// The histogram of batch commit times (seconds), for the metrics
    /// endpoint (a handle: observations made later show in it).
    pub fn commit_seconds(&self) -> Histogram {
        self.inner.counters.commit_seconds.0.clone()
    }

    /// Whether the last batch failed: the job cache cannot write now.
    pub fn failing(&self) -> bool {
        self.inner.counters.failing.load(Ordering::Relaxed)
    }

    /// The stored return of `minion` to `jid`, if any (what a client that
    /// fell behind is sent instead of the live copy).
    pub fn get_return(&self, jid: &Jid, minion: &str) -> Result<Option<ReturnLoad>, JobCacheError> {
        let conn = lock(&self.inner.reader);
        let blob: Option<Vec<u8>> = conn
            .query_row(
                "SELECT ret FROM returns WHERE jid = ?1 AND minion = ?2",
                params![jid.as_str(), minion],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        drop(conn);
        match blob {
            None => Ok(None),
            Some(b) => codec::decode(&b, usize::MAX)
                .map(Some)
                .map_err(|e| self.decode_err(jid, format!("return of {minion}"), e)),
        }
    }

    /// Up to `limit` returns of the outbox after sequence number `cursor`,
    /// oldest first (nothing is removed: see [`JobCache::outbox_ack`]). Only
    /// committed rows are seen. A row whose return cannot be decoded any
    /// more is skipped, counted in `outbox_dropped`, logged and deleted.
    pub fn outbox_after(
        &self,
        cursor: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, JobCacheError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut bad = Vec::new();
        {
            let conn = lock(&self.inner.reader);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT o.seq, o.up, o.jid, o.minion, r.ret FROM outbox o
                     JOIN returns r ON r.jid = o.jid AND r.minion = o.minion
                     WHERE o.seq > ?1 ORDER BY o.seq LIMIT ?2",
                )
                .map_err(|e| self.db_err(e))?;
            let rows = stmt
                .query_map(params![cursor, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                    ))
                })
                .map_err(|e| self.db_err(e))?;
            for row in rows {
                let (seq, up, jid, minion, blob) = row.map_err(|e| self.db_err(e))?;
                match codec::decode::<ReturnLoad>(&blob, usize::MAX) {
                    Ok(ret) => out.push(OutboxEntry {
                        seq,
                        up: up_of(up),
                        ret,
                    }),
                    Err(e) => {
                        warn!(path = %self.inner.path.display(), seq, jid = %jid, minion = %minion, error = %e, "undecodable return in the outbox dropped");
                        bad.push(seq);
                    }
                }
            }
        }
        if !bad.is_empty() {
            self.inner
                .counters
                .outbox_dropped
                .fetch_add(bad.len() as u64, Ordering::Relaxed);
            self.enqueue(Msg::Op(
                Op::OutboxForget { seqs: bad },
                std::thread::current().id(),
            ));
        }
        Ok(out)
    }

    /// The master above has every outbox row up to and including `up_to`:
    /// delete them (queued to the writer; a lost ack only means they are
    /// sent again, and the master above keeps the first copy).
    pub fn outbox_ack(&self, up_to: i64) {
        if !self.enqueue(Msg::Op(
            Op::OutboxAck { up_to },
            std::thread::current().id(),
        )) {
            error!("job cache is closed; outbox acknowledgement dropped");
        }
    }

    /// Returns waiting in the outbox (committed).
    pub fn outbox_len(&self) -> usize {
        usize::try_from(self.inner.counters.outbox_len.load(Ordering::Relaxed))
            .unwrap_or(usize::MAX)
    }

    /// Notified (one stored permit) after every commit that added outbox
    /// rows: the forwarder waits on it instead of polling.
    pub fn outbox_wakeup(&self) -> Arc<tokio::sync::Notify> {
        self.inner.outbox_wake.clone()
    }

    /// Queue returns for the master above whatever was stored before (an
    /// older syndic's spool, imported once at start), storing those the
    /// job cache lacks. Waits for the commit.
    pub fn outbox_import(&self, items: &[(ReturnLoad, ForwardUp)]) -> Result<(), JobCacheError> {
        let mut encoded = Vec::with_capacity(items.len());
        for (ret, up) in items {
            match codec::encode(ret) {
                Ok(blob) => encoded.push((ret.jid.to_string(), ret.id.clone(), blob, *up)),
                Err(e) => {
                    warn!(jid = %ret.jid, minion = %ret.id, error = %e, "return cannot be encoded, not imported")
                }
            }
        }
        if !self.enqueue(Msg::Op(
            Op::OutboxImport { items: encoded },
            std::thread::current().id(),
        )) {
            return Err(JobCacheError::WriterGone);
        }
        self.flush()
    }

    /// Commit everything queued and stop the writer thread. The writer is
    /// shared: other clones can still read, but their writes are refused
    /// (and logged) afterwards.
    pub fn close(self) -> Result<(), JobCacheError> {
        let flushed = self.flush();
        let stopped = self.inner.stop_writer();
        flushed.and(stopped)
    }
}

/// How many rows one committed batch changed.
#[derive(Debug, Default)]
struct BatchCounts {
    jobs: u64,
    returns: u64,
    duplicates: u64,
    /// Outbox rows added, deleted as acknowledged (or unreadable), and
    /// dropped past the bound.
    outbox_added: u64,
    outbox_removed: u64,
    outbox_dropped: u64,
}

/// A notification and how many of its batch's writes were queued before it.
type Notice = (usize, ThreadId, Box<dyn FnOnce(bool) + Send>);

/// One batch as the writer collects it, in queue order.
#[derive(Default)]
struct Collected {
    ops: Vec<Op>,
    /// The thread that queued each of `ops`.
    owners: Vec<ThreadId>,
    flushes: Vec<mpsc::Sender<Result<(), String>>>,
    expires: Vec<mpsc::Sender<Result<usize, String>>>,
    notifies: Vec<Notice>,
    stop: bool,
}

impl Collected {
    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Op(op, t) => {
                self.ops.push(op);
                self.owners.push(t);
            }
            Msg::Flush(tx) => self.flushes.push(tx),
            Msg::Expire(tx) => self.expires.push(tx),
            Msg::Notify(f, t) => self.notifies.push((self.ops.len(), t, f)),
            Msg::Stop => self.stop = true,
        }
    }
}

/// The writer thread's state: the only connection that writes.
struct Writer {
    conn: Connection,
    path: PathBuf,
    counters: Arc<Counters>,
    keep_jobs_hours: u64,
    /// Most outbox rows; the oldest beyond are dropped.
    outbox_max: u64,
    outbox_wake: Arc<tokio::sync::Notify>,
    /// First failure since the last flush, reported to that flush.
    pending_error: Option<String>,
    /// Job records and expected sets of failed batches, oldest first,
    /// committed with the next batch (at most [`CARRY_MAX`]).
    carry: std::collections::VecDeque<Op>,
    /// Threads that queued a write lost since their last notification:
    /// their next `after_commit` answers `false`.
    lost: std::collections::HashSet<ThreadId>,
    /// Back-off of the writer's own retries of `carry`.
    retry_wait: Duration,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        if self.keep_jobs_hours > 0 {
            if let Err(e) = self.expire() {
                error!(path = %self.path.display(), error = %e, "job cache expiry failed");
            }
        }
        let mut next_expire = Instant::now() + EXPIRE_INTERVAL;
        // Runs until Stop or until every sender is gone.
        loop {
            let expire_in = if self.keep_jobs_hours == 0 {
                None
            } else {
                Some(next_expire.saturating_duration_since(Instant::now()))
            };
            // Carried writes are retried on their own after a back-off
            // when nothing else comes to commit them with.
            let retry_in = (!self.carry.is_empty()).then_some(self.retry_wait);
            let wait = match (expire_in, retry_in) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = match wait {
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
                Some(w) => match rx.recv_timeout(w) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            match first {
                Some(m) => {
                    if !self.batch(m, &rx) {
                        break;
                    }
                }
                None => {
                    if self.keep_jobs_hours > 0 && Instant::now() >= next_expire {
                        if let Err(e) = self.expire() {
                            error!(path = %self.path.display(), error = %e, "job cache expiry failed");
                        }
                        next_expire = Instant::now() + EXPIRE_INTERVAL;
                    }
                    if !self.carry.is_empty() {
                        let ok = self.commit_ops(Vec::new(), Vec::new(), Vec::new());
                        self.retry_wait = if ok {
                            CARRY_RETRY_FIRST
                        } else {
                            (self.retry_wait * 2).min(CARRY_RETRY_MAX)
                        };
                    }
                }
            }
        }
        if !self.carry.is_empty() {
            error!(path = %self.path.display(), items = self.carry.len(), "job cache stopped with job records it could not write");
        }
        debug!(path = %self.path.display(), "job cache writer stopped");
    }

    /// Collect one batch starting with `first`, commit it and answer any
    /// flush/expire requests in it. False once asked to stop.
    fn batch(&mut self, first: Msg, rx: &Receiver<Msg>) -> bool {
        let mut b = Collected::default();
        let mut next = Some(first);
        // At most BATCH_MAX + 1 rounds: every round takes one item.
        while let Some(msg) = next.take() {
            b.take(msg);
            if b.stop || !b.flushes.is_empty() || !b.expires.is_empty() || b.ops.len() > BATCH_MAX {
                break;
            }
            if let Ok(m) = rx.try_recv() {
                next = Some(m);
            }
        }
        if b.stop {
            // Commit what other clones queued before the stop; the queue is
            // bounded, so this ends.
            while let Ok(msg) = rx.try_recv() {
                b.take(msg);
            }
        }
        self.commit_ops(b.ops, b.owners, b.notifies);
        for tx in b.expires {
            let r = self.expire().map_err(|e| e.to_string());
            if let Err(e) = &r {
                error!(path = %self.path.display(), error = %e, "job cache expiry failed");
            }
            let _ = tx.send(r);
        }
        for tx in b.flushes {
            let r = match self.pending_error.take() {
                Some(e) => Err(e),
                None => Ok(()),
            };
            // The flusher may have given up waiting; nothing to do then.
            let _ = tx.send(r);
        }
        !b.stop
    }

    /// Commit the carried writes and `ops` (queued by `owners`) in one
    /// transaction; tell each return's hook and each notification how it
    /// went; on failure carry the job records over. True when committed.
    fn commit_ops(&mut self, ops: Vec<Op>, owners: Vec<ThreadId>, notifies: Vec<Notice>) -> bool {
        let carried = self.carry.len();
        let mut all: Vec<Op> = self.carry.drain(..).collect();
        all.extend(ops);
        let committed = all.is_empty() || self.commit(&all);
        self.counters.failing.store(!committed, Ordering::Relaxed);
        if committed && carried > 0 {
            info!(path = %self.path.display(), items = carried, "job cache writes again: carried job records committed");
        }
        if !committed {
            self.counters.batches_failed.fetch_add(1, Ordering::Relaxed);
        }
        // Who lost what, in queue order, so that a notification answers
        // for the writes its thread queued before it and no others.
        let mut next_op = 0usize;
        for (before, thread, f) in notifies {
            if !committed {
                for t in owners.iter().take(before).skip(next_op) {
                    self.lost.insert(*t);
                }
            }
            next_op = next_op.max(before);
            let lost = self.lost.remove(&thread);
            f(committed && !lost);
        }
        if !committed {
            for t in owners.iter().skip(next_op) {
                self.lost.insert(*t);
            }
        }
        let mut not_stored = 0u64;
        for op in all {
            match op {
                Op::Return { done, blob, .. } => {
                    if !committed {
                        not_stored += 1;
                    }
                    if let Some(DoneHook(f)) = done {
                        f(ReturnWritten {
                            stored: committed,
                            bytes: blob.len(),
                        });
                    }
                }
                op if !committed && op.is_carried() => self.carry.push_back(op),
                _ => {}
            }
        }
        if not_stored > 0 {
            self.counters
                .returns_not_stored
                .fetch_add(not_stored, Ordering::Relaxed);
        }
        while self.carry.len() > CARRY_MAX {
            self.carry.pop_front();
            let n = self.counters.carry_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                error!(path = %self.path.display(), count = n, max = CARRY_MAX, "job cache failing for too long: oldest job record waiting for the disk dropped");
            }
        }
        self.counters
            .carried
            .store(self.carry.len() as u64, Ordering::Relaxed);
        committed
    }

    /// Commit a batch, retrying a few times (a lock held by another process,
    /// a briefly full disk); a batch that still fails is logged and reported
    /// to the next flush.
    fn commit(&mut self, ops: &[Op]) -> bool {
        let mut last = None;
        for attempt in 0..COMMIT_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(50 << attempt));
            }
            let outbox = OutboxBound {
                len: self.counters.outbox_len.load(Ordering::Relaxed),
                max: self.outbox_max,
            };
            let started = Instant::now();
            match apply(&mut self.conn, ops, now_us(), outbox) {
                Ok(c) => {
                    let k = &self.counters;
                    k.commit_seconds.0.observe(started.elapsed().as_secs_f64());
                    k.jobs_written.fetch_add(c.jobs, Ordering::Relaxed);
                    k.returns_written.fetch_add(c.returns, Ordering::Relaxed);
                    k.duplicates.fetch_add(c.duplicates, Ordering::Relaxed);
                    k.batches.fetch_add(1, Ordering::Relaxed);
                    if c.duplicates > 0 {
                        debug!(duplicates = c.duplicates, "duplicate returns ignored");
                    }
                    self.outbox_committed(&c);
                    return true;
                }
                Err(e) => {
                    warn!(path = %self.path.display(), attempt = attempt + 1, error = %e, "job cache batch failed");
                    last = Some(e);
                }
            }
        }
        let msg = match last {
            Some(e) => format!("{}: {e}", self.path.display()),
            None => format!("{}: batch not committed", self.path.display()),
        };
        let returns = ops
            .iter()
            .filter(|o| matches!(o, Op::Return { .. }))
            .count();
        error!(path = %self.path.display(), items = ops.len(), returns, error = %msg, "job cache batch not committed: its returns are not acknowledged (their senders resend them), its job records are kept and retried");
        if self.pending_error.is_none() {
            self.pending_error = Some(msg);
        }
        false
    }

    /// Keep the outbox count in step with a committed batch; log drops
    /// (the first and then at powers of two) and wake the forwarder.
    fn outbox_committed(&self, c: &BatchCounts) {
        if c.outbox_added == 0 && c.outbox_removed == 0 && c.outbox_dropped == 0 {
            return;
        }
        let k = &self.counters;
        let len = k.outbox_len.load(Ordering::Relaxed);
        let len = (len + c.outbox_added).saturating_sub(c.outbox_removed + c.outbox_dropped);
        k.outbox_len.store(len, Ordering::Relaxed);
        if c.outbox_dropped > 0 {
            let before = k
                .outbox_dropped
                .fetch_add(c.outbox_dropped, Ordering::Relaxed);
            let after = before + c.outbox_dropped;
            if before == 0 || before.ilog2() != after.ilog2() {
                warn!(path = %self.path.display(), dropped = after, max = self.outbox_max, "outbox full (syndic_spool_max): the oldest returns waiting for the master above were dropped");
            }
        }
        if c.outbox_added > 0 {
            self.outbox_wake.notify_one();
        }
    }

    /// Delete jobs (and what belongs to them) older than `keep_jobs`.
    fn expire(&mut self) -> Result<usize, JobCacheError> {
        if self.keep_jobs_hours == 0 {
            return Ok(0);
        }
        let keep_us =
            i64::try_from(self.keep_jobs_hours.saturating_mul(3_600_000_000)).unwrap_or(i64::MAX);
        let cutoff = now_us().saturating_sub(keep_us);
        let n = expire_before(&mut self.conn, cutoff).map_err(|source| JobCacheError::Db {
            path: self.path.clone(),
            source,
        })?;
        // Expired jobs take their outbox rows along: count again.
        if let Ok(len) = count_outbox(&self.conn) {
            self.counters.outbox_len.store(len, Ordering::Relaxed);
        }
        if n > 0 {
            self.counters.expired.fetch_add(n as u64, Ordering::Relaxed);
            info!(
                jobs = n,
                keep_jobs = self.keep_jobs_hours,
                "expired old jobs"
            );
        }
        Ok(n)
    }
}

/// The outbox's row count before a batch, and its bound.
#[derive(Debug, Clone, Copy)]
struct OutboxBound {
    len: u64,
    max: u64,
}

/// Rows in the outbox (at open and after expiry).
fn count_outbox(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Write one batch in one transaction: a stored return and its outbox row
/// commit together, and the outbox is cut back to its bound (oldest
/// first) before the commit.
fn apply(
    conn: &mut Connection,
    ops: &[Op],
    now: i64,
    outbox: OutboxBound,
) -> rusqlite::Result<BatchCounts> {
    let tx = conn.transaction()?;
    let mut counts = BatchCounts::default();
    {
        let mut ins_out =
            tx.prepare_cached("INSERT INTO outbox (jid, minion, up) VALUES (?1, ?2, ?3)")?;
        let mut ins_job = tx.prepare_cached(
            "INSERT OR IGNORE INTO jobs (jid, fun, tgt, tgt_type, user, start_us, load)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut ins_minion = tx.prepare_cached(
            "INSERT OR IGNORE INTO job_minions (jid, minion, added_us) VALUES (?1, ?2, ?3)",
        )?;
        let mut ins_ret = tx.prepare_cached(
            "INSERT OR IGNORE INTO returns (jid, minion, stored_us, ret) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for op in ops {
            match op {
                Op::Job {
                    jid,
                    fun,
                    tgt,
                    tgt_type,
                    user,
                    start_us,
                    load,
                    minions,
                } => {
                    counts.jobs += ins_job
                        .execute(params![jid, fun, tgt, tgt_type, user, start_us, load])?
                        as u64;
                    for m in minions {
                        ins_minion.execute(params![jid, m, now])?;
                    }
                }
                Op::Minions { jid, minions } => {
                    for m in minions {
                        ins_minion.execute(params![jid, m, now])?;
                    }
                }
                Op::Return {
                    jid,
                    minion,
                    blob,
                    up,
                    ..
                } => {
                    if ins_ret.execute(params![jid, minion, now, blob])? == 0 {
                        counts.duplicates += 1;
                    } else {
                        counts.returns += 1;
                        if up.goes_up() {
                            ins_out.execute(params![jid, minion, up_code(*up)])?;
                            counts.outbox_added += 1;
                        }
                    }
                }
                Op::OutboxAck { up_to } => {
                    counts.outbox_removed +=
                        tx.execute("DELETE FROM outbox WHERE seq <= ?1", params![up_to])? as u64;
                }
                Op::OutboxForget { seqs } => {
                    for seq in seqs {
                        counts.outbox_removed +=
                            tx.execute("DELETE FROM outbox WHERE seq = ?1", params![seq])? as u64;
                    }
                }
                Op::OutboxImport { items } => {
                    for (jid, minion, blob, up) in items {
                        if ins_ret.execute(params![jid, minion, now, blob])? > 0 {
                            counts.returns += 1;
                        }
                        ins_out.execute(params![jid, minion, up_code(*up)])?;
                        counts.outbox_added += 1;
                    }
                }
            }
        }
        let len = (outbox.len + counts.outbox_added).saturating_sub(counts.outbox_removed);
        if len > outbox.max {
            let excess = len - outbox.max;
            counts.outbox_dropped = tx.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?1)",
                params![i64::try_from(excess).unwrap_or(i64::MAX)],
            )? as u64;
        }
    }
    tx.commit()?;
    Ok(counts)
}

/// Delete jobs started before `cutoff` with their minions and returns, and
/// returns/minions of unknown jobs stored before it; counts the jobs.
fn expire_before(conn: &mut Connection, cutoff: i64) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM returns WHERE jid IN (SELECT jid FROM jobs WHERE start_us < ?1)",
        params![cutoff],
    )?;
    tx.execute(
        "DELETE FROM job_minions WHERE jid IN (SELECT jid FROM jobs WHERE start_us < ?1)",
        params![cutoff],
    )?;
    tx.execute(
        "DELETE FROM outbox WHERE jid IN (SELECT jid FROM jobs WHERE start_us < ?1)",
        params![cutoff],
    )?;
    let n = tx.execute("DELETE FROM jobs WHERE start_us < ?1", params![cutoff])?;
    tx.execute(
        "DELETE FROM returns WHERE stored_us < ?1 AND jid NOT IN (SELECT jid FROM jobs)",
        params![cutoff],
    )?;
    // Rows whose return is gone (an unknown job's, expired just above).
    tx.execute(
        "DELETE FROM outbox WHERE NOT EXISTS
           (SELECT 1 FROM returns r WHERE r.jid = outbox.jid AND r.minion = outbox.minion)",
        [],
    )?;
    tx.execute(
        "DELETE FROM job_minions WHERE added_us < ?1 AND jid NOT IN (SELECT jid FROM jobs)",
        params![cutoff],
    )?;
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use brine_common::jid::JidGen;
    use serde_json::json;

    /// A jid from its text (tests only name well-formed ones).
    fn j(jid: &str) -> Jid {
        Jid::parse(jid).expect("jid")
    }

    fn job(jid: &str, fun: &str, tgt: &str) -> JobLoad {
        JobLoad {
            jid: j(jid),
            tgt: tgt.to_string(),
            tgt_type: TargetType::Glob,
            fun: fun.to_string(),
            arg: vec![json!("uptime")],
            kwarg: BTreeMap::new(),
            user: "root".to_string(),
            timeout: 5,
            delimiter: ":".to_string(),
            path: vec![],
            trace: None,
        }
    }

    fn ret(jid: &str, id: &str, value: serde_json::Value) -> ReturnLoad {
        ReturnLoad {
            jid: j(jid),
            id: id.to_string(),
            fun: "cmd.run".to_string(),
            fun_args: vec![json!("uptime")],
            ret: value,
            retcode: 0,
            success: true,
            out: None,
            trace: None,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn glob_follows_fnmatch() {
        let cases = [
            ("*", "", true),
            ("test.*", "test.ping", true),
            ("test.*", "cmd.run", false),
            ("web?", "web1", true),
            ("web?", "web10", false),
            ("web[0-9]*", "web10", true),
            ("web[!0-9]", "webx", true),
            ("web[!0-9]", "web1", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("[]]", "]", true),
            ("[", "[", true),
            ("x[", "x[", true),
            ("[a-]", "-", true),
            ("Test.*", "test.ping", false),
            ("*.*.*", "a.b.c", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(Glob::new(p).matches(s), want, "{p} ~ {s}");
        }
    }

    #[test]
    fn after_commit_runs_once_the_return_is_readable() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = JobCache::open(dir.path(), 24).expect("open");
        cache.record_job(
            &job("20261126120000000001", "test.ping", "*"),
            &names(&["a"]),
        );
        cache.record_return(&ret("20261126120000000001", "a", serde_json::json!(true)));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = cache.clone();
        cache.after_commit(move |ok| {
            // Runs on the writer thread after the commit: a reader sees it.
            let seen = reader
                .lookup_jid(&j("20261126120000000001"))
                .ok()
                .flatten()
                .map(|r| r.returns.contains_key("a"));
            let _ = tx.send((ok, seen));
        });
        let (ok, seen) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("notified");
        assert!(ok);
        assert_eq!(seen, Some(true));
    }

    #[test]
    fn a_failed_batch_keeps_job_records_and_acknowledges_no_lost_return() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(DB_FILE);
        let conn = connect(&path).expect("connect");
        init_schema(&conn, &path).expect("schema");
        // A connection that refuses writes stands in for a full disk.
        conn.pragma_update(None, "query_only", true)
            .expect("pragma");
        let mut w = Writer {
            conn,
            path: path.clone(),
            counters: Arc::new(Counters::default()),
            keep_jobs_hours: 0,
            outbox_max: OUTBOX_MAX_DEFAULT as u64,
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
            pending_error: None,
            carry: std::collections::VecDeque::new(),
            lost: std::collections::HashSet::new(),
            retry_wait: CARRY_RETRY_FIRST,
        };
        let jid = "20261126120000000001";
        let me = std::thread::current().id();
        let load = job(jid, "test.ping", "*");
        let job_op = Op::Job {
            jid: jid.into(),
            fun: load.fun.clone(),
            tgt: load.tgt.clone(),
            tgt_type: "glob",
            user: String::new(),
            start_us: 0,
            load: codec::encode(&load).expect("encode"),
            minions: names(&["a"]),
        };
        let outcome = Arc::new(Mutex::new(Vec::new()));
        let hook = |o: &Arc<Mutex<Vec<String>>>, what: &'static str| {
            let o = o.clone();
            Box::new(move |ok: bool| lock(&o).push(format!("{what}:{ok}")))
                as Box<dyn FnOnce(bool) + Send>
        };
        let ret_op = |id: &str, o: &Arc<Mutex<Vec<String>>>| {
            let o = o.clone();
            let who = id.to_string();
            Op::Return {
                jid: jid.into(),
                minion: id.into(),
                blob: codec::encode(&ret(jid, id, json!(true))).expect("encode"),
                up: ForwardUp::Stay,
                done: Some(DoneHook(Box::new(move |w: ReturnWritten| {
                    lock(&o).push(format!("{who}:{}", w.stored))
                }))),
            }
        };
        // Batch 1 fails: the job record is carried, the return is reported
        // not stored, the notification after it answers false, and a return
        // queued after that notification (the next request's) is lost too.
        let ok = w.commit_ops(
            vec![job_op, ret_op("a", &outcome), ret_op("b", &outcome)],
            vec![me, me, me],
            vec![(2, me, hook(&outcome, "ack1"))],
        );
        assert!(!ok);
        assert_eq!(w.carry.len(), 1, "the job record waits for the disk");
        assert_eq!(*lock(&outcome), ["ack1:false", "a:false", "b:false"]);
        // Batch 2 commits, but this thread lost "b" before its next
        // notification: that one still answers false.
        w.conn
            .pragma_update(None, "query_only", false)
            .expect("pragma");
        lock(&outcome).clear();
        let ok = w.commit_ops(
            vec![ret_op("c", &outcome)],
            vec![me],
            vec![(1, me, hook(&outcome, "ack2"))],
        );
        assert!(ok);
        assert!(w.carry.is_empty(), "carried job record committed");
        assert_eq!(*lock(&outcome), ["ack2:false", "c:true"]);
        lock(&outcome).clear();
        let ok = w.commit_ops(
            vec![ret_op("a", &outcome)],
            vec![me],
            vec![(1, me, hook(&outcome, "ack3"))],
        );
        assert!(ok);
        assert_eq!(*lock(&outcome), ["ack3:true", "a:true"]);
        drop(w);
        let cache = JobCache::open(dir.path(), 0).expect("open");
        let rec = cache
            .lookup_jid(&j(jid))
            .expect("lookup")
            .expect("job known");
        assert_eq!(rec.load.fun, "test.ping");
        assert_eq!(rec.minions, names(&["a"]));
        let got: Vec<&String> = rec.returns.keys().collect();
        assert_eq!(got, ["a", "c"]);
    }

    #[test]
    fn start_time_is_salt_shaped() {
        let us = jid_time_us("20261126155839123456").expect("valid jid");
        assert_eq!(start_time_text(us), "2026, Nov 26 15:58:39.123456");
        assert_eq!(jid_time_us("not-a-jid"), None);
    }

    #[test]
    fn round_trip_job_and_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = JobCache::open(dir.path(), 0).expect("open");
        let mut load = job("20261126155839123456", "cmd.run", "web*");
        load.kwarg.insert("cwd".to_string(), json!("/tmp"));
        cache.record_job(&load, &names(&["web2", "web1"]));
        cache.record_return(&ret(&load.jid, "web1", json!("up 3 days")));
        cache.flush().expect("flush");

        let rec = cache.lookup_jid(&load.jid).expect("lookup").expect("found");
        assert_eq!(rec.load, load);
        assert_eq!(rec.minions, names(&["web1", "web2"]));
        assert_eq!(rec.returns.len(), 1);
        assert_eq!(rec.returns["web1"].ret, json!("up 3 days"));
        assert_eq!(rec.start_time, "2026, Nov 26 15:58:39.123456");
        assert!(cache
            .lookup_jid(&j("20000101000000000000"))
            .expect("lookup")
            .is_none());

        let list = cache.list_jobs(&JobFilter::default()).expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].minions, 2);
        assert_eq!(list[0].returned, 1);
        assert_eq!(list[0].target_type, "glob");
        assert_eq!(
            list[0].arguments,
            vec![json!("uptime"), json!({"cwd": "/tmp", "__kwarg__": true})]
        );
        let s = cache.stats();
        assert_eq!((s.jobs_written, s.returns_written, s.duplicates), (1, 1, 0));
        cache.close().expect("close");
    }

    #[test]
    fn first_return_wins_and_duplicates_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = JobCache::open(dir.path(), 0).expect("open");
        let jid = "20261126155839000001";
        cache.record_job(&job(jid, "test.ping", "*"), &names(&["m1"]));
        cache.record_return(&ret(jid, "m1", json!(true)));
        cache.record_return(&ret(jid, "m1", json!(false)));
        cache.flush().expect("flush");
        cache.record_return(&ret(jid, "m1", json!("third")));
        // Recording the same job again neither replaces nor counts it.
        cache.record_job(&job(jid, "cmd.run", "other"), &names(&["m1"]));
        cache.flush().expect("flush");
        let rec = cache.lookup_jid(&j(jid)).expect("lookup").expect("found");
        assert_eq!(rec.returns["m1"].ret, json!(true));
        assert_eq!(rec.load.fun, "test.ping");
        let s = cache.stats();
        assert_eq!(s.returns_written, 1);
        assert_eq!(s.duplicates, 2);
        assert_eq!(s.jobs_written, 1);
    }

    #[test]
    fn expected_minions_only_grow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = JobCache::open(dir.path(), 0).expect("open");
        let jid = "20261126155839000002";
        cache.record_job(&job(jid, "test.ping", "*"), &names(&["a"]));
        cache.add_minions(&j(jid), &names(&["c", "b", "a"]));
        cache.add_minions(&j(jid), &[]);
        cache.flush().expect("flush");
        let rec = cache.lookup_jid(&j(jid)).expect("lookup").expect("found");
        assert_eq!(rec.minions, names(&["a", "b", "c"]));
    }

    #[test]
    fn returns_of_unknown_jobs_are_kept_and_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = JobCache::open(dir.path(), 0).expect("open");
        let jid = "20261126155839000003";
        cache.record_return(&ret(jid, "m9", json!("x")));
        cache.flush().expect("flush");
        let rec = cache.lookup_jid(&j(jid)).expect("lookup").expect("found");
        assert_eq!(rec.load.fun, "cmd.run");
        assert_eq!(rec.load.tgt, "");
        assert_eq!(rec.returns.len(), 1);
        assert_eq!(rec.start_time, "2026, Nov 26 15:58:39.000003");
    }

    #[test]
    fn restart_finds_everything_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jid = "20261126155839000004";
        {
            let cache = JobCache::open(dir.path(), 0).expect("open");
            let other = cache.clone();
            cache.record_job(&job(jid, "test.ping", "*"), &names(&["m0", "m1", "m2"]));
            for i in 0..3 {
                other.record_return(&ret(jid, &format!("m{i}"), json!(i)));
            }
            // No flush and no close: dropping the last handle must commit.
            drop(cache);
            drop(other);
        }
        let cache = JobCache::open(dir.path(), 0).expect("reopen");
        let rec = cache.lookup_jid(&j(jid)).expect("lookup").expect("found");
        assert_eq!(rec.returns.len(), 3);
        assert_eq!(rec.minions.len(), 3);
        assert_eq!(rec.returns["m2"].ret, json!(2));
        // The first-wins rule holds across the restart too.
        cache.record_return(&ret(jid, "m0", json!("late")));
        cache.flush().expect("flush");
        assert_eq!(cache.stats().duplicates, 1);
        cache.close().expect("close");
    }

    #[test]
    fn old_jobs_expire_now_and_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = "20000101000000000000";
        let older = "19990101000000000000";
        let fresh = JidGen::new().next();
        {
            let cache = JobCache::open(dir.path(), 0).expect("open");
            cache.record_job(&job(old, "test.ping", "*"), &names(&["m1"]));
            cache.record_return(&ret(old, "m1", json!(true)));
            cache.record_job(&job(&fresh, "test.ping", "*"), &names(&["m1"]));
            cache.record_return(&ret(&fresh, "m1", json!(true)));
            // keep_jobs = 0 keeps everything.
            assert_eq!(cache.expire_now().expect("expire"), 0);
            cache.close().expect("close");
        }
        {
            // The writer expires at start, before anything queued later.
            let cache = JobCache::open(dir.path(), 1).expect("open");
            cache.flush().expect("flush");
            assert!(cache.lookup_jid(&j(old)).expect("lookup").is_none());
            assert!(cache.lookup_jid(&fresh).expect("lookup").is_some());
            assert_eq!(cache.stats().expired, 1);

            cache.record_job(&job(older, "test.ping", "*"), &names(&["m1"]));
            cache.record_return(&ret(older, "m1", json!(true)));
            assert_eq!(cache.expire_now().expect("expire"), 1);
            assert!(cache.lookup_jid(&j(older)).expect("lookup").is_none());
            assert_eq!(cache.stats().expired, 2);
            let list = cache.list_jobs(&JobFilter::default()).expect("list");
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].jid, fresh);
            cache.close().expect("close");
        }
    }

    #[test]
    fn list_filters_and_orders_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = JobCache::open(dir.path(), 0).expect("open");
        cache.record_job(&job("20260101000000000001", "test.ping", "web*"), &[]);
        cache.record_job(&job("20260101000000000003", "cmd.run", "db1"), &[]);
        cache.record_job(&job("20260101000000000002", "test.version", "web1"), &[]);
        cache.flush().expect("flush");

        let all = cache.list_jobs(&JobFilter::default()).expect("list");
        let jids: Vec<&str> = all.iter().map(|j| j.jid.as_str()).collect();
        assert_eq!(
            jids,
            [
                "20260101000000000003",
                "20260101000000000002",
                "20260101000000000001"
            ]
        );

        let f = JobFilter {
            search_function: Some("test.*".to_string()),
            ..Default::default()
        };
        let got = cache.list_jobs(&f).expect("list");
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|j| j.function.starts_with("test.")));

        let f = JobFilter {
            search_target: Some("web[0-9]".to_string()),
            ..Default::default()
        };
        let got = cache.list_jobs(&f).expect("list");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].target, "web1");

        let f = JobFilter {
            limit: Some(1),
            ..Default::default()
        };
        let got = cache.list_jobs(&f).expect("list");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].jid, "20260101000000000003");
        assert_eq!(got[0].start_time, "2026, Jan 01 00:00:00.000003");

        let f = JobFilter {
            limit: Some(0),
            ..Default::default()
        };
        assert!(cache.list_jobs(&f).expect("list").is_empty());
    }

    #[test]
    fn ten_thousand_returns_are_batched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = JobCache::open(dir.path(), 0).expect("open");
        let jid = "20261126155839000005";
        let minions: Vec<String> = (0..10_000).map(|i| format!("minion-{i:05}")).collect();
        cache.record_job(&job(jid, "test.ping", "*"), &minions);
        for m in &minions {
            cache.record_return(&ret(jid, m, json!(true)));
        }
        cache.flush().expect("flush");
        let s = cache.stats();
        assert_eq!(s.returns_written, 10_000);
        assert!(s.batches >= 10, "at most {BATCH_MAX}+1 items per batch");
        assert!(
            s.batches < 10_000,
            "returns were not batched: {}",
            s.batches
        );
        let rec = cache.lookup_jid(&j(jid)).expect("lookup").expect("found");
        assert_eq!(rec.returns.len(), 10_000);
        assert_eq!(rec.minions.len(), 10_000);
        let list = cache.list_jobs(&JobFilter::default()).expect("list");
        assert_eq!((list[0].minions, list[0].returned), (10_000, 10_000));
    }

    #[test]
    fn full_queue_blocks_callers_and_loses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = JobCache::open_with_capacity(dir.path(), JobCacheOptions::keep_jobs(0), 4)
            .expect("open");
        let jid = "20261126155839000006";
        cache.record_job(&job(jid, "test.ping", "*"), &[]);
        cache.flush().expect("flush");

        // Hold the write lock from another connection so the writer stalls.
        let blocker = Connection::open(cache.path()).expect("blocker");
        blocker.execute_batch("BEGIN IMMEDIATE").expect("lock");

        let producer = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for i in 0..3000 {
                    cache.record_return(&ret(jid, &format!("m{i}"), json!(i)));
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.stats().backpressure_waits == 0 {
            assert!(Instant::now() < deadline, "producer never waited");
            std::thread::yield_now();
        }
        blocker.execute_batch("COMMIT").expect("unlock");
        producer.join().expect("producer");
        cache.flush().expect("flush");
        let s = cache.stats();
        assert!(s.backpressure_waits > 0);
        assert_eq!(s.returns_written, 3000);
        let rec = cache.lookup_jid(&j(jid)).expect("lookup").expect("found");
        assert_eq!(rec.returns.len(), 3000);
    }

    #[test]
    fn async_caller_waiting_for_room_does_not_stall_the_runtime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = JobCache::open_with_capacity(dir.path(), JobCacheOptions::keep_jobs(0), 4)
            .expect("open");
        let jid = "20261126155839000007";
        cache.record_job(&job(jid, "test.ping", "*"), &[]);
        cache.flush().expect("flush");
        let blocker = Connection::open(cache.path()).expect("blocker");
        blocker.execute_batch("BEGIN IMMEDIATE").expect("lock");
        // One worker: without block_in_place the waiting producer would
        // hold it and the other task could never run.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("runtime");
        // The lock goes after 2 s whatever happens, so a stall ends too.
        let unlocked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let unlocker = {
            let unlocked = unlocked.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(2));
                unlocked.store(true, std::sync::atomic::Ordering::SeqCst);
                blocker.execute_batch("COMMIT").expect("unlock");
            })
        };
        let other_ran = rt.block_on(async {
            let c = cache.clone();
            let producer = tokio::spawn(async move {
                for i in 0..100 {
                    c.record_return(&ret(jid, &format!("m{i}"), json!(i)));
                }
            });
            // A caller on a blocking thread (publish_async) waits too.
            let c = cache.clone();
            let blocking = tokio::task::spawn_blocking(move || {
                for i in 100..150 {
                    c.record_return(&ret(jid, &format!("m{i}"), json!(i)));
                }
            });
            let u = unlocked.clone();
            let other = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                !u.load(std::sync::atomic::Ordering::SeqCst)
            });
            let ran = other.await.expect("other task");
            producer.await.expect("producer");
            blocking.await.expect("blocking producer");
            ran
        });
        unlocker.join().expect("unlocker");
        assert!(
            other_ran,
            "the other task only ran once the queue drained: the runtime stalled"
        );
        assert!(cache.stats().backpressure_waits > 0);
        cache.flush().expect("flush");
        assert_eq!(cache.stats().returns_written, 150);
    }

    #[test]
    fn corrupt_database_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(DB_FILE);
        std::fs::write(&file, vec![0x5a; 8192]).expect("write garbage");
        let err = JobCache::open(dir.path(), 0).expect_err("must refuse");
        assert!(matches!(err, JobCacheError::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn writes_after_close_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = JobCache::open(dir.path(), 0).expect("open");
        let other = cache.clone();
        cache.close().expect("close");
        other.record_return(&ret("20261126155839000007", "m1", json!(1)));
        assert!(matches!(other.flush(), Err(JobCacheError::WriterGone)));
        assert!(other
            .lookup_jid(&j("20261126155839000007"))
            .expect("lookup")
            .is_none());
    }

    /// Record returns of `ids` to `jid` going up as `up`; wait for the
    /// commit.
    fn up_returns(cache: &JobCache, jid: &str, ids: &[&str], up: ForwardUp) {
        for id in ids {
            cache.record_return_up_then(&ret(jid, id, json!(id)), up, Box::new(|_| {}));
        }
        cache.flush().expect("flush");
    }

    fn outbox_ids(cache: &JobCache, cursor: i64) -> Vec<String> {
        cache
            .outbox_after(cursor, 100)
            .expect("outbox")
            .into_iter()
            .map(|e| e.ret.id)
            .collect()
    }

    #[test]
    fn a_return_and_its_outbox_row_commit_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = JobCache::open(dir.path(), 0).expect("open");
        let jid = "20261126155839000010";
        let wake = cache.outbox_wakeup();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = cache.clone();
        cache.record_return_up_then(
            &ret(jid, "m1", json!(1)),
            ForwardUp::Relayed,
            Box::new(move |w| {
                // Runs after the commit: the return and its outbox row are
                // both there, or neither would be.
                let stored = reader.get_return(&j(jid), "m1").ok().flatten().is_some();
                let queued = reader.outbox_after(i64::MIN, 10).ok().map(|v| v.len());
                let _ = tx.send((w.stored, stored, queued));
            }),
        );
        let (ok, stored, queued) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("hook");
        assert!(ok && stored);
        assert_eq!(queued, Some(1));
        assert_eq!(cache.outbox_len(), 1);
        // The forwarder is woken (a stored permit: it need not be waiting).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), wake.notified())
                .await
                .expect("woken");
        });
        // A duplicate adds no second row; a return that stays adds none.
        up_returns(&cache, jid, &["m1"], ForwardUp::Relayed);
        up_returns(&cache, jid, &["m2"], ForwardUp::Stay);
        cache.record_return(&ret(jid, "m3", json!(3)));
        up_returns(&cache, jid, &["m4"], ForwardUp::Published);
        let all = cache.outbox_after(i64::MIN, 10).expect("outbox");
        assert_eq!(
            all.iter()
                .map(|e| (e.ret.id.as_str(), e.up))
                .collect::<Vec<_>>(),
            [("m1", ForwardUp::Relayed), ("m4", ForwardUp::Published)]
        );
        assert_eq!(all[0].ret, ret(jid, "m1", json!(1)));
        assert_eq!(cache.outbox_len(), 2);
        assert_eq!(cache.stats().outbox_len, 2);
    }

    #[test]
    fn a_failed_batch_queues_nothing_for_the_master_above() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(DB_FILE);
        let mut conn = connect(&path).expect("connect");
        init_schema(&conn, &path).expect("schema");
        let jid = "20261126155839000011";
        let op = |id: &str| Op::Return {
            jid: jid.into(),
            minion: id.into(),
            blob: codec::encode(&ret(jid, id, json!(id))).expect("encode"),
            up: ForwardUp::Relayed,
            done: None,
        };
        // A second return whose outbox insert fails (the table is gone)
        // takes the first, committed-looking one down with it.
        let bound = OutboxBound { len: 0, max: 10 };
        apply(&mut conn, &[op("m1")], now_us(), bound).expect("first batch");
        conn.execute_batch("ALTER TABLE outbox RENAME TO outbox_gone")
            .expect("rename");
        assert!(apply(&mut conn, &[op("m2")], now_us(), bound).is_err());
        let returns: i64 = conn
            .query_row("SELECT COUNT(*) FROM returns", [], |r| r.get(0))
            .expect("count");
        assert_eq!(returns, 1, "m2's return went with its outbox row");
    }

    #[test]
    fn the_outbox_is_read_from_a_cursor_and_acknowledged_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jid = "20261126155839000012";
        let last;
        {
            let cache = JobCache::open(dir.path(), 0).expect("open");
            up_returns(&cache, jid, &["a", "b", "c", "d", "e"], ForwardUp::Relayed);
            let head = cache.outbox_after(i64::MIN, 2).expect("head");
            assert_eq!(
                head.iter().map(|e| e.ret.id.as_str()).collect::<Vec<_>>(),
                ["a", "b"]
            );
            assert!(head[0].seq < head[1].seq);
            // The cursor moves on without removing anything.
            assert_eq!(outbox_ids(&cache, head[1].seq), ["c", "d", "e"]);
            assert_eq!(cache.outbox_len(), 5);
            cache.outbox_ack(head[1].seq);
            cache.flush().expect("flush");
            assert_eq!(cache.outbox_len(), 3);
            assert_eq!(outbox_ids(&cache, i64::MIN), ["c", "d", "e"]);
            last = cache.outbox_after(i64::MIN, 10).expect("all")[2].seq;
            assert!(cache.outbox_after(last, 10).expect("after").is_empty());
            assert!(cache.outbox_after(i64::MIN, 0).expect("none").is_empty());
        }
        // A restart finds what was not acknowledged, and sequence numbers
        // keep growing once the outbox was emptied.
        let cache = JobCache::open(dir.path(), 0).expect("reopen");
        assert_eq!(cache.outbox_len(), 3);
        assert_eq!(outbox_ids(&cache, i64::MIN), ["c", "d", "e"]);
        cache.outbox_ack(last);
        cache.flush().expect("flush");
        assert_eq!(cache.outbox_len(), 0);
        up_returns(&cache, jid, &["f"], ForwardUp::Relayed);
        let f = cache.outbox_after(i64::MIN, 10).expect("f");
        assert_eq!(f.len(), 1);
        assert!(f[0].seq > last, "sequence number reused");
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = JobCache::open_with(
            dir.path(),
            JobCacheOptions {
                keep_jobs_hours: 0,
                outbox_max: 3,
            },
        )
        .expect("open");
        let jid = "20261126155839000013";
        up_returns(&cache, jid, &["a", "b"], ForwardUp::Relayed);
        up_returns(&cache, jid, &["c", "d", "e"], ForwardUp::Relayed);
        assert_eq!(outbox_ids(&cache, i64::MIN), ["c", "d", "e"]);
        let s = cache.stats();
        assert_eq!((s.outbox_len, s.outbox_dropped), (3, 2));
        // The returns themselves stay in the job cache.
        assert_eq!(
            cache
                .lookup_jid(&j(jid))
                .expect("lookup")
                .expect("job")
                .returns
                .len(),
            5
        );
        // Room again after an acknowledgement.
        let first = cache.outbox_after(i64::MIN, 1).expect("first")[0].seq;
        cache.outbox_ack(first);
        up_returns(&cache, jid, &["f"], ForwardUp::Relayed);
        assert_eq!(outbox_ids(&cache, i64::MIN), ["d", "e", "f"]);
        assert_eq!(cache.stats().outbox_dropped, 2);
    }

    #[test]
    fn an_undecodable_outbox_return_is_dropped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jid = "20261126155839000014";
        {
            let cache = JobCache::open(dir.path(), 0).expect("open");
            up_returns(&cache, jid, &["a", "b"], ForwardUp::Relayed);
        }
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).expect("side connection");
            conn.execute("UPDATE returns SET ret = x'c1' WHERE minion = 'a'", [])
                .expect("garble");
        }
        let cache = JobCache::open(dir.path(), 0).expect("reopen");
        assert_eq!(outbox_ids(&cache, i64::MIN), ["b"]);
        cache.flush().expect("flush");
        assert_eq!(cache.stats().outbox_dropped, 1);
        assert_eq!(cache.outbox_len(), 1, "the bad row is deleted");
    }

    #[test]
    fn a_version_1_cache_gets_an_outbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(DB_FILE);
        let jid = "20261126155839000015";
        {
            let conn = Connection::open(&path).expect("v1");
            conn.execute_batch(SCHEMA).expect("v1 schema");
            conn.pragma_update(None, "user_version", 1).expect("v1");
            conn.execute(
                "INSERT INTO returns (jid, minion, stored_us, ret) VALUES (?1, 'old', 0, ?2)",
                params![
                    jid,
                    codec::encode(&ret(jid, "old", json!(0))).expect("encode")
                ],
            )
            .expect("v1 return");
        }
        let cache = JobCache::open(dir.path(), 0).expect("migrated");
        let version: i64 = lock(&cache.inner.reader)
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(cache.outbox_len(), 0);
        assert!(cache.get_return(&j(jid), "old").expect("read").is_some());
        up_returns(&cache, jid, &["new"], ForwardUp::Relayed);
        assert_eq!(outbox_ids(&cache, i64::MIN), ["new"]);
        drop(cache);
        // A newer version than this build knows is refused.
        let conn = Connection::open(&path).expect("conn");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump");
        drop(conn);
        assert!(matches!(
            JobCache::open(dir.path(), 0),
            Err(JobCacheError::Schema { .. })
        ));
    }

    #[test]
    fn imported_returns_are_queued_whatever_was_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = JobCache::open(dir.path(), 0).expect("open");
        let jid = "20261126155839000016";
        // Stored before, but its spool entry never went up.
        cache.record_return(&ret(jid, "a", json!("first")));
        cache
            .outbox_import(&[
                (ret(jid, "a", json!("spooled")), ForwardUp::Relayed),
                (ret(jid, "b", json!("b")), ForwardUp::Published),
            ])
            .expect("import");
        let all = cache.outbox_after(i64::MIN, 10).expect("outbox");
        assert_eq!(
            all.iter()
                .map(|e| (e.ret.id.as_str(), e.up))
                .collect::<Vec<_>>(),
            [("a", ForwardUp::Relayed), ("b", ForwardUp::Published)]
        );
        assert_eq!(all[0].ret.ret, json!("first"), "the stored copy wins");
        assert_eq!(cache.outbox_len(), 2);
    }

    #[test]
    fn expired_jobs_leave_the_outbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = "20000101000000000000";
        let fresh = JidGen::new().next();
        {
            let cache = JobCache::open(dir.path(), 0).expect("open");
            cache.record_job(&job(old, "test.ping", "*"), &names(&["m1"]));
            cache.record_job(&job(&fresh, "test.ping", "*"), &names(&["m1"]));
            up_returns(&cache, old, &["m1"], ForwardUp::Relayed);
            up_returns(&cache, &fresh, &["m1"], ForwardUp::Relayed);
            // A return of a job never recorded here, stored long ago.
            up_returns(&cache, "19990101000000000000", &["m2"], ForwardUp::Relayed);
        }
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).expect("side connection");
            conn.execute("UPDATE returns SET stored_us = 0 WHERE minion = 'm2'", [])
                .expect("age");
        }
        let cache = JobCache::open(dir.path(), 1).expect("expires at open");
        cache.flush().expect("flush");
        let left = cache.outbox_after(i64::MIN, 10).expect("outbox");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].ret.jid, fresh);
        assert_eq!(cache.outbox_len(), 1);
    }
}
