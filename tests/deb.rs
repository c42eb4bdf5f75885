//! The Debian package: `bash scripts/package-deb.sh` builds it, its contents and control data are checked, and,
//! as root, it is installed with `dpkg -i`, run, removed and purged, leaving nothing behind.
//!
//! The test packages the binary cargo built for these tests (`SENSE_INGEST_RELEASE_BIN`), so the suite needs no
//! release build of its own (a cold one takes longer than the rest of the suite on a 2-core machine); the script's
//! default path is `cargo build --release --locked` and then exactly the same steps. The install half needs root and fails
//! (never skips) without it; it refuses to run on a machine that already has the package or the
//! `sense-ingest` user, and purges whatever it installed even when an assertion fails.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{fixtures, run, run_ok};
use crate::packaging::{INSTALLED_BIN, STATE_SPOOL, UNIT_CONFIGS};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const UNIT_PATH: &str = "/usr/lib/systemd/system/sense-ingest.service";
const SYSCTL_PATH: &str = "/usr/lib/sysctl.d/99-sense-ingest.conf";
const CONF_DIR: &str = "/etc/sense-ingest";
const STATE_DIR: &str = "/var/lib/sense-ingest";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// One line of `dpkg-deb --contents`: mode string, owner/group, size; keyed by the path without `./`.
fn contents(deb: &str) -> BTreeMap<String, (String, String, u64)> {
    stdout(&run_ok("dpkg-deb", &["--contents", deb]))
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() == 6, "unexpected --contents line {line:?}");
            let path = f[5].trim_start_matches('.').trim_end_matches('/').to_string();
            (path, (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap()))
        })
        .collect()
}

/// `name` (>= version) entries of a Depends field, by package name.
fn depends(field: &str) -> BTreeMap<String, String> {
    field
        .split(',')
        .map(|d| {
            let d = d.trim();
            match d.split_once(' ') {
                Some((name, rest)) => (name.to_string(), rest.to_string()),
                None => (d.to_string(), String::new()),
            }
        })
        .collect()
}

fn exists(path: &str) -> bool {
    Path::new(path).symlink_metadata().is_ok()
}

/// Removes what the install half put on the machine, whatever happened: the Butler SOS file the test wrote
/// (the package leaves an admin's file alone), then the package with its user and state directory.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("{CONF_DIR}/butler-sos.yaml"));
        let out = run("dpkg", &["-P", "sense-ingest"]);
        if !out.status.success() {
            eprintln!(
                "cleanup: dpkg -P sense-ingest: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn debian_package_builds_installs_runs_and_purges_cleanly() {
    let mut script = crate::common::repo_script("scripts/package-deb.sh");
    script.env("SENSE_INGEST_RELEASE_BIN", crate::common::engine_bin());
    let out = script.output().unwrap();
    assert!(
        out.status.success(),
        "package-deb.sh: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = stdout(&out)
        .lines()
        .last()
        .expect("package-deb.sh prints the package path")
        .to_string();
    let arch = stdout(&run_ok("dpkg", &["--print-architecture"])).trim().to_string();
    let deb_path = Path::new(&deb);
    assert_eq!(
        deb_path.file_name().unwrap().to_str().unwrap(),
        format!("sense-ingest_{VERSION}_{arch}.deb")
    );
    assert_eq!(deb_path.parent().unwrap().file_name().unwrap(), "debian");
    assert!(deb_path.is_file(), "{deb} was not written");

    // Contents: exactly these files, root-owned, with these modes (directories aside, and the licence files).
    let files = contents(&deb);
    let mut expected: BTreeMap<String, &str> = [
        (INSTALLED_BIN, "-rwxr-xr-x"),
        (UNIT_PATH, "-rw-r--r--"),
        (SYSCTL_PATH, "-rw-r--r--"),
        ("/etc/sense-ingest/overlay.yaml", "-rw-r--r--"),
        ("/usr/share/doc/sense-ingest/copyright", "-rw-r--r--"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_string(), m))
    .collect();
    for entry in std::fs::read_dir(repo_root().join("licenses")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        expected.insert(format!("/usr/share/doc/sense-ingest/licenses/{name}"), "-rw-r--r--");
    }
    let shipped: BTreeMap<String, &str> = files
        .iter()
        .filter(|(_, (mode, _, _))| !mode.starts_with('d'))
        .map(|(p, (mode, _, _))| (p.clone(), mode.as_str()))
        .collect();
    assert_eq!(shipped, expected);
    for (path, (_, owner, _)) in &files {
        assert_eq!(owner, "root/root", "{path}");
    }
    // The config folder is closed from the start; postinst hands it to the service group.
    assert_eq!(files[CONF_DIR].0, "drwxr-x---");

    // The shipped files are the repository's (the binary is checked by running it below).
    let unpacked = tempfile::tempdir().unwrap();
    let root = unpacked.path();
    run_ok("dpkg-deb", &["-x", &deb, root.to_str().unwrap()]);
    for (installed, source) in [
        (UNIT_PATH, "packaging/sense-ingest.service"),
        (SYSCTL_PATH, "packaging/99-sense-ingest.conf"),
        ("/etc/sense-ingest/overlay.yaml", "packaging/overlay.yaml"),
    ] {
        let shipped = std::fs::read(root.join(installed.trim_start_matches('/'))).unwrap();
        let wanted = std::fs::read(repo_root().join(source)).unwrap();
        assert!(shipped == wanted, "{installed} differs from {source}");
    }

    // Control data: fields, Depends matching what the binary links, conffiles, maintainer scripts.
    let field = |name: &str| stdout(&run_ok("dpkg-deb", &["--field", &deb, name])).trim().to_string();
    assert_eq!(field("Package"), "sense-ingest");
    assert_eq!(field("Version"), VERSION);
    assert_eq!(field("Architecture"), arch);
    let deps = depends(&field("Depends"));
    let binary = root.join(INSTALLED_BIN.trim_start_matches('/'));
    let needed: Vec<String> = stdout(&run_ok("objdump", &["-p", binary.to_str().unwrap()]))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("NEEDED").map(|lib| lib.trim().to_string()))
        .collect();
    assert!(needed.iter().any(|l| l == "libc.so.6"), "{needed:?}");
    let mut wanted_deps = vec!["libc6", "passwd"];
    if needed.iter().any(|l| l == "libgcc_s.so.1") {
        wanted_deps.push("libgcc-s1");
    }
    wanted_deps.sort();
    assert_eq!(
        deps.keys().map(String::as_str).collect::<Vec<_>>(),
        wanted_deps,
        "{deps:?}"
    );
    assert!(deps["libc6"].starts_with("(>= 2."), "libc6 {}", deps["libc6"]);
    let info = stdout(&run_ok("dpkg-deb", &["--info", &deb]));
    for member in ["control", "conffiles", "postinst", "prerm", "postrm"] {
        assert!(
            info.lines()
                .any(|l| l.contains(" bytes,") && l.split_whitespace().any(|w| w == member)),
            "--info lists no {member}:\n{info}"
        );
    }
    let control = tempfile::tempdir().unwrap();
    run_ok("dpkg-deb", &["-e", &deb, control.path().to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(control.path().join("conffiles")).unwrap(),
        "/etc/sense-ingest/overlay.yaml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.path().join(script);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o755,
            "{script}"
        );
        let wanted = std::fs::read(repo_root().join("packaging/deb").join(script)).unwrap();
        assert!(
            std::fs::read(&path).unwrap() == wanted,
            "{script} differs from packaging/deb/{script}"
        );
    }

    // Install, as root: CI runs as root, so not being root is a failure, not a skip.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "installing the package needs root (dpkg -i); run this test as root"
    );
    assert!(
        !run("dpkg", &["-s", "sense-ingest"]).status.success(),
        "sense-ingest is already installed on this machine; refusing to install over it and purge it"
    );
    assert!(
        !run("getent", &["passwd", "sense-ingest"]).status.success(),
        "a user sense-ingest already exists; refusing to let the package's purge delete it"
    );
    for path in [CONF_DIR, STATE_DIR, INSTALLED_BIN] {
        assert!(!exists(path), "{path} exists before the install; refusing to touch it");
    }
    let _purge = Purge;

    let out = run_ok("dpkg", &["-i", &deb]);
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("not started") && note.contains("/etc/sense-ingest/butler-sos.yaml"),
        "postinst does not say why the service is not started:\n{note}"
    );
    assert_eq!(
        stdout(&run_ok(INSTALLED_BIN, &["--version"])),
        format!("sense-ingest {VERSION}\n")
    );
    for path in [UNIT_PATH, SYSCTL_PATH, "/etc/sense-ingest/overlay.yaml"] {
        assert!(exists(path), "{path} not installed");
    }

    // The system user, its state directory, the config folder readable by its group only.
    let passwd = stdout(&run_ok("getent", &["passwd", "sense-ingest"]));
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    let gid: u32 = fields[3].parse().unwrap();
    assert!(uid < 1000, "not a system user: {passwd}");
    assert_eq!(fields[5], STATE_DIR, "{passwd}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{passwd}");
    let group = stdout(&run_ok("getent", &["group", "sense-ingest"]));
    assert_eq!(group.split(':').nth(2).unwrap().parse::<u32>().unwrap(), gid, "{group}");
    run_ok("id", &["sense-ingest"]);
    let state = std::fs::metadata(STATE_DIR).unwrap();
    assert_eq!(
        (state.uid(), state.gid(), state.mode() & 0o7777),
        (uid, gid, 0o750),
        "{STATE_DIR}"
    );
    let conf = std::fs::metadata(CONF_DIR).unwrap();
    assert_eq!(
        (conf.uid(), conf.gid(), conf.mode() & 0o7777),
        (0, gid, 0o750),
        "{CONF_DIR}"
    );

    // The service's own check, as the service user, on an unchanged Butler SOS file plus the installed overlay.
    let mut cfg = fixtures::config(false);
    fixtures::set(
        &mut cfg,
        "Butler-SOS.userEvents.enable",
        serde_norway::Value::from(false),
    );
    let butler_sos = UNIT_CONFIGS[0];
    std::fs::write(butler_sos, serde_norway::to_string(&cfg).unwrap()).unwrap();
    std::os::unix::fs::chown(butler_sos, Some(0), Some(gid)).unwrap();
    std::fs::set_permissions(butler_sos, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut check = vec!["-u", "sense-ingest", "--", INSTALLED_BIN, "check-config"];
    check.extend(UNIT_CONFIGS.iter().flat_map(|c| ["--config", *c]));
    let report = stdout(&run_ok("runuser", &check));
    assert!(
        report.starts_with(&format!("{}: valid\n", UNIT_CONFIGS.join(" + "))),
        "{report}"
    );
    assert!(
        report.contains("listener: udp 127.0.0.1:19997"),
        "user events not on:\n{report}"
    );
    assert!(
        report.lines().any(|l| l.starts_with(&format!("spool: {STATE_SPOOL} "))),
        "spool not in the state directory:\n{report}"
    );

    // Remove: the program files go, the conffile and the user stay until purge.
    run_ok("dpkg", &["-r", "sense-ingest"]);
    for path in [INSTALLED_BIN, UNIT_PATH, SYSCTL_PATH] {
        assert!(!exists(path), "{path} left after dpkg -r");
    }
    assert!(exists("/etc/sense-ingest/overlay.yaml"), "dpkg -r removed the conffile");
    run_ok("id", &["sense-ingest"]);

    // Purge (the test's own Butler SOS file first: an admin's file would be kept): nothing left.
    std::fs::remove_file(butler_sos).unwrap();
    run_ok("dpkg", &["-P", "sense-ingest"]);
    for path in [CONF_DIR, STATE_DIR] {
        assert!(!exists(path), "{path} left after dpkg -P");
    }
    assert!(
        !run("id", &["sense-ingest"]).status.success(),
        "user sense-ingest left after dpkg -P"
    );
    assert!(
        !run("getent", &["group", "sense-ingest"]).status.success(),
        "group sense-ingest left after dpkg -P"
    );
    assert!(
        !run("dpkg", &["-s", "sense-ingest"]).status.success(),
        "package still known to dpkg"
    );
}
