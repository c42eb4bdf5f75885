//! io_uring receive: one multishot `recvmsg` per socket into a provided buffer ring (Linux 6.0+).
//!
//! # How it works
//! 1. A ring of [`RING_ENTRIES`] buffers is registered with the kernel (`IORING_REGISTER_PBUF_RING`). Each buffer
//!    holds the `io_uring_recvmsg_out` header, the sender's address and up to `maxMessageSize + 1` payload bytes.
//! 2. One `RecvMsgMulti` SQE is armed. For every datagram the kernel picks the next buffer, writes it and posts one
//!    CQE carrying the buffer id, with `IORING_CQE_F_MORE` while the request stays armed.
//! 3. The reader waits for CQEs (idle: with no timeout; a poll of the stop signal's descriptor completes at
//!    shutdown and wakes it), parses every completed datagram in place from its buffer into the slab, gives the
//!    buffers back by advancing the ring tail once per pass, hands the slab over when it is full, when nothing arrived while waiting, when no accepted event
//!    lingers, or when its [`LINGER`](super::LINGER) time is up (waiting meanwhile for `LINGER_WAKE_COMPLETIONS`
//!    datagrams at once rather than one, unless busy), and re-arms when a CQE arrives without `F_MORE` (for
//!    example `ENOBUFS` when all buffers were in use: the datagrams wait in the socket buffer meanwhile).
//!
//! The buffer memory is an anonymous mapping: reserved up front, resident only where datagrams were written.
//!
//! # Why not tokio-uring
//! tokio-uring 0.5 has no multishot receive and no buffer rings; its one-`recv_from`-per-datagram path measured ~3x
//! the CPU per datagram of this design here (BENCHMARKS.md).

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, IoUring};
use tracing::{error, trace};

use super::recvmmsg::sockaddr_to_std;
use super::{ReaderCore, POLL_INTERVAL};
use crate::telemetry::metrics::{now_unix_ns, RateLimit};

/// Buffers in the provided ring (a power of two, at most 32768).
pub const RING_ENTRIES: u16 = 256;
/// While a slab is lingering, the reader is woken only once this many datagrams are ready (or the linger time is
/// up). A quarter of the ring, so the kernel still has free buffers while we catch up.
const LINGER_WAKE_COMPLETIONS: usize = RING_ENTRIES as usize / 4;
const BUFFER_GROUP: u16 = 0;
const ARM_TOKEN: u64 = 1;
const CANCEL_TOKEN: u64 = 2;
/// A one-shot poll of the stop signal's descriptor: its completion wakes an idle reader at shutdown, so an idle
/// reader waits with no timeout at all.
const STOP_TOKEN: u64 = 3;

static RECV_ERROR_LOG: RateLimit = RateLimit::new(std::time::Duration::from_secs(10));

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory; the result is
        // checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing borrows the mapping past this point (the
        // ring that the kernel writes through is dropped first, see `UringReceiver`'s field order).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A socket's io_uring receiver. Field order matters: the ring is dropped (and with it every in-flight request)
/// before the buffer memory and the `msghdr` template it points into.
pub struct UringReceiver {
    ring: IoUring,
    fd: i32,
    entries: Mapping,
    buffers: Mapping,
    buf_size: usize,
    /// Our copy of the ring tail (the kernel reads the shared one).
    tail: u16,
    msghdr: Box<libc::msghdr>,
}

// SAFETY: the raw pointers inside refer to mappings owned by this value; it is moved to, and used on, one reader
// thread only.
unsafe impl Send for UringReceiver {}

impl std::fmt::Debug for UringReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringReceiver")
            .field("fd", &self.fd)
            .field("buf_size", &self.buf_size)
            .finish()
    }
}

impl UringReceiver {
    /// Sets up a ring for `sock`. The error says why io_uring is unusable here, for the fallback WARN.
    pub fn new(sock: &UdpSocket, max_message_size: usize) -> Result<UringReceiver, String> {
        if let Some((major, minor)) = kernel_version() {
            if major < 6 {
                return Err(format!("kernel {major}.{minor} lacks multishot recvmsg (needs 6.0)"));
            }
        }
        // SINGLE_ISSUER | DEFER_TASKRUN (6.1+): the kernel runs the receive work when we wait, and wakes us only
        // once the number of completions we wait for is ready; without it every datagram wakes the reader, which
        // makes waiting for several (see LINGER_WAKE_COMPLETIONS) pointless. The ring is built on the reader thread
        // that uses it, as SINGLE_ISSUER requires. Older kernels: a plain ring.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(64)
            .or_else(|_| IoUring::builder().build(64));
        let ring = ring.map_err(|e| setup_failure(&e))?;
        let name_len = size_of::<libc::sockaddr_storage>();
        // io_uring_recvmsg_out header (16 bytes) + the sender's address + payload up to maxMessageSize + 1.
        let buf_size = (16 + name_len + max_message_size + 1).next_multiple_of(64);
        let entries = Mapping::new(RING_ENTRIES as usize * size_of::<BufRingEntry>())
            .map_err(|e| format!("mmap for the buffer ring failed: {e}"))?;
        let buffers = Mapping::new(RING_ENTRIES as usize * buf_size)
            .map_err(|e| format!("mmap for receive buffers failed: {e}"))?;
        // SAFETY: `entries` is a page-aligned mapping of RING_ENTRIES BufRingEntry slots that lives as long as the
        // ring (field order); the kernel reads it until the ring fd is closed.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries.ptr as u64, RING_ENTRIES, BUFFER_GROUP, 0)
                .map_err(|e| format!("registering a provided buffer ring failed (needs 5.19+): {e}"))?;
        }
        // SAFETY: msghdr is plain old data; all-zero is valid. Only the name/control lengths matter for
        // RecvMsgMulti, and the kernel reads the template only while the request is armed (self owns it).
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_namelen = name_len as libc::socklen_t;
        let mut rx = UringReceiver {
            ring,
            fd: sock.as_raw_fd(),
            entries,
            buffers,
            buf_size,
            tail: 0,
            msghdr,
        };
        for bid in 0..RING_ENTRIES {
            rx.push_buffer(bid);
        }
        rx.publish_tail();
        rx.arm().map_err(|e| format!("arming multishot recvmsg failed: {e}"))?;
        Ok(rx)
    }

    /// Puts buffer `bid` at our tail position (not yet visible to the kernel; see [`Self::publish_tail`]).
    fn push_buffer(&mut self, bid: u16) {
        let mask = RING_ENTRIES - 1;
        let base = self.entries.ptr.cast::<BufRingEntry>();
        // SAFETY: `tail & mask` < RING_ENTRIES, so the slot is inside the `entries` mapping. The kernel only reads
        // slots between its head and the published tail, and this slot is past the published tail.
        let entry = unsafe { &mut *base.add((self.tail & mask) as usize) };
        // SAFETY: bid < RING_ENTRIES, so the buffer lies inside the `buffers` mapping.
        let addr = unsafe { self.buffers.ptr.add(bid as usize * self.buf_size) };
        entry.set_addr(addr as u64);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel (one release store).
    fn publish_tail(&self) {
        let base = self.entries.ptr.cast::<BufRingEntry>();
        // SAFETY: the tail field lives inside the first ring entry, in our mapping; the kernel reads it with
        // acquire semantics, so it must be written atomically (as AtomicU16, same size and alignment as u16).
        let tail = unsafe { &*BufRingEntry::tail(base).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Submits (or re-submits) the multishot recvmsg.
    fn arm(&mut self) -> io::Result<()> {
        let sqe = opcode::RecvMsgMulti::new(Fd(self.fd), &*self.msghdr, BUFFER_GROUP)
            .build()
            .user_data(ARM_TOKEN);
        // SAFETY: the SQE references `self.msghdr` (boxed, owned by self, outliving the ring's use of it) and the
        // registered buffer group; the fd stays open for the reader's lifetime.
        unsafe {
            self.ring
                .submission()
                .push(&sqe)
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
        self.ring.submit()?;
        Ok(())
    }

    /// Receives until shutdown, feeding `core`. An `Err` means io_uring failed at run time (the caller falls back).
    ///
    /// At shutdown the multishot request is cancelled and its last completions are processed, so no datagram is
    /// left in a ring buffer; what is still queued on the socket is the caller's to drain.
    pub fn run(&mut self, core: &mut ReaderCore) -> io::Result<()> {
        let mut received_any = false;
        let mut last_completions = 0;
        let stop_poll = opcode::PollAdd::new(Fd(core.stop_signal().fd()), libc::POLLIN as u32)
            .build()
            .user_data(STOP_TOKEN);
        // SAFETY: a poll SQE references no memory of ours; the stop signal's descriptor outlives the reader (the
        // core holds the signal).
        let stop_armed = unsafe { self.ring.submission().push(&stop_poll) }.is_ok();
        while !core.should_stop() {
            // Idle: sleep until the first datagram. With events pending, sleep until LINGER_WAKE_COMPLETIONS more
            // datagrams arrived or their linger time is up, whichever is first: the kernel does not wake us per
            // datagram meanwhile, so at low rates a reader wakes about once per linger period instead of once per
            // datagram (each wake-up costs a few microseconds of context switch on this kind of VM).
            // Busy (the last pass was large): do not wait for a count at all. Deferred receive work is counted
            // per armed request, not per datagram, so waiting for LINGER_WAKE_COMPLETIONS would sleep out the
            // whole linger time at high rates and cap a reader at one ring of datagrams per linger period.
            let busy = last_completions >= LINGER_WAKE_COMPLETIONS;
            let (want, timeout) = match core.linger_left(now_unix_ns()) {
                Some(left) if !busy => (LINGER_WAKE_COMPLETIONS, Some(left)),
                Some(left) => (1, Some(left)),
                // Idle: until a datagram or the stop poll completes (a timeout only if the poll could not be armed).
                None => (1, (!stop_armed).then_some(POLL_INTERVAL)),
            };
            self.wait_for(want, timeout)?;
            let pass = self.process_completions(core, &mut received_any)?;
            last_completions = pass.completions;
            if pass.ended {
                self.arm()?;
            }
            // Hand the slab over (and publish the counters) when the link went quiet (nothing arrived while
            // waiting), when no accepted event lingers (e.g. only rejected or excluded datagrams arrived: their
            // counts must not wait), or when the linger time is up; otherwise keep filling it.
            if pass.completions == 0 || core.linger_left(now_unix_ns()).is_none_or(|left| left.is_zero()) {
                core.flush();
            }
        }
        let cancel = opcode::AsyncCancel::new(ARM_TOKEN).build().user_data(CANCEL_TOKEN);
        // SAFETY: a cancel SQE references no memory of ours.
        unsafe {
            self.ring
                .submission()
                .push(&cancel)
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
        self.ring.submit()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            self.wait_for(1, Some(std::time::Duration::from_millis(20)))?;
            if self.process_completions(core, &mut received_any)?.ended {
                break;
            }
        }
        core.flush();
        Ok(())
    }

    /// Submits pending SQEs and waits up to `timeout` (`None`: no timeout) until `want` completions are ready.
    fn wait_for(&mut self, want: usize, timeout: Option<std::time::Duration>) -> io::Result<()> {
        let submitted = match timeout {
            Some(timeout) => {
                let ts = Timespec::new().sec(timeout.as_secs()).nsec(timeout.subsec_nanos());
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            None => self.ring.submitter().submit_and_wait(want),
        };
        match submitted {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Handles every completion available now and gives the buffers back to the ring.
    fn process_completions(&mut self, core: &mut ReaderCore, received_any: &mut bool) -> io::Result<Pass> {
        let now = now_unix_ns();
        let mut pass = Pass {
            ended: false,
            completions: 0,
        };
        // Split borrows: the completion queue borrows the ring; buffers and the template are separate fields.
        let (buffers_ptr, buf_size) = (self.buffers.ptr, self.buf_size);
        let msghdr = &*self.msghdr;
        let mut done: [u16; RING_ENTRIES as usize] = [0; RING_ENTRIES as usize];
        let mut ndone = 0;
        for cqe in self.ring.completion() {
            if cqe.user_data() != ARM_TOKEN {
                continue; // the cancel request's own completion
            }
            pass.completions += 1;
            if !cqueue::more(cqe.flags()) {
                pass.ended = true;
            }
            let res = cqe.result();
            if res < 0 {
                if res == -libc::EINVAL && !*received_any {
                    return Err(io::Error::from_raw_os_error(libc::EINVAL));
                }
                if res == -libc::ENOBUFS {
                    trace!("buffer ring exhausted; re-arming");
                } else if res != -libc::ECANCELED {
                    if let Some(suppressed) = RECV_ERROR_LOG.allow() {
                        error!(error = %io::Error::from_raw_os_error(-res), suppressed, "io_uring recvmsg failed");
                    }
                }
                continue;
            }
            let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                continue;
            };
            *received_any = true;
            // SAFETY: the kernel wrote `res` bytes into buffer `bid` (< RING_ENTRIES, inside the mapping) and hands
            // it to us until we push it back to the ring below; nothing else aliases it meanwhile.
            let buf = unsafe { std::slice::from_raw_parts(buffers_ptr.add(bid as usize * buf_size), res as usize) };
            if let Ok(out) = RecvMsgOut::parse(buf, msghdr) {
                let name = out.name_data();
                // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
                let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
                let n = name.len().min(size_of::<libc::sockaddr_storage>());
                // SAFETY: both regions are valid for `n` bytes and do not overlap (ss is on our stack).
                unsafe {
                    std::ptr::copy_nonoverlapping(name.as_ptr(), (&mut ss as *mut libc::sockaddr_storage).cast(), n)
                };
                if let Some(peer) = sockaddr_to_std(&ss) {
                    core.handle(out.payload_data(), out.is_payload_truncated(), peer, now);
                }
            }
            done[ndone] = bid;
            ndone += 1;
            if ndone == done.len() {
                break; // the rest stays in the completion queue for the next pass
            }
        }
        for &bid in &done[..ndone] {
            self.push_buffer(bid);
        }
        if ndone > 0 {
            self.publish_tail();
        }
        Ok(pass)
    }
}

/// What one pass over the completion queue found.
struct Pass {
    /// The multishot request terminated (a completion without `IORING_CQE_F_MORE`): re-arm, or at shutdown, done.
    ended: bool,
    /// Completions handled in this pass.
    completions: usize,
}

/// The running kernel's (major, minor), from uname.
fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: utsname is plain old data; uname fills it and we check the return code.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let release: Vec<u8> = uts.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    let release = String::from_utf8_lossy(&release);
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Why `io_uring_setup` failed, for the fallback WARN: the errno and its likely cause.
///
/// Container runtimes answer a syscall their seccomp profile blocks with their profile's default errno: Docker's
/// (Engine 25+) with EPERM, podman's (containers-common) with ENOSYS. EPERM outside a container comes from the
/// `kernel.io_uring_disabled` sysctl (2, or 1 for a process outside `kernel.io_uring_group`); ENOSYS from a kernel
/// built without io_uring.
fn setup_failure(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => "io_uring_setup: EPERM (likely a container's seccomp profile, e.g. Docker's default \
                              one; else the kernel.io_uring_disabled sysctl)"
            .into(),
        Some(libc::ENOSYS) => "io_uring_setup: ENOSYS (a seccomp profile that blocks io_uring, e.g. podman's \
                               default one, or a kernel without io_uring)"
            .into(),
        _ => format!("io_uring_setup failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_failure_names_the_likely_cause_per_errno() {
        let eperm = setup_failure(&io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(
            eperm,
            "io_uring_setup: EPERM (likely a container's seccomp profile, e.g. Docker's default one; \
             else the kernel.io_uring_disabled sysctl)"
        );
        let enosys = setup_failure(&io::Error::from_raw_os_error(libc::ENOSYS));
        assert_eq!(
            enosys,
            "io_uring_setup: ENOSYS (a seccomp profile that blocks io_uring, e.g. podman's default one, \
             or a kernel without io_uring)"
        );
        let other = setup_failure(&io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(
            other.starts_with("io_uring_setup failed: ") && other.contains("(os error 12)"),
            "{other}"
        );
    }
}
