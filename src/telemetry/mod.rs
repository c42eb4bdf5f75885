//! Logging setup with Butler SOS's level names, and the counters every loss path bumps.
//!
//! | Butler SOS | sense-ingest's own targets (`sense_ingest`, `ingest::*`) |
//! |---|---|
//! | error | `error` |
//! | warn | `warn` |
//! | info | `info` |
//! | verbose | `debug` (one line per batch; each event at `ingest::event`) |
//! | debug | `trace`, without `ingest::wire` |
//! | silly | `trace` (payload dumps on `ingest::wire`) |
//!
//! Other crates (the HTTP and MQTT clients) log at `warn` at most, whatever the level. `RUST_LOG`, when set,
//! overrides all of it.
//!
//! Lines go to stderr (stdout carries event output), as text or as JSON objects ([`LogFormat`]), and, with
//! Butler SOS's `fileLogging`, also to a daily file in `logDirectory`.

pub mod escape;
pub mod event_counts;
pub mod histogram;
pub mod metrics;
pub mod prometheus;

use std::path::Path;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogLevel};

/// The `EnvFilter` directive for a Butler SOS log level: the level for sense-ingest's own targets, at most `warn`
/// for every other crate.
pub fn filter_directive(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "warn,sense_ingest=info,ingest=info",
        LogLevel::Verbose => "warn,sense_ingest=debug,ingest=debug",
        LogLevel::Debug => "warn,sense_ingest=trace,ingest=trace,ingest::wire=off",
        LogLevel::Silly => "warn,sense_ingest=trace,ingest=trace",
    }
}

/// Changes the level filter after [`init`] (SIGHUP): `RUST_LOG`, when set, still wins.
pub fn set_level(level: LogLevel) {
    if std::env::var_os("RUST_LOG").is_some() {
        return;
    }
    if let Some(handle) = FILTER.get() {
        let _ = handle.reload(EnvFilter::new(filter_directive(level)));
    }
}

/// The installed level filter, replaceable by [`set_level`].
static FILTER: OnceLock<tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>> = OnceLock::new();

/// The daily log file's name: `sense-ingest.YYYY-MM-DD.log` in the log folder.
const LOG_FILE_PREFIX: &str = "sense-ingest";

/// Installs the global subscriber: lines on stderr in `format` and, with `file_dir`, the same lines in a daily
/// file there. Later calls are ignored. A log folder that cannot be created or written is not fatal (logging to
/// stderr goes on); the returned message says why, for the caller to log once the subscriber is up.
pub fn init(level: LogLevel, format: LogFormat, file_dir: Option<&Path>) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter_directive(level)));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let (file, file_error) = match file_dir.map(open_log_file) {
        Some(Ok(appender)) => (Some(appender), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let stderr = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(false)
            .boxed(),
        LogFormat::Json => json_layer(std::io::stderr).boxed(),
    };
    let file = file.map(|appender| match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(appender)
            .with_ansi(false)
            .with_target(false)
            .boxed(),
        LogFormat::Json => json_layer(appender).boxed(),
    });
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let _ = FILTER.set(handle);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .try_init();
    file_error.map_or(Ok(()), Err)
}

/// One JSON object per line: `timestamp`, `level`, the event's fields (`message` first) at the top level, `target`.
fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer)
}

/// The daily-rotating file appender in `dir` (created if missing).
fn open_log_file(dir: &Path) -> Result<tracing_appender::rolling::RollingFileAppender, String> {
    tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(LOG_FILE_PREFIX)
        .filename_suffix("log")
        .build(dir)
        .map_err(|e| format!("cannot write log files in {}: {e}", dir.display()))
}
