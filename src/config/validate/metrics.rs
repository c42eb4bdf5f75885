//! Butler SOS's own measurements and endpoints: `prometheus` and `qlikSenseEvents` (event counts).

use std::time::Duration;

use super::keys::{
    EVENT_COUNT_INFLUX_KEYS, EVENT_COUNT_KEYS, EVENT_COUNT_NEEDED, PROMETHEUS_KEYS, QSE_INFLUX_KEYS, QSE_KEYS,
    REJECTED_COUNT_INFLUX_KEYS, REJECTED_COUNT_KEYS,
};
use super::shared::{measurement_name, tag_list, write_frequency};
use super::walk::{Node, Report};
use crate::config::{MetricsWriteConfig, PrometheusConfig};

/// `Butler-SOS.prometheus`. Defaults: `enable` false, `host` 0.0.0.0, `port` 9842. Enabling it is reported as not
/// implemented.
pub(super) fn prometheus_config(node: &Node<'_>, rep: &mut Report) -> PrometheusConfig {
    let m = node.mapping(rep, PROMETHEUS_KEYS);
    let enable = m.get("enable").bool_or(rep, false);
    let host = m.get("host").text_or(rep, "0.0.0.0");
    // Port 0 picks a free port (tests); the bound address is logged.
    let port = m.get("port").port(rep, true).unwrap_or(9842);
    PrometheusConfig { enable, host, port }
}

/// `Butler-SOS.qlikSenseEvents`: the event counts, `Some` when they are written (`in_use`: `influxdbConfig.enable`,
/// `influxdb.enable` and `eventCount.enable` all true). Then `influxdb.writeFrequency` and
/// `eventCount.influxdb.measurementName` are required (Butler SOS's schema requires both, with no default).
/// `rejectedEventCount` is about log events: checked, no effect here.
pub(super) fn qlik_sense_events(node: &Node<'_>, in_use: bool, rep: &mut Report) -> Option<MetricsWriteConfig> {
    let m = node.mapping(rep, QSE_KEYS);
    let influx = m.get("influxdb").mapping(rep, QSE_INFLUX_KEYS);
    influx.get("enable").bool_or(rep, false);
    let frequency_node = influx.get("writeFrequency");
    let frequency = write_frequency(&frequency_node, rep);
    if in_use && !frequency_node.is_set() {
        rep.error(&frequency_node.path, format!("missing ({EVENT_COUNT_NEEDED})"));
    }

    let count = m.get("eventCount").mapping(rep, EVENT_COUNT_KEYS);
    count.get("enable").bool_or(rep, false);
    let count_influx = count.get("influxdb").mapping(rep, EVENT_COUNT_INFLUX_KEYS);
    let measurement = measurement_name(
        &count_influx.get("measurementName"),
        in_use.then_some(EVENT_COUNT_NEEDED),
        rep,
    );
    let tags = tag_list(&count_influx.get("tags"), rep);

    let rejected = m.get("rejectedEventCount").mapping(rep, REJECTED_COUNT_KEYS);
    rejected.get("enable").bool_or(rep, false);
    rejected
        .get("influxdb")
        .mapping(rep, REJECTED_COUNT_INFLUX_KEYS)
        .get("measurementName")
        .text(rep);

    match (in_use, frequency, measurement) {
        (true, Some(frequency), Some(measurement)) => Some(MetricsWriteConfig {
            write_frequency: Duration::from_millis(frequency),
            measurement,
            tags,
        }),
        _ => None,
    }
}
