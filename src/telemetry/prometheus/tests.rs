use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::exposition::{fold_senders, fold_sink_senders, Float};
use super::*;
use crate::event::RejectReason;
use crate::telemetry::metrics::{
    now_unix_ms, HostSinkStats, HostStats, HostTally, ReceiveCounters, SinkCounters, SinkOutcome,
};

const NOW_MS: u64 = 1_800_000_000_000;

/// A state with known values: two sinks, one of them with a name that needs escaping and failing for 90 s at
/// the real clock's now.
pub(super) fn state() -> MetricsState {
    state_at(now_unix_ms())
}

/// The same, failing for 90 s at `now_ms`.
fn state_at(now_ms: u64) -> MetricsState {
    let receive = Arc::new(ReceiveCounters::default());
    receive.received.add(24);
    receive.accepted.add(20);
    receive.excluded.add(1);
    receive.reject(RejectReason::UnknownSource);
    receive.reject(RejectReason::UnknownSource);
    receive.reject(RejectReason::TooFewFields);
    receive.invalid_utf8.add(3);
    receive.kernel_drops.set(7);
    receive.channel_full_waits.add(5);
    let (h1, h2): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "::1".parse().unwrap());
    let mut rejected = [0; RejectReason::ALL.len()];
    rejected[RejectReason::UnknownSource.index()] = 2;
    receive.hosts.merge(&[
        (
            h1,
            HostStats {
                received: 16,
                accepted: 15,
                excluded: 1,
                rejected: [0; RejectReason::ALL.len()],
            },
        ),
        (
            h2,
            HostStats {
                received: 8,
                accepted: 5,
                excluded: 0,
                rejected,
            },
        ),
    ]);

    let influx = Arc::new(SinkCounters::default());
    influx.delivered.add(19);
    influx.skipped.add(1);
    influx.batches.add(4);
    influx.retries.add(2);
    influx.values_changed.add(6);
    influx.spooled.set(11);
    influx.spool_damaged_records.add(2);
    let mut t = HostTally::default();
    t.add(h1, 14);
    t.add(h2, 5);
    influx.hosts.add(SinkOutcome::Delivered, &t);
    t.clear();
    t.add(h1, 1);
    influx.hosts.add(SinkOutcome::Skipped, &t);
    influx.hosts.add(SinkOutcome::DroppedSpoolCap, &t);
    influx.hosts.set_spooled(&t);
    let influx = SinkMetrics::new("influxdb", influx, || (3, 64));
    influx.batch_latency.record(Duration::from_millis(3));
    influx.batch_latency.record(Duration::from_millis(40));
    influx.batch_latency.record(Duration::from_secs(100));
    influx.event_latency.record_n(Duration::from_millis(20), 19);

    let nr = Arc::new(SinkCounters::default());
    nr.dropped.add(8);
    let nr = SinkMetrics::new("new_relic:NR \"A\"\\x\ny", nr, || (0, 16));
    nr.failing_since.mark_failed_at(now_ms - 90_000);

    let mut s = MetricsState::new(receive, vec![influx, nr]);
    s.readers_bound.store(true, Ordering::Relaxed);
    *s.backend.lock().unwrap() = "io_uring";
    s.version = "1.2.3";
    s
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn silent_hosts_render_as_a_count_and_one_gauge_per_host_only_when_watched() {
    let mut s = state();
    assert!(!s.render().contains("silent_host"), "no alarm, no claim");
    s.silent_hosts = Some(Arc::new(|| vec!["sense\"1".to_owned(), "sense2".to_owned()]));
    let text = s.render();
    let want = "# HELP sense_ingest_silent_hosts Known Sense hosts that sent no user event for \
                    sense-ingest.silentHostAfter.\n\
                    # TYPE sense_ingest_silent_hosts gauge\n\
                    sense_ingest_silent_hosts 2\n\
                    # HELP sense_ingest_silent_host 1 for each Sense host silent now (absent once it sends again).\n\
                    # TYPE sense_ingest_silent_host gauge\n\
                    sense_ingest_silent_host{sense_host=\"sense\\\"1\"} 1\n\
                    sense_ingest_silent_host{sense_host=\"sense2\"} 1\n";
    assert!(text.ends_with(want), "{text}");
    s.silent_hosts = Some(Arc::new(Vec::new));
    let text = s.render();
    assert!(
        text.contains("\nsense_ingest_silent_hosts 0\n") && !text.contains("silent_host{"),
        "{text}"
    );
}

#[test]
fn receive_counters_render_exactly() {
    let text = state().render();
    let want = "# HELP sense_ingest_datagrams_received_total Datagrams read from the user-event sockets.\n\
                    # TYPE sense_ingest_datagrams_received_total counter\n\
                    sense_ingest_datagrams_received_total 24\n";
    assert!(text.starts_with(want), "{text}");
    let l = lines(&text);
    for want in [
        "sense_ingest_events_accepted_total 20",
        "sense_ingest_events_excluded_total 1",
        r#"sense_ingest_datagrams_rejected_total{reason="unknown_source"} 2"#,
        r#"sense_ingest_datagrams_rejected_total{reason="too_few_fields"} 1"#,
        r#"sense_ingest_datagrams_rejected_total{reason="over_size"} 0"#,
        r#"sense_ingest_datagrams_rejected_total{reason="disallowed_source"} 0"#,
        r#"sense_ingest_datagrams_rejected_total{reason="rate_limited"} 0"#,
        "sense_ingest_invalid_utf8_total 3",
        "sense_ingest_kernel_drops_total 7",
        "sense_ingest_channel_full_waits_total 5",
        "sense_ingest_readers_bound 1",
        r#"sense_ingest_reader_backend{backend="io_uring"} 1"#,
        r#"sense_ingest_build_info{version="1.2.3"} 1"#,
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{text}");
    }
    let rejected = l
        .iter()
        .filter(|l| l.starts_with("sense_ingest_datagrams_rejected_total{"))
        .count();
    assert_eq!(rejected, RejectReason::ALL.len());
}

#[test]
fn per_sender_metrics_render_by_host_and_destination() {
    let text = state().render();
    let l = lines(&text);
    for want in [
        r#"sense_ingest_sender_datagrams_received_total{sender="127.0.0.1"} 16"#,
        r#"sense_ingest_sender_datagrams_received_total{sender="::1"} 8"#,
        r#"sense_ingest_sender_events_accepted_total{sender="::1"} 5"#,
        r#"sense_ingest_sender_events_excluded_total{sender="127.0.0.1"} 1"#,
        r#"sense_ingest_sender_datagrams_rejected_total{sender="::1",reason="unknown_source"} 2"#,
        r#"sense_ingest_sender_events_delivered_total{sender="127.0.0.1",destination="influxdb"} 14"#,
        r#"sense_ingest_sender_events_delivered_total{sender="::1",destination="influxdb"} 5"#,
        r#"sense_ingest_sender_events_skipped_total{sender="127.0.0.1",destination="influxdb"} 1"#,
        r#"sense_ingest_sender_events_dropped_total{sender="127.0.0.1",destination="influxdb"} 1"#,
        r#"sense_ingest_sender_events_dropped_spool_cap_total{sender="127.0.0.1",destination="influxdb"} 1"#,
        r#"sense_ingest_sender_spooled_events{sender="127.0.0.1",destination="influxdb"} 1"#,
        r#"sense_ingest_sender_spooled_events{sender="::1",destination="influxdb"} 0"#,
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{text}");
    }
    assert!(
        !text.contains(r#"host="127.0.0.1",reason="#),
        "zero reject reasons are left out: {text}"
    );
    assert!(
        !l.iter()
            .any(|l| l.starts_with("sense_ingest_sender_") && l.contains("new_relic")),
        "a destination without per-sender counts has no per-sender samples: {text}"
    );
}

#[test]
fn sink_metrics_render_exactly_with_escaped_sink_names() {
    let text = state().render();
    let l = lines(&text);
    let nr = r#"destination="new_relic:NR \"A\"\\x\ny""#;
    for want in [
        r#"sense_ingest_sink_events_delivered_total{destination="influxdb"} 19"#.to_string(),
        format!("sense_ingest_sink_events_delivered_total{{{nr}}} 0"),
        r#"sense_ingest_sink_events_skipped_total{destination="influxdb"} 1"#.to_string(),
        format!("sense_ingest_sink_events_dropped_total{{{nr}}} 8"),
        r#"sense_ingest_sink_retries_total{destination="influxdb"} 2"#.to_string(),
        r#"sense_ingest_sink_batches_total{destination="influxdb"} 4"#.to_string(),
        r#"sense_ingest_sink_values_changed_total{destination="influxdb"} 6"#.to_string(),
        r#"sense_ingest_sink_spooled_events{destination="influxdb"} 11"#.to_string(),
        r#"sense_ingest_sink_spool_damaged_records_total{destination="influxdb"} 2"#.to_string(),
        format!("sense_ingest_sink_spool_damaged_records_total{{{nr}}} 0"),
        r#"sense_ingest_sink_queue_depth{destination="influxdb"} 3"#.to_string(),
        r#"sense_ingest_sink_queue_capacity{destination="influxdb"} 64"#.to_string(),
        format!("sense_ingest_sink_queue_capacity{{{nr}}} 16"),
        r#"sense_ingest_sink_failing_seconds{destination="influxdb"} 0"#.to_string(),
        r#"sense_ingest_sink_batch_latency_seconds_bucket{destination="influxdb",le="0.0005"} 0"#.to_string(),
        r#"sense_ingest_sink_batch_latency_seconds_bucket{destination="influxdb",le="0.005"} 1"#.to_string(),
        r#"sense_ingest_sink_batch_latency_seconds_bucket{destination="influxdb",le="0.05"} 2"#.to_string(),
        r#"sense_ingest_sink_batch_latency_seconds_bucket{destination="influxdb",le="60"} 2"#.to_string(),
        r#"sense_ingest_sink_batch_latency_seconds_bucket{destination="influxdb",le="+Inf"} 3"#.to_string(),
        r#"sense_ingest_sink_batch_latency_seconds_sum{destination="influxdb"} 100.043"#.to_string(),
        r#"sense_ingest_sink_batch_latency_seconds_count{destination="influxdb"} 3"#.to_string(),
        r#"sense_ingest_event_latency_seconds_bucket{destination="influxdb",le="0.01"} 0"#.to_string(),
        r#"sense_ingest_event_latency_seconds_bucket{destination="influxdb",le="0.025"} 19"#.to_string(),
        r#"sense_ingest_event_latency_seconds_count{destination="influxdb"} 19"#.to_string(),
        format!("sense_ingest_event_latency_seconds_count{{{nr}}} 0"),
    ] {
        assert!(l.contains(&want.as_str()), "missing {want:?} in\n{text}");
    }
    let failing = l
        .iter()
        .find_map(|l| l.strip_prefix(&format!("sense_ingest_sink_failing_seconds{{{nr}}} ")))
        .expect("failing seconds of the failing sink");
    assert!(failing.parse::<f64>().unwrap() >= 90.0, "{failing}");
    assert!(
        text.contains("# TYPE sense_ingest_sink_batch_latency_seconds histogram\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE sense_ingest_sink_spooled_events gauge\n"),
        "{text}"
    );
}

/// One parsed sample line.
#[derive(Debug)]
pub(super) struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `name{k="v",...} value` strictly (exposition format 0.0.4), unescaping label values.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let (series, value) = line.rsplit_once(' ').ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    let (name, mut rest) = match series.find('{') {
        Some(i) => (&series[..i], &series[i + 1..]),
        None => (series, ""),
    };
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = Vec::new();
    if series.contains('{') {
        rest = rest.strip_suffix('}').ok_or("labels not closed")?;
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").ok_or("label without =\"")?;
            if !is_metric_name(key) || key.contains(':') {
                return Err(format!("bad label name {key:?}"));
            }
            let mut val = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().ok_or("label value not closed")? {
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => val.push('\\'),
                        '"' => val.push('"'),
                        'n' => val.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (i, '"') => break i,
                    (_, '\n') => return Err("raw newline in label value".into()),
                    (_, c) => val.push(c),
                }
            };
            labels.push((key.to_string(), val));
            rest = &after[end + 1..];
            rest = match rest.strip_prefix(',') {
                Some(r) if !r.is_empty() => r,
                Some(_) => return Err("trailing comma".into()),
                None if rest.is_empty() => rest,
                None => return Err(format!("junk after label: {rest:?}")),
            };
        }
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Checks the whole exposition: HELP then TYPE before a family's samples, each family declared once and its
/// samples contiguous, every sample line parseable, no series twice; histograms cumulative with
/// `+Inf == _count`. Returns the samples.
pub(super) fn check_exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "the exposition must end with a newline");
    let mut declared: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has text");
            assert!(is_metric_name(name) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_string()), "HELP twice for {name}");
            current = None;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                declared.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice: {name}"
            );
            current = Some(name.to_string());
        } else {
            let s = parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            let family = current
                .as_deref()
                .unwrap_or_else(|| panic!("sample outside a family: {line}"));
            let base = if declared[family] == "histogram" {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| s.name.strip_suffix(suffix))
                    .unwrap_or_else(|| panic!("histogram sample without suffix: {line}"))
            } else {
                s.name.as_str()
            };
            assert_eq!(base, family, "sample not under its own family: {line}");
            if declared[family] == "counter" {
                assert!(s.name.ends_with("_total"), "counter without _total: {line}");
            }
            assert!(
                series.insert(format!("{}{:?}", s.name, s.labels)),
                "series twice: {line}"
            );
            samples.push(s);
        }
    }
    // Histograms: per sink, buckets cumulative, ending at +Inf == _count.
    for (family, _) in declared.iter().filter(|(_, k)| *k == "histogram") {
        let sinks: HashSet<&str> = samples
            .iter()
            .filter(|s| s.name == format!("{family}_count"))
            .map(|s| s.labels[0].1.as_str())
            .collect();
        for sink in sinks {
            let of = |suffix: &'static str| {
                let name = format!("{family}{suffix}");
                samples.iter().filter(move |s| s.name == name && s.labels[0].1 == sink)
            };
            let buckets: Vec<&Sample> = of("_bucket").collect();
            assert!(
                buckets.windows(2).all(|w| w[0].value <= w[1].value),
                "{family} {sink} not cumulative"
            );
            let les: Vec<f64> = buckets
                .iter()
                .map(|b| {
                    assert_eq!(b.labels[1].0, "le");
                    if b.labels[1].1 == "+Inf" {
                        f64::INFINITY
                    } else {
                        b.labels[1].1.parse().unwrap()
                    }
                })
                .collect();
            assert!(les.windows(2).all(|w| w[0] < w[1]), "{family} {sink}: le must increase");
            assert_eq!(les.last(), Some(&f64::INFINITY), "{family} {sink}: last bucket is +Inf");
            let count = of("_count").next().unwrap().value;
            assert_eq!(buckets.last().unwrap().value, count, "{family} {sink}: +Inf != _count");
            assert_eq!(of("_sum").count(), 1);
        }
    }
    samples
}

#[test]
fn the_whole_exposition_is_well_formed() {
    let samples = check_exposition(&state().render());
    // 2 sinks x 2 histograms x (17 buckets + sum + count).
    let histogram_samples = samples.iter().filter(|s| s.name.contains("latency_seconds")).count();
    assert_eq!(histogram_samples, 2 * 2 * 19);
    let escaped = samples
        .iter()
        .find(|s| s.name == "sense_ingest_sink_events_dropped_total" && s.value == 8.0)
        .unwrap();
    assert_eq!(
        escaped.labels,
        [("destination".to_string(), "new_relic:NR \"A\"\\x\ny".to_string())]
    );
}

#[test]
fn a_state_without_sinks_or_backend_is_well_formed_too() {
    let s = MetricsState::new(Arc::new(ReceiveCounters::default()), Vec::new());
    let text = s.render();
    check_exposition(&text);
    assert!(text.contains("\nsense_ingest_readers_bound 0\n"), "{text}");
    assert!(!text.contains("sense_ingest_reader_backend{"), "{text}");
    assert!(
        text.contains(&format!(
            "sense_ingest_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape_label_value("plain"), "plain");
    assert!(matches!(escape_label_value("plain"), Cow::Borrowed(_)));
    assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
    assert_eq!(escape_label_value("l1\nl2"), r"l1\nl2");
}

#[test]
fn floats_render_in_exposition_syntax() {
    assert_eq!(Float(0.0005).to_string(), "0.0005");
    assert_eq!(Float(1.0).to_string(), "1");
    assert_eq!(Float(f64::INFINITY).to_string(), "+Inf");
    assert_eq!(Float(f64::NEG_INFINITY).to_string(), "-Inf");
    assert_eq!(Float(f64::NAN).to_string(), "NaN");
}

#[test]
fn health_is_ok_when_readers_are_bound_and_no_sink_fails_too_long() {
    let s = state_at(NOW_MS); // new_relic has been failing for 90 s
    assert_eq!(s.health_at(Duration::from_secs(120), NOW_MS), (200, "ok".to_string()));
    s.sinks[1].failing_since.mark_ok();
    assert_eq!(s.health_at(Duration::ZERO, NOW_MS), (200, "ok".to_string()));
}

#[test]
fn health_names_each_sink_failing_too_long_and_for_how_long() {
    let s = state_at(NOW_MS);
    s.sinks[0].failing_since.mark_failed_at(NOW_MS - 400_000);
    let (status, text) = s.health_at(Duration::from_secs(60), NOW_MS);
    assert_eq!(status, 503);
    assert_eq!(
        text,
        "unhealthy: sink influxdb failing for 400s; sink new_relic:NR \"A\"\\x\ny failing for 90s"
    );
    let (status, text) = s.health_at(Duration::from_secs(100), NOW_MS);
    assert_eq!(
        (status, text.as_str()),
        (503, "unhealthy: sink influxdb failing for 400s")
    );
}

#[test]
fn health_fails_while_readers_are_not_bound() {
    let s = state_at(NOW_MS);
    s.readers_bound.store(false, Ordering::Relaxed);
    assert_eq!(
        s.health_at(Duration::from_secs(3600), NOW_MS),
        (503, "unhealthy: readers not bound".to_string())
    );
}

#[test]
fn senders_refused_by_allowed_sources_and_beyond_the_cap_are_summed_as_other() {
    let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
    let stats = |received: u64, refused: u64| {
        let mut h = HostStats {
            received,
            accepted: received - refused,
            ..HostStats::default()
        };
        h.rejected[RejectReason::DisallowedSource.index()] = refused;
        h
    };
    let mut hosts: Vec<_> = (0..MAX_EXPOSED_SENDERS as u32 + 2)
        .map(|i| (ip(i), stats(1000 - u64::from(i), 0)))
        .collect();
    hosts.push((ip(9999), stats(5000, 5000))); // a port scanner refused by allowedSources: busiest, but folded
    hosts.push(("0.0.0.0".parse().unwrap(), stats(3, 0))); // beyond the tracking cap
    let (shown, exposed) = fold_senders(hosts);
    assert_eq!(shown.len(), MAX_EXPOSED_SENDERS + 1);
    assert_eq!(exposed.len(), MAX_EXPOSED_SENDERS);
    let (name, other) = shown.last().unwrap();
    assert_eq!(name, "other");
    // The two least busy admitted senders, the scanner and the overflow.
    let folded_received = (1000 - MAX_EXPOSED_SENDERS as u64) + (1000 - MAX_EXPOSED_SENDERS as u64 - 1) + 5000 + 3;
    assert_eq!(other.received, folded_received);
    assert!(!exposed.contains(&ip(9999)));

    let sink = vec![
        (
            ip(0),
            HostSinkStats {
                delivered: 7,
                ..HostSinkStats::default()
            },
        ),
        (
            ip(9999),
            HostSinkStats {
                delivered: 2,
                ..HostSinkStats::default()
            },
        ),
    ];
    let folded = fold_sink_senders(sink, &exposed);
    assert_eq!(folded.len(), 2);
    assert_eq!((folded[0].0.as_str(), folded[0].1.delivered), ("10.0.0.0", 7));
    assert_eq!((folded[1].0.as_str(), folded[1].1.delivered), ("other", 2));
}
