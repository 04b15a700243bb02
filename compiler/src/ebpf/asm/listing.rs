//! The listing of an assembled program (`weir.asm` in the bundle): one
//! line per instruction with its slot, its text and its comment or
//! origin, labels on lines of their own.
//!
//! Written in place into one buffer, never line by line through
//! temporaries: the listing of 100,000 one-peer rules is 1.4 million
//! instructions (195 MB), and the code generator writes every stage's
//! listing into one buffer sized from [`Assembled::listing_len`],
//! releasing each stage's lines as they are written
//! ([`Assembled::take_listing_into`]; issue 21).

use super::{Assembled, Entry};
use crate::ebpf::insn::Origin;
use std::fmt::Write as _;

impl Assembled {
    /// A readable listing, one line per instruction (labels on their own
    /// line), e.g. `  12: r1 = *(u32 *)(r6 + 4)    ; rule 3`. The comment
    /// column shows the instruction's comment, or `origin N` when it has
    /// only an origin. Deterministic: suitable for snapshot tests.
    pub fn listing(&self) -> String {
        let mut s = String::with_capacity(self.listing_len());
        for e in &self.entries {
            write_entry(&mut s, e);
        }
        s
    }

    /// The length in bytes of [`Assembled::listing`], without building it
    /// (to size one buffer for many programs' listings).
    pub fn listing_len(&self) -> usize {
        self.entries.iter().map(entry_len).sum()
    }

    /// Appends [`Assembled::listing`] to `out` and frees the listing's
    /// lines: this program has no listing afterwards (its slots, origins
    /// and relocations stay). The lines of a stage go as its text is
    /// written, so they are never held beside the whole text.
    pub fn take_listing_into(&mut self, out: &mut String) {
        for e in std::mem::take(&mut self.entries) {
            write_entry(out, &e);
        }
    }
}

/// Where the comment column of a listing line starts (characters).
const COMMENT_COLUMN: usize = 44;

/// One listing line (see [`Assembled::listing`]), written in place: what
/// `format!("{slot:>4}: {text}")` makes, padded to [`COMMENT_COLUMN`]
/// characters and followed by `; NOTE` when there is a note.
fn write_entry(s: &mut String, e: &Entry) {
    match e {
        Entry::Label(name) => {
            s.push_str(name);
            s.push_str(":\n");
        }
        Entry::Insn {
            slot,
            text,
            origin,
            comment,
        } => {
            let start = s.len();
            let _ = write!(s, "{slot:>4}: ");
            s.push_str(text);
            if comment.is_some() || *origin != Origin::NONE {
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
}

/// The bytes [`write_entry`] writes for `e`.
fn entry_len(e: &Entry) -> usize {
    fn digits(mut n: u64) -> usize {
        let mut d = 1;
        while n >= 10 {
            n /= 10;
            d += 1;
        }
        d
    }
    match e {
        Entry::Label(name) => name.len() + 2,
        Entry::Insn {
            slot,
            text,
            origin,
            comment,
        } => {
            let slot = digits(*slot as u64).max(4);
            let line = slot + 2 + text.len();
            let note = match comment {
                Some(c) => c.len(),
                None if *origin != Origin::NONE => 7 + digits(u64::from(origin.0)),
                None => return line + 1,
            };
            let width = slot + 2 + text.chars().count();
            line + COMMENT_COLUMN.saturating_sub(width) + 2 + note + 1
        }
    }
}

#[cfg(test)]
mod tests {
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
}
