//! InfluxDB v2 and v3 through the real binary, into the contract-enforcing stand-ins of `common::influx_mock`
//! (neither server can be installed here).
//!
//! The expected points are the v1 points Butler SOS made InfluxDB 1.6.7 store (the fixtures), mapped by the
//! documented v2/v3 rules (src/sink/influxdb/encode.rs): the same tags; v2 fields `userFull, userId, appId_field,
//! appName_field`; v3 fields `userFull_field, userId_field, appId_field, appName_field` and tag values other than
//! `userFull` without `<`, `>`, `\`, CR and LF. Those mapped layouts are derived from Butler SOS's source, not
//! observed from a Butler SOS run against v2/v3.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::influx_mock::{CreatedBy, InfluxV2Mock, InfluxV3Mock, Line, Seen};
use crate::common::{send_datagrams, wait_for, Engine};

/// The token, org, bucket and database of the fixture config's `v2Config`/`v3Config`.
const TOKEN: &str = "mytoken";
const ORG: &str = "myorg";
const BUCKET: &str = "mybucket";
const DATABASE: &str = "mydatabase";

/// A mock for one version, behind one interface for the tests below.
enum Mock {
    V2(InfluxV2Mock),
    V3(InfluxV3Mock),
}

impl Mock {
    fn start(version: u8, token: &str, max_body_bytes: usize) -> Mock {
        match version {
            2 => Mock::V2(InfluxV2Mock::start(ORG, token, max_body_bytes)),
            _ => Mock::V3(InfluxV3Mock::start(token, max_body_bytes)),
        }
    }
    fn version(&self) -> u8 {
        match self {
            Mock::V2(_) => 2,
            Mock::V3(_) => 3,
        }
    }
    fn port(&self) -> u16 {
        match self {
            Mock::V2(m) => m.addr().port(),
            Mock::V3(m) => m.addr().port(),
        }
    }
    fn lines(&self) -> Vec<Line> {
        match self {
            Mock::V2(m) => m.lines(),
            Mock::V3(m) => m.lines(),
        }
    }
    fn seen(&self) -> Vec<Seen> {
        match self {
            Mock::V2(m) => m.seen(),
            Mock::V3(m) => m.seen(),
        }
    }
    fn push_fault(&self, status: u16, retry_after: Option<u64>) {
        match self {
            Mock::V2(m) => m.push_fault(status, retry_after),
            Mock::V3(m) => m.push_fault(status, retry_after),
        }
    }
    /// The write requests seen so far.
    fn writes(&self) -> Vec<Seen> {
        let path = match self {
            Mock::V2(_) => "/api/v2/write",
            Mock::V3(_) => "/api/v3/write_lp",
        };
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

/// The fixture config for InfluxDB `version` at `mock`, InfluxDB the only destination, `token` in both v2 and v3
/// settings, listening on a free loopback port.
fn config_for(mock: &Mock, token: &str) -> serde_norway::Value {
    let mut cfg = fixtures::loopback_config(true);
    let mut put = |path: &str, v: Yaml| set(&mut cfg, path, v);
    put("Butler-SOS.influxdbConfig.host", Yaml::from("127.0.0.1"));
    put("Butler-SOS.influxdbConfig.port", Yaml::from(mock.port()));
    put("Butler-SOS.influxdbConfig.version", Yaml::from(mock.version()));
    put("Butler-SOS.influxdbConfig.v2Config.org", Yaml::from(ORG));
    put("Butler-SOS.influxdbConfig.v2Config.bucket", Yaml::from(BUCKET));
    put("Butler-SOS.influxdbConfig.v2Config.token", Yaml::from(token));
    put(
        "Butler-SOS.influxdbConfig.v2Config.retentionDuration",
        Yaml::from("10d"),
    );
    put("Butler-SOS.influxdbConfig.v3Config.database", Yaml::from(DATABASE));
    put("Butler-SOS.influxdbConfig.v3Config.token", Yaml::from(token));
    put(
        "Butler-SOS.influxdbConfig.v3Config.retentionDuration",
        Yaml::from("10d"),
    );
    put("Butler-SOS.mqttConfig.enable", Yaml::from(false));
    put("Butler-SOS.newRelic.enable", Yaml::from(false));
    put("Butler-SOS.logLevel", Yaml::from("info"));
    cfg
}

fn start_engine(cfg: &serde_norway::Value) -> Engine {
    Engine::start_with_yaml(&serde_norway::to_string(cfg).unwrap())
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// One point Butler SOS made InfluxDB 1.x store.
struct V1Point {
    case: String,
    tags: Map<String, Value>,
    fields: Map<String, Value>,
}

/// Every fixture point Butler SOS stored in InfluxDB 1.x, in send order.
fn v1_points() -> Vec<V1Point> {
    fixtures::cases()
        .iter()
        .flat_map(|c| {
            c.influx_points().into_iter().map(move |p| V1Point {
                case: c.name.clone(),
                tags: p["tags"].as_object().unwrap().clone(),
                fields: p["fields"].as_object().unwrap().clone(),
            })
        })
        .collect()
}

/// A v1 point's tags and fields in `version`'s layout, by the documented rename and strip rules.
fn mapped(
    version: u8,
    tags: &Map<String, Value>,
    fields: &Map<String, Value>,
) -> (Map<String, Value>, Map<String, Value>) {
    let tags = tags
        .iter()
        .filter_map(|(k, v)| {
            let v = v.as_str().unwrap();
            let v = if version == 3 && k != "userFull" {
                v.chars()
                    .filter(|c| !matches!(c, '<' | '>' | '\\' | '\r' | '\n'))
                    .collect()
            } else {
                v.to_string()
            };
            (!v.is_empty()).then(|| (k.clone(), Value::from(v)))
        })
        .collect();
    let fields = fields
        .iter()
        .map(|(k, v)| {
            let name = match (version, k.as_str()) {
                (2, "userFull" | "userId") => k.clone(),
                _ => format!("{k}_field"),
            };
            (name, v.clone())
        })
        .collect();
    (tags, fields)
}

/// Sends every fixture datagram to the engine.
fn send_fixtures(engine: &Engine) {
    let datagrams: Vec<Vec<u8>> = fixtures::cases().iter().map(|c| c.datagram.clone()).collect();
    send_datagrams(engine.target(), &datagrams);
}

/// Sends every fixture datagram and waits until the mock holds `expected` points.
fn send_fixtures_and_wait(engine: &Engine, mock: &Mock, expected: usize) {
    send_fixtures(engine);
    wait_for("every expected point at the mock", Duration::from_secs(30), || {
        (mock.lines().len() >= expected).then_some(())
    });
}

/// The `influxdb(...)` counters of the engine's final summary line, by name.
fn final_influx_counters(engine: &Engine) -> HashMap<String, u64> {
    let log = engine.stderr_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("summary") && l.contains("final"))
        .unwrap_or_else(|| panic!("no final summary line:\n{log}"));
    let start = line
        .find("influxdb(")
        .unwrap_or_else(|| panic!("no influxdb sink in {line}"))
        + "influxdb(".len();
    let end = start + line[start..].find(')').unwrap();
    line[start..end]
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// Asserts the `want` counters (others may be anything).
fn assert_counters(engine: &Engine, want: &[(&str, u64)]) {
    let got = final_influx_counters(engine);
    for (k, v) in want {
        assert_eq!(got.get(*k), Some(v), "influxdb counter {k}: {got:?}");
    }
}

/// Every fixture case through the engine into `version`'s mock: the right layout per point, the bucket/database
/// created with the configured retention before the first write, gzip and the token on every write.
fn every_fixture_arrives_in_the_layout_of(version: u8) {
    let mock = Mock::start(version, TOKEN, 25_000_000);
    let before = now_ns();
    let mut engine = start_engine(&config_for(&mock, TOKEN));
    let expected = v1_points();
    send_fixtures_and_wait(&engine, &mock, expected.len());
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    let after = now_ns();

    let mut lines = mock.lines();
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    lines.sort_by_key(|l| l.timestamp);
    let mut last = before;
    for (V1Point { case, tags, fields }, line) in expected.iter().zip(&lines) {
        let (want_tags, want_fields) = mapped(version, tags, fields);
        assert_eq!(line.measurement, "user_events", "case {case}");
        assert_eq!(
            want_tags,
            line.tags_json(),
            "case {case}: tags (expected left, got right)\n{}",
            line.raw
        );
        assert_eq!(
            want_fields,
            line.fields_json(),
            "case {case}: fields (expected left, got right)\n{}",
            line.raw
        );
        // Tags and fields sorted by key, as the JavaScript clients write them (all keys here are ASCII).
        let keys: Vec<&String> = line.tags.iter().map(|(k, _)| k).collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "case {case}: tags not sorted: {}",
            line.raw
        );
        let keys: Vec<&String> = line.fields.iter().map(|(k, _)| k).collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "case {case}: fields not sorted: {}",
            line.raw
        );
        // Receive time in ns, strictly increasing.
        let ts = line.timestamp.expect("a timestamp on every line");
        assert!(
            ts > last && ts <= after,
            "case {case}: timestamp {ts} not in ({last}, {after}]"
        );
        last = ts;
    }

    let writes = mock.writes();
    assert!(!writes.is_empty());
    for w in &writes {
        assert_eq!(w.status, 204, "{w:?}");
        assert_eq!(w.content_encoding.as_deref(), Some("gzip"), "{w:?}");
        assert_eq!(w.content_type.as_deref(), Some("text/plain; charset=utf-8"), "{w:?}");
    }
    match &mock {
        Mock::V2(m) => {
            for w in &writes {
                assert_eq!(w.authorization.as_deref(), Some("Token mytoken"), "{w:?}");
                assert_eq!((w.param("org"), w.param("bucket")), (Some(ORG), Some(BUCKET)), "{w:?}");
                assert_eq!(w.param("precision"), Some("ns"), "{w:?}");
            }
            let buckets = m.buckets();
            let bucket = buckets.get(BUCKET).expect("the bucket was created");
            assert_eq!(
                bucket["retentionRules"],
                serde_json::json!([{"type": "expire", "everySeconds": 864_000}]),
                "10d as a real expiry, not Butler SOS's `rp`"
            );
        }
        Mock::V3(m) => {
            for w in &writes {
                assert_eq!(w.authorization.as_deref(), Some("Bearer mytoken"), "{w:?}");
                assert_eq!(w.param("db"), Some(DATABASE), "{w:?}");
                assert_eq!(w.param("precision"), Some("nanosecond"), "{w:?}");
                assert_eq!(w.param("accept_partial"), Some("true"), "{w:?}");
            }
            let dbs = m.databases();
            let db = dbs.get(DATABASE).expect("the database exists");
            assert_eq!(
                db.created_by,
                CreatedBy::Configure,
                "created before the first write, not by it"
            );
            assert_eq!(db.retention_period.as_deref(), Some("10d"));
        }
    }
    assert_counters(
        &engine,
        &[("delivered", expected.len() as u64), ("skipped", 2), ("dropped", 0)],
    );
}

#[test]
fn every_fixture_arrives_in_the_v2_layout() {
    every_fixture_arrives_in_the_layout_of(2);
}

#[test]
fn every_fixture_arrives_in_the_v3_layout() {
    every_fixture_arrives_in_the_layout_of(3);
}

/// Starts the engine on `mock` with one batch a second (so a scripted fault hits every event), sends every fixture,
/// waits until the mock holds every point and stops the engine, which must exit 0. Returns the stopped engine (for
/// its final counters) and the number of points.
fn deliver_fixtures_in_one_batch(mock: &Mock) -> (Engine, usize) {
    let mut cfg = config_for(mock, TOKEN);
    set(&mut cfg, "sense-ingest.batch.maxAge", Yaml::from("1s"));
    let mut engine = start_engine(&cfg);
    let expected = v1_points().len();
    send_fixtures_and_wait(&engine, mock, expected);
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    (engine, expected)
}

/// `faults` answer the first writes; the engine retries them (honouring `Retry-After`) and loses nothing.
fn retries_after_faults_lose_nothing(version: u8, faults: &[(u16, Option<u64>)]) {
    let mock = Mock::start(version, TOKEN, 25_000_000);
    for &(status, retry_after) in faults {
        mock.push_fault(status, retry_after);
    }
    let (engine, expected) = deliver_fixtures_in_one_batch(&mock);
    assert_eq!(mock.lines().len(), expected);
    let statuses: Vec<u16> = mock.writes().iter().map(|w| w.status).collect();
    let want: Vec<u16> = faults.iter().map(|f| f.0).collect();
    assert_eq!(&statuses[..faults.len()], &want[..], "{statuses:?}");
    assert_counters(
        &engine,
        &[
            ("delivered", expected as u64),
            ("skipped", 2),
            ("dropped", 0),
            ("retries", faults.len() as u64),
        ],
    );
}

#[test]
fn v2_503_with_retry_after_is_retried_without_loss() {
    retries_after_faults_lose_nothing(2, &[(503, Some(1)), (503, None)]);
}

#[test]
fn v3_503_and_429_are_retried_without_loss() {
    retries_after_faults_lose_nothing(3, &[(503, Some(1)), (429, Some(1))]);
}

/// A server limit below the batch size: the engine splits on 413 and every point still arrives.
fn too_large_batches_are_split(version: u8) {
    // About three lines per request: the fixtures (one batch of ~7 KB) need several splits.
    let mock = Mock::start(version, TOKEN, 1500);
    let (engine, expected) = deliver_fixtures_in_one_batch(&mock);
    let writes = mock.writes();
    assert!(writes.iter().any(|w| w.status == 413), "no 413 seen: {writes:?}");
    assert_eq!(mock.lines().len(), expected);
    assert_counters(
        &engine,
        &[("delivered", expected as u64), ("skipped", 2), ("dropped", 0)],
    );
}

#[test]
fn v2_413_splits_the_batch() {
    too_large_batches_are_split(2);
}

#[test]
fn v3_413_splits_the_batch() {
    too_large_batches_are_split(3);
}

/// A wrong token: every write is refused with 401, a final answer, and every event is counted as dropped.
fn a_refused_token_counts_every_event_as_dropped(version: u8) {
    let mock = Mock::start(version, TOKEN, 25_000_000);
    let mut engine = start_engine(&config_for(&mock, "not-the-token"));
    let expected = v1_points().len();
    send_fixtures(&engine);
    wait_for("a refused write", Duration::from_secs(30), || {
        mock.writes().iter().any(|w| w.status == 401).then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    assert!(mock.lines().is_empty());
    let writes = mock.writes();
    assert!(
        !writes.is_empty() && writes.iter().all(|w| w.status == 401),
        "{writes:?}"
    );
    assert_counters(
        &engine,
        &[("delivered", 0), ("skipped", 2), ("dropped", expected as u64)],
    );
    let log = engine.stderr_text();
    assert!(!log.contains("not-the-token"), "the token must never be logged:\n{log}");
}

#[test]
fn v2_401_counts_every_event_as_dropped() {
    a_refused_token_counts_every_event_as_dropped(2);
}

#[test]
fn v3_401_counts_every_event_as_dropped() {
    a_refused_token_counts_every_event_as_dropped(3);
}

/// Issue 10: a 422 partial write whose message is longer than 512 bytes, with a sender's value echoed in it that
/// reads `dropped=0`, still counts InfluxDB's real `dropped=N` (at the end of the message) exactly.
#[test]
fn issue_10_a_long_v2_partial_write_message_counts_its_real_dropped_count() {
    let mock = InfluxV2Mock::start(ORG, TOKEN, 25_000_000);
    let echoed = format!("user_events,host=a message=\\\"x dropped=0 {}\\\" 1", "y".repeat(600));
    let message =
        format!("failure writing points to database: partial write: unable to parse '{echoed}': bad dropped=2");
    let body = format!(r#"{{"code":"unprocessable entity","message":"{message}"}}"#);
    mock.push_fault_body(422, &body);
    let mock = Mock::V2(mock);
    let mut cfg = config_for(&mock, TOKEN);
    set(&mut cfg, "sense-ingest.batch.maxAge", Yaml::from("1s"));
    let mut engine = start_engine(&cfg);
    let expected = v1_points().len();
    send_fixtures(&engine);
    wait_for("the partial write", Duration::from_secs(30), || {
        mock.writes().iter().any(|w| w.status == 422).then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    assert_counters(
        &engine,
        &[("delivered", expected as u64 - 2), ("skipped", 2), ("dropped", 2)],
    );
}

/// A token as long as a real InfluxDB 2 token (88 characters).
const LONG_TOKEN: &str = "tok-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_0123456789abcdefgh==";

/// A server or proxy that echoes the request's `Authorization` in its error bodies: neither the WARN of a partial
/// write nor the ERROR of a refused batch shows 8 characters of the token, also where the token straddles the cut
/// of the body for the log (512 bytes).
fn an_echoed_token_never_shows_in_the_log(version: u8) {
    let mock = Mock::start(version, LONG_TOKEN, 25_000_000);
    let (scheme, partial_status) = if version == 2 { ("Token", 422) } else { ("Bearer", 400) };
    let partial = match version {
        2 => serde_json::json!({
            "code": "unprocessable entity",
            "message": format!("partial write: Authorization: Token {LONG_TOKEN} dropped=1"),
        }),
        _ => serde_json::json!({
            "error": "partial write of line protocol occurred",
            "data": [{"original_line": "x", "line_number": 1, "error_message": format!("Bearer {LONG_TOKEN}")}],
        }),
    };
    // 480 + 88: the token runs from byte 480 to byte 568 of the body.
    let refused = format!("{}{LONG_TOKEN}", "x".repeat(480));
    let push = |status: u16, body: &str| match &mock {
        Mock::V2(m) => m.push_fault_body(status, body),
        Mock::V3(m) => m.push_fault_body(status, body),
    };
    let mut engine = start_engine(&config_for(&mock, LONG_TOKEN));
    let faulted = |mock: &Mock| {
        mock.writes()
            .iter()
            .filter(|w| w.status == 400 || w.status == 422)
            .count()
    };
    push(partial_status, &partial.to_string());
    send_fixtures(&engine);
    wait_for("the partial write", Duration::from_secs(30), || {
        (faulted(&mock) == 1).then_some(())
    });
    push(400, &refused);
    send_fixtures(&engine);
    wait_for("the refused batch in the log", Duration::from_secs(30), || {
        (faulted(&mock) == 2 && engine.stderr_text().contains("batch not delivered")).then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    assert!(mock
        .writes()
        .iter()
        .all(|w| w.authorization.as_deref() == Some(&format!("{scheme} {LONG_TOKEN}"))));
    let log = engine.stderr_text();
    for window in LONG_TOKEN.as_bytes().windows(8) {
        let window = std::str::from_utf8(window).unwrap();
        assert!(!log.contains(window), "{window:?} of the token is in the log:\n{log}");
    }
    let replaced = format!("{}**REDACTED**", "x".repeat(480));
    assert!(
        log.lines().any(|l| l.contains("ERROR") && l.contains(&replaced)),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("partial write") && l.contains("**REDACTED**")),
        "{log}"
    );
}

#[test]
fn v2_a_token_echoed_in_error_bodies_never_shows_in_the_log() {
    an_echoed_token_never_shows_in_the_log(2);
}

#[test]
fn v3_a_token_echoed_in_error_bodies_never_shows_in_the_log() {
    an_echoed_token_never_shows_in_the_log(3);
}
