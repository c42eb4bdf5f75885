//! parse/engine/{typical,session,long_ua,malformed}: one datagram → Event, no I/O.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sense_ingest::event::{Event, Field, RejectReason};
use sense_ingest::parse::parse_into;

mod common;

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse/engine");
    g.throughput(Throughput::Elements(1));
    let long = common::long_ua();
    let mut ev = Event::new();
    // Each bench checks its answer once before timing.
    parse_into(common::TYPICAL, &mut ev).unwrap();
    assert_eq!(ev.get(Field::UserFull), "LAB\\goran");
    assert!(ev.app_id().is_some());
    parse_into(&long, &mut ev).unwrap();
    assert!(ev.get(Field::UserAgent).starts_with("Mozilla/5.0 (Linux; Android 14"));
    assert_eq!(parse_into(common::MALFORMED, &mut ev), Err(RejectReason::UnknownSource));
    for (name, input) in [
        ("typical", common::TYPICAL),
        ("session", common::SESSION),
        ("long_ua", &long[..]),
        ("malformed", common::MALFORMED),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| parse_into(std::hint::black_box(input), &mut ev).is_ok())
        });
    }
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
