//! The engine's stop request: a flag every thread can test, and a file descriptor every waiting thread can sleep
//! on, so nothing has to wake up periodically just to notice a shutdown.
//!
//! A [`StopSignal`] is a flag plus a connected pair of Unix sockets. [`StopSignal::request`] (and SIGTERM/SIGINT,
//! once [`StopSignal::register_signals`] ran) sets the flag, then writes one byte to the pair. Nobody ever reads
//! that byte, so the read end stays readable from then on: every thread that waits on [`StopSignal::fd`] with
//! `poll`/`epoll`/io_uring (or on [`StopSignal::wait_timeout`]) wakes, now and in any later wait. Idle threads
//! therefore block in the kernel with no timeout at all.
//!
//! The flag is set before the byte is written, so a thread woken by the fd always sees the flag set.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long [`StopSignal::wait_timeout`] sleeps when `poll` itself fails.
const POLL_FAILED_SLEEP: Duration = Duration::from_millis(50);

/// A stop request that sleeping threads can wait for (see the module docs).
#[derive(Debug)]
pub struct StopSignal {
    flag: Arc<AtomicBool>,
    /// Readable once a stop was requested (never read from).
    read: UnixStream,
    /// Where a request (or the signal handler) writes its byte; non-blocking, so a full buffer (many requests)
    /// cannot block: one byte is enough.
    write: UnixStream,
}

impl StopSignal {
    /// A signal not yet requested.
    pub fn new() -> io::Result<Arc<StopSignal>> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(Arc::new(StopSignal {
            flag: Arc::new(AtomicBool::new(false)),
            read,
            write,
        }))
    }

    /// Requests the stop: sets the flag, then makes [`StopSignal::fd`] readable for good.
    pub fn request(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // WouldBlock: an earlier byte is already there, which is all a waiter needs.
        let _ = (&self.write).write(&[1]);
    }

    /// True once a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The flag alone, for code that only tests it between units of work.
    pub fn flag(&self) -> &Arc<AtomicBool> {
        &self.flag
    }

    /// A descriptor that becomes readable (`POLLIN`) when the stop is requested and stays readable. Valid as long
    /// as `self` lives.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Sleeps until the stop is requested or `timeout` passed (`None`: no timeout). Returns true when the stop
    /// was requested. Sub-millisecond timeouts are honoured (`ppoll`).
    pub fn wait_timeout(&self, timeout: Option<Duration>) -> bool {
        if poll_readable(&[self.fd()], timeout).is_none() {
            // poll failed (it cannot for our own descriptor): sleep instead, so no caller spins.
            std::thread::sleep(timeout.map_or(POLL_FAILED_SLEEP, |t| t.min(POLL_FAILED_SLEEP)));
        }
        // The flag is set before the byte is written: readable implies requested.
        self.is_requested()
    }

    /// Requests the stop on SIGTERM and SIGINT (the flag, then the byte, from the signal handler).
    pub fn register_signals(&self) -> io::Result<()> {
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(signal, Arc::clone(&self.flag))?;
            signal_hook::low_level::pipe::register(signal, self.write.try_clone()?)?;
        }
        Ok(())
    }
}

/// Waits until one of `fds` is readable or `timeout` passed (`None`: forever), retrying on EINTR. Returns which
/// fds are readable (all false after a timeout), or `None` when `poll` failed.
pub fn poll_readable<const N: usize>(fds: &[RawFd; N], timeout: Option<Duration>) -> Option<[bool; N]> {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    loop {
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `pfds` is an array of N valid pollfd on our stack, `ts_ptr` is null or points to a timespec on
        // our stack, and a null signal mask leaves the mask unchanged; all outlive the call.
        let n = unsafe { libc::ppoll(pfds.as_mut_ptr(), N as libc::nfds_t, ts_ptr, std::ptr::null()) };
        if n >= 0 {
            return Some(pfds.map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0));
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

impl AsRawFd for StopSignal {
    /// [`StopSignal::fd`], so a runtime can register the signal (e.g. tokio's `AsyncFd`).
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_waiter_sleeps_until_the_request_and_every_later_wait_returns_at_once() {
        let stop = StopSignal::new().unwrap();
        assert!(!stop.wait_timeout(Some(Duration::from_millis(1))), "not requested yet");
        let waiter = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || stop.wait_timeout(None))
        };
        let other = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || stop.wait_timeout(None))
        };
        stop.request();
        assert!(waiter.join().unwrap(), "the waiter saw the request");
        assert!(other.join().unwrap(), "every waiter wakes, not just one");
        assert!(stop.is_requested());
        let start = Instant::now();
        for _ in 0..3 {
            assert!(stop.wait_timeout(None), "the request stays visible");
        }
        stop.request(); // a second request is harmless
        assert!(stop.wait_timeout(Some(Duration::ZERO)));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn poll_readable_reports_which_descriptor_is_ready() {
        let stop = StopSignal::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        (&b).write_all(b"x").unwrap();
        let ready = poll_readable(&[stop.fd(), a.as_raw_fd()], None).unwrap();
        assert_eq!(ready, [false, true]);
        let ready = poll_readable(&[stop.fd()], Some(Duration::from_micros(200))).unwrap();
        assert_eq!(ready, [false], "a timeout reports nothing ready");
    }
}
