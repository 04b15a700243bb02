//! The class rows of `weir_atoms` (`Fill::atom_rows`), kept and written
//! by their non-zero words.
//!
//! A row is as wide as the model has atoms (one bit each, then the class
//! tables' branch columns), and most of a row is zero: a class satisfies
//! a handful of atoms. With 100,000 one-peer-per-pod rules a row is 3,125
//! words and there are 100,000 rows: 1.25 GB as `Vec<Vec<u32>>`, and
//! 700 MB of manifest when each row was written as its full array of
//! words (issue 21), for rows of two set bits. So the manifest carries
//! the rows sparse (bundle format 4):
//!
//! ```json
//! "atom_rows": {"rows": [[[0, 2], [3125, 65535]], ...], "width": 3126}
//! ```
//!
//! `width` is every row's length in 32-bit words (the map's value size /
//! 4); a row is its non-zero words as `[index, word]`, indexes strictly
//! increasing and below `width`, no word zero. That form is the only one
//! a row has (one text per row: the bundle stays byte-identical for the
//! same source), and [`AtomRows::check`] refuses any other (the
//! contract's `validate`). A reader gets a row's full words back one row
//! at a time ([`AtomRows::row_bytes`], what the runtime writes into the
//! map).

use serde::{Deserialize, Serialize};

/// The map the rows fill (`ebpf::layout::map::ATOMS`): an array indexed
/// by class, each value one row.
pub const MAP: &str = "weir_atoms";

/// The map of the atom bits when they are not in the rows
/// (`Fill::atom_bits`, `ebpf::codegen::sparse_atoms`): a hash from
/// `(class, word index)` to each non-zero word.
pub const BITS_MAP: &str = "weir_atom_bits";

/// One row's non-zero words `(index, word)`, by index.
type Row = Vec<(u32, u32)>;

/// Class → its row of 32-bit words (see `Fill::atom_rows`): every row
/// `width` words, held and serialized by its non-zero words.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtomRows {
    /// Row → its non-zero words. (Fields in sorted key order: the
    /// manifest's rule.)
    rows: Vec<Row>,
    /// Words per row.
    width: u32,
}

impl AtomRows {
    /// No rows yet; every row `width` words.
    pub fn new(width: u32) -> AtomRows {
        AtomRows {
            rows: Vec::new(),
            width,
        }
    }

    /// Words per row.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Appends the row of the next class, given as its full words (as
    /// many as [`AtomRows::width`]).
    pub fn push(&mut self, words: &[u32]) {
        debug_assert_eq!(words.len(), self.width as usize);
        self.rows.push(
            words
                .iter()
                .enumerate()
                .filter(|(_, &w)| w != 0)
                .map(|(i, &w)| (i as u32, w))
                .collect(),
        );
    }

    /// Appends the row of the next class, given as its words by index:
    /// indexes below [`AtomRows::width`], in any order, each at most
    /// once; zero words are dropped.
    pub fn push_sparse(&mut self, mut words: Vec<(u32, u32)>) {
        words.retain(|&(_, w)| w != 0);
        words.sort_unstable();
        debug_assert!(words.windows(2).all(|p| p[0].0 < p[1].0));
        debug_assert!(words.last().is_none_or(|&(i, _)| i < self.width));
        self.rows.push(words);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Row `class`'s non-zero words `(index, word)`, by index (empty past
    /// the last row).
    pub fn nonzero(&self, class: usize) -> &[(u32, u32)] {
        self.rows.get(class).map_or(&[], Vec::as_slice)
    }

    /// Non-zero words over all rows (what a sparse kernel table of the
    /// rows would hold).
    pub fn nonzero_words(&self) -> usize {
        self.rows.iter().map(Vec::len).sum()
    }

    /// The rows in class order, each as its full words.
    pub fn iter(&self) -> impl Iterator<Item = Vec<u32>> + '_ {
        self.rows.iter().map(|r| {
            let mut w = vec![0u32; self.width as usize];
            for &(i, x) in r {
                w[i as usize] = x;
            }
            w
        })
    }

    /// Row `class` as the map value: `width` words in host byte order,
    /// written into `out` (cleared first). `None` past the last row.
    pub fn row_bytes(&self, class: usize, out: &mut Vec<u8>) -> Option<()> {
        let row = self.rows.get(class)?;
        out.clear();
        out.resize(self.width as usize * 4, 0);
        for &(i, x) in row {
            let at = i as usize * 4;
            out[at..at + 4].copy_from_slice(&x.to_ne_bytes());
        }
        Some(())
    }

    /// Is every row in the one form the writer writes: indexes strictly
    /// increasing and below `width`, no zero word? (A reader checks it
    /// before it writes a row: an index past the width would be written
    /// outside the row.)
    pub fn check(&self) -> Result<(), String> {
        for (c, row) in self.rows.iter().enumerate() {
            let mut next = 0u64;
            for (k, &(i, w)) in row.iter().enumerate() {
                let at = || format!("atom_rows.rows[{c}][{k}]");
                if u64::from(i) >= u64::from(self.width) {
                    return Err(format!(
                        "{} has word index {i}, but rows are {} words wide",
                        at(),
                        self.width
                    ));
                }
                if u64::from(i) < next {
                    return Err(format!(
                        "{} has word index {i}, not after the previous one",
                        at()
                    ));
                }
                if w == 0 {
                    return Err(format!(
                        "{} is a zero word (rows list only non-zero words)",
                        at()
                    ));
                }
                next = u64::from(i) + 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Vec<Vec<u32>> {
        vec![
            vec![0, 0, 5, 0, 0, 0],
            vec![0; 6],
            vec![1, 0, 0, 0, 0, 7],
            vec![u32::MAX, 1, 2, 3, 4, 5],
        ]
    }

    /// Sparse in the manifest, the same rows read back, whichever way
    /// they were pushed.
    #[test]
    fn serializes_sparse_and_reads_back_the_full_rows() {
        let mut rows = AtomRows::new(6);
        for r in full() {
            rows.push(&r);
        }
        let text = serde_json::to_string(&rows).unwrap();
        assert_eq!(
            text,
            r#"{"rows":[[[2,5]],[],[[0,1],[5,7]],[[0,4294967295],[1,1],[2,2],[3,3],[4,4],[5,5]]],"width":6}"#
        );
        let back: AtomRows = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rows);
        assert_eq!(back.iter().collect::<Vec<_>>(), full());
        assert!(back.check().is_ok());
        let mut bytes = Vec::new();
        back.row_bytes(2, &mut bytes).unwrap();
        let words: Vec<u32> = bytes
            .chunks(4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(words, full()[2]);
        assert!(back.row_bytes(4, &mut bytes).is_none());
        assert_eq!(back.nonzero_words(), 9);
        // Pushed by index, in another order, with a zero word: one form.
        let mut sparse = AtomRows::new(6);
        sparse.push_sparse(vec![(2, 5), (4, 0)]);
        sparse.push_sparse(vec![]);
        sparse.push_sparse(vec![(5, 7), (0, 1)]);
        sparse.push_sparse((0..6).map(|i| (i, full()[3][i as usize])).collect());
        assert_eq!(serde_json::to_string(&sparse).unwrap(), text);
    }

    /// Any other form is refused: an index past the width, out of
    /// order, repeated, a zero word, an unknown key.
    #[test]
    fn refuses_rows_not_in_the_one_form() {
        let check = |json: &str| serde_json::from_str::<AtomRows>(json).unwrap().check();
        assert!(check(r#"{"rows":[[[1,3],[2,1]]],"width":3}"#).is_ok());
        for (json, why) in [
            (r#"{"rows":[[[3,1]]],"width":3}"#, "rows are 3 words wide"),
            (r#"{"rows":[[[2,1],[1,1]]],"width":3}"#, "not after"),
            (r#"{"rows":[[[1,1],[1,2]]],"width":3}"#, "not after"),
            (
                r#"{"rows":[[],[[0,0]]],"width":3}"#,
                "rows[1][0] is a zero word",
            ),
        ] {
            let e = check(json).unwrap_err();
            assert!(e.contains(why), "{json}: {e}");
        }
        assert!(serde_json::from_str::<AtomRows>(r#"{"rows":[],"width":1,"x":1}"#).is_err());
        assert!(serde_json::from_str::<AtomRows>(r#"[[0,1]]"#).is_err());
    }
}
