//! Stage two of config loading: walk the YAML tree, collect every error with its key path, build [`Config`].
//!
//! The walker is small and path-aware: a `Node` is a value (or its absence) plus its full key path, and each
//! typed reader (`bool_or`, `text`, `port`, `uint`, `duration`, `list`, ...) either returns the value or records a
//! [`ConfigError`] at that path and returns nothing, so the caller carries on with a default and every problem in
//! the file is reported in one go.
//!
//! # Files
//! - `mod.rs`: loading ([`load_files`], [`load_str`]) and the walk from the top of the file.
//! - `walk.rs`: the walker (`Node`, `Map`, `Report`) and its messages (unknown keys with a suggestion, values
//!   described without secrets).
//! - `keys.rs`: the keys each section accepts, and why a setting is required.
//! - `shared.rs`: readers of values several sections share (tag lists, `writeFrequency`, `measurementName`).
//! - `formats.rs`: what a value must look like (durations, hostnames, header names) and the bounded CA-file read.
//! - The section builders: `user_events.rs` (`userEvents`), `destinations.rs` (`influxdbConfig`, `mqttConfig`,
//!   `newRelic`), `metrics.rs` (`prometheus`, `qlikSenseEvents`), `engine.rs` (`sense-ingest:`).
//! - `tests.rs`: the rules and messages, one test each.
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
//! - Secrets (the keys of [`crate::config::SECRET_KEYS`]: `password`, `token`, `insertApiKey`) are never quoted in
//!   an error message.

mod destinations;
mod engine;
mod formats;
mod keys;
mod metrics;
mod shared;
#[cfg(test)]
mod tests;
mod user_events;
mod walk;

pub use formats::{is_hostname, read_small_file, MAX_CA_FILE_BYTES};

use std::fmt;
use std::path::{Path, PathBuf};

use serde_norway::Value;

use self::destinations::{influx_config, mqtt_config, new_relic_config};
use self::engine::engine_config;
use self::keys::{INFLUX_NEEDED, INFLUX_NEEDED_FOR_METRICS, TOP_KEYS};
use self::metrics::{prometheus_config, qlik_sense_events};
use self::user_events::{new_relic_accounts, user_events};
use self::walk::{describe, lower_first, peek, peek_bool, Node, Report};
use super::{
    layers, raw, spool_folder_name, Config, ConfigError, ConfigErrors, LogLevel, DEFAULT_SPOOL_DIR,
    MAX_FOLDER_NAME_BYTES,
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

    let (engine, extras) = engine_config(
        &top.get("sense-ingest"),
        in_use.influxdb,
        in_use.new_relic,
        &config.new_relic.event_url,
        rep,
    );
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
