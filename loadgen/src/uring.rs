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
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, IoUring};

use crate::recv::{ThreadCounters, RECV_TIMEOUT, SLOT_BYTES};

/// Buffers in the provided ring (a power of two, at most 32768).
pub const RING_ENTRIES: u16 = 1024;
/// Receives in flight per tokio-uring socket.
pub const TOKIO_IN_FLIGHT: usize = 64;
const BUFFER_GROUP: u16 = 7;
const ARM_TOKEN: u64 = 1;
const CANCEL_TOKEN: u64 = 2;
/// `io_uring_recvmsg_out` is four u32s.
const RECVMSG_OUT_HEADER: usize = 16;

/// Why io_uring (with what `backend` needs) is not usable here, or `Ok`.
///
/// `multishot`: also require a provided buffer ring and multishot recvmsg (kernel 6.0+), as `io_uring` does;
/// `tokio-uring` needs only a working `io_uring_setup` (its README says 5.11+).
pub fn probe(multishot: bool) -> Result<(), String> {
    if let Some((major, minor)) = kernel_version() {
        if multishot && (major, minor) < (6, 0) {
            return Err(format!("kernel {major}.{minor} lacks multishot recvmsg (needs 6.0)"));
        }
        if (major, minor) < (5, 11) {
            return Err(format!(
                "kernel {major}.{minor} is too old for tokio-uring (needs 5.11)"
            ));
        }
    }
    let ring = IoUring::new(8).map_err(describe_setup_error)?;
    let mut probe = io_uring::Probe::new();
    if ring.submitter().register_probe(&mut probe).is_ok() && !probe.is_supported(opcode::RecvMsg::CODE) {
        return Err("the kernel's io_uring does not support IORING_OP_RECVMSG".into());
    }
    if multishot {
        let entries = Mapping::new(8 * size_of::<BufRingEntry>()).map_err(|e| format!("mmap failed: {e}"))?;
        // SAFETY: `entries` is a page-aligned mapping of 8 ring entries that outlives the registration (it is
        // unregistered below, before the mapping is dropped).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries.ptr as u64, 8, BUFFER_GROUP, 0)
                .map_err(|e| format!("registering a provided buffer ring failed (needs 5.19+): {e}"))?;
        }
        let _ = ring.submitter().unregister_buf_ring(BUFFER_GROUP);
    }
    Ok(())
}

fn describe_setup_error(e: io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => "io_uring_setup: EPERM (kernel.io_uring_disabled sysctl or missing privilege)".into(),
        Some(libc::ENOSYS) => {
            "io_uring_setup: ENOSYS (blocked by seccomp, e.g. Docker's default profile, or not built in)".into()
        }
        _ => format!("io_uring_setup failed: {e}"),
    }
}

/// The running kernel's (major, minor), from uname.
fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname; uname fills it and we check the return code.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let release: Vec<u8> = uts.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    parse_kernel_version(&String::from_utf8_lossy(&release))
}

/// `"6.18.44-fc"` -> `(6, 18)`.
fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// An anonymous private mapping (page aligned, resident only where touched), unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping without an address hint touches no existing memory; the result is
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
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and nothing uses the mapping any more (the ring
        // that the kernel writes through is dropped first: see `MultishotRx`'s field order).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// One socket's multishot receiver. Field order matters: the ring (and with it every request still in flight)
/// is dropped before the buffer memory and the `msghdr` template it points into.
pub struct MultishotRx {
    ring: IoUring,
    fd: i32,
    entries: Mapping,
    buffers: Mapping,
    buf_size: usize,
    /// Our copy of the ring tail (the kernel reads the shared one).
    tail: u16,
    msghdr: Box<libc::msghdr>,
}

// SAFETY: the raw pointers inside refer to mappings owned by this value; it is built on the starting thread,
// then moved to one receiver thread and used only there.
unsafe impl Send for MultishotRx {}

impl std::fmt::Debug for MultishotRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultishotRx")
            .field("fd", &self.fd)
            .field("buf_size", &self.buf_size)
            .finish()
    }
}

impl MultishotRx {
    /// Sets up a ring with a registered buffer ring for `sock` and arms the multishot recvmsg.
    ///
    /// `defer_taskrun`: `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (6.1+); the ring must then be
    /// used only by the thread that creates it.
    pub fn new(sock: &UdpSocket, defer_taskrun: bool) -> io::Result<MultishotRx> {
        // The completion queue holds a completion for every buffer (a multishot request ends when it cannot post).
        let mut builder = IoUring::builder();
        builder.setup_cqsize(2 * u32::from(RING_ENTRIES));
        if defer_taskrun {
            builder.setup_single_issuer().setup_defer_taskrun();
        }
        let ring = builder
            .build(64)
            .map_err(|e| io::Error::new(e.kind(), describe_setup_error(e)))?;
        let buf_size = (RECVMSG_OUT_HEADER + SLOT_BYTES).next_multiple_of(64);
        let entries = Mapping::new(usize::from(RING_ENTRIES) * size_of::<BufRingEntry>())?;
        let buffers = Mapping::new(usize::from(RING_ENTRIES) * buf_size)?;
        // SAFETY: `entries` is a page-aligned mapping of RING_ENTRIES BufRingEntry slots that lives as long as the
        // ring (field order); the kernel reads it until the ring fd is closed.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries.ptr as u64, RING_ENTRIES, BUFFER_GROUP, 0)?;
        }
        // SAFETY: msghdr is plain old data and all-zero is valid: no name, no control data. RecvMsgMulti reads only
        // the name and control lengths from the template, while the request is armed (self owns the box).
        let msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        let mut rx = MultishotRx {
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
        rx.arm()?;
        Ok(rx)
    }

    /// Puts buffer `bid` at our tail position (visible to the kernel after [`Self::publish_tail`]).
    fn push_buffer(&mut self, bid: u16) {
        let mask = RING_ENTRIES - 1;
        let base = self.entries.ptr.cast::<BufRingEntry>();
        // SAFETY: `tail & mask` < RING_ENTRIES, so the slot lies inside the `entries` mapping. The kernel reads
        // only slots between its head and the published tail, and this one is past the published tail.
        let entry = unsafe { &mut *base.add(usize::from(self.tail & mask)) };
        // SAFETY: bid < RING_ENTRIES, so the buffer lies inside the `buffers` mapping.
        let addr = unsafe { self.buffers.ptr.add(usize::from(bid) * self.buf_size) };
        entry.set_addr(addr as u64);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel (one release store).
    fn publish_tail(&self) {
        let base = self.entries.ptr.cast::<BufRingEntry>();
        // SAFETY: the tail field overlays the first ring entry, inside our mapping; the kernel reads it with
        // acquire semantics, so it is written as an AtomicU16 (same size and alignment as u16).
        let tail = unsafe { &*BufRingEntry::tail(base).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Submits (or re-submits) the multishot recvmsg.
    fn arm(&mut self) -> io::Result<()> {
        let sqe = opcode::RecvMsgMulti::new(Fd(self.fd), &*self.msghdr, BUFFER_GROUP)
            .build()
            .user_data(ARM_TOKEN);
        // SAFETY: the SQE points at `self.msghdr` (boxed, owned by self, outliving the ring's use of it) and at
        // the registered buffer group; the socket fd stays open while the receiver runs.
        unsafe {
            self.ring
                .submission()
                .push(&sqe)
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
        self.ring.submit()?;
        Ok(())
    }

    /// Submits pending SQEs and waits up to `timeout` for at least one completion.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ts = Timespec::new().sec(timeout.as_secs()).nsec(timeout.subsec_nanos());
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Handles every completion available now, gives the buffers back, and returns (datagrams, bytes, ended).
    fn pass(&mut self) -> io::Result<(u64, u64, bool)> {
        let (buffers_ptr, buf_size) = (self.buffers.ptr, self.buf_size);
        let msghdr = &*self.msghdr;
        let mut done = [0u16; RING_ENTRIES as usize];
        let mut ndone = 0;
        let (mut n, mut bytes, mut ended) = (0u64, 0u64, false);
        for cqe in self.ring.completion() {
            if cqe.user_data() != ARM_TOKEN {
                continue; // the cancel request's own completion
            }
            if !cqueue::more(cqe.flags()) {
                ended = true;
            }
            let res = cqe.result();
            if res < 0 {
                match -res {
                    libc::ENOBUFS | libc::ECANCELED | libc::EINTR => {}
                    e => return Err(io::Error::from_raw_os_error(e)),
                }
                continue;
            }
            let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                continue;
            };
            // SAFETY: the kernel wrote `res` bytes into buffer `bid` (< RING_ENTRIES, inside the mapping), and the
            // buffer is ours until we push it back to the ring below; nothing else aliases it meanwhile.
            let buf = unsafe { std::slice::from_raw_parts(buffers_ptr.add(usize::from(bid) * buf_size), res as usize) };
            if let Ok(out) = RecvMsgOut::parse(buf, msghdr) {
                n += 1;
                bytes += out.payload_data().len() as u64;
            }
            done[ndone] = bid;
            ndone += 1;
            if ndone == done.len() {
                break; // the rest waits in the completion queue for the next pass
            }
        }
        for &bid in &done[..ndone] {
            self.push_buffer(bid);
        }
        if ndone > 0 {
            self.publish_tail();
        }
        Ok((n, bytes, ended))
    }

    /// Receives and counts until `stop`, then cancels the request and waits for its last completion.
    pub fn run(mut self, counters: &ThreadCounters, stop: &AtomicBool, epoch: Instant) -> io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            self.wait(RECV_TIMEOUT)?;
            let (n, bytes, ended) = self.pass()?;
            if n > 0 {
                counters.record(n, bytes, epoch);
            }
            if ended {
                self.arm()?;
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
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            self.wait(Duration::from_millis(20))?;
            if self.pass()?.2 {
                break;
            }
        }
        Ok(())
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
        .map_err(|e| io::Error::new(e.kind(), describe_setup_error(e)))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v769"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }
}
