//! Typed counters (Vector's internal-events idea): each loss path has a counter, and per-datagram problems are
//! counted here and logged through a [`RateLimit`] rather than per datagram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use super::histogram::LatencyHistogram;
use super::prometheus::FailingSince;
use crate::event::RejectReason;

/// A relaxed monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Sets the value (for gauges read from the kernel).
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Counters of the receive side, shared by all readers.
///
/// Every datagram that reaches a socket ends in exactly one of `accepted`, `excluded` or `rejected[reason]`:
/// `received == accepted + excluded + sum(rejected)`.
#[derive(Debug, Default)]
pub struct ReceiveCounters {
    /// Datagrams read from our sockets.
    pub received: Counter,
    /// Events parsed and handed to the sinks.
    pub accepted: Counter,
    /// Events dropped by `userEvents.excludeUser`.
    pub excluded: Counter,
    /// Datagrams rejected, per [`RejectReason::index`].
    pub rejected: [Counter; RejectReason::ALL.len()],
    /// Accepted events whose datagram held invalid UTF-8 (replaced with U+FFFD).
    pub invalid_utf8: Counter,
    /// Times a reader found a sink's channel full and had to wait (backpressure).
    pub channel_full_waits: Counter,
    /// Datagrams the kernel dropped on our sockets because the receive buffer was full (from /proc/net/udp*).
    pub kernel_drops: Counter,
    /// The same counts per sender.
    pub hosts: HostCounters,
}

impl ReceiveCounters {
    /// Counts a rejected datagram.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].inc();
    }
    /// Total rejected datagrams.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(Counter::get).sum()
    }
}

/// Receive-side counts of one sender (Sense proxy node), by its IP address.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HostStats {
    /// Datagrams received from it.
    pub received: u64,
    /// Events accepted.
    pub accepted: u64,
    /// Events excluded by `excludeUser`.
    pub excluded: u64,
    /// Datagrams rejected, per [`RejectReason::index`].
    pub rejected: [u64; RejectReason::ALL.len()],
}

impl HostStats {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &HostStats) {
        self.received += other.received;
        self.accepted += other.accepted;
        self.excluded += other.excluded;
        for (a, b) in self.rejected.iter_mut().zip(other.rejected) {
            *a += b;
        }
    }

    /// True when every count is zero.
    pub fn is_zero(&self) -> bool {
        self.received == 0
    }
}

/// Senders tracked individually; further ones are counted together under `0.0.0.0` ("other senders").
pub const MAX_TRACKED_HOSTS: usize = 4096;

/// Per-sender counters, merged from each reader once per slab (one lock per flush, none per datagram).
#[derive(Debug, Default)]
pub struct HostCounters {
    hosts: std::sync::Mutex<Vec<(std::net::IpAddr, HostStats)>>,
}

impl HostCounters {
    /// Adds a reader's local counts.
    pub fn merge(&self, local: &[(std::net::IpAddr, HostStats)]) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        for (ip, stats) in local.iter().filter(|(_, s)| !s.is_zero()) {
            let ip = if hosts.len() >= MAX_TRACKED_HOSTS && !hosts.iter().any(|(h, _)| h == ip) {
                std::net::IpAddr::from([0, 0, 0, 0])
            } else {
                *ip
            };
            match hosts.iter_mut().find(|(h, _)| *h == ip) {
                Some((_, s)) => s.add(stats),
                None => hosts.push((ip, stats.clone())),
            }
        }
    }

    /// A copy of every sender's counts, most datagrams first.
    pub fn snapshot(&self) -> Vec<(std::net::IpAddr, HostStats)> {
        let mut v = self.hosts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.sort_by(|a, b| b.1.received.cmp(&a.1.received).then(a.0.cmp(&b.0)));
        v
    }
}

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Events the destination acknowledged.
    pub delivered: Counter,
    /// Events this sink does not send by rule (e.g. InfluxDB: an empty required field), counted not lost.
    pub skipped: Counter,
    /// Events lost: a batch the destination refused (non-retriable 4xx) or that failed after all retries.
    pub dropped: Counter,
    /// Batches sent successfully.
    pub batches: Counter,
    /// Retried requests.
    pub retries: Counter,
    /// Values we had to change to make them storable (InfluxDB 1.x: tag value ending in `\`).
    pub values_changed: Counter,
    /// Events waiting in the disk spool now (a gauge).
    pub spooled: Counter,
    /// First send attempt → acknowledgement, per delivered request.
    pub batch_latency: Arc<LatencyHistogram>,
    /// Receive → acknowledgement, per delivered event (events replayed from the spool after a restart are not
    /// observed: their receive times are not kept on disk).
    pub event_latency: Arc<LatencyHistogram>,
    /// Start of the current outage, if the destination is failing.
    pub failing_since: Arc<FailingSince>,
}

/// Lets one log line through per `interval`, and counts what it held back. Lock-free.
#[derive(Debug)]
pub struct RateLimit {
    interval_ms: u64,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// One line per `interval`.
    pub const fn new(interval: Duration) -> RateLimit {
        RateLimit {
            interval_ms: interval.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed_since_last)` when the caller may log now, else `None` (and the line is counted).
    pub fn allow(&self) -> Option<u64> {
        let now = monotonic_ms();
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + self.interval_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    // +1 so the first call (0 ms) is already past the initial `next_ms` of 0.
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_lets_the_first_line_through_and_counts_the_rest() {
        let rl = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(rl.allow(), Some(0));
        assert_eq!(rl.allow(), None);
        assert_eq!(rl.allow(), None);
        assert_eq!(rl.suppressed.load(Ordering::Relaxed), 2);
    }
}
