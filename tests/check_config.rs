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
    set(
        &mut cfg,
        "Butler-SOS.userEvents.udpServerConfig.enableSourceValidation",
        Yaml::from(true),
    );
    set(
        &mut cfg,
        "Butler-SOS.userEvents.udpServerConfig.allowedSources",
        Yaml::Null,
    );
    let out = check(&serde_norway::to_string(&cfg).unwrap());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Butler-SOS.userEvents.udpServerConfig.allowedSources"),
        "{err}"
    );
    assert!(err.contains("refuses to start"), "{err}");
}
