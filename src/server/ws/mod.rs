//! `GET /ws`: the WebSocket upgrade, done by hand on hyper so that the connection runs on
//! tokio-tungstenite with buffers sized for 100k connections (tungstenite's defaults are
//! 128 KiB each way; an idle Herald connection must cost a few KiB).
//!
//! tungstenite only reads: the socket is split, tungstenite gets the reading half (its
//! writes, automatic pongs and close replies, go nowhere: see [`ReadOnly`]), and the
//! connection's writer encodes every frame it sends itself (see [`writer`]).

mod acks;
mod conn;
mod deflate;
mod frame;
mod guard;
mod hello;
mod ops;
mod proxied;
mod reader;
mod refresh;
mod shared;
mod upgrade;
mod writer;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::AppState;
use super::credentials::upgrade_token;
use super::reply::error_response;
use crate::protocol::{ErrorCode, SUBPROTOCOL, msgpack};
use shared::Encoding;

/// Bytes read from the socket at a time. Frames larger than this still arrive whole (the
/// buffer grows up to `max_frame`), but idle connections hold only this much.
const READ_BUFFER: usize = 1024;

pub(crate) fn socket_config(max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
}

/// One connection counted in the `connections` stat (what `limits.max_connections` caps);
/// dropping it uncounts the connection, on every way out.
pub(super) struct Counted(Arc<AppState>);

impl Counted {
    /// Counts a connection, or `None` when `max` are open already.
    pub(super) fn take(state: &Arc<AppState>, max: u64) -> Option<Counted> {
        let connections = &state.bus.stats().connections;
        if connections.fetch_add(1, Ordering::AcqRel) >= max {
            connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Counted(state.clone()))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0
            .bus
            .stats()
            .connections
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// Handles the upgrade request and spawns the connection.
pub(crate) async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request<Body>,
) -> Response<Body> {
    let headers = req.headers();
    if !is_upgrade(headers) {
        return error_response(
            StatusCode::UPGRADE_REQUIRED,
            ErrorCode::BadRequest,
            "this endpoint speaks WebSocket: send an Upgrade: websocket request",
        );
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "Sec-WebSocket-Version must be 13",
        );
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "missing Sec-WebSocket-Key",
        );
    };
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !state.auth.load().origin_allowed(origin) {
        return error_response(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this Origin may not open a WebSocket to this server",
        );
    }
    let token = upgrade_token(&req);
    let headers = req.headers();
    // Kept for the connect proxy only (an idle connection should not hold its headers).
    let forwarded = state
        .backend
        .proxy
        .as_ref()
        .filter(|p| p.asks_connect())
        .map(|_| Box::new(upgrade::Upgrade::new(peer.ip(), headers)));
    let accept = derive_accept_key(key.as_bytes());
    let offered = |name: &str| {
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == name)
    };
    // MessagePack when offered at all: a client offering it wants it (PROTOCOL.md §2).
    let (subprotocol, encoding) = if offered(msgpack::SUBPROTOCOL) {
        (Some(msgpack::SUBPROTOCOL), Encoding::Msgpack)
    } else if offered(SUBPROTOCOL) {
        (Some(SUBPROTOCOL), Encoding::Json)
    } else {
        (None, Encoding::Json)
    };
    let deflate = deflate::negotiate(headers, state.config().compression);

    let max = state.config().limits.max_connections as u64;
    let Some(counted) = Counted::take(&state, max) else {
        state.metrics.connection_rejected();
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "connection limit reached",
        );
    };
    let per_ip_max = state.config().limits.max_connections_per_ip;
    let Some(ip_slot) = state.per_ip.acquire(peer.ip(), per_ip_max) else {
        return error_response(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many connections from this address",
        );
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "connection cannot be upgraded",
        );
    };
    let st = state.clone();
    let fut = async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let (read, write) = tokio::io::split(TokioIo::new(upgraded));
                let max_frame = st.config().max_frame;
                let ws = WebSocketStream::from_raw_socket(
                    ReadOnly(deflate::Inflate::new(read, deflate, max_frame)),
                    Role::Server,
                    Some(socket_config(max_frame)),
                )
                .await;
                st.metrics.connection_opened();
                // A task of its own: this one, with the space of the upgrade and the
                // handshake states, ends here, and an idle connection holds only its own
                // small future (one allocation, the task's).
                // (`map`, not an `async` block awaiting `run`: that would keep a second slot
                // for the moved-in future.)
                let compressed = deflate.is_some();
                let run = conn::run(
                    st.clone(),
                    (write, ws),
                    peer,
                    token,
                    forwarded,
                    encoding,
                    compressed,
                );
                let tasks = st.tasks.clone();
                // The connection's slots are given back when it ends.
                tasks.spawn(run.map(move |()| drop((counted, ip_slot))));
            }
            Err(e) => tracing::debug!(%peer, error = %e, "upgrade failed"),
        }
    };
    state.tasks.spawn(fut);

    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(agreed) = deflate {
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            deflate::response_header(agreed),
        );
    }
    if let Some(p) = subprotocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    res
}

/// The reading half of a connection's socket, as tungstenite's stream. tungstenite writes
/// only what it sends on its own, a pong or a close reply; those bytes are dropped here, and
/// the connection's reader has the writer send them instead (the writer alone owns the
/// sending half, so that frames never interleave).
pub(crate) struct ReadOnly<R>(pub R);

impl<R: AsyncRead + Unpin> AsyncRead for ReadOnly<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for ReadOnly<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn is_upgrade(h: &HeaderMap) -> bool {
    let has = |name, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}
