//! The container image: `bash scripts/package-container.sh` builds it, and podman runs it (runc, the runtime's
//! default seccomp profile, host network) against a real InfluxDB on the host: the io_uring fallback and its
//! logged cause, every datagram delivered, the HEALTHCHECK on `/live`, a non-root process and a clean SIGTERM.
//!
//! Like `deb.rs`, the test packages the binary cargo built for these tests (`SENSE_INGEST_RELEASE_BIN`), so the
//! suite needs no release build. It needs root (rootful podman) and fails, never skips, without it. It builds its
//! own image name (`SENSE_INGEST_IMAGE`), so an admin's `localhost/sense-ingest:latest` is left alone, and removes
//! its container, the container's spool volume and its image even when an assertion fails. The base image
//! `localhost/debian-bookworm-minbase` the script makes when it is missing is kept: it is a build cache (a
//! debootstrap from the Debian mirror, about two minutes), not something the test's run leaves in a changed state.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

use crate::common::influxd::Influxd;
use crate::common::{fixtures, free_tcp_port, run, run_ok, send_datagrams, wait_for};

/// How every podman container of the image is run here: crun refuses this kind of host's hybrid cgroups, and
/// podman's default limits are above what the runtime may set without a systemd scope.
const RUN_OPTS: [&str; 6] = [
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];
/// The uid the Dockerfile's `USER` names.
const IMAGE_UID: u32 = 10001;
/// The WARN the engine logs under podman's default seccomp profile, which answers io_uring_setup with ENOSYS
/// (the text after the timestamp; docs/troubleshooting.md shows it).
const FALLBACK_LINE: &str = "WARN io_uring unavailable; using recvmmsg reason=io_uring_setup: ENOSYS (a seccomp \
                             profile that blocks io_uring, e.g. podman's default one, or a kernel without io_uring)";

fn podman(args: &[&str]) -> Output {
    run("podman", args)
}

/// `podman args`' stdout; panics with its output unless it exits 0.
fn podman_ok(args: &[&str]) -> String {
    String::from_utf8(run_ok("podman", args).stdout).unwrap()
}

/// Everything the container printed (stdout and stderr).
fn logs(name: &str) -> String {
    let out = podman(&["logs", name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A `Key:\tvalue` line of /proc/<pid>/status.
fn proc_status(pid: u32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {key}:\n{text}"))
        .trim()
        .to_string()
}

/// Removes the test's container (with its anonymous spool volume) and image, whatever happened.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in [
            vec!["rm", "--force", "--volumes", "--ignore", &self.container],
            vec!["rmi", "--force", &self.image],
        ] {
            let out = podman(&args);
            if !out.status.success() {
                eprintln!("cleanup: podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

#[test]
fn container_image_runs_on_recvmmsg_under_default_seccomp_delivers_and_stops_cleanly() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "rootful podman needs root; run this test as root");

    let id = std::process::id();
    let image = format!("localhost/sense-ingest:test-{id}");
    let container = format!("sense-ingest-test-{id}");
    assert!(
        !podman(&["image", "exists", &image]).status.success(),
        "{image} exists already; refusing to replace and remove it"
    );
    let _cleanup = Cleanup {
        container: container.clone(),
        image: image.clone(),
    };

    // Build.
    let out = crate::common::repo_script("scripts/package-container.sh")
        .env("SENSE_INGEST_RELEASE_BIN", crate::common::engine_bin())
        .env("SENSE_INGEST_IMAGE", &image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "package-container.sh: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().last(), Some(image.as_str()), "{stdout}");
    let config = podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}} {{.Config.StopSignal}} {{json .Config.Volumes}}",
        &image,
    ]);
    assert_eq!(
        config.trim(),
        format!(r#"{IMAGE_UID}:{IMAGE_UID} SIGTERM {{"/var/lib/sense-ingest/spool":{{}}}}"#)
    );

    // A real InfluxDB on the host; the container shares the host's network and sends to it on 127.0.0.1.
    let influx = Influxd::start();
    let cfg = fixtures::influx_only_config(false, influx.addr.port(), "senseops");
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("butler-sos.yaml");
    std::fs::write(&config_file, serde_norway::to_string(&cfg).unwrap()).unwrap();
    // The container's user reads it through the bind mount.
    std::fs::set_permissions(&config_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let metrics_port = free_tcp_port().to_string();
    let mount = format!("{}:/config/butler-sos.yaml:ro", config_file.display());

    // Run under the runtime's default seccomp profile (no --security-opt).
    let mut run = vec!["run", "--detach", "--name", &container];
    run.extend(RUN_OPTS);
    let metrics_host = "SENSE_INGEST_METRICS_HOST=127.0.0.1".to_string();
    let metrics_env = format!("SENSE_INGEST_METRICS_PORT={metrics_port}");
    run.extend([
        "--network",
        "host",
        "--env",
        &metrics_host,
        "--env",
        &metrics_env,
        "--volume",
        &mount,
        &image,
    ]);
    podman_ok(&run);

    let target: std::net::SocketAddr = wait_for("the engine's `listening` line", Duration::from_secs(30), || {
        let text = logs(&container);
        let running = podman_ok(&["inspect", "--format", "{{.State.Running}}", &container]);
        assert_eq!(running.trim(), "true", "the container exited:\n{text}");
        text.lines()
            .find(|l| l.contains("listening") && l.contains("backend=") && !l.contains("metrics endpoint"))
            .and_then(|l| l[l.find("addr=")? + 5..].split_whitespace().next()?.parse().ok())
    });
    let log = logs(&container);
    assert!(
        log.lines().any(|l| l.contains(r#"backend="recvmmsg""#)),
        "not receiving with recvmmsg:\n{log}"
    );
    let fallback: Vec<&str> = log.lines().filter(|l| l.contains("io_uring unavailable")).collect();
    assert_eq!(fallback.len(), 1, "one fallback WARN:\n{log}");
    assert!(
        fallback[0].ends_with(FALLBACK_LINE),
        "fallback line\n  got: {}\n want: …{FALLBACK_LINE}",
        fallback[0]
    );

    // The process: non-root, under a seccomp filter.
    let pid: u32 = podman_ok(&["inspect", "--format", "{{.State.Pid}}", &container])
        .trim()
        .parse()
        .unwrap();
    let uids: Vec<u32> = proc_status(pid, "Uid")
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect();
    assert_eq!(uids, [IMAGE_UID; 4], "real, effective, saved and fs uid");
    assert_eq!(proc_status(pid, "Seccomp"), "2", "no seccomp filter on the engine");

    // Delivery of N datagrams to the InfluxDB on the host.
    const N: usize = 200;
    let datagram = fixtures::cases()[0].datagram.clone();
    send_datagrams(target, &vec![datagram; N]);
    let stored = wait_for("every event in InfluxDB", Duration::from_secs(30), || {
        let points = influx.points("senseops", "user_events");
        (points.len() >= N).then_some(points.len())
    });
    assert_eq!(stored, N);

    // HEALTHCHECK: /live through the image's own command. (Without systemd podman runs no periodic checks and
    // says so on stderr; `healthcheck run` is the check a timer would run.)
    wait_for("a passing healthcheck", Duration::from_secs(20), || {
        podman(&["healthcheck", "run", &container])
            .status
            .success()
            .then_some(())
    });
    let health = podman_ok(&["inspect", "--format", "{{.State.Health.Status}}", &container]);
    assert_eq!(health.trim(), "healthy");
    // The same command fails where nothing serves /live: it checks something.
    let test: Vec<String> = serde_json::from_str(&podman_ok(&[
        "inspect",
        "--format",
        "{{json .Config.Healthcheck.Test}}",
        &container,
    ]))
    .unwrap();
    assert_eq!(test[0], "CMD", "{test:?}");
    let closed = format!("SENSE_INGEST_METRICS_PORT={}", free_tcp_port());
    let mut exec = vec!["exec", "--env", &closed, &container];
    exec.extend(test[1..].iter().map(String::as_str));
    assert!(
        !podman(&exec).status.success(),
        "the healthcheck passes without a /live to ask"
    );

    // SIGTERM: exit status 0 and the final summary.
    podman_ok(&["stop", "--time", "30", &container]);
    let state = podman_ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &container,
    ]);
    assert_eq!(state.trim(), "exited 0");
    let log = logs(&container);
    let summary = log
        .lines()
        .rev()
        .find(|l| l.contains("summary"))
        .unwrap_or_else(|| panic!("no final summary:\n{log}"));
    for want in [format!("received={N}"), format!("accepted={N}")] {
        assert!(summary.contains(&want), "summary lacks {want}: {summary}");
    }
    assert_eq!(influx.points("senseops", "user_events").len(), N);
}
