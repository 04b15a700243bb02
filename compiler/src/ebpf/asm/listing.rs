//! The listing of an assembled program (`weir.asm` in the bundle): one
//! line per instruction with its slot, its text and its comment or
//! origin, labels on lines of their own.
//!
//! Written as the program is encoded, into one text per program
//! ([`Listing::Text`]), never kept line by line: the listing of 100,000
//! one-peer rules is 2.4 million instructions (195 MB), and a value per
//! line (its slot, text and comment) cost twice the text again. The code
//! generator writes each stage's text into the bundle's file as soon as
//! the stage is assembled, releasing it ([`Assembled::write_listing`],
//! `codegen/stage_listing.rs`; issue 21).

use super::{Assembled, Listing};
use crate::ebpf::insn::Origin;
use std::fmt::Write as _;

impl Assembled {
    /// A readable listing, one line per instruction (labels on their own
    /// line), e.g. `  12: r1 = *(u32 *)(r6 + 4)    ; rule 3`. The comment
    /// column shows the instruction's comment, or `origin N` when it has
    /// only an origin. Deterministic: suitable for snapshot tests.
    pub fn listing(&self) -> String {
        self.listing.text().to_string()
    }

    /// The length in bytes of [`Assembled::listing`], without copying it
    /// (to size one buffer for many programs' listings).
    pub fn listing_len(&self) -> usize {
        self.listing.text().len()
    }

    /// Appends [`Assembled::listing`] to `out` and frees this program's
    /// copy: it has no listing afterwards (its slots, origins and
    /// relocations stay). A stage's text goes as it is written, so the
    /// stages' texts are never all held beside the whole text.
    pub fn take_listing_into(&mut self, out: &mut String) {
        out.push_str(std::mem::take(&mut self.listing).text());
    }

    /// [`Assembled::take_listing_into`] for a writer: writes the listing
    /// to `out` (a bundle file as it is made) and frees this program's
    /// copy.
    pub fn write_listing(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(std::mem::take(&mut self.listing).text().as_bytes())
    }
}

impl Listing {
    fn text(&self) -> &str {
        match self {
            Listing::Text(s) => s,
            Listing::Lines(_) => "",
        }
    }

    /// A label's line.
    pub(super) fn label(&mut self, name: &str) {
        if let Listing::Text(s) = self {
            s.push_str(name);
            s.push_str(":\n");
        }
    }

    /// An instruction's line (see [`Assembled::listing`]): what
    /// `format!("{slot:>4}: {text}")` makes, padded to [`COMMENT_COLUMN`]
    /// characters and followed by `; NOTE` when there is a note.
    pub(super) fn line(&mut self, slot: usize, text: &str, origin: Origin, comment: Option<&str>) {
        let s = match self {
            Listing::Text(s) => s,
            Listing::Lines(lines) => return lines.push((slot, text.to_string())),
        };
        let start = s.len();
        let _ = write!(s, "{slot:>4}: ");
        s.push_str(text);
        if comment.is_some() || origin != Origin::NONE {
            let width = s[start..].chars().count();
            for _ in width..COMMENT_COLUMN {
                s.push(' ');
            }
            s.push_str("; ");
            match comment {
                Some(c) => s.push_str(c),
                None => {
                    let _ = write!(s, "origin {}", origin.0);
                }
            }
        }
        s.push('\n');
    }
}

/// An instruction's text without the ` <label>` a jump's text ends with
/// (`if r4 < r5 goto +1 <far>` → `if r4 < r5 goto +1`): the relaxed far
/// jump's inner hops are listed without their private labels. Only the
/// last ` <` counts, and only when the text ends in `>`: a comparison's
/// own `<` is part of the instruction.
pub(super) fn without_label(text: &str) -> &str {
    match text.rsplit_once(" <") {
        Some((head, _)) if text.ends_with('>') => head,
        _ => text,
    }
}

/// Where the comment column of a listing line starts (characters).
const COMMENT_COLUMN: usize = 44;

#[cfg(test)]
mod tests {
    use super::without_label;
    use crate::ebpf::asm::Asm;
    use crate::ebpf::insn::*;

    #[test]
    fn ebpf_listing_len_and_taken_listing_match_the_listing() {
        let mut a = Asm::new();
        let out = a.new_label("out");
        a.set_origin(Origin(3), Some("rule 3 (ünïcode comment)"));
        a.push(Op::mov64(Reg::R6, Reg::R1));
        a.set_origin(Origin(12345), None);
        a.push(Op::jmp(JmpCond::Eq, Reg::R6, 0, out));
        a.set_origin(Origin::NONE, None);
        a.push(Op::mov64(Reg::R0, 2));
        a.bind(out);
        a.push(Op::Exit);
        let mut p = a.assemble().unwrap();
        let listing = p.listing();
        assert_eq!(p.listing_len(), listing.len());
        assert!(listing.contains("; origin 12345\n"), "{listing}");
        let mut taken = String::from("head\n");
        p.take_listing_into(&mut taken);
        assert_eq!(taken, format!("head\n{listing}"));
        assert_eq!(p.listing(), "");
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn ebpf_listing_label_is_cut_but_not_a_comparison() {
        assert_eq!(
            without_label("if r4 < r5 goto +1 <far>"),
            "if r4 < r5 goto +1"
        );
        assert_eq!(
            without_label("if r4 s< 3 goto +2 <gotol>"),
            "if r4 s< 3 goto +2"
        );
        assert_eq!(without_label("goto +1 <far>"), "goto +1");
        assert_eq!(without_label("r1 = r2"), "r1 = r2");
        // A comparison without a label is left whole (before: `if r4`).
        assert_eq!(without_label("if r4 < r5 goto +1"), "if r4 < r5 goto +1");
    }
}
