//! The shutdown summary (also logged periodically by [`super::monitor`]).

use std::net::IpAddr;
use std::sync::Arc;

use tracing::info;

use crate::event::RejectReason;
use crate::telemetry::metrics::{HostSinkStats, HostStats, ReceiveCounters, SinkCounters};

/// One INFO `summary` line with every counter, then one INFO `sender totals` line per sender (busiest first, at
/// most `SUMMARY_HOSTS`) with its receive counts and, per destination that counts per sender, its
/// `delivered`, `skipped`, `dropped` (of which `spool_cap`) and `spooled` events. Per sender and destination:
/// `received == accepted + excluded + rejected` and `accepted == delivered + skipped + dropped + spooled`
/// once nothing is in flight (kernel drops happen before a sender is known and are only counted in total).
pub fn log_summary(counters: &ReceiveCounters, sinks_in: &[(String, Arc<SinkCounters>)], kind: &str) {
    let rejected: Vec<String> = RejectReason::ALL
        .iter()
        .map(|r| format!("{}={}", r.key(), counters.rejected[r.index()].get()))
        .collect();
    let sinks: Vec<String> = sinks_in
        .iter()
        .map(|(name, c)| {
            format!(
                "{name}(delivered={} skipped={} dropped={} spool_cap={} values_changed={} retries={} spooled={})",
                c.delivered.get(),
                c.skipped.get(),
                c.dropped.get(),
                c.dropped_spool_cap.get(),
                c.values_changed.get(),
                c.retries.get(),
                c.spooled.get()
            )
        })
        .collect();
    info!(
        kind,
        received = counters.received.get(),
        accepted = counters.accepted.get(),
        excluded = counters.excluded.get(),
        rejected = RejectReason::ALL.iter().map(|r| counters.rejected[r.index()].get()).sum::<u64>(),
        rejected_by_reason = ?rejected.join(" "),
        invalid_utf8 = counters.invalid_utf8.get(),
        kernel_drops = counters.kernel_drops.get(),
        channel_full_waits = counters.channel_full_waits.get(),
        sinks = %sinks.join(" "),
        "summary"
    );
    let per_sink: Vec<(&str, Vec<(IpAddr, HostSinkStats)>)> = sinks_in
        .iter()
        .map(|(name, c)| (name.as_str(), c.hosts.snapshot()))
        .collect();
    let mut hosts = counters.hosts.snapshot();
    // Senders only a destination knows (events replayed from the spool of an earlier run) are listed too.
    for (_, sink_hosts) in &per_sink {
        for (ip, _) in sink_hosts {
            if !hosts.iter().any(|(h, _)| h == ip) {
                hosts.push((*ip, HostStats::default()));
            }
        }
    }
    for (ip, h) in hosts.iter().take(SUMMARY_HOSTS) {
        let rejected: Vec<String> = RejectReason::ALL
            .iter()
            .filter(|r| h.rejected[r.index()] > 0)
            .map(|r| format!("{}={}", r.key(), h.rejected[r.index()]))
            .collect();
        let destinations: Vec<String> = per_sink
            .iter()
            .filter(|(_, sink_hosts)| !sink_hosts.is_empty())
            .map(|(name, sink_hosts)| {
                let s = sink_hosts
                    .binary_search_by(|(h, _)| h.cmp(ip))
                    .map_or_else(|_| HostSinkStats::default(), |i| sink_hosts[i].1);
                format!(
                    "{name}(delivered={} skipped={} dropped={} spool_cap={} spooled={})",
                    s.delivered, s.skipped, s.dropped, s.dropped_spool_cap, s.spooled
                )
            })
            .collect();
        info!(
            kind, sender = %ip, received = h.received, accepted = h.accepted, excluded = h.excluded,
            rejected = h.rejected.iter().sum::<u64>(), rejected_by_reason = ?rejected.join(" "),
            destinations = %destinations.join(" "), "sender totals"
        );
    }
    if hosts.len() > SUMMARY_HOSTS {
        info!(
            kind,
            more = hosts.len() - SUMMARY_HOSTS,
            "sender totals: more senders not listed"
        );
    }
}

/// Senders listed in a summary (busiest first).
const SUMMARY_HOSTS: usize = 20;
