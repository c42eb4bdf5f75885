use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::influxd::Influxd;
use crate::common::{send_datagrams, wait_for, Engine};

/// A session event for user `u{i}`.
fn event(i: usize) -> Vec<u8> {
    format!("/qseow-proxy-session/;sense1;Start session;LAB;u{i};Hub;/hub/;x").into_bytes()
}

#[test]
fn json_log_format_writes_only_json_objects_and_other_crates_stay_quiet_at_silly() {
    let influxd = Influxd::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let cfg = fixtures::influx_only_config(false, influxd.addr.port(), "logs");
    std::fs::write(&path, serde_norway::to_string(&cfg).unwrap()).unwrap();
    let mut engine = Engine::start(&[
        "run",
        "--config",
        path.to_str().unwrap(),
        "--log-level",
        "silly",
        "--log-format",
        "json",
    ]);
    // Good events through the HTTP client, and a rejected datagram whose text is logged.
    send_datagrams(
        engine.target(),
        &[event(0), event(1), b"not a user event\nforged".to_vec()],
    );
    wait_for("2 points in InfluxDB", Duration::from_secs(20), || {
        (influxd.points("logs", "user_events").len() == 2).then_some(())
    });
    assert!(engine.terminate().success());
    let log = engine.stderr_text();
    let mut messages = Vec::new();
    for line in log.lines() {
        let obj: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(obj.get(key).is_some(), "no {key} in {line}");
        }
        let target = obj["target"].as_str().unwrap();
        let level = obj["level"].as_str().unwrap();
        // At silly, sense-ingest's own targets log everything; the HTTP client's internals stay below warn.
        assert!(
            target.starts_with("sense_ingest") || target.starts_with("ingest") || matches!(level, "WARN" | "ERROR"),
            "another crate's {level} line at silly: {line}"
        );
        messages.push(obj["message"].as_str().unwrap().to_owned());
    }
    assert!(messages.iter().any(|m| m == "listening"), "{log}");
    assert!(messages.iter().any(|m| m == "summary"), "{log}");
}

#[test]
fn butler_sos_file_logging_writes_a_daily_file_in_log_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let mut cfg = fixtures::loopback_config(false);
    set(&mut cfg, "Butler-SOS.influxdbConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.mqttConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.newRelic.enable", Yaml::from(false));
    set(&mut cfg, "sense-ingest.stdout", Yaml::from(true));
    set(&mut cfg, "Butler-SOS.logLevel", Yaml::from("info"));
    set(&mut cfg, "Butler-SOS.fileLogging", Yaml::from(true));
    // Relative: next to the config file that names it.
    set(&mut cfg, "Butler-SOS.logDirectory", Yaml::from("log"));
    std::fs::write(&path, serde_norway::to_string(&cfg).unwrap()).unwrap();
    let mut engine = Engine::start(&["run", "--config", path.to_str().unwrap()]);
    send_datagrams(engine.target(), &[event(7)]);
    wait_for("the event on stdout", Duration::from_secs(10), || {
        (engine.stdout_lines().len() == 1).then_some(())
    });
    assert!(engine.terminate().success());
    let files: Vec<_> = std::fs::read_dir(dir.path().join("log"))
        .expect("log folder next to the config file")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("sense-ingest.")
            && name.ends_with(".log")
            && name.len() == "sense-ingest.YYYY-MM-DD.log".len(),
        "{name}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    // The same lines as stderr: both say `listening` and end with the summary.
    assert!(text.contains("listening"), "{text}");
    assert!(text.contains("summary"), "{text}");
    assert!(!text.contains("\x1b["), "no colour codes in the file");
}
