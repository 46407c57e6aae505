//! The protocol's HTTP error body, `{"error":{"code","message"}}` (PROTOCOL.md §8): one
//! place for every HTTP answer that refuses, from the API, its credentials, the WebSocket
//! upgrade and the web app alike.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::protocol::ErrorCode;

/// The protocol's HTTP error body.
pub(crate) fn error_response(status: StatusCode, code: ErrorCode, message: &str) -> Response<Body> {
    let body = json!({"error": {"code": code, "message": message}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
