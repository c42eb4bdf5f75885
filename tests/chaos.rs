//! The chaos test (issue 5, item 7): 200,000 events with unique user ids at about 20,000/s through the real binary
//! into a real InfluxDB 1.x and a real Mosquitto (QoS 1), while InfluxDB is killed twice, Mosquitto stopped once
//! and the engine itself stopped with SIGTERM and started again. At the end every destination must hold every
//! event (at least once: duplicates are counted and printed) and the engine's counters, summed over both runs,
//! must add up with nothing dropped.
//!
//! # Schedule (by events sent)
//! 1. 20 %: InfluxDB gets SIGKILL; it stays down [`INFLUX_DOWN`] (longer if the engine has not noticed yet),
//!    then starts again on the same port with the same data (loading it takes InfluxDB a few seconds more).
//! 2. 40 %: Mosquitto stops for [`MOSQUITTO_DOWN`] (longer if the engine has not noticed yet), then starts
//!    again. At 20,000/s this overlaps InfluxDB's start-up.
//! 3. 60 %, once Mosquitto is back: the sender pauses, the engine gets SIGTERM and must exit 0 (undelivered
//!    batches go to the spool, as `shutdownTimeout` is short), starts again with the same config, and the sender
//!    resumes on its new port.
//! 4. 80 %, once the engine runs again: InfluxDB gets SIGKILL again, as in step 1.
//! 5. During that second InfluxDB outage, once the engine noticed it: the sender pauses until the engine has
//!    accepted everything sent (and MQTT, which is up, has it all), waits [`FSYNC_INTERVAL`] more, then the
//!    engine gets **SIGKILL** (a crash: no shutdown, no summary; its counters are read from `/metrics` just
//!    before) and starts again with the same config; the sender resumes. The durability promise: every event
//!    accepted more than `fsyncInterval` before a crash is delivered after the restart. InfluxDB then starts again.
//!
//! The report prints when each step happened.
//!
//! Mosquitto is stopped with SIGTERM, not SIGKILL: the engine sees the same dropped connection, but a broker
//! that is SIGKILLed loses messages it already acknowledged to the engine and had not yet handed to the
//! subscriber (its persistence is a snapshot written on exit), a loss no publisher can see or prevent. With
//! persistence on, the test subscriber's session (clean session off, subscribed before the engine starts) and
//! its queued messages survive the restart. InfluxDB acknowledges a write only after its WAL has it, so a SIGKILL
//! loses nothing acknowledged.
//!
//! # What is checked
//! - InfluxDB: every user id is a series of its own and holds one point (an identical point written twice, by a
//!   retry or a replay, overwrites itself, so InfluxDB's duplicates are invisible: the engine's `retries` are
//!   printed instead).
//! - MQTT: every event arrives on the everything topic and on its command's topic; duplicates per topic are
//!   counted and printed (QoS 1 re-sends after a reconnect are allowed).
//! - Counters, summed over the three engine runs (each run's final summary line; for the SIGKILLed run, its
//!   `/metrics` just before the kill): `received == accepted + excluded +
//!   rejected == sent`, `kernel_drops == 0`; per destination `delivered + skipped + dropped == accepted`
//!   (both count events), `dropped == 0`, nothing left in the spool; `/metrics` of the second run agrees with its
//!   summary.

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::http::{encode, request};
use crate::common::influxd::Influxd;
use crate::common::mosquitto::{BrokerOptions, Mosquitto, Received, Subscriber, SubscriberOptions};
use crate::common::{metric, metrics_addr, wait_for, Engine};

/// Events sent, each with its own user id `chaos<seq:06>`.
const EVENTS: usize = 200_000;
/// Sending rate while the engine is up, events per second.
const RATE_PER_S: usize = 20_000;
/// Source ports (Sense proxy nodes) the events are spread over.
const SOURCE_PORTS: usize = 4;
/// How long InfluxDB stays down at each kill (at least; then until the engine noticed).
const INFLUX_DOWN: Duration = Duration::from_secs(2);
/// `sense-ingest.spool.fsyncInterval`: the engine is SIGKILLed this long (plus a margin) after it accepted the
/// last event.
const FSYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How long Mosquitto stays down (at least; then until the engine noticed).
const MOSQUITTO_DOWN: Duration = Duration::from_secs(3);
/// How long the destinations may take to hold everything once the sender finished.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The InfluxDB database.
const DB: &str = "chaos";
/// The everything topic and the command topics of the fixture config.
const EVERYTHING_TOPIC: &str = "qliksense/userevent";
const COMMAND_TOPICS: [&str; 4] = [
    "qliksense/userevent/session/start",
    "qliksense/userevent/session/stop",
    "qliksense/userevent/connection/open",
    "qliksense/userevent/connection/close",
];

/// The datagram of event `seq` is `prefix[node][kind] + "chaos<seq:06>" + suffix[kind]`: the fixture datagrams of
/// the four commands (`01`..`04`) with the user id replaced and the host set per node.
struct Templates {
    prefix: Vec<Vec<Vec<u8>>>,
    suffix: Vec<Vec<u8>>,
}

impl Templates {
    fn new() -> Templates {
        let cases = fixtures::cases();
        let mut prefix = vec![Vec::new(); SOURCE_PORTS];
        let mut suffix = Vec::new();
        for n in ["01_", "02_", "03_", "04_"] {
            let case = cases.iter().find(|c| c.name.starts_with(n)).expect("fixture 01..04");
            let text = String::from_utf8(case.datagram.clone()).unwrap();
            let fields: Vec<&str> = text.splitn(8, ';').collect();
            assert_eq!(fields.len(), 8, "{text}");
            for (node, p) in prefix.iter_mut().enumerate() {
                p.push(
                    format!(
                        "{};sense{}.lab.example;{};{};",
                        fields[0],
                        node + 1,
                        fields[2],
                        fields[3]
                    )
                    .into_bytes(),
                );
            }
            suffix.push(format!(";{};{};{}", fields[5], fields[6], fields[7]).into_bytes());
        }
        Templates { prefix, suffix }
    }

    /// The datagram of event `seq` into `buf`, and the source port (node) it goes out from.
    fn build(&self, seq: usize, buf: &mut Vec<u8>) -> usize {
        let node = seq % SOURCE_PORTS;
        let kind = (seq / SOURCE_PORTS) % 4;
        buf.clear();
        buf.extend_from_slice(&self.prefix[node][kind]);
        write!(ByteWriter(buf), "chaos{seq:06}").unwrap();
        buf.extend_from_slice(&self.suffix[kind]);
        node
    }
}

/// The command topic event `seq` is published to besides the everything topic.
fn command_topic(seq: usize) -> &'static str {
    COMMAND_TOPICS[(seq / SOURCE_PORTS) % 4]
}

struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Shared state of the sender thread.
struct Traffic {
    /// Events sent so far.
    sent: AtomicUsize,
    /// Set by the test: stop sending after the current chunk.
    pause: AtomicBool,
    /// Set by the sender: it is paused (or done) and sends nothing until `pause` is cleared.
    idle: AtomicBool,
    /// Where to send (the engine's UDP address; changes when the engine restarts).
    target: Mutex<SocketAddr>,
    /// `send_to` failures (each one is an event not sent).
    send_errors: AtomicUsize,
    /// Set when the test gives up: the sender returns.
    abort: AtomicBool,
}

impl Traffic {
    fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Pauses the sender and waits until it sends no more.
    fn pause(&self) {
        self.pause.store(true, Ordering::SeqCst);
        wait_for("the sender to pause", Duration::from_secs(10), || {
            self.idle.load(Ordering::SeqCst).then_some(())
        });
    }

    fn resume(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
        self.pause.store(false, Ordering::SeqCst);
    }
}

/// Sends every event, paced at [`RATE_PER_S`] in 1 ms chunks from [`SOURCE_PORTS`] sockets. Never bursts to
/// catch up after a stall (that would only overflow the receive buffer), and restarts its clock after a pause.
fn send_all(t: &Traffic) {
    const CHUNK: usize = RATE_PER_S / 1000;
    let templates = Templates::new();
    let socks: Vec<UdpSocket> = (0..SOURCE_PORTS)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let tick = Duration::from_millis(1);
    let mut buf = Vec::with_capacity(1024);
    let mut next = Instant::now();
    let mut seq = 0;
    while seq < EVENTS {
        if t.abort.load(Ordering::Relaxed) {
            break;
        }
        if t.pause.load(Ordering::SeqCst) {
            t.idle.store(true, Ordering::SeqCst);
            while t.pause.load(Ordering::SeqCst) && !t.abort.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            t.idle.store(false, Ordering::SeqCst);
            next = Instant::now();
            continue;
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_millis(20) {
            next = now;
        }
        next += tick;
        let target = *t.target.lock().unwrap();
        for _ in 0..CHUNK.min(EVENTS - seq) {
            let node = templates.build(seq, &mut buf);
            if socks[node].send_to(&buf, target).is_err() {
                t.send_errors.fetch_add(1, Ordering::Relaxed);
            }
            seq += 1;
        }
        t.sent.store(seq, Ordering::Relaxed);
    }
    t.idle.store(true, Ordering::SeqCst);
}

/// What the MQTT subscriber saw: deliveries per event on the everything topic and on the command topic.
struct Tally {
    everything: Vec<u8>,
    command: Vec<u8>,
    /// Messages that are not ours or on the wrong topic (should stay empty).
    unexpected: Vec<String>,
    messages: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            everything: vec![0; EVENTS],
            command: vec![0; EVENTS],
            unexpected: Vec::new(),
            messages: 0,
        }
    }

    fn record(&mut self, m: &Received) {
        self.messages += 1;
        let seq = seq_of_payload(&m.payload).filter(|&s| s < EVENTS);
        let slot = match seq {
            Some(s) if m.topic == EVERYTHING_TOPIC => Some(&mut self.everything[s]),
            Some(s) if m.topic == command_topic(s) => Some(&mut self.command[s]),
            _ => None,
        };
        match slot {
            Some(n) => *n = n.saturating_add(1),
            None if self.unexpected.len() < 20 => {
                self.unexpected
                    .push(format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
            }
            None => {}
        }
    }
}

/// The sequence number in a payload's `"userId":"chaos<seq:06>"`.
fn seq_of_payload(payload: &[u8]) -> Option<usize> {
    const KEY: &[u8] = b"\"userId\":\"chaos";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    std::str::from_utf8(payload.get(at..at + 6)?).ok()?.parse().ok()
}

/// Events never seen (count 0) as ranges, and the number of extra deliveries (count - 1 over the seen ones).
fn coverage(counts: &[u8]) -> (Vec<(usize, usize)>, u64) {
    let mut missing = Vec::new();
    let mut duplicates = 0;
    let mut start = None;
    for (i, &n) in counts.iter().enumerate() {
        match (n, start) {
            (0, None) => start = Some(i),
            (0, Some(_)) => {}
            (_, s) => {
                duplicates += u64::from(n - 1);
                if let Some(s) = s {
                    missing.push((s, i - 1));
                    start = None;
                }
            }
        }
    }
    if let Some(s) = start {
        missing.push((s, counts.len() - 1));
    }
    (missing, duplicates)
}

fn missing_count(ranges: &[(usize, usize)]) -> usize {
    ranges.iter().map(|(a, b)| b - a + 1).sum()
}

/// The first ranges, readably.
fn show_ranges(ranges: &[(usize, usize)]) -> String {
    let mut s: Vec<String> = ranges
        .iter()
        .take(15)
        .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}..={b}") })
        .collect();
    if ranges.len() > 15 {
        s.push(format!("... ({} ranges)", ranges.len()));
    }
    s.join(", ")
}

/// One InfluxQL query; `None` while InfluxDB cannot answer.
fn influx_query(influxd: &Influxd, q: &str) -> Option<serde_json::Value> {
    let path = format!("/query?db={}&q={}", encode(DB), encode(q));
    let (status, body) = request(influxd.addr, "POST", &path, b"")?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Points stored in `user_events` (the `userId` field counted).
fn influx_points(influxd: &Influxd) -> Option<u64> {
    let v = influx_query(influxd, "SELECT count(\"userId\"::field) FROM \"user_events\"")?;
    if v["results"][0]["series"].is_null() && v["results"][0]["error"].is_null() {
        return Some(0);
    }
    v["results"][0]["series"][0]["values"][0][1].as_u64()
}

/// Stored events per sequence number: the `userId` tag values, asked for in chunks of 10,000 user ids.
fn influx_counts(influxd: &Influxd) -> Vec<u8> {
    let mut counts = vec![0u8; EVENTS];
    for chunk in 0..EVENTS.div_ceil(10_000) {
        let q = format!(
            "SHOW TAG VALUES FROM \"user_events\" WITH KEY = \"userId\" WHERE \"userId\" =~ /^chaos{chunk:02}/"
        );
        let v = influx_query(influxd, &q).expect("influxd answers SHOW TAG VALUES");
        for row in v["results"][0]["series"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let id = row[1].as_str().unwrap_or_default();
            if let Some(seq) = id.strip_prefix("chaos").and_then(|s| s.parse::<usize>().ok()) {
                if seq < EVENTS {
                    counts[seq] = counts[seq].saturating_add(1);
                }
            }
        }
    }
    counts
}

/// The counters of one destination in a summary line.
#[derive(Debug, Default, Clone, Copy)]
struct SinkCounts {
    delivered: u64,
    skipped: u64,
    dropped: u64,
    retries: u64,
    spooled: u64,
}

/// One engine run's final summary line.
#[derive(Debug, Default, Clone, Copy)]
struct Summary {
    received: u64,
    accepted: u64,
    excluded: u64,
    rejected: u64,
    kernel_drops: u64,
    /// Printed in the report.
    #[allow(dead_code)]
    channel_full_waits: u64,
    influxdb: SinkCounts,
    mqtt: SinkCounts,
}

/// `name=<digits>` in `text`, where `name` starts a key (after a space, `(` or the quote of `rejected_by_reason`).
fn counter(text: &str, name: &str) -> u64 {
    let pat = format!("{name}=");
    let mut from = 0;
    while let Some(i) = text[from..].find(&pat) {
        let at = from + i;
        // A key follows a space, `(` (inside `sinks=`) or the opening quote of `rejected_by_reason="..."`.
        if at == 0 || matches!(text.as_bytes()[at - 1], b' ' | b'"' | b'(') {
            let digits: String = text[at + pat.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            return digits
                .parse()
                .unwrap_or_else(|_| panic!("{name} is not a number in {text}"));
        }
        from = at + pat.len();
    }
    panic!("no {name}= in {text}");
}

fn sink_counts(line: &str, sink: &str) -> SinkCounts {
    let start = line
        .find(&format!("{sink}(delivered="))
        .unwrap_or_else(|| panic!("no {sink} counters in {line}"));
    let part = &line[start..start + line[start..].find(')').unwrap()];
    SinkCounts {
        delivered: counter(part, "delivered"),
        skipped: counter(part, "skipped"),
        dropped: counter(part, "dropped"),
        retries: counter(part, "retries"),
        spooled: counter(part, "spooled"),
    }
}

/// A running engine's counters from `/metrics`, in the shape of a summary line (for a run that ends in SIGKILL).
fn metrics_summary(addr: SocketAddr) -> Summary {
    let (_, body) = request(addr, "GET", "/metrics", b"").expect("/metrics answers");
    let m = |series: &str| metric(&body, series).unwrap_or(0);
    let sink = |name: &str| SinkCounts {
        delivered: m(&format!(
            "sense_ingest_sink_events_delivered_total{{destination=\"{name}\"}}"
        )),
        skipped: m(&format!(
            "sense_ingest_sink_events_skipped_total{{destination=\"{name}\"}}"
        )),
        dropped: m(&format!(
            "sense_ingest_sink_events_dropped_total{{destination=\"{name}\"}}"
        )),
        retries: m(&format!("sense_ingest_sink_retries_total{{destination=\"{name}\"}}")),
        spooled: m(&format!("sense_ingest_sink_spooled_events{{destination=\"{name}\"}}")),
    };
    Summary {
        received: m("sense_ingest_datagrams_received_total"),
        accepted: m("sense_ingest_events_accepted_total"),
        excluded: m("sense_ingest_events_excluded_total"),
        rejected: body
            .lines()
            .filter(|l| l.starts_with("sense_ingest_datagrams_rejected_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .sum(),
        kernel_drops: m("sense_ingest_kernel_drops_total"),
        channel_full_waits: m("sense_ingest_channel_full_waits_total"),
        influxdb: sink("influxdb"),
        mqtt: sink("mqtt"),
    }
}

fn final_summary(engine: &Engine) -> Summary {
    let log = engine.stderr_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("summary") && l.contains("final"))
        .unwrap_or_else(|| panic!("no final summary line; stderr tail:\n{}", tail(&log, 40)));
    let rejected = [
        "unknown_source",
        "too_few_fields",
        "over_size",
        "disallowed_source",
        "rate_limited",
    ]
    .iter()
    .map(|r| counter(line, r))
    .sum();
    Summary {
        received: counter(line, "received"),
        accepted: counter(line, "accepted"),
        excluded: counter(line, "excluded"),
        rejected,
        kernel_drops: counter(line, "kernel_drops"),
        channel_full_waits: counter(line, "channel_full_waits"),
        influxdb: sink_counts(line, "influxdb"),
        mqtt: sink_counts(line, "mqtt"),
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// True when the running engine has settled, in each of `sinks`, every event accepted by it and the `earlier`
/// runs (delivered, skipped or dropped) and its spool is empty: nothing more will arrive there.
fn engine_is_idle(earlier: &[Summary], addr: SocketAddr, sinks: &[&str]) -> bool {
    let Some((_, body)) = request(addr, "GET", "/metrics", b"") else {
        return false;
    };
    let m = |series: &str| metric(&body, series).unwrap_or(0);
    let accepted = earlier.iter().map(|r| r.accepted).sum::<u64>() + m("sense_ingest_events_accepted_total");
    sinks.iter().all(|&sink| {
        let before: u64 = earlier
            .iter()
            .map(|r| {
                let c = if sink == "influxdb" { r.influxdb } else { r.mqtt };
                c.delivered + c.skipped + c.dropped
            })
            .sum();
        let settled = before
            + m(&format!(
                "sense_ingest_sink_events_delivered_total{{destination=\"{sink}\"}}"
            ))
            + m(&format!(
                "sense_ingest_sink_events_skipped_total{{destination=\"{sink}\"}}"
            ))
            + m(&format!(
                "sense_ingest_sink_events_dropped_total{{destination=\"{sink}\"}}"
            ));
        settled >= accepted && m(&format!("sense_ingest_sink_spooled_events{{destination=\"{sink}\"}}")) == 0
    })
}

/// `/metrics` once two scrapes 200 ms apart agree on the counters compared with the summary (the last
/// acknowledgements may still be counted just after the destinations are complete).
fn stable_metrics(addr: SocketAddr) -> String {
    let scrape = || {
        request(addr, "GET", "/metrics", b"")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let key = |body: &str| -> Vec<Option<u64>> { COMPARED.iter().map(|s| metric(body, s)).collect() };
    let mut last = scrape();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = scrape();
        if key(&now) == key(&last) {
            return now;
        }
        last = now;
    }
    last
}

/// The `/metrics` series compared with the last run's final summary.
const COMPARED: [&str; 7] = [
    "sense_ingest_datagrams_received_total",
    "sense_ingest_events_accepted_total",
    "sense_ingest_kernel_drops_total",
    r#"sense_ingest_sink_events_delivered_total{destination="influxdb"}"#,
    r#"sense_ingest_sink_events_delivered_total{destination="mqtt"}"#,
    r#"sense_ingest_sink_events_dropped_total{destination="influxdb"}"#,
    r#"sense_ingest_sink_events_dropped_total{destination="mqtt"}"#,
];

fn config(influxd: &Influxd, broker: &Mosquitto, spool: &std::path::Path) -> String {
    let mut cfg = fixtures::loopback_config(false);
    let mut put = |path: &str, v: Yaml| set(&mut cfg, path, v);
    put("Butler-SOS.logLevel", Yaml::from("info"));
    put("Butler-SOS.influxdbConfig.port", Yaml::from(influxd.addr.port()));
    put("Butler-SOS.influxdbConfig.v1Config.dbName", Yaml::from(DB));
    put("Butler-SOS.mqttConfig.enable", Yaml::from(true));
    put("Butler-SOS.mqttConfig.brokerHost", Yaml::from("127.0.0.1"));
    put("Butler-SOS.mqttConfig.brokerPort", Yaml::from(broker.port));
    put("Butler-SOS.mqttConfig.qos", Yaml::from(1));
    put("Butler-SOS.newRelic.enable", Yaml::from(false));
    put("Butler-SOS.prometheus.enable", Yaml::from(true));
    put("Butler-SOS.prometheus.host", Yaml::from("127.0.0.1"));
    put("Butler-SOS.prometheus.port", Yaml::from(0));
    // Outages are noticed and recovered from quickly.
    put("sense-ingest.retry.initialBackoff", Yaml::from("50ms"));
    put("sense-ingest.retry.maxBackoff", Yaml::from("500ms"));
    put("sense-ingest.spool.enable", Yaml::from(true));
    put("sense-ingest.spool.dir", Yaml::from(spool.to_str().unwrap()));
    // A small memory queue, so the outages reach the disk spool.
    put("sense-ingest.spool.memoryBytes", Yaml::from(1 << 20));
    // A short shutdown budget, so the SIGTERM leaves a backlog in the spool for the second run to replay.
    put("sense-ingest.shutdownTimeout", Yaml::from("1s"));
    put(
        "sense-ingest.spool.fsyncInterval",
        Yaml::from(format!("{}ms", FSYNC_INTERVAL.as_millis())),
    );
    serde_norway::to_string(&cfg).unwrap()
}

/// Occurrences of `what` in the engine's log.
fn occurrences(engine: &Engine, what: &str) -> usize {
    engine.stderr_text().matches(what).count()
}

/// The test's own record of what it did when, printed at the end.
struct Timeline {
    start: Instant,
    lines: Vec<String>,
}

impl Timeline {
    fn note(&mut self, traffic: &Traffic, what: &str) {
        let sent = traffic.sent();
        let line = format!(
            "{:>6.1}s  sent {:>6} ({:>3}%)  {what}",
            self.start.elapsed().as_secs_f64(),
            sent,
            sent * 100 / EVENTS
        );
        eprintln!("chaos: {line}");
        self.lines.push(line);
    }
}

/// Where a destination is in its outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    Up,
    /// Down since, and how often the engine had logged the failure before.
    Down(Instant, usize),
    /// Started again, not answering yet.
    Starting,
}

const INFLUX_FAILING: &str = "send failed; retrying";
const MQTT_LOST: &str = "lost the MQTT broker connection";

/// Stops the sender when dropped (a failing test must not leave it running).
struct AbortOnDrop(Arc<Traffic>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort.store(true, Ordering::Relaxed);
        self.0.pause.store(false, Ordering::SeqCst);
    }
}

#[test]
fn chaos_every_event_reaches_every_destination_through_outages_and_a_restart() {
    let started = Instant::now();
    let mut influxd = Influxd::start();
    let mut broker = Mosquitto::start_with(BrokerOptions {
        persistence: true,
        ..Default::default()
    });
    let tally = Arc::new(Mutex::new(Tally::new()));
    let sub = {
        let tally = Arc::clone(&tally);
        Subscriber::connect_with_handler(
            broker.port,
            SubscriberOptions {
                filter: "qliksense/#".into(),
                qos: 1,
                client_id: Some(format!("chaos-sub-{}", std::process::id())),
                clean_session: false,
                credentials: None,
            },
            move |m| tally.lock().unwrap().record(&m),
        )
    };
    let spool = tempfile::tempdir().unwrap();
    let yaml = config(&influxd, &broker, spool.path());
    let mut first = Engine::start_with_yaml(&yaml);

    let traffic = Arc::new(Traffic {
        sent: AtomicUsize::new(0),
        pause: AtomicBool::new(false),
        idle: AtomicBool::new(false),
        target: Mutex::new(first.target()),
        send_errors: AtomicUsize::new(0),
        abort: AtomicBool::new(false),
    });
    let _abort = AbortOnDrop(Arc::clone(&traffic));
    let mut timeline = Timeline {
        start: Instant::now(),
        lines: Vec::new(),
    };
    let sender = {
        let traffic = Arc::clone(&traffic);
        std::thread::spawn(move || send_all(&traffic))
    };
    timeline.note(&traffic, "sending");

    // The schedule, polled every 20 ms: InfluxDB starts up in the background (it can take seconds to load its
    // data), so the other steps keep their place in the stream meanwhile.
    let mut second: Option<Engine> = None;
    let mut run1: Option<Summary> = None;
    // Step 5: the SIGKILLed second run's counters, and the third run.
    let mut run2: Option<Summary> = None;
    let mut third: Option<Engine> = None;
    let mut influx = Outage::Up;
    let mut influx_kills = 0;
    let mut mosquitto = Outage::Up;
    let mut mosquitto_stops = 0;
    let mut status = None;
    let schedule_deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(
            Instant::now() < schedule_deadline,
            "the schedule did not finish in time: {:#?}",
            timeline.lines
        );
        let engine = third.as_ref().or(second.as_ref()).unwrap_or(&first);
        let sent = traffic.sent();
        // 1. and 4.: InfluxDB killed at 20 % and (after the engine restart) at 80 %.
        match influx {
            Outage::Up
                if (influx_kills == 0 && sent >= EVENTS * 20 / 100)
                    || (influx_kills == 1 && second.is_some() && sent >= EVENTS * 80 / 100) =>
            {
                let before = occurrences(engine, INFLUX_FAILING);
                influxd.kill();
                influx_kills += 1;
                timeline.note(&traffic, &format!("InfluxDB killed (SIGKILL, #{influx_kills})"));
                influx = Outage::Down(Instant::now(), before);
            }
            Outage::Down(since, before) if since.elapsed() >= INFLUX_DOWN => {
                let noticed = occurrences(engine, INFLUX_FAILING) > before;
                // 5. The engine SIGKILLed during the second InfluxDB outage.
                if influx_kills == 2 && noticed && third.is_none() {
                    let (earlier, running) = (run1.expect("run 1 ended"), second.as_mut().expect("run 2 runs"));
                    traffic.pause();
                    timeline.note(&traffic, "sender paused; waiting for the engine to accept it all");
                    let addr = metrics_addr(running);
                    wait_for("the engine to accept every event sent", Duration::from_secs(20), || {
                        let r = metrics_summary(addr);
                        (earlier.received + r.received == traffic.sent() as u64).then_some(())
                    });
                    wait_for("MQTT (up) to have every event", Duration::from_secs(30), || {
                        engine_is_idle(&[earlier], addr, &["mqtt"]).then_some(())
                    });
                    // The promise covers events accepted more than fsyncInterval before the crash.
                    std::thread::sleep(FSYNC_INTERVAL + Duration::from_millis(200));
                    run2 = Some(metrics_summary(addr));
                    running.kill();
                    timeline.note(&traffic, "engine SIGKILLed (InfluxDB down)");
                    let engine = Engine::start_with_yaml(&yaml);
                    traffic.resume(engine.target());
                    third = Some(engine);
                    timeline.note(&traffic, "engine started again; sender resumed");
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                if (influx_kills < 2 || third.is_some()) && (noticed || since.elapsed() >= 3 * INFLUX_DOWN) {
                    influxd.start_again();
                    timeline.note(
                        &traffic,
                        &format!("InfluxDB starting again (engine noticed the outage: {noticed})"),
                    );
                    influx = Outage::Starting;
                }
            }
            Outage::Starting if influxd.is_ready() => {
                timeline.note(&traffic, "InfluxDB back");
                influx = Outage::Up;
            }
            _ => {}
        }
        // 2. Mosquitto stopped at 40 %.
        match mosquitto {
            Outage::Up if mosquitto_stops == 0 && sent >= EVENTS * 40 / 100 => {
                let before = occurrences(engine, MQTT_LOST);
                broker.stop();
                mosquitto_stops += 1;
                timeline.note(&traffic, "Mosquitto stopped (SIGTERM)");
                mosquitto = Outage::Down(Instant::now(), before);
            }
            Outage::Down(since, before) if since.elapsed() >= MOSQUITTO_DOWN => {
                let noticed = occurrences(engine, MQTT_LOST) > before;
                if noticed || since.elapsed() >= 3 * MOSQUITTO_DOWN {
                    broker.start_again();
                    timeline.note(
                        &traffic,
                        &format!("Mosquitto back (engine noticed the outage: {noticed})"),
                    );
                    mosquitto = Outage::Up;
                }
            }
            _ => {}
        }
        // 3. The engine stopped with SIGTERM at 60 % (once Mosquitto is back, so each fault stays
        // recognisable) and started again; the sender waits meanwhile.
        if second.is_none() && sent >= EVENTS * 60 / 100 && mosquitto_stops == 1 && mosquitto == Outage::Up {
            traffic.pause();
            timeline.note(&traffic, "sender paused; engine SIGTERM");
            let exit = first.terminate();
            timeline.note(&traffic, &format!("engine exited ({exit})"));
            status = Some(exit);
            run1 = Some(final_summary(&first));
            let engine = Engine::start_with_yaml(&yaml);
            traffic.resume(engine.target());
            second = Some(engine);
            timeline.note(&traffic, "engine started again; sender resumed");
        }
        if influx_kills == 2 && influx == Outage::Up && third.is_some() && traffic.idle.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = status.expect("the engine was restarted");
    let second = second.expect("the engine was restarted");
    let mut third = third.expect("the engine was restarted after the SIGKILL");
    let run1 = run1.expect("run 1 ended");
    let run2 = run2.expect("run 2 was SIGKILLed");
    sender.join().unwrap();
    timeline.note(&traffic, "sender done");

    // Every destination catches up; the wait ends early when the engine has nothing left to deliver for 5 s
    // while something is still missing (the report below says what), or at the deadline.
    let settle_deadline = Instant::now() + SETTLE_TIMEOUT;
    let metrics_at = metrics_addr(&third);
    let mut idle_since: Option<Instant> = None;
    let mut last_points = None;
    let settled = loop {
        let points = influx_points(&influxd);
        last_points = points.or(last_points);
        let mqtt_complete = {
            let t = tally.lock().unwrap();
            !t.everything.contains(&0) && !t.command.contains(&0)
        };
        if points.is_some_and(|p| p >= EVENTS as u64) && mqtt_complete {
            break true;
        }
        if Instant::now() >= settle_deadline {
            break false;
        }
        if engine_is_idle(&[run1, run2], metrics_at, &["influxdb", "mqtt"]) {
            if idle_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(5) {
                break false;
            }
        } else {
            idle_since = None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    timeline.note(
        &traffic,
        if settled {
            "every destination complete"
        } else {
            "gave up waiting for the destinations"
        },
    );

    let metrics = stable_metrics(metrics_at);
    let status3 = third.terminate();
    timeline.note(&traffic, &format!("engine exited ({status3})"));
    let run3 = final_summary(&third);
    drop(sub);

    // What each destination holds.
    let influx_counts = influx_counts(&influxd);
    let (influx_missing, _) = coverage(&influx_counts);
    let influx_points = influx_points(&influxd).or(last_points).unwrap_or(0);
    let (t_everything, t_command, unexpected, mqtt_messages) = {
        let t = tally.lock().unwrap();
        (
            coverage(&t.everything),
            coverage(&t.command),
            t.unexpected.clone(),
            t.messages,
        )
    };

    let sum = |f: fn(&Summary) -> u64| f(&run1) + f(&run2) + f(&run3);
    let sent = traffic.sent() as u64;
    let send_errors = traffic.send_errors.load(Ordering::Relaxed) as u64;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "chaos test report ({:.1} s in all)",
        started.elapsed().as_secs_f64()
    );
    for l in &timeline.lines {
        let _ = writeln!(report, "  {l}");
    }
    let _ = writeln!(
        report,
        "sender: sent {sent}, send errors {send_errors}; readers waited on a full channel {} times",
        sum(|s| s.channel_full_waits)
    );
    for (name, s) in [("run 1", &run1), ("run 2 (SIGKILL)", &run2), ("run 3", &run3)] {
        let _ = writeln!(report, "engine {name}: {s:?}");
    }
    let _ = writeln!(
        report,
        "InfluxDB: {} of {EVENTS} user ids stored, {influx_points} points (duplicates are invisible: an identical \
         point overwrites itself; engine retries {}), missing: [{}]",
        EVENTS - missing_count(&influx_missing),
        sum(|s| s.influxdb.retries),
        show_ranges(&influx_missing)
    );
    let _ = writeln!(
        report,
        "MQTT: {mqtt_messages} messages; everything topic: {} of {EVENTS} events, {} duplicates, missing: [{}]; \
         command topics: {} of {EVENTS} events, {} duplicates, missing: [{}]; unexpected: {unexpected:?}",
        EVENTS - missing_count(&t_everything.0),
        t_everything.1,
        show_ranges(&t_everything.0),
        EVENTS - missing_count(&t_command.0),
        t_command.1,
        show_ranges(&t_command.0),
    );
    eprintln!("{report}");

    // The checks, all collected so one run shows every problem.
    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    check(status.success(), format!("engine run 1 exited with {status}"));
    check(status3.success(), format!("engine run 3 exited with {status3}"));
    check(
        sent == EVENTS as u64 && send_errors == 0,
        format!("sender: sent {sent} with {send_errors} errors"),
    );
    for (name, s) in [("run 1", &run1), ("run 2", &run2), ("run 3", &run3)] {
        check(
            s.received == s.accepted + s.excluded + s.rejected,
            format!("{name}: received != accepted + excluded + rejected: {s:?}"),
        );
    }
    let received = sum(|s| s.received);
    let accepted = sum(|s| s.accepted);
    let kernel_drops = sum(|s| s.kernel_drops);
    check(
        kernel_drops == 0,
        format!("the kernel dropped {kernel_drops} datagrams"),
    );
    check(
        received == sent,
        format!("received {received} of {sent} sent datagrams"),
    );
    check(
        accepted == received && sum(|s| s.excluded) == 0 && sum(|s| s.rejected) == 0,
        format!("accepted {accepted} of {received} received (every event is valid and not excluded)"),
    );
    // Both destinations count per event (an MQTT event is delivered when both its messages are confirmed).
    for (sink, f) in [
        ("influxdb", (|s: &Summary| s.influxdb) as fn(&Summary) -> SinkCounts),
        ("mqtt", |s: &Summary| s.mqtt),
    ] {
        let (a, b, c) = (f(&run1), f(&run2), f(&run3));
        let delivered = a.delivered + b.delivered + c.delivered;
        let dropped = a.dropped + b.dropped + c.dropped;
        let skipped = a.skipped + b.skipped + c.skipped;
        check(
            delivered + skipped + dropped == accepted && skipped == 0,
            format!("{sink}: delivered {delivered} + skipped {skipped} + dropped {dropped} != accepted {accepted}"),
        );
        check(dropped == 0, format!("{sink}: {dropped} dropped"));
        check(
            c.spooled == 0,
            format!("{sink}: {} events left in the spool", c.spooled),
        );
    }
    check(
        influx_missing.is_empty() && influx_points == EVENTS as u64,
        format!(
            "InfluxDB misses {} events ({influx_points} points stored)",
            missing_count(&influx_missing)
        ),
    );
    check(
        t_everything.0.is_empty() && t_command.0.is_empty(),
        format!(
            "MQTT misses {} events on the everything topic, {} on the command topics",
            missing_count(&t_everything.0),
            missing_count(&t_command.0)
        ),
    );
    check(
        unexpected.is_empty(),
        format!("unexpected MQTT messages: {unexpected:?}"),
    );
    // /metrics of the last run agrees with its final summary (nothing arrived after the scrape).
    let from_summary = [
        run3.received,
        run3.accepted,
        run3.kernel_drops,
        run3.influxdb.delivered,
        run3.mqtt.delivered,
        run3.influxdb.dropped,
        run3.mqtt.dropped,
    ];
    for (series, want) in COMPARED.into_iter().zip(from_summary) {
        let got = metric(&metrics, series);
        check(
            got == Some(want),
            format!("/metrics {series} = {got:?}, the final summary says {want}"),
        );
    }

    if !failures.is_empty() {
        panic!(
            "chaos test failed:\n- {}\n\nengine run 1 stderr (tail):\n{}\n\nengine run 2 stderr (tail):\n{}\n\n\
             engine run 3 stderr (tail):\n{}\n\nmosquitto log (tail):\n{}",
            failures.join("\n- "),
            tail(&first.stderr_text(), 40),
            tail(&second.stderr_text(), 40),
            tail(&third.stderr_text(), 40),
            tail(&broker.log(), 20),
        );
    }
}
