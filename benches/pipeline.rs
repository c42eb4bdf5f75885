//! pipeline/in_memory/batch_1000: datagram bytes → reader core (size check, parse, exclusion, UA cache, slab) →
//! channel → InfluxDB line protocol in a reused batch. Everything but the syscalls and the HTTP request.

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sense_ingest::config::ExcludedUser;
use sense_ingest::enrich::app_names::AppNames;
use sense_ingest::event::slab::SlabPool;
use sense_ingest::reader::rules::{LiveRules, Rules};
use sense_ingest::reader::{ReaderCore, ReaderShared};
use sense_ingest::sink::influxdb::LineEncoder;
use sense_ingest::sink::Encoder;
use sense_ingest::stop::StopSignal;
use sense_ingest::telemetry::metrics::ReceiveCounters;

mod common;

fn pipeline(c: &mut Criterion) {
    let datagrams = common::mixed(1000);
    let (tx, rx) = sense_ingest::event::handover::channel(1024);
    let counters = Arc::new(ReceiveCounters::default());
    let shared = Arc::new(ReaderShared {
        pool: SlabPool::new(256, 64),
        outputs: vec![tx],
        counters: Arc::clone(&counters),
        max_message_size: 65507,
        stop: StopSignal::new().unwrap(),
        app_names: AppNames::empty(),
        rules: Arc::new(LiveRules::new(Rules {
            excluded: vec![ExcludedUser {
                directory: "LAB".into(),
                user_id: "excluded1".into(),
            }],
            ..Rules::default()
        })),
        event_counts: None,
    });
    let mut core = ReaderCore::new(shared);
    let mut encoder = LineEncoder::new(&[]);
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut batch = Vec::with_capacity(1 << 20);
    let mut run = |batch: &mut Vec<u8>| {
        batch.clear();
        for d in &datagrams {
            core.handle(d, false, peer, 1_795_755_112_298_000_000);
        }
        core.flush();
        let mut n = 0;
        while let Ok(slab) = rx.channel().try_recv() {
            for ev in slab.events() {
                encoder.encode(ev, batch);
                n += 1;
            }
        }
        n
    };
    assert_eq!(run(&mut batch), 1000, "every datagram must come out as a line");
    assert_eq!(batch.iter().filter(|&&b| b == b'\n').count(), 1000);

    let mut g = c.benchmark_group("pipeline/in_memory");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("batch_1000", |b| b.iter(|| run(&mut batch)));
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
