//! `salt-ssh` end to end against a real OpenSSH server started here on
//! loopback: one sshd listening on several 127.A.B.x addresses of one port
//! (several "hosts", each writing under its own `root_dir`), a roster with
//! three of them, one with a wrong known_hosts entry and one unreachable.
//! `test.ping`, `cmd.run`, `-r`, `state.apply` of a `file.managed` from
//! `salt://` with a Jinja template reading pillar (second run: no changes),
//! `--out json`, host key checking with and without `-i`, and the thin
//! uploaded once. sshd and the shared ssh connections are stopped at the
//! end (by PID and by `ssh -O exit`), also on failure.

use brine_deploy::launch::{self, Net};
use brine_deploy::sshd::{self, Sshd};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn keygen(path: &Path) -> String {
    sshd::keygen(path).expect("ssh-keygen")
}

fn free_port(host: &str) -> u16 {
    sshd::free_port(host).expect("free port")
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Rig {
    dir: PathBuf,
    bin: PathBuf,
}

impl Rig {
    fn salt_ssh(&self, extra: &[&str]) -> (Output, Duration) {
        let t0 = Instant::now();
        let out = Command::new(self.bin.join("salt-ssh"))
            .arg("-c")
            .arg(self.dir.join("etc"))
            .arg("--roster-file")
            .arg(self.dir.join("roster"))
            .arg("--priv")
            .arg(self.dir.join("id_client"))
            .arg("--known-hosts-file")
            .arg(self.dir.join("known_hosts"))
            .args(["--out", "json", "--static", "-t", "5", "--deadline", "120"])
            .args(extra)
            .env("BRINE_SSH_CONTROL_DIR", self.dir.join("c"))
            .stdin(Stdio::null())
            .output()
            .expect("salt-ssh");
        (out, t0.elapsed())
    }

    fn json(&self, extra: &[&str]) -> (Value, Output, Duration) {
        let (o, t) = self.salt_ssh(extra);
        let v = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&o)));
        (v, o, t)
    }
}

fn thin_mtime(root: &Path) -> std::time::SystemTime {
    let d = root.join("var/tmp/.root_brine");
    let sub = std::fs::read_dir(&d)
        .expect("thin dir")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("brine-"))
        .expect("brine-<hash>");
    std::fs::metadata(sub.path().join("salt-call"))
        .and_then(|m| m.modified())
        .expect("mtime")
}

#[test]
fn salt_ssh_end_to_end() {
    if !Path::new("/usr/sbin/sshd").exists() {
        panic!("/usr/sbin/sshd missing: run .ci/deps (installs openssh-server)");
    }
    launch::ensure_built().expect("build");
    let bin = launch::bin_dir();
    launch::require_binaries(&bin, &["salt-ssh", "salt-call"]).expect("binaries");
    let tmp = tempfile::Builder::new()
        .prefix("bssh")
        .tempdir_in("/tmp")
        .expect("tmp");
    let dir = tmp.path().to_path_buf();
    let net = Net::fresh().expect("net");
    let addrs: Vec<String> = (1..=5).map(|n| net.host(n).expect("host")).collect();
    let port = free_port(&addrs[0]);
    let host_pub = keygen(&dir.join("host_key"));
    let other_pub = keygen(&dir.join("other_key"));
    let client_pub = keygen(&dir.join("id_client"));
    write(&dir.join("authorized_keys"), &client_pub);
    // Four listening "hosts"; the fifth address has nothing listening.
    let _sshd = Sshd::start(&dir, port, &addrs[..4], dir.join("c")).expect("sshd");
    let key = sshd::key_of(&host_pub);
    let wrong = sshd::key_of(&other_pub);
    let mut kh = String::new();
    for a in &addrs[..3] {
        kh.push_str(&format!("[{a}]:{port} {key}\n"));
    }
    kh.push_str(&format!("[{}]:{port} {wrong}\n", addrs[3]));
    write(&dir.join("known_hosts"), &kh);
    let mut roster = String::new();
    for (i, a) in addrs[..3].iter().enumerate() {
        roster.push_str(&format!(
            "h{n}:\n  host: {a}\n  port: {port}\n  user: root\n  root_dir: {}\n",
            dir.join(format!("h{}", i + 1)).display(),
            n = i + 1
        ));
    }
    roster.push_str(&format!(
        "badkey:\n  host: {}\n  port: {port}\n  user: root\n  root_dir: {}\n",
        addrs[3],
        dir.join("hb").display()
    ));
    roster.push_str(&format!(
        "down:\n  host: {}\n  port: {port}\n  user: root\n  timeout: 3\n",
        addrs[4]
    ));
    write(&dir.join("roster"), &roster);
    let out = dir.join("out");
    write(
        &dir.join("etc/master"),
        &format!(
            "cachedir: {}\nfile_roots:\n  base:\n    - {}\npillar_roots:\n  base:\n    - {}\n",
            dir.join("mcache").display(),
            dir.join("srv/salt").display(),
            dir.join("srv/pillar").display()
        ),
    );
    write(
        &dir.join("srv/pillar/top.sls"),
        "base:\n  '*':\n    - common\n",
    );
    write(
        &dir.join("srv/pillar/common.sls"),
        &format!("greeting: ahoy\nout: {}\n", out.display()),
    );
    write(
        &dir.join("srv/salt/motd.j2"),
        "{{ pillar['greeting'] }} from {{ grains['id'] }}\n",
    );
    write(
        &dir.join("srv/salt/web.sls"),
        "motd:\n  file.managed:\n    - name: {{ pillar['out'] }}/{{ grains['id'] }}.motd\n    \
         - source: salt://motd.j2\n    - template: jinja\n    - makedirs: True\n",
    );
    let rig = Rig {
        dir: dir.clone(),
        bin,
    };

    // test.ping: three True, the unreachable host reported quickly.
    let (v, o, first) = rig.json(&["-E", r"h\d|down", "test.ping"]);
    eprintln!("test.ping, first contact: {first:?}");
    for h in ["h1", "h2", "h3"] {
        assert_eq!(v[h], json!(true), "{h}: {}", text(&o));
    }
    assert_eq!(v["down"]["retcode"], json!(255), "{}", text(&o));
    assert!(v["down"]["stderr"].as_str().is_some(), "{v}");
    assert_eq!(o.status.code(), Some(20), "{}", text(&o));
    assert!(first < Duration::from_secs(60), "{first:?}");
    let mtime = thin_mtime(&dir.join("h1"));
    let (v, o, later) = rig.json(&["h*", "test.ping"]);
    eprintln!("test.ping, later: {later:?}");
    assert_eq!(
        v,
        json!({"h1": true, "h2": true, "h3": true}),
        "{}",
        text(&o)
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        thin_mtime(&dir.join("h1")),
        mtime,
        "the thin was uploaded again"
    );

    // cmd.run and -r.
    let (v, o, t) = rig.json(&["-L", "h1,h2,h3", "cmd.run", "echo hi"]);
    eprintln!("cmd.run: {t:?}");
    assert_eq!(
        v,
        json!({"h1": "hi", "h2": "hi", "h3": "hi"}),
        "{}",
        text(&o)
    );
    let (v, o, _) = rig.json(&["-r", "h1", "uname"]);
    assert_eq!(
        v,
        json!({"h1": {"retcode": 0, "stderr": "", "stdout": "Linux\n"}}),
        "{}",
        text(&o)
    );

    // state.apply with salt:// and pillar; second run changes nothing.
    let (v, o, t) = rig.json(&["h*", "state.apply", "web"]);
    eprintln!("state.apply: {t:?}");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for h in ["h1", "h2", "h3"] {
        let content = std::fs::read_to_string(out.join(format!("{h}.motd"))).expect("motd");
        assert_eq!(content, format!("ahoy from {h}\n"));
        let states = v[h].as_object().expect("state dict");
        let s = states.values().next().expect("one state");
        assert_eq!(s["result"], json!(true), "{v}");
        assert!(
            s["changes"].as_object().is_some_and(|c| !c.is_empty()),
            "{v}"
        );
    }
    let (v, o, _) = rig.json(&["h*", "state.apply", "web"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for h in ["h1", "h2", "h3"] {
        let s = v[h]
            .as_object()
            .expect("dict")
            .values()
            .next()
            .expect("state")
            .clone();
        assert_eq!(s["result"], json!(true), "{v}");
        assert_eq!(s["changes"], json!({}), "{v}");
    }

    // A wrong host key is refused, and accepted with -i.
    let (v, o, _) = rig.json(&["badkey", "test.ping"]);
    assert_eq!(v["badkey"]["retcode"], json!(255), "{}", text(&o));
    assert!(
        v["badkey"]["stderr"]
            .as_str()
            .is_some_and(|s| s.contains("HOST IDENTIFICATION HAS CHANGED")
                || s.contains("Host key verification failed")),
        "{v}"
    );
    assert_ne!(o.status.code(), Some(0));
    let (v, o, _) = rig.json(&["-i", "badkey", "test.ping"]);
    assert_eq!(v, json!({"badkey": true}), "{}", text(&o));
}
