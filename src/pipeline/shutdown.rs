//! Signals, the monitor thread (kernel drops, periodic summary) and the shutdown summary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::enrich::app_names::AppNames;
use crate::event::RejectReason;
use crate::reader::socket::kernel_drops;
use crate::telemetry::metrics::{ReceiveCounters, SinkCounters};

/// How often the summary line is logged (at info, only when something changed).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// How often the app-name file is checked for changes.
pub const APP_NAMES_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Sets `stop` on SIGTERM or SIGINT.
pub fn install_signal_handlers(stop: &Arc<AtomicBool>) -> std::io::Result<()> {
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(stop))?;
    Ok(())
}

/// Reads the kernel's drop counters of our sockets (WARN when they grow), reloads the app-name file when it
/// changed, and logs a summary every [`SUMMARY_INTERVAL`] when anything changed. Returns when `stop` is set.
pub fn monitor(
    counters: Arc<ReceiveCounters>,
    sinks: Vec<(String, Arc<SinkCounters>)>,
    inodes: Vec<u64>,
    app_names: Arc<AppNames>,
    stop: Arc<AtomicBool>,
) {
    let mut last_reload_check = Instant::now();
    let baseline = kernel_drops(&inodes).unwrap_or(0);
    let mut last_summary = Instant::now();
    let mut last_received = 0;
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
            let received = counters.received.get();
            if received != last_received {
                last_received = received;
                log_summary(&counters, &sinks, "periodic");
            }
        }
    }
}

/// One INFO line with every counter.
pub fn log_summary(counters: &ReceiveCounters, sinks: &[(String, Arc<SinkCounters>)], kind: &str) {
    let rejected: Vec<String> = RejectReason::ALL
        .iter()
        .map(|r| format!("{}={}", r.key(), counters.rejected[r.index()].get()))
        .collect();
    let sinks: Vec<String> = sinks
        .iter()
        .map(|(name, c)| {
            format!(
                "{name}(delivered={} skipped={} dropped={} values_changed={} retries={})",
                c.delivered.get(),
                c.skipped.get(),
                c.dropped.get(),
                c.values_changed.get(),
                c.retries.get()
            )
        })
        .collect();
    info!(
        kind,
        received = counters.received.get(),
        accepted = counters.accepted.get(),
        excluded = counters.excluded.get(),
        rejected = %rejected.join(" "),
        invalid_utf8 = counters.invalid_utf8.get(),
        kernel_drops = counters.kernel_drops.get(),
        channel_full_waits = counters.channel_full_waits.get(),
        sinks = %sinks.join(" "),
        "summary"
    );
}
