//! The keys each section accepts, and the reasons given when a setting is required.

pub(super) const TOP_KEYS: &[&str] = &["Butler-SOS", "sense-ingest"];

pub(super) const USER_EVENTS_KEYS: &[&str] = &[
    "enable",
    "excludeUser",
    "udpServerConfig",
    "tags",
    "sendToMQTT",
    "sendToInfluxdb",
    "sendToNewRelic",
];
pub(super) const EXCLUDE_USER_KEYS: &[&str] = &["directory", "userId"];
pub(super) const UDP_KEYS: &[&str] = &[
    "serverHost",
    "portUserActivityEvents",
    "messageQueue",
    "rateLimit",
    "maxMessageSize",
    "enableSourceValidation",
    "allowedSources",
    "queueMetrics",
];
pub(super) const MESSAGE_QUEUE_KEYS: &[&str] = &["maxConcurrent", "maxSize", "backpressureThreshold"];
pub(super) const RATE_LIMIT_KEYS: &[&str] = &["enable", "maxMessagesPerMinute"];
pub(super) const QUEUE_METRICS_KEYS: &[&str] = &["influxdb"];
pub(super) const QUEUE_METRICS_INFLUX_KEYS: &[&str] = &["enable", "writeFrequency", "measurementName", "tags"];
pub(super) const TAG_KEYS: &[&str] = &["name", "tag", "value"];
pub(super) const SEND_TO_MQTT_KEYS: &[&str] = &["enable", "postTo"];
pub(super) const POST_TO_KEYS: &[&str] = &[
    "everythingTopic",
    "sessionStartTopic",
    "sessionStopTopic",
    "connectionOpenTopic",
    "connectionCloseTopic",
];
pub(super) const TOPIC_KEYS: &[&str] = &["enable", "topic"];
pub(super) const SEND_TO_INFLUX_KEYS: &[&str] = &["enable"];
pub(super) const SEND_TO_NEW_RELIC_KEYS: &[&str] = &["enable", "destinationAccount", "scramble"];

pub(super) const INFLUX_KEYS: &[&str] = &[
    "enable",
    "host",
    "port",
    "version",
    "maxBatchSize",
    "v1Config",
    "v2Config",
    "v3Config",
    "includeFields",
    "failedPollsTracking",
];
pub(super) const INFLUX_V1_KEYS: &[&str] = &["auth", "dbName", "retentionPolicy"];
pub(super) const INFLUX_V1_AUTH_KEYS: &[&str] = &["enable", "username", "password"];
pub(super) const INFLUX_V1_RP_KEYS: &[&str] = &["name", "duration"];
pub(super) const INFLUX_V2_KEYS: &[&str] = &["org", "bucket", "description", "token", "retentionDuration"];
pub(super) const INFLUX_V3_KEYS: &[&str] = &[
    "database",
    "description",
    "token",
    "retentionDuration",
    "writeTimeout",
    "queryTimeout",
];

pub(super) const MQTT_KEYS: &[&str] = &[
    "enable",
    "brokerHost",
    "brokerPort",
    "baseTopic",
    "tls",
    "username",
    "password",
    "clientId",
    "qos",
    "retain",
    "keepAlive",
];
pub(super) const MQTT_TLS_KEYS: &[&str] = &["enable", "caFile"];
pub(super) const NEW_RELIC_KEYS: &[&str] = &["enable", "event", "metric"];
pub(super) const NEW_RELIC_EVENT_KEYS: &[&str] = &["url", "header", "attribute"];
pub(super) const NEW_RELIC_ACCOUNT_KEYS: &[&str] = &["accountName", "insertApiKey", "accountId"];
pub(super) const PROMETHEUS_KEYS: &[&str] = &["enable", "host", "port"];

pub(super) const QSE_KEYS: &[&str] = &["influxdb", "eventCount", "rejectedEventCount"];
pub(super) const QSE_INFLUX_KEYS: &[&str] = &["enable", "writeFrequency"];
pub(super) const EVENT_COUNT_KEYS: &[&str] = &["enable", "influxdb"];
pub(super) const EVENT_COUNT_INFLUX_KEYS: &[&str] = &["measurementName", "tags"];
pub(super) const REJECTED_COUNT_KEYS: &[&str] = &["enable", "influxdb"];
pub(super) const REJECTED_COUNT_INFLUX_KEYS: &[&str] = &["measurementName"];

pub(super) const ENGINE_KEYS: &[&str] = &[
    "readerThreads",
    "backend",
    "recvBufferBytes",
    "eventsPerSlab",
    "channelCapacity",
    "batch",
    "retry",
    "stdout",
    "appNames",
    "shutdownTimeout",
    "listen",
    "spool",
    "unhealthyAfter",
    "analytics",
    "silentHostAfter",
    "influxdbTls",
    "newRelicTls",
    "logFormat",
    "metrics",
];
pub(super) const ENGINE_METRICS_KEYS: &[&str] = &["listen"];
pub(super) const ENGINE_INFLUX_TLS_KEYS: &[&str] = &["enable", "caFile", "insecureSkipVerify"];
pub(super) const ENGINE_NEW_RELIC_TLS_KEYS: &[&str] = &["caFile", "insecureSkipVerify"];
pub(super) const ENGINE_ANALYTICS_KEYS: &[&str] = &["enable", "orphanAfter", "gaugeInterval", "maxTracked"];
pub(super) const ENGINE_SPOOL_KEYS: &[&str] = &["enable", "dir", "maxBytes", "memoryBytes", "fsyncInterval"];
pub(super) const ENGINE_BATCH_KEYS: &[&str] = &["maxEvents", "maxBytes", "maxAge"];
pub(super) const ENGINE_RETRY_KEYS: &[&str] = &["maxAttempts", "initialBackoff", "maxBackoff"];

/// Why InfluxDB settings are required.
pub(super) const INFLUX_NEEDED: &str =
    "required when influxdbConfig.enable and userEvents.sendToInfluxdb.enable are true";
/// Why InfluxDB settings are required when only Butler SOS's own metrics use the connection.
pub(super) const INFLUX_NEEDED_FOR_METRICS: &str = "required when influxdbConfig.enable is true and event counts \
     (qlikSenseEvents.influxdb.enable with eventCount.enable) or userEvents.udpServerConfig.queueMetrics.influxdb.enable \
     write to it";
/// Butler SOS's template value of both `writeFrequency` settings, in milliseconds.
pub(super) const DEFAULT_METRICS_WRITE_MS: u64 = 20_000;
/// Why a metrics setting is required.
pub(super) const EVENT_COUNT_NEEDED: &str = "required when qlikSenseEvents.eventCount.enable is true";
/// Why MQTT settings are required.
pub(super) const MQTT_NEEDED: &str = "required when mqttConfig.enable and userEvents.sendToMQTT.enable are true";
/// Why New Relic settings are required.
pub(super) const NEW_RELIC_NEEDED: &str = "required when newRelic.enable and userEvents.sendToNewRelic.enable are true";
/// Why InfluxDB v1 credentials are required.
pub(super) const AUTH_NEEDED: &str = "required when auth.enable is true";
