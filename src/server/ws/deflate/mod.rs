//! permessage-deflate (RFC 7692) on a WebSocket connection: PROTOCOL.md §2, "Compression".
//!
//! - Negotiation ([`negotiate`], `offer.rs`): at the upgrade, the first offer the server can
//!   honour is accepted, and answered with `server_no_context_takeover`.
//! - Sending ([`write_msg`], [`frame`]): the writer asks here for each frame it encodes. A
//!   `msg` is compressed once per event, for every recipient (`crate::event::deflate`); an
//!   answer of the connection's own (`ok`, `error`, `welcome`, history, …) of at least
//!   [`MIN_DEFLATE`] bytes is compressed on its own, with the same thread-local compressor
//!   reset first (no context takeover: RFC 7692 lets each message be compressed alone, and
//!   a compressor kept per connection would cost ~370 KiB each). Frames under
//!   [`MIN_DEFLATE`] bytes, and those deflate does not shrink, go uncompressed (RSV1 clear).
//! - Receiving (`inflate.rs`): the client's compressed messages are inflated before
//!   tungstenite reads them; a failure reaches the reader as an `io::Error`, which
//!   [`close_for`] turns into a close code.

mod inflate;
mod offer;

use std::io;

use axum::http::{HeaderMap, HeaderValue, header};

pub(crate) use inflate::{Inflate, InflateError};
pub(crate) use offer::Agreed;

use crate::config::Compression;
use crate::event::deflate::{MIN_DEFLATE, compress_into};
use crate::event::{Delivery, Encoding, Event};
use crate::protocol::close;

#[cfg(test)]
use super::frame::RSV1;
use super::frame::{OP_BINARY, OP_TEXT, compressed_header};

/// The agreement for an upgrade request, if deflate is on and the client offered it in a
/// form the server can honour.
pub(crate) fn negotiate(headers: &HeaderMap, mode: Compression) -> Option<Agreed> {
    if mode == Compression::Off {
        return None;
    }
    offer::choose(
        headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// The `Sec-WebSocket-Extensions` header of the response.
pub(crate) fn response_header(agreed: Agreed) -> HeaderValue {
    HeaderValue::from_static(agreed.response())
}

/// The close code and reason for a socket error that a compressed message caused.
pub(crate) fn close_for(e: &io::Error) -> Option<(u16, String)> {
    let e = e.get_ref()?.downcast_ref::<InflateError>()?;
    Some(match e {
        InflateError::Invalid => (close::INVALID_PAYLOAD, e.to_string()),
        InflateError::TooLarge(_) => (close::TOO_LARGE, e.to_string()),
        InflateError::Protocol(_) => (close::PROTOCOL_ERROR, e.to_string()),
    })
}

/// Appends a `msg` frame for one recipient, compressed: its payload length, or `None` (and
/// nothing appended) when it goes uncompressed.
pub(crate) fn write_msg(
    out: &mut Vec<u8>,
    event: &Event,
    enc: Encoding,
    seq: u64,
    how: Delivery,
) -> Option<usize> {
    let len = event.deflated_len(enc, seq, how)?;
    out.reserve(len + 10);
    let opcode = match enc {
        Encoding::Json => OP_TEXT,
        Encoding::Msgpack => OP_BINARY,
    };
    compressed_header(out, opcode, len);
    let before = out.len();
    event.write_deflated(enc, seq, how, out);
    debug_assert_eq!(out.len() - before, len);
    Some(len)
}

/// Appends a data frame (`opcode`: text or binary) of the connection's own, compressed: its
/// payload length, or `None` (and nothing appended) when it goes uncompressed (see the module
/// comment).
pub(crate) fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) -> Option<usize> {
    if payload.len() < MIN_DEFLATE {
        return None;
    }
    // Compressed just past room for the longest header, then the header put before it.
    let start = out.len();
    out.resize(start + 10, 0);
    if !compress_into(payload, out) {
        out.truncate(start);
        return None;
    }
    let len = out.len() - start - 10;
    let mut head = Vec::with_capacity(10);
    compressed_header(&mut head, opcode, len);
    out.drain(start..start + 10 - head.len());
    out[start..start + head.len()].copy_from_slice(&head);
    Some(len)
}

#[cfg(test)]
mod tests {
    use flate2::{Decompress, FlushDecompress};

    use super::*;
    use crate::event::deflate::TAIL;

    fn inflate(payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        Decompress::new(false)
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn large_answers_are_compressed_small_ones_not() {
        let mut out = b"before".to_vec();
        assert_eq!(frame(&mut out, OP_TEXT, br#"{"op":"ok","id":1}"#), None);
        assert_eq!(out, b"before");
        let big = format!(
            r#"{{"op":"ok","id":7,"messages":[{}]}}"#,
            (0..40)
                .map(|i| format!(r#"{{"topic":"chat/{i}","data":{{"n":{}}}}}"#, i * 7919))
                .collect::<Vec<_>>()
                .join(",")
        );
        let n = frame(&mut out, OP_TEXT, big.as_bytes()).unwrap();
        let f = &out[6..];
        assert_eq!(f[0], 0x80 | RSV1 | OP_TEXT);
        assert_eq!(f[1], 126);
        assert_eq!(usize::from(u16::from_be_bytes([f[2], f[3]])), n);
        assert_eq!(f.len(), 4 + n);
        assert_eq!(inflate(&f[4..]), big.as_bytes());
        // A binary frame the same way (a MessagePack connection's answers).
        let mut bin = Vec::new();
        frame(&mut bin, 0x2, big.as_bytes()).unwrap();
        assert_eq!(bin[0], 0x80 | RSV1 | 0x2);
        // A short compressed payload gets the 2-byte header.
        let mut out = Vec::new();
        let n = frame(&mut out, OP_TEXT, "a".repeat(300).as_bytes()).unwrap();
        assert!(n < 126);
        assert_eq!(out[1] as usize, n);
        assert_eq!(inflate(&out[2..]), "a".repeat(300).as_bytes());
    }

    #[test]
    fn inflate_errors_map_to_close_codes() {
        let e = |i: InflateError| io::Error::new(io::ErrorKind::InvalidData, i);
        assert_eq!(close_for(&e(InflateError::Invalid)).unwrap().0, 1007);
        let (code, reason) = close_for(&e(InflateError::TooLarge(65536))).unwrap();
        assert_eq!(code, 1009);
        assert!(reason.contains("max_frame (65536 bytes)"), "{reason}");
        assert_eq!(close_for(&e(InflateError::Protocol("x"))).unwrap().0, 1002);
        assert_eq!(close_for(&io::Error::other("other")), None);
        assert_eq!(close_for(&io::ErrorKind::BrokenPipe.into()), None);
    }
}
