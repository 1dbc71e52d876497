//! The minion's pillar: compiled on the master for this minion only,
//! fetched over the request channel and kept in memory beside the grains.
//!
//! A direct master answers `Pillar(value)` under this minion's session key;
//! through syndics the answer is a [`SealedPillar`] that only this minion's
//! RSA key opens (a syndic relays it unread). [`Pillar::refresh`] replaces
//! the pillar in one write, so readers (the `pillar` module, and the
//! matcher once pillar targeting lands) see the old or the new pillar,
//! never a mix; a fetch that fails leaves the pillar as it was, is logged
//! and counted ([`Pillar::failures`]).
//!
//! The daemon fetches the pillar after every new sign-in
//! ([`Pillar::follow_sign_ins`]): once after start, and again after the
//! master restarted (its cache of compiled pillars, which `-I` targeting
//! reads, starts empty).

use crate::files::Ask;
use brine_common::crypto::{CryptoError, KeyPair};
use brine_common::link::AskError;
use brine_common::proto::{Refusal, ReplyBody, RequestBody, SealedPillar};
use brine_common::sync::{read, write};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The longest one pillar question may take.
pub const PILLAR_TIMEOUT: Duration = Duration::from_secs(60);
/// Fetches tried after one sign-in before waiting for the next sign-in
/// (or a `saltutil.refresh_pillar`).
pub const FETCH_ATTEMPTS: u32 = 10;
/// First wait between failed fetches; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the daemon looks for a new sign-in.
const SIGN_IN_POLL: Duration = Duration::from_secs(1);

/// Why the pillar could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum PillarError {
    #[error("the pillar comes from the master, and this process has no connection to it (salt-call runs without the minion's link)")]
    NoMaster,
    #[error("asking the master for the pillar: {0}")]
    Ask(#[source] AskError),
    #[error("the master refused the pillar: {0}")]
    Refused(Refusal),
    #[error("the master answered the pillar request with an unexpected {0} answer")]
    Unexpected(&'static str),
    #[error("the sealed pillar does not open with this minion's key: {0}")]
    Open(#[source] CryptoError),
    #[error("opening the sealed pillar failed: {0}")]
    Task(String),
    #[error("the pillar is not a dict but {0}")]
    NotADict(&'static str),
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a dict",
    }
}

/// This minion's pillar and how to fetch it.
pub struct Pillar {
    data: Arc<RwLock<Value>>,
    asker: Option<Arc<dyn Ask>>,
    keys: Option<Arc<KeyPair>>,
    id: String,
    /// The minion config's `pillarenv` (all environments when `None`).
    pillarenv: Option<String>,
    /// Largest pillar a sealed answer may decode to (`max_frame_bytes`).
    max_bytes: usize,
    failures: AtomicU64,
    /// A pillar from the master has been stored at least once.
    loaded: std::sync::atomic::AtomicBool,
}

impl Pillar {
    /// A pillar fetched through `asker` and opened with `keys` (`None`s:
    /// no master, the pillar stays empty).
    pub fn new(
        asker: Option<Arc<dyn Ask>>,
        keys: Option<Arc<KeyPair>>,
        id: &str,
        pillarenv: Option<String>,
        max_bytes: usize,
    ) -> Self {
        Pillar {
            data: Arc::new(RwLock::new(Value::Object(Default::default()))),
            asker,
            keys,
            id: id.to_string(),
            pillarenv,
            max_bytes,
            failures: AtomicU64::new(0),
            loaded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The live pillar, shared with whoever reads it often (the matcher).
    pub fn shared(&self) -> Arc<RwLock<Value>> {
        self.data.clone()
    }

    /// A copy of the pillar in memory.
    pub fn snapshot(&self) -> Value {
        read(&self.data).clone()
    }

    /// The minion config's `pillarenv`.
    pub fn pillarenv(&self) -> Option<&str> {
        self.pillarenv.as_deref()
    }

    /// Fetches that failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Replace the pillar in memory.
    pub fn store(&self, v: Value) {
        *write(&self.data) = v;
        self.loaded.store(true, Ordering::Relaxed);
    }

    /// Whether a pillar has been stored since start (until then the
    /// pillar in memory is empty, not this minion's).
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// A fresh pillar of `pillarenv` from the master; memory is not
    /// touched. A failure is logged and counted.
    pub async fn fetch(&self, pillarenv: Option<String>) -> Result<Value, PillarError> {
        let got = self.fetch_inner(pillarenv.clone()).await;
        if let Err(e) = &got {
            let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(error = %e, pillarenv = ?pillarenv, failures = n, "pillar fetch failed");
        }
        got
    }

    async fn fetch_inner(&self, pillarenv: Option<String>) -> Result<Value, PillarError> {
        let asker = self.asker.as_ref().ok_or(PillarError::NoMaster)?;
        let answer = asker
            .ask(RequestBody::Pillar { pillarenv }, PILLAR_TIMEOUT)
            .await
            .map_err(PillarError::Ask)?;
        let value = match answer {
            ReplyBody::Pillar(v) => v,
            ReplyBody::SealedPillar(sealed) => self.open(sealed).await?,
            ReplyBody::Refused(r) => return Err(PillarError::Refused(r)),
            other => return Err(PillarError::Unexpected(other.kind())),
        };
        if !value.is_object() {
            return Err(PillarError::NotADict(json_kind(&value)));
        }
        Ok(value)
    }

    /// Open a sealed pillar with this minion's key (RSA: a blocking thread).
    async fn open(&self, sealed: SealedPillar) -> Result<Value, PillarError> {
        let keys = self
            .keys
            .clone()
            .ok_or(PillarError::Open(CryptoError::Open))?;
        let id = self.id.clone();
        let max = self.max_bytes;
        tokio::task::spawn_blocking(move || sealed.open(&keys, &id, max))
            .await
            .map_err(|e| PillarError::Task(e.to_string()))?
            .map_err(PillarError::Open)
    }

    /// Fetch the pillar of the configured `pillarenv` and keep it.
    pub async fn refresh(&self) -> Result<Value, PillarError> {
        let v = self.fetch(self.pillarenv.clone()).await?;
        self.store(v.clone());
        Ok(v)
    }

    /// The daemon's task: after each new sign-in (`session()` gives the
    /// sign-in count while the link is up), fetch the pillar, retrying
    /// with back-off at most [`FETCH_ATTEMPTS`] times; until `shutdown`.
    pub async fn follow_sign_ins(
        self: Arc<Self>,
        session: impl Fn() -> Option<u64> + Send,
        shutdown: CancellationToken,
    ) {
        let mut done_for: Option<u64> = None;
        // One round per poll or per sign-in served; ends at shutdown.
        loop {
            match session() {
                Some(n) if done_for != Some(n) => {
                    if self.fetch_after_sign_in(&shutdown).await {
                        info!(sign_ins = n, "pillar fetched");
                    }
                    // Served, fetched or not: the next chance is the next
                    // sign-in or a refresh_pillar.
                    done_for = Some(n);
                }
                _ => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SIGN_IN_POLL) => {}
            }
        }
    }

    /// Up to [`FETCH_ATTEMPTS`] fetches with back-off; true once one worked.
    async fn fetch_after_sign_in(&self, shutdown: &CancellationToken) -> bool {
        let mut wait = FIRST_BACKOFF;
        for attempt in 1..=FETCH_ATTEMPTS {
            if self.refresh().await.is_ok() {
                return true;
            }
            if attempt == FETCH_ATTEMPTS {
                warn!(
                    attempts = FETCH_ATTEMPTS,
                    "pillar not fetched; trying again after the next sign-in or saltutil.refresh_pillar"
                );
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(MAX_BACKOFF);
        }
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::files::fake::FakeMaster;
    use serde_json::json;
    use std::sync::atomic::AtomicU64;

    fn pillar_of(m: &Arc<FakeMaster>, keys: Option<Arc<KeyPair>>, id: &str) -> Pillar {
        let asker: Arc<dyn Ask> = m.clone();
        Pillar::new(Some(asker), keys, id, Some("prod".into()), 1 << 20)
    }

    #[tokio::test]
    async fn a_direct_pillar_is_stored_and_asks_for_the_configured_pillarenv() {
        let m = Arc::new(FakeMaster::default());
        m.pillars
            .lock()
            .unwrap()
            .push_back(ReplyBody::Pillar(json!({"k": "v"})));
        let p = pillar_of(&m, None, "m1");
        assert_eq!(p.refresh().await.unwrap(), json!({"k": "v"}));
        assert_eq!(p.snapshot(), json!({"k": "v"}));
        assert_eq!(
            m.count(|b| *b
                == RequestBody::Pillar {
                    pillarenv: Some("prod".into())
                }),
            1
        );
    }

    #[tokio::test]
    async fn a_sealed_pillar_opens_with_the_minion_key_only() {
        let keys = Arc::new(KeyPair::generate().unwrap());
        let other = Arc::new(KeyPair::generate().unwrap());
        let secret = json!({"secret": "m1-only"});
        let sealed = SealedPillar::seal(keys.public(), "m1", &secret).unwrap();
        let m = Arc::new(FakeMaster::default());
        m.pillars
            .lock()
            .unwrap()
            .push_back(ReplyBody::SealedPillar(sealed.clone()));
        let p = pillar_of(&m, Some(keys), "m1");
        assert_eq!(p.refresh().await.unwrap(), secret);

        // Sealed to m1, opened by another key: refused, pillar unchanged,
        // counted.
        m.pillars
            .lock()
            .unwrap()
            .push_back(ReplyBody::SealedPillar(sealed));
        let wrong = pillar_of(&m, Some(other), "m1");
        wrong.store(json!({"old": 1}));
        let e = wrong.refresh().await.unwrap_err();
        assert!(matches!(e, PillarError::Open(_)), "{e}");
        assert_eq!(wrong.snapshot(), json!({"old": 1}));
        assert_eq!(wrong.failures(), 1);
    }

    #[tokio::test]
    async fn refusals_odd_answers_and_no_master() {
        let m = Arc::new(FakeMaster::default());
        m.pillars
            .lock()
            .unwrap()
            .push_back(ReplyBody::Refused(Refusal::Unavailable("down".into())));
        m.pillars
            .lock()
            .unwrap()
            .push_back(ReplyBody::Pillar(json!([1])));
        m.pillars.lock().unwrap().push_back(ReplyBody::Ok);
        let p = pillar_of(&m, None, "m1");
        assert!(matches!(
            p.refresh().await,
            Err(PillarError::Refused(Refusal::Unavailable(_)))
        ));
        assert!(matches!(
            p.refresh().await,
            Err(PillarError::NotADict("a list"))
        ));
        assert!(matches!(
            p.refresh().await,
            Err(PillarError::Unexpected("Ok"))
        ));
        assert_eq!(p.failures(), 3);
        let none = Pillar::new(None, None, "m1", None, 1 << 20);
        assert!(matches!(none.refresh().await, Err(PillarError::NoMaster)));
    }

    #[tokio::test(start_paused = true)]
    async fn fetched_once_per_sign_in_with_bounded_retries() {
        let m = Arc::new(FakeMaster::default());
        // First sign-in: two failures, then the pillar.
        for _ in 0..2 {
            m.pillars
                .lock()
                .unwrap()
                .push_back(ReplyBody::Refused(Refusal::Unavailable("x".into())));
        }
        m.pillars
            .lock()
            .unwrap()
            .push_back(ReplyBody::Pillar(json!({"n": 1})));
        let p = Arc::new(pillar_of(&m, None, "m1"));
        let sign_ins = Arc::new(AtomicU64::new(0));
        let s2 = sign_ins.clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(p.clone().follow_sign_ins(
            move || Some(s2.load(Ordering::Relaxed)).filter(|n| *n > 0),
            shutdown.clone(),
        ));
        let asks = || m.count(|b| matches!(b, RequestBody::Pillar { .. }));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(asks(), 0, "not before the first sign-in");
        sign_ins.store(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(asks(), 3, "two failures, one success");
        assert_eq!(p.snapshot(), json!({"n": 1}));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(asks(), 3, "nothing more while the session lasts");

        // A new sign-in where the master keeps refusing: FETCH_ATTEMPTS, then
        // it waits for the next sign-in.
        for _ in 0..20 {
            m.pillars
                .lock()
                .unwrap()
                .push_back(ReplyBody::Refused(Refusal::Unavailable("x".into())));
        }
        sign_ins.store(2, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(asks(), 3 + FETCH_ATTEMPTS as usize);
        assert_eq!(p.snapshot(), json!({"n": 1}), "kept on failure");
        shutdown.cancel();
        task.await.unwrap();
    }
}
