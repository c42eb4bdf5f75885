//! Butler SOS's own measurements through the real binary: event counts (`qlikSenseEvents.eventCount`) and
//! user-event queue metrics (`userEvents.udpServerConfig.queueMetrics`) into a real InfluxDB 1.x, and into the
//! v2/v3 stand-ins (byte-level line checks, a failed write carried into the next one).
//!
//! The counts are deltas since the last successful write, so every check sums all points written: the sum must
//! equal what was sent, however the sends fell across write periods.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;

use crate::common::influx_mock::{FieldValue, InfluxV2Mock, InfluxV3Mock, Line};
use crate::common::influxd::{Influxd, Point};
use crate::common::{send_datagrams, wait_for, Engine};

const TOKEN: &str = "metrics-token";
const WAIT: Duration = Duration::from_secs(20);

/// `influxdbConfig` for a version at `port` (database `db` for v1 and v3).
fn influx_section(version: u8, port: u16, db: &str) -> String {
    format!(
        "  influxdbConfig:
    enable: true
    host: 127.0.0.1
    port: {port}
    version: {version}
    maxBatchSize: 1000
    v1Config: {{auth: {{enable: false}}, dbName: {db}, retentionPolicy: {{name: ten_d, duration: 10d}}}}
    v2Config: {{org: myorg, bucket: {db}, token: {TOKEN}, description: x, retentionDuration: 10d}}
    v3Config: {{database: {db}, token: {TOKEN}, description: x, retentionDuration: 10d}}
"
    )
}

/// A Butler SOS file with only Butler SOS's metrics writing to InfluxDB (no `user_events` destination), the
/// given `qlikSenseEvents` and `udpServerConfig` extras.
fn config(influx: &str, qlik_sense_events: &str, udp_extra: &str) -> String {
    format!(
        "Butler-SOS:
  logLevel: info
{influx}  userEvents:
    enable: true
    excludeUser: [{{directory: LAB, userId: excluded}}]
    udpServerConfig:
      serverHost: 127.0.0.1
      portUserActivityEvents: 0
{udp_extra}    tags: null
    sendToInfluxdb: {{enable: false}}
    sendToMQTT: {{enable: false}}
    sendToNewRelic: {{enable: false}}
  qlikSenseEvents:
{qlik_sense_events}sense-ingest:
  readerThreads: 2
  channelCapacity: 64
  spool: {{enable: false}}
"
    )
}

/// Event counts every 300 ms with two config tags (one in each tag form).
const EVENT_COUNTS: &str = "    influxdb: {enable: true, writeFrequency: 300}
    eventCount:
      enable: true
      influxdb:
        measurementName: event_count
        tags: [{name: env, value: DEV}, {tag: site, value: lab}]
    rejectedEventCount: {enable: false, influxdb: {measurementName: rejected_event_count}}
";

/// Queue metrics every 300 ms with a config tag, a size limit and a rate limit.
const QUEUE_METRICS: &str = "      maxMessageSize: 300
      rateLimit: {enable: true, maxMessagesPerMinute: 100000}
      queueMetrics:
        influxdb: {enable: true, writeFrequency: 300, measurementName: user_events_queue, tags: [{name: env, value: DEV}]}
";

fn session(host: &str, user: &str, origin: &str) -> Vec<u8> {
    format!("/qseow-proxy-session/;{host};Start session;LAB;{user};{origin};/hub/;Start session for user 'LAB\\{user}'")
        .into_bytes()
}

fn connection(host: &str, user: &str) -> Vec<u8> {
    format!("/qseow-proxy-connection/;{host};Open connection;LAB;{user};AppAccess;/app/x;AppAccess connection for user")
        .into_bytes()
}

/// The receiver machine's name (the `host` tag of queue metrics).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

fn tags_of(p: &Point) -> BTreeMap<String, String> {
    p.tags
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn field_f64(p: &Point, key: &str) -> f64 {
    p.fields.get(key).and_then(Json::as_f64).unwrap_or(0.0)
}

/// Sum of `field` over every point, per tag set.
fn sums(points: &[Point], field: &str) -> BTreeMap<BTreeMap<String, String>, f64> {
    let mut out = BTreeMap::new();
    for p in points {
        *out.entry(tags_of(p)).or_insert(0.0) += field_f64(p, field);
    }
    out
}

/// The stored type of each field of `measurement` (`SHOW FIELD KEYS`).
fn field_types(influxd: &Influxd, db: &str, measurement: &str) -> BTreeMap<String, String> {
    let v = influxd.query(db, &format!("SHOW FIELD KEYS FROM \"{measurement}\""));
    v["results"][0]["series"][0]["values"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn count_tags(source: &str, host: &str, subsystem: &str) -> BTreeMap<String, String> {
    [
        ("env", "DEV"),
        ("event_type", "user"),
        ("host", host),
        ("site", "lab"),
        ("source", source),
        ("subsystem", subsystem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[test]
fn event_counts_reach_a_real_influxdb_per_source_host_and_subsystem_and_add_up_across_writes() {
    let influxd = Influxd::start();
    let yaml = config(&influx_section(1, influxd.addr.port(), "counts"), EVENT_COUNTS, "");
    let mut engine = Engine::start_with_yaml(&yaml);

    let mut first = vec![session("sense1", "anna", "Hub"); 3];
    first.extend(vec![connection("sense1", "anna"); 2]);
    first.push(session("sense2", "excluded", "Hub")); // excluded users are counted, as in Butler SOS
    first.push(b"/qseow-proxy-other/;sense1;x;LAB;anna;Hub;/;x".to_vec()); // Unknown/Unknown/Unknown
    first.push(session("sense1", "anna", "")); // empty origin: Butler SOS refuses to count it
    first.push(b"/qseow-proxy-session/;sense1;Start session;LAB".to_vec()); // too few fields: not counted
    send_datagrams(engine.target(), &first);

    let mut expected = BTreeMap::from([
        (count_tags("qseow-proxy-session", "sense1", "Hub"), 3.0),
        (count_tags("qseow-proxy-connection", "sense1", "AppAccess"), 2.0),
        (count_tags("qseow-proxy-session", "sense2", "Hub"), 1.0),
        (count_tags("Unknown", "Unknown", "Unknown"), 1.0),
    ]);
    wait_for("the first event counts in InfluxDB", WAIT, || {
        (sums(&influxd.points("counts", "event_count"), "counter") == expected).then_some(())
    });

    // A second round after at least one write: the counts were reset, the new points add up to the totals.
    send_datagrams(engine.target(), &vec![session("sense1", "anna", "Hub"); 2]);
    *expected
        .get_mut(&count_tags("qseow-proxy-session", "sense1", "Hub"))
        .unwrap() = 5.0;
    let points = wait_for("the second event counts in InfluxDB", WAIT, || {
        let points = influxd.points("counts", "event_count");
        (sums(&points, "counter") == expected).then_some(points)
    });
    let hub: Vec<f64> = points
        .iter()
        .filter(|p| tags_of(p) == count_tags("qseow-proxy-session", "sense1", "Hub"))
        .map(|p| field_f64(p, "counter"))
        .collect();
    assert!(hub.len() >= 2, "one point per write period: {hub:?}");
    assert!(hub.iter().all(|&c| c >= 1.0), "no empty points are written: {hub:?}");
    // node-influx writes Butler SOS's counter without the `i` suffix: InfluxDB 1.x stores a float.
    assert_eq!(
        field_types(&influxd, "counts", "event_count"),
        BTreeMap::from([("counter".to_owned(), "float".to_owned())])
    );
    assert!(engine.terminate().success());
}

#[test]
fn queue_metrics_reach_a_real_influxdb_and_add_up_across_writes() {
    let influxd = Influxd::start();
    let qse = "    influxdb: {enable: false, writeFrequency: 20000}\n    eventCount: {enable: false}\n";
    let yaml = config(&influx_section(1, influxd.addr.port(), "queue"), qse, QUEUE_METRICS);
    let mut engine = Engine::start_with_yaml(&yaml);

    let mut sent = vec![session("sense1", "anna", "Hub"); 4];
    sent.push(session("sense1", "excluded", "Hub")); // processed (excluded)
    sent.push(b"not a user event".to_vec()); // failed
    sent.push(vec![b'x'; 301]); // over maxMessageSize
    send_datagrams(engine.target(), &sent);

    let expected_tags: BTreeMap<String, String> = [
        ("env", "DEV".to_owned()),
        ("host", hostname()),
        ("queue_type", "user_events".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let points = wait_for("queue metrics counting every datagram", WAIT, || {
        let points = influxd.points("queue", "user_events_queue");
        let received: f64 = points.iter().map(|p| field_f64(p, "messages_received")).sum();
        (received >= 7.0).then_some(points)
    });
    // One more write, so the sums below are known to be final (later points must add nothing).
    let n = points.len();
    let points = wait_for("a further queue-metrics point", WAIT, || {
        let points = influxd.points("queue", "user_events_queue");
        (points.len() > n).then_some(points)
    });
    let total = |f: &str| -> f64 { points.iter().map(|p| field_f64(p, f)).sum() };
    assert_eq!(total("messages_received"), 7.0);
    assert_eq!(total("messages_queued"), 6.0);
    assert_eq!(total("messages_processed"), 5.0);
    assert_eq!(total("messages_failed"), 1.0);
    assert_eq!(total("messages_dropped_size"), 1.0);
    assert_eq!(total("messages_dropped_rate_limit"), 0.0);
    assert_eq!(total("messages_dropped_total"), 1.0);
    for p in &points {
        assert_eq!(tags_of(p), expected_tags);
        assert_eq!(field_f64(p, "queue_max_size"), 64.0);
        assert_eq!(p.fields.len(), 17, "every Butler SOS field: {:?}", p.fields);
    }
    // The busiest sender's rate in the current minute is reported while the rate limit is on. Keep sending, so a
    // write just after a minute boundary (a new, empty window) cannot make this flaky.
    wait_for("a point with rate_limit_current > 0", WAIT, || {
        send_datagrams(engine.target(), &[session("sense1", "anna", "Hub")]);
        let points = influxd.points("queue", "user_events_queue");
        points
            .iter()
            .any(|p| field_f64(p, "rate_limit_current") > 0.0)
            .then_some(())
    });
    let types = field_types(&influxd, "queue", "user_events_queue");
    assert_eq!(types.len(), 17);
    assert!(
        types.values().all(|t| t == "float"),
        "v1 numbers are floats, as Butler SOS's: {types:?}"
    );
    assert!(engine.terminate().success());
}

/// The event-count lines of a v2/v3 stand-in.
fn count_lines(lines: &[Line]) -> Vec<Line> {
    lines
        .iter()
        .filter(|l| l.measurement == "event_count")
        .cloned()
        .collect()
}

/// `raw` without its timestamp.
fn without_ts(raw: &str) -> &str {
    raw.rsplit_once(' ').map_or(raw, |(head, _)| head)
}

#[test]
fn v2_event_counts_are_byte_exact_and_a_failed_write_is_carried_into_the_next() {
    let mock = InfluxV2Mock::start("myorg", TOKEN, 1 << 20);
    mock.push_fault(503, None);
    let yaml = config(&influx_section(2, mock.addr().port(), "metrics"), EVENT_COUNTS, "");
    let mut engine = Engine::start_with_yaml(&yaml);
    send_datagrams(engine.target(), &vec![session("sense1", "anna", "Hub"); 3]);

    let lines = wait_for("event counts after the refused write", WAIT, || {
        let lines = count_lines(&mock.lines());
        let total: i64 = lines
            .iter()
            .map(|l| match l.fields[0].1 {
                FieldValue::Int(n) => n,
                ref other => panic!("counter must be an integer in v2: {other:?}"),
            })
            .sum();
        (total == 3).then_some(lines)
    });
    let writes: Vec<u16> = mock
        .seen()
        .iter()
        .filter(|s| s.path == "/api/v2/write")
        .map(|s| s.status)
        .collect();
    assert_eq!(writes.first(), Some(&503), "the first write was refused: {writes:?}");
    assert_eq!(lines.len(), 1, "the refused counts arrive whole in the next write");
    assert_eq!(
        without_ts(&lines[0].raw),
        "event_count,env=DEV,event_type=user,host=sense1,site=lab,source=qseow-proxy-session,subsystem=Hub \
         counter=3i"
    );
    assert_eq!(lines[0].precision, "ns");
    assert!(engine.terminate().success());
}

#[test]
fn v3_queue_metrics_and_event_counts_are_byte_exact() {
    let mock = InfluxV3Mock::start(TOKEN, 1 << 20);
    let yaml = config(
        &influx_section(3, mock.addr().port(), "metrics"),
        EVENT_COUNTS,
        QUEUE_METRICS,
    );
    let mut engine = Engine::start_with_yaml(&yaml);
    send_datagrams(engine.target(), &[connection("sense1", "anna")]);

    let lines = wait_for("event counts and queue metrics in the v3 stand-in", WAIT, || {
        let lines = mock.lines();
        let counted = lines.iter().any(|l| l.measurement == "event_count");
        let received: i64 = lines
            .iter()
            .filter(|l| l.measurement == "user_events_queue")
            .filter_map(|l| match l.fields.iter().find(|(k, _)| k == "messages_received") {
                Some((_, FieldValue::Int(n))) => Some(*n),
                _ => None,
            })
            .sum();
        (counted && received == 1).then_some(lines)
    });
    let counts = count_lines(&lines);
    assert_eq!(
        without_ts(&counts[0].raw),
        "event_count,env=DEV,event_type=user,host=sense1,site=lab,source=qseow-proxy-connection,\
         subsystem=AppAccess counter=1i"
    );
    let queue: Vec<&Line> = lines.iter().filter(|l| l.measurement == "user_events_queue").collect();
    let prefix = format!("user_events_queue,env=DEV,host={},queue_type=user_events ", hostname());
    for l in &queue {
        assert!(l.raw.starts_with(&prefix), "{}", l.raw);
        let keys: Vec<&str> = l.fields.iter().map(|(k, _)| k.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "fields sorted by key");
        for (k, v) in &l.fields {
            let float = k == "queue_utilization_pct" || k.starts_with("processing_time_");
            match v {
                FieldValue::Float(_) => assert!(float, "{k} must be an integer"),
                FieldValue::Int(_) => assert!(!float, "{k} must be a float"),
                other => panic!("{k}: unexpected {other:?}"),
            }
        }
    }
    assert!(engine.terminate().success());
}

#[test]
fn counts_not_yet_written_are_written_at_shutdown() {
    let mock = InfluxV2Mock::start("myorg", TOKEN, 1 << 20);
    // A period far longer than the test: only the last write at shutdown can carry the counts.
    let qse = EVENT_COUNTS.replace("writeFrequency: 300", "writeFrequency: 600000");
    let yaml = config(&influx_section(2, mock.addr().port(), "metrics"), &qse, "")
        .replace("logLevel: info", "logLevel: verbose");
    let mut engine = Engine::start_with_yaml(&yaml);
    send_datagrams(engine.target(), &vec![session("sense9", "anna", "Hub"); 2]);
    wait_for("both events handled", WAIT, || {
        (engine.stderr_text().matches("user event").count() >= 2).then_some(())
    });
    assert!(
        count_lines(&mock.lines()).is_empty(),
        "nothing written before the period ends"
    );
    assert!(engine.terminate().success());
    let lines = count_lines(&mock.lines());
    assert_eq!(lines.len(), 1, "{lines:?}\n{}", engine.stderr_text());
    assert_eq!(
        without_ts(&lines[0].raw),
        "event_count,env=DEV,event_type=user,host=sense9,site=lab,source=qseow-proxy-session,subsystem=Hub \
         counter=2i"
    );
}
