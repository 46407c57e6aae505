//! The file's schema: walks the span-carrying TOML tree, refuses unknown keys, converts values
//! (through `value.rs`: addresses, durations, sizes, enums), and remembers the line of every key so that later
//! errors (validation) can point at it too.
//!
//! Walking the tree by hand rather than through `#[serde(deny_unknown_fields)]` is what lets
//! every message say which key, in which table, on which line, and why.

use std::collections::HashMap;
use std::path::PathBuf;

use toml::Spanned;
use toml::de::DeTable;

use super::error::{ConfigError, Location, line_of};
use super::value::Field;
use super::{
    AuthConfig, ClusterConfig, Config, LimitsConfig, Permissions, SessionConfig, SlowConsumer,
    TopicConfig,
};

const TOP_KEYS: &[&str] = &[
    "listen",
    "max_frame",
    "heartbeat",
    "session",
    "limits",
    "auth",
    "topics",
    "cluster",
];
const SESSION_KEYS: &[&str] = &["ttl", "buffer_messages", "buffer_bytes", "slow_consumer"];
const LIMITS_KEYS: &[&str] = &[
    "max_subscriptions",
    "max_connections",
    "max_connections_per_ip",
    "publish_rate",
    "max_pending_requests",
    "handshake_timeout",
];
const AUTH_KEYS: &[&str] = &[
    "hs256_secret",
    "public_key_file",
    "api_keys",
    "admin_keys",
    "origins",
    "anonymous",
];
const PERMISSION_KEYS: &[&str] = &["publish", "subscribe"];
const TOPIC_KEYS: &[&str] = &[
    "pattern",
    "history",
    "history_ttl",
    "persist",
    "dedup_window",
    "ack_wait",
    "max_deliveries",
    "max_rewind",
];
const CLUSTER_KEYS: &[&str] = &["redis"];

/// Parses TOML syntax only.
pub(crate) fn parse_document(src: &str) -> Result<Spanned<DeTable<'_>>, ConfigError> {
    DeTable::parse(src).map_err(|e| ConfigError::Syntax {
        at: Location {
            file: None,
            line: e.span().map(|s| line_of(src, s.start)),
        },
        message: e.message().trim().to_string(),
    })
}

/// The line of every key of the file, by dotted path (`session.ttl`, `topics[1].pattern`).
#[derive(Debug, Default)]
pub(crate) struct Lines(HashMap<String, usize>);

impl Lines {
    /// The line of `key`, or of the closest enclosing table present in the file.
    pub(crate) fn line_of(&self, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some(line) = self.0.get(key) {
                return Some(*line);
            }
            key = &key[..key.rfind(['.', '['])?];
        }
    }
}

/// Builds a [`Config`] from a parsed document: defaults for what is absent, errors for unknown
/// keys and bad values. No semantic validation.
pub(crate) fn read_config(src: &str, doc: &DeTable<'_>) -> Result<(Config, Lines), ConfigError> {
    let mut r = Reader {
        src,
        lines: Lines::default(),
    };
    let top = r.open(doc, "", "the top-level table", TOP_KEYS)?;
    let mut c = Config::default();
    if let Some(f) = r.field(&top, "listen") {
        c.listen = f.socket_addr()?;
    }
    if let Some(f) = r.field(&top, "max_frame") {
        c.max_frame = f.size()?;
    }
    if let Some(f) = r.field(&top, "heartbeat") {
        c.heartbeat = f.duration()?;
    }
    if let Some(f) = r.field(&top, "session") {
        let t = r.open(f.table()?, "session", "[session]", SESSION_KEYS)?;
        c.session = r.session(&t)?;
    }
    if let Some(f) = r.field(&top, "limits") {
        let t = r.open(f.table()?, "limits", "[limits]", LIMITS_KEYS)?;
        c.limits = r.limits(&t)?;
    }
    if let Some(f) = r.field(&top, "auth") {
        let t = r.open(f.table()?, "auth", "[auth]", AUTH_KEYS)?;
        c.auth = Some(r.auth(&t)?);
    }
    if let Some(f) = r.field(&top, "topics") {
        for (i, (offset, entry)) in f.array_of_tables()?.into_iter().enumerate() {
            let path = format!("topics[{i}]");
            let line = line_of(src, offset);
            r.lines.0.insert(path.clone(), line);
            let t = r.open(entry, &path, "[[topics]]", TOPIC_KEYS)?;
            c.topics.push(r.topic(&t, line)?);
        }
    }
    if let Some(f) = r.field(&top, "cluster") {
        let t = r.open(f.table()?, "cluster", "[cluster]", CLUSTER_KEYS)?;
        let Some(redis) = r.field(&t, "redis") else {
            return Err(required("cluster.redis", f.line));
        };
        c.cluster = Some(ClusterConfig {
            redis: redis.string()?,
        });
    }
    Ok((c, r.lines))
}

fn required(key: &str, line: usize) -> ConfigError {
    ConfigError::Invalid {
        at: Location::line(line),
        key: key.into(),
        message: format!("`{key}` is required"),
    }
}

struct Reader<'s> {
    src: &'s str,
    lines: Lines,
}

/// A table being read: its entries and its dotted path (empty at the top level).
struct Table<'a, 'i> {
    entries: &'a DeTable<'i>,
    path: String,
}

impl Reader<'_> {
    /// Starts reading a table: records the line of each key and refuses the first unknown one.
    fn open<'a, 'i>(
        &mut self,
        entries: &'a DeTable<'i>,
        path: &str,
        name: &str,
        known: &[&str],
    ) -> Result<Table<'a, 'i>, ConfigError> {
        let mut unknown: Option<&Spanned<_>> = None;
        for key in entries.keys() {
            let line = line_of(self.src, key.span().start);
            self.lines.0.insert(join(path, key.get_ref()), line);
            let is_known = known.contains(&key.get_ref().as_ref());
            if !is_known && unknown.is_none_or(|u| key.span().start < u.span().start) {
                unknown = Some(key);
            }
        }
        if let Some(key) = unknown {
            return Err(ConfigError::UnknownKey {
                at: Location::line(line_of(self.src, key.span().start)),
                key: key.get_ref().to_string(),
                table: name.into(),
            });
        }
        Ok(Table {
            entries,
            path: path.into(),
        })
    }

    fn field<'a, 'i>(&self, table: &Table<'a, 'i>, key: &str) -> Option<Field<'a, 'i>> {
        let value = table.entries.get(key)?;
        Some(Field::new(
            join(&table.path, key),
            value.get_ref(),
            line_of(self.src, value.span().start),
        ))
    }

    fn session(&mut self, t: &Table<'_, '_>) -> Result<SessionConfig, ConfigError> {
        let mut s = SessionConfig::default();
        if let Some(f) = self.field(t, "ttl") {
            s.ttl = f.duration()?;
        }
        if let Some(f) = self.field(t, "buffer_messages") {
            s.buffer_messages = f.integer()?;
        }
        if let Some(f) = self.field(t, "buffer_bytes") {
            s.buffer_bytes = f.size()?;
        }
        if let Some(f) = self.field(t, "slow_consumer") {
            s.slow_consumer = match f.string()?.as_str() {
                "drop_oldest" => SlowConsumer::DropOldest,
                "disconnect" => SlowConsumer::Disconnect,
                other => {
                    return Err(f.error(format!(
                        r#"invalid value "{other}" for `{}` (use "drop_oldest" or "disconnect")"#,
                        f.key
                    )));
                }
            };
        }
        Ok(s)
    }

    fn limits(&mut self, t: &Table<'_, '_>) -> Result<LimitsConfig, ConfigError> {
        let mut l = LimitsConfig::default();
        if let Some(f) = self.field(t, "max_subscriptions") {
            l.max_subscriptions = f.integer()?;
        }
        if let Some(f) = self.field(t, "max_connections") {
            l.max_connections = f.integer()?;
        }
        if let Some(f) = self.field(t, "max_connections_per_ip") {
            l.max_connections_per_ip = f.integer()?;
        }
        if let Some(f) = self.field(t, "publish_rate") {
            l.publish_rate = f.integer()?;
        }
        if let Some(f) = self.field(t, "max_pending_requests") {
            l.max_pending_requests = f.integer()?;
        }
        if let Some(f) = self.field(t, "handshake_timeout") {
            l.handshake_timeout = f.duration()?;
        }
        Ok(l)
    }

    fn auth(&mut self, t: &Table<'_, '_>) -> Result<AuthConfig, ConfigError> {
        let mut a = AuthConfig::default();
        if let Some(f) = self.field(t, "hs256_secret") {
            a.hs256_secret = Some(f.string()?);
        }
        if let Some(f) = self.field(t, "public_key_file") {
            a.public_key_file = Some(PathBuf::from(f.string()?));
        }
        if let Some(f) = self.field(t, "api_keys") {
            a.api_keys = f.strings()?;
        }
        if let Some(f) = self.field(t, "admin_keys") {
            a.admin_keys = f.strings()?;
        }
        if let Some(f) = self.field(t, "origins") {
            a.origins = Some(f.strings()?);
        }
        if let Some(f) = self.field(t, "anonymous") {
            let path = join(&t.path, "anonymous");
            let p = self.open(f.table()?, &path, "[auth.anonymous]", PERMISSION_KEYS)?;
            a.anonymous = Permissions {
                publish: self
                    .field(&p, "publish")
                    .map_or(Ok(vec![]), |f| f.strings())?,
                subscribe: self
                    .field(&p, "subscribe")
                    .map_or(Ok(vec![]), |f| f.strings())?,
            };
        }
        Ok(a)
    }

    fn topic(&mut self, t: &Table<'_, '_>, line: usize) -> Result<TopicConfig, ConfigError> {
        let Some(pattern) = self.field(t, "pattern") else {
            return Err(required(&join(&t.path, "pattern"), line));
        };
        let mut c = TopicConfig {
            pattern: pattern.string()?,
            ..TopicConfig::default()
        };
        if let Some(f) = self.field(t, "history") {
            c.history = f.integer()?;
        }
        if let Some(f) = self.field(t, "history_ttl") {
            c.history_ttl = Some(f.duration()?);
        }
        if let Some(f) = self.field(t, "persist") {
            c.persist = f.boolean()?;
        }
        if let Some(f) = self.field(t, "dedup_window") {
            c.dedup_window = f.duration()?;
        }
        if let Some(f) = self.field(t, "ack_wait") {
            c.ack_wait = f.duration()?;
        }
        if let Some(f) = self.field(t, "max_deliveries") {
            c.max_deliveries = f.integer()?;
        }
        if let Some(f) = self.field(t, "max_rewind") {
            c.max_rewind = f.integer()?;
        }
        Ok(c)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}
