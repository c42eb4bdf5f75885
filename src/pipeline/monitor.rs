//! The monitor thread: the kernel's drop counters of our sockets, channel fill (backpressure WARN), the
//! silent-host alarm, the app-name file, and the periodic summary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tracing::{info, warn};

use super::shutdown::log_summary;
use crate::analytics::{log_alarm, SilentHostAlarm};
use crate::enrich::app_names::AppNames;
use crate::event::slab::Slab;
use crate::reader::socket::kernel_drops;
use crate::telemetry::metrics::{now_unix_ns, ReceiveCounters, SinkCounters};

/// How often the summary line is logged (at info, only when something changed).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// How often the app-name file is checked for changes.
pub const APP_NAMES_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// What the monitor thread watches.
#[derive(Debug)]
pub struct Monitored {
    /// Receive counters.
    pub counters: Arc<ReceiveCounters>,
    /// Per-destination counters.
    pub sinks: Vec<(String, Arc<SinkCounters>)>,
    /// Our sockets' inodes (for the kernel's drop counters).
    pub inodes: Vec<u64>,
    /// The app-name file to reload.
    pub app_names: Arc<AppNames>,
    /// Each destination's channel (a receiver clone, only for its fill level).
    pub channels: Vec<(String, Receiver<Slab>)>,
    /// `messageQueue.backpressureThreshold` (%).
    pub threshold: u8,
    /// The silent-host alarm, when `sense-ingest.silentHostAfter` is set.
    pub silent_hosts: Option<Arc<Mutex<SilentHostAlarm>>>,
}

/// Reads the kernel's drop counters of our sockets (WARN when they grow), reloads the app-name file when it
/// changed, and logs a summary every [`SUMMARY_INTERVAL`] when anything changed. Returns when `stop` is set.
pub fn monitor(m: Monitored, stop: Arc<AtomicBool>) {
    let Monitored {
        counters,
        sinks,
        inodes,
        app_names,
        channels,
        threshold,
        silent_hosts,
    } = m;
    let mut last_backpressure_warn: Vec<Option<Instant>> = vec![None; channels.len()];
    let mut last_reload_check = Instant::now();
    let baseline = kernel_drops(&inodes).unwrap_or(0);
    let mut last_summary = Instant::now();
    let mut last_state = state_of(&counters, &sinks);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(drops) = kernel_drops(&inodes) {
            let drops = drops.saturating_sub(baseline);
            let before = counters.kernel_drops.get();
            if drops > before {
                counters.kernel_drops.set(drops);
                warn!(
                    new = drops - before,
                    total = drops,
                    "the kernel dropped datagrams: the socket receive buffer overflowed (raise recvBufferBytes or \
                     net.core.rmem_max, or find the slow destination)"
                );
            }
        }
        for ((name, rx), last) in channels.iter().zip(last_backpressure_warn.iter_mut()) {
            let capacity = rx.capacity().unwrap_or(usize::MAX).max(1);
            let fill_pct = rx.len() * 100 / capacity;
            if fill_pct >= usize::from(threshold) && last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                *last = Some(Instant::now());
                warn!(
                    sink = %name, fill_pct, threshold_pct = threshold,
                    "a destination is falling behind: its channel is filling (messageQueue.backpressureThreshold)"
                );
            }
        }
        if let Some(alarm) = &silent_hosts {
            let alarms = alarm.lock().unwrap_or_else(|e| e.into_inner()).check(now_unix_ns());
            for a in &alarms {
                log_alarm(a);
            }
        }
        if last_reload_check.elapsed() >= APP_NAMES_CHECK_INTERVAL {
            last_reload_check = Instant::now();
            match app_names.reload_if_changed() {
                Ok(true) => info!(file = ?app_names.path(), "app names reloaded"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "app names file changed but cannot be read; keeping the previous names"),
            }
        }
        if last_summary.elapsed() >= SUMMARY_INTERVAL {
            last_summary = Instant::now();
            let state = state_of(&counters, &sinks);
            if state != last_state {
                last_state = state;
                log_summary(&counters, &sinks, "periodic");
            }
        }
    }
}

/// Every counter the summary shows, to tell whether anything changed since the last summary.
fn state_of(counters: &ReceiveCounters, sinks: &[(String, Arc<SinkCounters>)]) -> Vec<u64> {
    let mut v = vec![
        counters.received.get(),
        counters.kernel_drops.get(),
        counters.invalid_utf8.get(),
    ];
    for (_, c) in sinks {
        v.extend([
            c.delivered.get(),
            c.skipped.get(),
            c.dropped.get(),
            c.retries.get(),
            c.spooled.get(),
        ]);
    }
    v
}
