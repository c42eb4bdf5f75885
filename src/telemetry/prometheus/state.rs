//! What `/metrics` and `/health` read: the engine's counters per sink ([`SinkMetrics`]) and for the whole engine
//! ([`MetricsState`]), shared through `Arc`s.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::telemetry::histogram::LatencyHistogram;
use crate::telemetry::metrics::{FailingSince, ReceiveCounters, SinkCounters};

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

    pub(super) fn backend_name(&self) -> &'static str {
        // A poisoned lock still holds a valid `&'static str`.
        *self.backend.lock().unwrap_or_else(|p| p.into_inner())
    }
}
