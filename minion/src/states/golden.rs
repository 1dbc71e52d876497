//! Golden tests: Salt 3008's demo tree (the run captured in
//! /work/shared/research/salt-state-output.txt, kept as
//! common/src/output/fixtures/highstate/{first,second}.json) rebuilt here
//! and run through the real compiler, scheduler and state modules; every
//! state's key, field names, result, comment and `changes` keys must be
//! Salt's. Paths differ (`/run/demo` is a tempdir here) and so do pids,
//! times and durations; `__sls__` is `test` here, `demo` there.

#![allow(clippy::unwrap_used)]

use super::testutil::apply_with;
use crate::files::fake::FakeMaster;
use crate::files::{Ask, FileClient};
use crate::state::StateResult;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

fn salt_run(name: &str) -> serde_json::Map<String, Value> {
    let path = format!(
        "{}/../common/src/output/fixtures/highstate/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["m0000"].as_object().unwrap().clone()
}

/// The demo tree, with `/run/demo` at `root`.
fn tree(root: &str) -> String {
    let d = format!("{root}/data/m0000");
    format!(
        r#"demo_dir:
  file.directory:
    - name: {d}
    - makedirs: True
demo_conf:
  file.managed:
    - name: {d}/app.conf
    - source: salt://demo/app.conf
    - mode: '0640'
    - require:
      - file: demo_dir
demo_motd:
  file.managed:
    - name: {d}/motd
    - contents: welcome
    - require:
      - file: demo_dir
demo_big:
  file.managed:
    - name: {d}/big1m.bin
    - source: salt://demo/big1m.bin
    - mode: '0644'
    - require:
      - file: demo_dir
demo_init_marker:
  cmd.run:
    - name: touch {d}/initialized
    - creates: {d}/initialized
demo_seed:
  cmd.run:
    - name: echo seeded > {d}/seed.txt
    - unless: test -f {d}/seed.txt
demo_reload:
  cmd.run:
    - name: echo "reload $(date +%s.%N)" >> {d}/reloads.log
    - onchanges:
      - file: demo_conf
demo_restart:
  cmd.wait:
    - name: echo "restart $(date +%s.%N)" >> {d}/restarts.log
    - watch:
      - file: demo_conf
demo_done:
  file.managed:
    - name: {d}/done
    - contents: done
demo_check:
  test.succeed_without_changes:
    - name: all good
"#
    )
}

/// Compare one run with Salt's: same keys; per state the same fields,
/// result, comment (paths mapped) and `changes` keys.
fn compare(
    ours: &BTreeMap<String, StateResult>,
    salt: &serde_json::Map<String, Value>,
    root: &str,
) {
    // Paths, and requisite messages name `sls.id` (SLS `test` here).
    let map = |s: &str| {
        s.replace("/run/demo", root)
            .replace("demo_fail.demo_fail", "test.demo_fail")
    };
    let mut want: Vec<String> = salt.keys().map(|k| map(k)).collect();
    want.sort();
    let got: Vec<String> = ours.keys().cloned().collect();
    assert_eq!(got, want, "state keys");
    for (k, s) in salt {
        let o = serde_json::to_value(&ours[&map(k)]).unwrap();
        let fields = |v: &Value| {
            let mut f: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            f.sort();
            f
        };
        assert_eq!(fields(&o), fields(s), "{k}: fields");
        assert_eq!(o["result"], s["result"], "{k}: result");
        assert_eq!(
            o["name"],
            json!(map(s["name"].as_str().unwrap())),
            "{k}: name"
        );
        assert_eq!(
            o["comment"],
            json!(map(s["comment"].as_str().unwrap())),
            "{k}: comment"
        );
        let mut ck = fields(&o["changes"]);
        let mut sk: Vec<String> = fields(&s["changes"]).iter().map(|c| map(c)).collect();
        ck.sort();
        sk.sort();
        assert_eq!(ck, sk, "{k}: changes keys");
        for (ck, sv) in s["changes"].as_object().unwrap() {
            if matches!(
                ck.as_str(),
                "diff" | "mode" | "retcode" | "stdout" | "stderr"
            ) {
                assert_eq!(o["changes"][ck], *sv, "{k}: changes.{ck}");
            }
        }
    }
}

/// A file client over a fake master serving `dir/srv`, caching in
/// `dir/cache`.
fn files_again(dir: &tempfile::TempDir) -> Arc<FileClient> {
    let master: Arc<dyn Ask> = Arc::new(FakeMaster::serving("base", &dir.path().join("srv")));
    Arc::new(FileClient::new(Some(master), dir.path().join("cache")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salt_demo_tree_first_and_second_run_match_salt() {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    std::fs::create_dir_all(srv.join("demo")).unwrap();
    std::fs::write(srv.join("demo/app.conf"), "port = 80\n").unwrap();
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(srv.join("demo/big1m.bin"), big).unwrap();
    let root = dir.path().join("run-demo").display().to_string();
    let sls = tree(&root);

    let first = apply_with(&sls, false, files_again(&dir), json!({})).await;
    compare(&first, &salt_run("first"), &root);
    let second = apply_with(&sls, false, files_again(&dir), json!({})).await;
    compare(&second, &salt_run("second"), &root);

    // Salt's failing variant: a command that exits 3 and a file that
    // requires it.
    let d = format!("{root}/data/m0000");
    let failing = format!(
        "{sls}demo_fail:\n  cmd.run:\n    - name: echo \"about to fail\" && exit 3\ndemo_after_fail:\n  file.managed:\n    - name: {d}/after_fail\n    - contents: never\n    - require:\n      - cmd: demo_fail\n"
    );
    let fail = apply_with(&failing, false, files_again(&dir), json!({})).await;
    let salt_fail = salt_run("fail");
    compare(&fail, &salt_fail, &root);
    let after = &fail[&format!("file_|-demo_after_fail_|-{d}/after_fail_|-managed")];
    assert_eq!(
        after.comment,
        "One or more requisite failed: test.demo_fail"
    );
    assert!(!std::path::Path::new(&format!("{d}/after_fail")).exists());
}
