//! The capacity model `loadtest plan` fits to the cells it ran, and the
//! questions it answers from it. Pure arithmetic, no I/O.
//!
//! Latency (p99 job completion, ms) of M minions behind S syndics is a sum
//! of physically meaningful terms, each with a non-negative coefficient:
//! a fixed cost per job (publish, client round trip), a per-minion cost at
//! a syndic (its M/S returns pass one after another through one process),
//! a per-minion cost at the top (all M returns arrive there), and, only if
//! held-out runs say the data needs it, a (M/S)² queueing term. Least
//! squares is weighted by 1/measured so it minimises relative error (the
//! figure the plan is judged by). CPU per job at the top and at a syndic is
//! fitted the same way (fixed + per-minion); at Y jobs/s the busiest
//! daemon's utilisation ρ = Y × its CPU per job inflates latency by
//! 1/(1−ρ) (an M/D/1-style queue; ρ ≥ 1 never meets a target).
//!
//! Invariant: every coefficient is ≥ 0, so every prediction grows with
//! minions and shrinks (or stays) with syndics; the inversions
//! (`max_minions`, `syndics_for`) rely on that monotonicity.

use serde::{Deserialize, Serialize};

/// One explanatory term of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Term {
    /// 1: cost every job pays whatever the size.
    Fixed,
    /// M/S: minions behind one syndic.
    PerMinionPerSyndic,
    /// M: minions the top hears from.
    PerMinion,
    /// (M/S)²: queueing within a syndic.
    PerSyndicSquared,
}

impl Term {
    /// The term's value at `minions` behind `syndics`.
    pub fn value(self, minions: f64, syndics: f64) -> f64 {
        let per = minions / syndics.max(1.0);
        match self {
            Term::Fixed => 1.0,
            Term::PerMinionPerSyndic => per,
            Term::PerMinion => minions,
            Term::PerSyndicSquared => per * per,
        }
    }

    /// What a coefficient of this term means, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Term::Fixed => "fixed per job",
            Term::PerMinionPerSyndic => "per minion behind a syndic",
            Term::PerMinion => "per minion at the top",
            Term::PerSyndicSquared => "per (minions per syndic)^2",
        }
    }
}

/// One measured cell: `y` at `minions` behind `syndics`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub minions: f64,
    pub syndics: f64,
    pub y: f64,
}

/// A fitted linear model over `terms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub terms: Vec<Term>,
    /// One per term, ≥ 0 (a term the data gave a negative weight is
    /// dropped: its coefficient is 0).
    pub coef: Vec<f64>,
}

/// Why a model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("{have} usable cells cannot fit {need} terms")]
    TooFew { have: usize, need: usize },
    #[error("the cells cannot tell the model's terms apart (singular fit)")]
    Singular,
}

impl Fit {
    /// The model's value at `minions` behind `syndics`.
    pub fn predict(&self, minions: f64, syndics: f64) -> f64 {
        self.terms
            .iter()
            .zip(&self.coef)
            .map(|(t, c)| c * t.value(minions, syndics))
            .sum()
    }
}

/// Solves the square system `a x = b` by Gaussian elimination with
/// partial pivoting (`None` when singular).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    let scale = a
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() <= scale * 1e-12 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        let (top, below) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for (i, r) in below.iter_mut().enumerate() {
            let f = r[col] / pivot_row[col];
            for (v, p) in r.iter_mut().zip(pivot_row).skip(col) {
                *v -= f * p;
            }
            b[col + 1 + i] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Weighted (1/y) least squares over the given terms, unconstrained.
fn lstsq(terms: &[Term], pts: &[Point]) -> Result<Vec<f64>, ModelError> {
    let k = terms.len();
    let mut ata = vec![vec![0.0; k]; k];
    let mut atb = vec![0.0; k];
    for p in pts {
        let w = 1.0 / p.y;
        let row: Vec<f64> = terms
            .iter()
            .map(|t| w * t.value(p.minions, p.syndics))
            .collect();
        for i in 0..k {
            for j in 0..k {
                ata[i][j] += row[i] * row[j];
            }
            atb[i] += row[i] * w * p.y;
        }
    }
    solve(ata, atb).ok_or(ModelError::Singular)
}

/// Fits `terms` to the points with y > 0, every coefficient ≥ 0: a term
/// that comes out negative is dropped (coefficient 0) and the rest
/// refitted, most negative first.
pub fn fit(terms: &[Term], pts: &[Point]) -> Result<Fit, ModelError> {
    let pts: Vec<Point> = pts
        .iter()
        .copied()
        .filter(|p| p.y.is_finite() && p.y > 0.0 && p.minions > 0.0 && p.syndics > 0.0)
        .collect();
    if pts.len() < terms.len() {
        return Err(ModelError::TooFew {
            have: pts.len(),
            need: terms.len(),
        });
    }
    let mut active: Vec<usize> = (0..terms.len()).collect();
    // At most one term is dropped per round: bounded by the term count.
    for _ in 0..=terms.len() {
        let sub: Vec<Term> = active.iter().map(|&i| terms[i]).collect();
        let c = if sub.is_empty() {
            Vec::new()
        } else {
            lstsq(&sub, &pts)?
        };
        let worst = c
            .iter()
            .enumerate()
            .filter(|(_, v)| **v < 0.0)
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        match worst {
            Some(i) => {
                active.remove(i);
            }
            None => {
                let mut coef = vec![0.0; terms.len()];
                for (slot, v) in active.iter().zip(c) {
                    coef[*slot] = v;
                }
                return Ok(Fit {
                    terms: terms.to_vec(),
                    coef,
                });
            }
        }
    }
    Err(ModelError::Singular)
}

/// Relative error of a prediction against a measurement:
/// (predicted − measured) / measured.
pub fn rel_error(predicted: f64, measured: f64) -> f64 {
    (predicted - measured) / measured
}

/// Leave-one-out: for each point, the relative error of the model fitted
/// to all the others. Needs one point more than terms.
pub fn leave_one_out(terms: &[Term], pts: &[Point]) -> Result<Vec<f64>, ModelError> {
    if pts.len() <= terms.len() {
        return Err(ModelError::TooFew {
            have: pts.len(),
            need: terms.len() + 1,
        });
    }
    (0..pts.len())
        .map(|i| {
            let rest: Vec<Point> = pts
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| *p)
                .collect();
            let f = fit(terms, &rest)?;
            Ok(rel_error(
                f.predict(pts[i].minions, pts[i].syndics),
                pts[i].y,
            ))
        })
        .collect()
}

/// Mean of |e|.
pub fn mean_abs(errs: &[f64]) -> f64 {
    if errs.is_empty() {
        return 0.0;
    }
    errs.iter().map(|e| e.abs()).sum::<f64>() / errs.len() as f64
}

/// The latency model chosen for a set of cells, with its held-out error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chosen {
    pub fit: Fit,
    /// Leave-one-out relative error per cell (same order as the cells);
    /// empty when there were too few cells to hold one out.
    pub loo: Vec<f64>,
    /// Why these terms (for the report).
    pub why: String,
}

/// The linear latency terms, and the same with the queueing term.
pub const LINEAR: [Term; 3] = [Term::Fixed, Term::PerMinionPerSyndic, Term::PerMinion];
pub const QUADRATIC: [Term; 4] = [
    Term::Fixed,
    Term::PerMinionPerSyndic,
    Term::PerMinion,
    Term::PerSyndicSquared,
];

/// Fits the linear latency model, and the one with the (M/S)² term when
/// there are cells enough to judge it; keeps the quadratic one only if it
/// cuts the leave-one-out error by more than a quarter (a term must earn
/// its place on held-out cells, not on the ones it was fitted to).
pub fn choose(pts: &[Point]) -> Result<Chosen, ModelError> {
    let lin = fit(&LINEAR, pts)?;
    let lin_loo = leave_one_out(&LINEAR, pts).unwrap_or_default();
    if lin_loo.is_empty() {
        return Ok(Chosen {
            fit: lin,
            loo: Vec::new(),
            why: "linear terms; too few cells to hold one out".into(),
        });
    }
    let (l, why_lin) = (mean_abs(&lin_loo), "linear terms");
    if let (Ok(q), Ok(q_loo)) = (fit(&QUADRATIC, pts), leave_one_out(&QUADRATIC, pts)) {
        let qe = mean_abs(&q_loo);
        if qe < 0.75 * l {
            return Ok(Chosen {
                fit: q,
                loo: q_loo,
                why: format!(
                    "with the (M/S)^2 term: held-out error {:.1}% vs {:.1}% linear",
                    100.0 * qe,
                    100.0 * l
                ),
            });
        }
        return Ok(Chosen {
            fit: lin,
            loo: lin_loo,
            why: format!(
                "{why_lin}: held-out error {:.1}% (with (M/S)^2: {:.1}%, not enough better)",
                100.0 * l,
                100.0 * qe
            ),
        });
    }
    Ok(Chosen {
        fit: lin,
        loo: lin_loo,
        why: format!("{why_lin}: held-out error {:.1}%", 100.0 * l),
    })
}

/// CPU seconds per job at the top and at one syndic, as fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuModel {
    /// Fixed + per minion (M).
    pub top: Option<Fit>,
    /// Fixed + per minion behind the syndic (M/S).
    pub syndic: Option<Fit>,
}

/// Terms of the CPU models.
pub const TOP_CPU: [Term; 2] = [Term::Fixed, Term::PerMinion];
pub const SYNDIC_CPU: [Term; 2] = [Term::Fixed, Term::PerMinionPerSyndic];

impl CpuModel {
    /// Fits both from cells' CPU seconds per job (`top` and mean `syndic`
    /// points); a side with too few points is `None`.
    pub fn fit(top: &[Point], syndic: &[Point]) -> Self {
        CpuModel {
            top: fit(&TOP_CPU, top).ok(),
            syndic: fit(&SYNDIC_CPU, syndic).ok(),
        }
    }

    /// Utilisation of the busiest daemon at `jobs_per_sec`.
    pub fn utilisation(&self, minions: f64, syndics: f64, jobs_per_sec: f64) -> f64 {
        let per_job = |f: &Option<Fit>| f.as_ref().map_or(0.0, |f| f.predict(minions, syndics));
        jobs_per_sec * per_job(&self.top).max(per_job(&self.syndic))
    }
}

/// Latency and load together: what `plan` predicts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Planner {
    pub latency: Chosen,
    pub cpu: CpuModel,
}

/// Largest fleet `max_minions` searches (beyond it: "at least this").
pub const MAX_MINIONS: u32 = 10_000_000;
/// Most syndics `syndics_for` tries (one loopback address each).
pub const MAX_SYNDICS: u32 = 254;

impl Planner {
    /// Predicted p99 (ms) of `minions` behind `syndics` at `jobs_per_sec`
    /// (0 = one job at a time); infinite when a daemon would be saturated.
    pub fn p99_ms(&self, minions: u32, syndics: u32, jobs_per_sec: f64) -> f64 {
        let (m, s) = (f64::from(minions), f64::from(syndics));
        let base = self.latency.fit.predict(m, s);
        let rho = self.cpu.utilisation(m, s, jobs_per_sec);
        if rho >= 1.0 {
            f64::INFINITY
        } else {
            base / (1.0 - rho)
        }
    }

    /// The most minions `syndics` syndics carry within `p99_ms` at
    /// `jobs_per_sec` (`None` if not even one; `MAX_MINIONS` means at
    /// least that many).
    pub fn max_minions(&self, syndics: u32, p99_ms: f64, jobs_per_sec: f64) -> Option<u32> {
        let ok = |m: u32| self.p99_ms(m, syndics, jobs_per_sec) <= p99_ms;
        if !ok(1) {
            return None;
        }
        if ok(MAX_MINIONS) {
            return Some(MAX_MINIONS);
        }
        // ok(lo) and !ok(hi); monotone in minions (coefficients ≥ 0).
        let (mut lo, mut hi) = (1u32, MAX_MINIONS);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if ok(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// The fewest syndics (up to `MAX_SYNDICS`) that keep `minions` within
    /// `p99_ms` at `jobs_per_sec`.
    pub fn syndics_for(&self, minions: u32, p99_ms: f64, jobs_per_sec: f64) -> Option<u32> {
        (1..=MAX_SYNDICS).find(|&s| self.p99_ms(minions, s, jobs_per_sec) <= p99_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(m: f64, s: f64) -> f64 {
        4.0 + 0.05 * m / s + 0.01 * m
    }

    fn grid(f: impl Fn(f64, f64) -> f64) -> Vec<Point> {
        let mut v = Vec::new();
        for m in [200.0, 500.0, 1000.0] {
            for s in [1.0, 2.0] {
                v.push(Point {
                    minions: m,
                    syndics: s,
                    y: f(m, s),
                });
            }
        }
        v
    }

    #[test]
    fn fits_exact_data_exactly() {
        let f = fit(&LINEAR, &grid(truth)).unwrap();
        for (c, want) in f.coef.iter().zip([4.0, 0.05, 0.01]) {
            assert!((c - want).abs() < 1e-9, "{:?}", f.coef);
        }
        assert!((f.predict(1500.0, 3.0) - truth(1500.0, 3.0)).abs() < 1e-9);
        let loo = leave_one_out(&LINEAR, &grid(truth)).unwrap();
        assert_eq!(loo.len(), 6);
        assert!(mean_abs(&loo) < 1e-9);
        let c = choose(&grid(truth)).unwrap();
        assert_eq!(c.fit.terms, LINEAR.to_vec());
    }

    #[test]
    fn negative_terms_are_dropped() {
        // Latency falls with M at the top in this data: that term is
        // dropped (0), not allowed to predict a negative cost.
        let f = fit(&LINEAR, &grid(|m, s| 10.0 + 0.1 * m / s - 0.001 * m)).unwrap();
        assert_eq!(f.coef[2], 0.0);
        assert!(f.coef.iter().all(|c| *c >= 0.0));
        assert!(f.predict(1_000_000.0, 1.0) > 0.0);
    }

    #[test]
    fn too_few_and_singular() {
        let two = &grid(truth)[..2];
        assert_eq!(
            fit(&LINEAR, two),
            Err(ModelError::TooFew { have: 2, need: 3 })
        );
        assert!(leave_one_out(&LINEAR, &grid(truth)[..3]).is_err());
        // One syndic count only: M/S and M are the same column.
        let same: Vec<Point> = grid(truth)
            .into_iter()
            .filter(|p| p.syndics == 1.0)
            .collect();
        let mut more = same.clone();
        more.push(Point {
            minions: 700.0,
            syndics: 1.0,
            y: truth(700.0, 1.0),
        });
        assert_eq!(fit(&LINEAR, &more), Err(ModelError::Singular));
        // Bad points are ignored, not divided by.
        let mut bad = grid(truth);
        bad.push(Point {
            minions: 100.0,
            syndics: 1.0,
            y: 0.0,
        });
        assert!(fit(&LINEAR, &bad).is_ok());
    }

    #[test]
    fn quadratic_only_when_held_out_cells_need_it() {
        let mut pts = grid(|m, s| 2.0 + 0.00005 * (m / s) * (m / s));
        pts.push(Point {
            minions: 1500.0,
            syndics: 2.0,
            y: 2.0 + 0.00005 * 750.0 * 750.0,
        });
        let c = choose(&pts).unwrap();
        assert_eq!(c.fit.terms, QUADRATIC.to_vec(), "{}", c.why);
        assert!(mean_abs(&c.loo) < 1e-6);
        let noisy = grid(|m, s| truth(m, s) * if m == 500.0 { 1.03 } else { 0.99 });
        assert_eq!(choose(&noisy).unwrap().fit.terms, LINEAR.to_vec());
    }

    fn planner() -> Planner {
        Planner {
            latency: Chosen {
                fit: fit(&LINEAR, &grid(truth)).unwrap(),
                loo: Vec::new(),
                why: String::new(),
            },
            cpu: CpuModel::fit(
                &grid(|m, _| 0.001 + 0.00001 * m),
                &grid(|m, s| 0.0005 + 0.00002 * m / s),
            ),
        }
    }

    #[test]
    fn inversion_matches_closed_form() {
        let p = planner();
        // Sequential jobs: 4 + (0.05/S + 0.01) M <= X  =>  M <= (X-4)/(0.05/S+0.01).
        for s in [1u32, 2, 4] {
            let want = ((50.0 - 4.0) / (0.05 / f64::from(s) + 0.01)).floor() as u32;
            let got = p.max_minions(s, 50.0, 0.0).unwrap();
            assert!(got.abs_diff(want) <= 1, "s={s} got {got} want {want}");
            assert!(p.p99_ms(got, s, 0.0) <= 50.0);
            assert!(p.p99_ms(got + 1, s, 0.0) > 50.0);
        }
        assert_eq!(p.max_minions(1, 3.0, 0.0), None);
        assert_eq!(
            Planner {
                latency: Chosen {
                    fit: Fit {
                        terms: vec![Term::Fixed],
                        coef: vec![1.0]
                    },
                    loo: Vec::new(),
                    why: String::new()
                },
                cpu: CpuModel {
                    top: None,
                    syndic: None
                },
            }
            .max_minions(1, 5.0, 0.0),
            Some(MAX_MINIONS)
        );
        // 1500 minions within 30 ms: 4 + (0.05/S + 0.01)1500 <= 30 => S >= 6.8.
        assert_eq!(p.syndics_for(1500, 30.0, 0.0), Some(7));
        // The top alone costs 0.01 ms per minion: never within 10 ms.
        assert_eq!(p.syndics_for(1500, 10.0, 0.0), None);
    }

    #[test]
    fn load_inflates_and_saturates() {
        let p = planner();
        let idle = p.p99_ms(1000, 2, 0.0);
        // Top: 0.011 s/job, syndic: 0.0105 s/job; at 50 jobs/s rho = 0.55.
        let busy = p.p99_ms(1000, 2, 50.0);
        assert!((busy - idle / (1.0 - 0.55)).abs() < 1e-9, "{busy} {idle}");
        assert!(p.p99_ms(1000, 2, 100.0).is_infinite());
        assert!(p.max_minions(2, 50.0, 50.0).unwrap() < p.max_minions(2, 50.0, 0.0).unwrap());
    }
}
