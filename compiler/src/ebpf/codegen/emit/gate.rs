//! The prologue's gate in front of the `weir_lb_ct` lookup: "no lookup a
//! packet does not need" (issue 21). Only this generation translates
//! (`weir_lb_ct` is not shared across generations), and only to its own
//! frontends: a packet whose destination is not one of them has no
//! recorded translation and skips the hash of a 40-byte key. Two inline
//! searches, each over merged ranges:
//!
//! - the destination address: an IPv4 packet against the IPv4 frontend
//!   addresses (host order; consecutive addresses — a service CIDR —
//!   merge into one range); an IPv6 packet passes only when there are
//!   IPv6 frontends (a 128-bit search would cost more than it saves);
//! - `proto << 16 | port` against the frontends' protocols and ports.
//!
//! Either search is left out when its ranges exceed
//! [`MAX_FRONTEND_RANGES`] (then those packets look).

use super::*;

/// More merged ranges than this and a search is not emitted.
pub const MAX_FRONTEND_RANGES: usize = 256;

/// Sorted keys merged into ranges of consecutive values.
fn ranges(keys: std::collections::BTreeSet<u32>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for k in keys {
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(k) => last.1 = k,
            _ => out.push((k, k)),
        }
    }
    out
}

/// The frontends the TC path translates (TCP / UDP / SCTP, either family).
fn translated(g: &Graph) -> impl Iterator<Item = &crate::model::Frontend> {
    g.services
        .frontends
        .iter()
        .map(|f| &f.frontend)
        .filter(|f| matches!(proto_number(f.proto), 6 | 17 | 132))
}

/// `proto << 16 | port` of every translated frontend, as sorted ranges
/// of consecutive keys.
pub(super) fn frontend_ports(g: &Graph) -> Vec<(u32, u32)> {
    ranges(
        translated(g)
            .map(|f| u32::from(proto_number(f.proto)) << 16 | u32::from(f.port))
            .collect(),
    )
}

/// The translated IPv4 frontends' addresses (host order) as sorted
/// ranges, and whether there are IPv6 ones.
pub(super) fn frontend_addrs(g: &Graph) -> (Vec<(u32, u32)>, bool) {
    let mut v4 = std::collections::BTreeSet::new();
    let mut v6 = false;
    for f in translated(g) {
        match f.addr {
            std::net::IpAddr::V4(a) => {
                v4.insert(u32::from(a));
            }
            std::net::IpAddr::V6(_) => v6 = true,
        }
    }
    (ranges(v4), v6)
}

impl Gen<'_> {
    /// Jumps to `not_frontend` unless the packet's destination address
    /// and protocol / port may be a translated frontend's (see the
    /// module docs); falls through otherwise.
    pub(super) fn frontend_gate(&self, em: &mut Em, proto: i16, not_frontend: Label) {
        let (v4, v6) = frontend_addrs(self.g);
        let port_check = em.label("lb_frontend_addr");
        if v4.len() <= MAX_FRONTEND_RANGES {
            let is_v6 = em.label("lb_gate6");
            em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
            em.jmp(JmpCond::Eq, R1, 6, is_v6);
            em.push(Op::load(Size::U32, R1, R6, ctx::DST));
            em.push(Op::Endian {
                order: ByteOrder::Be,
                bits: 32,
                dst: R1,
            });
            let iv: Vec<(u32, u32, Label)> =
                v4.iter().map(|&(lo, hi)| (lo, hi, port_check)).collect();
            em.search(R1, &iv, not_frontend);
            em.bind(is_v6);
            if !v6 {
                em.push(Op::Ja {
                    target: not_frontend,
                });
            }
        }
        em.bind(port_check);
        let ports = frontend_ports(self.g);
        if ports.len() <= MAX_FRONTEND_RANGES {
            let maybe = em.label("lb_frontend_port");
            em.push(Op::load(Size::U8, R1, R6, proto));
            em.push(Op::alu64(AluOp::Lsh, R1, 16));
            em.push(Op::load(Size::U16, R2, R6, ctx::DPORT));
            em.push(Op::alu64(AluOp::Or, R1, R2));
            let iv: Vec<(u32, u32, Label)> =
                ports.iter().map(|&(lo, hi)| (lo, hi, maybe)).collect();
            em.search(R1, &iv, not_frontend);
            em.bind(maybe);
        }
    }
}
