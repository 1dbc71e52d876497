//! The table of jobs this minion is running right now.
//!
//! The job runner inserts a job before it starts and removes it when the
//! return is sent; `saltutil.running`, `saltutil.find_job` and
//! `saltutil.kill_job` read it. The invariant: every job in the table has the
//! cancellation token its execution watches, so [`RunningJobs::kill`] stops
//! exactly that job and no other.

use brine_common::jid::Jid;
use brine_common::sync::lock;
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// What Salt reports about a running job (`saltutil.running` entries).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunningInfo {
    pub jid: Jid,
    pub fun: String,
    pub arg: Vec<serde_json::Value>,
    /// Process that runs the job; operators use it to find the job with `ps`.
    pub pid: u32,
    pub tgt: String,
    pub tgt_type: String,
    pub user: String,
    /// Start time written like a jid (`YYYYMMDDhhmmssffffff`, UTC).
    pub start: String,
}

/// Jobs in flight, keyed by jid.
#[derive(Debug, Default)]
pub struct RunningJobs {
    // A std mutex is enough: every critical section is a map operation and
    // never awaits.
    jobs: Mutex<BTreeMap<Jid, (RunningInfo, CancellationToken)>>,
}

impl RunningJobs {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Jid, (RunningInfo, CancellationToken)>> {
        // A panic elsewhere cannot leave the map half-updated (single inserts
        // and removes), so a poisoned lock is still safe to use.
        lock(&self.jobs)
    }

    /// Record a job and the token that cancels it (replaces an entry with the
    /// same jid).
    pub fn insert(&self, info: RunningInfo, cancel: CancellationToken) {
        self.lock().insert(info.jid.clone(), (info, cancel));
    }

    /// Forget a finished job.
    pub fn remove(&self, jid: &Jid) {
        self.lock().remove(jid);
    }

    /// Every running job, ordered by jid (so oldest first).
    pub fn list(&self) -> Vec<RunningInfo> {
        self.lock().values().map(|(info, _)| info.clone()).collect()
    }

    pub fn find(&self, jid: &str) -> Option<RunningInfo> {
        self.lock().get(jid).map(|(info, _)| info.clone())
    }

    /// Cancel the job's token; false if no such job is running.
    pub fn kill(&self, jid: &str) -> bool {
        match self.lock().get(jid) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn info(jid: &str) -> RunningInfo {
        RunningInfo {
            jid: jid.parse().expect("jid"),
            fun: "test.sleep".to_string(),
            arg: vec![serde_json::json!(10)],
            pid: std::process::id(),
            tgt: "*".to_string(),
            tgt_type: "glob".to_string(),
            user: "root".to_string(),
            start: jid.to_string(),
        }
    }

    #[test]
    fn insert_find_list_remove() {
        let jobs = RunningJobs::new();
        jobs.insert(info("20250101000000000002"), CancellationToken::new());
        jobs.insert(info("20250101000000000001"), CancellationToken::new());
        let jids: Vec<String> = jobs.list().into_iter().map(|i| i.jid.into()).collect();
        assert_eq!(jids, ["20250101000000000001", "20250101000000000002"]);
        assert_eq!(
            jobs.find("20250101000000000001").map(|i| i.fun),
            Some("test.sleep".to_string())
        );
        jobs.remove(&"20250101000000000001".parse().expect("jid"));
        assert!(jobs.find("20250101000000000001").is_none());
        assert_eq!(jobs.list().len(), 1);
    }

    #[test]
    fn kill_cancels_only_that_job() {
        let jobs = RunningJobs::new();
        let a = CancellationToken::new();
        let b = CancellationToken::new();
        jobs.insert(info("20250101000000000001"), a.clone());
        jobs.insert(info("20250101000000000002"), b.clone());
        assert!(jobs.kill("20250101000000000001"));
        assert!(a.is_cancelled());
        assert!(!b.is_cancelled());
        assert!(!jobs.kill("20250101000000000003"));
    }

    #[test]
    fn serializes_like_salt() {
        let v = serde_json::to_value(info("20250101000000000001")).expect("json");
        for key in [
            "jid", "fun", "arg", "pid", "tgt", "tgt_type", "user", "start",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
    }
}
