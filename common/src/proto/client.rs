//! The local client channel: the messages `salt`, `salt-run`, `salt-key`
//! and `loadtest` exchange with their master over a unix socket
//! (`sock_dir/`[`SOCKET_NAME`]), and their framing.
//!
//! Every frame is a 4-byte big-endian length and a msgpack body of at most
//! [`MAX_CLIENT_FRAME`] bytes; reading a frame never panics on hostile
//! bytes and refuses an oversized length before allocating. The first
//! frame of a connection is [`ClientReq::Hello`] with the token from
//! `cachedir/`[`TOKEN_FILE`]; the master answers [`ClientMsg::Ready`] or
//! [`ClientMsg::Error`]. A refusal carries a [`ClientErrorKind`], so a CLI
//! chooses its exit code from the kind and shows the text only to the
//! operator. The client side lives in [`crate::client`], the server side in
//! the master crate.

use super::{ReturnLoad, TargetType};
use crate::codec::{self, ProtoError};
use crate::jid::Jid;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame on the client channel.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024 * 1024;

/// The master's client socket, in its `sock_dir`.
pub const SOCKET_NAME: &str = "master.ipc";

/// The client token, in the master's `cachedir` (mode 0400).
pub const TOKEN_FILE: &str = ".root_key";

/// What to publish (from the CLI, the runner, `loadtest` or a syndic).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishRequest {
    pub tgt: String,
    pub tgt_type: TargetType,
    pub fun: String,
    pub arg: Vec<Value>,
    pub kwarg: BTreeMap<String, Value>,
    pub timeout: u64,
    pub user: String,
    pub delimiter: String,
    /// Stamp every hop (load test).
    pub trace: bool,
}

/// One expected minion of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    pub id: String,
    pub connected: bool,
    /// Nearest syndic first; empty for a direct minion.
    pub via: Vec<String>,
    /// Whether the nearest syndic on the path is connected itself (false
    /// for a direct minion): tells "the syndic is gone" apart from "the
    /// minion behind it is gone" when the minion does not return.
    #[serde(default)]
    pub syndic_connected: bool,
}

/// A job as published: its jid and exactly whom it expects.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    pub jid: Jid,
    pub minions: Vec<Expected>,
    /// Ids named by a list target that this master does not know.
    pub missing: Vec<String>,
}

/// A request from a client.
#[derive(Debug, Serialize, Deserialize)]
pub enum ClientReq {
    Hello {
        token: String,
    },
    /// Answered by [`ClientMsg::Published`], then the job's returns.
    Publish(PublishRequest),
    /// Answered by [`ClientMsg::Runner`].
    Runner {
        fun: String,
        args: Vec<Value>,
        kwargs: BTreeMap<String, Value>,
    },
    /// salt-key changed key states; ids whose access must end now.
    KeysChanged {
        revoked: Vec<String>,
    },
    /// The expected set of a target, without publishing anything (`salt
    /// --batch`); answered by [`ClientMsg::Expected`].
    Expected {
        tgt: String,
        tgt_type: TargetType,
        delimiter: String,
    },
}

/// Why the master refused a client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientErrorKind {
    /// The target does not parse (or names an unknown nodegroup).
    BadTarget,
    /// The request is malformed (bad arguments, unknown runner function).
    BadRequest,
    /// Wrong or missing client token.
    Unauthorized,
    /// The master cannot serve it now (publishing failed, shutting down).
    Unavailable,
    /// Something failed inside the master.
    Internal,
}

/// A message from the master.
#[derive(Debug, Serialize, Deserialize)]
pub enum ClientMsg {
    Ready,
    Published(Published),
    Return(ReturnLoad),
    Runner(Value),
    /// The expected set of a target (answers [`ClientReq::Expected`]).
    Expected {
        minions: Vec<Expected>,
        /// Ids a list target names that the master does not know.
        missing: Vec<String>,
    },
    Error {
        kind: ClientErrorKind,
        message: String,
    },
    /// The master's job cache could not store a return of the job (why):
    /// its sender was not acknowledged and resends it; `salt` warns.
    JobCacheFailing(String),
}

/// What a client streaming a job's returns receives.
#[derive(Debug)]
pub enum ClientEvent {
    Return(ReturnLoad),
    JobCacheFailing(String),
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Proto(#[from] ProtoError),
}

/// Read one frame; `None` when the peer closed the connection between
/// frames.
pub async fn read_frame<T, R>(s: &mut R) -> Result<Option<T>, FrameError>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_CLIENT_FRAME {
        return Err(ProtoError::TooLarge {
            size: n,
            max: MAX_CLIENT_FRAME,
        }
        .into());
    }
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    Ok(Some(codec::decode(&buf, MAX_CLIENT_FRAME)?))
}

/// Write one frame.
pub async fn write_frame<T, W>(s: &mut W, v: &T) -> Result<(), FrameError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    s.write_all(&frame(v)?).await?;
    Ok(())
}

/// A value as one length-prefixed frame.
pub fn frame<T: Serialize>(v: &T) -> Result<Vec<u8>, ProtoError> {
    let bytes = codec::encode(v)?;
    if bytes.len() > MAX_CLIENT_FRAME {
        return Err(ProtoError::TooLarge {
            size: bytes.len(),
            max: MAX_CLIENT_FRAME,
        });
    }
    let mut out = Vec::with_capacity(bytes.len() + 4);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let req = ClientReq::Expected {
            tgt: "web*".into(),
            tgt_type: TargetType::Glob,
            delimiter: ":".into(),
        };
        write_frame(&mut a, &req).await.expect("write");
        write_frame(
            &mut a,
            &ClientMsg::Error {
                kind: ClientErrorKind::BadTarget,
                message: "nodegroup 'x' is not defined".into(),
            },
        )
        .await
        .expect("write");
        drop(a);
        match read_frame::<ClientReq, _>(&mut b).await.expect("read") {
            Some(ClientReq::Expected {
                tgt,
                tgt_type,
                delimiter,
            }) => {
                assert_eq!(tgt, "web*");
                assert_eq!(tgt_type, TargetType::Glob);
                assert_eq!(delimiter, ":");
            }
            other => panic!("unexpected {other:?}"),
        }
        match read_frame::<ClientMsg, _>(&mut b).await.expect("read") {
            Some(ClientMsg::Error { kind, message }) => {
                assert_eq!(kind, ClientErrorKind::BadTarget);
                assert_eq!(message, "nodegroup 'x' is not defined");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            read_frame::<ClientMsg, _>(&mut b)
                .await
                .expect("eof")
                .is_none(),
            "a closed peer is the end, not an error"
        );
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_reading() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let len = (MAX_CLIENT_FRAME as u32 + 1).to_be_bytes();
        a.write_all(&len).await.expect("write");
        match read_frame::<ClientMsg, _>(&mut b).await {
            Err(FrameError::Proto(ProtoError::TooLarge { size, max })) => {
                assert_eq!(size, MAX_CLIENT_FRAME + 1);
                assert_eq!(max, MAX_CLIENT_FRAME);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1])
            .await
            .expect("write");
        assert!(matches!(
            read_frame::<ClientMsg, _>(&mut b).await,
            Err(FrameError::Proto(_))
        ));
    }
}
