//! What a value must look like: durations (engine, InfluxDB 2 retention, InfluxQL), hostnames, HTTP header
//! names; and the bounded read of CA files that validation and the sinks share.

use std::path::Path;
use std::time::Duration;

/// Units of engine durations (`sense-ingest.*`), in milliseconds; a bare integer is milliseconds.
pub(super) const ENGINE_DURATION_UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];
/// Units of InfluxDB 2 retention durations (`v2Config.retentionDuration`), in milliseconds.
pub(super) const RETENTION_UNITS: &[(&str, u64)] = &[
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];
/// Units of InfluxQL durations (`v1Config.retentionPolicy.duration`); only the syntax is checked, so the
/// multipliers do not matter.
pub(super) const INFLUXQL_UNITS: &[(&str, u64)] = &[
    ("ns", 0),
    ("u", 0),
    ("µ", 0),
    ("ms", 1),
    ("s", 1),
    ("m", 1),
    ("h", 1),
    ("d", 1),
    ("w", 1),
];

/// Largest CA bundle read (a system bundle is ~200 KB).
pub const MAX_CA_FILE_BYTES: u64 = 4 << 20;

/// Reads a regular file of at most [`MAX_CA_FILE_BYTES`]; a device, FIFO or huge file is an error rather than a
/// hang or an out-of-memory (`/dev/zero`, `/dev/stdin`). Validation and the TLS setup of the sinks (which read
/// CA files again at start) both use it, so they apply the same bound.
pub fn read_small_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut data = Vec::new();
    file.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(std::io::Error::other(format!("larger than {MAX_CA_FILE_BYTES} bytes")));
    }
    Ok(data)
}

/// Parses a duration: one or more `<integer><unit>` parts (optionally separated by spaces), units from `units`
/// (name, milliseconds). A bare integer is `0`, or with `bare_unit_ms` that many units of it. `None` when the text
/// is not a valid duration or overflows.
pub(super) fn parse_duration(text: &str, units: &[(&str, u64)], bare_unit_ms: Option<u64>) -> Option<Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = text.parse().ok()?;
        return if n == 0 {
            Some(Duration::ZERO)
        } else {
            n.checked_mul(bare_unit_ms?).map(Duration::from_millis)
        };
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        let after = rest[digits..].trim_start();
        let unit_len = after.find(|c: char| !c.is_alphabetic()).unwrap_or(after.len());
        let (_, unit_ms) = units.iter().find(|(unit, _)| *unit == &after[..unit_len])?;
        total_ms = total_ms.checked_add(n.checked_mul(*unit_ms)?)?;
        rest = after[unit_len..].trim_start();
        parts += 1;
    }
    (parts > 0).then(|| Duration::from_millis(total_ms))
}

/// True for an InfluxQL retention duration: `INF`, `0`, or `<integer><unit>` parts (units ns, u, µ, ms, s, m, h,
/// d, w).
pub(super) fn is_influxql_duration(text: &str) -> bool {
    let text = text.trim();
    text.eq_ignore_ascii_case("inf") || parse_duration(text, INFLUXQL_UNITS, None).is_some()
}

/// True for a hostname made of dot-separated labels of ASCII letters, digits and `-` (RFC 1123; `_` is tolerated
/// because some internal DNS uses it).
pub fn is_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// True for an HTTP header name (RFC 9110 token).
pub(super) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
