//! The set of subscribers of one pattern.

use std::collections::HashSet;
use std::hash::Hash;

/// Most patterns have one subscriber, and nearly all a handful. One is stored inline (no
/// allocation, and no pointer to follow when a match collects it); a few go in a vector,
/// smaller and faster than a hash set; past `SMALL_MAX` they move to a set, and back when
/// it shrinks well below (hysteresis, so a set hovering at the limit does not flip on every
/// change).
const SMALL_MAX: usize = 16;

/// Bytes of a `ThinVec`'s header (length and capacity) before its values.
const THIN_HEADER: usize = 2 * std::mem::size_of::<usize>();

/// This enum is 16 bytes (for an 8-byte `V`): it sits in every slot of the index, and a slot
/// must fit a cache line, so both collections are one pointer wide.
///
/// The vector is a [`ThinVec`](thin_vec::ThinVec): its length, capacity and values share one
/// allocation behind one pointer. It was a `Box<Vec<V>>`, whose values sat behind a second
/// pointer in a second allocation: at a million subscriptions both are cold, so a matched
/// pattern with two or more subscribers cost two dependent cache misses, not one. At 1M a
/// match collects about 0.6 such sets; the change took the fastest batch of 1,024 cold
/// matches from about 0.87 to 0.78 µs (BENCHMARKS.md).
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
pub(crate) enum Subscribers<V> {
    #[default]
    Zero,
    One(V),
    /// Two to `SMALL_MAX` (one left turns it into `One`; a `Large` shrinking below half of
    /// `SMALL_MAX` turns into this).
    Small(thin_vec::ThinVec<V>),
    Large(Box<HashSet<V>>),
}

impl<V: Eq + Hash> Subscribers<V> {
    /// True if `v` was not there yet.
    pub(crate) fn insert(&mut self, v: V) -> bool {
        match self {
            Subscribers::Zero => *self = Subscribers::One(v),
            Subscribers::One(one) => {
                if *one == v {
                    return false;
                }
                let Subscribers::One(one) = std::mem::take(self) else {
                    unreachable!()
                };
                *self = Subscribers::Small(thin_vec::thin_vec![one, v]);
            }
            Subscribers::Small(vec) => {
                if vec.contains(&v) {
                    return false;
                }
                if vec.len() < SMALL_MAX {
                    vec.push(v);
                } else {
                    let mut set: HashSet<V> = std::mem::take(vec).into_iter().collect();
                    set.insert(v);
                    *self = Subscribers::Large(Box::new(set));
                }
            }
            Subscribers::Large(set) => return set.insert(v),
        }
        true
    }

    /// True if `v` was there.
    pub(crate) fn remove(&mut self, v: &V) -> bool {
        match self {
            Subscribers::Zero => false,
            Subscribers::One(one) => {
                if one != v {
                    return false;
                }
                *self = Subscribers::Zero;
                true
            }
            Subscribers::Small(vec) => match vec.iter().position(|x| x == v) {
                Some(i) => {
                    vec.swap_remove(i);
                    if vec.len() <= 1 {
                        *self = match vec.pop() {
                            Some(one) => Subscribers::One(one),
                            None => Subscribers::Zero,
                        };
                    }
                    true
                }
                None => false,
            },
            Subscribers::Large(set) => {
                let removed = set.remove(v);
                if set.len() < SMALL_MAX / 2 {
                    *self = Subscribers::Small(set.drain().collect());
                }
                removed
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Subscribers::Zero => 0,
            Subscribers::One(_) => 1,
            Subscribers::Small(vec) => vec.len(),
            Subscribers::Large(set) => set.len(),
        }
    }

    /// Only `Zero` is empty: `Small` holds two or more (below that it turns into `One` or
    /// `Zero`), and `Large` at least `SMALL_MAX / 2`. So this reads no heap memory. A match
    /// asks it of every node where the topic ends, and at a million subscriptions a shared
    /// pattern's vector is a cache miss away: asking its length there cost every such match
    /// a dependent miss in the middle of the walk.
    pub(crate) fn is_empty(&self) -> bool {
        debug_assert_eq!(matches!(self, Subscribers::Zero), self.len() == 0);
        matches!(self, Subscribers::Zero)
    }

    /// Starts loading the subscribers stored out of line, without reading them: a match
    /// calls this as it finds the pattern, so the miss overlaps the rest of the walk
    /// instead of stalling the merge.
    #[inline]
    pub(crate) fn prefetch(&self) {
        match self {
            Subscribers::Small(vec) => {
                // The header (length, capacity) sits just before the values; its line and
                // the next hold up to ten 8-byte values. Asking `vec.len()` here would load
                // the very line this is meant to start loading.
                let header = vec.as_ptr().cast::<u8>().wrapping_sub(THIN_HEADER);
                crate::prefetch::line(header);
                crate::prefetch::line(header.wrapping_add(64));
            }
            Subscribers::Large(set) => crate::prefetch::line(&**set),
            Subscribers::Zero | Subscribers::One(_) => {}
        }
    }

    /// The subscribers as a slice, unless they are in a hash set.
    pub(crate) fn as_slice(&self) -> Option<&[V]> {
        match self {
            Subscribers::Zero => Some(&[]),
            Subscribers::One(one) => Some(std::slice::from_ref(one)),
            Subscribers::Small(vec) => Some(vec),
            Subscribers::Large(_) => None,
        }
    }

    pub(crate) fn iter(&self) -> Iter<'_, V> {
        match self {
            Subscribers::Large(set) => Iter::Large(set.iter()),
            other => Iter::Small(other.as_slice().unwrap_or(&[]).iter()),
        }
    }
}

pub(crate) enum Iter<'a, V> {
    Small(std::slice::Iter<'a, V>),
    Large(std::collections::hash_set::Iter<'a, V>),
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = &'a V;
    fn next(&mut self) -> Option<&'a V> {
        match self {
            Iter::Small(it) => it.next(),
            Iter::Large(it) => it.next(),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Small(it) => it.size_hint(),
            Iter::Large(it) => it.size_hint(),
        }
    }
}

impl<V> ExactSizeIterator for Iter<'_, V> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_shrinks() {
        let mut s = Subscribers::default();
        for i in 0..40 {
            assert!(s.insert(i));
            assert!(!s.insert(i));
        }
        assert!(matches!(s, Subscribers::Large(_)));
        for i in 0..35 {
            assert!(s.remove(&i));
            assert!(!s.remove(&i));
        }
        assert!(matches!(s, Subscribers::Small(_)));
        let mut left: Vec<_> = s.iter().copied().collect();
        left.sort();
        assert_eq!(left, (35..40).collect::<Vec<_>>());
        for i in 35..39 {
            assert!(s.remove(&i));
        }
        assert!(matches!(s, Subscribers::One(39)));
        assert_eq!(s.as_slice(), Some(&[39][..]));
        assert!(!s.remove(&1));
        assert!(s.remove(&39));
        assert!(s.is_empty() && matches!(s, Subscribers::Zero));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn only_zero_is_empty() {
        // `is_empty` reads no heap memory; it must still agree with the contents through every
        // change of representation: up past `SMALL_MAX`, down below half of it, to zero.
        let mut s = Subscribers::default();
        let check = |s: &Subscribers<u32>| {
            assert_eq!(s.is_empty(), s.iter().next().is_none());
            assert_eq!(s.is_empty(), matches!(s, Subscribers::Zero));
        };
        check(&s);
        // Multipliers coprime with 45: each round removes all of 0..45 (five of them
        // absent), in its own order.
        for step in [7, 11, 13] {
            for i in 0..40 {
                s.insert(i);
                check(&s);
            }
            for i in (0..45).map(|i| (i * step) % 45) {
                s.remove(&i);
                check(&s);
            }
            assert!(s.is_empty());
        }
    }

    #[test]
    fn small_size() {
        assert_eq!(std::mem::size_of::<Subscribers<u64>>(), 16);
    }
}
