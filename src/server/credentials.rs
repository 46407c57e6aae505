//! Where a request carries its credential: `Authorization: Bearer …` (an API key, an admin
//! key or a token, for the HTTP API and the WebSocket upgrade alike), or `?token=…` on a
//! WebSocket upgrade.

use axum::body::Body;
use axum::http::{HeaderMap, Request, header};

/// The credential of an upgrade request: `?token=…` or `Authorization: Bearer …` (browsers
/// cannot set headers on a WebSocket, hence the query).
pub(crate) fn upgrade_token(req: &Request<Body>) -> Option<String> {
    let from_query = req.uri().query().and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "token" && !v.is_empty()).then(|| percent_decode(v))
        })
    });
    from_query.or_else(|| bearer(req.headers()).map(str::to_owned))
}

/// The value of an `Authorization: Bearer …` header.
pub(crate) fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Decodes `%XX` escapes (tokens are URL-safe already; this only undoes over-eager
/// encoding). Invalid escapes are kept as they are.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
