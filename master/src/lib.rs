//! brine-master: the master daemon's library and the operator CLIs built on it.
//!
//! # Layout
//! - [`job_cache`]: every job's load, expected minions and returns in an
//!   embedded SQLite file, written in batches by one writer thread; old jobs
//!   expire after `keep_jobs` hours.
//! - [`spool`]: a bounded, durable FIFO of returns a syndic holds while the
//!   master above it is unreachable.

pub mod job_cache;
pub mod spool;
