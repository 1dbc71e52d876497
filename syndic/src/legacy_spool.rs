//! A `syndic_spool.sqlite` left in `cachedir` by an older Brine (which
//! kept returns on their way up in a second SQLite file) is imported into
//! the job cache's outbox once, at start, and then deleted, so an upgrade
//! loses no return that was waiting to go up.
//!
//! The import is read in chunks and committed before the file is removed;
//! a syndic killed during it imports again at its next start (the master
//! above keeps the first copy of a return). A file that cannot be read is
//! left in place and named in a warning.

use brine_common::codec;
use brine_common::jid::Jid;
use brine_common::proto::ReturnLoad;
use brine_master::job_cache::JobCache;
use brine_master::published::ForwardUp;
use rusqlite::{params, Connection, OpenFlags};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// The old spool's file name in `cachedir`.
pub const FILE: &str = "syndic_spool.sqlite";

/// Entries read and imported at a time.
const CHUNK: usize = 5000;

#[derive(Debug, thiserror::Error)]
pub enum LegacySpoolError {
    #[error("cannot read the old spool {path}: {source}")]
    Read {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot import the old spool {path} into the outbox: {source}")]
    Import {
        path: PathBuf,
        source: brine_master::job_cache::JobCacheError,
    },
    #[error("imported the old spool {path}, but cannot remove it: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Import `cachedir/syndic_spool.sqlite` if there is one, then delete it.
/// Returns how many returns were imported (0 without a file). Blocking:
/// call from a blocking thread. `me` is this syndic's id (a job whose path
/// names it after the masters above came from above).
pub fn import(cachedir: &Path, jobs: &JobCache, me: &str) -> Result<usize, LegacySpoolError> {
    let path = cachedir.join(FILE);
    if !path.exists() {
        return Ok(0);
    }
    let read = |source| LegacySpoolError::Read {
        path: path.clone(),
        source,
    };
    let conn =
        Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(read)?;
    let mut after = i64::MIN;
    let mut imported = 0usize;
    // Bounded by the rows in the file: every round moves `after` on.
    loop {
        let mut rows: Vec<(i64, Vec<u8>)> = Vec::new();
        {
            let mut stmt = conn
                .prepare("SELECT seq, ret FROM spool WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .map_err(read)?;
            let it = stmt
                .query_map(params![after, CHUNK as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(read)?;
            for row in it {
                rows.push(row.map_err(read)?);
            }
        }
        let Some(&(last, _)) = rows.last() else {
            break;
        };
        after = last;
        let items: Vec<(ReturnLoad, ForwardUp)> = rows
            .into_iter()
            .filter_map(|(seq, blob)| match codec::decode::<ReturnLoad>(&blob, usize::MAX) {
                Ok(ret) => Some(ret),
                Err(e) => {
                    warn!(path = %path.display(), seq, error = %e, "undecodable entry of the old spool skipped");
                    None
                }
            })
            .map(|ret| {
                let up = direction(jobs, &ret.jid, me);
                (ret, up)
            })
            .collect();
        imported += items.len();
        jobs.outbox_import(&items)
            .map_err(|source| LegacySpoolError::Import {
                path: path.clone(),
                source,
            })?;
    }
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LegacySpoolError::Remove { path: p, source }),
        }
    }
    info!(path = %path.display(), returns = imported, "old syndic spool imported into the outbox and removed");
    Ok(imported)
}

/// How a spooled return goes up: the old spool held returns of jobs from
/// above, and with `syndic_forward_all` of jobs published here, whose
/// stored path starts with this syndic (or does not name it: sent up from
/// below). An unknown job is taken as one from above.
fn direction(jobs: &JobCache, jid: &Jid, me: &str) -> ForwardUp {
    match jobs.job_load(jid) {
        Ok(Some(load)) => {
            let above =
                load.path.first().is_some_and(|p| p != me) && load.path.iter().any(|p| p == me);
            if above {
                ForwardUp::Relayed
            } else {
                ForwardUp::Published
            }
        }
        _ => ForwardUp::Relayed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::ret;

    #[test]
    fn an_old_spool_is_imported_once_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        {
            let conn = Connection::open(&path).expect("old spool");
            conn.execute_batch(
                "CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, ret BLOB NOT NULL);",
            )
            .expect("schema");
            for id in ["a", "b"] {
                conn.execute(
                    "INSERT INTO spool (ret) VALUES (?1)",
                    params![codec::encode(&ret("20261202000000000001", id)).expect("encode")],
                )
                .expect("insert");
            }
            conn.execute("INSERT INTO spool (ret) VALUES (x'c1')", [])
                .expect("garbage");
        }
        let jobs = JobCache::open(dir.path(), 0).expect("job cache");
        assert_eq!(import(dir.path(), &jobs, "s1").expect("import"), 2);
        assert!(!path.exists(), "removed after the import");
        let out = jobs.outbox_after(i64::MIN, 10).expect("outbox");
        assert_eq!(
            out.iter().map(|e| e.ret.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(out.iter().all(|e| e.up == ForwardUp::Relayed));
        // Nothing left to import the next time.
        assert_eq!(import(dir.path(), &jobs, "s1").expect("again"), 0);
        assert_eq!(jobs.outbox_len(), 2);
    }
}
