//! What changed between two configurations, setting by setting, for the reload log.
//!
//! Both sides are rendered with `Config::to_toml` (the same form `herald config show`
//! prints) and compared key by key, so every setting — including ones added later — is
//! covered without a hand-written comparison per field.

use std::collections::BTreeMap;

use crate::config::Config;

/// One setting that differs. Values are as written in TOML; secrets are masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Dotted path: `limits.max_subscriptions`, `topics[1].history`, `auth.api_keys`.
    pub key: String,
    /// `(absent)` when the setting was not there.
    pub old: String,
    pub new: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.key, self.old, self.new)
    }
}

const ABSENT: &str = "(absent)";

/// Keys whose values must not reach a log.
fn is_secret(key: &str) -> bool {
    key.contains("secret") || key.ends_with("_keys")
}

/// Every setting that differs between `old` and `new`, in key order.
pub fn changes(old: &Config, new: &Config) -> Vec<Change> {
    let (a, b) = (flatten(old), flatten(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| match v {
                None => ABSENT.to_string(),
                Some(_) if is_secret(k) => "(hidden)".to_string(),
                Some(v) => v.clone(),
            };
            Change {
                key: k.clone(),
                old: show(a.get(k)),
                new: show(b.get(k)),
            }
        })
        .collect()
}

fn flatten(c: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // `to_toml` output always parses (the config tests read it back); an empty map on the
    // impossible failure only makes the log say less.
    if let Ok(table) = toml::from_str::<toml::Table>(&c.to_toml()) {
        walk("", &toml::Value::Table(table), &mut out);
    }
    out
}

fn walk(path: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&p, v, out);
            }
        }
        toml::Value::Array(items) if items.iter().all(|i| i.is_table()) && !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                walk(&format!("{path}[{i}]"), item, out);
            }
        }
        other => {
            out.insert(path.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, TopicConfig};

    #[test]
    fn reports_each_changed_setting() {
        let old = Config::default();
        assert!(changes(&old, &old).is_empty());
        let mut new = old.clone();
        new.session.ttl = std::time::Duration::from_secs(30);
        new.topics.push(TopicConfig {
            pattern: "chat/**".into(),
            history: 10,
            ..TopicConfig::default()
        });
        let c = changes(&old, &new);
        let keys: Vec<&str> = c.iter().map(|c| c.key.as_str()).collect();
        assert!(keys.contains(&"session.ttl"), "{keys:?}");
        assert!(keys.contains(&"topics[0].history"), "{keys:?}");
        let ttl = c.iter().find(|c| c.key == "session.ttl").unwrap();
        assert_eq!(ttl.to_string(), r#"session.ttl: "2m" -> "30s""#);
        let hist = c.iter().find(|c| c.key == "topics[0].history").unwrap();
        assert_eq!((hist.old.as_str(), hist.new.as_str()), (ABSENT, "10"));
    }

    #[test]
    fn secrets_are_hidden() {
        let old = Config {
            auth: Some(AuthConfig {
                hs256_secret: Some("one".into()),
                api_keys: vec!["k1".into()],
                ..AuthConfig::default()
            }),
            ..Config::default()
        };
        let mut new = old.clone();
        if let Some(a) = new.auth.as_mut() {
            a.hs256_secret = Some("two".into());
            a.api_keys = vec!["k2".into()];
        }
        let c = changes(&old, &new);
        assert_eq!(c.len(), 2, "{c:?}");
        for change in c {
            let text = change.to_string();
            assert!(!text.contains("one") && !text.contains("two"), "{text}");
            assert!(!text.contains("k1") && !text.contains("k2"), "{text}");
        }
    }
}
