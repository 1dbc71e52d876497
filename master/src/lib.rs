//! brine-master: the master daemon's library and the operator CLIs
//! (`salt`, `salt-key`, `salt-run`) built on it.
//!
//! # Layout
//! - [`master`]: `Master::start` / `join` wire everything below together.
//! - [`state`]: `MasterState`, what the tasks share (private fields, a
//!   narrow API); [`state::returns`]: dedup, admission, return watchers;
//!   [`state::publish`]: expected sets, publishing, relaying, the
//!   publish key.
//! - `request_server`: the ROUTER socket (4506): sign-in, one handler
//!   per sealed request kind, acknowledgements after commit.
//! - `sessions`: signed-in peers, their session keys and sequence numbers.
//! - [`published`]: the jobs this master sent out, so it admits only
//!   returns to them from minions they reach.
//! - `publisher`: the PUB socket (4505): sealed, signed jobs; key updates.
//! - `roster`: every reachable minion (direct or behind syndics), its
//!   grains and presence; exact expected sets; deltas for syndics.
//! - `challenge`: one-time sign-in challenges (a sign-in proves the
//!   peer holds its key; a captured one cannot be replayed).
//! - `keys`: minion key states on disk under `pki_dir` (accepted, pending,
//!   rejected, denied) and Salt's sign-in decision.
//! - [`job_cache`]: SQLite job cache with a batching writer thread, and a
//!   syndic's outbox (returns on their way up, written with the return).
//! - [`events`]: the event bus (Salt's master events, minion events,
//!   `salt-run state.event`); bounded per subscriber, never blocking.
//! - `client_server`: the master's side of the local unix-socket channel
//!   the CLIs use (`brine_common::client` is theirs).
//! - `fileserver`: `salt://` files (roots, a syndic's cache of the
//!   master above), chunked; `cp.push` uploads.
//! - `pillar`: pillar compiled per minion, answered to it alone.
//! - `reactor`: Salt's reactor: event tag globs → reactor SLS files →
//!   jobs, runner calls and key changes, with bounded concurrency.
//! - `runner`: `salt-run` functions (`jobs.*`, `manage.*`, `fileserver.*`).
//! - [`metrics`]: what the metrics endpoint (`metrics_bind`) exports:
//!   `manage.stats` flattened, presence, return latency.
//! - [`cli`]: the `salt`, `salt-run`, `salt-key` and `salt-cp` commands.
//! - [`output`]: the outputters, shared with `salt-call` (lives in common).

pub(crate) mod challenge;
pub mod cli;
pub(crate) mod client_server;
pub mod events;
pub(crate) mod fileserver;
pub mod job_cache;
pub(crate) mod keys;
pub mod master;
pub mod metrics;
pub(crate) mod pillar;
pub mod published;
pub(crate) mod publisher;
pub(crate) mod reactor;
pub(crate) mod request_server;
pub(crate) mod roster;
pub(crate) mod runner;
pub(crate) mod sessions;
pub mod state;

pub use brine_common::output;
/// For `salt-ssh`, which answers its hosts' file server and pillar
/// questions from the local master config.
pub use fileserver::{Ctx as FileServerCtx, FileServer};
pub use pillar::compile_checked as compile_pillar;
