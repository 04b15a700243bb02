//! Code for each block of the pipeline (see the module docs of
//! [`super`]): the prologue (parse, classify, conntrack), graph nodes,
//! the service stage and the final verdict.

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
    emit_established_dnat, emit_reverse_nat, emit_service_stage, CtxLayout, RejectCount, StageEnv,
};
use crate::ebpf::{helper, AluOp, ByteOrder, Label, Op, Origin, Reg, Size};
use crate::ebpf::{Asm, JmpCond};
use crate::flowhash::proto_number;
use crate::graph::ir::{Cond, Node, NodeId, SteerLeaf, VerdictLeaf};
use crate::graph::Graph;
use crate::model::{Model, SteerAction};
use crate::provenance::Provenance;

use Reg::*;

/// Stack slot of the canonical conntrack key (40 bytes).
const CT_KEY_COPY: i16 = -104;

/// Bit of a `weir_ct` value (the insertion time) set for a translated
/// flow: only its replies look for reverse NAT.
const CT_TRANSLATED: i32 = 1;

/// Stack slots of the final block's translation-state writes: a
/// `weir_lb_ct` / `weir_lb_rev` key (40) and value (40).
const TUPLE: i16 = -200;
const VALUE: i16 = -240;

/// Where the service stage leaves a rejected frontend's `no backends`
/// provenance id (its frontend value copy).
const NO_BACKENDS_ID: i16 = crate::ebpf::service::emit::st::FEV + lb::fe::NO_BACKENDS;

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

/// Most ranges of frontend (protocol, port) keys the prologue tests inline
/// before looking for a recorded translation; more frontends' ports than
/// this and every TCP / UDP packet looks.
pub const MAX_FRONTEND_PORT_RANGES: usize = 256;

/// `proto << 16 | port` of every TCP / UDP frontend, either family (the
/// ones the TC path translates), as sorted ranges of consecutive keys.
fn frontend_ports(g: &Graph) -> Vec<(u32, u32)> {
    let keys: std::collections::BTreeSet<u32> = g
        .services
        .frontends
        .iter()
        .map(|f| &f.frontend)
        .filter(|f| matches!(proto_number(f.proto), 6 | 17))
        .map(|f| u32::from(proto_number(f.proto)) << 16 | u32::from(f.port))
        .collect();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for k in keys {
        match out.last_mut() {
            Some(last) if last.1 + 1 == k => last.1 = k,
            _ => out.push((k, k)),
        }
    }
    out
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
            Block::Node(e, n) => format!("{}_n{}", e.short(), self.numbers_of(e)[&n]),
            Block::Service => "service".into(),
            Block::Final => "final".into(),
            Block::Dispatch(e, n, k) => format!("{}_n{}_g{k}", e.short(), self.node_numbers[&n]),
        }
    }

    /// The block an entry starts at.
    fn root_block(&self, e: Entry) -> usize {
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
                Block::Final => true,
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

    fn prologue(&self, em: &mut Em) {
        let c = |em: &mut Em, s: &str| em.a.set_origin(Origin::NONE, Some(s));
        c(em, "scratch context");
        self.stage_entry(em);
        for off in [0i16, 8, 16, 24, 32, 48, 56, 64, 72] {
            em.push(Op::store(Size::U64, R6, off, 0));
        }
        if self.has_services {
            em.push(Op::store(Size::U32, R6, ctx::LB_STATE, layout::LB_NONE));
        }
        self.parse(em);

        let ports = frontend_ports(self.g);
        // Without a translated frontend (every frontend SCTP, only
        // checked for the no-backends reject) nothing is ever recorded in
        // `weir_lb_ct`: there is no lookup to make (and the block would be
        // unreachable behind an empty port search).
        if self.has_services && !ports.is_empty() {
            // A packet of a flow the service stage translated is DNATed to
            // its backend first (context and conntrack key included), so it
            // is classified and looked up in conntrack as client → backend.
            c(em, "service: established translated flow → its backend");
            let env = self.lb_env(em, em.drop);
            let not_frontend = em.label("lb_not_frontend_port");
            if ports.len() <= MAX_FRONTEND_PORT_RANGES {
                // Only this generation translates (`weir_lb_ct` is not
                // shared across generations), and only to its frontends'
                // protocols and ports: a packet to any other port has no
                // recorded translation, and skips a hash of a 40-byte key.
                let maybe = em.label("lb_frontend_port");
                em.push(Op::load(Size::U8, R1, R6, env.ctx.proto));
                em.push(Op::alu64(AluOp::Lsh, R1, 16));
                em.push(Op::load(Size::U16, R2, R6, ctx::DPORT));
                em.push(Op::alu64(AluOp::Or, R1, R2));
                let iv: Vec<(u32, u32, Label)> =
                    ports.iter().map(|&(lo, hi)| (lo, hi, maybe)).collect();
                em.search(R1, &iv, not_frontend);
                em.bind(maybe);
            }
            emit_established_dnat(em.a, &env, None);
            em.bind(not_frontend);
        }

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
        let reply = em.label("translated_reply");
        // One lookup for both directions: the key in canonical order.
        self.canonical_ct_key(em, CT_KEY_COPY);
        em.lookup(map::CT, CT_KEY_COPY);
        let new = em.label("new_flow");
        em.jmp(JmpCond::Eq, R0, 0, new);
        let ok = em.label("established_ok");
        if self.has_services {
            // A packet of a translated flow (the entry's flag bit) that
            // was not DNATed above is a reply (backend → client): reverse
            // NAT gives it the frontend back as its source. Forward
            // packets were DNATed (ctx.SERVICE set) and other flows' need
            // nothing.
            em.a.set_origin(Origin(0), Some("service: reverse NAT of replies"));
            em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
            em.jmp(JmpCond::Ne, R1, 0, established);
            em.push(Op::load(Size::U64, R1, R0, 0));
            em.jmp(JmpCond::Set, R1, CT_TRANSLATED, reply);
        }
        em.bind(established);
        em.a.set_origin(Origin(0), Some("conntrack: established connection"));
        em.count_imm(0);
        em.bind(ok);
        em.push(Op::mov64(R0, layout::TC_ACT_OK));
        em.push(Op::Exit);
        if self.has_services {
            em.bind(reply);
            em.a.set_origin(Origin(0), Some("service: reverse NAT of replies"));
            em.count_imm(0);
            let env = self.lb_env(em, ok);
            emit_reverse_nat(em.a, &env, ok);
            em.push(Op::Ja { target: ok });
        }
        em.bind(new);
        c(
            em,
            "classify: address → class (host hash, then the CIDRs' LPM trie)",
        );
        let cls6 = em.label("cls6");
        let classified = em.label("classified");
        em.push(Op::load(Size::U8, R4, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R4, 6, cls6);
        for (addr, out) in [(ctx::SRC, ctx::SRC_CLASS), (ctx::DST, ctx::DST_CLASS)] {
            self.classify(em, 4, addr, out);
        }
        em.push(Op::Ja { target: classified });
        em.bind(cls6);
        for (addr, out) in [(ctx::SRC, ctx::SRC_CLASS), (ctx::DST, ctx::DST_CLASS)] {
            self.classify(em, 6, addr, out);
        }
        em.bind(classified);

        self.load_rows(em);
        let first = self.root_block(Entry::Steer);
        em.goto(first);
    }

    /// The packet's conntrack key (`ctx::CT_KEY`, source first) in
    /// canonical order at `fp + out`: the (address, port) ends compared as
    /// (first 8 address bytes, next 8, port) — unsigned, native order —
    /// and the smaller one first, so a flow and its replies share one
    /// `weir_ct` entry and one lookup finds either direction.
    fn canonical_ct_key(&self, em: &mut Em, out: i16) {
        use layout::ct;
        let k = ctx::CT_KEY;
        let keep = em.label("ct_key_in_order");
        let swap = em.label("ct_key_swapped");
        let done = em.label("ct_key_done");
        for w in [0i16, 8] {
            em.push(Op::load(Size::U64, R1, R6, k + ct::SRC + w));
            em.push(Op::load(Size::U64, R2, R6, k + ct::DST + w));
            em.push(Op::jmp(JmpCond::Lt, R1, R2, keep));
            em.push(Op::jmp(JmpCond::Gt, R1, R2, swap));
        }
        em.push(Op::load(Size::U16, R1, R6, k + ct::SPORT));
        em.push(Op::load(Size::U16, R2, R6, k + ct::DPORT));
        em.push(Op::jmp(JmpCond::Le, R1, R2, keep));
        em.bind(swap);
        for (to, from, size) in [
            (ct::SRC, ct::DST, Size::U64),
            (ct::SRC + 8, ct::DST + 8, Size::U64),
            (ct::DST, ct::SRC, Size::U64),
            (ct::DST + 8, ct::SRC + 8, Size::U64),
            (ct::SPORT, ct::DPORT, Size::U16),
            (ct::DPORT, ct::SPORT, Size::U16),
            (ct::PROTO, ct::PROTO, Size::U32),
        ] {
            em.push(Op::load(size, R1, R6, k + from));
            em.push(Op::store(size, R10, out + to, R1));
        }
        em.push(Op::Ja { target: done });
        em.bind(keep);
        for off in (0..ct::KEY_SIZE as i16).step_by(8) {
            em.push(Op::load(Size::U64, R1, R6, k + off));
            em.push(Op::store(Size::U64, R10, out + off, R1));
        }
        em.bind(done);
    }

    /// `ctx[out]` = the class of the IPv`family` address at `ctx[addr]`:
    /// the host hash (key at fp-16, the address), on a miss the trie when
    /// the class map has shorter prefixes (key at fp-20: length, address),
    /// on a miss again class 0. Uses r0–r5 and fp-20..fp-1.
    fn classify(&self, em: &mut Em, family: u8, addr: i16, out: i16) {
        let (words, bits, host, trie, has_trie) = if family == 4 {
            (1i16, 32, map::HOST4, map::CLS4, self.tries.0)
        } else {
            (4, 128, map::HOST6, map::CLS6, self.tries.1)
        };
        for i in 0..words {
            em.push(Op::load(Size::U32, R4, R6, addr + 4 * i));
            em.push(Op::store(Size::U32, R10, -16 + 4 * i, R4));
        }
        em.lookup(host, -16);
        let found = em.label("class_found");
        let done = em.label("classed");
        em.jmp(JmpCond::Ne, R0, 0, found);
        if has_trie {
            em.push(Op::store(Size::U32, R10, -20, bits));
            em.lookup(trie, -20);
            em.jmp(JmpCond::Ne, R0, 0, found);
        }
        em.push(Op::mov64(R1, 0));
        em.push(Op::Ja { target: done });
        em.bind(found);
        em.push(Op::load(Size::U32, R1, R0, 0));
        em.bind(done);
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
        let num = self.numbers_of(e)[&n];
        let child = |em: &mut Em, c: NodeId| em.to(self.index[&Block::Node(e, c)]);
        let child_block = |c: NodeId| self.index[&Block::Node(e, c)];
        match self.graph_of(e).node(n) {
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
            Node::Table { key, entries, .. } => {
                let text = format!(
                    "{} n{num}: table on {key:?} ({} intervals)",
                    e.short(),
                    entries.len()
                );
                em.a.set_origin(Origin::NONE, Some(&text));
                self.table(em, e, n);
            }
            Node::Verdict(v) if e.is_audit() => self.audit_leaf(em, e, v),
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
                if let SteerAction::Redirect { addr, .. } = action {
                    // The lookup address per family of the connection:
                    // the rule's where it is of that family, else the
                    // unspecified address (a wildcard listener).
                    let (a4, a6) = match addr {
                        std::net::IpAddr::V4(a) => (a.octets(), [0; 16]),
                        std::net::IpAddr::V6(a) => ([0; 4], a.octets()),
                    };
                    em.push(Op::store(
                        Size::U32,
                        R6,
                        ctx::STEER_ADDR,
                        i32::from_ne_bytes(a4),
                    ));
                    for (i, w) in a6.chunks(4).enumerate() {
                        let w = i32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
                        em.push(Op::store(Size::U32, R6, ctx::STEER_ADDR6 + 4 * i as i16, w));
                    }
                }
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
        let (word, log) = if e == Entry::Egress {
            (ctx::EG_WORD, ctx::EG_LOG)
        } else {
            (ctx::IN_WORD, ctx::IN_LOG)
        };
        // Logged ids: the first LOG_SLOTS go to the context (the final
        // block counts them), any further ones are counted here.
        let recorded = v.logged.len().min(LOG_SLOTS);
        for (i, &id) in v.logged.iter().enumerate() {
            em.a.set_origin(Origin(id), Some(&format!("log: {}", self.describe(id))));
            if i < recorded {
                em.push(Op::store(Size::U32, R6, log + 4 * i as i16, id as i32));
            } else {
                em.count_imm(id);
            }
        }
        self.leaf_events(em, v);
        em.a.set_origin(Origin(v.decided), Some(&text));
        let mut f = FLAG_EVALUATED;
        if v.allow {
            f |= FLAG_ALLOW;
        }
        if self.prov_is_rule(v.decided) {
            f |= FLAG_RULE;
        }
        em.push(Op::store(
            Size::U32,
            R6,
            word,
            layout::side_word(v.decided, recorded, f),
        ));
        let next = if e == Entry::Egress && v.allow && self.mode == Mode::Node {
            self.root_block(Entry::Ingress)
        } else {
            self.final_block()
        };
        em.goto(next);
    }

    /// The service stage's environment (the pipeline's context, counters
    /// and drop label).
    fn lb_env(&self, em: &Em, cont: Label) -> StageEnv {
        StageEnv {
            ctx: CtxLayout {
                lb_pending: Some((ctx::LB_STATE, ctx::LB_CTV)),
                // The prologue's `emit_established_dnat` looked first.
                established_checked: true,
                ..CtxLayout::pipeline()
            },
            cont,
            drop: em.drop,
            reject: RejectCount::Provenance(map::CNT.into()),
            rejected: None,
            lb_counters: false,
        }
    }

    /// Service stage (one block; it cannot be split across a tail call):
    /// frontends that cannot be translated (SCTP) are only checked for
    /// the no-backends reject; TCP / UDP of both families go through
    /// [`emit_service_stage`] (translation, or reject); a translated packet
    /// is classified again (the backend's class) before policy.
    fn service(&self, em: &mut Em) {
        let next = self.after_service();
        em.a.set_origin(
            Origin::NONE,
            Some("service stage: frontend → backend (load-balance first, then policy)"),
        );
        if !self.has_services {
            em.goto(next);
            return;
        }
        let reclassify = em.label("reclassify");
        let rejected = em.label("rejected");
        let translatable = em.label("translatable");
        // TCP / UDP of either family: the service stage.
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.jmp(JmpCond::Eq, R1, 6, translatable);
        em.jmp(JmpCond::Eq, R1, 17, translatable);
        // Others: a frontend without backends still rejects; one with
        // backends continues untranslated (SCTP translation is not
        // implemented: `weir compile` refuses SCTP frontends, E0501; the
        // tests' `Options::untranslated_frontends` reaches this).
        const K: i16 = -184;
        for i in 0..2i16 {
            em.push(Op::load(Size::U64, R1, R6, ctx::DST + 8 * i));
            em.push(Op::store(Size::U64, R10, K + 8 * i, R1));
        }
        em.push(Op::load(Size::U16, R1, R6, ctx::DPORT));
        em.push(Op::store(Size::U16, R10, K + lb::fe_key::PORT, R1));
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.push(Op::store(Size::U8, R10, K + lb::fe_key::PROTO, R1));
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.push(Op::store(Size::U8, R10, K + lb::fe_key::FAMILY, R1));
        em.lookup(lb::map::FE, K);
        let miss = em.to(next);
        em.jmp(JmpCond::Eq, R0, 0, miss);
        em.push(Op::load(Size::U32, R1, R0, lb::fe::COUNT));
        em.jmp(JmpCond::Ne, R1, 0, miss);
        em.push(Op::load(Size::U32, R3, R0, lb::fe::NO_BACKENDS));
        em.count_reg(R3);
        self.event(em, EventVerdict::Reject, IdAt::Stack(-4), false);
        let drop = em.drop;
        em.push(Op::Ja { target: drop });

        em.bind(translatable);
        // Translated by the prologue (an established translation whose
        // conntrack entry is gone): classified as client → backend already.
        em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
        let judged = em.to(next);
        em.jmp(JmpCond::Ne, R1, 0, judged);
        let mut env = self.lb_env(em, reclassify);
        env.rejected = Some(rejected);
        emit_service_stage(em.a, &env);
        // A conservative count of the stage's branches (it emits through
        // the assembler directly).
        em.jumps += 48;

        em.a.set_origin(
            Origin::NONE,
            Some(
                "service: no backends → TCP reset, ICMP / ICMPv6 port unreachable (UDP), else drop",
            ),
        );
        em.bind(rejected);
        self.event(em, EventVerdict::Reject, IdAt::Stack(NO_BACKENDS_ID), false);
        self.reject(em);

        em.a.set_origin(
            Origin::NONE,
            Some("service: translated → classify the backend, reload atom rows"),
        );
        em.bind(reclassify);
        em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
        let to_next = em.to(next);
        em.jmp(JmpCond::Eq, R1, 0, to_next);
        // The backend has the frontend's family.
        let dst6 = em.label("reclassify6");
        let reclassified = em.label("reclassified");
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R1, 6, dst6);
        self.classify(em, 4, ctx::DST, ctx::DST_CLASS);
        em.push(Op::Ja {
            target: reclassified,
        });
        em.bind(dst6);
        self.classify(em, 6, ctx::DST, ctx::DST_CLASS);
        em.bind(reclassified);
        self.load_rows(em);
        em.goto(next);
    }

    /// Answers the IPv4 TCP packet in the context (a frontend without
    /// backends) with a reset to its sender, redirected out of the
    /// interface it came in on; anything else (UDP, IP options, a reset)
    /// is dropped. The packet becomes the reset: MACs, addresses and ports
    /// swapped, payload and options cut, `RST` (with `ACK` = seq + length
    /// when the offending segment had no ACK, else seq = its ack), fresh
    /// IPv4 and TCP checksums.
    pub(super) fn tcp_reset(&self, em: &mut Em) {
        let drop = em.drop;
        // Frame copy: Ethernet (14) + IPv4 (20) + TCP (20) = 54 bytes at B
        // (B ≡ 2 mod 4, so the IP and TCP headers are 4-aligned); the
        // pseudo-header (12) and a TCP header copy at P.
        const B: i16 = -250;
        const IP: i16 = B + 14;
        const TCP: i16 = B + 34;
        const P: i16 = -288; // pseudo (12) + TCP (20), 8-aligned
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.jmp(JmpCond::Ne, R1, 6, drop);
        em.push(Op::mov64(R1, R7));
        em.push(Op::mov64(R2, 0));
        em.push(Op::mov64(R3, R10));
        em.push(Op::alu64(AluOp::Add, R3, i32::from(B)));
        em.push(Op::mov64(R4, 54));
        em.push(Op::Call {
            helper: helper::SKB_LOAD_BYTES,
        });
        em.jmp(JmpCond::Ne, R0, 0, drop);
        // IHL 5 only; never answer a reset.
        em.push(Op::load(Size::U8, R1, R10, IP));
        em.jmp(JmpCond::Ne, R1, 0x45, drop);
        em.push(Op::load(Size::U8, R1, R10, TCP + 13));
        em.jmp(JmpCond::Set, R1, 0x04, drop);
        // r8 := flags of the offending segment (r8 / r9 are reloaded by
        // nothing after this: the packet leaves here).
        em.push(Op::mov64(R8, R1));
        // Segment length: IP total − 20 − data offset·4, + SYN + FIN.
        em.push(Op::load(Size::U16, R2, R10, IP + 2));
        em.push(be16(R2));
        em.push(Op::alu64(AluOp::Sub, R2, 20));
        em.push(Op::load(Size::U8, R3, R10, TCP + 12));
        em.push(Op::alu64(AluOp::Rsh, R3, 4));
        em.push(Op::alu64(AluOp::Lsh, R3, 2));
        em.push(Op::alu64(AluOp::Sub, R2, R3));
        em.push(Op::mov64(R3, R1));
        em.push(Op::alu64(AluOp::And, R3, 1)); // FIN
        em.push(Op::alu64(AluOp::Add, R2, R3));
        em.push(Op::mov64(R3, R1));
        em.push(Op::alu64(AluOp::Rsh, R3, 1));
        em.push(Op::alu64(AluOp::And, R3, 1)); // SYN
        em.push(Op::alu64(AluOp::Add, R2, R3));
        em.push(Op::mov64(R9, R2));
        // Ethernet: swap the MACs (3 × 16 bits each).
        for i in 0..3i16 {
            em.push(Op::load(Size::U16, R1, R10, B + 2 * i));
            em.push(Op::load(Size::U16, R2, R10, B + 6 + 2 * i));
            em.push(Op::store(Size::U16, R10, B + 2 * i, R2));
            em.push(Op::store(Size::U16, R10, B + 6 + 2 * i, R1));
        }
        // IPv4: total length 40, id 0, DF, TTL 64, addresses swapped.
        em.push(Op::store(Size::U8, R10, IP + 1, 0));
        em.push(Op::mov64(R1, 40));
        em.push(be16(R1));
        em.push(Op::store(Size::U16, R10, IP + 2, R1));
        em.push(Op::store(Size::U16, R10, IP + 4, 0));
        em.push(Op::mov64(R1, 0x4000));
        em.push(be16(R1));
        em.push(Op::store(Size::U16, R10, IP + 6, R1));
        em.push(Op::store(Size::U8, R10, IP + 8, 64));
        em.push(Op::store(Size::U16, R10, IP + 10, 0));
        em.push(Op::load(Size::U32, R1, R10, IP + 12));
        em.push(Op::load(Size::U32, R2, R10, IP + 16));
        em.push(Op::store(Size::U32, R10, IP + 12, R2));
        em.push(Op::store(Size::U32, R10, IP + 16, R1));
        Self::rst_segment(em, TCP);
        // IPv4 header checksum.
        self.csum_into(em, IP, 20, IP + 10);
        // TCP checksum over the pseudo-header and the header.
        em.push(Op::load(Size::U32, R1, R10, IP + 12));
        em.push(Op::store(Size::U32, R10, P, R1));
        em.push(Op::load(Size::U32, R1, R10, IP + 16));
        em.push(Op::store(Size::U32, R10, P + 4, R1));
        em.push(Op::mov64(R1, 0x0006_0014u32 as i32)); // 0, proto 6, length 20
        em.push(Op::Endian {
            order: ByteOrder::Be,
            bits: 32,
            dst: R1,
        });
        em.push(Op::store(Size::U32, R10, P + 8, R1));
        for i in 0..5i16 {
            em.push(Op::load(Size::U32, R1, R10, TCP + 4 * i));
            em.push(Op::store(Size::U32, R10, P + 12 + 4 * i, R1));
        }
        self.csum_into(em, P, 32, TCP + 16);
        // Cut to 54 bytes, write it, send it back out.
        send_back(em, B, 54);
    }

    /// `*(u16 *)(fp + out) = ~fold(csum(fp + from, len))` (len a multiple
    /// of 4; the checksum field inside must be zero).
    pub(super) fn csum_into(&self, em: &mut Em, from: i16, len: i32, out: i16) {
        em.push(Op::mov64(R1, 0));
        em.push(Op::mov64(R2, 0));
        em.push(Op::mov64(R3, R10));
        em.push(Op::alu64(AluOp::Add, R3, i32::from(from)));
        em.push(Op::mov64(R4, len));
        em.push(Op::mov64(R5, 0));
        em.push(Op::Call {
            helper: helper::CSUM_DIFF,
        });
        for _ in 0..2 {
            em.push(Op::mov64(R1, R0));
            em.push(Op::alu64(AluOp::Rsh, R1, 16));
            em.push(Op::alu64(AluOp::And, R0, 0xffff));
            em.push(Op::alu64(AluOp::Add, R0, R1));
        }
        em.push(Op::alu64(AluOp::Xor, R0, 0xffff));
        em.push(Op::store(Size::U16, R10, out, R0));
    }

    /// Counts the logged ids both sides' leaves recorded in the context
    /// (unrolled up to the most any leaf records).
    fn count_logged(&self, em: &mut Em) {
        if self.log_slots == 0 {
            return;
        }
        em.a.set_origin(Origin::NONE, Some("count the log rules the leaves passed"));
        for (word, log) in [(ctx::EG_WORD, ctx::EG_LOG), (ctx::IN_WORD, ctx::IN_LOG)] {
            let done = em.label("logged_done");
            for i in 0..self.log_slots {
                em.push(Op::load(Size::U32, R1, R6, word));
                em.push(Op::alu64(AluOp::Rsh, R1, LOGGED_SHIFT as i32));
                em.push(Op::alu64(
                    AluOp::And,
                    R1,
                    (1 << (DECIDED_SHIFT - LOGGED_SHIFT)) - 1,
                ));
                em.jmp(JmpCond::Le, R1, i as i32, done);
                em.push(Op::load(Size::U32, R3, R6, log + 4 * i as i16));
                em.count_reg(R3);
            }
            em.bind(done);
        }
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
        self.count_logged(em);
        em.push(Op::load(Size::U32, R4, R6, ctx::EG_WORD));
        em.push(Op::load(Size::U32, R5, R6, ctx::IN_WORD));
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
        em.push(Op::mov64(R3, R4));
        em.push(Op::Ja { target: allow });
        em.bind(id_in);
        em.push(Op::mov64(R3, R5));
        em.bind(allow);
        em.push(Op::alu64(AluOp::Rsh, R3, DECIDED_SHIFT as i32));
        em.count_reg(R3);
        self.final_events(em, true);
        // Conntrack insert (key built by the prologue): the time, its
        // low bit flagging a translated flow (its replies need reverse
        // NAT).
        em.push(Op::Call {
            helper: helper::KTIME_GET_NS,
        });
        em.push(Op::alu64(AluOp::And, R0, !CT_TRANSLATED));
        if self.has_services {
            let plain = em.label("not_translated");
            em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
            em.jmp(JmpCond::Eq, R1, 0, plain);
            em.push(Op::alu64(AluOp::Or, R0, CT_TRANSLATED));
            em.bind(plain);
        }
        em.push(Op::store(Size::U64, R10, -16, R0));
        self.canonical_ct_key(em, CT_KEY_COPY);
        em.push(Op::mov64(R2, R10));
        em.push(Op::alu64(AluOp::Add, R2, i32::from(CT_KEY_COPY)));
        em.push(Op::mov64(R3, R10));
        em.push(Op::alu64(AluOp::Add, R3, -16));
        em.push(Op::mov64(R4, 0));
        em.push(Op::ld_map_fd(R1, map::CT));
        em.push(Op::Call {
            helper: helper::MAP_UPDATE_ELEM,
        });
        if self.has_services {
            self.record_translation(em);
        }
        self.steering(em);
        em.push(Op::mov64(R0, layout::TC_ACT_OK));
        em.push(Op::Exit);
        em.bind(deny_eg);
        em.push(Op::mov64(R3, R4));
        em.push(Op::Ja { target: deny });
        em.bind(deny_in);
        em.push(Op::mov64(R3, R5));
        em.bind(deny);
        em.push(Op::alu64(AluOp::Rsh, R3, DECIDED_SHIFT as i32));
        em.count_reg(R3);
        self.final_events(em, false);
        if self.has_services {
            self.forget_translation(em);
        }
        em.push(Op::mov64(R0, layout::TC_ACT_SHOT));
        em.push(Op::Exit);
    }

    /// The `weir_lb_ct` key of a translated packet (client → frontend)
    /// at `fp + TUPLE`, built from the context.
    fn flow_tuple(&self, em: &mut Em) {
        let t = |f: i16| TUPLE + f;
        let pairs: [(i16, i16, Size); 9] = [
            (t(lb::tuple::SRC), ctx::SRC, Size::U64),
            (t(lb::tuple::SRC + 8), ctx::SRC + 8, Size::U64),
            (t(lb::tuple::DST), ctx::ORIG_DST, Size::U64),
            (t(lb::tuple::DST + 8), ctx::ORIG_DST + 8, Size::U64),
            (t(lb::tuple::SPORT), ctx::SPORT, Size::U16),
            (t(lb::tuple::DPORT), ctx::ORIG_DPORT, Size::U16),
            (t(lb::tuple::PROTO), ctx::RAW_PROTO, Size::U8),
            (t(lb::tuple::FAMILY), ctx::FAMILY, Size::U8),
            (t(38), -1, Size::U16),
        ];
        for (dst, src, size) in pairs {
            if src < 0 {
                em.push(Op::store(size, R10, dst, 0));
            } else {
                em.push(Op::load(size, R1, R6, src));
                em.push(Op::store(size, R10, dst, R1));
            }
        }
    }

    /// Turns the tuple at `fp + TUPLE` (from [`Self::flow_tuple`]) into
    /// the reply's `weir_lb_rev` key: backend → client.
    fn reply_tuple(&self, em: &mut Em) {
        let t = |f: i16| TUPLE + f;
        for (dst, src, size) in [
            (t(lb::tuple::SRC), ctx::DST, Size::U64),
            (t(lb::tuple::SRC + 8), ctx::DST + 8, Size::U64),
            (t(lb::tuple::DST), ctx::SRC, Size::U64),
            (t(lb::tuple::DST + 8), ctx::SRC + 8, Size::U64),
            (t(lb::tuple::SPORT), ctx::DPORT, Size::U16),
            (t(lb::tuple::DPORT), ctx::SPORT, Size::U16),
        ] {
            em.push(Op::load(size, R1, R6, src));
            em.push(Op::store(size, R10, dst, R1));
        }
    }

    /// `helper(map, fp + TUPLE[, fp + VALUE, 0])`.
    fn tuple_call(&self, em: &mut Em, m: &str, update: bool) {
        em.push(Op::mov64(R2, R10));
        em.push(Op::alu64(AluOp::Add, R2, i32::from(TUPLE)));
        em.push(Op::ld_map_fd(R1, m));
        if update {
            em.push(Op::mov64(R3, R10));
            em.push(Op::alu64(AluOp::Add, R3, i32::from(VALUE)));
            em.push(Op::mov64(R4, 0));
        }
        em.push(Op::Call {
            helper: if update {
                helper::MAP_UPDATE_ELEM
            } else {
                helper::MAP_DELETE_ELEM
            },
        });
    }

    /// An allowed packet of a new translation: the service stage left the
    /// `weir_lb_ct` value in the context; write it (client → frontend
    /// flow, with the time) and the reply's `weir_lb_rev` entry (backend
    /// → client → the frontend to answer from).
    fn record_translation(&self, em: &mut Em) {
        let done = em.label("no_new_translation");
        em.push(Op::load(Size::U32, R1, R6, ctx::LB_STATE));
        em.jmp(JmpCond::Ne, R1, layout::LB_PENDING, done);
        self.flow_tuple(em);
        for i in 0..4i16 {
            em.push(Op::load(Size::U64, R1, R6, ctx::LB_CTV + 8 * i));
            em.push(Op::store(Size::U64, R10, VALUE + 8 * i, R1));
        }
        em.push(Op::Call {
            helper: helper::KTIME_GET_NS,
        });
        em.push(Op::store(Size::U64, R10, VALUE + lb::ct::TS, R0));
        self.tuple_call(em, lb::map::CT, true);
        self.reply_tuple(em);
        let v = |f: i16| VALUE + f;
        for i in 0..2i16 {
            em.push(Op::load(Size::U64, R1, R6, ctx::ORIG_DST + 8 * i));
            em.push(Op::store(Size::U64, R10, v(lb::rev::ADDR) + 8 * i, R1));
        }
        em.push(Op::load(Size::U16, R1, R6, ctx::ORIG_DPORT));
        em.push(Op::store(Size::U16, R10, v(lb::rev::PORT), R1));
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.push(Op::store(Size::U16, R10, v(lb::rev::FAMILY), R1));
        em.push(Op::load(Size::U32, R1, R6, ctx::LB_CTV + lb::ct::SERVICE));
        em.push(Op::store(Size::U32, R10, v(lb::rev::SERVICE), R1));
        self.tuple_call(em, lb::map::REV, true);
        em.bind(done);
    }

    /// A denied translated packet leaves no translation state behind: a
    /// new translation never wrote any ([`Self::record_translation`]);
    /// a flow translated earlier (its `weir_lb_ct` entry found by the
    /// prologue or the service stage) has that entry and its
    /// `weir_lb_rev` reply entry deleted, so a later packet of the flow is
    /// load-balanced and judged afresh and a spoofed reply is not
    /// un-translated.
    fn forget_translation(&self, em: &mut Em) {
        let done = em.label("no_translation");
        em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
        em.jmp(JmpCond::Eq, R1, 0, done);
        em.push(Op::load(Size::U32, R1, R6, ctx::LB_STATE));
        em.jmp(JmpCond::Eq, R1, layout::LB_PENDING, done);
        self.flow_tuple(em);
        self.tuple_call(em, lb::map::CT, false);
        self.reply_tuple(em);
        self.tuple_call(em, lb::map::REV, false);
        em.bind(done);
    }

    /// Steering of an allowed packet (docs/language.md §4 step 5): `mark`
    /// sets `skb->mark`; `dscp` rewrites the DSCP bits (IPv4: header
    /// checksum fixed with `bpf_l3_csum_replace`; IPv6: traffic class);
    /// `redirect` assigns the packet to the local proxy's socket
    /// ([`Gen::redirect_to_proxy`]).
    fn steering(&self, em: &mut Em) {
        let has = |f: fn(&SteerAction) -> bool| self.g.steer_actions.iter().flatten().any(f);
        let (mark, dscp_used, redirect_used) = (
            has(|a| matches!(a, SteerAction::Mark(_))),
            has(|a| matches!(a, SteerAction::Dscp(_))),
            has(|a| matches!(a, SteerAction::Redirect { .. })),
        );
        if !(mark || dscp_used || redirect_used) {
            return;
        }
        em.a.set_origin(Origin::NONE, Some("steering of the allowed packet"));
        let done = em.label("steered");
        let dscp = em.label("steer_dscp");
        let redirect = em.label("steer_redirect");
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_KIND));
        if dscp_used {
            em.jmp(JmpCond::Eq, R1, layout::STEER_DSCP, dscp);
        }
        if redirect_used {
            em.jmp(JmpCond::Eq, R1, layout::STEER_REDIRECT, redirect);
        }
        if mark {
            em.jmp(JmpCond::Ne, R1, layout::STEER_MARK, done);
            em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ARG));
            em.push(Op::store(Size::U32, R7, skb::MARK, R1));
        }
        em.push(Op::Ja { target: done });
        if dscp_used {
            em.bind(dscp);
            self.rewrite_dscp(em, done);
        }
        if redirect_used {
            em.bind(redirect);
            self.redirect_to_proxy(em);
        }
        em.bind(done);
    }

    /// DSCP rewrite (`STEER_ARG`), then jump to `done`.
    fn rewrite_dscp(&self, em: &mut Em, done: Label) {
        const W: i16 = -168;
        em.push(Op::mov64(R1, R7));
        em.push(Op::mov64(R2, 14));
        em.push(Op::mov64(R3, R10));
        em.push(Op::alu64(AluOp::Add, R3, i32::from(W)));
        em.push(Op::mov64(R4, 2));
        em.push(Op::store(Size::U64, R10, W, 0));
        em.push(Op::Call {
            helper: helper::SKB_LOAD_BYTES,
        });
        em.jmp(JmpCond::Ne, R0, 0, done);
        // r2 = the first 16 bits as a number (big-endian on the wire).
        em.push(Op::load(Size::U16, R2, R10, W));
        em.push(be16(R2));
        em.push(Op::load(Size::U32, R3, R6, ctx::STEER_ARG));
        let v6 = em.label("dscp_v6");
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R1, 6, v6);
        // IPv4: version/IHL, then TOS = DSCP << 2 | ECN.
        em.push(Op::alu64(AluOp::And, R2, 0xff03));
        em.push(Op::alu64(AluOp::Lsh, R3, 2));
        em.push(Op::alu64(AluOp::Or, R2, R3));
        em.push(be16(R2));
        em.push(Op::store(Size::U16, R10, W + 2, R2));
        em.push(Op::mov64(R1, R7));
        em.push(Op::mov64(R2, 14 + 10));
        em.push(Op::load(Size::U16, R3, R10, W));
        em.push(Op::load(Size::U16, R4, R10, W + 2));
        em.push(Op::mov64(R5, 2));
        em.push(Op::Call {
            helper: helper::L3_CSUM_REPLACE,
        });
        let store = em.label("dscp_store");
        em.push(Op::Ja { target: store });
        // IPv6: version (4) | traffic class (8) | flow label: DSCP is the
        // top 6 bits of the traffic class (bits 11..6 here).
        em.bind(v6);
        em.push(Op::alu64(AluOp::And, R2, 0xf03f));
        em.push(Op::alu64(AluOp::Lsh, R3, 6));
        em.push(Op::alu64(AluOp::Or, R2, R3));
        em.push(be16(R2));
        em.push(Op::store(Size::U16, R10, W + 2, R2));
        em.bind(store);
        em.push(Op::mov64(R1, R7));
        em.push(Op::mov64(R2, 14));
        em.push(Op::mov64(R3, R10));
        em.push(Op::alu64(AluOp::Add, R3, i32::from(W + 2)));
        em.push(Op::mov64(R4, 2));
        em.push(Op::mov64(R5, 0));
        em.push(Op::Call {
            helper: helper::SKB_STORE_BYTES,
        });
        em.push(Op::Ja { target: done });
    }

    /// `redirect … to proxy ADDR:PORT` for TCP of either family: the
    /// packet is assigned (`bpf_sk_assign`) to the proxy's listening
    /// socket, found with `bpf_sk_lookup_tcp` on (ADDR, PORT) — the
    /// 12-byte IPv4 or the 36-byte IPv6 `bpf_sock_tuple`, ADDR the
    /// rule's address when it is of the connection's family, else the
    /// unspecified address (only a wildcard listener matches); the
    /// destination address is not rewritten, so the proxy (the node
    /// routes the original destination locally) sees the original
    /// destination. No proxy socket, or not TCP: the packet passes
    /// unsteered. Only the first packet is assigned: the connection's
    /// request and established sockets carry the original destination as
    /// their local address, so the stack's own lookup finds them for the
    /// later packets (which take the `established` path).
    fn redirect_to_proxy(&self, em: &mut Em) {
        let done = em.label("redirect_done");
        let v6 = em.label("redirect_v6");
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.jmp(JmpCond::Ne, R1, 6, done);
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R1, 6, v6);
        em.jmp(JmpCond::Ne, R1, 4, done);
        // Tuple (saddr, daddr, sport, dport) of the listener.
        const T: i16 = -184;
        em.push(Op::load(Size::U32, R1, R6, ctx::SRC));
        em.push(Op::store(Size::U32, R10, T, R1));
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ADDR));
        em.push(Op::store(Size::U32, R10, T + 4, R1));
        em.push(Op::load(Size::U16, R1, R6, ctx::SPORT));
        em.push(be16(R1));
        em.push(Op::store(Size::U16, R10, T + 8, R1));
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ARG));
        em.push(be16(R1));
        em.push(Op::store(Size::U16, R10, T + 10, R1));
        self.sk_assign(em, T, 12, done);
        // IPv6: saddr (16), daddr (16), sport, dport.
        em.bind(v6);
        const T6: i16 = -224;
        for i in 0..4i16 {
            em.push(Op::load(Size::U32, R1, R6, ctx::SRC + 4 * i));
            em.push(Op::store(Size::U32, R10, T6 + 4 * i, R1));
            em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ADDR6 + 4 * i));
            em.push(Op::store(Size::U32, R10, T6 + 16 + 4 * i, R1));
        }
        em.push(Op::load(Size::U16, R1, R6, ctx::SPORT));
        em.push(be16(R1));
        em.push(Op::store(Size::U16, R10, T6 + 32, R1));
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ARG));
        em.push(be16(R1));
        em.push(Op::store(Size::U16, R10, T6 + 34, R1));
        self.sk_assign(em, T6, 36, done);
        em.bind(done);
    }

    /// `sk = sk_lookup_tcp(tuple of `size` bytes at fp + t);
    /// sk_assign(skb, sk); release`. Jumps to `done` (also when no socket
    /// is found). Clobbers r9.
    fn sk_assign(&self, em: &mut Em, t: i16, size: i32, done: Label) {
        em.push(Op::mov64(R1, R7));
        em.push(Op::mov64(R2, R10));
        em.push(Op::alu64(AluOp::Add, R2, i32::from(t)));
        em.push(Op::mov64(R3, size));
        em.push(Op::mov64(R4, -1)); // BPF_F_CURRENT_NETNS
        em.push(Op::mov64(R5, 0));
        em.push(Op::Call {
            helper: helper::SK_LOOKUP_TCP,
        });
        em.jmp(JmpCond::Eq, R0, 0, done);
        em.push(Op::mov64(R9, R0));
        em.push(Op::mov64(R2, R0));
        em.push(Op::mov64(R1, R7));
        em.push(Op::mov64(R3, 0));
        em.push(Op::Call {
            helper: helper::SK_ASSIGN,
        });
        em.push(Op::mov64(R1, R9));
        em.push(Op::Call {
            helper: helper::SK_RELEASE,
        });
        em.push(Op::Ja { target: done });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::service::tests::compile;

    /// The prologue's frontend-port gate: TCP / UDP frontends of both
    /// families (not SCTP), as `proto << 16 | port`, consecutive keys
    /// merged into one range.
    #[test]
    fn frontend_ports_are_merged_ranges_of_translated_frontends() {
        let (_, g) = compile(
            r#"
service a {
  frontend 10.96.0.1:80/tcp
  frontend 10.96.0.1:81/tcp
  frontend 10.96.0.2:82/tcp
  frontend 10.96.0.1:53/udp
  frontend 10.96.0.3:80/tcp
  frontend [fd00::1]:9000/tcp
  frontend 10.96.0.4:7000/sctp
  backends { 10.1.0.1:8080 }
}
"#,
        );
        let tcp = |p: u32| 6 << 16 | p;
        assert_eq!(
            frontend_ports(&g),
            vec![
                (tcp(80), tcp(82)),
                (tcp(9000), tcp(9000)),
                (17 << 16 | 53, 17 << 16 | 53)
            ]
        );
    }
}
