//! The one place that lists what parses but does not work yet.
//!
//! A setting whose feature has not landed must be refused, never silently ignored: someone who
//! writes `[auth]` and gets an open server has been let down badly. The schema, validation and
//! `to_toml` already handle every key, so enabling a feature is deleting its entry here.

use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Location, line_of};

/// Dotted paths of config-file keys (`auth` covers the whole `[auth]` table) and command-line
/// flags (`--redis` also covers its environment variable) whose feature has not landed yet.
pub const UNSUPPORTED: &[&str] = &[];

/// Whether a dotted config key or a `--flag` is supported (not listed in [`UNSUPPORTED`]).
pub fn is_supported(key: &str) -> bool {
    !UNSUPPORTED.contains(&key)
}

/// Refuses a flag listed in [`UNSUPPORTED`]; `env` is its environment variable, for the message.
pub fn check_unsupported_flag(flag: &str, env: &str) -> Result<(), ConfigError> {
    if is_supported(flag) {
        Ok(())
    } else {
        Err(ConfigError::UnsupportedFlag {
            flag: flag.into(),
            env: env.into(),
        })
    }
}

/// Refuses the first (by line) unsupported key present in a parsed document.
pub(crate) fn check_document(src: &str, doc: &DeTable<'_>) -> Result<(), ConfigError> {
    let mut first: Option<(usize, String)> = None;
    for path in UNSUPPORTED.iter().filter(|p| !p.starts_with("--")) {
        let Some((offset, value)) = find(doc, path) else {
            continue;
        };
        if first.as_ref().is_some_and(|(o, _)| *o <= offset) {
            continue;
        }
        let what = match value {
            DeValue::Table(_) => format!("[{path}]"),
            DeValue::Array(items) if items.iter().all(|i| i.get_ref().is_table()) => {
                format!("[[{path}]]")
            }
            _ => (*path).to_string(),
        };
        first = Some((offset, what));
    }
    match first {
        None => Ok(()),
        Some((offset, what)) => Err(ConfigError::Unsupported {
            at: Location::line(line_of(src, offset)),
            what,
        }),
    }
}

/// The key's byte offset and value at a dotted path, descending through tables only.
fn find<'a, 'i>(doc: &'a DeTable<'i>, path: &str) -> Option<(usize, &'a DeValue<'i>)> {
    let mut table = doc;
    let mut found: Option<(usize, &'a DeValue<'i>)> = None;
    for part in path.split('.') {
        if let Some((_, value)) = found {
            let DeValue::Table(inner) = value else {
                return None;
            };
            table = inner;
        }
        let (key, value) = table.get_key_value(part)?;
        found = Some((key.span().start, value.get_ref()));
    }
    found
}
