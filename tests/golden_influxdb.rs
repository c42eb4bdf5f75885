use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::influxd::Influxd;
use crate::common::{send_datagrams, wait_for, Engine};

/// The fixture config pointed at `influxd`, listening on a free loopback port, InfluxDB the only destination.
fn config_for(influxd: &Influxd, db: &str, backend: &str) -> String {
    let mut cfg = fixtures::influx_only_config(true, influxd.addr.port(), db);
    set(&mut cfg, "sense-ingest.backend", Yaml::from(backend));
    set(&mut cfg, "sense-ingest.readerThreads", Yaml::from(2));
    serde_norway::to_string(&cfg).unwrap()
}

/// Sends every fixture datagram, stops the engine (which flushes), and compares what InfluxDB stored with what
/// Butler SOS made InfluxDB store, point by point in send order.
fn fixtures_store_exactly_what_butler_sos_stored(backend: &str) {
    let influxd = Influxd::start();
    let db = format!("senseops_{backend}");
    let mut engine = Engine::start_with_yaml(&config_for(&influxd, &db, backend));
    assert!(
        engine.stderr_text().contains(&format!("backend=\"{backend}\"")),
        "engine did not use the {backend} backend:\n{}",
        engine.stderr_text()
    );
    let cases = fixtures::cases();
    let datagrams: Vec<Vec<u8>> = cases.iter().map(|c| c.datagram.clone()).collect();
    send_datagrams(engine.target(), &datagrams);
    let expected: Vec<(String, serde_json::Value)> = cases
        .iter()
        .flat_map(|c| c.influx_points().into_iter().map(move |p| (c.name.clone(), p)))
        .collect();
    // Wait until everything arrived (the batch age flushes it), then stop: shutdown must flush nothing twice.
    wait_for("every expected point in InfluxDB", Duration::from_secs(20), || {
        (influxd.points(&db, "user_events").len() >= expected.len()).then_some(())
    });
    let status = engine.terminate();
    assert!(status.success(), "engine exit {status}:\n{}", engine.stderr_text());
    let stored = influxd.points(&db, "user_events");
    assert_eq!(
        stored.len(),
        expected.len(),
        "stored {} points, fixtures expect {}:\n{stored:#?}",
        stored.len(),
        expected.len()
    );
    for ((case, want), got) in expected.iter().zip(&stored) {
        assert_eq!(
            serde_json::Value::Object(got.tags.clone()),
            want["tags"],
            "case {case}: tags differ (expected left... got right)"
        );
        assert_eq!(
            serde_json::Value::Object(got.fields.clone()),
            want["fields"],
            "case {case}: fields differ"
        );
    }
    let log = engine.stderr_text();
    // The fixtures hold three rejects (unknown source, empty datagram, too few fields) and one excluded user.
    assert!(log.contains("unknown_source=2"), "{log}");
    assert!(log.contains("too_few_fields=1"), "{log}");
    assert!(log.contains("excluded=1"), "{log}");
}

#[test]
fn fixtures_into_influxdb_with_io_uring_reader() {
    fixtures_store_exactly_what_butler_sos_stored("io_uring");
}

#[test]
fn fixtures_into_influxdb_with_recvmmsg_reader() {
    fixtures_store_exactly_what_butler_sos_stored("recvmmsg");
}

/// A batch far over influxd's body limit (`max-body-size`, 64 KiB here): influxd answers 413, and the engine's
/// write client reads that answer, the worker splits the batch, and every point arrives. (A server that stops
/// reading the body and resets the connection is covered by the write client's unit tests.)
#[test]
fn a_batch_over_influxds_body_limit_is_split_and_every_point_arrives() {
    const EVENTS: usize = 2000;
    let influxd = Influxd::start_with_max_body(64 * 1024);
    let mut cfg: serde_norway::Value = serde_norway::from_str(&config_for(&influxd, "body_limit", "recvmmsg")).unwrap();
    // One batch of everything: 2000 points of ~12 KB, 24 MB, more than loopback's socket buffers hold (~10 MB).
    set(
        &mut cfg,
        "Butler-SOS.userEvents.udpServerConfig.maxMessageSize",
        Yaml::from(65507),
    );
    set(&mut cfg, "Butler-SOS.influxdbConfig.maxBatchSize", Yaml::from(EVENTS));
    set(&mut cfg, "sense-ingest.batch.maxAge", Yaml::from("5s"));
    set(&mut cfg, "sense-ingest.batch.maxEvents", Yaml::from(100_000));
    set(&mut cfg, "sense-ingest.batch.maxBytes", Yaml::from(32 << 20));
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let long = "x".repeat(12_000);
    let datagrams: Vec<Vec<u8>> = (0..EVENTS)
        .map(|i| {
            format!("/qseow-proxy-session/;sense1.lab.example;Stop session;LAB;user{i};Hub;/hub/;{long}").into_bytes()
        })
        .collect();
    send_datagrams(engine.target(), &datagrams);
    wait_for("every point in InfluxDB", Duration::from_secs(60), || {
        (influxd.points("body_limit", "user_events").len() >= EVENTS).then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    assert_eq!(influxd.points("body_limit", "user_events").len(), EVENTS);
    let log = engine.stderr_text();
    assert!(
        log.contains("destination said 413: splitting batch sink=influxdb events=2000"),
        "{log}"
    );
}

/// Butler SOS talks to InfluxDB directly whatever the environment says; so do set-up and writes here. A proxy
/// variable left in a service's environment (pointing at nothing here) must not take InfluxDB traffic.
#[test]
fn influxdb_traffic_ignores_proxy_variables_in_the_environment() {
    let influxd = Influxd::start();
    let nothing = crate::common::free_tcp_port();
    let proxy = format!("http://127.0.0.1:{nothing}");
    let mut engine = Engine::start_with_yaml_and(&config_for(&influxd, "proxy_check", "recvmmsg"), |c| {
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            c.env(var, &proxy);
        }
        c.env_remove("NO_PROXY").env_remove("no_proxy");
    });
    let first = fixtures::cases().into_iter().next().unwrap();
    send_datagrams(engine.target(), &[first.datagram]);
    wait_for("one point", Duration::from_secs(20), || {
        (influxd.points("proxy_check", "user_events").len() == 1).then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
}

#[test]
fn database_and_default_retention_policy_are_created_like_butler_sos() {
    let influxd = Influxd::start();
    let mut engine = Engine::start_with_yaml(&config_for(&influxd, "rp_check", "recvmmsg"));
    let first = fixtures::cases().into_iter().next().unwrap();
    send_datagrams(engine.target(), &[first.datagram]);
    wait_for("one point", Duration::from_secs(20), || {
        (influxd.points("rp_check", "user_events").len() == 1).then_some(())
    });
    assert!(engine.terminate().success());
    let rps = influxd.query("rp_check", "SHOW RETENTION POLICIES ON rp_check");
    let rows = rps["results"][0]["series"][0]["values"].as_array().unwrap();
    let ten_d = rows.iter().find(|r| r[0] == "10d").expect("retention policy 10d");
    assert_eq!(ten_d[1], "240h0m0s");
    assert_eq!(ten_d[4], true, "10d must be the default retention policy");
}

#[test]
fn sigterm_flushes_everything_already_received_into_influxdb() {
    let influxd = Influxd::start();
    let mut cfg: serde_norway::Value =
        serde_norway::from_str(&config_for(&influxd, "flush_check", "io_uring")).unwrap();
    // Neither age nor size would flush these: only the shutdown can.
    set(&mut cfg, "sense-ingest.batch.maxAge", Yaml::from("1h"));
    set(&mut cfg, "sense-ingest.batch.maxEvents", Yaml::from(100_000));
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let first = fixtures::cases().into_iter().next().unwrap();
    send_datagrams(engine.target(), &vec![first.datagram; 2000]);
    // The datagrams are in the socket buffer or already parsed: SIGTERM must drain, flush and exit 0.
    let status = engine.terminate();
    assert!(status.success(), "{}", engine.stderr_text());
    assert_eq!(
        influxd.points("flush_check", "user_events").len(),
        2000,
        "{}",
        engine.stderr_text()
    );
}
