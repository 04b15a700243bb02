//! BPF assembler: instructions as plain values, symbolic labels, provenance.
//!
//! Build a program with [`Asm`]: create labels with [`Asm::new_label`], place
//! them with [`Asm::bind`], push [`Op`]s (each gets the current [`Origin`] and
//! comment, see [`Asm::set_origin`]) and call [`Asm::assemble`]. The result,
//! [`Assembled`], holds the raw 8-byte instruction slots, the map relocations
//! (slot index + map name, for the ELF writer) and a deterministic
//! [`Assembled::listing`].
//!
//! Jump offsets are 16-bit. By default a jump whose target is further than
//! `i16` slots away is a compile error ([`AsmError::JumpOutOfRange`]). With
//! [`AsmOptions::long_jumps`] (kernel >= 6.4) a far `ja` is encoded as the
//! 32-bit `gotol` (`BPF_JMP32 | BPF_JA`), and a far conditional jump is
//! relaxed into the inverted condition jumping over a `gotol` (`jset`,
//! which has no inverse, becomes `jset +1; ja +1; gotol`). Relaxation only
//! grows code, so label positions are recomputed until no further jump
//! goes out of range. "Out of range" then means beyond [`FAR_JUMP`], half
//! the `i16` range: the verifier inserts instructions when it inlines map
//! lookups and rewrites helper calls, and refuses a program whose 16-bit
//! jump offsets no longer fit afterwards ("cannot be patched due to 16-bit
//! range"), so short jumps keep that much room.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use super::insn::*;

mod listing;

#[derive(Clone, Debug)]
enum Item {
    Insn(Insn),
    Bind(Label),
}

/// With [`AsmOptions::long_jumps`], jumps further than this are relaxed
/// (see the module docs).
pub const FAR_JUMP: i64 = 16_383;

/// Assembly options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsmOptions {
    /// Encode a jump whose offset does not fit `i16` with `gotol`
    /// (`BPF_JMP32 | BPF_JA`, 32-bit offset in `imm`; kernel >= 6.4, cpu
    /// v4): a `ja` becomes `gotol`, a conditional jump an inverted short
    /// jump over a `gotol`. Off by default: such a jump is then an error.
    pub long_jumps: bool,
}

/// Assembly errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AsmError {
    /// A jump targets a label that was never bound.
    UnboundLabel { label: String },
    /// A label was bound twice.
    LabelBoundTwice { label: String },
    /// A label value that this [`Asm`] did not create.
    ForeignLabel { id: u32 },
    /// A jump's offset does not fit the instruction (`i16`, or `i32` for
    /// `gotol`). `slot` is the index of the jump instruction.
    JumpOutOfRange {
        label: String,
        slot: usize,
        offset: i64,
    },
    /// `Endian` with a width other than 16, 32 or 64.
    BadEndianWidth { bits: u8, slot: usize },
}

impl fmt::Display for AsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsmError::UnboundLabel { label } => write!(f, "jump to unbound label `{label}`"),
            AsmError::LabelBoundTwice { label } => write!(f, "label `{label}` bound twice"),
            AsmError::ForeignLabel { id } => {
                write!(f, "label #{id} does not belong to this assembler")
            }
            AsmError::JumpOutOfRange {
                label,
                slot,
                offset,
            } => write!(
                f,
                "jump at instruction {slot} to label `{label}` needs offset {offset}, \
                 which does not fit a BPF jump (-32768..=32767); split the program \
                 (tail call) or restructure the decision graph"
            ),
            AsmError::BadEndianWidth { bits, slot } => {
                write!(
                    f,
                    "byte swap of {bits} bits at instruction {slot} (need 16, 32 or 64)"
                )
            }
        }
    }
}

impl std::error::Error for AsmError {}

/// Program builder.
#[derive(Clone, Debug, Default)]
pub struct Asm {
    items: Vec<Item>,
    labels: Vec<String>,
    label_names: HashSet<String>,
    label_suffix: HashMap<String, usize>,
    origin: Origin,
    comment: Option<Arc<str>>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    /// Creates a new, unbound label. `name` is for listings and errors; a
    /// name already used gets a `.N` suffix so names stay unique.
    pub fn new_label(&mut self, name: &str) -> Label {
        let mut unique = name.to_string();
        // The next suffix to try per name, so that many labels of one name
        // cost one probe each rather than one per earlier label.
        let n = self.label_suffix.entry(name.to_string()).or_insert(1);
        while self.label_names.contains(&unique) {
            unique = format!("{name}.{n}");
            *n += 1;
        }
        self.label_names.insert(unique.clone());
        self.labels.push(unique);
        Label((self.labels.len() - 1) as u32)
    }

    /// The (unique) name of a label.
    pub fn label_name(&self, label: Label) -> Option<&str> {
        self.labels.get(label.0 as usize).map(String::as_str)
    }

    /// Places `label` before the next instruction pushed.
    pub fn bind(&mut self, label: Label) {
        self.items.push(Item::Bind(label));
    }

    /// Sets the origin and comment attached to subsequently pushed operations.
    pub fn set_origin(&mut self, origin: Origin, comment: Option<&str>) {
        self.origin = origin;
        self.comment = comment.map(Arc::from);
    }

    /// Appends `op` with the current origin and comment.
    pub fn push(&mut self, op: Op) {
        let insn = Insn {
            op,
            origin: self.origin,
            comment: self.comment.clone(),
        };
        self.items.push(Item::Insn(insn));
    }

    /// How many items are pushed so far (a mark for [`Asm::jumps_since`]).
    pub fn mark(&self) -> usize {
        self.items.len()
    }

    /// The conditional jumps pushed since `mark`.
    pub fn jumps_since(&self, mark: usize) -> usize {
        (self.items[mark..].iter())
            .filter(|i| {
                matches!(
                    i,
                    Item::Insn(Insn {
                        op: Op::Jump { .. },
                        ..
                    })
                )
            })
            .count()
    }

    /// Appends a fully specified instruction (its own origin and comment).
    pub fn push_insn(&mut self, insn: Insn) {
        self.items.push(Item::Insn(insn));
    }

    /// Number of slots pushed so far.
    pub fn slot_count(&self) -> usize {
        self.items
            .iter()
            .map(|i| match i {
                Item::Insn(insn) => insn.op.slots(),
                Item::Bind(_) => 0,
            })
            .sum()
    }

    /// Resolves labels and encodes. Same as
    /// `assemble_with(AsmOptions::default())`.
    pub fn assemble(&self) -> Result<Assembled, AsmError> {
        self.assemble_with(AsmOptions::default())
    }

    /// Resolves labels and encodes.
    pub fn assemble_with(&self, opts: AsmOptions) -> Result<Assembled, AsmError> {
        // Pass 1: label positions, relaxing far conditional jumps (which
        // then take 2 or 3 slots) until every offset fits.
        let mut far = vec![false; self.items.len()];
        let pos = loop {
            let pos = self.positions(&far)?;
            if !opts.long_jumps {
                break pos;
            }
            let mut slot = 0usize;
            let mut grew = false;
            for (i, item) in self.items.iter().enumerate() {
                let Item::Insn(insn) = item else { continue };
                if let Op::Jump { target, .. } = insn.op {
                    if !far[i] {
                        let (offset, _) = self.target(target, &pos, slot)?;
                        if offset.abs() > FAR_JUMP {
                            far[i] = true;
                            grew = true;
                        }
                    }
                }
                slot += slots_of(insn, far[i]);
            }
            if !grew {
                break pos;
            }
        };

        // Pass 2: encode.
        self.encode_all(&far, &pos, opts, Listing::default())
    }

    /// Pass 2 of [`Asm::assemble_with`], the listing written to `listing`.
    fn encode_all(
        &self,
        far: &[bool],
        pos: &[Option<usize>],
        opts: AsmOptions,
        listing: Listing,
    ) -> Result<Assembled, AsmError> {
        let mut out = Assembled {
            listing,
            ..Assembled::default()
        };
        for (i, item) in self.items.iter().enumerate() {
            match item {
                Item::Bind(l) => out.listing.label(&self.labels[l.0 as usize]),
                Item::Insn(insn) if far[i] => self.encode_far(insn, pos, &mut out)?,
                Item::Insn(insn) => self.encode(insn, pos, opts, &mut out)?,
            }
        }
        Ok(out)
    }

    /// Label positions when the jumps marked `far` are relaxed.
    fn positions(&self, far: &[bool]) -> Result<Vec<Option<usize>>, AsmError> {
        let mut pos: Vec<Option<usize>> = vec![None; self.labels.len()];
        let mut slot = 0usize;
        for (i, item) in self.items.iter().enumerate() {
            match item {
                Item::Bind(l) => {
                    let p = pos
                        .get_mut(l.0 as usize)
                        .ok_or(AsmError::ForeignLabel { id: l.0 })?;
                    if p.is_some() {
                        return Err(AsmError::LabelBoundTwice {
                            label: self.labels[l.0 as usize].clone(),
                        });
                    }
                    *p = Some(slot);
                }
                Item::Insn(insn) => slot += slots_of(insn, far[i]),
            }
        }
        Ok(pos)
    }

    /// A relaxed conditional jump: the inverted condition skips a `gotol`
    /// to the target (for `jset`: `jset +1; ja +1; gotol`).
    fn encode_far(
        &self,
        insn: &Insn,
        pos: &[Option<usize>],
        out: &mut Assembled,
    ) -> Result<(), AsmError> {
        let Op::Jump {
            width,
            cond,
            dst,
            src,
            target,
        } = insn.op
        else {
            unreachable!("only conditional jumps are relaxed")
        };
        let gotol_slot = out.slots.len() + if cond.negate().is_some() { 1 } else { 2 };
        let (offset, name) = self.target(target, pos, gotol_slot)?;
        let imm = i32::try_from(offset).map_err(|_| AsmError::JumpOutOfRange {
            label: name.to_string(),
            slot: gotol_slot,
            offset,
        })?;
        let name = name.to_string();
        let mut short = Asm::new();
        let over = short.new_label("far");
        let to = short.new_label("target");
        match cond.negate() {
            Some(inv) => short.push(Op::Jump {
                width,
                cond: inv,
                dst,
                src,
                target: over,
            }),
            None => {
                let jump = short.new_label("gotol");
                short.push(Op::Jump {
                    width,
                    cond,
                    dst,
                    src,
                    target: jump,
                });
                short.push(Op::Ja { target: over });
                short.bind(jump);
            }
        }
        short.push(Op::Ja { target: to });
        short.bind(over);
        short.bind(to);
        // The sequence's own lines, to rewrite (short sequences never
        // relax, so pass 1 is not needed).
        let short_pos = short.positions(&vec![false; short.items.len()])?;
        let mut part = short.encode_all(
            &vec![false; short.items.len()],
            &short_pos,
            AsmOptions::default(),
            Listing::Lines(Vec::new()),
        )?;
        // The `gotol` (last slot) with the real offset.
        let last = part.slots.len() - 1;
        part.slots[last] = raw(code::JMP32 | code::JA, Reg::R0, Reg::R0, 0, imm);
        let Listing::Lines(lines) = std::mem::take(&mut part.listing) else {
            unreachable!("encoded with Listing::Lines")
        };
        for (slot, text) in lines {
            let text = if slot == last {
                format!("gotol {} <{name}>", signed(offset))
            } else {
                // The short hops inside the sequence, without their label
                // names (the trailing ` <name>`; a condition's own `<`
                // stays: `if r4 < r5 goto +1`).
                listing::without_label(&text).to_string()
            };
            out.listing.line(
                out.slots.len() + slot,
                &text,
                insn.origin,
                insn.comment.as_deref(),
            );
        }
        for w in part.slots {
            out.slots.push(w);
            out.origins.push(insn.origin);
        }
        Ok(())
    }

    fn target(
        &self,
        label: Label,
        pos: &[Option<usize>],
        slot: usize,
    ) -> Result<(i64, &str), AsmError> {
        let name = self
            .labels
            .get(label.0 as usize)
            .ok_or(AsmError::ForeignLabel { id: label.0 })?;
        let target = pos[label.0 as usize].ok_or_else(|| AsmError::UnboundLabel {
            label: name.clone(),
        })?;
        Ok((target as i64 - (slot as i64 + 1), name))
    }

    fn encode(
        &self,
        insn: &Insn,
        pos: &[Option<usize>],
        opts: AsmOptions,
        out: &mut Assembled,
    ) -> Result<(), AsmError> {
        use code::*;
        let slot = out.slots.len();
        let short = |offset: i64, name: &str| -> Result<i16, AsmError> {
            i16::try_from(offset).map_err(|_| AsmError::JumpOutOfRange {
                label: name.to_string(),
                slot,
                offset,
            })
        };
        let (text, words): (String, Vec<u64>) = match &insn.op {
            Op::Alu {
                width,
                op,
                dst,
                src,
            } => {
                let class = if *width == Width::W64 { ALU64 } else { ALU };
                let r = |x: Reg| reg_name(*width, x);
                match src {
                    Operand::Imm(i) => (
                        format!("{} {} {}", r(*dst), op.symbol(), i),
                        vec![raw(class | op.code() | K, *dst, Reg::R0, 0, *i)],
                    ),
                    Operand::Reg(s) => (
                        format!("{} {} {}", r(*dst), op.symbol(), r(*s)),
                        vec![raw(class | op.code() | X, *dst, *s, 0, 0)],
                    ),
                }
            }
            Op::Neg { width, dst } => {
                let class = if *width == Width::W64 { ALU64 } else { ALU };
                let d = reg_name(*width, *dst);
                (
                    format!("{d} = -{d}"),
                    vec![raw(class | NEG | K, *dst, Reg::R0, 0, 0)],
                )
            }
            Op::Endian { order, bits, dst } => {
                if !matches!(bits, 16 | 32 | 64) {
                    return Err(AsmError::BadEndianWidth { bits: *bits, slot });
                }
                let (src_bit, name) = match order {
                    ByteOrder::Be => (X, "be"),
                    ByteOrder::Le => (K, "le"),
                };
                let d = reg_name(Width::W64, *dst);
                (
                    format!("{d} = {name}{bits} {d}"),
                    vec![raw(ALU | END | src_bit, *dst, Reg::R0, 0, i32::from(*bits))],
                )
            }
            Op::Load {
                size,
                dst,
                base,
                off,
            } => (
                format!(
                    "{} = *({} *)({})",
                    reg_name(Width::W64, *dst),
                    size.c_name(),
                    addr(*base, *off)
                ),
                vec![raw(LDX | MEM | size.code(), *dst, *base, *off, 0)],
            ),
            Op::Store {
                size,
                base,
                off,
                src,
            } => {
                let lhs = format!("*({} *)({})", size.c_name(), addr(*base, *off));
                match src {
                    Operand::Imm(i) => (
                        format!("{lhs} = {i}"),
                        vec![raw(ST | MEM | size.code(), *base, Reg::R0, *off, *i)],
                    ),
                    Operand::Reg(s) => (
                        format!("{lhs} = {}", reg_name(Width::W64, *s)),
                        vec![raw(STX | MEM | size.code(), *base, *s, *off, 0)],
                    ),
                }
            }
            Op::AtomicAdd {
                size,
                base,
                off,
                src,
            } => (
                format!(
                    "lock *({} *)({}) += {}",
                    size.c_name(),
                    addr(*base, *off),
                    reg_name(Width::W64, *src)
                ),
                // imm = BPF_ADD (0x00), no BPF_FETCH.
                vec![raw(STX | ATOMIC | size.code(), *base, *src, *off, 0)],
            ),
            Op::LoadImm64 { dst, imm } => (
                format!("{} = {imm} ll", reg_name(Width::W64, *dst)),
                vec![
                    raw(LD | IMM | DW, *dst, Reg::R0, 0, *imm as i32),
                    raw(0, Reg::R0, Reg::R0, 0, (*imm >> 32) as i32),
                ],
            ),
            Op::LoadMapFd { dst, map } => {
                out.map_relocs.push(MapReloc {
                    slot,
                    map: map.clone(),
                });
                (
                    format!("{} = map_fd({map}) ll", reg_name(Width::W64, *dst)),
                    vec![
                        raw_src(LD | IMM | DW, *dst, PSEUDO_MAP_FD, 0, 0),
                        raw(0, Reg::R0, Reg::R0, 0, 0),
                    ],
                )
            }
            Op::Jump {
                width,
                cond,
                dst,
                src,
                target,
            } => {
                let (offset, name) = self.target(*target, pos, slot)?;
                let off = short(offset, name)?;
                let class = if *width == Width::W64 { JMP } else { JMP32 };
                let r = |x: Reg| reg_name(*width, x);
                match src {
                    Operand::Imm(i) => (
                        format!(
                            "if {} {} {i} goto {} <{name}>",
                            r(*dst),
                            cond.symbol(),
                            signed(off.into())
                        ),
                        vec![raw(class | cond.code() | K, *dst, Reg::R0, off, *i)],
                    ),
                    Operand::Reg(s) => (
                        format!(
                            "if {} {} {} goto {} <{name}>",
                            r(*dst),
                            cond.symbol(),
                            r(*s),
                            signed(off.into())
                        ),
                        vec![raw(class | cond.code() | X, *dst, *s, off, 0)],
                    ),
                }
            }
            Op::Ja { target } => {
                let (offset, name) = self.target(*target, pos, slot)?;
                let fits = if opts.long_jumps {
                    offset.abs() <= FAR_JUMP
                } else {
                    i16::try_from(offset).is_ok()
                };
                match i16::try_from(offset).ok().filter(|_| fits) {
                    Some(off) => (
                        format!("goto {} <{name}>", signed(offset)),
                        vec![raw(JMP | JA, Reg::R0, Reg::R0, off, 0)],
                    ),
                    None if opts.long_jumps => {
                        let imm = i32::try_from(offset).map_err(|_| AsmError::JumpOutOfRange {
                            label: name.to_string(),
                            slot,
                            offset,
                        })?;
                        (
                            format!("gotol {} <{name}>", signed(offset)),
                            vec![raw(JMP32 | JA, Reg::R0, Reg::R0, 0, imm)],
                        )
                    }
                    None => {
                        return Err(AsmError::JumpOutOfRange {
                            label: name.to_string(),
                            slot,
                            offset,
                        })
                    }
                }
            }
            Op::Call { helper } => (
                match helper::name(*helper) {
                    Some(n) => format!("call {n}#{helper}"),
                    None => format!("call #{helper}"),
                },
                vec![raw(JMP | CALL, Reg::R0, Reg::R0, 0, *helper as i32)],
            ),
            Op::CallKfunc { name } => {
                out.kfunc_relocs.push(KfuncReloc {
                    slot,
                    name: name.clone(),
                });
                (
                    format!("call {name} (kfunc)"),
                    vec![raw_src(JMP | CALL, Reg::R0, PSEUDO_KFUNC_CALL, 0, 0)],
                )
            }
            Op::Exit => (
                "exit".to_string(),
                vec![raw(JMP | EXIT, Reg::R0, Reg::R0, 0, 0)],
            ),
        };
        for _ in &words {
            out.origins.push(insn.origin);
        }
        out.slots.extend(words);
        out.listing
            .line(slot, &text, insn.origin, insn.comment.as_deref());
        Ok(())
    }
}

/// Slots an instruction takes, relaxed (`far`) or not.
fn slots_of(insn: &Insn, far: bool) -> usize {
    match (&insn.op, far) {
        (Op::Jump { cond, .. }, true) => {
            if cond.negate().is_some() {
                2
            } else {
                3
            }
        }
        (op, _) => op.slots(),
    }
}

fn raw(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> u64 {
    raw_src(code, dst, src.index(), off, imm)
}

fn raw_src(code: u8, dst: Reg, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst.index() | (src << 4)) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

fn reg_name(width: Width, r: Reg) -> String {
    match width {
        Width::W64 => format!("r{}", r.index()),
        Width::W32 => format!("w{}", r.index()),
    }
}

fn addr(base: Reg, off: i16) -> String {
    if off < 0 {
        format!("r{} - {}", base.index(), -i32::from(off))
    } else {
        format!("r{} + {}", base.index(), off)
    }
}

fn signed(v: i64) -> String {
    if v < 0 {
        v.to_string()
    } else {
        format!("+{v}")
    }
}

/// A map reference to relocate: the `ld_imm64` at `slot` loads the fd of
/// the map named `map`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MapReloc {
    pub slot: usize,
    pub map: String,
}

/// A kernel-function call to relocate: the `call` at `slot` calls the
/// kfunc `name` (`crate::ebpf::kfunc`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KfuncReloc {
    pub slot: usize,
    pub name: String,
}

/// What an assembly keeps of its listing.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Listing {
    /// The listing's text ([`Assembled::listing`]), each line written
    /// as its instruction is encoded. A line per instruction kept as its
    /// own value (slot, text, comment) cost ~150 bytes per instruction
    /// beside the text's ~80: 370 MB for the 2.4 million instructions of
    /// 100,000 one-peer-per-pod rules (issue 21).
    Text(String),
    /// Each instruction's `(slot, text)`, no labels: a relaxed far
    /// jump's short sequence, whose lines are rewritten
    /// ([`Asm::encode_far`]).
    Lines(Vec<(usize, String)>),
}

impl Default for Listing {
    fn default() -> Listing {
        Listing::Text(String::new())
    }
}

/// An assembled program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assembled {
    /// Raw instruction slots; `slot.to_le_bytes()` is the in-memory
    /// `struct bpf_insn` (code, dst|src<<4, off, imm) on little-endian BPF.
    pub slots: Vec<u64>,
    /// Origin of each slot (the second slot of an `ld_imm64` repeats the
    /// first), to map verifier messages back to rules.
    pub origins: Vec<Origin>,
    /// Map references, in slot order.
    pub map_relocs: Vec<MapReloc>,
    /// Kernel-function calls, in slot order.
    pub kfunc_relocs: Vec<KfuncReloc>,
    listing: Listing,
}

impl Assembled {
    /// The first instruction slot no path from slot 0 reaches, if any —
    /// the kernel verifier refuses such a program ("unreachable insn"), so
    /// for generated code it is a compiler bug. Decodes the raw slots:
    /// `exit` ends a path, `ja` / `gotol` continue at their target, a
    /// conditional jump at both, `ld_imm64` takes two slots.
    pub fn first_unreachable(&self) -> Option<usize> {
        use code::*;
        let n = self.slots.len();
        let mut seen = vec![false; n];
        // Second halves of `ld_imm64` are never instructions.
        let mut half = vec![false; n];
        let mut i = 0;
        while i < n {
            if (self.slots[i] & 0xff) as u8 == LD | IMM | DW {
                if i + 1 < n {
                    half[i + 1] = true;
                }
                i += 2;
            } else {
                i += 1;
            }
        }
        let mut stack = vec![0usize];
        while let Some(at) = stack.pop() {
            if at >= n || seen[at] {
                continue;
            }
            seen[at] = true;
            let w = self.slots[at];
            let op = (w & 0xff) as u8;
            let off = i64::from((w >> 16) as u16 as i16);
            let imm = i64::from((w >> 32) as u32 as i32);
            let class = op & 0x07;
            let next = at as i64 + 1;
            let to = |d: i64| usize::try_from(next + d).unwrap_or(usize::MAX);
            match (class, op & 0xf0) {
                (JMP, EXIT) => {}
                (JMP, CALL) => stack.push(at + 1),
                (JMP, JA) => stack.push(to(off)),
                (JMP32, JA) => stack.push(to(imm)),
                (JMP | JMP32, _) => {
                    stack.push(at + 1);
                    stack.push(to(off));
                }
                _ if op == LD | IMM | DW => stack.push(at + 2),
                _ => stack.push(at + 1),
            }
        }
        (0..n).find(|&i| !seen[i] && !half[i])
    }

    /// The instructions as little-endian bytes (8 per slot).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.slots.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    /// Number of 8-byte slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Asm {
        let mut a = Asm::new();
        let miss = a.new_label("miss");
        let out = a.new_label("out");
        a.set_origin(Origin(3), Some("rule 3 (db-ingress ingress #1)"));
        a.push(Op::mov64(Reg::R6, Reg::R1));
        a.push(Op::load(Size::U32, Reg::R1, Reg::R6, 4));
        a.push(Op::store(Size::U32, Reg::R10, -4, Reg::R1));
        a.push(Op::mov64(Reg::R2, Reg::R10));
        a.push(Op::alu64(AluOp::Add, Reg::R2, -4));
        a.push(Op::ld_map_fd(Reg::R1, "allow"));
        a.push(Op::Call {
            helper: helper::MAP_LOOKUP_ELEM,
        });
        a.set_origin(Origin(4), None);
        a.push(Op::jmp(JmpCond::Eq, Reg::R0, 0, miss));
        a.push(Op::load(Size::U32, Reg::R0, Reg::R0, 0));
        a.push(Op::Ja { target: out });
        a.set_origin(Origin::NONE, None);
        a.bind(miss);
        a.push(Op::mov64(Reg::R0, 2));
        a.bind(out);
        a.push(Op::Exit);
        a
    }

    #[test]
    fn ebpf_labels_resolve_and_encode() {
        let p = sample().assemble().unwrap();
        assert_eq!(p.len(), 13);
        // ld_imm64 map fd at slot 5: code 0x18, dst r1, src 1.
        assert_eq!(p.slots[5], 0x18 | (0x11 << 8));
        assert_eq!(p.slots[6], 0);
        assert_eq!(
            p.map_relocs,
            vec![MapReloc {
                slot: 5,
                map: "allow".into()
            }]
        );
        // `if r0 == 0 goto miss`: slot 8, miss at 11 -> off +2.
        assert_eq!(p.slots[8], 0x15 | (2 << 16));
        // `goto out`: slot 10, out at 12 -> off +1.
        assert_eq!(p.slots[10], 0x05 | (1 << 16));
        // `r2 += -4`: imm sign bits.
        assert_eq!(p.slots[4], 0x07 | (2 << 8) | (0xffff_fffc_u64 << 32));
        assert_eq!(p.origins[5], Origin(3));
        assert_eq!(p.origins[6], Origin(3));
        assert_eq!(p.origins[8], Origin(4));
        assert_eq!(p.to_bytes().len(), 13 * 8);
    }

    #[test]
    fn ebpf_listing_is_deterministic() {
        let a = sample().assemble().unwrap().listing();
        let b = sample().assemble().unwrap().listing();
        assert_eq!(a, b);
        let expected = "
   0: r6 = r1                               ; rule 3 (db-ingress ingress #1)
   1: r1 = *(u32 *)(r6 + 4)                 ; rule 3 (db-ingress ingress #1)
   2: *(u32 *)(r10 - 4) = r1                ; rule 3 (db-ingress ingress #1)
   3: r2 = r10                              ; rule 3 (db-ingress ingress #1)
   4: r2 += -4                              ; rule 3 (db-ingress ingress #1)
   5: r1 = map_fd(allow) ll                 ; rule 3 (db-ingress ingress #1)
   7: call bpf_map_lookup_elem#1            ; rule 3 (db-ingress ingress #1)
   8: if r0 == 0 goto +2 <miss>             ; origin 4
   9: r0 = *(u32 *)(r0 + 0)                 ; origin 4
  10: goto +1 <out>                         ; origin 4
miss:
  11: r0 = 2
out:
  12: exit
";
        assert_eq!(a, &expected[1..]);
    }

    #[test]
    fn ebpf_label_errors() {
        let mut a = Asm::new();
        let l = a.new_label("nowhere");
        a.push(Op::Ja { target: l });
        assert_eq!(
            a.assemble().unwrap_err(),
            AsmError::UnboundLabel {
                label: "nowhere".into()
            }
        );
        a.bind(l);
        a.bind(l);
        assert!(matches!(
            a.assemble(),
            Err(AsmError::LabelBoundTwice { .. })
        ));
        // Duplicate names are made unique.
        let l2 = a.new_label("nowhere");
        assert_eq!(a.label_name(l2), Some("nowhere.1"));
    }

    fn far(cond: bool) -> Asm {
        let mut a = Asm::new();
        let end = a.new_label("far_end");
        a.push(Op::mov64(Reg::R0, 0));
        if cond {
            a.push(Op::jmp32(JmpCond::Gt, Reg::R0, 1, end));
        } else {
            a.push(Op::Ja { target: end });
        }
        for _ in 0..40_000 {
            a.push(Op::alu64(AluOp::Add, Reg::R0, 1));
        }
        a.bind(end);
        a.push(Op::Exit);
        a
    }

    #[test]
    fn ebpf_out_of_range_jump() {
        let err = far(true).assemble().unwrap_err();
        assert_eq!(
            err,
            AsmError::JumpOutOfRange {
                label: "far_end".into(),
                slot: 1,
                offset: 40_000
            }
        );
        assert!(err.to_string().contains("far_end"));
        // With long jumps a far conditional becomes the inverted condition
        // over a gotol.
        let p = far(true)
            .assemble_with(AsmOptions { long_jumps: true })
            .unwrap();
        // if w0 <= 1 goto +1; gotol +40000 (from slot 2 to slot 40003).
        assert_eq!(p.slots[1] & 0xff, 0x06 | 0xb0);
        assert_eq!((p.slots[1] >> 16) & 0xffff, 1);
        assert_eq!(p.slots[2], 0x06 | (40_000u64 << 32));
        assert_eq!(p.slots.len(), 40_004);
        assert!(p.listing().contains("gotol +40000 <far_end>"));
        assert!(far(false).assemble().is_err());
        let p = far(false)
            .assemble_with(AsmOptions { long_jumps: true })
            .unwrap();
        // gotol: JMP32|JA, off 0, imm = 40000.
        assert_eq!(p.slots[1], 0x06 | (40_000u64 << 32));
        assert!(p.listing().contains("gotol +40000 <far_end>"));
    }

    #[test]
    fn ebpf_unreachable_code_is_found() {
        let mut a = Asm::new();
        let end = a.new_label("end");
        a.push(Op::LoadImm64 {
            dst: Reg::R1,
            imm: 1 << 40,
        });
        a.push(Op::jmp(JmpCond::Eq, Reg::R1, 0, end));
        a.push(Op::Ja { target: end });
        a.push(Op::mov64(Reg::R0, 1)); // slot 4: nothing jumps here
        a.bind(end);
        a.push(Op::Exit);
        assert_eq!(a.assemble().unwrap().first_unreachable(), Some(4));
        let mut b = Asm::new();
        let end = b.new_label("end");
        b.push(Op::LoadImm64 {
            dst: Reg::R1,
            imm: 7,
        });
        b.push(Op::jmp(JmpCond::Eq, Reg::R1, 0, end));
        b.push(Op::mov64(Reg::R0, 1));
        b.bind(end);
        b.push(Op::Exit);
        assert_eq!(b.assemble().unwrap().first_unreachable(), None);
        // Through a far (relaxed) jump too.
        let mut c = far(true);
        c.push(Op::Exit);
        let p = c.assemble_with(AsmOptions { long_jumps: true }).unwrap();
        assert_eq!(p.first_unreachable(), Some(p.len() - 1));
    }

    #[test]
    fn ebpf_encodings() {
        let mut a = Asm::new();
        a.push(Op::LoadImm64 {
            dst: Reg::R3,
            imm: 0x1122_3344_5566_7788,
        });
        a.push(Op::Endian {
            order: ByteOrder::Be,
            bits: 16,
            dst: Reg::R2,
        });
        a.push(Op::store(Size::U64, Reg::R10, -8, 7));
        a.push(Op::AtomicAdd {
            size: Size::U64,
            base: Reg::R1,
            off: 0,
            src: Reg::R2,
        });
        a.push(Op::Neg {
            width: Width::W32,
            dst: Reg::R4,
        });
        let p = a.assemble().unwrap();
        assert_eq!(p.slots[0], 0x18 | (3 << 8) | (0x5566_7788u64 << 32));
        assert_eq!(p.slots[1], 0x1122_3344u64 << 32);
        assert_eq!(p.slots[2], 0xdc | (2 << 8) | (16u64 << 32));
        assert_eq!(p.slots[3], 0x7a | (10 << 8) | (0xfff8 << 16) | (7u64 << 32));
        assert_eq!(p.slots[4], 0xdb | (0x21 << 8));
        assert_eq!(p.slots[5], 0x84 | (4 << 8));
    }
}
