//! The only module that knows readers *and* sinks: it builds them from the validated config, wires them with
//! bounded channels, runs them, and shuts them down in order (readers stop → channels drain → sinks flush).

pub mod shutdown;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use tracing::{error, info, warn};

use crate::config::{Config, ReaderBackend};
use crate::enrich::app_names::AppNames;
use crate::event::slab::{Slab, SlabPool};
use crate::reader::recvmmsg::RecvmmsgReceiver;
use crate::reader::{self, ReaderCore, ReaderShared};
use crate::sink::influxdb::{InfluxV1Transport, LineEncoder};
use crate::sink::json::EventJson;
use crate::sink::stdout;
use crate::sink::worker::{self, WorkerSettings};
use crate::telemetry::metrics::{ReceiveCounters, SinkCounters};

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
}

/// A sink thread to start once its channel exists.
type SinkStart = Box<dyn FnOnce(Receiver<Slab>) + Send>;

/// Builds and starts the engine. Returns once every socket is bound (errors before anything runs).
pub fn start(config: &Config, stop: Arc<AtomicBool>) -> Result<Engine, StartError> {
    let engine = &config.engine;
    let counters = Arc::new(ReceiveCounters::default());
    let mut sinks: Vec<(String, Arc<SinkCounters>)> = Vec::new();
    let mut starts: Vec<(String, SinkStart)> = Vec::new();

    if engine.stdout {
        let json = EventJson::new(&config.user_events.tags);
        let c = Arc::new(SinkCounters::default());
        sinks.push(("stdout".into(), Arc::clone(&c)));
        starts.push(("stdout".into(), Box::new(move |rx| stdout::run(rx, json, c))));
    }
    if config.user_events.send_to_influxdb {
        let transport = InfluxV1Transport::new(&config.influxdb).map_err(|e| format!("influxdb: {e}"))?;
        let encoder = LineEncoder::new(&config.user_events.tags);
        let mut batch = engine.batch;
        if config.influxdb.max_batch_size > 0 {
            batch.max_events = batch.max_events.max(config.influxdb.max_batch_size);
        }
        let settings = WorkerSettings {
            name: "influxdb".into(),
            batch,
            retry: engine.retry,
        };
        let c = Arc::new(SinkCounters::default());
        sinks.push(("influxdb".into(), Arc::clone(&c)));
        starts.push((
            "influxdb".into(),
            Box::new(move |rx| worker::run(settings, rx, encoder, transport, c)),
        ));
    }
    if starts.is_empty() {
        warn!("no destination is enabled: events are received, counted and discarded");
    }

    let mut outputs: Vec<Sender<Slab>> = Vec::new();
    let mut sink_threads = Vec::new();
    for (name, start) in starts {
        let (tx, rx) = bounded(engine.channel_capacity);
        outputs.push(tx);
        let handle = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || start(rx))
            .map_err(|e| format!("cannot start sink thread {name}: {e}"))?;
        sink_threads.push(handle);
    }

    let app_names = match &engine.app_names_file {
        Some(path) => AppNames::from_file(path).map_err(|e| format!("sense-ingest.appNames: {e}"))?,
        None => AppNames::empty(),
    };
    let in_flight = engine.channel_capacity * outputs.len().max(1) + engine.reader_threads * 2;
    let pool = SlabPool::new(engine.events_per_slab, in_flight);
    let shared = Arc::new(ReaderShared {
        pool,
        outputs,
        counters: Arc::clone(&counters),
        excluded: config.user_events.exclude_users.clone(),
        max_message_size: config.user_events.udp.max_message_size,
        stop: Arc::clone(&stop),
        app_names: Arc::clone(&app_names),
    });

    // Bind everything first: a bind error stops startup before any thread receives.
    let mut groups: Vec<(SocketAddr, Vec<UdpSocket>)> = Vec::new();
    for addr in &config.user_events.udp.listen {
        let socks = reader::socket::bind_group(*addr, engine.reader_threads, engine.recv_buffer_bytes)
            .map_err(|e| format!("cannot listen on udp {addr}: {e}"))?;
        let bound = socks[0].local_addr().map_err(|e| e.to_string())?;
        groups.push((bound, socks));
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
            let handle = std::thread::Builder::new()
                .name(format!("reader-{i}"))
                .spawn(move || run_reader(sock, shared, backend, bound, i))
                .map_err(|e| format!("cannot start reader thread: {e}"))?;
            readers.push(handle);
        }
    }
    drop(shared);

    let monitor = {
        let counters = Arc::clone(&counters);
        let stop = Arc::clone(&stop);
        let sinks = sinks.clone();
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || shutdown::monitor(counters, sinks, inodes, app_names, stop))
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
    })
}

/// One reader thread: io_uring unless configured or forced otherwise, recvmmsg as the fallback. At shutdown the
/// socket is drained of what is already queued before the thread returns.
fn run_reader(sock: UdpSocket, shared: Arc<ReaderShared>, backend: ReaderBackend, bound: SocketAddr, index: usize) {
    let mut core = ReaderCore::new(shared);
    let mut fallback = RecvmmsgReceiver::new(core.max_message_size());
    #[cfg(target_os = "linux")]
    if backend != ReaderBackend::Recvmmsg {
        match reader::uring::UringReceiver::new(&sock, core.max_message_size()) {
            Ok(mut rx) => {
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

    /// Waits for a stop request, then shuts down in order: readers stop and flush their last slab, channels
    /// drain, sinks flush their last batch. Returns false when sinks did not finish within the shutdown timeout.
    pub fn wait(mut self) -> bool {
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        info!("shutting down: readers stop, then sinks flush");
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let deadline = Instant::now() + self.shutdown_timeout;
        let mut clean = true;
        for s in self.sink_threads.drain(..) {
            while !s.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if s.is_finished() {
                let _ = s.join();
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
                "sinks did not finish flushing in time"
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
