//! What the drain's receive loops share: the recvmmsg loop in [`crate::drain`] and the io_uring loops in
//! [`crate::uring`] all receive into slots of [`SLOT_BYTES`], wake up every [`RECV_TIMEOUT`] to check for shutdown
//! and count into one [`ThreadCounters`] per thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes per receive slot (the largest UDP payload fits).
pub const SLOT_BYTES: usize = 65_536;
/// How often a blocked receiver wakes up to check for shutdown.
pub const RECV_TIMEOUT: Duration = Duration::from_millis(100);

/// Counters of one receiver thread, padded to their own cache lines.
#[repr(align(128))]
#[derive(Debug)]
pub struct ThreadCounters {
    pub(crate) received: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) calls: AtomicU64,
    /// Nanoseconds after the drain's epoch; `u64::MAX` until the first datagram.
    pub(crate) first_ns: AtomicU64,
    pub(crate) last_ns: AtomicU64,
}

impl ThreadCounters {
    /// Zero counts, no datagram yet.
    pub fn new() -> ThreadCounters {
        ThreadCounters {
            received: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
        }
    }

    /// Counts one receive call (or wake-up) that returned `n` datagrams of `bytes` bytes.
    pub fn record(&self, n: u64, bytes: u64, epoch: Instant) {
        let now_ns = epoch.elapsed().as_nanos() as u64;
        if self.first_ns.load(Ordering::Relaxed) == u64::MAX {
            self.first_ns.store(now_ns, Ordering::Relaxed);
        }
        self.last_ns.store(now_ns, Ordering::Relaxed);
        self.received.fetch_add(n, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}
