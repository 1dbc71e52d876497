//! A syndic's return spool: a durable, bounded FIFO of returns on their way
//! to the master above, kept in a SQLite file (WAL journal,
//! `synchronous=NORMAL`, so a killed and restarted syndic finds every
//! return it accepted).
//!
//! The forwarder `peek`s the oldest returns, sends them up and `ack`s the
//! last sequence number the master confirmed; until then they stay, so a
//! link that drops mid-send loses nothing. Sequence numbers only ever grow,
//! even across restarts and after the spool has been emptied, so an `ack`
//! can never delete a return pushed after the `peek` it answers.
//!
//! Invariant: the spool never holds more than `max_entries` returns; what
//! does not fit is dropped, counted in [`Spool::dropped`] and logged (the
//! first drop and then once per 1000), never silently.
//!
//! Calls are synchronous file I/O: the spool is meant to be owned by one
//! dedicated forwarding task (or used through `spawn_blocking`), not called
//! from latency-sensitive async code.

use brine_common::codec;
use brine_common::proto::ReturnLoad;
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tracing::{info, warn};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ret BLOB NOT NULL
);
";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot create spool directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open spool {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "spool {path} is corrupt or not a database ({source}); move it away to start a new spool"
    )]
    Corrupt {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("spool {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("spool {path}: return of {minion} for job {jid} cannot be encoded: {reason}")]
    Encode {
        path: PathBuf,
        jid: String,
        minion: String,
        reason: String,
    },
}

/// The connection and the entry count it keeps in step (counting rows on
/// every push would scan the table).
struct State {
    conn: Connection,
    len: usize,
}

/// Durable bounded FIFO of returns.
pub struct Spool {
    path: PathBuf,
    max_entries: usize,
    state: Mutex<State>,
    /// Returns refused because the spool was full, plus stored entries that
    /// could not be decoded any more; never reset.
    dropped: AtomicU64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .field("max_entries", &self.max_entries)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

use crate::job_cache::is_corruption;

impl Spool {
    /// Open (or create) the spool file at `path`, holding at most
    /// `max_entries` returns.
    pub fn open(path: &Path, max_entries: usize) -> Result<Self, SpoolError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SpoolError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source: rusqlite::Error| {
            if is_corruption(&source) {
                SpoolError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                }
            } else {
                SpoolError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        let conn = crate::job_cache::open_wal(path, "spool").map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        let len: i64 = conn
            .query_row("SELECT COUNT(*) FROM spool", [], |r| r.get(0))
            .map_err(open_err)?;
        let len = usize::try_from(len).unwrap_or(0);
        if len > 0 {
            info!(path = %path.display(), entries = len, "spool holds returns from before");
        }
        Ok(Spool {
            path: path.to_path_buf(),
            max_entries,
            state: Mutex::new(State { conn, len }),
            dropped: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn db_err(&self, source: rusqlite::Error) -> SpoolError {
        if is_corruption(&source) {
            SpoolError::Corrupt {
                path: self.path.clone(),
                source,
            }
        } else {
            SpoolError::Db {
                path: self.path.clone(),
                source,
            }
        }
    }

    /// Count `n` lost returns and log the first loss and every 1000th.
    fn count_dropped(&self, n: u64, why: &'static str) {
        if n == 0 {
            return;
        }
        let before = self.dropped.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        if before == 0 || before / 1000 != after / 1000 {
            warn!(
                path = %self.path.display(),
                dropped = after,
                max_entries = self.max_entries,
                why,
                "spool dropped returns"
            );
        }
    }

    /// Append returns in order, as many as fit under `max_entries`; the rest
    /// are dropped and counted. Returns how many were accepted. All accepted
    /// items are committed together or not at all.
    pub fn push(&self, items: &[ReturnLoad]) -> Result<usize, SpoolError> {
        let mut blobs = Vec::with_capacity(items.len());
        let mut st = self.lock();
        let room = self.max_entries.saturating_sub(st.len);
        let accepted = items.len().min(room);
        for ret in &items[..accepted] {
            let blob = codec::encode(ret).map_err(|e| SpoolError::Encode {
                path: self.path.clone(),
                jid: ret.jid.clone(),
                minion: ret.id.clone(),
                reason: e.to_string(),
            })?;
            blobs.push(blob);
        }
        if !blobs.is_empty() {
            let tx = st.conn.transaction().map_err(|e| self.db_err(e))?;
            {
                let mut ins = tx
                    .prepare_cached("INSERT INTO spool (ret) VALUES (?1)")
                    .map_err(|e| self.db_err(e))?;
                for blob in &blobs {
                    ins.execute(params![blob]).map_err(|e| self.db_err(e))?;
                }
            }
            tx.commit().map_err(|e| self.db_err(e))?;
            st.len += accepted;
        }
        drop(st);
        self.count_dropped((items.len() - accepted) as u64, "spool full");
        Ok(accepted)
    }

    /// Up to `max` of the oldest returns with their sequence numbers, oldest
    /// first; nothing is removed (see [`Spool::ack`]). A stored entry that
    /// cannot be decoded any more is deleted, counted as dropped and logged,
    /// so one bad row cannot block the spool.
    pub fn peek(&self, max: usize) -> Result<Vec<(i64, ReturnLoad)>, SpoolError> {
        self.peek_after(i64::MIN, max)
    }

    /// [`Spool::peek`] of the entries after sequence number `after` (those
    /// up to it are already on their way).
    pub fn peek_after(&self, after: i64, max: usize) -> Result<Vec<(i64, ReturnLoad)>, SpoolError> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let mut bad = Vec::new();
        let mut st = self.lock();
        {
            let mut stmt = st
                .conn
                .prepare_cached("SELECT seq, ret FROM spool WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .map_err(|e| self.db_err(e))?;
            let rows = stmt
                .query_map(params![after, limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(|e| self.db_err(e))?;
            for row in rows {
                let (seq, blob) = row.map_err(|e| self.db_err(e))?;
                match codec::decode::<ReturnLoad>(&blob, usize::MAX) {
                    Ok(ret) => out.push((seq, ret)),
                    Err(e) => {
                        warn!(path = %self.path.display(), seq, error = %e, "undecodable spool entry removed");
                        bad.push(seq);
                    }
                }
            }
        }
        if !bad.is_empty() {
            let mut removed = 0;
            for seq in &bad {
                removed += st
                    .conn
                    .execute("DELETE FROM spool WHERE seq = ?1", params![seq])
                    .map_err(|e| self.db_err(e))?;
            }
            st.len = st.len.saturating_sub(removed);
            drop(st);
            self.count_dropped(bad.len() as u64, "undecodable entry");
        }
        Ok(out)
    }

    /// Delete the entries with sequence numbers in `first..=last` (one
    /// acknowledged batch; batches before it may still be unanswered).
    pub fn ack_range(&self, first: i64, last: i64) -> Result<(), SpoolError> {
        let mut st = self.lock();
        let removed = st
            .conn
            .execute(
                "DELETE FROM spool WHERE seq BETWEEN ?1 AND ?2",
                params![first, last],
            )
            .map_err(|e| self.db_err(e))?;
        st.len = st.len.saturating_sub(removed);
        Ok(())
    }

    /// Delete every entry with a sequence number up to and including
    /// `up_to_seq` (the master above has them).
    pub fn ack(&self, up_to_seq: i64) -> Result<(), SpoolError> {
        let mut st = self.lock();
        let removed = st
            .conn
            .execute("DELETE FROM spool WHERE seq <= ?1", params![up_to_seq])
            .map_err(|e| self.db_err(e))?;
        st.len = st.len.saturating_sub(removed);
        Ok(())
    }

    /// Entries waiting to be forwarded.
    pub fn len(&self) -> Result<usize, SpoolError> {
        Ok(self.lock().len)
    }

    /// Is nothing waiting?
    pub fn is_empty(&self) -> Result<bool, SpoolError> {
        Ok(self.lock().len == 0)
    }

    /// Returns lost since open (spool full, or an entry that could not be
    /// decoded).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Path of the spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ret(i: usize) -> ReturnLoad {
        ReturnLoad {
            jid: "20261126155839000001".to_string(),
            id: format!("m{i}"),
            fun: "test.ping".to_string(),
            fun_args: vec![],
            ret: json!(i),
            retcode: 0,
            success: true,
            out: None,
            trace: None,
        }
    }

    fn rets(range: std::ops::Range<usize>) -> Vec<ReturnLoad> {
        range.map(ret).collect()
    }

    #[test]
    fn batches_in_flight_are_acknowledged_out_of_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool.sqlite"), 100).expect("open");
        spool.push(&rets(0..6)).expect("push");
        let a = spool.peek_after(i64::MIN, 2).expect("first batch");
        let b = spool.peek_after(a[1].0, 2).expect("second batch");
        let c = spool.peek_after(b[1].0, 10).expect("third batch");
        let ids = |v: &[(i64, ReturnLoad)]| v.iter().map(|(_, r)| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ["m0", "m1"]);
        assert_eq!(ids(&b), ["m2", "m3"]);
        assert_eq!(ids(&c), ["m4", "m5"]);
        // The second batch is acknowledged first: only its entries go.
        spool.ack_range(b[0].0, b[1].0).expect("ack b");
        assert_eq!(spool.len().expect("len"), 4);
        assert_eq!(
            ids(&spool.peek(10).expect("peek")),
            ["m0", "m1", "m4", "m5"]
        );
        spool.ack_range(a[0].0, a[1].0).expect("ack a");
        assert_eq!(ids(&spool.peek(10).expect("peek")), ["m4", "m5"]);
        assert!(spool
            .peek_after(c[1].0, 10)
            .expect("nothing after")
            .is_empty());
    }

    #[test]
    fn push_peek_ack_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool.sqlite"), 100).expect("open");
        assert!(spool.is_empty().expect("empty"));
        assert_eq!(spool.push(&rets(0..5)).expect("push"), 5);
        assert_eq!(spool.len().expect("len"), 5);

        let head = spool.peek(3).expect("peek");
        assert_eq!(head.len(), 3);
        assert_eq!(
            head.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            rets(0..3)
        );
        assert!(head.windows(2).all(|w| w[0].0 < w[1].0), "seq increases");
        // Peeking does not remove.
        assert_eq!(spool.peek(3).expect("peek again"), head);

        spool.ack(head[2].0).expect("ack");
        assert_eq!(spool.len().expect("len"), 2);
        let rest = spool.peek(10).expect("peek");
        assert_eq!(
            rest.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            rets(3..5)
        );
        assert!(rest[0].0 > head[2].0);
        assert!(spool.peek(0).expect("peek 0").is_empty());
        assert_eq!(spool.dropped(), 0);
    }

    #[test]
    fn bound_drops_and_counts_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool.sqlite"), 5).expect("open");
        assert_eq!(spool.push(&rets(0..3)).expect("push"), 3);
        assert_eq!(spool.push(&rets(3..8)).expect("push"), 2);
        assert_eq!(spool.len().expect("len"), 5);
        assert_eq!(spool.dropped(), 3);
        assert_eq!(spool.push(&rets(8..9)).expect("push"), 0);
        assert_eq!(spool.dropped(), 4);
        // The oldest are kept, the overflow is what was dropped.
        let all = spool.peek(10).expect("peek");
        assert_eq!(
            all.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            rets(0..5)
        );
        spool.ack(all[1].0).expect("ack");
        assert_eq!(spool.push(&rets(9..12)).expect("push"), 2);
        assert_eq!(spool.dropped(), 5);
        assert_eq!(spool.len().expect("len"), 5);
    }

    #[test]
    fn restart_finds_returns_and_seq_keeps_growing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("spool.sqlite");
        let last_seq;
        {
            let spool = Spool::open(&path, 100).expect("open");
            spool.push(&rets(0..4)).expect("push");
            let head = spool.peek(2).expect("peek");
            spool.ack(head[1].0).expect("ack");
            last_seq = spool.peek(10).expect("peek")[1].0;
        }
        {
            let spool = Spool::open(&path, 100).expect("reopen");
            assert_eq!(spool.len().expect("len"), 2);
            let all = spool.peek(10).expect("peek");
            assert_eq!(
                all.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
                rets(2..4)
            );
            assert_eq!(all[1].0, last_seq);
            spool.ack(last_seq).expect("ack all");
            assert!(spool.is_empty().expect("empty"));
        }
        let spool = Spool::open(&path, 100).expect("reopen again");
        spool.push(&rets(9..10)).expect("push");
        let all = spool.peek(1).expect("peek");
        assert!(all[0].0 > last_seq, "seq reused after the spool emptied");
    }

    #[test]
    fn ten_thousand_returns_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool.sqlite"), 20_000).expect("open");
        assert_eq!(spool.push(&rets(0..10_000)).expect("push"), 10_000);
        let mut seen = 0;
        // 10 rounds of 1000 empty it; the bound is a guard.
        for _ in 0..20 {
            let chunk = spool.peek(1000).expect("peek");
            let Some(&(last, _)) = chunk.last() else {
                break;
            };
            for (k, (_, r)) in chunk.iter().enumerate() {
                assert_eq!(r.id, format!("m{}", seen + k));
            }
            seen += chunk.len();
            spool.ack(last).expect("ack");
        }
        assert_eq!(seen, 10_000);
        assert!(spool.is_empty().expect("empty"));
    }

    #[test]
    fn drops_are_counted_past_a_thousand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool.sqlite"), 0).expect("open");
        assert_eq!(spool.push(&rets(0..2500)).expect("push"), 0);
        assert_eq!(spool.dropped(), 2500);
        assert_eq!(spool.len().expect("len"), 0);
    }

    #[test]
    fn undecodable_entry_is_removed_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.sqlite");
        let spool = Spool::open(&path, 10).expect("open");
        spool.push(&rets(0..1)).expect("push");
        {
            let conn = Connection::open(&path).expect("side connection");
            conn.execute("INSERT INTO spool (ret) VALUES (x'c1')", [])
                .expect("insert garbage");
        }
        // The side insert is not in the cached count until reopen.
        drop(spool);
        let spool = Spool::open(&path, 10).expect("reopen");
        spool.push(&rets(1..2)).expect("push");
        assert_eq!(spool.len().expect("len"), 3);
        let all = spool.peek(10).expect("peek");
        assert_eq!(
            all.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            rets(0..2)
        );
        assert_eq!(spool.dropped(), 1);
        assert_eq!(spool.len().expect("len"), 2);
    }

    #[test]
    fn corrupt_file_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.sqlite");
        std::fs::write(&path, vec![0x33; 4096]).expect("write garbage");
        let err = Spool::open(&path, 10).expect_err("must refuse");
        assert!(matches!(err, SpoolError::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
