//! How `salt-call` (without `--local`) reaches the master: through the
//! running minion daemon's authenticated link when there is one, else
//! over a link of its own, signed in with the minion's key as Salt's
//! `salt-call` does.
//!
//! The daemon serves a unix socket, `<sock_dir>/minion_call_<hash of
//! id>.ipc` (mode
//! 0600, its directory 0700: only the minion's user, who can read its
//! private key anyway), on which a local process sends [`CallAsk`] frames
//! (4-byte big-endian length + msgpack, as the salt-ssh channel) and gets
//! one [`CallReply`] each. Only the questions a function run makes are
//! relayed: the file server (`FileFind`, `FileChunk`, `FileList`,
//! `FilePush`), the minion's own `Pillar` and `Event`; anything else (a
//! return, a sign-in, a syndic request) is refused, so the socket cannot
//! speak for the minion beyond what its functions may. Going through the
//! daemon keeps one session per minion on the master: a second sign-in
//! with the same id would replace the daemon's session.
//!
//! Invariant: the server holds at most [`MAX_CLIENTS`] connections, reads
//! frames of at most [`MAX_FRAME`] bytes, and answers every frame it reads
//! (an answer, or why not) before reading the next.

use crate::files::{Ask, AskFuture};
use crate::ssh_run::{read_frame, write_frame, MAX_FRAME};
use brine_common::config::MinionConfig;
use brine_common::link::AskError;
use brine_common::proto::{ReplyBody, RequestBody};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Local processes served at once; more wait in the listen backlog.
pub const MAX_CLIENTS: usize = 32;
/// The longest a relayed question may wait for the master.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// One question for the master.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CallAsk {
    pub body: RequestBody,
    /// How long the asker waits, in milliseconds.
    pub timeout_ms: u64,
}

/// The master's answer, or why there is none.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum CallReply {
    Answer(ReplyBody),
    /// The daemon is not signed in (or the link stopped meanwhile).
    NotConnected,
    /// No answer within the asker's time.
    Timeout,
    /// Not a question this socket relays.
    Refused(String),
}

/// Where the daemon's call socket is: named after the minion id's hash
/// (as Salt names a minion's IPC files), so minions sharing a `sock_dir`
/// never take each other's.
pub fn socket_path(cfg: &MinionConfig) -> PathBuf {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(cfg.id.as_bytes()));
    cfg.sock_dir.join(format!("minion_call_{}.ipc", &h[..10]))
}

/// Whether `body` may be relayed for a local caller.
fn relayed(body: &RequestBody) -> bool {
    matches!(
        body,
        RequestBody::FileFind { .. }
            | RequestBody::FileChunk { .. }
            | RequestBody::FileList { .. }
            | RequestBody::FilePush(_)
            | RequestBody::Pillar { .. }
            | RequestBody::Event(_)
    )
}

/// Bind the call socket at `path` (a stale socket file there is replaced;
/// anything else there is an error) and serve it until `shutdown`.
pub fn serve(
    path: &Path,
    master: Arc<dyn Ask>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    info!(path = %path.display(), "salt-call socket ready");
    let path = path.to_path_buf();
    Ok(tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let conn = tokio::select! {
                _ = shutdown.cancelled() => break,
                c = listener.accept() => c,
            };
            match conn {
                Ok((stream, _)) => {
                    let (m, s) = (master.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        serve_one(stream, m, s).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "salt-call socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn serve_one(stream: UnixStream, master: Arc<dyn Ask>, shutdown: CancellationToken) {
    let (mut r, mut w) = stream.into_split();
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = read_frame::<_, CallAsk>(&mut r, MAX_FRAME) => f,
        };
        let ask = match frame {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "salt-call socket: bad frame; connection closed");
                return;
            }
        };
        let reply = if relayed(&ask.body) {
            let wait = Duration::from_millis(ask.timeout_ms).min(MAX_WAIT);
            match master.ask(ask.body, wait).await {
                Ok(r) => CallReply::Answer(r),
                Err(AskError::NotConnected) => CallReply::NotConnected,
                Err(AskError::Timeout(_)) => CallReply::Timeout,
            }
        } else {
            debug!("salt-call socket: request kind refused");
            CallReply::Refused("only file server, pillar and event questions are relayed".into())
        };
        if write_frame(&mut w, &reply).await.is_err() {
            return;
        }
    }
}

/// [`Ask`] through the daemon's call socket: one connection, one question
/// at a time (a function run asks in order).
pub struct DaemonAsk {
    conn: tokio::sync::Mutex<UnixStream>,
}

impl DaemonAsk {
    /// Connect to the daemon's socket at `path` (an error when no daemon
    /// serves it).
    pub async fn connect(path: &Path) -> std::io::Result<DaemonAsk> {
        let s = UnixStream::connect(path).await?;
        Ok(DaemonAsk {
            conn: tokio::sync::Mutex::new(s),
        })
    }
}

impl Ask for DaemonAsk {
    fn ask(&self, body: RequestBody, timeout: Duration) -> AskFuture<'_> {
        Box::pin(async move {
            let mut conn = self.conn.lock().await;
            let ask = CallAsk {
                body,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            };
            if write_frame(&mut *conn, &ask).await.is_err() {
                return Err(AskError::NotConnected);
            }
            // The daemon answers within `timeout` (plus the socket's own time).
            let got = tokio::time::timeout(
                timeout + Duration::from_secs(5),
                read_frame::<_, CallReply>(&mut *conn, MAX_FRAME),
            )
            .await;
            match got {
                Ok(Ok(Some(CallReply::Answer(r)))) => Ok(r),
                Ok(Ok(Some(CallReply::Timeout))) | Err(_) => Err(AskError::Timeout(timeout)),
                Ok(Ok(Some(CallReply::Refused(why)))) => {
                    warn!(why = %why, "the minion daemon refused a question");
                    Err(AskError::NotConnected)
                }
                Ok(Ok(Some(CallReply::NotConnected))) | Ok(Ok(None)) | Ok(Err(_)) => {
                    Err(AskError::NotConnected)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brine_common::proto::{EventLoad, Refusal};
    use std::sync::Mutex;

    /// Answers `Ok` to events and records what it was asked.
    #[derive(Default)]
    struct Master {
        asked: Mutex<Vec<RequestBody>>,
    }

    impl Ask for Master {
        fn ask(&self, body: RequestBody, _: Duration) -> AskFuture<'_> {
            Box::pin(async move {
                let reply = match &body {
                    RequestBody::Event(_) => ReplyBody::Ok,
                    _ => ReplyBody::Refused(Refusal::BadEvent("x".into())),
                };
                brine_common::sync::lock(&self.asked).push(body);
                Ok(reply)
            })
        }
    }

    #[tokio::test]
    async fn questions_go_through_and_others_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sock/minion_call.ipc");
        let master = Arc::new(Master::default());
        let stop = CancellationToken::new();
        let task = serve(&path, master.clone(), stop.clone()).expect("serve");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let ask = DaemonAsk::connect(&path).await.expect("connect");
        let ev = RequestBody::Event(EventLoad {
            tag: "myapp/x".into(),
            data: serde_json::json!({"a": 1}),
        });
        let r = ask.ask(ev.clone(), Duration::from_secs(5)).await;
        assert_eq!(r.expect("answer"), ReplyBody::Ok);
        // A return is not relayed: the master never sees it.
        let r = ask
            .ask(RequestBody::Heartbeat, Duration::from_secs(5))
            .await;
        assert!(matches!(r, Err(AskError::NotConnected)), "{r:?}");
        // The connection is still usable afterwards.
        assert_eq!(
            ask.ask(ev.clone(), Duration::from_secs(5))
                .await
                .expect("answer"),
            ReplyBody::Ok
        );
        assert_eq!(
            *brine_common::sync::lock(&master.asked),
            vec![ev.clone(), ev]
        );

        // A second server replaces the stale socket; a regular file is kept.
        stop.cancel();
        task.await.expect("stopped");
        assert!(!path.exists(), "socket removed on shutdown");
        std::fs::write(&path, "x").expect("file");
        let e = serve(&path, master, CancellationToken::new()).expect_err("not a socket");
        assert!(e.to_string().contains("not a socket"), "{e}");
    }
}
