//! A destination's delivery queue: a bounded memory queue, then the disk spool.
//!
//! The sink's encoder thread pushes finished batches; its delivery thread takes them in order, sends them and
//! acknowledges them. FIFO order holds across memory and disk by one rule: **a batch goes to the spool when the
//! spool already holds something or the memory queue is full**, and the delivery side takes memory first, then the
//! spool. So everything in memory is older than everything on disk, and the oldest undelivered batch is always the
//! next one sent.
//!
//! Without a spool, a full memory queue makes the encoder wait (backpressure to the readers, then to the socket
//! buffer; kernel drops are counted there). Once the engine is stopping it no longer waits: a batch that finds the
//! memory queue full is handed back refused (the caller counts it as dropped: without a spool it could only be
//! dropped at the end of the shutdown anyway), so the readers can finish and the shutdown budget can start.
//!
//! **With a spool, memory is a cache, not the only copy** (a crash loses RAM): batches move from memory *in front
//! of* the spool ([`super::spool::Spool::prepend`], fsynced) when
//! - a delivery attempt fails retriably ([`DeliveryQueue::spill`]: the batch that failed first, then memory), so
//!   while a destination is not accepting, new batches go straight to the spool (the FIFO rule above);
//! - the oldest event in memory was received `fsyncInterval` ago ([`DeliveryQueue::tick`]: a destination that
//!   hangs or is slower than the input);
//! - at shutdown ([`DeliveryQueue::persist_remaining`]).
//!
//! Appended records are `write(2)`s (a SIGKILL loses none of them) and are fsynced at most `fsyncInterval` after
//! their oldest event was *received*, not after the append (a batch reaches the spool `maxAge` or more after its
//! first event; [`DeliveryQueue::tick`] runs a sync timer only while there is unsynced data). So every event
//! in this queue received more than `fsyncInterval` ago is on disk, fsynced (give or take the encoder's wake-up);
//! a crash can lose only what is younger, plus the one batch out for delivery from memory while its request is in
//! flight (a destination that answers, slowly or not yet: a refusal spills it at once).
//!
//! **A full disk** (or any failing spool write): the batch stays in memory, in a second queue *behind* the spool
//! (`unspooled`), and every later batch joins it until a write succeeds again; each push (and the timer) first
//! retries the oldest of them, so they reach the disk, in order, as soon as there is space. Delivery takes memory,
//! then the spool, then `unspooled`, so FIFO order holds. Memory stays bounded by `memoryBytes` (both queues
//! together): beyond it the **oldest** batch in memory is dropped, reported like a spool-cap eviction (counted as
//! dropped and as `dropped_spool_cap`, per sender, ERROR), the same rule as the spool's cap, which a full disk
//! reaches early. One ERROR when the spool starts failing, one WARN when it takes writes again.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{error, warn};

use super::batch::EncodedBatch;
use super::spool::{Evicted, Spool};
use crate::telemetry::metrics::{now_unix_ns, HostTally, SinkCounters, SinkOutcome};

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

/// What [`DeliveryQueue::push`] did with a batch. What the spool's cap evicted for it the queue counted itself
/// (see [`DeliveryQueue::with_accounts`]).
#[derive(Debug, Default)]
pub struct Pushed {
    /// The batch went to the spool.
    pub spooled: bool,
    /// Without a spool, once the engine is stopping: the memory queue was full, so the batch was not queued (for
    /// the caller to count as dropped).
    pub refused: Option<EncodedBatch>,
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
    /// Batches in memory, oldest first, each with the time its oldest event was received (see [`received_at`]).
    mem: VecDeque<(Instant, EncodedBatch)>,
    /// Bytes of `mem` and `unspooled` together (their allocated buffers).
    mem_bytes: usize,
    /// Batches the spool could not take (a full disk): newer than everything spooled, delivered after it, written
    /// to it first once it takes writes again. Counted in `mem_bytes`.
    unspooled: VecDeque<EncodedBatch>,
    /// A spool write failed and the failing period has not ended (see [`spool_recovered`]; for logging the
    /// change only).
    spool_failing: bool,
    free: Vec<EncodedBatch>,
    spool: Option<Spool>,
    /// When [`DeliveryQueue::close`] was called.
    closed_at: Option<Instant>,
    /// When the oldest event appended since the last fsync was received (`None`: everything is synced); the sync
    /// is due `fsyncInterval` after it (see [`unsynced`]).
    unsynced_since: Option<Instant>,
    /// The spool's head record is out for delivery: nothing may be prepended until it is done or given back.
    spool_head_out: bool,
    /// Moving memory to the spool failed (disk error): not tried again (by the timer or a spill) before this.
    spill_retry_at: Option<Instant>,
    /// Pushes waiting for room on [`DeliveryQueue::room`] (see [`DeliveryQueue::room_made`]).
    room_waiters: usize,
}

/// The queue between one destination's encoder and its delivery.
#[derive(Debug)]
pub struct DeliveryQueue {
    state: Mutex<State>,
    /// Wakes a push that waits for room (no spool, memory full). Notified only while `State::room_waiters` says
    /// someone waits: `notify_one` is a system call even when nobody does, and the delivery side would make one
    /// per batch.
    room: Condvar,
    /// Wakes [`DeliveryQueue::next_async`]; `notify_one` keeps a permit when nobody waits, so no wake-up is lost.
    wake: tokio::sync::Notify,
    /// Wakes [`DeliveryQueue::closed`] (every waiter) at [`DeliveryQueue::close`].
    closing: tokio::sync::Notify,
    max_memory_bytes: usize,
    fsync_interval: Duration,
    /// The engine's stop flag: once set, a push no longer waits for room (see the module doc).
    stopping: Option<Arc<AtomicBool>>,
    /// Where the queue counts what it loses by itself.
    accounts: Accounts,
}

/// Where a queue counts the events it loses by itself, wherever that happens (a push, the timer, the shutdown
/// spill, reading the spool): events the spool's cap evicts (as `dropped` and `dropped_spool_cap`, per sender,
/// with an ERROR) and damaged spool records (on `spool_damaged_records`, their known events as `dropped`, with an
/// ERROR). The worker counts only what its deliveries settle.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// The destination's name, for the log lines.
    pub name: String,
    /// The destination's counters.
    pub counters: Arc<SinkCounters>,
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
                free: Vec::new(),
                spool,
                closed_at: None,
                unsynced_since: None,
                spool_head_out: false,
                spill_retry_at: None,
                room_waiters: 0,
            }),
            room: Condvar::new(),
            wake: tokio::sync::Notify::new(),
            closing: tokio::sync::Notify::new(),
            max_memory_bytes: settings.max_memory_bytes.max(1),
            fsync_interval: settings
                .spool
                .as_ref()
                .map_or(Duration::from_secs(1), |s| s.fsync_interval),
            stopping: None,
            accounts: Accounts::default(),
        })
    }

    /// Counts what this queue loses into `accounts` (see [`Accounts`]), starting with the damage its spool found
    /// when it opened.
    pub fn with_accounts(mut self, accounts: Accounts) -> DeliveryQueue {
        self.accounts = accounts;
        let mut st = self.lock();
        self.count_damage(&mut st);
        drop(st);
        self
    }

    /// The counters this queue counts into.
    pub fn counters(&self) -> &SinkCounters {
        &self.accounts.counters
    }

    /// Counts events the spool's cap evicted: dropped, by reason and sender, with one ERROR.
    fn count_evicted(&self, evicted: &Evicted) {
        if evicted.events > 0 {
            let c = &self.accounts.counters;
            c.dropped.add(evicted.events);
            c.dropped_spool_cap.add(evicted.events);
            c.hosts.add(SinkOutcome::DroppedSpoolCap, &evicted.hosts);
            error!(sink = %self.accounts.name, events = evicted.events, "spool full: oldest events dropped");
        }
    }

    /// Counts damaged spool records found since the last call (at open, or while reading): records and bytes
    /// always, events where the spool's index knows them (counted as dropped).
    fn count_damage(&self, st: &mut State) {
        let Some(damaged) = st.spool.as_mut().map(Spool::take_damaged) else {
            return;
        };
        if damaged.records > 0 {
            let c = &self.accounts.counters;
            c.spool_damaged_records.add(damaged.records);
            c.dropped.add(damaged.events);
            c.hosts.add(SinkOutcome::Dropped, &damaged.hosts);
            if let Some(spool) = st.spool.as_ref() {
                c.spooled.set(spool.events());
                c.spool_bytes.set(spool.bytes());
                c.hosts.set_spooled(&spool.hosts());
            }
            error!(
                sink = %self.accounts.name, records = damaged.records, bytes = damaged.bytes,
                events = damaged.events, "damaged spool records: the rest of their segments is lost"
            );
        }
    }

    /// Makes a push stop waiting for room once `stop` is set (the engine is shutting down).
    pub fn with_stop_flag(mut self, stop: Arc<AtomicBool>) -> DeliveryQueue {
        self.stopping = Some(stop);
        self
    }

    fn stopping(&self) -> bool {
        self.stopping.as_ref().is_some_and(|s| s.load(Ordering::Relaxed))
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

    /// True while a failing period of the spool's disk goes on (its ERROR logged, its end not yet).
    #[cfg(test)]
    fn spool_failing(&self) -> bool {
        self.lock().spool_failing
    }

    /// Spool bytes on disk.
    pub fn spooled_bytes(&self) -> u64 {
        self.lock().spool.as_ref().map_or(0, Spool::bytes)
    }

    /// Empty buffers for the encoder's next batch (recycled from delivered batches when possible).
    pub fn take_buffers(&self) -> Option<EncodedBatch> {
        self.lock().free.pop()
    }

    /// Queues a finished batch (see [`Pushed`]). Without a spool, waits while the memory queue is full, until the
    /// engine is stopping; then a batch that does not fit is refused.
    pub fn push(&self, batch: EncodedBatch) -> Pushed {
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
            // Batches the spool refused earlier are older than this one: they go first.
            let mut failed = self.flush_unspooled(st, &mut evicted).err();
            if failed.is_none() {
                let spool = st.spool.as_mut().expect("to_spool implies a spool");
                match spool.append(&batch) {
                    Ok(e) => {
                        evicted.add(&e);
                        spooled = true;
                        let since = unsynced(&mut st.unsynced_since, &batch);
                        if since.elapsed() >= self.fsync_interval {
                            sync(spool, &mut st.unsynced_since);
                        }
                        let mut b = batch;
                        b.clear();
                        if st.free.len() < 4 {
                            st.free.push(b);
                        }
                        spool_recovered(st);
                        return self.pushed(evicted, spooled);
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if !std::mem::replace(&mut st.spool_failing, true) {
                if let Some(e) = failed {
                    error!(
                        error = %e,
                        max_memory_bytes = self.max_memory_bytes,
                        "cannot write to the spool (disk full?): keeping batches in memory up to the memory bound, \
                         then dropping the oldest"
                    );
                }
            }
            // Within the memory bound: drop the oldest batches in memory (the memory queue's, then the unspooled
            // ones) to make room.
            while st.mem_bytes + len > self.max_memory_bytes {
                let Some(old) = st.mem.pop_front().map(|(_, b)| b).or_else(|| st.unspooled.pop_front()) else {
                    break;
                };
                st.mem_bytes -= old.footprint();
                evicted.events += old.len() as u64;
                old.tally(0..old.len(), &mut evicted.hosts);
            }
            st.mem_bytes += len;
            st.unspooled.push_back(batch);
        } else {
            while st.spool.is_none()
                && st.mem_bytes + len > self.max_memory_bytes
                && !st.mem.is_empty()
                && !self.stopping()
            {
                // Woken by room; the timeout notices the stop flag.
                st.room_waiters += 1;
                st = self
                    .room
                    .wait_timeout(st, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                st.room_waiters -= 1;
            }
            if st.spool.is_none() && st.mem_bytes + len > self.max_memory_bytes && !st.mem.is_empty() {
                return Pushed {
                    refused: Some(batch),
                    ..Pushed::default()
                };
            }
            st.mem_bytes += len;
            st.mem.push_back((received_at(&batch), batch));
        }
        drop(st);
        self.pushed(evicted, spooled)
    }

    /// Counts what the push evicted and wakes the delivery side.
    fn pushed(&self, evicted: Evicted, spooled: bool) -> Pushed {
        self.count_evicted(&evicted);
        self.wake.notify_one();
        Pushed { spooled, refused: None }
    }

    /// Releases the lock after memory was freed, waking a push that waits for room, if one does. A waiter counts
    /// itself under the lock before it waits (and the wait releases the lock atomically), so a zero seen here
    /// under the lock means no push is about to sleep on a full queue.
    fn room_made(&self, st: MutexGuard<'_, State>) {
        let waiting = st.room_waiters > 0;
        drop(st);
        if waiting {
            self.room.notify_all();
        }
    }

    /// Appends the batches the spool refused earlier, oldest first, until one fails (its error is returned). What
    /// the spool's cap evicted for them is added to `evicted`.
    fn flush_unspooled(&self, st: &mut State, evicted: &mut Evicted) -> std::io::Result<()> {
        let Some(spool) = st.spool.as_mut() else {
            return Ok(());
        };
        while let Some(old) = st.unspooled.front() {
            let e = spool.append(old)?;
            evicted.add(&e);
            unsynced(&mut st.unsynced_since, old);
            let mut b = st.unspooled.pop_front().expect("front exists");
            st.mem_bytes -= b.footprint();
            b.clear();
            if st.free.len() < 4 {
                st.free.push(b);
            }
        }
        Ok(())
    }

    /// Takes the oldest undelivered batch, without waiting ([`Next::Idle`] when there is none yet); the delivery
    /// thread waits in [`DeliveryQueue::next_async`].
    pub fn next(&self) -> Next {
        let mut st = self.lock();
        if let Some((_, b)) = st.mem.pop_front() {
            st.mem_bytes -= b.footprint();
            self.room_made(st);
            return Next::Batch(Origin::Memory, b);
        }
        if let Some(spool) = st.spool.as_mut() {
            let found = spool.peek();
            // Reading may have met damage (the rest of a segment is lost): counted before anything else.
            self.count_damage(&mut st);
            match found {
                Ok(Some(b)) => {
                    st.spool_head_out = true;
                    return Next::Batch(Origin::Spool, b);
                }
                Ok(None) => {}
                Err(e) => error!(error = %e, "cannot read the spool"),
            }
        }
        if let Some(b) = st.unspooled.pop_front() {
            st.mem_bytes -= b.footprint();
            self.room_made(st);
            return Next::Batch(Origin::Memory, b);
        }
        if st.closed_at.is_some() {
            return Next::Closed;
        }
        Next::Idle
    }

    /// [`DeliveryQueue::next`] for the delivery thread's runtime: the wait is asynchronous, so tasks on that
    /// runtime (the MQTT client's event loop with its keep-alives and acks) keep running while the queue is empty.
    /// `wait: None` waits until a push or [`DeliveryQueue::close`], with no timer at all (an idle destination
    /// costs no wake-up).
    pub async fn next_async(&self, wait: Option<Duration>) -> Next {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            match self.next() {
                Next::Idle => {}
                found => return found,
            }
            // A push between the check above and this wait left a permit (`notify_one`): at worst one spurious
            // wake-up, never a missed one.
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, self.wake.notified()).await.is_err() {
                        return Next::Idle;
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// The batch was delivered (or dropped for good): forget it.
    pub fn done(&self, origin: Origin, mut batch: EncodedBatch) {
        let mut st = self.lock();
        // What a full disk kept in memory was delivered from there: the failing period ends without the disk's
        // WARN, and a later failure is a new one that logs its ERROR.
        if st.mem.is_empty() && st.unspooled.is_empty() {
            st.spool_failing = false;
        }
        if origin == Origin::Spool {
            st.spool_head_out = false;
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
                st.mem.push_front((received_at(&batch), batch));
            }
            // The record never left the spool; it is simply no longer out for delivery.
            Origin::Spool => {
                st.spool_head_out = false;
                if let Some(spool) = st.spool.as_mut() {
                    spool.release_head();
                }
            }
        }
    }

    /// No more batches will be pushed.
    pub fn close(&self) {
        self.lock().closed_at.get_or_insert_with(Instant::now);
        self.wake.notify_one();
        self.closing.notify_waiters();
    }

    /// Resolves once [`DeliveryQueue::close`] was called. It needs no timer: the delivery thread races every
    /// request against the shutdown budget, and a timer armed per request is a wake-up of the runtime's driver
    /// (an `eventfd` write and one more `epoll_wait`) per batch.
    pub async fn closed(&self) {
        loop {
            let notified = self.closing.notified();
            tokio::pin!(notified);
            // Registered before the check: a close after it wakes this waiter (`notify_waiters` keeps no permit).
            notified.as_mut().enable();
            if self.closed_for().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// How long ago the queue was closed (`None` while it is open): the shutdown clock of the delivery side.
    pub fn closed_for(&self) -> Option<Duration> {
        self.lock().closed_at.map(|t| t.elapsed())
    }

    /// A delivery attempt of `failed` (taken from memory; `None`: nothing to add) failed and will be retried:
    /// writes it and then every batch in memory in front of the spool (fsynced), so none of them lives in RAM
    /// only while the destination is not accepting, and new batches go to the spool. Returns the events moved.
    /// Without a spool, or when the disk fails (ERROR), everything stays in memory, `failed` at the front. After a
    /// failed move the disk is not tried again before that move's retry time: the same batch fails again at every
    /// backoff of an outage, and each try would write, fail and log anew; what stays in memory is moved by the next
    /// spill after that time or by the timer ([`DeliveryQueue::tick`]).
    pub fn spill(&self, failed: Option<EncodedBatch>) -> u64 {
        let mut st = self.lock();
        if let Some(b) = failed {
            st.mem_bytes += b.footprint();
            st.mem.push_front((received_at(&b), b));
        }
        if st.spill_retry_at.is_some_and(|t| t > Instant::now()) {
            return 0;
        }
        self.spill_memory(&mut st)
    }

    /// Moves every batch in memory in front of the spool (they are older than anything in it). Returns the events
    /// moved; none when there is no spool, its head is out for delivery (a prepend would make a later pop consume
    /// the wrong record; memory is empty then anyway, except after a disk error), or the disk fails.
    fn spill_memory(&self, st: &mut State) -> u64 {
        if st.mem.is_empty() || st.spool_head_out {
            return 0;
        }
        let Some(spool) = st.spool.as_mut() else {
            return 0;
        };
        let batches: Vec<EncodedBatch> = st.mem.drain(..).map(|(_, b)| b).collect();
        match spool.prepend(&batches) {
            Ok(()) => {
                st.spill_retry_at = None;
                spool_recovered(st);
                st.mem_bytes -= batches.iter().map(EncodedBatch::footprint).sum::<usize>();
                let events = batches.iter().map(|b| b.len() as u64).sum();
                for mut b in batches {
                    b.clear();
                    if st.free.len() < 4 {
                        st.free.push(b);
                    }
                }
                if st.room_waiters > 0 {
                    self.room.notify_all();
                }
                events
            }
            Err(e) => {
                // One ERROR while the disk fails, shared with a push's: the timer and every failed delivery of an
                // outage try again, each at most once per retry time.
                if !std::mem::replace(&mut st.spool_failing, true) {
                    error!(
                        error = %e,
                        "cannot write to the spool (disk full?): batches whose delivery failed stay in memory until \
                         it takes writes again"
                    );
                }
                // Not again at once: the timer would spin on a failing disk.
                st.spill_retry_at = Some(Instant::now() + self.fsync_interval.max(Duration::from_secs(1)));
                st.mem.extend(batches.into_iter().map(|b| (received_at(&b), b)));
                0
            }
        }
    }

    /// The queue's timer work, called by the encoder at least at [`DeliveryQueue::tick_deadline`]: moves memory in
    /// front of the spool once its oldest event was received `fsyncInterval` ago, and fsyncs appended records once the
    /// oldest unsynced one is `fsyncInterval` old; retries batches a full disk kept in memory. Returns the events
    /// moved to the spool.
    pub fn tick(&self) -> u64 {
        let mut st = self.lock();
        if st.spool.is_none() {
            return 0;
        }
        let mut moved = 0;
        if self.spill_due(&st).is_some_and(|t| t <= Instant::now()) {
            moved = self.spill_memory(&mut st);
        }
        // A full disk: the batches kept behind the spool are tried again without waiting for the next push (what
        // the cap evicts for them is counted here).
        if !st.unspooled.is_empty() && st.spill_retry_at.is_none_or(|t| t <= Instant::now()) {
            let st = &mut *st;
            let before: u64 = st.unspooled.iter().map(|b| b.len() as u64).sum();
            let mut evicted = Evicted::default();
            let flushed = self.flush_unspooled(st, &mut evicted);
            self.count_evicted(&evicted);
            moved += before - st.unspooled.iter().map(|b| b.len() as u64).sum::<u64>();
            match flushed {
                Ok(()) => spool_recovered(st),
                Err(_) => st.spill_retry_at = Some(Instant::now() + self.fsync_interval.max(Duration::from_secs(1))),
            }
        }
        if st.unsynced_since.is_some_and(|t| t.elapsed() >= self.fsync_interval) {
            let State {
                spool, unsynced_since, ..
            } = &mut *st;
            if let Some(spool) = spool.as_mut() {
                sync(spool, unsynced_since);
            }
        }
        moved
    }

    /// When [`DeliveryQueue::tick`] has work next (`None`: no timer needed: no spool, nothing in memory or
    /// unsynced).
    pub fn tick_deadline(&self) -> Option<Instant> {
        let st = self.lock();
        st.spool.as_ref()?;
        let sync = st.unsynced_since.map(|t| t + self.fsync_interval);
        // Batches a full disk kept in memory: retried at the failed move's retry time, or within fsyncInterval.
        let unspooled = (!st.unspooled.is_empty()).then(|| {
            st.spill_retry_at
                .unwrap_or_else(|| Instant::now() + self.fsync_interval)
        });
        [self.spill_due(&st), sync, unspooled].into_iter().flatten().min()
    }

    /// When memory is due to move to the spool: `fsyncInterval` after its oldest event was received, not while the
    /// spool's head is out for delivery (then memory is empty anyway, except after a disk error) and not before a
    /// failed move may be retried.
    fn spill_due(&self, st: &State) -> Option<Instant> {
        if st.spool_head_out {
            return None;
        }
        let due = oldest_in(&st.mem)? + self.fsync_interval;
        Some(st.spill_retry_at.map_or(due, |retry| due.max(retry)))
    }

    /// At exit: writes what is still in memory in front of the spool (and batches the spool refused earlier
    /// after it) and returns the events saved, with the batches that could not be saved (no spool, or the disk
    /// failed) for the caller to count as lost.
    pub fn persist_remaining(&self) -> (u64, Vec<EncodedBatch>) {
        let mut st = self.lock();
        let st = &mut *st;
        let batches: Vec<EncodedBatch> = st.mem.drain(..).map(|(_, b)| b).collect();
        let unspooled: Vec<EncodedBatch> = st.unspooled.drain(..).collect();
        st.mem_bytes = 0;
        let events: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let Some(spool) = st.spool.as_mut() else {
            let mut lost = batches;
            lost.extend(unspooled);
            return (0, lost);
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
                    self.count_evicted(&e);
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
        sync(spool, &mut st.unsynced_since);
        (saved, lost)
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

/// The oldest receive time in memory (batches from several readers are not strictly ordered by it; the memory
/// queue holds few batches, as each counts with its whole allocation).
fn oldest_in(mem: &VecDeque<(Instant, EncodedBatch)>) -> Option<Instant> {
    mem.iter().map(|(t, _)| *t).min()
}

/// When the oldest event of `batch` was received (now when it has no receive times): the age the memory queue's
/// timer counts from, so the time an event waited in its batch (`batch.maxAge`) counts too.
fn received_at(batch: &EncodedBatch) -> Instant {
    let now = Instant::now();
    let Some(&oldest) = batch.received_ns.iter().min() else {
        return now;
    };
    let age = Duration::from_nanos(now_unix_ns().saturating_sub(oldest));
    now.checked_sub(age).unwrap_or(now)
}

/// Marks `batch`, just appended to the spool, as unsynced and returns when the oldest unsynced event was received.
/// The fsync deadline counts from the receipt of a batch's oldest event, not from its append: the promise is about
/// events *received* `fsyncInterval` before a crash, and a batch reaches the spool `maxAge` (and a wait in the
/// channel, or a full disk's retries) after that.
fn unsynced(unsynced_since: &mut Option<Instant>, batch: &EncodedBatch) -> Instant {
    let received = received_at(batch);
    *unsynced_since.insert(unsynced_since.map_or(received, |t| t.min(received)))
}

/// A spool write succeeded: the failing period ends (WARN) once nothing waits in memory for the disk any more.
/// Until then it goes on (batches a failed spill left in memory are not on disk yet), and the ERROR that began it
/// is not logged again.
fn spool_recovered(st: &mut State) {
    if st.mem.is_empty() && st.unspooled.is_empty() && std::mem::take(&mut st.spool_failing) {
        warn!("the spool takes writes again; batches kept in memory meanwhile are on disk");
    }
}

/// fsyncs the spool's appended records and clears the unsynced mark (an error is logged; the mark is cleared
/// anyway, so a failing disk is not hammered: the next append sets it again).
fn sync(spool: &mut Spool, unsynced_since: &mut Option<Instant>) {
    *unsynced_since = None;
    if let Err(e) = spool.sync() {
        error!(error = %e, "spool fsync failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wait_until;

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
        match q.next() {
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
        assert!(matches!(q.next(), Next::Idle));
        q.close();
        assert!(matches!(q.next(), Next::Closed));
    }

    /// The fsync deadline of a batch appended to the spool counts from the receipt of its oldest event, not from
    /// the append: an event received more than `fsyncInterval` before a power loss is on disk, fsynced, even if it
    /// waited in its batch (`maxAge`) and in the channel first.
    #[test]
    fn an_appended_batch_is_fsynced_fsync_interval_after_its_oldest_event_was_received() {
        let dir = tempfile::tempdir().unwrap();
        let interval = Duration::from_secs(10);
        let mut s = settings(dir.path(), 1 << 20);
        s.spool.as_mut().unwrap().fsync_interval = interval;
        let q = DeliveryQueue::new(&s).unwrap();
        // The destination is down: the spool holds something, so every push goes to the spool.
        q.push(batch(1, 1));
        q.spill(None);
        q.tick();
        assert!(q.spooled_events() > 0);
        // Fresh state: nothing unsynced.
        q.persist_remaining();
        assert_eq!(q.tick_deadline(), None);
        let mut old = batch(2, 2);
        let received = Instant::now() - interval * 9 / 10;
        old.received_ns = vec![now_unix_ns() - (interval * 9 / 10).as_nanos() as u64; 2];
        q.push(old);
        let deadline = q.tick_deadline().expect("unsynced data has a deadline");
        assert!(
            deadline <= received + interval + Duration::from_millis(50),
            "fsync due {:?} after the receipt, interval {interval:?}",
            deadline - received
        );
        // A batch already older than the interval is fsynced as it is appended.
        let mut older = batch(3, 1);
        older.received_ns = vec![now_unix_ns() - (interval * 2).as_nanos() as u64];
        q.push(older);
        assert_eq!(q.tick_deadline(), None, "fsynced on the append");
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
        let q = Arc::new(
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
                let q = Arc::clone(&q);
                std::thread::spawn(move || q.push(batch(round, 1)))
            };
            // A lost wake-up would show as `Idle` after the (long) wait instead of the batch.
            match rt.block_on(q.next_async(Some(Duration::from_secs(30)))) {
                Next::Batch(o, b) => {
                    assert_eq!(b.bytes[0], round);
                    q.done(o, b);
                }
                other => panic!("round {round}: expected the pushed batch, got {other:?}"),
            }
            pusher.join().unwrap();
        }
        let closer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || q.close())
        };
        assert!(matches!(
            rt.block_on(q.next_async(Some(Duration::from_secs(30)))),
            Next::Closed
        ));
        closer.join().unwrap();
    }

    #[test]
    fn memory_older_than_fsync_interval_moves_in_front_of_the_spool_and_survives_a_crash() {
        {
            let dir = tempfile::tempdir().unwrap();
            let mut s = settings(dir.path(), 1 << 20);
            s.spool.as_mut().unwrap().fsync_interval = Duration::from_secs(3600);
            let q = DeliveryQueue::new(&s).unwrap();
            q.push(batch(1, 2));
            q.push(batch(2, 2));
            assert_eq!(q.tick(), 0, "younger than fsyncInterval: stays in memory");
            assert!(q.tick_deadline().is_some());
            // The age counts from the oldest event's receive time, not from the push (time spent in the batch).
            let mut old = batch(3, 2);
            old.received_ns = vec![now_unix_ns() - 7200 * 1_000_000_000; 2];
            q.push(old);
            assert_eq!(q.tick(), 6, "memory behind an event older than fsyncInterval moves too");
            assert_eq!(q.spooled_events(), 6);
        }
        let dir = tempfile::tempdir().unwrap();
        {
            let q = DeliveryQueue::new(&settings(dir.path(), 1 << 20)).unwrap(); // fsyncInterval 0
            assert_eq!(q.tick_deadline(), None, "nothing queued, nothing unsynced: no timer");
            q.push(batch(1, 2));
            q.push(batch(2, 2));
            assert_eq!(q.tick(), 4);
            assert_eq!(q.tick_deadline(), None);
            q.push(batch(3, 2)); // the spool holds something: FIFO sends this one there
            assert_eq!(q.spooled_events(), 6);
            // Dropped without `persist_remaining`: a crash.
        }
        let q = DeliveryQueue::new(&settings(dir.path(), 1 << 20)).unwrap();
        let got: Vec<(Origin, u8)> = (0..3).map(|_| take(&q)).collect();
        assert_eq!(got, [(Origin::Spool, 1), (Origin::Spool, 2), (Origin::Spool, 3)]);
    }

    #[test]
    fn a_spill_puts_the_failed_batch_first_then_memory_then_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch(1, 1).footprint();
        let q = DeliveryQueue::new(&settings(dir.path(), 2 * one + one / 2)).unwrap();
        for tag in 1..=4 {
            q.push(batch(tag, 1)); // 1, 2 in memory; 3, 4 spilled by the FIFO rule
        }
        let Next::Batch(Origin::Memory, failed) = q.next() else {
            panic!("expected batch 1 from memory")
        };
        assert_eq!(q.spill(Some(failed)), 2);
        assert_eq!(q.spooled_events(), 4);
        let got: Vec<(Origin, u8)> = (0..4).map(|_| take(&q)).collect();
        assert_eq!(
            got,
            [
                (Origin::Spool, 1),
                (Origin::Spool, 2),
                (Origin::Spool, 3),
                (Origin::Spool, 4)
            ]
        );
    }

    #[test]
    fn without_a_spool_a_full_memory_queue_stops_holding_the_encoder_once_the_engine_stops() {
        let stop = Arc::new(AtomicBool::new(false));
        let q = Arc::new(
            DeliveryQueue::new(&QueueSettings {
                max_memory_bytes: 1,
                spool: None,
            })
            .unwrap()
            .with_stop_flag(Arc::clone(&stop)),
        );
        q.push(batch(1, 1)); // one batch always fits
        let pusher = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || q.push(batch(2, 1)))
        };
        stop.store(true, Ordering::Relaxed);
        // Would wait forever for room without the stop flag; refused, for the caller to count.
        let refused = pusher.join().unwrap().refused.expect("refused");
        assert_eq!(refused.bytes[0], 2);
        let (saved, lost) = q.persist_remaining();
        assert_eq!((saved, lost.len()), (0, 1));
    }

    #[test]
    fn without_a_spool_a_push_that_waits_for_room_goes_in_once_delivery_takes_a_batch() {
        let q = Arc::new(
            DeliveryQueue::new(&QueueSettings {
                max_memory_bytes: 1,
                spool: None,
            })
            .unwrap(),
        );
        q.push(batch(1, 1)); // one batch always fits
        let pusher = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || q.push(batch(2, 1)))
        };
        wait_until("the push waiting for room", || q.lock().room_waiters > 0);
        assert_eq!(take(&q), (Origin::Memory, 1));
        assert!(pusher.join().unwrap().refused.is_none(), "queued, not refused");
        assert_eq!(q.lock().room_waiters, 0, "the waiter counted itself out");
        assert_eq!(take(&q), (Origin::Memory, 2));
    }

    #[test]
    fn a_failed_move_to_the_spool_is_not_retried_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let q = DeliveryQueue::new(&settings(&spool_dir, 1 << 20)).unwrap(); // fsyncInterval 0
        q.push(batch(1, 1));
        std::fs::remove_dir_all(&spool_dir).unwrap(); // the disk fails: the move cannot be written
        assert_eq!(q.tick(), 0);
        // The encoder waits for this deadline: in the past, it would spin on the failing disk.
        let due = q.tick_deadline().expect("memory still waits to move");
        assert!(due > Instant::now() + Duration::from_millis(500), "retried at once");
        assert!(matches!(q.next(), Next::Batch(Origin::Memory, _)), "kept in memory");
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
        use crate::sink::delivery::spool::faults;
        let dir = tempfile::tempdir().unwrap();
        let one = batch(1, 1).footprint();
        let q = DeliveryQueue::new(&settings(dir.path(), 2 * one + one / 2)).unwrap();
        for tag in 1..=3 {
            q.push(batch(tag, 1)); // 1 and 2 in memory, 3 spooled
        }
        assert_eq!(q.counters().dropped_spool_cap.get(), 0);
        faults::set_space(Some(0));
        for tag in 4..=9 {
            assert!(!q.push(batch(tag, 1)).spooled);
        }
        let c = q.counters();
        assert_eq!(
            (c.dropped.get(), c.dropped_spool_cap.get()),
            (6, 6),
            "memory holds two batches: the oldest of 1, 2, 4..9 were dropped (and counted by the queue)"
        );
        faults::set_space(None);
        assert!(
            q.push(batch(10, 1)).spooled,
            "space is back: the batches kept in memory and this one reach the disk"
        );
        assert_eq!(q.spooled_events(), 4);
        let mut got = Vec::new();
        while let Next::Batch(o, b) = q.next() {
            got.push(b.bytes[0]);
            q.done(o, b);
        }
        assert_eq!(got, [3, 8, 9, 10], "in order; delivered + dropped == pushed");
        drop(q);
        assert_eq!(Spool::open(dir.path(), 1 << 30).unwrap().take_damaged().records, 0);
    }

    #[test]
    fn batches_the_spool_refused_are_saved_behind_it_at_exit() {
        use crate::sink::delivery::spool::faults;
        let dir = tempfile::tempdir().unwrap();
        let one = batch(1, 1).footprint();
        let q = DeliveryQueue::new(&settings(dir.path(), 2 * one + one / 2)).unwrap();
        for tag in 1..=3 {
            q.push(batch(tag, 1)); // 1 and 2 in memory, 3 spooled
        }
        assert_eq!(take(&q), (Origin::Memory, 1));
        faults::set_space(Some(0));
        q.push(batch(4, 1));
        assert_eq!(
            q.counters().dropped.get(),
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

    #[test]
    fn after_a_failed_move_a_spill_tries_the_disk_again_only_at_the_retry_time() {
        // The delivery thread spills the same batch at every failed attempt of an outage: while the disk fails,
        // each of those must not write, fail and log again; once the retry time has come, one moves it.
        use crate::sink::delivery::spool::faults;
        let dir = tempfile::tempdir().unwrap();
        let q = DeliveryQueue::new(&settings(dir.path(), 1 << 20)).unwrap();
        q.push(batch(1, 1));
        let Next::Batch(Origin::Memory, failed) = q.next() else {
            panic!("expected batch 1 from memory")
        };
        faults::set_space(Some(0));
        assert_eq!(q.spill(Some(failed)), 0, "the disk is full: the batch stays in memory");
        faults::set_space(None);
        let Next::Batch(Origin::Memory, failed) = q.next() else {
            panic!("expected batch 1 from memory again")
        };
        faults::crash_at(None); // counts the disk's steps from here
        assert_eq!(q.spill(Some(failed)), 0, "not before the retry time");
        assert_eq!(faults::steps(), 0, "the disk was not tried");
        wait_until("the batch moved once the retry time came", || q.spill(None) > 0);
        assert_eq!(q.spooled_events(), 1);
        assert_eq!(take(&q), (Origin::Spool, 1));
    }

    #[test]
    fn a_failing_period_goes_on_while_a_failed_spill_keeps_batches_in_memory_and_ends_once_they_are_delivered() {
        use crate::sink::delivery::spool::faults;
        let dir = tempfile::tempdir().unwrap();
        let one = batch(1, 1).footprint();
        let q = DeliveryQueue::new(&settings(dir.path(), 2 * one + one / 2)).unwrap();
        for tag in 1..=3 {
            q.push(batch(tag, 1)); // 1 and 2 in memory, 3 spooled
        }
        let Next::Batch(Origin::Memory, failed) = q.next() else {
            panic!("expected batch 1 from memory")
        };
        faults::set_space(Some(0));
        assert_eq!(q.spill(Some(failed)), 0);
        faults::set_space(None);
        assert!(q.spool_failing(), "the failed spill began a failing period (its ERROR)");
        assert!(
            q.push(batch(4, 1)).spooled,
            "behind the spool, which takes writes again"
        );
        assert!(
            q.spool_failing(),
            "batches 1 and 2 are still in memory only: no WARN that they are on disk"
        );
        // The destination came back: 1 and 2 are delivered from memory; the period ends there, so a later
        // failure logs its ERROR again.
        for tag in 1..=2 {
            let Next::Batch(Origin::Memory, b) = q.next() else {
                panic!("expected batch {tag} from memory")
            };
            q.done(Origin::Memory, b);
        }
        assert!(!q.spool_failing());
    }

    #[test]
    fn batches_a_full_disk_kept_in_memory_reach_the_spool_on_the_timer_without_another_push() {
        use crate::sink::delivery::spool::faults;
        let dir = tempfile::tempdir().unwrap();
        let one = batch(1, 1).footprint();
        let q = DeliveryQueue::new(&settings(dir.path(), 2 * one + one / 2)).unwrap();
        for tag in 1..=3 {
            q.push(batch(tag, 1)); // 1 and 2 in memory, 3 spooled
        }
        assert_eq!((take(&q).1, take(&q).1), (1, 2));
        faults::set_space(Some(0));
        for tag in 4..=5 {
            assert!(!q.push(batch(tag, 1)).spooled, "kept behind the spool");
        }
        assert!(
            q.tick_deadline().is_some(),
            "a timer runs while batches wait for the disk"
        );
        faults::set_space(None);
        assert_eq!(q.tick(), 2, "the timer wrote both, no push needed");
        assert_eq!(q.spooled_events(), 3);
        assert_eq!(q.counters().dropped.get(), 0);
        let got: Vec<u8> = (0..3).map(|_| take(&q).1).collect();
        assert_eq!(got, [3, 4, 5]);
    }
}
