//! `salt-cp`: copy local files (directories recursively) to the minions a
//! target matches, the way Salt's chunked `salt-cp` does.
//!
//! Each file goes out in chunks of [`SALT_CP_CHUNK_SIZE`] bytes (Salt's
//! `salt_cp_chunk_size`), each gzip-compressed unless `-n` and base64
//! encoded, as one `cp.recv_chunked` job per chunk; the next chunk is
//! published only once every expected minion returned the previous one (or
//! `-t` passed), so memory holds one chunk whatever the file's size. The
//! first chunk of a file goes to the target; the following ones only to the
//! minions that took every chunk so far (a minion that failed or did not
//! return is not sent the rest, which would corrupt its copy). Empty
//! directories are created with `cp.recv_chunked DEST None`.
//!
//! Output is Salt's `{minion: {remote_path: True | error}}`, printed once
//! at the end through the outputters; the exit code is 20 when a minion did
//! not return, 1 when one failed, 2 when nothing matched.
//!
//! As in Salt, `-C` is `--chunked` here (accepted; copies are always
//! chunked); compound targeting is `--compound` (long form only).
//!
//! # Layout
//! The pure parts are beside the driver and unit-tested: the command line
//! ([`CpArgs`]), the file list ([`collect`]), where each file lands
//! ([`Plan::remote_path`]) and the chunks of a file ([`Chunks`]).

use crate::output::{NoReturn, OutputArgs, Printer};
use base64::Engine;
use brine_common::client::{ClientError, LocalClient};
use brine_common::exit;
use brine_common::proto::client::{Expected, PublishRequest};
use brine_common::proto::TargetType;
use clap::Parser;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes of a file per `cp.recv_chunked` job (Salt's master default of
/// `salt_cp_chunk_size`).
pub const SALT_CP_CHUNK_SIZE: usize = 98_304;
/// Directory depth `salt-cp` descends at most (symlinks are followed).
pub const MAX_DEPTH: usize = 64;
/// Files and directories one run may copy at most.
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "salt-cp",
    version,
    about = "Copy local files to the minions a target matches",
    override_usage = "salt-cp [OPTIONS] '<target>' SOURCE [SOURCE...] DEST"
)]
pub struct CpArgs {
    #[command(flatten)]
    pub client: brine_common::cli::ClientArgs,
    #[command(flatten)]
    pub flags: crate::cli::salt::args::TargetFlags,
    /// Target is a compound expression (-C is --chunked in salt-cp).
    #[arg(long = "compound", group = "tt")]
    pub compound: bool,
    /// Seconds to wait for the minions' answer to each chunk.
    #[arg(short = 't', long)]
    pub timeout: Option<u64>,
    /// Chunked copy (accepted; salt-cp always copies in chunks).
    #[arg(short = 'C', long = "chunked")]
    pub chunked: bool,
    /// Do not gzip the chunks.
    #[arg(short = 'n', long = "no-compression")]
    pub no_compression: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Target expression.
    pub target: String,
    /// One or more local files or directories, then the destination on the
    /// minions.
    #[arg(required = true, num_args = 2.., value_name = "SOURCE... DEST")]
    pub paths: Vec<String>,
}

impl CpArgs {
    pub fn tgt_type(&self) -> TargetType {
        self.flags.tgt_type(self.compound)
    }

    /// The sources (all but the last path) and the destination.
    pub fn sources_and_dest(&self) -> (&[String], &str) {
        match self.paths.split_last() {
            Some((dest, sources)) => (sources, dest.as_str()),
            None => (&[], ""),
        }
    }
}

/// Why the files to copy could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum CpError {
    #[error("{0} does not exist")]
    Missing(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: more than {MAX_DEPTH} directories deep (a symlink loop?)")]
    TooDeep(String),
    #[error("more than {MAX_ENTRIES} files and directories to copy")]
    TooMany,
}

/// One file to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Which command-line source it came from.
    pub src: usize,
    /// The path to read.
    pub path: PathBuf,
    /// Its path under that source (empty: the source itself).
    pub rel: String,
    /// Permission bits, sent with the first chunk.
    pub mode: u32,
}

/// Files (sorted by path) and empty directories under the sources.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileList {
    pub files: Vec<Source>,
    pub empty_dirs: Vec<Source>,
}

/// List what `sources` hold, following symlinks, at most [`MAX_DEPTH`]
/// deep and [`MAX_ENTRIES`] entries.
pub fn collect(sources: &[String]) -> Result<FileList, CpError> {
    let mut files = BTreeMap::new();
    let mut empty = BTreeMap::new();
    let mut count = 0usize;
    for (i, s) in sources.iter().enumerate() {
        let root = PathBuf::from(s);
        let mut stack = vec![(root, String::new(), 0usize)];
        // Each round takes one path off the stack; entries are capped.
        while let Some((path, rel, depth)) = stack.pop() {
            count += 1;
            if count > MAX_ENTRIES {
                return Err(CpError::TooMany);
            }
            let io = |source| CpError::Io {
                path: path.display().to_string(),
                source,
            };
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(CpError::Missing(path.display().to_string()))
                }
                Err(e) => return Err(io(e)),
            };
            let entry = Source {
                src: i,
                path: path.clone(),
                rel: rel.clone(),
                mode: std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
            };
            if !meta.is_dir() {
                files.entry(path).or_insert(entry);
                continue;
            }
            if depth >= MAX_DEPTH {
                return Err(CpError::TooDeep(path.display().to_string()));
            }
            let mut names: Vec<String> = std::fs::read_dir(&path)
                .map_err(io)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()
                .map_err(io)?;
            if names.is_empty() {
                empty.entry(path.clone()).or_insert(entry);
            }
            names.sort();
            for name in names.into_iter().rev() {
                let child_rel = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((path.join(&name), child_rel, depth + 1));
            }
        }
    }
    Ok(FileList {
        files: files.into_values().collect(),
        empty_dirs: empty.into_values().collect(),
    })
}

/// Join like Python's `os.path.join` for relative parts: no doubled `/`,
/// empty parts add nothing.
fn join(base: &str, part: &str) -> String {
    if part.is_empty() {
        base.to_string()
    } else if base.ends_with('/') || base.is_empty() {
        format!("{base}{part}")
    } else {
        format!("{base}/{part}")
    }
}

/// The last name of a source as given (`dir/` → ``, as Python's
/// `basename`; `.` → ``).
fn basename(path: &str) -> &str {
    match path.rsplit('/').next() {
        Some(".") | None => "",
        Some(b) => b,
    }
}

/// Where the files of one run land on the minions.
#[derive(Debug, Clone)]
pub struct Plan {
    pub sources: Vec<String>,
    pub dest: String,
    /// Salt's rule: several files, any empty directory, or a destination
    /// ending in `/` make the destination a directory.
    pub dest_is_dir: bool,
}

impl Plan {
    pub fn new(sources: &[String], dest: &str, list: &FileList) -> Plan {
        Plan {
            sources: sources.to_vec(),
            dest: dest.to_string(),
            dest_is_dir: !list.empty_dirs.is_empty() || list.files.len() > 1 || dest.ends_with('/'),
        }
    }

    /// A source named on the command line lands at `dest` (or in it, when
    /// it is a directory); a file found under a source directory lands at
    /// `dest/<source's name>/<its path under the source>`.
    pub fn remote_path(&self, s: &Source) -> String {
        let src = self.sources.get(s.src).map(String::as_str).unwrap_or("");
        if s.rel.is_empty() {
            if self.dest_is_dir {
                join(&self.dest, basename(src))
            } else {
                self.dest.clone()
            }
        } else {
            join(&join(&self.dest, basename(src)), &s.rel)
        }
    }
}

/// The `cp.recv_chunked` chunks of one file: base64 text of each
/// `chunk_size` piece (gzip-compressed when `gzip`). Always at least one
/// (an empty file is one empty chunk); the piece that reaches the size the
/// file had when opened, or its end, is the last.
pub struct Chunks<R: Read> {
    reader: R,
    size: u64,
    read: u64,
    chunk_size: usize,
    gzip: bool,
    done: bool,
}

impl<R: Read> Chunks<R> {
    pub fn new(reader: R, size: u64, chunk_size: usize, gzip: bool) -> Self {
        Chunks {
            reader,
            size,
            read: 0,
            chunk_size: chunk_size.max(1),
            gzip,
            done: false,
        }
    }
}

impl<R: Read> Iterator for Chunks<R> {
    type Item = std::io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = Vec::with_capacity(self.chunk_size);
        let want = u64::try_from(self.chunk_size).unwrap_or(u64::MAX);
        if let Err(e) = (&mut self.reader).take(want).read_to_end(&mut buf) {
            self.done = true;
            return Some(Err(e));
        }
        self.read += buf.len() as u64;
        self.done = buf.len() < self.chunk_size || self.read >= self.size;
        let data = if self.gzip {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(buf.len() / 2 + 64),
                flate2::Compression::default(),
            );
            match enc.write_all(&buf).and_then(|()| enc.finish()) {
                Ok(z) => z,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        } else {
            buf
        };
        Some(Ok(base64::engine::general_purpose::STANDARD.encode(data)))
    }
}

/// Where the master is and its defaults (from the master config).
#[derive(Debug, Clone)]
pub struct MasterRef {
    pub sock_dir: PathBuf,
    pub cachedir: PathBuf,
    pub timeout: u64,
    pub nodegroups: BTreeMap<String, String>,
}

/// What came back from the minions, by minion and remote path.
#[derive(Debug, Default)]
struct Results {
    by_minion: BTreeMap<String, Map<String, Value>>,
    failed: BTreeSet<String>,
    no_return: BTreeSet<String>,
}

impl Results {
    fn record(&mut self, id: &str, path: &str, v: Value) {
        if v != Value::Bool(true) {
            self.failed.insert(id.to_string());
        }
        self.by_minion
            .entry(id.to_string())
            .or_default()
            .insert(path.to_string(), v);
    }

    fn did_not_return(&mut self, m: &Expected, path: &str) {
        let why = match m.via.first() {
            Some(s) => NoReturn::BehindSyndic {
                syndic: s.clone(),
                connected: m.syndic_connected,
            },
            None if m.connected => NoReturn::NoResponse,
            None => NoReturn::NotConnected,
        };
        self.no_return.insert(m.id.clone());
        self.by_minion
            .entry(m.id.clone())
            .or_default()
            .insert(path.to_string(), json!(why.message()));
    }

    fn exit_code(&self) -> i32 {
        if !self.no_return.is_empty() {
            exit::DID_NOT_RETURN
        } else if !self.failed.is_empty() {
            exit::JOB_FAILED
        } else {
            exit::OK
        }
    }
}

/// One `cp.recv_chunked` job: its returns, by minion, within `timeout`;
/// the minions it expected. `Ok(None)`: the target matched nothing.
async fn publish_chunk(
    master: &MasterRef,
    base: &PublishRequest,
    tgt: Option<&[String]>,
    arg: Vec<Value>,
    timeout: Duration,
) -> Result<Option<(Vec<Expected>, BTreeMap<String, Value>)>, ClientError> {
    let mut req = base.clone();
    if let Some(ids) = tgt {
        req.tgt = ids.join(",");
        req.tgt_type = TargetType::List;
    }
    req.arg = arg;
    let mut c = LocalClient::connect(&master.sock_dir, &master.cachedir).await?;
    let published = c.publish(req).await?;
    if published.minions.is_empty() && published.missing.is_empty() {
        return Ok(None);
    }
    let mut expected = published.minions;
    expected.extend(published.missing.into_iter().map(|id| Expected {
        id,
        connected: false,
        via: vec![],
        syndic_connected: false,
    }));
    let wanted: BTreeSet<String> = expected.iter().map(|m| m.id.clone()).collect();
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    // Each round reads one return; it ends when all are in or at the
    // deadline.
    while got.len() < wanted.len() {
        let r = tokio::select! {
            r = c.next_return() => r?,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let Some(r) = r else { break };
        if wanted.contains(&r.id) {
            got.insert(r.id, r.ret);
        }
    }
    Ok(Some((expected, got)))
}

/// Run `salt-cp`; returns the exit code.
pub async fn run(args: CpArgs, master: MasterRef) -> i32 {
    let (sources, dest) = args.sources_and_dest();
    let tgt_type =
        match args
            .flags
            .checked_type("salt-cp", &args.target, args.compound, &master.nodegroups)
        {
            Ok(t) => t,
            Err(code) => return code,
        };
    let list = match collect(sources) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("salt-cp: {e}");
            return exit::USAGE;
        }
    };
    let plan = Plan::new(sources, dest, &list);
    let timeout = Duration::from_secs(args.timeout.unwrap_or(master.timeout).max(1));
    let gzip = !args.no_compression;
    let base = PublishRequest {
        tgt: args.target.clone(),
        tgt_type,
        fun: "cp.recv_chunked".into(),
        arg: vec![],
        kwarg: BTreeMap::new(),
        timeout: timeout.as_secs(),
        user: std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "root".into()),
        delimiter: args.flags.delimiter.clone(),
        trace: false,
    };
    let mut results = Results::default();
    let mut matched_any = false;
    for f in &list.files {
        let remote = plan.remote_path(f);
        let file = match std::fs::File::open(&f.path) {
            Ok(file) => file,
            Err(e) => {
                eprintln!("salt-cp: {}: {e}", f.path.display());
                return exit::USAGE;
            }
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        // The minions that took every chunk so far (None: the first chunk
        // goes to the target).
        let mut took: Option<Vec<String>> = None;
        for (index, chunk) in Chunks::new(file, size, SALT_CP_CHUNK_SIZE, gzip).enumerate() {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("salt-cp: reading {}: {e}", f.path.display());
                    return exit::USAGE;
                }
            };
            let arg = vec![
                json!(remote),
                json!(chunk),
                json!(index > 0),
                json!(gzip),
                json!(f.mode),
            ];
            let answer = match publish_chunk(&master, &base, took.as_deref(), arg, timeout).await {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("salt-cp: {e}");
                    return e.exit_code();
                }
            };
            let Some((expected, got)) = answer else {
                if took.is_none() && !matched_any {
                    eprintln!(
                        "No minions matched the target. No command was sent, no jid was assigned."
                    );
                    return exit::NO_MATCH;
                }
                break;
            };
            matched_any = true;
            let mut ok = Vec::new();
            for m in &expected {
                match got.get(&m.id) {
                    Some(v) => {
                        if *v == Value::Bool(true) {
                            ok.push(m.id.clone());
                        }
                        results.record(&m.id, &remote, v.clone());
                    }
                    None => results.did_not_return(m, &remote),
                }
            }
            if ok.is_empty() {
                break;
            }
            took = Some(ok);
        }
    }
    for d in &list.empty_dirs {
        let remote = plan.remote_path(d);
        let arg = vec![json!(remote), Value::Null];
        match publish_chunk(&master, &base, None, arg, timeout).await {
            Ok(Some((expected, got))) => {
                matched_any = true;
                for m in &expected {
                    match got.get(&m.id) {
                        Some(v) => results.record(&m.id, &remote, v.clone()),
                        None => results.did_not_return(m, &remote),
                    }
                }
            }
            Ok(None) => {
                eprintln!(
                    "No minions matched the target. No command was sent, no jid was assigned."
                );
                return exit::NO_MATCH;
            }
            Err(e) => {
                eprintln!("salt-cp: {e}");
                return e.exit_code();
            }
        }
    }
    if !matched_any {
        return exit::OK;
    }
    let is_tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut printer = Printer::new(std::io::stdout(), args.output.opts(true, is_tty));
    for (id, paths) in &results.by_minion {
        if let Err(e) = printer.minion(id, &Value::Object(paths.clone()), None) {
            eprintln!("salt-cp: output failed: {e}");
            return exit::SOFTWARE;
        }
    }
    if let Err(e) = printer.finish() {
        eprintln!("salt-cp: output failed: {e}");
        return exit::SOFTWARE;
    }
    results.exit_code()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine;

    fn parse(argv: &[&str]) -> Result<CpArgs, clap::Error> {
        CpArgs::try_parse_from(std::iter::once("salt-cp").chain(argv.iter().copied()))
    }

    #[test]
    fn arguments_targets_and_salt_cp_flags() {
        let a = parse(&["*", "a.txt", "b.txt", "/tmp/dest/"]).unwrap();
        assert_eq!(a.tgt_type(), TargetType::Glob);
        let (src, dest) = a.sources_and_dest();
        assert_eq!(src, ["a.txt", "b.txt"]);
        assert_eq!(dest, "/tmp/dest/");
        assert!(!a.no_compression && !a.chunked);

        for (flag, want) in [
            ("-E", TargetType::Pcre),
            ("-L", TargetType::List),
            ("-G", TargetType::Grain),
            ("-P", TargetType::GrainPcre),
            ("-S", TargetType::Ipcidr),
            ("-N", TargetType::Nodegroup),
            ("--compound", TargetType::Compound),
        ] {
            let a = parse(&[flag, "x", "f", "/d"]).unwrap();
            assert_eq!(a.tgt_type(), want, "{flag}");
        }
        // -C is --chunked, as in Salt's salt-cp; -n turns gzip off.
        let a = parse(&["-C", "-n", "-t", "9", "--out", "json", "web*", "f", "/d"]).unwrap();
        assert!(a.chunked && a.no_compression);
        assert_eq!(a.timeout, Some(9));
        assert_eq!(a.tgt_type(), TargetType::Glob);
        assert!(parse(&["*", "only-one"]).is_err(), "a source and a dest");
        assert!(parse(&["-E", "-L", "x", "f", "/d"]).is_err());
        let a = parse(&["-c", "/etc/x", "*", "f", "/d"]).unwrap();
        assert_eq!(a.client.config_dir, PathBuf::from("/etc/x"));
    }

    fn src(i: usize, rel: &str) -> Source {
        Source {
            src: i,
            path: PathBuf::new(),
            rel: rel.into(),
            mode: 0o644,
        }
    }

    fn plan(sources: &[&str], dest: &str, files: usize, empty: usize) -> Plan {
        let list = FileList {
            files: (0..files).map(|_| src(0, "")).collect(),
            empty_dirs: (0..empty).map(|_| src(0, "")).collect(),
        };
        let s: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        Plan::new(&s, dest, &list)
    }

    #[test]
    fn dest_path_rules() {
        // One file: dest is the file's new name, unless it ends in '/'.
        let p = plan(&["/etc/hosts"], "/tmp/h", 1, 0);
        assert!(!p.dest_is_dir);
        assert_eq!(p.remote_path(&src(0, "")), "/tmp/h");
        let p = plan(&["/etc/hosts"], "/tmp/d/", 1, 0);
        assert!(p.dest_is_dir);
        assert_eq!(p.remote_path(&src(0, "")), "/tmp/d/hosts");
        // Several sources (or files, or an empty dir): a directory.
        let p = plan(&["a.txt", "sub/b.txt"], "/tmp/d", 2, 0);
        assert!(p.dest_is_dir);
        assert_eq!(p.remote_path(&src(0, "")), "/tmp/d/a.txt");
        assert_eq!(p.remote_path(&src(1, "")), "/tmp/d/b.txt");
        assert!(plan(&["e"], "/tmp/d", 0, 1).dest_is_dir);
        // Files under a source directory keep its name and their path...
        let p = plan(&["conf"], "/srv", 2, 0);
        assert_eq!(p.remote_path(&src(0, "app/x.conf")), "/srv/conf/app/x.conf");
        // ...unless it is given with a trailing '/' (Python's basename).
        let p = plan(&["conf/"], "/srv", 2, 0);
        assert_eq!(p.remote_path(&src(0, "x.conf")), "/srv/x.conf");
    }

    #[test]
    fn collect_walks_directories_and_finds_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("conf");
        std::fs::create_dir_all(root.join("a/empty")).unwrap();
        std::fs::write(root.join("a/x.txt"), "x").unwrap();
        std::fs::write(root.join("top.txt"), "t").unwrap();
        std::fs::set_permissions(
            root.join("top.txt"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        let one = dir.path().join("one.txt");
        std::fs::write(&one, "1").unwrap();
        let sources = vec![root.display().to_string(), one.display().to_string()];
        let list = collect(&sources).unwrap();
        let rels: Vec<(usize, &str)> = list.files.iter().map(|s| (s.src, s.rel.as_str())).collect();
        assert_eq!(rels, vec![(0, "a/x.txt"), (0, "top.txt"), (1, "")]);
        assert_eq!(list.files[1].mode, 0o640);
        assert_eq!(list.empty_dirs.len(), 1);
        assert_eq!(list.empty_dirs[0].rel, "a/empty");
        let p = Plan::new(&sources, "/dest", &list);
        let remote: Vec<String> = list.files.iter().map(|f| p.remote_path(f)).collect();
        assert_eq!(
            remote,
            vec!["/dest/conf/a/x.txt", "/dest/conf/top.txt", "/dest/one.txt"]
        );
        assert_eq!(p.remote_path(&list.empty_dirs[0]), "/dest/conf/a/empty");

        let missing = vec![dir.path().join("nope").display().to_string()];
        assert!(matches!(collect(&missing), Err(CpError::Missing(_))));
    }

    fn decode(chunks: Vec<String>, gzip: bool) -> Vec<Vec<u8>> {
        chunks
            .into_iter()
            .map(|c| {
                let raw = base64::engine::general_purpose::STANDARD.decode(c).unwrap();
                if gzip {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(raw.as_slice())
                        .read_to_end(&mut out)
                        .unwrap();
                    out
                } else {
                    raw
                }
            })
            .collect()
    }

    #[test]
    fn chunks_cover_the_file_once() {
        let data: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        for gzip in [true, false] {
            let chunks: Vec<String> = Chunks::new(data.as_slice(), 250, 100, gzip)
                .collect::<Result<_, _>>()
                .unwrap();
            let parts = decode(chunks, gzip);
            assert_eq!(
                parts.iter().map(Vec::len).collect::<Vec<_>>(),
                vec![100, 100, 50]
            );
            assert_eq!(parts.concat(), data);
        }
        // An exact multiple ends on its last full chunk; an empty file is
        // one empty chunk.
        let n = Chunks::new(&data[..200], 200, 100, true).count();
        assert_eq!(n, 2);
        let empty: Vec<String> = Chunks::new(&b""[..], 0, 100, true)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decode(empty, true), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn results_exit_codes() {
        let mut r = Results::default();
        r.record("a", "/d", json!(true));
        assert_eq!(r.exit_code(), exit::OK);
        r.record("b", "/d", json!("Permission denied"));
        assert_eq!(r.exit_code(), exit::JOB_FAILED);
        r.did_not_return(
            &Expected {
                id: "c".into(),
                connected: false,
                via: vec![],
                syndic_connected: false,
            },
            "/d",
        );
        assert_eq!(r.exit_code(), exit::DID_NOT_RETURN);
        assert_eq!(
            r.by_minion["c"]["/d"],
            json!("Minion did not return. [Not connected]")
        );
    }
}
