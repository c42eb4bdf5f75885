//! The destinations' connection sections: `influxdbConfig`, `mqttConfig` and `newRelic`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::formats::{is_header_name, is_hostname, is_influxql_duration, parse_duration, RETENTION_UNITS};
use super::keys::{
    AUTH_NEEDED, INFLUX_KEYS, INFLUX_V1_AUTH_KEYS, INFLUX_V1_KEYS, INFLUX_V1_RP_KEYS, INFLUX_V2_KEYS, INFLUX_V3_KEYS,
    MQTT_KEYS, MQTT_NEEDED, MQTT_TLS_KEYS, NEW_RELIC_EVENT_KEYS, NEW_RELIC_KEYS, NEW_RELIC_NEEDED,
};
use super::shared::{read_ca_file, tag_items};
use super::walk::{describe, join, Node, Report};
use crate::config::{
    HttpTls, InfluxConfig, InfluxV1Config, InfluxV2Config, InfluxV3Config, InfluxVersion, MqttConfig, MqttTls,
    NewRelicConfig,
};

/// `Butler-SOS.influxdbConfig`. Defaults: `enable` false, `port` 8086, `version` 1, `maxBatchSize` 1000
/// (1-10000), `v3Config.writeTimeout` 10000 ms (at least 1000). When `in_use`, `host` and the chosen version's
/// settings are required (v1: `dbName`, `retentionPolicy.name`/`duration`; v2: `org`, `bucket`, `token`; v3:
/// `database`, `token`).
pub(super) fn influx_config(node: &Node<'_>, needed: Option<&str>, rep: &mut Report) -> InfluxConfig {
    let m = node.mapping(rep, INFLUX_KEYS);
    let enable = m.get("enable").bool_or(rep, false);
    let host_node = m.get("host");
    let host = host_node.needed_text(rep, needed);
    // A switched-off section is checked for types only: Butler SOS's template holds placeholders there.
    if needed.is_some()
        && !host.trim().is_empty()
        && host.trim().parse::<IpAddr>().is_err()
        && !is_hostname(host.trim())
    {
        rep.error(
            &host_node.path,
            format!("expected an ip address or hostname, got {host:?}"),
        );
    }
    let port = m.get("port").port(rep, false).unwrap_or(8086);
    let version_node = m.get("version");
    let version = match version_node.present() {
        None => InfluxVersion::V1,
        Some(value) => match version_node.integer() {
            Some(1) => InfluxVersion::V1,
            Some(2) => InfluxVersion::V2,
            Some(3) => InfluxVersion::V3,
            _ => {
                rep.error(
                    &version_node.path,
                    format!("expected 1, 2 or 3, got {}", describe(value)),
                );
                InfluxVersion::V1
            }
        },
    };
    let max_batch_size = m.get("maxBatchSize").uint(rep, 1, 10_000).unwrap_or(1000);
    let need = |v: InfluxVersion| needed.filter(|_| version == v);

    let v1 = {
        let c = m.get("v1Config").mapping(rep, INFLUX_V1_KEYS);
        let need = need(InfluxVersion::V1);
        let auth = c.get("auth").mapping(rep, INFLUX_V1_AUTH_KEYS);
        let auth_on = auth.get("enable").bool_or(rep, false);
        let auth_needed = (auth_on && need.is_some()).then_some(AUTH_NEEDED);
        let username = auth.get("username").needed_text(rep, auth_needed);
        let password = auth.get("password").needed_secret(rep, auth_needed);
        let db_name = c.get("dbName").needed_text(rep, need);
        let rp = c.get("retentionPolicy").mapping(rep, INFLUX_V1_RP_KEYS);
        let retention_policy_name = rp.get("name").needed_text(rep, need);
        let duration_node = rp.get("duration");
        let retention_policy_duration = duration_node.needed_text(rep, need);
        if !retention_policy_duration.trim().is_empty() && !is_influxql_duration(&retention_policy_duration) {
            rep.error(
                &duration_node.path,
                format!(
                    "expected an influxql duration like 10d, 4w or INF (units ns, u, ms, s, m, h, d, w), got {:?}",
                    retention_policy_duration
                ),
            );
        }
        InfluxV1Config {
            auth: auth_on.then_some((username, password)),
            db_name,
            retention_policy_name,
            retention_policy_duration,
        }
    };

    let v2 = {
        let c = m.get("v2Config").mapping(rep, INFLUX_V2_KEYS);
        let need = need(InfluxVersion::V2);
        let org = c.get("org").needed_text(rep, need);
        let bucket = c.get("bucket").needed_text(rep, need);
        let description = c.get("description").text_or(rep, "");
        let token = c.get("token").needed_secret(rep, need);
        let retention_node = c.get("retentionDuration");
        let retention = match retention_node.text(rep) {
            None => None,
            Some(text) if text.trim().is_empty() => None,
            Some(text) => match parse_duration(&text, RETENTION_UNITS, None) {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
                None => {
                    rep.error(
                        &retention_node.path,
                        format!("expected a duration like 10d, 12h or 0 (units s, m, h, d, w), got {text:?}"),
                    );
                    None
                }
            },
        };
        InfluxV2Config {
            org,
            bucket,
            description,
            token,
            retention,
        }
    };

    let v3 = {
        let c = m.get("v3Config").mapping(rep, INFLUX_V3_KEYS);
        let need = need(InfluxVersion::V3);
        let database = c.get("database").needed_text(rep, need);
        let description = c.get("description").text_or(rep, "");
        let token = c.get("token").needed_secret(rep, need);
        let retention_duration = c.get("retentionDuration").text_or(rep, "");
        let write_timeout = c
            .get("writeTimeout")
            .uint(rep, 1000, u64::from(u32::MAX))
            .unwrap_or(10_000);
        c.get("queryTimeout").uint(rep, 1000, u64::from(u32::MAX));
        InfluxV3Config {
            database,
            description,
            token,
            retention_duration,
            write_timeout: Duration::from_millis(write_timeout),
        }
    };

    InfluxConfig {
        enable,
        host,
        port,
        version,
        max_batch_size: usize::try_from(max_batch_size).unwrap_or(1000),
        v1,
        v2,
        v3,
        // Set from `sense-ingest.influxdbTls` once the engine section is read.
        tls: HttpTls::default(),
    }
}

/// `Butler-SOS.mqttConfig`. Defaults: `enable` false, `brokerPort` 1883. `brokerHost` is required when MQTT is in
/// use. `baseTopic` is accepted (Butler SOS uses it for other messages, not user events).
///
/// sense-ingest extensions (Butler SOS has none of these; each default behaves like Butler SOS):
/// - `tls` {`enable` (default false), `caFile` (PEM CA certificate(s); default the system CA bundle)}. When TLS is
///   on, `caFile` must be readable and hold at least one PEM certificate.
/// - `username`, `password` (default none; a password needs a username, MQTT 3.1.1 §3.1.2.9). The password is
///   never shown in an error.
/// - `clientId` (default `sense-ingest-<hostname>-<pid>`; must not be empty when set).
/// - `qos` 0, 1 or 2 (default 0), `retain` (default false).
/// - `keepAlive` (engine duration, default 60s): 0 turns pings off, otherwise 1s to 65535s (whole seconds on the
///   wire).
pub(super) fn mqtt_config(node: &Node<'_>, in_use: bool, rep: &mut Report) -> MqttConfig {
    let m = node.mapping(rep, MQTT_KEYS);
    let enable = m.get("enable").bool_or(rep, false);
    let host_node = m.get("brokerHost");
    let broker_host = host_node.needed_text(rep, in_use.then_some(MQTT_NEEDED));
    // A switched-off section is checked for types only: Butler SOS's template says
    // `brokerHost: <IP of MQTT broker/server>` with `enable: false`.
    if in_use
        && !broker_host.trim().is_empty()
        && broker_host.trim().parse::<IpAddr>().is_err()
        && !is_hostname(broker_host.trim())
    {
        rep.error(
            &host_node.path,
            format!("expected an ip address or hostname, got {broker_host:?}"),
        );
    }
    let broker_port = m.get("brokerPort").port(rep, false).unwrap_or(1883);
    m.get("baseTopic").text(rep);

    let defaults = MqttConfig::default();
    let tls_map = m.get("tls").mapping(rep, MQTT_TLS_KEYS);
    let tls_on = tls_map.get("enable").bool_or(rep, false);
    let ca_node = tls_map.get("caFile");
    let ca_file = match ca_node.text(rep) {
        Some(path) if path.trim().is_empty() => {
            rep.error(
                &ca_node.path,
                "must not be empty (leave it out to use the system CA bundle)",
            );
            None
        }
        Some(path) => {
            let path = PathBuf::from(path);
            if tls_on {
                read_ca_file(&ca_node.path, path, rep)
            } else {
                None
            }
        }
        None => None,
    };
    let tls = tls_on.then_some(MqttTls { ca_file });

    let user_node = m.get("username");
    let username = user_node.text(rep);
    if username.as_deref().is_some_and(str::is_empty) {
        rep.error(
            &user_node.path,
            "must not be empty (leave it out to connect without credentials)",
        );
    }
    let password_node = m.get("password");
    let password = password_node.needed_secret(rep, None);
    if !password.is_empty() && !user_node.is_set() {
        rep.error(
            &password_node.path,
            "needs username (MQTT sends a password only together with a user name)",
        );
    }

    let id_node = m.get("clientId");
    let client_id = id_node.text(rep);
    match client_id.as_deref() {
        Some(id) if id.trim().is_empty() => rep.error(
            &id_node.path,
            "must not be empty (leave it out for sense-ingest-<hostname>-<pid>)",
        ),
        Some(id) if id.len() > 65_535 || id.contains('\0') => {
            rep.error(&id_node.path, "must be at most 65535 bytes without NUL characters")
        }
        _ => {}
    }

    let qos = m
        .get("qos")
        .uint(rep, 0, 2)
        .and_then(|n| u8::try_from(n).ok())
        .unwrap_or(defaults.qos);
    let retain = m.get("retain").bool_or(rep, defaults.retain);

    let keep_alive_node = m.get("keepAlive");
    let keep_alive = match keep_alive_node.duration(rep) {
        Some(d) if d.is_zero() || (Duration::from_secs(1)..=Duration::from_secs(65_535)).contains(&d) => d,
        Some(d) => {
            rep.error(
                &keep_alive_node.path,
                format!(
                    "must be 0 (no keep-alive pings) or between 1s and 65535s, got {}ms (a bare integer is \
                     milliseconds)",
                    d.as_millis()
                ),
            );
            defaults.keep_alive
        }
        None => defaults.keep_alive,
    };

    MqttConfig {
        enable,
        broker_host,
        broker_port,
        tls,
        username: username.filter(|u| !u.is_empty()),
        password,
        client_id: client_id.filter(|id| !id.trim().is_empty()),
        qos,
        retain,
        keep_alive,
    }
}

/// `Butler-SOS.newRelic`. Defaults: `enable` false, no extra headers. `event.url` (http or https) is required when
/// New Relic is in use. `event.attribute` and `metric` are accepted without checks (not used for user events).
/// Header names must be HTTP tokens and values must not contain control characters.
pub(super) fn new_relic_config(node: &Node<'_>, in_use: bool, rep: &mut Report) -> NewRelicConfig {
    let m = node.mapping(rep, NEW_RELIC_KEYS);
    let enable = m.get("enable").bool_or(rep, false);
    let event = m.get("event").mapping(rep, NEW_RELIC_EVENT_KEYS);
    let url_node = event.get("url");
    let event_url = url_node.needed_text(rep, in_use.then_some(NEW_RELIC_NEEDED));
    let url = event_url.trim();
    if !url.is_empty() {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) || url.contains(char::is_whitespace) {
            rep.error(
                &url_node.path,
                format!("expected an http or https url, got {event_url:?}"),
            );
        }
    }
    let mut event_headers = Vec::new();
    for (path, header) in tag_items(&event.get("header"), rep) {
        if !is_header_name(&header.name) {
            rep.error(
                &join(&path, "name"),
                format!("not a valid http header name: {:?}", header.name),
            );
        }
        if header.value.chars().any(|c| c.is_control() && c != '\t') {
            rep.error(&join(&path, "value"), "contains a control character (value not shown)");
        }
        event_headers.push(header);
    }
    NewRelicConfig {
        enable,
        event_url: url.to_owned(),
        event_headers,
        // Set from `sense-ingest.newRelicTls` once the engine section is read.
        tls: HttpTls::default(),
    }
}
