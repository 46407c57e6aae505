//! `[proxy]` and `[[webhooks]]`: where the application's backend is asked (proxies) and told
//! (webhooks). PROTOCOL.md §10.

use std::time::Duration;

/// `[proxy]`: HTTP endpoints of the application's backend that decide what a connection may
/// do. Each is optional; absent ones are not asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Per call: a backend slower than this gets the operation refused `unavailable`.
    pub timeout: Duration,
    /// Asked at `hello`, before `welcome`.
    pub connect: Option<String>,
    /// Asked for every `rpc` op.
    pub rpc: Option<String>,
    /// `[[proxy.subscribe]]`: the first entry whose pattern can match a topic of the `sub`'s
    /// pattern is asked.
    pub subscribe: Vec<ProxyRoute>,
    /// `[[proxy.publish]]`: the first entry whose pattern matches the topic is asked.
    pub publish: Vec<ProxyRoute>,
}

impl ProxyConfig {
    /// Default of `timeout`.
    pub const TIMEOUT: Duration = Duration::from_secs(1);
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            timeout: ProxyConfig::TIMEOUT,
            connect: None,
            rpc: None,
            subscribe: Vec::new(),
            publish: Vec::new(),
        }
    }
}

/// One `[[proxy.subscribe]]` or `[[proxy.publish]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRoute {
    pub pattern: String,
    pub url: String,
    /// `[[proxy.publish]]` only: HTTP publishes made with an API key are not asked (the
    /// caller is the backend itself). Default false.
    pub skip_api_keys: bool,
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: String,
    /// The event types sent there; empty: all of them.
    pub events: Vec<String>,
    /// HMAC-SHA256 key of the `Herald-Signature` header; `None`: unsigned.
    pub secret: Option<String>,
    /// How long an event is retried before it is given up (and counted as dropped).
    pub retry_for: Duration,
    /// Most events waiting for this endpoint; past it the oldest are dropped.
    pub queue: usize,
}

impl WebhookConfig {
    pub const RETRY_FOR: Duration = Duration::from_secs(600);
    pub const QUEUE: usize = 10_000;
    /// Every event type, in the order the documentation lists them.
    pub const EVENTS: &[&str] = &[
        "session.opened",
        "session.closed",
        "presence.join",
        "presence.leave",
        "topic.occupied",
        "topic.vacated",
        "message.dead",
    ];
}
