//! The one event type that flows from the UDP readers to every sink.
//!
//! An [`Event`] owns a reusable text buffer holding the *sanitised* fields of one datagram (control characters
//! removed, each field cut to Butler SOS's limit) plus a few derived values, and addresses them through
//! [`Span`]s, ripgrep `LineStep` style. Events live in [`slab::Slab`]s that are recycled through a pool, so once
//! the buffers have grown to the size of the traffic, receiving an event allocates nothing.
//!
//! This module depends on nothing else in the crate.

pub mod handover;
pub mod slab;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::sync::Arc;

/// Initial capacity of an event's text buffer, in bytes. Typical Qlik user events are 200-600 bytes; a larger
/// event grows the buffer once and the slab keeps that capacity.
pub const EVENT_TEXT_CAPACITY: usize = 512;

/// `appName` of an event whose app id is valid but not in the app-name map (Butler SOS's placeholder).
pub const UNKNOWN_APP_NAME: &str = "<unknown app name>";

/// The message type (datagram field 0, after Butler SOS's normalisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// `/qseow-proxy-session/`
    #[default]
    Session,
    /// `/qseow-proxy-connection/`
    Connection,
}

impl Source {
    /// The normalised text Butler SOS publishes as `messageType`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Session => "qseow-proxy-session",
            Source::Connection => "qseow-proxy-connection",
        }
    }
}

/// The command (datagram field 2), compared exactly and case-sensitively like Butler SOS's MQTT routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Command {
    /// `Start session`
    StartSession,
    /// `Stop session`
    StopSession,
    /// `Open connection`
    OpenConnection,
    /// `Close connection`
    CloseConnection,
    /// Anything else: stored and published (MQTT: everything topic only), never rejected.
    #[default]
    Other,
}

impl Command {
    /// Classifies a sanitised command field.
    pub fn classify(text: &str) -> Command {
        match text {
            "Start session" => Command::StartSession,
            "Stop session" => Command::StopSession,
            "Open connection" => Command::OpenConnection,
            "Close connection" => Command::CloseConnection,
            _ => Command::Other,
        }
    }
}

/// A text field of the datagram, by position (no magic indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Field {
    /// Field 1: the Sense host name.
    Host = 0,
    /// Field 2: the command, e.g. `Start session`.
    Command = 1,
    /// Field 3: the user directory.
    UserDirectory = 2,
    /// Field 4: the user id.
    UserId = 3,
    /// Field 5: the origin, e.g. `AppAccess`.
    Origin = 4,
    /// Field 6: the context, e.g. `/app/<guid>?...`.
    Context = 5,
    /// Field 7: the free-text message (everything after the 7th `;`).
    Message = 6,
    /// Derived: `<user directory>\<user id>`.
    UserFull = 7,
    /// Derived: the user agent text taken from the message (trimmed, quotes removed); may be empty.
    UserAgent = 8,
}

impl Field {
    /// The seven datagram fields after the source, in datagram order.
    pub const DATAGRAM: [Field; 7] = [
        Field::Host,
        Field::Command,
        Field::UserDirectory,
        Field::UserId,
        Field::Origin,
        Field::Context,
        Field::Message,
    ];
    const COUNT: usize = 9;

    /// Butler SOS's maximum length of the field after sanitising, in UTF-16 code units.
    pub fn max_units(self) -> usize {
        match self {
            Field::Origin => 200,
            Field::Context => 500,
            Field::Message => 1000,
            _ => 100,
        }
    }
}

/// A byte range into an event's text buffer. Always on `char` boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// A span over `range`. Callers guarantee the range lies on char boundaries of the buffer it indexes.
    pub fn new(range: Range<usize>) -> Span {
        Span {
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    /// The range this span covers.
    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    /// True when the span covers no bytes.
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// Browser and OS facts derived from a user agent, in Bowser 2.14's names. Shared between events through an
/// `Arc` from the per-reader cache, so attaching it to an event never allocates. Empty strings mean "absent".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserAgentInfo {
    /// `uaBrowserName`, e.g. `Chrome`, `Microsoft Edge`.
    pub browser_name: String,
    /// `uaBrowserMajorVersion`: the leading digits of the browser version.
    pub browser_major_version: String,
    /// `uaOsName`, e.g. `Windows`, `macOS`, `iOS`.
    pub os_name: String,
    /// `uaOsVersion`, e.g. `NT 10.0`, `10.15.7`.
    pub os_version: String,
}

impl UserAgentInfo {
    /// True when no attribute is present (an empty or non-browser user agent).
    pub fn is_empty(&self) -> bool {
        self.browser_name.is_empty()
            && self.browser_major_version.is_empty()
            && self.os_name.is_empty()
            && self.os_version.is_empty()
    }
}

/// One parsed, sanitised user event.
///
/// Invariants (established by `parse::parse_into`): every span lies on char boundaries of `text`; the seven
/// datagram fields are sanitised and truncated; `app_id`, when set, is a sub-span of the context that passed the
/// strict UUID check.
#[derive(Debug, Clone)]
pub struct Event {
    text: String,
    spans: [Span; Field::COUNT],
    app_id: Option<Span>,
    /// Field 0, normalised.
    pub source: Source,
    /// Field 2, classified.
    pub command: Command,
    /// Browser/OS facts, when the message carried a user agent a browser parser recognised.
    pub user_agent: Option<Arc<UserAgentInfo>>,
    /// The app name for `app_id` (Butler SOS's placeholder unless an app-name map names it).
    pub app_name: Option<Arc<str>>,
    /// Receive time, nanoseconds since the Unix epoch.
    pub received_ns: u64,
    /// The sender's address (the Sense proxy node).
    pub peer: SocketAddr,
}

impl Default for Event {
    fn default() -> Self {
        Event::new()
    }
}

impl Event {
    /// An empty event with a preallocated text buffer.
    pub fn new() -> Event {
        Event {
            text: String::with_capacity(EVENT_TEXT_CAPACITY),
            spans: [Span::default(); Field::COUNT],
            app_id: None,
            source: Source::Session,
            command: Command::Other,
            user_agent: None,
            app_name: None,
            received_ns: 0,
            peer: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        }
    }

    /// Resets the event for reuse, keeping its buffer capacity.
    pub fn clear(&mut self) {
        self.text.clear();
        self.spans = [Span::default(); Field::COUNT];
        self.app_id = None;
        self.source = Source::Session;
        self.command = Command::Other;
        self.user_agent = None;
        self.app_name = None;
    }

    /// The text of `field` (sanitised; may be empty).
    pub fn get(&self, field: Field) -> &str {
        &self.text[self.spans[field as usize].range()]
    }

    /// The app id taken from the context, when it passed the UUID check.
    pub fn app_id(&self) -> Option<&str> {
        self.app_id.map(|s| &self.text[s.range()])
    }

    /// The text buffer, for writers that build the event (the parser).
    pub fn text_mut(&mut self) -> &mut String {
        &mut self.text
    }

    /// Records where `field` lies in the text buffer. The caller guarantees char boundaries.
    pub fn set_span(&mut self, field: Field, span: Span) {
        self.spans[field as usize] = span;
    }

    /// The span of `field`.
    pub fn span(&self, field: Field) -> Span {
        self.spans[field as usize]
    }

    /// Records the app id span (a sub-span of the context).
    pub fn set_app_id(&mut self, span: Option<Span>) {
        self.app_id = span;
    }

    /// Capacity of the text buffer in bytes (for the slab's memory accounting).
    pub fn capacity(&self) -> usize {
        self.text.capacity()
    }
}

/// Why a datagram was not turned into an event. Counted per reason; never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// Field 0 is not a recognised message type (includes the empty datagram).
    #[error("not a recognised user event")]
    UnknownSource,
    /// Fewer than seven `;`-separated fields.
    #[error("fewer than seven fields")]
    TooFewFields,
    /// Larger than `udpServerConfig.maxMessageSize`.
    #[error("datagram larger than maxMessageSize")]
    OverSize,
    /// The sender is not in `udpServerConfig.allowedSources`.
    #[error("sender not in allowedSources")]
    DisallowedSource,
    /// The sender exceeded `udpServerConfig.rateLimit.maxMessagesPerMinute`.
    #[error("sender over its rate limit")]
    RateLimited,
}

impl RejectReason {
    /// Every reason, for counters and reports.
    pub const ALL: [RejectReason; 5] = [
        RejectReason::UnknownSource,
        RejectReason::TooFewFields,
        RejectReason::OverSize,
        RejectReason::DisallowedSource,
        RejectReason::RateLimited,
    ];

    /// Stable snake_case key for logs and metrics.
    pub fn key(self) -> &'static str {
        match self {
            RejectReason::UnknownSource => "unknown_source",
            RejectReason::TooFewFields => "too_few_fields",
            RejectReason::OverSize => "over_size",
            RejectReason::DisallowedSource => "disallowed_source",
            RejectReason::RateLimited => "rate_limited",
        }
    }

    /// Index into per-reason counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adding a variant fails to compile here: add it to `RejectReason::ALL` too.
    fn variant_count(r: RejectReason) -> usize {
        match r {
            RejectReason::UnknownSource
            | RejectReason::TooFewFields
            | RejectReason::OverSize
            | RejectReason::DisallowedSource
            | RejectReason::RateLimited => 5,
        }
    }

    #[test]
    fn every_reject_reason_is_listed_once_at_its_own_index() {
        assert_eq!(variant_count(RejectReason::OverSize), RejectReason::ALL.len());
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let keys: std::collections::HashSet<_> = RejectReason::ALL.iter().map(|r| r.key()).collect();
        assert_eq!(keys.len(), RejectReason::ALL.len());
    }
}
