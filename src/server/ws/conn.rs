//! One WebSocket connection: its reader loop (this task) and its writer task.
//!
//! The reader decodes frames and answers them through the outbox; the writer (see
//! [`super::writer`]) is the only one that touches the socket's sending half, and also
//! sends the pongs and the close reply the reader asks for. Either half ending cancels
//! `done`, which ends the other.

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
use super::acks::pub_ok;
use super::guard::{Guard, Verdict};
use super::shared::{Conn, Replies};
use super::{acks, writer};
use crate::auth::Access;
use crate::bus::{PendingAck, Publish, Published, SubOptions};
use crate::protocol::{
    AckMode, ClientFrame, DecodeError, ErrorCode, ErrorFrame, Id, OkFrame, ServerFrame,
    WelcomeFrame, close, decode,
};
use crate::session::{Close, Outbox, Session};

/// `req.timeout_ms` when absent, and its maximum (PROTOCOL.md §4).
const REQUEST_TIMEOUT_DEFAULT_MS: u64 = 5_000;
const REQUEST_TIMEOUT_MAX_MS: u64 = 60_000;

/// Process-unique connection ids, for the `conn` span: a session id alone cannot tell two
/// connections of one session apart, nor name a connection before its `hello`.
static NEXT_CONN_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Starts a connection: spawns its writer and returns the reader's future. A plain `fn`
/// returning a small future, so the setup's temporaries are not kept for the connection's
/// lifetime (an idle connection's memory is mostly its futures). `token`: the credential of
/// the upgrade request (`?token=` or `Authorization`), if any.
pub(super) fn run<W, S>(
    state: Arc<AppState>,
    (sink, stream): (W, WebSocketStream<S>),
    peer: SocketAddr,
    token: Option<String>,
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
    });
    let id = NEXT_CONN_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // At debug, like every event a connection logs: an open span is kept by the log
    // subscriber (its slab slot, its formatted fields), about 1.6 KiB per connection, which
    // at the default `info` level would be paid by every idle connection for events that
    // are not logged.
    let span = tracing::debug_span!("conn", id, %peer, session = tracing::field::Empty);
    span.in_scope(|| tracing::debug!("connected"));
    let heartbeat = state.config().heartbeat;
    let writer = tokio::spawn(writer::run(sink, conn.clone(), heartbeat).instrument(span.clone()));
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
        acks: None,
        drain_raw: false,
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

struct Reader {
    state: Arc<AppState>,
    conn: Arc<Conn>,
    span: tracing::Span,
    /// Permissions and publish rate.
    guard: Guard,
    /// When the token expires: the connection closes with 4001 then.
    expires: Option<tokio::time::Instant>,
    /// Publishes to persisted topics awaiting the disk (see `acks.rs`).
    acks: Option<acks::AckQueue>,
    /// The connection closed on a stream error (a frame over `max_frame`, invalid UTF-8, a
    /// protocol error) the peer may still be sending the rest of: see [`linger`].
    drain_raw: bool,
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
        let mut deadline = tokio::time::Instant::now() + idle_limit;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.conn.done.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::debug!("no frame for two heartbeats; closing");
                    self.close(close::NORMAL, "heartbeat timeout");
                    break;
                }
                _ = until(self.expires) => {
                    self.close(close::UNAUTHORIZED, "token expired");
                    break;
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
            deadline = tokio::time::Instant::now() + idle_limit;
            match msg {
                Message::Text(text) => {
                    // Boxed: an idle connection then only holds the small waiting state of
                    // this loop, not the space the deepest frame handler needs.
                    if !Box::pin(self.on_text(text.as_str())).await {
                        break;
                    }
                }
                Message::Binary(_) => Box::pin(self.on_binary()).await,
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

    async fn on_binary(&mut self) {
        self.ensure_session().await;
        self.send_error(
            None,
            ErrorCode::BadFrame,
            "binary frames are not accepted: send JSON text frames",
        )
        .await;
    }

    /// Answers a stream error; true when it closed the connection with a code (the peer may
    /// still be sending, see [`linger`]).
    fn on_socket_error(&self, e: WsError) -> bool {
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

    fn close(&self, code: u16, reason: &str) {
        self.conn.outbox.close(Close {
            code,
            reason: reason.chars().take(120).collect(),
            last_words: None,
        });
    }

    async fn send(&self, frame: ServerFrame) {
        self.conn.outbox.push_control(frame.encode()).await;
    }

    async fn send_error(&self, id: Option<Id>, code: ErrorCode, message: impl Into<String>) {
        self.state.metrics.error(code);
        self.send(ServerFrame::Error(ErrorFrame {
            id,
            code,
            message: message.into(),
        }))
        .await;
    }

    async fn send_ok(&self, id: Option<Id>, ok: OkFrame) {
        if id.is_some() {
            self.send(ServerFrame::Ok(OkFrame { id, ..ok })).await;
        }
    }

    /// Answers a publish to a persisted topic once it is durable, without holding up the
    /// reader: later frames (more publishes to batch with it) keep flowing meanwhile.
    async fn ack_when_durable(&mut self, id: Option<Id>, pending: PendingAck) {
        let conn = &self.conn;
        let acks = self
            .acks
            .get_or_insert_with(|| acks::spawn(conn.outbox.clone(), conn.done.clone()));
        let _ = acks.send((id, pending)).await;
    }

    /// `req`: publishes with a reply inbox and arms the timeout. The reply itself reaches
    /// the outbox from whoever publishes to the inbox (see `bus::requests`).
    async fn request(
        &mut self,
        id: Option<Id>,
        topic: &str,
        data: &serde_json::value::RawValue,
        timeout_ms: Option<u64>,
    ) {
        let timeout_ms = timeout_ms.unwrap_or(REQUEST_TIMEOUT_DEFAULT_MS);
        if timeout_ms == 0 || timeout_ms > REQUEST_TIMEOUT_MAX_MS {
            let msg = format!("'timeout_ms' must be 1 to {REQUEST_TIMEOUT_MAX_MS}");
            return self.send_error(id, ErrorCode::BadRequest, msg).await;
        }
        let max = self.state.config().limits.max_pending_requests;
        self.conn
            .inboxes
            .lock()
            .retain(|i| self.state.bus.request_open(i));
        if self.conn.inboxes.lock().len() >= max {
            let msg = format!("at most {max} requests may wait for a reply at once");
            return self.send_error(id, ErrorCode::RateLimited, msg).await;
        }
        let bus = self.state.bus.clone();
        match bus.request(topic, data, self.conn.outbox.clone(), id.clone()) {
            Ok(inbox) => {
                self.conn.inboxes.lock().push(inbox.clone());
                let outbox = self.conn.outbox.clone();
                let done = self.conn.done.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = done.cancelled() => { bus.cancel_request(&inbox); }
                        _ = tokio::time::sleep(Duration::from_millis(timeout_ms)) => {
                            if bus.cancel_request(&inbox) {
                                let frame = ServerFrame::Error(ErrorFrame {
                                    id,
                                    code: ErrorCode::Timeout,
                                    message: format!("no reply within {timeout_ms} ms"),
                                });
                                let _ = outbox.try_push_control(frame.encode());
                            }
                        }
                    }
                });
            }
            Err(e) => self.send_error(id, e.code(), e.to_string()).await,
        }
    }

    /// Handles one text frame. Returns false when the connection should end.
    async fn on_text(&mut self, text: &str) -> bool {
        if self.conn.outbox.is_closing() {
            return false; // e.g. refused credentials: act on nothing more
        }
        let frame = match decode(text) {
            Ok(f) => f,
            Err(DecodeError { code, message, id }) => {
                self.ensure_session().await;
                self.send_error(id, code, message).await;
                return true;
            }
        };
        if let ClientFrame::Hello {
            session,
            last_seq,
            token,
            ..
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
                self.hello(session.as_deref(), *last_seq).await;
            }
            return true;
        }
        let session = self.ensure_session().await;
        self.handle(frame, &session).await;
        true
    }

    /// The connection's session, opening a new one (as if `hello {}` came) if none yet.
    async fn ensure_session(&mut self) -> Arc<Session> {
        if let Some(s) = self.conn.session() {
            return s;
        }
        self.hello(None, None).await
    }

    /// Verifies a token and makes its permissions the connection's. On failure: an
    /// `unauthorized` error, then close 4001; returns false.
    async fn authenticate(&mut self, token: &str) -> bool {
        match self.state.auth.load().verify(token) {
            Ok(access) => {
                self.expires = access
                    .time_left()
                    .map(|left| tokio::time::Instant::now() + left);
                self.guard.set_access(access);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "token refused");
                self.send_error(None, e.code(), e.to_string()).await;
                self.close(close::UNAUTHORIZED, &e.to_string());
                false
            }
        }
    }

    /// Gives the session the connection's identity and delivery filter.
    fn apply_access(&self, session: &Session, access: &Access) {
        session.set_identity(access.identity());
        session.set_filter(if access.subscribe.is_all() {
            None
        } else {
            Some(Arc::new(access.subscribe.clone()))
        });
    }

    async fn hello(&mut self, resume: Option<&str>, last_seq: Option<u64>) -> Arc<Session> {
        let bus = &self.state.bus;
        let access = self.guard.access().clone();
        // A session belongs to its user: another user's connection cannot resume it.
        let found = resume
            .and_then(|id| bus.find_session(id))
            .filter(|s| s.identity().user == access.user);
        let resumed = found.is_some();
        let session = found.unwrap_or_else(|| bus.open_session());
        self.apply_access(&session, &access);
        self.span.record("session", &**session.id());
        // `welcome` goes out before anything the session holds: queue it, then attach.
        self.send(ServerFrame::Welcome(WelcomeFrame {
            session: session.id().to_string(),
            resumed,
            heartbeat_ms: self.state.config().heartbeat.as_millis() as u64,
            max_frame: self.state.config().max_frame,
        }))
        .await;
        *self.conn.session.lock() = Some(session.clone());
        let replay_from = if resumed {
            Some(last_seq.unwrap_or(0))
        } else {
            None
        };
        if let Some(previous) = session.attach(self.conn.outbox.clone(), replay_from) {
            previous.close(Close {
                code: close::POLICY,
                reason: "session resumed by another connection".into(),
                last_words: None,
            });
        }
        tracing::debug!(resumed, "hello");
        session
    }

    async fn handle(&mut self, frame: ClientFrame<'_>, session: &Arc<Session>) {
        let bus = self.state.bus.clone();
        match self.guard.check(&frame, || bus.publish_rate()) {
            Verdict::Allow => {}
            Verdict::Deny(code, message) => {
                return self.send_error(frame.id().cloned(), code, message).await;
            }
            Verdict::Close(code, reason) => {
                let id = frame.id().cloned();
                self.send_error(id, ErrorCode::RateLimited, reason.clone())
                    .await;
                return self.close(code, &reason);
            }
        }
        match frame {
            ClientFrame::Hello { .. } => {}
            ClientFrame::Ping { id } => self.send(ServerFrame::Pong { id }).await,
            ClientFrame::Sub {
                id,
                pattern,
                group,
                ack,
                rewind,
                since,
            } => {
                let opts = SubOptions {
                    group: group.as_deref(),
                    manual_ack: ack == Some(AckMode::Manual),
                    rewind,
                    since: since.as_ref(),
                };
                match bus.subscribe_async(session, &pattern, &opts).await {
                    Ok(outcome) => {
                        let ok = OkFrame {
                            pattern: Some(pattern.into_owned()),
                            recovered: outcome.recovered,
                            ..Default::default()
                        };
                        self.send_ok(id, ok).await
                    }
                    Err(e) => self.send_error(id, e.code(), e.to_string()).await,
                }
            }
            ClientFrame::Unsub { id, pattern, group } => {
                match bus.unsubscribe_session(session, &pattern, group.as_deref()) {
                    Ok(()) => {
                        let ok = OkFrame {
                            pattern: Some(pattern.into_owned()),
                            ..Default::default()
                        };
                        self.send_ok(id, ok).await
                    }
                    Err(e) => self.send_error(id, e.code(), e.to_string()).await,
                }
            }
            ClientFrame::Pub {
                id,
                topic,
                data,
                msg_id,
                retain,
            } => {
                let p = Publish {
                    topic: &topic,
                    data,
                    msg_id: msg_id.as_deref(),
                    retain,
                };
                match bus.submit_as_client(p).await {
                    Ok(Published::Done(ack)) => self.send_ok(id, pub_ok(&ack)).await,
                    Ok(Published::Pending(pending)) => self.ack_when_durable(id, pending).await,
                    Err(e) => self.send_error(id, e.code(), e.to_string()).await,
                }
            }
            ClientFrame::Req {
                id,
                topic,
                data,
                timeout_ms,
            } => self.request(id, &topic, data, timeout_ms).await,
            ClientFrame::Ack { seq } => {
                bus.ack(session, seq);
            }
            ClientFrame::History {
                id,
                topic,
                since,
                limit,
            } => match bus.history_async(&topic, since, limit).await {
                Ok(page) => {
                    let ok = OkFrame {
                        epoch: Some(page.epoch.to_string()),
                        messages: Some(page.rows()),
                        ..Default::default()
                    };
                    self.send_ok(id, ok).await
                }
                Err(e) => self.send_error(id, e.code(), e.to_string()).await,
            },
            ClientFrame::Presence { id, topic } => match bus.presence_async(&topic).await {
                Ok(list) => {
                    let ok = OkFrame {
                        count: Some(list.count),
                        clients: Some(list.clients),
                        ..Default::default()
                    };
                    self.send_ok(id, ok).await
                }
                Err(e) => self.send_error(id, e.code(), e.to_string()).await,
            },
        }
    }
}
