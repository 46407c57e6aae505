//! CORS for the HTTP API (`/v1/…`), so that a page on another origin can use the Server-Sent
//! Events transport and the API (PROTOCOL.md §8, "Browsers on other origins").
//!
//! WebSockets need none of this (the upgrade checks `auth.origins` itself), but `EventSource`
//! and `fetch` are bound by CORS: without these headers herald.js's SSE fallback would work on
//! the server's own origin only. The rules follow `auth.origins`:
//! - no list: any origin, as `Access-Control-Allow-Origin: *`, without credentials, so that a
//!   server nobody configured never lets another site send a user's cookies;
//! - a list: a listed origin is echoed, with `Access-Control-Allow-Credentials: true` (cookies
//!   for the connect proxy); an unlisted one gets no CORS headers (the browser then withholds
//!   the answer), and a preflight or an event stream from it is refused with 403, as an upgrade
//!   from it is.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use axum::middleware::Next;

use super::AppState;
use super::reply::error_response;
use crate::protocol::ErrorCode;

/// Request headers a page may send (`Last-Event-ID` for a stream resumed by hand).
const ALLOW_HEADERS: &str = "authorization, content-type, last-event-id";
const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// How long a browser may keep a preflight's answer.
const MAX_AGE: &str = "600";

pub(crate) async fn layer(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response<Body> {
    if !req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await; // not a browser's cross-origin call
    };
    let auth = state.auth.load();
    let listed = auth.origins_listed();
    let allowed = auth.origin_allowed(origin.to_str().ok());
    drop(auth);
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !allowed {
        let stream = req.method() == Method::GET && req.uri().path() == "/v1/events";
        if preflight || stream {
            return error_response(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "this Origin may not use this server's API",
            );
        }
        return next.run(req).await;
    }
    let mut res = if preflight {
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::NO_CONTENT;
        let h = res.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
        res
    } else {
        next.run(req).await
    };
    allow(res.headers_mut(), origin, listed);
    res
}

fn allow(h: &mut HeaderMap, origin: HeaderValue, listed: bool) {
    if listed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.append(header::VARY, HeaderValue::from_static("origin"));
    } else {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
}
