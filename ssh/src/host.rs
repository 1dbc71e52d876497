//! One host's run: connect with `ssh`, make sure this build's runner (the
//! "thin", our `salt-call`) is on the host, run the function through it and
//! answer its file server and pillar questions from the local master
//! config. Invariant: every path ends in one [`HostResult`] (a return, or
//! Salt-ssh's `{retcode, stderr, stdout}` when the host could not run it),
//! and the `ssh` child dies with the future (kill on drop), so a deadline
//! around [`run`] bounds the host completely.

use crate::command::{self, sh_quote, Common, Target};
use crate::remote::Output;
use crate::roster::Host;
use brine_common::config::MasterConfig;
use brine_common::proto::{Refusal, ReplyBody, RequestBody, Role};
use brine_master::state::Counters;
use brine_master::{FileServer, FileServerCtx as FsCtx};
use brine_minion::ssh_run::{read_frame, write_frame, FromRunner, RunSpec, ToRunner, MAX_FRAME};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Exit code of the remote script when the thin is missing (then it is
/// uploaded and the run tried once more).
pub const NO_THIN: i32 = 120;

/// The runner binary this build uploads.
#[derive(Debug, Clone)]
pub struct Thin {
    pub path: PathBuf,
    /// First 16 hex digits of its sha256.
    pub short_hash: String,
    /// What is uploaded: `path`, or its copy without debug sections
    /// ([`Thin::strip_debug`]).
    pub upload: PathBuf,
    /// `upload`'s bytes, read at the first upload and shared by every host
    /// (tens of MB: not read again per host, not on a runtime thread).
    loaded: Arc<tokio::sync::OnceCell<Arc<Vec<u8>>>>,
}

impl Thin {
    /// The bytes to upload ([`Thin::upload`]), read once.
    pub async fn upload_bytes(&self) -> std::io::Result<Arc<Vec<u8>>> {
        self.loaded
            .get_or_try_init(|| async {
                let path = self.upload.clone();
                tokio::task::spawn_blocking(move || std::fs::read(path))
                    .await
                    .map_err(std::io::Error::other)?
                    .map(Arc::new)
            })
            .await
            .cloned()
    }

    /// Hash the runner at `path`, without any cache.
    pub fn at(path: PathBuf) -> std::io::Result<Thin> {
        let short_hash = hash_file(&path)?;
        Ok(Thin {
            upload: path.clone(),
            loaded: Default::default(),
            path,
            short_hash,
        })
    }

    /// The runner at `path`, its hash taken from the cache file in
    /// `cache_dir` when the file's (path, size, mtime, inode) are those
    /// recorded there, else computed and recorded. A cache that cannot be
    /// read or written only costs the hashing.
    pub fn cached(path: PathBuf, cache_dir: &Path) -> std::io::Result<Thin> {
        let key = ThinKey::of(&path)?;
        let file = cache_dir.join("thin-hash.json");
        let known: Option<ThinRecord> = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(r) = known.filter(|r| r.key == key) {
            tracing::debug!(hash = %r.short_hash, "runner hash from the cache");
            return Ok(Thin {
                upload: path.clone(),
                loaded: Default::default(),
                path,
                short_hash: r.short_hash,
            });
        }
        let short_hash = hash_file(&path)?;
        // Hashed while unchanged? Otherwise do not record it.
        if ThinKey::of(&path).ok().as_ref() == Some(&key) {
            let rec = ThinRecord {
                key,
                short_hash: short_hash.clone(),
            };
            if let Err(e) = write_record(cache_dir, &file, &rec) {
                tracing::debug!(error = %e, file = %file.display(), "runner hash not cached");
            }
        }
        Ok(Thin {
            upload: path.clone(),
            loaded: Default::default(),
            path,
            short_hash,
        })
    }

    /// Upload a copy without debug sections (a release build keeps line
    /// tables: ~4x the size to send to every host on first contact), made
    /// once per runner version with `objcopy --strip-debug` under
    /// `cache_dir/thin/<short hash>/` (older versions' copies removed).
    /// Without `objcopy` (binutils) or when it fails, the runner is sent
    /// as it is. The name on the host stays the hash of the runner itself.
    pub fn strip_debug(&mut self, cache_dir: &Path) {
        // What was read (if anything) was the other file.
        self.loaded = Default::default();
        let root = cache_dir.join("thin");
        let dir = root.join(&self.short_hash);
        let copy = dir.join("salt-call");
        if copy.is_file() {
            self.upload = copy;
            return;
        }
        for old in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir_all(old.path());
        }
        let tmp = dir.join(format!("salt-call.{}", std::process::id()));
        let made = std::fs::create_dir_all(&dir).is_ok()
            && std::process::Command::new("objcopy")
                .arg("--strip-debug")
                .arg(&self.path)
                .arg(&tmp)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|st| st.success())
            && std::fs::rename(&tmp, &copy).is_ok();
        if made {
            self.upload = copy;
        } else {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(runner = %self.path.display(), "runner uploaded with its debug sections (objcopy unavailable)");
        }
    }
}

/// What identifies one version of the runner file without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ThinKey {
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    dev: u64,
    ino: u64,
}

impl ThinKey {
    fn of(path: &Path) -> std::io::Result<ThinKey> {
        use std::os::unix::fs::MetadataExt;
        let abs = std::fs::canonicalize(path)?;
        let m = std::fs::metadata(&abs)?;
        Ok(ThinKey {
            path: abs,
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ThinRecord {
    key: ThinKey,
    short_hash: String,
}

fn write_record(dir: &Path, file: &Path, rec: &ThinRecord) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("thin-hash.json.{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec(rec).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, file)
}

/// First 16 hex digits of the sha256 of the file at `path` (streamed).
fn hash_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    // Bounded by the file's length.
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize())[..16].to_string())
}

/// What a run does on each host.
#[derive(Debug, Clone)]
pub enum Job {
    Fun {
        fun: String,
        args: Vec<Value>,
        kwargs: BTreeMap<String, Value>,
    },
    /// `-r`: a shell command.
    Raw(String),
}

/// Settings shared by every host of one run.
pub struct Env {
    pub common: Common,
    pub thin: Thin,
    pub master: Arc<MasterConfig>,
    pub files: Arc<FileServer>,
    pub counters: Counters,
    pub user: String,
    pub privkey: Option<PathBuf>,
    pub passwd: Option<String>,
    pub timeout: u64,
    /// Port of hosts whose roster entry names none (`ssh_port`).
    pub port: u16,
    /// Sudo for hosts whose roster entry does not say (`ssh_sudo`).
    pub sudo: bool,
    pub thin_dir: Option<String>,
    pub key_deploy: bool,
    pub log_level: String,
}

/// One host's outcome.
#[derive(Debug, Clone)]
pub struct HostResult {
    pub id: String,
    pub ret: Value,
    pub retcode: i32,
    pub success: bool,
    pub out: Option<String>,
    /// The thin was uploaded during this run.
    pub uploaded: bool,
}

impl HostResult {
    /// Salt-ssh's shape for a host that could not run the function.
    pub fn failed(id: &str, retcode: i32, stderr: &str, stdout: &str) -> HostResult {
        HostResult {
            id: id.to_string(),
            ret: json!({"retcode": retcode, "stderr": stderr, "stdout": stdout}),
            retcode: if retcode == 0 { 1 } else { retcode },
            success: false,
            out: None,
            uploaded: false,
        }
    }
}

/// Where the thin lives on `h`.
pub fn thin_dir(env: &Env, h: &Host, user: &str) -> String {
    if let Some(d) = h.thin_dir.as_ref().or(env.thin_dir.as_ref()) {
        return d.clone();
    }
    let root = h.root_dir.as_deref().unwrap_or("").trim_end_matches('/');
    format!("{root}/var/tmp/.{user}_brine")
}

fn target(env: &Env, h: &Host) -> Target {
    Target {
        host: h.host.clone(),
        port: h.port.unwrap_or(env.port),
        user: h.user.clone().unwrap_or_else(|| env.user.clone()),
        privkey: h.privkey.clone().or_else(|| env.privkey.clone()),
        passwd: h.passwd.clone().or_else(|| env.passwd.clone()),
        connect_timeout: h.timeout.unwrap_or(env.timeout),
        ssh_options: h.ssh_options.clone(),
    }
}

/// The minion options of the runner on `h`: everything it writes goes
/// under the thin dir's `running_data` (so under `root_dir` too).
pub fn runner_opts(h: &Host, thin_dir: &str) -> (Map<String, Value>, String) {
    let data = format!("{thin_dir}/running_data");
    let mut o = Map::new();
    o.insert(
        "cachedir".into(),
        json!(format!("{data}/var/cache/salt/minion")),
    );
    o.insert(
        "pki_dir".into(),
        json!(format!("{data}/etc/salt/pki/minion")),
    );
    for (k, v) in &h.minion_opts {
        o.insert(k.clone(), v.clone());
    }
    o.insert("id".into(), json!(h.id));
    (o, format!("{data}/etc/salt"))
}

/// Run `remote` with `input` on stdin and collect everything.
async fn exec(env: &Env, t: &Target, remote: &str, input: &[u8], pw: bool) -> Output {
    crate::remote::exec(&env.common, t, remote, input, pw).await
}

/// Answer one question of the runner on host `id`.
async fn answer(env: &Env, id: &str, grains: &Value, body: RequestBody) -> ReplyBody {
    match body {
        b @ (RequestBody::FileFind { .. }
        | RequestBody::FileChunk { .. }
        | RequestBody::FileList { .. }) => {
            let cx = FsCtx {
                counters: &env.counters,
                upstream: None,
            };
            env.files.answer(cx, id, Role::Minion, b).await
        }
        RequestBody::Pillar { pillarenv } => {
            let (cfg, id, grains) = (env.master.clone(), id.to_string(), grains.clone());
            let r = tokio::task::spawn_blocking(move || {
                brine_master::compile_pillar(&cfg, &id, &grains, pillarenv.as_deref())
            })
            .await;
            match r {
                Ok(Ok(p)) => ReplyBody::Pillar((*p).clone()),
                Ok(Err(e)) => ReplyBody::Refused(Refusal::Unavailable(e)),
                Err(e) => ReplyBody::Refused(Refusal::Unavailable(e.to_string())),
            }
        }
        _ => ReplyBody::Refused(Refusal::Unavailable(
            "not available over salt-ssh".to_string(),
        )),
    }
}

/// Run the function through the thin: `Ok(result)`, or the ssh/script
/// exit code and stderr when no `Done` came.
async fn run_thin(
    env: &Env,
    h: &Host,
    t: &Target,
    pw: bool,
    remote: &str,
    spec: &RunSpec,
) -> Result<HostResult, (i32, String)> {
    let mut child = command::command(&env.common, t, remote, pw)
        .spawn()
        .map_err(|e| (255, format!("cannot run ssh: {e}")))?;
    let (Some(mut si), Some(mut so), Some(se)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err((255, "ssh: no pipes".into()));
    };
    let err = tokio::spawn(crate::remote::read_stderr(se));
    let _ = write_frame(&mut si, &ToRunner::Run(spec.clone())).await;
    let mut grains = json!({});
    let mut done = None;
    // Bounded by the channel (and the caller's deadline).
    loop {
        match read_frame::<_, FromRunner>(&mut so, MAX_FRAME).await {
            Ok(Some(FromRunner::Hello { grains: g })) => grains = g,
            Ok(Some(FromRunner::Ask { n, body })) => {
                let body = answer(env, &h.id, &grains, body).await;
                if write_frame(&mut si, &ToRunner::Answer { n, body })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(Some(FromRunner::Done {
                ret,
                retcode,
                success,
                out,
            })) => {
                done = Some(HostResult {
                    id: h.id.clone(),
                    ret,
                    retcode,
                    success,
                    out,
                    uploaded: false,
                });
                break;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(host = %h.id, error = %e, "bad frame from the runner");
                break;
            }
        }
    }
    drop(si);
    let code = crate::remote::exit_code(&mut child).await;
    let stderr = err.await.unwrap_or_default();
    match done {
        Some(d) => Ok(d),
        None => Err((code, stderr)),
    }
}

/// `--key-deploy`: add the public key of `priv` to the host's
/// authorized_keys, logging in with the password.
async fn deploy_key(env: &Env, t: &Target) -> Result<(), String> {
    let Some(k) = &t.privkey else {
        return Err("--key-deploy needs --priv".into());
    };
    let pubfile = PathBuf::from(format!("{}.pub", k.display()));
    let key = std::fs::read(&pubfile).map_err(|e| format!("{}: {e}", pubfile.display()))?;
    let remote = "umask 077; mkdir -p ~/.ssh && cat >> ~/.ssh/authorized_keys";
    let r = exec(env, t, remote, &key, true).await;
    if r.code == 0 {
        Ok(())
    } else {
        Err(r.stderr)
    }
}

/// `script` as the remote command, through `sudo -n sh -c` when `sudo`.
fn as_root(sudo: bool, script: String) -> String {
    if sudo {
        format!("sudo -n sh -c {}", sh_quote(&script))
    } else {
        script
    }
}

fn auth_failed(code: i32, stderr: &str) -> bool {
    code == 255 && stderr.contains("Permission denied")
}

/// Run `job` on host `h`.
pub async fn run(env: &Env, h: &Host, job: &Job) -> HostResult {
    let t = target(env, h);
    let mut pw = t.passwd.is_some() && !env.key_deploy;
    let use_sudo = h.sudo.unwrap_or(env.sudo);
    match job {
        Job::Raw(cmd) => {
            let remote = as_root(use_sudo, cmd.clone());
            let mut r = exec(env, &t, &remote, &[], pw).await;
            if auth_failed(r.code, &r.stderr) && env.key_deploy && t.passwd.is_some() {
                if let Err(e) = deploy_key(env, &t).await {
                    return HostResult::failed(&h.id, 255, &e, "");
                }
                r = exec(env, &t, &remote, &[], pw).await;
            }
            let stdout = String::from_utf8_lossy(&r.stdout).into_owned();
            let mut res = HostResult::failed(&h.id, r.code, &r.stderr, &stdout);
            res.retcode = r.code;
            res.success = r.code == 0;
            res
        }
        Job::Fun { fun, args, kwargs } => {
            let dir = thin_dir(env, h, &t.user);
            let bin_dir = format!("{dir}/brine-{}", env.thin.short_hash);
            let bin = format!("{bin_dir}/salt-call");
            // With sudo the whole check runs as root: the thin it uploads
            // is root's and may be invisible to the login user.
            let script = format!(
                "T={}; [ -x \"$T\" ] || exit {NO_THIN}; exec \"$T\" --ssh-stdio -l {}",
                sh_quote(&bin),
                sh_quote(&env.log_level)
            );
            let remote = as_root(use_sudo, script);
            let (opts, config_dir) = runner_opts(h, &dir);
            let spec = RunSpec {
                fun: fun.clone(),
                args: args.clone(),
                kwargs: kwargs.clone(),
                opts,
                config_dir,
            };
            let mut uploaded = false;
            let mut deployed = false;
            // First try, then at most one upload and one key deploy.
            for _ in 0..3 {
                match run_thin(env, h, &t, pw, &remote, &spec).await {
                    Ok(mut r) => {
                        r.uploaded = uploaded;
                        return r;
                    }
                    Err((code, stderr)) if code == NO_THIN && !uploaded => {
                        let q = sh_quote(&bin_dir);
                        let tmp = format!("{bin_dir}/salt-call.tmp.$$");
                        let script = format!(
                            "mkdir -p {q} && cat > {t} && chmod 700 {t} && mv -f {t} {b}",
                            t = sh_quote(&tmp).replace("$$'", "'$$"),
                            b = sh_quote(&bin)
                        );
                        let remote_up = as_root(use_sudo, script);
                        let bytes = match env.thin.upload_bytes().await {
                            Ok(b) => b,
                            Err(e) => {
                                return HostResult::failed(
                                    &h.id,
                                    1,
                                    &format!("{}: {e}", env.thin.upload.display()),
                                    &stderr,
                                )
                            }
                        };
                        let r = exec(env, &t, &remote_up, &bytes, pw).await;
                        if r.code != 0 {
                            return HostResult::failed(&h.id, r.code, &r.stderr, "");
                        }
                        tracing::info!(host = %h.id, dir = %bin_dir, "thin uploaded");
                        uploaded = true;
                    }
                    Err((code, stderr))
                        if auth_failed(code, &stderr)
                            && env.key_deploy
                            && t.passwd.is_some()
                            && !deployed =>
                    {
                        if let Err(e) = deploy_key(env, &t).await {
                            return HostResult::failed(&h.id, 255, &e, "");
                        }
                        deployed = true;
                        pw = false;
                    }
                    Err((code, stderr)) => return HostResult::failed(&h.id, code, &stderr, ""),
                }
            }
            HostResult::failed(&h.id, 1, "the runner did not start after upload", "")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_writes_under_its_thin_dir() {
        let h = Host {
            id: "h1".into(),
            minion_opts: serde_json::from_value(json!({"log_level": "debug", "id": "evil"}))
                .expect("map"),
            ..Host::default()
        };
        let (o, cfgdir) = runner_opts(&h, "/r/var/tmp/.root_brine");
        assert_eq!(o["id"], json!("h1"));
        assert_eq!(o["log_level"], json!("debug"));
        assert!(o["cachedir"]
            .as_str()
            .expect("str")
            .starts_with("/r/var/tmp/.root_brine/running_data/"));
        assert!(cfgdir.starts_with("/r/var/tmp/.root_brine/"));
    }

    #[test]
    fn thin_hash_is_cached_until_the_file_changes() {
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("salt-call");
        let cache = dir.path().join("cache/salt-ssh");
        std::fs::write(&bin, b"version one").expect("write");
        let a = Thin::cached(bin.clone(), &cache).expect("hash");
        assert_eq!(a.short_hash, Thin::at(bin.clone()).expect("at").short_hash);
        assert!(cache.join("thin-hash.json").exists());
        // A forged record with the same key is believed: proof the cache
        // is read instead of the file.
        let mut rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(cache.join("thin-hash.json")).expect("read"))
                .expect("json");
        rec["short_hash"] = json!("00000000feedface");
        std::fs::write(cache.join("thin-hash.json"), rec.to_string()).expect("forge");
        let b = Thin::cached(bin.clone(), &cache).expect("cached");
        assert_eq!(b.short_hash, "00000000feedface");
        // Another size (and mtime): hashed again and recorded again.
        std::fs::write(&bin, b"version two, longer").expect("write");
        let c = Thin::cached(bin.clone(), &cache).expect("rehash");
        assert_eq!(c.short_hash, Thin::at(bin.clone()).expect("at").short_hash);
        assert_ne!(c.short_hash, a.short_hash);
        // A replaced file (new inode), same size: hashed again.
        let other = dir.path().join("new");
        std::fs::write(&other, b"version 3, longer!!").expect("write");
        std::fs::rename(&other, &bin).expect("rename");
        let d = Thin::cached(bin.clone(), &cache).expect("rehash");
        assert_ne!(d.short_hash, c.short_hash);
        // An unwritable cache only costs the hashing.
        let e = Thin::cached(bin.clone(), Path::new("/proc/brine-nope")).expect("no cache");
        assert_eq!(e.short_hash, d.short_hash);
    }

    #[test]
    fn the_uploaded_runner_is_stripped_once_per_version() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = dir.path().join("cache");
        // A real ELF file with debug sections: this test binary.
        let exe = std::env::current_exe().expect("exe");
        let bin = dir.path().join("salt-call");
        std::fs::copy(&exe, &bin).expect("copy");
        let mut t = Thin::cached(bin.clone(), &cache).expect("hash");
        assert_eq!(t.upload, bin);
        t.strip_debug(&cache);
        if std::process::Command::new("objcopy")
            .arg("--version")
            .output()
            .is_err()
        {
            assert_eq!(t.upload, bin, "no objcopy: sent as it is");
            return;
        }
        let copy = cache.join("thin").join(&t.short_hash).join("salt-call");
        assert_eq!(t.upload, copy);
        let (full, small) = (
            std::fs::metadata(&bin).expect("bin").len(),
            std::fs::metadata(&copy).expect("copy").len(),
        );
        assert!(small < full, "stripped {small} < {full}");
        // A second run takes the copy as it is; another version replaces it.
        let mut again = Thin::cached(bin.clone(), &cache).expect("hash");
        again.strip_debug(&cache);
        assert_eq!(again.upload, copy);
        let stale = cache.join("thin").join("0000000000000000");
        std::fs::create_dir_all(&stale).expect("stale");
        std::fs::remove_file(&copy).expect("rm");
        again.strip_debug(&cache);
        assert!(!stale.exists(), "older versions' copies removed");
        assert_eq!(again.upload, copy);
    }
}
