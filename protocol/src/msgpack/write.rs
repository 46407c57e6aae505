//! The MessagePack encoding of single values, each in its smallest form (what every
//! MessagePack library writes, so byte-for-byte comparisons in tests hold).

pub fn nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub fn bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { 0xc3 } else { 0xc2 });
}

pub fn uint(out: &mut Vec<u8>, n: u64) {
    let (b, len) = uint_bytes(n);
    out.extend_from_slice(&b[..len]);
}

/// [`uint`]'s encoding of `n` on the stack: the bytes and how many of them are used (for
/// writers that put it into another kind of buffer, once per recipient).
pub fn uint_bytes(n: u64) -> ([u8; 9], usize) {
    let mut b = [0u8; 9];
    let len = if n < 0x80 {
        b[0] = n as u8;
        1
    } else if n <= u64::from(u8::MAX) {
        b[..2].copy_from_slice(&[0xcc, n as u8]);
        2
    } else if n <= u64::from(u16::MAX) {
        b[0] = 0xcd;
        b[1..3].copy_from_slice(&(n as u16).to_be_bytes());
        3
    } else if n <= u64::from(u32::MAX) {
        b[0] = 0xce;
        b[1..5].copy_from_slice(&(n as u32).to_be_bytes());
        5
    } else {
        b[0] = 0xcf;
        b[1..].copy_from_slice(&n.to_be_bytes());
        9
    };
    (b, len)
}

pub fn int(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        uint(out, n as u64);
    } else if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

pub fn f64(out: &mut Vec<u8>, x: f64) {
    out.push(0xcb);
    out.extend_from_slice(&x.to_be_bytes());
}

pub fn str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= usize::from(u8::MAX) {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= usize::from(u16::MAX) {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

pub fn bin(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n <= usize::from(u8::MAX) {
        out.extend_from_slice(&[0xc4, n as u8]);
    } else if n <= usize::from(u16::MAX) {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

/// The header of a map of `n` pairs (the pairs follow, key then value).
pub fn map(out: &mut Vec<u8>, n: usize) {
    header(out, n, 0x80, 0xde, 0xdf);
}

/// The header of an array of `n` values.
pub fn array(out: &mut Vec<u8>, n: usize) {
    header(out, n, 0x90, 0xdc, 0xdd);
}

fn header(out: &mut Vec<u8>, n: usize, fix: u8, b16: u8, b32: u8) {
    if n < 16 {
        out.push(fix | n as u8);
    } else if n <= usize::from(u16::MAX) {
        out.push(b16);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(b32);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Writes the header of a map or array whose length was not known when its place was
/// reserved: `out[at]` is a placeholder byte, widened when `n` needs a longer header.
pub(super) fn patch_header(out: &mut Vec<u8>, at: usize, n: usize, is_map: bool) {
    let mut h = Vec::with_capacity(5);
    if is_map {
        map(&mut h, n);
    } else {
        array(&mut h, n);
    }
    if h.len() == 1 {
        out[at] = h[0];
    } else {
        out.splice(at..at + 1, h);
    }
}
