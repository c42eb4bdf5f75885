//! Damaged spool files, as the fuzz target `fuzz/fuzz_targets/spool.rs` feeds them, on every `cargo test`: random
//! bytes as a segment and head, and real spools with a flipped bit, a cut or garbage appended. Opening and reading
//! them all back never panics and ends within one step per record, and every event the index counted is read
//! back or handed over as damaged. For a flipped bit the loss is exact: the records before it come back, the
//! damaged record and the rest of its segment are counted.

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use super::{encode_record, EncodedBatch, Spool, FIRST_ID};

const CAP: u64 = 1 << 30;

fn batch(items: &[Vec<u8>]) -> EncodedBatch {
    let mut b = EncodedBatch::default();
    for item in items {
        b.bytes.extend_from_slice(item);
        b.ends.push(b.bytes.len() as u32);
    }
    b
}

/// Opens `dir` and reads every record back. Returns the records, the events the index counted at open and the
/// damage handed over. Panics if reading does not end within one step per 20 bytes on disk (a record is larger).
pub(super) fn open_and_drain(dir: &Path) -> (Vec<EncodedBatch>, u64, super::Damage) {
    let on_disk: u64 = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let mut s = Spool::open(dir, CAP).expect("a damaged spool still opens");
    let indexed = s.events();
    let mut damage = s.take_damaged();
    let mut read = Vec::new();
    while let Some(r) = s.peek().unwrap() {
        s.pop(&r).unwrap();
        read.push(r);
        assert!(read.len() as u64 <= on_disk / 20 + 1, "reading never ends");
    }
    let later = s.take_damaged();
    damage.records += later.records;
    damage.bytes += later.bytes;
    damage.events += later.events;
    assert!(s.is_empty());
    (read, indexed, damage)
}

/// A spool in `dir` holding one record per item list of `batches`; the records as written.
fn write_spool(dir: &Path, batches: &[Vec<Vec<u8>>]) -> Vec<EncodedBatch> {
    let mut s = Spool::open(dir, CAP).unwrap();
    let written: Vec<EncodedBatch> = batches.iter().map(|b| batch(b)).collect();
    for b in &written {
        s.append(b).unwrap();
    }
    written
}

fn segment_path(dir: &Path) -> std::path::PathBuf {
    dir.join(format!("seg-{FIRST_ID:020}.spool"))
}

fn items() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 1..5),
        1..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_as_a_segment_and_head_never_panic_or_loop(
        segment in prop::collection::vec(any::<u8>(), 0..2000),
        head in prop::option::of(prop::collection::vec(any::<u8>(), 0..60)),
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..30), 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        // Whole records first, so the random tail also meets a valid start.
        let mut data = Vec::new();
        for r in &records {
            data.extend_from_slice(&encode_record(&batch(std::slice::from_ref(r))));
        }
        data.extend_from_slice(&segment);
        fs::write(segment_path(dir.path()), &data).unwrap();
        if let Some(head) = head {
            fs::write(dir.path().join("head"), head).unwrap();
        }
        let (read, indexed, damage) = open_and_drain(dir.path());
        let events: u64 = read.iter().map(|r| r.len() as u64).sum();
        prop_assert_eq!(indexed, events + damage.events);
    }

    #[test]
    fn a_flipped_bit_costs_exactly_the_damaged_record_and_the_rest_of_its_segment(
        batches in items(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let written = write_spool(dir.path(), &batches);
        let path = segment_path(dir.path());
        let mut data = fs::read(&path).unwrap();
        let i = at.index(data.len());
        data[i] ^= 1 << bit;
        fs::write(&path, &data).unwrap();
        // The record the flipped byte is in.
        let mut start = 0;
        let mut damaged = 0;
        for (k, b) in written.iter().enumerate() {
            let len = encode_record(b).len();
            if i < start + len {
                damaged = k;
                break;
            }
            start += len;
        }
        let (read, _, damage) = open_and_drain(dir.path());
        prop_assert_eq!(&read[..], &written[..damaged]);
        prop_assert_eq!((damage.records, damage.bytes), (1, (data.len() - start) as u64));
    }

    #[test]
    fn a_cut_or_garbage_at_the_end_keeps_every_whole_record_before_it(
        batches in items(),
        cut in any::<prop::sample::Index>(),
        garbage in prop::collection::vec(any::<u8>(), 0..50),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let written = write_spool(dir.path(), &batches);
        let path = segment_path(dir.path());
        let mut data = fs::read(&path).unwrap();
        data.truncate(cut.index(data.len() + 1));
        let whole = written
            .iter()
            .scan(0, |end, b| {
                *end += encode_record(b).len();
                Some(*end)
            })
            .take_while(|&end| end <= data.len())
            .count();
        data.extend_from_slice(&garbage);
        fs::write(&path, &data).unwrap();
        let (read, _, _) = open_and_drain(dir.path());
        // Whatever follows the cut, every whole record before it comes back.
        prop_assert!(read.len() >= whole, "{} of {} whole records read back", read.len(), whole);
        prop_assert_eq!(&read[..whole], &written[..whole]);
        prop_assert!(read.len() <= whole + garbage.len() / 20);
    }
}
