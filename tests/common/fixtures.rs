//! The golden cases observed from Butler SOS 15.0.1 (`tests/fixtures/butler-sos`).

use serde_json::Value;

use super::fixtures_dir;

/// One fixture case.
#[derive(Debug, Clone)]
pub struct Case {
    /// e.g. `01_session_start`.
    pub name: String,
    /// The datagram, exactly.
    pub datagram: Vec<u8>,
    /// The whole fixture JSON.
    pub json: Value,
}

impl Case {
    /// `expected.influxdb_v1.points` (tags and fields as stored).
    pub fn influx_points(&self) -> Vec<Value> {
        self.json["expected"]["influxdb_v1"]["points"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    /// `expected.influxdb_v1.write_requests[].body`.
    pub fn influx_bodies(&self) -> Vec<String> {
        self.json["expected"]["influxdb_v1"]["write_requests"]
            .as_array()
            .map(|a| a.iter().map(|r| r["body"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
    /// `expected.mqtt[]` as (topic, payload_raw).
    pub fn mqtt(&self) -> Vec<(String, String)> {
        self.json["expected"]["mqtt"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        (
                            m["topic"].as_str().unwrap().to_string(),
                            m["payload_raw"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Every `NN_*.json` case, in name order.
pub fn cases() -> Vec<Case> {
    let dir = fixtures_dir();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json") && n.as_bytes()[0].is_ascii_digit())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(&n)).unwrap()).unwrap();
            let datagram = base64_decode(json["input"]["bytes_b64"].as_str().unwrap());
            Case {
                name: n.trim_end_matches(".json").to_string(),
                datagram,
                json,
            }
        })
        .collect()
}

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

/// Standard base64 (with padding) to bytes.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&b| b != b'=' && !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}
