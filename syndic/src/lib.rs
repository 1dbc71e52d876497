//! The syndic: a relay that is a minion to the master above and a full
//! master to the minions (and syndics) below.
//!
//! # Layout
//! - [`syndic`]: starts the downstream master, the upstream link and the
//!   forwarder; relays jobs down (same jid, loop guard).
//! - `forward`: the `Forwarder`, one task that sends the
//!   roster (full per upstream session, deltas after) and the returns of
//!   the job cache's outbox upward as one ordered stream, in batches,
//!   deleting them from the outbox once acknowledged; written against the
//!   `Below` and `Uplink` traits.
//! - `upstream`: the link to the master above (`brine_common::link` with
//!   the syndic role and the `syndic_*` timings), with failover over a
//!   `syndic_master` list.
//! - `events_up`: forwards the syndic's bus events (its subtree's, with
//!   their syndic path) upward in bounded, counted batches.
//! - `legacy_spool`: imports a `syndic_spool.sqlite` left by an older
//!   version into the outbox once, at start.

pub(crate) mod events_up;
pub(crate) mod forward;
pub(crate) mod legacy_spool;
pub mod syndic;
#[cfg(test)]
mod test_util;
pub(crate) mod upstream;
