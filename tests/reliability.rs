use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::influxd::Influxd;
use crate::common::{send_datagrams, wait_for, Engine};

/// The fixture config into `influxd` only, with short retries so outages are noticed fast.
fn config(influxd: &Influxd, db: &str, spool_dir: &std::path::Path) -> serde_norway::Value {
    let mut cfg = fixtures::influx_only_config(false, influxd.addr.port(), db);
    set(&mut cfg, "sense-ingest.retry.initialBackoff", Yaml::from("50ms"));
    set(&mut cfg, "sense-ingest.retry.maxBackoff", Yaml::from("300ms"));
    set(&mut cfg, "sense-ingest.batch.maxAge", Yaml::from("50ms"));
    set(
        &mut cfg,
        "sense-ingest.spool.dir",
        Yaml::from(spool_dir.to_str().unwrap()),
    );
    set(&mut cfg, "sense-ingest.spool.memoryBytes", Yaml::from(4096));
    cfg
}

/// `n` distinct session events (user ids `u0`..), so every one is its own InfluxDB series.
pub(crate) fn events(n: usize, prefix: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("/qseow-proxy-session/;sense1;Start session;LAB;{prefix}{i};Hub;/hub/;x").into_bytes())
        .collect()
}

pub(crate) fn final_summary(engine: &Engine) -> String {
    engine
        .stderr_text()
        .lines()
        .rev()
        .find(|l| l.contains("summary"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn an_influxdb_outage_loses_nothing() {
    let mut influxd = Influxd::start();
    let spool = tempfile::tempdir().unwrap();
    let mut engine =
        Engine::start_with_yaml(&serde_norway::to_string(&config(&influxd, "outage", spool.path())).unwrap());
    send_datagrams(engine.target(), &events(500, "before"));
    wait_for("the first events in InfluxDB", Duration::from_secs(20), || {
        (influxd.points("outage", "user_events").len() == 500).then_some(())
    });
    influxd.kill();
    send_datagrams(engine.target(), &events(3000, "during"));
    wait_for("the engine to notice the outage", Duration::from_secs(20), || {
        engine.stderr_text().contains("send failed; retrying").then_some(())
    });
    influxd.restart();
    send_datagrams(engine.target(), &events(500, "after"));
    wait_for(
        "every event in InfluxDB after the outage",
        Duration::from_secs(60),
        || (influxd.points("outage", "user_events").len() >= 4000).then_some(()),
    );
    assert!(engine.terminate().success());
    assert_eq!(influxd.points("outage", "user_events").len(), 4000);
    let summary = final_summary(&engine);
    assert!(summary.contains("received=4000"), "{summary}");
    assert!(
        summary.contains("delivered=4000") && summary.contains("dropped=0"),
        "{summary}"
    );
}

#[test]
fn spooled_events_survive_an_engine_restart_and_are_replayed_in_order() {
    let mut influxd = Influxd::start();
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = config(&influxd, "restart", spool.path());
    set(&mut cfg, "sense-ingest.shutdownTimeout", Yaml::from("500ms"));
    let yaml = serde_norway::to_string(&cfg).unwrap();
    // InfluxDB is down for the whole first run.
    influxd.kill();
    let mut first = Engine::start_with_yaml(&yaml);
    send_datagrams(first.target(), &events(2000, "s"));
    assert!(first.terminate().success(), "{}", first.stderr_text());
    let summary = final_summary(&first);
    assert!(
        summary.contains("received=2000") && summary.contains("dropped=0"),
        "{summary}"
    );
    assert!(
        summary.contains("spooled=2000"),
        "every event must be on disk: {summary}"
    );

    influxd.restart();
    let mut second = Engine::start_with_yaml(&yaml);
    wait_for("the replay to be announced", Duration::from_secs(10), || {
        second.stderr_text().contains("replaying spooled events").then_some(())
    });
    wait_for("the spooled events in InfluxDB", Duration::from_secs(30), || {
        (influxd.points("restart", "user_events").len() >= 2000).then_some(())
    });
    assert!(second.terminate().success());
    let points = influxd.points("restart", "user_events");
    assert_eq!(points.len(), 2000);
    // Replayed in the order received: timestamps follow the user ids' send order.
    let order: Vec<usize> = points
        .iter()
        .map(|p| {
            p.tags["userId"]
                .as_str()
                .unwrap()
                .trim_start_matches('s')
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(order, (0..2000).collect::<Vec<_>>());
    assert!(
        final_summary(&second).contains("spooled=0"),
        "{}",
        final_summary(&second)
    );
}
