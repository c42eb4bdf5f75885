//! A small blocking HTTP/1.1 server for stand-in services: sense-ingest's test mocks (InfluxDB 2/3, New Relic) and
//! loadgen's mock sinks. Not a general web server: it serves one [`Handler`] on plain `std::net` threads, one per
//! connection, and is only as strict as a stand-in needs.
//!
//! - Keep-alive (HTTP/1.1 by default, HTTP/1.0 with `Connection: keep-alive`), `Content-Length` and chunked request
//!   bodies, `Expect: 100-continue`.
//! - Limits: [`MAX_HEAD_BYTES`] of request line and headers (more: the connection is dropped) and [`MAX_BODY_BYTES`]
//!   of body (more: 413 and the connection is closed, since the rest of the body cannot be skipped safely).
//! - The server answers by itself only a body over the limit (413) and an unreadable `Content-Length` (400), both
//!   through [`Handler::refused`], so a mock can shape them like its own errors.
//! - Stopping ([`Server::stop`] or drop) wakes the accept loop, and every connection notices within
//!   [`POLL_INTERVAL`]; all threads are joined.
//! - [`decode_body`] undoes `Content-Encoding: gzip` (multi-member), `x-gzip` or `deflate` with a size limit (safe
//!   against gzip bombs); [`percent_decode`] reads query strings and form bodies.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most bytes of request line and headers read before a connection is dropped.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The largest request body accepted (larger: 413).
pub const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
/// How often a connection blocked on reading checks whether the server is stopping.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One request, body read in full (still as sent: see [`decode_body`]).
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target: path and query, as sent.
    pub target: String,
    /// Sent as HTTP/1.0.
    pub http10: bool,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body as sent (empty in [`Handler::answered`] after a [`Handler::refused`] answer).
    pub body: Vec<u8>,
    /// When the whole body had been read.
    pub received_at: Instant,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query string as sent (without the `?`).
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    /// The first query parameter named `name`, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        form_param(self.query(), name)
    }

    /// Whether the client keeps the connection open after this request.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.http10 {
            conn.contains("keep-alive")
        } else {
            !conn.contains("close")
        }
    }
}

/// An answer. The server adds `Content-Length` (except to 1xx, 204 and 304 answers) and `Connection`, and sends no
/// body to a `HEAD` request.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers to send, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Close the connection after this answer, whatever the client asked.
    pub close: bool,
}

impl Response {
    /// `status` with no headers and no body.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
        }
    }

    /// `status` with a `Content-Type: application/json` body.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status).with_body("application/json", body)
    }

    /// Sets the body and its `Content-Type`.
    pub fn with_body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        self.headers.push(("Content-Type".into(), content_type.into()));
        self.body = body.into();
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Closes the connection after this answer.
    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }
}

/// What a server does with its requests. Called from many connection threads at once.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, req: &Request) -> Response;

    /// The answer to a request the server refuses by itself (`status` 413: body over [`MAX_BODY_BYTES`]; 400: an
    /// unreadable `Content-Length`). By default `{"error": message}` as JSON.
    fn refused(&self, status: u16, message: &str) -> Response {
        Response::json(status, format!(r#"{{"error":"{message}"}}"#))
    }

    /// Called once per answer written, refused ones included (for counting).
    fn answered(&self, _req: &Request, _resp: &Response) {}
}

impl<F: Fn(&Request) -> Response + Send + Sync + 'static> Handler for F {
    fn handle(&self, req: &Request) -> Response {
        self(req)
    }
}

/// A running server; stopped (and its threads joined) by [`Server::stop`] or on drop.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Server {
    /// Binds `listen` and serves `handler`; threads are named `name` (accept) and `name-conn`.
    pub fn start<H: Handler>(listen: SocketAddr, name: &str, handler: H) -> io::Result<Server> {
        let listener = TcpListener::bind(listen)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let accept = {
            let (stop, conns, conn_name) = (Arc::clone(&stop), Arc::clone(&conns), format!("{name}-conn"));
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || accept_loop(listener, &stop, &conns, &conn_name, handler))?
        };
        Ok(Server {
            local_addr,
            stop,
            accept: Some(accept),
            conns,
        })
    }

    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets the connection threads notice within [`POLL_INTERVAL`], and joins them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a throwaway connection.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let handles = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.shutdown();
        }
    }
}

fn accept_loop<H: Handler>(
    listener: TcpListener,
    stop: &Arc<AtomicBool>,
    conns: &Mutex<Vec<JoinHandle<()>>>,
    conn_name: &str,
    handler: Arc<H>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // EMFILE and friends: back off briefly instead of spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let (stop, handler) = (Arc::clone(stop), Arc::clone(&handler));
        let spawned = std::thread::Builder::new().name(conn_name.into()).spawn(move || {
            let _ = serve_connection(stream, &stop, &*handler);
        });
        if let Ok(h) = spawned {
            let mut list = conns.lock().unwrap_or_else(|e| e.into_inner());
            list.retain(|h| !h.is_finished());
            list.push(h);
        }
    }
}

/// Buffered reading from a connection that wakes up every [`POLL_INTERVAL`] to check `stop`.
struct Conn<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    stop: &'a AtomicBool,
}

/// Why a connection ended.
#[derive(Debug)]
enum ConnEnd {
    /// The peer closed (cleanly, between requests).
    Closed,
    /// An I/O error, an unparsable request or a stop request.
    Abort,
}

impl From<io::Error> for ConnEnd {
    fn from(_: io::Error) -> Self {
        ConnEnd::Abort
    }
}

impl Conn<'_> {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Reads more bytes; `Ok(false)` on EOF.
    fn fill(&mut self) -> Result<bool, ConnEnd> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 1 << 20 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + 64 * 1024, 0);
        loop {
            match self.stream.read(&mut self.buf[len..]) {
                Ok(n) => {
                    self.buf.truncate(len + n);
                    return Ok(n > 0);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if self.stop.load(Ordering::Relaxed) {
                        self.buf.truncate(len);
                        return Err(ConnEnd::Abort);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.buf.truncate(len);
                    return Err(ConnEnd::Abort);
                }
            }
        }
    }

    /// Ensures at least `n` unconsumed bytes are buffered.
    fn need(&mut self, n: usize) -> Result<(), ConnEnd> {
        while self.pending().len() < n {
            if !self.fill()? {
                return Err(ConnEnd::Abort);
            }
        }
        Ok(())
    }

    /// Reads a CRLF-terminated line (without the CRLF) and consumes it.
    fn line(&mut self) -> Result<String, ConnEnd> {
        loop {
            if let Some(i) = find(self.pending(), b"\r\n") {
                let s = String::from_utf8_lossy(&self.pending()[..i]).into_owned();
                self.start += i + 2;
                return Ok(s);
            }
            if self.pending().len() > MAX_HEAD_BYTES || !self.fill()? {
                return Err(ConnEnd::Abort);
            }
        }
    }

    /// Reads the next request line and headers; `Err(Closed)` on a clean EOF before them.
    fn head(&mut self) -> Result<Request, ConnEnd> {
        let end = loop {
            if let Some(i) = find(self.pending(), b"\r\n\r\n") {
                break i;
            }
            if self.pending().len() > MAX_HEAD_BYTES {
                return Err(ConnEnd::Abort);
            }
            let was_empty = self.pending().is_empty();
            if !self.fill()? {
                return Err(if was_empty { ConnEnd::Closed } else { ConnEnd::Abort });
            }
        };
        let text = String::from_utf8_lossy(&self.pending()[..end]).into_owned();
        self.start += end + 4;
        let mut lines = text.split("\r\n");
        let mut rl = lines.next().unwrap_or("").split(' ');
        let (Some(method), Some(target), Some(version)) = (rl.next(), rl.next(), rl.next()) else {
            return Err(ConnEnd::Abort);
        };
        let mut headers = Vec::new();
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                return Err(ConnEnd::Abort);
            };
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(Request {
            method: method.to_string(),
            target: target.to_string(),
            http10: version == "HTTP/1.0",
            headers,
            body: Vec::new(),
            received_at: Instant::now(),
        })
    }

    /// Reads the body `req`'s headers describe into `req.body`; `Ok(Some((status, message)))` when the server
    /// refuses it.
    fn body(&mut self, req: &mut Request) -> Result<Option<(u16, &'static str)>, ConnEnd> {
        let body = &mut req.body;
        let chunked = req
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let line = self.line()?;
                let size_hex = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16).map_err(|_| ConnEnd::Abort)?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.line()?.is_empty() {}
                    return Ok(None);
                }
                if body.len() + size > MAX_BODY_BYTES {
                    return Ok(Some((413, "request body too large")));
                }
                self.need(size + 2)?;
                body.extend_from_slice(&self.pending()[..size]);
                self.start += size + 2;
            }
        }
        let len = match req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            None => 0,
            Some((_, v)) => match v.parse::<usize>() {
                Ok(n) => n,
                Err(_) => return Ok(Some((400, "bad content-length"))),
            },
        };
        if len > MAX_BODY_BYTES {
            return Ok(Some((413, "request body too large")));
        }
        self.need(len)?;
        body.extend_from_slice(&self.pending()[..len]);
        self.start += len;
        Ok(None)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn serve_connection(stream: TcpStream, stop: &AtomicBool, handler: &impl Handler) -> Result<(), ConnEnd> {
    stream.set_read_timeout(Some(POLL_INTERVAL))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(64 * 1024),
        start: 0,
        stop,
    };
    let mut out = Vec::with_capacity(512);
    loop {
        let mut req = match conn.head() {
            Ok(r) => r,
            Err(ConnEnd::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let refused = conn.body(&mut req)?;
        req.received_at = Instant::now();
        let resp = match refused {
            Some((status, message)) => {
                req.body.clear();
                handler.refused(status, message).closing()
            }
            None => handler.handle(&req),
        };
        handler.answered(&req, &resp);
        let keep = req.keep_alive() && !resp.close;
        write_response(&mut out, &req, &resp, keep);
        writer.write_all(&out)?;
        if !keep {
            return Ok(());
        }
    }
}

fn write_response(out: &mut Vec<u8>, req: &Request, resp: &Response, keep: bool) {
    out.clear();
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status)).as_bytes());
    for (k, v) in &resp.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    let bodiless = resp.status < 200 || resp.status == 204 || resp.status == 304;
    if !bodiless {
        out.extend_from_slice(format!("Content-Length: {}\r\n", resp.body.len()).as_bytes());
    }
    out.extend_from_slice(if keep {
        b"Connection: keep-alive\r\n\r\n".as_slice()
    } else {
        b"Connection: close\r\n\r\n".as_slice()
    });
    if req.method != "HEAD" && !bodiless {
        out.extend_from_slice(&resp.body);
    }
}

/// The reason phrase sent with `status`.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Why [`decode_body`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// A `Content-Encoding` other than identity, gzip, x-gzip or deflate.
    Unsupported,
    /// The body does not decode per its `Content-Encoding`.
    Corrupt,
    /// Decoded, the body is longer than the limit.
    TooLarge,
}

/// Decodes `body` per its `Content-Encoding` (`None`, `identity`, `gzip` with any number of members, `x-gzip`,
/// `deflate`; case-insensitive) into `out`, reading at most `limit + 1` decoded bytes: whatever the error, `out`
/// holds what was decoded.
pub fn decode_body(encoding: Option<&str>, body: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), BodyError> {
    let enc = encoding.unwrap_or("identity").trim().to_ascii_lowercase();
    out.clear();
    let take = limit as u64 + 1;
    let res = match enc.as_str() {
        "" | "identity" => body.take(take).read_to_end(out),
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(body).take(take).read_to_end(out),
        "deflate" => flate2::read::ZlibDecoder::new(body).take(take).read_to_end(out),
        _ => return Err(BodyError::Unsupported),
    };
    match res {
        Err(_) => Err(BodyError::Corrupt),
        Ok(_) if out.len() > limit => Err(BodyError::TooLarge),
        Ok(_) => Ok(()),
    }
}

/// Finds `key` in a `k=v&k=v` string (a query or a form body) and percent-decodes its value.
pub fn form_param(form: &str, key: &str) -> Option<String> {
    form.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| percent_decode(k) == key)
        .map(|(_, v)| percent_decode(v))
}

/// Every `k=v` pair of a query or form body, percent-decoded, in order (a pair without `=` has an empty value).
pub fn form_pairs(form: &str) -> Vec<(String, String)> {
    form.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a space); a `%` not followed by two hex digits is kept as is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Reads one response: (status, headers, body).
    fn read_response(r: &mut BufReader<TcpStream>) -> (u16, Vec<String>, Vec<u8>) {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("Content-Length: ") {
                len = v.parse().unwrap();
            }
            headers.push(h);
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        (status, headers, body)
    }

    fn echo_server() -> Server {
        Server::start("127.0.0.1:0".parse().unwrap(), "echo", |req: &Request| {
            let text = format!(
                "{} {} q={:?} body={}",
                req.method,
                req.path(),
                req.param("q"),
                String::from_utf8_lossy(&req.body)
            );
            Response::new(200).with_body("text/plain", text)
        })
        .unwrap()
    }

    #[test]
    fn serves_content_length_and_chunked_bodies_on_one_kept_alive_connection() {
        let server = echo_server();
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.write_all(b"POST /write?q=a%20b+c HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap();
        s.write_all(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n3\r\nabc\r\n2;ext\r\nde\r\n0\r\n\r\n")
            .unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let (status, headers, body) = read_response(&mut r);
        assert_eq!(
            (status, &body[..]),
            (200, &b"POST /write q=Some(\"a b c\") body=hello"[..])
        );
        assert!(headers.contains(&"Connection: keep-alive".to_string()), "{headers:?}");
        let (status, _, _) = read_response(&mut r);
        assert_eq!(status, 100);
        let (status, _, body) = read_response(&mut r);
        assert_eq!((status, &body[..]), (200, &b"POST /x q=None body=abcde"[..]));
        server.stop();
    }

    #[test]
    fn refuses_a_bad_content_length_and_closes() {
        let server = echo_server();
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let (status, headers, body) = read_response(&mut r);
        assert_eq!((status, &body[..]), (400, &br#"{"error":"bad content-length"}"#[..]));
        assert!(headers.contains(&"Connection: close".to_string()), "{headers:?}");
    }

    #[test]
    fn decodes_identity_gzip_multi_member_and_deflate_within_a_limit() {
        let mut out = Vec::new();
        assert_eq!(decode_body(None, b"plain", 10, &mut out), Ok(()));
        assert_eq!(out, b"plain");
        let mut two = gzip(b"one ");
        two.extend(gzip(b"two"));
        assert_eq!(decode_body(Some("GZIP"), &two, 10, &mut out), Ok(()));
        assert_eq!(out, b"one two");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"zz").unwrap();
        assert_eq!(decode_body(Some("deflate"), &z.finish().unwrap(), 10, &mut out), Ok(()));
        assert_eq!(out, b"zz");
        assert_eq!(
            decode_body(Some("gzip"), &gzip(&[b'a'; 100]), 10, &mut out),
            Err(BodyError::TooLarge)
        );
        assert_eq!(out.len(), 11);
        assert_eq!(
            decode_body(Some("gzip"), b"not gzip", 10, &mut out),
            Err(BodyError::Corrupt)
        );
        assert_eq!(decode_body(Some("br"), b"x", 10, &mut out), Err(BodyError::Unsupported));
    }

    #[test]
    fn percent_decodes_query_strings() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(
            form_param("q=create%20database%20%22senseops%22&db=x", "q").as_deref(),
            Some("create database \"senseops\"")
        );
        assert_eq!(
            form_param("x=1&q=SHOW%20DATABASES", "q").as_deref(),
            Some("SHOW DATABASES")
        );
        assert_eq!(
            form_pairs("a=1&b&c=%3D"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), String::new()),
                ("c".into(), "=".into())
            ]
        );
    }
}
