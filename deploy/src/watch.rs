//! `salt-run state.event --out json` on one master of a [`Topology`], as
//! a test watches a bus: each printed line parsed into `(tag, data)` on a
//! channel. Invariant: the process is killed and reaped when the watch is
//! dropped, and every wait is bounded by the deadline it is given.

use crate::topology::Topology;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `salt-run state.event`; killed and reaped on drop.
pub struct EventWatch {
    child: Child,
    events: mpsc::Receiver<(String, Value)>,
    wait: Duration,
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EventWatch {
    /// Start it on master `on` and return once that master counts one more
    /// subscription opened (not live subscribers: one hanging up meanwhile
    /// would hide it) (or fail after `wait`, which also bounds
    /// [`EventWatch::first`]).
    pub fn start(topo: &Topology, on: &str, wait: Duration) -> Result<EventWatch> {
        let node = topo.node(on).context("no such master")?;
        let subscriptions = || {
            topo.stats_on(on)["events_subscriptions"]
                .as_u64()
                .unwrap_or(0)
        };
        let before = subscriptions();
        let mut child = Command::new(topo.bin.join("salt-run"))
            .arg("-c")
            .arg(&node.config_dir)
            .args(["state.event", "--out", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("salt-run state.event")?;
        let out = child.stdout.take().context("stdout")?;
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let tag = v["tag"].as_str().unwrap_or_default().to_string();
                if tx.send((tag, v["data"].clone())).is_err() {
                    return;
                }
            }
        });
        let w = EventWatch {
            child,
            events,
            wait,
        };
        topo.eventually(wait, "the watcher subscribed", || subscriptions() > before)?;
        Ok(w)
    }

    /// Every event printed during `d`.
    pub fn during(&self, d: Duration) -> Vec<(String, Value)> {
        let until = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(e) => out.push(e),
                Err(_) => break,
            }
        }
        out
    }

    /// The first event `want` accepts, within the watch's deadline.
    pub fn first(
        &self,
        what: &str,
        want: impl Fn(&str, &Value) -> bool,
    ) -> Result<(String, Value)> {
        let until = Instant::now() + self.wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((t, d)) if want(&t, &d) => return Ok((t, d)),
                Ok(_) => {}
                Err(e) => bail!("{what}: not seen on the bus ({e})"),
            }
        }
    }
}
