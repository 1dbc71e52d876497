//! Config faults end to end (issue 16, items 5 and 6), against the real
//! binaries on loopback: daemons whose paths cannot be used exit 78 with
//! one line naming the option, the path and the file that set it; a minion
//! with no `master` line says at WARN, once, that the default name does
//! not resolve; and a job published at a syndic reaches the top's job
//! cache only with `syndic_forward_all`.
//!
//! The tests run as root, for whom permissions never fail, so an unusable
//! path is one that no user can use: a regular file where a directory
//! must be, a directory below a regular file, a directory where the log
//! file must be.

use brine_deploy::hostile::strip_ansi;
use brine_deploy::topology::{ensure_built, MinionNode, Topology};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: other test binaries share the two cores.
const WAIT: Duration = Duration::from_secs(60);

/// Runs `bin -c dir` with `env`, killing it if it has not exited within
/// `wait` (today's code keeps some broken daemons running). Returns the
/// exit code (None when it had to be killed) and stderr.
fn run_bounded(
    bin: &Path,
    dir: &Path,
    env: &[(&str, &str)],
    wait: Duration,
) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + wait;
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        use std::io::Read;
        let _ = s.read_to_string(&mut err);
    }
    (code, err)
}

/// One broken config: asserts exit 78 and a single stderr line naming
/// `key`, `path` and `origin`.
fn assert_config_fault(
    bin: &Path,
    dir: &Path,
    env: &[(&str, &str)],
    key: &str,
    path: &Path,
    origin: &str,
) {
    let (code, err) = run_bounded(bin, dir, env, Duration::from_secs(20));
    let err = err.trim_end();
    assert_eq!(code, Some(78), "{} with {key}: {err}", bin.display());
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(
        err.contains(&format!("{key} {}", path.display())) && err.contains(origin),
        "names {key}, its path and {origin}: {err}"
    );
    assert!(
        err.contains("set ") && err.contains(key),
        "says what to do: {err}"
    );
}

#[test]
fn unusable_paths_exit_78_with_one_line() {
    ensure_built().expect("binaries");
    let bin = brine_deploy::launch::bin_dir();
    let tmp = tempfile::Builder::new()
        .prefix("brine-faults-")
        .tempdir()
        .expect("tempdir");
    let t = tmp.path();
    let plain = t.join("plain-file");
    std::fs::write(&plain, "not a directory\n").expect("write");

    // Minion: pki_dir is a regular file.
    let dir = t.join("m1");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("minion");
    std::fs::write(
        &file,
        format!(
            "id: m1\nmaster: 127.0.0.1\nroot_dir: {}\npki_dir: {}\n",
            dir.join("root").display(),
            plain.display()
        ),
    )
    .expect("write");
    // root_dir re-roots an absolute pki_dir; name the path it became.
    let pki = dir
        .join("root")
        .join(plain.strip_prefix("/").expect("absolute"));
    std::fs::create_dir_all(pki.parent().expect("parent")).expect("dir");
    std::fs::write(&pki, "a file\n").expect("write");
    let m = bin.join("salt-minion");
    assert_config_fault(&m, &dir, &[], "pki_dir", &pki, &file.display().to_string());

    // Minion: cachedir below a regular file.
    std::fs::write(
        &file,
        format!(
            "id: m1\nmaster: 127.0.0.1\nroot_dir: {}\ncachedir: plain/cache\n",
            dir.join("root").display()
        ),
    )
    .expect("write");
    std::fs::write(dir.join("root/plain"), "x").expect("write");
    assert_config_fault(
        &m,
        &dir,
        &[],
        "cachedir",
        &dir.join("root/plain/cache"),
        &file.display().to_string(),
    );

    // Master: sock_dir is a regular file.
    let dir = t.join("top");
    std::fs::create_dir_all(dir.join("root")).expect("dir");
    let file = dir.join("master");
    std::fs::write(dir.join("root/sock"), "x").expect("write");
    std::fs::write(
        &file,
        format!("id: top\ninterface: 127.0.0.1\npublish_port: 0\nret_port: 0\nroot_dir: {}\nsock_dir: sock\n", dir.join("root").display()),
    )
    .expect("write");
    let master = bin.join("salt-master");
    assert_config_fault(
        &master,
        &dir,
        &[],
        "sock_dir",
        &dir.join("root/sock"),
        &file.display().to_string(),
    );

    // Master: log_file is a directory (today: logs to stderr and runs on).
    std::fs::write(
        &file,
        format!("id: top\ninterface: 127.0.0.1\npublish_port: 0\nret_port: 0\nroot_dir: {}\nlog_file: logs\n", dir.join("root").display()),
    )
    .expect("write");
    std::fs::create_dir_all(dir.join("root/logs")).expect("dir");
    assert_config_fault(
        &master,
        &dir,
        &[],
        "log_file",
        &dir.join("root/logs"),
        &file.display().to_string(),
    );

    // Master: pki_dir from the environment, below a regular file.
    std::fs::write(
        &file,
        format!(
            "id: top\ninterface: 127.0.0.1\npublish_port: 0\nret_port: 0\nroot_dir: {}\n",
            dir.join("root").display()
        ),
    )
    .expect("write");
    assert_config_fault(
        &master,
        &dir,
        &[("SALT_PKI_DIR", "sock/pki")],
        "pki_dir",
        &dir.join("root/sock/pki"),
        "environment variable SALT_PKI_DIR",
    );

    // Syndic: its upstream pki dir below a regular file.
    std::fs::write(
        &file,
        format!(
            "id: s1\ninterface: 127.0.0.1\npublish_port: 0\nret_port: 0\nroot_dir: {}\nsyndic_master: 127.0.0.1\nsyndic_pki_dir: sock/syndic\n",
            dir.join("root").display()
        ),
    )
    .expect("write");
    assert_config_fault(
        &bin.join("salt-syndic"),
        &dir,
        &[],
        "syndic_pki_dir",
        &dir.join("root/sock/syndic"),
        &file.display().to_string(),
    );
}

#[test]
fn a_minion_without_master_warns_once_that_salt_does_not_resolve() {
    use std::net::ToSocketAddrs;
    if ("salt", 4506)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.next().is_some())
    {
        eprintln!("skipped: the name 'salt' resolves on this host");
        return;
    }
    let mut topo = Topology::builder().start(WAIT).expect("topology");
    let dir = topo.root.path().join("m-nomaster");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("minion");
    // No master line; default console level (warning); the log file at
    // debug shows the quiet retries.
    std::fs::write(
        &file,
        format!(
            "id: nomaster\nroot_dir: {}\nlog_file: minion.log\nlog_level_logfile: debug\nrecon_default: 200\nrecon_max: 2000\n",
            dir.join("root").display()
        ),
    )
    .expect("write");
    topo.minions.push(MinionNode {
        id: "nomaster".into(),
        config_dir: dir.clone(),
        master: "top".into(),
        grains: serde_json::json!({}),
    });
    topo.spawn_minion("nomaster").expect("spawn");
    let logfile: PathBuf = dir.join("root/minion.log");
    let t = &topo;
    t.eventually(WAIT, "two quiet retries in the debug log", || {
        std::fs::read_to_string(&logfile)
            .unwrap_or_default()
            .matches("master name still does not resolve")
            .count()
            >= 2
    })
    .unwrap_or_else(|e| panic!("{e}\nconsole: {}", t.log("nomaster")));
    let console = strip_ansi(&topo.log("nomaster"));
    let warns: Vec<&str> = console.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warns.len(), 1, "one warning: {console}");
    let w = warns[0];
    assert!(
        w.contains("master=salt")
            && w.contains(&file.display().to_string())
            && w.contains("set master"),
        "names the default, the file and what to do: {w}"
    );
}

/// `salt --async` on `on`; returns the jid.
fn publish_async(topo: &Topology, on: &str, word: &str) -> String {
    topo.salt_async(on, &["*", "test.echo", word])
        .expect("salt --async")
}

#[test]
fn jobs_published_at_a_syndic_go_up_only_with_syndic_forward_all() {
    let mut topo = Topology::builder()
        .syndics(1)
        .minions_per_syndic(2)
        .start(WAIT)
        .expect("topology");
    let both = |v: &Value, word: &str| v["s1m1"] == word && v["s1m2"] == word;

    // Off (the default): the job and its returns stay on the syndic.
    let jid = publish_async(&topo, "syndic1", "here");
    let t = &topo;
    t.eventually(WAIT, "returns on the syndic", || {
        both(&t.lookup_jid("syndic1", &jid), "here")
    })
    .expect("syndic job cache");
    // A job from the top after it: once its returns are up, any return
    // of the syndic's own job would have been forwarded too.
    let out = topo
        .salt(&["*", "test.echo", "top", "--out", "json"])
        .expect("salt");
    // One JSON document per minion, as Salt prints them: merge them.
    let mut v = serde_json::Map::new();
    for doc in serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>() {
        if let Ok(Value::Object(m)) = doc {
            v.extend(m);
        }
    }
    assert!(both(&Value::Object(v), "top"), "{out:?}");
    let up = topo.lookup_jid("top", &jid);
    assert!(
        up.as_object().is_none_or(|m| m.is_empty()),
        "a job published at the syndic stays there by default: {up}"
    );

    // On: restart the syndic with the option; its next job reaches the
    // top's job cache with both returns, under its own jid.
    let cfg = topo.syndics[0].config_dir.join("master");
    let mut text = std::fs::read_to_string(&cfg).expect("read");
    text.push_str("syndic_forward_all: True\n");
    std::fs::write(&cfg, text).expect("write");
    topo.stop("syndic1", false).expect("stop");
    topo.start_syndic("syndic1").expect("start");
    topo.wait_up(&["s1m1".into(), "s1m2".into()], WAIT)
        .expect("up again");
    topo.wait_up_on("syndic1", &["s1m1".into(), "s1m2".into()], WAIT)
        .expect("up on the syndic");
    let jid2 = publish_async(&topo, "syndic1", "forwarded");
    let t = &topo;
    t.eventually(WAIT, "returns of the syndic's job on the top", || {
        both(&t.lookup_jid("top", &jid2), "forwarded")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", t.log("syndic1")));
    // The job's load went up too: the top lists it.
    let jobs = topo
        .cli("top", "salt-run", &["jobs.list_jobs", "--out", "json"])
        .expect("list_jobs");
    let jobs: Value = serde_json::from_slice(&jobs.stdout).unwrap_or(Value::Null);
    assert!(jobs.get(&jid2).is_some(), "{jobs}");
    // The earlier job's returns were settled before; they stay put.
    let up = topo.lookup_jid("top", &jid);
    assert!(up.as_object().is_none_or(|m| m.is_empty()), "{up}");
}
