//! Herald's configuration (PROTOCOL.md §9): the TOML file, with environment variables and
//! command-line flags on top (those live in `crate::cli`).
//!
//! Reading a file goes: TOML syntax → the schema (unknown keys, types, units; `schema.rs`) →
//! semantic checks (`validate.rs`). Every error names the key and its line. [`Config::to_toml`] writes the effective configuration back
//! out (`show.rs`) in a form that reads back to the same value.

mod backend;
mod error;
mod schema;
mod show;
#[cfg(test)]
mod tests;
mod validate;
mod value;

/// The duration and size syntax, shared with the load generator.
pub use herald_protocol::units;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use backend::{ProxyConfig, ProxyRoute, WebhookConfig};
pub use error::{ConfigError, Location};

/// The whole server configuration. `Config::default()` is what runs without a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Largest frame accepted from a client, in bytes; larger ones close with 1009.
    pub max_frame: usize,
    /// Interval between server pings; a connection silent for two intervals is closed.
    pub heartbeat: Duration,
    /// permessage-deflate on WebSocket connections (PROTOCOL.md §2, "Compression").
    pub compression: Compression,
    pub session: SessionConfig,
    pub limits: LimitsConfig,
    /// `None`: anyone may publish and subscribe to anything (the `$` rules of §1 still hold).
    pub auth: Option<AuthConfig>,
    /// `[[topics]]`: per-pattern settings; the first entry whose pattern matches wins.
    pub topics: Vec<TopicConfig>,
    /// `None`: a single node.
    pub cluster: Option<ClusterConfig>,
    /// `[proxy]`: the backend asked what connections may do; `None`: nobody is asked.
    pub proxy: Option<ProxyConfig>,
    /// `[[webhooks]]`: where events are sent.
    pub webhooks: Vec<WebhookConfig>,
    /// Durable store directory, from `--data-dir` / `HERALD_DATA_DIR` only; `None`: in memory.
    pub data_dir: Option<PathBuf>,
}

/// `[session]`: how long a disconnected session lives and how much it buffers (§3).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    pub ttl: Duration,
    pub buffer_messages: usize,
    pub buffer_bytes: usize,
    pub slow_consumer: SlowConsumer,
    pub write_delay: WriteDelay,
}

/// `session.write_delay`: how long a connection's writer may wait for more messages before it
/// writes, so that a steady stream goes out in batches (one `write` for many messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteDelay {
    /// At most one write per [`WriteDelay::AUTO`] per connection, only while the node is busy
    /// (writing many times per second): a quiet node, or a connection written to less often,
    /// writes at once.
    #[default]
    Auto,
    /// `"0"`: every wake-up writes at once.
    Off,
    /// At most one write per this interval per connection, however busy the node.
    Every(Duration),
}

impl WriteDelay {
    /// The interval of `auto`.
    pub const AUTO: Duration = Duration::from_millis(1);
}

/// `compression`: whether a WebSocket connection may use permessage-deflate (RFC 7692).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Accepted when the client offers it (browsers and Node's `ws` do).
    #[default]
    Auto,
    /// Every offer declined: every connection is uncompressed.
    Off,
}

impl Compression {
    /// The spelling in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Auto => "auto",
            Compression::Off => "off",
        }
    }
}

/// What to do when a session's unsent backlog is full (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumer {
    /// Drop the oldest buffered messages (sent ones first); dropped unsent ones become a `gap`.
    #[default]
    DropOldest,
    /// Close the socket with 4008; the session stays resumable.
    Disconnect,
}

impl SlowConsumer {
    /// The spelling in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            SlowConsumer::DropOldest => "drop_oldest",
            SlowConsumer::Disconnect => "disconnect",
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Per session.
    pub max_subscriptions: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Publishes per connection per second, bursts of twice that; 0: unlimited.
    pub publish_rate: u32,
    pub max_pending_requests: usize,
    /// Time a new TCP connection gets to send its HTTP request headers (slowloris defence).
    pub handshake_timeout: Duration,
}

/// `[auth]` (§7).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub hs256_secret: Option<String>,
    /// PEM public key for RS256, ES256 or EdDSA tokens.
    pub public_key_file: Option<PathBuf>,
    /// More PEM public keys, each accepted (several at once during a key rotation).
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS document (`http://` only): keys chosen by the token's `kid`.
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again.
    pub jwks_refresh: Duration,
    /// The `iss` every token must carry; `None`: not checked.
    pub issuer: Option<String>,
    /// Accepted `aud` values (a token must carry one of them); `None`: not checked.
    pub audience: Option<Vec<String>>,
    /// Keys for the HTTP publish and read API.
    pub api_keys: Vec<String>,
    /// Keys for stats, topics and presence listings.
    pub admin_keys: Vec<String>,
    /// Browser `Origin` allow-list; `None`: any origin.
    pub origins: Option<Vec<String>>,
    /// `[auth.anonymous]`: what a connection without a token may do.
    pub anonymous: Permissions,
    /// How long before a token's `exp` the server sends `expiring`.
    pub refresh_notice: Duration,
    /// How long a `POST /v1/revoke` is kept after its `before` (what bounds their memory).
    pub revocation_ttl: Duration,
}

impl AuthConfig {
    /// Default of `jwks_refresh`.
    pub const JWKS_REFRESH: Duration = Duration::from_secs(300);
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            hs256_secret: None,
            public_key_file: None,
            public_key_files: Vec::new(),
            jwks_url: None,
            jwks_refresh: AuthConfig::JWKS_REFRESH,
            issuer: None,
            audience: None,
            api_keys: Vec::new(),
            admin_keys: Vec::new(),
            origins: None,
            anonymous: Permissions::default(),
            refresh_notice: Duration::from_secs(30),
            revocation_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Publish and subscribe permissions, as lists of patterns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// One `[[topics]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub pattern: String,
    /// Messages kept per topic; 0: none.
    pub history: usize,
    pub history_ttl: Option<Duration>,
    /// Keep history in the durable store (with `--data-dir`).
    pub persist: bool,
    pub dedup_window: Duration,
    pub ack_wait: Duration,
    pub max_deliveries: u32,
    pub max_rewind: usize,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis servers, one per shard; topics are spread over them by hash, so every
    /// node must list the same servers in the same order.
    pub redis: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 7400)),
            max_frame: 65536,
            heartbeat: Duration::from_secs(25),
            compression: Compression::Auto,
            session: SessionConfig::default(),
            limits: LimitsConfig::default(),
            auth: None,
            topics: Vec::new(),
            cluster: None,
            proxy: None,
            webhooks: Vec::new(),
            data_dir: None,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            ttl: Duration::from_secs(120),
            buffer_messages: 1024,
            buffer_bytes: 4 << 20,
            slow_consumer: SlowConsumer::DropOldest,
            write_delay: WriteDelay::Auto,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_subscriptions: 1000,
            max_connections: 100_000,
            max_connections_per_ip: 10_000,
            publish_rate: 0,
            max_pending_requests: 100,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// The settings used for topics that no `[[topics]]` entry matches; the pattern is `**`.
impl Default for TopicConfig {
    fn default() -> TopicConfig {
        TopicConfig {
            pattern: "**".into(),
            history: 0,
            history_ttl: None,
            persist: false,
            dedup_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
            max_deliveries: 5,
            max_rewind: 1000,
        }
    }
}

impl Config {
    /// Parses and validates a configuration file's text; the first error (by line) if any.
    pub fn from_toml_str(src: &str) -> Result<Config, ConfigError> {
        Checked::text(src).into_result()
    }

    /// Reads, parses and validates a configuration file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Checked::file(path).into_result()
    }

    /// Semantic checks that the types alone do not express (ranges, required non-empty
    /// strings): the first problem. The error's key is the dotted path of the offending
    /// setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match validate::problems(self).into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The effective configuration as TOML, for `herald config show`. The result reads back to an equal `Config` (except `data_dir`, which is not a file setting and is
    /// written as a comment).
    pub fn to_toml(&self) -> String {
        show::to_toml(self)
    }
}

/// A configuration text read to the end, with every error found on the way (what
/// `herald config check` reports): TOML syntax (the first only: past it the text cannot be
/// read), unknown keys, bad values and failed validation, sorted by line. Errors that only
/// compiling a section can find (`[auth]` key files) are added with [`Checked::add`].
#[derive(Debug)]
pub struct Checked {
    /// The configuration as far as it could be read (bad values keep their defaults);
    /// `None` when the file could not be read or parsed.
    pub config: Option<Config>,
    pub errors: Vec<ConfigError>,
    lines: schema::Lines,
    file: Option<PathBuf>,
}

impl Checked {
    /// Checks a configuration file's text.
    pub fn text(src: &str) -> Checked {
        let doc = match schema::parse_document(src) {
            Ok(doc) => doc,
            Err(e) => return Checked::failed(e),
        };
        let (config, lines, mut errors) = schema::read_config(src, doc.get_ref());
        for e in validate::problems(&config) {
            let line = e.key().and_then(|key| lines.line_of(key));
            errors.push(e.at_line(line));
        }
        // Stable: errors of one line keep their reading order.
        errors.sort_by_key(|e| e.line().unwrap_or(usize::MAX));
        Checked {
            config: Some(config),
            errors,
            lines,
            file: None,
        }
    }

    /// Reads and checks a configuration file; errors name the file.
    pub fn file(path: &Path) -> Checked {
        let mut checked = match std::fs::read_to_string(path) {
            Ok(src) => Checked::text(&src),
            Err(source) => Checked::failed(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            }),
        };
        checked.errors = std::mem::take(&mut checked.errors)
            .into_iter()
            .map(|e| e.in_file(path))
            .collect();
        checked.file = Some(path.to_path_buf());
        checked
    }

    fn failed(e: ConfigError) -> Checked {
        Checked {
            config: None,
            errors: vec![e],
            lines: schema::Lines::default(),
            file: None,
        }
    }

    /// Adds an error found later, at the line of its key — unless an error about that key is
    /// already known (the first says it better).
    pub fn add(&mut self, e: ConfigError) {
        if e.key().is_some() && self.errors.iter().any(|known| known.key() == e.key()) {
            return;
        }
        let line = e.key().and_then(|key| self.lines.line_of(key));
        let mut e = e.at_line(line);
        if let Some(file) = &self.file {
            e = e.in_file(file);
        }
        let at = self.errors.partition_point(|known| {
            known.line().unwrap_or(usize::MAX) <= e.line().unwrap_or(usize::MAX)
        });
        self.errors.insert(at, e);
    }

    /// The configuration, or the first error.
    pub fn into_result(self) -> Result<Config, ConfigError> {
        match (self.errors.into_iter().next(), self.config) {
            (Some(e), _) => Err(e),
            (None, Some(config)) => Ok(config),
            // Not built: a configuration that could not be read comes with its error.
            (None, None) => Err(ConfigError::invalid(
                "",
                "the configuration could not be read",
            )),
        }
    }
}
