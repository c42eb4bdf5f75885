//! The Log4Net user-event parser: bytes in, [`Event`] out, with Butler SOS 15's rules exactly.
//!
//! No I/O and no allocation: the parser writes the sanitised fields into the event's own reusable text buffer
//! (which only grows when an unusually large event arrives, and keeps that capacity in the slab).
//!
//! # Rules (reference/PROTOCOLS.md a.2, fixtures/README.md)
//! 1. The datagram is UTF-8; invalid bytes become U+FFFD (one per maximal invalid subpart, like Node's decoder).
//! 2. Only the first seven `;` separate fields; everything after the seventh is the message, `;` included.
//!    Seven fields with no message is valid (empty message). Fewer than seven fields is rejected
//!    ([`RejectReason::TooFewFields`]; Butler SOS fills in the string `undefined`, a deliberate deviation).
//! 3. Field 0, raw (before sanitising, so a control character in it rejects the datagram), is lower-cased, then
//!    the first `/` is removed twice (anywhere, as JavaScript's `replace('/', '')` does); the result must be
//!    `qseow-proxy-session` or `qseow-proxy-connection`, otherwise [`RejectReason::UnknownSource`] (this includes
//!    the empty datagram).
//! 4. Every other field has C0 controls and DEL removed and is then cut to its limit in UTF-16 code units
//!    ([`Field::max_units`]), on a char boundary (a supplementary-plane char counts 2 and is never split).
//! 5. `userFull` is `<directory>\<id>`, always (sinks decide what to do with empty parts).
//! 6. The user agent is the text after the first `UserAgent:` of the *cut* message, up to any second
//!    `UserAgent:`, trimmed of JavaScript whitespace, with every `'` removed.
//! 7. The app id is the context after a leading `/app/` up to the first `?` or a second `/app/` (Butler SOS's
//!    `context.split('?')[0].split('/app/')[1]`), kept only if it passes the npm `uuid` package's `validate()`
//!    (see [`is_npm_uuid`]); not normalised.

use memchr::memmem;

use crate::event::{Command, Event, Field, RejectReason, Source, Span};

/// Facts about a successful parse that are worth counting but are not errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseNotes {
    /// The datagram held invalid UTF-8, replaced with U+FFFD.
    pub invalid_utf8: bool,
}

/// Parses one datagram into `event` (which is cleared first).
///
/// On `Ok`, every invariant documented on [`Event`] holds. On `Err`, the event's content is unspecified and the
/// caller reuses it.
///
/// # Example
/// ```
/// use sense_ingest::event::{Event, Field, Source};
/// let mut ev = Event::new();
/// sense_ingest::parse::parse_into(b"/qseow-proxy-session/;h1;Start session;LAB;goran;Hub;/hub/;hi", &mut ev).unwrap();
/// assert_eq!(ev.source, Source::Session);
/// assert_eq!(ev.get(Field::UserFull), "LAB\\goran");
/// ```
pub fn parse_into(datagram: &[u8], event: &mut Event) -> Result<ParseNotes, RejectReason> {
    event.clear();
    let mut seps = [0usize; 7];
    let count = find_separators(datagram, &mut seps);
    let source_end = if count > 0 { seps[0] } else { datagram.len() };
    event.source = classify_source(&datagram[..source_end]).ok_or(RejectReason::UnknownSource)?;
    if count < 6 {
        return Err(RejectReason::TooFewFields);
    }
    // Field i (1..=7) spans seps[i-1]+1 .. seps[i], the last one present running to the end. With exactly six
    // separators the message (field 7) is absent, hence empty.
    let mut all_valid = true;
    let text = event.text_mut();
    let mut spans = [Span::default(); 7];
    for (i, field) in Field::DATAGRAM.iter().enumerate() {
        let n = i + 1;
        let raw = if n > count {
            &[][..]
        } else {
            let end = if n < count { seps[n] } else { datagram.len() };
            &datagram[seps[n - 1] + 1..end]
        };
        let start = text.len();
        all_valid &= push_sanitized(text, raw, field.max_units());
        spans[i] = Span::new(start..text.len());
    }
    for (field, span) in Field::DATAGRAM.iter().zip(spans) {
        event.set_span(*field, span);
    }
    event.command = Command::classify(event.get(Field::Command));

    // userFull = dir\id
    let dir = event.span(Field::UserDirectory).range();
    let id = event.span(Field::UserId).range();
    let text = event.text_mut();
    let start = text.len();
    text.extend_from_within(dir);
    text.push('\\');
    text.extend_from_within(id);
    let full = Span::new(start..text.len());
    event.set_span(Field::UserFull, full);

    let ua = extract_user_agent(event);
    event.set_span(Field::UserAgent, ua);

    let ctx = event.span(Field::Context).range();
    let app = app_id_range(&event.text_mut()[ctx.clone()]).map(|r| Span::new(ctx.start + r.start..ctx.start + r.end));
    event.set_app_id(app);

    Ok(ParseNotes {
        invalid_utf8: !all_valid,
    })
}

/// Finds the first (up to) seven `;` in `d`, returns how many. Eight bytes per step (SWAR): the fields before the
/// message are short (20-150 bytes), where a `memchr` call per separator cost more in setup than in scanning.
fn find_separators(d: &[u8], seps: &mut [usize; 7]) -> usize {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const SEMI: u64 = 0x3b3b_3b3b_3b3b_3b3b; // b';' in every byte
    let mut count = 0;
    let mut chunks = d.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // A zero byte where `d` has ';'.
        let x = u64::from_le_bytes(word) ^ SEMI;
        // Exact per byte (no carry crosses bytes): the high bit is set only for bytes of `x` that are zero.
        let mut zeros = !(((x & LOW7) + LOW7) | x | LOW7);
        while zeros != 0 {
            seps[count] = base + (zeros.trailing_zeros() / 8) as usize;
            count += 1;
            if count == seps.len() {
                return count;
            }
            zeros &= zeros - 1;
        }
        base += 8;
    }
    for (i, &b) in chunks.remainder().iter().enumerate() {
        if b == b';' {
            seps[count] = base + i;
            count += 1;
            if count == seps.len() {
                break;
            }
        }
    }
    count
}

/// Normalises field 0 like Butler SOS and classifies it. Any char outside ASCII cannot take part in a match
/// (lower-casing never maps a non-ASCII char onto the letters of the two names), so this works on bytes.
fn classify_source(raw: &[u8]) -> Option<Source> {
    const SESSION: &[u8] = b"qseow-proxy-session";
    const CONNECTION: &[u8] = b"qseow-proxy-connection";
    // Fast path: the exact spellings Qlik Sense sends.
    match raw {
        b"/qseow-proxy-connection/" => return Some(Source::Connection),
        b"/qseow-proxy-session/" => return Some(Source::Session),
        _ => {}
    }
    let mut buf = [0u8; 24];
    let mut len = 0;
    let mut slashes_removed = 0;
    for &b in raw {
        if b < 0x20 || b == 0x7f {
            return None; // Butler SOS compares the raw field 0, before sanitising
        }
        if b >= 0x80 {
            return None;
        }
        if b == b'/' && slashes_removed < 2 {
            slashes_removed += 1;
            continue;
        }
        if len == buf.len() {
            return None;
        }
        buf[len] = b.to_ascii_lowercase();
        len += 1;
    }
    match &buf[..len] {
        SESSION => Some(Source::Session),
        CONNECTION => Some(Source::Connection),
        _ => None,
    }
}

/// True for the control characters Butler SOS's `sanitizeField` removes (U+0000-U+001F and U+007F).
fn is_removed_control(c: char) -> bool {
    (c as u32) < 0x20 || c == '\u{7f}'
}

/// Appends `raw`, sanitised and cut to `max_units` UTF-16 code units, to `out`. Returns false when `raw` held
/// invalid UTF-8 (replaced with U+FFFD). Each byte is validated once: fields are checked one by one instead of the
/// whole datagram, which is the same because fields are split at ASCII `;`.
fn push_sanitized(out: &mut String, raw: &[u8], max_units: usize) -> bool {
    // Fast path: printable ASCII that fits (bytes >= code units, so len <= max is enough).
    if raw.len() <= max_units && is_printable_ascii(raw) {
        // SAFETY: every byte is in 0x20..0x7f (checked just above), and ASCII is valid UTF-8.
        out.push_str(unsafe { std::str::from_utf8_unchecked(raw) });
        return true;
    }
    let mut units = 0;
    if let Ok(s) = std::str::from_utf8(raw) {
        push_chars(out, s, max_units, &mut units);
        return true;
    }
    for chunk in raw.utf8_chunks() {
        if !push_chars(out, chunk.valid(), max_units, &mut units) {
            break;
        }
        if !chunk.invalid().is_empty() {
            if units + 1 > max_units {
                break;
            }
            out.push('\u{FFFD}');
            units += 1;
        }
    }
    false
}

/// True when every byte is printable ASCII (0x20..0x7f). Checks 32 bytes per step without an early exit inside
/// a step, which the compiler turns into SIMD compares (this check was 40 % of a typical parse byte by byte).
fn is_printable_ascii(raw: &[u8]) -> bool {
    #[inline(always)]
    fn printable(b: u8) -> bool {
        b.wrapping_sub(0x20) < 0x5f
    }
    let mut chunks = raw.chunks_exact(32);
    for chunk in &mut chunks {
        if !chunk.iter().fold(true, |ok, &b| ok & printable(b)) {
            return false;
        }
    }
    chunks.remainder().iter().fold(true, |ok, &b| ok & printable(b))
}

/// Pushes the non-control chars of `s` until `max_units` would be exceeded. Returns false once the limit is hit.
fn push_chars(out: &mut String, s: &str, max_units: usize, units: &mut usize) -> bool {
    for c in s.chars() {
        if is_removed_control(c) {
            continue;
        }
        let n = c.len_utf16();
        if *units + n > max_units {
            return false;
        }
        *units += n;
        out.push(c);
    }
    true
}

/// The `UserAgent:` searcher, built once (building a memmem searcher costs more than a short search).
fn user_agent_finder() -> &'static memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memmem::Finder<'static>> = std::sync::OnceLock::new();
    FINDER.get_or_init(|| memmem::Finder::new(b"UserAgent:"))
}

/// The `/app/` searcher, built once.
fn app_finder() -> &'static memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memmem::Finder<'static>> = std::sync::OnceLock::new();
    FINDER.get_or_init(|| memmem::Finder::new(b"/app/"))
}

/// JavaScript's `String.prototype.trim` whitespace (WhiteSpace and LineTerminator productions).
fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{09}'
            | '\u{0B}'
            | '\u{0C}'
            | ' '
            | '\u{A0}'
            | '\u{FEFF}'
            | '\u{0A}'
            | '\u{0D}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// Extracts the user agent from the (already cut) message and appends it, quotes removed, to the text buffer.
fn extract_user_agent(event: &mut Event) -> Span {
    const MARKER: &[u8] = b"UserAgent:";
    let msg = event.span(Field::Message).range();
    let text = event.text_mut();
    let m = &text.as_bytes()[msg.clone()];
    let finder = user_agent_finder();
    let Some(first) = finder.find(m) else {
        return Span::new(text.len()..text.len());
    };
    let after = first + MARKER.len();
    let end = finder.find(&m[after..]).map_or(m.len(), |p| after + p);
    let value = msg.start + after..msg.start + end;
    let trimmed = text[value.clone()].trim_matches(is_js_whitespace);
    let offset = trimmed.as_ptr() as usize - text.as_ptr() as usize;
    let value = offset..offset + trimmed.len();
    let start = text.len();
    // Copy piecewise around each `'` (removed). The copy is appended after `value`, so the range stays valid.
    let mut piece = value.start;
    while let Some(q) = memchr::memchr(b'\'', &text.as_bytes()[piece..value.end]) {
        text.extend_from_within(piece..piece + q);
        piece += q + 1;
    }
    text.extend_from_within(piece..value.end);
    Span::new(start..text.len())
}

/// The range of the app id within a context: after a leading `/app/`, up to the first `?` or second `/app/`, when
/// it passes [`is_npm_uuid`].
pub fn app_id_range(context: &str) -> Option<std::ops::Range<usize>> {
    let rest = context.strip_prefix("/app/")?;
    let query = memchr::memchr(b'?', rest.as_bytes()).unwrap_or(rest.len());
    // `context.split('?')[0].split('/app/')[1]`: the id also ends at a second `/app/` before the query.
    let end = app_finder().find(&rest.as_bytes()[..query]).unwrap_or(query);
    is_npm_uuid(&rest[..end]).then_some(5..5 + end)
}

/// The npm `uuid` package's `validate()` (v14): hyphenated 8-4-4-4-12 hex in any case, version nibble 1-8,
/// variant nibble 8/9/a/b, or the nil / max UUID. Stricter than the `uuid` crate's `parse_str` on purpose.
pub fn is_npm_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 {
        return false;
    }
    // Hyphens at 8, 13, 18, 23 and hex digits elsewhere: each byte's class (a table lookup) must include the class
    // its position expects. No early exit, so the 36 steps compile to straight-line code.
    const HEX: u8 = 1;
    const HYPHEN: u8 = 2;
    const CLASS: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut i = 0;
        while i < 256 {
            let c = i as u8;
            if c.is_ascii_hexdigit() {
                t[i] = HEX;
            } else if c == b'-' {
                t[i] = HYPHEN;
            }
            i += 1;
        }
        t
    };
    const EXPECT: [u8; 36] = {
        let mut e = [HEX; 36];
        e[8] = HYPHEN;
        e[13] = HYPHEN;
        e[18] = HYPHEN;
        e[23] = HYPHEN;
        e
    };
    let mut bad = 0u8;
    for (&c, &want) in b.iter().zip(EXPECT.iter()) {
        bad |= u8::from(CLASS[c as usize] & want == 0);
    }
    if bad != 0 {
        return false;
    }
    if s == "00000000-0000-0000-0000-000000000000" || s.eq_ignore_ascii_case("ffffffff-ffff-ffff-ffff-ffffffffffff") {
        return true;
    }
    matches!(b[14], b'1'..=b'8') && matches!(b[19].to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b')
}

#[cfg(test)]
mod tests;
