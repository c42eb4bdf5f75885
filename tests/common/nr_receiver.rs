//! A local stand-in for the New Relic Event API (reference/PROTOCOLS.md c.1) that enforces its contract, records
//! what it accepts, and answers scripted faults.
//!
//! HTTP/1.1 on 127.0.0.1:0 (the workspace's `mini-http` server), keep-alive, `Content-Length` bodies only. For every
//! request, in this order:
//! 1. Only `POST /v1/accounts/<id>/events` (other paths 404, other methods 405); a `Content-Length` is required
//!    (411 without one, e.g. chunked).
//! 2. `Api-Key` must be the key configured for that account id, else 403.
//! 3. A scripted response for the account, if one is queued ([`NrReceiver::script`]) or set permanently
//!    ([`NrReceiver::fail_always`]), is answered instead of accepting.
//! 4. `Content-Encoding: gzip` (or `deflate`) bodies are decompressed; another encoding is 415; the decompressed
//!    body may be at most 1,000,000 bytes, else 413.
//! 5. `Content-Type` must be `application/json` (415); the body must be UTF-8 JSON: an array of flat objects
//!    (values strings or numbers) each with a string `eventType`, else 400.
//! 6. Accepted: 202 `{"success":true,"uuid":"..."}`, the events recorded per account with the request's headers.
//!
//! Every request, accepted or not, is also logged ([`NrReceiver::requests`]) with its status, time and sizes.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mini_http::{BodyError, Server};

use serde_json::Value;

/// New Relic's limit on one POST, uncompressed.
pub const MAX_BODY: usize = 1_000_000;

/// A response to answer instead of accepting.
#[derive(Debug, Clone)]
pub struct Fault {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` seconds, if any.
    pub retry_after: Option<u64>,
    /// Response body.
    pub body: String,
}

impl Fault {
    /// `status` with a short JSON error body.
    pub fn status(status: u16) -> Fault {
        Fault {
            status,
            retry_after: None,
            body: format!("{{\"error\":\"scripted {status}\"}}"),
        }
    }

    /// 429 with `Retry-After: secs`.
    pub fn too_many(secs: u64) -> Fault {
        Fault {
            status: 429,
            retry_after: Some(secs),
            body: "{\"error\":\"rate limited\"}".into(),
        }
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// When its body was read.
    pub at: Instant,
    /// `<id>` from the path, when the path is an Event API path.
    pub account: Option<String>,
    /// The status answered.
    pub status: u16,
    /// Headers as sent (names as sent).
    pub headers: Vec<(String, String)>,
    /// Body bytes on the wire.
    pub wire_bytes: usize,
    /// Body bytes after decompression (as far as read: at most `MAX_BODY + 1`).
    pub json_bytes: usize,
    /// Events in an accepted body.
    pub events: usize,
}

impl Request {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// One accepted POST.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Headers as sent.
    pub headers: Vec<(String, String)>,
    /// The decompressed body, exactly.
    pub body: String,
    /// Its events.
    pub events: Vec<Value>,
}

impl Accepted {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

#[derive(Default)]
struct State {
    keys: HashMap<String, String>,
    accepted: HashMap<String, Vec<Accepted>>,
    scripted: HashMap<String, VecDeque<Fault>>,
    always: HashMap<String, Fault>,
    requests: Vec<Request>,
}

/// The running stand-in; stops accepting connections on drop.
pub struct NrReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _server: Server,
}

impl NrReceiver {
    /// Starts a receiver that knows `accounts` as (account id, key).
    pub fn start(accounts: &[(&str, &str)]) -> NrReceiver {
        let state = Arc::new(Mutex::new(State {
            keys: accounts
                .iter()
                .map(|(id, key)| ((*id).to_string(), (*key).to_string()))
                .collect(),
            ..State::default()
        }));
        let uuid = AtomicU64::new(1);
        let handler_state = Arc::clone(&state);
        let server = Server::start(
            "127.0.0.1:0".parse().unwrap(),
            "nr-receiver",
            move |req: &mini_http::Request| serve_request(req, &handler_state, &uuid),
        )
        .unwrap();
        NrReceiver {
            addr: server.local_addr(),
            state,
            _server: server,
        }
    }

    /// The base url to configure as `newRelic.event.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `n` authorised requests for `account` with `fault`.
    pub fn script(&self, account: &str, n: usize, fault: Fault) {
        let mut s = self.state.lock().unwrap();
        let q = s.scripted.entry(account.to_string()).or_default();
        q.extend(std::iter::repeat_n(fault, n));
    }

    /// Answers every authorised request for `account` with `fault` until [`NrReceiver::heal`].
    pub fn fail_always(&self, account: &str, fault: Fault) {
        self.state.lock().unwrap().always.insert(account.to_string(), fault);
    }

    /// Stops the permanent fault and drops queued ones for `account`.
    pub fn heal(&self, account: &str) {
        let mut s = self.state.lock().unwrap();
        s.always.remove(account);
        s.scripted.remove(account);
    }

    /// Every accepted POST for `account`, in arrival order.
    pub fn accepted(&self, account: &str) -> Vec<Accepted> {
        self.state
            .lock()
            .unwrap()
            .accepted
            .get(account)
            .cloned()
            .unwrap_or_default()
    }

    /// Every accepted event for `account`, in arrival order.
    pub fn events(&self, account: &str) -> Vec<Value> {
        self.accepted(account).into_iter().flat_map(|a| a.events).collect()
    }

    /// Number of accepted events for `account`.
    pub fn event_count(&self, account: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .accepted
            .get(account)
            .map_or(0, |v| v.iter().map(|a| a.events.len()).sum())
    }

    /// Every request so far (all accounts, any status), in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests for `account` so far.
    pub fn requests_for(&self, account: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.account.as_deref() == Some(account))
            .collect()
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What to answer.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: String,
}

impl Answer {
    fn error(status: u16, message: &str) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: serde_json::json!({ "error": message }).to_string(),
        }
    }
}

/// Answers one request and logs it (a request without `Content-Length` is answered 411 and not logged).
fn serve_request(req: &mini_http::Request, state: &Mutex<State>, uuid: &AtomicU64) -> mini_http::Response {
    if req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .is_none()
    {
        // Chunked or unknown length: answer and close, as New Relic's contract requires a length.
        return respond(&Answer::error(411, "Content-Length required")).closing();
    }
    let account = req
        .path()
        .strip_prefix("/v1/accounts/")
        .and_then(|rest| rest.strip_suffix("/events"))
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string);
    let mut json_bytes = 0;
    let mut events = 0;
    let answer = handle(
        state,
        &req.method,
        account.as_deref(),
        &req.headers,
        &req.body,
        &mut json_bytes,
        &mut events,
        uuid,
    );
    state.lock().unwrap().requests.push(Request {
        at: req.received_at,
        account,
        status: answer.status,
        headers: req.headers.clone(),
        wire_bytes: req.body.len(),
        json_bytes,
        events,
    });
    respond(&answer)
}

#[allow(clippy::too_many_arguments)]
fn handle(
    state: &Mutex<State>,
    method: &str,
    account: Option<&str>,
    headers: &[(String, String)],
    body: &[u8],
    json_bytes: &mut usize,
    events: &mut usize,
    uuid: &AtomicU64,
) -> Answer {
    let Some(account) = account else {
        return Answer::error(404, "not found");
    };
    if method != "POST" {
        return Answer::error(405, "method not allowed");
    }
    {
        let mut s = state.lock().unwrap();
        let authorised = matches!(
            (s.keys.get(account), header(headers, "api-key")),
            (Some(want), Some(got)) if want == got
        );
        if !authorised {
            return Answer::error(403, "invalid or missing Api-Key for this account");
        }
        let fault = s
            .scripted
            .get_mut(account)
            .and_then(VecDeque::pop_front)
            .or_else(|| s.always.get(account).cloned());
        if let Some(f) = fault {
            return Answer {
                status: f.status,
                retry_after: f.retry_after,
                body: f.body,
            };
        }
    }
    // Read at most one byte over the limit: enough to refuse, and safe against gzip bombs.
    let mut json = Vec::new();
    let decoded = mini_http::decode_body(header(headers, "content-encoding"), body, MAX_BODY, &mut json);
    *json_bytes = json.len();
    match decoded {
        Ok(()) => {}
        Err(BodyError::Unsupported) => return Answer::error(415, "unsupported Content-Encoding"),
        Err(BodyError::Corrupt) => return Answer::error(400, "body does not decompress"),
        Err(BodyError::TooLarge) => return Answer::error(413, "payload over 1MB"),
    }
    let content_type = header(headers, "content-type").unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("application/json") {
        return Answer::error(415, "Content-Type must be application/json");
    }
    let Ok(text) = String::from_utf8(json) else {
        return Answer::error(400, "body is not UTF-8");
    };
    let parsed: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return Answer::error(400, &format!("invalid JSON: {e}")),
    };
    let Some(array) = parsed.as_array() else {
        return Answer::error(400, "body must be a JSON array of events");
    };
    if array.is_empty() {
        return Answer::error(400, "no events");
    }
    for ev in array {
        let Some(obj) = ev.as_object() else {
            return Answer::error(400, "every event must be a JSON object");
        };
        if !obj.get("eventType").is_some_and(Value::is_string) {
            return Answer::error(400, "every event needs a string eventType");
        }
        if !obj.values().all(|v| v.is_string() || v.is_number()) {
            return Answer::error(400, "attribute values must be strings or numbers");
        }
    }
    *events = array.len();
    state
        .lock()
        .unwrap()
        .accepted
        .entry(account.to_string())
        .or_default()
        .push(Accepted {
            headers: headers.to_vec(),
            body: text.clone(),
            events: array.clone(),
        });
    let n = uuid.fetch_add(1, Ordering::Relaxed);
    Answer {
        status: 202,
        retry_after: None,
        body: format!("{{\"success\":true,\"uuid\":\"00000000-0000-4000-8000-{n:012x}\"}}"),
    }
}

fn respond(a: &Answer) -> mini_http::Response {
    let resp = mini_http::Response::new(a.status).with_body("application/json; charset=UTF-8", a.body.as_bytes());
    match a.retry_after {
        Some(secs) => resp.with_header("Retry-After", &secs.to_string()),
        None => resp,
    }
}
