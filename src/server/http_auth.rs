//! Credentials of HTTP API calls (PROTOCOL.md §8): `Authorization: Bearer <api key, admin
//! key or token>`, as axum extractors so that a handler states what it needs in its
//! signature.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;

use super::AppState;
use super::credentials::bearer;
use super::reply::error_response;
use crate::auth::{AuthError, Caller};

/// Whoever is calling; missing or refused credentials are answered 401 before the handler
/// runs (when `[auth]` is configured).
pub(crate) struct HttpCaller(pub Caller);

/// A caller allowed server-wide listings (stats, topics, presence): an admin key.
pub(crate) struct Admin;

/// The protocol's error body for a refused credential or permission.
pub(crate) fn auth_error(e: &AuthError) -> Response {
    let status = StatusCode::from_u16(e.code().http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    error_response(status, e.code(), &e.to_string())
}

impl FromRequestParts<Arc<AppState>> for HttpCaller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let bearer = bearer(&parts.headers);
        let caller = state
            .auth
            .get()
            .http_caller(bearer)
            .await
            .map_err(|e| auth_error(&e))?;
        // A token issued before a revocation of its user is refused here too.
        if let Caller::Token(a) = &caller
            && state.bus.is_revoked(a.user.as_deref(), a.issued_at)
        {
            return Err(auth_error(&AuthError::InvalidToken("token revoked".into())));
        }
        Ok(HttpCaller(caller))
    }
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let HttpCaller(caller) = HttpCaller::from_request_parts(parts, state).await?;
        caller
            .may_list()
            .map(|()| Admin)
            .map_err(|e| auth_error(&e))
    }
}
