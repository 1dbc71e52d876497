//! `salt-ssh` logins end to end against a real OpenSSH server started here
//! on loopback: a throwaway user `brine-test-ssh<pid>` (home in the
//! tempdir, a random password, a NOPASSWD sudo rule) logs in with
//! `--passwd` (the password in no process's argv and not in the debug
//! log), gets its key installed by `--key-deploy` (then a run without the
//! password works), runs as root with the roster's `sudo: True` and with
//! the master config's `ssh_*` options alone; and a host that accepts TCP
//! but never speaks SSH is reported after its timeout while the other host
//! answers at once. Invariant: the user, its sudoers file, sshd (by PID)
//! and the shared ssh connections are removed at the end, also on failure,
//! by one Drop guard.
//!
//! The sshd starter is local to this file until the shared one
//! (deploy/src/sshd.rs) lands.

use brine_deploy::launch::{self, Net};
use brine_deploy::sshd::Sshd;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Everything this test puts on the system, undone in Drop.
struct Cleanup {
    user: String,
    sudoers: PathBuf,
    /// Closes the shared connections under its control directory, then
    /// stops by PID.
    sshd: Option<Sshd>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // sshd and the test user's sessions first, then the user.
        drop(self.sshd.take());
        let _ = std::fs::remove_file(&self.sudoers);
        // The home is in the tempdir, removed with it.
        let _ = Command::new("userdel")
            .arg(&self.user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run_ok(cmd: &mut Command) {
    let o = cmd.output().expect("spawn");
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn random_password() -> String {
    let mut b = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn both(o: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// PIDs whose command line holds `needle`, and how many ssh processes
/// were looked at.
fn argv_scan(needle: &str) -> (Vec<u32>, usize) {
    let mut hits = Vec::new();
    let mut ssh = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        // `comm` too: a shared connection's ssh rewrites its argv.
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if line.starts_with("ssh ") || comm.trim_end() == "ssh" {
            ssh += 1;
        }
        if line.contains(needle) && pid != std::process::id() {
            hits.push(pid);
        }
    }
    (hits, ssh)
}

struct Rig {
    bin: PathBuf,
    dir: PathBuf,
}

impl Rig {
    /// salt-ssh with config dir `etc` and control dir `ctl` (a fresh one
    /// means no shared connection to reuse).
    fn cmd(&self, etc: &str, ctl: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(self.bin.join("salt-ssh"));
        c.arg("-c")
            .arg(self.dir.join(etc))
            .arg("--roster-file")
            .arg(self.dir.join("roster"))
            .args(extra)
            .env("BRINE_SSH_CONTROL_DIR", self.dir.join("ctl").join(ctl))
            .stdin(Stdio::null());
        c
    }

    fn json(&self, etc: &str, ctl: &str, extra: &[&str]) -> (Value, Output) {
        let mut base = vec!["--out", "json", "--static"];
        base.extend_from_slice(extra);
        let o = self.cmd(etc, ctl, &base).output().expect("salt-ssh");
        let v = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", both(&o)));
        (v, o)
    }
}

#[test]
fn salt_ssh_password_key_deploy_sudo_and_silent_host() {
    assert!(
        Path::new("/usr/sbin/sshd").exists() && Path::new("/usr/bin/sudo").exists(),
        "sshd or sudo missing: run .ci/deps"
    );
    launch::ensure_built().expect("build");
    let bin = launch::bin_dir();
    launch::require_binaries(&bin, &["salt-ssh", "salt-call"]).expect("binaries");
    let tmp = tempfile::Builder::new()
        .prefix("bsshauth")
        .tempdir_in("/tmp")
        .expect("tmp");
    let dir = tmp.path().to_path_buf();
    // The test user must reach its home inside the tempdir.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let user = format!("brine-test-ssh{}", std::process::id());
    let home = dir.join("home");
    let mut guard = Cleanup {
        user: user.clone(),
        sudoers: PathBuf::from(format!("/etc/sudoers.d/{user}")),
        sshd: None,
    };
    run_ok(
        Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", "-d"])
            .arg(&home)
            .arg(&user),
    );
    let password = random_password();
    {
        let mut c = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(format!("{user}:{password}\n").as_bytes())
            .expect("write");
        assert!(c.wait().expect("wait").success(), "chpasswd failed");
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&guard.sudoers, format!("{user} ALL=(ALL) NOPASSWD: ALL\n"))
            .expect("sudoers");
        std::fs::set_permissions(&guard.sudoers, std::fs::Permissions::from_mode(0o440))
            .expect("chmod sudoers");
    }

    // sshd: password and per-user keys, only for the test user.
    let net = Net::fresh().expect("net");
    let (addr, silent_addr) = (net.host(1).expect("h1"), net.host(2).expect("h2"));
    let port = std::net::TcpListener::bind((addr.as_str(), 0))
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join("hostkey")),
    );
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join("id_user")),
    );
    let auth = [
        format!("HostKey {}", dir.join("hostkey").display()),
        format!("AllowUsers {user}"),
        "AuthorizedKeysFile .ssh/authorized_keys".to_string(),
        "PasswordAuthentication yes".to_string(),
    ]
    .join("\n");
    guard.sshd = Some(
        Sshd::start_named(
            &dir,
            "sshd",
            port,
            std::slice::from_ref(&addr),
            dir.join("ctl"),
            &(auth + "\n"),
        )
        .expect("sshd up"),
    );
    // A "host" that accepts connections (the kernel does, into the
    // backlog) and never says a word.
    let silent = std::net::TcpListener::bind((silent_addr.as_str(), 0)).expect("silent");
    let silent_port = silent.local_addr().expect("addr").port();

    let host_pub = std::fs::read_to_string(dir.join("hostkey.pub")).expect("pub");
    let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    std::fs::write(
        dir.join("known_hosts"),
        format!("[{addr}]:{port} {}\n", host_pub.join(" ")),
    )
    .expect("known_hosts");
    let h = home.display();
    let roster = format!(
        "pw:\n  host: {addr}\n  port: {port}\n  user: {user}\n  thin_dir: {h}/thin\n\
         asroot:\n  host: {addr}\n  port: {port}\n  user: {user}\n  sudo: True\n  \
         thin_dir: {h}/thin-root\n\
         cfg:\n  host: {addr}\n  thin_dir: {h}/thin-cfg\n\
         silent:\n  host: {silent_addr}\n  port: {silent_port}\n  user: {user}\n  timeout: 4\n"
    );
    std::fs::write(dir.join("roster"), roster).expect("roster");
    let kh = dir.join("known_hosts");
    let mut plain = format!(
        "cachedir: {}\nknown_hosts_file: {}\n",
        dir.join("mcache").display(),
        kh.display()
    );
    std::fs::create_dir_all(dir.join("etc")).expect("etc");
    std::fs::write(dir.join("etc/master"), &plain).expect("master");
    // Every connection setting from the master config alone.
    plain.push_str(&format!(
        "ssh_user: {user}\nssh_port: {port}\nssh_priv: {}\nssh_sudo: True\n\
         ssh_timeout: 5\nssh_identities_only: True\nssh_max_procs: 2\n",
        dir.join("id_user").display()
    ));
    std::fs::create_dir_all(dir.join("etc-cfg")).expect("etc-cfg");
    std::fs::write(dir.join("etc-cfg/master"), &plain).expect("master");
    let rig = Rig {
        bin,
        dir: dir.clone(),
    };
    let uid = {
        let o = Command::new("id").args(["-u", &user]).output().expect("id");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };

    // 1. No key, no password: refused.
    let (v, o) = rig.json("etc", "c0", &["pw", "test.ping"]);
    assert_eq!(v["pw"]["retcode"], json!(255), "{}", both(&o));
    assert!(
        v["pw"]["stderr"]
            .as_str()
            .is_some_and(|s| s.contains("Permission denied")),
        "{v}"
    );

    // 2. --passwd: logs in; the password is in no argv while it runs, nor
    // in the debug log. (The run lasts a few seconds: upload and sleep.)
    let mut child = rig
        .cmd(
            "etc",
            "c1",
            &[
                "-l",
                "debug",
                "--out",
                "json",
                "--static",
                "--passwd",
                &password,
                "pw",
                "cmd.run",
                "sleep 2; id -u",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("salt-ssh");
    // Read both pipes in threads so the child never blocks on them.
    let out_reader = {
        let mut so = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        })
    };
    let err_reader = {
        let mut se = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        })
    };
    let mut ssh_seen = 0;
    let mut leaks = Vec::new();
    let started = Instant::now();
    // Bounded: the run ends (deadline 600 s is salt-ssh's; 120 s here).
    while started.elapsed() < Duration::from_secs(120) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        let (hits, ssh) = argv_scan(&password);
        // Our own salt-ssh child has it in argv (--passwd, as Salt's flag
        // does); no ssh process may.
        let own = child.id();
        leaks.extend(hits.into_iter().filter(|p| *p != own));
        ssh_seen = ssh_seen.max(ssh);
        std::thread::sleep(Duration::from_millis(25));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    let (stdout, stderr) = (
        out_reader.join().expect("stdout"),
        err_reader.join().expect("stderr"),
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).expect("json"),
        json!({ "pw": uid }),
        "{stderr}"
    );
    assert!(ssh_seen > 0, "no ssh child was seen while the run lasted");
    assert!(leaks.is_empty(), "password in the argv of {leaks:?}");
    assert!(
        stderr.contains("DEBUG") || stderr.contains("debug"),
        "{stderr}"
    );
    assert!(!stderr.contains(&password), "password in the log: {stderr}");

    // 3. --key-deploy: the key goes in with the password; then a fresh
    // connection with the key alone works.
    let id = dir.join("id_user");
    let id = id.to_str().expect("utf8");
    let (v, o) = rig.json(
        "etc",
        "c2",
        &[
            "--key-deploy",
            "--passwd",
            &password,
            "--priv",
            id,
            "pw",
            "test.ping",
        ],
    );
    assert_eq!(v, json!({"pw": true}), "{}", both(&o));
    let keys = std::fs::read_to_string(home.join(".ssh/authorized_keys")).expect("keys");
    let public = std::fs::read_to_string(dir.join("id_user.pub")).expect("pub");
    assert!(keys.contains(public.trim()), "{keys}");
    let (v, o) = rig.json("etc", "c3", &["--priv", id, "pw", "test.ping"]);
    assert_eq!(v, json!({"pw": true}), "{}", both(&o));

    // 4. sudo: True runs the thin, and -r commands, as root; the flags of
    // the raw command are its own (trailing words).
    let (v, o) = rig.json(
        "etc",
        "c3",
        &["--priv", id, "-L", "pw,asroot", "cmd.run", "id -u"],
    );
    assert_eq!(v, json!({"pw": uid, "asroot": "0"}), "{}", both(&o));
    let (v, o) = rig.json("etc", "c3", &["--priv", id, "-r", "asroot", "id", "-u"]);
    assert_eq!(v["asroot"]["stdout"], json!("0\n"), "{}", both(&o));
    // The master config's ssh_* options alone: user, port, key, sudo.
    let (v, o) = rig.json("etc-cfg", "c4", &["cfg", "cmd.run", "id -u"]);
    assert_eq!(v, json!({"cfg": "0"}), "{}", both(&o));

    // 5. The silent host: the answering one prints first, at once; the
    // silent one after its 4 s timeout, as an ssh failure.
    let t0 = Instant::now();
    let mut child = rig
        .cmd(
            "etc",
            "c3",
            &[
                "--priv",
                id,
                "--out",
                "json",
                "-L",
                "pw,silent",
                "test.ping",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("salt-ssh");
    let so = child.stdout.take().expect("stdout");
    let mut lines: Vec<(Duration, String)> = Vec::new();
    // Bounded by the child's output (its deadline and the host timeout).
    for line in BufReader::new(so).lines().take(10_000) {
        let Ok(line) = line else { break };
        lines.push((t0.elapsed(), line));
    }
    let status = child.wait().expect("wait");
    let total = t0.elapsed();
    let text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    let first = |key: &str| {
        lines
            .iter()
            .find(|(_, l)| l.contains(&format!("\"{key}\"")))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    let (t_pw, t_silent) = (first("pw"), first("silent"));
    eprintln!("answering host after {t_pw:?}, silent host after {t_silent:?}, all {total:?}");
    assert!(t_pw < t_silent, "{text}");
    assert!(t_silent >= Duration::from_secs(3), "{t_silent:?}: {text}");
    assert!(total < Duration::from_secs(60), "{total:?}");
    assert_eq!(status.code(), Some(20), "{text}");
    assert!(text.contains("255"), "{text}");
    drop(silent);
    drop(guard);
}
