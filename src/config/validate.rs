//! Semantic checks: ranges and required contents that the types do not express. Each error
//! carries the dotted key, which `Config::from_toml_str` turns into a line of the file.
//!
//! Pattern syntax is `crate::topic`'s: `[[topics]]` patterns are checked with it here, so that
//! `herald config check` and a reload point at the line of a bad one.

mod backend;

use std::time::Duration;

use super::error::ConfigError;
use super::units::{MAX_DURATION, format_duration, format_size};
use super::{AuthConfig, ClusterConfig, Config, TopicConfig};

/// Smallest and largest accepted `max_frame`.
pub const MAX_FRAME_RANGE: std::ops::RangeInclusive<usize> = 256..=16 << 20;
/// Smallest accepted `heartbeat` (pinging faster only burns CPU) and largest (a dead peer must
/// be noticed within hours, not days).
pub const HEARTBEAT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);
/// Smallest accepted `session.buffer_bytes`.
pub const MIN_BUFFER_BYTES: usize = 1024;

/// Every problem of `c`, in the order of the file's sections.
pub(super) fn problems(c: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut check = |r: Result<(), ConfigError>| {
        if let Err(e) = r {
            errors.push(e);
        }
    };
    check(top_level(c));
    check(duration("session.ttl", c.session.ttl));
    check(at_least(
        "session.buffer_messages",
        c.session.buffer_messages,
        1,
    ));
    check(buffer_bytes(c.session.buffer_bytes));
    let l = &c.limits;
    check(at_least("limits.max_subscriptions", l.max_subscriptions, 1));
    check(at_least("limits.max_connections", l.max_connections, 1));
    check(at_least(
        "limits.max_connections_per_ip",
        l.max_connections_per_ip,
        1,
    ));
    check(at_least(
        "limits.max_pending_requests",
        l.max_pending_requests,
        1,
    ));
    check(handshake_timeout(l.handshake_timeout));
    if let Some(auth) = &c.auth {
        validate_auth(auth, &mut check);
    }
    for (i, topic) in c.topics.iter().enumerate() {
        validate_topic(&format!("topics[{i}]"), topic, &mut check);
    }
    if let Some(cluster) = &c.cluster {
        check(validate_cluster(c, cluster));
    }
    if let Some(proxy) = &c.proxy {
        backend::validate_proxy(proxy, &mut check);
    }
    for (i, hook) in c.webhooks.iter().enumerate() {
        backend::validate_webhook(&format!("webhooks[{i}]"), hook, &mut check);
    }
    errors
}

fn top_level(c: &Config) -> Result<(), ConfigError> {
    if !MAX_FRAME_RANGE.contains(&c.max_frame) {
        return Err(ConfigError::invalid(
            "max_frame",
            format!(
                "`max_frame` must be between {} bytes and {} (found {})",
                MAX_FRAME_RANGE.start(),
                format_size(*MAX_FRAME_RANGE.end() as u64),
                c.max_frame
            ),
        ));
    }
    if !HEARTBEAT_RANGE.contains(&c.heartbeat) {
        return Err(ConfigError::invalid(
            "heartbeat",
            format!(
                "`heartbeat` must be between {} and {} (found {})",
                format_duration(*HEARTBEAT_RANGE.start()),
                format_duration(*HEARTBEAT_RANGE.end()),
                format_duration(c.heartbeat)
            ),
        ));
    }
    Ok(())
}

fn buffer_bytes(bytes: usize) -> Result<(), ConfigError> {
    if bytes < MIN_BUFFER_BYTES {
        return Err(ConfigError::invalid(
            "session.buffer_bytes",
            format!("`session.buffer_bytes` must be at least 1KiB (found {bytes})"),
        ));
    }
    Ok(())
}

fn handshake_timeout(t: Duration) -> Result<(), ConfigError> {
    duration("limits.handshake_timeout", t)?;
    if t < Duration::from_millis(10) {
        return Err(ConfigError::invalid(
            "limits.handshake_timeout",
            "`limits.handshake_timeout` must be at least 10ms",
        ));
    }
    Ok(())
}

fn validate_cluster(c: &Config, cluster: &ClusterConfig) -> Result<(), ConfigError> {
    if c.data_dir.is_some() {
        return Err(ConfigError::invalid(
            "cluster.redis",
            "a data directory and cluster mode cannot be combined: in cluster mode \
             history lives in Redis"
                .to_owned(),
        ));
    }
    if cluster.redis.is_empty() {
        return Err(ConfigError::invalid(
            "cluster.redis",
            "`cluster.redis` must name at least one redis:// URL".to_owned(),
        ));
    }
    for (i, url) in cluster.redis.iter().enumerate() {
        let trimmed = url.trim();
        if !(trimmed.starts_with("redis://") || trimmed.starts_with("rediss://")) {
            return Err(ConfigError::invalid(
                "cluster.redis",
                format!(r#"`cluster.redis` must be a redis:// or rediss:// URL (found "{url}")"#),
            ));
        }
        if cluster.redis[..i].iter().any(|u| u.trim() == trimmed) {
            return Err(ConfigError::invalid(
                "cluster.redis",
                format!(r#"`cluster.redis` lists "{url}" twice: each shard is one server"#),
            ));
        }
    }
    Ok(())
}

fn validate_auth(a: &AuthConfig, check: &mut impl FnMut(Result<(), ConfigError>)) {
    if let Some(secret) = &a.hs256_secret {
        check(not_empty("auth.hs256_secret", secret));
    }
    if let Some(file) = &a.public_key_file {
        check(not_empty("auth.public_key_file", &file.to_string_lossy()));
    }
    let files: Vec<String> = a
        .public_key_files
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    check(all_not_empty("auth.public_key_files", &files));
    if let Some(url) = &a.jwks_url {
        check(jwks_url(url));
    }
    check(jwks_refresh(a.jwks_refresh));
    if let Some(issuer) = &a.issuer {
        check(not_empty("auth.issuer", issuer));
    }
    if let Some(audience) = &a.audience {
        check(audience_list(audience));
    }
    check(duration("auth.refresh_notice", a.refresh_notice));
    check(revocation_ttl(a.revocation_ttl));
    check(all_not_empty("auth.api_keys", &a.api_keys));
    check(all_not_empty("auth.admin_keys", &a.admin_keys));
    if let Some(origins) = &a.origins {
        check(all_not_empty("auth.origins", origins));
    }
    check(all_not_empty(
        "auth.anonymous.publish",
        &a.anonymous.publish,
    ));
    check(all_not_empty(
        "auth.anonymous.subscribe",
        &a.anonymous.subscribe,
    ));
}

/// Smallest accepted `auth.jwks_refresh`: faster only loads the identity provider.
pub const MIN_JWKS_REFRESH: Duration = Duration::from_secs(1);

/// `http://host[:port]/path` only: the server has no TLS client (see `auth::fetch`).
fn jwks_url(url: &str) -> Result<(), ConfigError> {
    http_url("auth.jwks_url", url)
}

/// An `http://` URL with a host. Herald links no TLS client (see `auth::fetch`): an
/// `https://` one is refused with the way around it.
pub(super) fn http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    not_empty(key, url)?;
    let uri: hyper::Uri = url.trim().parse().map_err(|e| {
        ConfigError::invalid(key, format!(r#"`{key}` is not a URL ("{url}"): {e}"#))
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "`{key}` must be an http:// URL (found \"{url}\"): Herald has no TLS \
                     client; reach https endpoints over a trusted network or through a local \
                     proxy"
                ),
            ));
        }
        _ => {
            return Err(ConfigError::invalid(
                key,
                format!(r#"`{key}` must be an http:// URL (found "{url}")"#),
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(
            key,
            format!(r#"`{key}` has no host (found "{url}")"#),
        ));
    }
    Ok(())
}

fn jwks_refresh(d: Duration) -> Result<(), ConfigError> {
    let key = "auth.jwks_refresh";
    duration(key, d)?;
    if d < MIN_JWKS_REFRESH {
        return Err(ConfigError::invalid(
            key,
            format!(
                "`{key}` must be at least {} (found {})",
                format_duration(MIN_JWKS_REFRESH),
                format_duration(d)
            ),
        ));
    }
    Ok(())
}

fn audience_list(audience: &[String]) -> Result<(), ConfigError> {
    let key = "auth.audience";
    if audience.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("`{key}` cannot be an empty list (leave it out to accept any audience)"),
        ));
    }
    all_not_empty(key, audience)
}

fn validate_topic(path: &str, t: &TopicConfig, check: &mut impl FnMut(Result<(), ConfigError>)) {
    check(topic_pattern(path, &t.pattern));
    if let Some(ttl) = t.history_ttl {
        check(history_ttl(path, ttl));
    }
    check(duration(&format!("{path}.dedup_window"), t.dedup_window));
    check(ack_wait(path, t.ack_wait));
    check(at_least(
        &format!("{path}.max_deliveries"),
        t.max_deliveries as usize,
        1,
    ));
}

pub(super) fn topic_pattern(path: &str, pattern: &str) -> Result<(), ConfigError> {
    let key = format!("{path}.pattern");
    not_empty(&key, pattern)?;
    if let Err(e) = crate::topic::Pattern::parse(pattern) {
        return Err(ConfigError::invalid(&key, format!("`{key}`: {e}")));
    }
    Ok(())
}

fn history_ttl(path: &str, ttl: Duration) -> Result<(), ConfigError> {
    let key = format!("{path}.history_ttl");
    duration(&key, ttl)?;
    if ttl.is_zero() {
        return Err(ConfigError::invalid(
            &key,
            format!("`{key}` must be longer than 0s (leave it out to keep history forever)"),
        ));
    }
    Ok(())
}

fn ack_wait(path: &str, wait: Duration) -> Result<(), ConfigError> {
    let key = format!("{path}.ack_wait");
    duration(&key, wait)?;
    if wait < Duration::from_millis(1) {
        return Err(ConfigError::invalid(
            &key,
            format!("`{key}` must be at least 1ms"),
        ));
    }
    Ok(())
}

fn at_least(key: &str, value: usize, min: usize) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::invalid(
            key,
            format!("`{key}` must be at least {min} (found {value})"),
        ));
    }
    Ok(())
}

/// Durations built in code (not parsed) may exceed what timers can handle.
pub(super) fn duration(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value > MAX_DURATION {
        return Err(ConfigError::invalid(
            key,
            format!("`{key}` is too long (at most 100 years)"),
        ));
    }
    Ok(())
}

/// A revocation kept for less than a minute would let a token issued just before it back in
/// almost at once; one kept for years is memory that never comes back.
fn revocation_ttl(value: Duration) -> Result<(), ConfigError> {
    let range = Duration::from_secs(60)..=Duration::from_secs(366 * 24 * 3600);
    if !range.contains(&value) {
        return Err(ConfigError::invalid(
            "auth.revocation_ttl",
            "`auth.revocation_ttl` must be 1m to 366d (it should exceed your longest token lifetime)",
        ));
    }
    Ok(())
}

pub(super) fn not_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("`{key}` cannot be empty"),
        ));
    }
    Ok(())
}

fn all_not_empty(key: &str, values: &[String]) -> Result<(), ConfigError> {
    if values.iter().any(|v| v.trim().is_empty()) {
        return Err(ConfigError::invalid(
            key,
            format!("`{key}` cannot contain an empty string"),
        ));
    }
    Ok(())
}
