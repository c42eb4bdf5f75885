//! Readers of values several sections share: Butler SOS tag lists, `writeFrequency` and `measurementName`.

use std::path::PathBuf;

use serde_norway::Value;

use super::formats::read_small_file;
use super::keys::TAG_KEYS;
use super::walk::{kind, lower_first, Node, Report};
use crate::config::{CaFile, Tag};

/// A Butler SOS tag list (`userEvents.tags`, queue metrics and event count tags, `newRelic.event.header`): items
/// `{name, value}`, with `tag` accepted as a synonym of `name`. Values may be strings, numbers or booleans (taken as
/// their text); an empty value is allowed. Null is an empty list.
pub(super) fn tag_list(node: &Node<'_>, rep: &mut Report) -> Vec<Tag> {
    tag_items(node, rep).into_iter().map(|(_, tag)| tag).collect()
}

/// Like [`tag_list`], each valid tag with its item's path (`...[i]`).
pub(super) fn tag_items(node: &Node<'_>, rep: &mut Report) -> Vec<(String, Tag)> {
    let mut tags = Vec::new();
    for item in node.list(rep) {
        let Some(entry) = item.item_mapping(rep, TAG_KEYS) else {
            continue;
        };
        let name_node = match (entry.get("name").is_set(), entry.get("tag").is_set()) {
            (true, true) => {
                rep.error(&item.path, "has both name and tag (synonyms), keep one");
                None
            }
            (false, true) => Some(entry.get("tag")),
            _ => Some(entry.get("name")),
        };
        let name = name_node.and_then(|n| {
            let name = n.text(rep);
            match &name {
                None if !n.is_set() => rep.error(&n.path, "missing"),
                Some(s) if s.is_empty() => rep.error(&n.path, "must not be empty"),
                _ => {}
            }
            name.filter(|s| !s.is_empty())
        });
        let value_node = entry.get("value");
        let value = match value_node.present() {
            None => {
                rep.error(&value_node.path, "missing");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(other) => {
                rep.error(
                    &value_node.path,
                    format!("expected a string, number or boolean, got {}", kind(other)),
                );
                None
            }
        };
        if let (Some(name), Some(value)) = (name, value) {
            tags.push((item.path, Tag { name, value }));
        }
    }
    tags
}

/// A `writeFrequency` (milliseconds, 1 to 2^32-1), `None` when not set or invalid.
pub(super) fn write_frequency(node: &Node<'_>, rep: &mut Report) -> Option<u64> {
    node.uint(rep, 1, u64::from(u32::MAX))
}

/// A `measurementName`: `None` when not set (an error when `needed` says why it is required) or invalid. It may
/// not be empty, and may not contain a control character (line protocol cannot carry one).
pub(super) fn measurement_name(node: &Node<'_>, needed: Option<&str>, rep: &mut Report) -> Option<String> {
    let name = node.text(rep);
    match &name {
        None if !node.is_set() => {
            if let Some(why) = needed {
                rep.error(&node.path, format!("missing ({why})"));
            }
            None
        }
        Some(s) if s.is_empty() => {
            rep.error(&node.path, "must not be empty");
            None
        }
        Some(s) if s.chars().any(char::is_control) => {
            rep.error(&node.path, "contains a control character");
            None
        }
        _ => name,
    }
}

/// Reads the CA file `path` (the one read of it): reported at `key` unless it is a readable regular file of at most
/// [`MAX_CA_FILE_BYTES`](super::MAX_CA_FILE_BYTES) with at least one PEM certificate.
pub(super) fn read_ca_file(key: &str, path: PathBuf, rep: &mut Report) -> Option<CaFile> {
    match read_small_file(&path) {
        Ok(pem) if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
            rep.error(
                key,
                format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            );
            None
        }
        Ok(pem) => Some(CaFile { path, pem: pem.into() }),
        Err(err) => {
            rep.error(
                key,
                format!("cannot read {}: {}", path.display(), lower_first(&err.to_string())),
            );
            None
        }
    }
}
