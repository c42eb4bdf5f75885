//! TLS for every destination: the one rustls crypto provider (*ring*, which reqwest brings), the client config
//! MQTT uses, the trust settings of the HTTP client, and telling a failed TLS handshake from a failed connection.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tracing::warn;

use crate::config::{CaFile, HttpTls};
use crate::sink::SinkError;

/// The crypto provider of every TLS connection. With one provider compiled in, rustls could pick it implicitly;
/// naming it keeps that true if a dependency ever brings a second one.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting `roots`, with [`provider`] and rustls's safe protocol versions.
pub(crate) fn client_config(roots: RootCertStore) -> Result<ClientConfig, String> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// System CA bundles, in the order OpenSSL-based tools look for them (`SSL_CERT_FILE` first).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The certificates of the system's CA bundle: the first readable of `SSL_CERT_FILE` and [`SYSTEM_BUNDLES`]
/// (none on a system without one, e.g. a minimal container without `ca-certificates`).
fn system_bundle() -> Vec<CertificateDer<'static>> {
    std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from))
        .find_map(|p| std::fs::read(p).ok())
        .map(|pem| CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// **The one default trust store** of every destination, HTTP and MQTT alike, when no `caFile` is set: the
/// Mozilla root programme's CAs built into the binary (what Node, and so Butler SOS, trusts) plus the system's CA
/// bundle (where an administrator installs a private CA for every tool on the host). A `caFile` replaces both.
pub(crate) fn default_roots() -> RootCertStore {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    roots.add_parsable_certificates(system_bundle());
    roots
}

/// Every parsable certificate of the PEM file `path` (already read into `pem`); an error when there is none.
pub(crate) fn root_store(path: &Path, pem: &[u8]) -> Result<RootCertStore, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{} holds no usable PEM certificate", path.display()));
    }
    Ok(roots)
}

/// Applies `tls` to `builder`. `key` is the config section (`sense-ingest.influxdbTls`) named in errors and in
/// the WARN about disabled verification. The CA file was read (and checked) at validation, once; its certificates
/// are parsed here (a setup error naming `key.caFile` if none is usable, never a panic).
pub(super) fn with_tls(
    builder: reqwest::ClientBuilder,
    tls: &HttpTls,
    key: &str,
    sink: &str,
) -> Result<reqwest::ClientBuilder, SinkError> {
    let mut builder = builder;
    if tls.ca_file.is_none() {
        // The built-in roots reqwest keeps are the Mozilla set of [`default_roots`]; the system bundle joins them.
        for der in system_bundle() {
            if let Ok(cert) = reqwest::Certificate::from_der(&der) {
                builder = builder.add_root_certificate(cert);
            }
        }
    }
    if let Some(CaFile { path, pem }) = &tls.ca_file {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
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

/// True when `e`'s cause chain holds a rustls error: the TLS handshake failed (certificate not trusted, name
/// mismatch, an alert from the server, a server that does not speak TLS). tokio-rustls hands it on as the payload
/// of an `io::Error` (wrapped in another by the connector), so each `io::Error` is opened rather than followed by
/// `source()`, which skips the payload. A server that closes the connection mid-handshake is a connection error.
pub(super) fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err.is::<rustls::Error>() {
            return true;
        }
        // An `io::Error`'s `source()` skips its payload (here: another `io::Error`, then the rustls error).
        cause = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(payload) => Some(payload as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::http::{request_error, test_server};

    #[test]
    fn tls_failures_are_told_apart_from_connection_failures_by_type_not_text() {
        let handshake = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(is_tls_failure(&handshake));
        assert!(is_tls_failure(&rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered
        )));
        // A refusal whose text merely mentions certificates is not a TLS failure.
        let refused = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused while fetching certificate list",
        );
        assert!(!is_tls_failure(&refused));
    }

    #[test]
    fn a_refused_connection_is_a_connection_error_and_a_plain_http_server_is_a_tls_error() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let client = reqwest::Client::new();
        let e = test_server::block_on(client.get(format!("https://127.0.0.1:{port}/")).send()).unwrap_err();
        assert!(matches!(request_error(e, None), SinkError::Connection(_)));
        // A plain HTTP server answers the ClientHello with a plain-text 400, as InfluxDB does.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = plain.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = plain.accept().unwrap();
            let _ = conn.read(&mut [0; 1024]);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        });
        let e = test_server::block_on(client.get(format!("https://{addr}/")).send()).unwrap_err();
        let e = request_error(e, None);
        assert!(matches!(e, SinkError::Tls(_)), "{e}");
    }

    #[test]
    fn a_ca_file_without_a_usable_certificate_is_a_setup_error_naming_the_key() {
        let tls = HttpTls {
            enable: true,
            ca_file: Some(CaFile {
                path: "junk.pem".into(),
                pem: b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"[..].into(),
            }),
            insecure_skip_verify: false,
        };
        let e = with_tls(reqwest::Client::builder(), &tls, "sense-ingest.influxdbTls", "influxdb")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sense-ingest.influxdbTls.caFile: junk.pem"), "{e}");
    }

    /// The CA file is read once, at validation: a file removed after the config was loaded does not keep the
    /// destination from starting (its certificates are already in memory).
    #[test]
    fn the_ca_file_is_read_at_validation_only() {
        let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::copy(bundle, &ca).expect("the system CA bundle (Debian package ca-certificates)");
        let file = dir.path().join("butler-sos.yaml");
        std::fs::write(
            &file,
            format!(
                "Butler-SOS:\n  userEvents: {{enable: true, udpServerConfig: {{serverHost: 127.0.0.1, \
                 portUserActivityEvents: 0}}}}\n  influxdbConfig: {{enable: true, host: 127.0.0.1}}\n\
                 sense-ingest:\n  influxdbTls: {{enable: true, caFile: {}}}\n",
                ca.display()
            ),
        )
        .unwrap();
        let loaded = crate::config::load_file(&file).unwrap();
        std::fs::remove_file(&ca).unwrap();
        crate::sink::influxdb::InfluxTransport::new(&loaded.config.influxdb)
            .expect("built from the certificates read at validation");
    }
}
