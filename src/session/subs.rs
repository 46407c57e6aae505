//! A session's subscriptions: a few in a tight list, many in a hash map.
//!
//! Most sessions hold one to a handful of subscriptions, and idle connections are the many:
//! a hash map's smallest table (four buckets) is about 300 bytes per session, a list of one
//! about 70. Past [`FEW`] a linear scan would cost more than it saves, so the list becomes a
//! map.

use std::collections::HashMap;
use std::sync::Arc;

use crate::topic::Pattern;

/// Identifies a subscription within a session: the pattern and the group it joined.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubKey {
    pub pattern: Arc<str>,
    pub group: Option<Arc<str>>,
}

/// The most subscriptions kept as a list.
const FEW: usize = 8;

#[derive(Debug)]
pub(super) enum Subs {
    Few(Vec<(SubKey, Pattern)>),
    Many(HashMap<SubKey, Pattern>),
}

impl Default for Subs {
    fn default() -> Self {
        Subs::Few(Vec::new())
    }
}

impl Subs {
    pub fn len(&self) -> usize {
        match self {
            Subs::Few(v) => v.len(),
            Subs::Many(m) => m.len(),
        }
    }

    pub fn contains_key(&self, key: &SubKey) -> bool {
        match self {
            Subs::Few(v) => v.iter().any(|(k, _)| k == key),
            Subs::Many(m) => m.contains_key(key),
        }
    }

    /// Adds a subscription the caller checked is not there.
    pub fn insert(&mut self, key: SubKey, pattern: Pattern) {
        match self {
            Subs::Few(v) if v.len() < FEW => {
                // Exact: a session with one subscription keeps room for one.
                v.reserve_exact(1);
                v.push((key, pattern));
            }
            Subs::Few(v) => {
                let mut m: HashMap<SubKey, Pattern> = std::mem::take(v).into_iter().collect();
                m.insert(key, pattern);
                *self = Subs::Many(m);
            }
            Subs::Many(m) => {
                m.insert(key, pattern);
            }
        }
    }

    pub fn remove(&mut self, key: &SubKey) -> Option<Pattern> {
        match self {
            Subs::Few(v) => {
                let i = v.iter().position(|(k, _)| k == key)?;
                Some(v.swap_remove(i).1)
            }
            Subs::Many(m) => m.remove(key),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SubKey, &Pattern)> + '_ {
        let (few, many) = match self {
            Subs::Few(v) => (Some(v.iter().map(|(k, p)| (k, p))), None),
            Subs::Many(m) => (None, Some(m.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    pub fn keys(&self) -> impl Iterator<Item = &SubKey> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Takes every subscription out, leaving none.
    pub fn take(&mut self) -> Vec<(SubKey, Pattern)> {
        match std::mem::take(self) {
            Subs::Few(v) => v,
            Subs::Many(m) => m.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str) -> SubKey {
        SubKey {
            pattern: p.into(),
            group: None,
        }
    }

    #[test]
    fn behaves_as_a_map_across_the_switch() {
        let mut subs = Subs::default();
        let mut model = HashMap::new();
        for round in 0..3 {
            for i in 0..(FEW * 2) {
                let name = format!("t/{i}");
                let k = key(&name);
                if !subs.contains_key(&k) {
                    subs.insert(k.clone(), Pattern::parse(&name).unwrap());
                    model.insert(k, ());
                }
                assert_eq!(subs.len(), model.len(), "round {round}");
            }
            for i in (0..(FEW * 2)).step_by(round + 1) {
                let k = key(&format!("t/{i}"));
                assert_eq!(subs.remove(&k).is_some(), model.remove(&k).is_some());
                assert!(!subs.contains_key(&k));
            }
            assert_eq!(subs.len(), model.len());
            let mut got: Vec<_> = subs.keys().map(|k| k.pattern.to_string()).collect();
            let mut want: Vec<_> = model.keys().map(|k| k.pattern.to_string()).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want);
        }
        assert_eq!(subs.take().len(), model.len());
        assert_eq!(subs.len(), 0);
    }
}
