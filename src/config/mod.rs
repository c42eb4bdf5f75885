//! The validated configuration: the only config types the rest of the crate sees.
//!
//! Loading is two-staged (ripgrep's low/high args): [`raw`] reads the user's Butler SOS YAML file into a generic
//! YAML tree ([`layers`] lays several files over each other and fills in `${VAR}` values), and [`validate`] walks
//! the sections sense-ingest reads, collecting *every* error with its key path
//! (`Butler-SOS.userEvents.udpServerConfig.portUserActivityEvents: expected a port number 1-65535, got "abc"`),
//! and builds these structs. Nothing starts unless validation passed. Every stage reports problems as
//! [`ConfigError`]s ([`error`]).
//!
//! Sections of a Butler SOS file that sense-ingest does not read are ignored. Inside a section it reads, every key
//! Butler SOS documents is accepted and an unknown key (a typo) is an error. Engine-only settings live under the
//! optional top-level `sense-ingest:` key ([`EngineConfig`]), so a plain Butler SOS file runs unchanged.

pub mod error;
pub mod layers;
pub mod raw;
pub mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors};
pub use validate::{load_file, load_files, load_str, Loaded};

/// A secret (token, password, API key). Debug and Display print `**REDACTED**`; only [`Secret::expose`] gives
/// the value, for the one place that puts it on the wire.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself. Call only where it goes on the wire (or is looked for in a destination's answer, to
    /// hide it: `sink::http::Scrub`).
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

/// The keys whose values are secrets, wherever they are in a config file: `password` (InfluxDB v1 auth, MQTT),
/// `token` (InfluxDB v2 and v3), `insertApiKey` (New Relic accounts) and `clientCertPassphrase` (Butler SOS's
/// `cert` section: sense-ingest does not read it, but `${...}` interpolation touches every value).
///
/// This is the one rule for what a secret is: the validator reads exactly these keys as [`Secret`]s, and no
/// message at any stage of loading shows text from a value at or under one of them ([`secret_key_path`]).
pub const SECRET_KEYS: &[&str] = &["password", "token", "insertApiKey", "clientCertPassphrase"];

/// `path` (dot-separated, `[i]` for list items) cut after its first secret key ([`SECRET_KEYS`]); `None` when no
/// key on the path is one. A problem at or under a secret is reported at this path: the full path of a value
/// inside one could carry text of the secret (a mapping key).
pub fn secret_key_path(path: &str) -> Option<&str> {
    let mut start = 0;
    for segment in path.split('.') {
        let key = segment.split('[').next().unwrap_or(segment);
        if SECRET_KEYS.contains(&key) {
            return Some(&path[..start + key.len()]);
        }
        start += segment.len() + 1;
    }
    None
}

/// Butler SOS's log levels (`Butler-SOS.logLevel`), mapped onto tracing in `telemetry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Data lost or a component stopped.
    Error,
    /// Degraded but running.
    Warn,
    /// Lifecycle (default).
    #[default]
    Info,
    /// One line per batch; each event visible.
    Verbose,
    /// Internal steps.
    Debug,
    /// Payload dumps.
    Silly,
}

impl LogLevel {
    /// Parses one of Butler SOS's six names.
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "verbose" => LogLevel::Verbose,
            "debug" => LogLevel::Debug,
            "silly" => LogLevel::Silly,
            _ => return None,
        })
    }
}

/// A `name: value` tag from a Butler SOS tag list (`tag:` is accepted as a synonym of `name:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// Tag name.
    pub name: String,
    /// Tag value.
    pub value: String,
}

/// The whole validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `Butler-SOS.logLevel`.
    pub log_level: LogLevel,
    /// `sense-ingest.logFormat`, `Butler-SOS.fileLogging` and `logDirectory`.
    pub logging: LogConfig,
    /// `Butler-SOS.userEvents`.
    pub user_events: UserEventsConfig,
    /// `Butler-SOS.influxdbConfig`.
    pub influxdb: InfluxConfig,
    /// `Butler-SOS.mqttConfig`.
    pub mqtt: MqttConfig,
    /// `Butler-SOS.newRelic` + `Butler-SOS.thirdPartyToolsCredentials.newRelic`.
    pub new_relic: NewRelicConfig,
    /// `Butler-SOS.prometheus`.
    pub prometheus: PrometheusConfig,
    /// `Butler-SOS.qlikSenseEvents` event counts: `Some` when they are written (`influxdbConfig.enable`,
    /// `qlikSenseEvents.influxdb.enable` and `qlikSenseEvents.eventCount.enable` all true).
    pub event_count: Option<MetricsWriteConfig>,
    /// `sense-ingest:` (engine-only settings).
    pub engine: EngineConfig,
}

/// How log lines are written (the level is [`Config::log_level`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// `sense-ingest.logFormat` (`--log-format` overrides it).
    pub format: LogFormat,
    /// `Butler-SOS.logDirectory` when `Butler-SOS.fileLogging` is true: lines also go to a file there, a new
    /// one each day (`sense-ingest.YYYY-MM-DD.log`).
    pub file_dir: Option<PathBuf>,
}

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, each field, `target`.
    Json,
}

impl LogFormat {
    /// `text` or `json`.
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// The config files as the user named them, in order (`a.yaml + b.yaml`), for messages about them.
pub fn file_names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Where the metrics and health endpoints listen, and the key that says so (named in a bind error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsEndpoint {
    /// `host:port` (a hostname is resolved at start).
    pub address: String,
    /// The config key to change when the address cannot be used.
    pub key: &'static str,
}

/// `Butler-SOS.userEvents`.
#[derive(Debug, Clone, Default)]
pub struct UserEventsConfig {
    /// `enable`: receive user events at all.
    pub enable: bool,
    /// `excludeUser[] {directory, userId}`: exact, case-sensitive matches are dropped.
    pub exclude_users: Vec<ExcludedUser>,
    /// `udpServerConfig`.
    pub udp: UdpServerConfig,
    /// `tags[]`: added to every event (InfluxDB tags, MQTT `tags`, New Relic attributes), overriding core ones.
    pub tags: Vec<Tag>,
    /// `sendToInfluxdb.enable` (and `influxdbConfig.enable`).
    pub send_to_influxdb: bool,
    /// `sendToMQTT`.
    pub send_to_mqtt: MqttRouting,
    /// `sendToNewRelic`.
    pub send_to_new_relic: NewRelicRouting,
}

/// One `excludeUser` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcludedUser {
    /// `directory`.
    pub directory: String,
    /// `userId`.
    pub user_id: String,
}

/// `userEvents.udpServerConfig`.
#[derive(Debug, Clone)]
pub struct UdpServerConfig {
    /// Addresses to listen on: `serverHost:portUserActivityEvents` (resolved at load), or `sense-ingest.listen`.
    pub listen: Vec<SocketAddr>,
    /// `maxMessageSize` (bytes, default 65507): larger datagrams are rejected.
    pub max_message_size: usize,
    /// `enableSourceValidation` + `allowedSources`, resolved at load: only these senders are accepted.
    pub allowed_sources: Option<Vec<IpAddr>>,
    /// `rateLimit.enable` + `maxMessagesPerMinute`: per sender IP, fixed 60 s windows.
    pub rate_limit_per_minute: Option<u32>,
    /// `messageQueue.backpressureThreshold` (%, default 80): a destination channel this full logs a WARN.
    pub backpressure_threshold_pct: u8,
    /// `queueMetrics.influxdb`: `Some` when queue metrics are written (`queueMetrics.influxdb.enable` and
    /// `influxdbConfig.enable` both true).
    pub queue_metrics: Option<MetricsWriteConfig>,
}

/// One of Butler SOS's own InfluxDB measurements (event counts, queue metrics): how often, where, which tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsWriteConfig {
    /// `writeFrequency` (milliseconds in the file): one write per period.
    pub write_frequency: Duration,
    /// `measurementName`: never empty.
    pub measurement: String,
    /// `tags[] {name, value}`: added to every point after the built-in tags, overriding one of the same name.
    pub tags: Vec<Tag>,
}

impl Default for UdpServerConfig {
    fn default() -> Self {
        UdpServerConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 9997))],
            max_message_size: 65507,
            allowed_sources: None,
            rate_limit_per_minute: None,
            backpressure_threshold_pct: 80,
            queue_metrics: None,
        }
    }
}

/// `userEvents.sendToMQTT`.
#[derive(Debug, Clone, Default)]
pub struct MqttRouting {
    /// `enable`.
    pub enable: bool,
    /// `postTo.everythingTopic`.
    pub everything: Option<String>,
    /// `postTo.sessionStartTopic`.
    pub session_start: Option<String>,
    /// `postTo.sessionStopTopic`.
    pub session_stop: Option<String>,
    /// `postTo.connectionOpenTopic`.
    pub connection_open: Option<String>,
    /// `postTo.connectionCloseTopic`.
    pub connection_close: Option<String>,
}

/// `userEvents.sendToNewRelic`.
#[derive(Debug, Clone, Default)]
pub struct NewRelicRouting {
    /// `enable`.
    pub enable: bool,
    /// `destinationAccount[]`, resolved against `thirdPartyToolsCredentials.newRelic` at load.
    pub accounts: Vec<NewRelicAccount>,
    /// `scramble` (default true).
    pub scramble: bool,
}

/// One resolved New Relic account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRelicAccount {
    /// `accountName`.
    pub name: String,
    /// `accountId`.
    pub id: String,
    /// `insertApiKey`.
    pub insert_key: Secret,
}

impl NewRelicAccount {
    /// The account's destination name (`new_relic:<accountName>`): its sink name in logs and metrics, and the
    /// source of its spool folder's name ([`spool_folder_name`]).
    pub fn destination_name(&self) -> String {
        format!("new_relic:{}", self.name)
    }
}

/// InfluxDB API version (`influxdbConfig.version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InfluxVersion {
    /// 1.x: `/write`, database + retention policy.
    #[default]
    V1,
    /// 2.x: `/api/v2/write`, org + bucket + token.
    V2,
    /// 3.x: `/api/v3/write_lp`, database + token.
    V3,
}

/// `Butler-SOS.influxdbConfig`.
#[derive(Debug, Clone, Default)]
pub struct InfluxConfig {
    /// `enable`.
    pub enable: bool,
    /// `host` (name or IP).
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `version`.
    pub version: InfluxVersion,
    /// `maxBatchSize` (1-10000; Butler SOS default 1000). Our batcher's `max_events` defaults to
    /// `engine.batch.max_events` and is capped by nothing else.
    pub max_batch_size: usize,
    /// `v1Config`.
    pub v1: InfluxV1Config,
    /// `v2Config`.
    pub v2: InfluxV2Config,
    /// `v3Config`.
    pub v3: InfluxV3Config,
    /// `sense-ingest.influxdbTls` (Butler SOS always uses plain http): `enable` switches every InfluxDB version
    /// to https on `host:port`.
    pub tls: HttpTls,
}

/// TLS settings of an HTTP destination (`sense-ingest.influxdbTls`, `sense-ingest.newRelicTls`; Butler SOS has
/// none). TLS is rustls. By default the server certificate is verified against the Mozilla root programme's
/// CAs built into the binary (webpki roots) and its name must match the host; `ca_file` replaces those roots
/// with the file's CAs (a private CA); `insecure_skip_verify` accepts any certificate (logged at WARN at start).
/// Validation reads `caFile` (once: nothing reads it again) whenever the destination uses TLS, and guarantees it
/// was a regular file of at most 4 MiB holding at least one PEM certificate, and that `ca_file` and
/// `insecure_skip_verify` are not both set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpTls {
    /// `enable` (InfluxDB only): use https. New Relic follows the scheme of `newRelic.event.url`.
    pub enable: bool,
    /// `caFile`: the CA certificate(s) to trust instead of the built-in roots (read when TLS is used).
    pub ca_file: Option<CaFile>,
    /// `insecureSkipVerify`: accept any server certificate and name (testing only).
    pub insecure_skip_verify: bool,
}

/// `influxdbConfig.v1Config`.
#[derive(Debug, Clone, Default)]
pub struct InfluxV1Config {
    /// `auth.enable` → `Some((username, password))`.
    pub auth: Option<(String, Secret)>,
    /// `dbName`.
    pub db_name: String,
    /// `retentionPolicy.name`.
    pub retention_policy_name: String,
    /// `retentionPolicy.duration` (InfluxQL duration text, e.g. `10d`).
    pub retention_policy_duration: String,
}

/// `influxdbConfig.v2Config`.
#[derive(Debug, Clone, Default)]
pub struct InfluxV2Config {
    /// `org`.
    pub org: String,
    /// `bucket`.
    pub bucket: String,
    /// `description`.
    pub description: String,
    /// `token`.
    pub token: Secret,
    /// `retentionDuration` (e.g. `10d`), as seconds.
    pub retention: Option<Duration>,
}

/// `influxdbConfig.v3Config`.
#[derive(Debug, Clone, Default)]
pub struct InfluxV3Config {
    /// `database`.
    pub database: String,
    /// `description`.
    pub description: String,
    /// `token`.
    pub token: Secret,
    /// `retentionDuration` text (e.g. `10d`).
    pub retention_duration: String,
    /// `writeTimeout` (ms).
    pub write_timeout: Duration,
}

/// `Butler-SOS.mqttConfig`.
///
/// Butler SOS reads only `enable`, `brokerHost`, `brokerPort` (and `baseTopic`, for other messages) and connects
/// with mqtt.js defaults: plain TCP, no credentials, a random client id, QoS 0, no retain. Every other field here
/// is a **sense-ingest extension** (`tls`, `username`, `password`, `clientId`, `qos`, `retain`, `keepAlive`); left
/// out, each behaves like Butler SOS.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// `enable`.
    pub enable: bool,
    /// `brokerHost`.
    pub broker_host: String,
    /// `brokerPort`.
    pub broker_port: u16,
    /// `tls` (extension): `Some` when `tls.enable` is true (default: plain TCP).
    pub tls: Option<MqttTls>,
    /// `username` (extension; default: none).
    pub username: Option<String>,
    /// `password` (extension; default: none). Only sent together with `username`.
    pub password: Secret,
    /// `clientId` (extension; default `None`: the sink uses `sense-ingest-<hostname>-<pid>`).
    pub client_id: Option<String>,
    /// `qos` (extension): 0, 1 or 2 (default 0, like Butler SOS).
    pub qos: u8,
    /// `retain` (extension; default false, like Butler SOS).
    pub retain: bool,
    /// `keepAlive` (extension; default 60 s; zero turns keep-alive pings off).
    pub keep_alive: Duration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enable: false,
            broker_host: String::new(),
            broker_port: 1883,
            tls: None,
            username: None,
            password: Secret::default(),
            client_id: None,
            qos: 0,
            retain: false,
            keep_alive: Duration::from_secs(60),
        }
    }
}

/// `Butler-SOS.mqttConfig.tls` (sense-ingest extension): connect with TLS (rustls).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttTls {
    /// `caFile`: the CA certificate(s) that signed the broker's certificate, read at validation. `None`: the
    /// system's CA bundle.
    pub ca_file: Option<CaFile>,
}

/// A `caFile` of the config, read once at validation: its path (for messages) and its PEM text. A file changed or
/// removed after start has no effect until a restart.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFile {
    /// The file as the config names it (resolved against the naming file).
    pub path: PathBuf,
    /// Its contents: at least one PEM certificate, at most 4 MiB.
    pub pem: std::sync::Arc<[u8]>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .field("pem_bytes", &self.pem.len())
            .finish()
    }
}

/// `Butler-SOS.newRelic.event`.
#[derive(Debug, Clone, Default)]
pub struct NewRelicConfig {
    /// `newRelic.enable`.
    pub enable: bool,
    /// `event.url` (base; `/v1/accounts/<id>/events` is appended).
    pub event_url: String,
    /// `event.header[] {name, value}`: extra request headers.
    pub event_headers: Vec<Tag>,
    /// `sense-ingest.newRelicTls`: CA and verification for an https `event.url` (`enable` is unused).
    pub tls: HttpTls,
}

/// `Butler-SOS.prometheus`.
#[derive(Debug, Clone, Default)]
pub struct PrometheusConfig {
    /// `enable`.
    pub enable: bool,
    /// `host`.
    pub host: String,
    /// `port`.
    pub port: u16,
}

/// Which receive implementation the readers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReaderBackend {
    /// io_uring multishot recvmsg, falling back to recvmmsg (one WARN) when io_uring cannot be set up.
    #[default]
    Auto,
    /// io_uring only; falls back like `Auto` but the WARN says it was asked for explicitly.
    IoUring,
    /// recvmmsg only.
    Recvmmsg,
}

/// Batching limits of a sink: a batch is flushed when any limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most events per batch.
    pub max_events: usize,
    /// Most encoded bytes per batch.
    pub max_bytes: usize,
    /// Longest time the oldest event waits before its batch is flushed.
    pub max_age: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: 5000,
            max_bytes: 4 << 20,
            max_age: Duration::from_millis(200),
        }
    }
}

/// Retry policy for a sink's retriable failures (connection errors, 5xx, 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts in all (first try included) before the batch is dropped, counted and logged at ERROR.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub initial_backoff: Duration,
    /// Cap on the backoff (a `Retry-After` above it is honoured up to this cap too).
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// `sense-ingest:`: settings Butler SOS does not have.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `readerThreads`: receive threads, each with its own `SO_REUSEPORT` socket per listen address
    /// (default: one per core).
    pub reader_threads: usize,
    /// `backend`: `auto` | `io_uring` | `recvmmsg`.
    pub backend: ReaderBackend,
    /// `recvBufferBytes`: `SO_RCVBUF` per socket (default 16 MiB).
    pub recv_buffer_bytes: usize,
    /// `eventsPerSlab`: events handed over per channel message (default 256).
    pub events_per_slab: usize,
    /// `channelCapacity`: slabs queued per sink before readers wait (default 128).
    pub channel_capacity: usize,
    /// `batch`: sink batching.
    pub batch: BatchConfig,
    /// `retry`: sink retries.
    pub retry: RetryConfig,
    /// `stdout`: also print each event as one JSON line on stdout (the embedded default turns this on).
    pub stdout: bool,
    /// `appNames`: optional app id → name map file (CSV or YAML); reloaded when it changes.
    pub app_names_file: Option<PathBuf>,
    /// `shutdownTimeout`: longest a graceful shutdown waits for sinks to flush.
    pub shutdown_timeout: Duration,
    /// `spool`: per-destination memory queue and disk spool.
    pub spool: SpoolConfig,
    /// `unhealthyAfter` (default 5 min): `/health` answers 503 once a destination has been failing this long.
    pub unhealthy_after: Duration,
    /// `analytics`: session analytics (off by default).
    pub analytics: AnalyticsConfig,
    /// `silentHostAfter`: a known Sense host silent this long raises one WARN (off when absent).
    pub silent_host_after: Option<Duration>,
    /// `metrics.listen`: where `/metrics`, `/live`, `/ready` and `/health` are served, independently of
    /// `Butler-SOS.prometheus` (which is used when this is not set).
    pub metrics_listen: Option<SocketAddr>,
}

/// `sense-ingest.analytics`: pair session and connection events into `user_session` points (beyond Butler SOS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsConfig {
    /// `enable` (default false). Needs the InfluxDB destination.
    pub enable: bool,
    /// `orphanAfter` (default 8 h): an open session with no Stop after this long is counted as orphaned.
    pub orphan_after: Duration,
    /// `gaugeInterval` (default 10 s): how often concurrent-session gauges are written.
    pub gauge_interval: Duration,
    /// `maxTracked` (default 1,000,000): most open sessions and connections tracked at once.
    pub max_tracked: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            enable: false,
            orphan_after: Duration::from_secs(8 * 3600),
            gauge_interval: Duration::from_secs(10),
            max_tracked: 1_000_000,
        }
    }
}

/// `sense-ingest.spool`: what happens to batches a destination cannot take right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// `enable` (default true): spool to disk once the memory queue is full. Off: the memory queue is the bound
    /// and a full queue makes readers wait (kernel drops, counted, beyond the socket buffer).
    pub enable: bool,
    /// `dir`: the spool folder; one subfolder per destination, named by [`spool_folder_name`], and the lock file
    /// that makes one engine its only owner. Default: `sense-ingest-spool` next to the config file; a relative path
    /// is relative to the config file's folder.
    pub dir: Option<PathBuf>,
    /// `maxBytes` (default 1 GiB) per destination; beyond it the oldest spooled events are dropped (counted, ERROR).
    pub max_bytes: u64,
    /// `memoryBytes` (default 32 MiB): memory of the encoded batches per destination kept in memory before spooling,
    /// counted by their allocated buffers (a batch's buffer is sized for a full batch).
    pub memory_bytes: usize,
    /// `fsyncInterval` (default 1 s): how often spooled data is flushed to stable storage.
    pub fsync_interval: Duration,
}

/// The spool folder's name next to the config file when `sense-ingest.spool.dir` is not set.
pub const DEFAULT_SPOOL_DIR: &str = "sense-ingest-spool";

impl SpoolConfig {
    /// The folder holding every destination's spool: `dir`, or [`DEFAULT_SPOOL_DIR`] in the working
    /// directory for a config that was not loaded from a file.
    pub fn root(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL_DIR))
    }

    /// The spool folder of the destination named `destination` (`influxdb`, `new_relic:<accountName>`, ...).
    pub fn folder_of(&self, destination: &str) -> PathBuf {
        self.root().join(spool_folder_name(destination))
    }
}

/// The longest file name Linux allows (`NAME_MAX`): a spool folder's name must fit.
pub const MAX_FOLDER_NAME_BYTES: usize = 255;

/// A destination's name as its spool folder's name, **unique by construction**: ASCII letters, digits, `-` and `_`
/// stay, every other byte becomes `%XX` (upper-case hex), `%` included. Distinct names therefore always get
/// distinct folders (`new_relic:prod eu` → `new_relic%3Aprod%20eu`, `new_relic:prod_eu` → `new_relic%3Aprod_eu`),
/// and the fixed destinations keep their plain names (`influxdb`, `user_session`, `mqtt`).
pub fn spool_folder_name(destination: &str) -> String {
    let mut out = String::with_capacity(destination.len());
    for b in destination.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The spool folder name versions up to this one used (every character other than ASCII letters, digits, `-` and
/// `_` became `_`). Not unique (`prod eu` and `prod_eu` shared `new_relic_prod_eu`); kept only to find and adopt
/// such folders at start-up.
pub fn legacy_spool_folder_name(destination: &str) -> String {
    destination
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            enable: true,
            dir: None,
            max_bytes: 1 << 30,
            memory_bytes: 32 << 20,
            fsync_interval: Duration::from_secs(1),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            reader_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            backend: ReaderBackend::Auto,
            recv_buffer_bytes: 16 << 20,
            events_per_slab: 256,
            channel_capacity: 128,
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            stdout: false,
            app_names_file: None,
            shutdown_timeout: Duration::from_secs(10),
            spool: SpoolConfig::default(),
            unhealthy_after: Duration::from_secs(300),
            analytics: AnalyticsConfig::default(),
            silent_host_after: None,
            metrics_listen: None,
        }
    }
}

impl Config {
    /// The embedded default used by `run` without `--config`: user events on 0.0.0.0:9997, each event printed as
    /// a JSON line on stdout, no destinations.
    pub fn embedded_default() -> Config {
        Config {
            user_events: UserEventsConfig {
                enable: true,
                ..Default::default()
            },
            engine: EngineConfig {
                stdout: true,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Where `/metrics`, `/live`, `/ready` and `/health` are served: `sense-ingest.metrics.listen` when set, else
    /// `Butler-SOS.prometheus` when enabled, else nowhere.
    pub fn metrics_endpoint(&self) -> Option<MetricsEndpoint> {
        match (self.engine.metrics_listen, self.prometheus.enable) {
            (Some(addr), _) => Some(MetricsEndpoint {
                address: addr.to_string(),
                key: "sense-ingest.metrics.listen",
            }),
            (None, true) => Some(MetricsEndpoint {
                address: format!("{}:{}", self.prometheus.host, self.prometheus.port),
                key: "Butler-SOS.prometheus.host/port",
            }),
            (None, false) => None,
        }
    }

    /// What this config switches on, one line each: listeners, destinations, `/metrics`, spool. `check-config`
    /// prints these and `run` logs them at start, so both say the same. No secret is part of any line.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let backend = match self.engine.backend {
            ReaderBackend::Auto => "auto",
            ReaderBackend::IoUring => "io_uring",
            ReaderBackend::Recvmmsg => "recvmmsg",
        };
        for addr in &self.user_events.udp.listen {
            lines.push(format!("listener: udp {addr} (backend {backend})"));
        }
        if self.engine.stdout {
            lines.push("destination: stdout (one JSON line per event)".to_owned());
        }
        if self.user_events.send_to_influxdb {
            let i = &self.influxdb;
            let scheme = if i.tls.enable { "https" } else { "http" };
            let (version, target) = match i.version {
                InfluxVersion::V1 => ("1.x", format!("database {}", i.v1.db_name)),
                InfluxVersion::V2 => ("v2", format!("org {} bucket {}", i.v2.org, i.v2.bucket)),
                InfluxVersion::V3 => ("v3", format!("database {}", i.v3.database)),
            };
            lines.push(format!(
                "destination: influxdb {version} {scheme}://{}:{} {target}",
                i.host, i.port
            ));
        }
        if self.user_events.send_to_mqtt.enable {
            let m = &self.mqtt;
            let scheme = if m.tls.is_some() { "mqtts" } else { "mqtt" };
            lines.push(format!(
                "destination: mqtt {scheme}://{}:{}",
                m.broker_host, m.broker_port
            ));
        }
        if self.user_events.send_to_new_relic.enable {
            for account in &self.user_events.send_to_new_relic.accounts {
                lines.push(format!(
                    "destination: new relic account {:?} (id {}) {}",
                    account.name, account.id, self.new_relic.event_url
                ));
            }
        }
        if let Some(m) = self.metrics_endpoint() {
            lines.push(format!(
                "metrics: http://{}/metrics, /live, /ready (from {})",
                m.address, m.key
            ));
        }
        let destinations = self.user_events.send_to_influxdb
            || self.user_events.send_to_mqtt.enable
            || self.user_events.send_to_new_relic.enable;
        match (&self.engine.spool.dir, self.engine.spool.enable && destinations) {
            (Some(dir), true) => lines.push(format!("spool: {} (one folder per destination)", dir.display())),
            (None, true) => lines.push("spool: on".to_owned()),
            (_, false) => lines.push("spool: off".to_owned()),
        }
        lines
    }
}
#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod spool_folder_tests {
    use super::*;

    #[test]
    fn names_that_used_to_share_a_folder_get_their_own() {
        assert_eq!(spool_folder_name("new_relic:prod eu"), "new_relic%3Aprod%20eu");
        assert_eq!(spool_folder_name("new_relic:prod_eu"), "new_relic%3Aprod_eu");
        assert_eq!(
            legacy_spool_folder_name("new_relic:prod eu"),
            legacy_spool_folder_name("new_relic:prod_eu")
        );
        assert_eq!(spool_folder_name("new_relic:a%20b"), "new_relic%3Aa%2520b");
        assert_eq!(spool_folder_name("new_relic:é/.."), "new_relic%3A%C3%A9%2F%2E%2E");
    }

    #[test]
    fn fixed_destinations_keep_their_folder_names() {
        for name in ["influxdb", "user_session", "mqtt", "stdout"] {
            assert_eq!(spool_folder_name(name), name);
            assert_eq!(legacy_spool_folder_name(name), name);
        }
    }

    proptest::proptest! {
        /// Injective: the name can be read back from the folder name, so two names never share a folder.
        #[test]
        fn a_folder_name_decodes_to_exactly_its_destination(name in "\\PC{0,40}") {
            let folder = spool_folder_name(&name);
            proptest::prop_assert!(folder.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_%".contains(&b)));
            let mut decoded = Vec::new();
            let mut bytes = folder.bytes();
            while let Some(b) = bytes.next() {
                if b == b'%' {
                    let hex: String = [bytes.next().unwrap(), bytes.next().unwrap()].iter().map(|&c| char::from(c)).collect();
                    decoded.push(u8::from_str_radix(&hex, 16).unwrap());
                } else {
                    decoded.push(b);
                }
            }
            proptest::prop_assert_eq!(decoded, name.as_bytes());
        }
    }
}
