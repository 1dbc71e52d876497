//! The syndic's link to the master above: the shared [`brine_common::link`]
//! with the syndic role and the `syndic_*` back-off options
//! ([`LinkConfig::for_syndic`]). With several `syndic_master` entries it
//! fails over: while the current master has not accepted a sign-in for
//! [`FAILOVER_AFTER`], the next one in the list is tried (Salt's
//! `syndic_failover: ordered`).
//!
//! Trust in the master above is the minion's: its key is pinned on first
//! contact in `syndic_master.pub` (one file per master when there are
//! several) under the syndic's pki dir, and a different key later is
//! refused; `syndic_finger` fixes the expected key before first contact.

use brine_common::config::SyndicConfig;
use brine_common::crypto::{KeyPair, PublicKey};
use brine_common::link::{self, LinkConfig, LinkHandle};
use brine_common::proto::{JobLoad, ReplyBody, RequestBody};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How long a master may stay unreachable before the next one is tried.
/// Several sign-in back-offs (`syndic_recon_max`, 5 s by default) long, so
/// a master that restarts is not left for the next one.
pub const FAILOVER_AFTER: Duration = Duration::from_secs(15);

/// How often the failover loop looks at whether the link is up.
const LINK_CHECK: Duration = Duration::from_millis(500);

/// Jobs from above waiting for the relay task (the link's own job queue
/// has the same bound).
const JOBS_QUEUE: usize = 10_000;

/// How long a question (a file, a pillar) asked of the master above may
/// wait for its answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(60);

/// The current upstream link (replaced on failover).
#[derive(Clone)]
pub struct Upstream {
    /// The link and its generation (bumped on every failover), so a
    /// session is told apart from one on the next master.
    current: Arc<RwLock<Option<(u64, LinkHandle)>>>,
}

impl brine_master::state::Upstream for Upstream {
    fn ask(
        &self,
        body: RequestBody,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ReplyBody, String>> + Send + '_>>
    {
        Box::pin(async move {
            let link = self
                .link()
                .ok_or_else(|| "no master above is connected".to_string())?;
            link.ask(body, ASK_TIMEOUT).await.map_err(|e| e.to_string())
        })
    }
}

impl Upstream {
    pub fn link(&self) -> Option<LinkHandle> {
        self.current
            .read()
            .ok()
            .and_then(|g| g.as_ref().map(|(_, l)| l.clone()))
    }

    /// The signed-in link and an id of its session upstream: it changes
    /// with every sign-in (a restarted master above) and every failover
    /// (another master above), never otherwise. None while not signed in.
    pub fn session(&self) -> Option<(u64, LinkHandle)> {
        let g = self.current.read().ok()?;
        let (generation, link) = g.as_ref()?;
        link.is_up()
            .then(|| (session_id(*generation, link.sign_ins()), link.clone()))
    }
}

/// Generation in the high half, sign-ins in the low half; never 0 for a
/// signed-in link (sign-ins start at 1).
fn session_id(generation: u64, sign_ins: u64) -> u64 {
    (generation << 32) | (sign_ins & 0xffff_ffff)
}

/// Start the upstream side; jobs from above arrive on the returned channel.
pub fn start(
    cfg: &SyndicConfig,
    keys: Arc<KeyPair>,
    shutdown: CancellationToken,
) -> (Upstream, mpsc::Receiver<JobLoad>) {
    let up = Upstream {
        current: Arc::new(RwLock::new(None)),
    };
    let (job_tx, job_rx) = mpsc::channel(JOBS_QUEUE);
    let masters = cfg.masters.clone();
    let pki = cfg.pki_dir.clone();
    let base = LinkConfig::for_syndic(cfg);
    // A pinned key that contradicts `syndic_finger` is looked at again
    // after the wait a pending key gets: both need the operator.
    let pin_retry = Duration::from_secs(cfg.timings.acceptance_wait_time.max(1));
    // A link that cannot even start (no sockets left) is retried after the
    // first reconnect back-off.
    let start_retry = Duration::from_millis(cfg.timings.recon_default.max(100));
    let up2 = up.clone();
    tokio::spawn(async move {
        let mut idx = 0usize;
        let mut generation = 0u64;
        loop {
            if shutdown.is_cancelled() || masters.is_empty() {
                return;
            }
            let mut lc = base.clone();
            let (host, port) = split_host_port(&masters[idx % masters.len()], lc.master_port);
            lc.master = host;
            lc.master_port = port;
            // Each upstream master pins its own key.
            if masters.len() > 1 {
                lc.pin_file = pki.join(format!("syndic_master.{}.pub", idx % masters.len()));
            }
            if let Some(why) = pin_conflict(&lc) {
                error!(master = %lc.master, file = %lc.pin_file.display(), "{why}; not connecting (remove the pinned key if the master's key really changed)");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pin_retry) => {}
                }
                idx += 1;
                continue;
            }
            let link_sd = shutdown.child_token();
            let hello: link::HelloFn = Box::new(|| RequestBody::Hello {
                grains: serde_json::json!({}),
                version: env!("CARGO_PKG_VERSION").to_string(),
            });
            info!(master = %lc.master, port = lc.master_port, "connecting upstream");
            let (handle, mut jobs, task) =
                match link::start(lc, keys.clone(), hello, link_sd.clone()) {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, "cannot start the upstream link");
                        tokio::time::sleep(start_retry).await;
                        idx += 1;
                        continue;
                    }
                };
            generation += 1;
            if let Ok(mut g) = up2.current.write() {
                *g = Some((generation, handle.clone()));
            }
            let mut down_since = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(LINK_CHECK);
            let failover = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break false,
                    j = jobs.recv() => {
                        let Some(j) = j else { break true };
                        if job_tx.send(j).await.is_err() { break false; }
                    }
                    _ = tick.tick() => {
                        if handle.is_up() {
                            down_since = tokio::time::Instant::now();
                        } else if masters.len() > 1 && down_since.elapsed() > FAILOVER_AFTER {
                            warn!(master = %masters[idx % masters.len()], "upstream master unreachable; failing over");
                            break true;
                        }
                    }
                }
            };
            link_sd.cancel();
            let _ = task.await;
            if !failover {
                return;
            }
            idx += 1;
        }
    });
    (up, job_rx)
}

/// Why the key pinned for this master cannot be used with the configured
/// `syndic_finger`: a pinned key takes precedence over the fingerprint in
/// the session, so a pin that contradicts it (stored before the option was
/// set) must not be trusted silently.
fn pin_conflict(lc: &LinkConfig) -> Option<String> {
    let want = lc.master_finger.as_deref()?;
    let text = std::fs::read_to_string(&lc.pin_file).ok()?;
    let got = match PublicKey::from_pem(&text) {
        Ok(k) => k.fingerprint(),
        Err(e) => return Some(format!("the pinned master key does not parse: {e}")),
    };
    (got != want)
        .then(|| format!("the pinned master key {got} does not match syndic_finger {want}"))
}

/// `host:port` or `host` (default port); IPv6 in brackets.
pub fn split_host_port(s: &str, default_port: u16) -> (String, u16) {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            let port = p.trim_start_matches(':').parse().unwrap_or(default_port);
            return (h.to_string(), port);
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(default_port)),
        _ => (s.to_string(), default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::{session_id, split_host_port};

    #[test]
    fn sessions_differ_across_sign_ins_and_failovers() {
        assert_ne!(session_id(1, 1), 0);
        assert_ne!(session_id(1, 1), session_id(1, 2));
        assert_ne!(session_id(1, 1), session_id(2, 1));
        assert_eq!(session_id(3, 7), session_id(3, 7));
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("10.0.0.1", 4506), ("10.0.0.1".into(), 4506));
        assert_eq!(split_host_port("top:5506", 4506), ("top".into(), 5506));
        assert_eq!(split_host_port("[::1]:7", 4506), ("::1".into(), 7));
        assert_eq!(split_host_port("::1", 4506), ("::1".into(), 4506));
    }
}
