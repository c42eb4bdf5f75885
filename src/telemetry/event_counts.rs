//! Butler SOS's user-event counts (`qlikSenseEvents.eventCount`): how many user events arrived per
//! (source, host, subsystem) since the last successful write to InfluxDB.
//!
//! # What is counted (Butler SOS `src/lib/udp_handlers/user_events/message-event.js`, `src/lib/udp-event.js`)
//! - Every datagram the parser accepts as a user event, **before** `excludeUser` is applied (Butler SOS counts
//!   before it checks the exclude list, so excluded users are counted too), keyed by
//!   - `source`: the normalised message type, `qseow-proxy-session` or `qseow-proxy-connection`;
//!   - `host`: datagram field 1 (the Sense host);
//!   - `subsystem`: datagram field 5 (the origin).
//!
//!   An event whose host or origin is empty is not counted: Butler SOS's `addUserEvent` refuses an event without
//!   `host` or `subsystem` (it logs an error and returns).
//! - Every datagram rejected as [`RejectReason::UnknownSource`](crate::event::RejectReason::UnknownSource) (not a recognised user event), under
//!   `Unknown`/`Unknown`/`Unknown`, as Butler SOS does.
//! - Not counted, as in Butler SOS: datagrams dropped before the handler (over `maxMessageSize`, over the rate
//!   limit, from a disallowed source). One deliberate difference: a recognised datagram with fewer than seven
//!   fields is rejected here (`too_few_fields`) and not counted; Butler SOS counts it when fields 1 and 5 are set.
//!
//! Values are the parser's sanitised fields (control characters removed, cut to Butler SOS's field limits);
//! Butler SOS uses the raw text, which differs only for datagrams with control characters or oversized fields.
//!
//! # Hot path
//! Each reader counts into its own [`LocalEventCounts`] (no lock, no atomic; an allocation only the first time a
//! reader sees a key) and merges it into the shared [`EventCounts`] once per slab, under one lock.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use crate::event::Source;
use crate::telemetry::metrics::Counter;

/// Keys kept in the shared map between two writes; further new keys are counted in [`EventCounts::overflow`]
/// instead (a sender inventing origins must not grow memory without bound).
pub const MAX_KEYS: usize = 10_000;

/// Keys a reader keeps locally before it starts over (after a merge), so its linear scan stays short.
const MAX_LOCAL_KEYS: usize = 256;

/// The `source` tag of a counted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CountedSource {
    /// `qseow-proxy-session`.
    Session,
    /// `qseow-proxy-connection`.
    Connection,
    /// Not a recognised user event: Butler SOS's `Unknown` (host and subsystem are `Unknown` too).
    Unknown,
}

impl CountedSource {
    /// The tag value Butler SOS writes.
    pub fn as_str(self) -> &'static str {
        match self {
            CountedSource::Session => Source::Session.as_str(),
            CountedSource::Connection => Source::Connection.as_str(),
            CountedSource::Unknown => UNKNOWN,
        }
    }
}

impl From<Source> for CountedSource {
    fn from(s: Source) -> CountedSource {
        match s {
            Source::Session => CountedSource::Session,
            Source::Connection => CountedSource::Connection,
        }
    }
}

/// Butler SOS's value for all three tags of an unrecognised datagram.
pub const UNKNOWN: &str = "Unknown";

/// One counter's key. Ordered by source, host, subsystem (the order lines are written in).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventCountKey {
    /// `source` tag.
    pub source: CountedSource,
    /// `host` tag (never empty).
    pub host: String,
    /// `subsystem` tag (never empty).
    pub subsystem: String,
}

/// A key as borrowed parts, so the shared map is searched without building an owned key (no allocation per
/// merge once every key is known). [`EventCountKey`] hashes exactly like its parts, as `Borrow` requires.
trait KeyParts {
    fn parts(&self) -> (CountedSource, &str, &str);
}

impl KeyParts for EventCountKey {
    fn parts(&self) -> (CountedSource, &str, &str) {
        (self.source, &self.host, &self.subsystem)
    }
}

impl KeyParts for (CountedSource, &str, &str) {
    fn parts(&self) -> (CountedSource, &str, &str) {
        *self
    }
}

impl<'a> Borrow<dyn KeyParts + 'a> for EventCountKey {
    fn borrow(&self) -> &(dyn KeyParts + 'a) {
        self
    }
}

impl Hash for dyn KeyParts + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn KeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyParts + '_ {}

impl Hash for EventCountKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

/// The counts of every reader, merged; taken by the writer at each write.
#[derive(Debug, Default)]
pub struct EventCounts {
    counts: Mutex<HashMap<EventCountKey, u64>>,
    /// Events not counted under their own key because [`MAX_KEYS`] keys were already waiting to be written.
    pub overflow: Counter,
}

impl EventCounts {
    /// Adds a reader's local counts and zeroes them (keeping the reader's keys, so it does not allocate again).
    pub fn merge(&self, local: &mut LocalEventCounts) {
        if local.entries.iter().all(|e| e.count == 0) {
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for e in local.entries.iter_mut().filter(|e| e.count > 0) {
            let n = std::mem::take(&mut e.count);
            let parts = (e.source, e.host.as_str(), e.subsystem.as_str());
            let full = counts.len() >= MAX_KEYS;
            match counts.get_mut(&parts as &dyn KeyParts) {
                Some(c) => *c += n,
                None if full => self.overflow.add(n),
                None => {
                    let key = EventCountKey {
                        source: e.source,
                        host: e.host.clone(),
                        subsystem: e.subsystem.clone(),
                    };
                    counts.insert(key, n);
                }
            }
        }
        drop(counts);
        if local.entries.len() > MAX_LOCAL_KEYS {
            local.entries.clear();
            local.last = 0;
        }
    }

    /// Takes every count, sorted by key; the map is empty afterwards (it keeps its capacity; a key is allocated
    /// again the first time it is counted after a write: once per key per write period, never per event). The writer gives them back with
    /// [`EventCounts::restore`] when the write fails.
    pub fn take(&self) -> Vec<(EventCountKey, u64)> {
        let mut v: Vec<_> = self.counts.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        v.sort();
        v
    }

    /// Adds `counts` back (after a failed write), to be written with the next ones. Keys beyond [`MAX_KEYS`]
    /// go to [`EventCounts::overflow`].
    pub fn restore(&self, counts: Vec<(EventCountKey, u64)>) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (key, n) in counts {
            let full = map.len() >= MAX_KEYS;
            match map.get_mut(&key) {
                Some(c) => *c += n,
                None if full => self.overflow.add(n),
                None => {
                    map.insert(key, n);
                }
            }
        }
    }
}

/// One reader's counts since its last merge.
#[derive(Debug, Default)]
pub struct LocalEventCounts {
    entries: Vec<LocalEntry>,
    /// Index of the last key counted (datagrams come in runs from one host).
    last: usize,
}

#[derive(Debug)]
struct LocalEntry {
    source: CountedSource,
    host: String,
    subsystem: String,
    count: u64,
}

impl LocalEventCounts {
    /// Counts one recognised user event of `source` from `host` with origin `subsystem`; does nothing when
    /// `host` or `subsystem` is empty (Butler SOS refuses those).
    pub fn count(&mut self, source: Source, host: &str, subsystem: &str) {
        if host.is_empty() || subsystem.is_empty() {
            return;
        }
        self.add(CountedSource::from(source), host, subsystem);
    }

    /// Counts one datagram that is not a recognised user event (`Unknown`/`Unknown`/`Unknown`).
    pub fn count_unknown(&mut self) {
        self.add(CountedSource::Unknown, UNKNOWN, UNKNOWN);
    }

    fn add(&mut self, source: CountedSource, host: &str, subsystem: &str) {
        let hit = |e: &LocalEntry| e.source == source && e.host == host && e.subsystem == subsystem;
        if !self.entries.get(self.last).is_some_and(hit) {
            self.last = match self.entries.iter().position(hit) {
                Some(i) => i,
                None => {
                    self.entries.push(LocalEntry {
                        source,
                        host: host.to_owned(),
                        subsystem: subsystem.to_owned(),
                        count: 0,
                    });
                    self.entries.len() - 1
                }
            };
        }
        self.entries[self.last].count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(source: CountedSource, host: &str, subsystem: &str) -> EventCountKey {
        EventCountKey {
            source,
            host: host.into(),
            subsystem: subsystem.into(),
        }
    }

    #[test]
    fn counts_per_source_host_and_subsystem_across_readers() {
        let shared = EventCounts::default();
        let (mut a, mut b) = (LocalEventCounts::default(), LocalEventCounts::default());
        a.count(Source::Session, "h1", "AppAccess");
        a.count(Source::Session, "h1", "AppAccess");
        a.count(Source::Connection, "h1", "AppAccess");
        b.count(Source::Session, "h1", "AppAccess");
        b.count_unknown();
        shared.merge(&mut a);
        shared.merge(&mut b);
        a.count(Source::Session, "h2", "Hub");
        shared.merge(&mut a);
        assert_eq!(
            shared.take(),
            vec![
                (key(CountedSource::Session, "h1", "AppAccess"), 3),
                (key(CountedSource::Session, "h2", "Hub"), 1),
                (key(CountedSource::Connection, "h1", "AppAccess"), 1),
                (key(CountedSource::Unknown, "Unknown", "Unknown"), 1),
            ]
        );
        assert!(shared.take().is_empty(), "take empties the map");
    }

    #[test]
    fn events_without_host_or_origin_are_not_counted() {
        let shared = EventCounts::default();
        let mut a = LocalEventCounts::default();
        a.count(Source::Session, "", "Hub");
        a.count(Source::Session, "h1", "");
        shared.merge(&mut a);
        assert!(shared.take().is_empty());
    }

    #[test]
    fn restored_counts_add_to_new_ones() {
        let shared = EventCounts::default();
        let mut a = LocalEventCounts::default();
        a.count(Source::Session, "h1", "Hub");
        shared.merge(&mut a);
        let failed = shared.take();
        a.count(Source::Session, "h1", "Hub");
        a.count(Source::Session, "h1", "Hub");
        shared.merge(&mut a);
        shared.restore(failed);
        assert_eq!(shared.take(), vec![(key(CountedSource::Session, "h1", "Hub"), 3)]);
    }

    #[test]
    fn keys_beyond_the_cap_are_counted_as_overflow() {
        let shared = EventCounts::default();
        let mut a = LocalEventCounts::default();
        for i in 0..MAX_KEYS + 5 {
            a.count(Source::Session, "h", &i.to_string());
            if i % 100 == 0 {
                shared.merge(&mut a);
            }
        }
        shared.merge(&mut a);
        assert_eq!(shared.take().len(), MAX_KEYS);
        assert_eq!(shared.overflow.get(), 5);
    }
}
