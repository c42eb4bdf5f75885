//! Property tests: [`load_str`] never panics, whatever the text. It returns the config or every error with its key
//! path, and that is all the properties below ask.
//!
//! Three kinds of input, each a proptest property with a bounded number of cases (all three together take a few
//! seconds):
//! - random text: arbitrary Unicode, and a soup of YAML tokens and Butler SOS key names;
//! - random YAML trees built along the real Butler SOS schema ([`SCHEMA`]): each known key may be left out, kept
//!   with a value of its own shape, or given any other shape (scalar, list, mapping, null, tagged), and unknown keys
//!   are mixed in, so deep paths like `Butler-SOS.userEvents.udpServerConfig.rateLimit.maxMessagesPerMinute` and
//!   `thirdPartyToolsCredentials.newRelic[1].insertApiKey` are reached with hostile values;
//! - mutations of the fixture config files (`tests/fixtures/butler-sos/config`): lines deleted, duplicated, swapped,
//!   re-indented, cut; scalars turned into lists, mappings, null, huge or negative numbers, strings, aliases or
//!   tags; tabs and Unicode inserted.
//!
//! The validator resolves `udpServerConfig.serverHost` and `allowedSources` when they are hostnames, and reads
//! `mqttConfig.tls.caFile` when TLS is on. Inputs that would send a DNS query, or name a device file, are
//! skipped ([`stays_local`]), so these tests never leave the machine and never block.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config as ProptestConfig;
use serde_norway::{Mapping, Value};

use super::load_str;
use crate::testing::stays_local;

/// `cases` per property, or `PROPTEST_CASES` when set (for a long run: `PROPTEST_CASES=20000 cargo test --lib
/// config::fuzz_tests`).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    // No regression files: this module may only write its own source file.
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_global_rejects: 100_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Staying local

/// Loads `text` (skipping inputs that would leave the process) and checks what a result must look like.
fn load_checked(text: &str) -> Result<(), TestCaseError> {
    prop_assume!(stays_local(text));
    match load_str(text) {
        Ok(loaded) => {
            // A developer prints the loaded config with `{:?}`; that must work for any valid file.
            let _ = format!("{:?}", loaded.config);
        }
        Err(errors) => {
            prop_assert!(!errors.0.is_empty(), "an error result without errors");
            // Display prints one error per line (a message may span more).
            prop_assert!(errors.to_string().lines().count() >= errors.0.len());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// (a) Random text

/// YAML syntax, Butler SOS key names and awkward scalars, to be glued together at random.
const TOKENS: &[&str] = &[
    "Butler-SOS",
    "sense-ingest",
    "userEvents",
    "udpServerConfig",
    "influxdbConfig",
    "mqttConfig",
    "newRelic",
    "thirdPartyToolsCredentials",
    "enable",
    "tags",
    "name",
    "value",
    "listen",
    "batch",
    "maxAge",
    ":",
    ": ",
    " ",
    "  ",
    "\n",
    "\n  ",
    "\n    ",
    "\t",
    "- ",
    "-",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "&a ",
    "*a",
    "<<: ",
    "!t ",
    "!!str ",
    "!!binary ",
    "? ",
    "'",
    "\"",
    "\\u0000",
    "#",
    "|",
    ">-",
    "---",
    "...",
    "%YAML 1.2\n",
    "true",
    "no",
    "~",
    "null",
    "0",
    "-1",
    "0x1F",
    "1e999",
    ".nan",
    "18446744073709551616",
    "10s",
    "1m30s",
    "\u{feff}",
    "é😀",
    "\r\n",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..80).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn load_str_never_panics_on_arbitrary_text(text in any::<String>()) {
        load_checked(&text)?;
    }

    #[test]
    fn load_str_never_panics_on_yaml_token_soup(text in token_soup()) {
        load_checked(&text)?;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// (b) Random YAML trees along the Butler SOS schema

/// The shape a key's value has in a Butler SOS file (only the sections the validator reads, plus a few it skips).
enum Shape {
    /// A scalar.
    Leaf,
    /// A mapping with these keys.
    Map(&'static [(&'static str, Shape)]),
    /// A list of items of this shape.
    List(&'static Shape),
    /// One of these shapes.
    OneOf(&'static [Shape]),
}

use Shape::{Leaf, List, Map, OneOf};

/// A tag list item: `{name, value}`, or `{tag, value}` (the documented synonym).
const TAG: Shape = OneOf(&[
    Map(&[("name", Leaf), ("value", Leaf)]),
    Map(&[("tag", Leaf), ("value", Leaf)]),
]);
const TAGS: Shape = List(&TAG);
const TOPIC: Shape = Map(&[("enable", Leaf), ("topic", Leaf)]);

const UDP: Shape = Map(&[
    ("serverHost", Leaf),
    ("portUserActivityEvents", Leaf),
    (
        "messageQueue",
        Map(&[
            ("maxConcurrent", Leaf),
            ("maxSize", Leaf),
            ("backpressureThreshold", Leaf),
        ]),
    ),
    ("rateLimit", Map(&[("enable", Leaf), ("maxMessagesPerMinute", Leaf)])),
    ("maxMessageSize", Leaf),
    ("enableSourceValidation", Leaf),
    ("allowedSources", List(&Leaf)),
    (
        "queueMetrics",
        Map(&[(
            "influxdb",
            Map(&[
                ("enable", Leaf),
                ("writeFrequency", Leaf),
                ("measurementName", Leaf),
                ("tags", TAGS),
            ]),
        )]),
    ),
]);

const USER_EVENTS: Shape = Map(&[
    ("enable", Leaf),
    ("excludeUser", List(&Map(&[("directory", Leaf), ("userId", Leaf)]))),
    ("udpServerConfig", UDP),
    ("tags", TAGS),
    (
        "sendToMQTT",
        Map(&[
            ("enable", Leaf),
            (
                "postTo",
                Map(&[
                    ("everythingTopic", TOPIC),
                    ("sessionStartTopic", TOPIC),
                    ("sessionStopTopic", TOPIC),
                    ("connectionOpenTopic", TOPIC),
                    ("connectionCloseTopic", TOPIC),
                ]),
            ),
        ]),
    ),
    ("sendToInfluxdb", Map(&[("enable", Leaf)])),
    (
        "sendToNewRelic",
        Map(&[
            ("enable", Leaf),
            ("destinationAccount", List(&Leaf)),
            ("scramble", Leaf),
        ]),
    ),
]);

const INFLUX: Shape = Map(&[
    ("enable", Leaf),
    ("host", Leaf),
    ("port", Leaf),
    ("version", Leaf),
    ("maxBatchSize", Leaf),
    (
        "v1Config",
        Map(&[
            ("auth", Map(&[("enable", Leaf), ("username", Leaf), ("password", Leaf)])),
            ("dbName", Leaf),
            ("retentionPolicy", Map(&[("name", Leaf), ("duration", Leaf)])),
        ]),
    ),
    (
        "v2Config",
        Map(&[
            ("org", Leaf),
            ("bucket", Leaf),
            ("description", Leaf),
            ("token", Leaf),
            ("retentionDuration", Leaf),
        ]),
    ),
    (
        "v3Config",
        Map(&[
            ("database", Leaf),
            ("description", Leaf),
            ("token", Leaf),
            ("retentionDuration", Leaf),
            ("writeTimeout", Leaf),
            ("queryTimeout", Leaf),
        ]),
    ),
    ("includeFields", Map(&[("activeDocs", Leaf)])),
    ("failedPollsTracking", Map(&[("enable", Leaf)])),
]);

const MQTT: Shape = Map(&[
    ("enable", Leaf),
    ("brokerHost", Leaf),
    ("brokerPort", Leaf),
    ("baseTopic", Leaf),
    ("tls", Map(&[("enable", Leaf), ("caFile", Leaf)])),
    ("username", Leaf),
    ("password", Leaf),
    ("clientId", Leaf),
    ("qos", Leaf),
    ("retain", Leaf),
    ("keepAlive", Leaf),
]);

const NEW_RELIC: Shape = Map(&[
    ("enable", Leaf),
    (
        "event",
        Map(&[("url", Leaf), ("header", TAGS), ("attribute", Map(&[("static", TAGS)]))]),
    ),
    ("metric", Map(&[("destinationAccount", List(&Leaf)), ("url", Leaf)])),
]);

const QLIK_SENSE_EVENTS: Shape = Map(&[
    ("influxdb", Map(&[("enable", Leaf), ("writeFrequency", Leaf)])),
    (
        "eventCount",
        Map(&[
            ("enable", Leaf),
            ("influxdb", Map(&[("measurementName", Leaf), ("tags", TAGS)])),
        ]),
    ),
    (
        "rejectedEventCount",
        Map(&[("enable", Leaf), ("influxdb", Map(&[("measurementName", Leaf)]))]),
    ),
]);

const ENGINE: Shape = Map(&[
    ("readerThreads", Leaf),
    ("backend", Leaf),
    ("recvBufferBytes", Leaf),
    ("eventsPerSlab", Leaf),
    ("channelCapacity", Leaf),
    (
        "batch",
        Map(&[("maxEvents", Leaf), ("maxBytes", Leaf), ("maxAge", Leaf)]),
    ),
    (
        "retry",
        Map(&[("maxAttempts", Leaf), ("initialBackoff", Leaf), ("maxBackoff", Leaf)]),
    ),
    ("stdout", Leaf),
    ("appNames", Leaf),
    ("shutdownTimeout", Leaf),
    ("listen", List(&Leaf)),
    (
        "spool",
        Map(&[
            ("enable", Leaf),
            ("dir", Leaf),
            ("maxBytes", Leaf),
            ("memoryBytes", Leaf),
            ("fsyncInterval", Leaf),
        ]),
    ),
]);

/// The whole file: what the validator reads, and a section it ignores.
const SCHEMA: Shape = Map(&[
    (
        "Butler-SOS",
        Map(&[
            ("logLevel", Leaf),
            ("userEvents", USER_EVENTS),
            ("influxdbConfig", INFLUX),
            ("mqttConfig", MQTT),
            ("newRelic", NEW_RELIC),
            (
                "thirdPartyToolsCredentials",
                Map(&[(
                    "newRelic",
                    List(&Map(&[
                        ("accountName", Leaf),
                        ("insertApiKey", Leaf),
                        ("accountId", Leaf),
                    ])),
                )]),
            ),
            ("qlikSenseEvents", QLIK_SENSE_EVENTS),
            ("prometheus", Map(&[("enable", Leaf), ("host", Leaf), ("port", Leaf)])),
            ("logEvents", Map(&[("udpServerConfig", UDP)])),
        ]),
    ),
    ("sense-ingest", ENGINE),
]);

/// Keys that are not in the schema: typos, case slips, odd text. (Merge keys, `<<`, come from the token soup and the
/// mutations: one whose value is not a mapping fails the whole file before validation.)
const UNKNOWN_KEYS: &[&str] = &[
    "enabel",
    "Enable",
    "udpserverconfig",
    "sendToInfluxDB",
    "",
    " ",
    "é",
    "x",
];

/// Strings worth trying anywhere (a hostname-like one at `serverHost` is skipped by [`stays_local`]).
const STRINGS: &[&str] = &[
    "",
    " ",
    "\t",
    "a b",
    "true",
    "null",
    "-1",
    "0",
    "65536",
    "99999999999999999999999",
    "1.5",
    " 42 ",
    "10 s",
    "1m 30s",
    "250 ms",
    "0s",
    "5 w",
    "INF ",
    "127.0.0.1",
    "::1",
    "[::1]",
    "[::1]:0",
    "0.0.0.0:0",
    "256.1.1.1",
    "localhost",
    "http://127.0.0.1:1",
    "https://",
    "ftp://x y",
    "qliksense/+/#",
    "a\0b",
    "line\nbreak",
    "ünï cödé 😀",
    "\u{feff}\u{202e}",
    "NRII-key with space",
    "X-Header: v",
    "/nonexistent/ca.pem",
    "/",
    "io_uring",
    "silly",
];

/// Any scalar: null, booleans, integers at and over every limit, floats, strings.
fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(
            &[0i64, 1, -1, 2, 3, 4, 100, 101, 999, 1000, 1024, 4096, 65_507, 65_508, 65_535, 65_536,][..]
        )
        .prop_map(Value::from),
        prop::sample::select(&[i64::MIN, i64::MAX, u32::MAX as i64, i32::MAX as i64 + 1][..]).prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(
            &[
                0.0f64,
                -0.0,
                1.5,
                1e300,
                -1e300,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN
            ][..]
        )
        .prop_map(Value::from),
        prop::sample::select(STRINGS).prop_map(Value::from),
        // A space inside keeps random text from being a hostname the validator would resolve.
        "\\PC{0,12}".prop_map(|s| Value::from(format!("{s} ~"))),
        (1usize..20_000).prop_map(|n| Value::from("x ".repeat(n))),
    ]
    .boxed()
}

/// A value the key `name` could well have in a real file (so that more trees pass the checks around it and the
/// checks behind them run: a destination in use, its required settings, a resolved account).
fn plausible(name: &'static str) -> BoxedStrategy<Value> {
    let texts: &'static [&'static str] = match name {
        "enable" | "scramble" | "retain" | "stdout" | "enableSourceValidation" | "activeDocs" => &["true", "false"],
        "portUserActivityEvents" => &["0", "9997"],
        "port" | "brokerPort" => &["1883", "8086", "65535"],
        "serverHost" | "host" | "brokerHost" => &["127.0.0.1", "'::1'", "localhost"],
        "allowedSources" => &["127.0.0.1", "'::1'"],
        "listen" => &["'127.0.0.1:0'", "'[::1]:9997'"],
        "version" => &["1", "2", "3"],
        "qos" => &["0", "1", "2"],
        "logLevel" => &["info", "silly"],
        "backend" => &["auto", "recvmmsg"],
        "duration" => &["10d", "INF", "1w2d"],
        "retentionDuration" => &["10d", "0", "1w2d"],
        "maxAge" | "shutdownTimeout" | "fsyncInterval" => &["250ms", "10s", "1m30s", "0", "100"],
        "initialBackoff" => &["100ms", "0"],
        "maxBackoff" => &["10s", "1m"],
        "keepAlive" => &["0", "60s", "65535s"],
        "readerThreads" => &["1", "2"],
        "recvBufferBytes" => &["4096", "16777216"],
        "eventsPerSlab" | "channelCapacity" | "maxAttempts" => &["1", "64"],
        "maxEvents" => &["1", "5000"],
        "maxBytes" => &["1048576", "1073741824"],
        "memoryBytes" => &["1024", "33554432"],
        "maxBatchSize" => &["1", "1000", "10000"],
        "maxMessageSize" => &["1", "65507"],
        "maxConcurrent" | "maxSize" | "maxMessagesPerMinute" => &["1", "600", "4294967295"],
        "backpressureThreshold" => &["1", "80", "100"],
        "writeFrequency" | "writeTimeout" | "queryTimeout" => &["1000", "20000"],
        "url" => &["'http://127.0.0.1:1'", "'https://insights-collector.newrelic.com'"],
        "accountId" => &["'1111111'", "2222222"],
        "accountName" | "destinationAccount" => &["A", "B"],
        "name" | "tag" => &["env", "qs_env", "X-Header"],
        "topic" => &["qliksense/userevent"],
        "caFile" => &["/nonexistent/ca.pem"],
        _ => &["1000", "'a value'", "x"],
    };
    prop::sample::select(texts)
        .prop_map(|text| serde_norway::from_str(text).expect("a plausible value parses"))
        .boxed()
}

/// Any value of any shape, at most `depth` levels deep, with keys from anywhere in the schema.
fn anything(depth: u32) -> BoxedStrategy<Value> {
    // No `<<` here: a merge key whose value is not a mapping fails the whole file, and these values are everywhere.
    let key = prop::sample::select(&["enabel", "Enable", "", " ", "é", "x", "enable", "name", "value"][..]);
    scalar()
        .prop_recursive(depth, 16, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
                prop::collection::vec((key.clone(), inner.clone()), 0..4).prop_map(|entries| Value::Mapping(
                    entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect()
                )),
                inner
                    .clone()
                    .prop_map(|v| Value::Mapping(Mapping::from_iter([(Value::from(1), v)]))),
                // A tag directly on a tagged value cannot be written as YAML; on anything else it can.
                inner.prop_map(|v| match v {
                    Value::Tagged(_) => v,
                    v => Value::Tagged(Box::new(serde_norway::value::TaggedValue {
                        tag: serde_norway::value::Tag::new("custom"),
                        value: v,
                    })),
                }),
            ]
        })
        .boxed()
}

/// How hostile a generated tree is, from 0 (almost every value plausible, so the checks that need a valid
/// neighbourhood run: a destination in use, its required settings, account resolution) to 3 (half the values wrong).
type Hostility = u32;

/// A whole file at a random [`Hostility`].
fn butler_sos_tree() -> impl Strategy<Value = Value> {
    (0..4 as Hostility).prop_flat_map(|hostility| of_shape("", &SCHEMA, hostility))
}

/// A value for the key `name` of shape `shape`: mostly that shape, sometimes any other.
fn of_shape(name: &'static str, shape: &'static Shape, hostility: Hostility) -> BoxedStrategy<Value> {
    let own = match shape {
        Leaf => {
            let plausible_weight = [60, 20, 4, 1][hostility as usize];
            prop_oneof![plausible_weight => plausible(name), 1 => scalar()].boxed()
        }
        List(item) => prop::collection::vec(of_shape(name, item, hostility), 0..4)
            .prop_map(Value::Sequence)
            .boxed(),
        OneOf(shapes) => prop::strategy::Union::new(shapes.iter().map(|s| of_shape(name, s, hostility))).boxed(),
        Map(fields) => {
            let present: Vec<BoxedStrategy<Option<(Value, Value)>>> = fields
                .iter()
                .map(|(name, field)| {
                    // Sections are mostly there (so their keys are reached); single settings less often, the more
                    // hostile the tree (a valid file has the required ones).
                    let p = if matches!(field, Leaf) {
                        [0.97, 0.8, 0.6, 0.5][hostility as usize]
                    } else {
                        0.9
                    };
                    prop::option::weighted(p, of_shape(name, field, hostility))
                        .prop_map(move |v| v.map(|v| (Value::from(*name), v)))
                        .boxed()
                })
                .collect();
            let extra_p = [0.005, 0.02, 0.1, 0.2][hostility as usize];
            let extra = prop::option::weighted(extra_p, (prop::sample::select(UNKNOWN_KEYS), anything(1)));
            (present, extra)
                .prop_map(|(present, extra)| {
                    let mut map: Mapping = present.into_iter().flatten().collect();
                    if let Some((key, value)) = extra {
                        map.insert(Value::from(key), value);
                    }
                    Value::Mapping(map)
                })
                .boxed()
        }
    };
    let own_weight = [400, 40, 12, 4][hostility as usize];
    prop_oneof![own_weight => own, 1 => anything(2)].boxed()
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn load_str_never_panics_on_random_butler_sos_trees(tree in butler_sos_tree()) {
        let text = serde_norway::to_string(&tree);
        // The YAML writer cannot write every tree (a tag on a tagged value); those are not inputs a file can hold.
        prop_assume!(text.is_ok());
        let text = text.expect("checked");
        load_checked(&text)?;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// (c) Mutations of the fixture config files

/// The fixture config files, as text.
fn fixture_texts() -> &'static [String] {
    static TEXTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TEXTS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/butler-sos/config");
        ["fx_scramble.yaml", "fx_noscramble.yaml"]
            .iter()
            .map(|f| {
                let path = format!("{dir}/{f}");
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
            })
            .collect()
    })
}

/// What a scalar becomes: every other YAML shape, and numbers and strings at and over the limits.
const REPLACEMENTS: &[&str] = &[
    "[a, b]",
    "[]",
    "{x: 1}",
    "{}",
    "null",
    "~",
    "",
    "true",
    "0",
    "-1",
    "-65536",
    "18446744073709551616",
    "99999999999999999999999999999999999",
    "1e400",
    "-.inf",
    ".nan",
    "0x10",
    "0o17",
    "1_000",
    "'quoted string'",
    "\"\\t\\u0000\\x7f\"",
    "\"ünï cödé 😀\"",
    "'127.0.0.1'",
    "'[::1]:0'",
    "&anchor 5",
    "*anchor",
    "*undefined",
    "!custom value",
    "!!binary aGVsbG8=",
    "|\n  block\n  text",
    ">-\n    folded",
    "- item",
    "? complex",
    "\"unterminated",
    "a: b: c",
    "{broken",
    "# only a comment",
];

/// One edit of the text, at positions chosen relative to the current length.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    /// Replace what follows the first `: ` on a line.
    ReplaceScalar(Index, &'static str),
    /// Insert text at a char position of a line.
    Insert(Index, Index, &'static str),
    Indent(Index, bool),
    Truncate(Index),
}

const INSERTS: &[&str] = &[
    "\t", " ", "  ", "\u{a0}", "é", "😀", "\u{202e}", "\u{feff}", "\r", ":", "- ", "#", "'", "\"",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<Index>().prop_map(Mutation::DeleteLine),
        1 => any::<Index>().prop_map(Mutation::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        3 => (any::<Index>(), prop::sample::select(REPLACEMENTS)).prop_map(|(i, r)| Mutation::ReplaceScalar(i, r)),
        2 => (any::<Index>(), any::<Index>(), prop::sample::select(INSERTS)).prop_map(|(i, at, s)| Mutation::Insert(i, at, s)),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(i, deeper)| Mutation::Indent(i, deeper)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

/// Applies `mutation` to `lines`.
fn apply(lines: &mut Vec<String>, mutation: &Mutation) {
    if lines.is_empty() {
        return;
    }
    let n = lines.len();
    match mutation {
        Mutation::DeleteLine(i) => {
            lines.remove(i.index(n));
        }
        Mutation::DuplicateLine(i) => {
            let i = i.index(n);
            lines.insert(i, lines[i].clone());
        }
        Mutation::SwapLines(a, b) => lines.swap(a.index(n), b.index(n)),
        Mutation::ReplaceScalar(i, replacement) => {
            let line = &mut lines[i.index(n)];
            match line.find(": ") {
                Some(at) => line.replace_range(at + 2.., replacement),
                None => line.push_str(&format!(": {replacement}")),
            }
        }
        Mutation::Insert(i, at, text) => {
            let line = &mut lines[i.index(n)];
            let boundaries: Vec<usize> = line
                .char_indices()
                .map(|(b, _)| b)
                .chain(std::iter::once(line.len()))
                .collect();
            line.insert_str(boundaries[at.index(boundaries.len())], text);
        }
        Mutation::Indent(i, deeper) => {
            let line = &mut lines[i.index(n)];
            if *deeper {
                line.insert_str(0, "  ");
            } else if let Some(rest) = line.strip_prefix("  ") {
                *line = rest.to_owned();
            }
        }
        Mutation::Truncate(i) => lines.truncate(i.index(n) + 1),
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn load_str_never_panics_on_mutated_fixture_configs(
        file in 0usize..2,
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let mut lines: Vec<String> = fixture_texts()[file].lines().map(str::to_owned).collect();
        for m in &mutations {
            apply(&mut lines, m);
        }
        load_checked(&lines.join("\n"))?;
    }
}

#[test]
fn the_unmutated_fixture_configs_load() {
    for text in fixture_texts() {
        assert!(load_str(text).is_ok(), "{:?}", load_str(text).err());
    }
}
