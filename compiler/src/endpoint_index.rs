//! An inverted label index over a model's endpoints, so selectors are
//! evaluated as sorted posting-list operations instead of one
//! [`Sel::matches`] per endpoint.
//!
//! `key=value` → sorted endpoint ids and `key` → sorted endpoint ids;
//! [`EndpointIndex::select`] evaluates a selector over them (Eq → lookup,
//! In → union, Has → key list, And → intersection, Or → union, Not / Ne /
//! NotIn → complement against every endpoint). The result is exactly the
//! ids of the endpoints for which [`Sel::matches`] holds, in ascending
//! order (the tests below check this against the reference definition on
//! generated models). Endpoint ids are indices into the slice the index
//! was built from (`model.endpoints`).
//!
//! Used by the service table ([`crate::interp::backends_of_indexed`]), the address
//! classes and the checker's lints; the rule itself is the interpreter's
//! ([`crate::interp::selector_backends`]).

use crate::model::{Endpoint, Sel};
// FxHash: these maps are hot and keyed by ids, nodes and short strings;
// nothing iterates them into output.
use rustc_hash::FxHashMap as HashMap;

/// The inverted label index of a slice of endpoints.
#[derive(Debug, Clone)]
pub struct EndpointIndex<'a> {
    n: u32,
    by_kv: HashMap<&'a str, HashMap<&'a str, Vec<u32>>>,
    by_key: HashMap<&'a str, Vec<u32>>,
}

impl<'a> EndpointIndex<'a> {
    pub fn new(endpoints: &'a [Endpoint]) -> EndpointIndex<'a> {
        EndpointIndex::from_labels(endpoints.iter().map(|e| &*e.labels))
    }

    /// The index of endpoints given by their labels (ids: positions in
    /// the iteration).
    pub fn from_labels(
        labels: impl IntoIterator<Item = &'a std::collections::BTreeMap<String, String>>,
    ) -> EndpointIndex<'a> {
        let mut by_kv: HashMap<&'a str, HashMap<&'a str, Vec<u32>>> = HashMap::default();
        let mut by_key: HashMap<&'a str, Vec<u32>> = HashMap::default();
        let mut n = 0usize;
        for (i, labels) in labels.into_iter().enumerate() {
            n = i + 1;
            let id = u32::try_from(i).expect("fewer than 2^32 endpoints");
            for (k, v) in labels {
                by_key.entry(k.as_str()).or_default().push(id);
                by_kv
                    .entry(k.as_str())
                    .or_default()
                    .entry(v.as_str())
                    .or_default()
                    .push(id);
            }
        }
        EndpointIndex {
            n: u32::try_from(n).expect("fewer than 2^32 endpoints"),
            by_kv,
            by_key,
        }
    }

    /// Number of endpoints indexed.
    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn eq(&self, k: &str, v: &str) -> &[u32] {
        self.by_kv
            .get(k)
            .and_then(|m| m.get(v))
            .map_or(&[][..], |l| l.as_slice())
    }

    fn has(&self, k: &str) -> &[u32] {
        self.by_key.get(k).map_or(&[][..], |l| l.as_slice())
    }

    fn all(&self) -> Vec<u32> {
        (0..self.n).collect()
    }

    fn complement(&self, xs: &[u32]) -> Vec<u32> {
        difference(&self.all(), xs)
    }

    /// Ids (ascending) of the endpoints whose labels `sel` matches.
    pub fn select(&self, sel: &Sel) -> Vec<u32> {
        match sel {
            Sel::All => self.all(),
            Sel::Eq(k, v) => self.eq(k, v).to_vec(),
            Sel::Ne(k, v) => self.complement(self.eq(k, v)),
            Sel::In(k, vs) => {
                let mut out = Vec::new();
                for v in vs {
                    out = union(&out, self.eq(k, v));
                }
                out
            }
            Sel::NotIn(k, vs) => self.complement(&self.select(&Sel::In(k.clone(), vs.clone()))),
            Sel::Has(k) => self.has(k).to_vec(),
            Sel::Not(e) => self.complement(&self.select(e)),
            Sel::And(a, b) => match (&**a, &**b) {
                (x, Sel::Not(y)) | (Sel::Not(y), x) => difference(&self.select(x), &self.select(y)),
                _ => intersect(&self.select(a), &self.select(b)),
            },
            Sel::Or(a, b) => union(&self.select(a), &self.select(b)),
        }
    }

    /// True when `sel` matches some endpoint.
    pub fn matches_any(&self, sel: &Sel) -> bool {
        !self.select(sel).is_empty()
    }
}

/// Sorted-list union.
pub fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// A list this many times shorter than the other is searched in it
/// rather than merged with it (a selector on one deployment against
/// every endpoint of a namespace: a few ids in tens of thousands).
const SEARCH_RATIO: usize = 16;

/// Sorted-list intersection.
pub fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if small.len() * SEARCH_RATIO < large.len() {
        let mut rest = large;
        let mut out = Vec::with_capacity(small.len());
        for &x in small {
            match rest.binary_search(&x) {
                Ok(i) => {
                    out.push(x);
                    rest = &rest[i + 1..];
                }
                Err(i) => rest = &rest[i..],
            }
        }
        return out;
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Sorted-list difference `a \ b`.
pub fn difference(a: &[u32], b: &[u32]) -> Vec<u32> {
    if a.len() * SEARCH_RATIO < b.len() {
        let mut rest = b;
        let mut out = Vec::with_capacity(a.len());
        for &x in a {
            match rest.binary_search(&x) {
                Ok(i) => rest = &rest[i + 1..],
                Err(i) => {
                    out.push(x);
                    rest = &rest[i..];
                }
            }
        }
        return out;
    }
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j < b.len() && b[j] == x {
            continue;
        }
        out.push(x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen;
    use crate::model::{BackendSource, Model, PeerMatch};

    fn selectors(m: &Model) -> Vec<Sel> {
        let mut out: Vec<Sel> = m.named_selectors.values().cloned().collect();
        for p in &m.policies {
            out.push(p.applies_to.clone());
            for dir in [
                crate::model::Direction::Ingress,
                crate::model::Direction::Egress,
            ] {
                for r in p.rules(dir).into_iter().flatten() {
                    if let PeerMatch::Selector(s) = &r.peer {
                        out.push(s.clone());
                        out.push(Sel::Not(Box::new(s.clone())));
                        out.push(Sel::And(
                            Box::new(p.applies_to.clone()),
                            Box::new(Sel::Not(Box::new(s.clone()))),
                        ));
                    }
                }
            }
        }
        for s in &m.services {
            if let BackendSource::Select { selector, .. } = &s.backends {
                out.push(selector.clone());
            }
        }
        out
    }

    #[test]
    fn select_agrees_with_matches_on_generated_models() {
        for seed in 0..300 {
            let m = gen::model(seed);
            let idx = EndpointIndex::new(&m.endpoints);
            for sel in selectors(&m) {
                let want: Vec<u32> = m
                    .endpoints
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| sel.matches(&e.labels))
                    .map(|(i, _)| i as u32)
                    .collect();
                assert_eq!(idx.select(&sel), want, "seed {seed}: {sel}");
            }
        }
    }

    #[test]
    fn indexed_backends_agree_with_the_reference() {
        for seed in 0..300 {
            let m = gen::model(seed);
            let idx = EndpointIndex::new(&m.endpoints);
            for s in &m.services {
                for fe in &s.frontends {
                    assert_eq!(
                        crate::interp::backends_of_indexed(s, fe, &m.endpoints, Some(&idx)),
                        crate::interp::backends_of(s, fe, &m.endpoints),
                        "seed {seed}: service {}",
                        s.name
                    );
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn set_operations_match_btreesets(
            a in proptest::collection::btree_set(0u32..64, 0..20),
            b in proptest::collection::btree_set(0u32..64, 0..20),
            // Lopsided sizes: the searched path (`SEARCH_RATIO`).
            c in proptest::collection::btree_set(0u32..400, 0..4),
            d in proptest::collection::btree_set(0u32..400, 60..300),
        ) {
            let cv: Vec<u32> = c.iter().copied().collect();
            let dv: Vec<u32> = d.iter().copied().collect();
            proptest::prop_assert_eq!(intersect(&cv, &dv), c.intersection(&d).copied().collect::<Vec<_>>());
            proptest::prop_assert_eq!(intersect(&dv, &cv), c.intersection(&d).copied().collect::<Vec<_>>());
            proptest::prop_assert_eq!(difference(&cv, &dv), c.difference(&d).copied().collect::<Vec<_>>());
            proptest::prop_assert_eq!(difference(&dv, &cv), d.difference(&c).copied().collect::<Vec<_>>());
            let av: Vec<u32> = a.iter().copied().collect();
            let bv: Vec<u32> = b.iter().copied().collect();
            proptest::prop_assert_eq!(union(&av, &bv), a.union(&b).copied().collect::<Vec<_>>());
            proptest::prop_assert_eq!(intersect(&av, &bv), a.intersection(&b).copied().collect::<Vec<_>>());
            proptest::prop_assert_eq!(difference(&av, &bv), a.difference(&b).copied().collect::<Vec<_>>());
        }
    }
}
