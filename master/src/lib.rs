//! brine-master: the master daemon's library and the operator CLIs
//! (`salt`, `salt-key`, `salt-run`) built on it.
//!
//! # Layout
//! - [`daemon`]: `Master::start` wires everything below and owns the shared
//!   state (sessions, publish key, return watchers, dedup); the request loop
//!   on 4506.
//! - [`published`]: the jobs this master sent out, so it admits only
//!   returns to them from minions they reach.
//! - [`publisher`]: the PUB socket (4505): sealed, signed jobs; key updates.
//! - [`roster`]: every reachable minion (direct or behind syndics), its
//!   grains and presence; exact expected sets; deltas for syndics.
//! - [`challenge`]: one-time sign-in challenges (a sign-in proves the
//!   peer holds its key; a captured one cannot be replayed).
//! - [`keys`]: minion key states on disk under `pki_dir` (accepted, pending,
//!   rejected, denied) and Salt's sign-in decision.
//! - [`job_cache`]: SQLite job cache with a batching writer thread, and a
//!   syndic's outbox (returns on their way up, written with the return).
//! - [`client_api`]: the local unix-socket channel the CLIs use.
//! - [`runner`]: `salt-run` functions (`jobs.*`, `manage.*`).
//! - [`cli`]: the `salt`, `salt-run` and `salt-key` commands.
//! - [`output`]: the outputters, shared with `salt-call` (lives in common).

pub mod challenge;
pub mod cli;
pub mod client_api;
pub mod daemon;
pub mod job_cache;
pub mod keys;
pub mod published;
pub mod publisher;
pub mod roster;
pub mod runner;

pub use brine_common::output;
