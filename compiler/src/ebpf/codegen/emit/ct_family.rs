//! Every helper call on the conntrack tables goes through here: one
//! table per family (issue 21, "16-byte IPv4 keys"). The programs build
//! a flow's key in the 40-byte layout ([`layout::ct`]) whatever its
//! family, and every reader of a built key (the reply test, the forward
//! entry's client end, the collector) keeps reading that layout; only at
//! the call is an IPv4 key (its family byte 4) compacted into the
//! 16-byte [`layout::ct::v4`] layout in its own stack slot and the call
//! made on `weir_ct4`. An IPv6 key goes to `weir_ct` unchanged.
//!
//! Why: a new allowed flow's time is mostly the kernel's hash-table work
//! on these keys (a perf profile of the driven new allowed flow:
//! `lookup_nulls_elem_raw`, the insert's copy into a cold element,
//! `htab_map_update_elem`, `htab_map_hash` are ~80 % of it): each of the
//! miss lookup, the insert (which looks up again inside the kernel) and
//! every established packet's lookup hashes and compares the key, and
//! the element's size (header + key + value) sets how many cache lines
//! an insert touches. An IPv4 key of 40 bytes is 24 bytes of zeros.
//!
//! Two call sites per call (one per table, each with its own map
//! pointer) rather than one call on a map chosen in a register: the
//! verifier inlines a hash lookup only at a call site that always sees
//! the same map.

use super::*;

/// Stack slot of the compacted IPv4 key (16 bytes; written right before
/// the call and dead after it).
const KEY4: i16 = -120;
const _: () = assert!(KEY4 + layout::ct::v4::KEY_SIZE as i16 <= CT_KEY_COPY);

/// Which map helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CtCall {
    /// `r0 = bpf_map_lookup_elem(table, key)`.
    Lookup,
    /// `r0 = bpf_map_update_elem(table, key, fp + value, BPF_ANY)`.
    Update(i16),
    /// `r0 = bpf_map_delete_elem(table, key)`.
    Delete,
}

impl Em<'_> {
    /// `call` on the conntrack table of the key at `fp + key` (40-byte
    /// layout, fully written): `weir_ct4` with the key compacted when its
    /// family byte is 4, else `weir_ct`. r0 as the helper leaves it;
    /// r1–r5 clobbered.
    pub(super) fn ct_call(&mut self, call: CtCall, key: i16) {
        use layout::ct;
        let v6 = self.label("ct_v6");
        let done = self.label("ct_called");
        self.push(Op::load(Size::U8, R1, R10, key + ct::FAMILY));
        self.jmp(JmpCond::Ne, R1, 4, v6);
        for (to, from, size) in [
            (ct::v4::SRC, ct::SRC, Size::U32),
            (ct::v4::DST, ct::DST, Size::U32),
            (ct::v4::SPORT, ct::SPORT, Size::U64),
        ] {
            self.push(Op::load(size, R1, R10, key + from));
            self.push(Op::store(size, R10, KEY4 + to, R1));
        }
        self.ct_helper(call, map::CT4, KEY4);
        self.push(Op::Ja { target: done });
        self.bind(v6);
        self.ct_helper(call, map::CT, key);
        self.bind(done);
    }

    fn ct_helper(&mut self, call: CtCall, m: &str, key: i16) {
        self.push(Op::mov64(R2, R10));
        self.push(Op::alu64(AluOp::Add, R2, i32::from(key)));
        if let CtCall::Update(value) = call {
            self.push(Op::mov64(R3, R10));
            self.push(Op::alu64(AluOp::Add, R3, i32::from(value)));
            self.push(Op::mov64(R4, 0));
        }
        self.push(Op::ld_map_fd(R1, m));
        self.push(Op::Call {
            helper: match call {
                CtCall::Lookup => helper::MAP_LOOKUP_ELEM,
                CtCall::Update(_) => helper::MAP_UPDATE_ELEM,
                CtCall::Delete => helper::MAP_DELETE_ELEM,
            },
        });
    }
}
