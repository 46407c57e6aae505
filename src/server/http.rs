//! The HTTP API of PROTOCOL.md §8 for backend services, plus health checks.
//!
//! Errors always come back as `{"error":{"code","message"}}` with a fitting status, including
//! for bodies that are too large or not JSON (axum's own rejections are plain text, so bodies
//! are read and parsed here).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::http_auth::{Admin, HttpCaller, auth_error};
use super::reply::{bus_error, code_error, error_response, json_error, read_body};
use super::{AppState, control, cors, sse, web, ws};
use crate::auth::Caller;
use crate::backend::PublishRequest;
use crate::bus::{PubAck, Publish, Published};
use crate::protocol::ErrorCode;

/// Most messages in one `POST /v1/publish/batch`.
pub const MAX_BATCH: usize = 1000;
/// Largest batch body.
const MAX_BATCH_BODY: usize = 16 << 20;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/v1/publish", post(publish))
        .route("/v1/publish/batch", post(publish_batch))
        .route("/v1/topics", get(topics))
        .route("/v1/history", get(history))
        .route("/v1/presence", get(presence))
        .route("/v1/stats", get(stats))
        .route("/v1/events", get(sse::events))
        .route("/v1/events/{session}/sub", post(sse::sub))
        .route("/v1/events/{session}/unsub", post(sse::unsub))
        .route("/v1/disconnect", post(control::disconnect))
        .route("/v1/unsubscribe", post(control::unsubscribe))
        .route("/v1/subscribe", post(control::subscribe))
        .route("/v1/revoke", post(control::revoke))
        .route("/v1/sessions", get(control::sessions))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(web::index))
        .route("/{*path}", get(web::asset))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::layer,
        ))
        .with_state(state)
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such endpoint",
    )
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    msg_id: Option<String>,
    #[serde(default)]
    retain: bool,
}

#[derive(Serialize)]
struct AckBody {
    offset: u64,
    epoch: String,
    duplicate: bool,
}

impl From<PubAck> for AckBody {
    fn from(a: PubAck) -> Self {
        AckBody {
            offset: a.offset,
            epoch: a.epoch.to_string(),
            duplicate: a.duplicate,
        }
    }
}

/// Asks the publish proxy when a route covers the topic (an API or admin key skips routes
/// marked `skip_api_keys`); `Some(data)`: the backend's replacement payload.
async fn ask_publish(
    state: &AppState,
    caller: &Caller,
    p: &PublishBody<'_>,
) -> Result<Option<Box<RawValue>>, (ErrorCode, String)> {
    let Some(proxy) = state.backend.proxy.as_ref() else {
        return Ok(None);
    };
    let keyed = matches!(caller, Caller::ApiKey | Caller::Admin);
    let Some(route) = proxy.publish_route(&p.topic, keyed) else {
        return Ok(None);
    };
    let user = match caller {
        Caller::Token(a) => a.user.as_deref(),
        _ => None,
    };
    let req = PublishRequest {
        session: None,
        user,
        topic: &p.topic,
        data: p.data,
        msg_id: p.msg_id.as_deref(),
    };
    proxy
        .publish(route, &req)
        .await
        .map_err(|e| (e.code(), e.to_string()))
}

/// Publishes; on a persisted topic the answer waits until the message is durable.
async fn publish_one(
    state: &AppState,
    caller: &Caller,
    p: &PublishBody<'_>,
) -> Result<PubAck, (ErrorCode, String)> {
    let published = submit_one(state, caller, p).await?;
    published.ack().await.map_err(|e| (e.code(), e.to_string()))
}

async fn submit_one(
    state: &AppState,
    caller: &Caller,
    p: &PublishBody<'_>,
) -> Result<Published, (ErrorCode, String)> {
    let replaced = ask_publish(state, caller, p).await?;
    state
        .bus
        .submit_as_client(Publish {
            topic: &p.topic,
            data: replaced.as_deref().unwrap_or(p.data),
            msg_id: p.msg_id.as_deref(),
            retain: p.retain,
        })
        .await
        .map_err(|e| (e.code(), e.to_string()))
}

/// serde reads a struct from an array too (fields by position); a publish is an object.
fn is_object(json: &[u8]) -> bool {
    json.trim_ascii_start().first() == Some(&b'{')
}

fn refused((code, message): (ErrorCode, String)) -> Response {
    code_error(code, &message)
}

/// `?topic=&msg_id=&retain=`: the fields of an `application/octet-stream` publish, whose body
/// is the data.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    topic: String,
    msg_id: Option<String>,
    #[serde(default)]
    retain: bool,
}

/// What a publish body's `Content-Type` says it is (PROTOCOL.md §8).
enum BodyKind {
    Json,
    Msgpack,
    Bytes,
}

fn body_kind(headers: &HeaderMap) -> BodyKind {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if [
        "application/msgpack",
        "application/x-msgpack",
        "application/vnd.msgpack",
    ]
    .iter()
    .any(|m| mime.eq_ignore_ascii_case(m))
    {
        BodyKind::Msgpack
    } else if mime.eq_ignore_ascii_case("application/octet-stream") {
        BodyKind::Bytes
    } else {
        BodyKind::Json
    }
}

/// The body as the JSON the handlers read: JSON as sent, MessagePack transcoded (`bin` as
/// `{"$base64"}`), raw bytes (`uri`'s query gives topic and options) as binary `data`.
fn as_json(kind: BodyKind, bytes: bytes::Bytes, uri: Option<&Uri>) -> Result<bytes::Bytes, String> {
    match kind {
        BodyKind::Json => Ok(bytes),
        BodyKind::Msgpack => match crate::protocol::msgpack::to_json(&bytes) {
            Ok(json) => Ok(json.into()),
            Err(e) => Err(format!("body is not MessagePack: {e}")),
        },
        BodyKind::Bytes => {
            let Some(uri) = uri else {
                return Err("application/octet-stream is for POST /v1/publish?topic=…".into());
            };
            let q = Query::<RawPublish>::try_from_uri(uri)
                .map_err(|e| format!("octet-stream publish: {}", e.body_text()))?;
            use base64::Engine as _;
            let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let body = json!({
                "topic": q.0.topic,
                "data": {"$base64": data},
                "msg_id": q.0.msg_id,
                "retain": q.0.retain,
            });
            Ok(serde_json::to_vec(&body).unwrap_or_default().into())
        }
    }
}

async fn publish(
    State(state): State<Arc<AppState>>,
    HttpCaller(caller): HttpCaller,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let bytes = match read_body(body, state.config().max_frame).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let bytes = match as_json(body_kind(&headers), bytes, Some(&uri)) {
        Ok(b) => b,
        Err(m) => return error_response(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &m),
    };
    if !is_object(&bytes) {
        return error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "the body must be an object {topic, data, msg_id?, retain?}",
        );
    }
    let p: PublishBody<'_> = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => return json_error(e),
    };
    if let Err(e) = caller.may_publish(&p.topic) {
        return auth_error(&e);
    }
    match publish_one(&state, &caller, &p).await {
        Ok(ack) => axum::Json(AckBody::from(ack)).into_response(),
        Err(e) => refused(e),
    }
}

async fn publish_batch(
    State(state): State<Arc<AppState>>,
    HttpCaller(caller): HttpCaller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(body, MAX_BATCH_BODY).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let bytes = match as_json(body_kind(&headers), bytes, None) {
        Ok(b) => b,
        Err(m) => return error_response(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &m),
    };
    let items: Vec<&RawValue> = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return json_error(e),
    };
    if items.len() > MAX_BATCH {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            &format!(
                "a batch holds at most {MAX_BATCH} messages, got {}",
                items.len()
            ),
        );
    }
    // Everything is queued first, then awaited: a batch to a persisted topic shares fsyncs.
    let mut submitted = Vec::with_capacity(items.len());
    for raw in &items {
        let r = match serde_json::from_str::<PublishBody<'_>>(raw.get()) {
            _ if !is_object(raw.get().as_bytes()) => Err((
                ErrorCode::BadRequest,
                "each message must be an object {topic, data, msg_id?, retain?}".into(),
            )),
            Err(e) => Err((ErrorCode::BadRequest, e.to_string())),
            Ok(p) => match caller.may_publish(&p.topic) {
                Err(e) => Err((e.code(), e.to_string())),
                Ok(_) => submit_one(&state, &caller, &p).await,
            },
        };
        submitted.push(r);
    }
    let mut results: Vec<serde_json::Value> = Vec::with_capacity(submitted.len());
    for r in submitted {
        let r = match r {
            Ok(published) => published.ack().await.map_err(|e| (e.code(), e.to_string())),
            Err(e) => Err(e),
        };
        results.push(match r {
            Ok(ack) => json!(AckBody::from(ack)),
            Err((code, message)) => json!({"error": {"code": code, "message": message}}),
        });
    }
    axum::Json(results).into_response()
}

#[derive(Deserialize)]
struct TopicsQuery {
    pattern: Option<String>,
}

async fn topics(
    State(state): State<Arc<AppState>>,
    _: Admin,
    q: Result<Query<TopicsQuery>, QueryRejection>,
) -> Response {
    let pattern = match q {
        Ok(Query(q)) => q.pattern,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                &e.body_text(),
            );
        }
    };
    match state.bus.topics(pattern.as_deref()).await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(e) => bus_error(&e),
    }
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    topic: String,
    since: Option<u64>,
    limit: Option<u64>,
}

/// `GET /v1/history?topic=&since=&limit=` → `{epoch, messages}`.
async fn history(
    State(state): State<Arc<AppState>>,
    HttpCaller(caller): HttpCaller,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                &e.body_text(),
            );
        }
    };
    if let Err(e) = caller.may_read(&q.topic) {
        return auth_error(&e);
    }
    match state.bus.history(&q.topic, q.since, q.limit).await {
        Ok(page) => {
            axum::Json(json!({"epoch": &*page.epoch, "messages": page.rows()})).into_response()
        }
        Err(e) => bus_error(&e),
    }
}

#[derive(serde::Deserialize)]
struct PresenceQuery {
    topic: String,
}

/// `GET /v1/presence?topic=` → `{count, clients}`.
async fn presence(
    State(state): State<Arc<AppState>>,
    _: Admin,
    q: Result<Query<PresenceQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                &e.body_text(),
            );
        }
    };
    match state.bus.presence(&q.topic).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => bus_error(&e),
    }
}

async fn stats(State(state): State<Arc<AppState>>, _: Admin) -> Response {
    axum::Json(crate::metrics::stats_json(
        &state.bus,
        &state.metrics,
        &state.rates,
    ))
    .into_response()
}

/// `GET /metrics`: Prometheus (OpenMetrics text).
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.exporter.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.shutdown.is_cancelled() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "shutting down",
        );
    }
    if !state.bus.is_ready() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "not connected to Redis",
        );
    }
    axum::Json(json!({"status": "ready"})).into_response()
}
