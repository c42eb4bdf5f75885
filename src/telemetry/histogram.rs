//! A lock-free latency histogram with fixed, Prometheus-style buckets.
//!
//! Recording is one binary search over 16 integers and two relaxed atomic adds: a few nanoseconds, no lock, no
//! allocation, safe to call from any number of threads. Buckets are stored per bucket (not cumulative); a
//! [`HistogramSnapshot`] turns them into Prometheus' cumulative `le` buckets.
//!
//! A snapshot taken while other threads record is not one atomic cut (each bucket is read on its own), but every
//! count it shows was recorded, and `count` is always the sum of its buckets, so the `+Inf` bucket equals `_count`.
//!
//! The sum is kept in seconds as an `f64` (the Prometheus Go client does the same): an integer nanosecond sum
//! overflows within hours at a million events per second with second-long latencies, a float sum never does,
//! and at 10^9 s it still resolves 0.1 µs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (`le`, inclusive) of the finite buckets, in seconds. A last bucket, `+Inf`, holds the rest.
pub const BUCKET_BOUNDS_SECONDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Number of buckets, `+Inf` included.
pub const BUCKETS: usize = BUCKET_BOUNDS_SECONDS.len() + 1;

/// [`BUCKET_BOUNDS_SECONDS`] in nanoseconds, for comparing without floating point.
const BOUNDS_NS: [u64; BUCKETS - 1] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// Latencies counted into [`BUCKET_BOUNDS_SECONDS`] plus `+Inf`, with their sum. Share it through an `Arc`.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS],
    /// Sum of every recorded latency in seconds, as `f64` bits.
    sum_seconds: AtomicU64,
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        LatencyHistogram::default()
    }

    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        self.record_n(latency, 1);
    }

    /// Records `n` observations of the same latency (for example every event of a batch, timed together).
    /// `n == 0` records nothing.
    pub fn record_n(&self, latency: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_index(ns)].fetch_add(n, Ordering::Relaxed);
        let add = latency.as_secs_f64() * n as f64;
        // Uncontended in practice (one sink worker records into its own histograms), so the loop runs once.
        let _ = self
            .sum_seconds
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + add).to_bits())
            });
    }

    /// The counts and sum so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut counts = [0u64; BUCKETS];
        for (c, b) in counts.iter_mut().zip(&self.buckets) {
            *c = b.load(Ordering::Relaxed);
        }
        HistogramSnapshot {
            counts,
            sum_seconds: f64::from_bits(self.sum_seconds.load(Ordering::Relaxed)),
        }
    }
}

/// The bucket a latency of `ns` nanoseconds falls in: the first whose bound is `>= ns` (bounds are inclusive,
/// like Prometheus' `le`), or the `+Inf` bucket.
fn bucket_index(ns: u64) -> usize {
    BOUNDS_NS.partition_point(|&bound| bound < ns)
}

/// A copy of a [`LatencyHistogram`]'s state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistogramSnapshot {
    /// Per-bucket (not cumulative) counts, in [`BUCKET_BOUNDS_SECONDS`] order, then `+Inf`.
    pub counts: [u64; BUCKETS],
    /// Sum of the recorded latencies, in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// Number of observations (the sum of all buckets).
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Prometheus' cumulative buckets: `(Some(le), observations <= le)` for each finite bound, then
    /// `(None, count)` for `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<f64>, u64)> + '_ {
        let bounds = BUCKET_BOUNDS_SECONDS
            .iter()
            .copied()
            .map(Some)
            .chain(std::iter::once(None));
        bounds.zip(self.counts.iter().scan(0u64, |acc, &c| {
            *acc += c;
            Some(*acc)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanosecond_bounds_match_the_bounds_in_seconds() {
        for (ns, s) in BOUNDS_NS.iter().zip(BUCKET_BOUNDS_SECONDS) {
            assert_eq!(*ns, Duration::from_secs_f64(s).as_nanos() as u64, "{s}");
        }
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]), "bounds must increase");
    }

    #[test]
    fn a_latency_on_a_bound_falls_in_that_bound_and_one_past_it_in_the_next() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(500_000), 0);
        assert_eq!(bucket_index(500_001), 1);
        assert_eq!(bucket_index(1_000_000_000), 10);
        assert_eq!(bucket_index(60_000_000_000), 15);
        assert_eq!(bucket_index(60_000_000_001), 16);
        assert_eq!(bucket_index(u64::MAX), 16);
    }

    #[test]
    fn record_counts_into_the_right_buckets_and_sums() {
        let h = LatencyHistogram::new();
        h.record(Duration::from_micros(100)); // le 0.0005
        h.record(Duration::from_millis(3)); // le 0.005
        h.record(Duration::from_millis(3)); // le 0.005
        h.record(Duration::from_secs(90)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[3], 2);
        assert_eq!(s.counts[16], 1);
        assert_eq!(s.count(), 4);
        assert_close(s.sum_seconds, 0.0001 + 0.006 + 90.0);
    }

    #[test]
    fn record_n_counts_n_observations_and_adds_n_times_the_latency() {
        let h = LatencyHistogram::new();
        h.record_n(Duration::from_millis(20), 500);
        h.record_n(Duration::from_millis(20), 0);
        let s = h.snapshot();
        assert_eq!(s.counts[5], 500);
        assert_eq!(s.count(), 500);
        assert_close(s.sum_seconds, 10.0);
    }

    #[test]
    fn huge_latencies_and_counts_neither_overflow_nor_panic() {
        let h = LatencyHistogram::new();
        h.record_n(Duration::MAX, u64::MAX / 2);
        h.record(Duration::from_secs(1));
        let s = h.snapshot();
        assert!(s.sum_seconds.is_finite() && s.sum_seconds > 1e30, "{}", s.sum_seconds);
        assert_eq!(s.counts[16], u64::MAX / 2);
        assert_eq!(s.counts[10], 1);
    }

    #[test]
    fn cumulative_buckets_never_decrease_and_end_at_the_count() {
        let h = LatencyHistogram::new();
        for ms in [0, 1, 2, 7, 30, 30, 400, 3_000, 70_000] {
            h.record(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        let cum: Vec<_> = s.cumulative().collect();
        assert_eq!(cum.len(), BUCKETS);
        assert!(cum.windows(2).all(|w| w[0].1 <= w[1].1), "{cum:?}");
        assert_eq!(cum.last(), Some(&(None, 9)));
        assert_eq!(cum[0], (Some(0.0005), 1)); // 0 ms
        assert_eq!(cum[1], (Some(0.001), 2)); // + 1 ms
        assert_eq!(cum[6], (Some(0.05), 6)); // + 2, 7, 30, 30 ms
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let h = std::sync::Arc::new(LatencyHistogram::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = std::sync::Arc::clone(&h);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record(Duration::from_micros(i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 40_000);
        let per_thread_us: u64 = (0..10_000u64).sum();
        assert_close(s.sum_seconds, (per_thread_us * 4) as f64 / 1e6);
    }

    fn assert_close(got: f64, want: f64) {
        assert!((got - want).abs() <= want.abs() * 1e-12, "got {got}, want {want}");
    }
}
