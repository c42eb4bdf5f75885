//! What a running destination takes from a reloaded config (SIGHUP): its encoder (which holds
//! `userEvents.tags`), its batch limits and its retry policy.
//!
//! The reload thread [`Retune::offer`]s an [`Update`]; the worker's intake thread picks it up when it next wakes
//! ([`Retune::take`], one atomic load when nothing is pending): at once, since the offer kicks it out of its wait,
//! with a batch open or not (see [`crate::event::handover`]); an offer made before the worker registered its
//! kicker is kicked when it does ([`Retune::wake_with`]). It hands the batch it was filling to
//! the queue first, then encodes with the new encoder into a batch with the new limits. Batches already queued or
//! spooled keep the encoding they were made with, so nothing queued is lost or re-encoded. The retry policy is read
//! by the delivery thread at the start of each batch ([`Retune::retry`]).

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::config::{BatchConfig, RetryConfig};
use crate::event::handover::Kicker;

/// New settings for one destination.
#[derive(Debug)]
pub struct Update<E> {
    /// The new encoder; `None` keeps the current one (an encoder with state, such as session analytics, or one
    /// whose settings did not change).
    pub encoder: Option<E>,
    /// The new batch limits.
    pub batch: BatchConfig,
    /// The new retry policy.
    pub retry: RetryConfig,
}

/// The hand-over point between the reload thread and one destination's worker (see the module docs).
#[derive(Debug)]
pub struct Retune<E> {
    pending: AtomicBool,
    next: Mutex<Option<Update<E>>>,
    retry: Mutex<RetryConfig>,
    /// Wakes the worker's intake thread from a doze (set by the worker when it starts).
    waker: OnceLock<Kicker>,
}

impl<E> Retune<E> {
    /// A hand-over point with nothing pending; `retry` is the policy in force.
    pub fn new(retry: RetryConfig) -> Retune<E> {
        Retune {
            pending: AtomicBool::new(false),
            next: Mutex::new(None),
            retry: Mutex::new(retry),
            waker: OnceLock::new(),
        }
    }

    /// The worker's intake thread: how an offer wakes it from its wait on the channel's doorbell.
    /// An offer made before this (a reload while the worker was starting) kicks at once, so it is not left
    /// waiting for the first slab.
    pub fn wake_with(&self, kicker: Kicker) {
        let _ = self.waker.set(kicker);
        // Pairs with the fence in `offer` (the store-buffer pattern): either the offer sees the kicker, or this
        // sees the offer pending; a kick from both is harmless.
        fence(Ordering::SeqCst);
        if self.pending.load(Ordering::Acquire) {
            if let Some(kicker) = self.waker.get() {
                kicker.kick();
            }
        }
    }

    /// Offers `update`; an update not yet taken is replaced (the latest config wins). The retry policy is in force
    /// for the next batch at once.
    pub fn offer(&self, update: Update<E>) {
        *self.retry.lock().unwrap_or_else(|e| e.into_inner()) = update.retry;
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = Some(update);
        self.pending.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        if let Some(kicker) = self.waker.get() {
            kicker.kick();
        }
    }

    /// The pending update, if any (the intake thread, between slabs).
    pub fn take(&self) -> Option<Update<E>> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return None;
        }
        self.next.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// True while an offered update waits for the intake thread (for tests).
    #[cfg(test)]
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The retry policy in force.
    pub fn retry(&self) -> RetryConfig {
        *self.retry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_latest_offer_wins_and_is_taken_once() {
        let retune: Retune<&str> = Retune::new(RetryConfig::default());
        assert!(retune.take().is_none());
        let retry = |attempts| RetryConfig {
            max_attempts: attempts,
            ..RetryConfig::default()
        };
        let batch = |age| BatchConfig {
            max_age: Duration::from_millis(age),
            ..BatchConfig::default()
        };
        retune.offer(Update {
            encoder: Some("first"),
            batch: batch(1),
            retry: retry(2),
        });
        retune.offer(Update {
            encoder: Some("second"),
            batch: batch(3),
            retry: retry(4),
        });
        assert_eq!(
            retune.retry().max_attempts,
            4,
            "the retry policy is in force before the update is taken"
        );
        let update = retune.take().unwrap();
        assert_eq!(update.encoder, Some("second"));
        assert_eq!(update.batch.max_age, Duration::from_millis(3));
        assert!(retune.take().is_none(), "taken once");
    }
}
