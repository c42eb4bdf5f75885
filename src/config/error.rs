//! What config loading reports: one [`ConfigError`] per problem, every problem of a load in [`ConfigErrors`].
//! Every stage of loading (`raw`, `layers`, `validate`) reports through these types, so none depends on another
//! for them.

use std::fmt;

/// One problem in a config file: the full key path (`Butler-SOS.userEvents.tags[1].value`; the file name for
/// problems with the file itself) and what is wrong, in lowercase without a trailing period. Secrets are never
/// part of the message.
///
/// With several config files (`--config` repeated), `file` names the one that set the key (Display then prints
/// `file: path: message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Key path of the offending value, dot-separated, with `[i]` for list items.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
    /// The config file the value came from, when more than one file was read.
    pub file: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{file}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl ConfigError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
            file: None,
        }
    }

    /// The same problem, found in `file`.
    pub fn in_file(mut self, file: &str) -> ConfigError {
        self.file = Some(file.to_owned());
        self
    }
}

/// Every problem found in a config file (never empty when returned as an error). Display prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems, in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
