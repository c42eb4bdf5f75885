//! Text from the network, made safe to log.
//!
//! Datagrams, the host names, user ids and user agents inside them, and the error bodies destinations send back
//! are written into log lines. The log is line-oriented: a newline inside such text would start a line the
//! sender wrote (a forged `ERROR`), and an escape sequence would rewrite the terminal. [`Escaped`] is the one
//! place that prevents both; every log statement that prints bytes we did not write ourselves goes through it.

use std::fmt::{self, Display, Write as _};

/// Displays a string with every control character escaped, so it stays on one log line and cannot drive a
/// terminal: C0 controls (U+0000 to U+001F), DEL (U+007F) and C1 controls (U+0080 to U+009F; U+0085 is a
/// newline to some readers). `\n`, `\r` and `\t` are written as those two-character escapes, other C0 controls
/// and DEL as `\xNN`, C1 controls as `\u{NN}`. Everything else, backslashes included, is written unchanged
/// (Windows user names like `LAB\anna` stay readable), so the output is for people, not for unescaping.
///
/// ```
/// use sense_ingest::telemetry::escape::Escaped;
/// assert_eq!(Escaped("a\nb\x1b[2K").to_string(), r"a\nb\x1b[2K");
/// assert_eq!(Escaped(r"LAB\anna").to_string(), r"LAB\anna");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

/// True for the characters [`Escaped`] rewrites.
fn needs_escape(c: char) -> bool {
    c.is_control()
}

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        // Plain runs are written in one call; only the characters that need it are escaped.
        while let Some((i, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
            f.write_str(&rest[..i])?;
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Bytes from the network as text for a log line: invalid UTF-8 becomes U+FFFD, then [`Escaped`] applies.
pub fn escape_lossy(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let _ = write!(out, "{}", Escaped(&String::from_utf8_lossy(bytes)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_each_control_character_and_nothing_else() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("plain text", "plain text"),
            ("a\nb", r"a\nb"),
            ("a\r\nb", r"a\r\nb"),
            ("tab\there", r"tab\there"),
            ("\0", r"\x00"),
            ("\x1b[31mred", r"\x1b[31mred"),
            ("bell\x07", r"bell\x07"),
            ("del\x7f", r"del\x7f"),
            ("\x1f\x20", "\\x1f "),
            ("nel\u{85}line", r"nel\u{85}line"),
            ("\u{9f}", r"\u{9f}"),
            ("\u{a0}é😀", "\u{a0}é😀"),
            (r#"LAB\anna "quoted""#, r#"LAB\anna "quoted""#),
        ];
        for (input, want) in cases {
            assert_eq!(Escaped(input).to_string(), *want, "{input:?}");
        }
    }

    #[test]
    fn escaped_text_never_holds_a_control_character() {
        let all: String = (0u32..0x200).filter_map(char::from_u32).collect();
        let out = Escaped(&all).to_string();
        assert!(!out.chars().any(char::is_control), "{out:?}");
        assert!(!out.contains('\n'));
    }

    #[test]
    fn lossy_bytes_are_replaced_then_escaped() {
        assert_eq!(escape_lossy(b"a\xffb\n"), "a\u{FFFD}b\\n");
    }
}
