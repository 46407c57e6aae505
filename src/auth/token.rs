//! JWT verification (PROTOCOL.md §7) with the jsonwebtoken crate.
//!
//! Which key checks a token is decided by the *server's* configuration, never by the token
//! alone: HS256 tokens are checked with `hs256_secret` only, RS256/ES256 tokens with the
//! public key only (so a token "signed" with the public key as an HMAC secret is refused),
//! and every other `alg` — `none` included — is refused before any signature work.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::AuthError;

/// Longest token accepted; longer ones are refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The keys a server verifies tokens with.
pub(crate) struct Verifier {
    hs256: Option<DecodingKey>,
    public: Option<(DecodingKey, Algorithm)>,
}

/// The claims Herald reads. Unknown claims are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct Claims {
    #[serde(default)]
    pub sub: Option<String>,
    pub exp: u64,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
    #[serde(default)]
    pub info: serde_json::Value,
}

impl Verifier {
    pub(crate) fn new(
        hs256_secret: Option<&str>,
        public_key_file: Option<&Path>,
    ) -> Result<Verifier, AuthError> {
        let hs256 = hs256_secret.map(|s| DecodingKey::from_secret(s.as_bytes()));
        let public = match public_key_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    AuthError::Config(format!(
                        "cannot read auth.public_key_file {}: {e}",
                        path.display()
                    ))
                })?;
                Some(public_key(&pem).ok_or_else(|| {
                    AuthError::Config(format!(
                        "auth.public_key_file {} is not an RSA or EC (P-256) public key in PEM",
                        path.display()
                    ))
                })?)
            }
        };
        Ok(Verifier { hs256, public })
    }

    /// Whether any key is configured (otherwise every token is refused).
    pub(crate) fn has_keys(&self) -> bool {
        self.hs256.is_some() || self.public.is_some()
    }

    pub(crate) fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken(format!(
                "token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = decode_header(token)
            .map_err(|e| AuthError::InvalidToken(format!("malformed token: {e}")))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            alg => self
                .public
                .as_ref()
                .filter(|(_, a)| *a == alg)
                .map(|(k, _)| k),
        };
        let Some(key) = key else {
            return Err(AuthError::InvalidToken(format!(
                "tokens signed with {:?} are not accepted by this server",
                header.alg
            )));
        };
        let mut v = Validation::new(header.alg);
        v.leeway = 0;
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp"]);
        match decode::<Claims>(token, key, &v) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::InvalidToken(format!("token refused: {e}")),
            }),
        }
    }
}

/// An RSA key means RS256, an EC key ES256.
fn public_key(pem: &[u8]) -> Option<(DecodingKey, Algorithm)> {
    let text = std::str::from_utf8(pem).ok()?;
    if text.contains("BEGIN RSA PUBLIC KEY") {
        return Some((DecodingKey::from_rsa_pem(pem).ok()?, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Some((k, Algorithm::ES256));
    }
    DecodingKey::from_rsa_pem(pem)
        .ok()
        .map(|k| (k, Algorithm::RS256))
}
