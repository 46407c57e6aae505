//! `POST /v1/events/<session>/sub` and `/unsub`: an event stream's subscriptions, changed by
//! its client with the stream's credentials. The body is the `sub` (or `unsub`) frame without
//! `op` and `id` (`{"pattern","group"?,"rewind"?,"since"?}`), decoded and checked exactly as
//! the frame is; the answer is the `ok` the frame would get, or an HTTP error.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::Request;
use axum::response::{IntoResponse, Response};

use super::super::AppState;
use super::super::credentials::upgrade_token;
use super::super::reply::{code_error, read_body};
use super::access_of;
use crate::auth::Access;
use crate::bus::SubOptions;
use crate::protocol::{AckMode, ClientFrame, ErrorCode, OkFrame, decode};
use crate::session::Session;
use crate::topic::Pattern;

/// Largest body: a `sub` with a `since` of 1000 topics fits.
const MAX_BODY: usize = 256 * 1024;

/// The session named in the path, if the caller may act on it: the same user (or no
/// `[auth]`). Another user's session is "not found", like one that does not exist.
async fn session_of(
    state: &AppState,
    id: &str,
    token: Option<String>,
) -> Result<(Arc<Session>, Arc<Access>), Response> {
    let access = access_of(state, token.as_deref()).await?;
    match state.bus.find_session(id) {
        Some(s) if s.identity().user == access.user => Ok((s, access)),
        _ => Err(code_error(
            ErrorCode::NotFound,
            "no such session (it may have expired)",
        )),
    }
}

/// The body as the frame `op` would be: the same decoding, limits and errors.
async fn frame_text(op: &str, req: Request<Body>) -> Result<String, Response> {
    let bytes = read_body(req.into_body(), MAX_BODY).await?;
    let mut v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| code_error(ErrorCode::BadJson, &format!("body is not JSON: {e}")))?;
    let Some(o) = v.as_object_mut() else {
        return Err(code_error(
            ErrorCode::BadRequest,
            "body must be a JSON object",
        ));
    };
    if o.contains_key("op") || o.contains_key("id") {
        return Err(code_error(
            ErrorCode::BadRequest,
            "'op' and 'id' are not part of this body",
        ));
    }
    o.insert("op".into(), op.into());
    Ok(v.to_string())
}

/// `POST /v1/events/<session>/sub`.
pub(in crate::server) async fn sub(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    let (session, access) = match session_of(&state, &id, upgrade_token(&req)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let text = match frame_text("sub", req).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let frame = match decode(&text) {
        Ok(f) => f,
        Err(e) => return code_error(e.code, &e.message),
    };
    let ClientFrame::Sub {
        pattern,
        group,
        ack,
        rewind,
        since,
        ..
    } = frame
    else {
        return code_error(ErrorCode::Internal, "not a sub");
    };
    if let Ok(p) = Pattern::parse(&pattern)
        && !access.subscribe.allows_pattern(&p)
    {
        return code_error(
            ErrorCode::Forbidden,
            &format!("no permission to subscribe to '{pattern}'"),
        );
    }
    let opts = SubOptions {
        group: group.as_deref(),
        manual_ack: ack == Some(AckMode::Manual),
        rewind,
        since: since.as_ref(),
    };
    match state.bus.subscribe_with(&session, &pattern, &opts).await {
        Ok(outcome) => axum::Json(OkFrame {
            pattern: Some(pattern.into_owned()),
            recovered: outcome.recovered,
            ..Default::default()
        })
        .into_response(),
        Err(e) => code_error(e.code(), &e.to_string()),
    }
}

/// `POST /v1/events/<session>/unsub`.
pub(in crate::server) async fn unsub(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    let (session, _) = match session_of(&state, &id, upgrade_token(&req)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let text = match frame_text("unsub", req).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (pattern, group) = match decode(&text) {
        Ok(ClientFrame::Unsub { pattern, group, .. }) => (pattern, group),
        Ok(_) => return code_error(ErrorCode::Internal, "not an unsub"),
        Err(e) => return code_error(e.code, &e.message),
    };
    match state
        .bus
        .unsubscribe_session(&session, &pattern, group.as_deref())
    {
        Ok(()) => axum::Json(OkFrame {
            pattern: Some(pattern.into_owned()),
            ..Default::default()
        })
        .into_response(),
        Err(e) => code_error(e.code(), &e.to_string()),
    }
}
