//! Butler SOS's `user_events` schema as InfluxDB line protocol, appended to the caller's buffer.
//!
//! v1 layout (fixtures): tags in Butler SOS's insertion order `host, event_action, userFull, userDirectory, userId,
//! origin, [appId, appName], [uaBrowserName, uaBrowserMajorVersion, uaOsName, uaOsVersion]`, then the config tags.
//! A config tag whose name is a core tag present on the event replaces that tag's value *in place* (JavaScript
//! object semantics); otherwise it is appended in config order. String fields, sorted by key as node-influx sends
//! them: `[appId, appName], userFull, userId`. Timestamps are the receive time in ns, made strictly increasing
//! across everything this encoder writes, so two identical events in one batch never merge into one point.
//!
//! Tag and field escaping per version (and the measured 1.x facts behind it) live in [`super::line_protocol`]: a tag
//! value ending in `\` cannot be stored, so its trailing backslashes are removed (the tag is left out if nothing
//! remains) and the change is reported as [`Encoded::Changed`].
//!
//! # v2 and v3 layouts ([`LineEncoder::with_version`])
//! The same tag *set* as v1 (core tags, then config tags overriding or adding by name), but written the way the
//! InfluxDB JavaScript clients Butler SOS uses for v2 (`@influxdata/influxdb-client`) and v3
//! (`@influxdata/influxdb3-client`) write a `Point`: **tags sorted by key, fields sorted by key**, both in
//! JavaScript's default sort order (UTF-16 code units), and a tag with an empty value left out. This is read from
//! the clients' `Point.toLineProtocol` source, not observed on the wire; InfluxDB itself does not care about order.
//! - v2 fields: `[appId_field, appName_field], userFull, userId` (Butler SOS `src/lib/influxdb/v2/user-events.js`).
//! - v3 fields: `[appId_field, appName_field], userFull_field, userId_field` (v3 rejects a tag and a field with the
//!   same name). Tag values other than `userFull` have `<`, `>`, `\`, CR and LF removed (reference/PROTOCOLS.md
//!   a.4), so `appName` is stored as `unknown app name` while `appName_field` keeps `<unknown app name>`. A config
//!   tag whose name is one of those four field names would make InfluxDB 3 reject every line; it is left out and the
//!   line reported as [`Encoded::Changed`].

use crate::config::{InfluxVersion, Tag};
use std::sync::Arc;

use crate::event::{Command, Event, Field, UserAgentInfo, UNKNOWN_APP_NAME};
use crate::sink::influxdb::line_protocol::{tag_prefix, write_tag, LineWriter, TagEscaping};
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

/// String field names of the v3 layout; a tag may not share one of them.
const V3_FIELDS: [&str; 4] = ["appId_field", "appName_field", "userFull_field", "userId_field"];

/// A config tag, prepared once.
#[derive(Debug, Clone)]
struct ConfigTag {
    name: String,
    /// `,name=` with the name escaped (and trailing backslashes removed), for v1 ([`tag_prefix`]).
    prefix: Box<[u8]>,
    value: String,
    /// Index into [`CORE_TAGS`] when the name collides with a core tag.
    core: Option<usize>,
}

/// One tag key of the v2/v3 layouts, in sorted position, with its `,key=` already escaped.
#[derive(Debug, Clone)]
struct SortedTag {
    prefix: Box<[u8]>,
    source: TagSource,
    /// v2: [`TagEscaping::Go`]; v3 `userFull`: [`TagEscaping::V3`]; v3, every other tag: [`TagEscaping::V3Strip`]
    /// (the layout, not a change).
    escaping: TagEscaping,
}

/// Where a v2/v3 tag's value comes from.
#[derive(Debug, Clone, Copy)]
enum TagSource {
    /// A core tag no config tag overrides: index into [`CORE_TAGS`].
    Core(usize),
    /// A config tag (it also carries the value of a core tag of the same name): index into `tags`.
    Config(usize),
    /// A config tag v3 cannot store (its name is a v3 field name): left out, and the line reported as changed.
    Refused,
}

/// Encodes events as `user_events` lines in the v1, v2 or v3 layout.
#[derive(Debug, Clone)]
pub struct LineEncoder {
    tags: Vec<ConfigTag>,
    /// For each core tag, the config tag overriding it.
    overrides: [Option<usize>; CORE_TAGS.len()],
    version: InfluxVersion,
    /// v2/v3 only: every tag key the encoder can write, sorted like the JavaScript clients sort them.
    sorted: Vec<SortedTag>,
    /// v1, when no config tag overrides a UA tag: the UA tags, encoded once per user agent.
    ua_tags: Option<UaTagCache>,
    last_ts: u64,
}

impl LineEncoder {
    /// A v1 encoder adding `tags` (`userEvents.tags`) to every line. Duplicate names: the later value wins, at the
    /// position of the first (as assigning to a JavaScript object does).
    pub fn new(tags: &[Tag]) -> LineEncoder {
        LineEncoder::with_version(tags, InfluxVersion::V1)
    }

    /// An encoder for `version`'s layout (see the module docs), adding `tags` to every line like [`LineEncoder::new`].
    pub fn with_version(tags: &[Tag], version: InfluxVersion) -> LineEncoder {
        let mut prepared: Vec<ConfigTag> = Vec::new();
        for t in tags {
            if let Some(existing) = prepared.iter_mut().find(|c| c.name == t.name) {
                existing.value = t.value.clone();
            } else {
                let core = CORE_TAGS.iter().position(|c| *c == t.name);
                prepared.push(ConfigTag {
                    name: t.name.clone(),
                    prefix: tag_prefix(&t.name, InfluxVersion::V1),
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
        let mut sorted = Vec::new();
        if version != InfluxVersion::V1 {
            let mut keyed: Vec<(&str, TagSource)> = (0..CORE_TAGS.len())
                .filter(|&i| overrides[i].is_none())
                .map(|i| (CORE_TAGS[i], TagSource::Core(i)))
                .collect();
            for (j, t) in prepared.iter().enumerate() {
                // The JavaScript clients skip an empty tag key.
                if t.name.is_empty() {
                    continue;
                }
                let source = if version == InfluxVersion::V3 && V3_FIELDS.contains(&t.name.as_str()) {
                    tracing::warn!(
                        tag = %t.name,
                        "config tag has the name of an InfluxDB 3 field and cannot be stored there; it is left out"
                    );
                    TagSource::Refused
                } else {
                    TagSource::Config(j)
                };
                keyed.push((t.name.as_str(), source));
            }
            // JavaScript's default sort compares UTF-16 code units.
            keyed.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            sorted = keyed
                .into_iter()
                .map(|(key, source)| {
                    let escaping = match version {
                        InfluxVersion::V3 if key.trim_end_matches('\\') != "userFull" => TagEscaping::V3Strip,
                        _ => TagEscaping::of(version),
                    };
                    SortedTag {
                        prefix: tag_prefix(key, version),
                        source,
                        escaping,
                    }
                })
                .collect();
        }
        LineEncoder {
            tags: prepared,
            overrides,
            version,
            sorted,
            ua_tags: (version == InfluxVersion::V1 && overrides[UA_FIRST..].iter().all(Option::is_none))
                .then(UaTagCache::new),
            last_ts: 0,
        }
    }

    /// v1: tags in Butler SOS's insertion order, config tags overriding in place; fields sorted.
    fn encode_v1(&mut self, core: &CoreValues<'_>, w: &mut LineWriter<'_>) {
        let mut present = 0u16;
        for (i, value) in core.tags.iter().enumerate() {
            let Some(value) = value.filter(|v| !v.is_empty()) else {
                continue;
            };
            if i == UA_FIRST {
                if let (Some(ua), Some(cache)) = (core.ua, self.ua_tags.as_mut()) {
                    // No config tag overrides a UA tag (else there is no cache), so `present` needs no UA bits.
                    let (tags, changed) = cache.get(ua);
                    w.encoded_tags(tags, changed);
                    break;
                }
            }
            present |= 1 << i;
            if i == COMMAND && self.overrides[i].is_none() {
                if let Some(prefixed) = command_tag(core.command) {
                    w.encoded_tags(prefixed, false);
                    continue;
                }
            }
            let value = self.overrides[i].map_or(value, |t| self.tags[t].value.as_str());
            w.tag_prefixed(CORE_PREFIXES[i], value, TagEscaping::Go);
        }
        for t in &self.tags {
            if t.core.is_some_and(|c| present & (1 << c) != 0) {
                continue;
            }
            w.tag_prefixed(&t.prefix, &t.value, TagEscaping::Go);
        }
        if let Some(app_id) = core.app_id {
            w.field_str("appId", app_id);
            w.field_str("appName", core.app_name);
        }
        w.field_str("userFull", core.user_full);
        w.field_str("userId", core.user_id);
    }

    /// v2/v3: tags and fields sorted by key, v3 tag values sanitised and field names suffixed.
    fn encode_sorted(&self, core: &CoreValues<'_>, w: &mut LineWriter<'_>) {
        for tag in &self.sorted {
            let value = match tag.source {
                TagSource::Core(i) => match core.tags[i] {
                    Some(v) => v,
                    None => continue,
                },
                TagSource::Config(j) => self.tags[j].value.as_str(),
                TagSource::Refused => {
                    w.left_out_tag();
                    continue;
                }
            };
            w.tag_prefixed(&tag.prefix, value, tag.escaping);
        }
        let (user_full, user_id) = if self.version == InfluxVersion::V3 {
            ("userFull_field", "userId_field")
        } else {
            ("userFull", "userId")
        };
        if let Some(app_id) = core.app_id {
            w.field_str("appId_field", app_id);
            w.field_str("appName_field", core.app_name);
        }
        w.field_str(user_full, core.user_full);
        w.field_str(user_id, core.user_id);
    }
}

/// Index of `event_action` in [`CORE_TAGS`].
const COMMAND: usize = 1;
/// Index of the first user-agent tag in [`CORE_TAGS`]; the four UA tags are the last ones.
const UA_FIRST: usize = 8;

/// `,event_action=<command>` for the four known commands, escaped.
fn command_tag(command: Command) -> Option<&'static [u8]> {
    match command {
        Command::StartSession => Some(b",event_action=Start\\ session"),
        Command::StopSession => Some(b",event_action=Stop\\ session"),
        Command::OpenConnection => Some(b",event_action=Open\\ connection"),
        Command::CloseConnection => Some(b",event_action=Close\\ connection"),
        Command::Other => None,
    }
}

/// The v1 user-agent tags (`,uaBrowserName=...` to `,uaOsVersion=...`), encoded once per distinct
/// [`UserAgentInfo`] and reused: events share their UA facts through an `Arc` from the readers' caches, so a few
/// hundred distinct values cover a farm's traffic. Direct-mapped by the `Arc`'s address; each slot keeps its
/// `Arc` (so the address cannot be reused by another value while cached) and reuses its buffer, so a warm cache
/// allocates nothing.
#[derive(Debug, Clone)]
struct UaTagCache {
    slots: Vec<UaSlot>,
}

#[derive(Debug, Clone, Default)]
struct UaSlot {
    ua: Option<Arc<UserAgentInfo>>,
    encoded: Vec<u8>,
    changed: bool,
}

impl UaTagCache {
    const SLOTS: usize = 256;

    fn new() -> UaTagCache {
        UaTagCache {
            slots: vec![UaSlot::default(); Self::SLOTS],
        }
    }

    /// `ua`'s tags, encoded, and whether a value had to be changed (as [`write_tag`] says).
    fn get(&mut self, ua: &Arc<UserAgentInfo>) -> (&[u8], bool) {
        let at = (Arc::as_ptr(ua) as usize >> 4) % Self::SLOTS;
        let slot = &mut self.slots[at];
        if !slot.ua.as_ref().is_some_and(|cached| Arc::ptr_eq(cached, ua)) {
            slot.encoded.clear();
            slot.changed = false;
            let values = [&ua.browser_name, &ua.browser_major_version, &ua.os_name, &ua.os_version];
            for (k, value) in values.into_iter().enumerate() {
                if !value.is_empty() {
                    slot.changed |= write_tag(&mut slot.encoded, CORE_PREFIXES[UA_FIRST + k], value, TagEscaping::Go);
                }
            }
            slot.ua = Some(Arc::clone(ua));
        }
        (&slot.encoded, slot.changed)
    }
}

/// One event's values for the core tags and the string fields.
struct CoreValues<'a> {
    /// The command, classified.
    command: Command,
    /// The user-agent facts the UA tags come from.
    ua: Option<&'a Arc<UserAgentInfo>>,
    /// Per [`CORE_TAGS`] entry: its value, if the event has it (may be empty: an empty tag is left out).
    tags: [Option<&'a str>; CORE_TAGS.len()],
    user_full: &'a str,
    user_id: &'a str,
    app_id: Option<&'a str>,
    app_name: &'a str,
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
        let core = CoreValues {
            command: ev.command,
            ua: ev.user_agent.as_ref(),
            tags: [
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
            ],
            user_full,
            user_id: id,
            app_id,
            app_name,
        };
        let mut w = LineWriter::new(out, self.version, MEASUREMENT.as_bytes());
        match self.version {
            InfluxVersion::V1 => self.encode_v1(&core, &mut w),
            InfluxVersion::V2 | InfluxVersion::V3 => self.encode_sorted(&core, &mut w),
        }
        let ts = ev.received_ns.max(self.last_ts + 1);
        self.last_ts = ts;
        if w.finish(ts) {
            Encoded::Changed
        } else {
            Encoded::Yes
        }
    }
}

/// `,key=` of each [`CORE_TAGS`] entry (none needs escaping).
const CORE_PREFIXES: [&[u8]; CORE_TAGS.len()] = [
    b",host=",
    b",event_action=",
    b",userFull=",
    b",userDirectory=",
    b",userId=",
    b",origin=",
    b",appId=",
    b",appName=",
    b",uaBrowserName=",
    b",uaBrowserMajorVersion=",
    b",uaOsName=",
    b",uaOsVersion=",
];

#[cfg(test)]
mod tests;
