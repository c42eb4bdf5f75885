//! `flood`: paced sending from one UDP socket per simulated proxy host, with `sendmmsg`
//! batches, optional mock sinks, and the final report.
//!
//! # Pacing and measurement
//! The run follows a fixed schedule ([`Schedule`]): datagram `i` is due at `start + t(i)`
//! (`t(i) = i / rate` for `steady`). The sender sleeps until the next datagram is due, then
//! sends *everything* that is due by now, so when it falls behind (a slow syscall, a
//! descheduled thread) it catches up in bigger `sendmmsg` batches instead of shifting the
//! schedule. Two latencies are recorded against the intended time `start + t(i)`:
//! - **send lag**: when the `sendmmsg` call that carried the datagram returned. It shows
//!   whether the generator itself kept up;
//! - **end to end** (only with a mock sink): when the sink received the line or event
//!   carrying the datagram's sequence number ([`crate::mock`]).
//!
//! Measuring from the intended time avoids coordinated omission: a stall is charged to every
//! datagram that should have been sent during it, not just to the one that was in flight.
//!
//! # Exact loss
//! Each datagram has a unique sequence number `0..N`. With a mock sink, loss is
//! `sent - distinct sequence numbers received` after the `--drain-wait` grace period, computed
//! exactly from a bitmap; each missing number is attributed to its host by re-running the
//! deterministic model ([`TrafficModel::host_of`]). Duplicates are counted separately.

use std::io::{self, BufWriter, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::framing::{write_frame, Framing};
use crate::gen::{Command, ModelConfig, Pattern, Schedule, SeqIn, TrafficModel};
use crate::mock::{MockServer, RunClock, SeqTracker, SinkKind, TrackerCounts};
use crate::procstat::{CpuTimes, Memory};
use crate::stats::{self, fmt_count, new_histogram, pct, LatencySummary};

/// Largest `vlen` the kernel accepts for one `sendmmsg` call (UIO_MAXIOV).
pub const MAX_BATCH: usize = 1024;
/// Most datagrams generated per pacing round before flags and progress are looked at again.
const MAX_PER_ROUND: u64 = 8192;
/// Longest single sleep, so Ctrl-C is noticed quickly during `--start-delay`.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// Time between the end of setup and datagram 0's intended send time.
const LEAD_IN: Duration = Duration::from_millis(20);
/// How many times one datagram is retried after `ECONNREFUSED` (a stale ICMP error).
const REFUSED_RETRIES: u32 = 3;

/// A UDP socket bound to an ephemeral port and connected to `target`: one simulated proxy
/// host. Bound on loopback when the target is loopback.
pub fn connected_socket(target: SocketAddr) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(target), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a large send buffer avoids ENOBUFS/blocking in big batches.
    let _ = sock.set_send_buffer_size(4 << 20);
    let bind: SocketAddr = match (target, target.ip().is_loopback()) {
        (SocketAddr::V4(_), true) => (std::net::Ipv4Addr::LOCALHOST, 0).into(),
        (SocketAddr::V4(_), false) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        (SocketAddr::V6(_), true) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
        (SocketAddr::V6(_), false) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    sock.bind(&bind.into())?;
    sock.connect(&target.into())?;
    Ok(sock.into())
}

/// Datagrams laid back to back in one buffer, with their sequence numbers.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
    seqs: Vec<u64>,
}

impl Batch {
    /// An empty batch with room for `n` datagrams.
    pub fn with_capacity(n: usize) -> Batch {
        Batch {
            buf: Vec::with_capacity(n * 512),
            spans: Vec::with_capacity(n),
            seqs: Vec::with_capacity(n),
        }
    }

    /// Appends one datagram written by `write`.
    pub fn push_with<R>(&mut self, seq: u64, write: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let start = self.buf.len();
        let r = write(&mut self.buf);
        self.spans.push((start, self.buf.len()));
        self.seqs.push(seq);
        r
    }

    /// Number of datagrams.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Removes all datagrams, keeping the allocations.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.spans.clear();
        self.seqs.clear();
    }
}

/// Counters from sending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOutcome {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Datagrams given up on (error other than a transient one).
    pub errors: u64,
    /// `ECONNREFUSED` returns (a stale ICMP port-unreachable; the datagram is retried).
    pub refused: u64,
    /// `sendmmsg` calls made.
    pub calls: u64,
}

impl SendOutcome {
    fn add(&mut self, o: SendOutcome) {
        self.sent += o.sent;
        self.bytes += o.bytes;
        self.errors += o.errors;
        self.refused += o.refused;
        self.calls += o.calls;
    }
}

/// Reusable `sendmmsg` headers.
pub struct MmsgSender {
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    max_per_call: usize,
}

impl MmsgSender {
    /// Sends at most `max_per_call` datagrams per syscall (clamped to `1..=MAX_BATCH`).
    pub fn new(max_per_call: usize) -> MmsgSender {
        let max_per_call = max_per_call.clamp(1, MAX_BATCH);
        MmsgSender {
            iovs: Vec::with_capacity(max_per_call),
            hdrs: (0..max_per_call)
                // SAFETY: mmsghdr is a plain C struct (pointers, lengths, flags); all-zero is
                // a valid value (null name/iov/control pointers with zero lengths).
                .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
                .collect(),
            max_per_call,
        }
    }

    /// Sends the datagrams `buf[s..e]` for each `(s, e)` in `spans`, in order, on the
    /// connected socket `fd`, using as few `sendmmsg` calls as possible. Indices (into `spans`)
    /// of datagrams that could not be sent are appended to `failed`.
    ///
    /// Transient conditions are retried: `EINTR`, `EAGAIN`/`ENOBUFS` (after yielding), and
    /// `ECONNREFUSED` (the pending ICMP error of an earlier datagram; the kernel clears it when
    /// it reports it, so the retry goes out) up to [`REFUSED_RETRIES`] times per datagram.
    pub fn send(&mut self, fd: RawFd, buf: &[u8], spans: &[(usize, usize)], failed: &mut Vec<usize>) -> SendOutcome {
        let mut out = SendOutcome::default();
        let mut i = 0;
        let mut refused_here = 0u32;
        while i < spans.len() {
            let n = (spans.len() - i).min(self.max_per_call);
            self.iovs.clear();
            for &(s, e) in &spans[i..i + n] {
                let d = &buf[s..e];
                self.iovs.push(libc::iovec {
                    // sendmmsg only reads through iov_base; the *mut is what the C type wants.
                    iov_base: d.as_ptr() as *mut libc::c_void,
                    iov_len: d.len(),
                });
            }
            for (h, iov) in self.hdrs.iter_mut().zip(self.iovs.iter_mut()) {
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h.msg_len = 0;
            }
            // SAFETY: `hdrs[..n]` are initialised mmsghdrs whose msg_iov each point at one
            // live iovec in `self.iovs`, which in turn point into `buf` (borrowed for the whole
            // call, never written through). No msg_name (the socket is connected), no control.
            let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as _, 0) };
            out.calls += 1;
            if r > 0 {
                let r = r as usize;
                for &(s, e) in &spans[i..i + r] {
                    out.bytes += (e - s) as u64;
                }
                out.sent += r as u64;
                i += r;
                refused_here = 0;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => std::thread::yield_now(),
                Some(libc::ECONNREFUSED) if refused_here < REFUSED_RETRIES => {
                    out.refused += 1;
                    refused_here += 1;
                }
                _ => {
                    out.errors += 1;
                    failed.push(i);
                    i += 1;
                    refused_here = 0;
                }
            }
        }
        out
    }
}

/// Everything `flood` needs.
#[derive(Clone, Debug)]
pub struct FloodConfig {
    /// Where the datagrams go.
    pub target: SocketAddr,
    /// Mean datagrams per second.
    pub rate: u64,
    /// Length of the schedule.
    pub duration: Duration,
    /// Rate shape.
    pub pattern: Pattern,
    /// Model sizes, seed, run id, where the seq goes.
    pub model: ModelConfig,
    /// Max datagrams per `sendmmsg` call.
    pub batch: usize,
    /// Serve a mock InfluxDB 1.x API here.
    pub mock_influx: Option<SocketAddr>,
    /// Serve a mock New Relic Event API here.
    pub mock_newrelic: Option<SocketAddr>,
    /// Grace period after the last send for the sinks to catch up.
    pub drain_wait: Duration,
    /// Delay between mocks being up and the first datagram.
    pub start_delay: Duration,
    /// Shortest sleep between send rounds (0 = wake exactly when the next datagram is due).
    /// A longer tick sends bigger bursts with fewer wake-ups, at up to `tick` extra latency.
    pub tick: Duration,
    /// Print a progress line every second on stderr.
    pub progress: bool,
    /// Measure this process's CPU (from the first send to the end of the drain wait) and memory (at the end).
    pub measure_pid: Option<u32>,
}

/// Datagrams per command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CommandCounts {
    /// `Start session`.
    pub start_session: u64,
    /// `Stop session`.
    pub stop_session: u64,
    /// `Open connection`.
    pub open_connection: u64,
    /// `Close connection`.
    pub close_connection: u64,
}

impl CommandCounts {
    /// Counts one datagram of `c`.
    pub fn add(&mut self, c: Command) {
        match c {
            Command::StartSession => self.start_session += 1,
            Command::StopSession => self.stop_session += 1,
            Command::OpenConnection => self.open_connection += 1,
            Command::CloseConnection => self.close_connection += 1,
        }
    }
}

/// Per simulated host: what was sent.
#[derive(Clone, Debug, Serialize)]
pub struct HostSent {
    /// Host name in field 1.
    pub host: String,
    /// The host socket's local address (its own source port).
    pub local_addr: String,
    /// Datagrams sent.
    pub sent: u64,
}

/// Per simulated host and sink: what arrived.
#[derive(Clone, Debug, Serialize)]
pub struct HostLoss {
    /// Host name in field 1.
    pub host: String,
    /// Datagrams sent by this host.
    pub sent: u64,
    /// Distinct sequence numbers of this host that reached the sink.
    pub received: u64,
    /// `sent - received`.
    pub lost: u64,
}

/// One mock sink's result.
#[derive(Clone, Debug, Serialize)]
pub struct SinkReport {
    /// Which API.
    pub sink: SinkKind,
    /// Where it listened.
    pub listen: String,
    /// Raw counters.
    #[serde(flatten)]
    pub counts: TrackerCounts,
    /// Datagrams sent (what should have arrived).
    pub expected: u64,
    /// `expected - unique`, exact.
    pub lost: u64,
    /// `lost / expected` in percent.
    pub loss_pct: f64,
    /// How long we waited after the last send for stragglers.
    pub waited_s: f64,
    /// Intended send time -> receipt, first receipt of each sequence number.
    pub latency_us: LatencySummary,
    /// Loss by sending host.
    pub per_host: Vec<HostLoss>,
}

/// The `flood` report (`--json` writes exactly this).
#[derive(Clone, Debug, Serialize)]
pub struct FloodReport {
    /// Always `"flood"`.
    pub mode: &'static str,
    /// Run id (in every message as `run=<id>`).
    pub run_id: String,
    /// Destination.
    pub target: String,
    /// Rate shape.
    pub pattern: Pattern,
    /// Where the sequence number went.
    pub seq_in: SeqIn,
    /// Requested mean rate.
    pub rate_per_s: u64,
    /// Requested duration.
    pub duration_s: f64,
    /// Simulated hosts.
    pub hosts: u32,
    /// Distinct users.
    pub users: u32,
    /// Distinct apps.
    pub apps: u32,
    /// PRNG seed.
    pub seed: u64,
    /// Sequence number of datagram 0.
    pub seq_base: u64,
    /// Max datagrams per sendmmsg.
    pub batch: usize,
    /// `rate x duration`.
    pub planned: u64,
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Datagrams that failed to send.
    pub send_errors: u64,
    /// ECONNREFUSED returns (nobody listening at some point).
    pub refused_retries: u64,
    /// sendmmsg calls.
    pub sendmmsg_calls: u64,
    /// Stopped by SIGINT/SIGTERM before the schedule ended.
    pub interrupted: bool,
    /// From the intended start to the last send.
    pub send_elapsed_s: f64,
    /// `sent / send_elapsed_s`.
    pub achieved_rate_per_s: f64,
    /// Intended send time -> sendmmsg returned.
    pub send_lag_us: LatencySummary,
    /// Datagrams per command.
    pub commands: CommandCounts,
    /// Datagrams per host.
    pub per_host: Vec<HostSent>,
    /// One entry per active mock sink.
    pub sinks: Vec<SinkReport>,
    /// `--measure-pid` (`null` without it; then every `engine_*` field is `null` too).
    pub measure_pid: Option<u32>,
    /// Wall time between the two CPU samples (first send -> end of the drain wait).
    pub engine_measured_s: Option<f64>,
    /// The measured process's user CPU over that time.
    pub engine_cpu_user_s: Option<f64>,
    /// Its system CPU over that time.
    pub engine_cpu_sys_s: Option<f64>,
    /// `engine_cpu_user_s + engine_cpu_sys_s`.
    pub engine_cpu_s: Option<f64>,
    /// Engine CPU / datagrams sent, in nanoseconds.
    pub engine_cpu_ns_per_event: Option<f64>,
    /// VmRSS at the end, KiB.
    pub engine_rss_kib: Option<u64>,
    /// VmHWM (peak RSS) at the end, KiB.
    pub engine_hwm_kib: Option<u64>,
    /// This loadgen process's own CPU (sender thread + mock sinks) from the first send to the end of the drain
    /// wait: on a small machine it competes with the receiver under test.
    pub loadgen_cpu_s: f64,
}

/// What `--measure-pid` found.
#[derive(Clone, Copy, Debug, Default)]
struct EngineUsage {
    measured: Option<Duration>,
    cpu: Option<(Duration, Duration)>,
    mem: Memory,
}

impl EngineUsage {
    /// Samples taken at the first send and after the drain wait.
    fn from_samples(
        pid: u32,
        first: Option<(Instant, CpuTimes)>,
        last: io::Result<(Instant, CpuTimes)>,
        mem: io::Result<Memory>,
    ) -> EngineUsage {
        let mut u = EngineUsage::default();
        match (first, last) {
            (Some((t0, c0)), Ok((t1, c1))) => {
                u.measured = Some(t1.saturating_duration_since(t0));
                u.cpu = Some(c0.elapsed_until(&c1));
            }
            (None, _) => eprintln!("loadgen: --measure-pid {pid}: nothing was sent, so no CPU was measured"),
            (_, Err(e)) => eprintln!("loadgen: --measure-pid {pid}: reading /proc/{pid}/stat at the end failed: {e}"),
        }
        match mem {
            Ok(m) => u.mem = m,
            Err(e) => eprintln!("loadgen: --measure-pid {pid}: reading /proc/{pid}/status failed: {e}"),
        }
        u
    }
}

/// Runs a flood until the schedule ends or `shutdown` is set ([`Flood::prepare`] + [`Flood::run`]).
pub fn run_flood(cfg: &FloodConfig, shutdown: &AtomicBool) -> anyhow::Result<FloodReport> {
    Flood::prepare(cfg)?.run(shutdown)
}

/// A flood that is set up (host sockets bound, mock sinks listening) but not started.
pub struct Flood {
    cfg: FloodConfig,
    schedule: Arc<Schedule>,
    model: TrafficModel,
    sockets: Vec<UdpSocket>,
    local_addrs: Vec<String>,
    mocks: Vec<MockServer>,
    start: Arc<OnceLock<Instant>>,
    dispatched: Arc<AtomicU64>,
}

impl Flood {
    /// Validates the schedule, binds one socket per host and starts the mock sinks.
    pub fn prepare(cfg: &FloodConfig) -> anyhow::Result<Flood> {
        if let Some(pid) = cfg.measure_pid {
            CpuTimes::of(pid).with_context(|| format!("--measure-pid {pid}: cannot read /proc/{pid}/stat"))?;
        }
        let schedule = Arc::new(Schedule::new(cfg.pattern, cfg.rate, cfg.duration).map_err(anyhow::Error::msg)?);
        let model = TrafficModel::new(cfg.model.clone(), (*schedule).clone());
        let hosts = model.host_names().len();
        let sockets: Vec<UdpSocket> = (0..hosts)
            .map(|_| connected_socket(cfg.target))
            .collect::<io::Result<_>>()
            .with_context(|| format!("creating UDP sockets towards --target {}", cfg.target))?;
        let local_addrs = sockets
            .iter()
            .map(|s| s.local_addr().map(|a| a.to_string()).unwrap_or_default())
            .collect();
        let start = Arc::new(OnceLock::new());
        let dispatched = Arc::new(AtomicU64::new(0));
        let mut mocks = Vec::new();
        for (kind, addr, flag) in [
            (SinkKind::Influxdb, cfg.mock_influx, "--mock-influx"),
            (SinkKind::Newrelic, cfg.mock_newrelic, "--mock-newrelic"),
        ] {
            let Some(addr) = addr else { continue };
            let clock = RunClock {
                start: Arc::clone(&start),
                schedule: Arc::clone(&schedule),
                dispatched: Arc::clone(&dispatched),
            };
            let base = cfg.model.seq_base;
            let tracker = Arc::new(SeqTracker::new(kind, base, schedule.total(), Some(clock)));
            let server =
                MockServer::start(addr, tracker).with_context(|| format!("starting the {flag} server on {addr}"))?;
            if cfg.progress {
                eprintln!(
                    "loadgen: mock {} listening on http://{}",
                    kind.name(),
                    server.local_addr()
                );
            }
            mocks.push(server);
        }
        Ok(Flood {
            cfg: cfg.clone(),
            schedule,
            model,
            sockets,
            local_addrs,
            mocks,
            start,
            dispatched,
        })
    }

    /// Where the mock sink of `kind` listens (the real port when 0 was asked for).
    #[cfg(test)]
    pub fn mock_addr(&self, kind: SinkKind) -> Option<SocketAddr> {
        self.mocks
            .iter()
            .find(|m| m.tracker().kind() == kind)
            .map(|m| m.local_addr())
    }

    /// Sends the schedule (datagram 0 is due `--start-delay` from now), waits up to
    /// `--drain-wait` for the sinks, stops them and reports.
    pub fn run(self, shutdown: &AtomicBool) -> anyhow::Result<FloodReport> {
        let Flood {
            cfg,
            schedule,
            model,
            sockets,
            local_addrs,
            mocks,
            start: start_cell,
            dispatched,
        } = self;
        let total = schedule.total();
        let hosts = sockets.len();
        let start = *start_cell.get_or_init(|| Instant::now() + cfg.start_delay + LEAD_IN);
        if cfg.progress {
            eprintln!(
                "loadgen: flood run {} -> {}: {} datagrams ({}/s x {:?}, pattern {}) from {} host sockets",
                cfg.model.run_id,
                cfg.target,
                fmt_count(total),
                fmt_count(cfg.rate),
                cfg.duration,
                cfg.pattern.name(),
                hosts
            );
        }

        set_timer_slack_ns(1_000);
        let mut sender = MmsgSender::new(cfg.batch);
        let mut batches: Vec<Batch> = (0..hosts).map(|_| Batch::with_capacity(cfg.batch)).collect();
        let mut host_sent = vec![0u64; hosts];
        let mut commands = CommandCounts::default();
        let mut outcome = SendOutcome::default();
        let mut unsent: Vec<u64> = Vec::new();
        let mut failed_idx = Vec::new();
        let mut lag_us = new_histogram();
        let mut next = 0u64;
        let mut interrupted = false;
        let mut progress = Progress::new(start, cfg.progress);
        // --measure-pid: the engine's CPU when the first datagram is about to go out; and our own.
        let mut engine_first: Option<(Instant, CpuTimes)> = None;
        let mut self_first: Option<Duration> = None;

        // Sends and clears host `h`'s batch, recording send lag against the intended times.
        let mut flush =
            |h: usize, batch: &mut Batch, outcome: &mut SendOutcome, host_sent: &mut [u64], unsent: &mut Vec<u64>| {
                failed_idx.clear();
                let o = sender.send(sockets[h].as_raw_fd(), &batch.buf, &batch.spans, &mut failed_idx);
                let done = Instant::now();
                for &seq in &batch.seqs {
                    let due = start + Duration::from_nanos(schedule.intended_ns(seq));
                    let lag = done.saturating_duration_since(due).as_micros() as u64;
                    let _ = lag_us.record(lag.max(1));
                }
                unsent.extend(failed_idx.iter().map(|&i| batch.seqs[i]));
                host_sent[h] += o.sent;
                outcome.add(o);
                batch.clear();
            };

        while next < total {
            if shutdown.load(Ordering::Relaxed) {
                interrupted = true;
                break;
            }
            let now = Instant::now();
            if now < start {
                std::thread::sleep((start - now).min(MAX_SLEEP));
                continue;
            }
            if self_first.is_none() {
                let (u, s) = stats::process_cpu();
                self_first = Some(u + s);
            }
            if engine_first.is_none() {
                if let Some(pid) = cfg.measure_pid {
                    engine_first = CpuTimes::of(pid).ok().map(|c| (Instant::now(), c));
                }
            }
            let now_ns = (now - start).as_nanos() as u64;
            let due = schedule.intended_ns(next);
            if due > now_ns {
                let wait = Duration::from_nanos(due - now_ns).max(cfg.tick);
                std::thread::sleep(wait.min(MAX_SLEEP));
                progress.tick(outcome.sent, &mocks);
                continue;
            }
            // Everything due by now (bounded per round), into per-host batches.
            let round_end = (next + MAX_PER_ROUND).min(total);
            while next < round_end && schedule.intended_ns(next) <= now_ns {
                let h = model.host_of(next);
                let g = batches[h].push_with(next, |buf| model.write(next, buf));
                debug_assert_eq!(g.host, h);
                commands.add(g.command);
                next += 1;
                dispatched.store(next, Ordering::Release);
                if batches[h].len() >= cfg.batch {
                    flush(h, &mut batches[h], &mut outcome, &mut host_sent, &mut unsent);
                }
            }
            for (h, batch) in batches.iter_mut().enumerate() {
                if !batch.is_empty() {
                    flush(h, batch, &mut outcome, &mut host_sent, &mut unsent);
                }
            }
            progress.tick(outcome.sent, &mocks);
        }
        let send_end = Instant::now();
        let send_elapsed = send_end.saturating_duration_since(start);

        // Grace period: wait until every sink has everything, or the deadline. A signal that
        // arrives *during* the wait ends it early (one that stopped the sending does not).
        let deadline = send_end + cfg.drain_wait;
        let signalled_before = shutdown.load(Ordering::Relaxed);
        loop {
            let complete = mocks.iter().all(|m| m.tracker().unique() >= outcome.sent);
            let signalled = !signalled_before && shutdown.load(Ordering::Relaxed);
            if complete || signalled || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
            progress.tick(outcome.sent, &mocks);
        }
        let waited = send_end.elapsed();
        let loadgen_cpu = {
            let (u, s) = stats::process_cpu();
            (u + s).saturating_sub(self_first.unwrap_or(u + s))
        };
        let engine = cfg.measure_pid.map(|pid| {
            let last = CpuTimes::of(pid).map(|c| (Instant::now(), c));
            EngineUsage::from_samples(pid, engine_first, last, Memory::of(pid))
        });
        progress.tick_final(outcome.sent, &mocks);

        unsent.sort_unstable();
        let host_names = model.host_names();
        let mut sinks = Vec::new();
        for m in mocks {
            let tracker = Arc::clone(m.tracker());
            let listen = m.local_addr().to_string();
            m.stop();
            let mut lost_per_host = vec![0u64; hosts];
            let mut lost = 0u64;
            for seq in tracker.missing(0..next) {
                if unsent.binary_search(&seq).is_ok() {
                    continue;
                }
                lost += 1;
                lost_per_host[model.host_of(seq)] += 1;
            }
            let per_host = (0..hosts)
                .map(|h| HostLoss {
                    host: host_names[h].clone(),
                    sent: host_sent[h],
                    received: host_sent[h] - lost_per_host[h].min(host_sent[h]),
                    lost: lost_per_host[h],
                })
                .collect();
            sinks.push(SinkReport {
                sink: tracker.kind(),
                listen,
                counts: tracker.counts(),
                expected: outcome.sent,
                lost,
                loss_pct: pct(lost, outcome.sent),
                waited_s: stats::secs(waited),
                latency_us: tracker.latency(),
                per_host,
            });
        }

        Ok(FloodReport {
            mode: "flood",
            run_id: cfg.model.run_id.clone(),
            target: cfg.target.to_string(),
            pattern: cfg.pattern,
            seq_in: cfg.model.seq_in,
            rate_per_s: cfg.rate,
            duration_s: stats::secs(cfg.duration),
            hosts: cfg.model.hosts,
            users: cfg.model.users,
            apps: cfg.model.apps,
            seed: cfg.model.seed,
            seq_base: cfg.model.seq_base,
            batch: cfg.batch,
            planned: total,
            sent: outcome.sent,
            bytes_sent: outcome.bytes,
            send_errors: outcome.errors,
            refused_retries: outcome.refused,
            sendmmsg_calls: outcome.calls,
            interrupted,
            send_elapsed_s: stats::secs(send_elapsed),
            achieved_rate_per_s: rate_of(outcome.sent, send_elapsed),
            send_lag_us: LatencySummary::from_histogram(&lag_us),
            commands,
            per_host: (0..hosts)
                .map(|h| HostSent {
                    host: host_names[h].clone(),
                    local_addr: local_addrs[h].clone(),
                    sent: host_sent[h],
                })
                .collect(),
            sinks,
            measure_pid: cfg.measure_pid,
            engine_measured_s: engine.and_then(|e| e.measured).map(stats::secs),
            engine_cpu_user_s: engine.and_then(|e| e.cpu).map(|(u, _)| stats::secs(u)),
            engine_cpu_sys_s: engine.and_then(|e| e.cpu).map(|(_, s)| stats::secs(s)),
            engine_cpu_s: engine.and_then(|e| e.cpu).map(|(u, s)| stats::secs(u + s)),
            engine_cpu_ns_per_event: engine
                .and_then(|e| e.cpu)
                .filter(|_| outcome.sent > 0)
                .map(|(u, s)| ((u + s).as_nanos() as f64 / outcome.sent as f64).round()),
            engine_rss_kib: engine.and_then(|e| e.mem.rss_kib),
            engine_hwm_kib: engine.and_then(|e| e.mem.hwm_kib),
            loadgen_cpu_s: stats::secs(loadgen_cpu),
        })
    }
}

fn rate_of(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        (n as f64 / d.as_secs_f64()).round()
    }
}

/// Asks the kernel for tighter sleeps on this thread (default timer slack is 50 µs).
fn set_timer_slack_ns(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long argument and only changes this
    // thread's timer slack; no memory is passed.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) };
}

/// The once-a-second progress line on stderr.
struct Progress {
    start: Instant,
    enabled: bool,
    last: Instant,
    last_sent: u64,
    /// (sent, arrived at the mock sinks) of the last printed line, so the final line is not a repeat.
    last_printed: (u64, u64),
}

impl Progress {
    fn new(start: Instant, enabled: bool) -> Progress {
        Progress {
            start,
            enabled,
            last: start,
            last_sent: 0,
            last_printed: (u64::MAX, 0),
        }
    }

    fn tick(&mut self, sent: u64, mocks: &[MockServer]) {
        let now = Instant::now();
        if !self.enabled || now < self.start || now.duration_since(self.last) < Duration::from_secs(1) {
            return;
        }
        self.print(now, sent, mocks);
    }

    /// The last line, unless a tick just printed the same count.
    fn tick_final(&mut self, sent: u64, mocks: &[MockServer]) {
        let arrived: u64 = mocks.iter().map(|m| m.tracker().unique()).sum();
        if self.enabled && (sent, arrived) != self.last_printed {
            self.print(Instant::now(), sent, mocks);
        }
    }

    fn print(&mut self, now: Instant, sent: u64, mocks: &[MockServer]) {
        let dt = now.saturating_duration_since(self.last);
        let rate = rate_of(sent - self.last_sent, dt);
        let mut line = format!(
            "[{:>7.1}s] sent {} ({}/s)",
            now.saturating_duration_since(self.start).as_secs_f64(),
            fmt_count(sent),
            fmt_count(rate as u64)
        );
        for m in mocks {
            let got = m.tracker().unique();
            // Not arrived *yet*: the final table says what was lost.
            let in_flight = sent.saturating_sub(got);
            line.push_str(&format!(
                " | {} received {}, not yet {} ({:.2}%)",
                m.tracker().kind().name(),
                fmt_count(got),
                fmt_count(in_flight),
                pct(in_flight, sent)
            ));
        }
        eprintln!("{line}");
        self.last_printed = (sent, mocks.iter().map(|m| m.tracker().unique()).sum());
        self.last = now;
        self.last_sent = sent;
    }
}

impl FloodReport {
    /// The human-readable final table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "== loadgen flood: run {} -> {} (pattern {}, {} hosts, sequence number in the {}) ==\n",
            self.run_id,
            self.target,
            self.pattern.name(),
            self.hosts,
            match self.seq_in {
                SeqIn::Message => "message",
                SeqIn::User => "message and user id",
            }
        ));
        s.push_str(&format!(
            "sent      {} of {} planned in {:.3}s = {}/s (target {}/s), {:.1} MB, {} sendmmsg calls\n",
            fmt_count(self.sent),
            fmt_count(self.planned),
            self.send_elapsed_s,
            fmt_count(self.achieved_rate_per_s as u64),
            fmt_count(self.rate_per_s),
            self.bytes_sent as f64 / 1e6,
            fmt_count(self.sendmmsg_calls),
        ));
        if self.send_errors > 0 || self.refused_retries > 0 || self.interrupted {
            s.push_str(&format!(
                "          send errors {}, ECONNREFUSED retries {}{}\n",
                self.send_errors,
                self.refused_retries,
                if self.interrupted { ", INTERRUPTED" } else { "" }
            ));
        }
        let c = &self.commands;
        s.push_str(&format!(
            "commands  Start session {}, Stop session {}, Open connection {}, Close connection {}\n",
            fmt_count(c.start_session),
            fmt_count(c.stop_session),
            fmt_count(c.open_connection),
            fmt_count(c.close_connection)
        ));
        s.push_str("send lag (intended send time -> sendmmsg returned):\n");
        s.push_str(&self.send_lag_us.table("  "));
        for sink in &self.sinks {
            let k = &sink.counts;
            s.push_str(&format!(
                "sink {} @ {}: received {} unique of {} sent, lost {} ({:.3}%), duplicates {}, unidentified {}, foreign {}, {} write requests ({} bad), waited {:.3}s\n",
                sink.sink.name(),
                sink.listen,
                fmt_count(k.unique),
                fmt_count(sink.expected),
                fmt_count(sink.lost),
                sink.loss_pct,
                fmt_count(k.duplicates),
                fmt_count(k.unidentified),
                fmt_count(k.foreign),
                fmt_count(k.write_requests),
                k.bad_requests,
                sink.waited_s
            ));
            s.push_str("  end-to-end latency (intended send time -> sink receipt):\n");
            s.push_str(&sink.latency_us.table("  "));
            s.push_str(&format!(
                "  {:<32} {:>12} {:>12} {:>10}\n",
                "host", "sent", "received", "lost"
            ));
            for h in &sink.per_host {
                s.push_str(&format!(
                    "  {:<32} {:>12} {:>12} {:>10}\n",
                    h.host,
                    fmt_count(h.sent),
                    fmt_count(h.received),
                    fmt_count(h.lost)
                ));
            }
        }
        if let Some(pid) = self.measure_pid {
            let opt = |v: Option<f64>, digits: usize| v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"));
            s.push_str(&format!(
                "engine    pid {pid}: cpu user {}s + sys {}s = {}s over {}s (first send -> end of drain wait) = {} ns/event\n",
                opt(self.engine_cpu_user_s, 2),
                opt(self.engine_cpu_sys_s, 2),
                opt(self.engine_cpu_s, 2),
                opt(self.engine_measured_s, 2),
                opt(self.engine_cpu_ns_per_event, 0),
            ));
            s.push_str(&format!(
                "          RSS {} KiB at the end, peak (VmHWM) {} KiB\n",
                self.engine_rss_kib.map_or("n/a".to_string(), fmt_count),
                self.engine_hwm_kib.map_or("n/a".to_string(), fmt_count),
            ));
        }
        s.push_str(&format!(
            "loadgen   own cpu (sender + mocks) {:.2}s from the first send to the end of the drain wait\n",
            self.loadgen_cpu_s
        ));
        if self.sinks.is_empty() {
            s.push_str(&format!("  {:<32} {:<22} {:>12}\n", "host", "source", "sent"));
            for h in &self.per_host {
                s.push_str(&format!(
                    "  {:<32} {:<22} {:>12}\n",
                    h.host,
                    h.local_addr,
                    fmt_count(h.sent)
                ));
            }
        }
        s
    }
}

/// The `flood --record` report.
#[derive(Clone, Debug, Serialize)]
pub struct RecordReport {
    /// Always `"record"`.
    pub mode: &'static str,
    /// Run id written into every message.
    pub run_id: String,
    /// Output file.
    pub file: String,
    /// Framing used.
    pub framing: Framing,
    /// Datagrams written.
    pub datagrams: u64,
    /// Datagram bytes written (without framing).
    pub bytes: u64,
    /// Datagrams per command.
    pub commands: CommandCounts,
}

/// Writes the datagrams a flood with this configuration would send, in send order, to `path`
/// (nothing is sent).
pub fn record(
    pattern: Pattern,
    rate: u64,
    duration: Duration,
    model: ModelConfig,
    path: &PathBuf,
    framing: Framing,
) -> anyhow::Result<RecordReport> {
    let schedule = Schedule::new(pattern, rate, duration).map_err(anyhow::Error::msg)?;
    let total = schedule.total();
    let run_id = model.run_id.clone();
    let model = TrafficModel::new(model, schedule);
    let file = std::fs::File::create(path).with_context(|| format!("creating --record {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut buf = Vec::with_capacity(1024);
    let mut commands = CommandCounts::default();
    let mut bytes = 0u64;
    for seq in 0..total {
        buf.clear();
        commands.add(model.write(seq, &mut buf).command);
        bytes += buf.len() as u64;
        write_frame(&mut w, &buf, framing).with_context(|| format!("writing --record {}", path.display()))?;
    }
    w.flush()
        .with_context(|| format!("writing --record {}", path.display()))?;
    Ok(RecordReport {
        mode: "record",
        run_id,
        file: path.display().to_string(),
        framing,
        datagrams: total,
        bytes,
        commands,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::{self, DrainConfig};

    fn model_cfg(seq_in: SeqIn) -> ModelConfig {
        ModelConfig {
            hosts: 3,
            users: 50,
            apps: 5,
            seed: 11,
            seq_base: 0,
            seq_in,
            run_id: "test0001".into(),
        }
    }

    /// Polls `cond` every few ms until it holds or `deadline` passes.
    fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + deadline;
        while !cond() {
            assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn sendmmsg_sends_every_datagram_of_a_batch_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let tx = connected_socket(rx.local_addr().unwrap()).unwrap();
        let mut batch = Batch::with_capacity(10);
        for seq in 0..10u64 {
            batch.push_with(seq, |b| b.extend_from_slice(format!("d{seq}").as_bytes()));
        }
        let mut failed = Vec::new();
        let o = MmsgSender::new(4).send(tx.as_raw_fd(), &batch.buf, &batch.spans, &mut failed);
        assert_eq!((o.sent, o.errors, o.calls), (10, 0, 3));
        assert!(failed.is_empty());
        let mut buf = [0u8; 64];
        for seq in 0..10 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], format!("d{seq}").as_bytes());
        }
    }

    #[test]
    fn flood_into_a_local_drain_is_counted_exactly() {
        let drain = drain::start(&DrainConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            threads: 1,
            rcvbuf: 8 << 20,
            backend: drain::Backend::Recvmmsg,
            uring_defer_taskrun: false,
        })
        .unwrap();
        let cfg = FloodConfig {
            target: drain.local_addr(),
            rate: 2000,
            duration: Duration::from_millis(500),
            pattern: Pattern::Steady,
            model: model_cfg(SeqIn::Message),
            batch: 64,
            mock_influx: None,
            mock_newrelic: None,
            drain_wait: Duration::ZERO,
            start_delay: Duration::ZERO,
            tick: Duration::ZERO,
            progress: false,
            // This test process is the "engine" (it runs the drain).
            measure_pid: Some(std::process::id()),
        };
        let report = run_flood(&cfg, &AtomicBool::new(false)).unwrap();
        assert_eq!(report.planned, 1000);
        assert_eq!(report.measure_pid, Some(std::process::id()));
        assert!(
            report.engine_measured_s.unwrap() >= 0.45,
            "{:?}",
            report.engine_measured_s
        );
        assert!(report.engine_cpu_s.is_some() && report.engine_cpu_ns_per_event.is_some());
        assert!(report.engine_rss_kib.unwrap() > 0 && report.engine_hwm_kib.unwrap() >= report.engine_rss_kib.unwrap());
        assert!(report.table().contains("ns/event"));
        // A process that does not exist is refused before anything is sent.
        let gone = FloodConfig {
            measure_pid: Some(4_000_000_000),
            ..cfg.clone()
        };
        let e = format!("{:#}", run_flood(&gone, &AtomicBool::new(false)).unwrap_err());
        assert!(e.contains("--measure-pid 4000000000"), "{e}");
        assert_eq!(report.sent, 1000);
        assert_eq!(report.per_host.iter().map(|h| h.sent).sum::<u64>(), 1000);
        // Each host used its own source port.
        let mut ports: Vec<&str> = report.per_host.iter().map(|h| h.local_addr.as_str()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 3);
        wait_for("the drain to count every datagram", Duration::from_secs(10), || {
            drain.received() >= 1000
        });
        let d = drain.stop();
        assert_eq!(d.received, 1000);
        assert_eq!(d.kernel_drops, Some(0));
        assert!(report.send_elapsed_s >= 0.49, "{}", report.send_elapsed_s);
    }

    /// A stand-in engine: UDP in, InfluxDB v1 line protocol out, gzip-batched over one
    /// keep-alive connection, dropping every 100th datagram and duplicating every 250th.
    fn fake_engine(sock: UdpSocket, influx: SocketAddr, expect: u64, stop: Arc<AtomicBool>) {
        use std::io::{BufRead, BufReader};
        let mut conn = std::net::TcpStream::connect(influx).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        sock.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let mut buf = [0u8; 4096];
        let mut lines = String::new();
        let mut seen = 0u64;
        let mut post = |lines: &mut String| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(lines.as_bytes()).unwrap();
            let body = gz.finish().unwrap();
            let head = format!(
                "POST /write?db=senseops&precision=n HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).unwrap();
            conn.write_all(&body).unwrap();
            let mut status = String::new();
            reader.read_line(&mut status).unwrap();
            assert!(status.starts_with("HTTP/1.1 204"), "{status}");
            let mut h = String::new();
            while h != "\r\n" {
                h.clear();
                reader.read_line(&mut h).unwrap();
            }
            lines.clear();
        };
        while seen < expect && !stop.load(Ordering::Relaxed) {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    seen += 1;
                    let d = std::str::from_utf8(&buf[..n]).unwrap();
                    let f: Vec<&str> = d.splitn(8, ';').collect();
                    let uid = f[4];
                    let seq: u64 = uid[1..].parse().unwrap();
                    if seq % 100 == 99 {
                        continue;
                    }
                    let line = format!(
                        "user_events,host={},event_action={},userId={uid} userId=\"{uid}\"\n",
                        f[1],
                        f[2].replace(' ', "\\ ")
                    );
                    lines.push_str(&line);
                    if seq.is_multiple_of(250) {
                        lines.push_str(&line);
                    }
                    if lines.len() > 8000 {
                        post(&mut lines);
                    }
                }
                Err(_) => {
                    if !lines.is_empty() {
                        post(&mut lines);
                    }
                }
            }
        }
        if !lines.is_empty() {
            post(&mut lines);
        }
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn mock_influx_measures_exact_loss_duplicates_and_latency_end_to_end() {
        let engine_sock = {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
            let _ = s.set_recv_buffer_size(8 << 20);
            s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
            UdpSocket::from(s)
        };
        let cfg = FloodConfig {
            target: engine_sock.local_addr().unwrap(),
            rate: 4000,
            duration: Duration::from_millis(500),
            pattern: Pattern::Storm,
            model: model_cfg(SeqIn::User),
            batch: 32,
            mock_influx: Some("127.0.0.1:0".parse().unwrap()),
            mock_newrelic: None,
            drain_wait: Duration::from_secs(10),
            start_delay: Duration::ZERO,
            tick: Duration::ZERO,
            progress: false,
            measure_pid: None,
        };
        let flood = Flood::prepare(&cfg).unwrap();
        let influx = flood.mock_addr(SinkKind::Influxdb).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let engine = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || fake_engine(engine_sock, influx, 2000, stop))
        };
        // The fake engine sets `stop` once it has delivered everything, which ends the
        // flood's grace period early (it would otherwise wait for the 20 dropped events).
        let report = flood.run(&stop).unwrap();
        stop.store(true, Ordering::Relaxed);
        engine.join().unwrap();
        assert!(!report.interrupted);
        assert_eq!(report.sent, 2000);
        let sink = &report.sinks[0];
        // seq % 100 == 99 dropped: 20 of 2000. seq % 250 == 0 doubled: 8.
        assert_eq!(sink.lost, 20, "{sink:?}");
        assert_eq!(sink.counts.unique, 1980);
        assert_eq!(sink.counts.duplicates, 8);
        assert_eq!(sink.counts.unidentified, 0);
        assert_eq!(sink.per_host.iter().map(|h| h.lost).sum::<u64>(), 20);
        assert_eq!(sink.per_host.iter().map(|h| h.sent).sum::<u64>(), 2000);
        assert_eq!(sink.latency_us.count, 1980);
        assert!(sink.latency_us.p50_us > 0 && sink.latency_us.max_us < 10_000_000);
    }

    #[test]
    fn record_writes_the_same_datagrams_a_flood_would_send() {
        let dir = std::env::temp_dir().join(format!("loadgen-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rec.txt");
        let r = record(
            Pattern::Steady,
            100,
            Duration::from_secs(1),
            model_cfg(SeqIn::Message),
            &path,
            Framing::Lines,
        )
        .unwrap();
        assert_eq!(r.datagrams, 100);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100);
        let m = TrafficModel::new(
            model_cfg(SeqIn::Message),
            Schedule::new(Pattern::Steady, 100, Duration::from_secs(1)).unwrap(),
        );
        let mut b = Vec::new();
        m.write(42, &mut b);
        assert_eq!(lines[42].as_bytes(), &b[..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
