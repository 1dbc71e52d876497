//! The remote side of `salt-ssh`: `salt-call --ssh-stdio` runs one
//! function on a host without a minion and talks to `salt-ssh` over its
//! stdin/stdout, which carry only frames (logs go to stderr).
//!
//! A frame is a 4-byte big-endian length and a msgpack body (common's
//! codec). `salt-ssh` writes [`ToRunner::Run`] first (the function, its
//! arguments and the minion options for this host); the runner answers
//! [`FromRunner::Hello`] with its grains, then asks any file server or
//! pillar question as [`FromRunner::Ask`] (answered by
//! [`ToRunner::Answer`] with the same number), and ends with exactly one
//! [`FromRunner::Done`]. Invariant: the runner never writes anything but
//! frames to stdout, and every `Ask` is either answered or failed (channel
//! closed, timeout), so a run always ends.

use crate::exec::Registry;
use crate::files::{Ask, AskFuture};
use brine_common::codec;
use brine_common::link::AskError;
use brine_common::proto::{ReplyBody, RequestBody};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

/// Largest frame either side accepts (a file chunk, a big `cmd.run`).
pub const MAX_FRAME: usize = codec::DEFAULT_MAX_FRAME;

/// What `salt-ssh` asks the runner to do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunSpec {
    pub fun: String,
    pub args: Vec<Value>,
    pub kwargs: BTreeMap<String, Value>,
    /// Minion options (`id`, `cachedir`, the roster's `minion_opts`, ...),
    /// highest precedence over the defaults.
    pub opts: Map<String, Value>,
    /// Directory whose `minion` file (if any) is read under `opts`.
    pub config_dir: String,
}

/// `salt-ssh` → runner.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum ToRunner {
    Run(RunSpec),
    Answer { n: u64, body: ReplyBody },
}

/// Runner → `salt-ssh`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum FromRunner {
    Hello {
        grains: Value,
    },
    Ask {
        n: u64,
        body: RequestBody,
    },
    Done {
        #[serde(rename = "return")]
        ret: Value,
        retcode: i32,
        success: bool,
        out: Option<String>,
    },
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("channel: {0}")]
    Proto(#[from] codec::ProtoError),
}

/// Write one frame and flush it.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let body = codec::encode(msg)?;
    let len = u32::try_from(body.len()).map_err(|_| codec::ProtoError::TooLarge {
        size: body.len(),
        max: u32::MAX as usize,
    })?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Read one frame of at most `max` bytes; `None` at a clean end of input
/// (before the first byte of a frame).
pub async fn read_frame<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    r: &mut R,
    max: usize,
) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    // Each round reads at least one byte or ends: at most 4 rounds.
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        got += n;
    }
    let size = u32::from_be_bytes(len) as usize;
    if size > max {
        return Err(codec::ProtoError::TooLarge { size, max }.into());
    }
    let mut body = vec![0u8; size];
    r.read_exact(&mut body).await?;
    Ok(Some(codec::decode(&body, max)?))
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<ReplyBody>>>>;
type Out = Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>>;

/// [`Ask`] over the channel: each question gets a number and waits for
/// the answer with that number.
struct ChannelAsk {
    out: Out,
    pending: Pending,
    next: AtomicU64,
}

impl Ask for ChannelAsk {
    fn ask(&self, body: RequestBody, timeout: Duration) -> AskFuture<'_> {
        Box::pin(async move {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            brine_common::sync::lock(&self.pending).insert(n, tx);
            let sent = {
                let mut w = self.out.lock().await;
                write_frame(&mut *w, &FromRunner::Ask { n, body }).await
            };
            if let Err(e) = sent {
                brine_common::sync::lock(&self.pending).remove(&n);
                tracing::warn!(error = %e, "salt-ssh channel closed");
                return Err(AskError::NotConnected);
            }
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) => Err(AskError::NotConnected),
                Err(_) => {
                    brine_common::sync::lock(&self.pending).remove(&n);
                    Err(AskError::Timeout(timeout))
                }
            }
        })
    }
}

/// Load the minion config a [`RunSpec`] describes.
fn config_of(spec: &RunSpec) -> Result<brine_common::config::MinionConfig, String> {
    let overrides: Vec<(&str, Value)> = spec
        .opts
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let cfg = brine_common::config::load_minion(std::path::Path::new(&spec.config_dir), &overrides)
        .map_err(|e| format!("minion options: {e}"))?;
    if let Some(k) = cfg.load_notes.unknown_keys().first() {
        return Err(format!("minion options: unknown option {k:?}"));
    }
    Ok(cfg)
}

fn done_error(msg: String) -> FromRunner {
    FromRunner::Done {
        ret: Value::String(format!("ERROR: {msg}")),
        retcode: 1,
        success: false,
        out: None,
    }
}

/// Serve one run over `input`/`output` (stdin/stdout in `salt-call
/// --ssh-stdio`). Returns the process exit code: 0 when `Done` was sent.
pub async fn serve<R, W>(mut input: R, output: W) -> i32
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let out: Out = Arc::new(tokio::sync::Mutex::new(Box::new(output)));
    let spec = match read_frame::<_, ToRunner>(&mut input, MAX_FRAME).await {
        Ok(Some(ToRunner::Run(spec))) => spec,
        Ok(Some(other)) => {
            eprintln!("salt-call --ssh-stdio: expected Run first, got {other:?}");
            return 2;
        }
        Ok(None) => {
            eprintln!("salt-call --ssh-stdio: no run request on stdin");
            return 2;
        }
        Err(e) => {
            eprintln!("salt-call --ssh-stdio: {e}");
            return 2;
        }
    };
    let done = match config_of(&spec) {
        Err(msg) => done_error(msg),
        Ok(cfg) => run_spec(spec, &cfg, out.clone(), input).await,
    };
    let mut w = out.lock().await;
    match write_frame(&mut *w, &done).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("salt-call --ssh-stdio: {e}");
            2
        }
    }
}

async fn run_spec<R>(
    spec: RunSpec,
    cfg: &brine_common::config::MinionConfig,
    out: Out,
    mut input: R,
) -> FromRunner
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let asker = Arc::new(ChannelAsk {
        out: out.clone(),
        pending: pending.clone(),
        next: AtomicU64::new(1),
    });
    // Answers come back in any order; a closed or broken channel drops
    // every waiting question (their senders go), so they fail at once.
    let reader = tokio::spawn(async move {
        // Bounded by the channel: ends at its end or on a bad frame.
        loop {
            match read_frame::<_, ToRunner>(&mut input, MAX_FRAME).await {
                Ok(Some(ToRunner::Answer { n, body })) => {
                    if let Some(tx) = brine_common::sync::lock(&pending).remove(&n) {
                        let _ = tx.send(body);
                    }
                }
                Ok(Some(ToRunner::Run(_))) => tracing::warn!("second Run ignored"),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "salt-ssh channel");
                    break;
                }
            }
        }
        brine_common::sync::lock(&pending).clear();
    });
    let fun = spec.fun.clone();
    let ctx = crate::call::local_ctx(
        cfg,
        spec.fun,
        spec.args,
        spec.kwargs,
        Some(asker as Arc<dyn Ask>),
    );
    let grains = brine_common::sync::read(&ctx.grains).clone();
    {
        let mut w = out.lock().await;
        if let Err(e) = write_frame(&mut *w, &FromRunner::Hello { grains }).await {
            reader.abort();
            return done_error(e.to_string());
        }
    }
    if fun.starts_with("pillar.") {
        // `pillar.get` and friends read the pillar in memory: fetch it.
        if let Err(e) = ctx.pillar.refresh().await {
            tracing::warn!(error = %e, "pillar not fetched");
        }
    }
    let o = Registry::new().call(ctx).await;
    reader.abort();
    FromRunner::Done {
        ret: o.ret,
        retcode: o.retcode,
        success: o.success,
        out: crate::exec::outputter(&fun).map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let msgs = vec![
            FromRunner::Hello {
                grains: json!({"id": "h1", "os": "Debian"}),
            },
            FromRunner::Ask {
                n: 7,
                body: RequestBody::Pillar { pillarenv: None },
            },
            FromRunner::Done {
                ret: json!({"x": [1, 2]}),
                retcode: 0,
                success: true,
                out: Some("highstate".into()),
            },
        ];
        for m in &msgs {
            write_frame(&mut a, m).await.expect("write");
        }
        drop(a);
        for m in &msgs {
            let got: FromRunner = read_frame(&mut b, MAX_FRAME)
                .await
                .expect("read")
                .expect("frame");
            assert_eq!(&got, m);
        }
        assert!(read_frame::<_, FromRunner>(&mut b, MAX_FRAME)
            .await
            .expect("eof")
            .is_none());
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&1000u32.to_be_bytes()).await.expect("w");
        let r = read_frame::<_, FromRunner>(&mut b, 10).await;
        assert!(matches!(r, Err(FrameError::Proto(_))), "{r:?}");
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&[0, 0]).await.expect("w");
        drop(a);
        let r = read_frame::<_, FromRunner>(&mut b, 10).await;
        assert!(matches!(r, Err(FrameError::Io(_))), "{r:?}");
    }

    /// A whole run over an in-memory channel: the runner says Hello,
    /// asks for its pillar (answered here), and returns it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_asks_through_the_channel() {
        let dir = tempfile::tempdir().expect("tmp");
        let (to_runner, runner_in) = tokio::io::duplex(1 << 20);
        let (runner_out, from_runner) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(serve(runner_in, runner_out));
        let (mut from_runner, mut to_runner) = (from_runner, to_runner);
        let mut opts = Map::new();
        opts.insert("id".into(), json!("h1"));
        opts.insert(
            "cachedir".into(),
            json!(dir.path().join("cache").display().to_string()),
        );
        write_frame(
            &mut to_runner,
            &ToRunner::Run(RunSpec {
                fun: "pillar.items".into(),
                args: vec![],
                kwargs: BTreeMap::new(),
                opts,
                config_dir: dir.path().display().to_string(),
            }),
        )
        .await
        .expect("run");
        let mut saw_hello = false;
        // A run is a handful of frames.
        for _ in 0..10 {
            let f: FromRunner = read_frame(&mut from_runner, MAX_FRAME)
                .await
                .expect("read")
                .expect("frame");
            match f {
                FromRunner::Hello { grains } => {
                    assert_eq!(grains["id"], json!("h1"));
                    saw_hello = true;
                }
                FromRunner::Ask { n, body } => {
                    assert!(matches!(body, RequestBody::Pillar { .. }), "{body:?}");
                    write_frame(
                        &mut to_runner,
                        &ToRunner::Answer {
                            n,
                            body: ReplyBody::Pillar(json!({"role": "web"})),
                        },
                    )
                    .await
                    .expect("answer");
                }
                FromRunner::Done { ret, success, .. } => {
                    assert!(success, "{ret}");
                    assert_eq!(ret, json!({"role": "web"}));
                    break;
                }
            }
        }
        assert!(saw_hello);
        assert_eq!(task.await.expect("join"), 0);
    }
}
