//! Tests for the user-event parser, memchr style:
//!
//! - [`seeds`]: a hand-written table of edge cases, each with the outcome Butler SOS 15 gives (or, for too few
//!   fields, our deliberate rejection). Every row is checked against the parser (fresh and with a reused event)
//!   and against the naive reference, so the table also keeps the reference honest.
//! - [`naive_parse`]: the obviously correct parser, written the way Butler SOS's `message-event.js` reads
//!   (decode lossily, `split(';')`, re-join the message, `toLowerCase().replace('/', '')` twice on the raw field 0,
//!   `sanitizeField`, `split('UserAgent:')[1]`, `context.split('?')[0].split('/app/')[1]`). Its one deliberate
//!   difference from JavaScript: a cut never splits a supplementary-plane character (dropped whole, module rule 4).
//!   Properties say `parse_into == naive_parse` for arbitrary bytes and for mostly-valid structured datagrams.
//! - The golden fixtures in `tests/fixtures/butler-sos`: what Butler SOS 15.0.1 published for each datagram.

use std::fmt::Write as _;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use super::{is_npm_uuid, parse_into, ParseNotes};
use crate::event::{Command, Event, Field, RejectReason, Source};

// ---------------------------------------------------------------------------------------------------------------
// What a parse yields, owned and comparable
// ---------------------------------------------------------------------------------------------------------------

/// Everything a successful parse yields, owned, so the parser, the naive reference and the expectations compare
/// with one `==`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    source: Source,
    command: Command,
    /// The seven datagram fields, in [`Field::DATAGRAM`] order.
    fields: [String; 7],
    user_full: String,
    user_agent: String,
    app_id: Option<String>,
    invalid_utf8: bool,
}

impl Parsed {
    /// Copies what `event` holds after a successful parse.
    fn of(event: &Event, notes: ParseNotes) -> Parsed {
        Parsed {
            source: event.source,
            command: event.command,
            fields: Field::DATAGRAM.map(|f| event.get(f).to_owned()),
            user_full: event.get(Field::UserFull).to_owned(),
            user_agent: event.get(Field::UserAgent).to_owned(),
            app_id: event.app_id().map(str::to_owned),
            invalid_utf8: notes.invalid_utf8,
        }
    }

    /// The same, with `field` (a datagram field, `UserFull` or `UserAgent`) set to `value`.
    fn set(mut self, field: Field, value: impl Into<String>) -> Parsed {
        match field {
            Field::UserFull => self.user_full = value.into(),
            Field::UserAgent => self.user_agent = value.into(),
            datagram_field => self.fields[datagram_field as usize] = value.into(),
        }
        self
    }

    fn source(mut self, source: Source) -> Parsed {
        self.source = source;
        self
    }

    fn command(mut self, command: Command) -> Parsed {
        self.command = command;
        self
    }

    fn app(mut self, id: &str) -> Parsed {
        self.app_id = Some(id.to_owned());
        self
    }

    fn invalid_utf8(mut self) -> Parsed {
        self.invalid_utf8 = true;
        self
    }
}

/// Parses into a fresh event.
fn parse(datagram: &[u8]) -> Result<Parsed, RejectReason> {
    let mut event = Event::new();
    parse_reusing(&mut event, datagram)
}

/// Parses into an event that may hold an earlier event's content.
fn parse_reusing(event: &mut Event, datagram: &[u8]) -> Result<Parsed, RejectReason> {
    parse_into(datagram, event).map(|notes| Parsed::of(event, notes))
}

// ---------------------------------------------------------------------------------------------------------------
// The naive reference
// ---------------------------------------------------------------------------------------------------------------

/// Butler SOS's `sanitizeField` limits for fields 1..=7, in UTF-16 code units.
const NAIVE_LIMITS: [usize; 7] = [100, 100, 100, 100, 200, 500, 1000];

/// The obvious parser, step by step as Butler SOS's `messageEventHandler` does it.
fn naive_parse(datagram: &[u8]) -> Result<Parsed, RejectReason> {
    let text = String::from_utf8_lossy(datagram);
    let pieces: Vec<&str> = text.split(';').collect();

    // `msg[0].toLowerCase().replace('/', '')`, `.replace('/', '')`, compared *before* sanitizing.
    let source = match pieces[0]
        .to_lowercase()
        .replacen('/', "", 1)
        .replacen('/', "", 1)
        .as_str()
    {
        "qseow-proxy-session" => Source::Session,
        "qseow-proxy-connection" => Source::Connection,
        _ => return Err(RejectReason::UnknownSource),
    };
    if pieces.len() < 7 {
        return Err(RejectReason::TooFewFields);
    }
    let message = pieces[7..].join(";");
    let raw = [
        pieces[1],
        pieces[2],
        pieces[3],
        pieces[4],
        pieces[5],
        pieces[6],
        message.as_str(),
    ];
    let fields: [String; 7] = std::array::from_fn(|i| naive_sanitize(raw[i], NAIVE_LIMITS[i]));

    let command = match fields[1].as_str() {
        "Start session" => Command::StartSession,
        "Stop session" => Command::StopSession,
        "Open connection" => Command::OpenConnection,
        "Close connection" => Command::CloseConnection,
        _ => Command::Other,
    };
    Ok(Parsed {
        source,
        command,
        user_full: format!("{}\\{}", fields[2], fields[3]),
        user_agent: naive_user_agent(&fields[6]),
        app_id: naive_app_id(&fields[5]),
        invalid_utf8: std::str::from_utf8(datagram).is_err(),
        fields,
    })
}

/// `sanitizeField`: drop U+0000..=U+001F and U+007F, then keep whole chars while they fit in `limit` UTF-16 units.
fn naive_sanitize(field: &str, limit: usize) -> String {
    let mut out = String::new();
    let mut units = 0;
    for c in field.chars().filter(|&c| !(c <= '\u{1f}' || c == '\u{7f}')) {
        units += c.len_utf16();
        if units > limit {
            break;
        }
        out.push(c);
    }
    out
}

/// JavaScript's `trim()` set: Unicode White_Space, minus U+0085 (not in JS), plus U+FEFF (in JS).
fn is_js_space(c: char) -> bool {
    c == '\u{feff}' || (c.is_whitespace() && c != '\u{85}')
}

/// `message.split('UserAgent:')[1].trim().replace(/'/g, '')`, or empty without a marker.
fn naive_user_agent(message: &str) -> String {
    match message.split("UserAgent:").nth(1) {
        Some(value) => value.trim_matches(is_js_space).replace('\'', ""),
        None => String::new(),
    }
}

/// `if (context.startsWith('/app/')) validate(context.split('?')[0].split('/app/')[1])`.
fn naive_app_id(context: &str) -> Option<String> {
    if !context.starts_with("/app/") {
        return None;
    }
    let before_query = context.split('?').next().unwrap_or_default();
    let id = before_query.split("/app/").nth(1).unwrap_or_default();
    naive_uuid(id).then(|| id.to_owned())
}

/// npm `uuid` `validate()`: `/^(?:[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}|nil|max)$/i`.
fn naive_uuid(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if lower == "00000000-0000-0000-0000-000000000000" || lower == "ffffffff-ffff-ffff-ffff-ffffffffffff" {
        return true;
    }
    let groups: Vec<&str> = lower.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
        && (b'1'..=b'8').contains(&groups[2].as_bytes()[0])
        && b"89ab".contains(&groups[3].as_bytes()[0])
}

// ---------------------------------------------------------------------------------------------------------------
// The seed table
// ---------------------------------------------------------------------------------------------------------------

/// One edge case and its expected outcome.
struct Seed {
    name: &'static str,
    input: Vec<u8>,
    want: Result<Parsed, RejectReason>,
}

fn seed(name: &'static str, input: impl AsRef<[u8]>, want: Result<Parsed, RejectReason>) -> Seed {
    Seed {
        name,
        input: input.as_ref().to_vec(),
        want,
    }
}

/// The baseline datagram every seed varies: source, host, command, directory, id, origin, context, message.
const CANON: [&str; 8] = [
    "/qseow-proxy-session/",
    "sense1",
    "Start session",
    "LAB",
    "goran",
    "Hub",
    "/hub/",
    "hi",
];

/// The parse of [`CANON`].
fn canon() -> Parsed {
    Parsed {
        source: Source::Session,
        command: Command::StartSession,
        fields: ["sense1", "Start session", "LAB", "goran", "Hub", "/hub/", "hi"].map(String::from),
        user_full: "LAB\\goran".to_owned(),
        user_agent: String::new(),
        app_id: None,
        invalid_utf8: false,
    }
}

/// `parts` joined with `;`.
fn dg<P: AsRef<[u8]>>(parts: &[P]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b';');
        }
        out.extend_from_slice(part.as_ref());
    }
    out
}

/// [`CANON`] with part `index` (0 = source, 7 = message) replaced by `value`.
fn canon_with(index: usize, value: impl AsRef<[u8]>) -> Vec<u8> {
    let mut parts: Vec<Vec<u8>> = CANON.iter().map(|p| p.as_bytes().to_vec()).collect();
    parts[index] = value.as_ref().to_vec();
    dg(&parts)
}

const GUID: &str = "a421f4a2-c311-4ef4-ba41-fe2e6a2b0d69";
const GUID_UPPER: &str = "A421F4A2-C311-4EF4-BA41-FE2E6A2B0D69";

/// The context `/app/<id><rest>` as a datagram.
fn app_context(id: &str, rest: &str) -> Vec<u8> {
    canon_with(6, format!("/app/{id}{rest}"))
}

fn ctx(id: &str, rest: &str) -> String {
    format!("/app/{id}{rest}")
}

fn seeds() -> Vec<Seed> {
    use Field::{Context, Host, Message, Origin, UserAgent, UserDirectory, UserFull, UserId};
    use RejectReason::{TooFewFields, UnknownSource};
    let x = |n: usize| "X".repeat(n);
    let ua_2000 = " UserAgent: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0.0.0 Safari/537.36'";
    vec![
        // --- framing -----------------------------------------------------------------------------------------
        seed("rejects_empty_datagram_as_unknown_source", b"", Err(UnknownSource)),
        seed(
            "rejects_datagram_of_only_separators_as_unknown_source",
            b";;;;;;;",
            Err(UnknownSource),
        ),
        seed(
            "rejects_known_source_without_separators_as_too_few_fields",
            b"/qseow-proxy-session/",
            Err(TooFewFields),
        ),
        seed(
            "rejects_datagram_with_fewer_than_seven_fields",
            dg(&CANON[..6]),
            Err(TooFewFields),
        ),
        seed(
            "rejects_fixture_16_datagram_with_three_fields_by_design",
            b"/qseow-proxy-session/;sense1.lab.example;Start session",
            Err(TooFewFields),
        ),
        seed(
            "checks_the_source_before_counting_fields",
            b"/qseow-proxy-foo/;a",
            Err(UnknownSource),
        ),
        seed(
            "accepts_exactly_seven_fields_with_an_empty_message",
            dg(&CANON[..7]),
            Ok(canon().set(Message, "")),
        ),
        seed(
            "accepts_a_seventh_separator_followed_by_nothing",
            [dg(&CANON[..7]), b";".to_vec()].concat(),
            Ok(canon().set(Message, "")),
        ),
        seed(
            "accepts_seven_empty_fields_after_a_known_source",
            b"/qseow-proxy-session/;;;;;;",
            Ok(Parsed {
                fields: Default::default(),
                command: Command::Other,
                user_full: "\\".into(),
                ..canon()
            }),
        ),
        seed(
            "keeps_semicolons_and_quotes_in_the_message",
            canon_with(
                7,
                "Start session for user 'LAB\\goran'; note: it's ; a 'quoted;part' ;;",
            ),
            Ok(canon().set(
                Message,
                "Start session for user 'LAB\\goran'; note: it's ; a 'quoted;part' ;;",
            )),
        ),
        // --- source --------------------------------------------------------------------------------------------
        seed(
            "accepts_upper_case_source",
            canon_with(0, "/QSEOW-PROXY-SESSION/"),
            Ok(canon()),
        ),
        seed(
            "accepts_connection_source",
            dg(&[
                "/qseow-proxy-connection/",
                "sense1",
                "Open connection",
                "LAB",
                "goran",
                "Hub",
                "/hub/",
                "hi",
            ]),
            Ok(canon()
                .source(Source::Connection)
                .command(Command::OpenConnection)
                .set(Field::Command, "Open connection")),
        ),
        seed(
            "accepts_source_without_slashes",
            canon_with(0, "qseow-proxy-session"),
            Ok(canon()),
        ),
        seed(
            "accepts_source_with_one_slash",
            canon_with(0, "/qseow-proxy-session"),
            Ok(canon()),
        ),
        seed(
            "removes_the_first_two_slashes_wherever_they_are",
            canon_with(0, "qseow/-proxy-session/"),
            Ok(canon()),
        ),
        seed(
            "rejects_source_with_a_third_slash",
            canon_with(0, "//qseow-proxy-session/"),
            Err(UnknownSource),
        ),
        seed(
            "rejects_source_with_a_leading_space",
            canon_with(0, " /qseow-proxy-session/"),
            Err(UnknownSource),
        ),
        seed(
            "rejects_unknown_proxy_source",
            canon_with(0, "/qseow-proxy-foo/"),
            Err(UnknownSource),
        ),
        seed(
            "rejects_source_with_a_no_break_space",
            canon_with(0, "/qseow-proxy-session/\u{a0}"),
            Err(UnknownSource),
        ),
        seed(
            "rejects_source_whose_unicode_lower_case_is_not_ascii",
            canon_with(0, "/QSEOW-PROXY-SESSİON/"),
            Err(UnknownSource),
        ),
        seed(
            "rejects_source_with_invalid_utf8",
            canon_with(0, b"/qseow-proxy-session/\xff"),
            Err(UnknownSource),
        ),
        // Butler SOS compares the *raw* field 0 (message-event.js sanitizes only when building msgObj).
        seed(
            "rejects_source_with_a_control_character_like_butler_sos",
            canon_with(0, "\t/qseow-proxy-session/"),
            Err(UnknownSource),
        ),
        // --- command -------------------------------------------------------------------------------------------
        seed(
            "classifies_stop_session",
            canon_with(2, "Stop session"),
            Ok(canon()
                .command(Command::StopSession)
                .set(Field::Command, "Stop session")),
        ),
        seed(
            "classifies_close_connection_without_cross_checking_the_source",
            canon_with(2, "Close connection"),
            Ok(canon()
                .command(Command::CloseConnection)
                .set(Field::Command, "Close connection")),
        ),
        seed(
            "keeps_unknown_command_as_other",
            canon_with(2, "Refresh session"),
            Ok(canon().command(Command::Other).set(Field::Command, "Refresh session")),
        ),
        seed(
            "compares_commands_case_sensitively",
            canon_with(2, "start session"),
            Ok(canon().command(Command::Other).set(Field::Command, "start session")),
        ),
        seed(
            "does_not_trim_commands",
            canon_with(2, "Start session "),
            Ok(canon().command(Command::Other).set(Field::Command, "Start session ")),
        ),
        seed(
            "classifies_the_command_after_removing_control_characters",
            canon_with(2, "Start session\r\n"),
            Ok(canon()),
        ),
        // --- control characters ---------------------------------------------------------------------------------
        seed(
            "removes_control_characters_from_every_field",
            dg::<&[u8]>(&[
                b"/qseow-proxy-session/",
                b"\tsen\x00se1\r",
                b"Start\x7f session\n",
                b"L\x01AB",
                b"go\x1fran\n",
                b"\rHub",
                b"/hub/\x7f",
                b"h\ti\r\n",
            ]),
            Ok(canon()),
        ),
        seed("removes_a_trailing_line_feed", canon_with(7, "hi\n"), Ok(canon())),
        seed(
            "keeps_c1_controls_and_unicode_spaces",
            canon_with(1, "sense\u{85}1\u{a0}\u{2028}"),
            Ok(canon().set(Host, "sense\u{85}1\u{a0}\u{2028}")),
        ),
        seed(
            "does_not_count_removed_control_characters_towards_the_limit",
            canon_with(1, format!("{}{}", "\t".repeat(50), "h".repeat(100))),
            Ok(canon().set(Host, "h".repeat(100))),
        ),
        // --- invalid UTF-8 ---------------------------------------------------------------------------------------
        seed(
            "replaces_invalid_utf8_in_the_user_id_and_notes_it",
            canon_with(4, b"go\xffran"),
            Ok(canon()
                .set(UserId, "go\u{fffd}ran")
                .set(UserFull, "LAB\\go\u{fffd}ran")
                .invalid_utf8()),
        ),
        seed(
            "replaces_a_truncated_four_byte_sequence_with_one_replacement_character",
            canon_with(4, b"a\xf0\x9f\x98b"),
            Ok(canon()
                .set(UserId, "a\u{fffd}b")
                .set(UserFull, "LAB\\a\u{fffd}b")
                .invalid_utf8()),
        ),
        seed(
            "replaces_each_byte_of_an_overlong_encoding",
            canon_with(4, b"a\xc0\xafb"),
            Ok(canon()
                .set(UserId, "a\u{fffd}\u{fffd}b")
                .set(UserFull, "LAB\\a\u{fffd}\u{fffd}b")
                .invalid_utf8()),
        ),
        seed(
            "replaces_each_byte_of_an_encoded_surrogate",
            canon_with(4, b"a\xed\xa0\x80b"),
            Ok(canon()
                .set(UserId, "a\u{fffd}\u{fffd}\u{fffd}b")
                .set(UserFull, "LAB\\a\u{fffd}\u{fffd}\u{fffd}b")
                .invalid_utf8()),
        ),
        seed(
            "replaces_a_sequence_cut_short_by_a_separator",
            canon_with(4, b"a\xe2\x82"),
            Ok(canon()
                .set(UserId, "a\u{fffd}")
                .set(UserFull, "LAB\\a\u{fffd}")
                .invalid_utf8()),
        ),
        seed(
            "counts_a_replacement_character_as_one_unit",
            canon_with(4, [0xffu8; 101]),
            Ok(canon()
                .set(UserId, "\u{fffd}".repeat(100))
                .set(UserFull, format!("LAB\\{}", "\u{fffd}".repeat(100)))
                .invalid_utf8()),
        ),
        seed(
            "notes_invalid_utf8_even_when_it_is_cut_away",
            canon_with(7, [x(1000).as_bytes(), b"\xff"].concat()),
            Ok(canon().set(Message, x(1000)).invalid_utf8()),
        ),
        // --- truncation in UTF-16 code units ---------------------------------------------------------------------
        seed(
            "keeps_a_host_of_exactly_100_units",
            canon_with(1, "h".repeat(100)),
            Ok(canon().set(Host, "h".repeat(100))),
        ),
        seed(
            "cuts_a_host_of_101_units_to_100",
            canon_with(1, "h".repeat(101)),
            Ok(canon().set(Host, "h".repeat(100))),
        ),
        seed(
            "keeps_an_emoji_ending_exactly_at_100_units",
            canon_with(1, format!("{}😀", "h".repeat(98))),
            Ok(canon().set(Host, format!("{}😀", "h".repeat(98)))),
        ),
        seed(
            "drops_an_emoji_straddling_100_units_whole",
            canon_with(1, format!("{}😀", "h".repeat(99))),
            Ok(canon().set(Host, "h".repeat(99))),
        ),
        seed(
            "counts_units_not_bytes",
            canon_with(1, "é".repeat(101)),
            Ok(canon().set(Host, "é".repeat(100))),
        ),
        seed(
            "cuts_the_user_directory_before_building_user_full",
            canon_with(3, "D".repeat(150)),
            Ok(canon()
                .set(UserDirectory, "D".repeat(100))
                .set(UserFull, format!("{}\\goran", "D".repeat(100)))),
        ),
        seed(
            "cuts_the_command_to_100_units",
            canon_with(2, "C".repeat(101)),
            Ok(canon().command(Command::Other).set(Field::Command, "C".repeat(100))),
        ),
        seed(
            "keeps_an_origin_of_exactly_200_units",
            canon_with(5, "o".repeat(200)),
            Ok(canon().set(Origin, "o".repeat(200))),
        ),
        seed(
            "cuts_an_origin_of_201_units_to_200",
            canon_with(5, "o".repeat(201)),
            Ok(canon().set(Origin, "o".repeat(200))),
        ),
        seed(
            "drops_an_emoji_straddling_200_units_whole",
            canon_with(5, format!("{}😀", "o".repeat(199))),
            Ok(canon().set(Origin, "o".repeat(199))),
        ),
        seed(
            "keeps_a_context_of_exactly_500_units",
            canon_with(6, format!("/hub/{}", "c".repeat(495))),
            Ok(canon().set(Context, format!("/hub/{}", "c".repeat(495)))),
        ),
        seed(
            "drops_an_emoji_straddling_500_units_whole",
            canon_with(6, format!("/hub/{}😀", "c".repeat(494))),
            Ok(canon().set(Context, format!("/hub/{}", "c".repeat(494)))),
        ),
        seed(
            "keeps_a_message_of_exactly_1000_units",
            canon_with(7, x(1000)),
            Ok(canon().set(Message, x(1000))),
        ),
        seed(
            "cuts_a_message_of_1001_units_to_1000",
            canon_with(7, x(1001)),
            Ok(canon().set(Message, x(1000))),
        ),
        seed(
            "keeps_an_emoji_ending_exactly_at_1000_units",
            canon_with(7, format!("{}😀", x(998))),
            Ok(canon().set(Message, format!("{}😀", x(998)))),
        ),
        seed(
            "drops_an_emoji_straddling_1000_units_whole",
            canon_with(7, format!("{}😀", x(999))),
            Ok(canon().set(Message, x(999))),
        ),
        seed(
            "loses_the_user_agent_at_the_end_of_a_2000_byte_message",
            canon_with(7, format!("{}{ua_2000}", x(2000 - ua_2000.len()))),
            Ok(canon().set(Message, x(1000))),
        ),
        seed(
            "takes_the_user_agent_from_the_cut_message",
            canon_with(7, format!("{}UserAgent: Mozilla/5.0 (Windows)", x(980))),
            Ok(canon()
                .set(Message, format!("{}UserAgent: Mozilla/5", x(980)))
                .set(UserAgent, "Mozilla/5")),
        ),
        // --- user agent ----------------------------------------------------------------------------------------
        seed(
            "extracts_a_quoted_user_agent",
            canon_with(7, "connection Opened. UserAgent: 'Mozilla/5.0 (X11; Linux x86_64)'"),
            Ok(canon()
                .set(
                    Message,
                    "connection Opened. UserAgent: 'Mozilla/5.0 (X11; Linux x86_64)'",
                )
                .set(UserAgent, "Mozilla/5.0 (X11; Linux x86_64)")),
        ),
        seed(
            "extracts_an_unquoted_user_agent",
            canon_with(7, "x. UserAgent: Mozilla/5.0 (Macintosh)"),
            Ok(canon()
                .set(Message, "x. UserAgent: Mozilla/5.0 (Macintosh)")
                .set(UserAgent, "Mozilla/5.0 (Macintosh)")),
        ),
        seed(
            "extracts_an_empty_user_agent_from_two_quotes",
            canon_with(7, "connection Opened. UserAgent: ''"),
            Ok(canon().set(Message, "connection Opened. UserAgent: ''")),
        ),
        seed(
            "stops_the_user_agent_at_a_second_marker",
            canon_with(7, "UserAgent: 'first' UserAgent: 'second'"),
            Ok(canon()
                .set(Message, "UserAgent: 'first' UserAgent: 'second'")
                .set(UserAgent, "first")),
        ),
        seed(
            "trims_javascript_whitespace_around_the_user_agent",
            canon_with(7, "UserAgent:\u{a0} \u{3000}\u{feff}'Moz'\u{2028} \u{a0}"),
            Ok(canon()
                .set(Message, "UserAgent:\u{a0} \u{3000}\u{feff}'Moz'\u{2028} \u{a0}")
                .set(UserAgent, "Moz")),
        ),
        seed(
            "removes_quotes_after_trimming_so_inner_spaces_stay",
            canon_with(7, "UserAgent: ' Moz '"),
            Ok(canon().set(Message, "UserAgent: ' Moz '").set(UserAgent, " Moz ")),
        ),
        seed(
            "does_not_trim_next_line_from_the_user_agent",
            canon_with(7, "UserAgent:\u{85}Moz"),
            Ok(canon().set(Message, "UserAgent:\u{85}Moz").set(UserAgent, "\u{85}Moz")),
        ),
        seed(
            "removes_every_quote_inside_the_user_agent",
            canon_with(7, "UserAgent: 'it''s'"),
            Ok(canon().set(Message, "UserAgent: 'it''s'").set(UserAgent, "its")),
        ),
        seed(
            "removes_a_tab_before_the_user_agent_while_sanitizing",
            canon_with(7, "UserAgent:\t'Moz'"),
            Ok(canon().set(Message, "UserAgent:'Moz'").set(UserAgent, "Moz")),
        ),
        seed(
            "ignores_a_user_agent_marker_in_another_case",
            canon_with(7, "useragent: Moz"),
            Ok(canon().set(Message, "useragent: Moz")),
        ),
        seed(
            "yields_an_empty_user_agent_for_a_final_marker",
            canon_with(7, "UserAgent:"),
            Ok(canon().set(Message, "UserAgent:")),
        ),
        // --- app id --------------------------------------------------------------------------------------------
        seed(
            "takes_a_lower_case_app_id_before_the_query",
            app_context(GUID, "?reloaduri=https%3a%2f%2fx"),
            Ok(canon().set(Context, ctx(GUID, "?reloaduri=https%3a%2f%2fx")).app(GUID)),
        ),
        seed(
            "takes_an_upper_case_app_id_unchanged",
            app_context(GUID_UPPER, "?reloaduri=x"),
            Ok(canon().set(Context, ctx(GUID_UPPER, "?reloaduri=x")).app(GUID_UPPER)),
        ),
        seed(
            "takes_an_app_id_without_a_query",
            app_context(GUID, ""),
            Ok(canon().set(Context, ctx(GUID, "")).app(GUID)),
        ),
        seed(
            "takes_an_app_id_before_an_empty_query",
            app_context(GUID, "?"),
            Ok(canon().set(Context, ctx(GUID, "?")).app(GUID)),
        ),
        seed(
            "takes_the_app_id_before_a_query_holding_another_app_marker",
            app_context(GUID, "?reloaduri=/app/x"),
            Ok(canon().set(Context, ctx(GUID, "?reloaduri=/app/x")).app(GUID)),
        ),
        seed(
            "rejects_app_id_followed_by_a_sheet_path",
            app_context(GUID, "/sheet/x"),
            Ok(canon().set(Context, ctx(GUID, "/sheet/x"))),
        ),
        // Butler SOS: `context.split('?')[0].split('/app/')[1]` stops at a second `/app/`.
        seed(
            "takes_the_app_id_up_to_a_second_app_marker_like_butler_sos",
            app_context(GUID, "/app/other"),
            Ok(canon().set(Context, ctx(GUID, "/app/other")).app(GUID)),
        ),
        seed(
            "needs_the_leading_app_prefix",
            canon_with(6, format!("app/{GUID}")),
            Ok(canon().set(Context, format!("app/{GUID}"))),
        ),
        seed(
            "needs_the_app_prefix_in_lower_case",
            canon_with(6, format!("/APP/{GUID}")),
            Ok(canon().set(Context, format!("/APP/{GUID}"))),
        ),
        seed(
            "rejects_version_nibble_9",
            app_context("a421f4a2-c311-9ef4-ba41-fe2e6a2b0d69", ""),
            Ok(canon().set(Context, ctx("a421f4a2-c311-9ef4-ba41-fe2e6a2b0d69", ""))),
        ),
        seed(
            "rejects_version_nibble_0",
            app_context("a421f4a2-c311-0ef4-ba41-fe2e6a2b0d69", ""),
            Ok(canon().set(Context, ctx("a421f4a2-c311-0ef4-ba41-fe2e6a2b0d69", ""))),
        ),
        seed(
            "accepts_version_nibble_8_and_variant_8",
            app_context("a421f4a2-c311-8ef4-8a41-fe2e6a2b0d69", ""),
            Ok(canon()
                .set(Context, ctx("a421f4a2-c311-8ef4-8a41-fe2e6a2b0d69", ""))
                .app("a421f4a2-c311-8ef4-8a41-fe2e6a2b0d69")),
        ),
        seed(
            "accepts_version_nibble_1_and_upper_case_variant_b",
            app_context("a421f4a2-c311-1ef4-Ba41-fe2e6a2b0d69", ""),
            Ok(canon()
                .set(Context, ctx("a421f4a2-c311-1ef4-Ba41-fe2e6a2b0d69", ""))
                .app("a421f4a2-c311-1ef4-Ba41-fe2e6a2b0d69")),
        ),
        seed(
            "rejects_variant_c",
            app_context("a421f4a2-c311-4ef4-ca41-fe2e6a2b0d69", ""),
            Ok(canon().set(Context, ctx("a421f4a2-c311-4ef4-ca41-fe2e6a2b0d69", ""))),
        ),
        seed(
            "rejects_variant_7",
            app_context("a421f4a2-c311-4ef4-7a41-fe2e6a2b0d69", ""),
            Ok(canon().set(Context, ctx("a421f4a2-c311-4ef4-7a41-fe2e6a2b0d69", ""))),
        ),
        seed(
            "accepts_the_nil_uuid",
            app_context("00000000-0000-0000-0000-000000000000", ""),
            Ok(canon()
                .set(Context, ctx("00000000-0000-0000-0000-000000000000", ""))
                .app("00000000-0000-0000-0000-000000000000")),
        ),
        seed(
            "accepts_the_max_uuid_in_any_case",
            app_context("FFFFFFFF-ffff-FFFF-ffff-FFFFFFFFFFFF", "?x"),
            Ok(canon()
                .set(Context, ctx("FFFFFFFF-ffff-FFFF-ffff-FFFFFFFFFFFF", "?x"))
                .app("FFFFFFFF-ffff-FFFF-ffff-FFFFFFFFFFFF")),
        ),
        seed(
            "rejects_an_app_id_in_braces",
            app_context(&format!("{{{GUID}}}"), ""),
            Ok(canon().set(Context, ctx(&format!("{{{GUID}}}"), ""))),
        ),
        seed(
            "rejects_an_app_id_without_hyphens",
            app_context("a421f4a2c3114ef4ba41fe2e6a2b0d69", ""),
            Ok(canon().set(Context, ctx("a421f4a2c3114ef4ba41fe2e6a2b0d69", ""))),
        ),
        seed(
            "rejects_an_app_id_one_digit_too_long",
            app_context(GUID, "0"),
            Ok(canon().set(Context, ctx(GUID, "0"))),
        ),
        seed(
            "rejects_fixture_8_invalid_app_id",
            app_context("not-a-valid-guid-1234", "?reloaduri=https%3a%2f%2fx"),
            Ok(canon().set(Context, ctx("not-a-valid-guid-1234", "?reloaduri=https%3a%2f%2fx"))),
        ),
        seed(
            "takes_an_app_id_whose_control_character_was_removed",
            app_context("a421f4a2-c311-4ef4-ba41-fe2e6a2b0d6\t9", ""),
            Ok(canon().set(Context, ctx(GUID, "")).app(GUID)),
        ),
        seed(
            "takes_the_app_id_from_a_context_cut_to_500_units",
            app_context(GUID, &format!("?{}", "q".repeat(600))),
            Ok(canon()
                .set(Context, ctx(GUID, &format!("?{}", "q".repeat(458))))
                .app(GUID)),
        ),
        // --- userFull ------------------------------------------------------------------------------------------
        seed(
            "builds_user_full_with_an_empty_directory",
            canon_with(3, ""),
            Ok(canon().set(UserDirectory, "").set(UserFull, "\\goran")),
        ),
        seed(
            "builds_user_full_with_an_empty_user_id",
            canon_with(4, ""),
            Ok(canon().set(UserId, "").set(UserFull, "LAB\\")),
        ),
    ]
}

/// A datagram that fills every part of an event, to check that a reused event keeps nothing from it.
fn dirty_datagram() -> Vec<u8> {
    dg(&[
        "/qseow-proxy-connection/".to_owned(),
        "h".repeat(100),
        "Close connection".to_owned(),
        "DIRECTORY".repeat(20),
        "u".repeat(200),
        "o".repeat(300),
        format!("/app/{GUID}?{}", "q".repeat(600)),
        format!("{}UserAgent: 'Mozilla/5.0 {}'", "m".repeat(500), "z".repeat(600)),
    ])
}

#[test]
fn every_seed_parses_to_its_expected_outcome_fresh_and_with_a_reused_event() {
    let mut reused = Event::new();
    parse_into(&dirty_datagram(), &mut reused).expect("the dirty datagram parses");
    let mut failures = String::new();
    for s in seeds() {
        let fresh = parse(&s.input);
        let again = parse_reusing(&mut reused, &s.input);
        if fresh != s.want {
            let _ = writeln!(
                failures,
                "{}\n  input: {}\n  want:  {:?}\n  got:   {:?}\n",
                s.name,
                s.input.escape_ascii(),
                s.want,
                fresh
            );
        } else if again != s.want {
            let _ = writeln!(
                failures,
                "{} (reused event)\n  want: {:?}\n  got:  {:?}\n",
                s.name, s.want, again
            );
        }
        if again.is_ok() {
            if let Err(e) = check_invariants(&reused) {
                let _ = writeln!(failures, "{}: invariant broken: {e}", s.name);
            }
        }
    }
    assert!(failures.is_empty(), "seeds that failed:\n\n{failures}");
}

#[test]
fn naive_reference_agrees_with_every_seed() {
    let mut failures = String::new();
    for s in seeds() {
        let naive = naive_parse(&s.input);
        if naive != s.want {
            let _ = writeln!(failures, "{}\n  want:  {:?}\n  naive: {:?}\n", s.name, s.want, naive);
        }
    }
    assert!(
        failures.is_empty(),
        "the naive reference disagrees with the seed table:\n\n{failures}"
    );
}

#[test]
fn seed_names_are_unique() {
    let mut names: Vec<&str> = seeds().iter().map(|s| s.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "duplicate seed names");
}

// ---------------------------------------------------------------------------------------------------------------
// Invariants and properties
// ---------------------------------------------------------------------------------------------------------------

/// What every successful parse guarantees (documented on [`Event`] and in the module docs).
fn check_invariants(event: &Event) -> Result<(), TestCaseError> {
    for field in Field::DATAGRAM {
        let text = event.get(field);
        prop_assert!(
            text.encode_utf16().count() <= field.max_units(),
            "{field:?} is longer than {} units",
            field.max_units()
        );
        prop_assert!(
            !text.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}'),
            "{field:?} holds a control character"
        );
    }
    let full = format!("{}\\{}", event.get(Field::UserDirectory), event.get(Field::UserId));
    prop_assert_eq!(event.get(Field::UserFull), full.as_str());
    prop_assert_eq!(event.command, Command::classify(event.get(Field::Command)));
    if let Some(id) = event.app_id() {
        let context = event.get(Field::Context);
        let (start, end) = (context.as_ptr() as usize, context.as_ptr() as usize + context.len());
        let at = id.as_ptr() as usize;
        prop_assert!(
            start <= at && at + id.len() <= end,
            "the app id is not a sub-span of the context"
        );
        prop_assert!(is_npm_uuid(id));
    }
    Ok(())
}

/// `parse_into` (into a reused, dirty event) equals the naive reference, and the invariants hold.
fn check_against_naive(event: &mut Event, datagram: &[u8]) -> Result<(), TestCaseError> {
    let got = parse_reusing(event, datagram);
    let want = naive_parse(datagram);
    prop_assert_eq!(&got, &want, "datagram: b\"{}\"", datagram.escape_ascii());
    if got.is_ok() {
        check_invariants(event)?;
    }
    Ok(())
}

fn config(cases: u32) -> ProptestConfig {
    // No regression files: this module may only write its own source file.
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Sources Butler SOS accepts.
const GOOD_SOURCES: &[&str] = &[
    "/qseow-proxy-session/",
    "/qseow-proxy-connection/",
    "/QSEOW-PROXY-SESSION/",
    "/Qseow-Proxy-Connection/",
    "qseow-proxy-session",
    "qseow-proxy-connection/",
    "qseow/-proxy-session/",
    "//qseow-proxy-session",
];
/// Sources Butler SOS rejects, some only because it compares field 0 before sanitising it.
const BAD_SOURCES: &[&str] = &[
    "///qseow-proxy-session",
    "/qseow-proxy-foo/",
    " /qseow-proxy-session/",
    "/qseow-proxy-session/ ",
    "/qseow-proxy-session/\n",
    "\t/qseow-proxy-connection/",
    "/qseow-proxy-sess\u{1}ion/",
    "/qseow-proxy-session/\u{7f}",
    "/QSEOW-PROXY-SESSİON/",
    "/qseow-proxy-ſession/",
    "/qseow-proxy-session/\u{a0}",
    "\u{feff}/qseow-proxy-session/",
    "",
];
const CONTROLS: &[u8] = &[0x00, b'\t', b'\n', b'\r', 0x01, 0x1f, 0x7f];
const MULTI_BYTE: &[&str] = &[
    "é", "€", "😀", "\u{a0}", "\u{feff}", "\u{85}", "\u{2028}", "\u{3000}", "İ", "\u{212a}", "\u{fffd}",
];
const INVALID_UTF8: &[&[u8]] = &[
    b"\xff",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf0\x9f\x98",
    b"\xe2\x82",
    b"\x80",
    b"\xf4\x90\x80\x80",
];
/// Long runs that reach the field limits (in UTF-16 units: 1, 1, 2, 1, 1, 1 per repetition; the last is U+FFFD).
const RUNS: &[&[u8]] = &[b"x", "é".as_bytes(), "😀".as_bytes(), b"'", b" ", b"\xff"];
/// Run lengths at and around the four limits.
const NEAR_LIMITS: &[usize] = &[98, 99, 100, 101, 199, 200, 201, 499, 500, 501, 999, 1000, 1001];
const SOUP_BYTES: &[u8] = &[0xf0, 0x9f, 0x98, 0x80, 0xc3, 0xa9, b'\'', b'?', b'/', b'\t'];
const UA_BITS: &[&str] = &[
    " ",
    "'",
    "''",
    "\u{a0}",
    "\u{feff}",
    "\u{85}",
    "\u{2028}",
    "\t",
    "Mozilla/5.0 (X11; Linux x86_64)",
    "Chrome/124.0",
    "UserAgent:",
    "😀",
];
const APP_SUFFIXES: &[&str] = &[
    "",
    "?",
    "?reloaduri=x",
    "/sheet/x",
    "/app/",
    "/app/x",
    "?a=/app/b",
    "\t",
    "0",
    "/",
];
const SPECIAL_GUIDS: &[&str] = &[
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
    "{a421f4a2-c311-4ef4-ba41-fe2e6a2b0d69}",
    "a421f4a2c3114ef4ba41fe2e6a2b0d69",
    "a421f4a2-c311-4ef4-ba41-fe2e6a2b0d6",
    "a421f4a2-c311-4ef4-ba41-fe2e6a2b0d699",
    "a421f4a2-c311-4ef4-ba41-fe2e6a2b0d6😀",
];

/// A UUID-like string: mostly well formed with random case, version and variant; sometimes special or noise.
fn guid() -> impl Strategy<Value = String> {
    let version = prop_oneof![3 => "[1-8]", 1 => "[0-9a-fA-F]"];
    let variant = prop_oneof![3 => "[89abAB]", 1 => "[0-9a-fA-F]"];
    prop_oneof![
        6 => ("[0-9a-fA-F]{8}", "[0-9a-fA-F]{4}", version, "[0-9a-fA-F]{3}", variant, "[0-9a-fA-F]{3}", "[0-9a-fA-F]{12}")
            .prop_map(|(a, b, v, c, r, d, e)| format!("{a}-{b}-{v}{c}-{r}{d}-{e}")),
        1 => prop::sample::select(SPECIAL_GUIDS).prop_map(String::from),
        1 => "[0-9a-fA-F{}-]{34,38}",
    ]
}

/// A piece of a field: plain text, separators, quotes, controls, multi-byte chars, invalid UTF-8, markers, long
/// runs that reach the limits.
fn atom() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => "[a-zA-Z0-9 .:/?=-]{1,8}".prop_map(String::into_bytes),
        2 => Just(b";".to_vec()),
        2 => Just(b"'".to_vec()),
        2 => prop::sample::select(CONTROLS).prop_map(|c| vec![c]),
        3 => prop::sample::select(MULTI_BYTE).prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::sample::select(INVALID_UTF8).prop_map(<[u8]>::to_vec),
        2 => Just(b"UserAgent:".to_vec()),
        1 => Just(b"/app/".to_vec()),
        1 => guid().prop_map(String::into_bytes),
        1 => (prop_oneof![0usize..1100, prop::sample::select(NEAR_LIMITS)], prop::sample::select(RUNS))
            .prop_map(|(n, run)| run.repeat(n)),
    ]
}

/// A field: a few atoms, or one printable ASCII character repeated to around a limit.
fn field() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(atom(), 0..6).prop_map(|atoms| atoms.concat()),
        1 => (prop::sample::select(NEAR_LIMITS), "[ -~]").prop_map(|(n, c)| c.repeat(n).into_bytes()),
    ]
}

/// A field before the context: like [`field`], but four times in five without `;`, so the context and the message
/// usually land in their own slots.
fn head_field() -> impl Strategy<Value = Vec<u8>> {
    (field(), 0..5u8).prop_map(|(mut f, keep)| {
        if keep > 0 {
            f.iter_mut().filter(|b| **b == b';').for_each(|b| *b = b',');
        }
        f
    })
}

fn source() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::sample::select(GOOD_SOURCES).prop_map(|s| s.as_bytes().to_vec()),
        3 => prop::sample::select(BAD_SOURCES).prop_map(|s| s.as_bytes().to_vec()),
        1 => field(),
    ]
}

fn context() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (guid(), prop::sample::select(APP_SUFFIXES), guid(), prop::option::of(field())).prop_map(
            |(id, suffix, other, query)| {
                let mut c = format!("/app/{id}{suffix}").into_bytes();
                if suffix.ends_with("/app/") {
                    c.extend_from_slice(other.as_bytes());
                }
                if let Some(query) = query {
                    c.push(b'?');
                    c.extend(query);
                }
                c
            }
        ),
        1 => field(),
    ]
}

fn user_agent_body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(UA_BITS), 0..8).prop_map(|bits| bits.concat().into_bytes())
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => field(),
        2 => (field(), user_agent_body(), field()).prop_map(|(a, ua, b)| [a, b"UserAgent:".to_vec(), ua, b].concat()),
        1 => (975usize..1005, user_agent_body())
            .prop_map(|(n, ua)| ["X".repeat(n).into_bytes(), b"UserAgent:".to_vec(), ua].concat()),
    ]
}

/// A mostly valid datagram: a source (mostly one Butler SOS accepts), usually seven or more fields, a context that usually
/// starts with `/app/`, a message that often carries a user agent. Fields may hold `;`, so the count varies.
fn structured_datagram() -> impl Strategy<Value = Vec<u8>> {
    let count = prop_oneof![1 => 0usize..7, 6 => 7usize..10];
    (
        source(),
        count.prop_flat_map(|n| prop::collection::vec(head_field(), n)),
        context(),
        message(),
    )
        .prop_map(|(source, mut fields, context, message)| {
            if fields.len() > 5 {
                fields[5] = context;
            }
            if fields.len() > 6 {
                fields[6] = message;
            }
            let mut d = source;
            for f in fields {
                d.push(b';');
                d.extend(f);
            }
            d
        })
}

/// Byte soup, alone or after a source and a separator.
fn arbitrary_datagram() -> impl Strategy<Value = Vec<u8>> {
    let soup_byte = prop_oneof![
        4 => any::<u8>(),
        2 => Just(b';'),
        1 => prop::sample::select(SOUP_BYTES),
    ];
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..400),
        2 => (prop::sample::select(GOOD_SOURCES), prop::collection::vec(soup_byte, 0..400))
            .prop_map(|(s, soup)| [s.as_bytes(), b";", &soup].concat()),
    ]
}

/// Up to 70,000 bytes, random or with a valid head and many separators.
fn huge_datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..70_000),
        (
            structured_datagram(),
            prop::collection::vec(prop_oneof![any::<u8>(), Just(b';')], 0..70_000)
        )
            .prop_map(|(head, tail)| {
                let mut d = [head, tail].concat();
                d.truncate(70_000);
                d
            }),
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn parser_matches_naive_reference_on_arbitrary_bytes(datagram in arbitrary_datagram()) {
        let mut event = Event::new();
        parse_into(&dirty_datagram(), &mut event).unwrap();
        check_against_naive(&mut event, &datagram)?;
    }

    #[test]
    fn parser_matches_naive_reference_on_mostly_valid_datagrams(datagram in structured_datagram()) {
        let mut event = Event::new();
        parse_into(&dirty_datagram(), &mut event).unwrap();
        check_against_naive(&mut event, &datagram)?;
    }

    #[test]
    fn npm_uuid_check_matches_the_naive_regex(s in prop_oneof![3 => guid(), 1 => "\\PC{0,40}"]) {
        prop_assert_eq!(is_npm_uuid(&s), naive_uuid(&s), "{:?}", s);
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn parser_never_panics_on_datagrams_up_to_70000_bytes(datagram in huge_datagram()) {
        let mut event = Event::new();
        if parse_into(&datagram, &mut event).is_ok() {
            check_invariants(&event)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Golden fixtures
// ---------------------------------------------------------------------------------------------------------------

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/butler-sos");

/// Cases Butler SOS drops or we reject by design, by case-name prefix. Fixture 16: Butler SOS fills missing fields
/// with `undefined` and publishes; we reject it (fixtures README, last section).
const GOLDEN_REJECTS: [(&str, RejectReason); 3] = [
    ("15_", RejectReason::UnknownSource),
    ("16_", RejectReason::TooFewFields),
    ("34_", RejectReason::UnknownSource),
];

use crate::testing::base64_decode;

/// Checks one fixture file; returns what differs.
fn check_fixture(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let fixture: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let case = fixture["case"].as_str().ok_or("no case name")?;
    let input = &fixture["input"];
    let bytes = base64_decode(input["bytes_b64"].as_str().ok_or("no input.bytes_b64")?);

    // The decoder and the fixture agree with themselves.
    if Some(bytes.len() as u64) != input["length_bytes"].as_u64() {
        return Err(format!(
            "decoded {} bytes, fixture says {}",
            bytes.len(),
            input["length_bytes"]
        ));
    }
    let valid = std::str::from_utf8(&bytes).is_ok();
    if Some(valid) != input["utf8_valid"].as_bool() {
        return Err("input.utf8_valid disagrees with the bytes".into());
    }
    if valid && input["text"].as_str().map(str::as_bytes) != Some(&bytes[..]) {
        return Err("input.text disagrees with input.bytes_b64".into());
    }

    let got = parse(&bytes);
    let naive = naive_parse(&bytes);
    if got != naive {
        return Err(format!(
            "parser and naive reference differ:\n  parser: {got:?}\n  naive:  {naive:?}"
        ));
    }

    let logged_unknown = fixture["engine_log_debug_level"].as_array().is_some_and(|lines| {
        lines
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("not a recognised user event")))
    });
    let listed = GOLDEN_REJECTS
        .iter()
        .find(|(prefix, _)| case.starts_with(prefix))
        .map(|&(_, reason)| reason);
    let reject = listed.or(logged_unknown.then_some(RejectReason::UnknownSource));
    if let Some(reason) = reject {
        return match got {
            Err(r) if r == reason => Ok(()),
            other => Err(format!("want Err({reason:?}), got {other:?}")),
        };
    }

    let event = got.map_err(|e| format!("rejected with {e:?}, but Butler SOS accepted it"))?;
    let mqtt = fixture["expected"]["mqtt"].as_array().ok_or("no expected.mqtt")?;
    let Some(first) = mqtt.first() else {
        // Case 13: the excluded user parses fine; exclusion happens later in the pipeline.
        return Ok(());
    };
    let payload = &first["payload_json"];
    let mut diffs = Vec::new();
    let mut compare = |key: &str, got: Option<&str>| {
        let want = payload.get(key).and_then(Value::as_str);
        if want != got {
            diffs.push(format!("{key}: want {want:?}, got {got:?}"));
        }
    };
    compare("messageType", Some(event.source.as_str()));
    let [host, command, dir, id, origin, context, message] = &event.fields;
    compare("host", Some(host.as_str()));
    compare("command", Some(command.as_str()));
    compare("userDir", Some(dir.as_str()));
    compare("userId", Some(id.as_str()));
    compare("origin", Some(origin.as_str()));
    compare("context", Some(context.as_str()));
    compare("message", Some(message.as_str()));
    compare("appId", event.app_id.as_deref());
    if payload.get("uaBrowserName").is_some() && event.user_agent.is_empty() {
        diffs.push("Butler SOS parsed a browser, but the user agent is empty".into());
    }
    if !message.contains("UserAgent:") && !event.user_agent.is_empty() {
        diffs.push("a user agent without a marker".into());
    }
    // userFull is visible in InfluxDB points and in New Relic (unscrambled run).
    for point in fixture["expected"]["influxdb_v1"]["points"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(want) = point["tags"]["userFull"].as_str() {
            if want != event.user_full {
                diffs.push(format!("InfluxDB userFull: want {want:?}, got {:?}", event.user_full));
            }
        }
    }
    for request in fixture["expected"]["newrelic"]["scramble_false"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(want) = request["body_json"]["qs_userFull"].as_str() {
            if want != event.user_full {
                diffs.push(format!(
                    "New Relic qs_userFull: want {want:?}, got {:?}",
                    event.user_full
                ));
            }
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n  "))
    }
}

#[test]
fn parses_every_golden_fixture_as_butler_sos_published_it() {
    let mut paths: Vec<_> = std::fs::read_dir(FIXTURES)
        .unwrap_or_else(|e| panic!("cannot read {FIXTURES}: {e}"))
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with(|c: char| c.is_ascii_digit()) && name.ends_with(".json")
        })
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 20,
        "expected the golden fixtures in {FIXTURES}, found {}",
        paths.len()
    );
    let mut failures = String::new();
    for path in &paths {
        if let Err(diff) = check_fixture(path) {
            let _ = writeln!(failures, "{}:\n  {diff}\n", path.display());
        }
    }
    assert!(failures.is_empty(), "golden fixtures that failed:\n\n{failures}");
}

#[test]
fn golden_rejects_are_the_documented_cases() {
    // 15 and 34 are unknown sources Butler SOS drops; 16 it accepted and we reject by design.
    for (prefix, reason) in GOLDEN_REJECTS {
        let path = std::fs::read_dir(FIXTURES)
            .expect("fixtures directory")
            .map(|e| e.expect("entry").path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no fixture {prefix}*"));
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("readable")).expect("JSON");
        let mqtt = fixture["expected"]["mqtt"].as_array().map_or(0, Vec::len);
        match reason {
            RejectReason::TooFewFields => assert!(mqtt > 0, "{prefix}: Butler SOS published fixture 16"),
            _ => assert_eq!(mqtt, 0, "{prefix}: Butler SOS published nothing"),
        }
    }
}

#[test]
fn printable_ascii_check_finds_a_bad_byte_at_any_position() {
    for len in [0usize, 1, 31, 32, 33, 64, 95, 200] {
        let ok = vec![b'a'; len];
        assert!(super::is_printable_ascii(&ok), "len {len}");
        for pos in 0..len {
            for bad in [0x00u8, 0x1f, 0x7f, 0x80, 0xff] {
                let mut v = ok.clone();
                v[pos] = bad;
                assert!(!super::is_printable_ascii(&v), "len {len} pos {pos} byte {bad:#x}");
            }
            for good in [0x20u8, b'~'] {
                let mut v = ok.clone();
                v[pos] = good;
                assert!(super::is_printable_ascii(&v));
            }
        }
    }
}

#[test]
fn separators_are_found_at_every_offset_and_stop_at_seven() {
    for len in 0usize..40 {
        for mask in [
            0u64,
            1,
            0b1010_1010,
            u64::MAX,
            0x8000_0001_0000_8001,
            0x0f0f_f0f0_1234_5678,
        ] {
            let d: Vec<u8> = (0..len)
                .map(|i| {
                    if mask >> (i % 64) & 1 == 1 {
                        b';'
                    } else {
                        b'x' + (i % 3) as u8
                    }
                })
                .collect();
            let want: Vec<usize> = d
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b';')
                .map(|(i, _)| i)
                .take(7)
                .collect();
            let mut seps = [0usize; 7];
            let n = super::find_separators(&d, &mut seps);
            assert_eq!(&seps[..n], &want[..], "len {len} mask {mask:#x}");
        }
    }
    // Bytes next to ';' in value (0x3a, 0x3c, 0xbb) must not be taken for it.
    let d = [0x3a, 0x3c, 0xbb, b';', 0x3b ^ 0x80, 0x00, 0xff, b';', 1, 2];
    let mut seps = [0usize; 7];
    assert_eq!(super::find_separators(&d, &mut seps), 2);
    assert_eq!(&seps[..2], &[3, 7]);
}
