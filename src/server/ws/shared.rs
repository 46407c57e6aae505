//! The state the two halves of a connection share: the reader (`conn.rs`) fills it and the
//! writer (`writer.rs`) reads it. Kept apart from both so that the writer does not depend
//! on the reader.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

pub(crate) use crate::event::Encoding;
use crate::session::{Outbox, Session};

/// State shared by the two halves of a connection.
pub(super) struct Conn {
    pub outbox: Arc<Outbox>,
    pub(super) session: Mutex<Option<Arc<Session>>>,
    /// Reply inboxes of this connection's requests (pruned as they are answered).
    pub(super) inboxes: Mutex<Vec<Box<str>>>,
    /// Set when either half ends.
    pub done: CancellationToken,
    /// The server's shutdown signal.
    pub shutdown: CancellationToken,
    /// Where the writer counts what it writes.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The peer's last ping, for the writer to answer, and the payload of the peer's close
    /// frame, for the writer to echo (RFC 6455 §5.5): tungstenite does not write.
    pub(super) replies: Mutex<Replies>,
    /// The connection's frame encoding, fixed at the upgrade.
    pub encoding: Encoding,
}

#[derive(Default)]
pub(super) struct Replies {
    pub(super) pong: Option<Bytes>,
    pub(super) close: Option<Bytes>,
}

impl Conn {
    pub fn session(&self) -> Option<Arc<Session>> {
        self.session.lock().clone()
    }

    /// The payload of the pong owed to the peer, if any.
    pub fn take_pong(&self) -> Option<Bytes> {
        self.replies.lock().pong.take()
    }

    /// The payload of the close frame to echo to the peer, if it sent one.
    pub fn take_peer_close(&self) -> Option<Bytes> {
        self.replies.lock().close.take()
    }
}
