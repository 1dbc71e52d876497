//! Job ids: `YYYYMMDDhhmmssffffff` in UTC, as Salt writes them.
//!
//! A [`JidGen`] never hands out the same jid twice in one process, even when
//! two jobs start in the same microsecond: it moves forward by one.

use chrono::{TimeZone, Utc};
use std::sync::Mutex;

/// Hands out strictly increasing jids.
#[derive(Debug, Default)]
pub struct JidGen {
    last: Mutex<i64>,
}

impl JidGen {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next jid (never equal to or older than the previous one).
    pub fn next(&self) -> String {
        let now = Utc::now().timestamp_micros();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let us = if now > *last { now } else { *last + 1 };
        *last = us;
        format_jid(us)
    }
}

/// Format microseconds since the epoch as a jid.
pub fn format_jid(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    match Utc.timestamp_opt(secs, 0).single() {
        Some(t) => format!("{}{:06}", t.format("%Y%m%d%H%M%S"), micros),
        None => format!("{:020}", us.max(0)),
    }
}

/// Is this a well-formed jid (20 digits)?
pub fn is_jid(s: &str) -> bool {
    s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_salt_shaped() {
        assert_eq!(format_jid(0), "19700101000000000000");
        assert_eq!(format_jid(1_764_158_400_123_456), "20251126120000123456");
    }

    #[test]
    fn strictly_increasing() {
        let g = JidGen::new();
        let mut prev = g.next();
        for _ in 0..1000 {
            let j = g.next();
            assert!(is_jid(&j));
            assert!(j > prev, "{j} after {prev}");
            prev = j;
        }
    }
}
