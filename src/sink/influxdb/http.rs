//! What the three InfluxDB API versions share: the client with `sense-ingest.influxdbTls`, the destination's
//! [`Endpoint`], the gzipped line-protocol write of v2 and v3, and the reading of a partial-write answer.

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};

use crate::config::{HttpTls, InfluxConfig};
use crate::sink::http::{self, Poster};
use crate::sink::{Endpoint, SinkError};

/// The HTTP client every InfluxDB transport uses, with `sense-ingest.influxdbTls` applied.
pub(crate) fn influx_client(timeout: Duration, tls: &HttpTls) -> Result<reqwest::Client, SinkError> {
    // No proxy from the environment (`HTTP_PROXY`): Butler SOS talks to InfluxDB directly, and so do the writes on
    // the lean plain-http client.
    http::client(timeout, tls, "sense-ingest.influxdbTls", "influxdb", |b| b.no_proxy())
}

/// Where the writes of `config`'s server go: `target` (path and query) over `client` with
/// `sense-ingest.influxdbTls`, else over the lean plain-http client, with `timeout` per request.
pub(crate) fn influx_writes(
    client: &reqwest::Client,
    config: &InfluxConfig,
    target: &str,
    timeout: Duration,
) -> Result<Poster, SinkError> {
    Poster::new(client, &config.host, config.port, config.tls.enable, target, timeout)
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

/// A write the server answered with something other than 200/204.
pub(crate) struct Refused {
    pub status: u16,
    pub retry: Option<Duration>,
    pub body: bytes::Bytes,
}

/// POSTs `items` gzipped, as line protocol, with the `auth` header through `writes` (the v2 and v3 write APIs take
/// the same request). `Ok(None)`: written (200/204); `Ok(Some(..))`: the server's refusal, for the caller to
/// interpret.
pub(crate) async fn write_gzipped(
    writes: &mut Poster,
    auth: &HeaderValue,
    items: &[u8],
) -> Result<Option<Refused>, SinkError> {
    let body = http::gzip(&[items], items.len() / 4 + 64)?;
    let answer = writes
        .post(
            &[
                (AUTHORIZATION.as_str(), auth),
                (
                    CONTENT_TYPE.as_str(),
                    &HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                (CONTENT_ENCODING.as_str(), &HeaderValue::from_static("gzip")),
            ],
            bytes::Bytes::from(body),
        )
        .await?;
    if answer.status == 204 || answer.status == 200 {
        return Ok(None);
    }
    Ok(Some(Refused {
        status: answer.status,
        retry: answer.retry_after,
        body: answer.body,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

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
        flate2::read::GzDecoder::new(&http::gzip(&[&data[..10], &data[10..]], 16).unwrap()[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }
}
