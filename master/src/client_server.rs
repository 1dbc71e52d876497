//! The master's side of the local client channel (messages and framing
//! in `brine_common::proto::client`, the CLIs' side in
//! `brine_common::client`).
//!
//! A unix socket `sock_dir/master.ipc` (mode 0600, in a 0700 directory)
//! carries length-prefixed msgpack frames. The first frame of every
//! connection must carry the token from `cachedir/.root_key` (mode 0400,
//! written at master start): only a user who can read that file (root or
//! the master's user) can publish jobs. A `Publish` streams the job's
//! returns back on the same connection until the client hangs up: each
//! return once the job cache has stored it, and `JobCacheFailing` when
//! one could not be stored. A client that stops reading costs the master
//! at most [`crate::state::WATCH_BYTES`] of queued returns: the rest wait
//! in the job cache and are sent from there once it has read the queue.

use crate::state::{JobError, JobEvent, JobReturns, MasterState, WatchQueue};
use brine_common::jid::Jid;
use brine_common::proto::client::{
    frame, read_frame, write_frame, ClientErrorKind, ClientMsg, ClientReq, FrameError, SOCKET_NAME,
    TOKEN_FILE,
};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// A refusal on the client channel.
fn refusal(kind: ClientErrorKind, message: impl Into<String>) -> ClientMsg {
    ClientMsg::Error {
        kind,
        message: message.into(),
    }
}

/// How a failed publish (or expected-set lookup) is told to the client.
fn job_refusal(e: &JobError) -> ClientMsg {
    let kind = match e {
        JobError::Target(_) => ClientErrorKind::BadTarget,
        JobError::Publish(_) => ClientErrorKind::Unavailable,
        JobError::Task(_) => ClientErrorKind::Internal,
    };
    refusal(kind, e.to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Write a fresh token file and bind the socket; serve until shutdown.
pub async fn serve(state: Arc<MasterState>, shutdown: CancellationToken) {
    let token = hex::encode(brine_common::crypto::AesKey::random().as_bytes());
    let token_path = state.cfg().cachedir.join(TOKEN_FILE);
    if let Err(e) = write_token(&token_path, &token) {
        warn!(file = %token_path.display(), error = %e, "cannot write the client token; the CLIs will not work");
        return;
    }
    let sock_path = state.cfg().sock_dir.join(SOCKET_NAME);
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
) -> Result<(), FrameError> {
    match read_frame::<ClientReq, _>(&mut s).await? {
        Some(ClientReq::Hello { token: t }) if constant_time_eq(t.as_bytes(), token.as_bytes()) => {
            write_frame(&mut s, &ClientMsg::Ready).await?;
        }
        _ => {
            warn!("client with a wrong token refused");
            write_frame(
                &mut s,
                &refusal(ClientErrorKind::Unauthorized, "wrong client token"),
            )
            .await?;
            return Ok(());
        }
    }
    while let Some(req) = read_frame::<ClientReq, _>(&mut s).await? {
        match req {
            ClientReq::Hello { .. } => {}
            ClientReq::Publish(p) => {
                // The target is parsed once, here, and carried onward.
                let target = match state.parse_target(&p.tgt, p.tgt_type, &p.delimiter) {
                    Ok(t) => t,
                    Err(e) => {
                        write_frame(&mut s, &job_refusal(&e)).await?;
                        continue;
                    }
                };
                if target.uses_pillar() {
                    crate::pillar::fill_missing(&state).await;
                }
                let (published, rx) = match state.publish_async(p, target, true).await {
                    Ok(x) => x,
                    Err(e) => {
                        write_frame(&mut s, &job_refusal(&e)).await?;
                        continue;
                    }
                };
                let jid = published.jid.clone();
                write_frame(&mut s, &ClientMsg::Published(published)).await?;
                let Some(rx) = rx else { continue };
                return stream_returns(&state, s, &jid, rx, &shutdown).await;
            }
            ClientReq::Runner { fun, args, kwargs } if fun == crate::runner::STATE_EVENT => {
                return stream_events(&state, s, &args, &kwargs, &shutdown).await;
            }
            ClientReq::Runner { fun, args, kwargs } => {
                let msg = match crate::runner::run(&state, &fun, &args, &kwargs).await {
                    Ok(v) => ClientMsg::Runner(v),
                    Err(e) => refusal(e.kind(), e.to_string()),
                };
                write_frame(&mut s, &msg).await?;
            }
            ClientReq::KeysChanged { revoked } => {
                if !revoked.is_empty() {
                    state.rotate_publish_key(&revoked);
                }
                crate::events::fire_key_changes(state.events(), state.keys());
                write_frame(&mut s, &ClientMsg::Runner(Value::Bool(true))).await?;
            }
            ClientReq::Expected {
                tgt,
                tgt_type,
                delimiter,
            } => {
                let msg = match state.parse_target(&tgt, tgt_type, &delimiter) {
                    Ok(t) => {
                        if t.uses_pillar() {
                            crate::pillar::fill_missing(&state).await;
                        }
                        let (minions, missing) = state.expected(&t, &delimiter);
                        ClientMsg::Expected { minions, missing }
                    }
                    Err(e) => job_refusal(&e),
                };
                write_frame(&mut s, &msg).await?;
            }
        }
    }
    Ok(())
}

/// `salt-run state.event`: subscribe to the bus with the call's `tagmatch`
/// (default `*`) and send each matching event as a `Runner` frame
/// `{"tag", "data"}` until `count` of them were sent (when `count` > 0),
/// the client hangs up or the master stops. A `Ready` frame first says the
/// subscription is in place. The queue is the bus's bounded one: a client
/// that does not read loses events (counted `events_dropped`).
async fn stream_events(
    state: &Arc<MasterState>,
    s: UnixStream,
    args: &[Value],
    kwargs: &std::collections::BTreeMap<String, Value>,
    shutdown: &CancellationToken,
) -> Result<(), FrameError> {
    let (mut rd, mut wr) = s.into_split();
    let opts = crate::runner::EventArgs::of(args, kwargs);
    let mut sub = match state
        .events()
        .subscribe(&opts.tagmatch, crate::events::SUBSCRIBER_QUEUE)
    {
        Ok(sub) => sub,
        Err(e) => {
            return write_frame(
                &mut wr,
                &refusal(ClientErrorKind::Unavailable, e.to_string()),
            )
            .await;
        }
    };
    write_frame(&mut wr, &ClientMsg::Ready).await?;
    let mut probe = [0u8; 1];
    let mut sent: u64 = 0;
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = rd.read(&mut probe) => {
                if matches!(r, Ok(0) | Err(_)) { return Ok(()); }
                continue;
            }
            ev = sub.rx.recv() => match ev {
                Some(ev) => ev,
                None => return Ok(()),
            },
        };
        let v = serde_json::json!({"tag": ev.tag, "data": ev.data});
        if wr.write_all(&frame(&ClientMsg::Runner(v))?).await.is_err() {
            return Ok(());
        }
        sent += 1;
        if opts.count > 0 && sent >= opts.count {
            return Ok(());
        }
    }
}

/// Frames of returns written to a `salt` client in one write, at most
/// (plus one frame).
const STREAM_WRITE_BYTES: usize = 256 * 1024;

/// Append the frame of one job event to `out`.
fn push_event(out: &mut Vec<u8>, ev: JobEvent, queue: &WatchQueue) -> Result<(), FrameError> {
    match ev {
        JobEvent::Return { ret, bytes } => {
            out.extend_from_slice(&frame(&ClientMsg::Return(ret))?);
            queue.sent(bytes);
        }
        JobEvent::CacheFailing(why) => {
            out.extend_from_slice(&frame(&ClientMsg::JobCacheFailing(why))?);
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
    jid: &Jid,
    mut rx: JobReturns,
    shutdown: &CancellationToken,
) -> Result<(), FrameError> {
    let (mut rd, mut wr) = s.into_split();
    let mut probe = [0u8; 1];
    // Deferred returns are looked for at least this often (a return may be
    // deferred just as the queue empties).
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut out: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = rd.read(&mut probe) => {
                if matches!(r, Ok(0) | Err(_)) { return Ok(()); }
                continue;
            }
            ev = rx.rx.recv() => {
                let Some(ev) = ev else { return Ok(()) };
                push_event(&mut out, ev, &rx.queue)?;
                // Whatever else is queued goes in the same write (one
                // write per return was 6.5% of the top's CPU at 1000
                // minions).
                while out.len() < STREAM_WRITE_BYTES {
                    let Ok(ev) = rx.rx.try_recv() else { break };
                    push_event(&mut out, ev, &rx.queue)?;
                }
            }
            _ = tick.tick() => {}
        }
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                return Ok(());
            }
            out.clear();
            out.shrink_to(STREAM_WRITE_BYTES);
        }
        if !rx.rx.is_empty() {
            continue;
        }
        // Bounded by the job's minions: each id is deferred once.
        for id in rx.queue.take_deferred() {
            let st = state.clone();
            let (j, i) = (jid.clone(), id.clone());
            let found = tokio::task::spawn_blocking(move || st.jobs().get_return(&j, &i)).await;
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
