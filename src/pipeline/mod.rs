//! The only module that knows readers *and* sinks: it builds them from the validated config, wires them with
//! bounded channels, runs them, and shuts them down in order (readers stop → channels drain → sinks flush).

pub mod destinations;
pub mod metrics_writer;
pub mod monitor;
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

use crossbeam_channel::Receiver;
use tracing::{error, info, warn};

use crate::analytics::{self, SilentHostAlarm};
use crate::config::Config;
use crate::enrich::app_names::AppNames;
use crate::event::handover::{self, SlabSender};
use crate::event::slab::{Slab, SlabPool};
use crate::reader::backend::run_reader;
use crate::reader::rules::LiveRules;
use crate::reader::{self, ReaderShared};
use crate::sink::SinkError;
use crate::stop::StopSignal;
use crate::telemetry::event_counts::EventCounts;
use crate::telemetry::metrics::{ReceiveCounters, SinkCounters};
use crate::telemetry::prometheus::{self, MetricsState, SinkMetrics};
use destinations::SinkStart;
use ownership::{OwnershipError, PortLock, SpoolLock};
use reload::LiveDestinations;

/// Time allowed after `shutdownTimeout` for sinks to write their leftovers to the spool. A shutdown therefore
/// ends within [`reader::DRAIN_LIMIT`] + `shutdownTimeout` + this grace of the stop request (see [`Engine::wait`]).
pub const SPOOL_GRACE: Duration = Duration::from_secs(5);

/// A running engine: what `run` returns once everything is bound, so callers (main, tests) can wait and stop it.
#[derive(Debug)]
pub struct Engine {
    /// Addresses actually bound (port 0 resolved).
    pub local_addrs: Vec<SocketAddr>,
    /// Receive counters.
    pub counters: Arc<ReceiveCounters>,
    /// Per-sink counters, by sink name.
    pub sinks: Vec<(String, Arc<SinkCounters>)>,
    stop: Arc<StopSignal>,
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
                Err(e @ OwnershipError::SpoolInUse { .. }) => return Err(e.into()),
                Err(e) => {
                    error!(error = %e, "cannot lock the spool folder; running with memory queues only");
                    self.spool_unusable = true;
                }
            }
        }
        Ok(self.spool.is_some())
    }
}

/// Builds and starts the engine. Returns once every socket is bound (errors before anything runs). `rules` are
/// the receive rules the readers follow (built from `config`; a SIGHUP may replace them, see [`reload`]);
/// `live` receives each destination's hook for a reloaded config.
pub fn start(
    config: &Config,
    stop: Arc<StopSignal>,
    rules: Arc<LiveRules>,
    live: &LiveDestinations,
) -> Result<Engine, StartError> {
    let engine = &config.engine;
    // One owner per port: before anything binds (port 0 is locked once the kernel chose the port).
    let mut owned = Ownership::default();
    let mut ports: Vec<u16> = config.user_events.udp.listen.iter().map(SocketAddr::port).collect();
    ports.sort_unstable();
    ports.dedup();
    for port in ports.into_iter().filter(|&p| p != 0) {
        owned.ports.push(PortLock::acquire(port)?);
    }
    let counters = Arc::new(ReceiveCounters::default());
    let destinations = destinations::from_config(config, &mut owned, stop.flag())?;
    if destinations.is_empty() {
        warn!("no destination is enabled: events are received, counted and discarded");
    }
    // The spool is locked (by the first destination that spools): before any worker opens its spool, adopt the
    // folders an older version named.
    if owned.spool.is_some() {
        let spooling: Vec<String> = destinations
            .iter()
            .filter(|d| d.spools)
            .map(|d| d.name.clone())
            .collect();
        ownership::adopt_legacy_spools(&engine.spool.root(), &spooling)?;
    }
    let owned = Arc::new(owned);
    let sinks: Vec<(String, Arc<SinkCounters>)> = destinations
        .iter()
        .map(|d| (d.name.clone(), Arc::clone(&d.counters)))
        .collect();

    // Each destination, and the silent-host watcher, takes every slab through a channel of its own.
    let silent_hosts = engine
        .silent_host_after
        .map(|after| Arc::new(Mutex::new(SilentHostAlarm::new(after))));
    let mut starts: Vec<(String, SinkStart)> = Vec::new();
    let mut retuners = Vec::new();
    for d in destinations {
        starts.push((d.name, d.start));
        retuners.push(d.retune);
    }
    if let Some(alarm) = &silent_hosts {
        let alarm = Arc::clone(alarm);
        starts.push((
            "silent_hosts".into(),
            Box::new(move |rx: handover::SlabReceiver| analytics::watch_hosts(rx.into_inner(), alarm)),
        ));
    }
    let mut outputs: Vec<SlabSender> = Vec::new();
    let mut sink_threads = Vec::new();
    let mut channels: Vec<(String, Receiver<Slab>)> = Vec::new();
    for (name, start) in starts {
        let (tx, rx) = handover::channel(engine.channel_capacity);
        outputs.push(tx);
        channels.push((name.clone(), rx.channel().clone()));
        let held = Arc::clone(&owned);
        let handle = spawn(format!("sink-{name}"), move || {
            let _held = held;
            crate::sink::background_priority();
            start(rx)
        })?;
        sink_threads.push(handle);
    }

    let app_names = match &engine.app_names_file {
        Some(path) => AppNames::from_file(path).map_err(StartError::AppNames)?,
        None => AppNames::empty(),
    };
    live.set(retuners, Arc::clone(&app_names));
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
    for &addr in &config.user_events.udp.listen {
        let bind_error = |source| StartError::Bind { addr, source };
        let socks =
            reader::socket::bind_group(addr, engine.reader_threads, engine.recv_buffer_bytes).map_err(bind_error)?;
        let bound = socks[0].local_addr().map_err(bind_error)?;
        if addr.port() == 0 {
            chosen_ports.push(PortLock::acquire(bound.port())?);
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
        let metrics_error = |message: String| StartError::Metrics {
            key: endpoint.key,
            message,
        };
        let addr = endpoint
            .address
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| metrics_error(format!("cannot resolve {:?}", endpoint.address)))?;
        prometheus::serve(addr, Arc::new(state), engine.unhealthy_after, Arc::clone(&stop))
            .map_err(|e| metrics_error(format!("{e} (Butler SOS's own Prometheus endpoint may hold the port)")))?;
    }
    let mut sockets = Vec::new();
    let mut readers = Vec::new();
    let mut local_addrs = Vec::new();
    for (bound, socks) in groups {
        local_addrs.push(bound);
        for (i, sock) in socks.into_iter().enumerate() {
            // A clone for the monitor, which reads the socket's drop counter (`SO_MEMINFO`).
            sockets.extend(sock.try_clone().ok());
            let shared = Arc::clone(&shared);
            let backend = engine.backend;
            let in_use = Arc::clone(&backend_in_use);
            let handle = spawn(format!("reader-{i}"), move || {
                run_reader(sock, shared, backend, bound, i, in_use)
            })?;
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
        let handle = metrics_writer::spawn(metrics, Arc::clone(&stop)).map_err(|source| StartError::Thread {
            name: "butler-metrics".into(),
            source,
        })?;
        sink_threads.push(handle);
    }
    drop(shared);
    readers_bound.store(true, Ordering::Relaxed);

    let monitored = monitor::Monitored {
        counters: Arc::clone(&counters),
        sinks: sinks.clone(),
        sockets,
        app_names,
        channels,
        threshold: config.user_events.udp.backpressure_threshold_pct,
        silent_hosts,
    };
    let monitor = {
        let stop = Arc::clone(&stop);
        spawn("monitor".into(), move || monitor::monitor(monitored, stop)).ok()
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

/// Starts a named thread; failing to is a start error.
fn spawn<F>(name: String, body: F) -> Result<JoinHandle<()>, StartError>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(body)
        .map_err(|source| StartError::Thread { name, source })
}

impl Engine {
    /// Requests shutdown (what SIGTERM/SIGINT do).
    pub fn request_stop(&self) {
        self.stop.request();
    }

    /// Waits for a stop request, then shuts down in order: readers drain their socket (at most
    /// [`reader::DRAIN_LIMIT`]) and flush their last slab, channels drain (a sink without a spool no longer waits
    /// for room in its memory queue), sinks deliver for up to `shutdownTimeout`, then spool (or count as dropped)
    /// what is left. The whole shutdown has one deadline: `DRAIN_LIMIT` + `shutdownTimeout` + [`SPOOL_GRACE`]
    /// after the stop request. Returns false when a thread did not finish by then (the final counts may then miss
    /// what that thread still held).
    pub fn wait(mut self) -> bool {
        // Blocks in the kernel until SIGTERM/SIGINT or `request_stop`: no periodic wake-up while running.
        while !self.stop.wait_timeout(None) {}
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

/// Why the engine could not start. Nothing receives yet when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another engine owns a port or the spool folder, or the spool folder could not be adopted.
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    /// A listen address could not be bound.
    #[error("cannot listen on udp {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// The spawn error.
        source: std::io::Error,
    },
    /// A destination's client could not be built (TLS settings, an invalid URL or header).
    #[error("{destination}: {source}")]
    Sink {
        /// The destination's name.
        destination: String,
        /// What its client refused.
        source: SinkError,
    },
    /// The metrics endpoint could not be served.
    #[error("{message} (change {key})")]
    Metrics {
        /// The config key that sets the address.
        key: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The app-name file could not be read.
    #[error("sense-ingest.appNames: {0}")]
    AppNames(String),
}
