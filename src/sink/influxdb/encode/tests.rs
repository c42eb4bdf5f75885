use super::*;
use crate::config::Tag;
use crate::event::Event;
use crate::parse::parse_into;
use crate::testing::{fixture_cases, user_agent_for};

fn fixture_tags() -> Vec<Tag> {
    [("env", "DEV"), ("host", "OVERRIDDEN"), ("qs_host", "NR_OVERRIDDEN")]
        .iter()
        .map(|(n, v)| Tag {
            name: (*n).into(),
            value: (*v).into(),
        })
        .collect()
}

fn encode_one(enc: &mut LineEncoder, datagram: &[u8]) -> (Encoded, String) {
    let mut ev = Event::new();
    parse_into(datagram, &mut ev).expect("fixture parses");
    ev.user_agent = user_agent_for(&ev);
    ev.received_ns = 1_700_000_000_000_000_000;
    let mut out = Vec::new();
    let r = enc.encode(&ev, &mut out);
    (r, String::from_utf8(out).unwrap())
}

#[test]
fn every_fixture_line_is_byte_identical_to_butler_sos_apart_from_our_timestamp() {
    let mut checked = 0;
    for case in fixture_cases() {
        let bodies = case.influx_bodies();
        let Some(want) = bodies.first() else { continue };
        let mut enc = LineEncoder::new(&fixture_tags());
        let (r, line) = encode_one(&mut enc, &case.datagram);
        assert_eq!(r, Encoded::Yes, "case {}", case.name);
        let without_ts = line.trim_end_matches('\n').rsplit_once(' ').unwrap().0;
        assert_eq!(without_ts, want, "case {}", case.name);
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} fixture lines checked");
}

#[test]
fn events_with_an_empty_required_field_are_skipped_with_a_reason() {
    for case in fixture_cases()
        .into_iter()
        .filter(|c| c.name.starts_with("18_") || c.name.starts_with("19_"))
    {
        let mut enc = LineEncoder::new(&[]);
        let (r, line) = encode_one(&mut enc, &case.datagram);
        assert_eq!(r, Encoded::Skipped(SKIP_MISSING_REQUIRED), "case {}", case.name);
        let _ = line;
    }
}

#[test]
fn timestamps_are_strictly_increasing_so_identical_events_never_merge() {
    let case = fixture_cases().into_iter().next().unwrap();
    let mut enc = LineEncoder::new(&[]);
    let ts: Vec<u64> = (0..3)
        .map(|_| {
            encode_one(&mut enc, &case.datagram)
                .1
                .trim_end()
                .rsplit_once(' ')
                .unwrap()
                .1
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ts,
        [
            1_700_000_000_000_000_000,
            1_700_000_000_000_000_001,
            1_700_000_000_000_000_002
        ]
    );
}

#[test]
fn tag_escaping_follows_influxdb_1x() {
    let cases: &[(&str, &str)] = &[
        ("plain", "plain"),
        ("a b", "a\\ b"),
        ("a,b=c", "a\\,b\\=c"),
        ("LAB\\goran", "LAB\\goran"),
        ("x\\,y", "x\\\\,y"),
        ("é 😀", "é\\ 😀"),
    ];
    for (input, want) in cases {
        let mut out = Vec::new();
        escape_tag(&mut out, input);
        assert_eq!(String::from_utf8(out).unwrap(), *want, "input {input:?}");
    }
}

#[test]
fn a_tag_value_ending_in_backslash_is_trimmed_and_reported_while_the_field_stays_exact() {
    let mut enc = LineEncoder::new(&[]);
    let (r, line) = encode_one(&mut enc, b"/qseow-proxy-session/;h;Start session;LAB;bad\\;Hub;/hub/;m");
    assert_eq!(r, Encoded::Changed);
    assert!(
        line.contains(",userFull=LAB\\bad,userDirectory=LAB,userId=bad,origin=Hub "),
        "{line}"
    );
    assert!(
        line.contains("userFull=\"LAB\\\\bad\\\\\",userId=\"bad\\\\\""),
        "{line}"
    );
    // A value that is only backslashes leaves the tag out.
    let (r, line) = encode_one(&mut enc, b"/qseow-proxy-session/;h;Start session;LAB;x;\\\\;/hub/;m");
    assert_eq!(r, Encoded::Changed);
    assert!(!line.contains("origin="), "{line}");
}

#[test]
fn config_tags_override_core_tags_in_place_or_append_in_order() {
    let tags = vec![
        Tag {
            name: "appId".into(),
            value: "cfg".into(),
        },
        Tag {
            name: "env".into(),
            value: "A".into(),
        },
        Tag {
            name: "env".into(),
            value: "B".into(),
        },
        Tag {
            name: "empty".into(),
            value: "".into(),
        },
    ];
    let mut enc = LineEncoder::new(&tags);
    // No app id on this event: the config `appId` tag is appended in config order.
    let (_, line) = encode_one(&mut enc, b"/qseow-proxy-session/;h;Start session;LAB;x;Hub;/hub/;m");
    assert!(line.starts_with("user_events,host=h,event_action=Start\\ session,userFull=LAB\\x,userDirectory=LAB,userId=x,origin=Hub,appId=cfg,env=B userFull="), "{line}");
}
