//! brine-master: the master daemon's library and the operator CLIs
//! (`salt`, `salt-key`, `salt-run`) built on it.
//!
//! # Layout
//! - [`output`]: the `--out` outputters (nested, json, yaml, txt, raw,
//!   quiet) that print returns in the exact shapes Salt's CLIs print, in
//!   streaming or `--static` mode.

pub mod output;
