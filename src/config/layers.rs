//! Stage one and a half of config loading: several files become one YAML tree.
//!
//! `run` and `check-config` take `--config` more than once, so a Butler SOS file can stay exactly as Butler SOS
//! needs it while a small overlay switches user events on and holds the `sense-ingest:` section. Each file is
//! parsed on its own ([`super::raw::parse`]), then, per file and before merging:
//!
//! 1. **Environment values** ([`interpolate`]): in every string value, `${VAR}` is replaced by the variable's value,
//!    `${VAR:-default}` by the value or, when unset or empty, the default; `$$` is a literal `$` (Vector's and
//!    Telegraf's convention). A `$` followed by anything else is kept as it is, so existing values with a lone `$`
//!    (passwords) read as before. An unset variable without a default is an error naming the file, the key path
//!    and the variable (never a value). At or under a secret key ([`super::secret_key_path`]) the variable is not
//!    named and the path stops at the secret's key: there, what looks like `${name}` may be part of the secret
//!    (`Pa${ss}w0rd` is a valid Butler SOS password). A value that is exactly one `${...}` and comes out as `true`
//!    or `false` becomes a boolean, so `enable: ${INFLUX_ON}` works; numbers need nothing, the validator accepts
//!    numeric strings wherever it wants an integer.
//! 2. **Relative paths** ([`anchor_paths`]): the file paths a config can name ([`PATH_KEYS`]) resolve against the
//!    folder of the file that names them, whatever the working directory.
//!
//! Then [`merge`] lays the files over each other in order: mappings merge key by key, everything else (lists,
//! scalars, null) is replaced by the later file's value. [`Origins`] remembers which file set each key last, so
//! a validation error can name the file as well as the key path.

use std::collections::BTreeMap;
use std::path::Path;

use serde_norway::{Mapping, Value};

use super::error::ConfigError;

/// Key paths whose values are file or folder paths, relative to the file that names them.
pub const PATH_KEYS: &[&[&str]] = &[
    &["sense-ingest", "spool", "dir"],
    &["sense-ingest", "appNames"],
    &["sense-ingest", "influxdbTls", "caFile"],
    &["sense-ingest", "newRelicTls", "caFile"],
    &["Butler-SOS", "mqttConfig", "tls", "caFile"],
    &["Butler-SOS", "logDirectory"],
];

/// Which file set each key path last (dot-separated, `[i]` for list items, as in [`ConfigError::path`]).
#[derive(Debug, Default)]
pub struct Origins(BTreeMap<String, String>);

impl Origins {
    /// The file that set `path`, or the closest enclosing key that one file set (a missing key is reported at a
    /// path no file has).
    pub fn file_of(&self, path: &str) -> Option<&str> {
        let mut probe = path;
        loop {
            if let Some(file) = self.0.get(probe) {
                return Some(file);
            }
            let cut = probe.rfind(['.', '['])?;
            probe = &probe[..cut];
        }
    }
}

/// Replaces environment references in every string value of `value` (see the module docs). `lookup` reads a
/// variable (the process environment in production). Problems are pushed to `errors` with `file` and the path.
pub fn interpolate(
    value: &mut Value,
    path: &str,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match value {
        Value::String(s) => {
            if !s.contains('$') {
                return;
            }
            let whole = is_one_reference(s);
            let secret = super::secret_key_path(path);
            match expand(s, lookup, secret.is_some()) {
                Ok(out) if whole && (out == "true" || out == "false") => *value = Value::Bool(out == "true"),
                Ok(out) => *s = out,
                Err(message) => errors.push(ConfigError::new(secret.unwrap_or(path), message).in_file(file)),
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), file, lookup, errors);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let child = join(path, &key_text(key));
                interpolate(item, &child, file, lookup, errors);
            }
        }
        Value::Tagged(tagged) => interpolate(&mut tagged.value, path, file, lookup, errors),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// True when `s` is exactly one `${...}` reference.
fn is_one_reference(s: &str) -> bool {
    s.starts_with("${") && s.ends_with('}') && s[2..].find('}') == Some(s.len() - 3)
}

/// `s` with every `${VAR}`, `${VAR:-default}` and `$$` replaced; the message names the first problem, and names
/// no variable when `s` is `secret` (the "name" may be part of the secret).
fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>, secret: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err("unclosed `${` (write `$$` for a literal `$`)".to_owned());
            };
            let (name, default) = match body[..end].split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (&body[..end], None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                // The text is not echoed: it may be part of a password that holds a `$`.
                return Err(
                    "a `${...}` whose variable name is not letters, digits and `_` (write `$$` for a literal `$`)"
                        .to_owned(),
                );
            }
            match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) if secret => {
                    return Err(
                        "references an environment variable that is not set (name hidden: secret value)".to_owned(),
                    )
                }
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (use `${{{name}:-default}}` for a default)"
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Makes the relative paths of [`PATH_KEYS`] in `value` relative to `dir` (the folder of the file they are in).
pub fn anchor_paths(value: &mut Value, dir: &Path) {
    for keys in PATH_KEYS {
        let found = keys.iter().try_fold(&mut *value, |node, key| node.get_mut(*key));
        if let Some(Value::String(s)) = found {
            if !s.is_empty() && Path::new(s.as_str()).is_relative() {
                *s = dir.join(s.as_str()).to_string_lossy().into_owned();
            }
        }
    }
}

/// Lays `overlay` (from `file`) over `base`: mappings merge key by key, anything else replaces. Every key path the
/// overlay sets is recorded in `origins` as coming from `file`.
pub fn merge(base: &mut Value, overlay: Value, path: &str, file: &str, origins: &mut Origins) {
    match (base, overlay) {
        (Value::Mapping(base_map), Value::Mapping(over_map)) => {
            if !path.is_empty() {
                origins.0.insert(path.to_owned(), file.to_owned());
            }
            for (key, over_value) in over_map {
                let child = join(path, &key_text(&key));
                match base_map.get_mut(&key) {
                    Some(base_value) => merge(base_value, over_value, &child, file, origins),
                    None => {
                        record(&over_value, &child, file, origins);
                        base_map.insert(key, over_value);
                    }
                }
            }
        }
        (base, overlay) => {
            // A replaced subtree: forget what earlier files set below it.
            let below: Vec<String> = origins
                .0
                .range(path.to_owned()..)
                .take_while(|(k, _)| k.starts_with(path))
                .filter(|(k, _)| matches!(k.as_bytes().get(path.len()), None | Some(b'.' | b'[')))
                .map(|(k, _)| k.clone())
                .collect();
            for k in below {
                origins.0.remove(&k);
            }
            record(&overlay, path, file, origins);
            *base = overlay;
        }
    }
}

/// Records every key path in `value` (at `path`) as set by `file`.
fn record(value: &Value, path: &str, file: &str, origins: &mut Origins) {
    if !path.is_empty() {
        origins.0.insert(path.to_owned(), file.to_owned());
    }
    match value {
        Value::Mapping(map) => {
            for (key, item) in map {
                record(item, &join(path, &key_text(key)), file, origins);
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                record(item, &format!("{path}[{i}]"), file, origins);
            }
        }
        _ => {}
    }
}

/// An empty tree to merge files into.
pub fn empty() -> Value {
    Value::Mapping(Mapping::new())
}

/// A mapping key as text (keys are strings in every file sense-ingest reads; others are shown as YAML would).
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => "?".to_owned(),
    }
}

/// `parent.key`, or `key` at the top level.
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("influx.example.com".to_owned()),
            "EMPTY" => Some(String::new()),
            "ON" => Some("true".to_owned()),
            _ => None,
        }
    }

    fn interpolated(yaml: &str) -> Result<Value, Vec<ConfigError>> {
        let mut value: Value = serde_norway::from_str(yaml).unwrap();
        let mut errors = Vec::new();
        interpolate(&mut value, "", "f.yaml", &env, &mut errors);
        if errors.is_empty() {
            Ok(value)
        } else {
            Err(errors)
        }
    }

    #[test]
    fn references_defaults_and_dollars_are_replaced() {
        let v = interpolated(
            "a: ${HOST}\nb: http://${HOST}:8086/x\nc: ${NOPE:-dflt}\nd: ${EMPTY:-dflt}\ne: ${EMPTY}\nf: p$$w\ng: a$b\n",
        )
        .unwrap();
        assert_eq!(v["a"].as_str(), Some("influx.example.com"));
        assert_eq!(v["b"].as_str(), Some("http://influx.example.com:8086/x"));
        assert_eq!(v["c"].as_str(), Some("dflt"));
        assert_eq!(v["d"].as_str(), Some("dflt"));
        assert_eq!(v["e"].as_str(), Some(""));
        assert_eq!(v["f"].as_str(), Some("p$w"));
        assert_eq!(v["g"].as_str(), Some("a$b"));
    }

    #[test]
    fn a_whole_reference_to_true_or_false_is_a_boolean() {
        let v = interpolated("a: ${ON}\nb: x${ON}\nlist: ['${HOST}']\n").unwrap();
        assert_eq!(v["a"], Value::Bool(true));
        assert_eq!(v["b"].as_str(), Some("xtrue"));
        assert_eq!(v["list"][0].as_str(), Some("influx.example.com"));
    }

    #[test]
    fn an_unset_variable_names_file_key_and_variable() {
        let errors = interpolated("Butler-SOS:\n  tags:\n    - value: ${NOT_SET}\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "f.yaml: Butler-SOS.tags[0].value: environment variable NOT_SET is not set \
             (use `${NOT_SET:-default}` for a default)"
        );
        let errors = interpolated("a: ${bad-name}\nb: ${open\n").unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[1].message.contains("unclosed"), "{}", errors[1]);
    }

    #[test]
    fn an_unset_variable_in_a_secret_names_file_and_key_but_not_the_variable() {
        // `Pa${ss}w0rd` is a valid password in Butler SOS: the "variable name" is part of the secret.
        let errors = interpolated(
            "Butler-SOS:\n  influxdbConfig:\n    v1Config:\n      auth:\n        username: ${user_var}\n        \
             password: Pa${ss}w0rd\n    v2Config:\n      token: ['x${tok}y']\n  mqttConfig:\n    \
             password: {Pa55: '${key_text}'}\n  thirdPartyToolsCredentials:\n    newRelic:\n      - \
             insertApiKey: ${nr}\n  cert:\n    clientCertPassphrase: a${pp}\n",
        )
        .unwrap_err();
        let hidden = "references an environment variable that is not set (name hidden: secret value)";
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "f.yaml: Butler-SOS.influxdbConfig.v1Config.auth.username: environment variable user_var is not set \
                 (use `${user_var:-default}` for a default)"
                    .to_owned(),
                format!("f.yaml: Butler-SOS.influxdbConfig.v1Config.auth.password: {hidden}"),
                // Inside a secret (a list item, a mapping whose key may be the secret itself): the secret's path.
                format!("f.yaml: Butler-SOS.influxdbConfig.v2Config.token: {hidden}"),
                format!("f.yaml: Butler-SOS.mqttConfig.password: {hidden}"),
                format!("f.yaml: Butler-SOS.thirdPartyToolsCredentials.newRelic[0].insertApiKey: {hidden}"),
                format!("f.yaml: Butler-SOS.cert.clientCertPassphrase: {hidden}"),
            ]
        );
        assert!(!errors[1].message.contains("ss"), "{}", errors[1]);
    }

    #[test]
    fn mappings_merge_key_by_key_and_lists_replace() {
        let mut base: Value = serde_norway::from_str("a: {x: 1, y: [1, 2], z: {k: v}}\nb: keep\n").unwrap();
        let over: Value = serde_norway::from_str("a: {y: [3], z: null, w: 2}\n").unwrap();
        let mut origins = Origins::default();
        record(&base.clone(), "", "base.yaml", &mut origins);
        merge(&mut base, over, "", "over.yaml", &mut origins);
        let want: Value = serde_norway::from_str("a: {x: 1, y: [3], z: null, w: 2}\nb: keep\n").unwrap();
        assert_eq!(base, want);
        assert_eq!(origins.file_of("a.x"), Some("base.yaml"));
        assert_eq!(origins.file_of("a.y[0]"), Some("over.yaml"));
        assert_eq!(origins.file_of("a.z"), Some("over.yaml"));
        assert_eq!(
            origins.file_of("a.z.k"),
            Some("over.yaml"),
            "replaced: the overlay's key now"
        );
        assert_eq!(origins.file_of("b"), Some("base.yaml"));
        assert_eq!(origins.file_of("a.missing"), Some("over.yaml"), "closest enclosing key");
    }

    #[test]
    fn relative_paths_resolve_against_their_file() {
        let mut v: Value = serde_norway::from_str(
            "sense-ingest: {spool: {dir: spool}, appNames: /abs/apps.csv}\nButler-SOS: {mqttConfig: {tls: {caFile: ca.pem}}}\n",
        )
        .unwrap();
        anchor_paths(&mut v, Path::new("/etc/sense-ingest"));
        assert_eq!(
            v["sense-ingest"]["spool"]["dir"].as_str(),
            Some("/etc/sense-ingest/spool")
        );
        assert_eq!(v["sense-ingest"]["appNames"].as_str(), Some("/abs/apps.csv"));
        assert_eq!(
            v["Butler-SOS"]["mqttConfig"]["tls"]["caFile"].as_str(),
            Some("/etc/sense-ingest/ca.pem")
        );
    }
}
