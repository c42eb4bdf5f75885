use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set, Case};
use crate::common::http::request;
use crate::common::{engine_bin, send_datagrams, wait_for, Engine};

/// The fixture config with every destination off, events printed on stdout, and the metrics endpoint on
/// 127.0.0.1:`port`.
fn metrics_config(port: u16) -> Yaml {
    let mut cfg = fixtures::stdout_config();
    set(&mut cfg, "Butler-SOS.prometheus.enable", Yaml::from(true));
    set(&mut cfg, "Butler-SOS.prometheus.host", Yaml::from("127.0.0.1"));
    set(&mut cfg, "Butler-SOS.prometheus.port", Yaml::from(port));
    cfg
}

/// The `addr=` field of the first stderr line that satisfies `pick`.
fn logged_addr(engine: &Engine, what: &str, pick: impl Fn(&str) -> bool) -> SocketAddr {
    wait_for(what, Duration::from_secs(10), || {
        engine.stderr_text().lines().find(|l| pick(l)).and_then(|l| {
            let start = l.find("addr=")? + 5;
            l[start..].split_whitespace().next()?.parse().ok()
        })
    })
}

/// Where the metrics endpoint listens (its `metrics endpoint listening addr=...` line).
fn metrics_addr(engine: &Engine) -> SocketAddr {
    logged_addr(engine, "the `metrics endpoint listening` line", |l| {
        l.contains("metrics endpoint listening")
    })
}

/// Where the UDP readers listen: a reader's `listening` line (it names its backend), never the metrics line,
/// which also says `listening`.
fn udp_addr(engine: &Engine) -> SocketAddr {
    logged_addr(engine, "a reader's `listening` line", |l| {
        l.contains("listening") && !l.contains("metrics endpoint") && l.contains("backend=")
    })
}

/// Every sample of a text exposition, keyed `name{labels}` exactly as written.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {l:?}"));
            let value = if value == "+Inf" {
                f64::INFINITY
            } else {
                value.parse().unwrap_or_else(|e| panic!("bad value in {l:?}: {e}"))
            };
            (series.to_string(), value)
        })
        .collect()
}

fn get_metrics(addr: SocketAddr) -> Option<HashMap<String, f64>> {
    let (status, body) = request(addr, "GET", "/metrics", b"")?;
    assert_eq!(status, 200, "{body}");
    Some(samples(&body))
}

/// What the fixture set must produce, derived from the cases like `tests/receive.rs` does.
struct Expected {
    received: usize,
    accepted: usize,
    excluded: usize,
    rejected: HashMap<&'static str, usize>,
    invalid_utf8: usize,
}

impl Expected {
    fn of(cases: &[Case]) -> Expected {
        // Butler SOS published nothing for these (no expected MQTT message): excluded or rejected.
        const EXCLUDED: &[&str] = &["13_excluded_user"];
        const REJECTED: &[(&str, &str)] = &[
            ("15_unknown_source", "unknown_source"),
            ("34_empty_datagram", "unknown_source"),
            // A deliberate deviation: Butler SOS published it with `undefined` fields; we reject it.
            ("16_too_few_fields", "too_few_fields"),
        ];
        let mut silent: Vec<&str> = cases
            .iter()
            .filter(|c| c.mqtt().is_empty())
            .map(|c| c.name.as_str())
            .collect();
        silent.sort();
        let mut listed: Vec<&str> = EXCLUDED
            .iter()
            .copied()
            .chain(REJECTED.iter().map(|(n, _)| *n).filter(|n| *n != "16_too_few_fields"))
            .collect();
        listed.sort();
        assert_eq!(silent, listed, "the fixture set changed: update the outcome table");
        let not_accepted =
            |c: &&Case| EXCLUDED.contains(&c.name.as_str()) || REJECTED.iter().any(|(n, _)| *n == c.name);
        let mut rejected = HashMap::new();
        for (_, reason) in REJECTED {
            *rejected.entry(*reason).or_insert(0) += 1;
        }
        Expected {
            received: cases.len(),
            accepted: cases.len() - EXCLUDED.len() - REJECTED.len(),
            excluded: EXCLUDED.len(),
            rejected,
            invalid_utf8: cases
                .iter()
                .filter(|c| !not_accepted(c) && std::str::from_utf8(&c.datagram).is_err())
                .count(),
        }
    }
}

#[test]
fn metrics_count_every_fixture_datagram_by_outcome_and_health_is_ok() {
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&metrics_config(0)).unwrap());
    let metrics = metrics_addr(&engine);
    assert!(metrics.ip().is_loopback() && metrics.port() != 0, "{metrics}");
    let udp = udp_addr(&engine);

    wait_for("/health to answer 200 ok", Duration::from_secs(10), || {
        let (status, body) = request(metrics, "GET", "/health", b"")?;
        (status == 200 && body.trim() == "ok").then_some(())
    });

    let cases = fixtures::cases();
    let want = Expected::of(&cases);
    send_datagrams(udp, &cases.iter().map(|c| c.datagram.clone()).collect::<Vec<_>>());
    wait_for("one stdout line per accepted fixture", Duration::from_secs(20), || {
        (engine.stdout_lines().len() >= want.accepted).then_some(())
    });
    let m = wait_for("every datagram counted and delivered", Duration::from_secs(20), || {
        let m = get_metrics(metrics)?;
        let done = m.get("sense_ingest_datagrams_received_total") == Some(&(want.received as f64))
            && m.get(r#"sense_ingest_sink_events_delivered_total{destination="stdout"}"#)
                == Some(&(want.accepted as f64));
        done.then_some(m)
    });

    let value = |series: &str| -> f64 {
        *m.get(series)
            .unwrap_or_else(|| panic!("no {series} in /metrics: {m:#?}"))
    };
    assert_eq!(value("sense_ingest_datagrams_received_total"), want.received as f64);
    assert_eq!(value("sense_ingest_events_accepted_total"), want.accepted as f64);
    assert_eq!(value("sense_ingest_events_excluded_total"), want.excluded as f64);
    for reason in [
        "unknown_source",
        "too_few_fields",
        "over_size",
        "disallowed_source",
        "rate_limited",
    ] {
        let series = format!("sense_ingest_datagrams_rejected_total{{reason=\"{reason}\"}}");
        let expected = want.rejected.get(reason).copied().unwrap_or(0);
        assert_eq!(value(&series), expected as f64, "{series}");
    }
    assert_eq!(value("sense_ingest_invalid_utf8_total"), want.invalid_utf8 as f64);
    assert_eq!(
        value(r#"sense_ingest_sink_events_delivered_total{destination="stdout"}"#),
        want.accepted as f64
    );
    assert_eq!(
        value(r#"sense_ingest_sink_events_dropped_total{destination="stdout"}"#),
        0.0
    );
    assert!(value(r#"sense_ingest_sink_queue_capacity{destination="stdout"}"#) > 0.0);
    assert_eq!(value("sense_ingest_readers_bound"), 1.0);
    let version = format!("sense_ingest_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(value(&version), 1.0);
    let backends: Vec<&String> = m
        .keys()
        .filter(|k| k.starts_with("sense_ingest_reader_backend{"))
        .collect();
    assert_eq!(backends.len(), 1, "{backends:?}");
    assert!(
        [
            r#"sense_ingest_reader_backend{backend="io_uring"}"#,
            r#"sense_ingest_reader_backend{backend="recvmmsg"}"#
        ]
        .contains(&backends[0].as_str()),
        "{backends:?}"
    );
    assert!(value("sense_ingest_uptime_seconds") > 0.0);

    assert_eq!(request(metrics, "GET", "/health", b"").map(|r| r.0), Some(200));
    assert_eq!(request(metrics, "GET", "/nope", b"").map(|r| r.0), Some(404));

    assert!(engine.terminate().success());
    assert!(
        request(metrics, "GET", "/metrics", b"").is_none(),
        "the metrics endpoint must stop with the engine"
    );
}

#[test]
fn a_metrics_port_in_use_fails_startup_with_a_clear_message() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("butler-sos.yaml");
    std::fs::write(&path, serde_norway::to_string(&metrics_config(port)).unwrap()).unwrap();
    let mut child = KillOnDrop(
        Command::new(engine_bin())
            .args(["run", "--config", path.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = wait_for("the engine to exit", Duration::from_secs(20), || {
        child.0.try_wait().unwrap()
    });
    let mut stderr = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("metrics"),
        "the error must name the metrics address:\n{stderr}"
    );
    assert!(
        stderr.contains("change Butler-SOS.prometheus.host/port"),
        "the error must name the key to change:\n{stderr}"
    );
}

/// Issue 12: `sense-ingest.metrics.listen` serves `/metrics`, `/live` and `/ready` with Butler SOS's own
/// Prometheus section off (Butler SOS may hold its port); `/live` stays 200 while a destination is failing and
/// `/ready` says 503 with the reason; the standard `process_*` families are exported; labels are `destination`
/// and `sender`.
#[test]
fn metrics_listen_serves_live_and_ready_independently_of_butler_sos_prometheus() {
    let closed_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // nothing listens
    let mut cfg = fixtures::influx_only_config(false, closed_port, "nowhere");
    set(&mut cfg, "Butler-SOS.prometheus.enable", Yaml::from(false));
    set(&mut cfg, "sense-ingest.metrics.listen", Yaml::from("127.0.0.1:0"));
    set(&mut cfg, "sense-ingest.unhealthyAfter", Yaml::from("100ms"));
    set(&mut cfg, "sense-ingest.retry.initialBackoff", Yaml::from("20ms"));
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let addr = metrics_addr(&engine);
    send_datagrams(
        engine.target(),
        &[b"/qseow-proxy-session/;sense1;Start session;LAB;u1;Hub;/hub/;x".to_vec()],
    );
    let (status, body) = wait_for("/ready to say 503", Duration::from_secs(20), || {
        request(addr, "GET", "/ready", b"").filter(|(status, _)| *status == 503)
    });
    assert_eq!(status, 503);
    assert!(body.starts_with("unhealthy: sink influxdb failing for"), "{body}");
    assert_eq!(request(addr, "GET", "/live", b""), Some((200, "live\n".to_string())));
    assert_eq!(request(addr, "GET", "/health", b"").map(|r| r.0), Some(503));
    let m = get_metrics(addr).expect("/metrics answers");
    // CPU seconds count in clock ticks (10 ms): present, maybe still 0.
    assert!(m.get("process_cpu_seconds_total").is_some_and(|v| *v >= 0.0), "{m:?}");
    for family in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(m.get(family).is_some_and(|v| *v > 0.0), "{family}: {:?}", m.get(family));
    }
    assert_eq!(
        m.get(r#"sense_ingest_sender_events_accepted_total{sender="127.0.0.1"}"#),
        Some(&1.0)
    );
    assert!(
        m.contains_key(r#"sense_ingest_sink_spool_max_bytes{destination="influxdb"}"#),
        "{m:?}"
    );
    assert!(engine.terminate().success());
}

/// Kills the process if the test fails before it exited.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn silent_hosts_are_exported_while_silent_and_cleared_when_they_send_again() {
    // Inline config (no fixture needed): no destination, the metrics endpoint on a free port, a 1 s silence.
    let yaml = "Butler-SOS:
  logLevel: info
  userEvents:
    enable: true
    udpServerConfig: {serverHost: 127.0.0.1, portUserActivityEvents: 0}
  prometheus: {enable: true, host: 127.0.0.1, port: 0}
sense-ingest:
  silentHostAfter: 1s
";
    let engine = Engine::start_with_yaml(yaml);
    let addr = metrics_addr(&engine);
    let metrics = get_metrics(addr).expect("metrics endpoint");
    assert_eq!(metrics.get("sense_ingest_silent_hosts"), Some(&0.0));
    let session = |host: &str| {
        format!("/qseow-proxy-session/;{host};Start session;LAB;anna;Hub;/hub/;Start session for user 'LAB\\anna'")
            .into_bytes()
    };
    send_datagrams(engine.target(), &[session("sense1"), session("sense2")]);
    let both = r#"sense_ingest_silent_host{sense_host="sense1"}"#;
    let other = r#"sense_ingest_silent_host{sense_host="sense2"}"#;
    wait_for("both hosts reported silent", Duration::from_secs(10), || {
        let m = get_metrics(addr)?;
        (m.get("sense_ingest_silent_hosts") == Some(&2.0) && m.get(both) == Some(&1.0) && m.get(other) == Some(&1.0))
            .then_some(())
    });
    send_datagrams(engine.target(), &[session("sense1")]);
    wait_for("sense1 no longer silent", Duration::from_secs(10), || {
        let m = get_metrics(addr)?;
        (m.get("sense_ingest_silent_hosts") == Some(&1.0) && !m.contains_key(both) && m.get(other) == Some(&1.0))
            .then_some(())
    });
}

/// Connects to `addr` and sends a request head that never ends, one byte every 1.5 s. The thread returns once
/// the server answers or closes the connection.
fn trickle(addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    std::thread::spawn(move || {
        let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'));
        let mut buf = [0u8; 256];
        for &b in head {
            if s.write_all(&[b]).is_err() {
                return;
            }
            // The read is the 1.5 s pause; it returns early only when the server answers or closes.
            match s.read(&mut buf) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                _ => return,
            }
        }
    })
}

/// `/health` and `/metrics` are answered while 16 clients trickle request bytes (one byte per 1.5 s each), and
/// the server ends the tricklers itself: slow clients cannot hold the endpoint (issue 10, item 8).
#[test]
fn health_is_answered_while_16_clients_trickle_bytes() {
    let engine = Engine::start_with_yaml(&serde_norway::to_string(&metrics_config(0)).unwrap());
    let addr = metrics_addr(&engine);
    wait_for("/health to answer", Duration::from_secs(10), || {
        request(addr, "GET", "/health", b"").map(|_| ())
    });
    let tricklers: Vec<_> = (0..16).map(|_| trickle(addr)).collect();
    // `request` gives up after 10 s without an answer: a server stuck on a trickler fails here.
    let answer = request(addr, "GET", "/health", b"");
    assert_eq!(
        answer.as_ref().map(|(status, body)| (*status, body.trim())),
        Some((200, "ok")),
        "/health must be answered while clients trickle"
    );
    let metrics = get_metrics(addr).expect("/metrics must be answered while clients trickle");
    assert_eq!(metrics.get("sense_ingest_readers_bound"), Some(&1.0));
    wait_for("the server to close every trickler", Duration::from_secs(60), || {
        tricklers.iter().all(|t| t.is_finished()).then_some(())
    });
    for t in tricklers {
        t.join().unwrap();
    }
}
