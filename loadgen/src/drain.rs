//! `drain`: the raw receive baseline. Receives and counts, nothing else, so its CPU time per
//! datagram is the floor any real receiver is compared to. Three receive backends
//! (`--backend`): `recvmmsg` (64 per call, the default), `io_uring` (multishot recvmsg into a
//! provided buffer ring) and `tokio-uring` (`recv_from`, 64 in flight); see [`crate::uring`].
//! When io_uring is unavailable the drain says why on stderr and falls back to recvmmsg; the
//! report names the backend that actually ran.
//!
//! - One socket per thread, all bound to the same address with `SO_REUSEPORT` (the kernel
//!   spreads *flows* over them: one sending host stays on one socket).
//! - A large receive buffer: `SO_RCVBUFFORCE` (needs CAP_NET_ADMIN, i.e. root) and, if that
//!   is refused, `SO_RCVBUF` (capped by `net.core.rmem_max`). The effective size is reported.
//! - CPU per datagram = `getrusage(RUSAGE_SELF)` user + system time over the run / datagrams
//!   received. On loopback much of the delivery work is charged to the *sender*, so compare
//!   receivers on the same machine and path, not with other hosts' numbers.
//! - Kernel drops: the `drops` column of `/proc/net/udp` and `/proc/net/udp6` for our sockets'
//!   inodes (the counter of datagrams discarded because the receive buffer was full).
//! - The rate is over the *active* time: first to last datagram received.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::recv::{ThreadCounters, RECV_TIMEOUT, SLOT_BYTES};
use crate::stats::{self, fmt_count, process_cpu};

/// Datagrams per `recvmmsg` call.
pub const RECV_BATCH: usize = 64;
/// How the drain receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Backend {
    /// `recvmmsg`, up to 64 datagrams per call.
    #[default]
    #[serde(rename = "recvmmsg")]
    #[value(name = "recvmmsg")]
    Recvmmsg,
    /// io_uring multishot `RecvMsgMulti` into a registered provided buffer ring (kernel 6.0+).
    #[serde(rename = "io_uring")]
    #[value(name = "io_uring", alias = "io-uring")]
    IoUring,
    /// `tokio_uring::net::UdpSocket::recv_from`, 64 receives in flight, one runtime per thread.
    #[serde(rename = "tokio-uring")]
    #[value(name = "tokio-uring", alias = "tokio_uring")]
    TokioUring,
}

impl Backend {
    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Recvmmsg => "recvmmsg",
            Backend::IoUring => "io_uring",
            Backend::TokioUring => "tokio-uring",
        }
    }
}

/// Everything `drain` needs to start.
#[derive(Clone, Debug)]
pub struct DrainConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Receiver threads (one `SO_REUSEPORT` socket each).
    pub threads: usize,
    /// Requested receive buffer per socket.
    pub rcvbuf: usize,
    /// Requested receive backend (falls back to recvmmsg when io_uring is unusable).
    pub backend: Backend,
    /// io_uring backend: set the ring up with `SINGLE_ISSUER | DEFER_TASKRUN` (kernel 6.1+; completions are
    /// processed only when the receiver enters the kernel, instead of interrupting it).
    pub uring_defer_taskrun: bool,
}

/// A running drain.
#[derive(Debug)]
pub struct Drain {
    cfg: DrainConfig,
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<Vec<ThreadCounters>>,
    handles: Vec<JoinHandle<io::Result<()>>>,
    /// tokio-uring threads wait on these (one per thread) to stop.
    wakes: Vec<Arc<tokio::sync::Notify>>,
    backend: Backend,
    fallback_reason: Option<String>,
    /// Keeps the sockets open (for /proc drop lookups) until the report is built.
    sockets: Vec<Arc<UdpSocket>>,
    inodes: Vec<u64>,
    rcvbuf_effective: usize,
    rcvbuf_forced: bool,
    epoch: Instant,
    cpu_at_start: (Duration, Duration),
}

/// The `drain` report (`--json` writes exactly this).
#[derive(Clone, Debug, Serialize)]
pub struct DrainReport {
    /// Always `"drain"`.
    pub mode: &'static str,
    /// Bound address.
    pub listen: String,
    /// Receiver threads.
    pub threads: usize,
    /// The receive backend that ran (`recvmmsg`, `io_uring` or `tokio-uring`).
    pub backend: Backend,
    /// The one `--backend` asked for.
    pub backend_requested: Backend,
    /// Why the requested io_uring backend was not used (`null` when it was, or was not asked for).
    pub fallback_reason: Option<String>,
    /// io_uring ring set up with SINGLE_ISSUER | DEFER_TASKRUN (`--uring-defer-taskrun`).
    pub uring_defer_taskrun: bool,
    /// Requested receive buffer.
    pub rcvbuf_requested: usize,
    /// What the kernel reports (it doubles the request for bookkeeping).
    pub rcvbuf_effective: usize,
    /// Whether SO_RCVBUFFORCE worked (else SO_RCVBUF, capped by rmem_max).
    pub rcvbuf_forced: bool,
    /// Wall time from start to stop.
    pub elapsed_s: f64,
    /// First to last datagram received.
    pub active_s: f64,
    /// Datagrams received.
    pub received: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Receive calls that returned datagrams: recvmmsg calls, io_uring wake-ups that found completions, or
    /// tokio-uring `recv_from` completions (one per datagram).
    pub recv_calls: u64,
    /// `received / recv_calls`.
    pub avg_batch: f64,
    /// `received / active_s`.
    pub rate_per_s: f64,
    /// User CPU over the run.
    pub cpu_user_s: f64,
    /// System CPU over the run.
    pub cpu_sys_s: f64,
    /// (user + sys) / received, in nanoseconds (`null` when nothing was received).
    pub cpu_ns_per_datagram: Option<f64>,
    /// Kernel receive-buffer drops on our sockets (`null` if /proc/net/udp is unreadable).
    pub kernel_drops: Option<u64>,
    /// Stopped by SIGINT/SIGTERM (rather than --duration).
    pub interrupted: bool,
}

/// Binds the sockets and starts the receiver threads.
pub fn start(cfg: &DrainConfig) -> io::Result<Drain> {
    let threads = cfg.threads.max(1);
    let (backend, fallback_reason) = resolve_backend(cfg.backend, crate::uring::probe);
    if let Some(why) = &fallback_reason {
        eprintln!(
            "loadgen: drain: --backend {} is unavailable here ({why}); falling back to --backend recvmmsg",
            cfg.backend.name()
        );
    }
    let mut sockets = Vec::with_capacity(threads);
    let mut addr = cfg.listen;
    let mut forced_all = true;
    let mut rcvbuf_effective = 0;
    for _ in 0..threads {
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_reuse_port(true)?;
        let forced = set_rcvbuf_force(&sock, cfg.rcvbuf);
        if !forced {
            let _ = sock.set_recv_buffer_size(cfg.rcvbuf);
        }
        forced_all &= forced;
        rcvbuf_effective = sock.recv_buffer_size().unwrap_or(0);
        sock.bind(&addr.into())?;
        sock.set_read_timeout(Some(RECV_TIMEOUT))?;
        let udp: UdpSocket = sock.into();
        // With port 0, the first bind picks the port and the others join it.
        addr = udp.local_addr()?;
        sockets.push(Arc::new(udp));
    }
    let inodes = sockets.iter().filter_map(|s| socket_inode(s)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Arc<Vec<ThreadCounters>> = Arc::new((0..threads).map(|_| ThreadCounters::new()).collect());
    let epoch = Instant::now();
    let cpu_at_start = process_cpu();
    let mut handles = Vec::with_capacity(threads);
    let mut wakes = Vec::new();
    for (i, sock) in sockets.iter().enumerate() {
        let (sock, stop, counters) = (Arc::clone(sock), Arc::clone(&stop), Arc::clone(&counters));
        let thread = std::thread::Builder::new().name(format!("drain-{i}"));
        let handle = match backend {
            Backend::Recvmmsg => thread.spawn(move || recv_loop(&sock, &counters[i], &stop, epoch))?,
            Backend::IoUring => {
                // The ring is built on the thread that uses it (required with SINGLE_ISSUER/DEFER_TASKRUN);
                // a setup error comes back here and fails the start.
                let (tx, rx) = std::sync::mpsc::channel();
                let defer = cfg.uring_defer_taskrun;
                let h = thread.spawn(move || match crate::uring::MultishotRx::new(&sock, defer) {
                    Ok(ring) => {
                        let _ = tx.send(Ok(()));
                        ring.run(&counters[i], &stop, epoch)
                    }
                    Err(e) => {
                        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        Err(e)
                    }
                })?;
                match rx.recv() {
                    Ok(Ok(())) => h,
                    Ok(Err(e)) => {
                        let _ = h.join();
                        return Err(e);
                    }
                    Err(_) => return Err(io::Error::other("io_uring receiver thread died during setup")),
                }
            }
            Backend::TokioUring => {
                let std_sock = sock.try_clone()?;
                let wake = Arc::new(tokio::sync::Notify::new());
                wakes.push(Arc::clone(&wake));
                thread.spawn(move || crate::uring::run_tokio_uring(std_sock, counters, i, &wake, epoch))?
            }
        };
        handles.push(handle);
    }
    Ok(Drain {
        cfg: cfg.clone(),
        local_addr: addr,
        stop,
        counters,
        handles,
        wakes,
        backend,
        fallback_reason,
        sockets,
        inodes,
        rcvbuf_effective,
        rcvbuf_forced: forced_all,
        epoch,
        cpu_at_start,
    })
}

/// The backend to run for `requested`, and why not the requested one. `probe(multishot)` says whether io_uring
/// is usable (see [`crate::uring::probe`]).
fn resolve_backend(requested: Backend, probe: impl FnOnce(bool) -> Result<(), String>) -> (Backend, Option<String>) {
    match requested {
        Backend::Recvmmsg => (Backend::Recvmmsg, None),
        b @ (Backend::IoUring | Backend::TokioUring) => match probe(b == Backend::IoUring) {
            Ok(()) => (b, None),
            Err(why) => (Backend::Recvmmsg, Some(why)),
        },
    }
}

/// Tries `SO_RCVBUFFORCE` (root only); returns whether it worked.
fn set_rcvbuf_force(sock: &Socket, bytes: usize) -> bool {
    let val = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `val` is a live c_int for the duration of the call and we pass its exact size;
    // the fd is a valid socket owned by `sock`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&val as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// The socket's inode number (as listed in /proc/net/udp), via /proc/self/fd.
fn socket_inode(sock: &UdpSocket) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{}", sock.as_raw_fd()))
        .ok()
        .map(|m| m.ino())
}

/// Sums the `drops` column of /proc/net/udp{,6} over the sockets with these inodes.
pub fn kernel_drops(inodes: &[u64]) -> Option<u64> {
    let mut total = 0;
    let mut readable = false;
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        readable = true;
        total += drops_from_proc_net_udp(&text, inodes);
    }
    readable.then_some(total)
}

/// Parses the text of /proc/net/udp: columns `sl local rem st tx:rx tr:when retrnsmt uid
/// timeout inode ref pointer drops`.
fn drops_from_proc_net_udp(text: &str, inodes: &[u64]) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let inode: u64 = cols.get(9)?.parse().ok()?;
            let drops: u64 = cols.get(12)?.parse().ok()?;
            inodes.contains(&inode).then_some(drops)
        })
        .sum()
}

fn recv_loop(sock: &UdpSocket, counters: &ThreadCounters, stop: &AtomicBool, epoch: Instant) -> io::Result<()> {
    let mut bufs = vec![0u8; RECV_BATCH * SLOT_BYTES];
    let mut iovs: Vec<libc::iovec> = bufs
        .chunks_mut(SLOT_BYTES)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is a plain C struct; all-zero (null pointers, zero lengths) is a
            // valid value, and we then point it at one iovec.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let fd = sock.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `hdrs` holds RECV_BATCH initialised headers, each pointing at one iovec in
        // `iovs`, each covering a distinct SLOT_BYTES slice of `bufs`; `bufs`, `iovs` and
        // `hdrs` live (unmoved) for the whole loop, and nothing else touches them during the
        // call. No names or control buffers are requested. A null timeout means SO_RCVTIMEO
        // bounds the wait for the first datagram.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                RECV_BATCH as _,
                libc::MSG_WAITFORONE as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => continue,
                _ => return Err(err),
            }
        }
        let n = n as usize;
        let bytes: u64 = hdrs[..n].iter().map(|h| u64::from(h.msg_len)).sum();
        counters.record(n as u64, bytes, epoch);
    }
    Ok(())
}

impl Drain {
    /// The bound address (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Datagrams received so far, over all threads.
    pub fn received(&self) -> u64 {
        self.counters.iter().map(|c| c.received.load(Ordering::Relaxed)).sum()
    }

    /// Kernel drops so far on our sockets.
    pub fn kernel_drops(&self) -> Option<u64> {
        kernel_drops(&self.inodes)
    }

    /// Stops the threads and builds the report.
    #[cfg(test)]
    pub fn stop(self) -> DrainReport {
        self.stop_with(false)
    }

    fn stop_with(mut self, interrupted: bool) -> DrainReport {
        // Drops are read before the sockets close (closed sockets vanish from /proc).
        let drops = self.kernel_drops();
        let (u, s) = process_cpu();
        let elapsed = self.epoch.elapsed();
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.wakes {
            w.notify_one();
        }
        for h in self.handles.drain(..) {
            if let Ok(Err(e)) = h.join() {
                eprintln!("loadgen: drain receiver failed: {e}");
            }
        }
        self.sockets.clear();
        let load = |f: fn(&ThreadCounters) -> &AtomicU64| -> Vec<u64> {
            self.counters.iter().map(|c| f(c).load(Ordering::Relaxed)).collect()
        };
        let received: u64 = load(|c| &c.received).iter().sum();
        let bytes: u64 = load(|c| &c.bytes).iter().sum();
        let calls: u64 = load(|c| &c.calls).iter().sum();
        let first = load(|c| &c.first_ns).into_iter().min().unwrap_or(u64::MAX);
        let last = load(|c| &c.last_ns).into_iter().max().unwrap_or(0);
        let active = if first == u64::MAX || last <= first {
            Duration::ZERO
        } else {
            Duration::from_nanos(last - first)
        };
        let (u0, s0) = self.cpu_at_start;
        let cpu = u.saturating_sub(u0) + s.saturating_sub(s0);
        DrainReport {
            mode: "drain",
            listen: self.local_addr.to_string(),
            threads: self.cfg.threads.max(1),
            backend: self.backend,
            backend_requested: self.cfg.backend,
            fallback_reason: self.fallback_reason.clone(),
            uring_defer_taskrun: self.backend == Backend::IoUring && self.cfg.uring_defer_taskrun,
            rcvbuf_requested: self.cfg.rcvbuf,
            rcvbuf_effective: self.rcvbuf_effective,
            rcvbuf_forced: self.rcvbuf_forced,
            elapsed_s: stats::secs(elapsed),
            active_s: stats::secs(active),
            received,
            bytes,
            recv_calls: calls,
            avg_batch: if calls == 0 {
                0.0
            } else {
                ((received as f64 / calls as f64) * 100.0).round() / 100.0
            },
            rate_per_s: if active.is_zero() {
                received as f64
            } else {
                (received as f64 / active.as_secs_f64()).round()
            },
            cpu_user_s: stats::secs(u.saturating_sub(u0)),
            cpu_sys_s: stats::secs(s.saturating_sub(s0)),
            cpu_ns_per_datagram: (received > 0)
                .then(|| ((cpu.as_nanos() as f64 / received as f64) * 10.0).round() / 10.0),
            kernel_drops: drops,
            interrupted,
        }
    }
}

/// Runs a drain until `duration` passes (if given) or `shutdown` is set, printing a progress
/// line every second when `progress` is on.
pub fn run(
    cfg: &DrainConfig,
    duration: Option<Duration>,
    progress: bool,
    shutdown: &AtomicBool,
) -> anyhow::Result<DrainReport> {
    use anyhow::Context;
    let drain = start(cfg).with_context(|| format!("binding --listen {}", cfg.listen))?;
    if progress {
        eprintln!(
            "loadgen: drain listening on {} ({}, {} thread(s), rcvbuf {} bytes{})",
            drain.local_addr(),
            drain.backend.name(),
            cfg.threads.max(1),
            drain.rcvbuf_effective,
            if drain.rcvbuf_forced { ", forced" } else { "" }
        );
    }
    let mut last = (Instant::now(), 0);
    let interrupted = stats::wait_until_done(duration, shutdown, progress, |elapsed| {
        let (now, n) = (Instant::now(), drain.received());
        eprintln!(
            "[{:>7.1}s] received {} ({}/s), kernel drops {}",
            elapsed.as_secs_f64(),
            fmt_count(n),
            fmt_count(((n - last.1) as f64 / (now - last.0).as_secs_f64()) as u64),
            drain.kernel_drops().map_or("n/a".to_string(), fmt_count)
        );
        last = (now, n);
    });
    Ok(drain.stop_with(interrupted))
}

impl DrainReport {
    /// The human-readable summary.
    pub fn table(&self) -> String {
        format!(
            "== loadgen drain on {} ({}{}, {} thread(s), rcvbuf {} bytes{}) ==\n\
             received  {} datagrams, {:.1} MB in {:.3}s active ({:.3}s total) = {}/s\n\
             receive   {} {}, {:.2} datagrams each\n\
             cpu       user {:.3}s + sys {:.3}s = {} ns/datagram\n\
             drops     {} (kernel receive buffer){}\n",
            self.listen,
            self.backend.name(),
            if self.backend == self.backend_requested {
                String::new()
            } else {
                format!(", fallback from {}", self.backend_requested.name())
            },
            self.threads,
            self.rcvbuf_effective,
            if self.rcvbuf_forced { ", forced" } else { "" },
            fmt_count(self.received),
            self.bytes as f64 / 1e6,
            self.active_s,
            self.elapsed_s,
            fmt_count(self.rate_per_s as u64),
            fmt_count(self.recv_calls),
            match self.backend {
                Backend::Recvmmsg => "recvmmsg calls",
                Backend::IoUring => "io_uring wake-ups",
                Backend::TokioUring => "recv_from completions",
            },
            self.avg_batch,
            self.cpu_user_s,
            self.cpu_sys_s,
            self.cpu_ns_per_datagram
                .map_or("n/a".to_string(), |v| format!("{v:.0}")),
            self.kernel_drops.map_or("n/a".to_string(), fmt_count),
            if self.interrupted { "\n(stopped by signal)" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_drops_for_our_inodes_only() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  123: 0100007F:2705 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
  124: 0100007F:2706 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 999 2 0000000000000000 5\n";
        assert_eq!(drops_from_proc_net_udp(text, &[4242]), 17);
        assert_eq!(drops_from_proc_net_udp(text, &[4242, 999]), 22);
        assert_eq!(drops_from_proc_net_udp(text, &[1]), 0);
    }

    /// Sends 8 flows x 50 datagrams to a 2-thread drain of `backend` and checks every one is counted.
    fn counts_everything_with(backend: Backend, uring_defer_taskrun: bool) -> DrainReport {
        let drain = start(&DrainConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            threads: 2,
            rcvbuf: 1 << 20,
            backend,
            uring_defer_taskrun,
        })
        .unwrap();
        assert_ne!(drain.local_addr().port(), 0);
        assert_eq!(drain.inodes.len(), 2);
        // Several source sockets so SO_REUSEPORT spreads flows over both receivers.
        for i in 0..8 {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            for j in 0..50 {
                tx.send_to(format!("{i}-{j}").as_bytes(), drain.local_addr()).unwrap();
            }
        }
        let end = Instant::now() + Duration::from_secs(10);
        while drain.received() < 400 {
            assert!(Instant::now() < end, "{backend:?} drain saw only {}", drain.received());
            std::thread::sleep(Duration::from_millis(2));
        }
        let r = drain.stop();
        assert_eq!(r.received, 400);
        assert_eq!(
            r.bytes,
            (0..8)
                .map(|i| (0..50).map(|j| format!("{i}-{j}").len() as u64).sum::<u64>())
                .sum::<u64>()
        );
        assert_eq!(r.kernel_drops, Some(0));
        assert!(r.cpu_ns_per_datagram.is_some());
        assert!(r.recv_calls >= 1 && r.avg_batch >= 1.0);
        assert_eq!(r.backend_requested, backend);
        r
    }

    #[test]
    fn reuseport_threads_share_one_port_and_count_everything() {
        let r = counts_everything_with(Backend::Recvmmsg, false);
        assert_eq!(r.backend, Backend::Recvmmsg);
        assert!(r.fallback_reason.is_none());
    }

    /// io_uring may be unavailable (old kernel, seccomp, sysctl): then the drain must fall back and say why.
    #[test]
    fn io_uring_backends_count_everything_or_fall_back_with_a_reason() {
        for (backend, defer) in [
            (Backend::IoUring, false),
            (Backend::IoUring, true),
            (Backend::TokioUring, false),
        ] {
            let usable = crate::uring::probe(backend == Backend::IoUring).is_ok();
            let r = counts_everything_with(backend, defer);
            assert_eq!(r.uring_defer_taskrun, usable && defer);
            if usable {
                assert_eq!(r.backend, backend);
                assert!(r.fallback_reason.is_none());
            } else {
                assert_eq!(r.backend, Backend::Recvmmsg);
                assert!(r.fallback_reason.is_some());
            }
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json["backend_requested"], backend.name());
            assert_eq!(json["backend"], r.backend.name());
        }
    }

    #[test]
    fn falls_back_to_recvmmsg_with_the_probe_s_reason() {
        let enosys = |_: bool| Err("io_uring_setup: ENOSYS (blocked by seccomp)".to_string());
        let (b, why) = resolve_backend(Backend::IoUring, enosys);
        assert_eq!(b, Backend::Recvmmsg);
        assert!(why.unwrap().contains("ENOSYS"));
        assert_eq!(resolve_backend(Backend::TokioUring, enosys).0, Backend::Recvmmsg);
        let mut asked = None;
        let (b, why) = resolve_backend(Backend::IoUring, |m| {
            asked = Some(m);
            Ok(())
        });
        assert_eq!((b, why, asked), (Backend::IoUring, None, Some(true)));
        let (b, _) = resolve_backend(Backend::TokioUring, |m| if m { Err("x".into()) } else { Ok(()) });
        assert_eq!(b, Backend::TokioUring);
        assert_eq!(
            resolve_backend(Backend::Recvmmsg, |_| unreachable!()),
            (Backend::Recvmmsg, None)
        );
    }

    #[test]
    fn an_idle_drain_of_each_backend_stops_promptly() {
        for backend in [Backend::Recvmmsg, Backend::IoUring, Backend::TokioUring] {
            let drain = start(&DrainConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                threads: 1,
                rcvbuf: 1 << 20,
                backend,
                uring_defer_taskrun: false,
            })
            .unwrap();
            let t = Instant::now();
            let r = drain.stop();
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "{backend:?} took {:?}",
                t.elapsed()
            );
            assert_eq!((r.received, r.cpu_ns_per_datagram), (0, None));
        }
    }
}
