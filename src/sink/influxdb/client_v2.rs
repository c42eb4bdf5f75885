//! InfluxDB 2.x over HTTP: the bucket is looked up (and created with a real expiry), then batches go gzipped to
//! `/api/v2/write`.
//!
//! Setup (reference/PROTOCOLS.md b.3), all with `Authorization: Token <token>`:
//! 1. `GET /api/v2/orgs?org=<org>` for the org id;
//! 2. `GET /api/v2/buckets?name=<bucket>&orgID=<id>`;
//! 3. if the bucket is missing, `POST /api/v2/buckets` with `{"orgID", "name", "description", "retentionRules"}`.
//!
//! Butler SOS passes its `retentionDuration` as `rp`, which in the v2 API names the v1-compatibility retention
//! policy and sets no expiry, so its buckets never expire. We send `retentionRules: [{"type": "expire",
//! "everySeconds": N}]` instead, and no rule (infinite) when `retentionDuration` is not set. A token that may write
//! but not read or create buckets (401/403 during setup) is not an error: setup logs a WARN and the writes decide.
//!
//! Writes: `POST /api/v2/write?org=<org>&bucket=<bucket>&precision=ns`, `Content-Type: text/plain; charset=utf-8`,
//! `Content-Encoding: gzip`. 204 is success. 400 (nothing written), 401, 403 and 404 are final and carry InfluxDB's
//! message; 413 splits the batch; 429, 503 (with `Retry-After`) and other 5xx are retried by the worker.
//!
//! **422, partial write**: InfluxDB wrote the batch except `dropped=N` points (schema conflict, outside retention).
//! Re-sending cannot help, so when some points were written this returns `Ok` and logs a WARN with N. Those N are
//! counted as delivered, because [`Transport::send`] has no partial outcome; when every point was dropped it is a
//! final error and the worker counts the whole batch as dropped.

use std::io::Write;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use tracing::{info, warn};

use super::client::{body_text, retry_after, url_encode};
use crate::config::{HttpTls, InfluxConfig, Secret};
use crate::sink::http::{request_error, with_tls};
use crate::sink::{Endpoint, SinkError, Transport};

/// The request timeout for setup and writes.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `/api/v2/*` against one InfluxDB 2.x server (or InfluxDB Cloud 2).
#[derive(Debug)]
pub struct InfluxV2Transport {
    client: reqwest::Client,
    base: String,
    write_url: String,
    org: String,
    bucket: String,
    description: String,
    retention: Option<Duration>,
    /// `Token <token>`, marked sensitive so it never shows in debug output.
    auth: HeaderValue,
}

impl InfluxV2Transport {
    /// A transport for `config` (`host`, `port`, `v2Config`). Plain HTTP as Butler SOS's v2 client uses, or https
    /// with `sense-ingest.influxdbTls.enable`.
    pub fn new(config: &InfluxConfig) -> Result<InfluxV2Transport, SinkError> {
        let v2 = &config.v2;
        let base = base_url(&config.host, config.port, config.tls.enable);
        let write_url = format!(
            "{base}/api/v2/write?org={}&bucket={}&precision=ns",
            url_encode(&v2.org),
            url_encode(&v2.bucket)
        );
        Ok(InfluxV2Transport {
            client: http_client(TIMEOUT, &config.tls)?,
            base,
            write_url,
            org: v2.org.clone(),
            bucket: v2.bucket.clone(),
            description: v2.description.clone(),
            retention: v2.retention,
            auth: auth_header("Token", &v2.token, "influxdbConfig.v2Config.token")?,
        })
    }

    /// GET `path` (with the token) and return (status, body).
    async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), SinkError> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await
            .map_err(connection_error)?;
        answer(resp).await
    }

    /// The id of `self.org`, or `None` when the token may not read orgs.
    async fn org_id(&self) -> Result<Option<String>, SinkError> {
        let (status, body) = self.get(&format!("/api/v2/orgs?org={}", url_encode(&self.org))).await?;
        match status {
            200 => {}
            401 | 403 => return Ok(None),
            404 => {
                return Err(SinkError::Setup(format!(
                    "InfluxDB organization \"{}\" not found",
                    self.org
                )))
            }
            _ => return Err(status_error(status, None, &body)),
        }
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| SinkError::Setup(format!("unreadable /api/v2/orgs answer: {e}")))?;
        value["orgs"]
            .as_array()
            .and_then(|orgs| orgs.iter().find(|o| o["name"].as_str() == Some(self.org.as_str())))
            .and_then(|o| o["id"].as_str())
            .map(|id| Some(id.to_string()))
            .ok_or_else(|| SinkError::Setup(format!("InfluxDB organization \"{}\" not found", self.org)))
    }

    /// The `POST /api/v2/buckets` body.
    fn bucket_request(&self, org_id: &str) -> serde_json::Value {
        let rules: Vec<serde_json::Value> = self
            .retention
            .map(|d| d.as_secs())
            .filter(|&s| s > 0)
            .map(|s| serde_json::json!({"type": "expire", "everySeconds": s}))
            .into_iter()
            .collect();
        serde_json::json!({
            "orgID": org_id,
            "name": self.bucket,
            "description": self.description,
            "retentionRules": rules,
        })
    }
}

impl Transport for InfluxV2Transport {
    fn endpoint(&self) -> Endpoint {
        influx_endpoint(&self.base, "Butler-SOS.influxdbConfig.v2Config.token")
    }

    async fn prepare(&mut self) -> Result<(), SinkError> {
        let Some(org_id) = self.org_id().await? else {
            warn!(org = %self.org, "influxdb token may not read organizations; bucket not checked, writing anyway");
            return Ok(());
        };
        let (status, body) = self
            .get(&format!(
                "/api/v2/buckets?name={}&orgID={}",
                url_encode(&self.bucket),
                url_encode(&org_id)
            ))
            .await?;
        let exists = match status {
            200 => serde_json::from_slice::<serde_json::Value>(&body)
                .map_err(|e| SinkError::Setup(format!("unreadable /api/v2/buckets answer: {e}")))?["buckets"]
                .as_array()
                .is_some_and(|b| b.iter().any(|b| b["name"].as_str() == Some(self.bucket.as_str()))),
            404 => false,
            401 | 403 => {
                warn!(bucket = %self.bucket, "influxdb token may not read buckets; bucket not checked, writing anyway");
                return Ok(());
            }
            _ => return Err(status_error(status, None, &body)),
        };
        if exists {
            info!(bucket = %self.bucket, org = %self.org, "influxdb bucket exists");
            return Ok(());
        }
        let resp = self
            .client
            .post(format!("{}/api/v2/buckets", self.base))
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(self.bucket_request(&org_id).to_string())
            .send()
            .await
            .map_err(connection_error)?;
        let retry = retry_after(resp.headers());
        let (status, body) = answer(resp).await?;
        match status {
            200 | 201 => {
                let every_seconds = self.retention.map_or(0, |d| d.as_secs());
                info!(bucket = %self.bucket, org = %self.org, every_seconds, "influxdb bucket created");
                Ok(())
            }
            // Created meanwhile by someone else.
            409 | 422 if String::from_utf8_lossy(&body).contains("already exists") => Ok(()),
            401 | 403 => {
                warn!(bucket = %self.bucket, "influxdb token may not create buckets; writing anyway");
                Ok(())
            }
            _ => Err(status_error(status, retry, &body)),
        }
    }

    async fn send(&mut self, items: &[u8], count: usize) -> Result<usize, SinkError> {
        let Some(Refused { status, retry, body }) =
            write_gzipped(&self.client, &self.write_url, &self.auth, items).await?
        else {
            return Ok(0);
        };
        if status == 422 {
            let message = body_text(&body);
            match partial_write_dropped(&String::from_utf8_lossy(&body)) {
                Some(dropped) if dropped < count => {
                    warn!(sink = "influxdb", dropped, lines = count, %message, "influxdb partial write: the other lines were written");
                    return Ok(dropped);
                }
                _ => {}
            }
        }
        Err(status_error(status, retry, &body))
    }
}

/// A write the server answered with something other than 200/204.
pub(crate) struct Refused {
    pub status: u16,
    pub retry: Option<Duration>,
    pub body: bytes::Bytes,
}

/// POSTs `items` gzipped, as line protocol, with the `auth` header to `url` (the v2 and v3 write APIs take the same
/// request). `Ok(None)`: written (200/204); `Ok(Some(..))`: the server's refusal, for the caller to interpret.
pub(crate) async fn write_gzipped(
    client: &reqwest::Client,
    url: &str,
    auth: &HeaderValue,
    items: &[u8],
) -> Result<Option<Refused>, SinkError> {
    let resp = client
        .post(url)
        .header(AUTHORIZATION, auth.clone())
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(CONTENT_ENCODING, "gzip")
        .body(gzip(items)?)
        .send()
        .await
        .map_err(connection_error)?;
    let status = resp.status().as_u16();
    if status == 204 || status == 200 {
        return Ok(None);
    }
    let retry = retry_after(resp.headers());
    let body = resp.bytes().await.unwrap_or_default();
    Ok(Some(Refused { status, retry, body }))
}

/// `N` from an InfluxDB partial-write answer: `body` is the whole answer (never a cut-down copy), either the JSON
/// error document (`{"error": ".."}` from 1.x, `{"code": .., "message": ".."}` from 2.x) or plain text.
///
/// InfluxDB formats a partial write as `partial write: <reason> dropped=<N>`, so `N` is read only where InfluxDB
/// puts it: at the very end of the message, after whitespace. The reason may echo a refused line, whose values come
/// from senders, so a `dropped=` anywhere else is not ours to read. Returns `None` for any other answer.
///
/// InfluxDB 1.x writes the lines it could parse and reports the others as `partial write: unable to parse
/// '<line>': <why>` with `dropped=0`, one `unable to parse` per refused line, joined by newlines (a line-protocol
/// line holds none, so each refused line starts one). Those lines are counted instead of the `0`.
pub(crate) fn partial_write_dropped(body: &str) -> Option<usize> {
    let message = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(doc) => doc.get("message").or_else(|| doc.get("error"))?.as_str()?.to_owned(),
        Err(_) => body.to_owned(),
    };
    let message = message.trim_end();
    if !message.contains("partial write") {
        return None;
    }
    let without_digits = message.trim_end_matches(|c: char| c.is_ascii_digit());
    let digits = &message[without_digits.len()..];
    let reason = without_digits.strip_suffix("dropped=")?;
    if digits.is_empty() || !reason.ends_with(char::is_whitespace) {
        return None;
    }
    let dropped: usize = digits.parse().ok()?;
    if dropped > 0 {
        return Some(dropped);
    }
    let unparsed = reason.split_once("partial write:").map_or(0, |(_, refused)| {
        refused
            .split('\n')
            .filter(|line| line.trim_start().starts_with("unable to parse '"))
            .count()
    });
    Some(unparsed)
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

/// The endpoint of an InfluxDB transport at `base`, whose credentials are set by `auth_keys`.
pub(crate) fn influx_endpoint(base: &str, auth_keys: &'static str) -> Endpoint {
    Endpoint {
        address: base.to_owned(),
        address_keys: "Butler-SOS.influxdbConfig.host and Butler-SOS.influxdbConfig.port",
        auth_keys,
        tls_keys: "sense-ingest.influxdbTls",
    }
}

/// The HTTP client every InfluxDB transport uses, with `sense-ingest.influxdbTls` applied.
pub(crate) fn http_client(timeout: Duration, tls: &HttpTls) -> Result<reqwest::Client, SinkError> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .user_agent(concat!("sense-ingest/", env!("CARGO_PKG_VERSION")));
    with_tls(builder, tls, "sense-ingest.influxdbTls", "influxdb")?
        .build()
        .map_err(|e| SinkError::Setup(e.to_string()))
}

/// `<scheme> <token>` as a sensitive header value; `key` names the config key in the error (never the token).
pub(crate) fn auth_header(scheme: &str, token: &Secret, key: &str) -> Result<HeaderValue, SinkError> {
    let mut value = HeaderValue::from_str(&format!("{scheme} {}", token.expose()))
        .map_err(|_| SinkError::Setup(format!("{key} holds characters an HTTP header cannot carry")))?;
    value.set_sensitive(true);
    Ok(value)
}

/// `items` gzipped (fastest level: line protocol compresses well even so, and the encoder's CPU is the budget).
pub(crate) fn gzip(items: &[u8]) -> Result<Vec<u8>, SinkError> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(items.len() / 4 + 64), flate2::Compression::fast());
    enc.write_all(items)
        .and_then(|()| enc.finish())
        .map_err(|e| SinkError::Setup(format!("gzip failed: {e}")))
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

pub(crate) fn connection_error(e: reqwest::Error) -> SinkError {
    // The URL carries no secret (the token goes in a header), but leave it out like the v1 client does.
    request_error(e, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InfluxVersion;

    fn config(retention: Option<Duration>) -> InfluxConfig {
        let mut c = InfluxConfig {
            host: "::1".into(),
            port: 8086,
            version: InfluxVersion::V2,
            ..Default::default()
        };
        c.v2.org = "my org".into();
        c.v2.bucket = "senseops".into();
        c.v2.description = "Butler SOS metrics".into();
        c.v2.token = Secret::new("s3cret");
        c.v2.retention = retention;
        c
    }

    #[test]
    fn the_write_url_names_org_bucket_and_nanosecond_precision() {
        let t = InfluxV2Transport::new(&config(None)).unwrap();
        assert_eq!(
            t.write_url,
            "http://[::1]:8086/api/v2/write?org=my%20org&bucket=senseops&precision=ns"
        );
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let t = InfluxV2Transport::new(&config(None)).unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert_eq!(t.auth.to_str().unwrap(), "Token s3cret");
    }

    #[test]
    fn a_bucket_gets_a_real_expiry_and_none_means_infinite() {
        let t = InfluxV2Transport::new(&config(Some(Duration::from_secs(10 * 86400)))).unwrap();
        assert_eq!(
            t.bucket_request("0123"),
            serde_json::json!({
                "orgID": "0123", "name": "senseops", "description": "Butler SOS metrics",
                "retentionRules": [{"type": "expire", "everySeconds": 864000}]
            })
        );
        let t = InfluxV2Transport::new(&config(None)).unwrap();
        assert_eq!(t.bucket_request("0123")["retentionRules"], serde_json::json!([]));
    }

    #[test]
    fn the_dropped_count_is_read_from_a_partial_write_message() {
        let body = r#"{"code":"unprocessable entity","message":"failure writing points to database: partial write: points beyond retention policy dropped=3"}"#;
        assert_eq!(partial_write_dropped(body), Some(3));
        assert_eq!(partial_write_dropped("partial write: field type conflict"), None);
        // 1.x: `{"error": ..}`.
        let v1 = r#"{"error":"partial write: field type conflict: input field \"userId\" on measurement \"user_events\" is type string, already exists as type float dropped=1"}"#;
        assert_eq!(partial_write_dropped(v1), Some(1));
        assert_eq!(
            partial_write_dropped("partial write: points beyond retention policy dropped=12\n"),
            Some(12)
        );
    }

    #[test]
    fn only_the_dropped_count_at_the_end_of_the_message_is_read() {
        // A sender's value echoed in the reason, then the real count.
        let echoed = format!(
            "partial write: unable to parse 'm f=\\\"dropped=0 {}\\\" 1': bad dropped=2",
            "y".repeat(600)
        );
        assert_eq!(partial_write_dropped(&format!(r#"{{"error":"{echoed}"}}"#)), Some(2));
        // No count at the end: not a partial write, whatever the echoed line holds.
        let refused = r#"{"error":"unable to parse 'm f=\"x dropped=0\" abc': bad timestamp"}"#;
        assert_eq!(partial_write_dropped(refused), None);
        let echoed_last = r#"{"error":"partial write: unable to parse 'm f=\"x dropped=0\"'"}"#;
        assert_eq!(partial_write_dropped(echoed_last), None);
        assert_eq!(partial_write_dropped("partial write: dropped="), None);
        assert_eq!(partial_write_dropped("partial write: xdropped=3"), None);
        assert_eq!(
            partial_write_dropped("partial write: x dropped=99999999999999999999999"),
            None
        );
    }

    #[test]
    fn lines_influxdb_1_could_not_parse_are_counted_although_it_says_dropped_0() {
        // One `unable to parse` per refused line, joined by newlines; the second echoes the phrase in its value.
        let body = r#"{"error":"partial write: unable to parse 'm f=x 1': invalid boolean\nunable to parse 'm g=\"unable to parse '\" q': bad timestamp dropped=0"}"#;
        assert_eq!(partial_write_dropped(body), Some(2));
        // A partial write for another reason keeps its count, 0 included.
        assert_eq!(
            partial_write_dropped("partial write: points beyond retention policy dropped=0"),
            Some(0)
        );
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let data = b"user_events,host=a userId=\"x\" 1\n".repeat(100);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gzip(&data).unwrap()[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }
}
