//! Semantic checks: ranges and required contents that the types do not express. Each error
//! carries the dotted key, which `Config::from_toml_str` turns into a line of the file.
//!
//! Pattern syntax is `crate::topic`'s: `[[topics]]` patterns are checked with it here, so that
//! `herald config check` and a reload point at the line of a bad one.

use std::time::Duration;

use super::error::ConfigError;
use super::units::{MAX_DURATION, format_duration, format_size};
use super::{AuthConfig, Config, TopicConfig};

/// Smallest and largest accepted `max_frame`.
pub const MAX_FRAME_RANGE: std::ops::RangeInclusive<usize> = 256..=16 << 20;
/// Smallest accepted `heartbeat` (pinging faster only burns CPU) and largest (a dead peer must
/// be noticed within hours, not days).
pub const HEARTBEAT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);
/// Smallest accepted `session.buffer_bytes`.
pub const MIN_BUFFER_BYTES: usize = 1024;

pub(super) fn validate(c: &Config) -> Result<(), ConfigError> {
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
    duration("session.ttl", c.session.ttl)?;
    at_least("session.buffer_messages", c.session.buffer_messages, 1)?;
    if c.session.buffer_bytes < MIN_BUFFER_BYTES {
        return Err(ConfigError::invalid(
            "session.buffer_bytes",
            format!(
                "`session.buffer_bytes` must be at least 1KiB (found {})",
                c.session.buffer_bytes
            ),
        ));
    }
    let l = &c.limits;
    at_least("limits.max_subscriptions", l.max_subscriptions, 1)?;
    at_least("limits.max_connections", l.max_connections, 1)?;
    at_least("limits.max_connections_per_ip", l.max_connections_per_ip, 1)?;
    at_least("limits.max_pending_requests", l.max_pending_requests, 1)?;
    duration("limits.handshake_timeout", l.handshake_timeout)?;
    if l.handshake_timeout < Duration::from_millis(10) {
        return Err(ConfigError::invalid(
            "limits.handshake_timeout",
            "`limits.handshake_timeout` must be at least 10ms",
        ));
    }
    if let Some(auth) = &c.auth {
        validate_auth(auth)?;
    }
    for (i, topic) in c.topics.iter().enumerate() {
        validate_topic(&format!("topics[{i}]"), topic)?;
    }
    if let Some(cluster) = &c.cluster {
        if c.data_dir.is_some() {
            return Err(ConfigError::invalid(
                "cluster.redis",
                "a data directory and cluster mode cannot be combined: in cluster mode \
                 history lives in Redis"
                    .to_owned(),
            ));
        }
        let url = cluster.redis.trim();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError::invalid(
                "cluster.redis",
                format!(
                    r#"`cluster.redis` must be a redis:// or rediss:// URL (found "{}")"#,
                    cluster.redis
                ),
            ));
        }
    }
    Ok(())
}

fn validate_auth(a: &AuthConfig) -> Result<(), ConfigError> {
    if let Some(secret) = &a.hs256_secret {
        not_empty("auth.hs256_secret", secret)?;
    }
    if let Some(file) = &a.public_key_file {
        not_empty("auth.public_key_file", &file.to_string_lossy())?;
    }
    all_not_empty("auth.api_keys", &a.api_keys)?;
    all_not_empty("auth.admin_keys", &a.admin_keys)?;
    if let Some(origins) = &a.origins {
        all_not_empty("auth.origins", origins)?;
    }
    all_not_empty("auth.anonymous.publish", &a.anonymous.publish)?;
    all_not_empty("auth.anonymous.subscribe", &a.anonymous.subscribe)?;
    Ok(())
}

fn validate_topic(path: &str, t: &TopicConfig) -> Result<(), ConfigError> {
    not_empty(&format!("{path}.pattern"), &t.pattern)?;
    if let Err(e) = crate::topic::Pattern::parse(&t.pattern) {
        let key = format!("{path}.pattern");
        return Err(ConfigError::invalid(&key, format!("`{key}`: {e}")));
    }
    if let Some(ttl) = t.history_ttl {
        duration(&format!("{path}.history_ttl"), ttl)?;
        if ttl.is_zero() {
            let key = format!("{path}.history_ttl");
            return Err(ConfigError::invalid(
                &key,
                format!("`{key}` must be longer than 0s (leave it out to keep history forever)"),
            ));
        }
    }
    duration(&format!("{path}.dedup_window"), t.dedup_window)?;
    duration(&format!("{path}.ack_wait"), t.ack_wait)?;
    if t.ack_wait < Duration::from_millis(1) {
        let key = format!("{path}.ack_wait");
        return Err(ConfigError::invalid(
            &key,
            format!("`{key}` must be at least 1ms"),
        ));
    }
    at_least(
        &format!("{path}.max_deliveries"),
        t.max_deliveries as usize,
        1,
    )?;
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
fn duration(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value > MAX_DURATION {
        return Err(ConfigError::invalid(
            key,
            format!("`{key}` is too long (at most 100 years)"),
        ));
    }
    Ok(())
}

fn not_empty(key: &str, value: &str) -> Result<(), ConfigError> {
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
