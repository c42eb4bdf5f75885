//! Destinations. A sink knows [`Event`]s and its wire format, nothing of UDP.
//!
//! The batched destinations (InfluxDB, New Relic, MQTT) share one worker ([`delivery::worker::run`]): it takes
//! slabs from the sink's channel, encodes every event at once into a reused [`delivery::batch::Batch`] (so the slab
//! goes back to the pool immediately), and flushes by count, bytes or age through the sink's [`Transport`], with
//! retries by [`SinkError::is_retriable`], splitting on 413, and a counter for every event that is not delivered.
//! [`delivery`] is that machinery (worker, queue, spool, batch, retune); the other modules are the destinations
//! and what they share ([`http`], [`json`], [`scan`]).

pub mod delivery;
pub mod http;
pub mod influxdb;
pub mod json;
pub mod mqtt;
pub mod new_relic;
pub mod scan;
pub mod stdout;

use std::time::Duration;

use crate::event::Event;

/// Puts the calling thread in the `SCHED_BATCH` policy. Called by every thread behind the readers' channels (each
/// `sink-*` thread: a batched destination's encoder, the stdout writer, the analytics watchers) and by each
/// delivery thread; threads these start (a runtime's blocking pool) inherit it. Such a thread keeps its
/// fair share of the CPU, but its wake-ups no longer preempt the thread running on the CPU it wakes on. That
/// thread is often a reader that has just handed a slab over (and rung this thread) and is about to sleep or
/// drain its socket again; preempted, it costs two more context switches and comes back to cold caches, and at a
/// high rate its socket fills meanwhile. The woken thread runs on an idle CPU or once the reader sleeps.
/// Unprivileged, and allowed by Docker's default seccomp profile; if it fails, the thread just runs as before.
pub fn background_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` with pid 0 changes only the calling thread's policy; `param` is an
        // initialised value that outlives the call, and the kernel only reads it.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot put a destination thread in SCHED_BATCH");
        }
    }
}

/// What an encoder did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoded {
    /// Appended to the batch.
    Yes,
    /// Appended, but a value had to be changed to be storable (counted).
    Changed,
    /// Not sent to this destination by rule (counted as skipped, not as lost).
    Skipped(&'static str),
}

/// Turns events into one destination's wire items. Each item is self-contained so a batch can be split anywhere
/// between items.
pub trait Encoder: Send {
    /// Appends `event` as one item to `out`.
    fn encode(&mut self, event: &Event, out: &mut Vec<u8>) -> Encoded;

    /// Called after each slab and at [`Encoder::next_tick_ns`] for encoders that also write on a clock (session
    /// gauges); appends at most one item and returns how many lines it wrote. Default: nothing.
    fn tick(&mut self, _now_ns: u64, _out: &mut Vec<u8>) -> usize {
        0
    }

    /// When [`Encoder::tick`] next has work (unix ns), for encoders that write on a clock; the worker sleeps
    /// until then at most. Default: `None`, never (an idle worker then has no timer).
    fn next_tick_ns(&self) -> Option<u64> {
        None
    }
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// No exchange completed (refused, reset, timeout; MQTT: not connected, connection lost or no progress before
    /// every message was confirmed).
    #[error("connection failed: {0}")]
    Connection(String),
    /// The destination answered with a non-success status.
    #[error("status {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
        /// The destination's own error text (truncated).
        message: String,
    },
    /// The destination is set up wrongly or refused our setup calls.
    #[error("setup failed: {0}")]
    Setup(String),
    /// The TLS handshake failed (certificate not trusted, wrong name, protocol mismatch). Retried like a
    /// connection error, so nothing is lost while the CA settings are fixed, but logged at ERROR.
    #[error("tls handshake failed: {0}")]
    Tls(String),
}

impl SinkError {
    /// Connection errors, 408, 429 and 5xx are worth retrying; other answers are final.
    pub fn is_retriable(&self) -> bool {
        match self {
            SinkError::Connection(_) | SinkError::Setup(_) | SinkError::Tls(_) => true,
            SinkError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
        }
    }

    /// True for 413: split the batch and retry each half.
    pub fn is_too_large(&self) -> bool {
        matches!(self, SinkError::Status { status: 413, .. })
    }

    /// `Retry-After`, if the destination asked for one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Where a destination is and which config keys set it: what the start-up contact logs, so a WARN can say what to
/// fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The address contacted (a URL or host:port), never with credentials.
    pub address: String,
    /// The config keys that set the address.
    pub address_keys: &'static str,
    /// The config keys that set the credentials.
    pub auth_keys: &'static str,
    /// The config keys that set TLS.
    pub tls_keys: &'static str,
}

impl Endpoint {
    /// An endpoint for test transports that stand for no configured destination.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Endpoint {
        Endpoint {
            address: "test".to_owned(),
            address_keys: "-",
            auth_keys: "-",
            tls_keys: "-",
        }
    }

    /// The keys to check after `error`: the credentials for 401/403, TLS for a failed handshake, else the address.
    pub fn keys_to_check(&self, error: &SinkError) -> &'static str {
        match error {
            SinkError::Tls(_) => self.tls_keys,
            SinkError::Status { status: 401 | 403, .. } => self.auth_keys,
            _ => self.address_keys,
        }
    }
}

/// Sends encoded batches to one destination. Implementations own their client (HTTP, MQTT) and run inside the sink
/// worker's own single-threaded runtime; tasks they spawn there run whenever the delivery thread waits (for a
/// batch, an answer or a backoff).
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// Called once on the delivery runtime before anything else: starts background work that should not wait for
    /// the first batch (MQTT: connect, and keep the connection with keep-alives). Default: nothing.
    async fn start(&mut self) {}
    /// One-time setup before the first write (e.g. create the database); retried like a write until it succeeds.
    async fn prepare(&mut self) -> Result<(), SinkError>;

    /// Where this destination is, for the start-up contact's log line.
    fn endpoint(&self) -> Endpoint;

    /// Contacts the destination once at start-up, after [`Transport::start`], and says what it found (e.g.
    /// `"influxdb 1.8.10; database \"senseops\" ready"`). Success means the destination is prepared: the first
    /// write does not call [`Transport::prepare`] again. A failure is only logged (the worker keeps events queued
    /// and retries as it would for a write). Default: [`Transport::prepare`].
    async fn contact(&mut self) -> Result<String, SinkError> {
        self.prepare().await.map(|()| "ready".to_owned())
    }
    /// Sends `items` (whole encoded items, concatenated) holding `count` events. `Ok(n)`: accepted, except `n`
    /// events the destination says it rejected (a partial write); those are counted as dropped.
    async fn send(&mut self, items: &[u8], count: usize) -> Result<usize, SinkError>;

    /// [`Transport::send`] for items the worker holds in a shared buffer: a transport that sends them unchanged
    /// (InfluxDB v1) can hand the buffer to the HTTP client without copying it. Default: `send`.
    async fn send_shared(&mut self, items: bytes::Bytes, count: usize) -> Result<usize, SinkError> {
        self.send(&items, count).await
    }

    /// Called once when delivery ends (shutdown), before the runtime stops; must return within about a second.
    /// Default: nothing (MQTT sends DISCONNECT).
    async fn close(&mut self) {}
}
