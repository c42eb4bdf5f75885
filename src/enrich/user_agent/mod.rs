//! User-agent parsing that reproduces **Bowser 2.14.1** (the parser Butler SOS uses) string for string.
//!
//! Butler SOS writes four user-agent facts into InfluxDB tags, MQTT payloads and New Relic attributes:
//! `uaBrowserName`, `uaBrowserMajorVersion` (the leading digits of Bowser's browser version), `uaOsName` and
//! `uaOsVersion`. Existing Grafana dashboards group by those exact strings (`Microsoft Edge`, `macOS`, `NT 10.0`,
//! `Samsung Internet for Android`, ...), so a drop-in replacement must produce Bowser's names and versions, not
//! those of another parser.
//!
//! # How
//!
//! Bowser is an ordered list of descriptors: the first browser descriptor whose test matches describes the browser,
//! and the first OS descriptor whose test matches describes the OS (see Bowser's `src/parser-browsers.js` and
//! `src/parser-os.js`). Each test and each version lookup is a JavaScript regular expression. This module carries
//! the same two lists, in the same order, with the **same regular-expression sources copied from Bowser 2.14.1**,
//! and runs them with a small memoising backtracker (private module `js_regex`) that implements the subset of
//! JavaScript `RegExp` syntax those sources use, with JavaScript's semantics: matching over UTF-16 code units,
//! ASCII-only case folding for the `i` flag, `.` not matching line terminators, `\s` covering Unicode white space,
//! leftmost-first backtracking with greedy/lazy quantifiers.
//!
//! # Cost: linear in the agent, whatever it holds, and within 100 µs
//!
//! The matcher never enters the same (instruction, position) state twice within one search, so one search costs
//! at most its program length times the agent's length plus one, and a whole parse (up to about 180 patterns)
//! stays linear in the agent's length. There is no step budget and no depth limit, so no search is ever cut
//! short: the result is Bowser's for every input, long ones included.
//!
//! Linear is not the whole story: PRODUCT.md promises at most 100 µs of CPU for any single datagram, and
//! instructions are not all a search costs. Each search first looks for the literals its pattern needs
//! (`memmem` over a lower-cased copy of the agent); most searches end there. The rest start the matcher only
//! where one of the literals every match begins with occurs and the units there fit what every match begins
//! with, and run single-unit loops such as the generic fallback's `.*` as one instruction that skips the ends
//! where what follows cannot start (the `js_regex` module documentation has the details). What a parse costs is
//! counted by kind (instructions, attempts, literal searches and the units they scan, units walked one at a time,
//! visited-set words zeroed) and weighted by the measured CPU time of each kind (`js_regex::Work::cost`, roughly
//! nanoseconds in a release build); the unit tests hold every agent in [`hostile`] to 100 units of work per unit
//! of agent, about 100 µs for 1000 units, and `benches/user_agent.rs` measures them (BENCHMARKS.md). A crafted
//! agent such as `/ (` followed by 986 `i` cost about 200 µs before the start literals, the lead and the
//! single-unit loops; now under 20 µs. An older one, `1(` followed by 960 `/`, took the plain backtracker this
//! module started with 1.86 million steps (about 20 ms); it never gets past the literal prefilters.
//! The per-reader [`UserAgentCache`] only makes repeats cheaper; the bound holds for every parse, so varying the
//! agent does not get around it.
//!
//! `woothee` was considered (see PROTOCOLS.md f.1) and not used. A name-mapping table on top of it (`Edge` →
//! `Microsoft Edge`, `Mac OSX` → `macOS`, `SamsungBrowser` → `Samsung Internet for Android`, `Windows 10` →
//! `Windows` + `NT 10.0`, ...) fixes only the agents both parsers classify alike: woothee has no Chromium,
//! Electron, UC Browser, Opera Touch or most of Bowser's bots, tests its rules in a different order, and has
//! nothing like Bowser's generic `name/version` fallback. Porting Bowser's rules keeps every agent in step with
//! Butler SOS.
//!
//! # Where the result may differ from Bowser
//!
//! * **Client hints:** Butler SOS calls Bowser without client hints, so the `DuckDuckGo` (Chromium builds) and
//!   `Brave` descriptors, which need hints, never match here either; Brave is reported as `Chrome`, as Bowser does.
//! * **Empty input:** Bowser throws on an empty string; here the result is simply all-empty.
//!
//! Bots are *not* filtered out: Bowser 2.14.1 names them (`Googlebot`, `BingCrawler`, `ClaudeBot`, ...) and so
//! does this module, because that is what Butler SOS writes. Tools without a browser-like agent (`curl/8.5.0`,
//! `Wget/1.21.4`, `python-requests/2.31.0`) get no browser name because Bowser's generic fallback needs a space
//! (or `(`) after the `name/version` part; `curl/7.64.1 (x86_64-pc-linux-gnu)` and the like *do* get a name
//! (`curl`), again exactly as in Bowser.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use crate::event::UserAgentInfo;

pub mod hostile;
mod js_regex;
mod tables;
#[cfg(test)]
mod tests;

use tables::{
    NameSpec, TestSpec, VerSpec, ANDROID, BROWSERS, DDG_TEST, GENERIC_WITHOUT_DEVICE, GENERIC_WITH_DEVICE,
    LIKE_ANDROID, OSES, QQ_LITE,
};

/// Parses a user agent the way Butler SOS does with Bowser 2.14.1 and returns its four reported facts.
///
/// * `browser_name`: Bowser's `browser.name`, e.g. `Chrome`, `Firefox`, `Safari`, `Microsoft Edge`, `Opera`,
///   `Internet Explorer`, `Samsung Internet for Android`, `Vivaldi`, `Yandex Browser`, `Chromium`,
///   `Android Browser`, bot names such as `Googlebot`, or for an unknown agent the `name` part of its leading
///   `name/version (` (Bowser's generic fallback, e.g. `Mozilla` for some old agents).
/// * `browser_major_version`: the leading ASCII digits of Bowser's `browser.version` (`Chrome/124.0.0.0` → `124`,
///   `Version/17.4` → `17` for Safari, `Edg/124.0.2478.80` → `124`, `rv:11.0` → `11` for IE 11).
/// * `os_name`: Bowser's `os.name`: `Windows`, `macOS`, `iOS`, `Android`, `Linux`, `Chrome OS`, `Windows Phone`,
///   `BlackBerry`, `Tizen`, `WebOS`, `Bada`, `HarmonyOS`, `Roku`, `PlayStation 4`.
/// * `os_version`: Bowser's `os.version`: `NT 10.0` for Windows (Windows 11 also reports `NT 10.0`), `10.15.7` for
///   macOS (underscores turned into dots), `17.4.1` for iOS, `14` for Android; empty for Linux and Chrome OS.
///
/// Absent values are empty strings; an empty `ua` gives all four empty. The input is the user agent as Butler SOS
/// extracts it (text after `UserAgent:`, trimmed, every `'` removed); this function does no such extraction.
/// Never panics. See the module documentation for the few places where the result can differ from Bowser's.
pub fn parse_user_agent(ua: &str) -> UserAgentInfo {
    let parsed = parse_detailed(ua);
    UserAgentInfo {
        browser_major_version: leading_digits(&parsed.browser_version).to_owned(),
        browser_name: parsed.browser_name,
        os_name: parsed.os_name,
        os_version: parsed.os_version,
    }
}

/// A per-reader cache of parsed user agents, keyed by the user-agent string.
///
/// User agents in one Qlik Sense farm are few and repeat constantly, so each UDP reader keeps one of these and
/// parses a given string once. A hit costs one hash of the string and an `Arc` clone: it never allocates. Misses
/// and non-browser agents are cached too (as `None`), so a stream of `curl` requests is also parsed only once.
///
/// **Bound:** at most `max_entries` strings are kept. When the cache is full, the next miss clears it completely
/// before inserting (no LRU bookkeeping on the hot path; the working set refills within a few events). The map
/// keeps its capacity across clears, so after warm-up it does not reallocate. Memory is bounded by `max_entries`
/// times the longest user agent (Butler SOS's message limit is 1000 characters). `max_entries == 0` disables
/// caching: every lookup parses.
#[derive(Debug)]
pub struct UserAgentCache {
    map: HashMap<Box<str>, Option<Arc<UserAgentInfo>>>,
    max_entries: usize,
}

impl UserAgentCache {
    /// Creates an empty cache that holds at most `max_entries` user agents (see the type's docs for what happens
    /// when it is full; 0 disables caching).
    pub fn new(max_entries: usize) -> Self {
        UserAgentCache {
            map: HashMap::with_capacity(max_entries.min(1024)),
            max_entries,
        }
    }

    /// Returns the parsed facts for `ua` (see [`parse_user_agent`]), or `None` when `ua` is empty or when Bowser
    /// would report none of the four facts (e.g. `curl/8.5.0`). Repeated lookups of the same string return clones
    /// of the same `Arc` and do not allocate.
    pub fn lookup(&mut self, ua: &str) -> Option<Arc<UserAgentInfo>> {
        if ua.is_empty() {
            return None;
        }
        if let Some(hit) = self.map.get(ua) {
            return hit.clone();
        }
        let info = parse_user_agent(ua);
        let value = if info.is_empty() { None } else { Some(Arc::new(info)) };
        if self.max_entries > 0 {
            if self.map.len() >= self.max_entries {
                self.map.clear();
            }
            self.map.insert(ua.into(), value.clone());
        }
        value
    }

    /// Number of user agents currently cached (never more than `max_entries`).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Bowser's result before the major version is derived: the full browser version is kept so the port can be
/// compared with Bowser output field by field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct BowserResult {
    /// `browser.name` (empty when absent).
    pub(crate) browser_name: String,
    /// `browser.version` (empty when absent).
    pub(crate) browser_version: String,
    /// `os.name` (empty when absent).
    pub(crate) os_name: String,
    /// `os.version` (empty when absent).
    pub(crate) os_version: String,
}

/// Runs Bowser's browser and OS descriptor lists over `ua`.
pub(crate) fn parse_detailed(ua: &str) -> BowserResult {
    parse_counting_work(ua).0
}

/// [`parse_detailed`], plus the matcher instructions it executed (summed over every regular-expression search).
#[cfg(test)]
pub(crate) fn parse_counting_steps(ua: &str) -> (BowserResult, u64) {
    let (result, work) = parse_counting_work(ua);
    (result, work.steps)
}

/// [`parse_detailed`], plus everything its regular-expression searches did (see `js_regex::Work`).
pub(crate) fn parse_counting_work(ua: &str) -> (BowserResult, js_regex::Work) {
    if ua.is_empty() {
        return (BowserResult::default(), js_regex::Work::default());
    }
    let mut text = js_regex::Text::new(ua);
    let tables = tables();
    let (browser_name, browser_version) = describe_browser(tables, &mut text);
    let (os_name, os_version) = describe_os(tables, &mut text);
    let result = BowserResult {
        browser_name,
        browser_version,
        os_name,
        os_version,
    };
    (result, text.work())
}

/// The leading ASCII digits of `version` (Butler SOS's "major version").
fn leading_digits(version: &str) -> &str {
    let end = version
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(version.len());
    &version[..end]
}

/// A compiled pattern; `None` only if its source failed to compile, which the tests rule out (a `None` pattern
/// never matches, so even then nothing panics).
type Rx = Option<js_regex::Regex>;

enum Test {
    AnyOf(Vec<Rx>),
    AndroidNotLike,
    DuckDuckGo,
    Never,
    Always,
}

enum Ver {
    First(Rx),
    Second(Rx),
}

struct Rule {
    name: NameSpec,
    os_name: &'static str,
    test: Test,
    version: Vec<Ver>,
    dotted: bool,
}

struct Tables {
    browsers: Vec<Rule>,
    oses: Vec<Rule>,
    like_android: Rx,
    android: Rx,
    ddg: Rx,
    qq_lite: Rx,
    generic_with_device: Rx,
    generic_without_device: Rx,
}

fn compile_test(spec: &TestSpec) -> Test {
    match spec {
        TestSpec::AnyOf(list) => Test::AnyOf(list.iter().map(|s| js_regex::Regex::new(s)).collect()),
        TestSpec::AndroidNotLike => Test::AndroidNotLike,
        TestSpec::DuckDuckGo => Test::DuckDuckGo,
        TestSpec::ClientHintsOnly => Test::Never,
        TestSpec::Always => Test::Always,
    }
}

fn compile_versions(specs: &[VerSpec]) -> Vec<Ver> {
    specs
        .iter()
        .map(|v| match v {
            VerSpec::First(s) => Ver::First(js_regex::Regex::new(s)),
            VerSpec::Second(s) => Ver::Second(js_regex::Regex::new(s)),
        })
        .collect()
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| Tables {
        browsers: BROWSERS
            .iter()
            .map(|s| Rule {
                name: s.name,
                os_name: "",
                test: compile_test(&s.test),
                version: compile_versions(s.version),
                dotted: false,
            })
            .collect(),
        oses: OSES
            .iter()
            .map(|s| Rule {
                name: NameSpec::Fixed(s.name),
                os_name: s.name,
                test: compile_test(&s.test),
                version: compile_versions(s.version),
                dotted: s.dotted,
            })
            .collect(),
        like_android: js_regex::Regex::new(LIKE_ANDROID),
        android: js_regex::Regex::new(ANDROID),
        ddg: js_regex::Regex::new(DDG_TEST),
        qq_lite: js_regex::Regex::new(QQ_LITE),
        generic_with_device: js_regex::Regex::new(GENERIC_WITH_DEVICE),
        generic_without_device: js_regex::Regex::new(GENERIC_WITHOUT_DEVICE),
    })
}

fn rx_test(rx: &Rx, ua: &mut js_regex::Text) -> bool {
    rx.as_ref().is_some_and(|r| r.is_match(ua))
}

/// `Utils.getFirstMatch` / `getSecondMatch`: the group's text, or empty when there is no match or the group did
/// not take part in it.
fn rx_group(rx: &Rx, ua: &mut js_regex::Text, group: usize) -> String {
    let range = rx.as_ref().and_then(|r| r.group(ua, group));
    group_text(ua, range)
}

/// The text of a capture group's span (empty for `None`).
fn group_text(ua: &js_regex::Text, range: Option<Range<usize>>) -> String {
    range
        .and_then(|range| ua.units().get(range))
        .map(String::from_utf16_lossy)
        .unwrap_or_default()
}

fn rule_applies(t: &Tables, rule: &Rule, ua: &mut js_regex::Text) -> bool {
    match &rule.test {
        Test::AnyOf(list) => list.iter().any(|rx| rx_test(rx, ua)),
        Test::AndroidNotLike => !rx_test(&t.like_android, ua) && rx_test(&t.android, ua),
        Test::DuckDuckGo => rx_test(&t.ddg, ua),
        Test::Never => false,
        Test::Always => true,
    }
}

/// The first non-empty version lookup (JavaScript's `a || b || c`).
fn rule_version(rule: &Rule, ua: &mut js_regex::Text) -> String {
    for v in &rule.version {
        let found = match v {
            Ver::First(rx) => rx_group(rx, ua, 1),
            Ver::Second(rx) => rx_group(rx, ua, 2),
        };
        if !found.is_empty() {
            return found;
        }
    }
    String::new()
}

/// Bowser's `parseBrowser`: `(name, version)`.
fn describe_browser(t: &Tables, ua: &mut js_regex::Text) -> (String, String) {
    let Some(rule) = t.browsers.iter().find(|r| rule_applies(t, r, ua)) else {
        return (String::new(), String::new());
    };
    match rule.name {
        NameSpec::Fixed(name) => (name.to_owned(), rule_version(rule, ua)),
        NameSpec::QqBrowser => {
            let name = if rx_test(&t.qq_lite, ua) {
                "QQ Browser Lite"
            } else {
                "QQ Browser"
            };
            (name.to_owned(), rule_version(rule, ua))
        }
        NameSpec::Generic => {
            // `ua.search('\\(') !== -1` picks the pattern that expects a `(device spec)`.
            let rx = if ua.units().contains(&u16::from(b'(')) {
                &t.generic_with_device
            } else {
                &t.generic_without_device
            };
            // Both groups come from the same leftmost match, so one search answers both (this pattern's greedy
            // `.*`s make it the most expensive search of a parse).
            let caps = rx.as_ref().and_then(|r| r.captures(ua));
            let group = |n| caps.as_ref().and_then(|c| c.group(n));
            (group_text(ua, group(1)), group_text(ua, group(2)))
        }
    }
}

/// Bowser's `parseOS`: `(name, version)`.
fn describe_os(t: &Tables, ua: &mut js_regex::Text) -> (String, String) {
    let Some(rule) = t.oses.iter().find(|r| rule_applies(t, r, ua)) else {
        return (String::new(), String::new());
    };
    let mut version = rule_version(rule, ua);
    if rule.dotted {
        // `.replace(/[_\s]/g, '.')`
        version = version
            .chars()
            .map(|c| {
                if c == '_' || js_regex::is_js_space_char(c) {
                    '.'
                } else {
                    c
                }
            })
            .collect();
    }
    (rule.os_name.to_owned(), version)
}
