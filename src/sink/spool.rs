//! A destination's disk spool: encoded batches that could not be delivered yet, in order, checksummed.
//!
//! # Layout
//! One directory per destination. Segment files `seg-<id>.spool` (20-digit ids, read in ascending order) hold
//! records:
//!
//! ```text
//! magic u32 "SPL2" | body_len u32 | crc32(body) u32 | body
//! body = events u32 | items u32 | item_end u32 × items
//!      | senders u32 | sender [u8; 16] × senders | sender_of u16 × items
//!      | item bytes
//! ```
//!
//! All integers are little-endian. A sender is an IP address in its 16-byte IPv6 form (IPv4 as `::ffff:a.b.c.d`,
//! read back as IPv4); `sender_of` is each item's index into the sender table, or `0xffff` when no sender is
//! accounted for (a line the engine generated). So events replayed after a restart are still counted per Sense
//! host.
//!
//! **Format versions.** Version 1 records (magic `SPL1`, written before senders were recorded: the body has no
//! sender table and no `sender_of`) are still read and delivered; their events count per destination but under
//! no sender. New records are always version 2. A segment may mix both (a v1 segment appended to after an
//! upgrade). A record with any other magic is damaged (see Integrity).
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
//!   of that segment is skipped, later segments are read normally. Damage found at open (a record torn by a
//!   crash) is cut off the file, so later appends are readable; damage met while reading hands the segment's
//!   remaining events to the caller ([`Spool::take_damaged`]), which counts them as dropped.
//! - Bounded: when the spool would exceed `max_bytes`, whole oldest segments are deleted and their events counted
//!   as dropped, per sender (the caller logs them at ERROR). Neither the segment being written nor, while its
//!   head record is out for delivery, the head segment is deleted: the oldest segments after it go instead.
//! - Accounting: each segment keeps its undelivered events per sender, so [`Spool::hosts`] is what is spooled
//!   per sender now and [`Evicted::hosts`] what the cap dropped.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Magic of the current record format (with senders).
const MAGIC: u32 = u32::from_le_bytes(*b"SPL2");
/// Magic of version 1 records (no senders), still read.
const MAGIC_V1: u32 = u32::from_le_bytes(*b"SPL1");
/// Size of the record header (magic, body length, checksum).
const HEADER_BYTES: u64 = 12;
/// A segment is finished (fsynced, a new one started) once it reaches its size: an eighth of the spool's cap,
/// between [`MIN_SEGMENT_BYTES`] and this, so the cap evicts in steps of about an eighth of it (one record, a whole
/// batch, may still make a segment larger).
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// The smallest segment size.
pub const MIN_SEGMENT_BYTES: u64 = 64 << 10;
/// Ids start here so [`Spool::prepend`] has room below.
const FIRST_ID: u64 = 1 << 40;

use std::net::{IpAddr, Ipv6Addr};

use super::batch::{EncodedBatch, NO_SENDER};
use crate::telemetry::metrics::HostTally;

#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
    /// Events in the segment that are not yet delivered (for drop accounting).
    events: u64,
    /// The part of `events` with a known sender, per sender.
    hosts: HostTally,
}

impl Segment {
    fn new(id: u64) -> Segment {
        Segment {
            id,
            bytes: 0,
            events: 0,
            hosts: HostTally::default(),
        }
    }
}

/// Outcome of making room under the cap.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evicted {
    /// Segments deleted.
    pub segments: u64,
    /// Events they held.
    pub events: u64,
    /// The part of `events` with a known sender, per sender.
    pub hosts: HostTally,
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
    /// On-disk length of the record last returned by [`Spool::peek`] (v1 and v2 records differ). While set, that
    /// head record is out for delivery: its segment must not be evicted, or the later [`Spool::pop`] would skip a
    /// different, undelivered record.
    peeked_len: Option<u64>,
    /// Events lost to damaged records met while reading, not yet taken by the caller.
    damaged: Evicted,
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
            peeked_len: None,
            damaged: Evicted::default(),
        };
        for id in ids {
            if id < head_id {
                let _ = fs::remove_file(spool.path(id)); // delivered before a crash
                continue;
            }
            let start = if id == head_id { head_offset } else { 0 };
            let (seg, corrupt) = scan(&spool.path(id), id, start)?;
            spool.corrupt_records += corrupt;
            if corrupt > 0 {
                // Cut the damaged tail (typically a record torn by a crash) off, so that records appended to this
                // segment later follow the last intact one instead of hiding behind the damage.
                OpenOptions::new()
                    .write(true)
                    .open(spool.path(id))?
                    .set_len(seg.bytes)?;
            }
            if seg.events == 0 && corrupt == 0 && seg.bytes <= start {
                let _ = fs::remove_file(spool.path(id));
                continue;
            }
            if spool.segments.is_empty() {
                spool.head_offset = start;
            }
            spool.segments.push_back(seg);
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

    /// Events not yet delivered, per sender (events without a known sender are left out).
    pub fn hosts(&self) -> HostTally {
        let mut t = HostTally::default();
        for s in &self.segments {
            t.add_all(&s.hosts);
        }
        t
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
            self.segments.push_back(Segment::new(id));
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
        batch.tally(0..batch.len(), &mut seg.hosts);
        self.evict_over_cap()
    }

    /// Writes a batch *before* everything spooled (a new lowest segment). Used at shutdown for batches that were
    /// still in memory and are older than the spool's content.
    pub fn prepend(&mut self, batches: &[EncodedBatch]) -> io::Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        // The head moves in front of whatever was peeked: that record is no longer the one a pop would consume.
        self.peeked_len = None;
        let id = self.segments.front().map_or(FIRST_ID, |s| s.id - 1);
        let path = self.path(id);
        let mut f = File::create(&path)?;
        let mut seg = Segment::new(id);
        for batch in batches {
            let record = encode_record(batch);
            f.write_all(&record)?;
            seg.bytes += record.len() as u64;
            seg.events += batch.len() as u64;
            batch.tally(0..batch.len(), &mut seg.hosts);
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
                Some((r, len)) => {
                    self.peeked_len = Some(len);
                    return Ok(Some(r));
                }
                None => {
                    // Damaged or torn record: the rest of this segment is unusable. Its events are lost: hand them to
                    // the caller (`take_damaged`) to be counted, so they do not just vanish from the spooled gauge.
                    self.corrupt_records += 1;
                    let seg = self.segments.front_mut().expect("checked above");
                    self.damaged.events += seg.events;
                    self.damaged.hosts.add_all(&seg.hosts);
                    seg.events = 0;
                    seg.hosts.clear();
                    seg.bytes = self.head_offset;
                    if self.segments.len() == 1 {
                        return Ok(None);
                    }
                    self.drop_front_segment()?;
                }
            }
        }
    }

    /// The events lost to damaged records since the last call (for the caller to count as dropped).
    pub fn take_damaged(&mut self) -> Evicted {
        std::mem::take(&mut self.damaged)
    }

    /// Forgets that the head record is out for delivery (it was given back undelivered; the next peek returns it
    /// again).
    pub fn release_head(&mut self) {
        self.peeked_len = None;
    }

    /// Consumes the record last returned by [`Spool::peek`] (it was delivered, or dropped for good).
    pub fn pop(&mut self, record: &EncodedBatch) -> io::Result<()> {
        let len = self
            .peeked_len
            .take()
            .unwrap_or_else(|| HEADER_BYTES + record_body_len(record) as u64);
        self.head_offset += len;
        if let Some(seg) = self.segments.front_mut() {
            seg.events = seg.events.saturating_sub(record.len() as u64);
            let mut delivered = HostTally::default();
            record.tally(0..record.len(), &mut delivered);
            for &(ip, n) in delivered.iter() {
                seg.hosts.sub(ip, n);
            }
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
        self.peeked_len = None;
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
        let keep_front = usize::from(self.peeked_len.is_some());
        while self.bytes() > self.max_bytes && self.segments.len() > 1 + keep_front {
            if let Some(seg) = self.segments.get(keep_front) {
                evicted.events += seg.events;
                evicted.hosts.add_all(&seg.hosts);
            }
            if keep_front == 0 {
                self.drop_front_segment()?;
            } else {
                self.remove_segment(keep_front);
            }
            evicted.segments += 1;
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

/// Body length of `r` as a version 2 record.
fn record_body_len(r: &EncodedBatch) -> usize {
    8 + 4 * r.ends.len() + 4 + 16 * r.senders.len() + 2 * r.ends.len() + r.bytes.len()
}

/// A batch as one version 2 record (header and body).
fn encode_record(batch: &EncodedBatch) -> Vec<u8> {
    let (ends, bytes) = (&batch.ends, &batch.bytes);
    let events = ends.len() as u32;
    let body_len = record_body_len(batch);
    let mut out = Vec::with_capacity(HEADER_BYTES as usize + body_len);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, filled below
    out.extend_from_slice(&events.to_le_bytes());
    out.extend_from_slice(&(ends.len() as u32).to_le_bytes());
    for e in ends.iter() {
        out.extend_from_slice(&e.to_le_bytes());
    }
    out.extend_from_slice(&(batch.senders.len() as u32).to_le_bytes());
    for ip in &batch.senders {
        let v6 = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => *v6,
        };
        out.extend_from_slice(&v6.octets());
    }
    for i in 0..ends.len() {
        let s = batch.sender_of.get(i).copied().unwrap_or(NO_SENDER);
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(bytes);
    let crc = crc32fast::hash(&out[HEADER_BYTES as usize..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A little-endian `u32` at `at`, if `body` is long enough.
fn u32_at(body: &[u8], at: usize) -> Option<u32> {
    let b = body.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads one record (version 1 or 2) at the file's position, with its on-disk length; `Ok(None)` for a torn or
/// damaged record. Every length and index is checked against the body, so a damaged record never panics.
fn read_record(f: &mut File) -> io::Result<Option<(EncodedBatch, u64)>> {
    let mut header = [0u8; HEADER_BYTES as usize];
    if !read_full(f, &mut header)? {
        return Ok(None);
    }
    let (Some(magic), Some(body_len), Some(crc)) = (u32_at(&header, 0), u32_at(&header, 4), u32_at(&header, 8)) else {
        return Ok(None);
    };
    if magic != MAGIC && magic != MAGIC_V1 {
        return Ok(None);
    }
    let body_len = body_len as usize;
    if body_len < 8 || body_len > (SEGMENT_BYTES as usize) * 4 {
        return Ok(None);
    }
    let mut body = vec![0u8; body_len];
    if !read_full(f, &mut body)? || crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    let batch = if magic == MAGIC {
        decode_body(&body, true)
    } else {
        decode_body(&body, false)
    };
    Ok(batch.map(|b| (b, HEADER_BYTES + body_len as u64)))
}

/// The batch in a record body; `with_senders` for version 2.
fn decode_body(body: &[u8], with_senders: bool) -> Option<EncodedBatch> {
    let events = u32_at(body, 0)? as usize;
    let items = u32_at(body, 4)? as usize;
    let ends_end = items.checked_mul(4)?.checked_add(8)?;
    let ends: Vec<u32> = body
        .get(8..ends_end)?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let (senders, sender_of, bytes_start) = if with_senders {
        let count = u32_at(body, ends_end)? as usize;
        let table_start = ends_end + 4;
        let table_end = count.checked_mul(16)?.checked_add(table_start)?;
        let senders: Vec<IpAddr> = body
            .get(table_start..table_end)?
            .chunks_exact(16)
            .map(|c| {
                let mut o = [0u8; 16];
                o.copy_from_slice(c);
                Ipv6Addr::from(o).to_canonical()
            })
            .collect();
        let of_end = items.checked_mul(2)?.checked_add(table_end)?;
        let sender_of: Vec<u16> = body
            .get(table_end..of_end)?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        if sender_of
            .iter()
            .any(|&s| s != NO_SENDER && usize::from(s) >= senders.len())
        {
            return None;
        }
        // Without any sender, every entry is NO_SENDER: keep the batch's "nothing attributed" form.
        let sender_of = if senders.is_empty() { Vec::new() } else { sender_of };
        (senders, sender_of, of_end)
    } else {
        (Vec::new(), Vec::new(), ends_end)
    };
    let bytes = body.get(bytes_start..)?.to_vec();
    if events != items
        || ends.last().is_some_and(|&e| e as usize != bytes.len())
        || ends.windows(2).any(|w| w[0] > w[1])
    {
        return None;
    }
    Some(EncodedBatch {
        ends,
        bytes,
        received_ns: Vec::new(),
        senders,
        sender_of,
    })
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

/// Indexes segment `id` from `start`: its intact records' events (in total and per sender) and the end of the last
/// intact record as `bytes`; also returns the number of damaged records (0 or 1: one ends the segment).
fn scan(path: &Path, id: u64, start: u64) -> io::Result<(Segment, u64)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(start))?;
    let mut seg = Segment::new(id);
    seg.bytes = start;
    while seg.bytes < len {
        match read_record(&mut f)? {
            Some((r, record_len)) => {
                seg.events += r.len() as u64;
                r.tally(0..r.len(), &mut seg.hosts);
                seg.bytes += record_len;
            }
            None => return Ok((seg, 1)),
        }
    }
    Ok((seg, 0))
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

    /// The (first) segment file in `dir`.
    fn segment_file(dir: &Path) -> PathBuf {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "spool"))
            .expect("a segment file")
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
        let seg = segment_file(dir.path());
        let mut data = fs::read(&seg).unwrap();
        let last = data.len() - 2;
        data[last] ^= 0xff; // flip a byte in the second record
        fs::write(&seg, data).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(s.corrupt_records, 1);
        assert_eq!(drain(&mut s), [3]);
    }

    #[test]
    fn damage_met_while_reading_hands_the_lost_events_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        for n in [3, 4, 5] {
            s.append(&rec(n)).unwrap();
        }
        let seg = segment_file(dir.path());
        // Damage the second record on disk while the spool is open (found only when read).
        let mut data = fs::read(&seg).unwrap();
        let second = encode_record(&rec(3)).len() + 14;
        data[second] ^= 0xff;
        fs::write(&seg, data).unwrap();
        assert_eq!(drain(&mut s), [3]);
        assert_eq!(s.take_damaged().events, 9, "the 4 + 5 events after the damage");
        assert_eq!(s.take_damaged().events, 0);
        assert_eq!(s.events(), 0);
    }

    #[test]
    fn records_appended_after_a_torn_tail_are_not_hidden_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        s.append(&rec(3)).unwrap();
        drop(s);
        let seg = segment_file(dir.path());
        // A crash in the middle of writing a record: half a record at the end of the segment.
        let whole = encode_record(&rec(4));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&whole[..whole.len() / 2]).unwrap();
        drop(f);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(s.corrupt_records, 1);
        s.append(&rec(5)).unwrap();
        assert_eq!(s.events(), 8);
        assert_eq!(drain(&mut s), [3, 5]);
        assert_eq!(s.corrupt_records, 1, "no damage met while reading");
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

    /// A batch of `n` items, item `i` from sender `senders[i % senders.len()]`.
    fn from_senders(n: u32, senders: &[IpAddr]) -> EncodedBatch {
        let mut b = rec(n);
        b.senders = senders.to_vec();
        b.sender_of = (0..n).map(|i| (i as usize % senders.len()) as u16).collect();
        b
    }

    /// A version 1 record (before senders were recorded), as the previous release wrote it.
    fn v1_record(batch: &EncodedBatch) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(batch.len() as u32).to_le_bytes());
        body.extend_from_slice(&(batch.len() as u32).to_le_bytes());
        for e in &batch.ends {
            body.extend_from_slice(&e.to_le_bytes());
        }
        body.extend_from_slice(&batch.bytes);
        let mut out = Vec::new();
        out.extend_from_slice(b"SPL1");
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn senders_survive_the_spool_and_a_reopen_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::7".parse().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        let mut first = from_senders(3, &[a, b]);
        first.sender_of[1] = NO_SENDER; // an engine-generated line
        s.append(&first).unwrap();
        s.append(&from_senders(2, &[b])).unwrap();
        assert_eq!((s.hosts().get(a), s.hosts().get(b)), (2, 2));
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!((s.hosts().get(a), s.hosts().get(b), s.events()), (2, 2, 5));
        let got = s.peek().unwrap().unwrap();
        assert_eq!(got.senders, [a, b], "IPv4 comes back as IPv4, IPv6 as IPv6");
        assert_eq!(got.sender_of, [0, NO_SENDER, 0]);
        assert_eq!((got.ends, got.bytes), (first.ends, first.bytes));
        let got = s.peek().unwrap().unwrap();
        s.pop(&got).unwrap();
        assert_eq!((s.hosts().get(a), s.hosts().get(b)), (0, 2));
    }

    #[test]
    fn version_1_records_are_still_read_and_count_under_no_sender() {
        let dir = tempfile::tempdir().unwrap();
        let old = rec(3);
        fs::write(dir.path().join(format!("seg-{FIRST_ID:020}.spool")), v1_record(&old)).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!((s.events(), s.hosts().total()), (3, 0));
        s.append(&from_senders(2, &[a])).unwrap(); // a v2 record after the v1 one, same segment
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!((s.events(), s.hosts().get(a)), (5, 2));
        let r = s.peek().unwrap().unwrap();
        assert_eq!(
            (r.ends.clone(), r.bytes.clone(), r.senders.len()),
            (old.ends, old.bytes, 0)
        );
        s.pop(&r).unwrap();
        let r = s.peek().unwrap().unwrap();
        assert_eq!(r.senders, [a]);
        s.pop(&r).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn the_cap_reports_evicted_events_per_sender() {
        let dir = tempfile::tempdir().unwrap();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let mut s = Spool::open(dir.path(), SEGMENT_BYTES + SEGMENT_BYTES / 2).unwrap();
        let mut big = from_senders(8, &[a, a, a, b]);
        big.bytes.clear();
        big.ends.clear();
        for _ in 0..8 {
            big.bytes.extend(std::iter::repeat_n(b'x', 150_000));
            big.ends.push(big.bytes.len() as u32);
        }
        let mut evicted = HostTally::default();
        let mut total = 0;
        for _ in 0..40 {
            let e = s.append(&big).unwrap();
            total += e.events;
            evicted.add_all(&e.hosts);
        }
        assert!(total > 0);
        assert_eq!(evicted.total(), total);
        assert_eq!((evicted.get(a), evicted.get(b)), (total / 4 * 3, total / 4));
        assert_eq!(s.hosts().total() + total, 40 * 8);
    }

    #[test]
    fn damaged_sender_tables_are_rejected_not_trusted() {
        let mut b = from_senders(2, &["127.0.0.1".parse().unwrap()]);
        b.sender_of[1] = 5; // no such sender
        let record = encode_record(&b);
        assert_eq!(decode_body(&record[12..], true), None);
        assert_eq!(decode_body(&record[12..20], true), None);
    }
}
