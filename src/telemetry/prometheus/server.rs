//! The HTTP server of `GET /metrics` and `GET /health`: hyper's HTTP/1.1 server on a current-thread tokio runtime
//! of its own (thread `metrics`), so a scrape never competes with readers or sinks for a runtime.
//!
//! A slow or hostile client cannot hold the endpoint: connections are served concurrently (at most
//! [`MAX_CONNECTIONS`] at a time; one more is closed at once), a client has [`HEADER_READ_TIMEOUT`] to send its
//! whole request head however slowly it trickles it, and every connection ends after [`CONNECTION_DEADLINE`]
//! whatever it is doing. One request per connection (`Connection: close`), as before.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::{MetricsState, METRICS_CONTENT_TYPE};
use crate::stop::StopSignal;
use crate::telemetry::metrics::RateLimit;

/// Connections served at the same time; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its whole request head (request line and headers).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a connection may last, from accept to close, whatever it does (sending, or reading the response).
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(15);
/// How long the accept loop backs off after an accept error, and how often it checks the stop flag in the unlikely
/// case the stop signal's descriptor cannot be registered with the runtime (otherwise it sleeps until the stop).
const STOP_POLL: Duration = Duration::from_millis(50);
/// hyper's read buffer per connection; also the largest request head accepted (hyper's minimum is 8 KiB).
const MAX_BUF_BYTES: usize = 16 << 10;

const TEXT: &str = "text/plain; charset=utf-8";

/// How the server bounds its clients: the constants above in production; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// [`MAX_CONNECTIONS`].
    max_connections: usize,
    /// [`HEADER_READ_TIMEOUT`]; `None` turns it off.
    header_read_timeout: Option<Duration>,
    /// [`CONNECTION_DEADLINE`].
    connection_deadline: Duration,
}

const LIMITS: Limits = Limits {
    max_connections: MAX_CONNECTIONS,
    header_read_timeout: Some(HEADER_READ_TIMEOUT),
    connection_deadline: CONNECTION_DEADLINE,
};

/// Binds `addr` and serves `GET /metrics` and `GET /health` on a thread named `metrics` until `stop` is set.
///
/// Returns the bound address (port 0 resolved) and the thread's handle; the thread sleeps until a connection or
/// the stop request, and exits as soon as `stop` is requested, closing the listener and every open connection. A bind error is returned (its message names
/// the address) so startup can fail clearly. `/health` answers 503 when the readers are not bound or a sink has
/// been failing for longer than `max_failing` (see [`MetricsState::health`]). Other paths get 404, other methods
/// 405, a malformed request 400.
pub fn serve(
    addr: SocketAddr,
    state: Arc<MetricsState>,
    max_failing: Duration,
    stop: Arc<StopSignal>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    serve_with(addr, state, max_failing, stop, LIMITS)
}

/// [`serve`] with the given limits.
fn serve_with(
    addr: SocketAddr,
    state: Arc<MetricsState>,
    max_failing: Duration,
    stop: Arc<StopSignal>,
    limits: Limits,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr} for metrics: {e}")))?;
    let local = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let listener = {
        let _in_runtime = runtime.enter();
        TcpListener::from_std(listener)?
    };
    let handle = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(accept_loop(listener, state, max_failing, stop, limits)))?;
    info!(addr = %local, "metrics endpoint listening");
    Ok((local, handle))
}

/// Accepts connections and serves each on its own task until `stop` is set. Returning drops the listener; the
/// caller then drops the runtime, which cancels the connections still open.
async fn accept_loop(
    listener: TcpListener,
    state: Arc<MetricsState>,
    max_failing: Duration,
    stop: Arc<StopSignal>,
    limits: Limits,
) {
    static ACCEPT_ERRORS: RateLimit = RateLimit::new(Duration::from_secs(60));
    static BUSY: RateLimit = RateLimit::new(Duration::from_secs(60));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .title_case_headers(true)
        .max_buf_size(MAX_BUF_BYTES);
    // SAFETY: `StopSignal::fd` is a descriptor the signal owns for its whole life and always returns; the Arc
    // moved into the AsyncFd keeps the signal alive until the AsyncFd is dropped.
    let stop_fd = unsafe { AsyncFd::register_with_interest(Arc::clone(&stop), Interest::READABLE) }
        .inspect_err(|e| warn!(error = %e, "metrics endpoint: cannot wait on the stop signal; checking it every 50 ms"))
        .ok();
    while !stop.is_requested() {
        let (stream, peer) = tokio::select! {
            () = stopped(&stop, stop_fd.as_ref()) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    if let Some(suppressed) = ACCEPT_ERRORS.allow() {
                        warn!(error = %e, suppressed, "metrics endpoint cannot accept connections");
                    }
                    tokio::time::sleep(STOP_POLL).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if let Some(suppressed) = BUSY.allow() {
                warn!(%peer, suppressed, limit = limits.max_connections, "metrics endpoint busy: connection closed");
            }
            continue; // dropping `stream` closes it
        };
        let state = Arc::clone(&state);
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let response = respond(&req, &state, max_failing);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            match tokio::time::timeout(limits.connection_deadline, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "metrics request failed"),
                Err(_) => debug!(%peer, "metrics connection closed at its deadline"),
            }
            drop(permit);
        });
    }
}

/// Returns once the stop is requested: when its descriptor turns readable, or (without one) at the next check.
async fn stopped(stop: &StopSignal, fd: Option<&AsyncFd<Arc<StopSignal>>>) {
    match fd {
        // Readable once, readable for good: the guard is dropped without clearing the readiness.
        Some(fd) => drop(fd.readable().await),
        None => {
            while !stop.is_requested() {
                tokio::time::sleep(STOP_POLL).await;
            }
        }
    }
}

/// The response to one request (see [`route`]).
fn respond<B>(req: &Request<B>, state: &MetricsState, max_failing: Duration) -> Response<Full<Bytes>> {
    let (status, content_type, body) = route(req.method().as_str(), req.uri().path(), state, max_failing);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    if status == 405 {
        headers.insert(ALLOW, HeaderValue::from_static("GET"));
    }
    response
}

/// `(status, content type, body)` for a request.
fn route(method: &str, path: &str, state: &MetricsState, max_failing: Duration) -> (u16, &'static str, String) {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let known = matches!(path, "/metrics" | "/health" | "/ready" | "/live");
    match (method, path) {
        ("GET", "/metrics") => (200, METRICS_CONTENT_TYPE, state.render()),
        ("GET", "/live") => {
            let (status, text) = state.live();
            (status, TEXT, text + "\n")
        }
        // `/health` is `/ready`, kept for compatibility.
        ("GET", "/ready" | "/health") => {
            let (status, text) = state.health(max_failing);
            (status, TEXT, text + "\n")
        }
        (_, _) if !known => (404, TEXT, "not found\n".to_string()),
        _ => (405, TEXT, "method not allowed\n".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    use super::super::tests::{check_exposition, state};
    use super::*;
    use crate::telemetry::metrics::ReceiveCounters;

    /// One request over a fresh connection: (status line, headers, body).
    fn http(addr: SocketAddr, raw_request: &str) -> (String, String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(raw_request.as_bytes()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        let length: usize = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("Content-Length")
            .parse()
            .unwrap();
        assert_eq!(body.len(), length, "body length matches Content-Length");
        (status.to_string(), headers.to_string(), body.to_string())
    }

    fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
        http(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
    }

    #[test]
    fn serves_metrics_and_health_and_404_then_stops() {
        let state = Arc::new(state());
        let stop = StopSignal::new().unwrap();
        let (addr, handle) = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::clone(&state),
            Duration::from_secs(60),
            Arc::clone(&stop),
        )
        .unwrap();
        assert_ne!(addr.port(), 0);

        let (status, headers, body) = get(addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(headers.contains("Content-Type: text/plain; version=0.0.4"), "{headers}");
        assert!(headers.contains("Connection: close"), "{headers}");
        assert!(body.contains("\nsense_ingest_events_accepted_total 20\n"), "{body}");
        check_exposition(&body);

        let (status, _, body) = get(addr, "/health");
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert!(body.starts_with("unhealthy: sink new_relic"), "{body}");
        // Readiness fails with the destination; liveness does not (a probe must not restart the receiver then).
        assert_eq!(get(addr, "/ready"), get(addr, "/health"));
        let (status, _, body) = get(addr, "/live");
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "live\n"));
        state.sinks[1].failing_since.mark_ok();
        let (status, headers, body) = get(addr, "/health?verbose=1");
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "ok\n"));
        assert!(headers.contains("Content-Type: text/plain"), "{headers}");

        assert_eq!(get(addr, "/").0, "HTTP/1.1 404 Not Found");
        assert_eq!(get(addr, "/metricsx").0, "HTTP/1.1 404 Not Found");
        let (status, headers, _) = http(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        );
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
        assert!(headers.contains("Allow: GET"), "{headers}");
        assert_eq!(http(addr, "garbage\r\n\r\n").0, "HTTP/1.1 400 Bad Request");
        // A client that connects and says nothing does not stop the endpoint for good.
        let idle = TcpStream::connect(addr).unwrap();
        drop(idle);
        assert_eq!(get(addr, "/health").0, "HTTP/1.1 200 OK");

        stop.request();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !handle.is_finished() {
            assert!(Instant::now() < deadline, "the metrics thread did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        handle.join().unwrap();
        assert!(TcpStream::connect(addr).is_err(), "the listener is closed after stop");
    }

    #[test]
    fn connections_beyond_the_limit_are_closed_and_slots_come_back() {
        let stop = StopSignal::new().unwrap();
        let (addr, handle) = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(state()),
            Duration::from_secs(3600),
            Arc::clone(&stop),
        )
        .unwrap();
        // Silent clients take every slot (they would keep it until the header-read timeout).
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // Accepted after them, one more is closed at once, without an answer.
        let mut extra = TcpStream::connect(addr).unwrap();
        extra.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        let read = extra.read_to_end(&mut answer);
        assert!(
            read.is_ok() && answer.is_empty(),
            "a connection beyond the limit must be closed at once: {read:?} {answer:?}"
        );
        // Once the silent clients leave, their slots serve requests again.
        drop(idle);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut raw = String::new();
            let _ = s.read_to_string(&mut raw);
            if raw.starts_with("HTTP/1.1 200 OK") {
                break;
            }
            assert!(Instant::now() < deadline, "/health never answered again: {raw:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.request();
        handle.join().unwrap();
    }

    #[test]
    fn a_connection_is_closed_at_its_deadline_whatever_it_does() {
        // No header-read timeout, so only the overall deadline can end a silent client.
        let limits = Limits {
            max_connections: 4,
            header_read_timeout: None,
            connection_deadline: Duration::from_millis(300),
        };
        let stop = StopSignal::new().unwrap();
        let (addr, handle) = serve_with(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(state()),
            Duration::from_secs(3600),
            Arc::clone(&stop),
            limits,
        )
        .unwrap();
        let mut silent = TcpStream::connect(addr).unwrap();
        silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        let read = silent.read_to_end(&mut answer);
        assert!(
            read.is_ok() && answer.is_empty(),
            "the server must close a connection at its deadline: {read:?} {answer:?}"
        );
        assert_eq!(get(addr, "/health").0, "HTTP/1.1 200 OK");
        stop.request();
        handle.join().unwrap();
    }

    #[test]
    fn a_bind_error_is_returned_and_names_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let state = Arc::new(MetricsState::new(Arc::new(ReceiveCounters::default()), Vec::new()));
        let err = serve(addr, state, Duration::from_secs(60), StopSignal::new().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
