//! A small pool of RSA keys shared by all simulated minions.
//!
//! Generating an RSA-2048 key costs tens of milliseconds to seconds, far
//! too much per simulated minion, and the master only stores one public
//! key file per id, so the same key under many ids is fine. The pool is
//! generated once and cached as PKCS#8 PEM files (mode 0600) in a cache
//! directory. Invariant: a cached file is only ever seen complete (written
//! to a temporary name, then renamed), so concurrent runs never read a
//! half-written key.

use brine_common::crypto::{CryptoError, KeyPair};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors loading or creating the key pool.
#[derive(Debug, thiserror::Error)]
pub enum KeyPoolError {
    #[error("key pool {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key pool {path}: {source}")]
    Key { path: String, source: CryptoError },
    #[error("key pool needs at least one key")]
    Empty,
}

/// The default cache directory: `$XDG_CACHE_HOME/brine-loadtest/keys`,
/// else `~/.cache/brine-loadtest/keys`, else under the temp dir.
pub fn default_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("brine-loadtest").join("keys")
}

fn key_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("minion-{i:03}.pem"))
}

/// Makes sure `dir` holds `count` keys (generating the missing ones);
/// returns their paths in pool order.
pub fn ensure(dir: &Path, count: usize) -> Result<Vec<PathBuf>, KeyPoolError> {
    if count == 0 {
        return Err(KeyPoolError::Empty);
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| KeyPoolError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut paths = Vec::with_capacity(count);
    for i in 0..count {
        let path = key_path(dir, i);
        let usable = std::fs::read_to_string(&path)
            .ok()
            .is_some_and(|pem| KeyPair::from_pem(&pem).is_ok());
        if !usable {
            let key = KeyPair::generate().map_err(|source| KeyPoolError::Key {
                path: path.display().to_string(),
                source,
            })?;
            let pem = key.private_pem().map_err(|source| KeyPoolError::Key {
                path: path.display().to_string(),
                source,
            })?;
            let tmp = dir.join(format!(".minion-{i:03}.{}.tmp", std::process::id()));
            write_private(&tmp, &pem).map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
        }
        paths.push(path);
    }
    Ok(paths)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// Loads the keys at `paths`.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Arc<KeyPair>>, KeyPoolError> {
    if paths.is_empty() {
        return Err(KeyPoolError::Empty);
    }
    paths
        .iter()
        .map(|p| {
            let pem = std::fs::read_to_string(p).map_err(|source| KeyPoolError::Io {
                path: p.display().to_string(),
                source,
            })?;
            KeyPair::from_pem(&pem)
                .map(Arc::new)
                .map_err(|source| KeyPoolError::Key {
                    path: p.display().to_string(),
                    source,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ensure(dir.path(), 2).unwrap();
        assert_eq!(paths.len(), 2);
        let before = std::fs::read_to_string(&paths[0]).unwrap();
        let again = ensure(dir.path(), 2).unwrap();
        assert_eq!(again, paths);
        assert_eq!(std::fs::read_to_string(&paths[0]).unwrap(), before);
        let keys = load(&paths).unwrap();
        assert_ne!(
            keys[0].public().fingerprint(),
            keys[1].public().fingerprint()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&paths[1]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn broken_file_is_replaced_and_empty_pool_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(key_path(dir.path(), 0), "not a key").unwrap();
        let paths = ensure(dir.path(), 1).unwrap();
        assert!(load(&paths).is_ok());
        assert!(matches!(ensure(dir.path(), 0), Err(KeyPoolError::Empty)));
        assert!(matches!(load(&[]), Err(KeyPoolError::Empty)));
    }
}
