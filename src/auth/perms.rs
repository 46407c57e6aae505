//! Permission lists: the `publish` and `subscribe` patterns of a token or of
//! `[auth.anonymous]`, compiled once per connection.

use std::sync::Arc;

use super::contain::{self, Shape};
use crate::topic::Pattern;

/// What a connection may publish to, or subscribe to.
#[derive(Clone, Debug)]
pub enum Perms {
    /// No `[auth]` configured: everything (the `$` rules of PROTOCOL.md §1 still hold,
    /// because patterns enforce them themselves).
    All,
    /// Exactly the topics these patterns match.
    Only(Arc<[Grant]>),
}

/// One allowed pattern, with its shape for containment questions.
#[derive(Clone, Debug)]
pub struct Grant {
    pattern: Pattern,
    /// `None` when the pattern is too large to reason about: it still matches topics, but
    /// is not used to grant subscriptions.
    shape: Option<Shape>,
}

impl Perms {
    /// Nothing at all.
    pub fn none() -> Perms {
        Perms::Only(Arc::from([]))
    }

    /// Compiles a list of patterns; the error names the first invalid one.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Perms, String> {
        let mut grants = Vec::with_capacity(patterns.len());
        for p in patterns {
            let p = p.as_ref();
            let pattern = Pattern::parse(p).map_err(|e| format!("invalid pattern '{p}': {e}"))?;
            grants.push(Grant {
                shape: Shape::of(&pattern),
                pattern,
            });
        }
        Ok(Perms::Only(grants.into()))
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Perms::All)
    }

    /// Whether a message on `topic` is allowed (to publish, or to be delivered).
    pub fn allows_topic(&self, topic: &str) -> bool {
        match self {
            Perms::All => true,
            Perms::Only(grants) => grants.iter().any(|g| g.pattern.matches(topic)),
        }
    }

    /// Whether every topic `pattern` can match is allowed: the check for `sub`.
    pub fn allows_pattern(&self, pattern: &Pattern) -> bool {
        match self {
            Perms::All => true,
            Perms::Only(grants) => {
                if grants.is_empty() {
                    return false;
                }
                let Some(p) = Shape::of(pattern) else {
                    return false;
                };
                let shapes: Vec<Shape> = grants.iter().filter_map(|g| g.shape.clone()).collect();
                contain::contained(&p, &shapes)
            }
        }
    }

    /// The patterns of `patterns` that these permissions contain (all of them under
    /// [`Perms::All`]): what a backend may grant within a token's permissions, never more.
    pub fn narrowed<S: AsRef<str>>(&self, patterns: &[S]) -> Result<Perms, String> {
        let Perms::Only(wanted) = Perms::parse(patterns)? else {
            return Ok(Perms::none());
        };
        let kept: Vec<Grant> = wanted
            .iter()
            .filter(|g| self.allows_pattern(&g.pattern))
            .cloned()
            .collect();
        Ok(Perms::Only(kept.into()))
    }

    /// [`Perms::allows_pattern`] for a pattern string; an invalid pattern is not allowed.
    pub fn allows_pattern_str(&self, pattern: &str) -> bool {
        Pattern::parse(pattern).is_ok_and(|p| self.allows_pattern(&p))
    }

    /// The allowed patterns (empty for [`Perms::All`]).
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        let grants: &[Grant] = match self {
            Perms::All => &[],
            Perms::Only(g) => g,
        };
        grants.iter().map(|g| g.pattern.as_str())
    }
}

/// The delivery filter of a session (PROTOCOL.md §7: nothing outside the subscribe
/// permissions is ever delivered, whatever the subscribe-time check decided).
impl crate::session::DeliveryFilter for Perms {
    fn allows(&self, topic: &str) -> bool {
        self.allows_topic(topic)
    }
    fn allows_pattern(&self, pattern: &crate::topic::Pattern) -> bool {
        Perms::allows_pattern(self, pattern)
    }
}
