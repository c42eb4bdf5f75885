//! Branch-light "does any byte need escaping?" scans shared by the encoders.
//!
//! Almost every value the encoders write (host names, user ids, app ids, user agents) needs no escaping at all,
//! so each escaper first asks one of these; only when it says yes does it walk the bytes one by one. The scans
//! test eight bytes per step with word arithmetic (SWAR): most values are 5-40 bytes long, too short for SIMD
//! loops to pay off, and a byte-by-byte `match` loop was the largest cost of encoding (callgrind, BENCHMARKS.md).

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Non-zero when some byte of `w` is zero. (The classic test: it may also flag bytes above a zero byte, which
/// does not matter when only "any" is asked.)
#[inline(always)]
fn has_zero(w: u64) -> u64 {
    w.wrapping_sub(LO) & !w & HI
}

/// Calls `hits` on each 8-byte word of `bytes`, the last one padded with `pad` (a byte `hits` never flags);
/// true as soon as one call returns non-zero.
#[inline(always)]
fn any_word(bytes: &[u8], pad: u8, hits: impl Fn(u64) -> u64) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if hits(u64::from_le_bytes(word)) != 0 {
            return true;
        }
    }
    let rest = chunks.remainder();
    if rest.is_empty() {
        return false;
    }
    let mut word = [pad; 8];
    word[..rest.len()].copy_from_slice(rest);
    hits(u64::from_le_bytes(word)) != 0
}

/// True when any byte of `bytes` is one of `set`.
#[inline(always)]
pub fn any_of<const N: usize>(bytes: &[u8], set: [u8; N]) -> bool {
    let pad = (b'a'..=b'z').find(|c| !set.contains(c)).unwrap_or(b'A');
    any_word(bytes, pad, |w| {
        set.iter().fold(0, |acc, &b| acc | has_zero(w ^ (LO * u64::from(b))))
    })
}

/// True when any byte needs escaping in a JSON string: a C0 control, `"` or `\`.
#[inline(always)]
pub fn any_json_special(bytes: &[u8]) -> bool {
    any_word(bytes, b'a', |w| {
        // A byte below 0x20: subtracting 0x20 borrows into its high bit while the byte itself had it clear.
        let below_space = w.wrapping_sub(LO * 0x20) & !w & HI;
        below_space | has_zero(w ^ (LO * u64::from(b'"'))) | has_zero(w ^ (LO * u64::from(b'\\')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_of_finds_each_byte_at_every_position_and_nothing_else() {
        for len in [0usize, 1, 7, 8, 9, 16, 31, 33] {
            for filler in 0u8..=255 {
                let v = vec![filler; len];
                let want = len > 0 && [b',', b'=', b' '].contains(&filler);
                assert_eq!(any_of(&v, [b',', b'=', b' ']), want, "len {len} filler {filler:#x}");
            }
            let v = vec![b'x'; len];
            for pos in 0..len {
                for hit in [b',', b'=', b' '] {
                    let mut w = v.clone();
                    w[pos] = hit;
                    assert!(any_of(&w, [b',', b'=', b' ']), "len {len} pos {pos}");
                }
            }
        }
    }

    #[test]
    fn json_special_matches_the_byte_rule_for_every_byte_and_position() {
        for len in [1usize, 5, 8, 12, 24] {
            for pos in 0..len {
                for b in 0u8..=255 {
                    let mut v = vec![b'q'; len];
                    v[pos] = b;
                    let want = b < 0x20 || b == b'"' || b == b'\\';
                    assert_eq!(any_json_special(&v), want, "len {len} pos {pos} byte {b:#x}");
                }
            }
        }
        assert!(!any_json_special(b""));
    }
}
