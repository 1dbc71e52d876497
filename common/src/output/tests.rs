//! Printer-level snapshots: streaming vs static, hints, no-return lines,
//! every format end to end through `Printer`.

use super::*;
use serde_json::json;

fn printer(format: OutFormat) -> Printer<Vec<u8>> {
    Printer::new(Vec::new(), OutOpts::new(format))
}

fn static_printer(format: OutFormat) -> Printer<Vec<u8>> {
    let mut opts = OutOpts::new(format);
    opts.static_mode = true;
    Printer::new(Vec::new(), opts)
}

fn text(p: Printer<Vec<u8>>) -> String {
    String::from_utf8(p.into_inner()).unwrap()
}

/// Two returns and one silent minion, fed in arrival order.
fn run(p: &mut Printer<Vec<u8>>) {
    p.minion("web2", &json!({"os": "Debian", "cpus": 4}), None)
        .unwrap();
    p.minion("web1", &json!(true), None).unwrap();
    p.no_return("web3", &NoReturn::NoResponse).unwrap();
    p.finish().unwrap();
}

#[test]
fn nested_streaming() {
    let mut p = printer(OutFormat::Nested);
    run(&mut p);
    let expected = "\
web2:
    ----------
    cpus:
        4
    os:
        Debian
web1:
    True
web3:
    Minion did not return. [No response]
";
    assert_eq!(text(p), expected);
}

#[test]
fn nested_static_is_one_sorted_document() {
    let mut p = static_printer(OutFormat::Nested);
    p.minion("web2", &json!("b"), None).unwrap();
    p.minion("web1", &json!("a\n"), None).unwrap();
    p.no_return("web3", &NoReturn::NotConnected).unwrap();
    assert!(p.opts().static_mode);
    p.finish().unwrap();
    let expected = "\
web1:
    a
web2:
    b
web3:
    Minion did not return. [Not connected]
";
    assert_eq!(text(p), expected);
}

#[test]
fn json_streaming_prints_one_document_per_minion() {
    let mut p = printer(OutFormat::Json);
    run(&mut p);
    let expected = r#"{
    "web2": {
        "cpus": 4,
        "os": "Debian"
    }
}
{
    "web1": true
}
{
    "web3": "Minion did not return. [No response]"
}
"#;
    assert_eq!(text(p), expected);
}

#[test]
fn json_single_line_per_minion_with_negative_indent() {
    let mut opts = OutOpts::new(OutFormat::Json);
    opts.indent = OutOpts::indent_from_cli(-1);
    let mut p = Printer::new(Vec::new(), opts);
    run(&mut p);
    let expected = concat!(
        "{\"web2\": {\"cpus\": 4, \"os\": \"Debian\"}}\n",
        "{\"web1\": true}\n",
        "{\"web3\": \"Minion did not return. [No response]\"}\n",
    );
    assert_eq!(text(p), expected);
    assert_eq!(OutOpts::indent_from_cli(2), Some(2));
}

#[test]
fn json_static_is_one_valid_document() {
    let mut p = static_printer(OutFormat::Json);
    run(&mut p);
    let out = text(p);
    let parsed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        parsed,
        json!({
            "web1": true,
            "web2": {"cpus": 4, "os": "Debian"},
            "web3": "Minion did not return. [No response]"
        })
    );
    assert!(
        out.starts_with("{\n    \"web1\": true,\n    \"web2\": {\n"),
        "{out}"
    );
}

#[test]
fn json_static_with_no_returns_prints_empty_object() {
    let mut p = static_printer(OutFormat::Json);
    p.finish().unwrap();
    assert_eq!(text(p), "{}\n");
    let mut p = static_printer(OutFormat::Nested);
    p.finish().unwrap();
    assert_eq!(text(p), "");
}

#[test]
fn yaml_streaming_and_static() {
    let mut p = printer(OutFormat::Yaml);
    run(&mut p);
    let expected = "\
web2:
  cpus: 4
  os: Debian
web1: true
web3: Minion did not return. [No response]
";
    assert_eq!(text(p), expected);

    let mut p = static_printer(OutFormat::Yaml);
    run(&mut p);
    let expected = "\
web1: true
web2:
  cpus: 4
  os: Debian
web3: Minion did not return. [No response]
";
    assert_eq!(text(p), expected);
}

#[test]
fn txt_streaming() {
    let mut p = printer(OutFormat::Txt);
    p.minion("web1", &json!("Linux\nx86_64\n"), None).unwrap();
    p.minion("web2", &json!(""), None).unwrap();
    run(&mut p);
    let expected = "\
web1: Linux
web1: x86_64
web2: {'cpus': 4, 'os': 'Debian'}
web1: True
web3: Minion did not return. [No response]
";
    assert_eq!(text(p), expected);
}

#[test]
fn raw_streaming_and_static() {
    let mut p = printer(OutFormat::Raw);
    run(&mut p);
    let expected = "\
{'web2': {'cpus': 4, 'os': 'Debian'}}
{'web1': True}
{'web3': 'Minion did not return. [No response]'}
";
    assert_eq!(text(p), expected);

    let mut p = static_printer(OutFormat::Raw);
    run(&mut p);
    let expected = "{'web1': True, 'web2': {'cpus': 4, 'os': 'Debian'}, 'web3': 'Minion did not return. [No response]'}\n";
    assert_eq!(text(p), expected);
}

#[test]
fn quiet_prints_nothing() {
    let mut p = printer(OutFormat::Quiet);
    run(&mut p);
    p.document(&json!({"a": 1})).unwrap();
    assert_eq!(text(p), "");
    let mut p = static_printer(OutFormat::Quiet);
    run(&mut p);
    assert_eq!(text(p), "");
}

#[test]
fn hint_is_followed_only_under_nested() {
    let mut p = printer(OutFormat::Nested);
    p.minion("web1", &json!("a\nb"), Some("txt")).unwrap();
    p.minion("web2", &json!(1), Some("highstate")).unwrap();
    p.minion("web3", &json!("gone"), Some("no_return")).unwrap();
    p.minion("web4", &json!([1]), Some("text")).unwrap();
    assert_eq!(
        text(p),
        "web1: a\nweb1: b\nweb2:\n    1\nweb3:\n    gone\nweb4: [1]\n"
    );

    let mut p = printer(OutFormat::Json);
    p.minion("web1", &json!("a"), Some("txt")).unwrap();
    assert_eq!(text(p), "{\n    \"web1\": \"a\"\n}\n");
}

#[test]
fn static_uses_last_hint() {
    let mut p = static_printer(OutFormat::Nested);
    p.minion("web1", &json!("x"), Some("txt")).unwrap();
    p.minion("web2", &json!("y"), None).unwrap();
    p.finish().unwrap();
    assert_eq!(text(p), "web1: x\nweb2: y\n");
}

#[test]
fn failed_minion_is_red_when_coloured() {
    let mut opts = OutOpts::new(OutFormat::Nested);
    opts.color = true;
    let mut p = Printer::new(Vec::new(), opts);
    p.minion_with_retcode("web1", &json!("boom"), None, 1)
        .unwrap();
    p.no_return("web2", &NoReturn::NoResponse).unwrap();
    assert_eq!(
        text(p),
        concat!(
            "\x1b[0;31mweb1\x1b[0m:\n",
            "    \x1b[0;32mboom\x1b[0m\n",
            "\x1b[0;36mweb2\x1b[0m:\n",
            "\x1b[0;31m    Minion did not return. [No response]\x1b[0m\n",
        )
    );
}

#[test]
fn no_return_reasons() {
    let mut p = printer(OutFormat::Txt);
    p.no_return("a", &NoReturn::NotConnected).unwrap();
    let via = NoReturn::BehindSyndic {
        syndic: "dc1".into(),
        connected: true,
    };
    p.no_return("b", &via).unwrap();
    let down = NoReturn::BehindSyndic {
        syndic: "dc2".into(),
        connected: false,
    };
    p.no_return("c", &down).unwrap();
    assert_eq!(
        text(p),
        concat!(
            "a: Minion did not return. [Not connected]\n",
            "b: Minion did not return. [No response via syndic dc1]\n",
            "c: Minion did not return. [Syndic dc2 not connected]\n",
        )
    );
}

#[test]
fn documents_print_at_once_even_in_static_mode() {
    let mut p = static_printer(OutFormat::Nested);
    p.document(&json!({"Accepted Keys": ["web1", "web2"], "Rejected Keys": []}))
        .unwrap();
    assert_eq!(
        text(p),
        "Accepted Keys:\n    - web1\n    - web2\nRejected Keys:\n"
    );

    let mut p = printer(OutFormat::Raw);
    p.document(&json!("plain string")).unwrap();
    p.document(&json!([1, null])).unwrap();
    assert_eq!(text(p), "plain string\n[1, None]\n");

    let mut p = printer(OutFormat::Txt);
    p.document(&json!(["a", 2])).unwrap();
    assert_eq!(text(p), "['a', 2]\n");
}

#[test]
fn trailing_whitespace_is_stripped_like_salt() {
    let mut p = printer(OutFormat::Nested);
    p.minion("web1", &json!("ends with spaces   \n\n"), None)
        .unwrap();
    assert_eq!(text(p), "web1:\n    ends with spaces\n");
}

#[test]
fn unicode_everywhere() {
    let v = json!({"clé": "日本語\n✓"});
    let mut p = printer(OutFormat::Nested);
    p.minion("wéb", &v, None).unwrap();
    assert_eq!(
        text(p),
        "wéb:\n    ----------\n    clé:\n        日本語\n        ✓\n"
    );
    let mut p = printer(OutFormat::Raw);
    p.minion("wéb", &v, None).unwrap();
    assert_eq!(text(p), "{'wéb': {'clé': '日本語\\n✓'}}\n");
}

#[test]
fn splitlines_matches_python() {
    assert_eq!(py_splitlines(""), Vec::<&str>::new());
    assert_eq!(py_splitlines("a"), vec!["a"]);
    assert_eq!(py_splitlines("a\n"), vec!["a"]);
    assert_eq!(py_splitlines("a\n\nb"), vec!["a", "", "b"]);
    assert_eq!(
        py_splitlines("a\r\nb\rc\u{2028}d"),
        vec!["a", "b", "c", "d"]
    );
    assert_eq!(py_splitlines("\n"), vec![""]);
}

#[test]
fn format_names() {
    assert_eq!(OutFormat::from_salt_name("text"), Some(OutFormat::Txt));
    assert_eq!(
        OutFormat::from_salt_name("highstate"),
        Some(OutFormat::Highstate)
    );
    assert_eq!(OutFormat::from_salt_name("pprint"), None);
    use clap::ValueEnum;
    assert_eq!(OutFormat::from_str("text", false), Ok(OutFormat::Txt));
    assert_eq!(OutFormat::from_str("quiet", false), Ok(OutFormat::Quiet));
    assert_eq!(OutOpts::default().indent, Some(4));
    assert!(!OutOpts::default().color);
}
