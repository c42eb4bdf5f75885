//! UDP readers: receive → parse → enrich → slab → channels. Readers know channels, never sinks.
//!
//! Each reader thread owns one `SO_REUSEPORT` socket per listen address and one receive backend:
//! - [`uring`]: io_uring multishot `recvmsg` into a provided buffer ring (Linux 6.0+), the default;
//! - [`recvmmsg`]: batched `recvmmsg(2)`, chosen automatically when io_uring cannot be set up (one WARN naming the
//!   reason), or by `sense-ingest.backend: recvmmsg`.
//!
//! Both feed the same [`ReaderCore`], which parses each datagram in place into the current slab and hands the slab
//! to every sink channel when it is full *or before the backend blocks waiting for more data*, so a quiet link
//! never holds an event back.
//!
//! Full channels: the reader waits (blocking send) and counts `channel_full_waits`. While it waits, datagrams
//! queue in the socket's receive buffer (`recvBufferBytes`); if that overflows, the kernel drops them and the
//! drops are read from each socket (`SO_MEMINFO`) and reported as `kernel_drops`. Nothing is dropped silently.

pub mod admission;
pub mod backend;
pub mod recvmmsg;
pub mod rules;
pub mod socket;
#[cfg(target_os = "linux")]
pub mod uring;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use tracing::{debug, error, trace, warn};

use crate::enrich::app_names::{AppNameView, AppNames};
use crate::enrich::user_agent::UserAgentCache;
use crate::event::handover::SlabSender;
use crate::event::slab::{Slab, SlabPool, SlabWriter};
use crate::event::{Field, RejectReason};
use crate::parse::parse_into;
use crate::reader::rules::{LiveRules, Rules};
use crate::stop::StopSignal;
use crate::telemetry::escape::escape_lossy;
use crate::telemetry::event_counts::{EventCounts, LocalEventCounts};
use crate::telemetry::metrics::{HostStats, RateLimit, ReceiveCounters};

/// How long a backend backs off after a receive error, and its idle wait's timeout in the unlikely case it cannot
/// wait on the stop signal's descriptor. Otherwise an idle reader waits with no timeout: the stop wakes it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The longest a reader drains its socket at shutdown (what is queued there when the stop is noticed; a full
/// receive buffer takes a fraction of this), so a sender that keeps sending cannot prolong the shutdown.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// The longest a reader keeps a partly filled slab while more datagrams keep arriving, before it hands the slab
/// over anyway (the linger, [`linger_for`]). While datagrams flow, a reader sleeps about one linger between two
/// drains of its socket, so it wakes per linger rather than per datagram and each wake-up handles what arrived
/// meanwhile; once a drain finds nothing it hands its slab over and blocks (see the backends). A sudden blast
/// during one linger waits in the socket's receive buffer: 5 ms at 150 k/s per socket (a full loopback blast over
/// two readers) is 750 datagrams, far below what the default `recvBufferBytes` (16 MiB) holds.
pub const MAX_LINGER: Duration = Duration::from_millis(5);

/// The linger while a reader is busy (its last pass found more than a batch: near what one reader takes). A
/// busy reader is awake anyway, so a long linger saves no wake-up; it would only hold full slabs back (latency)
/// and let the receive buffer fill further between two drains. 1 ms, as the linger always was before it followed
/// `maxAge`; the recvmmsg reader naps a quarter of it between busy drains.
pub const BUSY_LINGER: Duration = Duration::from_millis(1);

/// The linger for a batch age of `max_age`: half of it, at most [`MAX_LINGER`] (at least 100 µs). A batch's age
/// counts from the receipt of its oldest event, so time spent lingering in the reader is part of `maxAge`, not
/// added to it; half leaves the other half for the encoder and the request. At 10 k/s with `maxAge 5ms`, 2.5 ms
/// instead of a fixed 1 ms cut the recvmmsg engine's CPU per event by about a quarter (BENCHMARKS.md).
pub fn linger_for(max_age: Duration) -> Duration {
    (max_age / 2).clamp(Duration::from_micros(100), MAX_LINGER)
}

/// Wake-ups from idle closer together than this (more than 200 datagrams a second on one reader) make a reader
/// linger (see [`ReaderCore::linger_after_idle_wake`]); a slower trickle is handed over datagram by datagram, one
/// wake-up each, since no other datagram would arrive during a linger anyway and its timer would only cost a
/// second wake-up.
pub const BUSY_GAP: Duration = Duration::from_millis(5);

/// Senders a reader counts locally between two publications; beyond it the counts are published (and the list
/// restarted) at once, so a flood from many source addresses cannot make the per-datagram lookup slow.
const LOCAL_HOSTS_MAX: usize = 64;

/// Distinct user agents a reader's cache holds before it is cleared.
const UA_CACHE_ENTRIES: usize = 4096;

/// One rate-limited WARN per reason per 10 s, each showing the first 512 bytes of the datagram.
static REJECT_LOG: [RateLimit; RejectReason::ALL.len()] =
    [const { RateLimit::new(Duration::from_secs(10)) }; RejectReason::ALL.len()];

/// What all readers share.
#[derive(Debug)]
pub struct ReaderShared {
    /// Where empty slabs come from.
    pub pool: Arc<SlabPool>,
    /// One channel per sink.
    pub outputs: Vec<SlabSender>,
    /// Receive-side counters.
    pub counters: Arc<ReceiveCounters>,
    /// `udpServerConfig.maxMessageSize`.
    pub max_message_size: usize,
    /// Requested by the signal handler; readers drain, flush and return. Idle readers sleep on its descriptor
    /// (with their socket) instead of waking up periodically to test it.
    pub stop: Arc<StopSignal>,
    /// App id → name map (reloadable).
    pub app_names: Arc<AppNames>,
    /// Excluded users, source validation and rate limit (replaced on SIGHUP).
    pub rules: Arc<LiveRules>,
    /// Butler SOS's event counts (`qlikSenseEvents.eventCount`), when they are written.
    pub event_counts: Option<Arc<EventCounts>>,
}

/// Per-datagram work common to both backends.
#[derive(Debug)]
pub struct ReaderCore {
    shared: Arc<ReaderShared>,
    slab: Option<SlabWriter>,
    ua_cache: UserAgentCache,
    app_names: AppNameView,
    local: LocalCounts,
    /// Receive time of the oldest event in the current slab (0: the slab holds none).
    pending_since_ns: u64,
    /// This reader's event counts, merged into `shared.event_counts` at each flush (`None` when off).
    event_counts: Option<LocalEventCounts>,
    /// The receive rules in force for this reader, and their generation (see [`rules`]).
    rules: Arc<Rules>,
    rules_generation: u64,
    /// When the reader last woke from an idle wait (for [`BUSY_GAP`]).
    last_idle_wake: Option<Instant>,
    /// The backend's last pass found more than a batch (see [`BUSY_LINGER`]).
    busy: bool,
}

/// Counts kept per reader and published to the shared atomics once per slab, so readers never contend on a
/// counter cache line per datagram.
#[derive(Debug, Default)]
struct LocalCounts {
    invalid_utf8: u64,
    /// Per sender; a handful of Sense nodes, so a short vector with the last sender's index cached.
    hosts: Vec<(IpAddr, HostStats)>,
    last: usize,
}

impl LocalCounts {
    /// The counts of `ip` (datagrams arrive in runs from one sender, so this is usually the cached index).
    fn host(&mut self, ip: IpAddr) -> &mut HostStats {
        if self.hosts.get(self.last).is_none_or(|(h, _)| *h != ip) {
            self.last = match self.hosts.iter().position(|(h, _)| *h == ip) {
                Some(i) => i,
                None => {
                    self.hosts.push((ip, HostStats::default()));
                    self.hosts.len() - 1
                }
            };
        }
        &mut self.hosts[self.last].1
    }
}

impl ReaderCore {
    /// A core feeding `shared.outputs`.
    pub fn new(shared: Arc<ReaderShared>) -> ReaderCore {
        let slab = Some(shared.pool.take());
        let app_names = AppNameView::new(Arc::clone(&shared.app_names));
        let event_counts = shared.event_counts.as_ref().map(|_| LocalEventCounts::default());
        let (rules_generation, rules) = shared.rules.snapshot();
        ReaderCore {
            shared,
            slab,
            ua_cache: UserAgentCache::new(UA_CACHE_ENTRIES),
            app_names,
            local: LocalCounts::default(),
            pending_since_ns: 0,
            event_counts,
            rules,
            rules_generation,
            last_idle_wake: None,
            busy: false,
        }
    }

    /// The backend says whether its last pass found more than a batch: the linger is then [`BUSY_LINGER`].
    pub fn set_busy(&mut self, busy: bool) {
        self.busy = busy;
    }

    /// The one trickle rule of both backends, called after a wake-up from the idle wait (no slab lingering) that
    /// found `datagrams`: true when the reader should linger for more before handing the slab over (several were
    /// already queued, or wake-ups from idle come less than [`BUSY_GAP`] apart); false for a lone datagram of a
    /// trickle, which is handed over at once.
    pub fn linger_after_idle_wake(&mut self, datagrams: usize) -> bool {
        let now = Instant::now();
        let frequent = self.last_idle_wake.is_some_and(|t| now.duration_since(t) < BUSY_GAP);
        self.last_idle_wake = Some(now);
        datagrams > 1 || frequent
    }

    /// How much longer the current slab may wait for more events before the linger says hand it over: `None`
    /// when it holds no event, zero when it is due.
    pub fn linger_left(&self, now_ns: u64) -> Option<Duration> {
        (self.pending_since_ns != 0).then(|| {
            let age = Duration::from_nanos(now_ns.saturating_sub(self.pending_since_ns));
            self.linger().saturating_sub(age)
        })
    }

    /// The linger in force: [`linger_for`] of `sense-ingest.batch.maxAge` (a reload may change it), at most
    /// [`BUSY_LINGER`] while the reader is busy.
    pub fn linger(&self) -> Duration {
        if self.busy {
            self.rules.linger.min(BUSY_LINGER)
        } else {
            self.rules.linger
        }
    }

    /// True once shutdown was requested.
    pub fn should_stop(&self) -> bool {
        self.shared.stop.is_requested()
    }

    /// The stop request, for backends that sleep on its descriptor.
    pub fn stop_signal(&self) -> &StopSignal {
        &self.shared.stop
    }

    /// The configured `maxMessageSize`.
    pub fn max_message_size(&self) -> usize {
        self.shared.max_message_size
    }

    /// Handles one datagram received at `received_ns` from `peer`. `truncated` means it was larger than the
    /// receive buffer (and therefore than `maxMessageSize`).
    pub fn handle(&mut self, data: &[u8], truncated: bool, peer: SocketAddr, received_ns: u64) {
        let ip = peer.ip().to_canonical();
        if self.local.hosts.len() > LOCAL_HOSTS_MAX {
            // Many senders (a scan, spoofed sources): publish now rather than scan an ever longer list.
            self.publish_counts();
        }
        self.local.host(ip).received += 1;
        trace!(target: "ingest::wire", %peer, payload = %escape_lossy(data), "datagram");
        if self.shared.rules.generation() != self.rules_generation {
            (self.rules_generation, self.rules) = self.shared.rules.snapshot();
        }
        if !self.rules.admission.is_open() {
            if let Err(reason) = self.rules.admission.check_source(peer.ip()) {
                self.reject(reason, data, peer);
                return;
            }
        }
        if truncated || data.len() > self.shared.max_message_size {
            self.reject(RejectReason::OverSize, data, peer);
            return;
        }
        if !self.rules.admission.is_open() {
            if let Err(reason) = self.rules.admission.check_rate(peer.ip(), received_ns) {
                self.reject(reason, data, peer);
                return;
            }
        }
        let slab = self.slab.get_or_insert_with(|| self.shared.pool.take());
        let ev = slab.next_slot();
        match parse_into(data, ev) {
            Ok(notes) => {
                // Butler SOS counts every recognised event before its exclude check.
                if let Some(counts) = &mut self.event_counts {
                    counts.count(ev.source, ev.get(Field::Host), ev.get(Field::Origin));
                }
                let excluded = self
                    .rules
                    .excluded
                    .iter()
                    .any(|x| x.directory == ev.get(Field::UserDirectory) && x.user_id == ev.get(Field::UserId));
                if excluded {
                    self.local.host(ip).excluded += 1;
                    return;
                }
                ev.received_ns = received_ns;
                ev.peer = peer;
                let ua = ev.get(Field::UserAgent);
                if !ua.is_empty() {
                    ev.user_agent = self.ua_cache.lookup(ua);
                }
                if let Some(app_id) = ev.app_id() {
                    ev.app_name = self.app_names.lookup(app_id);
                }
                self.local.invalid_utf8 += u64::from(notes.invalid_utf8);
                debug!(
                    target: "ingest::event",
                    host = ev.get(Field::Host), command = ev.get(Field::Command),
                    user = ev.get(Field::UserFull), origin = ev.get(Field::Origin), %peer, "user event"
                );
                slab.commit();
                if self.pending_since_ns == 0 {
                    self.pending_since_ns = received_ns.max(1);
                }
                self.local.host(ip).accepted += 1;
                if slab.is_full() {
                    self.flush();
                }
            }
            Err(reason) => {
                if reason == RejectReason::UnknownSource {
                    if let Some(counts) = &mut self.event_counts {
                        counts.count_unknown();
                    }
                }
                self.reject(reason, data, peer);
            }
        }
    }

    fn reject(&mut self, reason: RejectReason, data: &[u8], peer: SocketAddr) {
        self.local.host(peer.ip().to_canonical()).rejected[reason.index()] += 1;
        if let Some(suppressed) = REJECT_LOG[reason.index()].allow() {
            let head = &data[..data.len().min(512)];
            warn!(
                %peer, reason = reason.key(), bytes = data.len(), suppressed,
                datagram = %escape_lossy(head),
                "datagram rejected: {reason}"
            );
        }
    }

    /// Hands the current slab (if it holds events) to every sink channel and publishes the local counters.
    /// Blocks while a channel is full (counted).
    pub fn flush(&mut self) {
        self.publish_counts();
        self.app_names.refresh();
        self.pending_since_ns = 0;
        let Some(slab) = self.slab.take_if(|s| !s.is_empty()) else {
            return;
        };
        let slab = slab.share();
        if let Some((last, others)) = self.shared.outputs.split_last() {
            for tx in others {
                self.send(tx, slab.clone());
            }
            self.send(last, slab);
        }
    }

    fn send(&self, tx: &SlabSender, slab: Slab) {
        let sent = match tx.try_send(slab) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(slab)) => {
                self.shared.counters.channel_full_waits.inc();
                tx.send(slab).map_err(|_| ())
            }
            Err(TrySendError::Disconnected(_)) => Err(()),
        };
        if sent.is_err() {
            error!("a sink stopped while readers run; its events are lost");
        }
    }

    fn publish_counts(&mut self) {
        if let (Some(local), Some(shared)) = (&mut self.event_counts, &self.shared.event_counts) {
            shared.merge(local);
        }
        let c = &self.shared.counters;
        let mut total = HostStats::default();
        for (_, h) in &self.local.hosts {
            total.add(h);
        }
        if total.is_zero() {
            return;
        }
        c.received.add(total.received);
        c.accepted.add(total.accepted);
        c.excluded.add(total.excluded);
        c.invalid_utf8.add(std::mem::take(&mut self.local.invalid_utf8));
        for (counter, n) in c.rejected.iter().zip(total.rejected) {
            counter.add(n);
        }
        c.hosts.merge(&self.local.hosts);
        // Keep the senders (and the vector's capacity): zero their counts.
        for (_, h) in self.local.hosts.iter_mut() {
            *h = HostStats::default();
        }
        if self.local.hosts.len() > LOCAL_HOSTS_MAX {
            self.local.hosts.clear(); // many senders: start over rather than scan a long list
        }
    }
}

impl Drop for ReaderCore {
    fn drop(&mut self) {
        self.flush();
    }
}
