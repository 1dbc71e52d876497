//! The opt-in metrics and health endpoint of every Brine daemon
//! (`metrics_bind: host:port`; off when unset): `GET /metrics` answers the
//! registry in the OpenMetrics text format (encoded by `prometheus-client`,
//! never by hand), `GET /healthz` answers 200 `ok` while the daemon runs
//! (503 once it shuts down), `GET /readyz` answers 200 when the daemon's
//! own readiness check passes (master listening, minion signed in, syndic
//! signed in above) and 503 with the reason otherwise.
//!
//! Invariants: the values are read at scrape time from the daemons' own
//! atomics through [`Collector`]s (no second copy of the counting), and
//! the endpoint is bounded: at most [`MAX_CONNECTIONS`] connections are
//! served at once (more are closed on accept), a request's head must
//! arrive within [`HEADER_TIMEOUT`] and a whole connection ends after
//! [`CONNECTION_TIMEOUT`], one request per connection, so a slow or
//! hostile HTTP client can hold neither the process nor the endpoint.
//! Metric names follow Prometheus' conventions: `brine_<daemon>_` prefix,
//! base units (`_seconds`, `_bytes`), counters end in `_total`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
pub use prometheus_client::registry::Registry;

use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Connections served at once; one more is closed as soon as accepted.
pub const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a whole connection (request and answer) may take.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The content type of `/metrics` (what `prometheus-client` writes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A daemon's readiness: `Ok` when ready, else why not (the 503 body).
pub type ReadyFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Checks a `metrics_bind` value: `host:port` (a name, an IPv4 address or
/// a bracketed IPv6 address, and a port number; 0 lets the system choose,
/// for tests). The error says what is expected.
pub fn check_bind(value: &str) -> Result<(), String> {
    let expected =
        || format!("{value:?} is not host:port (e.g. 127.0.0.1:9105, [::1]:9105, localhost:9105)");
    let (host, port) = value.rsplit_once(':').ok_or_else(expected)?;
    port.parse::<u16>().map_err(|_| expected())?;
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    };
    if host_ok {
        Ok(())
    } else {
        Err(expected())
    }
}

/// Writes scrape-time values through a collector's encoder, so that the
/// daemons' collectors are lists of names, help texts and values.
pub struct Scrape<'a> {
    enc: DescriptorEncoder<'a>,
}

impl<'a> Scrape<'a> {
    /// Wrap the encoder a [`Collector::encode`] is given.
    pub fn new(enc: DescriptorEncoder<'a>) -> Self {
        Self { enc }
    }

    /// A counter; `name` without `_total` (the encoder adds it).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let c = ConstCounter::new(value);
        let m = self
            .enc
            .encode_descriptor(name, help, None, c.metric_type())?;
        c.encode(m)
    }

    /// A counter of seconds (or another fractional base unit).
    pub fn counter_f64(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        let c = ConstCounter::new(value);
        let m = self
            .enc
            .encode_descriptor(name, help, None, c.metric_type())?;
        c.encode(m)
    }

    /// A gauge (a level: connections, queue lengths, bytes).
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) -> fmt::Result {
        let g = ConstGauge::new(value);
        let m = self
            .enc
            .encode_descriptor(name, help, None, g.metric_type())?;
        g.encode(m)
    }

    /// A gauge with one label: one sample per `(label value, value)`.
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: &[(String, i64)],
    ) -> fmt::Result {
        let kind = ConstGauge::new(0i64).metric_type();
        let mut m = self.enc.encode_descriptor(name, help, None, kind)?;
        for (l, v) in values {
            let labels = [(label, l.as_str())];
            let fam = m.encode_family(&labels)?;
            ConstGauge::new(*v).encode(fam)?;
        }
        Ok(())
    }
}

/// The standard `process_*` metrics of this process, read from the kernel
/// at scrape time (`/proc/self`, `getrusage`, `getrlimit`).
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl ProcessCollector {
    /// (resident bytes, virtual bytes) from `/proc/self/status`.
    fn memory() -> Option<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = |key: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(key))?;
            let n = line[key.len()..].trim().trim_end_matches("kB").trim();
            n.parse::<u64>().ok().map(|k| k * 1024)
        };
        Some((kib("VmRSS:")?, kib("VmSize:")?))
    }

    /// User plus system CPU seconds of this process.
    fn cpu_seconds() -> Option<f64> {
        use nix::sys::resource::{getrusage, UsageWho};
        let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        Some(secs(u.user_time()) + secs(u.system_time()))
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
        let mut s = Scrape::new(enc);
        if let Some(cpu) = Self::cpu_seconds() {
            s.counter_f64(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                cpu,
            )?;
        }
        if let Some((rss, vsz)) = Self::memory() {
            s.gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss as i64,
            )?;
            s.gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                vsz as i64,
            )?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            s.gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                dir.count() as i64,
            )?;
        }
        if let Ok((soft, _)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        {
            s.gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                i64::try_from(soft).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

/// A registry with the process collector already in it; daemons add
/// their own collectors and metrics.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(ProcessCollector));
    r
}

/// The registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// What the endpoint's connections share.
struct Shared {
    registry: Registry,
    ready: ReadyFn,
    shutdown: CancellationToken,
}

/// Bind `addr` (a checked `metrics_bind`) and serve `/metrics`,
/// `/healthz` and `/readyz` until `shutdown` is cancelled. Returns the
/// bound address (the port may have been 0) and the server task.
pub async fn serve(
    addr: &str,
    registry: Registry,
    ready: ReadyFn,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(address = %local, "metrics endpoint listening (/metrics, /healthz, /readyz)");
    let shared = Arc::new(Shared {
        registry,
        ready,
        shutdown,
    });
    Ok((local, tokio::spawn(accept_loop(listener, shared))))
}

/// Start the endpoint when `metrics_bind` is set: the one hook each
/// daemon calls. `what` names the daemon in the error.
pub async fn start_if_configured(
    bind: Option<&str>,
    registry: impl FnOnce() -> Registry,
    ready: ReadyFn,
    shutdown: &CancellationToken,
) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = bind else { return Ok(None) };
    let (_, task) = serve(addr, registry(), ready, shutdown.clone())
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("metrics_bind {addr}: {e}")))?;
    Ok(Some(task))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: do not spin.
                warn!(error = %e, "metrics endpoint accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "metrics endpoint busy: connection closed");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&shared, &req)) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(16 * 1024);
            let conn = http.serve_connection(TokioIo::new(stream), svc);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "metrics connection ended"),
                Err(_) => debug!(%peer, "metrics connection timed out"),
            }
            drop(permit);
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n", PLAIN);
    }
    match req.uri().path() {
        "/metrics" => match render(&shared.registry) {
            Ok(body) => text(StatusCode::OK, body, CONTENT_TYPE),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics could not be encoded\n",
                PLAIN,
            ),
        },
        "/healthz" | "/livez" => {
            if shared.shutdown.is_cancelled() {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n", PLAIN)
            } else {
                text(StatusCode::OK, "ok\n", PLAIN)
            }
        }
        "/readyz" => {
            let verdict = if shared.shutdown.is_cancelled() {
                Err("shutting down".to_string())
            } else {
                (shared.ready)()
            };
            match verdict {
                Ok(()) => text(StatusCode::OK, "ready\n", PLAIN),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"), PLAIN),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n",
            PLAIN,
        ),
    }
}

/// A plain HTTP/1.0 GET for tests and tools: (status, body). Bounded by
/// `timeout` for connect, write and read.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.take(64 << 20).read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

/// The value of an unlabelled sample `name` in an exposition text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse::<f64>().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn bind_values_are_checked() {
        for ok in [
            "127.0.0.1:9105",
            "0.0.0.0:0",
            "[::1]:9105",
            "localhost:9105",
            "metrics.example-1:80",
        ] {
            assert!(check_bind(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "9105",
            "127.0.0.1",
            "127.0.0.1:",
            "host:99999",
            ":9105",
            "::1:9105",
            "[::1:9105",
            "a b:1",
            "[nope]:1",
        ] {
            let e = check_bind(bad).expect_err(bad);
            assert!(e.contains("host:port"), "{e}");
        }
    }

    #[derive(Debug)]
    struct Two(Arc<AtomicU64>);

    impl Collector for Two {
        fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
            let mut s = Scrape::new(enc);
            s.counter(
                "brine_test_things",
                "Things.",
                self.0.load(Ordering::Relaxed),
            )?;
            s.gauges(
                "brine_test_level",
                "Levels.",
                "syndic",
                &[("a".into(), 2), ("b".into(), 3)],
            )
        }
    }

    #[test]
    fn scrape_time_values_and_process_metrics() {
        let n = Arc::new(AtomicU64::new(5));
        let mut r = registry();
        r.register_collector(Box::new(Two(n.clone())));
        let t = render(&r).expect("render");
        assert_eq!(sample(&t, "brine_test_things_total"), Some(5.0), "{t}");
        n.store(7, Ordering::Relaxed);
        let t = render(&r).expect("render");
        assert_eq!(sample(&t, "brine_test_things_total"), Some(7.0), "{t}");
        assert!(t.contains("# TYPE brine_test_things counter"), "{t}");
        assert!(t.contains("brine_test_level{syndic=\"a\"} 2"), "{t}");
        assert!(t.contains("brine_test_level{syndic=\"b\"} 3"), "{t}");
        assert!(sample(&t, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
        assert!(sample(&t, "process_cpu_seconds_total").is_some(), "{t}");
        assert!(sample(&t, "process_open_fds").unwrap_or(0.0) > 0.0);
        assert!(t.trim_end().ends_with("# EOF"), "{t}");
    }

    #[tokio::test]
    async fn endpoint_answers_and_is_bounded() {
        let sd = CancellationToken::new();
        let ready_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rf = ready_flag.clone();
        let ready: ReadyFn = Arc::new(move || {
            if rf.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("not signed in".into())
            }
        });
        let (addr, task) = serve("127.0.0.1:0", registry(), ready, sd.clone())
            .await
            .expect("serve");
        let get = move |path: &'static str| {
            tokio::task::spawn_blocking(move || http_get(addr, path, Duration::from_secs(5)))
        };
        let (code, body) = get("/healthz").await.expect("join").expect("get");
        assert_eq!((code, body.as_str()), (200, "ok\n"));
        let (code, body) = get("/readyz").await.expect("join").expect("get");
        assert_eq!((code, body.as_str()), (503, "not signed in\n"));
        ready_flag.store(true, Ordering::Relaxed);
        let (code, _) = get("/readyz").await.expect("join").expect("get");
        assert_eq!(code, 200);
        let (code, body) = get("/metrics").await.expect("join").expect("get");
        assert_eq!(code, 200);
        assert!(body.contains("process_resident_memory_bytes"), "{body}");
        let (code, _) = get("/nope").await.expect("join").expect("get");
        assert_eq!(code, 404);

        // Clients that connect and say nothing take the slots, but the
        // endpoint still answers once their header time is up.
        let idle: Vec<_> = (0..MAX_CONNECTIONS + 4)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let started = std::time::Instant::now();
        let answered = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + HEADER_TIMEOUT * 3;
            loop {
                if let Ok((200, _)) = http_get(addr, "/healthz", Duration::from_secs(2)) {
                    return true;
                }
                if std::time::Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .await
        .expect("join");
        assert!(answered, "endpoint stuck behind idle clients");
        assert!(started.elapsed() < HEADER_TIMEOUT * 3);
        drop(idle);

        sd.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops on shutdown")
            .expect("join");
    }
}
