//! Local stand-ins for InfluxDB 2.x and InfluxDB 3, which cannot be installed here: HTTP/1.1 receivers on
//! `127.0.0.1:0` that enforce each API's documented contract (reference/PROTOCOLS.md b.1, b.3, b.4) and record what
//! they accepted, so the engine's requests can be checked, not just counted.
//!
//! Both servers: check the token (401), gunzip a `Content-Encoding: gzip` body (400 when it is not gzip), answer 413
//! above a configurable decoded body size, play scripted faults on writes (e.g. 503 with `Retry-After`, 429), parse
//! every line of a write with the server's own escaping rules ([`Dialect`]) and store the parsed points.
//! - [`InfluxV2Mock`]: `Authorization: Token`, `GET /api/v2/orgs`, `GET`/`POST /api/v2/buckets` (records the
//!   create bodies, `retentionRules` included; refuses an expiry under one hour, as 2.x does), `POST /api/v2/write`
//!   requiring `org`, `bucket` and `precision`; a malformed line rejects the whole batch (400, nothing written).
//! - [`InfluxV3Mock`]: `Authorization: Bearer` (or `Token`), `POST /api/v3/configure/database` (records
//!   `retention_period`; 409 when it exists), `POST /api/v3/write_lp` requiring `db` and `precision`; a line whose tag
//!   and field share a name, or whose column changes kind or type, is rejected; with `accept_partial` (the default)
//!   the good lines are stored and the 400 body lists the rejected ones, as InfluxDB 3 does. A write to a missing
//!   database creates it without a retention period, as InfluxDB 3 Core does.
//!
//! Stricter than the real servers, on purpose: `precision` is required (the servers default it), so the engine must
//! always say what its timestamps mean.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use mini_http::Server;

use serde_json::{json, Map, Value};

// ---- HTTP ----------------------------------------------------------------------------------------------------------

/// One request as received (body still encoded).
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as sent.
    pub body: Vec<u8>,
}

impl Request {
    /// The mock's view of a request the server read.
    fn from_http(req: &mini_http::Request) -> Request {
        Request {
            method: req.method.clone(),
            path: req.path().to_string(),
            query: mini_http::form_pairs(req.query()),
            headers: req
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: req.body.clone(),
        }
    }

    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn json(status: u16, body: Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn into_http(self) -> mini_http::Response {
        mini_http::Response {
            status: self.status,
            headers: self.headers,
            body: self.body,
            close: false,
        }
    }
}

/// The body as the server reads it: gunzipped when `Content-Encoding: gzip`, else as is.
fn decoded_body(req: &Request) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    mini_http::decode_body(
        req.header("content-encoding"),
        &req.body,
        mini_http::MAX_BODY_BYTES,
        &mut out,
    )
    .map_err(|e| format!("content encoding: {e:?}"))?;
    Ok(out)
}

// ---- line protocol ---------------------------------------------------------------------------------------------

/// Whose escaping rules a line is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// InfluxDB 1.x/2.x (Go `models/points.go`): a delimiter preceded by `\` is escaped; only `\,`, `\=`, `\ ` are
    /// unescaped in tags, so `\\` stays two backslashes.
    Go,
    /// InfluxDB 3 (Rust `influxdb_line_protocol`): `\\`, `\,`, `\=`, `\ ` are escapes and any other `\x` is kept
    /// as `\x`.
    V3,
}

/// A field value as parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `"..."`.
    Str(String),
    /// `1`, `1.5`.
    Float(f64),
    /// `1i`.
    Int(i64),
    /// `1u`.
    UInt(u64),
    /// `t`, `false`, ...
    Bool(bool),
}

impl FieldValue {
    /// As JSON (what InfluxDB's query APIs would show).
    pub fn to_json(&self) -> Value {
        match self {
            FieldValue::Str(s) => json!(s),
            FieldValue::Float(f) => json!(f),
            FieldValue::Int(i) => json!(i),
            FieldValue::UInt(u) => json!(u),
            FieldValue::Bool(b) => json!(b),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            FieldValue::Str(_) => "string",
            FieldValue::Float(_) => "float",
            FieldValue::Int(_) => "integer",
            FieldValue::UInt(_) => "uinteger",
            FieldValue::Bool(_) => "boolean",
        }
    }
}

/// One parsed line-protocol point.
#[derive(Debug, Clone)]
pub struct Line {
    /// The line as received.
    pub raw: String,
    /// Measurement (table).
    pub measurement: String,
    /// Tags in the order written, unescaped.
    pub tags: Vec<(String, String)>,
    /// Fields in the order written.
    pub fields: Vec<(String, FieldValue)>,
    /// Timestamp, as written.
    pub timestamp: Option<i64>,
    /// The request's `precision` parameter.
    pub precision: String,
}

impl Line {
    /// Tags as a JSON object.
    pub fn tags_json(&self) -> Map<String, Value> {
        self.tags.iter().map(|(k, v)| (k.clone(), json!(v))).collect()
    }

    /// Fields as a JSON object.
    pub fn fields_json(&self) -> Map<String, Value> {
        self.fields.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
    }
}

/// Which delimiters end a token, and which characters `\` escapes in it (V3).
struct Token {
    ends: &'static [u8],
    escapes: &'static [u8],
    /// Go: whether `\=` is unescaped too (everything but the measurement).
    go_equals: bool,
}

const MEASUREMENT: Token = Token {
    ends: b", ",
    escapes: b"\\, ",
    go_equals: false,
};
const TAG_KEY: Token = Token {
    ends: b"=, ",
    escapes: b"\\,= ",
    go_equals: true,
};
const TAG_VALUE: Token = Token {
    ends: b", ",
    escapes: b"\\,= ",
    go_equals: true,
};
const FIELD_KEY: Token = Token {
    ends: b"=, ",
    escapes: b"\\,= ",
    go_equals: true,
};

/// Reads one token of `s` from `i`; returns (decoded, index of the delimiter or end).
fn scan(s: &str, mut i: usize, tok: &Token, dialect: Dialect, what: &str) -> Result<(String, usize), String> {
    let b = s.as_bytes();
    let start = i;
    let mut out: Vec<u8> = Vec::new();
    while i < b.len() {
        let c = b[i];
        match dialect {
            Dialect::Go => {
                if tok.ends.contains(&c) && !(i > start && b[i - 1] == b'\\') {
                    break;
                }
                out.push(c);
                i += 1;
            }
            Dialect::V3 => {
                if tok.ends.contains(&c) {
                    break;
                }
                if c == b'\\' && i + 1 < b.len() {
                    let n = b[i + 1];
                    if !tok.escapes.contains(&n) {
                        out.push(b'\\');
                    }
                    // The escaped (or literally kept) character: copy all of its UTF-8 bytes.
                    let len = s[i + 1..].chars().next().map_or(1, char::len_utf8);
                    out.extend_from_slice(&b[i + 1..i + 1 + len]);
                    i += 1 + len;
                } else {
                    out.push(c);
                    i += 1;
                }
            }
        }
    }
    let mut text = String::from_utf8(out).map_err(|_| format!("{what}: invalid UTF-8"))?;
    if dialect == Dialect::Go {
        text = text.replace("\\,", ",").replace("\\ ", " ");
        if tok.go_equals {
            text = text.replace("\\=", "=");
        }
    }
    if text.is_empty() {
        return Err(format!("missing {what}"));
    }
    if text.ends_with('\\') {
        return Err(format!("{what} ends with a backslash"));
    }
    Ok((text, i))
}

/// Parses one line with `dialect`'s rules (the error texts are ours, the rules InfluxDB's).
pub fn parse_line(raw: &str, dialect: Dialect) -> Result<Line, String> {
    let b = raw.as_bytes();
    let (measurement, mut i) = scan(raw, 0, &MEASUREMENT, dialect, "measurement")?;
    let mut tags: Vec<(String, String)> = Vec::new();
    while i < b.len() && b[i] == b',' {
        let (key, j) = scan(raw, i + 1, &TAG_KEY, dialect, "tag key")?;
        if b.get(j) != Some(&b'=') {
            return Err(format!("tag {key:?} has no value"));
        }
        let (value, j) = scan(raw, j + 1, &TAG_VALUE, dialect, "tag value")?;
        if tags.iter().any(|(k, _)| *k == key) {
            return Err(format!("duplicate tag {key:?}"));
        }
        tags.push((key, value));
        i = j;
    }
    if b.get(i) != Some(&b' ') {
        return Err("expected a space before the fields".into());
    }
    i += 1;
    let mut fields: Vec<(String, FieldValue)> = Vec::new();
    loop {
        let (key, j) = scan(raw, i, &FIELD_KEY, dialect, "field key")?;
        if b.get(j) != Some(&b'=') {
            return Err(format!("field {key:?} has no value"));
        }
        let (value, j) = field_value(raw, j + 1)?;
        if fields.iter().any(|(k, _)| *k == key) {
            return Err(format!("duplicate field {key:?}"));
        }
        fields.push((key, value));
        i = j;
        match b.get(i) {
            Some(b',') => i += 1,
            _ => break,
        }
    }
    let rest = raw[i..].trim_matches(' ');
    let timestamp = if rest.is_empty() {
        None
    } else {
        Some(rest.parse::<i64>().map_err(|_| format!("bad timestamp {rest:?}"))?)
    };
    if i < b.len() && b[i] != b' ' {
        return Err(format!("unexpected {:?} after the fields", &raw[i..]));
    }
    Ok(Line {
        raw: raw.to_string(),
        measurement,
        tags,
        fields,
        timestamp,
        precision: String::new(),
    })
}

/// A field value starting at `i`; returns it and the index after it.
fn field_value(s: &str, i: usize) -> Result<(FieldValue, usize), String> {
    let b = s.as_bytes();
    if b.get(i) == Some(&b'"') {
        let mut out: Vec<u8> = Vec::new();
        let mut j = i + 1;
        loop {
            match b.get(j) {
                None => return Err("unterminated string field".into()),
                Some(b'"') => break,
                Some(b'\\') if matches!(b.get(j + 1), Some(b'"') | Some(b'\\')) => {
                    out.push(b[j + 1]);
                    j += 2;
                }
                Some(&c) => {
                    out.push(c);
                    j += 1;
                }
            }
        }
        if out.len() > 65536 {
            return Err("string field longer than 64 KiB".into());
        }
        let text = String::from_utf8(out).map_err(|_| "string field: invalid UTF-8".to_string())?;
        return Ok((FieldValue::Str(text), j + 1));
    }
    let end = b[i..]
        .iter()
        .position(|&c| c == b',' || c == b' ')
        .map_or(b.len(), |p| i + p);
    let v = &s[i..end];
    let value = if let Some(n) = v.strip_suffix('i') {
        FieldValue::Int(n.parse().map_err(|_| format!("bad integer {v:?}"))?)
    } else if let Some(n) = v.strip_suffix('u') {
        FieldValue::UInt(n.parse().map_err(|_| format!("bad unsigned {v:?}"))?)
    } else if matches!(v, "t" | "T" | "true" | "True" | "TRUE") {
        FieldValue::Bool(true)
    } else if matches!(v, "f" | "F" | "false" | "False" | "FALSE") {
        FieldValue::Bool(false)
    } else {
        FieldValue::Float(v.parse().map_err(|_| format!("bad field value {v:?}"))?)
    };
    Ok((value, end))
}

/// The non-empty, non-comment lines of a body.
fn body_lines(body: &[u8]) -> Result<Vec<&str>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    Ok(text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect())
}

// ---- what both mocks share ------------------------------------------------------------------------------------

/// A request as the mock saw it, with its answer.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method and path, e.g. `POST /api/v2/write`.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// `Content-Encoding` header.
    pub content_encoding: Option<String>,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// Body size as sent.
    pub body_bytes: usize,
    /// The answer's status.
    pub status: u16,
}

impl Seen {
    /// The query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A scripted answer for the next write.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Status to answer.
    pub status: u16,
    /// `Retry-After` seconds, if any.
    pub retry_after: Option<u64>,
    /// The JSON body to answer; a generic error when `None`.
    pub body: Option<String>,
}

/// State both mocks keep.
#[derive(Debug, Default)]
struct Common {
    token: String,
    max_body_bytes: usize,
    faults: VecDeque<Fault>,
    seen: Vec<Seen>,
    lines: Vec<Line>,
}

impl Common {
    fn new(token: &str, max_body_bytes: usize) -> Common {
        Common {
            token: token.into(),
            max_body_bytes,
            ..Default::default()
        }
    }

    fn record(&mut self, req: &Request, resp: &Response) {
        self.seen.push(Seen {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            authorization: req.header("authorization").map(str::to_string),
            content_encoding: req.header("content-encoding").map(str::to_string),
            content_type: req.header("content-type").map(str::to_string),
            body_bytes: req.body.len(),
            status: resp.status,
        });
    }

    /// The token of an `Authorization: <scheme> <token>` header whose scheme is one of `schemes`.
    fn authorized(&self, req: &Request, schemes: &[&str]) -> bool {
        req.header("authorization")
            .and_then(|h| h.split_once(' '))
            .is_some_and(|(scheme, token)| schemes.contains(&scheme) && token == self.token)
    }

    fn next_fault(&mut self) -> Option<Response> {
        self.faults.pop_front().map(|f| {
            let resp = match f.body {
                Some(body) => Response {
                    status: f.status,
                    headers: vec![("Content-Type".into(), "application/json".into())],
                    body: body.into_bytes(),
                },
                None => Response::json(f.status, json!({"code": "unavailable", "message": "scripted fault"})),
            };
            match f.retry_after {
                Some(s) => resp.with_header("Retry-After", &s.to_string()),
                None => resp,
            }
        })
    }
}

/// What a mock's state does with a request; [`serve`] records every answer in its [`Common`].
trait Api: Send + 'static {
    fn handle(&mut self, req: &Request) -> Response;
    fn common(&mut self) -> &mut Common;
}

/// Starts a server on 127.0.0.1 answering with `state`'s API and recording each request with its answer.
fn serve<S: Api>(state: S) -> (Server, Arc<Mutex<S>>) {
    let state = Arc::new(Mutex::new(state));
    let handler_state = Arc::clone(&state);
    let server = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        "influx-mock",
        move |req: &mini_http::Request| {
            let req = Request::from_http(req);
            let mut st = handler_state.lock().unwrap();
            let resp = st.handle(&req);
            st.common().record(&req, &resp);
            resp.into_http()
        },
    )
    .unwrap();
    (server, state)
}

/// Generates the accessors both mocks share.
macro_rules! mock_accessors {
    ($ty:ty) => {
        impl $ty {
            /// The address to point `influxdbConfig.host`/`port` at.
            pub fn addr(&self) -> SocketAddr {
                self.server.local_addr()
            }
            /// Answers the next write with `status` (and `Retry-After`), before anything else is checked.
            pub fn push_fault(&self, status: u16, retry_after: Option<u64>) {
                self.state.lock().unwrap().common.faults.push_back(Fault {
                    status,
                    retry_after,
                    body: None,
                });
            }
            /// Answers the next write with `status` and the JSON `body`, before anything else is checked.
            pub fn push_fault_body(&self, status: u16, body: &str) {
                self.state.lock().unwrap().common.faults.push_back(Fault {
                    status,
                    retry_after: None,
                    body: Some(body.into()),
                });
            }
            /// Every point accepted so far, in arrival order.
            pub fn lines(&self) -> Vec<Line> {
                self.state.lock().unwrap().common.lines.clone()
            }
            /// Every request so far, with its answer.
            pub fn seen(&self) -> Vec<Seen> {
                self.state.lock().unwrap().common.seen.clone()
            }
        }
    };
}

// ---- InfluxDB 2.x ----------------------------------------------------------------------------------------------

/// An InfluxDB 2.x stand-in (see the module docs).
pub struct InfluxV2Mock {
    server: Server,
    state: Arc<Mutex<V2State>>,
}

#[derive(Debug, Default)]
struct V2State {
    common: Common,
    org: String,
    org_id: String,
    /// Bucket name → the create request's JSON body.
    buckets: HashMap<String, Value>,
}

mock_accessors!(InfluxV2Mock);

impl InfluxV2Mock {
    /// A server with one organization `org` (id `0a1b2c3d4e5f6071`) accepting `token`, no buckets, and decoded
    /// write bodies up to `max_body_bytes`.
    pub fn start(org: &str, token: &str, max_body_bytes: usize) -> InfluxV2Mock {
        let (server, state) = serve(V2State {
            common: Common::new(token, max_body_bytes),
            org: org.into(),
            org_id: "0a1b2c3d4e5f6071".into(),
            buckets: HashMap::new(),
        });
        InfluxV2Mock { server, state }
    }

    /// The `POST /api/v2/buckets` bodies, by bucket name.
    pub fn buckets(&self) -> HashMap<String, Value> {
        self.state.lock().unwrap().buckets.clone()
    }
}

fn v2_error(status: u16, code: &str, message: &str) -> Response {
    Response::json(status, json!({"code": code, "message": message}))
}

impl Api for V2State {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn handle(&mut self, req: &Request) -> Response {
        if !self.common.authorized(req, &["Token"]) {
            return v2_error(401, "unauthorized", "unauthorized access");
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/api/v2/orgs") => match req.param("org") {
                Some(o) if o != self.org => v2_error(404, "not found", &format!("organization name \"{o}\" not found")),
                _ => Response::json(200, json!({"orgs": [{"id": self.org_id, "name": self.org}]})),
            },
            ("GET", "/api/v2/buckets") => {
                if req.param("orgID").is_some_and(|id| id != self.org_id) {
                    return v2_error(404, "not found", "organization not found");
                }
                let buckets: Vec<Value> = self
                    .buckets
                    .iter()
                    .filter(|(name, _)| req.param("name").is_none_or(|n| n == name.as_str()))
                    .map(|(name, b)| json!({"id": "b0", "name": name, "orgID": self.org_id, "retentionRules": b["retentionRules"]}))
                    .collect();
                Response::json(200, json!({ "buckets": buckets }))
            }
            ("POST", "/api/v2/buckets") => self.create_bucket(req),
            ("POST", "/api/v2/write") => self.write(req),
            _ => v2_error(404, "not found", "path not found"),
        }
    }
}

impl V2State {
    fn create_bucket(&mut self, req: &Request) -> Response {
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return v2_error(400, "invalid", "request body is not JSON");
        };
        if body["orgID"].as_str() != Some(self.org_id.as_str()) {
            return v2_error(404, "not found", "organization not found");
        }
        let Some(name) = body["name"].as_str().filter(|n| !n.is_empty()) else {
            return v2_error(400, "invalid", "bucket name is required");
        };
        for rule in body["retentionRules"].as_array().into_iter().flatten() {
            let every = rule["everySeconds"].as_i64().unwrap_or(-1);
            if rule["type"] != "expire" || !(every == 0 || every >= 3600) {
                return v2_error(
                    422,
                    "unprocessable entity",
                    "expiration seconds must be greater than or equal to one hour",
                );
            }
        }
        if self.buckets.contains_key(name) {
            return v2_error(422, "conflict", &format!("bucket with name {name} already exists"));
        }
        self.buckets.insert(name.to_string(), body.clone());
        Response::json(
            201,
            json!({"id": "b0", "name": name, "orgID": self.org_id, "retentionRules": body["retentionRules"]}),
        )
    }

    fn write(&mut self, req: &Request) -> Response {
        if let Some(fault) = self.common.next_fault() {
            return fault;
        }
        let org_ok = match (req.param("org"), req.param("orgID")) {
            (Some(o), _) => o == self.org,
            (None, Some(id)) => id == self.org_id,
            (None, None) => return v2_error(400, "invalid", "missing org/orgID"),
        };
        if !org_ok {
            return v2_error(404, "not found", "organization not found");
        }
        let Some(bucket) = req.param("bucket") else {
            return v2_error(400, "invalid", "missing bucket");
        };
        if !self.buckets.contains_key(bucket) {
            return v2_error(404, "not found", &format!("bucket \"{bucket}\" not found"));
        }
        let precision = match req.param("precision") {
            Some(p @ ("ns" | "us" | "ms" | "s")) => p.to_string(),
            Some(p) => return v2_error(400, "invalid", &format!("invalid precision {p:?}")),
            None => return v2_error(400, "invalid", "precision is required by this mock"),
        };
        let body = match decoded_body(req) {
            Ok(b) => b,
            Err(e) => return v2_error(400, "invalid", &e),
        };
        if body.len() > self.common.max_body_bytes {
            return v2_error(
                413,
                "request too large",
                "unable to read data: points batch is too large",
            );
        }
        let mut parsed = Vec::new();
        let lines = match body_lines(&body) {
            Ok(l) => l,
            Err(e) => return v2_error(400, "invalid", &e),
        };
        for raw in lines {
            match parse_line(raw, Dialect::Go) {
                Ok(mut line) => {
                    line.precision = precision.clone();
                    parsed.push(line);
                }
                // 2.x: a malformed line rejects the whole batch.
                Err(e) => return v2_error(400, "invalid", &format!("unable to parse '{raw}': {e}")),
            }
        }
        self.common.lines.extend(parsed);
        Response::empty(204)
    }
}

// ---- InfluxDB 3 ------------------------------------------------------------------------------------------------

/// How a v3 database came to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreatedBy {
    /// `POST /api/v3/configure/database`.
    Configure,
    /// Implicitly, by a write to a missing database.
    Write,
}

/// A v3 database as the mock knows it.
#[derive(Debug, Clone)]
pub struct Database {
    /// `retention_period` given at creation.
    pub retention_period: Option<String>,
    /// How it was created.
    pub created_by: CreatedBy,
    /// Per table: column → `tag` or the field type (`string`, `float`, ...).
    tables: HashMap<String, HashMap<String, &'static str>>,
}

/// An InfluxDB 3 stand-in (see the module docs).
pub struct InfluxV3Mock {
    server: Server,
    state: Arc<Mutex<V3State>>,
}

#[derive(Debug, Default)]
struct V3State {
    common: Common,
    databases: HashMap<String, Database>,
}

mock_accessors!(InfluxV3Mock);

impl InfluxV3Mock {
    /// A server accepting `token`, with no databases, and decoded write bodies up to `max_body_bytes`.
    pub fn start(token: &str, max_body_bytes: usize) -> InfluxV3Mock {
        let (server, state) = serve(V3State {
            common: Common::new(token, max_body_bytes),
            databases: HashMap::new(),
        });
        InfluxV3Mock { server, state }
    }

    /// The databases, by name.
    pub fn databases(&self) -> HashMap<String, Database> {
        self.state.lock().unwrap().databases.clone()
    }
}

fn v3_error(status: u16, message: &str) -> Response {
    Response::json(status, json!({"error": message, "data": null}))
}

/// InfluxDB 3's database-name rule: 1-64 ASCII letters, digits, `_`, `-` (and `/` for a v1 `db/rp` mapping),
/// starting with a letter or digit.
fn valid_db_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/'))
}

/// `none`, or `<n><unit>` parts with units m, h, d, w, mo, y.
fn valid_retention(p: &str) -> bool {
    if p == "none" {
        return true;
    }
    let mut rest = p;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["mo", "m", "h", "d", "w", "y"].iter().find(|u| rest.starts_with(**u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

impl Api for V3State {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn handle(&mut self, req: &Request) -> Response {
        if !self.common.authorized(req, &["Bearer", "Token"]) {
            return v3_error(401, "unauthorized access");
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/api/v3/configure/database") => self.create_database(req),
            ("POST", "/api/v3/write_lp") => self.write(req),
            _ => v3_error(404, "not found"),
        }
    }
}

impl V3State {
    fn create_database(&mut self, req: &Request) -> Response {
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return v3_error(400, "request body is not JSON");
        };
        let Some(name) = body["db"].as_str() else {
            return v3_error(400, "missing field `db`");
        };
        if !valid_db_name(name) {
            return v3_error(400, "invalid character in database name");
        }
        let retention = match &body["retention_period"] {
            Value::Null => None,
            Value::String(p) if valid_retention(p) => Some(p.clone()),
            other => return v3_error(400, &format!("invalid retention_period {other}")),
        };
        if self.databases.contains_key(name) {
            return v3_error(409, "attempted to create a resource that already exists");
        }
        self.databases.insert(
            name.to_string(),
            Database {
                retention_period: retention,
                created_by: CreatedBy::Configure,
                tables: HashMap::new(),
            },
        );
        Response::empty(200)
    }

    fn write(&mut self, req: &Request) -> Response {
        if let Some(fault) = self.common.next_fault() {
            return fault.with_header("cluster-uuid", "mock");
        }
        let Some(db) = req.param("db").map(str::to_string) else {
            return v3_error(400, "missing query parameter `db`");
        };
        if !valid_db_name(&db) {
            return v3_error(400, "invalid character in database name");
        }
        let precision = match req.param("precision") {
            Some(p @ ("auto" | "nanosecond" | "microsecond" | "millisecond" | "second")) => p.to_string(),
            Some(p) => return v3_error(400, &format!("invalid precision {p:?}")),
            None => return v3_error(400, "precision is required by this mock"),
        };
        let accept_partial = match req.param("accept_partial") {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => return v3_error(400, &format!("invalid accept_partial {other:?}")),
        };
        let body = match decoded_body(req) {
            Ok(b) => b,
            Err(e) => return v3_error(400, &e),
        };
        if body.len() > self.common.max_body_bytes {
            return v3_error(413, "the request was too large");
        }
        let lines = match body_lines(&body) {
            Ok(l) => l,
            Err(e) => return v3_error(400, &e),
        };
        let database = self.databases.entry(db).or_insert_with(|| Database {
            retention_period: None,
            created_by: CreatedBy::Write,
            tables: HashMap::new(),
        });
        // Check every line against the table schema as it grows, like the write buffer does.
        let mut good = Vec::new();
        let mut rejected = Vec::new();
        let mut tables = database.tables.clone();
        for (n, raw) in lines.iter().enumerate() {
            let checked = parse_line(raw, Dialect::V3).and_then(|line| {
                let table = tables.entry(line.measurement.clone()).or_default();
                let mut wanted: Vec<(&str, &'static str)> = Vec::new();
                for (k, _) in &line.tags {
                    wanted.push((k, "tag"));
                }
                for (k, v) in &line.fields {
                    if line.tags.iter().any(|(t, _)| t == k) {
                        return Err(format!(
                            "invalid column type for column '{k}', expected iox::column_type::tag, got iox::column_type::field::{}",
                            v.kind()
                        ));
                    }
                    wanted.push((k, v.kind()));
                }
                for (col, kind) in &wanted {
                    if let Some(have) = table.get(*col).filter(|have| *have != kind) {
                        return Err(format!("invalid column type for column '{col}', expected {have}, got {kind}"));
                    }
                }
                for (col, kind) in wanted {
                    table.insert(col.to_string(), kind);
                }
                Ok(line)
            });
            match checked {
                Ok(mut line) => {
                    line.precision = precision.clone();
                    good.push(line);
                }
                Err(e) => rejected.push(json!({"original_line": raw, "line_number": n + 1, "error_message": e})),
            }
        }
        if rejected.is_empty() {
            database.tables = tables;
            self.common.lines.extend(good);
            return Response::empty(204).with_header("cluster-uuid", "mock");
        }
        if !accept_partial {
            let first = rejected.swap_remove(0);
            return Response::json(
                400,
                json!({"error": "parsing failed for write_lp endpoint", "data": first}),
            );
        }
        database.tables = tables;
        self.common.lines.extend(good);
        rejected.truncate(100);
        Response::json(
            400,
            json!({"error": "partial write of line protocol occurred", "data": rejected}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_dialects_read_backslashes_differently() {
        let go = parse_line(r#"m,t=a\\b,u=x\,y f="q\"\\" 5"#, Dialect::Go).unwrap();
        assert_eq!(go.tags, [("t".into(), r"a\\b".into()), ("u".into(), "x,y".into())]);
        assert_eq!(go.fields, [("f".into(), FieldValue::Str(r#"q"\"#.into()))]);
        assert_eq!(go.timestamp, Some(5));
        let v3 = parse_line(r#"m,t=a\\b,u=L\goran f=1i"#, Dialect::V3).unwrap();
        assert_eq!(v3.tags, [("t".into(), r"a\b".into()), ("u".into(), r"L\goran".into())]);
        for bad in [r"m,t=a\ f=1", "m,t= f=1", "m f=", "m,t=a,t=b f=1", "m f=1 x"] {
            assert!(parse_line(bad, Dialect::Go).is_err(), "{bad}");
            assert!(parse_line(bad, Dialect::V3).is_err(), "{bad}");
        }
        assert!(
            parse_line(r"m,t=a\\ f=1", Dialect::V3).is_err(),
            "trailing escaped backslash"
        );
    }
}
