//! The batched sink worker shared by every HTTP destination.
//!
//! Runs on its own OS thread (crossbeam's blocking `recv` must never run inside an async task) and drives its
//! own single-threaded tokio runtime only for the HTTP calls. Order of work for each slab: encode every event into
//! the batch, drop the slab (back to the pool), flush when the batch is full or its oldest event reached
//! `max_age`. When the channel disconnects (readers stopped), the last batch is flushed and the worker returns.
//!
//! Delivery of one batch: `prepare` once (retried like a write), then send; on 413 split in halves (down to single
//! events); on a retriable error back off (doubling from `initial_backoff` to `max_backoff`, or `Retry-After`) up to
//! `max_attempts`; every event that is not delivered in the end is counted in `dropped` and logged at ERROR.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tracing::{debug, error, warn};

use super::batch::Batch;
use super::{Encoded, Encoder, SinkError, Transport};
use crate::config::{BatchConfig, RetryConfig};
use crate::event::slab::Slab;
use crate::telemetry::metrics::SinkCounters;

/// Everything a worker needs besides its encoder and transport.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Sink name for logs (`influxdb`, `new_relic:<account>`).
    pub name: String,
    /// Batching limits.
    pub batch: BatchConfig,
    /// Retry policy.
    pub retry: RetryConfig,
}

/// Runs the worker until `rx` disconnects and the last batch is delivered or dropped.
pub fn run<E: Encoder, T: Transport>(
    settings: WorkerSettings,
    rx: Receiver<Slab>,
    mut encoder: E,
    mut transport: T,
    counters: Arc<SinkCounters>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(sink = %settings.name, error = %e, "cannot start sink runtime; sink disabled");
            // Drain so readers never block on us; count everything as dropped.
            for slab in rx.iter() {
                counters.dropped.add(slab.len() as u64);
            }
            return;
        }
    };
    let mut batch = Batch::new(settings.batch);
    let mut delivery = Delivery {
        settings: &settings,
        counters: &counters,
        prepared: false,
    };
    loop {
        let wait = batch
            .deadline()
            .map_or(Duration::from_secs(1), |d| d.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(slab) => {
                let now = Instant::now();
                for event in slab.events() {
                    let mark = batch.buf().len();
                    match encoder.encode(event, batch.buf()) {
                        Encoded::Yes => batch.commit(now),
                        Encoded::Changed => {
                            counters.values_changed.inc();
                            batch.commit(now);
                        }
                        Encoded::Skipped(_) => {
                            batch.truncate_to(mark);
                            counters.skipped.inc();
                        }
                    }
                    if batch.is_full() {
                        rt.block_on(delivery.deliver(&mut transport, &batch));
                        batch.clear();
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if !batch.is_empty() {
                    rt.block_on(delivery.deliver(&mut transport, &batch));
                }
                return;
            }
        }
        if batch.should_flush(Instant::now()) {
            rt.block_on(delivery.deliver(&mut transport, &batch));
            batch.clear();
        }
    }
}

struct Delivery<'a> {
    settings: &'a WorkerSettings,
    counters: &'a SinkCounters,
    prepared: bool,
}

impl Delivery<'_> {
    /// Delivers the whole batch, splitting on 413.
    async fn deliver<T: Transport>(&mut self, transport: &mut T, batch: &Batch) {
        let started = Instant::now();
        // Explicit stack instead of recursion (async recursion would need boxing).
        let mut pending: Vec<Range<usize>> = Vec::with_capacity(8);
        pending.push(0..batch.len());
        while let Some(range) = pending.pop() {
            let count = range.len();
            match self
                .send_with_retries(transport, batch.items(range.clone()), count)
                .await
            {
                Ok(()) => {
                    self.counters.delivered.add(count as u64);
                    self.counters.batches.inc();
                }
                Err(e) if e.is_too_large() && count > 1 => {
                    let mid = range.start + count / 2;
                    warn!(sink = %self.settings.name, events = count, "destination said 413: splitting batch");
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
                Err(e) => {
                    self.counters.dropped.add(count as u64);
                    error!(sink = %self.settings.name, events = count, error = %e, "batch not delivered; events lost");
                }
            }
        }
        debug!(
            sink = %self.settings.name,
            events = batch.len(),
            bytes = batch.items(0..batch.len()).len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch flushed"
        );
    }

    async fn send_with_retries<T: Transport>(
        &mut self,
        transport: &mut T,
        items: &[u8],
        count: usize,
    ) -> Result<(), SinkError> {
        let retry = self.settings.retry;
        let mut backoff = retry.initial_backoff;
        let mut attempt = 1;
        loop {
            let result = if self.prepared {
                transport.send(items, count).await
            } else {
                match transport.prepare().await {
                    Ok(()) => {
                        self.prepared = true;
                        transport.send(items, count).await
                    }
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retriable() && attempt < retry.max_attempts => {
                    let wait = e.retry_after().unwrap_or(backoff).min(retry.max_backoff);
                    warn!(
                        sink = %self.settings.name, attempt, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "send failed; retrying"
                    );
                    self.counters.retries.inc();
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(retry.max_backoff);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
