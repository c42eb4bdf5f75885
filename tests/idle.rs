//! Idle cost and the receive fallback as users meet them: an engine with every destination, metrics and the spool
//! sleeps in the kernel when nothing happens, and an engine under a seccomp filter that blocks io_uring (like
//! Docker's default profile) falls back to recvmmsg, says why, and delivers.

use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::influxd::Influxd;
use crate::common::mosquitto::Mosquitto;
use crate::common::{seccomp, send_datagrams, wait_for, Engine};

/// Context switches (voluntary + involuntary) of every thread of `pid` so far.
fn context_switches(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        for line in status.lines() {
            if let Some(n) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += n.trim().parse::<u64>().unwrap();
            }
        }
    }
    total
}

/// Waits until one window of `WINDOW` sees at most `MAX_SWITCHES` context switches over all the engine's
/// threads. The windows are the measurement itself, not a synchronisation: the start-up and the delivery of the
/// events sent just before take a few windows at most, after which an engine that sleeps in the kernel meets the
/// bound in every window, while one that polls (the stop flag every 50 ms, the readers every 100 ms, the sinks
/// every second: about 100 per second here before) never does. Counts, not times: a loaded machine does not
/// change how often an idle thread wakes.
fn wait_until_idle(engine: &Engine) -> u64 {
    const WINDOW: Duration = Duration::from_secs(2);
    const MAX_SWITCHES: u64 = 6; // the monitor's once-a-second look at the counters, with room to spare
    let pid = engine.pid();
    let mut last = Vec::new();
    let mut before = context_switches(pid);
    let found = (0..10).find_map(|_| {
        std::thread::sleep(WINDOW);
        let now = context_switches(pid);
        let n = now - before;
        before = now;
        last.push(n);
        (n <= MAX_SWITCHES).then_some(n)
    });
    found.unwrap_or_else(|| {
        panic!("the idle engine never stayed under {MAX_SWITCHES} context switches per {WINDOW:?}; windows: {last:?}")
    })
}

/// Sends every fixture datagram and waits until InfluxDB database `db` holds all their points; returns how many.
fn send_fixtures_until_stored(engine: &Engine, influxd: &Influxd, db: &str) -> usize {
    let cases = fixtures::cases();
    let expected: usize = cases.iter().map(|c| c.influx_points().len()).sum();
    let datagrams: Vec<Vec<u8>> = cases.iter().map(|c| c.datagram.clone()).collect();
    send_datagrams(engine.target(), &datagrams);
    wait_for("every fixture point in InfluxDB", Duration::from_secs(20), || {
        (influxd.points(db, "user_events").len() >= expected).then_some(())
    });
    expected
}

fn full_config(influxd: &Influxd, mosquitto: &Mosquitto, spool: &std::path::Path, backend: &str) -> String {
    let mut cfg = fixtures::influx_only_config(false, influxd.addr.port(), "idle");
    set(&mut cfg, "Butler-SOS.mqttConfig.enable", Yaml::from(true));
    set(&mut cfg, "Butler-SOS.mqttConfig.brokerHost", Yaml::from("127.0.0.1"));
    set(&mut cfg, "Butler-SOS.mqttConfig.brokerPort", Yaml::from(mosquitto.port));
    set(&mut cfg, "Butler-SOS.userEvents.sendToMQTT.enable", Yaml::from(true));
    set(&mut cfg, "Butler-SOS.prometheus.enable", Yaml::from(true));
    set(&mut cfg, "Butler-SOS.prometheus.host", Yaml::from("127.0.0.1"));
    set(&mut cfg, "Butler-SOS.prometheus.port", Yaml::from(0));
    set(&mut cfg, "sense-ingest.spool.dir", Yaml::from(spool.to_str().unwrap()));
    set(&mut cfg, "sense-ingest.backend", Yaml::from(backend));
    set(&mut cfg, "sense-ingest.readerThreads", Yaml::from(2));
    serde_norway::to_string(&cfg).unwrap()
}

/// Every fixture event into InfluxDB (and MQTT), then nothing: the engine must go back to sleep (every batch,
/// spool and retry timer gone with its work), and still stop at once and cleanly on SIGTERM.
fn an_idle_engine_sleeps_in_the_kernel(backend: &str) {
    let influxd = Influxd::start();
    let mosquitto = Mosquitto::start();
    let spool = tempfile::tempdir().unwrap();
    let mut engine = Engine::start_with_yaml(&full_config(&influxd, &mosquitto, spool.path(), backend));
    assert!(
        engine.stderr_text().contains(&format!("backend=\"{backend}\"")),
        "engine did not use the {backend} backend:\n{}",
        engine.stderr_text()
    );
    let expected = send_fixtures_until_stored(&engine, &influxd, "idle");
    wait_until_idle(&engine);
    let status = engine.terminate_within(Duration::from_secs(10));
    assert!(status.success(), "engine exit {status}:\n{}", engine.stderr_text());
    assert_eq!(influxd.points("idle", "user_events").len(), expected, "nothing twice");
}

#[test]
fn an_idle_engine_sleeps_in_the_kernel_with_the_io_uring_reader() {
    an_idle_engine_sleeps_in_the_kernel("io_uring");
}

#[test]
fn an_idle_engine_sleeps_in_the_kernel_with_the_recvmmsg_reader() {
    an_idle_engine_sleeps_in_the_kernel("recvmmsg");
}

/// The scheduling policy (`/proc/PID/task/TID/stat` field 41: 0 `SCHED_OTHER`, 3 `SCHED_BATCH`) of every thread of
/// `pid`, by thread name.
fn policies(pid: u32) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // The fields after the name (which may hold spaces) start with field 3, the state.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = after_name.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        found.push((name.trim().to_string(), policy));
    }
    found
}

/// A destination's encoder and delivery threads are woken by the readers' hand-overs and by answers; in the
/// default policy each such wake-up may preempt the reader on that CPU just before it sleeps or while it drains its
/// socket. They run in `SCHED_BATCH`, which keeps their share of the CPU but never preempts on wake-up; the
/// readers stay in the default policy.
#[test]
fn destination_threads_never_preempt_the_readers() {
    let influxd = Influxd::start();
    let mosquitto = Mosquitto::start();
    let spool = tempfile::tempdir().unwrap();
    let mut engine = Engine::start_with_yaml(&full_config(&influxd, &mosquitto, spool.path(), "recvmmsg"));
    send_fixtures_until_stored(&engine, &influxd, "idle");
    let threads = policies(engine.pid());
    let policy_of = |prefix: &str| -> Vec<(String, u32)> {
        threads.iter().filter(|(n, _)| n.starts_with(prefix)).cloned().collect()
    };
    let (sinks, deliveries, readers) = (policy_of("sink-"), policy_of("deliver-"), policy_of("reader-"));
    // InfluxDB and MQTT: an encoder and a delivery thread each (thread names are cut at 15 bytes).
    for name in [
        "sink-influxdb",
        "sink-mqtt",
        "deliver-influxd",
        "deliver-mqtt",
        "reader-0",
    ] {
        assert!(threads.iter().any(|(n, _)| n == name), "no thread {name}: {threads:?}");
    }
    for (name, policy) in sinks.iter().chain(&deliveries) {
        assert_eq!(*policy, 3, "{name} is not in SCHED_BATCH; threads: {threads:?}");
    }
    for (name, policy) in &readers {
        assert_eq!(*policy, 0, "{name} left the default policy; threads: {threads:?}");
    }
    let status = engine.terminate_within(Duration::from_secs(10));
    assert!(status.success(), "engine exit {status}:\n{}", engine.stderr_text());
}

/// Voluntary context switches (the thread went to sleep: a wake-up each) of the engine's thread named `name`.
fn voluntary_switches(pid: u32, name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        if status
            .lines()
            .any(|l| l.strip_prefix("Name:").is_some_and(|n| n.trim() == name))
        {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .unwrap();
            total += line.trim().parse::<u64>().unwrap();
        }
    }
    total
}

/// An engine with one reader of `backend` writing to InfluxDB database `db` with `batch.maxAge` `max_age`, once it
/// sleeps (its start-up work done).
fn one_reader_engine(influxd: &Influxd, db: &str, backend: &str, max_age: &str) -> Engine {
    let mut cfg = fixtures::influx_only_config(false, influxd.addr.port(), db);
    set(&mut cfg, "sense-ingest.backend", Yaml::from(backend));
    set(&mut cfg, "sense-ingest.readerThreads", Yaml::from(1));
    set(&mut cfg, "sense-ingest.batch.maxAge", Yaml::from(max_age));
    let engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    wait_until_idle(&engine);
    engine
}

/// Waits until InfluxDB database `db` holds `expected` user events, and checks it holds no more.
fn wait_until_stored(influxd: &Influxd, db: &str, expected: usize) {
    let stored = wait_for("every point in InfluxDB", Duration::from_secs(30), || {
        let n = influxd.points(db, "user_events").len();
        (n >= expected).then_some(n)
    });
    assert_eq!(stored, expected);
}

/// A real farm sends tens of events a second, each datagram alone on the link. Lingering for more is pointless
/// then: the reader must hand each one over on the wake-up that brought it (one wake-up per datagram, not a
/// second one when a linger timer runs out), and the encoder must not wake per datagram but about once per batch
/// (`batch.maxAge`), since the batch waits for its age anyway. Counts of wake-ups, not times: the sender's pacing
/// only has to keep the datagrams apart, and a loaded machine that bunches them only lowers the counts.
fn a_trickle_wakes_the_reader_once_per_datagram(backend: &str) {
    const DATAGRAMS: u64 = 24;
    let influxd = Influxd::start();
    let mut engine = one_reader_engine(&influxd, "trickle", backend, "300ms");
    let pid = engine.pid();
    let (reader_before, encoder_before) = (
        voluntary_switches(pid, "reader-0"),
        voluntary_switches(pid, "sink-influxdb"),
    );
    let datagram = fixtures::cases()[0].datagram.clone();
    for _ in 0..DATAGRAMS {
        send_datagrams(engine.target(), std::slice::from_ref(&datagram));
        std::thread::sleep(Duration::from_millis(40)); // pacing the trickle, not waiting for anything
    }
    wait_until_stored(&influxd, "trickle", DATAGRAMS as usize);
    let reader = voluntary_switches(pid, "reader-0") - reader_before;
    let encoder = voluntary_switches(pid, "sink-influxdb") - encoder_before;
    // One wake-up per datagram, plus a few for a datagram that arrived while the reader was busy elsewhere.
    assert!(
        reader <= DATAGRAMS + 4,
        "{backend} reader woke {reader} times for {DATAGRAMS} lone datagrams"
    );
    // 24 datagrams 40 ms apart span about 1 s: about 4 batches of 300 ms, each woken by its first slab and by its
    // age; the rest of each batch's slabs wait in the channel for the age without waking the encoder.
    assert!(
        encoder <= DATAGRAMS / 2,
        "{backend}: the encoder woke {encoder} times for {DATAGRAMS} lone datagrams"
    );
    let status = engine.terminate_within(Duration::from_secs(10));
    assert!(status.success(), "engine exit {status}:\n{}", engine.stderr_text());
}

#[test]
fn a_trickle_wakes_the_io_uring_reader_once_per_datagram_and_the_encoder_per_batch() {
    a_trickle_wakes_the_reader_once_per_datagram("io_uring");
}

#[test]
fn a_trickle_wakes_the_recvmmsg_reader_once_per_datagram_and_the_encoder_per_batch() {
    a_trickle_wakes_the_reader_once_per_datagram("recvmmsg");
}

/// A steady flow of a few thousand datagrams a second: a reader should wake about once per linger (half of
/// `batch.maxAge`, at most 5 ms: 5 ms here) and take what arrived meanwhile, not twice per linger (once when it
/// ends and again for the next datagram) nor once per millisecond. Counts against the time the sending took: a
/// loaded machine that delays the reader only lowers the count.
fn a_steady_flow_wakes_the_reader_about_once_per_linger(backend: &str) {
    const DATAGRAMS: usize = 2000;
    const GAP: Duration = Duration::from_micros(250);
    let influxd = Influxd::start();
    let mut engine = one_reader_engine(&influxd, "steady", backend, "10ms");
    let pid = engine.pid();
    let before = voluntary_switches(pid, "reader-0");
    let datagram = fixtures::cases()[0].datagram.clone();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = std::time::Instant::now();
    for i in 0..DATAGRAMS {
        // Paced by spinning: a sleep this short would oversleep by more than the gap.
        while start.elapsed() < GAP * i as u32 {
            std::hint::spin_loop();
        }
        sock.send_to(&datagram, engine.target()).unwrap();
    }
    let sending = start.elapsed();
    wait_until_stored(&influxd, "steady", DATAGRAMS);
    let wakes = voluntary_switches(pid, "reader-0") - before;
    let lingers = sending.as_secs_f64() / 0.005;
    assert!(
        (wakes as f64) <= lingers * 1.5 + 20.0,
        "{backend} reader woke {wakes} times in {sending:?} ({lingers:.0} linger periods) for {DATAGRAMS} datagrams"
    );
    let status = engine.terminate_within(Duration::from_secs(10));
    assert!(status.success(), "engine exit {status}:\n{}", engine.stderr_text());
}

#[test]
fn a_steady_flow_wakes_the_io_uring_reader_about_once_per_linger() {
    a_steady_flow_wakes_the_reader_about_once_per_linger("io_uring");
}

#[test]
fn a_steady_flow_wakes_the_recvmmsg_reader_about_once_per_linger() {
    a_steady_flow_wakes_the_reader_about_once_per_linger("recvmmsg");
}

/// Docker's default seccomp profile answers `io_uring_setup` with EPERM: the engine must say so once, name the
/// likely cause, run recvmmsg readers and deliver every event.
#[test]
fn where_seccomp_blocks_io_uring_the_engine_falls_back_to_recvmmsg_and_names_the_cause() {
    let influxd = Influxd::start();
    let mut cfg = fixtures::influx_only_config(true, influxd.addr.port(), "seccomp");
    set(&mut cfg, "sense-ingest.readerThreads", Yaml::from(2));
    let mut engine = Engine::start_with_yaml_and(&serde_norway::to_string(&cfg).unwrap(), seccomp::block_io_uring);
    let log = engine.stderr_text();
    let cause = "io_uring unavailable; using recvmmsg reason=io_uring_setup: EPERM (likely a container's seccomp \
                 profile, e.g. Docker's default one; else the kernel.io_uring_disabled sysctl)";
    assert_eq!(log.matches("io_uring unavailable").count(), 1, "one WARN:\n{log}");
    assert!(log.contains(cause), "the WARN names the cause:\n{log}");
    wait_for("two recvmmsg readers", Duration::from_secs(10), || {
        (engine.stderr_text().matches("backend=\"recvmmsg\"").count() == 2).then_some(())
    });
    assert!(
        !engine.stderr_text().contains("backend=\"io_uring\""),
        "no io_uring reader"
    );
    send_fixtures_until_stored(&engine, &influxd, "seccomp");
    let status = engine.terminate();
    assert!(status.success(), "engine exit {status}:\n{}", engine.stderr_text());
}
