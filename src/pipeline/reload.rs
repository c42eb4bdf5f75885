//! SIGHUP: re-read and validate the config file, never stop.
//!
//! Without a handler SIGHUP terminates the process, dropping whatever is queued: a `systemctl reload`, a closed
//! terminal or a log rotation script could lose events. [`watch_sighup`] replaces that: each SIGHUP re-reads the
//! config files with [`config::load_files`] (what `check-config` runs) and logs the outcome. The running engine
//! is not touched (readers keep receiving, queues keep draining), so a SIGHUP cannot lose an event:
//! - valid: one WARN saying the changes take effect at the next restart (nothing is applied live yet);
//! - invalid: one ERROR listing every problem with its key path; the engine keeps running on the config it
//!   started with, so a half-edited file does no harm.
//!
//! The handler only wakes a thread (signal-hook's self-pipe); reading and validating happen on that thread.

use std::io;
use std::path::PathBuf;

use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use crate::config::{self, ConfigErrors};
use crate::telemetry::escape::Escaped;

/// Installs the SIGHUP handler and starts the thread (`sighup`) that answers it for the life of the process.
/// `config` is the files the engine was started from (none: the embedded default, nothing to re-read).
/// Returns once the handler is installed: from then on SIGHUP no longer terminates the process.
pub fn watch_sighup(config: Vec<PathBuf>) -> io::Result<()> {
    let mut signals = Signals::new([SIGHUP])?;
    std::thread::Builder::new().name("sighup".into()).spawn(move || {
        for _ in signals.forever() {
            revalidate(&config);
        }
    })?;
    Ok(())
}

/// What one SIGHUP found, after it was logged.
#[derive(Debug)]
pub enum Revalidation {
    /// No config file: the engine runs on the embedded default.
    NoFile,
    /// The file is valid; its changes take effect at the next restart.
    Valid,
    /// The file is not valid (every problem); the engine keeps its current config.
    Invalid(ConfigErrors),
}

/// Re-reads and validates `config` as `check-config` does, and logs the outcome (see the module docs).
pub fn revalidate(config: &[PathBuf]) -> Revalidation {
    if config.is_empty() {
        warn!("SIGHUP received: running on the embedded default config, there is no config file to re-read");
        return Revalidation::NoFile;
    }
    let names = config
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    info!(config = %names, "SIGHUP received: re-reading and validating the config file");
    match config::load_files(config) {
        Ok(_) => {
            warn!(
                config = %names,
                "config file is valid; changes take effect at the next restart (nothing was reloaded)"
            );
            Revalidation::Valid
        }
        Err(errors) => {
            error!(
                config = %names,
                count = errors.0.len(),
                errors = %Escaped(&one_line(&errors)),
                "config file is not valid; still running on the config loaded at start"
            );
            Revalidation::Invalid(errors)
        }
    }
}

/// Every problem on one line, `; `-separated (a multi-line error would split the log record).
fn one_line(errors: &ConfigErrors) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_file_an_invalid_one_and_no_file_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("butler-sos.yaml");
        std::fs::write(
            &path,
            "Butler-SOS:\n  userEvents:\n    enable: true\n    \
             udpServerConfig: {serverHost: 127.0.0.1, portUserActivityEvents: 0}\n",
        )
        .unwrap();
        assert!(matches!(revalidate(std::slice::from_ref(&path)), Revalidation::Valid));
        assert!(matches!(revalidate(&[]), Revalidation::NoFile));

        std::fs::write(
            &path,
            "Butler-SOS:\n  logLevel: loud\n  userEvents:\n    enable: true\n    \
             udpServerConfig: {serverHost: 127.0.0.1, portUserActivityEvents: 99999}\n",
        )
        .unwrap();
        let Revalidation::Invalid(errors) = revalidate(std::slice::from_ref(&path)) else {
            panic!("an invalid file must be reported as invalid");
        };
        assert!(errors.0.len() >= 2, "{errors}");
        let line = one_line(&errors);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains("logLevel") && line.contains("portUserActivityEvents"),
            "{line}"
        );

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            revalidate(std::slice::from_ref(&path)),
            Revalidation::Invalid(_)
        ));
    }
}
