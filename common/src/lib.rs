//! Shared foundations of every Brine daemon and CLI.
//!
//! # Layout
//! - [`proto`]: every wire type (publish, request channel, rosters).
//! - [`codec`]: msgpack encode/decode with a frame-size limit; never panics.
//! - [`crypto`]: RSA-2048 key pairs, PSS signatures, OAEP key delivery,
//!   AES-256-GCM sealing with context-binding associated data.
//! - [`jid`]: Salt-shaped job ids.
//! - [`exit`]: the exit codes of every command.
//! - [`target`]: Salt targeting (glob, pcre, list, grain, ipcidr, compound,
//!   nodegroup): parse once, match an id and its grains on master or minion.
//! - [`args`]: Salt's CLI argument convention (positional args, `key=value`
//!   kwargs, YAML-typed values).

pub mod args;
pub mod codec;
pub mod crypto;
pub mod exit;
pub mod jid;
pub mod proto;
pub mod target;
