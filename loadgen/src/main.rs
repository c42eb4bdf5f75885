//! `loadgen`: Qlik-shaped Log4Net UDP load generator, mock sinks and raw receive baseline for
//! sense-ingest. Depends on nothing of the engine crate.
//!
//! # Layout
//! - `main.rs`: the CLI (clap) and argument checks; thin.
//! - [`gen`]: the traffic model and the fixed send schedule (deterministic per `--seed`).
//! - [`send`]: `flood`: pacing, per-host sockets, `sendmmsg` batches, the report; `--record`.
//! - [`mock`]: the InfluxDB 1.x / New Relic Event API mock sinks and sequence tracking.
//! - [`drain`]: the raw receive baseline (`recvmmsg`, io_uring multishot or tokio-uring).
//! - [`uring`]: the io_uring receive loops of `drain` and the io_uring probe.
//! - [`replay`]: sending a captured file; file framings.
//! - [`procstat`]: `flood --measure-pid`: another process's CPU and memory from /proc.
//! - [`stats`]: histograms, tables, `--json`.
//!
//! # Safety rule
//! loadgen only ever sends to the `--target` it is given, and refuses a target (or a listen
//! address) that is not loopback (127.0.0.0/8 or ::1) unless `--allow-non-loopback` is passed:
//! this workplace forbids non-loopback traffic.

mod drain;
mod framing;
mod gen;
mod mock;
mod procstat;
mod recv;
mod replay;
mod send;
mod stats;
mod uring;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

use crate::framing::Framing;
use crate::gen::{ModelConfig, Pattern, SeqIn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Qlik Sense user-event load generator and measurement tool for sense-ingest.
///
/// Only loopback targets and listen addresses (127.0.0.0/8, ::1) are accepted unless
/// --allow-non-loopback is given.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send Qlik-shaped user-event datagrams on a fixed schedule; optionally serve mock sinks
    /// and measure end-to-end latency and exact loss.
    Flood(FloodArgs),
    /// Receive and count only (recvmmsg, io_uring or tokio-uring; SO_REUSEPORT): the raw receive baseline.
    Drain(DrainArgs),
    /// Send the datagrams of a file (one per line, or --framing len32).
    Replay(ReplayArgs),
    /// Serve the mock InfluxDB / New Relic APIs on their own and count what arrives.
    SinkMock(SinkMockArgs),
}

#[derive(Debug, Args)]
struct Common {
    /// Write the final report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Allow targets and listen addresses outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    allow_non_loopback: bool,
}

#[derive(Debug, Args)]
struct FloodArgs {
    /// UDP address of the receiver under test (the engine, or `loadgen drain`).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr, required_unless_present = "record")]
    target: Option<SocketAddr>,
    /// Mean datagrams per second (over all hosts).
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    rate: u64,
    /// Length of the schedule, e.g. 10s, 500ms, 2m. The run sends rate x duration datagrams.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    duration: Duration,
    /// Simulated Qlik Sense proxy hosts, each sending from its own UDP socket (source port).
    #[arg(long, value_name = "H", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
    hosts: u32,
    /// Distinct users (user0000.., directories LAB and CORP).
    #[arg(long, value_name = "U", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    users: u32,
    /// Distinct apps (valid v4 UUIDs in `/app/<id>?reloaduri=...` contexts).
    #[arg(long, value_name = "A", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    apps: u32,
    /// steady: constant rate. storm: the first 20% of the run at 5x the rate of the rest,
    /// mostly Start session + Open connection (total stays rate x duration).
    #[arg(long, value_enum, default_value_t = Pattern::Steady)]
    pattern: Pattern,
    /// PRNG seed: the same seed and sizes give the same datagrams.
    #[arg(long, value_name = "S", default_value_t = 42)]
    seed: u64,
    /// Max datagrams per sendmmsg call (per host socket).
    #[arg(long, value_name = "B", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    batch: u64,
    /// Where the sequence number goes besides the message prefix `seq=<n> run=<id>`:
    /// `user` also makes the user id `s<seq>` (unique per datagram: multiplies InfluxDB
    /// series cardinality). Default: `user` with a mock sink, else `message`.
    #[arg(long, value_enum, value_name = "WHERE")]
    seq_in: Option<SeqIn>,
    /// Sequence number of the first datagram (datagram i carries base + i). Give successive
    /// runs against the same engine disjoint ranges, so late events of an earlier run
    /// (e.g. replayed from the engine's spool) count as foreign instead of as received.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seq_base: u64,
    /// Run id written into every message (default: random 8 hex digits).
    #[arg(long, value_name = "ID", value_parser = parse_run_id)]
    run_id: Option<String>,
    /// Serve a mock InfluxDB 1.x HTTP API on ADDR and measure delivery through it.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    mock_influx: Option<SocketAddr>,
    /// Serve a mock New Relic Event API on ADDR (needs the engine's New Relic scramble off).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    mock_newrelic: Option<SocketAddr>,
    /// With a mock sink: how long to wait after the last send for stragglers.
    #[arg(long, value_name = "DUR", default_value = "2s", value_parser = parse_duration)]
    drain_wait: Duration,
    /// Wait this long after the mock sinks are up before sending (lets the engine start).
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration)]
    start_delay: Duration,
    /// Shortest sleep between send rounds. 0 wakes exactly when the next datagram is due
    /// (smallest added latency, most wake-ups); e.g. 200us sends bursts at a fraction of the
    /// sender CPU. Latency is still measured from each datagram's intended time.
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration)]
    tick: Duration,
    /// Measure process PID (the engine under test): CPU from /proc/PID/stat (utime + stime) from the first
    /// send to the end of the drain wait, per datagram sent; VmRSS and VmHWM from /proc/PID/status at the end.
    #[arg(long, value_name = "PID", conflicts_with = "record")]
    measure_pid: Option<u32>,
    /// Write the datagrams this run would send to FILE instead of sending them.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// File format for --record.
    #[arg(long, value_enum, default_value_t = Framing::Lines, requires = "record")]
    framing: Framing,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct DrainArgs {
    /// UDP address to receive on (port 0 picks one; it is printed).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    listen: SocketAddr,
    /// Stop after this long (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Receiver threads, one SO_REUSEPORT socket each.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,
    /// Receive buffer per socket (SO_RCVBUFFORCE when permitted, else SO_RCVBUF).
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20, value_parser = clap::value_parser!(u64).range(4096..=(1 << 31) - 1))]
    rcvbuf: u64,
    /// recvmmsg (64 per call), io_uring (multishot recvmsg + provided buffer ring) or tokio-uring (recv_from,
    /// 64 in flight). Falls back to recvmmsg, saying why, when io_uring is unavailable.
    #[arg(long, value_enum, default_value_t = drain::Backend::Recvmmsg)]
    backend: drain::Backend,
    /// With --backend io_uring: set the ring up with SINGLE_ISSUER | DEFER_TASKRUN (kernel 6.1+), as the engine's
    /// io_uring reader does (it falls back to a plain ring where the kernel refuses). Off by default.
    #[arg(long)]
    uring_defer_taskrun: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// File of datagrams (see --framing).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// UDP address to send to.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    target: SocketAddr,
    /// Datagrams per second (default: as fast as possible).
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    rate: Option<u64>,
    /// lines: one datagram per LF-terminated line; len32: u32 big-endian length + bytes.
    #[arg(long, value_enum, default_value_t = Framing::Lines)]
    framing: Framing,
    /// Max datagrams per sendmmsg call.
    #[arg(long, value_name = "B", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    batch: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct SinkMockArgs {
    /// Serve a mock InfluxDB 1.x HTTP API on ADDR.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr, required_unless_present = "newrelic")]
    influx: Option<SocketAddr>,
    /// Serve a mock New Relic Event API on ADDR.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    newrelic: Option<SocketAddr>,
    /// Stop after this long (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Track distinct `s<seq>` user ids below N (a bitmap of N bits per sink).
    #[arg(long, value_name = "N", default_value_t = 100_000_000, value_parser = clap::value_parser!(u64).range(1..=(1 << 36)))]
    max_seq: u64,
    #[command(flatten)]
    common: Common,
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `250us`, `1.5s`, `1m30s`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a number and a unit, e.g. 10s, 500ms, 2m";
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty duration; {HINT}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let value: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration; {HINT}"))?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("'{s}' has no unit; {HINT}")),
            other => return Err(format!("unknown unit '{other}' in '{s}' (use ns, us, ms, s, m or h)")),
        };
        total += Duration::try_from_secs_f64(value * scale).map_err(|_| format!("'{s}' is out of range"))?;
        rest = next;
    }
    Ok(total)
}

/// A rate of at least 1 datagram/s.
fn parse_rate(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of datagrams per second"))?;
    if n == 0 {
        return Err("must be at least 1 datagram per second".into());
    }
    Ok(n)
}

/// `IP:PORT` (`127.0.0.1:9997`, `[::1]:9997`) or `localhost:PORT`.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    const HINT: &str = "expected IP:PORT, e.g. 127.0.0.1:9997 or [::1]:9997";
    if !s.contains(':') {
        return Err(format!("'{s}' has no port; {HINT}"));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{s}': {e}; {HINT}"))?
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address; {HINT}"))
}

/// A run id: 1-32 characters from `[A-Za-z0-9_-]` (it goes into the message field).
fn parse_run_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(s.to_string())
    } else {
        Err("use 1-32 characters from A-Z a-z 0-9 - _".into())
    }
}

/// Refuses non-loopback addresses unless explicitly allowed.
fn ensure_loopback(flag: &str, addr: SocketAddr, allow: bool) -> anyhow::Result<()> {
    if allow || addr.ip().is_loopback() {
        return Ok(());
    }
    bail!(
        "{flag} {addr} is not a loopback address (127.0.0.0/8 or ::1); loadgen refuses \
         non-loopback traffic unless --allow-non-loopback is given"
    )
}

/// SIGINT/SIGTERM set the returned flag; a second signal exits at once (status 130).
fn shutdown_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Order matters: the conditional exit checks the flag before `register` sets it.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

fn finish<T: serde::Serialize>(table: String, json: Option<&PathBuf>, report: &T) -> anyhow::Result<()> {
    print!("{table}");
    if let Some(path) = json {
        stats::write_json(path, report)?;
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = shutdown_flag()?;
    match cli.command {
        Cmd::Flood(a) => {
            let allow = a.common.allow_non_loopback;
            let mock_active = a.mock_influx.is_some() || a.mock_newrelic.is_some();
            let model = ModelConfig {
                hosts: a.hosts,
                users: a.users,
                apps: a.apps,
                seed: a.seed,
                seq_base: a.seq_base,
                seq_in: a
                    .seq_in
                    .unwrap_or(if mock_active { SeqIn::User } else { SeqIn::Message }),
                run_id: a.run_id.clone().unwrap_or_else(gen::new_run_id),
            };
            if let Some(path) = &a.record {
                let r = send::record(a.pattern, a.rate, a.duration, model, path, a.framing)?;
                let table = format!(
                    "recorded {} datagrams ({:.1} MB, run {}) to {}\n",
                    stats::fmt_count(r.datagrams),
                    r.bytes as f64 / 1e6,
                    r.run_id,
                    r.file
                );
                return finish(table, a.common.json.as_ref(), &r);
            }
            let target = a.target.expect("clap requires --target without --record");
            ensure_loopback("--target", target, allow)?;
            for (flag, addr) in [("--mock-influx", a.mock_influx), ("--mock-newrelic", a.mock_newrelic)] {
                if let Some(addr) = addr {
                    ensure_loopback(flag, addr, allow)?;
                }
            }
            let cfg = send::FloodConfig {
                target,
                rate: a.rate,
                duration: a.duration,
                pattern: a.pattern,
                model,
                batch: a.batch as usize,
                mock_influx: a.mock_influx,
                mock_newrelic: a.mock_newrelic,
                drain_wait: a.drain_wait,
                start_delay: a.start_delay,
                tick: a.tick,
                progress: !a.common.quiet,
                measure_pid: a.measure_pid,
            };
            let r = send::run_flood(&cfg, &shutdown)?;
            finish(r.table(), a.common.json.as_ref(), &r)
        }
        Cmd::Drain(a) => {
            ensure_loopback("--listen", a.listen, a.common.allow_non_loopback)?;
            let cfg = drain::DrainConfig {
                listen: a.listen,
                threads: a.threads as usize,
                rcvbuf: a.rcvbuf as usize,
                backend: a.backend,
                uring_defer_taskrun: a.uring_defer_taskrun,
            };
            let r = drain::run(&cfg, a.duration, !a.common.quiet, &shutdown)?;
            finish(r.table(), a.common.json.as_ref(), &r)
        }
        Cmd::Replay(a) => {
            ensure_loopback("--target", a.target, a.common.allow_non_loopback)?;
            let cfg = replay::ReplayConfig {
                file: a.file,
                target: a.target,
                rate: a.rate,
                framing: a.framing,
                batch: a.batch as usize,
                progress: !a.common.quiet,
            };
            let r = replay::run(&cfg, &shutdown)?;
            finish(r.table(), a.common.json.as_ref(), &r)
        }
        Cmd::SinkMock(a) => {
            for (flag, addr) in [("--influx", a.influx), ("--newrelic", a.newrelic)] {
                if let Some(addr) = addr {
                    ensure_loopback(flag, addr, a.common.allow_non_loopback)?;
                }
            }
            let r = mock::run_standalone(a.influx, a.newrelic, a.max_seq, a.duration, !a.common.quiet, &shutdown)?;
            finish(r.table(), a.common.json.as_ref(), &r)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_durations_with_units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_durations_with_a_reason() {
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit 'x'"));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
        assert!(parse_duration("1..2s").is_err());
    }

    #[test]
    fn bad_arguments_name_the_argument() {
        let err = |args: &[&str]| Cli::try_parse_from(args).map(|_| ()).unwrap_err().to_string();
        let flood = |target: &str, rate: &str, duration: &str| {
            err(&[
                "loadgen",
                "flood",
                "--target",
                target,
                "--rate",
                rate,
                "--duration",
                duration,
            ])
        };
        let e = flood("127.0.0.1:9997", "0", "1s");
        assert!(e.contains("--rate") && e.contains("at least 1"), "{e}");
        let e = flood("127.0.0.1:9997", "10", "10x");
        assert!(e.contains("--duration") && e.contains("unknown unit"), "{e}");
        let e = flood("nonsense", "10", "1s");
        assert!(e.contains("--target") && e.contains("IP:PORT"), "{e}");
        let e = err(&["loadgen", "flood", "--rate", "10", "--duration", "1s"]);
        assert!(e.contains("--target"), "{e}");
        let e = err(&["loadgen", "drain", "--listen", "127.0.0.1:1", "--threads", "0"]);
        assert!(e.contains("--threads"), "{e}");
    }

    #[test]
    fn accepts_a_full_flood_command_line() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "flood",
            "--target",
            "127.0.0.1:9997",
            "--rate",
            "50000",
            "--duration",
            "3s",
            "--hosts",
            "8",
            "--pattern",
            "storm",
            "--seq-in",
            "user",
            "--mock-influx",
            "127.0.0.1:0",
            "--json",
            "/tmp/x.json",
            "--batch",
            "128",
        ])
        .unwrap();
        let Cmd::Flood(a) = cli.command else {
            panic!("not flood")
        };
        assert_eq!((a.rate, a.hosts, a.batch), (50_000, 8, 128));
        assert_eq!(a.pattern, Pattern::Storm);
        assert_eq!(a.drain_wait, Duration::from_secs(2));
    }

    #[test]
    fn refuses_non_loopback_unless_allowed() {
        let lo: SocketAddr = "127.0.0.2:9997".parse().unwrap();
        let v6: SocketAddr = "[::1]:9997".parse().unwrap();
        let other: SocketAddr = "10.1.2.3:9997".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9997".parse().unwrap();
        assert!(ensure_loopback("--target", lo, false).is_ok());
        assert!(ensure_loopback("--target", v6, false).is_ok());
        let e = ensure_loopback("--target", other, false).unwrap_err().to_string();
        assert!(e.contains("--target 10.1.2.3:9997") && e.contains("--allow-non-loopback"));
        assert!(ensure_loopback("--listen", any, false).is_err());
        assert!(ensure_loopback("--target", other, true).is_ok());
    }

    #[test]
    fn parses_addresses_and_run_ids() {
        assert_eq!(parse_addr("127.0.0.1:9997").unwrap().port(), 9997);
        assert!(parse_addr("[::1]:9997").unwrap().ip().is_loopback());
        assert!(parse_addr("localhost:9997").unwrap().ip().is_loopback());
        assert!(parse_addr("127.0.0.1").unwrap_err().contains("no port"));
        assert!(parse_run_id("abc-123_X").is_ok());
        assert!(parse_run_id("a;b").is_err() && parse_run_id("").is_err());
    }
}
