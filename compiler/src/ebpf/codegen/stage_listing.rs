//! Where the stages' listings go as the stages are assembled.
//!
//! A stage's listing text (`weir.asm`) is written as soon as the stage is
//! assembled and within its size, and freed: the stages' texts are never
//! held together. They used to be, until the stage split was accepted,
//! because a stage that comes out over its budget makes the whole split
//! be redone tighter ([`super::plan::split_stages`]): 195 MB of text for
//! 100,000 one-peer-per-pod rules, ~280 MiB of the compile's peak with
//! the strings' growth slack (issue 21). Now a rejected split
//! [`ListingOut::restart`]s the listing instead: its stages' texts were
//! written, and are dropped from the file; the accepted split's are
//! written once, in stage order, the same bytes as before.

use std::io::{self, Write};

use super::stages::Stage;

/// A listing that a rejected stage split can start again: the writer
/// forgets everything written so far (a bundle file, or memory).
pub trait ListingOut: Write {
    /// Drops what was written; the next write starts the file again.
    fn restart(&mut self) -> io::Result<()>;
}

impl ListingOut for Vec<u8> {
    fn restart(&mut self) -> io::Result<()> {
        self.clear();
        Ok(())
    }
}

impl ListingOut for crate::bundle::FileOut<'_> {
    fn restart(&mut self) -> io::Result<()> {
        crate::bundle::FileOut::restart(self)
    }
}

/// The stages' listings being written: the first write error is kept
/// (and reported by [`super::Ready::write`]), later writes are skipped.
pub struct StageListing<'w> {
    out: &'w mut dyn ListingOut,
    error: Option<io::Error>,
}

impl<'w> StageListing<'w> {
    pub fn new(out: &'w mut dyn ListingOut) -> Self {
        StageListing { out, error: None }
    }

    /// Writes stage `k`'s listing, headed by its program line, and frees
    /// the stage's text (its code stays).
    pub fn stage(&mut self, k: usize, s: &mut Stage) {
        if self.error.is_some() {
            return;
        }
        let out = &mut *self.out;
        let r = (|| {
            write!(out, "; program {} (section classifier", s.name)?;
            if k > 0 {
                write!(out, ", weir_jmp slot {k}")?;
            }
            writeln!(out, "), {} insns", s.code.len())?;
            s.code.write_listing(out)?;
            out.write_all(b"\n")
        })();
        self.error = r.err();
    }

    /// A rejected split: what its stages wrote is dropped.
    pub fn restart(&mut self) {
        if self.error.is_none() {
            self.error = self.out.restart().err();
        }
    }

    /// The first write error, if any.
    pub fn finish(self) -> io::Result<()> {
        self.error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::{Asm, Op, Reg};

    fn stage(name: &str, insns: usize) -> Stage {
        let mut a = Asm::new();
        for _ in 0..insns - 1 {
            a.push(Op::mov64(Reg::R0, 1));
        }
        a.push(Op::Exit);
        Stage {
            name: name.into(),
            code: a.assemble().unwrap(),
            blocks: 1,
            entries: 0,
        }
    }

    /// A split redone tighter: the listing holds only the accepted
    /// split's stages, each once, and their texts are freed as written.
    #[test]
    fn ebpf_a_restarted_listing_holds_the_last_split_only() {
        let mut out: Vec<u8> = b"earlier".to_vec();
        let mut l = StageListing::new(&mut out);
        l.restart();
        let mut first = stage("weir_main", 3);
        l.stage(0, &mut first);
        assert_eq!(first.code.listing(), "", "the text is freed");
        assert_eq!(first.code.len(), 3, "the code stays");
        l.stage(1, &mut stage("weir_s1", 2));
        l.restart();
        let (mut a, mut b) = (stage("weir_main", 2), stage("weir_s1", 4));
        let want = format!(
            "; program weir_main (section classifier), 2 insns\n{}\n\
             ; program weir_s1 (section classifier, weir_jmp slot 1), 4 insns\n{}\n",
            a.code.listing(),
            b.code.listing()
        );
        l.stage(0, &mut a);
        l.stage(1, &mut b);
        l.finish().unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}
