//! The file server end to end: a top master with two environments, a
//! syndic without a tree of its own, a minion on the top and two behind
//! the syndic, driven through the real CLIs. `cp.get_file` / `get_dir` /
//! `cache_file` / `list_master` / `hash_file`, `cmd.script`, `salt-cp`,
//! `cp.push` allowed (top) and refused (the syndic keeps Salt's default
//! `file_recv: False`), the syndic's content cache (a file crosses the
//! top's request port once for both minions behind it), and hostile paths
//! (`..`, absolute, a symlink out of the root, a push outside its
//! directory): refused and counted.

use brine_common::proto::{ByteBuf, PushChunk, Refusal, ReplyBody, RequestBody, Role};
use brine_deploy::peer::HandPeer;
use brine_deploy::topology::Topology;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// Generous: other test binaries share the two cores.
const WAIT: Duration = Duration::from_secs(60);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", text(out)))
}

/// `salt <tgt> <fun> <args...> --out json` on the top; the parsed output.
fn salt(topo: &Topology, tgt: &str, fun: &str, args: &[&str]) -> Value {
    let mut a = vec![tgt, fun];
    a.extend_from_slice(args);
    a.extend(["--out", "json", "--static", "-t", "30"]);
    let out = topo.salt(&a).expect("salt");
    json_of(&out)
}

/// `salt-run <fun> <args...> --out json` on master `on`.
fn run(topo: &Topology, on: &str, fun: &str, args: &[&str]) -> Value {
    let mut a = vec![fun];
    a.extend_from_slice(args);
    a.extend(["--out", "json"]);
    let out = topo.cli(on, "salt-run", &a).expect("salt-run");
    assert!(out.status.success(), "salt-run {fun}: {}", text(&out));
    json_of(&out)
}

fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

/// The file trees: base and dev roots, a script, a directory, a symlink
/// inside the root and one leaving it.
fn trees(dir: &Path) -> (PathBuf, PathBuf) {
    let base = dir.join("salt");
    let dev = dir.join("salt-dev");
    write(&base.join("hello.txt"), b"hello from base\n");
    write(&base.join("conf/app.conf"), b"port: 80\n");
    write(&base.join("conf/sub/extra.conf"), b"extra\n");
    write(&base.join("web/init.sls"), b"{}\n");
    write(&base.join("web/nginx.sls"), b"{}\n");
    write(
        &base.join("scripts/hello.sh"),
        b"#!/bin/sh\necho \"script args: $*\"\necho \"cwd: $(pwd)\"\necho \"FOO=$FOO\"\nexit 3\n",
    );
    write(&dev.join("hello.txt"), b"hello from dev\n");
    write(&dev.join("only-dev.txt"), b"dev only\n");
    write(&dir.join("outside/secret.txt"), b"outside the root\n");
    std::os::unix::fs::symlink(base.join("hello.txt"), base.join("link-in.txt")).expect("symlink");
    std::os::unix::fs::symlink(dir.join("outside/secret.txt"), base.join("link-out.txt"))
        .expect("symlink");
    // One MiB of varied bytes, for the syndic's cache.
    let big: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    write(&base.join("big.bin"), &big);
    (base, dev)
}

fn topology(files: &Path) -> Topology {
    let (base, dev) = trees(files);
    Topology::builder()
        .syndics(1)
        .direct_minions(1)
        .minions_per_syndic(2)
        .top_config(&format!(
            "file_roots: {}",
            json!({"base": [base], "dev": [dev]})
        ))
        .top_config("file_recv: True")
        .top_config("file_recv_max_size: 1")
        .start(WAIT)
        .expect("topology")
}

fn minions() -> [&'static str; 3] {
    ["minion1", "s1m1", "s1m2"]
}

#[test]
fn files_reach_minions_direct_and_behind_a_syndic() {
    let files = tempfile::tempdir().expect("tempdir");
    let topo = topology(files.path());
    let out = topo.root.path().join("out");

    // cp.get_file, with makedirs, on every minion; the syndic's two minions
    // fetch the same version of big.bin.
    for m in minions() {
        let dest = out.join(m).join("deep/hello.txt");
        let dest_s = dest.display().to_string();
        let r = salt(
            &topo,
            m,
            "cp.get_file",
            &["salt://hello.txt", &dest_s, "makedirs=True"],
        );
        assert_eq!(r[m], json!(dest_s), "{m}: {r}");
        assert_eq!(std::fs::read(&dest).expect("fetched"), b"hello from base\n");
        // saltenv= and the ?saltenv= query both pick dev.
        let dev = out.join(m).join("dev.txt").display().to_string();
        let r = salt(
            &topo,
            m,
            "cp.get_file",
            &["salt://hello.txt", &dev, "saltenv=dev"],
        );
        assert_eq!(r[m], json!(dev));
        assert_eq!(std::fs::read(&dev).expect("dev"), b"hello from dev\n");
        let q = out.join(m).join("q.txt").display().to_string();
        salt(
            &topo,
            m,
            "cp.get_file",
            &["salt://only-dev.txt?saltenv=dev", &q],
        );
        assert_eq!(std::fs::read(&q).expect("query"), b"dev only\n");
    }
    let served_before = topo.stat("file_bytes_served");
    for m in ["s1m1", "s1m2"] {
        let dest = out.join(m).join("big.bin").display().to_string();
        let r = salt(&topo, m, "cp.get_file", &["salt://big.bin", &dest]);
        assert_eq!(r[m], json!(dest), "{m}: {r}");
        assert_eq!(
            std::fs::read(&dest).expect("big").len(),
            1 << 20,
            "{m} got the whole file"
        );
    }
    let served = topo.stat("file_bytes_served") - served_before;
    assert!(
        ((1 << 20)..(2 << 20)).contains(&served),
        "the top served {served} bytes of big.bin for two minions behind one syndic: \
         its cache should fetch it once"
    );

    // A second fetch of an unchanged file is answered from the minion's
    // cache (the master sends its metadata, no chunk).
    let before = topo.stat("file_bytes_served");
    let dest = out.join("minion1/hello-again.txt").display().to_string();
    salt(
        &topo,
        "minion1",
        "cp.get_file",
        &["salt://hello.txt", &dest],
    );
    let r = salt(&topo, "minion1", "cp.cache_file", &["salt://hello.txt"]);
    assert_eq!(topo.stat("file_bytes_served"), before, "cached copy reused");
    let cached = r["minion1"].as_str().expect("cached path").to_string();
    assert_eq!(
        std::fs::read(&cached).expect("cached"),
        b"hello from base\n"
    );
    let r = salt(&topo, "minion1", "cp.is_cached", &["salt://hello.txt"]);
    assert_eq!(r["minion1"], json!(cached));

    // get_dir, list_master, list_master_dirs, list_states, hash_file.
    let d = out.join("s1m1/dir").display().to_string();
    let r = salt(&topo, "s1m1", "cp.get_dir", &["salt://conf", &d]);
    let got: Vec<String> = serde_json::from_value(r["s1m1"].clone()).expect("list");
    assert_eq!(got.len(), 2, "{r}");
    assert_eq!(
        std::fs::read(out.join("s1m1/dir/conf/sub/extra.conf")).expect("dir file"),
        b"extra\n"
    );
    let r = salt(&topo, "s1m2", "cp.list_master", &[]);
    let list: Vec<String> = serde_json::from_value(r["s1m2"].clone()).expect("list");
    for f in ["hello.txt", "conf/app.conf", "big.bin", "link-in.txt"] {
        assert!(list.contains(&f.to_string()), "{f} in {list:?}");
    }
    assert!(!list.contains(&"link-out.txt".to_string()), "{list:?}");
    let r = salt(&topo, "minion1", "cp.list_master", &["saltenv=dev"]);
    assert_eq!(r["minion1"], json!(["hello.txt", "only-dev.txt"]));
    let r = salt(&topo, "minion1", "cp.list_master_dirs", &[]);
    let dirs: Vec<String> = serde_json::from_value(r["minion1"].clone()).expect("dirs");
    assert!(dirs.contains(&"conf/sub".to_string()), "{dirs:?}");
    let r = salt(&topo, "s1m1", "cp.list_states", &[]);
    assert_eq!(r["s1m1"], json!(["web", "web.nginx"]));
    let r = salt(&topo, "s1m1", "cp.hash_file", &["salt://hello.txt"]);
    assert_eq!(r["s1m1"]["hash_type"], json!("sha256"));
    assert_eq!(r["s1m1"]["hsum"].as_str().map(str::len), Some(64));

    // The fileserver runner on the top.
    let files_listed = run(&topo, "top", "fileserver.file_list", &[]);
    assert!(files_listed
        .as_array()
        .is_some_and(|a| a.contains(&json!("hello.txt"))));
    assert_eq!(
        run(&topo, "top", "fileserver.envs", &[]),
        json!(["base", "dev"])
    );
    assert_eq!(run(&topo, "top", "fileserver.update", &[]), json!(true));
}

#[test]
fn scripts_salt_cp_and_push() {
    let files = tempfile::tempdir().expect("tempdir");
    let topo = topology(files.path());

    // cmd.script with args, cwd and env, its retcode passed on.
    let cwd = topo.root.path().display().to_string();
    let out = topo
        .salt(&[
            "s1m1",
            "cmd.script",
            "salt://scripts/hello.sh",
            "args=one two",
            &format!("cwd={cwd}"),
            "env={\"FOO\": \"bar\"}",
            "--out",
            "json",
        ])
        .expect("salt");
    let r = json_of(&out);
    let stdout = r["s1m1"]["stdout"].as_str().unwrap_or_default();
    assert!(stdout.contains("script args: one two"), "{r}");
    assert!(stdout.contains(&format!("cwd: {cwd}")), "{r}");
    assert!(stdout.contains("FOO=bar"), "{r}");
    assert_eq!(r["s1m1"]["retcode"], json!(3));
    assert_ne!(out.status.code(), Some(0), "a failing script fails the job");

    // salt-cp to every minion.
    let local = topo.root.path().join("local.txt");
    std::fs::write(&local, b"copied by salt-cp\n").expect("write");
    let dest_dir = topo.root.path().join("cp-dest");
    std::fs::create_dir_all(&dest_dir).expect("mkdir");
    let dest = dest_dir.join("copied.txt");
    let out = topo
        .cli(
            "top",
            "salt-cp",
            &[
                "*",
                &local.display().to_string(),
                &dest.display().to_string(),
                "--out",
                "json",
            ],
        )
        .expect("salt-cp");
    assert!(out.status.success(), "{}", text(&out));
    let r = json_of(&out);
    for m in minions() {
        assert_eq!(r[m][dest.display().to_string()], json!(true), "{m}: {r}");
    }
    assert_eq!(
        std::fs::read(&dest).expect("copied"),
        b"copied by salt-cp\n"
    );

    // cp.push: the top allows it and stores the file per minion id.
    let pushed = topo.root.path().join("to-push.txt");
    std::fs::write(&pushed, b"pushed\n").expect("write");
    let p = pushed.display().to_string();
    let r = salt(&topo, "minion1", "cp.push", &[&p]);
    assert_eq!(r["minion1"], json!(true), "{r}");
    let stored = topo
        .root
        .path()
        .join("top/root/var/cache/salt/master/minions/minion1/files")
        .join(p.trim_start_matches('/'));
    assert_eq!(
        std::fs::read(&stored).expect("stored on the top"),
        b"pushed\n"
    );
    // ... over file_recv_max_size (1 MiB) it refuses.
    let big = topo.root.path().join("too-big.bin");
    std::fs::write(&big, vec![7u8; (1 << 20) + 1]).expect("write");
    let r = salt(&topo, "minion1", "cp.push", &[&big.display().to_string()]);
    assert_eq!(r["minion1"], json!(false), "{r}");
    // ... and a push that would leave its directory is refused.
    let r = salt(
        &topo,
        "minion1",
        "cp.push",
        &[&p, "upload_path=../../../../escape.txt"],
    );
    assert_eq!(r["minion1"], json!(false), "{r}");
    // The syndic keeps Salt's default (file_recv: False): refused.
    let r = salt(&topo, "s1m1", "cp.push", &[&p]);
    assert_eq!(r["s1m1"], json!(false), "{r}");
}

#[test]
fn hostile_paths_are_refused_and_counted() {
    let files = tempfile::tempdir().expect("tempdir");
    let topo = topology(files.path());
    let dest = topo.root.path().join("stolen").display().to_string();
    // The minion refuses these before asking (the master would too, see
    // the hand-made peer below): an error naming the path, nothing written.
    for (m, src) in [
        ("minion1", "salt://../../etc/passwd"),
        ("minion1", "salt://conf/../../outside/secret.txt"),
        ("s1m1", "salt://../outside/secret.txt"),
    ] {
        let r = salt(&topo, m, "cp.get_file", &[src, &dest]);
        let msg = r[m].as_str().unwrap_or_default();
        assert!(msg.contains("path not allowed"), "{src} on {m}: {r}");
    }
    // A symlink leaving the root is not served (as if absent).
    let r = salt(
        &topo,
        "minion1",
        "cp.get_file",
        &["salt://link-out.txt", &dest],
    );
    assert_eq!(r["minion1"], json!(""), "{r}");
    assert!(!Path::new(&dest).exists(), "nothing written");
    // An absolute path is not a path inside any root.
    let r = salt(
        &topo,
        "minion1",
        "cp.get_file",
        &["salt:///etc/passwd", &dest],
    );
    assert_ne!(r["minion1"], json!(dest), "{r}");
    assert!(!Path::new(&dest).exists(), "nothing written");

    // A peer that sends what no real minion would: the master refuses a
    // push outside its directory and file server paths that leave a root,
    // whatever the minion-side checks.
    let ctx = zmq::Context::new();
    let mut evil = HandPeer::new(&ctx, &topo.top.addr, "evil", Role::Minion).expect("peer");
    brine_deploy::launch::poll_until(WAIT, Duration::from_millis(200), || evil.sign_in().is_ok());
    let before = topo.stat("file_paths_refused");
    for path in ["../../../escape.txt", "a/../../escape.txt", "x\0y"] {
        let r = evil
            .request(RequestBody::FilePush(PushChunk {
                path: path.to_string(),
                size: 3,
                offset: 0,
                data: ByteBuf::from(b"bad".to_vec()),
                last: true,
            }))
            .expect("answer");
        assert!(
            matches!(r, ReplyBody::Refused(Refusal::BadPath { .. })),
            "push to {path}: {r:?}"
        );
    }
    for path in ["../etc/passwd", "/etc/passwd", "conf/../../x"] {
        let r = evil
            .request(RequestBody::FileFind {
                saltenv: "base".into(),
                path: path.into(),
            })
            .expect("answer");
        assert!(
            matches!(r, ReplyBody::Refused(Refusal::BadPath { .. })),
            "find {path}: {r:?}"
        );
    }
    assert!(topo.stat("file_paths_refused") >= before + 6);
    assert!(!topo.root.path().join("escape.txt").exists());
}

/// Two syndic tiers: a minion three hops down gets the top's files (each
/// syndic's cache filled once) and its own pillar, sealed through both
/// syndics, and pillar targeting from the top reaches it.
#[test]
fn files_and_pillar_through_two_syndic_tiers() {
    let files = tempfile::tempdir().expect("tempdir");
    let (base, _dev) = trees(files.path());
    let pillar = files.path().join("pillar");
    write(
        &pillar.join("top.sls"),
        b"base:\n  '*':\n    - common\n  s1m2:\n    - deep\n",
    );
    write(&pillar.join("common.sls"), b"tier: {{ grains['id'] }}\n");
    write(&pillar.join("deep.sls"), b"deep_secret: kiwi\n");
    let topo = Topology::builder()
        .syndics(1)
        .tiers(2)
        .minions_per_syndic(2)
        .top_config(&format!("file_roots: {}", json!({"base": [base]})))
        .top_config(&format!("pillar_roots: {}", json!({"base": [pillar]})))
        .start(WAIT)
        .expect("topology");
    let out = topo.root.path().join("out");
    let before = topo.stat("file_bytes_served");
    for m in ["s1m1", "s1m2"] {
        let dest = out.join(m).join("big.bin").display().to_string();
        let r = salt(
            &topo,
            m,
            "cp.get_file",
            &["salt://big.bin", &dest, "makedirs=True"],
        );
        assert_eq!(r[m], json!(dest), "{m}: {r}");
        assert_eq!(std::fs::read(&dest).expect("big").len(), 1 << 20);
    }
    let served = topo.stat("file_bytes_served") - before;
    assert!(
        ((1 << 20)..(2 << 20)).contains(&served),
        "the top served {served} bytes for two minions two tiers down"
    );
    let r = salt(&topo, "*", "pillar.items", &[]);
    assert_eq!(r["s1m1"]["tier"], json!("s1m1"), "{r}");
    assert!(r["s1m1"].get("deep_secret").is_none(), "{r}");
    assert_eq!(r["s1m2"]["deep_secret"], json!("kiwi"), "{r}");
    let out = topo
        .salt(&[
            "-I",
            "deep_secret:kiwi",
            "test.ping",
            "--out",
            "json",
            "--static",
        ])
        .expect("salt");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json_of(&out), json!({"s1m2": true}));
}
