//! The Prometheus text exposition (format 0.0.4) of a [`MetricsState`]: every family with `# HELP` and `# TYPE`
//! lines, label values escaped, senders beyond [`MAX_EXPOSED_SENDERS`] summed under `sender="other"`.

use std::borrow::Cow;
use std::fmt::{self, Display, Write as _};
use std::sync::atomic::Ordering;

use super::state::{MetricsState, SinkMetrics};
use crate::event::RejectReason;
use crate::telemetry::histogram::HistogramSnapshot;
use crate::telemetry::metrics::{now_unix_ms, HostSinkStats, HostStats, ReceiveCounters};

impl MetricsState {
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
}

/// Senders shown one by one on `/metrics` (the busiest); the rest are summed under `sender="other"`.
pub const MAX_EXPOSED_SENDERS: usize = 256;

/// The sender label for everything not shown one by one.
const OTHER_SENDERS: &str = "other";

/// Receive outcomes per sender as exposed (see [`MetricsState::render_hosts`]): the admitted senders, busiest
/// first (at most [`MAX_EXPOSED_SENDERS`]), then `other` when anything was folded; and the set shown by IP.
pub(super) fn fold_senders(
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
pub(super) fn fold_sink_senders(
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
pub(super) struct Float(pub(super) f64);

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
