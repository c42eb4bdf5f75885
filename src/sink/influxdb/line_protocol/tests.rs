use super::*;

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
fn v3_tag_escaping_doubles_backslashes_and_strips_what_butler_sos_strips() {
    // (input, escaped for userFull, escaped for every other tag)
    let cases: &[(&str, &str, &str)] = &[
        ("plain", "plain", "plain"),
        ("a b", "a\\ b", "a\\ b"),
        ("a,b=c", "a\\,b\\=c", "a\\,b\\=c"),
        ("LAB\\goran", "LAB\\\\goran", "LABgoran"),
        ("x\\,y", "x\\\\\\,y", "x\\,y"),
        ("<unknown app name>", "<unknown\\ app\\ name>", "unknown\\ app\\ name"),
        ("a\r\nb", "a\r\nb", "ab"),
        ("é 😀", "é\\ 😀", "é\\ 😀"),
    ];
    for (input, full, other) in cases {
        let mut out = Vec::new();
        escape_tag_v3(&mut out, input, false);
        assert_eq!(String::from_utf8(out).unwrap(), *full, "input {input:?} (userFull)");
        let mut out = Vec::new();
        escape_tag_v3(&mut out, input, true);
        assert_eq!(String::from_utf8(out).unwrap(), *other, "input {input:?}");
    }
}

/// Scans one tag value the way InfluxDB 1.x/2.x's Go parser does (`models/points.go`): it ends at a `,` or space
/// not preceded by `\`; then only `\,`, `\=` and `\ ` are unescaped. Returns (value, rest).
fn scan_tag_go(s: &str) -> (String, &str) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && !(matches!(b[i], b',' | b' ') && (i == 0 || b[i - 1] != b'\\')) {
        i += 1;
    }
    let v = s[..i].replace("\\,", ",").replace("\\ ", " ").replace("\\=", "=");
    (v, &s[i..])
}

/// Scans one tag value the way InfluxDB 3's parser does (`influxdb_line_protocol`): `\\`, `\,`, `\=`, `\ ` are
/// escapes, any other `\x` is literal, an unescaped `,` or space ends the value. None when it ends in `\`.
fn scan_tag_v3(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            ',' | ' ' => return (!out.ends_with('\\')).then(|| (out, &s[i..])),
            '\\' => match chars.peek() {
                Some(&(_, n)) if matches!(n, '\\' | ',' | '=' | ' ') => {
                    out.push(n);
                    chars.next();
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    (!out.ends_with('\\')).then_some((out, ""))
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(512))]

    /// Whatever a tag value holds (except a trailing backslash), the server reads back exactly that value.
    #[test]
    fn escaped_tags_read_back_as_the_original_value(s in "[a-z\\\\ ,=<>é😀\"]{0,12}") {
        let s = s.trim_end_matches('\\');
        let mut go = Vec::new();
        escape_tag(&mut go, s);
        let go = String::from_utf8(go).unwrap() + " f=1";
        proptest::prop_assert_eq!(scan_tag_go(&go), (s.to_string(), " f=1"));
        let mut v3 = Vec::new();
        escape_tag_v3(&mut v3, s, false);
        let v3 = String::from_utf8(v3).unwrap() + ",t=1";
        proptest::prop_assert_eq!(scan_tag_v3(&v3), Some((s.to_string(), ",t=1")));
    }
}

#[test]
fn string_fields_escape_backslash_and_quote() {
    let mut out = Vec::new();
    escape_string_field(&mut out, r#"a"b\c"#);
    assert_eq!(out, br#"a\"b\\c"#);
}

#[test]
fn floats_are_written_like_javascript() {
    let mut out = Vec::new();
    for f in [0.0, 1.0, 12.5, 100.0 / 3.0, f64::NAN] {
        write_js_number(&mut out, f);
        out.push(b' ');
    }
    assert_eq!(std::str::from_utf8(&out).unwrap(), "0 1 12.5 33.333333333333336 0 ");
}

#[test]
fn durations_are_exact_decimal_seconds() {
    const S: u64 = 1_000_000_000;
    for (ns, want) in [
        (0, "0"),
        (1, "0.000000001"),
        (123, "0.000000123"),
        (1_500_000_000, "1.5"),
        (90 * S, "90"),
        (400_123_000, "0.400123"),
        (u64::MAX, "18446744073.709551615"),
    ] {
        let mut out = Vec::new();
        write_seconds(&mut out, ns);
        assert_eq!(String::from_utf8(out).unwrap(), want, "{ns} ns");
    }
}

#[test]
fn a_line_has_measurement_tags_fields_and_timestamp_in_order() {
    let mut out = Vec::new();
    let mut w = LineWriter::new(&mut out, InfluxVersion::V1, b"m\\ x");
    w.tag("k y", "v,1");
    w.tag("empty", "");
    w.tag("t", "ends\\");
    w.field_str("s", "q\"");
    w.field_int("i", 5);
    w.field_int_as_float("n", 6);
    w.field_float("f", 2.5);
    w.field_seconds("d", 1_500_000_000);
    w.field_bool("b", true);
    assert!(w.finish(9), "the trailing backslash is a change");
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "m\\ x,k\\ y=v\\,1,t=ends s=\"q\\\"\",i=5i,n=6,f=2.5,d=1.5,b=true 9\n"
    );
    let mut out = Vec::new();
    let mut w = LineWriter::new(&mut out, InfluxVersion::V3, b"m");
    w.tag("k", "a\\b");
    w.field_bool("b", false);
    assert!(!w.finish(1));
    assert_eq!(std::str::from_utf8(&out).unwrap(), "m,k=a\\\\b b=false 1\n");
}
