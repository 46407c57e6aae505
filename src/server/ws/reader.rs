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
    /// When to send `expiring` (`auth.refresh_notice` before `expires`); `None` once sent.
    pub(super) notice: Option<tokio::time::Instant>,
    /// Publishes to persisted topics awaiting the disk (see `acks.rs`).
    pub(super) acks: Option<acks::AckQueue>,
    /// The connection closed on a stream error (a frame over `max_frame`, invalid UTF-8, a
    /// protocol error) the peer may still be sending the rest of: see `linger` in `conn.rs`.
    pub(super) drain_raw: bool,
    /// The last publish found the node's writers behind (see [`Reader::after_publish`]).
    pub(super) behind: bool,
    /// The access came from a verified token (the connect proxy may only narrow it).
    pub(super) has_token: bool,
    /// The upgrade request, for the connect proxy; taken at `hello`.
    pub(super) upgrade: Option<Box<super::upgrade::Upgrade>>,
}

impl Reader {
    /// After a publish: when it found a recipient's writer half its buffer behind while
    /// its socket takes what it is given, the node accepts faster than it writes, so the
    /// reader lets the writers run before it reads on: first a yield (every woken writer
    /// of this worker runs before this task again), and when that was not enough (the
    /// writers run on other workers, still behind at the next publish) a 1 ms pause.
    /// Reading less is what slows the publisher: TCP carries the backpressure to it.
    /// Writers waiting for their sockets (slow or stalled readers) never count, so they
    /// never slow a publisher. DESIGN.md, "Overload".
    pub(super) async fn after_publish(&mut self, backlogged: bool) {
        let was_behind = std::mem::replace(&mut self.behind, backlogged);
        if !backlogged {
            return;
        }
        self.conn.metrics.publisher_yielded();
        if was_behind {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
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
