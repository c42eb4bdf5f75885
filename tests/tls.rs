//! TLS to InfluxDB and New Relic (`sense-ingest.influxdbTls`, `sense-ingest.newRelicTls`): the real binary
//! writes through a TLS-terminating proxy (tests/common/tls_proxy.rs, certificate made with openssl at test
//! time) into a real InfluxDB 1.x and the New Relic stand-in. A private CA in `caFile` is trusted; a wrong CA
//! fails with an ERROR, counted retries and nothing lost (the events end in the spool); `insecureSkipVerify`
//! connects with a WARN.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::influxd::Influxd;
use crate::common::mosquitto::{make_tls_files, openssl_available};
use crate::common::nr_receiver::NrReceiver;
use crate::common::tls_proxy::TlsProxy;
use crate::common::{send_datagrams, wait_for, Engine};

const ACCOUNT_A: &str = "1111111";
const ACCOUNT_B: &str = "2222222";
const KEY_A: &str = "NRII-fake-key-AAAA";
const KEY_B: &str = "NRII-fake-key-BBBB";

/// The fixture config into InfluxDB 1.x (database `db`) at `influx` and New Relic at `nr_url`, MQTT off, with
/// `tls` (a YAML mapping for `sense-ingest.influxdbTls`, also used for `newRelicTls` without `enable`).
fn config(influx: &TlsProxy, db: &str, nr_url: &str, tls: &[(&str, Yaml)], spool: &Path) -> String {
    let mut cfg = fixtures::loopback_config(false);
    let mut put = |path: &str, v: Yaml| set(&mut cfg, path, v);
    put("Butler-SOS.influxdbConfig.enable", Yaml::from(true));
    put("Butler-SOS.influxdbConfig.host", Yaml::from("127.0.0.1"));
    put("Butler-SOS.influxdbConfig.port", Yaml::from(influx.addr.port()));
    put("Butler-SOS.influxdbConfig.v1Config.dbName", Yaml::from(db));
    put("Butler-SOS.mqttConfig.enable", Yaml::from(false));
    put("Butler-SOS.newRelic.enable", Yaml::from(true));
    put("Butler-SOS.newRelic.event.url", Yaml::from(nr_url));
    put("Butler-SOS.logLevel", Yaml::from("info"));
    put("sense-ingest.batch.maxAge", Yaml::from("50ms"));
    put("sense-ingest.retry.initialBackoff", Yaml::from("50ms"));
    put("sense-ingest.retry.maxBackoff", Yaml::from("200ms"));
    put("sense-ingest.shutdownTimeout", Yaml::from("500ms"));
    put("sense-ingest.spool.dir", Yaml::from(spool.to_str().unwrap()));
    put("sense-ingest.influxdbTls.enable", Yaml::from(true));
    for (key, value) in tls {
        put(&format!("sense-ingest.influxdbTls.{key}"), value.clone());
        put(&format!("sense-ingest.newRelicTls.{key}"), value.clone());
    }
    serde_norway::to_string(&cfg).unwrap()
}

/// `n` distinct session events (user ids `<prefix>0`..).
fn events(n: usize, prefix: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("/qseow-proxy-session/;sense1;Start session;LAB;{prefix}{i};Hub;/hub/;x").into_bytes())
        .collect()
}

/// Real influxd and the New Relic stand-in, each behind a TLS proxy with a certificate from a fresh test CA.
struct Setup {
    influxd: Influxd,
    nr: NrReceiver,
    influx_tls: TlsProxy,
    nr_tls: TlsProxy,
    nr_url: String,
    ca: std::path::PathBuf,
    dir: tempfile::TempDir,
}

fn setup() -> Option<Setup> {
    if !openssl_available() {
        eprintln!("skipped: the openssl command is needed to make test certificates");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = make_tls_files(dir.path());
    let influxd = Influxd::start();
    let nr = NrReceiver::start(&[(ACCOUNT_A, KEY_A), (ACCOUNT_B, KEY_B)]);
    let influx_tls = TlsProxy::start(influxd.addr, &files);
    let nr_backend: std::net::SocketAddr = nr.url().trim_start_matches("http://").parse().unwrap();
    let nr_tls = TlsProxy::start(nr_backend, &files);
    let nr_url = format!("https://127.0.0.1:{}", nr_tls.addr.port());
    Some(Setup {
        influxd,
        nr,
        influx_tls,
        nr_tls,
        nr_url,
        ca: files.ca,
        dir,
    })
}

fn final_summary(engine: &Engine) -> String {
    let text = engine.stderr_text();
    text.lines()
        .rev()
        .find(|l| l.contains(" summary") && l.contains("\"final\""))
        .unwrap_or_default()
        .to_string()
}

/// Sends `n` events (user ids prefixed `tag`) and waits until InfluxDB database `db` holds them all and each New
/// Relic account received them all, over TLS.
fn send_and_wait_over_tls(s: &Setup, engine: &Engine, db: &str, n: usize, tag: &str) {
    send_datagrams(engine.target(), &events(n, tag));
    wait_for(
        &format!("{n} points in InfluxDB over TLS"),
        Duration::from_secs(30),
        || (s.influxd.points(db, "user_events").len() == n).then_some(()),
    );
    wait_for(
        &format!("{n} events per New Relic account over TLS"),
        Duration::from_secs(30),
        || (s.nr.event_count(ACCOUNT_A) == n && s.nr.event_count(ACCOUNT_B) == n).then_some(()),
    );
}

#[test]
fn influxdb_and_new_relic_are_written_over_tls_with_a_private_ca() {
    let Some(s) = setup() else { return };
    let ca = Yaml::from(s.ca.to_str().unwrap());
    let spool = s.dir.path().join("spool");
    let mut engine = Engine::start_with_yaml(&config(&s.influx_tls, "tls", &s.nr_url, &[("caFile", ca)], &spool));
    send_and_wait_over_tls(&s, &engine, "tls", 50, "t");
    assert!(s.influx_tls.handshakes.load(Ordering::Relaxed) >= 1);
    assert!(
        s.nr_tls.handshakes.load(Ordering::Relaxed) >= 2,
        "one client per account"
    );
    assert_eq!(s.influx_tls.handshake_failures.load(Ordering::Relaxed), 0);
    assert!(engine.terminate().success());
    let summary = final_summary(&engine);
    assert!(
        summary.contains("influxdb(delivered=50 skipped=0 dropped=0"),
        "{summary}"
    );
    let log = engine.stderr_text();
    assert!(
        !log.contains("insecureSkipVerify"),
        "no WARN without the switch:\n{log}"
    );
    assert!(!log.contains(KEY_A) && !log.contains(KEY_B), "a key leaked:\n{log}");
}

/// Issue 11: one trust store for HTTP and MQTT. Without `caFile`, a CA in the system's CA bundle (here named by
/// `SSL_CERT_FILE`, as OpenSSL-based tools read it) is trusted by the HTTP destinations too, as MQTT always did.
#[test]
fn without_ca_file_the_system_ca_bundle_is_trusted_by_http_destinations_as_by_mqtt() {
    let Some(s) = setup() else { return };
    let spool = s.dir.path().join("spool");
    let yaml = config(&s.influx_tls, "systemca", &s.nr_url, &[], &spool);
    let ca = s.ca.clone();
    let mut engine = Engine::start_with_yaml_and(&yaml, |cmd| {
        cmd.env("SSL_CERT_FILE", &ca);
    });
    send_and_wait_over_tls(&s, &engine, "systemca", 20, "s");
    assert_eq!(s.influx_tls.handshake_failures.load(Ordering::Relaxed), 0);
    assert!(engine.terminate().success());
}

#[test]
fn a_wrong_ca_is_an_error_with_counted_retries_and_loses_nothing() {
    let Some(s) = setup() else { return };
    let other = tempfile::tempdir().unwrap();
    let wrong = make_tls_files(other.path()).ca; // a CA that did not sign the proxies' certificate
    let spool = s.dir.path().join("spool");
    let yaml = config(
        &s.influx_tls,
        "wrong",
        &s.nr_url,
        &[("caFile", Yaml::from(wrong.to_str().unwrap()))],
        &spool,
    );
    let mut engine = Engine::start_with_yaml(&yaml);
    send_datagrams(engine.target(), &events(20, "w"));
    wait_for("the TLS ERROR and a few retries", Duration::from_secs(30), || {
        let log = engine.stderr_text();
        let tls_errors = log
            .lines()
            .filter(|l| l.contains("ERROR") && l.contains("TLS handshake with the destination failed"))
            .count();
        let retries = log.lines().filter(|l| l.contains("send failed; retrying")).count();
        // One ERROR per destination and outage (influxdb, two New Relic accounts), the retries at WARN.
        (tls_errors >= 3 && retries >= 6).then_some(())
    });
    assert!(s.influx_tls.handshake_failures.load(Ordering::Relaxed) >= 1);
    assert_eq!(s.influxd.points("wrong", "user_events").len(), 0);
    assert_eq!(s.nr.event_count(ACCOUNT_A), 0);
    assert!(engine.terminate().success());
    let log = engine.stderr_text();
    let error = log
        .lines()
        .find(|l| l.contains("TLS handshake with the destination failed") && l.contains("sink=influxdb"))
        .unwrap_or_else(|| panic!("no TLS ERROR for influxdb in\n{log}"));
    assert!(error.contains("certificate"), "the cause is named: {error}");
    let summary = final_summary(&engine);
    for sink in ["influxdb", "new_relic:NR account A", "new_relic:NR account B"] {
        let at = summary
            .find(&format!("{sink}("))
            .unwrap_or_else(|| panic!("{sink} in {summary}"));
        let part = &summary[at..summary[at..].find(')').map_or(summary.len(), |e| at + e)];
        assert!(
            part.contains("delivered=0") && part.contains("dropped=0") && part.contains("spooled=20"),
            "nothing delivered, nothing lost, all 20 spooled: {part}"
        );
        let retries: u64 = part
            .split("retries=")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        assert!(retries >= 1, "retries are counted: {part}");
    }
    assert!(!log.contains(KEY_A) && !log.contains(KEY_B), "a key leaked:\n{log}");
}

#[test]
fn insecure_skip_verify_connects_without_a_ca_and_warns() {
    let Some(s) = setup() else { return };
    let spool = s.dir.path().join("spool");
    let yaml = config(
        &s.influx_tls,
        "insecure",
        &s.nr_url,
        &[("insecureSkipVerify", Yaml::from(true))],
        &spool,
    );
    let mut engine = Engine::start_with_yaml(&yaml);
    send_datagrams(engine.target(), &events(5, "i"));
    wait_for("5 points in InfluxDB", Duration::from_secs(30), || {
        (s.influxd.points("insecure", "user_events").len() == 5).then_some(())
    });
    wait_for("5 events at New Relic", Duration::from_secs(30), || {
        (s.nr.event_count(ACCOUNT_A) == 5).then_some(())
    });
    assert!(engine.terminate().success());
    let log = engine.stderr_text();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("TLS certificate verification is OFF"))
        .collect();
    assert!(
        warns
            .iter()
            .any(|l| l.contains("sense-ingest.influxdbTls.insecureSkipVerify"))
            && warns
                .iter()
                .any(|l| l.contains("sense-ingest.newRelicTls.insecureSkipVerify")),
        "one WARN per destination naming the key:\n{log}"
    );
}
