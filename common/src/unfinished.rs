//! A bound on what one peer's unfinished message makes libzmq hold.
//!
//! libzmq counts a message against its receive high-water mark only once
//! the last frame arrives: the frames of a multipart message that is never
//! finished stay inside libzmq, invisible to the application, however many
//! there are (each is at most `maxmsgsize`). [`UnfinishedGuard`], a
//! [`ConnGuard`] for a bound ROUTER whose peers send one-frame requests,
//! measures per accepted TCP connection how many bytes libzmq took off the
//! wire without delivering them as complete messages:
//!
//! held = bytes received (`TCP_INFO` `tcpi_bytes_received`) − bytes still
//! in the kernel's receive queue (`FIONREAD`) − wire bytes of the complete
//! messages the io thread received from that connection − an allowance for
//! the ZMTP greeting and the client's heartbeats (by connection age).
//!
//! A legitimate peer holds at most one frame in progress, so a connection
//! seen holding more than [`UnfinishedGuard::limit`] twice in a row (or
//! twice the limit once) is closed, which frees all libzmq kept for it.
//! Connections are looked at only after traffic (an edge of their own
//! in an epoll set), at most once per [`PROBE_INTERVAL`] each (a strike is
//! confirmed at once, in the next round of the io thread), and each
//! measurement is judged only after the io thread drained the socket, so
//! complete messages still in libzmq's queue are not taken for held ones.
//! Linux only (`TCP_INFO`); see docs/SECURITY.md.

use crate::transport::{ConnGuard, Guarded, TransportError, Verdict};
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;

/// Shortest time between two measurements of one connection. At loopback
/// speed a peer moves ~1 GiB/s, so this, not the limit, sets how far past
/// the limit a flood gets before it is seen (~10 MiB).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// Room above one full frame: what libzmq reads ahead of the message it is
/// decoding (one 8 KiB batch) and the error of the heartbeat allowance.
pub const SLACK: u64 = 64 * 1024;

/// The ZMTP 3 greeting (64 bytes) and READY command (socket type and an
/// identity of up to 255 bytes) a peer sends before any message.
pub const HANDSHAKE_ALLOWANCE: u64 = 1024;

/// Heartbeat bytes allowed per second of connection age, in bytes per
/// 1000 s: a Brine client sends a 9-byte PING every 5 s (1.8 B/s) and a
/// 7-byte PONG to the master's PING every 60 s (0.12 B/s); 2.5 B/s leaves
/// room for timer jitter. The excess (~0.6 B/s, 50 KiB a day) is the
/// estimate's drift in the peer's favour.
pub const HEARTBEAT_BYTES_PER_KILOSECOND: u64 = 2500;

/// Bytes one frame of `len` bytes takes on the wire (ZMTP 3: flags and a
/// one-byte size below 256 bytes, an eight-byte size from there on).
pub fn wire_size(len: usize) -> u64 {
    len as u64 + if len < 256 { 2 } else { 9 }
}

/// Wire bytes of a message a ROUTER delivered: its first frame is the
/// routing id libzmq made up, never sent by the peer.
pub fn message_wire_size(frames: &[Vec<u8>]) -> u64 {
    frames.iter().skip(1).map(|f| wire_size(f.len())).sum()
}

/// What a connection may have sent besides its messages after `age`.
pub fn allowance(age: Duration) -> u64 {
    let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
    HANDSHAKE_ALLOWANCE
        .saturating_add(ms.saturating_mul(HEARTBEAT_BYTES_PER_KILOSECOND) / 1_000_000)
}

/// Bytes libzmq took off the wire without delivering them as complete
/// messages (see the module doc); never below zero.
pub fn held(received: u64, queued: u64, delivered: u64, age: Duration) -> u64 {
    received
        .saturating_sub(queued)
        .saturating_sub(delivered)
        .saturating_sub(allowance(age))
}

/// The outcome of judging one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Within the limit: strikes start over.
    Clean,
    /// Over the limit for the `n`th time in a row (not yet closed).
    Strike(u8),
    /// Close the connection.
    Close,
}

/// The two-strikes rule: over `limit` twice in a row, or over twice the
/// limit once (more than a legitimate peer can hold even when libzmq was
/// between reading a whole frame and queueing it).
pub fn judge(held: u64, limit: u64, strikes: u8) -> Judgement {
    if held > limit.saturating_mul(2) {
        Judgement::Close
    } else if held > limit {
        if strikes >= 1 {
            Judgement::Close
        } else {
            Judgement::Strike(strikes + 1)
        }
    } else {
        Judgement::Clean
    }
}

/// Reads a TCP connection's counters.
pub trait Probe: Send {
    /// `(bytes received, bytes still queued in the kernel)` of `fd`, or
    /// None if it is not (or no longer) a TCP socket. When
    /// `clean(received)` says the connection is within the limit even if
    /// nothing were still queued, the queue need not be read (0 is
    /// returned for it): the common case costs one system call.
    fn read_off(&mut self, fd: RawFd, clean: &dyn Fn(u64) -> bool) -> Option<(u64, u64)>;
}

/// The kernel's view of a TCP connection (`TCP_INFO`, `FIONREAD`).
#[derive(Debug, Default)]
pub struct TcpProbe;

impl Probe for TcpProbe {
    fn read_off(&mut self, fd: RawFd, clean: &dyn Fn(u64) -> bool) -> Option<(u64, u64)> {
        tcp_read_off(fd, clean)
    }
}

/// `tcpi_bytes_received` and, unless `clean` says that count alone is
/// enough, the unread bytes of the receive queue of `fd`.
fn tcp_read_off(fd: RawFd, clean: &dyn Fn(u64) -> bool) -> Option<(u64, u64)> {
    let received = brine_sys::tcp_bytes_received(fd)?;
    if clean(received) {
        return Some((received, 0));
    }
    Some((received, brine_sys::unread_bytes(fd)?))
}

/// One epoll set over the guarded connections, edge-triggered: a
/// connection becomes ready when new bytes arrive (however many arrivals
/// between two looks, one event), so idle connections cost nothing and no
/// system call re-arms the watch after each look.
pub struct Activity {
    epoll: nix::sys::epoll::Epoll,
}

impl Activity {
    pub fn new() -> Result<Self, std::io::Error> {
        use nix::sys::epoll::{Epoll, EpollCreateFlags};
        Ok(Self {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        })
    }

    fn event(fd: RawFd) -> nix::sys::epoll::EpollEvent {
        use nix::sys::epoll::{EpollEvent, EpollFlags};
        EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLET,
            u64::try_from(fd).unwrap_or(0),
        )
    }

    /// Watch `fd` for its bytes (once, when it is accepted).
    // nix's `Epoll::add` wants a borrowed descriptor, which only `unsafe`
    // makes from one libzmq owns; the raw-descriptor form is deprecated.
    #[allow(deprecated)]
    fn arm(&self, fd: RawFd) {
        use nix::sys::epoll::{epoll_ctl, EpollOp};
        let ep = self.epoll.0.as_raw_fd();
        let mut ev = Self::event(fd);
        if epoll_ctl(ep, EpollOp::EpollCtlMod, fd, &mut ev).is_err() {
            let mut ev = Self::event(fd);
            let _ = epoll_ctl(ep, EpollOp::EpollCtlAdd, fd, &mut ev);
        }
    }

    #[allow(deprecated)]
    fn disarm(&self, fd: RawFd) {
        use nix::sys::epoll::{epoll_ctl, EpollOp};
        let _ = epoll_ctl(self.epoll.0.as_raw_fd(), EpollOp::EpollCtlDel, fd, None);
    }

    /// Descriptors that received bytes since they were last armed.
    fn ready(&self, out: &mut Vec<RawFd>) {
        use nix::sys::epoll::{EpollEvent, EpollTimeout};
        let mut events = [EpollEvent::empty(); 256];
        for _ in 0..64 {
            let n = match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) => n,
                Err(_) => return,
            };
            out.extend(
                events[..n]
                    .iter()
                    .filter_map(|e| RawFd::try_from(e.data()).ok()),
            );
            if n < events.len() {
                return;
            }
        }
    }

    fn raw_fd(&self) -> RawFd {
        self.epoll.0.as_raw_fd()
    }
}

/// What the guard keeps per accepted connection.
#[derive(Debug)]
struct Conn {
    /// When the connection was accepted (sets the heartbeat allowance).
    opened: Instant,
    /// Wire bytes of the complete messages received from it.
    delivered: u64,
    /// When it was last measured.
    probed: Option<Instant>,
    /// Bytes libzmq had read at the last measurement, and that
    /// measurement's time; judged after the next drain of the socket.
    pending: Option<(u64, Instant)>,
    /// Measurements over the limit in a row.
    strikes: u8,
    /// Being closed: what it still had queued is dropped.
    closing: bool,
}

impl Conn {
    fn new(now: Instant) -> Self {
        Self {
            opened: now,
            delivered: 0,
            probed: None,
            pending: None,
            strikes: 0,
            closing: false,
        }
    }
}

/// See the module doc.
pub struct UnfinishedGuard<P: Probe = TcpProbe> {
    limit: u64,
    probe: P,
    /// None in tests: every known connection is then measured when due.
    activity: Option<Activity>,
    conns: HashMap<RawFd, Conn>,
    /// Connections to measure (new bytes, or a strike to confirm).
    due: HashSet<RawFd>,
    /// Connections measured since the last drain.
    pending: Vec<RawFd>,
    /// Connections closed (exported by the daemon's stats).
    closed: Arc<AtomicU64>,
    scratch: Vec<RawFd>,
}

impl UnfinishedGuard<TcpProbe> {
    /// A guard for a socket whose peers send one frame of at most
    /// `max_frame` bytes per message; it counts the connections it closes
    /// in `closed`.
    pub fn new(max_frame: usize, closed: Arc<AtomicU64>) -> Result<Self, std::io::Error> {
        Ok(Self::with_probe(
            max_frame,
            TcpProbe,
            Some(Activity::new()?),
            closed,
        ))
    }
}

/// An [`UnfinishedGuard`] on socket `index`, ready for
/// [`crate::transport::IoThread::spawn_guarded`].
pub fn guarded(
    index: usize,
    max_frame: usize,
    closed: Arc<AtomicU64>,
) -> Result<Guarded, TransportError> {
    let guard = UnfinishedGuard::new(max_frame, closed).map_err(TransportError::Guard)?;
    Ok(Guarded {
        index,
        guard: Box::new(guard),
    })
}

impl<P: Probe> UnfinishedGuard<P> {
    fn with_probe(
        max_frame: usize,
        probe: P,
        activity: Option<Activity>,
        closed: Arc<AtomicU64>,
    ) -> Self {
        Self {
            limit: Self::limit_for(max_frame),
            probe,
            activity,
            conns: HashMap::new(),
            due: HashSet::new(),
            pending: Vec::new(),
            closed,
            scratch: Vec::new(),
        }
    }

    /// Most a legitimate peer holds: one whole frame and the slack.
    pub fn limit_for(max_frame: usize) -> u64 {
        wire_size(max_frame).saturating_add(SLACK)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Measures `fd` now: the bytes libzmq has read off it so far.
    fn measure(&mut self, fd: RawFd, now: Instant) {
        let Some(conn) = self.conns.get(&fd) else {
            return;
        };
        // Held is at most this much even if nothing is left in the kernel
        // (what was delivered by now only grows until the judgement).
        let (delivered, age, limit) = (
            conn.delivered,
            now.saturating_duration_since(conn.opened),
            self.limit,
        );
        let clean = move |received: u64| held(received, 0, delivered, age) <= limit;
        let read = self.probe.read_off(fd, &clean);
        let Some(conn) = self.conns.get_mut(&fd) else {
            return;
        };
        conn.probed = Some(now);
        if let Some((received, queued)) = read {
            conn.pending = Some((received.saturating_sub(queued), now));
            self.pending.push(fd);
        }
    }

    /// Judges the measurements taken before the drain that just ended.
    fn judge_pending(&mut self, close: &mut Vec<RawFd>) {
        for fd in std::mem::take(&mut self.pending) {
            let Some(conn) = self.conns.get_mut(&fd) else {
                continue;
            };
            let Some((read, at)) = conn.pending.take() else {
                continue;
            };
            if conn.closing {
                continue;
            }
            let h = held(
                read,
                0,
                conn.delivered,
                at.saturating_duration_since(conn.opened),
            );
            match judge(h, self.limit, conn.strikes) {
                Judgement::Clean => conn.strikes = 0,
                Judgement::Strike(n) => {
                    conn.strikes = n;
                    // Looked at again even if it sends nothing more.
                    self.due.insert(fd);
                }
                Judgement::Close => {
                    conn.closing = true;
                    let n = self.closed.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        warn!(
                            fd,
                            held = h,
                            limit = self.limit,
                            closed = n,
                            "request port: peer holds more than one unfinished frame; connection closed"
                        );
                    }
                    close.push(fd);
                }
            }
        }
    }
}

impl<P: Probe> ConnGuard for UnfinishedGuard<P> {
    fn inspect(&mut self, fd: Option<i32>, frames: &[Vec<u8>]) -> Verdict {
        let Some(fd) = fd else {
            return Verdict::Deliver;
        };
        let conn = self
            .conns
            .entry(fd)
            .or_insert_with(|| Conn::new(Instant::now()));
        if conn.closing {
            return Verdict::Drop;
        }
        conn.delivered = conn.delivered.saturating_add(message_wire_size(frames));
        Verdict::Deliver
    }

    fn accepted(&mut self, fd: i32) {
        // Messages can overtake the monitor's event: keep what they counted.
        self.conns
            .entry(fd)
            .or_insert_with(|| Conn::new(Instant::now()));
        match &self.activity {
            Some(a) => a.arm(fd),
            None => {
                self.due.insert(fd);
            }
        }
    }

    fn forget(&mut self, fd: i32) {
        self.conns.remove(&fd);
        self.due.remove(&fd);
        if let Some(a) = &self.activity {
            a.disarm(fd);
        }
    }

    fn poll_fd(&self) -> Option<RawFd> {
        self.activity.as_ref().map(Activity::raw_fd)
    }

    fn sweep(&mut self, drained: bool, now: Instant) -> Vec<i32> {
        let mut close = Vec::new();
        if drained {
            self.judge_pending(&mut close);
        }
        let mut ready = std::mem::take(&mut self.scratch);
        ready.clear();
        match &self.activity {
            Some(a) => a.ready(&mut ready),
            None => ready.extend(self.conns.keys().copied()),
        }
        for fd in ready.drain(..) {
            if self.conns.contains_key(&fd) {
                self.due.insert(fd);
            }
        }
        self.scratch = ready;
        // Measure what is due, unless a measurement is still to be judged.
        let mut measure = Vec::new();
        self.due.retain(|fd| match self.conns.get(fd) {
            None => false,
            Some(c) if c.closing => false,
            Some(c) if c.pending.is_some() => true,
            // A strike is confirmed (or cleared) at the next round: a
            // flood must not get another interval's worth in meanwhile.
            Some(c) if c.strikes > 0 => {
                measure.push(*fd);
                false
            }
            Some(c) => match c.probed {
                Some(t) if now.saturating_duration_since(t) < PROBE_INTERVAL => true,
                _ => {
                    measure.push(*fd);
                    false
                }
            },
        });
        for fd in measure {
            self.measure(fd, now);
        }
        close
    }

    fn next_wake(&self, now: Instant) -> Option<Duration> {
        if !self.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        self.due
            .iter()
            .filter_map(|fd| self.conns.get(fd))
            .map(|c| match c.probed {
                Some(t) if c.strikes == 0 => {
                    PROBE_INTERVAL.saturating_sub(now.saturating_duration_since(t))
                }
                _ => Duration::ZERO,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_sizes_follow_zmtp_framing() {
        assert_eq!(wire_size(0), 2);
        assert_eq!(wire_size(255), 257);
        assert_eq!(wire_size(256), 265);
        // The routing id is not on the wire.
        let msg = vec![vec![0u8; 5], vec![0u8; 10], vec![0u8; 1000]];
        assert_eq!(message_wire_size(&msg), 12 + 1009);
        assert_eq!(message_wire_size(&[vec![1, 2, 3]]), 0);
    }

    #[test]
    fn held_subtracts_queue_messages_and_allowance() {
        let day = Duration::from_secs(86_400);
        assert_eq!(allowance(Duration::ZERO), HANDSHAKE_ALLOWANCE);
        // A day of Brine heartbeats (9 B / 5 s + 7 B / 60 s) fits.
        let pings = 86_400 / 5 * 9 + 86_400 / 60 * 7;
        assert!(allowance(day) >= HANDSHAKE_ALLOWANCE + pings);
        assert!(allowance(day) < HANDSHAKE_ALLOWANCE + pings + 64 * 1024);
        // Greeting + 3 complete messages + 100 bytes of a frame in progress.
        let handshake = 300;
        let delivered = 3 * wire_size(500);
        let received = handshake + delivered + 100 + 4000;
        assert_eq!(held(received, 4000, delivered, Duration::ZERO), 0);
        let big = 5 << 20;
        assert_eq!(
            held(received + big, 4000, delivered, Duration::ZERO),
            received + big - 4000 - delivered - HANDSHAKE_ALLOWANCE
        );
        // Never below zero (counters read at slightly different times).
        assert_eq!(held(10, 20, 30, day), 0);
    }

    #[test]
    fn two_strikes_or_twice_the_limit() {
        let limit = 1000;
        assert_eq!(judge(1000, limit, 0), Judgement::Clean);
        assert_eq!(judge(1001, limit, 0), Judgement::Strike(1));
        assert_eq!(judge(1001, limit, 1), Judgement::Close);
        assert_eq!(judge(10, limit, 1), Judgement::Clean);
        assert_eq!(judge(2000, limit, 0), Judgement::Strike(1));
        assert_eq!(judge(2001, limit, 0), Judgement::Close);
    }

    /// Counters set by the test.
    #[derive(Default)]
    struct Fake {
        conns: HashMap<RawFd, (u64, u64)>,
    }

    impl Probe for Fake {
        fn read_off(&mut self, fd: RawFd, clean: &dyn Fn(u64) -> bool) -> Option<(u64, u64)> {
            let (received, queued) = self.conns.get(&fd).copied()?;
            Some((received, if clean(received) { 0 } else { queued }))
        }
    }

    fn req(len: usize) -> Vec<Vec<u8>> {
        vec![vec![0, 1, 2, 3, 4], vec![7u8; len]]
    }

    #[test]
    fn a_peer_holding_two_frames_is_closed_and_one_sending_whole_requests_is_not() {
        let max_frame = 1 << 20;
        let closed = Arc::new(AtomicU64::new(0));
        let mut g = UnfinishedGuard::with_probe(max_frame, Fake::default(), None, closed.clone());
        let limit = g.limit();
        let mut now = Instant::now();
        let mut tick = |g: &mut UnfinishedGuard<Fake>, drained: bool| {
            now += PROBE_INTERVAL;
            g.sweep(drained, now)
        };
        g.accepted(7);
        g.accepted(8);
        // Peer 7: greeting, then whole requests of one full frame each,
        // with the next one half read.
        let mut rx7 = 300;
        for _ in 0..5 {
            rx7 += wire_size(max_frame);
            assert_eq!(g.inspect(Some(7), &req(max_frame)), Verdict::Deliver);
        }
        g.probe.conns.insert(7, (rx7 + wire_size(max_frame) / 2, 0));
        // Peer 8: frames flagged "more", never delivered.
        g.probe.conns.insert(8, (300 + 2 * wire_size(max_frame), 0));
        assert!(tick(&mut g, true).is_empty()); // measured
                                                // Not judged before a drain.
        assert!(tick(&mut g, false).is_empty());
        assert_eq!(g.pending.len(), 2);
        assert!(tick(&mut g, true).is_empty()); // strike one for 8
        assert_eq!(g.conns[&8].strikes, 1);
        assert_eq!(tick(&mut g, true), vec![8]);
        // Whatever 8 still had queued is dropped; 7 goes on.
        assert_eq!(g.inspect(Some(8), &req(10)), Verdict::Drop);
        for _ in 0..10 {
            assert!(tick(&mut g, true).is_empty());
        }
        assert_eq!(closed.load(Ordering::Relaxed), 1);
        // A message counted before a complete one is judged: a strike
        // that the next measurement clears.
        g.probe.conns.insert(7, (rx7 + limit + 2000, 0));
        assert!(tick(&mut g, true).is_empty());
        assert!(tick(&mut g, true).is_empty());
        assert_eq!(g.conns[&7].strikes, 1);
        g.inspect(Some(7), &req(max_frame));
        assert!(tick(&mut g, true).is_empty());
        assert!(tick(&mut g, true).is_empty());
        assert_eq!(g.conns[&7].strikes, 0);
        // Far over twice the limit: closed at the first look.
        g.accepted(9);
        g.probe.conns.insert(9, (2 * limit + 2000, 0));
        assert!(tick(&mut g, true).is_empty());
        assert_eq!(tick(&mut g, true), vec![9]);
        // A reused descriptor starts afresh.
        g.forget(8);
        g.accepted(8);
        g.probe.conns.insert(8, (300, 0));
        assert!(tick(&mut g, true).is_empty());
        assert!(tick(&mut g, true).is_empty());
        assert_eq!(g.conns[&8].strikes, 0);
    }
}
