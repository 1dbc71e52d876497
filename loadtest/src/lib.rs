//! brine-loadtest: a load-test harness for Brine topologies.
//!
//! Layout:
//! - `cli`: the `loadtest` command line (Salt-style flags, hidden child
//!   subcommands).
//! - `ring` (from `brine_common::ring`): consistent hashing of minion ids onto syndics.
//! - `stats`: per-tier latency histograms (hdrhistogram, µs).
//! - `report`: console table, JSON report and self-contained HTML page.
//! - `raw`: the raw ZeroMQ baseline processes (top, relay, minion worker)
//!   and their wire messages.
//! - `workers`: child processes (spawn, events on stdout, kill on drop,
//!   Ctrl-C), fd and RSS accounting, splitting minions over workers.
//! - `baseline`: the coordinator of a baseline run.
//! - `brine`: the Brine run: topology, simulated minions (with `salt://`
//!   fetches, `brine::fetch`), traced jobs.
//! - `cpu`: CPU-seconds per 1000 returns of the top and each syndic.
//! - `plan`: capacity planning over a grid of minion and syndic counts,
//!   with `model`: the fitted latency/CPU model it predicts from.

// Tests may unwrap (house rules); library code may not.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub(crate) mod baseline;
pub(crate) mod brine;
pub mod cli;
pub(crate) mod cpu;
pub mod model;
pub(crate) mod plan;
pub(crate) mod raw;
pub(crate) mod report;
pub(crate) use brine_common::ring;
pub(crate) mod stats;
pub(crate) mod workers;
