//! Request-reply (PROTOCOL.md §5): a `req` is published with a unique `$inbox/…` reply
//! topic; the first publish to that inbox becomes the requester's `reply`, later ones are
//! dropped.
//!
//! Inbox names are random and unrelated to session ids (a session id is a resume
//! credential), and inbox publishes never go through the router: only the requester can
//! receive a reply, whatever anyone subscribes to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Replies lost to a full control queue (see [`Inboxes::reply`]).
    dropped: AtomicU64,
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
            dropped: AtomicU64::new(0),
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

    /// Delivers the first reply to an inbox. False when the inbox is closed or unknown (a
    /// late or duplicate reply), which is dropped.
    ///
    /// The reply is queued without waiting: a responder must never be slowed by a requester
    /// that stopped reading. So when the requester's control queue is full (it has not read
    /// [`crate::session::CONTROL_QUEUE_MAX`] answers), the reply is lost: the inbox counts as
    /// answered all the same (later replies are dropped as duplicates), the requester's `req`
    /// ends in `timeout`, and the loss is counted ([`Inboxes::replies_dropped`], the
    /// `replies_dropped` statistic).
    pub fn reply(&self, name: &str, data: &serde_json::value::RawValue) -> bool {
        let Some((_, w)) = self.map.remove(name) else {
            return false;
        };
        let data = serde_json::from_str(data.get()).unwrap_or(serde_json::Value::Null);
        let frame = ServerFrame::Reply { id: w.id, data }.encode();
        if w.outbox.try_push_control(frame).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("requester's control queue is full; reply dropped");
        }
        true
    }

    /// Replies lost to a requester's full control queue, since start.
    pub fn replies_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn is_open(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::CONTROL_QUEUE_MAX;

    fn raw(s: &str) -> Box<serde_json::value::RawValue> {
        serde_json::value::RawValue::from_string(s.into()).unwrap()
    }

    #[test]
    fn a_reply_to_a_full_control_queue_is_reported_dropped() {
        let inboxes = Inboxes::default();
        let outbox = Arc::new(Outbox::new());
        let inbox = inboxes.open(outbox.clone(), Some(Id::Num(1)));
        for i in 0..CONTROL_QUEUE_MAX {
            outbox.try_push_control(i.to_string()).unwrap();
        }
        assert!(inboxes.reply(&inbox, &raw("1")));
        assert_eq!(inboxes.replies_dropped(), 1);
        // Answered all the same: a later reply is a duplicate.
        assert!(!inboxes.reply(&inbox, &raw("2")));
        let inbox = inboxes.open(Arc::new(Outbox::new()), None);
        assert!(inboxes.reply(&inbox, &raw("3")));
        assert_eq!(inboxes.replies_dropped(), 1);
    }
}
