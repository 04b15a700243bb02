//! A small growable bitset with a canonical form, so that equal sets
//! compare, order and hash equal. Used for atom signatures (bit = atom)
//! and for sets of classes (bit = class).
//!
//! **Sparse or dense, by content.** A class row is a handful of atoms out
//! of up to hundreds of thousands, and an atom's class set is often one
//! class: stored densely, 100,000 one-peer-per-pod rules made every row
//! as long as its highest atom (about 6 GB for the rows and their
//! copies, issue 21). So a set is stored as its sorted elements when it
//! has at most one element per [`SPARSE_WORDS`] words of the dense form,
//! and as words otherwise (`Bits::full`, the endpoint classes). Which
//! form a set takes is a function of its elements only, so the derived
//! equality and hash are those of the set; the order ([`Ord`]) is the
//! one the dense form always had — lexicographic over the words, low word
//! first — whatever the forms, so maps keyed by sets iterate as before.

use serde::{Serialize, Serializer};
use std::cmp::Ordering;

/// A set is sparse when its element count times this is at most the
/// number of words of its dense form.
const SPARSE_WORDS: usize = 4;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// Sorted, distinct elements; the empty set is always sparse.
    Sparse(Vec<u32>),
    /// Words, bit i of word i / 64, no trailing zero word, never empty.
    Dense(Vec<u64>),
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bits(Repr);

fn sparse_fits(len: usize, words: usize) -> bool {
    len * SPARSE_WORDS <= words
}

fn word_count(max: u32) -> usize {
    max as usize / 64 + 1
}

fn dense_contains(w: &[u64], i: usize) -> bool {
    w.get(i / 64).is_some_and(|x| x & (1 << (i % 64)) != 0)
}

impl Default for Bits {
    fn default() -> Bits {
        Bits::new()
    }
}

impl Bits {
    pub fn new() -> Bits {
        Bits(Repr::Sparse(Vec::new()))
    }

    /// The set `{0, 1, …, n-1}`.
    pub fn full(n: usize) -> Bits {
        let mut w = vec![u64::MAX; n / 64];
        if !n.is_multiple_of(64) {
            w.push((1u64 << (n % 64)) - 1);
        }
        Bits::from_words(w)
    }

    /// The canonical form of sorted distinct elements.
    fn from_sorted(v: Vec<u32>) -> Bits {
        match v.last() {
            None => Bits::new(),
            Some(&m) if sparse_fits(v.len(), word_count(m)) => Bits(Repr::Sparse(v)),
            Some(&m) => {
                let mut w = vec![0u64; word_count(m)];
                for i in v {
                    w[i as usize / 64] |= 1 << (i % 64);
                }
                Bits(Repr::Dense(w))
            }
        }
    }

    /// The canonical form of words (trailing zero words allowed).
    fn from_words(mut w: Vec<u64>) -> Bits {
        while w.last() == Some(&0) {
            w.pop();
        }
        let len: usize = w.iter().map(|x| x.count_ones() as usize).sum();
        if sparse_fits(len, w.len()) {
            Bits(Repr::Sparse(words_elements(&w).collect()))
        } else {
            Bits(Repr::Dense(w))
        }
    }

    pub fn insert(&mut self, i: usize) {
        let e = u32::try_from(i).expect("bit index fits in u32");
        match &mut self.0 {
            Repr::Sparse(v) => {
                if v.last().is_some_and(|&m| m < e) {
                    v.push(e);
                } else if let Err(p) = v.binary_search(&e) {
                    v.insert(p, e);
                } else {
                    return;
                }
                let m = *v.last().expect("not empty");
                if !sparse_fits(v.len(), word_count(m)) {
                    let v = std::mem::take(v);
                    *self = Bits::from_sorted(v);
                }
            }
            Repr::Dense(w) => {
                let wi = i / 64;
                if wi < w.len() {
                    // Same length, one more element: denser, stays dense.
                    w[wi] |= 1 << (i % 64);
                } else {
                    w.resize(wi + 1, 0);
                    w[wi] |= 1 << (i % 64);
                    let w = std::mem::take(w);
                    *self = Bits::from_words(w);
                }
            }
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        match &self.0 {
            Repr::Sparse(v) => u32::try_from(i).is_ok_and(|i| v.binary_search(&i).is_ok()),
            Repr::Dense(w) => dense_contains(w, i),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(&self.0, Repr::Sparse(v) if v.is_empty())
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Sparse(v) => v.len(),
            Repr::Dense(w) => w.iter().map(|x| x.count_ones() as usize).sum(),
        }
    }

    pub fn and(&self, o: &Bits) -> Bits {
        match (&self.0, &o.0) {
            (Repr::Sparse(v), _) => Bits::from_sorted(
                v.iter()
                    .copied()
                    .filter(|&i| o.contains(i as usize))
                    .collect(),
            ),
            (_, Repr::Sparse(v)) => Bits::from_sorted(
                v.iter()
                    .copied()
                    .filter(|&i| self.contains(i as usize))
                    .collect(),
            ),
            (Repr::Dense(a), Repr::Dense(b)) => {
                Bits::from_words(a.iter().zip(b).map(|(a, b)| a & b).collect())
            }
        }
    }

    pub fn and_not(&self, o: &Bits) -> Bits {
        match (&self.0, &o.0) {
            (Repr::Sparse(v), _) => Bits::from_sorted(
                v.iter()
                    .copied()
                    .filter(|&i| !o.contains(i as usize))
                    .collect(),
            ),
            (Repr::Dense(a), Repr::Sparse(v)) => {
                let mut w = a.clone();
                for &i in v {
                    if let Some(x) = w.get_mut(i as usize / 64) {
                        *x &= !(1 << (i % 64));
                    }
                }
                Bits::from_words(w)
            }
            (Repr::Dense(a), Repr::Dense(b)) => Bits::from_words(
                a.iter()
                    .enumerate()
                    .map(|(i, a)| a & !b.get(i).copied().unwrap_or(0))
                    .collect(),
            ),
        }
    }

    pub fn or(&self, o: &Bits) -> Bits {
        match (&self.0, &o.0) {
            (Repr::Sparse(a), Repr::Sparse(b)) => {
                let mut v = Vec::with_capacity(a.len() + b.len());
                let (mut i, mut j) = (0, 0);
                while i < a.len() && j < b.len() {
                    match a[i].cmp(&b[j]) {
                        Ordering::Less => {
                            v.push(a[i]);
                            i += 1;
                        }
                        Ordering::Greater => {
                            v.push(b[j]);
                            j += 1;
                        }
                        Ordering::Equal => {
                            v.push(a[i]);
                            i += 1;
                            j += 1;
                        }
                    }
                }
                v.extend_from_slice(&a[i..]);
                v.extend_from_slice(&b[j..]);
                Bits::from_sorted(v)
            }
            (Repr::Dense(d), Repr::Sparse(s)) | (Repr::Sparse(s), Repr::Dense(d)) => {
                let mut w = d.clone();
                if let Some(&m) = s.last() {
                    if w.len() < word_count(m) {
                        w.resize(word_count(m), 0);
                    }
                }
                for &i in s {
                    w[i as usize / 64] |= 1 << (i % 64);
                }
                Bits::from_words(w)
            }
            (Repr::Dense(a), Repr::Dense(b)) => {
                let n = a.len().max(b.len());
                Bits::from_words(
                    (0..n)
                        .map(|i| a.get(i).copied().unwrap_or(0) | b.get(i).copied().unwrap_or(0))
                        .collect(),
                )
            }
        }
    }

    /// True when every element of `self` is in `o`.
    pub fn is_subset(&self, o: &Bits) -> bool {
        match (&self.0, &o.0) {
            (Repr::Sparse(v), _) => v.iter().all(|&i| o.contains(i as usize)),
            (Repr::Dense(a), Repr::Dense(b)) => a
                .iter()
                .enumerate()
                .all(|(i, a)| a & !b.get(i).copied().unwrap_or(0) == 0),
            (Repr::Dense(_), Repr::Sparse(_)) => self.iter().all(|i| o.contains(i)),
        }
    }

    pub fn intersects(&self, o: &Bits) -> bool {
        match (&self.0, &o.0) {
            (Repr::Sparse(v), _) => v.iter().any(|&i| o.contains(i as usize)),
            (_, Repr::Sparse(v)) => v.iter().any(|&i| self.contains(i as usize)),
            (Repr::Dense(a), Repr::Dense(b)) => a.iter().zip(b).any(|(a, b)| a & b != 0),
        }
    }

    pub fn iter(&self) -> Iter<'_> {
        match &self.0 {
            Repr::Sparse(v) => Iter::Sparse(v.iter()),
            Repr::Dense(w) => Iter::Dense {
                words: w,
                at: 0,
                cur: w.first().copied().unwrap_or(0),
            },
        }
    }

    /// The non-zero words of the dense form, with their index, in order.
    fn nonzero_words(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let (sparse, dense): (&[u32], &[u64]) = match &self.0 {
            Repr::Sparse(v) => (v, &[]),
            Repr::Dense(w) => (&[], w),
        };
        let mut k = 0;
        let from_sparse = std::iter::from_fn(move || {
            let first = *sparse.get(k)?;
            let wi = first as usize / 64;
            let mut word = 0u64;
            while let Some(&i) = sparse.get(k).filter(|&&i| i as usize / 64 == wi) {
                word |= 1 << (i % 64);
                k += 1;
            }
            Some((wi, word))
        });
        let from_dense = dense.iter().copied().enumerate().filter(|&(_, w)| w != 0);
        from_sparse.chain(from_dense)
    }

    /// The dense form's words (bit i of word i / 64), without trailing
    /// zero words.
    pub fn to_words(&self) -> Vec<u64> {
        match &self.0 {
            Repr::Dense(w) => w.clone(),
            Repr::Sparse(v) => {
                let mut w = vec![0u64; v.last().map_or(0, |&m| word_count(m))];
                for &i in v {
                    w[i as usize / 64] |= 1 << (i % 64);
                }
                w
            }
        }
    }
}

fn words_elements(w: &[u64]) -> impl Iterator<Item = u32> + '_ {
    w.iter().enumerate().flat_map(|(wi, &x)| {
        let mut x = x;
        std::iter::from_fn(move || {
            if x == 0 {
                return None;
            }
            let t = x.trailing_zeros();
            x &= x - 1;
            Some(wi as u32 * 64 + t)
        })
    })
}

/// The elements of a [`Bits`], in increasing order.
pub enum Iter<'a> {
    Sparse(std::slice::Iter<'a, u32>),
    Dense {
        words: &'a [u64],
        at: usize,
        cur: u64,
    },
}

impl Iterator for Iter<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Iter::Sparse(it) => it.next().map(|&i| i as usize),
            Iter::Dense { words, at, cur } => loop {
                if *cur != 0 {
                    let t = cur.trailing_zeros() as usize;
                    *cur &= *cur - 1;
                    return Some(*at * 64 + t);
                }
                *at += 1;
                *cur = *words.get(*at)?;
            },
        }
    }
}

/// The order of the dense form (lexicographic over the words, low word
/// first, a prefix before its extensions), whatever the forms.
impl Ord for Bits {
    fn cmp(&self, o: &Bits) -> Ordering {
        if let (Repr::Dense(a), Repr::Dense(b)) = (&self.0, &o.0) {
            return a.cmp(b);
        }
        let (mut a, mut b) = (self.nonzero_words(), o.nonzero_words());
        loop {
            match (a.next(), b.next()) {
                (None, None) => return Ordering::Equal,
                // `self`'s remaining words are zero where `o` has one.
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                (Some((ia, wa)), Some((ib, wb))) => match ia.cmp(&ib) {
                    Ordering::Less => return Ordering::Greater,
                    Ordering::Greater => return Ordering::Less,
                    Ordering::Equal if wa != wb => return wa.cmp(&wb),
                    Ordering::Equal => {}
                },
            }
        }
    }
}

impl PartialOrd for Bits {
    fn partial_cmp(&self, o: &Bits) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl std::fmt::Debug for Bits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Bits").field(&self.to_words()).finish()
    }
}

/// As the words of the dense form (what it always serialized as).
impl Serialize for Bits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct("Bits", &self.to_words())
    }
}

impl FromIterator<usize> for Bits {
    fn from_iter<I: IntoIterator<Item = usize>>(it: I) -> Bits {
        let mut v: Vec<u32> = it
            .into_iter()
            .map(|i| u32::try_from(i).expect("bit index fits in u32"))
            .collect();
        v.sort_unstable();
        v.dedup();
        Bits::from_sorted(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_and_ops() {
        let a: Bits = [1, 70, 130].into_iter().collect();
        let b: Bits = [70].into_iter().collect();
        assert_eq!(a.and(&b), b);
        assert_eq!(a.and_not(&a), Bits::new());
        assert!(b.is_subset(&a));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![1, 70, 130]);
        assert_eq!(Bits::full(65).len(), 65);
        assert_eq!(Bits::full(64).len(), 64);
        assert_eq!(a.or(&b), a);
        assert!(a.intersects(&b));
    }

    /// A small deterministic generator of sets, sparse and dense.
    fn sets() -> Vec<Vec<usize>> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = vec![vec![], vec![0], vec![63], vec![64], vec![0, 1, 2, 3]];
        for _ in 0..300 {
            let span = [64, 200, 1000, 5000][(next() % 4) as usize];
            let n = (next() % 40) as usize;
            let mut v: Vec<usize> = (0..n).map(|_| (next() % span) as usize).collect();
            if next() % 3 == 0 {
                v.extend(0..(next() % 300) as usize);
            }
            out.push(v);
        }
        out
    }

    /// Every operation equals the same operation on a reference set (a
    /// `BTreeSet`), the order is the dense words' order, and equal sets
    /// have one form, whichever operations made them.
    #[test]
    fn both_forms_agree_with_a_reference() {
        use std::collections::BTreeSet;
        let sets = sets();
        let bits: Vec<Bits> = sets.iter().map(|v| v.iter().copied().collect()).collect();
        let refs: Vec<BTreeSet<usize>> = sets.iter().map(|v| v.iter().copied().collect()).collect();
        let by_insert = |r: &BTreeSet<usize>| {
            let mut b = Bits::new();
            for &i in r.iter().rev() {
                b.insert(i);
            }
            b
        };
        let make = |r: BTreeSet<usize>| -> Bits { r.into_iter().collect() };
        for (i, (a, ra)) in bits.iter().zip(&refs).enumerate() {
            assert_eq!(a.iter().collect::<BTreeSet<_>>(), *ra);
            assert_eq!(a.len(), ra.len());
            assert_eq!(*a, by_insert(ra));
            for (b, rb) in bits.iter().zip(&refs).skip(i).take(60) {
                assert_eq!(a.and(b), make(ra & rb));
                assert_eq!(a.or(b), make(ra | rb));
                assert_eq!(a.and_not(b), make(ra - rb));
                assert_eq!(b.and_not(a), make(rb - ra));
                assert_eq!(a.is_subset(b), ra.is_subset(rb));
                assert_eq!(b.is_subset(a), rb.is_subset(ra));
                assert_eq!(a.intersects(b), !ra.is_disjoint(rb));
                assert_eq!(a.cmp(b), a.to_words().cmp(&b.to_words()));
                assert_eq!(b.cmp(a), b.to_words().cmp(&a.to_words()));
            }
        }
        for r in &refs {
            for k in [0, 5, 64, 1000, 4999] {
                assert_eq!(bits_of(r).contains(k), r.contains(&k));
            }
        }
        fn bits_of(r: &std::collections::BTreeSet<usize>) -> Bits {
            r.iter().copied().collect()
        }
        // A row of two atoms far apart is sparse (the 100k-pod rows).
        let row: Bits = [0, 99_999].into_iter().collect();
        assert!(matches!(row.0, Repr::Sparse(_)));
        assert!(matches!(Bits::full(1000).0, Repr::Dense(_)));
    }
}
