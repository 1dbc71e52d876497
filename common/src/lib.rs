//! Shared foundations of every Brine daemon and CLI.
//!
//! # Layout
//! - [`proto`]: every wire type (publish, request channel, rosters).
//! - [`codec`]: msgpack encode/decode with a frame-size limit; never panics.
//! - [`crypto`]: RSA-2048 key pairs, PSS signatures, OAEP key delivery,
//!   AES-256-GCM sealing with context-binding associated data.
//! - [`jid`]: Salt-shaped job ids.
//! - [`exit`]: the exit codes of every command.
//! - [`config`]: master/minion config loading with Salt's option names
//!   (defaults, file, `.d` includes, `SALT_*` env, CLI overrides).
//! - [`telemetry`]: tracing setup with Salt log level names.
//! - [`target`]: Salt targeting (glob, pcre, list, grain, ipcidr, compound,
//!   nodegroup): one parser and matcher for master and minion.
//! - [`args`]: Salt's CLI argument convention (positional, `key=value`).

pub mod args;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod exit;
pub mod jid;
pub mod proto;
pub mod target;
pub mod telemetry;
