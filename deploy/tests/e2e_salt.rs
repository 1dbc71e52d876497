//! End to end: the operator's `salt` and `salt-run` against a real master
//! and twelve real minions on loopback, each with its own static grains and
//! addresses. Every targeting type on both sides (the master's expected set
//! printed by `-v` must equal the minions that really ran), waiting with
//! `saltutil.find_job`, outputters, `--async` and the jobs runner, batch
//! windows measured from the minions' own clocks, fleet status after a
//! `kill -9`, exit codes and Ctrl-C.

use brine_deploy::topology::Topology;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const N: usize = 12;

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Every JSON document in `s` (a stream of documents, as `--out json`
/// without `--static` prints), skipping leading non-JSON lines (`-v`).
fn docs(s: &str) -> Vec<Value> {
    let start = s
        .lines()
        .scan(0usize, |pos, l| {
            let at = *pos;
            *pos += l.len() + 1;
            Some((at, l))
        })
        .find(|(_, l)| l.starts_with('{'))
        .map(|(at, _)| at)
        .unwrap_or(s.len());
    let mut out = Vec::new();
    let body = &s[start..];
    let mut it = serde_json::Deserializer::from_str(body).into_iter::<Value>();
    for v in it.by_ref() {
        match v {
            Ok(v) => out.push(v),
            Err(_) => break,
        }
    }
    out
}

/// The one JSON document of a `--static` run.
fn one(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", show(out)))
}

fn set(ids: &[usize]) -> BTreeSet<String> {
    ids.iter().map(|i| format!("minion{i}")).collect()
}

fn all() -> BTreeSet<String> {
    set(&(1..=N).collect::<Vec<_>>())
}

/// Static grains of minion `i`: role, a list grain, nested dc data and its
/// own IPv4/IPv6 addresses.
fn grains_of(i: usize, role: &str) -> Value {
    json!({
        "role": role,
        "roles": [role, if i.is_multiple_of(2) { "even" } else { "odd" }],
        "dc": {"name": if i <= 6 { "east" } else { "west" }, "rack": {"id": format!("r{}", (i - 1) % 3 + 1)}},
        "ipv4": [format!("10.0.0.{i}")],
        "ipv6": [format!("fd00::{i:x}")],
    })
}

fn role_of(i: usize) -> &'static str {
    match i {
        1..=4 => "web",
        5..=8 => "db",
        _ => "cache",
    }
}

fn fleet() -> Topology {
    let mut b = Topology::builder()
        .direct_minions(N)
        .master_config("nodegroups:\n  webs: 'G@role:web'\n  mixed: 'N@webs or L@minion12'");
    for i in 1..=N {
        b = b.grains(&format!("minion{i}"), grains_of(i, role_of(i)));
    }
    b.start(Duration::from_secs(60)).expect("topology")
}

/// `salt -v FLAGS TGT test.ping --out json`: (expected set from `-v`,
/// minions that returned True, exit code).
fn targeted(topo: &Topology, flags: &[&str], tgt: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut args = vec!["-v"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[tgt, "test.ping", "--out", "json", "--out-indent", "-1"]);
    let out = topo.salt(&args).expect("salt");
    assert_eq!(code(&out), 0, "{flags:?} {tgt}: {}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("Executing job with jid "),
        "-v prints the jid first: {}",
        show(&out)
    );
    let stderr = text(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("Expected minions ("))
        .unwrap_or_else(|| panic!("no expected set: {}", show(&out)));
    let expected: BTreeSet<String> = line
        .split_once(": ")
        .map(|(_, ids)| {
            ids.split(", ")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut ran = BTreeSet::new();
    for d in docs(&stdout) {
        let obj = d.as_object().expect("object");
        assert_eq!(obj.len(), 1, "one minion per document: {d}");
        for (id, v) in obj {
            assert_eq!(v, &Value::Bool(true), "{id}: {d}");
            assert!(ran.insert(id.clone()), "{id} returned twice");
        }
    }
    (expected, ran)
}

fn check(topo: &Topology, flags: &[&str], tgt: &str, want: BTreeSet<String>) {
    let (expected, ran) = targeted(topo, flags, tgt);
    assert_eq!(expected, want, "expected set of {flags:?} '{tgt}'");
    assert_eq!(ran, want, "minions that ran {flags:?} '{tgt}'");
}

#[test]
fn targeting_outputters_and_grain_refresh() {
    let mut topo = fleet();
    let t = &topo;

    // Every targeting type: the master's expected set equals who ran.
    check(t, &[], "*", all());
    check(t, &[], "minion1*", set(&[1, 10, 11, 12]));
    check(t, &[], "minion[2-3]", set(&[2, 3]));
    check(t, &["-E"], "^minion[2-4]$", set(&[2, 3, 4]));
    check(t, &["-L"], "minion1,minion5", set(&[1, 5]));
    check(t, &["-G"], "role:web", set(&[1, 2, 3, 4]));
    check(t, &["-G"], "dc:rack:id:r2", set(&[2, 5, 8, 11]));
    check(t, &["-G"], "role:w*", set(&[1, 2, 3, 4]));
    check(t, &["-G"], "dc:name:e*", set(&[1, 2, 3, 4, 5, 6]));
    check(t, &["-G"], "roles:even", set(&[2, 4, 6, 8, 10, 12]));
    check(
        t,
        &["-G", "--delimiter", "/"],
        "dc/rack/id/r3",
        set(&[3, 6, 9, 12]),
    );
    check(
        t,
        &["-P"],
        "role:^(web|db)$",
        set(&[1, 2, 3, 4, 5, 6, 7, 8]),
    );
    check(
        t,
        &["-P"],
        "dc:rack:id:r[13]",
        set(&[1, 3, 4, 6, 7, 9, 10, 12]),
    );
    check(t, &["-S"], "10.0.0.0/30", set(&[1, 2, 3]));
    check(t, &["-S"], "10.0.0.7", set(&[7]));
    check(t, &["-S"], "fd00::8/125", set(&[8, 9, 10, 11, 12]));
    check(t, &["-S"], "fd00::a", set(&[10]));
    check(t, &["-C"], "G@role:web and not minion1", set(&[2, 3, 4]));
    check(
        t,
        &["-C"],
        "( G@role:db or P@dc:name:^w ) and not L@minion7,minion8",
        set(&[5, 6, 9, 10, 11, 12]),
    );
    check(
        t,
        &["-C"],
        "(G@role:db or E@minion1[01]$) and S@10.0.0.0/29",
        set(&[5, 6, 7]),
    );
    check(
        t,
        &["-C"],
        "minion1* and not E@minion1$",
        set(&[10, 11, 12]),
    );
    check(t, &["-C"], "N@webs or minion9", set(&[1, 2, 3, 4, 9]));
    check(
        t,
        &["-C"],
        "S@fd00::/127 or G@roles:odd and G@role:cache",
        set(&[1, 9, 11]),
    );
    check(t, &["-N"], "webs", set(&[1, 2, 3, 4]));
    check(t, &["-N"], "mixed", set(&[1, 2, 3, 4, 12]));

    // A bad expression is a usage error and publishes nothing.
    for (flag, tgt) in [
        ("-C", "G@role:web and ("),
        ("-C", "X@foo"),
        ("-E", "minion("),
        ("-S", "10.0.0.300"),
        ("-N", "nosuch"),
        ("-G", "role"),
    ] {
        let out = t.salt(&[flag, tgt, "test.ping"]).expect("salt");
        assert_eq!(code(&out), 64, "{flag} '{tgt}': {}", show(&out));
    }
    // No match: nothing published, exit 2.
    let out = t.salt(&["-G", "role:nosuch", "test.ping"]).expect("salt");
    assert_eq!(code(&out), 2, "{}", show(&out));

    // Outputters.
    let out = t.salt(&["minion1", "test.ping"]).expect("nested");
    assert_eq!(text(&out.stdout), "minion1:\n    True\n", "{}", show(&out));
    let two = ["-L", "minion1,minion2", "test.echo", "hi"];
    let with = |extra: &[&str]| {
        let mut a = two.to_vec();
        a.extend_from_slice(extra);
        t.salt(&a).expect("salt")
    };
    let out = with(&["--out", "json", "--out-indent", "2", "--static"]);
    assert_eq!(
        text(&out.stdout),
        "{\n  \"minion1\": \"hi\",\n  \"minion2\": \"hi\"\n}\n",
        "{}",
        show(&out)
    );
    let out = with(&["--out", "json", "--out-indent", "-1"]);
    let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(
        lines,
        ["{\"minion1\": \"hi\"}", "{\"minion2\": \"hi\"}"],
        "{}",
        show(&out)
    );
    let out = with(&["--out", "json"]);
    let d = docs(&text(&out.stdout));
    assert_eq!(d.len(), 2, "one JSON document per minion: {}", show(&out));
    let out = with(&["--out", "yaml", "--static"]);
    assert_eq!(
        text(&out.stdout),
        "minion1: hi\nminion2: hi\n",
        "{}",
        show(&out)
    );
    let out = with(&["--out", "txt", "--static"]);
    assert_eq!(
        text(&out.stdout),
        "minion1: hi\nminion2: hi\n",
        "{}",
        show(&out)
    );
    let out = with(&["--out", "raw", "--static"]);
    assert_eq!(
        text(&out.stdout),
        "{'minion1': 'hi', 'minion2': 'hi'}\n",
        "{}",
        show(&out)
    );
    let out = with(&["--out", "quiet"]);
    assert_eq!(
        (code(&out), text(&out.stdout)),
        (0, String::new()),
        "{}",
        show(&out)
    );
    let file = topo.root.path().join("out.json");
    let file_s = file.to_string_lossy().into_owned();
    let out = with(&["--out", "json", "--static", "--out-file", &file_s]);
    assert_eq!(
        (code(&out), text(&out.stdout)),
        (0, String::new()),
        "{}",
        show(&out)
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("out file")).expect("json");
    assert_eq!(written, json!({"minion1": "hi", "minion2": "hi"}));

    // -p: a progress bar on a terminal (a pty from `script`), never in JSON.
    let on_tty = |extra: &str| {
        let line = format!(
            "{} -c {} '*' test.sleep 1 -p {extra}",
            t.bin.join("salt").display(),
            t.top.config_dir.display()
        );
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("script(1) runs salt on a pty");
        assert_eq!(code(&out), 0, "{line}: {}", show(&out));
        text(&out.stdout)
    };
    let screen = on_tty("");
    assert!(
        screen.contains("Returns: ["),
        "progress bar on a tty: {screen}"
    );
    let screen = on_tty("--out json");
    assert!(
        !screen.contains("Returns:"),
        "no progress bar in JSON: {screen}"
    );
    assert_eq!(docs(&screen).len(), N, "{screen}");

    // Batch and --async keep the exit codes: no match 2, bad target 64.
    for args in [
        &["nosuch*", "-b", "2", "test.ping"][..],
        &["nosuch*", "--async", "test.ping"],
    ] {
        let out = t.salt(args).expect("salt");
        assert_eq!(code(&out), 2, "{args:?}: {}", show(&out));
    }
    for args in [
        &["-E", "(", "-b", "2", "test.ping"][..],
        &["-E", "(", "--async", "test.ping"],
    ] {
        let out = t.salt(args).expect("salt");
        assert_eq!(code(&out), 64, "{args:?}: {}", show(&out));
    }

    // The master refreshes grains: saltutil.sync_grains answers and keeps
    // the roster right; a restart with other static grains moves minion3
    // from the web role to db.
    let out = t
        .salt(&[
            "minion3",
            "saltutil.sync_grains",
            "--out",
            "json",
            "--static",
        ])
        .expect("sync");
    assert_eq!(one(&out), json!({"minion3": []}), "{}", show(&out));
    check(t, &["-G"], "role:web", set(&[1, 2, 3, 4]));
    let m3 = topo
        .minions
        .iter()
        .find(|m| m.id == "minion3")
        .expect("minion3")
        .config_dir
        .join("minion");
    let cfg = std::fs::read_to_string(&m3).expect("minion3 config");
    let cfg: String = cfg
        .lines()
        .map(|l| {
            if l.starts_with("grains:") {
                format!("grains: {}", grains_of(3, "db"))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&m3, cfg + "\n").expect("rewrite minion3 config");
    topo.stop("minion3", false).expect("stop minion3");
    topo.spawn_minion("minion3").expect("restart minion3");
    let t = &topo;
    t.eventually(Duration::from_secs(30), "minion3 is a db now", || {
        let out = t
            .salt(&["-G", "role:db", "test.ping", "--out", "json", "--static"])
            .expect("salt");
        one(&out)
            .as_object()
            .is_some_and(|o| o.contains_key("minion3"))
    })
    .expect("grains refreshed on reconnect");
    check(t, &["-G"], "role:web", set(&[1, 2, 4]));
    check(t, &["-G"], "role:db", set(&[3, 5, 6, 7, 8]));
}

/// Start and end times (`date +%s.%N` twice) of each minion in a batch run.
fn spans(doc: &Value) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = doc
        .as_object()
        .expect("object")
        .values()
        .map(|v| {
            let s = v.as_str().expect("cmd.run output");
            let mut it = s.lines().map(|l| l.trim().parse::<f64>().expect("time"));
            (it.next().expect("start"), it.next().expect("end"))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Most minions running at one time.
fn max_overlap(spans: &[(f64, f64)]) -> usize {
    spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0)
}

fn salt_cmd(topo: &Topology, args: &[&str]) -> Command {
    let mut c = Command::new(topo.bin.join("salt"));
    c.arg("-c").arg(&topo.top.config_dir).args(args);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn run_json(topo: &Topology, fun: &str, args: &[&str]) -> (Value, i32) {
    let mut a = vec![fun];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--out", "json"]);
    let out = topo.cli("top", "salt-run", &a).expect("salt-run");
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("salt-run {fun}: {e}\n{}", show(&out)));
    (v, code(&out))
}

/// The jid of the first running job of `fun` in `jobs.active`.
fn active_jid(topo: &Topology, fun: &str, running: usize) -> Option<String> {
    let (v, _) = run_json(topo, "jobs.active", &[]);
    v.as_object()?.iter().find_map(|(jid, j)| {
        (j["Function"] == fun && j["Running"].as_array().map(Vec::len) == Some(running))
            .then(|| jid.clone())
    })
}

fn wait_child(child: std::process::Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("salt (pid {pid}) did not finish within {limit:?}")
        }
    }
}

#[test]
fn waiting_async_jobs_batch_and_fleet_status() {
    let mut topo = fleet();
    let t = &topo;

    // --async: the jid at once, exit 0; the jobs runner finds the job.
    let out = t.salt(&["*", "test.ping", "--async"]).expect("async");
    assert_eq!(code(&out), 0, "{}", show(&out));
    let stdout = text(&out.stdout);
    let jid = stdout
        .trim()
        .strip_prefix("Executed command with job ID: ")
        .unwrap_or_else(|| panic!("{}", show(&out)))
        .to_string();
    assert_eq!(jid.len(), 20, "{jid}");
    t.eventually(Duration::from_secs(20), "async returns cached", || {
        run_json(t, "jobs.lookup_jid", &[&jid])
            .0
            .as_object()
            .map(|o| o.len())
            == Some(N)
    })
    .expect("lookup_jid");
    let (v, _) = run_json(t, "jobs.lookup_jid", &[&jid]);
    assert!(
        v.as_object()
            .expect("obj")
            .values()
            .all(|x| x == &json!(true)),
        "{v}"
    );
    let (v, _) = run_json(t, "jobs.list_job", &[&jid]);
    assert_eq!(v["Function"], "test.ping", "{v}");
    assert_eq!(v["Minions"].as_array().map(Vec::len), Some(N), "{v}");
    assert_eq!(v["Result"].as_object().map(|o| o.len()), Some(N), "{v}");
    let (v, _) = run_json(
        t,
        "jobs.list_jobs",
        &["--search-function", "test.ping", "--search-target", "*"],
    );
    assert!(v.get(&jid).is_some(), "list_jobs finds {jid}: {v}");
    assert!(v
        .as_object()
        .expect("obj")
        .values()
        .all(|j| j["Function"] == "test.ping"));
    let (v, _) = run_json(t, "jobs.list_jobs", &["--search-function", "cmd.run"]);
    assert!(v.get(&jid).is_none(), "{v}");
    let (v, c) = run_json(t, "jobs.exit_success", &[&jid]);
    assert_eq!(c, 0, "{v}");
    assert_eq!(v.as_object().map(|o| o.len()), Some(N), "{v}");
    let out = t.salt(&["nosuch*", "test.ping", "--async"]).expect("async");
    assert_eq!(code(&out), 2, "{}", show(&out));
    let out = t
        .salt(&["minion1", "test.false", "--async"])
        .expect("async");
    assert_eq!(code(&out), 0, "{}", show(&out));
    let fjid = text(&out.stdout)
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    t.eventually(Duration::from_secs(20), "test.false returned", || {
        run_json(t, "jobs.lookup_jid", &[&fjid])
            .0
            .get("minion1")
            .is_some()
    })
    .expect("lookup false");
    let (v, c) = run_json(t, "jobs.exit_success", &[&fjid]);
    assert_eq!((v, c), (json!({"minion1": false}), 1));

    // Waiting: a job longer than -t comes back whole (find_job extends the
    // deadline); jobs.active sees it meanwhile.
    let started = Instant::now();
    let child = salt_cmd(
        t,
        &[
            "*",
            "test.sleep",
            "8",
            "-t",
            "2",
            "-v",
            "--summary",
            "--out",
            "json",
        ],
    )
    .spawn()
    .expect("spawn salt");
    let mut seen = None;
    t.eventually(
        Duration::from_secs(7),
        "jobs.active lists the sleep",
        || {
            seen = active_jid(t, "test.sleep", N);
            seen.is_some()
        },
    )
    .expect("jobs.active");
    let out = wait_child(child, Duration::from_secs(40));
    let took = started.elapsed();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(took >= Duration::from_secs(8), "{took:?}");
    eprintln!("test.sleep 8 -t 2 came back whole after {took:?}");
    let stdout = text(&out.stdout);
    let jid = stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Executing job with jid "))
        .unwrap_or_else(|| panic!("{}", show(&out)))
        .to_string();
    assert_eq!(
        seen.as_deref(),
        Some(jid.as_str()),
        "jobs.active showed this job"
    );
    let d = docs(&stdout);
    assert_eq!(d.len(), N, "{}", show(&out));
    assert!(d.iter().all(|x| x
        .as_object()
        .is_some_and(|o| o.values().all(|v| v == &json!(true)))));
    for want in [
        "# of minions targeted: 12",
        "# of minions returned: 12",
        "# of minions that did not return: 0",
        "# of minions with errors: 0",
    ] {
        assert!(stdout.contains(want), "{want}: {}", show(&out));
    }

    // Batch: a sliding window of at most N, measured on the minions' clocks.
    let cmd = "date +%s.%N; sleep 1; date +%s.%N";
    for size in ["3", "25%"] {
        let out = t
            .salt(&[
                "*", "-b", size, "cmd.run", cmd, "--out", "json", "--static", "-v",
            ])
            .expect("batch");
        assert_eq!(code(&out), 0, "-b {size}: {}", show(&out));
        let doc = one(&out);
        assert_eq!(doc.as_object().map(|o| o.len()), Some(N), "one run: {doc}");
        let sp = spans(&doc);
        let most = max_overlap(&sp);
        assert!(
            (2..=3).contains(&most),
            "-b {size}: {most} ran at once: {sp:?}"
        );
        eprintln!("-b {size}: at most {most} minions ran at once");
        let stderr = text(&out.stderr);
        let jid_list: Vec<&str> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("Executing job with jid "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let distinct: BTreeSet<&&str> = jid_list.iter().collect();
        assert!(jid_list.len() >= 4, "{}", show(&out));
        assert_eq!(
            distinct.len(),
            jid_list.len(),
            "each sub-job has its own jid"
        );
        let on: usize = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("Executing job with jid "))
            .map(|l| {
                l.split_once(" on ")
                    .map(|(_, ids)| ids.split(", ").count())
                    .unwrap_or(0)
            })
            .sum();
        assert_eq!(on, N, "every minion in exactly one sub-job: {stderr}");
    }
    // --batch-wait: a freed slot is refilled only after the wait.
    let out = t
        .salt(&[
            "-L",
            "minion1,minion2,minion3,minion4",
            "-b",
            "2",
            "--batch-wait",
            "1.5",
            "cmd.run",
            cmd,
            "--out",
            "json",
            "--static",
        ])
        .expect("batch-wait");
    assert_eq!(code(&out), 0, "{}", show(&out));
    let sp = spans(&one(&out));
    assert_eq!(sp.len(), 4);
    let first_end = sp[..2].iter().map(|s| s.1).fold(f64::MAX, f64::min);
    assert!(sp[2].0 - first_end >= 1.4, "batch-wait: {sp:?}");
    eprintln!(
        "--batch-wait 1.5: refilled {:.2}s after the first end",
        sp[2].0 - first_end
    );
    // --failhard: the first failure stops the batch (exit 1).
    let out = t
        .salt(&[
            "*",
            "-b",
            "2",
            "--failhard",
            "cmd.run",
            "exit 3",
            "--out",
            "json",
            "--static",
        ])
        .expect("failhard");
    assert_eq!(code(&out), 1, "{}", show(&out));
    let n = one(&out).as_object().map(|o| o.len()).unwrap_or(0);
    assert!(
        (1..=2).contains(&n),
        "failhard stopped after the first window: {}",
        show(&out)
    );
    // Exit codes of failing jobs.
    let out = t
        .salt(&["-L", "minion1,minion2", "cmd.retcode", "exit 7"])
        .expect("rc");
    assert_eq!(code(&out), 1, "{}", show(&out));
    let out = t
        .salt(&[
            "-L",
            "minion1,minion2",
            "cmd.retcode",
            "exit 7",
            "--retcode-passthrough",
        ])
        .expect("rc");
    assert_eq!(code(&out), 7, "{}", show(&out));
    let out = t
        .salt(&["*", "-b", "4", "test.retcode", "5", "--retcode-passthrough"])
        .expect("rc");
    assert_eq!(code(&out), 5, "{}", show(&out));

    // Fleet status.
    let (v, _) = run_json(t, "manage.up", &[]);
    assert_eq!(v, json!(all()), "up");
    assert_eq!(run_json(t, "manage.down", &[]).0, json!([]));
    assert_eq!(run_json(t, "manage.present", &[]).0, json!(all()));
    assert_eq!(run_json(t, "manage.not_present", &[]).0, json!([]));
    assert_eq!(
        run_json(t, "manage.status", &[]).0,
        json!({"up": all(), "down": []})
    );
    let (v, _) = run_json(t, "manage.versions", &[]);
    let master_v = v["Master"].as_str().expect("master version").to_string();
    assert_eq!(v["Up to date"].as_object().map(|o| o.len()), Some(N), "{v}");

    // kill -9: manage.down names it within a few seconds.
    topo.stop("minion12", true).expect("kill minion12");
    let killed = Instant::now();
    let t = &topo;
    t.eventually(
        Duration::from_secs(15),
        "manage.down lists minion12",
        || run_json(t, "manage.down", &[]).0 == json!(["minion12"]),
    )
    .expect("manage.down");
    let noticed = killed.elapsed();
    assert!(noticed < Duration::from_secs(8), "down after {noticed:?}");
    eprintln!("manage.down named the killed minion after {noticed:?}");
    let mut up = all();
    up.remove("minion12");
    assert_eq!(run_json(t, "manage.up", &[]).0, json!(up));
    assert_eq!(
        run_json(t, "manage.status", &[]).0,
        json!({"up": up, "down": ["minion12"]})
    );
    assert_eq!(
        run_json(t, "manage.not_present", &[]).0,
        json!(["minion12"])
    );
    let (v, _) = run_json(t, "manage.versions", &[]);
    assert_eq!(v["Minion offline"], json!({"minion12": false}), "{v}");
    assert_eq!(v["Master"], json!(master_v));

    // lookup_jid --missing names who never returned.
    let out = t.salt(&["*", "test.ping", "--async"]).expect("async");
    assert_eq!(code(&out), 0, "{}", show(&out));
    let ajid = text(&out.stdout)
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    t.eventually(Duration::from_secs(20), "eleven returns cached", || {
        run_json(t, "jobs.lookup_jid", &[&ajid])
            .0
            .as_object()
            .map(|o| o.len())
            == Some(N - 1)
    })
    .expect("lookup_jid");
    let (v, _) = run_json(t, "jobs.lookup_jid", &[&ajid, "--missing"]);
    assert_eq!(v.as_object().map(|o| o.len()), Some(N), "{v}");
    assert_eq!(
        v["minion12"],
        json!("Minion did not return. [No response]"),
        "{v}"
    );
    let (v, c) = run_json(t, "jobs.exit_success", &[&ajid]);
    assert_eq!(
        (v["minion12"].clone(), v["minion1"].clone(), c),
        (json!(false), json!(true), 1)
    );

    // Non-returners: named under -v, hidden with --hide-timeout, counted
    // by --summary; exit 20, also in batch.
    let out = t
        .salt(&[
            "*",
            "test.ping",
            "-v",
            "-t",
            "1",
            "--out",
            "json",
            "--summary",
        ])
        .expect("v");
    assert_eq!(code(&out), 20, "{}", show(&out));
    let stdout = text(&out.stdout);
    let d = docs(&stdout);
    assert_eq!(d.len(), N, "{}", show(&out));
    assert!(
        d.contains(&json!({"minion12": "Minion did not return. [Not connected]"})),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("Minions that did not return (1): minion12"),
        "{}",
        show(&out)
    );
    for want in [
        "# of minions targeted: 12",
        "# of minions returned: 11",
        "# of minions that did not return: 1",
    ] {
        assert!(stdout.contains(want), "{want}: {}", show(&out));
    }
    let out = t
        .salt(&[
            "*",
            "test.ping",
            "-t",
            "1",
            "--hide-timeout",
            "--out",
            "json",
            "-p",
        ])
        .expect("hide");
    assert_eq!(code(&out), 20, "{}", show(&out));
    let d = docs(&text(&out.stdout));
    assert_eq!(d.len(), N - 1, "{}", show(&out));
    assert!(!text(&out.stdout).contains("minion12"));
    assert!(
        !text(&out.stderr).contains("Returns:"),
        "no progress bar off a terminal"
    );
    let out = t
        .salt(&["*", "-b", "6", "test.ping", "-t", "1"])
        .expect("batch 20");
    assert_eq!(code(&out), 20, "{}", show(&out));

    // manage.down --removekeys forgets the dead minion and its key.
    let (v, _) = run_json(t, "manage.down", &["--removekeys"]);
    assert_eq!(v, json!(["minion12"]));
    assert_eq!(run_json(t, "manage.down", &[]).0, json!([]));
    let keys = t
        .cli("top", "salt-key", &["-L", "--out", "json"])
        .expect("keys");
    let keys: Value = serde_json::from_slice(&keys.stdout).expect("keys json");
    assert_eq!(keys["minions"], json!(up), "{keys}");

    // Ctrl-C: the jid and the lookup hint, exit 130.
    let child = salt_cmd(t, &["*", "test.sleep", "30"])
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut seen = None;
    t.eventually(Duration::from_secs(15), "sleep job running", || {
        seen = active_jid(t, "test.sleep", N - 1);
        seen.is_some()
    })
    .expect("sleep running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = wait_child(child, Duration::from_secs(10));
    assert_eq!(code(&out), 130, "{}", show(&out));
    let jid = seen.expect("jid");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("This job's jid is: {jid}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("salt-run jobs.lookup_jid {jid}")),
        "{stderr}"
    );
    let out = t.salt(&["*", "saltutil.kill_job", &jid]).expect("kill_job");
    assert_eq!(code(&out), 0, "{}", show(&out));
}
