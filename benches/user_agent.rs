//! enrich/user_agent/{typical,<hostile>}: one user agent through Bowser's descriptor lists, uncached (what a
//! cache miss costs a reader). The hostile inputs are `sense_ingest::enrich::user_agent::hostile`: the worst
//! shapes we could build for the matcher, each at the 1000-unit message limit.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sense_ingest::enrich::user_agent::{hostile, parse_user_agent};

const TYPICAL: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

fn user_agent(c: &mut Criterion) {
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

criterion_group!(benches, user_agent);
criterion_main!(benches);
