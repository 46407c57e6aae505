//! The JWKS document (RFC 7517, `{"keys":[…]}`): parsing only, no I/O.
//!
//! A text that is not such a document (not JSON, no `keys` array) or holds no key Herald can
//! use is an error: the caller keeps its last good set rather than trade it for nothing.
//! Inside a good document, a key that cannot be used — an unknown `kty`, a curve other than
//! P-256 or Ed25519, an `alg` other than the key type's own, a `use` other than `sig`, no
//! `kid`, a missing or malformed member, a `kid` seen before — is skipped with its reason,
//! so that one exotic key does not cost the others.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::keyset::{Key, KeySet};

/// Most keys read from one document; the rest are skipped.
pub(crate) const MAX_KEYS: usize = 256;

/// Why a document was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum JwksError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JWKS: no \"keys\" array")]
    NoKeys,
    #[error("no usable key in the JWKS{}", skipped_list(.0))]
    NoUsableKey(Vec<String>),
}

fn skipped_list(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (skipped: {})", skipped.join("; "))
    }
}

/// A document's usable keys, and why each other key was skipped.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub set: KeySet,
    pub skipped: Vec<String>,
}

pub(crate) fn parse(doc: &[u8]) -> Result<Parsed, JwksError> {
    let v: Value = serde_json::from_slice(doc).map_err(|e| JwksError::NotJson(e.to_string()))?;
    let Some(keys) = v.get("keys").and_then(Value::as_array) else {
        return Err(JwksError::NoKeys);
    };
    let mut set = KeySet::default();
    let mut skipped = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        if i == MAX_KEYS {
            skipped.push(format!("keys past the first {MAX_KEYS}"));
            break;
        }
        let Some(jwk) = jwk.as_object() else {
            skipped.push(format!("key {i}: not an object"));
            continue;
        };
        let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("");
        match key(jwk) {
            Err(why) if kid.is_empty() => skipped.push(format!("key {i}: {why}")),
            Err(why) => skipped.push(format!("kid \"{kid}\": {why}")),
            Ok(_) if kid.is_empty() => skipped.push(format!("key {i}: no \"kid\"")),
            Ok(k) => {
                if !set.insert(kid.to_owned(), k) {
                    skipped.push(format!("kid \"{kid}\": appears again (the first is kept)"));
                }
            }
        }
    }
    if set.is_empty() {
        return Err(JwksError::NoUsableKey(skipped));
    }
    Ok(Parsed { set, skipped })
}

/// One JWK as a key, or why not.
fn key(jwk: &Map<String, Value>) -> Result<Key, String> {
    if let Some(u) = jwk.get("use")
        && u.as_str() != Some("sig")
    {
        return Err(format!("\"use\" is {u}, not \"sig\""));
    }
    let kty = text(jwk, "kty")?;
    let (alg, key) = match kty {
        "RSA" => ("RS256", Key::rsa(&bytes(jwk, "n")?, &bytes(jwk, "e")?)),
        "EC" => match text(jwk, "crv")? {
            "P-256" => ("ES256", Key::p256(&bytes(jwk, "x")?, &bytes(jwk, "y")?)),
            other => return Err(format!("unsupported EC curve \"{other}\" (only P-256)")),
        },
        "OKP" => match text(jwk, "crv")? {
            "Ed25519" => ("EdDSA", Key::ed25519(&bytes(jwk, "x")?)),
            other => return Err(format!("unsupported OKP curve \"{other}\" (only Ed25519)")),
        },
        other => return Err(format!("unsupported kty \"{other}\" (RSA, EC or OKP)")),
    };
    if let Some(a) = jwk.get("alg")
        && a.as_str() != Some(alg)
    {
        return Err(format!("\"alg\" is {a}; a {kty} key verifies {alg} only"));
    }
    key
}

fn text<'a>(jwk: &'a Map<String, Value>, member: &str) -> Result<&'a str, String> {
    match jwk.get(member) {
        None => Err(format!("no \"{member}\"")),
        Some(v) => v
            .as_str()
            .ok_or_else(|| format!("\"{member}\" is not a string")),
    }
}

fn bytes(jwk: &Map<String, Value>, member: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(text(jwk, member)?)
        .map_err(|e| format!("\"{member}\" is not base64url: {e}"))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    use super::*;

    fn jwk(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/keys/{name}.jwk.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn doc(keys: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    }

    fn with(mut key: Value, member: &str, value: Value) -> Value {
        key[member] = value;
        key
    }

    fn without(mut key: Value, member: &str) -> Value {
        key.as_object_mut().unwrap().remove(member);
        key
    }

    #[test]
    fn each_key_type_is_read_with_its_algorithm() {
        let p = parse(&doc(vec![jwk("rsa-a"), jwk("ec-a"), jwk("ed-a")])).unwrap();
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        assert_eq!(p.set.kids(), vec!["ec-a", "ed-a", "rsa-a"]);
        assert_eq!(p.set.get("rsa-a").unwrap().alg(), Algorithm::RS256);
        assert_eq!(p.set.get("ec-a").unwrap().alg(), Algorithm::ES256);
        assert_eq!(p.set.get("ed-a").unwrap().alg(), Algorithm::EdDSA);
        // `alg` and `use` are optional.
        let bare = without(without(jwk("ed-a"), "alg"), "use");
        assert_eq!(parse(&doc(vec![bare])).unwrap().set.len(), 1);
    }

    #[test]
    fn documents_that_are_not_a_jwks_are_errors() {
        for text in [&b""[..], b"{", b"<html>", b"\xff\xfe"] {
            assert!(
                matches!(parse(text), Err(JwksError::NotJson(_))),
                "{text:?}"
            );
        }
        for text in [
            &b"null"[..],
            br#"{}"#,
            br#"[]"#,
            br#"{"keys":{}}"#,
            br#"{"keys":"x"}"#,
        ] {
            assert_eq!(parse(text).unwrap_err(), JwksError::NoKeys, "{text:?}");
        }
        assert_eq!(
            parse(br#"{"keys":[]}"#).unwrap_err(),
            JwksError::NoUsableKey(vec![])
        );
        let e = parse(br#"{"keys":[1, {"kty":"oct","kid":"h","k":"AAAA"}]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no usable key in the JWKS (skipped: key 0: not an object; kid \"h\": unsupported kty \"oct\" (RSA, EC or OKP))"
        );
    }

    #[test]
    fn unusable_keys_are_skipped_with_a_reason_and_the_others_kept() {
        let cases = [
            (
                with(jwk("rsa-a"), "kty", json!("RSA2")),
                "unsupported kty \"RSA2\"",
            ),
            (
                with(jwk("rsa-a"), "kty", json!(7)),
                "\"kty\" is not a string",
            ),
            (without(jwk("rsa-a"), "kty"), "no \"kty\""),
            (without(jwk("rsa-a"), "n"), "no \"n\""),
            (without(jwk("rsa-a"), "e"), "no \"e\""),
            (
                with(jwk("rsa-a"), "n", json!("!!")),
                "\"n\" is not base64url",
            ),
            (
                with(jwk("rsa-a"), "alg", json!("RS512")),
                "verifies RS256 only",
            ),
            (
                with(jwk("rsa-a"), "alg", json!("HS256")),
                "verifies RS256 only",
            ),
            (
                with(jwk("rsa-a"), "alg", json!("none")),
                "verifies RS256 only",
            ),
            (with(jwk("rsa-a"), "use", json!("enc")), "not \"sig\""),
            (
                with(jwk("rsa-a"), "n", json!("AQAB")),
                "RSA modulus of 17 bits",
            ),
            (without(jwk("ec-a"), "y"), "no \"y\""),
            (without(jwk("ec-a"), "crv"), "no \"crv\""),
            (
                with(jwk("ec-a"), "crv", json!("P-384")),
                "unsupported EC curve",
            ),
            (with(jwk("ec-a"), "x", json!("AAAA")), "32 bytes"),
            (with(jwk("ed-a"), "x", json!("AAAA")), "32 bytes"),
            (
                with(jwk("ed-a"), "crv", json!("Ed448")),
                "unsupported OKP curve",
            ),
            (
                with(jwk("ec-a"), "alg", json!("EdDSA")),
                "verifies ES256 only",
            ),
        ];
        for (bad, why) in cases {
            let p = parse(&doc(vec![bad.clone(), jwk("ed-a")])).unwrap();
            assert_eq!(p.set.kids(), vec!["ed-a"], "{bad}");
            assert_eq!(p.skipped.len(), 1, "{bad}");
            assert!(
                p.skipped[0].contains(why),
                "{:?} should say {why:?}",
                p.skipped[0]
            );
        }
    }

    #[test]
    fn a_key_needs_a_kid_and_the_first_of_a_kid_wins() {
        let p = parse(&doc(vec![
            without(jwk("rsa-a"), "kid"),
            with(jwk("rsa-a"), "kid", json!("")),
            jwk("ec-a"),
            with(jwk("ed-a"), "kid", json!("ec-a")),
        ]))
        .unwrap();
        assert_eq!(p.set.kids(), vec!["ec-a"]);
        assert_eq!(p.set.get("ec-a").unwrap().alg(), Algorithm::ES256);
        assert_eq!(p.skipped.len(), 3, "{:?}", p.skipped);
        assert!(p.skipped[0].contains("no \"kid\""), "{:?}", p.skipped);
        assert!(p.skipped[2].contains("appears again"), "{:?}", p.skipped);
    }

    #[test]
    fn huge_documents_stop_at_max_keys() {
        let keys = (0..MAX_KEYS + 5)
            .map(|i| with(jwk("ed-a"), "kid", json!(format!("k{i}"))))
            .collect();
        let p = parse(&doc(keys)).unwrap();
        assert_eq!(p.set.len(), MAX_KEYS);
        assert_eq!(p.skipped.len(), 1);
    }
}
