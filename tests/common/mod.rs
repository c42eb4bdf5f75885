//! Test harness: real InfluxDB 1.x and the real `sense-ingest` binary, each on free loopback ports in temp dirs,
//! stopped on drop. Waits are conditions with deadlines, never bare sleeps.

#![allow(dead_code)]

pub mod fixtures;
pub mod http;
pub mod influx_mock;
pub mod influxd;
pub mod mosquitto;
pub mod nr_receiver;
pub mod prometheus;
pub mod seccomp;
pub mod tls_proxy;
pub mod tmpfs;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on 127.0.0.1 (bound to port 0 and released; servers that cannot bind port 0 themselves need
/// it).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `sense-ingest` process.
pub struct Engine {
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    /// The UDP address it listens on (from its `listening` log line).
    pub addr: SocketAddr,
    _dir: Option<tempfile::TempDir>,
}

/// The engine binary built by cargo for these tests, or `SENSE_INGEST_BIN` when set: a private copy, for
/// worktrees that share one `CARGO_TARGET_DIR` and so rebuild `target/debug/sense-ingest` under each other.
pub fn engine_bin() -> PathBuf {
    std::env::var_os("SENSE_INGEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sense-ingest")))
}

fn pump(reader: impl std::io::Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
}

impl Engine {
    /// Starts `sense-ingest run --config <yaml written to a temp file>` and waits for its `listening` lines.
    pub fn start_with_yaml(yaml: &str) -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("butler-sos.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut e = Engine::start(&["run", "--config", path.to_str().unwrap()]);
        e._dir = Some(dir);
        e
    }

    /// [`Engine::start_with_yaml`] with stdout a pipe whose reader has gone (closed before the engine prints).
    pub fn start_with_yaml_and_closed_stdout(yaml: &str) -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("butler-sos.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut e = Engine::start_inner(&["run", "--config", path.to_str().unwrap()], &[], false);
        e._dir = Some(dir);
        e
    }

    /// Starts the binary with `args` and waits until it logged `listening`.
    pub fn start(args: &[&str]) -> Engine {
        Engine::start_inner(args, &[], true)
    }

    /// [`Engine::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Engine {
        Engine::start_inner(args, env, true)
    }

    /// The engine's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("engine still running").id()
    }

    fn start_inner(args: &[&str], env: &[(&str, &str)], read_stdout: bool) -> Engine {
        Engine::start_command(args, env, read_stdout, |_| {})
    }

    /// [`Engine::start_with_yaml`], with `configure` applied to the command before it is spawned (e.g. a
    /// `pre_exec` hook that restricts the process).
    pub fn start_with_yaml_and(yaml: &str, configure: impl FnOnce(&mut Command)) -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("butler-sos.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut e = Engine::start_command(&["run", "--config", path.to_str().unwrap()], &[], true, configure);
        e._dir = Some(dir);
        e
    }

    fn start_command(
        args: &[&str],
        env: &[(&str, &str)],
        read_stdout: bool,
        configure: impl FnOnce(&mut Command),
    ) -> Engine {
        let mut command = Command::new(engine_bin());
        command
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("start sense-ingest");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        pump(child.stderr.take().unwrap(), Arc::clone(&stderr));
        let out = child.stdout.take().unwrap();
        if read_stdout {
            pump(out, Arc::clone(&stdout));
        } else {
            drop(out);
        }
        let mut engine = Engine {
            child: Some(child),
            stderr,
            stdout,
            addr: "0.0.0.0:0".parse().unwrap(),
            _dir: None,
        };
        let addr = wait_for("the engine's `listening` line", Duration::from_secs(20), || {
            if let Some(status) = engine.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("engine exited early with {status}; stderr:\n{}", engine.stderr_text());
            }
            engine
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("listening") && !l.contains("metrics endpoint"))
                .and_then(|l| {
                    // Text lines say `addr=…`; JSON lines (`--log-format json`) `"addr":"…"`.
                    match l.find("addr=") {
                        Some(at) => l[at + 5..].split_whitespace().next()?.parse::<SocketAddr>().ok(),
                        None => {
                            let at = l.find("\"addr\":\"")? + 8;
                            l[at..].split('"').next()?.parse::<SocketAddr>().ok()
                        }
                    }
                })
        });
        engine.addr = addr;
        engine
    }

    /// The address to send datagrams to (loopback, even when listening on a wildcard).
    pub fn target(&self) -> SocketAddr {
        let mut a = self.addr;
        if a.ip().is_unspecified() {
            a.set_ip(if a.is_ipv4() {
                "127.0.0.1".parse().unwrap()
            } else {
                "::1".parse().unwrap()
            });
        }
        a
    }

    /// Everything logged so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Lines printed on stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Sends the signal `name` (`HUP`, `TERM`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("engine still running");
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{name} failed");
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// The config file it was started with ([`Engine::start_with_yaml`]).
    pub fn config_path(&self) -> Option<PathBuf> {
        self._dir.as_ref().map(|d| d.path().join("butler-sos.yaml"))
    }

    /// Sends SIGTERM and waits (with a deadline) for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.terminate_within(Duration::from_secs(30))
    }

    /// Sends SIGTERM and waits at most `deadline` for the process to exit (panics after it), then for the final
    /// summary to be read.
    pub fn terminate_within(&mut self, deadline: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("engine still running");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let status = wait_for("the engine to exit after SIGTERM", deadline, || {
            self.child.as_mut().unwrap().try_wait().unwrap()
        });
        self.child = None;
        // Let the pump threads collect the last lines.
        wait_for("stderr to close", Duration::from_secs(5), || {
            self.stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("summary"))
                .then_some(())
        });
        status
    }
}

impl Engine {
    /// Sends SIGKILL (no shutdown, no flush: a crash) and reaps the process.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("engine still running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `sense-ingest run --config <yaml written to a temp file>` that is expected to exit on its own within
/// `timeout` (panics, after killing it, when it is still running): its exit status and stderr.
pub fn run_until_exit(yaml: &str, timeout: Duration) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("butler-sos.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = Command::new(engine_bin())
        .args(["run", "--config", path.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sense-ingest");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    pump(child.stderr.take().unwrap(), Arc::clone(&stderr));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sense-ingest still running after {timeout:?}; stderr:\n{}",
                stderr.lock().unwrap().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The pump thread reads until EOF, which follows the exit.
    wait_for("stderr to close", Duration::from_secs(5), || {
        Arc::strong_count(&stderr).eq(&1).then_some(())
    });
    let text = stderr.lock().unwrap().join("\n");
    (status, text)
}

/// Sends each datagram from one socket (one flow, like one Sense proxy appender), in order.
pub fn send_datagrams(target: SocketAddr, datagrams: &[Vec<u8>]) {
    let bind = if target.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
    let sock = UdpSocket::bind(bind).unwrap();
    for d in datagrams {
        sock.send_to(d, target).unwrap();
    }
}

pub use sense_ingest::testing::fixtures_dir;

/// Where the engine's metrics endpoint listens.
pub fn metrics_addr(engine: &Engine) -> SocketAddr {
    wait_for("the `metrics endpoint listening` line", Duration::from_secs(10), || {
        engine
            .stderr_text()
            .lines()
            .find(|l| l.contains("metrics endpoint listening"))
            .and_then(|l| {
                let start = l.find("addr=")? + 5;
                l[start..].split_whitespace().next()?.parse().ok()
            })
    })
}

/// One sample of `/metrics` (exact series name with labels).
pub fn metric(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// `bash <script>` (a path relative to the repository root), run from the root as from a shell: without the
/// package variables cargo sets for test binaries (were the script to run `cargo build`, cargo would see them as
/// changed and rebuild, then again from the next shell).
pub fn repo_script(script: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(script).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_EXE_",
            "CARGO_CRATE_",
            "CARGO_PRIMARY_",
            "CARGO_TARGET_TMPDIR",
        ]
        .iter()
        .any(|p| name.starts_with(p))
        {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

/// Runs `program args` to completion; panics only when it cannot be started.
pub fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// [`run`], panicking with its output unless it exits 0.
pub fn run_ok(program: &str, args: &[&str]) -> std::process::Output {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
