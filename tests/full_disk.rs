//! The spool on a full disk (a small tmpfs another file fills) while InfluxDB is down, then space freed, then
//! InfluxDB back: every event sent after space returned is stored, stored == delivered, and every accepted event
//! is delivered, skipped or dropped (counted), with nothing left in the spool and no damaged record.

use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::http::request;
use crate::common::influxd::Influxd;
use crate::common::tmpfs::Tmpfs;
use crate::common::{metric, metrics_addr, send_datagrams, wait_for, Engine};
use crate::reliability::{events, final_summary};

/// `key=<n>` in `text` after `from` (the first occurrence).
fn number(text: &str, from: &str, key: &str) -> u64 {
    let rest = &text[text.find(from).unwrap_or_else(|| panic!("{from} in {text}"))..];
    let at = rest
        .find(&format!(" {key}="))
        .or_else(|| rest.find(&format!("({key}=")));
    let value = &rest[at.unwrap_or_else(|| panic!("{key} in {rest}")) + key.len() + 2..];
    value
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a number for {key} in {value}"))
}

/// The settings both scenarios share: retries from `initial` to `max` backoff, 50 ms batches, the spool in
/// `disk`, and the metrics endpoint on a free loopback port.
fn spool_on(cfg: &mut Yaml, disk: &Tmpfs, initial: &str, max: &str) {
    set(cfg, "sense-ingest.retry.initialBackoff", Yaml::from(initial));
    set(cfg, "sense-ingest.retry.maxBackoff", Yaml::from(max));
    set(cfg, "sense-ingest.batch.maxAge", Yaml::from("50ms"));
    let spool_dir = disk.path().join("spool");
    set(cfg, "sense-ingest.spool.dir", Yaml::from(spool_dir.to_str().unwrap()));
    set(cfg, "Butler-SOS.prometheus.enable", Yaml::from(true));
    set(cfg, "Butler-SOS.prometheus.host", Yaml::from("127.0.0.1"));
    set(cfg, "Butler-SOS.prometheus.port", Yaml::from(0));
}

#[test]
fn a_full_disk_loses_only_what_it_counts_and_every_event_after_space_returns_is_stored() {
    let disk = Tmpfs::mount(1 << 20);
    // Another program fills the disk: the spool has about 128 KiB (a few hundred events) left.
    disk.fill_leaving("filler", 128 << 10);
    let mut influxd = Influxd::start();
    let mut cfg = fixtures::influx_only_config(false, influxd.addr.port(), "fulldisk");
    spool_on(&mut cfg, &disk, "50ms", "300ms");
    set(&mut cfg, "sense-ingest.spool.memoryBytes", Yaml::from(4096));
    // The cap is larger than the disk: the disk fills first.
    set(&mut cfg, "sense-ingest.spool.maxBytes", Yaml::from(8 << 20));
    influxd.kill();
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let metrics = metrics_addr(&engine);
    let scrape = || {
        request(metrics, "GET", "/metrics", b"")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let m = |body: &str, series: &str| metric(body, series).unwrap_or(0);

    // InfluxDB down, disk full: the spool takes what fits, then batches wait in memory and the oldest go.
    send_datagrams(engine.target(), &events(4000, "f"));
    wait_for("the spool to hit the full disk", Duration::from_secs(30), || {
        engine.stderr_text().contains("cannot write to the spool").then_some(())
    });
    wait_for("every event accepted", Duration::from_secs(30), || {
        (m(&scrape(), "sense_ingest_events_accepted_total") == 4000).then_some(())
    });

    // Space returns; then InfluxDB.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    send_datagrams(engine.target(), &events(1000, "a"));
    wait_for("every later event accepted", Duration::from_secs(30), || {
        (m(&scrape(), "sense_ingest_events_accepted_total") == 5000).then_some(())
    });
    influxd.restart();
    wait_for("the backlog delivered", Duration::from_secs(60), || {
        let body = scrape();
        let settled = m(
            &body,
            r#"sense_ingest_sink_events_delivered_total{destination="influxdb"}"#,
        ) + m(
            &body,
            r#"sense_ingest_sink_events_skipped_total{destination="influxdb"}"#,
        ) + m(
            &body,
            r#"sense_ingest_sink_events_dropped_total{destination="influxdb"}"#,
        );
        (settled == 5000 && m(&body, r#"sense_ingest_sink_spooled_events{destination="influxdb"}"#) == 0).then_some(())
    });
    assert!(engine.terminate().success());

    let summary = final_summary(&engine);
    let get = |key: &str| number(&summary, "influxdb(", key);
    let accepted = number(&summary, "summary", "accepted");
    let (delivered, skipped, dropped, spool_cap, spooled) = (
        get("delivered"),
        get("skipped"),
        get("dropped"),
        get("spool_cap"),
        get("spooled"),
    );
    let points = influxd.points("fulldisk", "user_events");
    let after = points
        .iter()
        .filter(|p| p.tags["userId"].as_str().unwrap().starts_with('a'))
        .count();
    eprintln!(
        "full disk probe: accepted={accepted} stored={} delivered={delivered} skipped={skipped} dropped={dropped} \
         spool_cap={spool_cap} spooled={spooled} stored_after_space_returned={after}/1000",
        points.len()
    );
    assert_eq!(accepted, 5000, "{summary}");
    assert_eq!(after, 1000, "every event sent after space returned is stored");
    assert_eq!(points.len() as u64, delivered, "stored == delivered: {summary}");
    assert_eq!(delivered + skipped + dropped + spooled, accepted, "{summary}");
    assert_eq!(spooled, 0, "{summary}");
    assert!(
        dropped > 0,
        "the full disk cost events (the memory bound), and they are counted: {summary}"
    );
    assert_eq!(dropped, spool_cap, "every loss is the full disk's: {summary}");
    assert!(
        !engine.stderr_text().contains("damaged spool record"),
        "a full disk damages nothing:\n{}",
        engine.stderr_text()
    );
    assert!(engine.stderr_text().contains("the spool takes writes again"));
}

/// A batch whose delivery failed while the disk was full stays in memory; once space returns it must reach the
/// spool although the destination is still down, so a SIGKILL after that loses none of it (the durability
/// promise: accepted more than `fsyncInterval` before the crash, with a disk that takes writes, is delivered after
/// the restart). Retried every few hundred ms, the batch is in the delivery thread's hands most of the time, not
/// in the memory queue.
#[test]
fn a_batch_a_full_disk_kept_in_memory_is_spooled_once_space_returns_and_survives_a_sigkill() {
    spooled_once_space_returns("fullkill", Down::Refusing, "100ms", 12);
}

/// The same with a long backoff and a destination that holds each request for 1.5 s before it drops the
/// connection: the encoder's timer has long run out when the batch comes back into memory, where it then waits a
/// whole minute's backoff; it must not wait there for the next attempt (or the next event) to reach the disk.
#[test]
fn a_batch_a_full_disk_kept_in_memory_during_a_long_backoff_is_spooled_once_space_returns() {
    spooled_once_space_returns("fullwait", Down::Holding, "60s", 1);
}

/// A restart during the outage that filled the disk (after a crash, an OOM kill): the spool opens anyway, still
/// holds and counts what it had, takes new batches once space returns, and a SIGKILL after that loses none of
/// them. Before, the spool failed to open (it could not write its head) and the engine ran with a memory queue
/// only for the whole run: the backlog was never replayed and nothing was spooled once space came back.
#[test]
fn a_restart_on_a_full_disk_keeps_the_spool_and_spools_again_once_space_returns() {
    let db = "fullstart";
    let disk = Tmpfs::mount(1 << 20);
    let mut influxd = Influxd::start();
    let mut cfg = fixtures::influx_only_config(false, influxd.addr.port(), db);
    spool_on(&mut cfg, &disk, "100ms", "100ms");
    set(&mut cfg, "sense-ingest.spool.fsyncInterval", Yaml::from("200ms"));
    let yaml = serde_norway::to_string(&cfg).unwrap();
    influxd.kill();
    let spooled = |engine: &Engine| {
        let body = request(metrics_addr(engine), "GET", "/metrics", b"")
            .map(|(_, body)| body)
            .unwrap_or_default();
        metric(&body, r#"sense_ingest_sink_spooled_events{destination="influxdb"}"#).unwrap_or(0)
    };

    // InfluxDB down: ten events reach the spool; then the engine is killed and the disk fills up.
    let mut first = Engine::start_with_yaml(&yaml);
    send_datagrams(first.target(), &events(10, "p"));
    wait_for("the first events spooled", Duration::from_secs(30), || {
        (spooled(&first) == 10).then_some(())
    });
    first.kill();
    disk.fill_leaving("filler", 0);

    // Restarted on the full disk: the spool is there, with its ten events.
    let mut second = Engine::start_with_yaml(&yaml);
    wait_for("the spool indexed at start", Duration::from_secs(30), || {
        (spooled(&second) == 10).then_some(())
    });
    assert!(
        !second.stderr_text().contains("memory queue only"),
        "{}",
        second.stderr_text()
    );
    // Space returns, InfluxDB stays down: ten more events go to the spool.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    send_datagrams(second.target(), &events(10, "q"));
    wait_for("the later events spooled", Duration::from_secs(30), || {
        (spooled(&second) == 20).then_some(())
    });
    second.kill();

    influxd.restart();
    let mut third = Engine::start_with_yaml(&yaml);
    wait_for("the spool delivered after the restart", Duration::from_secs(30), || {
        (influxd.points(db, "user_events").len() >= 20).then_some(())
    });
    assert!(third.terminate().success(), "{}", third.stderr_text());
    let points = influxd.points(db, "user_events");
    let from = |prefix: char| {
        points
            .iter()
            .filter(|p| p.tags["userId"].as_str().unwrap().starts_with(prefix))
            .count()
    };
    assert_eq!((points.len(), from('p'), from('q')), (20, 10, 10));
}

/// How the destination is down in [`spooled_once_space_returns`].
enum Down {
    /// InfluxDB stopped: every attempt is refused at once.
    Refusing,
    /// A listener that holds every request for 1.5 s, then drops the connection.
    Holding,
}

/// Ten events while the destination is `down` and the disk full; `attempts` failed deliveries (with `backoff`
/// between them) while it stays full; then space returns and the batch must be spooled while the destination is
/// still down; a SIGKILL; InfluxDB back and the engine restarted: exactly the ten events stored.
fn spooled_once_space_returns(db: &str, down: Down, backoff: &str, attempts: u64) {
    let disk = Tmpfs::mount(1 << 20);
    let mut influxd = Influxd::start();
    let port = match down {
        Down::Refusing => influxd.addr.port(),
        Down::Holding => holding_port(Duration::from_millis(1500)),
    };
    let mut cfg = fixtures::influx_only_config(false, port, db);
    spool_on(&mut cfg, &disk, backoff, backoff);
    set(&mut cfg, "sense-ingest.spool.fsyncInterval", Yaml::from("200ms"));
    let yaml = serde_norway::to_string(&cfg).unwrap();
    set(
        &mut cfg,
        "Butler-SOS.influxdbConfig.port",
        Yaml::from(influxd.addr.port()),
    );
    let yaml_back = serde_norway::to_string(&cfg).unwrap();
    influxd.kill();
    let mut first = Engine::start_with_yaml(&yaml);
    wait_for("the contact at start given up", Duration::from_secs(30), || {
        first
            .stderr_text()
            .contains("cannot reach the destination at start")
            .then_some(())
    });
    let metrics = metrics_addr(&first);
    let series = |name: &str| {
        let body = request(metrics, "GET", "/metrics", b"")
            .map(|(_, body)| body)
            .unwrap_or_default();
        metric(&body, &format!(r#"{name}{{destination="influxdb"}}"#)).unwrap_or(0)
    };
    let spooled = || series("sense_ingest_sink_spooled_events");

    // The spool opened with space; now the disk is full, and the first failed delivery cannot move its batch.
    disk.fill_leaving("filler", 0);
    send_datagrams(first.target(), &events(10, "m"));
    wait_for("the failed batch kept in memory", Duration::from_secs(30), || {
        first
            .stderr_text()
            .contains("batches whose delivery failed stay in memory")
            .then_some(())
    });
    // Every failed attempt offers the batch to the disk again, which is tried once per second and logged once.
    wait_for("the failed attempts on the full disk", Duration::from_secs(30), || {
        (series("sense_ingest_sink_retries_total") >= attempts).then_some(())
    });
    assert_eq!(spooled(), 0);
    assert_eq!(
        first.stderr_text().matches("cannot write to the spool").count(),
        1,
        "{}",
        first.stderr_text()
    );

    // Space returns; InfluxDB stays down. The batch must reach the disk without another event.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    wait_for("the batch spooled once space returned", Duration::from_secs(20), || {
        (spooled() == 10).then_some(())
    });
    assert!(
        first.stderr_text().contains("the spool takes writes again"),
        "{}",
        first.stderr_text()
    );
    first.kill();

    influxd.restart();
    let mut second = Engine::start_with_yaml(&yaml_back);
    wait_for(
        "the spooled batch delivered after the restart",
        Duration::from_secs(30),
        || (influxd.points(db, "user_events").len() >= 10).then_some(()),
    );
    assert!(second.terminate().success(), "{}", second.stderr_text());
    assert_eq!(influxd.points(db, "user_events").len(), 10);
}

/// A loopback port whose listener holds every connection for `hold` (reading what comes), then drops it: a
/// destination that hangs, then fails.
fn holding_port(hold: Duration) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                use std::io::Read;
                let until = std::time::Instant::now() + hold;
                let mut buf = [0u8; 4096];
                while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
                    if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
                        break;
                    }
                    // Data is read and ignored; a read timeout only loops back to the deadline check.
                    if let Ok(0) = conn.read(&mut buf) {
                        break;
                    }
                }
            });
        }
    });
    port
}
