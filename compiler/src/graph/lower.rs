//! Model → decision graph, by partial evaluation of the interpreter.
//!
//! For a direction, the subject's class decides which policies are active
//! (their `applies to` atoms are bits of the class), so the lowering emits a
//! table on the subject class whose entries are the per-class chains; a
//! chain is built once per distinct list of active policies. A chain
//! branches on the protocol first (a table over the four protocols, the
//! default being "any other protocol"), then on the destination port (an
//! interval table whose boundaries are the rules' range ends) or the ICMP
//! type and code, and only then tests peers, in rule order. Every peer
//! test splits the set of classes the peer can still be in; a test whose
//! outcome is already determined by that set is not emitted, so the
//! lowering never produces an unreachable branch (every leaf is reached by
//! some packet) and never tests the same fact twice on a path.
//!
//! `self` is a test of the relation "source and destination belong to the
//! same endpoint" (`Cond::SameEndpoint`, decided in the data path from
//! endpoint membership kept as data: `same_endpoint.rs`), so a chain with
//! a `self` rule is shared by every subject with the same active policies
//! like any other chain. Its match branch narrows the peer to the classes
//! whose chain key is the subject's (the peer is the subject's own
//! address, so it has the subject's labels); the walk remembers the
//! outcome, so a path never tests it twice. `world` is two tests on the atoms classes already have (not
//! the endpoint atom; then the set atom). A tier declared `default pass`
//! continues with the next tier where its isolation default would deny.
//!
//! Audit policies are left out (they are not enforced); the audit
//! evaluation is the lowering of `Model::audit_enforced`, whose classes and
//! provenance ids are the same (neither depends on the audit marks).
//!
//! Leaves carry provenance ids from [`ProvenanceTable`]; the `logged` list
//! of a leaf is the path's log rules, exactly the interpreter's
//! `SideDecision::logged`.

use super::bits::Bits;
use super::classes::{AtomId, Classes, PeerTest};
use super::ir::{
    Builder, Cond, Graph, Node, NodeId, Roots, ServiceTable, SteerLeaf, TableEntry, TableKey,
    VerdictLeaf,
};
use super::parts::Parts;
use crate::endpoint_index::EndpointIndex;
use crate::flowhash::proto_number;
use crate::model::{Action, Direction, Model, PolicyId, PortRange, Proto, ProtoMatch, SteerAction};
use crate::provenance::{Provenance, ProvenanceTable};
use std::collections::{BTreeMap, BTreeSet};
// FxHash: these maps are hot and keyed by ids, nodes and short strings;
// nothing iterates them into output.
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

#[path = "lower_self.rs"]
mod lower_self;

/// What the lowering learned on the way, for static analysis.
#[derive(Debug, Clone, Default)]
pub struct LowerInfo {
    /// Provenance ids of policy rules whose match branch exists somewhere
    /// (the rule decides, passes or logs some packet).
    pub live_rules: BTreeSet<u32>,
    /// Steering rules `(steer, index)` that are the first match for some
    /// packet.
    pub live_steer: BTreeSet<(usize, usize)>,
    /// Every distinct list of active policies built, per direction, with
    /// the subject classes that use it.
    pub chains: Vec<(Direction, Vec<PolicyId>, Vec<u32>)>,
}

/// Lower a model to its unoptimized graph.
pub fn lower(model: &Model) -> (Graph, LowerInfo) {
    lower_announcing(model, |_| ())
}

/// [`lower`], calling `announce` with the model-only parts
/// ([`super::parts`]) before the rules are walked.
pub fn lower_announcing(model: &Model, announce: impl FnOnce(Parts)) -> (Graph, LowerInfo) {
    // The service table needs only the model: it is built on a thread of
    // its own beside the classes (for the 10,000 services of
    // BENCHMARKS.md's headline model ~40 ms beside ~120 ms; issue 21),
    // and announced with them, before the walk. Both select endpoints
    // through one label index, built once here: each used to build its
    // own, a third build of the same index (the lints make one) competing
    // for the two cores while the classes are on the critical path.
    let index = EndpointIndex::new(&model.endpoints);
    let index = &index;
    std::thread::scope(|s| {
        let services = crate::threads::scoped(
            s,
            crate::threads::with_stack("weir-services", 64 << 20),
            move || ServiceTable::build_indexed(model, index),
        );
        lower_with(model, index, || services.join(), announce)
    })
}

/// [`lower_announcing`], with the service table from `services`.
fn lower_with(
    model: &Model,
    index: &EndpointIndex<'_>,
    services: impl FnOnce() -> ServiceTable,
    announce: impl FnOnce(Parts),
) -> (Graph, LowerInfo) {
    let classes = Arc::new(Classes::build_indexed(model, index));
    let prov = Arc::new(ProvenanceTable::new(model));
    // The service table is made beside the classes, in less time.
    let services = Arc::new(services());
    announce(Parts {
        classes: Arc::clone(&classes),
        provenance: Arc::clone(&prov),
        services: Arc::clone(&services),
    });
    let mut cx = Lower {
        model,
        classes: &classes,
        prov: &prov,
        b: Builder::new(false),
        info: LowerInfo::default(),
        all_classes: Bits::full(classes.len()),
        leaves: HashMap::default(),
        steer_memo: HashMap::default(),
        named: named_ports(model, &classes),
    };
    let steer = cx.steer_entry();
    let egress = cx.side_entry(Direction::Egress);
    let ingress = cx.side_entry(Direction::Ingress);
    let info = std::mem::take(&mut cx.info);
    let dag = cx.b.finish(Roots {
        steer,
        egress,
        ingress,
    });
    let steer_actions = model
        .steers
        .iter()
        .map(|s| s.rules.iter().map(|r| r.action.clone()).collect())
        .collect();
    let graph = Graph {
        dag,
        classes,
        provenance: prov,
        services,
        steer_actions: Arc::new(steer_actions),
    };
    (graph, info)
}

struct Lower<'a> {
    model: &'a Model,
    classes: &'a Classes,
    prov: &'a ProvenanceTable,
    b: Builder,
    info: LowerInfo,
    all_classes: Bits,
    leaves: HashMap<Node, NodeId>,
    steer_memo: HashMap<(usize, Bits, Bits), NodeId>,
    named: NamedPorts,
}

/// One policy rule in a chain, with everything the walk needs.
#[derive(Debug, Clone, Copy)]
struct Item {
    prov: u32,
    action: Action,
    log: bool,
    peer: PeerTest,
    /// Egress named port: the destination must also satisfy this atom
    /// ("declares the name as this item's port"; see [`NamedPorts`]).
    port_atom: Option<AtomId>,
}

/// The named ports rules use, with the atom of each declared value
/// (crate::named_ports): per `(name, proto)`, `(port, atom)` pairs.
type NamedPorts = BTreeMap<(String, Proto), Vec<(u16, AtomId)>>;

fn named_ports(model: &Model, cl: &Classes) -> NamedPorts {
    crate::named_ports::rule_names(model)
        .into_iter()
        .map(|(name, proto)| {
            let vals = crate::named_ports::values(model, &name, proto)
                .into_iter()
                .filter_map(|v| {
                    let sel = crate::named_ports::value_sel(&name, proto, v);
                    cl.atom_id(&super::classes::Atom::Sel(sel)).map(|a| (v, a))
                })
                .collect();
            ((name, proto), vals)
        })
        .collect()
}

use crate::model::PROTOS;

/// Which items (by index) survive for each protocol / port / ICMP bucket;
/// `leaf(items)` builds the node for one bucket. Shared by policy chains
/// and steering.
fn bucket(
    b: &mut Builder,
    protos: &[&ProtoMatch],
    leaf: &mut dyn FnMut(&mut Builder, Vec<usize>) -> NodeId,
) -> NodeId {
    let all: Vec<usize> = (0..protos.len()).collect();
    let mut entries = Vec::new();
    for p in PROTOS {
        let items: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| match protos[i] {
                ProtoMatch::Any => true,
                ProtoMatch::Ports { proto, .. } => *proto == p,
                ProtoMatch::Icmp { proto, .. } => *proto == p,
                // Policy chains resolve named ports first
                // (`Lower::resolved`); steering rules cannot have them
                // (the checker refuses, E0266).
                ProtoMatch::Named { .. } => false,
            })
            .collect();
        let child = if p.is_icmp() {
            icmp_bucket(b, protos, items, leaf)
        } else {
            port_bucket(b, protos, items, leaf)
        };
        let n = u32::from(proto_number(p));
        entries.push(TableEntry {
            lo: n,
            hi: n,
            next: child,
        });
    }
    entries.sort();
    // Any other IP protocol: only `any` rules can match.
    let other: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| matches!(protos[i], ProtoMatch::Any))
        .collect();
    let default = leaf(b, other);
    b.add(Node::Table {
        key: TableKey::Proto,
        entries,
        default,
        rule: None,
    })
}

fn port_bucket(
    b: &mut Builder,
    protos: &[&ProtoMatch],
    items: Vec<usize>,
    leaf: &mut dyn FnMut(&mut Builder, Vec<usize>) -> NodeId,
) -> NodeId {
    let ranges = |i: usize| -> &[crate::model::PortRange] {
        match protos[i] {
            ProtoMatch::Ports { ports, .. } => ports,
            _ => &[],
        }
    };
    // Interval boundaries: every range start and end + 1.
    let mut cuts: BTreeSet<u32> = BTreeSet::new();
    for &i in &items {
        for r in ranges(i) {
            cuts.insert(u32::from(r.lo));
            cuts.insert(u32::from(r.hi) + 1);
        }
    }
    let default_items: Vec<usize> = items
        .iter()
        .copied()
        .filter(|&i| ranges(i).is_empty())
        .collect();
    let mut bounds: Vec<u32> = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c <= 65535));
    bounds.push(65536);
    bounds.dedup();
    let mut entries = Vec::new();
    for w in bounds.windows(2) {
        let (lo, hi) = (w[0], w[1] - 1);
        let here: Vec<usize> = items
            .iter()
            .copied()
            .filter(|&i| {
                let r = ranges(i);
                r.is_empty()
                    || r.iter()
                        .any(|r| u32::from(r.lo) <= lo && hi <= u32::from(r.hi))
            })
            .collect();
        if here == default_items {
            continue;
        }
        let next = leaf(b, here);
        entries.push(TableEntry { lo, hi, next });
    }
    let default = leaf(b, default_items);
    b.add(Node::Table {
        key: TableKey::DPort,
        entries,
        default,
        rule: None,
    })
}

fn icmp_bucket(
    b: &mut Builder,
    protos: &[&ProtoMatch],
    items: Vec<usize>,
    leaf: &mut dyn FnMut(&mut Builder, Vec<usize>) -> NodeId,
) -> NodeId {
    let tc = |i: usize| -> (Option<u8>, Option<u8>) {
        match protos[i] {
            ProtoMatch::Icmp { ty, code, .. } => (*ty, *code),
            _ => (None, None),
        }
    };
    let types: BTreeSet<u8> = items.iter().filter_map(|&i| tc(i).0).collect();
    let by_code = |b: &mut Builder,
                   items: Vec<usize>,
                   leaf: &mut dyn FnMut(&mut Builder, Vec<usize>) -> NodeId|
     -> NodeId {
        let codes: BTreeSet<u8> = items.iter().filter_map(|&i| tc(i).1).collect();
        let default_items: Vec<usize> = items
            .iter()
            .copied()
            .filter(|&i| tc(i).1.is_none())
            .collect();
        let mut entries = Vec::new();
        for c in codes {
            let here: Vec<usize> = items
                .iter()
                .copied()
                .filter(|&i| tc(i).1.is_none_or(|x| x == c))
                .collect();
            let next = leaf(b, here);
            entries.push(TableEntry {
                lo: u32::from(c),
                hi: u32::from(c),
                next,
            });
        }
        let default = leaf(b, default_items);
        b.add(Node::Table {
            key: TableKey::IcmpCode,
            entries,
            default,
            rule: None,
        })
    };
    let default_items: Vec<usize> = items
        .iter()
        .copied()
        .filter(|&i| tc(i).0.is_none())
        .collect();
    let mut entries = Vec::new();
    for t in types {
        let here: Vec<usize> = items
            .iter()
            .copied()
            .filter(|&i| tc(i).0.is_none_or(|x| x == t))
            .collect();
        let next = by_code(b, here, leaf);
        entries.push(TableEntry {
            lo: u32::from(t),
            hi: u32::from(t),
            next,
        });
    }
    let default = by_code(b, default_items, leaf);
    b.add(Node::Table {
        key: TableKey::IcmpType,
        entries,
        default,
        rule: None,
    })
}

impl Lower<'_> {
    fn leaf(&mut self, n: Node) -> NodeId {
        if let Some(&id) = self.leaves.get(&n) {
            return id;
        }
        let id = self.b.add(n.clone());
        self.leaves.insert(n, id);
        id
    }

    fn verdict(&mut self, allow: bool, p: Provenance, logged: &[u32]) -> NodeId {
        let decided = self.prov.id(&p);
        self.leaf(Node::Verdict(VerdictLeaf {
            allow,
            decided,
            logged: logged.to_vec(),
        }))
    }

    fn side_entry(&mut self, dir: Direction) -> NodeId {
        let model = self.model;
        let cl = self.classes;
        // Default for classes without an entry: not an endpoint.
        let default = self.verdict(true, Provenance::Unrestricted { dir }, &[]);
        let applies: Vec<Option<AtomId>> = model
            .policies
            .iter()
            .map(|p| {
                // Audit policies are not enforced: the graph is the
                // enforced program (language.md §4, "Audit policies"); the
                // audit sides are the graph of `Model::audit_enforced`.
                p.rules(dir)
                    .filter(|_| !p.audit)
                    .map(|_| cl.atom_id(&super::classes::Atom::Sel(p.applies_to.clone())))
                    .and_then(|a| a)
            })
            .collect();
        // Per policy: has it a rule on this side whose peer is `peer`?
        let has_peer = |peer: crate::model::PeerMatch| -> Vec<bool> {
            model
                .policies
                .iter()
                .map(|p| p.rules(dir).unwrap_or(&[]).iter().any(|r| r.peer == peer))
                .collect()
        };
        let has_node = has_peer(crate::model::PeerMatch::OwnNode);
        // A chain per distinct (active policies, its named ports): for
        // ingress the subject is the destination, whose declared ports
        // the named-port rules resolve to.
        // The subject's node's set atom joins the key when one of them has
        // a `node` rule (crate::nodes).
        type ChainKey = (Vec<PolicyId>, Vec<Option<u16>>, Option<AtomId>);
        // Each class's active policies (ascending), from each policy's
        // classes: a test of every policy on every class was quadratic
        // (100,000 one-pod policies, each pod its own class).
        let mut active_of: Vec<Vec<PolicyId>> = vec![Vec::new(); cl.classes.len()];
        for (p, a) in applies.iter().enumerate() {
            if let Some(a) = *a {
                for c in cl.classes_with(a).iter() {
                    active_of[c].push(p);
                }
            }
        }
        let mut keyed: Vec<(u32, ChainKey)> = Vec::new();
        for c in cl.endpoint_classes_set().iter() {
            let active = std::mem::take(&mut active_of[c]);
            let ports: Vec<Option<u16>> = match dir {
                Direction::Egress => Vec::new(),
                Direction::Ingress => self
                    .named
                    .values()
                    .map(|vals| {
                        vals.iter()
                            .find(|&&(_, a)| cl.has(c as u32, a))
                            .map(|&(v, _)| v)
                    })
                    .collect(),
            };
            let node = if active.iter().any(|&p| has_node[p]) {
                cl.node_of(c as u32)
            } else {
                None
            };
            keyed.push((c as u32, (active, ports, node)));
        }
        // `self`'s peer has the subject's labels, so its class has the
        // subject's chain key: the classes of each key.
        let mut same_key: BTreeMap<&ChainKey, Bits> = BTreeMap::new();
        for (c, key) in &keyed {
            same_key.entry(key).or_default().insert(*c as usize);
        }
        let mut chains: BTreeMap<&ChainKey, (NodeId, Vec<u32>)> = BTreeMap::new();
        let mut entries = Vec::new();
        for (c, key) in &keyed {
            let c = *c as usize;
            let next = match chains.get_mut(key) {
                Some((n, users)) => {
                    users.push(c as u32);
                    *n
                }
                None => {
                    let n = self.chain(dir, &key.0, &same_key[key], &key.1, key.2);
                    chains.insert(key, (n, vec![c as u32]));
                    n
                }
            };
            if next != default {
                entries.push(TableEntry {
                    lo: c as u32,
                    hi: c as u32,
                    next,
                });
            }
        }
        let mut by_pols: BTreeMap<Vec<PolicyId>, Vec<u32>> = BTreeMap::new();
        for ((pols, _, _), (_, users)) in chains {
            by_pols.entry(pols.clone()).or_default().extend(users);
        }
        for (pols, mut users) in by_pols {
            users.sort_unstable();
            self.info.chains.push((dir, pols, users));
        }
        let key = match dir {
            Direction::Egress => TableKey::SrcClass,
            Direction::Ingress => TableKey::DstClass,
        };
        self.b.add(Node::Table {
            key,
            entries,
            default,
            rule: None,
        })
    }

    /// The chain for a subject whose active policies are `active`, whose
    /// own addresses (for `self`) may be in the classes `own`, (ingress)
    /// whose named ports are `ports` (parallel to `self.named`) and whose
    /// node's set atom (for `node`) is `node`.
    fn chain(
        &mut self,
        dir: Direction,
        active: &[PolicyId],
        own: &Bits,
        ports: &[Option<u16>],
        node: Option<AtomId>,
    ) -> NodeId {
        let model = self.model;
        // Segments: one per tier with an active policy, in tier order.
        let mut segs: Vec<(usize, Vec<Item>)> = Vec::new();
        let mut protos: Vec<ProtoMatch> = Vec::new();
        let mut seg_of: Vec<(usize, usize)> = Vec::new(); // item → (seg, pos)
        for tier in 0..model.tiers.len() {
            let pols: Vec<PolicyId> = active
                .iter()
                .copied()
                .filter(|&p| model.policies[p].tier == tier)
                .collect();
            if pols.is_empty() {
                continue;
            }
            let mut items = Vec::new();
            for p in pols {
                for (index, r) in model.policies[p]
                    .rules(dir)
                    .unwrap_or(&[])
                    .iter()
                    .enumerate()
                {
                    let prov = self.prov.id(&Provenance::Rule {
                        policy: p,
                        dir,
                        index,
                    });
                    let item = Item {
                        prov,
                        action: r.action,
                        log: r.log,
                        peer: self.classes.peer_test(&r.peer),
                        port_atom: None,
                    };
                    // `node` is the subject's node's set atom; a subject
                    // without a node: the rule matches nothing.
                    let item = match (item.peer, node) {
                        (PeerTest::OwnNode, Some(a)) => Item {
                            peer: PeerTest::Atom(a),
                            ..item
                        },
                        _ => item,
                    };
                    for (proto, port_atom) in self.resolved(dir, &r.proto, ports) {
                        seg_of.push((segs.len(), items.len()));
                        protos.push(proto);
                        items.push(Item { port_atom, ..item });
                    }
                }
            }
            segs.push((tier, items));
        }
        let protos: Vec<&ProtoMatch> = protos.iter().collect();
        let mut memo: HashMap<Vec<usize>, NodeId> = HashMap::default();
        let mut b = std::mem::replace(&mut self.b, Builder::new(false));
        let root = bucket(&mut b, &protos, &mut |b: &mut Builder, keep: Vec<usize>| {
            if let Some(&n) = memo.get(&keep) {
                return n;
            }
            // Restrict every segment to the kept items.
            let mut fsegs: Vec<(usize, Vec<Item>)> =
                segs.iter().map(|(t, _)| (*t, Vec::new())).collect();
            for &i in &keep {
                let (s, pos) = seg_of[i];
                fsegs[s].1.push(segs[s].1[pos]);
            }
            std::mem::swap(&mut self.b, b);
            let mut w = Walk {
                cx: self,
                dir,
                own,
                segs: &fsegs,
                memo: HashMap::default(),
            };
            let all = w.cx.all_classes.clone();
            let n = w.walk(0, 0, Vec::new(), all, None);
            std::mem::swap(&mut self.b, b);
            memo.insert(keep, n);
            n
        });
        std::mem::swap(&mut self.b, &mut b);
        root
    }

    /// A rule's protocol part as the chain tests it: itself, or for a
    /// named port (language.md §4, "Named ports") the port the destination
    /// declares — for ingress the subject's (`ports`), none when it
    /// declares none; for egress one item per declared value, each with
    /// the atom the destination must satisfy for it (at most one holds).
    fn resolved(
        &self,
        dir: Direction,
        pm: &ProtoMatch,
        ports: &[Option<u16>],
    ) -> Vec<(ProtoMatch, Option<AtomId>)> {
        let ProtoMatch::Named { proto, name } = pm else {
            return vec![(pm.clone(), None)];
        };
        let one = |v: u16| ProtoMatch::Ports {
            proto: *proto,
            ports: vec![PortRange { lo: v, hi: v }],
        };
        let key = (name.clone(), *proto);
        match dir {
            Direction::Ingress => self
                .named
                .keys()
                .position(|k| *k == key)
                .and_then(|i| ports.get(i).copied().flatten())
                .map(|v| vec![(one(v), None)])
                .unwrap_or_default(),
            Direction::Egress => self
                .named
                .get(&key)
                .map(|vals| vals.iter().map(|&(v, a)| (one(v), Some(a))).collect())
                .unwrap_or_default(),
        }
    }

    fn steer_entry(&mut self) -> NodeId {
        let model = self.model;
        let mut items: Vec<(usize, usize, Option<AtomId>, Option<AtomId>)> = Vec::new();
        let mut protos: Vec<&ProtoMatch> = Vec::new();
        for (s, st) in model.steers.iter().enumerate() {
            for (i, r) in st.rules.iter().enumerate() {
                items.push((
                    s,
                    i,
                    self.classes.peer_atom(&r.from),
                    self.classes.peer_atom(&r.to),
                ));
                protos.push(&r.proto);
            }
        }
        let mut memo: HashMap<Vec<usize>, NodeId> = HashMap::default();
        let mut b = std::mem::replace(&mut self.b, Builder::new(false));
        let root = bucket(&mut b, &protos, &mut |b: &mut Builder, keep: Vec<usize>| {
            if let Some(&n) = memo.get(&keep) {
                return n;
            }
            std::mem::swap(&mut self.b, b);
            let list: Vec<_> = keep.iter().map(|&i| items[i]).collect();
            let all = self.all_classes.clone();
            self.steer_memo.clear();
            let n = self.steer_walk(&list, 0, all.clone(), all);
            std::mem::swap(&mut self.b, b);
            memo.insert(keep, n);
            n
        });
        std::mem::swap(&mut self.b, &mut b);
        root
    }

    fn steer_walk(
        &mut self,
        items: &[(usize, usize, Option<AtomId>, Option<AtomId>)],
        pos: usize,
        ps: Bits,
        pd: Bits,
    ) -> NodeId {
        let key = (pos, ps, pd);
        if let Some(&n) = self.steer_memo.get(&key) {
            return n;
        }
        let (pos, ps, pd) = key;
        let n = self.steer_walk_inner(items, pos, ps.clone(), pd.clone());
        self.steer_memo.insert((pos, ps, pd), n);
        n
    }

    fn steer_walk_inner(
        &mut self,
        items: &[(usize, usize, Option<AtomId>, Option<AtomId>)],
        pos: usize,
        ps: Bits,
        pd: Bits,
    ) -> NodeId {
        let Some(&(steer, index, from, to)) = items.get(pos) else {
            return self.leaf(Node::Steer(SteerLeaf::None));
        };
        let split = |set: &Bits, a: Option<AtomId>| -> (Bits, Bits) {
            match a {
                None => (set.clone(), Bits::new()),
                Some(a) => {
                    let w = self.classes.classes_with(a);
                    (set.and(w), set.and_not(w))
                }
            }
        };
        let (fm, fno) = split(&ps, from);
        let (tm, tno) = split(&pd, to);
        if fm.is_empty() || tm.is_empty() {
            return self.steer_walk(items, pos + 1, ps, pd);
        }
        self.info.live_steer.insert((steer, index));
        let hit = self.leaf(Node::Steer(SteerLeaf::Hit { steer, index }));
        // From matched: test the destination.
        let on_from = if tno.is_empty() {
            hit
        } else {
            let els = self.steer_walk(items, pos + 1, fm.clone(), tno);
            self.b.add(Node::Test {
                cond: Cond::DstAtom(to.expect("split of any is total")),
                then: hit,
                els,
            })
        };
        if fno.is_empty() {
            return on_from;
        }
        let els = self.steer_walk(items, pos + 1, fno, pd);
        self.b.add(Node::Test {
            cond: Cond::SrcAtom(from.expect("split of any is total")),
            then: on_from,
            els,
        })
    }
}

/// The peer walk over one protocol/port bucket of a chain.
struct Walk<'w, 'a> {
    cx: &'w mut Lower<'a>,
    dir: Direction,
    /// The classes the subject's own addresses may be in (`self`'s peer).
    own: &'w Bits,
    segs: &'w [(usize, Vec<Item>)],
    memo: HashMap<WalkKey, NodeId>,
}

/// Where a walk is: segment, item, logged so far, the peer's possible
/// classes, and whether the peer is known to be (or not to be) the
/// subject's own address (`self` tested earlier on the path).
type WalkKey = (usize, usize, Vec<u32>, Bits, Option<bool>);

impl Walk<'_, '_> {
    fn walk(
        &mut self,
        seg: usize,
        pos: usize,
        logged: Vec<u32>,
        possible: Bits,
        same: Option<bool>,
    ) -> NodeId {
        let key = (seg, pos, logged, possible, same);
        if let Some(&n) = self.memo.get(&key) {
            return n;
        }
        let (seg, pos, logged, possible, same) = key;
        let n = self.walk_inner(seg, pos, &logged, &possible, same);
        self.memo.insert((seg, pos, logged, possible, same), n);
        n
    }

    fn walk_inner(
        &mut self,
        seg: usize,
        pos: usize,
        logged: &[u32],
        possible: &Bits,
        same: Option<bool>,
    ) -> NodeId {
        let dir = self.dir;
        let Some((tier, items)) = self.segs.get(seg) else {
            return match self.cx.model.default_deny.get(dir) {
                Some(_) => self
                    .cx
                    .verdict(false, Provenance::DefaultDeny { dir }, logged),
                None => self
                    .cx
                    .verdict(true, Provenance::Unrestricted { dir }, logged),
            };
        };
        let Some(&item) = items.get(pos) else {
            if self.cx.model.tiers[*tier].default_pass {
                return self.walk(seg + 1, 0, logged.to_vec(), possible.clone(), same);
            }
            return self
                .cx
                .verdict(false, Provenance::TierDefault { tier: *tier, dir }, logged);
        };
        if item.peer == PeerTest::SelfEndpoint {
            return self.self_test(seg, pos, logged, possible, same, item);
        }
        let w = self.cx.classes.peer_classes(item.peer);
        let (in_peer, no) = (possible.and(&w), possible.and_not(&w));
        let Some(on_match) = self.on_match(seg, pos, logged, in_peer, same, item) else {
            return self.walk(seg, pos + 1, logged.to_vec(), possible.clone(), same);
        };
        if no.is_empty() {
            return on_match;
        }
        let cond = |atom: AtomId| match dir {
            Direction::Egress => Cond::DstAtom(atom),
            Direction::Ingress => Cond::SrcAtom(atom),
        };
        let atom = match item.peer {
            PeerTest::Atom(a) => a,
            PeerTest::World(set) => {
                return self.world_tests(seg, pos, logged, possible, same, set, on_match)
            }
            PeerTest::Any => unreachable!("`any` matches every class"),
            PeerTest::SelfEndpoint => unreachable!("`self` is tested by `self_test`"),
            PeerTest::OwnNode => unreachable!("an unlowered `node` matches no class"),
        };
        let els = self.walk(seg, pos + 1, logged.to_vec(), no, same);
        self.cx.b.add(Node::Test {
            cond: cond(atom),
            then: on_match,
            els,
        })
    }

    /// The branch where `item`'s peer matched (the peer in `in_peer`),
    /// or None when no packet gets there.
    fn on_match(
        &mut self,
        seg: usize,
        pos: usize,
        logged: &[u32],
        in_peer: Bits,
        same: Option<bool>,
        item: Item,
    ) -> Option<NodeId> {
        // An egress named port: the destination must also declare it as
        // this item's port.
        let (m, port_no) = match item.port_atom {
            None => (in_peer, Bits::new()),
            Some(a) => {
                let pw = self.cx.classes.classes_with(a);
                (in_peer.and(pw), in_peer.and_not(pw))
            }
        };
        if m.is_empty() {
            return None;
        }
        self.cx.info.live_rules.insert(item.prov);
        let mut lg = logged.to_vec();
        let on_match = match item.action {
            Action::Log => {
                lg.push(item.prov);
                self.walk(seg, pos + 1, lg, m, same)
            }
            Action::Pass => {
                if item.log {
                    lg.push(item.prov);
                }
                self.walk(seg + 1, 0, lg, m, same)
            }
            Action::Allow | Action::Deny => {
                if item.log {
                    lg.push(item.prov);
                }
                let p = *self.cx.prov.get(item.prov).expect("rule provenance");
                self.cx.verdict(item.action == Action::Allow, p, &lg)
            }
        };
        Some(if port_no.is_empty() {
            on_match
        } else {
            let els = self.walk(seg, pos + 1, logged.to_vec(), port_no, same);
            self.cx.b.add(Node::Test {
                cond: Cond::DstAtom(item.port_atom.expect("split of none is total")),
                then: on_match,
                els,
            })
        })
    }

    /// `world [SET]`: an endpoint address, or a declared node's (the
    /// nodes atom), goes on to the next rule; any other address matches
    /// when in the set (if any). Each test is emitted only when both its
    /// outcomes are possible.
    #[allow(clippy::too_many_arguments)]
    fn world_tests(
        &mut self,
        seg: usize,
        pos: usize,
        logged: &[u32],
        possible: &Bits,
        same: Option<bool>,
        set: Option<AtomId>,
        on_match: NodeId,
    ) -> NodeId {
        let cl = self.cx.classes;
        let endpoint = cl.endpoint_atom;
        let dir = self.dir;
        let cond = move |atom: AtomId| match dir {
            Direction::Egress => Cond::DstAtom(atom),
            Direction::Ingress => Cond::SrcAtom(atom),
        };
        let not_endpoint = possible.and_not(cl.classes_with(endpoint));
        let inside = possible.and(cl.classes_with(endpoint));
        let (outside, at_node) = match cl.nodes_atom {
            Some(n) => (
                not_endpoint.and_not(cl.classes_with(n)),
                not_endpoint.and(cl.classes_with(n)),
            ),
            None => (not_endpoint, Bits::new()),
        };
        let on_outside = match set {
            Some(s) if !outside.and_not(cl.classes_with(s)).is_empty() => {
                let not_in_set = outside.and_not(cl.classes_with(s));
                let els = self.walk(seg, pos + 1, logged.to_vec(), not_in_set, same);
                self.cx.b.add(Node::Test {
                    cond: cond(s),
                    then: on_match,
                    els,
                })
            }
            _ => on_match,
        };
        let on_outside = match cl.nodes_atom {
            Some(n) if !at_node.is_empty() => {
                let then = self.walk(seg, pos + 1, logged.to_vec(), at_node, same);
                if outside.is_empty() {
                    then
                } else {
                    self.cx.b.add(Node::Test {
                        cond: cond(n),
                        then,
                        els: on_outside,
                    })
                }
            }
            _ => on_outside,
        };
        if inside.is_empty() {
            return on_outside;
        }
        let then = self.walk(seg, pos + 1, logged.to_vec(), inside, same);
        self.cx.b.add(Node::Test {
            cond: cond(endpoint),
            then,
            els: on_outside,
        })
    }
}

/// The steering actions are kept beside the graph; re-exported for eval.
pub fn steer_action(g: &Graph, steer: usize, index: usize) -> &SteerAction {
    &g.steer_actions[steer][index]
}

/// Lower and return just the graph (unoptimized).
pub fn lower_graph(model: &Model) -> Graph {
    lower(model).0
}
