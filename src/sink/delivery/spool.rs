//! A destination's disk spool: encoded batches that could not be delivered yet, in order, checksummed.
//!
//! # Layout
//! One directory per destination (created `0700`; every file in it `0600`: events hold user names and client
//! addresses). Segment files `seg-<id>.spool` (20-digit ids, read in ascending order) hold records:
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
//! the newest segment, which rolls over at an eighth of the cap (see [`SEGMENT_BYTES`]). Fully delivered segments
//! are deleted.
//!
//! The file `head` says where reading starts:
//!
//! ```text
//! v2 <crc32 of the lines below, 8 hex digits>
//! <first segment id> <offset of its first undelivered record>
//! <segment id> <offset>        (zero or more: a later segment whose delivered prefix is still on disk)
//! ```
//!
//! Segments with an id below the first one were delivered (their deletion was cut short). The previous release
//! wrote only the second line; such a file is still read. The head is replaced by write + rename after each
//! delivery, so a SIGKILL leaves the old or the new one; its checksum catches a file torn by a power loss, and a
//! head that is missing or damaged makes the start replay every segment from its beginning (an ERROR: events may
//! be delivered twice, none lost).
//!
//! # Every change is one atomic step
//! A SIGKILL at any point leaves a spool that the next start reads back with every acknowledged record, in order:
//! - **Append** is one `write(2)` at the end of the newest segment. A crash in the middle leaves a torn last
//!   record, which the next start cuts off (counted as a damaged record, see Integrity); the append was never
//!   acknowledged. A *failed* write (a full disk, `ENOSPC`) is cut back at once (`ftruncate` to the segment's
//!   previous length), so the spool stays consistent and takes appends again as soon as there is space; if even
//!   the cut fails, the segment is closed and the next append starts a new one. The reader never reads past the
//!   last whole record it indexed.
//! - **Prepend** ([`Spool::prepend`]) writes `prepend.tmp`, fsyncs it, renames it to `prepend-<id>.spool` and
//!   fsyncs the folder: that rename is the commit (from then on it returns `Ok`). Then the head is rewritten
//!   (fsynced) and the file renamed to `seg-<id>.spool`; if the head cannot be written (a full disk), both wait for
//!   the next head write (a delivery or [`Spool::sync`]); meanwhile appends to that segment go to the file under
//!   its `prepend-` name. A start that finds a `prepend-<id>.spool` finishes the job (it is a complete, fsynced
//!   file of never-delivered batches, older than every segment) the same way: head first, then the rename, so a
//!   crash in between never leaves a `seg-<id>` below the head's first id (which a start deletes as delivered).
//!   A prepend that fails before its commit deletes `prepend.tmp`: the batches are still the caller's. The
//!   partly delivered segment a prepend now precedes is not rewritten: its delivered prefix stays on disk and its
//!   offset goes into the head.
//! - **Delivery** ([`Spool::pop`]) replaces the head (write a temporary file, rename); a fully delivered segment is
//!   deleted before the head moves past it, so a crash in between leaves a head naming a missing segment (fine).
//! - Leftover `*.tmp` files are deleted at start, except `prepend.tmp`: its whole records (batches that were only
//!   in memory when a crash cut the prepend short) are kept as the first segment, a WARN says how many events.
//!
//! # Guarantees
//! - Order: records come back in the order they were appended; [`Spool::prepend`] writes a segment *before* all
//!   others (used at shutdown for batches still in memory, which are older than anything spooled).
//! - Durability: appends are `write(2)` calls, so a crash of the process (SIGKILL) loses nothing appended. On
//!   [`Spool::sync`] (called every `fsyncInterval` and at shutdown) the segment being written, the head and the
//!   folder are fsynced; a segment is also fsynced when it is finished and a prepended one before it is committed.
//!   So a power loss can lose at most what was appended since the last sync, and can make delivered records come
//!   back (at least once, never lost).
//! - Integrity: a record whose checksum or framing is wrong ends what can be read of its segment; later segments
//!   are read normally. Damage found at open (a record torn by a crash, a damaged file) is cut off the file, so
//!   later appends are readable, logged at ERROR with the damaged records and bytes, and handed to the caller
//!   ([`Spool::take_damaged`]). Damage met while reading hands the segment's remaining events (known from the
//!   index) to the caller the same way, to be counted as dropped. Reading a damaged file never panics and never
//!   loops; a record is never longer than what is left of its file.
//! - Full disk: see Append above. The spool never holds a failed batch: the caller decides (the delivery queue
//!   keeps a bounded number of them in memory and retries, see [`super::queue`]). A start on a full disk opens
//!   the spool anyway (a head it cannot write is written by the next delivery or sync), so a restart during the
//!   outage that filled the disk keeps spooling and replays what is there.
//! - Bounded: when the spool would exceed `max_bytes`, whole oldest segments are deleted and their events counted
//!   as dropped, per sender (the caller logs them at ERROR); the append that made room succeeded, whatever the
//!   head write after the deletion meets. Neither the segment being written nor, while its head record is out for
//!   delivery, the head segment is deleted: the oldest segments after it go instead.
//! - Accounting: each segment keeps its undelivered events per sender, so [`Spool::hosts`] is what is spooled
//!   per sender now and [`Evicted::hosts`] what the cap dropped.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{error, warn};

use super::batch::{EncodedBatch, NO_SENDER};
use crate::telemetry::metrics::HostTally;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
pub(crate) mod faults;
#[cfg(test)]
mod prop_tests;
/// Fault injection compiles to plain calls outside unit tests.
#[cfg(not(test))]
mod faults {
    use std::fs::File;
    use std::io::{self, Write};

    #[inline(always)]
    pub(super) fn write_all(f: &mut File, buf: &[u8]) -> io::Result<()> {
        f.write_all(buf)
    }

    #[inline(always)]
    pub(super) fn crash_point() {}
}

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
/// Largest record body read back (a batch is at most 32 MiB, see the config's batch limits).
const MAX_BODY_BYTES: u64 = SEGMENT_BYTES * 4;
/// Mode of every file the spool creates.
const FILE_MODE: u32 = 0o600;
/// Mode of the spool folder.
const DIR_MODE: u32 = 0o700;

#[derive(Debug)]
struct Segment {
    id: u64,
    /// End of the last whole record (the file may be longer only by a torn record the next start cuts off).
    bytes: u64,
    /// Delivered prefix still on disk, for a segment that is not first (a prepend put one in front of it while it
    /// was partly delivered); it becomes the read position when the segment becomes the first. Listed in the head.
    start: u64,
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
            start: 0,
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

impl Evicted {
    /// Adds `other` to this.
    pub fn add(&mut self, other: &Evicted) {
        self.segments += other.segments;
        self.events += other.events;
        self.hosts.add_all(&other.hosts);
    }
}

/// What damaged records cost since the last [`Spool::take_damaged`]: found at open (a record torn by a crash, a
/// damaged file) or while reading.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Damaged records met; each ends what can be read of its segment.
    pub records: u64,
    /// Bytes that could not be read back: the damaged record and the rest of its segment.
    pub bytes: u64,
    /// Undelivered events known to be lost (from the index, for damage met while reading). Damage found at open
    /// adds none: how many events a damaged region held cannot be trusted, so it counts in `records`/`bytes`.
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
    /// A failed append could not be cut back: the newest segment ends in torn bytes, so the next append starts a
    /// new segment.
    writer_torn: bool,
    /// Committed prepends still named `prepend-<id>.spool` because the head that makes them first could not be
    /// written yet (a full disk): renamed after the next head write that succeeds (a start finishes them anyway).
    unnamed: Vec<u64>,
    reader: Option<(u64, File)>,
    /// Damaged records found since open (at open and while reading).
    pub corrupt_records: u64,
    /// On-disk length of the record last returned by [`Spool::peek`] (v1 and v2 records differ). While set, that
    /// head record is out for delivery: its segment must not be evicted, or the later [`Spool::pop`] would skip a
    /// different, undelivered record.
    peeked_len: Option<u64>,
    /// Damage not yet taken by the caller.
    damaged: Damage,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, indexing existing segments (events are counted by reading them once).
    /// Finishes a prepend a crash interrupted, deletes delivered segments and leftovers, cuts damage off (logged at
    /// ERROR with its size, and handed over by [`Spool::take_damaged`]).
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
        // A folder created just now must survive a power loss with what is written into it: fsync its entry in
        // the parent too (best effort: every later step fsyncs the folder itself, and on journaling filesystems
        // the entry is ordered before the files in it anyway).
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = sync_dir(parent);
        }
        // A folder made by an earlier release (or by hand) may be readable by others.
        if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)) {
            warn!(dir = %dir.display(), error = %e, "cannot make the spool folder private");
        }
        let mut seg_ids = Vec::new();
        let mut prepended = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") && name != "prepend.tmp" {
                let _ = fs::remove_file(dir.join(name)); // an unfinished step; its rename never happened
            } else if let Some(id) = parse_id(name, "seg-") {
                seg_ids.push(id);
            } else if let Some(id) = parse_id(name, "prepend-") {
                prepended.push(id);
            }
        }
        let head = match read_head(dir) {
            Ok(h) => h,
            Err(()) => {
                error!(dir = %dir.display(), "spool head file damaged: replaying every segment from its start (events may be delivered twice)");
                Vec::new()
            }
        };
        let head_id = head.first().map_or(0, |&(id, _)| id);
        let starts: HashMap<u64, u64> = head.iter().copied().collect();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(MIN_SEGMENT_BYTES, SEGMENT_BYTES),
            segments: VecDeque::new(),
            head_offset: 0,
            writer: None,
            writer_torn: false,
            unnamed: Vec::new(),
            reader: None,
            corrupt_records: 0,
            peeked_len: None,
            damaged: Damage::default(),
        };
        // A prepend a crash cut short before its commit: its whole records are batches that were only in memory,
        // older than everything spooled. Keep them (first), rather than lose them.
        let unfinished = dir.join("prepend.tmp");
        if unfinished.exists() {
            let (seg, lost_bytes) = scan(&unfinished, 0, 0)?;
            // Before every segment (rolled-forward prepends are kept whatever the head says); ids start at
            // FIRST_ID, so there is room below unless a file was renamed by hand.
            let below = seg_ids
                .iter()
                .chain(&prepended)
                .min()
                .copied()
                .unwrap_or(FIRST_ID)
                .checked_sub(1);
            if let (true, Some(id)) = (seg.events > 0, below) {
                OpenOptions::new().write(true).open(&unfinished)?.set_len(seg.bytes)?;
                File::open(&unfinished)?.sync_all()?;
                fs::rename(&unfinished, dir.join(prepend_name(id)))?;
                sync_dir(dir)?;
                faults::crash_point();
                prepended.push(id);
                warn!(dir = %dir.display(), events = seg.events, torn_bytes = lost_bytes, "kept the batches of a prepend a crash interrupted");
            } else {
                let _ = fs::remove_file(&unfinished);
            }
        }
        // A committed prepend whose last rename a crash cut short: its batches were never delivered. It keeps its
        // name until a head naming it first is written (below, or at the next head write if the disk is full):
        // renamed before that, it would sit below the old head's first id and a start would take it for a
        // delivered segment.
        seg_ids.extend(&prepended);
        spool.unnamed.clone_from(&prepended);
        seg_ids.sort_unstable();
        seg_ids.dedup();
        for id in seg_ids {
            if id < head_id && !prepended.contains(&id) {
                let _ = fs::remove_file(spool.path(id)); // delivered before a crash
                continue;
            }
            let start = starts.get(&id).copied().unwrap_or(0);
            let path = spool.path(id);
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(FILE_MODE));
            let (mut seg, lost_bytes) = scan(&path, id, start)?;
            if lost_bytes > 0 {
                spool.corrupt_records += 1;
                spool.damaged.records += 1;
                spool.damaged.bytes += lost_bytes;
                error!(dir = %dir.display(), segment = id, records = 1, bytes = lost_bytes, "damaged spool record found at start: the rest of its segment is lost");
                // Cut the damaged tail (typically a record torn by a crash) off, so that records appended to this
                // segment later follow the last intact one instead of hiding behind the damage.
                OpenOptions::new().write(true).open(&path)?.set_len(seg.bytes)?;
                faults::crash_point();
            }
            if seg.events == 0 && seg.bytes <= start {
                let _ = fs::remove_file(&path);
                spool.unnamed.retain(|&u| u != id);
                continue;
            }
            if spool.segments.is_empty() {
                spool.head_offset = start;
                seg.start = 0;
            }
            spool.segments.push_back(seg);
        }
        // A full disk (a restart during the outage that filled it) must not turn the spool off: what is on disk
        // is indexed and readable, and the head (with the prepends' renames) is written by the next delivery or
        // sync that succeeds. Until then the old head, with the prepends under their own names, reads the same.
        if let Err(e) = spool.write_head(true) {
            warn!(dir = %dir.display(), error = %e, "cannot write the spool head at start (disk full?); retried at the next delivery or sync");
        }
        Ok(spool)
    }

    fn path(&self, id: u64) -> PathBuf {
        if self.unnamed.contains(&id) {
            return self.dir.join(prepend_name(id));
        }
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
    ///
    /// On an error (a full disk) nothing of the batch stays in the spool: the segment is cut back to its last
    /// whole record (or, if that fails too, closed), so later appends are readable. The batch is the caller's.
    pub fn append(&mut self, batch: &EncodedBatch) -> io::Result<Evicted> {
        let events = batch.len() as u32;
        let record = encode_record(batch);
        let needs_new = match self.segments.back() {
            Some(s) => (s.bytes + record.len() as u64 > self.segment_bytes || self.writer_torn) && s.bytes > 0,
            None => true,
        };
        if needs_new {
            self.finish_writer()?;
            let id = self.segments.back().map_or(FIRST_ID, |s| s.id + 1);
            self.segments.push_back(Segment::new(id));
        }
        self.writer_torn = false;
        let id = self.segments.back().expect("a segment was just ensured").id;
        if self.writer.as_ref().is_none_or(|(wid, _)| *wid != id) {
            // By its current name: the newest segment may be a committed prepend not yet renamed (its head could
            // not be written); a `seg-<id>` created beside it would be replaced by that rename, appends and all.
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(FILE_MODE)
                .open(self.path(id))?;
            self.writer = Some((id, f));
        }
        let seg = self.segments.back_mut().expect("a segment was just ensured");
        let (_, f) = self.writer.as_mut().expect("writer opened above");
        if let Err(e) = faults::write_all(f, &record) {
            // Part of the record may be in the file: cut it back, or the reader would stop at the torn bytes and
            // count every later record as damaged (even after space returns).
            if f.set_len(seg.bytes).is_err() {
                self.writer = None;
                self.writer_torn = true;
            }
            return Err(e);
        }
        faults::crash_point();
        seg.bytes += record.len() as u64;
        seg.events += u64::from(events);
        batch.tally(0..batch.len(), &mut seg.hosts);
        // The record is in: whatever the eviction meets, the append succeeded (an `Err` would make the caller
        // write the batch again), and what it evicted is handed over to be counted.
        Ok(self.evict_over_cap())
    }

    /// Writes batches *before* everything spooled (a new lowest segment), in one atomic step (see the module docs).
    /// Used at shutdown for batches that were still in memory and are older than the spool's content. Once it
    /// returns `Ok`, the batches are fsynced and a start replays them first.
    pub fn prepend(&mut self, batches: &[EncodedBatch]) -> io::Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let id = self.segments.front().map_or(FIRST_ID, |s| s.id - 1);
        let tmp = self.dir.join("prepend.tmp");
        let mut seg = Segment::new(id);
        let committed = self.dir.join(prepend_name(id));
        // Until the rename commits it, `prepend.tmp` is what a *crash* leaves (a start keeps its whole records: the
        // batches were only in memory). A prepend that *fails* hands the batches back to the caller, who keeps
        // them in memory: the file must go, or a start would replay them a second time, out of order.
        let written = write_records(&tmp, batches, &mut seg).and_then(|()| {
            faults::crash_point();
            fs::rename(&tmp, &committed)
        });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        faults::crash_point();
        if let Err(e) = sync_dir(&self.dir) {
            // The rename may not survive a power loss: undo it, the caller keeps the batches.
            let _ = fs::remove_file(&committed);
            return Err(e);
        }
        faults::crash_point();
        // Committed: from here on a start replays these batches first. The head moves in front of whatever was
        // peeked: that record is no longer the one a pop would consume.
        self.peeked_len = None;
        if let Some(front) = self.segments.front_mut() {
            front.start = self.head_offset;
        }
        self.segments.push_front(seg);
        self.head_offset = 0;
        self.unnamed.push(id);
        // The batches are safe whatever happens now: a head that cannot be written (a full disk) is written by the
        // next pop or sync, and the file renamed then.
        if let Err(e) = self.write_head(true) {
            warn!(dir = %self.dir.display(), error = %e, "cannot update the spool head after a prepend; retried on the next delivery");
        }
        Ok(())
    }

    /// Reads the oldest undelivered record without consuming it. `Ok(None)` when the spool is empty.
    pub fn peek(&mut self) -> io::Result<Option<EncodedBatch>> {
        loop {
            let Some(seg) = self.segments.front() else {
                return Ok(None);
            };
            let (id, end) = (seg.id, seg.bytes);
            if self.head_offset >= end {
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
            match read_record(f, end - self.head_offset)? {
                Some((r, len)) => {
                    self.peeked_len = Some(len);
                    return Ok(Some(r));
                }
                None => {
                    // Damaged record: the rest of this segment is unusable. Its events are lost: hand them to the
                    // caller (`take_damaged`) to be counted, so they do not just vanish from the spooled gauge.
                    self.corrupt_records += 1;
                    let seg = self.segments.front_mut().expect("checked above");
                    self.damaged.records += 1;
                    self.damaged.bytes += seg.bytes - self.head_offset;
                    self.damaged.events += seg.events;
                    self.damaged.hosts.add_all(&seg.hosts);
                    seg.events = 0;
                    seg.hosts.clear();
                    seg.bytes = self.head_offset;
                    if self.segments.len() == 1 {
                        // Appends continue in this segment: cut the damage off so they follow the last whole
                        // record.
                        self.writer = None;
                        OpenOptions::new()
                            .write(true)
                            .open(self.path(id))?
                            .set_len(self.head_offset)?;
                        return Ok(None);
                    }
                    self.drop_front_segment()?;
                }
            }
        }
    }

    /// The damage found since the last call (for the caller to count: `events` as dropped, `records` on the
    /// damaged-records counter).
    pub fn take_damaged(&mut self) -> Damage {
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
                return self.drop_front_segment();
            }
        }
        self.write_head(false)
    }

    /// fsyncs the segment being written, the head file and the folder (new and deleted segment files): everything
    /// appended and every delivery recorded before the call survives a power loss.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some((_, f)) = &self.writer {
            f.sync_data()?;
        }
        self.write_head(true)
    }

    fn finish_writer(&mut self) -> io::Result<()> {
        if let Some((_, f)) = self.writer.take() {
            f.sync_all()?;
        }
        Ok(())
    }

    /// Deletes the fully delivered (or evicted) first segment, then moves the head to the next one.
    fn drop_front_segment(&mut self) -> io::Result<()> {
        self.peeked_len = None;
        self.remove_segment(0);
        faults::crash_point();
        self.head_offset = self.segments.front().map_or(0, |s| s.start);
        if let Some(front) = self.segments.front_mut() {
            front.start = 0;
        }
        self.write_head(false)
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
            self.unnamed.retain(|&id| id != seg.id);
        }
    }

    /// Deletes the oldest segments while over the cap, never the one being written, nor the head segment while
    /// its head record is being delivered (then the oldest segments after it go). Returns what it deleted, always:
    /// a segment's file is gone once it is counted here. A head that cannot be rewritten afterwards (a full disk)
    /// only names a missing segment, which a start skips (see the module docs); the next head write catches up.
    fn evict_over_cap(&mut self) -> Evicted {
        let mut evicted = Evicted::default();
        let keep_front = usize::from(self.peeked_len.is_some());
        while self.bytes() > self.max_bytes && self.segments.len() > 1 + keep_front {
            if let Some(seg) = self.segments.get(keep_front) {
                evicted.events += seg.events;
                evicted.hosts.add_all(&seg.hosts);
            }
            let head = if keep_front == 0 {
                self.drop_front_segment()
            } else {
                self.remove_segment(keep_front);
                self.write_head(false)
            };
            if let Err(e) = head {
                warn!(dir = %self.dir.display(), error = %e, "cannot update the spool head after dropping its oldest segment; retried at the next delivery or sync");
            }
            evicted.segments += 1;
        }
        evicted
    }

    /// Replaces the head file (write a temporary file, rename); `durable` fsyncs the file and the folder too.
    /// Then gives committed prepends their segment names.
    fn write_head(&mut self, durable: bool) -> io::Result<()> {
        let mut lines = String::new();
        let front = self.segments.front().map_or(0, |s| s.id);
        lines.push_str(&format!("{front} {}\n", self.head_offset));
        for s in self.segments.iter().skip(1).filter(|s| s.start > 0) {
            lines.push_str(&format!("{} {}\n", s.id, s.start));
        }
        let text = format!("v2 {:08x}\n{lines}", crc32fast::hash(lines.as_bytes()));
        let tmp = self.dir.join("head.tmp");
        let mut f = create_private(&tmp)?;
        faults::write_all(&mut f, text.as_bytes())?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        faults::crash_point();
        fs::rename(tmp, self.dir.join("head"))?;
        faults::crash_point();
        if durable {
            sync_dir(&self.dir)?;
        }
        while let Some(&id) = self.unnamed.last() {
            fs::rename(
                self.dir.join(prepend_name(id)),
                self.dir.join(format!("seg-{id:020}.spool")),
            )?;
            self.unnamed.pop();
            faults::crash_point();
        }
        Ok(())
    }
}

/// Writes `batches` as records into a new `path` (readable by the owner only) and fsyncs it; `seg` counts them.
fn write_records(path: &Path, batches: &[EncodedBatch], seg: &mut Segment) -> io::Result<()> {
    let mut f = create_private(path)?;
    for batch in batches {
        let record = encode_record(batch);
        faults::write_all(&mut f, &record)?;
        seg.bytes += record.len() as u64;
        seg.events += batch.len() as u64;
        batch.tally(0..batch.len(), &mut seg.hosts);
    }
    f.sync_all()
}

/// The id in `<prefix><20 digits>.spool`.
fn parse_id(name: &str, prefix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.strip_suffix(".spool")?.parse().ok()
}

/// The name of a committed prepend not yet renamed to its segment name.
/// Creates (or empties) `path` for writing, readable by the owner only ([`FILE_MODE`]).
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

fn prepend_name(id: u64) -> String {
    format!("prepend-{id:020}.spool")
}

/// fsyncs a folder: new, renamed and deleted entries in it survive a power loss.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The head's `(segment id, offset)` entries, first segment first: empty when there is no head file, `Err` when
/// it is damaged.
fn read_head(dir: &Path) -> Result<Vec<(u64, u64)>, ()> {
    let bytes = match fs::read(dir.join("head")) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(_) => return Err(()),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| ())?;
    let lines = match text.strip_prefix("v2 ") {
        Some(rest) => {
            let (crc, lines) = rest.split_once('\n').ok_or(())?;
            if u32::from_str_radix(crc, 16) != Ok(crc32fast::hash(lines.as_bytes())) {
                return Err(());
            }
            lines
        }
        // The previous release's head: one line, no checksum.
        None => text,
    };
    let mut entries = Vec::new();
    for line in lines.lines() {
        let mut it = line.split_whitespace();
        let (Some(id), Some(offset), None) = (it.next(), it.next(), it.next()) else {
            return Err(());
        };
        entries.push((id.parse().map_err(|_| ())?, offset.parse().map_err(|_| ())?));
    }
    if entries.is_empty() {
        return Err(());
    }
    Ok(entries)
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
/// damaged record, or one longer than `available` (the bytes left in the segment). Every length and index is
/// checked against the body, so a damaged record never panics, and nothing larger than `available` is allocated.
fn read_record(f: &mut File, available: u64) -> io::Result<Option<(EncodedBatch, u64)>> {
    let mut header = [0u8; HEADER_BYTES as usize];
    if available < HEADER_BYTES || !read_full(f, &mut header)? {
        return Ok(None);
    }
    let (Some(magic), Some(body_len), Some(crc)) = (u32_at(&header, 0), u32_at(&header, 4), u32_at(&header, 8)) else {
        return Ok(None);
    };
    if magic != MAGIC && magic != MAGIC_V1 {
        return Ok(None);
    }
    let body_len = u64::from(body_len);
    if !(8..=MAX_BODY_BYTES).contains(&body_len) || body_len > available - HEADER_BYTES {
        return Ok(None);
    }
    let mut body = vec![0u8; body_len as usize];
    if !read_full(f, &mut body)? || crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    let batch = if magic == MAGIC {
        decode_body(&body, true)
    } else {
        decode_body(&body, false)
    };
    Ok(batch.map(|b| (b, HEADER_BYTES + body_len)))
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
/// intact record as `bytes`; also returns how many bytes after it cannot be read (0, or a damaged record and the
/// rest of the segment).
fn scan(path: &Path, id: u64, start: u64) -> io::Result<(Segment, u64)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(start))?;
    let mut seg = Segment::new(id);
    seg.bytes = start;
    seg.start = start;
    while seg.bytes < len {
        match read_record(&mut f, len - seg.bytes)? {
            Some((r, record_len)) => {
                seg.events += r.len() as u64;
                r.tally(0..r.len(), &mut seg.hosts);
                seg.bytes += record_len;
            }
            None => {
                let lost = len - seg.bytes;
                return Ok((seg, lost));
            }
        }
    }
    Ok((seg, 0))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A spool (no cap to speak of) in a fresh folder holding one record of `n` events per entry of `sizes`.
    fn spool_holding(sizes: &[u32]) -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        for &n in sizes {
            s.append(&rec(n)).unwrap();
        }
        (dir, s)
    }

    /// Delivers the head record.
    fn deliver_head(s: &mut Spool) {
        let r = s.peek().unwrap().unwrap();
        s.pop(&r).unwrap();
    }

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
        let (dir, mut s) = spool_holding(&[10, 11, 12]);
        deliver_head(&mut s); // 10 delivered
        s.prepend(&[rec(1), rec(2)]).unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(drain(&mut s), [1, 2, 11, 12]);
    }

    #[test]
    fn a_damaged_record_ends_its_segment_and_is_counted() {
        let (dir, s) = spool_holding(&[3, 4]);
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

    /// Flips a byte inside the body of the second record (the first is `rec(3)`) of the only segment in `dir`.
    fn damage_second_record(dir: &Path) {
        let seg = segment_file(dir);
        let mut data = fs::read(&seg).unwrap();
        let second = encode_record(&rec(3)).len() + 14;
        data[second] ^= 0xff;
        fs::write(&seg, data).unwrap();
    }

    #[test]
    fn damage_met_while_reading_hands_the_lost_events_over() {
        let (dir, mut s) = spool_holding(&[3, 4, 5]);
        // Damage the second record on disk while the spool is open (found only when read).
        damage_second_record(dir.path());
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

    /// Every record's item count, draining the spool.
    fn drain_all(dir: &Path) -> Vec<usize> {
        drain(&mut Spool::open(dir, 1 << 30).unwrap())
    }

    #[test]
    fn a_failed_append_is_cut_back_and_appends_work_again_once_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        s.append(&rec(3)).unwrap();
        // The disk fills up in the middle of the next record, and stays full for one more.
        faults::set_space(Some(20));
        assert_eq!(s.append(&rec(4)).unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        assert!(s.append(&rec(5)).is_err());
        faults::set_space(None);
        assert_eq!(s.events(), 3, "a failed append adds nothing");
        s.append(&rec(6)).unwrap();
        s.append(&rec(7)).unwrap();
        assert_eq!(
            fs::metadata(segment_file(dir.path())).unwrap().len(),
            s.bytes(),
            "no torn bytes left in the file"
        );
        assert_eq!(drain(&mut s), [3, 6, 7]);
        assert_eq!(s.take_damaged(), Damage::default());
        s.append(&rec(8)).unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!((s.corrupt_records, s.take_damaged()), (0, Damage::default()));
        assert_eq!(drain(&mut s), [8]);
    }

    #[test]
    fn a_failed_prepend_leaves_the_spool_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        s.append(&rec(3)).unwrap();
        faults::set_space(Some(10));
        assert!(s.prepend(&[rec(1), rec(2)]).is_err());
        faults::set_space(None);
        drop(s);
        assert_eq!(drain_all(dir.path()), [3]);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("prepend"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn damage_met_while_reading_the_segment_being_written_does_not_hide_later_appends() {
        let (dir, mut s) = spool_holding(&[3, 4]);
        damage_second_record(dir.path());
        assert_eq!(drain(&mut s), [3]);
        let damage = s.take_damaged();
        assert_eq!((damage.records, damage.events), (1, 4));
        assert_eq!(damage.bytes, encode_record(&rec(4)).len() as u64);
        // Appended after the damage was met: must be read back, now and after a restart.
        s.append(&rec(5)).unwrap();
        s.append(&rec(6)).unwrap();
        assert_eq!(s.peek().unwrap().map(|r| r.len()), Some(5));
        s.release_head();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(s.take_damaged(), Damage::default());
        assert_eq!(drain(&mut s), [5, 6]);
    }

    #[test]
    fn damage_found_at_open_is_logged_and_handed_over_with_its_size() {
        let (dir, s) = spool_holding(&[3, 4, 5]);
        drop(s);
        let seg = segment_file(dir.path());
        let mut data = fs::read(&seg).unwrap();
        let second = encode_record(&rec(3)).len();
        data[second + 14] ^= 0xff;
        fs::write(&seg, &data).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        let damage = s.take_damaged();
        assert_eq!(
            (damage.records, damage.bytes, damage.events),
            (1, (data.len() - second) as u64, 0),
            "the damaged record and everything after it; their event count is not trusted"
        );
        assert_eq!(s.take_damaged(), Damage::default(), "handed over once");
        assert_eq!((s.corrupt_records, s.events()), (1, 3));
    }

    #[test]
    fn a_damaged_head_file_replays_everything_rather_than_losing_records() {
        let (dir, mut s) = spool_holding(&[3, 4, 5]);
        deliver_head(&mut s);
        drop(s);
        let head = fs::read_to_string(dir.path().join("head")).unwrap();
        // A power loss tore the head: the offset lost its last digit (and the newline).
        let torn = &head[..head.len() - 2];
        fs::write(dir.path().join("head"), torn).unwrap();
        assert_eq!(
            drain_all(dir.path()),
            [3, 4, 5],
            "from the start: 3 again, 4 and 5 not lost"
        );
    }

    #[test]
    fn the_previous_releases_head_file_is_still_read() {
        let (dir, s) = spool_holding(&[3, 4]);
        drop(s);
        let offset = encode_record(&rec(3)).len();
        fs::write(dir.path().join("head"), format!("{FIRST_ID} {offset}\n")).unwrap();
        assert_eq!(drain_all(dir.path()), [4]);
    }

    #[test]
    fn a_prepend_in_front_of_a_partly_delivered_segment_survives_a_reopen_without_rewriting_it() {
        let (dir, mut s) = spool_holding(&[10, 11, 12]);
        let seg = segment_file(dir.path());
        let before = fs::read(&seg).unwrap();
        deliver_head(&mut s);
        s.prepend(&[rec(1)]).unwrap();
        s.prepend(&[rec(2)]).unwrap();
        assert_eq!(
            fs::read(&seg).unwrap(),
            before,
            "the delivered prefix stays; its offset is in the head"
        );
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(s.events(), 2 + 1 + 11 + 12);
        assert_eq!(drain(&mut s), [2, 1, 11, 12]);
    }

    #[test]
    fn spool_files_and_folder_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool").join("influxdb");
        let mut s = Spool::open(&dir, 1 << 30).unwrap();
        s.append(&rec(3)).unwrap();
        s.prepend(&[rec(1)]).unwrap();
        s.sync().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("spool")), 0o700);
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }

    #[test]
    fn an_existing_world_readable_folder_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        drop(Spool::open(dir.path(), 1 << 30).unwrap());
        assert_eq!(fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_prepend_whose_head_cannot_be_written_is_kept_and_read_first() {
        for reopen in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
            for n in [10, 11] {
                s.append(&rec(n)).unwrap();
            }
            let r = s.peek().unwrap().unwrap();
            s.pop(&r).unwrap();
            // Room for the prepended record, none for the head after it.
            faults::set_space(Some(encode_record(&rec(1)).len() as u64));
            s.prepend(&[rec(1)]).expect("committed: the batches are on disk");
            faults::set_space(None);
            if reopen {
                drop(s);
                assert_eq!(drain_all(dir.path()), [1, 11]);
            } else {
                assert_eq!(drain(&mut s), [1, 11]);
                drop(s);
                assert_eq!(drain_all(dir.path()), Vec::<usize>::new());
            }
        }
    }

    #[test]
    fn a_spool_opened_on_a_full_disk_keeps_its_records_and_takes_appends_once_space_returns() {
        let (dir, s) = spool_holding(&[3, 4]);
        drop(s);
        // A restart (after a crash, an OOM kill) while the outage that filled the disk goes on.
        faults::set_space(Some(0));
        let mut s = Spool::open(dir.path(), 1 << 30).expect("a full disk does not turn the spool off");
        assert_eq!(s.events(), 7);
        assert!(s.append(&rec(5)).is_err(), "still full");
        faults::set_space(None);
        s.append(&rec(6)).unwrap();
        drop(s);
        assert_eq!(drain_all(dir.path()), [3, 4, 6]);
    }

    #[test]
    fn a_prepend_still_unnamed_at_a_start_on_a_full_disk_survives_the_next_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        for n in [10, 11] {
            s.append(&rec(n)).unwrap();
        }
        deliver_head(&mut s);
        // Committed, but the head that makes it first could not be written: still `prepend-<id>.spool`.
        faults::set_space(Some(encode_record(&rec(1)).len() as u64));
        s.prepend(&[rec(1)]).unwrap();
        drop(s); // killed
                 // The start cannot write its head either, and the engine is killed again before anything else happens.
        faults::set_space(Some(0));
        drop(Spool::open(dir.path(), 1 << 30).expect("opens on a full disk"));
        faults::set_space(None);
        assert_eq!(
            drain_all(dir.path()),
            [1, 11],
            "the prepended batch is not taken for a delivered segment"
        );
    }

    #[test]
    fn appends_after_a_prepend_whose_head_failed_on_an_empty_spool_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        // The first spool write of a run is a failed batch's spill; its head cannot be written.
        faults::set_space(Some(encode_record(&rec(1)).len() as u64));
        s.prepend(&[rec(1)]).unwrap();
        faults::set_space(None);
        // The same segment takes the next appends (it is the newest one).
        s.append(&rec(2)).unwrap();
        s.append(&rec(3)).unwrap();
        s.sync().unwrap();
        s.append(&rec(4)).unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!((s.corrupt_records, s.take_damaged()), (0, Damage::default()));
        assert_eq!(drain(&mut s), [1, 2, 3, 4]);
    }

    #[test]
    fn an_eviction_whose_head_cannot_be_written_still_counts_and_keeps_the_appended_record() {
        let dir = tempfile::tempdir().unwrap();
        // 256 KiB cap: 64 KiB segments; ~20 KB records.
        let mut s = Spool::open(dir.path(), 256 << 10).unwrap();
        let (mut appended, mut evicted) = (0, 0);
        for _ in 0..40 {
            let b = rec(1250);
            // Room for the record, none for a head written by an eviction it causes.
            faults::set_space(Some(encode_record(&b).len() as u64));
            let e = s.append(&b).expect("the record is in the spool: the append succeeded");
            faults::set_space(None);
            appended += 1250;
            evicted += e.events;
        }
        assert!(evicted > 0, "the cap evicted");
        assert_eq!(
            s.events() + evicted,
            appended,
            "every event is spooled or counted as evicted"
        );
        let spooled = s.events();
        drop(s);
        let back: usize = drain_all(dir.path()).iter().sum();
        assert_eq!(back as u64, spooled);
    }

    #[test]
    fn a_prepend_that_fails_after_whole_records_leaves_nothing_for_the_next_start() {
        let (dir, mut s) = spool_holding(&[10]);
        // Room for the first record and part of the second.
        faults::set_space(Some(encode_record(&rec(1)).len() as u64 + 5));
        assert!(s.prepend(&[rec(1), rec(2)]).is_err());
        faults::set_space(None);
        drop(s);
        // The batches stayed with the caller (in memory, delivered from there): a start must not replay them.
        assert_eq!(drain_all(dir.path()), [10]);
        assert!(!dir.path().join("prepend.tmp").exists());
    }

    #[test]
    fn the_whole_records_of_a_prepend_a_crash_cut_short_are_kept_first() {
        let (dir, s) = spool_holding(&[10, 11]);
        drop(s);
        // Killed while writing `prepend.tmp`: two whole records and half a third.
        let mut data = encode_record(&rec(1));
        data.extend_from_slice(&encode_record(&rec(2)));
        let third = encode_record(&rec(3));
        data.extend_from_slice(&third[..third.len() / 2]);
        fs::write(dir.path().join("prepend.tmp"), data).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(s.events(), 1 + 2 + 10 + 11);
        assert_eq!(drain(&mut s), [1, 2, 10, 11]);
        assert!(!dir.path().join("prepend.tmp").exists());
    }
}
