//! Launching real Brine topologies on one machine, and deployment files.
//!
//! # Layout
//! - [`topology`]: start a top master, syndic tiers and minions as real
//!   processes of the workspace's binaries, each master on its own loopback
//!   address, run the CLIs against them, and stop every process by PID.
//! - [`peer`]: a protocol peer driven by hand, for hostile-input tests.
//!
//! `deploy/systemd/` holds unit files and `deploy/etc/` example configs for
//! a real fleet (top master + datacenter syndics + minions).

pub mod hostile;
pub mod mitm;
pub mod peer;
pub mod topology;
