//! What a master (and the master inside a syndic) exports on its metrics
//! endpoint (`metrics_bind`, see `brine_common::metrics`): every number of
//! `manage.stats`, presence from the roster (per syndic too), the job
//! cache's size on disk and commit time histogram, the return latency
//! histogram and the process' RSS and CPU.
//!
//! Invariant: nothing is counted twice. The collector reads, at scrape
//! time, the same value `manage.stats` answers (`runner::manage::stats_of`), flattened:
//! `returns` is `brine_master_returns_total`, `job_cache.batches` is
//! `brine_master_job_cache_batches_total`; a counter added to `Counters`
//! is exported without a change here. Levels (not counts) are gauges:
//! [`GAUGES`]. The one value kept here is the latency histogram, observed
//! where a return is accepted ([`MasterMetrics::return_accepted`]).

use crate::runner::manage::stats_of;
use crate::state::MasterState;
use brine_common::jid::Jid;
use brine_common::metrics::{self, Collector, DescriptorEncoder, Histogram, Registry, Scrape};
use serde_json::Value;
use std::fmt;
use std::sync::{Arc, Weak};

/// `manage.stats` keys (flattened with `_`) that are levels, not counts.
pub const GAUGES: &[&str] = &[
    "job_cache_carried",
    "job_cache_failing",
    "job_cache_outbox_len",
];

/// Prefix of every master metric.
pub const PREFIX: &str = "brine_master_";

/// The master's own metric values (the rest is read from the state).
#[derive(Debug, Clone)]
pub struct MasterMetrics {
    /// Seconds from a job's publish (its jid's time) to one of its
    /// returns accepted here.
    pub return_latency: Histogram,
}

impl Default for MasterMetrics {
    fn default() -> Self {
        // 5 ms .. ~82 s.
        Self {
            return_latency: Histogram::new(metrics::exponential_buckets(0.005, 2.0, 15)),
        }
    }
}

impl MasterMetrics {
    /// A return of `jid` was accepted now: observe its latency (a jid is
    /// its publish time; a jid from another clock far off is skipped).
    pub fn return_accepted(&self, jid: &Jid) {
        if let Some(age) = jid_age_seconds(jid.as_str(), chrono::Utc::now()) {
            self.return_latency.observe(age);
        }
    }
}

/// Seconds since the UTC time a jid (`YYYYmmddHHMMSSffffff`, as
/// `brine_common::jid` makes them) names, when it is in the last day
/// (else None: a foreign or odd jid).
fn jid_age_seconds(jid: &str, now: chrono::DateTime<chrono::Utc>) -> Option<f64> {
    let t = chrono::NaiveDateTime::parse_from_str(jid.get(..20)?, "%Y%m%d%H%M%S%6f").ok()?;
    let age = (now.naive_utc() - t).num_microseconds()? as f64 / 1e6;
    (-1.0..86_400.0).contains(&age).then_some(age.max(0.0))
}

/// Reads the master state at scrape time. Holds it weakly, so a registry
/// kept by the endpoint task never keeps a stopped master alive.
struct MasterCollector {
    state: Weak<MasterState>,
}

impl fmt::Debug for MasterCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterCollector")
    }
}

/// Every numeric leaf of `v` as (`a_b_c`, number), booleans as 0/1.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}_{k}")
                };
                flatten(&name, v, out);
            }
        }
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x));
            }
        }
        Value::Bool(b) => out.push((prefix.to_string(), f64::from(u8::from(*b)))),
        _ => {}
    }
}

impl Collector for MasterCollector {
    fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
        let Some(state) = self.state.upgrade() else {
            return Ok(());
        };
        let mut s = Scrape::new(enc);
        let mut values = Vec::new();
        flatten("", &stats_of(&state), &mut values);
        for (name, v) in values {
            let help = format!(
                "manage.stats {}",
                name.replacen("job_cache_", "job_cache.", 1)
            );
            if GAUGES.contains(&name.as_str()) {
                s.gauge(&format!("{PREFIX}{name}"), &help, v as i64)?;
            } else {
                s.counter(&format!("{PREFIX}{name}"), &help, v as u64)?;
            }
        }
        let presence = state.roster().presence();
        let up = presence.iter().filter(|m| m.connected).count();
        s.gauge(
            &format!("{PREFIX}minions_up"),
            "Minions connected (directly or behind a syndic), as manage.up counts them.",
            up as i64,
        )?;
        s.gauge(
            &format!("{PREFIX}minions_known"),
            "Minions the roster knows (up or down).",
            presence.len() as i64,
        )?;
        let syndics = state.roster().syndics();
        let per = |f: &dyn Fn(&crate::roster::SyndicStatus) -> i64| -> Vec<(String, i64)> {
            syndics.iter().map(|x| (x.id.clone(), f(x))).collect()
        };
        s.gauges(
            &format!("{PREFIX}syndic_up"),
            "1 while the syndic's link to this master is up.",
            "syndic",
            &per(&|x| i64::from(x.connected)),
        )?;
        s.gauges(
            &format!("{PREFIX}syndic_minions_up"),
            "Minions up behind each syndic.",
            "syndic",
            &per(&|x| x.connected_minions as i64),
        )?;
        s.gauges(
            &format!("{PREFIX}syndic_minions"),
            "Minions each syndic reported (up or down).",
            "syndic",
            &per(&|x| x.minions as i64),
        )?;
        let db = state.cfg().cachedir.join(crate::job_cache::DB_FILE);
        let bytes: u64 = ["", "-wal"]
            .iter()
            .filter_map(|sfx| {
                let mut p = db.clone().into_os_string();
                p.push(sfx);
                std::fs::metadata(p).ok().map(|m| m.len())
            })
            .sum();
        s.gauge(
            &format!("{PREFIX}job_cache_bytes"),
            "Size of the job cache on disk (database and write-ahead log).",
            bytes as i64,
        )
    }
}

/// The master's registry: the process metrics, the state's values and the
/// return latency histogram.
pub fn registry(state: &Arc<MasterState>) -> Registry {
    let mut r = metrics::registry();
    r.register_collector(Box::new(MasterCollector {
        state: Arc::downgrade(state),
    }));
    r.register(
        format!("{PREFIX}return_latency_seconds"),
        "Seconds from a job's publish (its jid) to one of its returns accepted.",
        state.metrics().return_latency.clone(),
    );
    r.register(
        format!("{PREFIX}job_cache_commit_seconds"),
        "Seconds each job cache batch took to commit (its transaction).",
        state.jobs().commit_seconds(),
    );
    r
}

/// A master is ready while its ports are bound (it is, once started) and
/// its job cache writes.
pub fn ready(state: &Arc<MasterState>) -> metrics::ReadyFn {
    let st = Arc::downgrade(state);
    Arc::new(move || match st.upgrade() {
        None => Err("master stopped".into()),
        Some(s) if s.jobs().failing() => Err("job cache failing (cannot store returns)".into()),
        Some(_) => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jid_ages() {
        let now = chrono::Utc::now();
        let jid = Jid::from_micros(now.timestamp_micros() - 1_500_000);
        let age = jid_age_seconds(jid.as_str(), now).expect("age");
        assert!((age - 1.5).abs() < 0.01, "{age}");
        assert_eq!(jid_age_seconds("20000101000000000000", now), None);
        assert_eq!(jid_age_seconds("nonsense", now), None);
    }

    #[test]
    fn stats_flatten_to_names() {
        let mut out = Vec::new();
        flatten(
            "",
            &serde_json::json!({"returns": 3, "job_cache": {"batches": 2, "failing": true}, "x": "s"}),
            &mut out,
        );
        out.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            out,
            vec![
                ("job_cache_batches".to_string(), 2.0),
                ("job_cache_failing".to_string(), 1.0),
                ("returns".to_string(), 3.0)
            ]
        );
    }

    /// A master on loopback with every path under `d` and its metrics on
    /// `port`.
    fn test_config(d: &std::path::Path, port: u16) -> brine_common::config::MasterConfig {
        brine_common::config::MasterConfig {
            metrics_bind: Some(format!("127.0.0.1:{port}")),
            ..crate::master::test_config(d)
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_master_exports_its_counters_and_answers_health() {
        use brine_common::metrics::{http_get, sample};
        use std::sync::atomic::Ordering;
        use std::time::Duration;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = free_port();
        let cfg = brine_common::config::MasterConfig {
            id: "metrics_test_master".into(),
            ..test_config(d, port)
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let master = crate::master::Master::start(cfg, shutdown.clone())
            .await
            .expect("master starts");
        let state = master.state().clone();
        state.counters().auth_refused.store(3, Ordering::Relaxed);
        state.counters().queries_busy.store(11, Ordering::Relaxed);
        let jid = Jid::from_micros(chrono::Utc::now().timestamp_micros() - 250_000);
        let ret = |id: &str| brine_common::proto::ReturnLoad {
            jid: jid.clone(),
            id: id.into(),
            fun: "test.ping".into(),
            fun_args: vec![],
            ret: serde_json::json!(true),
            retcode: 0,
            success: true,
            out: None,
            trace: None,
        };
        assert!(state.accept_return(ret("m1")));
        assert!(state.accept_return(ret("m2")));
        assert!(!state.accept_return(ret("m1")), "duplicate");

        let text = brine_common::metrics::render(&registry(&state)).expect("render");
        let stats = stats_of(&state);
        let mut flat = Vec::new();
        flatten("", &stats, &mut flat);
        assert!(flat.len() > 30, "manage.stats has its counters: {flat:?}");
        for (name, v) in &flat {
            let shown = if GAUGES.contains(&name.as_str()) {
                format!("{PREFIX}{name}")
            } else {
                format!("{PREFIX}{name}_total")
            };
            // The job cache's own counters move on its writer thread.
            if !name.starts_with("job_cache_") {
                assert_eq!(sample(&text, &shown), Some(*v), "{shown} in\n{text}");
            } else {
                assert!(sample(&text, &shown).is_some(), "{shown} in\n{text}");
            }
        }
        assert_eq!(sample(&text, "brine_master_returns_total"), Some(2.0));
        assert_eq!(
            sample(&text, "brine_master_duplicate_returns_total"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "brine_master_auth_refused_total"), Some(3.0));
        assert_eq!(sample(&text, "brine_master_queries_busy_total"), Some(11.0));
        assert_eq!(sample(&text, "brine_master_minions_up"), Some(0.0));
        assert_eq!(
            sample(&text, "brine_master_return_latency_seconds_count"),
            Some(2.0),
            "{text}"
        );
        let sum = sample(&text, "brine_master_return_latency_seconds_sum").expect("sum");
        assert!((0.4..5.0).contains(&sum), "two returns ~0.25 s each: {sum}");
        assert!(sample(&text, "brine_master_job_cache_bytes").unwrap_or(0.0) > 0.0);
        assert!(
            sample(&text, "brine_master_job_cache_commit_seconds_count").is_some(),
            "{text}"
        );
        assert!(sample(&text, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0);

        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let got = tokio::task::spawn_blocking(move || {
            ["/healthz", "/readyz", "/metrics"].map(|p| http_get(addr, p, Duration::from_secs(5)))
        })
        .await
        .expect("join");
        let [health, ready, scraped] = got.map(|r| r.expect("get"));
        assert_eq!(health, (200, "ok\n".to_string()));
        assert_eq!(ready.0, 200, "{ready:?}");
        assert_eq!(scraped.0, 200);
        assert_eq!(sample(&scraped.1, "brine_master_returns_total"), Some(2.0));

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), master.join())
            .await
            .expect("master stops");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_taken_metrics_address_fails_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let cfg = test_config(d, port);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let err = match crate::master::Master::start(cfg, shutdown.clone()).await {
            Ok(_) => panic!("started on a taken metrics address"),
            Err(e) => e.to_string(),
        };
        shutdown.cancel();
        assert!(
            err.contains(&format!("metrics_bind 127.0.0.1:{port}")),
            "{err}"
        );
    }
}
