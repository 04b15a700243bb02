//! A small growable bitset with a canonical form (no trailing zero words),
//! so that equal sets compare, order and hash equal. Used for atom
//! signatures (bit = atom) and for sets of classes (bit = class).

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Bits(Vec<u64>);

impl Bits {
    pub fn new() -> Bits {
        Bits(Vec::new())
    }

    /// The set `{0, 1, …, n-1}`.
    pub fn full(n: usize) -> Bits {
        let mut w = vec![u64::MAX; n / 64];
        if !n.is_multiple_of(64) {
            w.push((1u64 << (n % 64)) - 1);
        }
        let mut b = Bits(w);
        b.trim();
        b
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    pub fn insert(&mut self, i: usize) {
        let w = i / 64;
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << (i % 64);
    }

    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn and(&self, o: &Bits) -> Bits {
        let mut b = Bits(self.0.iter().zip(&o.0).map(|(a, b)| a & b).collect());
        b.trim();
        b
    }

    pub fn and_not(&self, o: &Bits) -> Bits {
        let mut b = Bits(
            self.0
                .iter()
                .enumerate()
                .map(|(i, a)| a & !o.0.get(i).copied().unwrap_or(0))
                .collect(),
        );
        b.trim();
        b
    }

    pub fn or(&self, o: &Bits) -> Bits {
        let n = self.0.len().max(o.0.len());
        Bits(
            (0..n)
                .map(|i| self.0.get(i).copied().unwrap_or(0) | o.0.get(i).copied().unwrap_or(0))
                .collect(),
        )
    }

    /// True when every element of `self` is in `o`.
    pub fn is_subset(&self, o: &Bits) -> bool {
        self.and_not(o).is_empty()
    }

    pub fn intersects(&self, o: &Bits) -> bool {
        self.0.iter().zip(&o.0).any(|(a, b)| a & b != 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let t = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + t)
            })
        })
    }

    /// The raw words, little-endian bit order (bit i of word i/64).
    pub fn words(&self) -> &[u64] {
        &self.0
    }
}

impl FromIterator<usize> for Bits {
    fn from_iter<I: IntoIterator<Item = usize>>(it: I) -> Bits {
        let mut b = Bits::new();
        for i in it {
            b.insert(i);
        }
        b
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
}
