//! Per-tier latency histograms, in microseconds with 3 significant figures.
//!
//! A `TierStats` holds one hdrhistogram per `Tier`; workers and the top
//! process send theirs as a `StatsSnapshot` (recorded value/count pairs),
//! which the coordinator merges. Invariant: every tier always has a
//! histogram with the same bounds, so merging never fails on bounds and a
//! value above the bound is clamped, not dropped.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Highest recordable latency: one hour in microseconds; larger values clamp.
pub const MAX_MICROS: u64 = 3_600_000_000;
/// Significant figures kept by every histogram.
pub const SIGFIGS: u8 = 3;

/// Errors building or merging histograms.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot create histogram: {0}")]
    Create(#[from] hdrhistogram::CreationError),
    #[error("cannot merge histograms: {0}")]
    Merge(#[from] hdrhistogram::AdditionError),
}

/// The measured legs of a job's round trip, and the whole-job figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Publish at the top until a first-tier syndic received it.
    TopToSyndic,
    /// Last-tier syndic received until the minion received it.
    SyndicToMinion,
    /// Minion received until it sent its return.
    MinionExec,
    /// Minion sent until the last-tier syndic received the return.
    MinionToSyndic,
    /// First-tier syndic received the return until the top received it.
    SyndicToTop,
    /// Publish until the first return for the job arrived at the top.
    FirstReturn,
    /// Publish until the last expected return arrived (job completion).
    Completion,
}

impl Tier {
    /// Every tier, in the order of a job's path.
    pub const ALL: [Tier; 7] = [
        Tier::TopToSyndic,
        Tier::SyndicToMinion,
        Tier::MinionExec,
        Tier::MinionToSyndic,
        Tier::SyndicToTop,
        Tier::FirstReturn,
        Tier::Completion,
    ];

    /// The snake_case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Tier::TopToSyndic => "top_to_syndic",
            Tier::SyndicToMinion => "syndic_to_minion",
            Tier::MinionExec => "minion_exec",
            Tier::MinionToSyndic => "minion_to_syndic",
            Tier::SyndicToTop => "syndic_to_top",
            Tier::FirstReturn => "first_return",
            Tier::Completion => "completion",
        }
    }
}

/// p50/p90/p99/max of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Recorded values of one histogram as (value µs, count) pairs: small,
/// serde-friendly and exact at the histogram's resolution.
pub type Recorded = Vec<(u64, u64)>;

/// A serialisable copy of `TierStats`, sent from workers to the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub tiers: BTreeMap<Tier, Recorded>,
}

/// One latency histogram per tier.
#[derive(Debug, Clone)]
pub struct TierStats {
    hists: BTreeMap<Tier, Histogram<u64>>,
}

/// A fresh histogram with the shared bounds.
pub fn new_histogram() -> Result<Histogram<u64>, StatsError> {
    Ok(Histogram::new_with_bounds(1, MAX_MICROS, SIGFIGS)?)
}

/// Percentiles of `h` in milliseconds (all zero when empty).
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

/// Recorded (value, count) pairs of `h`.
pub fn recorded(h: &Histogram<u64>) -> Recorded {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

impl TierStats {
    /// Empty histograms for every tier.
    pub fn new() -> Result<Self, StatsError> {
        let mut hists = BTreeMap::new();
        for t in Tier::ALL {
            hists.insert(t, new_histogram()?);
        }
        Ok(Self { hists })
    }

    /// Records `micros` for `tier`; 0 counts as 1 µs, too-large values clamp.
    pub fn record(&mut self, tier: Tier, micros: u64) {
        if let Some(h) = self.hists.get_mut(&tier) {
            h.saturating_record(micros.clamp(1, MAX_MICROS));
        }
    }

    /// Records a nanosecond interval `to - from`; a negative one (clock
    /// skew between processes) counts as 1 µs rather than being lost.
    pub fn record_span_ns(&mut self, tier: Tier, from_ns: u64, to_ns: u64) {
        self.record(tier, to_ns.saturating_sub(from_ns) / 1000);
    }

    /// The histogram for `tier`.
    pub fn histogram(&self, tier: Tier) -> Option<&Histogram<u64>> {
        self.hists.get(&tier)
    }

    /// Number of values recorded for `tier`.
    #[cfg(test)]
    pub fn count(&self, tier: Tier) -> u64 {
        self.hists.get(&tier).map_or(0, |h| h.len())
    }

    /// p50/p90/p99/max of `tier` in milliseconds.
    pub fn percentiles(&self, tier: Tier) -> Percentiles {
        self.hists.get(&tier).map(percentiles).unwrap_or_default()
    }

    /// Adds every value of `other` into `self`.
    #[cfg(test)]
    pub fn merge(&mut self, other: &TierStats) -> Result<(), StatsError> {
        for (t, h) in &other.hists {
            match self.hists.get_mut(t) {
                Some(mine) => mine.add(h)?,
                None => {
                    self.hists.insert(*t, h.clone());
                }
            }
        }
        Ok(())
    }

    /// Adds a snapshot (e.g. from a worker) into `self`.
    #[cfg(test)]
    pub fn merge_snapshot(&mut self, snap: &StatsSnapshot) -> Result<(), StatsError> {
        self.merge(&TierStats::from_snapshot(snap)?)
    }

    /// A serialisable copy.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            tiers: self.hists.iter().map(|(t, h)| (*t, recorded(h))).collect(),
        }
    }

    /// Rebuilds histograms from a snapshot.
    pub fn from_snapshot(snap: &StatsSnapshot) -> Result<Self, StatsError> {
        let mut s = TierStats::new()?;
        for (t, pairs) in &snap.tiers {
            if let Some(h) = s.hists.get_mut(t) {
                for &(v, n) in pairs {
                    h.saturating_record_n(v.clamp(1, MAX_MICROS), n);
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_ms() {
        let mut s = TierStats::new().unwrap();
        for v in 1..=1000u64 {
            s.record(Tier::Completion, v * 1000); // 1..1000 ms
        }
        let p = s.percentiles(Tier::Completion);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p90 - 900.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(s.count(Tier::Completion), 1000);
        assert_eq!(s.percentiles(Tier::MinionExec), Percentiles::default());
    }

    #[test]
    fn merge_adds_counts_and_snapshot_round_trips() {
        let mut a = TierStats::new().unwrap();
        let mut b = TierStats::new().unwrap();
        a.record(Tier::MinionExec, 10);
        b.record(Tier::MinionExec, 20_000);
        b.record(Tier::FirstReturn, 5);
        let json = serde_json::to_string(&b.snapshot()).unwrap();
        let back: StatsSnapshot = serde_json::from_str(&json).unwrap();
        a.merge_snapshot(&back).unwrap();
        assert_eq!(a.count(Tier::MinionExec), 2);
        assert_eq!(a.count(Tier::FirstReturn), 1);
        assert!((a.percentiles(Tier::MinionExec).max - 20.0).abs() < 0.05);
    }

    #[test]
    fn clamps_zero_negative_and_huge() {
        let mut s = TierStats::new().unwrap();
        s.record(Tier::TopToSyndic, 0);
        s.record_span_ns(Tier::TopToSyndic, 10_000, 5_000);
        s.record(Tier::TopToSyndic, u64::MAX);
        assert_eq!(s.count(Tier::TopToSyndic), 3);
        let max = s.percentiles(Tier::TopToSyndic).max;
        assert!(max >= MAX_MICROS as f64 / 1000.0 * 0.999);
    }
}
