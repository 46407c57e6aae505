//! The control endpoints of the HTTP API (PROTOCOL.md §8), all behind an admin key:
//! `POST /v1/disconnect`, `/v1/unsubscribe`, `/v1/subscribe`, `/v1/revoke` and
//! `GET /v1/sessions`. Each body is checked here, with a clear 400 for what is wrong, and
//! then becomes one [`Control`] command that the bus runs on every node.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::http_auth::Admin;
use super::reply::{bus_error, error_response, json_error, read_body};
use crate::bus::{Control, MAX_GROUP, Target, valid_disconnect_code};
use crate::protocol::ErrorCode;
use crate::topic::Pattern;

/// Largest control body (they are small).
const MAX_BODY: usize = 64 * 1024;
/// Close code of `POST /v1/disconnect` when none is given.
pub const DISCONNECT_CODE: u16 = 4003;
/// Longest close reason (a close frame's payload is 125 bytes, the code takes 2).
const MAX_REASON: usize = 123;

fn bad(message: impl AsRef<str>) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        message.as_ref(),
    )
}

/// What is wrong with a control body (a 400). Small, unlike the [`Response`] it becomes.
#[derive(Debug, thiserror::Error)]
enum Invalid {
    #[error("{0}")]
    Request(String),
    #[error("{0}")]
    Pattern(String),
}

impl Invalid {
    fn request(message: impl Into<String>) -> Invalid {
        Invalid::Request(message.into())
    }
}

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        let code = match self {
            Invalid::Request(_) => ErrorCode::BadRequest,
            Invalid::Pattern(_) => ErrorCode::BadPattern,
        };
        error_response(StatusCode::BAD_REQUEST, code, &self.to_string())
    }
}

async fn body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Response> {
    let bytes = read_body(body, MAX_BODY).await?;
    serde_json::from_slice(&bytes).map_err(json_error)
}

/// `"user"` or `"session"`, exactly one of them, neither empty.
fn target(user: Option<String>, session: Option<String>) -> Result<Target, Invalid> {
    match (user, session) {
        (Some(_), Some(_)) => Err(Invalid::request(
            "give either 'user' or 'session', not both",
        )),
        (None, None) => Err(Invalid::request("give 'user' or 'session'")),
        (Some(u), None) if !u.is_empty() => Ok(Target::User(u)),
        (None, Some(s)) if !s.is_empty() => Ok(Target::Session(s)),
        _ => Err(Invalid::request("'user' and 'session' may not be empty")),
    }
}

fn pattern(p: &str) -> Result<String, Invalid> {
    Pattern::parse(p)
        .map(|p| p.as_str().to_owned())
        .map_err(|e| Invalid::Pattern(e.to_string()))
}

fn group(g: &Option<String>) -> Result<(), Invalid> {
    match g {
        Some(g) if g.is_empty() || g.len() > MAX_GROUP => Err(Invalid::request(format!(
            "'group' must be 1 to {MAX_GROUP} bytes"
        ))),
        _ => Ok(()),
    }
}

async fn run(state: &AppState, cmd: Control, field: &str) -> Response {
    match state.bus.control(cmd).await {
        Ok(a) => axum::Json(json!({ field: a.count })).into_response(),
        Err(e) => bus_error(&e),
    }
}

// Unknown fields are refused: a misspelt `session` must not widen a call to all of a user's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: Option<String>,
    session: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
    #[serde(default)]
    resumable: bool,
}

/// `POST /v1/disconnect {user?, session?, code?, reason?, resumable?}` → `{disconnected}`.
pub(super) async fn disconnect(State(state): State<Arc<AppState>>, _: Admin, b: Body) -> Response {
    let b: DisconnectBody = match body(b).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if b.user.is_none() && b.session.is_none() {
        return bad("give 'user', 'session' or both");
    }
    if b.user.as_deref() == Some("") || b.session.as_deref() == Some("") {
        return bad("'user' and 'session' may not be empty");
    }
    let code = b.code.unwrap_or(DISCONNECT_CODE);
    if !valid_disconnect_code(code) {
        return bad(format!("'code' must be 1000 or 4000 to 4999, not {code}"));
    }
    let reason = b
        .reason
        .unwrap_or_else(|| "disconnected by the server".into());
    if reason.len() > MAX_REASON {
        return bad(format!("'reason' is longer than {MAX_REASON} bytes"));
    }
    let cmd = Control::Disconnect {
        user: b.user,
        session: b.session,
        code,
        reason,
        resumable: b.resumable,
    };
    run(&state, cmd, "disconnected").await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubBody {
    user: Option<String>,
    session: Option<String>,
    pattern: Option<String>,
    group: Option<String>,
    rewind: Option<u64>,
}

impl SubBody {
    fn checked(self) -> Result<(Target, String, Option<String>, Option<u64>), Invalid> {
        let t = target(self.user, self.session)?;
        let Some(p) = self.pattern else {
            return Err(Invalid::request("give 'pattern'"));
        };
        let p = pattern(&p)?;
        group(&self.group)?;
        if self.group.is_some() && self.rewind.is_some() {
            return Err(Invalid::request("'rewind' cannot be used with 'group'"));
        }
        Ok((t, p, self.group, self.rewind))
    }
}

/// `POST /v1/unsubscribe {user|session, pattern, group?}` → `{unsubscribed}`.
pub(super) async fn unsubscribe(State(state): State<Arc<AppState>>, _: Admin, b: Body) -> Response {
    let b: SubBody = match body(b).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if b.rewind.is_some() {
        return bad("'rewind' applies to /v1/subscribe only");
    }
    let (target, pattern, group, _) = match b.checked() {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let cmd = Control::Unsubscribe {
        target,
        pattern,
        group,
    };
    run(&state, cmd, "unsubscribed").await
}

/// `POST /v1/subscribe {user|session, pattern, group?, rewind?}` → `{subscribed}`.
pub(super) async fn subscribe(State(state): State<Arc<AppState>>, _: Admin, b: Body) -> Response {
    let b: SubBody = match body(b).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (target, pattern, group, rewind) = match b.checked() {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let cmd = Control::Subscribe {
        target,
        pattern,
        group,
        rewind,
    };
    run(&state, cmd, "subscribed").await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    user: Option<String>,
    before: Option<u64>,
}

/// `POST /v1/revoke {user, before}` → `{disconnected}`.
pub(super) async fn revoke(State(state): State<Arc<AppState>>, _: Admin, b: Body) -> Response {
    let b: RevokeBody = match body(b).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let user = match b.user {
        Some(u) if !u.is_empty() => u,
        Some(_) => return bad("'user' may not be empty"),
        None => return bad("give 'user'"),
    };
    let Some(before) = b.before else {
        return bad("give 'before' (Unix seconds)");
    };
    run(&state, Control::Revoke { user, before }, "disconnected").await
}

#[derive(Deserialize)]
pub(super) struct SessionsQuery {
    user: Option<String>,
}

/// `GET /v1/sessions?user=` → `[{session, user, connected, subscriptions}]`.
pub(super) async fn sessions(
    State(state): State<Arc<AppState>>,
    _: Admin,
    q: Result<Query<SessionsQuery>, QueryRejection>,
) -> Response {
    let user = match q {
        Ok(Query(q)) => q.user,
        Err(e) => return bad(e.body_text()),
    };
    if user.as_deref() == Some("") {
        return bad("'user' may not be empty");
    }
    match state.bus.control(Control::Sessions { user }).await {
        Ok(a) => axum::Json(a.sessions).into_response(),
        Err(e) => bus_error(&e),
    }
}
