//! The set of subscribers of one pattern.

use std::collections::HashSet;
use std::hash::Hash;

/// Most patterns have one subscriber, and nearly all a handful. One is stored inline (no
/// allocation, and no pointer to follow when a match collects it); a few go in a vector,
/// smaller and faster than a hash set; past `SMALL_MAX` they move to a set, and back when
/// it shrinks well below (hysteresis, so a set hovering at the limit does not flip on every
/// change).
const SMALL_MAX: usize = 16;

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
    /// Two to `SMALL_MAX`, except transiently after removals from `Large`.
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

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
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
    fn small_size() {
        assert_eq!(std::mem::size_of::<Subscribers<u64>>(), 16);
    }
}
