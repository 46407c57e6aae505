//! One WebSocket connection: its reader loop (this task) and its writer task.
//!
//! The reader decodes frames and answers them through the outbox; the writer (see
//! [`super::writer`]) is the only one that touches the socket's sending half, and also
//! sends the pongs and the close reply the reader asks for. Either half ending cancels
//! `done`, which ends the other.
//!
//! This file starts the connection and runs the reader's loop, down to which frame it is;
//! what a frame then does is in `hello.rs` and `ops.rs`, how it is answered in `reader.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::super::AppState;
use super::guard::Guard;
use super::reader::Reader;
use super::shared::{Conn, Encoding, Replies};
use super::writer;
use crate::protocol::{ClientFrame, DecodeError, ErrorCode, close, decode};
use crate::session::Outbox;

/// Process-unique connection ids, for the `conn` span: a session id alone cannot tell two
/// connections of one session apart, nor name a connection before its `hello`.
static NEXT_CONN_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Starts a connection: spawns its writer and returns the reader's future. A plain `fn`
/// returning a small future, so the setup's temporaries are not kept for the connection's
/// lifetime (an idle connection's memory is mostly its futures). `token`: the credential of
/// the upgrade request (`?token=` or `Authorization`), if any. `deflate`: permessage-deflate
/// was negotiated (the writer compresses, see `deflate/`).
pub(super) fn run<W, S>(
    state: Arc<AppState>,
    (sink, stream): (W, WebSocketStream<S>),
    peer: SocketAddr,
    token: Option<String>,
    upgrade: Option<Box<super::upgrade::Upgrade>>,
    encoding: Encoding,
    deflate: bool,
) -> impl std::future::Future<Output = ()> + Send
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        outbox: Arc::new(Outbox::new()),
        session: Mutex::new(None),
        inboxes: Mutex::new(Vec::new()),
        done: CancellationToken::new(),
        shutdown: state.shutdown.clone(),
        metrics: state.metrics.clone(),
        replies: Mutex::new(Replies::default()),
        encoding,
    });
    let id = NEXT_CONN_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // At debug, like every event a connection logs: an open span is kept by the log
    // subscriber (its slab slot, its formatted fields), about 1.6 KiB per connection, which
    // at the default `info` level would be paid by every idle connection for events that
    // are not logged.
    let span = tracing::debug_span!("conn", id, %peer, session = tracing::field::Empty);
    span.in_scope(|| tracing::debug!("connected"));
    let config = state.config();
    let (heartbeat, delay) = (config.heartbeat, config.session.write_delay);
    drop(config);
    let writer = writer::run(sink, conn.clone(), heartbeat, delay, deflate);
    let writer = tokio::spawn(writer.instrument(span.clone()));
    let guard = Guard::new(
        state.auth.load().anonymous(),
        state.config().limits.publish_rate,
    );
    let mut reader = Reader {
        state,
        conn,
        span: span.clone(),
        guard,
        expires: None,
        notice: None,
        acks: None,
        drain_raw: false,
        behind: false,
        has_token: false,
        upgrade,
    };
    // The stream (tungstenite's state, a few hundred bytes) lives in this future's captures
    // and is lent to the read loop: moved into it, it would take its space twice (a moved-out
    // capture keeps its slot), which showed as ~1 KiB more per idle connection.
    let mut stream = stream;
    async move {
        if let Some(t) = token {
            // Boxed: its state would otherwise widen the idle connection's future.
            Box::pin(reader.authenticate(&t)).await;
        }
        reader.read_loop(&mut stream).instrument(span).await;
        // Let the writer finish its final words (it is bounded), then leave the session
        // behind for a resume.
        let _ = writer.await;
        // Boxed: only a closing connection pays for this state.
        Box::pin(linger(&mut stream, reader.drain_raw)).await;
        if let Some(s) = reader.conn.session() {
            s.detach(&reader.conn.outbox);
        }
    }
}

/// Waits until `at`, or forever.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Longest wait for the peer's answer to a close we sent.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// After a close we started, reads (and drops) what the peer still sends until its close
/// frame or the end of the stream, bounded by [`CLOSE_LINGER`]. Dropping the socket at once
/// would answer a peer still writing (a pong, its close reply) with a reset, and its close
/// frame could be lost to it (RFC 6455 §7.1.1: the server closes the TCP connection after the
/// close handshake). When the peer closed first or the socket failed, this returns at once.
///
/// `drain_raw`: tungstenite stopped at a stream error (it reads nothing after its first
/// error), yet the peer may still be writing, e.g. the rest of a 10 MB frame refused with
/// 1009. Its bytes are then read from the socket and dropped unparsed, through a small fixed
/// buffer: closing a socket with unread data resets the connection, which fails the peer's
/// write and can lose our close frame on its way.
async fn linger<S>(stream: &mut WebSocketStream<S>, drain_raw: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        if drain_raw {
            let mut buf = [0u8; 4096];
            while let Ok(1..) = stream.get_mut().read(&mut buf).await {}
            return;
        }
        while let Some(Ok(m)) = stream.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
}

impl Reader {
    async fn read_loop<St>(&mut self, stream: &mut St)
    where
        St: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
    {
        let heartbeat = self.state.config().heartbeat;
        let idle_limit = heartbeat * 2;
        // One timer for the connection, re-armed only when it fires early: a frame costs a
        // clock read, not a timer registered and cancelled (which was per frame, and showed
        // under many small publishes).
        let mut last_frame = tokio::time::Instant::now();
        let idle = tokio::time::sleep_until(last_frame + idle_limit);
        tokio::pin!(idle);
        loop {
            let next = tokio::select! {
                biased;
                _ = self.conn.done.cancelled() => break,
                _ = &mut idle => {
                    let due = last_frame + idle_limit;
                    if due > tokio::time::Instant::now() {
                        idle.as_mut().reset(due);
                        continue;
                    }
                    tracing::debug!("no frame for two heartbeats; closing");
                    self.close(close::NORMAL, "heartbeat timeout");
                    break;
                }
                _ = until(self.auth_deadline()) => {
                    // `expiring`, or the close at `exp` (see `refresh.rs`).
                    if Box::pin(self.on_auth_deadline()).await {
                        break;
                    }
                    continue;
                }
                next = stream.next() => next,
            };
            let msg = match next {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    self.drain_raw = self.on_socket_error(e);
                    break;
                }
            };
            last_frame = tokio::time::Instant::now();
            match msg {
                // Boxed: an idle connection then only holds the small waiting state of this
                // loop, not the space the deepest frame handler needs.
                Message::Text(text) if self.conn.encoding == Encoding::Json => {
                    if !Box::pin(self.on_text(text.as_str())).await {
                        break;
                    }
                }
                Message::Binary(bytes) if self.conn.encoding == Encoding::Msgpack => {
                    if !Box::pin(self.on_msgpack(&bytes)).await {
                        break;
                    }
                }
                Message::Text(_) | Message::Binary(_) => Box::pin(self.on_wrong_kind()).await,
                Message::Close(frame) => {
                    // tungstenite replaced a code not allowed on the wire already.
                    let mut echo = Vec::new();
                    if let Some(f) = frame {
                        echo.extend_from_slice(&u16::from(f.code).to_be_bytes());
                        echo.extend_from_slice(f.reason.as_bytes());
                    }
                    self.conn.replies.lock().close = Some(echo.into());
                    break;
                }
                Message::Ping(payload) => {
                    self.conn.replies.lock().pong = Some(payload);
                    self.conn.outbox.wake();
                }
                Message::Pong(_) | Message::Frame(_) => {}
            }
        }
        // A requested close is the writer's to send; it ends the connection when done.
        // Otherwise the peer is gone and the writer should stop now.
        if !self.conn.outbox.is_closing() {
            self.conn.done.cancel();
        }
    }

    /// A binary frame on a JSON connection, or a text frame on a msgpack one.
    async fn on_wrong_kind(&mut self) {
        if self.ensure_session().await.is_none() {
            return;
        }
        let message = match self.conn.encoding {
            Encoding::Json => "binary frames are not accepted: send JSON text frames",
            Encoding::Msgpack => {
                "this connection speaks herald.v1.msgpack: send MessagePack in binary frames"
            }
        };
        self.send_error(None, ErrorCode::BadFrame, message).await;
    }

    /// Handles one MessagePack frame: read as the JSON frame it transcodes to (PROTOCOL.md
    /// §2), so both encodings go through one decoder and mean the same.
    async fn on_msgpack(&mut self, bytes: &[u8]) -> bool {
        match crate::protocol::msgpack::to_json(bytes) {
            Ok(json) => self.on_text(&json).await,
            Err(e) => {
                if self.conn.outbox.is_closing() {
                    return false;
                }
                if self.ensure_session().await.is_none() {
                    return false;
                }
                self.send_error(None, ErrorCode::BadFrame, e.to_string())
                    .await;
                true
            }
        }
    }

    /// Answers a stream error; true when it closed the connection with a code (the peer may
    /// still be sending, see [`linger`]).
    fn on_socket_error(&self, e: WsError) -> bool {
        // A compressed frame that does not inflate (1007) or inflates too large (1009).
        if let WsError::Io(io) = &e
            && let Some((code, reason)) = super::deflate::close_for(io)
        {
            tracing::debug!(%reason, "compressed frame refused");
            self.close(code, &reason);
            return true;
        }
        match e {
            WsError::Capacity(c) => {
                tracing::debug!(error = %c, "frame too large");
                self.close(
                    close::TOO_LARGE,
                    &format!(
                        "frame larger than max_frame ({} bytes)",
                        self.state.config().max_frame
                    ),
                );
            }
            WsError::Utf8(_) => self.close(close::INVALID_PAYLOAD, "text frame is not valid UTF-8"),
            // The peer vanished (no close frame): nobody is left to tell about a protocol error.
            WsError::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ) => {
                tracing::debug!("socket reset without a close frame");
                return false;
            }
            WsError::Protocol(p) => {
                tracing::debug!(error = %p, "protocol error");
                self.close(close::PROTOCOL_ERROR, "WebSocket protocol error");
            }
            other => {
                tracing::debug!(error = %other, "socket ended");
                return false;
            }
        }
        true
    }

    /// Handles one text frame. Returns false when the connection should end.
    async fn on_text(&mut self, text: &str) -> bool {
        if self.conn.outbox.is_closing() {
            return false; // e.g. refused credentials: act on nothing more
        }
        let frame = match decode(text) {
            Ok(f) => f,
            Err(DecodeError { code, message, id }) => {
                if self.ensure_session().await.is_none() {
                    return false;
                }
                self.send_error(id, code, message).await;
                return true;
            }
        };
        if let ClientFrame::Hello {
            session,
            last_seq,
            token,
            client,
        } = &frame
        {
            if self.conn.session().is_some() {
                self.send_error(
                    None,
                    ErrorCode::BadRequest,
                    "'hello' must be the first frame of a connection",
                )
                .await;
            } else {
                if let Some(t) = token
                    && !self.authenticate(t).await
                {
                    return false;
                }
                return self
                    .hello(session.as_deref(), *last_seq, *client)
                    .await
                    .is_some();
            }
            return true;
        }
        let Some(session) = self.ensure_session().await else {
            return false;
        };
        self.handle(frame, &session).await;
        true
    }
}
