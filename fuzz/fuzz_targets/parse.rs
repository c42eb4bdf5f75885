//! Arbitrary bytes into `sense_ingest::parse::parse_into`, reusing one event across inputs the way a reader
//! reuses the events of a recycled slab.
//!
//! Checked on every input: no panic. On `Ok`, the invariants documented on `Event` and in `parse`:
//! - each of the seven datagram fields is at most `Field::max_units` UTF-16 code units and holds no C0 control
//!   character and no DEL;
//! - `userFull` is `<directory>\<id>`;
//! - the user agent holds no control character and no `'`, and is no longer than the message;
//! - the app id, when set, passes `is_npm_uuid` and sits right after the context's leading `/app/`;
//! - the reused event holds exactly what a fresh event gets for the same bytes (nothing of the previous input leaks
//!   into the next).

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use sense_ingest::event::{Event, Field};
use sense_ingest::parse::{is_npm_uuid, parse_into};

thread_local! {
    /// The one event every input is parsed into.
    static REUSED: RefCell<Event> = RefCell::new(Event::new());
}

/// True for the characters the parser must have removed (U+0000-U+001F and U+007F).
fn is_removed_control(c: char) -> bool {
    (c as u32) < 0x20 || c == '\u{7f}'
}

fn utf16_units(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Every field of `event` as owned text, for comparing two parses.
fn snapshot(event: &Event) -> (Vec<String>, Option<String>) {
    let fields = Field::DATAGRAM
        .iter()
        .chain(&[Field::UserFull, Field::UserAgent])
        .map(|f| event.get(*f).to_owned())
        .collect();
    (fields, event.app_id().map(str::to_owned))
}

fn check(data: &[u8], event: &Event) {
    for field in Field::DATAGRAM {
        let text = event.get(field);
        assert!(
            utf16_units(text) <= field.max_units(),
            "{field:?} has {} UTF-16 units, more than {}: {text:?}",
            utf16_units(text),
            field.max_units()
        );
        assert!(
            !text.chars().any(is_removed_control),
            "{field:?} holds a control character: {text:?}"
        );
    }
    let full = format!("{}\\{}", event.get(Field::UserDirectory), event.get(Field::UserId));
    assert_eq!(event.get(Field::UserFull), full);

    let agent = event.get(Field::UserAgent);
    assert!(
        !agent.chars().any(is_removed_control),
        "user agent holds a control character: {agent:?}"
    );
    assert!(!agent.contains('\''), "user agent holds a quote: {agent:?}");
    assert!(agent.len() <= event.get(Field::Message).len());

    if let Some(id) = event.app_id() {
        assert!(is_npm_uuid(id), "app id {id:?} is not a uuid");
        assert!(
            event
                .get(Field::Context)
                .strip_prefix("/app/")
                .is_some_and(|rest| rest.starts_with(id)),
            "app id {id:?} is not after the context's leading /app/"
        );
    }

    let mut fresh = Event::new();
    let fresh_result = parse_into(data, &mut fresh);
    assert!(
        fresh_result.is_ok(),
        "a fresh event rejects what the reused one accepted"
    );
    assert_eq!(fresh.source, event.source);
    assert_eq!(fresh.command, event.command);
    assert_eq!(
        snapshot(&fresh),
        snapshot(event),
        "the reused event differs from a fresh one"
    );
}

fuzz_target!(|data: &[u8]| {
    REUSED.with_borrow_mut(|event| {
        if parse_into(data, event).is_ok() {
            check(data, event);
        }
    });
});
