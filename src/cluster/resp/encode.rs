//! Encoding commands: `*<argc>\r\n` then each argument as `$<len>\r\n<bytes>\r\n`.

/// Appends one argument, encoded, to `out`.
pub fn bulk(out: &mut Vec<u8>, a: &[u8]) {
    bulk_header(out, a.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b"\r\n");
}

/// Appends the head of an argument of `len` bytes: the caller writes exactly that many
/// bytes and then `\r\n` (an argument built in place, without a copy of its own).
pub fn bulk_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A command written straight into an output buffer, its argument count known up front
/// (no copy of a large command); [`Streamed::finish`] checks the count came out right.
pub struct Streamed<'a> {
    out: &'a mut Vec<u8>,
    argc: usize,
    written: usize,
}

impl<'a> Streamed<'a> {
    pub fn str(&mut self, a: &str) -> &mut Self {
        bulk(self.out, a.as_bytes());
        self.written += 1;
        self
    }

    pub fn int(&mut self, n: u64) -> &mut Self {
        bulk(self.out, itoa::Buffer::new().format(n).as_bytes());
        self.written += 1;
        self
    }

    /// One argument of `len` bytes that `write` appends in place (it must write exactly
    /// that many).
    pub fn bulk_with(&mut self, len: usize, write: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        bulk_header(self.out, len);
        let start = self.out.len();
        write(self.out);
        assert_eq!(self.out.len() - start, len, "an argument's length");
        self.out.extend_from_slice(b"\r\n");
        self.written += 1;
        self
    }

    /// `n` arguments already encoded with [`bulk`].
    pub fn raw(&mut self, encoded: &[u8], n: usize) -> &mut Self {
        self.out.extend_from_slice(encoded);
        self.written += n;
        self
    }

    pub fn finish(&self) {
        assert_eq!(self.written, self.argc, "a command's argument count");
    }
}

/// One command being built; [`Command::write_to`] appends it to an output buffer.
#[derive(Debug, Default, Clone)]
pub struct Command {
    args: Vec<u8>,
    argc: usize,
}

impl Command {
    /// Starts a command of `argc` arguments (its name included) at the end of `out`.
    pub fn with_argc(argc: usize, out: &mut Vec<u8>) -> Streamed<'_> {
        out.push(b'*');
        out.extend_from_slice(itoa::Buffer::new().format(argc).as_bytes());
        out.extend_from_slice(b"\r\n");
        Streamed {
            out,
            argc,
            written: 0,
        }
    }

    pub fn new(name: &str) -> Command {
        let mut c = Command::default();
        c.arg(name.as_bytes());
        c
    }

    /// Appends an argument.
    pub fn arg(&mut self, a: &[u8]) -> &mut Command {
        bulk(&mut self.args, a);
        self.argc += 1;
        self
    }

    pub fn str(&mut self, a: &str) -> &mut Command {
        self.arg(a.as_bytes())
    }

    pub fn int(&mut self, n: u64) -> &mut Command {
        self.arg(itoa::Buffer::new().format(n).as_bytes())
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.push(b'*');
        out.extend_from_slice(itoa::Buffer::new().format(self.argc).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.args);
    }

    #[cfg(test)]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.args.len() + 16);
        self.write_to(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_an_array_of_bulk_strings() {
        let mut c = Command::new("SET");
        c.str("k").int(42).arg(b"");
        let want = b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n42\r\n$0\r\n\r\n";
        assert_eq!(c.to_bytes(), want);
        let mut out = Vec::new();
        let mut pre = Vec::new();
        bulk(&mut pre, b"42");
        bulk(&mut pre, b"");
        let mut s = Command::with_argc(4, &mut out);
        s.str("SET").str("k").raw(&pre, 2).finish();
        assert_eq!(out, want);
    }
}
