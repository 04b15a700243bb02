//! Code for each block of the pipeline (see the module docs of
//! [`super`]): the prologue (parse, classify, conntrack), graph nodes,
//! the service stage and the final verdict.

mod ct_family;
mod dst_class;
mod fixed;
mod forward;
mod node;
mod prologue;
mod redirect_udp;
mod related;
pub(in crate::ebpf::codegen) mod reset;
mod service;
mod steer;
mod translated;
pub(super) mod verdict;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::events::IdAt;
use super::layout::{
    self, ctx, map, skb, DECIDED_SHIFT, FLAG_ALLOW, FLAG_EVALUATED, FLAG_RULE, LOGGED_SHIFT,
    LOG_SLOTS,
};
use super::reject::send_back;
use super::Mode;
use crate::contract::event::EventVerdict;
use crate::ebpf::layout::service as lb;
use crate::ebpf::service::emit::{
    emit_recorded_dnat, emit_reverse_nat_from, emit_service_stage, CtxLayout, RejectCount, StageEnv,
};
use crate::ebpf::{helper, AluOp, ByteOrder, Label, Op, Origin, Reg, Size};
use crate::ebpf::{Asm, JmpCond};
use crate::flowhash::proto_number;
use crate::graph::ir::{Cond, Node, NodeId, SteerLeaf, VerdictLeaf};
use crate::graph::Graph;
use crate::model::{Model, SteerAction};
use crate::provenance::Provenance;
use ct_family::CtCall;
pub use fixed::table_full_id;
use translated::translates;

use Reg::*;

/// Stack slot of the canonical conntrack key (40 bytes).
const CT_KEY_COPY: i16 = -104;

/// Stack slots of the final block's state writes: a `weir_ct` value
/// (32) at `VALUE`, the clock's value (8) after it, and a translated
/// flow's forward key (40) at `TUPLE`.
const TUPLE: i16 = -200;
const VALUE: i16 = -240;
/// The new flow's time (`bpf_ktime_get_coarse_ns`, read once) for its second
/// entry (`verdict.rs`).
const NOW: i16 = VALUE + layout::ct::VALUE_SIZE as i16;
const _: () = assert!(NOW + 8 <= TUPLE);

/// Stack slots (in the service stage's area, free in the prologue) of a
/// forward entry's backend (`lb::be` layout) and service index, where
/// [`emit_recorded_dnat`] reads them (`forward.rs`).
const BACKEND: i16 = crate::ebpf::service::emit::st::CTV;
const SERVICE_INDEX: i16 = crate::ebpf::service::emit::st::FEV + lb::fe::SERVICE;

/// Where the service stage leaves a rejected frontend's `no backends`
/// provenance id (its frontend value copy).
const NO_BACKENDS_ID: i16 = crate::ebpf::service::emit::st::FEV + lb::fe::NO_BACKENDS;

/// Stack slot (in the service stage's area, free in the prologue) of a
/// reply's frontend (address 16, port 2), copied out of its conntrack
/// entry for the reverse NAT.
const REV_FRONTEND: i16 = crate::ebpf::service::emit::st::RV;

/// Which walk a node block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    Steer,
    /// The audit graph's sides (`audit.rs`): count only, then go on.
    AuditEgress,
    AuditIngress,
    Egress,
    Ingress,
}

impl Entry {
    pub fn short(self) -> &'static str {
        match self {
            Entry::Steer => "st",
            Entry::AuditEgress => "aeg",
            Entry::AuditIngress => "ain",
            Entry::Egress => "eg",
            Entry::Ingress => "in",
        }
    }

    pub fn is_audit(self) -> bool {
        matches!(self, Entry::AuditEgress | Entry::AuditIngress)
    }
}

/// One unit of layout: blocks are laid out in pipeline order and only
/// jump forward, so any cut of the sequence is a valid stage split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Prologue,
    Node(Entry, NodeId),
    /// Group `k` of a table node's search (see [`super::dispatch`]).
    Dispatch(Entry, NodeId, u32),
    Service,
    /// A leaf's pending verdict events, then the ingress walk or the
    /// final block (see [`super::leaf_events`]).
    LeafEvents {
        to_ingress: bool,
    },
    Final,
}

/// Class-keyed tables with more intervals than this become a column of
/// the class rows (`weir_atoms`: one `u16` branch per class, read with one
/// load from the row already in r8 / r9; a class the runtime adds gets its
/// row written whole); smaller ones are an inline binary search.
pub const INLINE_CLASS_INTERVALS: usize = 16;

/// A map-backed class table: column `id` of the class rows holds each
/// class's branch, branch `i` going to `targets[i]`.
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
    /// Whether the programs read class rows (atom tests or table columns).
    pub has_rows: bool,
    /// Whether atom tests look the bits up in `weir_atom_bits`
    /// ([`super::sparse_atoms`]) instead of the rows.
    pub sparse_atoms: bool,
    /// 32-bit words of atom bits at the start of a class row.
    pub atom_words: usize,
    pub has_services: bool,
    pub ctabs: BTreeMap<NodeId, ClassTable>,
    pub node_numbers: HashMap<NodeId, usize>,
    /// Most logged ids any leaf records in the context (≤ `LOG_SLOTS`).
    pub log_slots: usize,
    /// Whether the class map has prefixes shorter than a host, per family
    /// (IPv4, IPv6): only then is the trie looked up after a miss of the
    /// host hash (see [`layout::class_key`]; the runtime only ever adds
    /// hosts).
    pub tries: (bool, bool),
    /// The audit graph and its node numbers, when the program has audit
    /// policies (`audit.rs`).
    pub audit: Option<super::audit::AuditPlan<'a>>,
    /// Verdict events (`events.rs`); `None`: none emitted.
    pub events: Option<super::events::EventOptions>,
    /// The kind of the per-flow tables (`fixed.rs` for the non-LRU one).
    pub ct_table: crate::ebpf::state_tables::CtTable,
    /// Leaves' events handed to a shared block (`leaf_events.rs`).
    pub shared_events: super::leaf_events::SharedEvents,
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
            Block::LeafEvents { to_ingress } => {
                5u8.hash(h);
                to_ingress.hash(h);
            }
            Block::Dispatch(e, n, k) => {
                4u8.hash(h);
                e.hash(h);
                n.index().hash(h);
                k.hash(h);
            }
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
    /// Blocks this stage gets its own copy of when it jumps there (leaves,
    /// the final block and what `stages::copied_blocks` adds: a copy costs
    /// code and saves the packet a tail call), with the labels of the
    /// copies asked for.
    pub copies: Option<Copies<'x>>,
}

/// See [`Em::copies`].
pub struct Copies<'x> {
    pub copied: &'x [bool],
    pub labels: BTreeMap<usize, Label>,
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
        if let Some(c) = &mut self.copies {
            if c.copied[b] {
                let a = &mut *self.a;
                return *c.labels.entry(b).or_insert_with(|| a.new_label("copy"));
            }
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

    /// Runs `f` on the assembler directly (code shared with the service
    /// programs, which have no `Em`), counting the jumps it emits.
    pub fn asm(&mut self, f: impl FnOnce(&mut Asm)) {
        let mark = self.a.mark();
        f(self.a);
        self.jumps += self.a.jumps_since(mark);
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
        self.count_in_at_fp4(map::CNT);
    }

    /// `m[u32 at fp-4] += 1` for a per-CPU `u64` counter array `m`.
    pub fn count_in_at_fp4(&mut self, m: &str) {
        let skip = self.label("cnt_miss");
        self.lookup(m, -4);
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

impl Gen<'_> {
    pub(in crate::ebpf::codegen) fn prov_is_rule(&self, id: u32) -> bool {
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
            Block::Node(e, n) => format!("{}_n{}", e.short(), self.numbers_of(e)[&n]),
            Block::Service => "service".into(),
            Block::Final => "final".into(),
            Block::LeafEvents { to_ingress: true } => "events_then_ingress".into(),
            Block::LeafEvents { to_ingress: false } => "events_then_final".into(),
            Block::Dispatch(e, n, k) => format!("{}_n{}_g{k}", e.short(), self.node_numbers[&n]),
        }
    }

    /// The block an entry starts at.
    pub(in crate::ebpf::codegen) fn root_block(&self, e: Entry) -> usize {
        let r = self.g.dag.roots;
        let n = match e {
            Entry::Steer => r.steer,
            Entry::Egress => r.egress,
            Entry::Ingress => r.ingress,
            Entry::AuditEgress | Entry::AuditIngress => return self.audit_root_block(e),
        };
        self.index[&Block::Node(e, n)]
    }

    /// Where the policy stage starts.
    pub(super) fn policy_start(&self) -> usize {
        match self.mode {
            Mode::Node | Mode::Egress => self.root_block(Entry::Egress),
            Mode::Ingress => self.root_block(Entry::Ingress),
        }
    }

    /// Blocks every stage copies instead of jumping to: verdict and
    /// steering leaves (a few stores and a jump) and the final block
    /// (`stages::copied_blocks` adds shared subtrees).
    pub fn copied_blocks(&self) -> Vec<bool> {
        self.blocks
            .iter()
            .map(|b| match b {
                Block::Final | Block::LeafEvents { .. } => true,
                Block::Node(e, n) => self.graph_of(*e).node(*n).is_leaf(),
                Block::Prologue | Block::Service | Block::Dispatch(..) => false,
            })
            .collect()
    }

    pub fn final_block(&self) -> usize {
        self.index[&Block::Final]
    }

    pub fn emit(&self, em: &mut Em, b: usize) {
        match self.blocks[b] {
            Block::Prologue => self.prologue(em),
            Block::Node(e, n) => self.node(em, e, n),
            Block::Service => self.service(em),
            Block::Final => self.final_verdict(em),
            Block::LeafEvents { to_ingress } => self.shared_leaf_events(em, to_ingress),
            Block::Dispatch(e, n, k) => self.dispatch(em, e, n, k),
        }
    }

    /// Loads the atom rows of the source (r8) and destination (r9) class.
    pub fn load_rows(&self, em: &mut Em) {
        if !self.has_rows {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::service::tests::compile;

    /// Only TCP / UDP / SCTP frontends are translated by the TC path.
    #[test]
    fn translates_tcp_udp_sctp_frontends() {
        let with = |proto: &str| {
            let (_, g) = compile(&format!(
                "service a {{\n  frontend 10.96.0.1:80/{proto}\n  backends {{ 10.1.0.1:8080 }}\n}}\n"
            ));
            translates(&g)
        };
        assert!(with("tcp") && with("udp") && with("sctp"));
        let (_, g) = compile("");
        assert!(!translates(&g));
    }
}
