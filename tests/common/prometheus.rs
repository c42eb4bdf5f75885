//! A real Prometheus server (`prometheus` from the Debian package) on a free loopback port, with its own storage in
//! a temp dir, scraping the targets and loading the rule files it is started with. Stopped (SIGTERM, then reaped)
//! on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::http::{encode, request};
use super::{free_tcp_port, wait_for};

/// The Debian package's binary.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    /// HTTP API address.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, `/metrics`) every second and evaluating `rule_files`
    /// every second, and waits until it is ready (`/-/ready`).
    pub fn start(targets: &[SocketAddr], rule_files: &[&Path]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let rules: Vec<String> = rule_files.iter().map(|r| format!("\"{}\"", r.display())).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: sense-ingest\n    static_configs:\n      - targets: [{}]\n",
            rules.join(", "),
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{PROMETHEUS}: {e} (Debian package prometheus; scripts/test.sh installs it)"));
        let mut me = Prometheus { child, addr, _dir: dir };
        wait_for("prometheus /-/ready", Duration::from_secs(30), || {
            if let Some(status) = me.child.try_wait().unwrap() {
                panic!("prometheus exited early: {status}\n{}", me.log());
            }
            request(addr, "GET", "/-/ready", b"")
                .filter(|(s, _)| *s == 200)
                .map(|_| ())
        });
        me
    }

    /// What Prometheus logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` of the HTTP API, parsed as JSON; panics unless it answers 200.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = request(self.addr, "GET", path, b"").expect("prometheus reachable");
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// An instant query (`/api/v1/query`): the whole answer, `status` included. A query Prometheus rejects
    /// answers 400 with `status: "error"`; that is returned too, for the caller to report.
    pub fn query(&self, expr: &str) -> serde_json::Value {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let (_, body) = request(self.addr, "GET", &path, b"").expect("prometheus reachable");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{expr}: {e}: {body}"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SIGTERM by pid lets it close its storage; then reap it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
