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
use crate::common::{send_datagrams, wait_for, Engine};

const ALL: &str = "qliksense/userevent";
const START: &str = "qliksense/userevent/session/start";

/// The user's fixture config with MQTT the only destination, pointed at `127.0.0.1:port`, listening on a free
/// loopback UDP port; `extra` sets more keys (paths below the top level).
fn config_for(port: u16, extra: &[(&str, Yaml)]) -> String {
    let mut cfg = fixtures::config(true);
    set(
        &mut cfg,
        "Butler-SOS.userEvents.udpServerConfig.serverHost",
        Yaml::from("127.0.0.1"),
    );
    set(
        &mut cfg,
        "Butler-SOS.userEvents.udpServerConfig.portUserActivityEvents",
        Yaml::from(0),
    );
    set(&mut cfg, "Butler-SOS.influxdbConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.newRelic.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.mqttConfig.enable", Yaml::from(true));
    set(&mut cfg, "Butler-SOS.mqttConfig.brokerHost", Yaml::from("127.0.0.1"));
    set(&mut cfg, "Butler-SOS.mqttConfig.brokerPort", Yaml::from(port));
    set(&mut cfg, "Butler-SOS.logLevel", Yaml::from("info"));
    for (path, value) in extra {
        set(&mut cfg, path, value.clone());
    }
    serde_norway::to_string(&cfg).unwrap()
}

/// `(delivered, dropped)` of the `mqtt` sink from the last summary line in `log`.
fn mqtt_summary(log: &str) -> (u64, u64) {
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
    (field("delivered"), field("dropped"))
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
    for case in &cases {
        if case.name == "16_too_few_fields" {
            continue;
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
    assert_eq!(mqtt_summary(&log), (total as u64, 0), "{log}");
}

/// (b) `username`/`password` against a broker that requires them; a wrong password is refused, logged without
/// the password, and what could not be sent is counted as dropped.
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
    assert_eq!(mqtt_summary(&engine.stderr_text()), (2, 0));
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
    assert_eq!(mqtt_summary(&log), (0, 2), "{log}");
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
        assert_eq!(mqtt_summary(&engine.stderr_text()), (2, 0), "qos {qos}");
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
/// port, at QoS 1. Every message is either received or counted as dropped (`received + dropped == sent ×
/// topics`, duplicates from re-sends counted once), the engine's own accounting is complete (`delivered + dropped
/// == sent × topics`), and events keep arriving after the reconnect. The broker keeps sessions across the restart
/// (persistence) so the subscriber misses nothing while it reconnects; the engine itself uses a clean session
/// and keeps its queued and unacknowledged messages on its own.
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
    let total = (EVENTS * TOPICS) as u64;
    assert_eq!(delivered + dropped, total, "engine accounting:\n{log}");
    let received = wait_for("received + dropped to add up", Duration::from_secs(10), || {
        let n = distinct(&sub.received()).len() as u64;
        (n + dropped == total).then_some(n)
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
    let total = (EVENTS * TOPICS) as u64;
    assert_eq!(delivered + dropped, total, "engine accounting:\n{log}");
    let received: HashSet<(String, usize)> = sub.received().iter().map(|m| (m.topic.clone(), seq_of(m))).collect();
    assert!(
        received.len() as u64 <= delivered,
        "received {} > delivered {delivered}",
        received.len()
    );
    eprintln!(
        "outage at QoS 0: received {} of {total}, dropped {dropped}",
        received.len()
    );
}

/// A broker that stays away: once rumqttc's queue is full and the outage lasts longer than the grace period,
/// messages are dropped and counted (readers are not stalled for ever); at shutdown what is still queued is
/// counted too, and the engine exits within its shutdown timeout.
#[test]
fn a_dead_broker_costs_counted_drops_not_a_stalled_engine() {
    const EVENTS: usize = 1000;
    let mut broker = Mosquitto::start();
    let mut engine = Engine::start_with_yaml(&config_for(broker.port, &[]));
    wait_for("the first connection", Duration::from_secs(20), || {
        engine
            .stderr_text()
            .contains("connected to the MQTT broker")
            .then_some(())
    });
    broker.stop();
    let datagrams: Vec<Vec<u8>> = (0..EVENTS).map(numbered_event).collect();
    for chunk in datagrams.chunks(100) {
        send_datagrams(engine.target(), chunk);
        std::thread::sleep(Duration::from_millis(2));
    }
    wait_for("the sink to start shedding", Duration::from_secs(30), || {
        engine
            .stderr_text()
            .contains("dropping messages (counted)")
            .then_some(())
    });
    let started = std::time::Instant::now();
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "shutdown took {:?}",
        started.elapsed()
    );
    let log = engine.stderr_text();
    assert!(log.contains(&format!("accepted={EVENTS}")), "{log}");
    assert_eq!(mqtt_summary(&log), (0, (EVENTS * 2) as u64), "{log}");
    assert!(log.contains("not confirmed by the broker at shutdown"), "{log}");
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
    assert_eq!(mqtt_summary(&engine.stderr_text()), (2, 0));
}
