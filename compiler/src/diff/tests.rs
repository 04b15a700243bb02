//! The diff against the interpreter, on generated program pairs: every
//! sampled packet whose interpreter verdict differs between OLD and NEW
//! lies in a reported row with the interpreter's deciding provenance on
//! both sides (and a packet whose verdict does not differ lies in none),
//! and every reported row has witness packets that really change verdict.
//! The samples include the other family's ICMP (ICMPv4 between IPv6
//! addresses and the reverse: "other" to the rules); witnesses pair
//! addresses of each row's groups, so a row mixing families fails.

use super::*;
use crate::gen::{self, Rng};
use crate::graph;
use crate::interp::{BackendChoice, Interp, Outcome, Packet};
use crate::model::{Action, ConnState, Model, Proto, ProtoMatch, SteerAction};
use region::RowProto;
use std::net::IpAddr;

/// A few random edits: flip allow/deny, drop a rule, shift a rule's
/// ports, give an endpoint another endpoint's labels, drop an endpoint.
pub fn mutate(m: &Model, rng: &mut Rng) -> Model {
    let mut m = m.clone();
    for _ in 0..1 + rng.below(3) {
        let kind = rng.below(7);
        if kind == 6 {
            // Steering: a rule turns into a bypass, or stops being one.
            let rules: Vec<(usize, usize)> = m
                .steers
                .iter()
                .enumerate()
                .flat_map(|(s, st)| (0..st.rules.len()).map(move |i| (s, i)))
                .collect();
            if let Some(&(s, i)) = (!rules.is_empty()).then(|| rng.pick(&rules)) {
                let a = &mut m.steers[s].rules[i].action;
                *a = if *a == SteerAction::Bypass {
                    SteerAction::Mark(0x10)
                } else {
                    SteerAction::Bypass
                };
            }
            continue;
        }
        if kind >= 4 && !m.endpoints.is_empty() {
            let i = rng.below(m.endpoints.len());
            if kind == 4 {
                let j = rng.below(m.endpoints.len());
                m.endpoints[i].labels = m.endpoints[j].labels.clone();
            } else {
                m.endpoints.remove(i);
            }
            continue;
        }
        let rules: Vec<(usize, bool, usize)> = m
            .policies
            .iter()
            .enumerate()
            .flat_map(|(p, pol)| {
                let ing = pol
                    .ingress
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(move |(i, _)| (p, true, i));
                let eg = pol
                    .egress
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(move |(i, _)| (p, false, i));
                ing.chain(eg)
            })
            .collect();
        if rules.is_empty() {
            continue;
        }
        let (p, ing, i) = *rng.pick(&rules);
        let list = if ing {
            m.policies[p].ingress.as_mut()
        } else {
            m.policies[p].egress.as_mut()
        }
        .expect("listed");
        match kind {
            0 | 1 => {
                let r = &mut list[i];
                r.action = match r.action {
                    Action::Allow => Action::Deny,
                    Action::Deny => Action::Allow,
                    Action::Pass => Action::Allow,
                    Action::Log => Action::Deny,
                };
            }
            2 => {
                list.remove(i);
            }
            _ => {
                if let ProtoMatch::Ports { ports, .. } = &mut list[i].proto {
                    if ports.iter().all(|r| r.hi < 65535) {
                        for r in ports.iter_mut() {
                            r.lo += 1;
                            r.hi += 1;
                        }
                    }
                }
            }
        }
    }
    m
}

fn in_port_row(c: &Change, p: &Packet) -> bool {
    if c.proto.has_ports() {
        c.ports
            .iter()
            .any(|&(lo, hi)| lo <= p.dport && p.dport <= hi)
    } else if !c.proto.is_icmp() {
        // Every other protocol: no ports, no ICMP fields.
        c.ports.is_empty() && c.icmp_types.is_empty() && c.icmp_codes.is_empty()
    } else {
        c.icmp_types
            .iter()
            .any(|&(lo, hi)| lo <= p.icmp_type && p.icmp_type <= hi)
            && c.icmp_codes
                .iter()
                .any(|&(lo, hi)| lo <= p.icmp_code && p.icmp_code <= hi)
    }
}

/// The backend each side translated `p` to, if it was sent to a
/// frontend of either program.
fn via_of(go: &Graph, gn: &Graph, o: &Outcome, n: &Outcome, p: &Packet) -> Option<frontends::Via> {
    let fe = |g: &Graph| g.services.lookup(p.dst, p.dport, p.proto).is_some();
    (fe(go) || fe(gn)).then(|| frontends::Via {
        old: o.service.as_ref().and_then(|s| s.chosen.clone()),
        new: n.service.as_ref().and_then(|s| s.chosen.clone()),
    })
}

/// The rows a packet lies in (at most one is expected).
fn rows_of<'d>(
    d: &'d Diff,
    go: &Graph,
    gn: &Graph,
    p: &Packet,
    via: &Option<frontends::Via>,
) -> Vec<&'d Change> {
    let js = d.space.classify(go, gn, p.src);
    let jd = d.space.classify(go, gn, p.dst);
    d.changes
        .iter()
        .filter(|c| {
            c.src.iter().any(|&g| d.groups[g].joint == js)
                && c.dst.iter().any(|&g| d.groups[g].joint == jd)
                && c.proto == RowProto::of(p)
                && in_port_row(c, p)
                && match via {
                    Some(v) => c.via.contains(v),
                    None => c.via.is_empty(),
                }
        })
        .collect()
}

/// Addresses of a joint class to try as witnesses: the first and last
/// address of its first and last pieces.
fn witnesses(j: &space::Joint) -> Vec<IpAddr> {
    let pieces: Vec<&crate::model::Cidr> = j.cidrs.iter().chain(&j.rest).collect();
    let mut out = Vec::new();
    for c in [pieces.first(), pieces.last()].into_iter().flatten() {
        out.push(c.addr);
        out.push(last_addr(c));
    }
    out.dedup();
    out
}

fn last_addr(c: &crate::model::Cidr) -> IpAddr {
    match c.addr {
        IpAddr::V4(a) => {
            let host = if c.len == 0 {
                u32::MAX
            } else {
                (1u32 << (32 - u32::from(c.len))).wrapping_sub(1)
            };
            IpAddr::V4((u32::from(a) | host).into())
        }
        IpAddr::V6(a) => {
            let host = if c.len == 0 {
                u128::MAX
            } else {
                (1u128 << (128 - u32::from(c.len))) - 1
            };
            IpAddr::V6((u128::from(a) | host).into())
        }
    }
}

/// A packet protocol the rules see as `want` between `s` and `t` (for an
/// "other" row: the other family's ICMP).
fn packet_proto(want: RowProto, s: IpAddr, t: IpAddr) -> Proto {
    crate::model::PROTOS
        .into_iter()
        .find(|&q| RowProto::of(&Packet::new(q, s, 0, t, 0)) == want)
        .unwrap_or_else(|| panic!("no packet protocol reads as {want:?} to {t}"))
}

/// The packets to sample: the generated ones, and each ICMP packet as the
/// other family's ICMP too (which the rules see as "other").
fn with_other_icmp(ps: Vec<Packet>) -> Vec<Packet> {
    let mut out = Vec::with_capacity(ps.len() * 2);
    for p in ps {
        if p.proto.is_icmp() {
            let mut q = p.clone();
            q.proto = if p.proto == Proto::Icmp {
                Proto::Icmp6
            } else {
                Proto::Icmp
            };
            out.push(q);
        }
        out.push(p);
    }
    out
}

#[derive(Debug, Default)]
struct Counts {
    packets: usize,
    differing: usize,
    /// Differing packets of a protocol without a keyword in their family.
    differing_other: usize,
    other_rows: usize,
    via_frontend: usize,
    rows: usize,
    witnesses: usize,
}

fn check_pair(tag: &str, seed: u64, old: &Model, new: &Model, c: &mut Counts) {
    let go = graph::build(old);
    let gn = graph::build(new);
    let d = diff(
        Side {
            model: old,
            graph: &go,
        },
        Side {
            model: new,
            graph: &gn,
        },
    );
    let io = Interp::new(old);
    let inw = Interp::new(new);
    let mut rng = Rng::new(seed ^ 0xD1FF);
    let mut packets = gen::packets(old, &mut rng, 300);
    packets.extend(gen::packets(new, &mut rng, 300));
    for mut p in with_other_icmp(packets) {
        // An IPv4 source with an IPv6 destination (the generator aims
        // some packets at any frontend) is no packet: nothing to report.
        if p.src.is_ipv4() != p.dst.is_ipv4() {
            continue;
        }
        p.state = ConnState::New;
        p.at = None;
        c.packets += 1;
        let o = io.evaluate_with(&p, BackendChoice::ByHash);
        let n = inw.evaluate_with(&p, BackendChoice::ByHash);
        let differs = o.verdict != n.verdict;
        c.differing += usize::from(differs);
        c.differing_other += usize::from(differs && RowProto::of(&p) == RowProto::Other);
        let via = via_of(&go, &gn, &o, &n, &p);
        c.via_frontend += usize::from(differs && via.is_some());
        let rows = rows_of(&d, &go, &gn, &p, &via);
        if differs {
            assert_eq!(
                rows.len(),
                1,
                "{tag} seed {seed}: {p:?} changes ({:?} → {:?}) but lies in {} rows",
                o.decided_by,
                n.decided_by,
                rows.len()
            );
            assert_eq!(
                (rows[0].old.by, rows[0].new.by),
                (o.decided_by, n.decided_by),
                "{tag} seed {seed}: {p:?}: row provenance"
            );
        } else {
            assert!(
                rows.is_empty(),
                "{tag} seed {seed}: {p:?} does not change but lies in {rows:?}"
            );
        }
    }
    for ch in &d.changes {
        c.rows += 1;
        c.other_rows += usize::from(ch.proto == RowProto::Other);
        // A row pairs addresses of one family.
        let fams: std::collections::BTreeSet<bool> = ch
            .src
            .iter()
            .chain(&ch.dst)
            .map(|&g| d.space.joints[d.groups[g].joint].v6)
            .collect();
        assert_eq!(
            fams.len(),
            1,
            "{tag} seed {seed}: row {ch:?} mixes families"
        );
        // Every source group against one destination group, and the reverse.
        let pairs = ch
            .src
            .iter()
            .map(|&s| (s, ch.dst[0]))
            .chain(ch.dst.iter().map(|&d| (ch.src[0], d)));
        for (sg, dg) in pairs {
            let sj = &d.space.joints[d.groups[sg].joint];
            let dj = &d.space.joints[d.groups[dg].joint];
            let (port, ty, code) = if ch.proto.has_ports() {
                (ch.ports[0].0, 0, 0)
            } else if ch.proto.is_icmp() {
                (0, ch.icmp_types[0].0, ch.icmp_codes[0].0)
            } else {
                (0, 8, 0)
            };
            for s in witnesses(sj) {
                for t in witnesses(dj) {
                    let proto = packet_proto(ch.proto, s, t);
                    let mut p = Packet::new(proto, s, 40000, t, port);
                    p.icmp_type = ty;
                    p.icmp_code = code;
                    let pin = |b: Option<&crate::model::Backend>| match b {
                        Some(b) => BackendChoice::Pinned(b.addr, b.port),
                        None => BackendChoice::ByHash,
                    };
                    for via in ch
                        .via
                        .iter()
                        .map(Some)
                        .chain(ch.via.is_empty().then_some(None))
                    {
                        let o = io.evaluate_with(&p, pin(via.and_then(|v| v.old.as_ref())));
                        let n = inw.evaluate_with(&p, pin(via.and_then(|v| v.new.as_ref())));
                        assert_eq!(
                            via_of(&go, &gn, &o, &n, &p).as_ref(),
                            via,
                            "{tag} seed {seed}: witness {p:?} of row {ch:?}"
                        );
                        assert_eq!(
                            (o.verdict, o.decided_by, n.verdict, n.decided_by),
                            (ch.old.verdict(), ch.old.by, ch.new.verdict(), ch.new.by),
                            "{tag} seed {seed}: witness {p:?} of row {ch:?}"
                        );
                        c.witnesses += 1;
                    }
                }
            }
        }
    }
}

#[test]
fn diff_matches_the_interpreter_on_mutations() {
    let mut c = Counts::default();
    for seed in 0..120 {
        let old = gen::model(seed);
        let mut rng = Rng::new(seed ^ 0x5EED);
        let new = mutate(&old, &mut rng);
        check_pair("mutation", seed, &old, &new, &mut c);
    }
    eprintln!("{c:?}");
    assert!(
        c.differing > 500 && c.rows > 100 && c.via_frontend > 0,
        "{c:?}"
    );
    assert!(c.differing_other > 0 && c.other_rows > 0, "{c:?}");
}

#[test]
fn diff_matches_the_interpreter_on_unrelated_programs() {
    let mut c = Counts::default();
    for seed in 0..40 {
        let old = if seed % 2 == 0 {
            gen::model(seed)
        } else {
            gen::dual_stack(seed)
        };
        let new = gen::model(seed + 1000);
        check_pair("unrelated", seed, &old, &new, &mut c);
    }
    eprintln!("{c:?}");
    assert!(c.differing > 500 && c.rows > 100, "{c:?}");
    assert!(c.differing_other > 0 && c.other_rows > 0, "{c:?}");
}

#[test]
fn a_program_against_itself_has_no_change() {
    for seed in 0..30 {
        let m = gen::dual_stack(seed);
        let g = graph::build(&m);
        let s = Side {
            model: &m,
            graph: &g,
        };
        let d = diff(s, s);
        assert!(d.changes.is_empty() && d.services.is_empty(), "seed {seed}");
        assert_eq!(d.summary(), Summary::Same);
    }
}
