//! The writer of Butler SOS's own InfluxDB measurements: event counts (`qlikSenseEvents.eventCount`) and
//! user-event queue metrics (`userEvents.udpServerConfig.queueMetrics`).
//!
//! One thread with a single-threaded tokio runtime for the HTTP client. It wakes at each measurement's
//! `writeFrequency`, builds the lines ([`MetricsEncoder`]) for the configured InfluxDB version and writes them
//! with the same transports as the `user_events` destination (v1 creates the database first, like Butler SOS).
//!
//! # Reset after write, and failures
//! Butler SOS resets its counters after each write. Here the numbers written are always "since the last
//! **successful** write": a failed write keeps them, and the next write carries the sum. Butler SOS keeps them by
//! accident on v1/v2 (the store function throws, so the timer callback never reaches its `clear*` calls) but
//! loses them on v3 (its v3 writers catch the error, then the counters are cleared). A write that reached
//! InfluxDB although it reported a failure (a lost answer) is counted again in the next one: at least once.
//!
//! # Shutdown
//! On stop the writer waits (up to `shutdownTimeout`) until every reader has finished (they merge their last
//! counts when they stop; the writer only holds a [`Weak`] reference, so it never keeps the channels open), then
//! writes both measurements a last time (at most `FINAL_WRITE_TIMEOUT`) and returns. Counts of a last write
//! that fails are lost: there is no spool for them (logged at WARN).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tracing::{debug, error, info, warn};

use crate::config::{InfluxConfig, MetricsWriteConfig};
use crate::event::slab::Slab;
use crate::event::RejectReason;
use crate::reader::ReaderShared;
use crate::sink::influxdb::metrics_encode::{MetricsEncoder, QueueSample};
use crate::sink::influxdb::InfluxTransport;
use crate::sink::{SinkError, Transport};
use crate::stop::StopSignal;
use crate::telemetry::event_counts::EventCounts;
use crate::telemetry::histogram::{HistogramSnapshot, BUCKETS, BUCKET_BOUNDS_SECONDS};
use crate::telemetry::metrics::{now_unix_ns, ReceiveCounters, SinkCounters};

/// Longest the last write at shutdown may take (a hung InfluxDB must not hold up the exit beyond the engine's
/// grace period for sinks).
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(4);

/// What the writer reads: the settings, and the engine's counters and queues.
#[derive(Debug)]
pub struct ButlerMetrics {
    /// `influxdbConfig` (connection and version).
    pub influx: InfluxConfig,
    /// Event counts: settings and the counts the readers merge into.
    pub event_count: Option<(MetricsWriteConfig, Arc<EventCounts>)>,
    /// Queue metrics: settings, when on.
    pub queue_metrics: Option<MetricsWriteConfig>,
    /// Receive counters.
    pub counters: Arc<ReceiveCounters>,
    /// Per-destination counters (spool gauges, latency histograms).
    pub sinks: Vec<(String, Arc<SinkCounters>)>,
    /// Each destination's channel (a receiver clone, only for its fill level).
    pub channels: Vec<Receiver<Slab>>,
    /// `sense-ingest.channelCapacity`.
    pub channel_capacity: usize,
    /// `messageQueue.backpressureThreshold` (%).
    pub backpressure_threshold_pct: u8,
    /// The readers' shared state (for the rate limiter, and to see when every reader has stopped).
    pub readers: Weak<ReaderShared>,
    /// `sense-ingest.shutdownTimeout`: longest wait for the readers at shutdown.
    pub shutdown_timeout: Duration,
}

/// Starts the writer thread.
pub fn spawn(metrics: ButlerMetrics, stop: Arc<StopSignal>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("butler-metrics".into())
        .spawn(move || run(metrics, stop))
}

/// Cumulative receive-side and latency totals at one moment; a queue sample is the difference of two.
#[derive(Debug, Clone, Copy)]
struct Totals {
    received: u64,
    accepted: u64,
    excluded: u64,
    rejected: [u64; RejectReason::ALL.len()],
    kernel_drops: u64,
    latency: HistogramSnapshot,
}

impl Totals {
    fn read(counters: &ReceiveCounters, sinks: &[(String, Arc<SinkCounters>)]) -> Totals {
        let mut latency = HistogramSnapshot {
            counts: [0; BUCKETS],
            sum_seconds: 0.0,
        };
        for (_, c) in sinks {
            let s = c.event_latency.snapshot();
            for (a, b) in latency.counts.iter_mut().zip(s.counts) {
                *a += b;
            }
            latency.sum_seconds += s.sum_seconds;
        }
        Totals {
            received: counters.received.get(),
            accepted: counters.accepted.get(),
            excluded: counters.excluded.get(),
            rejected: std::array::from_fn(|i| counters.rejected[i].get()),
            kernel_drops: counters.kernel_drops.get(),
            latency,
        }
    }
}

/// The counting part of a queue sample: what happened between `base` and `now` (README "Butler SOS metrics").
fn counted(base: &Totals, now: &Totals) -> QueueSample {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let rejected = |r: RejectReason| d(base.rejected[r.index()], now.rejected[r.index()]);
    let kernel = d(base.kernel_drops, now.kernel_drops);
    let received = d(base.received, now.received);
    let processed = d(base.accepted, now.accepted) + d(base.excluded, now.excluded);
    let failed = rejected(RejectReason::UnknownSource) + rejected(RejectReason::TooFewFields);
    let mut latency = now.latency;
    for (a, b) in latency.counts.iter_mut().zip(base.latency.counts) {
        *a = a.saturating_sub(b);
    }
    latency.sum_seconds = (latency.sum_seconds - base.latency.sum_seconds).max(0.0);
    let (avg, p95, max) = latency_ms(&latency);
    QueueSample {
        messages_received: received - rejected(RejectReason::DisallowedSource).min(received) + kernel,
        messages_queued: processed + failed,
        messages_processed: processed,
        messages_failed: failed,
        messages_dropped_rate_limit: rejected(RejectReason::RateLimited),
        messages_dropped_queue_full: kernel,
        messages_dropped_size: rejected(RejectReason::OverSize),
        processing_time_avg_ms: avg,
        processing_time_p95_ms: p95,
        processing_time_max_ms: max,
        ..QueueSample::default()
    }
}

/// Mean, 95th percentile and maximum of `h` in milliseconds. The mean is exact; the percentile and the maximum
/// are the upper bounds of the buckets holding them (the `+Inf` bucket reports the largest finite bound). All 0
/// when `h` is empty (Butler SOS writes 0 when its buffer is empty).
fn latency_ms(h: &HistogramSnapshot) -> (f64, f64, f64) {
    let count = h.count();
    if count == 0 {
        return (0.0, 0.0, 0.0);
    }
    let bound_ms = |i: usize| BUCKET_BOUNDS_SECONDS[i.min(BUCKET_BOUNDS_SECONDS.len() - 1)] * 1000.0;
    let rank = count.saturating_mul(95).div_ceil(100).max(1);
    let mut seen = 0;
    let mut p95 = 0.0;
    for (i, c) in h.counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            p95 = bound_ms(i);
            break;
        }
    }
    let max = h.counts.iter().rposition(|&c| c > 0).map_or(0.0, bound_ms);
    (h.sum_seconds * 1000.0 / count as f64, p95, max)
}

/// The name of the machine the receiver runs on (the `host` tag of queue metrics; Butler SOS writes its own
/// host's name there).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// One measurement's schedule and failure state.
struct Schedule {
    every: Duration,
    due: Instant,
    failing: bool,
}

impl Schedule {
    fn new(every: Duration) -> Schedule {
        Schedule {
            every,
            due: Instant::now() + every,
            failing: false,
        }
    }

    /// Moves to the next period after `now` (a late wake-up skips missed periods instead of bursting).
    fn advance(&mut self, now: Instant) {
        while self.due <= now {
            self.due += self.every;
        }
    }

    /// Logs the outcome of a write once per change: the first failure at WARN, the recovery at INFO.
    fn outcome(&mut self, what: &str, result: &Result<(), SinkError>) {
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                info!(measurement = what, "writing Butler SOS metrics to InfluxDB works again");
            }
            Err(e) if !self.failing => {
                self.failing = true;
                warn!(
                    measurement = what, error = %e,
                    "cannot write Butler SOS metrics to InfluxDB; the counts are kept and added to the next write"
                );
            }
            Err(e) => debug!(measurement = what, error = %e, "Butler SOS metrics write failed again"),
            Ok(()) => {}
        }
    }
}

/// The writer's state.
struct Writer {
    m: ButlerMetrics,
    transport: InfluxTransport,
    prepared: bool,
    host: String,
    events: Option<(MetricsEncoder, Schedule)>,
    queue: Option<(MetricsEncoder, Schedule)>,
    /// Totals at the last successful queue-metrics write.
    queue_base: Totals,
    out: Vec<u8>,
    overflow_reported: u64,
}

fn run(m: ButlerMetrics, stop: Arc<StopSignal>) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the Butler SOS metrics runtime; no event counts or queue metrics");
            return;
        }
    };
    let transport = match InfluxTransport::new(&m.influx) {
        Ok(t) => t,
        Err(e) => {
            error!(error = %e, "cannot create the InfluxDB client; no event counts or queue metrics");
            return;
        }
    };
    let version = m.influx.version;
    let events = m.event_count.as_ref().map(|(c, _)| {
        info!(
            measurement = %c.measurement, every_ms = c.write_frequency.as_millis() as u64,
            "writing event counts to InfluxDB"
        );
        (
            MetricsEncoder::new(version, &c.measurement, &c.tags),
            Schedule::new(c.write_frequency),
        )
    });
    let queue = m.queue_metrics.as_ref().map(|c| {
        info!(
            measurement = %c.measurement, every_ms = c.write_frequency.as_millis() as u64,
            "writing user-event queue metrics to InfluxDB"
        );
        (
            MetricsEncoder::new(version, &c.measurement, &c.tags),
            Schedule::new(c.write_frequency),
        )
    });
    let queue_base = Totals::read(&m.counters, &m.sinks);
    let mut w = Writer {
        m,
        transport,
        prepared: false,
        host: hostname(),
        events,
        queue,
        queue_base,
        out: Vec::with_capacity(4096),
        overflow_reported: 0,
    };
    while !stop.is_requested() {
        let now = Instant::now();
        if w.events.as_ref().is_some_and(|(_, s)| s.due <= now) {
            rt.block_on(w.write_event_counts());
        }
        if w.queue.as_ref().is_some_and(|(_, s)| s.due <= now) {
            rt.block_on(w.write_queue_metrics());
        }
        let next = [w.events.as_ref(), w.queue.as_ref()]
            .into_iter()
            .flatten()
            .map(|(_, s)| s.due)
            .min();
        // Sleeps until the next write is due (no write configured: until the stop), woken early by the stop.
        stop.wait_timeout(next.map(|n| n.saturating_duration_since(Instant::now())));
    }
    // Let every reader merge its last counts, then write a last time.
    let deadline = Instant::now() + w.m.shutdown_timeout;
    while w.m.readers.strong_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let last = async {
        if w.events.is_some() {
            w.write_event_counts().await;
        }
        if w.queue.is_some() {
            w.write_queue_metrics().await;
        }
    };
    // The timer must be created inside the runtime.
    if rt
        .block_on(async { tokio::time::timeout(FINAL_WRITE_TIMEOUT, last).await })
        .is_err()
    {
        warn!(
            timeout_s = FINAL_WRITE_TIMEOUT.as_secs(),
            "the last Butler SOS metrics write at shutdown did not finish in time; its counts are lost"
        );
    }
}

impl Writer {
    /// Sends `self.out` (holding `lines` lines), preparing the destination first if that has not succeeded yet.
    async fn send(&mut self, lines: usize) -> Result<(), SinkError> {
        if !self.prepared {
            self.transport.prepare().await?;
            self.prepared = true;
        }
        let rejected = self.transport.send(&self.out, lines).await?;
        if rejected > 0 {
            warn!(rejected, "InfluxDB refused some Butler SOS metrics lines");
        }
        Ok(())
    }

    async fn write_event_counts(&mut self) {
        let Some((_, schedule)) = &mut self.events else { return };
        schedule.advance(Instant::now());
        let Some((_, counts)) = &self.m.event_count else { return };
        let counts = Arc::clone(counts);
        let overflow = counts.overflow.get();
        if overflow > self.overflow_reported {
            warn!(
                events = overflow - self.overflow_reported,
                "event counts: too many distinct (source, host, subsystem) keys; these events are not counted"
            );
            self.overflow_reported = overflow;
        }
        let taken = counts.take();
        if taken.is_empty() {
            return; // Butler SOS writes nothing when nothing was counted.
        }
        self.out.clear();
        if let Some((encoder, _)) = &self.events {
            encoder.event_counts(&taken, now_unix_ns(), &mut self.out);
        }
        let result = self.send(taken.len()).await;
        match &result {
            Ok(()) => debug!(points = taken.len(), "event counts written"),
            Err(_) => counts.restore(taken),
        }
        if let Some((_, schedule)) = &mut self.events {
            schedule.outcome("event_count", &result);
        }
    }

    async fn write_queue_metrics(&mut self) {
        let Some((_, schedule)) = &mut self.queue else { return };
        schedule.advance(Instant::now());
        let now_ns = now_unix_ns();
        let totals = Totals::read(&self.m.counters, &self.m.sinks);
        let mut sample = counted(&self.queue_base, &totals);
        let capacity = self.m.channel_capacity.max(1);
        let deepest = self.m.channels.iter().map(Receiver::len).max().unwrap_or(0);
        sample.queue_size = deepest as u64;
        sample.queue_max_size = self.m.channel_capacity as u64;
        sample.queue_pending = self.m.sinks.iter().map(|(_, c)| c.spooled.get()).sum();
        sample.backpressure_active = deepest * 100 >= capacity * usize::from(self.m.backpressure_threshold_pct);
        sample.rate_limit_current = self
            .m
            .readers
            .upgrade()
            .map_or(0, |r| r.rules.snapshot().1.admission.busiest_rate_per_minute(now_ns));
        self.out.clear();
        if let Some((encoder, _)) = &self.queue {
            encoder.queue_metrics(&self.host, &sample, now_ns, &mut self.out);
        }
        let result = self.send(1).await;
        if result.is_ok() {
            self.queue_base = totals;
            debug!("queue metrics written");
        }
        if let Some((_, schedule)) = &mut self.queue {
            schedule.outcome("user_events_queue", &result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals() -> Totals {
        Totals {
            received: 0,
            accepted: 0,
            excluded: 0,
            rejected: [0; RejectReason::ALL.len()],
            kernel_drops: 0,
            latency: HistogramSnapshot {
                counts: [0; BUCKETS],
                sum_seconds: 0.0,
            },
        }
    }

    #[test]
    fn a_queue_sample_maps_every_outcome_and_adds_up() {
        let base = Totals {
            received: 100,
            accepted: 90,
            ..totals()
        };
        let mut now = Totals {
            received: 100 + 20,
            accepted: 90 + 10,
            excluded: 2,
            kernel_drops: 3,
            ..totals()
        };
        now.rejected[RejectReason::UnknownSource.index()] = 1;
        now.rejected[RejectReason::TooFewFields.index()] = 1;
        now.rejected[RejectReason::OverSize.index()] = 2;
        now.rejected[RejectReason::RateLimited.index()] = 3;
        now.rejected[RejectReason::DisallowedSource.index()] = 1;
        let s = counted(&base, &now);
        assert_eq!(
            s.messages_received,
            20 - 1 + 3,
            "disallowed sources are not received; kernel drops are"
        );
        assert_eq!(s.messages_processed, 12);
        assert_eq!(s.messages_failed, 2);
        assert_eq!(s.messages_queued, 14);
        assert_eq!(s.messages_dropped_size, 2);
        assert_eq!(s.messages_dropped_rate_limit, 3);
        assert_eq!(s.messages_dropped_queue_full, 3);
        assert_eq!(s.messages_received, s.messages_queued + s.messages_dropped_total());
    }

    #[test]
    fn latency_is_the_exact_mean_and_bucket_bounds() {
        let mut h = totals().latency;
        assert_eq!(latency_ms(&h), (0.0, 0.0, 0.0));
        h.counts[1] = 95; // <= 1 ms
        h.counts[4] = 5; // <= 10 ms
        h.sum_seconds = 0.150;
        assert_eq!(latency_ms(&h), (1.5, 1.0, 10.0));
        h.counts[BUCKETS - 1] = 100; // +Inf
        let (_, p95, max) = latency_ms(&h);
        assert_eq!((p95, max), (60_000.0, 60_000.0));
    }
}
