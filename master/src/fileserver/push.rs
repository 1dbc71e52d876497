//! `cp.push` storage: a minion's file lands under
//! `cachedir/minions/<id>/files/<path>` (Salt's place; directories 0700,
//! files 0600), the minion's path stripped of its leading `/`.
//!
//! The invariant it keeps: a push never writes outside its minion's
//! `files/` directory. The id must be one plain path component; the path
//! may hold no `..`, NUL or empty name; every directory from `<id>` down
//! is checked not to be a symlink as it is walked (a symlink there is
//! refused, never followed). Chunks are written at their offset into
//! `cachedir/minions/<id>/push.part/<sha256 of the path>.part` (outside
//! `files/`, so no pushed name can collide with a partial file), so a
//! chunk sent twice writes the same bytes again; a chunk at offset 0
//! starts the file afresh. On the last chunk the size is checked and the
//! file is renamed into place, replacing an earlier push of the same path.

use super::roots::normalise;
use brine_common::proto::PushChunk;
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a pushed chunk was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("push path {path:?} refused: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("a {size}-byte file is over file_recv_max_size ({max_mib} MiB)")]
    TooLarge { size: u64, max_mib: u64 },
    #[error("chunk at offset {offset} of {len} bytes goes past the file's {size} bytes")]
    BadChunk { offset: u64, len: usize, size: u64 },
    #[error("push of {path:?}: {got} bytes arrived, {size} announced")]
    Incomplete { path: String, got: u64, size: u64 },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PushError + '_ {
    move |source| PushError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where pushed files go, and how large they may be.
#[derive(Clone, Debug)]
pub struct PushStore {
    /// `cachedir/minions`.
    base: PathBuf,
    max_mib: u64,
}

impl PushStore {
    /// Pushes under `base` (`cachedir/minions`), each at most `max_mib` MiB.
    pub fn new(base: PathBuf, max_mib: u64) -> PushStore {
        PushStore { base, max_mib }
    }

    /// Write one chunk; `Some(path)` once the last chunk moved the file
    /// into place.
    pub fn store(&self, id: &str, chunk: &PushChunk) -> Result<Option<PathBuf>, PushError> {
        let max = self.max_mib.saturating_mul(1 << 20);
        if chunk.size > max {
            return Err(PushError::TooLarge {
                size: chunk.size,
                max_mib: self.max_mib,
            });
        }
        let end = chunk.offset.checked_add(chunk.data.len() as u64);
        if end.is_none_or(|e| e > chunk.size) {
            return Err(PushError::BadChunk {
                offset: chunk.offset,
                len: chunk.data.len(),
                size: chunk.size,
            });
        }
        check_id(id)?;
        let rel = push_rel(&chunk.path)?;
        let parts: Vec<&str> = rel.split('/').collect();
        let Some((name, dirs)) = parts.split_last() else {
            return Err(bad(&chunk.path, "empty"));
        };
        super::private_dir(&self.base).map_err(io_err(&self.base))?;
        let mut chain = vec![id, "files"];
        chain.extend_from_slice(dirs);
        let dest_dir = walk_dirs(&self.base, &chain, &chunk.path)?;
        let part_dir = walk_dirs(&self.base, &[id, "push.part"], &chunk.path)?;
        let part = part_dir.join(format!("{}.part", hex::encode(Sha256::digest(&rel))));
        if fs::symlink_metadata(&part).is_ok_and(|m| !m.is_file()) {
            return Err(bad(&chunk.path, "its partial file is not a regular file"));
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&part)
            .map_err(io_err(&part))?;
        if chunk.offset == 0 {
            f.set_len(0).map_err(io_err(&part))?;
        }
        f.write_all_at(&chunk.data, chunk.offset)
            .map_err(io_err(&part))?;
        if !chunk.last {
            return Ok(None);
        }
        let got = f.metadata().map_err(io_err(&part))?.len();
        if got != chunk.size {
            let _ = fs::remove_file(&part);
            return Err(PushError::Incomplete {
                path: rel,
                got,
                size: chunk.size,
            });
        }
        f.sync_all().map_err(io_err(&part))?;
        let dest = dest_dir.join(name);
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
            let _ = fs::remove_file(&part);
            return Err(bad(
                &chunk.path,
                "a directory of that name was pushed before",
            ));
        }
        // A symlink at `dest` is replaced by the rename, never followed.
        fs::rename(&part, &dest).map_err(io_err(&dest))?;
        Ok(Some(dest))
    }
}

fn bad(path: &str, why: &'static str) -> PushError {
    PushError::BadPath {
        path: path.chars().take(256).collect(),
        why,
    }
}

/// A minion id usable as one directory name.
fn check_id(id: &str) -> Result<(), PushError> {
    if id.is_empty() || id == "." || id == ".." || id.len() > 255 || id.contains(['/', '\0']) {
        return Err(bad(id, "the minion id is not a plain name"));
    }
    Ok(())
}

/// The pushed path relative to `files/`: leading `/` stripped, then the
/// file server's rules (no `..`, NUL, empty).
fn push_rel(path: &str) -> Result<String, PushError> {
    normalise(path.trim_start_matches('/')).map_err(|e| match e {
        super::roots::RootsError::BadPath { why, .. } => bad(path, why),
        _ => bad(path, "not allowed"),
    })
}

/// Walk (creating, 0700) `chain` under `base`, refusing a symlink or a
/// non-directory at any step; the last directory.
fn walk_dirs(base: &Path, chain: &[&str], asked: &str) -> Result<PathBuf, PushError> {
    let mut p = base.to_path_buf();
    for c in chain {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(bad(asked, "a directory on the way is a symlink"))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(bad(asked, "a file of that name was pushed before")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match fs::DirBuilder::new().mode(0o700).create(&p) {
                    Ok(()) => {}
                    // Made meanwhile by a concurrent push: check it again.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let m = fs::symlink_metadata(&p).map_err(io_err(&p))?;
                        if !m.is_dir() || m.file_type().is_symlink() {
                            return Err(bad(asked, "a directory on the way is not one"));
                        }
                    }
                    Err(e) => return Err(io_err(&p)(e)),
                }
            }
            Err(e) => return Err(io_err(&p)(e)),
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn chunk(path: &str, size: u64, offset: u64, data: &[u8], last: bool) -> PushChunk {
        PushChunk {
            path: path.to_string(),
            size,
            offset,
            data: ByteBuf::from(data.to_vec()),
            last,
        }
    }

    fn store(d: &Path) -> PushStore {
        PushStore::new(d.join("minions"), 1)
    }

    #[test]
    fn a_pushed_file_lands_under_the_minions_files_dir() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = store(d.path());
        assert_eq!(
            s.store("m1", &chunk("/etc/hosts", 6, 0, b"abc", false))
                .expect("1"),
            None
        );
        // The same chunk again (a resend) writes the same bytes.
        assert_eq!(
            s.store("m1", &chunk("/etc/hosts", 6, 0, b"abc", false))
                .expect("1"),
            None
        );
        let dest = s
            .store("m1", &chunk("/etc/hosts", 6, 3, b"def", true))
            .expect("2")
            .expect("done");
        assert_eq!(dest, d.path().join("minions/m1/files/etc/hosts"));
        assert_eq!(fs::read(&dest).expect("read"), b"abcdef");
        let mode = fs::metadata(d.path().join("minions/m1/files/etc"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(
            fs::read_dir(d.path().join("minions/m1/push.part"))
                .expect("p")
                .count(),
            0
        );
        // A later push of the same path replaces it.
        s.store("m1", &chunk("etc/hosts", 2, 0, b"xy", true))
            .expect("again");
        assert_eq!(fs::read(&dest).expect("read"), b"xy");
    }

    #[test]
    fn hostile_paths_and_ids_are_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = store(d.path());
        for p in ["../../etc/passwd", "/a/../../b", "a/..", "", "/", "a\0b"] {
            let r = s.store("m1", &chunk(p, 1, 0, b"x", true));
            assert!(matches!(r, Err(PushError::BadPath { .. })), "{p:?}: {r:?}");
        }
        for id in ["", "..", ".", "a/b", "x\0"] {
            let r = s.store(id, &chunk("f", 1, 0, b"x", true));
            assert!(matches!(r, Err(PushError::BadPath { .. })), "{id:?}: {r:?}");
        }
        assert!(!d.path().join("etc").exists());
    }

    #[test]
    fn a_symlinked_id_dir_or_subdir_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let elsewhere = d.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).expect("mkdir");
        fs::create_dir_all(d.path().join("minions")).expect("mkdir");
        symlink(&elsewhere, d.path().join("minions/evil")).expect("symlink");
        let s = store(d.path());
        let r = s.store("evil", &chunk("f", 1, 0, b"x", true));
        assert!(matches!(r, Err(PushError::BadPath { .. })), "{r:?}");
        fs::create_dir_all(d.path().join("minions/m2/files")).expect("mkdir");
        symlink(&elsewhere, d.path().join("minions/m2/files/etc")).expect("symlink");
        let r = s.store("m2", &chunk("/etc/passwd", 1, 0, b"x", true));
        assert!(matches!(r, Err(PushError::BadPath { .. })), "{r:?}");
        assert_eq!(fs::read_dir(&elsewhere).expect("ls").count(), 0);
    }

    #[test]
    fn sizes_are_bounded() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = store(d.path());
        let r = s.store("m1", &chunk("big", (1 << 20) + 1, 0, b"x", false));
        assert!(
            matches!(r, Err(PushError::TooLarge { max_mib: 1, .. })),
            "{r:?}"
        );
        let r = s.store("m1", &chunk("f", 2, 1, b"xy", false));
        assert!(matches!(r, Err(PushError::BadChunk { .. })), "{r:?}");
        let r = s.store("m1", &chunk("f", 2, u64::MAX, b"xy", false));
        assert!(matches!(r, Err(PushError::BadChunk { .. })), "{r:?}");
        let r = s.store("m1", &chunk("short", 4, 0, b"xy", true));
        assert!(
            matches!(
                r,
                Err(PushError::Incomplete {
                    got: 2,
                    size: 4,
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(!d.path().join("minions/m1/files/short").exists());
    }

    #[test]
    fn a_name_that_looks_like_a_partial_file_cannot_collide() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = store(d.path());
        s.store("m1", &chunk("x.part", 3, 0, b"one", true))
            .expect("x.part");
        s.store("m1", &chunk("x", 3, 0, b"two", false))
            .expect("x begins");
        let files = d.path().join("minions/m1/files");
        assert_eq!(fs::read(files.join("x.part")).expect("read"), b"one");
        s.store("m1", &chunk("x", 3, 0, b"two", true))
            .expect("x ends");
        assert_eq!(fs::read(files.join("x")).expect("read"), b"two");
    }
}
