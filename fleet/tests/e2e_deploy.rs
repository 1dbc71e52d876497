//! Bulk minion deploy end to end: a real top master rendered from a fleet
//! file and started here, a real OpenSSH server on loopback listening on
//! ten addresses (ten "hosts", each minion under its own `root_dir`), and
//! `brine-fleet deploy`: `--dry-run` writes nothing; the deploy installs
//! all ten, their salt-minion processes start and sign in already accepted
//! (no `salt-key -A`), and `salt '*' test.ping` answers from all ten; a
//! second deploy reports ten unchanged and restarts nothing; a minion that
//! was killed is started again by the next deploy (that host alone
//! `updated`); an unreachable host is reported
//! failed with its reason and exit 20 while the others are fine; a binary
//! of another version is refused without `--upgrade` and replaced with it.
//! A second test deploys a syndic (`--syndics`) and two minions behind it,
//! which answer on the top through it.
//! Every minion is stopped by the PID of its pid file, the master and sshd
//! by PID, also when the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use brine_deploy::launch::{self, Net, Stop};
use brine_deploy::sshd::{self, Sshd};
use common::QUICK_OPTS;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const HOSTS: usize = 10;

/// Stops the master by PID when dropped.
struct Master(Child);

impl Drop for Master {
    fn drop(&mut self) {
        launch::stop(&mut self.0, Stop::Term(Duration::from_secs(5)));
    }
}

/// Stops every deployed minion by the PID in its pid file when dropped.
struct Minions(Vec<PathBuf>);

/// The process runs (exists and is not a zombie waiting to be reaped).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

impl Drop for Minions {
    fn drop(&mut self) {
        for pid_file in &self.0 {
            let Ok(text) = std::fs::read_to_string(pid_file) else {
                continue;
            };
            let pid = text.trim().to_string();
            if pid.is_empty() || !pid.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let gone =
                launch::poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
                    !alive(&pid)
                });
            if !gone {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Rig {
    dir: PathBuf,
    fleet_bin: PathBuf,
}

impl Rig {
    fn deploy(&self, fleet: &str, extra: &[&str]) -> Output {
        Command::new(&self.fleet_bin)
            .arg("deploy")
            .arg(self.dir.join(fleet))
            .arg("--master-config")
            .arg(self.dir.join("out/top"))
            .arg("--priv")
            .arg(self.dir.join("id_client"))
            .arg("--known-hosts-file")
            .arg(self.dir.join("known_hosts"))
            .args(["--service", "process", "-t", "5", "--deadline", "120"])
            .args(extra)
            .env("BRINE_SSH_CONTROL_DIR", self.dir.join("c"))
            .stdin(Stdio::null())
            .output()
            .expect("brine-fleet deploy")
    }
}

/// The line of the result table for `id`.
fn row<'a>(out: &'a str, id: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no row for {id} in\n{out}"))
}

fn result_of<'a>(out: &'a str, id: &str) -> &'a str {
    row(out, id).split_whitespace().nth(2).unwrap_or("")
}

/// sshd on `n` loopback addresses (key login with the test's client key,
/// host keys checked against the test's known_hosts, which also lists one
/// address where nothing listens), in a fresh temporary directory.
struct Setup {
    _sshd: Sshd,
    bin: PathBuf,
    fleet_bin: PathBuf,
    dir: PathBuf,
    top: String,
    addrs: Vec<String>,
    unreachable: String,
    port: u16,
    _net: Net,
    _tmp: tempfile::TempDir,
}

fn setup(n: usize) -> Setup {
    launch::ensure_built().expect("workspace binaries");
    let bin = launch::bin_dir();
    launch::require_binaries(
        &bin,
        &[
            "salt-master",
            "salt-minion",
            "salt-syndic",
            "salt",
            "salt-key",
        ],
    )
    .expect("binaries");
    let fleet_bin = PathBuf::from(env!("CARGO_BIN_EXE_brine-fleet"));
    let tmp = tempfile::Builder::new()
        .prefix("bdep")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let net = Net::fresh().expect("loopback block");
    let top = net.host(1).unwrap();
    let addrs: Vec<String> = (0..n).map(|i| net.host(i as u32 + 2).unwrap()).collect();
    let unreachable = net.host(n as u32 + 2).unwrap();
    let port = sshd::free_port(&addrs[0]).unwrap();
    let host_pub = sshd::keygen(&dir.join("host_key")).unwrap();
    let client_pub = sshd::keygen(&dir.join("id_client")).unwrap();
    std::fs::write(dir.join("authorized_keys"), &client_pub).unwrap();
    let sshd = Sshd::start(&dir, port, &addrs, dir.join("c")).expect("sshd");
    let key = sshd::key_of(&host_pub);
    let known: String = addrs
        .iter()
        .chain([&unreachable])
        .map(|a| format!("[{a}]:{port} {key}\n"))
        .collect();
    std::fs::write(dir.join("known_hosts"), known).unwrap();
    Setup {
        _sshd: sshd,
        bin,
        fleet_bin,
        dir,
        top,
        addrs,
        unreachable,
        port,
        _net: net,
        _tmp: tmp,
    }
}

impl Setup {
    /// Renders `fleet` into `out/` and starts its top master from there.
    fn render_and_start_master(&self, fleet: &str) -> (Master, PathBuf) {
        let dir = &self.dir;
        let render = Command::new(&self.fleet_bin)
            .arg("render")
            .arg(dir.join(fleet))
            .arg("--out")
            .arg(dir.join("out"))
            .output()
            .unwrap();
        assert_eq!(render.status.code(), Some(0), "{}", text(&render));
        let log = dir.join("top.log");
        let mut child = launch::spawn_daemon(
            &self.bin.join("salt-master"),
            &dir.join("out/top"),
            &log,
            &launch::DAEMON_ENV,
        )
        .expect("start the master");
        let ret = format!("{}:4506", self.top);
        launch::wait_ready(
            "top",
            Some(&mut child),
            &log,
            Duration::from_secs(30),
            || std::net::TcpStream::connect(&ret).is_ok(),
        )
        .expect("master ready");
        (Master(child), log)
    }

    fn rig(&self) -> Rig {
        Rig {
            dir: self.dir.clone(),
            fleet_bin: self.fleet_bin.clone(),
        }
    }

    /// A CLI of the top master.
    fn cli(&self, exe: &str, args: &[&str]) -> Output {
        Command::new(self.bin.join(exe))
            .arg("-c")
            .arg(self.dir.join("out/top"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cli")
    }

    /// Polls `salt '*' test.ping` on the top until every id answers.
    fn all_answer(&self, ids: &[String], wait: Duration) -> Result<(), String> {
        let mut last = String::new();
        let ok = launch::poll_until(wait, Duration::from_millis(500), || {
            let o = self.cli("salt", &["*", "test.ping", "--out", "json", "--static"]);
            last = text(&o);
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            ids.iter().all(|id| v[id] == Value::Bool(true))
        });
        if ok {
            Ok(())
        } else {
            Err(last)
        }
    }
}

#[test]
fn bulk_deploy_installs_ten_minions_that_sign_in_accepted() {
    let su = setup(HOSTS);
    let (dir, top, addrs, unreachable, port, bin) = (
        su.dir.clone(),
        su.top.clone(),
        su.addrs.clone(),
        su.unreachable.clone(),
        su.port,
        su.bin.clone(),
    );

    // The fleet: ten minions of the top master, each under its own root.
    let ids: Vec<String> = (1..=HOSTS).map(|n| format!("dm{n:02}")).collect();
    let hosts: Vec<String> = ids
        .iter()
        .zip(&addrs)
        .map(|(id, a)| format!("{{id: {id}, host: {a}}}"))
        .collect();
    let fleet = |hosts: &[String]| {
        format!(
            "\
master: {{id: top, host: {top}}}
defaults:
  ssh_port: {port}
  root_dir: '{root}/{{id}}'
  master_opts: {{log_level: info}}
  minion_opts: {{log_level: info, acceptance_wait_time: 1, recon_default: 200,
                 recon_max: 2000, random_reauth_delay: 1}}
hosts: [{}]
",
            hosts.join(", "),
            root = dir.join("hosts").display()
        )
    };
    std::fs::write(dir.join("fleet.yaml"), fleet(&hosts)).unwrap();
    let mut with_down = hosts.clone();
    with_down.push(format!("{{id: dm-down, host: {unreachable}}}"));
    std::fs::write(dir.join("down.yaml"), fleet(&with_down)).unwrap();
    std::fs::write(dir.join("one.yaml"), fleet(&hosts[..1])).unwrap();

    let (_master, log) = su.render_and_start_master("fleet.yaml");
    let root = |id: &str| dir.join("hosts").join(id);
    let _minions = Minions(
        ids.iter()
            .map(|id| root(id).join("var/run/salt-minion.pid"))
            .collect(),
    );
    let rig = su.rig();

    // --dry-run: every host would change, nothing is written.
    let o = rig.deploy("fleet.yaml", &["--dry-run"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for id in &ids {
        assert!(row(&out, id).contains("would change"), "{}", text(&o));
        assert!(row(&out, id).contains("binary, config, key pair, accepted on top, started"));
        assert!(!root(id).exists(), "--dry-run wrote under {id}");
    }
    let accepted_dir = root("top").join("etc/salt/pki/master/minions");
    assert!(
        std::fs::read_dir(&accepted_dir).map_or(true, |d| d.count() == 0),
        "--dry-run accepted keys"
    );

    // The deploy: all ten installed and started.
    let t0 = std::time::Instant::now();
    let o = rig.deploy("fleet.yaml", &[]);
    eprintln!("first deploy of ten: {:?}", t0.elapsed());
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out.contains("10 host(s): 10 installed"), "{}", text(&o));
    for id in &ids {
        assert_eq!(result_of(&out, id), "installed", "{}", text(&o));
        let r = root(id);
        let pem = r.join("etc/salt/pki/minion/minion.pem");
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(&pem), 0o600);
        assert_eq!(mode(&r.join("etc/salt/pki/minion/minion.pub")), 0o644);
        assert_eq!(mode(&r.join("usr/bin/salt-minion")), 0o755);
        assert!(r.join("etc/salt/minion").exists());
        // Pre-accepted on the top with the host's public key.
        let public = std::fs::read_to_string(r.join("etc/salt/pki/minion/minion.pub")).unwrap();
        let accepted = std::fs::read_to_string(accepted_dir.join(id)).unwrap();
        assert_eq!(accepted.trim(), public.trim(), "{id}");
        let pid = std::fs::read_to_string(r.join("var/run/salt-minion.pid")).unwrap();
        assert!(alive(pid.trim()), "{id}: salt-minion is not running");
    }

    // They sign in accepted: no salt-key -A, nothing pending, and all ten
    // answer test.ping.
    let t0 = std::time::Instant::now();
    if let Err(last) = su.all_answer(&ids, Duration::from_secs(90)) {
        panic!(
            "not all ten answered: {last}\nmaster log: {}",
            launch::log_tail(&log)
        );
    }
    eprintln!("all ten answered {:?} after the deploy", t0.elapsed());
    let cli = |exe: &str, args: &[&str]| su.cli(exe, args);
    let mut last = String::new();
    let keys: Value =
        serde_json::from_slice(&cli("salt-key", &["-L", "--out", "json"]).stdout).unwrap();
    assert_eq!(keys["minions_pre"], serde_json::json!([]), "{keys}");
    assert_eq!(
        keys["minions"].as_array().map(Vec::len),
        Some(HOSTS),
        "{keys}"
    );

    // A second deploy changes nothing.
    let pids: Vec<String> = ids
        .iter()
        .map(|id| std::fs::read_to_string(root(id).join("var/run/salt-minion.pid")).unwrap())
        .collect();
    let t0 = std::time::Instant::now();
    let o = rig.deploy("fleet.yaml", &[]);
    eprintln!("second deploy of ten (no changes): {:?}", t0.elapsed());
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out.contains("10 host(s): 10 unchanged"), "{}", text(&o));
    for (id, pid) in ids.iter().zip(&pids) {
        let now = std::fs::read_to_string(root(id).join("var/run/salt-minion.pid")).unwrap();
        assert_eq!(&now, pid, "{id} was restarted");
    }

    // A minion that died is started again, and only that one.
    let dead = pids[1].trim().to_string();
    let _ = Command::new("kill").args(["-KILL", &dead]).status();
    assert!(
        launch::poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
            !alive(&dead)
        }),
        "dm02 did not die"
    );
    let o = rig.deploy("fleet.yaml", &[]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        out.contains("10 host(s): 1 updated, 9 unchanged"),
        "{}",
        text(&o)
    );
    assert_eq!(result_of(&out, "dm02"), "updated", "{}", text(&o));
    assert!(row(&out, "dm02").contains("started"), "{}", text(&o));
    let again = std::fs::read_to_string(root("dm02").join("var/run/salt-minion.pid")).unwrap();
    assert!(alive(again.trim()), "dm02 was not started again");

    // An unreachable host fails with its reason; the others are fine.
    let o = rig.deploy("down.yaml", &[]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(20), "{}", text(&o));
    assert_eq!(result_of(&out, "dm-down"), "failed", "{}", text(&o));
    assert!(
        row(&out, "dm-down").contains("Connection refused"),
        "{}",
        text(&o)
    );
    assert!(
        err.contains("1 host(s) failed") && err.contains("dm-down"),
        "{}",
        text(&o)
    );
    for id in &ids {
        assert_eq!(result_of(&out, id), "unchanged", "{}", text(&o));
    }

    // Another version of the binary: refused without --upgrade, then
    // replaced and restarted with it.
    let other = dir.join("salt-minion-other");
    let mut bytes = std::fs::read(bin.join("salt-minion")).unwrap();
    bytes.extend_from_slice(b"\nbrine-test other version\n");
    std::fs::write(&other, bytes).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let other_s = other.to_str().unwrap();
    let o = rig.deploy("one.yaml", &["--minion-bin", other_s]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(20), "{}", text(&o));
    assert!(
        row(&out, "dm01").contains("other version") && row(&out, "dm01").contains("--upgrade"),
        "{}",
        text(&o)
    );
    let o = rig.deploy("one.yaml", &["--minion-bin", other_s, "--upgrade"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(result_of(&out, "dm01"), "upgraded", "{}", text(&o));
    assert!(row(&out, "dm01").contains("restarted"), "{}", text(&o));
    let now = std::fs::read_to_string(root("dm01").join("var/run/salt-minion.pid")).unwrap();
    assert_ne!(now, pids[0], "dm01 was not restarted");
    assert!(!alive(pids[0].trim()), "the old dm01 process still runs");
    let answered = launch::poll_until(Duration::from_secs(60), Duration::from_millis(500), || {
        let o = cli("salt", &["dm01", "test.ping", "--out", "json", "--static"]);
        last = text(&o);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v["dm01"] == Value::Bool(true)
    });
    assert!(answered, "the upgraded dm01 does not answer: {last}");
}

#[test]
fn syndics_deploy_with_their_role_and_minions_answer_through_them() {
    let su = setup(3);
    let dir = su.dir.clone();
    let syn = &su.addrs[0];
    let (pubp, retp) = (sshd::free_port(syn).unwrap(), sshd::free_port(syn).unwrap());
    let ids = ["ds-m1".to_string(), "ds-m2".to_string()];
    let fleet = format!(
        "\
master: {{id: top, host: {top}}}
defaults:
  ssh_port: {port}
  root_dir: '{root}/{{id}}'
{QUICK_OPTS}datacenters:
  dc1:
    syndics: [{{id: ds-syn, host: {syn}, publish_port: {pubp}, ret_port: {retp}}}]
    hosts: [{{id: ds-m1, host: {a1}}}, {{id: ds-m2, host: {a2}}}]
",
        top = su.top,
        port = su.port,
        root = dir.join("hosts").display(),
        a1 = su.addrs[1],
        a2 = su.addrs[2],
    );
    std::fs::write(dir.join("fleet.yaml"), fleet).unwrap();
    let (_master, log) = su.render_and_start_master("fleet.yaml");
    let root = |id: &str| dir.join("hosts").join(id);
    let _daemons = Minions(vec![
        root("ds-m1").join("var/run/salt-minion.pid"),
        root("ds-m2").join("var/run/salt-minion.pid"),
        root("ds-syn").join("var/run/salt-syndic.pid"),
    ]);
    let rig = su.rig();
    let o = rig.deploy("fleet.yaml", &["--syndics"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out.contains("3 host(s): 3 installed"), "{}", text(&o));
    assert!(
        row(&out, "ds-syn").contains("accepted on top, syndic role on top"),
        "{}",
        text(&o)
    );
    for id in &ids {
        assert!(row(&out, id).contains("accepted on ds-syn"), "{}", text(&o));
    }
    // The syndic's key pair is in its syndic_pki_dir, granted on the top.
    let syn_pki = root("ds-syn").join("etc/salt/pki/master");
    assert!(syn_pki.join("syndic/minion.pem").exists());
    assert!(root("top")
        .join("etc/salt/pki/master/syndics/ds-syn")
        .exists());
    for id in &ids {
        assert!(syn_pki.join("minions").join(id).exists(), "{id}");
    }
    if let Err(last) = su.all_answer(&ids, Duration::from_secs(90)) {
        panic!(
            "the minions did not answer through the syndic: {last}\nmaster log: {}",
            launch::log_tail(&log)
        );
    }
    let o = rig.deploy("fleet.yaml", &["--syndics"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out.contains("3 host(s): 3 unchanged"), "{}", text(&o));
}
