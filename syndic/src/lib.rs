//! The syndic: a relay that is a minion to the master above and a full
//! master to the minions (and syndics) below.
//!
//! # Layout
//! - [`syndic`]: starts the downstream master and the upstream link,
//!   relays jobs down (same jid, loop guard) and runs the two tasks below.
//! - [`forward`]: return aggregation upward through a durable spool
//!   (batched per interval/size, acknowledged before deletion) and roster
//!   reporting upward as deltas.
//! - [`upstream`]: the link to the master above, with failover over a
//!   `syndic_master` list.

pub mod forward;
pub mod syndic;
pub mod upstream;
