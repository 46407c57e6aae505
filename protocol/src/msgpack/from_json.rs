//! JSON text to MessagePack, written while serde_json parses (no tree in between, and the
//! order of an object's keys is kept).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::MsgpackError;
use super::write::{self, patch_header};

/// The MessagePack encoding of `json`, with every `{"$base64": "…"}` object (that one key,
/// valid base64) as `bin`.
pub fn from_json(json: &str) -> Result<Vec<u8>, MsgpackError> {
    let mut out = Vec::with_capacity(json.len());
    from_json_into(json, &mut out)?;
    Ok(out)
}

/// [`from_json`], appending to `out` (on an error, `out` holds a partial value).
pub fn from_json_into(json: &str, out: &mut Vec<u8>) -> Result<(), MsgpackError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let bad = |e: serde_json::Error| MsgpackError::Json(e.to_string());
    de::DeserializeSeed::deserialize(Value(out), &mut de).map_err(bad)?;
    de.end().map_err(bad)
}

/// Writes the next JSON value into the buffer.
struct Value<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Value<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Value<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        write::bool(self.0, b);
        Ok(())
    }
    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        write::int(self.0, n);
        Ok(())
    }
    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        write::uint(self.0, n);
        Ok(())
    }
    fn visit_f64<E>(self, x: f64) -> Result<(), E> {
        write::f64(self.0, x);
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        write::str(self.0, s);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        write::nil(self.0);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.0.len();
        self.0.push(0x90);
        let mut n = 0;
        while seq.next_element_seed(Value(self.0))?.is_some() {
            n += 1;
        }
        patch_header(self.0, at, n, false);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        let at = out.len();
        out.push(0x80);
        let mut n = 0;
        while let Some(is_base64) = map.next_key_seed(Key(out))? {
            if n == 0 && is_base64 {
                // Binary if nothing follows and the value decodes. Rare: buffered as a tree.
                let v: serde_json::Value = map.next_value()?;
                let mut key = Vec::new();
                let more = map.next_key_seed(Key(&mut key))?.is_some();
                if !more && let Some(b) = v.as_str().and_then(|s| STANDARD.decode(s).ok()) {
                    out.truncate(at);
                    write::bin(out, &b);
                    return Ok(());
                }
                tree(out, &v);
                n = 1;
                if more {
                    out.extend_from_slice(&key);
                    map.next_value_seed(Value(out))?;
                    n = 2;
                }
                continue;
            }
            map.next_value_seed(Value(out))?;
            n += 1;
        }
        patch_header(out, at, n, true);
        Ok(())
    }
}

/// Writes a map key; says whether it is `$base64`.
struct Key<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, s: &str) -> Result<bool, E> {
        write::str(self.0, s);
        Ok(s == "$base64")
    }
}

/// Writes a parsed value (the rare path above), with the same `$base64` rule.
fn tree(out: &mut Vec<u8>, v: &serde_json::Value) {
    use serde_json::Value as V;
    match v {
        V::Null => write::nil(out),
        V::Bool(b) => write::bool(out, *b),
        V::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => write::uint(out, u),
            (None, Some(i)) => write::int(out, i),
            _ => write::f64(out, n.as_f64().unwrap_or(0.0)),
        },
        V::String(s) => write::str(out, s),
        V::Array(a) => {
            write::array(out, a.len());
            a.iter().for_each(|v| tree(out, v));
        }
        V::Object(m) => {
            if m.len() == 1
                && let Some(b) = m
                    .get("$base64")
                    .and_then(|s| s.as_str())
                    .and_then(|s| STANDARD.decode(s).ok())
            {
                write::bin(out, &b);
                return;
            }
            write::map(out, m.len());
            for (k, v) in m {
                write::str(out, k);
                tree(out, v);
            }
        }
    }
}
