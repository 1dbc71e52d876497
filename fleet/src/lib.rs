//! Brine's fleet layout: a small YAML fleet file (the top master,
//! datacenters with their syndics, hosts per datacenter or a Salt roster
//! plus placement rules) checked and turned into the config of every
//! daemon of a multi-tier topology, plus a Salt roster for salt-ssh.
//!
//! [`Fleet::load`] reads the file, [`Fleet::check`] finds every problem
//! (ids unique, hosts well-formed, ports free per address, no loops,
//! every config loadable by Brine's own loader), [`Fleet::plan`] returns
//! the [`Daemon`]s with their config files for `brine-fleet render` and the
//! bulk deployer. Invariant: a plan is only handed out for a fleet that
//! passed every check, and it is deterministic (same file and rosters,
//! same daemons, same bytes).

pub mod deploy;
pub mod layout;
pub mod render;
pub mod spec;

pub use layout::{ConfigFile, Daemon, Kind, Listen, Problem, Problems, Ssh, Upstream};
pub use spec::LoadError;

use std::path::{Path, PathBuf};

/// A fleet file, read and parsed.
#[derive(Debug, Clone)]
pub struct Fleet {
    file: spec::FleetFile,
    /// Where relative roster paths are read from (the file's directory).
    base: PathBuf,
}

impl Fleet {
    /// Reads and parses the fleet file at `path`.
    pub fn load(path: &Path) -> Result<Fleet, LoadError> {
        let file = spec::read_fleet(path)?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Fleet { file, base })
    }

    /// Parses fleet file text; relative roster paths are read from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Fleet, LoadError> {
        let file = spec::parse_fleet(text).map_err(|message| LoadError::Parse {
            path: PathBuf::from("<fleet file>"),
            message,
        })?;
        Ok(Fleet {
            file,
            base: base.to_path_buf(),
        })
    }

    /// Every problem of the fleet, or the number of daemons when there is none.
    pub fn check(&self) -> Result<usize, Problems> {
        self.plan().map(|d| d.len())
    }

    /// The fleet's daemons with their rendered config files: the top
    /// master first, then the top level's hosts, then each datacenter's
    /// syndics and hosts (datacenters by name, nested ones after their
    /// parent). Refused with every problem found, including configs that
    /// Brine's loader would not take.
    pub fn plan(&self) -> Result<Vec<Daemon>, Problems> {
        let mut daemons = layout::resolve(&self.file, &self.base)?;
        render::fill(&mut daemons);
        self.loadable(&daemons)?;
        Ok(daemons)
    }

    /// Writes the configs into a scratch directory and loads each one.
    fn loadable(&self, daemons: &[Daemon]) -> Result<(), Problems> {
        let problem = |message: String| {
            Problems(vec![Problem {
                datacenter: None,
                id: None,
                message,
            }])
        };
        let scratch = tempfile::Builder::new()
            .prefix("brine-fleet-check-")
            .tempdir()
            .map_err(|e| problem(format!("cannot make a scratch directory: {e}")))?;
        let outputs = render::outputs(daemons, scratch.path());
        render::write(&outputs)
            .map_err(|e| problem(format!("cannot write to the scratch directory: {e}")))?;
        let bad = render::validate(daemons, scratch.path());
        if bad.is_empty() {
            return Ok(());
        }
        Err(Problems(
            bad.into_iter()
                .map(|(id, e)| Problem {
                    datacenter: daemons
                        .iter()
                        .find(|d| d.id == id)
                        .and_then(|d| d.datacenter.clone()),
                    message: format!(
                        "the rendered config does not load: {}",
                        e.replace(&scratch.path().display().to_string(), "<out>")
                    ),
                    id: Some(id),
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests;
