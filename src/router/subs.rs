//! The set of subscribers of one pattern.

use std::collections::HashSet;
use std::hash::Hash;

/// Most patterns have a handful of subscribers; a short vector is smaller and faster than a
/// hash set for those. It turns into a set past `SMALL_MAX` and back when it shrinks well
/// below (hysteresis, so a set hovering at the limit does not flip on every change).
const SMALL_MAX: usize = 16;

#[derive(Debug)]
pub(crate) enum Subscribers<V> {
    Small(Vec<V>),
    Large(HashSet<V>),
}

impl<V> Default for Subscribers<V> {
    fn default() -> Self {
        Subscribers::Small(Vec::new())
    }
}

impl<V: Eq + Hash> Subscribers<V> {
    /// True if `v` was not there yet.
    pub(crate) fn insert(&mut self, v: V) -> bool {
        match self {
            Subscribers::Small(vec) => {
                if vec.contains(&v) {
                    return false;
                }
                if vec.len() < SMALL_MAX {
                    vec.push(v);
                } else {
                    let mut set: HashSet<V> = vec.drain(..).collect();
                    set.insert(v);
                    *self = Subscribers::Large(set);
                }
                true
            }
            Subscribers::Large(set) => set.insert(v),
        }
    }

    /// True if `v` was there.
    pub(crate) fn remove(&mut self, v: &V) -> bool {
        match self {
            Subscribers::Small(vec) => match vec.iter().position(|x| x == v) {
                Some(i) => {
                    vec.swap_remove(i);
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
            Subscribers::Small(vec) => vec.len(),
            Subscribers::Large(set) => set.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn iter(&self) -> Iter<'_, V> {
        match self {
            Subscribers::Small(vec) => Iter::Small(vec.iter()),
            Subscribers::Large(set) => Iter::Large(set.iter()),
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
    }
}
