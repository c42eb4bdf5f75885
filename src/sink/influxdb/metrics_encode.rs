//! Line protocol for Butler SOS's own measurements: event counts (`qlikSenseEvents.eventCount`) and user-event
//! queue metrics (`userEvents.udpServerConfig.queueMetrics`). Pure: the caller passes the values and the clock.
//!
//! # Layout, per InfluxDB version (Butler SOS `src/lib/influxdb/v1|v2|v3/event-counts.js` and `queue-metrics.js`)
//! - **Event counts**: measurement `eventCount.influxdb.measurementName`, one point per (source, host,
//!   subsystem) with tags `event_type=user`, `source`, `host`, `subsystem`, then the config tags, and one field
//!   `counter`.
//! - **Queue metrics**: measurement `queueMetrics.influxdb.measurementName`, one point with tags
//!   `queue_type=user_events` and `host` (the machine the receiver runs on), then the config tags, and the fields
//!   of [`QueueSample`].
//! - Config tags are added after the built-in ones; one with the name of a built-in tag replaces its value (a
//!   JavaScript object assignment), a later one of the same name wins.
//! - **v1** (node-influx `writePoints`, no schema for these measurements in Butler SOS's `globals.js`): tags in
//!   that insertion order; fields sorted by key (node-influx's `coerceBadly`), every number written as JavaScript's
//!   `String(n)` with **no `i` suffix**, so InfluxDB 1.x stores `counter` and every queue field as a **float**.
//!   We write the same, so a database Butler SOS has written keeps one field type.
//! - **v2** (`@influxdata/influxdb-client` `Point`): tags and fields sorted by key; `counter` and the integer queue
//!   fields with `intField` (`5i`), `queue_utilization_pct` and `processing_time_*_ms` with `floatField`.
//! - **v3** (`@influxdata/influxdb3-client` `Point`): as v2 (`setIntegerField`, `setFloatField`). Butler SOS also
//!   sets a `butler_sos_instance` tag on event counts from `globals.options.instanceTag`, an option its command
//!   line does not define, so the value is `undefined` and the client leaves the tag out: we write no such tag.
//! - A tag whose value is empty is left out (the JavaScript clients skip it; line protocol cannot carry it).
//!   Trailing backslashes are removed from tag values (InfluxDB cannot store a tag value ending in `\`).
//! - Every line carries the write time in ns (Butler SOS sends none; the server or client stamps the write time).

use crate::config::{InfluxVersion, Tag};
use crate::sink::influxdb::line_protocol::{escape_measurement, LineWriter};
use crate::telemetry::event_counts::EventCountKey;

/// The `queue_type` tag of user-event queue metrics.
pub const QUEUE_TYPE: &str = "user_events";

/// One queue-metrics point: Butler SOS's `getMetrics()` mapped onto sense-ingest (README "Butler SOS metrics").
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueSample {
    /// `queue_size`: slabs waiting in the fullest destination channel.
    pub queue_size: u64,
    /// `queue_max_size`: slabs a destination channel holds (`sense-ingest.channelCapacity`).
    pub queue_max_size: u64,
    /// `queue_pending`: events waiting in the destinations' disk spools.
    pub queue_pending: u64,
    /// `messages_received`: datagrams read (minus disallowed sources) plus kernel drops.
    pub messages_received: u64,
    /// `messages_queued`: datagrams that reached the parser.
    pub messages_queued: u64,
    /// `messages_processed`: events parsed (accepted or excluded).
    pub messages_processed: u64,
    /// `messages_failed`: datagrams the parser rejected (`unknown_source`, `too_few_fields`).
    pub messages_failed: u64,
    /// `messages_dropped_rate_limit`: `rate_limited` rejects.
    pub messages_dropped_rate_limit: u64,
    /// `messages_dropped_queue_full`: datagrams the kernel dropped on our sockets (receive buffer full).
    pub messages_dropped_queue_full: u64,
    /// `messages_dropped_size`: `over_size` rejects.
    pub messages_dropped_size: u64,
    /// `processing_time_avg_ms`: mean receive → acknowledgement latency of delivered events.
    pub processing_time_avg_ms: f64,
    /// `processing_time_p95_ms`: upper bound of the latency bucket holding the 95th percentile.
    pub processing_time_p95_ms: f64,
    /// `processing_time_max_ms`: upper bound of the highest non-empty latency bucket.
    pub processing_time_max_ms: f64,
    /// `rate_limit_current`: the busiest sender's rate in its current minute (messages per minute).
    pub rate_limit_current: u64,
    /// `backpressure_active`: a destination channel is at least `backpressureThreshold` % full.
    pub backpressure_active: bool,
}

impl QueueSample {
    /// `messages_dropped_total`: the three drop counts added up (as Butler SOS's counter is).
    pub fn messages_dropped_total(&self) -> u64 {
        self.messages_dropped_rate_limit + self.messages_dropped_queue_full + self.messages_dropped_size
    }

    /// `queue_utilization_pct`: `queue_size / queue_max_size * 100` (0 when the maximum is 0).
    pub fn queue_utilization_pct(&self) -> f64 {
        if self.queue_max_size == 0 {
            0.0
        } else {
            self.queue_size as f64 / self.queue_max_size as f64 * 100.0
        }
    }
}

/// A field value and whether v2/v3 write it as an integer.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

/// Writes Butler SOS's measurements for one InfluxDB version, with the config tags prepared once.
#[derive(Debug, Clone)]
pub struct MetricsEncoder {
    version: InfluxVersion,
    measurement: Box<[u8]>,
    tags: Vec<Tag>,
}

impl MetricsEncoder {
    /// An encoder writing `measurement` with the config `tags` for `version`.
    pub fn new(version: InfluxVersion, measurement: &str, tags: &[Tag]) -> MetricsEncoder {
        let mut escaped = Vec::with_capacity(measurement.len());
        escape_measurement(&mut escaped, measurement);
        MetricsEncoder {
            version,
            measurement: escaped.into(),
            tags: tags.to_vec(),
        }
    }

    /// Appends one event-count line per entry of `counts` (`\n`-terminated), stamped `ts_ns`.
    pub fn event_counts(&self, counts: &[(EventCountKey, u64)], ts_ns: u64, out: &mut Vec<u8>) {
        for (key, n) in counts {
            let tags = [
                ("event_type", "user"),
                ("source", key.source.as_str()),
                ("host", key.host.as_str()),
                ("subsystem", key.subsystem.as_str()),
            ];
            self.line(&tags, &[("counter", Value::Int(*n))], ts_ns, out);
        }
    }

    /// Appends the queue-metrics line for `sample`, tagged with the receiver's `host`, stamped `ts_ns`.
    pub fn queue_metrics(&self, host: &str, sample: &QueueSample, ts_ns: u64, out: &mut Vec<u8>) {
        let s = sample;
        // Sorted by key, as every client Butler SOS uses writes them.
        let fields = [
            ("backpressure_active", Value::Int(u64::from(s.backpressure_active))),
            ("messages_dropped_queue_full", Value::Int(s.messages_dropped_queue_full)),
            ("messages_dropped_rate_limit", Value::Int(s.messages_dropped_rate_limit)),
            ("messages_dropped_size", Value::Int(s.messages_dropped_size)),
            ("messages_dropped_total", Value::Int(s.messages_dropped_total())),
            ("messages_failed", Value::Int(s.messages_failed)),
            ("messages_processed", Value::Int(s.messages_processed)),
            ("messages_queued", Value::Int(s.messages_queued)),
            ("messages_received", Value::Int(s.messages_received)),
            ("processing_time_avg_ms", Value::Float(s.processing_time_avg_ms)),
            ("processing_time_max_ms", Value::Float(s.processing_time_max_ms)),
            ("processing_time_p95_ms", Value::Float(s.processing_time_p95_ms)),
            ("queue_max_size", Value::Int(s.queue_max_size)),
            ("queue_pending", Value::Int(s.queue_pending)),
            ("queue_size", Value::Int(s.queue_size)),
            ("queue_utilization_pct", Value::Float(s.queue_utilization_pct())),
            ("rate_limit_current", Value::Int(s.rate_limit_current)),
        ];
        self.line(&[("queue_type", QUEUE_TYPE), ("host", host)], &fields, ts_ns, out);
    }

    /// One line: built-in `tags` (in Butler SOS's insertion order), the config tags, `fields` (sorted by key).
    fn line(&self, builtin: &[(&str, &str)], fields: &[(&str, Value)], ts_ns: u64, out: &mut Vec<u8>) {
        // JavaScript object semantics: a config tag overrides a built-in one in place, or is appended.
        let mut tags: Vec<(&str, &str)> = builtin.to_vec();
        for t in &self.tags {
            match tags.iter_mut().find(|(name, _)| *name == t.name) {
                Some(slot) => slot.1 = &t.value,
                None => tags.push((&t.name, &t.value)),
            }
        }
        if self.version != InfluxVersion::V1 {
            // The JavaScript clients sort tag keys with the default sort (UTF-16 code units).
            tags.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
        }
        let mut w = LineWriter::new(out, self.version, &self.measurement);
        for (name, value) in tags {
            w.tag(name, value);
        }
        for (name, value) in fields {
            match (value, self.version) {
                (Value::Int(n), InfluxVersion::V1) => w.field_int_as_float(name, *n),
                (Value::Int(n), _) => w.field_int(name, *n),
                (Value::Float(f), _) => w.field_float(name, *f),
            }
        }
        w.finish(ts_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::event_counts::CountedSource;

    fn tag(name: &str, value: &str) -> Tag {
        Tag {
            name: name.into(),
            value: value.into(),
        }
    }

    fn counts() -> Vec<(EventCountKey, u64)> {
        vec![
            (
                EventCountKey {
                    source: CountedSource::Session,
                    host: "sense1".into(),
                    subsystem: "AppAccess".into(),
                },
                3,
            ),
            (
                EventCountKey {
                    source: CountedSource::Unknown,
                    host: "Unknown".into(),
                    subsystem: "Unknown".into(),
                },
                1,
            ),
        ]
    }

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn v1_event_counts_keep_butler_sos_tag_order_and_write_a_plain_number() {
        let e = MetricsEncoder::new(InfluxVersion::V1, "event_count", &[tag("env", "DEV"), tag("host", "x")]);
        let mut out = Vec::new();
        e.event_counts(&counts(), 7, &mut out);
        assert_eq!(
            text(&out),
            "event_count,event_type=user,source=qseow-proxy-session,host=x,subsystem=AppAccess,env=DEV counter=3 7\n\
             event_count,event_type=user,source=Unknown,host=x,subsystem=Unknown,env=DEV counter=1 7\n"
        );
    }

    #[test]
    fn v2_and_v3_event_counts_sort_tags_and_write_integers() {
        for version in [InfluxVersion::V2, InfluxVersion::V3] {
            let e = MetricsEncoder::new(version, "event count", &[tag("env", "DEV"), tag("Zone", "a")]);
            let mut out = Vec::new();
            e.event_counts(&counts()[..1], 7, &mut out);
            assert_eq!(
                text(&out),
                "event\\ count,Zone=a,env=DEV,event_type=user,host=sense1,source=qseow-proxy-session,\
                 subsystem=AppAccess counter=3i 7\n",
                "{version:?}"
            );
        }
    }

    #[test]
    fn tag_values_are_escaped_per_version_and_empty_ones_left_out() {
        let c = vec![(
            EventCountKey {
                source: CountedSource::Session,
                host: "a b,c=d\\e\\".into(),
                subsystem: "Hub".into(),
            },
            1,
        )];
        let tags = [tag("empty", ""), tag("k", "v")];
        let mut out = Vec::new();
        MetricsEncoder::new(InfluxVersion::V1, "m", &tags).event_counts(&c, 1, &mut out);
        assert_eq!(
            text(&out),
            "m,event_type=user,source=qseow-proxy-session,host=a\\ b\\,c\\=d\\e,subsystem=Hub,k=v counter=1 1\n"
        );
        out.clear();
        MetricsEncoder::new(InfluxVersion::V3, "m", &tags).event_counts(&c, 1, &mut out);
        assert_eq!(
            text(&out),
            "m,event_type=user,host=a\\ b\\,c\\=d\\\\e,k=v,source=qseow-proxy-session,subsystem=Hub counter=1i 1\n"
        );
    }

    fn sample() -> QueueSample {
        QueueSample {
            queue_size: 3,
            queue_max_size: 128,
            queue_pending: 0,
            messages_received: 12,
            messages_queued: 10,
            messages_processed: 9,
            messages_failed: 1,
            messages_dropped_rate_limit: 1,
            messages_dropped_queue_full: 0,
            messages_dropped_size: 1,
            processing_time_avg_ms: 2.5,
            processing_time_p95_ms: 5.0,
            processing_time_max_ms: 10.0,
            rate_limit_current: 42,
            backpressure_active: false,
        }
    }

    #[test]
    fn v1_queue_metrics_are_plain_numbers_sorted_by_field() {
        let e = MetricsEncoder::new(InfluxVersion::V1, "user_events_queue", &[tag("env", "DEV")]);
        let mut out = Vec::new();
        e.queue_metrics("ingest1", &sample(), 9, &mut out);
        assert_eq!(
            text(&out),
            "user_events_queue,queue_type=user_events,host=ingest1,env=DEV backpressure_active=0,\
             messages_dropped_queue_full=0,messages_dropped_rate_limit=1,messages_dropped_size=1,\
             messages_dropped_total=2,messages_failed=1,messages_processed=9,messages_queued=10,\
             messages_received=12,processing_time_avg_ms=2.5,processing_time_max_ms=10,processing_time_p95_ms=5,\
             queue_max_size=128,queue_pending=0,queue_size=3,queue_utilization_pct=2.34375,rate_limit_current=42 9\n"
        );
    }

    #[test]
    fn v2_queue_metrics_mark_integer_fields() {
        let e = MetricsEncoder::new(InfluxVersion::V2, "user_events_queue", &[]);
        let mut out = Vec::new();
        let s = QueueSample {
            backpressure_active: true,
            ..sample()
        };
        e.queue_metrics("ingest1", &s, 9, &mut out);
        assert_eq!(
            text(&out),
            "user_events_queue,host=ingest1,queue_type=user_events backpressure_active=1i,\
             messages_dropped_queue_full=0i,messages_dropped_rate_limit=1i,messages_dropped_size=1i,\
             messages_dropped_total=2i,messages_failed=1i,messages_processed=9i,messages_queued=10i,\
             messages_received=12i,processing_time_avg_ms=2.5,processing_time_max_ms=10,processing_time_p95_ms=5,\
             queue_max_size=128i,queue_pending=0i,queue_size=3i,queue_utilization_pct=2.34375,\
             rate_limit_current=42i 9\n"
        );
    }
}
