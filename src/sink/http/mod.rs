//! The one HTTP toolkit of the HTTP destinations (InfluxDB 1/2/3, New Relic): the reqwest client and its TLS
//! settings, the lean plain-http write client (`wire`) and the `Poster` that picks between them, base URLs,
//! auth headers, `Retry-After`, error bodies, status and transport-error triage, gzip and URL encoding. A
//! destination's client module holds only what its API says.
//!
//! TLS is rustls (reqwest's `rustls-tls` feature). Roots: the Mozilla CA set built into the binary (webpki
//! roots) by default; with `caFile`, only the CAs in that file (a private CA does not have to be trusted for
//! every other site too). `insecureSkipVerify` turns certificate and name checks off (WARN at start).

use std::io::Write;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use std::error::Error as _;

use super::SinkError;
use crate::config::{HttpTls, Secret};
use crate::telemetry::escape::Escaped;
use tls::{is_tls_failure, with_tls};

/// How much of an error body is kept for logs.
pub(crate) const MAX_ERROR_BODY: usize = 512;

/// How long a TCP connect may take at most (less when the request timeout is shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("sense-ingest/", env!("CARGO_PKG_VERSION"));

/// A client with `timeout` per request, our `User-Agent` and `tls` applied (`key`: the config section named in
/// errors and WARNs; `sink`: the destination, for logs). `configure` adds what one API needs (redirect policy,
/// header case).
pub(crate) fn client(
    timeout: Duration,
    tls: &HttpTls,
    key: &str,
    sink: &str,
    configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, SinkError> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .user_agent(USER_AGENT);
    with_tls(configure(builder), tls, key, sink)?
        .build()
        .map_err(|e| SinkError::Setup(format!("{key}: cannot build the HTTP client: {e}")))
}

/// `http://host:port` (`https://` with `tls`), with an IPv6 literal in brackets.
pub(crate) fn base_url(host: &str, port: u16, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if host.contains(':') && !host.starts_with('[') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// Where a destination POSTs its batches: the lean [`wire::Wire`] client for plain http (see its docs for the
/// measured reason), the reqwest client for https. Both give a [`wire::Answer`], so a destination reads one kind
/// of answer whichever carries its writes.
#[derive(Debug)]
pub(crate) enum Poster {
    /// Plain http: `target` is the path and query.
    Wire {
        /// The keep-alive connection and its buffers.
        wire: wire::Wire,
        /// Path and query.
        target: String,
    },
    /// https, through the destination's reqwest client.
    Client {
        /// The destination's client (its TLS settings applied).
        client: reqwest::Client,
        /// The whole URL.
        url: reqwest::Url,
    },
}

impl Poster {
    /// The poster for `target` (path and query) at `host:port`: over `client` when `tls`, else the lean client
    /// with `timeout` per request.
    pub(crate) fn new(
        client: &reqwest::Client,
        host: &str,
        port: u16,
        tls: bool,
        target: &str,
        timeout: Duration,
    ) -> Result<Poster, SinkError> {
        if tls {
            let url = format!("{}{target}", base_url(host, port, true));
            let url = reqwest::Url::parse(&url).map_err(|e| SinkError::Setup(format!("bad URL {url}: {e}")))?;
            Ok(Poster::Client {
                client: client.clone(),
                url,
            })
        } else {
            Ok(Poster::Wire {
                wire: wire::Wire::new(host, port, USER_AGENT, timeout),
                target: target.to_owned(),
            })
        }
    }

    /// The whole URL the batches go to.
    #[cfg(test)]
    pub(crate) fn url(&self) -> String {
        match self {
            Poster::Wire { wire, target } => format!("http://{}{target}", wire.authority()),
            Poster::Client { url, .. } => url.to_string(),
        }
    }

    /// POSTs `body` with `headers`. The answer's body is read whole when the status is not 200/204 (and, on the lean
    /// client, always: the connection is kept in step).
    pub(crate) async fn post(
        &mut self,
        headers: &[(&'static str, &HeaderValue)],
        body: bytes::Bytes,
    ) -> Result<wire::Answer, SinkError> {
        match self {
            Poster::Wire { wire, target } => wire.post(target, headers, &body).await,
            Poster::Client { client, url } => {
                let mut req = client.post(url.clone());
                for (name, value) in headers {
                    req = req.header(*name, (*value).clone());
                }
                let resp = req.body(body).send().await.map_err(connection_error)?;
                let status = resp.status().as_u16();
                let retry_after = retry_after(resp.headers());
                let body = if status == 200 || status == 204 {
                    bytes::Bytes::new()
                } else {
                    resp.bytes().await.unwrap_or_default()
                };
                Ok(wire::Answer {
                    status,
                    retry_after,
                    body,
                })
            }
        }
    }
}

/// `<scheme> <token>` as a sensitive header value; `key` names the config key in the error (never the token).
pub(crate) fn auth_header(scheme: &str, token: &Secret, key: &str) -> Result<HeaderValue, SinkError> {
    let mut value = HeaderValue::from_str(&format!("{scheme} {}", token.expose()))
        .map_err(|_| SinkError::Setup(format!("{key} holds characters an HTTP header cannot carry")))?;
    value.set_sensitive(true);
    Ok(value)
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_value(headers.get(RETRY_AFTER)?.to_str().ok()?)
}

/// A `Retry-After` value in seconds; the HTTP-date form (or anything else) is treated as absent.
pub(crate) fn retry_after_value(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// An error body as text for errors and logs: cut to `MAX_ERROR_BODY` bytes on a char boundary, control
/// characters escaped ([`Escaped`]: a destination's body must not start log lines of its own).
pub(crate) fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut end = text.len().min(MAX_ERROR_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Escaped(&text[..end]).to_string()
}

/// The status and whole body of a response.
pub(crate) async fn answer(resp: reqwest::Response) -> Result<(u16, Vec<u8>), SinkError> {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(connection_error)?.to_vec();
    Ok((status, body))
}

/// A non-success answer as a [`SinkError::Status`].
pub(crate) fn status_error(status: u16, retry_after: Option<Duration>, body: &[u8]) -> SinkError {
    SinkError::Status {
        status,
        retry_after,
        message: body_text(body),
    }
}

/// [`request_error`] without context. The URL is left out: it carries no secret (credentials go in headers), but
/// the destination's address is logged on its own.
pub(crate) fn connection_error(e: reqwest::Error) -> SinkError {
    request_error(e, None)
}

/// The concatenation of `parts`, gzipped at the fastest level (line protocol and event JSON still shrink ~10x, at
/// a fraction of the default level's CPU), into a buffer of `capacity`.
pub(crate) fn gzip(parts: &[&[u8]], capacity: usize) -> Result<Vec<u8>, SinkError> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(capacity), flate2::Compression::fast());
    parts
        .iter()
        .try_for_each(|part| enc.write_all(part))
        .and_then(|()| enc.finish())
        .map_err(|e| SinkError::Setup(format!("gzip failed: {e}")))
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters stay).
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
    if is_tls_failure(&e) {
        SinkError::Tls(message)
    } else {
        SinkError::Connection(message)
    }
}

pub(crate) mod tls;
pub(crate) mod wire;

#[cfg(test)]
pub(crate) mod test_server;
