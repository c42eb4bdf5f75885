//! `Butler-SOS.userEvents`: the UDP server, tags, excluded users and where user events go (MQTT topics, New
//! Relic accounts).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::formats::is_hostname;
use super::keys::{
    DEFAULT_METRICS_WRITE_MS, EXCLUDE_USER_KEYS, MESSAGE_QUEUE_KEYS, NEW_RELIC_ACCOUNT_KEYS, POST_TO_KEYS,
    QUEUE_METRICS_INFLUX_KEYS, QUEUE_METRICS_KEYS, RATE_LIMIT_KEYS, SEND_TO_INFLUX_KEYS, SEND_TO_MQTT_KEYS,
    SEND_TO_NEW_RELIC_KEYS, TOPIC_KEYS, UDP_KEYS, USER_EVENTS_KEYS,
};
use super::shared::{measurement_name, tag_list, write_frequency};
use super::walk::{lower_first, Node, Report};
use crate::config::{
    Config, ExcludedUser, MetricsWriteConfig, MqttRouting, NewRelicAccount, NewRelicRouting, UdpServerConfig,
    UserEventsConfig,
};

/// `Butler-SOS.userEvents`. `config` carries the destinations' global switches (already read).
pub(super) fn user_events(
    node: &Node<'_>,
    config: &Config,
    accounts: &[NewRelicAccount],
    listen_overridden: bool,
    rep: &mut Report,
) -> UserEventsConfig {
    let m = node.mapping(rep, USER_EVENTS_KEYS);
    let enable_node = m.get("enable");
    let enable = enable_node.bool_or(rep, false);
    // `run` has nothing to do without user events, so `check-config` says so too (one rule, one place).
    if rep.runnable && !enable {
        let message = if enable_node.is_set() {
            "is false: sense-ingest receives user events and has nothing else to do; set it to true (with Butler \
             SOS running beside it, user events are switched off in Butler SOS's own copy)"
        } else {
            "missing: set it to true to receive user events"
        };
        rep.error(&enable_node.path, message);
    }

    let mut exclude_users = Vec::new();
    for item in m.get("excludeUser").list(rep) {
        let Some(entry) = item.item_mapping(rep, EXCLUDE_USER_KEYS) else {
            continue;
        };
        let directory = entry
            .get("directory")
            .needed_text(rep, Some("each excludeUser entry needs one"));
        let user_id = entry
            .get("userId")
            .needed_text(rep, Some("each excludeUser entry needs one"));
        exclude_users.push(ExcludedUser { directory, user_id });
    }

    let udp = udp_server(
        &m.get("udpServerConfig"),
        listen_overridden,
        config.influxdb.enable,
        rep,
    );
    let tags = tag_list(&m.get("tags"), rep);

    let send_to_mqtt = mqtt_routing(&m.get("sendToMQTT"), config.mqtt.enable, rep);

    let influx = m.get("sendToInfluxdb").mapping(rep, SEND_TO_INFLUX_KEYS);
    let send_to_influxdb = influx.get("enable").bool_or(rep, false) && config.influxdb.enable;

    let send_to_new_relic = new_relic_routing(&m.get("sendToNewRelic"), config.new_relic.enable, accounts, rep);

    UserEventsConfig {
        enable,
        exclude_users,
        udp,
        tags,
        send_to_influxdb,
        send_to_mqtt,
        send_to_new_relic,
    }
}

/// `userEvents.udpServerConfig`.
///
/// Defaults: `serverHost` 0.0.0.0, `portUserActivityEvents` 9997 (0 = any free port, for tests),
/// `maxMessageSize` 65507 (1-65507), `messageQueue` {maxConcurrent 10, maxSize 200, backpressureThreshold 80},
/// `rateLimit` {enable false, maxMessagesPerMinute 600}, `enableSourceValidation` false, `allowedSources` none,
/// `queueMetrics.influxdb` {enable false, writeFrequency 20000 ms, measurementName user_events_queue}.
/// `influx_enable` is `influxdbConfig.enable`: queue metrics are written only when it is on too.
pub(super) fn udp_server(
    node: &Node<'_>,
    listen_overridden: bool,
    influx_enable: bool,
    rep: &mut Report,
) -> UdpServerConfig {
    let m = node.mapping(rep, UDP_KEYS);
    let mut udp = UdpServerConfig::default();

    let host_node = m.get("serverHost");
    let host = host_node.text(rep);
    let port = m.get("portUserActivityEvents").port(rep, true);
    let host_ok = match &host {
        Some(h) if h.trim().is_empty() => {
            rep.error(
                &host_node.path,
                "must not be empty (an ip address or hostname to listen on)",
            );
            false
        }
        _ => host.is_some() || !host_node.is_set(),
    };
    let port_ok = port.is_some() || !m.get("portUserActivityEvents").is_set();
    if !listen_overridden && host_ok && port_ok {
        let host = host.unwrap_or_else(|| Ipv4Addr::UNSPECIFIED.to_string());
        if let Some(addr) = resolve(&host, port.unwrap_or(9997), &host_node.path, rep) {
            udp.listen = vec![addr];
        }
    }

    if let Some(size) = m.get("maxMessageSize").uint(rep, 1, 65507) {
        udp.max_message_size = usize::try_from(size).unwrap_or(65507);
    }

    // messageQueue maps onto our queues (README "udpServerConfig parity"): maxConcurrent and maxSize are
    // accepted (our readers and per-destination channels take their place); backpressureThreshold is the channel
    // fill (%) at which a WARN says a destination is falling behind.
    let queue = m.get("messageQueue").mapping(rep, MESSAGE_QUEUE_KEYS);
    queue.get("maxConcurrent").uint(rep, 1, u64::from(u32::MAX));
    queue.get("maxSize").uint(rep, 1, u64::from(u32::MAX));
    if let Some(t) = queue.get("backpressureThreshold").uint(rep, 1, 100) {
        udp.backpressure_threshold_pct = t as u8;
    }

    let rate = m.get("rateLimit").mapping(rep, RATE_LIMIT_KEYS);
    let rate_enabled = rate.get("enable").bool_or(rep, false);
    let per_minute = rate.get("maxMessagesPerMinute").uint(rep, 1, u64::from(u32::MAX));
    if rate_enabled {
        udp.rate_limit_per_minute = Some(per_minute.map_or(600, |n| u32::try_from(n).unwrap_or(u32::MAX)));
    }

    let validate_sources = m.get("enableSourceValidation").bool_or(rep, false);
    let sources_node = m.get("allowedSources");
    let mut allowed: Vec<IpAddr> = Vec::new();
    for item in sources_node.list(rep) {
        match item.text(rep) {
            // Without validation the list is not used: types only (placeholders pass).
            Some(source)
                if validate_sources && source.trim().parse::<IpAddr>().is_err() && !is_hostname(source.trim()) =>
            {
                rep.error(
                    &item.path,
                    format!("expected an ip address or hostname, got {source:?}"),
                );
            }
            Some(source) if validate_sources => {
                let source = source.trim();
                match source.parse::<IpAddr>() {
                    Ok(ip) => allowed.push(ip),
                    Err(_) => match (source, 0u16).to_socket_addrs() {
                        Ok(addrs) => {
                            let before = allowed.len();
                            allowed.extend(addrs.map(|a| a.ip()));
                            if allowed.len() == before {
                                rep.error(&item.path, format!("{source:?} resolves to no address"));
                            }
                        }
                        Err(e) => rep.error(&item.path, format!("cannot resolve {source:?}: {e}")),
                    },
                }
            }
            None if !item.is_set() => rep.error(&item.path, "expected an ip address or hostname, got null"),
            _ => {}
        }
    }
    if validate_sources {
        if allowed.is_empty() {
            rep.error(
                &sources_node.path,
                "enableSourceValidation is true but no allowed source is usable; sense-ingest refuses to start \
                 rather than accept every sender (Butler SOS would silently turn validation off)",
            );
        }
        udp.allowed_sources = Some(allowed);
    }

    let metrics = m.get("queueMetrics").mapping(rep, QUEUE_METRICS_KEYS);
    let metrics_influx = metrics.get("influxdb").mapping(rep, QUEUE_METRICS_INFLUX_KEYS);
    let enable = metrics_influx.get("enable").bool_or(rep, false);
    // Butler SOS's schema gives both a default, so neither is required.
    let frequency = write_frequency(&metrics_influx.get("writeFrequency"), rep).unwrap_or(DEFAULT_METRICS_WRITE_MS);
    let measurement = measurement_name(&metrics_influx.get("measurementName"), None, rep);
    let tags = tag_list(&metrics_influx.get("tags"), rep);
    if enable && influx_enable {
        udp.queue_metrics = Some(MetricsWriteConfig {
            write_frequency: Duration::from_millis(frequency),
            measurement: measurement.unwrap_or_else(|| "user_events_queue".to_owned()),
            tags,
        });
    }

    udp
}

/// Resolves the listen address `host:port` (an IP literal, optionally in brackets, or a hostname; for a hostname
/// the first address the resolver returns, as Node's `dgram` bind does).
pub(super) fn resolve(host: &str, port: u16, path: &str, rep: &mut Report) -> Option<SocketAddr> {
    let trimmed = host.trim();
    let bare = trimmed
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(trimmed);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    if !is_hostname(bare) {
        rep.error(path, format!("expected an ip address or hostname, got {host:?}"));
        return None;
    }
    match (bare, port).to_socket_addrs() {
        Ok(mut addrs) => {
            let first = addrs.next();
            if first.is_none() {
                rep.error(path, format!("{host:?} does not resolve to any address"));
            }
            first
        }
        Err(err) => {
            rep.error(
                path,
                format!("cannot resolve {host:?}: {}", lower_first(&err.to_string())),
            );
            None
        }
    }
}

/// `userEvents.sendToMQTT`. Each `postTo` entry defaults to `enable: true` with Butler SOS's template topic
/// (`qliksense/userevent`, `.../session/start`, `.../session/stop`, `.../connection/open`,
/// `.../connection/close`); the routing is on only when `mqtt_enable` (`mqttConfig.enable`) is too.
pub(super) fn mqtt_routing(node: &Node<'_>, mqtt_enable: bool, rep: &mut Report) -> MqttRouting {
    let m = node.mapping(rep, SEND_TO_MQTT_KEYS);
    let enable = m.get("enable").bool_or(rep, false) && mqtt_enable;
    let post = m.get("postTo").mapping(rep, POST_TO_KEYS);
    let mut topic = |key: &str, default: &str| -> Option<String> {
        let entry = post.get(key).mapping(rep, TOPIC_KEYS);
        let on = entry.get("enable").bool_or(rep, true);
        let topic_node = entry.get("topic");
        let topic = topic_node.text_or(rep, default);
        if on && topic.is_empty() {
            rep.error(&topic_node.path, "must not be empty when enable is true");
        } else if topic.contains(['+', '#', '\0']) {
            rep.error(
                &topic_node.path,
                format!("a topic to publish to cannot contain +, # or NUL, got {topic:?}"),
            );
        }
        on.then_some(topic)
    };
    let everything = topic("everythingTopic", "qliksense/userevent");
    let session_start = topic("sessionStartTopic", "qliksense/userevent/session/start");
    let session_stop = topic("sessionStopTopic", "qliksense/userevent/session/stop");
    let connection_open = topic("connectionOpenTopic", "qliksense/userevent/connection/open");
    let connection_close = topic("connectionCloseTopic", "qliksense/userevent/connection/close");
    MqttRouting {
        enable,
        everything,
        session_start,
        session_stop,
        connection_open,
        connection_close,
    }
}

/// `userEvents.sendToNewRelic`: `scramble` defaults to true; `destinationAccount` names are resolved against
/// `accounts` (`thirdPartyToolsCredentials.newRelic`), and an unknown name is an error when New Relic is in use
/// (both switches on). A name listed twice is used once.
pub(super) fn new_relic_routing(
    node: &Node<'_>,
    new_relic_enable: bool,
    accounts: &[NewRelicAccount],
    rep: &mut Report,
) -> NewRelicRouting {
    let m = node.mapping(rep, SEND_TO_NEW_RELIC_KEYS);
    let enable = m.get("enable").bool_or(rep, false) && new_relic_enable;
    let scramble = m.get("scramble").bool_or(rep, true);
    let mut resolved: Vec<NewRelicAccount> = Vec::new();
    for item in m.get("destinationAccount").list(rep) {
        let Some(name) = item.text(rep) else {
            if !item.is_set() {
                rep.error(&item.path, "expected an account name, got null");
            }
            continue;
        };
        if resolved.iter().any(|a| a.name == name) {
            continue;
        }
        match accounts.iter().find(|a| a.name == name) {
            Some(account) => resolved.push(account.clone()),
            None if enable => {
                let known: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
                // Someone may paste a key where the name goes: never echo it.
                let shown = if accounts.iter().any(|a| a.insert_key.expose() == name) {
                    "(value not shown: it is an insertApiKey)".to_owned()
                } else {
                    format!("{name:?}")
                };
                rep.error(
                    &item.path,
                    format!(
                        "unknown account {shown}, not an accountName in Butler-SOS.thirdPartyToolsCredentials.newRelic \
                         (known: {})",
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                );
            }
            None => {}
        }
    }
    NewRelicRouting {
        enable,
        accounts: resolved,
        scramble,
    }
}

/// `Butler-SOS.thirdPartyToolsCredentials.newRelic[] {accountName, insertApiKey, accountId}`: all three are
/// required in each entry; `accountId` must be numeric (it goes into the URL). Other keys of
/// `thirdPartyToolsCredentials` are ignored.
pub(super) fn new_relic_accounts(node: &Node<'_>, rep: &mut Report) -> Vec<NewRelicAccount> {
    let m = node.open_mapping(rep);
    let mut accounts = Vec::new();
    for item in m.get("newRelic").list(rep) {
        let Some(entry) = item.item_mapping(rep, NEW_RELIC_ACCOUNT_KEYS) else {
            continue;
        };
        let needed = Some("each account needs one");
        let name = entry.get("accountName").needed_text(rep, needed);
        let insert_key = entry.get("insertApiKey").needed_secret(rep, needed);
        let id_node = entry.get("accountId");
        let id = id_node.needed_text(rep, needed);
        if !id.is_empty() && !id.bytes().all(|b| b.is_ascii_digit()) {
            rep.error(
                &id_node.path,
                "expected a numeric new relic account id (value not shown)",
            );
        }
        accounts.push(NewRelicAccount { name, id, insert_key });
    }
    accounts
}
