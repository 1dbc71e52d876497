//! The state system end to end: a top master with a state tree, one
//! minion on the top and two behind a syndic, driven through the real
//! `salt` CLI. Highstate from the top file (glob, grain and pillar
//! matches), `state.apply`/`sls`/`test`/`single`/`show_*`, Jinja with
//! `grains`, `pillar` and `salt[...]`, `include`, requisites (`require`
//! failing, `watch` firing only on changes), idempotence (a second run
//! changes nothing), `test=True` changing nothing, the highstate
//! outputter's text, exit codes, a missing SLS, and one run at a time per
//! minion (`queue=True` waits).

use brine_deploy::topology::Topology;
use serde_json::{json, Value};
use std::path::Path;
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

/// `salt <tgt> <fun> <args...> --out json --static`: the output and the
/// exit code.
fn salt(topo: &Topology, tgt: &str, fun: &str, args: &[&str]) -> (Value, i32) {
    let mut a = vec![tgt, fun];
    a.extend_from_slice(args);
    a.extend(["--out", "json", "--static", "-t", "60"]);
    let out = topo.salt(&a).expect("salt");
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", text(&out)));
    (v, out.status.code().unwrap_or(-1))
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

/// The state tree; every state works under `out/<minion id>`.
fn tree(salt: &Path, pillar: &Path, out: &Path) {
    let o = out.display();
    write(
        &salt.join("top.sls"),
        "base:\n  '*':\n    - demo\n  'os_family:Debian':\n    - match: grain\n    - extra\n  'role:edge':\n    - match: pillar\n    - edge\n",
    );
    write(
        &salt.join("demo/init.sls"),
        &format!(
            "{{% from 'demo/map.jinja' import settings with context %}}\n{{% set dir = '{o}/' ~ grains['id'] %}}\ninclude:\n  - .base\nmarker:\n  cmd.run:\n    - name: echo {{{{ salt['test.echo']('from-jinja') }}}} {{{{ pillar.get('greeting', 'none') }}}} > {{{{ dir }}}}/marker\n    - creates: {{{{ dir }}}}/marker\n    - require:\n      - cmd: demo_dir\nconf:\n  file.managed:\n    - name: {{{{ dir }}}}/app.conf\n    - source: salt://demo/app.conf.j2\n    - template: jinja\n    - mode: '0640'\n    - context:\n        port: {{{{ settings.port }}}}\n    - require:\n      - cmd: demo_dir\nrestart:\n  cmd.wait:\n    - name: echo restart >> {{{{ dir }}}}/restarts\n    - watch:\n      - file: conf\ncheck:\n  test.succeed_without_changes:\n    - name: all good\n"
        ),
    );
    write(
        &salt.join("demo/map.jinja"),
        "{% set settings = {'port': 8000 + (grains['id'] | length)} %}\n",
    );
    write(
        &salt.join("demo/app.conf.j2"),
        "# {{ grains['id'] }}\nport = {{ port }}\ngreeting = {{ pillar['greeting'] }}\n",
    );
    write(
        &salt.join("demo/base.sls"),
        &format!(
            "demo_dir:\n  cmd.run:\n    - name: mkdir -p {o}/{{{{ grains['id'] }}}}\n    - creates: {o}/{{{{ grains['id'] }}}}\n"
        ),
    );
    write(
        &salt.join("big.sls"),
        "{% for i in range(2000) %}\nbig_{{ i }}:\n  test.succeed_with_changes:\n    - name: state number {{ i }} of a large run\n{% endfor %}\n",
    );
    write(&salt.join("extra.sls"), "extra_nop:\n  test.nop: []\n");
    write(&salt.join("edge.sls"), "edge_only:\n  test.nop: []\n");
    write(
        &salt.join("fail.sls"),
        "will_fail:\n  cmd.run:\n    - name: echo about to fail && exit 3\nafter_fail:\n  test.nop:\n    - require:\n      - cmd: will_fail\nunrelated:\n  test.nop: []\n",
    );
    write(
        &salt.join("slow.sls"),
        "slow:\n  cmd.run:\n    - name: sleep 4\n",
    );
    write(
        &pillar.join("top.sls"),
        "base:\n  's1m*':\n    - edge\n  '*':\n    - common\n",
    );
    write(&pillar.join("edge.sls"), "role: edge\n");
    write(&pillar.join("common.sls"), "greeting: hello\n");
}

fn results(v: &Value, m: &str) -> serde_json::Map<String, Value> {
    v[m].as_object()
        .unwrap_or_else(|| panic!("{m}: not a state return: {v}"))
        .clone()
}

fn by_id<'a>(r: &'a serde_json::Map<String, Value>, id: &str) -> &'a Value {
    r.values()
        .find(|s| s["__id__"] == id)
        .unwrap_or_else(|| panic!("no state {id} in {r:?}"))
}

fn changed(r: &serde_json::Map<String, Value>) -> usize {
    r.values()
        .filter(|s| s["changes"].as_object().is_some_and(|c| !c.is_empty()))
        .count()
}

#[test]
fn states_apply_direct_and_behind_a_syndic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (salt_root, pillar_root, out) = (
        dir.path().join("salt"),
        dir.path().join("pillar"),
        dir.path().join("out"),
    );
    tree(&salt_root, &pillar_root, &out);
    let topo = Topology::builder()
        .syndics(1)
        .direct_minions(1)
        .minions_per_syndic(2)
        .top_config(&format!("file_roots: {}", json!({"base": [salt_root]})))
        .top_config(&format!("pillar_roots: {}", json!({"base": [pillar_root]})))
        .start(WAIT)
        .expect("topology");
    let all = ["minion1", "s1m1", "s1m2"];

    // show_top: the pillar match only for the syndic's minions.
    let (top, code) = salt(&topo, "*", "state.show_top", &[]);
    assert_eq!(code, 0, "{top}");
    assert_eq!(top["minion1"]["base"], json!(["demo", "extra"]), "{top}");
    assert_eq!(
        top["s1m1"]["base"],
        json!(["demo", "extra", "edge"]),
        "{top}"
    );

    // test=True first: nothing is made.
    let (t, code) = salt(&topo, "*", "state.apply", &["test=True"]);
    assert_eq!(code, 0, "{t}");
    for m in all {
        let r = results(&t, m);
        assert_eq!(by_id(&r, "demo_dir")["result"], Value::Null, "{m}");
        assert!(!out.join(m).exists(), "test=True made {m}'s directory");
    }

    // First apply: changes, the watch fires once, Jinja saw salt[] and pillar.
    let (first, code) = salt(&topo, "*", "state.apply", &[]);
    assert_eq!(code, 0, "{first}");
    for m in all {
        let r = results(&first, m);
        assert!(r.values().all(|s| s["result"] == true), "{m}: {r:?}");
        assert_eq!(changed(&r), 4, "{m}: demo_dir, marker, conf, restart");
        let conf = std::fs::read_to_string(out.join(m).join("app.conf")).expect("app.conf");
        assert_eq!(
            conf,
            format!("# {m}\nport = {}\ngreeting = hello\n", 8000 + m.len())
        );
        assert_eq!(by_id(&r, "conf")["changes"]["diff"], "New file", "{m}");
        assert_eq!(by_id(&r, "check")["comment"], "Success!");
        let marker = std::fs::read_to_string(out.join(m).join("marker")).expect("marker");
        assert_eq!(marker.trim(), "from-jinja hello");
        let key = "cmd_|-marker_|-echo from-jinja hello > ";
        assert!(
            r.keys().any(|k| k.starts_with(key)),
            "{m}: keys {:?}",
            r.keys()
        );
        let nums: Vec<u64> = {
            let mut n: Vec<u64> = r
                .values()
                .filter_map(|s| s["__run_num__"].as_u64())
                .collect();
            n.sort();
            n
        };
        assert_eq!(nums, (0..r.len() as u64).collect::<Vec<_>>(), "{m}");
        assert_eq!(by_id(&r, "demo_dir")["__sls__"], "demo.base", "{m}");
    }
    assert!(results(&first, "s1m2")
        .values()
        .any(|s| s["__id__"] == "edge_only"));
    assert!(!results(&first, "minion1")
        .values()
        .any(|s| s["__id__"] == "edge_only"));

    // Second apply: nothing changes, the watch does not fire.
    let (second, code) = salt(&topo, "*", "state.highstate", &[]);
    assert_eq!(code, 0, "{second}");
    for m in all {
        let r = results(&second, m);
        assert_eq!(changed(&r), 0, "{m}: {r:?}");
        let restarts = std::fs::read_to_string(out.join(m).join("restarts")).expect("restarts");
        assert_eq!(restarts.lines().count(), 1, "{m}: restarted once");
    }

    // The template changes on the master: the file is updated with a diff
    // and the watch fires again, everywhere.
    write(
        &salt_root.join("demo/app.conf.j2"),
        "# {{ grains['id'] }}\nport = {{ port }}\ngreeting = {{ pillar['greeting'] }}\nworkers = 4\n",
    );
    // A syndic answers "which version is current" from a 2 s cache.
    std::thread::sleep(Duration::from_millis(2500));
    let (third, code) = salt(&topo, "*", "state.apply", &[]);
    assert_eq!(code, 0, "{third}");
    for m in all {
        let r = results(&third, m);
        let diff = by_id(&r, "conf")["changes"]["diff"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(diff.contains("+workers = 4"), "{m}: {diff}");
        assert_eq!(changed(&r), 2, "{m}: conf and restart: {r:?}");
        let restarts = std::fs::read_to_string(out.join(m).join("restarts")).expect("restarts");
        assert_eq!(restarts.lines().count(), 2, "{m}: restarted again");
    }

    // A failing state and its dependant; exit code 1 from the CLI.
    let (f, code) = salt(&topo, "s1m1", "state.sls", &["fail"]);
    let r = results(&f, "s1m1");
    assert_eq!(by_id(&r, "will_fail")["result"], false);
    assert_eq!(by_id(&r, "will_fail")["changes"]["retcode"], 3);
    assert_eq!(
        by_id(&r, "after_fail")["comment"],
        "One or more requisite failed: fail.will_fail"
    );
    assert_eq!(by_id(&r, "after_fail")["__state_ran__"], false);
    assert!(by_id(&r, "will_fail").get("__state_ran__").is_none());
    assert_eq!(by_id(&r, "unrelated")["result"], true);
    let plain = topo
        .salt(&["s1m1", "state.sls", "fail", "--no-color", "-t", "60"])
        .expect("salt");
    assert_eq!(plain.status.code(), Some(1), "{}", text(&plain));
    let s = text(&plain);
    assert!(s.contains("Summary for s1m1"), "{s}");
    assert!(s.contains("Succeeded: 1 (changed=1)\nFailed:    2"), "{s}");
    assert!(
        s.contains("     Comment: One or more requisite failed: fail.will_fail"),
        "{s}"
    );
    assert!(
        s.contains("ERROR: Minions returned with non-zero exit code"),
        "{s}"
    );
    let _ = code;

    // A missing SLS: Salt's compile error and exit code 1.
    let plain = topo
        .salt(&[
            "minion1",
            "state.apply",
            "nosuchsls",
            "--no-color",
            "-t",
            "60",
        ])
        .expect("salt");
    assert_eq!(plain.status.code(), Some(1), "{}", text(&plain));
    let s = text(&plain);
    assert!(s.contains("Data failed to compile:"), "{s}");
    assert!(
        s.contains("No matching sls found for 'nosuchsls' in env 'base'"),
        "{s}"
    );

    // state.single, show_sls, show_lowstate, sls_id.
    let (one, _) = salt(
        &topo,
        "s1m2",
        "state.single",
        &["test.succeed_with_changes", "name=solo"],
    );
    let r = results(&one, "s1m2");
    assert!(
        r.contains_key("test_|-solo_|-solo_|-succeed_with_changes"),
        "{r:?}"
    );
    let (show, _) = salt(&topo, "minion1", "state.show_sls", &["fail"]);
    assert_eq!(show["minion1"]["will_fail"]["__sls__"], "fail", "{show}");
    assert_eq!(show["minion1"]["will_fail"]["cmd"][0], "run", "{show}");
    let (low, _) = salt(&topo, "minion1", "state.show_lowstate", &[]);
    let chunks = low["minion1"].as_array().expect("chunks");
    assert_eq!(chunks[0]["__id__"], "demo_dir", "{low}");
    assert!(chunks.iter().all(|c| c["order"].is_number()));
    let (sid, _) = salt(&topo, "minion1", "state.sls_id", &["unrelated", "fail"]);
    assert_eq!(results(&sid, "minion1").len(), 1, "{sid}");

    // A large return (2000 states, ~1 MB) crosses the syndic whole, and a
    // ping started meanwhile is answered.
    let big = topo
        .salt_async("top", &["s1m*", "state.sls", "big"])
        .expect("async big");
    let (ping, code) = salt(&topo, "*", "test.ping", &[]);
    assert_eq!((ping["s1m1"].clone(), code), (json!(true), 0), "{ping}");
    topo.eventually(WAIT, "the large state returns", || {
        let r = topo.lookup_jid("top", &big);
        ["s1m1", "s1m2"]
            .iter()
            .all(|m| r[m].as_object().is_some_and(|o| o.len() == 2000))
    })
    .unwrap_or_else(|e| {
        let r = topo.lookup_jid("top", &big);
        let sizes: Vec<String> = ["s1m1", "s1m2"]
            .iter()
            .map(|m| {
                format!(
                    "{m}: {}",
                    r[m].as_object().map_or_else(
                        || r[m].to_string().chars().take(300).collect(),
                        |o| o.len().to_string()
                    )
                )
            })
            .collect();
        panic!(
            "{e}: {sizes:?}\n{}\n{}",
            topo.log("s1m1"),
            topo.log("syndic1")
        )
    });

    // One state run at a time: a second is refused, queue=True waits.
    let slow = topo
        .salt_async("top", &["minion1", "state.sls", "slow"])
        .expect("async");
    assert!(!slow.is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    let (busy, code) = salt(&topo, "minion1", "state.sls", &["fail"]);
    let msg = busy["minion1"][0].as_str().unwrap_or_default().to_string();
    assert!(
        msg.starts_with("The function \"state.sls\" is running as PID"),
        "{busy}"
    );
    assert_eq!(code, 1);
    let (queued, _) = salt(&topo, "minion1", "state.sls", &["extra", "queue=True"]);
    assert_eq!(
        results(&queued, "minion1").len(),
        1,
        "queued run ran: {queued}"
    );

    // salt-call state.apply on a minion behind the syndic, through its
    // daemon's link: the top file matched with its pillar (edge), files
    // from the top master's tree, nothing left to change.
    let m = topo.minions.iter().find(|m| m.id == "s1m1").expect("s1m1");
    let out = std::process::Command::new(topo.bin.join("salt-call"))
        .arg("-c")
        .arg(&m.config_dir)
        .args(["state.apply", "--out", "json"])
        .output()
        .expect("salt-call");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let r = results(&v, "local");
    assert!(r.contains_key("test_|-edge_only_|-edge_only_|-nop"), "{v}");
    assert_eq!(by_id(&r, "conf")["result"], json!(true), "{v}");
    assert_eq!(changed(&r), 0, "{v}");
}

/// What the system test creates, removed on drop (also when it fails).
struct SystemGuard {
    name: String,
}

impl Drop for SystemGuard {
    fn drop(&mut self) {
        let n = &self.name;
        let script = format!("/etc/init.d/{n}");
        let quiet = |cmd: &str, args: &[&str]| {
            let _ = std::process::Command::new(cmd)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        if Path::new(&script).exists() {
            quiet(&script, &["stop"]);
        }
        quiet("update-rc.d", &["-f", n, "remove"]);
        let _ = std::fs::remove_file(&script);
        let _ = std::fs::remove_file(format!("/run/{n}.pid"));
        quiet("dpkg", &["--purge", n]);
        quiet("userdel", &["-r", n]);
        quiet("groupdel", &[n]);
    }
}

/// A `.deb` named `name` at `version`, built with `dpkg-deb`.
fn build_deb(dir: &Path, name: &str, version: &str) -> std::path::PathBuf {
    let root = dir.join(format!("{name}-{version}"));
    write(
        &root.join("DEBIAN/control"),
        &format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Brine tests <brine@localhost>\nDescription: Brine e2e test package\n"
        ),
    );
    write(
        &root.join(format!("usr/share/{name}/VERSION")),
        &format!("{version}\n"),
    );
    let deb = dir.join(format!("{name}_{version}_all.deb"));
    let out = std::process::Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .expect("dpkg-deb");
    assert!(out.status.success(), "dpkg-deb: {}", text(&out));
    deb
}

/// The daemon's pid from its pidfile.
fn daemon_pid(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/run/{name}.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

#[test]
fn system_states_pkg_user_service_behind_a_syndic() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!("brine-test-e{:x}", (std::process::id() ^ nanos) & 0xffffff);
    let _guard = SystemGuard { name: name.clone() };
    let dir = tempfile::tempdir().expect("tempdir");
    let salt_root = dir.path().join("salt");
    let deb = build_deb(dir.path(), &name, "1.0");
    write(&salt_root.join("pkgs/placeholder"), "");
    std::fs::copy(&deb, salt_root.join("pkgs/app.deb")).expect("deb into the tree");
    let home = dir.path().join("home");
    write(
        &salt_root.join("svc/init.sh"),
        &format!(
            "#!/bin/sh\n### BEGIN INIT INFO\n# Provides:          {name}\n# Required-Start:\n# Required-Stop:\n# Default-Start:     2 3 4 5\n# Default-Stop:      0 1 6\n# Short-Description: Brine e2e daemon\n### END INIT INFO\nPIDFILE=/run/{name}.pid\nrunning() {{ [ -f \"$PIDFILE\" ] && kill -0 \"$(cat \"$PIDFILE\")\" 2>/dev/null; }}\ncase \"$1\" in\n  start) running && exit 0; sh -c 'while :; do sleep 1; done' </dev/null >/dev/null 2>&1 & echo $! > \"$PIDFILE\" ;;\n  stop) if running; then kill \"$(cat \"$PIDFILE\")\"; fi; rm -f \"$PIDFILE\" ;;\n  restart|force-reload) \"$0\" stop; \"$0\" start ;;\n  status) running && exit 0; exit 3 ;;\n  *) exit 2 ;;\nesac\nexit 0\n"
        ),
    );
    write(&salt_root.join("svc/app.conf"), "workers = 1\n");
    write(
        &salt_root.join("system.sls"),
        &format!(
            "app_pkg:\n  pkg.installed:\n    - sources:\n      - {name}: salt://pkgs/app.deb\napp_user:\n  user.present:\n    - name: {name}\n    - shell: /bin/sh\n    - home: {home}\n    - createhome: True\napp_init:\n  file.managed:\n    - name: /etc/init.d/{name}\n    - source: salt://svc/init.sh\n    - mode: '0755'\napp_conf:\n  file.managed:\n    - name: {conf}\n    - source: salt://svc/app.conf\n    - makedirs: True\napp_service:\n  service.running:\n    - name: {name}\n    - enable: True\n    - require:\n      - pkg: app_pkg\n      - user: app_user\n      - file: app_init\n    - watch:\n      - file: app_conf\n",
            home = home.display(),
            conf = dir.path().join("etc/app.conf").display()
        ),
    );
    let topo = Topology::builder()
        .syndics(1)
        .direct_minions(0)
        .minions_per_syndic(1)
        .top_config(&format!("file_roots: {}", json!({"base": [salt_root]})))
        .start(WAIT)
        .expect("topology");
    let m = "s1m1";

    // test=True: nothing installed, created or started.
    let (t, code) = salt(&topo, m, "state.sls", &["system", "test=True"]);
    assert_eq!(code, 0, "{t}");
    let r = results(&t, m);
    assert_eq!(by_id(&r, "app_pkg")["result"], Value::Null, "{r:?}");
    assert_eq!(by_id(&r, "app_user")["result"], Value::Null, "{r:?}");
    assert!(nix_user(&name).is_none(), "test=True created the user");
    assert!(!Path::new(&format!("/var/lib/dpkg/info/{name}.list")).exists());
    assert!(daemon_pid(&name).is_none());

    // First run: the package, the user, the script, the config, the service.
    let (first, code) = salt(&topo, m, "state.sls", &["system"]);
    assert_eq!(code, 0, "{first}");
    let r = results(&first, m);
    assert!(r.values().all(|s| s["result"] == true), "{r:?}");
    assert_eq!(
        by_id(&r, "app_pkg")["changes"][name.as_str()],
        json!({"old": "", "new": "1.0"})
    );
    assert_eq!(
        by_id(&r, "app_user")["comment"],
        format!("New user {name} created")
    );
    assert!(nix_user(&name).is_some(), "user exists");
    let dpkg = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", &name])
        .output()
        .expect("dpkg-query");
    assert_eq!(String::from_utf8_lossy(&dpkg.stdout), "1.0");
    let pid1 = daemon_pid(&name).expect("the service runs");

    // Second run: nothing changes, the service keeps its process.
    let (second, code) = salt(&topo, m, "state.sls", &["system"]);
    assert_eq!(code, 0, "{second}");
    let r = results(&second, m);
    assert_eq!(changed(&r), 0, "{r:?}");
    assert_eq!(
        daemon_pid(&name),
        Some(pid1),
        "not restarted without a change"
    );

    // The config changes on the master: the watch restarts the service.
    write(&salt_root.join("svc/app.conf"), "workers = 4\n");
    std::thread::sleep(Duration::from_millis(2500));
    let (third, code) = salt(&topo, m, "state.sls", &["system"]);
    assert_eq!(code, 0, "{third}");
    let r = results(&third, m);
    assert_eq!(
        by_id(&r, "app_service")["changes"],
        json!({name.as_str(): true}),
        "{r:?}"
    );
    let pid2 = daemon_pid(&name).expect("running after restart");
    assert_ne!(pid1, pid2, "restarted by the watch");

    // Removal through states, and the execution modules on their own.
    write(
        &salt_root.join("gone.sls"),
        &format!("app_service:\n  service.dead:\n    - name: {name}\n    - enable: False\napp_pkg:\n  pkg.removed:\n    - name: {name}\napp_user:\n  user.absent:\n    - name: {name}\n    - purge: True\n"),
    );
    let (gone, code) = salt(&topo, m, "state.sls", &["gone"]);
    assert_eq!(code, 0, "{gone}");
    assert!(daemon_pid(&name).is_none(), "stopped");
    assert!(nix_user(&name).is_none(), "user removed");
    let (v, _) = salt(&topo, m, "pkg.version", &[&name]);
    assert_eq!(v[m], "", "package removed: {v}");
}

/// Whether the system knows user `name`.
fn nix_user(name: &str) -> Option<String> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .map(str::to_string)
}
