//! InfluxDB line protocol: the one place that knows how a line is written and escaped, per InfluxDB version.
//!
//! A line is `measurement[,tag=value...] field=value[,field=value...] timestamp\n`. [`LineWriter`] writes one,
//! in that order, into the caller's buffer; every destination that writes line protocol (`user_events`, Butler
//! SOS's own measurements, session analytics) goes through it. Layouts (which tags and fields, in which order,
//! which number types) belong to the callers; what a byte looks like on the wire belongs here.
//!
//! # Escaping, measured on InfluxDB 1.6.7 (reference/PROTOCOLS.md b.1)
//! In tag keys and values only `,`, `=` and space are escaped, and a backslash is *never* doubled (`LAB\goran` is
//! written as is). A tag value ending in `\` cannot be stored by InfluxDB 1.x at all, so its trailing backslashes
//! are removed (the tag is left out if nothing remains) and the change is reported (the callers turn it into
//! [`Encoded::Changed`](crate::sink::Encoded::Changed)). In string field values `\` and `"` are escaped. In a
//! measurement name `,` and space are escaped.
//!
//! # Escaping per server parser for v2 and v3 (read from the parsers' source, not measured on a live 2.x/3.x server)
//! - **v2** ([`TagEscaping::Go`], as v1): InfluxDB 2.x parses tags with the same Go code as 1.x
//!   (`models/points.go`: only `\,`, `\=` and `\ ` are unescaped, `\\` stays two backslashes), so tags are escaped
//!   exactly as for v1, a trailing backslash is removed and reported the same way. The JavaScript client escapes
//!   the same three characters (and turns CR, LF and TAB into `\r`, `\n`, `\t`, which never reach us from a
//!   datagram), so for every value InfluxDB can store our v2 line is byte-identical to the one Butler SOS sends,
//!   apart from the timestamp.
//! - **v3** ([`TagEscaping::V3`]): InfluxDB 3's Rust parser (`influxdb_line_protocol`) unescapes `\\`, `\,`, `\=`
//!   and `\ ` in tag keys and values and rejects a value ending in a backslash. So `\` is doubled as well
//!   (`userFull=LAB\\goran`, stored as `LAB\goran`: the same stored value as Butler SOS's `LAB\goran`, whose `\g`
//!   the parser keeps literally), and a trailing backslash is still removed and reported.
//! - **v3, Butler SOS's sanitised tags** ([`TagEscaping::V3Strip`]): Butler SOS's v3 layout removes `<`, `>`, `\`,
//!   CR and LF from most `user_events` tag values (reference/PROTOCOLS.md a.4); removing is the layout, not a
//!   change, so nothing is reported.
//! - String fields are escaped as in v1 for every version.
//!
//! # Speed
//! Almost no value needs escaping, so every escaper first asks [`scan::any_of`] (eight bytes per step) and copies
//! the value in one go when the answer is no. Callers on the hot path prepare `,key=` once ([`tag_prefix`]) and
//! may append tags they encoded earlier ([`LineWriter::encoded_tags`]).

use std::io::Write as _;

use crate::config::InfluxVersion;
use crate::sink::scan;

/// How tag keys and values are escaped (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagEscaping {
    /// InfluxDB 1.x and 2.x (Go parser): `,`, `=` and space escaped, backslashes kept single.
    Go,
    /// InfluxDB 3: `,`, `=`, space and `\` escaped.
    V3,
    /// InfluxDB 3 with Butler SOS's sanitising: `,`, `=` and space escaped; `<`, `>`, `\`, CR and LF removed.
    V3Strip,
}

impl TagEscaping {
    /// The escaping `version`'s server parser needs.
    pub fn of(version: InfluxVersion) -> TagEscaping {
        match version {
            InfluxVersion::V1 | InfluxVersion::V2 => TagEscaping::Go,
            InfluxVersion::V3 => TagEscaping::V3,
        }
    }
}

/// Writes one line into a caller's buffer: [`LineWriter::new`] (measurement), tags, fields, then
/// [`LineWriter::finish`] (timestamp). Tags must all come before the first field. Field keys are the callers'
/// names, which need no escaping (checked in debug builds).
#[derive(Debug)]
pub struct LineWriter<'a> {
    out: &'a mut Vec<u8>,
    escaping: TagEscaping,
    /// A tag value had to be changed to be storable.
    changed: bool,
    /// A field was written (the next one is preceded by `,`, not a space).
    has_fields: bool,
}

impl<'a> LineWriter<'a> {
    /// Starts a line for `version` with `measurement`, which is already escaped ([`escape_measurement`], or a name
    /// without `,` or space).
    #[inline]
    pub fn new(out: &'a mut Vec<u8>, version: InfluxVersion, measurement: &[u8]) -> LineWriter<'a> {
        out.extend_from_slice(measurement);
        LineWriter {
            out,
            escaping: TagEscaping::of(version),
            changed: false,
            has_fields: false,
        }
    }

    /// Writes `,key=value`, both escaped for the version. Trailing backslashes are removed from both (reported as
    /// a change when the value had some); a tag whose key or value is then empty is left out.
    pub fn tag(&mut self, key: &str, value: &str) {
        let key = key.trim_end_matches('\\');
        let trimmed = value.trim_end_matches('\\');
        if key.is_empty() || trimmed.is_empty() {
            return;
        }
        self.out.push(b',');
        escape_tag_as(self.out, key, key_escaping(self.escaping));
        self.out.push(b'=');
        escape_tag_as(self.out, trimmed, self.escaping);
        self.changed |= trimmed.len() != value.len();
    }

    /// Writes `prefix` ([`tag_prefix`]) and `value` escaped as `escaping` says (see [`write_tag`]). With a
    /// constant `escaping` (the hot path) the choice is made at compile time.
    #[inline(always)]
    pub fn tag_prefixed(&mut self, prefix: &[u8], value: &str, escaping: TagEscaping) {
        self.changed |= write_tag(self.out, prefix, value, escaping);
    }

    /// Appends tags encoded earlier with [`write_tag`] (or constants already escaped); `changed` is what those
    /// calls returned.
    #[inline]
    pub fn encoded_tags(&mut self, tags: &[u8], changed: bool) {
        self.out.extend_from_slice(tags);
        self.changed |= changed;
    }

    /// Records that a tag was left out because the server could not store it (reported as a change).
    #[inline]
    pub fn left_out_tag(&mut self) {
        self.changed = true;
    }

    /// Writes ` key=` or `,key=`.
    #[inline(always)]
    fn field_key(&mut self, key: &str) {
        debug_assert!(!scan::any_of(key.as_bytes(), [b',', b'=', b' ', b'\\', b'"']));
        self.out.push(if self.has_fields { b',' } else { b' ' });
        self.has_fields = true;
        self.out.extend_from_slice(key.as_bytes());
        self.out.push(b'=');
    }

    /// Writes the string field `key="value"`, `\` and `"` escaped in the value.
    #[inline(always)]
    pub fn field_str(&mut self, key: &str, value: &str) {
        self.field_key(key);
        self.out.push(b'"');
        escape_string_field(self.out, value);
        self.out.push(b'"');
    }

    /// Writes the integer field `key=<n>i`.
    pub fn field_int(&mut self, key: &str, n: u64) {
        self.field_key(key);
        self.out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.out.push(b'i');
    }

    /// Writes `key=<n>` without the `i` suffix: InfluxDB stores it as a float (what JavaScript clients that do not
    /// type their numbers send).
    pub fn field_int_as_float(&mut self, key: &str, n: u64) {
        self.field_key(key);
        self.out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// Writes the float field `key=<f>` as JavaScript's `String(f)` writes it for the values we produce (finite,
    /// below 1e21): the shortest text that reads back to the same number, with no trailing `.0` (`0`, `12.5`,
    /// `33.333333333333336`). A non-finite value (never produced) is written as `0`.
    pub fn field_float(&mut self, key: &str, f: f64) {
        self.field_key(key);
        write_js_number(self.out, f);
    }

    /// Writes the float field `key=<seconds>`: `ns` nanoseconds as an exact decimal number of seconds without
    /// trailing zeros (`90`, `1.5`, `0.000000123`).
    pub fn field_seconds(&mut self, key: &str, ns: u64) {
        self.field_key(key);
        write_seconds(self.out, ns);
    }

    /// Writes the boolean field `key=true` or `key=false`.
    pub fn field_bool(&mut self, key: &str, b: bool) {
        self.field_key(key);
        self.out.extend_from_slice(if b { b"true" } else { b"false" });
    }

    /// Ends the line with ` <ts_ns>\n`; true when a tag value had to be changed to be storable.
    #[inline]
    pub fn finish(self, ts_ns: u64) -> bool {
        self.out.push(b' ');
        self.out.extend_from_slice(itoa::Buffer::new().format(ts_ns).as_bytes());
        self.out.push(b'\n');
        self.changed
    }
}

/// Tag keys are never sanitised, only escaped.
fn key_escaping(escaping: TagEscaping) -> TagEscaping {
    match escaping {
        TagEscaping::V3Strip => TagEscaping::V3,
        e => e,
    }
}

/// `,key=` with `key` escaped for `version` and its trailing backslashes removed, to prepare once and pass to
/// [`LineWriter::tag_prefixed`] or [`write_tag`].
pub fn tag_prefix(key: &str, version: InfluxVersion) -> Box<[u8]> {
    let mut prefix = vec![b','];
    escape_tag_as(&mut prefix, key.trim_end_matches('\\'), TagEscaping::of(version));
    prefix.push(b'=');
    prefix.into_boxed_slice()
}

/// Writes `prefix` (`,key=`, escaped) and `value` escaped as `escaping` says; returns true when the value had to
/// be changed to be storable (trailing backslashes removed, except with [`TagEscaping::V3Strip`], which removes
/// every backslash as its layout). A value that comes out empty leaves the tag out, as line protocol cannot carry
/// empty tag values.
#[inline(always)]
pub fn write_tag(out: &mut Vec<u8>, prefix: &[u8], value: &str, escaping: TagEscaping) -> bool {
    if escaping == TagEscaping::V3Strip {
        // Stripping may leave nothing: write, then take the tag back out if it came out empty.
        let mark = out.len();
        out.extend_from_slice(prefix);
        let value_start = out.len();
        escape_tag_v3(out, value, true);
        if out.len() == value_start {
            out.truncate(mark);
        }
        return false;
    }
    let trimmed = value.trim_end_matches('\\');
    if trimmed.is_empty() {
        return !value.is_empty();
    }
    out.extend_from_slice(prefix);
    if escaping == TagEscaping::Go {
        escape_tag(out, trimmed);
    } else {
        escape_tag_v3(out, trimmed, false);
    }
    trimmed.len() != value.len()
}

/// Escapes a tag key or value as `escaping` says.
#[inline]
pub fn escape_tag_as(out: &mut Vec<u8>, s: &str, escaping: TagEscaping) {
    match escaping {
        TagEscaping::Go => escape_tag(out, s),
        TagEscaping::V3 => escape_tag_v3(out, s, false),
        TagEscaping::V3Strip => escape_tag_v3(out, s, true),
    }
}

/// Escapes `,`, `=` and space with a backslash; backslashes themselves are left alone (InfluxDB 1.x/2.x semantics).
pub fn escape_tag(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !scan::any_of(bytes, [b',', b'=', b' ']) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(b, b',' | b'=' | b' ') {
            out.extend_from_slice(&bytes[start..i]);
            out.push(b'\\');
            start = i;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Per byte, what v3 tag writing does with it: [`COPY`], [`ESCAPE`] (`,`, `=`, space), [`BACKSLASH`] (escaped, or
/// stripped), [`STRIPPED`] (`<`, `>`, CR, LF: copied, or stripped). Stripping is Butler SOS's v3 layout
/// (reference/PROTOCOLS.md a.4). One table lookup per byte keeps the common case (copy) to one branch.
const V3_CLASS: [u8; 256] = {
    let mut t = [COPY; 256];
    t[b',' as usize] = ESCAPE;
    t[b'=' as usize] = ESCAPE;
    t[b' ' as usize] = ESCAPE;
    t[b'\\' as usize] = BACKSLASH;
    t[b'<' as usize] = STRIPPED;
    t[b'>' as usize] = STRIPPED;
    t[b'\r' as usize] = STRIPPED;
    t[b'\n' as usize] = STRIPPED;
    t
};
const COPY: u8 = 0;
const ESCAPE: u8 = 1;
const BACKSLASH: u8 = 2;
const STRIPPED: u8 = 3;

/// Escapes `,`, `=`, space and `\` with a backslash (InfluxDB 3 semantics); with `strip`, drops `<`, `>`, `\`, CR
/// and LF instead. Only ASCII bytes are touched, so the output stays valid UTF-8.
pub fn escape_tag_v3(out: &mut Vec<u8>, s: &str, strip: bool) {
    let bytes = s.as_bytes();
    if !scan::any_of(bytes, [b',', b'=', b' ', b'\\', b'<', b'>', b'\r', b'\n']) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match V3_CLASS[b as usize] {
            COPY => {}
            BACKSLASH | STRIPPED if strip => {
                out.extend_from_slice(&bytes[start..i]);
                start = i + 1;
            }
            ESCAPE | BACKSLASH => {
                out.extend_from_slice(&bytes[start..i]);
                out.push(b'\\');
                start = i;
            }
            _ => {}
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Escapes a string field value's content: `\` and `"` get a backslash (every InfluxDB version).
#[inline]
pub fn escape_string_field(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !scan::any_of(bytes, [b'\\', b'"']) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\\' || b == b'"' {
            out.extend_from_slice(&bytes[start..i]);
            out.push(b'\\');
            start = i;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Escapes a measurement name: `,` and space get a backslash.
pub fn escape_measurement(out: &mut Vec<u8>, name: &str) {
    for &b in name.as_bytes() {
        if matches!(b, b',' | b' ') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// A float as JavaScript's `String(n)` writes it for the values we produce (finite, below 1e21): the shortest
/// text that reads back to the same number, with no trailing `.0` (`0`, `12.5`, `33.333333333333336`). A
/// non-finite value (never produced) is written as `0`.
fn write_js_number(out: &mut Vec<u8>, f: f64) {
    let f = if f.is_finite() { f } else { 0.0 };
    // Rust's `Display` for f64 is the shortest round-trip text without exponent; for |f| < 1e21 and >= 1e-6
    // it equals JavaScript's.
    let _ = write!(out, "{f}");
}

/// Writes `ns` nanoseconds as an exact decimal number of seconds without trailing zeros.
fn write_seconds(out: &mut Vec<u8>, ns: u64) {
    const NS_PER_S: u64 = 1_000_000_000;
    out.extend_from_slice(itoa::Buffer::new().format(ns / NS_PER_S).as_bytes());
    let mut frac = ns % NS_PER_S;
    if frac == 0 {
        return;
    }
    let mut digits = [b'0'; 9];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    let len = digits.len() - digits.iter().rev().take_while(|&&d| d == b'0').count();
    out.push(b'.');
    out.extend_from_slice(&digits[..len]);
}

#[cfg(test)]
mod tests;
