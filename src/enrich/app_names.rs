//! App id → app name, from an optional file (`sense-ingest.appNames`), reloaded when it changes.
//!
//! Butler SOS looks app names up in a list it refreshes from the Qlik repository; sense-ingest does not call the
//! repository, so it reads a file the administrator exports (for example with a QRS call or a Butler SOS run) and
//! re-reads it whenever its modification time or size changes. An id not in the file gets Butler SOS's placeholder
//! `<unknown app name>`.
//!
//! Formats, chosen by extension:
//! - `.csv`: one `appId,appName` per line; a first line `appId,appName` (any case) is a header; an app name may be
//!   quoted with `"` (a doubled `""` is a quote), and quoted names may contain commas.
//! - `.yaml` / `.yml`: a mapping `appId: appName`, or a list of `{id, name}`.
//!
//! Readers hold a snapshot (`Arc`) and compare a generation counter once per slab, so the per-event lookup takes
//! no lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// One loaded map.
pub type AppNameMap = HashMap<Box<str>, Arc<str>>;

/// The shared, reloadable map.
#[derive(Debug)]
pub struct AppNames {
    path: Option<PathBuf>,
    current: RwLock<Arc<AppNameMap>>,
    generation: AtomicU64,
    stamp: RwLock<Option<(SystemTime, u64)>>,
}

impl AppNames {
    /// No file: every valid app id gets the placeholder.
    pub fn empty() -> Arc<AppNames> {
        Arc::new(AppNames {
            path: None,
            current: RwLock::new(Arc::new(AppNameMap::new())),
            generation: AtomicU64::new(0),
            stamp: RwLock::new(None),
        })
    }

    /// Loads `path` now; an unreadable or malformed file is an error (at startup, before anything runs).
    pub fn from_file(path: &Path) -> Result<Arc<AppNames>, String> {
        let map = load(path)?;
        Ok(Arc::new(AppNames {
            path: Some(path.to_path_buf()),
            current: RwLock::new(Arc::new(map)),
            generation: AtomicU64::new(1),
            stamp: RwLock::new(file_stamp(path)),
        }))
    }

    /// Re-reads the file now, changed or not (SIGHUP). `Ok(false)` when there is no file; on a read or parse error
    /// the previous map stays in use.
    pub fn reload_now(&self) -> Result<bool, String> {
        let Some(path) = &self.path else { return Ok(false) };
        let stamp = file_stamp(path);
        let map = load(path)?;
        *self.stamp.write().unwrap_or_else(|e| e.into_inner()) = stamp;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(true)
    }

    /// Re-reads the file if its modification time or size changed. Returns `Ok(true)` when the map was replaced.
    /// On a read or parse error the previous map stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let Some(path) = &self.path else { return Ok(false) };
        let stamp = file_stamp(path);
        if *self.stamp.read().unwrap_or_else(|e| e.into_inner()) == stamp {
            return Ok(false);
        }
        *self.stamp.write().unwrap_or_else(|e| e.into_inner()) = stamp;
        let map = load(path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(true)
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn snapshot(&self) -> (u64, Arc<AppNameMap>) {
        let generation = self.generation.load(Ordering::Acquire);
        (
            generation,
            Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner())),
        )
    }
}

/// A reader's view: a snapshot refreshed when the shared generation moves.
#[derive(Debug)]
pub struct AppNameView {
    shared: Arc<AppNames>,
    generation: u64,
    map: Arc<AppNameMap>,
}

impl AppNameView {
    /// A view of `shared`.
    pub fn new(shared: Arc<AppNames>) -> AppNameView {
        let (generation, map) = shared.snapshot();
        AppNameView {
            shared,
            generation,
            map,
        }
    }

    /// Picks up a reloaded map (one atomic load when nothing changed).
    pub fn refresh(&mut self) {
        if self.shared.generation.load(Ordering::Acquire) != self.generation {
            let (generation, map) = self.shared.snapshot();
            self.generation = generation;
            self.map = map;
        }
    }

    /// The name for `app_id`, if the file names it.
    pub fn lookup(&self, app_id: &str) -> Option<Arc<str>> {
        self.map.get(app_id).cloned()
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn load(path: &Path) -> Result<AppNameMap, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "yaml" | "yml" => parse_yaml(&text).map_err(|e| format!("{}: {e}", path.display())),
        _ => parse_csv(&text).map_err(|e| format!("{}: {e}", path.display())),
    }
}

/// Parses `appId,appName` lines (see the module docs).
pub fn parse_csv(text: &str) -> Result<AppNameMap, String> {
    let mut map = AppNameMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((id, name)) = line.split_once(',') else {
            return Err(format!("line {}: expected `appId,appName`", i + 1));
        };
        let id = id.trim();
        if i == 0 && id.eq_ignore_ascii_case("appid") {
            continue;
        }
        let name = unquote(name.trim()).ok_or_else(|| format!("line {}: unterminated quote", i + 1))?;
        map.insert(id.into(), name.into());
    }
    Ok(map)
}

fn unquote(s: &str) -> Option<String> {
    match s.strip_prefix('"') {
        None => Some(s.to_string()),
        Some(rest) => Some(rest.strip_suffix('"')?.replace("\"\"", "\"")),
    }
}

/// Parses a YAML mapping `id: name` or a list of `{id, name}`.
pub fn parse_yaml(text: &str) -> Result<AppNameMap, String> {
    use serde_norway::Value;
    let value: Value = serde_norway::from_str(text).map_err(|e| format!("invalid yaml: {e}"))?;
    let scalar = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let mut map = AppNameMap::new();
    match value {
        Value::Null => {}
        Value::Mapping(m) => {
            for (k, v) in &m {
                let (Some(k), Some(v)) = (scalar(k), scalar(v)) else {
                    return Err("every entry must be `appId: appName` with text values".into());
                };
                map.insert(k.into(), v.into());
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let (Some(id), Some(name)) = (item.get("id").and_then(scalar), item.get("name").and_then(scalar))
                else {
                    return Err(format!("item {i}: expected `id` and `name`"));
                };
                map.insert(id.into(), name.into());
            }
        }
        _ => return Err("expected a mapping `appId: appName` or a list of {id, name}".into()),
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_header_quotes_and_commas() {
        let m = parse_csv("appId,appName\r\na1,Sales\na2,\"Budget, 2026 \"\"final\"\"\"\n\n").unwrap();
        assert_eq!(m.get("a1").map(|s| &**s), Some("Sales"));
        assert_eq!(m.get("a2").map(|s| &**s), Some("Budget, 2026 \"final\""));
        assert!(parse_csv("no comma here").is_err());
    }

    #[test]
    fn yaml_mapping_or_list() {
        assert_eq!(
            parse_yaml("a1: Sales\na2: 42\n").unwrap().get("a2").map(|s| &**s),
            Some("42")
        );
        let l = parse_yaml("- id: a1\n  name: Sales\n").unwrap();
        assert_eq!(l.get("a1").map(|s| &**s), Some("Sales"));
        assert!(parse_yaml("- id: a1\n").is_err());
    }

    #[test]
    fn a_changed_file_is_reloaded_and_views_pick_it_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apps.csv");
        std::fs::write(&path, "a1,Old\n").unwrap();
        let names = AppNames::from_file(&path).unwrap();
        let mut view = AppNameView::new(Arc::clone(&names));
        assert_eq!(view.lookup("a1").as_deref(), Some("Old"));
        assert!(!names.reload_if_changed().unwrap());
        std::fs::write(&path, "a1,New name\n").unwrap();
        assert!(names.reload_if_changed().unwrap());
        view.refresh();
        assert_eq!(view.lookup("a1").as_deref(), Some("New name"));
        // A broken file keeps the last good map.
        std::fs::write(&path, "broken").unwrap();
        assert!(names.reload_if_changed().is_err());
        view.refresh();
        assert_eq!(view.lookup("a1").as_deref(), Some("New name"));
    }
}
