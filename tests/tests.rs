//! Integration tests: the real binary over UDP into real destinations. One test binary, a module per area.

mod common;

/// Appender XML written by `sense-ingest appender`, parsed back.
mod appender;
/// `check-config` on good and broken Butler SOS files.
mod check_config;
/// Every fixture case through the real binary into a real InfluxDB 1.x, with both reader backends.
mod golden_influxdb;
/// Receive-side behaviour: stdout JSON lines, IPv6, rejects and their counters, shutdown flush.
mod receive;
