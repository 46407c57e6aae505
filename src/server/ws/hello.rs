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
    pub(super) async fn ensure_session(&mut self) -> Arc<Session> {
        if let Some(s) = self.conn.session() {
            return s;
        }
        self.hello(None, None).await
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

    pub(super) async fn hello(
        &mut self,
        resume: Option<&str>,
        last_seq: Option<u64>,
    ) -> Arc<Session> {
        let bus = &self.state.bus;
        let access = self.guard.access().clone();
        // A session belongs to its user: another user's connection cannot resume it.
        let found = resume
            .and_then(|id| bus.find_session(id))
            .filter(|s| s.identity().user == access.user);
        let resumed = found.is_some();
        let session = found.unwrap_or_else(|| bus.open_session());
        self.apply_access(&session, &access);
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
        session
    }
}
