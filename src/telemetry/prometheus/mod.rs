//! `GET /metrics` (Prometheus text exposition format 0.0.4) and `GET /health`, served from the counters the
//! engine already keeps.
//!
//! Nothing here is on the hot path: readers and sinks only bump the atomics in [`ReceiveCounters`],
//! [`SinkCounters`], [`LatencyHistogram`] and [`FailingSince`]. A scrape reads them (relaxed loads) and formats
//! the text. [`serve`] answers HTTP requests on a thread of its own (hyper, see the `server` module): slow clients
//! are served concurrently and cut off by deadlines, so they cannot hold the endpoint.
//!
//! Metric names are stable snake_case and prefixed `sense_ingest_`; counters end in `_total`. Every family has
//! `# HELP` and `# TYPE` lines before its samples, and label values are escaped as the format requires.

mod server;

use std::borrow::Cow;
use std::fmt::{self, Display, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::event::RejectReason;
use crate::telemetry::histogram::{HistogramSnapshot, LatencyHistogram};
use crate::telemetry::metrics::{now_unix_ns, HostSinkStats, HostStats, ReceiveCounters, SinkCounters};

pub use server::{serve, CONNECTION_DEADLINE, HEADER_READ_TIMEOUT, MAX_CONNECTIONS};

/// `Content-Type` of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// When the current outage of a sink began, as Unix milliseconds; 0 while the sink is healthy.
///
/// Protocol for a sink worker: call [`FailingSince::mark_failed`] each time a send attempt fails (only the first
/// failure of an outage is kept) and [`FailingSince::mark_ok`] each time a batch is delivered. A batch the
/// destination refuses for good (non-retriable 4xx) counts as a failure too: the destination is not taking our
/// data.
#[derive(Debug, Default)]
pub struct FailingSince(AtomicU64);

impl FailingSince {
    /// Healthy.
    pub fn new() -> FailingSince {
        FailingSince::default()
    }

    /// Records a failed send now. Keeps the time of the first failure while the outage lasts.
    pub fn mark_failed(&self) {
        self.mark_failed_at(now_unix_ms());
    }

    /// Records a failed send at `unix_ms` (for tests and callers that already read the clock). Keeps an earlier
    /// start of the same outage. `0` is treated as 1 ms so it never reads as healthy.
    pub fn mark_failed_at(&self, unix_ms: u64) {
        let _ = self
            .0
            .compare_exchange(0, unix_ms.max(1), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Records a successful delivery: the outage, if any, is over.
    pub fn mark_ok(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// Unix milliseconds of the first failure of the current outage, or `None` while healthy.
    pub fn since_unix_ms(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    /// How long the current outage has lasted at `now_unix_ms` (zero if the clock went backwards), or `None`.
    pub fn failing_for(&self, now_unix_ms: u64) -> Option<Duration> {
        self.since_unix_ms()
            .map(|since| Duration::from_millis(now_unix_ms.saturating_sub(since)))
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    now_unix_ns() / 1_000_000
}

/// Channel fill of a sink: `(slabs queued now, channel capacity in slabs)`.
pub type QueueProbe = Box<dyn Fn() -> (usize, usize) + Send + Sync>;

/// What `/metrics` and `/health` read about one sink. The engine creates one per sink with [`SinkMetrics::new`]
/// and hands clones of the `Arc`s to the sink's worker.
pub struct SinkMetrics {
    /// The sink's name, the `sink` label (`influxdb`, `mqtt`, `new_relic:<account>`, `stdout`).
    pub name: String,
    /// Its counters (the same `Arc` as in `Engine::sinks`).
    pub counters: Arc<SinkCounters>,
    /// Reads the fill level of its input channel (e.g. `move || (rx.len(), rx.capacity().unwrap_or(0))`).
    pub queue: QueueProbe,
    /// Time from the first send attempt of a batch to its acknowledgement, one observation per delivered batch
    /// (retries and backoff included).
    pub batch_latency: Arc<LatencyHistogram>,
    /// Time from receiving a datagram to the destination acknowledging its event, one observation per delivered
    /// event (recorded per batch with `record_n`).
    pub event_latency: Arc<LatencyHistogram>,
    /// Start of the current outage (see [`FailingSince`] for the protocol).
    pub failing_since: Arc<FailingSince>,
}

impl SinkMetrics {
    /// A sink's metrics, sharing the histograms and outage marker of its `counters`.
    pub fn new(
        name: impl Into<String>,
        counters: Arc<SinkCounters>,
        queue: impl Fn() -> (usize, usize) + Send + Sync + 'static,
    ) -> SinkMetrics {
        // The sink worker records into the histograms and outage marker its counters carry.
        SinkMetrics {
            name: name.into(),
            batch_latency: Arc::clone(&counters.batch_latency),
            event_latency: Arc::clone(&counters.event_latency),
            failing_since: Arc::clone(&counters.failing_since),
            counters,
            queue: Box::new(queue),
        }
    }
}

impl fmt::Debug for SinkMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkMetrics")
            .field("name", &self.name)
            .field("counters", &self.counters)
            .field("failing_since", &self.failing_since)
            .finish_non_exhaustive()
    }
}

/// Everything `/metrics` and `/health` report, shared with the engine through `Arc`s.
pub struct MetricsState {
    /// Receive counters (the same `Arc` as `Engine::counters`).
    pub receive: Arc<ReceiveCounters>,
    /// One entry per sink, in the engine's order.
    pub sinks: Vec<SinkMetrics>,
    /// True while every reader thread is running on its bound socket. The engine sets it once the readers are
    /// started and clears it when a reader stops on an error (and at shutdown).
    pub readers_bound: Arc<AtomicBool>,
    /// The receive backend in use (`BackendInUse::as_str()`: `io_uring` or `recvmmsg`), empty until a reader
    /// reports. Readers set it when they start listening and again when they fall back.
    pub backend: Arc<Mutex<&'static str>>,
    /// When the engine started (for `sense_ingest_uptime_seconds`).
    pub started: Instant,
    /// The build's version (`sense_ingest_build_info{version=..}`).
    pub version: &'static str,
    /// The Sense hosts silent now (sorted), when `sense-ingest.silentHostAfter` is set: exported as
    /// `sense_ingest_silent_hosts` and one `sense_ingest_silent_host{host}` per host. `None`: neither is exported
    /// (no alarm runs, so "0 silent" would be a claim nobody checked).
    pub silent_hosts: Option<SilentHosts>,
}

/// Reads the silent hosts (a closure, so telemetry does not depend on the alarm's module).
pub type SilentHosts = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

impl fmt::Debug for MetricsState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsState")
            .field("receive", &self.receive)
            .field("sinks", &self.sinks)
            .field("readers_bound", &self.readers_bound)
            .field("backend", &self.backend)
            .field("started", &self.started)
            .field("version", &self.version)
            .field("silent_hosts", &self.silent_hosts.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

impl MetricsState {
    /// A state over the engine's counters and sinks: readers not bound yet, no backend, started now, this crate's
    /// version.
    pub fn new(receive: Arc<ReceiveCounters>, sinks: Vec<SinkMetrics>) -> MetricsState {
        MetricsState {
            receive,
            sinks,
            readers_bound: Arc::new(AtomicBool::new(false)),
            backend: Arc::new(Mutex::new("")),
            started: Instant::now(),
            version: env!("CARGO_PKG_VERSION"),
            silent_hosts: None,
        }
    }

    fn backend_name(&self) -> &'static str {
        // A poisoned lock still holds a valid `&'static str`.
        *self.backend.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut out = Exposition(String::with_capacity((4 << 10) + self.sinks.len() * (6 << 10)));
        let r = &*self.receive;

        type ReceiveCounter = fn(&ReceiveCounters) -> u64;
        let receive: [(&str, &str, ReceiveCounter); 3] = [
            (
                "datagrams_received_total",
                "Datagrams read from the user-event sockets.",
                |r| r.received.get(),
            ),
            ("events_accepted_total", "Events parsed and handed to the sinks.", |r| {
                r.accepted.get()
            }),
            (
                "events_excluded_total",
                "Events dropped by userEvents.excludeUser.",
                |r| r.excluded.get(),
            ),
        ];
        for (name, help, get) in receive {
            out.scalar(name, COUNTER, help, get(r));
        }
        out.family("datagrams_rejected_total", COUNTER, "Datagrams rejected, by reason.");
        for reason in RejectReason::ALL {
            let value = r.rejected[reason.index()].get();
            out.sample("datagrams_rejected_total", &[("reason", reason.key())], value);
        }
        let receive: [(&str, &str, ReceiveCounter); 3] = [
            (
                "invalid_utf8_total",
                "Accepted events whose datagram held invalid UTF-8 (replaced with U+FFFD).",
                |r| r.invalid_utf8.get(),
            ),
            (
                "kernel_drops_total",
                "Datagrams the kernel dropped on our sockets because the receive buffer was full.",
                |r| r.kernel_drops.get(),
            ),
            (
                "channel_full_waits_total",
                "Times a reader found a sink's channel full and waited (backpressure).",
                |r| r.channel_full_waits.get(),
            ),
        ];
        for (name, help, get) in receive {
            out.scalar(name, COUNTER, help, get(r));
        }

        self.render_hosts(&mut out);

        type SinkValue = fn(&SinkMetrics) -> u64;
        let per_sink: [(&str, &str, &str, SinkValue); 10] = [
            (
                "sink_events_delivered_total",
                COUNTER,
                "Events the destination acknowledged.",
                |s| s.counters.delivered.get(),
            ),
            (
                "sink_events_skipped_total",
                COUNTER,
                "Events this sink does not send by rule (counted, not lost).",
                |s| s.counters.skipped.get(),
            ),
            (
                "sink_events_dropped_total",
                COUNTER,
                "Events lost: refused by the destination or undelivered after all retries.",
                |s| s.counters.dropped.get(),
            ),
            ("sink_retries_total", COUNTER, "Retried requests.", |s| {
                s.counters.retries.get()
            }),
            ("sink_batches_total", COUNTER, "Batches delivered.", |s| {
                s.counters.batches.get()
            }),
            (
                "sink_values_changed_total",
                COUNTER,
                "Values changed to make them storable.",
                |s| s.counters.values_changed.get(),
            ),
            (
                "sink_spooled_events",
                GAUGE,
                "Events waiting in the sink's disk spool.",
                |s| s.counters.spooled.get(),
            ),
            ("sink_spool_bytes", GAUGE, "Bytes of the sink's disk spool now.", |s| {
                s.counters.spool_bytes.get()
            }),
            (
                "sink_spool_max_bytes",
                GAUGE,
                "The sink's spool size cap (spool.maxBytes); 0 without a spool.",
                |s| s.counters.spool_max_bytes.get(),
            ),
            (
                "sink_spool_damaged_records_total",
                COUNTER,
                "Damaged spool records found; each cost the rest of its segment file.",
                |s| s.counters.spool_damaged_records.get(),
            ),
        ];
        for (name, kind, help, get) in per_sink {
            out.family(name, kind, help);
            for s in &self.sinks {
                out.sample(name, &[("destination", &s.name)], get(s));
            }
        }
        let queues: Vec<(usize, usize)> = self.sinks.iter().map(|s| (s.queue)()).collect();
        out.family(
            "sink_queue_depth",
            GAUGE,
            "Slabs of events waiting in the sink's input channel.",
        );
        for (s, (depth, _)) in self.sinks.iter().zip(&queues) {
            out.sample("sink_queue_depth", &[("destination", &s.name)], depth);
        }
        out.family(
            "sink_queue_capacity",
            GAUGE,
            "Capacity of the sink's input channel, in slabs.",
        );
        for (s, (_, capacity)) in self.sinks.iter().zip(&queues) {
            out.sample("sink_queue_capacity", &[("destination", &s.name)], capacity);
        }
        let now_ms = now_unix_ms();
        out.family(
            "sink_failing_seconds",
            GAUGE,
            "How long the sink's current outage has lasted; 0 while it delivers.",
        );
        for s in &self.sinks {
            let failing = s.failing_since.failing_for(now_ms).unwrap_or_default();
            out.sample(
                "sink_failing_seconds",
                &[("destination", &s.name)],
                Float(failing.as_secs_f64()),
            );
        }
        out.family(
            "sink_batch_latency_seconds",
            HISTOGRAM,
            "Time from a batch's first send attempt to its acknowledgement, retries included.",
        );
        for s in &self.sinks {
            out.histogram("sink_batch_latency_seconds", &s.name, &s.batch_latency.snapshot());
        }
        out.family(
            "event_latency_seconds",
            HISTOGRAM,
            "Time from receiving an event's datagram to the destination acknowledging it.",
        );
        for s in &self.sinks {
            out.histogram("event_latency_seconds", &s.name, &s.event_latency.snapshot());
        }

        let bound = u8::from(self.readers_bound.load(Ordering::Relaxed));
        out.scalar(
            "readers_bound",
            GAUGE,
            "1 while every reader runs on its bound socket.",
            bound,
        );
        out.family(
            "reader_backend",
            GAUGE,
            "The receive backend in use (io_uring or recvmmsg).",
        );
        let backend = self.backend_name();
        if !backend.is_empty() {
            out.sample("reader_backend", &[("backend", backend)], 1);
        }
        out.family("build_info", GAUGE, "The running build; always 1.");
        out.sample("build_info", &[("version", self.version)], 1);
        let uptime = Float(self.started.elapsed().as_secs_f64());
        out.scalar("uptime_seconds", GAUGE, "Seconds since the engine started.", uptime);
        process_metrics(&mut out.0);
        if let Some(silent_hosts) = &self.silent_hosts {
            let hosts = silent_hosts();
            out.scalar(
                "silent_hosts",
                GAUGE,
                "Known Sense hosts that sent no user event for sense-ingest.silentHostAfter.",
                hosts.len(),
            );
            out.family(
                "silent_host",
                GAUGE,
                "1 for each Sense host silent now (absent once it sends again).",
            );
            for host in &hosts {
                out.sample("silent_host", &[("sense_host", host)], 1);
            }
        }
        out.0
    }

    /// The per-sender families: receive outcomes by `sender` (the sender's IP), and destination outcomes by
    /// `sender` and `destination`. Only senders that passed admission are shown one by one, the busiest
    /// [`MAX_EXPOSED_SENDERS`] of them; the rest (senders whose every datagram was refused by
    /// `allowedSources`, senders beyond that number or beyond the tracking cap) are summed under
    /// `sender="other"`, so a port scan cannot grow the exposition. A rejected-reason sample appears once it is
    /// non-zero. A destination with no per-sender counts yet has no per-sender samples.
    fn render_hosts(&self, out: &mut Exposition) {
        let (hosts, exposed) = fold_senders(self.receive.hosts.snapshot());
        let names: Vec<&str> = hosts.iter().map(|(name, _)| name.as_str()).collect();
        type HostValue = fn(&HostStats) -> u64;
        let per_host: [(&str, &str, HostValue); 3] = [
            (
                "sender_datagrams_received_total",
                "Datagrams read from the user-event sockets, per sender.",
                |h| h.received,
            ),
            (
                "sender_events_accepted_total",
                "Events parsed and handed to the sinks, per sender.",
                |h| h.accepted,
            ),
            (
                "sender_events_excluded_total",
                "Events dropped by userEvents.excludeUser, per sender.",
                |h| h.excluded,
            ),
        ];
        for (name, help, get) in per_host {
            out.family(name, COUNTER, help);
            for ((_, h), host) in hosts.iter().zip(&names) {
                out.sample(name, &[("sender", host)], get(h));
            }
        }
        let name = "sender_datagrams_rejected_total";
        out.family(name, COUNTER, "Datagrams rejected, per sender and reason.");
        for ((_, h), host) in hosts.iter().zip(&names) {
            for reason in RejectReason::ALL {
                let n = h.rejected[reason.index()];
                if n > 0 {
                    out.sample(name, &[("sender", host), ("reason", reason.key())], n);
                }
            }
        }

        let sinks: Vec<(&str, Vec<(String, HostSinkStats)>)> = self
            .sinks
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    fold_sink_senders(s.counters.hosts.snapshot(), &exposed),
                )
            })
            .collect();
        type HostSinkValue = fn(&HostSinkStats) -> u64;
        let per_host_sink: [(&str, &str, &str, HostSinkValue); 5] = [
            (
                "sender_events_delivered_total",
                COUNTER,
                "Events the destination acknowledged, per sender.",
                |h| h.delivered,
            ),
            (
                "sender_events_skipped_total",
                COUNTER,
                "Events the destination does not send by rule (counted, not lost), per sender.",
                |h| h.skipped,
            ),
            (
                "sender_events_dropped_total",
                COUNTER,
                "Events lost at the destination (all causes, spool cap included), per sender.",
                |h| h.dropped,
            ),
            (
                "sender_events_dropped_spool_cap_total",
                COUNTER,
                "Events the spool's size cap evicted (also in sender_events_dropped_total), per sender.",
                |h| h.dropped_spool_cap,
            ),
            (
                "sender_spooled_events",
                GAUGE,
                "Events waiting in the destination's disk spool, per sender.",
                |h| h.spooled,
            ),
        ];
        for (name, kind, help, get) in per_host_sink {
            out.family(name, kind, help);
            for (destination, hosts) in &sinks {
                for (host, h) in hosts {
                    out.sample(name, &[("sender", host), ("destination", destination)], get(h));
                }
            }
        }
    }

    /// Liveness (`/live`): `(200, "live")` once the readers are bound, whatever the destinations do, so a liveness
    /// probe never restarts the receiver during a destination outage (that is when the spool matters); `503`
    /// before. An engine that is wedged does not answer at all.
    pub fn live(&self) -> (u16, String) {
        if self.readers_bound.load(Ordering::Relaxed) {
            (200, "live".to_string())
        } else {
            (503, "not live: readers not bound".to_string())
        }
    }

    /// Readiness (`/ready`, `/health`): `(200, "ok")` when the readers are bound and no sink has been failing for
    /// longer than `max_failing`, else
    /// `(503, reason)` naming what is wrong, e.g. `unhealthy: sink influxdb failing for 95s`.
    pub fn health(&self, max_failing: Duration) -> (u16, String) {
        self.health_at(max_failing, now_unix_ms())
    }

    fn health_at(&self, max_failing: Duration, now_unix_ms: u64) -> (u16, String) {
        let mut problems = Vec::new();
        if !self.readers_bound.load(Ordering::Relaxed) {
            problems.push("readers not bound".to_string());
        }
        for s in &self.sinks {
            if let Some(d) = s.failing_since.failing_for(now_unix_ms) {
                if d > max_failing {
                    problems.push(format!("sink {} failing for {}s", s.name, d.as_secs()));
                }
            }
        }
        if problems.is_empty() {
            (200, "ok".to_string())
        } else {
            (503, format!("unhealthy: {}", problems.join("; ")))
        }
    }
}

/// Senders shown one by one on `/metrics` (the busiest); the rest are summed under `sender="other"`.
pub const MAX_EXPOSED_SENDERS: usize = 256;

/// The sender label for everything not shown one by one.
const OTHER_SENDERS: &str = "other";

/// Receive outcomes per sender as exposed (see [`MetricsState::render_hosts`]): the admitted senders, busiest
/// first (at most [`MAX_EXPOSED_SENDERS`]), then `other` when anything was folded; and the set shown by IP.
fn fold_senders(
    mut hosts: Vec<(std::net::IpAddr, HostStats)>,
) -> (Vec<(String, HostStats)>, std::collections::HashSet<std::net::IpAddr>) {
    let refused = RejectReason::DisallowedSource.index();
    hosts.sort_by(|(a, x), (b, y)| y.received.cmp(&x.received).then(a.cmp(b)));
    let mut shown = Vec::new();
    let mut exposed = std::collections::HashSet::new();
    let mut other = HostStats::default();
    let mut folded = false;
    for (ip, h) in hosts {
        let admitted = h.received > h.rejected[refused] && !ip.is_unspecified();
        if admitted && shown.len() < MAX_EXPOSED_SENDERS {
            exposed.insert(ip);
            shown.push((ip, h));
        } else {
            other.add(&h);
            folded = true;
        }
    }
    // Shown in address order, as before the cap existed.
    shown.sort_by_key(|(ip, _)| *ip);
    let mut out: Vec<(String, HostStats)> = shown.into_iter().map(|(ip, h)| (ip.to_string(), h)).collect();
    if folded {
        out.push((OTHER_SENDERS.to_owned(), other));
    }
    (out, exposed)
}

/// A destination's outcomes per sender as exposed: the senders in `exposed`, then `other` for the rest.
fn fold_sink_senders(
    hosts: Vec<(std::net::IpAddr, HostSinkStats)>,
    exposed: &std::collections::HashSet<std::net::IpAddr>,
) -> Vec<(String, HostSinkStats)> {
    let mut out = Vec::new();
    let mut other: Option<HostSinkStats> = None;
    for (ip, h) in hosts {
        if exposed.contains(&ip) {
            out.push((ip.to_string(), h));
        } else {
            let o = other.get_or_insert_with(HostSinkStats::default);
            o.delivered += h.delivered;
            o.skipped += h.skipped;
            o.dropped += h.dropped;
            o.dropped_spool_cap += h.dropped_spool_cap;
            o.spooled += h.spooled;
        }
    }
    out.extend(other.map(|o| (OTHER_SENDERS.to_owned(), o)));
    out
}

/// The standard `process_*` families (Prometheus client convention, no prefix) from `/proc/self`: CPU seconds,
/// resident memory, open file descriptors, start time. A value that cannot be read is left out.
fn process_metrics(out: &mut String) {
    use std::fmt::Write as _;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let mut family = |name: &str, kind: &str, help: &str, value: Option<String>| {
        if let Some(v) = value {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n");
        }
    };
    let cpu = field(14)
        .zip(field(15))
        .map(|(u, s)| format!("{}", (u + s) as f64 / ticks));
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        cpu,
    );
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| (pages * page).to_string());
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        rss,
    );
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count().to_string());
    family("process_open_fds", "gauge", "Number of open file descriptors.", fds);
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let start = boot
        .zip(field(22))
        .map(|(boot, since_boot)| format!("{}", boot as f64 + since_boot as f64 / ticks));
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        start,
    );
}

/// Prefix of every metric name.
pub const PREFIX: &str = "sense_ingest_";
const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";
const HISTOGRAM: &str = "histogram";

/// A text exposition being written. Names are given without [`PREFIX`]. Writing to a `String` cannot fail, so
/// `fmt` results are ignored.
struct Exposition(String);

impl Exposition {
    /// `# HELP` and `# TYPE` lines of a family. `help` is a constant without `\` or newlines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} {kind}");
    }

    /// A family with one unlabelled sample.
    fn scalar(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// One sample line: `name{label="value",...} value`.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(PREFIX);
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label_value(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// `_bucket{sink,le}` (cumulative), `_sum` and `_count` of one sink's histogram.
    fn histogram(&mut self, name: &str, sink: &str, snap: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (le, count) in snap.cumulative() {
            let le = le.map_or_else(|| "+Inf".to_string(), |b| Float(b).to_string());
            self.sample(&bucket, &[("destination", sink), ("le", &le)], count);
        }
        self.sample(
            &format!("{name}_sum"),
            &[("destination", sink)],
            Float(snap.sum_seconds),
        );
        self.sample(&format!("{name}_count"), &[("destination", sink)], snap.count());
    }
}

/// A float as the exposition format writes it (`+Inf`, `-Inf`, `NaN`, else Rust's shortest round-trip form).
struct Float(f64);

impl Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            v if v == f64::INFINITY => f.write_str("+Inf"),
            v if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}

/// Escapes a label value: `\` → `\\`, `"` → `\"`, newline → `\n` (exposition format 0.0.4).
pub fn escape_label_value(v: &str) -> Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::net::IpAddr;

    use crate::telemetry::metrics::{HostTally, SinkOutcome};

    use super::*;

    const NOW_MS: u64 = 1_800_000_000_000;

    /// A state with known values: two sinks, one of them with a name that needs escaping and failing for 90 s at
    /// the real clock's now.
    pub(super) fn state() -> MetricsState {
        state_at(now_unix_ms())
    }

    /// The same, failing for 90 s at `now_ms`.
    fn state_at(now_ms: u64) -> MetricsState {
        let receive = Arc::new(ReceiveCounters::default());
        receive.received.add(24);
        receive.accepted.add(20);
        receive.excluded.add(1);
        receive.reject(RejectReason::UnknownSource);
        receive.reject(RejectReason::UnknownSource);
        receive.reject(RejectReason::TooFewFields);
        receive.invalid_utf8.add(3);
        receive.kernel_drops.set(7);
        receive.channel_full_waits.add(5);
        let (h1, h2): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        let mut rejected = [0; RejectReason::ALL.len()];
        rejected[RejectReason::UnknownSource.index()] = 2;
        receive.hosts.merge(&[
            (
                h1,
                HostStats {
                    received: 16,
                    accepted: 15,
                    excluded: 1,
                    rejected: [0; RejectReason::ALL.len()],
                },
            ),
            (
                h2,
                HostStats {
                    received: 8,
                    accepted: 5,
                    excluded: 0,
                    rejected,
                },
            ),
        ]);

        let influx = Arc::new(SinkCounters::default());
        influx.delivered.add(19);
        influx.skipped.add(1);
        influx.batches.add(4);
        influx.retries.add(2);
        influx.values_changed.add(6);
        influx.spooled.set(11);
        influx.spool_damaged_records.add(2);
        let mut t = HostTally::default();
        t.add(h1, 14);
        t.add(h2, 5);
        influx.hosts.add(SinkOutcome::Delivered, &t);
        t.clear();
        t.add(h1, 1);
        influx.hosts.add(SinkOutcome::Skipped, &t);
        influx.hosts.add(SinkOutcome::DroppedSpoolCap, &t);
        influx.hosts.set_spooled(&t);
        let influx = SinkMetrics::new("influxdb", influx, || (3, 64));
        influx.batch_latency.record(Duration::from_millis(3));
        influx.batch_latency.record(Duration::from_millis(40));
        influx.batch_latency.record(Duration::from_secs(100));
        influx.event_latency.record_n(Duration::from_millis(20), 19);

        let nr = Arc::new(SinkCounters::default());
        nr.dropped.add(8);
        let nr = SinkMetrics::new("new_relic:NR \"A\"\\x\ny", nr, || (0, 16));
        nr.failing_since.mark_failed_at(now_ms - 90_000);

        let mut s = MetricsState::new(receive, vec![influx, nr]);
        s.readers_bound.store(true, Ordering::Relaxed);
        *s.backend.lock().unwrap() = "io_uring";
        s.version = "1.2.3";
        s
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn silent_hosts_render_as_a_count_and_one_gauge_per_host_only_when_watched() {
        let mut s = state();
        assert!(!s.render().contains("silent_host"), "no alarm, no claim");
        s.silent_hosts = Some(Arc::new(|| vec!["sense\"1".to_owned(), "sense2".to_owned()]));
        let text = s.render();
        let want = "# HELP sense_ingest_silent_hosts Known Sense hosts that sent no user event for \
                    sense-ingest.silentHostAfter.\n\
                    # TYPE sense_ingest_silent_hosts gauge\n\
                    sense_ingest_silent_hosts 2\n\
                    # HELP sense_ingest_silent_host 1 for each Sense host silent now (absent once it sends again).\n\
                    # TYPE sense_ingest_silent_host gauge\n\
                    sense_ingest_silent_host{sense_host=\"sense\\\"1\"} 1\n\
                    sense_ingest_silent_host{sense_host=\"sense2\"} 1\n";
        assert!(text.ends_with(want), "{text}");
        s.silent_hosts = Some(Arc::new(Vec::new));
        let text = s.render();
        assert!(
            text.contains("\nsense_ingest_silent_hosts 0\n") && !text.contains("silent_host{"),
            "{text}"
        );
    }

    #[test]
    fn receive_counters_render_exactly() {
        let text = state().render();
        let want = "# HELP sense_ingest_datagrams_received_total Datagrams read from the user-event sockets.\n\
                    # TYPE sense_ingest_datagrams_received_total counter\n\
                    sense_ingest_datagrams_received_total 24\n";
        assert!(text.starts_with(want), "{text}");
        let l = lines(&text);
        for want in [
            "sense_ingest_events_accepted_total 20",
            "sense_ingest_events_excluded_total 1",
            r#"sense_ingest_datagrams_rejected_total{reason="unknown_source"} 2"#,
            r#"sense_ingest_datagrams_rejected_total{reason="too_few_fields"} 1"#,
            r#"sense_ingest_datagrams_rejected_total{reason="over_size"} 0"#,
            r#"sense_ingest_datagrams_rejected_total{reason="disallowed_source"} 0"#,
            r#"sense_ingest_datagrams_rejected_total{reason="rate_limited"} 0"#,
            "sense_ingest_invalid_utf8_total 3",
            "sense_ingest_kernel_drops_total 7",
            "sense_ingest_channel_full_waits_total 5",
            "sense_ingest_readers_bound 1",
            r#"sense_ingest_reader_backend{backend="io_uring"} 1"#,
            r#"sense_ingest_build_info{version="1.2.3"} 1"#,
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
        let rejected = l
            .iter()
            .filter(|l| l.starts_with("sense_ingest_datagrams_rejected_total{"))
            .count();
        assert_eq!(rejected, RejectReason::ALL.len());
    }

    #[test]
    fn per_sender_metrics_render_by_host_and_destination() {
        let text = state().render();
        let l = lines(&text);
        for want in [
            r#"sense_ingest_sender_datagrams_received_total{sender="127.0.0.1"} 16"#,
            r#"sense_ingest_sender_datagrams_received_total{sender="::1"} 8"#,
            r#"sense_ingest_sender_events_accepted_total{sender="::1"} 5"#,
            r#"sense_ingest_sender_events_excluded_total{sender="127.0.0.1"} 1"#,
            r#"sense_ingest_sender_datagrams_rejected_total{sender="::1",reason="unknown_source"} 2"#,
            r#"sense_ingest_sender_events_delivered_total{sender="127.0.0.1",destination="influxdb"} 14"#,
            r#"sense_ingest_sender_events_delivered_total{sender="::1",destination="influxdb"} 5"#,
            r#"sense_ingest_sender_events_skipped_total{sender="127.0.0.1",destination="influxdb"} 1"#,
            r#"sense_ingest_sender_events_dropped_total{sender="127.0.0.1",destination="influxdb"} 1"#,
            r#"sense_ingest_sender_events_dropped_spool_cap_total{sender="127.0.0.1",destination="influxdb"} 1"#,
            r#"sense_ingest_sender_spooled_events{sender="127.0.0.1",destination="influxdb"} 1"#,
            r#"sense_ingest_sender_spooled_events{sender="::1",destination="influxdb"} 0"#,
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
        assert!(
            !text.contains(r#"host="127.0.0.1",reason="#),
            "zero reject reasons are left out: {text}"
        );
        assert!(
            !l.iter()
                .any(|l| l.starts_with("sense_ingest_sender_") && l.contains("new_relic")),
            "a destination without per-sender counts has no per-sender samples: {text}"
        );
    }

    #[test]
    fn sink_metrics_render_exactly_with_escaped_sink_names() {
        let text = state().render();
        let l = lines(&text);
        let nr = r#"destination="new_relic:NR \"A\"\\x\ny""#;
        for want in [
            r#"sense_ingest_sink_events_delivered_total{destination="influxdb"} 19"#.to_string(),
            format!("sense_ingest_sink_events_delivered_total{{{nr}}} 0"),
            r#"sense_ingest_sink_events_skipped_total{destination="influxdb"} 1"#.to_string(),
            format!("sense_ingest_sink_events_dropped_total{{{nr}}} 8"),
            r#"sense_ingest_sink_retries_total{destination="influxdb"} 2"#.to_string(),
            r#"sense_ingest_sink_batches_total{destination="influxdb"} 4"#.to_string(),
            r#"sense_ingest_sink_values_changed_total{destination="influxdb"} 6"#.to_string(),
            r#"sense_ingest_sink_spooled_events{destination="influxdb"} 11"#.to_string(),
            r#"sense_ingest_sink_spool_damaged_records_total{destination="influxdb"} 2"#.to_string(),
            format!("sense_ingest_sink_spool_damaged_records_total{{{nr}}} 0"),
            r#"sense_ingest_sink_queue_depth{destination="influxdb"} 3"#.to_string(),
            r#"sense_ingest_sink_queue_capacity{destination="influxdb"} 64"#.to_string(),
            format!("sense_ingest_sink_queue_capacity{{{nr}}} 16"),
            r#"sense_ingest_sink_failing_seconds{destination="influxdb"} 0"#.to_string(),
            r#"sense_ingest_sink_batch_latency_seconds_bucket{destination="influxdb",le="0.0005"} 0"#.to_string(),
            r#"sense_ingest_sink_batch_latency_seconds_bucket{destination="influxdb",le="0.005"} 1"#.to_string(),
            r#"sense_ingest_sink_batch_latency_seconds_bucket{destination="influxdb",le="0.05"} 2"#.to_string(),
            r#"sense_ingest_sink_batch_latency_seconds_bucket{destination="influxdb",le="60"} 2"#.to_string(),
            r#"sense_ingest_sink_batch_latency_seconds_bucket{destination="influxdb",le="+Inf"} 3"#.to_string(),
            r#"sense_ingest_sink_batch_latency_seconds_sum{destination="influxdb"} 100.043"#.to_string(),
            r#"sense_ingest_sink_batch_latency_seconds_count{destination="influxdb"} 3"#.to_string(),
            r#"sense_ingest_event_latency_seconds_bucket{destination="influxdb",le="0.01"} 0"#.to_string(),
            r#"sense_ingest_event_latency_seconds_bucket{destination="influxdb",le="0.025"} 19"#.to_string(),
            r#"sense_ingest_event_latency_seconds_count{destination="influxdb"} 19"#.to_string(),
            format!("sense_ingest_event_latency_seconds_count{{{nr}}} 0"),
        ] {
            assert!(l.contains(&want.as_str()), "missing {want:?} in\n{text}");
        }
        let failing = l
            .iter()
            .find_map(|l| l.strip_prefix(&format!("sense_ingest_sink_failing_seconds{{{nr}}} ")))
            .expect("failing seconds of the failing sink");
        assert!(failing.parse::<f64>().unwrap() >= 90.0, "{failing}");
        assert!(
            text.contains("# TYPE sense_ingest_sink_batch_latency_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE sense_ingest_sink_spooled_events gauge\n"),
            "{text}"
        );
    }

    /// One parsed sample line.
    #[derive(Debug)]
    pub(super) struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    fn is_metric_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// Parses `name{k="v",...} value` strictly (exposition format 0.0.4), unescaping label values.
    fn parse_sample(line: &str) -> Result<Sample, String> {
        let (series, value) = line.rsplit_once(' ').ok_or("no value")?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
        };
        let (name, mut rest) = match series.find('{') {
            Some(i) => (&series[..i], &series[i + 1..]),
            None => (series, ""),
        };
        if !is_metric_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut labels = Vec::new();
        if series.contains('{') {
            rest = rest.strip_suffix('}').ok_or("labels not closed")?;
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"").ok_or("label without =\"")?;
                if !is_metric_name(key) || key.contains(':') {
                    return Err(format!("bad label name {key:?}"));
                }
                let mut val = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().ok_or("label value not closed")? {
                        (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                            '\\' => val.push('\\'),
                            '"' => val.push('"'),
                            'n' => val.push('\n'),
                            c => return Err(format!("bad escape \\{c}")),
                        },
                        (i, '"') => break i,
                        (_, '\n') => return Err("raw newline in label value".into()),
                        (_, c) => val.push(c),
                    }
                };
                labels.push((key.to_string(), val));
                rest = &after[end + 1..];
                rest = match rest.strip_prefix(',') {
                    Some(r) if !r.is_empty() => r,
                    Some(_) => return Err("trailing comma".into()),
                    None if rest.is_empty() => rest,
                    None => return Err(format!("junk after label: {rest:?}")),
                };
            }
        }
        Ok(Sample {
            name: name.to_string(),
            labels,
            value,
        })
    }

    /// Checks the whole exposition: HELP then TYPE before a family's samples, each family declared once and its
    /// samples contiguous, every sample line parseable, no series twice; histograms cumulative with
    /// `+Inf == _count`. Returns the samples.
    pub(super) fn check_exposition(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'), "the exposition must end with a newline");
        let mut declared: HashMap<String, String> = HashMap::new();
        let mut helped: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut series = HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has text");
                assert!(is_metric_name(name) && !help.is_empty(), "{line}");
                assert!(helped.insert(name.to_string()), "HELP twice for {name}");
                current = None;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
                assert!(helped.contains(name), "TYPE before HELP for {name}");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(
                    declared.insert(name.to_string(), kind.to_string()).is_none(),
                    "TYPE twice: {name}"
                );
                current = Some(name.to_string());
            } else {
                let s = parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
                let family = current
                    .as_deref()
                    .unwrap_or_else(|| panic!("sample outside a family: {line}"));
                let base = if declared[family] == "histogram" {
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| s.name.strip_suffix(suffix))
                        .unwrap_or_else(|| panic!("histogram sample without suffix: {line}"))
                } else {
                    s.name.as_str()
                };
                assert_eq!(base, family, "sample not under its own family: {line}");
                if declared[family] == "counter" {
                    assert!(s.name.ends_with("_total"), "counter without _total: {line}");
                }
                assert!(
                    series.insert(format!("{}{:?}", s.name, s.labels)),
                    "series twice: {line}"
                );
                samples.push(s);
            }
        }
        // Histograms: per sink, buckets cumulative, ending at +Inf == _count.
        for (family, _) in declared.iter().filter(|(_, k)| *k == "histogram") {
            let sinks: HashSet<&str> = samples
                .iter()
                .filter(|s| s.name == format!("{family}_count"))
                .map(|s| s.labels[0].1.as_str())
                .collect();
            for sink in sinks {
                let of = |suffix: &'static str| {
                    let name = format!("{family}{suffix}");
                    samples.iter().filter(move |s| s.name == name && s.labels[0].1 == sink)
                };
                let buckets: Vec<&Sample> = of("_bucket").collect();
                assert!(
                    buckets.windows(2).all(|w| w[0].value <= w[1].value),
                    "{family} {sink} not cumulative"
                );
                let les: Vec<f64> = buckets
                    .iter()
                    .map(|b| {
                        assert_eq!(b.labels[1].0, "le");
                        if b.labels[1].1 == "+Inf" {
                            f64::INFINITY
                        } else {
                            b.labels[1].1.parse().unwrap()
                        }
                    })
                    .collect();
                assert!(les.windows(2).all(|w| w[0] < w[1]), "{family} {sink}: le must increase");
                assert_eq!(les.last(), Some(&f64::INFINITY), "{family} {sink}: last bucket is +Inf");
                let count = of("_count").next().unwrap().value;
                assert_eq!(buckets.last().unwrap().value, count, "{family} {sink}: +Inf != _count");
                assert_eq!(of("_sum").count(), 1);
            }
        }
        samples
    }

    #[test]
    fn the_whole_exposition_is_well_formed() {
        let samples = check_exposition(&state().render());
        // 2 sinks x 2 histograms x (17 buckets + sum + count).
        let histogram_samples = samples.iter().filter(|s| s.name.contains("latency_seconds")).count();
        assert_eq!(histogram_samples, 2 * 2 * 19);
        let escaped = samples
            .iter()
            .find(|s| s.name == "sense_ingest_sink_events_dropped_total" && s.value == 8.0)
            .unwrap();
        assert_eq!(
            escaped.labels,
            [("destination".to_string(), "new_relic:NR \"A\"\\x\ny".to_string())]
        );
    }

    #[test]
    fn a_state_without_sinks_or_backend_is_well_formed_too() {
        let s = MetricsState::new(Arc::new(ReceiveCounters::default()), Vec::new());
        let text = s.render();
        check_exposition(&text);
        assert!(text.contains("\nsense_ingest_readers_bound 0\n"), "{text}");
        assert!(!text.contains("sense_ingest_reader_backend{"), "{text}");
        assert!(
            text.contains(&format!(
                "sense_ingest_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("plain"), "plain");
        assert!(matches!(escape_label_value("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("l1\nl2"), r"l1\nl2");
    }

    #[test]
    fn floats_render_in_exposition_syntax() {
        assert_eq!(Float(0.0005).to_string(), "0.0005");
        assert_eq!(Float(1.0).to_string(), "1");
        assert_eq!(Float(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Float(f64::NEG_INFINITY).to_string(), "-Inf");
        assert_eq!(Float(f64::NAN).to_string(), "NaN");
    }

    #[test]
    fn failing_since_keeps_the_first_failure_until_a_success() {
        let f = FailingSince::new();
        assert_eq!(f.since_unix_ms(), None);
        f.mark_failed_at(1_000);
        f.mark_failed_at(5_000);
        assert_eq!(f.since_unix_ms(), Some(1_000));
        assert_eq!(f.failing_for(61_000), Some(Duration::from_secs(60)));
        assert_eq!(
            f.failing_for(500),
            Some(Duration::ZERO),
            "a clock step back is not negative"
        );
        f.mark_ok();
        assert_eq!(f.since_unix_ms(), None);
        f.mark_failed_at(0);
        assert_eq!(f.since_unix_ms(), Some(1), "time 0 must not read as healthy");
        f.mark_ok();
        f.mark_failed();
        assert!(
            f.since_unix_ms().unwrap() > NOW_MS - 1_000_000_000_000,
            "now, in Unix ms"
        );
    }

    #[test]
    fn health_is_ok_when_readers_are_bound_and_no_sink_fails_too_long() {
        let s = state_at(NOW_MS); // new_relic has been failing for 90 s
        assert_eq!(s.health_at(Duration::from_secs(120), NOW_MS), (200, "ok".to_string()));
        s.sinks[1].failing_since.mark_ok();
        assert_eq!(s.health_at(Duration::ZERO, NOW_MS), (200, "ok".to_string()));
    }

    #[test]
    fn health_names_each_sink_failing_too_long_and_for_how_long() {
        let s = state_at(NOW_MS);
        s.sinks[0].failing_since.mark_failed_at(NOW_MS - 400_000);
        let (status, text) = s.health_at(Duration::from_secs(60), NOW_MS);
        assert_eq!(status, 503);
        assert_eq!(
            text,
            "unhealthy: sink influxdb failing for 400s; sink new_relic:NR \"A\"\\x\ny failing for 90s"
        );
        let (status, text) = s.health_at(Duration::from_secs(100), NOW_MS);
        assert_eq!(
            (status, text.as_str()),
            (503, "unhealthy: sink influxdb failing for 400s")
        );
    }

    #[test]
    fn health_fails_while_readers_are_not_bound() {
        let s = state_at(NOW_MS);
        s.readers_bound.store(false, Ordering::Relaxed);
        assert_eq!(
            s.health_at(Duration::from_secs(3600), NOW_MS),
            (503, "unhealthy: readers not bound".to_string())
        );
    }

    #[test]
    fn senders_refused_by_allowed_sources_and_beyond_the_cap_are_summed_as_other() {
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let stats = |received: u64, refused: u64| {
            let mut h = HostStats {
                received,
                accepted: received - refused,
                ..HostStats::default()
            };
            h.rejected[RejectReason::DisallowedSource.index()] = refused;
            h
        };
        let mut hosts: Vec<_> = (0..MAX_EXPOSED_SENDERS as u32 + 2)
            .map(|i| (ip(i), stats(1000 - u64::from(i), 0)))
            .collect();
        hosts.push((ip(9999), stats(5000, 5000))); // a port scanner refused by allowedSources: busiest, but folded
        hosts.push(("0.0.0.0".parse().unwrap(), stats(3, 0))); // beyond the tracking cap
        let (shown, exposed) = fold_senders(hosts);
        assert_eq!(shown.len(), MAX_EXPOSED_SENDERS + 1);
        assert_eq!(exposed.len(), MAX_EXPOSED_SENDERS);
        let (name, other) = shown.last().unwrap();
        assert_eq!(name, "other");
        // The two least busy admitted senders, the scanner and the overflow.
        let folded_received = (1000 - MAX_EXPOSED_SENDERS as u64) + (1000 - MAX_EXPOSED_SENDERS as u64 - 1) + 5000 + 3;
        assert_eq!(other.received, folded_received);
        assert!(!exposed.contains(&ip(9999)));

        let sink = vec![
            (
                ip(0),
                HostSinkStats {
                    delivered: 7,
                    ..HostSinkStats::default()
                },
            ),
            (
                ip(9999),
                HostSinkStats {
                    delivered: 2,
                    ..HostSinkStats::default()
                },
            ),
        ];
        let folded = fold_sink_senders(sink, &exposed);
        assert_eq!(folded.len(), 2);
        assert_eq!((folded[0].0.as_str(), folded[0].1.delivered), ("10.0.0.0", 7));
        assert_eq!((folded[1].0.as_str(), folded[1].1.delivered), ("other", 2));
    }
}
