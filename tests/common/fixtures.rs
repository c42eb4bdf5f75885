//! The golden cases observed from Butler SOS 15.0.1 (`tests/fixtures/butler-sos`).

pub use sense_ingest::testing::{fixture_cases as cases, Case};

use super::fixtures_dir;

/// The fixture config with the given scramble setting, as a YAML tree to adjust per test.
pub fn config(scramble: bool) -> serde_norway::Value {
    let file = if scramble {
        "fx_scramble.yaml"
    } else {
        "fx_noscramble.yaml"
    };
    let text = std::fs::read_to_string(fixtures_dir().join("config").join(file)).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// The fixture config ([`config`]) receiving on 127.0.0.1, port 0 (the engine binds a free port and logs it).
pub fn loopback_config(scramble: bool) -> serde_norway::Value {
    let mut cfg = config(scramble);
    let udp = "Butler-SOS.userEvents.udpServerConfig";
    set(
        &mut cfg,
        &format!("{udp}.serverHost"),
        serde_norway::Value::from("127.0.0.1"),
    );
    set(
        &mut cfg,
        &format!("{udp}.portUserActivityEvents"),
        serde_norway::Value::from(0),
    );
    cfg
}

/// [`loopback_config`] writing only to the InfluxDB 1.x at 127.0.0.1:`port`, database `db` (MQTT and New Relic
/// off), logging at info.
pub fn influx_only_config(scramble: bool, port: u16, db: &str) -> serde_norway::Value {
    use serde_norway::Value as Yaml;
    let mut cfg = loopback_config(scramble);
    set(&mut cfg, "Butler-SOS.influxdbConfig.host", Yaml::from("127.0.0.1"));
    set(&mut cfg, "Butler-SOS.influxdbConfig.port", Yaml::from(port));
    set(&mut cfg, "Butler-SOS.influxdbConfig.v1Config.dbName", Yaml::from(db));
    set(&mut cfg, "Butler-SOS.mqttConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.newRelic.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.logLevel", Yaml::from("info"));
    cfg
}

/// [`loopback_config`] with MQTT the only destination, at 127.0.0.1:`port`, logging at info.
pub fn mqtt_only_config(scramble: bool, port: u16) -> serde_norway::Value {
    use serde_norway::Value as Yaml;
    let mut cfg = loopback_config(scramble);
    set(&mut cfg, "Butler-SOS.influxdbConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.newRelic.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.mqttConfig.enable", Yaml::from(true));
    set(&mut cfg, "Butler-SOS.mqttConfig.brokerHost", Yaml::from("127.0.0.1"));
    set(&mut cfg, "Butler-SOS.mqttConfig.brokerPort", Yaml::from(port));
    set(&mut cfg, "Butler-SOS.logLevel", Yaml::from("info"));
    cfg
}

/// [`loopback_config`] with New Relic the only destination, its Event API at `url`, logging at info.
pub fn new_relic_only_config(scramble: bool, url: &str) -> serde_norway::Value {
    use serde_norway::Value as Yaml;
    let mut cfg = loopback_config(scramble);
    set(&mut cfg, "Butler-SOS.influxdbConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.mqttConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.newRelic.enable", Yaml::from(true));
    set(&mut cfg, "Butler-SOS.newRelic.event.url", Yaml::from(url));
    set(&mut cfg, "Butler-SOS.logLevel", Yaml::from("info"));
    cfg
}

/// [`loopback_config`] (scrambled) with every destination off, events printed on stdout, logging at info.
pub fn stdout_config() -> serde_norway::Value {
    use serde_norway::Value as Yaml;
    let mut cfg = loopback_config(true);
    set(&mut cfg, "Butler-SOS.influxdbConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.mqttConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.newRelic.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.logLevel", Yaml::from("info"));
    set(&mut cfg, "sense-ingest.stdout", Yaml::from(true));
    cfg
}

/// Turns source validation on in `cfg`, with `allowed` as `allowedSources` (`Null` for none).
pub fn validate_sources(cfg: &mut serde_norway::Value, allowed: serde_norway::Value) {
    let udp = "Butler-SOS.userEvents.udpServerConfig";
    set(
        cfg,
        &format!("{udp}.enableSourceValidation"),
        serde_norway::Value::from(true),
    );
    set(cfg, &format!("{udp}.allowedSources"), allowed);
}

/// Sets `path` (dot-separated keys) in a YAML tree, creating mappings as needed.
pub fn set(v: &mut serde_norway::Value, path: &str, value: serde_norway::Value) {
    let mut cur = v;
    let keys: Vec<&str> = path.split('.').collect();
    for (i, k) in keys.iter().enumerate() {
        let map = match cur {
            serde_norway::Value::Mapping(m) => m,
            other => {
                *other = serde_norway::Value::Mapping(Default::default());
                match other {
                    serde_norway::Value::Mapping(m) => m,
                    _ => unreachable!(),
                }
            }
        };
        let key = serde_norway::Value::String((*k).to_string());
        if i == keys.len() - 1 {
            map.insert(key, value);
            return;
        }
        cur = map
            .entry(key)
            .or_insert(serde_norway::Value::Mapping(Default::default()));
    }
}
