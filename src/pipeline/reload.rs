//! SIGHUP: re-read every config file, apply what can change while running, name what needs a restart.
//!
//! Without a handler SIGHUP terminates the process, dropping whatever is queued: a `systemctl reload`, a closed
//! terminal or a log rotation script could lose events. [`watch_sighup`] replaces that: each SIGHUP re-reads the
//! config files with [`config::load_files`] (what `run` and `check-config` run) and:
//! - invalid: one ERROR listing every problem with its file and key path; nothing changes, so a half-edited file
//!   does no harm;
//! - valid: the keys in [`LIVE_KEYS`] take effect at once: the log level; excluded users, allowed sources and the
//!   rate limit (see [`crate::reader::rules`]); `userEvents.tags`, batch limits and retry policy of each running
//!   destination (see [`crate::sink::delivery::retune`]); and the app-name file is read again. Every other key
//!   sense-ingest reads that differs from the config the engine started with is named in one WARN, since it
//!   needs a restart (listeners, destinations and their addresses, the spool, the app-name file's path). One
//!   INFO says what was applied.
//!
//! Readers keep receiving and queues keep draining throughout, so a SIGHUP cannot lose an event. The handler only
//! wakes a thread (signal-hook's self-pipe); reading and validating happen on that thread.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_norway::Value;
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use super::destinations::Retuner;
use crate::config::{self, Config, ConfigErrors, Loaded};
use crate::enrich::app_names::AppNames;
use crate::reader::rules::{LiveRules, Rules};
use crate::telemetry;
use crate::telemetry::escape::Escaped;

/// Key paths applied without a restart (a changed key under one of these is live).
pub const LIVE_KEYS: &[&str] = &[
    "Butler-SOS.logLevel",
    "Butler-SOS.userEvents.excludeUser",
    "Butler-SOS.userEvents.udpServerConfig.enableSourceValidation",
    "Butler-SOS.userEvents.udpServerConfig.allowedSources",
    "Butler-SOS.userEvents.udpServerConfig.rateLimit",
    "Butler-SOS.userEvents.tags",
    "Butler-SOS.influxdbConfig.maxBatchSize",
    "sense-ingest.batch",
    "sense-ingest.retry",
];

/// The parts of a config file sense-ingest reads; a change anywhere else is Butler SOS's business.
const READ_KEYS: &[&str] = &[
    "Butler-SOS.logLevel",
    "Butler-SOS.fileLogging",
    "Butler-SOS.logDirectory",
    "Butler-SOS.userEvents",
    "Butler-SOS.influxdbConfig",
    "Butler-SOS.mqttConfig",
    "Butler-SOS.newRelic",
    "Butler-SOS.thirdPartyToolsCredentials.newRelic",
    "Butler-SOS.prometheus",
    "Butler-SOS.qlikSenseEvents",
    "sense-ingest",
];

/// Changed keys listed in one log line at most (the count says how many there were).
const MAX_KEYS_LISTED: usize = 20;

/// What the running engine lets a reload change.
#[derive(Debug)]
pub struct Live {
    /// The config files, in order (none: the embedded default).
    pub files: Vec<PathBuf>,
    /// The merged config tree the engine started with (what a restart-only change is compared against).
    pub started: Value,
    /// The receive rules the readers follow.
    pub rules: Arc<LiveRules>,
    /// `--log-level` was given: it keeps overriding `Butler-SOS.logLevel` after a reload.
    pub cli_log_level: bool,
    /// The running destinations and the app-name table (filled by `pipeline::start`).
    pub parts: Arc<LiveDestinations>,
}

/// What of the running engine a reload reaches beyond the receive rules: each destination's
/// [`Retuner`] and the app-name table. Empty until `pipeline::start` fills it (a
/// SIGHUP during start-up then applies the rules and log level only).
#[derive(Default)]
pub struct LiveDestinations {
    retuners: Mutex<Vec<Retuner>>,
    app_names: Mutex<Option<Arc<AppNames>>>,
}

impl std::fmt::Debug for LiveDestinations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.retuners.lock().map_or(0, |r| r.len());
        f.debug_struct("LiveDestinations")
            .field("destinations", &n)
            .finish_non_exhaustive()
    }
}

impl LiveDestinations {
    /// Registers the running destinations' retuners and the app-name table.
    pub fn set(&self, retuners: Vec<Retuner>, app_names: Arc<AppNames>) {
        *self.retuners.lock().unwrap_or_else(|e| e.into_inner()) = retuners;
        *self.app_names.lock().unwrap_or_else(|e| e.into_inner()) = Some(app_names);
    }

    /// Hands `config` to every running destination and re-reads the app-name file.
    fn apply(&self, config: &Config) {
        for retune in self.retuners.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            retune(config);
        }
        let app_names = self.app_names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(app_names) = app_names {
            match app_names.reload_now() {
                Ok(true) => info!(file = ?app_names.path(), "app names reloaded"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "app names file cannot be read; keeping the previous names"),
            }
        }
    }
}

/// Installs the SIGHUP handler and starts the thread (`sighup`) that answers it for the life of the process.
/// Returns once the handler is installed: from then on SIGHUP no longer terminates the process.
pub fn watch_sighup(live: Live) -> io::Result<()> {
    let mut signals = Signals::new([SIGHUP])?;
    std::thread::Builder::new().name("sighup".into()).spawn(move || {
        for _ in signals.forever() {
            reload(&live);
        }
    })?;
    Ok(())
}

/// What one SIGHUP did, after it was logged.
#[derive(Debug)]
pub enum Reload {
    /// No config file: the engine runs on the embedded default.
    NoFile,
    /// Valid: `applied` keys took effect, `restart` keys wait for a restart (both as key paths).
    Applied {
        /// Changed keys now in force.
        applied: Vec<String>,
        /// Changed keys that need a restart.
        restart: Vec<String>,
    },
    /// Not valid (every problem); nothing changed.
    Invalid(ConfigErrors),
}

/// Re-reads the config files, applies what is live and logs the outcome (see the module docs).
pub fn reload(live: &Live) -> Reload {
    if live.files.is_empty() {
        warn!("SIGHUP received: running on the embedded default config, there is no config file to re-read");
        return Reload::NoFile;
    }
    let names = config::file_names(&live.files);
    info!(config = %names, "SIGHUP received: re-reading the config");
    let loaded = match config::load_files(&live.files) {
        Ok(loaded) => loaded,
        Err(errors) => {
            error!(
                config = %names,
                count = errors.0.len(),
                errors = %Escaped(&one_line(&errors)),
                "config file is not valid; nothing was reloaded, still running on the config in force"
            );
            return Reload::Invalid(errors);
        }
    };
    let (applied, restart) = changed_keys(&live.started, &loaded.tree);
    apply(live, &loaded);
    info!(
        config = %names,
        applied = %list(&applied),
        "config reloaded: log level, excluded users, allowed sources, rate limit, tags, batch and retry settings \
         are in force"
    );
    if !restart.is_empty() {
        warn!(
            count = restart.len(),
            keys = %list(&restart),
            "config reloaded, but these changes take effect only at the next restart"
        );
    }
    Reload::Applied { applied, restart }
}

/// Puts the live keys of `loaded` in force.
fn apply(live: &Live, loaded: &Loaded) {
    live.rules.replace(Rules::from_config(&loaded.config));
    live.parts.apply(&loaded.config);
    if !live.cli_log_level {
        telemetry::set_level(loaded.config.log_level);
    }
}

/// The keys sense-ingest reads whose values differ between `old` and `new`, split into (live, restart-only).
/// Key paths only: a value (a secret) is never part of the answer.
fn changed_keys(old: &Value, new: &Value) -> (Vec<String>, Vec<String>) {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    leaves(old, String::new(), &mut a);
    leaves(new, String::new(), &mut b);
    let mut live = Vec::new();
    let mut restart = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        if a.get(key) == b.get(key) || !under_any(key, READ_KEYS) {
            continue;
        }
        if under_any(key, LIVE_KEYS) {
            live.push(key.clone());
        } else {
            restart.push(key.clone());
        }
    }
    (live, restart)
}

/// Every scalar (and empty collection) of `value` by key path.
fn leaves<'a>(value: &'a Value, path: String, out: &mut BTreeMap<String, &'a Value>) {
    match value {
        Value::Mapping(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other).unwrap_or_default().trim().to_owned(),
                };
                let child = if path.is_empty() { key } else { format!("{path}.{key}") };
                leaves(v, child, out);
            }
        }
        Value::Sequence(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, format!("{path}[{i}]"), out);
            }
        }
        Value::Tagged(tagged) => leaves(&tagged.value, path, out),
        _ => {
            out.insert(path, value);
        }
    }
}

/// True when `key` is one of `prefixes` or below one.
fn under_any(key: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| {
        key.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
    })
}

/// `a, b, c` (at most [`MAX_KEYS_LISTED`], then `and N more`), or `none`.
fn list(keys: &[String]) -> String {
    if keys.is_empty() {
        return "none".to_owned();
    }
    let mut s = keys
        .iter()
        .take(MAX_KEYS_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > MAX_KEYS_LISTED {
        s.push_str(&format!(" and {} more", keys.len() - MAX_KEYS_LISTED));
    }
    s
}

/// Every problem on one line, `; `-separated (a multi-line error would split the log record).
fn one_line(errors: &ConfigErrors) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(yaml: &str) -> Value {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn changed_keys_are_split_into_live_and_restart_and_other_sections_are_ignored() {
        let old = tree(
            "Butler-SOS:\n  logLevel: info\n  logEvents: {a: 1}\n  userEvents:\n    excludeUser: []\n    \
             tags: [{name: a, value: b}]\nsense-ingest: {batch: {maxAge: 1s}, spool: {maxBytes: 1MiB}}\n",
        );
        let new = tree(
            "Butler-SOS:\n  logLevel: verbose\n  logEvents: {a: 2}\n  userEvents:\n    \
             excludeUser: [{directory: LAB, userId: x}]\n    tags: [{name: a, value: c}]\n\
             sense-ingest: {batch: {maxAge: 2s}, spool: {maxBytes: 2MiB}}\n",
        );
        let (live, restart) = changed_keys(&old, &new);
        assert_eq!(
            live,
            [
                "Butler-SOS.logLevel",
                "Butler-SOS.userEvents.excludeUser",
                "Butler-SOS.userEvents.excludeUser[0].directory",
                "Butler-SOS.userEvents.excludeUser[0].userId",
                "Butler-SOS.userEvents.tags[0].value",
                "sense-ingest.batch.maxAge",
            ]
        );
        assert_eq!(restart, ["sense-ingest.spool.maxBytes"]);
        assert_eq!(changed_keys(&old, &old), (vec![], vec![]));
    }

    #[test]
    fn prefixes_match_whole_keys_only() {
        assert!(under_any("Butler-SOS.logLevel", LIVE_KEYS));
        assert!(under_any("Butler-SOS.userEvents.excludeUser[3].userId", LIVE_KEYS));
        assert!(!under_any("Butler-SOS.logLevelX", LIVE_KEYS));
        assert!(!under_any("Butler-SOS.userEventsX", READ_KEYS));
    }

    #[test]
    fn a_valid_file_an_invalid_one_and_no_file_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("butler-sos.yaml");
        let good = "Butler-SOS:\n  userEvents:\n    enable: true\n    \
                    udpServerConfig: {serverHost: 127.0.0.1, portUserActivityEvents: 0}\n";
        std::fs::write(&path, good).unwrap();
        let loaded = config::load_file(&path).unwrap();
        let live = Live {
            files: vec![path.clone()],
            started: loaded.tree.clone(),
            rules: Arc::new(LiveRules::new(Rules::from_config(&loaded.config))),
            cli_log_level: true,
            parts: Arc::default(),
        };
        let Reload::Applied { applied, restart } = reload(&live) else {
            panic!("a valid file must be applied");
        };
        assert!(applied.is_empty() && restart.is_empty(), "{applied:?} {restart:?}");
        assert_eq!(live.rules.generation(), 1, "the rules were replaced");
        let none = Live { files: vec![], ..live };
        assert!(matches!(reload(&none), Reload::NoFile));
        let live = Live {
            files: vec![path.clone()],
            ..none
        };

        std::fs::write(
            &path,
            "Butler-SOS:\n  logLevel: loud\n  userEvents:\n    enable: true\n    \
             udpServerConfig: {serverHost: 127.0.0.1, portUserActivityEvents: 99999}\n",
        )
        .unwrap();
        let Reload::Invalid(errors) = reload(&live) else {
            panic!("an invalid file must be reported as invalid");
        };
        assert!(errors.0.len() >= 2, "{errors}");
        let line = one_line(&errors);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains("logLevel") && line.contains("portUserActivityEvents"),
            "{line}"
        );
        assert_eq!(live.rules.generation(), 1, "an invalid file changes nothing");

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(reload(&live), Reload::Invalid(_)));
    }
}
