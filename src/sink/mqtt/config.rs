//! From the validated [`MqttConfig`] to rumqttc's `MqttOptions`: client id, credentials, keep-alive, packet size
//! limits and the TLS transport.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, QoS, TlsConfiguration, Transport};

use crate::config::{MqttConfig, MqttTls};
use crate::event::Event;
use crate::sink::http::tls::{client_config, default_roots, root_store};
use crate::sink::json::EventJson;

/// Smallest payload limit we configure, whatever the computation below gives.
const MIN_MAX_PAYLOAD: usize = 64 << 10;

/// Bytes an MQTT 3.1.1 PUBLISH adds around topic and payload: fixed header (1) + remaining length (at most 4) +
/// topic length prefix (2) + packet id (2).
pub(crate) const PUBLISH_OVERHEAD: usize = 1 + 4 + 2 + 2;

/// The largest payload [`EventJson::write`] can produce with these config tags, rounded up to at least 64 KiB.
///
/// The computation, from the parser's limits (fixtures/README.md, "Parsing"):
/// - The seven datagram fields are cut to 5 × 100 + 200 + 500 + 1000 = 2200 UTF-16 code units in all, after C0
///   controls and DEL were removed.
/// - One UTF-16 unit is at most 3 bytes of UTF-8 (a 4-byte character takes 2 units). JSON escaping doubles only
///   `"` and `\`, which are 1 byte each, and never meets a control character (removed), so an escaped unit is at
///   most max(3, 2 × 1) = 3 bytes: fields ≤ 2200 × 3 = 6600 bytes.
/// - `appId` lies inside the context (≤ 500 units) and `appName` is the placeholder or a name from the app-name
///   file, assumed ≤ 1000 units: ≤ 4500 bytes plus keys.
/// - The four UA values each come from the message (≤ 1000 units): ≤ 12 000 bytes plus keys.
/// - Keys, quotes, `messageType` and the `tags` object (config tags, pre-encoded) are measured exactly by writing
///   an empty event.
///
/// That is about 23 KiB plus the tags; the 64 KiB floor leaves room for a longer app name. A payload above the
/// bound is not handed to rumqttc (whose encoder would fail the whole connection and then retry it forever): it
/// is dropped and counted.
pub(crate) fn max_payload(json: &EventJson) -> usize {
    const BYTES_PER_UNIT: usize = 3;
    const FIELD_UNITS: usize = 5 * 100 + 200 + 500 + 1000;
    let mut skeleton = Vec::new();
    json.write(&Event::new(), &mut skeleton);
    let fields = FIELD_UNITS * BYTES_PER_UNIT;
    let app = r#","appId":"","appName":"""#.len() + (500 + 1000) * BYTES_PER_UNIT;
    let ua = 4 * (r#","uaBrowserMajorVersion":"""#.len() + 1000 * BYTES_PER_UNIT);
    (skeleton.len() + fields + app + ua).max(MIN_MAX_PAYLOAD)
}

/// rumqttc's QoS for our validated 0/1/2.
pub(crate) fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// `clientId`, or `sense-ingest-<hostname>-<pid>` (hostname reduced to letters, digits and `-`, at most 40
/// characters). Unique per process on a host, stable for the process's lifetime, so a reconnect replaces our own
/// old session and nobody else's.
pub(crate) fn client_id(config: &MqttConfig) -> String {
    if let Some(id) = &config.client_id {
        return id.clone();
    }
    let host = hostname();
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .take(40)
        .collect();
    let host = if host.is_empty() { "host".to_owned() } else { host };
    format!("sense-ingest-{host}-{}", std::process::id())
}

fn hostname() -> String {
    let from_file = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok());
    from_file
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// rumqttc options for `config`: clean session (after a lost connection the worker re-publishes the whole
/// unconfirmed batch, see `client.rs`), credentials, keep-alive, TLS, and an outgoing packet limit of `max_packet`.
pub(crate) fn mqtt_options(config: &MqttConfig, client_id: String, max_packet: usize) -> Result<MqttOptions, String> {
    let mut options = MqttOptions::new(client_id, config.broker_host.trim(), config.broker_port);
    options.set_clean_session(true);
    // Validation allows 0 or 1 s..=65535 s; rumqttc asserts "0 or >= 1 s", so clamp rather than trust.
    let keep_alive = if config.keep_alive.is_zero() {
        Duration::ZERO
    } else {
        config
            .keep_alive
            .clamp(Duration::from_secs(1), Duration::from_secs(65_535))
    };
    options.set_keep_alive(keep_alive);
    // We only ever receive acks (and pings), but a broker may send a longer packet in a future; 64 KiB is cheap.
    options.set_max_packet_size(MIN_MAX_PAYLOAD, max_packet);
    if let Some(user) = &config.username {
        options.set_credentials(user.clone(), config.password.expose());
    }
    if let Some(tls) = &config.tls {
        options.set_transport(Transport::tls_with_config(tls_configuration(tls)?));
    }
    Ok(options)
}

/// rustls client config (the shared provider and trust store, see [`crate::sink::http::tls`]): roots from
/// `caFile`, else [`default_roots`].
fn tls_configuration(tls: &MqttTls) -> Result<TlsConfiguration, String> {
    let roots = match &tls.ca_file {
        Some(ca) => root_store(&ca.path, &ca.pem)?,
        None => default_roots(),
    };
    Ok(TlsConfiguration::Rustls(Arc::new(client_config(roots)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, Tag};

    #[test]
    fn payload_bound_covers_the_largest_event_and_grows_with_tags() {
        let small = max_payload(&EventJson::new(&[]));
        assert_eq!(small, MIN_MAX_PAYLOAD);
        let big_tags: Vec<Tag> = (0..100)
            .map(|i| Tag {
                name: format!("tag{i}"),
                value: "x".repeat(1000),
            })
            .collect();
        assert!(max_payload(&EventJson::new(&big_tags)) > 100 * 1000);

        // A worst-case event (every field at its limit, all quotes: each escapes to 2 bytes; or all 3-byte
        // characters) stays under the bound.
        for fill in ["\"", "€"] {
            let datagram = format!(
                "/qseow-proxy-connection/;{h};Open connection;{h};{h};{o};/app/{c};{m} UserAgent: Mozilla/5.0 \
                 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                h = fill.repeat(100),
                o = fill.repeat(200),
                c = fill.repeat(500),
                m = fill.repeat(1000),
            );
            let mut ev = Event::new();
            crate::parse::parse_into(datagram.as_bytes(), &mut ev).unwrap();
            let mut out = Vec::new();
            EventJson::new(&[]).write(&ev, &mut out);
            assert!(out.len() < 3 * 2200 + 1000, "{fill}: {}", out.len());
            assert!(out.len() < small);
        }
    }

    #[test]
    fn default_client_id_names_host_and_process() {
        let id = client_id(&MqttConfig::default());
        assert!(id.starts_with("sense-ingest-"), "{id}");
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{id}");
        let set = MqttConfig {
            client_id: Some("farm-1".into()),
            ..Default::default()
        };
        assert_eq!(client_id(&set), "farm-1");
    }

    #[test]
    fn options_carry_credentials_keep_alive_and_limits() {
        let config = MqttConfig {
            broker_host: "broker".into(),
            broker_port: 8883,
            username: Some("sense".into()),
            password: Secret::new("pw"),
            keep_alive: Duration::from_secs(30),
            ..Default::default()
        };
        let o = mqtt_options(&config, "id".into(), 70_000).unwrap();
        assert_eq!(o.broker_address(), ("broker".to_owned(), 8883));
        assert_eq!(o.keep_alive(), Duration::from_secs(30));
        let login = o.credentials().unwrap();
        assert_eq!((login.username.as_str(), login.password.as_str()), ("sense", "pw"));
        assert!(o.clean_session());
    }

    #[test]
    fn tls_needs_a_certificate_in_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = tls_configuration(&MqttTls {
            ca_file: Some(crate::config::CaFile {
                path: path.clone(),
                pem: b"not a certificate"[..].into(),
            }),
        })
        .err()
        .unwrap();
        assert!(err.contains("holds no usable PEM certificate"), "{err}");
    }
}
