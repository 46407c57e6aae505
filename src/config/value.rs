//! One value of the file, converted to what the schema wants (string, integer, duration, size,
//! address, list, table), with errors that name the key, the line and what was expected.

use std::net::SocketAddr;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Location};
use super::units::{parse_duration, parse_size};

const DURATION_HINT: &str = r#"(use e.g. "250ms", "25s", "2m")"#;
const SIZE_HINT: &str = r#"(use a number of bytes or e.g. "64KiB", "4MiB", "1MB")"#;

/// One key's value, with its dotted path and the line of the value, for messages.
pub(super) struct Field<'a, 'i> {
    pub(super) key: String,
    value: &'a DeValue<'i>,
    pub(super) line: usize,
}

impl<'a, 'i> Field<'a, 'i> {
    pub(super) fn new(key: String, value: &'a DeValue<'i>, line: usize) -> Self {
        Field { key, value, line }
    }

    pub(super) fn error(&self, message: String) -> ConfigError {
        ConfigError::Invalid {
            at: Location::line(self.line),
            key: self.key.clone(),
            message,
        }
    }

    pub(super) fn wrong_type(&self, expected: &str) -> ConfigError {
        let found = self.value.type_str();
        self.error(format!("`{}` must be {expected}, found {found}", self.key))
    }

    pub(super) fn string(&self) -> Result<String, ConfigError> {
        match self.value {
            DeValue::String(s) => Ok(s.to_string()),
            _ => Err(self.wrong_type("a string")),
        }
    }

    pub(super) fn boolean(&self) -> Result<bool, ConfigError> {
        self.value
            .as_bool()
            .ok_or_else(|| self.wrong_type("true or false"))
    }

    /// A TOML integer, as any integer type; negative and too-large values are refused.
    pub(super) fn integer<T: TryFrom<i128>>(&self) -> Result<T, ConfigError> {
        let DeValue::Integer(i) = self.value else {
            return Err(self.wrong_type("an integer"));
        };
        let n = i128::from_str_radix(i.as_str(), i.radix())
            .map_err(|_| self.error(format!("`{}` is too large", self.key)))?;
        if n < 0 {
            return Err(self.error(format!("`{}` cannot be negative (found {n})", self.key)));
        }
        T::try_from(n).map_err(|_| self.error(format!("`{}` is too large (found {n})", self.key)))
    }

    pub(super) fn duration(&self) -> Result<Duration, ConfigError> {
        let (shown, parsed) = match self.value {
            DeValue::String(s) => (format!("{:?}", s.as_ref()), parse_duration(s)),
            DeValue::Integer(i) => (
                i.to_string(),
                Err("a number without a unit is not a duration".into()),
            ),
            DeValue::Float(x) => (
                x.to_string(),
                Err("a number without a unit is not a duration".into()),
            ),
            _ => return Err(self.wrong_type(r#"a duration string like "25s""#)),
        };
        parsed.map_err(|why| {
            self.error(format!(
                "invalid duration {shown} for `{}`: {why} {DURATION_HINT}",
                self.key
            ))
        })
    }

    /// A size in bytes: an integer, or a string with a unit.
    pub(super) fn size(&self) -> Result<usize, ConfigError> {
        let (shown, parsed) = match self.value {
            DeValue::String(s) => (format!("{:?}", s.as_ref()), parse_size(s)),
            DeValue::Integer(_) => return self.integer(),
            DeValue::Float(x) => (x.to_string(), Err("a size must be whole bytes".into())),
            _ => return Err(self.wrong_type(r#"a size (bytes, or a string like "4MiB")"#)),
        };
        let bytes = parsed.map_err(|why| {
            self.error(format!(
                "invalid size {shown} for `{}`: {why} {SIZE_HINT}",
                self.key
            ))
        })?;
        usize::try_from(bytes).map_err(|_| self.error(format!("`{}` is too large", self.key)))
    }

    pub(super) fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        let text = self.string()?;
        text.trim().parse().map_err(|_| {
            self.error(format!(
                r#"invalid address "{text}" for `{}` (use IP:PORT, e.g. "127.0.0.1:7400" or "[::]:7400")"#,
                self.key
            ))
        })
    }

    pub(super) fn strings(&self) -> Result<Vec<String>, ConfigError> {
        let DeValue::Array(items) = self.value else {
            return Err(self.wrong_type("an array of strings"));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(s) => Ok(s.to_string()),
                other => Err(ConfigError::Invalid {
                    at: Location::line(self.line),
                    key: self.key.clone(),
                    message: format!(
                        "`{}` must be an array of strings, found an element of type {}",
                        self.key,
                        other.type_str()
                    ),
                }),
            })
            .collect()
    }

    pub(super) fn table(&self) -> Result<&'a DeTable<'i>, ConfigError> {
        match self.value {
            DeValue::Table(t) => Ok(t),
            _ => Err(self.wrong_type("a table")),
        }
    }

    /// The tables of an array of tables, each with the byte offset where it starts.
    pub(super) fn array_of_tables(&self) -> Result<Vec<(usize, &'a DeTable<'i>)>, ConfigError> {
        let wrong =
            || self.wrong_type(&format!("an array of tables (`[[{}]]` sections)", self.key));
        let DeValue::Array(items) = self.value else {
            return Err(wrong());
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::Table(t) => Ok((item.span().start, t)),
                _ => Err(wrong()),
            })
            .collect()
    }
}
