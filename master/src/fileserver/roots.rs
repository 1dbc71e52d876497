//! Salt's `roots` backend: which files of `file_roots` (or `pillar_roots`)
//! a relative `salt://` path names, their metadata and SHA-256, their
//! text, and listings. A pure library over the local disk (blocking I/O;
//! async callers run it on a blocking thread).
//!
//! The invariant it keeps: nothing outside a configured root is ever
//! named, read or listed. A path is relative (`/`-separated; `.` and
//! repeated `/` are normalised away); an absolute path, a `..` component,
//! a NUL or an empty path is refused as [`RootsError::BadPath`]. The roots
//! of an environment are searched in order and the first that holds a
//! regular file wins. Symlinks are followed only when they resolve inside
//! the same root (both sides canonicalised): one that leaves it is treated
//! as absent ([`Lookup::Escapes`], so the server can count it) and a
//! directory symlink leaving the root hides everything under it. As in
//! Salt, `file_ignore_regex` is searched for (not fully matched) and
//! `file_ignore_glob` is matched with `fnmatch` against the relative path
//! of every file and directory (and against a directory's own name when
//! the walk prunes it); hidden (dot) files are served unless ignored.
//! Listing walks at most [`MAX_DEPTH`] levels and [`MAX_ENTRIES`] entries
//! and never enters a directory twice on one path, so a symlink loop ends.
//!
//! Hashes are cached by (real path, size, mtime, inode, device), so an
//! unchanged file is hashed once; the cache holds at most
//! [`HASH_CACHE_ENTRIES`] files and [`Roots::clear_cache`] empties it.

use brine_common::glob::Glob;
use brine_common::proto::{FileMeta, ListKind};
use regex::Regex;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Deepest directory level a listing descends to.
pub const MAX_DEPTH: usize = 64;
/// Most directory entries one listing looks at (over all roots).
pub const MAX_ENTRIES: usize = 1_000_000;
/// Largest file [`Roots::read_to_string`] reads (16 MiB).
pub const MAX_TEXT_BYTES: u64 = 16 << 20;
/// Most files whose hash is remembered.
pub const HASH_CACHE_ENTRIES: usize = 65_536;
/// Longest relative path accepted.
pub const MAX_PATH_BYTES: usize = 4096;

/// What went wrong with a roots lookup.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("bad salt:// path {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("{option} pattern {pattern:?}: {reason}")]
    BadIgnore {
        option: &'static str,
        pattern: String,
        reason: String,
    },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {size} bytes, over the {max}-byte limit for a text file", path.display())]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{}: not UTF-8 text", path.display())]
    NotText { path: PathBuf },
    #[error("listing saltenv {env:?} stopped after {limit} entries")]
    TooMany { env: String, limit: usize },
}

impl RootsError {
    fn io(path: &Path, source: io::Error) -> RootsError {
        RootsError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The outcome of looking a path up in an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    /// Not there, not a regular file, or ignored.
    Absent,
    /// Not found in any root, and at least one root held a symlink for
    /// it (or a directory on its way) that resolves outside that root.
    Escapes,
}

impl<T> Lookup<T> {
    /// `Some` for [`Lookup::Found`], `None` otherwise.
    pub fn found(self) -> Option<T> {
        match self {
            Lookup::Found(t) => Some(t),
            Lookup::Absent | Lookup::Escapes => None,
        }
    }
}

/// The environments of `file_roots` (or `pillar_roots`) with Salt's
/// visibility rules. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Roots {
    inner: Arc<Inner>,
}

struct Inner {
    envs: BTreeMap<String, Vec<PathBuf>>,
    ignore_regex: Vec<Regex>,
    ignore_glob: Vec<Glob>,
    hashes: Mutex<HashMap<PathBuf, Hashed>>,
}

#[derive(Clone, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

struct Hashed {
    stamp: Stamp,
    hash: String,
}

/// Split a relative path into its components, refusing hostile ones.
fn components(path: &str) -> Result<Vec<&str>, RootsError> {
    let bad = |why| RootsError::BadPath {
        path: path.chars().take(256).collect(),
        why,
    };
    if path.len() > MAX_PATH_BYTES {
        return Err(bad("too long"));
    }
    if path.contains('\0') {
        return Err(bad("contains NUL"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute"));
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(bad("contains a `..` component")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The normalised relative form of `path` (`a//./b` → `a/b`); refuses
/// hostile paths and paths that name the root itself.
pub fn normalise(path: &str) -> Result<String, RootsError> {
    let parts = components(path)?;
    if parts.is_empty() {
        return Err(RootsError::BadPath {
            path: path.chars().take(256).collect(),
            why: "empty",
        });
    }
    Ok(parts.join("/"))
}

/// Canonical form of `p` when it exists; `Ok(None)` when it does not (or
/// is unreachable: a loop, a file on the way); an error when it may exist
/// but cannot be looked at.
fn canonical(p: &Path) -> Result<Option<PathBuf>, RootsError> {
    match fs::canonicalize(p) {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(RootsError::io(p, e)),
        Err(_) => Ok(None),
    }
}

fn sha256_file(path: &Path) -> Result<String, RootsError> {
    let mut f = fs::File::open(path).map_err(|e| RootsError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| RootsError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// What one listing collects, over every root of an environment.
#[derive(Default)]
struct Walk {
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
    /// Directories that hold something visible (in any root).
    nonempty: BTreeSet<String>,
    entries: usize,
}

impl Roots {
    /// Roots for `roots` (environment → directories, searched in order)
    /// with Salt's `file_ignore_regex` and `file_ignore_glob`. Directories
    /// need not exist yet (a missing root holds nothing).
    pub fn new(
        roots: &BTreeMap<String, Vec<PathBuf>>,
        ignore_regex: &[String],
        ignore_glob: &[String],
    ) -> Result<Roots, RootsError> {
        let ignore_regex = ignore_regex
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|e| RootsError::BadIgnore {
                    option: "file_ignore_regex",
                    pattern: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ignore_glob = ignore_glob.iter().map(|p| Glob::new(p)).collect();
        Ok(Roots {
            inner: Arc::new(Inner {
                envs: roots.clone(),
                ignore_regex,
                ignore_glob,
                hashes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The environments, sorted.
    pub fn envs(&self) -> Vec<String> {
        self.inner.envs.keys().cloned().collect()
    }

    /// Whether `rel` (a relative path) is hidden by the ignore options.
    fn ignored(&self, rel: &str) -> bool {
        self.inner.ignore_regex.iter().any(|r| r.is_match(rel))
            || self.inner.ignore_glob.iter().any(|g| g.matches(rel))
    }

    /// Whether the walk would prune directory `rel` (named `name`).
    fn dir_pruned(&self, rel: &str, name: &str) -> bool {
        self.ignored(rel) || self.ignored(name)
    }

    /// Whether a file at `parts` is hidden by the ignore options: the
    /// file itself, or a directory the listing would not enter.
    fn hidden(&self, parts: &[&str]) -> bool {
        let rel = parts.join("/");
        if self.ignored(&rel) {
            return true;
        }
        (1..parts.len()).any(|i| self.dir_pruned(&parts[..i].join("/"), parts[i - 1]))
    }

    /// The file a relative `salt://` path names in `env` (first root that
    /// has it, in order): `Ok(None)` when absent, not a regular file,
    /// ignored, or a symlink resolving outside its root; `Err(BadPath)`
    /// for hostile paths (absolute, `..` component, NUL, empty).
    #[allow(dead_code)] // roots API: the pillar compiler reads SLS files with it
    pub fn resolve(&self, env: &str, path: &str) -> Result<Option<PathBuf>, RootsError> {
        Ok(self.lookup(env, path)?.found())
    }

    /// [`Roots::resolve`], telling an escaping symlink from an absent file.
    pub fn lookup(&self, env: &str, path: &str) -> Result<Lookup<PathBuf>, RootsError> {
        let rel = normalise(path)?;
        let parts: Vec<&str> = rel.split('/').collect();
        let Some(roots) = self.inner.envs.get(env) else {
            return Ok(Lookup::Absent);
        };
        if self.hidden(&parts) {
            return Ok(Lookup::Absent);
        }
        let mut escaped = false;
        for root in roots {
            let Some(croot) = canonical(root)? else {
                continue;
            };
            let Some(real) = canonical(&croot.join(&rel))? else {
                continue;
            };
            if !real.starts_with(&croot) {
                escaped = true;
                continue;
            }
            match fs::metadata(&real) {
                Ok(m) if m.is_file() => return Ok(Lookup::Found(real)),
                Ok(_) => {}
                // Removed since it was resolved: absent here.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(RootsError::io(&real, e)),
            }
        }
        Ok(if escaped {
            Lookup::Escapes
        } else {
            Lookup::Absent
        })
    }

    /// [`Roots::resolve`] + metadata + SHA-256 (hash cached while the file
    /// is unchanged). `FileMeta::path` is the normalised relative path.
    #[allow(dead_code)] // roots API: the pillar compiler reads SLS files with it
    pub fn find(&self, env: &str, path: &str) -> Result<Option<(FileMeta, PathBuf)>, RootsError> {
        Ok(self.find_lookup(env, path)?.found())
    }

    /// [`Roots::find`], telling an escaping symlink from an absent file.
    pub fn find_lookup(
        &self,
        env: &str,
        path: &str,
    ) -> Result<Lookup<(FileMeta, PathBuf)>, RootsError> {
        let real = match self.lookup(env, path)? {
            Lookup::Found(real) => real,
            Lookup::Absent => return Ok(Lookup::Absent),
            Lookup::Escapes => return Ok(Lookup::Escapes),
        };
        let (meta, hash) = self.hash(&real)?;
        Ok(Lookup::Found((
            FileMeta {
                path: normalise(path)?,
                size: meta.len(),
                hash,
                mode: meta.permissions().mode() & 0o7777,
            },
            real,
        )))
    }

    /// The SHA-256 of the file at real path `real` and the metadata it is
    /// for, from the cache when the file is unchanged. A file that changes
    /// while it is hashed is hashed again (three tries, then the last hash
    /// is returned uncached).
    pub fn hash(&self, real: &Path) -> Result<(fs::Metadata, String), RootsError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let before = fs::metadata(real).map_err(|e| RootsError::io(real, e))?;
            let stamp = Stamp::of(&before);
            if let Some(h) = self.cached_hash(real, &stamp) {
                return Ok((before, h));
            }
            let hash = sha256_file(real)?;
            let after = fs::metadata(real).map_err(|e| RootsError::io(real, e))?;
            if Stamp::of(&after) == stamp {
                self.remember_hash(real, stamp, &hash);
                return Ok((before, hash));
            }
            if tries >= 3 {
                return Ok((after, hash));
            }
        }
    }

    fn cached_hash(&self, real: &Path, stamp: &Stamp) -> Option<String> {
        let map = self.inner.hashes.lock().unwrap_or_else(|p| p.into_inner());
        map.get(real)
            .filter(|h| &h.stamp == stamp)
            .map(|h| h.hash.clone())
    }

    fn remember_hash(&self, real: &Path, stamp: Stamp, hash: &str) {
        let mut map = self.inner.hashes.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= HASH_CACHE_ENTRIES && !map.contains_key(real) {
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
            }
        }
        map.insert(
            real.to_path_buf(),
            Hashed {
                stamp,
                hash: hash.to_string(),
            },
        );
    }

    /// A file's text (pillar SLS, templates) and its real path: `Ok(None)`
    /// when absent; an error when over [`MAX_TEXT_BYTES`] or not UTF-8.
    #[allow(dead_code)] // roots API: the pillar compiler reads SLS files with it
    pub fn read_to_string(
        &self,
        env: &str,
        path: &str,
    ) -> Result<Option<(String, PathBuf)>, RootsError> {
        let Some(real) = self.resolve(env, path)? else {
            return Ok(None);
        };
        let f = fs::File::open(&real).map_err(|e| RootsError::io(&real, e))?;
        let size = f.metadata().map_err(|e| RootsError::io(&real, e))?.len();
        if size > MAX_TEXT_BYTES {
            return Err(RootsError::TooLarge {
                path: real,
                size,
                max: MAX_TEXT_BYTES,
            });
        }
        let mut bytes = Vec::new();
        f.take(MAX_TEXT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| RootsError::io(&real, e))?;
        if bytes.len() as u64 > MAX_TEXT_BYTES {
            return Err(RootsError::TooLarge {
                size: bytes.len() as u64,
                path: real,
                max: MAX_TEXT_BYTES,
            });
        }
        match String::from_utf8(bytes) {
            Ok(s) => Ok(Some((s, real))),
            Err(_) => Err(RootsError::NotText { path: real }),
        }
    }

    /// Listing of `env` under `prefix` (union over roots, sorted,
    /// deduplicated, `/`-separated, relative). As in Salt the prefix is
    /// stripped of `/` at both ends and matched as a string prefix
    /// (`web` matches `web/x` and `webby`). [`ListKind::Files`]: every
    /// visible file; [`ListKind::Dirs`]: every visible directory below the
    /// root (Salt's `dir_list`, empty ones included);
    /// [`ListKind::EmptyDirs`]: visible directories with nothing visible
    /// in them in any root; [`ListKind::Envs`]: the environments.
    pub fn list(&self, env: &str, prefix: &str, kind: ListKind) -> Result<Vec<String>, RootsError> {
        if kind == ListKind::Envs {
            return Ok(self.envs());
        }
        let prefix = components(prefix.trim_matches('/'))?.join("/");
        let Some(roots) = self.inner.envs.get(env) else {
            return Ok(Vec::new());
        };
        let mut walk = Walk::default();
        for root in roots {
            let Some(croot) = canonical(root)? else {
                continue;
            };
            if !fs::metadata(&croot).map(|m| m.is_dir()).unwrap_or(false) {
                continue;
            }
            let mut stack = vec![croot.clone()];
            self.walk_dir(env, &croot, &croot, "", &prefix, 0, &mut stack, &mut walk)?;
        }
        let set = match kind {
            ListKind::Files => walk.files,
            ListKind::Dirs => walk.dirs,
            ListKind::EmptyDirs => walk.dirs.difference(&walk.nonempty).cloned().collect(),
            ListKind::Envs => return Ok(self.envs()),
        };
        Ok(set.into_iter().filter(|p| p.starts_with(&prefix)).collect())
    }

    /// Walk real directory `dir` (relative path `rel`, `""` for the root).
    /// `stack` holds the real directories on the way (loop guard).
    #[allow(clippy::too_many_arguments)]
    fn walk_dir(
        &self,
        env: &str,
        croot: &Path,
        dir: &Path,
        rel: &str,
        prefix: &str,
        depth: usize,
        stack: &mut Vec<PathBuf>,
        walk: &mut Walk,
    ) -> Result<(), RootsError> {
        if depth >= MAX_DEPTH {
            tracing::warn!(dir = %dir.display(), "file_roots listing: too deep, not descending");
            return Ok(());
        }
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "file_roots listing: cannot read directory");
                return Ok(());
            }
        };
        for entry in rd {
            walk.entries += 1;
            if walk.entries > MAX_ENTRIES {
                return Err(RootsError::TooMany {
                    env: env.to_string(),
                    limit: MAX_ENTRIES,
                });
            }
            let entry = entry.map_err(|e| RootsError::io(dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                tracing::debug!(dir = %dir.display(), "file_roots listing: skipping a non-UTF-8 name");
                continue;
            };
            let child_rel = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type().map_err(|e| RootsError::io(dir, e))?;
            let (real, is_dir, is_file) = if ft.is_symlink() {
                let Some(real) = canonical(&entry.path())? else {
                    continue;
                };
                if !real.starts_with(croot) {
                    continue;
                }
                match fs::metadata(&real) {
                    Ok(m) => (real, m.is_dir(), m.is_file()),
                    Err(_) => continue,
                }
            } else {
                (entry.path(), ft.is_dir(), ft.is_file())
            };
            if is_dir {
                if self.dir_pruned(&child_rel, name) {
                    continue;
                }
                // Descend only where the prefix can still match.
                let wanted =
                    child_rel.starts_with(prefix) || prefix.starts_with(&format!("{child_rel}/"));
                if !wanted || stack.iter().any(|d| d == &real) {
                    continue;
                }
                walk.dirs.insert(child_rel.clone());
                if !rel.is_empty() {
                    walk.nonempty.insert(rel.to_string());
                }
                stack.push(real.clone());
                let r = self.walk_dir(
                    env,
                    croot,
                    &real,
                    &child_rel,
                    prefix,
                    depth + 1,
                    stack,
                    walk,
                );
                stack.pop();
                r?;
            } else if is_file && !self.ignored(&child_rel) {
                if !rel.is_empty() {
                    walk.nonempty.insert(rel.to_string());
                }
                walk.files.insert(child_rel);
            }
        }
        Ok(())
    }

    /// Forget every remembered hash (`fileserver.update`).
    pub fn clear_cache(&self) {
        self.inner
            .hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// The files of one environment of some roots as Jinja templates, for
/// includes and imports (pillar SLS files, reactor files).
pub(crate) struct EnvSource {
    pub(crate) roots: Roots,
    pub(crate) env: String,
}

impl brine_common::render::TemplateSource for EnvSource {
    fn load(&self, name: &str) -> Result<Option<String>, String> {
        self.roots
            .read_to_string(&self.env, name)
            .map(|found| found.map(|(text, _)| text))
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn roots_of(envs: &[(&str, &[&Path])], re: &[&str], globs: &[&str]) -> Roots {
        let map = envs
            .iter()
            .map(|(e, ps)| (e.to_string(), ps.iter().map(|p| p.to_path_buf()).collect()))
            .collect();
        let re: Vec<String> = re.iter().map(|s| s.to_string()).collect();
        let globs: Vec<String> = globs.iter().map(|s| s.to_string()).collect();
        Roots::new(&map, &re, &globs).expect("roots")
    }

    fn write(p: &Path, text: &str) {
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }

    fn sha(text: &str) -> String {
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    #[test]
    fn finds_a_file_with_its_hash_size_and_mode() {
        let d = tempfile::tempdir().expect("tempdir");
        write(&d.path().join("web/nginx.conf"), "server {}\n");
        fs::set_permissions(
            d.path().join("web/nginx.conf"),
            fs::Permissions::from_mode(0o640),
        )
        .expect("chmod");
        let r = roots_of(&[("base", &[d.path()])], &[], &[]);
        let (meta, real) = r
            .find("base", "web/nginx.conf")
            .expect("find")
            .expect("there");
        assert_eq!(meta.path, "web/nginx.conf");
        assert_eq!(meta.size, 10);
        assert_eq!(meta.hash, sha("server {}\n"));
        assert_eq!(meta.mode, 0o640);
        assert_eq!(
            real,
            fs::canonicalize(d.path().join("web/nginx.conf")).expect("canon")
        );
    }

    #[test]
    fn hostile_paths_are_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        write(&d.path().join("a"), "a");
        let r = roots_of(&[("base", &[d.path()])], &[], &[]);
        for bad in [
            "../etc/passwd",
            "a/../../x",
            "/etc/passwd",
            "",
            ".",
            "./",
            "a\0b",
            "x/..",
        ] {
            let got = r.resolve("base", bad);
            assert!(
                matches!(got, Err(RootsError::BadPath { .. })),
                "{bad:?} gave {got:?}"
            );
            assert!(matches!(
                r.find("base", bad),
                Err(RootsError::BadPath { .. })
            ));
        }
        let long = "a/".repeat(MAX_PATH_BYTES);
        assert!(matches!(
            r.resolve("base", &long),
            Err(RootsError::BadPath { .. })
        ));
        assert!(matches!(
            r.list("base", "../x", ListKind::Files),
            Err(RootsError::BadPath { .. })
        ));
    }

    #[test]
    fn dot_slash_and_repeated_slashes_are_normalised() {
        let d = tempfile::tempdir().expect("tempdir");
        write(&d.path().join("a/b.txt"), "x");
        let r = roots_of(&[("base", &[d.path()])], &[], &[]);
        for ok in ["a/b.txt", "./a/b.txt", "a//b.txt", "a/./b.txt", "a/b.txt/"] {
            let (meta, _) = r.find("base", ok).expect("find").expect(ok);
            assert_eq!(meta.path, "a/b.txt");
        }
    }

    #[test]
    fn absent_directories_and_unknown_envs_are_none() {
        let d = tempfile::tempdir().expect("tempdir");
        write(&d.path().join("dir/f"), "x");
        let r = roots_of(&[("base", &[d.path()])], &[], &[]);
        assert_eq!(r.resolve("base", "nope").expect("ok"), None);
        assert_eq!(r.resolve("base", "dir").expect("ok"), None);
        assert_eq!(r.resolve("base", "dir/f/g").expect("ok"), None);
        assert_eq!(r.resolve("prod", "dir/f").expect("ok"), None);
        assert_eq!(
            r.list("prod", "", ListKind::Files).expect("ok"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn missing_root_holds_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        let gone = d.path().join("gone");
        let r = roots_of(&[("base", &[gone.as_path()])], &[], &[]);
        assert_eq!(r.resolve("base", "x").expect("ok"), None);
        assert!(r.list("base", "", ListKind::Files).expect("ok").is_empty());
    }

    #[test]
    fn symlinks_inside_the_root_are_followed() {
        let d = tempfile::tempdir().expect("tempdir");
        write(&d.path().join("real/f.txt"), "inside");
        symlink(d.path().join("real/f.txt"), d.path().join("link.txt")).expect("symlink");
        symlink("real", d.path().join("alias")).expect("symlink");
        let r = roots_of(&[("base", &[d.path()])], &[], &[]);
        let (meta, _) = r.find("base", "link.txt").expect("find").expect("there");
        assert_eq!(meta.hash, sha("inside"));
        assert!(r.resolve("base", "alias/f.txt").expect("ok").is_some());
        let files = r.list("base", "", ListKind::Files).expect("list");
        assert_eq!(files, vec!["alias/f.txt", "link.txt", "real/f.txt"]);
    }

    #[test]
    fn symlinks_leaving_the_root_are_absent_and_reported() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        write(&outside.join("secret"), "s");
        write(&root.join("ok"), "ok");
        symlink(outside.join("secret"), root.join("passwd")).expect("symlink");
        symlink(&outside, root.join("out")).expect("symlink");
        let r = roots_of(&[("base", &[root.as_path()])], &[], &[]);
        assert_eq!(r.lookup("base", "passwd").expect("ok"), Lookup::Escapes);
        assert_eq!(r.resolve("base", "passwd").expect("ok"), None);
        assert_eq!(r.lookup("base", "out/secret").expect("ok"), Lookup::Escapes);
        assert!(r.find("base", "out/secret").expect("ok").is_none());
        assert!(r.read_to_string("base", "passwd").expect("ok").is_none());
        assert_eq!(
            r.list("base", "", ListKind::Files).expect("list"),
            vec!["ok"]
        );
        assert!(r.list("base", "", ListKind::Dirs).expect("list").is_empty());
    }

    #[test]
    fn symlink_loops_end() {
        let d = tempfile::tempdir().expect("tempdir");
        write(&d.path().join("a/f"), "x");
        symlink("..", d.path().join("a/up")).expect("symlink");
        symlink("loop2", d.path().join("loop1")).expect("symlink");
        symlink("loop1", d.path().join("loop2")).expect("symlink");
        let r = roots_of(&[("base", &[d.path()])], &[], &[]);
        assert_eq!(r.resolve("base", "loop1").expect("ok"), None);
        let files = r.list("base", "", ListKind::Files).expect("list");
        assert_eq!(files, vec!["a/f"]);
        assert!(r.resolve("base", "a/up/a/f").expect("ok").is_some());
    }

    #[test]
    fn ignore_regex_is_searched_and_glob_fnmatched() {
        let d = tempfile::tempdir().expect("tempdir");
        for f in [
            "keep.sls",
            "x.swp",
            "app/.git/config",
            "app/init.sls",
            "a/b.pyc",
            ".hidden",
        ] {
            write(&d.path().join(f), "x");
        }
        let r = roots_of(
            &[("base", &[d.path()])],
            &[r"/\.git($|/)"],
            &["*.swp", "*.pyc"],
        );
        let files = r.list("base", "", ListKind::Files).expect("list");
        assert_eq!(files, vec![".hidden", "app/init.sls", "keep.sls"]);
        assert!(r.resolve("base", "app/.git/config").expect("ok").is_none());
        assert!(r.resolve("base", "x.swp").expect("ok").is_none());
        assert!(r.resolve("base", "a/b.pyc").expect("ok").is_none());
        assert!(r.resolve("base", ".hidden").expect("ok").is_some());
        let dirs = r.list("base", "", ListKind::Dirs).expect("list");
        assert_eq!(dirs, vec!["a", "app"]);
        assert_eq!(
            r.list("base", "", ListKind::EmptyDirs).expect("list"),
            vec!["a"]
        );
    }

    #[test]
    fn an_ignored_directory_hides_its_files() {
        let d = tempfile::tempdir().expect("tempdir");
        write(&d.path().join("private/key.pem"), "k");
        write(&d.path().join("pub/x"), "x");
        let r = roots_of(&[("base", &[d.path()])], &[], &["private"]);
        assert!(r.resolve("base", "private/key.pem").expect("ok").is_none());
        assert_eq!(
            r.list("base", "", ListKind::Files).expect("list"),
            vec!["pub/x"]
        );
    }

    #[test]
    fn bad_ignore_regex_is_an_error_naming_the_option() {
        let err = Roots::new(&BTreeMap::new(), &["(".to_string()], &[])
            .err()
            .expect("error");
        assert!(err.to_string().contains("file_ignore_regex"), "{err}");
    }

    #[test]
    fn first_root_wins_and_listings_are_the_union() {
        let d = tempfile::tempdir().expect("tempdir");
        let one = d.path().join("one");
        let two = d.path().join("two");
        write(&one.join("top.sls"), "one");
        write(&two.join("top.sls"), "two");
        write(&two.join("only2/f"), "2");
        fs::create_dir_all(one.join("only2")).expect("mkdir");
        fs::create_dir_all(two.join("dir_in_two")).expect("mkdir");
        write(&one.join("dir_in_two"), "a file in one, a directory in two");
        let r = roots_of(&[("base", &[one.as_path(), two.as_path()])], &[], &[]);
        let (text, real) = r
            .read_to_string("base", "top.sls")
            .expect("read")
            .expect("there");
        assert_eq!(text, "one");
        assert!(real.starts_with(fs::canonicalize(&one).expect("canon")));
        assert_eq!(
            r.read_to_string("base", "only2/f")
                .expect("r")
                .expect("t")
                .0,
            "2"
        );
        assert_eq!(
            r.list("base", "", ListKind::Files).expect("list"),
            vec!["dir_in_two", "only2/f", "top.sls"]
        );
        // only2 is empty in `one` but not in `two`: not empty overall.
        assert_eq!(
            r.list("base", "", ListKind::EmptyDirs).expect("l"),
            vec!["dir_in_two"]
        );
    }

    #[test]
    fn two_envs_are_separate() {
        let d = tempfile::tempdir().expect("tempdir");
        let base = d.path().join("base");
        let prod = d.path().join("prod");
        write(&base.join("b"), "b");
        write(&prod.join("p"), "p");
        let r = roots_of(
            &[("base", &[base.as_path()]), ("prod", &[prod.as_path()])],
            &[],
            &[],
        );
        assert_eq!(r.envs(), vec!["base", "prod"]);
        assert_eq!(
            r.list("x", "y", ListKind::Envs).expect("l"),
            vec!["base", "prod"]
        );
        assert!(r.resolve("base", "p").expect("ok").is_none());
        assert!(r.resolve("prod", "p").expect("ok").is_some());
        assert_eq!(r.list("prod", "", ListKind::Files).expect("l"), vec!["p"]);
    }

    #[test]
    fn prefix_is_a_string_prefix_as_in_salt() {
        let d = tempfile::tempdir().expect("tempdir");
        for f in ["web/a", "web/sub/b", "webby", "other/c"] {
            write(&d.path().join(f), "x");
        }
        let r = roots_of(&[("base", &[d.path()])], &[], &[]);
        assert_eq!(
            r.list("base", "web", ListKind::Files).expect("l"),
            vec!["web/a", "web/sub/b", "webby"]
        );
        assert_eq!(
            r.list("base", "/web/sub/", ListKind::Files).expect("l"),
            vec!["web/sub/b"]
        );
        assert_eq!(
            r.list("base", "web", ListKind::Dirs).expect("l"),
            vec!["web", "web/sub"]
        );
        assert!(matches!(
            r.list("base", "./web/../", ListKind::Files),
            Err(RootsError::BadPath { .. })
        ));
    }

    #[test]
    fn hash_is_cached_until_the_file_changes() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("f");
        write(&f, "one");
        let r = roots_of(&[("base", &[d.path()])], &[], &[]);
        assert_eq!(
            r.find("base", "f").expect("f").expect("t").0.hash,
            sha("one")
        );
        write(&f, "two!");
        assert_eq!(
            r.find("base", "f").expect("f").expect("t").0.hash,
            sha("two!")
        );
        r.clear_cache();
        assert_eq!(
            r.find("base", "f").expect("f").expect("t").0.hash,
            sha("two!")
        );
    }

    #[test]
    fn read_to_string_refuses_binary_and_huge_files() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::write(d.path().join("bin"), [0xff, 0xfe, 0x00]).expect("write");
        let big = fs::File::create(d.path().join("big")).expect("create");
        big.set_len(MAX_TEXT_BYTES + 1).expect("truncate");
        let r = roots_of(&[("base", &[d.path()])], &[], &[]);
        assert!(matches!(
            r.read_to_string("base", "bin"),
            Err(RootsError::NotText { .. })
        ));
        let err = r.read_to_string("base", "big").expect_err("too large");
        assert!(matches!(err, RootsError::TooLarge { .. }));
        assert!(err.to_string().contains("big"), "{err}");
        assert!(r.read_to_string("base", "none").expect("ok").is_none());
    }
}
