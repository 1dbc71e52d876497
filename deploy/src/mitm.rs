//! A man in the middle for hostile tests: someone on the path between one
//! minion and its master, at the ZeroMQ message level.
//!
//! It binds a publish port and a request port of its own (the minion is
//! configured with the relay's address as its `master`), forwards every
//! message both ways to the real master, records every publish it relays,
//! and can inject frames: a recorded publish again (a replay) or any frame
//! towards the minion on the request channel (a forged answer). It serves
//! one minion (it remembers the last routing id it heard on the request
//! port). It runs on its own thread until dropped; every wait in it is
//! bounded by a 50 ms poll.

use anyhow::{Context, Result};
use brine_common::sync::lock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Something to send from the middle.
pub enum Inject {
    /// A multipart message on the publish port (to every subscriber).
    Publish(Vec<Vec<u8>>),
    /// One frame to the minion on the request channel.
    ToMinion(Vec<u8>),
}

pub struct Mitm {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    inject: mpsc::Sender<Inject>,
    /// Every publish relayed so far, in order.
    publishes: Arc<Mutex<Vec<Vec<Vec<u8>>>>>,
    /// Subscriptions seen on the publish port (a minion that connects
    /// sends one per topic).
    pub subscriptions: Arc<AtomicUsize>,
}

impl Mitm {
    /// Listen on `listen` (4505 and 4506) and relay to `master` (same ports).
    pub fn start(listen: &str, master: &str) -> Result<Mitm> {
        let ctx = zmq::Context::new();
        let xpub = ctx.socket(zmq::XPUB)?;
        let xsub = ctx.socket(zmq::XSUB)?;
        let router = ctx.socket(zmq::ROUTER)?;
        let dealer = ctx.socket(zmq::DEALER)?;
        for s in [&xpub, &xsub, &router, &dealer] {
            s.set_linger(0)?;
        }
        xpub.bind(&format!("tcp://{listen}:4505"))
            .with_context(|| format!("bind {listen}:4505"))?;
        router
            .bind(&format!("tcp://{listen}:4506"))
            .with_context(|| format!("bind {listen}:4506"))?;
        xsub.connect(&format!("tcp://{master}:4505"))?;
        dealer.connect(&format!("tcp://{master}:4506"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let publishes = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<Inject>();
        let subscriptions = Arc::new(AtomicUsize::new(0));
        let (st, pubs, subs) = (stop.clone(), publishes.clone(), subscriptions.clone());
        let thread = std::thread::spawn(move || {
            let mut peer: Option<Vec<u8>> = None;
            while !st.load(Ordering::Relaxed) {
                let mut items = [
                    xpub.as_poll_item(zmq::POLLIN),
                    xsub.as_poll_item(zmq::POLLIN),
                    router.as_poll_item(zmq::POLLIN),
                    dealer.as_poll_item(zmq::POLLIN),
                ];
                if zmq::poll(&mut items, 50).is_err() {
                    break;
                }
                let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
                if ready[0] {
                    if let Ok(m) = xpub.recv_multipart(0) {
                        if m.first().and_then(|f| f.first()) == Some(&1) {
                            subs.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = xsub.send_multipart(m, 0);
                    }
                }
                if ready[1] {
                    if let Ok(m) = xsub.recv_multipart(0) {
                        lock(&pubs).push(m.clone());
                        let _ = xpub.send_multipart(m, 0);
                    }
                }
                if ready[2] {
                    if let Ok(mut m) = router.recv_multipart(0) {
                        if m.len() == 2 {
                            let frame = m.pop().unwrap_or_default();
                            peer = m.pop();
                            let _ = dealer.send(frame, 0);
                        }
                    }
                }
                if ready[3] {
                    if let Ok(frame) = dealer.recv_bytes(0) {
                        if let Some(p) = &peer {
                            let _ = router.send_multipart([p.clone(), frame], 0);
                        }
                    }
                }
                while let Ok(i) = rx.try_recv() {
                    match i {
                        Inject::Publish(m) => {
                            let _ = xpub.send_multipart(m, 0);
                        }
                        Inject::ToMinion(frame) => {
                            if let Some(p) = &peer {
                                let _ = router.send_multipart([p.clone(), frame], 0);
                            }
                        }
                    }
                }
            }
        });
        Ok(Mitm {
            stop,
            thread: Some(thread),
            inject: tx,
            publishes,
            subscriptions,
        })
    }

    pub fn inject(&self, what: Inject) {
        let _ = self.inject.send(what);
    }

    /// Publishes relayed so far.
    pub fn recorded(&self) -> Vec<Vec<Vec<u8>>> {
        lock(&self.publishes).clone()
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
