//! `sense-ingest:`, the engine's own settings, with the TLS settings of the HTTP destinations.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_norway::Value;

use super::keys::{
    ENGINE_ANALYTICS_KEYS, ENGINE_BATCH_KEYS, ENGINE_INFLUX_TLS_KEYS, ENGINE_KEYS, ENGINE_METRICS_KEYS,
    ENGINE_NEW_RELIC_TLS_KEYS, ENGINE_RETRY_KEYS, ENGINE_SPOOL_KEYS,
};
use super::shared::read_ca_file;
use super::walk::{describe, Map, Node, Report};
use crate::config::{BatchConfig, EngineConfig, HttpTls, LogFormat, ReaderBackend, RetryConfig};

/// What `sense-ingest:` sets outside [`EngineConfig`].
pub(super) struct EngineExtras {
    /// The `listen` override, if set.
    pub(super) listen: Option<Vec<SocketAddr>>,
    /// `influxdbTls`, for [`InfluxConfig::tls`](crate::config::InfluxConfig::tls).
    pub(super) influxdb_tls: HttpTls,
    /// `newRelicTls`, for [`NewRelicConfig::tls`](crate::config::NewRelicConfig::tls).
    pub(super) new_relic_tls: HttpTls,
    /// `logFormat`, for [`LogConfig::format`](crate::config::LogConfig::format).
    pub(super) log_format: Option<LogFormat>,
}

/// `sense-ingest.influxdbTls` / `newRelicTls` (see [`HttpTls`]). `tls_used` says whether the destination will
/// make TLS connections: only then is `caFile` read (otherwise it is only type-checked, like
/// `mqttConfig.tls.caFile`). `enable` is read only when `with_enable`.
pub(super) fn http_tls(m: &Map<'_>, with_enable: bool, in_use: bool, https_url: bool, rep: &mut Report) -> HttpTls {
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
                None
            } else if tls_used {
                read_ca_file(&ca_node.path, path, rep)
            } else {
                None
            }
        }
        None => None,
    };
    HttpTls {
        enable,
        ca_file,
        insecure_skip_verify: insecure,
    }
}

/// `sense-ingest:` (engine settings; defaults in [`EngineConfig::default`]). Whether InfluxDB and New Relic are in
/// use (user events go there) and `new_relic_url` decide which TLS CA files must be readable.
pub(super) fn engine_config(
    node: &Node<'_>,
    influxdb_in_use: bool,
    new_relic_in_use: bool,
    new_relic_url: &str,
    rep: &mut Report,
) -> (EngineConfig, EngineExtras) {
    let mut engine = EngineConfig::default();
    let m = node.mapping(rep, ENGINE_KEYS);
    let influxdb_tls = http_tls(
        &m.get("influxdbTls").mapping(rep, ENGINE_INFLUX_TLS_KEYS),
        true,
        influxdb_in_use,
        false,
        rep,
    );
    let new_relic_tls = http_tls(
        &m.get("newRelicTls").mapping(rep, ENGINE_NEW_RELIC_TLS_KEYS),
        false,
        new_relic_in_use,
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
