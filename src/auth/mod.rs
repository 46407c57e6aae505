//! Who may connect, publish and subscribe (PROTOCOL.md §7): token verification, permission
//! lists and their containment check, the HTTP API's keys, and per-client limits.
//!
//! Everything here is transport-agnostic: the WebSocket connection and the HTTP API ask
//! [`Auth`] for an [`Access`] (from a token, or the anonymous one) and then ask the access
//! what it allows.

mod contain;
mod fetch;
mod jwks;
mod keys;
mod keyset;
pub mod limits;
mod perms;
mod remote;
mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use keys::Caller;
pub use limits::{IpSlot, PerIp, TokenBucket};
pub use perms::{Grant, Perms};
pub use remote::fetch_counts as jwks_fetch_counts;
pub use token::MAX_TOKEN_BYTES;

use crate::config::AuthConfig;
use crate::protocol::ErrorCode;
use crate::session::Identity;

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidToken(String),
    #[error("token expired")]
    Expired,
    #[error("missing credentials: send 'Authorization: Bearer <key or token>'")]
    MissingCredentials,
    #[error("{0}")]
    Forbidden(String),
    /// The `[auth]` configuration cannot be used (unreadable key file, bad pattern).
    #[error("{0}")]
    Config(String),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Forbidden(_) => ErrorCode::Forbidden,
            AuthError::Config(_) => ErrorCode::Internal,
            _ => ErrorCode::Unauthorized,
        }
    }
}

/// What one client may do: from its token, or the anonymous permissions.
#[derive(Debug, Clone)]
pub struct Access {
    /// The token's `sub`; `None` for anonymous clients.
    pub user: Option<String>,
    /// The token's `info`, shown in presence.
    pub info: serde_json::Value,
    pub publish: Perms,
    pub subscribe: Perms,
    /// The token's `exp` (Unix seconds).
    pub expires_at: Option<u64>,
    /// The token's `iat` (Unix seconds), if it has one.
    pub issued_at: Option<u64>,
}

impl Access {
    /// Everything allowed (no `[auth]`).
    pub fn open() -> Access {
        Access {
            user: None,
            info: serde_json::Value::Null,
            publish: Perms::All,
            subscribe: Perms::All,
            expires_at: None,
            issued_at: None,
        }
    }

    /// Time left before the token expires (zero if it already has); `None` without expiry.
    pub fn time_left(&self) -> Option<Duration> {
        let exp = self.expires_at?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Some(Duration::from_secs(exp).saturating_sub(now))
    }

    /// The session identity presence shows.
    pub fn identity(&self) -> Identity {
        Identity {
            user: self.user.clone(),
            info: self.info.clone(),
            issued_at: self.issued_at,
        }
    }

    /// Gives `session` this access's identity and delivery filter (every transport does
    /// this when a connection opens or resumes a session, and after a refresh).
    pub fn apply_to(&self, session: &crate::session::Session) {
        session.set_identity(self.identity());
        session.set_filter(if self.subscribe.is_all() {
            None
        } else {
            Some(Arc::new(self.subscribe.clone()))
        });
    }

    /// Whether a client with this access may publish to `topic`. A reply to a request's
    /// `$inbox/…` is always allowed: the inbox name itself is the capability, handed only to
    /// whoever received the request.
    pub fn may_publish(&self, topic: &str) -> bool {
        topic.starts_with(crate::bus::INBOX_PREFIX) || self.publish.allows_topic(topic)
    }
}

/// [`Access::open`], shared by every connection of a server without `[auth]` (one per
/// connection would be an allocation each idle connection keeps).
fn open_access() -> Arc<Access> {
    static OPEN: std::sync::LazyLock<Arc<Access>> =
        std::sync::LazyLock::new(|| Arc::new(Access::open()));
    OPEN.clone()
}

/// The server's authentication settings, compiled from `[auth]`.
pub struct Auth {
    inner: Option<Enabled>,
}

struct Enabled {
    verifier: token::Verifier,
    keys: keys::Keys,
    origins: Option<Vec<String>>,
    anonymous: Arc<Access>,
}

impl Enabled {
    fn verifier_with_keys(&self) -> Result<&token::Verifier, AuthError> {
        if !self.verifier.has_keys() {
            return Err(AuthError::InvalidToken(
                "this server accepts no tokens (no hs256_secret, public key file or jwks_url)"
                    .into(),
            ));
        }
        Ok(&self.verifier)
    }

    fn access(claims: token::Claims) -> Result<Arc<Access>, AuthError> {
        let bad = |which: &str, msg: String| {
            AuthError::InvalidToken(format!("token claim '{which}': {msg}"))
        };
        Ok(Arc::new(Access {
            user: claims.sub,
            info: claims.info,
            publish: Perms::parse(&claims.publish).map_err(|m| bad("publish", m))?,
            subscribe: Perms::parse(&claims.subscribe).map_err(|m| bad("subscribe", m))?,
            expires_at: Some(claims.exp),
            issued_at: claims.iat,
        }))
    }
}

impl Auth {
    /// No `[auth]`: everyone may do everything.
    pub fn disabled() -> Auth {
        Auth { inner: None }
    }

    /// Compiles `[auth]`: reads the public key files, checks the anonymous patterns and, with
    /// a `jwks_url`, starts its refresh task, which fetches at once (tokens with a `kid` wait
    /// for that fetch, bounded). [`Auth::start`] also waits for it.
    pub fn from_config(config: Option<&AuthConfig>) -> Result<Auth, AuthError> {
        Auth::compile(config, None)
    }

    /// [`Auth::from_config`], then the first JWKS fetch awaited: when it fails the server
    /// starts only if another key (`hs256_secret`, a public key file) can verify tokens, the
    /// JWKS being retried in the background; otherwise this is the start-up error.
    pub async fn start(config: Option<&AuthConfig>) -> Result<Auth, AuthError> {
        let auth = Auth::from_config(config)?;
        let Some(e) = &auth.inner else {
            return Ok(auth);
        };
        if let Some(remote) = e.verifier.remote()
            && let Err(why) = remote.first_fetch().await
        {
            if !e.verifier.has_static_keys() {
                return Err(AuthError::Config(format!(
                    "auth.jwks_url: cannot fetch the JWKS from {}: {why}; no other key \
                     (hs256_secret, public_key_file, public_key_files) could verify tokens",
                    remote.url()
                )));
            }
            tracing::warn!(
                url = remote.url(),
                error = %why,
                "JWKS not fetched at start; starting with the other keys, retrying in the background"
            );
        }
        Ok(auth)
    }

    /// Compiles `[auth]` for a reload. The JWKS of `previous` is kept — its fetched set and
    /// its task, with the new `jwks_refresh` — when `jwks_url` is unchanged; a new URL is
    /// fetched in the background at once (tokens with a `kid` wait for it, bounded).
    pub fn reloaded(previous: &Auth, config: Option<&AuthConfig>) -> Result<Auth, AuthError> {
        let remote = previous
            .inner
            .as_ref()
            .and_then(|e| e.verifier.remote().cloned());
        Auth::compile(config, remote)
    }

    fn compile(
        config: Option<&AuthConfig>,
        previous: Option<Arc<remote::Remote>>,
    ) -> Result<Auth, AuthError> {
        let Some(c) = config else {
            return Ok(Auth::disabled());
        };
        let publish = Perms::parse(&c.anonymous.publish)
            .map_err(|e| AuthError::Config(format!("auth.anonymous.publish: {e}")))?;
        let subscribe = Perms::parse(&c.anonymous.subscribe)
            .map_err(|e| AuthError::Config(format!("auth.anonymous.subscribe: {e}")))?;
        // Key files first: a bad one must not start a task for nothing.
        let mut verifier = token::Verifier::new(c)?;
        if let Some(url) = &c.jwks_url {
            let target = fetch::Target::parse(url)
                .map_err(|e| AuthError::Config(format!("auth.jwks_url: {e}")))?;
            let remote = match previous {
                Some(r) if r.url() == target.url() => {
                    r.set_refresh(c.jwks_refresh);
                    r
                }
                _ => Arc::new(remote::Remote::start(target, c.jwks_refresh)),
            };
            verifier = verifier.with_remote(remote);
        }
        Ok(Auth {
            inner: Some(Enabled {
                verifier,
                keys: keys::Keys::new(&c.api_keys, &c.admin_keys),
                origins: c.origins.clone(),
                anonymous: Arc::new(Access {
                    user: None,
                    info: serde_json::Value::Null,
                    publish,
                    subscribe,
                    expires_at: None,
                    issued_at: None,
                }),
            }),
        })
    }

    /// Every problem compiling `[auth]` meets (where [`Auth::from_config`] stops at the
    /// first), with the dotted key it is about: for `herald config check`. The JWKS is not
    /// fetched (a check is offline); its URL's syntax is the config's validation.
    pub fn config_problems(c: &AuthConfig) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (key, path) in token::key_files(c) {
            if let Err(e) = token::read_key_file(&key, path) {
                problems.push((key, e.to_string()));
            }
        }
        for (key, patterns) in [
            ("auth.anonymous.publish", &c.anonymous.publish),
            ("auth.anonymous.subscribe", &c.anonymous.subscribe),
        ] {
            if let Err(e) = Perms::parse(patterns) {
                problems.push((key.to_owned(), format!("{key}: {e}")));
            }
        }
        problems
    }

    /// Whether `[auth]` is configured.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// What a client without a token may do.
    pub fn anonymous(&self) -> Arc<Access> {
        match &self.inner {
            None => open_access(),
            Some(e) => e.anonymous.clone(),
        }
    }

    /// Verifies a token and returns what it allows. Without `[auth]` a token is not
    /// looked at: everything is allowed anyway. Never waits: a token whose `kid` the JWKS
    /// does not know yet is refused (and a refetch asked for); see [`Auth::verify_waiting`].
    pub fn verify(&self, token: &str) -> Result<Arc<Access>, AuthError> {
        let Some(e) = &self.inner else {
            return Ok(open_access());
        };
        Enabled::access(e.verifier_with_keys()?.verify(token)?)
    }

    /// As [`Auth::verify`], but a token with an unknown `kid` waits, bounded and holding no
    /// lock, for the JWKS refetch it asks for (at most one per 10 s), then is checked again.
    pub async fn verify_waiting(&self, token: &str) -> Result<Arc<Access>, AuthError> {
        let Some(e) = &self.inner else {
            return Ok(open_access());
        };
        Enabled::access(e.verifier_with_keys()?.verify_waiting(token).await?)
    }

    /// Whether `origins` lists the browser origins allowed (absent: any may connect).
    pub fn origins_listed(&self) -> bool {
        self.inner.as_ref().is_some_and(|e| e.origins.is_some())
    }

    /// Whether a browser `Origin` may open a WebSocket. Clients that send no `Origin` (not
    /// browsers) are not concerned: the allow-list protects users' browsers from other
    /// sites, it is not an authentication.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(allowed) = self.inner.as_ref().and_then(|e| e.origins.as_ref()) else {
            return true;
        };
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.trim_end_matches('/');
        allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }

    /// Who is calling the HTTP API, from its `Authorization: Bearer` value.
    pub async fn http_caller(&self, bearer: Option<&str>) -> Result<Caller, AuthError> {
        let Some(e) = &self.inner else {
            return Ok(Caller::Open);
        };
        let Some(credential) = bearer else {
            return Err(AuthError::MissingCredentials);
        };
        if let Some(c) = e.keys.find(credential) {
            return Ok(c);
        }
        if credential.matches('.').count() == 2 {
            return self.verify_waiting(credential).await.map(Caller::Token);
        }
        Err(AuthError::InvalidToken(
            "unknown API key (and not a token)".into(),
        ))
    }
}
