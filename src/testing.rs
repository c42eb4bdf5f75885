//! Test support shared by unit tests: the golden fixture cases from `tests/fixtures/butler-sos`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::enrich::user_agent::UserAgentCache;
use crate::event::{Event, Field, UserAgentInfo};

/// One fixture case: its name, the datagram, and the whole JSON.
pub(crate) struct Case {
    pub name: String,
    pub datagram: Vec<u8>,
    pub json: serde_json::Value,
}

impl Case {
    /// `expected.influxdb_v1.write_requests[].body`.
    pub fn influx_bodies(&self) -> Vec<String> {
        self.json["expected"]["influxdb_v1"]["write_requests"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["body"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The fixtures folder.
pub(crate) fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/butler-sos"))
}

/// Every `NN_*.json` case, by name.
pub(crate) fn fixture_cases() -> Vec<Case> {
    let dir = fixtures_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/butler-sos present")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && n.as_bytes()[0].is_ascii_digit())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(&n)).expect("readable fixture");
            let json: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
            let datagram = base64_decode(json["input"]["bytes_b64"].as_str().expect("bytes_b64"));
            Case {
                name: n.trim_end_matches(".json").to_string(),
                datagram,
                json,
            }
        })
        .collect()
}

/// The user-agent facts the reader would attach to `ev`.
pub(crate) fn user_agent_for(ev: &Event) -> Option<Arc<UserAgentInfo>> {
    let ua = ev.get(Field::UserAgent);
    if ua.is_empty() {
        return None;
    }
    UserAgentCache::new(16).lookup(ua)
}

/// Standard base64 with padding.
pub(crate) fn base64_decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    }
    let bytes: Vec<u8> = s.bytes().filter(|&b| b != b'=' && !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

#[test]
fn base64_decoder_handles_every_padding_length() {
    assert_eq!(base64_decode("TWFu"), b"Man");
    assert_eq!(base64_decode("TWE="), b"Ma");
    assert_eq!(base64_decode("TQ=="), b"M");
    assert_eq!(base64_decode(""), b"");
    assert_eq!(base64_decode("/+8A"), [0xff, 0xef, 0x00]);
}
