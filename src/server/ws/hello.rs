//! Who a connection is: its token (from the upgrade or `hello`), which sets its
//! permissions and expiry, and its session (`hello`, opened or resumed; or opened as if
//! `hello {}` came, when another frame comes first).

use std::sync::Arc;

use super::reader::Reader;
use crate::auth::Access;
use crate::protocol::{ErrorCode, ServerFrame, WelcomeFrame, close};
use crate::session::{Close, Session};

impl Reader {
    /// The connection's session, opening a new one (as if `hello {}` came) if none yet.
    /// `None`: the connect proxy refused the connection (it is closing).
    pub(super) async fn ensure_session(&mut self) -> Option<Arc<Session>> {
        if let Some(s) = self.conn.session() {
            return Some(s);
        }
        self.hello(None, None, None).await
    }

    /// Verifies a token and makes its permissions the connection's. On failure: an
    /// `unauthorized` error, then close 4001; returns false.
    pub(super) async fn authenticate(&mut self, token: &str) -> bool {
        // `get`, not `load`: an unknown `kid` may wait (bounded) for a JWKS refetch.
        match self.state.auth.get().verify_waiting(token).await {
            Ok(access)
                if self
                    .state
                    .bus
                    .is_revoked(access.user.as_deref(), access.issued_at) =>
            {
                tracing::debug!("token revoked");
                self.send_error(None, ErrorCode::Unauthorized, "token revoked")
                    .await;
                self.close(close::UNAUTHORIZED, "token revoked");
                false
            }
            Ok(access) => {
                self.set_expiry(&access);
                self.guard.set_access(access);
                // Without `[auth]` any token "verifies" to open access: not a token's.
                self.has_token = self.state.auth.get().is_enabled();
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "token refused");
                self.send_error(None, e.code(), e.to_string()).await;
                self.close(close::UNAUTHORIZED, &e.to_string());
                false
            }
        }
    }

    /// Gives the session the connection's identity and delivery filter.
    pub(super) fn apply_access(&self, session: &Session, access: &Access) {
        access.apply_to(session);
    }

    /// Opens or resumes the session, after the connect proxy (if any) allowed it; `None`
    /// when it did not (the connection is closing).
    pub(super) async fn hello(
        &mut self,
        resume: Option<&str>,
        last_seq: Option<u64>,
        client: Option<&serde_json::value::RawValue>,
    ) -> Option<Arc<Session>> {
        let bus = self.state.bus.clone();
        // A session belongs to its user: another user's connection cannot resume it. With
        // a connect proxy the user is the backend's answer: the session is looked up again
        // once it is known.
        let user = self.guard.access().user.clone();
        let found = resume
            .and_then(|id| bus.find_session(id))
            .filter(|s| self.proxied_connect() || s.identity().user == user);
        let session = found.clone().unwrap_or_else(|| bus.open_session());
        if !self.ask_connect(&session, client).await {
            if found.is_none() {
                bus.close_session(&session);
            }
            return None;
        }
        let access = self.guard.access().clone();
        let (session, resumed) = match found {
            Some(s) if s.identity().user == access.user => (s, true),
            Some(_) => (bus.open_session(), false),
            None => (session, false),
        };
        self.apply_access(&session, &access);
        if !resumed {
            // `session.opened` for the webhooks, now that the session's user is known.
            bus.session_opened(&session);
        }
        self.span.record("session", &**session.id());
        // `welcome` goes out before anything the session holds: queue it, then attach.
        self.send(ServerFrame::Welcome(WelcomeFrame {
            session: session.id().to_string(),
            resumed,
            heartbeat_ms: self.state.config().heartbeat.as_millis() as u64,
            max_frame: self.state.config().max_frame,
        }))
        .await;
        *self.conn.session.lock() = Some(session.clone());
        let replay_from = if resumed {
            Some(last_seq.unwrap_or(0))
        } else {
            None
        };
        if let Some(previous) = session.attach(self.conn.outbox.clone(), replay_from) {
            previous.close(Close {
                code: close::POLICY,
                reason: "session resumed by another connection".into(),
                last_words: None,
            });
        }
        tracing::debug!(resumed, "hello");
        Some(session)
    }

    fn proxied_connect(&self) -> bool {
        self.state
            .backend
            .proxy
            .as_ref()
            .is_some_and(|p| p.asks_connect())
    }
}
