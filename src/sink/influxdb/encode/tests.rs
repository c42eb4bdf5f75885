use super::*;
use crate::config::{InfluxVersion, Tag};
use crate::event::Event;
use crate::parse::parse_into;
use crate::sink::influxdb::line_protocol::escape_tag;
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

// ---- v2 and v3 layouts -------------------------------------------------------------------------------------------

fn fixture_03() -> Vec<u8> {
    fixture_cases()
        .into_iter()
        .find(|c| c.name.starts_with("03_"))
        .expect("fixture 03")
        .datagram
}

/// Derived, not observed: the layout of Butler SOS's `v2/user-events.js` written the way influxdb-client-js's
/// `Point.toLineProtocol` writes it (tags and fields sorted by key, empty tags left out, `,`/`=`/space escaped in
/// tags, `\` and `"` in string fields). No v2 server or Butler SOS v2 capture was available to observe it.
#[test]
fn fixture_03_in_the_v2_layout() {
    let mut enc = LineEncoder::with_version(&fixture_tags(), InfluxVersion::V2);
    let (r, line) = encode_one(&mut enc, &fixture_03());
    assert_eq!(r, Encoded::Yes);
    let want = concat!(
        r#"user_events,appId=a421f4a2-c311-4ef4-ba41-fe2e6a2b0d69,appName=<unknown\ app\ name>,env=DEV,"#,
        r#"event_action=Open\ connection,host=OVERRIDDEN,origin=AppAccess,qs_host=NR_OVERRIDDEN,"#,
        r#"uaBrowserMajorVersion=124,uaBrowserName=Chrome,uaOsName=Windows,uaOsVersion=NT\ 10.0,userDirectory=LAB,"#,
        r#"userFull=LAB\goran,userId=goran "#,
        r#"appId_field="a421f4a2-c311-4ef4-ba41-fe2e6a2b0d69",appName_field="<unknown app name>","#,
        r#"userFull="LAB\\goran",userId="goran" 1700000000000000000"#,
        "\n"
    );
    assert_eq!(line, want);
}

/// Derived, not observed: Butler SOS's `v3/user-events.js` layout (fields suffixed `_field`; tag values other than
/// `userFull` without `<`, `>`, `\`, CR, LF) in influxdb3-client-js's sorted order, escaped for InfluxDB 3's parser
/// (`\` doubled in tags).
#[test]
fn fixture_03_in_the_v3_layout() {
    let mut enc = LineEncoder::with_version(&fixture_tags(), InfluxVersion::V3);
    let (r, line) = encode_one(&mut enc, &fixture_03());
    assert_eq!(r, Encoded::Yes);
    let want = concat!(
        r#"user_events,appId=a421f4a2-c311-4ef4-ba41-fe2e6a2b0d69,appName=unknown\ app\ name,env=DEV,"#,
        r#"event_action=Open\ connection,host=OVERRIDDEN,origin=AppAccess,qs_host=NR_OVERRIDDEN,"#,
        r#"uaBrowserMajorVersion=124,uaBrowserName=Chrome,uaOsName=Windows,uaOsVersion=NT\ 10.0,userDirectory=LAB,"#,
        r#"userFull=LAB\\goran,userId=goran "#,
        r#"appId_field="a421f4a2-c311-4ef4-ba41-fe2e6a2b0d69",appName_field="<unknown app name>","#,
        r#"userFull_field="LAB\\goran",userId_field="goran" 1700000000000000000"#,
        "\n"
    );
    assert_eq!(line, want);
}

#[test]
fn without_an_app_the_v2_and_v3_lines_have_only_the_user_fields() {
    let d = b"/qseow-proxy-session/;h;Start session;LAB;x;Hub;/hub/;m";
    let (_, v2) = encode_one(&mut LineEncoder::with_version(&[], InfluxVersion::V2), d);
    assert_eq!(
        v2,
        "user_events,event_action=Start\\ session,host=h,origin=Hub,userDirectory=LAB,userFull=LAB\\x,userId=x \
         userFull=\"LAB\\\\x\",userId=\"x\" 1700000000000000000\n"
    );
    let (_, v3) = encode_one(&mut LineEncoder::with_version(&[], InfluxVersion::V3), d);
    assert_eq!(
        v3,
        "user_events,event_action=Start\\ session,host=h,origin=Hub,userDirectory=LAB,userFull=LAB\\\\x,userId=x \
         userFull_field=\"LAB\\\\x\",userId_field=\"x\" 1700000000000000000\n"
    );
}

#[test]
fn v3_a_tag_value_made_only_of_stripped_characters_is_left_out_without_a_change() {
    let tags = [Tag {
        name: "env".into(),
        value: "<>".into(),
    }];
    let (r, line) = encode_one(
        &mut LineEncoder::with_version(&tags, InfluxVersion::V3),
        b"/qseow-proxy-session/;h;Start session;LAB;x;Hub;/hub/;m",
    );
    assert_eq!(r, Encoded::Yes);
    assert!(!line.contains("env="), "{line}");
}

#[test]
fn v2_and_v3_trim_a_trailing_backslash_only_where_the_layout_keeps_backslashes() {
    let d = b"/qseow-proxy-session/;h;Start session;LAB;bad\\;Hub;/hub/;m";
    let (r, v2) = encode_one(&mut LineEncoder::with_version(&[], InfluxVersion::V2), d);
    assert_eq!(r, Encoded::Changed);
    assert!(v2.contains(",userFull=LAB\\bad,userId=bad "), "{v2}");
    assert!(v2.contains("userFull=\"LAB\\\\bad\\\\\",userId=\"bad\\\\\""), "{v2}");
    // v3: userId loses its backslash by the layout's rule; userFull keeps its inner one and loses the trailing one.
    let (r, v3) = encode_one(&mut LineEncoder::with_version(&[], InfluxVersion::V3), d);
    assert_eq!(r, Encoded::Changed);
    assert!(v3.contains(",userFull=LAB\\\\bad,userId=bad "), "{v3}");
    assert!(
        v3.contains("userFull_field=\"LAB\\\\bad\\\\\",userId_field=\"bad\\\\\""),
        "{v3}"
    );
}

#[test]
fn v3_leaves_out_a_config_tag_named_like_a_v3_field_and_reports_it() {
    let tags = [Tag {
        name: "userId_field".into(),
        value: "x".into(),
    }];
    let d = b"/qseow-proxy-session/;h;Start session;LAB;x;Hub;/hub/;m";
    let (r, v3) = encode_one(&mut LineEncoder::with_version(&tags, InfluxVersion::V3), d);
    assert_eq!(r, Encoded::Changed);
    assert_eq!(v3.matches("userId_field=").count(), 1, "{v3}");
    // v2 allows a tag and a field of the same name, and has no field of that name anyway.
    let (r, v2) = encode_one(&mut LineEncoder::with_version(&tags, InfluxVersion::V2), d);
    assert_eq!(r, Encoded::Yes);
    assert!(v2.contains(",userId_field=x "), "{v2}");
}

#[test]
fn v2_config_tags_override_core_tags_and_everything_sorts_like_javascript() {
    // U+1F600 sorts before U+FF21 in UTF-16 (a surrogate, 0xD83D < 0xFF21) but after it in UTF-8 (0xF0 > 0xEF).
    let tags: Vec<Tag> = [
        ("\u{FF21}", "b"),
        ("😀", "a"),
        ("appId", "cfg"),
        ("host", ""),
        ("Z", "z"),
    ]
    .iter()
    .map(|(n, v)| Tag {
        name: (*n).into(),
        value: (*v).into(),
    })
    .collect();
    let mut enc = LineEncoder::with_version(&tags, InfluxVersion::V2);
    let (_, line) = encode_one(&mut enc, b"/qseow-proxy-session/;h;Start session;LAB;x;Hub;/hub/;m");
    // `host` is overridden by an empty value, so it is left out (as the JavaScript client does).
    assert!(
        line.starts_with(
            "user_events,Z=z,appId=cfg,event_action=Start\\ session,origin=Hub,userDirectory=LAB,userFull=LAB\\x,\
             userId=x,😀=a,\u{FF21}=b userFull="
        ),
        "{line}"
    );
}

#[test]
fn v2_and_v3_timestamps_are_strictly_increasing_too() {
    for version in [InfluxVersion::V2, InfluxVersion::V3] {
        let mut enc = LineEncoder::with_version(&[], version);
        let ts: Vec<String> = (0..2)
            .map(|_| {
                let (_, line) = encode_one(&mut enc, &fixture_03());
                line.trim_end().rsplit_once(' ').unwrap().1.to_string()
            })
            .collect();
        assert_eq!(ts, ["1700000000000000000", "1700000000000000001"], "{version:?}");
    }
}
#[test]
fn core_prefixes_are_the_core_tag_names() {
    for (name, prefix) in CORE_TAGS.iter().zip(CORE_PREFIXES) {
        assert_eq!(prefix, format!(",{name}=").as_bytes());
    }
}

#[test]
fn cached_user_agent_tags_match_a_fresh_encoding_for_every_user_agent() {
    // More distinct user agents than cache slots, cycled twice, each line compared with a fresh encoder's (whose
    // cache is empty): a stale or colliding slot would show as a different line.
    let uas: Vec<Arc<UserAgentInfo>> = (0..300)
        .map(|i| {
            Arc::new(UserAgentInfo {
                browser_name: format!("Browser {i}"),
                browser_major_version: format!("{i}"),
                os_name: if i % 3 == 0 { String::new() } else { "Windows".into() },
                os_version: if i % 5 == 0 { "ends\\".into() } else { "NT 10.0".into() },
            })
        })
        .collect();
    let mut ev = Event::new();
    parse_into(&fixture_03(), &mut ev).unwrap();
    let mut cached = LineEncoder::new(&fixture_tags());
    for round in 0..2 {
        for ua in &uas {
            ev.user_agent = Some(Arc::clone(ua));
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let got = cached.encode(&ev, &mut a);
            let want = LineEncoder::new(&fixture_tags()).encode(&ev, &mut b);
            let strip_ts = |v: &[u8]| String::from_utf8(v[..v.iter().rposition(|&c| c == b' ').unwrap()].to_vec());
            assert_eq!(strip_ts(&a), strip_ts(&b), "round {round}");
            assert_eq!(got, want);
        }
    }
    // A config tag overriding a UA tag disables the cache and still overrides in place.
    let mut tags = fixture_tags();
    tags.push(Tag {
        name: "uaOsName".into(),
        value: "Fixed".into(),
    });
    let mut enc = LineEncoder::new(&tags);
    ev.user_agent = Some(Arc::clone(&uas[1]));
    let mut out = Vec::new();
    enc.encode(&ev, &mut out);
    let line = String::from_utf8(out).unwrap();
    assert!(
        line.contains(",uaBrowserMajorVersion=1,uaOsName=Fixed,uaOsVersion=NT\\ 10.0"),
        "{line}"
    );
}

#[test]
fn known_commands_use_their_pre_escaped_tag() {
    for cmd in ["Start session", "Stop session", "Open connection", "Close connection"] {
        let mut expected = b",event_action=".to_vec();
        escape_tag(&mut expected, cmd);
        assert_eq!(command_tag(Command::classify(cmd)), Some(&expected[..]));
    }
    assert_eq!(command_tag(Command::Other), None);
}
