//! What the HTTP destinations (InfluxDB 1/2/3, New Relic) share: the reqwest client's TLS settings and the
//! classification of transport errors.
//!
//! TLS is rustls (reqwest's `rustls-tls` feature). Roots: the Mozilla CA set built into the binary (webpki
//! roots) by default; with `caFile`, only the CAs in that file (a private CA does not have to be trusted for
//! every other site too). `insecureSkipVerify` turns certificate and name checks off (WARN at start).

use std::error::Error as _;

use tracing::warn;

use super::SinkError;
use crate::config::HttpTls;

/// Applies `tls` to `builder`. `key` is the config section (`sense-ingest.influxdbTls`) named in errors and in
/// the WARN about disabled verification. The CA file was checked at validation; it is read again here, so a
/// file changed or removed since is a setup error naming `key.caFile`, never a panic.
pub(crate) fn with_tls(
    builder: reqwest::ClientBuilder,
    tls: &HttpTls,
    key: &str,
    sink: &str,
) -> Result<reqwest::ClientBuilder, SinkError> {
    let mut builder = builder;
    if let Some(path) = &tls.ca_file {
        let pem = crate::config::validate::read_small_file(path)
            .map_err(|e| SinkError::Setup(format!("{key}.caFile: cannot read {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            SinkError::Setup(format!(
                "{key}.caFile: {} holds no usable PEM certificate: {e}",
                path.display()
            ))
        })?;
        if certs.is_empty() {
            return Err(SinkError::Setup(format!(
                "{key}.caFile: {} holds no PEM certificate",
                path.display()
            )));
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if tls.insecure_skip_verify {
        warn!(
            sink,
            key = %format!("{key}.insecureSkipVerify"),
            "TLS certificate verification is OFF for this destination: anyone on the network path can read \
             and change what is sent, tokens included; use caFile instead"
        );
        builder = builder.danger_accept_invalid_certs(true);
    }
    Ok(builder)
}

/// A request that got no HTTP answer, as a [`SinkError`]: [`SinkError::Tls`] when the TLS handshake failed
/// (certificate not trusted, name mismatch, protocol), else [`SinkError::Connection`]. The message is the whole
/// cause chain (reqwest's own text is only "error sending request"), without the URL; `context` goes in front
/// (e.g. the New Relic account). Neither reqwest nor rustls put headers (tokens) in these messages.
pub(crate) fn request_error(e: reqwest::Error, context: Option<&str>) -> SinkError {
    let e = e.without_url();
    let mut message = match context {
        Some(c) => format!("{c}: {e}"),
        None => e.to_string(),
    };
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // hyper and hyper-util repeat their inner error's text in their own; keep each text once.
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    if is_tls_failure(&message) {
        SinkError::Tls(message)
    } else {
        SinkError::Connection(message)
    }
}

/// True when a cause chain's text is a TLS handshake failure. rustls's error texts ("invalid peer certificate:
/// UnknownIssuer", "received fatal alert: ...", "peer is incompatible") reach us only as text through hyper's
/// `io::Error`s, so this matches on them.
fn is_tls_failure(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "certificate",
        "received fatal alert",
        "peer is incompatible",
        "tls handshake",
        "invalidcontenttype",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

#[cfg(test)]
pub(crate) mod test_server;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_told_apart_from_connection_failures() {
        assert!(is_tls_failure(
            "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer"
        ));
        assert!(is_tls_failure("received fatal alert: HandshakeFailure"));
        assert!(!is_tls_failure(
            "error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)"
        ));
    }

    #[test]
    fn a_missing_or_non_pem_ca_file_is_a_setup_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let tls = |p: &std::path::Path| HttpTls {
            enable: true,
            ca_file: Some(p.to_path_buf()),
            insecure_skip_verify: false,
        };
        let missing = dir.path().join("missing.pem");
        let e = with_tls(
            reqwest::Client::builder(),
            &tls(&missing),
            "sense-ingest.influxdbTls",
            "influxdb",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sense-ingest.influxdbTls.caFile: cannot read"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = with_tls(
            reqwest::Client::builder(),
            &tls(&junk),
            "sense-ingest.influxdbTls",
            "influxdb",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sense-ingest.influxdbTls.caFile"), "{e}");
        let e = with_tls(
            reqwest::Client::builder(),
            &tls(std::path::Path::new("/dev/zero")),
            "sense-ingest.newRelicTls",
            "new_relic:x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
