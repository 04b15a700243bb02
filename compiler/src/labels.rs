//! Endpoint labels, shared. An endpoint's labels are a sorted
//! `key → value` map; endpoints of one deployment have the same map, and
//! a node's inventory holds many replicas of few deployments. A
//! `BTreeMap` with three labels costs about 650 bytes (one 11-slot node
//! and six strings), so a million endpoints with a map each need 650 MB
//! for their labels alone. [`Labels`] is the map behind a reference
//! count: equal maps read from one inventory are one allocation
//! ([`Interner`]), and the model and the inventory share them instead of
//! cloning them.
//!
//! `Labels` dereferences to the map, so every reader (`Sel::matches`,
//! the endpoint index, the lints) is unchanged; it prints, compares,
//! hashes and serializes as the map does.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The label map of an endpoint (see the module docs).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Arc<BTreeMap<String, String>>);

impl std::ops::Deref for Labels {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl std::borrow::Borrow<BTreeMap<String, String>> for Labels {
    fn borrow(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(m: BTreeMap<String, String>) -> Labels {
        Labels(Arc::new(m))
    }
}

impl From<Labels> for BTreeMap<String, String> {
    fn from(l: Labels) -> BTreeMap<String, String> {
        Arc::try_unwrap(l.0).unwrap_or_else(|shared| (*shared).clone())
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(it: I) -> Labels {
        Labels::from(it.into_iter().collect::<BTreeMap<_, _>>())
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
        BTreeMap::deserialize(d).map(Labels::from)
    }
}

impl Labels {
    /// The map, owned (cloned only when shared).
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.into()
    }
}

/// Equal label maps made one: [`Interner::intern`] returns the
/// [`Labels`] it already holds for an equal map.
#[derive(Debug, Default)]
pub struct Interner(HashSet<Labels>);

impl Interner {
    pub fn intern(&mut self, m: BTreeMap<String, String>) -> Labels {
        if let Some(l) = self.0.get(&m) {
            return l.clone();
        }
        let l = Labels::from(m);
        self.0.insert(l.clone());
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_maps_are_one_allocation_and_read_as_maps() {
        let m = |v: &str| BTreeMap::from([("app".to_string(), v.to_string())]);
        let mut i = Interner::default();
        let (a, b, c) = (i.intern(m("web")), i.intern(m("web")), i.intern(m("db")));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert!(!Arc::ptr_eq(&a.0, &c.0));
        assert_eq!(a.get("app").map(String::as_str), Some("web"));
        assert_eq!(format!("{a:?}"), format!("{:?}", m("web")));
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&m("web")).unwrap()
        );
        assert_eq!(a.into_map(), m("web"));
    }
}
