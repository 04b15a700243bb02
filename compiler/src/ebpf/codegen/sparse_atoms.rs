//! Atom bits in a hash keyed by `(class, word)` instead of the dense
//! class rows (issue 21).
//!
//! A class row (`weir_atoms`, an array indexed by class) holds one bit per
//! atom of the model. With 100,000 one-peer-per-pod rules there are
//! 100,000 atoms and 100,000 classes: every row is 12.5 KB, the array
//! (with its spare classes, preallocated) 1.26 GB of kernel memory, for
//! rows in which a class sets two bits. So when the dense bits would take
//! more than [`SPARSE_ATOMS_BYTES`] ([`AtomLayout::Auto`]), the bits move
//! to `weir_atom_bits`: a hash from `(class, word index)` (two `u32`,
//! host byte order) to the word, holding only the non-zero words
//! (`Fill::atom_bits`), and the rows keep only the class tables' columns
//! (no row at all when there are none).
//!
//! What a packet pays: an atom test is a lookup in that hash (a miss: the
//! bit is clear) instead of a load from the row already in r8 / r9; the
//! rows themselves (two array lookups per stage) are loaded only when
//! there are columns. Below the threshold nothing changes: the dense
//! row is cheaper per test, and the listing and maps are what they were.
//! [`AtomLayout::Sparse`] forces the hash (the differential tests run the
//! generated models through it).

use super::emit::Em;
use super::*;
use crate::ebpf::layout::ctx;
use crate::ebpf::{JmpCond, Label, Op, Reg::*, Size};

/// Dense atom bits (all classes, spares included) above this many bytes
/// are held sparse under [`AtomLayout::Auto`].
pub const SPARSE_ATOMS_BYTES: u64 = 64 << 20;

/// The map of the sparse atom bits.
pub const MAP: &str = crate::contract::atom_rows::BITS_MAP;

/// Where the atom bits live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtomLayout {
    /// Dense rows unless they would take more than [`SPARSE_ATOMS_BYTES`].
    #[default]
    Auto,
    /// Always in the class rows.
    Dense,
    /// Always in `weir_atom_bits`.
    Sparse,
}

impl AtomLayout {
    /// Whether a graph's atom bits go into `weir_atom_bits`.
    pub fn sparse(self, g: &Graph, atom_words: usize) -> bool {
        match self {
            AtomLayout::Dense => false,
            AtomLayout::Sparse => true,
            AtomLayout::Auto => {
                let classes = g.classes.len() as u64 + u64::from(SPARE_CLASSES);
                classes * atom_words as u64 * 4 > SPARSE_ATOMS_BYTES
            }
        }
    }
}

/// The map: one entry per non-zero word (at least one entry: the kernel
/// refuses an empty map).
pub fn map_def(nonzero_words: usize) -> MapDef {
    MapDef::new(MAP, MapType::Hash, 8, 4, (nonzero_words as u32).max(1))
}

/// The atom test on the sparse bits: jump to `t` when the class in the
/// context at `class_off` has atom `a`, else fall through. The key is
/// built at fp-8 (class, word); r0–r5 are clobbered, r6–r9 kept.
pub fn emit_test(em: &mut Em, class_off: i16, a: u32, t: Label) {
    let clear = em.label("atom_clear");
    em.push(Op::load(Size::U32, R1, R6, class_off));
    em.push(Op::store(Size::U32, R10, -8, R1));
    em.push(Op::store(Size::U32, R10, -4, (a / 32) as i32));
    em.lookup(MAP, -8);
    em.jmp(JmpCond::Eq, R0, 0, clear);
    em.push(Op::load(Size::U32, R1, R0, 0));
    em.jmp32(JmpCond::Set, R1, (1u32 << (a % 32)) as i32, t);
    em.bind(clear);
}

/// The context offset of a test's class.
pub fn class_of(cond: &Cond) -> i16 {
    match cond {
        Cond::SrcAtom(_) => ctx::SRC_CLASS,
        _ => ctx::DST_CLASS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::model_of;

    const SRC: &str = r#"
endpoint a { labels { app: "a" } addr 10.0.0.1 }
endpoint b { labels { app: "b" } addr 10.0.0.2 }
endpoint c { labels { app: "c" } addr 10.0.0.3 }
policy b-in {
  applies to app == "b"
  ingress { allow tcp 80 from app == "a" }
}
"#;

    /// Forced sparse: no class rows (no table columns here), the bits in
    /// `weir_atom_bits`, one entry per non-zero word, tested with a
    /// lookup; `Auto` on a small model keeps the dense rows.
    #[test]
    fn sparse_bits_replace_the_rows_and_auto_keeps_small_models_dense() {
        let model = model_of(SRC);
        let g = crate::graph::build(&model);
        let gen = |atoms| {
            generate(
                &model,
                &g,
                &Options {
                    atoms,
                    ..Options::default()
                },
            )
            .unwrap()
        };
        let dense = gen(AtomLayout::Auto);
        let names = |o: &EbpfOutput| -> Vec<String> {
            o.manifest.maps.iter().map(|m| m.name.clone()).collect()
        };
        assert!(names(&dense).contains(&layout::map::ATOMS.to_string()));
        assert!(!names(&dense).contains(&MAP.to_string()));
        assert!(dense.manifest.fill.atom_bits.is_empty());
        let forced = gen(AtomLayout::Dense);
        assert_eq!(
            (&dense.object, &dense.manifest, &dense.listing),
            (&forced.object, &forced.manifest, &forced.listing)
        );

        let sparse = gen(AtomLayout::Sparse);
        assert!(!names(&sparse).contains(&layout::map::ATOMS.to_string()));
        let m = sparse.manifest.maps.iter().find(|m| m.name == MAP).unwrap();
        let bits = &sparse.manifest.fill.atom_bits;
        assert_eq!(bits.len(), g.classes.len());
        assert_eq!(m.max_entries as usize, bits.nonzero_words());
        assert_eq!(
            (m.key_size, m.value_size, m.filled),
            (8, 4, m.max_entries as u64)
        );
        // The same bits as the dense rows.
        let rows: Vec<Vec<u32>> = dense.manifest.fill.atom_rows.iter().collect();
        for (c, full) in bits.iter().enumerate() {
            assert_eq!(full[..], rows[c][..full.len()]);
        }
        assert!(sparse.listing.contains("weir_atom_bits"));
    }
}
