//! The prologue block: scratch context, parsing, translation of an
//! established service flow, the conntrack lookup (reverse NAT of
//! replies) and classification of both addresses (of the source only
//! where the service block classifies the destination: `dst_class.rs`).

use super::*;

impl Gen<'_> {
    pub(super) fn prologue(&self, em: &mut Em) {
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

        // An ICMP error quoting a known flow is established (its own
        // key is built below only when it is not).
        self.related_icmp(em);

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
        em.ct_call(CtCall::Lookup, CT_KEY_COPY);
        let new = em.label("new_flow");
        em.jmp(JmpCond::Eq, R0, 0, new);
        self.forward_entry(em, new, established);
        if self.fixed_tables() {
            self.mark_seen(em);
        }
        self.flow_proxy(em);
        let ok = em.label("established_ok");
        if self.has_services {
            // A packet of a translated flow (the entry's flag bit) that
            // was not DNATed above may be a reply (backend → client):
            // below. Forward packets were DNATed (ctx.SERVICE set) and
            // other flows' need nothing.
            em.a.set_origin(Origin(0), Some("service: reverse NAT of replies"));
            em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
            em.jmp(JmpCond::Ne, R1, 0, established);
            em.push(Op::load(Size::U64, R1, R0, layout::ct::TIME));
            em.jmp(JmpCond::Set, R1, layout::ct::TRANSLATED, reply);
        }
        em.bind(established);
        em.a.set_origin(Origin(0), Some("conntrack: established connection"));
        em.count_imm(0);
        self.established_redirect(em);
        em.bind(ok);
        em.push(Op::mov64(R0, layout::TC_ACT_OK));
        em.push(Op::Exit);
        if self.has_services {
            // A reply is a packet from the flow's other end than its
            // client (the entry's `CLIENT_FIRST` bit against the packet's
            // place in the canonical key; a packet from the client itself,
            // sent straight to the backend, is not one): the frontend the
            // entry carries becomes its source.
            em.bind(reply);
            em.a.set_origin(Origin(0), Some("service: reverse NAT of replies"));
            em.push(Op::alu64(AluOp::And, R1, layout::ct::CLIENT_FIRST));
            self.src_first(em, R2);
            em.push(Op::jmp(JmpCond::Eq, R1, R2, established));
            for (to, from, size) in [
                (0i16, layout::ct::FE_ADDR, Size::U64),
                (8, layout::ct::FE_ADDR + 8, Size::U64),
                (16, layout::ct::FE_PORT, Size::U16),
            ] {
                em.push(Op::load(size, R1, R0, from));
                em.push(Op::store(size, R10, REV_FRONTEND + to, R1));
            }
            em.count_imm(0);
            let env = self.lb_env(em, ok);
            emit_reverse_nat_from(em.a, &env, REV_FRONTEND, REV_FRONTEND + 16);
            em.push(Op::Ja { target: ok });
        }
        em.bind(new);
        c(
            em,
            "classify: address → class (host hash, then the CIDRs' LPM trie)",
        );
        let cls6 = em.label("cls6");
        let classified = em.label("classified");
        // The destination's class may be the service block's
        // (`dst_class.rs`).
        let defer = self.defers_dst_class();
        let ends = [(ctx::SRC, ctx::SRC_CLASS), (ctx::DST, ctx::DST_CLASS)];
        let ends = &ends[..if defer { 1 } else { 2 }];
        em.push(Op::load(Size::U8, R4, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R4, 6, cls6);
        for &(addr, out) in ends {
            self.classify(em, 4, addr, out);
        }
        em.push(Op::Ja { target: classified });
        em.bind(cls6);
        for &(addr, out) in ends {
            self.classify(em, 6, addr, out);
        }
        em.bind(classified);

        if !defer {
            self.load_rows(em);
        }
        let first = self.root_block(Entry::Steer);
        em.goto(first);
    }

    /// The packet's conntrack key (`ctx::CT_KEY`, source first) in
    /// canonical order at `fp + out` ([`Self::canonical_key_of`]), so a
    /// flow and its replies share one `weir_ct` entry and one lookup
    /// finds either direction.
    pub(super) fn canonical_ct_key(&self, em: &mut Em, out: i16) {
        use layout::ct;
        let k = ctx::CT_KEY;
        self.canonical_key_of(
            em,
            [(k + ct::SRC, k + ct::SPORT), (k + ct::DST, k + ct::DPORT)],
            out,
        );
    }

    /// The `weir_ct` key of the flow between two (address, port) ends in
    /// the context (`ctx[addr]` 16 bytes, `ctx[port]` u16; the packet's
    /// protocol and family) in canonical order at `fp + out`: the ends
    /// compared as (first 8 address bytes, next 8, port) — unsigned,
    /// native order — and the smaller one first. The one definition of
    /// the order, for the packet's own key and a translated flow's
    /// forward key (client ↔ frontend, `verdict.rs`); the collector's
    /// `flow_key` in the runtime computes the same.
    pub(super) fn canonical_key_of(&self, em: &mut Em, ends: [(i16, i16); 2], out: i16) {
        use layout::ct;
        let [(a, ap), (b, bp)] = ends;
        let k = ctx::CT_KEY;
        // The packet's own key is contiguous in the context: kept in
        // order it is copied in five words.
        let whole = ends == [(k + ct::SRC, k + ct::SPORT), (k + ct::DST, k + ct::DPORT)];
        let keep = em.label("ct_key_in_order");
        let swap = em.label("ct_key_swapped");
        let done = em.label("ct_key_done");
        for w in [0i16, 8] {
            em.push(Op::load(Size::U64, R1, R6, a + w));
            em.push(Op::load(Size::U64, R2, R6, b + w));
            em.push(Op::jmp(JmpCond::Lt, R1, R2, keep));
            em.push(Op::jmp(JmpCond::Gt, R1, R2, swap));
        }
        em.push(Op::load(Size::U16, R1, R6, ap));
        em.push(Op::load(Size::U16, R2, R6, bp));
        em.push(Op::jmp(JmpCond::Le, R1, R2, keep));
        em.bind(swap);
        let tail = |em: &mut Em| {
            if whole {
                em.push(Op::load(Size::U32, R1, R6, k + ct::PROTO));
                em.push(Op::store(Size::U32, R10, out + ct::PROTO, R1));
            } else {
                em.push(Op::store(Size::U32, R10, out + ct::PROTO, 0));
                em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
                em.push(Op::store(Size::U8, R10, out + ct::PROTO, R1));
                em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
                em.push(Op::store(Size::U8, R10, out + ct::FAMILY, R1));
            }
        };
        for (to, from, size) in [
            (ct::SRC, b, Size::U64),
            (ct::SRC + 8, b + 8, Size::U64),
            (ct::DST, a, Size::U64),
            (ct::DST + 8, a + 8, Size::U64),
            (ct::SPORT, bp, Size::U16),
            (ct::DPORT, ap, Size::U16),
        ] {
            em.push(Op::load(size, R1, R6, from));
            em.push(Op::store(size, R10, out + to, R1));
        }
        tail(em);
        em.push(Op::Ja { target: done });
        em.bind(keep);
        if whole {
            for off in (0..ct::KEY_SIZE as i16).step_by(8) {
                em.push(Op::load(Size::U64, R1, R6, k + off));
                em.push(Op::store(Size::U64, R10, out + off, R1));
            }
        } else {
            for (to, from, size) in [
                (ct::SRC, a, Size::U64),
                (ct::SRC + 8, a + 8, Size::U64),
                (ct::DST, b, Size::U64),
                (ct::DST + 8, b + 8, Size::U64),
                (ct::SPORT, ap, Size::U16),
                (ct::DPORT, bp, Size::U16),
            ] {
                em.push(Op::load(size, R1, R6, from));
                em.push(Op::store(size, R10, out + to, R1));
            }
            tail(em);
        }
        em.bind(done);
    }

    /// `out` = [`layout::ct::CLIENT_FIRST`] when the packet's source end
    /// (`ctx::CT_KEY`) is the first end of its canonical key at
    /// `fp + CT_KEY_COPY` ([`Self::canonical_ct_key`]), else 0. Uses r3,
    /// r4; `out` is neither.
    pub(super) fn src_first(&self, em: &mut Em, out: Reg) {
        use layout::ct;
        let k = ctx::CT_KEY;
        self.first_end_is(em, out, (k + ct::SRC, k + ct::SPORT), CT_KEY_COPY);
    }

    /// `out` = [`layout::ct::CLIENT_FIRST`] when the end at `ctx[addr]`,
    /// `ctx[port]` is the first end of the canonical key at `fp + key`,
    /// else 0. Uses r3, r4; `out` is neither.
    pub(super) fn first_end_is(&self, em: &mut Em, out: Reg, end: (i16, i16), key: i16) {
        use layout::ct;
        let (addr, port) = end;
        let done = em.label("src_first_done");
        em.push(Op::mov64(out, 0));
        for (from, at, size) in [
            (addr, 0i16, Size::U64),
            (addr + 8, 8, Size::U64),
            (port, ct::SPORT, Size::U16),
        ] {
            em.push(Op::load(size, R3, R6, from));
            em.push(Op::load(size, R4, R10, key + ct::SRC + at));
            em.push(Op::jmp(JmpCond::Ne, R3, R4, done));
        }
        em.push(Op::mov64(out, ct::CLIENT_FIRST));
        em.bind(done);
    }

    /// `ctx[out]` = the class of the IPv`family` address at `ctx[addr]`:
    /// the host hash (key at fp-16, the address), on a miss the trie when
    /// the class map has shorter prefixes (key at fp-20: length, address),
    /// on a miss again class 0. Uses r0–r5 and fp-20..fp-1.
    pub(super) fn classify(&self, em: &mut Em, family: u8, addr: i16, out: i16) {
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
}
