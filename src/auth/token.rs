//! JWT verification (PROTOCOL.md §7) with the jsonwebtoken crate.
//!
//! Which key checks a token is decided by the *server's* configuration, never by the token
//! alone (see `keyset`: each key verifies its own algorithm only):
//! - HS256 tokens: `hs256_secret` only, whatever their `kid`.
//! - A `kid` found in the JWKS: that key only.
//! - Otherwise the static PEM keys (`public_key_file`, `public_key_files`) of the token's
//!   algorithm, in turn; a `kid` the JWKS does not know may still be one of them (tokens
//!   carried a `kid` before Herald read JWKS). When none verifies and a JWKS is configured,
//!   the kid is *unknown*: the JWKS is asked to refetch (rate-limited in `remote`).
//! - `none` and every other `alg` are refused before any signature work.
//!
//! `issuer` and `audience`, when set, are required claims checked after the signature.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use serde::Deserialize;

use super::AuthError;
use super::keyset::Key;
use super::remote::{Remote, Ticket};
use crate::config::AuthConfig;

/// Longest token accepted; longer ones are refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest a token with an unknown `kid` waits for the refetch it asked for.
pub(crate) const UNKNOWN_KID_WAIT: Duration = super::fetch::FETCH_TIMEOUT;

/// The keys a server verifies tokens with.
pub(crate) struct Verifier {
    hs256: Option<Key>,
    static_keys: Vec<Key>,
    remote: Option<Arc<Remote>>,
    issuer: Option<String>,
    audience: Option<Vec<String>>,
}

/// The claims Herald reads. Unknown claims are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct Claims {
    #[serde(default)]
    pub sub: Option<String>,
    pub exp: u64,
    /// When the token was issued (what `POST /v1/revoke` compares with).
    #[serde(default)]
    pub iat: Option<u64>,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
    #[serde(default)]
    pub info: serde_json::Value,
}

/// Why a token was not accepted (yet).
enum Refused {
    Final(AuthError),
    /// Its `kid` is in no key set; a ticket when a refetch is on its way.
    UnknownKid(AuthError, Option<Ticket>),
}

impl From<AuthError> for Refused {
    fn from(e: AuthError) -> Refused {
        Refused::Final(e)
    }
}

/// Every static key file of `[auth]`, with the dotted key naming it.
pub(crate) fn key_files(c: &AuthConfig) -> impl Iterator<Item = (String, &Path)> {
    let single = c
        .public_key_file
        .as_deref()
        .map(|p| ("auth.public_key_file".to_owned(), p));
    let many = c
        .public_key_files
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("auth.public_key_files[{i}]"), p.as_path()));
    single.into_iter().chain(many)
}

/// Reads one PEM public key file.
pub(crate) fn read_key_file(key: &str, path: &Path) -> Result<Key, AuthError> {
    let setting = key.split('[').next().unwrap_or(key);
    let pem = std::fs::read(path)
        .map_err(|e| AuthError::Config(format!("cannot read {setting} {}: {e}", path.display())))?;
    Key::from_pem(&pem).ok_or_else(|| {
        AuthError::Config(format!(
            "{setting} {} is not an RSA, EC (P-256) or Ed25519 public key in PEM",
            path.display()
        ))
    })
}

impl Verifier {
    /// Reads the static keys (the first bad file fails); no JWKS yet.
    pub(crate) fn new(c: &AuthConfig) -> Result<Verifier, AuthError> {
        let static_keys = key_files(c)
            .map(|(key, path)| read_key_file(&key, path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Verifier {
            hs256: c.hs256_secret.as_deref().map(|s| Key::hs256(s.as_bytes())),
            static_keys,
            remote: None,
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
        })
    }

    /// Adds the JWKS, for tokens whose `kid` it knows.
    pub(crate) fn with_remote(self, remote: Arc<Remote>) -> Verifier {
        Verifier {
            remote: Some(remote),
            ..self
        }
    }

    /// Whether any key is configured (otherwise every token is refused).
    pub(crate) fn has_keys(&self) -> bool {
        self.has_static_keys() || self.remote.is_some()
    }

    /// Whether a key other than the JWKS's is configured.
    pub(crate) fn has_static_keys(&self) -> bool {
        self.hs256.is_some() || !self.static_keys.is_empty()
    }

    pub(crate) fn remote(&self) -> Option<&Arc<Remote>> {
        self.remote.as_ref()
    }

    /// Never waits: a token with an unknown `kid` is refused at once (the refetch it asks
    /// for helps the next one).
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        match self.attempt(token, true) {
            Ok(c) => Ok(c),
            Err(Refused::Final(e) | Refused::UnknownKid(e, _)) => Err(e),
        }
    }

    /// As [`Verifier::verify`], but a token with an unknown `kid` waits (at most
    /// [`UNKNOWN_KID_WAIT`], holding nothing) for the refetch it asked for, then is checked
    /// again: a key rotated in at the IdP is accepted on first sight.
    pub(crate) async fn verify_waiting(&self, token: &str) -> Result<Claims, AuthError> {
        match self.attempt(token, true) {
            Ok(c) => Ok(c),
            Err(Refused::Final(e) | Refused::UnknownKid(e, None)) => Err(e),
            Err(Refused::UnknownKid(_, Some(ticket))) => {
                ticket.wait(UNKNOWN_KID_WAIT).await;
                match self.attempt(token, false) {
                    Ok(c) => Ok(c),
                    Err(Refused::Final(e) | Refused::UnknownKid(e, _)) => Err(e),
                }
            }
        }
    }

    fn attempt(&self, token: &str, ask: bool) -> Result<Claims, Refused> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken(format!(
                "token is longer than {MAX_TOKEN_BYTES} bytes"
            ))
            .into());
        }
        let header = decode_header(token)
            .map_err(|e| AuthError::InvalidToken(format!("malformed token: {e}")))?;
        if header.alg == Algorithm::HS256 {
            let Some(key) = &self.hs256 else {
                return Err(not_accepted(header.alg).into());
            };
            return Ok(self.decode(token, key)?);
        }
        let kid = header.kid.as_deref();
        if let (Some(kid), Some(remote)) = (kid, &self.remote) {
            if let Some(key) = remote.key(kid) {
                if key.alg() != header.alg {
                    return Err(AuthError::InvalidToken(format!(
                        "token signed with {:?}, but key '{kid}' verifies {:?} only",
                        header.alg,
                        key.alg()
                    ))
                    .into());
                }
                return Ok(self.decode(token, &key)?);
            }
            return match self.try_static(token, header.alg) {
                Ok(claims) => Ok(claims),
                Err(Some(e)) => Err(Refused::Final(e)),
                Err(None) => Err(Refused::UnknownKid(
                    AuthError::InvalidToken(format!("token refused: unknown key id '{kid}'")),
                    if ask { remote.ask() } else { None },
                )),
            };
        }
        match self.try_static(token, header.alg) {
            Ok(claims) => Ok(claims),
            Err(Some(e)) => Err(e.into()),
            Err(None) if self.static_keys.iter().any(|k| k.alg() == header.alg) => {
                Err(AuthError::InvalidToken("token refused: InvalidSignature".into()).into())
            }
            Err(None) => Err(not_accepted(header.alg).into()),
        }
    }

    /// The static keys of `alg`, in turn. `Err(None)`: no key of `alg` verified the
    /// signature; `Err(Some)`: one did, and the claims are refused.
    fn try_static(&self, token: &str, alg: Algorithm) -> Result<Claims, Option<AuthError>> {
        for key in self.static_keys.iter().filter(|k| k.alg() == alg) {
            match self.decode_raw(token, key) {
                Ok(claims) => return Ok(claims),
                Err(e) if wrong_key(e.kind()) => continue,
                Err(e) => return Err(Some(refusal(e))),
            }
        }
        Err(None)
    }

    fn decode(&self, token: &str, key: &Key) -> Result<Claims, AuthError> {
        self.decode_raw(token, key).map_err(refusal)
    }

    fn decode_raw(&self, token: &str, key: &Key) -> jsonwebtoken::errors::Result<Claims> {
        let mut v = Validation::new(key.alg());
        v.leeway = 0;
        let mut required = vec!["exp"];
        match &self.audience {
            Some(aud) => {
                v.set_audience(aud);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        decode::<Claims>(token, key.decoding(), &v).map(|data| data.claims)
    }
}

fn not_accepted(alg: Algorithm) -> AuthError {
    AuthError::InvalidToken(format!(
        "tokens signed with {alg:?} are not accepted by this server"
    ))
}

/// Errors that mean "not this key" (another key may verify), as opposed to "this key
/// verified the signature and the claims are refused".
fn wrong_key(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
    )
}

fn refusal(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidIssuer => {
            AuthError::InvalidToken("token refused: wrong issuer ('iss')".into())
        }
        ErrorKind::InvalidAudience => {
            AuthError::InvalidToken("token refused: wrong audience ('aud')".into())
        }
        ErrorKind::MissingRequiredClaim(c) => {
            AuthError::InvalidToken(format!("token refused: no '{c}' claim"))
        }
        _ => AuthError::InvalidToken(format!("token refused: {e}")),
    }
}
