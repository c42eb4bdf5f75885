//! Arbitrary UTF-8 text into `sense_ingest::config::load_str`, which must never panic: it returns the config or
//! every error with its key path.
//!
//! Two things `load_str` does reach outside the process, and the target steers around them (see README.md):
//! - `userEvents.udpServerConfig.serverHost` and `allowedSources` are resolved with the system resolver when they
//!   are hostnames. Inputs that would send a DNS query (a hostname-like value other than `localhost`) are skipped,
//!   so fuzzing never floods a name server.
//! - `mqttConfig.tls.caFile` is read when TLS is on. Inputs naming an existing file that is neither a regular file
//!   nor a folder (`/dev/zero`, `/dev/stdin`, a FIFO) are skipped: reading one never ends (README, known issues).

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use serde_norway::Value;

/// The text a scalar is read as (strings, and numbers as their text), as the validator does.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// True when the validator would hand `value` to the system resolver: not an IP literal (bracketed or not), not
/// `localhost`, and made only of the characters a hostname may hold (a superset of the validator's check).
fn may_query_dns(value: &Value) -> bool {
    let Some(text) = scalar_text(value) else { return false };
    let host = text.trim();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare.parse::<IpAddr>().is_ok() || bare.eq_ignore_ascii_case("localhost") || bare.is_empty() {
        return false;
    }
    bare.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// True when loading `text` stays inside the process (no DNS query, no endless read).
fn stays_local(text: &str) -> bool {
    let Ok(root) = sense_ingest::config::raw::parse(text, "<fuzz>") else {
        return true;
    };
    let bsos = &root["Butler-SOS"];
    let udp = &bsos["userEvents"]["udpServerConfig"];
    if may_query_dns(&udp["serverHost"]) {
        return false;
    }
    if let Value::Sequence(sources) = &udp["allowedSources"] {
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

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if !stays_local(text) {
        return;
    }
    match sense_ingest::config::load_str(text) {
        Ok(loaded) => {
            // Debug of a valid config must work too (it is what a developer prints).
            let _ = format!("{:?}", loaded.config);
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error result without errors");
            for error in errors.iter() {
                assert!(
                    !error.message.is_empty(),
                    "an error without a message at {:?}",
                    error.path
                );
            }
        }
    }
});
