//! The `brine-fleet` command line: exit codes and messages, `--dry-run`
//! writing nothing, re-rendering changing nothing. No daemons run here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn fleet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_brine-fleet"))
        .args(args)
        .output()
        .expect("run brine-fleet")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn exit_codes_messages_dry_run_and_rerender() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();

    std::fs::write(
        p("clash.yaml"),
        "master: {id: top, host: 10.0.0.1}\ndatacenters:\n  dc1:\n    syndics: [{id: s1, host: 10.1.0.1}]\n    hosts: [web1, s1]\n",
    )
    .unwrap();
    let o = fleet(&["check", &p("clash.yaml")]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
    assert!(
        text(&o).contains("datacenter dc1, s1: duplicate id: also the syndic in datacenter dc1"),
        "{}",
        text(&o)
    );

    std::fs::write(p("broken.yaml"), "master: {id: top\nhosts: [a]\n").unwrap();
    let o = fleet(&["render", &p("broken.yaml"), "--out", &p("out")]);
    assert_eq!(o.status.code(), Some(65));
    assert!(
        text(&o).contains("broken.yaml") && text(&o).contains("line"),
        "{}",
        text(&o)
    );

    let o = fleet(&["check"]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));

    std::fs::write(
        p("ok.yaml"),
        "master: {id: top, host: 10.0.0.1}\ndatacenters:\n  dc1:\n    syndics: [{id: s1, host: 10.1.0.1}]\n    hosts: [web1]\n",
    )
    .unwrap();
    let o = fleet(&["render", &p("ok.yaml"), "--out", &p("out"), "--dry-run"]);
    assert_eq!(o.status.code(), Some(0));
    let shown = text(&o);
    for path in [
        "out/top/master",
        "out/s1/master",
        "out/web1/minion",
        "out/roster",
    ] {
        assert!(
            shown.contains(&format!("would write {}", p(path))),
            "{shown}"
        );
    }
    assert!(shown.contains("master: 10.1.0.1\n"), "{shown}");
    assert!(!dir.path().join("out").exists());

    let o = fleet(&["render", &p("ok.yaml"), "--out", &p("out")]);
    assert!(
        text(&o).contains("4 file(s) written, 0 unchanged"),
        "{}",
        text(&o)
    );
    std::fs::create_dir(dir.path().join("out/gone")).unwrap();
    let o = fleet(&["render", &p("ok.yaml"), "--out", &p("out")]);
    assert!(
        text(&o).contains("0 file(s) written, 4 unchanged"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("out/gone is not a daemon of this fleet"),
        "{}",
        text(&o)
    );
}
