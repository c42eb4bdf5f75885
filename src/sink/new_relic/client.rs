//! The New Relic Event API over HTTP, for one account (reference/PROTOCOLS.md c.1).
//!
//! `POST {newRelic.event.url}/v1/accounts/{accountId}/events` (one trailing `/` of the url is dropped, as Butler
//! SOS adds one only when it is missing). The body is a JSON array of the batch's events: `[` + the encoded items
//! without the last comma + `]`, gzip-compressed (`Content-Encoding: gzip`, as New Relic asks of every payload).
//!
//! Headers: `Content-Type: application/json`, `Content-Encoding: gzip`, `User-Agent: sense-ingest/<version>`, each
//! `newRelic.event.header[]` entry (it may replace `Content-Type` or `User-Agent`), then `Api-Key: <insertApiKey>`
//! (as in Butler SOS, the account's key wins over a configured `Api-Key` header). A configured `Content-Encoding`,
//! `Content-Length`, `Transfer-Encoding` or `Host` is ignored with a warning: we own the framing. The key is
//! marked sensitive and is exposed nowhere else: not in logs, errors or `Debug` output; a destination error body
//! that echoes it has it replaced before the body is cut for the log (`Scrub`, the rule of every HTTP destination).
//! Of an error body only what the log shows is read (`http::error_text`); the rest is never read, and the
//! connection is dropped.
//!
//! Size: New Relic accepts at most 10^6 bytes per POST ([`MAX_BODY_BYTES`]; counted uncompressed, the safe
//! reading of the docs). A body over the limit is not sent: [`NewRelicTransport::send`] answers a local
//! `SinkError::Status { status: 413 }` and the worker splits the batch in halves, exactly as for a 413 from New
//! Relic. (The pipeline should also cap the batch's `max_bytes` below the limit so splitting stays the exception.)
//!
//! Status: any 2xx is delivered (New Relic answers 200 or 202); 408, 429 (with `Retry-After`, honoured by the
//! worker) and 5xx are retried; 413 splits; every other status (400, 403 wrong key, 404, 415, ...) is final and
//! the worker logs it once per batch with New Relic's own message and counts the events as dropped. Redirects are
//! not followed (they would be final errors naming the `Location`), so the key never goes to another host.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, LOCATION};
use tracing::{debug, warn};

use crate::config::{NewRelicAccount, NewRelicConfig};
use crate::sink::http::{self, request_error, retry_after, Scrub};
use crate::sink::{Endpoint, SinkError, Transport};

/// New Relic's limit on one POST, in bytes of (uncompressed) JSON.
pub const MAX_BODY_BYTES: usize = 1_000_000;

/// New Relic's limit on one POST, in bytes of (uncompressed) JSON: [`MAX_BODY_BYTES`].
pub const fn max_body_bytes() -> usize {
    MAX_BODY_BYTES
}

/// Headers the transport sets itself; a configured header of one of these names is ignored.
const RESERVED_HEADERS: [&str; 5] = [
    "api-key",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "host",
];

/// How long one POST may take in all (New Relic itself gives up after 10 s with 408).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Event API POSTs for one New Relic account.
pub struct NewRelicTransport {
    client: reqwest::Client,
    url: String,
    /// Every request header, the key included (marked sensitive).
    headers: HeaderMap,
    /// `"<name>" (<id>)`, for error messages.
    account: String,
    /// Hides the key in error bodies.
    scrub: Scrub,
    /// Compressed-size estimate for the next body's buffer (bodies go to reqwest by value).
    last_compressed: usize,
}

impl fmt::Debug for NewRelicTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRelicTransport")
            .field("url", &self.url)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl NewRelicTransport {
    /// A transport posting to `account` at `config.event_url` with `config.event_headers`.
    ///
    /// Fails (`SinkError::Setup`, a configuration error: do not retry) when the url does not parse or a header
    /// name or value, the key included, cannot be sent. No network access happens here.
    pub fn new(config: &NewRelicConfig, account: &NewRelicAccount) -> Result<NewRelicTransport, SinkError> {
        let label = format!("{:?} ({})", account.name, account.id);
        let base = config.event_url.trim();
        let base = base.strip_suffix('/').unwrap_or(base);
        let url = format!("{base}/v1/accounts/{}/events", account.id);
        reqwest::Url::parse(&url)
            .map_err(|e| SinkError::Setup(format!("new relic account {label}: invalid event url {url:?}: {e}")))?;

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut ignored: Vec<&str> = Vec::new();
        for h in &config.event_headers {
            if RESERVED_HEADERS.iter().any(|r| h.name.eq_ignore_ascii_case(r)) {
                ignored.push(&h.name);
                continue;
            }
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| SinkError::Setup(format!("newRelic.event.header: invalid header name {:?}", h.name)))?;
            let value = HeaderValue::from_str(&h.value).map_err(|_| {
                SinkError::Setup(format!(
                    "newRelic.event.header {:?}: invalid header value (value not shown)",
                    h.name
                ))
            })?;
            // Butler SOS assigns headers into an object: a repeated name keeps the last value.
            headers.insert(name, value);
        }
        if !ignored.is_empty() {
            warn!(
                account = %label,
                headers = %ignored.join(", "),
                "newRelic.event.header entries ignored: sense-ingest sets these itself"
            );
        }
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let mut key = HeaderValue::from_str(account.insert_key.expose()).map_err(|_| {
            SinkError::Setup(format!(
                "new relic account {label}: insertApiKey is not a valid header value (value not shown)"
            ))
        })?;
        key.set_sensitive(true);
        headers.insert(HeaderName::from_static("api-key"), key);

        let client = http::client(
            REQUEST_TIMEOUT,
            &config.tls,
            "sense-ingest.newRelicTls",
            &account.destination_name(),
            // `Api-Key`, `Content-Type` as Butler SOS (axios) writes them, for picky proxies in between.
            |b| b.redirect(reqwest::redirect::Policy::none()).http1_title_case_headers(),
        )?;
        Ok(NewRelicTransport {
            client,
            url,
            headers,
            account: label,
            scrub: Scrub::new([account.insert_key.clone()]),
            last_compressed: 4096,
        })
    }

    /// The endpoint this transport posts to (`.../v1/accounts/<id>/events`).
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The JSON items of `items` (each `{...},`) without the last comma.
fn strip_last_comma(items: &[u8]) -> &[u8] {
    items.strip_suffix(b",").unwrap_or(items)
}

/// Size of the JSON array body for `items`: the items without the last comma, plus `[` and `]`.
pub fn body_len(items: &[u8]) -> usize {
    strip_last_comma(items).len() + 2
}

/// gzip of `[` + `items` without the last comma + `]`, into a buffer of `capacity`.
pub fn gzip_body(items: &[u8], capacity: usize) -> Result<Vec<u8>, SinkError> {
    http::gzip(&[b"[", strip_last_comma(items), b"]"], capacity)
}

impl Transport for NewRelicTransport {
    /// Nothing to set up: the Event API needs no database or schema.
    async fn prepare(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: self.url.clone(),
            address_keys: "Butler-SOS.newRelic.event.url",
            auth_keys: "this account's insertApiKey in Butler-SOS.thirdPartyToolsCredentials.newRelic",
            tls_keys: "sense-ingest.newRelicTls",
        }
    }

    /// Resolves the Event API's host name: nothing is posted before there are events (an empty post would be
    /// refused, and New Relic bills per request).
    async fn contact(&mut self) -> Result<String, SinkError> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| SinkError::Setup(format!("invalid url: {e}")))?;
        let host = url.host_str().unwrap_or_default();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| SinkError::Connection(format!("cannot resolve {host:?}: {e}")))?
            .collect();
        match addrs.first() {
            Some(first) => Ok(format!(
                "new relic event api resolves to {first} ({} addresses)",
                addrs.len()
            )),
            None => Err(SinkError::Connection(format!("{host:?} resolves to no address"))),
        }
    }

    async fn send(&mut self, items: &[u8], count: usize) -> Result<usize, SinkError> {
        if count == 0 || items.is_empty() {
            return Ok(0);
        }
        let len = body_len(items);
        if len > MAX_BODY_BYTES {
            // Not sent: the worker splits on 413 as if New Relic had answered it.
            return Err(SinkError::Status {
                status: 413,
                retry_after: None,
                message: format!(
                    "new relic account {}: {count} events make {len} bytes of JSON, over the Event API's \
                     {MAX_BODY_BYTES}-byte limit (not sent)",
                    self.account
                ),
            });
        }
        let capacity = self.last_compressed.saturating_mul(2).max(4096).min(len + 64);
        let body = gzip_body(items, capacity)?;
        self.last_compressed = body.len();
        debug!(account = %self.account, events = count, json_bytes = len, gzip_bytes = body.len(), "new relic post");
        let resp = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| request_error(e, Some(&format!("new relic account {}", self.account))))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(0);
        }
        let retry_after = retry_after(resp.headers());
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        // At most what is shown is read, with the key (should a server echo it) hidden.
        let mut message = format!(
            "new relic account {}: {}",
            self.account,
            http::error_text(resp, &self.scrub).await
        );
        if let Some(location) = location.filter(|_| status.is_redirection()) {
            message.push_str(&format!(
                " (redirect to {location:?} not followed: fix newRelic.event.url)"
            ));
        }
        if status.as_u16() == 403 {
            message.push_str(" (check this account's insertApiKey)");
        }
        Err(SinkError::Status {
            status: status.as_u16(),
            retry_after,
            message,
        })
    }
}

#[cfg(test)]
mod tests;
