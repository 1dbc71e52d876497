//! Start-up checks of the directories and files a daemon's config names.
//!
//! A daemon that cannot create or write its `pki_dir`, `cachedir`,
//! `sock_dir` or `log_file` is misconfigured, not broken: [`check`]
//! prepares each path the way the daemon itself would (directories are
//! created with mode 0700, the log file is opened for appending) before any
//! socket is bound, and turns a failure into one [`ConfigError::Path`]
//! line naming the option, the path, the file that set it and what to do,
//! so the binary exits 78 instead of 70 with a bare OS error.

use std::path::{Path, PathBuf};

use super::ConfigError;

/// What a configured path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// A directory this process can list, enter and write (created if
    /// missing, mode 0700).
    Dir,
    /// A file this process can append to (created if missing, with its
    /// directory).
    AppendFile,
}

/// One configured path to check: the option's name, its value and where
/// that value came from (a file, a variable, `built-in defaults`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCheck {
    pub key: &'static str,
    pub path: PathBuf,
    pub kind: PathKind,
    pub origin: String,
}

/// Prepares and checks every path in order; the first that is unusable
/// is the error.
pub fn check(paths: &[PathCheck]) -> Result<(), ConfigError> {
    for p in paths {
        let res = match p.kind {
            PathKind::Dir => usable_dir(&p.path),
            PathKind::AppendFile => usable_file(&p.path),
        };
        if let Err(why) = res {
            return Err(ConfigError::Path {
                key: p.key.to_string(),
                path: p.path.clone(),
                origin: p.origin.clone(),
                message: why,
            });
        }
    }
    Ok(())
}

/// Why `path` cannot be this process's directory, if it cannot.
fn usable_dir(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
    {
        return Err(explain(path, &e, "create it as a directory"));
    }
    let meta = std::fs::metadata(path).map_err(|e| explain(path, &e, "read it"))?;
    if !meta.is_dir() {
        return Err("it is not a directory".to_string());
    }
    use nix::unistd::{access, AccessFlags};
    access(
        path,
        AccessFlags::R_OK | AccessFlags::W_OK | AccessFlags::X_OK,
    )
    .map_err(|e| format!("this user cannot read and write it ({})", e.desc()))
}

/// Why `path` cannot be appended to, if it cannot.
fn usable_file(path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Err(explain(dir, &e, "create its directory"));
        }
    }
    if path.is_dir() {
        return Err("it is a directory, not a file".to_string());
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(|_| ())
        .map_err(|e| explain(path, &e, "open it for appending"))
}

/// A short reason for an I/O failure on `path`, naming the regular file
/// in the way when that is the cause (a path below a file fails with
/// "not a directory", which alone does not say which component is wrong).
fn explain(path: &Path, e: &std::io::Error, doing: &str) -> String {
    let blocker = path
        .ancestors()
        .find(|a| std::fs::symlink_metadata(a).is_ok_and(|m| !m.is_dir()));
    match blocker {
        Some(b) if b == path => format!("cannot {doing}: a non-directory file is in the way"),
        Some(b) => format!("cannot {doing}: {} is not a directory", b.display()),
        None => format!("cannot {doing}: {}", lower_first(&e.to_string())),
    }
}

/// OS messages start with a capital ("Permission denied"); ours do not.
fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &'static str, path: PathBuf, kind: PathKind) -> Vec<PathCheck> {
        vec![PathCheck {
            key,
            path,
            kind,
            origin: "/etc/salt/minion".to_string(),
        }]
    }

    #[test]
    fn missing_directories_and_files_are_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("a/b/pki");
        let log = dir.path().join("log/minion");
        check(&one("pki_dir", pki.clone(), PathKind::Dir)).expect("dir");
        check(&one("log_file", log.clone(), PathKind::AppendFile)).expect("file");
        assert!(pki.is_dir());
        assert!(log.is_file());
    }

    #[test]
    fn a_regular_file_in_the_way_is_a_path_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").expect("write");
        let err = check(&one("pki_dir", file.clone(), PathKind::Dir))
            .expect_err("file as dir")
            .to_string();
        assert!(err.starts_with("pki_dir "), "{err}");
        assert!(err.contains("/etc/salt/minion"), "{err}");
        assert!(err.contains("non-directory"), "{err}");
        let below = file.join("pki");
        let err = check(&one("cachedir", below, PathKind::Dir))
            .expect_err("below a file")
            .to_string();
        assert!(
            err.contains(&format!("{} is not a directory", file.display())),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
        let err = check(&one(
            "log_file",
            dir.path().to_path_buf(),
            PathKind::AppendFile,
        ))
        .expect_err("dir as file")
        .to_string();
        assert!(err.contains("is a directory"), "{err}");
    }
}
