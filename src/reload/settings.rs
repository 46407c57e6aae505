//! The reloadable settings snapshot: the configuration plus what is compiled from it once,
//! so that hot paths read ready-made values (session limits, matched topic rules) instead of
//! re-deriving them per message.

use std::sync::Arc;

use crate::config::{Config, ConfigError, TopicConfig};
use crate::session;
use crate::topic::{Pattern, Topic};

/// One consistent generation of settings. Replaced whole on reload, never mutated.
#[derive(Debug)]
pub struct Settings {
    /// The configuration in effect (after a reload: the file's, except restart-only keys).
    pub config: Arc<Config>,
    /// Limits a new session starts with.
    pub session: session::Limits,
    /// `[[topics]]` in file order: the first pattern that matches a topic wins.
    topic_rules: Vec<(Pattern, Arc<TopicConfig>)>,
    /// For topics that no rule matches.
    topic_default: Arc<TopicConfig>,
}

impl Settings {
    /// Compiles a validated configuration. Fails, naming the key, on what only compiling can
    /// find (a `[[topics]]` pattern that does not parse).
    pub fn compile(config: Config) -> Result<Settings, ConfigError> {
        let mut rules = Vec::with_capacity(config.topics.len());
        for (i, t) in config.topics.iter().enumerate() {
            let pattern = Pattern::parse(&t.pattern).map_err(|e| {
                let key = format!("topics[{i}].pattern");
                ConfigError::Invalid {
                    at: Default::default(),
                    message: format!("`{key}`: {e}"),
                    key,
                }
            })?;
            rules.push((pattern, Arc::new(t.clone())));
        }
        Ok(Settings::build(config, rules))
    }

    /// Like [`Settings::compile`] for configurations built in code and never validated:
    /// `[[topics]]` entries whose pattern does not parse are left out, with a warning.
    pub fn compile_lenient(mut config: Config) -> Settings {
        let mut rules = Vec::with_capacity(config.topics.len());
        config.topics.retain(|t| match Pattern::parse(&t.pattern) {
            Ok(p) => {
                rules.push((p, Arc::new(t.clone())));
                true
            }
            Err(e) => {
                tracing::warn!(pattern = %t.pattern, error = %e, "[[topics]] entry ignored");
                false
            }
        });
        Settings::build(config, rules)
    }

    fn build(config: Config, topic_rules: Vec<(Pattern, Arc<TopicConfig>)>) -> Settings {
        Settings {
            session: session::Limits {
                buffer_messages: config.session.buffer_messages,
                buffer_bytes: config.session.buffer_bytes,
                slow_consumer: config.session.slow_consumer,
                max_subscriptions: config.limits.max_subscriptions,
            },
            topic_rules,
            topic_default: Arc::new(TopicConfig::default()),
            config: Arc::new(config),
        }
    }

    /// The `[[topics]]` settings for `topic`: the first matching entry, or the defaults.
    pub fn topic(&self, topic: &Topic) -> Arc<TopicConfig> {
        self.topic_rules
            .iter()
            .find(|(p, _)| p.matches(topic.as_str()))
            .map_or_else(|| self.topic_default.clone(), |(_, c)| c.clone())
    }

    /// The shortest `ack_wait` of any topic: how often unacked messages must be checked.
    pub fn shortest_ack_wait(&self) -> std::time::Duration {
        self.topic_rules
            .iter()
            .map(|(_, t)| t.ack_wait)
            .chain([self.topic_default.ack_wait])
            .min()
            .unwrap_or(self.topic_default.ack_wait)
    }
}
