//! What the writer and the deflate extension share of a server frame's header (RFC 6455
//! §5.2): the opcodes, the RSV1 bit, and the header itself.

pub(super) const OP_TEXT: u8 = 0x1;
pub(super) const OP_BINARY: u8 = 0x2;
pub(super) const OP_CLOSE: u8 = 0x8;
pub(super) const OP_PING: u8 = 0x9;
pub(super) const OP_PONG: u8 = 0xA;
/// The RSV1 bit of a frame's first byte: "this message is compressed" (RFC 7692).
pub(super) const RSV1: u8 = 0x40;

/// Appends the header of a final, unmasked frame with a payload of `len` bytes.
pub(super) fn header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    header_with(out, 0x80 | opcode, len);
}

/// [`header`] with RSV1 set: a compressed message.
pub(super) fn compressed_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    header_with(out, 0x80 | RSV1 | opcode, len);
}

fn header_with(out: &mut Vec<u8>, b0: u8, len: usize) {
    if len < 126 {
        out.extend_from_slice(&[b0, len as u8]);
    } else if len <= usize::from(u16::MAX) {
        let [hi, lo] = (len as u16).to_be_bytes();
        out.extend_from_slice(&[b0, 126, hi, lo]);
    } else {
        out.extend_from_slice(&[b0, 127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}
