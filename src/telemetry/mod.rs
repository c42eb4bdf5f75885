//! Logging setup with Butler SOS's level names, and the counters every loss path bumps.
//!
//! | Butler SOS | tracing filter |
//! |---|---|
//! | error | `error` |
//! | warn | `warn` |
//! | info | `info` |
//! | verbose | `debug` (one line per batch; each event at `ingest::event`) |
//! | debug | `trace,ingest::wire=off` |
//! | silly | `trace` (payload dumps on `ingest::wire`) |
//!
//! `RUST_LOG`, when set, overrides the level.

pub mod escape;
pub mod event_counts;
pub mod histogram;
pub mod metrics;
pub mod prometheus;

use tracing_subscriber::EnvFilter;

use crate::config::LogLevel;

/// The `EnvFilter` directive for a Butler SOS log level.
pub fn filter_directive(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Verbose => "debug",
        LogLevel::Debug => "trace,ingest::wire=off",
        LogLevel::Silly => "trace",
    }
}

/// Installs the global subscriber: human-readable lines on stderr (stdout is reserved for event output).
/// Later calls are ignored.
pub fn init(level: LogLevel) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter_directive(level)));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
