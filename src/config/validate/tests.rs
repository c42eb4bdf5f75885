use std::net::SocketAddr;
use std::time::Duration;

use super::formats::{is_influxql_duration, parse_duration, ENGINE_DURATION_UNITS, RETENTION_UNITS};
use super::keys::USER_EVENTS_KEYS;
use super::walk::suggest;
use super::*;
use crate::config::{
    BatchConfig, CaFile, ExcludedUser, HttpTls, InfluxVersion, MetricsWriteConfig, MqttTls, NewRelicAccount,
    ReaderBackend, RetryConfig, Secret, Tag,
};

const FX_SCRAMBLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/butler-sos/config/fx_scramble.yaml"
);
const FX_NOSCRAMBLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/butler-sos/config/fx_noscramble.yaml"
);

/// Loads `yaml`, failing the test with every error when it does not load.
fn ok(yaml: &str) -> Loaded {
    match load_str(yaml) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("expected the config to load, got:\n{errors}"),
    }
}

/// Every error of `yaml`, as displayed.
fn errors(yaml: &str) -> Vec<String> {
    match load_str(yaml) {
        Ok(_) => panic!("expected errors, the config loaded"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that `yaml` fails with exactly one error, `expected`.
fn one_error(yaml: &str, expected: &str) {
    assert_eq!(errors(yaml), vec![expected.to_owned()]);
}

fn tag(name: &str, value: &str) -> Tag {
    Tag {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// User events with InfluxDB output switched on; `influx` is the `influxdbConfig` mapping (flow style).
fn with_influx(influx: &str) -> String {
    format!(
        "Butler-SOS:\n  userEvents: {{enable: true, sendToInfluxdb: {{enable: true}}}}\n  influxdbConfig: {influx}\n"
    )
}

#[test]
fn fx_scramble_loads_with_expected_values() {
    let loaded = load_file(Path::new(FX_SCRAMBLE)).unwrap();
    assert!(loaded.not_implemented.is_empty(), "{:?}", loaded.not_implemented);
    let c = loaded.config;
    assert_eq!(c.log_level, LogLevel::Debug);

    let ue = &c.user_events;
    assert!(ue.enable);
    assert_eq!(ue.udp.listen, vec!["127.0.0.1:19997".parse::<SocketAddr>().unwrap()]);
    assert_eq!(ue.udp.max_message_size, 65507);
    assert_eq!(
        ue.exclude_users,
        vec![ExcludedUser {
            directory: "LAB".into(),
            user_id: "excluded1".into()
        }]
    );
    assert_eq!(
        ue.tags,
        vec![
            tag("env", "DEV"),
            tag("host", "OVERRIDDEN"),
            tag("qs_host", "NR_OVERRIDDEN")
        ]
    );
    assert!(ue.send_to_influxdb);

    let mqtt = &ue.send_to_mqtt;
    assert!(mqtt.enable);
    assert_eq!(mqtt.everything.as_deref(), Some("qliksense/userevent"));
    assert_eq!(mqtt.session_start.as_deref(), Some("qliksense/userevent/session/start"));
    assert_eq!(mqtt.session_stop.as_deref(), Some("qliksense/userevent/session/stop"));
    assert_eq!(
        mqtt.connection_open.as_deref(),
        Some("qliksense/userevent/connection/open")
    );
    assert_eq!(
        mqtt.connection_close.as_deref(),
        Some("qliksense/userevent/connection/close")
    );

    let nr = &ue.send_to_new_relic;
    assert!(nr.enable);
    assert!(nr.scramble);
    assert_eq!(
        nr.accounts,
        vec![
            NewRelicAccount {
                name: "NR account A".into(),
                id: "1111111".into(),
                insert_key: Secret::new("NRII-fake-key-AAAA"),
            },
            NewRelicAccount {
                name: "NR account B".into(),
                id: "2222222".into(),
                insert_key: Secret::new("NRII-fake-key-BBBB"),
            },
        ]
    );

    let influx = &c.influxdb;
    assert!(influx.enable);
    assert_eq!((influx.host.as_str(), influx.port), ("127.0.0.1", 18087));
    assert_eq!(influx.version, InfluxVersion::V1);
    assert_eq!(influx.max_batch_size, 1000);
    assert_eq!(influx.v1.db_name, "senseops");
    assert_eq!(influx.v1.retention_policy_name, "10d");
    assert_eq!(influx.v1.retention_policy_duration, "10d");
    assert!(influx.v1.auth.is_none());
    assert_eq!(influx.v2.retention, Some(Duration::from_secs(10 * 86_400)));
    assert_eq!(influx.v2.token.expose(), "mytoken");
    assert_eq!(influx.v3.write_timeout, Duration::from_secs(10));

    assert!(c.mqtt.enable);
    assert_eq!((c.mqtt.broker_host.as_str(), c.mqtt.broker_port), ("127.0.0.1", 11883));
    assert!(c.new_relic.enable);
    assert_eq!(c.new_relic.event_url, "http://127.0.0.1:18443");
    assert!(c.new_relic.event_headers.is_empty());
    assert!(!c.prometheus.enable);
    assert_eq!(c.prometheus.port, 9842);
}

#[test]
fn fx_noscramble_loads_with_scramble_off() {
    let c = load_file(Path::new(FX_NOSCRAMBLE)).unwrap().config;
    assert!(!c.user_events.send_to_new_relic.scramble);
    assert_eq!(c.influxdb.v1.db_name, "senseops_noscramble");
    assert_eq!(c.user_events.send_to_new_relic.accounts.len(), 2);
}

#[test]
fn minimal_file_loads_with_defaults() {
    let loaded = ok("Butler-SOS: {userEvents: {enable: true}}");
    assert!(loaded.not_implemented.is_empty());
    let c = loaded.config;
    assert_eq!(c.log_level, LogLevel::Info);
    assert!(c.user_events.enable);
    assert_eq!(c.user_events.udp.listen, vec![SocketAddr::from(([0, 0, 0, 0], 9997))]);
    assert_eq!(c.user_events.udp.max_message_size, 65507);
    assert!(!c.user_events.send_to_influxdb);
    assert!(!c.user_events.send_to_mqtt.enable);
    assert!(!c.user_events.send_to_new_relic.enable);
    assert!(c.user_events.send_to_new_relic.scramble);
    assert_eq!(c.influxdb.port, 8086);
    assert_eq!(c.mqtt.broker_port, 1883);
    assert!(!c.engine.stdout);
    assert_eq!(c.engine.batch, BatchConfig::default());
}

#[test]
fn tag_is_a_synonym_of_name_and_values_may_be_numbers_or_booleans() {
    let c = ok("Butler-SOS:
  userEvents:
    tags:
      - {tag: env, value: DEV}
      - {name: n, value: 42}
      - {name: b, value: true}
      - {name: e, value: ''}
")
    .config;
    assert_eq!(
        c.user_events.tags,
        vec![tag("env", "DEV"), tag("n", "42"), tag("b", "true"), tag("e", "")]
    );
}

#[test]
fn null_and_empty_lists_are_valid() {
    let yaml = "Butler-SOS:
  thirdPartyToolsCredentials: {newRelic: null}
  userEvents:
    enable: true
    excludeUser: null
    tags: []
    udpServerConfig: {allowedSources: null, queueMetrics: {influxdb: {tags: null}}}
    sendToNewRelic: {enable: true, destinationAccount: null}
  newRelic: {enable: true, event: {url: 'https://insights-collector.newrelic.com', header: []}}
  qlikSenseEvents: {eventCount: {influxdb: {tags: null}}}
";
    let c = ok(yaml).config;
    assert!(c.user_events.exclude_users.is_empty());
    assert!(c.user_events.tags.is_empty());
    assert!(c.user_events.send_to_new_relic.enable);
    assert!(c.user_events.send_to_new_relic.accounts.is_empty());
}

#[test]
fn null_sections_read_as_empty() {
    let c = ok("Butler-SOS:
  userEvents:
    enable: true
    udpServerConfig:
    sendToMQTT:
  influxdbConfig:
sense-ingest:
")
    .config;
    assert_eq!(c.user_events.udp.listen, vec![SocketAddr::from(([0, 0, 0, 0], 9997))]);
}

#[test]
fn other_butler_sos_sections_are_ignored_without_checks() {
    ok("Butler-SOS:
  userEvents: {enable: true}
  logEvents: [whatever, 1]
  heartbeat: 42
  thirdPartyToolsCredentials: {other: x}
");
}

#[test]
fn accepted_whole_subtrees_are_not_checked() {
    ok("Butler-SOS:
  newRelic:
    event: {attribute: {anything: [1, 2]}}
    metric: {whatever: {deep: true}}
  influxdbConfig:
    includeFields: {future: 1}
    failedPollsTracking: {enable: false, measurementName: x}
");
}

#[test]
fn bad_port_is_reported_with_its_path() {
    one_error(
        "Butler-SOS:\n  userEvents:\n    udpServerConfig:\n      portUserActivityEvents: abc\n",
        "Butler-SOS.userEvents.udpServerConfig.portUserActivityEvents: expected a port number 1-65535, got \"abc\"",
    );
    one_error(
        "Butler-SOS: {mqttConfig: {brokerPort: 70000}}",
        "Butler-SOS.mqttConfig.brokerPort: expected a port number 1-65535, got 70000",
    );
    one_error(
        "Butler-SOS: {influxdbConfig: {port: 0}}",
        "Butler-SOS.influxdbConfig.port: expected a port number 1-65535, got 0",
    );
}

#[test]
fn udp_port_accepts_zero_and_numeric_strings() {
    let c =
        ok("Butler-SOS: {userEvents: {udpServerConfig: {serverHost: 127.0.0.1, portUserActivityEvents: 0}}}").config;
    assert_eq!(c.user_events.udp.listen, vec![SocketAddr::from(([127, 0, 0, 1], 0))]);
    let c =
        ok("Butler-SOS: {userEvents: {udpServerConfig: {serverHost: '::1', portUserActivityEvents: '9999'}}}").config;
    assert_eq!(
        c.user_events.udp.listen,
        vec!["[::1]:9999".parse::<SocketAddr>().unwrap()]
    );
}

#[test]
fn localhost_resolves() {
    let c =
        ok("Butler-SOS: {userEvents: {udpServerConfig: {serverHost: localhost, portUserActivityEvents: 9}}}").config;
    assert_eq!(c.user_events.udp.listen.len(), 1);
    assert!(c.user_events.udp.listen[0].ip().is_loopback());
    assert_eq!(c.user_events.udp.listen[0].port(), 9);
}

#[test]
fn invalid_server_host_is_reported() {
    one_error(
        "Butler-SOS: {userEvents: {udpServerConfig: {serverHost: 'not a host!'}}}",
        "Butler-SOS.userEvents.udpServerConfig.serverHost: expected an ip address or hostname, got \"not a host!\"",
    );
}

#[test]
fn typo_in_a_read_section_is_an_unknown_key() {
    one_error(
        "Butler-SOS:\n  userEvents:\n    sendToInfluxDB:\n      enable: true\n",
        "Butler-SOS.userEvents.sendToInfluxDB: unknown key, expected one of: enable, excludeUser, \
             udpServerConfig, tags, sendToMQTT, sendToInfluxdb, sendToNewRelic (did you mean sendToInfluxdb?)",
    );
    one_error(
        "Butler-SOS: {prometheus: {prot: 1}}",
        "Butler-SOS.prometheus.prot: unknown key, expected one of: enable, host, port (did you mean port?)",
    );
}

#[test]
fn unknown_top_level_key_is_an_error() {
    one_error(
        "Butler-SOS: {}\nsense_ingest: {}\n",
        "sense_ingest: unknown key, expected one of: Butler-SOS, sense-ingest (did you mean sense-ingest?)",
    );
}

#[test]
fn unknown_engine_key_is_an_error() {
    one_error(
            "Butler-SOS: {}\nsense-ingest: {threads: 4}\n",
            "sense-ingest.threads: unknown key, expected one of: readerThreads, backend, recvBufferBytes, \
             eventsPerSlab, channelCapacity, batch, retry, stdout, appNames, shutdownTimeout, listen, spool, unhealthyAfter, analytics, silentHostAfter, \
             influxdbTls, newRelicTls, logFormat, metrics",
        );
}

#[test]
fn bad_log_level_is_reported() {
    one_error(
        "Butler-SOS: {logLevel: loud}",
        "Butler-SOS.logLevel: expected one of error, warn, info, verbose, debug, silly, got \"loud\"",
    );
}

#[test]
fn bad_engine_backend_is_reported() {
    one_error(
        "Butler-SOS: {}\nsense-ingest: {backend: epoll}\n",
        "sense-ingest.backend: expected one of auto, io_uring, recvmmsg, got \"epoll\"",
    );
}

#[test]
fn bad_durations_are_reported() {
    one_error(
        "Butler-SOS: {}\nsense-ingest: {batch: {maxAge: 10x}}\n",
        "sense-ingest.batch.maxAge: expected a duration like 250ms, 10s or 1m (units ms, s, m, h, d; a bare \
             integer is milliseconds), got \"10x\"",
    );
    one_error(
        "Butler-SOS: {influxdbConfig: {v2Config: {retentionDuration: 10 days}}}",
        "Butler-SOS.influxdbConfig.v2Config.retentionDuration: expected a duration like 10d, 12h or 0 (units s, \
             m, h, d, w), got \"10 days\"",
    );
    one_error(
        "Butler-SOS: {influxdbConfig: {v1Config: {retentionPolicy: {duration: 10 days}}}}",
        "Butler-SOS.influxdbConfig.v1Config.retentionPolicy.duration: expected an influxql duration like 10d, 4w \
             or INF (units ns, u, ms, s, m, h, d, w), got \"10 days\"",
    );
}

#[test]
fn unknown_new_relic_account_is_reported() {
    let yaml = "Butler-SOS:
  thirdPartyToolsCredentials:
    newRelic:
      - {accountName: A, insertApiKey: k, accountId: '1'}
  userEvents:
    sendToNewRelic: {enable: true, destinationAccount: [A, B]}
  newRelic: {enable: true, event: {url: 'https://insights-collector.newrelic.com'}}
";
    one_error(
        yaml,
        "Butler-SOS.userEvents.sendToNewRelic.destinationAccount[1]: unknown account \"B\", not an accountName in \
             Butler-SOS.thirdPartyToolsCredentials.newRelic (known: A)",
    );
}

#[test]
fn a_new_relic_account_name_too_long_for_a_spool_folder_is_reported() {
    let name = "prod eu ".repeat(30);
    let yaml = format!(
        "Butler-SOS:
  thirdPartyToolsCredentials:
    newRelic:
      - {{accountName: '{name}', insertApiKey: k, accountId: '1'}}
  userEvents:
    sendToNewRelic: {{enable: true, destinationAccount: ['{name}']}}
  newRelic: {{enable: true, event: {{url: 'https://insights-collector.newrelic.com'}}}}
"
    );
    one_error(
        &yaml,
        &format!(
            "Butler-SOS.thirdPartyToolsCredentials.newRelic: accountName {name:?} is too long for its spool \
                 folder's name (at most 255 bytes once every character other than letters, digits, - and _ is \
                 written as %XX)"
        ),
    );
    // Without a spool there is no folder to name.
    let no_spool = format!("{yaml}sense-ingest: {{spool: {{enable: false}}}}\n");
    assert_eq!(ok(&no_spool).config.user_events.send_to_new_relic.accounts.len(), 1);
}

#[test]
fn unknown_new_relic_account_is_ignored_when_new_relic_is_off() {
    let c = ok("Butler-SOS: {userEvents: {sendToNewRelic: {enable: true, destinationAccount: [X]}}}").config;
    assert!(!c.user_events.send_to_new_relic.enable);
    assert!(c.user_events.send_to_new_relic.accounts.is_empty());
}

#[test]
fn missing_influx_v1_settings_are_reported_when_in_use() {
    let yaml =
        with_influx("{enable: true, host: db, version: 1, v1Config: {retentionPolicy: {name: a, duration: 1d}}}");
    one_error(
        &yaml,
        "Butler-SOS.influxdbConfig.v1Config.dbName: missing (required when influxdbConfig.enable and \
             userEvents.sendToInfluxdb.enable are true)",
    );
    let yaml =
        with_influx("{enable: true, host: db, v1Config: {dbName: '', retentionPolicy: {name: a, duration: 1d}}}");
    one_error(
        &yaml,
        "Butler-SOS.influxdbConfig.v1Config.dbName: must not be empty (required when influxdbConfig.enable and \
             userEvents.sendToInfluxdb.enable are true)",
    );
}

#[test]
fn influx_settings_are_not_required_when_not_in_use() {
    let c = ok("Butler-SOS: {influxdbConfig: {enable: true, version: 2}, userEvents: {enable: true}}").config;
    assert!(c.influxdb.enable);
    assert!(!c.user_events.send_to_influxdb);
    assert_eq!(c.influxdb.version, InfluxVersion::V2);
}

#[test]
fn influx_v2_and_v3_require_their_settings() {
    let errs = errors(&with_influx("{enable: true, host: db, version: 2}"));
    let why = "(required when influxdbConfig.enable and userEvents.sendToInfluxdb.enable are true)";
    assert_eq!(
        errs,
        vec![
            format!("Butler-SOS.influxdbConfig.v2Config.org: missing {why}"),
            format!("Butler-SOS.influxdbConfig.v2Config.bucket: missing {why}"),
            format!("Butler-SOS.influxdbConfig.v2Config.token: missing {why}"),
        ]
    );
    let errs = errors(&with_influx("{enable: true, version: 3, v3Config: {database: x}}"));
    assert_eq!(
        errs,
        vec![
            format!("Butler-SOS.influxdbConfig.host: missing {why}"),
            format!("Butler-SOS.influxdbConfig.v3Config.token: missing {why}"),
        ]
    );
}

#[test]
fn influx_version_must_be_1_2_or_3() {
    one_error(
        "Butler-SOS: {influxdbConfig: {version: 4}}",
        "Butler-SOS.influxdbConfig.version: expected 1, 2 or 3, got 4",
    );
}

#[test]
fn influx_v1_auth_needs_username_and_password() {
    let yaml = with_influx(
        "{enable: true, host: db, v1Config: {dbName: x, retentionPolicy: {name: a, duration: INF}, \
             auth: {enable: true, username: u}}}",
    );
    one_error(
        &yaml,
        "Butler-SOS.influxdbConfig.v1Config.auth.password: missing (required when auth.enable is true)",
    );
    let yaml = with_influx(
        "{enable: true, host: db, v1Config: {dbName: x, retentionPolicy: {name: a, duration: 4w}, \
             auth: {enable: true, username: u, password: p}}}",
    );
    let (user, password) = ok(&yaml).config.influxdb.v1.auth.unwrap();
    assert_eq!((user.as_str(), password.expose()), ("u", "p"));
}

#[test]
fn v2_retention_zero_means_forever() {
    for zero in ["0", "'0'", "0d", "''"] {
        let c = ok(&format!(
            "Butler-SOS: {{influxdbConfig: {{v2Config: {{retentionDuration: {zero}}}}}}}"
        ))
        .config;
        assert_eq!(c.influxdb.v2.retention, None, "{zero}");
    }
    let c = ok("Butler-SOS: {influxdbConfig: {v2Config: {retentionDuration: 1h}}}").config;
    assert_eq!(c.influxdb.v2.retention, Some(Duration::from_secs(3600)));
}

#[test]
fn tag_items_need_name_and_value() {
    one_error(
        "Butler-SOS:\n  userEvents:\n    tags:\n      - {name: a, value: b}\n      - {name: c}\n",
        "Butler-SOS.userEvents.tags[1].value: missing",
    );
    one_error(
        "Butler-SOS: {userEvents: {tags: [{value: b}]}}",
        "Butler-SOS.userEvents.tags[0].name: missing",
    );
    one_error(
        "Butler-SOS: {userEvents: {tags: [{name: a, tag: a, value: b}]}}",
        "Butler-SOS.userEvents.tags[0]: has both name and tag (synonyms), keep one",
    );
    one_error(
        "Butler-SOS: {userEvents: {tags: [{name: a, value: b, extra: c}]}}",
        "Butler-SOS.userEvents.tags[0].extra: unknown key, expected one of: name, tag, value",
    );
    one_error(
        "Butler-SOS: {userEvents: {tags: [x]}}",
        "Butler-SOS.userEvents.tags[0]: expected a mapping, got \"x\"",
    );
}

#[test]
fn exclude_user_items_need_directory_and_user_id() {
    one_error(
        "Butler-SOS: {userEvents: {excludeUser: [{directory: LAB}]}}",
        "Butler-SOS.userEvents.excludeUser[0].userId: missing (each excludeUser entry needs one)",
    );
}

#[test]
fn mqtt_topics_follow_their_enable_flags_and_default() {
    let yaml = "Butler-SOS:
  mqttConfig: {enable: true, brokerHost: broker}
  userEvents:
    sendToMQTT:
      enable: true
      postTo:
        everythingTopic: {enable: false, topic: all}
        sessionStartTopic: {enable: true, topic: start}
";
    let mqtt = ok(yaml).config.user_events.send_to_mqtt;
    assert!(mqtt.enable);
    assert_eq!(mqtt.everything, None);
    assert_eq!(mqtt.session_start.as_deref(), Some("start"));
    assert_eq!(mqtt.session_stop.as_deref(), Some("qliksense/userevent/session/stop"));
    one_error(
        "Butler-SOS: {mqttConfig: {enable: true}, userEvents: {sendToMQTT: {enable: true}}}",
        "Butler-SOS.mqttConfig.brokerHost: missing (required when mqttConfig.enable and \
             userEvents.sendToMQTT.enable are true)",
    );
}

#[test]
fn mqtt_extensions_default_like_butler_sos() {
    let c = ok("Butler-SOS: {mqttConfig: {enable: true, brokerHost: broker}}")
        .config
        .mqtt;
    assert_eq!(c.tls, None);
    assert_eq!(c.username, None);
    assert!(c.password.is_empty());
    assert_eq!(c.client_id, None);
    assert_eq!((c.qos, c.retain), (0, false));
    assert_eq!(c.keep_alive, Duration::from_secs(60));
}

#[test]
fn mqtt_extensions_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    let yaml = format!(
        "Butler-SOS:
  mqttConfig:
    enable: true
    brokerHost: broker
    tls: {{enable: true, caFile: {ca}}}
    username: sense
    password: s3cret
    clientId: farm-1
    qos: 1
    retain: true
    keepAlive: 30s
",
        ca = ca.display()
    );
    let c = ok(&yaml).config.mqtt;
    let read = CaFile {
        path: ca.clone(),
        pem: std::fs::read(&ca).unwrap().into(),
    };
    assert_eq!(c.tls, Some(MqttTls { ca_file: Some(read) }));
    assert_eq!(c.username.as_deref(), Some("sense"));
    assert_eq!(c.password.expose(), "s3cret");
    assert_eq!(c.client_id.as_deref(), Some("farm-1"));
    assert_eq!((c.qos, c.retain), (1, true));
    assert_eq!(c.keep_alive, Duration::from_secs(30));
    // TLS off: caFile is only type-checked.
    let c = ok("Butler-SOS: {mqttConfig: {tls: {enable: false, caFile: /nonexistent.pem}, keepAlive: 0}}")
        .config
        .mqtt;
    assert_eq!((c.tls, c.keep_alive), (None, Duration::ZERO));
}

#[test]
fn mqtt_extension_errors_have_key_paths_and_hide_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "hello").unwrap();
    let yaml = format!(
        "Butler-SOS:
  mqttConfig:
    tls: {{enable: true, caFile: {}, verify: false}}
    password: hunter2-secret
    clientId: ''
    qos: 3
    retain: 'yes'
    keepAlive: 500ms
",
        not_pem.display()
    );
    let errs = errors(&yaml);
    let expected = [
        "Butler-SOS.mqttConfig.tls.verify: unknown key, expected one of: enable, caFile".to_owned(),
        format!(
            "Butler-SOS.mqttConfig.tls.caFile: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            not_pem.display()
        ),
        "Butler-SOS.mqttConfig.password: needs username (MQTT sends a password only together with a user name)"
            .to_owned(),
        "Butler-SOS.mqttConfig.clientId: must not be empty (leave it out for sense-ingest-<hostname>-<pid>)".to_owned(),
        "Butler-SOS.mqttConfig.qos: expected an integer 0-2, got 3".to_owned(),
        "Butler-SOS.mqttConfig.retain: expected true or false, got \"yes\"".to_owned(),
        "Butler-SOS.mqttConfig.keepAlive: must be 0 (no keep-alive pings) or between 1s and 65535s, got 500ms \
             (a bare integer is milliseconds)"
            .to_owned(),
    ];
    assert_eq!(errs, expected);
    assert!(errs.iter().all(|e| !e.contains("hunter2")));
    one_error(
        "Butler-SOS: {mqttConfig: {tls: {enable: true, caFile: /nonexistent/ca.pem}}}",
        "Butler-SOS.mqttConfig.tls.caFile: cannot read /nonexistent/ca.pem: no such file or directory (os error 2)",
    );
    one_error(
        "Butler-SOS: {mqttConfig: {username: sense, password: [hunter2]}}",
        "Butler-SOS.mqttConfig.password: expected a string, got a list (value not shown)",
    );
}

/// InfluxDB 1.x in use with `sense-ingest.influxdbTls` set to `tls` (a YAML flow mapping).
fn with_influx_tls(tls: &str) -> String {
    format!(
            "{}sense-ingest:\n  influxdbTls: {tls}\n",
            with_influx(
                "{enable: true, host: db.example, version: 1, v1Config: {dbName: senseops, retentionPolicy: {name: rp, duration: 10d}}}"
            )
        )
}

#[test]
fn influxdb_and_new_relic_tls_settings_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    let c = ok(&with_influx_tls(&format!("{{enable: true, caFile: {}}}", ca.display()))).config;
    assert_eq!(
        c.influxdb.tls,
        HttpTls {
            enable: true,
            ca_file: Some(CaFile {
                path: ca.clone(),
                pem: std::fs::read(&ca).unwrap().into(),
            }),
            insecure_skip_verify: false
        }
    );
    assert_eq!(c.new_relic.tls, HttpTls::default());
    let c = ok("Butler-SOS: {newRelic: {event: {url: https://nr.example}}}\n\
                    sense-ingest: {newRelicTls: {insecureSkipVerify: true}}")
    .config;
    assert!(c.new_relic.tls.insecure_skip_verify && !c.new_relic.tls.enable);
    // Defaults: plain http to InfluxDB (as Butler SOS), built-in roots, verification on.
    let c = ok(&with_influx_tls("{}")).config;
    assert_eq!(c.influxdb.tls, HttpTls::default());
}

#[test]
fn tls_errors_name_the_key() {
    one_error(
        &with_influx_tls("{enable: true, caFile: /nonexistent/ca.pem}"),
        "sense-ingest.influxdbTls.caFile: cannot read /nonexistent/ca.pem: no such file or directory (os error 2)",
    );
    one_error(
        &with_influx_tls("{enable: true, caFile: /dev/zero}"),
        "sense-ingest.influxdbTls.caFile: cannot read /dev/zero: not a regular file",
    );
    one_error(
        &with_influx_tls("{enable: true, caFile: ''}"),
        "sense-ingest.influxdbTls.caFile: must not be empty (leave it out to use the built-in roots)",
    );
    one_error(
        &with_influx_tls("{enable: true, caFile: /x.pem, insecureSkipVerify: true}"),
        "sense-ingest.influxdbTls.caFile: has no effect with sense-ingest.influxdbTls.insecureSkipVerify true: \
             set one or the other",
    );
    one_error(
        &with_influx_tls("{enable: yes please}"),
        "sense-ingest.influxdbTls.enable: expected true or false, got \"yes please\"",
    );
    let errs = errors("Butler-SOS: {}\nsense-ingest: {newRelicTls: {enable: true, verify: false}}");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs.iter().all(|e| e.starts_with("sense-ingest.newRelicTls.")),
        "{errs:?}"
    );
    // Not in use (or TLS off): the CA file is only type-checked.
    ok("Butler-SOS: {}\nsense-ingest: {influxdbTls: {enable: true, caFile: /nonexistent.pem}}");
    ok(&with_influx_tls("{enable: false, caFile: /nonexistent.pem}"));
}

#[test]
fn a_new_relic_ca_file_is_read_when_the_url_is_https() {
    let yaml = |url: &str| {
        format!(
                "Butler-SOS:\n  userEvents: {{enable: true, sendToNewRelic: {{enable: true, destinationAccount: [A]}}}}\n  \
                 newRelic: {{enable: true, event: {{url: {url}}}}}\n  thirdPartyToolsCredentials: {{newRelic: \
                 [{{accountName: A, insertApiKey: k, accountId: 1}}]}}\nsense-ingest: {{newRelicTls: {{caFile: /nonexistent.pem}}}}\n"
            )
    };
    one_error(
        &yaml("https://nr.example"),
        "sense-ingest.newRelicTls.caFile: cannot read /nonexistent.pem: no such file or directory (os error 2)",
    );
    ok(&yaml("http://127.0.0.1:1"));
}

#[test]
fn a_ca_file_that_is_not_a_regular_file_is_an_error_not_a_hang() {
    let errors = errors("Butler-SOS: {mqttConfig: {tls: {enable: true, caFile: /dev/zero}}}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("Butler-SOS.mqttConfig.tls.caFile") && errors[0].contains("not a regular file"));
}

#[test]
fn event_counts_and_queue_metrics_are_read_with_both_tag_forms() {
    let yaml = "Butler-SOS:
  influxdbConfig: {enable: true, host: localhost, v1Config: {dbName: db, retentionPolicy: {name: rp, duration: 1d}}}
  qlikSenseEvents:
    influxdb: {enable: true, writeFrequency: 250}
    eventCount:
      enable: true
      influxdb:
        measurementName: event_count
        tags: [{name: env, value: DEV}, {tag: site, value: 7}]
    rejectedEventCount: {enable: false, influxdb: {measurementName: rejected_event_count}}
  userEvents:
    udpServerConfig:
      queueMetrics: {influxdb: {enable: true, writeFrequency: 300, measurementName: q, tags: [{tag: a, value: b}]}}
";
    let c = ok(yaml).config;
    assert_eq!(
        c.event_count,
        Some(MetricsWriteConfig {
            write_frequency: Duration::from_millis(250),
            measurement: "event_count".into(),
            tags: vec![tag("env", "DEV"), tag("site", "7")],
        })
    );
    assert_eq!(
        c.user_events.udp.queue_metrics,
        Some(MetricsWriteConfig {
            write_frequency: Duration::from_millis(300),
            measurement: "q".into(),
            tags: vec![tag("a", "b")],
        })
    );
}

#[test]
fn queue_metrics_take_butler_sos_defaults() {
    let yaml = "Butler-SOS:
  influxdbConfig: {enable: true, host: localhost, v1Config: {dbName: db, retentionPolicy: {name: rp, duration: 1d}}}
  userEvents: {udpServerConfig: {queueMetrics: {influxdb: {enable: true, tags: null}}}}
";
    let q = ok(yaml).config.user_events.udp.queue_metrics.unwrap();
    assert_eq!(q.write_frequency, Duration::from_millis(20_000));
    assert_eq!(q.measurement, "user_events_queue");
    assert!(q.tags.is_empty());
}

#[test]
fn butler_sos_metrics_are_off_unless_influxdb_is_enabled() {
    let yaml = "Butler-SOS:
  qlikSenseEvents: {influxdb: {enable: true, writeFrequency: 250}, eventCount: {enable: true, influxdb: {measurementName: e}}}
  userEvents: {udpServerConfig: {queueMetrics: {influxdb: {enable: true}}}}
";
    let c = ok(yaml).config;
    assert_eq!(c.event_count, None);
    assert_eq!(c.user_events.udp.queue_metrics, None);
    // Counting on, but qlikSenseEvents.influxdb.enable off: Butler SOS never writes them either.
    let yaml = "Butler-SOS:
  influxdbConfig: {enable: true, host: localhost, v1Config: {dbName: db, retentionPolicy: {name: rp, duration: 1d}}}
  qlikSenseEvents: {influxdb: {enable: false}, eventCount: {enable: true}}
";
    assert_eq!(ok(yaml).config.event_count, None);
}

#[test]
fn event_counts_in_use_require_frequency_measurement_and_the_influxdb_connection() {
    let yaml = "Butler-SOS:
  influxdbConfig: {enable: true}
  qlikSenseEvents: {influxdb: {enable: true}, eventCount: {enable: true, influxdb: {measurementName: ''}}}
";
    let errors = errors(yaml);
    let why = "required when influxdbConfig.enable is true and event counts (qlikSenseEvents.influxdb.enable \
                   with eventCount.enable) or userEvents.udpServerConfig.queueMetrics.influxdb.enable write to it";
    assert!(
        errors.contains(&format!("Butler-SOS.influxdbConfig.host: missing ({why})")),
        "{errors:?}"
    );
    assert!(errors.contains(
        &"Butler-SOS.qlikSenseEvents.influxdb.writeFrequency: missing (required when \
              qlikSenseEvents.eventCount.enable is true)"
            .to_owned()
    ));
    assert!(errors
        .contains(&"Butler-SOS.qlikSenseEvents.eventCount.influxdb.measurementName: must not be empty".to_owned()));
}

#[test]
fn metrics_settings_are_checked_even_when_off() {
    one_error(
        "Butler-SOS: {userEvents: {udpServerConfig: {queueMetrics: {influxdb: {writeFrequency: 0}}}}}",
        "Butler-SOS.userEvents.udpServerConfig.queueMetrics.influxdb.writeFrequency: expected an integer \
             1-4294967295, got 0",
    );
    one_error(
        "Butler-SOS: {qlikSenseEvents: {eventCount: {influxdb: {tags: [{name: a}]}}}}",
        "Butler-SOS.qlikSenseEvents.eventCount.influxdb.tags[0].value: missing",
    );
    one_error(
        "Butler-SOS: {qlikSenseEvents: {eventCount: {influxdb: {measurementName: \"a\\nb\"}}}}",
        "Butler-SOS.qlikSenseEvents.eventCount.influxdb.measurementName: contains a control character",
    );
}

#[test]
fn every_butler_sos_setting_read_is_implemented() {
    let yaml = "Butler-SOS:
  userEvents:
    udpServerConfig:
      messageQueue: {maxConcurrent: 10, maxSize: 500, backpressureThreshold: 80}
      rateLimit: {enable: true, maxMessagesPerMinute: 600}
      enableSourceValidation: true
      allowedSources: [10.0.0.1, localhost]
      queueMetrics: {influxdb: {enable: true}}
  qlikSenseEvents: {eventCount: {enable: true}}
  prometheus: {enable: true}
";
    assert!(ok(yaml).not_implemented.is_empty());
}

#[test]
fn engine_settings_are_read() {
    let yaml = "Butler-SOS: {userEvents: {enable: true, udpServerConfig: {serverHost: unresolvable.invalid}}}
sense-ingest:
  readerThreads: 3
  backend: recvmmsg
  recvBufferBytes: 1048576
  eventsPerSlab: 64
  channelCapacity: 16
  batch: {maxEvents: 100, maxBytes: 65536, maxAge: 1m30s}
  retry: {maxAttempts: 3, initialBackoff: 250, maxBackoff: 2s}
  stdout: true
  appNames: /etc/apps.csv
  shutdownTimeout: 5s
  listen: ['0.0.0.0:9997', '[::]:9997']
";
    let c = ok(yaml).config;
    let e = &c.engine;
    assert_eq!(e.reader_threads, 3);
    assert_eq!(e.backend, ReaderBackend::Recvmmsg);
    assert_eq!(
        (e.recv_buffer_bytes, e.events_per_slab, e.channel_capacity),
        (1 << 20, 64, 16)
    );
    assert_eq!(
        e.batch,
        BatchConfig {
            max_events: 100,
            max_bytes: 65536,
            max_age: Duration::from_secs(90)
        }
    );
    assert_eq!(
        e.retry,
        RetryConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(2)
        }
    );
    assert!(e.stdout);
    assert_eq!(e.app_names_file.as_deref(), Some(Path::new("/etc/apps.csv")));
    assert_eq!(e.shutdown_timeout, Duration::from_secs(5));
    // `listen` overrides serverHost, which is then not resolved.
    assert_eq!(
        c.user_events.udp.listen,
        vec![
            "0.0.0.0:9997".parse::<SocketAddr>().unwrap(),
            "[::]:9997".parse().unwrap()
        ]
    );
}

#[test]
fn engine_listen_errors_are_reported() {
    assert_eq!(
        errors("Butler-SOS: {}\nsense-ingest: {listen: []}\n"),
        vec!["sense-ingest.listen: must list at least one address (leave it out to use serverHost)"]
    );
    one_error(
        "Butler-SOS: {}\nsense-ingest: {listen: ['localhost:9997']}\n",
        "sense-ingest.listen[0]: expected a socket address like 0.0.0.0:9997 or [::]:9997, got \"localhost:9997\"",
    );
    one_error(
        "Butler-SOS: {}\nsense-ingest: {retry: {initialBackoff: 5s, maxBackoff: 1s}}\n",
        "sense-ingest.retry.maxBackoff: must not be shorter than initialBackoff",
    );
}

#[test]
fn several_errors_come_back_together() {
    let yaml = "Butler-SOS:
  logLevel: loud
  userEvents:
    enable: yes
    udpServerConfig: {portUserActivityEvents: abc, maxMessageSize: 70000}
    tags: [{name: a}]
sense-ingest: {backend: epoll, readerThreads: 0}
";
    let err = load_str(yaml).unwrap_err();
    let expected = [
        "Butler-SOS.logLevel: expected one of error, warn, info, verbose, debug, silly, got \"loud\"",
        "Butler-SOS.userEvents.enable: expected true or false, got \"yes\"",
        "Butler-SOS.userEvents.udpServerConfig.portUserActivityEvents: expected a port number 1-65535, got \"abc\"",
        "Butler-SOS.userEvents.udpServerConfig.maxMessageSize: expected an integer 1-65507, got 70000",
        "Butler-SOS.userEvents.tags[0].value: missing",
        "sense-ingest.readerThreads: expected an integer 1-1024, got 0",
        "sense-ingest.backend: expected one of auto, io_uring, recvmmsg, got \"epoll\"",
    ];
    assert_eq!(err.to_string(), expected.join("\n"));
}

#[test]
fn secrets_never_appear_in_errors() {
    const SENTINEL: &str = "SECRET-SENTINEL-7f3a";
    let yaml = format!(
        "Butler-SOS:
  thirdPartyToolsCredentials:
    newRelic:
      - {{accountName: A, insertApiKey: [{SENTINEL}], accountId: '1'}}
      - {{accountName: B, insertApiKey: {SENTINEL}, accountId: {SENTINEL}}}
  userEvents:
    sendToInfluxdb: {{enable: true}}
    sendToNewRelic: {{enable: true, destinationAccount: [{SENTINEL}]}}
  newRelic:
    enable: true
    event:
      url: https://example.com
      header: [{{name: Api-Key, value: \"{SENTINEL}\\n\"}}]
  influxdbConfig:
    enable: true
    host: db
    version: 2
    v1Config: {{auth: {{enable: true, username: u, password: {{p: {SENTINEL}}}}}}}
    v2Config: {{org: o, bucket: b, token: {{t: {SENTINEL}}}}}
    v3Config: {{token: [{SENTINEL}]}}
"
    );
    let err = load_str(&yaml).unwrap_err();
    let text = format!("{err}\n{err:?}");
    assert_eq!(err.0.len(), 7, "{text}");
    assert!(!text.contains(SENTINEL), "{text}");
    assert!(
        text.contains("insertApiKey: expected a string, got a list (value not shown)"),
        "{text}"
    );
}

#[test]
fn loaded_config_debug_redacts_secrets() {
    let loaded = load_file(Path::new(FX_SCRAMBLE)).unwrap();
    let text = format!("{loaded:?}");
    assert!(!text.contains("NRII-fake-key"), "{text}");
    assert!(!text.contains("mytoken"), "{text}");
}

#[test]
fn wrong_shapes_are_clean_errors() {
    one_error(
        "Butler-SOS: {userEvents: [1, 2]}",
        "Butler-SOS.userEvents: expected a mapping, got a list",
    );
    one_error(
        "Butler-SOS: {userEvents: {tags: {name: a}}}",
        "Butler-SOS.userEvents.tags: expected a list, got a mapping",
    );
    one_error("Butler-SOS: 3", "Butler-SOS: expected a mapping, got 3");
    one_error(
        "- a\n- b\n",
        "(top level): expected a mapping with a Butler-SOS key, got a list",
    );
    one_error("", "Butler-SOS: missing");
    one_error("sense-ingest: {}", "Butler-SOS: missing");
    one_error(
        "Butler-SOS: {userEvents: {1: x}}",
        "Butler-SOS.userEvents.1: unknown key, expected one of: enable, excludeUser, udpServerConfig, tags, \
             sendToMQTT, sendToInfluxdb, sendToNewRelic",
    );
    one_error(
        "Butler-SOS: {logLevel: !custom info}",
        "Butler-SOS.logLevel: expected one of error, warn, info, verbose, debug, silly, got a value tagged \
             !custom",
    );
    one_error(
        "Butler-SOS: {userEvents: {excludeUser: [null]}}",
        "Butler-SOS.userEvents.excludeUser[0]: expected a mapping, got null",
    );
}

#[test]
fn odd_inputs_never_panic() {
    let inputs = [
        "Butler-SOS: {userEvents: {udpServerConfig: {portUserActivityEvents: -1}}}",
        "Butler-SOS: {userEvents: {udpServerConfig: {portUserActivityEvents: 1.5e300}}}",
        "Butler-SOS: {userEvents: {udpServerConfig: {portUserActivityEvents: .nan}}}",
        "Butler-SOS: {influxdbConfig: {v2Config: {retentionDuration: 99999999999999999999d}}}",
        "Butler-SOS: {influxdbConfig: {v2Config: {retentionDuration: 'µ'}}}",
        "sense-ingest: {batch: {maxAge: 18446744073709551615d}}\nButler-SOS: {}",
        "Butler-SOS: {newRelic: {event: {url: 'https://'}}}",
        "Butler-SOS: {userEvents: {sendToNewRelic: {destinationAccount: [[x], {a: 1}]}}}",
        "Butler-SOS: {userEvents: {udpServerConfig: {serverHost: '[::1'}}}",
        "Butler-SOS: &a {userEvents: *a}",
        "{",
        "Butler-SOS: {}\n---\nButler-SOS: {}\n",
    ];
    for input in inputs {
        let _ = load_str(input);
    }
}

#[test]
fn yaml_syntax_errors_have_a_location() {
    let err = load_str("Butler-SOS:\n  userEvents: [\n").unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].path, "<config>");
    assert!(err.0[0].message.starts_with("invalid yaml at line "), "{err}");
}

#[test]
fn unreadable_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.yaml");
    let err = load_file(&path).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].path, path.display().to_string());
    assert!(
        err.0[0]
            .message
            .starts_with("cannot read the config file: no such file"),
        "{err}"
    );
}

#[test]
fn load_file_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bsos.yaml");
    std::fs::write(&path, "Butler-SOS: {userEvents: {enable: true}}\n").unwrap();
    assert!(load_file(&path).unwrap().config.user_events.enable);
}

#[test]
fn windows_line_endings_and_byte_order_mark_are_fine() {
    let c = ok("\u{feff}Butler-SOS:\r\n  userEvents:\r\n    enable: true\r\n").config;
    assert!(c.user_events.enable);
}

#[test]
fn new_relic_headers_are_checked() {
    let yaml = "Butler-SOS:
  newRelic:
    event:
      url: https://insight-collector.newrelic.com
      header:
        - {name: X-Ok, value: fine}
        - {name: 'bad name', value: x}
";
    one_error(
        yaml,
        "Butler-SOS.newRelic.event.header[1].name: not a valid http header name: \"bad name\"",
    );
    let c = ok("Butler-SOS: {newRelic: {event: {header: [{name: X-A, value: 1}]}}}").config;
    assert_eq!(c.new_relic.event_headers, vec![tag("X-A", "1")]);
}

#[test]
fn durations_parse() {
    let ms = |t: &str| parse_duration(t, ENGINE_DURATION_UNITS, Some(1)).map(|d| d.as_millis());
    assert_eq!(ms("250"), Some(250));
    assert_eq!(ms("250ms"), Some(250));
    assert_eq!(ms("10s"), Some(10_000));
    assert_eq!(ms("1m 30s"), Some(90_000));
    assert_eq!(ms("2h"), Some(7_200_000));
    assert_eq!(ms("0"), Some(0));
    for bad in ["", "s", "10", "10x", "1.5s", "-1s", "10s5"] {
        if bad != "10" {
            assert_eq!(ms(bad), None, "{bad}");
        }
    }
    let retention = |t: &str| parse_duration(t, RETENTION_UNITS, None);
    assert_eq!(retention("30d"), Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(retention("2w"), Some(Duration::from_secs(14 * 86_400)));
    assert_eq!(retention("10"), None);
    assert!(is_influxql_duration("INF") && is_influxql_duration("1h30m") && !is_influxql_duration("10days"));
}

#[test]
fn suggestions_catch_case_and_small_typos() {
    assert_eq!(suggest("sendToInfluxDB", USER_EVENTS_KEYS), Some("sendToInfluxdb"));
    assert_eq!(suggest("udpServerConfg", USER_EVENTS_KEYS), Some("udpServerConfig"));
    assert_eq!(suggest("zzz", USER_EVENTS_KEYS), None);
}
