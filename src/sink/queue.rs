//! A destination's delivery queue: a bounded memory queue, then the disk spool.
//!
//! The sink's encoder thread pushes finished batches; its delivery thread takes them in order, sends them and
//! acknowledges them. FIFO order holds across memory and disk by one rule: **a batch goes to the spool when the
//! spool already holds something or the memory queue is full**, and the delivery side takes memory first, then the
//! spool. So everything in memory is older than everything on disk, and the oldest undelivered batch is always the
//! next one sent.
//!
//! Without a spool, a full memory queue makes the encoder wait (backpressure to the readers, then to the socket
//! buffer; kernel drops are counted there).
//!
//! **A full disk** (or any failing spool write): the batch stays in memory, in a second queue *behind* the spool
//! (`unspooled`), and every later batch joins it until a write succeeds again; each push first retries the
//! oldest of them, so they reach the disk, in order, as soon as there is space. Delivery takes memory, then the
//! spool, then `unspooled`, so FIFO order holds. Memory stays bounded by `memoryBytes` (both queues together):
//! beyond it the **oldest** batch in memory is dropped, reported like a spool-cap eviction (counted as dropped
//! and as `dropped_spool_cap`, per sender, ERROR), the same rule as the spool's cap, which a full disk reaches
//! early. One ERROR when the spool starts failing, one WARN when it takes writes again.
//!
//! At shutdown, batches still in memory are written *in front of* the spool ([`super::spool::Spool::prepend`]),
//! so the next start replays them first.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{error, warn};

use super::batch::EncodedBatch;
use super::spool::{Damage, Evicted, Spool};
use crate::telemetry::metrics::HostTally;

/// Where and how much a destination may spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    /// This destination's spool directory.
    pub dir: PathBuf,
    /// Cap on the spool's size on disk; beyond it the oldest segments are dropped (counted, ERROR).
    pub max_bytes: u64,
    /// How often appended data is fsynced.
    pub fsync_interval: Duration,
}

/// Bounds of a destination's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// Bytes of encoded batches kept in memory before the spool is used.
    pub max_memory_bytes: usize,
    /// The disk spool, if enabled.
    pub spool: Option<SpoolSettings>,
}

/// Where a batch handed to the delivery side came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Taken out of the memory queue (owned by the delivery side now).
    Memory,
    /// A copy of the spool's oldest record (it stays on disk until acknowledged).
    Spool,
}

/// What [`DeliveryQueue::next`] found.
#[derive(Debug)]
pub enum Next {
    /// The oldest undelivered batch.
    Batch(Origin, EncodedBatch),
    /// Nothing yet (timed out).
    Idle,
    /// Closed and empty: the delivery side is done.
    Closed,
}

#[derive(Debug)]
struct State {
    mem: VecDeque<EncodedBatch>,
    mem_bytes: usize,
    /// Batches the spool could not take (a full disk): newer than everything spooled, delivered after it, written
    /// to it first once it takes writes again. Counted in `mem_bytes`.
    unspooled: VecDeque<EncodedBatch>,
    /// The last spool write failed (for logging the change only).
    spool_failing: bool,
    /// What the spool's cap evicted while [`DeliveryQueue::persist_remaining`] wrote, for
    /// [`DeliveryQueue::take_exit_evicted`].
    exit_evicted: Evicted,
    free: Vec<EncodedBatch>,
    spool: Option<Spool>,
    /// When [`DeliveryQueue::close`] was called.
    closed_at: Option<Instant>,
    last_sync: Instant,
}

/// The queue between one destination's encoder and its delivery.
#[derive(Debug)]
pub struct DeliveryQueue {
    state: Mutex<State>,
    ready: Condvar,
    room: Condvar,
    /// Wakes [`DeliveryQueue::next_async`]; `notify_one` keeps a permit when nobody waits, so no wake-up is lost.
    wake: tokio::sync::Notify,
    max_memory_bytes: usize,
    fsync_interval: Duration,
}

impl DeliveryQueue {
    /// A queue; opens (and indexes) the spool when configured.
    pub fn new(settings: &QueueSettings) -> std::io::Result<DeliveryQueue> {
        let spool = match &settings.spool {
            Some(s) => Some(Spool::open(&s.dir, s.max_bytes)?),
            None => None,
        };
        Ok(DeliveryQueue {
            state: Mutex::new(State {
                mem: VecDeque::new(),
                mem_bytes: 0,
                unspooled: VecDeque::new(),
                spool_failing: false,
                exit_evicted: Evicted::default(),
                free: Vec::new(),
                spool,
                closed_at: None,
                last_sync: Instant::now(),
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
            wake: tokio::sync::Notify::new(),
            max_memory_bytes: settings.max_memory_bytes.max(1),
            fsync_interval: settings
                .spool
                .as_ref()
                .map_or(Duration::from_secs(1), |s| s.fsync_interval),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every mutation is a single push/pop).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events waiting in the spool from an earlier run (at startup) or now.
    pub fn spooled_events(&self) -> u64 {
        self.lock().spool.as_ref().map_or(0, Spool::events)
    }

    /// Events waiting in the spool now, per sender.
    pub fn spooled_hosts(&self) -> HostTally {
        self.lock().spool.as_ref().map_or_else(HostTally::default, Spool::hosts)
    }

    /// Spool bytes on disk.
    pub fn spooled_bytes(&self) -> u64 {
        self.lock().spool.as_ref().map_or(0, Spool::bytes)
    }

    /// Empty buffers for the encoder's next batch (recycled from delivered batches when possible).
    pub fn take_buffers(&self) -> Option<EncodedBatch> {
        self.lock().free.pop()
    }

    /// Queues a finished batch. Returns what was evicted to stay within bounds (the spool's cap, or memory while
    /// the spool cannot be written; events, per sender; for the caller to count and log), and whether the batch
    /// went to disk. Without a spool, waits while the memory queue is full.
    pub fn push(&self, batch: EncodedBatch) -> (Evicted, bool) {
        let mut st = self.lock();
        let len = batch.footprint();
        let mut evicted = Evicted::default();
        let mut spooled = false;
        let to_spool = match &st.spool {
            Some(spool) => {
                !st.unspooled.is_empty()
                    || !spool.is_empty()
                    || (st.mem_bytes + len > self.max_memory_bytes && !st.mem.is_empty())
            }
            None => false,
        };
        if to_spool {
            let st = &mut *st;
            let spool = st.spool.as_mut().expect("to_spool implies a spool");
            // Batches the spool refused earlier are older than this one: they go first.
            let mut failed = None;
            while let Some(old) = st.unspooled.front() {
                match spool.append(old) {
                    Ok(e) => {
                        evicted.add(&e);
                        spooled = true;
                        let mut b = st.unspooled.pop_front().expect("front exists");
                        st.mem_bytes -= b.footprint();
                        b.clear();
                        if st.free.len() < 4 {
                            st.free.push(b);
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if failed.is_none() {
                match spool.append(&batch) {
                    Ok(e) => {
                        evicted.add(&e);
                        spooled = true;
                        let mut b = batch;
                        b.clear();
                        if st.free.len() < 4 {
                            st.free.push(b);
                        }
                        if std::mem::take(&mut st.spool_failing) {
                            warn!("the spool takes writes again; batches kept in memory meanwhile are on disk");
                        }
                        if st.last_sync.elapsed() >= self.fsync_interval {
                            st.last_sync = Instant::now();
                            if let Err(e) = spool.sync() {
                                error!(error = %e, "spool fsync failed");
                            }
                        }
                        return self.pushed(evicted, spooled);
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if !std::mem::replace(&mut st.spool_failing, true) {
                if let Some(e) = failed {
                    error!(error = %e, max_memory_bytes = self.max_memory_bytes, "cannot write to the spool (disk full?): keeping batches in memory up to the memory bound, then dropping the oldest");
                }
            }
            // Within the memory bound: drop the oldest batches in memory (the memory queue's, then the unspooled
            // ones) to make room.
            while st.mem_bytes + len > self.max_memory_bytes {
                let Some(old) = st.mem.pop_front().or_else(|| st.unspooled.pop_front()) else {
                    break;
                };
                st.mem_bytes -= old.footprint();
                evicted.events += old.len() as u64;
                old.tally(0..old.len(), &mut evicted.hosts);
            }
            st.mem_bytes += len;
            st.unspooled.push_back(batch);
        } else {
            while st.spool.is_none() && st.mem_bytes + len > self.max_memory_bytes && !st.mem.is_empty() {
                st = self.room.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.mem_bytes += len;
            st.mem.push_back(batch);
        }
        drop(st);
        self.pushed(evicted, spooled)
    }

    /// Wakes the delivery side after a push.
    fn pushed(&self, evicted: Evicted, spooled: bool) -> (Evicted, bool) {
        self.ready.notify_one();
        self.wake.notify_one();
        (evicted, spooled)
    }

    /// What damaged spool records cost since the last call (for the caller to count: events as dropped, records
    /// on the damaged-records counter).
    pub fn take_damaged(&self) -> Damage {
        self.lock().spool.as_mut().map(Spool::take_damaged).unwrap_or_default()
    }

    /// Takes the oldest undelivered batch, waiting up to `wait`.
    pub fn next(&self, wait: Duration) -> Next {
        let mut st = self.lock();
        let deadline = Instant::now() + wait;
        loop {
            if let Some(b) = st.mem.pop_front() {
                st.mem_bytes -= b.footprint();
                drop(st);
                self.room.notify_one();
                return Next::Batch(Origin::Memory, b);
            }
            if let Some(spool) = st.spool.as_mut() {
                match spool.peek() {
                    Ok(Some(b)) => return Next::Batch(Origin::Spool, b),
                    Ok(None) => {}
                    Err(e) => error!(error = %e, "cannot read the spool"),
                }
            }
            if let Some(b) = st.unspooled.pop_front() {
                st.mem_bytes -= b.footprint();
                return Next::Batch(Origin::Memory, b);
            }
            if st.closed_at.is_some() {
                return Next::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Next::Idle;
            }
            st = self
                .ready
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// [`DeliveryQueue::next`] for the delivery thread's runtime: the wait is asynchronous, so tasks on that
    /// runtime (the MQTT client's event loop with its keep-alives and acks) keep running while the queue is empty.
    pub async fn next_async(&self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.next(Duration::ZERO) {
                Next::Idle => {}
                found => return found,
            }
            // A push between the check above and this wait left a permit (`notify_one`): at worst one spurious
            // wake-up, never a missed one.
            if tokio::time::timeout_at(deadline, self.wake.notified()).await.is_err() {
                return Next::Idle;
            }
        }
    }

    /// The batch was delivered (or dropped for good): forget it.
    pub fn done(&self, origin: Origin, mut batch: EncodedBatch) {
        let mut st = self.lock();
        if origin == Origin::Spool {
            if let Some(spool) = st.spool.as_mut() {
                if let Err(e) = spool.pop(&batch) {
                    error!(error = %e, "cannot advance the spool head; the batch may be sent again after a restart");
                }
            }
        }
        batch.clear();
        if st.free.len() < 4 {
            st.free.push(batch);
        }
    }

    /// Puts an undelivered batch back at the front (shutdown deadline reached while it was being sent).
    pub fn give_back(&self, origin: Origin, batch: EncodedBatch) {
        let mut st = self.lock();
        match origin {
            Origin::Memory => {
                st.mem_bytes += batch.footprint();
                st.mem.push_front(batch);
            }
            // The record never left the spool; it is simply no longer out for delivery.
            Origin::Spool => {
                if let Some(spool) = st.spool.as_mut() {
                    spool.release_head();
                }
            }
        }
    }

    /// No more batches will be pushed.
    pub fn close(&self) {
        self.lock().closed_at.get_or_insert_with(Instant::now);
        self.ready.notify_all();
        self.wake.notify_one();
    }

    /// How long ago the queue was closed (`None` while it is open): the shutdown clock of the delivery side.
    pub fn closed_for(&self) -> Option<Duration> {
        self.lock().closed_at.map(|t| t.elapsed())
    }

    /// At exit: writes what is still in memory in front of the spool (and batches the spool refused earlier
    /// after it) and returns the events saved, with the batches that could not be saved (no spool, or the disk
    /// failed) for the caller to count as lost.
    pub fn persist_remaining(&self) -> (u64, Vec<EncodedBatch>) {
        let mut st = self.lock();
        let st = &mut *st;
        let batches: Vec<EncodedBatch> = st.mem.drain(..).collect();
        let unspooled: Vec<EncodedBatch> = st.unspooled.drain(..).collect();
        st.mem_bytes = 0;
        let events: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let Some(spool) = st.spool.as_mut() else {
            return (0, batches);
        };
        let mut saved = 0;
        let mut lost = Vec::new();
        // `prepend` fsyncs what it wrote; whether the batches are saved depends on it alone (a failing fsync of
        // the unrelated segment being written must not count saved batches as lost).
        match spool.prepend(&batches) {
            Ok(()) => saved += events,
            Err(e) => {
                error!(error = %e, events, "cannot write undelivered batches to the spool; they are lost");
                lost = batches;
            }
        }
        // Batches the spool refused earlier are the newest: after everything spooled. The cap may evict for them.
        let mut rest = unspooled.into_iter();
        while let Some(b) = rest.next() {
            match spool.append(&b) {
                Ok(e) => {
                    st.exit_evicted.add(&e);
                    saved += b.len() as u64;
                }
                Err(e) => {
                    let mut left = vec![b];
                    left.extend(rest);
                    let events: u64 = left.iter().map(|b| b.len() as u64).sum();
                    error!(error = %e, events, "cannot write undelivered batches to the spool; they are lost");
                    lost.extend(left);
                    break;
                }
            }
        }
        if let Err(e) = spool.sync() {
            error!(error = %e, "spool fsync failed");
        }
        (saved, lost)
    }

    /// What the spool's cap evicted while [`DeliveryQueue::persist_remaining`] wrote (for the caller to count like
    /// a push's evictions).
    pub fn take_exit_evicted(&self) -> Evicted {
        std::mem::take(&mut self.lock().exit_evicted)
    }

    /// True once [`DeliveryQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed_at.is_some()
    }

    /// True when a spool is configured.
    pub fn has_spool(&self) -> bool {
        self.lock().spool.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(tag: u8, n: usize) -> EncodedBatch {
        let mut b = EncodedBatch::default();
        for _ in 0..n {
            b.bytes.extend_from_slice(&[tag; 10]);
            b.ends.push(b.bytes.len() as u32);
        }
        b
    }

    fn settings(dir: &std::path::Path, mem: usize) -> QueueSettings {
        QueueSettings {
            max_memory_bytes: mem,
            spool: Some(SpoolSettings {
                dir: dir.to_path_buf(),
                max_bytes: 1 << 30,
                fsync_interval: Duration::ZERO,
            }),
        }
    }

    fn take(q: &DeliveryQueue) -> (Origin, u8) {
        match q.next(Duration::ZERO) {
            Next::Batch(o, b) => {
                let tag = b.bytes[0];
                q.done(o, b);
                (o, tag)
            }
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn order_holds_across_memory_and_spool() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch(1, 1).footprint();
        let q = DeliveryQueue::new(&settings(dir.path(), 2 * one + one / 2)).unwrap();
        for tag in 1..=5 {
            q.push(batch(tag, 1)); // two fit in memory, the rest spill
        }
        let got: Vec<(Origin, u8)> = (0..5).map(|_| take(&q)).collect();
        assert_eq!(
            got,
            [
                (Origin::Memory, 1),
                (Origin::Memory, 2),
                (Origin::Spool, 3),
                (Origin::Spool, 4),
                (Origin::Spool, 5)
            ]
        );
        assert!(matches!(q.next(Duration::ZERO), Next::Idle));
        q.close();
        assert!(matches!(q.next(Duration::ZERO), Next::Closed));
    }

    #[test]
    fn batches_left_in_memory_at_exit_are_replayed_first_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = DeliveryQueue::new(&settings(dir.path(), 25)).unwrap();
            for tag in 1..=4 {
                q.push(batch(tag, 2));
            }
            let (saved, lost) = q.persist_remaining(); // batch 1 (2 events) was in memory; 2..4 spilled
            assert_eq!((saved, lost.len()), (2, 0));
        }
        let q = DeliveryQueue::new(&settings(dir.path(), 25)).unwrap();
        assert_eq!(q.spooled_events(), 8);
        let got: Vec<u8> = (0..4).map(|_| take(&q).1).collect();
        assert_eq!(got, [1, 2, 3, 4]);
    }

    #[test]
    fn the_async_wait_wakes_on_a_push_from_another_thread_and_on_close() {
        let q = std::sync::Arc::new(
            DeliveryQueue::new(&QueueSettings {
                max_memory_bytes: 1000,
                spool: None,
            })
            .unwrap(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for round in 0..50u8 {
            let pusher = {
                let q = std::sync::Arc::clone(&q);
                std::thread::spawn(move || q.push(batch(round, 1)))
            };
            // A lost wake-up would show as `Idle` after the (long) wait instead of the batch.
            match rt.block_on(q.next_async(Duration::from_secs(30))) {
                Next::Batch(o, b) => {
                    assert_eq!(b.bytes[0], round);
                    q.done(o, b);
                }
                other => panic!("round {round}: expected the pushed batch, got {other:?}"),
            }
            pusher.join().unwrap();
        }
        let closer = {
            let q = std::sync::Arc::clone(&q);
            std::thread::spawn(move || q.close())
        };
        assert!(matches!(
            rt.block_on(q.next_async(Duration::from_secs(30))),
            Next::Closed
        ));
        closer.join().unwrap();
    }

    #[test]
    fn without_a_spool_memory_is_the_bound_and_leftovers_are_reported_lost() {
        let q = DeliveryQueue::new(&QueueSettings {
            max_memory_bytes: 1000,
            spool: None,
        })
        .unwrap();
        q.push(batch(1, 3));
        let (saved, lost) = q.persist_remaining();
        assert_eq!((saved, lost.len(), lost[0].len()), (0, 1, 3));
    }

    #[test]
    fn a_full_disk_keeps_order_and_memory_bounded_and_spools_again_when_space_returns() {
        use crate::sink::spool::faults;
        let dir = tempfile::tempdir().unwrap();
        let one = batch(1, 1).footprint();
        let q = DeliveryQueue::new(&settings(dir.path(), 2 * one + one / 2)).unwrap();
        let mut evicted = 0;
        for tag in 1..=3 {
            evicted += q.push(batch(tag, 1)).0.events; // 1 and 2 in memory, 3 spooled
        }
        faults::set_space(Some(0));
        for tag in 4..=9 {
            let (e, spooled) = q.push(batch(tag, 1));
            assert!(!spooled);
            evicted += e.events;
        }
        assert_eq!(
            evicted, 6,
            "memory holds two batches: the oldest of 1, 2, 4..9 were dropped (and reported)"
        );
        faults::set_space(None);
        assert!(
            q.push(batch(10, 1)).1,
            "space is back: the batches kept in memory and this one reach the disk"
        );
        assert_eq!(q.spooled_events(), 4);
        let mut got = Vec::new();
        while let Next::Batch(o, b) = q.next(Duration::ZERO) {
            got.push(b.bytes[0]);
            q.done(o, b);
        }
        assert_eq!(got, [3, 8, 9, 10], "in order; delivered + dropped == pushed");
        drop(q);
        assert_eq!(Spool::open(dir.path(), 1 << 30).unwrap().take_damaged().records, 0);
    }

    #[test]
    fn batches_the_spool_refused_are_saved_behind_it_at_exit() {
        use crate::sink::spool::faults;
        let dir = tempfile::tempdir().unwrap();
        let one = batch(1, 1).footprint();
        let q = DeliveryQueue::new(&settings(dir.path(), 2 * one + one / 2)).unwrap();
        for tag in 1..=3 {
            q.push(batch(tag, 1)); // 1 and 2 in memory, 3 spooled
        }
        assert_eq!(take(&q), (Origin::Memory, 1));
        faults::set_space(Some(0));
        assert_eq!(
            q.push(batch(4, 1)).0.events,
            0,
            "refused by the disk, kept behind the spool"
        );
        faults::set_space(None);
        let (saved, lost) = q.persist_remaining();
        assert_eq!((saved, lost.len()), (2, 0));
        drop(q);
        let q = DeliveryQueue::new(&settings(dir.path(), 2 * one + one / 2)).unwrap();
        let got: Vec<u8> = (0..3).map(|_| take(&q).1).collect();
        assert_eq!(got, [2, 3, 4]);
    }
}
