//! The local client channel: how `salt`, `salt-run` and `salt-key` talk to
//! their master.
//!
//! A unix socket `sock_dir/master.ipc` (mode 0600, in a 0700 directory)
//! carries length-prefixed msgpack frames. The first frame of every
//! connection must carry the token from `cachedir/.root_key` (mode 0400,
//! written at master start): only a user who can read that file (root or
//! the master's user) can publish jobs. A `Publish` streams the job's
//! returns back on the same connection until the client hangs up: each
//! return once the job cache has stored it, and `JobCacheFailing` when
//! one could not be stored. A client that stops reading costs the master
//! at most [`crate::daemon::WATCH_BYTES`] of queued returns: the rest wait
//! in the job cache and are sent from there once it has read the queue.

use crate::daemon::{JobEvent, MasterState, PublishRequest, Published};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Largest frame on the client channel.
const MAX_CLIENT_FRAME: usize = 64 * 1024 * 1024;

pub const SOCKET_NAME: &str = "master.ipc";
pub const TOKEN_FILE: &str = ".root_key";

#[derive(Debug, Serialize, Deserialize)]
pub enum ClientReq {
    Hello {
        token: String,
    },
    Publish(PublishRequest),
    Runner {
        fun: String,
        args: Vec<Value>,
        kwargs: BTreeMap<String, Value>,
    },
    /// salt-key changed key states; ids whose access must end now.
    KeysChanged {
        revoked: Vec<String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ClientMsg {
    Ready,
    Published(Published),
    Return(brine_common::proto::ReturnLoad),
    Runner(Value),
    Error(String),
    /// The master's job cache could not store a return of the job (why):
    /// its sender was not acknowledged and resends it; `salt` warns.
    JobCacheFailing(String),
}

/// What a client streaming a job's returns receives.
#[derive(Debug)]
pub enum ClientEvent {
    Return(brine_common::proto::ReturnLoad),
    JobCacheFailing(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the master at {path}: {source} (is salt-master running, and are you root?)"
    )]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the client token {path}: {source} (only root or the master's user may use salt)")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("master connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame from master: {0}")]
    Proto(#[from] brine_common::codec::ProtoError),
    #[error("master refused: {0}")]
    Refused(String),
    #[error("master closed the connection")]
    Closed,
}

async fn read_frame<T: for<'de> Deserialize<'de>>(
    s: &mut UnixStream,
) -> Result<Option<T>, ClientError> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_CLIENT_FRAME {
        return Err(brine_common::codec::ProtoError::TooLarge {
            size: n,
            max: MAX_CLIENT_FRAME,
        }
        .into());
    }
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    Ok(Some(brine_common::codec::decode(&buf, MAX_CLIENT_FRAME)?))
}

async fn write_frame<T: Serialize>(s: &mut UnixStream, v: &T) -> Result<(), ClientError> {
    s.write_all(&frame(v)?).await?;
    Ok(())
}

/// A value as one length-prefixed frame.
fn frame<T: Serialize>(v: &T) -> Result<Vec<u8>, ClientError> {
    let bytes = brine_common::codec::encode(v)?;
    let mut out = Vec::with_capacity(bytes.len() + 4);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    Ok(out)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Write a fresh token file and bind the socket; serve until shutdown.
pub async fn serve(state: Arc<MasterState>, shutdown: CancellationToken) {
    let token = hex::encode(brine_common::crypto::AesKey::random().as_bytes());
    let token_path = state.cfg.cachedir.join(TOKEN_FILE);
    if let Err(e) = write_token(&token_path, &token) {
        warn!(file = %token_path.display(), error = %e, "cannot write the client token; the CLIs will not work");
        return;
    }
    let sock_path = state.cfg.sock_dir.join(SOCKET_NAME);
    let _ = std::fs::remove_file(&sock_path);
    let listener = match UnixListener::bind(&sock_path) {
        Ok(l) => l,
        Err(e) => {
            warn!(socket = %sock_path.display(), error = %e, "cannot bind the client socket; the CLIs will not work");
            return;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600));
    }
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = listener.accept() => c,
        };
        match conn {
            Ok((stream, _)) => {
                let st = state.clone();
                let token = token.clone();
                let sd = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle_conn(st, stream, &token, sd).await {
                        debug!(error = %e, "client connection ended with an error");
                    }
                });
            }
            Err(e) => warn!(error = %e, "client accept failed"),
        }
    }
    let _ = std::fs::remove_file(&sock_path);
}

fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)?;
    f.write_all(token.as_bytes())
}

async fn handle_conn(
    state: Arc<MasterState>,
    mut s: UnixStream,
    token: &str,
    shutdown: CancellationToken,
) -> Result<(), ClientError> {
    match read_frame::<ClientReq>(&mut s).await? {
        Some(ClientReq::Hello { token: t }) if constant_time_eq(t.as_bytes(), token.as_bytes()) => {
            write_frame(&mut s, &ClientMsg::Ready).await?;
        }
        _ => {
            warn!("client with a wrong token refused");
            write_frame(&mut s, &ClientMsg::Error("wrong client token".into())).await?;
            return Ok(());
        }
    }
    while let Some(req) = read_frame::<ClientReq>(&mut s).await? {
        match req {
            ClientReq::Hello { .. } => {}
            ClientReq::Publish(p) => {
                let (published, rx) = match state.publish_async(p, true).await {
                    Ok(x) => x,
                    Err(e) => {
                        write_frame(&mut s, &ClientMsg::Error(e.to_string())).await?;
                        continue;
                    }
                };
                let jid = published.jid.clone();
                write_frame(&mut s, &ClientMsg::Published(published)).await?;
                let Some(rx) = rx else { continue };
                return stream_returns(&state, s, &jid, rx, &shutdown).await;
            }
            ClientReq::Runner { fun, args, kwargs } => {
                let msg = match crate::runner::run(&state, &fun, &args, &kwargs).await {
                    Ok(v) => ClientMsg::Runner(v),
                    Err(e) => ClientMsg::Error(e),
                };
                write_frame(&mut s, &msg).await?;
            }
            ClientReq::KeysChanged { revoked } => {
                if !revoked.is_empty() {
                    state.rotate_publish_key(&revoked);
                }
                write_frame(&mut s, &ClientMsg::Runner(Value::Bool(true))).await?;
            }
        }
    }
    Ok(())
}

/// Stream a job's returns to the client until it hangs up: the live ones
/// from the watcher's queue, then, whenever that queue is empty, those
/// left in the job cache while the client was not reading (one at a time,
/// so memory stays bounded however far behind it was).
async fn stream_returns(
    state: &Arc<MasterState>,
    s: UnixStream,
    jid: &str,
    mut rx: crate::daemon::JobReturns,
    shutdown: &CancellationToken,
) -> Result<(), ClientError> {
    let (mut rd, mut wr) = s.into_split();
    let mut probe = [0u8; 1];
    // Deferred returns are looked for at least this often (a return may be
    // deferred just as the queue empties).
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = rd.read(&mut probe) => {
                if matches!(r, Ok(0) | Err(_)) { return Ok(()); }
                continue;
            }
            ev = rx.rx.recv() => match ev {
                None => return Ok(()),
                Some(JobEvent::Return { ret, bytes }) => {
                    let out = frame(&ClientMsg::Return(ret));
                    rx.queue.sent(bytes);
                    Some(out?)
                }
                Some(JobEvent::CacheFailing(why)) => Some(frame(&ClientMsg::JobCacheFailing(why))?),
            },
            _ = tick.tick() => None,
        };
        if let Some(out) = msg {
            if wr.write_all(&out).await.is_err() {
                return Ok(());
            }
        }
        if !rx.rx.is_empty() {
            continue;
        }
        // Bounded by the job's minions: each id is deferred once.
        for id in rx.queue.take_deferred() {
            let st = state.clone();
            let (j, i) = (jid.to_string(), id.clone());
            let found = tokio::task::spawn_blocking(move || st.jobs.get_return(&j, &i)).await;
            let ret = match found {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => {
                    warn!(jid = %jid, minion = %id, "deferred return not in the job cache; not sent");
                    continue;
                }
                Ok(Err(e)) => {
                    warn!(jid = %jid, minion = %id, error = %e, "deferred return unreadable; not sent");
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "deferred return lookup failed");
                    continue;
                }
            };
            if wr
                .write_all(&frame(&ClientMsg::Return(ret))?)
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    }
}

/// The CLI side of the channel.
pub struct LocalClient {
    stream: UnixStream,
}

impl LocalClient {
    /// Connect to the master whose `sock_dir` and `cachedir` are given.
    pub async fn connect(sock_dir: &Path, cachedir: &Path) -> Result<Self, ClientError> {
        let token_path: PathBuf = cachedir.join(TOKEN_FILE);
        let token = std::fs::read_to_string(&token_path).map_err(|source| ClientError::Token {
            path: token_path.display().to_string(),
            source,
        })?;
        let sock = sock_dir.join(SOCKET_NAME);
        let mut stream =
            UnixStream::connect(&sock)
                .await
                .map_err(|source| ClientError::Connect {
                    path: sock.display().to_string(),
                    source,
                })?;
        write_frame(
            &mut stream,
            &ClientReq::Hello {
                token: token.trim().to_string(),
            },
        )
        .await?;
        match read_frame::<ClientMsg>(&mut stream).await? {
            Some(ClientMsg::Ready) => Ok(Self { stream }),
            Some(ClientMsg::Error(e)) => Err(ClientError::Refused(e)),
            _ => Err(ClientError::Closed),
        }
    }

    /// Publish; returns the expected set. Then call [`LocalClient::next_return`].
    pub async fn publish(&mut self, req: PublishRequest) -> Result<Published, ClientError> {
        write_frame(&mut self.stream, &ClientReq::Publish(req)).await?;
        match read_frame::<ClientMsg>(&mut self.stream).await? {
            Some(ClientMsg::Published(p)) => Ok(p),
            Some(ClientMsg::Error(e)) => Err(ClientError::Refused(e)),
            _ => Err(ClientError::Closed),
        }
    }

    /// The next return of the published job (None: master went away);
    /// news that the job cache is failing are skipped (see
    /// [`LocalClient::next_event`]).
    pub async fn next_return(
        &mut self,
    ) -> Result<Option<brine_common::proto::ReturnLoad>, ClientError> {
        // Each round reads one frame.
        loop {
            match self.next_event().await? {
                Some(ClientEvent::Return(r)) => return Ok(Some(r)),
                Some(ClientEvent::JobCacheFailing(_)) => {}
                None => return Ok(None),
            }
        }
    }

    /// The next return of the published job, or news that the master's
    /// job cache could not store one (None: master went away).
    pub async fn next_event(&mut self) -> Result<Option<ClientEvent>, ClientError> {
        match read_frame::<ClientMsg>(&mut self.stream).await? {
            Some(ClientMsg::Return(r)) => Ok(Some(ClientEvent::Return(r))),
            Some(ClientMsg::JobCacheFailing(why)) => Ok(Some(ClientEvent::JobCacheFailing(why))),
            Some(ClientMsg::Error(e)) => Err(ClientError::Refused(e)),
            Some(_) => Err(ClientError::Refused("unexpected message".into())),
            None => Ok(None),
        }
    }

    pub async fn runner(
        &mut self,
        fun: &str,
        args: Vec<Value>,
        kwargs: BTreeMap<String, Value>,
    ) -> Result<Value, ClientError> {
        write_frame(
            &mut self.stream,
            &ClientReq::Runner {
                fun: fun.to_string(),
                args,
                kwargs,
            },
        )
        .await?;
        match read_frame::<ClientMsg>(&mut self.stream).await? {
            Some(ClientMsg::Runner(v)) => Ok(v),
            Some(ClientMsg::Error(e)) => Err(ClientError::Refused(e)),
            _ => Err(ClientError::Closed),
        }
    }

    pub async fn keys_changed(&mut self, revoked: Vec<String>) -> Result<(), ClientError> {
        write_frame(&mut self.stream, &ClientReq::KeysChanged { revoked }).await?;
        match read_frame::<ClientMsg>(&mut self.stream).await? {
            Some(ClientMsg::Runner(_)) => Ok(()),
            Some(ClientMsg::Error(e)) => Err(ClientError::Refused(e)),
            _ => Err(ClientError::Closed),
        }
    }
}
