//! The schema of `[proxy]` (with its `[[proxy.subscribe]]` and `[[proxy.publish]]` routes) and
//! `[[webhooks]]`.

use super::super::{ProxyConfig, ProxyRoute, WebhookConfig};
use super::{Reader, Table, join, required};
use crate::config::error::line_of;
use crate::config::value::Field;

pub(super) const PROXY_KEYS: &[&str] = &["timeout", "connect", "rpc", "subscribe", "publish"];
const SUBSCRIBE_ROUTE_KEYS: &[&str] = &["pattern", "url"];
const PUBLISH_ROUTE_KEYS: &[&str] = &["pattern", "url", "skip_api_keys"];
const WEBHOOK_KEYS: &[&str] = &["url", "events", "secret", "retry_for", "queue"];

impl<'a, 'i> Reader<'_> {
    pub(super) fn proxy(&mut self, t: &Table<'a, 'i>) -> ProxyConfig {
        let mut p = ProxyConfig::default();
        self.set(t, "timeout", &mut p.timeout, Field::duration);
        self.set(t, "connect", &mut p.connect, |f| f.string().map(Some));
        self.set(t, "rpc", &mut p.rpc, |f| f.string().map(Some));
        p.subscribe = self.routes(t, "subscribe", SUBSCRIBE_ROUTE_KEYS);
        p.publish = self.routes(t, "publish", PUBLISH_ROUTE_KEYS);
        p
    }

    /// `[[proxy.<key>]]` entries; one without `pattern` or `url` is an error and left out.
    fn routes(&mut self, t: &Table<'a, 'i>, key: &str, known: &[&str]) -> Vec<ProxyRoute> {
        let mut routes = Vec::new();
        let Some(f) = self.field(t, key) else {
            return routes;
        };
        let Some(entries) = self.ok(f.array_of_tables()) else {
            return routes;
        };
        let name = format!("[[{}]]", join(&t.path, key));
        for (i, (offset, entry)) in entries.into_iter().enumerate() {
            let path = format!("{}[{i}]", join(&t.path, key));
            let line = line_of(self.src, offset);
            self.lines.0.insert(path.clone(), line);
            let e = self.open(entry, &path, &name, known);
            let mut route = ProxyRoute {
                pattern: String::new(),
                url: String::new(),
                skip_api_keys: false,
            };
            let mut complete = true;
            for (k, slot) in [("pattern", &mut route.pattern), ("url", &mut route.url)] {
                match self.field(&e, k) {
                    None => {
                        self.errors.push(required(&join(&path, k), line));
                        complete = false;
                    }
                    Some(f) => match self.ok(f.string()) {
                        Some(v) => *slot = v,
                        None => complete = false,
                    },
                }
            }
            self.set(
                &e,
                "skip_api_keys",
                &mut route.skip_api_keys,
                Field::boolean,
            );
            if complete {
                routes.push(route);
            }
        }
        routes
    }

    /// `[[webhooks]]` entries; one without `url` is an error and left out.
    pub(super) fn webhooks(&mut self, top: &Table<'a, 'i>) -> Vec<WebhookConfig> {
        let mut hooks = Vec::new();
        let Some(f) = self.field(top, "webhooks") else {
            return hooks;
        };
        let Some(entries) = self.ok(f.array_of_tables()) else {
            return hooks;
        };
        for (i, (offset, entry)) in entries.into_iter().enumerate() {
            let path = format!("webhooks[{i}]");
            let line = line_of(self.src, offset);
            self.lines.0.insert(path.clone(), line);
            let e = self.open(entry, &path, "[[webhooks]]", WEBHOOK_KEYS);
            let mut hook = WebhookConfig {
                url: String::new(),
                events: Vec::new(),
                secret: None,
                retry_for: WebhookConfig::RETRY_FOR,
                queue: WebhookConfig::QUEUE,
            };
            let Some(url) = self.field(&e, "url") else {
                self.errors.push(required(&join(&path, "url"), line));
                continue;
            };
            let Some(url) = self.ok(url.string()) else {
                continue;
            };
            hook.url = url;
            self.set(&e, "events", &mut hook.events, Field::strings);
            self.set(&e, "secret", &mut hook.secret, |f| f.string().map(Some));
            self.set(&e, "retry_for", &mut hook.retry_for, Field::duration);
            self.set(&e, "queue", &mut hook.queue, Field::integer);
            hooks.push(hook);
        }
        hooks
    }
}
