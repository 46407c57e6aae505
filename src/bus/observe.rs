//! What the bus tells an observer about sessions and topics, for the webhooks
//! (`crate::backend::webhooks`): the bus only calls [`Observer::observe`], which must return
//! at once (it queues); it knows nothing of HTTP.

use std::sync::Arc;

use super::Bus;
use crate::session::Session;

/// One thing that happened, with what a webhook event's `data` says of it (PROTOCOL.md §10).
#[derive(Debug, Clone, PartialEq)]
pub enum BusEvent {
    /// A new session (not a resume), once its identity is known.
    SessionOpened {
        session: Arc<str>,
        user: Option<String>,
    },
    /// An announced session ended: `reason` is `"expired"` (detached past its TTL) or
    /// `"closed"` (ended on purpose, e.g. a non-resumable disconnect).
    SessionClosed {
        session: Arc<str>,
        user: Option<String>,
        reason: &'static str,
    },
    /// What presence announced on `$presence/<topic>`; `info` is the token's (`null` if none).
    PresenceJoin {
        topic: String,
        session: Arc<str>,
        user: Option<String>,
        info: serde_json::Value,
    },
    PresenceLeave {
        topic: String,
        session: Arc<str>,
        user: Option<String>,
        info: serde_json::Value,
    },
    /// A subscription pattern (the string as subscribed) got its first subscriber
    /// (cluster-wide in cluster mode).
    TopicOccupied { pattern: String },
    /// A subscription pattern lost its last subscriber (cluster-wide in cluster mode).
    TopicVacated { pattern: String },
    /// A group message went to `$dlq/<topic>` after `max_deliveries`.
    MessageDead {
        topic: String,
        group: String,
        deliveries: u32,
        data: serde_json::Value,
        msg_id: Option<String>,
    },
}

impl BusEvent {
    /// The webhook event type (one of `WebhookConfig::EVENTS`).
    pub fn name(&self) -> &'static str {
        match self {
            BusEvent::SessionOpened { .. } => "session.opened",
            BusEvent::SessionClosed { .. } => "session.closed",
            BusEvent::PresenceJoin { .. } => "presence.join",
            BusEvent::PresenceLeave { .. } => "presence.leave",
            BusEvent::TopicOccupied { .. } => "topic.occupied",
            BusEvent::TopicVacated { .. } => "topic.vacated",
            BusEvent::MessageDead { .. } => "message.dead",
        }
    }
}

/// Receives the bus's events. Called on the bus's paths, possibly under one of the bus's
/// locks (so that one pattern's occupied and vacated arrive in order): must not block and
/// must not call back into the bus.
pub trait Observer: Send + Sync + 'static {
    fn observe(&self, event: BusEvent);
}

impl Bus {
    /// Sets the one observer (the server's webhooks); later calls replace it.
    pub fn set_observer(&self, observer: Arc<dyn Observer>) {
        self.inner.observer.store(Some(Arc::new(observer)));
    }

    /// Whether anyone listens: callers skip building events nobody reads.
    pub fn observed(&self) -> bool {
        self.inner.observer.load().is_some()
    }

    /// Tells the observer, if any.
    pub fn notify(&self, event: BusEvent) {
        if let Some(o) = &*self.inner.observer.load() {
            o.observe(event);
        }
    }

    /// A transport opened `session` for a client (not a resume): marks it announced, so that
    /// its end is reported, and sends `session.opened`.
    pub fn session_opened(&self, session: &Session) {
        session.mark_announced();
        if self.observed() {
            self.notify(BusEvent::SessionOpened {
                session: session.id().clone(),
                user: session.identity().user.clone(),
            });
        }
    }

    /// Sends `session.closed` for a session that ended, if its opening was announced.
    pub(super) fn session_closed(&self, session: &Session, reason: &'static str) {
        if session.take_announced() && self.observed() {
            self.notify(BusEvent::SessionClosed {
                session: session.id().clone(),
                user: session.identity().user.clone(),
                reason,
            });
        }
    }
}
