//! Configuration reloads (SIGHUP): the reloadable settings every part of the server reads
//! through one cheap handle, and the rules for replacing them while connections stay up.
//!
//! The running settings are a [`Settings`] snapshot behind a [`Live`] handle (an `ArcSwap`).
//! Readers `load()` it — a few atomic operations, no lock — and see either the whole old
//! snapshot or the whole new one, never a mix. A reload builds a complete new snapshot off to
//! the side (validate → compile), then swaps it in with one store; if anything fails on the
//! way, nothing changes.
//!
//! What a reload changes, and when it takes effect:
//! - `limits.max_subscriptions`: the next `sub` of every session (existing subscriptions
//!   above a lowered cap stay); `limits.max_connections`: the next upgrade;
//!   `limits.max_pending_requests`: the next `req`; `limits.publish_rate`: every
//!   connection's next `pub` or `req` (with a fresh burst at the new rate).
//! - `session.ttl`: every session, from the next reaper pass. `session.buffer_messages`,
//!   `buffer_bytes`, `slow_consumer`: sessions opened after the reload (a live session's
//!   buffer is never resized under it).
//! - `[[topics]]`: every topic, at its next publish or read (see `Bus::reload`).
//! - `limits.max_connections_per_ip`, `limits.handshake_timeout`, `compression`: the next
//!   connection (an open one keeps the permessage-deflate it negotiated, or not).
//! - `[auth]` (through `server::ReloadHandle`, which compiles it first): API keys and admin
//!   keys from the next HTTP request, token keys and checks (key files, `jwks_url`,
//!   `jwks_refresh`, `issuer`, `audience`) from the next `hello`, anonymous permissions and
//!   the Origin allow-list from the next connection. An unchanged `jwks_url` keeps its
//!   fetched set and refresh task (`Auth::reloaded`); a new one is fetched in the
//!   background. An open connection keeps the access it was granted (a token's until it
//!   expires).
//! - `listen`, `heartbeat`, `max_frame`, `[cluster]`, `[proxy]`, `[[webhooks]]`, the data
//!   directory: only at a restart.
//!   A reload that changes them logs each such change and keeps running with the old value.
//!   (`heartbeat` and `max_frame` are read at several points of a connection's life, which
//!   must agree with each other and with what `welcome` told the client.)
//!
//! Hooking a feature in: compile what it needs from the [`Config`] in [`Settings::compile`]
//! (refusing bad input there with a [`ConfigError`] that names the key), store it as a field
//! of [`Settings`], and read it on the hot path with `bus.settings()` instead of caching it
//! at start. Anything that must *react* to a reload (refresh a cache, re-check open
//! connections against new permissions) goes in `Bus::reload` after the swap.

mod diff;
mod settings;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use diff::{Change, changes};
pub use settings::Settings;

use crate::config::{Config, ConfigError};

/// A cheap, cloneable handle on a value that is read often and replaced rarely.
#[derive(Debug)]
pub struct Live<T>(Arc<ArcSwap<T>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(self.0.clone())
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live(Arc::new(ArcSwap::from_pointee(value)))
    }

    /// The current value, for a short read. Lock-free; do not hold it across an `.await`
    /// (use [`Live::get`] for that).
    pub fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.0.load()
    }

    /// The current value, owned.
    pub fn get(&self) -> Arc<T> {
        self.0.load_full()
    }

    /// Replaces the value; readers see the new one from their next load.
    pub fn store(&self, value: T) -> Arc<T> {
        self.0.swap(Arc::new(value))
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reload {
    /// Settings now in effect.
    pub applied: Vec<Change>,
    /// Settings changed in the file that only a restart applies; the old values stay.
    pub needs_restart: Vec<Change>,
}

/// The configuration a reload to `wanted` runs with: `wanted`, except the settings that only
/// a restart can change, which keep their `current` values.
pub fn effective(current: &Config, wanted: &Config) -> Config {
    Config {
        listen: current.listen,
        heartbeat: current.heartbeat,
        max_frame: current.max_frame,
        cluster: current.cluster.clone(),
        proxy: current.proxy.clone(),
        webhooks: current.webhooks.clone(),
        data_dir: current.data_dir.clone(),
        ..wanted.clone()
    }
}

/// Plans a reload: validates `wanted`, compiles the new settings, and reports what changes.
/// Nothing is applied; the caller stores the returned settings.
pub fn plan(current: &Config, wanted: Config) -> Result<(Settings, Reload), ConfigError> {
    wanted.validate()?;
    let next = effective(current, &wanted);
    let report = Reload {
        applied: changes(current, &next),
        needs_restart: changes(&next, &wanted),
    };
    Ok((Settings::compile(next)?, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_keep_their_values() {
        let current = Config::default();
        let mut wanted = Config {
            listen: "127.0.0.1:9999".parse().unwrap(),
            ..Config::default()
        };
        wanted.limits.max_subscriptions = 7;
        let (settings, report) = plan(&current, wanted).unwrap();
        assert_eq!(settings.config.listen, current.listen);
        assert_eq!(settings.config.limits.max_subscriptions, 7);
        assert_eq!(
            report.applied,
            vec![Change {
                key: "limits.max_subscriptions".into(),
                old: "1000".into(),
                new: "7".into(),
            }]
        );
        assert_eq!(report.needs_restart.len(), 1);
        assert_eq!(report.needs_restart[0].key, "listen");
    }

    #[test]
    fn invalid_settings_are_refused() {
        let mut wanted = Config::default();
        wanted.session.buffer_messages = 0;
        let e = plan(&Config::default(), wanted).unwrap_err();
        assert!(e.to_string().contains("session.buffer_messages"), "{e}");
    }

    #[test]
    fn live_handles_share_one_value() {
        let a = Live::new(1);
        let b = a.clone();
        let old = a.store(2);
        assert_eq!((*old, **b.load(), *b.get()), (1, 2, 2));
    }
}
