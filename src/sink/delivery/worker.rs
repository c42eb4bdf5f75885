//! The batched sink worker shared by every queued destination (HTTP and MQTT): an encoder thread and a delivery thread joined by
//! a [`DeliveryQueue`].
//!
//! - **Encoder** (the calling thread): takes slabs from the sink's channel (it waits on the channel's doorbell,
//!   [`SlabReceiver::doze`], never inside an async task), encodes every event into the current batch, drops the
//!   slab (back to the pool), and hands the batch to the queue when it is full or its oldest event reached
//!   `max_age`. It never waits for the
//!   destination: while the destination is slow or down, batches wait in the queue's memory, then in its disk
//!   spool. When the channel disconnects (readers stopped), the last batch is queued and the queue closed.
//! - **Delivery** (its own thread, with a single-threaded tokio runtime for the transport's client): takes the oldest
//!   batch, `prepare`s the destination once (retried like a write), sends; on 413 splits in halves (down to single
//!   events); on a retriable error backs off (doubling from `initial_backoff` to `max_backoff`, or `Retry-After`).
//!   With a spool, retriable failures are retried until the destination recovers (the spool holds the backlog);
//!   without one, up to `max_attempts`. With a spool, the first retriable failure of a batch taken from memory
//!   moves it, and every batch behind it in memory, in front of the spool (fsynced) before the backoff, and the
//!   retries continue from the spool: while the destination is not accepting, nothing waits in RAM only. A final failure (non-retriable 4xx, or attempts exhausted) counts the
//!   events as `dropped` with an ERROR naming the destination's own message.
//! - **Timers**: the encoder also runs the queue's timer ([`DeliveryQueue::tick`]): memory older than
//!   `fsyncInterval` moves to the spool, appended records are fsynced within `fsyncInterval`. Every timer exists
//!   only while it has work (an open batch, queue work, an encoder's clock): an idle worker sleeps on its channel's
//!   doorbell and its delivery thread on the queue, with no periodic wake-up.
//! - **Scheduling**: both threads run in `SCHED_BATCH` ([`crate::sink::background_priority`]), so their wake-ups
//!   never preempt a reader.
//! - **Shutdown**: after the queue is closed, delivery continues until it is empty or `shutdown_timeout` passed;
//!   then whatever is still in memory is written in front of the spool (or, without one, counted as dropped).
//!   The budget is checked before each batch, between retries and while a request is in flight: a request still
//!   unanswered when it runs out is abandoned and its items kept (the destination may have stored them anyway, so
//!   they can arrive twice after the restart: at least once). When part of the batch was already settled
//!   (delivered, or dropped for good, e.g. after a 413 split), only the unsettled items are kept, as a new batch
//!   in front of the memory queue, so nothing is counted twice. A destination that is up but slow, with a
//!   backlog in memory and in the spool, therefore cannot hold the shutdown past the budget.
//! - **Per-sender accounting**: every batch records each item's sender ([`EncodedBatch::sender_of`], also in the
//!   spool), so each outcome is counted per destination *and* per sender (`SinkCounters::hosts`): skipped
//!   events once per slab from a local tally, delivered and dropped events once per delivered or failed range of
//!   items, spool-cap evictions per evicted segment, the spooled gauge whenever the spool changes. No lock and,
//!   in steady state, no allocation per event. When a destination reports a partial write (`Ok(n)`) without
//!   saying which items it refused, the last `n` items of the range are counted as the dropped ones.

use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{RecvTimeoutError, TryRecvError};
use tracing::{debug, error, info, warn};

use super::batch::{Batch, EncodedBatch};
use super::queue::{Accounts, DeliveryQueue, Next, Origin, Pushed, QueueSettings};
use super::retune::Retune;
use crate::config::{BatchConfig, RetryConfig};
use crate::event::handover::SlabReceiver;
use crate::sink::{Encoded, Encoder, SinkError, Transport};
use crate::telemetry::metrics::{now_unix_ns, HostTally, SinkCounters, SinkOutcome};

/// Counts items `range` of `batch` per sender under `outcome` (`scratch` is a reused tally). The destination's
/// totals are counted by the caller.
fn count_hosts(
    counters: &SinkCounters,
    outcome: SinkOutcome,
    batch: &EncodedBatch,
    range: Range<usize>,
    scratch: &mut HostTally,
) {
    scratch.clear();
    batch.tally(range, scratch);
    counters.hosts.add(outcome, scratch);
}

/// Publishes the spool's size now, in total and per sender.
fn publish_spooled(queue: &DeliveryQueue, counters: &SinkCounters) {
    counters.spooled.set(queue.spooled_events());
    counters.spool_bytes.set(queue.spooled_bytes());
    counters.hosts.set_spooled(&queue.spooled_hosts());
}

/// Everything a worker needs besides its encoder and transport.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Sink name for logs (`influxdb`, `new_relic:<account>`).
    pub name: String,
    /// Batching limits.
    pub batch: BatchConfig,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Memory queue and spool.
    pub queue: QueueSettings,
    /// How long delivery may continue after the readers stopped.
    pub shutdown_timeout: Duration,
    /// The engine's stop flag, when there is an engine: once set, the encoder no longer waits for room in a full
    /// memory queue (without a spool), so a stalled destination cannot hold the readers and the shutdown.
    pub stop: Option<Arc<AtomicBool>>,
}

impl WorkerSettings {
    /// Settings with a memory-only queue of 16 MiB and a 10 s shutdown budget (tests, benches).
    pub fn in_memory(name: &str, batch: BatchConfig, retry: RetryConfig) -> WorkerSettings {
        WorkerSettings {
            name: name.to_string(),
            batch,
            retry,
            queue: QueueSettings {
                max_memory_bytes: 16 << 20,
                spool: None,
            },
            shutdown_timeout: Duration::from_secs(10),
            stop: None,
        }
    }
}

/// Runs the worker until `rx` disconnects and the queue is delivered, spooled or (without a spool) counted lost.
/// `rx` is the engine's [`handover`](crate::event::handover) receiver, or a plain crossbeam receiver (`.into()`),
/// which wakes the encoder for every slab.
pub fn run<E, T>(
    settings: WorkerSettings,
    rx: impl Into<SlabReceiver>,
    encoder: E,
    transport: T,
    counters: Arc<SinkCounters>,
) where
    E: Encoder + 'static,
    T: Transport + Send + 'static,
{
    run_retunable(settings, rx.into(), encoder, transport, counters, None);
}

/// [`run`], taking a reloaded config's encoder, batch limits and retry policy from `retune` while it runs (see
/// [`crate::sink::delivery::retune`]).
pub fn run_retunable<E, T>(
    settings: WorkerSettings,
    rx: SlabReceiver,
    mut encoder: E,
    transport: T,
    counters: Arc<SinkCounters>,
    retune: Option<Arc<Retune<E>>>,
) where
    E: Encoder + 'static,
    T: Transport + Send + 'static,
{
    let queue = match DeliveryQueue::new(&settings.queue) {
        Ok(q) => q,
        Err(e) => {
            error!(sink = %settings.name, error = %e, "cannot open the spool; running with a memory queue only");
            let memory_only = QueueSettings {
                spool: None,
                ..settings.queue.clone()
            };
            match DeliveryQueue::new(&memory_only) {
                Ok(q) => q,
                Err(_) => unreachable!("a memory-only queue opens no file"),
            }
        }
    };
    let queue = queue.with_accounts(Accounts {
        name: settings.name.clone(),
        counters: Arc::clone(&counters),
    });
    let queue = Arc::new(match &settings.stop {
        Some(stop) => queue.with_stop_flag(Arc::clone(stop)),
        None => queue,
    });
    if queue.has_spool() {
        let cap = settings.queue.spool.as_ref().map_or(0, |s| s.max_bytes);
        counters.spool_max_bytes.set(cap);
    }
    let backlog = queue.spooled_events();
    if backlog > 0 {
        info!(sink = %settings.name, events = backlog, "replaying spooled events from an earlier run");
    }
    publish_spooled(&queue, &counters);
    let delivery = {
        let queue = Arc::clone(&queue);
        let counters = Arc::clone(&counters);
        let settings = settings.clone();
        let retune = retune.clone();
        std::thread::Builder::new()
            .name(format!("deliver-{}", settings.name))
            .spawn(move || {
                crate::sink::background_priority();
                deliver_loop(settings, queue, transport, counters, retune)
            })
    };
    let delivery = match delivery {
        Ok(h) => h,
        Err(e) => {
            error!(sink = %settings.name, error = %e, "cannot start the delivery thread; sink disabled");
            let mut lost = HostTally::default();
            for slab in rx.channel().iter() {
                counters.dropped.add(slab.len() as u64);
                lost.clear();
                for event in slab.events() {
                    lost.add(event.peer.ip().to_canonical(), 1);
                }
                counters.hosts.add(SinkOutcome::Dropped, &lost);
            }
            return;
        }
    };

    if let (Some(retune), Some(kicker)) = (&retune, rx.kicker()) {
        retune.wake_with(kicker);
    }
    let mut batch = Batch::new(settings.batch);
    // Events refused at shutdown by a full memory queue without a spool (counted dropped; logged once at the end).
    let mut refused_events = 0;
    let mut refused_hosts = HostTally::default();
    let mut hand_over = |batch: &mut Batch| {
        let empty = queue.take_buffers().unwrap_or_else(|| Batch::buffers(batch.limits()));
        let full = batch.take(empty);
        let Pushed { spooled, refused } = queue.push(full);
        if let Some(b) = refused {
            refused_events += b.len() as u64;
            counters.dropped.add(b.len() as u64);
            count_hosts(&counters, SinkOutcome::Dropped, &b, 0..b.len(), &mut refused_hosts);
        }
        if spooled {
            publish_spooled(&queue, &counters);
        }
    };
    // Skipped events of the current slab, per sender; merged once per slab.
    let mut skipped = HostTally::default();
    loop {
        // Timers exist only while there is work: an open batch, queue work (memory due for the spool, an fsync
        // owed), an encoder that writes on a clock. Without any, the encoder sleeps until a slab, the
        // disconnect or a reload's kick.
        let encoder_due = encoder.next_tick_ns().map(|due_ns| {
            let now_ns = now_unix_ns();
            Instant::now() + Duration::from_nanos(due_ns.saturating_sub(now_ns))
        });
        let wake = [batch.deadline(), queue.tick_deadline(), encoder_due]
            .into_iter()
            .flatten()
            .min();
        // An open batch waits for its age anyway: let the readers' slabs gather in the channel until the next
        // deadline instead of waking for each (at a trickle, one slab is one event), unless a quarter of the
        // batch's room arrived, the channel is half full or a reload kicks (`event::handover`). Without an open
        // batch, wait there for the first slab (or the next deadline) too: the channel's own blocking receive
        // yields the CPU four times before it sleeps. After a doze, take only what is there: it ended for a reason
        // (slabs, the deadline, a kick, the readers' end), and a kick must not be followed by a wait in the channel.
        let wake_after = if batch.is_empty() { 1 } else { batch.room() / 4 };
        let received = if rx.doze(wake, wake_after) {
            rx.channel().try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        } else {
            match wake {
                Some(wake) => rx
                    .channel()
                    .recv_timeout(wake.saturating_duration_since(Instant::now())),
                None => rx.channel().recv().map_err(|_| RecvTimeoutError::Disconnected),
            }
        };
        // Before the slab is encoded: a slab received after a reload was offered gets the new settings.
        if let Some(update) = retune.as_ref().and_then(|r| r.take()) {
            // What was encoded so far goes as it is; later events get the new encoder and limits.
            if !batch.is_empty() {
                hand_over(&mut batch);
            }
            encoder = update.encoder.unwrap_or(encoder);
            batch = Batch::new(update.batch);
            info!(sink = %settings.name, "reloaded settings in force");
        }
        match received {
            Ok(first) => {
                // The batch's age counts from each event's receipt, not from this pass: a doze (or a full
                // channel) may have kept it waiting, and maxAge bounds how long an event waits in the engine.
                let (now, now_ns) = (Instant::now(), now_unix_ns());
                // An age beyond maxAge only says "due at once": capping it there keeps the subtraction within
                // the monotonic clock's range whatever the wall clock did (a step, or no receive time at all).
                let max_age = batch.limits().max_age;
                let since = |received_ns: u64| {
                    let age = Duration::from_nanos(now_ns.saturating_sub(received_ns)).min(max_age);
                    now.checked_sub(age).unwrap_or(now)
                };
                // Every slab already waiting goes into this pass (after a doze, the batch's whole trickle), so
                // that a batch due now is not handed over before the slabs that gathered for it.
                let waiting = rx.channel().len();
                for slab in std::iter::once(first).chain(rx.channel().try_iter().take(waiting)) {
                    for event in slab.events() {
                        let mark = batch.buf().len();
                        let sender = event.peer.ip().to_canonical();
                        match encoder.encode(event, batch.buf()) {
                            Encoded::Yes => batch.commit(since(event.received_ns), event.received_ns, Some(sender)),
                            Encoded::Changed => {
                                counters.values_changed.inc();
                                batch.commit(since(event.received_ns), event.received_ns, Some(sender));
                            }
                            Encoded::Skipped(_) => {
                                batch.truncate_to(mark);
                                counters.skipped.inc();
                                skipped.add(sender, 1);
                            }
                        }
                        if batch.is_full() {
                            hand_over(&mut batch);
                        }
                    }
                    if !skipped.is_empty() {
                        counters.hosts.add(SinkOutcome::Skipped, &skipped);
                        skipped.clear();
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now_ns = now_unix_ns();
        if encoder.tick(now_ns, batch.buf()) > 0 {
            batch.commit(Instant::now(), now_ns, None); // an engine-generated line: no sender
        }
        if batch.should_flush(Instant::now()) {
            hand_over(&mut batch);
        }
        if queue.tick() > 0 {
            publish_spooled(&queue, &counters);
        }
    }
    if !batch.is_empty() {
        hand_over(&mut batch);
    }
    if refused_events > 0 {
        error!(
            sink = %settings.name, events = refused_events,
            "shutting down with the memory queue full and no spool: events dropped"
        );
    }
    queue.close();
    let _ = delivery.join();
}

/// The delivery thread: oldest batch first, until the queue is closed and empty or the shutdown budget is spent.
fn deliver_loop<T: Transport, E: 'static>(
    settings: WorkerSettings,
    queue: Arc<DeliveryQueue>,
    mut transport: T,
    counters: Arc<SinkCounters>,
    retune: Option<Arc<Retune<E>>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(sink = %settings.name, error = %e, "cannot start the sink runtime; events stay queued");
            return;
        }
    };
    rt.block_on(transport.start());
    let prepared = rt.block_on(contact_at_start(&settings, &mut transport, &queue));
    let mut delivery = Delivery {
        settings: &settings,
        counters: &counters,
        prepared,
        persistent: queue.has_spool(),
        scratch: HostTally::default(),
        tls_error_logged: false,
        spill_on_failure: false,
        carried: None,
        pause: Duration::ZERO,
        retry: retune.map(|r| Box::new(move || r.retry()) as Box<dyn Fn() -> RetryConfig>),
    };
    loop {
        // While the destination keeps answering, only this check ends delivery at shutdown: without it a slow
        // destination with a backlog (memory and spool) kept the worker delivering past the budget, the engine
        // stopped waiting for it and exited 1, and what was still in memory was neither delivered nor spooled.
        if delivery.out_of_time(&queue) {
            break;
        }
        // Waiting inside the runtime (not on the queue's condvar) lets the transport's background tasks run
        // between batches. No timeout: a push or the close wakes it, and the shutdown budget only runs once the
        // queue is closed (then `next` returns a batch or `Closed` without waiting).
        let next = rt.block_on(queue.next_async(None));
        match next {
            Next::Batch(origin, mut batch) => {
                // A batch the disk could not take before is offered to it again at each failure (the queue decides
                // whether the disk is tried again yet): held across the retries instead, it lived in RAM only
                // until the destination came back, however long the disk had space again.
                delivery.spill_on_failure = origin == Origin::Memory && delivery.persistent;
                // The items go to the HTTP client as one shared buffer (no copy per request) and come back for
                // reuse once the client has let go of them.
                let body = Bytes::from(std::mem::take(&mut batch.bytes));
                let outcome = rt.block_on(delivery.deliver(&mut transport, &batch, &body, &queue));
                batch.bytes = reclaim(body);
                match outcome {
                    Outcome::Finished => {
                        queue.done(origin, batch);
                        if origin == Origin::Spool {
                            publish_spooled(&queue, &counters);
                        }
                    }
                    Outcome::OutOfTime => {
                        queue.give_back(origin, batch);
                        break;
                    }
                    Outcome::PartlyOutOfTime(rest) => {
                        // The settled part is done; the rest goes in front of the memory queue, which is spooled
                        // (or, without a spool, counted as lost) below.
                        queue.done(origin, batch);
                        queue.give_back(Origin::Memory, rest);
                        if origin == Origin::Spool {
                            publish_spooled(&queue, &counters);
                        }
                        break;
                    }
                    Outcome::Spill(rest) => {
                        // The batch (or its unsettled rest) and everything behind it in memory go in front of the
                        // spool; the retries continue from there after the backoff.
                        let failed = match rest {
                            None => batch,
                            Some(rest) => {
                                queue.done(origin, batch);
                                rest
                            }
                        };
                        // Nothing moved: the disk failed (logged once while it fails); the batch waits in memory
                        // and is taken from there for the next attempt.
                        let mut kept = queue.spill(Some(failed)) == 0;
                        if !kept {
                            publish_spooled(&queue, &counters);
                        }
                        let until = Instant::now() + std::mem::take(&mut delivery.pause);
                        while Instant::now() < until && !delivery.out_of_time(&queue) {
                            let step = until
                                .saturating_duration_since(Instant::now())
                                .min(Duration::from_millis(100));
                            // The timer must be created inside the runtime.
                            rt.block_on(async { tokio::time::sleep(step).await });
                            // A batch the disk refused is offered to it again during the pause (the queue tries
                            // the disk once per retry time): it must not wait in RAM only for the next attempt,
                            // up to `maxBackoff` away, once there is space. Only this thread knows it is there:
                            // the encoder's timer last looked while the batch was out for delivery.
                            if kept && queue.spill(None) > 0 {
                                kept = false;
                                publish_spooled(&queue, &counters);
                            }
                        }
                    }
                }
            }
            Next::Idle => {}
            Next::Closed => break,
        }
    }
    rt.block_on(transport.close());
    let (saved, lost_batches) = queue.persist_remaining();
    publish_spooled(&queue, &counters);
    if saved > 0 {
        warn!(sink = %settings.name, events = saved, "shutdown budget spent: undelivered events kept in the spool");
    }
    let mut lost = 0;
    for b in &lost_batches {
        lost += b.len() as u64;
        count_hosts(&counters, SinkOutcome::Dropped, b, 0..b.len(), &mut delivery.scratch);
    }
    if lost > 0 {
        counters.dropped.add(lost);
        error!(sink = %settings.name, events = lost, "shutdown budget spent: undelivered events lost (no spool)");
    }
}

enum Outcome {
    /// Delivered, or dropped for good (counted).
    Finished,
    /// The shutdown budget ran out with this batch still undelivered.
    OutOfTime,
    /// The shutdown budget ran out after part of the batch was settled: these are its unsettled items.
    PartlyOutOfTime(EncodedBatch),
    /// A retriable failure of a batch from memory: spill it (or, when part of it is settled, these unsettled
    /// items) to the spool, then wait `Delivery::pause` before the next attempt.
    Spill(Option<EncodedBatch>),
}

struct Delivery<'a> {
    settings: &'a WorkerSettings,
    counters: &'a SinkCounters,
    prepared: bool,
    /// A spool holds the backlog, so retriable failures are retried without limit.
    persistent: bool,
    /// Reused per-sender tally.
    scratch: HostTally,
    /// The current outage's TLS failure was logged at ERROR already.
    tls_error_logged: bool,
    /// The batch being delivered came from memory and a spool is there: a retriable failure spills it.
    spill_on_failure: bool,
    /// Backoff and attempt number to continue with (the spilled batch is the next one delivered).
    carried: Option<(Duration, u32)>,
    /// How long to wait after a spill before the next attempt.
    pause: Duration,
    /// The retry policy in force (a reload may change it), read per batch; `None`: `settings.retry`.
    retry: Option<Box<dyn Fn() -> RetryConfig>>,
}

/// The longest the start-up contact may take: past it the destination is reported unreachable and the worker goes
/// on (events wait in the queue meanwhile, as during any outage).
pub const CONTACT_LIMIT: Duration = Duration::from_secs(10);

/// Contacts the destination once, before the first batch, and logs what came of it with its address: INFO when it
/// answered, one WARN naming the config keys to check when it did not. Never fails the worker: a destination that
/// is down at start is an outage like any other (events are queued, spooled and retried). True when the
/// destination is prepared. Skipped when a shutdown is already under way.
async fn contact_at_start<T: Transport>(settings: &WorkerSettings, transport: &mut T, queue: &DeliveryQueue) -> bool {
    if queue.closed_for().is_some() {
        return false;
    }
    let endpoint = transport.endpoint();
    let result = tokio::select! {
        result = tokio::time::timeout(CONTACT_LIMIT, transport.contact()) => result,
        () = budget_spent(queue, Duration::ZERO) => return false,
    };
    let error = match result {
        Ok(Ok(found)) => {
            info!(destination = %settings.name, address = %endpoint.address, %found, "destination answered at start");
            return true;
        }
        Ok(Err(e)) => e,
        Err(_) => SinkError::Connection(format!("no answer within {} s", CONTACT_LIMIT.as_secs())),
    };
    warn!(
        destination = %settings.name, address = %endpoint.address, %error,
        "cannot reach the destination at start; events are queued (and spooled) and retried until it answers; \
         check {}",
        endpoint.keys_to_check(&error)
    );
    false
}

/// Resolves once the queue has been closed for `budget` (the shutdown budget is spent). No timer runs before the
/// close, so racing a request against it costs nothing while the engine runs.
async fn budget_spent(queue: &DeliveryQueue, budget: Duration) {
    queue.closed().await;
    let spent = queue.closed_for().unwrap_or(budget);
    tokio::time::sleep(budget.saturating_sub(spent)).await;
}

impl Delivery<'_> {
    fn count_hosts(&mut self, outcome: SinkOutcome, batch: &EncodedBatch, range: Range<usize>) {
        count_hosts(self.counters, outcome, batch, range, &mut self.scratch);
    }

    /// True once the queue has been closed for the shutdown budget.
    fn out_of_time(&self, queue: &DeliveryQueue) -> bool {
        queue.closed_for().is_some_and(|d| d >= self.settings.shutdown_timeout)
    }

    /// Delivers a whole batch, splitting on 413. `body` holds the batch's items (`batch.bytes` is empty meanwhile).
    async fn deliver<T: Transport>(
        &mut self,
        transport: &mut T,
        batch: &EncodedBatch,
        body: &Bytes,
        queue: &DeliveryQueue,
    ) -> Outcome {
        let started = Instant::now();
        let mut pending: Vec<Range<usize>> = Vec::with_capacity(8);
        pending.push(0..batch.len());
        // Some items were delivered or dropped for good: from then on the batch cannot be kept whole.
        let mut settled_any = false;
        while let Some(range) = pending.pop() {
            let count = range.len();
            if count == 0 {
                continue;
            }
            let first_attempt = Instant::now();
            match self
                .send_with_retries(transport, batch.item_bytes(body, range.clone()), count, queue)
                .await
            {
                Ok(rejected) => {
                    let rejected = rejected.min(count);
                    // Which items were refused is not reported: count the last `rejected` ones as dropped.
                    let split = range.end - rejected;
                    if rejected > 0 {
                        self.counters.dropped.add(rejected as u64);
                        self.count_hosts(SinkOutcome::Dropped, batch, split..range.end);
                        error!(sink = %self.settings.name, events = rejected, "destination rejected part of a batch");
                    }
                    self.counters.delivered.add((count - rejected) as u64);
                    self.count_hosts(SinkOutcome::Delivered, batch, range.start..split);
                    self.counters.batches.inc();
                    self.counters.batch_latency.record(first_attempt.elapsed());
                    self.counters.failing_since.mark_ok();
                    if let Some(received) = batch.received_ns.get(range.clone()) {
                        let now = now_unix_ns();
                        for &r in received {
                            self.counters
                                .event_latency
                                .record(Duration::from_nanos(now.saturating_sub(r)));
                        }
                    }
                    settled_any = true;
                }
                Err(Failure::OutOfTime) if !settled_any => return Outcome::OutOfTime,
                Err(Failure::Spill) if !settled_any => return Outcome::Spill(None),
                Err(Failure::Spill) => {
                    let mut rest: Vec<Range<usize>> = std::mem::take(&mut pending);
                    rest.push(range);
                    rest.sort_by_key(|r| r.start);
                    return Outcome::Spill(Some(batch.extract(body, &rest)));
                }
                Err(Failure::OutOfTime) => {
                    // Part of the batch is settled: keep exactly the unsettled items, in their original order.
                    let mut rest: Vec<Range<usize>> = std::mem::take(&mut pending);
                    rest.push(range);
                    rest.sort_by_key(|r| r.start);
                    return Outcome::PartlyOutOfTime(batch.extract(body, &rest));
                }
                Err(Failure::Final(e)) if e.is_too_large() && count > 1 => {
                    let mid = range.start + count / 2;
                    warn!(sink = %self.settings.name, events = count, "destination said 413: splitting batch");
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
                Err(Failure::Final(e)) => {
                    self.counters.failing_since.mark_failed();
                    self.counters.dropped.add(count as u64);
                    self.count_hosts(SinkOutcome::Dropped, batch, range);
                    settled_any = true;
                    error!(sink = %self.settings.name, events = count, error = %e, "batch not delivered; events lost");
                }
            }
        }
        debug!(
            sink = %self.settings.name,
            events = batch.len(),
            bytes = body.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch flushed"
        );
        Outcome::Finished
    }

    async fn send_with_retries<T: Transport>(
        &mut self,
        transport: &mut T,
        items: Bytes,
        count: usize,
        queue: &DeliveryQueue,
    ) -> Result<usize, Failure> {
        let retry = self.retry.as_ref().map_or(self.settings.retry, |retry| retry());
        let (mut backoff, mut attempt) = self.carried.take().unwrap_or((retry.initial_backoff, 1));
        loop {
            let prepared = &mut self.prepared;
            let attempt_once = async {
                if *prepared {
                    transport.send_shared(items.clone(), count).await
                } else {
                    match transport.prepare().await {
                        Ok(()) => {
                            *prepared = true;
                            transport.send_shared(items.clone(), count).await
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            let result = tokio::select! {
                result = attempt_once => result,
                () = budget_spent(queue, self.settings.shutdown_timeout) => return Err(Failure::OutOfTime),
            };
            let e = match result {
                Ok(rejected) => {
                    self.tls_error_logged = false;
                    return Ok(rejected);
                }
                Err(e) => e,
            };
            self.counters.failing_since.mark_failed();
            if matches!(e, SinkError::Tls(_)) && !self.tls_error_logged {
                // Once per outage: a TLS failure does not heal by itself (wrong CA file, certificate, name).
                self.tls_error_logged = true;
                error!(
                    sink = %self.settings.name, error = %e,
                    "TLS handshake with the destination failed: check its certificate and the CA settings \
                     (sense-ingest.influxdbTls / newRelicTls); events stay queued and are retried"
                );
            }
            let may_retry = e.is_retriable() && (self.persistent || attempt < retry.max_attempts);
            if !may_retry {
                return Err(Failure::Final(e));
            }
            if self.out_of_time(queue) {
                return Err(Failure::OutOfTime);
            }
            let wait = e.retry_after().unwrap_or(backoff).min(retry.max_backoff);
            warn!(
                sink = %self.settings.name, attempt, error = %e, retry_in_ms = wait.as_millis() as u64,
                "send failed; retrying"
            );
            self.counters.retries.inc();
            if std::mem::take(&mut self.spill_on_failure) {
                self.carried = Some(((backoff * 2).min(retry.max_backoff), attempt.saturating_add(1)));
                self.pause = wait;
                return Err(Failure::Spill);
            }
            // Sleep in short steps so a shutdown is noticed promptly.
            let until = Instant::now() + wait;
            while Instant::now() < until {
                tokio::time::sleep(
                    until
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(100)),
                )
                .await;
                if self.out_of_time(queue) {
                    return Err(Failure::OutOfTime);
                }
            }
            backoff = (backoff * 2).min(retry.max_backoff);
            attempt = attempt.saturating_add(1);
        }
    }
}

/// The buffer behind `body` as a `Vec` again: without a copy when nothing else holds it any more (the usual case:
/// the HTTP client drops its handle once the request is written), else a copy (a request still in flight).
fn reclaim(body: Bytes) -> Vec<u8> {
    match body.try_into_mut() {
        Ok(unique) => Vec::from(unique),
        Err(shared) => shared.to_vec(),
    }
}

enum Failure {
    Final(SinkError),
    OutOfTime,
    /// A retriable failure while `Delivery::spill_on_failure` was set: the caller spills, then retries.
    Spill,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::sink::delivery::queue::SpoolSettings;
    use crate::sink::delivery::retune::Update;
    use crate::sink::Endpoint;
    use crate::testing::wait_until;

    /// No reload hook (the delivery tests run without one).
    const NO_RETUNE: Option<Arc<Retune<()>>> = None;

    /// Accepts every batch after `delay` (forever when `None`), counting the events it accepted.
    struct SlowTransport {
        delay: Option<Duration>,
        accepted: Arc<AtomicUsize>,
    }

    impl Transport for SlowTransport {
        async fn prepare(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
        fn endpoint(&self) -> Endpoint {
            Endpoint::for_tests()
        }
        async fn send(&mut self, _items: &[u8], count: usize) -> Result<usize, SinkError> {
            match self.delay {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
            self.accepted.fetch_add(count, Ordering::Relaxed);
            Ok(0)
        }
    }

    const BATCHES: usize = 200;
    const PER_BATCH: usize = 10;

    /// A queue spooling in `dir` (cap 1 GiB) with `max_memory_bytes` of memory and `fsync_interval`.
    fn spooling_queue(dir: &std::path::Path, max_memory_bytes: usize, fsync_interval: Duration) -> DeliveryQueue {
        DeliveryQueue::new(&QueueSettings {
            max_memory_bytes,
            spool: Some(SpoolSettings {
                dir: dir.to_path_buf(),
                max_bytes: 1 << 30,
                fsync_interval,
            }),
        })
        .unwrap()
    }

    /// A closed queue holding [`BATCHES`] batches of [`PER_BATCH`] events: half in memory, the rest in a spool in
    /// `dir`.
    fn backlog(dir: &std::path::Path) -> Arc<DeliveryQueue> {
        let queue = spooling_queue(dir, BATCHES / 2 * PER_BATCH * 5, Duration::from_secs(1));
        let limits = BatchConfig {
            max_events: PER_BATCH,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(1),
        };
        let mut batch = Batch::new(limits);
        for _ in 0..BATCHES {
            for _ in 0..PER_BATCH {
                batch.buf().extend_from_slice(b"line\n");
                batch.commit(Instant::now(), 1, None);
            }
            queue.push(batch.take(Batch::buffers(limits)));
        }
        assert!(queue.spooled_events() > 0, "part of the backlog is on disk");
        queue.close();
        Arc::new(queue)
    }

    /// Runs the delivery side on `queue` with a 300 ms shutdown budget; returns how long it took, the events
    /// the transport accepted and the counters.
    fn shut_down(queue: &Arc<DeliveryQueue>, delay: Option<Duration>) -> (Duration, usize, Arc<SinkCounters>) {
        let mut settings = WorkerSettings::in_memory("test", BatchConfig::default(), RetryConfig::default());
        settings.shutdown_timeout = Duration::from_millis(300);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counters = Arc::new(SinkCounters::default());
        let transport = SlowTransport {
            delay,
            accepted: Arc::clone(&accepted),
        };
        let started = Instant::now();
        deliver_loop(settings, Arc::clone(queue), transport, Arc::clone(&counters), NO_RETUNE);
        (started.elapsed(), accepted.load(Ordering::Relaxed), counters)
    }

    #[test]
    fn a_slow_destination_with_a_backlog_cannot_hold_the_shutdown_past_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let queue = backlog(dir.path());
        // 200 batches at 20 ms each would take 4 s.
        let (took, accepted, counters) = shut_down(&queue, Some(Duration::from_millis(20)));
        assert!(took < Duration::from_secs(2), "delivery went on for {took:?}");
        assert!(accepted > 0 && accepted < BATCHES * PER_BATCH, "{accepted}");
        assert_eq!(counters.delivered.get(), accepted as u64);
        assert_eq!(counters.dropped.get(), 0);
        // Everything not delivered is in the spool (the memory part was written in front of it).
        assert_eq!(queue.spooled_events() + accepted as u64, (BATCHES * PER_BATCH) as u64);
    }

    /// 413 for more than 5 events; then 400 for the first request of at most 5; then no answer.
    struct SplitThenHang {
        calls: usize,
    }

    impl Transport for SplitThenHang {
        async fn prepare(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
        fn endpoint(&self) -> Endpoint {
            Endpoint::for_tests()
        }
        async fn send(&mut self, _items: &[u8], count: usize) -> Result<usize, SinkError> {
            let status = |status| SinkError::Status {
                status,
                retry_after: None,
                message: String::new(),
            };
            if count > 5 {
                return Err(status(413));
            }
            self.calls += 1;
            if self.calls == 1 {
                return Err(status(400));
            }
            std::future::pending::<()>().await;
            unreachable!()
        }
    }

    #[test]
    fn out_of_time_after_part_of_a_batch_was_settled_keeps_only_the_unsettled_items() {
        let dir = tempfile::tempdir().unwrap();
        let queue = spooling_queue(dir.path(), 1 << 20, Duration::from_secs(1));
        let limits = BatchConfig {
            max_events: 10,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(1),
        };
        let mut batch = Batch::new(limits);
        for i in 0..10u8 {
            batch.buf().extend_from_slice(&[b'a' + i, b'\n']);
            batch.commit(Instant::now(), 1, None);
        }
        queue.push(batch.take(Batch::buffers(limits)));
        queue.close();
        let queue = Arc::new(queue);
        let mut settings = WorkerSettings::in_memory("test", BatchConfig::default(), RetryConfig::default());
        settings.shutdown_timeout = Duration::from_millis(300);
        let counters = Arc::new(SinkCounters::default());
        deliver_loop(
            settings,
            Arc::clone(&queue),
            SplitThenHang { calls: 0 },
            Arc::clone(&counters),
            NO_RETUNE,
        );
        // The first half was refused for good (dropped once); the second half, unanswered, is in the spool.
        assert_eq!(counters.dropped.get(), 5);
        assert_eq!(counters.delivered.get(), 0);
        assert_eq!(queue.spooled_events(), 5);
        match queue.next() {
            Next::Batch(Origin::Spool, kept) => assert_eq!(kept.items(0..kept.len()), b"f\ng\nh\ni\nj\n"),
            other => panic!("expected the spooled rest, got {other:?}"),
        }
    }

    /// Refuses every write (a connection error, retriable) while `down` is set, then accepts, recording each
    /// accepted batch's first item.
    struct Outage {
        down: Arc<AtomicBool>,
        attempts: Arc<AtomicUsize>,
        accepted: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Transport for Outage {
        async fn prepare(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
        fn endpoint(&self) -> Endpoint {
            Endpoint::for_tests()
        }
        async fn send(&mut self, items: &[u8], _count: usize) -> Result<usize, SinkError> {
            self.attempts.fetch_add(1, Ordering::Relaxed);
            if self.down.load(Ordering::Relaxed) {
                return Err(SinkError::Connection("refused".into()));
            }
            self.accepted.lock().unwrap().push(items[0]);
            Ok(0)
        }
    }

    /// One line per event, whatever it holds.
    struct Lines;

    impl Encoder for Lines {
        fn encode(&mut self, _event: &crate::event::Event, out: &mut Vec<u8>) -> Encoded {
            out.extend_from_slice(b"line\n");
            Encoded::Yes
        }
    }

    /// A slab of one event received at `received_ns`.
    fn slab_received(pool: &Arc<crate::event::slab::SlabPool>, received_ns: u64) -> crate::event::slab::Slab {
        let mut w = pool.take();
        w.next_slot().received_ns = received_ns;
        w.commit();
        w.share()
    }

    /// A worker on a doorbell channel with `max_age`, delivering at once; returns the sender, the counters and
    /// the reload hook.
    fn worker_with_age(
        max_age: Duration,
    ) -> (
        crate::event::handover::SlabSender,
        Arc<SinkCounters>,
        Arc<Retune<Lines>>,
        std::thread::JoinHandle<()>,
    ) {
        let (tx, rx) = crate::event::handover::channel(16);
        let batch = BatchConfig {
            max_age,
            ..BatchConfig::default()
        };
        let settings = WorkerSettings::in_memory("test", batch, RetryConfig::default());
        let counters = Arc::new(SinkCounters::default());
        let retune = Arc::new(Retune::new(RetryConfig::default()));
        let transport = SlowTransport {
            delay: Some(Duration::ZERO),
            accepted: Arc::new(AtomicUsize::new(0)),
        };
        let (c, r) = (Arc::clone(&counters), Arc::clone(&retune));
        let worker = std::thread::spawn(move || run_retunable(settings, rx, Lines, transport, c, Some(r)));
        (tx, counters, retune, worker)
    }

    /// A worker with a one-minute `maxAge` delivers an event received at `received_ns` well before that minute.
    fn delivered_before_its_batch_age(received_ns: u64) {
        let pool = crate::event::slab::SlabPool::new(4, 16);
        let (tx, counters, _retune, worker) = worker_with_age(Duration::from_secs(60));
        tx.send(slab_received(&pool, received_ns)).unwrap();
        wait_until("the overdue event delivered", || counters.delivered.get() == 1);
        drop(tx);
        worker.join().unwrap();
    }

    #[test]
    fn max_age_counts_from_the_events_receipt_not_from_when_the_encoder_took_it() {
        // An event that already waited 59.9 s (in a reader's linger, a full channel, a doze) is due now, not a
        // minute after the encoder took it.
        delivered_before_its_batch_age(now_unix_ns() - 59_900_000_000);
    }

    #[test]
    fn an_event_without_a_receive_time_or_from_before_a_clock_step_is_due_at_once() {
        delivered_before_its_batch_age(0); // 56 years before now: further back than the monotonic clock goes
    }

    #[test]
    fn a_reload_reaches_a_worker_that_dozes_with_an_open_batch_at_once() {
        let pool = crate::event::slab::SlabPool::new(4, 16);
        let (tx, counters, retune, worker) = worker_with_age(Duration::from_secs(60));
        tx.send(slab_received(&pool, now_unix_ns())).unwrap();
        // The worker took the slab and dozes for a minute with its batch open (a doze seen while the slab still
        // waited could be the wait for it, which a kick ends too); the reload hands that batch over first.
        wait_until("the worker dozing with its batch open", || tx.receiver_dozes());
        retune.offer(reload());
        wait_until("the batch of the old settings delivered", || {
            counters.delivered.get() == 1
        });
        drop(tx);
        worker.join().unwrap();
    }

    fn reload() -> Update<Lines> {
        Update {
            encoder: Some(Lines),
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
        }
    }

    #[test]
    fn a_reload_reaches_an_idle_worker_at_once_not_with_the_next_event() {
        // The worker delivered what came and waits for the next slab with no batch open: a reload must not wait
        // with it ("reloaded settings in force" would otherwise appear with the next event, maybe hours later).
        let pool = crate::event::slab::SlabPool::new(4, 16);
        let (tx, counters, retune, worker) = worker_with_age(Duration::from_secs(60));
        tx.send(slab_received(&pool, 0)).unwrap(); // due at once
        wait_until("the event delivered", || counters.delivered.get() == 1);
        retune.offer(reload());
        wait_until("the idle worker took the reload", || !retune.is_pending());
        drop(tx);
        worker.join().unwrap();
    }

    #[test]
    fn a_reload_offered_while_the_worker_starts_is_taken_without_an_event() {
        let (tx, rx) = crate::event::handover::channel(16);
        let settings = WorkerSettings::in_memory("test", BatchConfig::default(), RetryConfig::default());
        let counters = Arc::new(SinkCounters::default());
        let retune = Arc::new(Retune::new(RetryConfig::default()));
        retune.offer(reload()); // before the worker registers its kicker
        let transport = SlowTransport {
            delay: Some(Duration::ZERO),
            accepted: Arc::new(AtomicUsize::new(0)),
        };
        let r = Arc::clone(&retune);
        let worker = std::thread::spawn(move || run_retunable(settings, rx, Lines, transport, counters, Some(r)));
        wait_until("the starting worker took the reload", || !retune.is_pending());
        drop(tx);
        worker.join().unwrap();
    }

    #[test]
    fn a_retriable_failure_moves_the_failed_batch_and_memory_to_the_spool_and_delivery_resumes_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(
            // Everything fits in memory, and only the failure moves batches (no timer within the test).
            spooling_queue(dir.path(), 1 << 30, Duration::from_secs(3600)),
        );
        let limits = BatchConfig {
            max_events: PER_BATCH,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(1),
        };
        let push = |tag: u8| {
            let mut batch = Batch::new(limits);
            for _ in 0..PER_BATCH {
                batch.buf().extend_from_slice(&[tag, b'\n']);
                batch.commit(Instant::now(), 1, None);
            }
            queue.push(batch.take(Batch::buffers(limits)));
        };
        for tag in b'a'..=b'e' {
            push(tag);
        }
        assert_eq!(queue.spooled_events(), 0, "all in memory before the first attempt");
        let down = Arc::new(AtomicBool::new(true));
        let attempts = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let counters = Arc::new(SinkCounters::default());
        let mut settings = WorkerSettings::in_memory("test", BatchConfig::default(), RetryConfig::default());
        settings.retry.initial_backoff = Duration::from_millis(5);
        settings.retry.max_backoff = Duration::from_millis(20);
        let delivery = {
            let (queue, counters) = (Arc::clone(&queue), Arc::clone(&counters));
            let transport = Outage {
                down: Arc::clone(&down),
                attempts: Arc::clone(&attempts),
                accepted: Arc::clone(&accepted),
            };
            std::thread::spawn(move || deliver_loop(settings, queue, transport, counters, NO_RETUNE))
        };
        // The first refusal moves all five batches (the failed one first) to the spool; later ones go there too.
        wait_until("the first refusal", || attempts.load(Ordering::Relaxed) >= 1);
        wait_until("memory spilled", || queue.spooled_events() == 5 * PER_BATCH as u64);
        push(b'f');
        assert_eq!(queue.spooled_events(), 6 * PER_BATCH as u64);
        wait_until("the gauge", || counters.spooled.get() >= 5 * PER_BATCH as u64);
        wait_until("retries from the spool", || attempts.load(Ordering::Relaxed) >= 3);
        down.store(false, Ordering::Relaxed);
        wait_until("every batch delivered", || accepted.lock().unwrap().len() == 6);
        queue.close();
        delivery.join().unwrap();
        assert_eq!(*accepted.lock().unwrap(), b"abcdef");
        assert_eq!(counters.delivered.get(), 6 * PER_BATCH as u64);
        assert_eq!((counters.dropped.get(), counters.spooled.get()), (0, 0));
        assert_eq!(queue.spooled_events(), 0);
    }

    #[test]
    fn a_request_unanswered_when_the_budget_runs_out_is_abandoned_and_its_batch_kept() {
        let dir = tempfile::tempdir().unwrap();
        let queue = backlog(dir.path());
        let (took, accepted, counters) = shut_down(&queue, None);
        assert!(took < Duration::from_secs(2), "delivery went on for {took:?}");
        assert_eq!(accepted, 0);
        assert_eq!(counters.dropped.get(), 0);
        assert_eq!(queue.spooled_events(), (BATCHES * PER_BATCH) as u64);
    }

    /// Never answers; says when a request is in flight.
    struct Hang {
        in_flight: Arc<AtomicBool>,
    }

    impl Transport for Hang {
        async fn prepare(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
        fn endpoint(&self) -> Endpoint {
            Endpoint::for_tests()
        }
        async fn send(&mut self, _items: &[u8], _count: usize) -> Result<usize, SinkError> {
            self.in_flight.store(true, Ordering::Release);
            std::future::pending().await
        }
    }

    #[test]
    fn a_close_while_a_request_is_in_flight_cuts_it_at_the_budget_and_keeps_its_batch() {
        // The budget race waits for the close without a timer; a close that comes while the request already
        // waits for its answer must still end it once the budget is spent.
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(spooling_queue(dir.path(), 1 << 30, Duration::from_secs(3600)));
        let limits = BatchConfig::default();
        let mut batch = Batch::new(limits);
        for _ in 0..PER_BATCH {
            batch.buf().extend_from_slice(b"x\n");
            batch.commit(Instant::now(), 1, None);
        }
        queue.push(batch.take(Batch::buffers(limits)));
        let mut settings = WorkerSettings::in_memory("test", BatchConfig::default(), RetryConfig::default());
        settings.shutdown_timeout = Duration::from_millis(300);
        let in_flight = Arc::new(AtomicBool::new(false));
        let delivery = {
            let queue = Arc::clone(&queue);
            let transport = Hang {
                in_flight: Arc::clone(&in_flight),
            };
            let counters = Arc::new(SinkCounters::default());
            std::thread::spawn(move || deliver_loop(settings, queue, transport, counters, NO_RETUNE))
        };
        wait_until("the request in flight", || in_flight.load(Ordering::Acquire));
        queue.close();
        wait_until("the unanswered request cut at the budget", || delivery.is_finished());
        delivery.join().unwrap();
        assert_eq!(queue.spooled_events(), PER_BATCH as u64, "the abandoned batch is kept");
    }

    #[test]
    fn damage_found_when_the_spool_opens_is_counted_and_the_rest_delivered() {
        use crate::sink::delivery::batch::EncodedBatch;
        use crate::sink::delivery::spool::Spool;
        let dir = tempfile::tempdir().unwrap();
        let record = |n: usize| {
            let mut b = EncodedBatch::default();
            for _ in 0..n {
                b.bytes.extend_from_slice(b"line\n");
                b.ends.push(b.bytes.len() as u32);
            }
            b
        };
        let mut spool = Spool::open(dir.path(), 1 << 30).unwrap();
        spool.append(&record(3)).unwrap();
        spool.append(&record(4)).unwrap();
        drop(spool);
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "spool"))
            .unwrap();
        let mut data = std::fs::read(&segment).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff; // the second record's last byte
        std::fs::write(&segment, data).unwrap();
        let queue = Arc::new(spooling_queue(dir.path(), 1 << 20, Duration::from_secs(1)));
        queue.close();
        let (_, accepted, counters) = shut_down(&queue, Some(Duration::ZERO));
        assert_eq!((accepted, counters.delivered.get()), (3, 3));
        // The queue counts its own losses (the worker hands it the destination's counters in `run`).
        let lost = queue.counters();
        assert_eq!(lost.spool_damaged_records.get(), 1);
        assert_eq!(
            lost.dropped.get(),
            0,
            "how many events the damaged record held is not known"
        );
    }
}
