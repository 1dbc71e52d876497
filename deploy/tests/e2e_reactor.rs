//! The reactor end to end: a top master with `reactor:` for
//! `myapp/deploy/*` → a reactor SLS (`local.cmd.run` on `{{ data['id'] }}`
//! writing a file in a tempdir); `salt <id> event.send myapp/deploy/x`
//! from a direct minion, and from a minion behind a syndic (its event
//! reaches the top's bus through the syndic), makes the file appear. A
//! broken reactor file (a Jinja error, a malformed action) is logged with
//! its file and line and counted (`reactor_errors`), and the master still
//! answers `test.ping`; `wheel.key.delete` deletes a key and ends its
//! session as `salt-key` does; a reactor on `salt/job/*/ret/*` that would run
//! `cmd.run` for every `cmd.run` return does not loop on its own jobs. Everything the test writes is in its tempdirs.

use brine_common::proto::{EventLoad, ReplyBody, RequestBody, Role};
use brine_deploy::peer::HandPeer;
use brine_deploy::topology::Topology;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Generous: other test binaries share the two cores.
const WAIT: Duration = Duration::from_secs(60);

fn reactor_config(dir: &Path) -> String {
    format!(
        "reactor:\n  - 'myapp/deploy/*':\n    - {deploy}\n  - 'salt/job/*/ret/*':\n    - {ret}\n  - 'myapp/leave/*':\n    - {leave}\n  - 'myapp/broken/*':\n    - {jinja}\n    - {form}\n",
        deploy = dir.join("deploy.sls").display(),
        ret = dir.join("ret.sls").display(),
        leave = dir.join("leave.sls").display(),
        jinja = dir.join("broken_jinja.sls").display(),
        form = dir.join("broken_form.sls").display(),
    )
}

fn write_reactors(dir: &Path, out: &Path) {
    std::fs::write(
        dir.join("deploy.sls"),
        format!(
            "deploy_{{{{ data['id'] }}}}:\n  local.cmd.run:\n    - tgt: {{{{ data['id'] }}}}\n    - tgt_type: glob\n    - args:\n      - cmd: echo {{{{ tag }}}} > {out}/{{{{ data['id'] }}}}.out\n",
            out = out.display()
        ),
    )
    .expect("write deploy.sls");
    std::fs::write(
        dir.join("leave.sls"),
        "forget_{{ data['id'] }}:\n  wheel.key.delete:\n    - args:\n      - match: {{ data['id'] }}\n",
    )
    .expect("write leave.sls");
    // Reacting to the return of its own cmd.run job would loop forever.
    std::fs::write(
        dir.join("ret.sls"),
        format!(
            "{{% if data['fun'] == 'cmd.run' %}}\nloop_{{{{ data['id'] }}}}:\n  local.cmd.run:\n    - tgt: {{{{ data['id'] }}}}\n    - args:\n      - cmd: echo {{{{ data['jid'] }}}} >> {out}/loop.out\n{{% endif %}}\n",
            out = out.display()
        ),
    )
    .expect("write ret.sls");
    std::fs::write(
        dir.join("broken_jinja.sls"),
        "fine:\n  runner.manage.up: []\n{% if data['id'] %}\n",
    )
    .expect("write broken_jinja.sls");
    std::fs::write(
        dir.join("broken_form.sls"),
        "nothing_to_target:\n  local.cmd.run:\n    - args:\n      - cmd: 'true'\n",
    )
    .expect("write broken_form.sls");
}

/// `salt <id> event.send <tag>` on the top master succeeds.
fn send(topo: &Topology, id: &str, tag: &str) {
    let out = topo
        .salt(&[id, "event.send", tag, "--out", "json", "-t", "60"])
        .expect("salt event.send");
    assert!(out.status.success(), "event.send on {id}: {out:?}");
}

fn ping_works(topo: &Topology, ids: &[&str]) {
    let out = topo
        .salt(&["*", "test.ping", "--out", "json", "--static", "-t", "60"])
        .expect("salt test.ping");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for id in ids {
        assert_eq!(v[*id], true, "{v}");
    }
}

/// `salt-key -L --out json` on the top, as text.
fn keys(topo: &Topology) -> String {
    let out = topo
        .cli("top", "salt-key", &["-L", "--out", "json"])
        .expect("salt-key");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_reactor_reacts_on_the_top_and_survives_broken_files() {
    let dir = tempfile::Builder::new()
        .prefix("brine-test-reactor")
        .tempdir()
        .expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    write_reactors(dir.path(), &out);
    let topo = Topology::builder()
        .direct_minions(1)
        .syndics(1)
        .minions_per_syndic(1)
        .top_config(&reactor_config(dir.path()))
        .start(WAIT)
        .expect("topology");
    let direct = "minion1";
    let below = "s1m1";
    ping_works(&topo, &[direct, below]);

    // A direct minion's event: the reaction runs cmd.run on that minion.
    send(&topo, direct, "myapp/deploy/x");
    let file = out.join(format!("{direct}.out"));
    topo.eventually(WAIT, "the direct minion's reaction wrote its file", || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.trim() == "myapp/deploy/x")
    })
    .unwrap_or_else(|e| panic!("{e}\ntop log:\n{}", topo.log("top")));
    assert!(topo.stat("reactor_jobs") >= 1);

    // Broken files: both counted and logged with file and line; the
    // master goes on answering.
    let before = topo.stat("reactor_errors");
    send(&topo, direct, "myapp/broken/z");
    topo.eventually(WAIT, "both broken files counted", || {
        topo.stat("reactor_errors") >= before + 2
    })
    .unwrap_or_else(|e| panic!("{e}\ntop log:\n{}", topo.log("top")));
    let log = topo.log("top");
    let jinja = dir.path().join("broken_jinja.sls").display().to_string();
    let form = dir.path().join("broken_form.sls").display().to_string();
    assert!(
        log.lines()
            .any(|l| l.contains(&jinja) && l.contains("line ")),
        "the Jinja error names its file and line:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(&form) && l.contains("line 1") && l.contains("needs a tgt")),
        "the malformed action names its file and line:\n{log}"
    );
    ping_works(&topo, &[direct, below]);

    // wheel.key.delete: a hand-driven minion says it leaves; the reaction
    // deletes its key as salt-key does, and its session ends with it.
    let ctx = zmq::Context::new();
    let hand = "brine-test-reactor-hand";
    let mut peer = HandPeer::new(&ctx, &topo.top.addr, hand, Role::Minion).expect("peer");
    assert!(brine_deploy::launch::poll_until(
        WAIT,
        Duration::from_millis(200),
        || peer.sign_in().is_ok()
    ));
    assert!(keys(&topo).contains(hand));
    let r = peer
        .request(RequestBody::Event(EventLoad {
            tag: "myapp/leave/now".into(),
            data: json!({}),
        }))
        .expect("answer");
    assert_eq!(r, ReplyBody::Ok);
    topo.eventually(WAIT, "the leaving minion's key deleted", || {
        !keys(&topo).contains(hand)
    })
    .unwrap_or_else(|e| panic!("{e}\ntop log:\n{}", topo.log("top")));
    let mut last = None;
    topo.eventually(WAIT, "the deleted key's session ended", || {
        let r = peer.request(RequestBody::Event(EventLoad {
            tag: "myapp/still/here".into(),
            data: json!({}),
        }));
        let ended = !matches!(r, Ok(ReplyBody::Ok));
        last = Some(r);
        ended
    })
    .unwrap_or_else(|e| panic!("{e}: {last:?}\ntop log:\n{}", topo.log("top")));

    // A minion behind the syndic: its event reaches the top's reactor.
    send(&topo, below, "myapp/deploy/y");
    let file = out.join(format!("{below}.out"));
    topo.eventually(WAIT, "the syndic minion's reaction wrote its file", || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.trim() == "myapp/deploy/y")
    })
    .unwrap_or_else(|e| panic!("{e}\ntop log:\n{}", topo.log("top")));

    // The returns of the reactor's own cmd.run jobs were not reacted to
    // (`ret.sls` would have written loop.out): only the two files.
    std::thread::sleep(Duration::from_secs(2));
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .expect("out")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, [format!("{direct}.out"), format!("{below}.out")]);
    assert_eq!(topo.stat("reactor_dropped"), 0);
}
