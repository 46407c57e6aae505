//! An event's `msg` frame compressed for permessage-deflate (RFC 7692), once for all its
//! recipients.
//!
//! A connection that negotiated deflate gets every message compressed on its own (the server
//! says `server_no_context_takeover`), so what one recipient's payload holds can be built
//! from parts shared by all of them:
//!
//! 1. a deflate *stored* block (RFC 1951 §3.2.4: `BFINAL=0, BTYPE=00`, padded to the byte
//!    boundary, which at the start of a stream is one byte `0x00`; then `LEN` and `NLEN`,
//!    little-endian) holding the per-recipient head `{"op":"msg","seq":N,…`;
//! 2. the body compressed once, by a fresh raw-deflate compressor ended with a sync flush
//!    whose empty stored block (`00 00 ff ff`) is cut off, as RFC 7692 §7.2.1 says (the
//!    receiver appends it again before inflating).
//!
//! The stored block ends on a byte boundary and the body's compressor starts on one, and the
//! body refers back only to itself (at the same distances whatever comes before it), so the
//! two concatenate into one valid stream. The compressed body is computed by the first writer
//! that needs it and kept in the event ([`Deflated`]), one cell per encoding: a second
//! encoding's body gets a cell of its own beside `json` and the same [`compressed`].
//!
//! The compressor is a thread-local one, reset before each use (a fresh one is ~370 KiB of
//! tables, allocated once per worker thread, never per connection or per message).

use std::cell::RefCell;
use std::sync::OnceLock;

use bytes::BufMut;
use flate2::{Compress, Compression, FlushCompress};

use super::{Delivery, Encoding, Event};

/// Frames (payloads) shorter than this go uncompressed: deflate saves little on them and
/// costs the same fixed setup.
pub const MIN_DEFLATE: usize = 256;

/// The compression level. 6 (zlib's default) costs the same time as 3 with zlib-rs on ~1 KiB
/// JSON and compresses a little better; 1 is ~3× faster but ~25% larger. A message is
/// compressed once for all its recipients, so the level is paid per publish, not per delivery.
const LEVEL: u32 = 6;

/// The end of a sync flush, cut from every compressed payload (RFC 7692 §7.2.1).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The bytes of a stored block's header: `0x00`, `LEN`, `NLEN`.
pub const STORED_HEADER: usize = 5;

/// The compressed bodies of an event, one per encoding, each computed at most once (`None`
/// inside: compression would not shrink it).
#[derive(Debug, Default)]
pub(crate) struct Deflated {
    json: OnceLock<Option<Box<[u8]>>>,
    msgpack: OnceLock<Option<Box<[u8]>>>,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<Compress>> = const { RefCell::new(None) };
}

/// `body` compressed once into `cell` (see the module comment); `None` when compressing does
/// not shrink it.
pub fn compressed<'a>(cell: &'a OnceLock<Option<Box<[u8]>>>, body: &[u8]) -> Option<&'a [u8]> {
    cell.get_or_init(|| {
        let mut out = Vec::new();
        compress_into(body, &mut out).then(|| out.into_boxed_slice())
    })
    .as_deref()
}

/// Appends `input` compressed on its own (a fresh raw-deflate stream, a sync flush, [`TAIL`]
/// cut off) to `out`. False, with `out` as it was, when the result would not be smaller
/// than `input` (then it is sent as it is).
pub fn compress_into(input: &[u8], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    // Room for everything smaller than the input, the tail included: a compressor that fills
    // it has not shrunk the input and is stopped there.
    let limit = start + input.len() + TAIL.len();
    out.resize(limit, 0);
    let end = COMPRESSOR.with(|cell| {
        // Not reentrant (nothing here calls back), so the borrow always succeeds.
        let mut slot = cell.try_borrow_mut().ok()?;
        let c = slot.get_or_insert_with(|| Compress::new(Compression::new(LEVEL), false));
        c.reset();
        let (mut rest, mut at) = (input, start);
        loop {
            let (took, gave) = (c.total_in(), c.total_out());
            c.compress(rest, &mut out[at..], FlushCompress::Sync).ok()?;
            let (took, gave) = (
                (c.total_in() - took) as usize,
                (c.total_out() - gave) as usize,
            );
            rest = &rest[took..];
            at += gave;
            if at >= limit || took + gave == 0 {
                return None; // full (not smaller), or stuck
            }
            if rest.is_empty() {
                // All input taken with room to spare: the flush is complete.
                return Some(at);
            }
        }
    });
    match end {
        Some(end) if out[start..end].ends_with(&TAIL) && end - TAIL.len() - start < input.len() => {
            out.truncate(end - TAIL.len());
            true
        }
        _ => {
            out.truncate(start);
            false
        }
    }
}

/// Appends the header of a stored block of `len` bytes (the block's bytes follow).
pub fn stored_header(out: &mut impl BufMut, len: u16) {
    out.put_u8(0x00);
    out.put_u16_le(len);
    out.put_u16_le(!len);
}

impl Event {
    /// The uncompressed frame's length and its shared body, in `enc`.
    fn plain(&self, enc: Encoding, seq: u64, how: Delivery) -> (usize, &[u8]) {
        match enc {
            Encoding::Json => (self.msg_len(seq, how), &self.body),
            Encoding::Msgpack => (self.msgpack_len(seq, how), self.msgpack_body()),
        }
    }

    fn compressed_body(&self, enc: Encoding) -> Option<&[u8]> {
        match enc {
            Encoding::Json => compressed(&self.deflated.json, &self.body),
            Encoding::Msgpack => compressed(&self.deflated.msgpack, self.msgpack_body()),
        }
    }

    /// The length of the compressed `msg` payload in `enc` for one recipient, or `None` when
    /// that recipient gets it uncompressed: under [`MIN_DEFLATE`], or not shrunk by deflate.
    /// The first call for an encoding compresses its body; later ones, for any recipient,
    /// reuse it.
    pub fn deflated_len(&self, enc: Encoding, seq: u64, how: Delivery) -> Option<usize> {
        let (plain, body) = self.plain(enc, seq, how);
        if plain < MIN_DEFLATE {
            return None;
        }
        let head = plain - body.len();
        let n = STORED_HEADER + head + self.compressed_body(enc)?.len();
        (n < plain).then_some(n)
    }

    /// Appends the compressed `msg` payload for one recipient: exactly
    /// [`Event::deflated_len`] bytes, which must have been `Some` for the same recipient.
    pub fn write_deflated(&self, enc: Encoding, seq: u64, how: Delivery, out: &mut impl BufMut) {
        let (plain, body) = self.plain(enc, seq, how);
        // A head is at most ~120 bytes (seq, deliveries and three flags).
        stored_header(out, (plain - body.len()) as u16);
        match enc {
            Encoding::Json => self.write_head(seq, how, out),
            Encoding::Msgpack => self.write_msgpack_head(seq, how, out),
        }
        out.put_slice(self.compressed_body(enc).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flate2::{Decompress, FlushDecompress};

    use super::*;
    use crate::event::EventParts;
    use crate::topic::Topic;

    /// What a client does with one message (no context takeover): a fresh inflater, the tail
    /// appended.
    fn inflate(payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&TAIL);
        let mut d = Decompress::new(false);
        let mut out = Vec::with_capacity(1 << 20);
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(d.total_in() as usize, input.len(), "all of it inflated");
        out
    }

    /// ~1 KiB of JSON like an application's: records with the same keys.
    fn orders(n: usize) -> String {
        let items: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"id":"ord_{:08x}","status":"{}","total":{}.{:02},"currency":"EUR"}}"#,
                    (i as u32).wrapping_mul(0x9e37_79b9),
                    ["paid", "pending", "shipped"][i % 3],
                    17 + i * 13 % 90,
                    i * 7 % 100
                )
            })
            .collect();
        format!(r#"{{"orders":[{}]}}"#, items.join(","))
    }

    fn event(data: &str) -> Event {
        Event::new(
            EventParts {
                topic: Topic::parse("orders/eu").unwrap(),
                data,
                msg_id: Some("m-1"),
                reply_to: None,
            },
            77,
            Arc::from("e1"),
            1_764_000_000_000,
        )
    }

    #[test]
    fn stored_head_and_shared_body_inflate_to_the_frame() {
        let data = orders(14);
        let ev = event(&data);
        let recipients = [
            (1, Delivery::LIVE),
            (9, Delivery::LIVE),
            (123_456_789, Delivery::LIVE),
            (u64::MAX, Delivery::LIVE),
            (
                42,
                Delivery {
                    retained: true,
                    replay: true,
                    redelivered: Some(u32::MAX),
                },
            ),
        ];
        for (seq, how) in recipients {
            let n = ev
                .deflated_len(Encoding::Json, seq, how)
                .expect("compressed");
            let mut out = Vec::new();
            ev.write_deflated(Encoding::Json, seq, how, &mut out);
            assert_eq!(out.len(), n);
            assert_eq!(out[0], 0x00, "a stored block, not final");
            assert_eq!(inflate(&out), ev.msg_frame(seq, how).as_bytes());
            assert!(
                n * 3 < ev.msg_len(seq, how) * 2,
                "{n} of {}",
                ev.msg_len(seq, how)
            );
        }
        // Compressed once: every recipient's payload ends with the same bytes.
        let body = compressed(&ev.deflated.json, &ev.body).unwrap();
        assert!(std::ptr::eq(
            body,
            compressed(&ev.deflated.json, &[]).unwrap()
        ));
    }

    #[test]
    fn small_or_incompressible_messages_stay_plain() {
        let ev = event(r#"{"text":"hi"}"#);
        assert!(ev.msg_len(1, Delivery::LIVE) < MIN_DEFLATE);
        assert_eq!(ev.deflated_len(Encoding::Json, 1, Delivery::LIVE), None);
        // Random bytes do not shrink (JSON text always does a little: its bytes are few).
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut out = Vec::new();
        assert!(!compress_into(&noise, &mut out));
        assert!(out.is_empty());
        let mut out = vec![1, 2, 3];
        assert!(!compress_into(&[7u8; 3], &mut out));
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn compress_into_appends_a_payload_that_inflates() {
        let text = orders(40);
        let mut out = b"prefix".to_vec();
        assert!(compress_into(text.as_bytes(), &mut out));
        assert!(out.starts_with(b"prefix"));
        assert!(!out.ends_with(&TAIL));
        assert_eq!(inflate(&out[6..]), text.as_bytes());
        // The compressor is reset between uses: the same input, the same bytes.
        let mut again = b"prefix".to_vec();
        assert!(compress_into(text.as_bytes(), &mut again));
        assert_eq!(again, out);
    }
}
