//! A destination's disk spool: encoded batches that could not be delivered yet, in order, checksummed.
//!
//! # Layout
//! One directory per destination. Segment files `seg-<id>.spool` (20-digit ids, read in ascending order) hold
//! records:
//!
//! ```text
//! magic u32 "SPL1" | body_len u32 | crc32(body) u32 | body
//! body = events u32 | items u32 | item_end u32 × items | item bytes
//! ```
//!
//! A record is one encoded batch (whole wire items, so it can still be split on 413). New records are appended to
//! the newest segment, which rolls over at an eighth of the cap (see [`SEGMENT_BYTES`]). The file `head` holds `<segment id> <offset>`: the
//! first record not yet delivered; it is rewritten (write + rename) after each delivery. Fully delivered segments
//! are deleted.
//!
//! # Guarantees
//! - Order: records come back in the order they were appended; [`Spool::prepend`] writes a segment *before* all
//!   others (used at shutdown for batches still in memory, which are older than anything spooled).
//! - Durability: appends are `write(2)` calls, so a crash of the process (SIGKILL) loses nothing appended; the
//!   data is `fsync`ed when a segment is finished, on [`Spool::sync`] (called every `fsyncInterval` and at
//!   shutdown), so a power loss can lose at most the last interval.
//! - Integrity: a record whose checksum or framing is wrong ends its segment (counted, logged at ERROR); the rest
//!   of that segment is skipped, later segments are read normally.
//! - Bounded: when the spool would exceed `max_bytes`, whole oldest segments are deleted and their events counted
//!   as dropped (the caller logs them at ERROR). Neither the segment being written nor, while its head record is
//!   out for delivery, the head segment is deleted: the oldest segments after it go instead.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: u32 = u32::from_le_bytes(*b"SPL1");
/// A segment is finished (fsynced, a new one started) once it reaches its size: an eighth of the spool's cap,
/// between [`MIN_SEGMENT_BYTES`] and this, so the cap evicts in steps of about an eighth of it (one record, a whole
/// batch, may still make a segment larger).
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// The smallest segment size.
pub const MIN_SEGMENT_BYTES: u64 = 64 << 10;
/// Ids start here so [`Spool::prepend`] has room below.
const FIRST_ID: u64 = 1 << 40;

use super::batch::EncodedBatch;

#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
    /// Events in the segment that are not yet delivered (for drop accounting).
    events: u64,
}

/// Outcome of making room under the cap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Segments deleted.
    pub segments: u64,
    /// Events they held.
    pub events: u64,
}

/// The spool of one destination.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Size at which the newest segment is finished (see [`SEGMENT_BYTES`]).
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// Read position in the oldest segment.
    head_offset: u64,
    writer: Option<(u64, File)>,
    reader: Option<(u64, File)>,
    /// Records found damaged since open.
    pub corrupt_records: u64,
    /// The head record was handed out by [`Spool::peek`] and is not popped yet (it is being delivered): its
    /// segment must not be evicted, or the later [`Spool::pop`] would skip a different, undelivered record.
    head_in_flight: bool,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, indexing existing segments (events are counted by reading them once).
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?.strip_suffix(".spool")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let (head_id, head_offset) = read_head(dir).unwrap_or((0, 0));
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(MIN_SEGMENT_BYTES, SEGMENT_BYTES),
            segments: VecDeque::new(),
            head_offset: 0,
            writer: None,
            reader: None,
            corrupt_records: 0,
            head_in_flight: false,
        };
        for id in ids {
            if id < head_id {
                let _ = fs::remove_file(spool.path(id)); // delivered before a crash
                continue;
            }
            let start = if id == head_id { head_offset } else { 0 };
            let (events, end, corrupt) = scan(&spool.path(id), start)?;
            spool.corrupt_records += corrupt;
            if events == 0 && corrupt == 0 && end <= start {
                let _ = fs::remove_file(spool.path(id));
                continue;
            }
            if spool.segments.is_empty() {
                spool.head_offset = start;
            }
            spool.segments.push_back(Segment { id, bytes: end, events });
        }
        spool.write_head()?;
        Ok(spool)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("seg-{id:020}.spool"))
    }

    /// True when nothing is spooled.
    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.events == 0)
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Events not yet delivered.
    pub fn events(&self) -> u64 {
        self.segments.iter().map(|s| s.events).sum()
    }

    /// Appends a batch after everything spooled. May evict the oldest segments to stay under the cap.
    pub fn append(&mut self, batch: &EncodedBatch) -> io::Result<Evicted> {
        let events = batch.len() as u32;
        let record = encode_record(batch);
        let needs_new = match self.segments.back() {
            Some(s) => s.bytes + record.len() as u64 > self.segment_bytes && s.bytes > 0,
            None => true,
        };
        if needs_new {
            self.finish_writer()?;
            let id = self.segments.back().map_or(FIRST_ID, |s| s.id + 1);
            self.segments.push_back(Segment {
                id,
                bytes: 0,
                events: 0,
            });
        }
        let seg = self.segments.back_mut().expect("a segment was just ensured");
        let id = seg.id;
        if self.writer.as_ref().is_none_or(|(wid, _)| *wid != id) {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(format!("seg-{id:020}.spool")))?;
            self.writer = Some((id, f));
        }
        let (_, f) = self.writer.as_mut().expect("writer opened above");
        f.write_all(&record)?;
        seg.bytes += record.len() as u64;
        seg.events += u64::from(events);
        self.evict_over_cap()
    }

    /// Writes a batch *before* everything spooled (a new lowest segment). Used at shutdown for batches that were
    /// still in memory and are older than the spool's content.
    pub fn prepend(&mut self, batches: &[EncodedBatch]) -> io::Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let id = self.segments.front().map_or(FIRST_ID, |s| s.id - 1);
        let path = self.path(id);
        let mut f = File::create(&path)?;
        let mut seg = Segment {
            id,
            bytes: 0,
            events: 0,
        };
        for batch in batches {
            let record = encode_record(batch);
            f.write_all(&record)?;
            seg.bytes += record.len() as u64;
            seg.events += batch.len() as u64;
        }
        f.sync_all()?;
        // The head file holds one offset, for the first segment: the old head segment's delivered prefix is cut
        // off (rewritten) so it can be read from 0 after the new segment.
        let old_offset = self.head_offset;
        self.segments.push_front(seg);
        self.head_offset = 0;
        if self.segments.len() > 1 {
            self.compact_second(old_offset)?;
        }
        self.write_head()
    }

    /// Drops the delivered prefix of the second segment (after a prepend) by rewriting it without that prefix.
    fn compact_second(&mut self, offset: u64) -> io::Result<()> {
        if offset == 0 {
            return Ok(());
        }
        let id = self.segments[1].id;
        let path = self.path(id);
        let mut data = Vec::new();
        File::open(&path)?.read_to_end(&mut data)?;
        let rest = data.get(offset as usize..).unwrap_or(&[]);
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(rest)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        self.segments[1].bytes = rest.len() as u64;
        if self.writer.as_ref().is_some_and(|(wid, _)| *wid == id) {
            self.writer = None;
        }
        if self.reader.as_ref().is_some_and(|(rid, _)| *rid == id) {
            self.reader = None;
        }
        Ok(())
    }

    /// Reads the oldest undelivered record without consuming it. `Ok(None)` when the spool is empty.
    pub fn peek(&mut self) -> io::Result<Option<EncodedBatch>> {
        loop {
            let Some(seg) = self.segments.front() else {
                return Ok(None);
            };
            let id = seg.id;
            if self.head_offset >= seg.bytes {
                if self.segments.len() == 1 {
                    return Ok(None);
                }
                self.drop_front_segment()?;
                continue;
            }
            if self.reader.as_ref().is_none_or(|(rid, _)| *rid != id) {
                self.reader = Some((id, File::open(self.path(id))?));
            }
            let (_, f) = self.reader.as_mut().expect("reader opened above");
            f.seek(SeekFrom::Start(self.head_offset))?;
            match read_record(f)? {
                Some(r) => {
                    self.head_in_flight = true;
                    return Ok(Some(r));
                }
                None => {
                    // Damaged or torn record: the rest of this segment is unusable.
                    self.corrupt_records += 1;
                    let seg = self.segments.front_mut().expect("checked above");
                    seg.events = 0;
                    seg.bytes = self.head_offset;
                    if self.segments.len() == 1 {
                        return Ok(None);
                    }
                    self.drop_front_segment()?;
                }
            }
        }
    }

    /// Consumes the record last returned by [`Spool::peek`] (it was delivered, or dropped for good).
    pub fn pop(&mut self, record: &EncodedBatch) -> io::Result<()> {
        self.head_in_flight = false;
        let len = 12 + record_body_len(record) as u64;
        self.head_offset += len;
        if let Some(seg) = self.segments.front_mut() {
            seg.events = seg.events.saturating_sub(record.len() as u64);
            if self.head_offset >= seg.bytes && self.segments.len() > 1 {
                self.drop_front_segment()?;
            }
        }
        self.write_head()
    }

    /// fsyncs the segment being written and the head file.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some((_, f)) = &self.writer {
            f.sync_data()?;
        }
        Ok(())
    }

    fn finish_writer(&mut self) -> io::Result<()> {
        if let Some((_, f)) = self.writer.take() {
            f.sync_all()?;
        }
        Ok(())
    }

    fn drop_front_segment(&mut self) -> io::Result<()> {
        self.head_in_flight = false;
        self.remove_segment(0);
        self.head_offset = 0;
        self.write_head()
    }

    /// Deletes segment `index` (its file and index entry).
    fn remove_segment(&mut self, index: usize) {
        if let Some(seg) = self.segments.remove(index) {
            if self.reader.as_ref().is_some_and(|(rid, _)| *rid == seg.id) {
                self.reader = None;
            }
            if self.writer.as_ref().is_some_and(|(wid, _)| *wid == seg.id) {
                self.writer = None;
            }
            let _ = fs::remove_file(self.path(seg.id));
        }
    }

    /// Deletes the oldest segments while over the cap, never the one being written, nor the head segment while
    /// its head record is being delivered (then the oldest segments after it go).
    fn evict_over_cap(&mut self) -> io::Result<Evicted> {
        let mut evicted = Evicted::default();
        let keep_front = usize::from(self.head_in_flight);
        while self.bytes() > self.max_bytes && self.segments.len() > 1 + keep_front {
            let events = self.segments.get(keep_front).map_or(0, |s| s.events);
            if keep_front == 0 {
                self.drop_front_segment()?;
            } else {
                self.remove_segment(keep_front);
            }
            evicted.segments += 1;
            evicted.events += events;
        }
        Ok(evicted)
    }

    fn write_head(&self) -> io::Result<()> {
        let id = self.segments.front().map_or(0, |s| s.id);
        let tmp = self.dir.join("head.tmp");
        fs::write(&tmp, format!("{id} {}\n", self.head_offset))?;
        fs::rename(tmp, self.dir.join("head"))
    }
}

fn read_head(dir: &Path) -> Option<(u64, u64)> {
    let text = fs::read_to_string(dir.join("head")).ok()?;
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn record_body_len(r: &EncodedBatch) -> usize {
    8 + 4 * r.ends.len() + r.bytes.len()
}

fn encode_record(batch: &EncodedBatch) -> Vec<u8> {
    let (ends, bytes) = (&batch.ends, &batch.bytes);
    let events = ends.len() as u32;
    let body_len = 8 + 4 * ends.len() + bytes.len();
    let mut out = Vec::with_capacity(12 + body_len);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, filled below
    out.extend_from_slice(&events.to_le_bytes());
    out.extend_from_slice(&(ends.len() as u32).to_le_bytes());
    for e in ends.iter() {
        out.extend_from_slice(&e.to_le_bytes());
    }
    out.extend_from_slice(bytes);
    let crc = crc32fast::hash(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads one record at the file's position; `Ok(None)` for a torn or damaged record.
fn read_record(f: &mut File) -> io::Result<Option<EncodedBatch>> {
    let mut header = [0u8; 12];
    if !read_full(f, &mut header)? {
        return Ok(None);
    }
    let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    if word(0) != MAGIC {
        return Ok(None);
    }
    let body_len = word(4) as usize;
    if body_len < 8 || body_len > (SEGMENT_BYTES as usize) * 4 {
        return Ok(None);
    }
    let mut body = vec![0u8; body_len];
    if !read_full(f, &mut body)? || crc32fast::hash(&body) != word(8) {
        return Ok(None);
    }
    let events = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
    let items = u32::from_le_bytes([body[4], body[5], body[6], body[7]]) as usize;
    let ends_end = 8 + 4 * items;
    if ends_end > body_len {
        return Ok(None);
    }
    let ends: Vec<u32> = body[8..ends_end]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let bytes = body[ends_end..].to_vec();
    if events != items
        || ends.last().is_some_and(|&e| e as usize != bytes.len())
        || ends.windows(2).any(|w| w[0] > w[1])
    {
        return Ok(None);
    }
    Ok(Some(EncodedBatch {
        ends,
        bytes,
        received_ns: Vec::new(),
    }))
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<bool> {
    let mut read = 0;
    while read < buf.len() {
        match f.read(&mut buf[read..])? {
            0 => return Ok(false),
            n => read += n,
        }
    }
    Ok(true)
}

/// Counts the events of the intact records of a segment from `start`; returns (events, end of the last intact
/// record, damaged records).
fn scan(path: &Path, start: u64) -> io::Result<(u64, u64, u64)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(start))?;
    let mut pos = start;
    let mut events = 0;
    while pos < len {
        match read_record(&mut f)? {
            Some(r) => {
                events += r.len() as u64;
                pos += 12 + record_body_len(&r) as u64;
            }
            None => return Ok((events, pos, 1)),
        }
    }
    Ok((events, pos, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u32) -> EncodedBatch {
        let mut b = EncodedBatch::default();
        for i in 0..n {
            b.bytes.extend_from_slice(format!("line{i}\n").as_bytes());
            b.ends.push(b.bytes.len() as u32);
        }
        b
    }

    fn drain(s: &mut Spool) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(r) = s.peek().unwrap() {
            out.push(r.len());
            s.pop(&r).unwrap();
        }
        out
    }

    #[test]
    fn records_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        for n in 1..=5 {
            s.append(&rec(n)).unwrap();
        }
        let first = s.peek().unwrap().unwrap();
        assert_eq!(first, rec(1));
        s.pop(&first).unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(s.events(), 2 + 3 + 4 + 5);
        assert_eq!(drain(&mut s), [2, 3, 4, 5]);
        assert!(s.is_empty());
    }

    #[test]
    fn prepend_puts_older_batches_first_even_mid_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        for n in [10, 11, 12] {
            s.append(&rec(n)).unwrap();
        }
        let r = s.peek().unwrap().unwrap();
        s.pop(&r).unwrap(); // 10 delivered
        s.prepend(&[rec(1), rec(2)]).unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(drain(&mut s), [1, 2, 11, 12]);
    }

    #[test]
    fn a_damaged_record_ends_its_segment_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        for n in [3, 4] {
            s.append(&rec(n)).unwrap();
        }
        drop(s);
        let seg = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "spool"))
            .unwrap();
        let mut data = fs::read(&seg).unwrap();
        let last = data.len() - 2;
        data[last] ^= 0xff; // flip a byte in the second record
        fs::write(&seg, data).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(s.corrupt_records, 1);
        assert_eq!(drain(&mut s), [3]);
    }

    #[test]
    fn the_cap_evicts_whole_oldest_segments_and_reports_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), SEGMENT_BYTES + SEGMENT_BYTES / 2).unwrap();
        let mut big = EncodedBatch::default();
        for _ in 0..7 {
            big.bytes.extend(std::iter::repeat_n(b'x', 150_000));
            big.ends.push(big.bytes.len() as u32);
        }
        let mut evicted = 0;
        for _ in 0..40 {
            evicted += s.append(&big).unwrap().events;
        }
        assert!(evicted > 0);
        assert!(s.bytes() <= SEGMENT_BYTES + SEGMENT_BYTES / 2 + (1 << 21));
        assert_eq!(s.events() + evicted, 40 * 7);
    }

    #[test]
    fn the_head_segment_is_not_evicted_while_its_head_record_is_being_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 1 << 20;
        let mut s = Spool::open(dir.path(), cap).unwrap();
        let batch = |tag: u8| {
            let mut b = EncodedBatch::default();
            for _ in 0..10 {
                b.bytes.extend(std::iter::repeat_n(tag, 2_000));
                b.ends.push(b.bytes.len() as u32);
            }
            b
        };
        s.append(&batch(b'a')).unwrap();
        s.append(&batch(b'b')).unwrap();
        let head = s.peek().unwrap().expect("a record");
        assert_eq!(head.bytes[0], b'a');
        // Far over the cap while the head record is out for delivery.
        let mut evicted = 0;
        for _ in 0..200 {
            evicted += s.append(&batch(b'z')).unwrap().events;
        }
        assert!(evicted > 0);
        // Delivered: popping it must advance to the record after it ('b'), not skip an undelivered one.
        s.pop(&head).unwrap();
        let next = s.peek().unwrap().expect("the next record");
        assert_eq!(next.bytes[0], b'b');
        assert_eq!(
            s.events() + evicted + 10,
            202 * 10,
            "every event is spooled, evicted or delivered once"
        );
    }

    #[test]
    fn a_small_cap_evicts_in_small_steps_and_holds() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 1 << 20;
        let mut s = Spool::open(dir.path(), cap).unwrap();
        let mut batch = EncodedBatch::default();
        for _ in 0..10 {
            batch.bytes.extend(std::iter::repeat_n(b'x', 2_000));
            batch.ends.push(batch.bytes.len() as u32);
        }
        let mut evicted = 0;
        for _ in 0..200 {
            let e = s.append(&batch).unwrap().events;
            // One eviction step drops about one segment (an eighth of the cap), never most of the spool.
            assert!(e <= 80, "evicted {e} events at once");
            evicted += e;
            assert!(s.bytes() <= cap + cap / 8, "spool {} over cap {cap}", s.bytes());
        }
        assert!(evicted > 0);
        assert_eq!(s.events() + evicted, 200 * 10);
    }
}
