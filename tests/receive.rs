use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::{send_datagrams, wait_for, Engine};

/// The fixture config with every destination off and events printed on stdout.
fn stdout_config(listen: Option<&str>) -> serde_norway::Value {
    let mut cfg = fixtures::stdout_config();
    if let Some(addr) = listen {
        set(&mut cfg, "sense-ingest.listen", Yaml::Sequence(vec![Yaml::from(addr)]));
    }
    cfg
}

#[test]
fn stdout_lines_are_the_butler_sos_mqtt_payloads_byte_for_byte() {
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&stdout_config(None)).unwrap());
    let cases = fixtures::cases();
    send_datagrams(
        engine.target(),
        &cases.iter().map(|c| c.datagram.clone()).collect::<Vec<_>>(),
    );
    // Case 16 (too few fields) is a deliberate deviation: Butler SOS published it with `undefined` fields.
    let expected: Vec<(String, String)> = cases
        .iter()
        .filter(|c| c.name != "16_too_few_fields")
        .filter_map(|c| c.mqtt().first().map(|(_, payload)| (c.name.clone(), payload.clone())))
        .collect();
    wait_for("one stdout line per accepted fixture", Duration::from_secs(20), || {
        (engine.stdout_lines().len() >= expected.len()).then_some(())
    });
    assert!(engine.terminate().success());
    let lines = engine.stdout_lines();
    assert_eq!(lines.len(), expected.len());
    for ((case, want), got) in expected.iter().zip(&lines) {
        assert_eq!(got, want, "case {case}");
    }
}

#[test]
fn listens_on_ipv6_loopback() {
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&stdout_config(Some("[::1]:0"))).unwrap());
    assert!(engine.addr.is_ipv6(), "{}", engine.addr);
    let first = fixtures::cases().into_iter().next().unwrap();
    send_datagrams(engine.target(), &[first.datagram]);
    wait_for("the event on stdout", Duration::from_secs(10), || {
        (engine.stdout_lines().len() == 1).then_some(())
    });
    assert!(engine.terminate().success());
}

#[test]
fn oversized_and_malformed_datagrams_are_counted_and_good_ones_around_them_delivered() {
    let mut cfg = stdout_config(None);
    set(
        &mut cfg,
        "Butler-SOS.userEvents.udpServerConfig.maxMessageSize",
        Yaml::from(300),
    );
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let good = fixtures::cases().into_iter().next().unwrap().datagram;
    let mut big = good.clone();
    big.extend(std::iter::repeat_n(b'x', 400));
    let mut bad_utf8 = good.clone();
    bad_utf8.extend_from_slice(b" \xff\xfe tail");
    let datagrams = vec![
        good.clone(),
        big,
        b"garbage".to_vec(),
        b"/qseow-proxy-session/;only;three".to_vec(),
        bad_utf8,
        good,
    ];
    send_datagrams(engine.target(), &datagrams);
    wait_for("three good events on stdout", Duration::from_secs(10), || {
        (engine.stdout_lines().len() == 3).then_some(())
    });
    assert!(engine.terminate().success());
    let log = engine.stderr_text();
    let summary = log
        .lines()
        .rev()
        .find(|l| l.contains("summary"))
        .expect("final summary line");
    for want in [
        "received=6",
        "accepted=3",
        "over_size=1",
        "unknown_source=1",
        "too_few_fields=1",
        "invalid_utf8=1",
    ] {
        assert!(summary.contains(want), "summary lacks {want}: {summary}");
    }
    assert!(
        engine.stdout_lines()[1].contains("\u{FFFD}\u{FFFD} tail"),
        "{:?}",
        engine.stdout_lines()[1]
    );
    assert!(log.contains("datagram rejected"), "a reject must be logged:\n{log}");
}

#[test]
fn app_names_come_from_the_app_names_file_and_follow_its_changes() {
    let dir = tempfile::tempdir().unwrap();
    let names = dir.path().join("apps.csv");
    std::fs::write(
        &names,
        "appId,appName\na421f4a2-c311-4ef4-ba41-fe2e6a2b0d69,Sales dashboard\n",
    )
    .unwrap();
    let mut cfg = stdout_config(None);
    set(&mut cfg, "sense-ingest.appNames", Yaml::from(names.to_str().unwrap()));
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let chrome = fixtures::cases()
        .into_iter()
        .find(|c| c.name.starts_with("03_"))
        .unwrap()
        .datagram;
    send_datagrams(engine.target(), std::slice::from_ref(&chrome));
    wait_for("the first event", Duration::from_secs(10), || {
        (engine.stdout_lines().len() == 1).then_some(())
    });
    assert!(
        engine.stdout_lines()[0].contains(r#""appName":"Sales dashboard""#),
        "{}",
        engine.stdout_lines()[0]
    );
    std::fs::write(&names, "a421f4a2-c311-4ef4-ba41-fe2e6a2b0d69,Sales (renamed)\n").unwrap();
    // The file is polled; keep sending until an event shows the new name.
    wait_for("the renamed app in an event", Duration::from_secs(20), || {
        send_datagrams(engine.target(), std::slice::from_ref(&chrome));
        std::thread::sleep(Duration::from_millis(100));
        engine
            .stdout_lines()
            .iter()
            .any(|l| l.contains(r#""appName":"Sales (renamed)""#))
            .then_some(())
    });
    assert!(engine.terminate().success());
}

#[test]
fn only_allowed_sources_are_accepted_and_the_rest_counted() {
    let mut cfg = stdout_config(Some("[::]:0"));
    fixtures::validate_sources(&mut cfg, Yaml::Sequence(vec![Yaml::from("127.0.0.1")]));
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let port = engine.addr.port();
    let good = fixtures::cases().into_iter().next().unwrap().datagram;
    // From 127.0.0.1 (arrives as ::ffff:127.0.0.1 on the dual-stack socket): allowed. From ::1: not.
    send_datagrams(format!("127.0.0.1:{port}").parse().unwrap(), &vec![good.clone(); 3]);
    send_datagrams(format!("[::1]:{port}").parse().unwrap(), &vec![good; 2]);
    wait_for("the allowed events", Duration::from_secs(10), || {
        (engine.stdout_lines().len() == 3).then_some(())
    });
    assert!(engine.terminate().success());
    let log = engine.stderr_text();
    let summary = log.lines().rev().find(|l| l.contains("summary")).unwrap();
    assert!(
        summary.contains("received=5") && summary.contains("disallowed_source=2"),
        "{summary}"
    );
    assert_eq!(engine.stdout_lines().len(), 3);
}

#[test]
fn the_rate_limit_applies_per_sender() {
    let mut cfg = stdout_config(None);
    set(
        &mut cfg,
        "Butler-SOS.userEvents.udpServerConfig.rateLimit.enable",
        Yaml::from(true),
    );
    set(
        &mut cfg,
        "Butler-SOS.userEvents.udpServerConfig.rateLimit.maxMessagesPerMinute",
        Yaml::from(5),
    );
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let good = fixtures::cases().into_iter().next().unwrap().datagram;
    send_datagrams(engine.target(), &vec![good; 8]);
    wait_for("every datagram counted", Duration::from_secs(10), || {
        (engine.stdout_lines().len() == 5).then_some(())
    });
    assert!(engine.terminate().success());
    let log = engine.stderr_text();
    let summary = log.lines().rev().find(|l| l.contains("summary")).unwrap();
    assert!(
        summary.contains("received=8") && summary.contains("rate_limited=3"),
        "{summary}"
    );
}

#[test]
fn counts_are_kept_per_sender() {
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&stdout_config(Some("[::]:0"))).unwrap());
    let port = engine.addr.port();
    let good = fixtures::cases().into_iter().next().unwrap().datagram;
    send_datagrams(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &[good.clone(), good.clone(), b"junk".to_vec()],
    );
    send_datagrams(format!("[::1]:{port}").parse().unwrap(), &[good]);
    wait_for("three events", Duration::from_secs(10), || {
        (engine.stdout_lines().len() == 3).then_some(())
    });
    assert!(engine.terminate().success());
    let log = engine.stderr_text();
    let line = |sender: &str| {
        log.lines()
            .find(|l| l.contains("sender totals") && l.contains(&format!("sender={sender} ")))
            .map(str::to_string)
    };
    let v4 = line("127.0.0.1").expect("a line for 127.0.0.1");
    assert!(
        v4.contains("received=3 accepted=2") && v4.contains("unknown_source=1"),
        "{v4}"
    );
    let v6 = line("::1").expect("a line for ::1");
    assert!(v6.contains("received=1 accepted=1"), "{v6}");
}

/// A datagram is logged when it is rejected; a newline (or any other control character) inside it must come out
/// escaped, so one datagram can never make two log lines or rewrite the terminal (issue 10).
#[test]
fn a_rejected_datagram_cannot_forge_a_log_line() {
    const FORGED: &str = "2026-01-01T00:00:00.000000Z ERROR forged: every destination lost its events";
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&stdout_config(None)).unwrap());
    let datagrams = vec![
        // Unknown source.
        format!("garbage\n{FORGED}").into_bytes(),
        // Known source, too few fields; CR, ESC, BEL and DEL too.
        format!("/qseow-proxy-session/;only\r\n{FORGED}\x1b[2K\x07\x7f").into_bytes(),
    ];
    send_datagrams(engine.target(), &datagrams);
    wait_for("both rejects logged", Duration::from_secs(10), || {
        (engine.stderr_text().matches("datagram rejected").count() == 2).then_some(())
    });
    assert!(engine.terminate().success());
    let log = engine.stderr_text();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00")),
        "a datagram forged a log line:\n{log}"
    );
    assert!(
        !log.chars().any(|c| c != '\n' && c.is_control()),
        "a control character from the network reached the log:\n{log:?}"
    );
    assert!(
        log.contains(r"garbage\n2026-01-01T00:00:00.000000Z ERROR forged"),
        "{log}"
    );
    assert!(
        log.contains(r"only\r\n2026-01-01T00:00:00.000000Z ERROR forged"),
        "{log}"
    );
    assert!(log.contains(r"events\x1b[2K\x07\x7f"), "{log}");
}

/// SIGHUP re-reads and validates the config file, and never stops the engine or loses an event: a valid file
/// gets one WARN (changes take effect at restart), a broken one gets one ERROR naming every problem, and
/// everything sent before, during and after each signal is delivered (issue 10, item 9).
#[test]
fn sighup_revalidates_the_config_and_loses_nothing() {
    sighup_round_trip(None);
}

/// The same with the recvmmsg reader, whose blocking receive the signal interrupts.
#[test]
fn sighup_loses_nothing_with_the_recvmmsg_reader() {
    sighup_round_trip(Some("recvmmsg"));
}

/// Events before, during and after a SIGHUP with a valid file, then after one with a broken file, with
/// `sense-ingest.backend` = `backend` (default when `None`).
fn sighup_round_trip(backend: Option<&str>) {
    const ROUND: usize = 300;
    let mut cfg = stdout_config(None);
    set(&mut cfg, "sense-ingest.recvBufferBytes", Yaml::from(16u64 << 20));
    if let Some(backend) = backend {
        set(&mut cfg, "sense-ingest.backend", Yaml::from(backend));
    }
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    if let Some(backend) = backend {
        assert!(
            engine.stderr_text().contains(&format!("backend=\"{backend}\"")),
            "{}",
            engine.stderr_text()
        );
    }
    let good = fixtures::cases().into_iter().next().unwrap().datagram;
    let round = vec![good; ROUND];
    let delivered = |engine: &mut Engine, want: usize| {
        wait_for(&format!("{want} events on stdout"), Duration::from_secs(20), || {
            assert!(engine.is_running(), "the engine died:\n{}", engine.stderr_text());
            (engine.stdout_lines().len() >= want).then_some(())
        });
    };
    let logged = |engine: &mut Engine, what: &str, count: usize| {
        wait_for(
            &format!("{count} log line(s) with {what:?}"),
            Duration::from_secs(20),
            || {
                assert!(
                    engine.is_running(),
                    "SIGHUP stopped the engine:\n{}",
                    engine.stderr_text()
                );
                (engine.stderr_text().matches(what).count() >= count).then_some(())
            },
        );
    };

    // A signal in the middle of a burst: a valid file.
    send_datagrams(engine.target(), &round);
    engine.signal("HUP");
    send_datagrams(engine.target(), &round);
    logged(&mut engine, "config reloaded", 1);
    delivered(&mut engine, 2 * ROUND);

    // A broken file: one ERROR with every problem, and the engine runs on unchanged.
    let path = engine.config_path().expect("started from a file");
    let text = std::fs::read_to_string(&path).unwrap();
    let broken = text.replace("logLevel: info", "logLevel: loud") + "notAKey: 1\n";
    assert_ne!(broken, text, "the fixture's logLevel line moved");
    std::fs::write(&path, broken).unwrap();
    engine.signal("HUP");
    send_datagrams(engine.target(), &round);
    logged(&mut engine, "config file is not valid", 1);
    delivered(&mut engine, 3 * ROUND);

    assert!(engine.terminate().success());
    assert_eq!(engine.stdout_lines().len(), 3 * ROUND, "each event exactly once");
    let log = engine.stderr_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("config file is not valid")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains(" ERROR "), "{}", errors[0]);
    assert!(
        errors[0].contains("Butler-SOS.logLevel") && errors[0].contains("notAKey"),
        "every problem, with its key path: {}",
        errors[0]
    );
    let summary = log
        .lines()
        .rev()
        .find(|l| l.contains("summary"))
        .expect("final summary");
    let want = format!("received={} accepted={}", 3 * ROUND, 3 * ROUND);
    assert!(summary.contains(&want), "{summary}");
}

/// Issue 10: an event counts as delivered on stdout only once it was written out. With stdout a pipe whose reader
/// has gone, every event is counted as dropped and none as delivered.
#[test]
fn issue_10_events_printed_to_a_closed_stdout_are_counted_as_dropped() {
    let yaml = serde_norway::to_string(&stdout_config(None)).unwrap();
    let mut engine = Engine::start_with_yaml_and_closed_stdout(&yaml);
    let first = fixtures::cases().into_iter().next().unwrap();
    send_datagrams(engine.target(), &vec![first.datagram; 50]);
    // Shutdown drains the socket and the channels, so every datagram sent is accounted for in the summary.
    engine.terminate();
    let log = engine.stderr_text();
    let summary = log
        .lines()
        .rev()
        .find(|l| l.contains("summary") && l.contains("final"))
        .unwrap_or_else(|| panic!("no final summary:\n{log}"));
    assert!(summary.contains("accepted=50"), "{summary}");
    assert!(
        summary.contains("stdout(delivered=0 skipped=0 dropped=50 "),
        "{summary}"
    );
}

/// The stdout lines of user `user_id`.
fn lines_of(engine: &Engine, user_id: &str) -> usize {
    let needle = format!("\"userId\":\"{user_id}\"");
    engine.stdout_lines().iter().filter(|l| l.contains(&needle)).count()
}

/// Issue 12: a user added to `excludeUser` and a SIGHUP: that user's events stop arriving, the others keep
/// arriving, and a changed key that needs a restart is named in one WARN.
#[test]
fn sighup_applies_a_new_excluded_user_at_once_and_names_what_needs_a_restart() {
    let mut engine = Engine::start_with_yaml(&serde_norway::to_string(&stdout_config(None)).unwrap());
    let event = |user: &str| format!("/qseow-proxy-session/;sense1;Start session;LAB;{user};Hub;/hub/;x").into_bytes();
    let round: Vec<Vec<u8>> = (0..10).flat_map(|_| [event("anna"), event("bert")]).collect();
    send_datagrams(engine.target(), &round);
    wait_for("20 events on stdout", Duration::from_secs(20), || {
        (engine.stdout_lines().len() == 20).then_some(())
    });

    let path = engine.config_path().unwrap();
    let mut cfg: Yaml = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut exclude = cfg["Butler-SOS"]["userEvents"]["excludeUser"]
        .as_sequence()
        .unwrap()
        .clone();
    exclude.push(serde_norway::from_str("{directory: LAB, userId: anna}").unwrap());
    set(&mut cfg, "Butler-SOS.userEvents.excludeUser", Yaml::Sequence(exclude));
    set(&mut cfg, "sense-ingest.spool.maxBytes", Yaml::from(77u64 << 20));
    std::fs::write(&path, serde_norway::to_string(&cfg).unwrap()).unwrap();
    engine.signal("HUP");
    wait_for("the reload", Duration::from_secs(20), || {
        engine.stderr_text().contains("config reloaded").then_some(())
    });

    send_datagrams(engine.target(), &round);
    // A last event from another user, sent after the others on the same socket: once it is out, all are.
    send_datagrams(engine.target(), &[event("carl")]);
    wait_for("carl's event on stdout", Duration::from_secs(20), || {
        (lines_of(&engine, "carl") == 1).then_some(())
    });
    assert!(engine.terminate().success());
    assert_eq!(lines_of(&engine, "anna"), 10, "anna's events stop after the reload");
    assert_eq!(lines_of(&engine, "bert"), 20, "bert's keep arriving");
    let log = engine.stderr_text();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("take effect only at the next restart"))
        .collect();
    assert_eq!(warns.len(), 1, "{log}");
    assert!(warns[0].contains("keys=sense-ingest.spool.maxBytes"), "{}", warns[0]);
    assert!(!warns[0].contains("excludeUser"), "{}", warns[0]);
    let summary = log.lines().rev().find(|l| l.contains("summary")).unwrap();
    assert!(summary.contains("received=41 accepted=31 excluded=10"), "{summary}");
}
