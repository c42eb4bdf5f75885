//! Session analytics and the silent-host alarm through the real binary: scripted session sequences sent over UDP
//! from one socket (one Sense node's flow), durations and concurrency gauges read back from a real InfluxDB 1.x.
//!
//! Config keys exercised: `sense-ingest.analytics: {enable, orphanAfter, gaugeInterval}` and
//! `sense-ingest.silentHostAfter`. Durations are receive-time differences, so the expected values are the sender's
//! own measured gaps between sends, compared with a tolerance.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::influxd::{Influxd, Point};
use crate::common::{wait_for, Engine};

const APP_A: &str = "a421f4a2-c311-4ef4-ba41-fe2e6a2b0d69";
/// Allowed difference between a stored duration and the sender's measured gap.
const TOLERANCE_S: f64 = 0.1;

/// The fixture config pointed at `influxd` (database `db`), listening on a free loopback port, MQTT and New Relic
/// off.
fn config_for(influxd: &Influxd, db: &str) -> Yaml {
    let mut cfg = fixtures::influx_only_config(false, influxd.addr.port(), db);
    set(&mut cfg, "sense-ingest.readerThreads", Yaml::from(2));
    cfg
}

fn with_analytics(mut cfg: Yaml) -> String {
    set(&mut cfg, "sense-ingest.analytics.enable", Yaml::from(true));
    set(&mut cfg, "sense-ingest.analytics.orphanAfter", Yaml::from("8h"));
    set(&mut cfg, "sense-ingest.analytics.gaugeInterval", Yaml::from("1s"));
    set(&mut cfg, "sense-ingest.silentHostAfter", Yaml::from("15m"));
    serde_norway::to_string(&cfg).unwrap()
}

/// One Sense node: every datagram from one socket, so one flow and one reader, in order.
struct Node {
    sock: UdpSocket,
    target: SocketAddr,
}

impl Node {
    fn new(target: SocketAddr) -> Node {
        Node {
            sock: UdpSocket::bind("127.0.0.1:0").unwrap(),
            target,
        }
    }

    /// Sends `command` by `LAB\user` on `host` (a connection to `app` when given) and returns when it was sent.
    fn send(&self, host: &str, command: &str, user: &str, app: Option<&str>) -> Instant {
        let datagram = match app {
            Some(app) => format!(
                "/qseow-proxy-connection/;{host};{command};LAB;{user};AppAccess;/app/{app}?reloaduri=x;AppAccess \
                 connection for session '8c1d6a57-3e1b-4f0b-9a0e-7c3f1d2b4e65'. UserAgent: 'Mozilla/5.0 (X11; \
                 Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0'"
            ),
            None => {
                format!("/qseow-proxy-session/;{host};{command};LAB;{user};Hub;/hub/;{command} for user 'LAB\\{user}'")
            }
        };
        let at = Instant::now();
        self.sock.send_to(datagram.as_bytes(), self.target).unwrap();
        at
    }
}

/// Sleeps until `step` × 400 ms after `t0`: the scripted sequence's clock (the gaps are what is measured).
fn at_step(t0: Instant, step: u32) {
    let due = t0 + Duration::from_millis(400) * step;
    std::thread::sleep(due.saturating_duration_since(Instant::now()));
}

fn tag<'a>(p: &'a Point, key: &str) -> Option<&'a str> {
    p.tags.get(key).and_then(Json::as_str)
}

fn field_i64(p: &Point, key: &str) -> Option<i64> {
    p.fields.get(key).and_then(Json::as_i64)
}

/// The latest gauge point with exactly these tags (`appId` absent when `app` is `None`).
fn latest_gauge<'a>(points: &'a [Point], host: &str, app: Option<&str>) -> Option<&'a Point> {
    points
        .iter()
        .filter(|p| tag(p, "host") == Some(host) && tag(p, "appId") == app)
        .max_by_key(|p| p.time)
}

#[test]
fn session_and_connection_durations_and_concurrency_gauges_reach_influxdb() {
    let influxd = Influxd::start();
    let db = "analytics";
    let mut engine = Engine::start_with_yaml(&with_analytics(config_for(&influxd, db)));
    let node = Node::new(engine.target());

    // 400 ms steps. anna stays logged in on sense1; every other session and the connection closes.
    let t0 = node.send("sense1", "Start session", "goran", None);
    node.send("sense1", "Start session", "anna", None);
    let goran2_start = node.send("sense2", "Start session", "goran", None);
    at_step(t0, 1);
    let open = node.send("sense1", "Open connection", "goran", Some(APP_A));
    at_step(t0, 2);
    let bob_start = node.send("sense2", "Start session", "bob", None);
    at_step(t0, 3);
    let bob_stop = node.send("sense2", "Stop session", "bob", None);
    at_step(t0, 4);
    let goran_stop = node.send("sense1", "Stop session", "goran", None);
    at_step(t0, 5);
    let close = node.send("sense1", "Close connection", "goran", Some(APP_A));
    at_step(t0, 6);
    let goran2_stop = node.send("sense2", "Stop session", "goran", None);

    let stored = wait_for("four user_session points", Duration::from_secs(20), || {
        let p = influxd.points(db, "user_session");
        (p.len() >= 4).then_some(p)
    });
    // (host, kind, user, appId, expected duration); points come back ordered by time = stop order.
    let expected = [
        ("sense2", "session", "bob", None, bob_stop - bob_start),
        ("sense1", "session", "goran", None, goran_stop - t0),
        ("sense1", "connection", "goran", Some(APP_A), close - open),
        ("sense2", "session", "goran", None, goran2_stop - goran2_start),
    ];
    assert_eq!(stored.len(), expected.len(), "{stored:#?}\n{}", engine.stderr_text());
    for (p, (host, kind, user, app, gap)) in stored.iter().zip(expected) {
        assert_eq!(tag(p, "host"), Some(host), "{p:?}");
        assert_eq!(tag(p, "kind"), Some(kind), "{p:?}");
        assert_eq!(tag(p, "userDirectory"), Some("LAB"), "{p:?}");
        assert_eq!(tag(p, "userId"), Some(user), "{p:?}");
        assert_eq!(tag(p, "appId"), app, "{p:?}");
        assert_eq!(
            p.fields.get("userFull").and_then(Json::as_str),
            Some(format!("LAB\\{user}").as_str()),
            "{p:?}"
        );
        let duration = p.fields["duration_s"].as_f64().expect("duration_s is a number");
        assert!(
            (duration - gap.as_secs_f64()).abs() <= TOLERANCE_S,
            "{host} {kind} {user}: stored duration_s {duration}, sent {gap:?} apart"
        );
    }

    // Gauges every second: sense1 ends with anna's session only, sense2 with nothing. The connection to app A was
    // open for 1.6 s, longer than the gauge interval, so some gauge saw it; its last gauge is 0.
    let gauges = wait_for("the final concurrency gauges", Duration::from_secs(20), || {
        let g = influxd.points(db, "user_session_concurrent");
        let sense1 = latest_gauge(&g, "sense1", None)?;
        let sense2 = latest_gauge(&g, "sense2", None)?;
        let app = latest_gauge(&g, "sense1", Some(APP_A))?;
        let settled = field_i64(sense1, "sessions") == Some(1)
            && field_i64(sense1, "connections") == Some(0)
            && field_i64(sense2, "sessions") == Some(0)
            && field_i64(app, "connections") == Some(0);
        settled.then_some(g)
    });
    assert!(
        gauges
            .iter()
            .any(|p| tag(p, "appId") == Some(APP_A) && field_i64(p, "connections") == Some(1)),
        "no gauge saw the open connection:\n{gauges:#?}"
    );
    assert!(
        gauges.iter().all(|p| field_i64(p, "sessions").unwrap_or(0) <= 2),
        "{gauges:#?}"
    );

    let status = engine.terminate();
    assert!(status.success(), "engine exit {status}:\n{}", engine.stderr_text());
    // The Butler SOS measurement is unchanged by analytics: one point per event.
    // (Two destinations preparing one database must not race: a point written before the retention policy exists
    // lands in `autogen` and is missing here.)
    let user_events = influxd.points(db, "user_events");
    assert_eq!(user_events.len(), 9, "{user_events:#?}\n{}", engine.stderr_text());
}

#[test]
fn analytics_are_off_by_default() {
    let influxd = Influxd::start();
    let db = "no_analytics";
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&config_for(&influxd, db)).unwrap());
    let node = Node::new(engine.target());
    node.send("sense1", "Start session", "goran", None);
    node.send("sense1", "Stop session", "goran", None);
    wait_for("both user_events points", Duration::from_secs(20), || {
        (influxd.points(db, "user_events").len() == 2).then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    assert_eq!(influxd.points(db, "user_session"), vec![]);
    assert_eq!(influxd.points(db, "user_session_concurrent"), vec![]);
}

/// Lines of `log` about `host` going silent (not the recovery lines).
fn silent_lines(log: &str, host: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(host) && l.contains("silent") && !l.contains("recovered"))
        .count()
}

fn recovered_lines(log: &str, host: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(host) && l.contains("recovered"))
        .count()
}

#[test]
fn a_host_that_falls_silent_is_reported_once_and_its_recovery_once() {
    let influxd = Influxd::start();
    let mut cfg = config_for(&influxd, "silent_hosts");
    set(&mut cfg, "sense-ingest.silentHostAfter", Yaml::from("1s"));
    let engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let node = Node::new(engine.target());
    let host = "sense-quiet.lab.example";
    node.send(host, "Start session", "goran", None);
    wait_for("the silent-host WARN", Duration::from_secs(20), || {
        (silent_lines(&engine.stderr_text(), host) >= 1).then_some(())
    });
    let warn = engine
        .stderr_text()
        .lines()
        .find(|l| l.contains(host) && l.contains("silent"))
        .map(str::to_string)
        .unwrap();
    assert!(warn.contains("WARN"), "{warn}");
    // A negative check needs a window: several monitor checks pass while the host stays silent.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(silent_lines(&engine.stderr_text(), host), 1, "{}", engine.stderr_text());
    node.send(host, "Stop session", "goran", None);
    wait_for("the recovery line", Duration::from_secs(20), || {
        (recovered_lines(&engine.stderr_text(), host) >= 1).then_some(())
    });
    let log = engine.stderr_text();
    assert_eq!(recovered_lines(&log, host), 1, "{log}");
    assert_eq!(silent_lines(&log, host), 1, "{log}");
    // A host never heard from raises nothing.
    assert!(!log.contains("sense-never"), "{log}");
}
