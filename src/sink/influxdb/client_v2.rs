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

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use tracing::{info, warn};

use super::http::{influx_client, influx_endpoint, influx_writes, partial_write_dropped, write_gzipped, Refused};
use crate::config::InfluxConfig;
use crate::sink::http::{answer, auth_header, base_url, connection_error, retry_after, url_encode, Poster, Scrub};
use crate::sink::{Endpoint, SinkError, Transport};

/// The request timeout for setup and writes.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `/api/v2/*` against one InfluxDB 2.x server (or InfluxDB Cloud 2).
#[derive(Debug)]
pub struct InfluxV2Transport {
    client: reqwest::Client,
    base: String,
    /// Where the batches go (`/api/v2/write...`).
    writes: Poster,
    org: String,
    bucket: String,
    description: String,
    retention: Option<Duration>,
    /// `Token <token>`, marked sensitive so it never shows in debug output.
    auth: HeaderValue,
    /// Hides the token in error bodies.
    scrub: Scrub,
}

impl InfluxV2Transport {
    /// A transport for `config` (`host`, `port`, `v2Config`). Plain HTTP as Butler SOS's v2 client uses, or https
    /// with `sense-ingest.influxdbTls.enable`.
    pub fn new(config: &InfluxConfig) -> Result<InfluxV2Transport, SinkError> {
        let v2 = &config.v2;
        let base = base_url(&config.host, config.port, config.tls.enable);
        let target = format!(
            "/api/v2/write?org={}&bucket={}&precision=ns",
            url_encode(&v2.org),
            url_encode(&v2.bucket)
        );
        let client = influx_client(TIMEOUT, &config.tls)?;
        Ok(InfluxV2Transport {
            writes: influx_writes(&client, config, &target, TIMEOUT)?,
            client,
            base,
            org: v2.org.clone(),
            bucket: v2.bucket.clone(),
            description: v2.description.clone(),
            retention: v2.retention,
            auth: auth_header("Token", &v2.token, "influxdbConfig.v2Config.token")?,
            scrub: Scrub::new([v2.token.clone()]),
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
        answer(resp, &self.scrub).await
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
            _ => return Err(self.scrub.status_error(status, None, &body)),
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
            _ => return Err(self.scrub.status_error(status, None, &body)),
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
        let (status, body) = answer(resp, &self.scrub).await?;
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
            _ => Err(self.scrub.status_error(status, retry, &body)),
        }
    }

    async fn send(&mut self, items: &[u8], count: usize) -> Result<usize, SinkError> {
        let Some(Refused { status, retry, body }) = write_gzipped(&mut self.writes, &self.auth, items).await? else {
            return Ok(0);
        };
        if status == 422 {
            let message = self.scrub.text(&body);
            match partial_write_dropped(&String::from_utf8_lossy(&body)) {
                Some(dropped) if dropped < count => {
                    warn!(sink = "influxdb", dropped, lines = count, %message, "influxdb partial write: the other lines were written");
                    return Ok(dropped);
                }
                _ => {}
            }
        }
        Err(self.scrub.status_error(status, retry, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InfluxVersion, Secret};
    use crate::sink::http::test_server::{
        assert_echoed_secret_hidden_wherever_the_cut_falls, block_on, serve, serve_huge,
    };
    use crate::sink::http::MAX_ERROR_BODY;

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
            t.writes.url(),
            "http://[::1]:8086/api/v2/write?org=my%20org&bucket=senseops&precision=ns"
        );
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let t = InfluxV2Transport::new(&config(None)).unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert_eq!(t.auth.to_str().unwrap(), "Token s3cret");
    }

    /// A token as long as InfluxDB 2's (88 characters).
    const TOKEN: &str = "v2tok-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_0123456789abcdef==";

    /// A transport with [`TOKEN`] for the scripted server at `addr`.
    fn echoed_to(addr: std::net::SocketAddr) -> InfluxV2Transport {
        let mut c = config(None);
        c.host = addr.ip().to_string();
        c.port = addr.port();
        c.v2.token = Secret::new(TOKEN);
        InfluxV2Transport::new(&c).unwrap()
    }

    #[test]
    fn a_token_echoed_in_an_error_body_never_shows_wherever_the_cut_falls() {
        assert_echoed_secret_hidden_wherever_the_cut_falls(TOKEN, echoed_to);
    }

    #[test]
    fn a_token_echoed_by_a_set_up_call_never_shows() {
        let (addr, _seen) = serve(vec![(500, vec![], format!("no: Authorization: Token {TOKEN}"))]);
        let mut t = echoed_to(addr);
        let text = block_on(t.prepare()).unwrap_err().to_string();
        assert_eq!(text, "status 500: no: Authorization: Token **REDACTED**");
    }

    #[test]
    fn a_huge_refusal_of_a_set_up_call_is_read_only_as_far_as_it_is_shown_and_its_connection_dropped() {
        const HUGE: usize = 64 << 20;
        let (addr, written) = serve_huge(500, &format!("no: Authorization: Token {TOKEN}"), HUGE);
        let mut t = echoed_to(addr);
        block_on(async {
            let text = t.prepare().await.unwrap_err().to_string();
            let shown = format!("no: Authorization: Token **REDACTED**{}", "y".repeat(MAX_ERROR_BODY));
            assert_eq!(text, format!("status 500: {}", &shown[..MAX_ERROR_BODY]));
            // Still inside the runtime: the server sees the connection closed before it wrote the whole body.
            let written = tokio::task::spawn_blocking(move || written.recv_timeout(Duration::from_secs(20)))
                .await
                .unwrap()
                .expect("the server stopped writing");
            assert!(written < HUGE, "the client took all {written} bytes");
        });
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
}
