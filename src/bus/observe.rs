//! What the bus tells an observer about sessions and topics, for the webhooks
//! (`crate::backend::webhooks`): the bus only calls [`Observer::observe`], which must return
//! at once (it queues); it knows nothing of HTTP.

use std::sync::Arc;

use super::Bus;

/// One thing that happened, with what a webhook event's `data` says of it (PROTOCOL.md §10).
#[derive(Debug, Clone, PartialEq)]
pub enum BusEvent {
    /// A new session (not a resume), once its identity is known.
    SessionOpened {
        session: Arc<str>,
        user: Option<String>,
    },
    /// A session ended: expired after its TTL, closed by its client, by the server.
    SessionClosed {
        session: Arc<str>,
        user: Option<String>,
        reason: &'static str,
    },
    PresenceJoin {
        topic: String,
        session: Arc<str>,
        user: Option<String>,
        info: Option<serde_json::Value>,
    },
    PresenceLeave {
        topic: String,
        session: Arc<str>,
        user: Option<String>,
        info: Option<serde_json::Value>,
    },
    /// A subscription pattern got its first subscriber (cluster-wide in cluster mode).
    TopicOccupied { pattern: String },
    /// A subscription pattern lost its last subscriber (cluster-wide in cluster mode).
    TopicVacated { pattern: String },
    /// A group message went to `$dlq/<topic>` after `max_deliveries`.
    MessageDead {
        topic: String,
        group: String,
        deliveries: u32,
        data: serde_json::Value,
    },
}

/// Receives the bus's events. Called on the bus's paths (under no lock): must not block.
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
}
