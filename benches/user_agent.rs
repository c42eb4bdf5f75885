//! enrich/user_agent/{typical,<hostile>}: one user agent through Bowser's descriptor lists, uncached (what a
//! cache miss costs a reader). The hostile inputs are `sense_ingest::enrich::user_agent::hostile`: the worst
//! shapes we could build for the matcher, each at the 1000-unit message limit.
//!
//! Measured in CPU time of the benchmarking thread (`CLOCK_THREAD_CPUTIME_ID`), not wall time: PRODUCT.md's
//! hostile-input target is CPU per datagram, and CPU time does not count the time other processes on a shared
//! machine hold the core.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sense_ingest::enrich::user_agent::{hostile, parse_user_agent};

const TYPICAL: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

/// CPU time consumed by the calling thread.
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable `timespec`; CLOCK_THREAD_CPUTIME_ID is supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, like wall time: the same units and formatting.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn user_agent(c: &mut Criterion<ThreadCpuTime>) {
    let mut g = c.benchmark_group("enrich/user_agent");
    g.throughput(Throughput::Elements(1));
    // The bench checks its answer once before timing.
    let typical = parse_user_agent(TYPICAL);
    assert_eq!(
        (typical.browser_name.as_str(), typical.browser_major_version.as_str()),
        ("Chrome", "124")
    );
    g.bench_function("typical", |b| {
        b.iter(|| parse_user_agent(std::hint::black_box(TYPICAL)))
    });
    for (name, ua) in hostile::user_agents() {
        assert!(ua.encode_utf16().count() <= hostile::MAX_UNITS, "{name}");
        g.bench_function(name, |b| b.iter(|| parse_user_agent(std::hint::black_box(&ua))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = user_agent
}
criterion_main!(benches);
