//! Hostile traffic through the real binary: good datagrams (the golden fixtures) interleaved with random bytes,
//! truncations of every good datagram at every length, 60 KB datagrams, invalid UTF-8 in every field, datagrams
//! without separators, of separators only, of NUL bytes, up to the 65,507-byte UDP limit.
//!
//! Every run sends from one socket (one flow, so one reader, in order) and, after each good datagram that prints a
//! line, waits until that line is out before sending more, so the socket buffer never overflows. Then:
//! - every good datagram comes out on stdout byte-identical to what the good datagrams produce alone, in order;
//! - the hostile ones print exactly what they print alone (nothing of one event leaks into the next);
//! - the engine never crashes (exit 0 on SIGTERM);
//! - the final summary adds up, `received = accepted + excluded + rejected`, and every counter equals what the
//!   library parser predicts for the bytes sent (no kernel drops).
//!
//! A proptest variant (fixed seed, few cases) does the same with generated mutations of the fixtures, and a run of
//! user agents built to make the user-agent matcher work hard checks the same among good datagrams, plus the
//! enrichment Bowser gives agents whose answer needs every regular-expression search to run to its end.

use std::net::{SocketAddr, UdpSocket};
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use sense_ingest::enrich::user_agent::hostile;
use sense_ingest::event::{Event, Field, RejectReason};
use sense_ingest::parse::parse_into;
use serde_norway::Value as Yaml;

use crate::common::fixtures::{self, set};
use crate::common::{wait_for, Engine};

/// `udpServerConfig.maxMessageSize` in these runs: 60 KB datagrams are parsed, 65,001-65,507 bytes are rejected.
const MAX_MESSAGE_SIZE: usize = 65_000;
/// The largest UDP payload over IPv4.
const UDP_MAX: usize = 65_507;
/// The fixture config's excluded user.
const EXCLUDED: (&str, &str) = ("LAB", "excluded1");

/// The fixture config with every destination off and events printed on stdout.
fn config() -> String {
    let mut cfg = fixtures::config(true);
    let udp = "Butler-SOS.userEvents.udpServerConfig";
    set(&mut cfg, &format!("{udp}.serverHost"), Yaml::from("127.0.0.1"));
    set(&mut cfg, &format!("{udp}.portUserActivityEvents"), Yaml::from(0));
    set(
        &mut cfg,
        &format!("{udp}.maxMessageSize"),
        Yaml::from(MAX_MESSAGE_SIZE as u64),
    );
    set(&mut cfg, "Butler-SOS.influxdbConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.mqttConfig.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.newRelic.enable", Yaml::from(false));
    set(&mut cfg, "Butler-SOS.logLevel", Yaml::from("info"));
    set(&mut cfg, "sense-ingest.stdout", Yaml::from(true));
    set(&mut cfg, "sense-ingest.recvBufferBytes", Yaml::from(32u64 << 20));
    serde_norway::to_string(&cfg).unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// What the engine should count, from the library parser

/// The receive counters of a summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    received: u64,
    accepted: u64,
    excluded: u64,
    unknown_source: u64,
    too_few_fields: u64,
    over_size: u64,
    disallowed_source: u64,
    rate_limited: u64,
    invalid_utf8: u64,
    kernel_drops: u64,
}

/// What one datagram becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted { invalid_utf8: bool },
    Excluded,
    Rejected(RejectReason),
}

/// The outcome the engine must reach for `datagram` with [`config`]: size first, then the parser, then exclusion.
fn outcome(datagram: &[u8], event: &mut Event) -> Outcome {
    if datagram.len() > MAX_MESSAGE_SIZE {
        return Outcome::Rejected(RejectReason::OverSize);
    }
    match parse_into(datagram, event) {
        Ok(notes) => {
            if (event.get(Field::UserDirectory), event.get(Field::UserId)) == EXCLUDED {
                Outcome::Excluded
            } else {
                Outcome::Accepted {
                    invalid_utf8: notes.invalid_utf8,
                }
            }
        }
        Err(reason) => Outcome::Rejected(reason),
    }
}

/// The counters sending `datagrams` must produce.
fn predict(datagrams: &[Vec<u8>]) -> Counts {
    let mut event = Event::new();
    let mut c = Counts::default();
    for d in datagrams {
        c.received += 1;
        match outcome(d, &mut event) {
            Outcome::Accepted { invalid_utf8 } => {
                c.accepted += 1;
                c.invalid_utf8 += u64::from(invalid_utf8);
            }
            Outcome::Excluded => c.excluded += 1,
            Outcome::Rejected(RejectReason::UnknownSource) => c.unknown_source += 1,
            Outcome::Rejected(RejectReason::TooFewFields) => c.too_few_fields += 1,
            Outcome::Rejected(RejectReason::OverSize) => c.over_size += 1,
            Outcome::Rejected(other) => panic!("the parser cannot reject with {other:?}"),
        }
    }
    c
}

/// True when `datagram` prints a line on stdout.
fn prints_a_line(datagram: &[u8]) -> bool {
    matches!(outcome(datagram, &mut Event::new()), Outcome::Accepted { .. })
}

/// `key=<n>` from a summary line (keys are preceded by a space, or inside `rejected_by_reason="..."` by the quote).
fn counter(summary: &str, key: &str) -> u64 {
    let pattern = format!("{key}=");
    summary
        .match_indices(&pattern)
        .filter(|(at, _)| *at == 0 || matches!(summary.as_bytes()[at - 1], b' ' | b'"'))
        .find_map(|(at, _)| {
            let digits: String = summary[at + pattern.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {key} in the summary: {summary}"))
}

fn counts_of(summary: &str) -> Counts {
    Counts {
        received: counter(summary, "received"),
        accepted: counter(summary, "accepted"),
        excluded: counter(summary, "excluded"),
        unknown_source: counter(summary, "unknown_source"),
        too_few_fields: counter(summary, "too_few_fields"),
        over_size: counter(summary, "over_size"),
        disallowed_source: counter(summary, "disallowed_source"),
        rate_limited: counter(summary, "rate_limited"),
        invalid_utf8: counter(summary, "invalid_utf8"),
        kernel_drops: counter(summary, "kernel_drops"),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Running the engine

/// What one engine run printed and counted.
struct Run {
    lines: Vec<String>,
    counts: Counts,
    summary: String,
}

/// True when `want` is a subsequence of `got` (each line of `want` found, in order).
fn is_subsequence(want: &[String], got: &[String]) -> bool {
    let mut got = got.iter();
    want.iter().all(|w| got.any(|g| g == w))
}

/// Starts an engine, sends `batches` from one socket in order, and after each batch waits until `until(lines)`
/// holds for that batch (so the socket buffer never holds more than about one batch). Then SIGTERM: the engine
/// must exit 0, and its final summary must add up and match `predict` of everything sent.
fn run_engine(batches: &[Vec<Vec<u8>>], until: impl Fn(usize, &[String]) -> bool) -> Run {
    let mut engine = Engine::start_with_yaml(&config());
    let target: SocketAddr = engine.target();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, batch) in batches.iter().enumerate() {
        for d in batch {
            sock.send_to(d, target)
                .unwrap_or_else(|e| panic!("send {} bytes: {e}", d.len()));
        }
        wait_for(&format!("batch {i} to come out"), Duration::from_secs(30), || {
            until(i, &engine.stdout_lines()).then_some(())
        });
    }
    let status = engine.terminate();
    let log = engine.stderr_text();
    assert!(status.success(), "the engine exited with {status}:\n{log}");
    assert!(!log.contains("panicked"), "a thread panicked:\n{log}");
    let summary = log
        .lines()
        .rev()
        .find(|l| l.contains("summary") && l.contains("final"))
        .unwrap_or_else(|| panic!("no final summary:\n{log}"))
        .to_owned();
    let counts = counts_of(&summary);
    // Every line the engine wrote reaches our pump once it exits.
    let lines = wait_for("every accepted event on stdout", Duration::from_secs(10), || {
        let lines = engine.stdout_lines();
        (lines.len() as u64 >= counts.accepted).then_some(lines)
    });
    let sent: Vec<Vec<u8>> = batches.concat();
    let rejected = counts.unknown_source
        + counts.too_few_fields
        + counts.over_size
        + counts.disallowed_source
        + counts.rate_limited;
    assert_eq!(
        counts.received,
        counts.accepted + counts.excluded + rejected,
        "the counters do not add up: {summary}"
    );
    assert_eq!(
        counts,
        predict(&sent),
        "counters differ from the parser's prediction: {summary}"
    );
    assert_eq!(
        lines.len() as u64,
        counts.accepted,
        "one stdout line per accepted event"
    );
    Run { lines, counts, summary }
}

/// The golden fixture datagrams, in case order.
fn goods() -> Vec<Vec<u8>> {
    fixtures::cases().into_iter().map(|c| c.datagram).collect()
}

/// What the good datagrams print alone, in order (one engine run, shared by the tests).
fn alone() -> &'static [String] {
    static ALONE: OnceLock<Vec<String>> = OnceLock::new();
    ALONE.get_or_init(|| {
        let goods = goods();
        let want = goods.iter().filter(|g| prints_a_line(g)).count();
        let run = run_engine(&[goods], |_, lines| lines.len() >= want);
        assert!(run.lines.len() >= 15, "the fixtures print lines: {}", run.summary);
        run.lines
    })
}

/// Sends `goods[i]` after `hostile[i]`, waiting for each good line, and checks that the good lines come out as
/// they do alone. Returns the run.
fn interleaved(goods: &[Vec<u8>], hostile: &[Vec<Vec<u8>>]) -> Run {
    assert_eq!(
        goods.len() + 1,
        hostile.len(),
        "one hostile chunk before each good datagram and one after"
    );
    let alone = alone();
    // The number of good lines out after each batch.
    let mut good_lines_after = Vec::new();
    let mut n = 0;
    let mut batches = Vec::new();
    for (i, chunk) in hostile.iter().enumerate() {
        let mut batch = chunk.clone();
        if let Some(good) = goods.get(i) {
            batch.push(good.clone());
            n += usize::from(prints_a_line(good));
        }
        good_lines_after.push(n);
        batches.push(batch);
    }
    assert_eq!(n, alone.len(), "the goods print what they printed alone");
    let last = batches.len() - 1;
    let run = run_engine(&batches, |i, lines| {
        // The trailing chunk has no good datagram to wait for; SIGTERM drains it.
        i == last || is_subsequence(&alone[..good_lines_after[i]], lines)
    });
    assert!(
        is_subsequence(alone, &run.lines),
        "the good datagrams did not come out byte-identical and in order among the hostile ones; missing:\n{:#?}",
        alone.iter().filter(|l| !run.lines.contains(l)).collect::<Vec<_>>()
    );
    run
}

// ---------------------------------------------------------------------------------------------------------------
// The hostile set

/// A small deterministic generator (SplitMix64), so the hand-built hostile set is the same on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Invalid UTF-8: a lone continuation byte, a cut 2-, 3- and 4-byte sequence, an overlong `/`, a surrogate, a code
/// point over U+10FFFF, bytes that never occur.
const INVALID_UTF8: &[&[u8]] = &[
    b"\x80",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xfe\xff",
];

/// `datagram` split into its source, its six fields and the message (which keeps its own `;`).
fn parts(datagram: &[u8]) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = datagram.splitn(8, |&b| b == b';').map(<[u8]>::to_vec).collect();
    parts.resize(8, Vec::new());
    parts
}

/// The hand-built hostile set (deterministic).
fn hostile_set(goods: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut rng = SplitMix(0x5e45_e1de_57c0_ffee);
    let mut out: Vec<Vec<u8>> = Vec::new();
    // Every good datagram cut at every shorter length.
    for g in goods {
        out.extend((0..g.len()).map(|n| g[..n].to_vec()));
    }
    // Random bytes, alone and after a valid source.
    for _ in 0..150 {
        let n = rng.below(1500);
        out.push(rng.bytes(n));
    }
    for _ in 0..150 {
        let n = rng.below(600);
        out.push([b"/qseow-proxy-session/;".as_slice(), &rng.bytes(n)].concat());
    }
    // Invalid UTF-8 in every field (source included), alone and inside text, of a datagram with a user agent and an
    // app id.
    let rich = goods
        .iter()
        .find(|g| g.windows(10).any(|w| w == b"UserAgent:") && g.windows(5).any(|w| w == b"/app/"))
        .expect("a fixture with a user agent and an app id");
    for field in 0..8 {
        for bad in INVALID_UTF8 {
            let mut p = parts(rich);
            p[field] = bad.to_vec();
            out.push(p.join(&b';'));
            let mut p = parts(rich);
            let at = rng.below(p[field].len() + 1);
            p[field].splice(at..at, bad.iter().copied());
            out.push(p.join(&b';'));
        }
    }
    // No separators; only separators; NUL bytes.
    for g in goods {
        out.push(g.iter().copied().filter(|&b| b != b';').collect());
        out.push(g.iter().map(|&b| if b == b';' { 0 } else { b }).collect());
        out.push(g.iter().flat_map(|&b| [b, 0]).collect());
    }
    for n in [
        1,
        2,
        6,
        7,
        8,
        100,
        1000,
        MAX_MESSAGE_SIZE,
        MAX_MESSAGE_SIZE + 1,
        UDP_MAX,
    ] {
        out.push(vec![b';'; n]);
    }
    for n in [1, 1000, 60 << 10] {
        out.push(vec![0; n]);
    }
    // 60 KB and larger: a valid head with a huge message, a huge user agent, a message of separators; random bytes;
    // exactly at the size limit (accepted), one over it and at the UDP limit (rejected as over size).
    let head = parts(rich)[..7].join(&b';');
    let huge = |tail: &[u8], total: usize| -> Vec<u8> {
        let mut d = [head.as_slice(), b";"].concat();
        while d.len() < total {
            d.extend_from_slice(tail);
        }
        d.truncate(total);
        d
    };
    out.push(huge(b"x", 60 << 10));
    out.push(huge(b"message \xe2\x82 UserAgent: Mozilla/5.0 ", 60 << 10));
    out.push(huge(b";", 60 << 10));
    out.push(huge("😀".as_bytes(), 60 << 10));
    out.push(huge(b"\x00\x1f\x7f", 60 << 10));
    out.push(huge(b"y", MAX_MESSAGE_SIZE));
    out.push(huge(b"y", MAX_MESSAGE_SIZE + 1));
    out.push(huge(b";", UDP_MAX));
    out.push(rng.bytes(60 << 10));
    out.push(rng.bytes(UDP_MAX));
    // Shuffle (Fisher-Yates), so every kind sits next to good datagrams somewhere.
    for i in (1..out.len()).rev() {
        let j = rng.below(i + 1);
        out.swap(i, j);
    }
    out
}

/// `items` dealt into `n` chunks of about equal size, in order.
fn deal(items: Vec<Vec<u8>>, n: usize) -> Vec<Vec<Vec<u8>>> {
    let per = items.len().div_ceil(n).max(1);
    let mut chunks: Vec<Vec<Vec<u8>>> = items.chunks(per).map(<[Vec<u8>]>::to_vec).collect();
    chunks.resize(n, Vec::new());
    chunks
}

/// A datagram whose line is easy to find: host `probe-<i>`.
fn probe(i: usize) -> Vec<u8> {
    format!("/qseow-proxy-session/;probe-{i};Start session;PROBE;p;Hub;/hub/;probe").into_bytes()
}

#[test]
fn good_datagrams_come_out_unchanged_among_hostile_ones_and_every_datagram_is_counted() {
    let goods = goods();
    let hostile = hostile_set(&goods);
    let total = hostile.len();
    let chunks = deal(hostile, goods.len() + 1);

    let run = interleaved(&goods, &chunks);
    assert_eq!(run.counts.kernel_drops, 0, "{}", run.summary);
    assert!(run.counts.received as usize == goods.len() + total, "{}", run.summary);
    for reason in [
        "unknown_source",
        "too_few_fields",
        "over_size",
        "excluded",
        "invalid_utf8",
    ] {
        assert!(
            counter(&run.summary, reason) > 0,
            "the hostile set exercises {reason}: {}",
            run.summary
        );
    }

    // The hostile datagrams alone (separated by probes instead of the goods) print exactly the lines they added
    // to the mixed run: no event took anything from its neighbour in a reused slab slot.
    let probes: Vec<Vec<u8>> = (0..goods.len()).map(probe).collect();
    let run_alone = run_engine(
        &chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| [chunk.clone(), probes.get(i).cloned().into_iter().collect()].concat())
            .collect::<Vec<_>>(),
        |i, lines| i == goods.len() || lines.iter().any(|l| l.contains(&format!("\"probe-{i}\""))),
    );
    let mut hostile_lines: Vec<&String> = run_alone.lines.iter().filter(|l| !l.contains("\"probe-")).collect();
    let mut mixed: Vec<&String> = run.lines.iter().collect();
    let mut expected: Vec<&String> = alone().iter().chain(hostile_lines.iter().copied()).collect();
    mixed.sort();
    expected.sort();
    hostile_lines.sort();
    assert!(
        mixed == expected,
        "the mixed run printed other lines than the goods alone plus the hostile ones alone ({} vs {} + {})",
        mixed.len(),
        alone().len(),
        hostile_lines.len()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile user agents

/// The fixture `rich` with host `host` and the message `UserAgent: <ua>` (the parser cuts it at 1000 units).
fn with_user_agent(rich: &[u8], host: &str, ua: &str) -> Vec<u8> {
    let mut p = parts(rich);
    p[1] = host.as_bytes().to_vec();
    p[7] = format!("UserAgent: {ua}").into_bytes();
    p.join(&b';')
}

#[test]
fn hostile_user_agents_among_good_events_come_out_as_bowser_says_and_every_datagram_is_counted() {
    let goods = goods();
    let rich = goods
        .iter()
        .find(|g| g.windows(10).any(|w| w == b"UserAgent:"))
        .expect("a fixture with a user agent");
    // Every agent built to make the matcher work hard, in three variants each, so the per-reader cache cannot
    // absorb them: each one is parsed.
    let mut hostile = Vec::new();
    for (i, (_, ua)) in hostile::user_agents().iter().enumerate() {
        for v in 0..3 {
            hostile.push(with_user_agent(rich, &format!("ua-{i}-{v}"), &format!("{v}{ua}")));
        }
    }
    // Agents whose answer depends on every search running to its end: Bowser 2.14.1's answer (its regexes checked
    // in node). A 601-character version: the Opera Touch test is `/opt\/\d+(?:.?_?\d+)+/i`.
    let version = format!("{}1", "1.".repeat(300));
    let expected = [
        (
            "ua-opera-touch",
            format!("OPT/{version}"),
            r#""uaBrowserName":"Opera Touch","uaBrowserMajorVersion":"1"}"#,
        ),
        (
            "ua-firefox",
            format!("Mozilla/5.0 (X11; Linux x86_64) Firefox/{version}"),
            r#""uaBrowserName":"Firefox","uaBrowserMajorVersion":"1","uaOsName":"Linux"}"#,
        ),
    ];
    for (host, ua, _) in &expected {
        hostile.push(with_user_agent(rich, host, ua));
    }
    let total = hostile.len();
    let chunks = deal(hostile, goods.len() + 1);

    let run = interleaved(&goods, &chunks);
    assert_eq!(run.counts.kernel_drops, 0, "{}", run.summary);
    assert_eq!(run.counts.received as usize, goods.len() + total, "{}", run.summary);
    let hostile_lines = run.lines.iter().filter(|l| l.contains(r#""host":"ua-"#)).count();
    assert_eq!(
        hostile_lines, total,
        "one line per hostile-agent event: {}",
        run.summary
    );
    for (host, _, ua_json) in expected {
        let line = run
            .lines
            .iter()
            .find(|l| l.contains(&format!(r#""host":"{host}""#)))
            .unwrap_or_else(|| panic!("no line for {host}"));
        assert!(
            line.ends_with(ua_json),
            "{host}: want the line to end with {ua_json}:\n{line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The proptest variant

/// One edit of a good datagram.
#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    Separators(Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Edit::Flip(i, x)),
        (
            any::<Index>(),
            prop::collection::vec(prop_oneof![any::<u8>(), Just(b';'), Just(0u8), Just(0xff)], 1..16)
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), 1usize..10).prop_map(|(i, n)| Edit::Separators(i, n)),
    ]
}

fn apply(mut d: Vec<u8>, edit: &Edit) -> Vec<u8> {
    let at = |i: &Index, d: &Vec<u8>| i.index(d.len() + 1);
    match edit {
        Edit::Flip(i, x) if !d.is_empty() => {
            let i = i.index(d.len());
            d[i] ^= x;
        }
        Edit::Flip(..) => {}
        Edit::Insert(i, bytes) => {
            let i = at(i, &d);
            d.splice(i..i, bytes.iter().copied());
        }
        Edit::Delete(i, n) => {
            let i = at(i, &d);
            let end = (i + n).min(d.len());
            d.drain(i..end);
        }
        Edit::Truncate(i) => d.truncate(at(i, &d)),
        Edit::Separators(i, n) => {
            let i = at(i, &d);
            d.splice(i..i, std::iter::repeat_n(b';', *n));
        }
    }
    d
}

/// One hostile datagram: a mutated fixture, random bytes, or something large.
fn hostile_datagram() -> impl Strategy<Value = Vec<u8>> {
    let goods = goods();
    let n = goods.len();
    prop_oneof![
        6 => (0..n, prop::collection::vec(edit(), 1..6))
            .prop_map(move |(g, edits)| edits.iter().fold(goods[g].clone(), apply)),
        2 => prop::collection::vec(any::<u8>(), 0..2000),
        1 => (prop::sample::select(&[b';', 0u8, b'x', 0xff][..]), 30_000usize..=UDP_MAX)
            .prop_map(|(b, len)| vec![b; len]),
        1 => prop::collection::vec(any::<u8>(), 60_000..=UDP_MAX),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4,
        rng_seed: RngSeed::Fixed(0x5e45_e1de),
        failure_persistence: None,
        // Each case runs the binary: keep a failure's shrinking bounded.
        max_shrink_iters: 16,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_hostile_datagrams_never_disturb_good_ones(
        placed in prop::collection::vec((any::<Index>(), hostile_datagram()), 50..250),
    ) {
        let goods = goods();
        let mut chunks = vec![Vec::new(); goods.len() + 1];
        for (slot, d) in placed {
            chunks[slot.index(goods.len() + 1)].push(d);
        }
        let run = interleaved(&goods, &chunks);
        prop_assert_eq!(run.counts.kernel_drops, 0, "{}", run.summary);
    }
}
