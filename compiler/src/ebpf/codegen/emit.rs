//! Code for each block of the pipeline (see the module docs of
//! [`super`]): the prologue (parse, classify, conntrack), graph nodes,
//! the service stage and the final verdict.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::layout::{self, ctx, map, skb, FLAG_ALLOW, FLAG_EVALUATED, FLAG_RULE};
use super::Mode;
use crate::ebpf::{helper, AluOp, ByteOrder, Label, Op, Origin, Reg, Size};
use crate::ebpf::{Asm, JmpCond};
use crate::flowhash::proto_number;
use crate::graph::ir::{Cond, Node, NodeId, SteerLeaf, TableKey, VerdictLeaf};
use crate::graph::Graph;
use crate::model::{Model, SteerAction};
use crate::provenance::Provenance;

use Reg::*;

/// Which walk a node block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    Steer,
    Egress,
    Ingress,
}

impl Entry {
    pub fn short(self) -> &'static str {
        match self {
            Entry::Steer => "st",
            Entry::Egress => "eg",
            Entry::Ingress => "in",
        }
    }
}

/// One unit of layout: blocks are laid out in pipeline order and only
/// jump forward, so any cut of the sequence is a valid stage split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Prologue,
    Node(Entry, NodeId),
    Service,
    Final,
}

/// Class-keyed tables with more intervals than this go to the
/// `weir_ctab` hash map (so the runtime can add rows for new classes);
/// smaller ones are an inline binary search.
pub const INLINE_CLASS_INTERVALS: usize = 16;

/// A map-backed class table: `(table id, class) → branch`, branch `i`
/// going to `targets[i]`.
#[derive(Debug, Clone)]
pub struct ClassTable {
    pub id: u32,
    pub targets: Vec<NodeId>,
}

/// Everything block emission reads.
pub struct Gen<'a> {
    pub model: &'a Model,
    pub g: &'a Graph,
    pub mode: Mode,
    pub blocks: Vec<Block>,
    pub index: HashMap<Block, usize>,
    pub has_atoms: bool,
    pub has_services: bool,
    pub ctabs: BTreeMap<NodeId, ClassTable>,
    pub node_numbers: HashMap<NodeId, usize>,
}

impl std::hash::Hash for Block {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            Block::Prologue => 0u8.hash(h),
            Block::Node(e, n) => {
                1u8.hash(h);
                e.hash(h);
                n.index().hash(h);
            }
            Block::Service => 2u8.hash(h),
            Block::Final => 3u8.hash(h),
        }
    }
}

/// Emission state for one block inside one stage.
pub struct Em<'x> {
    pub a: &'x mut Asm,
    /// Conditional jumps emitted (the verifier's branch budget).
    pub jumps: usize,
    /// Labels of the blocks in this stage.
    pub local: &'x HashMap<usize, Label>,
    /// Blocks reached from this stage but laid out in a later one:
    /// block → stub label (store `ctx.next`, tail call).
    pub stubs: &'x mut BTreeMap<usize, Label>,
    /// The block laid out right after the current one in this stage.
    pub next: Option<usize>,
    pub drop: Label,
    pub pass: Label,
}

impl Em<'_> {
    pub fn push(&mut self, op: Op) {
        if matches!(op, Op::Jump { .. }) {
            self.jumps += 1;
        }
        self.a.push(op);
    }

    /// The label that continues at block `b` (a stub when `b` is in a
    /// later stage).
    pub fn to(&mut self, b: usize) -> Label {
        if let Some(l) = self.local.get(&b) {
            return *l;
        }
        if let Some(l) = self.stubs.get(&b) {
            return *l;
        }
        let l = self.a.new_label(&format!("tail_b{b}"));
        self.stubs.insert(b, l);
        l
    }

    /// Continue at block `b` (nothing when it is the next one laid out).
    pub fn goto(&mut self, b: usize) {
        if self.next == Some(b) && self.local.contains_key(&b) {
            return;
        }
        let l = self.to(b);
        self.push(Op::Ja { target: l });
    }

    pub fn jmp(&mut self, cond: JmpCond, r: Reg, imm: i32, target: Label) {
        self.push(Op::jmp(cond, r, imm, target));
    }

    pub fn jmp32(&mut self, cond: JmpCond, r: Reg, imm: i32, target: Label) {
        self.push(Op::jmp32(cond, r, imm, target));
    }

    pub fn label(&mut self, name: &str) -> Label {
        self.a.new_label(name)
    }

    pub fn bind(&mut self, l: Label) {
        self.a.bind(l);
    }

    /// `r0 = lookup(map, fp + off)`.
    pub fn lookup(&mut self, m: &str, key_off: i16) {
        self.push(Op::mov64(R2, R10));
        self.push(Op::alu64(AluOp::Add, R2, i32::from(key_off)));
        self.push(Op::ld_map_fd(R1, m));
        self.push(Op::Call {
            helper: helper::MAP_LOOKUP_ELEM,
        });
    }

    /// `weir_cnt[id] += 1` for a provenance id in a register (not r0–r2).
    pub fn count_reg(&mut self, id: Reg) {
        self.push(Op::store(Size::U32, R10, -4, id));
        self.count_at_fp4();
    }

    /// `weir_cnt[id] += 1` for a constant provenance id.
    pub fn count_imm(&mut self, id: u32) {
        self.push(Op::store(Size::U32, R10, -4, id as i32));
        self.count_at_fp4();
    }

    fn count_at_fp4(&mut self) {
        let skip = self.label("cnt_miss");
        self.lookup(map::CNT, -4);
        self.jmp(JmpCond::Eq, R0, 0, skip);
        self.push(Op::load(Size::U64, R1, R0, 0));
        self.push(Op::alu64(AluOp::Add, R1, 1));
        self.push(Op::store(Size::U64, R0, 0, R1));
        self.bind(skip);
    }

    /// Binary search of `r` over sorted disjoint intervals: jump to the
    /// interval's label, else to `default`.
    pub fn search(&mut self, r: Reg, iv: &[(u32, u32, Label)], default: Label) {
        if iv.len() <= 4 {
            for &(lo, hi, l) in iv {
                if lo == hi {
                    self.jmp32(JmpCond::Eq, r, lo as i32, l);
                } else {
                    self.jmp32(JmpCond::Lt, r, lo as i32, default);
                    self.jmp32(JmpCond::Le, r, hi as i32, l);
                }
            }
            self.push(Op::Ja { target: default });
            return;
        }
        let mid = iv.len() / 2;
        let (lo, hi, l) = iv[mid];
        let left = self.label("bs_lt");
        self.jmp32(JmpCond::Lt, r, lo as i32, left);
        self.jmp32(JmpCond::Le, r, hi as i32, l);
        self.search(r, &iv[mid + 1..], default);
        self.bind(left);
        self.search(r, &iv[..mid], default);
    }
}

fn be16(r: Reg) -> Op {
    Op::Endian {
        order: ByteOrder::Be,
        bits: 16,
        dst: r,
    }
}

impl Gen<'_> {
    fn prov_is_rule(&self, id: u32) -> bool {
        matches!(self.g.provenance.get(id), Some(Provenance::Rule { .. }))
    }

    fn describe(&self, id: u32) -> String {
        self.g
            .provenance
            .get(id)
            .map_or_else(|| format!("provenance {id}"), |p| p.describe(self.model))
    }

    pub fn block_name(&self, b: usize) -> String {
        match self.blocks[b] {
            Block::Prologue => "prologue".into(),
            Block::Node(e, n) => format!("{}_n{}", e.short(), self.node_numbers[&n]),
            Block::Service => "service".into(),
            Block::Final => "final".into(),
        }
    }

    /// The block an entry starts at.
    fn root_block(&self, e: Entry) -> usize {
        let r = self.g.dag.roots;
        let n = match e {
            Entry::Steer => r.steer,
            Entry::Egress => r.egress,
            Entry::Ingress => r.ingress,
        };
        self.index[&Block::Node(e, n)]
    }

    /// Where the policy stage starts.
    fn policy_start(&self) -> usize {
        match self.mode {
            Mode::Node | Mode::Egress => self.root_block(Entry::Egress),
            Mode::Ingress => self.root_block(Entry::Ingress),
        }
    }

    fn final_block(&self) -> usize {
        self.index[&Block::Final]
    }

    pub fn emit(&self, em: &mut Em, b: usize) {
        match self.blocks[b] {
            Block::Prologue => self.prologue(em),
            Block::Node(e, n) => self.node(em, e, n),
            Block::Service => self.service(em),
            Block::Final => self.final_verdict(em),
        }
    }

    /// Loads the atom rows of the source (r8) and destination (r9) class.
    pub fn load_rows(&self, em: &mut Em) {
        if !self.has_atoms {
            return;
        }
        em.a.set_origin(
            Origin::NONE,
            Some("atom rows of the source and destination class"),
        );
        for (off, r) in [(ctx::SRC_CLASS, R8), (ctx::DST_CLASS, R9)] {
            em.push(Op::load(Size::U32, R1, R6, off));
            em.push(Op::store(Size::U32, R10, -4, R1));
            em.lookup(map::ATOMS, -4);
            let drop = em.drop;
            em.jmp(JmpCond::Eq, R0, 0, drop);
            em.push(Op::mov64(r, R0));
        }
    }

    /// `r6 = &weir_ctx[0]`, `r7 = skb`.
    pub fn stage_entry(&self, em: &mut Em) {
        em.push(Op::mov64(R7, R1));
        em.push(Op::store(Size::U32, R10, -4, 0));
        em.lookup(map::CTX, -4);
        let drop = em.drop;
        em.jmp(JmpCond::Eq, R0, 0, drop);
        em.push(Op::mov64(R6, R0));
    }

    fn prologue(&self, em: &mut Em) {
        let c = |em: &mut Em, s: &str| em.a.set_origin(Origin::NONE, Some(s));
        c(em, "scratch context");
        self.stage_entry(em);
        for off in [0i16, 8, 16, 24, 32, 48, 56, 64, 72] {
            em.push(Op::store(Size::U64, R6, off, 0));
        }
        c(em, "parse: ethernet");
        let (drop, pass) = (em.drop, em.pass);
        let v4 = em.label("ipv4");
        let v6 = em.label("ipv6");
        let l4 = em.label("l4");
        let l4_done = em.label("l4_done");
        em.push(Op::load(Size::U32, R2, R7, skb::DATA));
        em.push(Op::load(Size::U32, R3, R7, skb::DATA_END));
        em.push(Op::mov64(R4, R2));
        em.push(Op::alu64(AluOp::Add, R4, 14));
        em.push(Op::jmp(JmpCond::Gt, R4, R3, pass));
        em.push(Op::load(Size::U16, R4, R2, 12));
        em.jmp(JmpCond::Eq, R4, 0x0008, v4);
        em.jmp(JmpCond::Eq, R4, 0xdd86, v6);
        // Not IP (ARP, …): not ours to police.
        em.push(Op::Ja { target: pass });

        c(em, "parse: ipv4");
        em.bind(v4);
        em.push(Op::mov64(R4, R2));
        em.push(Op::alu64(AluOp::Add, R4, 34));
        em.push(Op::jmp(JmpCond::Gt, R4, R3, drop));
        em.push(Op::load(Size::U8, R5, R2, 14));
        em.push(Op::alu64(AluOp::And, R5, 15));
        em.push(Op::alu64(AluOp::Lsh, R5, 2));
        em.jmp(JmpCond::Lt, R5, 20, drop);
        em.push(Op::load(Size::U32, R4, R2, 26));
        em.push(Op::store(Size::U32, R6, ctx::SRC, R4));
        em.push(Op::load(Size::U32, R4, R2, 30));
        em.push(Op::store(Size::U32, R6, ctx::DST, R4));
        em.push(Op::store(Size::U8, R6, ctx::FAMILY, 4));
        em.push(Op::load(Size::U8, R4, R2, 23));
        em.push(Op::store(Size::U8, R6, ctx::RAW_PROTO, R4));
        em.push(Op::store(Size::U8, R6, ctx::PROTO, R4));
        // Non-first fragments carry no L4 header: ports stay 0.
        em.push(Op::load(Size::U16, R0, R2, 20));
        em.push(be16(R0));
        em.push(Op::alu64(AluOp::And, R0, 0x1fff));
        em.jmp(JmpCond::Ne, R0, 0, l4_done);
        em.push(Op::alu64(AluOp::Add, R2, 14));
        em.push(Op::alu64(AluOp::Add, R2, R5));
        em.push(Op::Ja { target: l4 });

        c(em, "parse: ipv6 (extension headers are not walked)");
        em.bind(v6);
        em.push(Op::mov64(R4, R2));
        em.push(Op::alu64(AluOp::Add, R4, 54));
        em.push(Op::jmp(JmpCond::Gt, R4, R3, drop));
        for i in 0..4i16 {
            em.push(Op::load(Size::U32, R4, R2, 22 + 4 * i));
            em.push(Op::store(Size::U32, R6, ctx::SRC + 4 * i, R4));
            em.push(Op::load(Size::U32, R4, R2, 38 + 4 * i));
            em.push(Op::store(Size::U32, R6, ctx::DST + 4 * i, R4));
        }
        em.push(Op::store(Size::U8, R6, ctx::FAMILY, 6));
        em.push(Op::load(Size::U8, R4, R2, 20));
        em.push(Op::store(Size::U8, R6, ctx::RAW_PROTO, R4));
        em.push(Op::store(Size::U8, R6, ctx::PROTO, R4));
        let not_icmp6 = em.label("not_icmp6");
        em.jmp(JmpCond::Ne, R4, 58, not_icmp6);
        em.push(Op::store(Size::U8, R6, ctx::PROTO, 1));
        em.bind(not_icmp6);
        em.push(Op::alu64(AluOp::Add, R2, 54));

        c(em, "parse: ports / icmp type and code");
        em.bind(l4);
        let ports = em.label("ports");
        let icmp = em.label("icmp");
        em.push(Op::load(Size::U8, R4, R6, ctx::RAW_PROTO));
        for p in [6, 17, 132] {
            em.jmp(JmpCond::Eq, R4, p, ports);
        }
        em.jmp(JmpCond::Eq, R4, 1, icmp);
        em.jmp(JmpCond::Eq, R4, 58, icmp);
        em.push(Op::Ja { target: l4_done });
        em.bind(ports);
        em.push(Op::mov64(R4, R2));
        em.push(Op::alu64(AluOp::Add, R4, 4));
        em.push(Op::jmp(JmpCond::Gt, R4, R3, drop));
        em.push(Op::load(Size::U16, R4, R2, 0));
        em.push(be16(R4));
        em.push(Op::store(Size::U16, R6, ctx::SPORT, R4));
        em.push(Op::load(Size::U16, R4, R2, 2));
        em.push(be16(R4));
        em.push(Op::store(Size::U16, R6, ctx::DPORT, R4));
        em.push(Op::Ja { target: l4_done });
        em.bind(icmp);
        em.push(Op::mov64(R4, R2));
        em.push(Op::alu64(AluOp::Add, R4, 2));
        em.push(Op::jmp(JmpCond::Gt, R4, R3, drop));
        em.push(Op::load(Size::U8, R4, R2, 0));
        em.push(Op::store(Size::U8, R6, ctx::ICMP_TYPE, R4));
        em.push(Op::load(Size::U8, R4, R2, 1));
        em.push(Op::store(Size::U8, R6, ctx::ICMP_CODE, R4));
        em.bind(l4_done);

        c(em, "classify: address → class (LPM trie)");
        let cls6 = em.label("cls6");
        let classified = em.label("classified");
        em.push(Op::load(Size::U8, R4, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R4, 6, cls6);
        for (addr, out) in [(ctx::SRC, ctx::SRC_CLASS), (ctx::DST, ctx::DST_CLASS)] {
            em.push(Op::store(Size::U32, R10, -8, 32));
            em.push(Op::load(Size::U32, R4, R6, addr));
            em.push(Op::store(Size::U32, R10, -4, R4));
            em.lookup(map::CLS4, -8);
            self.store_class(em, out);
        }
        em.push(Op::Ja { target: classified });
        em.bind(cls6);
        for (addr, out) in [(ctx::SRC, ctx::SRC_CLASS), (ctx::DST, ctx::DST_CLASS)] {
            em.push(Op::store(Size::U32, R10, -20, 128));
            for i in 0..4i16 {
                em.push(Op::load(Size::U32, R4, R6, addr + 4 * i));
                em.push(Op::store(Size::U32, R10, -16 + 4 * i, R4));
            }
            em.lookup(map::CLS6, -20);
            self.store_class(em, out);
        }
        em.bind(classified);

        c(em, "conntrack: established flows and replies pass");
        let k = ctx::CT_KEY;
        for i in 0..4i16 {
            em.push(Op::load(Size::U64, R1, R6, 8 * i));
            em.push(Op::store(Size::U64, R6, k + 8 * i, R1));
        }
        em.push(Op::load(Size::U32, R1, R6, ctx::SPORT));
        em.push(Op::store(Size::U32, R6, k + layout::ct::SPORT, R1));
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.push(Op::store(Size::U8, R6, k + layout::ct::PROTO, R1));
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.push(Op::store(Size::U8, R6, k + layout::ct::FAMILY, R1));
        em.push(Op::store(Size::U16, R6, k + 38, 0));
        let established = em.label("established");
        em.push(Op::mov64(R2, R6));
        em.push(Op::alu64(AluOp::Add, R2, i32::from(k)));
        em.push(Op::ld_map_fd(R1, map::CT));
        em.push(Op::Call {
            helper: helper::MAP_LOOKUP_ELEM,
        });
        em.jmp(JmpCond::Ne, R0, 0, established);
        // Reverse tuple on the stack at fp-104.
        const R: i16 = -104;
        for i in 0..2i16 {
            em.push(Op::load(Size::U64, R1, R6, ctx::DST + 8 * i));
            em.push(Op::store(Size::U64, R10, R + 8 * i, R1));
            em.push(Op::load(Size::U64, R1, R6, ctx::SRC + 8 * i));
            em.push(Op::store(Size::U64, R10, R + 16 + 8 * i, R1));
        }
        em.push(Op::load(Size::U16, R1, R6, ctx::DPORT));
        em.push(Op::store(Size::U16, R10, R + 32, R1));
        em.push(Op::load(Size::U16, R1, R6, ctx::SPORT));
        em.push(Op::store(Size::U16, R10, R + 34, R1));
        em.push(Op::load(Size::U16, R1, R6, k + 36));
        em.push(Op::store(Size::U16, R10, R + 36, R1));
        em.push(Op::store(Size::U16, R10, R + 38, 0));
        em.lookup(map::CT, R);
        let new = em.label("new_flow");
        em.jmp(JmpCond::Eq, R0, 0, new);
        em.bind(established);
        em.a.set_origin(Origin(0), Some("conntrack: established connection"));
        em.count_imm(0);
        em.push(Op::mov64(R0, layout::TC_ACT_OK));
        em.push(Op::Exit);
        em.bind(new);
        self.load_rows(em);
        let first = self.root_block(Entry::Steer);
        em.goto(first);
    }

    fn store_class(&self, em: &mut Em, out: i16) {
        let miss = em.label("class0");
        em.push(Op::mov64(R1, 0));
        em.jmp(JmpCond::Eq, R0, 0, miss);
        em.push(Op::load(Size::U32, R1, R0, 0));
        em.bind(miss);
        em.push(Op::store(Size::U32, R6, out, R1));
    }

    fn cond_text(&self, c: &Cond) -> String {
        match *c {
            Cond::Proto(p) => format!("proto == {}", proto_number(p)),
            Cond::DPort { lo, hi } if lo == hi => format!("dport == {lo}"),
            Cond::DPort { lo, hi } => format!("dport in {lo}-{hi}"),
            Cond::IcmpType(t) => format!("icmp type == {t}"),
            Cond::IcmpCode(t) => format!("icmp code == {t}"),
            Cond::SrcAtom(a) => format!("src is {}", self.g.classes.atoms[a as usize]),
            Cond::DstAtom(a) => format!("dst is {}", self.g.classes.atoms[a as usize]),
        }
    }

    fn node(&self, em: &mut Em, e: Entry, n: NodeId) {
        let num = self.node_numbers[&n];
        let child = |em: &mut Em, c: NodeId| em.to(self.index[&Block::Node(e, c)]);
        let child_block = |c: NodeId| self.index[&Block::Node(e, c)];
        match self.g.node(n) {
            Node::Test { cond, then, els } => {
                let text = format!("{} n{num}: {}", e.short(), self.cond_text(cond));
                em.a.set_origin(Origin::NONE, Some(&text));
                let t = child(em, *then);
                match *cond {
                    Cond::Proto(p) => {
                        em.push(Op::load(Size::U8, R1, R6, ctx::PROTO));
                        em.jmp32(JmpCond::Eq, R1, i32::from(proto_number(p)), t);
                    }
                    Cond::DPort { lo, hi } => {
                        em.push(Op::load(Size::U16, R1, R6, ctx::DPORT));
                        if lo == hi {
                            em.jmp32(JmpCond::Eq, R1, i32::from(lo), t);
                        } else {
                            let f = child(em, *els);
                            em.jmp32(JmpCond::Lt, R1, i32::from(lo), f);
                            em.jmp32(JmpCond::Le, R1, i32::from(hi), t);
                        }
                    }
                    Cond::IcmpType(v) => {
                        em.push(Op::load(Size::U8, R1, R6, ctx::ICMP_TYPE));
                        em.jmp32(JmpCond::Eq, R1, i32::from(v), t);
                    }
                    Cond::IcmpCode(v) => {
                        em.push(Op::load(Size::U8, R1, R6, ctx::ICMP_CODE));
                        em.jmp32(JmpCond::Eq, R1, i32::from(v), t);
                    }
                    Cond::SrcAtom(a) | Cond::DstAtom(a) => {
                        let row = if matches!(cond, Cond::SrcAtom(_)) {
                            R8
                        } else {
                            R9
                        };
                        em.push(Op::load(Size::U32, R1, row, (a / 32 * 4) as i16));
                        em.jmp32(JmpCond::Set, R1, (1u32 << (a % 32)) as i32, t);
                    }
                }
                em.goto(child_block(*els));
            }
            Node::Table {
                key,
                entries,
                default,
                ..
            } => {
                let text = format!(
                    "{} n{num}: table on {key:?} ({} intervals)",
                    e.short(),
                    entries.len()
                );
                em.a.set_origin(Origin::NONE, Some(&text));
                let (size, off) = match key {
                    TableKey::SrcClass => (Size::U32, ctx::SRC_CLASS),
                    TableKey::DstClass => (Size::U32, ctx::DST_CLASS),
                    TableKey::Proto => (Size::U8, ctx::PROTO),
                    TableKey::DPort => (Size::U16, ctx::DPORT),
                    TableKey::IcmpType => (Size::U8, ctx::ICMP_TYPE),
                    TableKey::IcmpCode => (Size::U8, ctx::ICMP_CODE),
                };
                em.push(Op::load(size, R1, R6, off));
                let d = child(em, *default);
                if let Some(t) = self.ctabs.get(&n) {
                    // (table, class) → branch index in weir_ctab.
                    em.push(Op::store(Size::U32, R10, -8, t.id as i32));
                    em.push(Op::store(Size::U32, R10, -4, R1));
                    em.lookup(map::CTAB, -8);
                    em.jmp(JmpCond::Eq, R0, 0, d);
                    em.push(Op::load(Size::U32, R1, R0, 0));
                    let iv: Vec<(u32, u32, Label)> = t
                        .targets
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| (i as u32, i as u32, child(em, c)))
                        .collect();
                    em.search(R1, &iv, d);
                } else {
                    let iv: Vec<(u32, u32, Label)> = entries
                        .iter()
                        .map(|x| (x.lo, x.hi, child(em, x.next)))
                        .collect();
                    em.search(R1, &iv, d);
                }
            }
            Node::Verdict(v) => self.verdict_leaf(em, e, v),
            Node::Steer(s) => self.steer_leaf(em, *s),
        }
    }

    fn steer_leaf(&self, em: &mut Em, s: SteerLeaf) {
        let service = self.index[&Block::Service];
        match s {
            SteerLeaf::None => {
                em.a.set_origin(Origin::NONE, Some("no steering rule"));
                em.goto(service);
            }
            SteerLeaf::Hit { steer, index } => {
                let action = &self.g.steer_actions[steer][index];
                let name = format!(
                    "steer {} rule #{}",
                    self.model.steers[steer].name,
                    index + 1
                );
                if *action == SteerAction::Bypass {
                    let id = self.g.provenance.id(&Provenance::Bypass { steer, index });
                    em.a.set_origin(Origin(id), Some(&format!("{name} (bypass)")));
                    em.count_imm(id);
                    em.push(Op::mov64(R0, layout::TC_ACT_OK));
                    em.push(Op::Exit);
                    return;
                }
                em.a.set_origin(Origin::NONE, Some(&name));
                let (kind, arg) = match *action {
                    SteerAction::Redirect { port, .. } => (layout::STEER_REDIRECT, i32::from(port)),
                    SteerAction::Mark(m) => (layout::STEER_MARK, m as i32),
                    SteerAction::Dscp(d) => (layout::STEER_DSCP, i32::from(d)),
                    SteerAction::Bypass => unreachable!(),
                };
                em.push(Op::store(Size::U32, R6, ctx::STEER_KIND, kind));
                em.push(Op::store(Size::U32, R6, ctx::STEER_ARG, arg));
                em.goto(service);
            }
        }
    }

    fn verdict_leaf(&self, em: &mut Em, e: Entry, v: &VerdictLeaf) {
        let side = if e == Entry::Egress {
            "egress"
        } else {
            "ingress"
        };
        let text: Arc<str> = Arc::from(format!(
            "{side} {}: {}",
            if v.allow { "allow" } else { "deny" },
            self.describe(v.decided)
        ));
        em.a.set_origin(Origin(v.decided), Some(&text));
        for &id in &v.logged {
            em.a.set_origin(Origin(id), Some(&format!("log: {}", self.describe(id))));
            em.count_imm(id);
        }
        em.a.set_origin(Origin(v.decided), Some(&text));
        let (dec, flags) = if e == Entry::Egress {
            (ctx::EG_DECIDED, ctx::EG_FLAGS)
        } else {
            (ctx::IN_DECIDED, ctx::IN_FLAGS)
        };
        let mut f = FLAG_EVALUATED;
        if v.allow {
            f |= FLAG_ALLOW;
        }
        if self.prov_is_rule(v.decided) {
            f |= FLAG_RULE;
        }
        em.push(Op::store(Size::U32, R6, dec, v.decided as i32));
        em.push(Op::store(Size::U32, R6, flags, f));
        let next = if e == Entry::Egress && v.allow && self.mode == Mode::Node {
            self.root_block(Entry::Ingress)
        } else {
            self.final_block()
        };
        em.goto(next);
    }

    fn service(&self, em: &mut Em) {
        let next = self.policy_start();
        em.a.set_origin(
            Origin::NONE,
            Some("service stage: frontend lookup (translation: issue 6)"),
        );
        if !self.has_services {
            em.goto(next);
            return;
        }
        const K: i16 = -136;
        for i in 0..2i16 {
            em.push(Op::load(Size::U64, R1, R6, ctx::DST + 8 * i));
            em.push(Op::store(Size::U64, R10, K + 8 * i, R1));
        }
        em.push(Op::load(Size::U16, R1, R6, ctx::DPORT));
        em.push(Op::store(Size::U16, R10, K + 16, R1));
        em.push(Op::load(Size::U8, R1, R6, ctx::PROTO));
        em.push(Op::store(Size::U8, R10, K + 18, R1));
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.push(Op::store(Size::U8, R10, K + 19, R1));
        em.lookup(map::SVC, K);
        let miss = em.to(next);
        em.jmp(JmpCond::Eq, R0, 0, miss);
        let has = em.label("has_backends");
        em.push(Op::load(Size::U32, R1, R0, 0));
        em.jmp(JmpCond::Ne, R1, 0, has);
        em.push(Op::load(Size::U32, R3, R0, 4));
        em.count_reg(R3);
        em.push(Op::mov64(R0, layout::TC_ACT_SHOT));
        em.push(Op::Exit);
        em.bind(has);
        em.push(Op::load(Size::U32, R1, R0, 8));
        em.push(Op::alu64(AluOp::Add, R1, 1));
        em.push(Op::store(Size::U32, R6, ctx::SERVICE, R1));
        em.goto(next);
    }

    fn final_verdict(&self, em: &mut Em) {
        em.a.set_origin(
            Origin::NONE,
            Some("verdict: egress ∧ ingress, count, conntrack insert on allow"),
        );
        let deny_eg = em.label("deny_eg");
        let deny_in = em.label("deny_in");
        let id_in = em.label("allow_by_ingress");
        let id_eg = em.label("allow_by_egress");
        let allow = em.label("allow");
        let deny = em.label("deny");
        em.push(Op::load(Size::U32, R4, R6, ctx::EG_FLAGS));
        em.push(Op::load(Size::U32, R5, R6, ctx::IN_FLAGS));
        let both = FLAG_EVALUATED | FLAG_ALLOW;
        em.push(Op::mov64(R3, R4));
        em.push(Op::alu64(AluOp::And, R3, both));
        em.jmp(JmpCond::Eq, R3, FLAG_EVALUATED, deny_eg);
        em.push(Op::mov64(R3, R5));
        em.push(Op::alu64(AluOp::And, R3, both));
        em.jmp(JmpCond::Eq, R3, FLAG_EVALUATED, deny_in);
        em.jmp(JmpCond::Set, R5, FLAG_RULE, id_in);
        em.jmp(JmpCond::Set, R4, FLAG_RULE, id_eg);
        em.jmp(JmpCond::Set, R5, FLAG_EVALUATED, id_in);
        em.bind(id_eg);
        em.push(Op::load(Size::U32, R3, R6, ctx::EG_DECIDED));
        em.push(Op::Ja { target: allow });
        em.bind(id_in);
        em.push(Op::load(Size::U32, R3, R6, ctx::IN_DECIDED));
        em.bind(allow);
        em.count_reg(R3);
        // Conntrack insert (key built by the prologue).
        em.push(Op::Call {
            helper: helper::KTIME_GET_NS,
        });
        em.push(Op::store(Size::U64, R10, -16, R0));
        em.push(Op::mov64(R2, R6));
        em.push(Op::alu64(AluOp::Add, R2, i32::from(ctx::CT_KEY)));
        em.push(Op::mov64(R3, R10));
        em.push(Op::alu64(AluOp::Add, R3, -16));
        em.push(Op::mov64(R4, 0));
        em.push(Op::ld_map_fd(R1, map::CT));
        em.push(Op::Call {
            helper: helper::MAP_UPDATE_ELEM,
        });
        // Steering: `mark` sets skb->mark (redirect / dscp: issue 6).
        let no_mark = em.label("no_mark");
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_KIND));
        em.jmp(JmpCond::Ne, R1, layout::STEER_MARK, no_mark);
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ARG));
        em.push(Op::store(Size::U32, R7, skb::MARK, R1));
        em.bind(no_mark);
        em.push(Op::mov64(R0, layout::TC_ACT_OK));
        em.push(Op::Exit);
        em.bind(deny_eg);
        em.push(Op::load(Size::U32, R3, R6, ctx::EG_DECIDED));
        em.push(Op::Ja { target: deny });
        em.bind(deny_in);
        em.push(Op::load(Size::U32, R3, R6, ctx::IN_DECIDED));
        em.bind(deny);
        em.count_reg(R3);
        em.push(Op::mov64(R0, layout::TC_ACT_SHOT));
        em.push(Op::Exit);
    }
}
