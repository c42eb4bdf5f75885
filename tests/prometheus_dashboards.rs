//! The health dashboard and the alert rules on a real Prometheus: the engine delivers events into a real InfluxDB
//! and one Sense node falls silent, Prometheus (`/usr/bin/prometheus`) scrapes the engine's `/metrics` every second
//! and evaluates `packaging/prometheus/sense-ingest-alerts.yml`, and then every query of
//! `packaging/grafana/sense-ingest-health.json` runs through `/api/v1/query` as Grafana would send it, the instance
//! variable's values come from the label API, every alert rule is loaded and evaluates with health "ok", the
//! silent-host alert (and only it) is active, and `promtool check rules` passes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::http::request;
use crate::common::influxd::Influxd;
use crate::common::prometheus::Prometheus;
use crate::common::{metrics_addr, send_datagrams, wait_for, Engine};

const DASHBOARD: &str = "packaging/grafana/sense-ingest-health.json";
const ALERTS: &str = "packaging/prometheus/sense-ingest-alerts.yml";
/// The templated datasource every panel and the instance variable use.
const DS_VAR: &str = "DS_PROMETHEUS";
/// What the test substitutes for Grafana's `$__rate_interval` (at least four scrape intervals, as Grafana's is).
const RATE_INTERVAL: &str = "1m";

fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn ds_ref() -> Value {
    serde_json::json!({"type": "prometheus", "uid": format!("${{{DS_VAR}}}")})
}

/// Every (panel title, PromQL expression) of the dashboard; panels of rows included.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut panels: Vec<&Value> = Vec::new();
    for p in d["panels"].as_array().expect("panels is an array") {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut out = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("").to_string();
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(p["datasource"], ds_ref(), "{title}: panel datasource");
            assert_eq!(t["datasource"], ds_ref(), "{title}: target datasource");
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a target without expr"));
            out.push((title.clone(), expr.to_string()));
        }
    }
    out
}

/// Grafana's rendering of a multi-value Prometheus variable inside a `=~"..."` matcher: InfluxQL's `(a|b)` with
/// regex-escaped values (RE2 takes the same escapes), the backslashes doubled for the PromQL string literal.
fn grafana_prometheus_regex(values: &[String]) -> String {
    crate::packaging::grafana_regex(values).replace('\\', r"\\")
}

/// `data.result` of a successful instant query; panics with Prometheus' error otherwise.
fn result(answer: &Value, what: &str) -> Vec<Value> {
    assert_eq!(answer["status"], "success", "{what}: {answer}");
    answer["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The alert rules of the rule file: (name, expression).
fn alert_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_path(ALERTS)).unwrap();
    let yaml: Yaml = serde_norway::from_str(&text).unwrap();
    let mut out = Vec::new();
    for group in yaml["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("only alerting rules").to_string();
            let expr = rule["expr"].as_str().expect("expr").to_string();
            out.push((name, expr));
        }
    }
    out
}

#[test]
fn health_dashboard_queries_and_alert_rules_run_on_a_real_prometheus() {
    // The engine: into a real InfluxDB, with a spool, metrics on loopback, silent hosts watched.
    let influx = Influxd::start();
    let mut cfg = fixtures::influx_only_config(false, influx.addr.port(), "senseops");
    set(&mut cfg, "sense-ingest.metrics.listen", Yaml::from("127.0.0.1:0"));
    set(&mut cfg, "sense-ingest.silentHostAfter", Yaml::from("1s"));
    let engine = Engine::start_with_yaml(&serde_norway::to_string(&cfg).unwrap());
    let metrics: SocketAddr = metrics_addr(&engine);

    // Events from one Sense node, all delivered; then the node falls silent.
    const N: usize = 50;
    let case = &fixtures::cases()[0];
    send_datagrams(engine.target(), &vec![case.datagram.clone(); N]);
    wait_for("every event in InfluxDB", Duration::from_secs(30), || {
        (influx.points("senseops", "user_events").len() == N).then_some(())
    });
    let silent_line = wait_for("the silent-host gauge on /metrics", Duration::from_secs(20), || {
        let (_, body) = request(metrics, "GET", "/metrics", b"")?;
        body.lines()
            .find(|l| l.starts_with("sense_ingest_silent_host{"))
            .map(str::to_string)
    });
    let silent_host = silent_line
        .split("sense_host=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let (_, body) = request(metrics, "GET", "/metrics", b"").unwrap();
    assert!(
        body.lines().any(
            |l| l.starts_with("sense_ingest_sink_spool_max_bytes{destination=\"influxdb\"} ") && !l.ends_with(" 0")
        ),
        "the spool is on, so the spool panels have a cap to show:\n{body}"
    );

    // Prometheus scraping the engine and evaluating the alert rules.
    let rules = repo_path(ALERTS);
    let prometheus = Prometheus::start(&[metrics], &[rules.as_path()]);
    let instance = metrics.to_string();
    wait_for(
        "Prometheus to hold the silent host and every accepted event",
        Duration::from_secs(30),
        || {
            let silent = result(&prometheus.query("sense_ingest_silent_host"), "silent host");
            let accepted = result(&prometheus.query("sense_ingest_events_accepted_total"), "accepted");
            (!silent.is_empty() && accepted.first()?["value"][1].as_str() == Some(N.to_string().as_str())).then_some(())
        },
    );

    // The dashboard: its instance variable's values from the label API, as Grafana's label_values() gets them.
    let d: Value = serde_json::from_str(&std::fs::read_to_string(repo_path(DASHBOARD)).unwrap()).unwrap();
    assert_eq!(d["title"], "sense-ingest health");
    crate::packaging::check_importable(&d, &ds_ref());
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["name"] == DS_VAR)
        .expect("a datasource variable");
    assert_eq!(
        (ds["type"].as_str(), ds["query"].as_str()),
        (Some("datasource"), Some("prometheus"))
    );
    let var = vars
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an instance variable");
    assert_eq!(var["datasource"], ds_ref());
    assert_eq!(var["allValue"], ".*");
    let definition = var["definition"].as_str().unwrap();
    let (metric, label) = definition
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .and_then(|s| s.split_once(", "))
        .unwrap_or_else(|| panic!("instance variable: {definition}"));
    let values = prometheus.get(&format!("/api/v1/label/{label}/values?match[]={metric}"));
    let instances: Vec<String> = serde_json::from_value(values["data"].clone()).unwrap();
    assert_eq!(instances, std::slice::from_ref(&instance));

    // Every query, with "All" (`.*`) and with the one instance selected: valid, and with data.
    let queries = dashboard_queries(&d);
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    let mut names = BTreeSet::new();
    for (title, expr) in &queries {
        assert!(
            expr.contains(r#"instance=~"$instance""#),
            "{title}: not filtered by $instance: {expr}"
        );
        for name in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if name.starts_with("sense_ingest_") {
                let base = name.trim_end_matches("_bucket");
                assert!(
                    body.contains(&format!("# TYPE {base} ")),
                    "{title}: {name} is not a metric of the engine"
                );
            }
        }
        for selection in [".*".to_string(), grafana_prometheus_regex(&instances)] {
            let q = expr
                .replace("$__rate_interval", RATE_INTERVAL)
                .replace("$instance", &selection);
            assert!(!q.contains('$'), "{title}: a variable left in {q}");
            // Rates need two scrapes in the window: wait for data, failing at once on an invalid query.
            let series = wait_for(&format!("data for {title}: {q}"), Duration::from_secs(30), || {
                let series = result(&prometheus.query(&q), &format!("{title}: {q}"));
                (!series.is_empty()).then_some(series)
            });
            for s in &series {
                names.extend(s["metric"]["destination"].as_str().map(str::to_string));
            }
        }
    }
    assert_eq!(names, BTreeSet::from(["influxdb".to_string()]));
    // The silent-host alarm names the node.
    let alarm = queries
        .iter()
        .find(|(t, _)| t == "Silent-host alarm")
        .map(|(_, e)| e.replace("$instance", ".*"))
        .expect("a silent-host alarm panel");
    let rows = result(&prometheus.query(&alarm), "alarm");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["metric"]["sense_host"], silent_host.as_str());
    assert_eq!(rows[0]["value"][1], "1");

    // Alert rules: every expression is valid PromQL, every rule is loaded and evaluates with health "ok".
    let alerts = alert_rules();
    let wanted: BTreeSet<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        wanted,
        BTreeSet::from([
            "SenseIngestDestinationFailing",
            "SenseIngestEventsDropped",
            "SenseIngestKernelDrops",
            "SenseIngestSilentHost",
            "SenseIngestSpoolAbove80Percent",
        ])
    );
    for (name, expr) in &alerts {
        result(&prometheus.query(expr), name);
    }
    wait_for(
        "every alert rule evaluated with health ok",
        Duration::from_secs(30),
        || {
            let answer = prometheus.get("/api/v1/rules");
            let loaded: Vec<(String, String)> = answer["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .map(|r| {
                    if let Some(err) = r["lastError"].as_str().filter(|e| !e.is_empty()) {
                        panic!("rule {}: {err}", r["name"]);
                    }
                    (
                        r["name"].as_str().unwrap().to_string(),
                        r["health"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            let names: BTreeSet<&str> = loaded.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, wanted, "loaded rules");
            loaded.iter().all(|(_, h)| h == "ok").then_some(())
        },
    );
    // The silent node raises its alert; nothing else is wrong, so nothing else is active.
    let active = wait_for("the silent-host alert", Duration::from_secs(30), || {
        let answer = prometheus.get("/api/v1/alerts");
        let active = answer["data"]["alerts"].as_array()?.clone();
        (!active.is_empty()).then_some(active)
    });
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0]["labels"]["alertname"], "SenseIngestSilentHost");
    assert_eq!(active[0]["labels"]["sense_host"], silent_host.as_str());
    assert_eq!(active[0]["labels"]["instance"], instance.as_str());

    // promtool, as an admin would check the file.
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian package prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules: {text}");
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{text}"
    );
}
