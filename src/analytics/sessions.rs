//! Session and connection durations and concurrency, derived from the user events themselves.
//!
//! Two layers, both pure (no I/O, no clock of their own: every time is an event's `received_ns` or the `now_ns` the
//! caller passes in):
//! - [`SessionTracker`] pairs the events and keeps the open ones.
//! - [`SessionAnalytics`] wraps a tracker and writes InfluxDB line protocol into the caller's buffer. It implements
//!   [`Encoder`], so it runs as one more batched InfluxDB destination through `sink::delivery::worker::run`.
//!
//! # Pairing
//! - `Start session` / `Stop session` pair per **(host, user directory, user id)**, where host is datagram field 1
//!   (the Sense node). `Open connection` / `Close connection` pair per **(host, user directory, user id, app id)**;
//!   a connection without a valid app id (hub, QMC) pairs under an empty app id.
//! - A user may hold several open sessions (or connections) under one key (two browsers). A Stop pairs with the
//!   *oldest* open Start of its key (first in, first out): the datagrams carry no session id that both ends share,
//!   so this is the best available guess, and it is exact whenever a user has at most one open session per node.
//! - Durations are receive-time differences, `stop.received_ns − start.received_ns` (0 if the Stop was stamped
//!   earlier). A Sense node sends all its events from one UDP flow, which one reader receives in order, and the key
//!   includes the host, so the Start of a key is always seen before its Stop.
//! - Events with another command, and events whose host, user directory or user id is empty, are ignored (the
//!   latter counted as `incomplete_total`).
//!
//! # Orphans, unmatched stops, the memory bound
//! - An open session or connection with no Stop/Close within `orphan_after` is an orphan: it is removed and counted
//!   (`orphaned_sessions_total`, `orphaned_connections_total`), and no duration is written for it. Orphans are found
//!   by the sweep in [`SessionAnalytics::tick`] (at every gauge interval), and also when a Stop arrives for a key
//!   whose oldest Start is older than `orphan_after` (so the result does not depend on when the sweep ran). A Start
//!   that is exactly `orphan_after` old still pairs.
//! - A Stop (Close) with no open Start (Open) under its key is counted as `unmatched_stops_total`
//!   (`unmatched_closes_total`). Starts received before sense-ingest started, orphans and untracked Starts end here.
//! - At most `max_tracked` sessions and connections together are open at once. A Start or Open beyond that is not
//!   tracked and is counted as `untracked_sessions_total` / `untracked_connections_total`; memory stays bounded by
//!   `max_tracked` entries (roughly 100-200 bytes each, depending on name lengths) plus the per-host and per-app
//!   counts, each of which exists only while something under it is open (plus one gauge interval).
//!
//! # What is written (InfluxDB line protocol, one point per line, tags and fields sorted by key)
//! - On each Stop session that pairs: `user_session,host=H,kind=session,userDirectory=D,userId=U
//!   duration_s=90,userFull="D\\U" <stop time ns>`.
//! - On each Close connection that pairs: the same with `kind=connection` and, when the event has an app id, an
//!   `appId=A` tag (before `host`).
//! - At every gauge interval ([`SessionAnalytics::tick`]), after the orphan sweep, per host that has (or just had)
//!   something open: `user_session_concurrent,host=H connections=<n>i,sessions=<n>i <now ns>`, and per host and app
//!   with open connections: `user_session_concurrent,appId=A,host=H connections=<n>i <now ns>`. A host or app whose
//!   count dropped to zero is written once with 0, then forgotten, so a graph falls to zero instead of stopping.
//!
//! `duration_s` is written as an exact decimal of the nanosecond difference (`1.5`, `0.000000123`, `90`), which
//! InfluxDB stores as a float. Point timestamps are made strictly increasing across the `user_session` lines one
//! instance writes (like `LineEncoder` does), because readers stamp a whole receive batch with one time and two
//! Stops of the same user in one batch would otherwise merge into one point. Lines are written with
//! [`LineWriter`] (escaping per InfluxDB version); a tag value ending in `\` cannot be stored by InfluxDB, so
//! trailing backslashes are removed and the line is reported as [`Encoded::Changed`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::config::InfluxVersion;
use crate::event::{Command, Event, Field};
use crate::sink::influxdb::line_protocol::LineWriter;
use crate::sink::{Encoded, Encoder};
use crate::telemetry::metrics::Counter;

/// Measurement of the duration points.
pub const MEASUREMENT: &str = "user_session";
/// Measurement of the concurrency gauges.
pub const MEASUREMENT_CONCURRENT: &str = "user_session_concurrent";
/// Why [`SessionAnalytics`] writes nothing for an event (it opened something, or is another command).
pub const SKIP_NO_OUTPUT: &str = "no_session_output";

/// Default of `orphan_after`: 8 hours.
pub const DEFAULT_ORPHAN_AFTER: Duration = Duration::from_secs(8 * 3600);
/// Default of `gauge_interval`: 10 seconds.
pub const DEFAULT_GAUGE_INTERVAL: Duration = Duration::from_secs(10);
/// Default of `max_tracked`: one million open sessions and connections together.
pub const DEFAULT_MAX_TRACKED: usize = 1_000_000;

/// Separates key parts. Datagram fields are sanitised (control characters removed), so it cannot occur in them.
const SEP: char = '\0';

/// Settings of the session analytics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// A session or connection open longer than this without a Stop/Close is an orphan (default 8 h).
    pub orphan_after: Duration,
    /// How often [`SessionAnalytics::tick`] writes gauges and sweeps orphans (default 10 s). Zero: at every call.
    pub gauge_interval: Duration,
    /// Most sessions and connections open at once (together); beyond it, new ones are counted, not tracked.
    pub max_tracked: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            orphan_after: DEFAULT_ORPHAN_AFTER,
            gauge_interval: DEFAULT_GAUGE_INTERVAL,
            max_tracked: DEFAULT_MAX_TRACKED,
        }
    }
}

/// What the tracker counted. Shared (`Arc`) so the monitor or `/metrics` can read it from another thread; the
/// names are the metric keys.
#[derive(Debug, Default)]
pub struct SessionCounters {
    /// Sessions paired with their Stop (a `kind=session` point was written).
    pub sessions_closed_total: Counter,
    /// Connections paired with their Close (a `kind=connection` point was written).
    pub connections_closed_total: Counter,
    /// Sessions removed because no Stop came within `orphan_after`.
    pub orphaned_sessions_total: Counter,
    /// Connections removed because no Close came within `orphan_after`.
    pub orphaned_connections_total: Counter,
    /// `Stop session` events with no open session under their key.
    pub unmatched_stops_total: Counter,
    /// `Close connection` events with no open connection under their key.
    pub unmatched_closes_total: Counter,
    /// `Start session` events not tracked because `max_tracked` was reached.
    pub untracked_sessions_total: Counter,
    /// `Open connection` events not tracked because `max_tracked` was reached.
    pub untracked_connections_total: Counter,
    /// Session/connection events ignored because host, user directory or user id is empty.
    pub incomplete_total: Counter,
    /// Sessions open now (a gauge).
    pub open_sessions: Counter,
    /// Connections open now (a gauge).
    pub open_connections: Counter,
}

/// Sessions or connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Start session` / `Stop session`.
    Session,
    /// `Open connection` / `Close connection`.
    Connection,
}

impl Kind {
    /// The `kind` tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::Connection => "connection",
        }
    }
}

/// A session or connection that an event just closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Which one.
    pub kind: Kind,
    /// Receive time of its Start/Open, ns since the epoch.
    pub started_ns: u64,
    /// Receive time of its Stop/Close, ns since the epoch.
    pub stopped_ns: u64,
}

impl Closed {
    /// `stopped_ns − started_ns`, 0 when the Stop was stamped earlier.
    pub fn duration_ns(&self) -> u64 {
        self.stopped_ns.saturating_sub(self.started_ns)
    }
}

/// One concurrency gauge, as [`SessionTracker::gauges`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge<'a> {
    /// Open sessions and connections (all apps) of one host.
    Host {
        /// The host.
        host: &'a str,
        /// Open sessions.
        sessions: u64,
        /// Open connections.
        connections: u64,
    },
    /// Open connections of one host to one app.
    App {
        /// The host.
        host: &'a str,
        /// The app id.
        app_id: &'a str,
        /// Open connections.
        connections: u64,
    },
}

/// The open Starts of one key, oldest first. Almost always one, so the first lives inline.
#[derive(Debug)]
struct Open {
    oldest_ns: u64,
    newer_ns: Vec<u64>,
}

impl Open {
    fn new(started_ns: u64) -> Open {
        Open {
            oldest_ns: started_ns,
            newer_ns: Vec::new(),
        }
    }

    fn push(&mut self, started_ns: u64) {
        self.newer_ns.push(started_ns);
    }

    /// Removes the oldest Start and returns it with whether another one remains.
    fn pop_oldest(&mut self) -> (u64, bool) {
        let oldest = self.oldest_ns;
        if self.newer_ns.is_empty() {
            return (oldest, false);
        }
        self.oldest_ns = self.newer_ns.remove(0);
        (oldest, true)
    }
}

/// Open counts of one host.
#[derive(Debug, Default)]
struct HostCount {
    sessions: u64,
    connections: u64,
}

/// What is open per host and per host+app. An entry that falls to zero stays until the next gauge report has
/// written its 0.
#[derive(Debug, Default)]
struct Concurrency {
    hosts: BTreeMap<Box<str>, HostCount>,
    /// Key `host SEP app id`.
    apps: BTreeMap<Box<str>, u64>,
    /// Reused to build `apps` keys without allocating.
    scratch: String,
}

/// Adds or removes `n` from a count.
fn adjust(count: &mut u64, opened: bool, n: u64) {
    *count = if opened { *count + n } else { count.saturating_sub(n) };
}

impl Concurrency {
    /// Counts `n` sessions or connections under the tracker key `key` as opened or closed.
    fn count(&mut self, kind: Kind, key: &str, opened: bool, n: u64) {
        let mut parts = key.split(SEP);
        let host = parts.next().unwrap_or_default();
        let bump = |c: &mut HostCount| match kind {
            Kind::Session => adjust(&mut c.sessions, opened, n),
            Kind::Connection => adjust(&mut c.connections, opened, n),
        };
        if let Some(c) = self.hosts.get_mut(host) {
            bump(c);
        } else if opened {
            let mut c = HostCount::default();
            bump(&mut c);
            self.hosts.insert(host.into(), c);
        }
        if kind == Kind::Session {
            return;
        }
        // Connection keys are `host SEP dir SEP id SEP app`: the app id is the third part after the host.
        let app = parts.nth(2).unwrap_or_default();
        if app.is_empty() {
            return;
        }
        self.scratch.clear();
        self.scratch.push_str(host);
        self.scratch.push(SEP);
        self.scratch.push_str(app);
        if let Some(c) = self.apps.get_mut(self.scratch.as_str()) {
            adjust(c, opened, n);
        } else if opened {
            self.apps.insert(self.scratch.as_str().into(), n);
        }
    }
}

/// Pairs session and connection events and keeps the open ones (see the module docs for the semantics).
#[derive(Debug)]
pub struct SessionTracker {
    orphan_after_ns: u64,
    max_tracked: usize,
    /// Key `host SEP dir SEP id`.
    sessions: HashMap<Box<str>, Open>,
    /// Key `host SEP dir SEP id SEP app id` (empty app id for connections without one).
    connections: HashMap<Box<str>, Open>,
    open_sessions: usize,
    open_connections: usize,
    concurrency: Concurrency,
    /// Reused to build lookup keys without allocating.
    key: String,
    counters: Arc<SessionCounters>,
}

impl SessionTracker {
    /// An empty tracker.
    pub fn new(settings: &SessionSettings) -> SessionTracker {
        SessionTracker {
            orphan_after_ns: u64::try_from(settings.orphan_after.as_nanos()).unwrap_or(u64::MAX),
            max_tracked: settings.max_tracked,
            sessions: HashMap::new(),
            connections: HashMap::new(),
            open_sessions: 0,
            open_connections: 0,
            concurrency: Concurrency::default(),
            key: String::with_capacity(256),
            counters: Arc::new(SessionCounters::default()),
        }
    }

    /// The counters (shared; readable from any thread).
    pub fn counters(&self) -> &Arc<SessionCounters> {
        &self.counters
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.open_sessions
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open_connections
    }

    /// Takes one event into account. Returns what it closed, if it paired a Stop session or Close connection with
    /// an open Start or Open. Allocates only when it opens a key that was not open yet.
    pub fn observe(&mut self, ev: &Event) -> Option<Closed> {
        let (kind, opened) = match ev.command {
            Command::StartSession => (Kind::Session, true),
            Command::StopSession => (Kind::Session, false),
            Command::OpenConnection => (Kind::Connection, true),
            Command::CloseConnection => (Kind::Connection, false),
            Command::Other => return None,
        };
        let (host, dir, id) = (ev.get(Field::Host), ev.get(Field::UserDirectory), ev.get(Field::UserId));
        if host.is_empty() || dir.is_empty() || id.is_empty() {
            self.counters.incomplete_total.inc();
            return None;
        }
        self.key.clear();
        for part in [host, dir, id] {
            self.key.push_str(part);
            self.key.push(SEP);
        }
        match kind {
            Kind::Session => {
                self.key.pop();
            }
            Kind::Connection => self.key.push_str(ev.app_id().unwrap_or_default()),
        }
        if opened {
            self.open(kind, ev.received_ns);
            None
        } else {
            self.close(kind, ev.received_ns)
        }
    }

    /// Opens one under `self.key`, unless `max_tracked` is reached.
    fn open(&mut self, kind: Kind, now_ns: u64) {
        if self.open_sessions + self.open_connections >= self.max_tracked {
            match kind {
                Kind::Session => self.counters.untracked_sessions_total.inc(),
                Kind::Connection => self.counters.untracked_connections_total.inc(),
            }
            return;
        }
        let map = match kind {
            Kind::Session => &mut self.sessions,
            Kind::Connection => &mut self.connections,
        };
        if let Some(open) = map.get_mut(self.key.as_str()) {
            open.push(now_ns);
        } else {
            map.insert(self.key.as_str().into(), Open::new(now_ns));
        }
        self.concurrency.count(kind, &self.key, true, 1);
        self.add_open(kind, 1, true);
    }

    /// Closes the oldest one under `self.key`, after removing the orphans in front of it.
    fn close(&mut self, kind: Kind, now_ns: u64) -> Option<Closed> {
        let map = match kind {
            Kind::Session => &mut self.sessions,
            Kind::Connection => &mut self.connections,
        };
        let mut orphans = 0u64;
        let mut started = None;
        if let Some(open) = map.get_mut(self.key.as_str()) {
            loop {
                let (start, more) = open.pop_oldest();
                if now_ns.saturating_sub(start) > self.orphan_after_ns {
                    orphans += 1;
                } else {
                    started = Some(start);
                }
                if !more {
                    map.remove(self.key.as_str());
                    break;
                }
                if started.is_some() {
                    break;
                }
            }
        }
        let removed = orphans + u64::from(started.is_some());
        if removed > 0 {
            self.concurrency.count(kind, &self.key, false, removed);
            self.add_open(kind, removed as usize, false);
        }
        let c = &self.counters;
        match kind {
            Kind::Session => c.orphaned_sessions_total.add(orphans),
            Kind::Connection => c.orphaned_connections_total.add(orphans),
        }
        let Some(started_ns) = started else {
            match kind {
                Kind::Session => c.unmatched_stops_total.inc(),
                Kind::Connection => c.unmatched_closes_total.inc(),
            }
            return None;
        };
        match kind {
            Kind::Session => c.sessions_closed_total.inc(),
            Kind::Connection => c.connections_closed_total.inc(),
        }
        Some(Closed {
            kind,
            started_ns,
            stopped_ns: now_ns,
        })
    }

    /// Updates the open counts and their gauges.
    fn add_open(&mut self, kind: Kind, n: usize, opened: bool) {
        let (count, gauge) = match kind {
            Kind::Session => (&mut self.open_sessions, &self.counters.open_sessions),
            Kind::Connection => (&mut self.open_connections, &self.counters.open_connections),
        };
        *count = if opened { *count + n } else { count.saturating_sub(n) };
        gauge.set(*count as u64);
    }

    /// Removes every session and connection opened more than `orphan_after` before `now_ns`, counting them.
    /// Returns how many were removed. Walks everything open: call it at a gauge interval, not per event.
    pub fn sweep(&mut self, now_ns: u64) -> usize {
        let orphan_after = self.orphan_after_ns;
        let mut total = 0;
        for kind in [Kind::Session, Kind::Connection] {
            let (map, counter) = match kind {
                Kind::Session => (&mut self.sessions, &self.counters.orphaned_sessions_total),
                Kind::Connection => (&mut self.connections, &self.counters.orphaned_connections_total),
            };
            let concurrency = &mut self.concurrency;
            let mut removed_here = 0u64;
            map.retain(|key, open| {
                let mut removed = 0u64;
                let mut keep = true;
                while now_ns.saturating_sub(open.oldest_ns) > orphan_after {
                    removed += 1;
                    if !open.pop_oldest().1 {
                        keep = false;
                        break;
                    }
                }
                if removed > 0 {
                    concurrency.count(kind, key, false, removed);
                }
                removed_here += removed;
                keep
            });
            counter.add(removed_here);
            if removed_here > 0 {
                self.add_open(kind, removed_here as usize, false);
            }
            total += removed_here as usize;
        }
        total
    }

    /// Reports every concurrency gauge (hosts in name order, then host+app pairs), then forgets hosts and apps
    /// with nothing open: each is reported with 0 exactly once after its last one closed.
    pub fn gauges(&mut self, mut report: impl FnMut(Gauge<'_>)) {
        for (host, c) in &self.concurrency.hosts {
            report(Gauge::Host {
                host,
                sessions: c.sessions,
                connections: c.connections,
            });
        }
        for (key, &connections) in &self.concurrency.apps {
            let (host, app_id) = key.split_once(SEP).unwrap_or((key, ""));
            report(Gauge::App {
                host,
                app_id,
                connections,
            });
        }
        self.concurrency.hosts.retain(|_, c| c.sessions + c.connections > 0);
        self.concurrency.apps.retain(|_, n| *n > 0);
    }

    /// Open sessions (or connections) of one key, oldest first.
    #[cfg(test)]
    fn open_starts(&self, kind: Kind, host: &str, dir: &str, id: &str, app_id: &str) -> Vec<u64> {
        let mut key = [host, dir, id].join(&SEP.to_string());
        let map = match kind {
            Kind::Session => &self.sessions,
            Kind::Connection => {
                key.push(SEP);
                key.push_str(app_id);
                &self.connections
            }
        };
        map.get(key.as_str())
            .map(|o| std::iter::once(o.oldest_ns).chain(o.newer_ns.iter().copied()).collect())
            .unwrap_or_default()
    }
}

/// [`SessionTracker`] writing InfluxDB line protocol (see the module docs for the points). Runs as a sink through
/// its [`Encoder`] implementation, or by calling [`SessionAnalytics::observe`] and [`SessionAnalytics::tick`].
#[derive(Debug)]
pub struct SessionAnalytics {
    tracker: SessionTracker,
    version: InfluxVersion,
    gauge_interval_ns: u64,
    next_tick_ns: u64,
    /// Timestamp of the last `user_session` point (they are made strictly increasing).
    last_ts: u64,
}

impl SessionAnalytics {
    /// Analytics writing lines escaped for InfluxDB `version`.
    pub fn new(settings: &SessionSettings, version: InfluxVersion) -> SessionAnalytics {
        SessionAnalytics {
            tracker: SessionTracker::new(settings),
            version,
            gauge_interval_ns: u64::try_from(settings.gauge_interval.as_nanos()).unwrap_or(u64::MAX),
            next_tick_ns: 0,
            last_ts: 0,
        }
    }

    /// The counters (shared; hand a clone to the monitor or `/metrics`).
    pub fn counters(&self) -> Arc<SessionCounters> {
        Arc::clone(self.tracker.counters())
    }

    /// The tracker.
    pub fn tracker(&self) -> &SessionTracker {
        &self.tracker
    }

    /// The earliest `now_ns` at which [`SessionAnalytics::tick`] writes again (0 before the first tick).
    pub fn next_tick_ns(&self) -> u64 {
        self.next_tick_ns
    }

    /// Takes `ev` into account and, when it closes a session or connection, appends its `user_session` line to
    /// `out`. Returns [`Encoded::Yes`] (or [`Encoded::Changed`], a trailing `\` removed from a tag) when a line was
    /// written, [`Encoded::Skipped`]`(`[`SKIP_NO_OUTPUT`]`)` when nothing was.
    pub fn observe(&mut self, ev: &Event, out: &mut Vec<u8>) -> Encoded {
        let Some(closed) = self.tracker.observe(ev) else {
            return Encoded::Skipped(SKIP_NO_OUTPUT);
        };
        let mut w = LineWriter::new(out, self.version, MEASUREMENT.as_bytes());
        if closed.kind == Kind::Connection {
            if let Some(app_id) = ev.app_id() {
                w.tag("appId", app_id);
            }
        }
        w.tag("host", ev.get(Field::Host));
        w.tag("kind", closed.kind.as_str());
        w.tag("userDirectory", ev.get(Field::UserDirectory));
        w.tag("userId", ev.get(Field::UserId));
        w.field_seconds("duration_s", closed.duration_ns());
        w.field_str("userFull", ev.get(Field::UserFull));
        let ts = closed.stopped_ns.max(self.last_ts + 1);
        self.last_ts = ts;
        if w.finish(ts) {
            Encoded::Changed
        } else {
            Encoded::Yes
        }
    }

    /// When a gauge interval has passed since the last tick (always on the first call): sweeps orphans, then
    /// appends the `user_session_concurrent` lines, stamped `now_ns`, to `out`. Returns how many lines it wrote
    /// (0 when not due). Call it as often as convenient; it rate-limits itself.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<u8>) -> usize {
        if now_ns < self.next_tick_ns {
            return 0;
        }
        self.next_tick_ns = now_ns.saturating_add(self.gauge_interval_ns);
        self.tracker.sweep(now_ns);
        let v = self.version;
        let mut lines = 0;
        self.tracker.gauges(|g| {
            let mut w = LineWriter::new(out, v, MEASUREMENT_CONCURRENT.as_bytes());
            match g {
                Gauge::Host {
                    host,
                    sessions,
                    connections,
                } => {
                    w.tag("host", host);
                    w.field_int("connections", connections);
                    w.field_int("sessions", sessions);
                }
                Gauge::App {
                    host,
                    app_id,
                    connections,
                } => {
                    w.tag("appId", app_id);
                    w.tag("host", host);
                    w.field_int("connections", connections);
                }
            }
            w.finish(now_ns);
            lines += 1;
        });
        lines
    }
}

impl Encoder for SessionAnalytics {
    /// [`SessionAnalytics::observe`], then [`SessionAnalytics::tick`] at the event's receive time, so gauges and
    /// the orphan sweep run while events flow even if the caller never ticks. One item may hold several lines.
    fn encode(&mut self, ev: &Event, out: &mut Vec<u8>) -> Encoded {
        let result = self.observe(ev, out);
        let gauges = self.tick(ev.received_ns, out);
        match result {
            Encoded::Skipped(_) if gauges > 0 => Encoded::Yes,
            r => r,
        }
    }

    /// Gauges and the orphan sweep while no event arrives.
    fn tick(&mut self, now_ns: u64, out: &mut Vec<u8>) -> usize {
        SessionAnalytics::tick(self, now_ns, out)
    }

    fn next_tick_ns(&self) -> Option<u64> {
        Some(SessionAnalytics::next_tick_ns(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_into;

    /// 2023-11-14T22:13:20Z, the scripted timeline's zero.
    const T0: u64 = 1_700_000_000_000_000_000;
    const S: u64 = 1_000_000_000;
    /// Two app ids; A sorts before B.
    const APP_A: &str = "0b6e1c1a-5f2e-4d8e-9c3a-2f1d4b7e8a90";
    const APP_B: &str = "a421f4a2-c311-4ef4-ba41-fe2e6a2b0d69";

    /// An event as the reader makes it: `command` by `dir\user` on `host`, with an app context when `app` is
    /// given, received at `T0 + at_ns`.
    fn ev(host: &str, command: &str, dir: &str, user: &str, app: Option<&str>, at_ns: u64) -> Event {
        let datagram = match (command.ends_with("connection"), app) {
            (true, Some(app)) => format!(
                "/qseow-proxy-connection/;{host};{command};{dir};{user};AppAccess;/app/{app}?reloaduri=x;AppAccess \
                 connection for session 's1'"
            ),
            (true, None) => {
                format!("/qseow-proxy-connection/;{host};{command};{dir};{user};Hub;/hub/;Hub connection")
            }
            (false, _) => format!("/qseow-proxy-session/;{host};{command};{dir};{user};Hub;/hub/;{command} for user"),
        };
        let mut e = Event::new();
        parse_into(datagram.as_bytes(), &mut e).expect("scripted datagram parses");
        e.received_ns = T0 + at_ns;
        e
    }

    fn start(host: &str, user: &str, at_ns: u64) -> Event {
        ev(host, "Start session", "LAB", user, None, at_ns)
    }

    fn stop(host: &str, user: &str, at_ns: u64) -> Event {
        ev(host, "Stop session", "LAB", user, None, at_ns)
    }

    fn open(host: &str, user: &str, app: &str, at_ns: u64) -> Event {
        ev(host, "Open connection", "LAB", user, Some(app), at_ns)
    }

    fn close(host: &str, user: &str, app: &str, at_ns: u64) -> Event {
        ev(host, "Close connection", "LAB", user, Some(app), at_ns)
    }

    fn settings(gauge_interval_s: u64) -> SessionSettings {
        SessionSettings {
            gauge_interval: Duration::from_secs(gauge_interval_s),
            ..SessionSettings::default()
        }
    }

    /// Feeds `events` through [`SessionAnalytics::observe`] and returns everything written.
    fn feed(a: &mut SessionAnalytics, events: &[Event]) -> String {
        let mut out = Vec::new();
        for e in events {
            a.observe(e, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    fn tick(a: &mut SessionAnalytics, at_ns: u64) -> String {
        let mut out = Vec::new();
        a.tick(T0 + at_ns, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn ts(at_ns: u64) -> u64 {
        T0 + at_ns
    }

    #[test]
    fn interleaved_users_hosts_and_apps_get_their_exact_durations() {
        let mut a = SessionAnalytics::new(&SessionSettings::default(), InfluxVersion::V1);
        let got = feed(
            &mut a,
            &[
                start("sense1", "goran", 0),
                start("sense2", "anna", 5 * S),
                open("sense1", "goran", APP_A, 10 * S),
                open("sense1", "goran", APP_B, 30 * S),
                // The same user on another node is another session.
                start("sense2", "goran", 35 * S),
                close("sense1", "goran", APP_A, 40 * S),
                stop("sense1", "goran", 90 * S),
                stop("sense2", "anna", 95 * S + 500_000_000),
                close("sense1", "goran", APP_B, 100 * S),
                stop("sense2", "goran", 100 * S + 250),
            ],
        );
        let want = format!(
            "user_session,appId={APP_A},host=sense1,kind=connection,userDirectory=LAB,userId=goran duration_s=30,\
             userFull=\"LAB\\\\goran\" {}\n\
             user_session,host=sense1,kind=session,userDirectory=LAB,userId=goran duration_s=90,\
             userFull=\"LAB\\\\goran\" {}\n\
             user_session,host=sense2,kind=session,userDirectory=LAB,userId=anna duration_s=90.5,\
             userFull=\"LAB\\\\anna\" {}\n\
             user_session,appId={APP_B},host=sense1,kind=connection,userDirectory=LAB,userId=goran duration_s=70,\
             userFull=\"LAB\\\\goran\" {}\n\
             user_session,host=sense2,kind=session,userDirectory=LAB,userId=goran duration_s=65.00000025,\
             userFull=\"LAB\\\\goran\" {}\n",
            ts(40 * S),
            ts(90 * S),
            ts(95 * S + 500_000_000),
            ts(100 * S),
            ts(100 * S + 250),
        );
        assert_eq!(got, want);
        let c = a.counters();
        assert_eq!(c.sessions_closed_total.get(), 3);
        assert_eq!(c.connections_closed_total.get(), 2);
        assert_eq!(c.unmatched_stops_total.get(), 0);
        assert_eq!(c.open_sessions.get(), 0);
        assert_eq!(c.open_connections.get(), 0);
    }

    #[test]
    fn gauges_count_what_is_open_per_host_and_app_and_fall_to_zero_once() {
        let mut a = SessionAnalytics::new(&settings(10), InfluxVersion::V1);
        assert_eq!(tick(&mut a, 0), "", "nothing known yet: no gauge");
        feed(
            &mut a,
            &[
                start("sense1", "goran", S),
                start("sense1", "anna", S),
                start("sense2", "anna", 2 * S),
                open("sense1", "goran", APP_A, 3 * S),
                open("sense1", "anna", APP_A, 3 * S),
                open("sense1", "goran", APP_B, 4 * S),
            ],
        );
        assert_eq!(tick(&mut a, 9 * S), "", "not due before the gauge interval");
        let at = ts(10 * S);
        assert_eq!(
            tick(&mut a, 10 * S),
            format!(
                "user_session_concurrent,host=sense1 connections=3i,sessions=2i {at}\n\
                 user_session_concurrent,host=sense2 connections=0i,sessions=1i {at}\n\
                 user_session_concurrent,appId={APP_A},host=sense1 connections=2i {at}\n\
                 user_session_concurrent,appId={APP_B},host=sense1 connections=1i {at}\n"
            )
        );
        feed(
            &mut a,
            &[
                close("sense1", "goran", APP_B, 11 * S),
                stop("sense2", "anna", 12 * S),
                close("sense1", "anna", APP_A, 13 * S),
            ],
        );
        let at = ts(20 * S);
        assert_eq!(
            tick(&mut a, 20 * S),
            format!(
                "user_session_concurrent,host=sense1 connections=1i,sessions=2i {at}\n\
                 user_session_concurrent,host=sense2 connections=0i,sessions=0i {at}\n\
                 user_session_concurrent,appId={APP_A},host=sense1 connections=1i {at}\n\
                 user_session_concurrent,appId={APP_B},host=sense1 connections=0i {at}\n"
            ),
            "sense2 and app B are written with 0 once"
        );
        let at = ts(30 * S);
        assert_eq!(
            tick(&mut a, 30 * S),
            format!(
                "user_session_concurrent,host=sense1 connections=1i,sessions=2i {at}\n\
                 user_session_concurrent,appId={APP_A},host=sense1 connections=1i {at}\n"
            ),
            "then forgotten"
        );
        assert_eq!(a.next_tick_ns(), ts(40 * S));
    }

    #[test]
    fn a_session_without_stop_is_an_orphan_after_orphan_after_and_its_late_stop_is_unmatched() {
        let mut a = SessionAnalytics::new(&settings(10), InfluxVersion::V1);
        let eight_h = 8 * 3600 * S;
        feed(
            &mut a,
            &[
                start("sense1", "goran", 0),
                open("sense1", "goran", APP_A, S),
                start("sense1", "anna", 2 * S),
            ],
        );
        assert!(
            tick(&mut a, eight_h).contains("connections=1i,sessions=2i"),
            "exactly 8 h old is not orphaned yet"
        );
        let at = ts(eight_h + 10 * S);
        assert_eq!(
            tick(&mut a, eight_h + 10 * S),
            format!(
                "user_session_concurrent,host=sense1 connections=0i,sessions=0i {at}\n\
                 user_session_concurrent,appId={APP_A},host=sense1 connections=0i {at}\n"
            )
        );
        let c = a.counters();
        assert_eq!(c.orphaned_sessions_total.get(), 2);
        assert_eq!(c.orphaned_connections_total.get(), 1);
        assert_eq!((c.open_sessions.get(), c.open_connections.get()), (0, 0));
        assert_eq!(feed(&mut a, &[stop("sense1", "goran", eight_h + 11 * S)]), "");
        assert_eq!(feed(&mut a, &[close("sense1", "goran", APP_A, eight_h + 11 * S)]), "");
        assert_eq!(c.unmatched_stops_total.get(), 1);
        assert_eq!(c.unmatched_closes_total.get(), 1);
    }

    #[test]
    fn a_stop_after_orphan_after_does_not_pair_even_before_the_sweep_ran() {
        let mut a = SessionAnalytics::new(&SessionSettings::default(), InfluxVersion::V1);
        let eight_h = 8 * 3600 * S;
        let got = feed(
            &mut a,
            &[
                start("sense1", "goran", 0),
                stop("sense1", "goran", eight_h + 1),
                start("sense1", "anna", 0),
                stop("sense1", "anna", eight_h),
            ],
        );
        assert_eq!(
            got,
            format!(
                "user_session,host=sense1,kind=session,userDirectory=LAB,userId=anna duration_s=28800,\
                 userFull=\"LAB\\\\anna\" {}\n",
                ts(eight_h)
            ),
            "only anna's stop, exactly 8 h after her start, pairs"
        );
        let c = a.counters();
        assert_eq!(c.orphaned_sessions_total.get(), 1);
        assert_eq!(c.unmatched_stops_total.get(), 1);
        assert_eq!(c.sessions_closed_total.get(), 1);
    }

    #[test]
    fn an_orphan_in_front_of_a_fresh_start_is_removed_and_the_stop_pairs_with_the_fresh_one() {
        let mut a = SessionAnalytics::new(&SessionSettings::default(), InfluxVersion::V1);
        let nine_h = 9 * 3600 * S;
        let got = feed(
            &mut a,
            &[
                start("sense1", "goran", 0),
                start("sense1", "goran", nine_h),
                stop("sense1", "goran", nine_h + 60 * S),
            ],
        );
        assert!(got.contains(" duration_s=60,"), "{got}");
        assert_eq!(a.counters().orphaned_sessions_total.get(), 1);
        assert_eq!(a.tracker().open_sessions(), 0);
    }

    #[test]
    fn stops_and_closes_without_a_start_are_counted_and_write_nothing() {
        let mut a = SessionAnalytics::new(&SessionSettings::default(), InfluxVersion::V1);
        let mut out = Vec::new();
        assert_eq!(
            a.observe(&stop("sense1", "goran", S), &mut out),
            Encoded::Skipped(SKIP_NO_OUTPUT)
        );
        assert_eq!(
            a.observe(&close("sense1", "goran", APP_A, S), &mut out),
            Encoded::Skipped(SKIP_NO_OUTPUT)
        );
        // A start on another host does not pair with a stop on this one.
        a.observe(&start("sense2", "goran", 2 * S), &mut out);
        a.observe(&stop("sense1", "goran", 3 * S), &mut out);
        // Nor does a connection to another app.
        a.observe(&open("sense1", "goran", APP_A, 4 * S), &mut out);
        a.observe(&close("sense1", "goran", APP_B, 5 * S), &mut out);
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        let c = a.counters();
        assert_eq!(c.unmatched_stops_total.get(), 2);
        assert_eq!(c.unmatched_closes_total.get(), 2);
        assert_eq!((c.open_sessions.get(), c.open_connections.get()), (1, 1));
    }

    #[test]
    fn several_sessions_of_one_user_on_one_host_pair_first_in_first_out() {
        let mut a = SessionAnalytics::new(&settings(10), InfluxVersion::V1);
        feed(&mut a, &[start("sense1", "goran", 0), start("sense1", "goran", 10 * S)]);
        assert_eq!(
            a.tracker().open_starts(Kind::Session, "sense1", "LAB", "goran", ""),
            vec![T0, T0 + 10 * S]
        );
        assert!(tick(&mut a, 15 * S).contains("host=sense1 connections=0i,sessions=2i"));
        let got = feed(
            &mut a,
            &[stop("sense1", "goran", 20 * S), stop("sense1", "goran", 25 * S)],
        );
        let durations: Vec<&str> = got.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
        assert_eq!(
            durations,
            [
                "duration_s=20,userFull=\"LAB\\\\goran\"",
                "duration_s=15,userFull=\"LAB\\\\goran\""
            ]
        );
        assert_eq!(a.counters().unmatched_stops_total.get(), 0);
    }

    #[test]
    fn beyond_max_tracked_new_sessions_and_connections_are_counted_not_tracked() {
        let s = SessionSettings {
            max_tracked: 2,
            ..SessionSettings::default()
        };
        let mut a = SessionAnalytics::new(&s, InfluxVersion::V1);
        let got = feed(
            &mut a,
            &[
                start("sense1", "u1", 0),
                start("sense1", "u2", 0),
                open("sense1", "u3", APP_A, 0),
                start("sense1", "u4", 0),
                stop("sense1", "u4", S),
                stop("sense1", "u1", S),
                start("sense1", "u5", 2 * S),
                stop("sense1", "u5", 3 * S),
            ],
        );
        let users: Vec<&str> = got.lines().map(|l| l.split(',').nth(4).unwrap()).collect();
        assert_eq!(users, ["userId=u1 duration_s=1", "userId=u5 duration_s=1"]);
        let c = a.counters();
        assert_eq!(c.untracked_sessions_total.get(), 1);
        assert_eq!(c.untracked_connections_total.get(), 1);
        assert_eq!(c.unmatched_stops_total.get(), 1, "the untracked session's stop");
        assert_eq!(a.tracker().open_sessions(), 1);
    }

    #[test]
    fn connections_without_an_app_id_pair_and_are_written_without_app_tag() {
        let mut a = SessionAnalytics::new(&settings(10), InfluxVersion::V1);
        let hub_open = ev("sense1", "Open connection", "LAB", "goran", None, 0);
        assert_eq!(hub_open.app_id(), None);
        feed(&mut a, &[hub_open]);
        let at = ts(S);
        assert_eq!(
            tick(&mut a, S),
            format!("user_session_concurrent,host=sense1 connections=1i,sessions=0i {at}\n")
        );
        let got = feed(&mut a, &[ev("sense1", "Close connection", "LAB", "goran", None, 3 * S)]);
        assert_eq!(
            got,
            format!(
                "user_session,host=sense1,kind=connection,userDirectory=LAB,userId=goran duration_s=3,\
                 userFull=\"LAB\\\\goran\" {}\n",
                ts(3 * S)
            )
        );
    }

    #[test]
    fn events_missing_host_or_user_and_other_commands_are_ignored() {
        let mut a = SessionAnalytics::new(&SessionSettings::default(), InfluxVersion::V1);
        let got = feed(
            &mut a,
            &[
                ev("sense1", "Start session", "LAB", "", None, 0),
                ev("", "Start session", "LAB", "goran", None, 0),
                ev("sense1", "Reload", "LAB", "goran", None, 0),
                ev("sense1", "Stop session", "LAB", "", None, S),
            ],
        );
        assert_eq!(got, "");
        let c = a.counters();
        assert_eq!(c.incomplete_total.get(), 3);
        assert_eq!(c.unmatched_stops_total.get(), 0);
        assert_eq!(a.tracker().open_sessions(), 0);
    }

    #[test]
    fn stops_in_one_receive_batch_get_strictly_increasing_timestamps() {
        let mut a = SessionAnalytics::new(&SessionSettings::default(), InfluxVersion::V1);
        let got = feed(
            &mut a,
            &[
                start("sense1", "goran", 0),
                start("sense1", "goran", 0),
                stop("sense1", "goran", S),
                stop("sense1", "goran", S),
            ],
        );
        let stamps: Vec<u64> = got
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(stamps, [ts(S), ts(S) + 1]);
    }

    #[test]
    fn tags_are_escaped_per_version_and_a_trailing_backslash_is_removed_and_reported() {
        for (version, host_tag) in [
            (InfluxVersion::V1, r"host=node\ 1\,a\=b\x"),
            (InfluxVersion::V2, r"host=node\ 1\,a\=b\x"),
            (InfluxVersion::V3, r"host=node\ 1\,a\=b\\x"),
        ] {
            let mut a = SessionAnalytics::new(&SessionSettings::default(), version);
            let host = r"node 1,a=b\x";
            let mut out = Vec::new();
            a.observe(&ev(host, "Start session", "LAB", "go ran\\", None, 0), &mut out);
            let r = a.observe(&ev(host, "Stop session", "LAB", "go ran\\", None, S), &mut out);
            assert_eq!(r, Encoded::Changed, "{version:?}");
            let line = String::from_utf8(out).unwrap();
            assert_eq!(
                line,
                format!(
                    "user_session,{host_tag},kind=session,userDirectory=LAB,userId=go\\ ran duration_s=1,\
                     userFull=\"LAB\\\\go ran\\\\\" {}\n",
                    ts(S)
                ),
                "{version:?}"
            );
        }
    }

    #[test]
    fn as_an_encoder_it_writes_durations_and_gauges_at_event_time() {
        let mut a = SessionAnalytics::new(&settings(10), InfluxVersion::V1);
        let mut out = Vec::new();
        assert_eq!(
            Encoder::encode(&mut a, &start("sense1", "goran", 0), &mut out),
            Encoded::Yes
        );
        assert_eq!(
            String::from_utf8(std::mem::take(&mut out)).unwrap(),
            format!(
                "user_session_concurrent,host=sense1 connections=0i,sessions=1i {}\n",
                ts(0)
            ),
            "the first event ticks"
        );
        assert_eq!(
            Encoder::encode(&mut a, &start("sense1", "anna", 5 * S), &mut out),
            Encoded::Skipped(SKIP_NO_OUTPUT)
        );
        assert!(out.is_empty());
        assert_eq!(
            Encoder::encode(&mut a, &stop("sense1", "goran", 12 * S), &mut out),
            Encoded::Yes
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "user_session,host=sense1,kind=session,userDirectory=LAB,userId=goran duration_s=12,\
                 userFull=\"LAB\\\\goran\" {at}\n\
                 user_session_concurrent,host=sense1 connections=0i,sessions=1i {at}\n",
                at = ts(12 * S)
            ),
            "one item: the duration point, then the gauges that fell due"
        );
    }

    #[test]
    fn memory_is_released_when_everything_closed_and_was_reported() {
        let mut a = SessionAnalytics::new(&settings(0), InfluxVersion::V1);
        for i in 0..100u64 {
            let user = format!("u{i}");
            feed(&mut a, &[start("sense1", &user, i), open("sense1", &user, APP_A, i)]);
        }
        for i in 0..100u64 {
            let user = format!("u{i}");
            feed(
                &mut a,
                &[stop("sense1", &user, S + i), close("sense1", &user, APP_A, S + i)],
            );
        }
        tick(&mut a, 2 * S);
        assert_eq!(tick(&mut a, 3 * S), "");
        let t = a.tracker();
        assert!(t.sessions.is_empty() && t.connections.is_empty());
        assert!(t.concurrency.hosts.is_empty() && t.concurrency.apps.is_empty());
    }
}
