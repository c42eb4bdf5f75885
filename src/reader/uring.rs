//! io_uring receive: one multishot `recvmsg` per socket into a provided buffer ring (Linux 6.0+).
//!
//! # How it works
//! 1. A ring of [`RING_ENTRIES`] buffers is registered with the kernel (`IORING_REGISTER_PBUF_RING`). Each buffer
//!    holds the `io_uring_recvmsg_out` header, the sender's address and up to `maxMessageSize + 1` payload bytes.
//! 2. One `RecvMsgMulti` SQE is armed. For every datagram the kernel picks the next buffer, writes it and posts one
//!    CQE carrying the buffer id, with `IORING_CQE_F_MORE` while the request stays armed.
//! 3. The reader waits for CQEs (idle: with no timeout; a poll of the stop signal's descriptor completes at
//!    shutdown and wakes it), parses every completed datagram in place from its buffer into the slab, and gives
//!    the buffers back by advancing the ring tail once per pass.
//! 4. It hands the slab over when it is full, when nothing arrived while waiting, when a wake-up from idle brought
//!    a trickle's lone datagram
//!    ([`ReaderCore::linger_after_idle_wake`](super::ReaderCore::linger_after_idle_wake)), when no accepted
//!    event lingers, or when its linger ([`linger_for`](super::linger_for)) is up (waiting meanwhile for
//!    `LINGER_WAKE_COMPLETIONS` datagrams at once rather than one, unless busy). While datagrams keep coming (the
//!    last linger found more), it then waits one more linger for the next ones instead of waking for the first,
//!    and hands over what that wait found: a steady flow costs one wake-up per linger.
//! 5. It re-arms when a CQE arrives without `F_MORE` (for example `ENOBUFS` when all buffers were in use: the
//!    datagrams wait in the socket buffer meanwhile).
//!
//! The ring itself (buffer memory, registration, arming, handing completions over, cancelling) is the
//! `uring-ring` workspace crate, shared with loadgen's drain; this file is the reader's policy around it.
//!
//! # Why not tokio-uring
//! tokio-uring 0.5 has no multishot receive and no buffer rings; its one-`recv_from`-per-datagram path measured ~3x
//! the CPU per datagram of this design here (BENCHMARKS.md).

use std::io;
use std::net::UdpSocket;

use tracing::{error, trace};
use uring_ring::{Completion, DeferTaskrun, MultishotRecv, RingConfig};

use super::recvmmsg::sockaddr_to_std;
use super::{ReaderCore, POLL_INTERVAL};
use crate::telemetry::metrics::{now_unix_ns, RateLimit};

/// Buffers in the provided ring (a power of two, at most 32768).
pub const RING_ENTRIES: u16 = 256;
/// While a slab is lingering, the reader is woken only once this many datagrams are ready (or the linger time is
/// up). A quarter of the ring, so the kernel still has free buffers while we catch up.
const LINGER_WAKE_COMPLETIONS: usize = RING_ENTRIES as usize / 4;
const BUFFER_GROUP: u16 = 0;

static RECV_ERROR_LOG: RateLimit = RateLimit::new(std::time::Duration::from_secs(10));

/// A socket's io_uring receiver.
#[derive(Debug)]
pub struct UringReceiver {
    rx: MultishotRecv,
}

impl UringReceiver {
    /// Sets up a ring for `sock`. The error says why io_uring is unusable here, for the fallback WARN.
    pub fn new(sock: &UdpSocket, max_message_size: usize) -> Result<UringReceiver, String> {
        // SINGLE_ISSUER | DEFER_TASKRUN (6.1+): the kernel runs the receive work when we wait, and wakes us only
        // once the number of completions we wait for is ready; without it every datagram wakes the reader, which
        // makes waiting for several (see LINGER_WAKE_COMPLETIONS) pointless. The ring is built on the reader thread
        // that uses it, as SINGLE_ISSUER requires. Older kernels: a plain ring.
        let cfg = RingConfig {
            entries: RING_ENTRIES,
            buffer_group: BUFFER_GROUP,
            // Up to maxMessageSize + 1, so an oversize datagram is seen as one.
            payload_bytes: max_message_size + 1,
            peer_address: true,
            cq_entries: None,
            defer_taskrun: DeferTaskrun::IfSupported,
        };
        let rx = MultishotRecv::new(sock, &cfg).map_err(|e| e.to_string())?;
        Ok(UringReceiver { rx })
    }

    /// Receives until shutdown, feeding `core`. An `Err` means io_uring failed at run time (the caller falls back).
    ///
    /// At shutdown the multishot request is cancelled and its last completions are processed, so no datagram is
    /// left in a ring buffer; what is still queued on the socket is the caller's to drain.
    pub fn run(&mut self, core: &mut ReaderCore) -> io::Result<()> {
        let mut received_any = false;
        let mut last_completions = 0;
        // The last linger found more datagrams: they keep coming (see `flowing_wait`).
        let mut flowing = false;
        // The stop signal's descriptor outlives the reader (the core holds the signal).
        let stop_armed = self.rx.wake_on_readable(core.stop_signal().fd()).is_ok();
        while !core.should_stop() {
            // Idle: sleep until the first datagram. With events pending, sleep until LINGER_WAKE_COMPLETIONS more
            // datagrams arrived or their linger time is up, whichever is first: the kernel does not wake us per
            // datagram meanwhile, so at low rates a reader wakes about once per linger period instead of once per
            // datagram (each wake-up costs a few microseconds of context switch on this kind of VM).
            // Busy (the last pass was large): do not wait for a count at all. Deferred receive work is counted
            // per armed request, not per datagram, so waiting for LINGER_WAKE_COMPLETIONS would sleep out the
            // whole linger time at high rates and cap a reader at one ring of datagrams per linger period.
            let busy = last_completions >= LINGER_WAKE_COMPLETIONS;
            core.set_busy(busy);
            let lingering = core.linger_left(now_unix_ns());
            // The slab was just handed over, but the linger before found more datagrams: wait one more linger for
            // the next ones instead of waking for the first (as recvmmsg sleeps a linger between two drains), so
            // a steady flow costs one wake-up per linger rather than two.
            let flowing_wait = lingering.is_none() && flowing && !busy;
            let (want, timeout) = match lingering {
                Some(left) if !busy => (LINGER_WAKE_COMPLETIONS, Some(left)),
                Some(left) => (1, Some(left)),
                None if flowing_wait => (LINGER_WAKE_COMPLETIONS, Some(core.linger())),
                // Idle: until a datagram or the stop poll completes (a timeout only if the poll could not be armed).
                None => (1, (!stop_armed).then_some(POLL_INTERVAL)),
            };
            self.rx.wait_for(want, timeout)?;
            let now = now_unix_ns();
            let pass = self.rx.process(|c| on_completion(core, &mut received_any, now, c))?;
            last_completions = pass.completions;
            if pass.ended {
                self.rx.arm()?;
            }
            // A wake-up from idle that brought a trickle's lone datagram: hand it over now rather than wake again
            // when a linger timer runs out (the one trickle rule, shared with recvmmsg).
            let idle_wait = lingering.is_none() && !flowing_wait;
            let trickle = idle_wait && pass.completions > 0 && !core.linger_after_idle_wake(pass.completions);
            flowing = pass.completions > 0 && !idle_wait;
            // Hand the slab over (and publish the counters) when the link went quiet (nothing arrived while
            // waiting), for a trickle, after a flowing wait (its datagrams waited a linger in the socket), when no
            // accepted event lingers (e.g. only rejected or excluded datagrams arrived: their counts must not
            // wait), or when the linger time is up; otherwise keep filling it.
            if pass.completions == 0
                || trickle
                || flowing_wait
                || core.linger_left(now_unix_ns()).is_none_or(|left| left.is_zero())
            {
                core.flush();
            }
        }
        let now = now_unix_ns();
        self.rx.cancel(|c| on_completion(core, &mut received_any, now, c))?;
        core.flush();
        Ok(())
    }
}

/// Feeds one completion to `core`. An `Err` (EINVAL before any datagram: the kernel cannot do this request after
/// all) makes the reader fall back.
fn on_completion(core: &mut ReaderCore, received_any: &mut bool, now: u64, c: Completion<'_>) -> io::Result<()> {
    match c {
        Completion::Failed(errno) => {
            if errno == libc::EINVAL && !*received_any {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            if errno == libc::ENOBUFS {
                trace!("buffer ring exhausted; re-arming");
            } else if errno != libc::ECANCELED {
                if let Some(suppressed) = RECV_ERROR_LOG.allow() {
                    error!(error = %io::Error::from_raw_os_error(errno), suppressed, "io_uring recvmsg failed");
                }
            }
        }
        Completion::Datagram(d) => {
            *received_any = true;
            if let Some(peer) = sockaddr_to_std(&d.peer()) {
                core.handle(d.payload, d.truncated, peer, now);
            }
        }
    }
    Ok(())
}
