//! The reader → destination handover: a bounded channel of slabs with a doorbell.
//!
//! A destination batches events and sends a batch when it is full or its oldest event reached `maxAge`. While a
//! batch is open and far from full, waking the destination's thread for every slab a reader hands over buys
//! nothing: the batch waits for its age anyway. At a real farm's trickle (tens of events a second, one event per
//! slab) those wake-ups are most of the engine's CPU. So a destination with an open batch may [`doze`]: sleep
//! until its next deadline, while slabs gather in the channel, unless enough events arrive to fill a part of
//! the batch (`wake_after`), the channel is half full, the readers are gone, or someone [`Kicker::kick`]s it (a
//! reloaded config). The senders ring the bell only then; otherwise a send costs one fence and one atomic load
//! more than a plain channel's.
//!
//! Without an open batch the destination waits on the same doorbell for the first slab (`wake_after` 1), with
//! no deadline unless other work has one, so an idle engine still sleeps until something arrives.
//!
//! [`doze`]: SlabReceiver::doze

use std::mem::ManuallyDrop;
use std::sync::atomic::{fence, AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, SendError, Sender, TrySendError};

use super::slab::Slab;

/// A bounded channel of `capacity` slabs (at least one) with a doorbell. Never a zero-capacity (rendezvous)
/// channel: its send completes only while the receiver blocks in the channel's own `recv`, which a receiver that
/// waits on the doorbell never does.
pub fn channel(capacity: usize) -> (SlabSender, SlabReceiver) {
    let capacity = capacity.max(1);
    let (tx, rx) = bounded(capacity);
    let bell = Arc::new(Bell {
        sleeper: OnceLock::new(),
        dozing: AtomicBool::new(false),
        wake_after: AtomicIsize::new(0),
        half: (capacity / 2).max(1),
        closed: AtomicBool::new(false),
        kicked: AtomicBool::new(false),
    });
    (
        SlabSender {
            tx: ManuallyDrop::new(tx),
            bell: Arc::clone(&bell),
        },
        SlabReceiver { rx, bell: Some(bell) },
    )
}

/// What a sender and its receiver share.
#[derive(Debug)]
struct Bell {
    /// The receiving thread (set by its first doze; a receiver is used by one thread).
    sleeper: OnceLock<Thread>,
    /// True while the receiver dozes and wants ringing.
    dozing: AtomicBool,
    /// Events still to arrive before the dozing receiver wants waking (senders count down).
    wake_after: AtomicIsize,
    /// Slabs in the channel that wake a dozing receiver whatever `wake_after` says, so the readers never wait for
    /// room while the destination sleeps.
    half: usize,
    /// The sender is gone (the readers stopped): a doze ends.
    closed: AtomicBool,
    /// Someone else wants the receiver awake ([`Kicker`]): a doze ends (and the next one if it comes first).
    kicked: AtomicBool,
}

impl Bell {
    /// Sets `flag` (`closed` or `kicked`) and wakes a dozing receiver. The fence pairs with the one in `doze`:
    /// either the receiver sees the flag before it sleeps, or we see it dozing here.
    fn raise(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.ring();
    }

    fn ring(&self) {
        if self.dozing.swap(false, Ordering::AcqRel) {
            if let Some(t) = self.sleeper.get() {
                t.unpark();
            }
        }
    }
}

/// The readers' end: one per destination channel.
#[derive(Debug)]
pub struct SlabSender {
    /// Dropped by hand in [`Drop`], before the receiver is rung, so a receiver woken by the sender's end always
    /// finds the channel disconnected.
    tx: ManuallyDrop<Sender<Slab>>,
    bell: Arc<Bell>,
}

impl SlabSender {
    /// Hands `slab` over if there is room, as crossbeam's `try_send`.
    pub fn try_send(&self, slab: Slab) -> Result<(), TrySendError<Slab>> {
        let events = slab.len();
        self.tx.try_send(slab)?;
        self.after_send(events);
        Ok(())
    }

    /// Hands `slab` over, waiting for room, as crossbeam's `send`.
    pub fn send(&self, slab: Slab) -> Result<(), SendError<Slab>> {
        let events = slab.len();
        self.tx.send(slab)?;
        self.after_send(events);
        Ok(())
    }

    /// Rings a dozing receiver once enough events arrived or the channel is half full.
    fn after_send(&self, events: usize) {
        // Pairs with the fence in `doze`: either the receiver sees the slab in the channel before it sleeps, or we
        // see it dozing here (the store-buffer pattern, forbidden with a SeqCst fence on both sides).
        fence(Ordering::SeqCst);
        let bell = &self.bell;
        // Acquire: seeing the doze means seeing the `wake_after` the receiver stored before it.
        if bell.dozing.load(Ordering::Acquire) {
            let left = bell.wake_after.fetch_sub(events as isize, Ordering::AcqRel) - events as isize;
            if left <= 0 || self.tx.len() >= bell.half {
                bell.ring();
            }
        }
    }

    /// True while the receiver dozes after taking everything sent so far (for tests that must act during a doze
    /// that follows their last send). The channel is looked at first: a receiver seen dozing after the channel was
    /// seen empty dozes after taking the slabs, not in the instant its wait for them began (which also sets the
    /// flag, until it sees a slab waiting and returns).
    #[cfg(test)]
    pub(crate) fn receiver_dozes(&self) -> bool {
        self.tx.is_empty() && self.bell.dozing.load(Ordering::Acquire)
    }
}

impl Drop for SlabSender {
    /// The readers stopped: a dozing receiver wakes to see the channel disconnect. The channel disconnects first:
    /// rung before, the receiver could find it merely empty, doze again (the `closed` flag ends each doze at once)
    /// and spin until the sender was gone.
    fn drop(&mut self) {
        // SAFETY: `tx` is dropped exactly once, here, and never used after: `drop` is the last use of `self`.
        unsafe { ManuallyDrop::drop(&mut self.tx) };
        self.bell.raise(&self.bell.closed);
    }
}

/// A destination's end.
#[derive(Debug)]
pub struct SlabReceiver {
    rx: Receiver<Slab>,
    /// `None` for a plain crossbeam channel (no sender rings it: [`SlabReceiver::doze`] returns at once).
    bell: Option<Arc<Bell>>,
}

impl From<Receiver<Slab>> for SlabReceiver {
    /// A receiver without a doorbell, for code that builds its own crossbeam channel.
    fn from(rx: Receiver<Slab>) -> SlabReceiver {
        SlabReceiver { rx, bell: None }
    }
}

impl SlabReceiver {
    /// The channel itself: `recv`, `recv_timeout`, `try_iter`, `len`.
    pub fn channel(&self) -> &Receiver<Slab> {
        &self.rx
    }

    /// A handle that wakes this receiver from a doze (none for a plain channel, which never dozes).
    pub fn kicker(&self) -> Option<Kicker> {
        self.bell.as_ref().map(|b| Kicker(Arc::clone(b)))
    }

    /// The channel, for a consumer that never dozes.
    pub fn into_inner(self) -> Receiver<Slab> {
        self.rx
    }

    /// Sleeps until `until` (`None`: no deadline) while slabs gather in the channel; woken early once `wake_after`
    /// more events arrived, the channel is half full, the sender is gone, or a [`Kicker`] kicked. Returns at once
    /// when a slab is already waiting (or a kick is pending). True when it used the doorbell: the caller then takes
    /// what is in [`SlabReceiver::channel`] without waiting again (a kick must not be followed by a wait there).
    /// False, without waiting, for a plain channel: the caller waits in the channel. Call it from one thread only.
    ///
    /// With `wake_after` 1 it is the wait for the next slab, and the one a destination uses between batches: a
    /// blocking `recv` of the channel spins and then calls `sched_yield` four times before it sleeps, at every
    /// batch; at a trickle those are a batch's most frequent system calls, and a yield hands the CPU to the
    /// delivery thread the same pass just woke, only to be switched back.
    pub fn doze(&self, until: Option<Instant>, wake_after: usize) -> bool {
        let Some(bell) = &self.bell else { return false };
        let me = bell.sleeper.get_or_init(std::thread::current);
        debug_assert_eq!(me.id(), std::thread::current().id(), "a receiver dozes on one thread");
        bell.wake_after.store(wake_after.max(1) as isize, Ordering::SeqCst);
        bell.dozing.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.rx.is_empty() {
            // Slabs below the thresholds do not end the doze: only a ring, the sender's end, a kick or the
            // deadline. A stale unpark (from a ring that found us awake) only makes the loop look again.
            while bell.dozing.load(Ordering::Acquire)
                && !bell.closed.load(Ordering::Acquire)
                && !bell.kicked.load(Ordering::Acquire)
            {
                match until {
                    None => std::thread::park(),
                    Some(until) => {
                        let now = Instant::now();
                        if now >= until {
                            break;
                        }
                        std::thread::park_timeout(until - now);
                    }
                }
            }
        }
        bell.dozing.store(false, Ordering::Release);
        // The caller looks at what the kick was for right after the doze.
        bell.kicked.store(false, Ordering::Release);
        true
    }
}

/// Wakes a [`SlabReceiver`] from its doze from outside the channel: a reloaded config must not wait for a batch's
/// age ([`crate::sink::delivery::retune`]).
#[derive(Debug, Clone)]
pub struct Kicker(Arc<Bell>);

impl Kicker {
    /// Ends the receiver's current doze, or its next one if it is not dozing.
    pub fn kick(&self) {
        self.0.raise(&self.0.kicked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::slab::SlabPool;
    use crossbeam_channel::TryRecvError;
    use std::time::Duration;

    fn slab_of(pool: &Arc<SlabPool>, events: usize) -> Slab {
        let mut w = pool.take();
        for _ in 0..events {
            w.next_slot();
            w.commit();
        }
        w.share()
    }

    /// Runs `send` on another thread once `rx` dozes; returns the thread.
    fn once_dozing<F>(rx: &SlabReceiver, send: F) -> std::thread::JoinHandle<()>
    where
        F: FnOnce() + Send + 'static,
    {
        let bell = Arc::clone(rx.bell.as_ref().unwrap());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !bell.dozing.load(Ordering::Acquire) {
                assert!(Instant::now() < deadline, "the receiver never dozed");
                std::thread::yield_now();
            }
            send();
        })
    }

    #[test]
    fn a_doze_sleeps_through_slabs_below_the_thresholds_until_its_deadline() {
        let pool = SlabPool::new(4, 64);
        let (tx, rx) = channel(16);
        let tx = Arc::new(tx);
        let t = Arc::clone(&tx);
        let sender = once_dozing(&rx, move || {
            for _ in 0..3 {
                t.send(slab_of(&pool, 1)).unwrap();
            }
        });
        let until = Instant::now() + Duration::from_millis(200);
        rx.doze(Some(until), 100);
        assert!(
            Instant::now() >= until,
            "woken before the deadline by slabs below the thresholds"
        );
        sender.join().unwrap();
        assert_eq!(rx.channel().len(), 3, "the slabs gathered meanwhile");
    }

    #[test]
    fn enough_events_ring_the_bell() {
        let pool = SlabPool::new(4, 64);
        let (tx, rx) = channel(16);
        let sender = once_dozing(&rx, move || {
            tx.send(slab_of(&pool, 2)).unwrap();
            tx.send(slab_of(&pool, 2)).unwrap();
            std::mem::forget(tx); // not the sender's end: the events must ring
        });
        rx.doze(Some(Instant::now() + Duration::from_secs(60)), 4);
        sender.join().unwrap();
        assert_eq!(rx.channel().len(), 2);
    }

    #[test]
    fn a_half_full_channel_rings_the_bell() {
        let pool = SlabPool::new(4, 64);
        let (tx, rx) = channel(16);
        let sender = once_dozing(&rx, move || {
            for _ in 0..8 {
                tx.send(slab_of(&pool, 1)).unwrap();
            }
            std::mem::forget(tx);
        });
        rx.doze(Some(Instant::now() + Duration::from_secs(60)), 1_000_000);
        sender.join().unwrap();
        assert_eq!(rx.channel().len(), 8);
    }

    #[test]
    fn the_senders_end_rings_the_bell() {
        let (tx, rx) = channel(16);
        let sender = once_dozing(&rx, move || drop(tx));
        rx.doze(Some(Instant::now() + Duration::from_secs(60)), 1_000_000);
        sender.join().unwrap();
        assert!(rx.channel().recv().is_err(), "disconnected");
    }

    #[test]
    fn a_kick_ends_the_doze_and_a_kick_before_it_the_next_one() {
        let (_tx, rx) = channel(16);
        let kicker = rx.kicker().unwrap();
        let sender = once_dozing(&rx, move || kicker.kick());
        rx.doze(Some(Instant::now() + Duration::from_secs(60)), 1_000_000);
        sender.join().unwrap();
        rx.kicker().unwrap().kick();
        let until = Instant::now() + Duration::from_secs(60);
        rx.doze(Some(until), 1_000_000);
        assert!(Instant::now() < until, "a kick before the doze ends it at once");
    }

    #[test]
    fn a_wait_without_a_deadline_ends_with_the_first_slab() {
        let pool = SlabPool::new(4, 64);
        let (tx, rx) = channel(16);
        let sender = once_dozing(&rx, move || {
            tx.send(slab_of(&pool, 1)).unwrap();
            std::mem::forget(tx); // not the sender's end: the slab must ring
        });
        assert!(rx.doze(None, 1));
        sender.join().unwrap();
        assert_eq!(rx.channel().len(), 1, "woken by the one slab");
    }

    #[test]
    fn a_wait_without_a_deadline_ends_with_the_senders_end_or_a_kick() {
        let (tx, rx) = channel(16);
        let sender = once_dozing(&rx, move || drop(tx));
        assert!(rx.doze(None, 1));
        sender.join().unwrap();
        assert!(rx.channel().try_recv().is_err(), "disconnected");

        let (_tx, rx) = channel(16);
        let kicker = rx.kicker().unwrap();
        let sender = once_dozing(&rx, move || kicker.kick());
        assert!(rx.doze(None, 1));
        sender.join().unwrap();
    }

    #[test]
    fn the_senders_end_is_seen_as_a_disconnect_not_as_an_empty_channel() {
        // The receiver's loop: wait on the doorbell, then take what is there. When the readers stop, the doze must
        // end with the channel already disconnected; ringing first left a window in which every pass found the
        // channel merely empty and the loop spun (up to ~100,000 passes, milliseconds of CPU, at each shutdown).
        let mut empty_passes = 0;
        for _ in 0..300 {
            let (tx, rx) = channel(16);
            let sender = once_dozing(&rx, move || drop(tx));
            loop {
                rx.doze(None, 1);
                match rx.channel().try_recv() {
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => empty_passes += 1,
                    Ok(_) => unreachable!("nothing was sent"),
                }
            }
            sender.join().unwrap();
        }
        assert_eq!(
            empty_passes, 0,
            "passes that found the channel empty between the ring and the disconnect"
        );
    }

    #[test]
    fn a_channel_asked_for_zero_slabs_still_holds_one() {
        // A rendezvous channel would only take a slab while the receiver blocks in its `recv`, which a receiver
        // waiting on the doorbell never does: the readers would wait forever.
        let pool = SlabPool::new(4, 64);
        let (tx, rx) = channel(0);
        tx.try_send(slab_of(&pool, 1)).expect("room for one slab");
        assert_eq!(rx.channel().len(), 1);
    }

    #[test]
    fn a_waiting_slab_or_a_plain_channel_never_dozes() {
        let pool = SlabPool::new(4, 64);
        let (tx, rx) = channel(4);
        tx.send(slab_of(&pool, 1)).unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        rx.doze(Some(until), 100);
        assert_eq!(rx.channel().len(), 1);
        let (_plain_tx, plain_rx) = bounded::<Slab>(4);
        assert!(
            !SlabReceiver::from(plain_rx).doze(Some(until), 100),
            "no doorbell, no doze"
        );
    }
}
