//! The only module that knows readers *and* sinks: it builds them from the validated config, wires them with
//! bounded channels, runs them, and shuts them down in order (readers stop → channels drain → sinks flush).

pub mod metrics_writer;
pub mod ownership;
pub mod reload;
pub mod shutdown;

use std::net::ToSocketAddrs;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use tracing::{error, info, warn};

use crate::analytics::{self, SessionAnalytics, SessionSettings, SilentHostAlarm};
use crate::config::{BatchConfig, Config, InfluxVersion, ReaderBackend};
use crate::enrich::app_names::AppNames;
use crate::event::slab::{Slab, SlabPool};
use crate::reader::recvmmsg::RecvmmsgReceiver;
use crate::reader::rules::LiveRules;
use crate::reader::{self, ReaderCore, ReaderShared};
use crate::sink::influxdb::client_v2::InfluxV2Transport;
use crate::sink::influxdb::client_v3::InfluxV3Transport;
use crate::sink::influxdb::{InfluxV1Transport, LineEncoder};
use crate::sink::json::EventJson;
use crate::sink::mqtt::{MqttEncoder, MqttTransport};
use crate::sink::new_relic::{NewRelicEncoder, NewRelicTransport};
use crate::sink::queue::{QueueSettings, SpoolSettings};
use crate::sink::stdout;
use crate::sink::worker::{self, WorkerSettings};
use crate::sink::{self, Encoder, SinkError, Transport};
use crate::telemetry::event_counts::EventCounts;
use crate::telemetry::metrics::{ReceiveCounters, SinkCounters};
use crate::telemetry::prometheus::{self, MetricsState, SinkMetrics};
use ownership::{OwnershipError, PortLock, SpoolLock};

/// Time allowed after `shutdownTimeout` for sinks to write their leftovers to the spool. A shutdown therefore
/// ends within [`reader::DRAIN_LIMIT`] + `shutdownTimeout` + this grace of the stop request (see [`Engine::wait`]).
pub const SPOOL_GRACE: Duration = Duration::from_secs(5);

/// The backend a reader ended up using.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendInUse {
    /// io_uring multishot recvmsg.
    IoUring,
    /// recvmmsg.
    Recvmmsg,
}

impl BackendInUse {
    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendInUse::IoUring => "io_uring",
            BackendInUse::Recvmmsg => "recvmmsg",
        }
    }
}

/// A running engine: what `run` returns once everything is bound, so callers (main, tests) can wait and stop it.
#[derive(Debug)]
pub struct Engine {
    /// Addresses actually bound (port 0 resolved).
    pub local_addrs: Vec<SocketAddr>,
    /// Receive counters.
    pub counters: Arc<ReceiveCounters>,
    /// Per-sink counters, by sink name.
    pub sinks: Vec<(String, Arc<SinkCounters>)>,
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
    sink_threads: Vec<JoinHandle<()>>,
    monitor: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
    /// The port and spool locks; every sink thread holds a clone, so they are released only once nothing can
    /// write the spool any more (or when the process ends).
    _ownership: Arc<Ownership>,
    /// Locks of the ports the kernel chose for port-0 listen addresses.
    _chosen_ports: Vec<PortLock>,
}

/// What this engine owns exclusively (see [`ownership`]).
#[derive(Debug, Default)]
struct Ownership {
    ports: Vec<PortLock>,
    spool: Option<SpoolLock>,
    /// The spool folder could not be locked (it cannot be created or written): memory queues only.
    spool_unusable: bool,
}

impl Ownership {
    /// Takes the spool lock when the first destination that spools is built. False when the folder cannot be
    /// locked for an I/O reason (a read-only path): destinations then run with memory queues only, as they would
    /// without a spool, and one ERROR says so. Another engine holding the lock stops the start-up.
    fn spool_usable(&mut self, root: &Path) -> Result<bool, StartError> {
        if self.spool.is_none() && !self.spool_unusable {
            match SpoolLock::acquire(root) {
                Ok(lock) => self.spool = Some(lock),
                Err(e @ OwnershipError::SpoolInUse { .. }) => return Err(e.to_string().into()),
                Err(e) => {
                    error!(error = %e, "cannot lock the spool folder; running with memory queues only");
                    self.spool_unusable = true;
                }
            }
        }
        Ok(self.spool.is_some())
    }
}

/// A sink thread to start once its channel exists.
type SinkStart = Box<dyn FnOnce(Receiver<Slab>) + Send>;

/// Builds and starts the engine. Returns once every socket is bound (errors before anything runs). `rules` are
/// the receive rules the readers follow (built from `config`; a SIGHUP may replace them, see [`reload`]).
pub fn start(config: &Config, stop: Arc<AtomicBool>, rules: Arc<LiveRules>) -> Result<Engine, StartError> {
    let engine = &config.engine;
    // One owner per port: before anything binds (port 0 is locked once the kernel chose the port).
    let mut owned = Ownership::default();
    let mut ports: Vec<u16> = config.user_events.udp.listen.iter().map(SocketAddr::port).collect();
    ports.sort_unstable();
    ports.dedup();
    for port in ports.into_iter().filter(|&p| p != 0) {
        owned.ports.push(PortLock::acquire(port).map_err(|e| e.to_string())?);
    }
    let counters = Arc::new(ReceiveCounters::default());
    let mut sinks: Vec<(String, Arc<SinkCounters>)> = Vec::new();
    let mut starts: Vec<(String, SinkStart)> = Vec::new();

    if engine.stdout {
        let json = EventJson::new(&config.user_events.tags);
        let c = Arc::new(SinkCounters::default());
        sinks.push(("stdout".into(), Arc::clone(&c)));
        starts.push(("stdout".into(), Box::new(move |rx| stdout::run(rx, json, c))));
    }
    let tags = &config.user_events.tags;
    if config.user_events.send_to_influxdb {
        let influx = &config.influxdb;
        let encoder = LineEncoder::with_version(tags, influx.version);
        // `influxdbConfig.maxBatchSize` keeps Butler SOS's meaning: the most points per write request.
        let mut batch = engine.batch;
        if influx.max_batch_size > 0 {
            batch.max_events = batch.max_events.min(influx.max_batch_size);
        }
        let settings = worker_settings(config, "influxdb", batch, &mut owned, &stop)?;
        let start = match influx.version {
            InfluxVersion::V1 => batched(settings, encoder, InfluxV1Transport::new(influx)),
            InfluxVersion::V2 => batched(settings, encoder, InfluxV2Transport::new(influx)),
            InfluxVersion::V3 => batched(settings, encoder, InfluxV3Transport::new(influx)),
        }
        .map_err(|e| format!("influxdb: {e}"))?;
        sinks.push(("influxdb".into(), start.1));
        starts.push(("influxdb".into(), start.0));

        if engine.analytics.enable {
            let a = &engine.analytics;
            let settings = SessionSettings {
                orphan_after: a.orphan_after,
                gauge_interval: a.gauge_interval,
                max_tracked: a.max_tracked,
            };
            let encoder = SessionAnalytics::new(&settings, influx.version);
            let name = "user_session";
            let settings = worker_settings(config, name, engine.batch, &mut owned, &stop)?;
            let start = match influx.version {
                InfluxVersion::V1 => batched(settings, encoder, InfluxV1Transport::new(influx)),
                InfluxVersion::V2 => batched(settings, encoder, InfluxV2Transport::new(influx)),
                InfluxVersion::V3 => batched(settings, encoder, InfluxV3Transport::new(influx)),
            }
            .map_err(|e| format!("{name}: {e}"))?;
            sinks.push((name.into(), start.1));
            starts.push((name.into(), start.0));
        }
    } else if engine.analytics.enable {
        warn!("sense-ingest.analytics.enable is set but the InfluxDB destination is off: no session analytics");
    }
    let silent_hosts = engine
        .silent_host_after
        .map(|after| Arc::new(Mutex::new(SilentHostAlarm::new(after))));
    if let Some(alarm) = &silent_hosts {
        let alarm = Arc::clone(alarm);
        starts.push((
            "silent_hosts".into(),
            Box::new(move |rx| analytics::watch_hosts(rx, alarm)),
        ));
    }
    if config.user_events.send_to_mqtt.enable {
        let (routing, json) = (&config.user_events.send_to_mqtt, EventJson::new(tags));
        let transport = MqttTransport::new(&config.mqtt, routing, &json);
        let settings = worker_settings(config, "mqtt", engine.batch, &mut owned, &stop)?;
        let start = batched(settings, MqttEncoder::new(routing, json), transport).map_err(|e| format!("mqtt: {e}"))?;
        sinks.push(("mqtt".into(), start.1));
        starts.push(("mqtt".into(), start.0));
    }
    if config.user_events.send_to_new_relic.enable {
        let routing = &config.user_events.send_to_new_relic;
        // One worker per account: a failing account never holds up another.
        for account in &routing.accounts {
            let name = account.destination_name();
            let mut batch = engine.batch;
            // A whole batch must fit one Event API request (1 MB uncompressed). A batch is closed once it reaches
            // max_bytes, so it can exceed it by one event (a few KB): keep a margin.
            batch.max_bytes = batch.max_bytes.min(sink::new_relic::max_body_bytes() - (64 << 10));
            let settings = worker_settings(config, &name, batch, &mut owned, &stop)?;
            let encoder = NewRelicEncoder::new(tags, routing.scramble);
            let start = batched(settings, encoder, NewRelicTransport::new(&config.new_relic, account))
                .map_err(|e| format!("{name}: {e}"))?;
            sinks.push((name.clone(), start.1));
            starts.push((name, start.0));
        }
    }
    if starts.is_empty() {
        warn!("no destination is enabled: events are received, counted and discarded");
    }
    // The spool is locked (by the first destination that spools): before any worker opens its spool, adopt the
    // folders an older version named.
    if owned.spool.is_some() {
        let spooling: Vec<String> = sinks
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| name != "stdout")
            .collect();
        ownership::adopt_legacy_spools(&engine.spool.root(), &spooling).map_err(|e| e.to_string())?;
    }
    let owned = Arc::new(owned);

    let mut outputs: Vec<Sender<Slab>> = Vec::new();
    let mut sink_threads = Vec::new();
    let mut channels: Vec<(String, Receiver<Slab>)> = Vec::new();
    for (name, start) in starts {
        let (tx, rx) = bounded(engine.channel_capacity);
        outputs.push(tx);
        channels.push((name.clone(), rx.clone()));
        let held = Arc::clone(&owned);
        let handle = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || {
                let _held = held;
                start(rx)
            })
            .map_err(|e| format!("cannot start sink thread {name}: {e}"))?;
        sink_threads.push(handle);
    }

    let app_names = match &engine.app_names_file {
        Some(path) => AppNames::from_file(path).map_err(|e| format!("sense-ingest.appNames: {e}"))?,
        None => AppNames::empty(),
    };
    let in_flight = engine.channel_capacity * outputs.len().max(1) + engine.reader_threads * 2;
    let pool = SlabPool::new(engine.events_per_slab, in_flight);
    let event_counts = config.event_count.as_ref().map(|_| Arc::new(EventCounts::default()));
    let shared = Arc::new(ReaderShared {
        pool,
        outputs,
        counters: Arc::clone(&counters),
        max_message_size: config.user_events.udp.max_message_size,
        stop: Arc::clone(&stop),
        app_names: Arc::clone(&app_names),
        rules,
        event_counts: event_counts.clone(),
    });

    // Bind everything first: a bind error stops startup before any thread receives.
    let mut groups: Vec<(SocketAddr, Vec<UdpSocket>)> = Vec::new();
    let mut chosen_ports = Vec::new();
    for addr in &config.user_events.udp.listen {
        let socks = reader::socket::bind_group(*addr, engine.reader_threads, engine.recv_buffer_bytes)
            .map_err(|e| format!("cannot listen on udp {addr}: {e}"))?;
        let bound = socks[0].local_addr().map_err(|e| e.to_string())?;
        if addr.port() == 0 {
            chosen_ports.push(PortLock::acquire(bound.port()).map_err(|e| e.to_string())?);
        }
        groups.push((bound, socks));
    }
    let backend_in_use: Arc<Mutex<&'static str>> = Arc::new(Mutex::new(""));
    let readers_bound = Arc::new(AtomicBool::new(false));
    if let Some(endpoint) = config.metrics_endpoint() {
        let metrics_sinks = sinks
            .iter()
            .map(|(name, c)| {
                let rx = channels.iter().find(|(n, _)| n == name).map(|(_, rx)| rx.clone());
                SinkMetrics::new(name.clone(), Arc::clone(c), move || {
                    rx.as_ref().map_or((0, 0), |rx| (rx.len(), rx.capacity().unwrap_or(0)))
                })
            })
            .collect();
        let mut state = MetricsState::new(Arc::clone(&counters), metrics_sinks);
        state.backend = Arc::clone(&backend_in_use);
        state.readers_bound = Arc::clone(&readers_bound);
        if let Some(alarm) = &silent_hosts {
            let alarm = Arc::clone(alarm);
            state.silent_hosts = Some(Arc::new(move || {
                let alarm = alarm.lock().unwrap_or_else(|e| e.into_inner());
                alarm.silent_hosts().into_iter().map(str::to_owned).collect()
            }));
        }
        let addr = endpoint
            .address
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("{}: cannot resolve {:?}", endpoint.key, endpoint.address))?;
        prometheus::serve(addr, Arc::new(state), engine.unhealthy_after, Arc::clone(&stop)).map_err(|e| {
            format!(
                "{e} (change {}; Butler SOS's own Prometheus endpoint may hold the port)",
                endpoint.key
            )
        })?;
    }
    let mut inodes = Vec::new();
    let mut readers = Vec::new();
    let mut local_addrs = Vec::new();
    for (bound, socks) in groups {
        local_addrs.push(bound);
        for (i, sock) in socks.into_iter().enumerate() {
            inodes.extend(reader::socket::socket_inode(&sock));
            let shared = Arc::clone(&shared);
            let backend = engine.backend;
            let in_use = Arc::clone(&backend_in_use);
            let handle = std::thread::Builder::new()
                .name(format!("reader-{i}"))
                .spawn(move || run_reader(sock, shared, backend, bound, i, in_use))
                .map_err(|e| format!("cannot start reader thread: {e}"))?;
            readers.push(handle);
        }
    }
    if event_counts.is_some() || config.user_events.udp.queue_metrics.is_some() {
        let metrics = metrics_writer::ButlerMetrics {
            influx: config.influxdb.clone(),
            event_count: config.event_count.clone().zip(event_counts),
            queue_metrics: config.user_events.udp.queue_metrics.clone(),
            counters: Arc::clone(&counters),
            sinks: sinks.clone(),
            channels: channels.iter().map(|(_, rx)| rx.clone()).collect(),
            channel_capacity: engine.channel_capacity,
            backpressure_threshold_pct: config.user_events.udp.backpressure_threshold_pct,
            readers: Arc::downgrade(&shared),
            shutdown_timeout: engine.shutdown_timeout,
        };
        let handle = metrics_writer::spawn(metrics, Arc::clone(&stop))
            .map_err(|e| format!("cannot start the Butler SOS metrics thread: {e}"))?;
        sink_threads.push(handle);
    }
    drop(shared);
    readers_bound.store(true, Ordering::Relaxed);

    let monitor = {
        let threshold = config.user_events.udp.backpressure_threshold_pct;
        let counters = Arc::clone(&counters);
        let stop = Arc::clone(&stop);
        let sinks = sinks.clone();
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || {
                let m = shutdown::Monitored {
                    counters,
                    sinks,
                    inodes,
                    app_names,
                    channels,
                    threshold,
                    silent_hosts,
                };
                shutdown::monitor(m, stop)
            })
            .ok()
    };

    Ok(Engine {
        local_addrs,
        counters,
        sinks,
        stop,
        readers,
        sink_threads,
        monitor,
        shutdown_timeout: engine.shutdown_timeout,
        _ownership: owned,
        _chosen_ports: chosen_ports,
    })
}

/// A batched destination: its worker start and its counters.
fn batched<E, T>(
    settings: WorkerSettings,
    encoder: E,
    transport: Result<T, SinkError>,
) -> Result<(SinkStart, Arc<SinkCounters>), SinkError>
where
    E: Encoder + 'static,
    T: Transport + Send + 'static,
{
    let transport = transport?;
    let c = Arc::new(SinkCounters::default());
    let counters = Arc::clone(&c);
    Ok((
        Box::new(move |rx| worker::run(settings, rx, encoder, transport, counters)),
        c,
    ))
}

/// Batching, retry, queue and spool settings for the destination `name` (the first that spools takes the spool
/// lock); `stop` is the engine's stop flag.
fn worker_settings(
    config: &Config,
    name: &str,
    batch: BatchConfig,
    owned: &mut Ownership,
    stop: &Arc<AtomicBool>,
) -> Result<WorkerSettings, StartError> {
    let engine = &config.engine;
    let spool = (engine.spool.enable && owned.spool_usable(&engine.spool.root())?).then(|| SpoolSettings {
        dir: engine.spool.folder_of(name),
        max_bytes: engine.spool.max_bytes,
        fsync_interval: engine.spool.fsync_interval,
    });
    Ok(WorkerSettings {
        name: name.to_string(),
        batch,
        retry: engine.retry,
        queue: QueueSettings {
            max_memory_bytes: engine.spool.memory_bytes,
            spool,
        },
        shutdown_timeout: engine.shutdown_timeout,
        stop: Some(Arc::clone(stop)),
    })
}

/// One reader thread: io_uring unless configured or forced otherwise, recvmmsg as the fallback. At shutdown the
/// socket is drained of what is already queued before the thread returns.
fn run_reader(
    sock: UdpSocket,
    shared: Arc<ReaderShared>,
    backend: ReaderBackend,
    bound: SocketAddr,
    index: usize,
    in_use: Arc<Mutex<&'static str>>,
) {
    let set_in_use = |b: BackendInUse| *in_use.lock().unwrap_or_else(|e| e.into_inner()) = b.as_str();
    let mut core = ReaderCore::new(shared);
    let mut fallback = RecvmmsgReceiver::new(core.max_message_size());
    #[cfg(target_os = "linux")]
    if backend != ReaderBackend::Recvmmsg {
        match reader::uring::UringReceiver::new(&sock, core.max_message_size()) {
            Ok(mut rx) => {
                set_in_use(BackendInUse::IoUring);
                info!(addr = %bound, backend = BackendInUse::IoUring.as_str(), reader = index, "listening");
                let result = rx.run(&mut core);
                drop(rx); // closes the ring, cancelling the multishot request, before the socket is drained
                match result {
                    Ok(()) => {
                        fallback.drain(&sock, &mut core);
                        return;
                    }
                    Err(e) => warn!(error = %e, reader = index, "io_uring receive failed; falling back to recvmmsg"),
                }
            }
            Err(reason) => {
                if index == 0 {
                    let asked = if backend == ReaderBackend::IoUring {
                        " (io_uring was asked for explicitly)"
                    } else {
                        ""
                    };
                    warn!(%reason, "io_uring unavailable{asked}; using recvmmsg");
                }
            }
        }
    }
    set_in_use(BackendInUse::Recvmmsg);
    info!(addr = %bound, backend = BackendInUse::Recvmmsg.as_str(), reader = index, "listening");
    if let Err(e) = fallback.run(&sock, &mut core) {
        error!(error = %e, reader = index, "receive loop failed; this reader stopped");
    }
}

impl Engine {
    /// Requests shutdown (what SIGTERM/SIGINT do).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for a stop request, then shuts down in order: readers drain their socket (at most
    /// [`reader::DRAIN_LIMIT`]) and flush their last slab, channels drain (a sink without a spool no longer waits
    /// for room in its memory queue), sinks deliver for up to `shutdownTimeout`, then spool (or count as dropped)
    /// what is left. The whole shutdown has one deadline: `DRAIN_LIMIT` + `shutdownTimeout` + [`SPOOL_GRACE`]
    /// after the stop request. Returns false when a thread did not finish by then (the final counts may then miss
    /// what that thread still held).
    pub fn wait(mut self) -> bool {
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        info!("shutting down: readers stop, then sinks flush");
        let deadline = Instant::now() + reader::DRAIN_LIMIT + self.shutdown_timeout + SPOOL_GRACE;
        let mut clean = true;
        for t in self.readers.drain(..).chain(self.sink_threads.drain(..)) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                clean = false;
            }
        }
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
        shutdown::log_summary(&self.counters, &self.sinks, "final");
        if !clean {
            error!(
                timeout_s = self.shutdown_timeout.as_secs(),
                "readers or sinks did not finish in time"
            );
        }
        clean
    }
}

/// Why the engine could not start (a socket could not be bound, a thread or client could not be created).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

impl From<String> for StartError {
    fn from(s: String) -> StartError {
        StartError(s)
    }
}
