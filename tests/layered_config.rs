use std::process::Command;
use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::influxd::Influxd;
use crate::common::{engine_bin, send_datagrams, wait_for, Engine};

/// The overlay a Butler SOS admin keeps beside Butler SOS's unchanged file: user events on, a tag from the
/// environment, the engine's own section with a relative spool folder.
const OVERLAY: &str = "\
Butler-SOS:
  userEvents:
    enable: true
    tags:
      - name: site
        value: ${SENSE_SITE}
      - name: tier
        value: ${SENSE_TIER:-bronze}
sense-ingest:
  batch: {maxAge: 50ms}
  spool: {dir: overlay-spool}
";

/// Butler SOS's file as Butler SOS needs it when sense-ingest takes the user events: `userEvents.enable: false`.
fn butler_sos_file(influxd: &Influxd, db: &str) -> String {
    let mut cfg = fixtures::influx_only_config(false, influxd.addr.port(), db);
    set(&mut cfg, "Butler-SOS.userEvents.enable", Yaml::from(false));
    serde_norway::to_string(&cfg).unwrap()
}

#[test]
fn butler_sos_file_plus_an_overlay_delivers_with_values_from_the_environment() {
    let influxd = Influxd::start();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("butler-sos.yaml");
    std::fs::write(&base, butler_sos_file(&influxd, "layered")).unwrap();
    let overlay_dir = dir.path().join("sense-ingest");
    std::fs::create_dir(&overlay_dir).unwrap();
    let overlay = overlay_dir.join("overlay.yaml");
    std::fs::write(&overlay, OVERLAY).unwrap();

    // Butler SOS's flag name and the short one are the same flag.
    let mut engine = Engine::start_with_env(
        &[
            "run",
            "--configfile",
            base.to_str().unwrap(),
            "-c",
            overlay.to_str().unwrap(),
        ],
        &[("SENSE_SITE", "lab-42")],
    );
    let events: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("/qseow-proxy-session/;sense1;Start session;LAB;u{i};Hub;/hub/;x").into_bytes())
        .collect();
    send_datagrams(engine.target(), &events);
    let points = wait_for("3 points in InfluxDB", Duration::from_secs(20), || {
        let p = influxd.points("layered", "user_events");
        (p.len() == 3).then_some(p)
    });
    for p in &points {
        assert_eq!(p.tags["site"], "lab-42", "{:?}", p.tags);
        assert_eq!(p.tags["tier"], "bronze", "{:?}", p.tags);
        // The overlay's list replaced the Butler SOS file's tags.
        assert!(!p.tags.contains_key("env"), "{:?}", p.tags);
    }
    // The relative spool folder is next to the overlay that names it, not in the working directory.
    let log = engine.stderr_text();
    let spool_line = format!("spool: {}", overlay_dir.join("overlay-spool").display());
    assert!(log.contains(&spool_line), "no {spool_line:?} in:\n{log}");
    assert!(engine.terminate().success());
}

fn check_config(files: &[&std::path::Path], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(engine_bin());
    cmd.arg("check-config");
    for f in files {
        cmd.args(["--config", f.to_str().unwrap()]);
    }
    let out = cmd.envs(env.iter().copied()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn errors_name_the_file_that_set_the_key_and_unset_variables_are_errors() {
    let influxd_port = 8086;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("butler-sos.yaml");
    let mut cfg = fixtures::influx_only_config(false, influxd_port, "x");
    set(&mut cfg, "Butler-SOS.userEvents.enable", Yaml::from(false));
    std::fs::write(&base, serde_norway::to_string(&cfg).unwrap()).unwrap();
    let overlay = dir.path().join("overlay.yaml");

    // Alone, Butler SOS's copy is refused (user events off) and the message names the key.
    let (ok, _, err) = check_config(&[&base], &[]);
    assert!(!ok);
    assert!(err.contains("Butler-SOS.userEvents.enable: is false"), "{err}");

    // With the overlay: valid.
    std::fs::write(&overlay, OVERLAY).unwrap();
    let (ok, out, err) = check_config(&[&base, &overlay], &[("SENSE_SITE", "x")]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("{} + {}: valid", base.display(), overlay.display())),
        "{out}"
    );

    // The variable unset: an error naming the overlay, the key and the variable.
    let (ok, _, err) = check_config(&[&base, &overlay], &[]);
    assert!(!ok);
    let want = format!(
        "{}: Butler-SOS.userEvents.tags[0].value: environment variable SENSE_SITE is not set",
        overlay.display()
    );
    assert!(err.contains(&want), "no {want:?} in:\n{err}");

    // A bad value in the overlay names the overlay; one in the base file names the base file.
    std::fs::write(&overlay, format!("{OVERLAY}  shutdownTimeout: soon\n")).unwrap();
    let mut broken = cfg.clone();
    set(&mut broken, "Butler-SOS.influxdbConfig.port", Yaml::from("abc"));
    std::fs::write(&base, serde_norway::to_string(&broken).unwrap()).unwrap();
    let (ok, _, err) = check_config(&[&base, &overlay], &[("SENSE_SITE", "x")]);
    assert!(!ok);
    let overlay_err = format!("{}: sense-ingest.shutdownTimeout:", overlay.display());
    let base_err = format!("{}: Butler-SOS.influxdbConfig.port:", base.display());
    assert!(err.contains(&overlay_err), "no {overlay_err:?} in:\n{err}");
    assert!(err.contains(&base_err), "no {base_err:?} in:\n{err}");
}
