//! Cost per return: CPU-seconds the top master and each syndic spend per
//! 1000 returns, from the daemons' own accounting (utime + stime of
//! `/proc/<pid>/stat`), read when the first measured job goes out and
//! again when the last one has ended.
//!
//! Invariant: a cost is only reported for a process whose CPU could be read
//! at both marks and that carried at least one return; everything else is
//! absent (`None` / missing key), never zero, so a regression can't hide
//! behind an unreadable `/proc`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The daemons whose CPU a run accounts: the top master and the syndics.
#[derive(Debug, Clone, Default)]
pub struct Pids {
    pub top: Option<u32>,
    pub syndics: Vec<(String, u32)>,
}

/// CPU seconds used so far, per daemon, at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mark {
    pub top: Option<f64>,
    pub syndics: BTreeMap<String, f64>,
}

impl Pids {
    /// Reads every daemon's CPU seconds now.
    pub fn mark(&self) -> Mark {
        Mark {
            top: self.top.and_then(crate::brine::events::cpu_secs),
            syndics: self
                .syndics
                .iter()
                .filter_map(|(id, pid)| Some((id.clone(), crate::brine::events::cpu_secs(*pid)?)))
                .collect(),
        }
    }
}

/// One daemon's cost over the measured jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonCost {
    /// CPU seconds (user + system) between the two marks.
    pub cpu_secs: f64,
    /// Returns this daemon carried in that time.
    pub returns: u64,
    /// `cpu_secs` per 1000 returns.
    pub per_1000_returns: f64,
}

/// The run's cost per return (the `cpu` object of the JSON report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuCost {
    /// Wall seconds between the marks (the measured jobs).
    pub secs: f64,
    /// Measured jobs in that time.
    pub jobs: u32,
    pub top: Option<DaemonCost>,
    /// Per syndic id.
    pub syndics: BTreeMap<String, DaemonCost>,
}

/// `cpu_secs` per 1000 returns (`None` for no returns or a clock that went
/// backwards, e.g. a restarted daemon).
pub fn per_1000(cpu_secs: f64, returns: u64) -> Option<f64> {
    if returns == 0 || !cpu_secs.is_finite() || cpu_secs < 0.0 {
        return None;
    }
    Some(cpu_secs * 1000.0 / returns as f64)
}

fn daemon(before: Option<f64>, after: Option<f64>, returns: u64) -> Option<DaemonCost> {
    let cpu_secs = after? - before?;
    Some(DaemonCost {
        cpu_secs,
        returns,
        per_1000_returns: per_1000(cpu_secs, returns)?,
    })
}

/// The cost between two marks. The top carries every `returns`; a syndic
/// carries its share of them by the ring's `balance` (minions per first-
/// tier syndic); a syndic not in `balance` (an upper tier) carries the
/// returns of the whole fleet below it, counted as all of them.
pub fn cost(
    before: &Mark,
    after: &Mark,
    secs: f64,
    jobs: u32,
    returns: u64,
    balance: &BTreeMap<String, usize>,
) -> CpuCost {
    let fleet: usize = balance.values().sum();
    let syndics = after
        .syndics
        .iter()
        .filter_map(|(id, &a)| {
            let share = match (balance.get(id), fleet) {
                (Some(&n), f) if f > 0 => (returns as f64 * n as f64 / f as f64).round() as u64,
                _ => returns,
            };
            Some((
                id.clone(),
                daemon(before.syndics.get(id).copied(), Some(a), share)?,
            ))
        })
        .collect();
    CpuCost {
        secs,
        jobs,
        top: daemon(before.top, after.top, returns),
        syndics,
    }
}

impl CpuCost {
    /// Console lines: CPU-seconds per 1000 returns per daemon, and how
    /// busy each daemon was (CPU seconds / wall seconds).
    pub fn lines(&self) -> Vec<String> {
        let busy = |c: f64| {
            if self.secs > 0.0 {
                format!("{:.0}%", 100.0 * c / self.secs)
            } else {
                "-".into()
            }
        };
        let rows = self
            .top
            .iter()
            .map(|c| ("top", c))
            .chain(self.syndics.iter().map(|(k, c)| (k.as_str(), c)));
        rows.map(|(who, c)| {
            format!(
                "cpu {who:<14} {:>8.3} s per 1000 returns  ({:.2} s cpu, {} returns, busy {} over {:.1} s)",
                c.per_1000_returns,
                c.cpu_secs,
                c.returns,
                busy(c.cpu_secs),
                self.secs
            )
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_thousand_arithmetic() {
        assert_eq!(per_1000(1.5, 3000), Some(0.5));
        assert_eq!(per_1000(0.0, 10), Some(0.0));
        assert_eq!(per_1000(1.0, 0), None);
        assert_eq!(per_1000(-0.1, 10), None);
        assert_eq!(per_1000(f64::NAN, 10), None);
    }

    #[test]
    fn costs_split_by_balance() {
        let before = Mark {
            top: Some(10.0),
            syndics: [("s1".to_string(), 1.0), ("s2".to_string(), 2.0)]
                .into_iter()
                .collect(),
        };
        let after = Mark {
            top: Some(12.0),
            syndics: [
                ("s1".to_string(), 1.5),
                ("s2".to_string(), 3.0),
                ("mid".to_string(), 9.0),
            ]
            .into_iter()
            .collect(),
        };
        let balance = [("s1".to_string(), 300), ("s2".to_string(), 100)]
            .into_iter()
            .collect();
        let c = cost(&before, &after, 4.0, 10, 4000, &balance);
        let top = c.top.clone().unwrap();
        assert_eq!(top.returns, 4000);
        assert!((top.per_1000_returns - 0.5).abs() < 1e-12);
        let s1 = &c.syndics["s1"];
        assert_eq!(s1.returns, 3000);
        assert!((s1.per_1000_returns - 0.5 / 3.0).abs() < 1e-12);
        assert_eq!(c.syndics["s2"].returns, 1000);
        assert!((c.syndics["s2"].per_1000_returns - 1.0).abs() < 1e-12);
        // No first mark for "mid": no cost rather than a made-up one.
        assert!(!c.syndics.contains_key("mid"));
        let lines = c.lines();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("cpu top"));
        assert!(lines[0].contains("0.500 s per 1000 returns"));
        assert!(lines[0].contains("busy 50%"));
    }

    #[test]
    fn unreadable_top_is_absent() {
        let m = Mark::default();
        let c = cost(&m, &m, 1.0, 1, 10, &BTreeMap::new());
        assert!(c.top.is_none() && c.syndics.is_empty());
        assert!(c.lines().is_empty());
    }

    #[test]
    fn reads_this_process() {
        // Parsing the real /proc line of a live process (this test's own).
        let p = Pids {
            top: Some(std::process::id()),
            syndics: vec![("me".into(), std::process::id())],
        };
        let m = p.mark();
        assert!(m.top.is_some_and(|s| s >= 0.0));
        assert!(m.syndics.contains_key("me"));
        let gone = Pids {
            top: Some(u32::MAX),
            syndics: vec![("gone".into(), u32::MAX)],
        };
        assert_eq!(gone.mark(), Mark::default());
    }

    #[test]
    fn parses_stat_with_odd_command_names() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...
        let line = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(crate::brine::events::cpu_secs_of_stat(line), Some(3.0));
        assert_eq!(crate::brine::events::cpu_secs_of_stat("42 (x) S 1"), None);
        assert_eq!(crate::brine::events::cpu_secs_of_stat("garbage"), None);
    }
}
