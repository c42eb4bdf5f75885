//! A batch of encoded items and its flush rule (max events / max bytes / max age). Pure: the clock is passed in.

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::config::BatchConfig;

/// Encoded items, back to back in one reused buffer, with each item's end offset so the batch can be split
/// between items (413) without re-encoding.
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    ends: Vec<usize>,
    oldest: Option<Instant>,
    limits: BatchConfig,
}

impl Batch {
    /// An empty batch with buffers sized for `limits`.
    pub fn new(limits: BatchConfig) -> Batch {
        Batch {
            buf: Vec::with_capacity(limits.max_bytes.min(16 << 20) + 4096),
            ends: Vec::with_capacity(limits.max_events),
            oldest: None,
            limits,
        }
    }

    /// The buffer to append one item to; call [`Batch::commit`] after appending.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Length of the buffer before an item is appended (to roll back a skipped item).
    pub fn truncate_to(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Records that one item now ends at the buffer's end; `now` starts the age clock on the first item.
    pub fn commit(&mut self, now: Instant) {
        self.ends.push(self.buf.len());
        self.oldest.get_or_insert(now);
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when the batch holds no item.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// True when a count or size limit is reached.
    pub fn is_full(&self) -> bool {
        self.ends.len() >= self.limits.max_events || self.buf.len() >= self.limits.max_bytes
    }

    /// When the oldest item reaches `max_age`, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest.map(|t| t + self.limits.max_age)
    }

    /// True when the batch must be flushed at `now`.
    pub fn should_flush(&self, now: Instant) -> bool {
        !self.is_empty() && (self.is_full() || self.deadline().is_some_and(|d| now >= d))
    }

    /// Bytes of items `range` (item indices).
    pub fn items(&self, range: Range<usize>) -> &[u8] {
        let start = if range.start == 0 {
            0
        } else {
            self.ends[range.start - 1]
        };
        let end = if range.end == 0 { 0 } else { self.ends[range.end - 1] };
        &self.buf[start..end]
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.oldest = None;
    }

    /// The age limit.
    pub fn max_age(&self) -> Duration {
        self.limits.max_age
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_events: usize, max_bytes: usize, age_ms: u64) -> BatchConfig {
        BatchConfig {
            max_events,
            max_bytes,
            max_age: Duration::from_millis(age_ms),
        }
    }

    fn push(b: &mut Batch, s: &str, now: Instant) {
        b.buf().extend_from_slice(s.as_bytes());
        b.commit(now);
    }

    #[test]
    fn flushes_when_count_limit_is_reached() {
        let t0 = Instant::now();
        let mut b = Batch::new(limits(2, 1 << 20, 1000));
        push(&mut b, "a\n", t0);
        assert!(!b.should_flush(t0));
        push(&mut b, "b\n", t0);
        assert!(b.should_flush(t0));
    }

    #[test]
    fn flushes_when_byte_limit_is_reached() {
        let t0 = Instant::now();
        let mut b = Batch::new(limits(100, 4, 1000));
        push(&mut b, "abc\n", t0);
        assert!(b.should_flush(t0));
    }

    #[test]
    fn flushes_when_oldest_item_reaches_max_age() {
        let t0 = Instant::now();
        let mut b = Batch::new(limits(100, 1 << 20, 250));
        assert_eq!(b.deadline(), None);
        push(&mut b, "a\n", t0);
        push(&mut b, "b\n", t0 + Duration::from_millis(200));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(250)));
        assert!(!b.should_flush(t0 + Duration::from_millis(249)));
        assert!(b.should_flush(t0 + Duration::from_millis(250)));
    }

    #[test]
    fn items_can_be_split_between_any_two_items() {
        let t0 = Instant::now();
        let mut b = Batch::new(limits(100, 1 << 20, 250));
        for s in ["a\n", "bb\n", "ccc\n"] {
            push(&mut b, s, t0);
        }
        assert_eq!(b.items(0..3), b"a\nbb\nccc\n");
        assert_eq!(b.items(0..1), b"a\n");
        assert_eq!(b.items(1..3), b"bb\nccc\n");
        assert_eq!(b.items(2..2), b"");
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);
    }
}
