//! The io_uring receive loops of `drain --backend io_uring|tokio-uring`, and the probe that decides whether
//! io_uring can be used here at all.
//!
//! - `io_uring`: one multishot `RecvMsgMulti` per socket into a registered provided buffer ring (io-uring 0.7,
//!   kernel 6.0+). For every datagram the kernel picks a buffer and posts one completion; each wake-up handles
//!   every completion available, gives the buffers back with one tail store, and re-arms when a completion comes
//!   without `IORING_CQE_F_MORE` (e.g. `ENOBUFS` when every buffer was in use). "recv calls" are these wake-ups.
//! - `tokio-uring`: `tokio_uring::net::UdpSocket::recv_from` with [`TOKIO_IN_FLIGHT`] receives in flight, each
//!   with its own owned buffer, one single-threaded runtime per receiver thread. tokio-uring 0.5 has neither
//!   multishot receive nor buffer rings, so this is one submission and one completion per datagram; "recv calls"
//!   are these completions.
//!
//! Neither asks for the sender's address beyond what the API forces (tokio-uring's `recv_from` returns it), the
//! same as the recvmmsg drain.

use std::cell::RefCell;
use std::io;
use std::net::UdpSocket;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use uring_ring::{Completion, DeferTaskrun, MultishotRecv, RingConfig};

use crate::recv::{ThreadCounters, RECV_TIMEOUT, SLOT_BYTES};

/// Buffers in the provided ring (a power of two, at most 32768).
pub const RING_ENTRIES: u16 = 1024;
/// Receives in flight per tokio-uring socket.
pub const TOKIO_IN_FLIGHT: usize = 64;
const BUFFER_GROUP: u16 = 7;

/// Why io_uring (with what `backend` needs) is not usable here, or `Ok`.
///
/// `multishot`: also require a provided buffer ring and multishot recvmsg (kernel 6.0+), as `io_uring` does;
/// `tokio-uring` needs only a working `io_uring_setup` (its README says 5.11+).
pub fn probe(multishot: bool) -> Result<(), String> {
    if let Some((major, minor)) = uring_ring::kernel_version() {
        if !multishot && (major, minor) < (5, 11) {
            return Err(format!(
                "kernel {major}.{minor} is too old for tokio-uring (needs 5.11)"
            ));
        }
    }
    uring_ring::probe(multishot)
}

/// One socket's multishot receiver.
#[derive(Debug)]
pub struct MultishotRx {
    rx: MultishotRecv,
}

impl MultishotRx {
    /// Sets up a ring with a registered buffer ring for `sock` and arms the multishot recvmsg.
    ///
    /// `defer_taskrun`: `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (6.1+); the ring must then be
    /// used only by the thread that creates it.
    pub fn new(sock: &UdpSocket, defer_taskrun: bool) -> io::Result<MultishotRx> {
        let cfg = RingConfig {
            entries: RING_ENTRIES,
            buffer_group: BUFFER_GROUP,
            payload_bytes: SLOT_BYTES,
            peer_address: false,
            // The completion queue holds a completion for every buffer (a multishot request ends when it cannot
            // post).
            cq_entries: Some(2 * u32::from(RING_ENTRIES)),
            defer_taskrun: if defer_taskrun {
                DeferTaskrun::Required
            } else {
                DeferTaskrun::Off
            },
        };
        Ok(MultishotRx {
            rx: MultishotRecv::new(sock, &cfg)?,
        })
    }

    /// Receives and counts until `stop`, then cancels the request and waits for its last completion.
    pub fn run(mut self, counters: &ThreadCounters, stop: &AtomicBool, epoch: Instant) -> io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            self.rx.wait_for(1, Some(RECV_TIMEOUT))?;
            let (mut n, mut bytes) = (0u64, 0u64);
            let pass = self.rx.process(|c| count(c, &mut n, &mut bytes))?;
            if n > 0 {
                counters.record(n, bytes, epoch);
            }
            if pass.ended {
                self.rx.arm()?;
            }
        }
        let (mut n, mut bytes) = (0u64, 0u64);
        self.rx.cancel(|c| count(c, &mut n, &mut bytes))
    }
}

/// Counts a datagram; `ENOBUFS`, `ECANCELED` and `EINTR` are routine, any other failure ends the drain.
fn count(c: Completion<'_>, n: &mut u64, bytes: &mut u64) -> io::Result<()> {
    match c {
        Completion::Datagram(d) => {
            *n += 1;
            *bytes += d.payload.len() as u64;
            Ok(())
        }
        Completion::Failed(libc::ENOBUFS | libc::ECANCELED | libc::EINTR) => Ok(()),
        Completion::Failed(e) => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Receives with tokio-uring on `sock` until `wake` is notified (after the drain's stop flag was set), counting
/// into `counters[index]`.
pub fn run_tokio_uring(
    sock: UdpSocket,
    counters: Arc<Vec<ThreadCounters>>,
    index: usize,
    wake: &tokio::sync::Notify,
    epoch: Instant,
) -> io::Result<()> {
    let rt = tokio_uring::Runtime::new(&tokio_uring::builder())
        .map_err(|e| io::Error::new(e.kind(), uring_ring::describe_setup_error(&e)))?;
    // The recvmmsg drain's read timeout is irrelevant here: io_uring polls the socket.
    sock.set_read_timeout(None)?;
    let failed: Rc<RefCell<Option<io::Error>>> = Rc::default();
    rt.block_on(async {
        let sock = Rc::new(tokio_uring::net::UdpSocket::from_std(sock));
        for _ in 0..TOKIO_IN_FLIGHT {
            let (sock, counters, failed) = (Rc::clone(&sock), Arc::clone(&counters), Rc::clone(&failed));
            tokio_uring::spawn(async move {
                let mut buf = Vec::with_capacity(SLOT_BYTES);
                loop {
                    let (res, b) = sock.recv_from(buf).await;
                    buf = b;
                    match res {
                        Ok((len, _peer)) => counters[index].record(1, len as u64, epoch),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            failed.borrow_mut().get_or_insert(e);
                            return;
                        }
                    }
                    // recv_from fills the buffer's spare capacity: hand it back empty.
                    buf.clear();
                }
            });
        }
        wake.notified().await;
    });
    // Dropping the runtime cancels the receives still in flight and waits for their completions.
    drop(rt);
    match failed.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
