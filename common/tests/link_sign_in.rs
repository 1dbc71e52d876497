//! The link's sign-in against a master whose RSA workers are behind: once
//! the master answered the first round (the challenge), the link waits for
//! the acceptance instead of queueing another proof every few seconds
//! (each one more RSA check in the master's backlog).

use brine_common::codec;
use brine_common::config::MinionConfig;
use brine_common::crypto::KeyPair;
use brine_common::link::{self, LinkConfig};
use brine_common::proto::{RequestBody, Wire};
use brine_common::session::SIGN_IN_ANSWER_WAIT;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the fake master saw.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    /// Sign-ins without a challenge (first rounds, one per attempt).
    first_rounds: u32,
    /// Sign-ins carrying the proof.
    proofs: u32,
}

/// A master that answers every first round with a challenge and never gets
/// to the proofs (its RSA queue is long), for `watch`.
fn slow_master(router: zmq::Socket, watch: Duration) -> Seen {
    let mut seen = Seen::default();
    let until = Instant::now() + watch;
    while Instant::now() < until {
        let Ok(frames) = router.recv_multipart(0) else {
            continue; // receive timeout
        };
        let [routing, data] = frames.as_slice() else {
            continue;
        };
        let Ok(Wire::Auth(req)) = codec::decode_wire(data, 1 << 20) else {
            continue;
        };
        if req.challenge.is_empty() {
            seen.first_rounds += 1;
            let answer = codec::encode_wire(Wire::AuthChallenge {
                nonce: req.nonce,
                challenge: b"one-time challenge".to_vec(),
            })
            .expect("encode");
            router
                .send_multipart([routing.clone(), answer], 0)
                .expect("answer");
        } else {
            seen.proofs += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proven_sign_in_waits_for_the_masters_rsa_backlog() {
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER).expect("router");
    router.set_rcvtimeo(100).expect("timeout");
    router.set_linger(0).expect("linger");
    router.bind("tcp://127.0.0.1:*").expect("bind");
    let endpoint = router.get_last_endpoint().expect("endpoint").expect("utf8");
    let port: u16 = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");

    // Longer than the first-round wait plus the reconnect back-off: a link
    // that gave up on its proof would have started a second attempt.
    let watch = SIGN_IN_ANSWER_WAIT * 2;
    let master = std::thread::spawn(move || slow_master(router, watch));

    let dir = tempfile::tempdir().expect("tmp");
    let mut mc = MinionConfig {
        id: "brine-link-test".into(),
        master: "127.0.0.1".into(),
        master_port: port,
        pki_dir: dir.path().to_path_buf(),
        ..MinionConfig::default()
    };
    mc.recon_default = 100;
    mc.recon_max = 200;
    let cfg = LinkConfig::from(&mc);
    let keys = Arc::new(KeyPair::generate().expect("key"));
    let shutdown = CancellationToken::new();
    let (handle, _jobs, task) = link::start(
        cfg,
        keys,
        Box::new(|| RequestBody::Heartbeat),
        shutdown.clone(),
    )
    .expect("link");

    let seen = tokio::task::spawn_blocking(move || master.join().expect("master thread"))
        .await
        .expect("join");
    assert!(!handle.is_up(), "never accepted");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the link stops")
        .expect("link task");
    assert_eq!(
        seen,
        Seen {
            first_rounds: 1,
            proofs: 1
        },
        "one attempt, one proof, then waiting for the answer"
    );
}
