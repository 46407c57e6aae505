//! The client's `Sec-WebSocket-Extensions` offers (RFC 6455 §9.1) and the choice among them
//! (RFC 7692 §5 and §7.1).
//!
//! ```text
//! extension-list = 1#extension
//! extension      = extension-token *( ";" extension-param )
//! extension-param = token [ "=" (token | quoted-string) ]
//! ```
//!
//! Several header fields are one list (joined with commas). The first `permessage-deflate`
//! offer whose parameters the server can honour is accepted; an offer with an unknown
//! parameter, a parameter twice, a value out of range, or a `server_max_window_bits` under 15
//! is declined, and the next one is tried. Any other extension is ignored.

/// The name of the extension.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// What the server agreed to on a connection: its response and what binds the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The client offered `client_no_context_takeover` and the server confirmed it: each of
    /// the client's messages is compressed on its own, so the inflater is freed after each.
    pub client_no_context_takeover: bool,
    /// The client offered `server_max_window_bits=15`: the response must carry it
    /// (RFC 7692 §7.1.2.1; the server's compressor uses that window anyway).
    server_max_window_bits: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the response. Always
    /// `server_no_context_takeover` (RFC 7692 §7.1.1.1 lets the server say it unasked): every
    /// message is compressed on its own, once for all its recipients.
    ///
    /// `client_no_context_takeover` only when the client offered it: the RFC (§7.1.1.2)
    /// would let the server impose it on any client, but PROTOCOL.md §2 leaves context
    /// takeover to the client; confirming the client's own offer costs it nothing and lets
    /// the server drop its inflater between messages.
    pub fn response(self) -> &'static str {
        match (self.client_no_context_takeover, self.server_max_window_bits) {
            (false, false) => "permessage-deflate; server_no_context_takeover",
            (true, false) => {
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            }
            (false, true) => {
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=15"
            }
            (true, true) => {
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=15"
            }
        }
    }
}

/// The first acceptable `permessage-deflate` offer among the header values, in order.
pub fn choose<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Agreed> {
    values
        .into_iter()
        .flat_map(|v| split_outside_quotes(v, ','))
        .find_map(|offer| {
            let mut parts = split_outside_quotes(offer, ';').map(str::trim);
            let name = parts.next()?;
            if !name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
                return None;
            }
            accept(parts)
        })
}

/// The agreement for one `permessage-deflate` offer's parameters, or `None`: declined.
fn accept<'a>(params: impl Iterator<Item = &'a str>) -> Option<Agreed> {
    #[derive(Default)]
    struct Seen {
        server_no_context_takeover: bool,
        client_no_context_takeover: bool,
        server_max_window_bits: bool,
        client_max_window_bits: bool,
    }
    let mut seen = Seen::default();
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let flag = match name.to_ascii_lowercase().as_str() {
            // No value allowed (§7.1.1).
            "server_no_context_takeover" if value.is_none() => &mut seen.server_no_context_takeover,
            "client_no_context_takeover" if value.is_none() => &mut seen.client_no_context_takeover,
            // A value 8..=15 required; the server compresses with a 15-bit window (what zlib
            // and the compressor here use), so any smaller limit is declined (§7.1.2.1).
            "server_max_window_bits" => match value.as_deref().and_then(window_bits) {
                Some(15) => &mut seen.server_max_window_bits,
                _ => return None,
            },
            // Optional value 8..=15: the client can limit its window. The server inflates
            // with a 15-bit window, which reads any smaller one, so it asks for no limit and
            // leaves the parameter out of its response (§7.1.2.2).
            "client_max_window_bits" => {
                if value.as_deref().is_some_and(|v| window_bits(v).is_none()) {
                    return None;
                }
                &mut seen.client_max_window_bits
            }
            _ => return None,
        };
        if std::mem::replace(flag, true) {
            return None; // a parameter twice (§5)
        }
    }
    Some(Agreed {
        client_no_context_takeover: seen.client_no_context_takeover,
        server_max_window_bits: seen.server_max_window_bits,
    })
}

/// A window-bits value: 8 to 15, decimal, no leading zero (§7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// A token, or a quoted-string without its quotes and escapes; `None` if malformed.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return (!v.is_empty() && !v.contains(['"', '\\'])).then(|| v.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// `s` split at each `sep` that is not inside a quoted-string.
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                c if c == sep && !quoted => {
                    rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(values: &[&str]) -> Option<&'static str> {
        choose(values.iter().copied()).map(Agreed::response)
    }

    const PLAIN: &str = "permessage-deflate; server_no_context_takeover";

    #[test]
    fn what_browsers_and_node_offer_is_accepted() {
        // Chromium and Firefox, and Node's `ws` by default.
        assert_eq!(
            pick(&["permessage-deflate; client_max_window_bits"]),
            Some(PLAIN)
        );
        assert_eq!(pick(&["permessage-deflate"]), Some(PLAIN));
        assert_eq!(
            pick(&["PerMessage-Deflate ;Client_Max_Window_Bits=15"]),
            Some(PLAIN)
        );
        assert_eq!(
            pick(&["permessage-deflate; client_max_window_bits=\"10\""]),
            Some(PLAIN)
        );
        assert_eq!(
            pick(&["permessage-deflate; server_no_context_takeover; client_no_context_takeover"]),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        let agreed = choose(["permessage-deflate;client_no_context_takeover"]).unwrap();
        assert!(agreed.client_no_context_takeover);
        assert_eq!(
            pick(&["permessage-deflate; server_max_window_bits=15"]),
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=15")
        );
    }

    #[test]
    fn offers_the_server_cannot_honour_are_declined_for_the_next() {
        for bad in [
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=015",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; x-unknown",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
        ] {
            assert_eq!(pick(&[bad]), None, "{bad}");
            // The next offer, in the same field or another one, is tried.
            assert_eq!(
                pick(&[&format!("{bad}, permessage-deflate")]),
                Some(PLAIN),
                "{bad}"
            );
            assert_eq!(pick(&[bad, "permessage-deflate"]), Some(PLAIN), "{bad}");
        }
        // What comes first wins when it can be honoured.
        assert_eq!(
            pick(&["permessage-deflate; client_no_context_takeover, permessage-deflate"]),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
    }

    #[test]
    fn other_extensions_and_odd_syntax() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[""]), None);
        assert_eq!(pick(&["x-webkit-deflate-frame"]), None);
        assert_eq!(
            pick(&["x-webkit-deflate-frame, permessage-deflate"]),
            Some(PLAIN)
        );
        assert_eq!(pick(&[" , ,permessage-deflate ,"]), Some(PLAIN));
        // A comma or semicolon inside a quoted value does not split.
        assert_eq!(pick(&["foo; a=\"x, permessage-deflate\""]), None);
        assert_eq!(
            pick(&["foo; a=\"x;, y\", permessage-deflate; client_max_window_bits"]),
            Some(PLAIN)
        );
        assert_eq!(pick(&["permessage-deflate;"]), None, "an empty parameter");
        // An unterminated quote takes the rest of the field with it.
        let open = "permessage-deflate; client_max_window_bits=\"1\\, permessage-deflate";
        assert_eq!(pick(&[open]), None);
        assert_eq!(pick(&[open, "permessage-deflate"]), Some(PLAIN));
        assert_eq!(unquote("\"a\\\"b\"").as_deref(), Some("a\"b"));
        assert_eq!(unquote("\"ab"), None);
        assert_eq!(unquote(""), None);
    }
}
