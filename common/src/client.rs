//! The client side of the local client channel ([`crate::proto::client`]):
//! [`LocalClient`] connects to the master's unix socket with the token
//! from its `cachedir`, publishes jobs and streams their returns, runs
//! runner functions and asks for expected sets. Used by `salt`,
//! `salt-run`, `salt-key` and `loadtest`.
//!
//! Errors are a [`ClientError`]; [`ClientError::exit_code`] chooses the
//! command's exit code from the master's [`ClientErrorKind`], never from
//! the text.

use crate::exit;
use crate::proto::client::{
    read_frame, write_frame, ClientErrorKind, ClientEvent, ClientMsg, ClientReq, Expected,
    FrameError, PublishRequest, Published, SOCKET_NAME, TOKEN_FILE,
};
use crate::proto::{ReturnLoad, TargetType};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

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
    Proto(#[from] crate::codec::ProtoError),
    #[error("master refused: {message}")]
    Refused {
        kind: ClientErrorKind,
        message: String,
    },
    #[error("master sent an unexpected message")]
    Unexpected,
    #[error("master closed the connection")]
    Closed,
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => Self::Io(e),
            FrameError::Proto(e) => Self::Proto(e),
        }
    }
}

impl ClientError {
    /// The exit code of a command that failed with this error: a target
    /// or request the master refuses is a usage error (64); anything else
    /// means the master could not serve the client (69).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Refused {
                kind: ClientErrorKind::BadTarget | ClientErrorKind::BadRequest,
                ..
            } => exit::USAGE,
            _ => exit::UNAVAILABLE,
        }
    }

    /// The kind the master gave, when it refused.
    pub fn kind(&self) -> Option<ClientErrorKind> {
        match self {
            Self::Refused { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// An answer that is neither what was asked for nor a refusal.
fn unexpected(msg: Option<ClientMsg>) -> ClientError {
    match msg {
        Some(ClientMsg::Error { kind, message }) => ClientError::Refused { kind, message },
        Some(_) => ClientError::Unexpected,
        None => ClientError::Closed,
    }
}

/// One connection to the local master.
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
        match read_frame::<ClientMsg, _>(&mut stream).await? {
            Some(ClientMsg::Ready) => Ok(Self { stream }),
            other => Err(unexpected(other)),
        }
    }

    /// Send one request and read one answer.
    async fn ask(&mut self, req: &ClientReq) -> Result<Option<ClientMsg>, ClientError> {
        write_frame(&mut self.stream, req).await?;
        Ok(read_frame::<ClientMsg, _>(&mut self.stream).await?)
    }

    /// Publish; returns the expected set. Then call [`LocalClient::next_return`].
    pub async fn publish(&mut self, req: PublishRequest) -> Result<Published, ClientError> {
        match self.ask(&ClientReq::Publish(req)).await? {
            Some(ClientMsg::Published(p)) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// The next return of the published job (None: master went away);
    /// news that the job cache is failing are skipped (see
    /// [`LocalClient::next_event`]).
    pub async fn next_return(&mut self) -> Result<Option<ReturnLoad>, ClientError> {
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
        match read_frame::<ClientMsg, _>(&mut self.stream).await? {
            Some(ClientMsg::Return(r)) => Ok(Some(ClientEvent::Return(r))),
            Some(ClientMsg::JobCacheFailing(why)) => Ok(Some(ClientEvent::JobCacheFailing(why))),
            None => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Run a runner function on the master.
    pub async fn runner(
        &mut self,
        fun: &str,
        args: Vec<Value>,
        kwargs: BTreeMap<String, Value>,
    ) -> Result<Value, ClientError> {
        let req = ClientReq::Runner {
            fun: fun.to_string(),
            args,
            kwargs,
        };
        match self.ask(&req).await? {
            Some(ClientMsg::Runner(v)) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Tell the master that key states changed; `revoked` lose access now.
    pub async fn keys_changed(&mut self, revoked: Vec<String>) -> Result<(), ClientError> {
        match self.ask(&ClientReq::KeysChanged { revoked }).await? {
            Some(ClientMsg::Runner(_)) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The expected set of a target, without publishing: the minions it
    /// matches and the ids a list target names that the master does not
    /// know.
    pub async fn expected(
        &mut self,
        tgt: &str,
        tgt_type: TargetType,
        delimiter: &str,
    ) -> Result<(Vec<Expected>, Vec<String>), ClientError> {
        let req = ClientReq::Expected {
            tgt: tgt.to_string(),
            tgt_type,
            delimiter: delimiter.to_string(),
        };
        match self.ask(&req).await? {
            Some(ClientMsg::Expected { minions, missing }) => Ok((minions, missing)),
            other => Err(unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(kind: ClientErrorKind) -> ClientError {
        ClientError::Refused {
            kind,
            message: "no".into(),
        }
    }

    #[test]
    fn exit_code_follows_the_kind() {
        assert_eq!(refused(ClientErrorKind::BadTarget).exit_code(), exit::USAGE);
        assert_eq!(
            refused(ClientErrorKind::BadRequest).exit_code(),
            exit::USAGE
        );
        for kind in [
            ClientErrorKind::Unauthorized,
            ClientErrorKind::Unavailable,
            ClientErrorKind::Internal,
        ] {
            assert_eq!(refused(kind).exit_code(), exit::UNAVAILABLE, "{kind:?}");
        }
        assert_eq!(ClientError::Closed.exit_code(), exit::UNAVAILABLE);
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            ClientError::Connect {
                path: "x".into(),
                source: io
            }
            .exit_code(),
            exit::UNAVAILABLE
        );
    }

    #[test]
    fn a_refusal_is_shown_by_its_text() {
        let e = ClientError::Refused {
            kind: ClientErrorKind::BadTarget,
            message: "nodegroup 'x' is not defined".into(),
        };
        assert_eq!(
            e.to_string(),
            "master refused: nodegroup 'x' is not defined"
        );
        assert_eq!(e.kind(), Some(ClientErrorKind::BadTarget));
        assert_eq!(unexpected(None).kind(), None);
    }
}
