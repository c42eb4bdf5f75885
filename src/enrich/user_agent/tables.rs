//! Bowser 2.14.1's descriptor lists (`src/parser-browsers.js` and `src/parser-os.js`), transcribed in order.
//! Patterns are JavaScript regex literals, copied verbatim; [`super`] compiles and runs them.

/// How a descriptor decides that it applies.
pub(super) enum TestSpec {
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
pub(super) enum VerSpec {
    /// `Utils.getFirstMatch(re, ua)`: capture group 1.
    First(&'static str),
    /// `Utils.getSecondMatch(re, ua)`: capture group 2.
    Second(&'static str),
}

/// How a browser descriptor names the browser.
#[derive(Clone, Copy)]
pub(super) enum NameSpec {
    Fixed(&'static str),
    /// `/qqbrowserlite/i.test(ua) ? 'QQ Browser Lite' : 'QQ Browser'`.
    QqBrowser,
    /// The generic fallback: `name/version` from the start of the agent.
    Generic,
}

pub(super) struct BrowserSpec {
    pub(super) name: NameSpec,
    pub(super) test: TestSpec,
    pub(super) version: &'static [VerSpec],
}

pub(super) struct OsSpec {
    pub(super) name: &'static str,
    pub(super) test: TestSpec,
    pub(super) version: &'static [VerSpec],
    /// Apply `.replace(/[_\s]/g, '.')` to the version (macOS, iOS).
    pub(super) dotted: bool,
}

/// Bowser's `commonVersionIdentifier`.
pub(super) const COMMON: &str = r"/version\/(\d+(\.?_?\d+)+)/i";

pub(super) const fn b(name: &'static str, test: &'static [&'static str], version: &'static [VerSpec]) -> BrowserSpec {
    BrowserSpec {
        name: NameSpec::Fixed(name),
        test: TestSpec::AnyOf(test),
        version,
    }
}

use VerSpec::{First as F, Second as S};

/// `src/parser-browsers.js` of Bowser 2.14.1, in order.
pub(super) static BROWSERS: &[BrowserSpec] = &[
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

pub(super) const fn os(
    name: &'static str,
    test: &'static [&'static str],
    version: &'static [VerSpec],
    dotted: bool,
) -> OsSpec {
    OsSpec {
        name,
        test: TestSpec::AnyOf(test),
        version,
        dotted,
    }
}

/// `src/parser-os.js` of Bowser 2.14.1, in order (names from `OS_MAP` in `src/constants.js`).
pub(super) static OSES: &[OsSpec] = &[
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
pub(super) const LIKE_ANDROID: &str = r"/like android/i";
pub(super) const ANDROID: &str = r"/android/i";
pub(super) const DDG_TEST: &str = r"/\sDdg\/[\d.]+$/i";
pub(super) const QQ_LITE: &str = r"/qqbrowserlite/i";
pub(super) const GENERIC_WITH_DEVICE: &str = r"/^(.*)\/(.*)[ \t]\((.*)/";
pub(super) const GENERIC_WITHOUT_DEVICE: &str = r"/^(.*)\/(.*) /";
