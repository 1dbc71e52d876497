//! The file server's answers against tempdir roots, and a syndic's against
//! a fake master above (another [`FileServer`] behind a counting
//! [`Upstream`]).

use super::*;
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn write(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, data).expect("write");
}

/// A master config with `base` and `prod` roots under `dir`, 4-byte chunks.
fn config(dir: &Path) -> MasterConfig {
    MasterConfig {
        file_roots: BTreeMap::from([
            ("base".to_string(), vec![dir.join("base")]),
            ("prod".to_string(), vec![dir.join("prod")]),
        ]),
        cachedir: dir.join("cache"),
        file_buffer_size: 4,
        file_recv: true,
        file_recv_max_size: 1,
        ..MasterConfig::default()
    }
}

struct Master {
    dir: tempfile::TempDir,
    fs: FileServer,
    counters: Counters,
}

impl Master {
    fn new() -> Master {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = FileServer::new(&config(dir.path())).expect("file server");
        Master {
            dir,
            fs,
            counters: Counters::default(),
        }
    }

    fn with_cache_bound(max: u64) -> Master {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = FileServer::with_cache_bound(&config(dir.path()), max).expect("file server");
        Master {
            dir,
            fs,
            counters: Counters::default(),
        }
    }

    fn root(&self, env: &str) -> PathBuf {
        self.dir.path().join(env)
    }

    async fn ask(&self, up: Option<&dyn Upstream>, role: Role, body: RequestBody) -> ReplyBody {
        let cx = Ctx {
            counters: &self.counters,
            upstream: up,
        };
        self.fs.answer(cx, "m1", role, body).await
    }

    async fn find(&self, up: Option<&dyn Upstream>, env: &str, path: &str) -> ReplyBody {
        let body = RequestBody::FileFind {
            saltenv: env.into(),
            path: path.into(),
        };
        self.ask(up, Role::Minion, body).await
    }

    async fn chunk(
        &self,
        up: Option<&dyn Upstream>,
        path: &str,
        hash: &str,
        offset: u64,
        len: u32,
    ) -> ReplyBody {
        let body = RequestBody::FileChunk {
            saltenv: "base".into(),
            path: path.into(),
            hash: hash.into(),
            offset,
            len,
        };
        self.ask(up, Role::Minion, body).await
    }

    /// A whole file, chunk by chunk, as a minion fetches it.
    async fn fetch(&self, up: Option<&dyn Upstream>, path: &str, hash: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..1000 {
            match self.chunk(up, path, hash, out.len() as u64, 4).await {
                ReplyBody::FileChunk(b) if b.is_empty() => return out,
                ReplyBody::FileChunk(b) => out.extend_from_slice(&b),
                other => panic!("chunk of {path}: {other:?}"),
            }
        }
        panic!("{path} did not end");
    }

    async fn list(&self, up: Option<&dyn Upstream>, prefix: &str, kind: ListKind) -> ReplyBody {
        let body = RequestBody::FileList {
            saltenv: "base".into(),
            prefix: prefix.into(),
            kind,
        };
        self.ask(up, Role::Minion, body).await
    }

    fn refused_paths(&self) -> u64 {
        self.counters.file_paths_refused.load(Ordering::Relaxed)
    }
}

fn meta(reply: ReplyBody) -> FileMeta {
    match reply {
        ReplyBody::FileMeta(Some(m)) => m,
        other => panic!("expected a file, got {other:?}"),
    }
}

fn is_bad_path(r: &ReplyBody) -> bool {
    matches!(r, ReplyBody::Refused(Refusal::BadPath { .. }))
}

fn is_changed(r: &ReplyBody) -> bool {
    matches!(r, ReplyBody::Refused(Refusal::FileChanged { .. }))
}

/// The master above, as a syndic's link would reach it: every question
/// counted by kind; it can be cut off or made to corrupt chunks.
struct Above {
    top: Master,
    finds: AtomicU64,
    chunks: AtomicU64,
    lists: AtomicU64,
    down: AtomicBool,
    corrupt: AtomicBool,
    /// Chunk requests as (path, offset), in order.
    log: Mutex<Vec<(String, u64)>>,
}

impl Above {
    fn new() -> Above {
        Above {
            top: Master::new(),
            finds: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            down: AtomicBool::new(false),
            corrupt: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
        }
    }

    fn count(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
}

impl Upstream for Above {
    fn ask(
        &self,
        body: RequestBody,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ReplyBody, String>> + Send + '_>>
    {
        Box::pin(async move {
            match &body {
                RequestBody::FileFind { .. } => self.finds.fetch_add(1, Ordering::SeqCst),
                RequestBody::FileChunk { path, offset, .. } => {
                    self.log.lock().expect("log").push((path.clone(), *offset));
                    self.chunks.fetch_add(1, Ordering::SeqCst)
                }
                RequestBody::FileList { .. } => self.lists.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
            // A link takes a while: let concurrent askers pile up.
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err("not signed in to the master above".into());
            }
            let reply = self.top.ask(None, Role::Syndic, body).await;
            Ok(match reply {
                ReplyBody::FileChunk(mut b) if self.corrupt.load(Ordering::SeqCst) => {
                    if let Some(x) = b.first_mut() {
                        *x ^= 0xff;
                    }
                    ReplyBody::FileChunk(b)
                }
                r => r,
            })
        })
    }
}

#[tokio::test]
async fn find_answers_a_files_meta_with_url_and_query_forms() {
    let m = Master::new();
    write(&m.root("base").join("web/index.html"), b"hello");
    write(&m.root("prod").join("web/index.html"), b"prod!!");
    let got = meta(m.find(None, "base", "web/index.html").await);
    assert_eq!(got.path, "web/index.html");
    assert_eq!((got.size, got.hash.clone()), (5, sha(b"hello")));
    assert_eq!(
        meta(m.find(None, "base", "salt://web/index.html").await),
        got
    );
    let prod = meta(
        m.find(None, "base", "salt://web/index.html?saltenv=prod")
            .await,
    );
    assert_eq!(prod.hash, sha(b"prod!!"));
    assert_eq!(
        meta(m.find(None, "prod", "./web//index.html").await).hash,
        prod.hash
    );
    assert_eq!(
        m.find(None, "base", "nope").await,
        ReplyBody::FileMeta(None)
    );
    assert_eq!(
        m.find(None, "qa", "web/index.html").await,
        ReplyBody::FileMeta(None)
    );
    assert_eq!(m.refused_paths(), 0);
}

#[tokio::test]
async fn hostile_paths_are_refused_and_counted() {
    let m = Master::new();
    write(&m.root("base").join("ok"), b"ok");
    for p in [
        "../../etc/passwd",
        "salt://../../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "",
    ] {
        assert!(is_bad_path(&m.find(None, "base", p).await), "{p:?}");
    }
    assert_eq!(m.refused_paths(), 5);
    let r = m.chunk(None, "../../etc/passwd", &sha(b"x"), 0, 4).await;
    assert!(is_bad_path(&r), "{r:?}");
    let r = m.list(None, "../", ListKind::Files).await;
    assert!(is_bad_path(&r), "{r:?}");
    assert_eq!(m.refused_paths(), 7);
}

#[tokio::test]
async fn a_symlink_out_of_the_root_is_absent_and_counted() {
    let m = Master::new();
    write(&m.dir.path().join("secret"), b"s3cret");
    fs::create_dir_all(m.root("base")).expect("mkdir");
    symlink(m.dir.path().join("secret"), m.root("base").join("passwd")).expect("symlink");
    assert_eq!(
        m.find(None, "base", "passwd").await,
        ReplyBody::FileMeta(None)
    );
    assert_eq!(m.refused_paths(), 1);
    let r = m.chunk(None, "passwd", &sha(b"s3cret"), 0, 4).await;
    assert!(is_changed(&r), "{r:?}");
    assert_eq!(m.refused_paths(), 2);
}

#[tokio::test]
async fn chunks_are_bounded_checked_against_the_hash_and_counted() {
    let m = Master::new();
    let data = b"0123456789";
    write(&m.root("base").join("f"), data);
    let h = sha(data);
    // Asked for 100 bytes: at most file_buffer_size (4) come back.
    assert_eq!(
        m.chunk(None, "f", &h, 0, 100).await,
        ReplyBody::FileChunk(ByteBuf::from(b"0123".to_vec()))
    );
    assert_eq!(
        m.chunk(None, "salt://f", &h, 8, 4).await,
        ReplyBody::FileChunk(ByteBuf::from(b"89".to_vec()))
    );
    assert_eq!(m.fetch(None, "f", &h).await, data);
    assert_eq!(
        m.counters.file_bytes_served.load(Ordering::Relaxed),
        4 + 2 + 10
    );
    assert!(is_changed(&m.chunk(None, "f", &sha(b"old"), 0, 4).await));
    assert!(is_changed(&m.chunk(None, "gone", &h, 0, 4).await));
    let r = m.chunk(None, "f", "../../../etc/passwd", 0, 4).await;
    assert!(is_bad_path(&r), "a hash that is not one: {r:?}");
    write(&m.root("base").join("f"), b"changed!");
    assert!(is_changed(&m.chunk(None, "f", &h, 0, 4).await));
}

#[tokio::test]
async fn listings_answer_each_kind() {
    let m = Master::new();
    write(&m.root("base").join("top.sls"), b"x");
    write(&m.root("base").join("web/init.sls"), b"x");
    fs::create_dir_all(m.root("base").join("empty")).expect("mkdir");
    let files = |v: &[&str]| ReplyBody::FileList(v.iter().map(|s| s.to_string()).collect());
    assert_eq!(
        m.list(None, "", ListKind::Files).await,
        files(&["top.sls", "web/init.sls"])
    );
    assert_eq!(
        m.list(None, "web", ListKind::Files).await,
        files(&["web/init.sls"])
    );
    assert_eq!(
        m.list(None, "", ListKind::Dirs).await,
        files(&["empty", "web"])
    );
    assert_eq!(
        m.list(None, "", ListKind::EmptyDirs).await,
        files(&["empty"])
    );
    assert_eq!(
        m.list(None, "", ListKind::Envs).await,
        files(&["base", "prod"])
    );
}

fn push(path: &str, size: u64, offset: u64, data: &[u8], last: bool) -> RequestBody {
    RequestBody::FilePush(PushChunk {
        path: path.into(),
        size,
        offset,
        data: ByteBuf::from(data.to_vec()),
        last,
    })
}

#[tokio::test]
async fn pushes_are_stored_per_minion_when_allowed() {
    let m = Master::new();
    assert_eq!(
        m.ask(
            None,
            Role::Minion,
            push("/var/log/app.log", 4, 0, b"ab", false)
        )
        .await,
        ReplyBody::Ok
    );
    assert_eq!(
        m.ask(
            None,
            Role::Minion,
            push("/var/log/app.log", 4, 2, b"cd", true)
        )
        .await,
        ReplyBody::Ok
    );
    let dest = m.dir.path().join("cache/minions/m1/files/var/log/app.log");
    assert_eq!(fs::read(dest).expect("pushed"), b"abcd");
    let r = m
        .ask(
            None,
            Role::Minion,
            push("/../../etc/cron.d/x", 1, 0, b"x", true),
        )
        .await;
    assert!(is_bad_path(&r), "{r:?}");
    assert_eq!(m.refused_paths(), 1);
    let r = m
        .ask(None, Role::Minion, push("big", 2 << 20, 0, b"x", false))
        .await;
    assert_eq!(
        r,
        ReplyBody::Refused(Refusal::FileRecvTooLarge { max_mib: 1 })
    );
    let r = m.ask(None, Role::Syndic, push("f", 1, 0, b"x", true)).await;
    assert!(
        matches!(r, ReplyBody::Refused(Refusal::Unavailable(_))),
        "{r:?}"
    );
}

#[tokio::test]
async fn pushes_are_refused_when_file_recv_is_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = MasterConfig {
        file_recv: false,
        ..config(dir.path())
    };
    let fs = FileServer::new(&cfg).expect("file server");
    let counters = Counters::default();
    let cx = Ctx {
        counters: &counters,
        upstream: None,
    };
    let r = fs
        .answer(cx, "m1", Role::Minion, push("f", 1, 0, b"x", true))
        .await;
    assert_eq!(r, ReplyBody::Refused(Refusal::FileRecvDisabled));
    assert!(!dir.path().join("cache/minions").exists());
}

#[tokio::test]
async fn a_syndic_serves_its_own_roots_first_and_lists_the_union() {
    let above = Above::new();
    write(&above.top.root("base").join("both"), b"from the top");
    write(&above.top.root("base").join("only_top"), b"top only");
    let syndic = Master::new();
    write(&syndic.root("base").join("both"), b"from the syndic");
    write(&syndic.root("base").join("only_syndic"), b"syndic only");
    let up: Option<&dyn Upstream> = Some(&above);
    let both = meta(syndic.find(up, "base", "both").await);
    assert_eq!(both.hash, sha(b"from the syndic"));
    assert_eq!(
        above.count(&above.finds),
        0,
        "a local file asks nothing above"
    );
    let top = meta(syndic.find(up, "base", "salt://only_top").await);
    assert_eq!(top.hash, sha(b"top only"));
    assert_eq!(syndic.fetch(up, "only_top", &top.hash).await, b"top only");
    assert_eq!(
        syndic.fetch(up, "both", &both.hash).await,
        b"from the syndic"
    );
    assert_eq!(
        syndic.find(up, "base", "nowhere").await,
        ReplyBody::FileMeta(None)
    );
    let files = syndic.list(up, "", ListKind::Files).await;
    let want = ["both", "only_syndic", "only_top"]
        .map(String::from)
        .to_vec();
    assert_eq!(files, ReplyBody::FileList(want));
}

#[tokio::test]
async fn a_syndic_fetches_each_version_once_for_many_minions() {
    let above = Above::new();
    let data: Vec<u8> = (0..=255u8).cycle().take(41).collect();
    write(&above.top.root("base").join("pkg.tar"), &data);
    let syndic = Arc::new(Master::new());
    let above = Arc::new(above);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (syndic, above) = (syndic.clone(), above.clone());
        let want = data.clone();
        tasks.push(tokio::spawn(async move {
            let up: Option<&dyn Upstream> = Some(&*above);
            let m = meta(syndic.find(up, "base", "pkg.tar").await);
            assert_eq!(syndic.fetch(up, "pkg.tar", &m.hash).await, want);
        }));
    }
    for t in tasks {
        t.await.expect("minion");
    }
    assert_eq!(above.count(&above.finds), 1, "one FileFind for 50 minions");
    // 41 bytes in 4-byte chunks: 11 chunks crossed the link, once.
    assert_eq!(above.count(&above.chunks), 11);
    let offsets: Vec<u64> = above
        .log
        .lock()
        .expect("log")
        .iter()
        .map(|(_, o)| *o)
        .collect();
    assert_eq!(offsets, (0..11).map(|i| i * 4).collect::<Vec<u64>>());
    assert_eq!(
        above.top.counters.file_bytes_served.load(Ordering::Relaxed),
        41,
        "the top sent the file once"
    );
    assert_eq!(
        syndic.counters.file_bytes_served.load(Ordering::Relaxed),
        41 * 50,
        "the syndic served every minion"
    );
    let h = sha(&data);
    let blob = syndic
        .dir
        .path()
        .join("cache/file_cache")
        .join(&h[..2])
        .join(&h);
    assert_eq!(fs::read(blob).expect("blob"), data);
    assert_eq!(syndic.fs.blobs.fills.in_flight(), 0);
}

#[tokio::test]
async fn a_fill_that_does_not_match_its_hash_is_refused_as_changed() {
    let above = Above::new();
    write(&above.top.root("base").join("f"), b"abcdefgh");
    let syndic = Master::new();
    let up: Option<&dyn Upstream> = Some(&above);
    let h = meta(syndic.find(up, "base", "f").await).hash;
    above.corrupt.store(true, Ordering::SeqCst);
    let r = syndic.chunk(up, "f", &h, 0, 4).await;
    assert!(is_changed(&r), "{r:?}");
    assert_eq!(syndic.fs.blobs.lookup(&h), None, "nothing stored");
    let tmp = syndic.dir.path().join("cache/file_cache/tmp");
    assert_eq!(fs::read_dir(tmp).expect("tmp").count(), 0);
    // Once the link behaves, the next ask fills it.
    above.corrupt.store(false, Ordering::SeqCst);
    assert_eq!(syndic.fetch(up, "f", &h).await, b"abcdefgh");
}

#[tokio::test(start_paused = true)]
async fn a_file_changed_above_is_seen_after_the_find_cache_expires() {
    let above = Above::new();
    write(&above.top.root("base").join("f"), b"version 1");
    let syndic = Master::new();
    let up: Option<&dyn Upstream> = Some(&above);
    let v1 = meta(syndic.find(up, "base", "f").await).hash;
    assert_eq!(syndic.fetch(up, "f", &v1).await, b"version 1");
    write(&above.top.root("base").join("f"), b"version two");
    // Within the cache's 2 s the old answer stands, and its blob serves.
    assert_eq!(meta(syndic.find(up, "base", "f").await).hash, v1);
    assert_eq!(syndic.fetch(up, "f", &v1).await, b"version 1");
    tokio::time::advance(cache::FIND_TTL).await;
    let v2 = meta(syndic.find(up, "base", "f").await).hash;
    assert_eq!(v2, sha(b"version two"));
    assert_eq!(syndic.fetch(up, "f", &v2).await, b"version two");
    // A version the top no longer has and the syndic never cached.
    let r = syndic.chunk(up, "f", &sha(b"version 0"), 0, 4).await;
    assert!(is_changed(&r), "{r:?}");
}

#[tokio::test]
async fn an_unreachable_master_above_is_unavailable() {
    let above = Above::new();
    write(&above.top.root("base").join("f"), b"x");
    above.down.store(true, Ordering::SeqCst);
    let syndic = Master::new();
    write(&syndic.root("base").join("local"), b"here");
    let up: Option<&dyn Upstream> = Some(&above);
    let unavailable = |r: &ReplyBody| matches!(r, ReplyBody::Refused(Refusal::Unavailable(_)));
    assert!(unavailable(&syndic.find(up, "base", "f").await));
    assert!(unavailable(&syndic.chunk(up, "f", &sha(b"x"), 0, 4).await));
    assert!(unavailable(&syndic.list(up, "", ListKind::Files).await));
    // Its own files still serve.
    assert_eq!(
        meta(syndic.find(up, "base", "local").await).hash,
        sha(b"here")
    );
}

#[tokio::test]
async fn a_file_larger_than_the_cache_passes_through() {
    let above = Above::new();
    write(&above.top.root("base").join("big"), b"0123456789");
    let syndic = Master::with_cache_bound(8);
    let up: Option<&dyn Upstream> = Some(&above);
    let h = meta(syndic.find(up, "base", "big").await).hash;
    assert_eq!(syndic.fetch(up, "big", &h).await, b"0123456789");
    assert_eq!(syndic.fs.blobs.usage(), (0, 0));
    // 3 data chunks and the empty one at the end, each asked above.
    assert_eq!(above.count(&above.chunks), 4);
}

#[tokio::test]
async fn a_syndic_lists_empty_dirs_of_the_union() {
    let above = Above::new();
    fs::create_dir_all(above.top.root("base").join("e_top")).expect("mkdir");
    write(&above.top.root("base").join("shared/f"), b"x");
    let syndic = Master::new();
    fs::create_dir_all(syndic.root("base").join("shared")).expect("mkdir");
    fs::create_dir_all(syndic.root("base").join("e_syndic")).expect("mkdir");
    let up: Option<&dyn Upstream> = Some(&above);
    let r = syndic.list(up, "", ListKind::EmptyDirs).await;
    assert_eq!(
        r,
        ReplyBody::FileList(vec!["e_syndic".into(), "e_top".into()]),
        "shared is empty on the syndic but not above"
    );
}

/// A whole master on loopback (ports chosen by the OS), all under `dir`.
fn loopback_master(dir: &Path) -> MasterConfig {
    MasterConfig {
        id: "fs_test_master".into(),
        interface: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        publish_port: 0,
        ret_port: 0,
        pki_dir: dir.join("pki"),
        sock_dir: dir.join("sock"),
        root_dir: dir.to_path_buf(),
        log_file: dir.join("master.log"),
        ..config(dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_master_serves_files_and_the_fileserver_runners() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("base/top.sls"), b"base:\n  '*': []\n");
    write(&dir.path().join("base/web/init.sls"), b"x");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let master = crate::master::Master::start(loopback_master(dir.path()), shutdown.clone())
        .await
        .expect("master starts");
    let state = master.state().clone();
    let find = RequestBody::FileFind {
        saltenv: "base".into(),
        path: "salt://top.sls".into(),
    };
    let m = meta(serve(state.clone(), "m1".into(), Role::Minion, find).await);
    assert_eq!(m.hash, sha(b"base:\n  '*': []\n"));
    let bad = RequestBody::FileFind {
        saltenv: "base".into(),
        path: "../etc/passwd".into(),
    };
    assert!(is_bad_path(
        &serve(state.clone(), "m1".into(), Role::Minion, bad).await
    ));
    assert_eq!(
        state.counters().file_paths_refused.load(Ordering::Relaxed),
        1
    );

    let run = |fun: &'static str, args: Vec<serde_json::Value>, kw: &[(&str, &str)]| {
        let state = state.clone();
        let kw: crate::runner::Kw = kw
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        async move { crate::runner::run(&state, fun, &args, &kw).await }
    };
    use serde_json::json;
    let files = run("fileserver.file_list", vec![], &[])
        .await
        .expect("file_list");
    assert_eq!(files, json!(["top.sls", "web/init.sls"]));
    let web = run(
        "fileserver.file_list",
        vec![json!("base")],
        &[("prefix", "web")],
    )
    .await;
    assert_eq!(web.expect("prefix"), json!(["web/init.sls"]));
    let prod = run("fileserver.file_list", vec![], &[("saltenv", "prod")]).await;
    assert_eq!(prod.expect("prod"), json!([]));
    assert_eq!(
        run("fileserver.dir_list", vec![], &[]).await.expect("dirs"),
        json!(["web"])
    );
    assert_eq!(
        run("fileserver.empty_dir_list", vec![], &[])
            .await
            .expect("e"),
        json!([])
    );
    assert_eq!(
        run("fileserver.envs", vec![], &[]).await.expect("envs"),
        json!(["base", "prod"])
    );
    assert_eq!(
        run("fileserver.backends", vec![], &[]).await.expect("b"),
        json!(["roots"])
    );
    assert_eq!(
        run("fileserver.update", vec![], &[]).await.expect("update"),
        json!(true)
    );
    let hostile = run("fileserver.file_list", vec![], &[("prefix", "../x")]).await;
    let err = hostile.expect_err("refused");
    assert_eq!(
        err.kind(),
        brine_common::proto::client::ClientErrorKind::BadRequest
    );
    shutdown.cancel();
    master.join().await;
}

#[tokio::test]
async fn a_bad_ignore_pattern_stops_the_master_naming_the_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = MasterConfig {
        file_ignore_regex: vec!["(".into()],
        ..loopback_master(dir.path())
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let err = crate::master::Master::start(cfg, shutdown.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("file_ignore_regex"), "{err}");
    shutdown.cancel();
}
