//! Butler SOS's MQTT JSON payload for a user event, written by hand into the caller's buffer.
//!
//! Keys in Butler SOS's order: `messageType, host, command, userDir, userId, origin, context, message, tags{...}`,
//! then, when present, `appId, appName, uaBrowserName, uaBrowserMajorVersion, uaOsName, uaOsVersion` (empty UA
//! values are left out). Strings are escaped exactly as `JSON.stringify` does: `"` and `\`, the short forms
//! `\b \f \n \r \t`, other C0 controls as `\u00xx`; everything else, DEL and U+2028 included, is written raw.
//! The same payload is what `run` without a config prints, one per line.

use crate::config::Tag;
use crate::event::{Event, Field, UNKNOWN_APP_NAME};

/// Prepared `tags` object: config tags deduplicated (later value wins at the first position), pre-encoded once.
#[derive(Debug, Clone)]
pub struct EventJson {
    tags_object: Vec<u8>,
}

impl EventJson {
    /// A payload writer with `tags` as the payload's `tags` object.
    pub fn new(tags: &[Tag]) -> EventJson {
        let mut dedup: Vec<(&str, &str)> = Vec::new();
        for t in tags {
            match dedup.iter_mut().find(|(n, _)| *n == t.name) {
                Some(entry) => entry.1 = &t.value,
                None => dedup.push((&t.name, &t.value)),
            }
        }
        let mut tags_object = Vec::new();
        tags_object.push(b'{');
        for (i, (name, value)) in dedup.iter().enumerate() {
            if i > 0 {
                tags_object.push(b',');
            }
            write_str(&mut tags_object, name);
            tags_object.push(b':');
            write_str(&mut tags_object, value);
        }
        tags_object.push(b'}');
        EventJson { tags_object }
    }

    /// Appends the payload of `ev` (no trailing newline).
    pub fn write(&self, ev: &Event, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"messageType\":");
        write_str(out, ev.source.as_str());
        let fields: [(&[u8], Field); 7] = [
            (b",\"host\":", Field::Host),
            (b",\"command\":", Field::Command),
            (b",\"userDir\":", Field::UserDirectory),
            (b",\"userId\":", Field::UserId),
            (b",\"origin\":", Field::Origin),
            (b",\"context\":", Field::Context),
            (b",\"message\":", Field::Message),
        ];
        for (key, field) in fields {
            out.extend_from_slice(key);
            write_str(out, ev.get(field));
        }
        out.extend_from_slice(b",\"tags\":");
        out.extend_from_slice(&self.tags_object);
        if let Some(app_id) = ev.app_id() {
            out.extend_from_slice(b",\"appId\":");
            write_str(out, app_id);
            out.extend_from_slice(b",\"appName\":");
            write_str(out, ev.app_name.as_deref().unwrap_or(UNKNOWN_APP_NAME));
        }
        if let Some(ua) = ev.user_agent.as_deref() {
            for (key, value) in [
                (&b",\"uaBrowserName\":"[..], &ua.browser_name),
                (b",\"uaBrowserMajorVersion\":", &ua.browser_major_version),
                (b",\"uaOsName\":", &ua.os_name),
                (b",\"uaOsVersion\":", &ua.os_version),
            ] {
                if !value.is_empty() {
                    out.extend_from_slice(key);
                    write_str(out, value);
                }
            }
        }
        out.push(b'}');
    }
}

/// Writes `s` as a JSON string literal, escaped like `JSON.stringify`.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    if !super::scan::any_json_special(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_like_json_stringify() {
        let cases: &[(&str, &str)] = &[
            ("plain", r#""plain""#),
            ("a\"b", r#""a\"b""#),
            ("LAB\\goran", r#""LAB\\goran""#),
            ("\n\r\t\u{8}\u{c}", r#""\n\r\t\b\f""#),
            ("\u{1}\u{1f}", r#""\u0001\u001f""#),
            ("\u{7f}é\u{2028}😀", "\"\u{7f}é\u{2028}😀\""),
        ];
        for (input, expected) in cases {
            let mut out = Vec::new();
            write_str(&mut out, input);
            assert_eq!(String::from_utf8(out).unwrap(), *expected, "input {input:?}");
        }
    }

    #[test]
    fn duplicate_config_tags_keep_the_first_position_and_the_last_value() {
        let tags = [
            Tag {
                name: "env".into(),
                value: "DEV".into(),
            },
            Tag {
                name: "x".into(),
                value: "1".into(),
            },
            Tag {
                name: "env".into(),
                value: "PROD".into(),
            },
        ];
        assert_eq!(EventJson::new(&tags).tags_object, br#"{"env":"PROD","x":"1"}"#);
    }
}
