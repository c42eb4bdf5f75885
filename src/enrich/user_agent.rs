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
//! and runs them with a small backtracking matcher (private module `js_regex`) that implements the subset of
//! JavaScript `RegExp` syntax those sources use, with JavaScript's semantics: matching over UTF-16 code units,
//! ASCII-only case folding for the `i` flag, `.` not matching line terminators, `\s` covering Unicode white space,
//! leftmost-first backtracking with greedy/lazy quantifiers, and JavaScript's rule that an optional iteration
//! of a quantified group may not match the empty string.
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
//! * **Pathological input:** each regular-expression search is bounded in steps and in nesting depth (constants
//!   `STEP_BUDGET` and `MAX_DEPTH` in the private `js_regex` module) so a hostile user agent cannot make the
//!   reader spin or overflow its stack. A search that hits a bound counts as "no match" where Bowser would have
//!   kept going; in practice only a version number with more than about a hundred components (e.g.
//!   `Firefox/1.1.1.…` repeated) does, and then that version comes out empty. Agents within Butler SOS's
//!   1000-character message limit never reach the step bound.
//! * **Empty input:** Bowser throws on an empty string; here the result is simply all-empty.
//!
//! Bots are *not* filtered out: Bowser 2.14.1 names them (`Googlebot`, `BingCrawler`, `ClaudeBot`, ...) and so
//! does this module, because that is what Butler SOS writes. Tools without a browser-like agent (`curl/8.5.0`,
//! `Wget/1.21.4`, `python-requests/2.31.0`) get no browser name because Bowser's generic fallback needs a space
//! (or `(`) after the `name/version` part; `curl/7.64.1 (x86_64-pc-linux-gnu)` and the like *do* get a name
//! (`curl`), again exactly as in Bowser.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::event::UserAgentInfo;

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
    if ua.is_empty() {
        return BowserResult::default();
    }
    let text = js_regex::Text::new(ua);
    let tables = tables();
    let (browser_name, browser_version) = describe_browser(tables, &text);
    let (os_name, os_version) = describe_os(tables, &text);
    BowserResult {
        browser_name,
        browser_version,
        os_name,
        os_version,
    }
}

/// The leading ASCII digits of `version` (Butler SOS's "major version").
fn leading_digits(version: &str) -> &str {
    let end = version
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(version.len());
    &version[..end]
}

// ---------------------------------------------------------------------------------------------------------------
// Bowser 2.14.1's descriptor lists, transcribed in order. Patterns are JavaScript regex literals, copied verbatim.
// ---------------------------------------------------------------------------------------------------------------

/// How a descriptor decides that it applies.
enum TestSpec {
    /// Any of these regular expressions matches.
    AnyOf(&'static [&'static str]),
    /// `!/like android/i && /android/i` (Android Browser and the Android OS).
    AndroidNotLike,
    /// DuckDuckGo: a client-hint brand (never present here) or `/\sDdg\/[\d.]+$/i`.
    DuckDuckGo,
    /// Client hints only (Brave): never matches without hints.
    ClientHintsOnly,
    /// Bowser's final catch-all `/.*/i`.
    Always,
}

/// One version lookup; a descriptor uses the first lookup that yields a non-empty string (JavaScript `||`).
enum VerSpec {
    /// `Utils.getFirstMatch(re, ua)`: capture group 1.
    First(&'static str),
    /// `Utils.getSecondMatch(re, ua)`: capture group 2.
    Second(&'static str),
}

/// How a browser descriptor names the browser.
#[derive(Clone, Copy)]
enum NameSpec {
    Fixed(&'static str),
    /// `/qqbrowserlite/i.test(ua) ? 'QQ Browser Lite' : 'QQ Browser'`.
    QqBrowser,
    /// The generic fallback: `name/version` from the start of the agent.
    Generic,
}

struct BrowserSpec {
    name: NameSpec,
    test: TestSpec,
    version: &'static [VerSpec],
}

struct OsSpec {
    name: &'static str,
    test: TestSpec,
    version: &'static [VerSpec],
    /// Apply `.replace(/[_\s]/g, '.')` to the version (macOS, iOS).
    dotted: bool,
}

/// Bowser's `commonVersionIdentifier`.
const COMMON: &str = r"/version\/(\d+(\.?_?\d+)+)/i";

const fn b(name: &'static str, test: &'static [&'static str], version: &'static [VerSpec]) -> BrowserSpec {
    BrowserSpec {
        name: NameSpec::Fixed(name),
        test: TestSpec::AnyOf(test),
        version,
    }
}

use VerSpec::{First as F, Second as S};

/// `src/parser-browsers.js` of Bowser 2.14.1, in order.
static BROWSERS: &[BrowserSpec] = &[
    b("GPTBot", &[r"/gptbot/i"], &[F(r"/gptbot\/(\d+(\.\d+)+)/i"), F(COMMON)]),
    b(
        "ChatGPT-User",
        &[r"/chatgpt-user/i"],
        &[F(r"/chatgpt-user\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "OAI-SearchBot",
        &[r"/oai-searchbot/i"],
        &[F(r"/oai-searchbot\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "ClaudeBot",
        &[
            r"/claudebot/i",
            r"/claude-web/i",
            r"/claude-user/i",
            r"/claude-searchbot/i",
        ],
        &[
            F(r"/(?:claudebot|claude-web|claude-user|claude-searchbot)\/(\d+(\.\d+)+)/i"),
            F(COMMON),
        ],
    ),
    b(
        "Omgilibot",
        &[r"/omgilibot/i", r"/webzio-extended/i"],
        &[F(r"/(?:omgilibot|webzio-extended)\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "Diffbot",
        &[r"/diffbot/i"],
        &[F(r"/diffbot\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "PerplexityBot",
        &[r"/perplexitybot/i"],
        &[F(r"/perplexitybot\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "Perplexity-User",
        &[r"/perplexity-user/i"],
        &[F(r"/perplexity-user\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b("YouBot", &[r"/youbot/i"], &[F(r"/youbot\/(\d+(\.\d+)+)/i"), F(COMMON)]),
    b(
        "Meta-WebIndexer",
        &[r"/meta-webindexer/i"],
        &[F(r"/meta-webindexer\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "Meta-ExternalAds",
        &[r"/meta-externalads/i"],
        &[F(r"/meta-externalads\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "Meta-ExternalAgent",
        &[r"/meta-externalagent/i"],
        &[F(r"/meta-externalagent\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "Meta-ExternalFetcher",
        &[r"/meta-externalfetcher/i"],
        &[F(r"/meta-externalfetcher\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "Googlebot",
        &[r"/googlebot/i"],
        &[F(r"/googlebot\/(\d+(\.\d+))/i"), F(COMMON)],
    ),
    b(
        "Linespider",
        &[r"/linespider/i"],
        &[F(r"/(?:linespider)(?:-[-\w]+)?[\s/](\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "AmazonBot",
        &[r"/amazonbot/i"],
        &[F(r"/amazonbot\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "BingCrawler",
        &[r"/bingbot/i"],
        &[F(r"/bingbot\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "BaiduSpider",
        &[r"/baiduspider/i"],
        &[F(r"/baiduspider\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "DuckDuckBot",
        &[r"/duckduckbot/i"],
        &[F(r"/duckduckbot\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "InternetArchiveCrawler",
        &[r"/ia_archiver/i"],
        &[F(r"/ia_archiver\/(\d+(\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "FacebookExternalHit",
        &[r"/facebookexternalhit/i", r"/facebookcatalog/i"],
        &[],
    ),
    b(
        "SlackBot",
        &[r"/slackbot/i", r"/slack-imgProxy/i"],
        &[
            F(r"/(?:slackbot|slack-imgproxy)(?:-[-\w]+)?[\s/](\d+(\.\d+)+)/i"),
            F(COMMON),
        ],
    ),
    b("YahooSlurp", &[r"/yahoo!?[\s/]*slurp/i"], &[]),
    b("YandexBot", &[r"/yandexbot/i", r"/yandexmobilebot/i"], &[]),
    b("PingdomBot", &[r"/pingdom/i"], &[]),
    // Opera < 13.0
    b(
        "Opera",
        &[r"/opera/i"],
        &[F(COMMON), F(r"/(?:opera)[\s/](\d+(\.?_?\d+)+)/i")],
    ),
    // Opera > 13.0
    b(
        "Opera",
        &[r"/opr\/|opios/i"],
        &[F(r"/(?:opr|opios)[\s/](\S+)/i"), F(COMMON)],
    ),
    b(
        "Samsung Internet for Android",
        &[r"/SamsungBrowser/i"],
        &[F(COMMON), F(r"/(?:SamsungBrowser)[\s/](\d+(\.?_?\d+)+)/i")],
    ),
    b(
        "NAVER Whale Browser",
        &[r"/Whale/i"],
        &[F(COMMON), F(r"/(?:whale)[\s/](\d+(?:\.\d+)+)/i")],
    ),
    b(
        "Pale Moon",
        &[r"/PaleMoon/i"],
        &[F(COMMON), F(r"/(?:PaleMoon)[\s/](\d+(?:\.\d+)+)/i")],
    ),
    b(
        "MZ Browser",
        &[r"/MZBrowser/i"],
        &[F(r"/(?:MZBrowser)[\s/](\d+(?:\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "Focus",
        &[r"/focus/i"],
        &[F(r"/(?:focus)[\s/](\d+(?:\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "Swing",
        &[r"/swing/i"],
        &[F(r"/(?:swing)[\s/](\d+(?:\.\d+)+)/i"), F(COMMON)],
    ),
    b(
        "Opera Coast",
        &[r"/coast/i"],
        &[F(COMMON), F(r"/(?:coast)[\s/](\d+(\.?_?\d+)+)/i")],
    ),
    b(
        "Opera Touch",
        &[r"/opt\/\d+(?:.?_?\d+)+/i"],
        &[F(r"/(?:opt)[\s/](\d+(\.?_?\d+)+)/i"), F(COMMON)],
    ),
    b(
        "Yandex Browser",
        &[r"/yabrowser/i"],
        &[F(r"/(?:yabrowser)[\s/](\d+(\.?_?\d+)+)/i"), F(COMMON)],
    ),
    b(
        "UC Browser",
        &[r"/ucbrowser/i"],
        &[F(COMMON), F(r"/(?:ucbrowser)[\s/](\d+(\.?_?\d+)+)/i")],
    ),
    b(
        "Maxthon",
        &[r"/Maxthon|mxios/i"],
        &[F(COMMON), F(r"/(?:Maxthon|mxios)[\s/](\d+(\.?_?\d+)+)/i")],
    ),
    b(
        "Epiphany",
        &[r"/epiphany/i"],
        &[F(COMMON), F(r"/(?:epiphany)[\s/](\d+(\.?_?\d+)+)/i")],
    ),
    b(
        "Puffin",
        &[r"/puffin/i"],
        &[F(COMMON), F(r"/(?:puffin)[\s/](\d+(\.?_?\d+)+)/i")],
    ),
    b(
        "Sleipnir",
        &[r"/sleipnir/i"],
        &[F(COMMON), F(r"/(?:sleipnir)[\s/](\d+(\.?_?\d+)+)/i")],
    ),
    b(
        "K-Meleon",
        &[r"/k-meleon/i"],
        &[F(COMMON), F(r"/(?:k-meleon)[\s/](\d+(\.?_?\d+)+)/i")],
    ),
    b(
        "WeChat",
        &[r"/micromessenger/i"],
        &[F(r"/(?:micromessenger)[\s/](\d+(\.?_?\d+)+)/i"), F(COMMON)],
    ),
    BrowserSpec {
        name: NameSpec::QqBrowser,
        test: TestSpec::AnyOf(&[r"/qqbrowser/i"]),
        version: &[F(r"/(?:qqbrowserlite|qqbrowser)[/](\d+(\.?_?\d+)+)/i"), F(COMMON)],
    },
    b(
        "Internet Explorer",
        &[r"/msie|trident/i"],
        &[F(r"/(?:msie |rv:)(\d+(\.?_?\d+)+)/i")],
    ),
    b("Microsoft Edge", &[r"/\sedg\//i"], &[F(r"/\sedg\/(\d+(\.?_?\d+)+)/i")]),
    b(
        "Microsoft Edge",
        &[r"/edg([ea]|ios)/i"],
        &[S(r"/edg([ea]|ios)\/(\d+(\.?_?\d+)+)/i")],
    ),
    b("Vivaldi", &[r"/vivaldi/i"], &[F(r"/vivaldi\/(\d+(\.?_?\d+)+)/i")]),
    b("SeaMonkey", &[r"/seamonkey/i"], &[F(r"/seamonkey\/(\d+(\.?_?\d+)+)/i")]),
    b(
        "Sailfish",
        &[r"/sailfish/i"],
        &[F(r"/sailfish\s?browser\/(\d+(\.\d+)?)/i")],
    ),
    b("Amazon Silk", &[r"/silk/i"], &[F(r"/silk\/(\d+(\.?_?\d+)+)/i")]),
    b("PhantomJS", &[r"/phantom/i"], &[F(r"/phantomjs\/(\d+(\.?_?\d+)+)/i")]),
    b("SlimerJS", &[r"/slimerjs/i"], &[F(r"/slimerjs\/(\d+(\.?_?\d+)+)/i")]),
    b(
        "BlackBerry",
        &[r"/blackberry|\bbb\d+/i", r"/rim\stablet/i"],
        &[F(COMMON), F(r"/blackberry[\d]+\/(\d+(\.?_?\d+)+)/i")],
    ),
    b(
        "WebOS Browser",
        &[r"/(web|hpw)[o0]s/i"],
        &[F(COMMON), F(r"/w(?:eb)?[o0]sbrowser\/(\d+(\.?_?\d+)+)/i")],
    ),
    b("Bada", &[r"/bada/i"], &[F(r"/dolfin\/(\d+(\.?_?\d+)+)/i")]),
    b(
        "Tizen",
        &[r"/tizen/i"],
        &[F(r"/(?:tizen\s?)?browser\/(\d+(\.?_?\d+)+)/i"), F(COMMON)],
    ),
    b(
        "QupZilla",
        &[r"/qupzilla/i"],
        &[F(r"/(?:qupzilla)[\s/](\d+(\.?_?\d+)+)/i"), F(COMMON)],
    ),
    b(
        "LibreWolf",
        &[r"/librewolf/i"],
        &[F(r"/(?:librewolf)[\s/](\d+(\.?_?\d+)+)/i")],
    ),
    b(
        "Firefox",
        &[r"/firefox|iceweasel|fxios/i"],
        &[F(r"/(?:firefox|iceweasel|fxios)[\s/](\d+(\.?_?\d+)+)/i")],
    ),
    b(
        "Electron",
        &[r"/electron/i"],
        &[F(r"/(?:electron)\/(\d+(\.?_?\d+)+)/i")],
    ),
    b(
        "Sogou Browser",
        &[r"/sogoumobilebrowser/i", r"/metasr/i", r"/se 2\.[x]/i"],
        &[
            F(r"/(?:sogoumobilebrowser)[\s/](\d+(\.?_?\d+)+)/i"),
            F(r"/(?:chrome|crios|crmo)\/(\d+(\.?_?\d+)+)/i"),
            F(r"/se ([\d.]+)x/i"),
        ],
    ),
    b(
        "Miui",
        &[r"/MiuiBrowser/i"],
        &[F(r"/(?:MiuiBrowser)[\s/](\d+(\.?_?\d+)+)/i")],
    ),
    BrowserSpec {
        name: NameSpec::Fixed("DuckDuckGo"),
        test: TestSpec::DuckDuckGo,
        version: &[F(r"/\sDdg\/([\d.]+)$/i")],
    },
    BrowserSpec {
        name: NameSpec::Fixed("Brave"),
        test: TestSpec::ClientHintsOnly,
        version: &[],
    },
    b(
        "Chromium",
        &[r"/chromium/i"],
        &[F(r"/(?:chromium)[\s/](\d+(\.?_?\d+)+)/i"), F(COMMON)],
    ),
    b(
        "Chrome",
        &[r"/chrome|crios|crmo/i"],
        &[F(r"/(?:chrome|crios|crmo)\/(\d+(\.?_?\d+)+)/i")],
    ),
    b("Google Search", &[r"/GSA/i"], &[F(r"/(?:GSA)\/(\d+(\.?_?\d+)+)/i")]),
    BrowserSpec {
        name: NameSpec::Fixed("Android Browser"),
        test: TestSpec::AndroidNotLike,
        version: &[F(COMMON)],
    },
    b("PlayStation 4", &[r"/playstation 4/i"], &[F(COMMON)]),
    b("Safari", &[r"/safari|applewebkit/i"], &[F(COMMON)]),
    BrowserSpec {
        name: NameSpec::Generic,
        test: TestSpec::Always,
        version: &[],
    },
];

const fn os(name: &'static str, test: &'static [&'static str], version: &'static [VerSpec], dotted: bool) -> OsSpec {
    OsSpec {
        name,
        test: TestSpec::AnyOf(test),
        version,
        dotted,
    }
}

/// `src/parser-os.js` of Bowser 2.14.1, in order (names from `OS_MAP` in `src/constants.js`).
static OSES: &[OsSpec] = &[
    os("Roku", &[r"/Roku\/DVP/"], &[F(r"/Roku\/DVP-(\d+\.\d+)/i")], false),
    os(
        "Windows Phone",
        &[r"/windows phone/i"],
        &[F(r"/windows phone (?:os)?\s?(\d+(\.\d+)*)/i")],
        false,
    ),
    os(
        "Windows",
        &[r"/windows /i"],
        &[F(r"/Windows ((NT|XP)( \d\d?.\d)?)/i")],
        false,
    ),
    // Firefox on iPad (desktop-class agent with FxiOS).
    os(
        "iOS",
        &[r"/Macintosh(.*?) FxiOS(.*?)\//"],
        &[S(r"/(Version\/)(\d[\d.]+)/")],
        false,
    ),
    os("macOS", &[r"/macintosh/i"], &[F(r"/mac os x (\d+(\.?_?\d+)+)/i")], true),
    os(
        "iOS",
        &[r"/(ipod|iphone|ipad)/i"],
        &[F(r"/os (\d+([_\s]\d+)*) like mac os x/i")],
        true,
    ),
    os(
        "HarmonyOS",
        &[r"/OpenHarmony/i"],
        &[F(r"/OpenHarmony\s+(\d+(\.\d+)*)/i")],
        false,
    ),
    OsSpec {
        name: "Android",
        test: TestSpec::AndroidNotLike,
        version: &[F(r"/android[\s/-](\d+(\.\d+)*)/i")],
        dotted: false,
    },
    os(
        "WebOS",
        &[r"/(web|hpw)[o0]s/i"],
        &[F(r"/(?:web|hpw)[o0]s\/(\d+(\.\d+)*)/i")],
        false,
    ),
    os(
        "BlackBerry",
        &[r"/blackberry|\bbb\d+/i", r"/rim\stablet/i"],
        &[
            F(r"/rim\stablet\sos\s(\d+(\.\d+)*)/i"),
            F(r"/blackberry\d+\/(\d+([_\s]\d+)*)/i"),
            F(r"/\bbb(\d+)/i"),
        ],
        false,
    ),
    os("Bada", &[r"/bada/i"], &[F(r"/bada\/(\d+(\.\d+)*)/i")], false),
    os("Tizen", &[r"/tizen/i"], &[F(r"/tizen[/\s](\d+(\.\d+)*)/i")], false),
    os("Linux", &[r"/linux/i"], &[], false),
    os("Chrome OS", &[r"/CrOS/"], &[], false),
    os(
        "PlayStation 4",
        &[r"/PlayStation 4/"],
        &[F(r"/PlayStation 4[/\s](\d+(\.\d+)*)/i")],
        false,
    ),
];

/// Patterns used by the function-style tests and the generic fallback.
const LIKE_ANDROID: &str = r"/like android/i";
const ANDROID: &str = r"/android/i";
const DDG_TEST: &str = r"/\sDdg\/[\d.]+$/i";
const QQ_LITE: &str = r"/qqbrowserlite/i";
const GENERIC_WITH_DEVICE: &str = r"/^(.*)\/(.*)[ \t]\((.*)/";
const GENERIC_WITHOUT_DEVICE: &str = r"/^(.*)\/(.*) /";

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

fn rx_test(rx: &Rx, ua: &js_regex::Text) -> bool {
    rx.as_ref().is_some_and(|r| r.is_match(ua))
}

/// `Utils.getFirstMatch` / `getSecondMatch`: the group's text, or empty when there is no match or the group did
/// not take part in it.
fn rx_group(rx: &Rx, ua: &js_regex::Text, group: usize) -> String {
    match rx.as_ref().and_then(|r| r.group(ua, group)) {
        Some(range) => ua.units().get(range).map(String::from_utf16_lossy).unwrap_or_default(),
        None => String::new(),
    }
}

fn rule_applies(t: &Tables, rule: &Rule, ua: &js_regex::Text) -> bool {
    match &rule.test {
        Test::AnyOf(list) => list.iter().any(|rx| rx_test(rx, ua)),
        Test::AndroidNotLike => !rx_test(&t.like_android, ua) && rx_test(&t.android, ua),
        Test::DuckDuckGo => rx_test(&t.ddg, ua),
        Test::Never => false,
        Test::Always => true,
    }
}

/// The first non-empty version lookup (JavaScript's `a || b || c`).
fn rule_version(rule: &Rule, ua: &js_regex::Text) -> String {
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
fn describe_browser(t: &Tables, ua: &js_regex::Text) -> (String, String) {
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
            (rx_group(rx, ua, 1), rx_group(rx, ua, 2))
        }
    }
}

/// Bowser's `parseOS`: `(name, version)`.
fn describe_os(t: &Tables, ua: &js_regex::Text) -> (String, String) {
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

/// A backtracking matcher for the subset of JavaScript `RegExp` syntax that Bowser's rules use.
///
/// Supported: literals, `.`, `^`, `$`, `\b`, `\B`, `\d \D \s \S \w \W`, identity escapes (`\/`, `\.`, ...),
/// `\t \n \r \f \v`, character classes with ranges, capturing and `(?:...)` groups, alternation, and the `*`, `+`,
/// `?` quantifiers with their lazy forms; the only flag is `i`. Anything else fails to compile (`None`).
///
/// Semantics follow ECMAScript without the `u` flag: the input is UTF-16 code units; `i` folds ASCII letters only
/// (JavaScript never folds a non-ASCII unit onto an ASCII one); `.` excludes `\n \r U+2028 U+2029`; `\s` is
/// JavaScript's white-space set; search is leftmost, alternatives and quantifiers are tried in JavaScript's order;
/// an iteration beyond a quantifier's minimum may not match empty; captures inside a repeated group are reset on
/// each iteration.
///
/// Every search is bounded by [`STEP_BUDGET`] matcher steps and [`MAX_DEPTH`] nested matcher calls; a search that
/// exceeds either reports "no match" instead of running on (or overflowing the stack).
mod js_regex {
    use std::ops::Range;

    /// Matcher steps one search may take before it gives up (reports no match).
    pub(super) const STEP_BUDGET: u32 = 1_000_000;
    /// Nested matcher calls one search may reach before it gives up: about 200 KiB of stack in release builds
    /// (under 1 MiB unoptimised). Only repeated groups (`(\.\d+)*` etc.) nest per iteration, about five calls
    /// each, so version numbers of up to about a hundred components still match.
    pub(super) const MAX_DEPTH: u32 = 600;
    /// Capture slots (group 0 plus up to 7 groups); Bowser's patterns use at most 3 groups.
    const SLOTS: usize = 8;

    type Caps = [Option<(usize, usize)>; SLOTS];

    /// The subject of a search: the user agent as UTF-16 code units (what JavaScript matches on), plus one byte
    /// per unit for a fast literal prefilter (ASCII lower-cased; anything else `0xFF`, which no pattern
    /// literal contains and which case folding never turns into ASCII).
    pub(super) struct Text {
        units: Vec<u16>,
        folded: Vec<u8>,
    }

    impl Text {
        pub(super) fn new(s: &str) -> Text {
            let units: Vec<u16> = s.encode_utf16().collect();
            let folded = units
                .iter()
                .map(|&u| {
                    u8::try_from(u)
                        .ok()
                        .filter(u8::is_ascii)
                        .map_or(0xFF, |b| b.to_ascii_lowercase())
                })
                .collect();
            Text { units, folded }
        }

        pub(super) fn units(&self) -> &[u16] {
            &self.units
        }
    }

    /// A compiled pattern.
    #[derive(Debug)]
    pub(super) struct Regex {
        node: Node,
        ci: bool,
        anchored: bool,
        /// The pattern's leading literal, lower-cased, searched in [`Text::folded`] to find candidate starts.
        prefix: Option<memchr::memmem::Finder<'static>>,
        /// Bitmap of the ASCII units a match can start with (case variants included), when that set is known.
        first: Option<u128>,
    }

    #[derive(Debug)]
    enum Node {
        Empty,
        Lit(Vec<u16>),
        Any,
        Class(Class),
        Start,
        End,
        /// `\b` (false) or `\B` (true).
        WordBoundary(bool),
        Group(Box<Node>, Option<usize>),
        Concat(Vec<Node>),
        Alt(Vec<Node>),
        Repeat(Box<Repeat>),
    }

    #[derive(Debug)]
    struct Repeat {
        node: Node,
        min: usize,
        max: Option<usize>,
        greedy: bool,
        /// Capture slots of the groups inside `node` (reset per iteration).
        slots: Range<usize>,
    }

    #[derive(Debug)]
    struct Class {
        negated: bool,
        items: Vec<Item>,
    }

    #[derive(Debug)]
    enum Item {
        Range(u16, u16),
        /// `\d` / `\D` (negated = true)
        Digit(bool),
        Space(bool),
        Word(bool),
    }

    impl Item {
        fn matches(&self, c: u16) -> bool {
            match *self {
                Item::Range(lo, hi) => lo <= c && c <= hi,
                Item::Digit(neg) => is_digit(c) != neg,
                Item::Space(neg) => is_js_space(c) != neg,
                Item::Word(neg) => is_word(c) != neg,
            }
        }
    }

    impl Class {
        fn matches(&self, c: u16, ci: bool) -> bool {
            let mut hit = self.items.iter().any(|it| it.matches(c));
            if !hit && ci && c < 128 {
                let b = c as u8;
                let other = if b.is_ascii_lowercase() {
                    b.to_ascii_uppercase()
                } else {
                    b.to_ascii_lowercase()
                };
                if other != b {
                    hit = self.items.iter().any(|it| it.matches(u16::from(other)));
                }
            }
            hit != self.negated
        }
    }

    fn is_digit(c: u16) -> bool {
        (u16::from(b'0')..=u16::from(b'9')).contains(&c)
    }

    fn is_word(c: u16) -> bool {
        c < 128 && ((c as u8).is_ascii_alphanumeric() || c == u16::from(b'_'))
    }

    fn is_line_terminator(c: u16) -> bool {
        matches!(c, 0x0A | 0x0D | 0x2028 | 0x2029)
    }

    /// JavaScript's `\s`: WhiteSpace and LineTerminator code points.
    pub(super) fn is_js_space(c: u16) -> bool {
        matches!(
            c,
            0x09..=0x0D
                | 0x20
                | 0xA0
                | 0x1680
                | 0x2000..=0x200A
                | 0x2028
                | 0x2029
                | 0x202F
                | 0x205F
                | 0x3000
                | 0xFEFF
        )
    }

    /// [`is_js_space`] for a `char` (all of JavaScript's white space is in the BMP).
    pub(super) fn is_js_space_char(c: char) -> bool {
        u16::try_from(u32::from(c)).is_ok_and(is_js_space)
    }

    impl Regex {
        /// Compiles a JavaScript regex literal such as `/version\/(\d+)/i`. `None` for unsupported syntax.
        pub(super) fn new(literal: &str) -> Option<Regex> {
            let body = literal.strip_prefix('/')?;
            let end = body.rfind('/')?;
            let (source, flags) = (&body[..end], &body[end + 1..]);
            let ci = match flags {
                "" => false,
                "i" => true,
                _ => return None,
            };
            let mut parser = Parser {
                s: source.as_bytes(),
                i: 0,
                groups: 0,
            };
            let node = parser.alternation()?;
            if parser.i != parser.s.len() || parser.groups >= SLOTS {
                return None;
            }
            let anchored = match &node {
                Node::Concat(items) => matches!(items.first(), Some(Node::Start)),
                other => matches!(other, Node::Start),
            };
            let first = first_units(&node, ci);
            let leading_lit = match &node {
                Node::Lit(l) => Some(l),
                Node::Concat(items) => match items.first() {
                    Some(Node::Lit(l)) => Some(l),
                    _ => None,
                },
                _ => None,
            };
            let prefix = leading_lit
                .and_then(|l| {
                    l.iter()
                        .map(|&u| u8::try_from(u).ok().filter(u8::is_ascii))
                        .collect::<Option<Vec<u8>>>()
                })
                .map(|bytes| memchr::memmem::Finder::new(&bytes.to_ascii_lowercase()).into_owned());
            Some(Regex {
                node,
                ci,
                anchored,
                prefix,
                first,
            })
        }

        /// `re.test(input)`.
        pub(super) fn is_match(&self, input: &Text) -> bool {
            self.search(input).is_some()
        }

        /// The span of capture group `n` of the leftmost match (`None`: no match, or the group did not
        /// participate).
        pub(super) fn group(&self, input: &Text, n: usize) -> Option<Range<usize>> {
            let caps = self.search(input)?;
            let (s, e) = (*caps.get(n)?)?;
            Some(s..e)
        }

        fn search(&self, text: &Text) -> Option<Caps> {
            let input = text.units.as_slice();
            let mut m = Matcher {
                input,
                ci: self.ci,
                caps: [None; SLOTS],
                steps: STEP_BUDGET,
                depth: 0,
                aborted: false,
            };
            if self.anchored {
                return self.attempt(&mut m, 0);
            }
            if let Some(prefix) = &self.prefix {
                for start in prefix.find_iter(&text.folded) {
                    if let Some(caps) = self.attempt(&mut m, start) {
                        return Some(caps);
                    }
                    if m.aborted {
                        return None;
                    }
                }
                return None;
            }
            for start in 0..=input.len() {
                if let Some(first) = self.first {
                    match input.get(start) {
                        Some(&c) if c < 128 && first & (1u128 << c) != 0 => {}
                        _ => continue,
                    }
                }
                if let Some(caps) = self.attempt(&mut m, start) {
                    return Some(caps);
                }
                if m.aborted {
                    return None;
                }
            }
            None
        }

        /// One match attempt at `start`; the captures on success.
        fn attempt<'a>(&'a self, m: &mut Matcher<'a>, start: usize) -> Option<Caps> {
            m.caps = [None; SLOTS];
            let mut end = None;
            let found = m.run(&self.node, start, &mut |_, p| {
                end = Some(p);
                true
            });
            if !found {
                return None;
            }
            let mut caps = m.caps;
            caps[0] = Some((start, end?));
            Some(caps)
        }
    }

    /// Bitmap of the ASCII units a match of `node` can start with, or `None` when unknown, not all ASCII, or when
    /// `node` can match without consuming anything. `Some` implies `node` always consumes at least one unit.
    fn first_units(node: &Node, ci: bool) -> Option<u128> {
        let mut set = 0u128;
        let mut ok = true;
        let mut add = |c: u16| {
            if c < 128 {
                set |= 1u128 << c;
                if ci {
                    set |= 1u128 << (c as u8).to_ascii_lowercase();
                    set |= 1u128 << (c as u8).to_ascii_uppercase();
                }
            } else {
                ok = false;
            }
        };
        match node {
            Node::Lit(l) => add(*l.first()?),
            Node::Class(cls) if !cls.negated => {
                for item in &cls.items {
                    let (lo, hi) = match *item {
                        Item::Range(lo, hi) if hi - lo < 16 => (lo, hi),
                        Item::Digit(false) => (u16::from(b'0'), u16::from(b'9')),
                        _ => return None,
                    };
                    for c in lo..=hi {
                        add(c);
                    }
                }
            }
            Node::Group(inner, _) => return first_units(inner, ci),
            Node::Concat(items) => return first_units(items.first()?, ci),
            Node::Repeat(rep) if rep.min >= 1 => return first_units(&rep.node, ci),
            Node::Alt(alts) => {
                for alt in alts {
                    let alt_set = first_units(alt, ci)?;
                    (0..128u16).filter(|&c| alt_set & (1u128 << c) != 0).for_each(&mut add);
                }
            }
            _ => return None,
        }
        (ok && set != 0).then_some(set)
    }

    struct Parser<'s> {
        s: &'s [u8],
        i: usize,
        groups: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }

        fn bump(&mut self) -> Option<u8> {
            let c = self.peek()?;
            self.i += 1;
            Some(c)
        }

        fn alternation(&mut self) -> Option<Node> {
            let mut alts = vec![self.concat()?];
            while self.peek() == Some(b'|') {
                self.i += 1;
                alts.push(self.concat()?);
            }
            if alts.len() == 1 {
                alts.pop()
            } else {
                Some(Node::Alt(alts))
            }
        }

        fn concat(&mut self) -> Option<Node> {
            let mut items: Vec<Node> = Vec::new();
            while let Some(c) = self.peek() {
                if c == b'|' || c == b')' {
                    break;
                }
                let groups_before = self.groups;
                let atom = self.atom()?;
                let slots = groups_before + 1..self.groups + 1;
                if let Some((min, max, greedy)) = self.quantifier()? {
                    if matches!(atom, Node::Start | Node::End | Node::WordBoundary(_)) {
                        return None;
                    }
                    items.push(Node::Repeat(Box::new(Repeat {
                        node: atom,
                        min,
                        max,
                        greedy,
                        slots,
                    })));
                } else if let (Node::Lit(new), Some(Node::Lit(prev))) = (&atom, items.last_mut()) {
                    prev.extend_from_slice(new);
                } else {
                    items.push(atom);
                }
            }
            match items.len() {
                0 => Some(Node::Empty),
                1 => items.pop(),
                _ => Some(Node::Concat(items)),
            }
        }

        /// `Some(None)`: no quantifier; `None`: syntax error.
        #[allow(clippy::type_complexity)]
        fn quantifier(&mut self) -> Option<Option<(usize, Option<usize>, bool)>> {
            let (min, max) = match self.peek() {
                Some(b'*') => (0, None),
                Some(b'+') => (1, None),
                Some(b'?') => (0, Some(1)),
                Some(b'{') => return None,
                _ => return Some(None),
            };
            self.i += 1;
            let greedy = if self.peek() == Some(b'?') {
                self.i += 1;
                false
            } else {
                true
            };
            Some(Some((min, max, greedy)))
        }

        fn atom(&mut self) -> Option<Node> {
            let c = self.bump()?;
            Some(match c {
                b'(' => {
                    let slot = if self.s.get(self.i..self.i + 2) == Some(b"?:".as_slice()) {
                        self.i += 2;
                        None
                    } else if self.peek() == Some(b'?') {
                        return None; // look-arounds are not supported
                    } else {
                        self.groups += 1;
                        Some(self.groups)
                    };
                    let inner = self.alternation()?;
                    if self.bump()? != b')' {
                        return None;
                    }
                    Node::Group(Box::new(inner), slot)
                }
                b'[' => Node::Class(self.class()?),
                b'.' => Node::Any,
                b'^' => Node::Start,
                b'$' => Node::End,
                b'\\' => {
                    let e = self.bump()?;
                    match e {
                        b'b' => Node::WordBoundary(false),
                        b'B' => Node::WordBoundary(true),
                        _ => match class_escape(e) {
                            Some(item) => Node::Class(Class {
                                negated: false,
                                items: vec![item],
                            }),
                            None => Node::Lit(vec![u16::from(char_escape(e)?)]),
                        },
                    }
                }
                b'*' | b'+' | b'?' | b')' | b'{' | b'}' | b']' | b'|' => return None,
                c if c.is_ascii() => Node::Lit(vec![u16::from(c)]),
                _ => return None,
            })
        }

        fn class(&mut self) -> Option<Class> {
            let negated = if self.peek() == Some(b'^') {
                self.i += 1;
                true
            } else {
                false
            };
            let mut items = Vec::new();
            loop {
                let c = self.bump()?;
                if c == b']' {
                    break;
                }
                let lo = if c == b'\\' {
                    let e = self.bump()?;
                    if let Some(item) = class_escape(e) {
                        items.push(item);
                        continue;
                    }
                    if e == b'b' {
                        0x08
                    } else {
                        char_escape(e)?
                    }
                } else if c.is_ascii() {
                    c
                } else {
                    return None;
                };
                let is_range = self.peek() == Some(b'-') && self.s.get(self.i + 1).is_some_and(|&n| n != b']');
                if is_range {
                    self.i += 1;
                    let h = self.bump()?;
                    let hi = if h == b'\\' {
                        let e = self.bump()?;
                        if class_escape(e).is_some() {
                            return None;
                        }
                        char_escape(e)?
                    } else if h.is_ascii() {
                        h
                    } else {
                        return None;
                    };
                    if hi < lo {
                        return None;
                    }
                    items.push(Item::Range(u16::from(lo), u16::from(hi)));
                } else {
                    items.push(Item::Range(u16::from(lo), u16::from(lo)));
                }
            }
            Some(Class { negated, items })
        }
    }

    fn class_escape(e: u8) -> Option<Item> {
        Some(match e {
            b'd' => Item::Digit(false),
            b'D' => Item::Digit(true),
            b's' => Item::Space(false),
            b'S' => Item::Space(true),
            b'w' => Item::Word(false),
            b'W' => Item::Word(true),
            _ => return None,
        })
    }

    /// The unit an escape stands for: control escapes and identity escapes of ASCII punctuation.
    fn char_escape(e: u8) -> Option<u8> {
        Some(match e {
            b't' => b'\t',
            b'n' => b'\n',
            b'r' => b'\r',
            b'f' => 0x0C,
            b'v' => 0x0B,
            e if e.is_ascii_punctuation() || e == b' ' => e,
            _ => return None,
        })
    }

    /// What the rest of the match does once a node has matched up to a position.
    type Cont<'c, 'a> = &'c mut dyn FnMut(&mut Matcher<'a>, usize) -> bool;

    struct Matcher<'a> {
        input: &'a [u16],
        ci: bool,
        caps: Caps,
        steps: u32,
        depth: u32,
        aborted: bool,
    }

    impl<'a> Matcher<'a> {
        fn unit_eq(&self, pattern: u16, c: u16) -> bool {
            pattern == c || (self.ci && pattern < 128 && c < 128 && (pattern as u8).eq_ignore_ascii_case(&(c as u8)))
        }

        /// Spends one step; true when the budget is gone (the search is then aborted).
        fn out_of_steps(&mut self) -> bool {
            if self.aborted {
                return true;
            }
            if self.steps == 0 {
                self.aborted = true;
                return true;
            }
            self.steps -= 1;
            false
        }

        fn single(&self, node: &Node, c: u16) -> bool {
            match node {
                Node::Lit(l) => l.len() == 1 && self.unit_eq(l[0], c),
                Node::Any => !is_line_terminator(c),
                Node::Class(cls) => cls.matches(c, self.ci),
                _ => false,
            }
        }

        fn run(&mut self, node: &'a Node, pos: usize, k: Cont<'_, 'a>) -> bool {
            if self.out_of_steps() {
                return false;
            }
            if self.depth >= MAX_DEPTH {
                self.aborted = true;
                return false;
            }
            self.depth += 1;
            let ok = self.run_node(node, pos, k);
            self.depth -= 1;
            ok
        }

        fn run_node(&mut self, node: &'a Node, pos: usize, k: Cont<'_, 'a>) -> bool {
            match node {
                Node::Empty => k(self, pos),
                Node::Lit(lit) => {
                    let end = pos + lit.len();
                    let ok = match self.input.get(pos..end) {
                        Some(seg) => seg.iter().zip(lit).all(|(&c, &p)| self.unit_eq(p, c)),
                        None => false,
                    };
                    ok && k(self, end)
                }
                Node::Any | Node::Class(_) => match self.input.get(pos) {
                    Some(&c) if self.single(node, c) => k(self, pos + 1),
                    _ => false,
                },
                Node::Start => pos == 0 && k(self, pos),
                Node::End => pos == self.input.len() && k(self, pos),
                Node::WordBoundary(negated) => {
                    let before = pos > 0 && self.input.get(pos - 1).is_some_and(|&c| is_word(c));
                    let after = self.input.get(pos).is_some_and(|&c| is_word(c));
                    ((before != after) != *negated) && k(self, pos)
                }
                Node::Group(inner, None) => self.run(inner, pos, k),
                Node::Group(inner, Some(slot)) => {
                    let slot = *slot;
                    self.run(inner, pos, &mut |m: &mut Matcher<'a>, end: usize| {
                        let saved = m.caps.get(slot).copied().flatten();
                        if let Some(c) = m.caps.get_mut(slot) {
                            *c = Some((pos, end));
                        }
                        if k(m, end) {
                            return true;
                        }
                        if let Some(c) = m.caps.get_mut(slot) {
                            *c = saved;
                        }
                        false
                    })
                }
                Node::Concat(items) => self.seq(items, pos, k),
                Node::Alt(alts) => {
                    for alt in alts {
                        if self.run(alt, pos, &mut *k) {
                            return true;
                        }
                        if self.aborted {
                            return false;
                        }
                    }
                    false
                }
                Node::Repeat(rep) => {
                    if matches!(&rep.node, Node::Any | Node::Class(_))
                        || matches!(&rep.node, Node::Lit(l) if l.len() == 1)
                    {
                        self.repeat_single(rep, pos, k)
                    } else {
                        self.repeat(rep, 0, pos, k)
                    }
                }
            }
        }

        fn seq(&mut self, items: &'a [Node], pos: usize, k: Cont<'_, 'a>) -> bool {
            match items.split_first() {
                None => k(self, pos),
                Some((first, rest)) => {
                    self.run(first, pos, &mut |m: &mut Matcher<'a>, p: usize| m.seq(rest, p, &mut *k))
                }
            }
        }

        /// A quantified single-unit matcher: count the run once, then try continuations without recursing per
        /// unit (keeps `.*` over a long agent flat on the stack).
        fn repeat_single(&mut self, rep: &'a Repeat, pos: usize, k: Cont<'_, 'a>) -> bool {
            let max = rep.max.unwrap_or(usize::MAX);
            let mut n = 0;
            while n < max {
                match self.input.get(pos + n) {
                    Some(&c) if self.single(&rep.node, c) => n += 1,
                    _ => break,
                }
            }
            if n < rep.min {
                return false;
            }
            if rep.greedy {
                let mut count = n;
                loop {
                    if self.out_of_steps() {
                        return false;
                    }
                    if k(self, pos + count) {
                        return true;
                    }
                    if count == rep.min {
                        return false;
                    }
                    count -= 1;
                }
            } else {
                for count in rep.min..=n {
                    if self.out_of_steps() {
                        return false;
                    }
                    if k(self, pos + count) {
                        return true;
                    }
                }
                false
            }
        }

        /// A quantified group, after `count` iterations (ECMAScript's RepeatMatcher).
        fn repeat(&mut self, rep: &'a Repeat, count: usize, pos: usize, k: Cont<'_, 'a>) -> bool {
            if count < rep.min {
                return self.iteration(rep, count, pos, false, k);
            }
            let more = rep.max.is_none_or(|max| count < max);
            if rep.greedy {
                if more && self.iteration(rep, count, pos, true, &mut *k) {
                    return true;
                }
                !self.aborted && k(self, pos)
            } else {
                if k(self, pos) {
                    return true;
                }
                !self.aborted && more && self.iteration(rep, count, pos, true, k)
            }
        }

        fn iteration(
            &mut self,
            rep: &'a Repeat,
            count: usize,
            pos: usize,
            forbid_empty: bool,
            k: Cont<'_, 'a>,
        ) -> bool {
            // Unbounded repeats past their minimum need no exact count (keeps it from growing).
            let next = if rep.max.is_none() && count >= rep.min {
                count
            } else {
                count + 1
            };
            let saved = self.caps;
            if let Some(s) = self.caps.get_mut(rep.slots.clone()) {
                s.iter_mut().for_each(|c| *c = None);
            }
            let ok = self.run(&rep.node, pos, &mut |m: &mut Matcher<'a>, p: usize| {
                if forbid_empty && p == pos {
                    return false;
                }
                m.repeat(rep, next, p, &mut *k)
            });
            if !ok {
                self.caps = saved;
            }
            ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(browser: &str, major: &str, os: &str, os_version: &str) -> UserAgentInfo {
        UserAgentInfo {
            browser_name: browser.to_owned(),
            browser_major_version: major.to_owned(),
            os_name: os.to_owned(),
            os_version: os_version.to_owned(),
        }
    }

    /// The six user agents of the shared fixtures (03, 04, 05, 06, 07, 32) with the values Butler SOS wrote.
    #[test]
    fn fixture_cases() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
                info("Chrome", "124", "Windows", "NT 10.0"),
            ),
            (
                "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
                info("Firefox", "125", "Linux", ""),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
                info("Safari", "17", "iOS", "17.4.1"),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
                info("Microsoft Edge", "124", "Windows", "NT 10.0"),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
                info("Safari", "17", "macOS", "10.15.7"),
            ),
            ("curl/8.5.0", UserAgentInfo::default()),
            ("", UserAgentInfo::default()),
        ];
        for (ua, expected) in cases {
            assert_eq!(parse_user_agent(ua), expected, "{ua}");
        }
    }

    /// `[browser.name, browser.version, os.name, os.version]` as Bowser 2.14.1 returns them (generated by running
    /// `Bowser.parse` from the npm package `bowser@2.14.1` on each string). Some agents are constructed to hit
    /// specific rules (bots, fallbacks, edge cases); the Qlik Sense client strings are illustrative forms, not
    /// captured traffic.
    const BOWSER_GOLDEN: &[(&str, [&str; 4])] = &[
        // Shared fixtures.
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", ["Chrome", "124.0.0.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", ["Firefox", "125.0", "Linux", ""]),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1", ["Safari", "17.4.1", "iOS", "17.4.1"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51", ["Microsoft Edge", "124.0.2478.51", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15", ["Safari", "17.4", "macOS", "10.15.7"]),
        ("curl/8.5.0", ["", "", "", ""]),
        // Desktop Windows 10/11 (Windows 11 also sends "Windows NT 10.0"), older Windows.
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0", ["Microsoft Edge", "120.0.0.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0", ["Firefox", "125.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/109.0.0.0", ["Opera", "109.0.0.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36 Vivaldi/6.6.3271.57", ["Vivaldi", "6.6.3271.57", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 YaBrowser/24.4.0.0 Safari/537.36", ["Yandex Browser", "24.4.0.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko", ["Internet Explorer", "11.0", "Windows", "NT 6.1"]),
        ("Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko", ["Internet Explorer", "11.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)", ["Internet Explorer", "10.0", "Windows", "NT 6.1"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.17763", ["Microsoft Edge", "18.17763", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Windows NT 6.3; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36", ["Chrome", "109.0.0.0", "Windows", "NT 6.3"]),
        ("Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36", ["Chrome", "109.0.0.0", "Windows", "NT 6.1"]),
        // macOS.
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", ["Chrome", "124.0.0.0", "macOS", "10.15.7"]),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0", ["Firefox", "125.0", "macOS", "14.4"]),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80", ["Microsoft Edge", "124.0.2478.80", "macOS", "10.15.7"]),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Safari/605.1.15", ["Safari", "16.6", "macOS", "10.15.7"]),
        // Linux and Chrome OS.
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", ["Chrome", "124.0.0.0", "Linux", ""]),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0", ["Firefox", "115.0", "Linux", ""]),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Ubuntu Chromium/83.0.4103.61 Chrome/83.0.4103.61 Safari/537.36", ["Chromium", "83.0.4103.61", "Linux", ""]),
        ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", ["Chrome", "124.0.0.0", "Chrome OS", ""]),
        // iOS / iPadOS (CriOS, FxiOS, EdgiOS; Firefox on iPad sends a Macintosh agent, which Bowser calls iOS).
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1", ["Chrome", "124.0.6367.88", "iOS", "17.4"]),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15", ["Firefox", "125.0", "iOS", "17.4"]),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 EdgiOS/124.0.2478.71 Mobile/15E148 Safari/605.1.15", ["Microsoft Edge", "124.0.2478.71", "iOS", "17.4"]),
        ("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", ["Safari", "17.4", "iOS", "17.4"]),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15", ["Firefox", "125.0", "iOS", ""]),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148", ["Safari", "", "iOS", "16.6"]),
        // Android (Chrome, Samsung Internet, Firefox, Edge, Opera, WebView, stock browser).
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36", ["Chrome", "124.0.0.0", "Android", "10"]),
        ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36", ["Chrome", "124.0.6367.82", "Android", "14"]),
        ("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36", ["Samsung Internet for Android", "24.0", "Android", "14"]),
        ("Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0", ["Firefox", "125.0", "Android", "14"]),
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 EdgA/124.0.2478.64", ["Microsoft Edge", "124.0.2478.64", "Android", "10"]),
        ("Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 OPR/81.1.4292.78848", ["Opera", "81.1.4292.78848", "Android", "13"]),
        ("Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230901.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36", ["Chrome", "124.0.6367.82", "Android", "13"]),
        ("Mozilla/5.0 (Linux; U; Android 4.0.3; ko-kr; LG-L160L Build/IML74K) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30", ["Android Browser", "4.0", "Android", "4.0.3"]),
        // Chromium derivatives without their own token, DuckDuckGo, Qlik Sense clients (illustrative), headless.
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Brave/124", ["Chrome", "124.0.0.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1 Ddg/17.4", ["DuckDuckGo", "17.4", "iOS", "17.4"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) QlikSense/14.187.4 Chrome/114.0.5735.289 Electron/25.8.4 Safari/537.36", ["Electron", "25.8.4", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/108.0.5359.215 Safari/537.36 Qlik Sense Desktop", ["Chrome", "108.0.5359.215", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 QlikSenseMobile/3.4.0", ["Safari", "", "iOS", "17.4"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0 (Qlik Sense Mobile)", ["Microsoft Edge", "124.0.0.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.109 Safari/537.36", ["Chrome", "120.0.6099.109", "Windows", "NT 10.0"]),
        // Bots: Bowser names them, so Butler SOS reports them.
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", ["Googlebot", "2.1", "", ""]),
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; +http://www.google.com/bot.html) Chrome/124.0.6367.155 Safari/537.36", ["Googlebot", "2.1", "", ""]),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", ["BingCrawler", "2.0", "", ""]),
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)", ["ClaudeBot", "1.0", "", ""]),
        // Tools: no browser unless the agent has a space after "name/version" (Bowser's generic fallback).
        ("Wget/1.21.4", ["", "", "", ""]),
        ("python-requests/2.31.0", ["", "", "", ""]),
        ("PostmanRuntime/7.37.3", ["", "", "", ""]),
        ("Java/17.0.10", ["", "", "", ""]),
        ("okhttp/4.12.0", ["", "", "", ""]),
        ("Apache-HttpClient/4.5.14 (Java/17.0.10)", ["Apache-HttpClient", "4.5.14", "", ""]),
        ("curl/7.64.1 (x86_64-pc-linux-gnu) libcurl/7.64.1", ["curl", "7.64.1", "Linux", ""]),
        ("Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1.19041.4291", ["Mozilla", "5.0", "Windows", "NT"]),
        ("Mozilla/5.0 (X11; Linux x86_64)", ["Mozilla", "5.0", "Linux", ""]),
        ("Mozilla/5.0", ["", "", "", ""]),
        // Assorted rules and edge cases.
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Teams/24060.3102.2733.5911/49", ["Chrome", "124.0.0.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 Edge/15.15063", ["Microsoft Edge", "15.15063", "Windows Phone", "10.0"]),
        ("Mozilla/5.0 (Windows NT 5.1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/49.0.2623.112 Safari/537.36", ["Chrome", "49.0.2623.112", "Windows", "NT 5.1"]),
        ("Mozilla/5.0 (Windows NT 6.2; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/30.0.1599.17 Safari/537.36", ["Chrome", "30.0.1599.17", "Windows", "NT 6.2"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/109.0.0.0 (Edition std-1)", ["Opera", "109.0.0.0", "Windows", "NT 10.0"]),
        ("Opera/9.80 (Windows NT 6.1; WOW64) Presto/2.12.388 Version/12.18", ["Opera", "12.18", "Windows", "NT 6.1"]),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80", ["Microsoft Edge", "124.0.2478.80", "Linux", ""]),
        ("Mozilla/5.0 (Linux; Android 12; CrOS) AppleWebKit/537.36", ["Android Browser", "", "Android", "12"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.124 Electron/29.3.1 Safari/537.36", ["Electron", "29.3.1", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Linux; Android 11; M2101K6G) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 Mobile Safari/537.36 XiaoMi/MiuiBrowser/14.6.1-gn", ["Miui", "14.6.1", "Android", "11"]),
        ("Mozilla/5.0 (Linux; U; Android 10; zh-CN; V2034A Build/QP1A.190711.020) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/78.0.3904.108 UCBrowser/13.4.0.1306 Mobile Safari/537.36", ["UC Browser", "4.0", "Android", "10"]),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/459.0.0.38.105]", ["Safari", "", "iOS", "17.4"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51 'quoted'", ["Microsoft Edge", "124.0.2478.51", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/10 Safari/605.1.15", ["Safari", "10", "macOS", "10.15.7"]),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/9 Safari/605.1.15", ["Safari", "", "macOS", "10.15.7"]),
        ("Mozilla/5.0 (Windows 98; Win 9x 4.90) Gecko/20100101 Firefox/3.6", ["Firefox", "3.6", "Windows", ""]),
        ("Mozilla/5.0 (PlayStation 4 5.55) AppleWebKit/601.2 (KHTML, like Gecko)", ["PlayStation 4", "", "PlayStation 4", "5.55"]),
        ("Mozilla/5.0 (Linux; Tizen 2.3; SAMSUNG SM-Z130H) AppleWebKit/537.3 (KHTML, like Gecko) SamsungBrowser/1.0 Mobile Safari/537.3", ["Samsung Internet for Android", "1.0", "Tizen", "2.3"]),
        ("Mozilla/5.0 (Linux; Android 10; HarmonyOS; OpenHarmony 4.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99.0.4844.88 Mobile Safari/537.36", ["Chrome", "99.0.4844.88", "HarmonyOS", "4.0"]),
        ("Mozilla/5.0 (BlackBerry; U; BlackBerry 9900; en) AppleWebKit/534.11+ (KHTML, like Gecko) Version/7.1.0.346 Mobile Safari/534.11+", ["BlackBerry", "7.1.0.346", "BlackBerry", ""]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 \t ünïcödé/1.0 (x)", ["Chrome", "124.0.0.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 GSA/1.0", ["Chrome", "124.0.0.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", ["YandexBot", "", "", ""]),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", ["FacebookExternalHit", "", "", ""]),
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", ["SlackBot", "1.0", "", ""]),
        ("Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)", ["YahooSlurp", "", "", ""]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Ddg/124.0.0.0", ["DuckDuckGo", "124.0.0.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1 OPT/4.5.0", ["Opera Touch", "4.5.0", "iOS", "17.4"]),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Safari/537.36", ["Samsung Internet for Android", "24.0", "Linux", ""]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Whale/3.25.232.19 Safari/537.36", ["NAVER Whale Browser", "3.25.232.19", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Goanna/6.5 Firefox/115.0 PaleMoon/33.0.0", ["Pale Moon", "33.0.0", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0 LibreWolf/125.0-1", ["LibreWolf", "125.0", "Linux", ""]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/1", ["Microsoft Edge", "", "Windows", "NT 10.0"]),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/1.x Safari/537.36", ["Chrome", "", "Windows", "NT 10.0"]),
    ];

    #[test]
    fn matches_bowser_golden_table() {
        assert!(BOWSER_GOLDEN.len() >= 25);
        for (ua, [name, version, os, os_version]) in BOWSER_GOLDEN {
            let detailed = parse_detailed(ua);
            let got = [
                detailed.browser_name.as_str(),
                detailed.browser_version.as_str(),
                detailed.os_name.as_str(),
                detailed.os_version.as_str(),
            ];
            assert_eq!(got, [*name, *version, *os, *os_version], "{ua}");
            let info = parse_user_agent(ua);
            assert_eq!(info.browser_major_version, leading_digits(version), "{ua}");
            assert_eq!(info.browser_name, *name);
            assert_eq!(info.os_name, *os);
            assert_eq!(info.os_version, *os_version);
        }
    }

    #[test]
    fn major_version_is_leading_digits() {
        assert_eq!(leading_digits("124.0.2478.51"), "124");
        assert_eq!(leading_digits("17"), "17");
        assert_eq!(leading_digits("1.0.13.81_10003810"), "1");
        assert_eq!(leading_digits("x1"), "");
        assert_eq!(leading_digits(""), "");
    }

    #[test]
    fn every_pattern_compiles() {
        let mut sources: Vec<&str> = vec![
            COMMON,
            LIKE_ANDROID,
            ANDROID,
            DDG_TEST,
            QQ_LITE,
            GENERIC_WITH_DEVICE,
            GENERIC_WITHOUT_DEVICE,
        ];
        let mut add = |test: &TestSpec, version: &[VerSpec]| {
            if let TestSpec::AnyOf(list) = test {
                sources.extend(list.iter().copied());
            }
            for v in version {
                match v {
                    VerSpec::First(s) | VerSpec::Second(s) => sources.push(s),
                }
            }
        };
        for spec in BROWSERS {
            add(&spec.test, spec.version);
        }
        for spec in OSES {
            add(&spec.test, spec.version);
        }
        for src in sources {
            assert!(js_regex::Regex::new(src).is_some(), "does not compile: {src}");
        }
    }

    fn group_text(pattern: &str, subject: &str, n: usize) -> Option<String> {
        let text = js_regex::Text::new(subject);
        let rx = js_regex::Regex::new(pattern).expect("pattern compiles");
        rx.group(&text, n).map(|r| String::from_utf16_lossy(&text.units()[r]))
    }

    #[test]
    fn regex_semantics_follow_javascript() {
        // Leftmost match, then greedy: `\d+(\.?_?\d+)+` needs two digits.
        assert_eq!(group_text(COMMON, "Version/5 x Version/6.1", 1).as_deref(), Some("6.1"));
        assert_eq!(group_text(COMMON, "Version/10_3._4", 1).as_deref(), Some("10_3._4"));
        // Case folding is ASCII-only: U+017F (long s) never matches `s`, the Kelvin sign never matches `k`.
        assert!(group_text(r"/safari/i", "SAFARI", 0).is_some());
        assert!(group_text(r"/safari/i", "\u{17f}afari", 0).is_none());
        assert!(group_text(r"/k-meleon/i", "\u{212a}-meleon", 0).is_none());
        // `\s` is Unicode white space; `.` stops at line terminators.
        assert_eq!(
            group_text(r"/os (\d+([_\s]\d+)*) like mac os x/i", "OS 17\u{a0}4 like Mac OS X", 1).as_deref(),
            Some("17\u{a0}4")
        );
        assert!(group_text(r"/^(.*)\/(.*) /", "a\nb/1 ", 1).is_none());
        assert_eq!(group_text(r"/^(.*)\/(.*) /", "a/b/1 2 ", 1).as_deref(), Some("a/b"));
        // Lazy quantifiers and an unmatched optional group.
        assert_eq!(group_text(r"/a(.*?)b/", "axxbyyb", 1).as_deref(), Some("xx"));
        assert_eq!(group_text(r"/Windows ((NT|XP)( \d\d?.\d)?)/i", "Windows NT", 3), None);
        // A repeated group's capture is the last iteration's.
        assert_eq!(group_text(r"/(?:(a)|b)+/", "ab", 1), None);
        assert_eq!(group_text(r"/(\.\d)+/", ".1.2", 1).as_deref(), Some(".2"));
        // Non-BMP characters are two units, as in JavaScript: `.` matches half of one.
        assert!(group_text(r"/x.y/", "x\u{1F600}y", 0).is_none());
        assert!(group_text(r"/x..y/", "x\u{1F600}y", 0).is_some());
        // Unsupported syntax is rejected, not misread.
        assert!(js_regex::Regex::new(r"/a{2}/").is_none());
        assert!(js_regex::Regex::new(r"/(?=a)/").is_none());
        assert!(js_regex::Regex::new(r"/a/g").is_none());
    }

    #[test]
    fn pathological_agents_neither_panic_nor_overflow() {
        let run = || {
            let agents = [
                format!("Mozilla/5.0 ({} (", "/".repeat(5000)),
                format!("Version/{}x Safari", "1.".repeat(3000)),
                format!("Mozilla/5.0 (Macintosh; Intel Mac OS X {}1)", "1_".repeat(3000)),
                format!("Firefox/{}2", "1._".repeat(3000)),
                "( ".repeat(4000),
                "\u{1F600}".repeat(2000),
            ];
            for ua in &agents {
                let _ = parse_user_agent(ua);
            }
            // Deterministic pseudo-random byte soup (xorshift), including control and non-ASCII characters.
            let mut state = 0x2545_f491_4f6c_dd1d_u64;
            let alphabet: Vec<char> = "aZ09._/ ()\t\n;:-+ÄéK\u{17f}\u{2028}\u{a0}\u{1F600}".chars().collect();
            for _ in 0..2000 {
                let mut ua = String::new();
                for _ in 0..(state % 200) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ua.push(alphabet[(state % alphabet.len() as u64) as usize]);
                }
                let _ = parse_user_agent(&ua);
            }
        };
        // The default stack size of a spawned std thread.
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(run)
            .expect("spawn");
        assert!(handle.join().is_ok());
    }

    #[test]
    fn cache_returns_the_same_arc_and_caches_misses() {
        let chrome = BOWSER_GOLDEN[0].0;
        let mut cache = UserAgentCache::new(16);
        let first = cache.lookup(chrome).expect("a browser");
        let second = cache.lookup(chrome).expect("a browser");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(*first, parse_user_agent(chrome));
        assert_eq!(cache.len(), 1);

        assert_eq!(cache.lookup(""), None);
        assert_eq!(cache.len(), 1, "empty agents are not cached");
        assert_eq!(cache.lookup("curl/8.5.0"), None);
        assert_eq!(cache.lookup("curl/8.5.0"), None);
        assert_eq!(cache.len(), 2, "non-browser agents are cached as None");
    }

    #[test]
    fn cache_stays_bounded() {
        let mut cache = UserAgentCache::new(8);
        let mut kept = Vec::new();
        for i in 0..100 {
            let ua = format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/{i}.0.0.0 Safari/537.36");
            let info = cache.lookup(&ua).expect("a browser");
            assert_eq!(info.browser_major_version, i.to_string());
            assert!(cache.len() <= 8);
            kept.push(info);
        }
        assert!(!cache.is_empty());
        // Entries handed out stay valid after the cache was cleared.
        assert_eq!(kept[0].browser_name, "Chrome");

        let mut disabled = UserAgentCache::new(0);
        assert!(disabled.lookup(BOWSER_GOLDEN[0].0).is_some());
        assert!(disabled.is_empty());
    }
}
