//! Reads: `history`, `presence` and the topic list (PROTOCOL.md §4, §8, §9).
//!
//! One call per query, the same on a single node and in a cluster: each checks its
//! arguments here, then asks the [`Backplane`](super::backplane::Backplane), which answers
//! from this node's state (the `*_here` functions below) or from Redis.

use std::sync::Arc;

use serde::Serialize;

use super::{Bus, BusError, TopicRow};
use crate::event::Event;
use crate::store::TopicInfo;
use crate::topic::{Pattern, Topic};

/// Most messages one `history` call returns.
pub const HISTORY_LIMIT_MAX: u64 = 1000;
/// Messages a `history` call returns without `limit`.
pub const HISTORY_LIMIT_DEFAULT: u64 = 100;

/// One page of a topic's history, oldest first.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub epoch: Arc<str>,
    pub messages: Vec<Arc<Event>>,
}

/// The members of a topic.
#[derive(Debug, Clone, Serialize)]
pub struct PresenceList {
    pub count: usize,
    pub clients: Vec<crate::protocol::PresenceClient>,
}

impl Bus {
    /// A topic's stored messages: with `since`, the first `limit` after that offset;
    /// without, the newest `limit`.
    pub async fn history(
        &self,
        topic: &str,
        since: Option<u64>,
        limit: Option<u64>,
    ) -> Result<HistoryPage, BusError> {
        let (topic, limit) = check_history(topic, limit)?;
        self.inner
            .backplane
            .history(self, &topic, since, limit as usize)
            .await
    }

    /// The sessions present on an exact topic, on every node.
    pub async fn presence(&self, topic: &str) -> Result<PresenceList, BusError> {
        let topic = Topic::parse(topic)?;
        self.inner.backplane.presence(self, &topic).await
    }

    /// Known topics matching `pattern` (all when `None`), with their offsets, epochs and the
    /// number of this node's subscriptions that match each (in a cluster the other nodes'
    /// are theirs).
    pub async fn topics(&self, pattern: Option<&str>) -> Result<Vec<TopicRow>, BusError> {
        let pattern = pattern.map(Pattern::parse).transpose()?;
        self.inner.backplane.topics(self, pattern.as_ref()).await
    }

    /// [`Bus::history`] from this node's topic table.
    pub(super) fn history_here(
        &self,
        topic: &Topic,
        since: Option<u64>,
        limit: usize,
    ) -> HistoryPage {
        let entry = self.inner.topics.entry(topic);
        let mut state = entry.lock();
        state.trim_by_age(&entry.settings(), crate::event::now_ms());
        let messages = match since {
            Some(after) => state.after(after, limit),
            None => state.latest(limit),
        };
        HistoryPage {
            epoch: state.epoch.clone(),
            messages,
        }
    }

    /// [`Bus::topics`] from this node's topic table.
    pub(super) fn topics_here(&self, pattern: Option<&Pattern>) -> Vec<TopicRow> {
        self.inner
            .topics
            .list()
            .into_iter()
            .filter(|t: &TopicInfo| pattern.is_none_or(|p| p.matches(t.topic.as_str())))
            .map(|t| TopicRow {
                subscribers: self.inner.router.matches(t.topic.as_str()).len(),
                topic: t.topic.as_str().to_owned(),
                offset: t.offset,
                epoch: t.epoch.to_string(),
            })
            .collect()
    }

    /// [`Bus::presence`] from this node's members.
    pub(super) fn presence_here(&self, topic: &Topic) -> PresenceList {
        let clients: Vec<crate::protocol::PresenceClient> = self
            .inner
            .presence
            .members(topic.as_str())
            .into_iter()
            .map(|m| crate::protocol::PresenceClient {
                session: m.session.to_string(),
                user: m.identity.user.clone(),
                info: m.identity.info.clone(),
            })
            .collect();
        PresenceList {
            count: clients.len(),
            clients,
        }
    }
}

/// A `history` call's topic and limit, checked.
fn check_history(topic: &str, limit: Option<u64>) -> Result<(Topic, u64), BusError> {
    let topic = Topic::parse(topic)?;
    let limit = limit.unwrap_or(HISTORY_LIMIT_DEFAULT);
    if limit == 0 || limit > HISTORY_LIMIT_MAX {
        return Err(BusError::BadRequest(format!(
            "'limit' must be 1 to {HISTORY_LIMIT_MAX}"
        )));
    }
    Ok((topic, limit))
}

impl HistoryPage {
    /// The page as protocol rows.
    pub fn rows(&self) -> Vec<crate::protocol::HistoryMessage> {
        self.messages
            .iter()
            .map(|e| crate::protocol::HistoryMessage {
                offset: e.offset,
                topic: e.topic.as_str().to_owned(),
                data: serde_json::from_str(e.data_json()).unwrap_or(serde_json::Value::Null),
                ts: e.ts,
                msg_id: e.msg_id.as_deref().map(str::to_owned),
            })
            .collect()
    }
}
