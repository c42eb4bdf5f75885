//! The deployment files in `packaging/`: the Grafana dashboard (structure, and every query run against a real
//! InfluxDB 1.x holding Butler SOS's `user_events` points), the systemd unit, the sysctl snippet, the example
//! overlay, the Dockerfile and its overlay, each checked against the engine's own defaults where they depend on them. The
//! Debian package built from them is tested in `deb.rs`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use sense_ingest::config::EngineConfig;

use crate::common::fixtures;
use crate::common::http::request;
use crate::common::influxd::Influxd;

const DASHBOARD: &str = "packaging/grafana/sense-ingest-user-events.json";
const UNIT: &str = "packaging/sense-ingest.service";
const SYSCTL: &str = "packaging/99-sense-ingest.conf";
const DOCKERFILE: &str = "packaging/Dockerfile";
const OVERLAY: &str = "packaging/overlay.yaml";
const CONTAINER_OVERLAY: &str = "packaging/container.yaml";

/// Where the Debian package installs the binary (the unit's one place of truth for it).
pub const INSTALLED_BIN: &str = "/usr/bin/sense-ingest";
/// The config files the unit passes, in order: the Butler SOS file, then the package's overlay (later wins).
pub const UNIT_CONFIGS: [&str; 2] = ["/etc/sense-ingest/butler-sos.yaml", "/etc/sense-ingest/overlay.yaml"];
/// The spool folder the overlay sets: inside the unit's StateDirectory, the only place it may write.
pub const STATE_SPOOL: &str = "/var/lib/sense-ingest/spool";

/// The templated datasource every panel and the host variable must use.
const DS_VAR: &str = "DS_INFLUXDB";
/// The user-events dashboard's variables for config tags (`userEvents.tags`), each a filter on every query.
const TAG_VARIABLES: [&str; 2] = ["qs_env", "env"];
/// What `sense-ingest` waits after `shutdownTimeout` for sinks to write to their spool (`SPOOL_GRACE`).
const SPOOL_GRACE: Duration = Duration::from_secs(5);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD} is not valid JSON: {e}"))
}

fn ds_ref() -> Value {
    serde_json::json!({"type": "influxdb", "uid": format!("${{{DS_VAR}}}")})
}

/// Every (panel title, target) of the dashboard, rows' nested panels included.
fn targets(d: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((p["title"].as_str().unwrap_or("").to_string(), t.clone()));
        }
    }
    out
}

fn all_panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p.clone());
        out.extend(p["panels"].as_array().into_iter().flatten().cloned());
    }
    out
}

fn variable<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["templating"]["list"]
        .as_array()
        .expect("templating.list is an array")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("templating.list has no variable {name:?}"))
}

/// `$name` and `${name}` references in `text` (letters, digits, `_`).
fn var_refs(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let braced = b.get(i + 1) == Some(&b'{');
            let start = i + 1 + usize::from(braced);
            let mut end = start;
            while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                end += 1;
            }
            if end > start {
                out.push(text[start..end].to_string());
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// What Grafana 10/11 needs to import a dashboard file as a new dashboard: title, uid, schema version, no id;
/// panels with unique ids inside the 24-column grid without overlaps, core panel types only, every panel with
/// queries on the templated datasource `ds`.
pub fn check_importable(d: &Value, ds: &Value) {
    assert!(d["title"].as_str().is_some_and(|t| !t.trim().is_empty()), "title");
    let uid = d["uid"].as_str().expect("uid is a string");
    assert!(
        !uid.is_empty() && uid.len() <= 40 && uid.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        "uid {uid:?}: 1-40 characters of [A-Za-z0-9_-]"
    );
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion is an integer");
    assert!(
        (36..=41).contains(&schema),
        "schemaVersion {schema}: Grafana 10/11 dashboards"
    );
    assert!(
        d["id"].is_null(),
        "id must be null so the import creates a new dashboard"
    );

    // Panels: unique ids, a grid position each, inside the 24-column grid, no overlaps, core panel types only.
    let panels = d["panels"].as_array().expect("panels is an array");
    assert!(!panels.is_empty(), "no panels");
    let mut ids = HashSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for p in all_panels(d) {
        let title = p["title"].as_str().unwrap_or("").to_string();
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("panel {title:?}: id"));
        assert!(ids.insert(id), "panel id {id} used twice");
        assert!(!title.trim().is_empty(), "panel {id} has no title");
        let g = &p["gridPos"];
        let [h, w, x, y] =
            ["h", "w", "x", "y"].map(|k| g[k].as_u64().unwrap_or_else(|| panic!("{title}: gridPos.{k}")));
        assert!(
            h > 0 && w > 0 && x + w <= 24,
            "{title}: gridPos {g} outside the 24-column grid"
        );
        for (other, [oh, ow, ox, oy]) in &boxes {
            let apart = x + w <= *ox || *ox + ow <= x || y + h <= *oy || *oy + oh <= y;
            assert!(apart, "panels {title:?} and {other:?} overlap");
        }
        boxes.push((title.clone(), [h, w, x, y]));
        let ty = p["type"].as_str().unwrap_or("");
        assert!(
            ["timeseries", "stat", "table", "piechart", "bargauge", "text", "row"].contains(&ty),
            "{title}: panel type {ty:?} is not a core panel"
        );
        if p["targets"].as_array().is_some_and(|t| !t.is_empty()) {
            assert_eq!(&p["datasource"], ds, "{title}: panel datasource");
        }
    }
}

#[test]
fn grafana_dashboard_imports_cleanly() {
    let d = dashboard();
    check_importable(&d, &ds_ref());

    // Variables: the InfluxDB datasource, and the Sense hosts from the datasource.
    let ds = variable(&d, DS_VAR);
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "influxdb");
    let host = variable(&d, "host");
    assert_eq!(host["type"], "query");
    assert_eq!(host["datasource"], ds_ref());
    assert_eq!(host["query"], r#"SHOW TAG VALUES FROM "user_events" WITH KEY = "host""#);
    // Config tags (`userEvents.tags`), as Butler SOS's SenseOps dashboards filter them. "All" is `.*`, so points
    // written without the tag still show; every query filters by each.
    for tag in TAG_VARIABLES {
        let v = variable(&d, tag);
        assert_eq!(v["type"], "query", "{tag}");
        assert_eq!(v["datasource"], ds_ref(), "{tag}");
        assert_eq!(
            v["query"],
            format!(r#"SHOW TAG VALUES FROM "user_events" WITH KEY = "{tag}""#),
            "{tag}"
        );
        assert_eq!(
            (v["multi"].as_bool(), v["includeAll"].as_bool()),
            (Some(true), Some(true)),
            "{tag}"
        );
        assert_eq!(v["allValue"], ".*", "{tag}");
    }
    let defined: HashSet<String> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();

    // Targets: raw InfluxQL on user_events, time-filtered, templated datasource, only defined variables.
    let all = targets(&d);
    assert!(all.len() >= 6, "only {} queries", all.len());
    for (title, t) in &all {
        assert_eq!(t["datasource"], ds_ref(), "{title}: target datasource");
        assert_eq!(t["rawQuery"], true, "{title}: rawQuery");
        let q = t["query"].as_str().unwrap_or_else(|| panic!("{title}: query"));
        assert!(q.contains(r#"FROM "user_events""#), "{title}: {q}");
        for tag in TAG_VARIABLES {
            assert!(
                q.contains(&format!(r#"AND "{tag}" =~ /^${tag}$/"#)),
                "{title}: not filtered by ${tag}: {q}"
            );
        }
        assert!(
            q.matches("$timeFilter").count() >= q.matches("FROM").count(),
            "{title}: every SELECT needs WHERE $timeFilter: {q}"
        );
        for v in var_refs(q) {
            assert!(
                defined.contains(&v) || ["timeFilter", "__interval"].contains(&v.as_str()),
                "{title}: ${v} is neither a dashboard variable nor a Grafana macro"
            );
        }
    }
    // Any ${...} anywhere (datasource uids included) must be a defined variable, or the import leaves it dangling.
    let text = read(DASHBOARD);
    for v in var_refs(&text)
        .into_iter()
        .filter(|v| text.contains(&format!("${{{v}}}")))
    {
        assert!(defined.contains(&v), "${{{v}}} is not a dashboard variable");
    }

    // What the dashboard is for.
    let queries: Vec<&str> = all.iter().map(|(_, t)| t["query"].as_str().unwrap()).collect();
    let has = |needles: &[&str]| queries.iter().any(|q| needles.iter().all(|n| q.contains(n)));
    assert!(
        has(&["'Start session'", r#"GROUP BY time($__interval), "host""#]),
        "sessions started per host"
    );
    assert!(has(&[r#""event_action" fill(0)"#]), "events per minute by event_action");
    assert!(has(&[r#"GROUP BY "appName""#]), "top apps");
    assert!(has(&[r#"GROUP BY "uaBrowserName""#]), "browsers");
    assert!(has(&[r#"GROUP BY "uaOsName""#]), "operating systems");
    assert!(has(&[r#"count(distinct("userFull"))"#]), "active users");
    let text_panel = all_panels(&d)
        .into_iter()
        .find(|p| p["type"] == "text")
        .expect("a text panel on where losses are visible");
    let content = text_panel["options"]["content"].as_str().unwrap();
    for needle in ["summary", "kernel_drops", "dropped", "/metrics"] {
        assert!(content.contains(needle), "loss panel does not mention {needle}");
    }
}

/// Grafana's rendering of a multi-value variable inside an InfluxQL regex: `(a|b)`, each value regex-escaped.
pub fn grafana_regex(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| {
            v.chars().fold(String::new(), |mut s, c| {
                if r"\^$.|?*+()[]{}/".contains(c) {
                    s.push('\\');
                }
                s.push(c);
                s
            })
        })
        .collect();
    format!("({})", escaped.join("|"))
}

fn numbers(series: &Value) -> Vec<f64> {
    series["values"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().unwrap().iter().skip(1).filter_map(Value::as_f64))
        .collect()
}

/// `line` (InfluxDB line protocol) with the tag `key=value` added to its tag set.
fn with_tag(line: &str, key: &str, value: &str) -> String {
    let b = line.as_bytes();
    let at = (0..b.len())
        .find(|&i| b[i] == b' ' && (i == 0 || b[i - 1] != b'\\'))
        .expect("a line has a field set");
    format!("{},{key}={value}{}", &line[..at], &line[at..])
}

/// The values a query variable's query returns.
fn variable_values(influx: &Influxd, d: &Value, name: &str) -> Vec<String> {
    let q = variable(d, name)["query"].as_str().unwrap().to_string();
    let mut values: Vec<String> = influx.query("senseops", &q)["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap_or_else(|| panic!("the {name} variable query returns no values: {q}"))
        .iter()
        .map(|kv| kv[1].as_str().unwrap().to_string())
        .collect();
    values.sort();
    values
}

#[test]
fn grafana_dashboard_queries_run_on_influxdb_1x() {
    // The points Butler SOS stored for the golden cases (config tags env=DEV, no qs_env: the schema the dashboard
    // must read as it is), and the same points from a second farm tagged qs_env=prod, env=PROD.
    let influx = Influxd::start();
    influx.query("senseops", "CREATE DATABASE senseops");
    let body: Vec<String> = fixtures::cases().iter().flat_map(|c| c.influx_bodies()).collect();
    assert!(body.len() >= 5, "fixtures hold too few InfluxDB points");
    assert!(body.iter().all(|l| l.contains(",env=DEV") && !l.contains("qs_env=")));
    let prod: Vec<String> = body
        .iter()
        .map(|l| with_tag(&l.replace(",env=DEV", ",env=PROD"), "qs_env", "prod"))
        .collect();
    let (status, answer) = request(
        influx.addr,
        "POST",
        "/write?db=senseops",
        [body.join("\n"), prod.join("\n")].join("\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 204, "write: {answer}");

    let d = dashboard();
    let hosts = variable_values(&influx, &d, "host");
    assert!(!hosts.is_empty());
    assert_eq!(variable_values(&influx, &d, "qs_env"), ["prod"]);
    assert_eq!(variable_values(&influx, &d, "env"), ["DEV", "PROD"]);

    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let time_filter = format!("time >= {}ms and time <= {}ms", now_ms - 6 * 3_600_000, now_ms + 60_000);
    // Each query as Grafana sends it for a selection of the tag variables: "All" (the variable's allValue `.*`),
    // one value, or a value no point has. `host` is always all its values.
    let all = ".*".to_string();
    let one = |v: &str| grafana_regex(&[v.to_string()]);
    let selections: [(&str, [String; 2], bool); 4] = [
        ("all", [all.clone(), all.clone()], true),
        ("qs_env=prod", [one("prod"), all.clone()], true),
        ("env=DEV", [all.clone(), one("DEV")], true),
        ("qs_env=test", [one("test"), all.clone()], false),
    ];
    let mut checked = BTreeMap::new();
    for p in all_panels(&d) {
        let title = p["title"].as_str().unwrap().to_string();
        let interval = p["interval"].as_str().unwrap_or("1m");
        for t in p["targets"].as_array().into_iter().flatten() {
            for (what, values, has_data) in &selections {
                let mut q = t["query"]
                    .as_str()
                    .unwrap()
                    .replace("$timeFilter", &time_filter)
                    .replace("$__interval", interval)
                    .replace("$host", &grafana_regex(&hosts));
                for (tag, value) in TAG_VARIABLES.iter().zip(values) {
                    q = q.replace(&format!("${tag}"), value);
                }
                let v = influx.query("senseops", &q);
                let result = &v["results"][0];
                assert!(result.get("error").is_none(), "{title} ({what}): {q}\n{result}");
                let series = result["series"].as_array().cloned().unwrap_or_default();
                let values: Vec<f64> = series.iter().flat_map(numbers).collect();
                if *has_data {
                    assert!(
                        values.iter().any(|n| *n > 0.0),
                        "{title} ({what}): only zeros/nulls for {q}\n{result}"
                    );
                } else {
                    assert!(
                        values.iter().all(|n| *n == 0.0),
                        "{title} ({what}): the filter lets other points through: {q}\n{result}"
                    );
                }
            }
            checked.insert(title.clone(), ());
        }
    }
    assert!(checked.len() >= 6, "checked only {checked:?}");
}

/// `[Section]` → key → values (a key may repeat, e.g. `SystemCallFilter=`).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            assert!(!unit.contains_key(name), "section [{name}] twice");
            unit.insert(name.to_string(), BTreeMap::new());
            section = Some(name.to_string());
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line {}: continuation lines are not used here",
            n + 1
        );
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: {line:?}", n + 1));
        let section = section
            .as_ref()
            .unwrap_or_else(|| panic!("line {}: key before any section", n + 1));
        let keys = unit.get_mut(section).unwrap();
        keys.entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    unit
}

fn one<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a str {
    let values = unit[section]
        .get(key)
        .unwrap_or_else(|| panic!("[{section}] has no {key}="));
    values.last().unwrap()
}

/// A list setting as systemd applies it: an empty assignment clears it, others add to it.
fn effective_list(values: Option<&Vec<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for v in values.into_iter().flatten() {
        if v.is_empty() {
            out.clear();
        }
        out.extend(v.split_whitespace().map(str::to_string));
    }
    out
}

/// A systemd time span in the forms used here (`30s`, `1min`, `90`).
fn seconds(span: &str) -> u64 {
    let digits: String = span.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().unwrap_or_else(|_| panic!("time span {span:?}"));
    match &span[digits.len()..] {
        "" | "s" | "sec" => n,
        "m" | "min" => n * 60,
        other => panic!("time span unit {other:?}"),
    }
}

#[test]
fn systemd_unit_runs_the_engine_hardened_without_blocking_io_uring() {
    let unit = parse_unit(&read(UNIT));
    for section in ["Unit", "Service", "Install"] {
        assert!(unit.contains_key(section), "no [{section}] section");
    }
    // The binary where the package puts it; the Butler SOS file, then the overlay; check-config on the same files.
    let config_args: Vec<&str> = UNIT_CONFIGS.iter().flat_map(|c| ["--config", c]).collect();
    for (key, subcommand) in [("ExecStart", "run"), ("ExecStartPre", "check-config")] {
        let exec = one(&unit, "Service", key);
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert!(Path::new(args[0]).is_absolute(), "{key} needs an absolute path: {exec}");
        assert_eq!(args[0], INSTALLED_BIN, "{key}={exec}");
        assert_eq!(args[1], subcommand, "{key}={exec}");
        assert_eq!(args[2..], config_args[..], "{key}={exec}");
    }
    assert_eq!(one(&unit, "Service", "Type"), "simple");
    assert_eq!(one(&unit, "Service", "User"), "sense-ingest");
    assert_eq!(one(&unit, "Service", "Restart"), "on-failure");
    assert_eq!(one(&unit, "Service", "KillSignal"), "SIGTERM");
    assert_eq!(one(&unit, "Service", "StateDirectory"), "sense-ingest");
    assert_eq!(one(&unit, "Service", "ProtectSystem"), "strict");
    assert_eq!(one(&unit, "Install", "WantedBy"), "multi-user.target");

    // systemd must not SIGKILL a graceful stop: sinks flush for shutdownTimeout, then spool for SPOOL_GRACE.
    let stop = Duration::from_secs(seconds(one(&unit, "Service", "TimeoutStopSec")));
    let needed = EngineConfig::default().shutdown_timeout + SPOOL_GRACE;
    assert!(
        stop > needed,
        "TimeoutStopSec {stop:?} must exceed shutdownTimeout + spool grace ({needed:?})"
    );

    // Receiving needs IPv4/IPv6 sockets and /proc (self); a capability granted must also be bounded in.
    let families = one(&unit, "Service", "RestrictAddressFamilies");
    assert!(
        families.contains("AF_INET") && families.contains("AF_INET6"),
        "{families}"
    );
    let service = &unit["Service"];
    assert_ne!(
        service.get("PrivateNetwork").and_then(|v| v.last()).map(String::as_str),
        Some("yes")
    );
    assert_ne!(
        service.get("ProcSubset").and_then(|v| v.last()).map(String::as_str),
        Some("pid")
    );
    let ambient = effective_list(service.get("AmbientCapabilities"));
    let bounding = effective_list(service.get("CapabilityBoundingSet"));
    for cap in &ambient {
        assert!(
            bounding.contains(cap),
            "{cap} is ambient but not in the bounding set {bounding:?}"
        );
    }

    // io_uring: an allow-list must include it (@system-service ⊃ @aio ⊃ io_uring_*), a deny-list must not name it.
    const IO_URING_ALLOWED_BY: [&str; 4] = ["@system-service", "@aio", "io_uring_setup", "@known"];
    for filter in service.get("SystemCallFilter").into_iter().flatten() {
        if let Some(denied) = filter.strip_prefix('~') {
            for name in denied.split_whitespace() {
                assert!(
                    !["@aio", "@system-service", "@known"].contains(&name) && !name.starts_with("io_uring"),
                    "SystemCallFilter={filter} blocks io_uring"
                );
            }
        } else if !filter.is_empty() {
            assert!(
                filter.split_whitespace().any(|n| IO_URING_ALLOWED_BY.contains(&n)),
                "SystemCallFilter={filter} does not allow io_uring"
            );
        }
    }
}

/// `check-config` on an unchanged Butler SOS file (user events off, as Butler SOS keeps it once sense-ingest takes
/// them) plus `overlay`, with the environment `env`: asserts it is valid and user events are on; returns its report.
fn check_overlay(overlay: &Path, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("butler-sos.yaml");
    let mut cfg = fixtures::config(false);
    fixtures::set(
        &mut cfg,
        "Butler-SOS.userEvents.enable",
        serde_norway::Value::from(false),
    );
    std::fs::write(&base, serde_norway::to_string(&cfg).unwrap()).unwrap();
    let out = std::process::Command::new(crate::common::engine_bin())
        .args(["check-config", "--config"])
        .arg(&base)
        .arg("--config")
        .arg(overlay)
        .env_remove("SENSE_INGEST_METRICS_HOST")
        .env_remove("SENSE_INGEST_METRICS_PORT")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check-config failed:\n{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("{} + {}: valid\n", base.display(), overlay.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("listener: udp 127.0.0.1:19997"),
        "user events stay off:\n{stdout}"
    );
    stdout
}

/// The example overlay: valid over a Butler SOS file, user events on, spool in the state directory.
#[test]
fn overlay_switches_user_events_on_and_spools_in_the_state_directory() {
    let stdout = check_overlay(&repo_root().join(OVERLAY), &[]);
    assert!(
        stdout.lines().any(|l| l.starts_with(&format!("spool: {STATE_SPOOL} "))),
        "spool not in the state directory:\n{stdout}"
    );
}

#[test]
fn sysctl_snippet_allows_the_default_receive_buffer() {
    let text = read(SYSCTL);
    let value = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix("net.core.rmem_max"))
        .and_then(|rest| rest.trim().strip_prefix('='))
        .expect("net.core.rmem_max = N");
    let rmem_max: usize = value.trim().parse().expect("a byte count");
    let wanted = EngineConfig::default().recv_buffer_bytes;
    assert!(
        rmem_max >= wanted,
        "net.core.rmem_max {rmem_max} < default recvBufferBytes {wanted}"
    );
}

/// The Dockerfile's instructions in order, continuation lines joined: (instruction, arguments).
fn dockerfile_instructions() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in read(DOCKERFILE).lines() {
        let t = line.trim();
        if pending.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(t);
                let (op, args) = pending.split_once(' ').unwrap_or((&pending, ""));
                instructions.push((op.to_ascii_uppercase(), args.trim().to_string()));
                pending.clear();
            }
        }
    }
    instructions
}

/// The image is the prebuilt binary on a Debian base, unprivileged, with its overlay, spool volume, HEALTHCHECK
/// and stop signal (`container.rs` builds and runs it).
#[test]
fn dockerfile_packages_the_prebuilt_binary_and_runs_unprivileged() {
    let instructions = dockerfile_instructions();
    let all = |op: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    assert_eq!(all("ARG"), ["BASE=debian:bookworm-slim"]);
    assert_eq!(all("FROM"), ["${BASE}"], "one stage, no toolchain");
    // The build context is what scripts/package-container.sh puts in it.
    let script = read("scripts/package-container.sh");
    for copy in all("COPY") {
        let parts: Vec<&str> = copy.split_whitespace().collect();
        assert_eq!(parts.len(), 2, "COPY {copy}");
        assert!(
            script.contains(&format!("\"$work/context/{}\"", parts[0])),
            "COPY {}: the script's context has no such file",
            parts[0]
        );
    }
    assert!(all("COPY").contains(&"sense-ingest /usr/bin/sense-ingest"));
    assert!(all("COPY").contains(&"container.yaml /etc/sense-ingest/container.yaml"));

    let user = all("USER").pop().expect("USER");
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0) && gid.parse::<u32>().is_ok_and(|g| g != 0),
        "USER {user}: numeric and not root"
    );
    assert!(
        all("RUN").iter().any(|r| r.contains(&format!("--uid {uid} "))),
        "USER {user} is not the user the image creates"
    );
    let exposed: Vec<&str> = all("EXPOSE").iter().flat_map(|a| a.split_whitespace()).collect();
    assert_eq!(exposed, ["9997/udp", "9842/tcp"]);
    assert_eq!(all("VOLUME"), [r#"["/var/lib/sense-ingest/spool"]"#]);
    assert_eq!(all("STOPSIGNAL"), ["SIGTERM"]);
    let health = all("HEALTHCHECK");
    assert_eq!(health.len(), 1);
    assert!(
        health[0].contains("/dev/tcp/127.0.0.1/${SENSE_INGEST_METRICS_PORT:-9842}") && health[0].contains("GET /live "),
        "{}",
        health[0]
    );
    assert_eq!(all("ENTRYPOINT"), [r#"["sense-ingest"]"#]);
    assert_eq!(
        all("CMD"),
        [r#"["run", "--config", "/config/butler-sos.yaml", "--config", "/etc/sense-ingest/container.yaml"]"#]
    );
}

/// The image's overlay over an unchanged Butler SOS file: valid, user events on, the metrics endpoint where the
/// HEALTHCHECK asks and EXPOSE says (or where the environment moves it), the spool in the volume.
#[test]
fn container_overlay_serves_metrics_where_the_healthcheck_asks_and_spools_in_the_volume() {
    let overlay = repo_root().join(CONTAINER_OVERLAY);
    for (env, metrics) in [
        (vec![], "0.0.0.0:9842"),
        (
            vec![
                ("SENSE_INGEST_METRICS_HOST", "127.0.0.1"),
                ("SENSE_INGEST_METRICS_PORT", "19842"),
            ],
            "127.0.0.1:19842",
        ),
    ] {
        let stdout = check_overlay(&overlay, &env);
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("metrics: http://{metrics}/metrics, "))),
            "metrics not on {metrics}:\n{stdout}"
        );
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("spool: {STATE_SPOOL} "))),
            "spool not in the volume:\n{stdout}"
        );
    }
}
