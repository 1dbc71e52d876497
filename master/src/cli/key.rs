//! The `salt-key` command: parses Salt's flags, lists, accepts, rejects,
//! deletes and fingerprints minion keys through `KeyStore`, grants and
//! revokes the syndic role (Brine's `--grant-syndic`/`--revoke-syndic`),
//! prompting before a change as Salt does, and prints Salt's text (or json,
//! yaml, nested, txt).
//!
//! Invariant: a change applies to exactly the keys the operator was shown
//! (the glob is resolved once, before the prompt), so a key that arrives
//! while the prompt waits is never accepted unseen. `notify` is called at
//! most once per invocation, after the change.

use crate::keys::{glob_matches, sort_ignorecase, KeyError, KeyState, KeyStore};
use brine_common::crypto::KeyPair;
use brine_common::exit;
use brine_common::output::{
    KeyList, KeySection, KeySections, OutFormat, OutOpts, Printer, SYNDICS,
};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// Longest answer read at a prompt.
const MAX_ANSWER: u64 = 4096;

/// Salt's accepted `-l` arguments.
const LIST_CHOICES: [&str; 10] = [
    "pre",
    "un",
    "acc",
    "accepted",
    "unaccepted",
    "rej",
    "rejected",
    "den",
    "denied",
    "all",
];

/// Salt's log levels.
const LOG_LEVELS: [&str; 10] = [
    "all", "garbage", "trace", "debug", "profile", "info", "warning", "error", "critical", "quiet",
];

/// The outputters `--out` accepts here (`key`, Salt's key outputter, is
/// the default).
const OUT_CHOICES: [&str; 5] = ["key", "json", "yaml", "nested", "txt"];

fn out_parser() -> impl clap::builder::TypedValueParser<Value = OutFormat> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(OUT_CHOICES).map(|name| match name.as_str() {
        "json" => OutFormat::Json,
        "yaml" => OutFormat::Yaml,
        "nested" => OutFormat::Nested,
        "txt" => OutFormat::Txt,
        _ => OutFormat::Key,
    })
}

/// `salt-key`'s command line, with Salt's flag names.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "salt-key",
    about = "Manage the master's minion public keys",
    group(clap::ArgGroup::new("action").multiple(false)),
    // `-l` lists keys here, as in Salt; the log level keeps its long form
    // and is checked against Salt's level names.
    mut_arg("log_level", |a| a.short(None)
        .value_parser(clap::builder::PossibleValuesParser::new(LOG_LEVELS)))
)]
pub struct KeyArgs {
    /// `-c`/`--config-dir` (also `SALT_CONFIG_DIR`) and `--log-level`.
    #[command(flatten)]
    pub client: brine_common::cli::ClientArgs,
    /// Key directory (default: `<config-dir>/pki/master`).
    #[arg(long = "pki-dir")]
    pub pki_dir: Option<PathBuf>,
    /// List all public keys (the default action).
    #[arg(short = 'L', long = "list-all", group = "action")]
    pub list_all: bool,
    /// List the keys in one state: pre, un, acc, rej, den, all.
    #[arg(short = 'l', long = "list", value_name = "ARG", group = "action",
          value_parser = clap::builder::PossibleValuesParser::new(LIST_CHOICES))]
    pub list: Option<String>,
    /// Accept the pending keys matching a glob.
    #[arg(short = 'a', long = "accept", value_name = "ACCEPT", group = "action")]
    pub accept: Option<String>,
    /// Accept all pending keys.
    #[arg(short = 'A', long = "accept-all", group = "action")]
    pub accept_all: bool,
    /// Reject the pending keys matching a glob.
    #[arg(short = 'r', long = "reject", value_name = "REJECT", group = "action")]
    pub reject: Option<String>,
    /// Reject all pending keys.
    #[arg(short = 'R', long = "reject-all", group = "action")]
    pub reject_all: bool,
    /// Delete the keys matching a glob, in every state.
    #[arg(short = 'd', long = "delete", value_name = "DELETE", group = "action")]
    pub delete: Option<String>,
    /// Delete all keys.
    #[arg(short = 'D', long = "delete-all", group = "action")]
    pub delete_all: bool,
    /// Print the fingerprints of the keys matching a glob.
    #[arg(short = 'f', long = "finger", value_name = "FINGER", group = "action")]
    pub finger: Option<String>,
    /// Print all fingerprints, the master's own keys included.
    #[arg(short = 'F', long = "finger-all", group = "action")]
    pub finger_all: bool,
    /// Let the accepted keys matching a glob sign in as syndics (needs
    /// `order_masters: True`); a minion key cannot claim the role itself.
    #[arg(long = "grant-syndic", value_name = "GLOB", group = "action")]
    pub grant_syndic: Option<String>,
    /// Take the syndic role back from the ids matching a glob; a connected
    /// syndic loses its session at once.
    #[arg(long = "revoke-syndic", value_name = "GLOB", group = "action")]
    pub revoke_syndic: Option<String>,
    /// Answer yes to every question.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Accepting also takes rejected keys.
    #[arg(long = "include-rejected")]
    pub include_rejected: bool,
    /// Rejecting also takes accepted keys.
    #[arg(long = "include-accepted")]
    pub include_accepted: bool,
    /// Accepting/rejecting also takes denied keys.
    #[arg(long = "include-denied")]
    pub include_denied: bool,
    /// Accepting/rejecting takes keys in every other state.
    #[arg(long = "include-all")]
    pub include_all: bool,
    /// Generate a key pair NAME.pem/NAME.pub.
    #[arg(long = "gen-keys", value_name = "NAME", group = "action")]
    pub gen_keys: Option<String>,
    /// Where --gen-keys writes.
    #[arg(long = "gen-keys-dir", value_name = "DIR", default_value = ".")]
    pub gen_keys_dir: PathBuf,
    /// Output format.
    #[arg(long = "out", visible_alias = "output", value_parser = out_parser())]
    pub out: Option<OutFormat>,
    /// Never colour the output.
    #[arg(long = "no-color", visible_alias = "no-colour")]
    pub no_color: bool,
    /// Colour the output even when stdout is not a terminal.
    #[arg(long = "force-color", visible_alias = "force-colour")]
    pub force_color: bool,
    /// Set by the binary: stdout is a terminal, so colour by default.
    #[arg(skip)]
    pub stdout_is_tty: bool,
}

/// A change `salt-key` made, for the master to act on (rotate the publish
/// key and end the sessions on reject/delete/revoke-syndic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    Accepted(Vec<String>),
    Rejected(Vec<String>),
    Deleted(Vec<String>),
    SyndicGranted(Vec<String>),
    SyndicRevoked(Vec<String>),
}

/// Which of the three changing commands runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Change {
    Accept,
    Reject,
    Delete,
}

impl Change {
    fn verb(self) -> &'static str {
        match self {
            Change::Accept => "accepted",
            Change::Reject => "rejected",
            Change::Delete => "deleted",
        }
    }
}

/// What one invocation does, resolved from the flags.
enum Action {
    List(Option<KeyState>),
    Change(Change, String),
    Finger(String),
    GenKeys(String),
    /// Grant (true) or revoke (false) the syndic role of a glob.
    Syndic(bool, String),
}

fn action(args: &KeyArgs) -> Action {
    if let Some(name) = &args.gen_keys {
        return Action::GenKeys(name.clone());
    }
    if let Some(g) = &args.grant_syndic {
        return Action::Syndic(true, g.clone());
    }
    if let Some(g) = &args.revoke_syndic {
        return Action::Syndic(false, g.clone());
    }
    if let Some(g) = &args.accept {
        return Action::Change(Change::Accept, g.clone());
    }
    if args.accept_all {
        return Action::Change(Change::Accept, "*".into());
    }
    if let Some(g) = &args.reject {
        return Action::Change(Change::Reject, g.clone());
    }
    if args.reject_all {
        return Action::Change(Change::Reject, "*".into());
    }
    if let Some(g) = &args.delete {
        return Action::Change(Change::Delete, g.clone());
    }
    if args.delete_all {
        return Action::Change(Change::Delete, "*".into());
    }
    if let Some(g) = &args.finger {
        return Action::Finger(g.clone());
    }
    if args.finger_all {
        return Action::Finger("*".into());
    }
    match args.list.as_deref() {
        Some(l) if l.starts_with("acc") => Action::List(Some(KeyState::Accepted)),
        Some(l) if l.starts_with("pre") || l.starts_with("un") => {
            Action::List(Some(KeyState::Pending))
        }
        Some(l) if l.starts_with("rej") => Action::List(Some(KeyState::Rejected)),
        Some(l) if l.starts_with("den") => Action::List(Some(KeyState::Denied)),
        _ => Action::List(None),
    }
}

/// The `-F`/`-f` section of the master's own keys.
const LOCAL: &str = "local";

/// Groups `(state, id)` pairs into id sections in Salt's directory order,
/// leaving out empty states.
fn group(planned: &[(KeyState, String)]) -> KeySections {
    let mut secs = Vec::new();
    for state in KeyState::ALL {
        let mut ids: Vec<String> = planned
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, id)| id.clone())
            .collect();
        if ids.is_empty() {
            continue;
        }
        sort_ignorecase(&mut ids);
        secs.push(KeySection {
            status: state.dir_name().to_string(),
            keys: KeyList::Ids(ids),
        });
    }
    KeySections(secs)
}

/// Salt's message when a change matches nothing.
fn no_match(glob: &str, include: &[(&str, bool)]) -> String {
    let mut statuses = vec!["unaccepted"];
    statuses.extend(include.iter().filter(|(_, on)| *on).map(|(s, _)| *s));
    let stat = match statuses.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => "unaccepted".to_string(),
    };
    format!("The key glob '{glob}' does not match any {stat} keys.\n")
}

/// Shows the prompt and reads one answer; `default_yes` is what an empty
/// answer means. EOF or a read error is "no".
fn confirm(
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    default_yes: bool,
) -> std::io::Result<bool> {
    out.write_all(if default_yes {
        b"Proceed? [n/Y] "
    } else {
        b"Proceed? [N/y] "
    })?;
    out.flush()?;
    let mut line = String::new();
    match (&mut *stdin).take(MAX_ANSWER).read_line(&mut line) {
        Ok(0) | Err(_) => {
            out.write_all(b"\n")?;
            Ok(false)
        }
        Ok(_) => {
            let answer = line.trim();
            Ok(if answer.is_empty() {
                default_yes
            } else {
                answer.starts_with(['y', 'Y'])
            })
        }
    }
}

/// An id as the text output shows it: as is when it is a valid id, quoted
/// with escapes otherwise (a key stored under a name refused today, e.g.
/// `".hidden"` or `"web\u{200b}1"`), so it can be neither missed nor
/// mistaken for another id.
fn shown(id: &str) -> String {
    if KeyStore::valid_id(id) {
        id.to_string()
    } else {
        format!("{id:?}")
    }
}

fn report(err: &dyn std::fmt::Display) {
    // stderr is the operator's terminal; if it is gone there is no one to tell.
    let _ = writeln!(std::io::stderr(), "salt-key: error: {err}");
}

/// Runs one salt-key invocation against `pki_dir`; `notify` is called once
/// after any state change (the lead wires it to tell the running master to
/// rotate its publish key on delete/reject). Returns the exit code.
pub fn run(
    args: &KeyArgs,
    pki_dir: &Path,
    auto_accept: bool,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    notify: &mut dyn FnMut(KeyChange),
) -> i32 {
    let act = action(args);
    if let Action::GenKeys(name) = &act {
        return gen_keys(&args.gen_keys_dir, name);
    }
    let store = match KeyStore::open(pki_dir, auto_accept, None) {
        Ok(s) => s,
        Err(e) => {
            report(&e);
            return exit::CONFIG;
        }
    };
    let result = match act {
        Action::List(which) => list(&store, which, args, out),
        Action::Finger(glob) => finger(&store, &glob, args, out),
        Action::Change(change, glob) => {
            change_keys(&store, change, &glob, args, stdin, out, notify)
        }
        Action::Syndic(grant, glob) => syndic_role(&store, grant, &glob, args, stdin, out, notify),
        Action::GenKeys(_) => Ok(()),
    };
    match result {
        Ok(()) => exit::OK,
        Err(CliError::Key(e)) => {
            report(&e);
            exit::SOFTWARE
        }
        // Nobody reads our output any more (closed pipe): nothing to report.
        Err(CliError::Io(_)) => exit::SOFTWARE,
    }
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("write: {0}")]
    Io(#[from] std::io::Error),
}

/// Prints `doc` through the shared outputters. Colour applies to the key
/// outputter only (the other formats print as they always have here), and
/// the key outputter shows an id refused today quoted (see [`shown`]).
fn print(doc: KeySections, args: &KeyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let format = format_of(args);
    let doc = if format == OutFormat::Key {
        KeySections(
            doc.0
                .into_iter()
                .map(|sec| KeySection {
                    status: sec.status,
                    keys: match sec.keys {
                        KeyList::Ids(ids) => KeyList::Ids(ids.iter().map(|id| shown(id)).collect()),
                        KeyList::Fingers(entries) => KeyList::Fingers(
                            entries
                                .into_iter()
                                .map(|(id, fp)| (shown(&id), fp))
                                .collect(),
                        ),
                    },
                })
                .collect(),
        )
    } else {
        doc
    };
    let mut opts = OutOpts::new(format);
    opts.color = format == OutFormat::Key && colored(args);
    let mut printer = Printer::new(out, opts);
    printer.keys(&doc)?;
    Ok(())
}

fn format_of(args: &KeyArgs) -> OutFormat {
    args.out.unwrap_or(OutFormat::Key)
}

fn colored(args: &KeyArgs) -> bool {
    !args.no_color && (args.force_color || args.stdout_is_tty)
}

fn gen_keys(dir: &Path, name: &str) -> i32 {
    if !KeyStore::valid_id(name) {
        report(&format!("invalid key name {name:?}"));
        return exit::USAGE;
    }
    match KeyPair::load_or_generate(dir, name) {
        Ok(_) => exit::OK,
        Err(e) => {
            report(&e);
            exit::SOFTWARE
        }
    }
}

fn list(
    store: &KeyStore,
    which: Option<KeyState>,
    args: &KeyArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let listing = store.list()?;
    let states: Vec<KeyState> = match which {
        Some(s) => vec![s],
        None => KeyState::ALL.to_vec(),
    };
    let mut sections = KeySections(
        states
            .into_iter()
            .map(|s| KeySection {
                status: s.dir_name().to_string(),
                keys: KeyList::Ids(listing.get(s).to_vec()),
            })
            .collect(),
    );
    let syndics = store.syndics()?;
    // Structured outputs always carry the list (a stable shape for
    // scripts); the text output shows it when there is one, so it stays
    // Salt's on a master without syndics. After Salt's own sections, which
    // keep Salt's order (accepted, pending, rejected, denied); the key
    // outputter prints it right after the accepted keys.
    if which.is_none() && (!syndics.is_empty() || format_of(args) != OutFormat::Key) {
        sections.0.push(KeySection {
            status: SYNDICS.to_string(),
            keys: KeyList::Ids(syndics),
        });
    }
    print(sections, args, out)
}

fn finger(
    store: &KeyStore,
    glob: &str,
    args: &KeyArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut secs = Vec::new();
    let local: Vec<(String, String)> = store
        .local_fingerprints()?
        .into_iter()
        .filter(|(name, _)| glob_matches(glob, name))
        .collect();
    if !local.is_empty() {
        secs.push(KeySection {
            status: LOCAL.to_string(),
            keys: KeyList::Fingers(local),
        });
    }
    let fingers = store.fingerprints(glob)?;
    for state in KeyState::ALL {
        let entries: Vec<(String, String)> = fingers
            .iter()
            .filter(|(s, _, _)| *s == state)
            .map(|(_, id, fp)| (id.clone(), fp.clone()))
            .collect();
        if !entries.is_empty() {
            secs.push(KeySection {
                status: state.dir_name().to_string(),
                keys: KeyList::Fingers(entries),
            });
        }
    }
    if secs.is_empty() && format_of(args) == OutFormat::Key {
        return Ok(());
    }
    print(KeySections(secs), args, out)
}

fn change_keys(
    store: &KeyStore,
    change: Change,
    glob: &str,
    args: &KeyArgs,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    notify: &mut dyn FnMut(KeyChange),
) -> Result<(), CliError> {
    let all = args.include_all;
    let mut states = vec![KeyState::Pending];
    let include: Vec<(&str, bool)> = match change {
        Change::Accept => {
            let (rej, den) = (all || args.include_rejected, all || args.include_denied);
            if rej {
                states.push(KeyState::Rejected);
            }
            if den {
                states.push(KeyState::Denied);
            }
            vec![("rejected", rej), ("denied", den)]
        }
        Change::Reject => {
            let (acc, den) = (all || args.include_accepted, all || args.include_denied);
            if acc {
                states.push(KeyState::Accepted);
            }
            if den {
                states.push(KeyState::Denied);
            }
            vec![("accepted", acc), ("denied", den)]
        }
        Change::Delete => {
            states = KeyState::ALL.to_vec();
            // Salt words the no-match message from the raw include flags.
            vec![
                ("accepted", args.include_accepted),
                ("rejected", args.include_rejected),
                ("denied", args.include_denied),
            ]
        }
    };
    let planned = store.matching(glob, &states)?;
    if planned.is_empty() {
        out.write_all(no_match(glob, &include).as_bytes())?;
        return Ok(());
    }
    writeln!(out, "The following keys are going to be {}:", change.verb())?;
    print(group(&planned), args, out)?;
    if !args.yes && !confirm(stdin, out, change != Change::Delete)? {
        return Ok(());
    }
    let changed: Vec<String> = match change {
        Change::Accept => store.accept_planned(&planned)?,
        Change::Reject => store.reject_planned(&planned)?,
        Change::Delete => {
            let mut ids = Vec::new();
            for (id, _) in store.delete_planned(&planned)? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            ids
        }
    };
    for id in &changed {
        writeln!(out, "Key for minion {} {}.", shown(id), change.verb())?;
    }
    if change == Change::Accept {
        for (_, id) in &planned {
            if !changed.contains(id) {
                report(&format!("Unable to accept invalid key for {id}."));
            }
        }
    }
    if !changed.is_empty() {
        notify(match change {
            Change::Accept => KeyChange::Accepted(changed),
            Change::Reject => KeyChange::Rejected(changed),
            Change::Delete => KeyChange::Deleted(changed),
        });
    }
    Ok(())
}

/// `--grant-syndic` / `--revoke-syndic`: shows the ids the glob resolves
/// to (accepted keys without the role, or ids holding a grant), asks (yes
/// by default for a grant, no for a revoke, as for accept and delete) and
/// changes exactly those.
fn syndic_role(
    store: &KeyStore,
    grant: bool,
    glob: &str,
    args: &KeyArgs,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    notify: &mut dyn FnMut(KeyChange),
) -> Result<(), CliError> {
    let planned: Vec<String> = if grant {
        let held = store.syndics()?;
        store
            .matching(glob, &[KeyState::Accepted])?
            .into_iter()
            .map(|(_, id)| id)
            .filter(|id| KeyStore::valid_id(id) && !held.contains(id))
            .collect()
    } else {
        store.grants_matching(glob)?
    };
    if planned.is_empty() {
        let what = if grant {
            "accepted keys without the syndic role"
        } else {
            "syndics"
        };
        writeln!(out, "The key glob '{glob}' does not match any {what}.")?;
        return Ok(());
    }
    let (verb, status) = if grant {
        ("granted the syndic role", KeyState::Accepted.dir_name())
    } else {
        ("revoked as syndics", SYNDICS)
    };
    writeln!(out, "The following keys are going to be {verb}:")?;
    let shown_ids = KeySections(vec![KeySection {
        status: status.to_string(),
        keys: KeyList::Ids(planned.clone()),
    }]);
    print(shown_ids, args, out)?;
    if !args.yes && !confirm(stdin, out, grant)? {
        return Ok(());
    }
    let changed = if grant {
        store.grant_syndic_planned(&planned)?
    } else {
        store.revoke_syndic_planned(&planned)?
    };
    for id in &changed {
        if grant {
            writeln!(out, "Syndic role granted to minion {}.", shown(id))?;
        } else {
            writeln!(out, "Syndic role revoked for minion {}.", shown(id))?;
        }
    }
    if !changed.is_empty() {
        notify(if grant {
            KeyChange::SyndicGranted(changed)
        } else {
            KeyChange::SyndicRevoked(changed)
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::sync::OnceLock;

    fn keys() -> &'static [KeyPair] {
        static KEYS: OnceLock<Vec<KeyPair>> = OnceLock::new();
        KEYS.get_or_init(|| (0..2).map(|_| KeyPair::generate().expect("gen")).collect())
    }

    /// pki dir with pending web1, web2; accepted db1 (+ a denied db1);
    /// rejected bad1.
    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = dir.path().join("pki");
        let s = KeyStore::open(&pki, false, None).expect("open");
        let k0 = keys()[0].public().pem();
        for id in ["web2", "web1", "db1", "bad1"] {
            s.sign_in(id, k0).expect("sign");
        }
        s.accept("db1", false, false).expect("acc");
        s.reject("bad1", false, false).expect("rej");
        s.sign_in("db1", keys()[1].public().pem()).expect("deny");
        (dir, pki)
    }

    struct Ran {
        code: i32,
        out: String,
        changes: Vec<KeyChange>,
    }

    fn cli(pki: &Path, argv: &[&str], input: &str) -> Ran {
        let mut full = vec!["salt-key"];
        full.extend_from_slice(argv);
        let args = KeyArgs::try_parse_from(full).expect("parse");
        let mut stdin = std::io::Cursor::new(input.as_bytes().to_vec());
        let mut out = Vec::new();
        let mut changes = Vec::new();
        let code = run(&args, pki, false, &mut stdin, &mut out, &mut |c| {
            changes.push(c)
        });
        Ran {
            code,
            out: String::from_utf8(out).expect("utf8"),
            changes,
        }
    }

    fn listing(pki: &Path) -> crate::keys::KeyListing {
        KeyStore::open(pki, false, None)
            .expect("open")
            .list()
            .expect("list")
    }

    const ALL: &str = "Accepted Keys:\ndb1\nDenied Keys:\ndb1\nUnaccepted Keys:\nweb1\nweb2\nRejected Keys:\nbad1\n";

    #[test]
    fn list_all_is_the_default() {
        let (_d, pki) = fixture();
        for argv in [&[][..], &["-L"], &["--list-all"], &["-l", "all"]] {
            let r = cli(&pki, argv, "");
            assert_eq!((r.code, r.out.as_str()), (0, ALL), "{argv:?}");
            assert!(r.changes.is_empty());
        }
    }

    #[test]
    fn list_one_state() {
        let (_d, pki) = fixture();
        let cases = [
            ("acc", "Accepted Keys:\ndb1\n"),
            ("accepted", "Accepted Keys:\ndb1\n"),
            ("pre", "Unaccepted Keys:\nweb1\nweb2\n"),
            ("un", "Unaccepted Keys:\nweb1\nweb2\n"),
            ("unaccepted", "Unaccepted Keys:\nweb1\nweb2\n"),
            ("rej", "Rejected Keys:\nbad1\n"),
            ("rejected", "Rejected Keys:\nbad1\n"),
            ("den", "Denied Keys:\ndb1\n"),
            ("denied", "Denied Keys:\ndb1\n"),
        ];
        for (arg, want) in cases {
            let r = cli(&pki, &["-l", arg], "");
            assert_eq!(r.out, want, "{arg}");
            let r = cli(&pki, &["--list", arg], "");
            assert_eq!(r.out, want, "{arg}");
        }
        assert!(KeyArgs::try_parse_from(["salt-key", "-l", "foo-acc"]).is_err());
    }

    #[test]
    fn structured_outputs() {
        let (_d, pki) = fixture();
        let r = cli(&pki, &["-L", "--out", "json"], "");
        assert_eq!(
            r.out,
            "{\n    \"minions\": [\n        \"db1\"\n    ],\n    \"minions_pre\": [\n        \"web1\",\n        \"web2\"\n    ],\n    \"minions_rejected\": [\n        \"bad1\"\n    ],\n    \"minions_denied\": [\n        \"db1\"\n    ],\n    \"syndics\": []\n}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&r.out).expect("json");
        assert_eq!(v["minions_pre"], serde_json::json!(["web1", "web2"]));
        let r = cli(&pki, &["-l", "un", "--out=json"], "");
        assert_eq!(
            r.out,
            "{\n    \"minions_pre\": [\n        \"web1\",\n        \"web2\"\n    ]\n}\n"
        );
        let r = cli(&pki, &["-L", "--out", "yaml"], "");
        assert_eq!(
            r.out,
            "minions:\n- db1\nminions_denied:\n- db1\nminions_pre:\n- web1\n- web2\nminions_rejected:\n- bad1\nsyndics: []\n"
        );
        let r = cli(&pki, &["-l", "rej", "--out", "nested"], "");
        assert_eq!(r.out, "minions_rejected:\n    - bad1\n");
        let r = cli(&pki, &["-L", "--out", "txt"], "");
        assert_eq!(
            r.out,
            "minions: ['db1']\nminions_pre: ['web1', 'web2']\nminions_rejected: ['bad1']\nminions_denied: ['db1']\nsyndics: []\n"
        );
    }

    /// Golden outputs, byte for byte, of every format for `-L` (with a
    /// syndic granted), `-F` and `-f`; captured from the renderers before
    /// they moved to the shared outputters (only `syndics`' place in
    /// json/txt/nested changed: after Salt's own sections).
    #[test]
    fn golden_outputs() {
        let (_d, pki) = fixture();
        let master = KeyStore::open(&pki, false, None)
            .expect("open")
            .master_keypair()
            .expect("master");
        let (mf, f0, f1) = (
            master.public().fingerprint(),
            keys()[0].public().fingerprint(),
            keys()[1].public().fingerprint(),
        );
        cli(&pki, &["--grant-syndic", "db1", "-y"], "");
        let golden: Vec<(&[&str], String)> = vec![
            (&["-L"], "Accepted Keys:\ndb1\nSyndics:\ndb1\nDenied Keys:\ndb1\nUnaccepted Keys:\nweb1\nweb2\nRejected Keys:\nbad1\n".to_string()),
            (&["-L", "--force-color"], "\x1b[1;32mAccepted Keys:\x1b[0m\n\x1b[0;32mdb1\x1b[0m\n\x1b[1;36mSyndics:\x1b[0m\n\x1b[0;36mdb1\x1b[0m\n\x1b[1;35mDenied Keys:\x1b[0m\n\x1b[0;35mdb1\x1b[0m\n\x1b[1;31mUnaccepted Keys:\x1b[0m\n\x1b[0;31mweb1\x1b[0m\n\x1b[0;31mweb2\x1b[0m\n\x1b[1;34mRejected Keys:\x1b[0m\n\x1b[0;34mbad1\x1b[0m\n".to_string()),
            (&["-L", "--out", "json"], "{\n    \"minions\": [\n        \"db1\"\n    ],\n    \"minions_pre\": [\n        \"web1\",\n        \"web2\"\n    ],\n    \"minions_rejected\": [\n        \"bad1\"\n    ],\n    \"minions_denied\": [\n        \"db1\"\n    ],\n    \"syndics\": [\n        \"db1\"\n    ]\n}\n".to_string()),
            (&["-L", "--out", "yaml", "--force-color"], "minions:\n- db1\nminions_denied:\n- db1\nminions_pre:\n- web1\n- web2\nminions_rejected:\n- bad1\nsyndics:\n- db1\n".to_string()),
            (&["-L", "--out", "txt"], "minions: ['db1']\nminions_pre: ['web1', 'web2']\nminions_rejected: ['bad1']\nminions_denied: ['db1']\nsyndics: ['db1']\n".to_string()),
            (&["-L", "--out", "nested", "--force-color"], "minions:\n    - db1\nminions_pre:\n    - web1\n    - web2\nminions_rejected:\n    - bad1\nminions_denied:\n    - db1\nsyndics:\n    - db1\n".to_string()),
            (&["-F"], format!("Local Keys:\nmaster.pem:  {mf}\nmaster.pub:  {mf}\nAccepted Keys:\ndb1:  {f0}\nDenied Keys:\ndb1:  {f1}\nUnaccepted Keys:\nweb1:  {f0}\nweb2:  {f0}\nRejected Keys:\nbad1:  {f0}\n")),
            (&["-F", "--out", "json"], format!("{{\n    \"local\": {{\n        \"master.pem\": \"{mf}\",\n        \"master.pub\": \"{mf}\"\n    }},\n    \"minions\": {{\n        \"db1\": \"{f0}\"\n    }},\n    \"minions_pre\": {{\n        \"web1\": \"{f0}\",\n        \"web2\": \"{f0}\"\n    }},\n    \"minions_rejected\": {{\n        \"bad1\": \"{f0}\"\n    }},\n    \"minions_denied\": {{\n        \"db1\": \"{f1}\"\n    }}\n}}\n")),
            (&["-F", "--out", "yaml"], format!("local:\n  master.pem: {mf}\n  master.pub: {mf}\nminions:\n  db1: {f0}\nminions_denied:\n  db1: {f1}\nminions_pre:\n  web1: {f0}\n  web2: {f0}\nminions_rejected:\n  bad1: {f0}\n")),
            (&["-F", "--out", "txt"], format!("local: {{'master.pem': '{mf}', 'master.pub': '{mf}'}}\nminions: {{'db1': '{f0}'}}\nminions_pre: {{'web1': '{f0}', 'web2': '{f0}'}}\nminions_rejected: {{'bad1': '{f0}'}}\nminions_denied: {{'db1': '{f1}'}}\n")),
            (&["-F", "--out", "nested"], format!("local:\n    ----------\n    master.pem:\n        {mf}\n    master.pub:\n        {mf}\nminions:\n    ----------\n    db1:\n        {f0}\nminions_pre:\n    ----------\n    web1:\n        {f0}\n    web2:\n        {f0}\nminions_rejected:\n    ----------\n    bad1:\n        {f0}\nminions_denied:\n    ----------\n    db1:\n        {f1}\n")),
            (&["-f", "db1", "--force-color"], format!("\x1b[1;32mAccepted Keys:\x1b[0m\n\x1b[0;32mdb1:  {f0}\x1b[0m\n\x1b[1;35mDenied Keys:\x1b[0m\n\x1b[0;35mdb1:  {f1}\x1b[0m\n")),
            (&["-f", "nothing", "--out", "json"], "{}\n".to_string()),
            (&["-f", "nothing", "--out", "yaml"], "{}\n".to_string()),
            (&["-f", "nothing", "--out", "txt"], String::new()),
            (&["-l", "acc", "--out", "json"], "{\n    \"minions\": [\n        \"db1\"\n    ]\n}\n".to_string()),
            (&["-d", "web*", "--out", "json"], "The following keys are going to be deleted:\n{\n    \"minions_pre\": [\n        \"web1\",\n        \"web2\"\n    ]\n}\nProceed? [N/y] \n".to_string()),
        ];
        for (argv, want) in golden {
            let r = cli(&pki, argv, "");
            assert_eq!(r.code, 0, "{argv:?}");
            assert_eq!(r.out, want, "{argv:?}");
        }
    }

    /// `-c` falls back to `SALT_CONFIG_DIR` in every client CLI of the
    /// master (salt-key's did not before `ClientArgs`); salt-key's `-l` is
    /// still `--list`.
    #[test]
    fn client_flags_are_shared() {
        use crate::cli::{run::RunArgs, salt::SaltArgs};
        use clap::CommandFactory;
        fn reads_env<C: CommandFactory>() -> bool {
            C::command()
                .get_arguments()
                .find(|a| a.get_id() == "config_dir")
                .and_then(|a| a.get_env())
                .is_some_and(|e| e == "SALT_CONFIG_DIR")
        }
        assert!(reads_env::<KeyArgs>());
        assert!(reads_env::<SaltArgs>());
        assert!(reads_env::<RunArgs>());
        let a = KeyArgs::try_parse_from(["salt-key", "-l", "acc"]).expect("parse");
        assert_eq!(a.list.as_deref(), Some("acc"));
        assert_eq!(a.client.log_level, "warning");
        let a = SaltArgs::try_parse_from(["salt", "-c", "/x", "-l", "debug", "*", "test.ping"])
            .expect("parse");
        assert_eq!(a.client.config_dir, PathBuf::from("/x"));
        assert_eq!(a.client.log_level, "debug");
        let a = RunArgs::try_parse_from(["salt-run", "-c", "/y", "-l", "info", "jobs.list_jobs"])
            .expect("parse");
        assert_eq!(
            (a.client.config_dir.to_str(), a.client.log_level.as_str()),
            (Some("/y"), "info")
        );
    }

    #[test]
    fn colours_on_tty_unless_no_color() {
        let (_d, pki) = fixture();
        let r = cli(&pki, &["-l", "acc", "--force-color"], "");
        assert_eq!(
            r.out,
            "\x1b[1;32mAccepted Keys:\x1b[0m\n\x1b[0;32mdb1\x1b[0m\n"
        );
        let mut args = KeyArgs::try_parse_from(["salt-key", "-l", "den"]).expect("parse");
        args.stdout_is_tty = true;
        let mut out = Vec::new();
        let code = run(
            &args,
            &pki,
            false,
            &mut std::io::empty(),
            &mut out,
            &mut |_| {},
        );
        assert_eq!(code, 0);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "\x1b[1;35mDenied Keys:\x1b[0m\n\x1b[0;35mdb1\x1b[0m\n"
        );
        args.no_color = true;
        let mut out = Vec::new();
        run(
            &args,
            &pki,
            false,
            &mut std::io::empty(),
            &mut out,
            &mut |_| {},
        );
        assert_eq!(String::from_utf8(out).expect("utf8"), "Denied Keys:\ndb1\n");
    }

    #[test]
    fn accept_prompts_and_proceeds() {
        let (_d, pki) = fixture();
        let r = cli(&pki, &["-a", "web1"], "y\n");
        assert_eq!(r.code, 0);
        assert_eq!(
            r.out,
            "The following keys are going to be accepted:\nUnaccepted Keys:\nweb1\nProceed? [n/Y] Key for minion web1 accepted.\n"
        );
        assert_eq!(r.changes, vec![KeyChange::Accepted(vec!["web1".into()])]);
        // An empty answer means yes for accept.
        let r = cli(&pki, &["--accept", "web*"], "\n");
        assert_eq!(
            r.out,
            "The following keys are going to be accepted:\nUnaccepted Keys:\nweb2\nProceed? [n/Y] Key for minion web2 accepted.\n"
        );
        assert_eq!(listing(&pki).minions, vec!["db1", "web1", "web2"]);
    }

    #[test]
    fn accept_aborts_on_no_or_eof() {
        let (_d, pki) = fixture();
        for input in ["n\n", "no\n", "x\n", ""] {
            let r = cli(&pki, &["-A"], input);
            assert_eq!(r.code, 0);
            assert!(r.out.starts_with(
                "The following keys are going to be accepted:\nUnaccepted Keys:\nweb1\nweb2\nProceed? [n/Y] "
            ));
            assert!(!r.out.contains("Key for minion"), "{input:?}: {}", r.out);
            assert!(r.changes.is_empty());
        }
        assert_eq!(listing(&pki).minions_pre, vec!["web1", "web2"]);
    }

    #[test]
    fn accept_all_yes_and_includes() {
        let (_d, pki) = fixture();
        let r = cli(&pki, &["-A", "-y"], "");
        assert_eq!(
            r.out,
            "The following keys are going to be accepted:\nUnaccepted Keys:\nweb1\nweb2\nKey for minion web1 accepted.\nKey for minion web2 accepted.\n"
        );
        // Nothing pending any more: Salt's no-match message, exit 0.
        let r = cli(&pki, &["-A", "-y"], "");
        assert_eq!(
            (r.code, r.out.as_str()),
            (0, "The key glob '*' does not match any unaccepted keys.\n")
        );
        let r = cli(&pki, &["-a", "nope", "--include-all"], "");
        assert_eq!(
            r.out,
            "The key glob 'nope' does not match any unaccepted, rejected or denied keys.\n"
        );
        let r = cli(&pki, &["-a", "nope", "--include-denied"], "");
        assert_eq!(
            r.out,
            "The key glob 'nope' does not match any unaccepted or denied keys.\n"
        );
        let r = cli(&pki, &["-a", "bad1", "--include-rejected", "-y"], "");
        assert_eq!(
            r.out,
            "The following keys are going to be accepted:\nRejected Keys:\nbad1\nKey for minion bad1 accepted.\n"
        );
        assert_eq!(r.changes, vec![KeyChange::Accepted(vec!["bad1".into()])]);
    }

    #[test]
    fn reject_and_include_accepted() {
        let (_d, pki) = fixture();
        let r = cli(&pki, &["-r", "web2", "-y"], "");
        assert_eq!(
            r.out,
            "The following keys are going to be rejected:\nUnaccepted Keys:\nweb2\nKey for minion web2 rejected.\n"
        );
        assert_eq!(r.changes, vec![KeyChange::Rejected(vec!["web2".into()])]);
        let r = cli(&pki, &["-r", "db1"], "");
        assert_eq!(
            r.out,
            "The key glob 'db1' does not match any unaccepted keys.\n"
        );
        let r = cli(&pki, &["-r", "db1", "--include-accepted"], "Y\n");
        assert_eq!(
            r.out,
            "The following keys are going to be rejected:\nAccepted Keys:\ndb1\nProceed? [n/Y] Key for minion db1 rejected.\n"
        );
        let r = cli(&pki, &["-R"], "y\n");
        assert!(
            r.out.ends_with("Key for minion web1 rejected.\n"),
            "{}",
            r.out
        );
        let l = listing(&pki);
        assert_eq!(l.minions_rejected, vec!["bad1", "db1", "web1", "web2"]);
        assert!(l.minions.is_empty() && l.minions_pre.is_empty());
        assert_eq!(l.minions_denied, vec!["db1"]);
    }

    #[test]
    fn delete_defaults_to_no() {
        let (_d, pki) = fixture();
        let r = cli(&pki, &["-d", "db1"], "\n");
        assert_eq!(
            r.out,
            "The following keys are going to be deleted:\nAccepted Keys:\ndb1\nDenied Keys:\ndb1\nProceed? [N/y] "
        );
        assert!(r.changes.is_empty());
        let r = cli(&pki, &["-d", "db1"], "y\n");
        assert!(
            r.out
                .ends_with("Proceed? [N/y] Key for minion db1 deleted.\n"),
            "{}",
            r.out
        );
        assert_eq!(r.changes, vec![KeyChange::Deleted(vec!["db1".into()])]);
        let r = cli(&pki, &["-d", "db1"], "y\n");
        assert_eq!(
            r.out,
            "The key glob 'db1' does not match any unaccepted keys.\n"
        );
        let r = cli(&pki, &["-D", "--yes"], "");
        assert_eq!(
            r.out,
            "The following keys are going to be deleted:\nUnaccepted Keys:\nweb1\nweb2\nRejected Keys:\nbad1\nKey for minion web1 deleted.\nKey for minion web2 deleted.\nKey for minion bad1 deleted.\n"
        );
        assert_eq!(
            cli(&pki, &[], "").out,
            "Accepted Keys:\nDenied Keys:\nUnaccepted Keys:\nRejected Keys:\n"
        );
    }

    #[test]
    fn fingerprints() {
        let (_d, pki) = fixture();
        let master = KeyStore::open(&pki, false, None)
            .expect("open")
            .master_keypair()
            .expect("master");
        let (mf, f0, f1) = (
            master.public().fingerprint(),
            keys()[0].public().fingerprint(),
            keys()[1].public().fingerprint(),
        );
        let r = cli(&pki, &["-f", "web1"], "");
        assert_eq!(r.out, format!("Unaccepted Keys:\nweb1:  {f0}\n"));
        let r = cli(&pki, &["--finger", "db1"], "");
        assert_eq!(
            r.out,
            format!("Accepted Keys:\ndb1:  {f0}\nDenied Keys:\ndb1:  {f1}\n")
        );
        let r = cli(&pki, &["-F"], "");
        assert_eq!(
            r.out,
            format!(
                "Local Keys:\nmaster.pem:  {mf}\nmaster.pub:  {mf}\nAccepted Keys:\ndb1:  {f0}\nDenied Keys:\ndb1:  {f1}\nUnaccepted Keys:\nweb1:  {f0}\nweb2:  {f0}\nRejected Keys:\nbad1:  {f0}\n"
            )
        );
        let r = cli(&pki, &["-f", "nothing"], "");
        assert_eq!((r.code, r.out.as_str()), (0, ""));
        let r = cli(&pki, &["-f", "web1", "--out", "json"], "");
        assert_eq!(
            r.out,
            format!("{{\n    \"minions_pre\": {{\n        \"web1\": \"{f0}\"\n    }}\n}}\n")
        );
        let r = cli(&pki, &["-f", "bad1", "--out", "nested"], "");
        assert_eq!(
            r.out,
            format!("minions_rejected:\n    ----------\n    bad1:\n        {f0}\n")
        );
        let r = cli(&pki, &["-f", "bad1", "--out", "txt"], "");
        assert_eq!(r.out, format!("minions_rejected: {{'bad1': '{f0}'}}\n"));
    }

    #[test]
    fn gen_keys_writes_a_pair() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().to_str().expect("utf8");
        let r = cli(
            &dir.path().join("unused"),
            &["--gen-keys", "minibar", "--gen-keys-dir", d],
            "",
        );
        assert_eq!(r.code, 0);
        let pem = std::fs::read_to_string(dir.path().join("minibar.pem")).expect("pem");
        let kp = KeyPair::from_pem(&pem).expect("parse");
        let pubk = std::fs::read_to_string(dir.path().join("minibar.pub")).expect("pub");
        assert_eq!(pubk, kp.public().pem());
        assert!(
            !dir.path().join("unused").exists(),
            "gen-keys needs no pki dir"
        );
        let r = cli(dir.path(), &["--gen-keys", "../x"], "");
        assert_eq!(r.code, exit::USAGE);
    }

    #[test]
    fn usage_and_config_errors() {
        for argv in [
            &["salt-key", "-a", "x", "-d", "y"][..],
            &["salt-key", "-L", "-A"],
            &["salt-key", "--out", "xml"],
            &["salt-key", "--log-level", "loud"],
            &["salt-key", "-a"],
        ] {
            assert!(KeyArgs::try_parse_from(argv).is_err(), "{argv:?}");
        }
        let a = KeyArgs::try_parse_from(["salt-key", "-c", "/x", "--log-level", "debug", "-y"])
            .expect("parse");
        assert_eq!(a.client.config_dir, PathBuf::from("/x"));
        assert_eq!(a.client.log_level, "debug");
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("write");
        let r = cli(&file.join("pki"), &["-L"], "");
        assert_eq!(r.code, exit::CONFIG);
    }

    #[test]
    fn grant_and_revoke_the_syndic_role() {
        let (_d, pki) = fixture();
        // Only accepted keys can be granted.
        let r = cli(&pki, &["--grant-syndic", "web*", "-y"], "");
        assert_eq!(
            r.out,
            "The key glob 'web*' does not match any accepted keys without the syndic role.\n"
        );
        let r = cli(&pki, &["--grant-syndic", "db1"], "\n");
        assert_eq!(
            r.out,
            "The following keys are going to be granted the syndic role:\nAccepted Keys:\ndb1\nProceed? [n/Y] Syndic role granted to minion db1.\n"
        );
        assert_eq!(
            r.changes,
            vec![KeyChange::SyndicGranted(vec!["db1".into()])]
        );
        let r = cli(&pki, &["-L"], "");
        assert_eq!(
            r.out,
            "Accepted Keys:\ndb1\nSyndics:\ndb1\nDenied Keys:\ndb1\nUnaccepted Keys:\nweb1\nweb2\nRejected Keys:\nbad1\n"
        );
        let r = cli(&pki, &["-L", "--out", "json"], "");
        let v: serde_json::Value = serde_json::from_str(&r.out).expect("json");
        assert_eq!(v["syndics"], serde_json::json!(["db1"]));
        assert_eq!(v["minions"], serde_json::json!(["db1"]));
        // Revoking defaults to no.
        let r = cli(&pki, &["--revoke-syndic", "db1"], "\n");
        assert!(r.out.ends_with("Proceed? [N/y] "), "{}", r.out);
        assert!(r.changes.is_empty());
        let r = cli(&pki, &["--revoke-syndic", "*", "-y"], "");
        assert_eq!(
            r.out,
            "The following keys are going to be revoked as syndics:\nSyndics:\ndb1\nSyndic role revoked for minion db1.\n"
        );
        assert_eq!(
            r.changes,
            vec![KeyChange::SyndicRevoked(vec!["db1".into()])]
        );
        assert_eq!(cli(&pki, &["-L"], "").out, ALL);
        let r = cli(&pki, &["--revoke-syndic", "*", "-y"], "");
        assert_eq!(r.out, "The key glob '*' does not match any syndics.\n");
        // Deleting the key drops the grant with it.
        cli(&pki, &["--grant-syndic", "db1", "-y"], "");
        cli(&pki, &["-d", "db1", "-y"], "");
        let store = KeyStore::open(&pki, false, None).expect("open");
        assert!(store.grants_matching("*").expect("grants").is_empty());
        assert!(KeyArgs::try_parse_from(["salt-key", "--grant-syndic", "a", "-d", "b"]).is_err());
    }

    #[test]
    fn keys_under_refused_names_are_shown_quoted_and_deletable() {
        let (_d, pki) = fixture();
        let k0 = keys()[0].public().pem();
        std::fs::write(pki.join("minions").join(".hidden"), k0).expect("write");
        std::fs::write(pki.join("minions_pre").join("web\u{200b}3"), k0).expect("write");
        let r = cli(&pki, &["-L"], "");
        assert_eq!(
            r.out,
            "Accepted Keys:\n\".hidden\"\ndb1\nDenied Keys:\ndb1\nUnaccepted Keys:\nweb1\nweb2\n\"web\\u{200b}3\"\nRejected Keys:\nbad1\n"
        );
        let r = cli(&pki, &["-d", ".hidden", "-y"], "");
        assert!(
            r.out.ends_with("Key for minion \".hidden\" deleted.\n"),
            "{}",
            r.out
        );
        let r = cli(&pki, &["-D", "-y"], "");
        assert!(
            r.out
                .contains("Key for minion \"web\\u{200b}3\" deleted.\n"),
            "{}",
            r.out
        );
        assert_eq!(
            cli(&pki, &[], "").out,
            "Accepted Keys:\nDenied Keys:\nUnaccepted Keys:\nRejected Keys:\n"
        );
    }

    #[test]
    fn change_applies_only_to_keys_shown() {
        let (_d, pki) = fixture();
        let store = KeyStore::open(&pki, false, None).expect("open");
        let planned = store.matching("web*", &[KeyState::Pending]).expect("m");
        // A key arriving after the listing was shown is not accepted.
        store
            .sign_in("web3", keys()[0].public().pem())
            .expect("sign");
        assert_eq!(
            store.accept_planned(&planned).expect("acc"),
            vec!["web1", "web2"]
        );
        assert_eq!(store.state("web3"), Some(KeyState::Pending));
    }
}
