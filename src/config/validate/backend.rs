//! Checks of `[proxy]` and `[[webhooks]]`.

use std::time::Duration;

use super::{ConfigError, duration, http_url, not_empty, topic_pattern};
use crate::config::{ProxyConfig, WebhookConfig};

/// `proxy.timeout`: a backend call may take this long; past a minute a client would have
/// given up long before.
const TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(60);
/// `webhooks[].retry_for`: at least one retry's worth, at most a week of keeping events.
const RETRY_FOR_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(7 * 24 * 3600);
/// `webhooks[].queue`: events kept per endpoint while it is down (each some hundred bytes).
const QUEUE_RANGE: std::ops::RangeInclusive<usize> = 1..=1_000_000;

pub(super) fn validate_proxy(p: &ProxyConfig, check: &mut impl FnMut(Result<(), ConfigError>)) {
    if !TIMEOUT_RANGE.contains(&p.timeout) {
        check(Err(ConfigError::invalid(
            "proxy.timeout",
            "`proxy.timeout` must be between 1ms and 60s",
        )));
    }
    if let Some(url) = &p.connect {
        check(http_url("proxy.connect", url));
    }
    if let Some(url) = &p.rpc {
        check(http_url("proxy.rpc", url));
    }
    for (kind, routes) in [("subscribe", &p.subscribe), ("publish", &p.publish)] {
        for (i, r) in routes.iter().enumerate() {
            let path = format!("proxy.{kind}[{i}]");
            check(topic_pattern(&path, &r.pattern));
            check(http_url(&format!("{path}.url"), &r.url));
        }
    }
}

pub(super) fn validate_webhook(
    path: &str,
    w: &WebhookConfig,
    check: &mut impl FnMut(Result<(), ConfigError>),
) {
    check(http_url(&format!("{path}.url"), &w.url));
    for e in &w.events {
        if !WebhookConfig::EVENTS.contains(&e.as_str()) {
            let key = format!("{path}.events");
            check(Err(ConfigError::invalid(
                &key,
                format!(
                    "`{key}`: unknown event \"{e}\" (known: {})",
                    WebhookConfig::EVENTS.join(", ")
                ),
            )));
        }
    }
    if let Some(secret) = &w.secret {
        check(not_empty(&format!("{path}.secret"), secret));
    }
    let key = format!("{path}.retry_for");
    check(duration(&key, w.retry_for));
    if !RETRY_FOR_RANGE.contains(&w.retry_for) {
        check(Err(ConfigError::invalid(
            &key,
            format!("`{key}` must be between 1s and 7d"),
        )));
    }
    if !QUEUE_RANGE.contains(&w.queue) {
        let key = format!("{path}.queue");
        check(Err(ConfigError::invalid(
            &key,
            format!("`{key}` must be between 1 and 1000000"),
        )));
    }
}
