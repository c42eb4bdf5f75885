//! Mock sinks: a minimal InfluxDB 1.x HTTP API and the New Relic Event API, served by loadgen
//! itself so it can see every event the engine delivers and time it.
//!
//! # What is measured
//! Each delivered event is identified by its sequence number, carried in the user id as
//! `s<seq>` (`flood --seq-in user`, the default when a mock is active):
//! - InfluxDB: the `userId` tag of each line (or, failing that, the `userId` / `userId_field`
//!   string field, so the v1, v2 and v3 layouts all work);
//! - New Relic: the `qs_userId` attribute of each event (so the engine must run with
//!   `scramble: false`; scrambled ids count as "unidentified").
//!
//! The receipt time of a request is taken once its whole body has been read, before it is
//! decompressed or parsed. The end-to-end latency of an event is that receipt time minus the
//! event's *intended* send time from the fixed schedule ([`crate::gen::Schedule`]), so a
//! stalled sender, a slow engine and the engine's batching delay all show up in it. Duplicates
//! (a sequence number seen again, e.g. after a retried batch) are counted but do not add latency
//! samples; sequence numbers outside the run are counted as out of range.
//!
//! # HTTP
//! The workspace's `mini-http` server (shared with the engine's test mocks): keep-alive,
//! `Content-Length` and chunked bodies, `Expect: 100-continue`, and `Content-Encoding: gzip`
//! (multi-member), `x-gzip` or `deflate` bodies. Limits: 64 KiB of headers, 256 MiB of body.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mini_http::{BodyError, Handler, Request, Response, Server, MAX_BODY_BYTES};
use serde::{Deserialize, Serialize};

use crate::gen::Schedule;
use crate::stats::{fmt_count, new_histogram, LatencySummary};

/// Which API a mock serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// InfluxDB 1.x (`/ping`, `/query`, `/write`; also `/api/v2/write` and `/api/v3/write_lp`).
    Influxdb,
    /// New Relic Event API (`POST /v1/accounts/<id>/events`).
    Newrelic,
}

impl SinkKind {
    /// Short name for tables and progress lines.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Influxdb => "influxdb",
            SinkKind::Newrelic => "newrelic",
        }
    }
}

/// What the sink side knows about the run: the clock for latency (intended send time of
/// datagram `i` = `start + schedule(i)`) and how far sending has got.
#[derive(Clone, Debug)]
pub struct RunClock {
    /// When datagram 0 was due; set when sending starts.
    pub start: Arc<OnceLock<Instant>>,
    /// The fixed send schedule.
    pub schedule: Arc<Schedule>,
    /// Datagrams `0..dispatched` have been handed to the sender. An event whose datagram was
    /// not dispatched yet when it arrived cannot be from this run (e.g. a previous run's
    /// spooled events replayed by the engine) and is counted as foreign.
    pub dispatched: Arc<AtomicU64>,
}

/// What one sink has received, by sequence number. Shared by all of a mock's connections.
#[derive(Debug)]
pub struct SeqTracker {
    kind: SinkKind,
    /// Sequence number of datagram 0 (`--seq-base`).
    base: u64,
    capacity: u64,
    /// One bit per datagram index in `0..capacity` (sequence number - base).
    seen: Vec<AtomicU64>,
    unique: AtomicU64,
    duplicates: AtomicU64,
    foreign: AtomicU64,
    unidentified: AtomicU64,
    items: AtomicU64,
    requests: AtomicU64,
    write_requests: AtomicU64,
    bad_requests: AtomicU64,
    clock: Option<RunClock>,
    latency_us: Mutex<Histogram<u64>>,
}

/// A snapshot of a tracker's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrackerCounts {
    /// HTTP requests of any kind.
    pub requests: u64,
    /// Requests that carried events (`/write`, New Relic events).
    pub write_requests: u64,
    /// Requests answered 4xx (bad body, bad encoding, unknown path...).
    pub bad_requests: u64,
    /// Lines (InfluxDB) or events (New Relic) received, including unidentified ones.
    pub items: u64,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Sequence numbers received again.
    pub duplicates: u64,
    /// Items without an `s<seq>` user id (e.g. `event_count` lines, scrambled ids).
    pub unidentified: u64,
    /// Sequence numbers this run did not send: outside `base..base + N`, or received before
    /// their datagram was sent (a previous run's events).
    pub foreign: u64,
}

impl SeqTracker {
    /// A tracker for sequence numbers `base..base + capacity`; with a clock it also records
    /// latency and rejects events whose datagram was not sent yet.
    pub fn new(kind: SinkKind, base: u64, capacity: u64, clock: Option<RunClock>) -> SeqTracker {
        let words = capacity.div_ceil(64) as usize;
        SeqTracker {
            kind,
            base,
            capacity,
            seen: (0..words).map(|_| AtomicU64::new(0)).collect(),
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            unidentified: AtomicU64::new(0),
            items: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            write_requests: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            clock,
            latency_us: Mutex::new(new_histogram()),
        }
    }

    /// The sink this tracker belongs to.
    pub fn kind(&self) -> SinkKind {
        self.kind
    }

    /// Records that the events with sequence numbers `seqs` arrived at `at`.
    pub fn record(&self, seqs: &[u64], at: Instant) {
        let clock = self
            .clock
            .as_ref()
            .and_then(|c| c.start.get().map(|s| (*s, &c.schedule)));
        let dispatched = match &self.clock {
            Some(c) => c.dispatched.load(Ordering::Acquire),
            None => self.capacity,
        };
        let mut hist = self.latency_us.lock().unwrap_or_else(|e| e.into_inner());
        let (mut unique, mut dup, mut foreign) = (0, 0, 0);
        for &abs in seqs {
            let seq = abs.wrapping_sub(self.base);
            if abs < self.base || seq >= self.capacity || seq >= dispatched {
                foreign += 1;
                continue;
            }
            let mask = 1u64 << (seq % 64);
            let prev = self.seen[(seq / 64) as usize].fetch_or(mask, Ordering::Relaxed);
            if prev & mask != 0 {
                dup += 1;
                continue;
            }
            unique += 1;
            if let Some((start, schedule)) = clock {
                let due = start + Duration::from_nanos(schedule.intended_ns(seq));
                let us = at.saturating_duration_since(due).as_micros() as u64;
                // Auto-resizing histogram: record cannot fail for u64 values.
                let _ = hist.record(us.max(1));
            }
        }
        drop(hist);
        self.unique.fetch_add(unique, Ordering::Relaxed);
        self.duplicates.fetch_add(dup, Ordering::Relaxed);
        self.foreign.fetch_add(foreign, Ordering::Relaxed);
    }

    fn add_unidentified(&self, n: u64) {
        self.unidentified.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether datagram index `seq` (sequence number - base) has been received at least once.
    pub fn is_seen(&self, seq: u64) -> bool {
        seq < self.capacity && self.seen[(seq / 64) as usize].load(Ordering::Relaxed) & (1 << (seq % 64)) != 0
    }

    /// The datagram indices in `range` not received yet (a word-at-a-time scan).
    pub fn missing(&self, range: std::ops::Range<u64>) -> Vec<u64> {
        let mut out = Vec::new();
        let end = range.end.min(self.capacity);
        let mut seq = range.start;
        while seq < end {
            if seq.is_multiple_of(64) && seq + 64 <= end {
                let w = self.seen[(seq / 64) as usize].load(Ordering::Relaxed);
                if w == u64::MAX {
                    seq += 64;
                    continue;
                }
            }
            if !self.is_seen(seq) {
                out.push(seq);
            }
            seq += 1;
        }
        out.extend(end.max(range.start)..range.end);
        out
    }

    /// Distinct sequence numbers received so far.
    pub fn unique(&self) -> u64 {
        self.unique.load(Ordering::Relaxed)
    }

    /// A snapshot of all counters.
    pub fn counts(&self) -> TrackerCounts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TrackerCounts {
            requests: l(&self.requests),
            write_requests: l(&self.write_requests),
            bad_requests: l(&self.bad_requests),
            items: l(&self.items),
            unique: l(&self.unique),
            duplicates: l(&self.duplicates),
            unidentified: l(&self.unidentified),
            foreign: l(&self.foreign),
        }
    }

    /// End-to-end latency summary (first receipt of each sequence number).
    pub fn latency(&self) -> LatencySummary {
        LatencySummary::from_histogram(&self.latency_us.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A running mock sink.
#[derive(Debug)]
pub struct MockServer {
    server: Server,
    tracker: Arc<SeqTracker>,
}

impl MockServer {
    /// Binds `listen` and starts serving `tracker.kind()`'s API.
    pub fn start(listen: SocketAddr, tracker: Arc<SeqTracker>) -> io::Result<MockServer> {
        let state = ServerState {
            tracker: Arc::clone(&tracker),
            databases: Mutex::new(BTreeSet::new()),
        };
        let server = Server::start(listen, &format!("mock-{}", tracker.kind().name()), state)?;
        Ok(MockServer { server, tracker })
    }

    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The tracker this server feeds.
    pub fn tracker(&self) -> &Arc<SeqTracker> {
        &self.tracker
    }

    /// Stops accepting, lets connection threads notice within [`mini_http::POLL_INTERVAL`], joins them.
    pub fn stop(self) {
        self.server.stop();
    }
}

struct ServerState {
    tracker: Arc<SeqTracker>,
    /// Databases created through `/query` (echoed by `SHOW DATABASES`).
    databases: Mutex<BTreeSet<String>>,
}

impl Handler for ServerState {
    fn handle(&self, req: &Request) -> Response {
        match self.tracker.kind {
            SinkKind::Influxdb => handle_influx(self, req),
            SinkKind::Newrelic => handle_newrelic(self, req),
        }
    }

    fn refused(&self, status: u16, message: &str) -> Response {
        error(status, message)
    }

    fn answered(&self, _req: &Request, resp: &Response) {
        self.tracker.requests.fetch_add(1, Ordering::Relaxed);
        if resp.status >= 400 {
            self.tracker.bad_requests.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every answer says it comes from InfluxDB 1.8 (clients probe for it).
fn influx_headers(resp: Response) -> Response {
    resp.with_header("X-Influxdb-Version", "1.8.10")
        .with_header("X-Influxdb-Build", "OSS")
}

fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
    influx_headers(Response::json(status, body))
}

fn no_content() -> Response {
    influx_headers(Response::new(204))
}

/// `{"error": msg}`; a 413 closes the connection (the client cannot tell how much of its body was read).
fn error(status: u16, msg: &str) -> Response {
    let resp = json(status, serde_json::json!({ "error": msg }).to_string());
    if status == 413 {
        resp.closing()
    } else {
        resp
    }
}

/// The body decoded per its `Content-Encoding` (into `buf`), or the error answer.
fn decoded<'b>(req: &Request, buf: &'b mut Vec<u8>) -> Result<&'b [u8], Response> {
    match mini_http::decode_body(req.header("content-encoding"), &req.body, MAX_BODY_BYTES, buf) {
        Ok(()) => Ok(buf),
        Err(BodyError::Unsupported) => Err(error(415, "unsupported content-encoding")),
        Err(BodyError::Corrupt) => Err(error(400, "body does not decode per content-encoding")),
        Err(BodyError::TooLarge) => Err(error(413, "decoded body too large")),
    }
}

fn handle_influx(state: &ServerState, req: &Request) -> Response {
    let method = req.method.as_str();
    match req.path() {
        "/ping" | "/health" if matches!(method, "GET" | "HEAD") => no_content(),
        "/query" if matches!(method, "GET" | "POST") => {
            let mut q = req.param("q");
            let is_form = req
                .header("content-type")
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
            if q.is_none() && is_form {
                q = mini_http::form_param(&String::from_utf8_lossy(&req.body), "q");
            }
            match q {
                Some(q) => json(200, influx_query(&state.databases, &q)),
                None => error(400, "missing required parameter \"q\""),
            }
        }
        "/write" | "/api/v2/write" | "/api/v3/write_lp" if method == "POST" => {
            let mut buf = Vec::new();
            let text = match decoded(req, &mut buf) {
                Ok(t) => t,
                Err(resp) => return resp,
            };
            let tracker = &state.tracker;
            tracker.write_requests.fetch_add(1, Ordering::Relaxed);
            let mut seqs = Vec::new();
            let (mut items, mut unidentified) = (0u64, 0u64);
            for line in text.split(|&b| b == b'\n') {
                match seq_from_line(line) {
                    LineSeq::Seq(s) => {
                        items += 1;
                        seqs.push(s);
                    }
                    LineSeq::NoSeq => {
                        items += 1;
                        unidentified += 1;
                    }
                    LineSeq::Blank => {}
                }
            }
            tracker.items.fetch_add(items, Ordering::Relaxed);
            tracker.add_unidentified(unidentified);
            tracker.record(&seqs, req.received_at);
            no_content()
        }
        "/ping" | "/query" | "/write" | "/api/v2/write" | "/api/v3/write_lp" => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

/// Answers an InfluxQL request: `SHOW DATABASES`, `CREATE DATABASE`, and an empty success for
/// anything else (`CREATE RETENTION POLICY`, ...). One result per `;`-separated statement.
fn influx_query(databases: &Mutex<BTreeSet<String>>, q: &str) -> String {
    // Written by hand to keep InfluxDB's key order ({"statement_id":..,"series":[{"name",..).
    let mut out = String::from(r#"{"results":["#);
    let statements: Vec<&str> = q.split(';').map(str::trim).filter(|s| !s.is_empty()).collect();
    for i in 0..statements.len().max(1) {
        let stmt = statements.get(i).copied().unwrap_or("");
        if i > 0 {
            out.push(',');
        }
        let lower = stmt.to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        let mut dbs = databases.lock().unwrap_or_else(|e| e.into_inner());
        if words.starts_with(&["show", "databases"]) {
            out.push_str(&format!(
                r#"{{"statement_id":{i},"series":[{{"name":"databases","columns":["name"]"#
            ));
            if !dbs.is_empty() {
                let values: Vec<String> = dbs
                    .iter()
                    .map(|d| format!("[{}]", serde_json::Value::from(d.as_str())))
                    .collect();
                out.push_str(&format!(r#","values":[{}]"#, values.join(",")));
            }
            out.push_str("}]}");
        } else {
            if words.starts_with(&["create", "database"]) {
                // The original spelling of the name (third word), without quotes.
                if let Some(name) = stmt.split_whitespace().nth(2) {
                    dbs.insert(name.trim_matches('"').to_string());
                }
            }
            out.push_str(&format!(r#"{{"statement_id":{i}}}"#));
        }
    }
    out.push_str("]}");
    out
}

fn handle_newrelic(state: &ServerState, req: &Request) -> Response {
    let path = req.path();
    let is_events = path
        .strip_prefix("/v1/accounts/")
        .and_then(|r| r.strip_suffix("/events"))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    if !is_events {
        return error(404, "not found");
    }
    if req.method != "POST" {
        return error(405, "method not allowed");
    }
    let mut buf = Vec::new();
    let body = match decoded(req, &mut buf) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let Ok(ids) = newrelic_user_ids(body) else {
        return error(400, "body is not a JSON event object or array");
    };
    let tracker = &state.tracker;
    tracker.write_requests.fetch_add(1, Ordering::Relaxed);
    tracker.items.fetch_add(ids.len() as u64, Ordering::Relaxed);
    let seqs: Vec<u64> = ids
        .iter()
        .filter_map(|id| id.as_deref().and_then(parse_s_seq))
        .collect();
    tracker.add_unidentified((ids.len() - seqs.len()) as u64);
    tracker.record(&seqs, req.received_at);
    json(202, r#"{"success":true}"#)
}

/// One New Relic event, reduced to the attribute we identify it by.
#[derive(Deserialize)]
struct NrEvent<'a> {
    #[serde(borrow, default, rename = "qs_userId")]
    qs_user_id: Option<std::borrow::Cow<'a, str>>,
}

/// The `qs_userId` of each event in a New Relic Event API body (a JSON array of events, or a
/// single event object as Butler SOS sends it). `None` for events without a string id.
pub fn newrelic_user_ids(json: &[u8]) -> Result<Vec<Option<String>>, serde_json::Error> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let events: Vec<NrEvent<'_>> = if first == Some(b'{') {
        vec![serde_json::from_slice(json)?]
    } else {
        serde_json::from_slice(json)?
    };
    Ok(events
        .into_iter()
        .map(|e| e.qs_user_id.map(|c| c.into_owned()))
        .collect())
}

/// Parses a user id of the form `s<decimal>` (what `--seq-in user` sends).
pub fn parse_s_seq(v: &str) -> Option<u64> {
    let digits = v.strip_prefix('s')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What a line-protocol line carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineSeq {
    /// A point with user id `s<seq>`.
    Seq(u64),
    /// A point without one.
    NoSeq,
    /// An empty or comment line.
    Blank,
}

/// Extracts the sequence number from one InfluxDB line-protocol line: the `userId` tag if it
/// is `s<seq>`, else the `userId` or `userId_field` string field.
///
/// Understands the line-protocol escaping rules (backslash before `,` `=` space in the
/// measurement/tags, quoted string field values with `\"` and `\\`).
pub fn seq_from_line(line: &[u8]) -> LineSeq {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let first = line.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return LineSeq::Blank;
    };
    let line = &line[first..];
    if line[0] == b'#' {
        return LineSeq::Blank;
    }
    let n = line.len();
    let mut i = 0;
    // Measurement: up to an unescaped ',' or ' '.
    while i < n && line[i] != b',' && line[i] != b' ' {
        i += if line[i] == b'\\' { 2 } else { 1 };
    }
    // Tags.
    while i < n && line[i] == b',' {
        i += 1;
        let key_start = i;
        while i < n && line[i] != b'=' && line[i] != b' ' && line[i] != b',' {
            i += if line[i] == b'\\' { 2 } else { 1 };
        }
        let key = &line[key_start..i.min(n)];
        i += 1; // '='
        let val_start = i.min(n);
        while i < n && line[i] != b',' && line[i] != b' ' {
            i += if line[i] == b'\\' { 2 } else { 1 };
        }
        let val = &line[val_start..i.min(n)];
        if key == b"userId" {
            if let Some(s) = std::str::from_utf8(val).ok().and_then(parse_s_seq) {
                return LineSeq::Seq(s);
            }
        }
    }
    // Fields.
    i += 1;
    while i < n {
        let key_start = i;
        while i < n && line[i] != b'=' {
            i += if line[i] == b'\\' { 2 } else { 1 };
        }
        let key = &line[key_start..i.min(n)];
        i += 1;
        if i < n && line[i] == b'"' {
            i += 1;
            let mut val = Vec::new();
            while i < n && line[i] != b'"' {
                if line[i] == b'\\' && i + 1 < n {
                    i += 1;
                }
                val.push(line[i]);
                i += 1;
            }
            i += 1; // closing quote
            if key == b"userId" || key == b"userId_field" {
                if let Some(s) = std::str::from_utf8(&val).ok().and_then(parse_s_seq) {
                    return LineSeq::Seq(s);
                }
            }
        } else {
            while i < n && line[i] != b',' && line[i] != b' ' {
                i += 1;
            }
        }
        if i >= n || line[i] == b' ' {
            break;
        }
        i += 1; // ','
    }
    LineSeq::NoSeq
}

/// One sink in the `sink-mock` report.
#[derive(Clone, Debug, Serialize)]
pub struct StandaloneSink {
    /// Which API.
    pub sink: SinkKind,
    /// Where it listened.
    pub listen: String,
    /// Raw counters (no loss or latency: nothing was sent by us).
    #[serde(flatten)]
    pub counts: TrackerCounts,
}

/// The `sink-mock` report (`--json` writes exactly this).
#[derive(Clone, Debug, Serialize)]
pub struct SinkMockReport {
    /// Always `"sink-mock"`.
    pub mode: &'static str,
    /// Wall time served.
    pub elapsed_s: f64,
    /// Stopped by SIGINT/SIGTERM.
    pub interrupted: bool,
    /// One entry per mock.
    pub sinks: Vec<StandaloneSink>,
}

impl SinkMockReport {
    /// The human-readable summary.
    pub fn table(&self) -> String {
        let mut s = format!("== loadgen sink-mock ({:.3}s) ==\n", self.elapsed_s);
        for k in &self.sinks {
            let c = &k.counts;
            s.push_str(&format!(
                "sink {} @ {}: {} requests ({} bad), {} items, {} unique seqs, {} duplicates, {} unidentified, {} foreign\n",
                k.sink.name(),
                k.listen,
                fmt_count(c.requests),
                c.bad_requests,
                fmt_count(c.items),
                fmt_count(c.unique),
                fmt_count(c.duplicates),
                fmt_count(c.unidentified),
                fmt_count(c.foreign)
            ));
        }
        s
    }
}

/// Serves the mock APIs on their own (no flood) until `duration` or `shutdown`, counting
/// distinct `s<seq>` user ids in `0..max_seq`.
pub fn run_standalone(
    influx: Option<SocketAddr>,
    newrelic: Option<SocketAddr>,
    max_seq: u64,
    duration: Option<Duration>,
    progress: bool,
    shutdown: &AtomicBool,
) -> anyhow::Result<SinkMockReport> {
    use anyhow::Context;
    let mut servers = Vec::new();
    for (kind, addr, flag) in [
        (SinkKind::Influxdb, influx, "--influx"),
        (SinkKind::Newrelic, newrelic, "--newrelic"),
    ] {
        let Some(addr) = addr else { continue };
        let tracker = Arc::new(SeqTracker::new(kind, 0, max_seq, None));
        let server =
            MockServer::start(addr, tracker).with_context(|| format!("starting the {flag} server on {addr}"))?;
        eprintln!(
            "loadgen: mock {} listening on http://{}",
            kind.name(),
            server.local_addr()
        );
        servers.push(server);
    }
    let start = Instant::now();
    let interrupted = crate::stats::wait_until_done(duration, shutdown, progress, |elapsed| {
        let mut line = format!("[{:>7.1}s]", elapsed.as_secs_f64());
        for m in &servers {
            let c = m.tracker().counts();
            line.push_str(&format!(
                " | {} items {} unique {} dup {}",
                m.tracker().kind().name(),
                fmt_count(c.items),
                fmt_count(c.unique),
                fmt_count(c.duplicates)
            ));
        }
        eprintln!("{line}");
    });
    let elapsed = start.elapsed();
    let sinks = servers
        .into_iter()
        .map(|m| {
            let (sink, listen) = (m.tracker().kind(), m.local_addr().to_string());
            let tracker = Arc::clone(m.tracker());
            m.stop();
            StandaloneSink {
                sink,
                listen,
                counts: tracker.counts(),
            }
        })
        .collect();
    Ok(SinkMockReport {
        mode: "sink-mock",
        elapsed_s: crate::stats::secs(elapsed),
        interrupted,
        sinks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Read, Write};
    use std::net::TcpStream;

    /// `data` as one gzip member.
    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = flate2::read::GzEncoder::new(data, flate2::Compression::fast());
        enc.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn extracts_seq_from_the_user_id_tag_of_each_layout() {
        // v1: tag + same-named field.
        let v1 = br#"user_events,host=qlikproxy01.corp.example,event_action=Start\ session,userFull=LAB\s42,userDirectory=LAB,userId=s42,origin=Hub userFull="LAB\\s42",userId="s42" 1700000000000000000"#;
        assert_eq!(seq_from_line(v1), LineSeq::Seq(42));
        // v2 with sorted tags: userId is the last tag.
        let v2 = br#"user_events,event_action=Open\ connection,host=h,origin=AppAccess,userDirectory=LAB,userId=s7 appId_field="x",userFull="LAB\\s7",userId="s7""#;
        assert_eq!(seq_from_line(v2), LineSeq::Seq(7));
        // v3: tag value kept, field renamed.
        let v3 = br#"user_events,host=h,userId=s99 userId_field="s99""#;
        assert_eq!(seq_from_line(v3), LineSeq::Seq(99));
    }

    #[test]
    fn falls_back_to_the_user_id_field_and_handles_escapes() {
        let l = br#"user_events,host=a\,b\ c,userId=goran,x\=y=z msg="a \"quoted\", spaced=value",userId="s12345" 1"#;
        assert_eq!(seq_from_line(l), LineSeq::Seq(12345));
        let l = br#"user_events,host=h userId_field="s5",n=1i"#;
        assert_eq!(seq_from_line(l), LineSeq::Seq(5));
    }

    #[test]
    fn lines_without_a_seq_user_id_are_not_identified() {
        assert_eq!(
            seq_from_line(b"event_count,host=h,source=qseow-proxy-session counter=3i 1"),
            LineSeq::NoSeq
        );
        assert_eq!(
            seq_from_line(br#"user_events,userId=goran userId="goran""#),
            LineSeq::NoSeq
        );
        assert_eq!(seq_from_line(br#"m,userId=s userId="s12x""#), LineSeq::NoSeq);
        assert_eq!(seq_from_line(b"m,userId=s1\\ 2 f=1"), LineSeq::NoSeq);
        assert_eq!(seq_from_line(b""), LineSeq::Blank);
        assert_eq!(seq_from_line(b"  \r"), LineSeq::Blank);
        assert_eq!(seq_from_line(b"# comment userId=s1"), LineSeq::Blank);
        // Truncated garbage must not panic.
        for l in [&b"m,userId"[..], b"m,userId=", b"m f=\"s1", b"m,\\", b"m f", b"m ,=\\"] {
            let _ = seq_from_line(l);
        }
    }

    #[test]
    fn parses_s_seq_user_ids_only() {
        assert_eq!(parse_s_seq("s0"), Some(0));
        assert_eq!(parse_s_seq("s18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_s_seq("s18446744073709551616"), None);
        for bad in ["", "s", "S1", "s-1", "s1a", "user0042", "s 1"] {
            assert_eq!(parse_s_seq(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_qs_user_id_from_new_relic_arrays_and_single_objects() {
        let arr = br#"[{"eventType":"qs_userEvent","qs_userId":"s3","n":1.5,"o":{"x":[1]}},{"qs_userId":"ab4d299d22eb1b8e"},{"eventType":"x"}]"#;
        let ids = newrelic_user_ids(arr).unwrap();
        assert_eq!(ids, vec![Some("s3".into()), Some("ab4d299d22eb1b8e".into()), None]);
        assert_eq!(
            newrelic_user_ids(br#" {"qs_userId":"s\u0039"}"#).unwrap(),
            vec![Some("s9".into())]
        );
        assert!(newrelic_user_ids(b"[{").is_err());
    }

    #[test]
    fn tracker_counts_unique_duplicates_and_foreign() {
        let t = SeqTracker::new(SinkKind::Influxdb, 0, 130, None);
        t.record(&[0, 1, 64, 129, 1, 130, 5000], Instant::now());
        let c = t.counts();
        assert_eq!((c.unique, c.duplicates, c.foreign), (4, 1, 2));
        let missing = t.missing(0..132);
        assert_eq!(missing.len(), 132 - 4);
        assert!(!missing.contains(&64) && missing.contains(&65) && missing.contains(&131));
        t.record(&(0..130).collect::<Vec<_>>(), Instant::now());
        assert_eq!(t.missing(0..130), Vec::<u64>::new());
    }

    #[test]
    fn events_of_other_runs_or_not_yet_sent_are_foreign() {
        let schedule = Arc::new(Schedule::new(crate::gen::Pattern::Steady, 100, Duration::from_secs(1)).unwrap());
        let dispatched = Arc::new(AtomicU64::new(10));
        let clock = RunClock {
            start: Arc::new(OnceLock::from(Instant::now())),
            schedule,
            dispatched: Arc::clone(&dispatched),
        };
        let t = SeqTracker::new(SinkKind::Influxdb, 1_000, 100, Some(clock));
        // 999: below the base; 1_100: past the end; 1_050: not sent yet.
        t.record(&[1_000, 1_009, 999, 1_100, 1_050], Instant::now());
        let c = t.counts();
        assert_eq!((c.unique, c.foreign), (2, 3));
        assert!(t.is_seen(0) && t.is_seen(9) && !t.is_seen(50));
        dispatched.store(100, Ordering::Release);
        t.record(&[1_050], Instant::now());
        assert!(t.is_seen(50));
        assert_eq!(t.latency().count, 3);
    }

    /// Minimal HTTP/1.1 client: sends one request on `s`, returns (status, body).
    fn request(s: &mut TcpStream, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut r = io::BufReader::new(s.try_clone().unwrap());
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut b = vec![0; len];
        r.read_exact(&mut b).unwrap();
        (status[9..12].parse().unwrap(), String::from_utf8(b).unwrap())
    }

    #[test]
    fn influx_mock_answers_the_startup_queries_and_counts_gzip_writes() {
        let schedule = Arc::new(Schedule::new(crate::gen::Pattern::Steady, 1000, Duration::from_secs(1)).unwrap());
        let clock = RunClock {
            start: Arc::new(OnceLock::from(Instant::now())),
            schedule,
            dispatched: Arc::new(AtomicU64::new(1000)),
        };
        let tracker = Arc::new(SeqTracker::new(SinkKind::Influxdb, 0, 1000, Some(clock)));
        let server = MockServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&tracker)).unwrap();
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        // One keep-alive connection for everything, like the engine's HTTP client.
        assert_eq!(request(&mut s, "GET", "/ping", "", b"").0, 204);
        let (st, body) = request(&mut s, "GET", "/query?q=show%20databases", "", b"");
        assert_eq!(st, 200);
        assert_eq!(
            body,
            r#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"]}]}]}"#
        );
        let (st, body) = request(&mut s, "POST", "/query?q=create%20database%20%22senseops%22", "", b"");
        assert_eq!((st, body.as_str()), (200, r#"{"results":[{"statement_id":0}]}"#));
        let (_, body) = request(
            &mut s,
            "POST",
            "/query",
            "Content-Type: application/x-www-form-urlencoded\r\n",
            b"q=SHOW+DATABASES",
        );
        assert_eq!(
            body,
            r#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["senseops"]]}]}]}"#
        );
        let lines = "user_events,userId=s1 userId=\"s1\"\nuser_events,userId=s2 userId=\"s2\"\nevent_count,host=h counter=1i\nuser_events,userId=s1 userId=\"s1\"\n";
        let (st, _) = request(
            &mut s,
            "POST",
            "/write?db=senseops&precision=n",
            "Content-Encoding: gzip\r\n",
            &gzip(lines.as_bytes()),
        );
        assert_eq!(st, 204);
        assert_eq!(request(&mut s, "POST", "/nope", "", b"").0, 404);
        let c = tracker.counts();
        assert_eq!((c.items, c.unique, c.duplicates, c.unidentified), (4, 2, 1, 1));
        assert_eq!(tracker.latency().count, 2);
        drop(s);
        server.stop();
    }

    #[test]
    fn newrelic_mock_accepts_chunked_gzip_event_arrays() {
        let tracker = Arc::new(SeqTracker::new(SinkKind::Newrelic, 0, 100, None));
        let server = MockServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&tracker)).unwrap();
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        let body = gzip(br#"[{"eventType":"qs_userEvent","qs_userId":"s10"},{"qs_userId":"s11"}]"#);
        let mut req = b"POST /v1/accounts/1111111/events HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in body.chunks(7) {
            req.extend(format!("{:x}\r\n", part.len()).as_bytes());
            req.extend(part);
            req.extend(b"\r\n");
        }
        req.extend(b"0\r\n\r\n");
        s.write_all(&req).unwrap();
        let mut r = io::BufReader::new(s.try_clone().unwrap());
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 202"), "{status}");
        // The same connection still works afterwards.
        let (st, body) = request(&mut s, "POST", "/v1/accounts/1/events", "", br#"{"qs_userId":"s12"}"#);
        assert_eq!((st, body.as_str()), (202, r#"{"success":true}"#));
        assert_eq!(request(&mut s, "POST", "/v1/accounts/1/events", "", b"[oops").0, 400);
        let c = tracker.counts();
        assert_eq!((c.unique, c.bad_requests), (3, 1));
        drop(s);
        server.stop();
    }
}
