//! The file's schema: walks the span-carrying TOML tree, refuses unknown keys, converts values
//! (through `value.rs`: addresses, durations, sizes, enums), and remembers the line of every key so that later
//! errors (validation) can point at it too.
//!
//! Walking the tree by hand rather than through `#[serde(deny_unknown_fields)]` is what lets
//! every message say which key, in which table, on which line, and why.

mod backend;

use std::collections::HashMap;
use std::path::PathBuf;

use toml::Spanned;
use toml::de::DeTable;

use super::error::{ConfigError, Location, line_of};
use super::value::Field;
use super::{
    AuthConfig, ClusterConfig, Compression, Config, LimitsConfig, SessionConfig, SlowConsumer,
    TopicConfig, WriteDelay,
};

const TOP_KEYS: &[&str] = &[
    "listen",
    "max_frame",
    "heartbeat",
    "compression",
    "session",
    "limits",
    "auth",
    "topics",
    "cluster",
    "proxy",
    "webhooks",
];
const SESSION_KEYS: &[&str] = &[
    "ttl",
    "buffer_messages",
    "buffer_bytes",
    "slow_consumer",
    "write_delay",
];
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
    "public_key_files",
    "jwks_url",
    "jwks_refresh",
    "issuer",
    "audience",
    "api_keys",
    "admin_keys",
    "origins",
    "anonymous",
    "refresh_notice",
    "revocation_ttl",
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
/// keys and bad values. No semantic validation. Reading goes on past an error (a bad value
/// keeps its default), so that every error of the file is reported, in reading order.
pub(crate) fn read_config(src: &str, doc: &DeTable<'_>) -> (Config, Lines, Vec<ConfigError>) {
    let mut r = Reader {
        src,
        lines: Lines::default(),
        errors: Vec::new(),
    };
    let mut c = Config::default();
    let top = r.open(doc, "", "the top-level table", TOP_KEYS);
    r.set(&top, "listen", &mut c.listen, Field::socket_addr);
    r.set(&top, "max_frame", &mut c.max_frame, Field::size);
    r.set(&top, "heartbeat", &mut c.heartbeat, Field::duration);
    r.set(&top, "compression", &mut c.compression, |f| {
        match f.string()?.as_str() {
            "auto" => Ok(Compression::Auto),
            "off" => Ok(Compression::Off),
            other => Err(f.error(format!(
                r#"invalid value "{other}" for `{}` (use "auto" or "off")"#,
                f.key
            ))),
        }
    });
    if let Some(t) = r.table(&top, "session", "[session]", SESSION_KEYS) {
        c.session = r.session(&t);
    }
    if let Some(t) = r.table(&top, "limits", "[limits]", LIMITS_KEYS) {
        c.limits = r.limits(&t);
    }
    if let Some(t) = r.table(&top, "auth", "[auth]", AUTH_KEYS) {
        c.auth = Some(r.auth(&t));
    }
    if let Some(f) = r.field(&top, "topics")
        && let Some(entries) = r.ok(f.array_of_tables())
    {
        for (i, (offset, entry)) in entries.into_iter().enumerate() {
            let path = format!("topics[{i}]");
            let line = line_of(src, offset);
            r.lines.0.insert(path.clone(), line);
            let t = r.open(entry, &path, "[[topics]]", TOPIC_KEYS);
            if let Some(topic) = r.topic(&t, line) {
                c.topics.push(topic);
            }
        }
    }
    if let Some(t) = r.table(&top, "cluster", "[cluster]", CLUSTER_KEYS) {
        match r.field(&t, "redis") {
            None => {
                let line = r.lines.line_of("cluster").unwrap_or(1);
                r.errors.push(required("cluster.redis", line));
            }
            Some(redis) => {
                // One URL, or a list: the shards topics are spread over.
                let urls = match redis.string() {
                    Ok(one) => Ok(vec![one]),
                    Err(_) => redis.strings(),
                };
                if let Some(redis) = r.ok(urls) {
                    c.cluster = Some(ClusterConfig { redis });
                }
            }
        }
    }
    if let Some(t) = r.table(&top, "proxy", "[proxy]", backend::PROXY_KEYS) {
        c.proxy = Some(r.proxy(&t));
    }
    c.webhooks = r.webhooks(&top);
    (c, r.lines, r.errors)
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
    /// Every error so far, in reading order.
    errors: Vec<ConfigError>,
}

/// A table being read: its entries and its dotted path (empty at the top level).
struct Table<'a, 'i> {
    entries: &'a DeTable<'i>,
    path: String,
}

impl<'a, 'i> Reader<'_> {
    /// Starts reading a table: records the line of each key and an error for each unknown
    /// one (by line).
    fn open(
        &mut self,
        entries: &'a DeTable<'i>,
        path: &str,
        name: &str,
        known: &[&str],
    ) -> Table<'a, 'i> {
        let mut unknown: Vec<&Spanned<_>> = Vec::new();
        for key in entries.keys() {
            let line = line_of(self.src, key.span().start);
            self.lines.0.insert(join(path, key.get_ref()), line);
            if !known.contains(&key.get_ref().as_ref()) {
                unknown.push(key);
            }
        }
        unknown.sort_by_key(|k| k.span().start);
        for key in unknown {
            self.errors.push(ConfigError::UnknownKey {
                at: Location::line(line_of(self.src, key.span().start)),
                key: key.get_ref().to_string(),
                table: name.into(),
            });
        }
        Table {
            entries,
            path: path.into(),
        }
    }

    /// A sub-table of `table`, opened; `None` when absent or not a table (an error).
    fn table(
        &mut self,
        table: &Table<'a, 'i>,
        key: &str,
        name: &str,
        known: &[&str],
    ) -> Option<Table<'a, 'i>> {
        let f = self.field(table, key)?;
        let entries = self.ok(f.table())?;
        let path = join(&table.path, key);
        Some(self.open(entries, &path, name, known))
    }

    fn field(&self, table: &Table<'a, 'i>, key: &str) -> Option<Field<'a, 'i>> {
        let value = table.entries.get(key)?;
        Some(Field::new(
            join(&table.path, key),
            value.get_ref(),
            line_of(self.src, value.span().start),
        ))
    }

    /// The value, or `None` with the error recorded.
    fn ok<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.errors.push(e)).ok()
    }

    /// Sets `slot` from `key` of `table` when present and valid; records the error otherwise.
    fn set<T>(
        &mut self,
        table: &Table<'a, 'i>,
        key: &str,
        slot: &mut T,
        read: impl FnOnce(&Field<'a, 'i>) -> Result<T, ConfigError>,
    ) {
        if let Some(f) = self.field(table, key)
            && let Some(v) = self.ok(read(&f))
        {
            *slot = v;
        }
    }

    fn session(&mut self, t: &Table<'a, 'i>) -> SessionConfig {
        let mut s = SessionConfig::default();
        self.set(t, "ttl", &mut s.ttl, Field::duration);
        self.set(t, "buffer_messages", &mut s.buffer_messages, Field::integer);
        self.set(t, "buffer_bytes", &mut s.buffer_bytes, Field::size);
        self.set(t, "slow_consumer", &mut s.slow_consumer, |f| {
            match f.string()?.as_str() {
                "drop_oldest" => Ok(SlowConsumer::DropOldest),
                "disconnect" => Ok(SlowConsumer::Disconnect),
                other => Err(f.error(format!(
                    r#"invalid value "{other}" for `{}` (use "drop_oldest" or "disconnect")"#,
                    f.key
                ))),
            }
        });
        self.set(t, "write_delay", &mut s.write_delay, |f| {
            match f.string().ok().as_deref() {
                Some("auto") => Ok(WriteDelay::Auto),
                Some("0") => Ok(WriteDelay::Off),
                _ => match f.duration() {
                    Ok(d) if d.is_zero() => Ok(WriteDelay::Off),
                    Ok(d) => Ok(WriteDelay::Every(d)),
                    Err(_) => Err(f.error(format!(
                        r#"invalid value for `{}` (use "auto", "0" or a duration such as "2ms")"#,
                        f.key
                    ))),
                },
            }
        });
        s
    }

    fn limits(&mut self, t: &Table<'a, 'i>) -> LimitsConfig {
        let mut l = LimitsConfig::default();
        self.set(
            t,
            "max_subscriptions",
            &mut l.max_subscriptions,
            Field::integer,
        );
        self.set(t, "max_connections", &mut l.max_connections, Field::integer);
        self.set(
            t,
            "max_connections_per_ip",
            &mut l.max_connections_per_ip,
            Field::integer,
        );
        self.set(t, "publish_rate", &mut l.publish_rate, Field::integer);
        self.set(
            t,
            "max_pending_requests",
            &mut l.max_pending_requests,
            Field::integer,
        );
        self.set(
            t,
            "handshake_timeout",
            &mut l.handshake_timeout,
            Field::duration,
        );
        l
    }

    fn auth(&mut self, t: &Table<'a, 'i>) -> AuthConfig {
        let mut a = AuthConfig::default();
        self.set(t, "hs256_secret", &mut a.hs256_secret, |f| {
            f.string().map(Some)
        });
        self.set(t, "public_key_file", &mut a.public_key_file, |f| {
            f.string().map(|s| Some(PathBuf::from(s)))
        });
        self.set(t, "public_key_files", &mut a.public_key_files, |f| {
            f.strings()
                .map(|files| files.into_iter().map(PathBuf::from).collect())
        });
        self.set(t, "jwks_url", &mut a.jwks_url, |f| f.string().map(Some));
        self.set(t, "jwks_refresh", &mut a.jwks_refresh, Field::duration);
        self.set(t, "issuer", &mut a.issuer, |f| f.string().map(Some));
        // One audience as a string, or several as a list.
        self.set(t, "audience", &mut a.audience, |f| match f.string() {
            Ok(one) => Ok(Some(vec![one])),
            Err(_) => f
                .strings()
                .map(Some)
                .map_err(|_| f.wrong_type("a string or an array of strings")),
        });
        self.set(t, "api_keys", &mut a.api_keys, Field::strings);
        self.set(t, "admin_keys", &mut a.admin_keys, Field::strings);
        self.set(t, "origins", &mut a.origins, |f| f.strings().map(Some));
        self.set(t, "refresh_notice", &mut a.refresh_notice, Field::duration);
        self.set(t, "revocation_ttl", &mut a.revocation_ttl, Field::duration);
        if let Some(p) = self.table(t, "anonymous", "[auth.anonymous]", PERMISSION_KEYS) {
            self.set(&p, "publish", &mut a.anonymous.publish, Field::strings);
            self.set(&p, "subscribe", &mut a.anonymous.subscribe, Field::strings);
        }
        a
    }

    /// A `[[topics]]` entry; `None` (with the error recorded) without a valid pattern.
    fn topic(&mut self, t: &Table<'a, 'i>, line: usize) -> Option<TopicConfig> {
        let Some(pattern) = self.field(t, "pattern") else {
            self.errors.push(required(&join(&t.path, "pattern"), line));
            return None;
        };
        let mut c = TopicConfig {
            pattern: self.ok(pattern.string())?,
            ..TopicConfig::default()
        };
        self.set(t, "history", &mut c.history, Field::integer);
        self.set(t, "history_ttl", &mut c.history_ttl, |f| {
            f.duration().map(Some)
        });
        self.set(t, "persist", &mut c.persist, Field::boolean);
        self.set(t, "dedup_window", &mut c.dedup_window, Field::duration);
        self.set(t, "ack_wait", &mut c.ack_wait, Field::duration);
        self.set(t, "max_deliveries", &mut c.max_deliveries, Field::integer);
        self.set(t, "max_rewind", &mut c.max_rewind, Field::integer);
        Some(c)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}
