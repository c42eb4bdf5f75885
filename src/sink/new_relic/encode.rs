//! Butler SOS's `qs_userEvent` for the New Relic Event API, one JSON object per event, written by hand.
//!
//! Each item is one object followed by `,` (`{...},`), so a batch is the items back to back and can be split
//! between any two items; the transport frames them as `[` ... `]` without the last comma.
//!
//! # Attributes (fixtures, `src/lib/post-to-new-relic.js`)
//! Butler SOS builds a JavaScript object and sends `JSON.stringify` of it, so the order below is insertion order:
//! 1. `timestamp`: epoch milliseconds, an integer. Ours is the receive time (`received_ns / 10^6`); Butler SOS's is
//!    its processing time. New Relic requires it within ±24 h of its own clock.
//! 2. `qs_host, qs_event_action, qs_userFull, qs_userDirectory, qs_userId, qs_origin`, always, even when empty:
//!    Butler SOS sends events with an empty user directory or id to New Relic (only InfluxDB skips them).
//!    `qs_userFull` is `<directory>\<id>` ([`Field::UserFull`]), also when a part is empty.
//! 3. With a valid app id: `qs_appId`, `qs_appName` (the mapped name or [`UNKNOWN_APP_NAME`]).
//! 4. The non-empty user-agent facts: `qs_uaBrowserName, qs_uaBrowserMajorVersion, qs_uaOsName, qs_uaOsVersion`.
//! 5. `userEvents.tags`, assigned one by one (`attributes[name] = value`): a tag named like an attribute already
//!    present replaces that attribute's value *in place* (the fixtures' `qs_host` tag); any other tag is appended
//!    in config order; a name listed twice keeps its first position and its last value.
//! 6. `eventType: "qs_userEvent"`, assigned last, so a tag named `eventType` keeps its position but not its value.
//!
//! Two more JavaScript rules are reproduced for exactness: a tag whose name is an array index (`"0"`, `"42"`, ...)
//! is written first, in ascending numeric order, because `JSON.stringify` orders integer keys before all others;
//! strings are escaped like `JSON.stringify` ([`write_str`]).
//!
//! With `scramble` on, `qs_userFull`, `qs_userDirectory` and `qs_userId` are replaced by their SHAKE256 8-byte hex
//! ([`scramble`]), hashed from the sanitised values. A config tag overriding one of them is sent as
//! configured (Butler SOS assigns tags after scrambling).
//!
//! # New Relic limits
//! At most 254 attributes per event, names up to 255 characters, values up to 4096 characters (longer values are
//! cut by New Relic). The event fields cannot reach the value limit: the parser cuts them to Butler SOS's limits
//! (100 UTF-16 units for host, command, directory and id, 200 for origin, so `qs_userFull` is at most 201; context
//! and message are not sent). Only `userEvents.tags` could exceed the limits (more than 240 tags, or a name or
//! value that long); they are sent unchanged, as Butler SOS sends them, and New Relic applies its own rules.
//!
//! Encoding allocates nothing: tags are escaped once at construction, numbers and strings are written straight into
//! the batch buffer, and the scrambled forms come from a bounded per-encoder cache of users
//! ([`UserCache`]: a user's first event costs three SHAKE256 runs and one key allocation, later events a lookup).

use crate::config::Tag;
use crate::event::{Event, Field, UNKNOWN_APP_NAME};
use crate::sink::json::write_str;
use crate::sink::{Encoded, Encoder};

use super::scramble::{self, ScrambledUser, UserCache};

/// The `eventType` Butler SOS sends user events as.
pub const EVENT_TYPE: &str = "qs_userEvent";

/// Attribute names in Butler SOS's insertion order.
const CORE: [&str; 13] = [
    "timestamp",
    "qs_host",
    "qs_event_action",
    "qs_userFull",
    "qs_userDirectory",
    "qs_userId",
    "qs_origin",
    "qs_appId",
    "qs_appName",
    "qs_uaBrowserName",
    "qs_uaBrowserMajorVersion",
    "qs_uaOsName",
    "qs_uaOsVersion",
];

/// Index of `timestamp` in [`CORE`].
const TIMESTAMP: usize = 0;
/// Indices of the attributes that are scrambled.
const SCRAMBLED: [usize; 3] = [3, 4, 5];

/// `,"<name>":` for each [`CORE`] attribute after `timestamp`, written once.
fn core_key(i: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(CORE[i].len() + 4);
    key.push(b',');
    write_str(&mut key, CORE[i]);
    key.push(b':');
    key
}

/// One config tag, escaped once.
#[derive(Debug, Clone)]
struct PreparedTag {
    /// Index into [`CORE`] when the name is a core attribute's.
    core: Option<usize>,
    /// `,"name":"value"` (for `eventType`: the value is [`EVENT_TYPE`]).
    member: Vec<u8>,
    /// `"value"`, for replacing a core attribute's value in place.
    value: Vec<u8>,
}

/// Encodes events as New Relic Event API objects (one `{...},` item each).
#[derive(Debug, Clone)]
pub struct NewRelicEncoder {
    /// `{` plus the array-index-named tags (`"7":"x",`), which JavaScript orders first.
    prefix: Vec<u8>,
    /// `,"qs_host":` ... for every core attribute (index 0 unused: `timestamp` opens the object).
    core_keys: Vec<Vec<u8>>,
    /// Other tags, in config order (first position of each name).
    tags: Vec<PreparedTag>,
    /// For each core attribute, the tag overriding it.
    overrides: [Option<usize>; CORE.len()],
    /// True when a tag named `eventType` already placed `eventType`.
    event_type_placed: bool,
    /// Scrambled users, when `scramble` is on.
    users: Option<UserCache>,
}

impl NewRelicEncoder {
    /// An encoder adding `tags` (`userEvents.tags`) to every event, scrambling user ids when `scramble`
    /// (`userEvents.sendToNewRelic.scramble`).
    pub fn new(tags: &[Tag], scramble: bool) -> NewRelicEncoder {
        // Assigning to a JavaScript object: first position, last value.
        let mut dedup: Vec<(&str, &str)> = Vec::new();
        for t in tags {
            match dedup.iter_mut().find(|(n, _)| *n == t.name) {
                Some(entry) => entry.1 = &t.value,
                None => dedup.push((&t.name, &t.value)),
            }
        }
        let mut indexed: Vec<(u32, &str, &str)> = Vec::new();
        let mut prepared: Vec<PreparedTag> = Vec::new();
        let mut event_type_placed = false;
        for (name, value) in dedup {
            if let Some(n) = array_index(name) {
                indexed.push((n, name, value));
                continue;
            }
            let value = if name == "eventType" {
                event_type_placed = true;
                EVENT_TYPE
            } else {
                value
            };
            let mut quoted = Vec::with_capacity(value.len() + 2);
            write_str(&mut quoted, value);
            let mut member = Vec::with_capacity(name.len() + quoted.len() + 4);
            member.push(b',');
            write_str(&mut member, name);
            member.push(b':');
            member.extend_from_slice(&quoted);
            prepared.push(PreparedTag {
                core: CORE.iter().position(|c| *c == name),
                member,
                value: quoted,
            });
        }
        indexed.sort_by_key(|(n, _, _)| *n);
        let mut prefix = vec![b'{'];
        for (_, name, value) in indexed {
            write_str(&mut prefix, name);
            prefix.push(b':');
            write_str(&mut prefix, value);
            prefix.push(b',');
        }
        let mut overrides = [None; CORE.len()];
        for (i, t) in prepared.iter().enumerate() {
            if let Some(c) = t.core {
                overrides[c] = Some(i);
            }
        }
        NewRelicEncoder {
            prefix,
            core_keys: (0..CORE.len()).map(core_key).collect(),
            tags: prepared,
            overrides,
            event_type_placed,
            users: scramble.then(UserCache::new),
        }
    }

    /// Writes core attribute `i` (not `timestamp`) with `value` (or its scrambled `hex`), unless a tag overrides
    /// it.
    fn write_core(&self, out: &mut Vec<u8>, i: usize, value: &str, hex: Option<&[u8; scramble::HEX_CHARS]>) {
        out.extend_from_slice(&self.core_keys[i]);
        if let Some(t) = self.overrides[i] {
            out.extend_from_slice(&self.tags[t].value);
        } else if let Some(hex) = hex {
            out.push(b'"');
            out.extend_from_slice(hex);
            out.push(b'"');
        } else {
            write_str(out, value);
        }
    }
}

impl Encoder for NewRelicEncoder {
    fn encode(&mut self, ev: &Event, out: &mut Vec<u8>) -> Encoded {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"\"timestamp\":");
        match self.overrides[TIMESTAMP] {
            Some(t) => out.extend_from_slice(&self.tags[t].value),
            None => out.extend_from_slice(itoa::Buffer::new().format(ev.received_ns / 1_000_000).as_bytes()),
        }
        let (full, dir, id) = (
            ev.get(Field::UserFull),
            ev.get(Field::UserDirectory),
            ev.get(Field::UserId),
        );
        let scrambled: Option<ScrambledUser> = match &mut self.users {
            Some(users) if !SCRAMBLED.iter().all(|&i| self.overrides[i].is_some()) => Some(users.get(dir, id, full)),
            _ => None,
        };
        self.write_core(out, 1, ev.get(Field::Host), None);
        self.write_core(out, 2, ev.get(Field::Command), None);
        self.write_core(out, 3, full, scrambled.as_ref().map(|s| &s.full));
        self.write_core(out, 4, dir, scrambled.as_ref().map(|s| &s.directory));
        self.write_core(out, 5, id, scrambled.as_ref().map(|s| &s.id));
        self.write_core(out, 6, ev.get(Field::Origin), None);
        // Bit i set: core attribute i is on this event (so a tag of that name replaced it in place).
        let mut present: u16 = 0x7f;
        if let Some(app_id) = ev.app_id() {
            self.write_core(out, 7, app_id, None);
            self.write_core(out, 8, ev.app_name.as_deref().unwrap_or(UNKNOWN_APP_NAME), None);
            present |= 0b11 << 7;
        }
        if let Some(ua) = ev.user_agent.as_deref() {
            let values = [&ua.browser_name, &ua.browser_major_version, &ua.os_name, &ua.os_version];
            for (k, value) in values.into_iter().enumerate() {
                if !value.is_empty() {
                    self.write_core(out, 9 + k, value, None);
                    present |= 1 << (9 + k);
                }
            }
        }
        for t in &self.tags {
            if t.core.is_some_and(|c| present & (1 << c) != 0) {
                continue;
            }
            out.extend_from_slice(&t.member);
        }
        if !self.event_type_placed {
            out.extend_from_slice(b",\"eventType\":\"qs_userEvent\"");
        }
        out.extend_from_slice(b"},");
        Encoded::Yes
    }
}

/// The value of `name` when JavaScript treats it as an array index (canonical decimal below 2^32 - 1).
fn array_index(name: &str) -> Option<u32> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    let n: u64 = name.parse().ok()?;
    u32::try_from(n).ok().filter(|&n| n != u32::MAX)
}

#[cfg(test)]
mod tests;
