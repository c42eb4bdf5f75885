//! Butler SOS's `user_events` schema as InfluxDB line protocol, appended to the caller's buffer.
//!
//! v1 layout (fixtures): tags in Butler SOS's insertion order `host, event_action, userFull, userDirectory, userId,
//! origin, [appId, appName], [uaBrowserName, uaBrowserMajorVersion, uaOsName, uaOsVersion]`, then the config tags.
//! A config tag whose name is a core tag present on the event replaces that tag's value *in place* (JavaScript
//! object semantics); otherwise it is appended in config order. String fields, sorted by key as node-influx sends
//! them: `[appId, appName], userFull, userId`. Timestamps are the receive time in ns, made strictly increasing
//! across everything this encoder writes, so two identical events in one batch never merge into one point.
//!
//! Escaping, measured on InfluxDB 1.6.7 (reference/PROTOCOLS.md b.1): in tag keys and values only `,`, `=` and
//! space are escaped, and a backslash is *never* doubled (`LAB\goran` is written as is). A tag value ending in `\`
//! cannot be stored by InfluxDB 1.x at all, so its trailing backslashes are removed (the tag is left out if nothing
//! remains) and the change is reported as [`Encoded::Changed`]. In string field values `\` and `"` are escaped.

use crate::config::Tag;
use crate::event::{Event, Field, UNKNOWN_APP_NAME};
use crate::sink::{Encoded, Encoder};

/// The measurement Butler SOS writes user events to.
pub const MEASUREMENT: &str = "user_events";

/// Core tag names in Butler SOS's order.
const CORE_TAGS: [&str; 12] = [
    "host",
    "event_action",
    "userFull",
    "userDirectory",
    "userId",
    "origin",
    "appId",
    "appName",
    "uaBrowserName",
    "uaBrowserMajorVersion",
    "uaOsName",
    "uaOsVersion",
];

/// Why an event is not written to InfluxDB (Butler SOS's `validateRequiredFields`).
pub const SKIP_MISSING_REQUIRED: &str = "missing_required_field";

/// A config tag, prepared once.
#[derive(Debug, Clone)]
struct ConfigTag {
    name: String,
    value: String,
    /// Index into [`CORE_TAGS`] when the name collides with a core tag.
    core: Option<usize>,
}

/// Encodes events as v1 `user_events` lines.
#[derive(Debug, Clone)]
pub struct LineEncoder {
    tags: Vec<ConfigTag>,
    /// For each core tag, the config tag overriding it.
    overrides: [Option<usize>; CORE_TAGS.len()],
    last_ts: u64,
}

impl LineEncoder {
    /// An encoder adding `tags` (`userEvents.tags`) to every line. Duplicate names: the later value wins, at the
    /// position of the first (as assigning to a JavaScript object does).
    pub fn new(tags: &[Tag]) -> LineEncoder {
        let mut prepared: Vec<ConfigTag> = Vec::new();
        for t in tags {
            if let Some(existing) = prepared.iter_mut().find(|c| c.name == t.name) {
                existing.value = t.value.clone();
            } else {
                let core = CORE_TAGS.iter().position(|c| *c == t.name);
                prepared.push(ConfigTag {
                    name: t.name.clone(),
                    value: t.value.clone(),
                    core,
                });
            }
        }
        let mut overrides = [None; CORE_TAGS.len()];
        for (i, t) in prepared.iter().enumerate() {
            if let Some(c) = t.core {
                overrides[c] = Some(i);
            }
        }
        LineEncoder {
            tags: prepared,
            overrides,
            last_ts: 0,
        }
    }
}

impl Encoder for LineEncoder {
    fn encode(&mut self, ev: &Event, out: &mut Vec<u8>) -> Encoded {
        let host = ev.get(Field::Host);
        let command = ev.get(Field::Command);
        let dir = ev.get(Field::UserDirectory);
        let id = ev.get(Field::UserId);
        let origin = ev.get(Field::Origin);
        if host.is_empty() || command.is_empty() || dir.is_empty() || id.is_empty() || origin.is_empty() {
            return Encoded::Skipped(SKIP_MISSING_REQUIRED);
        }
        let user_full = ev.get(Field::UserFull);
        let app_id = ev.app_id();
        let app_name = ev.app_name.as_deref().unwrap_or(UNKNOWN_APP_NAME);
        let ua = ev.user_agent.as_deref();
        let core: [Option<&str>; CORE_TAGS.len()] = [
            Some(host),
            Some(command),
            Some(user_full),
            Some(dir),
            Some(id),
            Some(origin),
            app_id,
            app_id.map(|_| app_name),
            ua.map(|u| u.browser_name.as_str()),
            ua.map(|u| u.browser_major_version.as_str()),
            ua.map(|u| u.os_name.as_str()),
            ua.map(|u| u.os_version.as_str()),
        ];
        let mut changed = false;
        let mut present = 0u16;
        out.extend_from_slice(MEASUREMENT.as_bytes());
        for (i, value) in core.iter().enumerate() {
            let Some(value) = value.filter(|v| !v.is_empty()) else {
                continue;
            };
            present |= 1 << i;
            let value = self.overrides[i].map_or(value, |t| self.tags[t].value.as_str());
            changed |= write_tag(out, CORE_TAGS[i], value);
        }
        for t in &self.tags {
            if t.core.is_some_and(|c| present & (1 << c) != 0) {
                continue;
            }
            changed |= write_tag(out, &t.name, &t.value);
        }
        out.push(b' ');
        if let Some(app_id) = app_id {
            write_field(out, "appId", app_id, true);
            write_field(out, "appName", app_name, false);
            write_field(out, "userFull", user_full, false);
        } else {
            write_field(out, "userFull", user_full, true);
        }
        write_field(out, "userId", id, false);
        let ts = ev.received_ns.max(self.last_ts + 1);
        self.last_ts = ts;
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
        out.push(b'\n');
        if changed {
            Encoded::Changed
        } else {
            Encoded::Yes
        }
    }
}

/// Writes `,key=value`; returns true when the value had to be changed. An empty value (after removing trailing
/// backslashes) leaves the tag out, as line protocol cannot carry empty tag values.
fn write_tag(out: &mut Vec<u8>, key: &str, value: &str) -> bool {
    let trimmed = value.trim_end_matches('\\');
    if trimmed.is_empty() {
        return !value.is_empty();
    }
    out.push(b',');
    escape_tag(out, key.trim_end_matches('\\'));
    out.push(b'=');
    escape_tag(out, trimmed);
    trimmed.len() != value.len()
}

/// Escapes `,`, `=` and space with a backslash; backslashes themselves are left alone (InfluxDB 1.x semantics).
pub fn escape_tag(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
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

/// Writes `[,]key="value"` with `\` and `"` escaped in the value.
fn write_field(out: &mut Vec<u8>, key: &str, value: &str, first: bool) {
    if !first {
        out.push(b',');
    }
    escape_tag(out, key);
    out.extend_from_slice(b"=\"");
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\\' || b == b'"' {
            out.extend_from_slice(&bytes[start..i]);
            out.push(b'\\');
            start = i;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests;
