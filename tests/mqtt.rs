use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::mosquitto::{
    make_tls_files, mosquitto_passwd, openssl_available, BrokerOptions, Mosquitto, Received, Subscriber,
    SubscriberOptions,
};
use crate::common::{http, send_datagrams, wait_for, Engine};

const ALL: &str = "qliksense/userevent";
const START: &str = "qliksense/userevent/session/start";

/// The user's fixture config with MQTT the only destination, pointed at `127.0.0.1:port`, listening on a free
/// loopback UDP port; `extra` sets more keys (paths below the top level).
fn config_for(port: u16, extra: &[(&str, Yaml)]) -> String {
    let mut cfg = fixtures::mqtt_only_config(true, port);
    for (path, value) in extra {
        set(&mut cfg, path, value.clone());
    }
    serde_norway::to_string(&cfg).unwrap()
}

/// `(delivered, dropped)` of the `mqtt` sink (events) from the last summary line in `log`.
fn mqtt_summary(log: &str) -> (u64, u64) {
    (mqtt_counter(log, "delivered"), mqtt_counter(log, "dropped"))
}

/// One counter of the `mqtt` sink from the last summary line in `log`.
fn mqtt_counter(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("summary") && l.contains("mqtt(delivered="))
        .unwrap_or_else(|| panic!("no summary line with mqtt(delivered=..):\n{log}"));
    let field = |name: &str| -> u64 {
        let start = line.find("mqtt(").unwrap();
        let part = &line[start..];
        let at = part.find(&format!("{name}=")).unwrap() + name.len() + 1;
        part[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    field(name)
}

/// A session start event whose message carries `seq`, so each can be told apart at the subscriber.
fn numbered_event(seq: usize) -> Vec<u8> {
    format!(
        "/qseow-proxy-session/;qlik1;Start session;LAB;user{};AppAccess;/hub;seq={seq:05}",
        seq % 50
    )
    .into_bytes()
}

/// The `seq` of a payload published for [`numbered_event`].
fn seq_of(m: &Received) -> usize {
    let text = String::from_utf8_lossy(&m.payload);
    let at = text.find("seq=").expect("payload has seq=") + 4;
    text[at..at + 5].parse().unwrap()
}

/// (a) Every fixture case: the messages the broker delivers are exactly those Butler SOS published (topic,
/// payload bytes, QoS 0, not retained), in order. Case 16 (too few fields) is a deliberate deviation: sense-ingest
/// rejects it, so nothing is published for it.
#[test]
fn fixtures_publish_exactly_what_butler_sos_published() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port);
    let mut engine = Engine::start_with_yaml(&config_for(broker.port, &[]));
    let cases = fixtures::cases();

    let mut expected: Vec<(String, Received)> = Vec::new();
    // Events that publish at least one message: the sink counts per event.
    let mut publishing_events = 1; // the sentinel
    for case in &cases {
        if case.name == "16_too_few_fields" {
            continue;
        }
        if !case.mqtt().is_empty() {
            publishing_events += 1;
        }
        for m in case.json["expected"]["mqtt"].as_array().cloned().unwrap_or_default() {
            expected.push((
                case.name.clone(),
                Received {
                    topic: m["topic"].as_str().unwrap().to_owned(),
                    payload: m["payload_raw"].as_str().unwrap().as_bytes().to_vec(),
                    qos: m["qos"].as_u64().unwrap() as u8,
                    // Recorded as 0/1 by the capture tool.
                    retain: m["retain"]
                        .as_bool()
                        .or_else(|| m["retain"].as_u64().map(|n| n != 0))
                        .unwrap(),
                },
            ));
        }
    }
    // A sentinel (case 01 again) after all cases: every message of a case that should publish nothing would
    // arrive before it, so "exactly these, then the sentinel" proves there are no extras.
    let sentinel = cases.iter().find(|c| c.name.starts_with("01_")).unwrap();
    let sentinel_count = sentinel.mqtt().len();
    let mut datagrams: Vec<Vec<u8>> = cases.iter().map(|c| c.datagram.clone()).collect();
    datagrams.push(sentinel.datagram.clone());
    send_datagrams(engine.target(), &datagrams);

    let total = expected.len() + sentinel_count;
    sub.wait_for_count(total, Duration::from_secs(20));
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    let got = sub.received();
    assert_eq!(got.len(), total, "received:\n{got:#?}");
    for (i, ((case, want), got)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(
            got,
            want,
            "message {i} (case {case}) differs:\n got payload {}\nwant payload {}",
            String::from_utf8_lossy(&got.payload),
            String::from_utf8_lossy(&want.payload)
        );
    }
    let tail: Vec<(String, Vec<u8>)> = got[expected.len()..]
        .iter()
        .map(|m| (m.topic.clone(), m.payload.clone()))
        .collect();
    let want_tail: Vec<(String, Vec<u8>)> = sentinel.mqtt().into_iter().map(|(t, p)| (t, p.into_bytes())).collect();
    assert_eq!(tail, want_tail, "the sentinel's messages");
    let log = engine.stderr_text();
    assert_eq!(mqtt_summary(&log), (publishing_events, 0), "{log}");
}

/// (b) `username`/`password` against a broker that requires them; a wrong password is refused, logged without
/// the password, and what could not be sent waits in the spool (not dropped).
#[test]
fn credentials_are_sent_and_never_logged() {
    if mosquitto_passwd().is_none() {
        eprintln!("SKIPPED credentials_are_sent_and_never_logged: mosquitto_passwd is not installed");
        return;
    }
    let (user, password) = ("sense-ingest", "pw-3c8f1e-secret");
    let broker = Mosquitto::start_with(BrokerOptions {
        credentials: Some((user.into(), password.into())),
        ..Default::default()
    });
    let sub = Subscriber::connect_with(
        broker.port,
        SubscriberOptions {
            credentials: Some((user.into(), password.into())),
            ..Default::default()
        },
    );
    let first = fixtures::cases().into_iter().next().unwrap();

    let mut engine = Engine::start_with_yaml(&config_for(
        broker.port,
        &[
            ("Butler-SOS.mqttConfig.username", Yaml::from(user)),
            ("Butler-SOS.mqttConfig.password", Yaml::from(password)),
        ],
    ));
    send_datagrams(engine.target(), std::slice::from_ref(&first.datagram));
    let got = sub.wait_for_count(2, Duration::from_secs(20));
    assert_eq!(got.iter().map(|m| m.topic.as_str()).collect::<Vec<_>>(), [ALL, START]);
    assert!(engine.terminate().success());
    assert_eq!(mqtt_summary(&engine.stderr_text()), (1, 0));
    assert!(!engine.stderr_text().contains(password), "{}", engine.stderr_text());

    let wrong = "wrong-pw-77a1";
    let mut engine = Engine::start_with_yaml(&config_for(
        broker.port,
        &[
            ("Butler-SOS.mqttConfig.username", Yaml::from(user)),
            ("Butler-SOS.mqttConfig.password", Yaml::from(wrong)),
        ],
    ));
    wait_for("the refused connection in the log", Duration::from_secs(20), || {
        engine.stderr_text().contains("refused the connection").then_some(())
    });
    send_datagrams(engine.target(), &[first.datagram]);
    assert!(engine.terminate().success());
    let log = engine.stderr_text();
    assert!(!log.contains(wrong) && !log.contains(password), "{log}");
    assert_eq!(mqtt_summary(&log), (0, 0), "{log}");
    assert_eq!(mqtt_counter(&log, "spooled"), 1, "{log}");
    assert_eq!(sub.count(), 2, "nothing may arrive through a refused connection");
}

/// (c) `qos: 1` (and 2) with `retain: true`: a live subscriber (subscribed at QoS 2) gets the configured QoS; one
/// that subscribes later gets the retained message of each topic. PUBACKs (PUBCOMPs) count as delivered.
#[test]
fn qos_and_retain_are_configurable() {
    for qos in [1u8, 2] {
        let broker = Mosquitto::start();
        let live = Subscriber::connect_with(
            broker.port,
            SubscriberOptions {
                qos: 2,
                ..Default::default()
            },
        );
        let mut engine = Engine::start_with_yaml(&config_for(
            broker.port,
            &[
                ("Butler-SOS.mqttConfig.qos", Yaml::from(qos)),
                ("Butler-SOS.mqttConfig.retain", Yaml::from(true)),
            ],
        ));
        let first = fixtures::cases().into_iter().next().unwrap();
        let want = first.mqtt();
        send_datagrams(engine.target(), &[first.datagram]);
        let got = live.wait_for_count(2, Duration::from_secs(20));
        for (m, (topic, payload)) in got.iter().zip(&want) {
            assert_eq!((&m.topic, m.payload.as_slice()), (topic, payload.as_bytes()));
            assert_eq!((m.qos, m.retain), (qos, false), "{m:?}");
        }
        let later = Subscriber::connect(broker.port);
        let retained = later.wait_for_count(2, Duration::from_secs(10));
        let mut topics: Vec<&str> = retained.iter().map(|m| m.topic.as_str()).collect();
        topics.sort_unstable();
        assert_eq!(topics, [ALL, START]);
        for m in &retained {
            assert!(m.retain, "{m:?}");
            assert_eq!(m.payload, want[0].1.as_bytes());
        }
        assert!(engine.terminate().success());
        assert_eq!(mqtt_summary(&engine.stderr_text()), (1, 0), "qos {qos}");
    }
}

/// Sends `count` numbered events at a steady pace (about 1.5 ms apart) on a thread; returns how many were sent
/// so far (live) and the thread.
fn send_paced(engine: &Engine, count: usize) -> (Arc<AtomicUsize>, std::thread::JoinHandle<()>) {
    let target = engine.target();
    let sent = Arc::new(AtomicUsize::new(0));
    let progress = Arc::clone(&sent);
    let handle = std::thread::spawn(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..count {
            sock.send_to(&numbered_event(i), target).unwrap();
            progress.store(i + 1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(1500));
        }
    });
    (sent, handle)
}

/// Stops the broker once a third of the stream has arrived, keeps it down while `down_for` more events are sent
/// (the engine fails to reconnect meanwhile), then starts it again on the same port.
fn outage_mid_stream(
    broker: &mut Mosquitto,
    sub: &Subscriber,
    sent: &AtomicUsize,
    total_messages: usize,
    down_for: usize,
) {
    sub.wait_for_count(total_messages / 3, Duration::from_secs(30));
    broker.stop();
    let at = sent.load(Ordering::Relaxed);
    wait_for("events sent while the broker is down", Duration::from_secs(30), || {
        (sent.load(Ordering::Relaxed) >= at + down_for).then_some(())
    });
    broker.start_again();
}

/// (d) The broker goes down in the middle of a steady stream (for about 300 events) and comes back on the same
/// port, at QoS 1. Every message is either received or its event counted as dropped (`received + dropped ×
/// topics == sent × topics`, duplicates from re-sent batches counted once), the engine's own accounting is
/// complete (`delivered + dropped == sent`, per event), and events keep arriving after the reconnect. The broker
/// keeps sessions across the restart (persistence) so the subscriber misses nothing while it reconnects; the
/// engine itself uses a clean session and re-publishes every unconfirmed batch on its own.
#[test]
fn broker_restart_mid_stream_loses_nothing_uncounted_at_qos1() {
    const EVENTS: usize = 2000;
    const TOPICS: usize = 2;
    let mut broker = Mosquitto::start_with(BrokerOptions {
        persistence: true,
        ..Default::default()
    });
    let sub = Subscriber::connect_with(
        broker.port,
        SubscriberOptions {
            client_id: Some(format!("restart-sub-{}", std::process::id())),
            clean_session: false,
            ..Default::default()
        },
    );
    let mut engine = Engine::start_with_yaml(&config_for(
        broker.port,
        &[("Butler-SOS.mqttConfig.qos", Yaml::from(1))],
    ));
    let (sent, sender) = send_paced(&engine, EVENTS);
    outage_mid_stream(&mut broker, &sub, &sent, EVENTS * TOPICS, 300);
    sender.join().unwrap();

    let distinct =
        |msgs: &[Received]| -> HashSet<(String, usize)> { msgs.iter().map(|m| (m.topic.clone(), seq_of(m))).collect() };
    wait_for("the last event after the reconnect", Duration::from_secs(30), || {
        let got = distinct(&sub.received());
        (got.contains(&(ALL.to_owned(), EVENTS - 1)) && got.contains(&(START.to_owned(), EVENTS - 1))).then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    let log = engine.stderr_text();
    assert!(log.contains("reconnected to the MQTT broker"), "{log}");
    assert!(log.contains(&format!("accepted={EVENTS}")), "{log}");
    let (delivered, dropped) = mqtt_summary(&log);
    assert_eq!(delivered + dropped, EVENTS as u64, "engine accounting:\n{log}");
    let total = (EVENTS * TOPICS) as u64;
    let received = wait_for("received + dropped to add up", Duration::from_secs(10), || {
        let n = distinct(&sub.received()).len() as u64;
        (n + dropped * TOPICS as u64 == total).then_some(n)
    });
    eprintln!(
        "outage at QoS 1: received {received} distinct, {} deliveries in all, dropped {dropped}",
        sub.count()
    );
}

/// (d') The same outage at QoS 0 (Butler SOS's default), without broker persistence. QoS 0 has no acks, so a
/// message written to the socket just before the broker went away can be lost unnoticed (documented), and the
/// subscriber misses what is published before it has subscribed again. What must hold: the engine's accounting is
/// complete, nothing arrives that was not sent, and new events arrive after the reconnect.
#[test]
fn broker_restart_mid_stream_at_qos0_recovers_and_counts() {
    const EVENTS: usize = 2000;
    const TOPICS: usize = 2;
    let mut broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port);
    let mut engine = Engine::start_with_yaml(&config_for(broker.port, &[]));
    let (sent, sender) = send_paced(&engine, EVENTS);
    outage_mid_stream(&mut broker, &sub, &sent, EVENTS * TOPICS, 300);
    sender.join().unwrap();
    wait_for("the last event after the reconnect", Duration::from_secs(30), || {
        sub.received()
            .iter()
            .any(|m| m.topic == START && seq_of(m) == EVENTS - 1)
            .then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    let log = engine.stderr_text();
    assert!(log.contains("reconnected to the MQTT broker"), "{log}");
    let (delivered, dropped) = mqtt_summary(&log);
    assert_eq!(delivered + dropped, EVENTS as u64, "engine accounting:\n{log}");
    let total = (EVENTS * TOPICS) as u64;
    let received: HashSet<(String, usize)> = sub.received().iter().map(|m| (m.topic.clone(), seq_of(m))).collect();
    assert!(
        received.len() as u64 <= delivered * TOPICS as u64,
        "received {} > delivered {delivered} × {TOPICS}",
        received.len()
    );
    eprintln!(
        "outage at QoS 0: received {} of {total}, dropped {dropped}",
        received.len()
    );
}

/// Keys for the outage tests: QoS 1, a small memory queue (so batches reach the disk spool), fast retries and
/// flushes, the spool in `spool`, and `/metrics` on a free port.
fn outage_keys(spool: &std::path::Path) -> Vec<(&'static str, Yaml)> {
    vec![
        ("Butler-SOS.mqttConfig.qos", Yaml::from(1)),
        ("Butler-SOS.prometheus.enable", Yaml::from(true)),
        ("Butler-SOS.prometheus.host", Yaml::from("127.0.0.1")),
        ("Butler-SOS.prometheus.port", Yaml::from(0)),
        ("sense-ingest.spool.dir", Yaml::from(spool.to_str().unwrap())),
        ("sense-ingest.spool.memoryBytes", Yaml::from(1024)),
        ("sense-ingest.batch.maxAge", Yaml::from("50ms")),
        ("sense-ingest.retry.initialBackoff", Yaml::from("50ms")),
        ("sense-ingest.retry.maxBackoff", Yaml::from("300ms")),
    ]
}

/// Where the engine's `/metrics` listens (its `metrics endpoint listening addr=...` line).
fn metrics_addr(engine: &Engine) -> std::net::SocketAddr {
    wait_for("the metrics endpoint line", Duration::from_secs(10), || {
        let log = engine.stderr_text();
        let line = log.lines().find(|l| l.contains("metrics endpoint listening"))?;
        let start = line.find("addr=")? + 5;
        line[start..].split_whitespace().next()?.parse().ok()
    })
}

/// The value of the sample `series` (name and labels exactly as exposed), 0 when absent.
fn metric(addr: std::net::SocketAddr, series: &str) -> u64 {
    let (status, body) = http::request(addr, "GET", "/metrics", b"").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

const ACCEPTED: &str = "sense_ingest_events_accepted_total";
const SPOOLED: &str = r#"sense_ingest_sink_spooled_events{destination="mqtt"}"#;

/// Sends `datagrams` in chunks, each after the engine accepted the one before (no kernel drops, no sleeps).
fn send_acknowledged(engine: &Engine, metrics: std::net::SocketAddr, datagrams: &[Vec<u8>]) {
    let base = metric(metrics, ACCEPTED);
    let mut sent = 0;
    for chunk in datagrams.chunks(100) {
        send_datagrams(engine.target(), chunk);
        sent += chunk.len() as u64;
        wait_for("the engine to accept a chunk", Duration::from_secs(20), || {
            (metric(metrics, ACCEPTED) >= base + sent).then_some(())
        });
    }
}

/// A subscriber whose session (and queued QoS 1 messages) the broker keeps while the broker is restarted.
fn persistent_subscriber(port: u16, name: &str) -> Subscriber {
    Subscriber::connect_with(
        port,
        SubscriberOptions {
            client_id: Some(format!("{name}-{}", std::process::id())),
            clean_session: false,
            ..Default::default()
        },
    )
}

/// Waits for the engine's first connection to the broker.
fn wait_connected(engine: &Engine) {
    wait_for("the first connection", Duration::from_secs(20), || {
        engine
            .stderr_text()
            .contains("connected to the MQTT broker")
            .then_some(())
    });
}

/// `(topic, seq)` of every message, in arrival order.
fn arrivals(msgs: &[Received]) -> Vec<(String, usize)> {
    msgs.iter().map(|m| (m.topic.clone(), seq_of(m))).collect()
}

/// What a subscriber must see for events `seqs`, in this order: each event's everything message, then its own.
fn in_publish_order(seqs: impl IntoIterator<Item = usize>) -> Vec<(String, usize)> {
    seqs.into_iter()
        .flat_map(|i| [(ALL.to_owned(), i), (START.to_owned(), i)])
        .collect()
}

/// (e) The broker is down for longer than the memory queue holds: batches go to the disk spool (the spool gauge
/// rises), and once the broker is back every event arrives, exactly once and in the order received, with exact
/// counts (`delivered == sent`, nothing dropped, the spool empty again).
#[test]
fn a_broker_outage_longer_than_the_memory_queue_spools_then_replays_every_event_in_order() {
    const EVENTS: usize = 2000;
    let mut broker = Mosquitto::start_with(BrokerOptions {
        persistence: true,
        ..Default::default()
    });
    let sub = persistent_subscriber(broker.port, "spool-sub");
    let spool = tempfile::tempdir().unwrap();
    let mut engine = Engine::start_with_yaml(&config_for(broker.port, &outage_keys(spool.path())));
    let metrics = metrics_addr(&engine);
    wait_connected(&engine);
    broker.stop();

    let datagrams: Vec<Vec<u8>> = (0..EVENTS).map(numbered_event).collect();
    send_acknowledged(&engine, metrics, &datagrams);
    let spooled = wait_for("events in the disk spool", Duration::from_secs(20), || {
        let n = metric(metrics, SPOOLED);
        (n > 0).then_some(n)
    });
    assert!(
        std::fs::read_dir(spool.path().join("mqtt")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".spool")),
        "a segment file in the mqtt spool folder"
    );

    broker.start_again();
    let replay = std::time::Instant::now();
    let got = sub.wait_for_count(EVENTS * 2, Duration::from_secs(60));
    let elapsed = replay.elapsed();
    wait_for("the spool to empty", Duration::from_secs(10), || {
        (metric(metrics, SPOOLED) == 0).then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    let log = engine.stderr_text();
    assert_eq!(arrivals(&got), in_publish_order(0..EVENTS), "{log}");
    assert_eq!(mqtt_summary(&log), (EVENTS as u64, 0), "{log}");
    assert_eq!(mqtt_counter(&log, "spooled"), 0, "{log}");
    eprintln!(
        "outage replay at QoS 1: {spooled} events were spooled; {EVENTS} events ({} messages) arrived {:.0} ms \
         after the broker restart ({:.0} events/s, reconnect backoff included)",
        EVENTS * 2,
        elapsed.as_secs_f64() * 1e3,
        EVENTS as f64 / elapsed.as_secs_f64()
    );
}

/// (f) SIGTERM while the broker is down: the engine exits 0 within its shutdown timeout with every event in the
/// spool on disk (nothing dropped); the next run, with the broker back, replays the spool and delivers every
/// event in order.
#[test]
fn sigterm_during_a_broker_outage_keeps_the_spool_and_the_next_run_delivers_it() {
    const EVENTS: usize = 1000;
    const SHUTDOWN: Duration = Duration::from_secs(2);
    let mut broker = Mosquitto::start_with(BrokerOptions {
        persistence: true,
        ..Default::default()
    });
    let sub = persistent_subscriber(broker.port, "restart-engine-sub");
    let spool = tempfile::tempdir().unwrap();
    let mut keys = outage_keys(spool.path());
    keys.push(("sense-ingest.shutdownTimeout", Yaml::from("2s")));
    let yaml = config_for(broker.port, &keys);

    let mut first = Engine::start_with_yaml(&yaml);
    let metrics = metrics_addr(&first);
    wait_connected(&first);
    broker.stop();
    let datagrams: Vec<Vec<u8>> = (0..EVENTS).map(numbered_event).collect();
    send_acknowledged(&first, metrics, &datagrams);
    let stopping = std::time::Instant::now();
    assert!(first.terminate().success(), "{}", first.stderr_text());
    let took = stopping.elapsed();
    assert!(took < SHUTDOWN + Duration::from_secs(2), "shutdown took {took:?}");
    let log = first.stderr_text();
    assert!(log.contains(&format!("accepted={EVENTS}")), "{log}");
    assert_eq!(mqtt_summary(&log), (0, 0), "{log}");
    assert_eq!(
        mqtt_counter(&log, "spooled"),
        EVENTS as u64,
        "every event on disk:\n{log}"
    );

    broker.start_again();
    let mut second = Engine::start_with_yaml(&yaml);
    wait_for("the replay to be announced", Duration::from_secs(10), || {
        let log = second.stderr_text();
        let line = log.lines().find(|l| l.contains("replaying spooled events"))?;
        assert!(line.contains(&format!("events={EVENTS}")), "{line}");
        Some(())
    });
    let got = sub.wait_for_count(EVENTS * 2, Duration::from_secs(60));
    assert!(second.terminate().success(), "{}", second.stderr_text());
    let log = second.stderr_text();
    assert_eq!(arrivals(&got), in_publish_order(0..EVENTS), "{log}");
    assert_eq!(mqtt_summary(&log), (EVENTS as u64, 0), "{log}");
    assert_eq!(mqtt_counter(&log, "spooled"), 0, "{log}");
}

/// A session start event of about 5.5 KB of JSON (multi-byte characters at the field limits), numbered like
/// [`numbered_event`].
fn big_event(seq: usize) -> Vec<u8> {
    let euros = |n: usize| "\u{20ac}".repeat(n);
    format!(
        "/qseow-proxy-session/;qlik1;Start session;LAB;user{};{};/hub/{};seq={seq:05} {}",
        seq % 50,
        euros(200),
        euros(495),
        euros(990)
    )
    .into_bytes()
}

/// (g) The spool's size cap: with the broker down and `spool.maxBytes` at its minimum, the oldest spooled events
/// are dropped when a new segment would pass the cap, counted in `dropped`, with one ERROR line giving the count.
/// Everything else arrives once the broker is back, in order; the dropped events are the oldest on disk, except the
/// segment whose head record is out for delivery (the first refusal moved every queued batch to the spool, and
/// the retried record's segment is kept while it is being sent): what arrives is at most two contiguous runs, the
/// last one ending with the newest event.
#[test]
fn a_full_spool_drops_the_oldest_events_counted_with_one_error_line() {
    const EVENTS: usize = 4500;
    const BATCH: usize = 100;
    let mut broker = Mosquitto::start_with(BrokerOptions {
        persistence: true,
        ..Default::default()
    });
    let sub = persistent_subscriber(broker.port, "cap-sub");
    let spool = tempfile::tempdir().unwrap();
    let mut keys = outage_keys(spool.path());
    keys.push(("sense-ingest.spool.maxBytes", Yaml::from(1 << 20)));
    keys.push(("sense-ingest.batch.maxEvents", Yaml::from(BATCH)));
    let mut engine = Engine::start_with_yaml(&config_for(broker.port, &keys));
    let metrics = metrics_addr(&engine);
    wait_connected(&engine);
    broker.stop();
    let datagrams: Vec<Vec<u8>> = (0..EVENTS).map(big_event).collect();
    send_acknowledged(&engine, metrics, &datagrams);
    let evicted_lines = |log: &str| -> Vec<u64> {
        log.lines()
            .filter(|l| l.contains("ERROR") && l.contains("spool full: oldest events dropped"))
            .map(|l| {
                let at = l.find("events=").expect("events= in the line") + 7;
                l[at..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    wait_for("the first spool-full ERROR line", Duration::from_secs(20), || {
        evicted_lines(&engine.stderr_text()).first().copied()
    });

    broker.start_again();
    // Every event ends delivered or dropped at the cap; only then is the drop count final.
    const DELIVERED: &str = r#"sense_ingest_sink_events_delivered_total{destination="mqtt"}"#;
    const DROPPED: &str = r#"sense_ingest_sink_events_dropped_total{destination="mqtt"}"#;
    let dropped = wait_for("delivered + dropped = sent", Duration::from_secs(90), || {
        let dropped = metric(metrics, DROPPED);
        (metric(metrics, DELIVERED) + dropped == EVENTS as u64).then_some(dropped)
    });
    let want = (EVENTS - dropped as usize) * 2;
    let got = sub.wait_for_count(want, Duration::from_secs(90));
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    let log = engine.stderr_text();
    // One ERROR line per eviction step, each a small part of the spool (segments are an eighth of the cap).
    let steps = evicted_lines(&log);
    assert_eq!(
        steps.iter().sum::<u64>(),
        dropped,
        "the ERROR lines add up to the drops:\n{log}"
    );
    assert!(
        steps.iter().all(|&n| n < EVENTS as u64 / 4),
        "small eviction steps: {steps:?}"
    );
    assert_eq!(mqtt_summary(&log), (EVENTS as u64 - dropped, dropped), "{log}");
    assert_eq!(got.len(), want, "no duplicates");

    let seqs: Vec<usize> = got.iter().filter(|m| m.topic == ALL).map(seq_of).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    assert_eq!(seqs.len(), EVENTS - dropped as usize);
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &s in &seqs {
        match runs.last_mut() {
            Some(run) if run.1 + 1 == s => run.1 = s,
            _ => runs.push((s, s)),
        }
    }
    assert!(
        runs.len() <= 2 && runs.last().map(|r| r.1) == Some(EVENTS - 1),
        "the oldest events are dropped, except the segment being retried: runs {runs:?}"
    );
    assert_eq!(arrivals(&got), in_publish_order(seqs.clone()), "{log}");
    eprintln!("spool cap: {dropped} of {EVENTS} events dropped; delivered runs {runs:?}");
}

/// (h) The client's event loop keeps running while the sink has nothing to send (it runs on the delivery
/// thread's runtime, which waits for batches asynchronously): with `keepAlive: 1s` the broker sees PINGREQs
/// from an idle engine and never drops it, and an event sent afterwards goes out on that same connection.
#[test]
fn an_idle_engine_keeps_its_connection_alive_with_pings() {
    let broker = Mosquitto::start_with(BrokerOptions {
        debug_log: true,
        ..Default::default()
    });
    let sub = Subscriber::connect(broker.port);
    let client_id = format!("idle-engine-{}", std::process::id());
    let mut engine = Engine::start_with_yaml(&config_for(
        broker.port,
        &[
            ("Butler-SOS.mqttConfig.keepAlive", Yaml::from("1s")),
            ("Butler-SOS.mqttConfig.clientId", Yaml::from(client_id.as_str())),
        ],
    ));
    wait_connected(&engine);
    let pings = |log: &str| {
        log.lines()
            .filter(|l| l.contains("Received PINGREQ from") && l.contains(&client_id))
            .count()
    };
    wait_for("three PINGREQs from the idle engine", Duration::from_secs(20), || {
        (pings(&broker.log()) >= 3).then_some(())
    });
    let first = fixtures::cases().into_iter().next().unwrap();
    send_datagrams(engine.target(), std::slice::from_ref(&first.datagram));
    sub.wait_for_count(2, Duration::from_secs(20));
    assert!(engine.terminate().success());
    let log = engine.stderr_text();
    assert!(!log.contains("lost the MQTT broker connection"), "{log}");
    assert!(!log.contains("reconnected"), "{log}");
    assert_eq!(mqtt_summary(&log), (1, 0), "{log}");
}

/// TLS with `caFile`: the engine verifies the broker's certificate against the test CA.
#[test]
fn tls_with_a_ca_file() {
    if !openssl_available() {
        eprintln!("SKIPPED tls_with_a_ca_file: the openssl command is not installed");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let tls = make_tls_files(certs.path());
    let broker = Mosquitto::start_with(BrokerOptions {
        tls: Some(tls.clone()),
        ..Default::default()
    });
    let sub = Subscriber::connect(broker.port);
    let mut engine = Engine::start_with_yaml(&config_for(
        broker.tls_port.unwrap(),
        &[
            ("Butler-SOS.mqttConfig.tls.enable", Yaml::from(true)),
            (
                "Butler-SOS.mqttConfig.tls.caFile",
                Yaml::from(tls.ca.display().to_string()),
            ),
        ],
    ));
    let first = fixtures::cases().into_iter().next().unwrap();
    send_datagrams(engine.target(), std::slice::from_ref(&first.datagram));
    let got = sub.wait_for_count(2, Duration::from_secs(20));
    let want = first.mqtt();
    assert_eq!(
        got.iter()
            .map(|m| (m.topic.clone(), m.payload.clone()))
            .collect::<Vec<_>>(),
        want.into_iter().map(|(t, p)| (t, p.into_bytes())).collect::<Vec<_>>()
    );
    assert!(engine.terminate().success());
    assert_eq!(mqtt_summary(&engine.stderr_text()), (1, 0));
}
