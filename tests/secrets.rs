//! Secrets never leave the config (PRODUCT.md: "Secrets (tokens, passwords, API keys) never appear in logs, errors
//! or metrics"). Sentinel values are planted in every secret a Butler SOS file can hold (InfluxDB v1 password, v2
//! and v3 tokens, New Relic insert keys, MQTT password) and every output is searched for them:
//! - the `Debug` output of the loaded config and of config errors (library calls);
//! - `check-config` stdout and stderr, on a valid file, on files with invalid values next to each secret, secrets
//!   of the wrong type, YAML syntax errors around them, and `${...}` in them naming an unset variable (the "name"
//!   may be part of the secret); `run` on the invalid files;
//! - `run --log-level silly` (the most verbose level: every datagram dumped) stderr and stdout while events flow to
//!   destinations that fail: InfluxDB v1 with auth on a closed port and on a server answering 401 (its error
//!   echoing the request's `Authorization`, as some proxies do), InfluxDB v2 and v3 stand-ins refusing the token,
//!   the New Relic stand-in answering 403 for the key, a real mosquitto refusing the password.
//!
//! A secret that reaches its destination (the `Api-Key` header, basic auth, the MQTT CONNECT) is not an output;
//! only what the engine prints or logs is checked. Besides each sentinel, the searches look for the bare word
//! `SENTINEL` (a cut or partly escaped secret) and the base64 forms a dumped HTTP basic-auth header would have.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::influx_mock::{InfluxV2Mock, InfluxV3Mock};
use crate::common::mosquitto::{mosquitto_passwd, BrokerOptions, Mosquitto};
use crate::common::nr_receiver::NrReceiver;
use crate::common::{engine_bin, free_tcp_port, wait_for, Engine};

const INFLUX_USER: &str = "ingest";
const INFLUX_PASSWORD: &str = "SENTINEL-INFLUX-PASSWORD-4d1c";
const V2_TOKEN: &str = "SENTINEL-V2-TOKEN-9b7e";
const V3_TOKEN: &str = "SENTINEL-V3-TOKEN-2f60";
const NR_KEY_A: &str = "SENTINEL-NR-KEY-A-71aa";
const NR_KEY_B: &str = "SENTINEL-NR-KEY-B-0c3d";
const MQTT_USER: &str = "ingest";
const MQTT_PASSWORD: &str = "SENTINEL-MQTT-PASSWORD-e58f";
const SECRETS: [&str; 6] = [INFLUX_PASSWORD, V2_TOKEN, V3_TOKEN, NR_KEY_A, NR_KEY_B, MQTT_PASSWORD];

/// The fixture config's New Relic accounts.
const NR_A: &str = "1111111";
const NR_B: &str = "2222222";

// ---------------------------------------------------------------------------------------------------------------
// Searching

/// Standard base64 without padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

/// Everything that would betray a secret in an output.
fn needles() -> Vec<String> {
    let mut n = vec!["SENTINEL".to_owned()];
    for s in SECRETS {
        n.push(s.to_owned());
        n.push(base64(s.as_bytes()));
    }
    n.push(base64(format!("{INFLUX_USER}:{INFLUX_PASSWORD}").as_bytes()));
    n.push(base64(format!("{MQTT_USER}:{MQTT_PASSWORD}").as_bytes()));
    n
}

/// The first needle found in `text`, with the line that holds it.
fn first_leak(text: &str) -> Option<(String, String)> {
    needles().into_iter().find_map(|needle| {
        let line = text.lines().find(|l| l.contains(&needle))?.to_owned();
        Some((needle, line))
    })
}

/// Panics, naming the output and the first line that leaks, when `text` holds any needle.
fn assert_no_secret(what: &str, text: &str) {
    if let Some((needle, line)) = first_leak(text) {
        panic!("a secret leaked into {what} ({needle:?}):\n{line}\n\nwhole output:\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Configs

/// The fixture config with a sentinel in every secret, listening on a free loopback port, events on stdout.
fn config_with_secrets() -> Yaml {
    let mut cfg = fixtures::config(true);
    let put = |cfg: &mut Yaml, path: &str, value: Yaml| set(cfg, path, value);
    put(&mut cfg, "Butler-SOS.logLevel", Yaml::from("silly"));
    put(
        &mut cfg,
        "Butler-SOS.userEvents.udpServerConfig.serverHost",
        Yaml::from("127.0.0.1"),
    );
    put(
        &mut cfg,
        "Butler-SOS.userEvents.udpServerConfig.portUserActivityEvents",
        Yaml::from(0),
    );
    put(
        &mut cfg,
        "Butler-SOS.influxdbConfig.v1Config.auth.enable",
        Yaml::from(true),
    );
    put(
        &mut cfg,
        "Butler-SOS.influxdbConfig.v1Config.auth.username",
        Yaml::from(INFLUX_USER),
    );
    put(
        &mut cfg,
        "Butler-SOS.influxdbConfig.v1Config.auth.password",
        Yaml::from(INFLUX_PASSWORD),
    );
    put(
        &mut cfg,
        "Butler-SOS.influxdbConfig.v2Config.token",
        Yaml::from(V2_TOKEN),
    );
    put(
        &mut cfg,
        "Butler-SOS.influxdbConfig.v3Config.token",
        Yaml::from(V3_TOKEN),
    );
    let accounts = format!(
        "[{{accountName: NR account A, insertApiKey: {NR_KEY_A}, accountId: '{NR_A}'}}, \
         {{accountName: NR account B, insertApiKey: {NR_KEY_B}, accountId: '{NR_B}'}}]"
    );
    put(
        &mut cfg,
        "Butler-SOS.thirdPartyToolsCredentials.newRelic",
        serde_norway::from_str(&accounts).unwrap(),
    );
    put(&mut cfg, "Butler-SOS.mqttConfig.username", Yaml::from(MQTT_USER));
    put(&mut cfg, "Butler-SOS.mqttConfig.password", Yaml::from(MQTT_PASSWORD));
    put(&mut cfg, "sense-ingest.stdout", Yaml::from(true));
    cfg
}

fn yaml(cfg: &Yaml) -> String {
    serde_norway::to_string(cfg).unwrap()
}

/// The secrets config with a bad value next to every secret (each of these is an error).
fn invalid_next_to_every_secret() -> Yaml {
    let mut cfg = config_with_secrets();
    for (path, value) in [
        ("Butler-SOS.influxdbConfig.v1Config.auth.username", "[not, a, name]"),
        ("Butler-SOS.influxdbConfig.v1Config.dbName", "{}"),
        ("Butler-SOS.influxdbConfig.port", "abc"),
        ("Butler-SOS.influxdbConfig.v2Config.org", "{}"),
        ("Butler-SOS.influxdbConfig.v2Config.retentionDuration", "ten days"),
        ("Butler-SOS.influxdbConfig.v3Config.writeTimeout", "5"),
        ("Butler-SOS.mqttConfig.qos", "7"),
        ("Butler-SOS.mqttConfig.brokerHost", "'bad host!'"),
        ("Butler-SOS.mqttConfig.clientId", "''"),
    ] {
        set(&mut cfg, path, serde_norway::from_str(value).unwrap());
    }
    let accounts = cfg["Butler-SOS"]["thirdPartyToolsCredentials"]["newRelic"]
        .as_sequence_mut()
        .expect("accounts");
    accounts[0]["accountId"] = Yaml::from("12a");
    accounts[1]["accountName"] = Yaml::Sequence(Vec::new());
    // A key pasted where an account name goes, and an account that does not exist.
    set(
        &mut cfg,
        "Butler-SOS.userEvents.sendToNewRelic.destinationAccount",
        Yaml::Sequence(vec![Yaml::from(NR_KEY_B), Yaml::from("NR account C")]),
    );
    cfg
}

/// The secrets config with each secret of a type a secret cannot have.
fn secrets_of_the_wrong_type() -> Yaml {
    let mut cfg = config_with_secrets();
    let tagged = |tag: &str, value: &str| {
        Yaml::Tagged(Box::new(serde_norway::value::TaggedValue {
            tag: serde_norway::value::Tag::new(tag),
            value: Yaml::from(value),
        }))
    };
    set(
        &mut cfg,
        "Butler-SOS.influxdbConfig.v1Config.auth.password",
        Yaml::Sequence(vec![Yaml::from(INFLUX_PASSWORD)]),
    );
    set(
        &mut cfg,
        "Butler-SOS.influxdbConfig.v2Config.token",
        serde_norway::from_str(&format!("{{{V2_TOKEN}: 1}}")).unwrap(),
    );
    set(
        &mut cfg,
        "Butler-SOS.influxdbConfig.v3Config.token",
        tagged("secret", V3_TOKEN),
    );
    let accounts = cfg["Butler-SOS"]["thirdPartyToolsCredentials"]["newRelic"]
        .as_sequence_mut()
        .expect("accounts");
    accounts[0]["insertApiKey"] = Yaml::Sequence(vec![Yaml::from(NR_KEY_A)]);
    accounts[1]["insertApiKey"] = tagged("key", NR_KEY_B);
    set(
        &mut cfg,
        "Butler-SOS.mqttConfig.password",
        serde_norway::from_str(&format!("{{value: {MQTT_PASSWORD}}}")).unwrap(),
    );
    cfg
}

/// Small files, each holding one secret where `{}` stands, with neighbours before and after it (some of which
/// make it required).
const SECRET_HOMES: &[(&str, &str)] = &[
    (
        INFLUX_PASSWORD,
        "Butler-SOS:\n  userEvents: {enable: true, sendToInfluxdb: {enable: true}}\n  influxdbConfig:\n    enable: true\n    \
         host: 127.0.0.1\n    v1Config:\n      auth:\n        enable: true\n        username: ingest\n        \
         password: {}\n      dbName: db\n      retentionPolicy: {name: rp, duration: 10d}\n",
    ),
    (
        V2_TOKEN,
        "Butler-SOS:\n  influxdbConfig:\n    version: 2\n    v2Config:\n      org: o\n      token: {}\n      bucket: b\n",
    ),
    (V3_TOKEN, "Butler-SOS:\n  influxdbConfig:\n    v3Config:\n      token: {}\n      database: d\n"),
    (
        NR_KEY_A,
        "Butler-SOS:\n  thirdPartyToolsCredentials:\n    newRelic:\n      - accountName: A\n        insertApiKey: {}\n        \
         accountId: '1'\n",
    ),
    (MQTT_PASSWORD, "Butler-SOS:\n  mqttConfig:\n    username: ingest\n    password: {}\n    qos: 1\n"),
];

/// Ways a secret can be written badly, or look like YAML syntax when written unquoted (passwords often start with
/// `!`, `*`, `&`, `%`, `@`): `{}` stands for the secret.
const SECRET_FORMS: &[&str] = &[
    "\"{}",
    "'{}",
    "\"{}\"trailing",
    "{}: nested",
    "{} # comment",
    "[{}",
    "{{}",
    "!{}",
    "!!{}",
    "*{}",
    "&{} value",
    "&{}",
    "%{}",
    "@{}",
    "`{}",
    "|{}",
    ">{}",
    "- {}",
    "\"{}\\q\"",
    "\"\\u{}\"",
    "{}\n\tbad: tab",
    "{}\n  dup: 1\n  dup: 2",
];

// ---------------------------------------------------------------------------------------------------------------
// Running the binary

/// `sense-ingest <args> --config <yaml in a temp file>`.
fn run_with_config(args: &[&str], yaml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("butler-sos.yaml");
    std::fs::write(&path, yaml).unwrap();
    Command::new(engine_bin())
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn all_output(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An engine started with `run --config <yaml> --log-level silly`.
struct SillyEngine {
    engine: Engine,
    _dir: tempfile::TempDir,
}

fn start_silly(cfg: &Yaml) -> SillyEngine {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("butler-sos.yaml");
    std::fs::write(&path, yaml(cfg)).unwrap();
    let engine = Engine::start(&["run", "--config", path.to_str().unwrap(), "--log-level", "silly"]);
    SillyEngine { engine, _dir: dir }
}

/// Sends every fixture datagram, waits for `ready` (the failures to be logged), stops the engine and checks that
/// neither stderr nor stdout shows a secret.
fn run_and_search(cfg: &Yaml, what: &str, ready: impl Fn(&str) -> bool) {
    let mut silly = start_silly(cfg);
    let engine = &mut silly.engine;
    let datagrams: Vec<Vec<u8>> = fixtures::cases().into_iter().map(|c| c.datagram).collect();
    crate::common::send_datagrams(engine.target(), &datagrams);
    wait_for(
        &format!("{what}: the destination failures in the log"),
        Duration::from_secs(30),
        || ready(&engine.stderr_text()).then_some(()),
    );
    let status = engine.terminate();
    let log = engine.stderr_text();
    assert!(status.success(), "{what}: the engine exited with {status}:\n{log}");
    // The level really is silly: raw datagrams are dumped (TRACE on ingest::wire).
    assert!(
        log.lines().any(|l| l.contains("TRACE") && l.contains("datagram")),
        "{what}: no datagram dump at silly:\n{log}"
    );
    assert!(!engine.stdout_lines().is_empty(), "{what}: no event on stdout");
    assert_no_secret(&format!("{what}: run stderr"), &log);
    assert_no_secret(&format!("{what}: run stdout"), &engine.stdout_lines().join("\n"));
}

/// The secrets config with every destination off; the caller switches on the ones under test.
fn destinations_off() -> Yaml {
    let mut cfg = config_with_secrets();
    set(&mut cfg, "Butler-SOS.influxdbConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.mqttConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.newRelic.enable", Yaml::from(false));
    // Fail fast and often: few attempts, short backoff, no spool (so undelivered batches are dropped and logged).
    set(&mut cfg, "sense-ingest.retry.maxAttempts", Yaml::from(2));
    set(&mut cfg, "sense-ingest.retry.initialBackoff", Yaml::from("10ms"));
    set(&mut cfg, "sense-ingest.retry.maxBackoff", Yaml::from("20ms"));
    set(&mut cfg, "sense-ingest.spool.enable", Yaml::from(false));
    set(&mut cfg, "sense-ingest.shutdownTimeout", Yaml::from("1s"));
    set(&mut cfg, "sense-ingest.batch.maxAge", Yaml::from("20ms"));
    cfg
}

fn influx_at(cfg: &mut Yaml, addr: SocketAddr, version: u8) {
    set(cfg, "Butler-SOS.influxdbConfig.enable", Yaml::from(true));
    set(cfg, "Butler-SOS.influxdbConfig.host", Yaml::from(addr.ip().to_string()));
    set(cfg, "Butler-SOS.influxdbConfig.port", Yaml::from(addr.port()));
    set(cfg, "Butler-SOS.influxdbConfig.version", Yaml::from(version));
}

/// An HTTP server that answers every request `401 Unauthorized` (InfluxDB 1.x with auth on and other credentials,
/// behind a proxy that echoes the request's `Authorization` header in the error) and records that header.
struct Refuser {
    addr: SocketAddr,
    authorizations: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Refuser {
    fn start() -> Refuser {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (Arc::clone(&authorizations), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || refuse(stream, &seen));
            }
        });
        Refuser {
            addr,
            authorizations,
            stop,
        }
    }
}

impl Drop for Refuser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Answers each request on `stream` with 401, the request's `Authorization` echoed, until the client closes it.
fn refuse(stream: TcpStream, seen: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut authorization = String::new();
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if name.eq_ignore_ascii_case("authorization") {
                    authorization = value.trim().to_owned();
                    seen.lock().unwrap().push(authorization.clone());
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let answer = format!("{{\"error\":\"authorization failed: {authorization}\"}}");
        let response = format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             X-Influxdb-Version: 1.8.10\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The tests

#[test]
fn the_loaded_config_and_config_errors_never_show_a_secret_in_debug_output() {
    let loaded = sense_ingest::config::load_str(&yaml(&config_with_secrets())).expect("the secrets config is valid");
    let c = &loaded.config;
    // Each sentinel was read into its place (so the searches below look at loaded secrets).
    assert_eq!(
        c.influxdb.v1.auth.as_ref().map(|(_, p)| p.expose()),
        Some(INFLUX_PASSWORD)
    );
    assert_eq!(c.influxdb.v2.token.expose(), V2_TOKEN);
    assert_eq!(c.influxdb.v3.token.expose(), V3_TOKEN);
    assert_eq!(c.mqtt.password.expose(), MQTT_PASSWORD);
    let keys: Vec<&str> = c
        .user_events
        .send_to_new_relic
        .accounts
        .iter()
        .map(|a| a.insert_key.expose())
        .collect();
    assert_eq!(keys, [NR_KEY_A, NR_KEY_B]);
    assert_no_secret("Debug of the loaded config", &format!("{loaded:?}"));
    assert_no_secret("pretty Debug of the config", &format!("{c:#?}"));
    assert_no_secret("Display of a secret", &c.mqtt.password.to_string());

    for (what, cfg) in [
        ("invalid values next to the secrets", invalid_next_to_every_secret()),
        ("secrets of the wrong type", secrets_of_the_wrong_type()),
    ] {
        let errors = sense_ingest::config::load_str(&yaml(&cfg)).expect_err(what);
        assert_no_secret(&format!("{what}: Display of the errors"), &errors.to_string());
        assert_no_secret(&format!("{what}: Debug of the errors"), &format!("{errors:?}"));
    }
}

#[test]
fn check_config_never_prints_a_secret() {
    let valid = check_ok(&yaml(&config_with_secrets()));
    assert_no_secret("check-config on a valid file", &valid);

    for (what, cfg) in [
        ("invalid values next to the secrets", invalid_next_to_every_secret()),
        ("secrets of the wrong type", secrets_of_the_wrong_type()),
    ] {
        let text = yaml(&cfg);
        let out = run_with_config(&["check-config"], &text);
        assert!(
            !out.status.success(),
            "{what}: check-config accepted it:\n{}",
            all_output(&out)
        );
        let shown = all_output(&out);
        assert!(shown.contains("error"), "{what}: {shown}");
        assert_no_secret(&format!("check-config, {what}"), &shown);
        let run = run_with_config(&["run", "--log-level", "silly"], &text);
        assert!(!run.status.success(), "{what}: run started:\n{}", all_output(&run));
        assert_no_secret(&format!("run, {what}"), &all_output(&run));
    }
}

/// Runs `check-config` on `yaml`, which must be valid, and returns everything it printed.
fn check_ok(yaml: &str) -> String {
    let out = run_with_config(&["check-config"], yaml);
    assert!(out.status.success(), "{}", all_output(&out));
    all_output(&out)
}

#[test]
fn yaml_syntax_around_a_secret_never_shows_it() {
    let mut leaks = Vec::new();
    for (secret, home) in SECRET_HOMES {
        for form in SECRET_FORMS {
            let text = home.replace("{}", &form.replace("{}", secret));
            let shown = all_output(&run_with_config(&["check-config"], &text));
            if let Some((needle, line)) = first_leak(&shown) {
                leaks.push(format!("--- written as {form:?} ({needle:?} shown):\n{text}{line}\n"));
            }
        }
    }
    assert!(leaks.is_empty(), "check-config showed a secret:\n{}", leaks.join("\n"));
}

#[test]
fn an_unset_variable_inside_a_secret_is_named_by_its_key_never_by_its_text() {
    // A password such as `Pa${SENTINEL_...}w0rd` is valid in Butler SOS; here the braces hold an unset variable
    // whose "name" is the sentinel, so naming the variable would print part of the secret.
    for (secret, home) in SECRET_HOMES {
        let value = format!("Pa${{{}}}w0rd", secret.replace('-', "_"));
        let out = run_with_config(&["check-config"], &home.replace("{}", &value));
        let shown = all_output(&out);
        assert!(!out.status.success(), "check-config accepted it:\n{shown}");
        assert_no_secret(&format!("check-config, {secret} holding `${{...}}`"), &shown);
        assert!(
            shown.contains("butler-sos.yaml: Butler-SOS.")
                && shown.contains(": references an environment variable that is not set (name hidden: secret value)"),
            "the error names the file and the key path:\n{shown}"
        );
    }
}

#[test]
fn run_at_silly_never_logs_a_secret_while_destinations_refuse_it() {
    // New Relic knows other keys (403 for both accounts); InfluxDB v1 with auth is a closed port; mosquitto wants
    // another password.
    let nr = NrReceiver::start(&[(NR_A, "NRII-the-real-key-A"), (NR_B, "NRII-the-real-key-B")]);
    let mut cfg = destinations_off();
    set(&mut cfg, "Butler-SOS.newRelic.enable", Yaml::from(true));
    set(&mut cfg, "Butler-SOS.newRelic.event.url", Yaml::from(nr.url()));
    influx_at(&mut cfg, SocketAddr::from(([127, 0, 0, 1], free_tcp_port())), 1);
    let broker = mosquitto_passwd().map(|_| {
        Mosquitto::start_with(BrokerOptions {
            credentials: Some((MQTT_USER.into(), "the-real-password".into())),
            ..BrokerOptions::default()
        })
    });
    match &broker {
        Some(broker) => {
            set(&mut cfg, "Butler-SOS.mqttConfig.enable", Yaml::from(true));
            set(&mut cfg, "Butler-SOS.mqttConfig.brokerHost", Yaml::from("127.0.0.1"));
            set(&mut cfg, "Butler-SOS.mqttConfig.brokerPort", Yaml::from(broker.port));
        }
        None => eprintln!("mosquitto_passwd is not installed: the MQTT password is checked in the config only"),
    }
    run_and_search(&cfg, "NR 403, InfluxDB v1 closed port, MQTT refused", |log| {
        let refused = nr.requests();
        [NR_A, NR_B].iter().all(|a| {
            refused
                .iter()
                .any(|r| r.account.as_deref() == Some(*a) && r.status == 403)
        }) && log.contains("403")
            && log
                .lines()
                .any(|l| l.contains("influxdb") && (l.contains("WARN") || l.contains("ERROR")))
            && (broker.is_none()
                || log
                    .lines()
                    .any(|l| l.contains("MQTT") && (l.contains("WARN") || l.contains("ERROR"))))
    });
    // The keys did go on the wire (not an output): New Relic saw them.
    let sent: Vec<String> = nr
        .requests()
        .iter()
        .filter_map(|r| r.header("api-key").map(str::to_owned))
        .collect();
    assert!(
        sent.iter().any(|k| k == NR_KEY_A) && sent.iter().any(|k| k == NR_KEY_B),
        "{sent:?}"
    );
    if let Some(broker) = &broker {
        assert!(
            broker.log().contains("not authorised") || broker.log().contains("bad user name"),
            "{}",
            broker.log()
        );
    }
}

#[test]
fn run_at_silly_never_logs_the_influxdb_v1_password_when_influxdb_answers_401() {
    let refuser = Refuser::start();
    let mut cfg = destinations_off();
    influx_at(&mut cfg, refuser.addr, 1);
    // The echoed header reached the log (with the credentials hidden, or the search below finds them).
    run_and_search(&cfg, "InfluxDB v1 answering 401", |log| {
        log.lines()
            .any(|l| (l.contains("ERROR") || l.contains("WARN")) && l.contains("authorization failed: Basic "))
    });
    let expected = format!(
        "Basic {}=",
        base64(format!("{INFLUX_USER}:{INFLUX_PASSWORD}").as_bytes())
    );
    let seen = refuser.authorizations.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|a| a.trim_end_matches('=') == expected.trim_end_matches('=')),
        "basic auth was not sent: {seen:?}"
    );
}

#[test]
fn run_at_silly_never_logs_influxdb_v2_or_v3_tokens_they_refuse() {
    let v2 = InfluxV2Mock::start("myorg", "the-real-v2-token", 10 << 20);
    let mut cfg = destinations_off();
    influx_at(&mut cfg, v2.addr(), 2);
    run_and_search(&cfg, "InfluxDB v2 answering 401", |log| log.contains("401"));
    assert!(v2
        .seen()
        .iter()
        .any(|s| s.authorization.as_deref() == Some(&format!("Token {V2_TOKEN}"))));

    let v3 = InfluxV3Mock::start("the-real-v3-token", 10 << 20);
    let mut cfg = destinations_off();
    influx_at(&mut cfg, v3.addr(), 3);
    run_and_search(&cfg, "InfluxDB v3 answering 401", |log| log.contains("401"));
    assert!(v3
        .seen()
        .iter()
        .any(|s| s.authorization.as_deref().is_some_and(|a| a.ends_with(V3_TOKEN))));
}

#[test]
fn the_needles_find_what_they_should() {
    assert_eq!(base64(b"ingest:pw"), "aW5nZXN0OnB3");
    assert_eq!(base64(b"a"), "YQ");
    assert!(
        first_leak(&format!("x {}", &MQTT_PASSWORD[..12])).is_some(),
        "a cut secret is caught"
    );
    let basic = base64(format!("{INFLUX_USER}:{INFLUX_PASSWORD}").as_bytes());
    assert!(
        first_leak(&format!("authorization: Basic {basic}=")).is_some(),
        "a dumped basic-auth header is caught"
    );
    assert_eq!(first_leak("nothing secret here"), None);
}
