//! The operator commands' logic (their `main`s only parse and call in).
//! - [`salt`]: publish and wait for exactly the expected minions.
//! - [`run`]: `salt-run` runner functions ([`event`]: `state.event`).
//! - [`key`]: `salt-key` (list, accept, reject, delete, fingerprints, the
//!   syndic role).
//! - [`cp`]: `salt-cp` (local files to minions, in `cp.recv_chunked` chunks).

pub mod cp;
pub mod event;
pub mod key;
pub mod run;
pub mod salt;
