//! Stage two of config loading: walk the YAML tree, collect every error with its key path, build [`Config`].
//!
//! The walker is small and path-aware: a `Node` is a value (or its absence) plus its full key path, and each
//! typed reader (`bool_or`, `text`, `port`, `uint`, `duration`, `list`, ...) either returns the value or records a
//! [`ConfigError`] at that path and returns nothing, so the caller carries on with a default and every problem in
//! the file is reported in one go.
//!
//! # Rules
//! - The top level holds `Butler-SOS` (required) and optionally `sense-ingest` (engine settings); any other
//!   top-level key is an error.
//! - Inside `Butler-SOS`, only `logLevel`, `userEvents`, `influxdbConfig`, `mqttConfig`, `newRelic`,
//!   `thirdPartyToolsCredentials.newRelic`, `qlikSenseEvents` and `prometheus` are read. Every other section is
//!   ignored without being type-checked (so is every key of `thirdPartyToolsCredentials` other than `newRelic`).
//! - Inside a section that is read, every key Butler SOS documents is accepted and any other key is an error
//!   (`unknown key, expected one of: ...`). A few subtrees sense-ingest has no use for are accepted whole:
//!   `newRelic.metric`, `newRelic.event.attribute`, `influxdbConfig.includeFields` and
//!   `influxdbConfig.failedPollsTracking`.
//! - YAML `null` means "not set" everywhere: a null section reads as empty, a null list as no items, a null scalar
//!   as its default.
//! - A value that is present is always checked (type, range, format). A value that is missing gets its default,
//!   unless the feature it belongs to is in use (for example InfluxDB settings when both `influxdbConfig.enable`
//!   and `userEvents.sendToInfluxdb.enable` are true); then it is required.
//! - Secrets (`password`, `token`, `insertApiKey`) are never quoted in an error message.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_norway::{Mapping, Value};

use super::error::{ConfigError, ConfigErrors};
use super::{layers, raw};
use super::{spool_folder_name, DEFAULT_SPOOL_DIR, MAX_FOLDER_NAME_BYTES};
use super::{
    BatchConfig, Config, EngineConfig, ExcludedUser, HttpTls, InfluxConfig, InfluxV1Config, InfluxV2Config,
    InfluxV3Config, InfluxVersion, LogFormat, LogLevel, MetricsWriteConfig, MqttConfig, MqttRouting, MqttTls,
    NewRelicAccount, NewRelicConfig, NewRelicRouting, PrometheusConfig, ReaderBackend, RetryConfig, Secret, Tag,
    UdpServerConfig, UserEventsConfig,
};

/// A loaded, valid configuration. Debug leaves the raw tree out (it holds secrets in the clear).
#[derive(Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Key paths of Butler SOS settings that are accepted and switched on (or set to non-default values) but not
    /// implemented by sense-ingest yet, e.g. `Butler-SOS.userEvents.udpServerConfig.rateLimit.enable`. The caller
    /// logs them once at info.
    pub not_implemented: Vec<String>,
    /// The merged YAML tree the config was built from (a SIGHUP compares it with the new one to name what
    /// changed; never logged, it holds secrets).
    pub tree: Value,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("config", &self.config)
            .field("not_implemented", &self.not_implemented)
            .finish_non_exhaustive()
    }
}

/// Reads and validates the config file at `path`. A file that cannot be read is reported as one [`ConfigError`]
/// whose path is the file's path; YAML syntax errors likewise, with line and column in the message.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    load_files(&[path.to_path_buf()])
}

/// Reads the config files in order, each later one laid over the earlier ones (see [`super::layers`]: environment
/// values, relative paths, merge), and validates the result: what `run` and `check-config` both do. Every problem
/// of every file comes back together; with more than one file each names the file that set the key.
pub fn load_files(paths: &[PathBuf]) -> Result<Loaded, ConfigErrors> {
    load_files_with_env(paths, &|name| std::env::var(name).ok())
}

/// [`load_files`] with the environment read through `lookup` (tests).
pub fn load_files_with_env(paths: &[PathBuf], lookup: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigErrors> {
    let mut tree = layers::empty();
    let mut origins = layers::Origins::default();
    let mut errors = Vec::new();
    for path in paths {
        let origin = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                let message = format!("cannot read the config file: {}", lower_first(&err.to_string()));
                errors.push(ConfigError::new(origin.as_str(), message));
                continue;
            }
        };
        let mut value = match raw::parse(&text, &origin) {
            Ok(value) => value,
            Err(err) => {
                errors.push(err);
                continue;
            }
        };
        layers::interpolate(&mut value, "", &origin, lookup, &mut errors);
        layers::anchor_paths(&mut value, folder_of(path));
        if !value.is_null() {
            layers::merge(&mut tree, value, "", &origin, &mut origins);
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let mut loaded = validate_tree(&tree, true).map_err(|mut errors| {
        if paths.len() > 1 {
            for err in &mut errors.0 {
                err.file = origins.file_of(&err.path).map(str::to_owned);
            }
        }
        errors
    })?;
    // The spool defaults to a folder next to the last config file (sense-ingest's own, in a layered setup).
    let engine = &mut loaded.config.engine;
    if engine.spool.dir.is_none() {
        let last = paths.last().map_or(Path::new("."), |p| folder_of(p));
        engine.spool.dir = Some(last.join(DEFAULT_SPOOL_DIR));
    }
    Ok(loaded)
}

/// The folder a config file is in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Validates config text (YAML syntax errors are reported at path `<config>`).
pub fn load_str(yaml: &str) -> Result<Loaded, ConfigErrors> {
    let root = raw::parse(yaml, "<config>").map_err(|err| ConfigErrors(vec![err]))?;
    validate_tree(&root, false)
}

/// Validates a parsed config. `runnable`: the config is for `run` or `check-config` (both go through
/// [`load_files`], so both refuse the same files), which need user events on.
fn validate_tree(root: &Value, runnable: bool) -> Result<Loaded, ConfigErrors> {
    let mut report = Report {
        runnable,
        ..Report::default()
    };
    let config = build_config(root, &mut report);
    if report.errors.is_empty() {
        Ok(Loaded {
            config,
            not_implemented: report.not_implemented,
            tree: root.clone(),
        })
    } else {
        Err(ConfigErrors(report.errors))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Accepted keys, per section.

const TOP_KEYS: &[&str] = &["Butler-SOS", "sense-ingest"];

const USER_EVENTS_KEYS: &[&str] = &[
    "enable",
    "excludeUser",
    "udpServerConfig",
    "tags",
    "sendToMQTT",
    "sendToInfluxdb",
    "sendToNewRelic",
];
const EXCLUDE_USER_KEYS: &[&str] = &["directory", "userId"];
const UDP_KEYS: &[&str] = &[
    "serverHost",
    "portUserActivityEvents",
    "messageQueue",
    "rateLimit",
    "maxMessageSize",
    "enableSourceValidation",
    "allowedSources",
    "queueMetrics",
];
const MESSAGE_QUEUE_KEYS: &[&str] = &["maxConcurrent", "maxSize", "backpressureThreshold"];
const RATE_LIMIT_KEYS: &[&str] = &["enable", "maxMessagesPerMinute"];
const QUEUE_METRICS_KEYS: &[&str] = &["influxdb"];
const QUEUE_METRICS_INFLUX_KEYS: &[&str] = &["enable", "writeFrequency", "measurementName", "tags"];
const TAG_KEYS: &[&str] = &["name", "tag", "value"];
const SEND_TO_MQTT_KEYS: &[&str] = &["enable", "postTo"];
const POST_TO_KEYS: &[&str] = &[
    "everythingTopic",
    "sessionStartTopic",
    "sessionStopTopic",
    "connectionOpenTopic",
    "connectionCloseTopic",
];
const TOPIC_KEYS: &[&str] = &["enable", "topic"];
const SEND_TO_INFLUX_KEYS: &[&str] = &["enable"];
const SEND_TO_NEW_RELIC_KEYS: &[&str] = &["enable", "destinationAccount", "scramble"];

const INFLUX_KEYS: &[&str] = &[
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
const INFLUX_V1_KEYS: &[&str] = &["auth", "dbName", "retentionPolicy"];
const INFLUX_V1_AUTH_KEYS: &[&str] = &["enable", "username", "password"];
const INFLUX_V1_RP_KEYS: &[&str] = &["name", "duration"];
const INFLUX_V2_KEYS: &[&str] = &["org", "bucket", "description", "token", "retentionDuration"];
const INFLUX_V3_KEYS: &[&str] = &[
    "database",
    "description",
    "token",
    "retentionDuration",
    "writeTimeout",
    "queryTimeout",
];

const MQTT_KEYS: &[&str] = &[
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
const MQTT_TLS_KEYS: &[&str] = &["enable", "caFile"];
const NEW_RELIC_KEYS: &[&str] = &["enable", "event", "metric"];
const NEW_RELIC_EVENT_KEYS: &[&str] = &["url", "header", "attribute"];
const NEW_RELIC_ACCOUNT_KEYS: &[&str] = &["accountName", "insertApiKey", "accountId"];
const PROMETHEUS_KEYS: &[&str] = &["enable", "host", "port"];

const QSE_KEYS: &[&str] = &["influxdb", "eventCount", "rejectedEventCount"];
const QSE_INFLUX_KEYS: &[&str] = &["enable", "writeFrequency"];
const EVENT_COUNT_KEYS: &[&str] = &["enable", "influxdb"];
const EVENT_COUNT_INFLUX_KEYS: &[&str] = &["measurementName", "tags"];
const REJECTED_COUNT_KEYS: &[&str] = &["enable", "influxdb"];
const REJECTED_COUNT_INFLUX_KEYS: &[&str] = &["measurementName"];

const ENGINE_KEYS: &[&str] = &[
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
const ENGINE_METRICS_KEYS: &[&str] = &["listen"];
const ENGINE_INFLUX_TLS_KEYS: &[&str] = &["enable", "caFile", "insecureSkipVerify"];
const ENGINE_NEW_RELIC_TLS_KEYS: &[&str] = &["caFile", "insecureSkipVerify"];
const ENGINE_ANALYTICS_KEYS: &[&str] = &["enable", "orphanAfter", "gaugeInterval", "maxTracked"];
const ENGINE_SPOOL_KEYS: &[&str] = &["enable", "dir", "maxBytes", "memoryBytes", "fsyncInterval"];
const ENGINE_BATCH_KEYS: &[&str] = &["maxEvents", "maxBytes", "maxAge"];
const ENGINE_RETRY_KEYS: &[&str] = &["maxAttempts", "initialBackoff", "maxBackoff"];

/// Why InfluxDB settings are required.
const INFLUX_NEEDED: &str = "required when influxdbConfig.enable and userEvents.sendToInfluxdb.enable are true";
/// Why InfluxDB settings are required when only Butler SOS's own metrics use the connection.
const INFLUX_NEEDED_FOR_METRICS: &str = "required when influxdbConfig.enable is true and event counts \
     (qlikSenseEvents.influxdb.enable with eventCount.enable) or userEvents.udpServerConfig.queueMetrics.influxdb.enable \
     write to it";
/// Butler SOS's template value of both `writeFrequency` settings, in milliseconds.
const DEFAULT_METRICS_WRITE_MS: u64 = 20_000;
/// Why a metrics setting is required.
const EVENT_COUNT_NEEDED: &str = "required when qlikSenseEvents.eventCount.enable is true";
/// Why MQTT settings are required.
const MQTT_NEEDED: &str = "required when mqttConfig.enable and userEvents.sendToMQTT.enable are true";
/// Why New Relic settings are required.
const NEW_RELIC_NEEDED: &str = "required when newRelic.enable and userEvents.sendToNewRelic.enable are true";
/// Why InfluxDB v1 credentials are required.
const AUTH_NEEDED: &str = "required when auth.enable is true";

/// Units of engine durations (`sense-ingest.*`), in milliseconds; a bare integer is milliseconds.
const ENGINE_DURATION_UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];
/// Units of InfluxDB 2 retention durations (`v2Config.retentionDuration`), in milliseconds.
const RETENTION_UNITS: &[(&str, u64)] = &[
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];
/// Units of InfluxQL durations (`v1Config.retentionPolicy.duration`); only the syntax is checked, so the
/// multipliers do not matter.
const INFLUXQL_UNITS: &[(&str, u64)] = &[
    ("ns", 0),
    ("u", 0),
    ("µ", 0),
    ("ms", 1),
    ("s", 1),
    ("m", 1),
    ("h", 1),
    ("d", 1),
    ("w", 1),
];

// ---------------------------------------------------------------------------------------------------------------
// The walker.

/// Collected errors and not-implemented key paths.
#[derive(Default)]
struct Report {
    errors: Vec<ConfigError>,
    not_implemented: Vec<String>,
    /// A file for `run` or `check-config` (not a fragment in a test): `userEvents.enable` must be true.
    runnable: bool,
}

impl Report {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    /// Records a setting that is accepted and switched on but not implemented (none today; kept so the next
    /// such setting is reported the same way).
    #[allow(dead_code)]
    fn not_implemented(&mut self, path: &str) {
        self.not_implemented.push(path.to_owned());
    }
}

/// A value in the tree (or its absence) with its full key path.
#[derive(Clone)]
struct Node<'a> {
    value: Option<&'a Value>,
    path: String,
}

/// A mapping in the tree (empty when absent, null or of the wrong type) with its key path.
struct Map<'a> {
    map: Option<&'a Mapping>,
    path: String,
}

/// `parent.key`, or `key` at the top level.
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl<'a> Map<'a> {
    /// The value at `key` (absent if not set).
    fn get(&self, key: &str) -> Node<'a> {
        Node {
            value: self.map.and_then(|m| m.get(key)),
            path: join(&self.path, key),
        }
    }
}

impl<'a> Node<'a> {
    /// The value, with YAML null read as absent. A tagged value (`!tag x`) is kept as such, so every typed reader
    /// rejects it (js-yaml, which Butler SOS uses, rejects unknown tags too).
    fn present(&self) -> Option<&'a Value> {
        self.value.filter(|v| !matches!(v, Value::Null))
    }

    /// True when a non-null value is set.
    fn is_set(&self) -> bool {
        self.present().is_some()
    }

    /// This node as a mapping whose keys must all be in `keys` (each other key is an error). Absent or null reads
    /// as an empty mapping; another type is an error and also reads as empty.
    fn mapping(&self, rep: &mut Report, keys: &[&str]) -> Map<'a> {
        let map = self.as_mapping(rep);
        if let Some(map) = map {
            check_keys(map, &self.path, keys, rep);
        }
        Map {
            map,
            path: self.path.clone(),
        }
    }

    /// Like [`Node::mapping`], but any key is accepted (for sections where we read only some keys).
    fn open_mapping(&self, rep: &mut Report) -> Map<'a> {
        Map {
            map: self.as_mapping(rep),
            path: self.path.clone(),
        }
    }

    /// A list item that must be a mapping with keys from `keys`: `None` (and an error) when it is not one.
    fn item_mapping(&self, rep: &mut Report, keys: &[&str]) -> Option<Map<'a>> {
        match self.value {
            Some(Value::Mapping(map)) => {
                check_keys(map, &self.path, keys, rep);
                Some(Map {
                    map: Some(map),
                    path: self.path.clone(),
                })
            }
            other => {
                rep.error(
                    &self.path,
                    format!("expected a mapping, got {}", describe(other.unwrap_or(&Value::Null))),
                );
                None
            }
        }
    }

    fn as_mapping(&self, rep: &mut Report) -> Option<&'a Mapping> {
        match self.present()? {
            Value::Mapping(map) => Some(map),
            other => {
                rep.error(&self.path, format!("expected a mapping, got {}", describe(other)));
                None
            }
        }
    }

    /// The items of a list, each with its `[i]` path. Absent or null is an empty list.
    fn list(&self, rep: &mut Report) -> Vec<Node<'a>> {
        match self.present() {
            None => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, value)| Node {
                    value: Some(value),
                    path: format!("{}[{i}]", self.path),
                })
                .collect(),
            Some(other) => {
                rep.error(&self.path, format!("expected a list, got {}", describe(other)));
                Vec::new()
            }
        }
    }

    /// A boolean, `default` when not set.
    fn bool_or(&self, rep: &mut Report, default: bool) -> bool {
        match self.present() {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                rep.error(&self.path, format!("expected true or false, got {}", describe(other)));
                default
            }
        }
    }

    /// A string (a number is taken as its text), `None` when not set or of the wrong type.
    fn text(&self, rep: &mut Report) -> Option<String> {
        match self.present()? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            other => {
                rep.error(&self.path, format!("expected a string, got {}", describe(other)));
                None
            }
        }
    }

    /// A string, `default` when not set.
    fn text_or(&self, rep: &mut Report, default: &str) -> String {
        self.text(rep).unwrap_or_else(|| default.to_owned())
    }

    /// A string that must be set and non-empty when `needed` is `Some(why)`; otherwise like [`Node::text`] with
    /// an empty default.
    fn needed_text(&self, rep: &mut Report, needed: Option<&str>) -> String {
        let value = self.text(rep);
        if let Some(why) = needed {
            match &value {
                None if !self.is_set() => rep.error(&self.path, format!("missing ({why})")),
                Some(s) if s.trim().is_empty() => rep.error(&self.path, format!("must not be empty ({why})")),
                _ => {}
            }
        }
        value.unwrap_or_default()
    }

    /// A secret: like [`Node::needed_text`], but no message ever shows the value.
    fn needed_secret(&self, rep: &mut Report, needed: Option<&str>) -> Secret {
        let value = match self.present() {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                rep.error(
                    &self.path,
                    format!("expected a string, got {} (value not shown)", kind(other)),
                );
                None
            }
        };
        if let Some(why) = needed {
            match &value {
                None if !self.is_set() => rep.error(&self.path, format!("missing ({why})")),
                Some(s) if s.trim().is_empty() => rep.error(&self.path, format!("must not be empty ({why})")),
                _ => {}
            }
        }
        Secret::new(value.unwrap_or_default())
    }

    /// A non-negative integer (a YAML integer, an integral float or a numeric string), without range check or
    /// error; `None` also when not set.
    fn integer(&self) -> Option<u64> {
        match self.present()? {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                    .map(|f| f as u64)
            }),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
    }

    /// An integer in `min..=max`, `None` when not set or invalid.
    fn uint(&self, rep: &mut Report, min: u64, max: u64) -> Option<u64> {
        let value = self.present()?;
        match self.integer() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                rep.error(
                    &self.path,
                    format!("expected an integer {min}-{max}, got {}", describe(value)),
                );
                None
            }
        }
    }

    /// A port number 1-65535 (0 too with `allow_zero`, meaning "any free port"), `None` when not set or invalid.
    fn port(&self, rep: &mut Report, allow_zero: bool) -> Option<u16> {
        let value = self.present()?;
        let min = u64::from(!allow_zero);
        match self
            .integer()
            .filter(|n| (min..=65535).contains(n))
            .and_then(|n| u16::try_from(n).ok())
        {
            Some(port) => Some(port),
            None => {
                rep.error(
                    &self.path,
                    format!("expected a port number 1-65535, got {}", describe(value)),
                );
                None
            }
        }
    }

    /// An engine duration: an integer (milliseconds) or text like `250ms`, `10s`, `1m30s`.
    fn duration(&self, rep: &mut Report) -> Option<Duration> {
        let value = self.present()?;
        let parsed = match value {
            Value::Number(_) => self.integer().map(Duration::from_millis),
            Value::String(s) => parse_duration(s, ENGINE_DURATION_UNITS, Some(1)),
            _ => None,
        };
        if parsed.is_none() {
            rep.error(
                &self.path,
                format!(
                    "expected a duration like 250ms, 10s or 1m (units ms, s, m, h, d; a bare integer is milliseconds), \
                     got {}",
                    describe(value)
                ),
            );
        }
        parsed
    }

    /// One of `options` (matched exactly), `None` when not set or invalid.
    fn choice<T: Copy>(&self, rep: &mut Report, options: &[(&str, T)]) -> Option<T> {
        let value = self.present()?;
        let found = match value {
            Value::String(s) => options.iter().find(|(name, _)| name == s).map(|(_, v)| *v),
            _ => None,
        };
        if found.is_none() {
            let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
            rep.error(
                &self.path,
                format!("expected one of {}, got {}", names.join(", "), describe(value)),
            );
        }
        found
    }
}

/// Reports each key of `map` that is not in `keys`.
fn check_keys(map: &Mapping, path: &str, keys: &[&str], rep: &mut Report) {
    for key in map.keys() {
        let (name, is_known) = match key {
            Value::String(s) => (s.clone(), keys.contains(&s.as_str())),
            other => (describe(other), false),
        };
        if !is_known {
            let mut message = format!("unknown key, expected one of: {}", keys.join(", "));
            if let Some(hint) = suggest(&name, keys) {
                message.push_str(&format!(" (did you mean {hint}?)"));
            }
            rep.error(&join(path, &name), message);
        }
    }
}

/// The accepted key closest to a misspelt `key`: equal ignoring case, or within two edits.
fn suggest<'k>(key: &str, keys: &[&'k str]) -> Option<&'k str> {
    if let Some(k) = keys.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        return Some(k);
    }
    keys.iter()
        .map(|k| (edit_distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2 && k.len() > 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars (keys are short, so the simple O(n·m) table is fine).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur.push(substitution.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A short, quotable description of a (non-secret) value for error messages.
fn describe(value: &Value) -> String {
    const MAX_CHARS: usize = 60;
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() > MAX_CHARS => {
            let short: String = s.chars().take(MAX_CHARS).collect();
            format!("{short:?}…")
        }
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

/// The type of a value, for messages about secrets (which must not show the value).
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(_) => "a number".to_owned(),
        Value::String(_) => "a string".to_owned(),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        // `!secret` would put the secret in the tag: never show it.
        Value::Tagged(_) => "a tagged value".to_owned(),
    }
}

/// Largest CA bundle read (a system bundle is ~200 KB).
pub const MAX_CA_FILE_BYTES: u64 = 4 << 20;

/// Reads a regular file of at most [`MAX_CA_FILE_BYTES`]; a device, FIFO or huge file is an error rather than a
/// hang or an out-of-memory (`/dev/zero`, `/dev/stdin`). Validation and the TLS setup of the sinks (which read
/// CA files again at start) both use it, so they apply the same bound.
pub fn read_small_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut data = Vec::new();
    file.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(std::io::Error::other(format!("larger than {MAX_CA_FILE_BYTES} bytes")));
    }
    Ok(data)
}

/// `text` with its first character lowercased (for OS error texts in our lowercase messages).
fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Quietly follows `keys` from `value` and reads a boolean: `false` when any step is missing or of another type
/// (the proper read, later, reports type errors). Used to decide whether a feature is in use before its section
/// is validated.
fn peek_bool(value: Option<&Value>, keys: &[&str]) -> bool {
    peek(value, keys).and_then(Value::as_bool).unwrap_or(false)
}

/// Quietly follows `keys` from `value`.
fn peek<'a>(value: Option<&'a Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(value?, |v, key| v.as_mapping()?.get(*key))
}

/// Parses a duration: one or more `<integer><unit>` parts (optionally separated by spaces), units from `units`
/// (name, milliseconds). A bare integer is `0`, or with `bare_unit_ms` that many units of it. `None` when the text
/// is not a valid duration or overflows.
fn parse_duration(text: &str, units: &[(&str, u64)], bare_unit_ms: Option<u64>) -> Option<Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = text.parse().ok()?;
        return if n == 0 {
            Some(Duration::ZERO)
        } else {
            n.checked_mul(bare_unit_ms?).map(Duration::from_millis)
        };
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        let after = rest[digits..].trim_start();
        let unit_len = after.find(|c: char| !c.is_alphabetic()).unwrap_or(after.len());
        let (_, unit_ms) = units.iter().find(|(unit, _)| *unit == &after[..unit_len])?;
        total_ms = total_ms.checked_add(n.checked_mul(*unit_ms)?)?;
        rest = after[unit_len..].trim_start();
        parts += 1;
    }
    (parts > 0).then(|| Duration::from_millis(total_ms))
}

/// True for an InfluxQL retention duration: `INF`, `0`, or `<integer><unit>` parts (units ns, u, µ, ms, s, m, h,
/// d, w).
fn is_influxql_duration(text: &str) -> bool {
    let text = text.trim();
    text.eq_ignore_ascii_case("inf") || parse_duration(text, INFLUXQL_UNITS, None).is_some()
}

/// True for a hostname made of dot-separated labels of ASCII letters, digits and `-` (RFC 1123; `_` is tolerated
/// because some internal DNS uses it).
pub fn is_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// True for an HTTP header name (RFC 9110 token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

// ---------------------------------------------------------------------------------------------------------------
// Sections.

/// Which destinations user events go to: each needs its global switch and its `userEvents.sendToX.enable`.
struct InUse {
    influxdb: bool,
    /// Event counts are written (`influxdbConfig.enable`, `qlikSenseEvents.influxdb.enable`, `eventCount.enable`).
    event_count: bool,
    /// Queue metrics are written (`influxdbConfig.enable`, `udpServerConfig.queueMetrics.influxdb.enable`).
    queue_metrics: bool,
    mqtt: bool,
    new_relic: bool,
}

/// Walks the whole file.
fn build_config(root: &Value, rep: &mut Report) -> Config {
    let mut config = Config::default();
    let top = match root {
        Value::Mapping(_) => Node {
            value: Some(root),
            path: String::new(),
        }
        .mapping(rep, TOP_KEYS),
        Value::Null => {
            rep.error("Butler-SOS", "missing");
            return config;
        }
        other => {
            rep.error(
                "(top level)",
                format!("expected a mapping with a Butler-SOS key, got {}", describe(other)),
            );
            return config;
        }
    };

    let bsos_node = top.get("Butler-SOS");
    if !bsos_node.is_set() {
        rep.error(&bsos_node.path, "missing");
    }
    let bsos = bsos_node.open_mapping(rep);
    let raw_bsos = bsos_node.present();
    let in_use = InUse {
        influxdb: peek_bool(raw_bsos, &["influxdbConfig", "enable"])
            && peek_bool(raw_bsos, &["userEvents", "sendToInfluxdb", "enable"]),
        event_count: peek_bool(raw_bsos, &["influxdbConfig", "enable"])
            && peek_bool(raw_bsos, &["qlikSenseEvents", "influxdb", "enable"])
            && peek_bool(raw_bsos, &["qlikSenseEvents", "eventCount", "enable"]),
        queue_metrics: peek_bool(raw_bsos, &["influxdbConfig", "enable"])
            && peek_bool(
                raw_bsos,
                &["userEvents", "udpServerConfig", "queueMetrics", "influxdb", "enable"],
            ),
        mqtt: peek_bool(raw_bsos, &["mqttConfig", "enable"])
            && peek_bool(raw_bsos, &["userEvents", "sendToMQTT", "enable"]),
        new_relic: peek_bool(raw_bsos, &["newRelic", "enable"])
            && peek_bool(raw_bsos, &["userEvents", "sendToNewRelic", "enable"]),
    };

    if let Some(level) = bsos.get("logLevel").choice(
        rep,
        &[
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("verbose", LogLevel::Verbose),
            ("debug", LogLevel::Debug),
            ("silly", LogLevel::Silly),
        ],
    ) {
        config.log_level = level;
    }
    // Butler SOS's file logging (its template has `fileLogging: true`, `logDirectory: log`).
    let log_dir = bsos.get("logDirectory").text_or(rep, "log");
    if bsos.get("fileLogging").bool_or(rep, false) {
        config.logging.file_dir = Some(PathBuf::from(log_dir));
    }

    let listen_overridden =
        peek(top.get("sense-ingest").present(), &["listen"]).is_some_and(|v| !matches!(v, Value::Null));
    let accounts = new_relic_accounts(&bsos.get("thirdPartyToolsCredentials"), rep);
    let influx_needed = if in_use.influxdb {
        Some(INFLUX_NEEDED)
    } else if in_use.event_count || in_use.queue_metrics {
        Some(INFLUX_NEEDED_FOR_METRICS)
    } else {
        None
    };
    config.influxdb = influx_config(&bsos.get("influxdbConfig"), influx_needed, rep);
    config.mqtt = mqtt_config(&bsos.get("mqttConfig"), in_use.mqtt, rep);
    config.new_relic = new_relic_config(&bsos.get("newRelic"), in_use.new_relic, rep);
    config.prometheus = prometheus_config(&bsos.get("prometheus"), rep);
    config.event_count = qlik_sense_events(&bsos.get("qlikSenseEvents"), in_use.event_count, rep);
    config.user_events = user_events(&bsos.get("userEvents"), &config, &accounts, listen_overridden, rep);

    let (engine, extras) = engine_config(&top.get("sense-ingest"), &in_use, &config.new_relic.event_url, rep);
    config.engine = engine;
    if let Some(listen) = extras.listen {
        config.user_events.udp.listen = listen;
    }
    config.influxdb.tls = extras.influxdb_tls;
    if let Some(format) = extras.log_format {
        config.logging.format = format;
    }
    config.new_relic.tls = extras.new_relic_tls;
    let routing = &config.user_events.send_to_new_relic;
    if config.engine.spool.enable && routing.enable {
        for account in &routing.accounts {
            if spool_folder_name(&account.destination_name()).len() > MAX_FOLDER_NAME_BYTES {
                rep.error(
                    "Butler-SOS.thirdPartyToolsCredentials.newRelic",
                    format!(
                        "accountName {:?} is too long for its spool folder's name (at most {MAX_FOLDER_NAME_BYTES} \
                         bytes once every character other than letters, digits, - and _ is written as %XX)",
                        account.name
                    ),
                );
            }
        }
    }
    config
}

/// `Butler-SOS.userEvents`. `config` carries the destinations' global switches (already read).
fn user_events(
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
fn udp_server(node: &Node<'_>, listen_overridden: bool, influx_enable: bool, rep: &mut Report) -> UdpServerConfig {
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
fn resolve(host: &str, port: u16, path: &str, rep: &mut Report) -> Option<SocketAddr> {
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

/// A Butler SOS tag list (`userEvents.tags`, queue metrics and event count tags, `newRelic.event.header`): items
/// `{name, value}`, with `tag` accepted as a synonym of `name`. Values may be strings, numbers or booleans (taken as
/// their text); an empty value is allowed. Null is an empty list.
fn tag_list(node: &Node<'_>, rep: &mut Report) -> Vec<Tag> {
    tag_items(node, rep).into_iter().map(|(_, tag)| tag).collect()
}

/// Like [`tag_list`], each valid tag with its item's path (`...[i]`).
fn tag_items(node: &Node<'_>, rep: &mut Report) -> Vec<(String, Tag)> {
    let mut tags = Vec::new();
    for item in node.list(rep) {
        let Some(entry) = item.item_mapping(rep, TAG_KEYS) else {
            continue;
        };
        let name_node = match (entry.get("name").is_set(), entry.get("tag").is_set()) {
            (true, true) => {
                rep.error(&item.path, "has both name and tag (synonyms), keep one");
                None
            }
            (false, true) => Some(entry.get("tag")),
            _ => Some(entry.get("name")),
        };
        let name = name_node.and_then(|n| {
            let name = n.text(rep);
            match &name {
                None if !n.is_set() => rep.error(&n.path, "missing"),
                Some(s) if s.is_empty() => rep.error(&n.path, "must not be empty"),
                _ => {}
            }
            name.filter(|s| !s.is_empty())
        });
        let value_node = entry.get("value");
        let value = match value_node.present() {
            None => {
                rep.error(&value_node.path, "missing");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(other) => {
                rep.error(
                    &value_node.path,
                    format!("expected a string, number or boolean, got {}", kind(other)),
                );
                None
            }
        };
        if let (Some(name), Some(value)) = (name, value) {
            tags.push((item.path, Tag { name, value }));
        }
    }
    tags
}

/// `userEvents.sendToMQTT`. Each `postTo` entry defaults to `enable: true` with Butler SOS's template topic
/// (`qliksense/userevent`, `.../session/start`, `.../session/stop`, `.../connection/open`,
/// `.../connection/close`); the routing is on only when `mqtt_enable` (`mqttConfig.enable`) is too.
fn mqtt_routing(node: &Node<'_>, mqtt_enable: bool, rep: &mut Report) -> MqttRouting {
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
fn new_relic_routing(
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
fn new_relic_accounts(node: &Node<'_>, rep: &mut Report) -> Vec<NewRelicAccount> {
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

/// `Butler-SOS.influxdbConfig`. Defaults: `enable` false, `port` 8086, `version` 1, `maxBatchSize` 1000
/// (1-10000), `v3Config.writeTimeout` 10000 ms (at least 1000). When `in_use`, `host` and the chosen version's
/// settings are required (v1: `dbName`, `retentionPolicy.name`/`duration`; v2: `org`, `bucket`, `token`; v3:
/// `database`, `token`).
fn influx_config(node: &Node<'_>, needed: Option<&str>, rep: &mut Report) -> InfluxConfig {
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
fn mqtt_config(node: &Node<'_>, in_use: bool, rep: &mut Report) -> MqttConfig {
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
                match read_small_file(&path) {
                    Ok(pem) if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => rep.error(
                        &ca_node.path,
                        format!(
                            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                            path.display()
                        ),
                    ),
                    Ok(_) => {}
                    Err(err) => rep.error(
                        &ca_node.path,
                        format!("cannot read {}: {}", path.display(), lower_first(&err.to_string())),
                    ),
                }
            }
            Some(path)
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
fn new_relic_config(node: &Node<'_>, in_use: bool, rep: &mut Report) -> NewRelicConfig {
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

/// `Butler-SOS.prometheus`. Defaults: `enable` false, `host` 0.0.0.0, `port` 9842. Enabling it is reported as not
/// implemented.
fn prometheus_config(node: &Node<'_>, rep: &mut Report) -> PrometheusConfig {
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
fn qlik_sense_events(node: &Node<'_>, in_use: bool, rep: &mut Report) -> Option<MetricsWriteConfig> {
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

/// A `writeFrequency` (milliseconds, 1 to 2^32-1), `None` when not set or invalid.
fn write_frequency(node: &Node<'_>, rep: &mut Report) -> Option<u64> {
    node.uint(rep, 1, u64::from(u32::MAX))
}

/// A `measurementName`: `None` when not set (an error when `needed` says why it is required) or invalid. It may
/// not be empty, and may not contain a control character (line protocol cannot carry one).
fn measurement_name(node: &Node<'_>, needed: Option<&str>, rep: &mut Report) -> Option<String> {
    let name = node.text(rep);
    match &name {
        None if !node.is_set() => {
            if let Some(why) = needed {
                rep.error(&node.path, format!("missing ({why})"));
            }
            None
        }
        Some(s) if s.is_empty() => {
            rep.error(&node.path, "must not be empty");
            None
        }
        Some(s) if s.chars().any(char::is_control) => {
            rep.error(&node.path, "contains a control character");
            None
        }
        _ => name,
    }
}

/// What `sense-ingest:` sets outside [`EngineConfig`].
struct EngineExtras {
    /// The `listen` override, if set.
    listen: Option<Vec<SocketAddr>>,
    /// `influxdbTls`, for [`InfluxConfig::tls`].
    influxdb_tls: HttpTls,
    /// `newRelicTls`, for [`NewRelicConfig::tls`].
    new_relic_tls: HttpTls,
    /// `logFormat`, for [`LogConfig::format`](super::LogConfig::format).
    log_format: Option<LogFormat>,
}

/// `sense-ingest.influxdbTls` / `newRelicTls` (see [`HttpTls`]). `tls_used` says whether the destination will
/// make TLS connections: only then is `caFile` read (otherwise it is only type-checked, like
/// `mqttConfig.tls.caFile`). `enable` is read only when `with_enable`.
fn http_tls(m: &Map<'_>, with_enable: bool, in_use: bool, https_url: bool, rep: &mut Report) -> HttpTls {
    let enable = with_enable && m.get("enable").bool_or(rep, false);
    let tls_used = in_use && (enable || https_url);
    let insecure = m.get("insecureSkipVerify").bool_or(rep, false);
    let ca_node = m.get("caFile");
    let ca_file = match ca_node.text(rep) {
        Some(path) if path.trim().is_empty() => {
            rep.error(
                &ca_node.path,
                "must not be empty (leave it out to use the built-in roots)",
            );
            None
        }
        Some(path) => {
            let path = PathBuf::from(path);
            if insecure {
                rep.error(
                    &ca_node.path,
                    format!(
                        "has no effect with {} true: set one or the other",
                        m.get("insecureSkipVerify").path
                    ),
                );
            } else if tls_used {
                check_ca_file(&ca_node.path, &path, rep);
            }
            Some(path)
        }
        None => None,
    };
    HttpTls {
        enable,
        ca_file,
        insecure_skip_verify: insecure,
    }
}

/// Reports at `key` unless `path` is a readable regular file of at most [`MAX_CA_FILE_BYTES`] with at least one
/// PEM certificate.
fn check_ca_file(key: &str, path: &Path, rep: &mut Report) {
    match read_small_file(path) {
        Ok(pem) if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => rep.error(
            key,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ),
        Ok(_) => {}
        Err(err) => rep.error(
            key,
            format!("cannot read {}: {}", path.display(), lower_first(&err.to_string())),
        ),
    }
}

/// `sense-ingest:` (engine settings; defaults in [`EngineConfig::default`]). `in_use` and `new_relic_url` decide
/// which TLS CA files must be readable.
fn engine_config(
    node: &Node<'_>,
    in_use: &InUse,
    new_relic_url: &str,
    rep: &mut Report,
) -> (EngineConfig, EngineExtras) {
    let mut engine = EngineConfig::default();
    let m = node.mapping(rep, ENGINE_KEYS);
    let influxdb_tls = http_tls(
        &m.get("influxdbTls").mapping(rep, ENGINE_INFLUX_TLS_KEYS),
        true,
        in_use.influxdb,
        false,
        rep,
    );
    let new_relic_tls = http_tls(
        &m.get("newRelicTls").mapping(rep, ENGINE_NEW_RELIC_TLS_KEYS),
        false,
        in_use.new_relic,
        new_relic_url.starts_with("https://"),
        rep,
    );
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);

    if let Some(n) = m.get("readerThreads").uint(rep, 1, 1024) {
        engine.reader_threads = size(n);
    }
    if let Some(backend) = m.get("backend").choice(
        rep,
        &[
            ("auto", ReaderBackend::Auto),
            ("io_uring", ReaderBackend::IoUring),
            ("recvmmsg", ReaderBackend::Recvmmsg),
        ],
    ) {
        engine.backend = backend;
    }
    if let Some(n) = m.get("recvBufferBytes").uint(rep, 4096, i32::MAX as u64) {
        engine.recv_buffer_bytes = size(n);
    }
    if let Some(n) = m.get("eventsPerSlab").uint(rep, 1, 65_536) {
        engine.events_per_slab = size(n);
    }
    if let Some(n) = m.get("channelCapacity").uint(rep, 1, 1 << 20) {
        engine.channel_capacity = size(n);
    }

    let batch = m.get("batch").mapping(rep, ENGINE_BATCH_KEYS);
    let defaults = BatchConfig::default();
    engine.batch = BatchConfig {
        max_events: batch
            .get("maxEvents")
            .uint(rep, 1, 1_000_000)
            .map_or(defaults.max_events, size),
        max_bytes: batch
            .get("maxBytes")
            // At most 32 MiB: a batch is one spool record, and the spool reads records of up to 64 MiB.
            .uint(rep, 1024, 32 << 20)
            .map_or(defaults.max_bytes, size),
        max_age: batch.get("maxAge").duration(rep).unwrap_or(defaults.max_age),
    };

    let retry = m.get("retry").mapping(rep, ENGINE_RETRY_KEYS);
    let defaults = RetryConfig::default();
    let max_backoff_node = retry.get("maxBackoff");
    engine.retry = RetryConfig {
        max_attempts: retry
            .get("maxAttempts")
            .uint(rep, 1, 1000)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(defaults.max_attempts),
        initial_backoff: retry
            .get("initialBackoff")
            .duration(rep)
            .unwrap_or(defaults.initial_backoff),
        max_backoff: max_backoff_node.duration(rep).unwrap_or(defaults.max_backoff),
    };
    if engine.retry.max_backoff < engine.retry.initial_backoff {
        rep.error(&max_backoff_node.path, "must not be shorter than initialBackoff");
    }

    engine.stdout = m.get("stdout").bool_or(rep, engine.stdout);
    let app_names_node = m.get("appNames");
    if let Some(path) = app_names_node.text(rep) {
        if path.trim().is_empty() {
            rep.error(
                &app_names_node.path,
                "must not be empty (leave it out for no app name file)",
            );
        } else {
            engine.app_names_file = Some(PathBuf::from(path));
        }
    }
    if let Some(timeout) = m.get("shutdownTimeout").duration(rep) {
        engine.shutdown_timeout = timeout;
    }

    if let Some(d) = m.get("unhealthyAfter").duration(rep) {
        engine.unhealthy_after = d;
    }
    engine.silent_host_after = m.get("silentHostAfter").duration(rep);
    let analytics = m.get("analytics").mapping(rep, ENGINE_ANALYTICS_KEYS);
    engine.analytics.enable = analytics.get("enable").bool_or(rep, false);
    if let Some(d) = analytics.get("orphanAfter").duration(rep) {
        engine.analytics.orphan_after = d;
    }
    if let Some(d) = analytics.get("gaugeInterval").duration(rep) {
        engine.analytics.gauge_interval = d;
    }
    if let Some(n) = analytics.get("maxTracked").uint(rep, 1, 1 << 32) {
        engine.analytics.max_tracked = size(n);
    }

    let spool = m.get("spool").mapping(rep, ENGINE_SPOOL_KEYS);
    engine.spool.enable = spool.get("enable").bool_or(rep, engine.spool.enable);
    let dir_node = spool.get("dir");
    if let Some(dir) = dir_node.text(rep) {
        if dir.trim().is_empty() {
            rep.error(
                &dir_node.path,
                "must not be empty (leave it out for the default next to the config file)",
            );
        } else {
            engine.spool.dir = Some(PathBuf::from(dir));
        }
    }
    if let Some(n) = spool.get("maxBytes").uint(rep, 1 << 20, u64::MAX) {
        engine.spool.max_bytes = n;
    }
    if let Some(n) = spool.get("memoryBytes").uint(rep, 1024, 1 << 34) {
        engine.spool.memory_bytes = size(n);
    }
    if let Some(d) = spool.get("fsyncInterval").duration(rep) {
        engine.spool.fsync_interval = d;
    }

    let metrics_listen = m.get("metrics").mapping(rep, ENGINE_METRICS_KEYS).get("listen");
    if let Some(text) = metrics_listen.text(rep) {
        match text.trim().parse::<SocketAddr>() {
            Ok(addr) => engine.metrics_listen = Some(addr),
            Err(_) => rep.error(
                &metrics_listen.path,
                format!("expected a socket address like 127.0.0.1:9843 or [::]:9843, got {text:?}"),
            ),
        }
    }
    let listen_node = m.get("listen");
    let listen = listen_node.is_set().then(|| {
        let items = listen_node.list(rep);
        if items.is_empty() && matches!(listen_node.present(), Some(Value::Sequence(_))) {
            rep.error(
                &listen_node.path,
                "must list at least one address (leave it out to use serverHost)",
            );
        }
        items
            .iter()
            .filter_map(|item| {
                let text = item.text(rep);
                let addr = text.as_deref().and_then(|t| t.trim().parse::<SocketAddr>().ok());
                if addr.is_none() && (text.is_some() || !item.is_set()) {
                    rep.error(
                        &item.path,
                        format!(
                            "expected a socket address like 0.0.0.0:9997 or [::]:9997, got {}",
                            describe(item.present().unwrap_or(&Value::Null))
                        ),
                    );
                }
                addr
            })
            .collect::<Vec<_>>()
    });
    (
        engine,
        EngineExtras {
            listen,
            influxdb_tls,
            new_relic_tls,
            log_format: m
                .get("logFormat")
                .choice(rep, &[("text", LogFormat::Text), ("json", LogFormat::Json)]),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = ok("Butler-SOS: {userEvents: {udpServerConfig: {serverHost: 127.0.0.1, portUserActivityEvents: 0}}}")
            .config;
        assert_eq!(c.user_events.udp.listen, vec![SocketAddr::from(([127, 0, 0, 1], 0))]);
        let c = ok("Butler-SOS: {userEvents: {udpServerConfig: {serverHost: '::1', portUserActivityEvents: '9999'}}}")
            .config;
        assert_eq!(
            c.user_events.udp.listen,
            vec!["[::1]:9999".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn localhost_resolves() {
        let c = ok("Butler-SOS: {userEvents: {udpServerConfig: {serverHost: localhost, portUserActivityEvents: 9}}}")
            .config;
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
        assert_eq!(c.tls, Some(MqttTls { ca_file: Some(ca) }));
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
            "Butler-SOS.mqttConfig.clientId: must not be empty (leave it out for sense-ingest-<hostname>-<pid>)"
                .to_owned(),
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
                ca_file: Some(ca.clone()),
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
}
