//! The `ok`s of publishes to persisted topics, which come once the message is durable.
//!
//! One task per connection (started at its first such publish) awaits the pending acks in
//! the order the publishes were read and queues each answer for the writer. The reader
//! meanwhile goes on reading, so one connection's publishes share fsyncs. The queue is
//! bounded: when acks pile up (a slow disk, or a client not reading its answers), the
//! reader waits, and the client is slowed through TCP.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus::{PendingAck, PubAck};
use crate::protocol::{ErrorFrame, Id, OkFrame, ServerFrame};
use crate::session::Outbox;

/// Publishes awaiting the disk per connection before its reader waits.
const ACK_QUEUE: usize = 4096;

pub(super) type AckQueue = mpsc::Sender<(Option<Id>, PendingAck)>;

/// Starts a connection's ack task; it ends when the queue's sender is dropped (after
/// answering everything queued) or when the connection is done.
pub(super) fn spawn(outbox: std::sync::Arc<Outbox>, done: CancellationToken) -> AckQueue {
    let (tx, mut rx) = mpsc::channel::<(Option<Id>, PendingAck)>(ACK_QUEUE);
    tokio::spawn(async move {
        while let Some((id, pending)) = rx.recv().await {
            let frame = match pending.durable().await {
                Ok(_) if id.is_none() => continue,
                Ok(ack) => ServerFrame::Ok(OkFrame { id, ..pub_ok(&ack) }),
                // Errors are answered even without an id (PROTOCOL.md §4).
                Err(e) => ServerFrame::Error(ErrorFrame {
                    id,
                    code: e.code(),
                    message: e.to_string(),
                }),
            };
            tokio::select! {
                _ = done.cancelled() => return,
                _ = outbox.push_control(frame.encode()) => {}
            }
        }
    });
    tx
}

/// The `ok` of a publish (also the reader's, for a publish answered at once).
pub(super) fn pub_ok(ack: &PubAck) -> OkFrame {
    OkFrame {
        offset: Some(ack.offset),
        epoch: Some(ack.epoch.to_string()),
        duplicate: Some(ack.duplicate),
        ..Default::default()
    }
}
