//! InfluxDB 3 Core / Enterprise over HTTP: the database is created with its retention period, then batches go
//! gzipped to `/api/v3/write_lp`.
//!
//! Setup (reference/PROTOCOLS.md b.4): `POST /api/v3/configure/database` with `{"db": <database>,
//! "retention_period": <retentionDuration>}` (`retention_period` left out when `retentionDuration` is empty: no
//! expiry). 200/201 mean created; 409, or an answer saying it already exists, means it was there. In Core the
//! retention period can only be set at creation, so an existing database keeps its own. Butler SOS neither creates
//! the database nor applies `retentionDuration`; InfluxDB 3 would create the database on the first write, without a
//! retention period. Any other 4xx answer (a token without admin rights, an older server without the endpoint, a
//! retention text the server refuses) is logged at WARN and the writes go ahead, so data still flows; 5xx and
//! connection errors are retried like a write.
//!
//! Writes: `POST /api/v3/write_lp?db=<db>&precision=nanosecond&accept_partial=true`, `Authorization: Bearer
//! <token>`, `Content-Encoding: gzip`, timeout `v3Config.writeTimeout`. 204 is success; 401, 403 and 404 are final;
//! 413 splits the batch; 429, 503 (with `Retry-After`) and other 5xx are retried by the worker.
//!
//! **400 with `"partial write of line protocol occurred"`**: InfluxDB wrote every line except those listed in
//! `data[]` (it describes at most 100). Re-sending cannot help, so when some lines were written this returns `Ok` and
//! logs a WARN with the number rejected and the first reason; those lines are counted as delivered, because
//! [`Transport::send`] has no partial outcome. When every line was rejected, and for any other 400, it is a final
//! error and the worker counts the batch as dropped.

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use tracing::{info, warn};

use super::http::{influx_client, influx_endpoint, influx_writes, write_gzipped, Refused};
use crate::config::InfluxConfig;
use crate::sink::http::{answer, auth_header, base_url, connection_error, retry_after, url_encode, Poster, Scrub};
use crate::sink::{Endpoint, SinkError, Transport};

/// Butler SOS's default `writeTimeout`, used when the config gives none.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_millis(10_000);

/// The error text InfluxDB 3 gives a partly written batch.
const PARTIAL_WRITE: &str = "partial write of line protocol occurred";

/// `/api/v3/*` against one InfluxDB 3 server.
#[derive(Debug)]
pub struct InfluxV3Transport {
    client: reqwest::Client,
    base: String,
    /// Where the batches go (`/api/v3/write...`).
    writes: Poster,
    database: String,
    retention: String,
    /// `Bearer <token>`, marked sensitive so it never shows in debug output.
    auth: HeaderValue,
    /// Hides the token in error bodies.
    scrub: Scrub,
}

impl InfluxV3Transport {
    /// A transport for `config` (`host`, `port`, `v3Config`). Plain HTTP as Butler SOS's v3 client uses (https with
    /// `sense-ingest.influxdbTls.enable`); the
    /// request timeout is `writeTimeout` (10 s when unset).
    pub fn new(config: &InfluxConfig) -> Result<InfluxV3Transport, SinkError> {
        let v3 = &config.v3;
        let base = base_url(&config.host, config.port, config.tls.enable);
        let target = format!(
            "/api/v3/write_lp?db={}&precision=nanosecond&accept_partial=true",
            url_encode(&v3.database)
        );
        let timeout = if v3.write_timeout.is_zero() {
            DEFAULT_WRITE_TIMEOUT
        } else {
            v3.write_timeout
        };
        let client = influx_client(timeout, &config.tls)?;
        Ok(InfluxV3Transport {
            writes: influx_writes(&client, config, &target, timeout)?,
            client,
            base,
            database: v3.database.clone(),
            retention: v3.retention_duration.trim().to_string(),
            auth: auth_header("Bearer", &v3.token, "influxdbConfig.v3Config.token")?,
            scrub: Scrub::new([v3.token.clone()]),
        })
    }

    /// The `POST /api/v3/configure/database` body.
    fn database_request(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "db": self.database });
        if !self.retention.is_empty() {
            body["retention_period"] = self.retention.clone().into();
        }
        body
    }
}

impl Transport for InfluxV3Transport {
    fn endpoint(&self) -> Endpoint {
        influx_endpoint(&self.base, "Butler-SOS.influxdbConfig.v3Config.token")
    }

    async fn prepare(&mut self) -> Result<(), SinkError> {
        let resp = self
            .client
            .post(format!("{}/api/v3/configure/database", self.base))
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(self.database_request().to_string())
            .send()
            .await
            .map_err(connection_error)?;
        let retry = retry_after(resp.headers());
        let (status, body) = answer(resp, &self.scrub).await?;
        let text = self.scrub.text(&body);
        match status {
            200 | 201 | 204 => {
                info!(database = %self.database, retention = %self.retention, "influxdb database created");
            }
            409 => info!(database = %self.database, "influxdb database exists"),
            _ if (400..500).contains(&status) && text.contains("already exists") => {
                info!(database = %self.database, "influxdb database exists");
            }
            400..=499 => {
                warn!(
                    database = %self.database, status, message = %text,
                    "influxdb database could not be created; writing anyway (InfluxDB 3 creates it on first write)"
                );
            }
            _ => return Err(self.scrub.status_error(status, retry, &body)),
        }
        Ok(())
    }

    async fn send(&mut self, items: &[u8], count: usize) -> Result<usize, SinkError> {
        let Some(Refused { status, retry, body }) = write_gzipped(&mut self.writes, &self.auth, items).await? else {
            return Ok(0);
        };
        if status == 400 {
            if let Some((rejected, first)) = partial_write(&body).filter(|(rejected, _)| *rejected < count) {
                warn!(
                    sink = "influxdb", rejected, lines = count, first_error = %self.scrub.text(first.as_bytes()),
                    "influxdb partial write: the other lines were written"
                );
                return Ok(rejected);
            }
        }
        Err(self.scrub.status_error(status, retry, &body))
    }
}

/// For an InfluxDB 3 partial-write answer: how many lines it lists as rejected, and the first reason.
fn partial_write(body: &[u8]) -> Option<(usize, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if value["error"].as_str() != Some(PARTIAL_WRITE) {
        return None;
    }
    let data = value["data"].as_array()?;
    let first = data
        .first()
        .map(|d| {
            format!(
                "line {}: {}",
                d["line_number"].as_u64().unwrap_or(0),
                d["error_message"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default();
    Some((data.len(), first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InfluxVersion, Secret};
    use crate::sink::http::test_server::{
        assert_echoed_secret_hidden_wherever_the_cut_falls, assert_hidden, block_on, serve,
    };

    fn config(retention: &str) -> InfluxConfig {
        let mut c = InfluxConfig {
            host: "influx.example".into(),
            port: 8181,
            version: InfluxVersion::V3,
            ..Default::default()
        };
        c.v3.database = "senseops".into();
        c.v3.token = Secret::new("apiv3_s3cret");
        c.v3.retention_duration = retention.into();
        c.v3.write_timeout = Duration::from_millis(2500);
        c
    }

    #[test]
    fn the_write_url_names_the_database_nanosecond_precision_and_partial_writes() {
        let t = InfluxV3Transport::new(&config("10d")).unwrap();
        assert_eq!(
            t.writes.url(),
            "http://influx.example:8181/api/v3/write_lp?db=senseops&precision=nanosecond&accept_partial=true"
        );
        assert_eq!(t.auth.to_str().unwrap(), "Bearer apiv3_s3cret");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    /// A token as long as InfluxDB 3's (`apiv3_` and 86 characters).
    const TOKEN: &str = "apiv3_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_0123456789abcdefghij";

    /// A transport with [`TOKEN`] for the scripted server at `addr`.
    fn echoed_to(addr: std::net::SocketAddr) -> InfluxV3Transport {
        let mut c = config("10d");
        c.host = addr.ip().to_string();
        c.port = addr.port();
        c.v3.token = Secret::new(TOKEN);
        InfluxV3Transport::new(&c).unwrap()
    }

    #[test]
    fn a_token_echoed_in_an_error_body_never_shows_wherever_the_cut_falls() {
        assert_echoed_secret_hidden_wherever_the_cut_falls(TOKEN, echoed_to);
    }

    #[test]
    fn a_token_echoed_by_the_set_up_call_or_in_a_refused_partial_write_never_shows() {
        let partial = serde_json::json!({
            "error": PARTIAL_WRITE,
            "data": [{"original_line": "m f=1 1", "line_number": 1, "error_message": format!("Bearer {TOKEN}")}],
        });
        let (addr, _seen) = serve(vec![
            (500, vec![], format!("no: Authorization: Bearer {TOKEN}")),
            (400, vec![], partial.to_string()),
        ]);
        let mut t = echoed_to(addr);
        let text = block_on(t.prepare()).unwrap_err().to_string();
        assert_eq!(text, "status 500: no: Authorization: Bearer **REDACTED**");
        // Every line of the batch refused: a final error whose text is the body (the WARN of a partial write,
        // whose reason comes from the same body, is checked in tests/influxdb_v2_v3.rs).
        let text = block_on(t.send(b"m f=1 1\n", 1)).unwrap_err().to_string();
        assert_hidden(TOKEN, &text, "partial write of the whole batch");
        assert!(text.contains(r#""error_message":"Bearer **REDACTED**""#), "{text}");
    }

    #[test]
    fn the_database_is_created_with_the_retention_period_or_without_one() {
        let t = InfluxV3Transport::new(&config("10d")).unwrap();
        assert_eq!(
            t.database_request(),
            serde_json::json!({"db": "senseops", "retention_period": "10d"})
        );
        let t = InfluxV3Transport::new(&config("")).unwrap();
        assert_eq!(t.database_request(), serde_json::json!({"db": "senseops"}));
    }

    #[test]
    fn a_partial_write_answer_gives_the_rejected_count_and_the_first_reason() {
        let body = br#"{"error":"partial write of line protocol occurred","data":[
            {"original_line":"a","line_number":2,"error_message":"No fields were provided"},
            {"original_line":"b","line_number":5,"error_message":"x"}]}"#;
        assert_eq!(
            partial_write(body),
            Some((2, "line 2: No fields were provided".to_string()))
        );
        // All-or-nothing refusals and other 400s are not partial writes.
        let atomic = br#"{"error":"parsing failed for write_lp endpoint","data":{"line_number":1}}"#;
        assert_eq!(partial_write(atomic), None);
        assert_eq!(partial_write(b"db name cannot be empty"), None);
    }
}
