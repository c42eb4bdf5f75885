//! Encoded batches and the flush rule (max events / max bytes / max age). Pure: the clock is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::config::BatchConfig;
use crate::telemetry::metrics::{HostTally, MAX_TRACKED_HOSTS, OTHER_SENDERS};

/// `sender_of` value of an item no sender is accounted for: a line the engine generated itself (session gauges)
/// or an item read back from a spool record written before senders were recorded.
pub const NO_SENDER: u16 = u16::MAX;

/// Whole encoded items (one per event) back to back, with each item's end offset, so a batch can be split
/// between items (413) and spooled without re-encoding. This is what the delivery queue, the spool and the
/// transports handle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedBatch {
    /// End offset of each item in `bytes`; non-decreasing, the last equals `bytes.len()`.
    pub ends: Vec<u32>,
    /// The items.
    pub bytes: Vec<u8>,
    /// Receive time (Unix ns) of each item's event, for latency metrics. Not spooled: empty for batches read back
    /// from the spool.
    pub received_ns: Vec<u64>,
    /// The distinct senders (canonical IP of `Event::peer`) of this batch's items, in order of first appearance;
    /// at most [`MAX_TRACKED_HOSTS`] + 1 (further senders share [`OTHER_SENDERS`]).
    pub senders: Vec<IpAddr>,
    /// Per item, the index of its sender in `senders`, or [`NO_SENDER`]. Either empty (nothing attributed, e.g.
    /// hand-built batches in tests) or one entry per item; an index is always `< senders.len()`.
    pub sender_of: Vec<u16>,
}

impl EncodedBatch {
    /// Number of items (events).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when the batch holds no item.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Byte range of items `range` (item indices) in `bytes`.
    fn span(&self, range: Range<usize>) -> Range<usize> {
        let at = |i: usize| if i == 0 { 0 } else { self.ends[i - 1] as usize };
        at(range.start)..at(range.end)
    }

    /// Bytes of items `range` (item indices).
    pub fn items(&self, range: Range<usize>) -> &[u8] {
        &self.bytes[self.span(range)]
    }

    /// A new batch of items `ranges` (in the given order) of this batch, whose bytes are `body` (this batch's
    /// `bytes`, or a shared copy of them), with their receive times and senders.
    pub fn extract(&self, body: &[u8], ranges: &[Range<usize>]) -> EncodedBatch {
        let mut out = EncodedBatch {
            senders: self.senders.clone(),
            ..EncodedBatch::default()
        };
        let timed = self.received_ns.len() == self.len();
        let attributed = self.sender_of.len() == self.len();
        for range in ranges {
            for i in range.clone() {
                out.bytes.extend_from_slice(&body[self.span(i..i + 1)]);
                out.ends.push(out.bytes.len() as u32);
                if timed {
                    out.received_ns.push(self.received_ns[i]);
                }
                if attributed {
                    out.sender_of.push(self.sender_of[i]);
                }
            }
        }
        out
    }

    /// The memory this batch holds (allocated capacity, not just its length: a batch's buffer is allocated for a
    /// full batch up front), which is what the memory queue's bound counts.
    pub fn footprint(&self) -> usize {
        self.bytes.capacity()
            + self.ends.capacity() * size_of::<u32>()
            + self.received_ns.capacity() * size_of::<u64>()
            + self.sender_of.capacity() * size_of::<u16>()
            + self.senders.capacity() * size_of::<IpAddr>()
    }

    /// Items `range` of `body`, a shared copy of this batch's `bytes` (zero-copy slice).
    pub fn item_bytes(&self, body: &bytes::Bytes, range: Range<usize>) -> bytes::Bytes {
        body.slice(self.span(range))
    }

    /// The sender of item `i`, if one is accounted for.
    pub fn sender(&self, i: usize) -> Option<IpAddr> {
        let s = *self.sender_of.get(i)?;
        self.senders.get(usize::from(s)).copied()
    }

    /// Adds the events of items `range` to `tally`, per sender (items without a sender are left out).
    pub fn tally(&self, range: Range<usize>, tally: &mut HostTally) {
        let Some(of) = self.sender_of.get(range) else {
            return;
        };
        // Runs of one sender are the rule: count a run, then add it once.
        let mut run: Option<(u16, u64)> = None;
        for &s in of {
            match &mut run {
                Some((r, n)) if *r == s => *n += 1,
                _ => {
                    if let Some((r, n)) = run {
                        self.add_run(r, n, tally);
                    }
                    run = Some((s, 1));
                }
            }
        }
        if let Some((r, n)) = run {
            self.add_run(r, n, tally);
        }
    }

    fn add_run(&self, sender: u16, n: u64, tally: &mut HostTally) {
        if let Some(ip) = self.senders.get(usize::from(sender)) {
            tally.add(*ip, n);
        }
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.ends.clear();
        self.bytes.clear();
        self.received_ns.clear();
        self.senders.clear();
        self.sender_of.clear();
    }
}

/// The batch a sink is filling, with its age.
#[derive(Debug)]
pub struct Batch {
    data: EncodedBatch,
    oldest: Option<Instant>,
    limits: BatchConfig,
    /// `data.senders` indexed by address (rebuilt per batch; keeps its capacity).
    sender_index: HashMap<IpAddr, u16>,
    /// The last sender looked up and its index (events arrive in runs from one sender).
    last_sender: Option<(IpAddr, u16)>,
}

impl Batch {
    /// An empty batch with buffers sized for `limits`.
    pub fn new(limits: BatchConfig) -> Batch {
        Batch {
            data: Batch::buffers(limits),
            oldest: None,
            limits,
            sender_index: HashMap::new(),
            last_sender: None,
        }
    }

    /// Fresh buffers for a batch within `limits`. They start small (256 KiB of bytes, 4096 items) and grow as a
    /// batch needs: buffers are recycled after delivery, so in steady state they have grown once and allocate no
    /// more, while a queue of batches during an outage (each a fresh buffer) holds about what its batches hold,
    /// not `max_bytes` each (the memory queue counts allocated capacity).
    pub fn buffers(limits: BatchConfig) -> EncodedBatch {
        let items = limits.max_events.min(4096);
        EncodedBatch {
            ends: Vec::with_capacity(items),
            bytes: Vec::with_capacity(limits.max_bytes.min(256 << 10) + 4096),
            received_ns: Vec::with_capacity(items),
            senders: Vec::new(),
            sender_of: Vec::with_capacity(items),
        }
    }

    /// The buffer to append one item to; call [`Batch::commit`] after appending.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.data.bytes
    }

    /// Rolls the buffer back to `len` (a skipped item).
    pub fn truncate_to(&mut self, len: usize) {
        self.data.bytes.truncate(len);
    }

    /// Records that one item (of an event received at `received_ns` from `sender`, `None` for a line the engine
    /// generated) now ends at the buffer's end; the earliest `now` of its items starts the age clock (the worker
    /// passes the event's receipt as an `Instant`, so `maxAge` counts from when the engine received it).
    pub fn commit(&mut self, now: Instant, received_ns: u64, sender: Option<IpAddr>) {
        let index = match sender {
            Some(ip) => self.sender_index(ip),
            None => NO_SENDER,
        };
        self.data.ends.push(self.data.bytes.len() as u32);
        self.data.received_ns.push(received_ns);
        self.data.sender_of.push(index);
        // The earliest, not the first: slabs of several readers may arrive out of receipt order.
        self.oldest = Some(self.oldest.map_or(now, |o| o.min(now)));
    }

    /// The index of `ip` in this batch's sender table, adding it on first sight (no allocation once the table
    /// and its index have grown to the number of senders).
    fn sender_index(&mut self, ip: IpAddr) -> u16 {
        if let Some((last, i)) = self.last_sender {
            if last == ip {
                return i;
            }
        }
        let i = match self.sender_index.get(&ip) {
            Some(&i) => i,
            None => {
                // Past the cap, further senders share OTHER_SENDERS (added once, possibly as entry cap + 1), so
                // the table never exceeds MAX_TRACKED_HOSTS + 1 entries, far below NO_SENDER.
                let key = if self.data.senders.len() >= MAX_TRACKED_HOSTS {
                    OTHER_SENDERS
                } else {
                    ip
                };
                match self.sender_index.get(&key) {
                    Some(&i) => i,
                    None => {
                        let i = self.data.senders.len() as u16;
                        self.data.senders.push(key);
                        self.sender_index.insert(key, i);
                        i
                    }
                }
            }
        };
        self.last_sender = Some((ip, i));
        i
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the batch holds no item.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Events that still fit: under the count limit and, at the average size of the items so far, under the size
    /// limit (New Relic's batches, capped near 1 MB, fill by bytes long before 5000 events).
    pub fn room(&self) -> usize {
        let by_count = self.limits.max_events.saturating_sub(self.data.len());
        if self.data.is_empty() {
            return by_count;
        }
        let average = (self.data.bytes.len() / self.data.len()).max(1);
        by_count.min(self.limits.max_bytes.saturating_sub(self.data.bytes.len()) / average)
    }

    /// True when a count or size limit is reached.
    pub fn is_full(&self) -> bool {
        self.data.len() >= self.limits.max_events || self.data.bytes.len() >= self.limits.max_bytes
    }

    /// When the oldest item reaches `max_age`, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest.map(|t| t + self.limits.max_age)
    }

    /// True when the batch must be flushed at `now`.
    pub fn should_flush(&self, now: Instant) -> bool {
        !self.is_empty() && (self.is_full() || self.deadline().is_some_and(|d| now >= d))
    }

    /// The items so far.
    pub fn data(&self) -> &EncodedBatch {
        &self.data
    }

    /// Hands the filled batch over and continues with `empty` (cleared, reused buffers).
    pub fn take(&mut self, mut empty: EncodedBatch) -> EncodedBatch {
        empty.clear();
        self.oldest = None;
        self.sender_index.clear();
        self.last_sender = None;
        std::mem::replace(&mut self.data, empty)
    }

    /// The age limit.
    pub fn max_age(&self) -> Duration {
        self.limits.max_age
    }

    /// The limits this batch closes at.
    pub fn limits(&self) -> BatchConfig {
        self.limits
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
        b.commit(now, 0, None);
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
    fn room_counts_what_still_fits_by_count_and_by_size() {
        let limits = BatchConfig {
            max_events: 100,
            max_bytes: 1000,
            max_age: Duration::from_secs(1),
        };
        let mut b = Batch::new(limits);
        assert_eq!(b.room(), 100, "empty: the count limit");
        for _ in 0..5 {
            b.buf().extend_from_slice(&[b'x'; 99]);
            b.buf().push(b'\n');
            b.commit(Instant::now(), 1, None);
        }
        assert_eq!(
            b.room(),
            5,
            "500 of 1000 bytes used at 100 bytes an item: 5 more fit, not 95"
        );
    }

    #[test]
    fn the_oldest_item_by_receipt_sets_the_deadline_whatever_the_order() {
        let limits = BatchConfig {
            max_events: 100,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(10),
        };
        let now = Instant::now();
        let mut b = Batch::new(limits);
        b.buf().extend_from_slice(b"a\n");
        b.commit(now, 2, None);
        b.buf().extend_from_slice(b"b\n");
        b.commit(now - Duration::from_secs(5), 1, None); // received earlier, encoded later (another reader)
        assert_eq!(b.deadline(), Some(now + Duration::from_secs(5)));
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
    fn shared_item_slices_match_items_and_the_buffer_comes_back_without_a_copy() {
        let t0 = Instant::now();
        let mut b = Batch::new(limits(100, 1 << 20, 250));
        for s in ["a\n", "bb\n", "ccc\n"] {
            push(&mut b, s, t0);
        }
        let mut data = b.take(EncodedBatch::default());
        let ptr = data.bytes.as_ptr();
        let body = bytes::Bytes::from(std::mem::take(&mut data.bytes));
        for range in [0..3, 0..1, 1..3, 2..2] {
            let slice = data.item_bytes(&body, range.clone());
            assert_eq!(&slice[..], &body[..][data_range(&data, range)]);
        }
        let in_flight = data.item_bytes(&body, 1..3);
        drop(in_flight);
        let back = Vec::from(body.try_into_mut().expect("no other handle"));
        assert_eq!(back.as_ptr(), ptr, "same allocation");
        assert_eq!(back, b"a\nbb\nccc\n");
    }

    fn data_range(data: &EncodedBatch, range: Range<usize>) -> Range<usize> {
        data.span(range)
    }

    #[test]
    fn extract_keeps_the_chosen_items_with_their_times_and_senders() {
        let t0 = Instant::now();
        let mut b = Batch::new(limits(100, 1 << 20, 250));
        let (h1, h2): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        for (i, s) in ["a\n", "bb\n", "ccc\n", "dddd\n"].iter().enumerate() {
            b.buf().extend_from_slice(s.as_bytes());
            b.commit(t0, 10 + i as u64, Some(if i % 2 == 0 { h1 } else { h2 }));
        }
        let data = b.take(EncodedBatch::default());
        let rest = data.extract(&data.bytes, &[1..2, 3..4]);
        assert_eq!(rest.items(0..2), b"bb\ndddd\n");
        assert_eq!(rest.ends, [3, 8]);
        assert_eq!(rest.received_ns, [11, 13]);
        assert_eq!(rest.sender(0), Some(h2));
        assert_eq!(rest.sender(1), Some(h2));
        assert!(data.extract(&data.bytes, &[]).is_empty());
    }

    #[test]
    fn items_can_be_split_between_any_two_items_and_taken_with_buffer_reuse() {
        let t0 = Instant::now();
        let mut b = Batch::new(limits(100, 1 << 20, 250));
        for s in ["a\n", "bb\n", "ccc\n"] {
            push(&mut b, s, t0);
        }
        let data = b.data();
        assert_eq!(data.items(0..3), b"a\nbb\nccc\n");
        assert_eq!(data.items(0..1), b"a\n");
        assert_eq!(data.items(1..3), b"bb\nccc\n");
        assert_eq!(data.items(2..2), b"");
        let taken = b.take(EncodedBatch::default());
        assert_eq!(taken.len(), 3);
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn items_keep_their_sender_and_ranges_tally_per_sender() {
        let t0 = Instant::now();
        let mut b = Batch::new(limits(100, 1 << 20, 250));
        let (a, c): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        for sender in [Some(a), Some(a), Some(c), None, Some(a)] {
            b.buf().extend_from_slice(b"x\n");
            b.commit(t0, 0, sender);
        }
        let data = b.data();
        assert_eq!(data.senders, [a, c]);
        assert_eq!(data.sender_of, [0, 0, 1, NO_SENDER, 0]);
        assert_eq!((data.sender(2), data.sender(3)), (Some(c), None));
        let mut t = HostTally::default();
        data.tally(1..5, &mut t);
        assert_eq!((t.get(a), t.get(c), t.total()), (2, 1, 3));
        let taken = b.take(EncodedBatch::default());
        assert_eq!(taken.senders.len(), 2);
        b.buf().extend_from_slice(b"y\n");
        b.commit(t0, 0, Some(c));
        assert_eq!(b.data().senders, [c], "a new batch starts a new sender table");
        assert_eq!(b.data().sender_of, [0]);
    }

    #[test]
    fn a_batch_of_hand_built_items_has_no_senders() {
        let b = EncodedBatch {
            ends: vec![1],
            bytes: b"x".to_vec(),
            ..EncodedBatch::default()
        };
        let mut t = HostTally::default();
        b.tally(0..1, &mut t);
        assert!(t.is_empty());
        assert_eq!(b.sender(0), None);
    }
}
