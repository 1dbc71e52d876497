//! ZeroMQ sockets on dedicated threads, bridged to tokio with channels.
//!
//! zmq sockets are not thread-safe, so each [`IoThread`] owns its sockets
//! for their whole life. Incoming multipart messages are delivered to a
//! tokio channel as `(socket index, frames)`; outgoing ones are handed over
//! through an inproc PUSH/PULL pair (the PUSH end is behind a mutex, so any
//! task may send) and written by the owning thread. A full outgoing pipe
//! (high-water mark) or an unroutable peer is a counted, logged drop, never
//! a silent one.
//!
//! A socket may also get a [`ConnGuard`]: the io thread shows it every
//! inbound message together with the TCP connection it came from (libzmq's
//! per-message source descriptor) and every connection that opens or
//! closes (a socket monitor), and closes the connections the guard names.
//! This is how a master bounds what an unauthenticated peer can make
//! libzmq keep for it (subscriptions on 4505, unfinished messages on 4506:
//! [`crate::unfinished`]): libzmq has no per-peer limit of its own, but it
//! frees everything a connection held when the connection ends. A guard may
//! also ask for a sweep each round (and name a descriptor whose readiness
//! wakes the thread for it) to close connections on what it measures
//! rather than on a message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Frames of one multipart message.
pub type Frames = Vec<Vec<u8>>;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("zmq: {0}")]
    Zmq(#[from] zmq::Error),
    #[error("io thread is gone")]
    Closed,
    #[error("could not start io thread: {0}")]
    Spawn(std::io::Error),
    #[error("could not set up a connection guard: {0}")]
    Guard(std::io::Error),
}

/// Counters every io thread keeps (exported on the daemons' stats).
#[derive(Debug, Default)]
pub struct IoStats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    /// Outgoing messages dropped because a pipe was full (HWM).
    pub dropped_hwm: AtomicU64,
    /// Outgoing messages dropped because the peer is unknown (ROUTER).
    pub dropped_unroutable: AtomicU64,
    /// Connections closed because a [`ConnGuard`] asked for it.
    pub peers_closed: AtomicU64,
}

/// What the io thread does with an inbound message a [`ConnGuard`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the tokio side as usual.
    Deliver,
    /// Drop it (the guard counted it).
    Drop,
    /// Drop it and close the TCP connection it came from.
    Disconnect,
}

/// Inspects, on the io thread, every message read from one socket.
pub trait ConnGuard: Send {
    /// `fd` is the TCP connection the message arrived on (None for
    /// messages libzmq makes up itself, such as the unsubscriptions an
    /// XPUB reports when a peer goes away).
    fn inspect(&mut self, fd: Option<i32>, frames: &[Vec<u8>]) -> Verdict;
    /// A connection was closed: forget what was kept for `fd`
    /// (descriptors are reused).
    fn forget(&mut self, fd: i32);
    /// A connection was accepted (by default: start afresh).
    fn accepted(&mut self, fd: i32) {
        self.forget(fd);
    }
    /// A descriptor the io thread should poll too: its readiness wakes the
    /// thread for [`ConnGuard::sweep`].
    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// Called once per round of the io thread, after the inbound messages
    /// were read; `drained` says the guarded socket had no complete
    /// message left. Returns the connections to close.
    fn sweep(&mut self, _drained: bool, _now: std::time::Instant) -> Vec<i32> {
        Vec::new()
    }
    /// How soon the guard wants the next [`ConnGuard::sweep`] (None: no
    /// sooner than the io thread's own timeout).
    fn next_wake(&self, _now: std::time::Instant) -> Option<std::time::Duration> {
        None
    }
}

/// A guard and the socket it watches.
pub struct Guarded {
    pub index: usize,
    pub guard: Box<dyn ConnGuard>,
}

/// Control index that asks the thread to stop.
const STOP: u8 = 255;

/// Handle to a thread owning zmq sockets. Dropping it stops the thread.
pub struct IoThread {
    push: Mutex<zmq::Socket>,
    pub stats: Arc<IoStats>,
    join: Option<std::thread::JoinHandle<()>>,
    name: String,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl IoThread {
    /// Start a thread owning `sockets`. Messages read from socket `i` arrive
    /// on the returned receiver as `(i, frames)`. Sockets listed in
    /// `write_only` (e.g. a PUB) are never polled for input.
    pub fn spawn(
        ctx: &zmq::Context,
        name: &str,
        sockets: Vec<zmq::Socket>,
        write_only: &[usize],
        queue: usize,
    ) -> Result<(Self, mpsc::Receiver<(usize, Frames)>), TransportError> {
        Self::spawn_guarded(ctx, name, sockets, write_only, queue, None)
    }

    /// [`IoThread::spawn`] with a [`ConnGuard`] on one (bound, tcp) socket.
    /// The guarded socket is read even when listed in `write_only`.
    pub fn spawn_guarded(
        ctx: &zmq::Context,
        name: &str,
        sockets: Vec<zmq::Socket>,
        write_only: &[usize],
        queue: usize,
        guard: Option<Guarded>,
    ) -> Result<(Self, mpsc::Receiver<(usize, Frames)>), TransportError> {
        let endpoint = format!(
            "inproc://brine-io-{}-{}",
            name,
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let pull = ctx.socket(zmq::PULL)?;
        pull.set_rcvhwm(0)?;
        pull.bind(&endpoint)?;
        let push = ctx.socket(zmq::PUSH)?;
        push.set_sndhwm(0)?;
        push.set_linger(0)?;
        push.connect(&endpoint)?;
        let watch = match guard {
            Some(g) => {
                let sock = sockets
                    .get(g.index)
                    .ok_or(TransportError::Zmq(zmq::Error::EINVAL))?;
                let mon_ep = format!("{endpoint}-monitor");
                sock.monitor(
                    &mon_ep,
                    (zmq::SocketEvent::ACCEPTED as i32) | (zmq::SocketEvent::DISCONNECTED as i32),
                )?;
                let mon = ctx.socket(zmq::PAIR)?;
                mon.set_linger(0)?;
                mon.connect(&mon_ep)?;
                Some(Watch {
                    index: g.index,
                    guard: g.guard,
                    monitor: mon,
                })
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel(queue.max(1));
        let stats = Arc::new(IoStats::default());
        let st = stats.clone();
        let write_only = write_only.to_vec();
        let tname = name.to_string();
        let join = std::thread::Builder::new()
            .name(format!("zmq-{name}"))
            .spawn(move || io_loop(&tname, sockets, &write_only, pull, tx, &st, watch))
            .map_err(TransportError::Spawn)?;
        Ok((
            Self {
                push: Mutex::new(push),
                stats,
                join: Some(join),
                name: name.to_string(),
            },
            rx,
        ))
    }

    /// Queue `frames` for socket `index`.
    pub fn send(&self, index: usize, frames: Frames) -> Result<(), TransportError> {
        let mut msg: Vec<Vec<u8>> = Vec::with_capacity(frames.len() + 1);
        msg.push(vec![index as u8]);
        msg.extend(frames);
        let push = self.push.lock().map_err(|_| TransportError::Closed)?;
        push.send_multipart(msg, 0)?;
        Ok(())
    }

    /// Stop the thread and wait for it (sockets close with their linger).
    pub fn stop(&mut self) {
        if let Some(j) = self.join.take() {
            if let Ok(push) = self.push.lock() {
                let _ = push.send(vec![STOP], 0);
            }
            if j.join().is_err() {
                warn!(thread = %self.name, "zmq io thread panicked");
            }
        }
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A guarded socket as the io thread keeps it.
struct Watch {
    index: usize,
    guard: Box<dyn ConnGuard>,
    /// PAIR end of the socket's monitor (accepted / disconnected events).
    monitor: zmq::Socket,
}

impl Watch {
    /// Reads pending monitor events; each names a descriptor to forget.
    fn drain_monitor(&mut self) {
        for _ in 0..10_000 {
            let Ok(frames) = self.monitor.recv_multipart(zmq::DONTWAIT) else {
                return;
            };
            // First frame: event (u16) then value (u32, here the fd), in
            // the host's byte order.
            if let Some(ev) = frames.first().filter(|f| f.len() >= 6) {
                let event = u16::from_ne_bytes([ev[0], ev[1]]);
                let fd = i32::from_ne_bytes([ev[2], ev[3], ev[4], ev[5]]);
                if event == zmq::SocketEvent::ACCEPTED as u16 {
                    self.guard.accepted(fd);
                } else {
                    self.guard.forget(fd);
                }
            }
        }
    }
}

/// Reads one multipart message, and the descriptor of the connection it
/// came from (libzmq's `__fd` message property).
fn recv_with_fd(sock: &zmq::Socket) -> Result<(Frames, Option<i32>), zmq::Error> {
    let mut frames = Vec::new();
    let mut fd = None;
    loop {
        let mut msg = sock.recv_msg(zmq::DONTWAIT)?;
        if fd.is_none() {
            fd = msg.gets("__fd").and_then(|v| v.parse::<i32>().ok());
        }
        let more = msg.get_more();
        frames.push(msg.to_vec());
        if !more {
            return Ok((frames, fd));
        }
    }
}

/// Closes one accepted connection of `sock` by its descriptor. Checks
/// first that the descriptor is still a tcp connection on the socket's own
/// port (a descriptor closed and reused meanwhile is left alone); libzmq
/// then sees the end of the stream and frees all the connection held.
fn close_connection(sock: &zmq::Socket, fd: i32) -> bool {
    use nix::sys::socket::{getsockname, shutdown, Shutdown, SockaddrStorage};
    let Some(port) = bound_port(sock) else {
        return false;
    };
    let local: Result<SockaddrStorage, _> = getsockname(fd);
    let same_port = local.ok().is_some_and(|a| {
        a.as_sockaddr_in().map(|v| v.port()) == Some(port)
            || a.as_sockaddr_in6().map(|v| v.port()) == Some(port)
    });
    same_port && shutdown(fd, Shutdown::Both).is_ok()
}

fn io_loop(
    name: &str,
    sockets: Vec<zmq::Socket>,
    write_only: &[usize],
    pull: zmq::Socket,
    tx: mpsc::Sender<(usize, Frames)>,
    stats: &IoStats,
    mut watch: Option<Watch>,
) {
    let guarded = watch.as_ref().map(|w| w.index);
    let readable: Vec<usize> = (0..sockets.len())
        .filter(|i| !write_only.contains(i) || guarded == Some(*i))
        .collect();
    loop {
        let mut items: Vec<zmq::PollItem> = Vec::with_capacity(readable.len() + 2);
        items.push(pull.as_poll_item(zmq::POLLIN));
        for &i in &readable {
            items.push(sockets[i].as_poll_item(zmq::POLLIN));
        }
        let mut timeout = 1000i64;
        if let Some(w) = &watch {
            items.push(w.monitor.as_poll_item(zmq::POLLIN));
            if let Some(fd) = w.guard.poll_fd() {
                items.push(zmq::PollItem::from_fd(fd, zmq::POLLIN));
            }
            if let Some(d) = w.guard.next_wake(std::time::Instant::now()) {
                timeout = timeout.min(i64::try_from(d.as_millis()).unwrap_or(timeout));
            }
        }
        if let Err(e) = zmq::poll(&mut items, timeout) {
            if e == zmq::Error::EINTR {
                continue;
            }
            warn!(thread = name, error = %e, "zmq poll failed; io thread stops");
            return;
        }
        let pull_ready = items[0].is_readable();
        let ready: Vec<usize> = readable
            .iter()
            .enumerate()
            .filter(|(k, _)| items[k + 1].is_readable())
            .map(|(_, &i)| i)
            .collect();
        let monitor_ready = watch.is_some() && items[readable.len() + 1].is_readable();
        drop(items);
        if monitor_ready {
            if let Some(w) = watch.as_mut() {
                w.drain_monitor();
            }
        }
        // Inbound: drain each ready socket (bounded per round so one noisy
        // socket cannot starve the outgoing side).
        let mut drained = guarded.is_some_and(|g| !ready.contains(&g));
        for i in ready {
            for _ in 0..10_000 {
                let got = match watch.as_mut().filter(|w| w.index == i) {
                    Some(w) => match recv_with_fd(&sockets[i]) {
                        Ok((frames, fd)) => match w.guard.inspect(fd, &frames) {
                            Verdict::Deliver if write_only.contains(&i) => continue,
                            Verdict::Deliver => Ok(frames),
                            Verdict::Drop => continue,
                            Verdict::Disconnect => {
                                // The monitor reports the end of the
                                // connection; the guard forgets it then.
                                if let Some(fd) = fd {
                                    if close_connection(&sockets[i], fd) {
                                        stats.peers_closed.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                continue;
                            }
                        },
                        Err(e) => Err(e),
                    },
                    None => sockets[i].recv_multipart(zmq::DONTWAIT),
                };
                match got {
                    Ok(frames) => {
                        stats.received.fetch_add(1, Ordering::Relaxed);
                        if tx.blocking_send((i, frames)).is_err() {
                            debug!(thread = name, "receiver gone; io thread stops");
                            return;
                        }
                    }
                    Err(zmq::Error::EAGAIN) => {
                        drained |= guarded == Some(i);
                        break;
                    }
                    Err(e) => {
                        warn!(thread = name, error = %e, "zmq recv failed");
                        break;
                    }
                }
            }
        }
        if let Some(w) = watch.as_mut() {
            for fd in w.guard.sweep(drained, std::time::Instant::now()) {
                if close_connection(&sockets[w.index], fd) {
                    stats.peers_closed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if pull_ready {
            for _ in 0..100_000 {
                let mut msg = match pull.recv_multipart(zmq::DONTWAIT) {
                    Ok(m) => m,
                    Err(_) => break,
                };
                let Some(idx) = msg.first().and_then(|f| f.first().copied()) else {
                    continue;
                };
                if idx == STOP {
                    return;
                }
                let Some(sock) = sockets.get(idx as usize) else {
                    continue;
                };
                msg.remove(0);
                match sock.send_multipart(msg, zmq::DONTWAIT) {
                    Ok(()) => {
                        stats.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(zmq::Error::EAGAIN) => count_drop(
                        &stats.dropped_hwm,
                        name,
                        "outgoing message dropped: pipe full (high-water mark)",
                    ),
                    Err(zmq::Error::EHOSTUNREACH) => count_drop(
                        &stats.dropped_unroutable,
                        name,
                        "outgoing message dropped: peer gone",
                    ),
                    Err(e) => warn!(thread = name, error = %e, "zmq send failed"),
                }
            }
        }
    }
}

/// Which end of the connections a socket is: it sets how often ZMTP
/// heartbeats go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Connects (a minion's or a syndic's SUB to the publish port): pings
    /// every 5 s and gives up on a silent master after 15 s.
    Client,
    /// Connects to a master's request port (the link's DEALER): sends no
    /// ZMTP heartbeats. libzmq 4.3.4 aborts the whole process when an
    /// engine whose inbound queue was full (the master's 4506 keeps 8
    /// requests per peer) and whose connection then failed is restarted
    /// with a PING still buffered (`out_event` asserts `!_io_error`;
    /// libzmq issue 4841): a syndic frozen for 20 s died this way as its
    /// minions reconnected. The link's own heartbeat finds a silent master
    /// and then opens a new connection.
    Request,
    /// Binds and serves many peers (a master's 4505/4506): pings every
    /// 60 s, only to reap connections whose host vanished. libzmq cancels
    /// a heartbeat timer by walking every timer of its io thread, once per
    /// heartbeat and connection: at 5 s that walk cost a syndic with 2500
    /// connections ~8% of its CPU. Dead minions are found by the
    /// application heartbeats (presence), not by these.
    Server,
}

/// Counts one dropped message; logs at the 1st, 2nd, 4th, 8th, ... drop.
fn count_drop(counter: &AtomicU64, thread: &str, what: &'static str) {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        warn!(thread, dropped = n, "{what}");
    }
}

/// Options every long-lived Brine socket gets.
pub fn tune(sock: &zmq::Socket, backlog: i32, hwm: i32, side: Side) -> Result<(), zmq::Error> {
    sock.set_linger(0)?;
    sock.set_backlog(backlog)?;
    sock.set_sndhwm(hwm)?;
    sock.set_rcvhwm(hwm)?;
    // ZMTP heartbeats find dead peers (TCP keepalive is a no-op in the
    // vendored libzmq build).
    let (ivl, timeout) = match side {
        Side::Client => (5_000, 15_000),
        Side::Server => (60_000, 180_000),
        Side::Request => (0, 0),
    };
    sock.set_heartbeat_ivl(ivl)?;
    sock.set_heartbeat_timeout(timeout)?;
    Ok(())
}

/// Client-side reconnect policy: start at `ivl_ms`, back off to `max_ms`
/// (libzmq doubles the interval; randomised starts are the caller's job).
pub fn tune_reconnect(sock: &zmq::Socket, ivl_ms: i32, max_ms: i32) -> Result<(), zmq::Error> {
    sock.set_reconnect_ivl(ivl_ms)?;
    sock.set_reconnect_ivl_max(max_ms)?;
    Ok(())
}

/// A tcp endpoint string for zmq (`tcp://host:port`, IPv6 in brackets).
pub fn tcp_endpoint(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("tcp://[{host}]:{port}")
    } else {
        format!("tcp://{host}:{port}")
    }
}

/// The port a zmq socket actually bound (for `:0` binds in tests).
pub fn bound_port(sock: &zmq::Socket) -> Option<u16> {
    let ep = sock.get_last_endpoint().ok()?.ok()?;
    ep.rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn router_dealer_round_trip_through_threads() {
        let ctx = zmq::Context::new();
        let router = ctx.socket(zmq::ROUTER).expect("router");
        router.set_router_mandatory(true).expect("mandatory");
        tune(&router, 100, 1000, Side::Server).expect("tune");
        router.bind("tcp://127.0.0.1:0").expect("bind");
        let port = bound_port(&router).expect("port");
        let dealer = ctx.socket(zmq::DEALER).expect("dealer");
        tune(&dealer, 100, 1000, Side::Client).expect("tune");
        dealer
            .connect(&tcp_endpoint("127.0.0.1", port))
            .expect("connect");
        let (srv, mut srv_rx) = IoThread::spawn(&ctx, "srv", vec![router], &[], 16).expect("srv");
        let (cli, mut cli_rx) = IoThread::spawn(&ctx, "cli", vec![dealer], &[], 16).expect("cli");
        cli.send(0, vec![b"hello".to_vec()]).expect("send");
        let (i, frames) = tokio::time::timeout(std::time::Duration::from_secs(5), srv_rx.recv())
            .await
            .expect("in time")
            .expect("frames");
        assert_eq!(i, 0);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1], b"hello");
        srv.send(0, vec![frames[0].clone(), b"world".to_vec()])
            .expect("reply");
        let (_, back) = tokio::time::timeout(std::time::Duration::from_secs(5), cli_rx.recv())
            .await
            .expect("in time")
            .expect("frames");
        assert_eq!(back, vec![b"world".to_vec()]);
        // An unknown peer is a counted drop, not an error or a hang.
        srv.send(0, vec![b"nobody".to_vec(), b"x".to_vec()])
            .expect("queued");
        for _ in 0..100 {
            if srv.stats.dropped_unroutable.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(srv.stats.dropped_unroutable.load(Ordering::Relaxed), 1);
    }
}
