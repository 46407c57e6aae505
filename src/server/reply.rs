//! The protocol's HTTP error body, `{"error":{"code","message"}}` (PROTOCOL.md §8): one
//! place for every HTTP answer that refuses, from the API, its credentials, the WebSocket
//! upgrade and the web app alike; and reading a request body within a limit, which refuses
//! the same way.

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::bus::BusError;
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

/// An error answer with the status the protocol gives `code`.
pub(crate) fn code_error(code: ErrorCode, message: &str) -> Response<Body> {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    error_response(status, code, message)
}

pub(crate) fn bus_error(e: &BusError) -> Response<Body> {
    code_error(e.code(), &e.to_string())
}

/// A body that is not the JSON expected: `bad_json` for a syntax error, `bad_request` for
/// the wrong shape.
pub(crate) fn json_error(e: serde_json::Error) -> Response<Body> {
    use serde_json::error::Category;
    let code = match e.classify() {
        Category::Data => ErrorCode::BadRequest,
        _ => ErrorCode::BadJson,
    };
    error_response(StatusCode::BAD_REQUEST, code, &e.to_string())
}

/// The whole body, at most `limit` bytes (else 413 `too_large`).
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response<Body>> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            &format!("body larger than {limit} bytes"),
        )),
        Err(e) => Err(error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            &format!("could not read body: {e}"),
        )),
    }
}
