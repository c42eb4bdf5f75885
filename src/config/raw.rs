//! Stage one of config loading: YAML text to a generic YAML tree.
//!
//! A Butler SOS file has many sections sense-ingest never reads, so the file is not deserialized into a serde
//! mirror of the whole schema. It is parsed into a [`Value`] tree and [`super::validate`] walks only the sections
//! we read, naming every key it rejects with its full path. Keeping the YAML crate behind [`parse`] means it can be
//! swapped without touching validation.

use serde_norway::Value;

use super::error::ConfigError;

/// Parses `text` as one YAML document, with `<<` merge keys applied (the `config` npm package Butler SOS uses
/// reads YAML with js-yaml, which supports them).
///
/// On a syntax error, the returned [`ConfigError`] has `origin` (the file name, or `<config>` for text) as its path
/// and the parser's message, which includes the line and column. The parser's messages never quote scalar values,
/// so a secret next to a syntax error does not leak into the message.
pub fn parse(text: &str, origin: &str) -> Result<Value, ConfigError> {
    let mut value: Value = serde_norway::from_str(text).map_err(|err| syntax_error(&err, origin))?;
    value.apply_merge().map_err(|err| syntax_error(&err, origin))?;
    Ok(value)
}

/// Converts a parser error into a [`ConfigError`] at `origin`.
fn syntax_error(err: &serde_norway::Error, origin: &str) -> ConfigError {
    let message = match err.location() {
        // The parser's text usually carries the location already; say it once, up front, in a fixed form.
        Some(loc) => {
            let text = err.to_string();
            let at = format!(" at line {} column {}", loc.line(), loc.column());
            format!(
                "invalid yaml at line {}, column {}: {}",
                loc.line(),
                loc.column(),
                text.replace(&at, "")
            )
        }
        None => format!("invalid yaml: {err}"),
    };
    ConfigError::new(origin, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_mapping() {
        let value = parse("a: 1\nb: [x, y]\n", "<config>").unwrap();
        assert!(value.as_mapping().is_some());
    }

    #[test]
    fn empty_text_is_null() {
        assert_eq!(parse("", "<config>").unwrap(), Value::Null);
    }

    #[test]
    fn syntax_error_names_origin_line_and_column() {
        let err = parse("a: 1\n b: [\n", "bsos.yaml").unwrap_err();
        assert_eq!(err.path, "bsos.yaml");
        assert!(err.message.starts_with("invalid yaml at line "), "{}", err.message);
    }

    #[test]
    fn merge_keys_are_applied() {
        let value = parse("base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n", "<config>").unwrap();
        assert_eq!(value["derived"]["x"].as_u64(), Some(1));
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = parse("a: 1\na: 2\n", "<config>").unwrap_err();
        assert!(err.message.contains("duplicate"), "{}", err.message);
    }
}
