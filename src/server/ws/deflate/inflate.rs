//! The client's compressed messages, inflated before tungstenite reads them.
//!
//! tungstenite has no permessage-deflate and refuses a frame with RSV1 set, so the socket's
//! reading half is wrapped in [`Inflate`], an `AsyncRead` that parses the client's frames
//! (RFC 6455 §5.2: masked) as they come:
//!
//! - a frame outside a compressed message, and every control frame (also between the
//!   fragments of a compressed message), passes through byte for byte;
//! - a message whose first frame has RSV1 set is inflated as its frames come (unmasked, fed
//!   to the inflater, the tail `00 00 ff ff` appended after the last one: RFC 7692 §7.2.2),
//!   and handed on as one final frame with RSV1 clear, masked with the key `00 00 00 00`
//!   (tungstenite as a server wants masked frames; XOR with zeros changes nothing).
//!
//! The inflated size is bounded while inflating: past `max_frame`, the connection closes with
//! 1009 before more is inflated (a zip bomb costs at most `max_frame` of memory); compressed
//! bytes that do not inflate close it with 1007. Both arrive at the reader as an `io::Error`
//! whose inner error is an [`InflateError`] (see [`super::close_for`]); after it, bytes pass
//! through unparsed (the reader stops at its first error and only drains what follows).
//!
//! Memory: a connection without deflate holds one null pointer here; with deflate, a 320-byte
//! state. The inflater (zlib-rs: ~46 KiB, most of it the 32 KiB window) is allocated at the
//! first compressed frame; with `client_no_context_takeover` agreed it is freed after each
//! message, otherwise the client may refer back to earlier messages and it lives as long as
//! the connection. A message being inflated holds up to `max_frame`, freed when it is passed on.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, ReadBuf};

use super::super::frame::{OP_BINARY, OP_TEXT};
use crate::event::deflate::TAIL;

/// Bytes read from the socket at a time (from a stack buffer: an idle connection holds none).
const READ_CHUNK: usize = 4096;
/// A buffer grown past this is freed once empty (an idle connection holds none).
const KEEP_AT_MOST: usize = 8 * 1024;

const OP_CONTINUATION: u8 = 0x0;

/// Why a compressed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// The compressed bytes are not a deflate stream: 1007.
    #[error("compressed frame does not inflate")]
    Invalid,
    /// Inflated (or compressed) past `max_frame`: 1009.
    #[error("compressed frame inflates past max_frame ({0} bytes)")]
    TooLarge(usize),
    /// Framing RFC 7692 forbids (RSV1 on a continuation, a new message inside a compressed
    /// one, an unmasked frame): 1002.
    #[error("{0}")]
    Protocol(&'static str),
}

/// The reading half of a socket, its compressed messages inflated (see the module comment).
pub(crate) struct Inflate<R> {
    inner: R,
    /// `None`: deflate was not negotiated, and bytes pass through untouched.
    state: Option<Box<State>>,
}

impl<R> Inflate<R> {
    /// `agreed`: deflate was negotiated (and whether without client context takeover).
    pub(crate) fn new(inner: R, agreed: Option<super::Agreed>, max_frame: usize) -> Inflate<R> {
        Inflate {
            inner,
            state: agreed.map(|a| Box::new(State::new(max_frame, a.client_no_context_takeover))),
        }
    }
}

struct State {
    max_frame: usize,
    /// The client may not refer back to its earlier messages: the inflater is freed after
    /// each one.
    no_context: bool,
    /// Bytes read but not parsed yet: at most an incomplete frame header.
    input: Vec<u8>,
    /// Bytes for tungstenite, from `taken` on.
    output: Vec<u8>,
    taken: usize,
    frame: Frame,
    /// The compressed message being inflated.
    message: Option<Message>,
    inflater: Option<Decompress>,
    /// To return once `output` is read.
    error: Option<InflateError>,
    /// An error was returned: the rest passes through unparsed.
    failed: bool,
}

/// Where the parser is in the current frame.
#[derive(Debug, Clone, Copy)]
enum Frame {
    Header,
    /// This many payload bytes pass through.
    Pass(u64),
    /// This many payload bytes of a compressed message's frame are to be inflated.
    Inflate {
        left: u64,
        mask: [u8; 4],
        /// Payload bytes of this frame unmasked so far (the mask's phase).
        at: usize,
        fin: bool,
    },
}

struct Message {
    opcode: u8,
    inflated: Vec<u8>,
    /// Compressed payload bytes so far.
    compressed: u64,
    /// The stream ended (a block with BFINAL set): nothing more may follow in the message.
    ended: bool,
}

/// A frame header.
#[derive(Debug, Clone, Copy)]
struct Head {
    fin: bool,
    rsv1: bool,
    /// RSV2 or RSV3.
    rsv23: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    /// Bytes of the header.
    size: usize,
}

impl Head {
    /// The header at the start of `b`, or `None` while incomplete.
    fn parse(b: &[u8]) -> Option<Head> {
        let (b0, b1) = (*b.first()?, *b.get(1)?);
        let (len, mut size) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)),
                4,
            ),
            127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
            n => (u64::from(n), 2),
        };
        let mask = if b1 & 0x80 != 0 {
            let key: [u8; 4] = b.get(size..size + 4)?.try_into().ok()?;
            size += 4;
            Some(key)
        } else {
            None
        };
        Some(Head {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            rsv23: b0 & 0x30 != 0,
            opcode: b0 & 0x0f,
            mask,
            len,
            size,
        })
    }
}

impl State {
    fn new(max_frame: usize, no_context: bool) -> State {
        State {
            max_frame,
            no_context,
            input: Vec::new(),
            output: Vec::new(),
            taken: 0,
            frame: Frame::Header,
            message: None,
            inflater: None,
            error: None,
            failed: false,
        }
    }

    /// The most compressed bytes a message may have: `max_frame` and what deflate adds to
    /// incompressible data (5 bytes per 64 KiB stored block), with room to spare.
    fn compressed_limit(&self) -> u64 {
        (self.max_frame + self.max_frame / 256 + 64) as u64
    }

    /// Parses `data` (complete frames and their starts): appends what tungstenite gets to
    /// `output`. Returns how many bytes it used; the rest is an incomplete header. Stops at
    /// an error, kept in `error`.
    fn parse(&mut self, data: &mut [u8]) -> usize {
        let mut used = 0;
        while used < data.len() {
            let rest = &mut data[used..];
            let step = match self.frame {
                Frame::Header => match Head::parse(rest) {
                    None => return used,
                    Some(head) => self.begin(head, &rest[..head.size]).map(|()| head.size),
                },
                Frame::Pass(left) => {
                    let n = left.min(rest.len() as u64) as usize;
                    self.output.extend_from_slice(&rest[..n]);
                    self.frame = match left - n as u64 {
                        0 => Frame::Header,
                        left => Frame::Pass(left),
                    };
                    Ok(n)
                }
                Frame::Inflate {
                    left,
                    mask,
                    at,
                    fin,
                } => {
                    let n = left.min(rest.len() as u64) as usize;
                    let chunk = &mut rest[..n];
                    for (i, b) in chunk.iter_mut().enumerate() {
                        *b ^= mask[(at + i) % 4];
                    }
                    let left = left - n as u64;
                    self.frame = if left == 0 {
                        Frame::Header
                    } else {
                        Frame::Inflate {
                            left,
                            mask,
                            at: at + n,
                            fin,
                        }
                    };
                    self.inflate(chunk)
                        .and_then(|()| {
                            if left == 0 && fin {
                                self.finish()
                            } else {
                                Ok(())
                            }
                        })
                        .map(|()| n)
                }
            };
            match step {
                Ok(n) => used += n,
                Err(e) => {
                    self.error = Some(e);
                    return data.len();
                }
            }
        }
        used
    }

    /// Acts on a frame's header (`raw`: its bytes).
    fn begin(&mut self, head: Head, raw: &[u8]) -> Result<(), InflateError> {
        let control = head.opcode & 0x8 != 0;
        let compressed = if control {
            false
        } else if self.message.is_some() {
            if head.opcode != OP_CONTINUATION {
                return Err(InflateError::Protocol(
                    "a new message began inside a compressed one",
                ));
            }
            if head.rsv1 {
                return Err(InflateError::Protocol("RSV1 set on a continuation frame"));
            }
            true
        } else {
            head.rsv1 && matches!(head.opcode, OP_TEXT | OP_BINARY)
        };
        if !compressed {
            // tungstenite judges it (RSV bits, masking, size, control frame rules).
            self.output.extend_from_slice(raw);
            if head.len > 0 {
                self.frame = Frame::Pass(head.len);
            }
            return Ok(());
        }
        let Some(mask) = head.mask else {
            return Err(InflateError::Protocol("unmasked frame from the client"));
        };
        if head.rsv23 {
            return Err(InflateError::Protocol("RSV2 or RSV3 set"));
        }
        let limit = self.compressed_limit();
        let message = self.message.get_or_insert_with(|| Message {
            opcode: head.opcode,
            inflated: Vec::new(),
            compressed: 0,
            ended: false,
        });
        message.compressed = message.compressed.saturating_add(head.len);
        if message.compressed > limit {
            return Err(InflateError::TooLarge(self.max_frame));
        }
        self.inflater.get_or_insert_with(|| Decompress::new(false));
        if head.len == 0 {
            return if head.fin { self.finish() } else { Ok(()) };
        }
        self.frame = Frame::Inflate {
            left: head.len,
            mask,
            at: 0,
            fin: head.fin,
        };
        Ok(())
    }

    /// Feeds compressed bytes of the current message to the inflater.
    fn inflate(&mut self, input: &[u8]) -> Result<(), InflateError> {
        let (Some(m), Some(d)) = (self.message.as_mut(), self.inflater.as_mut()) else {
            return Ok(());
        };
        feed(d, input, &mut m.inflated, &mut m.ended, self.max_frame)
    }

    /// The compressed message is complete: inflates its tail and passes it on as one frame.
    fn finish(&mut self) -> Result<(), InflateError> {
        let mut m = self.message.take().ok_or(InflateError::Invalid)?;
        if let Some(d) = self.inflater.as_mut() {
            if !m.ended {
                feed(d, &TAIL, &mut m.inflated, &mut m.ended, self.max_frame)?;
            }
            if self.no_context {
                self.inflater = None;
            } else if m.ended {
                // The client ended its stream (BFINAL): a fresh one follows.
                d.reset(false);
            }
        }
        let len = m.inflated.len();
        self.output.reserve(len + 14);
        self.output.push(0x80 | m.opcode);
        if len < 126 {
            self.output.push(0x80 | len as u8);
        } else if len <= usize::from(u16::MAX) {
            self.output.push(0x80 | 126);
            self.output.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            self.output.push(0x80 | 127);
            self.output.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.output.extend_from_slice(&[0; 4]); // the masking key: nothing to unmask
        self.output.extend_from_slice(&m.inflated);
        Ok(())
    }

    /// After an error: what is held is dropped, and the rest passes through.
    fn fail(&mut self) {
        self.failed = true;
        self.input = Vec::new();
        self.message = None;
        self.inflater = None;
    }
}

/// Inflates `input` onto `out`, never past `max + 1` bytes (then: too large).
fn feed(
    d: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    ended: &mut bool,
    max: usize,
) -> Result<(), InflateError> {
    loop {
        if *ended {
            // Bytes after the final block.
            return if input.is_empty() {
                Ok(())
            } else {
                Err(InflateError::Invalid)
            };
        }
        if out.len() == out.capacity() {
            if out.len() > max {
                return Err(InflateError::TooLarge(max));
            }
            // Grown in steps (what the input suggests, at least 1 KiB), never past `max + 1`:
            // the output only ever lands in capacity reserved here.
            let step = input.len().saturating_mul(4).clamp(1024, 64 << 10);
            out.reserve_exact(step.min(max + 1 - out.len()));
        }
        let spare = out.capacity() - out.len();
        let (took, gave) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(input, out, FlushDecompress::None)
            .map_err(|_| InflateError::Invalid)?;
        let (took, gave) = (
            (d.total_in() - took) as usize,
            (d.total_out() - gave) as usize,
        );
        input = &input[took..];
        if out.len() > max {
            return Err(InflateError::TooLarge(max));
        }
        match status {
            Status::StreamEnd => *ended = true,
            _ if input.is_empty() && gave < spare => return Ok(()), // nothing held back
            _ if took == 0 && gave == 0 => return Err(InflateError::Invalid),
            _ => {}
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Inflate<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(st) = this.state.as_deref_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            if st.taken < st.output.len() {
                let n = buf.remaining().min(st.output.len() - st.taken);
                buf.put_slice(&st.output[st.taken..st.taken + n]);
                st.taken += n;
                if st.taken == st.output.len() {
                    st.output.clear();
                    st.taken = 0;
                    if st.output.capacity() > KEEP_AT_MOST {
                        st.output = Vec::new();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = st.error.take() {
                st.fail();
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
            if st.failed {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(())); // the end of the stream
            }
            if st.input.is_empty() {
                let used = st.parse(&mut chunk[..n]);
                st.input.extend_from_slice(&chunk[used..n]);
            } else {
                let mut input = std::mem::take(&mut st.input);
                input.extend_from_slice(&chunk[..n]);
                let used = st.parse(&mut input);
                input.drain(..used);
                st.input = input;
            }
            if st.input.is_empty() && st.input.capacity() > 0 {
                st.input = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests;
