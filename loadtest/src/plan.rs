//! Capacity planning (`loadtest plan`): runs a grid of minion and syndic
//! counts (Brine by default, the raw baseline with `--baseline`) and says, per minion count, the fewest syndics whose p99 job
//! completion stays within a target.
//!
//! Invariant: runs happen one after another (never two topologies at once
//! on the 2-core machine), and a cell that fails is reported as failed
//! rather than hiding the rest of the grid.

use crate::baseline::{run_baseline, HarnessError, RunConfig};
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
    interrupted: &AtomicBool,
) -> Result<PlanReport, HarnessError> {
    if minions.is_empty() || syndics.is_empty() {
        return Err(HarnessError::Config(
            "plan needs minion and syndic counts".into(),
        ));
    }
    let mut cells = Vec::new();
    for &m in minions {
        for &s in syndics {
            if interrupted.load(Ordering::SeqCst) {
                return Err(crate::workers::WorkerError::Interrupted.into());
            }
            let mut cfg = base.clone();
            cfg.minions = m;
            cfg.syndics = s;
            cells.push(match run_cell(&cfg, mode, interrupted) {
                Ok((stats, meta)) => {
                    let c = stats.percentiles(Tier::Completion);
                    let ok = meta.lost_returns == 0
                        && meta.timed_out_jobs == 0
                        && c.p99 <= p99_target_ms;
                    PlanCell {
                        minions: m,
                        syndics: s,
                        completion_ms: Some(c),
                        lost_returns: meta.lost_returns,
                        error: None,
                        meets_target: ok,
                    }
                }
                Err(HarnessError::Worker(crate::workers::WorkerError::Interrupted)) => {
                    return Err(crate::workers::WorkerError::Interrupted.into())
                }
                Err(e) => PlanCell {
                    minions: m,
                    syndics: s,
                    completion_ms: None,
                    lost_returns: 0,
                    error: Some(e.to_string()),
                    meets_target: false,
                },
            });
        }
    }
    Ok(summarise(p99_target_ms, cells))
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
    }
}

impl PlanReport {
    /// A console table of the grid and the recommendation.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>8} {:>8} {:>10} {:>10} {:>6} {:>5}",
            "minions", "syndics", "p50 ms", "p99 ms", "lost", "ok"
        );
        for c in &self.cells {
            match (&c.completion_ms, &c.error) {
                (Some(p), _) => {
                    let _ = writeln!(
                        s,
                        "{:>8} {:>8} {:>10.2} {:>10.2} {:>6} {:>5}",
                        c.minions,
                        c.syndics,
                        p.p50,
                        p.p99,
                        c.lost_returns,
                        if c.meets_target { "yes" } else { "no" }
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
                "recommended: at most {n} minions per syndic (p99 within {} ms)",
                self.p99_target_ms
            ),
            None => writeln!(s, "recommended: no tested size met the target"),
        };
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
}
