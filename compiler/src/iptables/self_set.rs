//! `self` in iptables (`Cond::SameEndpoint`; the relation is
//! `graph/same_endpoint.rs`).
//!
//! ipset has pair types (`hash:net,net`), but kernels without that module
//! are common (this project's CI kernel refuses it), and iptables cannot
//! compare a packet's source with its destination. So each endpoint gets
//! an id, kept as data: the per-family set `weir-self` / `weir-selfv6`
//! (`hash:ip` with `skbinfo`) maps each endpoint address to its
//! endpoint's id, stored as the element's `skbmark` *value* with mask 0.
//! The `SET --map-mark` target computes `mark = (mark & ~mask) ^ value`,
//! so with mask 0 it XORs the id into the packet mark. The kernel allows
//! `--map-set` in mangle only, so the relation is computed in mangle
//! FORWARD (after any DNAT: the destination is the backend) into one
//! packet-mark bit, the SAME bit ([`SelfMark::same_bit`]), which the filter
//! chains test (RESERVED, ID_MASK, SAME_BIT: the bits of the [`SelfMark`],
//! by default 0xffff0000, 0xfffe0000, 0x10000):
//!
//! ```text
//! WEIR-MANGLE-FWD (mangle FORWARD):
//!   -m conntrack ! --ctstate NEW -j RETURN        (policy judges new packets only)
//!   -j MARK --set-xmark 0x0/RESERVED              (id bits and SAME_BIT cleared)
//!   -m set ! --match-set weir-self src -j RETURN  (the source is no endpoint)
//!   -j SET --map-set weir-self src --map-mark     (id bits = id(src))
//!   -j SET --map-set weir-self dst --map-mark     (id bits ^= id(dst), if an endpoint)
//!   -m mark --mark 0x0/ID_MASK -j MARK --set-xmark SAME_BIT/SAME_BIT
//!   -j MARK --set-xmark 0x0/ID_MASK
//! filter, the `self` test:  -m mark --mark SAME_BIT/SAME_BIT -g THEN
//! ```
//!
//! Ids are `1 ..= MAX_ID`, never 0, so a destination that is no endpoint
//! leaves a non-zero id and no `SAME_BIT`. The RESERVED bits of the
//! packet mark are the back end's. With `redirect` steering the same
//! chain also runs at the end of mangle PREROUTING (a redirected
//! connection is judged in nat PREROUTING, before mangle FORWARD; it is
//! never DNATed to a service backend, so its destination is already the
//! one judged). Refused (E0501): a steering `mark` that sets a reserved
//! bit (the mark would be overwritten), and a `redirect` that can match
//! connections to a service frontend with backends (each backend is
//! judged in nat before its DNAT, with the frontend still the packet's
//! destination, so the relation computed is not the backend's). Ids are
//! allocated densely at compile time (model order) and by `weir
//! endpoints` at run time (the smallest free one;
//! `crate::churn::self_relation`), so endpoint churn under `allow from
//! self` is set members, never a recompile.

use super::text::Family;
use super::Unsupported;
use crate::diagnostics::{Construct, Refusal};
use crate::graph::Graph;
use crate::model::{Model, SteerAction};
use std::net::IpAddr;

/// The packet-mark bits the `self` test writes (`weir compile
/// --iptables-self-mark MASK`, the manifest's `self_mark`): one
/// contiguous run of at least two bits, whose lowest bit is the SAME bit
/// ("source and destination are one endpoint") and whose other bits hold
/// endpoint ids. Configurable because the mark is shared: kube-proxy
/// uses 0x4000 (`--iptables-masquerade-bit`, default 14; 0x8000 was its
/// drop mark), Calico its `iptablesMarkMask` (default 0xffff0000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SelfMark(u32);

/// The default mask: ids in 0xfffe0000 (32,767 of them), the SAME bit
/// 0x10000. weir replaces the cluster's network-policy engine (Calico,
/// Cilium), not kube-proxy, so the default must leave kube-proxy's bits
/// ([`KUBE_PROXY_BITS`]) alone; the upper half-word is the widest
/// contiguous run that does (a wider one would need bit 15 or 14).
/// It is also Calico's default `iptablesMarkMask`: an operator moving
/// from Calico finds the bits where Calico had them.
pub const DEFAULT_MASK: u32 = 0xffff_0000;

/// The mask of bundles compiled before the default moved (0xfffff800:
/// 1,048,575 ids, overlapping kube-proxy's bits): what a manifest
/// without `self_mark`, and an endpoints record without one, mean.
pub const LEGACY_MASK: u32 = 0xffff_f800;

/// kube-proxy's packet-mark bits: 0x4000 (`--iptables-masquerade-bit`,
/// default 14: "masquerade this connection", set in nat PREROUTING /
/// OUTPUT, tested in nat POSTROUTING) and 0x8000 (its drop mark in
/// releases before 1.29, still set by the kubelet's KUBE-MARK-DROP on
/// older nodes). The default mask must not overlap them.
pub const KUBE_PROXY_BITS: u32 = 0xc000;

impl Default for SelfMark {
    fn default() -> Self {
        SelfMark(DEFAULT_MASK)
    }
}

impl SelfMark {
    /// The mask, or why it cannot be one (not one contiguous run of at
    /// least two bits).
    pub fn new(mask: u32) -> Result<SelfMark, String> {
        let low = mask & mask.wrapping_neg();
        // One contiguous run: adding its lowest bit carries through it.
        let contiguous = mask != 0 && (mask.wrapping_add(low) & mask) == 0;
        if !contiguous || mask.count_ones() < 2 {
            return Err(format!(
                "the self mark mask must be one contiguous run of at least 2 bits (its lowest bit marks `self`, the bits above it hold endpoint ids), not {mask:#x}"
            ));
        }
        Ok(SelfMark(mask))
    }

    /// `--iptables-self-mark`'s value: hex (`0xffff0000`) or decimal.
    pub fn parse(s: &str) -> Result<SelfMark, String> {
        let n = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(h) => u32::from_str_radix(h, 16),
            None => s.parse(),
        }
        .map_err(|e| format!("{s:?} is not a 32-bit mask (hex like 0xffff0000): {e}"))?;
        SelfMark::new(n)
    }

    /// Every packet-mark bit the `self` test writes.
    pub fn reserved(self) -> u32 {
        self.0
    }

    /// The bit "source and destination are one endpoint".
    pub fn same_bit(self) -> u32 {
        self.0 & self.0.wrapping_neg()
    }

    /// The bits of endpoint ids.
    pub fn id_mask(self) -> u32 {
        self.0 & !self.same_bit()
    }

    /// The shift of an id into [`SelfMark::id_mask`].
    pub fn shift(self) -> u32 {
        self.id_mask().trailing_zeros()
    }

    /// The largest endpoint id.
    pub fn max_id(self) -> u32 {
        self.id_mask() >> self.shift()
    }

    /// An `ipset` member line's element: `ADDR skbmark 0xID000/0x0`, as
    /// `ipset save` prints it.
    pub fn member(self, addr: IpAddr, id: u32) -> String {
        format!("{addr} skbmark {:#x}/0x0", id << self.shift())
    }

    /// A member as `ipset save` prints it ([`SelfMark::member`]), read
    /// back: `None` for anything else.
    pub fn parse_member(self, m: &str) -> Option<(IpAddr, u32)> {
        let w: Vec<&str> = m.split_whitespace().collect();
        let [addr, "skbmark", mark] = w.as_slice() else {
            return None;
        };
        let (value, _) = mark.split_once('/')?;
        let v = u32::from_str_radix(value.strip_prefix("0x")?, 16).ok()?;
        Some((addr.parse().ok()?, v >> self.shift()))
    }
}

/// The mangle FORWARD chain that computes [`SelfMark::same_bit`].
pub const MANGLE_FWD: &str = "WEIR-MANGLE-FWD";
/// Base name of the id sets (IPv6 appends [`Family::set_suffix`]).
pub const SET: &str = "weir-self";

/// The id set's name for a family.
pub fn set_name(f: Family) -> String {
    format!("{SET}{}", f.set_suffix())
}

/// The filter test of `self` (see the module docs): its match.
pub fn test_match(m: SelfMark) -> String {
    let same = m.same_bit();
    format!("-m mark --mark {same:#x}/{same:#x}")
}

/// The rules of [`MANGLE_FWD`] for a family, as (match, target) (as
/// `iptables-save` prints them: the apply reads the rules back; the
/// caller puts the comment between).
pub fn mangle_rules(f: Family, mark: SelfMark) -> Vec<(String, String)> {
    let set = set_name(f);
    let (reserved, ids, same) = (mark.reserved(), mark.id_mask(), mark.same_bit());
    let r = |m: &str, t: String| (m.to_string(), t);
    vec![
        r("-m conntrack ! --ctstate NEW", "-j RETURN".into()),
        r("", format!("-j MARK --set-xmark 0x0/{reserved:#x}")),
        (
            format!("-m set ! --match-set {set} src"),
            "-j RETURN".into(),
        ),
        r("", format!("-j SET --map-set {set} src --map-mark")),
        r("", format!("-j SET --map-set {set} dst --map-mark")),
        (
            format!("-m mark --mark 0x0/{ids:#x}"),
            format!("-j MARK --set-xmark {same:#x}/{same:#x}"),
        ),
        r("", format!("-j MARK --set-xmark 0x0/{ids:#x}")),
    ]
}

/// Compile-time ids: the model's endpoints that own addresses, in order,
/// from 1; each with its addresses.
pub fn compiled_ids(model: &Model, g: &Graph) -> Vec<(u32, Vec<IpAddr>)> {
    g.classes
        .same
        .owned(model)
        .into_iter()
        .enumerate()
        .map(|(i, a)| (i as u32 + 1, a))
        .collect()
}

/// The `ipset restore` text of the id sets of `families` (both, or IPv4
/// alone when no IPv6 address has a class: `sets.rs`'s `v4_only`, where
/// the IPv6 side's mangle chain stays empty), empty without a `self` rule.
pub fn render(model: &Model, g: &Graph, families: &[Family], mark: SelfMark) -> String {
    if !crate::graph::same_endpoint::uses_self(model) {
        return String::new();
    }
    let ids = compiled_ids(model, g);
    let mut s = String::new();
    for &f in families {
        let members: Vec<String> = ids
            .iter()
            .flat_map(|(id, addrs)| {
                addrs
                    .iter()
                    .filter(|a| Family::of(**a) == f)
                    .map(move |&a| mark.member(a, *id))
            })
            .collect();
        let name = set_name(f);
        s.push_str(&format!(
            "create {name} hash:ip family {} hashsize {} maxelem {} skbinfo\n",
            f.ipset_family(),
            (members.len() / 2).next_power_of_two().max(64),
            (members.len() * 2).max(65536),
        ));
        for m in members {
            s.push_str(&format!("add {name} {m}\n"));
        }
    }
    s
}

/// What iptables refuses about `self` (E0501): a steering `mark` that
/// sets reserved bits, a `redirect` that can match connections to a
/// service frontend with backends, and more endpoints than ids.
pub fn check(model: &Model, g: &Graph, mark: SelfMark) -> Vec<Unsupported> {
    if !crate::graph::same_endpoint::uses_self(model) {
        return Vec::new();
    }
    let mut out = Vec::new();
    // A redirect over a service frontend judges each backend in nat
    // before its DNAT, with the frontend as the packet's destination:
    // the relation computed for the packet is not the backend's.
    let overlap = g.services.frontends.iter().any(|f| {
        !g.services.backend_sets[f.backends].backends.is_empty()
            && super::services::redirect_overlaps(g, &f.frontend)
    });
    for s in &model.steers {
        for r in &s.rules {
            if matches!(r.action, SteerAction::Redirect { .. }) && overlap {
                out.push(Unsupported {
                    span: r.span,
                    refusal: Refusal::NotExpressible {
                        backend: crate::contract::Target::Iptables,
                        construct: Construct::SelfWithRedirect {
                            steer: s.name.clone(),
                        },
                    },
                });
            }
            if let SteerAction::Mark(m) = r.action {
                if m & mark.reserved() != 0 {
                    out.push(Unsupported {
                        span: r.span,
                        refusal: Refusal::NotExpressible {
                            backend: crate::contract::Target::Iptables,
                            construct: Construct::SelfWithMark {
                                steer: s.name.clone(),
                                mark: m,
                                mask: mark.reserved(),
                            },
                        },
                    });
                }
            }
        }
    }
    let owning = model
        .endpoints
        .iter()
        .filter(|e| !e.addrs.is_empty())
        .count();
    let max = mark.max_id() as usize;
    if owning > max {
        out.push(Unsupported {
            span: model.endpoints[max].span.unwrap_or(model.policies[0].span),
            refusal: Refusal::NotExpressible {
                backend: crate::contract::Target::Iptables,
                construct: Construct::SelfTooManyEndpoints {
                    endpoints: owning,
                    max,
                },
            },
        });
    }
    out
}
