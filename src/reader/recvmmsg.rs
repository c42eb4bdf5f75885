//! The portable fast path: batched `recvmmsg(2)`, woken by `ppoll`, lingering between drains.
//!
//! One call returns up to [`BATCH`] datagrams already queued. The reader waits in `ppoll` on the socket and the
//! stop signal when idle, and sleeps one linger ([`linger_for`](super::linger_for)) between drains while
//! datagrams flow, so it wakes per linger rather than per datagram (see [`RecvmmsgReceiver::run`]). Each slot's
//! buffer is `maxMessageSize + 1` bytes, so an oversized datagram is recognised (it fills the slot or sets
//! `MSG_TRUNC`); the memory is reserved, not touched, so only the bytes datagrams actually use become resident.

use std::io;
use std::mem::MaybeUninit;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Instant;

use tracing::error;

use super::{ReaderCore, BUSY_LINGER, DRAIN_LIMIT, POLL_INTERVAL};
use crate::stop::poll_readable;
use crate::telemetry::metrics::{now_unix_ns, RateLimit};

/// Datagrams per `recvmmsg` call.
pub const BATCH: usize = 64;

static RECV_ERROR_LOG: RateLimit = RateLimit::new(std::time::Duration::from_secs(10));

/// Batched receive buffers for one socket.
pub struct RecvmmsgReceiver {
    slot: usize,
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    /// Kept alive: `msgs` point into it.
    _iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// How many entries of `msgs` the last successful call filled: only those need their in/out fields reset (the
    /// kernel writes nothing into the others, nor into any entry of a call that fails), so a wake-up for one
    /// datagram touches one entry, not [`BATCH`].
    filled: usize,
}

// SAFETY: the raw pointers inside point into the Vecs owned by the same value (heap memory that does not move
// when the value moves); the receiver is used by one thread at a time.
unsafe impl Send for RecvmmsgReceiver {}

impl std::fmt::Debug for RecvmmsgReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvmmsgReceiver").field("slot", &self.slot).finish()
    }
}

impl RecvmmsgReceiver {
    /// Buffers for [`BATCH`] datagrams of up to `max_message_size + 1` bytes.
    pub fn new(max_message_size: usize) -> RecvmmsgReceiver {
        let slot = max_message_size + 1;
        let mut bufs = vec![0u8; slot * BATCH];
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH];
        let mut iovecs: Vec<libc::iovec> = bufs
            .chunks_mut(slot)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: slot,
            })
            .collect();
        // SAFETY: mmsghdr is plain old data; all-zero is a valid value (null pointers, zero lengths).
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH];
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_iov = &mut iovecs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        RecvmmsgReceiver {
            slot,
            bufs,
            names,
            _iovecs: iovecs,
            msgs,
            // The first call sets every entry's name length.
            filled: BATCH,
        }
    }

    /// Receives on `sock` until shutdown, then drains what is already queued; feeds `core`.
    ///
    /// Idle, the reader blocks in `ppoll` on the socket and the stop signal, with no timeout. A wake-up that finds
    /// datagrams drains the socket (`recvmmsg`, [`BATCH`] at a time, until it is empty), then sleeps for
    /// one linger while the kernel's receive buffer gathers the next datagrams, and drains again: while datagrams
    /// flow, a reader wakes about once per linger whatever the rate, and each wake-up handles every datagram that
    /// arrived meanwhile (like the io_uring backend's wait for a count of completions). After a linger, the slab is
    /// handed over; a drain that finds nothing hands it over too and goes back to blocking. A trickle (one
    /// datagram per wake-up, wake-ups further apart than [`BUSY_GAP`](super::BUSY_GAP)) is handed over without
    /// lingering. So an event waits at most one linger (plus the drain) in the reader, as with the io_uring
    /// backend.
    pub fn run(&mut self, sock: &UdpSocket, core: &mut ReaderCore) -> io::Result<()> {
        // The last wait was a linger sleep: what the drain after it found has waited long enough.
        let mut lingered = false;
        // The last wait was the idle one (ppoll with no timeout).
        let mut woke_from_idle = false;
        while !core.should_stop() {
            let got = self.drain_queued(sock, core);
            core.set_busy(got > BATCH);
            // Linger while datagrams flow: after a linger that found more, or as the trickle rule says after a
            // wake-up from idle. A lone datagram of a trickle goes at once (one wake-up each).
            let linger_next = got > 0
                && (lingered
                    || if woke_from_idle {
                        core.linger_after_idle_wake(got)
                    } else {
                        got > 1
                    });
            if lingered || !linger_next {
                core.flush();
            }
            let stop = core.stop_signal();
            if linger_next {
                lingered = true;
                woke_from_idle = false;
                // A drain that found more than a batch queued: the link is near what one reader takes; sleep a
                // quarter of the busy linger, so the receive buffer holds less while the reader sleeps.
                let nap = if got > BATCH { BUSY_LINGER / 4 } else { core.linger() };
                if stop.wait_timeout(Some(nap)) {
                    break;
                }
                continue;
            }
            lingered = false;
            match poll_readable(&[sock.as_raw_fd(), stop.fd()], None) {
                Some([_, true]) => break,
                Some(_) => {}
                None => {
                    // poll itself failed (it cannot for valid descriptors): back off instead of spinning.
                    if stop.wait_timeout(Some(POLL_INTERVAL)) {
                        break;
                    }
                }
            }
            woke_from_idle = true;
        }
        self.drain(sock, core);
        Ok(())
    }

    /// Receives what is queued on `sock` without waiting, [`BATCH`] datagrams per call, until a call returns fewer
    /// (the socket is empty) or shutdown is requested. A slab that fills on the way is handed over at once (by
    /// the core). Returns how many datagrams were received.
    fn drain_queued(&mut self, sock: &UdpSocket, core: &mut ReaderCore) -> usize {
        let mut got = 0;
        loop {
            match self.receive(sock, core, libc::MSG_DONTWAIT) {
                Ok(n) => {
                    got += n;
                    if n < BATCH || core.should_stop() {
                        return got;
                    }
                }
                Err(e) => {
                    match e.kind() {
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
                        _ => {
                            if let Some(suppressed) = RECV_ERROR_LOG.allow() {
                                error!(error = %e, suppressed, "recvmmsg failed");
                            }
                            // Not in a tight loop: the caller sleeps or polls next.
                            core.stop_signal().wait_timeout(Some(POLL_INTERVAL));
                        }
                    }
                    return got;
                }
            }
        }
    }

    /// Receives whatever is already queued on `sock` without waiting, for at most [`DRAIN_LIMIT`], then flushes.
    /// Used at shutdown, so datagrams that reached the socket before the signal are delivered; the limit keeps a
    /// sender that goes on sending from holding the shutdown (what it sends later stays unread, like after exit).
    pub fn drain(&mut self, sock: &UdpSocket, core: &mut ReaderCore) {
        let until = Instant::now() + DRAIN_LIMIT;
        while let Ok(n) = self.receive(sock, core, libc::MSG_DONTWAIT) {
            if n == 0 || Instant::now() >= until {
                break;
            }
        }
        core.flush();
    }

    /// One `recvmmsg` call; hands every datagram to `core`. Returns how many were received.
    fn receive(&mut self, sock: &UdpSocket, core: &mut ReaderCore, flags: libc::c_int) -> io::Result<usize> {
        let n = self.recv_batch(sock, flags)?;
        let now = now_unix_ns();
        for i in 0..n {
            if let Some((data, truncated, peer)) = self.datagram(i) {
                core.handle(data, truncated, peer, now);
            }
        }
        Ok(n)
    }

    /// One `recvmmsg` call into entries `0..n` of the buffers; returns `n`.
    fn recv_batch(&mut self, sock: &UdpSocket, flags: libc::c_int) -> io::Result<usize> {
        for m in &mut self.msgs[..self.filled] {
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        // SAFETY: `msgs` holds BATCH valid mmsghdr whose name and iovec pointers point into `names`, `iovecs` and
        // `bufs`, owned by self and not otherwise borrowed during the call; the lengths match the buffers.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        self.filled = n;
        Ok(n)
    }

    /// Entry `i` of the last [`Self::recv_batch`]: payload, whether it was cut to the buffer, sender (`None` for
    /// an address family other than IPv4/IPv6).
    fn datagram(&self, i: usize) -> Option<(&[u8], bool, std::net::SocketAddr)> {
        let slot = self.slot;
        let len = (self.msgs[i].msg_len as usize).min(slot);
        let truncated = self.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let peer = sockaddr_to_std(&self.names[i])?;
        Some((&self.bufs[i * slot..i * slot + len], truncated, peer))
    }
}

/// Converts a kernel-filled `sockaddr_storage` (AF_INET or AF_INET6) into a `SocketAddr`.
pub fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which is smaller and less aligned than
            // sockaddr_storage.
            let sin = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which fits in sockaddr_storage.
            let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bursts of varying size from senders of both address families, each received by one call: every entry of
    /// every call reports its own sender and payload, also where an earlier call filled more entries (those are
    /// the only ones reset before the next call) or a sender of the other family used the entry before.
    #[test]
    fn every_call_reports_each_datagrams_own_sender_and_payload_whatever_earlier_calls_filled() {
        let sock = UdpSocket::bind("[::]:0")
            .or_else(|_| UdpSocket::bind("127.0.0.1:0"))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let dual = sock.local_addr().unwrap().is_ipv6();
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let v6 = if dual { UdpSocket::bind("[::1]:0").ok() } else { None };
        let mut rx = RecvmmsgReceiver::new(1024);
        let bursts: [(usize, bool); 6] = [(5, false), (1, true), (BATCH, false), (2, true), (1, false), (3, false)];
        for (round, &(count, from_v6)) in bursts.iter().enumerate() {
            let sender = match (&v6, from_v6) {
                (Some(v6), true) => v6,
                _ => &v4,
            };
            let target = if sender.local_addr().unwrap().is_ipv6() {
                format!("[::1]:{port}")
            } else {
                format!("127.0.0.1:{port}")
            };
            for i in 0..count {
                sender
                    .send_to(format!("round {round} datagram {i}").as_bytes(), &target)
                    .unwrap();
            }
            // Loopback queues a datagram before send_to returns.
            let n = rx.recv_batch(&sock, libc::MSG_DONTWAIT).unwrap();
            assert_eq!(n, count, "round {round}");
            for i in 0..n {
                let (data, truncated, peer) = rx.datagram(i).unwrap();
                assert_eq!(data, format!("round {round} datagram {i}").as_bytes());
                assert!(!truncated);
                assert_eq!(
                    peer.port(),
                    sender.local_addr().unwrap().port(),
                    "round {round} entry {i}"
                );
                assert_eq!(
                    peer.ip().to_canonical(),
                    sender.local_addr().unwrap().ip(),
                    "round {round} entry {i}"
                );
            }
        }
    }
}
