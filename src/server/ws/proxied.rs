//! What a connection asks the application's backend (`[proxy]`, PROTOCOL.md §10): connect at
//! `hello`, subscribe before a matching `sub`, publish before a matching `pub`, and `rpc`.
//!
//! The reader awaits each call inline, so one connection's operations keep their order (a
//! publish answered after the backend allowed it is routed before the next one is read).
//! Delivery to the connection is the writer's and never waits for the backend; a slow backend
//! only slows the reading of that connection's own frames, bounded by `proxy.timeout`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::reader::Reader;
use crate::auth::{Access, Perms};
use crate::backend::{ConnectRequest, ProxyError, PublishRequest, RpcRequest, SubscribeRequest};
use crate::protocol::{ErrorCode, Id, ServerFrame, close};
use crate::session::Session;
use crate::topic::Pattern;

/// A token's claims as the connect proxy sees them.
fn claims(a: &Access) -> serde_json::Value {
    // `null` for "everything" (no `[auth]`), else the patterns.
    fn list(p: &Perms) -> Option<Vec<&str>> {
        (!p.is_all()).then(|| p.patterns().collect())
    }
    serde_json::json!({
        "sub": a.user,
        "exp": a.expires_at,
        "iat": a.issued_at,
        "info": a.info,
        "publish": list(&a.publish),
        "subscribe": list(&a.subscribe),
    })
}

impl Reader {
    /// Asks the connect proxy about this connection (when one is configured) and gives the
    /// connection what it grants. On a refusal or no answer: the `error`, the close (4001
    /// for `unauthorized`, else 4003), and false.
    pub(super) async fn ask_connect(
        &mut self,
        session: &Session,
        client: Option<&RawValue>,
    ) -> bool {
        let backend = self.state.backend.clone();
        let Some(proxy) = backend.proxy.as_ref().filter(|p| p.asks_connect()) else {
            return true;
        };
        let upgrade = self.upgrade.take();
        let no_headers = BTreeMap::new();
        let current = self.guard.access().clone();
        let req = ConnectRequest {
            session: session.id().as_ref(),
            ip: upgrade
                .as_ref()
                .map_or_else(String::new, |u| u.ip.to_string()),
            headers: upgrade.as_ref().map_or(&no_headers, |u| &u.headers),
            token: self.has_token.then(|| claims(&current)),
            client,
        };
        let refused = match proxy.connect(&req).await {
            Ok(grant) => match grant.apply(&current, self.has_token) {
                Ok(access) => {
                    let access = Arc::new(access);
                    self.set_expiry(&access);
                    self.guard.set_access(access);
                    return true;
                }
                Err(e) => ProxyError::Unavailable(crate::backend::CallError::BadJson(e)),
            },
            Err(e) => e,
        };
        tracing::debug!(error = %refused, "connect refused by the backend");
        let code = refused.code();
        self.send_error(None, code, refused.to_string()).await;
        let close_code = if code == ErrorCode::Unauthorized {
            close::UNAUTHORIZED
        } else {
            close::FORBIDDEN
        };
        self.close(close_code, &refused.to_string());
        false
    }

    /// Asks the subscribe proxy about a `sub` whose pattern a route covers; `Err` with the
    /// `error` to send. Patterns that do not parse are left to the bus to refuse.
    pub(super) async fn ask_subscribe(
        &self,
        session: &Session,
        pattern: &str,
        group: Option<&str>,
    ) -> Result<(), ProxyError> {
        let Some(proxy) = self.state.backend.proxy.as_ref() else {
            return Ok(());
        };
        let Ok(parsed) = Pattern::parse(pattern) else {
            return Ok(());
        };
        let Some(route) = proxy.subscribe_route(&parsed) else {
            return Ok(());
        };
        let user = self.guard.access().user.clone();
        let req = SubscribeRequest {
            session: session.id().as_ref(),
            user: user.as_deref(),
            pattern,
            group,
        };
        proxy.subscribe(route, &req).await
    }

    /// Asks the publish proxy about a `pub` to a routed topic; `Some(data)` replaces the
    /// payload.
    pub(super) async fn ask_publish(
        &self,
        session: &Session,
        topic: &str,
        data: &RawValue,
        msg_id: Option<&str>,
    ) -> Result<Option<Box<RawValue>>, ProxyError> {
        let Some(proxy) = self.state.backend.proxy.as_ref() else {
            return Ok(None);
        };
        let Some(route) = proxy.publish_route(topic, false) else {
            return Ok(None);
        };
        let user = self.guard.access().user.clone();
        let req = PublishRequest {
            session: Some(session.id().as_ref()),
            user: user.as_deref(),
            topic,
            data,
            msg_id,
        };
        proxy.publish(route, &req).await
    }

    /// `rpc {id, method, data}`: the backend's answer as `reply {id, data}`, or its error.
    pub(super) async fn rpc(
        &self,
        id: Option<Id>,
        session: &Session,
        method: &str,
        data: &RawValue,
    ) {
        let Some(proxy) = self.state.backend.proxy.as_ref() else {
            let msg = "this server has no rpc backend ([proxy] rpc)";
            return self.send_error(id, ErrorCode::NotFound, msg).await;
        };
        let user = self.guard.access().user.clone();
        let req = RpcRequest {
            session: session.id().as_ref(),
            user: user.as_deref(),
            method,
            data,
        };
        match proxy.rpc(&req).await {
            Ok(answer) => {
                let data = serde_json::from_str(answer.get()).unwrap_or(serde_json::Value::Null);
                self.send(ServerFrame::Reply { id, data }).await
            }
            Err(e) => self.send_error(id, e.code(), e.to_string()).await,
        }
    }
}
