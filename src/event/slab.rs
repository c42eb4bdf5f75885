//! Preallocated event slabs and the pool that recycles them.
//!
//! A reader fills a [`SlabWriter`] with events, turns it into a [`Slab`] (a shared, read-only handle) and sends a
//! clone of that handle to every sink's channel: one refcount bump per batch per sink, never a copy per event.
//! When the last handle is dropped, the slab (its `Arc` allocation, its events and their text buffers) goes back
//! to the [`SlabPool`], so in steady state neither events nor slabs are allocated.
//!
//! The pool is bounded: a slab returned to a full pool is freed. A reader that finds the pool empty allocates a new
//! slab; that happens only while the number of slabs in flight grows towards its bound (channel capacity × sinks +
//! readers), and is counted in [`SlabPool::allocated`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use super::Event;

#[derive(Debug, Default)]
struct SlabData {
    events: Vec<Event>,
    len: usize,
}

/// Recycles slabs whose last handle was dropped.
#[derive(Debug)]
pub struct SlabPool {
    /// Invariant: every `Arc` in here is unique (strong count 1, no weak), so a taker may mutate it.
    free: ArrayQueue<Arc<SlabData>>,
    events_per_slab: usize,
    allocated: AtomicU64,
}

impl SlabPool {
    /// A pool that keeps at most `max_free` idle slabs of `events_per_slab` events each.
    pub fn new(events_per_slab: usize, max_free: usize) -> Arc<SlabPool> {
        Arc::new(SlabPool {
            free: ArrayQueue::new(max_free.max(1)),
            events_per_slab: events_per_slab.max(1),
            allocated: AtomicU64::new(0),
        })
    }

    /// Takes an empty slab from the pool, or allocates one when the pool is empty.
    pub fn take(self: &Arc<Self>) -> SlabWriter {
        let data = self.free.pop().unwrap_or_else(|| {
            self.allocated.fetch_add(1, Ordering::Relaxed);
            Arc::new(SlabData {
                events: Vec::with_capacity(self.events_per_slab),
                len: 0,
            })
        });
        SlabWriter {
            data: Some(data),
            pool: Arc::clone(self),
        }
    }

    /// How many slabs were allocated because the pool was empty.
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Events per slab.
    pub fn events_per_slab(&self) -> usize {
        self.events_per_slab
    }

    /// Idle slabs in the pool.
    pub fn idle(&self) -> usize {
        self.free.len()
    }

    /// Returns a slab if nobody else holds it (`Arc::get_mut` gives the needed synchronisation); otherwise the
    /// other holder's drop will do it. Two holders dropping at the same instant may both see the other and free
    /// the slab instead: a missed recycle, never a use after free.
    fn recycle(&self, mut data: Arc<SlabData>) {
        if let Some(d) = Arc::get_mut(&mut data) {
            d.len = 0;
            let _ = self.free.push(data);
        }
    }
}

/// The reader's exclusive handle while it fills a slab.
#[derive(Debug)]
pub struct SlabWriter {
    /// Invariant: `Some` and unique until [`SlabWriter::share`] or drop.
    data: Option<Arc<SlabData>>,
    pool: Arc<SlabPool>,
}

impl SlabWriter {
    fn data(&self) -> &SlabData {
        self.data
            .as_deref()
            .expect("SlabWriter holds its data until share or drop")
    }

    fn data_mut(&mut self) -> &mut SlabData {
        let arc = self
            .data
            .as_mut()
            .expect("SlabWriter holds its data until share or drop");
        Arc::get_mut(arc).expect("a SlabWriter's Arc is unique: the pool hands out only unique Arcs")
    }

    /// Number of committed events.
    pub fn len(&self) -> usize {
        self.data().len
    }

    /// True when no event is committed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when no further event fits.
    pub fn is_full(&self) -> bool {
        self.len() >= self.pool.events_per_slab
    }

    /// The next free slot, cleared, for the parser to fill. It becomes part of the slab only on
    /// [`SlabWriter::commit`]; an uncommitted slot is reused by the next call.
    pub fn next_slot(&mut self) -> &mut Event {
        let d = self.data_mut();
        if d.events.len() == d.len {
            d.events.push(Event::new());
        }
        let slot = &mut d.events[d.len];
        slot.clear();
        slot
    }

    /// Commits the slot last returned by [`SlabWriter::next_slot`].
    pub fn commit(&mut self) {
        let d = self.data_mut();
        debug_assert!(d.len < d.events.len());
        d.len += 1;
    }

    /// Freezes the slab into a shareable handle.
    pub fn share(mut self) -> Slab {
        Slab {
            data: self.data.take(),
            pool: Arc::clone(&self.pool),
        }
    }
}

impl Drop for SlabWriter {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            self.pool.recycle(data);
        }
    }
}

/// A filled slab, shared read-only by every sink it was sent to.
#[derive(Debug)]
pub struct Slab {
    /// Invariant: `Some` until drop.
    data: Option<Arc<SlabData>>,
    pool: Arc<SlabPool>,
}

impl Clone for Slab {
    fn clone(&self) -> Slab {
        Slab {
            data: self.data.clone(),
            pool: Arc::clone(&self.pool),
        }
    }
}

impl Slab {
    /// The committed events.
    pub fn events(&self) -> &[Event] {
        match self.data.as_deref() {
            Some(d) => &d.events[..d.len],
            None => &[],
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events().len()
    }

    /// True when there is no event.
    pub fn is_empty(&self) -> bool {
        self.events().is_empty()
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            self.pool.recycle(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slab_returns_to_the_pool_when_its_last_holder_drops_it() {
        let pool = SlabPool::new(4, 8);
        let mut w = pool.take();
        w.next_slot().text_mut().push('x');
        w.commit();
        let shared = w.share();
        let second_holder = shared.clone();
        drop(shared);
        assert_eq!(pool.idle(), 0, "slab must stay alive while a sink holds it");
        assert_eq!(second_holder.len(), 1);
        drop(second_holder);
        assert_eq!(pool.idle(), 1);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.data().events.len(), 1, "the event and its buffer came back");
        assert_eq!(pool.allocated(), 1);
    }

    #[test]
    fn an_uncommitted_slot_is_not_part_of_the_slab() {
        let pool = SlabPool::new(2, 2);
        let mut w = pool.take();
        w.next_slot();
        assert!(w.is_empty());
        w.next_slot();
        w.commit();
        w.next_slot();
        w.commit();
        assert!(w.is_full());
        assert_eq!(w.share().len(), 2);
    }
}
