//! `GET /metrics` (Prometheus text exposition format 0.0.4) and `GET /health`, served from the counters the
//! engine already keeps.
//!
//! Nothing here is on the hot path: readers and sinks only bump the atomics in [`ReceiveCounters`],
//! [`SinkCounters`], [`LatencyHistogram`] and [`FailingSince`]. A scrape reads them (relaxed loads) and formats
//! the text. [`serve`] answers HTTP requests on a thread of its own (hyper, see the `server` module): slow clients
//! are served concurrently and cut off by deadlines, so they cannot hold the endpoint.
//!
//! - `state.rs`: what a scrape reads ([`MetricsState`], one [`SinkMetrics`] per destination).
//! - `exposition.rs`: the text exposition ([`MetricsState::render`]).
//! - `health.rs`: liveness and readiness ([`MetricsState::live`], [`MetricsState::health`]).
//! - `server.rs`: the HTTP server ([`serve`]).
//!
//! [`ReceiveCounters`]: crate::telemetry::metrics::ReceiveCounters
//! [`SinkCounters`]: crate::telemetry::metrics::SinkCounters
//! [`FailingSince`]: crate::telemetry::metrics::FailingSince
//! [`LatencyHistogram`]: crate::telemetry::histogram::LatencyHistogram
//!
//! Metric names are stable snake_case and prefixed `sense_ingest_`; counters end in `_total`. Every family has
//! `# HELP` and `# TYPE` lines before its samples, and label values are escaped as the format requires.

mod exposition;
mod health;
mod server;
mod state;
#[cfg(test)]
mod tests;

pub use exposition::{escape_label_value, MAX_EXPOSED_SENDERS, PREFIX};
pub use server::{serve, CONNECTION_DEADLINE, HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
pub use state::{MetricsState, QueueProbe, SilentHosts, SinkMetrics};

/// `Content-Type` of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
