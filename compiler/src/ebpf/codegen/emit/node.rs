//! Graph-node blocks: tests, tables, and the steering and verdict leaves
//! that record a side's decision in the context.

use super::*;
use crate::ebpf::codegen::leaf_events::continues_to_ingress;

impl Gen<'_> {
    pub(super) fn cond_text(&self, c: &Cond) -> String {
        match *c {
            Cond::Proto(p) => format!("proto == {}", proto_number(p)),
            Cond::DPort { lo, hi } if lo == hi => format!("dport == {lo}"),
            Cond::DPort { lo, hi } => format!("dport in {lo}-{hi}"),
            Cond::IcmpType(t) => format!("icmp type == {t}"),
            Cond::IcmpCode(t) => format!("icmp code == {t}"),
            Cond::SrcAtom(a) => format!("src is {}", self.g.classes.atoms[a as usize]),
            Cond::DstAtom(a) => format!("dst is {}", self.g.classes.atoms[a as usize]),
            Cond::SameEndpoint => "src and dst are one endpoint".into(),
        }
    }

    pub(super) fn node(&self, em: &mut Em, e: Entry, n: NodeId) {
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
                    Cond::SrcAtom(a) | Cond::DstAtom(a) if self.sparse_atoms => {
                        use super::super::sparse_atoms::{class_of, emit_test};
                        emit_test(em, class_of(cond), a, t);
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
                    Cond::SameEndpoint => {
                        let f = child(em, *els);
                        self.same_endpoint(em, t, f);
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

    pub(super) fn steer_leaf(&self, em: &mut Em, s: SteerLeaf) {
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

    pub(super) fn verdict_leaf(&self, em: &mut Em, e: Entry, v: &VerdictLeaf) {
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
        // Handed to the stage's shared events block, or inline.
        let pending = self.pending_events(em, v);
        if !pending {
            self.leaf_events(em, v);
        }
        em.a.set_origin(Origin(v.decided), Some(&text));
        let f = super::verdict::leaf_flags(v.allow, self.prov_is_rule(v.decided));
        em.push(Op::store(
            Size::U32,
            R6,
            word,
            layout::side_word(v.decided, recorded, f),
        ));
        let to_ingress = continues_to_ingress(e, v, self.mode == Mode::Node);
        let next = if pending {
            self.leaf_events_block(to_ingress)
        } else if to_ingress {
            self.root_block(Entry::Ingress)
        } else {
            self.final_block()
        };
        em.goto(next);
    }
}
