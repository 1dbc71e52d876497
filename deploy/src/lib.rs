//! Launching real Brine topologies on one machine, and deployment files.
//!
//! # Layout
//! - [`launch`]: the one launcher: find (and build) the binaries, take a
//!   loopback block of one's own, write configs, spawn a daemon with its
//!   environment, wait for it with a deadline, stop it by PID.
//! - [`topology`]: start a top master, syndic tiers and minions as real
//!   processes of the workspace's binaries, each master on its own loopback
//!   address, run the CLIs against them, and stop every process by PID.
//! - [`watch`]: `salt-run state.event` on a master, its events read
//!   line by line.
//! - [`memory`]: a process's resident memory (`VmRSS`).
//! - [`sshd`]: a real OpenSSH server on loopback for the ssh tests.
//! - [`peer`], [`mitm`], [`hostile`]: protocol peers driven by hand, a
//!   man in the middle and raw ZMTP, for hostile-input tests.
//!
//! `deploy/systemd/` holds unit files and `deploy/etc/` example configs for
//! a real fleet (top master + datacenter syndics + minions).

pub mod hostile;
pub mod launch;
pub mod memory;
pub mod mitm;
pub mod peer;
pub mod sshd;
pub mod topology;
pub mod watch;
