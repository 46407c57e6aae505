//! Reads: `history` and `presence` (PROTOCOL.md §4, §8).

use std::sync::Arc;

use serde::Serialize;

use super::{Bus, BusError};
use crate::event::Event;
use crate::topic::Topic;

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
    pub fn history(
        &self,
        topic: &str,
        since: Option<u64>,
        limit: Option<u64>,
    ) -> Result<HistoryPage, BusError> {
        let (topic, limit) = check_history(topic, limit)?;
        let entry = self.inner.topics.entry(&topic);
        let mut state = entry.lock();
        state.trim_by_age(&entry.settings(), crate::event::now_ms());
        let messages = match since {
            Some(after) => state.after(after, limit as usize),
            None => state.latest(limit as usize),
        };
        Ok(HistoryPage {
            epoch: state.epoch.clone(),
            messages,
        })
    }

    /// The sessions present on an exact topic.
    pub fn presence(&self, topic: &str) -> Result<PresenceList, BusError> {
        let topic = Topic::parse(topic)?;
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
        Ok(PresenceList {
            count: clients.len(),
            clients,
        })
    }
}

/// A `history` call's topic and limit, checked.
pub(super) fn check_history(topic: &str, limit: Option<u64>) -> Result<(Topic, u64), BusError> {
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
