//! Subscribing from inside the process, without a socket.

use std::sync::Arc;

use futures_util::Stream;

use super::Bus;
use crate::event::{Delivery, Event};
use crate::session::{Batch, Outbox, Session};

/// What an embedded subscriber receives, in `seq` order.
#[derive(Debug, Clone)]
pub enum Received {
    Msg {
        seq: u64,
        event: Arc<Event>,
        how: Delivery,
    },
    /// Messages `from..=to` were dropped because this subscriber fell behind its buffer.
    Gap { from: u64, to: u64 },
}

/// A live subscription on a [`Bus`]: a session of its own with the same bounded buffer and
/// gap reporting as a WebSocket client. Dropping it unsubscribes.
pub struct Subscription {
    bus: Bus,
    session: Arc<Session>,
    outbox: Arc<Outbox>,
    batch: Batch,
    next: usize,
}

impl Subscription {
    pub(super) fn new(bus: Bus, session: Arc<Session>) -> Subscription {
        let outbox = Arc::new(Outbox::new());
        session.attach(outbox.clone(), None);
        Subscription {
            bus,
            session,
            outbox,
            batch: Batch::default(),
            next: 0,
        }
    }

    /// Subscribes this same session to one more pattern.
    pub async fn add(&self, pattern: &str) -> Result<(), super::BusError> {
        self.bus
            .subscribe_session(&self.session, pattern, None)
            .await
            .map(|_| ())
    }

    /// The next message or gap; waits while there is none. Returns `None` only once the bus
    /// has closed this subscription's session.
    pub async fn recv(&mut self) -> Option<Received> {
        loop {
            if let Some((from, to)) = self.batch.gap.take() {
                return Some(Received::Gap { from, to });
            }
            if let Some(e) = self.batch.entries.get(self.next) {
                self.next += 1;
                return Some(Received::Msg {
                    seq: e.seq,
                    event: e.event.clone(),
                    how: e.how,
                });
            }
            self.batch.clear();
            self.next = 0;
            self.session.take(&mut self.batch, 256);
            if self.batch.is_empty() {
                if self.session.is_closed() {
                    return None;
                }
                self.outbox.woken().await;
            }
        }
    }

    /// The subscription as a `Stream`.
    pub fn into_stream(self) -> impl Stream<Item = Received> + Send {
        futures_util::stream::unfold(self, |mut s| async move {
            let item = s.recv().await?;
            Some((item, s))
        })
    }

    /// The session id (it shows up in stats like any other session).
    pub fn session_id(&self) -> &str {
        self.session.id()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.close_session(&self.session);
    }
}
