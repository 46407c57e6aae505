//! A connection's token over time: `expiring` sent `auth.refresh_notice` before `exp`, the
//! close with 4001 at `exp`, and `refresh`, which puts a new token of the same user in place
//! of the old one without a reconnect.
//!
//! A refresh takes effect at once, in this order: the connection's permissions (the guard),
//! the session's delivery filter (which withholds what the buffer already holds outside the
//! new permissions: those seqs become a `gap`, PROTOCOL.md §3), then every subscription the
//! new permissions no longer contain is removed with `unsubscribed {reason:"forbidden"}`.

use std::sync::Arc;

use super::reader::Reader;
use crate::auth::Access;
use crate::protocol::{ErrorCode, Id, OkFrame, ServerFrame, UnsubscribedReason, close};
use crate::session::Session;
use crate::topic::Pattern;

impl Reader {
    /// Sets when the token expires (and when `expiring` is due) from `access`.
    pub(super) fn set_expiry(&mut self, access: &Access) {
        let now = tokio::time::Instant::now();
        self.expires = access.time_left().map(|left| now + left);
        let notice = self
            .state
            .config()
            .auth
            .as_ref()
            .map(|a| a.refresh_notice)
            .unwrap_or_default();
        self.notice = self
            .expires
            .map(|at| at.checked_sub(notice).unwrap_or(now).max(now));
    }

    /// The next time the token needs attention: `expiring` once the connection has a
    /// session (nothing may precede `welcome`), then its expiry.
    pub(super) fn auth_deadline(&self) -> Option<tokio::time::Instant> {
        self.notice
            .filter(|_| self.conn.session.lock().is_some())
            .or(self.expires)
    }

    /// At [`Reader::auth_deadline`]: sends `expiring`, or closes with 4001 at `exp`.
    /// Returns true when the connection ends.
    pub(super) async fn on_auth_deadline(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if let Some(at) = self.notice
            && at <= now
            && self.conn.session.lock().is_some()
        {
            self.notice = None;
            if let Some(exp) = self.guard.access().expires_at {
                self.send(ServerFrame::Expiring { exp }).await;
            }
            return false;
        }
        if self.expires.is_some_and(|at| at <= now) {
            self.close(close::UNAUTHORIZED, "token expired");
            return true;
        }
        false
    }

    /// `refresh {id, token}`: see the module comment. A refused token is answered with an
    /// error; the connection keeps the token it has (until its `exp`).
    pub(super) async fn refresh(&mut self, id: Option<Id>, token: &str, session: &Arc<Session>) {
        // `get`, not `load`: a new `kid` (a key rotation) may wait, bounded, for a JWKS refetch.
        let access = match self.state.auth.get().verify_waiting(token).await {
            Ok(a) => a,
            Err(e) => return self.send_error(id, e.code(), e.to_string()).await,
        };
        if self
            .state
            .bus
            .is_revoked(access.user.as_deref(), access.issued_at)
        {
            return self
                .send_error(id, ErrorCode::Unauthorized, "token revoked")
                .await;
        }
        if access.user != self.guard.access().user {
            let msg = "a refresh token must have the same 'sub' as the connection's token";
            return self.send_error(id, ErrorCode::Forbidden, msg).await;
        }
        let old_exp = self.guard.access().expires_at;
        self.set_expiry(&access);
        // A token that expires no later than the one it replaces was already announced: a
        // second `expiring` at once would only start a refresh loop.
        if access
            .expires_at
            .is_some_and(|new| old_exp.is_some_and(|old| new <= old))
        {
            self.notice = None;
        }
        self.guard.set_access(access.clone());
        self.apply_access(session, &access);
        for key in session.subscriptions() {
            let allowed = Pattern::parse(&key.pattern)
                .map(|p| access.subscribe.allows_pattern(&p))
                .unwrap_or(false);
            if !allowed {
                self.state
                    .bus
                    .drop_sub(session, &key, UnsubscribedReason::Forbidden);
            }
        }
        let ok = OkFrame {
            exp: access.expires_at,
            ..Default::default()
        };
        self.send_ok(id, ok).await;
    }
}
