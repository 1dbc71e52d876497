//! End to end: a real master and ten real minions on loopback, driven
//! through the real CLIs. Key trust (pending → accept, reject, delete),
//! execution modules, outputters, exit codes, restart, hostile input.

use brine_deploy::topology::Topology;
use serde_json::Value;
use std::time::Duration;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}):\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("minion{i}")).collect()
}

#[test]
fn fleet_keys_modules_outputs_and_exit_codes() {
    let mut topo = Topology::builder()
        .direct_minions(10)
        .auto_accept(false)
        .grains(
            "minion1",
            serde_json::json!({"role": "web", "dc": {"name": "east"}}),
        )
        .start(Duration::from_secs(30))
        .expect("topology");

    // Pending: every key waits for the operator.
    let t = &topo;
    t.eventually(Duration::from_secs(30), "ten pending keys", || {
        t.cli("top", "salt-key", &["-L", "--out", "json"])
            .map(|o| json(&o)["minions_pre"].as_array().map(|a| a.len()) == Some(10))
            .unwrap_or(false)
    })
    .expect("pending keys");
    let none = topo.salt(&["*", "test.ping"]).expect("salt");
    assert_eq!(code(&none), 2, "nothing is accepted yet: {none:?}");

    // Reject one, accept the rest.
    let out = topo
        .cli("top", "salt-key", &["-r", "minion10", "-y"])
        .expect("reject");
    assert!(out.status.success(), "{out:?}");
    let out = topo
        .cli("top", "salt-key", &["-a", "minion*", "-y"])
        .expect("accept");
    assert!(out.status.success(), "{out:?}");
    let accepted = ids(9);
    topo.wait_up(&accepted, Duration::from_secs(30))
        .expect("accepted minions up");
    let keys = json(
        &topo
            .cli("top", "salt-key", &["-L", "--out", "json"])
            .expect("list"),
    );
    assert_eq!(
        keys["minions"].as_array().map(|a| a.len()),
        Some(9),
        "{keys}"
    );
    assert_eq!(keys["minions_rejected"], serde_json::json!(["minion10"]));

    // The whole fleet answers; the rejected minion is not even expected.
    let out = topo
        .salt(&["*", "test.ping", "--out", "json", "--static"])
        .expect("ping");
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let doc = json(&out);
    let obj = doc.as_object().expect("object");
    assert_eq!(obj.len(), 9, "{doc}");
    assert!(obj.values().all(|v| v == &Value::Bool(true)));
    assert!(!obj.contains_key("minion10"));

    // Execution modules through the CLI.
    let echo = json(
        &topo
            .salt(&[
                "minion1",
                "test.echo",
                "hello world",
                "--out",
                "json",
                "--static",
            ])
            .expect("echo"),
    );
    assert_eq!(echo["minion1"], "hello world");
    let all = json(
        &topo
            .salt(&[
                "minion2",
                "cmd.run_all",
                "echo out; echo err >&2; exit 3",
                "--out",
                "json",
                "--static",
            ])
            .expect("run_all"),
    );
    assert_eq!(all["minion2"]["stdout"], "out");
    assert_eq!(all["minion2"]["stderr"], "err");
    assert_eq!(all["minion2"]["retcode"], 3);
    assert!(all["minion2"]["pid"].as_u64().is_some());
    let cwd = json(
        &topo
            .salt(&[
                "minion3", "cmd.run", "pwd", "cwd=/tmp", "--out", "json", "--static",
            ])
            .expect("cwd"),
    );
    assert_eq!(cwd["minion3"], "/tmp");
    let g = json(
        &topo
            .salt(&[
                "minion1",
                "grains.get",
                "dc:name",
                "--out",
                "json",
                "--static",
            ])
            .expect("grains.get"),
    );
    assert_eq!(g["minion1"], "east");
    let items = json(
        &topo
            .salt(&["minion1", "grains.items", "--out", "json", "--static"])
            .expect("items"),
    );
    for k in [
        "id",
        "os",
        "os_family",
        "kernel",
        "host",
        "ipv4",
        "num_cpus",
        "mem_total",
        "cpuarch",
        "machine_id",
        "role",
    ] {
        assert!(
            items["minion1"].get(k).is_some(),
            "grain {k} missing: {}",
            items["minion1"]
        );
    }
    assert_eq!(items["minion1"]["id"], "minion1");
    let doc = json(
        &topo
            .salt(&[
                "minion1",
                "sys.doc",
                "test.ping",
                "--out",
                "json",
                "--static",
            ])
            .expect("doc"),
    );
    assert!(
        doc["minion1"]["test.ping"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{doc}"
    );
    let arg = json(
        &topo
            .salt(&[
                "minion4", "test.arg", "1", "two", "k=v", "--out", "json", "--static",
            ])
            .expect("arg"),
    );
    assert_eq!(arg["minion4"]["args"], serde_json::json!([1, "two"]));
    assert_eq!(arg["minion4"]["kwargs"]["k"], "v");

    // Exit codes: a failing command is 1, an unknown function is 1 with
    // Salt's message, a bad target expression is 64.
    let fail = topo.salt(&["minion5", "cmd.run", "exit 7"]).expect("fail");
    assert_eq!(code(&fail), 1, "{fail:?}");
    let pass = topo
        .salt(&["minion5", "cmd.run", "exit 7", "--retcode-passthrough"])
        .expect("pass");
    assert_eq!(code(&pass), 7, "{pass:?}");
    let unknown = topo
        .salt(&["minion5", "nosuch.fun", "--out", "json", "--static"])
        .expect("unknown");
    assert_eq!(code(&unknown), 1);
    assert!(json(&unknown)["minion5"]
        .as_str()
        .is_some_and(|s| s.contains("is not available")));
    let bad = topo
        .salt(&["-C", "G@os:Debian and (web*", "test.ping"])
        .expect("bad target");
    assert_eq!(code(&bad), 64, "{bad:?}");
    let usage = topo.salt(&["--no-such-flag"]).expect("usage");
    assert_eq!(code(&usage), 64);

    // Streaming JSON is one document per minion; nested is the default.
    let stream = topo
        .salt(&["minion[1-3]", "test.ping", "--out", "json"])
        .expect("stream");
    let text = String::from_utf8_lossy(&stream.stdout);
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("json stream");
    assert_eq!(docs.len(), 3, "{text}");
    let nested = topo.salt(&["minion1", "test.ping"]).expect("nested");
    assert_eq!(
        String::from_utf8_lossy(&nested.stdout),
        "minion1:\n    True\n"
    );

    // The job cache has it all.
    let jobs = json(
        &topo
            .cli("top", "salt-run", &["jobs.list_jobs", "--out", "json"])
            .expect("list_jobs"),
    );
    assert!(jobs.as_object().is_some_and(|m| m.len() >= 10), "{jobs}");
    let asynced = topo
        .salt(&["minion6", "test.echo", "later", "--async"])
        .expect("async");
    let line = String::from_utf8_lossy(&asynced.stdout).to_string();
    let jid = line.trim().rsplit(' ').next().expect("jid").to_string();
    assert!(line.starts_with("Executed command with job ID: "), "{line}");
    let t = &topo;
    t.eventually(Duration::from_secs(10), "async return stored", || {
        t.cli(
            "top",
            "salt-run",
            &["jobs.lookup_jid", &jid, "--out", "json"],
        )
        .map(|o| json(&o)["minion6"] == "later")
        .unwrap_or(false)
    })
    .expect("lookup_jid");

    // A killed minion is named, with exit code 20.
    topo.stop("minion9", true).expect("kill minion9");
    let out = topo
        .salt(&["*", "test.ping", "-t", "2"])
        .expect("ping after kill");
    assert_eq!(code(&out), 20, "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("minion9:\n    Minion did not return."),
        "{text}"
    );

    // Delete a key: that minion reads nothing published afterwards.
    let out = topo
        .cli("top", "salt-key", &["-d", "minion8", "-y"])
        .expect("delete");
    assert!(out.status.success(), "{out:?}");
    let out = topo
        .salt(&[
            "*", "cmd.run", "echo ran", "--out", "json", "--static", "-t", "3",
        ])
        .expect("after delete");
    let doc = json(&out);
    assert!(
        doc.get("minion8").is_none(),
        "deleted minion was expected: {doc}"
    );
    assert_eq!(doc["minion1"], "ran");
    std::thread::sleep(Duration::from_millis(500));
    let log8 = topo.log("minion8");
    assert!(
        !log8.contains("fun=cmd.run"),
        "deleted minion ran a job:\n{log8}"
    );
}

#[test]
fn master_restart_keeps_keys_and_returns() {
    let mut topo = Topology::builder()
        .direct_minions(10)
        .start(Duration::from_secs(40))
        .expect("topology");
    let out = topo
        .salt(&["*", "test.echo", "before", "--async"])
        .expect("async");
    let jid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit(' ')
        .next()
        .expect("jid")
        .to_string();
    let t = &topo;
    t.eventually(Duration::from_secs(10), "ten returns stored", || {
        t.cli(
            "top",
            "salt-run",
            &["jobs.lookup_jid", &jid, "--out", "json"],
        )
        .map(|o| json(&o).as_object().map(|m| m.len()) == Some(10))
        .unwrap_or(false)
    })
    .expect("stored");
    topo.stop("top", false).expect("stop master");
    topo.spawn_master("top", "salt-master")
        .expect("restart master");
    let all = ids(10);
    topo.wait_up(&all, Duration::from_secs(30))
        .expect("minions back without operator action");
    let out = topo
        .salt(&["*", "test.ping", "--out", "json", "--static"])
        .expect("ping");
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&out).as_object().map(|m| m.len()), Some(10));
    let old = json(
        &topo
            .cli(
                "top",
                "salt-run",
                &["jobs.lookup_jid", &jid, "--out", "json"],
            )
            .expect("lookup"),
    );
    assert_eq!(
        old.as_object().map(|m| m.len()),
        Some(10),
        "returns survive a restart: {old}"
    );
    let keys = json(
        &topo
            .cli("top", "salt-key", &["-L", "--out", "json"])
            .expect("keys"),
    );
    assert_eq!(keys["minions"].as_array().map(|a| a.len()), Some(10));
}

#[test]
fn salt_call_fingerprints_config_errors_and_socket_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let topo = Topology::builder()
        .direct_minions(1)
        .start(Duration::from_secs(30))
        .expect("topology");
    let m = &topo.minions[0];
    let call = |args: &[&str]| {
        std::process::Command::new(topo.bin.join("salt-call"))
            .arg("-c")
            .arg(&m.config_dir)
            .args(args)
            .output()
            .expect("salt-call")
    };
    // salt-call --local prints the same fingerprint salt-key shows.
    let local = json(&call(&["--local", "key.finger", "--out", "json"]));
    let fp = local["local"].as_str().expect("fingerprint").to_string();
    let listed = topo
        .cli("top", "salt-key", &["-f", "minion1"])
        .expect("salt-key -f");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(&fp), "salt-key -f:\n{text}\nsalt-call: {fp}");
    let ping = call(&["--local", "test.ping"]);
    assert_eq!(String::from_utf8_lossy(&ping.stdout), "local:\n    True\n");
    let failed = call(&["--local", "cmd.run", "exit 4", "--retcode-passthrough"]);
    assert_eq!(code(&failed), 4);
    let failed = call(&["--local", "cmd.run", "exit 4"]);
    assert_eq!(code(&failed), 1);

    // The client socket and its token are for root (or the master's user) only.
    let root = topo.top.config_dir.join("root");
    let sock = walk_find(&root, "master.ipc").expect("socket");
    let token = walk_find(&root, ".root_key").expect("token");
    assert_eq!(
        std::fs::metadata(&sock).expect("sock").permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&token)
            .expect("token")
            .permissions()
            .mode()
            & 0o777,
        0o400
    );

    // A bad value stops the daemon with 78 and names the key and the file;
    // an unknown key is warned about by name.
    let bad = topo.root.path().join("bad");
    std::fs::create_dir_all(&bad).expect("dir");
    std::fs::write(bad.join("master"), "ret_port: abc\n").expect("write");
    let out = std::process::Command::new(topo.bin.join("salt-master"))
        .arg("-c")
        .arg(&bad)
        .output()
        .expect("salt-master");
    assert_eq!(code(&out), 78);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ret_port") && err.contains(&bad.join("master").display().to_string()),
        "{err}"
    );
    std::fs::write(
        bad.join("minion"),
        format!(
            "id: x\nmaster: 127.0.0.1\nroot_dir: {}\nno_such_option: 1\nlog_level: nonsense\n",
            bad.display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(topo.bin.join("salt-minion"))
        .arg("-c")
        .arg(&bad)
        .output()
        .expect("salt-minion");
    assert_eq!(code(&out), 78, "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("log_level"));
}

fn walk_find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir() {
            if let Some(f) = walk_find(&p, name) {
                return Some(f);
            }
        }
    }
    None
}
