//! Batch mode (`-b N`, `-b N%`, `--batch-wait`) as pure logic: the batch
//! size and the sliding window that decides which minions start when.
//!
//! The size follows Salt's `get_bnum`: a plain number is taken as it is; a
//! percentage of the minions that can run the job is rounded down, but
//! never below 1. The [`Window`] keeps at most that many minions running;
//! each minion that returns frees its slot, after `--batch-wait` seconds
//! when that is set, and a minion given up on (find_job says it is not
//! running the job) frees its slot at once. `--failhard` stops the window
//! from starting anyone else. Time is passed in, so nothing here sleeps.

use brine_common::proto::client::Expected;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// A bad `-b` or `--batch-wait` value (a usage error).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error("invalid batch size '{0}'")]
    NotANumber(String),
    #[error("invalid batch size '{0}': percentage must be in (0, 100]")]
    Percentage(String),
    #[error("invalid batch size '{0}': must be at least 1")]
    Zero(String),
    #[error("invalid --batch-wait {0}: too large")]
    Wait(f64),
}

/// The batch size for `spec` ("10" or "25%") over `total` minions: a
/// percentage is rounded down and at least 1 (Salt's `get_bnum`), computed
/// as `total * pct / 100` so that 57% of 100 is 57.
pub fn batch_size(spec: &str, total: usize) -> Result<usize, BatchError> {
    let s = spec.trim();
    if let Some(p) = s.strip_suffix('%') {
        let pct: f64 = p
            .parse()
            .map_err(|_| BatchError::NotANumber(spec.to_string()))?;
        if !(pct > 0.0 && pct <= 100.0) {
            return Err(BatchError::Percentage(spec.to_string()));
        }
        // Bounded by `total` (pct <= 100), so the cast cannot overflow.
        let n = ((total as f64) * pct / 100.0).floor() as usize;
        Ok(n.max(1))
    } else {
        match s.parse::<usize>() {
            Ok(0) => Err(BatchError::Zero(spec.to_string())),
            Ok(n) => Ok(n),
            Err(_) => Err(BatchError::NotANumber(spec.to_string())),
        }
    }
}

/// `--batch-wait` in seconds as a duration: zero, negative or NaN means no
/// wait; a value no clock can hold is an error.
pub fn batch_wait(secs: f64) -> Result<Duration, BatchError> {
    if secs.is_nan() || secs <= 0.0 {
        return Ok(Duration::ZERO);
    }
    // Ten years: far beyond any run, and safe to add to an `Instant`.
    const MAX_SECS: f64 = 10.0 * 365.0 * 86_400.0;
    if secs > MAX_SECS {
        return Err(BatchError::Wait(secs));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The sliding window of a batch run (or, unbatched, a window that never
/// starts anyone: the single publish covers every minion).
#[derive(Debug, Clone)]
pub struct Window {
    /// At most this many minions running at once.
    size: usize,
    /// Minions not started yet, in order.
    queue: VecDeque<Expected>,
    /// Started and neither returned nor given up on.
    in_flight: usize,
    /// Slots freed by a return, closed until these times (`--batch-wait`).
    held: VecDeque<Instant>,
    wait: Duration,
    /// `--failhard` saw a failure: start no one else.
    stopped: bool,
}

impl Window {
    /// A batch window of `size` over `minions`, in order.
    pub fn new(size: usize, minions: Vec<Expected>, wait: Duration) -> Self {
        Window {
            size: size.max(1),
            queue: minions.into(),
            in_flight: 0,
            held: VecDeque::new(),
            wait,
            stopped: false,
        }
    }

    /// No batching: nothing queued, so nothing to start.
    pub fn unbatched() -> Self {
        Window::new(usize::MAX, Vec::new(), Duration::ZERO)
    }

    /// The minions to start now (empty when no slot is free or nobody is
    /// left). Call [`Window::started`] with how many the publish reached.
    pub fn take(&mut self, now: Instant) -> Vec<Expected> {
        if self.stopped {
            return Vec::new();
        }
        self.held.retain(|t| *t > now);
        let free = self
            .size
            .saturating_sub(self.in_flight)
            .saturating_sub(self.held.len());
        let n = free.min(self.queue.len());
        self.queue.drain(..n).collect()
    }

    /// `n` minions of the last [`Window::take`] were published to (the
    /// others were not connected and will never take a slot).
    pub fn started(&mut self, n: usize) {
        self.in_flight += n;
    }

    /// A minion returned at `now`: its slot opens after `--batch-wait`.
    pub fn returned(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !self.wait.is_zero() {
            self.held.push_back(now + self.wait);
        }
    }

    /// A minion was given up on: its slot opens at once.
    pub fn gave_up(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// `--failhard`: a job failed, start no one else.
    pub fn fail_hard(&mut self) {
        self.stopped = true;
        self.queue.clear();
    }

    /// True when no minion is left to start.
    pub fn exhausted(&self) -> bool {
        self.stopped || self.queue.is_empty()
    }

    /// When a held slot opens while minions still wait to start (the
    /// driver must wake then even if nothing else happens).
    pub fn wake_at(&self) -> Option<Instant> {
        if self.exhausted() {
            None
        } else {
            self.held.iter().min().copied()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn minions(n: usize) -> Vec<Expected> {
        (1..=n)
            .map(|i| Expected {
                id: format!("m{i}"),
                connected: true,
                via: vec![],
                syndic_connected: false,
            })
            .collect()
    }

    fn ids(v: &[Expected]) -> Vec<&str> {
        v.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn plain_numbers_are_taken_as_they_are() {
        assert_eq!(batch_size("3", 10), Ok(3));
        assert_eq!(
            batch_size(" 50 ", 10),
            Ok(50),
            "more than the minions is fine"
        );
        assert_eq!(batch_size("0", 10), Err(BatchError::Zero("0".into())));
        assert_eq!(
            batch_size("-1", 10),
            Err(BatchError::NotANumber("-1".into()))
        );
        assert_eq!(batch_size("x", 10), Err(BatchError::NotANumber("x".into())));
        assert_eq!(batch_size("", 10), Err(BatchError::NotANumber("".into())));
    }

    #[test]
    fn percentages_round_down_like_get_bnum() {
        assert_eq!(batch_size("25%", 12), Ok(3));
        assert_eq!(batch_size("25%", 10), Ok(2), "2.5 rounds down");
        assert_eq!(batch_size("99%", 10), Ok(9));
        assert_eq!(batch_size("100%", 7), Ok(7));
        assert_eq!(batch_size("57%", 100), Ok(57), "no float drift");
        assert_eq!(batch_size("33.4%", 3), Ok(1));
    }

    #[test]
    fn small_percentages_still_run_one_minion() {
        assert_eq!(batch_size("10%", 5), Ok(1), "0.5 is at least 1");
        assert_eq!(batch_size("1%", 1), Ok(1));
        assert_eq!(batch_size("50%", 0), Ok(1), "nobody to run is not an error");
    }

    #[test]
    fn bad_percentages_are_refused_with_their_text() {
        for bad in ["0%", "-5%", "101%", "nan%", "inf%"] {
            assert_eq!(
                batch_size(bad, 10),
                Err(BatchError::Percentage(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            batch_size("ten%", 10),
            Err(BatchError::NotANumber("ten%".into()))
        );
        assert_eq!(
            BatchError::Percentage("0%".into()).to_string(),
            "invalid batch size '0%': percentage must be in (0, 100]"
        );
    }

    #[test]
    fn batch_wait_bounds() {
        assert_eq!(batch_wait(0.0), Ok(Duration::ZERO));
        assert_eq!(batch_wait(-3.0), Ok(Duration::ZERO));
        assert_eq!(batch_wait(f64::NAN), Ok(Duration::ZERO));
        assert_eq!(batch_wait(1.5), Ok(Duration::from_millis(1500)));
        assert!(batch_wait(f64::INFINITY).is_err());
        assert!(batch_wait(1e300).is_err());
    }

    #[test]
    fn the_window_slides_one_slot_per_return() {
        let t0 = Instant::now();
        let mut w = Window::new(2, minions(5), Duration::ZERO);
        let first = w.take(t0);
        assert_eq!(ids(&first), ["m1", "m2"]);
        w.started(2);
        assert!(w.take(t0).is_empty(), "window full");
        w.returned(t0);
        assert_eq!(ids(&w.take(t0)), ["m3"]);
        w.started(1);
        w.returned(t0);
        w.returned(t0);
        assert_eq!(ids(&w.take(t0)), ["m4", "m5"]);
        w.started(2);
        assert!(w.exhausted());
        assert!(w.take(t0).is_empty());
    }

    #[test]
    fn batch_wait_holds_a_freed_slot_until_it_passes() {
        let t0 = Instant::now();
        let wait = Duration::from_millis(1500);
        let mut w = Window::new(1, minions(3), wait);
        assert_eq!(ids(&w.take(t0)), ["m1"]);
        w.started(1);
        w.returned(t0);
        assert!(w.take(t0).is_empty(), "held");
        assert_eq!(w.wake_at(), Some(t0 + wait));
        assert!(w.take(t0 + wait - Duration::from_millis(1)).is_empty());
        assert_eq!(ids(&w.take(t0 + wait)), ["m2"], "open at the wait's end");
        w.started(1);
        assert_eq!(w.wake_at(), None, "nothing held");
    }

    #[test]
    fn a_minion_given_up_on_frees_its_slot_at_once() {
        let t0 = Instant::now();
        let mut w = Window::new(1, minions(2), Duration::from_secs(10));
        w.take(t0);
        w.started(1);
        w.gave_up();
        assert_eq!(ids(&w.take(t0)), ["m2"]);
    }

    #[test]
    fn minions_not_reached_take_no_slot() {
        let t0 = Instant::now();
        let mut w = Window::new(3, minions(4), Duration::ZERO);
        assert_eq!(w.take(t0).len(), 3);
        // Only 1 of the 3 was connected when published.
        w.started(1);
        assert_eq!(ids(&w.take(t0)), ["m4"]);
    }

    #[test]
    fn failhard_starts_no_one_else() {
        let t0 = Instant::now();
        let mut w = Window::new(2, minions(6), Duration::from_secs(1));
        w.take(t0);
        w.started(2);
        w.returned(t0);
        w.fail_hard();
        assert!(w.exhausted());
        assert_eq!(w.wake_at(), None);
        assert!(w.take(t0 + Duration::from_secs(5)).is_empty());
    }

    #[test]
    fn unbatched_never_starts_anyone() {
        let mut w = Window::unbatched();
        assert!(w.exhausted());
        assert!(w.take(Instant::now()).is_empty());
        w.returned(Instant::now());
        w.gave_up();
        assert_eq!(w.wake_at(), None);
    }
}
