//! Loss accounting per Sense host (issue 5, item 3): two senders on different loopback addresses, through the real
//! binary into a real InfluxDB 1.x and the New Relic stand-in, one account of which refuses everything (400, so
//! its events are dropped). `/metrics` and the final `sender totals` lines must show each sender's exact numbers
//! per destination, and they must add up: `received == accepted + excluded + rejected` and, per destination,
//! `accepted == delivered + skipped + dropped (+ spooled)`.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::http::request;
use crate::common::influxd::Influxd;
use crate::common::nr_receiver::{Fault, NrReceiver};
use crate::common::{wait_for, Engine};

const ACCOUNT_A: &str = "1111111";
const ACCOUNT_B: &str = "2222222";
const SINK_A: &str = "new_relic:NR account A";
const SINK_B: &str = "new_relic:NR account B";
const SENDER_1: &str = "127.0.0.1";
const SENDER_2: &str = "127.0.0.2";

/// The fixture config into `influxd` (database `db`) and both New Relic accounts at `nr`, metrics on
/// 127.0.0.1:0, MQTT off.
fn config(influxd: &Influxd, db: &str, nr: &NrReceiver) -> String {
    let mut cfg = fixtures::loopback_config(false);
    let mut put = |path: &str, v: Yaml| set(&mut cfg, path, v);
    put("Butler-SOS.influxdbConfig.enable", Yaml::from(true));
    put("Butler-SOS.influxdbConfig.port", Yaml::from(influxd.addr.port()));
    put("Butler-SOS.influxdbConfig.v1Config.dbName", Yaml::from(db));
    put("Butler-SOS.mqttConfig.enable", Yaml::from(false));
    put("Butler-SOS.newRelic.enable", Yaml::from(true));
    put("Butler-SOS.newRelic.event.url", Yaml::from(nr.url()));
    put("Butler-SOS.logLevel", Yaml::from("info"));
    put("Butler-SOS.prometheus.enable", Yaml::from(true));
    put("Butler-SOS.prometheus.host", Yaml::from("127.0.0.1"));
    put("Butler-SOS.prometheus.port", Yaml::from(0));
    put("sense-ingest.batch.maxAge", Yaml::from("50ms"));
    serde_norway::to_string(&cfg).unwrap()
}

/// A session event of user `LAB\<user>` with `origin` (empty: InfluxDB skips it, Butler SOS's required fields).
fn event(user: &str, origin: &str) -> Vec<u8> {
    format!("/qseow-proxy-session/;sense1;Start session;LAB;{user};{origin};/hub/;x").into_bytes()
}

/// Sends `datagrams` from a socket bound to `ip` (any loopback address: Linux routes all of 127/8 to `lo`).
fn send_from(ip: &str, target: SocketAddr, datagrams: &[Vec<u8>]) {
    let sock = UdpSocket::bind((ip, 0)).unwrap();
    for d in datagrams {
        sock.send_to(d, target).unwrap();
    }
}

/// Every sample of `/metrics`, keyed `name{labels}` as written.
fn metrics(addr: SocketAddr) -> Option<HashMap<String, u64>> {
    let (status, body) = request(addr, "GET", "/metrics", b"")?;
    assert_eq!(status, 200, "{body}");
    Some(
        body.lines()
            .filter(|l| l.starts_with("sense_ingest_sender_"))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect(),
    )
}

fn host_sink(name: &str, host: &str, sink: &str) -> String {
    format!("sense_ingest_sender_{name}{{sender=\"{host}\",destination=\"{sink}\"}}")
}

#[test]
fn every_sender_is_accounted_per_destination_on_metrics_and_in_the_final_summary() {
    let influxd = Influxd::start();
    let nr = NrReceiver::start(&[(ACCOUNT_A, "NRII-fake-key-AAAA"), (ACCOUNT_B, "NRII-fake-key-BBBB")]);
    nr.fail_always(ACCOUNT_B, Fault::status(400));
    let mut engine = Engine::start_with_yaml(&config(&influxd, "hosts", &nr));
    let metrics_addr: SocketAddr = wait_for("the metrics endpoint line", Duration::from_secs(10), || {
        let text = engine.stderr_text();
        let line = text.lines().find(|l| l.contains("metrics endpoint listening"))?;
        let start = line.find("addr=")? + 5;
        line[start..].split_whitespace().next()?.parse().ok()
    });

    // Sender 1: 5 events, 1 that InfluxDB skips (empty origin), 1 excluded user, 1 with too few fields.
    let mut one: Vec<Vec<u8>> = (0..5).map(|i| event(&format!("a{i}"), "Hub")).collect();
    one.push(event("a-skip", ""));
    one.push(event("excluded1", "Hub"));
    one.push(b"/qseow-proxy-session/;sense1;Start session".to_vec());
    // Sender 2: 3 events, 1 InfluxDB skips, 2 of an unknown message type.
    let mut two: Vec<Vec<u8>> = (0..3).map(|i| event(&format!("b{i}"), "Hub")).collect();
    two.push(event("b-skip", ""));
    two.push(b"/not-a-proxy-event/;sense1;Start session;LAB;x;Hub;/hub/;x".to_vec());
    two.push(b"/another/;x".to_vec());
    send_from(SENDER_1, engine.target(), &one);
    send_from(SENDER_2, engine.target(), &two);

    // (sender, received, accepted, excluded, rejected reason and count, influx delivered, influx skipped)
    let expected = [
        (SENDER_1, 8, 6, 1, ("too_few_fields", 1), 5, 1),
        (SENDER_2, 6, 4, 0, ("unknown_source", 2), 3, 1),
    ];
    let m = wait_for("every outcome on /metrics", Duration::from_secs(30), || {
        let m = metrics(metrics_addr)?;
        let done = expected.iter().all(|&(host, _, accepted, ..)| {
            let get = |name: &str, sink: &str| m.get(&host_sink(name, host, sink)).copied().unwrap_or(0);
            get("events_delivered_total", "influxdb") + get("events_skipped_total", "influxdb") == accepted
                && get("events_delivered_total", SINK_A) == accepted
                && get("events_dropped_total", SINK_B) == accepted
        });
        done.then_some(m)
    });
    for &(host, received, accepted, excluded, (reason, rejected), influx_delivered, influx_skipped) in &expected {
        let get = |series: String| -> u64 { *m.get(&series).unwrap_or_else(|| panic!("no {series} in {m:#?}")) };
        let receive = |name: &str| get(format!("sense_ingest_sender_{name}{{sender=\"{host}\"}}"));
        assert_eq!(receive("datagrams_received_total"), received, "{host}");
        assert_eq!(receive("events_accepted_total"), accepted, "{host}");
        assert_eq!(receive("events_excluded_total"), excluded, "{host}");
        let rejected_series =
            format!("sense_ingest_sender_datagrams_rejected_total{{sender=\"{host}\",reason=\"{reason}\"}}");
        assert_eq!(get(rejected_series), rejected, "{host}");
        assert_eq!(received, accepted + excluded + rejected, "{host}: the receive identity");
        // (destination, delivered, skipped, dropped)
        for (sink, delivered, skipped, dropped) in [
            ("influxdb", influx_delivered, influx_skipped, 0),
            (SINK_A, accepted, 0, 0),
            (SINK_B, 0, 0, accepted),
        ] {
            let d = get(host_sink("events_delivered_total", host, sink));
            let s = get(host_sink("events_skipped_total", host, sink));
            let x = get(host_sink("events_dropped_total", host, sink));
            let spooled = get(host_sink("spooled_events", host, sink));
            assert_eq!((d, s, x, spooled), (delivered, skipped, dropped, 0), "{host} at {sink}");
            assert_eq!(
                d + s + x + spooled,
                accepted,
                "{host} at {sink}: the destination identity"
            );
            assert_eq!(get(host_sink("events_dropped_spool_cap_total", host, sink)), 0);
        }
    }
    assert_eq!(influxd.points("hosts", "user_events").len(), 8);
    assert_eq!(nr.event_count(ACCOUNT_A), 10);
    assert_eq!(nr.event_count(ACCOUNT_B), 0);

    assert!(engine.terminate().success());
    let log = engine.stderr_text();
    for (host, want) in [
        (
            SENDER_1,
            [
                "received=8 accepted=6 excluded=1 rejected=1 rejected_by_reason=\"too_few_fields=1\"",
                "influxdb(delivered=5 skipped=1 dropped=0 spool_cap=0 spooled=0)",
                "new_relic:NR account A(delivered=6 skipped=0 dropped=0 spool_cap=0 spooled=0)",
                "new_relic:NR account B(delivered=0 skipped=0 dropped=6 spool_cap=0 spooled=0)",
            ],
        ),
        (
            SENDER_2,
            [
                "received=6 accepted=4 excluded=0 rejected=2 rejected_by_reason=\"unknown_source=2\"",
                "influxdb(delivered=3 skipped=1 dropped=0 spool_cap=0 spooled=0)",
                "new_relic:NR account A(delivered=4 skipped=0 dropped=0 spool_cap=0 spooled=0)",
                "new_relic:NR account B(delivered=0 skipped=0 dropped=4 spool_cap=0 spooled=0)",
            ],
        ),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains("sender totals") && l.contains("\"final\"") && l.contains(&format!("sender={host} ")))
            .unwrap_or_else(|| panic!("no final sender totals line for {host} in\n{log}"));
        for w in want {
            assert!(line.contains(w), "{host}: missing {w:?} in\n{line}");
        }
    }
}
