//! The path-aware walker: a [`Node`] is a value (or its absence) plus its full key path, and each typed reader
//! either returns the value or records a [`ConfigError`] at that path in the [`Report`] and returns nothing.
//! Also the message helpers (unknown keys with a suggestion, quotable descriptions of values).

use std::time::Duration;

use serde_norway::{Mapping, Value};

use super::formats::{parse_duration, ENGINE_DURATION_UNITS};
use crate::config::{ConfigError, Secret};

/// Collected errors and not-implemented key paths.
#[derive(Default)]
pub(super) struct Report {
    pub(super) errors: Vec<ConfigError>,
    pub(super) not_implemented: Vec<String>,
    /// A file for `run` or `check-config` (not a fragment in a test): `userEvents.enable` must be true.
    pub(super) runnable: bool,
}

impl Report {
    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    /// Records a setting that is accepted and switched on but not implemented (none today; kept so the next
    /// such setting is reported the same way).
    #[allow(dead_code)]
    pub(super) fn not_implemented(&mut self, path: &str) {
        self.not_implemented.push(path.to_owned());
    }
}

/// A value in the tree (or its absence) with its full key path.
#[derive(Clone)]
pub(super) struct Node<'a> {
    pub(super) value: Option<&'a Value>,
    pub(super) path: String,
}

/// A mapping in the tree (empty when absent, null or of the wrong type) with its key path.
pub(super) struct Map<'a> {
    pub(super) map: Option<&'a Mapping>,
    pub(super) path: String,
}

/// `parent.key`, or `key` at the top level.
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl<'a> Map<'a> {
    /// The value at `key` (absent if not set).
    pub(super) fn get(&self, key: &str) -> Node<'a> {
        Node {
            value: self.map.and_then(|m| m.get(key)),
            path: join(&self.path, key),
        }
    }
}

impl<'a> Node<'a> {
    /// The value, with YAML null read as absent. A tagged value (`!tag x`) is kept as such, so every typed reader
    /// rejects it (js-yaml, which Butler SOS uses, rejects unknown tags too).
    pub(super) fn present(&self) -> Option<&'a Value> {
        self.value.filter(|v| !matches!(v, Value::Null))
    }

    /// True when a non-null value is set.
    pub(super) fn is_set(&self) -> bool {
        self.present().is_some()
    }

    /// This node as a mapping whose keys must all be in `keys` (each other key is an error). Absent or null reads
    /// as an empty mapping; another type is an error and also reads as empty.
    pub(super) fn mapping(&self, rep: &mut Report, keys: &[&str]) -> Map<'a> {
        let map = self.as_mapping(rep);
        if let Some(map) = map {
            check_keys(map, &self.path, keys, rep);
        }
        Map {
            map,
            path: self.path.clone(),
        }
    }

    /// Like [`Node::mapping`], but any key is accepted (for sections where we read only some keys).
    pub(super) fn open_mapping(&self, rep: &mut Report) -> Map<'a> {
        Map {
            map: self.as_mapping(rep),
            path: self.path.clone(),
        }
    }

    /// A list item that must be a mapping with keys from `keys`: `None` (and an error) when it is not one.
    pub(super) fn item_mapping(&self, rep: &mut Report, keys: &[&str]) -> Option<Map<'a>> {
        match self.value {
            Some(Value::Mapping(map)) => {
                check_keys(map, &self.path, keys, rep);
                Some(Map {
                    map: Some(map),
                    path: self.path.clone(),
                })
            }
            other => {
                rep.error(
                    &self.path,
                    format!("expected a mapping, got {}", describe(other.unwrap_or(&Value::Null))),
                );
                None
            }
        }
    }

    pub(super) fn as_mapping(&self, rep: &mut Report) -> Option<&'a Mapping> {
        match self.present()? {
            Value::Mapping(map) => Some(map),
            other => {
                rep.error(&self.path, format!("expected a mapping, got {}", describe(other)));
                None
            }
        }
    }

    /// The items of a list, each with its `[i]` path. Absent or null is an empty list.
    pub(super) fn list(&self, rep: &mut Report) -> Vec<Node<'a>> {
        match self.present() {
            None => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, value)| Node {
                    value: Some(value),
                    path: format!("{}[{i}]", self.path),
                })
                .collect(),
            Some(other) => {
                rep.error(&self.path, format!("expected a list, got {}", describe(other)));
                Vec::new()
            }
        }
    }

    /// A boolean, `default` when not set.
    pub(super) fn bool_or(&self, rep: &mut Report, default: bool) -> bool {
        match self.present() {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                rep.error(&self.path, format!("expected true or false, got {}", describe(other)));
                default
            }
        }
    }

    /// A string (a number is taken as its text), `None` when not set or of the wrong type.
    pub(super) fn text(&self, rep: &mut Report) -> Option<String> {
        match self.present()? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            other => {
                rep.error(&self.path, format!("expected a string, got {}", describe(other)));
                None
            }
        }
    }

    /// A string, `default` when not set.
    pub(super) fn text_or(&self, rep: &mut Report, default: &str) -> String {
        self.text(rep).unwrap_or_else(|| default.to_owned())
    }

    /// A string that must be set and non-empty when `needed` is `Some(why)`; otherwise like [`Node::text`] with
    /// an empty default.
    pub(super) fn needed_text(&self, rep: &mut Report, needed: Option<&str>) -> String {
        let value = self.text(rep);
        if let Some(why) = needed {
            match &value {
                None if !self.is_set() => rep.error(&self.path, format!("missing ({why})")),
                Some(s) if s.trim().is_empty() => rep.error(&self.path, format!("must not be empty ({why})")),
                _ => {}
            }
        }
        value.unwrap_or_default()
    }

    /// A secret: like [`Node::needed_text`], but no message ever shows the value.
    pub(super) fn needed_secret(&self, rep: &mut Report, needed: Option<&str>) -> Secret {
        debug_assert_eq!(
            crate::config::secret_key_path(&self.path),
            Some(self.path.as_str()),
            "a secret is read at a key of SECRET_KEYS"
        );
        let value = match self.present() {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                rep.error(
                    &self.path,
                    format!("expected a string, got {} (value not shown)", kind(other)),
                );
                None
            }
        };
        if let Some(why) = needed {
            match &value {
                None if !self.is_set() => rep.error(&self.path, format!("missing ({why})")),
                Some(s) if s.trim().is_empty() => rep.error(&self.path, format!("must not be empty ({why})")),
                _ => {}
            }
        }
        Secret::new(value.unwrap_or_default())
    }

    /// A non-negative integer (a YAML integer, an integral float or a numeric string), without range check or
    /// error; `None` also when not set.
    pub(super) fn integer(&self) -> Option<u64> {
        match self.present()? {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                    .map(|f| f as u64)
            }),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
    }

    /// An integer in `min..=max`, `None` when not set or invalid.
    pub(super) fn uint(&self, rep: &mut Report, min: u64, max: u64) -> Option<u64> {
        let value = self.present()?;
        match self.integer() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                rep.error(
                    &self.path,
                    format!("expected an integer {min}-{max}, got {}", describe(value)),
                );
                None
            }
        }
    }

    /// A port number 1-65535 (0 too with `allow_zero`, meaning "any free port"), `None` when not set or invalid.
    pub(super) fn port(&self, rep: &mut Report, allow_zero: bool) -> Option<u16> {
        let value = self.present()?;
        let min = u64::from(!allow_zero);
        match self
            .integer()
            .filter(|n| (min..=65535).contains(n))
            .and_then(|n| u16::try_from(n).ok())
        {
            Some(port) => Some(port),
            None => {
                rep.error(
                    &self.path,
                    format!("expected a port number 1-65535, got {}", describe(value)),
                );
                None
            }
        }
    }

    /// An engine duration: an integer (milliseconds) or text like `250ms`, `10s`, `1m30s`.
    pub(super) fn duration(&self, rep: &mut Report) -> Option<Duration> {
        let value = self.present()?;
        let parsed = match value {
            Value::Number(_) => self.integer().map(Duration::from_millis),
            Value::String(s) => parse_duration(s, ENGINE_DURATION_UNITS, Some(1)),
            _ => None,
        };
        if parsed.is_none() {
            rep.error(
                &self.path,
                format!(
                    "expected a duration like 250ms, 10s or 1m (units ms, s, m, h, d; a bare integer is milliseconds), \
                     got {}",
                    describe(value)
                ),
            );
        }
        parsed
    }

    /// One of `options` (matched exactly), `None` when not set or invalid.
    pub(super) fn choice<T: Copy>(&self, rep: &mut Report, options: &[(&str, T)]) -> Option<T> {
        let value = self.present()?;
        let found = match value {
            Value::String(s) => options.iter().find(|(name, _)| name == s).map(|(_, v)| *v),
            _ => None,
        };
        if found.is_none() {
            let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
            rep.error(
                &self.path,
                format!("expected one of {}, got {}", names.join(", "), describe(value)),
            );
        }
        found
    }
}

/// Reports each key of `map` that is not in `keys`.
pub(super) fn check_keys(map: &Mapping, path: &str, keys: &[&str], rep: &mut Report) {
    for key in map.keys() {
        let (name, is_known) = match key {
            Value::String(s) => (s.clone(), keys.contains(&s.as_str())),
            other => (describe(other), false),
        };
        if !is_known {
            let mut message = format!("unknown key, expected one of: {}", keys.join(", "));
            if let Some(hint) = suggest(&name, keys) {
                message.push_str(&format!(" (did you mean {hint}?)"));
            }
            rep.error(&join(path, &name), message);
        }
    }
}

/// The accepted key closest to a misspelt `key`: equal ignoring case, or within two edits.
pub(super) fn suggest<'k>(key: &str, keys: &[&'k str]) -> Option<&'k str> {
    if let Some(k) = keys.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        return Some(k);
    }
    keys.iter()
        .map(|k| (edit_distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2 && k.len() > 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars (keys are short, so the simple O(n·m) table is fine).
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur.push(substitution.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A short, quotable description of a (non-secret) value for error messages.
pub(super) fn describe(value: &Value) -> String {
    const MAX_CHARS: usize = 60;
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() > MAX_CHARS => {
            let short: String = s.chars().take(MAX_CHARS).collect();
            format!("{short:?}…")
        }
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

/// The type of a value, for messages about secrets (which must not show the value).
pub(super) fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(_) => "a number".to_owned(),
        Value::String(_) => "a string".to_owned(),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        // `!secret` would put the secret in the tag: never show it.
        Value::Tagged(_) => "a tagged value".to_owned(),
    }
}

/// `text` with its first character lowercased (for OS error texts in our lowercase messages).
pub(super) fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Quietly follows `keys` from `value` and reads a boolean: `false` when any step is missing or of another type
/// (the proper read, later, reports type errors). Used to decide whether a feature is in use before its section
/// is validated.
pub(super) fn peek_bool(value: Option<&Value>, keys: &[&str]) -> bool {
    peek(value, keys).and_then(Value::as_bool).unwrap_or(false)
}

/// Quietly follows `keys` from `value`.
pub(super) fn peek<'a>(value: Option<&'a Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(value?, |v, key| v.as_mapping()?.get(*key))
}
