//! Request-reply (PROTOCOL.md §5): a `req` is published with a unique `$inbox/…` reply
//! topic; the first publish to that inbox becomes the requester's `reply`, later ones are
//! dropped.
//!
//! Inbox names are random and unrelated to session ids (a session id is a resume
//! credential), and inbox publishes never go through the router: only the requester can
//! receive a reply, whatever anyone subscribes to.

use std::sync::Arc;

use dashmap::DashMap;

use crate::protocol::{Id, ServerFrame};
use crate::session::Outbox;

/// Topic prefix of reply inboxes.
pub const INBOX_PREFIX: &str = "$inbox/";

#[derive(Debug)]
struct Waiting {
    outbox: Arc<Outbox>,
    id: Option<Id>,
}

#[derive(Debug, Default)]
pub struct Inboxes {
    map: DashMap<Box<str>, Waiting>,
    /// In cluster mode, the node id leading every inbox name (`$inbox/<node>.<random>`),
    /// so a responder on another node knows where to send the reply.
    node: Option<Arc<str>>,
}

/// The node an inbox belongs to, in cluster mode.
pub fn node_of(inbox: &str) -> Option<&str> {
    inbox
        .strip_prefix(INBOX_PREFIX)?
        .split_once('.')
        .map(|(n, _)| n)
}

impl Inboxes {
    /// Inboxes named after `node` (cluster mode).
    pub fn for_node(node: Arc<str>) -> Inboxes {
        Inboxes {
            map: DashMap::new(),
            node: Some(node),
        }
    }

    /// A fresh inbox topic whose reply goes to `outbox` as `reply {id}`.
    pub fn open(&self, outbox: Arc<Outbox>, id: Option<Id>) -> Box<str> {
        loop {
            let a: u64 = rand::random();
            let b: u64 = rand::random();
            let name: Box<str> = match &self.node {
                Some(node) => format!("{INBOX_PREFIX}{node}.{a:016x}{b:016x}").into(),
                None => format!("{INBOX_PREFIX}{a:016x}{b:016x}").into(),
            };
            if let dashmap::Entry::Vacant(v) = self.map.entry(name.clone()) {
                v.insert(Waiting { outbox, id });
                return name;
            }
        }
    }

    /// Forgets an inbox (timed out, or no responders). True when it was still open.
    pub fn close(&self, name: &str) -> bool {
        self.map.remove(name).is_some()
    }

    /// Delivers the first reply to an inbox. False when the inbox is closed or unknown
    /// (a late or duplicate reply), which is dropped.
    pub fn reply(&self, name: &str, data: &serde_json::value::RawValue) -> bool {
        let Some((_, w)) = self.map.remove(name) else {
            return false;
        };
        let data = serde_json::from_str(data.get()).unwrap_or(serde_json::Value::Null);
        let frame = ServerFrame::Reply { id: w.id, data }.encode();
        if w.outbox.try_push_control(frame).is_err() {
            tracing::debug!("requester's control queue is full; reply dropped");
        }
        true
    }

    pub fn is_open(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}
