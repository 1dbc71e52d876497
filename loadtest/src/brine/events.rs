//! The event-bus benchmark (`--events-per-sec R --events-secs N`): every
//! simulated minion sends `loadtest/event/<n>` events (`n` its number) to
//! its master at R per second for N seconds, and one subscriber on the top
//! master's bus (`state.event`, tagmatch `loadtest/*`) counts what arrives
//! and how long it took (`sent_us` in the event's data against the
//! subscriber's clock: same machine, same clock).
//!
//! Pacing: minion `n` of `M` sends its `k`-th event `n / M / R + k / R`
//! seconds after the common start, so the fleet's sends are spread evenly
//! over every interval instead of coming in bursts ([`send_offset`],
//! [`planned`]). Invariant: every event is counted at most once as
//! delivered (keyed by minion and sequence number; a second copy counts
//! as a duplicate), and lost = sent − delivered, where sent counts only
//! events a minion actually handed to its socket.

use crate::report::MicroPercentiles;
use crate::stats::{new_histogram, StatsError, MAX_MICROS};
use brine_common::proto::client::{
    read_frame, write_frame, ClientMsg, ClientReq, SOCKET_NAME, TOKEN_FILE,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

/// Tag prefix of the benchmark's events (the subscriber's tagmatch is
/// this followed by `*`).
pub const TAG_PREFIX: &str = "loadtest/event/";

/// What the workers need to send events: sent as part of `SimSpec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPlan {
    /// Events per second per minion.
    pub rate: f64,
    /// Seconds of sending.
    pub secs: f64,
    /// Minions in the whole run (for the spread of the send times).
    pub minions: u32,
    /// The coordinator writes the start time (µs since the epoch) here.
    pub go_file: PathBuf,
}

/// Seconds after the start when minion `idx` sends its first event.
pub fn send_offset(idx: u32, minions: u32, rate: f64) -> f64 {
    if rate <= 0.0 {
        return 0.0;
    }
    f64::from(idx) / f64::from(minions.max(1)) / rate
}

/// Seconds after the start of event `k` of a minion with `offset`.
pub fn send_at(offset: f64, k: u64, rate: f64) -> f64 {
    offset + k as f64 / rate
}

/// Events a minion with `offset` sends in `secs`: every `k` whose send
/// time is before the end.
pub fn planned(offset: f64, rate: f64, secs: f64) -> u64 {
    if rate <= 0.0 || offset >= secs {
        return 0;
    }
    // Smallest k with offset + k/rate >= secs, computed then corrected
    // for rounding.
    let mut k = ((secs - offset) * rate).ceil().max(0.0) as u64;
    while k > 0 && send_at(offset, k - 1, rate) >= secs {
        k -= 1;
    }
    while send_at(offset, k, rate) < secs {
        k += 1;
    }
    k
}

/// Most events one minion sends (minion 0, offset 0).
pub fn max_per_minion(p: &EventPlan) -> u64 {
    planned(0.0, p.rate, p.secs)
}

/// Most events a run may plan: the subscriber keeps one bit per event.
pub const MAX_EVENTS: f64 = 1e9;

/// Events the whole fleet sends (the subscriber stops waiting once it
/// has them all).
pub fn planned_total(p: &EventPlan) -> u64 {
    (0..p.minions)
        .map(|i| planned(send_offset(i, p.minions, p.rate), p.rate, p.secs))
        .sum()
}

/// The event's tag and data as a simulated minion sends them.
pub fn event_load(idx: u32, k: u64, sent_us: u64) -> (String, Value) {
    (
        format!("{TAG_PREFIX}{idx}"),
        serde_json::json!({ "sent_us": sent_us, "k": k }),
    )
}

/// `sent_us` and `k` of a delivered event: at the data's top or under up
/// to three levels of `data` (a minion event is wrapped in
/// `{cmd, id, tag, data}` by its master, and may be wrapped again on its
/// way up).
fn stamp(data: &Value) -> Option<(u64, u64)> {
    let mut v = data;
    for _ in 0..4 {
        if let (Some(s), Some(k)) = (
            v.get("sent_us").and_then(Value::as_u64),
            v.get("k").and_then(Value::as_u64),
        ) {
            return Some((s, k));
        }
        v = v.get("data")?;
    }
    None
}

/// What the subscriber saw.
pub struct EventTally {
    /// Per minion that sent here, one bit per sequence number (memory:
    /// per_minion bits for each minion seen).
    seen: std::collections::HashMap<u32, Vec<u64>>,
    minions: u32,
    per_minion: u64,
    pub delivered: u64,
    pub duplicate: u64,
    /// Events under the tag prefix without a readable minion number,
    /// `sent_us` or `k`.
    pub malformed: u64,
    latency_us: hdrhistogram::Histogram<u64>,
}

impl EventTally {
    /// A tally for `minions` minions sending at most `per_minion` events.
    pub fn new(minions: u32, per_minion: u64) -> Result<Self, StatsError> {
        Ok(Self {
            seen: std::collections::HashMap::new(),
            minions,
            per_minion,
            delivered: 0,
            duplicate: 0,
            malformed: 0,
            latency_us: new_histogram()?,
        })
    }

    /// Counts one event that arrived at `now_us`; other tags are ignored.
    pub fn on_event(&mut self, tag: &str, data: &Value, now_us: u64) {
        let Some(rest) = tag.strip_prefix(TAG_PREFIX) else {
            return;
        };
        let (Ok(idx), Some((sent, k))) = (rest.parse::<u32>(), stamp(data)) else {
            self.malformed += 1;
            return;
        };
        if idx >= self.minions || k >= self.per_minion {
            self.malformed += 1;
            return;
        }
        let words = self.per_minion.div_ceil(64) as usize;
        let bits = self.seen.entry(idx).or_insert_with(|| vec![0; words]);
        let (word, mask) = ((k / 64) as usize, 1u64 << (k % 64));
        let Some(w) = bits.get_mut(word) else {
            self.malformed += 1;
            return;
        };
        if *w & mask != 0 {
            self.duplicate += 1;
            return;
        }
        *w |= mask;
        self.delivered += 1;
        let us = now_us.saturating_sub(sent).clamp(1, MAX_MICROS);
        self.latency_us.saturating_record(us);
    }

    pub fn latency(&self) -> MicroPercentiles {
        MicroPercentiles::of(&self.latency_us)
    }

    /// The latency percentiles of several tallies together.
    pub fn merged_latency(tallies: &[&EventTally]) -> Result<MicroPercentiles, StatsError> {
        let mut h = new_histogram()?;
        for t in tallies {
            for v in t.latency_us.iter_recorded() {
                h.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        Ok(MicroPercentiles::of(&h))
    }
}

/// Figures of an event benchmark, in the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventBench {
    /// Events per second per minion, and seconds of sending.
    pub rate: f64,
    pub secs: f64,
    /// Events the schedule called for.
    pub planned: u64,
    /// Handed to a socket by the minions.
    pub sent: u64,
    /// Not sent: the minion was signing in, or its socket refused it.
    pub unsent: u64,
    /// Answered `Ok` / refused by the minions' master.
    pub acked: u64,
    pub refused: u64,
    /// Arrived at the top's subscriber (each once), more copies, lost
    /// (sent − delivered, after the grace period).
    pub delivered: u64,
    pub duplicate: u64,
    pub malformed: u64,
    pub lost: u64,
    /// Delivered per second of sending.
    pub delivered_per_sec: f64,
    /// Send to arrival at the subscriber, µs.
    pub latency_us: MicroPercentiles,
    /// Seconds waited after the last send for stragglers.
    pub grace_secs: f64,
    /// CPU seconds (user + system) of the top and of each syndic during
    /// the sending window.
    pub top_cpu_secs: Option<f64>,
    pub syndic_cpu_secs: BTreeMap<String, f64>,
    /// The top bus's own counters over the run (`manage.stats`): events
    /// fired and events dropped for slow subscribers.
    pub top_events_published: Option<u64>,
    pub top_events_dropped: Option<u64>,
    /// Events each last-tier syndic's own bus delivered (its minions'
    /// events, before any forwarding up), and their send-to-syndic-bus
    /// latency over all of them, µs.
    #[serde(default)]
    pub syndic_delivered: BTreeMap<String, u64>,
    #[serde(default)]
    pub syndic_latency_us: MicroPercentiles,
}

impl EventBench {
    /// The report lines.
    pub fn lines(&self) -> Vec<String> {
        let l = &self.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let mut out = vec![
            format!(
                "events: {} /s per minion for {} s: planned {}, sent {}, unsent {}, acked {}, refused {}",
                self.rate, self.secs, self.planned, self.sent, self.unsent, self.acked, self.refused
            ),
            format!(
                "events at the top: delivered {} ({:.1}/s), lost {}, duplicate {}, malformed {} (waited {:.1} s after the last send)",
                self.delivered, self.delivered_per_sec, self.lost, self.duplicate, self.malformed, self.grace_secs
            ),
            format!(
                "event latency send->top subscriber: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                ms(l.p50), ms(l.p90), ms(l.p99), ms(l.max)
            ),
        ];
        let mut cpu = match self.top_cpu_secs {
            Some(c) => format!(
                "CPU during sending: top {c:.2} s ({:.0}% of one core)",
                100.0 * c / self.secs.max(1e-9)
            ),
            None => "CPU during sending: top n/a (attached)".to_string(),
        };
        for (id, c) in &self.syndic_cpu_secs {
            cpu.push_str(&format!(", {id} {c:.2} s"));
        }
        out.push(cpu);
        if !self.syndic_delivered.is_empty() {
            let l = &self.syndic_latency_us;
            let per: Vec<String> = self
                .syndic_delivered
                .iter()
                .map(|(id, n)| format!("{id} {n}"))
                .collect();
            out.push(format!(
                "events on the syndics' own buses: {} (total {}); latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                per.join(", "),
                self.syndic_delivered.values().sum::<u64>(),
                ms(l.p50),
                ms(l.p99),
                ms(l.max)
            ));
        }
        if let (Some(p), Some(d)) = (self.top_events_published, self.top_events_dropped) {
            out.push(format!(
                "top event bus: {p} events fired, {d} dropped for slow subscribers"
            ));
        }
        out
    }
}

/// CPU seconds (user + system) process `pid` has used, from
/// `/proc/<pid>/stat` (`None` when it cannot be read).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_secs_of_stat(&text)
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds. The fields
/// after the command name (which may hold spaces and parentheses) start
/// at the last `)`; utime and stime are fields 14 and 15, in clock ticks
/// of `USER_HZ`, which Linux fixes at 100 for this interface.
pub fn cpu_secs_of_stat(text: &str) -> Option<f64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts with field 3 (state): utime is field 14 -> index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Subscribes to the bus of the master with `sock_dir`/`cachedir` as
/// `salt-run state.event tagmatch=<tagmatch>` does; returns once the
/// master said the subscription is in place.
pub async fn subscribe(
    sock_dir: &Path,
    cachedir: &Path,
    tagmatch: &str,
) -> Result<UnixStream, String> {
    let token_path = cachedir.join(TOKEN_FILE);
    let token = std::fs::read_to_string(&token_path)
        .map_err(|e| format!("{}: {e}", token_path.display()))?;
    let sock = sock_dir.join(SOCKET_NAME);
    let mut s = UnixStream::connect(&sock)
        .await
        .map_err(|e| format!("{}: {e}", sock.display()))?;
    let mut kwargs = BTreeMap::new();
    kwargs.insert("tagmatch".to_string(), Value::String(tagmatch.to_string()));
    let hello = ClientReq::Hello {
        token: token.trim().to_string(),
    };
    let watch = ClientReq::Runner {
        fun: "state.event".to_string(),
        args: Vec::new(),
        kwargs,
    };
    for req in [hello, watch] {
        write_frame(&mut s, &req).await.map_err(|e| e.to_string())?;
        match read_frame::<ClientMsg, _>(&mut s).await {
            Ok(Some(ClientMsg::Ready)) => {}
            Ok(Some(ClientMsg::Error { message, .. })) => return Err(message),
            Ok(_) => return Err("unexpected answer to state.event".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(s)
}

/// Reads events off `s` into `tally` until the master closes the stream
/// (the caller aborts the task to stop it earlier).
pub async fn collect(mut s: UnixStream, tally: std::sync::Arc<std::sync::Mutex<EventTally>>) {
    while let Ok(Some(ClientMsg::Runner(v))) = read_frame::<ClientMsg, _>(&mut s).await {
        let now = brine_common::proto::now_us();
        let tag = v.get("tag").and_then(Value::as_str).unwrap_or("");
        let data = v.get("data").unwrap_or(&Value::Null);
        if let Ok(mut t) = tally.lock() {
            t.on_event(tag, data, now);
        }
    }
}

/// The top master's bus counters (`events_published`,
/// `events_dropped` of `manage.stats`), if it answers within 10 s.
async fn bus_counters(sock_dir: &Path, cachedir: &Path) -> Option<(u64, u64)> {
    let ask = async {
        let mut c = brine_common::client::LocalClient::connect(sock_dir, cachedir)
            .await
            .ok()?;
        let stats = c
            .runner("manage.stats", Vec::new(), BTreeMap::new())
            .await
            .ok()?;
        Some((
            stats.get("events_published")?.as_u64()?,
            stats.get("events_dropped")?.as_u64()?,
        ))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), ask)
        .await
        .ok()
        .flatten()
}

/// Where the event phase reads its figures.
pub struct Phase<'a> {
    /// The top's client channel.
    pub sock_dir: &'a Path,
    pub cachedir: &'a Path,
    pub plan: &'a EventPlan,
    /// The top's process (`None` when attached) and each syndic's.
    pub top_pid: Option<u32>,
    pub syndic_pids: Vec<(String, u32)>,
    /// Client channels (id, `sock_dir`, `cachedir`) of the last-tier
    /// syndics, whose own buses are watched too.
    pub leaves: Vec<(String, PathBuf, PathBuf)>,
    /// Longest wait after the last send for events still on their way.
    pub grace: std::time::Duration,
    pub interrupted: &'a std::sync::atomic::AtomicBool,
}

/// CPU seconds of the top and each syndic now.
fn cpu_marks(p: &Phase<'_>) -> (Option<f64>, BTreeMap<String, f64>) {
    let syn = p
        .syndic_pids
        .iter()
        .filter_map(|(id, pid)| Some((id.clone(), cpu_secs(*pid)?)))
        .collect();
    (p.top_pid.and_then(cpu_secs), syn)
}

/// Runs the event phase: subscribes on the top, tells the workers when to
/// start (the go file, one second ahead so every worker has read it),
/// reads the masters' CPU time at the start and the end of the sending
/// window, and waits until every planned event arrived or the grace
/// period is over. The sent counts are the workers' to add.
pub async fn run_phase(p: &Phase<'_>) -> Result<EventBench, String> {
    use brine_common::proto::now_us;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let stream = subscribe(p.sock_dir, p.cachedir, &format!("{TAG_PREFIX}*")).await?;
    let bus0 = bus_counters(p.sock_dir, p.cachedir).await;
    let tally = std::sync::Arc::new(std::sync::Mutex::new(
        EventTally::new(p.plan.minions, max_per_minion(p.plan)).map_err(|e| e.to_string())?,
    ));
    let reader = tokio::spawn(collect(stream, tally.clone()));
    let mut leaf_readers = Vec::new();
    for (id, sd, cd) in &p.leaves {
        let s = subscribe(sd, cd, &format!("{TAG_PREFIX}*"))
            .await
            .map_err(|e| format!("{id}: {e}"))?;
        let t = std::sync::Arc::new(std::sync::Mutex::new(
            EventTally::new(p.plan.minions, max_per_minion(p.plan)).map_err(|e| e.to_string())?,
        ));
        leaf_readers.push((id.clone(), tokio::spawn(collect(s, t.clone())), t));
    }
    let start_us = now_us() + 1_000_000;
    let tmp = p.plan.go_file.with_extension("tmp");
    std::fs::write(&tmp, start_us.to_string())
        .and_then(|()| std::fs::rename(&tmp, &p.plan.go_file))
        .map_err(|e| format!("{}: {e}", p.plan.go_file.display()))?;
    let until = |us: u64| tokio::time::sleep(Duration::from_micros(us.saturating_sub(now_us())));
    until(start_us).await;
    let (top0, syn0) = cpu_marks(p);
    let end_us = start_us + (p.plan.secs * 1e6) as u64;
    until(end_us).await;
    let (top1, syn1) = cpu_marks(p);
    let want = planned_total(p.plan);
    let grace_end = end_us + p.grace.as_micros() as u64;
    let delivered = |t: &std::sync::Mutex<EventTally>| t.lock().map_or(0, |t| t.delivered);
    while delivered(&tally) < want && now_us() < grace_end {
        if p.interrupted.load(Ordering::SeqCst) {
            reader.abort();
            leaf_readers.iter().for_each(|(_, r, _)| r.abort());
            return Err("interrupted".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = now_us().saturating_sub(end_us) as f64 / 1e6;
    reader.abort();
    leaf_readers.iter().for_each(|(_, r, _)| r.abort());
    let mut syndic_delivered = BTreeMap::new();
    let mut leaf_tallies = Vec::new();
    for (id, _, t) in &leaf_readers {
        let t = t.lock().map_err(|_| "event tally poisoned".to_string())?;
        syndic_delivered.insert(id.clone(), t.delivered);
        leaf_tallies.push(t);
    }
    let refs: Vec<&EventTally> = leaf_tallies.iter().map(|t| &**t).collect();
    let syndic_latency_us = EventTally::merged_latency(&refs).map_err(|e| e.to_string())?;
    let bus1 = bus_counters(p.sock_dir, p.cachedir).await;
    let t = tally
        .lock()
        .map_err(|_| "event tally poisoned".to_string())?;
    let (published, dropped) = match (bus0, bus1) {
        (Some(a), Some(b)) => (Some(b.0.saturating_sub(a.0)), Some(b.1.saturating_sub(a.1))),
        _ => (None, None),
    };
    Ok(EventBench {
        rate: p.plan.rate,
        secs: p.plan.secs,
        planned: want,
        delivered: t.delivered,
        duplicate: t.duplicate,
        malformed: t.malformed,
        delivered_per_sec: t.delivered as f64 / p.plan.secs.max(1e-9),
        latency_us: t.latency(),
        grace_secs: waited,
        top_cpu_secs: top0.zip(top1).map(|(a, b)| b - a),
        syndic_cpu_secs: syn1
            .into_iter()
            .filter_map(|(id, b)| Some((id.clone(), b - syn0.get(&id)?)))
            .collect(),
        top_events_published: published,
        top_events_dropped: dropped,
        syndic_delivered,
        syndic_latency_us,
        ..EventBench::default()
    })
}

/// Adds the workers' send counts to the phase's figures; lost is what
/// was sent and never delivered.
pub fn add_sent(b: &mut EventBench, sent: u64, unsent: u64, acked: u64, refused: u64) {
    b.sent = sent;
    b.unsent = unsent;
    b.acked = acked;
    b.refused = refused;
    b.lost = sent.saturating_sub(b.delivered);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sends_are_spread_evenly_and_counted_exactly() {
        let (minions, rate, secs) = (1000u32, 1.0, 10.0);
        let mut per_100ms = [0u64; 100];
        let mut total = 0;
        for i in 0..minions {
            let off = send_offset(i, minions, rate);
            assert!((0.0..1.0).contains(&off));
            let n = planned(off, rate, secs);
            assert_eq!(n, 10, "minion {i}");
            for k in 0..n {
                let t = send_at(off, k, rate);
                assert!(t < secs);
                per_100ms[(t * 10.0) as usize] += 1;
            }
            total += n;
        }
        assert_eq!(total, 10_000);
        // No bursts: every 100 ms of the run carries the same share.
        assert!(per_100ms.iter().all(|&c| c == 100), "{per_100ms:?}");
        let p = EventPlan {
            rate,
            secs,
            minions,
            go_file: PathBuf::new(),
        };
        assert_eq!(planned_total(&p), 10_000);
        // Fractional rates and durations.
        assert_eq!(planned(0.0, 2.5, 1.0), 3); // 0, 0.4, 0.8
        assert_eq!(planned(0.3, 2.5, 1.0), 2); // 0.3, 0.7
        assert_eq!(planned(0.2, 0.5, 3.0), 2); // 0.2, 2.2
        assert_eq!(planned(5.0, 1.0, 3.0), 0);
        assert_eq!(planned(0.0, 0.0, 3.0), 0);
    }

    #[test]
    fn the_tally_counts_once_and_measures_latency() {
        let mut t = EventTally::new(10, 2).unwrap();
        let (tag, data) = event_load(7, 0, 1_000_000);
        // As the top delivers a minion event.
        let wrapped = json!({"cmd": "_minion_event", "id": "lt-00007", "tag": tag, "data": data});
        t.on_event(&tag, &wrapped, 1_002_000);
        t.on_event(&tag, &wrapped, 1_003_000);
        let (tag1, data1) = event_load(7, 1, 2_000_000);
        // Wrapped once more (forwarded) still counts.
        t.on_event(&tag1, &json!({"data": {"data": data1}}), 2_010_000);
        t.on_event("salt/auth", &json!({}), 5);
        t.on_event("loadtest/event/x", &wrapped, 5);
        t.on_event("loadtest/event/3", &json!({"data": {}}), 5);
        // Beyond the plan: another minion or sequence number.
        t.on_event("loadtest/event/10", &event_load(10, 0, 0).1, 5);
        t.on_event(&tag, &event_load(7, 2, 0).1, 5);
        assert_eq!((t.delivered, t.duplicate, t.malformed), (2, 1, 4));
        let l = t.latency();
        assert!(l.p50 >= 1990 && l.p50 <= 2010, "{l:?}");
        assert!(l.max >= 9990 && l.max <= 10_010, "{l:?}");
        // Several buses' latencies together.
        let mut u = EventTally::new(10, 2).unwrap();
        let (tag2, data2) = event_load(1, 0, 0);
        u.on_event(&tag2, &data2, 50_000);
        let m = EventTally::merged_latency(&[&t, &u]).unwrap();
        assert!(m.p50 >= 1990 && m.p50 <= 10_010 && m.max >= 49_000, "{m:?}");
    }

    #[test]
    fn cpu_time_from_proc_stat() {
        let line = "1234 (salt (master) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(cpu_secs_of_stat(line), Some(3.0));
        assert_eq!(cpu_secs_of_stat("garbage"), None);
        assert!(cpu_secs(std::process::id()).is_some());
    }

    #[test]
    fn report_lines_say_the_figures() {
        let b = EventBench {
            rate: 1.0,
            secs: 10.0,
            planned: 100,
            sent: 100,
            delivered: 99,
            lost: 1,
            delivered_per_sec: 9.9,
            top_cpu_secs: Some(0.5),
            syndic_cpu_secs: [("syndic1".to_string(), 0.25)].into(),
            latency_us: MicroPercentiles {
                p50: 1500,
                p90: 2000,
                p99: 3000,
                max: 4000,
            },
            ..EventBench::default()
        };
        let text = b.lines().join("\n");
        for want in [
            "delivered 99 (9.9/s), lost 1",
            "p99 3.00 ms",
            "top 0.50 s (5% of one core), syndic1 0.25 s",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
    }
}
