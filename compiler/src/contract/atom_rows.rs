//! The class rows of `weir_atoms` (`Fill::atom_rows`), kept by their
//! non-zero words.
//!
//! A row is as wide as the model has atoms (one bit each, then the class
//! tables' branch columns), and most of a row is zero: a class satisfies
//! a handful of atoms. With 100,000 one-peer-per-pod rules a row is 3,125
//! words and there are 100,000 rows — 1.25 GB held as `Vec<Vec<u32>>`,
//! for rows of two set bits (issue 21). Here a row is its width and its
//! non-zero words; it serializes as the full array of words, so the
//! manifest is byte for byte what it was, and a reader gets the full row
//! back one at a time ([`AtomRows::iter`]).

use serde::de::Deserializer;
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// One row: its width in words and its non-zero words `(index, word)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Row {
    width: u32,
    nonzero: Vec<(u32, u32)>,
}

impl Row {
    fn of(words: &[u32]) -> Row {
        Row {
            width: u32::try_from(words.len()).expect("a row fits the map's value size"),
            nonzero: words
                .iter()
                .enumerate()
                .filter(|(_, &w)| w != 0)
                .map(|(i, &w)| (i as u32, w))
                .collect(),
        }
    }

    fn words(&self) -> Vec<u32> {
        let mut w = vec![0u32; self.width as usize];
        for &(i, x) in &self.nonzero {
            w[i as usize] = x;
        }
        w
    }
}

/// Class → its row of 32-bit words (see `Fill::atom_rows`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AtomRows(Vec<Row>);

impl AtomRows {
    /// Appends the row of the next class.
    pub fn push(&mut self, words: &[u32]) {
        self.0.push(Row::of(words));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The rows in class order, each as its full words.
    pub fn iter(&self) -> impl Iterator<Item = Vec<u32>> + '_ {
        self.0.iter().map(Row::words)
    }
}

impl From<Vec<Vec<u32>>> for AtomRows {
    fn from(rows: Vec<Vec<u32>>) -> AtomRows {
        AtomRows(rows.iter().map(|r| Row::of(r)).collect())
    }
}

/// A row's words, written without building them.
struct RowWords<'a>(&'a Row);

impl Serialize for RowWords<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.width as usize))?;
        let mut nz = self.0.nonzero.iter().peekable();
        for i in 0..self.0.width {
            let w = match nz.peek() {
                Some(&&(j, w)) if j == i => {
                    nz.next();
                    w
                }
                _ => 0,
            };
            seq.serialize_element(&w)?;
        }
        seq.end()
    }
}

/// As `Vec<Vec<u32>>` (the manifest's form).
impl Serialize for AtomRows {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for r in &self.0 {
            seq.serialize_element(&RowWords(r))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for AtomRows {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AtomRows, D::Error> {
        Vec::<Vec<u32>>::deserialize(d).map(AtomRows::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same JSON as the full rows, and the same rows read back.
    #[test]
    fn serializes_as_the_full_rows() {
        let full: Vec<Vec<u32>> = vec![
            vec![0, 0, 5, 0],
            vec![],
            vec![1, 0, 0, 0, 0, 7],
            vec![0; 3],
            vec![u32::MAX],
        ];
        let rows = AtomRows::from(full.clone());
        let text = serde_json::to_string(&rows).unwrap();
        assert_eq!(text, serde_json::to_string(&full).unwrap());
        assert_eq!(
            serde_json::to_string_pretty(&rows).unwrap(),
            serde_json::to_string_pretty(&full).unwrap()
        );
        let back: AtomRows = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rows);
        assert_eq!(back.iter().collect::<Vec<_>>(), full);
        assert_eq!(rows.len(), 5);
    }
}
