//! The monitor thread: the kernel's drop counters of our sockets, channel fill (backpressure WARN), the
//! silent-host alarm, the app-name file, and the periodic summary.
//!
//! It sleeps until its next deadline, not on a fixed tick: every [`CHECK_INTERVAL`] (while datagrams flow, the
//! receive counter moved or a channel holds slabs; otherwise only to notice that they flow again), when the first
//! known host turns silent, when the app-name file is due for a check (only when
//! there is one) and when the summary is due. The stop request wakes it at once.

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tracing::{info, warn};

use super::shutdown::log_summary;
use crate::analytics::{log_alarm, SilentHostAlarm};
use crate::enrich::app_names::AppNames;
use crate::event::slab::Slab;
use crate::reader::socket::socket_drops;
use crate::stop::StopSignal;
use crate::telemetry::metrics::{now_unix_ns, ReceiveCounters, SinkCounters};

/// How often the summary line is logged (at info, only when something changed).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// How often the app-name file is checked for changes.
pub const APP_NAMES_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How often the monitor looks at the flow: while datagrams flow, it reads the kernel's drop counters and the
/// channels' fill (and reports recoveries of silent hosts); while nothing flows, it only looks whether datagrams
/// flow again (two counter loads). Kernel drops are never missed: the counter is cumulative, and the first check
/// after the flow resumed reports what it found. The channels' fill is a sample: a channel that fills past
/// `backpressureThreshold` and drains again within the second may go unreported (`channel_full_waits` still
/// counts every reader that had to wait). Once a second, whatever the rate: each wake-up of a thread costs tens
/// of microseconds on a VM, a noticeable share of what a trickle of tens of events a second costs (five a second
/// while flowing cost 0.02 % of a core there).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What the monitor thread watches.
#[derive(Debug)]
pub struct Monitored {
    /// Receive counters.
    pub counters: Arc<ReceiveCounters>,
    /// Per-destination counters.
    pub sinks: Vec<(String, Arc<SinkCounters>)>,
    /// Clones of our sockets (for the kernel's drop counters).
    pub sockets: Vec<UdpSocket>,
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
/// changed, and logs a summary every [`SUMMARY_INTERVAL`] when anything changed. Returns when `stop` is requested.
pub fn monitor(m: Monitored, stop: Arc<StopSignal>) {
    let Monitored {
        counters,
        sinks,
        sockets,
        app_names,
        channels,
        threshold,
        silent_hosts,
    } = m;
    let mut last_backpressure_warn: Vec<Option<Instant>> = vec![None; channels.len()];
    let baseline = socket_drops(&sockets).unwrap_or(0);
    let read_drops = || {
        let Some(drops) = socket_drops(&sockets) else { return };
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
    };
    let start = Instant::now();
    let mut next_flow_check = start + CHECK_INTERVAL;
    let mut next_reload_check = app_names.path().map(|_| start + APP_NAMES_CHECK_INTERVAL);
    let mut next_summary = start + SUMMARY_INTERVAL;
    let mut flowing = false;
    let mut last_received = counters.received.get();
    let mut last_state = state_of(&counters, &sinks);
    loop {
        let silent_due = silent_hosts.as_ref().and_then(|alarm| {
            let due_ns = alarm.lock().unwrap_or_else(|e| e.into_inner()).next_check_ns()?;
            Some(Instant::now() + Duration::from_nanos(due_ns.saturating_sub(now_unix_ns())))
        });
        let wake = [Some(next_flow_check), next_reload_check, Some(next_summary), silent_due]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_summary);
        if stop.wait_timeout(Some(wake.saturating_duration_since(Instant::now()))) {
            break;
        }
        let now = Instant::now();
        if now >= next_flow_check {
            let received = counters.received.get();
            let queued = channels.iter().any(|(_, rx)| !rx.is_empty());
            // One more check after the flow stopped, for the drops of its last moments.
            if flowing || received != last_received || queued {
                read_drops();
                for ((name, rx), last) in channels.iter().zip(last_backpressure_warn.iter_mut()) {
                    let capacity = rx.capacity().unwrap_or(usize::MAX).max(1);
                    let fill_pct = rx.len() * 100 / capacity;
                    if fill_pct >= usize::from(threshold) && last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                    {
                        *last = Some(Instant::now());
                        warn!(
                            sink = %name, fill_pct, threshold_pct = threshold,
                            "a destination is falling behind: its channel is filling (messageQueue.backpressureThreshold)"
                        );
                    }
                }
            }
            flowing = received != last_received || queued;
            last_received = received;
            next_flow_check = now + CHECK_INTERVAL;
        }
        if let Some(alarm) = &silent_hosts {
            if flowing || silent_due.is_some_and(|due| due <= now) {
                let alarms = alarm.lock().unwrap_or_else(|e| e.into_inner()).check(now_unix_ns());
                for a in &alarms {
                    log_alarm(a);
                }
            }
        }
        if next_reload_check.is_some_and(|due| due <= now) {
            next_reload_check = Some(now + APP_NAMES_CHECK_INTERVAL);
            match app_names.reload_if_changed() {
                Ok(true) => info!(file = ?app_names.path(), "app names reloaded"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "app names file changed but cannot be read; keeping the previous names"),
            }
        }
        if now >= next_summary {
            next_summary = now + SUMMARY_INTERVAL;
            read_drops();
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
