//! encode/{influxdb,new_relic,new_relic_scrambled,mqtt_json}/{one,batch_1000}: events → wire bytes appended to a
//! reused buffer, as the sink workers do (their batch buffers are recycled after each delivery).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sense_ingest::config::Tag;
use sense_ingest::enrich::user_agent::UserAgentCache;
use sense_ingest::event::{Event, Field};
use sense_ingest::parse::parse_into;
use sense_ingest::sink::influxdb::LineEncoder;
use sense_ingest::sink::json::EventJson;
use sense_ingest::sink::new_relic::NewRelicEncoder;
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

/// Benches `encode` on one typical event and on a mixed batch of 1000, after checking its output for the typical
/// event once (`check` gets the bytes).
fn bench_encoder(
    c: &mut Criterion,
    name: &str,
    typical: &Event,
    batch: &[Event],
    mut encode: impl FnMut(&Event, &mut Vec<u8>),
    check: impl Fn(&str),
) {
    let mut out = Vec::with_capacity(1 << 20);
    encode(typical, &mut out);
    check(std::str::from_utf8(&out).expect("UTF-8"));
    let mut g = c.benchmark_group(format!("encode/{name}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("one", |b| {
        b.iter(|| {
            out.clear();
            encode(std::hint::black_box(typical), &mut out)
        })
    });
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("batch_1000", |b| {
        b.iter(|| {
            out.clear();
            for ev in batch {
                encode(ev, &mut out);
            }
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut cache = UserAgentCache::new(64);
    let typical = event(common::TYPICAL, &mut cache);
    let batch: Vec<Event> = common::mixed(1000).iter().map(|d| event(d, &mut cache)).collect();

    let mut influx = LineEncoder::new(&tags());
    bench_encoder(
        c,
        "influxdb",
        &typical,
        &batch,
        |ev, out| assert_ne!(influx.encode(ev, out), Encoded::Skipped("")),
        |s| {
            assert!(
                s.starts_with("user_events,host=sense1.lab.example,event_action=Open\\ connection"),
                "{s}"
            )
        },
    );
    let mut nr = NewRelicEncoder::new(&tags(), false);
    bench_encoder(
        c,
        "new_relic",
        &typical,
        &batch,
        |ev, out| {
            nr.encode(ev, out);
        },
        |s| {
            assert!(
                s.contains(r#""qs_host":"NR","qs_event_action":"Open connection""#),
                "{s}"
            )
        },
    );
    let mut nr_scrambled = NewRelicEncoder::new(&tags(), true);
    bench_encoder(
        c,
        "new_relic_scrambled",
        &typical,
        &batch,
        |ev, out| {
            nr_scrambled.encode(ev, out);
        },
        |s| assert!(!s.contains("goran"), "{s}"),
    );
    let json = EventJson::new(&tags());
    bench_encoder(
        c,
        "mqtt_json",
        &typical,
        &batch,
        |ev, out| json.write(ev, out),
        |s| assert!(s.ends_with(r#""uaOsVersion":"NT 10.0"}"#), "{s}"),
    );
}

criterion_group!(benches, encode);
criterion_main!(benches);
