//! Latency summaries, report formatting and `--json` output.
//!
//! Histograms are `hdrhistogram` with 3 significant figures, recording microseconds. The
//! summary keeps p50/p90/p99/p99.9/max (plus min and mean); the text table prints them in
//! milliseconds with microsecond resolution.

use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

/// A new latency histogram in microseconds (3 significant figures, auto-resizing so no
/// value is ever rejected).
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).expect("3 significant figures is a valid precision");
    h.auto(true);
    h
}

/// Percentiles of a latency histogram, all in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of recorded samples.
    pub count: u64,
    /// Smallest sample.
    pub min_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

impl LatencySummary {
    /// Summarises `h` (all zero when it is empty).
    pub fn from_histogram(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            min_us: h.min(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }

    /// A two-line table: a header and one row in milliseconds, indented by `indent`.
    pub fn table(&self, indent: &str) -> String {
        if self.count == 0 {
            return format!("{indent}(no samples)\n");
        }
        let cols = [
            ("p50", self.p50_us),
            ("p90", self.p90_us),
            ("p99", self.p99_us),
            ("p99.9", self.p999_us),
            ("max", self.max_us),
        ];
        let mut head = format!("{indent}{:>12}", "samples");
        let mut row = format!("{indent}{:>12}", self.count);
        for (name, v) in cols {
            head.push_str(&format!(" {:>11}", name));
            row.push_str(&format!(" {:>11}", fmt_ms(v)));
        }
        format!("{head}\n{row}\n")
    }
}

/// Microseconds as milliseconds with 3 decimals (`1234` -> `1.234ms`).
pub fn fmt_ms(us: u64) -> String {
    format!("{}.{:03}ms", us / 1000, us % 1000)
}

/// A count with thousands separators (`1234567` -> `1,234,567`).
pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `part / whole` as a percentage (0 when `whole` is 0).
pub fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Seconds with millisecond resolution, for JSON.
pub fn secs(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Waits until `duration` has passed (never, when `None`) or `shutdown` is set, checking every 20 ms. When
/// `progress` is on, calls `tick` about once a second with the time since the start. Returns whether `shutdown`
/// ended the wait (the report's `interrupted`).
pub fn wait_until_done(
    duration: Option<std::time::Duration>,
    shutdown: &std::sync::atomic::AtomicBool,
    progress: bool,
    mut tick: impl FnMut(std::time::Duration),
) -> bool {
    use std::time::{Duration, Instant};
    let start = Instant::now();
    let mut last = start;
    loop {
        if shutdown.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        if duration.is_some_and(|d| start.elapsed() >= d) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
        if progress && last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            tick(start.elapsed());
        }
    }
}

/// Writes `report` as pretty JSON to `path` (with a trailing newline).
pub fn write_json<T: Serialize>(path: &Path, report: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(report).context("serialising the report")?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing --json {}", path.display()))
}

/// CPU time (user, system) this process has used so far, from `getrusage(RUSAGE_SELF)`.
pub fn process_cpu() -> (std::time::Duration, std::time::Duration) {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `ru` is a valid, writable rusage-sized buffer; getrusage fills it completely on
    // success and RUSAGE_SELF is always a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return (std::time::Duration::ZERO, std::time::Duration::ZERO);
    }
    // SAFETY: getrusage returned 0, so it initialised the whole struct.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_percentiles_within_three_significant_figures() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min_us, 1);
        assert!((4995..=5005).contains(&s.p50_us), "{s:?}");
        assert!((9890..=9910).contains(&s.p99_us), "{s:?}");
        assert!((9980..=10_010).contains(&s.p999_us), "{s:?}");
        assert!((9990..=10_010).contains(&s.max_us), "{s:?}");
        assert!(s.table("").contains("p99.9"));
    }

    #[test]
    fn empty_histogram_gives_zeroes() {
        let s = LatencySummary::from_histogram(&new_histogram());
        assert_eq!(s, LatencySummary::default());
        assert!(s.table("  ").contains("no samples"));
    }

    #[test]
    fn formats_counts_and_milliseconds() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(1234), "1,234");
        assert_eq!(fmt_count(1_234_567), "1,234,567");
        assert_eq!(fmt_ms(1234), "1.234ms");
        assert_eq!(fmt_ms(7), "0.007ms");
    }

    #[test]
    fn process_cpu_is_non_zero_after_work() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let (u, s) = process_cpu();
        assert!(u + s > std::time::Duration::ZERO);
    }
}
