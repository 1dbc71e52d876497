//! Shared foundations of every Brine daemon and CLI.
//!
//! # Layout
//! - [`proto`]: every wire type (publish, request channel, rosters);
//!   [`proto::client`]: the local client channel's messages and framing.
//! - [`client`]: [`client::LocalClient`], the CLIs' side of that channel,
//!   and [`client::ClientError`] with its exit code.
//! - [`codec`]: msgpack encode/decode with a frame-size limit; never panics.
//! - [`crypto`]: RSA-2048 key pairs, PSS signatures, OAEP key delivery,
//!   AES-256-GCM sealing with context-binding associated data.
//! - [`session`]: the client side of the protocol without I/O (sign-in,
//!   sealing, opening publishes), shared by minions, syndics and `loadtest`.
//! - [`transport`]: zmq sockets on their own threads, bridged to tokio.
//! - [`link`]: the authenticated link of a minion (or of a syndic, upward)
//!   to its master, driving a [`session::ClientSession`] over a DEALER and
//!   a SUB, with config-derived back-off ([`link::LinkConfig`]).
//! - [`unfinished`]: the request port's bound on what a peer's unfinished
//!   multipart message makes libzmq hold (per-connection TCP counters).
//! - [`metrics`]: the opt-in `/metrics`, `/healthz`, `/readyz` endpoint
//!   (`metrics_bind`), bounded, and the `process_*` collector.
//! - [`jid`]: Salt-shaped job ids.
//! - [`exit`]: the exit codes of every command; [`cli`]: what every `main`
//!   shares (argument parsing, open-files limit, shutdown signal).
//! - [`config`]: master/minion config loading with Salt's option names
//!   (defaults, file, `.d` includes, `SALT_*` env, CLI overrides).
//! - `telemetry`: tracing setup with Salt log level names.
//! - [`target`]: Salt targeting (glob, pcre, list, grain, ipcidr, compound,
//!   nodegroup): one parser and matcher for master and minion.
//! - [`glob`]: the one fnmatch-style glob matcher (ids, grains, key names,
//!   job searches, `sys.*` filters), bounded in steps; `target::fnmatch`.
//! - [`args`]: Salt's CLI argument convention (positional, `key=value`).
//! - [`sync`]: `lock`/`read`/`write` that take a poisoned lock's data.
//! - [`output`]: the `--out` outputters shared by every CLI.
//! - [`render`]: Salt's renderers: Jinja ([`render::render_jinja`], with
//!   Salt's filters and tags) and SLS files ([`render::render_sls`]: the
//!   `#!` pipe, then YAML or JSON), for pillar and states.

pub mod args;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod exit;
pub mod glob;
pub mod jid;
pub mod link;
pub mod metrics;
pub mod output;
pub mod proto;
pub mod render;
pub mod ring;
pub mod session;
pub mod sync;
pub mod target;
pub(crate) mod telemetry;
pub mod transport;
pub mod unfinished;

/// Declares the allocator of a Brine binary; every `main.rs`-level bin
/// calls it once (`brine_common::global_allocator!();`), and libraries and
/// test binaries keep the system allocator.
///
/// Every Brine process allocates through mimalloc: a master or syndic
/// under load spent ~20% of its CPU in glibc's malloc and free (most of it
/// in consolidating freed chunks), measured with perf on a syndic serving
/// 2000 minions. See docs/DEPENDENCIES.md (`--cfg brine_glibc` builds
/// without it, for comparison).
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[cfg(not(brine_glibc))]
        #[global_allocator]
        static ALLOCATOR: $crate::mimalloc::MiMalloc = $crate::mimalloc::MiMalloc;
    };
}

#[doc(hidden)]
pub use mimalloc;
