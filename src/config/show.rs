//! `Config::to_toml`: the effective configuration as a TOML document that reads back to the
//! same `Config` through `Config::from_toml_str`.

use std::fmt::Write;

use super::units::{format_duration, format_size};
use super::{Config, TopicConfig};

pub(super) fn to_toml(c: &Config) -> String {
    let mut out = Doc(String::new());
    out.line("# Effective Herald configuration: file, then environment, then flags.");
    out.key("listen", quote(&c.listen.to_string()));
    out.key("max_frame", c.max_frame.to_string());
    out.key("heartbeat", quote(&format_duration(c.heartbeat)));
    out.key("compression", quote(c.compression.as_str()));
    if let Some(dir) = &c.data_dir {
        out.line(&format!(
            "# data_dir = {}  (from --data-dir or HERALD_DATA_DIR; not a file setting)",
            quote(&dir.to_string_lossy())
        ));
    }

    out.section("[session]");
    let s = &c.session;
    out.key("ttl", quote(&format_duration(s.ttl)));
    out.key("buffer_messages", s.buffer_messages.to_string());
    out.key("buffer_bytes", quote(&format_size(s.buffer_bytes as u64)));
    out.key("slow_consumer", quote(s.slow_consumer.as_str()));
    out.key(
        "write_delay",
        quote(&match s.write_delay {
            super::WriteDelay::Auto => "auto".to_owned(),
            super::WriteDelay::Off => "0".to_owned(),
            super::WriteDelay::Every(d) => format_duration(d),
        }),
    );

    out.section("[limits]");
    let l = &c.limits;
    let limits: [(&str, u64); 5] = [
        ("max_subscriptions", l.max_subscriptions as u64),
        ("max_connections", l.max_connections as u64),
        ("max_connections_per_ip", l.max_connections_per_ip as u64),
        ("publish_rate", l.publish_rate.into()),
        ("max_pending_requests", l.max_pending_requests as u64),
    ];
    for (key, value) in limits {
        out.key(key, value.to_string());
    }
    out.key(
        "handshake_timeout",
        quote(&format_duration(l.handshake_timeout)),
    );

    match &c.auth {
        None => out.absent("[auth]", "anyone may publish and subscribe to anything"),
        Some(a) => {
            out.section("[auth]");
            if let Some(secret) = &a.hs256_secret {
                out.key("hs256_secret", quote(secret));
            }
            if let Some(file) = &a.public_key_file {
                out.key("public_key_file", quote(&file.to_string_lossy()));
            }
            let files: Vec<String> = a
                .public_key_files
                .iter()
                .map(|f| f.to_string_lossy().into_owned())
                .collect();
            out.key("public_key_files", list(&files));
            match &a.jwks_url {
                Some(url) => out.key("jwks_url", quote(url)),
                None => {
                    out.line("# jwks_url absent: no JWKS, tokens are checked with the keys above")
                }
            }
            out.key("jwks_refresh", quote(&format_duration(a.jwks_refresh)));
            match &a.issuer {
                Some(issuer) => out.key("issuer", quote(issuer)),
                None => out.line("# issuer absent: `iss` is not checked"),
            }
            match a.audience.as_deref() {
                Some([one]) => out.key("audience", quote(one)),
                Some(several) => out.key("audience", list(several)),
                None => out.line("# audience absent: `aud` is not checked"),
            }
            out.key("api_keys", list(&a.api_keys));
            out.key("admin_keys", list(&a.admin_keys));
            match &a.origins {
                Some(origins) => out.key("origins", list(origins)),
                None => out.line("# origins absent: any Origin is accepted"),
            }
            out.key("refresh_notice", quote(&format_duration(a.refresh_notice)));
            out.key("revocation_ttl", quote(&format_duration(a.revocation_ttl)));
            out.section("[auth.anonymous]");
            out.key("publish", list(&a.anonymous.publish));
            out.key("subscribe", list(&a.anonymous.subscribe));
        }
    }

    if c.topics.is_empty() {
        out.absent("[[topics]]", "every topic uses the defaults below");
        write_topic(&mut out, &TopicConfig::default(), true);
    }
    for topic in &c.topics {
        out.section("[[topics]]");
        write_topic(&mut out, topic, false);
    }

    match &c.cluster {
        None => out.absent("[cluster]", "a single node"),
        Some(cluster) => {
            out.section("[cluster]");
            if let [one] = cluster.redis.as_slice() {
                out.key("redis", quote(one));
            } else {
                let list: Vec<String> = cluster.redis.iter().map(|u| quote(u)).collect();
                out.key("redis", format!("[{}]", list.join(", ")));
            }
        }
    }

    match &c.proxy {
        None => out.absent("[proxy]", "the backend is not asked"),
        Some(p) => {
            out.section("[proxy]");
            out.key("timeout", quote(&format_duration(p.timeout)));
            for (key, url) in [("connect", &p.connect), ("rpc", &p.rpc)] {
                match url {
                    Some(url) => out.key(key, quote(url)),
                    None => out.line(&format!("# {key} absent: not asked")),
                }
            }
            for (kind, routes) in [("subscribe", &p.subscribe), ("publish", &p.publish)] {
                for r in routes {
                    out.section(&format!("[[proxy.{kind}]]"));
                    out.key("pattern", quote(&r.pattern));
                    out.key("url", quote(&r.url));
                    if kind == "publish" {
                        out.key("skip_api_keys", r.skip_api_keys.to_string());
                    }
                }
            }
        }
    }
    for w in &c.webhooks {
        out.section("[[webhooks]]");
        out.key("url", quote(&w.url));
        out.key("events", list(&w.events));
        if let Some(secret) = &w.secret {
            out.key("secret", quote(secret));
        }
        out.key("retry_for", quote(&format_duration(w.retry_for)));
        out.key("queue", w.queue.to_string());
    }
    out.0
}

/// One `[[topics]]` entry's keys; commented out when `commented` (the defaults, for reference).
fn write_topic(out: &mut Doc, t: &TopicConfig, commented: bool) {
    let mut keys = vec![
        ("pattern", quote(&t.pattern)),
        ("history", t.history.to_string()),
    ];
    if let Some(ttl) = t.history_ttl {
        keys.push(("history_ttl", quote(&format_duration(ttl))));
    }
    keys.extend([
        ("persist", t.persist.to_string()),
        ("dedup_window", quote(&format_duration(t.dedup_window))),
        ("ack_wait", quote(&format_duration(t.ack_wait))),
        ("max_deliveries", t.max_deliveries.to_string()),
        ("max_rewind", t.max_rewind.to_string()),
    ]);
    for (key, value) in keys {
        if commented {
            out.line(&format!("#   {key} = {value}"));
        } else {
            out.key(key, value);
        }
    }
}

struct Doc(String);

impl Doc {
    fn line(&mut self, text: &str) {
        self.0.push_str(text);
        self.0.push('\n');
    }

    fn key(&mut self, key: &str, value: String) {
        let _ = writeln!(self.0, "{key} = {value}");
    }

    fn section(&mut self, header: &str) {
        self.0.push('\n');
        self.line(header);
    }

    /// A section that is absent from the effective configuration.
    fn absent(&mut self, header: &str, meaning: &str) {
        let _ = write!(self.0, "\n# no {header}: {meaning}\n");
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}
