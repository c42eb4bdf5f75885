use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;

use super::*;
use crate::sink::http::test_server::block_on;

/// What the scripted server does after reading one request.
enum Step {
    /// Writes these bytes (a whole answer, or several).
    Answer(&'static str),
    /// Writes these bytes, then closes the connection at once (a server whose keep-alive ends, or an answer whose
    /// body runs to the close).
    AnswerAndClose(&'static str),
    /// Writes the first part, then (after a pause long enough for the client to read it on its own) the second:
    /// an answer in two reads.
    InParts(&'static str, &'static str),
    /// Closes the connection without answering.
    Close,
    /// Never answers (the connection stays open until the test ends).
    Silent,
}

/// One request as the server read it: the connection's number (from 0) and the request's bytes.
type Seen = (usize, String);

/// A server that runs `script[i]` on its i-th connection, one step per request read; after its last step a
/// connection stays open until the client closes it. Reports each request it read.
fn scripted(script: Vec<Vec<Step>>) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, steps) in script.into_iter().enumerate() {
            let Ok((mut conn, _)) = listener.accept() else { return };
            let mut closed = false;
            for step in steps {
                let Some(request) = read_request(&mut conn) else { break };
                let _ = tx.send((n, request));
                match step {
                    Step::Answer(raw) => {
                        let _ = conn.write_all(raw.as_bytes());
                    }
                    Step::AnswerAndClose(raw) => {
                        let _ = conn.write_all(raw.as_bytes());
                        closed = true;
                        break;
                    }
                    Step::InParts(first, second) => {
                        let _ = conn.write_all(first.as_bytes());
                        std::thread::sleep(Duration::from_millis(50));
                        let _ = conn.write_all(second.as_bytes());
                    }
                    Step::Close => {
                        closed = true;
                        break;
                    }
                    Step::Silent => {
                        std::thread::sleep(Duration::from_secs(60));
                        return;
                    }
                }
            }
            // After its last answer a connection is kept until the client lets go.
            if !closed && read_request(&mut conn).is_some() {
                let _ = tx.send((n, "(an unscripted request)".into()));
            }
        }
    });
    (addr, rx)
}

/// One request (head and `content-length` body) as text; `None` at the end of the stream.
fn read_request(conn: &mut std::net::TcpStream) -> Option<String> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0; len];
    conn.read_exact(&mut body).ok()?;
    raw.extend_from_slice(&body);
    Some(String::from_utf8_lossy(&raw).into_owned())
}

const NO_CONTENT: &str = "HTTP/1.1 204 No Content\r\nX-Influxdb-Version: 1.8.10\r\n\r\n";

fn wire(addr: SocketAddr, timeout: Duration) -> Wire {
    Wire::new(&addr.ip().to_string(), addr.port(), "sense-ingest/test", timeout)
}

/// `n` writes of `body` with a token header, each answer's status.
fn post_n(w: &mut Wire, n: usize, body: &[u8]) -> Vec<Result<u16, SinkError>> {
    let token = HeaderValue::from_static("Token s3cret");
    block_on(async {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(
                w.post("/write?db=senseops&precision=n", &[("authorization", &token)], body)
                    .await
                    .map(|a| a.status),
            );
        }
        out
    })
}

#[test]
fn writes_share_one_connection_and_carry_host_agent_length_headers_and_body() {
    let (addr, seen) = scripted(vec![vec![
        Step::Answer(NO_CONTENT),
        Step::Answer(NO_CONTENT),
        Step::Answer(NO_CONTENT),
    ]]);
    let mut w = wire(addr, Duration::from_secs(10));
    let results = post_n(&mut w, 3, b"m f=1i 1\n");
    assert_eq!(
        results.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [204, 204, 204]
    );
    let requests: Vec<Seen> = seen.try_iter().collect();
    assert_eq!(requests.len(), 3);
    let expected = format!(
        "POST /write?db=senseops&precision=n HTTP/1.1\r\nhost: {addr}\r\nuser-agent: sense-ingest/test\r\n\
         accept: */*\r\nauthorization: Token s3cret\r\ncontent-length: 9\r\n\r\nm f=1i 1\n"
    );
    for (conn, request) in &requests {
        assert_eq!(*conn, 0, "every write on the first connection");
        assert_eq!(request, &expected);
    }
}

#[test]
fn a_connection_the_server_closed_while_idle_is_replaced_without_an_error() {
    // The server answers, then closes the connection (its keep-alive timeout), with no `Connection: close`.
    let (addr, seen) = scripted(vec![
        vec![Step::AnswerAndClose(NO_CONTENT)],
        vec![Step::Answer(NO_CONTENT)],
    ]);
    let mut w = wire(addr, Duration::from_secs(10));
    let token = HeaderValue::from_static("x");
    let results = block_on(async {
        let first = w.post("/w", &[("authorization", &token)], b"a").await.map(|a| a.status);
        // Wait until the server has closed the first connection.
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.conn.as_ref().is_some_and(still_open) {
            assert!(Instant::now() < deadline, "the server never closed the connection");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (first, w.post("/w", &[], b"b").await.map(|a| a.status))
    });
    assert_eq!((results.0.unwrap(), results.1.unwrap()), (204, 204));
    let conns: Vec<usize> = seen.try_iter().map(|(c, _)| c).collect();
    assert_eq!(conns, [0, 1], "the second write went out once, on a new connection");
}

#[test]
fn a_write_that_gets_no_answer_on_a_reused_connection_is_sent_once_more_on_a_new_one() {
    // The race the peek cannot see: the server reads the second request and closes without answering.
    let (addr, seen) = scripted(vec![
        vec![Step::Answer(NO_CONTENT), Step::Close],
        vec![Step::Answer(NO_CONTENT)],
    ]);
    let mut w = wire(addr, Duration::from_secs(10));
    let results = post_n(&mut w, 2, b"x");
    assert_eq!(results.into_iter().map(Result::unwrap).collect::<Vec<_>>(), [204, 204]);
    let conns: Vec<usize> = seen.try_iter().map(|(c, _)| c).collect();
    assert_eq!(conns, [0, 0, 1]);
}

#[test]
fn a_new_connection_closed_without_an_answer_is_an_error_and_is_not_sent_again() {
    let (addr, seen) = scripted(vec![vec![Step::Close], vec![Step::Answer(NO_CONTENT)]]);
    let mut w = wire(addr, Duration::from_secs(10));
    let e = post_n(&mut w, 1, b"x").pop().unwrap().unwrap_err();
    assert!(
        matches!(&e, SinkError::Connection(m) if m.contains("closed before an answer")),
        "{e:?}"
    );
    assert_eq!(seen.try_iter().count(), 1, "sent once");
}

#[test]
fn a_chunked_refusal_keeps_its_whole_body_its_retry_after_and_the_connection() {
    let refusal = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nTransfer-Encoding: chunked\r\n\r\n\
                   8;ext=1\r\npartial \r\n12\r\nwrite: x dropped=3\r\n0\r\nX-Trailer: t\r\n\r\n";
    let (addr, seen) = scripted(vec![vec![Step::Answer(refusal), Step::Answer(NO_CONTENT)]]);
    let mut w = wire(addr, Duration::from_secs(10));
    // One runtime for both writes, as on a delivery thread: the kept connection belongs to it.
    let (answer, next) = block_on(async { (w.post("/w", &[], b"x").await, w.post("/w", &[], b"y").await) });
    let answer = answer.unwrap();
    assert_eq!(answer.status, 429);
    assert_eq!(answer.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(&answer.body[..], b"partial write: x dropped=3");
    assert_eq!(next.unwrap().status, 204);
    let conns: Vec<usize> = seen.try_iter().map(|(c, _)| c).collect();
    assert_eq!(conns, [0, 0], "the connection was kept after the chunked answer");
}

#[test]
fn connection_close_and_an_answer_that_runs_to_the_close_end_the_connection() {
    let closing = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 5\r\n\r\nnope!";
    // HTTP/1.1, so only the missing length (not the version) says the body runs to the close.
    let unframed = "HTTP/1.1 500 Oops\r\n\r\nall of this";
    let (addr, seen) = scripted(vec![
        vec![Step::AnswerAndClose(closing)],
        vec![Step::AnswerAndClose(unframed)],
        vec![Step::Answer(NO_CONTENT)],
    ]);
    let mut w = wire(addr, Duration::from_secs(10));
    let a = block_on(w.post("/w", &[], b"1")).unwrap();
    assert_eq!((a.status, &a.body[..]), (400, &b"nope!"[..]));
    assert!(w.conn.is_none());
    // The server closes after writing, so the unframed body ends at the close.
    let b = block_on(w.post("/w", &[], b"2")).unwrap();
    assert_eq!((b.status, &b.body[..]), (500, &b"all of this"[..]));
    assert!(w.conn.is_none());
    assert_eq!(block_on(w.post("/w", &[], b"3")).unwrap().status, 204);
    let conns: Vec<usize> = seen.try_iter().map(|(c, _)| c).collect();
    assert_eq!(conns, [0, 1, 2]);
}

#[test]
fn an_interim_answer_is_skipped_also_when_the_real_one_comes_in_a_later_read() {
    let (addr, _seen) = scripted(vec![vec![
        Step::Answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
        Step::InParts("HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 204 No Content\r\n\r\n"),
    ]]);
    let mut w = wire(addr, Duration::from_secs(10));
    let (a, b) = block_on(async { (w.post("/w", &[], b"1").await, w.post("/w", &[], b"2").await) });
    assert_eq!((a.unwrap().status, b.unwrap().status), (204, 204));
    assert!(w.conn.is_some());
}

#[test]
fn a_request_that_got_an_interim_answer_is_not_sent_again_when_the_connection_then_closes() {
    // The server has shown it received the request (100 Continue) and then closed: resending could repeat it.
    let (addr, seen) = scripted(vec![
        vec![
            Step::Answer(NO_CONTENT),
            Step::AnswerAndClose("HTTP/1.1 100 Continue\r\n\r\n"),
        ],
        vec![Step::Answer(NO_CONTENT)],
    ]);
    let mut w = wire(addr, Duration::from_secs(10));
    let (a, b) = block_on(async { (w.post("/w", &[], b"1").await, w.post("/w", &[], b"2").await) });
    assert_eq!(a.unwrap().status, 204);
    let e = b.unwrap_err();
    assert!(
        matches!(&e, SinkError::Connection(m) if m.contains("closed before an answer")),
        "{e:?}"
    );
    let conns: Vec<usize> = seen.try_iter().map(|(c, _)| c).collect();
    assert_eq!(conns, [0, 0], "not sent a second time");
}

#[test]
fn the_status_stands_when_the_body_cannot_be_read_whole() {
    // A 413 cut short must still split the batch (a Status, not a connection error), as with reqwest.
    let (addr, _seen) = scripted(vec![
        vec![Step::AnswerAndClose(
            "HTTP/1.1 413 Too Large\r\nContent-Length: 100\r\n\r\nshort",
        )],
        vec![Step::AnswerAndClose(
            "HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        )],
        vec![Step::Answer("HTTP/1.1 400 Bad\r\nContent-Length: +5\r\n\r\nhello")],
        vec![Step::Answer(
            "HTTP/1.1 400 Bad\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        )],
        vec![Step::Answer(NO_CONTENT)],
    ]);
    let mut w = wire(addr, Duration::from_secs(10));
    for expected in [413, 400, 400, 400] {
        let a = block_on(w.post("/w", &[], b"x")).unwrap();
        assert_eq!((a.status, a.body.len()), (expected, 0));
        assert!(
            w.conn.is_none(),
            "a connection whose answer was not read whole is not kept"
        );
    }
    assert_eq!(block_on(w.post("/w", &[], b"x")).unwrap().status, 204);
}

#[test]
fn a_transfer_coding_other_than_chunked_runs_to_the_close_whatever_the_length_says() {
    let (addr, _seen) = scripted(vec![vec![Step::AnswerAndClose(
        "HTTP/1.1 500 Oops\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nall of this",
    )]]);
    let mut w = wire(addr, Duration::from_secs(10));
    let a = block_on(w.post("/w", &[], b"x")).unwrap();
    assert_eq!((a.status, &a.body[..]), (500, &b"all of this"[..]));
    assert!(w.conn.is_none());
}

#[test]
fn bytes_after_an_answer_and_data_arriving_unasked_end_the_connection() {
    let (addr, seen) = scripted(vec![
        vec![Step::Answer("HTTP/1.1 204 No Content\r\n\r\nJUNK")],
        // An answer, then (while the connection idles) an unasked one, as servers send 408 before closing.
        vec![Step::InParts(
            NO_CONTENT,
            "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n",
        )],
        vec![Step::Answer(NO_CONTENT)],
    ]);
    let mut w = wire(addr, Duration::from_secs(10));
    let results = block_on(async {
        let first = w.post("/w", &[], b"1").await.map(|a| a.status);
        let second = w.post("/w", &[], b"2").await.map(|a| a.status);
        // Wait until the unasked answer is there: the peek then refuses the connection.
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.conn.as_ref().is_some_and(still_open) {
            assert!(Instant::now() < deadline, "the unasked answer never came");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let third = w.post("/w", &[], b"3").await.map(|a| a.status);
        (first.unwrap(), second.unwrap(), third.unwrap())
    });
    assert_eq!(results, (204, 204, 204));
    let conns: Vec<usize> = seen.try_iter().map(|(c, _)| c).collect();
    assert_eq!(conns, [0, 1, 2]);
}

#[test]
fn a_connection_idle_longer_than_the_limit_is_replaced() {
    let (addr, seen) = scripted(vec![vec![Step::Answer(NO_CONTENT)], vec![Step::Answer(NO_CONTENT)]]);
    let mut w = wire(addr, Duration::from_secs(10));
    let results = block_on(async {
        let first = w.post("/w", &[], b"1").await.map(|a| a.status);
        // As if the connection had idled past the limit (a NAT may have forgotten it without a word).
        w.last_used = Instant::now().checked_sub(IDLE_LIMIT + Duration::from_secs(1)).unwrap();
        (first.unwrap(), w.post("/w", &[], b"2").await.map(|a| a.status).unwrap())
    });
    assert_eq!(results, (204, 204));
    let conns: Vec<usize> = seen.try_iter().map(|(c, _)| c).collect();
    assert_eq!(conns, [0, 1]);
}

#[test]
fn a_101_is_an_error_not_an_interim_answer() {
    let (addr, _seen) = scripted(vec![vec![Step::Answer("HTTP/1.1 101 Switching Protocols\r\n\r\n")]]);
    let mut w = wire(addr, Duration::from_secs(10));
    let e = block_on(w.post("/w", &[], b"1")).unwrap_err();
    assert!(matches!(&e, SinkError::Connection(m) if m.contains("101")), "{e:?}");
}

#[test]
fn a_head_with_bare_line_feeds_is_read() {
    let (addr, _seen) = scripted(vec![vec![Step::Answer(
        "HTTP/1.1 429 Slow Down\nRetry-After: 3\nContent-Length: 2\n\nok",
    )]]);
    let mut w = wire(addr, Duration::from_secs(10));
    let a = block_on(w.post("/w", &[], b"1")).unwrap();
    assert_eq!(
        (a.status, a.retry_after, &a.body[..]),
        (429, Some(Duration::from_secs(3)), &b"ok"[..])
    );
}

#[test]
fn a_silent_server_fails_the_write_at_the_timeout_and_the_connection_is_dropped() {
    let (addr, _seen) = scripted(vec![vec![Step::Silent]]);
    let mut w = wire(addr, Duration::from_millis(200));
    let e = block_on(w.post("/w", &[], b"1")).unwrap_err();
    assert!(
        matches!(&e, SinkError::Connection(m) if m.contains("within 200ms")),
        "{e:?}"
    );
    assert!(w.conn.is_none());
}

#[test]
fn an_answer_over_the_limit_keeps_its_status_and_is_not_read() {
    // The server sends only the head and waits: reading the announced body would run into the timeout.
    let huge: &'static str =
        Box::leak(format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n", MAX_ANSWER + 1).into_boxed_str());
    let (addr, _seen) = scripted(vec![vec![Step::Answer(huge)]]);
    let mut w = wire(addr, Duration::from_secs(10));
    let a = block_on(w.post("/w", &[], b"1")).unwrap();
    assert_eq!((a.status, a.body.len()), (400, 0));
    assert!(w.conn.is_none());
}

#[test]
fn nobody_listening_is_a_connection_error() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut w = Wire::new("127.0.0.1", port, "t", Duration::from_secs(10));
    let e = block_on(w.post("/w", &[], b"1")).unwrap_err();
    assert!(matches!(e, SinkError::Connection(_)), "{e:?}");
}

#[test]
fn debug_output_names_the_origin_and_never_a_header() {
    let (addr, _seen) = scripted(vec![vec![Step::Answer(NO_CONTENT)]]);
    let mut w = wire(addr, Duration::from_secs(10));
    post_n(&mut w, 1, b"x").pop().unwrap().unwrap();
    let shown = format!("{w:?}");
    assert!(shown.contains(&addr.to_string()), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn ipv6_literals_are_bracketed_in_the_host_header() {
    assert_eq!(
        Wire::new("::1", 8086, "t", Duration::from_secs(1)).authority(),
        "[::1]:8086"
    );
    assert_eq!(
        Wire::new("[::1]", 8086, "t", Duration::from_secs(1)).authority(),
        "[::1]:8086"
    );
    assert_eq!(
        Wire::new("influx.local", 80, "t", Duration::from_secs(1)).authority(),
        "influx.local:80"
    );
}

#[test]
fn chunked_bodies_are_decoded_only_when_whole_and_bad_ones_are_refused() {
    let decode = |raw: &[u8]| {
        let mut c = Chunked::default();
        c.advance(raw).map(|done| done.map(|used| (c.body.clone(), used)))
    };
    assert_eq!(
        decode(b"3\r\nabc\r\n0\r\n\r\nrest").unwrap(),
        Some((b"abc".to_vec(), 13))
    );
    assert_eq!(decode(b"3\r\nabc\r\n0\r\n").unwrap(), None);
    assert_eq!(decode(b"3\r\nab").unwrap(), None);
    assert!(decode(b"zz\r\n").is_err());
    assert!(decode(b"3\r\nabcXY0\r\n\r\n").is_err());
    assert!(decode(format!("{:x}\r\n", MAX_ANSWER + 1).as_bytes()).is_err());
    assert!(decode(&vec![b'1'; MAX_CHUNK_LINE + 1]).is_err());
}

#[test]
fn the_trailers_of_a_chunked_body_are_capped_in_total_not_only_per_line() {
    let decode = |raw: &[u8]| {
        let mut c = Chunked::default();
        c.advance(raw).map(|done| done.map(|used| (c.body.clone(), used)))
    };
    let start = b"1\r\nx\r\n0\r\n";
    let line = b"x-pad: 0123456789\r\n";
    let too_many = format!("the trailers of a chunked answer are over {MAX_TRAILERS} bytes");

    // Short lines that keep coming: refused as soon as they add up to more than MAX_TRAILERS, in one read or
    // line by line.
    let mut raw = start.to_vec();
    (0..2_000).for_each(|_| raw.extend_from_slice(line));
    assert_eq!(decode(&raw), Err(too_many.clone()));
    let mut c = Chunked::default();
    let mut raw = start.to_vec();
    for n in 1..=2_000 {
        raw.extend_from_slice(line);
        let expected = if n * line.len() <= MAX_TRAILERS {
            Ok(None)
        } else {
            Err(too_many.clone())
        };
        assert_eq!(c.advance(&raw), expected, "after {n} trailer lines");
        if expected.is_err() {
            break;
        }
    }

    // The limit counts the whole trailer section, its closing empty line included.
    let section = |len: usize| {
        let mut raw = start.to_vec();
        raw.extend_from_slice(format!("x: {}\r\n\r\n", "y".repeat(len - 7)).as_bytes());
        raw
    };
    let whole = section(MAX_TRAILERS);
    assert_eq!(decode(&whole), Ok(Some((b"x".to_vec(), whole.len()))));
    assert_eq!(decode(&section(MAX_TRAILERS + 1)), Err(too_many));

    // A normal small trailer.
    assert_eq!(
        decode(b"1\r\nx\r\n0\r\nx-pad: 0123456789\r\n\r\n"),
        Ok(Some((b"x".to_vec(), 30)))
    );
}

#[test]
fn an_answer_whose_trailers_never_end_keeps_its_status_without_waiting_for_the_timeout() {
    let mut raw = "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n".to_string();
    (0..2_000).for_each(|_| raw.push_str("x-pad: 0123456789\r\n"));
    let (addr, _seen) = scripted(vec![vec![Step::Answer(Box::leak(raw.into_boxed_str()))]]);
    let mut w = wire(addr, Duration::from_secs(30));
    let a = block_on(w.post("/w", &[], b"1")).unwrap();
    assert_eq!((a.status, a.body.len()), (400, 0));
    assert!(
        w.conn.is_none(),
        "a connection whose answer was not read whole is not kept"
    );
}

#[test]
fn a_chunked_body_arriving_a_byte_at_a_time_is_decoded_once_and_whole() {
    let raw = b"4;x=y\r\nwiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: t\r\n\r\n";
    let mut c = Chunked::default();
    let mut taken = 0;
    for end in 1..=raw.len() {
        let done = c.advance(&raw[..end]).unwrap();
        // Progress never goes back: what was taken is not decoded again.
        assert!(c.at >= taken && c.at <= end, "at {} after {taken}, {end} bytes", c.at);
        taken = c.at;
        if end < raw.len() {
            assert_eq!(done, None, "complete after {end} of {} bytes", raw.len());
        } else {
            assert_eq!(done, Some(raw.len()));
        }
    }
    assert_eq!(c.body, b"wikipedia in\r\n\r\nchunks.");
}

#[test]
fn the_end_of_a_head_is_found_across_reads_without_scanning_again() {
    let head = b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n";
    let mut scanned = 0;
    for end in 1..head.len() {
        assert_eq!(head_end(&head[..end], &mut scanned), None, "{end}");
        assert_eq!(scanned, end);
    }
    assert_eq!(head_end(head, &mut scanned), Some(head.len()));
}

/// One chunk of a one-byte body with a chunk extension that fills its chunk-size line to 1,000 bytes (within
/// `MAX_CHUNK_LINE`): 1,005 bytes on the wire for each byte of body.
fn padded_chunk() -> Vec<u8> {
    let line = format!("1;e={}", "a".repeat(996));
    assert_eq!(line.len(), 1000);
    format!("{line}\r\nx\r\n").into_bytes()
}

/// A whole chunked body of exactly `len` bytes on the wire: [`padded_chunk`]s, one chunk of `z`s to make up the
/// length, the last chunk; and how many bytes it decodes to.
fn chunked_of(len: usize) -> (Vec<u8>, usize) {
    let chunk = padded_chunk();
    let mut raw = Vec::with_capacity(len);
    let mut body = 0;
    while len - raw.len() >= chunk.len() + 64 {
        raw.extend_from_slice(&chunk);
        body += 1;
    }
    // The filler chunk: its size line, data and CRLF take what is left but the last chunk's 5 bytes.
    let room = len - raw.len() - b"0\r\n\r\n".len();
    let size = (1..room)
        .rev()
        .find(|s| format!("{s:x}").len() + 4 + s == room)
        .unwrap();
    raw.extend_from_slice(format!("{size:x}\r\n").as_bytes());
    raw.resize(raw.len() + size, b'z');
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(raw.len(), len);
    (raw, body + size)
}

#[test]
fn a_chunked_body_is_capped_by_its_bytes_on_the_wire_not_only_by_its_decoded_bytes() {
    let decode = |raw: &[u8]| {
        let mut c = Chunked::default();
        c.advance(raw).map(|done| done.map(|used| (c.body.len(), used)))
    };
    let over = Err(format!(
        "a chunked answer is over {MAX_ANSWER} bytes as sent (chunk framing included)"
    ));
    // Tiny chunks with long extensions: 16 MiB on the wire decode to 17 KB. Exactly MAX_ANSWER bytes on the wire
    // are read; one byte more is refused.
    let (raw, body) = chunked_of(MAX_ANSWER);
    assert_eq!(decode(&raw), Ok(Some((body, MAX_ANSWER))));
    assert!(body < 20_000, "{body}");
    assert_eq!(decode(&chunked_of(MAX_ANSWER + 1).0), over);
    // Still arriving and already past the limit: refused at once, not kept until the body ends (the buffer holds
    // every byte on the wire until then) or the timeout.
    let chunk = padded_chunk();
    let mut endless = Vec::with_capacity(MAX_ANSWER + chunk.len());
    while endless.len() <= MAX_ANSWER {
        endless.extend_from_slice(&chunk);
    }
    assert_eq!(decode(&endless), over);
    // A chunk announced to end past the limit is refused before its data arrives.
    assert_eq!(decode(format!("{:x}\r\n", MAX_ANSWER - 4).as_bytes()), over);
}

#[test]
fn a_server_streaming_tiny_chunks_with_long_extensions_is_cut_off_at_the_limit() {
    // 64 MiB on the wire of one-byte chunks (65 KB of body), then the last chunk.
    const TOTAL: usize = 64 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, written) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else { return };
        if read_request(&mut conn).is_none() {
            return;
        }
        let piece = padded_chunk().repeat(64);
        let mut sent = 0;
        let mut ok = conn
            .write_all(b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n")
            .is_ok();
        while ok && sent + piece.len() <= TOTAL {
            ok = conn.write_all(&piece).is_ok();
            sent += piece.len();
        }
        ok = ok && conn.write_all(b"0\r\n\r\n").is_ok();
        let _ = tx.send((sent, ok));
    });
    let mut w = wire(addr, Duration::from_secs(30));
    let a = block_on(w.post("/w", &[], b"1")).unwrap();
    // The status stands; the body over the limit is not kept, nor is the connection.
    assert_eq!((a.status, a.body.len()), (400, 0));
    assert!(w.conn.is_none());
    let (sent, ok) = written
        .recv_timeout(Duration::from_secs(20))
        .expect("the server stopped writing");
    assert!(!ok && sent < TOTAL, "the client took all {sent} bytes");
}
