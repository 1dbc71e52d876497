//! Per-tier latencies from a return's trace stamps.
//!
//! A traced job collects stamps on its way down (`pub` at the top, `relay`
//! at each syndic, `recv` at the minion) and back (`done` at the minion,
//! `ret` at each syndic and finally at the top). `split` turns one return's
//! stamps into the legs of the report. Invariant: a leg is only reported
//! when both of its stamps exist and are in path order, so a malformed or
//! partial trace yields fewer legs, never a wrong one.

use crate::stats::Tier;
use brine_common::proto::Stamp;

/// The measured legs of one return, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Legs {
    pub legs: Vec<(Tier, u64)>,
    /// The top's `pub` stamp, the origin of the job-level figures.
    pub pub_us: Option<u64>,
}

fn find<'a>(stamps: &'a [Stamp], what: &str, who: Option<&str>) -> Vec<(usize, &'a Stamp)> {
    stamps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.what == what && who.is_none_or(|w| s.who == w))
        .collect()
}

/// Splits the stamps of `minion`'s return to `top` into legs. Only the
/// minion's own `recv`/`done` count: a syndic's upstream link stamps
/// `recv` too when a job reaches it.
pub fn split(stamps: &[Stamp], top: &str, minion: &str) -> Legs {
    let mut out = Legs::default();
    let pubs = find(stamps, "pub", None);
    let relays = find(stamps, "relay", None);
    let recv = find(stamps, "recv", Some(minion));
    let done = find(stamps, "done", Some(minion));
    let rets = find(stamps, "ret", None);
    let Some(&(ip, p)) = pubs.first() else {
        return out;
    };
    out.pub_us = Some(p.us);
    let mut leg = |tier, a: Option<&(usize, &Stamp)>, b: Option<&(usize, &Stamp)>| {
        if let (Some(&(ia, sa)), Some(&(ib, sb))) = (a, b) {
            if ia < ib {
                out.legs.push((tier, sb.us.saturating_sub(sa.us)));
            }
        }
    };
    let pub_pos = (ip, p);
    leg(Tier::TopToSyndic, Some(&pub_pos), relays.first());
    leg(Tier::SyndicToMinion, relays.last(), recv.first());
    leg(Tier::MinionExec, recv.first(), done.first());
    // Returns: the last-tier syndic stamps first, the top last.
    let top_ret = rets.iter().rev().find(|(_, s)| s.who == top);
    let syndic_rets: Vec<&(usize, &Stamp)> = rets.iter().filter(|(_, s)| s.who != top).collect();
    leg(
        Tier::MinionToSyndic,
        done.first(),
        syndic_rets.first().copied(),
    );
    leg(Tier::SyndicToTop, syndic_rets.last().copied(), top_ret);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(who: &str, what: &str, us: u64) -> Stamp {
        Stamp {
            who: who.into(),
            what: what.into(),
            us,
        }
    }

    const T_MINION: &str = "m";

    #[test]
    fn one_tier() {
        let t = vec![
            st("top", "pub", 100),
            st("syndic1", "recv", 140),
            st("syndic1", "relay", 150),
            st("m", "recv", 170),
            st("m", "done", 171),
            st("syndic1", "ret", 200),
            st("top", "ret", 260),
        ];
        let l = split(&t, "top", T_MINION);
        assert_eq!(l.pub_us, Some(100));
        assert_eq!(
            l.legs,
            vec![
                (Tier::TopToSyndic, 50),
                (Tier::SyndicToMinion, 20),
                (Tier::MinionExec, 1),
                (Tier::MinionToSyndic, 29),
                (Tier::SyndicToTop, 60),
            ]
        );
    }

    #[test]
    fn two_tiers_use_outer_syndics() {
        let t = vec![
            st("top", "pub", 0),
            st("s1-t1", "recv", 8),
            st("s1-t1", "relay", 10),
            st("s1-t2", "recv", 25),
            st("s1-t2", "relay", 30),
            st("m", "recv", 35),
            st("m", "done", 36),
            st("s1-t2", "ret", 40),
            st("s1-t1", "ret", 60),
            st("top", "ret", 90),
        ];
        let l = split(&t, "top", T_MINION);
        assert_eq!(
            l.legs,
            vec![
                (Tier::TopToSyndic, 10),
                (Tier::SyndicToMinion, 5),
                (Tier::MinionExec, 1),
                (Tier::MinionToSyndic, 4),
                (Tier::SyndicToTop, 30),
            ]
        );
    }

    #[test]
    fn partial_or_disordered_traces_give_fewer_legs() {
        assert_eq!(split(&[], "top", "m"), Legs::default());
        let t = vec![st("m", "done", 5), st("top", "pub", 1), st("m", "recv", 3)];
        let l = split(&t, "top", T_MINION);
        assert_eq!(l.legs, vec![]);
        let direct = vec![
            st("top", "pub", 0),
            st("m", "recv", 3),
            st("m", "done", 4),
            st("top", "ret", 9),
        ];
        assert_eq!(split(&direct, "top", "m").legs, vec![(Tier::MinionExec, 1)]);
    }
}
