//! Request-reply on the bus (PROTOCOL.md §5): a `req` is a publish with a fresh reply inbox
//! (see `inboxes.rs`), answered `no_responders` when nobody can hear it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::value::RawValue;

use super::persist::Published;
use super::{Bus, BusError, Publish};
use crate::protocol::Id;
use crate::session::Outbox;

impl Bus {
    /// Sends a request: publishes `data` to `topic` with a fresh `reply_to` inbox whose
    /// first reply reaches `outbox` as `reply {id}`. Fails with `no_responders` at once when
    /// nobody subscribes to `topic`. Returns the inbox; the caller closes it on timeout with
    /// [`Bus::cancel_request`].
    pub fn request(
        &self,
        topic: &str,
        data: &RawValue,
        outbox: Arc<Outbox>,
        id: Option<Id>,
    ) -> Result<Box<str>, BusError> {
        if topic.starts_with('$') {
            crate::topic::validate_topic(topic)?;
            return Err(BusError::Forbidden(format!(
                "requests may not go to system topic '{topic}'"
            )));
        }
        let inbox = self.inner.inboxes.open(outbox.clone(), id.clone());
        self.inner
            .backplane
            .request(self, topic, data, inbox, outbox, id)
    }

    /// A request on a single node: whether anyone listens is known at once.
    pub(super) fn request_here(
        &self,
        topic: &str,
        data: &RawValue,
        inbox: Box<str>,
    ) -> Result<Box<str>, BusError> {
        let p = Publish {
            topic,
            data,
            msg_id: None,
            retain: false,
        };
        let result = self.publish_inner(p, Some(&inbox), None).map(|r| match r {
            // Not delivered yet: whether anyone will get it is whether anyone matches now.
            Published::Pending(_) => usize::from(self.has_subscribers(topic)),
            Published::Done(ack) => ack.delivered,
        });
        match result {
            Ok(delivered) if delivered > 0 => Ok(inbox),
            Ok(_) => {
                self.inner.inboxes.close(&inbox);
                self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
                Err(BusError::NoResponders(topic.to_owned()))
            }
            Err(e) => {
                self.inner.inboxes.close(&inbox);
                Err(e)
            }
        }
    }

    /// Whether a request is still waiting for its reply.
    pub fn request_open(&self, inbox: &str) -> bool {
        self.inner.inboxes.is_open(inbox)
    }

    /// Gives up on a request; true when it was still waiting (so it timed out).
    pub fn cancel_request(&self, inbox: &str) -> bool {
        let open = self.inner.inboxes.close(inbox);
        if open {
            self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
        }
        open
    }
}
