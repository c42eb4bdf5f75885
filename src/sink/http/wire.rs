//! A lean HTTP/1.1 client for the batch writes of a plain-http destination: one keep-alive connection, each request
//! one vectored write, the answer parsed in place (httparse), nothing allocated per request once the buffers have
//! grown to a batch's size.
//!
//! Why not reqwest here: a batch POST through reqwest costs ~240 us of CPU when batches are 250 ms apart (a real
//! farm's trickle with the default `maxAge`) and ~53 us when they are 5 ms apart; this client costs ~105 and ~19 us
//! (BENCHMARKS.md, "The write path's HTTP client"). Before, the requests were the engine's largest single cost at a
//! trickle. reqwest stays for https (rustls, the trust store) and for the rare set-up calls.
//!
//! The rules:
//! - **Framing** of an answer (RFC 9112 6.3): `Transfer-Encoding` ending in `chunked`, else any other transfer
//!   coding or no length until the server closes, else `Content-Length` (digits only; two different ones make the
//!   body unreadable). 1xx answers are skipped (101 is an error); 204 and 304 have no body. Bodies are read whole up
//!   to [`MAX_ANSWER`] bytes as sent, a chunked body's framing included (an InfluxDB partial-write answer names its
//!   count at the very end; tiny chunks with long extensions must not fill memory with framing), heads up to
//!   [`MAX_HEAD`], a chunked body's trailer section up to [`MAX_TRAILERS`] in all. A head or chunked body that
//!   trickles in is scanned once, not once per read.
//! - **Keep-alive**: the connection is kept unless the answer says `Connection: close`, is HTTP/1.0 without
//!   `keep-alive`, its body ran to the close or could not be read whole, or bytes followed it unasked, and unless
//!   the exchange failed in any way (a connection in an unknown state is never reused). A connection idle for
//!   [`IDLE_LIMIT`] is replaced.
//! - **The status stands** once the head is in: a body that cannot be read whole gives the answer with an empty
//!   body (as reqwest did), so a 413 still splits the batch and a 400 is still final.
//! - **A connection the server closed while idle** (its keep-alive timeout) is found before reuse by a
//!   non-blocking peek. When the server closes it in the race between that peek and the request, so that the
//!   request gets no answer byte at all (not even an interim `100 Continue`), it is sent once more on a new
//!   connection. That is safe for the writes this client carries: an InfluxDB point is identified by measurement,
//!   tag set and timestamp, so writing it twice stores it once.
//! - **Time**: the whole exchange, connect included, must finish within the client's timeout (the connect within
//!   [`super::CONNECT_TIMEOUT`] as well). It runs on the delivery thread's runtime, so the worker's shutdown budget
//!   can still cut it short.

use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{retry_after_value, CONNECT_TIMEOUT};
use crate::sink::SinkError;

/// The longest answer body read, counted in bytes as sent: a chunked body's framing (chunk-size lines with their
/// extensions, trailers) counts too, since the receive buffer holds all of it until the body is whole. Longer
/// ones keep their status with an empty body, and the connection is closed.
const MAX_ANSWER: usize = 16 << 20;

/// The answer buffer kept between requests at most: one long answer (a partial write listing many refused lines)
/// must not hold megabytes for the life of the destination.
const KEPT_BUFFER: usize = 64 << 10;

/// The most answer headers parsed.
const MAX_HEADERS: usize = 64;

/// The longest answer head read (status line and headers); a longer one fails the request.
const MAX_HEAD: usize = 64 << 10;

/// How long a kept connection may sit idle and still be used. A NAT or firewall on the way may forget an idle flow
/// without telling either end; the next request on it would then wait out the whole timeout. (reqwest drops pooled
/// connections after 90 s.)
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// What a destination answered.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After` in seconds, when given (the HTTP-date form counts as absent).
    pub retry_after: Option<Duration>,
    /// The whole body.
    pub body: Bytes,
}

/// One plain-http origin (`host:port`) and its keep-alive connection.
pub(crate) struct Wire {
    host: String,
    port: u16,
    /// `Host:` as sent (an IPv6 literal in brackets).
    authority: String,
    user_agent: &'static str,
    timeout: Duration,
    conn: Option<TcpStream>,
    /// When the kept connection last finished an exchange.
    last_used: Instant,
    /// The request head being written (reused; it holds header values, so it is never shown).
    head: Vec<u8>,
    /// The answer being read (reused).
    buf: Vec<u8>,
}

impl std::fmt::Debug for Wire {
    /// The origin only: the head buffer can hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("authority", &self.authority)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

/// How one attempt failed.
enum Failed {
    /// Nothing of an answer arrived on a connection that had served requests before: the server may have closed
    /// it just as the request went out, so one more attempt on a new connection is in order.
    Stale(String),
    /// Anything else.
    Error(SinkError),
}

impl Wire {
    /// A client for `host` (a name, an IPv4 address or an IPv6 literal with or without brackets) and `port`, with
    /// `timeout` per exchange. Nothing is connected until the first request.
    pub(crate) fn new(host: &str, port: u16, user_agent: &'static str, timeout: Duration) -> Wire {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let authority = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        Wire {
            host: bare.to_owned(),
            port,
            authority,
            user_agent,
            timeout,
            conn: None,
            last_used: Instant::now(),
            head: Vec::with_capacity(512),
            buf: Vec::with_capacity(1024),
        }
    }

    /// `host:port` as sent in `Host:`.
    #[cfg(test)]
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// `POST target` (path and query) with `headers` (name, value) and `body`, within the timeout.
    pub(crate) async fn post(
        &mut self,
        target: &str,
        headers: &[(&str, &HeaderValue)],
        body: &[u8],
    ) -> Result<Answer, SinkError> {
        let timeout = self.timeout;
        let result = match tokio::time::timeout(timeout, self.exchange(target, headers, body)).await {
            Ok(result) => result,
            Err(_) => {
                self.conn = None;
                Err(SinkError::Connection(format!(
                    "no answer from {} within {timeout:?}",
                    self.authority
                )))
            }
        };
        if self.buf.capacity() > KEPT_BUFFER {
            self.buf = Vec::with_capacity(1024);
        }
        result
    }

    async fn exchange(
        &mut self,
        target: &str,
        headers: &[(&str, &HeaderValue)],
        body: &[u8],
    ) -> Result<Answer, SinkError> {
        self.write_head(target, headers, body.len());
        match self.attempt(body).await {
            Ok(answer) => Ok(answer),
            Err(Failed::Error(e)) => Err(e),
            // The connection was a reused one: once more, on a new connection (see the module docs).
            Err(Failed::Stale(_)) => self.attempt(body).await.map_err(|f| match f {
                Failed::Stale(message) => SinkError::Connection(message),
                Failed::Error(e) => e,
            }),
        }
    }

    /// The request head, in `self.head`.
    fn write_head(&mut self, target: &str, headers: &[(&str, &HeaderValue)], len: usize) {
        use std::io::Write as _;
        let h = &mut self.head;
        h.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(
            h,
            "POST {target} HTTP/1.1\r\nhost: {}\r\nuser-agent: {}\r\naccept: */*\r\n",
            self.authority, self.user_agent
        );
        for (name, value) in headers {
            h.extend_from_slice(name.as_bytes());
            h.extend_from_slice(b": ");
            h.extend_from_slice(value.as_bytes());
            h.extend_from_slice(b"\r\n");
        }
        let _ = write!(h, "content-length: {len}\r\n\r\n");
    }

    /// One attempt: a live connection (the kept one or a new one), the request, the answer.
    async fn attempt(&mut self, body: &[u8]) -> Result<Answer, Failed> {
        let (mut conn, reused) = match self.conn.take() {
            Some(conn) if self.last_used.elapsed() < IDLE_LIMIT && still_open(&conn) => (conn, true),
            _ => (self.connect().await.map_err(Failed::Error)?, false),
        };
        match exchange_on(&mut conn, &self.head, body, &mut self.buf).await {
            Ok((answer, keep)) => {
                if keep {
                    self.conn = Some(conn);
                    self.last_used = Instant::now();
                }
                Ok(answer)
            }
            Err((e, nothing_received)) => {
                let message = format!("{}: {e}", self.authority);
                if reused && nothing_received {
                    Err(Failed::Stale(message))
                } else {
                    Err(Failed::Error(SinkError::Connection(message)))
                }
            }
        }
    }

    async fn connect(&self) -> Result<TcpStream, SinkError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let conn = tokio::time::timeout(CONNECT_TIMEOUT.min(self.timeout), connect)
            .await
            .map_err(|_| SinkError::Connection(format!("{}: connect timed out", self.authority)))?
            .map_err(|e| SinkError::Connection(format!("{}: {e}", self.authority)))?;
        // One request is one write; its answer must not wait for a delayed ACK.
        let _ = conn.set_nodelay(true);
        Ok(conn)
    }
}

/// True when the server has not closed `conn` and sent nothing unasked: a peek finds no data. The socket is
/// non-blocking (tokio's), so the peek returns at once.
fn still_open(conn: &TcpStream) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(conn).peek(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Writes `head` and `body` and reads the answer into `buf`. `Ok((answer, keep))`, `keep`: the connection may
/// serve another request. `Err((error, nothing_received))`: no answer's status arrived.
async fn exchange_on(
    conn: &mut TcpStream,
    head: &[u8],
    body: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(Answer, bool), (String, bool)> {
    let written = write_all(conn, head, body).await;
    buf.clear();
    if let Err(e) = written {
        // A server may answer before it has read the whole body and then stop reading (InfluxDB's 413 for a body
        // over its limit): that answer is in the receive queue, and it is what the worker must see. On a failed
        // connection a read returns at once (the queued answer, the end or an error); the timeout bounds it anyway.
        return match read_answer(conn, buf).await {
            Ok((answer, _)) => Ok((answer, false)),
            Err((_, nothing_received)) => Err((e.to_string(), nothing_received)),
        };
    }
    read_answer(conn, buf).await
}

/// Reads one answer (after any interim ones) into `buf`, which is empty. As [`exchange_on`].
///
/// Once the status line and headers are in, the status stands: a body that cannot be read whole (cut short,
/// over the limit, badly framed) gives the answer with an empty body and a connection that is not kept, as
/// reqwest did. So a 413 stays a 413 (the worker splits the batch) and a 400 stays final.
async fn read_answer(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(Answer, bool), (String, bool)> {
    // Any byte of an answer, interim ones included: only a request that got none may be sent again.
    let mut received = false;
    // Where the search for the end of the head resumes: a head that trickles in is scanned once.
    let mut scanned = 0;
    loop {
        let Some(end) = head_end(buf, &mut scanned) else {
            if buf.len() > MAX_HEAD {
                return Err(("answer head too long".into(), false));
            }
            match read_more(conn, buf).await {
                Ok(0) => return Err(("connection closed before an answer".into(), !received)),
                Ok(_) => received = true,
                Err(e) => return Err((e, !received)),
            }
            continue;
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(&buf[..end]) {
            Ok(httparse::Status::Complete(len)) => Head::of(&response, len),
            Ok(httparse::Status::Partial) => return Err(("unreadable answer head".into(), false)),
            Err(e) => return Err((format!("unreadable answer: {e}"), false)),
        };
        let status = response.code.unwrap_or(0);
        if status == 101 {
            return Err(("unexpected 101 Switching Protocols".into(), false));
        }
        buf.drain(..head.len);
        if (100..200).contains(&status) {
            // An interim answer (e.g. 100 Continue): the real one follows.
            scanned = 0;
            continue;
        }
        let (body, keep) = match read_body(conn, buf, &head, status).await {
            Ok((body, used, to_close)) => (body, head.keep_alive && !to_close && used == buf.len()),
            Err(_) => (Bytes::new(), false),
        };
        return Ok((
            Answer {
                status,
                retry_after: head.retry_after,
                body,
            },
            keep,
        ));
    }
}

/// The length of the head at the start of `buf` (through its empty line, CRLF or bare LF), searching only from
/// `scanned` (less the two bytes an end can straddle) and moving `scanned` on; `None` while it is incomplete.
fn head_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    let from = scanned.saturating_sub(2);
    *scanned = buf.len();
    memchr::memchr_iter(b'\n', &buf[from..]).find_map(|i| {
        let after = &buf[from + i + 1..];
        if after.starts_with(b"\n") {
            Some(from + i + 2)
        } else if after.starts_with(b"\r\n") {
            Some(from + i + 3)
        } else {
            None
        }
    })
}

/// How an answer's body ends.
#[derive(Debug, PartialEq)]
enum Framing {
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: ... chunked`.
    Chunked,
    /// At the close: neither header, or a transfer coding that does not end in `chunked` (RFC 9112 6.3).
    ToClose,
    /// `Content-Length` unreadable or given twice with different values: the body cannot be found.
    Invalid,
}

/// What the worker needs from an answer's head.
struct Head {
    /// Bytes of the head, blank line included.
    len: usize,
    framing: Framing,
    keep_alive: bool,
    retry_after: Option<Duration>,
}

impl Head {
    fn of(response: &httparse::Response<'_, '_>, len: usize) -> Head {
        let mut content_length: Option<Option<usize>> = None;
        let mut transfer_coding: Option<bool> = None;
        let mut head = Head {
            len,
            framing: Framing::ToClose,
            // HTTP/1.1 keeps the connection by default, HTTP/1.0 only when asked.
            keep_alive: response.version == Some(1),
            retry_after: None,
        };
        for h in response.headers.iter() {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("content-length") {
                // Digits only (`+5` is not a length); a second, different value makes the framing unknowable.
                let this = Some(value)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<usize>().ok());
                content_length = match content_length {
                    None => Some(this),
                    Some(earlier) if earlier == this => Some(this),
                    Some(_) => Some(None),
                };
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_coding = Some(
                    value
                        .rsplit(',')
                        .next()
                        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked")),
                );
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        head.keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") && response.version == Some(0) {
                        head.keep_alive = true;
                    }
                }
            } else if h.name.eq_ignore_ascii_case("retry-after") {
                head.retry_after = retry_after_value(value);
            }
        }
        // A transfer coding wins over a length (RFC 9112 6.3).
        head.framing = match (transfer_coding, content_length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::ToClose,
            (None, Some(Some(len))) => Framing::Length(len),
            (None, Some(None)) => Framing::Invalid,
            (None, None) => Framing::ToClose,
        };
        head
    }
}

/// Reads the body of an answer with `head` and `status`, whose first bytes are in `buf`: the body, the bytes of
/// `buf` it took, and whether it ran to the close.
async fn read_body(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: &Head,
    status: u16,
) -> Result<(Bytes, usize, bool), String> {
    if status == 204 || status == 304 {
        return Ok((Bytes::new(), 0, false));
    }
    match head.framing {
        Framing::Invalid => Err("the answer's Content-Length cannot be read".into()),
        Framing::Length(len) => {
            if len > MAX_ANSWER {
                return Err(format!("answer of {len} bytes is over the limit"));
            }
            while buf.len() < len {
                if read_more(conn, buf).await? == 0 {
                    return Err("connection closed inside the answer body".into());
                }
            }
            Ok((Bytes::copy_from_slice(&buf[..len]), len, false))
        }
        Framing::Chunked => {
            let mut chunked = Chunked::default();
            loop {
                if let Some(used) = chunked.advance(buf)? {
                    return Ok((Bytes::from(chunked.body), used, false));
                }
                if read_more(conn, buf).await? == 0 {
                    return Err("connection closed inside a chunked answer".into());
                }
            }
        }
        Framing::ToClose => {
            while read_more(conn, buf).await? > 0 {
                if buf.len() > MAX_ANSWER {
                    return Err("answer over the limit".into());
                }
            }
            Ok((Bytes::copy_from_slice(buf), buf.len(), true))
        }
    }
}

/// Writes `head` then `body`, as one vectored write when the socket takes it all (the usual case).
async fn write_all(conn: &mut TcpStream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let (mut h, mut b) = (head, body);
    while !h.is_empty() {
        let n = conn.write_vectored(&[IoSlice::new(h), IoSlice::new(b)]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(h.len());
        h = &h[from_head..];
        b = &b[n - from_head..];
    }
    conn.write_all(b).await
}

/// Reads what is there into `buf` (growing it); `Ok(0)` at the end of the stream.
async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(buf.capacity().max(4096));
    }
    conn.read_buf(buf).await.map_err(|e| e.to_string())
}

/// A chunked body (RFC 9112 7.1) decoded as it arrives: each call goes on from where the last stopped, so an
/// answer that trickles in is decoded once, not once per read. Chunk extensions and trailers are skipped.
///
/// The raw body (every byte as sent, framing included) is at most [`MAX_ANSWER`]: the caller's buffer holds all of
/// it until the body is whole, and one-byte chunks with 1 KiB extensions would otherwise fill it with about a
/// thousand bytes of framing per byte of body. A body is refused as soon as it is known to be longer: a chunk
/// announced to end past the limit before its data arrives, a body still incomplete past it at once.
#[derive(Debug, Default)]
struct Chunked {
    /// The bytes of the raw body taken so far: whole chunks (and, in the trailers, whole trailer lines).
    at: usize,
    /// The body so far.
    body: Vec<u8>,
    /// Where the trailer section starts in the raw body, once the last chunk (size 0) was read: trailer lines
    /// follow, then an empty line.
    trailers_from: Option<usize>,
}

/// The longest chunk-size line (with extensions) read.
const MAX_CHUNK_LINE: usize = 1024;

/// The most trailer bytes read: the whole trailer section (every trailer line and the closing empty line), so a
/// server sending short trailer lines without end is refused, not buffered until the timeout.
const MAX_TRAILERS: usize = 8 << 10;

impl Chunked {
    /// Takes what `raw` (the body's bytes from its start, growing between calls) now holds: `Ok(Some(used))` once
    /// the body is complete (`used`: the bytes of `raw` it took), `Ok(None)` while more is needed.
    fn advance(&mut self, raw: &[u8]) -> Result<Option<usize>, String> {
        loop {
            let rest = &raw[self.at..];
            let found = memchr::memmem::find(rest, b"\r\n");
            if let Some(from) = self.trailers_from {
                // The trailer bytes taken, and the line now read (or the part of it that has arrived).
                if self.at - from + found.map_or(rest.len(), |eol| eol + 2) > MAX_TRAILERS {
                    return Err(format!(
                        "the trailers of a chunked answer are over {MAX_TRAILERS} bytes"
                    ));
                }
                let Some(eol) = found else { return more(raw) };
                self.at = within_limit(self.at + eol + 2)?;
                if eol == 0 {
                    return Ok(Some(self.at));
                }
                continue;
            }
            let Some(eol) = found else {
                if rest.len() > MAX_CHUNK_LINE {
                    return Err("a chunk-size line is too long".into());
                }
                return more(raw);
            };
            let line = std::str::from_utf8(&rest[..eol]).map_err(|_| "unreadable chunk size".to_string())?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| format!("unreadable chunk size {size_text:?}"))?;
            let data = within_limit(self.at + eol + 2)?;
            if size == 0 {
                self.at = data;
                self.trailers_from = Some(self.at);
                continue;
            }
            // Where this chunk ends (its data and CRLF), refused before its data arrives when past the limit.
            let end = within_limit(data.saturating_add(size).saturating_add(2))?;
            if raw.len() < end {
                return Ok(None);
            }
            if &raw[end - 2..end] != b"\r\n" {
                return Err("a chunk does not end in CRLF".into());
            }
            self.body.extend_from_slice(&raw[data..end - 2]);
            self.at = end;
        }
    }
}

/// `end`, a position in a chunked body as sent, when it is within [`MAX_ANSWER`].
fn within_limit(end: usize) -> Result<usize, String> {
    if end > MAX_ANSWER {
        return Err(format!(
            "a chunked answer is over {MAX_ANSWER} bytes as sent (chunk framing included)"
        ));
    }
    Ok(end)
}

/// `Ok(None)` (more of the body is needed) while `raw`, every byte of which belongs to the unfinished body, is
/// within [`MAX_ANSWER`].
fn more(raw: &[u8]) -> Result<Option<usize>, String> {
    within_limit(raw.len()).map(|_| None)
}

#[cfg(test)]
mod tests;
