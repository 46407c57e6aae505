//! Verification keys, each bound to the one algorithm its type allows, and the set of them
//! chosen by `kid`.
//!
//! Invariant: a key verifies only tokens whose `alg` is its own — an RSA key RS256, a P-256
//! key ES256, an Ed25519 key EdDSA, the shared secret HS256. The token's header only *asks*;
//! the key decides. So an HMAC "signed" with a public key's bytes, a token claiming `none`,
//! or an RS256 token presented against an EC key never reaches signature work.
//!
//! Keys are checked when they are loaded (lengths, and a probe through jsonwebtoken's crypto
//! provider), never first at verification: jsonwebtoken slices an Ed25519 key to 32 bytes
//! and would panic on a shorter one.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};

/// Smallest RSA modulus accepted from a JWKS, in bits (weaker keys are skipped).
pub(crate) const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus the RSA backend verifies with, in bits.
pub(crate) const MAX_RSA_BITS: usize = 4096;

/// One key and the algorithm it verifies.
pub(crate) struct Key {
    alg: Algorithm,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?})", self.alg)
    }
}

impl Key {
    /// The shared secret of HS256 tokens.
    pub(crate) fn hs256(secret: &[u8]) -> Key {
        Key {
            alg: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// An RSA public key from its big-endian modulus and exponent (a JWK's `n` and `e`).
    pub(crate) fn rsa(n: &[u8], e: &[u8]) -> Result<Key, String> {
        let n = strip_zeros(n);
        let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(format!(
                "RSA modulus of {bits} bits (accepted: {MIN_RSA_BITS} to {MAX_RSA_BITS})"
            ));
        }
        let e = strip_zeros(e);
        if e.is_empty() || e.len() > 8 || e.last().is_some_and(|b| b & 1 == 0) {
            return Err("RSA exponent is not a small odd number".into());
        }
        Key::checked(Algorithm::RS256, DecodingKey::from_rsa_raw_components(n, e))
    }

    /// A P-256 public key from its coordinates (a JWK's `x` and `y`, 32 bytes each).
    pub(crate) fn p256(x: &[u8], y: &[u8]) -> Result<Key, String> {
        if x.len() != 32 || y.len() != 32 {
            return Err("P-256 coordinates must be 32 bytes each".into());
        }
        let point = [&[0x04][..], x, y].concat();
        Key::checked(Algorithm::ES256, DecodingKey::from_ec_der(&point))
    }

    /// An Ed25519 public key (a JWK's `x`, 32 bytes).
    pub(crate) fn ed25519(x: &[u8]) -> Result<Key, String> {
        if x.len() != 32 {
            return Err("an Ed25519 public key must be 32 bytes".into());
        }
        Key::checked(Algorithm::EdDSA, DecodingKey::from_ed_der(x))
    }

    /// A PEM public key: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA). `None` when the
    /// text is none of these.
    pub(crate) fn from_pem(pem: &[u8]) -> Option<Key> {
        let text = std::str::from_utf8(pem).ok()?;
        if text.contains("BEGIN RSA PUBLIC KEY") {
            let k = DecodingKey::from_rsa_pem(pem).ok()?;
            return Key::checked(Algorithm::RS256, k).ok();
        }
        if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            return Key::checked(Algorithm::ES256, k).ok();
        }
        if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            // Checked here: the backend slices the key to 32 bytes.
            if k.try_get_as_bytes().map(<[u8]>::len).ok() != Some(32) {
                return None;
            }
            return Key::checked(Algorithm::EdDSA, k).ok();
        }
        let k = DecodingKey::from_rsa_pem(pem).ok()?;
        Key::checked(Algorithm::RS256, k).ok()
    }

    /// A key whose verifier the crypto provider can build (an EC point on the curve, an
    /// Ed25519 point that decompresses). The probe's empty signature never verifies; only
    /// an error building the verifier refuses the key.
    fn checked(alg: Algorithm, decoding: DecodingKey) -> Result<Key, String> {
        match jsonwebtoken::crypto::verify("", b"", &decoding, alg) {
            Ok(_) => Ok(Key { alg, decoding }),
            Err(e) => Err(format!("unusable {alg:?} key: {e}")),
        }
    }

    /// The only algorithm this key verifies.
    pub(crate) fn alg(&self) -> Algorithm {
        self.alg
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

/// Keys by `kid`: one fetched JWKS.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
}

impl KeySet {
    /// Adds a key; `false` (and the set unchanged) when `kid` is already there.
    pub(crate) fn insert(&mut self, kid: String, key: Key) -> bool {
        match self.by_kid.entry(kid) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Arc::new(key));
                true
            }
        }
    }

    pub(crate) fn get(&self, kid: &str) -> Option<Arc<Key>> {
        self.by_kid.get(kid).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }

    /// The kids, sorted: for logs.
    pub(crate) fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys/");
        std::fs::read(format!("{dir}{name}")).unwrap()
    }

    #[test]
    fn pem_keys_get_their_type_s_algorithm() {
        for (file, alg) in [
            ("rsa-a.pub.pem", Algorithm::RS256),
            ("ec-a.pub.pem", Algorithm::ES256),
            ("ed-a.pub.pem", Algorithm::EdDSA),
        ] {
            assert_eq!(Key::from_pem(&fixture(file)).unwrap().alg(), alg, "{file}");
        }
        assert!(Key::from_pem(b"not a key").is_none());
        assert!(Key::from_pem(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn bad_components_are_refused_not_panicked_on() {
        assert!(Key::ed25519(&[1; 31]).is_err());
        assert!(Key::ed25519(&[]).is_err());
        assert!(Key::p256(&[1; 32], &[2; 31]).is_err());
        // 32-byte coordinates that are not a point of the curve.
        assert!(Key::p256(&[0; 32], &[0; 32]).is_err());
        assert!(Key::rsa(&[0xff; 128], &[1, 0, 1]).is_err(), "1024 bits");
        assert!(Key::rsa(&[0xff; 256], &[]).is_err(), "no exponent");
        assert!(Key::rsa(&[0xff; 256], &[1, 0, 0]).is_err(), "even exponent");
        let mut n = vec![0u8; 3];
        n.extend([0xff; 256]);
        assert_eq!(
            Key::rsa(&n, &[1, 0, 1]).unwrap().alg(),
            Algorithm::RS256,
            "leading zeros do not count"
        );
    }

    #[test]
    fn a_kid_is_kept_once() {
        let mut set = KeySet::default();
        assert!(set.insert("a".into(), Key::hs256(b"1")));
        assert!(!set.insert("a".into(), Key::hs256(b"2")));
        assert_eq!((set.len(), set.kids()), (1, vec!["a"]));
        assert!(set.get("b").is_none());
    }
}
