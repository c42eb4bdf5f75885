//! Fault injection for the spool's unit tests (compiled only under `cfg(test)`): a disk that runs out of space,
//! and a crash (the process aborts, as under SIGKILL: nothing after that point runs, the page cache survives) at
//! the N-th step of the spool's multi-step changes. State is per thread, so parallel tests do not see each other's
//! faults.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Write};

thread_local! {
    /// Bytes the disk still takes; `None`: unlimited.
    static SPACE: Cell<Option<u64>> = const { Cell::new(None) };
    /// Abort at this step; `None`: never.
    static CRASH_AT: Cell<Option<u64>> = const { Cell::new(None) };
    /// Steps passed since [`crash_at`].
    static STEPS: Cell<u64> = const { Cell::new(0) };
}

/// Limits what later writes on this thread may add (`None`: space returned).
pub(crate) fn set_space(bytes: Option<u64>) {
    SPACE.set(bytes);
}

/// Aborts the process at step `step` (counting from 1) of what this thread does next; `None` disarms.
pub(crate) fn crash_at(step: Option<u64>) {
    STEPS.set(0);
    CRASH_AT.set(step);
}

/// Steps passed since [`crash_at`].
pub(crate) fn steps() -> u64 {
    STEPS.get()
}

/// One step; aborts if it is the chosen one.
pub(super) fn crash_point() {
    let n = STEPS.get() + 1;
    STEPS.set(n);
    if CRASH_AT.get() == Some(n) {
        std::process::abort();
    }
}

/// `write_all`, within the space left (a full disk writes what fits, then fails with `ENOSPC`); a crash at this
/// step writes half of `buf` first (a torn write).
pub(super) fn write_all(f: &mut File, buf: &[u8]) -> io::Result<()> {
    let n = STEPS.get() + 1;
    if CRASH_AT.get() == Some(n) {
        let _ = f.write_all(&buf[..buf.len() / 2]);
        std::process::abort();
    }
    STEPS.set(n);
    if let Some(space) = SPACE.get() {
        let fits = (buf.len() as u64).min(space);
        SPACE.set(Some(space - fits));
        f.write_all(&buf[..fits as usize])?;
        if fits < buf.len() as u64 {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        return Ok(());
    }
    f.write_all(buf)
}
