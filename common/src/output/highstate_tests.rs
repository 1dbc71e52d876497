//! Golden tests: the highstate outputter fed the `--out json` returns Salt
//! 3008 printed must print what Salt's highstate outputter printed (captured
//! in /work/shared/research/salt-state-output.txt, copied to
//! `fixtures/highstate/`). The text and JSON captures come from separate
//! runs, so the run-dependent values (start times, durations, total run time,
//! pids) are masked on both sides before comparing; everything else is
//! compared byte for byte.

use serde_json::Value;

use super::{HighstateOpts, OutFormat, OutOpts, Printer, StateOutput};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/src/output/fixtures/highstate/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap()
}

/// Every `{minion: return}` document of a `--out json` capture.
fn docs(name: &str) -> Vec<Value> {
    let text = fixture(name);
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(|d| d.unwrap())
        .collect()
}

/// Print each document as a streamed minion return with the `highstate`
/// hint, no colour, as `salt` does when stdout is not a terminal.
fn print(docs: &[Value], hs: HighstateOpts, format: OutFormat) -> String {
    let mut opts = OutOpts::new(format);
    opts.highstate = hs;
    let mut p = Printer::new(Vec::new(), opts);
    for doc in docs {
        for (id, ret) in doc.as_object().unwrap() {
            p.minion(id, ret, Some("highstate")).unwrap();
        }
    }
    p.finish().unwrap();
    String::from_utf8(p.into_inner()).unwrap()
}

/// Mask the values that differ between two runs of the same states.
fn mask(text: &str) -> String {
    let mut out = Vec::new();
    let mut after_pid = false;
    for line in text.split('\n') {
        let trimmed = line.trim_start();
        let masked = if after_pid {
            format!("{}<PID>", &line[..line.len() - trimmed.len()])
        } else if let Some(at) = line.find(" - Started: ") {
            format!("{} - Started: <T>", &line[..at])
        } else if ["Started:", "Duration:", "Total run time:"]
            .iter()
            .any(|p| trimmed.starts_with(p))
        {
            let colon = line.find(':').unwrap();
            format!("{}: <T>", &line[..colon])
        } else {
            line.to_string()
        };
        after_pid = trimmed == "pid:";
        out.push(masked);
    }
    out.join("\n")
}

fn assert_golden(json: &str, text: &str, hs: HighstateOpts) {
    let got = print(&docs(json), hs, OutFormat::Nested);
    let want = fixture(text);
    assert_eq!(mask(&got), mask(&want), "{json} -> {text}");
    assert!(!got.contains('\x1b'));
}

#[test]
fn first_run_with_changes_matches_salt() {
    assert_golden("first.json", "first_full.txt", HighstateOpts::default());
}

#[test]
fn second_run_idempotent_matches_salt() {
    assert_golden("second.json", "second_full.txt", HighstateOpts::default());
}

#[test]
fn terse_matches_salt() {
    let hs = HighstateOpts {
        state_output: StateOutput::Terse,
        state_verbose: true,
    };
    assert_golden("second.json", "second_terse.txt", hs);
}

#[test]
fn not_verbose_hides_clean_states_as_salt_does() {
    let hs = HighstateOpts {
        state_output: StateOutput::Full,
        state_verbose: false,
    };
    assert_golden("second.json", "second_not_verbose.txt", hs);
}

#[test]
fn failing_run_matches_salt() {
    assert_golden("fail.json", "fail_full.txt", HighstateOpts::default());
}

#[test]
fn compile_errors_match_salt() {
    let doc = serde_json::json!({
        "m0000": ["No matching sls found for 'nosuchsls' in env 'base'"]
    });
    let got = print(&[doc], HighstateOpts::default(), OutFormat::Nested);
    assert_eq!(got, fixture("nosuchsls_full.txt"));
}

#[test]
fn explicit_out_highstate_without_hint_uses_highstate() {
    let mut p = Printer::new(Vec::new(), OutOpts::new(OutFormat::Highstate));
    for doc in docs("second.json") {
        for (id, ret) in doc.as_object().unwrap() {
            p.minion(id, ret, None).unwrap();
        }
    }
    let got = String::from_utf8(p.into_inner()).unwrap();
    assert_eq!(mask(&got), mask(&fixture("second_full.txt")));
}

fn state(run: u64, result: Value, changes: Value, comment: &str, duration: f64) -> Value {
    serde_json::json!({
        "name": format!("/srv/f{run}"),
        "result": result,
        "changes": changes,
        "comment": comment,
        "__run_num__": run,
        "__id__": format!("s{run}"),
        "start_time": "10:00:00.000001",
        "duration": duration,
    })
}

fn render_one(ret: Value, hs: HighstateOpts, color: bool) -> String {
    let doc = serde_json::json!({ "m1": ret });
    super::highstate::render(&doc, hs, color)
}

#[test]
fn test_true_summary_counts_unchanged_and_narrows_as_salt() {
    // Salt's test=True capture: 9 states with result None and changes, one
    // clean; the summary is 12 dashes wide because the widest count is "9".
    let mut states = serde_json::Map::new();
    for i in 0..9u64 {
        let changes = serde_json::json!({ "newfile": format!("/srv/f{i}") });
        states.insert(
            format!("file_|-s{i}_|-/srv/f{i}_|-managed"),
            state(i, Value::Null, changes, "would change", 281.0),
        );
    }
    states.insert(
        "test_|-s9_|-all good_|-succeed_without_changes".to_string(),
        state(9, Value::Bool(true), serde_json::json!({}), "Success!", 1.0),
    );
    let text = render_one(Value::Object(states), HighstateOpts::default(), false);
    let summary = text.split("\n\nSummary for m1\n").nth(1).unwrap();
    assert_eq!(
        summary,
        "------------\nSucceeded: 10 (unchanged=9, changed=9)\nFailed:    0\n\
         ------------\nTotal states run:    10\nTotal run time:   2.530 s"
    );
    assert!(text.contains("\n      Result: None\n"));
}

#[test]
fn short_runs_report_milliseconds_and_multiline_comments_indent() {
    let ret = serde_json::json!({
        "cmd_|-a_|-echo hi_|-run": state(0, Value::Bool(true), serde_json::json!({}), "line one\nline two\n", 12.5),
    });
    let text = render_one(ret, HighstateOpts::default(), false);
    assert!(text.contains("     Comment: line one\n              line two\n     Started:"));
    assert!(text.ends_with("Total run time:  12.500 ms"), "{text}");
}

#[test]
fn mixed_and_changes_modes_pick_full_or_terse_per_state() {
    let ret = serde_json::json!({
        "file_|-clean_|-/srv/f0_|-managed": state(0, Value::Bool(true), serde_json::json!({}), "ok", 1.0),
        "file_|-chg_|-/srv/f1_|-managed": state(1, Value::Bool(true), serde_json::json!({"diff": "New file"}), "updated", 1.0),
        "cmd_|-bad_|-/srv/f2_|-run": state(2, Value::Bool(false), serde_json::json!({}), "boom", 1.0),
    });
    let full_ids = |mode| {
        let hs = HighstateOpts {
            state_output: mode,
            state_verbose: true,
        };
        let text = render_one(ret.clone(), hs, false);
        let full: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("          ID: ").map(str::to_string))
            .collect();
        let terse = text
            .lines()
            .filter(|l| l.starts_with("  Name: ") || l.starts_with("  ID: "))
            .count();
        (full, terse, text)
    };
    let (full, terse, _) = full_ids(StateOutput::Mixed);
    assert_eq!(full, vec!["bad"]);
    assert_eq!(terse, 2);
    let (full, terse, text) = full_ids(StateOutput::Changes);
    assert_eq!(full, vec!["chg", "bad"]);
    assert_eq!(terse, 1);
    assert!(text.contains("  Name: /srv/f0 - Function: file.managed - Result: Clean - Started: 10:00:00.000001 - Duration: 1.0 ms"));
    let (full, terse, text) = full_ids(StateOutput::TerseId);
    assert!(full.is_empty());
    assert_eq!(terse, 3);
    assert!(text.contains("  ID: chg - Function: file.managed - Result: Changed - "));
    assert!(text.contains("  ID: bad - Function: cmd.run - Result: Failed - "));
}

#[test]
fn colours_follow_salt_and_returns_cannot_inject_escapes() {
    let ret = serde_json::json!({
        "file_|-chg_|-/srv/f1_|-managed": state(0, Value::Bool(true), serde_json::json!({"diff": "New file"}), "upd\u{1b}[2J", 1.0),
        "cmd_|-bad_|-/srv/f2_|-run": state(1, Value::Bool(false), serde_json::json!({}), "boom", 1.0),
    });
    let text = render_one(ret, HighstateOpts::default(), true);
    assert!(text.starts_with("\x1b[0;31mm1:\x1b[0m\n"), "{text}");
    assert!(text.contains("\x1b[0;36m          ID: chg\x1b[0m"));
    assert!(text.contains("\x1b[0;31m          ID: bad\x1b[0m"));
    assert!(text.contains("upd?[2J"));
    assert!(!text.contains("\x1b[2J"));
}

#[test]
fn non_state_returns_fall_back_to_nested() {
    let doc = serde_json::json!({ "m1": { "retcode": 3, "stdout": "x" } });
    let text = super::highstate::render(&doc, HighstateOpts::default(), false);
    assert_eq!(
        text,
        "m1:\n    ----------\n    retcode:\n        3\n    stdout:\n        x"
    );
}

#[test]
fn cli_flags_parse_like_salt() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        out: super::OutputArgs,
    }
    let cli = Cli::try_parse_from(["salt", "--state-output=changes_id", "--state-verbose=False"])
        .unwrap();
    let opts = cli.out.opts(false, false);
    assert_eq!(opts.highstate.state_output, StateOutput::ChangesId);
    assert!(!opts.highstate.state_verbose);
    let cli = Cli::try_parse_from(["salt"]).unwrap();
    assert_eq!(
        cli.out.opts(false, false).highstate,
        HighstateOpts::default()
    );
    assert!(Cli::try_parse_from(["salt", "--state-verbose=maybe"]).is_err());
    assert!(Cli::try_parse_from(["salt", "--state-output=loud"]).is_err());
}
