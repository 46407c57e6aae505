//! MessagePack to JSON text, in one walk over the bytes.

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{MAX_DEPTH, MsgpackError};

/// The JSON text of one MessagePack value that fills `input`, `bin` as `{"$base64":"…"}`.
pub fn to_json(input: &[u8]) -> Result<String, MsgpackError> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 4 + 16);
    to_json_into(input, &mut out)?;
    // Only JSON syntax and checked UTF-8 strings were written.
    String::from_utf8(out).map_err(|_| MsgpackError::Utf8)
}

/// [`to_json`], appending to `out` (on an error, `out` holds a partial value).
pub fn to_json_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), MsgpackError> {
    let mut r = Reader { b: input, pos: 0 };
    r.value(out, 0)?;
    match input.len() - r.pos {
        0 => Ok(()),
        n => Err(MsgpackError::Trailing(n)),
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MsgpackError> {
        let end = self.pos.checked_add(n).ok_or(MsgpackError::Truncated)?;
        let s = self.b.get(self.pos..end).ok_or(MsgpackError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn byte(&mut self) -> Result<u8, MsgpackError> {
        Ok(self.take(1)?[0])
    }
    fn be<const N: usize>(&mut self) -> Result<[u8; N], MsgpackError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// A length of 1, 2 or 4 big-endian bytes.
    fn len(&mut self, width: usize) -> Result<usize, MsgpackError> {
        Ok(match width {
            1 => usize::from(self.byte()?),
            2 => usize::from(u16::from_be_bytes(self.be()?)),
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), MsgpackError> {
        let b = self.byte()?;
        match b {
            0x00..=0x7f => int(out, i128::from(b)),
            0xe0..=0xff => int(out, i128::from(b as i8)),
            0x80..=0x8f => self.map(out, usize::from(b & 0x0f), depth)?,
            0x90..=0x9f => self.array(out, usize::from(b & 0x0f), depth)?,
            0xa0..=0xbf => self.str(out, usize::from(b & 0x1f))?,
            0xc0 => out.extend_from_slice(b"null"),
            0xc2 => out.extend_from_slice(b"false"),
            0xc3 => out.extend_from_slice(b"true"),
            0xc4..=0xc6 => {
                let n = self.len(1 << (b - 0xc4))?;
                let bytes = self.take(n)?;
                out.extend_from_slice(b"{\"$base64\":\"");
                let mut s = String::new();
                STANDARD.encode_string(bytes, &mut s);
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\"}");
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => return Err(MsgpackError::Ext),
            0xca => float(out, f64::from(f32::from_be_bytes(self.be()?)))?,
            0xcb => float(out, f64::from_be_bytes(self.be()?))?,
            0xcc => int(out, i128::from(self.byte()?)),
            0xcd => int(out, i128::from(u16::from_be_bytes(self.be()?))),
            0xce => int(out, i128::from(u32::from_be_bytes(self.be()?))),
            0xcf => int(out, i128::from(u64::from_be_bytes(self.be()?))),
            0xd0 => int(out, i128::from(self.byte()? as i8)),
            0xd1 => int(out, i128::from(i16::from_be_bytes(self.be()?))),
            0xd2 => int(out, i128::from(i32::from_be_bytes(self.be()?))),
            0xd3 => int(out, i128::from(i64::from_be_bytes(self.be()?))),
            0xd9..=0xdb => {
                let n = self.len(1 << (b - 0xd9))?;
                self.str(out, n)?;
            }
            0xdc | 0xdd => {
                let n = self.len(2 << (b - 0xdc))?;
                self.array(out, n, depth)?;
            }
            0xde | 0xdf => {
                let n = self.len(2 << (b - 0xde))?;
                self.map(out, n, depth)?;
            }
            0xc1 => return Err(MsgpackError::BadByte(b)),
        }
        Ok(())
    }

    fn str(&mut self, out: &mut Vec<u8>, n: usize) -> Result<(), MsgpackError> {
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| MsgpackError::Utf8)?;
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
        Ok(())
    }

    fn array(&mut self, out: &mut Vec<u8>, n: usize, depth: usize) -> Result<(), MsgpackError> {
        if depth >= MAX_DEPTH {
            return Err(MsgpackError::TooDeep);
        }
        out.push(b'[');
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            self.value(out, depth + 1)?;
        }
        out.push(b']');
        Ok(())
    }

    fn map(&mut self, out: &mut Vec<u8>, n: usize, depth: usize) -> Result<(), MsgpackError> {
        if depth >= MAX_DEPTH {
            return Err(MsgpackError::TooDeep);
        }
        out.push(b'{');
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            let b = self.byte()?;
            let len = match b {
                0xa0..=0xbf => usize::from(b & 0x1f),
                0xd9..=0xdb => self.len(1 << (b - 0xd9))?,
                _ => return Err(MsgpackError::KeyNotString),
            };
            self.str(out, len)?;
            out.push(b':');
            self.value(out, depth + 1)?;
        }
        out.push(b'}');
        Ok(())
    }
}

fn int(out: &mut Vec<u8>, n: i128) {
    let _ = write!(out, "{n}");
}

fn float(out: &mut Vec<u8>, x: f64) -> Result<(), MsgpackError> {
    if !x.is_finite() {
        return Err(MsgpackError::NotFinite);
    }
    let _ = serde_json::to_writer(&mut *out, &x);
    Ok(())
}
