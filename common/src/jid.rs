//! Job ids: `YYYYMMDDhhmmssffffff` in UTC, as Salt writes them.
//!
//! A [`Jid`] is such an id, checked once where it enters (a frame, a
//! command line, a job cache row) and a plain string on the wire and in the
//! job cache. A [`JidGen`] never hands out the same jid twice in one
//! process, even when two jobs start in the same microsecond: it moves
//! forward by one.

use crate::sync::lock;
use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// A job id: exactly 20 ASCII digits (see [`is_jid`]).
///
/// Ordered, hashed and compared as its text, so ordering is chronological
/// and a map keyed by `Jid` can be looked up with a `&str`. It serializes
/// as a plain string; deserializing checks it, so a frame with a malformed
/// jid does not decode.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Jid(Box<str>);

impl Serialize for Jid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A string that is not a jid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a jid (20 digits, YYYYMMDDhhmmssffffff): {0:?}")]
pub struct JidError(String);

impl Jid {
    /// Check `s` and make it a jid.
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        if is_jid(s) {
            Ok(Jid(s.into()))
        } else {
            Err(JidError(truncated(s)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The jid for microseconds since the epoch (outside years
    /// 0000-9999, the microseconds themselves, zero-padded to 20 digits).
    pub fn from_micros(us: i64) -> Jid {
        let text = format_jid(us);
        if is_jid(&text) {
            Jid(text.into_boxed_str())
        } else {
            // A non-negative i64 has at most 19 digits.
            Jid(format!("{:020}", us.max(0)).into_boxed_str())
        }
    }
}

/// At most 40 characters of a bad jid, for the error message.
fn truncated(s: &str) -> String {
    s.chars().take(40).collect()
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl FromStr for Jid {
    type Err = JidError;
    fn from_str(s: &str) -> Result<Jid, JidError> {
        Jid::parse(s)
    }
}

impl TryFrom<String> for Jid {
    type Error = JidError;
    fn try_from(s: String) -> Result<Jid, JidError> {
        if is_jid(&s) {
            Ok(Jid(s.into_boxed_str()))
        } else {
            Err(JidError(truncated(&s)))
        }
    }
}

impl TryFrom<&str> for Jid {
    type Error = JidError;
    fn try_from(s: &str) -> Result<Jid, JidError> {
        Jid::parse(s)
    }
}

impl From<Jid> for String {
    fn from(j: Jid) -> String {
        j.0.into_string()
    }
}

impl Borrow<str> for Jid {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A jid reads as its text wherever a `&str` is wanted (logs, SQL
/// parameters, lookups); only [`Jid::parse`] and decoding make one.
impl std::ops::Deref for Jid {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Jid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Jid {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Jid {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

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
    pub fn next(&self) -> Jid {
        let now = Utc::now().timestamp_micros();
        let mut last = lock(&self.last);
        let us = if now > *last { now } else { *last + 1 };
        *last = us;
        Jid::from_micros(us)
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
    use std::collections::BTreeMap;

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
            assert!(is_jid(j.as_str()));
            assert!(j > prev, "{j} after {prev}");
            prev = j;
        }
    }

    #[test]
    fn parse_accepts_exactly_what_is_jid_accepts() {
        let cases = [
            "20261126120000000001",
            "00000000000000000000",
            "99999999999999999999",
            "",
            "2026112612000000000",
            "202611261200000000012",
            "2026112612000000000a",
            " 20261126120000000001",
            "2026112612000000000١",
            "-2026112612000000001",
            "+2026112612000000001",
        ];
        for c in cases {
            assert_eq!(Jid::parse(c).is_ok(), is_jid(c), "{c:?}");
            assert_eq!(c.parse::<Jid>().is_ok(), is_jid(c), "{c:?}");
            assert_eq!(Jid::try_from(c.to_string()).is_ok(), is_jid(c), "{c:?}");
        }
        let err = Jid::parse("nope").expect_err("not a jid");
        assert_eq!(
            err.to_string(),
            "not a jid (20 digits, YYYYMMDDhhmmssffffff): \"nope\""
        );
    }

    #[test]
    fn wire_form_is_a_plain_string() {
        let j = Jid::parse("20261126120000000001").expect("jid");
        // msgpack: the same bytes as the string.
        let packed = rmp_serde::to_vec(&j).expect("encode");
        assert_eq!(
            packed,
            rmp_serde::to_vec("20261126120000000001").expect("encode")
        );
        assert_eq!(rmp_serde::from_slice::<Jid>(&packed).expect("decode"), j);
        // JSON too.
        let text = serde_json::to_string(&j).expect("encode");
        assert_eq!(text, "\"20261126120000000001\"");
        assert_eq!(serde_json::from_str::<Jid>(&text).expect("decode"), j);
        // A malformed jid does not decode.
        let bad = rmp_serde::to_vec("2026-11-26").expect("encode");
        assert!(rmp_serde::from_slice::<Jid>(&bad).is_err());
        assert!(serde_json::from_str::<Jid>("\"x\"").is_err());
        assert!(serde_json::from_str::<Jid>("20261126120000000001").is_err());
    }

    #[test]
    fn order_is_chronological_and_str_lookups_work() {
        let a = Jid::from_micros(1_764_158_400_123_456);
        let b = Jid::from_micros(1_764_158_400_123_457);
        let c = Jid::from_micros(1_864_158_400_000_000);
        assert!(a < b && b < c);
        let mut m = BTreeMap::new();
        m.insert(c.clone(), 3);
        m.insert(a.clone(), 1);
        m.insert(b.clone(), 2);
        assert_eq!(m.values().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(m.get("20251126120000123457"), Some(&2));
        assert_eq!(a.to_string(), a.as_str());
        assert_eq!(format!("{a:?}"), "\"20251126120000123456\"");
    }
}
