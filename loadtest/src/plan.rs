//! Capacity planning (`loadtest plan`): runs a grid of minion and syndic
//! counts (Brine by default, the raw baseline with `--baseline`), fits the
//! latency and CPU model of `crate::model` to the cells, and answers from
//! it (not from the grid): how many minions per syndic within a p99 target
//! at a job rate, and how many syndics a fleet of N needs. `--check N`
//! runs the predicted size and compares predicted with measured p99.
//!
//! Invariant: runs happen one after another (never two topologies at once
//! on the 2-core machine), and a cell that fails is reported as failed
//! rather than hiding the rest of the grid; failed or lossy cells are not
//! fitted.

use crate::baseline::{run_baseline, HarnessError, RunConfig};
use crate::model::{CpuModel, Planner, Point};
use crate::stats::{Percentiles, Tier};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// One cell of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanCell {
    pub minions: u32,
    pub syndics: u32,
    /// Completion percentiles; `None` if the run failed.
    pub completion_ms: Option<Percentiles>,
    pub lost_returns: u64,
    pub error: Option<String>,
    pub meets_target: bool,
    /// CPU-seconds per 1000 returns of the top and syndics (Brine run).
    #[serde(default)]
    pub cpu: Option<crate::cpu::CpuCost>,
    /// With `--repeat K`: the p99 of every run that completed; the cell's
    /// figures are those of the run with the median p99.
    #[serde(default)]
    pub p99_runs_ms: Vec<f64>,
}

/// The grid and its recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanReport {
    pub p99_target_ms: f64,
    pub cells: Vec<PlanCell>,
    /// Per minion count, the fewest syndics meeting the target (if any).
    pub recommended: Vec<(u32, Option<u32>)>,
    /// The most minions per syndic of any cell that met the target: the
    /// sizing rule the grid supports (`None` if no cell met it).
    #[serde(default)]
    pub minions_per_syndic: Option<u32>,
    /// The model fitted to the cells and its answers (`None` with too few
    /// usable cells: `model_error` says why).
    #[serde(default)]
    pub prediction: Option<Prediction>,
    #[serde(default)]
    pub model_error: Option<String>,
    /// `--check N`: the predicted size run and compared.
    #[serde(default)]
    pub check: Option<Check>,
}

/// What the plan asks of the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// p99 job completion target, ms.
    pub p99_ms: f64,
    /// Jobs per second the fleet must sustain (0 = one at a time).
    pub jobs_per_sec: f64,
    /// A fleet size to find the syndic count for.
    pub for_minions: Option<u32>,
}

/// The model's answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub question: Question,
    pub planner: Planner,
    /// Per syndic count (1, 2, 4, 8, 16): the most minions within the
    /// target (`None`: not even one).
    pub max_minions: Vec<(u32, Option<u32>)>,
    /// The fewest syndics for `question.for_minions` (`None`: no count up
    /// to 254 meets the target).
    pub syndics_for: Option<(u32, Option<u32>)>,
}

/// Predicted against measured at a size the plan did not fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub minions: u32,
    pub syndics: u32,
    pub jobs_per_sec: f64,
    pub predicted_p99_ms: f64,
    pub cell: PlanCell,
    /// (predicted − measured) / measured, % (`None` if the run failed);
    /// of the median run with `--repeat`.
    pub error_pct: Option<f64>,
    /// The same for every completed run (`--repeat`).
    #[serde(default)]
    pub errors_pct: Vec<f64>,
}

/// Which topology a plan sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Real Brine masters and syndics, simulated minions.
    Brine,
    /// The raw ZeroMQ baseline.
    Baseline,
}

/// Runs one cell: its completion histogram and facts.
fn run_cell(
    cfg: &RunConfig,
    mode: Mode,
    interrupted: &AtomicBool,
) -> Result<(crate::stats::TierStats, crate::report::RunMeta), HarnessError> {
    match mode {
        Mode::Brine => {
            let mut c = cfg.clone();
            c.with_baseline = false;
            crate::brine::run_brine(&c, interrupted).map(|r| (r.stats, r.meta))
        }
        Mode::Baseline => run_baseline(cfg, interrupted).map(|r| (r.stats, r.meta)),
    }
}

/// Runs every (minions, syndics) pair of the grid.
pub fn run_plan(
    base: &RunConfig,
    minions: &[u32],
    syndics: &[u32],
    p99_target_ms: f64,
    mode: Mode,
    repeat: u32,
    interrupted: &AtomicBool,
) -> Result<PlanReport, HarnessError> {
    if minions.is_empty() || syndics.is_empty() {
        return Err(HarnessError::Config(
            "plan needs minion and syndic counts".into(),
        ));
    }
    // Rounds over the whole grid rather than K runs of a cell in a row:
    // a busy spell on the shared machine then hits every size a little
    // instead of one size a lot, and the per-cell median drops it.
    let mut runs: Vec<Vec<PlanCell>> = Vec::new();
    for _ in 0..repeat.max(1) {
        let mut i = 0;
        for &m in minions {
            for &s in syndics {
                let c = measure(base, m, s, p99_target_ms, mode, interrupted)?;
                match runs.get_mut(i) {
                    Some(v) => v.push(c),
                    None => runs.push(vec![c]),
                }
                i += 1;
            }
        }
    }
    let cells = runs.into_iter().map(median_cell).collect();
    Ok(summarise(p99_target_ms, cells))
}

/// Runs a cell `repeat` times (at least once) and keeps the run with the
/// median p99 (a shared machine's tail is noisy; one unlucky run should
/// not bend the fit), recording every run's p99.
pub fn measure_median(
    base: &RunConfig,
    minions: u32,
    syndics: u32,
    p99_target_ms: f64,
    mode: Mode,
    repeat: u32,
    interrupted: &AtomicBool,
) -> Result<PlanCell, HarnessError> {
    let mut runs = Vec::new();
    for _ in 0..repeat.max(1) {
        runs.push(measure(
            base,
            minions,
            syndics,
            p99_target_ms,
            mode,
            interrupted,
        )?);
    }
    Ok(median_cell(runs))
}

/// The run with the median p99 among those that completed (the lower
/// middle for an even count), carrying every completed run's p99; the
/// last run when none completed.
pub fn median_cell(runs: Vec<PlanCell>) -> PlanCell {
    let p99 = |c: &PlanCell| c.completion_ms.filter(|_| c.error.is_none()).map(|p| p.p99);
    let mut ok: Vec<PlanCell> = runs.iter().filter(|c| p99(c).is_some()).cloned().collect();
    ok.sort_by(|a, b| p99(a).unwrap_or(0.0).total_cmp(&p99(b).unwrap_or(0.0)));
    let all: Vec<f64> = ok.iter().filter_map(p99).collect();
    let n = ok.len();
    let mut cell = if n == 0 {
        runs.into_iter().last().unwrap_or(PlanCell {
            minions: 0,
            syndics: 0,
            completion_ms: None,
            lost_returns: 0,
            error: Some("no run".into()),
            meets_target: false,
            cpu: None,
            p99_runs_ms: Vec::new(),
        })
    } else {
        ok.swap_remove((n - 1) / 2)
    };
    cell.p99_runs_ms = all;
    cell
}

/// Runs one cell of `minions` behind `syndics` (an error only for Ctrl-C:
/// a failed run is a failed cell).
pub fn measure(
    base: &RunConfig,
    minions: u32,
    syndics: u32,
    p99_target_ms: f64,
    mode: Mode,
    interrupted: &AtomicBool,
) -> Result<PlanCell, HarnessError> {
    if interrupted.load(Ordering::SeqCst) {
        return Err(crate::workers::WorkerError::Interrupted.into());
    }
    let mut cfg = base.clone();
    cfg.minions = minions;
    cfg.syndics = syndics;
    Ok(match run_cell(&cfg, mode, interrupted) {
        Ok((stats, meta)) => {
            let c = stats.percentiles(Tier::Completion);
            let ok = meta.lost_returns == 0 && meta.timed_out_jobs == 0 && c.p99 <= p99_target_ms;
            PlanCell {
                minions,
                syndics,
                completion_ms: Some(c),
                lost_returns: meta.lost_returns,
                error: None,
                meets_target: ok,
                cpu: meta.cpu,
                p99_runs_ms: Vec::new(),
            }
        }
        Err(HarnessError::Worker(crate::workers::WorkerError::Interrupted)) => {
            return Err(crate::workers::WorkerError::Interrupted.into())
        }
        Err(e) => PlanCell {
            minions,
            syndics,
            completion_ms: None,
            lost_returns: 0,
            error: Some(e.to_string()),
            meets_target: false,
            cpu: None,
            p99_runs_ms: Vec::new(),
        },
    })
}

/// The cells a model may learn from: runs that completed, lost nothing.
fn usable(cells: &[PlanCell]) -> impl Iterator<Item = (&PlanCell, &Percentiles)> {
    cells.iter().filter_map(|c| match &c.completion_ms {
        Some(p) if c.error.is_none() && c.lost_returns == 0 && p.p99 > 0.0 => Some((c, p)),
        _ => None,
    })
}

/// The latency points (p99 completion, ms) of the usable cells.
pub fn latency_points(cells: &[PlanCell]) -> Vec<Point> {
    usable(cells)
        .map(|(c, p)| Point {
            minions: f64::from(c.minions),
            syndics: f64::from(c.syndics),
            y: p.p99,
        })
        .collect()
}

/// CPU seconds per job of the top and of a syndic (mean over syndics) in
/// the usable cells that measured CPU.
pub fn cpu_points(cells: &[PlanCell]) -> (Vec<Point>, Vec<Point>) {
    let (mut top, mut syn) = (Vec::new(), Vec::new());
    for (c, _) in usable(cells) {
        let Some(cpu) = &c.cpu else { continue };
        if cpu.jobs == 0 {
            continue;
        }
        let jobs = f64::from(cpu.jobs);
        let at = |y: f64| Point {
            minions: f64::from(c.minions),
            syndics: f64::from(c.syndics),
            y,
        };
        if let Some(t) = &cpu.top {
            top.push(at(t.cpu_secs / jobs));
        }
        if !cpu.syndics.is_empty() {
            let mean =
                cpu.syndics.values().map(|d| d.cpu_secs).sum::<f64>() / cpu.syndics.len() as f64;
            syn.push(at(mean / jobs));
        }
    }
    (top, syn)
}

/// Fits the planner to the cells.
pub fn fit_planner(cells: &[PlanCell]) -> Result<Planner, crate::model::ModelError> {
    let latency = crate::model::choose(&latency_points(cells))?;
    let (top, syn) = cpu_points(cells);
    Ok(Planner {
        latency,
        cpu: CpuModel::fit(&top, &syn),
    })
}

/// Syndic counts the "minions per syndic" answer is given for.
pub const ANSWER_SYNDICS: [u32; 5] = [1, 2, 4, 8, 16];

/// Fits the model and answers `q` from it.
pub fn predict(cells: &[PlanCell], q: Question) -> Result<Prediction, crate::model::ModelError> {
    let planner = fit_planner(cells)?;
    let max_minions = ANSWER_SYNDICS
        .iter()
        .map(|&s| (s, planner.max_minions(s, q.p99_ms, q.jobs_per_sec)))
        .collect();
    let syndics_for = q
        .for_minions
        .map(|n| (n, planner.syndics_for(n, q.p99_ms, q.jobs_per_sec)));
    Ok(Prediction {
        question: q,
        planner,
        max_minions,
        syndics_for,
    })
}

/// Attaches the model's answers to a report.
pub fn with_prediction(mut r: PlanReport, q: Question) -> PlanReport {
    match predict(&r.cells, q) {
        Ok(p) => r.prediction = Some(p),
        Err(e) => r.model_error = Some(e.to_string()),
    }
    r
}

/// The check's syndic count for `minions`: the model's answer.
pub fn check_size(p: &Prediction, minions: u32) -> Option<u32> {
    p.planner
        .syndics_for(minions, p.question.p99_ms, p.question.jobs_per_sec)
}

/// Runs `minions` behind `syndics` and compares with the prediction.
pub fn run_check(
    base: &RunConfig,
    p: &Prediction,
    minions: u32,
    syndics: u32,
    mode: Mode,
    repeat: u32,
    interrupted: &AtomicBool,
) -> Result<Check, HarnessError> {
    let jobs_per_sec = p.question.jobs_per_sec;
    let predicted_p99_ms = p.planner.p99_ms(minions, syndics, jobs_per_sec);
    let mut cfg = base.clone();
    cfg.rate = jobs_per_sec;
    let cell = measure_median(
        &cfg,
        minions,
        syndics,
        p.question.p99_ms,
        mode,
        repeat,
        interrupted,
    )?;
    Ok(check_of(
        minions,
        syndics,
        jobs_per_sec,
        predicted_p99_ms,
        cell,
    ))
}

/// A check's figures from its cell.
pub fn check_of(
    minions: u32,
    syndics: u32,
    jobs_per_sec: f64,
    predicted_p99_ms: f64,
    cell: PlanCell,
) -> Check {
    let errors_pct = cell
        .p99_runs_ms
        .iter()
        .map(|m| 100.0 * crate::model::rel_error(predicted_p99_ms, *m))
        .collect();
    let error_pct = match &cell.completion_ms {
        Some(c) if cell.error.is_none() && c.p99 > 0.0 => {
            Some(100.0 * crate::model::rel_error(predicted_p99_ms, c.p99))
        }
        _ => None,
    };
    Check {
        minions,
        syndics,
        jobs_per_sec,
        predicted_p99_ms,
        cell,
        error_pct,
        errors_pct,
    }
}

impl Check {
    /// The console line of a check.
    pub fn line(&self) -> String {
        let measured = match (&self.cell.completion_ms, &self.cell.error) {
            (Some(c), None) => format!("measured p99 {:.2} ms (p50 {:.2})", c.p99, c.p50),
            (_, e) => format!("run failed: {}", e.as_deref().unwrap_or("unknown")),
        };
        let mut err = self
            .error_pct
            .map_or(String::new(), |e| format!(", error {e:+.1}%"));
        if self.cell.p99_runs_ms.len() > 1 {
            let runs: Vec<String> = self
                .cell
                .p99_runs_ms
                .iter()
                .zip(&self.errors_pct)
                .map(|(m, e)| format!("{m:.2} ms ({e:+.1}%)"))
                .collect();
            err.push_str(&format!("; runs: {}", runs.join(", ")));
        }
        format!(
            "check {} minions / {} syndic(s) at {} jobs/s: predicted p99 {:.2} ms, {measured}{err}, lost {}",
            self.minions,
            self.syndics,
            self.jobs_per_sec,
            self.predicted_p99_ms,
            self.cell.lost_returns
        )
    }
}

/// The cells judged again against `p99_target_ms` (a plan read back
/// with another target).
pub fn retarget(p99_target_ms: f64, cells: Vec<PlanCell>) -> Vec<PlanCell> {
    cells
        .into_iter()
        .map(|mut c| {
            c.meets_target = c.error.is_none()
                && c.lost_returns == 0
                && c.completion_ms.is_some_and(|p| p.p99 <= p99_target_ms);
            c
        })
        .collect()
}

/// Picks, per minion count, the fewest syndics that met the target.
pub fn summarise(p99_target_ms: f64, cells: Vec<PlanCell>) -> PlanReport {
    let mut minion_counts: Vec<u32> = cells.iter().map(|c| c.minions).collect();
    minion_counts.sort_unstable();
    minion_counts.dedup();
    let recommended = minion_counts
        .iter()
        .map(|&m| {
            let best = cells
                .iter()
                .filter(|c| c.minions == m && c.meets_target)
                .map(|c| c.syndics)
                .min();
            (m, best)
        })
        .collect();
    let minions_per_syndic = cells
        .iter()
        .filter(|c| c.meets_target && c.syndics > 0)
        .map(|c| c.minions / c.syndics)
        .max();
    PlanReport {
        p99_target_ms,
        cells,
        recommended,
        minions_per_syndic,
        prediction: None,
        model_error: None,
        check: None,
    }
}

impl PlanReport {
    /// A console table of the grid and the recommendation.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>8} {:>8} {:>10} {:>10} {:>6} {:>5} {:>12} {:>12}",
            "minions", "syndics", "p50 ms", "p99 ms", "lost", "ok", "top cpu/1k", "syn cpu/1k"
        );
        for c in &self.cells {
            match (&c.completion_ms, &c.error) {
                (Some(p), _) => {
                    let _ = writeln!(
                        s,
                        "{:>8} {:>8} {:>10.2} {:>10.2} {:>6} {:>5} {:>12} {:>12}",
                        c.minions,
                        c.syndics,
                        p.p50,
                        p.p99,
                        c.lost_returns,
                        if c.meets_target { "yes" } else { "no" },
                        cpu_col(c, true),
                        cpu_col(c, false)
                    );
                }
                (None, e) => {
                    let _ = writeln!(
                        s,
                        "{:>8} {:>8} failed: {}",
                        c.minions,
                        c.syndics,
                        e.as_deref().unwrap_or("unknown")
                    );
                }
            }
        }
        for (m, best) in &self.recommended {
            let _ = match best {
                Some(sy) => writeln!(
                    s,
                    "{m} minions: {sy} syndic(s) keep p99 within {} ms",
                    self.p99_target_ms
                ),
                None => writeln!(
                    s,
                    "{m} minions: no tested syndic count keeps p99 within {} ms",
                    self.p99_target_ms
                ),
            };
        }
        let _ = match self.minions_per_syndic {
            Some(n) => writeln!(
                s,
                "sampled: at most {n} minions per syndic met p99 within {} ms (largest cell run; the model below predicts)",
                self.p99_target_ms
            ),
            None => writeln!(s, "sampled: no tested size met the target"),
        };
        if let Some(p) = &self.prediction {
            s.push_str(&p.lines(&self.cells));
        }
        if let Some(e) = &self.model_error {
            let _ = writeln!(s, "no model: {e}");
        }
        s
    }
}

/// A cell's CPU-seconds per 1000 returns: the top's, or the syndics'
/// mean ("-" when not measured).
fn cpu_col(c: &PlanCell, top: bool) -> String {
    let Some(cpu) = &c.cpu else {
        return "-".into();
    };
    let v = if top {
        cpu.top.as_ref().map(|t| t.per_1000_returns)
    } else if cpu.syndics.is_empty() {
        None
    } else {
        Some(
            cpu.syndics
                .values()
                .map(|d| d.per_1000_returns)
                .sum::<f64>()
                / cpu.syndics.len() as f64,
        )
    };
    v.map_or("-".into(), |v| format!("{v:.3} s"))
}

/// "a·term + b·term" of a fit, with units.
fn formula(f: &crate::model::Fit, unit: &str) -> String {
    let parts: Vec<String> = f
        .terms
        .iter()
        .zip(&f.coef)
        .map(|(t, c)| format!("{c:.6} {unit} {}", t.describe()))
        .collect();
    parts.join(" + ")
}

impl Prediction {
    /// The model, its held-out error and its answers, for the console.
    pub fn lines(&self, cells: &[PlanCell]) -> String {
        let mut s = String::new();
        let l = &self.planner.latency;
        let _ = writeln!(s, "model p99 = {}", formula(&l.fit, "ms"));
        let _ = writeln!(s, "  ({})", l.why);
        if !l.loo.is_empty() {
            let pts = latency_points(cells);
            let cells_err: Vec<String> = pts
                .iter()
                .zip(&l.loo)
                .map(|(p, e)| format!("{}/{} {:+.1}%", p.minions, p.syndics, 100.0 * e))
                .collect();
            let max = l.loo.iter().fold(0.0f64, |m, e| m.max(e.abs()));
            let _ = writeln!(
                s,
                "held-out error (leave-one-out): mean {:.1}%, max {:.1}% [{}]",
                100.0 * crate::model::mean_abs(&l.loo),
                100.0 * max,
                cells_err.join(", ")
            );
        }
        if let Some(t) = &self.planner.cpu.top {
            let _ = writeln!(s, "top cpu per job = {}", formula(t, "s"));
        }
        if let Some(t) = &self.planner.cpu.syndic {
            let _ = writeln!(s, "syndic cpu per job = {}", formula(t, "s"));
        }
        let q = &self.question;
        let rate = if q.jobs_per_sec > 0.0 {
            format!("{} jobs/s", q.jobs_per_sec)
        } else {
            "one job at a time".into()
        };
        for (sy, m) in &self.max_minions {
            let _ = match m {
                Some(m) if *m >= crate::model::MAX_MINIONS => writeln!(
                    s,
                    "predicted: {sy} syndic(s) carry at least {m} minions within p99 {} ms at {rate}",
                    q.p99_ms
                ),
                Some(m) => writeln!(
                    s,
                    "predicted: {sy} syndic(s) carry at most {m} minions ({} per syndic) within p99 {} ms at {rate}",
                    m / sy,
                    q.p99_ms
                ),
                None => writeln!(
                    s,
                    "predicted: {sy} syndic(s) cannot keep p99 within {} ms at {rate}",
                    q.p99_ms
                ),
            };
        }
        if let Some((n, sy)) = self.syndics_for {
            let _ = match sy {
                Some(sy) => writeln!(
                    s,
                    "predicted: {n} minions need {sy} syndic(s) (p99 {:.2} ms) for p99 within {} ms at {rate}",
                    self.planner.p99_ms(n, sy, q.jobs_per_sec),
                    q.p99_ms
                ),
                None => writeln!(
                    s,
                    "predicted: no syndic count up to {} keeps {n} minions within p99 {} ms at {rate}",
                    crate::model::MAX_SYNDICS,
                    q.p99_ms
                ),
            };
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(m: u32, s: u32, p99: f64, target: f64) -> PlanCell {
        PlanCell {
            minions: m,
            syndics: s,
            completion_ms: Some(Percentiles {
                p99,
                ..Percentiles::default()
            }),
            lost_returns: 0,
            error: None,
            meets_target: p99 <= target,
            cpu: None,
            p99_runs_ms: Vec::new(),
        }
    }

    #[test]
    fn recommends_fewest_syndics_meeting_target() {
        let cells = vec![
            cell(1000, 1, 100.0, 500.0),
            cell(1000, 2, 90.0, 500.0),
            cell(5000, 1, 900.0, 500.0),
            cell(5000, 4, 400.0, 500.0),
            cell(5000, 2, 450.0, 500.0),
            cell(9000, 4, 800.0, 500.0),
        ];
        let r = summarise(500.0, cells);
        assert_eq!(
            r.recommended,
            vec![(1000, Some(1)), (5000, Some(2)), (9000, None)]
        );
        let t = r.table();
        assert!(t.contains("5000 minions: 2 syndic(s)"));
        assert!(t.contains("9000 minions: no tested"));
        // 1000/1 and 5000/2 met the target: 2500 per syndic is supported.
        assert_eq!(r.minions_per_syndic, Some(2500));
        assert!(t.contains("at most 2500 minions per syndic"));
    }

    #[test]
    fn failed_and_lossy_cells_are_not_fitted_and_retarget_rejudges() {
        let mut cells = vec![
            cell(200, 1, 10.0, 500.0),
            cell(500, 1, 20.0, 500.0),
            cell(1000, 1, 40.0, 500.0),
        ];
        cells[1].lost_returns = 3;
        cells.push(PlanCell {
            error: Some("boom".into()),
            completion_ms: None,
            ..cell(2000, 1, 0.0, 500.0)
        });
        let pts = latency_points(&cells);
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[1].minions, 1000.0);
        let r = retarget(15.0, cells);
        let met: Vec<bool> = r.iter().map(|c| c.meets_target).collect();
        assert_eq!(met, vec![true, false, false, false]);
    }

    #[test]
    fn cpu_points_are_per_job_and_check_error_is_relative() {
        let mut c = cell(1000, 2, 40.0, 500.0);
        let d = |cpu_secs: f64| crate::cpu::DaemonCost {
            cpu_secs,
            returns: 5000,
            per_1000_returns: cpu_secs / 5.0,
        };
        c.cpu = Some(crate::cpu::CpuCost {
            secs: 2.0,
            jobs: 10,
            top: Some(d(0.5)),
            syndics: [("s1".to_string(), d(0.2)), ("s2".to_string(), d(0.4))]
                .into_iter()
                .collect(),
        });
        let (top, syn) = cpu_points(std::slice::from_ref(&c));
        assert!((top[0].y - 0.05).abs() < 1e-12);
        assert!((syn[0].y - 0.03).abs() < 1e-12);
        assert!(cpu_col(&c, true).starts_with("0.100"));
        assert!(cpu_col(&c, false).starts_with("0.060"));
        let k = check_of(1000, 2, 0.0, 44.0, c);
        assert!((k.error_pct.unwrap() - 10.0).abs() < 1e-9);
        assert!(k
            .line()
            .contains("predicted p99 44.00 ms, measured p99 40.00 ms"));
        assert!(k.line().contains("error +10.0%"));
        let failed = check_of(
            1000,
            2,
            0.0,
            44.0,
            PlanCell {
                error: Some("x".into()),
                completion_ms: None,
                ..cell(1000, 2, 0.0, 1.0)
            },
        );
        assert_eq!(failed.error_pct, None);
        assert!(failed.line().contains("run failed: x"));
    }

    #[test]
    fn median_of_repeats() {
        let runs = vec![
            cell(500, 1, 90.0, 500.0),
            PlanCell {
                error: Some("x".into()),
                completion_ms: None,
                ..cell(500, 1, 0.0, 500.0)
            },
            cell(500, 1, 300.0, 500.0),
            cell(500, 1, 100.0, 500.0),
        ];
        let m = median_cell(runs);
        assert_eq!(m.completion_ms.unwrap().p99, 100.0);
        assert_eq!(m.p99_runs_ms, vec![90.0, 100.0, 300.0]);
        let two = median_cell(vec![cell(1, 1, 5.0, 9.0), cell(1, 1, 3.0, 9.0)]);
        assert_eq!(two.completion_ms.unwrap().p99, 3.0);
        let none = median_cell(vec![PlanCell {
            error: Some("down".into()),
            completion_ms: None,
            ..cell(7, 1, 0.0, 1.0)
        }]);
        assert_eq!(none.error.as_deref(), Some("down"));
        assert!(none.p99_runs_ms.is_empty());
        let k = check_of(500, 1, 0.0, 110.0, m);
        assert_eq!(k.errors_pct.len(), 3);
        assert!(
            k.line()
                .contains("runs: 90.00 ms (+22.2%), 100.00 ms (+10.0%), 300.00 ms (-63.3%)"),
            "{}",
            k.line()
        );
    }
}
