//! One owner per spool folder: each destination's spool folder is named by [`crate::config::spool_folder_name`],
//! unique per destination. Folders named the old, not unique way are adopted at start-up
//! ([`adopt_legacy_spools`]) so nothing spooled before an upgrade is lost.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::info;

use crate::config::{legacy_spool_folder_name, spool_folder_name};

/// Why the engine may not adopt a spool folder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OwnershipError {
    /// An older version wrote one folder for several destinations whose names it mapped alike.
    #[error(
        "spool folder {} was written by an older version for {} together (it gave them one folder); its events \
         cannot be told apart, so none is sent: move the folder to {} to replay it for one of them, or out of \
         the spool folder to discard it",
        folder.display(), destinations.join(" and "), targets.join(" or ")
    )]
    LegacySpoolShared {
        /// The old folder.
        folder: PathBuf,
        /// The destinations it may belong to.
        destinations: Vec<String>,
        /// Their new folders.
        targets: Vec<String>,
    },
    /// Both the old folder and the new one hold data.
    #[error(
        "spool folders {} (older version) and {} (this version) both hold spooled events for {destination}: \
         replay one of them first (start the engine with the other moved away, then move it back)",
        legacy.display(), current.display()
    )]
    LegacyAndCurrentSpool {
        /// The destination.
        destination: String,
        /// The old folder.
        legacy: PathBuf,
        /// The new folder.
        current: PathBuf,
    },
    /// A file-system or socket call failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OwnershipError + 'a {
    move |source| OwnershipError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Adopts spool folders that an older version named the old way ([`legacy_spool_folder_name`]) for the
/// `destinations` configured now, by renaming each to its unique name ([`spool_folder_name`]) under `root`, so
/// its events are replayed as before the upgrade. Call it before any spool is opened.
///
/// Refuses (and changes nothing more) when an old folder may belong to several configured destinations (their
/// names mapped alike: `prod eu`, `prod_eu`), or when a destination has events in both its old and its new folder.
/// Empty old folders are removed. Returns the renames done, `(from, to)`.
pub fn adopt_legacy_spools(root: &Path, destinations: &[String]) -> Result<Vec<(PathBuf, PathBuf)>, OwnershipError> {
    let mut renamed = Vec::new();
    for destination in destinations {
        let (legacy, current) = (legacy_spool_folder_name(destination), spool_folder_name(destination));
        let (legacy_path, current_path) = (root.join(&legacy), root.join(&current));
        if legacy == current || !legacy_path.is_dir() {
            continue;
        }
        if is_empty_dir(&legacy_path)? {
            fs::remove_dir(&legacy_path).map_err(io_error("cannot remove the empty spool folder", &legacy_path))?;
            continue;
        }
        let sharing: Vec<&String> = destinations
            .iter()
            .filter(|d| legacy_spool_folder_name(d) == legacy)
            .collect();
        if sharing.len() > 1 {
            return Err(OwnershipError::LegacySpoolShared {
                folder: legacy_path,
                destinations: sharing.iter().map(|d| (*d).clone()).collect(),
                targets: sharing
                    .iter()
                    .map(|d| root.join(spool_folder_name(d)).display().to_string())
                    .collect(),
            });
        }
        if current_path.is_dir() {
            if !is_empty_dir(&current_path)? {
                return Err(OwnershipError::LegacyAndCurrentSpool {
                    destination: destination.clone(),
                    legacy: legacy_path,
                    current: current_path,
                });
            }
            fs::remove_dir(&current_path).map_err(io_error("cannot remove the empty spool folder", &current_path))?;
        }
        fs::rename(&legacy_path, &current_path).map_err(io_error("cannot rename the spool folder", &legacy_path))?;
        info!(
            sink = %destination, from = %legacy_path.display(), to = %current_path.display(),
            "spool folder of an older version adopted under its new name"
        );
        renamed.push((legacy_path, current_path));
    }
    Ok(renamed)
}

fn is_empty_dir(dir: &Path) -> Result<bool, OwnershipError> {
    Ok(fs::read_dir(dir)
        .map_err(io_error("cannot read the spool folder", dir))?
        .next()
        .is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spool folder with one segment file holding `content`.
    fn spool_with(dir: &Path, content: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("seg-00000000000000000000.spool"), content).unwrap();
    }

    #[test]
    fn an_old_folder_is_renamed_to_its_destination_s_unique_name() {
        let root = tempfile::tempdir().unwrap();
        spool_with(&root.path().join("new_relic_NR_account_B"), "B's events");
        spool_with(&root.path().join("influxdb"), "influx events");
        let names = ["influxdb".to_owned(), "new_relic:NR account B".to_owned()];
        let renamed = adopt_legacy_spools(root.path(), &names).unwrap();
        let current = root.path().join("new_relic%3ANR%20account%20B");
        assert_eq!(
            renamed,
            vec![(root.path().join("new_relic_NR_account_B"), current.clone())]
        );
        assert_eq!(
            fs::read_to_string(current.join("seg-00000000000000000000.spool")).unwrap(),
            "B's events"
        );
        assert!(
            root.path().join("influxdb").is_dir(),
            "folders whose name did not change stay"
        );
        // Idempotent: the next start finds nothing to adopt.
        assert!(adopt_legacy_spools(root.path(), &names).unwrap().is_empty());
    }

    #[test]
    fn an_old_folder_two_destinations_shared_is_refused_and_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let old = root.path().join("new_relic_prod_eu");
        spool_with(&old, "mixed events");
        let names = ["new_relic:prod eu".to_owned(), "new_relic:prod_eu".to_owned()];
        let e = adopt_legacy_spools(root.path(), &names).unwrap_err();
        let r = root.path().display();
        assert_eq!(
            e.to_string(),
            format!(
                "spool folder {r}/new_relic_prod_eu was written by an older version for new_relic:prod eu and \
                 new_relic:prod_eu together (it gave them one folder); its events cannot be told apart, so none is \
                 sent: move the folder to {r}/new_relic%3Aprod%20eu or {r}/new_relic%3Aprod_eu to replay it for one \
                 of them, or out of the spool folder to discard it"
            )
        );
        assert!(old.join("seg-00000000000000000000.spool").is_file());
    }

    #[test]
    fn events_in_both_the_old_and_the_new_folder_are_refused() {
        let root = tempfile::tempdir().unwrap();
        spool_with(&root.path().join("new_relic_A"), "old");
        spool_with(&root.path().join("new_relic%3AA"), "new");
        let e = adopt_legacy_spools(root.path(), &["new_relic:A".to_owned()]).unwrap_err();
        assert!(matches!(e, OwnershipError::LegacyAndCurrentSpool { .. }), "{e}");
    }

    #[test]
    fn an_empty_old_folder_is_removed_and_an_empty_new_one_replaced() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("new_relic_A")).unwrap();
        assert!(adopt_legacy_spools(root.path(), &["new_relic:A".to_owned()])
            .unwrap()
            .is_empty());
        assert!(!root.path().join("new_relic_A").exists());
        spool_with(&root.path().join("new_relic_A"), "old");
        fs::create_dir_all(root.path().join("new_relic%3AA")).unwrap();
        assert_eq!(
            adopt_legacy_spools(root.path(), &["new_relic:A".to_owned()])
                .unwrap()
                .len(),
            1
        );
        assert!(!root.path().join("new_relic_A").exists());
    }
}
