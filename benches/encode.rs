//! encode/{influxdb,mqtt_json}/{one,batch_1000}: one event → wire bytes into a reused buffer.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sense_ingest::config::Tag;
use sense_ingest::enrich::user_agent::UserAgentCache;
use sense_ingest::event::{Event, Field};
use sense_ingest::parse::parse_into;
use sense_ingest::sink::influxdb::LineEncoder;
use sense_ingest::sink::json::EventJson;
use sense_ingest::sink::{Encoded, Encoder};

mod common;

fn event(datagram: &[u8], cache: &mut UserAgentCache) -> Event {
    let mut ev = Event::new();
    parse_into(datagram, &mut ev).unwrap();
    ev.user_agent = cache.lookup(ev.get(Field::UserAgent));
    ev.received_ns = 1_795_755_112_298_000_000;
    ev
}

fn tags() -> Vec<Tag> {
    vec![
        Tag {
            name: "env".into(),
            value: "DEV".into(),
        },
        Tag {
            name: "qs_host".into(),
            value: "NR".into(),
        },
    ]
}

fn encode(c: &mut Criterion) {
    let mut cache = UserAgentCache::new(64);
    let typical = event(common::TYPICAL, &mut cache);
    let batch: Arc<Vec<Event>> = Arc::new(common::mixed(1000).iter().map(|d| event(d, &mut cache)).collect());

    let mut influx = LineEncoder::new(&tags());
    let json = EventJson::new(&tags());
    let mut out = Vec::with_capacity(1 << 20);
    assert_eq!(influx.encode(&typical, &mut out), Encoded::Yes);
    assert!(out.starts_with(b"user_events,host=sense1.lab.example,event_action=Open\\ connection"));
    out.clear();
    json.write(&typical, &mut out);
    assert!(
        out.ends_with(br#""uaOsVersion":"NT 10.0"}"#),
        "{}",
        String::from_utf8_lossy(&out)
    );

    let mut g = c.benchmark_group("encode/influxdb");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one", |b| {
        b.iter(|| {
            out.clear();
            influx.encode(std::hint::black_box(&typical), &mut out)
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("batch_1000", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(1 << 20),
            |buf: &mut Vec<u8>| {
                for ev in batch.iter() {
                    influx.encode(ev, buf);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("encode/mqtt_json");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one", |b| {
        b.iter(|| {
            out.clear();
            json.write(std::hint::black_box(&typical), &mut out)
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("batch_1000", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(1 << 20),
            |buf: &mut Vec<u8>| {
                for ev in batch.iter() {
                    json.write(ev, buf);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
