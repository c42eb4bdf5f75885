//! The one HTTP toolkit of the HTTP destinations (InfluxDB 1/2/3, New Relic): the reqwest client and its TLS
//! settings, the lean plain-http write client (`wire`) and the `Poster` that picks between them, base URLs,
//! auth headers, `Retry-After`, error bodies (as text with the destination's secrets hidden: `Scrub`), status and
//! transport-error triage, gzip and URL encoding. A destination's client module holds only what its API says.
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

/// What replaces a secret in an error body.
const REDACTED: &[u8] = b"**REDACTED**";

/// The one rule for turning a destination's answer (an error body, or text taken from one) into text for errors
/// and logs: the secrets the destination is sent (tokens, the basic-auth password and its base64 form, insert
/// keys) never show, since a server or a proxy on the way may echo the request's headers.
///
/// Invariants of [`Scrub::text`]:
/// - only the first [`Scrub::read_limit`] bytes of a body are looked at: the [`MAX_ERROR_BODY`] shown plus the
///   longest secret, so that a secret starting inside the shown part is seen whole (so [`error_text`] reads no
///   more than that, and one byte to know whether more follows);
/// - every byte that belongs to an occurrence of a secret (overlapping occurrences included) is replaced, each
///   run of such bytes by one `**REDACTED**`; when the body goes on past the bytes looked at, a tail of them that
///   could be the start of a secret is replaced too;
/// - the secrets are replaced first and the text is cut after, so a secret that straddles the cut shows none of
///   its characters; then control characters are escaped ([`Escaped`]: a body must not start log lines of its
///   own).
///
/// `Debug` shows no secret ([`Secret`] is redacted).
#[derive(Debug, Default)]
pub(crate) struct Scrub {
    /// The secrets, none empty.
    secrets: Vec<Secret>,
}

impl Scrub {
    /// A scrub of `secrets` (empty ones are left out: there is nothing to hide).
    pub(crate) fn new(secrets: impl IntoIterator<Item = Secret>) -> Scrub {
        Scrub {
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    /// How many bytes of a body [`Scrub::text`] looks at: [`MAX_ERROR_BODY`] plus the longest secret.
    pub(crate) fn read_limit(&self) -> usize {
        MAX_ERROR_BODY + self.secrets.iter().map(|s| s.expose().len()).max().unwrap_or(0)
    }

    /// `body` as text for errors and logs (see the type's invariants).
    pub(crate) fn text(&self, body: &[u8]) -> String {
        let seen = &body[..body.len().min(self.read_limit())];
        body_text(&self.hide(seen, seen.len() < body.len()))
    }

    /// A non-success answer as a [`SinkError::Status`], its message the [`Scrub::text`] of `body`.
    pub(crate) fn status_error(&self, status: u16, retry_after: Option<Duration>, body: &[u8]) -> SinkError {
        SinkError::Status {
            status,
            retry_after,
            message: self.text(body),
        }
    }

    /// `body` with each run of bytes that belong to a secret replaced by one `**REDACTED**`; with `more_follows`,
    /// also a tail that is the start of a secret (the rest of it would come after the bytes given).
    fn hide<'a>(&self, body: &'a [u8], more_follows: bool) -> std::borrow::Cow<'a, [u8]> {
        // The spans of `body` to hide, from all secrets.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for secret in &self.secrets {
            let secret = secret.expose().as_bytes();
            let finder = memchr::memmem::Finder::new(secret);
            let mut from = 0;
            while let Some(at) = finder.find(&body[from..]) {
                spans.push((from + at, from + at + secret.len()));
                // Overlapping occurrences too: each is hidden.
                from += at + 1;
            }
            if more_follows {
                if let Some(len) = (1..secret.len()).rev().find(|&len| body.ends_with(&secret[..len])) {
                    spans.push((body.len() - len, body.len()));
                }
            }
        }
        if spans.is_empty() {
            return std::borrow::Cow::Borrowed(body);
        }
        spans.sort_unstable();
        let mut out = Vec::with_capacity(body.len() + REDACTED.len());
        // The bytes of `body` copied or hidden so far.
        let mut done = 0;
        for (i, (start, end)) in spans.into_iter().enumerate() {
            // A span that starts inside or right after the one before joins it (one `**REDACTED**`).
            if i == 0 || start > done {
                out.extend_from_slice(&body[done..start]);
                out.extend_from_slice(REDACTED);
            }
            done = done.max(end);
        }
        out.extend_from_slice(&body[done..]);
        std::borrow::Cow::Owned(out)
    }
}

/// The body of an error answer as text for errors and logs: the [`Scrub::text`] of its first bytes.
///
/// Only what that text looks at ([`Scrub::read_limit`]), and one byte more to know that more follows, is ever
/// read, whatever the answer announces: the response is then dropped with the rest of its body unread, which
/// closes the connection (it cannot be reused), so a huge or endless body from a broken or hostile endpoint costs
/// neither memory nor reading time. A body that fails midway gives the text of what arrived.
pub(crate) async fn error_text(resp: reqwest::Response, scrub: &Scrub) -> String {
    scrub.text(&read_at_most(resp, scrub.read_limit() + 1).await)
}

/// The first `limit` bytes of `resp`'s body (fewer when it is shorter or fails midway); nothing past them is read.
async fn read_at_most(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// An error body as text: cut to `MAX_ERROR_BODY` bytes on a char boundary, control characters escaped
/// ([`Escaped`]: a destination's body must not start log lines of its own). Only through [`Scrub::text`], which
/// hides the secrets before the cut.
fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut end = text.len().min(MAX_ERROR_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Escaped(&text[..end]).to_string()
}

/// The status and body of a set-up call's answer: the whole body of a 2xx (its JSON is read); of any other status
/// only what `scrub`'s text shows (as [`error_text`]: the rest is never read and the connection is dropped).
pub(crate) async fn answer(resp: reqwest::Response, scrub: &Scrub) -> Result<(u16, Vec<u8>), SinkError> {
    let status = resp.status().as_u16();
    let body = if resp.status().is_success() {
        resp.bytes().await.map_err(connection_error)?.to_vec()
    } else {
        read_at_most(resp, scrub.read_limit() + 1).await
    };
    Ok((status, body))
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "key-0123456789abcdef";

    #[test]
    fn error_text_is_cut_on_a_char_boundary() {
        let body = "é".repeat(400);
        let t = Scrub::default().text(body.as_bytes());
        assert_eq!(t, "é".repeat(MAX_ERROR_BODY / 2));
    }

    #[test]
    fn error_text_cannot_start_a_log_line() {
        let t = Scrub::default().text(b"{\"error\":\"bad\"}\n2026-01-01T00:00:00Z ERROR forged\x1b[2K\r\n");
        assert_eq!(t, r#"{"error":"bad"}\n2026-01-01T00:00:00Z ERROR forged\x1b[2K"#);
    }

    #[test]
    fn each_run_of_secret_bytes_becomes_one_mark_overlapping_and_adjacent_ones_included() {
        let scrub = Scrub::new([Secret::new(KEY), Secret::new("abab"), Secret::new("")]);
        assert_eq!(scrub.read_limit(), MAX_ERROR_BODY + KEY.len());
        assert_eq!(scrub.text(format!("a {KEY} b").as_bytes()), "a **REDACTED** b");
        assert_eq!(scrub.text(format!("{KEY}{KEY}!").as_bytes()), "**REDACTED**!");
        // `ababab` holds two overlapping occurrences: not one of its bytes shows.
        assert_eq!(scrub.text(b"x ababab y"), "x **REDACTED** y");
        assert_eq!(scrub.text(b"nothing here"), "nothing here");
        assert!(!format!("{scrub:?}").contains(KEY), "{scrub:?}");
    }

    #[test]
    fn a_secret_cut_off_by_the_bytes_looked_at_is_hidden_also_when_earlier_ones_shrank_the_text() {
        // Secrets longer than the mark: the 13 whole ones in the bytes looked at (read_limit, 552) shrink to one
        // mark, so the 14th, cut off after 32 of its 40 bytes, would land inside the 512 shown.
        let long = "L".repeat(30) + "0123456789";
        let scrub = Scrub::new([Secret::new(long.as_str())]);
        let limit = scrub.read_limit();
        assert_eq!(limit - 13 * long.len(), 32);
        assert_eq!(scrub.text(long.repeat(20).as_bytes()), "**REDACTED**");
        assert_eq!(
            scrub.text(format!("a: {}", long.repeat(20)).as_bytes()),
            "a: **REDACTED**"
        );
        // A whole body that merely ends like the start of a secret keeps its end.
        assert_eq!(scrub.text(b"ends in LLL"), "ends in LLL");
    }
}
