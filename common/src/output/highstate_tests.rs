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
