//! The end of a `salt` run as pure decisions: the [`Tally`] of what came
//! back, why a minion "did not return" ([`reason`]), the closing summary,
//! and which exit code the run ends with ([`Tally::exit_code`]).
//!
//! The exit codes (named in `brine_common::exit`) follow Salt's rules with
//! Brine's codes, first match wins:
//! 1. interrupted with Ctrl-C: [`INTERRUPTED`] (130, as a shell reports it);
//! 2. the master's job cache failed during the run:
//!    [`exit::JOB_CACHE_FAILING`] (74), whatever else happened, because the
//!    printed returns are not all there is;
//! 3. `--retcode-passthrough` and some minion's job failed: the highest
//!    retcode of the failed minions (at least 1: `success: false` with
//!    retcode 0 counts as 1), as Salt passes through `retcode`;
//! 4. some expected minion did not return: [`exit::DID_NOT_RETURN`] (20,
//!    Salt's `EX_AGGREGATE`);
//! 5. some minion's job failed: [`exit::JOB_FAILED`] (1, Salt's "any error
//!    exits 1");
//! 6. otherwise [`exit::OK`].
//!
//! Before any of that, a client error is a usage error (64) when the master
//! refused the target, else "master unavailable" (69); a target that matched
//! nothing is [`exit::NO_MATCH`] (2).

use crate::output::NoReturn;
use brine_common::client::ClientError;
use brine_common::exit;
use brine_common::proto::client::Published;

/// The exit code after Ctrl-C (128 + SIGINT), as the shell reports a
/// process killed by it.
pub const INTERRUPTED: i32 = 130;

/// What `salt` prints (on stderr) when the target matched no minion.
pub const NO_MATCH_MESSAGE: &str =
    "No minions matched the target. No command was sent, no jid was assigned.";

/// What came back from a run.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct Tally {
    /// Every minion the target matched, connected or not.
    pub targeted: usize,
    pub returned: usize,
    /// Returns with a non-zero retcode or `success: false`.
    pub failed: usize,
    /// The highest retcode of the failed returns (at least 1 once one failed).
    pub max_retcode: i32,
    /// Minions that did not return, and why.
    pub no_return: Vec<(String, NoReturn)>,
}

/// How the run ended besides its returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ending {
    pub interrupted: bool,
    pub cache_failing: bool,
    pub retcode_passthrough: bool,
}

impl Tally {
    /// Counts a return; true when the minion's job failed.
    pub fn returned(&mut self, retcode: i32, success: bool) -> bool {
        self.returned += 1;
        let failed = retcode != 0 || !success;
        if failed {
            self.failed += 1;
            self.max_retcode = self.max_retcode.max(retcode.max(1));
        }
        failed
    }

    /// Records a minion that will not return.
    pub fn did_not_return(&mut self, id: String, why: NoReturn) {
        self.no_return.push((id, why));
    }

    /// Records minions that were not connected when the job was published.
    pub fn not_connected(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            self.did_not_return(id, NoReturn::NotConnected);
        }
    }

    /// The minions that did not return, sorted by id (the order they are
    /// printed in).
    pub fn sort(&mut self) {
        self.no_return.sort_by(|a, b| a.0.cmp(&b.0));
    }

    /// The `--summary` block, one line an element.
    pub fn summary(&self) -> Vec<String> {
        let rule = "-------------------------------------------".to_string();
        vec![
            format!("\n{rule}"),
            "Summary".into(),
            rule.clone(),
            format!("# of minions targeted: {}", self.targeted),
            format!("# of minions returned: {}", self.returned),
            format!("# of minions that did not return: {}", self.no_return.len()),
            format!("# of minions with errors: {}", self.failed),
            rule,
        ]
    }

    /// The exit code of the run (see the module notes for the order).
    pub fn exit_code(&self, end: Ending) -> i32 {
        if end.interrupted {
            INTERRUPTED
        } else if end.cache_failing {
            exit::JOB_CACHE_FAILING
        } else if end.retcode_passthrough && self.max_retcode > 0 {
            self.max_retcode
        } else if !self.no_return.is_empty() {
            exit::DID_NOT_RETURN
        } else if self.failed > 0 {
            exit::JOB_FAILED
        } else {
            exit::OK
        }
    }
}

/// Why a minion did not return: behind a syndic, name the nearest one and
/// whether it is connected; a direct minion either did not answer or was
/// not connected. `connected` is the syndic's state for a minion behind one.
pub fn reason(connected: bool, via: &[String]) -> NoReturn {
    match via.first() {
        Some(s) => NoReturn::BehindSyndic {
            syndic: s.clone(),
            connected,
        },
        None if connected => NoReturn::NoResponse,
        None => NoReturn::NotConnected,
    }
}

/// True when a publish matched no minion at all (`salt` exits 2).
pub fn matched_nothing(p: &Published) -> bool {
    p.minions.is_empty() && p.missing.is_empty()
}

/// The exit code for a failure to talk to the master: a refused target is
/// the operator's mistake (64), anything else means the master is not
/// available (69).
pub fn client_error_code(e: &ClientError) -> i32 {
    e.exit_code()
}

/// What `salt` prints on stderr after Ctrl-C: the jids to look up later.
pub fn interrupted_message<J: std::fmt::Display>(jids: &[J]) -> String {
    let mut s = String::from("Exiting gracefully on Ctrl-c\n");
    for jid in jids {
        s.push_str(&format!("This job's jid is: {jid}\n"));
    }
    s.push_str(
        "The minions may not have all finished running and any remaining returns may be missing.\n",
    );
    s.push_str("To look up the return data for this job later, run the following command:\n\n");
    for jid in jids {
        s.push_str(&format!("salt-run jobs.lookup_jid {jid}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use brine_common::proto::client::Expected;

    fn tally(returns: &[(i32, bool)], no_return: usize) -> Tally {
        let mut t = Tally::default();
        for (rc, ok) in returns {
            t.returned(*rc, *ok);
        }
        t.not_connected((0..no_return).map(|i| format!("gone{i}")));
        t
    }

    const PLAIN: Ending = Ending {
        interrupted: false,
        cache_failing: false,
        retcode_passthrough: false,
    };
    const PASS: Ending = Ending {
        retcode_passthrough: true,
        ..PLAIN
    };

    #[test]
    fn all_returned_and_succeeded_is_ok() {
        let t = tally(&[(0, true), (0, true)], 0);
        assert_eq!((t.returned, t.failed), (2, 0));
        assert_eq!(t.exit_code(PLAIN), exit::OK);
        assert_eq!(t.exit_code(PASS), exit::OK);
    }

    #[test]
    fn a_failed_job_is_1_and_passthrough_gives_the_highest_retcode() {
        let t = tally(&[(0, true), (7, false), (3, false)], 0);
        assert_eq!(t.failed, 2);
        assert_eq!(t.exit_code(PLAIN), exit::JOB_FAILED);
        assert_eq!(t.exit_code(PASS), 7);
    }

    #[test]
    fn success_false_with_retcode_0_counts_as_retcode_1() {
        let mut t = Tally::default();
        assert!(t.returned(0, false));
        assert!(!t.returned(0, true));
        assert_eq!(t.max_retcode, 1);
        assert_eq!(t.exit_code(PASS), 1);
        // A negative retcode is a failure too, passed through as 1.
        let t = tally(&[(-2, true)], 0);
        assert_eq!((t.failed, t.max_retcode), (1, 1));
    }

    #[test]
    fn did_not_return_beats_a_failed_job_unless_passing_through() {
        let t = tally(&[(4, false)], 1);
        assert_eq!(t.exit_code(PLAIN), exit::DID_NOT_RETURN);
        assert_eq!(t.exit_code(PASS), 4);
        // Passthrough with nothing failed still reports the missing minion.
        let t = tally(&[(0, true)], 1);
        assert_eq!(t.exit_code(PASS), exit::DID_NOT_RETURN);
    }

    #[test]
    fn a_failing_job_cache_and_ctrl_c_win_over_everything() {
        let t = tally(&[(9, false)], 2);
        let failing = Ending {
            cache_failing: true,
            ..PASS
        };
        assert_eq!(t.exit_code(failing), exit::JOB_CACHE_FAILING);
        let interrupted = Ending {
            interrupted: true,
            ..failing
        };
        assert_eq!(t.exit_code(interrupted), INTERRUPTED);
    }

    #[test]
    fn reasons_name_the_tier_to_look_at() {
        assert_eq!(reason(true, &[]), NoReturn::NoResponse);
        assert_eq!(reason(false, &[]), NoReturn::NotConnected);
        let via = vec!["east".to_string(), "region".to_string()];
        assert_eq!(
            reason(true, &via),
            NoReturn::BehindSyndic {
                syndic: "east".into(),
                connected: true
            }
        );
        assert_eq!(
            reason(false, &via),
            NoReturn::BehindSyndic {
                syndic: "east".into(),
                connected: false
            }
        );
    }

    #[test]
    fn summary_counts_and_sorted_no_returns() {
        let mut t = tally(&[(0, true), (2, false)], 0);
        t.targeted = 4;
        t.did_not_return("zed".into(), NoReturn::NoResponse);
        t.did_not_return("abe".into(), NoReturn::NotConnected);
        t.sort();
        let ids: Vec<&str> = t.no_return.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["abe", "zed"]);
        let s = t.summary().join("\n");
        for want in [
            "# of minions targeted: 4",
            "# of minions returned: 2",
            "# of minions that did not return: 2",
            "# of minions with errors: 1",
        ] {
            assert!(s.contains(want), "{want}: {s}");
        }
    }

    #[test]
    fn nothing_matched_only_when_no_minion_and_no_missing_id() {
        let mut p = Published {
            jid: "20240101000000000000".parse().expect("jid"),
            minions: vec![],
            missing: vec![],
        };
        assert!(matched_nothing(&p));
        p.missing.push("ghost".into());
        assert!(!matched_nothing(&p));
        p.missing.clear();
        p.minions.push(Expected {
            id: "m1".into(),
            connected: true,
            via: vec![],
            syndic_connected: false,
        });
        assert!(!matched_nothing(&p));
    }

    #[test]
    fn refused_targets_are_usage_errors_other_failures_unavailable() {
        use brine_common::proto::client::ClientErrorKind;
        let refused = |kind, message: &str| ClientError::Refused {
            kind,
            message: message.into(),
        };
        let bad = refused(ClientErrorKind::BadTarget, "invalid target: unbalanced (");
        assert_eq!(client_error_code(&bad), exit::USAGE);
        let ng = refused(ClientErrorKind::BadTarget, "unknown nodegroup web");
        assert_eq!(client_error_code(&ng), exit::USAGE);
        let other = refused(ClientErrorKind::Unavailable, "too many clients");
        assert_eq!(client_error_code(&other), exit::UNAVAILABLE);
        let io = ClientError::Io(std::io::Error::other("reset"));
        assert_eq!(client_error_code(&io), exit::UNAVAILABLE);
    }

    #[test]
    fn interrupted_message_names_every_jid_twice() {
        let jids = vec!["1".to_string(), "2".to_string()];
        let m = interrupted_message(&jids);
        assert!(m.starts_with("Exiting gracefully on Ctrl-c\n"));
        assert!(m.contains("This job's jid is: 2\n"));
        assert!(m.ends_with("salt-run jobs.lookup_jid 1\nsalt-run jobs.lookup_jid 2\n"));
    }
}
