//! End to end: a small fleet file on loopback (top master and one syndic
//! on one address with their own ports, two minions behind the syndic) is
//! rendered by the `brine-fleet` binary, the real daemons are started from
//! the rendered config directories, keys are accepted with `salt-key` as
//! an operator would, and `salt '*' test.ping` on the top answers from both
//! minions. Every process is stopped by PID (also when the test fails).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use brine_deploy::launch::{self, Net, Stop};
use common::QUICK_OPTS;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Stops every daemon it holds by PID when dropped.
struct Daemons(Vec<(String, Child)>);

impl Drop for Daemons {
    fn drop(&mut self) {
        // Minions first, then the syndic, then the top.
        while let Some((_, mut c)) = self.0.pop() {
            launch::stop(&mut c, Stop::Term(Duration::from_secs(5)));
        }
    }
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run")
}

/// Two ports nobody listens on at `host` (held together, then freed).
fn free_ports(host: &str) -> (u16, u16) {
    let a = std::net::TcpListener::bind((host, 0)).unwrap();
    let b = std::net::TcpListener::bind((host, 0)).unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

#[test]
fn rendered_fleet_runs_and_answers_through_its_syndic() {
    launch::ensure_built().expect("workspace binaries");
    let bin = launch::bin_dir();
    let fleet_bin = PathBuf::from(env!("CARGO_BIN_EXE_brine-fleet"));
    let net = Net::fresh().expect("loopback block");
    let top = net.host(1).unwrap();
    let (pubp, retp) = free_ports(&top);
    let (m1, m2) = (net.host(3).unwrap(), net.host(4).unwrap());
    let tmp = tempfile::Builder::new()
        .prefix("brine-fleet-e2e-")
        .tempdir()
        .unwrap();
    let root = tmp.path().join("hosts");
    let fleet = format!(
        "\
master: {{id: top, host: {top}}}
defaults:
  root_dir: '{root}/{{id}}'
{QUICK_OPTS}datacenters:
  dc1:
    syndics: [{{id: syn1, host: {top}, publish_port: {pubp}, ret_port: {retp}}}]
    hosts: [{{id: fleet-m1, host: {m1}}}, {{id: fleet-m2, host: {m2}}}]
",
        root = root.display()
    );
    let file = tmp.path().join("fleet.yaml");
    std::fs::write(&file, fleet).unwrap();
    let out = tmp.path().join("out");
    let (file_s, out_s) = (file.to_str().unwrap(), out.to_str().unwrap());

    let check = run(&fleet_bin, &["check", file_s]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    let dry = run(&fleet_bin, &["render", file_s, "--out", out_s, "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{dry:?}");
    assert!(String::from_utf8_lossy(&dry.stdout).contains("syndic_master_port: 4506"));
    assert!(!out.exists(), "--dry-run wrote nothing");
    let render = run(&fleet_bin, &["render", file_s, "--out", out_s]);
    assert_eq!(render.status.code(), Some(0), "{render:?}");

    // The syndic's key is made and pre-accepted on the top, which grants
    // it the syndic role (`salt-key --gen-keys`, `--grant-syndic`).
    brine_deploy::topology::seed_syndic(&bin, "syn1", &out.join("syn1"), &out.join("top"))
        .expect("seed syndic");

    let mut daemons = Daemons(vec![]);
    for (id, exe, env) in [
        ("top", "salt-master", &launch::DAEMON_ENV[..]),
        ("syn1", "salt-syndic", &launch::DAEMON_ENV[..]),
        ("fleet-m1", "salt-minion", &[][..]),
        ("fleet-m2", "salt-minion", &[][..]),
    ] {
        let log = tmp.path().join(format!("{id}.log"));
        let mut child = launch::spawn_daemon(&bin.join(exe), &out.join(id), &log, env)
            .unwrap_or_else(|e| panic!("start {id}: {e}"));
        if exe != "salt-minion" {
            // A master is ready when its return port takes connections.
            let port = if id == "top" { 4506 } else { retp };
            let addr = format!("{top}:{port}");
            launch::wait_ready(id, Some(&mut child), &log, Duration::from_secs(30), || {
                std::net::TcpStream::connect(&addr).is_ok()
            })
            .expect("master ready");
        }
        daemons.0.push((id.to_string(), child));
    }

    let cli = |on: &str, exe: &str, args: &[&str]| {
        Command::new(bin.join(exe))
            .arg("-c")
            .arg(out.join(on))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cli")
    };
    // The minions' keys wait on the syndic: accept them all.
    let accepted = launch::poll_until(Duration::from_secs(60), Duration::from_millis(300), || {
        cli("syn1", "salt-key", &["-A", "-y"]);
        let keys: serde_json::Value =
            serde_json::from_slice(&cli("syn1", "salt-key", &["-L", "--out", "json"]).stdout)
                .unwrap_or_default();
        let acc = keys["minions"].as_array().cloned().unwrap_or_default();
        ["fleet-m1", "fleet-m2"]
            .iter()
            .all(|m| acc.contains(&serde_json::json!(m)))
    });
    assert!(
        accepted,
        "minion keys never reached syn1; logs in {}",
        tmp.path().display()
    );

    let mut last = String::new();
    let answered = launch::poll_until(Duration::from_secs(60), Duration::from_millis(500), || {
        let o = cli(
            "top",
            "salt",
            &["*", "test.ping", "--out", "json", "--static"],
        );
        last = format!(
            "{} {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        doc["fleet-m1"] == serde_json::json!(true) && doc["fleet-m2"] == serde_json::json!(true)
    });
    let logs = |id: &str| launch::log_tail(&tmp.path().join(format!("{id}.log")));
    assert!(
        answered,
        "salt '*' test.ping: {last}\ntop: {}\nsyn1: {}\nm1: {}",
        logs("top"),
        logs("syn1"),
        logs("fleet-m1")
    );
    drop(daemons);
    drop(net);
}
