//! `loadtest raw-relay`: the baseline's syndic stand-in.
//!
//! Upward it is a SUB + DEALER client of its parent (the top or a relay of
//! the tier above); downward it binds PUB + ROUTER on its own loopback
//! address. Every publish is re-published with the relay's receive time
//! appended, and every return is forwarded up (routing id dropped) with
//! its receive time appended. Invariant: it forwards everything and
//! changes nothing else, so its cost is the pure cost of a zmq hop.

use super::wire::{self, Down};
use super::{now_ns, ts_frame, RawError};
use crate::workers::{emit, ChildEvent};
use std::time::{Duration, Instant};

/// Settings of one relay process.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// The parent's PUB endpoint.
    #[arg(long)]
    pub up_pub: String,
    /// The parent's ROUTER endpoint.
    #[arg(long)]
    pub up_ret: String,
    /// Loopback address of this relay (127.0.T.x).
    #[arg(long)]
    pub bind: String,
    #[arg(long, default_value_t = 4505)]
    pub pub_port: u16,
    #[arg(long, default_value_t = 4506)]
    pub ret_port: u16,
    /// Exit after this long even without a stop message.
    #[arg(long, default_value_t = 3600)]
    pub max_secs: u64,
}

/// Runs the relay until it forwards a stop (or `max_secs` pass).
pub fn run(args: &RelayArgs) -> Result<(), RawError> {
    super::check_loopback(&args.bind)?;
    let ctx = zmq::Context::new();
    let down_pub = ctx.socket(zmq::PUB)?;
    down_pub.set_linger(1000)?;
    down_pub.set_sndhwm(super::BIG_HWM)?;
    down_pub.set_backlog(super::BACKLOG)?;
    down_pub.bind(&super::bind_endpoint(&args.bind, args.pub_port))?;
    let down_router = ctx.socket(zmq::ROUTER)?;
    down_router.set_linger(0)?;
    down_router.set_rcvhwm(super::BIG_HWM)?;
    down_router.set_backlog(super::BACKLOG)?;
    down_router.bind(&super::bind_endpoint(&args.bind, args.ret_port))?;
    let up_sub = ctx.socket(zmq::SUB)?;
    up_sub.set_linger(0)?;
    up_sub.set_rcvhwm(super::BIG_HWM)?;
    up_sub.set_subscribe(b"")?;
    up_sub.connect(&args.up_pub)?;
    let up_dealer = ctx.socket(zmq::DEALER)?;
    up_dealer.set_linger(1000)?;
    up_dealer.set_sndhwm(super::BIG_HWM)?;
    up_dealer.connect(&args.up_ret)?;
    emit(&ChildEvent::Ready {
        pub_endpoint: super::last_endpoint(&down_pub)?,
        ret_endpoint: super::last_endpoint(&down_router)?,
    })?;

    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let (mut down, mut up) = (0u64, 0u64);
    let mut stop_at: Option<Instant> = None;
    while Instant::now() < deadline {
        if stop_at.is_some_and(|t| Instant::now() > t) {
            break;
        }
        let mut items = [
            up_sub.as_poll_item(zmq::POLLIN),
            down_router.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, 100)?;
        for _ in 0..100_000 {
            let mut frames = match up_sub.recv_multipart(zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => return Err(e.into()),
            };
            let is_stop = frames
                .first()
                .is_some_and(|f| matches!(wire::decode::<Down>(f), Ok(Down::Stop)));
            frames.push(ts_frame(now_ns()));
            down_pub.send_multipart(frames, 0)?;
            down += 1;
            if is_stop && stop_at.is_none() {
                // Keep forwarding late returns for a moment, then exit.
                stop_at = Some(Instant::now() + Duration::from_millis(500));
            }
        }
        for _ in 0..100_000 {
            let mut frames = match down_router.recv_multipart(zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => return Err(e.into()),
            };
            if frames.len() < 2 {
                continue;
            }
            frames.remove(0);
            frames.push(ts_frame(now_ns()));
            up_dealer.send_multipart(frames, 0)?;
            up += 1;
        }
    }
    emit(&ChildEvent::RelayResult {
        forwarded_down: down,
        forwarded_up: up,
    })?;
    Ok(())
}
