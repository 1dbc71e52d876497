//! Waiting for returns, as a pure state machine: which minions still owe a
//! return, when to ask `saltutil.find_job` about them, and when to give up.
//!
//! Salt's rules: every minion a job expects gets a deadline `timeout`
//! seconds after the publish. Past it, the minions still owing a return for
//! one jid are asked together, with one `saltutil.find_job JID` publish,
//! whether they still run it; while that question is out they are not asked
//! again. A minion that answers with the job's details is still busy, and
//! its deadline moves `timeout` past the answer; any other (an empty answer,
//! or none within `gather_job_timeout`) is given up on, with the reason the
//! operator reads ([`report::reason`](super::report::reason)). A return
//! counts only for the jid the minion was waited on for, so a late return
//! of another sub-job cannot close this one.
//!
//! The driver feeds events in with the time they happened ([`Instant`]) and
//! does the I/O; nothing here sleeps or reads a clock.

use crate::output::NoReturn;
use brine_common::jid::Jid;
use brine_common::proto::client::Expected;
use brine_common::proto::client::PublishRequest;
use brine_common::proto::TargetType;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// A minion that still owes a return.
#[derive(Debug, Clone)]
struct Pend {
    jid: Jid,
    deadline: Instant,
    /// A find_job question about it is out.
    checking: bool,
    /// For a minion behind a syndic, whether that syndic is connected.
    connected: bool,
    via: Vec<String>,
}

/// A `saltutil.find_job` question to send: which minions, about which jid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindJob {
    pub jid: Jid,
    /// Sorted.
    pub ids: Vec<String>,
}

/// The minions a run still waits for.
#[derive(Debug)]
pub struct Waiter {
    /// Salt's `timeout`: the first deadline, and each extension.
    timeout: Duration,
    pending: BTreeMap<String, Pend>,
}

impl Waiter {
    pub fn new(timeout: Duration) -> Self {
        Waiter {
            timeout,
            pending: BTreeMap::new(),
        }
    }

    /// Job `jid` was published at `now` and expects `minions`.
    pub fn expect(&mut self, jid: &Jid, minions: &[Expected], now: Instant) {
        let deadline = now + self.timeout;
        for m in minions {
            self.pending.insert(
                m.id.clone(),
                Pend {
                    jid: jid.clone(),
                    deadline,
                    checking: false,
                    // Behind a syndic, what the operator needs to know is
                    // whether that syndic is connected.
                    connected: if m.via.is_empty() {
                        m.connected
                    } else {
                        m.syndic_connected
                    },
                    via: m.via.clone(),
                },
            );
        }
    }

    /// A return of `id` for `jid` arrived; true when it was owed (it is
    /// then no longer waited for), false for a duplicate, a stranger or a
    /// return of another jid.
    pub fn on_return(&mut self, id: &str, jid: &Jid) -> bool {
        match self.pending.get(id) {
            Some(p) if p.jid == *jid => {
                self.pending.remove(id);
                true
            }
            _ => false,
        }
    }

    /// The find_job questions to send at `now`: every minion past its
    /// deadline and not already being asked, grouped by jid. They count as
    /// being asked from here on.
    pub fn overdue(&mut self, now: Instant) -> Vec<FindJob> {
        let mut by_jid: BTreeMap<Jid, Vec<String>> = BTreeMap::new();
        for (id, p) in self.pending.iter_mut() {
            if !p.checking && p.deadline <= now {
                p.checking = true;
                by_jid.entry(p.jid.clone()).or_default().push(id.clone());
            }
        }
        by_jid
            .into_iter()
            .map(|(jid, ids)| FindJob { jid, ids })
            .collect()
    }

    /// The answer to a find_job question about `ids`, at `now`: those in
    /// `running` get `timeout` more; the others that still owe a return are
    /// given up on, and returned with the reason to print.
    pub fn on_checked(
        &mut self,
        ids: Vec<String>,
        running: &BTreeSet<String>,
        now: Instant,
    ) -> Vec<(String, NoReturn)> {
        let mut gone = Vec::new();
        for id in ids {
            let Some(p) = self.pending.get_mut(&id) else {
                continue; // returned while the question was out
            };
            if running.contains(&id) {
                p.checking = false;
                p.deadline = now + self.timeout;
            } else if let Some(p) = self.pending.remove(&id) {
                gone.push((id, super::report::reason(p.connected, &p.via)));
            }
        }
        gone
    }

    /// The earliest deadline of a minion not being asked about (when the
    /// driver must wake to call [`Waiter::overdue`]); None when there is
    /// none.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .filter(|p| !p.checking)
            .map(|p| p.deadline)
            .min()
    }

    /// True when no minion owes a return.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The publish that asks `job.ids` whether they still run `job.jid`: the
/// run's request (user, delimiter) with a list target, `saltutil.find_job`
/// and `gather` as its timeout.
pub fn find_job_request(base: &PublishRequest, job: &FindJob, gather: Duration) -> PublishRequest {
    let mut req = base.clone();
    req.tgt = job.ids.join(",");
    req.tgt_type = TargetType::List;
    req.fun = "saltutil.find_job".into();
    req.arg = vec![Value::String(job.jid.to_string())];
    req.kwarg = BTreeMap::new();
    req.timeout = gather.as_secs();
    req.trace = false;
    req
}

/// How many find_job answers can come: from the minions that are
/// connected, or behind a syndic (which may still relay).
pub fn answers_expected(minions: &[Expected]) -> usize {
    minions
        .iter()
        .filter(|m| m.connected || !m.via.is_empty())
        .count()
}

/// Whether a find_job answer says the minion still runs the job (it
/// answers with the job's details, or with an empty dict when it does not).
pub fn still_running(ret: &Value) -> bool {
    matches!(ret, Value::Object(m) if !m.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: Duration = Duration::from_secs(5);

    /// Job number `n` (jids sort like their numbers).
    fn j(n: u8) -> Jid {
        Jid::parse(&format!("202601010000000000{n:02}")).expect("jid")
    }

    fn direct(id: &str, connected: bool) -> Expected {
        Expected {
            id: id.into(),
            connected,
            via: vec![],
            syndic_connected: false,
        }
    }

    fn behind(id: &str, syndic: &str, syndic_connected: bool) -> Expected {
        Expected {
            id: id.into(),
            connected: true,
            via: vec![syndic.into()],
            syndic_connected,
        }
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn strings(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn all_returned_before_the_deadline_ends_without_find_job() {
        let t0 = Instant::now();
        let mut w = Waiter::new(T);
        w.expect(&j(1), &[direct("a", true), direct("b", true)], t0);
        assert_eq!(w.next_deadline(), Some(t0 + T));
        assert!(w.on_return("a", &j(1)));
        assert!(!w.on_return("a", &j(1)), "a duplicate counts once");
        assert!(w.on_return("b", &j(1)));
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
        assert!(w.overdue(t0 + T * 10).is_empty());
    }

    #[test]
    fn returns_of_another_jid_or_a_stranger_do_not_count() {
        let t0 = Instant::now();
        let mut w = Waiter::new(T);
        w.expect(&j(2), &[direct("a", true)], t0);
        assert!(!w.on_return("a", &j(1)), "an earlier sub-job's return");
        assert!(!w.on_return("zed", &j(2)), "not expected");
        assert!(!w.is_empty());
    }

    #[test]
    fn nothing_is_overdue_before_the_deadline() {
        let t0 = Instant::now();
        let mut w = Waiter::new(T);
        w.expect(&j(1), &[direct("a", true)], t0);
        assert!(w.overdue(t0 + T - Duration::from_millis(1)).is_empty());
        assert_eq!(
            w.overdue(t0 + T),
            vec![FindJob {
                jid: j(1),
                ids: strings(&["a"])
            }]
        );
    }

    #[test]
    fn overdue_minions_are_asked_once_per_jid_and_not_again_while_asked() {
        let t0 = Instant::now();
        let mut w = Waiter::new(T);
        w.expect(&j(1), &[direct("c", true), direct("a", true)], t0);
        w.expect(&j(2), &[direct("b", true)], t0 + Duration::from_secs(1));
        let asks = w.overdue(t0 + Duration::from_secs(6));
        assert_eq!(
            asks,
            vec![
                FindJob {
                    jid: j(1),
                    ids: strings(&["a", "c"])
                },
                FindJob {
                    jid: j(2),
                    ids: strings(&["b"])
                },
            ]
        );
        assert!(w.overdue(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(w.next_deadline(), None, "nothing to wake for while asking");
        assert!(!w.is_empty());
    }

    #[test]
    fn a_busy_minion_gets_timeout_more_from_the_answer() {
        let t0 = Instant::now();
        let mut w = Waiter::new(T);
        w.expect(&j(1), &[direct("a", true)], t0);
        w.overdue(t0 + T);
        let answered = t0 + T + Duration::from_secs(2);
        let gone = w.on_checked(strings(&["a"]), &set(&["a"]), answered);
        assert!(gone.is_empty());
        assert_eq!(w.next_deadline(), Some(answered + T));
        assert!(w
            .overdue(answered + T - Duration::from_millis(1))
            .is_empty());
        assert_eq!(w.overdue(answered + T).len(), 1, "asked again");
        // Still running: extended again; then it returns.
        w.on_checked(strings(&["a"]), &set(&["a"]), answered + T);
        assert!(w.on_return("a", &j(1)));
        assert!(w.is_empty());
    }

    #[test]
    fn minions_not_running_the_job_are_given_up_with_a_reason() {
        let t0 = Instant::now();
        let mut w = Waiter::new(T);
        w.expect(
            &j(1),
            &[
                direct("a", true),
                direct("b", false),
                behind("c", "east", true),
                behind("d", "west", false),
                direct("e", true),
            ],
            t0,
        );
        let ask = w.overdue(t0 + T);
        assert_eq!(ask[0].ids.len(), 5);
        let gone = w.on_checked(ask[0].ids.clone(), &set(&["e"]), t0 + T);
        assert_eq!(
            gone,
            vec![
                ("a".to_string(), NoReturn::NoResponse),
                ("b".to_string(), NoReturn::NotConnected),
                (
                    "c".to_string(),
                    NoReturn::BehindSyndic {
                        syndic: "east".into(),
                        connected: true
                    }
                ),
                (
                    "d".to_string(),
                    NoReturn::BehindSyndic {
                        syndic: "west".into(),
                        connected: false
                    }
                ),
            ]
        );
        assert!(!w.is_empty(), "e is still running");
        assert!(w.on_return("e", &j(1)));
        assert!(w.is_empty());
    }

    #[test]
    fn a_return_while_asked_wins_over_the_answer() {
        let t0 = Instant::now();
        let mut w = Waiter::new(T);
        w.expect(&j(1), &[direct("a", true)], t0);
        w.overdue(t0 + T);
        assert!(w.on_return("a", &j(1)), "returns count while asked");
        let gone = w.on_checked(strings(&["a"]), &set(&[]), t0 + T * 2);
        assert!(gone.is_empty(), "not reported as missing after returning");
        assert!(w.is_empty());
    }

    #[test]
    fn the_next_deadline_is_the_earliest_not_being_asked() {
        let t0 = Instant::now();
        let mut w = Waiter::new(T);
        w.expect(&j(1), &[direct("a", true)], t0);
        w.expect(&j(2), &[direct("b", true)], t0 + Duration::from_secs(3));
        assert_eq!(w.next_deadline(), Some(t0 + T));
        w.overdue(t0 + T);
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(8)));
    }

    #[test]
    fn find_job_request_is_a_list_target_with_the_jid() {
        let base = PublishRequest {
            tgt: "web*".into(),
            tgt_type: TargetType::Glob,
            fun: "cmd.run".into(),
            arg: vec![json!("sleep 100")],
            kwarg: [("cwd".to_string(), json!("/"))].into(),
            timeout: 5,
            user: "ops".into(),
            delimiter: ":".into(),
            trace: true,
        };
        let job = FindJob {
            jid: "20240101000000000001".parse().expect("jid"),
            ids: strings(&["a", "b"]),
        };
        let r = find_job_request(&base, &job, Duration::from_secs(10));
        assert_eq!(r.tgt, "a,b");
        assert_eq!(r.tgt_type, TargetType::List);
        assert_eq!(r.fun, "saltutil.find_job");
        assert_eq!(r.arg, vec![json!("20240101000000000001")]);
        assert!(r.kwarg.is_empty());
        assert_eq!(r.timeout, 10);
        assert!(!r.trace);
        assert_eq!((r.user.as_str(), r.delimiter.as_str()), ("ops", ":"));
    }

    #[test]
    fn find_job_answers_busy_only_with_details() {
        assert!(still_running(&json!({"jid": "1", "fun": "cmd.run"})));
        assert!(!still_running(&json!({})));
        assert!(!still_running(&json!(null)));
        assert!(!still_running(&json!("running")));
        let m = [
            direct("a", true),
            direct("b", false),
            behind("c", "east", false),
        ];
        assert_eq!(
            answers_expected(&m),
            2,
            "a disconnected direct minion cannot answer"
        );
    }
}
