//! User agents built to make a regular-expression matcher work hard, for the benchmark (`benches/user_agent.rs`),
//! the step-count test beside the matcher and the hostile-traffic integration test.
//!
//! Each is at most [`MAX_UNITS`] UTF-16 code units: the message field is cut to 1000 units before the user agent
//! is taken from it, so no real user agent is longer. Each targets a shape that costs a backtracking matcher
//! time: a greedy `.*` that must give back a long run unit by unit (the generic `name/version (` fallback), a
//! lazy `.*?` retried at many starts (`Macintosh(.*?) FxiOS(.*?)\/`), repeated groups with long runs of
//! digits, dots and underscores (`(\d+(\.?_?\d+)+)`, which is ambiguous), many near-misses of the
//! literals and alternations the descriptor lists start with, and long runs of a letter that begins some
//! alternative (each unit a candidate start), after a `/ (` that lets the generic fallback run in full.

/// The longest user agent the parser can hand over (the message limit, in UTF-16 code units).
pub const MAX_UNITS: usize = 1000;

/// `(name, user agent)` pairs, each at most [`MAX_UNITS`] UTF-16 code units long.
pub fn user_agents() -> Vec<(&'static str, String)> {
    let cut = |s: String| -> String {
        let mut units = 0;
        s.chars()
            .take_while(|c| {
                units += c.len_utf16();
                units <= MAX_UNITS
            })
            .collect()
    };
    let rep = |s: &str| cut(s.repeat(MAX_UNITS / s.len() + 1));
    vec![
        // The example: `^(.*)\/(.*)[ \t]\((.*)` gives back every `/` and rescans the rest each time.
        ("issue_1paren_960slash", format!("1({}", "/".repeat(960))),
        // The same, with a `(` after the slashes: the pattern's literals are all there in order, so the literal
        // prefilter lets it through and the matcher itself must be linear.
        ("slashes_then_paren", format!("1({}x(", "/".repeat(MAX_UNITS - 4))),
        ("slashes", "/".repeat(MAX_UNITS)),
        ("paren_then_slash_space", cut(format!("({}", "/ ".repeat(MAX_UNITS)))),
        ("slash_space_tab", rep("a/ \t")),
        ("parens", "(".repeat(MAX_UNITS)),
        ("digits", "1".repeat(MAX_UNITS)),
        ("spaces", format!("a{}a", " ".repeat(MAX_UNITS - 2))),
        ("version_runs", rep("Version/1")),
        (
            "version_digits_dots",
            cut(format!("Version/{}", "1._".repeat(MAX_UNITS))),
        ),
        (
            "firefox_long_version",
            cut(format!("Firefox/{}", "1.".repeat(MAX_UNITS))),
        ),
        (
            "mac_os_x_underscores",
            cut(format!("Macintosh; Intel Mac OS X {}", "1_".repeat(MAX_UNITS))),
        ),
        (
            "os_like_mac_near_miss",
            cut(format!("iPhone; CPU OS {}like mac", "1 ".repeat(MAX_UNITS))),
        ),
        ("macintosh_fxios", rep("Macintosh FxiOS")),
        // `.` stops at U+2028 (a line terminator the parser keeps): every `Macintosh`/` FxiOS` pair is tried.
        (
            "macintosh_fxios_line_separator",
            format!("{}\u{2028}/", "Macintosh FxiOS".repeat(65)),
        ),
        ("ddg_dots", cut(format!(" Ddg/{}", ".1".repeat(MAX_UNITS)))),
        ("se_dots", rep("se 1.1.")),
        ("windows_nt", rep("Windows NT 1")),
        (
            "alternation_near_misses",
            rep("edgi ipo webo hpw0 bb1 opr opio mxio crmo fxio claude-x rim s "),
        ),
        (
            "mixed_tokens",
            rep("Version/1.1 Windows NT 1 os 1_1 like Macintosh FxiOS Ddg/1. se 1.1 android-1 ("),
        ),
        ("astral", "\u{1F600}".repeat(MAX_UNITS / 2)),
        // `/ (` satisfies the generic fallback `^(.*)\/(.*)[ \t]\((.*)`, whose greedy `.*` then runs over the whole
        // agent and back, and every unit after it is a letter that starts an alternative of some test
        // (`(ipod|iphone|ipad)`, `firefox|iceweasel|fxios`, `Maxthon|mxios`, `blackberry|\bbb\d+`,
        // `chrome|crios|crmo`, ...), so a matcher that tries each such position as a start pays for every one.
        ("slash_space_paren_i", format!("/ ({}", "i".repeat(986))),
        ("slash_space_paren_m", format!("/ ({}", "m".repeat(MAX_UNITS - 3))),
        ("slash_space_paren_b", format!("/ ({}", "b".repeat(MAX_UNITS - 3))),
        ("slash_space_paren_c", format!("/ ({}", "c".repeat(MAX_UNITS - 3))),
        (
            "slash_space_paren_ibmc",
            cut(format!("/ ({}", "ibmc".repeat(MAX_UNITS))),
        ),
        ("slash_space_paren_slashes", format!("/ ({}", "/".repeat(MAX_UNITS - 3))),
        ("i_then_slash_space_paren", format!("{}/ (", "i".repeat(MAX_UNITS - 3))),
        (
            "i_slash_space_paren_i",
            format!("{}/ ({}", "i".repeat(MAX_UNITS / 2 - 2), "i".repeat(MAX_UNITS / 2 - 1)),
        ),
        // Dense occurrences of a start literal (`web`, `hpw` of `(web|hpw)[o0]s`, tested for the browser and for
        // the OS), each a near-miss a few units later.
        (
            "web_hpw_near_misses",
            cut(format!("Mozilla/5.0 ({}", "webhpw".repeat(MAX_UNITS))),
        ),
        // The costliest agent a random search over Bowser's tokens found: the Opera Touch test
        // `opt\/\d+(?:.?_?\d+)+` and version `(?:opt)[\s/](\d+(\.?_?\d+)+)` iterate their groups once per two
        // units, and the generic fallback runs too.
        (
            "opera_touch_underscores",
            format!("/2.xedg/rim opt/{}msie ", "1_".repeat((MAX_UNITS - 21) / 2)),
        ),
    ]
}
