//! Load-test reports: a console table, a JSON document and an HTML page.
//!
//! A `Report` is built once from the run's facts (`RunMeta`) and two sets
//! of tier histograms, the measured run and the raw ZeroMQ baseline; the
//! table, JSON and HTML are all rendered from it, so they always agree.
//! Invariant: the HTML page is self-contained (inline SVG and CSS, no
//! script, no external resource) and every text in it is escaped.

use crate::stats::{percentiles, Percentiles, Tier, TierStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Quantiles sampled for the latency-distribution curves.
pub const CURVE_QUANTILES: [f64; 12] = [
    0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
];

/// Facts about a run that are not histograms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// `baseline` (raw ZeroMQ only) or `brine` (Brine measured, baseline
    /// alongside).
    pub mode: String,
    pub minions: u32,
    pub syndics: u32,
    pub tiers: u32,
    pub jobs: u32,
    pub warmup: u32,
    pub target: String,
    pub fun: String,
    pub payload: usize,
    pub expected_returns: u64,
    pub received_returns: u64,
    pub lost_returns: u64,
    pub duplicate_returns: u64,
    pub unexpected_returns: u64,
    pub completed_jobs: u32,
    pub timed_out_jobs: u32,
    /// Minions per first-tier syndic, from the consistent-hash ring.
    pub balance: BTreeMap<String, usize>,
    /// Fraction of minions that would move if one syndic were added.
    pub moved_fraction_on_add: f64,
    /// Measured fds per simulated minion (mean over workers).
    pub fds_per_minion: f64,
    pub worker_processes: u32,
    /// Resident memory per simulated minion: sum of workers' VmRSS / minions.
    pub minion_rss_kib: f64,
    pub wall_secs: f64,
    /// Returns with `success: false` (Brine run).
    #[serde(default)]
    pub failed_returns: u64,
    /// VmRSS of the top master, KiB, sampled every second (Brine run).
    #[serde(default)]
    pub top_rss_kib: Vec<u64>,
    /// VmRSS of each syndic, KiB, sampled every second (Brine run).
    #[serde(default)]
    pub syndic_rss_kib: BTreeMap<String, Vec<u64>>,
    /// Seconds after RSS sampling began when the first measured job went
    /// out and when the last one had ended: the samples in between are
    /// the memory under the measured load (Brine run).
    #[serde(default)]
    pub measured_secs: Option<(f64, f64)>,
    /// Accepted sign-ins of the simulated minions, re-sign-ins included.
    #[serde(default)]
    pub sign_ins: u64,
    /// Returns sent again because no acknowledgement came in time.
    #[serde(default)]
    pub returns_resent: u64,
    /// Returns whose tier legs add up to more than their arrival time
    /// (must be 0; anything else means inconsistent trace stamps).
    #[serde(default)]
    pub trace_over_completion: u64,
    /// Re-sign-ins the master asked for (re-auth answer or publish,
    /// unknown publish key) or that a silent master caused.
    #[serde(default)]
    pub minion_reauths: u64,
    /// The simulated minions' sign-ins by the syndic (or master) they
    /// sign in to, with the cause of every sign-in after a minion's first.
    #[serde(default)]
    pub sign_ins_by_tier: BTreeMap<String, crate::brine::sim::SignIns>,
    /// Publish signatures the simulated minions checked (Ed25519), and
    /// checks they shared within a worker (0 with `--verify-each`).
    #[serde(default)]
    pub signature_checks: u64,
    #[serde(default)]
    pub signature_shared: u64,
    /// The file server's figures of a run with `--file-size`.
    #[serde(default)]
    pub file: Option<FileBench>,
    /// What the simulated minions' state jobs cost them (a run of
    /// `state.apply` & co.; `None` when no state job ran).
    #[serde(default)]
    pub state_job: Option<StateJobBench>,
    /// The event-bus benchmark's figures (`--events-per-sec`).
    #[serde(default)]
    pub events: Option<crate::brine::events::EventBench>,
    /// CPU-seconds per 1000 returns of the top and each syndic over the
    /// measured jobs (Brine run; `None` for the baseline or no jobs).
    #[serde(default)]
    pub cpu: Option<crate::cpu::CpuCost>,
}

/// The simulated minions' side of state jobs (Brine run with `--fun
/// state.apply`, `state.sls`, `state.highstate` or `state.test`): each
/// minion renders, compiles and runs the built-in tree itself
/// (`brine::state_job`), inline on its worker's event loop.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateJobBench {
    /// Minion-jobs answered (warm-up jobs included).
    pub jobs: u64,
    /// Worker CPU time per minion-job for render + compile + run, µs.
    pub cost_us: MicroPercentiles,
    /// The same in wall time on the worker's event loop (the CPU time plus
    /// any preemption by the daemons and other workers sharing the cores).
    #[serde(default)]
    pub wall_us: MicroPercentiles,
    /// Size of one return's `return` as JSON, bytes.
    pub return_bytes: MicroPercentiles,
}

/// p50/p90/p99/max of a histogram in its own unit (not milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MicroPercentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl MicroPercentiles {
    /// The percentiles of `h` (all zero when empty).
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

impl StateJobBench {
    /// The report line.
    pub fn line(&self) -> String {
        let (c, w, b) = (&self.cost_us, &self.wall_us, &self.return_bytes);
        format!(
            "state job ({} minion-jobs, warm-up included): render+compile+run per minion \
             CPU p50 {} µs, p90 {} µs, p99 {} µs, max {} µs (wall p50 {} µs, p99 {} µs); \
             return {} B p50, {} B max (JSON)",
            self.jobs, c.p50, c.p90, c.p99, c.max, w.p50, w.p99, b.p50, b.max
        )
    }
}

/// The file server in a run with `--file-size` (Brine run): the top
/// serves one file, the jobs (`cp.get_file` of it) fetch it through the
/// syndics, and the masters' `file_bytes_served` counters (`salt-run
/// manage.stats`, read before and after the jobs) say what crossed each
/// request port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileBench {
    /// `salt://big.bin`.
    pub url: String,
    pub size: u64,
    /// Jobs the figures cover (warm-up included) and the seconds from the
    /// first one's publish to the end of the last.
    pub jobs: u32,
    pub jobs_secs: f64,
    /// Chunk bytes the top sent on its request port during the jobs
    /// (`None`: its `manage.stats` had no `file_bytes_served`).
    pub top_bytes_served: Option<u64>,
    /// The same for each syndic whose `manage.stats` answered.
    pub syndic_bytes_served: BTreeMap<String, u64>,
    /// Fetches by the simulated minions that ended with the master's hash,
    /// and those that failed.
    pub fetched: u64,
    pub failed: u64,
    /// Fetches still running when the workers stopped (a job that timed
    /// out); their bytes and retries are in the figures below.
    #[serde(default)]
    pub unfinished: u64,
    /// Chunk bytes the simulated minions received.
    pub bytes_received: u64,
    /// Questions asked again (no answer in time, new session), `Unavailable`
    /// answers waited out, fetches started over (the file changed).
    pub asked_again: u64,
    pub busy: u64,
    pub restarts: u64,
}

impl FileBench {
    /// `bytes` as a multiple of the file's size (`None` for an empty file).
    pub fn times_file(&self, bytes: u64) -> Option<f64> {
        (self.size > 0).then(|| bytes as f64 / self.size as f64)
    }

    /// `bytes` in MiB and as a multiple of the file.
    fn amount(&self, bytes: u64) -> String {
        let times = self
            .times_file(bytes)
            .map_or(String::new(), |x| format!(" = {x:.2} x the file"));
        format!("{:.2} MiB{times}", mib(bytes))
    }

    /// The console lines of the file server's figures; `peaks` are the
    /// largest RSS samples (KiB) per master, top first.
    fn lines(&self, peaks: &[(String, u64)]) -> Vec<String> {
        let mut out = vec![format!(
            "file {} ({:.2} MiB): {} fetched, {} failed, {} unfinished, {:.2} MiB received \
             in {:.2} s ({} jobs incl. warm-up); asked again {}, busy {}, started over {}",
            self.url,
            mib(self.size),
            self.fetched,
            self.failed,
            self.unfinished,
            mib(self.bytes_received),
            self.jobs_secs,
            self.jobs,
            self.asked_again,
            self.busy,
            self.restarts
        )];
        out.push(match self.top_bytes_served {
            Some(b) => format!("file bytes served by the top: {}", self.amount(b)),
            None => {
                "file bytes served by the top: unknown (no file_bytes_served in its manage.stats)"
                    .to_string()
            }
        });
        for (id, b) in &self.syndic_bytes_served {
            out.push(format!("file bytes served by {id}: {}", self.amount(*b)));
        }
        if !peaks.is_empty() {
            let list: Vec<String> = peaks
                .iter()
                .map(|(who, kib)| format!("{who} {:.1} MiB", *kib as f64 / 1024.0))
                .collect();
            out.push(format!("peak rss: {}", list.join(", ")));
        }
        out
    }
}

impl RunMeta {
    /// The largest RSS sample (KiB) of the top and of each syndic, top
    /// first; masters without samples are left out.
    pub fn rss_peaks(&self) -> Vec<(String, u64)> {
        std::iter::once(("top", &self.top_rss_kib))
            .chain(self.syndic_rss_kib.iter().map(|(k, v)| (k.as_str(), v)))
            .filter_map(|(who, v)| Some((who.to_string(), *v.iter().max()?)))
            .collect()
    }
}

/// Bytes in MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A stretch of once-a-second memory samples: all of them
/// ([`RssWindow::all`]) or those of the measured load ([`RssWindow::of`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RssWindow {
    pub first: u64,
    pub min: u64,
    pub max: u64,
    pub last: u64,
    pub samples: usize,
}

impl RssWindow {
    /// The samples taken between `secs.0` and `secs.1` (seconds after
    /// sampling began).
    pub fn of(v: &[u64], secs: (f64, f64)) -> Option<Self> {
        let from = secs.0.max(0.0).ceil() as usize;
        let to = (secs.1.max(0.0).floor() as usize).min(v.len().checked_sub(1)?);
        Self::all(v.get(from..=to)?)
    }

    /// Every sample of `w`.
    pub fn all(w: &[u64]) -> Option<Self> {
        Some(Self {
            first: *w.first()?,
            min: *w.iter().min()?,
            max: *w.iter().max()?,
            last: *w.last()?,
            samples: w.len(),
        })
    }

    /// Change from the first to the last sample, in percent of the first.
    pub fn growth_pct(&self) -> f64 {
        (self.last as f64 - self.first as f64) * 100.0 / (self.first.max(1) as f64)
    }
}

/// One point of a latency-distribution curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub quantile: f64,
    pub ms: f64,
}

/// Summary of one tier's histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierReport {
    pub count: u64,
    pub ms: Percentiles,
    pub curve: Vec<CurvePoint>,
}

/// The whole report, as written to `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub meta: RunMeta,
    pub completion_ms: Percentiles,
    pub baseline_completion_ms: Percentiles,
    /// Measured p50 completion / baseline p50 completion (1.0 in baseline
    /// mode; 0 when the baseline has no completed job).
    pub ratio_p50: f64,
    pub histograms: BTreeMap<String, TierReport>,
    pub baseline_histograms: BTreeMap<String, TierReport>,
}

fn tier_reports(stats: &TierStats) -> BTreeMap<String, TierReport> {
    let mut out = BTreeMap::new();
    for t in Tier::ALL {
        let Some(h) = stats.histogram(t) else {
            continue;
        };
        let curve = if h.is_empty() {
            Vec::new()
        } else {
            CURVE_QUANTILES
                .iter()
                .map(|&q| CurvePoint {
                    quantile: q,
                    ms: h.value_at_quantile(q) as f64 / 1000.0,
                })
                .collect()
        };
        out.insert(
            t.name().to_string(),
            TierReport {
                count: h.len(),
                ms: percentiles(h),
                curve,
            },
        );
    }
    out
}

impl Report {
    /// Builds a report of `measured` against `baseline` (pass the same
    /// stats twice for a baseline-only run).
    pub fn build(meta: RunMeta, measured: &TierStats, baseline: &TierStats) -> Self {
        let completion_ms = measured.percentiles(Tier::Completion);
        let baseline_completion_ms = baseline.percentiles(Tier::Completion);
        let ratio_p50 = if baseline_completion_ms.p50 > 0.0 {
            completion_ms.p50 / baseline_completion_ms.p50
        } else {
            0.0
        };
        Report {
            meta,
            completion_ms,
            baseline_completion_ms,
            ratio_p50,
            histograms: tier_reports(measured),
            baseline_histograms: tier_reports(baseline),
        }
    }

    /// JSON text of the report.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The console table: one row per tier, then the run's key figures.
    pub fn table(&self) -> String {
        let m = &self.meta;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} run: {} minions, {} syndics x {} tiers, {} jobs (target {}, payload {} B)",
            m.mode, m.minions, m.syndics, m.tiers, m.jobs, m.target, m.payload
        );
        let _ = writeln!(
            s,
            "{:<18} {:>10} {:>10} {:>10} {:>10} {:>9}",
            "tier (ms)", "p50", "p90", "p99", "max", "count"
        );
        for t in Tier::ALL {
            if let Some(r) = self.histograms.get(t.name()) {
                let _ = writeln!(
                    s,
                    "{:<18} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>9}",
                    t.name(),
                    r.ms.p50,
                    r.ms.p90,
                    r.ms.p99,
                    r.ms.max,
                    r.count
                );
            }
        }
        if let Some(c) = &m.cpu {
            for line in c.lines() {
                let _ = writeln!(s, "{line}");
            }
        }
        let _ = writeln!(
            s,
            "returns {}/{} lost {} duplicate {} unexpected {}; jobs completed {} timed out {}",
            m.received_returns,
            m.expected_returns,
            m.lost_returns,
            m.duplicate_returns,
            m.unexpected_returns,
            m.completed_jobs,
            m.timed_out_jobs
        );
        let _ = writeln!(
            s,
            "completion p50 {:.2} ms, baseline p50 {:.2} ms, ratio {:.2}",
            self.completion_ms.p50, self.baseline_completion_ms.p50, self.ratio_p50
        );
        let _ = writeln!(
            s,
            "workers {}, fds/minion {:.2}, rss/minion {:.1} KiB, moved on add {:.3}, balance {:?}",
            m.worker_processes,
            m.fds_per_minion,
            m.minion_rss_kib,
            m.moved_fraction_on_add,
            m.balance
        );
        if m.mode == "brine" {
            let _ = writeln!(
                s,
                "failed returns {}, sign-ins {} (re-auths {}), resent returns {}, legs over completion {}",
                m.failed_returns,
                m.sign_ins,
                m.minion_reauths,
                m.returns_resent,
                m.trace_over_completion
            );
            for (id, n) in &m.sign_ins_by_tier {
                let _ = writeln!(
                    s,
                    "  sign-ins via {id}: {} ({} again: re-auth answer {}, re-auth publish {}, unknown publish key {}, silent master {}; sign-in requests resent {}, slowest first sign-in {} ms)",
                    n.accepted,
                    n.again,
                    n.reauth_reply,
                    n.reauth_publish,
                    n.unknown_key,
                    n.silent_master,
                    n.resent,
                    n.first_max_ms
                );
            }
            let _ = writeln!(
                s,
                "publish signatures checked (Ed25519) {}, answered from the worker's memo {}{}",
                m.signature_checks,
                m.signature_shared,
                if m.signature_shared > 0 {
                    " (--verify-each: every minion checks)"
                } else {
                    ""
                }
            );
        }
        let rss_rows = std::iter::once(("top", &m.top_rss_kib))
            .chain(m.syndic_rss_kib.iter().map(|(k, v)| (k.as_str(), v)));
        for (who, v) in rss_rows {
            if let Some(w) = RssWindow::all(v) {
                let _ = writeln!(
                    s,
                    "rss {who:<14} start {} KiB  max {} KiB  end {} KiB  ({} samples)",
                    w.first, w.max, w.last, w.samples
                );
            }
            let window = m.measured_secs.and_then(|t| RssWindow::of(v, t));
            if let Some(w) = window.filter(|w| w.samples >= 3) {
                let _ = writeln!(
                    s,
                    "rss {who:<14} measured jobs: first {} KiB  min {}  max {}  last {} KiB  \
                     (last vs first {:+.1}%, {} samples)",
                    w.first,
                    w.min,
                    w.max,
                    w.last,
                    w.growth_pct(),
                    w.samples
                );
            }
        }
        if let Some(f) = &m.file {
            for line in f.lines(&m.rss_peaks()) {
                let _ = writeln!(s, "{line}");
            }
        }
        if let Some(sj) = &m.state_job {
            let _ = writeln!(s, "{}", sj.line());
        }
        if let Some(ev) = &m.events {
            for line in ev.lines() {
                let _ = writeln!(s, "{line}");
            }
        }
        s
    }

    /// A self-contained HTML page: summary table plus one SVG latency
    /// distribution (latency vs percentile, log-scaled tail) per tier.
    pub fn html(&self) -> String {
        let m = &self.meta;
        let mut s = String::new();
        s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        let _ = write!(
            s,
            "<title>loadtest: {} minions, {} syndics</title>",
            m.minions, m.syndics
        );
        s.push_str(
            "<style>body{font-family:sans-serif;margin:24px;color:#222}\
             table{border-collapse:collapse;margin:12px 0}\
             td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}\
             th:first-child,td:first-child{text-align:left}\
             .plots{display:flex;flex-wrap:wrap;gap:16px}\
             .plot{border:1px solid #ddd;padding:6px}</style></head><body>\n",
        );
        let _ = write!(
            s,
            "<h1>Load test ({})</h1><p>{} minions, {} syndics &times; {} tiers, {} jobs, \
             target <code>{}</code>, fun <code>{}</code>, payload {} B, {} worker processes</p>",
            esc(&m.mode),
            m.minions,
            m.syndics,
            m.tiers,
            m.jobs,
            esc(&m.target),
            esc(&m.fun),
            m.payload,
            m.worker_processes
        );
        s.push_str("\n<table><tr><th>tier (ms)</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>count</th></tr>\n");
        for t in Tier::ALL {
            if let Some(r) = self.histograms.get(t.name()) {
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>",
                    t.name(), r.ms.p50, r.ms.p90, r.ms.p99, r.ms.max, r.count
                );
            }
        }
        s.push_str("</table>\n<table>");
        let rows: [(&str, String); 9] = [
            (
                "returns received / expected",
                format!("{} / {}", m.received_returns, m.expected_returns),
            ),
            (
                "lost / duplicate / unexpected",
                format!(
                    "{} / {} / {}",
                    m.lost_returns, m.duplicate_returns, m.unexpected_returns
                ),
            ),
            (
                "completion p50 / p99 (ms)",
                format!(
                    "{:.2} / {:.2}",
                    self.completion_ms.p50, self.completion_ms.p99
                ),
            ),
            (
                "baseline completion p50 / p99 (ms)",
                format!(
                    "{:.2} / {:.2}",
                    self.baseline_completion_ms.p50, self.baseline_completion_ms.p99
                ),
            ),
            ("ratio p50", format!("{:.2}", self.ratio_p50)),
            ("fds per minion", format!("{:.2}", m.fds_per_minion)),
            ("RSS per minion (KiB)", format!("{:.1}", m.minion_rss_kib)),
            (
                "moved fraction on add",
                format!("{:.3}", m.moved_fraction_on_add),
            ),
            (
                "balance",
                m.balance
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(&v));
        }
        s.push_str("</table>\n");
        if let Some(f) = &m.file {
            s.push_str("<h2>File server</h2>\n<table>\n");
            for line in f.lines(&m.rss_peaks()) {
                let _ = writeln!(s, "<tr><td>{}</td></tr>", esc(&line));
            }
            s.push_str("</table>\n");
        }
        if let Some(sj) = &m.state_job {
            let _ = writeln!(s, "<h2>State jobs</h2>\n<p>{}</p>", esc(&sj.line()));
        }
        if let Some(ev) = &m.events {
            s.push_str("<h2>Event bus</h2>\n<table>\n");
            for line in ev.lines() {
                let _ = writeln!(s, "<tr><td>{}</td></tr>", esc(&line));
            }
            s.push_str("</table>\n");
        }
        s.push_str("<h2>Latency distribution per tier</h2>\n<div class=\"plots\">\n");
        let with_baseline = m.mode != "baseline";
        for t in Tier::ALL {
            let measured = self.histograms.get(t.name());
            let base = if with_baseline {
                self.baseline_histograms.get(t.name())
            } else {
                None
            };
            s.push_str(&svg_plot(t.name(), measured, base));
        }
        s.push_str("</div>\n</body></html>\n");
        s
    }
}

/// x position of quantile `q`: -log10(1 - q), capped at 4 (99.99 %).
fn qx(q: f64) -> f64 {
    let tail = (1.0 - q).max(1e-4);
    -tail.log10()
}

/// One tier's plot: latency (ms, linear) against percentile (log tail).
fn svg_plot(name: &str, measured: Option<&TierReport>, base: Option<&TierReport>) -> String {
    const W: f64 = 420.0;
    const H: f64 = 260.0;
    const L: f64 = 56.0;
    const R: f64 = 26.0;
    const T: f64 = 28.0;
    const B: f64 = 40.0;
    let curves: Vec<(&TierReport, &str, &str)> = [
        measured.map(|r| (r, "#1f63c6", "")),
        base.map(|r| (r, "#888", "stroke-dasharray=\"5 4\"")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let ymax = curves
        .iter()
        .flat_map(|(r, _, _)| r.curve.iter().map(|p| p.ms))
        .fold(0.0f64, f64::max);
    let ymax = nice_ceiling(ymax);
    let px = |q: f64| L + qx(q) / 4.0 * (W - L - R);
    let py = |ms: f64| H - B - ms / ymax * (H - T - B);
    let mut s = String::new();
    let _ = write!(
        s,
        "<div class=\"plot\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"11\">\
         <text x=\"{}\" y=\"16\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        W / 2.0,
        esc(name)
    );
    // Axes, grid and labels.
    let _ = write!(
        s,
        "<line x1=\"{L}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>\
         <line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{}\" stroke=\"#333\"/>",
        H - B,
        W - R,
        H - B,
        H - B
    );
    for (q, label) in [
        (0.0, "0%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
    ] {
        let x = px(q);
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{T}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            H - B,
            H - B + 14.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>",
        (L + W - R) / 2.0,
        H - 6.0
    );
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let y = py(v);
        let _ = write!(
            s,
            "<line x1=\"{L}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - R,
            L - 4.0,
            y + 4.0,
            fmt_ms(v)
        );
    }
    let _ = write!(
        s,
        "<text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">ms</text>",
        (T + H - B) / 2.0,
        (T + H - B) / 2.0
    );
    if curves.iter().all(|(r, _, _)| r.curve.is_empty()) {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#999\">no data</text>",
            (L + W - R) / 2.0,
            (T + H - B) / 2.0
        );
    }
    for (r, color, dash) in &curves {
        let pts: Vec<String> = r
            .curve
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.quantile), py(p.ms)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" {dash} points=\"{}\"/>",
            pts.join(" ")
        );
        for p in &r.curve {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"/>",
                px(p.quantile),
                py(p.ms)
            );
        }
    }
    if curves.len() > 1 {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" fill=\"#1f63c6\">measured</text>\
             <text x=\"{}\" y=\"{}\" fill=\"#888\">raw baseline</text>",
            L + 8.0,
            T + 12.0,
            L + 8.0,
            T + 26.0
        );
    }
    if let Some(r) = measured {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#555\">n={}</text>",
            W - R - 2.0,
            T + 12.0,
            r.count
        );
    }
    s.push_str("</svg></div>\n");
    s
}

/// Rounds `v` up to 1, 2 or 5 times a power of ten (at least 0.01 ms).
fn nice_ceiling(v: f64) -> f64 {
    let v = v.max(0.01);
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt_ms(v: f64) -> String {
    if v >= 10.0 && v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Escapes text for HTML/SVG.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut a = TierStats::new().unwrap();
        let mut b = TierStats::new().unwrap();
        for v in 1..=100u64 {
            a.record(Tier::Completion, v * 2000);
            b.record(Tier::Completion, v * 1000);
            a.record(Tier::MinionExec, v);
        }
        let meta = RunMeta {
            mode: "brine".into(),
            minions: 10,
            syndics: 2,
            tiers: 1,
            jobs: 100,
            target: "<all>".into(),
            ..RunMeta::default()
        };
        Report::build(meta, &a, &b)
    }

    #[test]
    fn rss_window_takes_the_samples_of_the_measured_jobs() {
        let v = [100, 200, 300, 310, 290, 330, 900];
        let w = RssWindow::of(&v, (2.4, 5.7)).unwrap();
        assert_eq!(
            (w.first, w.min, w.max, w.last, w.samples),
            (310, 290, 330, 330, 3)
        );
        assert!((w.growth_pct() - 6.45).abs() < 0.01, "{}", w.growth_pct());
        // A window past the samples is clipped; one with none is no window.
        assert_eq!(RssWindow::of(&v, (5.0, 60.0)).unwrap().samples, 2);
        assert_eq!(RssWindow::of(&v, (8.0, 9.0)), None);
        assert_eq!(RssWindow::of(&[], (0.0, 1.0)), None);
        let mut r = sample();
        r.meta.syndic_rss_kib.insert("syndic1".into(), v.to_vec());
        r.meta.measured_secs = Some((2.4, 5.7));
        assert!(
            r.table()
                .contains("syndic1        measured jobs: first 310 KiB"),
            "{}",
            r.table()
        );
    }

    #[test]
    fn ratio_and_json_fields() {
        let r = sample();
        assert!((r.ratio_p50 - 2.0).abs() < 0.01, "{}", r.ratio_p50);
        let v: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        for key in [
            "minions",
            "syndics",
            "tiers",
            "jobs",
            "lost_returns",
            "duplicate_returns",
            "completion_ms",
            "baseline_completion_ms",
            "ratio_p50",
            "histograms",
            "balance",
            "moved_fraction_on_add",
            "fds_per_minion",
            "worker_processes",
            "minion_rss_kib",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["histograms"]["completion"]["count"], 100);
        assert_eq!(
            v["histograms"]["completion"]["curve"]
                .as_array()
                .unwrap()
                .len(),
            12
        );
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn table_lists_every_tier() {
        let t = sample().table();
        for tier in Tier::ALL {
            assert!(t.contains(tier.name()), "{t}");
        }
        assert!(t.contains("ratio 2.00"));
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let h = sample().html();
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert_eq!(h.matches("<svg").count(), Tier::ALL.len());
        assert_eq!(h.matches("<svg").count(), h.matches("</svg>").count());
        assert!(!h.contains("<script"));
        assert!(!h.contains("src=") && !h.contains("href="));
        assert!(h.contains("&lt;all&gt;") && !h.contains("<all>"));
        assert!(h.contains("no data"), "tiers without values say so");
        assert!(h.contains("raw baseline"));
    }

    #[test]
    fn a_file_run_reports_bytes_served_and_peak_memory() {
        let mut r = sample();
        r.meta.top_rss_kib = vec![10_240, 40_960, 20_480];
        r.meta
            .syndic_rss_kib
            .insert("syndic1".into(), vec![5_120, 81_920]);
        r.meta.syndic_rss_kib.insert("syndic2".into(), Vec::new());
        r.meta.file = Some(FileBench {
            url: "salt://big.bin".into(),
            size: 10 << 20,
            jobs: 1,
            jobs_secs: 12.5,
            top_bytes_served: Some(20 << 20),
            syndic_bytes_served: BTreeMap::from([("syndic1".to_string(), 2500 << 20)]),
            fetched: 500,
            failed: 0,
            unfinished: 0,
            bytes_received: 5000 << 20,
            asked_again: 3,
            busy: 2,
            restarts: 0,
        });
        let t = r.table();
        assert!(
            t.contains("file bytes served by the top: 20.00 MiB = 2.00 x the file"),
            "{t}"
        );
        assert!(
            t.contains("file bytes served by syndic1: 2500.00 MiB = 250.00 x the file"),
            "{t}"
        );
        assert!(
            t.contains(
                "file salt://big.bin (10.00 MiB): 500 fetched, 0 failed, 0 unfinished, \
                 5000.00 MiB received in 12.50 s (1 jobs incl. warm-up)"
            ),
            "{t}"
        );
        assert!(t.contains("asked again 3, busy 2, started over 0"), "{t}");
        // Peaks of the masters with samples, top first.
        assert!(
            t.contains("peak rss: top 40.0 MiB, syndic1 80.0 MiB\n"),
            "{t}"
        );
        // The top's counter missing says so; an empty file has no multiple.
        let f = r.meta.file.as_mut().unwrap();
        f.top_bytes_served = None;
        assert!(r.table().contains("served by the top: unknown"));
        let f = r.meta.file.as_mut().unwrap();
        f.size = 0;
        assert_eq!(f.times_file(5), None);
        assert!(r.table().contains("served by syndic1: 2500.00 MiB\n"));
        // JSON round trip and the HTML section.
        let back: Report = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(back, r);
        let h = r.html();
        assert!(h.contains("<h2>File server</h2>") && h.contains("salt://big.bin"));
        // Runs without a file print none of it.
        assert!(!sample().table().contains("file bytes served"));
        assert!(!sample().html().contains("File server"));
    }

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceiling(0.0), 0.01);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert!((qx(0.99) - 2.0).abs() < 1e-9);
        assert!((qx(1.0) - 4.0).abs() < 1e-9);
    }
}
