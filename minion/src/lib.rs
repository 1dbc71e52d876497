//! brine-minion: the minion side of Brine, the grains it reports and the
//! execution modules a job runs.
//!
//! # Layout
//! - [`exec`]: the execution-module registry (`test`, `cmd`, `grains`,
//!   `sys`, `saltutil`, `key`); turns a job's `fun` + arguments into a
//!   Salt-shaped return ([`exec::Outcome`]).
//! - [`grains`]: collects this host's grains (os, kernel, network, cpu,
//!   memory, machine id) and overlays the config's static grains.
//! - [`running`]: the table of jobs in flight, behind `saltutil.running`,
//!   `saltutil.find_job` and `saltutil.kill_job`.

pub mod exec;
pub mod grains;
pub mod running;
