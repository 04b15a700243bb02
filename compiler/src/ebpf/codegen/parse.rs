//! The prologue's packet parse: Ethernet, IPv4 (options) or IPv6 with its
//! extension-header chain, then the transport header's ports or ICMP
//! type and code, into the scratch context.
//!
//! docs/language.md §4 ("Headers") is what this implements: the protocol
//! of an IPv6 packet is its upper-layer protocol, found by walking up to
//! [`MAX_EXTENSION_HEADERS`] hop-by-hop (0), routing (43), fragment (44),
//! destination-options (60) and AH (51) headers. A packet this parse
//! cannot see through — truncated headers, a longer chain, a transport
//! header starting beyond [`MAX_HEADER_OFFSET`] — is denied and counted
//! as `unparsed`; a non-first fragment of either family (no transport
//! header) is denied and counted as `fragment`. Neither is ever judged by
//! a rule: with its ports unknown, it could match one it would not match
//! whole.
//!
//! The walk is a bounded loop (one copy of the step, the verifier runs it
//! at most [`MAX_EXTENSION_HEADERS`] times; the prologue stays small) and
//! keeps the offset of the current header in the context
//! ([`ctx::PARSE_OFF`]), not in a register: a value loaded from a map is
//! unknown to the verifier on every path, so the paths of different
//! header lengths merge at every step (pruned states) instead of
//! multiplying (3^8). Only IPv6 packets with extension headers take the
//! walk; IPv4 and plain IPv6 do not.
//!
//! The protocol the rules see ([`ctx::PROTO`]) is the wire protocol,
//! except that the other family's ICMP — protocol 58 in IPv4, next header
//! 1 in IPv6 — reads as [`OTHER_PROTO`]: `icmp` is ICMPv4 and `icmp6`
//! ICMPv6, each in its own family only (`crate::interp::rule_proto`).
//! Only the family's ICMP has its type and code read; any other packet
//! has them 0, as the decision graph assumes.

use super::emit::{Em, Gen};
use super::layout::{ctx, skb, TC_ACT_SHOT};
use crate::ebpf::{AluOp, JmpCond, Label, Op, Origin, Reg, Size};
use crate::interp::{MAX_EXTENSION_HEADERS, OTHER_PROTO};
use crate::provenance::Provenance;

use Reg::*;

/// Extension headers the walk steps over (IPv6 next-header values).
const EXTENSION_HEADERS: [i32; 5] = [0, 43, 44, 60, 51];
const FRAGMENT: i32 = 44;
const AH: i32 = 51;

/// The transport header must start within this many bytes of the frame
/// (a bound the verifier needs on a variable packet offset).
pub const MAX_HEADER_OFFSET: i32 = 0x3fff;

/// Labels shared by the parse's parts.
struct Exits {
    /// Not IP: passed.
    pass: Label,
    /// Headers not seen through: denied, counted `unparsed`.
    unparsed: Label,
    /// A non-first fragment: denied, counted `fragment`.
    fragment: Label,
    /// The transport header at r2, its protocol in `ctx::RAW_PROTO`.
    l4: Label,
}

impl Gen<'_> {
    /// Parse the frame into the context; continues after it with the
    /// fields filled (ports 0 for protocols without them). Frames that are
    /// not IP pass (`em.pass`).
    pub fn parse(&self, em: &mut Em) {
        let c = |em: &mut Em, s: &str| em.a.set_origin(Origin::NONE, Some(s));
        c(em, "parse: ethernet");
        let x = Exits {
            pass: em.pass,
            unparsed: em.label("unparsed"),
            fragment: em.label("fragment"),
            l4: em.label("l4"),
        };
        let v4 = em.label("ipv4");
        let v6 = em.label("ipv6");
        em.push(Op::load(Size::U32, R2, R7, skb::DATA));
        em.push(Op::load(Size::U32, R3, R7, skb::DATA_END));
        em.push(Op::mov64(R4, R2));
        em.push(Op::alu64(AluOp::Add, R4, 14));
        em.push(Op::jmp(JmpCond::Gt, R4, R3, x.pass));
        em.push(Op::load(Size::U16, R4, R2, 12));
        em.jmp(JmpCond::Eq, R4, 0x0008, v4);
        em.jmp(JmpCond::Eq, R4, 0xdd86, v6);
        // Not IP (ARP, …): not ours to police.
        em.push(Op::Ja { target: x.pass });

        c(em, "parse: ipv4");
        em.bind(v4);
        self.ipv4(em, &x);
        c(em, "parse: ipv6 and its extension headers");
        em.bind(v6);
        self.ipv6(em, &x);
        c(em, "parse: ports / icmp type and code");
        self.transport(em, &x);
    }

    fn ipv4(&self, em: &mut Em, x: &Exits) {
        em.push(Op::mov64(R4, R2));
        em.push(Op::alu64(AluOp::Add, R4, 34));
        em.push(Op::jmp(JmpCond::Gt, R4, R3, x.unparsed));
        em.push(Op::load(Size::U8, R5, R2, 14));
        em.push(Op::alu64(AluOp::And, R5, 15));
        em.push(Op::alu64(AluOp::Lsh, R5, 2));
        em.jmp(JmpCond::Lt, R5, 20, x.unparsed);
        em.push(Op::load(Size::U32, R4, R2, 26));
        em.push(Op::store(Size::U32, R6, ctx::SRC, R4));
        em.push(Op::load(Size::U32, R4, R2, 30));
        em.push(Op::store(Size::U32, R6, ctx::DST, R4));
        em.push(Op::store(Size::U8, R6, ctx::FAMILY, 4));
        em.push(Op::load(Size::U8, R4, R2, 23));
        em.push(Op::store(Size::U8, R6, ctx::RAW_PROTO, R4));
        Self::store_rule_proto(em, 58);
        // A non-first fragment carries no transport header.
        em.push(Op::load(Size::U16, R0, R2, 20));
        em.push(Op::be16(R0));
        em.push(Op::alu64(AluOp::And, R0, 0x1fff));
        em.jmp(JmpCond::Ne, R0, 0, x.fragment);
        if self.has_services {
            // The transport header's frame offset, for the service
            // stage's rewrite (`ctx.PARSE_OFF`, as the IPv6 walk leaves
            // it): no helper call to read the IHL again there.
            em.push(Op::mov64(R4, R5));
            em.push(Op::alu64(AluOp::Add, R4, 14));
            em.push(Op::store(Size::U16, R6, ctx::PARSE_OFF, R4));
        }
        em.push(Op::alu64(AluOp::Add, R2, 14));
        em.push(Op::alu64(AluOp::Add, R2, R5));
        em.push(Op::Ja { target: x.l4 });
    }

    /// `ctx.PROTO` = r4, or [`OTHER_PROTO`] when r4 is `foreign_icmp`
    /// (the other family's ICMP). Keeps r4.
    fn store_rule_proto(em: &mut Em, foreign_icmp: i32) {
        let own = em.label("rule_proto");
        em.push(Op::store(Size::U8, R6, ctx::PROTO, R4));
        em.jmp(JmpCond::Ne, R4, foreign_icmp, own);
        em.push(Op::store(Size::U8, R6, ctx::PROTO, i32::from(OTHER_PROTO)));
        em.bind(own);
    }

    /// Jumps to `to` if r4 is an extension header the walk steps over.
    fn if_extension(em: &mut Em, to: Label) {
        for h in EXTENSION_HEADERS {
            em.jmp(JmpCond::Eq, R4, h, to);
        }
    }

    fn ipv6(&self, em: &mut Em, x: &Exits) {
        em.push(Op::mov64(R4, R2));
        em.push(Op::alu64(AluOp::Add, R4, 54));
        em.push(Op::jmp(JmpCond::Gt, R4, R3, x.unparsed));
        for i in 0..4i16 {
            em.push(Op::load(Size::U32, R4, R2, 22 + 4 * i));
            em.push(Op::store(Size::U32, R6, ctx::SRC + 4 * i, R4));
            em.push(Op::load(Size::U32, R4, R2, 38 + 4 * i));
            em.push(Op::store(Size::U32, R6, ctx::DST + 4 * i, R4));
        }
        em.push(Op::store(Size::U8, R6, ctx::FAMILY, 6));
        em.push(Op::load(Size::U8, R4, R2, 20));
        let walk = em.label("ipv6_ext");
        let upper = em.label("ipv6_upper");
        Self::if_extension(em, walk);
        em.push(Op::alu64(AluOp::Add, R2, 54));
        em.push(Op::Ja { target: upper });

        // r4: the type of the header at offset ctx.PARSE_OFF (an
        // extension header on entry to each step); r8: steps taken (free
        // until the class rows are loaded). A bounded loop: one copy of the
        // step, the verifier runs it at most MAX_EXTENSION_HEADERS times.
        em.bind(walk);
        em.push(Op::store(Size::U16, R6, ctx::PARSE_OFF, 54));
        em.push(Op::mov64(R8, 0));
        let (step, found) = (em.label("ipv6_ext_step"), em.label("ipv6_ext_done"));
        em.bind(step);
        // Still an extension header after the last step: too long a chain.
        em.jmp(JmpCond::Ge, R8, MAX_EXTENSION_HEADERS as i32, x.unparsed);
        em.push(Op::alu64(AluOp::Add, R8, 1));
        self.extension_step(em, x);
        Self::if_extension(em, step);
        em.bind(found);
        em.push(Op::load(Size::U16, R5, R6, ctx::PARSE_OFF));
        em.jmp(JmpCond::Gt, R5, MAX_HEADER_OFFSET, x.unparsed);
        em.push(Op::alu64(AluOp::Add, R2, R5));

        em.bind(upper);
        em.push(Op::store(Size::U8, R6, ctx::RAW_PROTO, R4));
        Self::store_rule_proto(em, 1);
        // Falls through to the transport header (`x.l4`, laid out next).
    }

    /// One step of the walk: the header of type r4 at `ctx.PARSE_OFF`
    /// (at least 8 bytes, all present) gives the next type (r4) and its
    /// length (hop-by-hop, routing, destination options: (len + 1) × 8;
    /// AH: (len + 2) × 4; fragment: 8, or the packet is a non-first
    /// fragment); the offset advances by it.
    fn extension_step(&self, em: &mut Em, x: &Exits) {
        let (ah, frag, advance) = (em.label("ah"), em.label("frag"), em.label("ext_len"));
        em.push(Op::load(Size::U16, R5, R6, ctx::PARSE_OFF));
        em.jmp(JmpCond::Gt, R5, MAX_HEADER_OFFSET, x.unparsed);
        em.push(Op::mov64(R1, R2));
        em.push(Op::alu64(AluOp::Add, R1, R5));
        em.push(Op::mov64(R0, R1));
        em.push(Op::alu64(AluOp::Add, R0, 8));
        em.push(Op::jmp(JmpCond::Gt, R0, R3, x.unparsed));
        em.push(Op::load(Size::U8, R0, R1, 1));
        em.jmp(JmpCond::Eq, R4, FRAGMENT, frag);
        em.jmp(JmpCond::Eq, R4, AH, ah);
        em.push(Op::alu64(AluOp::Add, R0, 1));
        em.push(Op::alu64(AluOp::Lsh, R0, 3));
        em.push(Op::Ja { target: advance });
        em.bind(ah);
        em.push(Op::alu64(AluOp::Add, R0, 2));
        em.push(Op::alu64(AluOp::Lsh, R0, 2));
        em.push(Op::Ja { target: advance });
        em.bind(frag);
        em.push(Op::load(Size::U16, R0, R1, 2));
        em.push(Op::be16(R0));
        em.push(Op::alu64(AluOp::And, R0, 0xfff8));
        em.jmp(JmpCond::Ne, R0, 0, x.fragment);
        em.push(Op::mov64(R0, 8));
        em.bind(advance);
        em.push(Op::load(Size::U8, R4, R1, 0));
        em.push(Op::alu64(AluOp::Add, R5, R0));
        em.push(Op::store(Size::U16, R6, ctx::PARSE_OFF, R5));
    }

    /// The transport header at r2: ports of TCP / UDP / SCTP, type and
    /// code of the family's ICMP (ICMP in IPv4, ICMPv6 in IPv6: dispatched
    /// on `ctx.PROTO`, where the other family's ICMP is [`OTHER_PROTO`]);
    /// the denied exits.
    fn transport(&self, em: &mut Em, x: &Exits) {
        let ports = em.label("ports");
        let icmp = em.label("icmp");
        let done = em.label("l4_done");
        em.bind(x.l4);
        em.push(Op::load(Size::U8, R4, R6, ctx::PROTO));
        for p in [6, 17, 132] {
            em.jmp(JmpCond::Eq, R4, p, ports);
        }
        em.jmp(JmpCond::Eq, R4, 1, icmp);
        em.jmp(JmpCond::Eq, R4, 58, icmp);
        em.push(Op::Ja { target: done });
        em.bind(ports);
        em.push(Op::mov64(R4, R2));
        em.push(Op::alu64(AluOp::Add, R4, 4));
        em.push(Op::jmp(JmpCond::Gt, R4, R3, x.unparsed));
        em.push(Op::load(Size::U16, R4, R2, 0));
        em.push(Op::be16(R4));
        em.push(Op::store(Size::U16, R6, ctx::SPORT, R4));
        em.push(Op::load(Size::U16, R4, R2, 2));
        em.push(Op::be16(R4));
        em.push(Op::store(Size::U16, R6, ctx::DPORT, R4));
        em.push(Op::Ja { target: done });
        // Both header denials share one event (the id just counted is
        // at fp-4).
        let denied = em.label("header_denied");
        for (l, by) in [
            (x.fragment, Provenance::Fragment),
            (x.unparsed, Provenance::Unparsed),
        ] {
            let id = self.g.provenance.id(&by);
            em.a.set_origin(Origin(id), Some(&by.describe(self.model)));
            em.bind(l);
            em.count_imm(id);
            em.push(Op::Ja { target: denied });
        }
        em.bind(denied);
        self.event(
            em,
            crate::contract::event::EventVerdict::Deny,
            super::events::IdAt::Stack(-4),
            false,
        );
        em.push(Op::mov64(R0, TC_ACT_SHOT));
        em.push(Op::Exit);
        em.a.set_origin(Origin::NONE, Some("parse: icmp type and code"));
        em.bind(icmp);
        em.push(Op::mov64(R4, R2));
        em.push(Op::alu64(AluOp::Add, R4, 2));
        em.push(Op::jmp(JmpCond::Gt, R4, R3, x.unparsed));
        em.push(Op::load(Size::U8, R4, R2, 0));
        em.push(Op::store(Size::U8, R6, ctx::ICMP_TYPE, R4));
        em.push(Op::load(Size::U8, R4, R2, 1));
        em.push(Op::store(Size::U8, R6, ctx::ICMP_CODE, R4));
        em.bind(done);
    }
}
