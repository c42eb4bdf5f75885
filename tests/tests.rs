//! Integration tests: the real binary over UDP into real destinations. One test binary, a module per area.

mod common;

/// Session durations and concurrency gauges into a real InfluxDB 1.x; silent-host alarms.
mod analytics;
/// Appender XML written by `sense-ingest appender`, parsed back.
mod appender;
/// Butler SOS's own measurements (event counts, queue metrics) into a real InfluxDB 1.x and the v2/v3 stand-ins.
mod butler_metrics;
/// 200,000 events through InfluxDB and Mosquitto outages, an engine restart and an engine SIGKILL: every event arrives, counters add up.
mod chaos;
/// `check-config` on good and broken Butler SOS files.
mod check_config;
/// The container image: built by scripts/package-container.sh, run by podman under the default seccomp profile.
mod container;
/// The Debian package: built by scripts/package-deb.sh, contents checked, installed as root, run, purged.
mod deb;
/// The spool on a full tmpfs while InfluxDB is down, then space and InfluxDB back: only counted losses.
mod full_disk;
/// Every fixture case through the real binary into a real InfluxDB 1.x, with both reader backends.
mod golden_influxdb;
/// Hostile datagrams among good ones: good events unchanged, every datagram counted, no crash.
mod hostile;
/// Loss accounting per Sense host: two senders, per-destination outcomes on /metrics and in the final summary.
mod hosts;
/// Idle cost (context switches of a quiet engine) and the recvmmsg fallback under a seccomp filter blocking io_uring.
mod idle;
/// InfluxDB v2 and v3 layouts, setup, gzip, retries, 413 splits and refused tokens, into contract-enforcing mocks.
mod influxdb_v2_v3;
/// Several `--config` files laid over each other, `${VAR}` values, relative paths, errors naming the file.
mod layered_config;
/// Logs for operators: JSON lines, Butler SOS's file logging, other crates kept quiet.
mod logging;
/// MQTT through the real binary into a real mosquitto: fixtures, credentials, QoS/retain, TLS, broker restarts.
mod mqtt;
/// New Relic Event API through the real binary into a contract-enforcing stand-in: fixtures, retries, splits, keys.
mod new_relic;
/// One owner per UDP port and spool folder; look-alike New Relic account names keep separate spools.
mod ownership;
/// Deployment files: Grafana dashboard queries on a real InfluxDB 1.x, systemd unit, sysctl snippet, Dockerfile.
mod packaging;
/// `/metrics` and `/health` of the real binary: every fixture counted by outcome, health, port-in-use startup error,
/// answers while slow clients trickle.
mod prometheus;
/// The health dashboard's queries and the alert rules on a real Prometheus scraping the engine; promtool.
mod prometheus_dashboards;
/// Receive-side behaviour: stdout JSON lines, IPv6, rejects (counted, logged escaped), SIGHUP, shutdown flush.
mod receive;
/// Outages, restarts and the spool: nothing lost, every loss counted.
mod reliability;
/// Sentinel secrets in the config never appear in check-config, run logs (level silly), stdout or Debug output.
mod secrets;
/// At start each destination is contacted once; the result is logged with its address and the keys to fix.
mod startup_contact;
/// TLS to InfluxDB and New Relic through a TLS-terminating proxy: private CA, wrong CA, verification off.
mod tls;
