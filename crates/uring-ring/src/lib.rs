//! One UDP socket's multishot `recvmsg` into an io_uring provided buffer ring (Linux 6.0+): the unsafe part that
//! sense-ingest's reader and loadgen's `drain --backend io_uring` share. Each keeps its own receive loop (when to
//! wait, what to do with a datagram, when to stop); this crate owns the memory the kernel writes into and the
//! rules that keep that sound.
//!
//! # How it works
//! 1. A ring of [`RingConfig::entries`] buffers is registered with the kernel (`IORING_REGISTER_PBUF_RING`). Each
//!    buffer holds the `io_uring_recvmsg_out` header, the sender's address (when asked for) and up to
//!    [`RingConfig::payload_bytes`] payload bytes.
//! 2. One `RecvMsgMulti` SQE is armed ([`MultishotRecv::arm`]). For every datagram the kernel picks the next
//!    buffer, writes it and posts one CQE carrying the buffer id, with `IORING_CQE_F_MORE` while the request stays
//!    armed.
//! 3. [`MultishotRecv::process`] hands every completed datagram to the caller in place, then gives the buffers back
//!    by advancing the ring tail once per pass. A CQE without `F_MORE` (for example `ENOBUFS` when all buffers were
//!    in use: the datagrams wait in the socket buffer meanwhile) ends the request: the caller re-arms.
//! 4. [`MultishotRecv::cancel`] cancels the request at shutdown and processes its last completions, so no datagram
//!    is left in a ring buffer.
//!
//! The buffer memory is an anonymous mapping: reserved up front, resident only where datagrams were written.
//!
//! # Invariants the unsafe code relies on
//! - The ring is dropped (closing its fd, which ends every in-flight request) before the buffer memory and the
//!   `msghdr` template the requests point into: [`MultishotRecv`]'s field order.
//! - A buffer id from a CQE is below `entries` (the kernel only hands out ids we pushed), and the buffer is ours
//!   from its CQE until we push it back; the slice handed to the caller does not outlive that.
//! - The tail shared with the kernel is written only with a release store, after the entries it publishes.
#![cfg(target_os = "linux")]

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, IoUring};

const ARM_TOKEN: u64 = 1;
const CANCEL_TOKEN: u64 = 2;
/// The one-shot poll of [`MultishotRecv::wake_on_readable`]: its completion only ends a wait.
const WAKE_TOKEN: u64 = 3;
/// `io_uring_recvmsg_out` is four u32s.
const RECVMSG_OUT_HEADER: usize = 16;
/// Submission queue entries: one armed request and a cancel need far fewer.
const SQ_ENTRIES: u32 = 64;

/// How `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (6.1+) is used. With it the kernel runs the
/// receive work only when the owner waits, and wakes it only once the number of completions it waits for is ready;
/// the ring must then be used only by the thread that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeferTaskrun {
    /// A plain ring.
    Off,
    /// Ask for it; on kernels that refuse, a plain ring.
    IfSupported,
    /// Ask for it; fail when refused.
    Required,
}

/// The shape of one receiver's ring.
#[derive(Clone, Copy, Debug)]
pub struct RingConfig {
    /// Buffers in the provided ring (a power of two, at most 32768).
    pub entries: u16,
    /// The provided-buffer group id the request selects from.
    pub buffer_group: u16,
    /// Payload bytes a buffer holds at least (buffers are rounded up to 64 bytes); a datagram longer than the
    /// buffer holds is cut and reported as truncated.
    pub payload_bytes: usize,
    /// Whether the kernel writes the sender's address (a `sockaddr_storage` per buffer) for [`Datagram::peer`].
    pub peer_address: bool,
    /// Completion queue entries; `None`: the io_uring default (twice the submission queue).
    pub cq_entries: Option<u32>,
    /// See [`DeferTaskrun`].
    pub defer_taskrun: DeferTaskrun,
}

/// Why a receiver could not be set up. The `Display` text says why io_uring is unusable here, for the caller's
/// fallback message.
#[derive(Debug)]
pub enum SetupError {
    /// The kernel predates multishot recvmsg.
    KernelTooOld {
        /// Major version from uname.
        major: u32,
        /// Minor version from uname.
        minor: u32,
    },
    /// `io_uring_setup` failed (see [`describe_setup_error`]).
    Setup(io::Error),
    /// Mapping the buffer ring (`ring: true`) or the receive buffers failed.
    Mmap {
        /// Which of the two mappings.
        ring: bool,
        /// The OS error.
        source: io::Error,
    },
    /// `IORING_REGISTER_PBUF_RING` failed.
    Register(io::Error),
    /// Submitting the multishot recvmsg failed.
    Arm(io::Error),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::KernelTooOld { major, minor } => {
                write!(f, "kernel {major}.{minor} lacks multishot recvmsg (needs 6.0)")
            }
            SetupError::Setup(e) => f.write_str(&describe_setup_error(e)),
            SetupError::Mmap { ring: true, source } => write!(f, "mmap for the buffer ring failed: {source}"),
            SetupError::Mmap { ring: false, source } => write!(f, "mmap for receive buffers failed: {source}"),
            SetupError::Register(e) => write!(f, "registering a provided buffer ring failed (needs 5.19+): {e}"),
            SetupError::Arm(e) => write!(f, "arming multishot recvmsg failed: {e}"),
        }
    }
}

impl std::error::Error for SetupError {}

impl From<SetupError> for io::Error {
    fn from(e: SetupError) -> io::Error {
        let kind = match &e {
            SetupError::KernelTooOld { .. } => io::ErrorKind::Unsupported,
            SetupError::Setup(s)
            | SetupError::Mmap { source: s, .. }
            | SetupError::Register(s)
            | SetupError::Arm(s) => s.kind(),
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Why `io_uring_setup` failed, for a fallback message: the errno and its likely cause.
///
/// Container runtimes answer a syscall their seccomp profile blocks with their profile's default errno: Docker's
/// (Engine 25+) with EPERM, podman's (containers-common) with ENOSYS. EPERM outside a container comes from the
/// `kernel.io_uring_disabled` sysctl (2, or 1 for a process outside `kernel.io_uring_group`); ENOSYS from a kernel
/// built without io_uring.
pub fn describe_setup_error(e: &io::Error) -> String {
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

/// The running kernel's (major, minor), from uname.
pub fn kernel_version() -> Option<(u32, u32)> {
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

/// Whether this kernel can set up a ring (`multishot: false`), or also a provided buffer ring with multishot
/// recvmsg (`multishot: true`); the error says why not.
pub fn probe(multishot: bool) -> Result<(), String> {
    if let Some((major, minor)) = kernel_version() {
        if multishot && major < 6 {
            return Err(SetupError::KernelTooOld { major, minor }.to_string());
        }
    }
    let ring = IoUring::new(8).map_err(|e| describe_setup_error(&e))?;
    let mut probe = io_uring::Probe::new();
    if ring.submitter().register_probe(&mut probe).is_ok() && !probe.is_supported(opcode::RecvMsg::CODE) {
        return Err("the kernel's io_uring does not support IORING_OP_RECVMSG".into());
    }
    if multishot {
        const GROUP: u16 = 7;
        let entries = Mapping::new(8 * size_of::<BufRingEntry>()).map_err(|e| format!("mmap failed: {e}"))?;
        // SAFETY: `entries` is a page-aligned mapping of 8 ring entries that outlives the registration (it is
        // unregistered below, before the mapping is dropped).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries.ptr as u64, 8, GROUP, 0)
                .map_err(|e| SetupError::Register(e).to_string())?;
        }
        let _ = ring.submitter().unregister_buf_ring(GROUP);
    }
    Ok(())
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
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and nothing uses the mapping any more (the ring that
        // the kernel writes through is dropped first: see `MultishotRecv`'s field order).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// One received datagram, in place in its ring buffer (valid only inside the [`MultishotRecv::process`] callback).
#[derive(Debug)]
pub struct Datagram<'a> {
    /// The payload (cut at the buffer's end when [`Self::truncated`]).
    pub payload: &'a [u8],
    /// The datagram was longer than the buffer held.
    pub truncated: bool,
    name: &'a [u8],
}

impl Datagram<'_> {
    /// The sender's address as the kernel wrote it (all zero, i.e. no family, unless
    /// [`RingConfig::peer_address`] was set).
    pub fn peer(&self) -> libc::sockaddr_storage {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let n = self.name.len().min(size_of::<libc::sockaddr_storage>());
        // SAFETY: both regions are valid for `n` bytes and do not overlap (ss is on our stack).
        unsafe {
            std::ptr::copy_nonoverlapping(self.name.as_ptr(), (&mut ss as *mut libc::sockaddr_storage).cast(), n)
        };
        ss
    }
}

/// One completion of the multishot request.
#[derive(Debug)]
pub enum Completion<'a> {
    /// A datagram.
    Datagram(Datagram<'a>),
    /// The request failed with this errno (`ENOBUFS`: every buffer was in use; `ECANCELED`: cancelled).
    Failed(i32),
}

/// What one pass over the completion queue found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pass {
    /// The multishot request terminated (a completion without `IORING_CQE_F_MORE`): re-arm, or at shutdown, done.
    pub ended: bool,
    /// Completions of the request handled in this pass (datagrams and failures).
    pub completions: usize,
}

/// One socket's multishot receiver. Field order matters: the ring (and with it every request still in flight) is
/// dropped before the buffer memory and the `msghdr` template it points into.
pub struct MultishotRecv {
    ring: IoUring,
    fd: i32,
    entries: Mapping,
    buffers: Mapping,
    ring_entries: u16,
    buffer_group: u16,
    buf_size: usize,
    /// Our copy of the ring tail (the kernel reads the shared one).
    tail: u16,
    msghdr: Box<libc::msghdr>,
    /// Buffer ids handled in the current pass, pushed back at its end (capacity `ring_entries`).
    done: Vec<u16>,
}

// SAFETY: the raw pointers inside refer to mappings owned by this value; it is moved to, and used on, one thread at
// a time (with DEFER_TASKRUN: built on the thread that uses it).
unsafe impl Send for MultishotRecv {}

impl std::fmt::Debug for MultishotRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultishotRecv")
            .field("fd", &self.fd)
            .field("buf_size", &self.buf_size)
            .finish()
    }
}

impl MultishotRecv {
    /// Sets up a ring with a registered buffer ring for `sock` and arms the multishot recvmsg. `sock` must stay open
    /// while the receiver lives.
    pub fn new(sock: &UdpSocket, cfg: &RingConfig) -> Result<MultishotRecv, SetupError> {
        assert!(
            cfg.entries.is_power_of_two() && cfg.entries <= 32768,
            "entries: a power of two up to 32768"
        );
        if let Some((major, minor)) = kernel_version() {
            if major < 6 {
                return Err(SetupError::KernelTooOld { major, minor });
            }
        }
        let build = |defer: bool| {
            let mut builder = IoUring::builder();
            if let Some(cq) = cfg.cq_entries {
                builder.setup_cqsize(cq);
            }
            if defer {
                builder.setup_single_issuer().setup_defer_taskrun();
            }
            builder.build(SQ_ENTRIES)
        };
        let ring = match cfg.defer_taskrun {
            DeferTaskrun::Off => build(false),
            DeferTaskrun::Required => build(true),
            DeferTaskrun::IfSupported => build(true).or_else(|_| build(false)),
        }
        .map_err(SetupError::Setup)?;
        let name_len = if cfg.peer_address {
            size_of::<libc::sockaddr_storage>()
        } else {
            0
        };
        let buf_size = (RECVMSG_OUT_HEADER + name_len + cfg.payload_bytes).next_multiple_of(64);
        let entries = Mapping::new(usize::from(cfg.entries) * size_of::<BufRingEntry>())
            .map_err(|source| SetupError::Mmap { ring: true, source })?;
        let buffers = Mapping::new(usize::from(cfg.entries) * buf_size)
            .map_err(|source| SetupError::Mmap { ring: false, source })?;
        // SAFETY: `entries` is a page-aligned mapping of `cfg.entries` BufRingEntry slots that lives as long as the
        // ring (field order); the kernel reads it until the ring fd is closed.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries.ptr as u64, cfg.entries, cfg.buffer_group, 0)
                .map_err(SetupError::Register)?;
        }
        // SAFETY: msghdr is plain old data and all-zero is valid: no name, no control data. RecvMsgMulti reads only
        // the name and control lengths from the template, while the request is armed (self owns the box).
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_namelen = name_len as libc::socklen_t;
        let mut rx = MultishotRecv {
            ring,
            fd: sock.as_raw_fd(),
            entries,
            buffers,
            ring_entries: cfg.entries,
            buffer_group: cfg.buffer_group,
            buf_size,
            tail: 0,
            msghdr,
            done: Vec::with_capacity(usize::from(cfg.entries)),
        };
        for bid in 0..cfg.entries {
            rx.push_buffer(bid);
        }
        rx.publish_tail();
        rx.arm().map_err(SetupError::Arm)?;
        Ok(rx)
    }

    /// Puts buffer `bid` at our tail position (visible to the kernel after [`Self::publish_tail`]).
    fn push_buffer(&mut self, bid: u16) {
        let mask = self.ring_entries - 1;
        let base = self.entries.ptr.cast::<BufRingEntry>();
        // SAFETY: `tail & mask` < ring_entries, so the slot lies inside the `entries` mapping. The kernel reads
        // only slots between its head and the published tail, and this one is past the published tail.
        let entry = unsafe { &mut *base.add(usize::from(self.tail & mask)) };
        // SAFETY: bid < ring_entries (we only push ids we created or the kernel handed back), so the buffer lies
        // inside the `buffers` mapping.
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

    /// Submits (or re-submits, after a [`Pass::ended`]) the multishot recvmsg.
    pub fn arm(&mut self) -> io::Result<()> {
        let sqe = opcode::RecvMsgMulti::new(Fd(self.fd), &*self.msghdr, self.buffer_group)
            .build()
            .user_data(ARM_TOKEN);
        // SAFETY: the SQE points at `self.msghdr` (boxed, owned by self, outliving the ring's use of it) and at
        // the registered buffer group; the socket fd stays open while the receiver lives (see `new`).
        unsafe {
            self.ring
                .submission()
                .push(&sqe)
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
        self.ring.submit()?;
        Ok(())
    }

    /// Arms a one-shot poll of `fd` for readability (e.g. a stop signal's descriptor): once `fd` is readable, its
    /// completion ends whatever [`Self::wait_for`] is waiting, so a caller can wait with no timeout at all and
    /// still notice it. The completion is not a datagram: [`Self::process`] skips it. `fd` must stay open while
    /// the poll is armed (until it completes or the ring is dropped).
    pub fn wake_on_readable(&mut self, fd: std::os::fd::RawFd) -> io::Result<()> {
        let poll = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(WAKE_TOKEN);
        // SAFETY: a poll SQE references no memory of ours; the caller keeps `fd` open while it is armed.
        unsafe {
            self.ring
                .submission()
                .push(&poll)
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
        self.ring.submit()?;
        Ok(())
    }

    /// Submits pending SQEs and waits until `want` completions are ready, at most `timeout` (`None`: no limit; a
    /// timeout or a signal is not an error).
    pub fn wait_for(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
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

    /// Hands every completion available now to `on` (at most one ring's worth; the rest waits for the next pass)
    /// and gives the buffers back with one tail store. A datagram that does not parse as a recvmsg result is
    /// skipped. An `Err` from `on` ends the pass and is returned (the buffers are given back first).
    pub fn process(&mut self, mut on: impl FnMut(Completion<'_>) -> io::Result<()>) -> io::Result<Pass> {
        let mut pass = Pass::default();
        // Split borrows: the completion queue borrows the ring; buffers and the template are separate fields.
        let (buffers_ptr, buf_size, cap) = (self.buffers.ptr, self.buf_size, usize::from(self.ring_entries));
        let msghdr = &*self.msghdr;
        let done = &mut self.done;
        done.clear();
        let mut result = Ok(());
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
                if let Err(e) = on(Completion::Failed(-res)) {
                    result = Err(e);
                    break;
                }
                continue;
            }
            let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                continue;
            };
            // SAFETY: the kernel wrote `res` bytes into buffer `bid` (< ring_entries, inside the mapping), and the
            // buffer is ours until we push it back below; nothing else aliases it meanwhile, and the slice does not
            // outlive this iteration.
            let buf = unsafe { std::slice::from_raw_parts(buffers_ptr.add(usize::from(bid) * buf_size), res as usize) };
            done.push(bid);
            if let Ok(out) = RecvMsgOut::parse(buf, msghdr) {
                let d = Datagram {
                    payload: out.payload_data(),
                    truncated: out.is_payload_truncated(),
                    name: out.name_data(),
                };
                if let Err(e) = on(Completion::Datagram(d)) {
                    result = Err(e);
                    break;
                }
            }
            if done.len() == cap {
                break; // the rest stays in the completion queue for the next pass
            }
        }
        let mut done = std::mem::take(&mut self.done);
        for &bid in &done {
            self.push_buffer(bid);
        }
        if !done.is_empty() {
            self.publish_tail();
        }
        done.clear();
        self.done = done;
        result.map(|()| pass)
    }

    /// Cancels the multishot request and hands its last completions to `on` (waiting up to two seconds for the
    /// request to end), so no datagram is left in a ring buffer; what is still queued on the socket is the
    /// caller's to drain.
    pub fn cancel(&mut self, mut on: impl FnMut(Completion<'_>) -> io::Result<()>) -> io::Result<()> {
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
            self.wait_for(1, Some(Duration::from_millis(20)))?;
            if self.process(&mut on)?.ended {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_failure_names_the_likely_cause_per_errno() {
        let eperm = describe_setup_error(&io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(
            eperm,
            "io_uring_setup: EPERM (likely a container's seccomp profile, e.g. Docker's default one; \
             else the kernel.io_uring_disabled sysctl)"
        );
        let enosys = describe_setup_error(&io::Error::from_raw_os_error(libc::ENOSYS));
        assert_eq!(
            enosys,
            "io_uring_setup: ENOSYS (a seccomp profile that blocks io_uring, e.g. podman's default one, \
             or a kernel without io_uring)"
        );
        let other = describe_setup_error(&io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(
            other.starts_with("io_uring_setup failed: ") && other.contains("(os error 12)"),
            "{other}"
        );
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v769"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }

    fn config(peer_address: bool) -> RingConfig {
        RingConfig {
            entries: 8,
            buffer_group: 3,
            payload_bytes: 16,
            peer_address,
            cq_entries: None,
            defer_taskrun: DeferTaskrun::IfSupported,
        }
    }

    /// Receives `n` datagrams (or gives up after two seconds), returning (payload, truncated, port) of each.
    fn receive(rx: &mut MultishotRecv, n: usize) -> Vec<(Vec<u8>, bool, u16)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < n && Instant::now() < deadline {
            rx.wait_for(1, Some(Duration::from_millis(20))).unwrap();
            let pass = rx
                .process(|c| {
                    if let Completion::Datagram(d) = c {
                        let ss = d.peer();
                        let port = if i32::from(ss.ss_family) == libc::AF_INET {
                            // SAFETY: the family says this storage holds a sockaddr_in.
                            let sin = unsafe { &*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                            u16::from_be(sin.sin_port)
                        } else {
                            0
                        };
                        got.push((d.payload.to_vec(), d.truncated, port));
                    }
                    Ok(())
                })
                .unwrap();
            if pass.ended {
                rx.arm().unwrap();
            }
        }
        got
    }

    #[test]
    fn receives_datagrams_with_their_sender_and_reuses_the_buffers() {
        if probe(true).is_err() {
            eprintln!("io_uring with buffer rings unavailable here; skipping");
            return;
        }
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rx = MultishotRecv::new(&sock, &config(true)).unwrap();
        // Three rounds of the 8-buffer ring: every buffer is given back and used again.
        for round in 0..3 {
            let sent: Vec<Vec<u8>> = (0..8).map(|i| format!("r{round}d{i}").into_bytes()).collect();
            for d in &sent {
                tx.send_to(d, sock.local_addr().unwrap()).unwrap();
            }
            let got = receive(&mut rx, 8);
            let want: Vec<(Vec<u8>, bool, u16)> = sent
                .iter()
                .map(|d| (d.clone(), false, tx.local_addr().unwrap().port()))
                .collect();
            assert_eq!(got, want);
        }
        // Longer than a buffer (16 payload bytes rounded up with the header and address to 192): cut and flagged.
        tx.send_to(&[b'x'; 200], sock.local_addr().unwrap()).unwrap();
        let got = receive(&mut rx, 1);
        assert_eq!(got.len(), 1);
        let (payload, truncated, _) = &got[0];
        assert!(
            *truncated && payload.len() >= 16 && payload.len() < 200,
            "{} bytes",
            payload.len()
        );
        rx.cancel(|_| Ok(())).unwrap();
    }

    #[test]
    fn without_the_peer_address_the_sender_is_unknown() {
        if probe(true).is_err() {
            eprintln!("io_uring with buffer rings unavailable here; skipping");
            return;
        }
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rx = MultishotRecv::new(&sock, &config(false)).unwrap();
        tx.send_to(b"hello", sock.local_addr().unwrap()).unwrap();
        assert_eq!(receive(&mut rx, 1), vec![(b"hello".to_vec(), false, 0)]);
    }
}
