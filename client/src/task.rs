//! The client's connection task: handshake, dispatch, reconnect (round robin over the
//! URLs), resume or recover.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Answer, ClientError, ClientEvent, Command, Delivery, Shared, recovery};
use herald_protocol::{ClientFrame, Gap, Id, OkFrame, ServerFrame, msgpack};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the server gets to answer `hello`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the `i`th URL, says `hello` (resuming the session if there is one) and waits
/// for `welcome`. Subscribes again, recovering, when the server did not resume the session.
pub(super) async fn open(shared: &Arc<Shared>, i: usize) -> Result<Ws, ClientError> {
    let url = shared.urls[i].as_str();
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    let mut req = url
        .into_client_request()
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let msgpack = shared.options.msgpack;
    if msgpack {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(msgpack::SUBPROTOCOL),
        );
    }
    let (mut ws, res) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let chosen = res.headers().get("Sec-WebSocket-Protocol");
    if msgpack && chosen.and_then(|v| v.to_str().ok()) != Some(msgpack::SUBPROTOCOL) {
        return Err(ClientError::Connect(format!(
            "the server did not choose {} (it answered {chosen:?})",
            msgpack::SUBPROTOCOL
        )));
    }
    let session = shared.session.lock().clone();
    let last_seq = session
        .as_ref()
        .map(|_| shared.last_seq.load(Ordering::Acquire));
    let token = match &shared.options.get_token {
        Some(get) => Some(
            get.get()
                .await
                .map_err(|e| ClientError::Connect(format!("token: {e}")))?,
        ),
        None => shared.options.token.clone(),
    };
    let hello = ClientFrame::Hello {
        token,
        session,
        last_seq,
        client: None,
    };
    send(&mut ws, shared, &hello).await?;
    let welcome = tokio::time::timeout(WELCOME_TIMEOUT, async {
        while let Some(m) = ws.next().await {
            let m = m.map_err(|e| ClientError::Connect(e.to_string()))?;
            if let Some(t) = incoming(shared, &m) {
                return match serde_json::from_str::<ServerFrame>(&t) {
                    Ok(ServerFrame::Welcome(w)) => Ok(w),
                    Ok(ServerFrame::Error(e)) => Err(ClientError::Server {
                        code: e.code,
                        message: e.message,
                    }),
                    _ => Err(ClientError::Connect(format!("expected welcome, got {t}"))),
                };
            }
            if let Message::Close(c) = m {
                return Err(ClientError::Connect(format!("closed during hello: {c:?}")));
            }
        }
        Err(ClientError::Connect("closed during hello".into()))
    })
    .await
    .map_err(|_| ClientError::Timeout(WELCOME_TIMEOUT))??;

    *shared.session.lock() = Some(welcome.session.clone());
    // Answers to recovery `sub`s of an earlier connection will not come.
    shared.recovering.lock().clear();
    shared.notes.lock().connected(welcome.resumed);
    if !welcome.resumed {
        shared.last_seq.store(0, Ordering::Release);
        let plan = recovery::plan(&shared.subs.lock());
        for r in plan {
            // A recovery `sub` has an id, to hear whether it worked; a group's needs none.
            let id = r.since.as_ref().map(|_| {
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                shared.recovering.lock().insert(id, r.pattern.clone());
                id
            });
            send(&mut ws, shared, &r.frame(id)).await?;
        }
    }
    shared.url.store(i, Ordering::Release);
    let _ = shared.events.send(ClientEvent::Connected {
        url: url.to_owned(),
        session: welcome.session,
        resumed: welcome.resumed,
    });
    Ok(ws)
}

async fn send(ws: &mut Ws, shared: &Shared, frame: &ClientFrame<'_>) -> Result<(), ClientError> {
    let text = serde_json::to_string(frame).map_err(|e| ClientError::Invalid(e.to_string()))?;
    ws.send(outgoing(shared, text))
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))
}

/// A frame (made as JSON) as the message the connection's encoding sends: a text frame, or
/// with [`ClientOptions::msgpack`](super::ClientOptions::msgpack) its MessagePack in a
/// binary frame (`{"$base64"}` objects become `bin`).
fn outgoing(shared: &Shared, json: String) -> Message {
    if shared.options.msgpack {
        match msgpack::from_json(&json) {
            Ok(b) => return Message::binary(b),
            Err(e) => tracing::error!(error = %e, "frame is not JSON; sent as text"),
        }
    }
    Message::text(json)
}

/// A server frame's JSON, if the message is one (`bin` values as `{"$base64"}`). A frame
/// that does not transcode is logged and skipped.
fn incoming(shared: &Shared, m: &Message) -> Option<String> {
    match m {
        Message::Text(t) if !shared.options.msgpack => Some(t.as_str().to_owned()),
        Message::Binary(b) if shared.options.msgpack => match msgpack::to_json(b) {
            Ok(json) => Some(json),
            Err(e) => {
                tracing::warn!(error = %e, "server frame is not MessagePack; skipped");
                None
            }
        },
        _ => None,
    }
}

enum End {
    /// The user closed the client (or dropped every handle).
    Close,
    /// The connection was lost.
    Lost(String),
}

pub(super) async fn run(mut ws: Ws, shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Command>) {
    let mut backoff = shared.options.backoff_min;
    loop {
        let end = drive(&mut ws, &shared, &mut rx).await;
        fail_pending(&shared, &end);
        match end {
            End::Close => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                shared.subs.lock().clear();
                return;
            }
            End::Lost(reason) => {
                drop(ws);
                let _ = shared.events.send(ClientEvent::Disconnected { reason });
                if !shared.options.reconnect {
                    shared.subs.lock().clear();
                    return;
                }
            }
        }
        // Reconnect with exponential backoff and jitter, each attempt to the next URL; a
        // close command stops trying.
        let mut i = shared.url.load(Ordering::Acquire);
        ws = loop {
            let jitter = 0.5 + rand::random::<f64>() * 0.5;
            let wait = backoff.mul_f64(jitter);
            backoff = (backoff * 2).min(shared.options.backoff_max);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shared.closing.cancelled() => {}
            }
            // Closed by the user, or every handle dropped: stop trying.
            if shared.closing.is_cancelled() || rx.is_closed() {
                shared.subs.lock().clear();
                fail_pending(&shared, &End::Close);
                return;
            }
            i = (i + 1) % shared.urls.len();
            match open(&shared, i).await {
                Ok(ws) => break ws,
                Err(e) => tracing::debug!(url = %shared.urls[i], error = %e, "reconnect failed"),
            }
        };
        backoff = shared.options.backoff_min;
    }
}

fn fail_pending(shared: &Shared, end: &End) {
    let pending: Vec<_> = shared.pending.lock().drain().collect();
    for (_, tx) in pending {
        let _ = tx.send(Err(match end {
            End::Close => ClientError::Closed,
            End::Lost(_) => ClientError::Disconnected,
        }));
    }
}

async fn drive(
    ws: &mut Ws,
    shared: &Arc<Shared>,
    rx: &mut mpsc::UnboundedReceiver<Command>,
) -> End {
    // Refresh frames ready to go (their token was fetched on a task of their own).
    let (refresh_tx, mut refresh_rx) = mpsc::unbounded_channel::<String>();
    loop {
        tokio::select! {
            Some(frame) = refresh_rx.recv() => {
                if let Err(e) = ws.send(outgoing(shared, frame)).await {
                    return End::Lost(e.to_string());
                }
            }
            cmd = rx.recv() => {
                let mut cmd = cmd;
                // Batch whatever is queued: feed all, flush once.
                loop {
                    match cmd {
                        None | Some(Command::Close) => return End::Close,
                        Some(Command::DropConnection) => return End::Lost("dropped on request".into()),
                        Some(Command::Send(text)) => {
                            if let Err(e) = ws.feed(outgoing(shared, text)).await {
                                return End::Lost(e.to_string());
                            }
                        }
                    }
                    match rx.try_recv() {
                        Ok(c) => cmd = Some(c),
                        Err(_) => break,
                    }
                }
                if let Err(e) = ws.flush().await {
                    return End::Lost(e.to_string());
                }
            }
            m = ws.next() => match m {
                None => return End::Lost("connection closed".into()),
                Some(Err(e)) => return End::Lost(e.to_string()),
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => match incoming(shared, &m).and_then(|t| dispatch(shared, &t)) {
                    Some(Back::Frame(frame)) => {
                        if let Err(e) = ws.send(outgoing(shared, frame)).await {
                            return End::Lost(e.to_string());
                        }
                    }
                    Some(Back::Refresh) => refresh(shared, refresh_tx.clone()),
                    None => {}
                },
                Some(Ok(Message::Close(c))) => {
                    let why = c.map(|c| format!("closed by server: {} {}", u16::from(c.code), c.reason))
                        .unwrap_or_else(|| "closed by server".into());
                    return End::Lost(why);
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

/// What a frame from the server asks of the connection.
enum Back {
    /// Send this frame.
    Frame(String),
    /// Get a new token and send it with `refresh`.
    Refresh,
}

/// On `expiring`: fetches a token on a task of its own (the socket keeps flowing), hands
/// the `refresh` frame to the connection and reports how it went.
fn refresh(shared: &Arc<Shared>, out: mpsc::UnboundedSender<String>) {
    let Some(get) = shared.options.get_token.clone() else {
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let failed = |message: String| {
            let _ = shared.events.send(ClientEvent::RefreshFailed { message });
        };
        let token = match get.get().await {
            Ok(t) => t,
            Err(e) => return failed(format!("token: {e}")),
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        shared.pending.lock().insert(id, tx);
        let frame = ClientFrame::Refresh {
            id: Some(Id::Num(id)),
            token,
        };
        let Ok(text) = serde_json::to_string(&frame) else {
            return;
        };
        if out.send(text).is_err() {
            shared.pending.lock().remove(&id);
            return failed("the connection dropped".into());
        }
        match tokio::time::timeout(shared.options.request_timeout, rx).await {
            Ok(Ok(Ok(Answer::Ok(ok)))) => {
                let _ = shared.events.send(ClientEvent::Refreshed { exp: ok.exp });
            }
            Ok(Ok(Err(e))) => failed(e.to_string()),
            Ok(_) => failed("no answer".into()),
            Err(_) => {
                shared.pending.lock().remove(&id);
                failed("no answer in time".into());
            }
        }
    });
}

/// Hands a server frame to whoever waits for it; says what to send back, if anything.
fn dispatch(shared: &Shared, text: &str) -> Option<Back> {
    let frame = match serde_json::from_str::<ServerFrame>(text) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable frame from server");
            return None;
        }
    };
    match frame {
        ServerFrame::Msg(m) => {
            shared.last_seq.store(m.seq, Ordering::Release);
            shared.notes.lock().message();
            shared.clock.lock().saw(m.ts);
            let tick = shared.tick();
            let mut subs = shared.subs.lock();
            subs.retain(|s| !s.tx.is_closed());
            for s in subs.iter_mut().filter(|s| s.pattern.matches(&m.topic)) {
                // What this subscription already delivered is not shown again.
                if let Some(p) = &mut s.positions
                    && !p.accept(&m, tick)
                {
                    continue;
                }
                let _ = s.tx.send(Delivery::Msg(m.clone()));
            }
        }
        ServerFrame::Gap(Gap::Topic(g)) => {
            let tick = shared.tick();
            for s in shared.subs.lock().iter_mut() {
                if let Some(p) = &mut s.positions
                    && s.pattern.matches(&g.topic)
                {
                    p.skip(&g, tick);
                    let _ = s.tx.send(Delivery::TopicGap(g.clone()));
                }
            }
        }
        ServerFrame::Gap(Gap::Seq(g)) => {
            shared.last_seq.store(g.to_seq, Ordering::Release);
            for s in shared.subs.lock().iter() {
                let _ = s.tx.send(Delivery::Gap(g.clone()));
            }
            let _ = shared.events.send(ClientEvent::Gap(g));
        }
        ServerFrame::Ok(ok) => {
            if let Some(pattern) = recovering(shared, &ok.id) {
                recovery::done(shared, pattern, ok.recovered.unwrap_or(true));
            } else {
                resolve(shared, ok.id.clone(), Ok(Answer::Ok(ok)));
            }
        }
        ServerFrame::Reply { id, data } => resolve(shared, id, Ok(Answer::Reply(data))),
        ServerFrame::Pong { id } => resolve(
            shared,
            id.clone(),
            Ok(Answer::Ok(OkFrame {
                id,
                ..Default::default()
            })),
        ),
        ServerFrame::Error(e) => {
            if let Some(pattern) = recovering(shared, &e.id) {
                return Some(Back::Frame(recovery::refused(
                    shared, pattern, e.code, e.message,
                )));
            }
            if e.id.is_none() {
                tracing::debug!(code = %e.code, message = %e.message, "server error");
            }
            resolve(
                shared,
                e.id,
                Err(ClientError::Server {
                    code: e.code,
                    message: e.message,
                }),
            )
        }
        ServerFrame::Bye(b) => {
            let _ = shared.events.send(ClientEvent::Bye {
                retry_ms: b.retry_ms,
            });
        }
        ServerFrame::Welcome(_) => {}
        ServerFrame::Expiring { exp } => {
            let _ = shared.events.send(ClientEvent::Expiring { exp });
            return Some(Back::Refresh);
        }
        ServerFrame::Subscribed(_) | ServerFrame::Unsubscribed(_)
            if !shared.notes.lock().is_new(text) => {}
        ServerFrame::Subscribed(s) => {
            let _ = shared.events.send(ClientEvent::Subscribed {
                pattern: s.pattern,
                group: s.group,
            });
        }
        ServerFrame::Unsubscribed(u) => {
            let reason = match u.reason {
                herald_protocol::UnsubscribedReason::Server => "server",
                herald_protocol::UnsubscribedReason::Forbidden => "forbidden",
            };
            // Forgotten, so that no new session subscribes it again; its stream ends.
            shared
                .subs
                .lock()
                .retain(|s| !(s.pattern.as_str() == u.pattern && s.group == u.group));
            let _ = shared.events.send(ClientEvent::Unsubscribed {
                pattern: u.pattern,
                group: u.group,
                reason: reason.into(),
            });
        }
    }
    None
}

/// The pattern of the recovery `sub` this answers, if it answers one.
fn recovering(shared: &Shared, id: &Option<Id>) -> Option<String> {
    match id {
        Some(Id::Num(n)) => shared.recovering.lock().remove(n),
        _ => None,
    }
}

fn resolve(shared: &Shared, id: Option<Id>, r: Result<Answer, ClientError>) {
    if let Some(Id::Num(n)) = id
        && let Some(tx) = shared.pending.lock().remove(&n)
    {
        let _ = tx.send(r);
    }
}
