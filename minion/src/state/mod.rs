//! The state system's core, pure and without I/O: Salt's state compiler
//! (high data → low chunks, as `state.show_lowstate` shows them) in
//! `compile`, and its scheduler (requisites, ordering, failhard, test
//! mode) in `run`. State modules are not here: the scheduler runs each
//! chunk through an executor the caller passes in.
//!
//! Invariant: a [`Lowstate`] only exists with every requisite resolved
//! to chunks and no requisite cycle, so [`run`] cannot fail.

mod compile;
mod run;

pub use compile::{compile, show_high, LowChunk, Lowstate, REQUISITES};
pub use run::{result_key, run, RunCtx, RunOptions, StateOutcome, StateResult};

#[cfg(test)]
mod tests;
