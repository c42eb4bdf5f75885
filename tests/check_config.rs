use std::process::{Command, Output};

use serde_norway::Value as Yaml;

use crate::common::engine_bin;
use crate::common::fixtures::{self, set};

fn check(yaml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    Command::new(engine_bin())
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn the_fixture_butler_sos_files_are_valid() {
    for scramble in [true, false] {
        let out = check(&serde_norway::to_string(&fixtures::config(scramble)).unwrap());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    }
}

#[test]
fn every_broken_key_is_reported_with_its_path_and_nothing_starts() {
    let mut cfg = fixtures::config(true);
    set(
        &mut cfg,
        "Butler-SOS.userEvents.udpServerConfig.portUserActivityEvents",
        Yaml::from("abc"),
    );
    set(&mut cfg, "Butler-SOS.logLevel", Yaml::from("loud"));
    set(&mut cfg, "Butler-SOS.userEvents.sendToInfluxDB", Yaml::from(true));
    set(&mut cfg, "Butler-SOS.influxdbConfig.v1Config.dbName", Yaml::from(""));
    set(&mut cfg, "sense-ingest.backend", Yaml::from("epoll"));
    set(
        &mut cfg,
        "Butler-SOS.influxdbConfig.v1Config.auth.enable",
        Yaml::from(true),
    );
    set(
        &mut cfg,
        "Butler-SOS.influxdbConfig.v1Config.auth.password",
        Yaml::from("SENTINEL-SECRET-0xC0FFEE"),
    );
    set(
        &mut cfg,
        "Butler-SOS.influxdbConfig.v1Config.auth.username",
        Yaml::from(3),
    );
    let yaml = serde_norway::to_string(&cfg).unwrap();
    let out = check(&yaml);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "Butler-SOS.userEvents.udpServerConfig.portUserActivityEvents",
        "Butler-SOS.logLevel",
        "Butler-SOS.userEvents.sendToInfluxDB",
        "Butler-SOS.influxdbConfig.v1Config.dbName",
        "sense-ingest.backend",
    ] {
        assert!(err.contains(key), "error output does not name {key}:\n{err}");
    }
    assert!(err.contains("\"abc\""), "{err}");
    assert!(
        !err.contains("SENTINEL-SECRET"),
        "a secret leaked into check-config output:\n{err}"
    );

    // `run` refuses the same file before binding anything.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let run = Command::new(engine_bin())
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let run_err = String::from_utf8_lossy(&run.stderr);
    assert!(run_err.contains("portUserActivityEvents"), "{run_err}");
    assert!(!run_err.contains("listening"), "{run_err}");
}

#[test]
fn a_plain_minimal_butler_sos_file_is_valid_and_yaml_syntax_errors_are_reported() {
    let out = check("Butler-SOS:\n  userEvents:\n    enable: true\n    tags: null\n    excludeUser: []\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = check("Butler-SOS:\n  userEvents: [unclosed\n");
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
}

#[test]
fn a_missing_config_file_is_an_error_naming_the_file() {
    let out = Command::new(engine_bin())
        .args(["check-config", "--config", "/nonexistent/bsos.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bsos.yaml"));
}

#[test]
fn source_validation_without_a_usable_source_refuses_to_start() {
    let mut cfg = fixtures::config(true);
    fixtures::validate_sources(&mut cfg, Yaml::Null);
    let out = check(&serde_norway::to_string(&cfg).unwrap());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Butler-SOS.userEvents.udpServerConfig.allowedSources"),
        "{err}"
    );
    assert!(err.contains("refuses to start"), "{err}");
}

/// The parts of Butler SOS's `production_template.yaml` that sense-ingest reads, with its placeholders, after the
/// minimal edits a user makes (user events on, a listen address, an InfluxDB host).
const TEMPLATE_WITH_MINIMAL_EDITS: &str = r#"
Butler-SOS:
  logLevel: info
  fileLogging: true
  logDirectory: log
  thirdPartyToolsCredentials:
    newRelic:
  qlikSenseEvents:
    influxdb: {enable: false, writeFrequency: 20000}
    eventCount: {enable: false, influxdb: {measurementName: event_count, tags: [{name: qs_env, value: dev}]}}
    rejectedEventCount: {enable: false, influxdb: {measurementName: rejected_event_count}}
  userEvents:
    enable: true
    excludeUser:
    udpServerConfig:
      serverHost: 127.0.0.1
      portUserActivityEvents: 9997
      messageQueue: {maxConcurrent: 10, maxSize: 200, backpressureThreshold: 80}
      rateLimit: {enable: false, maxMessagesPerMinute: 600}
      maxMessageSize: 65507
      enableSourceValidation: false
      allowedSources:
        - <IP or FQDN of a Sense server>
      queueMetrics:
        influxdb: {enable: false, writeFrequency: 20000, measurementName: user_events_queue}
    tags: [{name: qs_env, value: dev}]
    sendToMQTT:
      enable: false
      postTo:
        everythingTopic: {enable: true, topic: qliksense/userevent}
    sendToInfluxdb:
      enable: true
    sendToNewRelic:
      enable: false
      destinationAccount:
      scramble: true
  mqttConfig:
    enable: false
    brokerHost: <IP of MQTT broker/server>
    brokerPort: 1883
    baseTopic: butler-sos/
  newRelic:
    enable: false
    event:
      url: https://insights-collector.eu01.nr-data.net
      header:
  prometheus:
    enable: false
    host: <IP or FQDN>
    port: 9842
  influxdbConfig:
    enable: true
    host: 127.0.0.1
    port: 8086
    version: 1
    maxBatchSize: 1000
    v1Config:
      auth: {enable: false, username: user_joe, password: joesecret}
      dbName: senseops
      retentionPolicy: {name: 10d, duration: 10d}
"#;

#[test]
fn butler_sos_template_placeholders_in_switched_off_sections_pass() {
    let out = check(TEMPLATE_WITH_MINIMAL_EDITS);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Switched on, the same placeholder is an error naming its key.
    let on = TEMPLATE_WITH_MINIMAL_EDITS
        .replacen("  mqttConfig:\n    enable: false", "  mqttConfig:\n    enable: true", 1)
        .replacen(
            "    sendToMQTT:\n      enable: false",
            "    sendToMQTT:\n      enable: true",
            1,
        );
    let out = check(&on);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Butler-SOS.mqttConfig.brokerHost"), "{err}");
    // A wrong type is still an error in a switched-off section.
    let out = check(&TEMPLATE_WITH_MINIMAL_EDITS.replacen("brokerPort: 1883", "brokerPort: many", 1));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Butler-SOS.mqttConfig.brokerPort"));
}

#[test]
fn check_config_refuses_what_run_refuses_user_events_off() {
    let yaml =
        TEMPLATE_WITH_MINIMAL_EDITS.replacen("  userEvents:\n    enable: true", "  userEvents:\n    enable: false", 1);
    assert_ne!(yaml, TEMPLATE_WITH_MINIMAL_EDITS);
    let out = check(&yaml);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Butler-SOS.userEvents.enable"), "{err}");
}

#[test]
fn check_config_lists_what_the_file_switches_on() {
    let out = check(TEMPLATE_WITH_MINIMAL_EDITS);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], "listener: udp 127.0.0.1:9997 (backend auto)");
    assert_eq!(
        lines[1],
        "destination: influxdb 1.x http://127.0.0.1:8086 database senseops"
    );
    // The spool folder is next to the config file (a temp dir here).
    assert!(
        lines[2].starts_with("spool: /") && lines[2].ends_with("/sense-ingest-spool (one folder per destination)"),
        "{stdout}"
    );
}
