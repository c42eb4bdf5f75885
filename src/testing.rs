//! Test support, one copy for every kind of test: the unit tests beside the code, the integration tests
//! (`tests/common` re-exports it), and the fuzz targets. Not part of the engine's API (hidden from the docs).
//!
//! - The golden fixture cases observed from Butler SOS (`tests/fixtures/butler-sos`, carried in the repository).
//! - [`stays_local`]: the guard that keeps generated config files from leaving the process when loaded.

use std::net::IpAddr;
use std::path::PathBuf;

use serde_norway::Value as Yaml;

/// One fixture case.
#[derive(Debug, Clone)]
pub struct Case {
    /// e.g. `01_session_start`.
    pub name: String,
    /// The datagram, exactly.
    pub datagram: Vec<u8>,
    /// The whole fixture JSON.
    pub json: serde_json::Value,
}

impl Case {
    /// `expected.influxdb_v1.points` (tags and fields as stored).
    pub fn influx_points(&self) -> Vec<serde_json::Value> {
        self.json["expected"]["influxdb_v1"]["points"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

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

    /// `expected.mqtt[]` as (topic, payload_raw).
    pub fn mqtt(&self) -> Vec<(String, String)> {
        self.json["expected"]["mqtt"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| Some((m["topic"].as_str()?.to_string(), m["payload_raw"].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The fixtures folder (with its README), inside the repository so a clone needs nothing beside it.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/butler-sos"))
}

/// Every `NN_*.json` case, in name order. Panics when the fixtures are missing or unreadable (a broken checkout).
pub fn fixture_cases() -> Vec<Case> {
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
#[cfg(test)]
pub(crate) fn user_agent_for(ev: &crate::event::Event) -> Option<std::sync::Arc<crate::event::UserAgentInfo>> {
    let ua = ev.get(crate::event::Field::UserAgent);
    if ua.is_empty() {
        return None;
    }
    crate::enrich::user_agent::UserAgentCache::new(16).lookup(ua)
}

/// Waits until `cond` holds, polling every 5 ms; panics naming `what` after 20 s (unit tests that wait on another
/// thread: a condition with a deadline, never a bare sleep).
#[cfg(test)]
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Standard base64 with padding. Panics on a byte outside the alphabet (fixtures are trusted).
pub fn base64_decode(s: &str) -> Vec<u8> {
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

/// The text a scalar is read as (strings, and numbers as their text), as the validator reads it.
fn scalar_text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// True when the validator might hand `value` to the system resolver: not an IP literal (bracketed or not), not
/// `localhost`, and made only of characters a hostname may hold (a superset of the validator's `is_hostname`).
fn may_query_dns(value: &Yaml) -> bool {
    let Some(text) = scalar_text(value) else {
        return false;
    };
    let host = text.trim();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare.is_empty() || bare.parse::<IpAddr>().is_ok() || bare.eq_ignore_ascii_case("localhost") {
        return false;
    }
    bare.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// True when loading `text` with [`crate::config::load_str`] stays inside this process: no DNS query (a hostname in
/// `serverHost` or `allowedSources`) and no read of a device file (`mqttConfig.tls.caFile` naming something that
/// is neither a regular file nor a folder, such as `/dev/zero`, which would never end). Generated inputs that fail
/// it are skipped by the config property tests and the config fuzz target.
pub fn stays_local(text: &str) -> bool {
    let Ok(root) = crate::config::raw::parse(text, "<config>") else {
        return true;
    };
    let bsos = &root["Butler-SOS"];
    let udp = &bsos["userEvents"]["udpServerConfig"];
    if may_query_dns(&udp["serverHost"]) {
        return false;
    }
    if let Yaml::Sequence(sources) = &udp["allowedSources"] {
        if sources.iter().any(may_query_dns) {
            return false;
        }
    }
    if let Some(ca) = scalar_text(&bsos["mqttConfig"]["tls"]["caFile"]) {
        if std::fs::metadata(ca.as_str()).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
            return false;
        }
    }
    true
}

#[test]
fn base64_decoder_handles_every_padding_length() {
    assert_eq!(base64_decode("TWFu"), b"Man");
    assert_eq!(base64_decode("TWE="), b"Ma");
    assert_eq!(base64_decode("TQ=="), b"M");
    assert_eq!(base64_decode(""), b"");
    assert_eq!(base64_decode("/+8A"), [0xff, 0xef, 0x00]);
}

#[test]
fn the_guard_skips_inputs_that_would_leave_the_process() {
    let udp = |host: &str| format!("Butler-SOS:\n  userEvents:\n    udpServerConfig:\n      serverHost: {host}\n");
    for local in [
        "127.0.0.1",
        "'::1'",
        "'[::1]'",
        "localhost",
        "''",
        "a b",
        "[x]",
        "{a: b}",
    ] {
        assert!(stays_local(&udp(local)), "{local}");
    }
    for remote in ["sense1.example.com", "10d", "host_1", "12345"] {
        assert!(!stays_local(&udp(remote)), "{remote}");
    }
    assert!(!stays_local(
        "Butler-SOS:\n  userEvents:\n    udpServerConfig:\n      allowedSources: [127.0.0.1, proxy1]\n"
    ));
    assert!(!stays_local(
        "Butler-SOS:\n  mqttConfig:\n    tls:\n      caFile: /dev/zero\n"
    ));
    assert!(stays_local(
        "Butler-SOS:\n  mqttConfig:\n    tls:\n      caFile: /nonexistent/ca.pem\n"
    ));
    assert!(stays_local("Butler-SOS: [unclosed\n"));
}
