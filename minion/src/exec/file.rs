//! The `file` execution module: look at and change files on the minion
//! (`file.stats`, `file.get_hash`, `file.chown`, `file.set_mode`,
//! `file.replace`, `file.write`...), with Salt's names, arguments and
//! return shapes, plus the plain synchronous helpers the `file` state
//! module shares (permission checks, hashes, unified diffs, atomic writes,
//! `replace`/`blockreplace` on text).
//!
//! The invariant: every helper here is a pure function of its arguments
//! and the filesystem, returns `Err(message)` instead of panicking, and
//! changes a file's content only through [`write_atomic`] (a temporary file
//! in the same directory renamed over the target), so a reader sees the old
//! or the new content, never a mix.

use super::{opt, req, Call, CallFuture, ExecError, Function, Outcome};
use serde_json::{json, Map, Value};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "file.file_exists",
        params: &[req("path")],
        varargs: false,
        kwargs: false,
        doc: "Check if a file exists (a regular file, symlinks followed).\n\n\
              CLI Example:\n\n    salt '*' file.file_exists /etc/passwd\n",
        handler: file_exists,
    },
    Function {
        name: "file.directory_exists",
        params: &[req("path")],
        varargs: false,
        kwargs: false,
        doc: "Check if a directory exists.\n\n\
              CLI Example:\n\n    salt '*' file.directory_exists /etc\n",
        handler: directory_exists,
    },
    Function {
        name: "file.get_hash",
        params: &[req("path"), opt("form"), opt("chunk_size")],
        varargs: false,
        kwargs: false,
        doc: "Get the hash sum of a file. ``form`` is md5, sha1, sha224, sha256\n\
              (default), sha384 or sha512.\n\n\
              CLI Example:\n\n    salt '*' file.get_hash /etc/shadow form=md5\n",
        handler: get_hash,
    },
    Function {
        name: "file.chown",
        params: &[req("path"), req("user"), req("group")],
        varargs: false,
        kwargs: false,
        doc: "Chown a file, pass the file the desired user and group. Returns None\n\
              on success, else the problems as text.\n\n\
              CLI Example:\n\n    salt '*' file.chown /etc/passwd root root\n",
        handler: chown,
    },
    Function {
        name: "file.set_mode",
        params: &[req("path"), req("mode")],
        varargs: false,
        kwargs: false,
        doc: "Set the mode of a file; returns the new mode (``'0644'``).\n\n\
              CLI Example:\n\n    salt '*' file.set_mode /etc/passwd 0644\n",
        handler: set_mode,
    },
    Function {
        name: "file.get_mode",
        params: &[req("path"), opt("follow_symlinks")],
        varargs: false,
        kwargs: false,
        doc: "Return the mode of a file (``'0644'``).\n\n\
              CLI Example:\n\n    salt '*' file.get_mode /etc/passwd\n",
        handler: get_mode,
    },
    Function {
        name: "file.get_user",
        params: &[req("path"), opt("follow_symlinks")],
        varargs: false,
        kwargs: false,
        doc: "Return the user that owns a given file.\n\n\
              CLI Example:\n\n    salt '*' file.get_user /etc/passwd\n",
        handler: get_user,
    },
    Function {
        name: "file.get_group",
        params: &[req("path"), opt("follow_symlinks")],
        varargs: false,
        kwargs: false,
        doc: "Return the group that owns a given file.\n\n\
              CLI Example:\n\n    salt '*' file.get_group /etc/passwd\n",
        handler: get_group,
    },
    Function {
        name: "file.touch",
        params: &[req("name"), opt("atime"), opt("mtime")],
        varargs: false,
        kwargs: false,
        doc: "Just like the ``touch`` command, create a file if it does not exist or\n\
              update its access and modification times (``atime``/``mtime`` in\n\
              seconds since the epoch, now by default). Returns True.\n\n\
              CLI Example:\n\n    salt '*' file.touch /var/log/emptyfile\n",
        handler: touch,
    },
    Function {
        name: "file.remove",
        params: &[req("path")],
        varargs: false,
        kwargs: true,
        doc: "Remove the named file or directory (recursively). Returns True when\n\
              something was removed, False when there was nothing.\n\n\
              CLI Example:\n\n    salt '*' file.remove /tmp/foo\n",
        handler: remove,
    },
    Function {
        name: "file.read",
        params: &[req("path"), opt("binary")],
        varargs: false,
        kwargs: false,
        doc: "Return the content of the file.\n\n\
              CLI Example:\n\n    salt '*' file.read /path/to/file\n",
        handler: read,
    },
    Function {
        name: "file.write",
        params: &[req("path")],
        varargs: true,
        kwargs: true,
        doc: "Write text to a file, overwriting any existing contents; each\n\
              argument is a line.\n\n\
              CLI Example:\n\n    salt '*' file.write /etc/motd \"With all thine offerings thou shalt offer salt.\"\n",
        handler: write,
    },
    Function {
        name: "file.append",
        params: &[req("path")],
        varargs: true,
        kwargs: true,
        doc: "Append text to the end of a file; each argument is a line (or pass\n\
              ``args=[...]``).\n\n\
              CLI Example:\n\n    salt '*' file.append /etc/motd \"With all thine offerings thou shalt offer salt.\" \"Salt is what makes bad things taste bad when they are not there.\"\n",
        handler: append,
    },
    Function {
        name: "file.replace",
        params: &[
            req("path"),
            req("pattern"),
            req("repl"),
            opt("count"),
            opt("flags"),
            opt("bufsize"),
            opt("append_if_not_found"),
            opt("prepend_if_not_found"),
            opt("not_found_content"),
            opt("backup"),
            opt("dry_run"),
            opt("search_only"),
            opt("show_changes"),
            opt("ignore_if_missing"),
            opt("preserve_inode"),
            opt("backslash_literal"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Replace occurrences of a pattern (a Python-style regular expression,\n\
              ``flags`` default 8 = MULTILINE) in a file. Returns the diff when\n\
              ``show_changes`` (default), else whether the file changed. The old\n\
              file is kept as ``path + backup`` (``.bak``; ``backup=False`` keeps none).\n\n\
              CLI Example:\n\n    salt '*' file.replace /etc/httpd/httpd.conf pattern='LogLevel warn' repl='LogLevel info'\n",
        handler: replace,
    },
    Function {
        name: "file.blockreplace",
        params: &[
            req("path"),
            opt("marker_start"),
            opt("marker_end"),
            opt("content"),
            opt("append_if_not_found"),
            opt("prepend_if_not_found"),
            opt("backup"),
            opt("dry_run"),
            opt("show_changes"),
            opt("append_newline"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Replace the content of a block delimited by two marker lines.\n\
              Returns the diff when ``show_changes`` (default), else whether the\n\
              file changed.\n\n\
              CLI Example:\n\n    salt '*' file.blockreplace /etc/hosts '#-- start managed zone foobar : DO NOT EDIT --' '#-- end managed zone foobar --' $'10.0.1.1 foo.foobar\\n10.0.1.2 bar.foobar' True\n",
        handler: blockreplace,
    },
    Function {
        name: "file.line",
        params: &[
            req("path"),
            opt("content"),
            opt("match"),
            opt("mode"),
            opt("location"),
            opt("before"),
            opt("after"),
            opt("show_changes"),
            opt("backup"),
            opt("quiet"),
            opt("indent"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Line-focused editing of a file: ``mode`` is ensure, replace, delete\n\
              or insert (with ``location`` start/end or ``before``/``after``\n\
              regular expressions). Returns the diff when ``show_changes``\n\
              (default), else whether the file changed.\n\n\
              CLI Example:\n\n    salt '*' file.line /etc/nsswitch.conf \"networks:\tfiles dns\" after=\"hosts:.*?\" mode='ensure'\n",
        handler: line,
    },
    Function {
        name: "file.search",
        params: &[
            req("path"),
            req("pattern"),
            opt("flags"),
            opt("bufsize"),
            opt("ignore_if_missing"),
            opt("multiline"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Search for occurrences of a pattern in a file; returns True or False.\n\n\
              CLI Example:\n\n    salt '*' file.search /etc/crontab 'mymaintenance.sh'\n",
        handler: search,
    },
    Function {
        name: "file.stats",
        params: &[req("path"), opt("hash_type"), opt("follow_symlinks")],
        varargs: false,
        kwargs: false,
        doc: "Return a dict containing the stats for a given file: inode, uid,\n\
              gid, user, group, atime, mtime, ctime, size, mode, type, target and,\n\
              with ``hash_type``, sum.\n\n\
              CLI Example:\n\n    salt '*' file.stats /etc/passwd\n",
        handler: stats_fn,
    },
    Function {
        name: "file.mkdir",
        params: &[req("dir_path"), opt("user"), opt("group"), opt("mode")],
        varargs: false,
        kwargs: false,
        doc: "Ensure that a directory (and its parents) is available; sets owner\n\
              and mode of the directory. Returns True.\n\n\
              CLI Example:\n\n    salt '*' file.mkdir /opt/jetty/context\n",
        handler: mkdir,
    },
    Function {
        name: "file.copy",
        params: &[
            req("src"),
            req("dst"),
            opt("recurse"),
            opt("remove_existing"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Copy a file or directory from source to dst (``recurse=True`` for a\n\
              directory). Returns True.\n\n\
              CLI Example:\n\n    salt '*' file.copy /path/to/src /path/to/dst\n",
        handler: copy,
    },
    Function {
        name: "file.symlink",
        params: &[req("src"), req("path"), opt("force"), opt("atomic")],
        varargs: false,
        kwargs: false,
        doc: "Create a symbolic link (``path`` pointing to ``src``). Returns True.\n\n\
              CLI Example:\n\n    salt '*' file.symlink /path/to/file /path/to/link\n",
        handler: symlink,
    },
    Function {
        name: "file.readlink",
        params: &[req("path"), opt("canonicalize")],
        varargs: false,
        kwargs: false,
        doc: "Return the path that a symlink points to (fully resolved with\n\
              ``canonicalize=True``).\n\n\
              CLI Example:\n\n    salt '*' file.readlink /path/to/link\n",
        handler: readlink,
    },
    Function {
        name: "file.contains",
        params: &[req("path"), req("text")],
        varargs: false,
        kwargs: false,
        doc: "Return True if the file at ``path`` contains ``text``.\n\n\
              CLI Example:\n\n    salt '*' file.contains /etc/crontab 'mymaintenance.sh'\n",
        handler: contains,
    },
    Function {
        name: "file.get_diff",
        params: &[
            req("file1"),
            req("file2"),
            opt("saltenv"),
            opt("show_filenames"),
            opt("show_changes"),
        ],
        varargs: false,
        kwargs: true,
        doc: "Return the unified diff between two local files (``salt://`` paths\n\
              are fetched first). ``''`` when they are the same.\n\n\
              CLI Example:\n\n    salt '*' file.get_diff /home/fred/.vimrc salt://users/fred/.vimrc\n",
        handler: get_diff,
    },
];

// ---------------------------------------------------------------------
// Shared synchronous helpers (used by the `file` state module too).
// ---------------------------------------------------------------------

/// `0o644` as Salt prints it: `'0644'`.
pub(crate) fn mode_str(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// A mode as Salt takes it: `'0644'`, `'644'`, `644` (YAML reads `0644` as
/// the number 644: its digits are octal).
pub(crate) fn parse_mode(v: &Value) -> Result<u32, String> {
    let text = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        other => return Err(format!("invalid mode {other}")),
    };
    let digits = text.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(m),
        _ => Err(format!("invalid mode '{text}' (octal digits, like '0644')")),
    }
}

/// The uid of a user name (or a numeric uid).
pub(crate) fn uid_for(user: &str) -> Result<u32, String> {
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        _ => user
            .parse::<u32>()
            .map_err(|_| format!("User {user} is not available")),
    }
}

/// The gid of a group name (or a numeric gid).
pub(crate) fn gid_for(group: &str) -> Result<u32, String> {
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => group
            .parse::<u32>()
            .map_err(|_| format!("Group {group} is not available")),
    }
}

/// The name of a uid (its number when it has none).
pub(crate) fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// The name of a gid (its number when it has none).
pub(crate) fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

fn io_msg(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

fn metadata(path: &Path, follow: bool) -> std::io::Result<std::fs::Metadata> {
    if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
}

/// Hex digest of a reader with the hash `form`.
fn digest<D: sha2::Digest>(mut r: impl Read) -> std::io::Result<String> {
    let mut h = D::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Ends at end-of-input; each pass consumes input.
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn digest_reader(form: &str, r: impl Read) -> Result<std::io::Result<String>, String> {
    Ok(match form.to_ascii_lowercase().as_str() {
        "md5" => digest::<md5::Md5>(r),
        "sha1" => digest::<sha1::Sha1>(r),
        "sha224" => digest::<sha2::Sha224>(r),
        "sha256" => digest::<sha2::Sha256>(r),
        "sha384" => digest::<sha2::Sha384>(r),
        "sha512" => digest::<sha2::Sha512>(r),
        other => return Err(format!("Invalid hash type '{other}'")),
    })
}

/// Hex hash of a file with `form` (md5, sha1, sha224, sha256, sha384,
/// sha512).
pub(crate) fn hash_file(path: &Path, form: &str) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| io_msg(path, e))?;
    digest_reader(form, f)?.map_err(|e| io_msg(path, e))
}

/// Hex hash of bytes with `form`.
pub(crate) fn hash_bytes(data: &[u8], form: &str) -> Result<String, String> {
    digest_reader(form, data)?.map_err(|e| e.to_string())
}

/// The hash form whose hex digests are `len` long.
pub(crate) fn form_of_len(len: usize) -> Option<&'static str> {
    Some(match len {
        32 => "md5",
        40 => "sha1",
        56 => "sha224",
        64 => "sha256",
        96 => "sha384",
        128 => "sha512",
        _ => return None,
    })
}

fn file_type(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "link"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "pipe"
    } else if ft.is_socket() {
        "socket"
    } else {
        "file"
    }
}

fn secs(s: i64, ns: i64) -> f64 {
    s as f64 + ns as f64 / 1e9
}

/// Salt's `file.stats` dict; `Path not found: <path>` when it is missing.
pub(crate) fn stats(path: &Path, hash_type: Option<&str>, follow: bool) -> Result<Value, String> {
    let m = metadata(path, follow).map_err(|_| format!("Path not found: {}", path.display()))?;
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut ret = json!({
        "inode": m.ino(),
        "uid": m.uid(),
        "gid": m.gid(),
        "user": user_name(m.uid()),
        "group": group_name(m.gid()),
        "atime": secs(m.atime(), m.atime_nsec()),
        "mtime": secs(m.mtime(), m.mtime_nsec()),
        "ctime": secs(m.ctime(), m.ctime_nsec()),
        "size": m.size(),
        "mode": mode_str(m.mode()),
        "type": file_type(m.file_type()),
        "target": target.display().to_string(),
    });
    if let Some(form) = hash_type.filter(|h| !h.is_empty()) {
        if m.is_file() {
            ret["sum"] = json!(hash_file(path, form)?);
        }
    }
    Ok(ret)
}

/// The ownership and mode a state or call asks for; `None` leaves it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Perms {
    pub user: Option<String>,
    pub group: Option<String>,
    pub mode: Option<u32>,
}

impl Perms {
    /// The uid and gid asked for; an unknown user or group is Salt's
    /// "User x is not available" / "Group x is not available".
    pub fn ids(&self) -> Result<(Option<u32>, Option<u32>), String> {
        let uid = self.user.as_deref().map(uid_for);
        let gid = self.group.as_deref().map(gid_for);
        let mut errs = Vec::new();
        if let Some(Err(e)) = &uid {
            errs.push(e.clone());
        }
        if let Some(Err(e)) = &gid {
            errs.push(e.clone());
        }
        if !errs.is_empty() {
            return Err(errs.join(" "));
        }
        Ok((uid.and_then(Result::ok), gid.and_then(Result::ok)))
    }
}

/// Compare `path`'s owner and mode with `want`, and with `apply` set them.
/// Returns Salt's `changes` keys (`user`, `group`, `mode`) for what differs
/// (differed). Symlinks' modes are left alone.
pub(crate) fn check_perms(
    path: &Path,
    want: &Perms,
    follow: bool,
    apply: bool,
) -> Result<Map<String, Value>, String> {
    let (uid, gid) = want.ids()?;
    let m = metadata(path, follow).map_err(|e| io_msg(path, e))?;
    let mut changes = Map::new();
    let new_uid = uid.filter(|u| *u != m.uid());
    let new_gid = gid.filter(|g| *g != m.gid());
    if let (Some(_), Some(u)) = (new_uid, &want.user) {
        changes.insert("user".into(), json!(u));
    }
    if let (Some(_), Some(g)) = (new_gid, &want.group) {
        changes.insert("group".into(), json!(g));
    }
    let new_mode = want
        .mode
        .filter(|md| !m.file_type().is_symlink() && *md != m.mode() & 0o7777);
    if let Some(md) = new_mode {
        changes.insert("mode".into(), json!(mode_str(md)));
    }
    if apply {
        if new_uid.is_some() || new_gid.is_some() {
            let r = if follow {
                std::os::unix::fs::chown(path, new_uid, new_gid)
            } else {
                std::os::unix::fs::lchown(path, new_uid, new_gid)
            };
            r.map_err(|e| io_msg(path, e))?;
        }
        if let Some(md) = new_mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(md))
                .map_err(|e| io_msg(path, e))?;
        }
    }
    Ok(changes)
}

/// Write `data` to `path` atomically: a temporary file in the same
/// directory, given `mode` and owner, renamed over `path`.
pub(crate) fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: (Option<u32>, Option<u32>),
) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".brine-tmp")
        .tempfile_in(dir)
        .map_err(|e| io_msg(dir, e))?;
    tmp.write_all(data).map_err(|e| io_msg(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| io_msg(tmp.path(), e))?;
    if owner.0.is_some() || owner.1.is_some() {
        std::os::unix::fs::chown(tmp.path(), owner.0, owner.1)
            .map_err(|e| io_msg(tmp.path(), e))?;
    }
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_msg(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| io_msg(path, e.error))?;
    Ok(())
}

/// Replace `path`'s content with `data`, keeping its owner and mode
/// (a new file gets `0644` and the process's owner).
pub(crate) fn rewrite(path: &Path, data: &[u8]) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) => write_atomic(
            path,
            data,
            m.mode() & 0o7777,
            (Some(m.uid()), Some(m.gid())),
        ),
        Err(_) => write_atomic(path, data, 0o644, (None, None)),
    }
}

/// A unified diff as Python's `difflib.unified_diff` prints it (`--- a`,
/// `+++ b`, hunks with 3 lines of context); `''` when equal.
pub(crate) fn unified_diff(old: &str, new: &str, from: &str, to: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(from, to)
        .to_string()
}

/// The diff Salt puts in a state's `changes`: text diff, or "Replace
/// binary file" when either side is not UTF-8.
pub(crate) fn content_diff(old: &[u8], new: &[u8]) -> String {
    match (std::str::from_utf8(old), std::str::from_utf8(new)) {
        (Ok(a), Ok(b)) => unified_diff(a, b, "", ""),
        _ => "Replace binary file".to_string(),
    }
}

/// Read a file as text (lossy for non-UTF-8 bytes); `File not found:`
/// when it is missing.
pub(crate) fn read_text(path: &Path) -> Result<String, String> {
    match std::fs::read(path) {
        Ok(b) => Ok(String::from_utf8(b)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("File not found: {}", path.display()))
        }
        Err(e) => Err(io_msg(path, e)),
    }
}

/// Python's `re` flags (`flags=8`, `['IGNORECASE', 'MULTILINE']`,
/// `'IGNORECASE'`) as a bitmask.
pub(crate) fn parse_flags(v: Option<&Value>) -> Result<u32, String> {
    let name_bit = |s: &str| -> Result<u32, String> {
        Ok(
            match s.trim().to_ascii_uppercase().trim_start_matches("RE.") {
                "I" | "IGNORECASE" => 2,
                "L" | "LOCALE" => 4,
                "M" | "MULTILINE" => 8,
                "S" | "DOTALL" => 16,
                "U" | "UNICODE" => 32,
                "X" | "VERBOSE" => 64,
                "" => 0,
                other => {
                    if let Ok(n) = other.parse::<u32>() {
                        return Ok(n);
                    }
                    return Err(format!("Invalid re flag given: {other}"));
                }
            },
        )
    };
    match v {
        None | Some(Value::Null) => Ok(8),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("invalid flags {n}")),
        Some(Value::String(s)) => s
            .split([',', '|'])
            .map(name_bit)
            .try_fold(0, |a, b| Ok(a | b?)),
        Some(Value::Array(items)) => items.iter().try_fold(0, |a, item| {
            Ok(a | match item {
                Value::String(s) => name_bit(s)?,
                other => parse_flags(Some(other))?,
            })
        }),
        Some(other) => Err(format!("invalid flags {other}")),
    }
}

/// A Python regular expression with `flags`, for the `regex` crate.
pub(crate) fn compile(pattern: &str, flags: u32) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(flags & 2 != 0)
        .multi_line(flags & 8 != 0)
        .dot_matches_new_line(flags & 16 != 0)
        .ignore_whitespace(flags & 64 != 0)
        .build()
        .map_err(|e| format!("Invalid pattern '{pattern}': {e}"))
}

/// A Python replacement string (`\1`, `\g<name>`, `\n`) as a `regex`
/// replacement (`${1}`, `${name}`, literal `$` doubled).
fn convert_repl(repl: &str, literal: bool) -> String {
    if literal {
        return repl.replace('$', "$$");
    }
    brine_common::render::python_replacement(repl)
}

/// What `file.replace` does to a text.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplaceSpec {
    pub pattern: String,
    pub repl: String,
    /// 0: every match.
    pub count: usize,
    pub flags: u32,
    pub append_if_not_found: bool,
    pub prepend_if_not_found: bool,
    pub not_found_content: Option<String>,
    pub backslash_literal: bool,
}

/// `text` with `spec` applied: matches replaced; when nothing matched and
/// `append_if_not_found`/`prepend_if_not_found`, the content (the
/// `not_found_content` or `repl`) added at the end/start unless it is
/// already there as whole lines.
pub(crate) fn replace_text(text: &str, spec: &ReplaceSpec) -> Result<String, String> {
    let re = compile(&spec.pattern, spec.flags)?;
    let found = re.is_match(text);
    if found {
        let repl = convert_repl(&spec.repl, spec.backslash_literal);
        return Ok(re.replacen(text, spec.count, repl.as_str()).into_owned());
    }
    if !(spec.append_if_not_found || spec.prepend_if_not_found) {
        return Ok(text.to_string());
    }
    let content = spec
        .not_found_content
        .clone()
        .unwrap_or_else(|| spec.repl.clone());
    let present = regex::RegexBuilder::new(&format!("^{}$", regex::escape(&content)))
        .multi_line(true)
        .build()
        .map(|r| r.is_match(text))
        .unwrap_or(false);
    if present {
        return Ok(text.to_string());
    }
    let mut out = String::new();
    if spec.prepend_if_not_found {
        out.push_str(&content);
        out.push('\n');
        out.push_str(text);
    } else {
        out.push_str(text);
        if !text.is_empty() && !text.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&content);
        out.push('\n');
    }
    Ok(out)
}

/// What `file.blockreplace` does to a text.
#[derive(Debug, Clone, Default)]
pub(crate) struct BlockSpec {
    pub marker_start: String,
    pub marker_end: String,
    pub content: String,
    pub append_if_not_found: bool,
    pub prepend_if_not_found: bool,
    /// `None`: add a newline after the content only when it has none.
    pub append_newline: Option<bool>,
}

/// `text` with the block between the marker lines replaced by the
/// content (the marker lines are kept as they are). Markers not found:
/// appended/prepended with the content when asked, else Salt's error.
pub(crate) fn blockreplace_text(text: &str, b: &BlockSpec) -> Result<String, String> {
    let (start, end) = (b.marker_start.trim(), b.marker_end.trim());
    if start.is_empty() || end.is_empty() {
        return Err("marker_start and marker_end must be given".into());
    }
    let mut block = b.content.clone();
    let newline = b.append_newline.unwrap_or(!block.ends_with('\n'));
    if newline && !block.is_empty() {
        block.push('\n');
    }
    let mut out = String::new();
    let mut lines = text.split_inclusive('\n');
    let mut found = false;
    while let Some(line) = lines.next() {
        if !found && line.contains(start) {
            found = true;
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&block);
            let mut ended = false;
            for inner in lines.by_ref() {
                if inner.contains(end) {
                    out.push_str(inner);
                    ended = true;
                    break;
                }
            }
            if !ended {
                return Err(
                    "Unterminated marked block. End of file reached before marker_end.".into(),
                );
            }
        } else {
            out.push_str(line);
        }
    }
    if found {
        return Ok(out);
    }
    let whole = format!("{}\n{block}{}\n", b.marker_start, b.marker_end);
    if b.prepend_if_not_found {
        Ok(format!("{whole}{text}"))
    } else if b.append_if_not_found {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&whole);
        Ok(out)
    } else {
        Err("Cannot edit marked block. Markers were not found in file.".into())
    }
}

/// What `file.line` does to a text.
#[derive(Debug, Clone, Default)]
pub(crate) struct LineSpec {
    pub content: Option<String>,
    /// A regular expression; the content when not given.
    pub matching: Option<String>,
    /// ensure, replace, delete or insert.
    pub mode: String,
    /// start or end (insert).
    pub location: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    /// Keep the indentation of the line next to (or replaced by) the
    /// content.
    pub indent: bool,
}

/// A regular expression from `file.line`'s `match`/`before`/`after`;
/// text that is not a valid expression is matched literally (`None`: too
/// big even then, matches nothing).
fn line_regex(pattern: &str) -> Option<regex::Regex> {
    regex::Regex::new(pattern)
        .or_else(|_| regex::Regex::new(&regex::escape(pattern)))
        .ok()
}

/// Salt's errors for a `file.line` call that cannot work on any file: no
/// or an unknown mode, no content to put.
pub(crate) fn check_line_spec(s: &LineSpec) -> Result<(), String> {
    let mode = s.mode.to_ascii_lowercase();
    if mode.is_empty() {
        return Err("Mode was not defined. How to process the file?".into());
    }
    if !matches!(mode.as_str(), "ensure" | "replace" | "delete" | "insert") {
        return Err(format!("Unknown mode \"{mode}\""));
    }
    if s.content.is_none() && mode != "delete" {
        return Err("Content can only be empty if mode is \"delete\"".into());
    }
    Ok(())
}

/// `text` with one `file.line` edit applied.
pub(crate) fn line_text(text: &str, s: &LineSpec) -> Result<String, String> {
    check_line_spec(s)?;
    let mode = s.mode.to_ascii_lowercase();
    let content = s.content.clone().unwrap_or_default();
    let matching = s.matching.clone().unwrap_or_else(|| content.clone());
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let same = |l: &str| l.trim() == content.trim();
    let indented = |like: &str| {
        if s.indent && !content.starts_with(char::is_whitespace) {
            let ws: String = like.chars().take_while(|c| c.is_whitespace()).collect();
            format!("{ws}{}", content.trim_start())
        } else {
            content.clone()
        }
    };
    let find = |what: &str, lines: &[String]| -> Result<usize, String> {
        let re = line_regex(what);
        lines
            .iter()
            .position(|l| re.as_ref().is_some_and(|r| r.is_match(l)))
            .ok_or_else(|| format!("Found 0 expected occurrences in \"{what}\" expression"))
    };
    match mode.as_str() {
        "delete" => {
            let re = line_regex(&matching);
            lines.retain(|l| !re.as_ref().is_some_and(|r| r.is_match(l)));
        }
        "replace" => {
            let re = line_regex(&matching);
            for l in lines.iter_mut() {
                if re.as_ref().is_some_and(|r| r.is_match(l)) && !same(l) {
                    *l = indented(l);
                }
            }
        }
        "insert" => {
            if !lines.iter().any(|l| same(l)) {
                match (&s.before, &s.after, s.location.as_deref()) {
                    (None, None, Some("start")) => lines.insert(0, content.clone()),
                    (None, None, Some("end")) => lines.push(content.clone()),
                    (_, Some(after), _) => {
                        let i = find(after, &lines)?;
                        let new = indented(&lines[i]);
                        lines.insert(i + 1, new);
                    }
                    (Some(before), None, _) => {
                        let i = find(before, &lines)?;
                        let new = indented(&lines[i]);
                        lines.insert(i, new);
                    }
                    _ => {
                        return Err("On insert must be defined either \"location\" or \"before/after\" conditions.".into())
                    }
                }
            }
        }
        _ => match (&s.before, &s.after) {
            (Some(before), Some(after)) => {
                let a = find(after, &lines)?;
                let b = find(before, &lines)?;
                if b <= a {
                    return Err("\"before\" must come after \"after\" in the file".into());
                }
                match b - a {
                    1 => {
                        let new = indented(&lines[a]);
                        lines.insert(b, new);
                    }
                    2 if same(&lines[a + 1]) => {}
                    2 => lines[a + 1] = indented(&lines[a + 1]),
                    _ => {
                        return Err("Found more than one line between boundaries \"before\" and \"after\".".into())
                    }
                }
            }
            (None, Some(after)) => {
                let a = find(after, &lines)?;
                if !lines.get(a + 1).is_some_and(|l| same(l)) {
                    let new = indented(&lines[a]);
                    lines.insert(a + 1, new);
                }
            }
            (Some(before), None) => {
                let b = find(before, &lines)?;
                if !(b > 0 && same(&lines[b - 1])) {
                    let new = indented(&lines[b]);
                    lines.insert(b, new);
                }
            }
            (None, None) => {
                return Err("Wrong conditions? Unable to ensure line without knowing where to put it before and/or after.".into())
            }
        },
    }
    let mut out = lines.join("\n");
    if !lines.is_empty() && (text.ends_with('\n') || text.is_empty()) {
        out.push('\n');
    }
    Ok(out)
}

/// Copy the old `path` aside as `<path><suffix>` (a `file.replace`
/// backup).
fn backup_beside(path: &Path, suffix: &str) -> Result<(), String> {
    let mut to = path.as_os_str().to_owned();
    to.push(suffix);
    std::fs::copy(path, &to)
        .map(|_| ())
        .map_err(|e| io_msg(path, e))
}

/// Apply a text edit to `path` (`file.replace`, `file.blockreplace`):
/// the diff (`''` when nothing changes), written unless `dry_run`, the old
/// file copied to `path + backup` first when a backup suffix is given.
pub(crate) fn edit_file(
    path: &Path,
    dry_run: bool,
    backup: Option<&str>,
    edit: impl FnOnce(&str) -> Result<String, String>,
) -> Result<String, String> {
    if !path.is_file() {
        return Err(format!("File not found: {}", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| io_msg(path, e))?;
    // Editing a binary file as text would corrupt it: refuse.
    let old = String::from_utf8(bytes)
        .map_err(|_| format!("Cannot edit {}: it is not UTF-8 text", path.display()))?;
    let new = edit(&old)?;
    if new == old {
        return Ok(String::new());
    }
    if !dry_run {
        if let Some(sfx) = backup.filter(|s| !s.is_empty()) {
            backup_beside(path, sfx)?;
        }
        rewrite(path, new.as_bytes())?;
    }
    Ok(unified_diff(&old, &new, "", ""))
}

/// Recursively copy a directory or copy a file (`file.copy`).
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), String> {
    let m = std::fs::symlink_metadata(src).map_err(|e| io_msg(src, e))?;
    if m.is_dir() {
        std::fs::create_dir_all(dst).map_err(|e| io_msg(dst, e))?;
        for e in std::fs::read_dir(src).map_err(|e| io_msg(src, e))? {
            let e = e.map_err(|e| io_msg(src, e))?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        std::fs::set_permissions(dst, m.permissions()).map_err(|e| io_msg(dst, e))
    } else if m.file_type().is_symlink() {
        let t = std::fs::read_link(src).map_err(|e| io_msg(src, e))?;
        std::os::unix::fs::symlink(t, dst).map_err(|e| io_msg(dst, e))
    } else {
        std::fs::copy(src, dst)
            .map(|_| ())
            .map_err(|e| io_msg(dst, e))
    }
}

/// Remove a file, symlink or directory tree; whether there was one.
pub(crate) fn remove_path(path: &Path) -> Result<bool, String> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(false),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path)
            .map(|_| true)
            .map_err(|e| io_msg(path, e)),
        Ok(_) => std::fs::remove_file(path)
            .map(|_| true)
            .map_err(|e| io_msg(path, e)),
    }
}

/// Set `path`'s times (seconds since the epoch; now when `None`), creating
/// the file when it is missing.
pub(crate) fn touch_path(
    path: &Path,
    atime: Option<f64>,
    mtime: Option<f64>,
) -> Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_msg(path, e))?;
    let now = std::time::SystemTime::now();
    let at = |s: Option<f64>| {
        s.filter(|s| *s >= 0.0)
            .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(s))
            .unwrap_or(now)
    };
    let times = std::fs::FileTimes::new()
        .set_accessed(at(atime))
        .set_modified(at(mtime));
    f.set_times(times).map_err(|e| io_msg(path, e))
}

// ---------------------------------------------------------------------
// Execution functions.
// ---------------------------------------------------------------------

/// Run a filesystem body on a blocking thread; its `Err` is the call's
/// `ERROR: ...`.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ExecError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ExecError::Execution(format!("file task failed: {e}")))?
        .map_err(ExecError::Execution)
}

fn path_of(c: &Call<'_>, name: &str) -> Result<PathBuf, ExecError> {
    let p = c
        .str_arg(name)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ExecError::InvalidArgs(format!("{name} must be given")))?;
    Ok(PathBuf::from(expand_user(&p)))
}

/// `~` and `~user` at the start of a path, as `os.path.expanduser`.
pub(crate) fn expand_user(p: &str) -> String {
    let Some(rest) = p.strip_prefix('~') else {
        return p.to_string();
    };
    let (user, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let home = if user.is_empty() {
        std::env::var("HOME").ok()
    } else {
        nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.dir.display().to_string())
    };
    match home {
        Some(h) if tail.is_empty() => h,
        Some(h) => format!("{}/{tail}", h.trim_end_matches('/')),
        None => p.to_string(),
    }
}

fn absolute(path: &Path) -> Result<(), ExecError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(ExecError::Execution(format!(
            "File path must be absolute: {}",
            path.display()
        )))
    }
}

fn file_exists<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move { Ok(Outcome::ok(json!(path_of(c, "path")?.is_file()))) })
}

fn directory_exists<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move { Ok(Outcome::ok(json!(path_of(c, "path")?.is_dir()))) })
}

fn get_hash<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        let form = c.str_arg("form")?.unwrap_or_else(|| "sha256".into());
        Ok(Outcome::ok(json!(
            blocking(move || hash_file(&path, &form)).await?
        )))
    })
}

fn chown<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        let user = c.str_arg("user")?.filter(|s| !s.is_empty());
        let group = c.str_arg("group")?.filter(|s| !s.is_empty());
        let ret = blocking(move || {
            let mut err = String::new();
            let uid = match user.as_deref().map(uid_for) {
                Some(Err(_)) => {
                    err.push_str("User does not exist\n");
                    None
                }
                other => other.and_then(Result::ok),
            };
            let gid = match group.as_deref().map(gid_for) {
                Some(Err(_)) => {
                    err.push_str("Group does not exist\n");
                    None
                }
                other => other.and_then(Result::ok),
            };
            if std::fs::symlink_metadata(&path).is_err() {
                err.push_str("File not found");
            }
            if !err.is_empty() {
                return Ok(json!(err));
            }
            let r = if path.exists() {
                std::os::unix::fs::chown(&path, uid, gid)
            } else {
                std::os::unix::fs::lchown(&path, uid, gid)
            };
            r.map(|_| Value::Null).map_err(|e| io_msg(&path, e))
        })
        .await?;
        Ok(Outcome::ok(ret))
    })
}

fn set_mode<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        let mode = c
            .arg("mode")
            .map(parse_mode)
            .transpose()
            .map_err(ExecError::Execution)?
            .ok_or_else(|| ExecError::InvalidArgs("mode must be given".into()))?;
        let ret = blocking(move || {
            if !path.exists() {
                return Err(format!("{}: File not found", path.display()));
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io_msg(&path, e))?;
            let m = std::fs::metadata(&path).map_err(|e| io_msg(&path, e))?;
            Ok(mode_str(m.mode()))
        })
        .await?;
        Ok(Outcome::ok(json!(ret)))
    })
}

/// One key of `file.stats` (`get_mode`, `get_user`, `get_group`).
async fn stat_key(c: &Call<'_>, key: &'static str) -> Result<Outcome, ExecError> {
    let path = path_of(c, "path")?;
    let follow = c.bool_arg("follow_symlinks", true)?;
    let st = blocking(move || stats(&path, None, follow)).await?;
    Ok(Outcome::ok(st[key].clone()))
}

fn get_mode<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(stat_key(c, "mode"))
}

fn get_user<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(stat_key(c, "user"))
}

fn get_group<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(stat_key(c, "group"))
}

fn touch<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "name")?;
        let atime = c.f64_arg("atime")?;
        let mtime = c.f64_arg("mtime")?;
        blocking(move || touch_path(&path, atime, mtime)).await?;
        Ok(Outcome::ok(json!(true)))
    })
}

fn remove<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        absolute(&path)?;
        if path.parent().is_none() {
            return Err(ExecError::Execution("Refusing to remove \"/\"".into()));
        }
        Ok(Outcome::ok(json!(
            blocking(move || remove_path(&path)).await?
        )))
    })
}

fn read<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        let text = blocking(move || {
            std::fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        format!("[Errno 2] No such file or directory: '{}'", path.display())
                    }
                    _ => io_msg(&path, e),
                })
        })
        .await?;
        Ok(Outcome::ok(json!(text)))
    })
}

/// The lines of `*args` (or `args=`) as text, each ending in a newline.
fn lines_of(c: &Call<'_>) -> Vec<String> {
    let mut items: Vec<Value> = c.args.varargs.clone();
    match c.args.kwargs.get("args") {
        Some(Value::Array(a)) => items.extend(a.iter().cloned()),
        Some(v) if !v.is_null() => items.push(v.clone()),
        _ => {}
    }
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => format!("{s}\n"),
            other => format!("{other}\n"),
        })
        .collect()
}

fn write<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        let lines = lines_of(c);
        let n = lines.len();
        let shown = path.display().to_string();
        blocking(move || std::fs::write(&path, lines.concat()).map_err(|e| io_msg(&path, e)))
            .await?;
        Ok(Outcome::ok(json!(format!(
            "Wrote {n} lines to \"{shown}\""
        ))))
    })
}

/// Append `lines` to `path`, starting on a new line.
pub(crate) fn append_lines(path: &Path, lines: &[String]) -> Result<(), String> {
    let ends_open = std::fs::read(path)
        .map(|b| b.last().is_some_and(|l| *l != b'\n'))
        .unwrap_or(false);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_msg(path, e))?;
    let mut text = String::new();
    if ends_open {
        text.push('\n');
    }
    text.push_str(&lines.concat());
    f.write_all(text.as_bytes()).map_err(|e| io_msg(path, e))
}

fn append<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        let lines = lines_of(c);
        let n = lines.len();
        let shown = path.display().to_string();
        blocking(move || append_lines(&path, &lines)).await?;
        Ok(Outcome::ok(json!(format!(
            "Wrote {n} lines to \"{shown}\""
        ))))
    })
}

/// `backup=` of `file.replace`, `file.blockreplace`, `file.line` (exec
/// and state): a suffix; `True` is `.bak`; `False`/`''` none; absent is
/// `default`.
pub(crate) fn backup_suffix(v: Option<&Value>, default: Option<&str>) -> Option<String> {
    match v {
        None | Some(Value::Null) => default.map(str::to_string),
        Some(Value::Bool(b)) => b.then(|| ".bak".to_string()),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "" | "false" | "no" | "off" => None,
            "true" | "yes" | "on" => Some(".bak".into()),
            _ => Some(s.clone()),
        },
        Some(other) => Some(other.to_string()),
    }
}

/// Salt's return of the editing functions: the diff, or with
/// `show_changes=False` whether there was one.
fn diff_or_changed(diff: String, show_changes: bool) -> Outcome {
    Outcome::ok(if show_changes {
        json!(diff)
    } else {
        json!(!diff.is_empty())
    })
}

fn count_arg(c: &Call<'_>) -> Result<usize, ExecError> {
    Ok(c.f64_arg("count")?.map_or(0, |n| n.max(0.0) as usize))
}

fn replace<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        let spec = ReplaceSpec {
            pattern: c.str_arg("pattern")?.unwrap_or_default(),
            repl: c.str_arg("repl")?.unwrap_or_default(),
            count: count_arg(c)?,
            flags: parse_flags(c.arg("flags")).map_err(ExecError::Execution)?,
            append_if_not_found: c.bool_arg("append_if_not_found", false)?,
            prepend_if_not_found: c.bool_arg("prepend_if_not_found", false)?,
            not_found_content: c.str_arg("not_found_content")?,
            backslash_literal: c.bool_arg("backslash_literal", false)?,
        };
        let search_only = c.bool_arg("search_only", false)?;
        let dry_run = c.bool_arg("dry_run", false)? || search_only;
        let show_changes = c.bool_arg("show_changes", true)?;
        let ignore_missing = c.bool_arg("ignore_if_missing", false)?;
        let backup = backup_suffix(c.arg("backup"), Some(".bak"));
        if search_only {
            let found = blocking(move || {
                if !path.is_file() {
                    if ignore_missing {
                        return Ok(false);
                    }
                    return Err(format!("File not found: {}", path.display()));
                }
                let text = read_text(&path)?;
                Ok(compile(&spec.pattern, spec.flags)?.is_match(&text))
            })
            .await?;
            return Ok(Outcome::ok(json!(found)));
        }
        let diff = blocking(move || {
            if ignore_missing && !path.is_file() {
                return Ok(String::new());
            }
            edit_file(&path, dry_run, backup.as_deref(), |t| {
                replace_text(t, &spec)
            })
        })
        .await?;
        Ok(diff_or_changed(diff, show_changes))
    })
}

fn blockreplace<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        let spec = BlockSpec {
            marker_start: c
                .str_arg("marker_start")?
                .unwrap_or_else(|| "#-- start managed zone --".into()),
            marker_end: c
                .str_arg("marker_end")?
                .unwrap_or_else(|| "#-- end managed zone --".into()),
            content: c.str_arg("content")?.unwrap_or_default(),
            append_if_not_found: c.bool_arg("append_if_not_found", false)?,
            prepend_if_not_found: c.bool_arg("prepend_if_not_found", false)?,
            append_newline: match c.arg("append_newline") {
                None => None,
                Some(_) => Some(c.bool_arg("append_newline", true)?),
            },
        };
        let dry_run = c.bool_arg("dry_run", false)?;
        let show_changes = c.bool_arg("show_changes", true)?;
        let backup = backup_suffix(c.arg("backup"), Some(".bak"));
        let diff = blocking(move || {
            edit_file(&path, dry_run, backup.as_deref(), |t| {
                blockreplace_text(t, &spec)
            })
        })
        .await?;
        Ok(diff_or_changed(diff, show_changes))
    })
}

/// `file.line`'s arguments (exec and state take the same).
pub(crate) fn line_spec(get: impl Fn(&str) -> Option<String>, indent: bool) -> LineSpec {
    LineSpec {
        content: get("content"),
        matching: get("match"),
        mode: get("mode").unwrap_or_default(),
        location: get("location"),
        before: get("before"),
        after: get("after"),
        indent,
    }
}

fn line<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        let spec = line_spec(|k| c.str_arg(k).ok().flatten(), c.bool_arg("indent", true)?);
        let show_changes = c.bool_arg("show_changes", true)?;
        let backup = backup_suffix(c.arg("backup"), None);
        let diff =
            blocking(move || edit_file(&path, false, backup.as_deref(), |t| line_text(t, &spec)))
                .await?;
        Ok(diff_or_changed(diff, show_changes))
    })
}

fn search<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        let pattern = c.str_arg("pattern")?.unwrap_or_default();
        let mut flags = parse_flags(c.arg("flags")).map_err(ExecError::Execution)?;
        if c.bool_arg("multiline", false)? {
            flags |= 8 | 16;
        }
        let ignore_missing = c.bool_arg("ignore_if_missing", false)?;
        let found = blocking(move || {
            if !path.is_file() {
                if ignore_missing {
                    return Ok(false);
                }
                return Err(format!("File not found: {}", path.display()));
            }
            Ok(compile(&pattern, flags)?.is_match(&read_text(&path)?))
        })
        .await?;
        Ok(Outcome::ok(json!(found)))
    })
}

fn stats_fn<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        let hash = c.str_arg("hash_type")?;
        let follow = c.bool_arg("follow_symlinks", true)?;
        Ok(Outcome::ok(
            blocking(move || stats(&path, hash.as_deref(), follow)).await?,
        ))
    })
}

fn perms_of(c: &Call<'_>) -> Result<Perms, ExecError> {
    Ok(Perms {
        user: c.str_arg("user")?.filter(|s| !s.is_empty()),
        group: c.str_arg("group")?.filter(|s| !s.is_empty()),
        mode: c
            .arg("mode")
            .map(parse_mode)
            .transpose()
            .map_err(ExecError::Execution)?,
    })
}

fn mkdir<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "dir_path")?;
        absolute(&path)?;
        let perms = perms_of(c)?;
        blocking(move || {
            perms.ids()?;
            if !path.is_dir() {
                std::fs::create_dir_all(&path).map_err(|e| io_msg(&path, e))?;
                check_perms(&path, &perms, true, true)?;
            }
            Ok(())
        })
        .await?;
        Ok(Outcome::ok(json!(true)))
    })
}

fn copy<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let src = path_of(c, "src")?;
        let dst = path_of(c, "dst")?;
        absolute(&src)?;
        absolute(&dst)?;
        let recurse = c.bool_arg("recurse", false)?;
        let remove_existing = c.bool_arg("remove_existing", false)?;
        blocking(move || {
            if !src.exists() {
                return Err(format!("No such file or directory '{}'", src.display()));
            }
            if src.is_dir() && !recurse {
                return Err(format!(
                    "Cannot copy overwriting a directory without recurse flag set to true! ({})",
                    src.display()
                ));
            }
            if remove_existing && dst.exists() {
                remove_path(&dst)?;
            }
            copy_tree(&src, &dst)
        })
        .await?;
        Ok(Outcome::ok(json!(true)))
    })
}

fn symlink<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let src = c.str_arg("src")?.unwrap_or_default();
        let path = path_of(c, "path")?;
        absolute(&path)?;
        let force = c.bool_arg("force", false)? || c.bool_arg("atomic", false)?;
        blocking(move || {
            if std::fs::symlink_metadata(&path).is_ok() {
                if std::fs::read_link(&path).is_ok_and(|t| t == Path::new(&src)) {
                    return Ok(());
                }
                if !force {
                    return Err(format!("File path {} exists", path.display()));
                }
                remove_path(&path)?;
            }
            std::os::unix::fs::symlink(&src, &path)
                .map_err(|e| format!("Could not create '{}': {e}", path.display()))
        })
        .await?;
        Ok(Outcome::ok(json!(true)))
    })
}

fn readlink<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        absolute(&path)?;
        let canon = c.bool_arg("canonicalize", false)?;
        let target = blocking(move || {
            if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err("A valid link was not specified.".into());
            }
            let t = if canon {
                std::fs::canonicalize(&path)
            } else {
                std::fs::read_link(&path)
            };
            t.map(|t| t.display().to_string())
                .map_err(|e| io_msg(&path, e))
        })
        .await?;
        Ok(Outcome::ok(json!(target)))
    })
}

fn contains<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_of(c, "path")?;
        let text = c.str_arg("text")?.unwrap_or_default();
        let found = blocking(move || {
            Ok(std::fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).contains(&text))
                .unwrap_or(false))
        })
        .await?;
        Ok(Outcome::ok(json!(found)))
    })
}

/// A local path, or the cached copy of a `salt://` file.
async fn local_copy(c: &Call<'_>, name: &str, saltenv: &str) -> Result<PathBuf, ExecError> {
    let Some(url) = crate::files::parse_salt_url(name) else {
        return Ok(PathBuf::from(expand_user(name)));
    };
    let env = url.saltenv.unwrap_or_else(|| saltenv.to_string());
    c.ctx
        .files
        .cache_file(&env, &url.path)
        .await
        .map_err(|e| ExecError::Execution(e.to_string()))?
        .ok_or_else(|| ExecError::Execution(format!("Failed to cache {name}")))
}

fn get_diff<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let saltenv = c.str_arg("saltenv")?.unwrap_or_else(|| "base".into());
        let n1 = c.str_arg("file1")?.unwrap_or_default();
        let n2 = c.str_arg("file2")?.unwrap_or_default();
        let p1 = local_copy(c, &n1, &saltenv).await?;
        let p2 = local_copy(c, &n2, &saltenv).await?;
        let names = c.bool_arg("show_filenames", true)?;
        let show = c.bool_arg("show_changes", true)?;
        let diff = blocking(move || {
            let (a, b) = (read_text(&p1)?, read_text(&p2)?);
            Ok(if names {
                unified_diff(&a, &b, &n1, &n2)
            } else {
                unified_diff(&a, &b, "", "")
            })
        })
        .await?;
        Ok(diff_or_changed(diff, show))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::exec::testutil::run;

    async fn call(fun: &str, args: Vec<Value>, kwargs: Value) -> Outcome {
        run(fun, args, kwargs).await
    }

    fn s(p: &Path) -> Value {
        json!(p.display().to_string())
    }

    #[test]
    fn modes_parse_like_salt() {
        assert_eq!(parse_mode(&json!("0644")).unwrap(), 0o644);
        assert_eq!(parse_mode(&json!(644)).unwrap(), 0o644);
        assert_eq!(parse_mode(&json!("2775")).unwrap(), 0o2775);
        assert!(parse_mode(&json!("u+x")).is_err());
        assert!(parse_mode(&json!("99999")).is_err());
        assert_eq!(mode_str(0o100644), "0644");
    }

    #[test]
    fn diffs_look_like_difflib() {
        assert_eq!(unified_diff("a\n", "a\n", "", ""), "");
        assert_eq!(
            unified_diff("a\nb\n", "a\nc\n", "", ""),
            "--- \n+++ \n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
        );
        assert_eq!(
            unified_diff("a\n", "b\n", "x", "y"),
            "--- x\n+++ y\n@@ -1 +1 @@\n-a\n+b\n"
        );
    }

    #[test]
    fn python_replacements() {
        assert_eq!(convert_repl(r"x=\1 \g<n> $5", false), "x=${1} ${n} $$5");
        let spec = ReplaceSpec {
            pattern: r"^(\w+)=.*$".into(),
            repl: r"\1=on".into(),
            flags: 8,
            ..Default::default()
        };
        assert_eq!(replace_text("a=1\nb=2\n", &spec).unwrap(), "a=on\nb=on\n");
        let once = ReplaceSpec { count: 1, ..spec };
        assert_eq!(replace_text("a=1\nb=2\n", &once).unwrap(), "a=on\nb=2\n");
        let app = ReplaceSpec {
            pattern: "^c=.*$".into(),
            repl: "c=3".into(),
            flags: 8,
            append_if_not_found: true,
            ..Default::default()
        };
        let t = replace_text("a=1", &app).unwrap();
        assert_eq!(t, "a=1\nc=3\n");
        assert_eq!(replace_text(&t, &app).unwrap(), t);
        assert_eq!(
            parse_flags(Some(&json!(["IGNORECASE", "MULTILINE"]))).unwrap(),
            10
        );
        assert_eq!(parse_flags(None).unwrap(), 8);
        assert!(parse_flags(Some(&json!("BOGUS"))).is_err());
    }

    #[test]
    fn blocks_are_replaced_appended_or_refused() {
        let b = BlockSpec {
            marker_start: "# START".into(),
            marker_end: "# END".into(),
            content: "x\ny".into(),
            ..Default::default()
        };
        let text = "a\n# START here\nold\n# END\nz\n";
        let out = blockreplace_text(text, &b).unwrap();
        assert_eq!(out, "a\n# START here\nx\ny\n# END\nz\n");
        assert_eq!(blockreplace_text(&out, &b).unwrap(), out);
        assert!(blockreplace_text("a\n", &b)
            .unwrap_err()
            .contains("Markers were not found"));
        let app = BlockSpec {
            append_if_not_found: true,
            ..b.clone()
        };
        assert_eq!(
            blockreplace_text("a", &app).unwrap(),
            "a\n# START\nx\ny\n# END\n"
        );
        assert!(blockreplace_text("# START\nq\n", &b)
            .unwrap_err()
            .contains("Unterminated"));
    }

    #[test]
    fn lines_are_ensured_replaced_inserted_deleted() {
        let spec = |mode: &str, content: Option<&str>| LineSpec {
            content: content.map(str::to_string),
            mode: mode.into(),
            indent: true,
            ..Default::default()
        };
        let text = "[main]\n  a=1\nb=2\n";
        let ensure = LineSpec {
            after: Some(r"^\[main\]".into()),
            ..spec("ensure", Some("x=0"))
        };
        let out = line_text(text, &ensure).unwrap();
        assert_eq!(out, "[main]\nx=0\n  a=1\nb=2\n");
        assert_eq!(line_text(&out, &ensure).unwrap(), out);
        let rep = LineSpec {
            matching: Some("^ *a=".into()),
            ..spec("replace", Some("a=5"))
        };
        assert_eq!(line_text(text, &rep).unwrap(), "[main]\n  a=5\nb=2\n");
        let del = LineSpec {
            matching: Some("^b=".into()),
            ..spec("delete", None)
        };
        assert_eq!(line_text(text, &del).unwrap(), "[main]\n  a=1\n");
        let ins = LineSpec {
            location: Some("end".into()),
            ..spec("insert", Some("c=3"))
        };
        let out = line_text(text, &ins).unwrap();
        assert_eq!(out, "[main]\n  a=1\nb=2\nc=3\n");
        assert_eq!(line_text(&out, &ins).unwrap(), out);
        assert!(line_text(text, &spec("insert", Some("q"))).is_err());
        assert!(line_text(text, &spec("", Some("q")))
            .unwrap_err()
            .contains("Mode was not defined"));
        assert!(line_text(text, &spec("ensure", None)).is_err());
    }

    #[tokio::test]
    async fn write_read_append_hash_and_stats() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.txt");
        let o = call(
            "file.write",
            vec![s(&f), json!("one"), json!("two")],
            json!({}),
        )
        .await;
        assert_eq!(
            o.ret,
            json!(format!("Wrote 2 lines to \"{}\"", f.display()))
        );
        let o = call("file.append", vec![s(&f), json!("three")], json!({})).await;
        assert!(o.success);
        let o = call("file.read", vec![s(&f)], json!({})).await;
        assert_eq!(o.ret, json!("one\ntwo\nthree\n"));
        let o = call("file.get_hash", vec![s(&f)], json!({})).await;
        assert_eq!(
            o.ret,
            json!(hash_bytes(b"one\ntwo\nthree\n", "sha256").unwrap())
        );
        let o = call("file.get_hash", vec![s(&f)], json!({"form": "md5"})).await;
        assert_eq!(o.ret.as_str().unwrap().len(), 32);
        let o = call("file.get_hash", vec![s(&f)], json!({"form": "bogus"})).await;
        assert!(!o.success);
        let o = call("file.set_mode", vec![s(&f), json!("0600")], json!({})).await;
        assert_eq!(o.ret, json!("0600"));
        let o = call("file.get_mode", vec![s(&f)], json!({})).await;
        assert_eq!(o.ret, json!("0600"));
        let o = call("file.stats", vec![s(&f)], json!({"hash_type": "sha1"})).await;
        assert_eq!(o.ret["type"], "file");
        assert_eq!(o.ret["size"], 14);
        assert_eq!(o.ret["mode"], "0600");
        assert_eq!(o.ret["sum"].as_str().unwrap().len(), 40);
        assert!(o.ret["mtime"].as_f64().unwrap() > 0.0);
        let o = call("file.contains", vec![s(&f), json!("two")], json!({})).await;
        assert_eq!(o.ret, json!(true));
        let o = call("file.search", vec![s(&f), json!("^th.ee$")], json!({})).await;
        assert_eq!(o.ret, json!(true));

        let missing = dir.path().join("nope");
        let o = call("file.stats", vec![s(&missing)], json!({})).await;
        assert_eq!(
            o.ret,
            json!(format!("ERROR: Path not found: {}", missing.display()))
        );
        let o = call("file.get_mode", vec![s(&missing)], json!({})).await;
        assert!(!o.success);
        let o = call("file.read", vec![s(&missing)], json!({})).await;
        assert!(o.ret.as_str().unwrap().contains("No such file"));
        let o = call("file.file_exists", vec![s(&missing)], json!({})).await;
        assert_eq!(o.ret, json!(false));
        let o = call("file.directory_exists", vec![s(dir.path())], json!({})).await;
        assert_eq!(o.ret, json!(true));
        let o = call("file.remove", vec![s(&missing)], json!({})).await;
        assert_eq!(o.ret, json!(false));
        let o = call("file.remove", vec![s(&f)], json!({})).await;
        assert_eq!(o.ret, json!(true));
        assert!(!f.exists());
    }

    #[tokio::test]
    async fn replace_with_backup_and_diff() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("conf");
        std::fs::write(&f, "LogLevel warn\nx\n").unwrap();
        let o = call(
            "file.replace",
            vec![s(&f), json!("LogLevel warn"), json!("LogLevel info")],
            json!({}),
        )
        .await;
        assert_eq!(
            o.ret,
            json!("--- \n+++ \n@@ -1,2 +1,2 @@\n-LogLevel warn\n+LogLevel info\n x\n")
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "LogLevel info\nx\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("conf.bak")).unwrap(),
            "LogLevel warn\nx\n"
        );
        let o = call(
            "file.replace",
            vec![s(&f), json!("LogLevel warn"), json!("LogLevel info")],
            json!({"show_changes": false}),
        )
        .await;
        assert_eq!(o.ret, json!(false));
        let o = call(
            "file.replace",
            vec![s(&dir.path().join("nope")), json!("a"), json!("b")],
            json!({}),
        )
        .await;
        assert!(o.ret.as_str().unwrap().starts_with("ERROR: File not found"));
    }

    #[tokio::test]
    async fn chown_mkdir_copy_symlink_readlink_touch() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        let o = call("file.touch", vec![s(&f)], json!({"mtime": 1000})).await;
        assert_eq!(o.ret, json!(true));
        assert_eq!(std::fs::metadata(&f).unwrap().mtime(), 1000);
        let o = call(
            "file.chown",
            vec![s(&f), json!("nobody"), json!("root")],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, Value::Null);
        let o = call("file.get_user", vec![s(&f)], json!({})).await;
        assert_eq!(o.ret, json!("nobody"));
        let o = call("file.get_group", vec![s(&f)], json!({})).await;
        assert_eq!(o.ret, json!("root"));
        let o = call(
            "file.chown",
            vec![s(&f), json!("brine-test-nosuchuser"), json!("root")],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, json!("User does not exist\n"));

        let d = dir.path().join("a/b");
        let o = call("file.mkdir", vec![s(&d)], json!({"mode": "0750"})).await;
        assert_eq!(o.ret, json!(true));
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o7777, 0o750);

        let g = dir.path().join("g");
        let o = call("file.copy", vec![s(&f), s(&g)], json!({})).await;
        assert_eq!(o.ret, json!(true));
        assert!(g.is_file());
        let o = call(
            "file.copy",
            vec![s(&dir.path().join("a")), s(&dir.path().join("c"))],
            json!({}),
        )
        .await;
        assert!(!o.success);
        let o = call(
            "file.copy",
            vec![s(&dir.path().join("a")), s(&dir.path().join("c"))],
            json!({"recurse": true}),
        )
        .await;
        assert_eq!(o.ret, json!(true));
        assert!(dir.path().join("c/b").is_dir());

        let l = dir.path().join("l");
        let o = call("file.symlink", vec![s(&f), s(&l)], json!({})).await;
        assert_eq!(o.ret, json!(true));
        let o = call("file.readlink", vec![s(&l)], json!({})).await;
        assert_eq!(o.ret, s(&f));
        let o = call("file.symlink", vec![s(&g), s(&l)], json!({})).await;
        assert!(!o.success);
        let o = call("file.symlink", vec![s(&g), s(&l)], json!({"force": true})).await;
        assert_eq!(o.ret, json!(true));
        let o = call("file.readlink", vec![s(&f)], json!({})).await;
        assert_eq!(o.ret, json!("ERROR: A valid link was not specified."));
        let o = call("file.get_diff", vec![s(&f), s(&g)], json!({})).await;
        assert_eq!(o.ret, json!(""));
    }
}
