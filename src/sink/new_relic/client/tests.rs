use std::io::Read;
use std::net::TcpListener;

use super::*;
use crate::config::{Secret, Tag};
use crate::sink::http::test_server::{block_on, serve, serve_huge};
use crate::sink::http::MAX_ERROR_BODY;

const KEY: &str = "NRII-unit-test-key-0123456789";

fn account() -> NewRelicAccount {
    NewRelicAccount {
        name: "NR account A".into(),
        id: "1111111".into(),
        insert_key: Secret::new(KEY),
    }
}

fn config(url: &str, headers: &[(&str, &str)]) -> NewRelicConfig {
    NewRelicConfig {
        enable: true,
        event_url: url.into(),
        event_headers: headers
            .iter()
            .map(|(n, v)| Tag {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        tls: Default::default(),
    }
}

fn gunzip(body: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(body).read_to_string(&mut out).unwrap();
    out
}

const ITEMS: &[u8] = br#"{"a":"1","eventType":"qs_userEvent"},{"a":"2","eventType":"qs_userEvent"},"#;

#[test]
fn posts_one_gzip_json_array_with_butler_sos_headers_and_our_user_agent() {
    let (addr, seen) = serve(vec![(202, vec![], r#"{"success":true,"uuid":"u"}"#.into())]);
    let cfg = config(
        &format!("http://{addr}/"),
        &[("X-Custom", "yes"), ("Api-Key", "configured-key-loses")],
    );
    let mut t = NewRelicTransport::new(&cfg, &account()).unwrap();
    assert_eq!(t.url(), format!("http://{addr}/v1/accounts/1111111/events"));
    block_on(t.send(ITEMS, 2)).unwrap();
    let req = seen.recv().unwrap();
    assert_eq!(req.request_line, "POST /v1/accounts/1111111/events HTTP/1.1");
    assert_eq!(req.header("api-key"), Some(KEY));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("content-encoding"), Some("gzip"));
    assert_eq!(req.header("x-custom"), Some("yes"));
    assert_eq!(
        req.header("user-agent"),
        Some(concat!("sense-ingest/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(
        gunzip(&req.body),
        r#"[{"a":"1","eventType":"qs_userEvent"},{"a":"2","eventType":"qs_userEvent"}]"#
    );
}

#[test]
fn header_names_go_out_title_cased_like_butler_sos() {
    let (addr, seen) = serve(vec![(200, vec![], String::new())]);
    let mut t = NewRelicTransport::new(&config(&format!("http://{addr}"), &[]), &account()).unwrap();
    block_on(t.send(ITEMS, 2)).unwrap();
    let req = seen.recv().unwrap();
    let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["Api-Key", "Content-Type", "Content-Encoding", "User-Agent"] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
}

#[test]
fn statuses_map_to_retry_split_or_final() {
    let echo = format!("{{\"error\":\"invalid key {KEY}\"}}");
    let (addr, _seen) = serve(vec![
        (200, vec![], String::new()),
        (429, vec![("Retry-After", "3".into())], "slow down".into()),
        (503, vec![], "unavailable".into()),
        (408, vec![], String::new()),
        (413, vec![], "too large".into()),
        (403, vec![], echo),
        (400, vec![], "bad".into()),
        (301, vec![("Location", "http://elsewhere/".into())], String::new()),
    ]);
    let mut t = NewRelicTransport::new(&config(&format!("http://{addr}"), &[]), &account()).unwrap();
    block_on(async {
        t.send(ITEMS, 2).await.unwrap();

        let e = t.send(ITEMS, 2).await.unwrap_err();
        assert!(e.is_retriable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));

        let e = t.send(ITEMS, 2).await.unwrap_err();
        assert!(e.is_retriable() && !e.is_too_large(), "{e}");
        assert!(e.to_string().contains("unavailable"), "{e}");

        assert!(t.send(ITEMS, 2).await.unwrap_err().is_retriable());

        let e = t.send(ITEMS, 2).await.unwrap_err();
        assert!(e.is_too_large(), "{e}");

        let e = t.send(ITEMS, 2).await.unwrap_err();
        assert!(!e.is_retriable() && !e.is_too_large(), "{e}");
        let text = e.to_string();
        assert!(text.starts_with("status 403: "), "{text}");
        assert!(text.contains("invalid key **REDACTED**"), "{text}");
        assert!(text.contains("insertApiKey") && !text.contains(KEY), "{text}");
        assert!(text.contains("\"NR account A\" (1111111)"), "{text}");

        assert!(!t.send(ITEMS, 2).await.unwrap_err().is_retriable());

        let e = t.send(ITEMS, 2).await.unwrap_err();
        assert!(!e.is_retriable(), "{e}");
        assert!(e.to_string().contains("http://elsewhere/"), "{e}");
    });
}

#[test]
fn a_key_echoed_across_the_cut_of_an_error_body_is_redacted_not_cut() {
    // A proxy's error page that echoes the key where the body is cut for the log (MAX_ERROR_BODY bytes): for
    // every position of the key around the cut, no 8 characters of it may show.
    let pads: Vec<usize> = (MAX_ERROR_BODY - KEY.len() - 2..=MAX_ERROR_BODY).collect();
    let answers = pads
        .iter()
        .map(|&pad| (400, vec![], format!("{}{KEY} and more", "x".repeat(pad))))
        .collect();
    let (addr, _seen) = serve(answers);
    let mut t = NewRelicTransport::new(&config(&format!("http://{addr}"), &[]), &account()).unwrap();
    block_on(async {
        for &pad in &pads {
            let text = t.send(ITEMS, 2).await.unwrap_err().to_string();
            for window in KEY.as_bytes().windows(8) {
                let window = std::str::from_utf8(window).unwrap();
                assert!(!text.contains(window), "pad {pad}: {window:?} shows in {text}");
            }
            if pad == 500 {
                // The redaction comes first, then the cut: 500 + 12 bytes is exactly the 512 kept.
                assert_eq!(
                    text,
                    format!(
                        "status 400: new relic account \"NR account A\" (1111111): {}**REDACTED**",
                        "x".repeat(500)
                    )
                );
            }
        }
    });
}

#[test]
fn a_huge_error_body_is_read_only_as_far_as_it_is_shown_and_its_connection_dropped() {
    // A broken or hostile endpoint (or a proxy) answers 400 with 64 MiB of body: the error comes with the text
    // shown (the key hidden) while the server is still writing, and the client then lets the connection go.
    const HUGE: usize = 64 << 20;
    let (addr, written) = serve_huge(400, &format!("{}{KEY} and more", "x".repeat(500)), HUGE);
    let mut t = NewRelicTransport::new(&config(&format!("http://{addr}"), &[]), &account()).unwrap();
    block_on(async {
        let text = t.send(ITEMS, 2).await.unwrap_err().to_string();
        assert_eq!(
            text,
            format!(
                "status 400: new relic account \"NR account A\" (1111111): {}**REDACTED**",
                "x".repeat(500)
            )
        );
        // Still inside the runtime (a connection task could go on reading in the background): the server sees
        // the connection closed before it wrote the whole body.
        let written = tokio::task::spawn_blocking(move || written.recv_timeout(Duration::from_secs(20)))
            .await
            .unwrap()
            .expect("the server stopped writing");
        assert!(written < HUGE, "the client took all {written} bytes");
    });
}

#[test]
fn a_body_over_one_megabyte_is_not_sent_but_answered_413_so_the_worker_splits() {
    // Nothing listens here: an attempt to send would be a connection error, not a 413.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut t = NewRelicTransport::new(&config(&format!("http://127.0.0.1:{port}"), &[]), &account()).unwrap();
    let item = format!("{{\"v\":\"{}\"}},", "x".repeat(990));
    let fits = item.repeat(1000); // 1000 × 999 bytes + brackets - comma = 999_001
    let over = item.repeat(1002);
    assert!(body_len(fits.as_bytes()) <= MAX_BODY_BYTES);
    assert!(body_len(over.as_bytes()) > MAX_BODY_BYTES);
    let e = block_on(t.send(over.as_bytes(), 1002)).unwrap_err();
    assert!(e.is_too_large(), "{e}");
    assert!(e.to_string().contains("not sent"), "{e}");
    let e = block_on(t.send(fits.as_bytes(), 1000)).unwrap_err();
    assert!(matches!(e, SinkError::Connection(_)), "{e}");
    assert_eq!(max_body_bytes(), 1_000_000);
}

#[test]
fn exactly_the_limit_is_allowed() {
    // `[` + n bytes + `]` == 10^6.
    let mut items = vec![b'x'; MAX_BODY_BYTES - 2];
    items.push(b',');
    assert_eq!(body_len(&items), MAX_BODY_BYTES);
    items.insert(0, b'y');
    assert_eq!(body_len(&items), MAX_BODY_BYTES + 1);
}

#[test]
fn gzip_body_round_trips_and_empty_batches_send_nothing() {
    assert_eq!(gunzip(&gzip_body(ITEMS, 16).unwrap()).len(), ITEMS.len() + 1);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut t = NewRelicTransport::new(&config(&format!("http://127.0.0.1:{port}"), &[]), &account()).unwrap();
    block_on(t.send(b"", 0)).unwrap();
    block_on(t.prepare()).unwrap();
}

#[test]
fn the_key_never_shows_in_debug_or_setup_errors() {
    let t = NewRelicTransport::new(&config("https://insights-collector.newrelic.com", &[]), &account()).unwrap();
    assert_eq!(
        t.url(),
        "https://insights-collector.newrelic.com/v1/accounts/1111111/events"
    );
    assert!(!format!("{t:?}").contains(KEY));
    let mut bad = account();
    bad.insert_key = Secret::new("NRII-bad\nkey");
    let e = NewRelicTransport::new(&config("http://127.0.0.1:1", &[]), &bad).unwrap_err();
    assert!(matches!(e, SinkError::Setup(_)));
    assert!(!e.to_string().contains("NRII-bad"), "{e}");
    let e = NewRelicTransport::new(&config("not a url", &[]), &account()).unwrap_err();
    assert!(matches!(e, SinkError::Setup(_)), "{e}");
    let e = NewRelicTransport::new(&config("http://127.0.0.1:1", &[("X", "a\u{1}b")]), &account()).unwrap_err();
    assert!(e.to_string().contains("value not shown"), "{e}");
}

#[test]
fn reserved_headers_from_the_config_are_ignored() {
    let (addr, seen) = serve(vec![(202, vec![], String::new())]);
    let cfg = config(
        &format!("http://{addr}"),
        &[
            ("Content-Encoding", "identity"),
            ("Host", "evil"),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
    );
    let mut t = NewRelicTransport::new(&cfg, &account()).unwrap();
    block_on(t.send(ITEMS, 2)).unwrap();
    let req = seen.recv().unwrap();
    assert_eq!(req.header("content-encoding"), Some("gzip"));
    assert_eq!(req.header("host"), Some(addr.to_string().as_str()));
    // Like Butler SOS, a configured Content-Type replaces the default.
    assert_eq!(req.header("content-type"), Some("application/json; charset=utf-8"));
}
