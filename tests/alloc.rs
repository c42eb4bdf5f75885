//! Steady state allocates nothing per event: a counting global allocator around the whole in-memory path
//! (reader core with event counting → slab → channel → InfluxDB and MQTT-JSON encoders → reused batch buffers
//! with each item's sender → per-sender tallies of delivered ranges), after a warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use sense_ingest::config::{BatchConfig, Tag};
use sense_ingest::enrich::app_names::AppNames;
use sense_ingest::event::slab::SlabPool;
use sense_ingest::reader::rules::{LiveRules, Rules};
use sense_ingest::reader::{ReaderCore, ReaderShared};
use sense_ingest::sink::delivery::batch::{Batch, EncodedBatch};
use sense_ingest::sink::influxdb::LineEncoder;
use sense_ingest::sink::json::EventJson;
use sense_ingest::sink::Encoder;
use sense_ingest::stop::StopSignal;
use sense_ingest::telemetry::event_counts::EventCounts;
use sense_ingest::telemetry::metrics::{HostTally, ReceiveCounters, SinkCounters, SinkOutcome};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn datagram(i: usize) -> Vec<u8> {
    let (kind, cmd) = [("session", "Start session"), ("connection", "Open connection")][i % 2];
    format!(
        "/qseow-proxy-{kind}/;sense{}.lab.example;{cmd};LAB;user{:04};AppAccess;/app/a421f4a2-c311-4ef4-ba41-fe2e6a2b{:04x}?x=1;m. UserAgent: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'",
        i % 3,
        i % 100,
        i % 1000
    )
    .into_bytes()
}

#[test]
fn steady_state_allocates_nothing_per_event() {
    let datagrams: Vec<Vec<u8>> = (0..2000).map(datagram).collect();
    let (tx, rx) = sense_ingest::event::handover::channel(4096);
    let shared = Arc::new(ReaderShared {
        pool: SlabPool::new(256, 64),
        outputs: vec![tx],
        counters: Arc::new(ReceiveCounters::default()),
        max_message_size: 65507,
        stop: StopSignal::new().unwrap(),
        app_names: AppNames::empty(),
        rules: Arc::new(LiveRules::new(Rules::default())),
        // Butler SOS's event counts on: counted per reader, merged once per slab, no allocation once keys are known.
        event_counts: Some(Arc::new(EventCounts::default())),
    });
    let mut core = ReaderCore::new(shared);
    let tags = [Tag {
        name: "env".into(),
        value: "DEV".into(),
    }];
    let mut influx = LineEncoder::new(&tags);
    let json = EventJson::new(&tags);
    // Two Sense nodes, interleaved in runs.
    let peers: [SocketAddr; 2] = ["127.0.0.1:40000".parse().unwrap(), "127.0.0.2:40000".parse().unwrap()];
    let mut batch = Batch::new(BatchConfig {
        max_events: 500,
        max_bytes: 4 << 20,
        max_age: Duration::from_secs(1),
    });
    let mut spare = Some(EncodedBatch::default());
    let mut tally = HostTally::default();
    let sink = SinkCounters::default();
    let mut lp = Vec::with_capacity(4 << 20);
    let mut js = Vec::with_capacity(4 << 20);
    let mut round = |lp: &mut Vec<u8>, js: &mut Vec<u8>| {
        lp.clear();
        js.clear();
        for (i, d) in datagrams.iter().enumerate() {
            core.handle(d, false, peers[(i / 7) % 2], 1_795_755_112_298_000_000);
        }
        core.flush();
        let mut n = 0;
        while let Ok(slab) = rx.channel().try_recv() {
            let now = Instant::now();
            for ev in slab.events() {
                influx.encode(ev, lp);
                influx.encode(ev, batch.buf());
                batch.commit(now, ev.received_ns, Some(ev.peer.ip().to_canonical()));
                if batch.is_full() {
                    // What the worker does per delivered range: tally per sender, merge once.
                    let full = batch.take(spare.take().expect("one spare buffer set"));
                    tally.clear();
                    full.tally(0..full.len(), &mut tally);
                    sink.hosts.add(SinkOutcome::Delivered, &tally);
                    spare = Some(full);
                }
                json.write(ev, js);
                n += 1;
            }
        }
        n
    };
    // Warm-up: slabs, event buffers, the UA cache and the channel reach their working size.
    for _ in 0..3 {
        assert_eq!(round(&mut lp, &mut js), datagrams.len());
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    let rounds = 10;
    for _ in 0..rounds {
        assert_eq!(round(&mut lp, &mut js), datagrams.len());
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    let events = (rounds * datagrams.len()) as f64;
    eprintln!(
        "allocations in steady state: {allocs} for {events} events ({:.6} per event)",
        allocs as f64 / events
    );
    let hosts = sink.hosts.snapshot();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    let delivered: u64 = hosts.iter().map(|(_, h)| h.delivered).sum();
    assert_eq!(
        delivered,
        ((3 + rounds) * datagrams.len()) as u64,
        "batches of 500 divide the rounds"
    );
    assert_eq!(
        allocs, 0,
        "steady state must not allocate per event ({allocs} allocations for {events} events)"
    );
}
