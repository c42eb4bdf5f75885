//! Typed counters (Vector's internal-events idea): each loss path has a counter, and per-datagram problems are
//! counted here and logged through a [`RateLimit`] rather than per datagram. A sink's outage marker
//! ([`FailingSince`]) lives here too, beside the [`SinkCounters`] that carry it; `/health` only reads it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use super::histogram::LatencyHistogram;
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
    /// Datagrams the kernel dropped on our sockets because the receive buffer was full (each socket's `SO_MEMINFO` drop counter).
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

/// Senders tracked individually; further ones are counted together under [`OTHER_SENDERS`].
pub const MAX_TRACKED_HOSTS: usize = 4096;

/// The key under which senders beyond [`MAX_TRACKED_HOSTS`] are counted together ("other senders").
pub const OTHER_SENDERS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The entry of `ip` in a per-sender list, created at zero when missing. Once the list holds
/// [`MAX_TRACKED_HOSTS`] senders, a new sender is counted under [`OTHER_SENDERS`], so the list (and a
/// `/metrics` page) stays bounded whatever the traffic. The receive side and each destination apply the same
/// rule; a sender reaches a destination only after the receive side counted it, so with up to
/// `MAX_TRACKED_HOSTS` senders both sides track the same ones (beyond that, the boundary may differ by the few
/// senders that appeared at the same moment).
fn host_slot<T: Default>(hosts: &mut Vec<(IpAddr, T)>, ip: IpAddr) -> &mut T {
    let pos = match hosts.iter().position(|(h, _)| *h == ip) {
        Some(i) => i,
        None if hosts.len() >= MAX_TRACKED_HOSTS => match hosts.iter().position(|(h, _)| *h == OTHER_SENDERS) {
            Some(i) => i,
            None => {
                hosts.push((OTHER_SENDERS, T::default()));
                hosts.len() - 1
            }
        },
        None => {
            hosts.push((ip, T::default()));
            hosts.len() - 1
        }
    };
    &mut hosts[pos].1
}

/// Per-sender counters, merged from each reader once per slab (one lock per flush, none per datagram).
#[derive(Debug, Default)]
pub struct HostCounters {
    hosts: std::sync::Mutex<Vec<(IpAddr, HostStats)>>,
}

impl HostCounters {
    /// Adds a reader's local counts.
    pub fn merge(&self, local: &[(IpAddr, HostStats)]) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        for (ip, stats) in local.iter().filter(|(_, s)| !s.is_zero()) {
            host_slot(&mut hosts, *ip).add(stats);
        }
    }

    /// A copy of every sender's counts, most datagrams first.
    pub fn snapshot(&self) -> Vec<(IpAddr, HostStats)> {
        let mut v = self.hosts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.sort_by(|a, b| b.1.received.cmp(&a.1.received).then(a.0.cmp(&b.0)));
        v
    }
}

/// Event counts per sender, kept locally by one thread (a sink's encoder or delivery thread, a spool segment)
/// and merged into shared counters once per slab or batch, so the hot path takes no lock and, once the vector
/// has grown to the number of senders, allocates nothing.
///
/// Senders are few (one per Sense proxy node), so this is a short vector with the last sender's index cached:
/// events arrive in runs from one sender.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HostTally {
    entries: Vec<(IpAddr, u64)>,
    last: usize,
}

impl HostTally {
    /// Adds `n` events of `ip`.
    pub fn add(&mut self, ip: IpAddr, n: u64) {
        if n == 0 {
            return;
        }
        if self.entries.get(self.last).is_none_or(|(h, _)| *h != ip) {
            self.last = match self.entries.iter().position(|(h, _)| *h == ip) {
                Some(i) => i,
                None => {
                    self.entries.push((ip, 0));
                    self.entries.len() - 1
                }
            };
        }
        self.entries[self.last].1 += n;
    }

    /// Subtracts up to `n` events of `ip` (never below zero).
    pub fn sub(&mut self, ip: IpAddr, n: u64) {
        if let Some((_, c)) = self.entries.iter_mut().find(|(h, _)| *h == ip) {
            *c = c.saturating_sub(n);
        }
    }

    /// Adds every count of `other`.
    pub fn add_all(&mut self, other: &HostTally) {
        for &(ip, n) in other.iter() {
            self.add(ip, n);
        }
    }

    /// Each sender with a non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = &(IpAddr, u64)> {
        self.entries.iter().filter(|(_, n)| *n > 0)
    }

    /// The count of `ip`.
    pub fn get(&self, ip: IpAddr) -> u64 {
        self.entries.iter().find(|(h, _)| *h == ip).map_or(0, |(_, n)| *n)
    }

    /// The sum of all counts.
    pub fn total(&self) -> u64 {
        self.entries.iter().map(|(_, n)| n).sum()
    }

    /// True when every count is zero.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|(_, n)| *n == 0)
    }

    /// Forgets every count, keeping the vector's capacity (and its senders, at zero, while they are few).
    pub fn clear(&mut self) {
        if self.entries.len() > 64 {
            self.entries.clear();
            self.last = 0;
        } else {
            for (_, n) in self.entries.iter_mut() {
                *n = 0;
            }
        }
    }
}

/// What happened to events of one sender at one destination. Destination-side counterpart of [`HostStats`]:
/// for each sender and each destination (every destination counts per sender),
/// `accepted == delivered + skipped + dropped + spooled + (events still in channels or the memory queue)`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HostSinkStats {
    /// Events the destination acknowledged.
    pub delivered: u64,
    /// Events not sent by the destination's rule (counted, not lost).
    pub skipped: u64,
    /// Events lost, all causes (refused, retries exhausted, spool cap, shutdown without a spool).
    pub dropped: u64,
    /// The part of `dropped` that the spool's size cap evicted.
    pub dropped_spool_cap: u64,
    /// Events waiting in the disk spool now (a gauge).
    pub spooled: u64,
}

/// How a counted event ended at a destination (see [`SinkHostCounters::add`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkOutcome {
    /// Acknowledged by the destination.
    Delivered,
    /// Not sent by rule.
    Skipped,
    /// Lost (refused, retries exhausted, shutdown without a spool).
    Dropped,
    /// Lost because the spool's size cap evicted it (also counted as dropped).
    DroppedSpoolCap,
}

/// One destination's per-sender counts, merged from the sink's threads once per slab or batch (one lock per
/// merge, none per event).
#[derive(Debug, Default)]
pub struct SinkHostCounters {
    hosts: std::sync::Mutex<Vec<(IpAddr, HostSinkStats)>>,
}

impl SinkHostCounters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(IpAddr, HostSinkStats)>> {
        // Every mutation is a plain add or store: a panic elsewhere leaves consistent numbers.
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts every sender's events of `tally` under `outcome`. The destination's totals are counted by the
    /// caller: they also include events without a sender (engine-generated lines, pre-v2 spool records).
    pub fn add(&self, outcome: SinkOutcome, tally: &HostTally) {
        if tally.is_empty() {
            return;
        }
        let mut hosts = self.lock();
        for &(ip, n) in tally.iter() {
            let s = host_slot(&mut hosts, ip);
            match outcome {
                SinkOutcome::Delivered => s.delivered += n,
                SinkOutcome::Skipped => s.skipped += n,
                SinkOutcome::Dropped => s.dropped += n,
                SinkOutcome::DroppedSpoolCap => {
                    s.dropped += n;
                    s.dropped_spool_cap += n;
                }
            }
        }
    }

    /// Sets the spooled gauge of every sender: `spooled` holds what the spool holds now; senders not in it have
    /// nothing spooled.
    pub fn set_spooled(&self, spooled: &HostTally) {
        let mut hosts = self.lock();
        for (_, s) in hosts.iter_mut() {
            s.spooled = 0;
        }
        for &(ip, n) in spooled.iter() {
            host_slot(&mut hosts, ip).spooled += n;
        }
    }

    /// A copy of every sender's counts, by sender address.
    pub fn snapshot(&self) -> Vec<(IpAddr, HostSinkStats)> {
        let mut v = self.lock().clone();
        v.sort_by_key(|(ip, _)| *ip);
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
    /// Bytes of the disk spool now (a gauge).
    pub spool_bytes: Counter,
    /// The spool's size cap (`spool.maxBytes`; 0 without a spool).
    pub spool_max_bytes: Counter,
    /// The part of `dropped` that the spool's size cap evicted.
    pub dropped_spool_cap: Counter,
    /// Damaged spool records found (at start or while reading); each cost the rest of its segment. The events of
    /// damage met while reading are in `dropped`; those of damage found at start cannot be counted.
    pub spool_damaged_records: Counter,
    /// `delivered`, `skipped`, `dropped` and `spooled` per sender.
    pub hosts: SinkHostCounters,
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
            f.since_unix_ms().unwrap() > 1_800_000_000_000 - 1_000_000_000_000,
            "now, in Unix ms"
        );
    }
}
