//! `GET /v1/events`: a session over Server-Sent Events, for clients that cannot open a
//! WebSocket (proxies that block upgrades, `EventSource`, `curl -N`). PROTOCOL.md §2.
//!
//! The stream is the session's connection, as a socket is for `/ws`: the same outbox, the same
//! ring, the same resume. Every event carries `id: <session>:<seq>` (the last seq sent), so
//! the `Last-Event-ID` a browser sends on its own when it reconnects resumes the session
//! where the stream broke: no loss, or an exact `gap`. Subscriptions change by
//! `POST /v1/events/<session>/sub` and `/unsub` (`ops.rs`); publishing is `POST /v1/publish`.
//!
//! Backpressure is hyper's: the next chunk is asked for only when the last one went to the
//! socket, and what the client cannot take meanwhile waits in the session's ring, under its
//! slow-consumer policy, as for a WebSocket. An SSE stream never slows publishers (its outbox
//! never reports itself runnable: see the overload rule, DESIGN.md).

mod ops;
mod stream;

use std::sync::Arc;

use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};

pub(super) use ops::{sub, unsub};

use super::AppState;
use super::credentials::{percent_decode, upgrade_token};
use super::reply::{bus_error, error_response};
use super::ws::Counted;
use crate::auth::Access;
use crate::protocol::{ErrorCode, ServerFrame, WelcomeFrame};
use crate::session::{Close, Outbox};
use crate::topic::Pattern;

/// Most `pattern` parameters one stream may open with.
const MAX_PATTERNS: usize = 100;

/// Verifies the request's credential (`?token=` or `Authorization: Bearer`) as `/ws` does:
/// the token's access, or the anonymous one without a token.
pub(super) async fn access_of(
    state: &AppState,
    token: Option<&str>,
) -> Result<Arc<Access>, Response<Body>> {
    let auth = state.auth.get();
    let Some(token) = token else {
        return Ok(auth.anonymous());
    };
    let refused = |m: &str| error_response(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, m);
    match auth.verify_waiting(token).await {
        Ok(a) if state.bus.is_revoked(a.user.as_deref(), a.issued_at) => {
            Err(refused("token revoked"))
        }
        Ok(a) => Ok(a),
        Err(e) => Err(refused(&e.to_string())),
    }
}

/// The `pattern` parameters of the query, decoded.
fn patterns(query: Option<&str>) -> Vec<String> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "pattern").then(|| percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

/// `Last-Event-ID: <session>:<seq>` → the session and the last seq its client has.
fn last_event_id(req: &Request<Body>) -> Option<(String, u64)> {
    let v = req.headers().get("last-event-id")?.to_str().ok()?;
    let (session, seq) = v.trim().rsplit_once(':')?;
    Some((session.to_owned(), seq.parse().ok()?))
}

/// `GET /v1/events?pattern=…`: opens (or, with `Last-Event-ID`, resumes) a session and
/// streams it.
pub(super) async fn events(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    // A stream is a connection: it counts against the same limits as a WebSocket.
    let max = state.config().limits.max_connections as u64;
    let Some(counted) = Counted::take(&state, max) else {
        state.metrics.connection_rejected();
        let m = "connection limit reached";
        return error_response(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, m);
    };
    let per_ip = state.config().limits.max_connections_per_ip;
    let Some(ip_slot) = state.per_ip.acquire(peer.ip(), per_ip) else {
        let m = "too many connections from this address";
        return error_response(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, m);
    };
    let token = upgrade_token(&req);
    let access = match access_of(&state, token.as_deref()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let wanted = patterns(req.uri().query());
    if wanted.len() > MAX_PATTERNS {
        let m = format!("at most {MAX_PATTERNS} 'pattern' parameters");
        return error_response(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &m);
    }
    // Checked before anything opens: a refused stream leaves nothing behind.
    for p in &wanted {
        match Pattern::parse(p) {
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadPattern,
                    &e.to_string(),
                );
            }
            Ok(parsed) if !access.subscribe.allows_pattern(&parsed) => {
                let m = format!("no permission to subscribe to '{p}'");
                return error_response(StatusCode::FORBIDDEN, ErrorCode::Forbidden, &m);
            }
            Ok(_) => {}
        }
    }
    let bus = &state.bus;
    // A session resumes only for its own user; a bad or unknown id gets a new session
    // (`welcome` says `resumed: false`), never an error a browser would retry forever.
    let found = last_event_id(&req).and_then(|(id, seq)| {
        bus.find_session(&id)
            .filter(|s| s.identity().user == access.user)
            .map(|s| (s, seq))
    });
    let resumed = found.is_some();
    let (session, replay_from) = match found {
        Some((s, seq)) => {
            let from = seq.min(s.last_seq());
            (s, Some(from))
        }
        None => (bus.open_session(), None),
    };
    access.apply_to(&session);
    let outbox = Arc::new(Outbox::new());
    let config = state.config();
    let welcome = ServerFrame::Welcome(WelcomeFrame {
        session: session.id().to_string(),
        resumed,
        heartbeat_ms: config.heartbeat.as_millis() as u64,
        max_frame: config.max_frame,
    });
    // `welcome` first, then whatever the session holds.
    let _ = outbox.try_push_control(welcome.encode());
    if let Some(previous) = session.attach(outbox.clone(), replay_from) {
        previous.close(Close {
            code: crate::protocol::close::POLICY,
            reason: "session resumed by another connection".into(),
            last_words: None,
        });
    }
    // Only a new session takes the URL's patterns: a browser reconnects with the same URL,
    // and a resumed session keeps what it was changed to since (an `unsub` stays).
    for p in wanted.iter().filter(|_| !resumed) {
        if let Err(e) = bus.subscribe_with(&session, p, &Default::default()).await {
            session.detach(&outbox);
            if !resumed {
                bus.close_session(&session);
            }
            return bus_error(&e);
        }
    }
    state.metrics.connection_opened();
    tracing::debug!(session = %session.id(), resumed, "event stream opened");
    let body = stream::body(
        state.clone(),
        session,
        outbox,
        access.time_left(),
        replay_from.unwrap_or(0),
        Box::new((counted, ip_slot)),
    );
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    // Proxies that buffer responses (nginx) would hold the stream back.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}
