//! Short byte-string keys stored inline.
//!
//! Every key of the index (a trie edge's literal segment, an exact topic) used to be a
//! `Box<str>`: a lookup hashed the topic, found the bucket, and then followed the key's
//! pointer to compare it: one more cache miss per level once the index outgrows the CPU
//! caches. A [`Key`] keeps up to `N` bytes in the bucket itself; longer keys fall back to the
//! heap.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A byte string of at most `N <= 255` bytes inline, longer on the heap. Hashes, compares
/// and borrows as `[u8]`, so maps keyed by it are queried with `topic.as_bytes()`.
#[derive(Clone)]
pub(crate) enum Key<const N: usize> {
    Inline { len: u8, bytes: [u8; N] },
    Heap(Box<[u8]>),
}

impl<const N: usize> Key<N> {
    pub(crate) fn new(s: &str) -> Self {
        let b = s.as_bytes();
        match u8::try_from(b.len()) {
            Ok(len) if b.len() <= N => {
                let mut bytes = [0; N];
                bytes[..b.len()].copy_from_slice(b);
                Key::Inline { len, bytes }
            }
            _ => Key::Heap(b.into()),
        }
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

impl<const N: usize> Borrow<[u8]> for Key<N> {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl<const N: usize> PartialEq for Key<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> Eq for Key<N> {}

/// Must agree with `[u8]`'s `Hash` (the `Borrow` contract).
impl<const N: usize> Hash for Key<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl<const N: usize> fmt::Debug for Key<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn inline_and_heap_agree() {
        let h = crate::router::FastState::default();
        for s in [
            "",
            "a",
            "exactly-22-bytes-long!",
            "twenty-three-bytes-long",
            "é/ü",
        ] {
            let k: Key<22> = Key::new(s);
            assert_eq!(k.as_bytes(), s.as_bytes());
            assert_eq!(matches!(k, Key::Inline { .. }), s.len() <= 22, "{s}");
            assert_eq!(h.hash_one(&k), h.hash_one(s.as_bytes()));
            assert_eq!(k, Key::new(s));
        }
        assert_eq!(std::mem::size_of::<Key<22>>(), 24);
        assert_eq!(std::mem::size_of::<Key<30>>(), 32);
    }
}
