//! The New Relic destination through the real binary, against a local Event API stand-in that enforces the
//! contract (tests/common/nr_receiver.rs). The config is the fixture config as a user would write it: both
//! accounts, `newRelic.event.url` pointed at the stand-in, InfluxDB and MQTT off.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set, Case};
use crate::common::nr_receiver::{Fault, NrReceiver, MAX_BODY};
use crate::common::{send_datagrams, wait_for, Engine};

const A: &str = "1111111";
const B: &str = "2222222";
const KEY_A: &str = "NRII-fake-key-AAAA";
const KEY_B: &str = "NRII-fake-key-BBBB";
const SINK_A: &str = "new_relic:NR account A";
const SINK_B: &str = "new_relic:NR account B";

/// The fixture config (`scramble` as given) pointed at `rx`, New Relic the only destination. `retry` is
/// (maxAttempts, initialBackoff, maxBackoff), when a test needs its own.
fn config_for(rx: &NrReceiver, scramble: bool, retry: Option<(u32, &str, &str)>) -> String {
    let mut cfg = fixtures::new_relic_only_config(scramble, &rx.url());
    if let Some((attempts, initial, max)) = retry {
        set(&mut cfg, "sense-ingest.retry.maxAttempts", Yaml::from(attempts));
        set(&mut cfg, "sense-ingest.retry.initialBackoff", Yaml::from(initial));
        set(&mut cfg, "sense-ingest.retry.maxBackoff", Yaml::from(max));
    }
    serde_norway::to_string(&cfg).unwrap()
}

/// The two accounts of the fixture config, with their keys.
fn receiver() -> NrReceiver {
    NrReceiver::start(&[(A, KEY_A), (B, KEY_B)])
}

/// Fixture cases we send (16 is a deliberate deviation: Butler SOS sent `undefined` values, we reject it).
fn cases() -> Vec<Case> {
    fixtures::cases()
        .into_iter()
        .filter(|c| c.name != "16_too_few_fields")
        .collect()
}

fn datagrams(cases: &[Case]) -> Vec<Vec<u8>> {
    cases.iter().map(|c| c.datagram.clone()).collect()
}

/// What Butler SOS posted to `account`, in case order: (case, exact body, body_json).
fn expected(cases: &[Case], scramble: bool, account: &str) -> Vec<(String, String, Value)> {
    let key = if scramble { "scramble_true" } else { "scramble_false" };
    let path = format!("/v1/accounts/{account}/events");
    cases
        .iter()
        .flat_map(|c| {
            c.json["expected"]["newrelic"][key]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r["path"] == path.as_str())
                .map(|r| {
                    (
                        c.name.clone(),
                        r["body"].as_str().unwrap().to_string(),
                        r["body_json"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The event without its `timestamp`, after checking that it is an integer within a day of now (New Relic's
/// window).
fn without_timestamp(ev: &Value, what: &str) -> Value {
    let ts = ev["timestamp"]
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: timestamp is not an integer: {ev}"));
    assert!(
        (ts - now_ms()).abs() < 86_400_000,
        "{what}: timestamp {ts} is not within a day of now"
    );
    let mut ev = ev.clone();
    ev.as_object_mut().unwrap().remove("timestamp");
    ev
}

/// The event without its `timestamp` (Butler SOS's own, from when the fixtures were recorded).
fn without_timestamp_unchecked(ev: &Value) -> Value {
    let mut ev = ev.clone();
    ev.as_object_mut().unwrap().remove("timestamp");
    ev
}

/// Butler SOS's body with its `timestamp` number replaced by ours.
fn with_timestamp(body: &str, ts: i64) -> String {
    let rest = body
        .strip_prefix("{\"timestamp\":")
        .expect("body starts with timestamp");
    let end = rest.find(',').unwrap();
    format!("{{\"timestamp\":{ts}{}", &rest[end..])
}

/// The engine's final summary line (after `terminate`).
fn final_summary(engine: &Engine) -> String {
    wait_for("the final summary line", Duration::from_secs(10), || {
        engine
            .stderr_text()
            .lines()
            .rev()
            .find(|l| l.contains("summary") && l.contains("final"))
            .map(str::to_string)
    })
}

/// `counter` of sink `sink` in a summary line (`<sink>(delivered=1 skipped=0 dropped=0 ...)`).
fn sink_counter(summary: &str, sink: &str, counter: &str) -> u64 {
    let start = summary
        .find(&format!("{sink}("))
        .unwrap_or_else(|| panic!("sink {sink} not in summary: {summary}"));
    let rest = &summary[start + sink.len() + 1..];
    let inner = &rest[..rest.find(')').unwrap()];
    inner
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(counter)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {counter} for {sink} in summary: {summary}"))
}

/// Checks the headers of every accepted POST for `account`.
fn assert_headers(rx: &NrReceiver, account: &str, key: &str) {
    let accepted = rx.accepted(account);
    assert!(!accepted.is_empty(), "nothing accepted for {account}");
    for a in &accepted {
        assert_eq!(a.header("api-key"), Some(key), "account {account}");
        assert_eq!(a.header("content-encoding"), Some("gzip"), "account {account}");
        assert_eq!(a.header("content-type"), Some("application/json"), "account {account}");
        let ua = a.header("user-agent").unwrap_or("");
        assert!(ua.starts_with("sense-ingest/"), "account {account}: user agent {ua:?}");
    }
}

/// Every fixture through the binary: each account gets Butler SOS's events byte for byte (apart from the
/// timestamp value, ours is the receive time), in send order, gzip, with its own key.
fn fixtures_reach_new_relic_exactly_as_butler_sos_sent_them(scramble: bool) {
    let rx = receiver();
    let mut engine = Engine::start_with_yaml(&config_for(&rx, scramble, None));
    let cases = cases();
    send_datagrams(engine.target(), &datagrams(&cases));
    let want_a = expected(&cases, scramble, A);
    let want_b = expected(&cases, scramble, B);
    assert!(want_a.len() >= 18, "fixtures expect only {} events", want_a.len());
    wait_for("every expected event at both accounts", Duration::from_secs(20), || {
        (rx.event_count(A) >= want_a.len() && rx.event_count(B) >= want_b.len()).then_some(())
    });
    let status = engine.terminate();
    assert!(status.success(), "engine exit {status}:\n{}", engine.stderr_text());

    for (account, key, want) in [(A, KEY_A, &want_a), (B, KEY_B, &want_b)] {
        assert_headers(&rx, account, key);
        let got = rx.events(account);
        assert_eq!(got.len(), want.len(), "account {account}: event count");
        for ((case, _, want_json), got_ev) in want.iter().zip(&got) {
            let what = format!("account {account}, case {case}");
            assert_eq!(
                without_timestamp(got_ev, &what),
                without_timestamp_unchecked(want_json),
                "{what}"
            );
        }
        // Byte for byte, key order included: the arrays' contents, concatenated, against Butler SOS's bodies.
        let got_raw: Vec<String> = rx
            .accepted(account)
            .iter()
            .map(|a| a.body.strip_prefix('[').unwrap().strip_suffix(']').unwrap().to_string())
            .collect();
        let want_raw: Vec<String> = want
            .iter()
            .zip(&got)
            .map(|((_, body, _), ev)| with_timestamp(body, ev["timestamp"].as_i64().unwrap()))
            .collect();
        assert_eq!(got_raw.join(","), want_raw.join(","), "account {account}: raw bodies");
    }
    let summary = final_summary(&engine);
    for sink in [SINK_A, SINK_B] {
        assert_eq!(
            sink_counter(&summary, sink, "delivered"),
            want_a.len() as u64,
            "{summary}"
        );
        assert_eq!(sink_counter(&summary, sink, "dropped"), 0, "{summary}");
    }
    assert!(rx.requests().iter().all(|r| r.status == 202), "{:?}", rx.requests());
}

#[test]
fn fixtures_reach_both_accounts_scrambled() {
    fixtures_reach_new_relic_exactly_as_butler_sos_sent_them(true);
}

#[test]
fn fixtures_reach_both_accounts_unscrambled() {
    fixtures_reach_new_relic_exactly_as_butler_sos_sent_them(false);
}

/// Sends the fixtures (one flow, in order); returns how many events each account should get.
fn send_fixtures(engine: &Engine) -> usize {
    let cases = cases();
    send_datagrams(engine.target(), &datagrams(&cases));
    expected(&cases, true, A).len()
}

#[test]
fn a_503_twice_is_retried_and_nothing_is_lost() {
    let rx = receiver();
    rx.script(A, 2, Fault::status(503));
    let mut engine = Engine::start_with_yaml(&config_for(&rx, true, Some((10, "50ms", "1s"))));
    let n = send_fixtures(&engine);
    wait_for("every event at both accounts", Duration::from_secs(20), || {
        (rx.event_count(A) >= n && rx.event_count(B) >= n).then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    let statuses: Vec<u16> = rx.requests_for(A).iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..3], &[503, 503, 202], "{statuses:?}");
    // The same events, in the same order, as the account that never failed.
    assert_eq!(rx.events(A), rx.events(B));
    assert_eq!(rx.event_count(A), n);
    let summary = final_summary(&engine);
    assert!(sink_counter(&summary, SINK_A, "retries") >= 2, "{summary}");
    assert_eq!(sink_counter(&summary, SINK_A, "dropped"), 0, "{summary}");
    assert_eq!(sink_counter(&summary, SINK_A, "delivered"), n as u64, "{summary}");
}

#[test]
fn a_429_waits_for_retry_after_then_delivers() {
    let rx = receiver();
    rx.script(A, 1, Fault::too_many(1));
    // The backoff alone (50 ms) would retry far sooner than the 1 s New Relic asks for.
    let mut engine = Engine::start_with_yaml(&config_for(&rx, true, Some((10, "50ms", "5s"))));
    let n = send_fixtures(&engine);
    wait_for("every event at A", Duration::from_secs(20), || {
        (rx.event_count(A) >= n).then_some(())
    });
    let reqs = rx.requests_for(A);
    assert_eq!(reqs[0].status, 429);
    assert_eq!(reqs[1].status, 202);
    let waited = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}, Retry-After was 1 s"
    );
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    assert_eq!(rx.events(A), rx.events(B));
    let summary = final_summary(&engine);
    assert_eq!(sink_counter(&summary, SINK_A, "dropped"), 0, "{summary}");
    assert!(sink_counter(&summary, SINK_A, "retries") >= 1, "{summary}");
}

#[test]
fn batches_over_one_megabyte_are_split_and_every_event_arrives() {
    const N: usize = 3000;
    let rx = receiver();
    let mut engine = Engine::start_with_yaml(&config_for(&rx, false, None));
    // ~900 bytes of JSON per event (the message is not sent to New Relic, so the long fields are the others):
    // 3000 events are ~2.7 MB, which no single POST may carry.
    let host = "h".repeat(100);
    let dir = "D".repeat(100);
    let origin = "o".repeat(200);
    let datagrams: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let id = format!("u{i:05}{}", "x".repeat(94));
            format!("/qseow-proxy-session/;{host};Start session;{dir};{id};{origin};/hub/;Session started").into_bytes()
        })
        .collect();
    send_datagrams(engine.target(), &datagrams);
    wait_for("every event at both accounts", Duration::from_secs(60), || {
        (rx.event_count(A) >= N && rx.event_count(B) >= N).then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    for account in [A, B] {
        let ids: Vec<String> = rx
            .events(account)
            .iter()
            .map(|e| e["qs_userId"].as_str().unwrap()[..6].to_string())
            .collect();
        let want: Vec<String> = (0..N).map(|i| format!("u{i:05}")).collect();
        assert!(
            ids == want,
            "account {account}: events missing, duplicated or out of order"
        );
        let reqs = rx.requests_for(account);
        let largest = reqs.iter().map(|r| r.json_bytes).max().unwrap();
        assert!(
            largest <= MAX_BODY,
            "account {account}: a request carried {largest} bytes of JSON"
        );
        assert!(reqs.iter().all(|r| r.status == 202), "account {account}: {reqs:?}");
        assert!(
            reqs.len() >= 3,
            "account {account}: {} requests for ~2.7 MB",
            reqs.len()
        );
        assert!(
            reqs.iter().all(|r| r.wire_bytes < r.json_bytes / 2),
            "account {account}: bodies not compressed"
        );
    }
    let summary = final_summary(&engine);
    for sink in [SINK_A, SINK_B] {
        assert_eq!(sink_counter(&summary, sink, "delivered"), N as u64, "{summary}");
        assert_eq!(sink_counter(&summary, sink, "dropped"), 0, "{summary}");
    }
}

#[test]
fn a_wrong_key_for_one_account_drops_only_that_accounts_events() {
    // B's key in the config is not the one New Relic knows: every POST to B is 403.
    let rx = NrReceiver::start(&[(A, KEY_A), (B, "NRII-the-real-key-BBBB")]);
    let mut engine = Engine::start_with_yaml(&config_for(&rx, true, Some((10, "50ms", "1s"))));
    let n = send_fixtures(&engine);
    wait_for("every event at A", Duration::from_secs(20), || {
        (rx.event_count(A) >= n).then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    assert_eq!(rx.event_count(A), n);
    assert_eq!(rx.event_count(B), 0);
    let b_reqs = rx.requests_for(B);
    assert!(
        !b_reqs.is_empty() && b_reqs.iter().all(|r| r.status == 403),
        "{b_reqs:?}"
    );
    let summary = final_summary(&engine);
    assert_eq!(sink_counter(&summary, SINK_A, "delivered"), n as u64, "{summary}");
    assert_eq!(sink_counter(&summary, SINK_A, "dropped"), 0, "{summary}");
    assert_eq!(sink_counter(&summary, SINK_B, "delivered"), 0, "{summary}");
    assert_eq!(sink_counter(&summary, SINK_B, "dropped"), n as u64, "{summary}");
    // 403 is final: no retries, and the loss is logged (with New Relic's message) but never with a key.
    assert_eq!(sink_counter(&summary, SINK_B, "retries"), 0, "{summary}");
    let log = engine.stderr_text();
    assert!(log.contains("403"), "the 403 must be logged:\n{log}");
    for key in [KEY_A, KEY_B, "NRII-the-real-key-BBBB"] {
        assert!(!log.contains(key), "a key appears in the log:\n{log}");
    }
}

#[test]
fn an_account_that_keeps_failing_never_delays_the_other() {
    let rx = receiver();
    rx.fail_always(B, Fault::status(503));
    // Enough attempts that B keeps every event while it is down.
    let mut engine = Engine::start_with_yaml(&config_for(&rx, true, Some((1000, "50ms", "200ms"))));
    let n = send_fixtures(&engine);
    // A gets everything promptly although B's worker is busy retrying.
    wait_for("every event at A while B is down", Duration::from_secs(5), || {
        (rx.event_count(A) >= n).then_some(())
    });
    wait_for("B retrying", Duration::from_secs(5), || {
        (rx.requests_for(B).len() >= 3).then_some(())
    });
    // New events keep flowing to A while B is still down.
    send_fixtures(&engine);
    wait_for("the second round at A while B is down", Duration::from_secs(5), || {
        (rx.event_count(A) >= 2 * n).then_some(())
    });
    assert_eq!(rx.event_count(B), 0);
    assert!(rx.requests_for(B).iter().all(|r| r.status == 503));
    // B recovers and gets everything it was sent, in order.
    rx.heal(B);
    wait_for("every event at B after it recovered", Duration::from_secs(20), || {
        (rx.event_count(B) >= 2 * n).then_some(())
    });
    assert!(engine.terminate().success(), "{}", engine.stderr_text());
    assert_eq!(rx.event_count(A), 2 * n);
    assert_eq!(rx.events(A), rx.events(B));
    let summary = final_summary(&engine);
    for sink in [SINK_A, SINK_B] {
        assert_eq!(sink_counter(&summary, sink, "delivered"), 2 * n as u64, "{summary}");
        assert_eq!(sink_counter(&summary, sink, "dropped"), 0, "{summary}");
    }
    assert_eq!(sink_counter(&summary, SINK_A, "retries"), 0, "{summary}");
    assert!(sink_counter(&summary, SINK_B, "retries") >= 3, "{summary}");
}
