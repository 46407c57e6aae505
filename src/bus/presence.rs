//! Presence (PROTOCOL.md §5): the sessions subscribed to an exact topic are its members.
//!
//! Membership follows subscriptions, not sockets: a brief disconnect keeps the session and
//! so its membership; an unsubscribe or the session's expiry is a leave. Joins and leaves are
//! published to `$presence/<topic>` by the bus.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

use crate::session::{Identity, Session};

#[derive(Debug, Clone)]
pub struct Member {
    pub session: Arc<str>,
    pub identity: Arc<Identity>,
}

#[derive(Debug, Default)]
pub struct Presence {
    topics: DashMap<Arc<str>, HashMap<u64, Member>>,
}

impl Presence {
    /// Records that `session` joined `topic`; true when it was not a member yet.
    pub fn join(&self, topic: &str, session: &Session) -> bool {
        let mut members = self.topics.entry(topic.into()).or_default();
        members
            .insert(
                session.key(),
                Member {
                    session: session.id().clone(),
                    identity: session.identity(),
                },
            )
            .is_none()
    }

    /// Records that `session` left `topic`; the member when it was one.
    pub fn leave(&self, topic: &str, session: &Session) -> Option<Member> {
        let mut gone = None;
        // The closure runs whenever the topic exists; the entry goes when it empties.
        self.topics.remove_if_mut(topic, |_, members| {
            gone = members.remove(&session.key());
            members.is_empty()
        });
        gone
    }

    /// Every topic with its members (for the cluster's presence refresh).
    pub fn snapshot(&self) -> Vec<(Arc<str>, Vec<Member>)> {
        self.topics
            .iter()
            .map(|e| (e.key().clone(), e.value().values().cloned().collect()))
            .collect()
    }

    /// The members of `topic`, ordered by session id.
    pub fn members(&self, topic: &str) -> Vec<Member> {
        let mut v: Vec<Member> = self
            .topics
            .get(topic)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.session.cmp(&b.session));
        v
    }
}
