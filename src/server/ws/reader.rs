//! The reader's state (the connection's own task) and how it answers: `ok`s, errors and a
//! close, all through the outbox. The reader's loop is in `conn.rs`, `hello` and tokens in
//! `hello.rs`, the other ops in `ops.rs`.

use std::sync::Arc;

use super::super::AppState;
use super::acks;
use super::guard::Guard;
use super::shared::Conn;
use crate::protocol::{ErrorCode, ErrorFrame, Id, OkFrame, ServerFrame};
use crate::session::Close;

pub(super) struct Reader {
    pub(super) state: Arc<AppState>,
    pub(super) conn: Arc<Conn>,
    pub(super) span: tracing::Span,
    /// Permissions and publish rate.
    pub(super) guard: Guard,
    /// When the token expires: the connection closes with 4001 then.
    pub(super) expires: Option<tokio::time::Instant>,
    /// Publishes to persisted topics awaiting the disk (see `acks.rs`).
    pub(super) acks: Option<acks::AckQueue>,
    /// The connection closed on a stream error (a frame over `max_frame`, invalid UTF-8, a
    /// protocol error) the peer may still be sending the rest of: see `linger` in `conn.rs`.
    pub(super) drain_raw: bool,
}

impl Reader {
    pub(super) fn close(&self, code: u16, reason: &str) {
        self.conn.outbox.close(Close {
            code,
            reason: reason.chars().take(120).collect(),
            last_words: None,
        });
    }

    pub(super) async fn send(&self, frame: ServerFrame) {
        self.conn.outbox.push_control(frame.encode()).await;
    }

    pub(super) async fn send_error(
        &self,
        id: Option<Id>,
        code: ErrorCode,
        message: impl Into<String>,
    ) {
        self.state.metrics.error(code);
        self.send(ServerFrame::Error(ErrorFrame {
            id,
            code,
            message: message.into(),
        }))
        .await;
    }

    pub(super) async fn send_ok(&self, id: Option<Id>, ok: OkFrame) {
        if id.is_some() {
            self.send(ServerFrame::Ok(OkFrame { id, ..ok })).await;
        }
    }
}
