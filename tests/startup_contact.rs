//! At start each destination is contacted once and the result is logged with its address: the InfluxDB database
//! exists before the first event, and an unreachable destination gets one WARN naming the keys to fix while the
//! engine starts anyway and keeps what it receives.

use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::influxd::Influxd;
use crate::common::mosquitto::Mosquitto;
use crate::common::nr_receiver::NrReceiver;
use crate::common::{free_tcp_port, send_datagrams, wait_for, Engine};
use crate::reliability::{events, final_summary};

const WAIT: Duration = Duration::from_secs(20);

/// The first log line of `engine` that holds every one of `parts`.
fn wait_for_line(engine: &Engine, parts: &[&str]) -> String {
    wait_for(&format!("a log line with {parts:?}"), WAIT, || {
        engine
            .stderr_text()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
    })
}

#[test]
fn the_influxdb_database_is_ready_before_the_first_event_and_the_log_names_the_server() {
    let influxd = Influxd::start();
    let cfg = fixtures::influx_only_config(false, influxd.addr.port(), "contacted");
    let engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let address = format!("address=http://127.0.0.1:{}", influxd.addr.port());
    let line = wait_for_line(
        &engine,
        &["destination answered at start", "destination=influxdb", &address],
    );
    assert!(line.contains("database \"contacted\" ready"), "{line}");
    assert!(line.contains("influxdb 1."), "the server's version is named: {line}");
    // No event was sent: the database and its retention policy were made by the contact alone.
    let databases = influxd.query("_internal", "show databases").to_string();
    assert!(databases.contains("\"contacted\""), "{databases}");
    let rp = cfg["Butler-SOS"]["influxdbConfig"]["v1Config"]["retentionPolicy"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let policies = influxd.query("contacted", "show retention policies").to_string();
    assert!(policies.contains(&format!("\"{rp}\"")), "{policies}");
}

#[test]
fn an_unreachable_influxdb_is_one_warn_naming_the_keys_and_the_engine_still_starts_and_spools() {
    let port = free_tcp_port(); // nothing listens there
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = fixtures::influx_only_config(false, port, "nowhere");
    set(
        &mut cfg,
        "sense-ingest.spool.dir",
        Yaml::from(spool.path().to_str().unwrap()),
    );
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let address = format!("address=http://127.0.0.1:{port}");
    let line = wait_for_line(&engine, &["cannot reach the destination at start", &address]);
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("destination=influxdb"), "{line}");
    assert!(
        line.contains("check Butler-SOS.influxdbConfig.host and Butler-SOS.influxdbConfig.port"),
        "{line}"
    );
    let warns = engine
        .stderr_text()
        .lines()
        .filter(|l| l.contains("cannot reach the destination at start"))
        .count();
    assert_eq!(warns, 1, "one WARN per destination:\n{}", engine.stderr_text());
    // The engine runs: what it receives is kept (spooled at shutdown), none of it dropped.
    send_datagrams(engine.target(), &events(40, "kept"));
    wait_for("the events to be accepted", WAIT, || {
        engine.stderr_text().contains("send failed; retrying").then_some(())
    });
    assert!(engine.terminate().success());
    let summary = final_summary(&engine);
    assert!(summary.contains("accepted=40"), "{summary}");
    assert!(
        summary.contains("influxdb(delivered=0 skipped=0 dropped=0"),
        "{summary}"
    );
    assert!(summary.contains("spooled=40"), "{summary}");
}

/// MQTT as the only destination at 127.0.0.1:`port`.
fn mqtt_config(port: u16) -> String {
    let cfg = fixtures::mqtt_only_config(false, port);
    serde_norway::to_string(&cfg).unwrap()
}

#[test]
fn the_mqtt_broker_is_contacted_at_start_and_a_missing_one_names_the_broker_keys() {
    let broker = Mosquitto::start();
    let engine = Engine::start_with_yaml(&mqtt_config(broker.port));
    let address = format!("address=127.0.0.1:{}", broker.port);
    let line = wait_for_line(
        &engine,
        &["destination answered at start", "destination=mqtt", &address],
    );
    assert!(line.contains("connected to the mqtt broker"), "{line}");
    drop(engine);

    let port = free_tcp_port();
    let engine = Engine::start_with_yaml(&mqtt_config(port));
    let line = wait_for_line(&engine, &["cannot reach the destination at start", "destination=mqtt"]);
    assert!(line.contains(&format!("address=127.0.0.1:{port}")), "{line}");
    assert!(
        line.contains("check Butler-SOS.mqttConfig.brokerHost and Butler-SOS.mqttConfig.brokerPort"),
        "{line}"
    );
}

#[test]
fn each_new_relic_account_resolves_its_event_api_at_start_without_posting() {
    let rx = NrReceiver::start(&[("1111111", "key-a"), ("2222222", "key-b")]);
    let cfg = fixtures::new_relic_only_config(false, &rx.url());
    let engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let port = rx.addr.port();
    let lines = wait_for("both accounts' contact lines", WAIT, || {
        let lines: Vec<String> = engine
            .stderr_text()
            .lines()
            .filter(|l| l.contains("destination answered at start") && l.contains("new relic event api resolves"))
            .map(str::to_owned)
            .collect();
        (lines.len() == 2).then_some(lines)
    });
    for line in &lines {
        assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    }
    assert!(rx.requests().is_empty(), "nothing is posted before there are events");
}
