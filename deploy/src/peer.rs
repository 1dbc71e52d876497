//! A protocol peer driven by hand, for tests that must send what a real
//! minion or syndic never would (forged returns, replays, returns for
//! minions outside a subtree). It speaks through the same
//! [`ClientSession`] as the real link, over one blocking DEALER socket.

use anyhow::{bail, Context, Result};
use brine_common::codec;
use brine_common::crypto::KeyPair;
use brine_common::proto::{ReplyBody, RequestBody, Role};
use brine_common::session::{ClientSession, ServerMsg, SignInOutcome};
use std::sync::Arc;

pub struct HandPeer {
    pub sock: zmq::Socket,
    pub session: ClientSession,
    /// The signed frame of the last sign-in's second round.
    pub last_auth: Vec<u8>,
}

impl HandPeer {
    /// Connect to `addr:4506` as `id` with a fresh key.
    pub fn new(ctx: &zmq::Context, addr: &str, id: &str, role: Role) -> Result<HandPeer> {
        let sock = ctx.socket(zmq::DEALER)?;
        sock.set_linger(0)?;
        sock.set_rcvtimeo(10_000)?;
        sock.connect(&format!("tcp://{addr}:4506"))?;
        let keys = Arc::new(KeyPair::generate()?);
        let session = ClientSession::new(id, role, keys, None, None, codec::DEFAULT_MAX_FRAME);
        Ok(HandPeer {
            sock,
            session,
            last_auth: Vec::new(),
        })
    }

    /// The next message from the master (10 s at most).
    pub fn recv(&self) -> Result<ServerMsg> {
        let frame = self.sock.recv_bytes(0).context("no answer in time")?;
        Ok(self.session.open_reply(&frame)?)
    }

    /// Sign in (both rounds); fails unless the master accepts. The signed
    /// second-round frame is kept in `last_auth` (to replay it in tests).
    pub fn sign_in(&mut self) -> Result<()> {
        let f = self.session.auth_frame()?;
        self.sock.send(f, 0)?;
        let ServerMsg::Challenge { nonce, challenge } = self.recv()? else {
            bail!("no sign-in challenge")
        };
        let f = self.session.answer_challenge(&nonce, challenge)?;
        self.last_auth = f.clone();
        self.sock.send(f, 0)?;
        let ServerMsg::AuthReply(r) = self.recv()? else {
            bail!("no sign-in answer")
        };
        match self.session.handle_auth_reply(&r)? {
            SignInOutcome::Accepted { .. } => Ok(()),
            other => bail!("sign-in not accepted: {other:?}"),
        }
    }

    /// Send a sealed request; returns the frame sent and the answer.
    pub fn request_raw(&mut self, body: RequestBody) -> Result<(Vec<u8>, ServerMsg)> {
        let (_, f) = self.session.seal(body)?;
        self.sock.send(f.clone(), 0)?;
        Ok((f, self.recv()?))
    }

    /// Send a sealed request; returns the master's reply body.
    pub fn request(&mut self, body: RequestBody) -> Result<ReplyBody> {
        match self.request_raw(body)?.1 {
            ServerMsg::Reply(r) => Ok(r.body),
            other => bail!("unexpected answer {other:?}"),
        }
    }
}
