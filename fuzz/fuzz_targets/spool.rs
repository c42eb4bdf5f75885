//! Arbitrary bytes as a spool folder (a head file and two segment files) to `sense_ingest::sink::delivery::spool::Spool`:
//! open it and read every record back, as a start after a crash or a damaged disk does.
//!
//! Input layout: byte 0 is the head file's length (0: no head file), byte 1 where the rest splits into the first
//! and the second segment (in 1/255ths), then the head file, then the segments' bytes. Seeds worth starting from
//! are real spool folders' files concatenated this way.
//!
//! Checked on every input: opening never panics and succeeds; reading ends within one step per 20 bytes on disk
//! (the smallest record is larger); every event the index counted at open is read back or handed over by
//! `take_damaged`; the spool is empty afterwards.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sense_ingest::sink::delivery::spool::Spool;

/// The id of the first segment a spool creates (any 20-digit id is read; ids order the segments).
const FIRST_ID: u64 = 1 << 40;

fuzz_target!(|data: &[u8]| {
    let (Some(&head_len), Some(&split)) = (data.first(), data.get(1)) else {
        return;
    };
    let rest = &data[2..];
    let head_len = usize::from(head_len).min(rest.len());
    let (head, segments) = rest.split_at(head_len);
    let (first, second) = segments.split_at(segments.len() * usize::from(split) / 255);
    let dir = tempfile::tempdir().unwrap();
    if head_len > 0 {
        std::fs::write(dir.path().join("head"), head).unwrap();
    }
    std::fs::write(dir.path().join(format!("seg-{FIRST_ID:020}.spool")), first).unwrap();
    std::fs::write(dir.path().join(format!("seg-{:020}.spool", FIRST_ID + 1)), second).unwrap();

    let mut spool = Spool::open(dir.path(), 1 << 30).expect("a damaged spool still opens");
    let indexed = spool.events();
    let mut damaged = spool.take_damaged().events;
    let mut read = 0u64;
    let mut steps = 0usize;
    while let Some(record) = spool.peek().unwrap() {
        read += record.len() as u64;
        spool.pop(&record).unwrap();
        steps += 1;
        assert!(steps <= data.len() / 20 + 2, "reading never ends");
    }
    damaged += spool.take_damaged().events;
    assert_eq!(indexed, read + damaged, "every indexed event is read back or counted as damaged");
    assert!(spool.is_empty());
});
