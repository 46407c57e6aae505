//! Configuration errors: one line each, with the file and the 1-based line when known, e.g.
//! `herald.toml: line 7: unknown key `buffer_msgs` in [session]`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where an error is: the file (when the text came from one) and the 1-based line (when the
/// error is about something written in it). Displays as a prefix: `"herald.toml: line 7: "`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
}

impl Location {
    pub fn line(line: usize) -> Location {
        Location {
            file: None,
            line: Some(line),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{at}TOML syntax error: {message}")]
    Syntax { at: Location, message: String },
    /// A key that Herald does not know. `table` is how the table is written in the file:
    /// `[session]`, `[[topics]]`, `the top level`.
    #[error("{at}unknown key `{key}` in {table}")]
    UnknownKey {
        at: Location,
        key: String,
        table: String,
    },
    /// A value of the wrong type or out of range. `key` is the dotted path (`session.ttl`,
    /// `topics[0].pattern`); `message` is the whole sentence.
    #[error("{at}{message}")]
    Invalid {
        at: Location,
        key: String,
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            at: Location::default(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn location_mut(&mut self) -> Option<&mut Location> {
        match self {
            ConfigError::Syntax { at, .. }
            | ConfigError::UnknownKey { at, .. }
            | ConfigError::Invalid { at, .. } => Some(at),
            ConfigError::Io { .. } => None,
        }
    }

    fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Syntax { at, .. }
            | ConfigError::UnknownKey { at, .. }
            | ConfigError::Invalid { at, .. } => Some(at),
            ConfigError::Io { .. } => None,
        }
    }

    /// The 1-based line in the configuration text the error is about, if any.
    pub fn line(&self) -> Option<usize> {
        self.location().and_then(|at| at.line)
    }

    /// The file the error is about, if the configuration came from one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ConfigError::Io { path, .. } => Some(path),
            _ => self.location().and_then(|at| at.file.as_deref()),
        }
    }

    /// The key the error is about, as a dotted path (`session.ttl`, `topics[1].history`), when
    /// there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Sets the file the configuration came from.
    pub(crate) fn in_file(mut self, path: &Path) -> ConfigError {
        if let Some(at) = self.location_mut() {
            at.file = Some(path.to_path_buf());
        }
        self
    }

    /// Sets the line, unless one is already known.
    pub(crate) fn at_line(mut self, line: Option<usize>) -> ConfigError {
        if let Some(at) = self.location_mut() {
            at.line = at.line.or(line);
        }
        self
    }
}

/// The 1-based line of a byte offset in `src`.
pub(crate) fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let src = "a = 1\nb = 2\n\nc = 3";
        assert_eq!(line_of(src, 0), 1);
        assert_eq!(line_of(src, 5), 1);
        assert_eq!(line_of(src, 6), 2);
        assert_eq!(line_of(src, 13), 4);
        assert_eq!(line_of(src, 999), 4);
    }

    #[test]
    fn display_is_one_line_with_prefix() {
        let e = ConfigError::UnknownKey {
            at: Location::line(7),
            key: "buffer_msgs".into(),
            table: "[session]".into(),
        }
        .in_file(Path::new("herald.toml"));
        assert_eq!(
            e.to_string(),
            "herald.toml: line 7: unknown key `buffer_msgs` in [session]"
        );
        assert_eq!(e.line(), Some(7));
        let e = ConfigError::invalid("max_frame", "`max_frame` is too small");
        assert_eq!(e.to_string(), "`max_frame` is too small");
    }
}
