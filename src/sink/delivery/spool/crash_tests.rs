//! The spool under crashes: a child process runs a fixed workload (appends across several segments, deliveries,
//! prepends, reopens) and aborts at step N of the spool's multi-step changes (see `faults`), for every N; a
//! second child may then crash again while opening what the first left. The parent reopens the folder and checks
//! that every record acknowledged as spooled (and not acknowledged as delivered) is read back, once, in order,
//! and that the spool's event count matches what it reads back.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::{faults, EncodedBatch, Spool};

/// Big enough to spread the workload over several segments (the smallest segment is 64 KiB).
const RECORD_BYTES: usize = 6000;
const CAP: u64 = 1 << 30;

/// A temporary folder in memory when the machine has one: the workload fsyncs hundreds of times per run, which
/// costs nothing on tmpfs and proves nothing more on a disk (a crash here is a process abort, not a power loss).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// A one-event record carrying `seq`.
fn rec(seq: u64) -> EncodedBatch {
    let mut b = EncodedBatch::default();
    b.bytes.extend_from_slice(format!("{seq:08}").as_bytes());
    b.bytes.resize(RECORD_BYTES, b'x');
    b.ends.push(b.bytes.len() as u32);
    b
}

fn seq_of(b: &EncodedBatch) -> u64 {
    std::str::from_utf8(&b.bytes[..8]).unwrap().parse().unwrap()
}

/// Appends `kind seq` to the acknowledgement log (one `write(2)`: it survives the abort that may follow).
fn ack(log: &mut File, kind: char, seq: u64) {
    log.write_all(format!("{kind} {seq}\n").as_bytes()).unwrap();
}

/// Peeks the head record and consumes it, logging `c` (may be consumed) before and `p` (consumed) after.
fn consume(s: &mut Spool, log: &mut File) {
    let r = s.peek().unwrap().unwrap();
    ack(log, 'c', seq_of(&r));
    s.pop(&r).unwrap();
    ack(log, 'p', seq_of(&r));
}

/// The workload. Every record is acknowledged (`a`) once the call that spooled it returned, and `p` once the
/// call that consumed it returned. Records are numbered in the order they must come back.
fn workload(dir: &Path, log: &mut File) {
    let mut s = Spool::open(dir, CAP).unwrap();
    for seq in 100..130 {
        s.append(&rec(seq)).unwrap();
        ack(log, 'a', seq);
    }
    // Across the first segment's end.
    for _ in 0..12 {
        consume(&mut s, log);
    }
    // Batches that were in memory at shutdown: older than everything spooled.
    s.prepend(&(10..15).map(rec).collect::<Vec<_>>()).unwrap();
    (10..15).for_each(|seq| ack(log, 'a', seq));
    s.sync().unwrap();
    drop(s);

    let mut s = Spool::open(dir, CAP).unwrap();
    for seq in 130..140 {
        s.append(&rec(seq)).unwrap();
        ack(log, 'a', seq);
    }
    // The prepended records, then one more.
    for _ in 0..6 {
        consume(&mut s, log);
    }
    // A prepend while the head record is out for delivery.
    let _peeked = s.peek().unwrap().unwrap();
    s.prepend(&(20..23).map(rec).collect::<Vec<_>>()).unwrap();
    (20..23).for_each(|seq| ack(log, 'a', seq));
    drop(s);
    drop(Spool::open(dir, CAP).unwrap());
}

/// Runs `f` in a forked child with crashes armed at `step`; true if the child crashed, false if it finished.
fn in_child(step: Option<u64>, f: impl FnOnce()) -> bool {
    // SAFETY: the child runs only `f` (file I/O and allocation; glibc's allocator is fork-safe) on the one thread
    // fork copies, then leaves with `_exit`, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        faults::crash_at(step);
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
        // SAFETY: ends the child without running the parent's destructors or atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child and `status` a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    if libc::WIFSIGNALED(status) {
        assert_eq!(
            libc::WTERMSIG(status),
            libc::SIGABRT,
            "the child died of an unexpected signal"
        );
        return true;
    }
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the child failed (a spool call returned an error or panicked)"
    );
    false
}

/// Checks what a start reads back from `dir` against the acknowledgement log.
fn verify(dir: &Path, log: &Path, what: &str) {
    let (mut acked, mut consuming, mut delivered) = (Vec::new(), Vec::new(), Vec::new());
    for line in fs::read_to_string(log).unwrap().lines() {
        let (kind, seq) = line.split_once(' ').unwrap();
        let seq: u64 = seq.parse().unwrap();
        match kind {
            "a" => acked.push(seq),
            "c" => consuming.push(seq),
            _ => delivered.push(seq),
        }
    }
    let mut s = Spool::open(dir, CAP).unwrap();
    let indexed = s.events();
    let mut read = Vec::new();
    while let Some(r) = s.peek().unwrap() {
        read.push(seq_of(&r));
        s.pop(&r).unwrap();
        assert!(read.len() < 1000, "{what}: the spool never ends");
    }
    assert_eq!(
        indexed,
        read.len() as u64,
        "{what}: indexed events == events read back ({read:?})"
    );
    assert!(read.windows(2).all(|w| w[0] < w[1]), "{what}: in order, once: {read:?}");
    for seq in &acked {
        if !consuming.contains(seq) {
            assert!(
                read.contains(seq),
                "{what}: acknowledged record {seq} lost; read back {read:?}"
            );
        }
    }
    for seq in &delivered {
        assert!(
            !read.contains(seq),
            "{what}: delivered record {seq} came back; read back {read:?}"
        );
    }
}

#[test]
fn a_crash_at_any_step_of_spooling_prepend_or_delivery_loses_no_acknowledged_record() {
    // The steps of a whole run.
    let probe = scratch();
    let steps_file = probe.path().join("steps");
    let crashed = in_child(None, || {
        let mut log = File::create(probe.path().join("acks")).unwrap();
        let dir = probe.path().join("spool");
        workload(&dir, &mut log);
        fs::write(&steps_file, faults::steps().to_string()).unwrap();
    });
    assert!(!crashed);
    verify(&probe.path().join("spool"), &probe.path().join("acks"), "no crash");
    let total: u64 = fs::read_to_string(&steps_file).unwrap().parse().unwrap();
    assert!(total > 50, "the workload passes {total} steps");

    for step in 1..=total {
        let tmp = scratch();
        let (dir, acks) = (tmp.path().join("spool"), tmp.path().join("acks"));
        let crashed = in_child(Some(step), || {
            let mut log = OpenOptions::new().create(true).append(true).open(&acks).unwrap();
            workload(&dir, &mut log);
        });
        assert!(crashed, "step {step} of {total} is reached");
        verify_after_crashing_open(&dir, &acks, &format!("crash at step {step}"));
        verify(&dir, &acks, &format!("crash at step {step}"));
    }
}

/// A start that crashes while opening what a crash left (finishing a prepend, cutting a torn record, writing the
/// head), at each of its first steps, must leave it readable too. Works on a copy, so `dir` is left as it was.
fn verify_after_crashing_open(dir: &Path, acks: &Path, what: &str) {
    for step in 1..=3 {
        let copy = scratch();
        let copied = copy.path().join("spool");
        fs::create_dir(&copied).unwrap();
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries {
                let e = e.unwrap();
                fs::copy(e.path(), copied.join(e.file_name())).unwrap();
            }
        }
        if !in_child(Some(step), || drop(Spool::open(&copied, CAP).unwrap())) {
            break; // the open has fewer steps
        }
        verify(&copied, acks, &format!("{what}, then at step {step} of the next start"));
    }
}
