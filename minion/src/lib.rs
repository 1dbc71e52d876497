//! brine-minion: the minion side of Brine, the grains it reports and the
//! execution modules a job runs.
//!
//! # Layout
//! - [`daemon`]: the minion daemon: matcher and one task per job, over
//!   the authenticated link to its master ([`brine_common::link`], which
//!   the syndic's upstream link shares).
//! - [`beacons`]: Salt's beacons (`diskusage`, `load`, `memusage`,
//!   `service`, `inotify` by polling, `status`) and the loop that runs
//!   them and sends their events to the master.
//! - [`call`]: the `salt-call` command; [`caller`]: how it reaches the
//!   master (the daemon's call socket, or a link of its own).
//! - `exec`: the execution-module registry (`test`, `cmd`, `cp`, `grains`,
//!   `pillar`, `sys`, `saltutil`, `key`); turns a job's `fun` + arguments
//!   into a Salt-shaped return (`exec::Outcome`).
//! - [`files`]: the file client: `salt://` files over the link, chunked,
//!   checked by hash and cached under `cachedir/files/<saltenv>/`; `cp.push`.
//! - [`pillar`]: this minion's pillar, fetched from the master (sealed to
//!   this minion's key through syndics) and kept in memory.
//! - `grains`: collects this host's grains (os, kernel, network, cpu,
//!   memory, machine id) and overlays the config's static grains.
//! - [`state`]: the state compiler (high data → low chunks) and the
//!   requisite-aware scheduler, pure; state modules run through an
//!   executor the caller passes.
//! - `running`: the table of jobs in flight, behind `saltutil.running`,
//!   `saltutil.find_job` and `saltutil.kill_job`.

pub mod beacons;
pub mod call;
pub mod caller;
pub mod daemon;
pub(crate) mod exec;
pub mod files;
pub(crate) mod grains;
pub mod pillar;
pub(crate) mod running;
pub mod sls;
pub mod ssh_run;
pub mod state;
pub mod states;
