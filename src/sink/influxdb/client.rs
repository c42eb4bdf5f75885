//! InfluxDB 1.x over HTTP: startup setup like Butler SOS, then batched `/write`.
//!
//! Setup (fixtures/_startup_influx_requests.json): `show databases`; if the database is missing,
//! `create database "<db>"` then `create retention policy "<rp>" on "<db>" duration <d> replication 1 default`.
//! `/query` answers statement errors with HTTP 200 and an `error` member, so the body is always inspected.
//!
//! Writes: `POST /write?db=<db>&precision=n`, body = line protocol. 204 is success; 5xx, 429 and connection errors
//! are retried by the worker; 413 splits the batch; other 4xx are final and carry InfluxDB's own message.
//!
//! **401 or 404 after start-up**: the server we prepared has changed under us (the database was dropped, or the
//! credentials were revoked or the server reinstalled), which no single batch is to blame for. The transport runs
//! the start-up setup again (creating the database and retention policy when missing) and writes the batch again;
//! while that keeps failing the write fails *retriably*, so the worker keeps the batch (in its spool, when enabled)
//! and retries instead of dropping every later batch. A 401 at start-up, before any setup succeeded, stays final:
//! that configuration never worked.

use std::time::Duration;

use tracing::{info, warn};

use reqwest::header::{HeaderValue, AUTHORIZATION};

use super::http::{influx_client, influx_endpoint, influx_writes, partial_write_dropped};
use crate::config::{InfluxConfig, Secret};
use crate::sink::http::{auth_header, base_url, connection_error, error_text, retry_after, url_encode, Poster, Scrub};
use crate::sink::{Endpoint, SinkError, Transport};
use crate::telemetry::escape::Escaped;

/// The request timeout for setup and writes.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `/write` and `/query` against one InfluxDB 1.x server.
#[derive(Debug)]
pub struct InfluxV1Transport {
    client: reqwest::Client,
    base: String,
    /// Where the batches go (`/write?db=..`).
    writes: Poster,
    db: String,
    rp_name: String,
    rp_duration: String,
    /// `Basic <user:password>` with `v1Config.auth`, marked sensitive so it never shows in debug output.
    basic: Option<HeaderValue>,
    /// Hides the password, and `user:password` in base64 (the header's form), in error bodies.
    scrub: Scrub,
    /// Setup succeeded once: a later 401/404 means the server changed, not that the config is wrong.
    prepared_once: bool,
    /// A write was answered 401/404 after start-up: set up again before the next write.
    needs_prepare: bool,
}

impl InfluxV1Transport {
    /// A transport for `config` (`host`, `port`, `v1Config`). Plain HTTP as Butler SOS's v1 client uses, or https
    /// with `sense-ingest.influxdbTls.enable`.
    pub fn new(config: &InfluxConfig) -> Result<InfluxV1Transport, SinkError> {
        let client = influx_client(TIMEOUT, &config.tls)?;
        let base = base_url(&config.host, config.port, config.tls.enable);
        let db = config.v1.db_name.clone();
        let target = format!("/write?db={}&precision=n", url_encode(&db));
        let (basic, scrub) = match &config.v1.auth {
            Some((user, pass)) => {
                use base64::Engine as _;
                let pair =
                    Secret::new(base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", pass.expose())));
                let basic = auth_header("Basic", &pair, "Butler-SOS.influxdbConfig.v1Config.auth")?;
                (Some(basic), Scrub::new([pass.clone(), pair]))
            }
            None => (None, Scrub::default()),
        };
        Ok(InfluxV1Transport {
            writes: influx_writes(&client, config, &target, TIMEOUT)?,
            client,
            base,
            db,
            rp_name: config.v1.retention_policy_name.clone(),
            rp_duration: config.v1.retention_policy_duration.clone(),
            basic,
            scrub,
            prepared_once: false,
            needs_prepare: false,
        })
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.basic {
            Some(basic) => req.header(AUTHORIZATION, basic.clone()),
            None => req,
        }
    }

    /// Runs one InfluxQL statement and returns the response body; statement errors become `Setup` errors.
    async fn query(&self, q: &str, post: bool) -> Result<Vec<u8>, SinkError> {
        let url = format!("{}/query?q={}", self.base, url_encode(q));
        let req = if post {
            self.client.post(url)
        } else {
            self.client.get(url)
        };
        let resp = self.authed(req).send().await.map_err(connection_error)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(SinkError::Status {
                status,
                retry_after: retry_after(resp.headers()),
                message: error_text(resp, &self.scrub).await,
            });
        }
        let body = resp.bytes().await.map_err(connection_error)?.to_vec();
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| SinkError::Setup(format!("unreadable /query answer: {e}")))?;
        if let Some(err) = value
            .get("results")
            .and_then(|r| r.as_array())
            .and_then(|r| r.first())
            .and_then(|r| r.get("error"))
            .and_then(|e| e.as_str())
        {
            let err = self.scrub.text(err.as_bytes());
            return Err(SinkError::Setup(format!("InfluxDB refused `{q}`: {err}")));
        }
        Ok(body)
    }
}

/// Two destinations writing to one database (`user_events` and `user_session`) must not race through setup:
/// the second could see the database the first just created before its default retention policy exists, and
/// write into `autogen`. Setup is therefore serialised process-wide (it runs once per destination).
static PREPARE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Transport for InfluxV1Transport {
    async fn prepare(&mut self) -> Result<(), SinkError> {
        self.setup().await?;
        self.prepared_once = true;
        self.needs_prepare = false;
        Ok(())
    }

    fn endpoint(&self) -> Endpoint {
        influx_endpoint(
            &self.base,
            "Butler-SOS.influxdbConfig.v1Config.auth.username and .password",
        )
    }

    /// `GET /ping` (which names the server's version), then [`Transport::prepare`]: the database exists, with its
    /// retention policy, before the first event arrives.
    async fn contact(&mut self) -> Result<String, SinkError> {
        let resp = self
            .client
            .get(format!("{}/ping", self.base))
            .send()
            .await
            .map_err(connection_error)?;
        let status = resp.status().as_u16();
        let version = resp
            .headers()
            .get("x-influxdb-version")
            .and_then(|v| v.to_str().ok())
            .map(|v| Escaped(v).to_string());
        if status != 204 && status != 200 {
            return Err(SinkError::Status {
                status,
                retry_after: retry_after(resp.headers()),
                message: format!("/ping: {}", error_text(resp, &self.scrub).await),
            });
        }
        self.prepare().await?;
        Ok(format!(
            "influxdb {}; database {:?} ready",
            version.as_deref().unwrap_or("(version not given)"),
            self.db
        ))
    }

    async fn send(&mut self, items: &[u8], count: usize) -> Result<usize, SinkError> {
        self.write(bytes::Bytes::copy_from_slice(items), count).await
    }

    async fn send_shared(&mut self, items: bytes::Bytes, count: usize) -> Result<usize, SinkError> {
        self.write(items, count).await
    }
}

impl InfluxV1Transport {
    /// `show databases`; when ours is missing, `create database` and its default retention policy.
    async fn setup(&mut self) -> Result<(), SinkError> {
        let _one_at_a_time = PREPARE.lock().await;
        let body = self.query("show databases", false).await?;
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| SinkError::Setup(format!("unreadable `show databases` answer: {e}")))?;
        let exists = value
            .get("results")
            .and_then(|r| r.as_array())
            .and_then(|r| r.first())
            .and_then(|r| r.get("series"))
            .and_then(|s| s.as_array())
            .and_then(|s| s.first())
            .and_then(|s| s.get("values"))
            .and_then(|v| v.as_array())
            .is_some_and(|rows| {
                rows.iter().any(|row| {
                    row.as_array().and_then(|r| r.first()).and_then(|v| v.as_str()) == Some(self.db.as_str())
                })
            });
        if exists {
            info!(db = %self.db, "influxdb database exists");
            return Ok(());
        }
        self.query(&format!("create database \"{}\"", escape_ident(&self.db)), true)
            .await?;
        self.query(
            &format!(
                "create retention policy \"{}\" on \"{}\" duration {} replication 1 default",
                escape_ident(&self.rp_name),
                escape_ident(&self.db),
                self.rp_duration
            ),
            true,
        )
        .await?;
        info!(db = %self.db, rp = %self.rp_name, duration = %self.rp_duration, "influxdb database created");
        Ok(())
    }

    /// One batch: set up again first when the server changed under us (see the module docs), then write; a
    /// 401/404 after start-up sets up again at once and writes once more.
    async fn write(&mut self, items: bytes::Bytes, count: usize) -> Result<usize, SinkError> {
        if self.needs_prepare {
            self.prepare_again().await?;
        }
        match self.write_once(items.clone(), count).await {
            Err(SinkError::Status {
                status: status @ (401 | 404),
                message,
                ..
            }) if self.prepared_once => {
                warn!(sink = "influxdb", status, %message, db = %self.db, "influxdb refused a write after start-up; setting up the database again");
                self.needs_prepare = true;
                self.prepare_again().await?;
                self.write_once(items, count).await.map_err(|e| match e {
                    SinkError::Status {
                        status: status @ (401 | 404),
                        message,
                        ..
                    } => {
                        self.needs_prepare = true;
                        SinkError::Setup(format!("status {status} after setting up again: {message}"))
                    }
                    e => e,
                })
            }
            other => other,
        }
    }

    /// The start-up setup once more; a failure is retriable (the batch waits), since this server worked before.
    async fn prepare_again(&mut self) -> Result<(), SinkError> {
        match Transport::prepare(self).await {
            Ok(()) => Ok(()),
            Err(e @ (SinkError::Connection(_) | SinkError::Tls(_))) => Err(e),
            Err(e) => Err(SinkError::Setup(format!("setting up the database again: {e}"))),
        }
    }

    /// One write request with `items` as the body (no copy: `Bytes` is shared with the worker's batch).
    async fn write_once(&mut self, items: bytes::Bytes, count: usize) -> Result<usize, SinkError> {
        let auth = self.basic.as_ref().map(|basic| (AUTHORIZATION.as_str(), basic));
        let answer = self.writes.post(auth.as_slice(), items).await?;
        let status = answer.status;
        if status == 204 || status == 200 {
            return Ok(0);
        }
        let message = self.scrub.text(&answer.body);
        // `partial write: ... dropped=N`: the other points were written. Read from the whole answer: the message
        // kept for logs is cut to `MAX_ERROR_BODY`, and the count is at its very end.
        let whole = String::from_utf8_lossy(&answer.body);
        if let Some(dropped) = partial_write_dropped(&whole).filter(|&d| d < count) {
            warn!(sink = "influxdb", dropped, lines = count, %message, "influxdb partial write");
            return Ok(dropped);
        }
        Err(SinkError::Status {
            status,
            retry_after: answer.retry_after,
            message,
        })
    }
}

/// Escapes `"` and `\` inside a double-quoted InfluxQL identifier.
fn escape_ident(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InfluxVersion;
    use crate::sink::http::test_server::{assert_hidden, block_on, serve, serve_huge, Answer};
    use crate::sink::http::MAX_ERROR_BODY;

    /// A v1 config for the scripted server at `addr`, database `senseops`.
    fn v1_config(addr: std::net::SocketAddr) -> InfluxConfig {
        let mut c = InfluxConfig {
            host: addr.ip().to_string(),
            port: addr.port(),
            version: InfluxVersion::V1,
            ..Default::default()
        };
        c.v1.db_name = "senseops".into();
        c
    }

    /// A v1 transport for the scripted server at `addr`, database `senseops`, retention policy `10d`.
    fn transport(addr: std::net::SocketAddr) -> InfluxV1Transport {
        let mut c = v1_config(addr);
        c.v1.retention_policy_name = "10d".into();
        c.v1.retention_policy_duration = "10d".into();
        InfluxV1Transport::new(&c).unwrap()
    }

    fn answer(status: u16, body: &str) -> Answer {
        (status, vec![("Content-Type", "application/json".into())], body.into())
    }

    /// `show databases` listing `senseops` (`exists`) or nothing.
    fn databases(exists: bool) -> Answer {
        let values = if exists {
            r#","values":[["_internal"],["senseops"]]"#
        } else {
            ""
        };
        answer(
            200,
            &format!(
                r#"{{"results":[{{"statement_id":0,"series":[{{"name":"databases","columns":["name"]{values}}}]}}]}}"#
            ),
        )
    }

    fn empty_result() -> Answer {
        answer(200, r#"{"results":[{"statement_id":0}]}"#)
    }

    #[test]
    fn a_partial_write_message_longer_than_512_bytes_keeps_its_dropped_count() {
        // InfluxDB echoes the refused line; a sender's value in it can read `dropped=0`, well before the real count.
        let echoed = format!("user_events,host=a message=\\\"x dropped=0 {}\\\" 1", "y".repeat(600));
        let body = format!(r#"{{"error":"partial write: unable to parse '{echoed}': invalid boolean dropped=2"}}"#);
        assert!(body.len() > MAX_ERROR_BODY && body.find("dropped=0").unwrap() < MAX_ERROR_BODY);
        let (addr, _seen) = serve(vec![databases(true), answer(400, &body)]);
        let mut t = transport(addr);
        let dropped = block_on(async {
            t.prepare().await.unwrap();
            t.send(b"m f=1 1\nm f=2 2\nm f=3 3\n", 3).await
        });
        assert_eq!(dropped.unwrap(), 2);
    }

    #[test]
    fn an_echoed_dropped_count_in_a_refusal_is_not_read_as_a_partial_write() {
        let body = r#"{"error":"unable to parse 'user_events message=\"x dropped=0\" abc': bad timestamp"}"#;
        let (addr, _seen) = serve(vec![databases(true), answer(400, body)]);
        let mut t = transport(addr);
        let result = block_on(async {
            t.prepare().await.unwrap();
            t.send(b"user_events message=\"x dropped=0\" abc\n", 1).await
        });
        assert!(
            matches!(result, Err(SinkError::Status { status: 400, .. })),
            "{result:?}"
        );
    }

    #[test]
    fn a_database_dropped_after_start_up_is_created_again_and_the_batch_written() {
        let (addr, seen) = serve(vec![
            databases(true),
            answer(404, r#"{"error":"database not found: \"senseops\""}"#),
            databases(false),
            empty_result(),
            empty_result(),
            (204, vec![], String::new()),
        ]);
        let mut t = transport(addr);
        let result = block_on(async {
            t.prepare().await.unwrap();
            t.send(b"m f=1 1\n", 1).await
        });
        assert_eq!(result.unwrap(), 0);
        let lines: Vec<String> = seen.try_iter().map(|s| s.request_line).collect();
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert!(lines[3].contains("create%20database"), "{lines:#?}");
        assert!(lines[4].contains("create%20retention%20policy"), "{lines:#?}");
        assert!(lines[5].starts_with("POST /write?db=senseops"), "{lines:#?}");
    }

    #[test]
    fn a_401_after_start_up_keeps_the_batch_for_a_retry() {
        let refused = r#"{"error":"authorization failed"}"#;
        let (addr, _seen) = serve(vec![databases(true), answer(401, refused), answer(401, refused)]);
        let mut t = transport(addr);
        let result = block_on(async {
            t.prepare().await.unwrap();
            t.send(b"m f=1 1\n", 1).await
        });
        let e = result.unwrap_err();
        assert!(e.is_retriable(), "{e}");
    }

    const USER: &str = "ingest";
    const PASSWORD: &str = "v1-password-0123456789abcdefghijklmnopqrstuvwxyz";

    /// A v1 transport with basic auth ([`USER`], [`PASSWORD`]), no retention policy set.
    fn with_auth(addr: std::net::SocketAddr) -> InfluxV1Transport {
        let mut c = v1_config(addr);
        c.v1.auth = Some((USER.into(), Secret::new(PASSWORD)));
        InfluxV1Transport::new(&c).unwrap()
    }

    /// `user:password` as the `Authorization: Basic` header carries it.
    fn basic() -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    }

    #[test]
    fn the_password_echoed_in_an_error_body_never_shows_wherever_the_cut_falls() {
        // A proxy or server echoing the request's `Authorization: Basic ..` (the password in base64) or the
        // password itself, at every position around the cut of the body for the log (MAX_ERROR_BODY bytes).
        let basic = basic();
        let mut cases = Vec::new();
        for secret in [basic.as_str(), PASSWORD] {
            for pad in MAX_ERROR_BODY - secret.len() - 2..=MAX_ERROR_BODY {
                cases.push((secret.to_owned(), pad));
            }
        }
        let answers = cases
            .iter()
            .map(|(secret, pad)| answer(400, &format!("{}{secret} and more", "x".repeat(*pad))))
            .collect();
        let (addr, _seen) = serve(answers);
        let mut t = with_auth(addr);
        block_on(async {
            for (secret, pad) in &cases {
                let text = t.send(b"m f=1 1\n", 1).await.unwrap_err().to_string();
                assert_hidden(PASSWORD, &text, &format!("pad {pad}"));
                assert_hidden(&basic, &text, &format!("pad {pad}"));
                if *pad == 500 {
                    // Replaced first, then cut: 500 + 12 bytes are exactly the 512 kept.
                    assert_eq!(text, format!("status 400: {}**REDACTED**", "x".repeat(500)), "{secret}");
                }
            }
        });
    }

    #[test]
    fn the_password_echoed_by_a_set_up_query_never_shows() {
        let refusal = format!(r#"{{"results":[{{"statement_id":0,"error":"who is {PASSWORD}?"}}]}}"#);
        let (addr, _seen) = serve(vec![
            answer(500, &format!("proxy: Authorization: Basic {}", basic())),
            answer(200, &refusal),
        ]);
        let mut t = with_auth(addr);
        let text = block_on(t.prepare()).unwrap_err().to_string();
        assert_eq!(text, "status 500: proxy: Authorization: Basic **REDACTED**");
        let text = block_on(t.prepare()).unwrap_err().to_string();
        assert_eq!(
            text,
            "setup failed: InfluxDB refused `show databases`: who is **REDACTED**?"
        );
    }

    #[test]
    fn a_huge_ping_refusal_is_read_only_as_far_as_it_is_shown_and_its_connection_dropped() {
        const HUGE: usize = 64 << 20;
        let (addr, written) = serve_huge(503, &format!("proxy: Basic {}", basic()), HUGE);
        let mut t = with_auth(addr);
        block_on(async {
            let text = t.contact().await.unwrap_err().to_string();
            let shown = format!("proxy: Basic **REDACTED**{}", "y".repeat(MAX_ERROR_BODY));
            assert_eq!(text, format!("status 503: /ping: {}", &shown[..MAX_ERROR_BODY]));
            // Still inside the runtime: the server sees the connection closed before it wrote the whole body.
            let written = tokio::task::spawn_blocking(move || written.recv_timeout(Duration::from_secs(20)))
                .await
                .unwrap()
                .expect("the server stopped writing");
            assert!(written < HUGE, "the client took all {written} bytes");
        });
    }

    #[test]
    fn url_encode_matches_the_startup_requests_butler_sos_sends() {
        assert_eq!(url_encode("show databases"), "show%20databases");
        assert_eq!(
            url_encode("create database \"senseops\""),
            "create%20database%20%22senseops%22"
        );
    }
}
