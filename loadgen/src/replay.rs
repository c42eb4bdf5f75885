//! `replay`: sends the datagrams of a file, in order, from one UDP socket.
//!
//! The file formats (`--framing`) are described in [`crate::framing`]; `flood --record FILE` writes either. Pacing is by `--rate` datagrams/s on the same
//! fixed-schedule rule as `flood` (datagram `i` due at `i / rate`); without `--rate` the file
//! is sent as fast as `sendmmsg` allows.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::framing::{split_frames, Framing};
use crate::send::{connected_socket, MmsgSender};
use crate::stats::{self, fmt_count};

/// Largest UDP payload over IPv4.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// Everything `replay` needs.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Input file.
    pub file: PathBuf,
    /// Destination.
    pub target: SocketAddr,
    /// Datagrams per second; `None` = as fast as possible.
    pub rate: Option<u64>,
    /// File format.
    pub framing: Framing,
    /// Max datagrams per `sendmmsg`.
    pub batch: usize,
    /// Progress line every second.
    pub progress: bool,
}

/// The `replay` report (`--json` writes exactly this).
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    /// Always `"replay"`.
    pub mode: &'static str,
    /// Input file.
    pub file: String,
    /// File format.
    pub framing: Framing,
    /// Destination.
    pub target: String,
    /// Requested rate (`null` = unpaced).
    pub rate_per_s: Option<u64>,
    /// Datagrams in the file.
    pub datagrams_in_file: u64,
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Datagrams skipped: larger than 65,507 bytes.
    pub skipped_oversize: u64,
    /// Datagrams that failed to send.
    pub send_errors: u64,
    /// Stopped by SIGINT/SIGTERM.
    pub interrupted: bool,
    /// Wall time sending.
    pub elapsed_s: f64,
    /// `sent / elapsed_s`.
    pub achieved_rate_per_s: f64,
}

/// Replays `cfg.file` to `cfg.target`.
pub fn run(cfg: &ReplayConfig, shutdown: &AtomicBool) -> anyhow::Result<ReplayReport> {
    let data = std::fs::read(&cfg.file).with_context(|| format!("reading replay FILE {}", cfg.file.display()))?;
    let all = split_frames(&data, cfg.framing)
        .map_err(|e| anyhow::anyhow!("{} (--framing {:?}): {e}", cfg.file.display(), cfg.framing))?;
    let spans: Vec<(usize, usize)> = all.iter().copied().filter(|(s, e)| e - s <= MAX_UDP_PAYLOAD).collect();
    let skipped = (all.len() - spans.len()) as u64;
    let sock = connected_socket(cfg.target)
        .with_context(|| format!("creating a UDP socket towards --target {}", cfg.target))?;
    let mut sender = MmsgSender::new(cfg.batch);
    let mut failed = Vec::new();
    let (mut sent, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let mut interrupted = false;
    let start = Instant::now();
    let mut last_print = start;
    let mut last_sent = 0;
    let mut next = 0usize;
    while next < spans.len() {
        if shutdown.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let elapsed_ns = start.elapsed().as_nanos();
        let end = match cfg.rate {
            None => (next + cfg.batch).min(spans.len()),
            Some(rate) => {
                // Datagram i is due at i / rate: everything with i * 1e9 <= elapsed * rate.
                let due = (elapsed_ns * u128::from(rate) / 1_000_000_000 + 1).min(spans.len() as u128);
                let due = due as usize;
                if due <= next {
                    let wait_ns = (next as u128 * 1_000_000_000 / u128::from(rate)).saturating_sub(elapsed_ns);
                    std::thread::sleep(Duration::from_nanos(wait_ns as u64).min(Duration::from_millis(50)));
                    continue;
                }
                due.min(next + 8192)
            }
        };
        failed.clear();
        let o = sender.send(sock.as_raw_fd(), &data, &spans[next..end], &mut failed);
        sent += o.sent;
        bytes += o.bytes;
        errors += o.errors;
        next = end;
        if cfg.progress && last_print.elapsed() >= Duration::from_secs(1) {
            let now = Instant::now();
            eprintln!(
                "[{:>7.1}s] sent {} of {} ({}/s)",
                start.elapsed().as_secs_f64(),
                fmt_count(sent),
                fmt_count(spans.len() as u64),
                fmt_count(((sent - last_sent) as f64 / (now - last_print).as_secs_f64()) as u64)
            );
            last_print = now;
            last_sent = sent;
        }
    }
    let elapsed = start.elapsed();
    Ok(ReplayReport {
        mode: "replay",
        file: cfg.file.display().to_string(),
        framing: cfg.framing,
        target: cfg.target.to_string(),
        rate_per_s: cfg.rate,
        datagrams_in_file: all.len() as u64,
        sent,
        bytes_sent: bytes,
        skipped_oversize: skipped,
        send_errors: errors,
        interrupted,
        elapsed_s: stats::secs(elapsed),
        achieved_rate_per_s: if elapsed.is_zero() {
            0.0
        } else {
            (sent as f64 / elapsed.as_secs_f64()).round()
        },
    })
}

impl ReplayReport {
    /// The human-readable summary.
    pub fn table(&self) -> String {
        format!(
            "== loadgen replay: {} -> {} ==\nsent      {} of {} datagrams in {:.3}s = {}/s, {:.1} MB, {} errors, {} skipped (> 65,507 bytes){}\n",
            self.file,
            self.target,
            fmt_count(self.sent),
            fmt_count(self.datagrams_in_file),
            self.elapsed_s,
            fmt_count(self.achieved_rate_per_s as u64),
            self.bytes_sent as f64 / 1e6,
            self.send_errors,
            self.skipped_oversize,
            if self.interrupted { ", INTERRUPTED" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_a_file_to_a_local_socket_at_a_rate() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let path = std::env::temp_dir().join(format!("loadgen-replay-{}.txt", std::process::id()));
        std::fs::write(&path, b"d0\nd1\nd2\nd3\nd4\n").unwrap();
        let cfg = ReplayConfig {
            file: path.clone(),
            target: rx.local_addr().unwrap(),
            rate: Some(100),
            framing: Framing::Lines,
            batch: 2,
            progress: false,
        };
        let r = run(&cfg, &AtomicBool::new(false)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((r.datagrams_in_file, r.sent, r.send_errors), (5, 5, 0));
        // 5 datagrams at 100/s: the last is due at 40 ms.
        assert!(r.elapsed_s >= 0.039, "{}", r.elapsed_s);
        let mut buf = [0u8; 16];
        for i in 0..5 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], format!("d{i}").as_bytes());
        }
    }
}
