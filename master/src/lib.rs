//! brine-master: the Brine master's library (key store, operator CLIs and,
//! once merged, the publisher, request server, roster and job cache).
//!
//! # Layout
//! - [`keys`]: minion key states on disk under `pki_dir` (accepted, pending,
//!   rejected, denied) and Salt's sign-in decision.
//! - [`key_cli`]: the `salt-key` command (arguments, prompts, output), run
//!   by `bin/salt-key.rs`.

pub mod key_cli;
pub mod keys;
