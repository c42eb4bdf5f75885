//! A real InfluxDB 1.x (`influxd` from the Debian package) on free loopback ports in a temp dir.
//!
//! Its config differs from the defaults in one limit: `max-values-per-tag = 0` (unlimited; default 100,000),
//! because the chaos test stores 200,000 distinct user ids, each a tag value.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::http::{encode, request};
use super::{free_tcp_port, wait_for};

/// A running influxd, killed on drop.
pub struct Influxd {
    child: Child,
    /// HTTP API address.
    pub addr: SocketAddr,
    conf: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Influxd {
    /// Starts influxd and waits until `/ping` answers 204.
    pub fn start() -> Influxd {
        Influxd::start_with_http("")
    }

    /// As [`Influxd::start`], with `max-body-size` (the write body limit, default 25 MB) set to `bytes`.
    pub fn start_with_max_body(bytes: usize) -> Influxd {
        Influxd::start_with_http(&format!("  max-body-size = {bytes}\n"))
    }

    /// As [`Influxd::start`], with `http` (lines) added to the `[http]` section.
    fn start_with_http(http: &str) -> Influxd {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_tcp_port();
        let rpc_port = free_tcp_port();
        let d = dir.path().display();
        let conf = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc_port}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  \
             query-log-enabled = false\n  max-values-per-tag = 0\n[http]\n  bind-address = \"127.0.0.1:{http_port}\"\n  log-enabled = false\n{http}\
             [monitor]\n  store-enabled = false\n[continuous_queries]\n  enabled = false\n"
        );
        let conf_path = dir.path().join("influxdb.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
        let child = spawn(&conf_path);
        let mut me = Influxd {
            child,
            addr,
            conf: conf_path,
            _dir: dir,
        };
        me.wait_ready();
        me
    }

    fn wait_ready(&mut self) {
        let addr = self.addr;
        wait_for("influxd /ping", Duration::from_secs(30), || {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("influxd exited early: {status}");
            }
            request(addr, "GET", "/ping", b"")
                .filter(|(s, _)| *s == 204)
                .map(|_| ())
        });
    }

    /// Starts influxd again (same ports, same data) after [`Influxd::kill`].
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
        self.wait_ready();
    }

    /// Starts influxd again after [`Influxd::kill`] without waiting: see [`Influxd::is_ready`].
    pub fn start_again(&mut self) {
        self.child = spawn(&self.conf);
    }

    /// True once `/ping` answers 204 (panics when influxd exited).
    pub fn is_ready(&mut self) -> bool {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("influxd exited early: {status}");
        }
        request(self.addr, "GET", "/ping", b"").is_some_and(|(s, _)| s == 204)
    }

    /// Runs an InfluxQL query against `db` and returns the JSON answer.
    pub fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let path = format!("/query?db={}&epoch=ns&q={}", encode(db), encode(q));
        let (status, body) = request(self.addr, "POST", &path, b"").expect("influxd reachable");
        assert_eq!(status, 200, "query {q} failed: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Every `user_events` point of `db` as (time, tags, fields), ordered by time.
    pub fn points(&self, db: &str, measurement: &str) -> Vec<Point> {
        let v = self.query(db, &format!("SELECT *::field FROM \"{measurement}\" GROUP BY *"));
        let mut out = Vec::new();
        for series in v["results"][0]["series"].as_array().cloned().unwrap_or_default() {
            let tags = series["tags"].as_object().cloned().unwrap_or_default();
            let columns: Vec<String> = series["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            for row in series["values"].as_array().unwrap() {
                let row = row.as_array().unwrap();
                let mut fields = serde_json::Map::new();
                for (c, v) in columns.iter().zip(row).skip(1) {
                    if !v.is_null() {
                        fields.insert(c.clone(), v.clone());
                    }
                }
                let tags: serde_json::Map<_, _> = tags
                    .iter()
                    .filter(|(_, v)| v.as_str() != Some(""))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                out.push(Point {
                    time: row[0].as_i64().unwrap(),
                    tags,
                    fields,
                });
            }
        }
        out.sort_by_key(|p| p.time);
        out
    }

    /// Stops influxd (SIGKILL) — for outage tests.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One stored point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Nanoseconds since the epoch.
    pub time: i64,
    /// Tags (non-empty values).
    pub tags: serde_json::Map<String, serde_json::Value>,
    /// Fields.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

fn spawn(conf: &std::path::Path) -> Child {
    Command::new(influxd_bin())
        .arg("-config")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start influxd (install the Debian package `influxdb`; the README test command does)")
}

fn influxd_bin() -> &'static str {
    if std::path::Path::new("/usr/bin/influxd").exists() {
        "/usr/bin/influxd"
    } else {
        "influxd"
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.kill();
    }
}
