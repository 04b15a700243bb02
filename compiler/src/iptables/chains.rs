//! One stage's chains: the part of the graph under some entry, as a tree
//! of chains joined by gotos.
//!
//! A node's *target* is what a parent rule jumps with: `-g WEIR-<p><n>`
//! for a node with a chain, or the child's target when the node cannot
//! decide anything in its context (all branches lead to the same place),
//! or a leaf's inline target (`-j RETURN`). Each node is emitted once per
//! stage (memoized), so shared DAG nodes become shared chains.
//!
//! A branching rule (a test that only chooses the next chain) is its
//! match and its target, with no `-m comment`: it decides and counts
//! nothing, and its node is named by its chain (`WEIR-<p><n>`, sub-chains
//! `WEIR-<p><n>-<k>`). A comment there would be one more match the
//! kernel calls for every packet that takes the branch (~21 ns here) and
//! 288 bytes of x_tables entry per rule: until issue 21's round 2, 93,228
//! of the 100,000-rule model's 223,077 rules carried `weir:n<k>`, 27 MB
//! of entries in a table an apply reads three times (its filter table is
//! now 85 MB). Rules that decide keep their provenance comment
//! `weir:<id>` (what `weir stats` counts).

use super::flow::{self, Ctx, ICMP, NON_ICMP, NO_PORTS, PORTS};
use super::sets::{Role, Sets};
use super::text::{Family, FastMap, Tables};
use crate::graph::ir::{Cond, Node, NodeId, TableEntry, TableKey};
use crate::graph::{ClassId, Graph};
use std::collections::BTreeMap;

/// What a leaf does in a stage.
pub enum Leaf {
    /// Nothing: the parent rule returns (`-j RETURN`).
    Return,
    /// A chain with these rules (each `matches… -j TARGET`; the leaf's
    /// comment is added by the caller of [`Leaf::Rules`]).
    Rules(Vec<String>),
}

/// Above this many port intervals a port table becomes a binary tree.
const LINEAR_PORTS: usize = 8;
/// From this many groups of classes on, a class table tests their union
/// first…
const UNION_GROUPS: usize = 3;
/// …unless the union holds more prefixes than this (a union copies its
/// classes' prefixes into one more set).
const UNION_MAX_PREFIXES: usize = 8192;
/// Above this many groups to test, a root class table tests them in
/// chunks: one lookup in a chunk's union, then its groups in a sub-chain.
const CHUNK_GROUPS: usize = 8;
/// Above this many ICMP types in context, a code test uses `u32`.
const ENUM_TYPES: usize = 16;

pub struct Stage<'a> {
    pub g: &'a Graph,
    pub fam: Family,
    pub table: &'static str,
    /// Chain name prefix after `WEIR-`.
    pub prefix: String,
    pub num: &'a FastMap<NodeId, usize>,
    pub ctx: &'a FastMap<NodeId, Ctx>,
    pub leaf: &'a dyn Fn(&Node) -> Leaf,
    /// Destination (class, port) known in advance: tests on them are
    /// decided here instead of emitted (policy for a chosen backend
    /// before its DNAT).
    pub known: Option<(ClassId, u32)>,
    /// Every address of this family is class 0 (an IPv6 stage of a
    /// program whose class map has no IPv6 prefix,
    /// [`crate::graph::classes::Classes::classifies_v6`]): address tests
    /// are decided here as the interpreter decides them for class 0, and
    /// the family needs no address set.
    pub unclassified: bool,
    /// The packet-mark bits of `self` (the test of the SAME bit).
    pub self_mark: super::self_set::SelfMark,
    memo: FastMap<NodeId, String>,
    sub: usize,
}

/// A rule's match part and where it goes.
type Branch = (String, String);

fn ranges(lo: u32, hi: u32) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}:{hi}")
    }
}

/// The child an address test takes when both addresses are class 0;
/// `None` for other nodes.
fn unclassified_child(g: &Graph, node: &Node) -> Option<NodeId> {
    match node {
        Node::Test {
            cond: Cond::SrcAtom(a) | Cond::DstAtom(a),
            then,
            els,
        } => Some(if g.classes.has(0, *a) { *then } else { *els }),
        Node::Table {
            key: TableKey::SrcClass | TableKey::DstClass,
            entries,
            default,
            ..
        } => Some(match entries.first() {
            Some(e) if e.lo == 0 => e.next,
            _ => *default,
        }),
        _ => None,
    }
}

impl<'a> Stage<'a> {
    pub fn new(
        g: &'a Graph,
        fam: Family,
        table: &'static str,
        prefix: &str,
        num: &'a FastMap<NodeId, usize>,
        ctx: &'a FastMap<NodeId, Ctx>,
        leaf: &'a dyn Fn(&Node) -> Leaf,
    ) -> Stage<'a> {
        Stage {
            g,
            fam,
            table,
            prefix: prefix.to_string(),
            num,
            ctx,
            leaf,
            known: None,
            unclassified: fam == Family::V6 && !g.classes.classifies_v6(),
            self_mark: Default::default(),
            memo: FastMap::default(),
            sub: 0,
        }
    }

    /// The child a node takes given [`Stage::known`] and
    /// [`Stage::unclassified`], if it only tests known fields.
    fn decided(&self, node: &Node) -> Option<NodeId> {
        if self.unclassified {
            if let Some(next) = unclassified_child(self.g, node) {
                return Some(next);
            }
        }
        let (dc, dp) = self.known?;
        match node {
            Node::Test { cond, then, els } => {
                let hit = match *cond {
                    Cond::DstAtom(a) => self.g.classes.has(dc, a),
                    Cond::DPort { lo, hi } => u32::from(lo) <= dp && dp <= u32::from(hi),
                    _ => return None,
                };
                Some(if hit { *then } else { *els })
            }
            Node::Table {
                key,
                entries,
                default,
                ..
            } => {
                let v = match key {
                    TableKey::DstClass => dc,
                    TableKey::DPort => dp,
                    _ => return None,
                };
                let i = entries.partition_point(|e| e.hi < v);
                Some(match entries.get(i) {
                    Some(e) if e.lo <= v => e.next,
                    _ => *default,
                })
            }
            _ => None,
        }
    }

    fn chain_name(&self, n: NodeId) -> String {
        format!("WEIR-{}{}", self.prefix, self.num[&n])
    }

    /// The target for entering node `n`.
    pub fn target(&mut self, n: NodeId, sets: &mut Sets, out: &mut Tables) -> String {
        if let Some(t) = self.memo.get(&n) {
            return t.clone();
        }
        let t = self.build(n, sets, out);
        self.memo.insert(n, t.clone());
        t
    }

    fn build(&mut self, n: NodeId, sets: &mut Sets, out: &mut Tables) -> String {
        let node = self.g.node(n);
        if let Some(next) = self.decided(node) {
            return self.target(next, sets, out);
        }
        if node.is_leaf() {
            return match (self.leaf)(node) {
                Leaf::Return => "-j RETURN".to_string(),
                Leaf::Rules(rules) => {
                    let name = self.chain_name(n);
                    out.chain(self.table, &name);
                    for r in rules {
                        out.rule(self.table, &name, &[&r]);
                    }
                    format!("-g {name}")
                }
            };
        }
        let ctx = self.ctx.get(&n).copied().unwrap_or(Ctx::ALL);
        let children: Vec<String> = node
            .children()
            .into_iter()
            .map(|(_, c)| self.target(c, sets, out))
            .collect();
        if children.iter().all(|c| *c == children[0]) {
            return children[0].clone();
        }
        let name = self.chain_name(n);
        let (branches, default) = self.branches(n, node, &ctx, &children, &name, sets, out);
        if branches.is_empty() {
            return default;
        }
        self.emit(&name, branches, default, out);
        format!("-g {name}")
    }

    /// Chain `name` with `branches` then `default` (a branching rule
    /// carries no comment: see the module docs).
    fn emit(&self, name: &str, branches: Vec<Branch>, default: String, out: &mut Tables) {
        out.chain(self.table, name);
        for (m, t) in branches {
            out.rule(self.table, name, &[&m, &t]);
        }
        if default != "-j RETURN" {
            out.rule(self.table, name, &[&default]);
        }
    }

    /// A sub-chain of node `n` (binary port trees).
    fn sub_chain(&mut self, name: &str) -> String {
        self.sub += 1;
        format!("{name}-{}", self.sub)
    }

    #[allow(clippy::too_many_arguments)]
    fn branches(
        &mut self,
        n: NodeId,
        node: &Node,
        ctx: &Ctx,
        children: &[String],
        name: &str,
        sets: &mut Sets,
        out: &mut Tables,
    ) -> (Vec<Branch>, String) {
        let g = self.g;
        match node {
            Node::Test { cond, .. } => {
                let (then, els) = (children[0].clone(), children[1].clone());
                let one = |lo: u32, hi: u32| vec![(lo, hi, then.clone())];
                match *cond {
                    Cond::SrcAtom(a) | Cond::DstAtom(a) => {
                        let dir = if matches!(cond, Cond::SrcAtom(_)) {
                            "src"
                        } else {
                            "dst"
                        };
                        let classes: Vec<ClassId> = g
                            .classes
                            .classes_with(a)
                            .iter()
                            .map(|c| c as ClassId)
                            .collect();
                        if classes.is_empty() {
                            return (Vec::new(), els);
                        }
                        let set = Sets::name(&sets.get(classes, Role::Atom(a)), self.fam);
                        (vec![(format!("-m set --match-set {set} {dir}"), then)], els)
                    }
                    Cond::Proto(p) => self.proto_branches(
                        ctx,
                        &[(
                            u32::from(crate::flowhash::proto_number(p)),
                            u32::from(crate::flowhash::proto_number(p)),
                            then,
                        )],
                        els,
                    ),
                    Cond::DPort { lo, hi } => {
                        self.port_branches(ctx, one(lo.into(), hi.into()), els, name, out)
                    }
                    Cond::IcmpType(t) => self.type_branches(ctx, one(t.into(), t.into()), els),
                    Cond::IcmpCode(c) => self.code_branches(ctx, one(c.into(), c.into()), els),
                    Cond::SameEndpoint => (
                        vec![(super::self_set::test_match(self.self_mark), then)],
                        els,
                    ),
                }
            }
            Node::Table { key, entries, .. } => {
                let default = children[entries.len()].clone();
                let es: Vec<(u32, u32, String)> = entries
                    .iter()
                    .zip(children)
                    .map(|(e, t)| (e.lo, e.hi, t.clone()))
                    .collect();
                match key {
                    TableKey::SrcClass | TableKey::DstClass => {
                        let dir = if *key == TableKey::SrcClass {
                            "src"
                        } else {
                            "dst"
                        };
                        self.class_branches(n, entries, children, default, dir, name, sets, out)
                    }
                    TableKey::Proto => self.proto_branches(ctx, &es, default),
                    TableKey::DPort => self.port_branches(ctx, es, default, name, out),
                    TableKey::IcmpType => self.type_branches(ctx, es, default),
                    TableKey::IcmpCode => self.code_branches(ctx, es, default),
                }
            }
            _ => unreachable!("leaves are handled by the caller"),
        }
    }

    /// Class-keyed table: one set per distinct target (a group of
    /// classes); the target that class 0 (the rest of the address space)
    /// goes to is the fall-through. In a table at the root of a stage
    /// (which every new packet passes), with [`UNION_GROUPS`] groups or
    /// more and a union of at most [`UNION_MAX_PREFIXES`] prefixes, the first
    /// rule sends every address outside all groups to the fall-through
    /// with one lookup in their union — most traffic is from and to
    /// addresses no policy of the table singles out, and it no longer
    /// tests every group — and the last group needs no test of its own.
    /// (One set of every class but 0, shared by all tables, would cost no
    /// prefixes, but addresses of endpoints that the table does not
    /// single out would still test every group; a union in every table
    /// grows the headline model's ipset text ×4; splitting many groups in
    /// halves by unions nests a chain deeper per level: the 100,000-rule
    /// model no longer fits nf_tables' limit.)
    ///
    /// An address a root table does single out would still test the
    /// groups before its own, one set lookup each (~0.2 µs: 230 of them
    /// made a new flow through 10,000 rules cost 45 µs), so with more than
    /// [`CHUNK_GROUPS`] groups to test they are tested in about √G chunks
    /// of about √G ([`Stage::chunked`]): one level deeper, and each prefix
    /// of the table in one more set.
    #[allow(clippy::too_many_arguments)]
    fn class_branches(
        &mut self,
        n: NodeId,
        entries: &[TableEntry],
        children: &[String],
        default: String,
        dir: &str,
        name: &str,
        sets: &mut Sets,
        out: &mut Tables,
    ) -> (Vec<Branch>, String) {
        let nclasses = self.g.classes.len() as ClassId;
        // Distinct targets as small ids (children may repeat a target).
        let mut id_of: FastMap<&str, usize> = FastMap::default();
        let mut names: Vec<&String> = Vec::new();
        let tid: Vec<usize> = entries
            .iter()
            .zip(children)
            .map(|(_, c)| c)
            .chain([&default])
            .map(|c| {
                *id_of.entry(c.as_str()).or_insert_with(|| {
                    names.push(c);
                    names.len() - 1
                })
            })
            .collect();
        let default_id = tid[entries.len()];
        let target_of = |c: ClassId| -> usize {
            let i = entries.partition_point(|e| e.hi < c);
            match entries.get(i) {
                Some(e) if e.lo <= c => tid[i],
                _ => default_id,
            }
        };
        let fall = target_of(0);
        // Classes 1.. by target, in order of first appearance, walking the
        // (sorted, disjoint) entries and the default gaps between them.
        let mut groups: Vec<Vec<ClassId>> = vec![Vec::new(); names.len()];
        let mut order: Vec<usize> = Vec::new();
        let mut push = |t: usize, lo: ClassId, hi: ClassId| {
            if t == fall || lo > hi {
                return;
            }
            if groups[t].is_empty() {
                order.push(t);
            }
            groups[t].extend(lo..=hi);
        };
        let last = nclasses.saturating_sub(1);
        let mut c: ClassId = 1;
        for (i, e) in entries.iter().enumerate() {
            if c >= nclasses {
                break;
            }
            if e.hi < c {
                continue;
            }
            if e.lo > c {
                push(default_id, c, (e.lo - 1).min(last));
            }
            push(tid[i], e.lo.max(c), e.hi.min(last));
            c = e.hi.saturating_add(1);
        }
        if c < nclasses {
            push(default_id, c, last);
        }
        let fall = names[fall].clone();
        let groups: Vec<(Vec<ClassId>, String)> = order
            .into_iter()
            .map(|t| (std::mem::take(&mut groups[t]), names[t].clone()))
            .collect();
        let test = |set: String| format!("-m set --match-set {set} {dir}");
        let r = self.g.dag.roots;
        let root = [r.steer, r.egress, r.ingress].contains(&n);
        let union = (root && groups.len() >= UNION_GROUPS)
            .then(|| {
                groups
                    .iter()
                    .flat_map(|g| g.0.iter().copied())
                    .collect::<Vec<_>>()
            })
            .filter(|all| sets.weight(&self.g.classes, all) <= UNION_MAX_PREFIXES);
        let Some(mut all) = union else {
            if root && groups.len() > CHUNK_GROUPS {
                return (self.chunked(groups, dir, name, sets, out), fall);
            }
            let branches = groups
                .into_iter()
                .map(|(classes, t)| {
                    let set = Sets::name(&sets.get(classes, Role::Branch), self.fam);
                    (test(set), t)
                })
                .collect();
            return (branches, fall);
        };
        all.sort_unstable();
        let set = Sets::name(&sets.get(all, Role::Branch), self.fam);
        let mut branches = vec![(format!("-m set ! --match-set {set} {dir}"), fall)];
        let mut groups = groups;
        let (_, last) = groups.pop().expect("enough groups");
        if groups.len() > CHUNK_GROUPS {
            branches.extend(self.chunked(groups, dir, name, sets, out));
            return (branches, last);
        }
        for (classes, t) in groups {
            let set = Sets::name(&sets.get(classes, Role::Branch), self.fam);
            branches.push((test(set), t));
        }
        (branches, last)
    }

    /// Tests for `groups` (disjoint class lists and their targets) in
    /// about √G chunks: a chunk of one group is its own test; a bigger
    /// one is a test of the chunk's union going to a sub-chain that tests
    /// its groups but the last (what is left of the chunk).
    fn chunked(
        &mut self,
        groups: Vec<(Vec<ClassId>, String)>,
        dir: &str,
        name: &str,
        sets: &mut Sets,
        out: &mut Tables,
    ) -> Vec<Branch> {
        let test = |set: String| format!("-m set --match-set {set} {dir}");
        let k = (groups.len() as f64).sqrt().ceil() as usize;
        let per = groups.len().div_ceil(k);
        let mut branches = Vec::new();
        let mut groups = groups.into_iter().peekable();
        while groups.peek().is_some() {
            let mut chunk: Vec<(Vec<ClassId>, String)> = groups.by_ref().take(per).collect();
            if chunk.len() == 1 {
                let (classes, t) = chunk.pop().expect("one group");
                let set = Sets::name(&sets.get(classes, Role::Branch), self.fam);
                branches.push((test(set), t));
                continue;
            }
            let mut all: Vec<ClassId> = chunk.iter().flat_map(|g| g.0.iter().copied()).collect();
            all.sort_unstable();
            let set = Sets::name(&sets.get(all, Role::Branch), self.fam);
            let sub = self.sub_chain(name);
            out.chain(self.table, &sub);
            let (_, last) = chunk.pop().expect("two groups");
            for (classes, t) in chunk {
                let s = Sets::name(&sets.get(classes, Role::Branch), self.fam);
                out.rule(self.table, &sub, &[&test(s), &t]);
            }
            if last != "-j RETURN" {
                out.rule(self.table, &sub, &[&last]);
            }
            branches.push((test(set), format!("-g {sub}")));
        }
        branches
    }

    fn proto_branches(
        &self,
        ctx: &Ctx,
        es: &[(u32, u32, String)],
        default: String,
    ) -> (Vec<Branch>, String) {
        let mut branches = Vec::new();
        for (b, p) in flow::model_protos(self.fam) {
            if !ctx.has(b) {
                continue;
            }
            let n = u32::from(crate::flowhash::proto_number(p));
            if let Some((_, _, t)) = es.iter().find(|(lo, hi, _)| *lo <= n && n <= *hi) {
                if *t != default {
                    branches.push((format!("-p {}", self.fam.proto(p)), t.clone()));
                }
            }
        }
        // Every protocol that can get here goes one way: no test needed.
        if ctx.protos & flow::OTHER == 0 {
            let here: Vec<&String> = flow::model_protos(self.fam)
                .iter()
                .filter(|(b, _)| ctx.has(*b))
                .map(|(_, p)| {
                    let n = u32::from(crate::flowhash::proto_number(*p));
                    es.iter()
                        .find(|(lo, hi, _)| *lo <= n && n <= *hi)
                        .map_or(&default, |e| &e.2)
                })
                .collect();
            if let Some(first) = here.first() {
                if here.iter().all(|t| t == first) {
                    return (Vec::new(), (*first).clone());
                }
            }
        }
        (branches, default)
    }

    fn port_protos(&self, ctx: &Ctx) -> Vec<&'static str> {
        flow::model_protos(self.fam)
            .iter()
            .filter(|(b, _)| b & PORTS != 0 && ctx.has(*b))
            .map(|(_, p)| self.fam.proto(*p))
            .collect()
    }

    /// Port intervals: rules (grouped with multiport), or a binary tree of
    /// sub-chains over the port space for big tables. Packets without
    /// ports count as port 0.
    fn port_branches(
        &mut self,
        ctx: &Ctx,
        mut es: Vec<(u32, u32, String)>,
        default: String,
        name: &str,
        out: &mut Tables,
    ) -> (Vec<Branch>, String) {
        // Merge adjacent intervals with the same target; drop those going
        // to the default.
        es.retain(|e| e.2 != default);
        let mut merged: Vec<(u32, u32, String)> = Vec::new();
        for e in es {
            match merged.last_mut() {
                Some(l) if l.1 + 1 == e.0 && l.2 == e.2 => l.1 = e.1,
                _ => merged.push(e),
            }
        }
        let protos = self.port_protos(ctx);
        if merged.is_empty() {
            return (Vec::new(), default);
        }
        if merged.len() <= LINEAR_PORTS {
            return self.port_linear(ctx, &protos, &merged, default);
        }
        // Binary tree: ports >= pivot go right.
        let mid = merged.len() / 2;
        let pivot = merged[mid].0;
        let right_name = self.sub_chain(name);
        let left_name = self.sub_chain(name);
        let right_ctx = Ctx {
            protos: ctx.protos & PORTS,
            ..*ctx
        };
        let (rb, rd) = self.port_branches(
            &right_ctx,
            merged[mid..].to_vec(),
            default.clone(),
            &right_name,
            out,
        );
        let (lb, ld) = self.port_branches(ctx, merged[..mid].to_vec(), default, &left_name, out);
        let emit_sub = |sub: &str, b: Vec<Branch>, d: String, out: &mut Tables| -> String {
            if b.is_empty() {
                return d;
            }
            out.chain(self.table, sub);
            for (m, t) in b {
                out.rule(self.table, sub, &[&m, &t]);
            }
            if d != "-j RETURN" {
                out.rule(self.table, sub, &[&d]);
            }
            format!("-g {sub}")
        };
        let rt = emit_sub(&right_name, rb, rd, out);
        let lt = emit_sub(&left_name, lb, ld, out);
        let branches = protos
            .iter()
            .map(|p| (format!("-p {p} -m {p} --dport {pivot}:65535"), rt.clone()))
            .collect();
        (branches, lt)
    }

    fn port_linear(
        &self,
        ctx: &Ctx,
        protos: &[&str],
        merged: &[(u32, u32, String)],
        default: String,
    ) -> (Vec<Branch>, String) {
        // Group by target, in first-appearance order; multiport takes 15
        // slots, a range uses two.
        let mut order: Vec<&String> = Vec::new();
        let mut groups: BTreeMap<&String, Vec<(u32, u32)>> = BTreeMap::new();
        for (lo, hi, t) in merged {
            let g = groups.entry(t).or_default();
            if g.is_empty() {
                order.push(t);
            }
            g.push((*lo, *hi));
        }
        let mut branches = Vec::new();
        for p in protos {
            for t in &order {
                let rs = &groups[*t];
                if rs.len() == 1 {
                    let (lo, hi) = rs[0];
                    branches.push((
                        format!("-p {p} -m {p} --dport {}", ranges(lo, hi)),
                        (*t).clone(),
                    ));
                    continue;
                }
                let mut chunk: Vec<String> = Vec::new();
                let mut slots = 0;
                for &(lo, hi) in rs {
                    let w = if lo == hi { 1 } else { 2 };
                    if slots + w > 15 {
                        branches.push((
                            format!("-p {p} -m multiport --dports {}", chunk.join(",")),
                            (*t).clone(),
                        ));
                        chunk.clear();
                        slots = 0;
                    }
                    chunk.push(ranges(lo, hi));
                    slots += w;
                }
                branches.push((
                    format!("-p {p} -m multiport --dports {}", chunk.join(",")),
                    (*t).clone(),
                ));
            }
        }
        // Packets without ports (port 0) go where port 0 goes.
        let zero = merged.iter().find(|e| e.0 == 0).map(|e| e.2.clone());
        match zero {
            Some(t0) if ctx.has(NO_PORTS) => {
                for p in protos {
                    branches.push((format!("-p {p}"), default.clone()));
                }
                (branches, t0)
            }
            _ => (branches, default),
        }
    }

    fn type_branches(
        &self,
        ctx: &Ctx,
        es: Vec<(u32, u32, String)>,
        default: String,
    ) -> (Vec<Branch>, String) {
        let mut branches = Vec::new();
        let types = ctx.type_list();
        for (lo, hi, t) in &es {
            if *t == default {
                continue;
            }
            for &ty in &types {
                if *lo <= u32::from(ty) && u32::from(ty) <= *hi {
                    branches.push((self.fam.icmp(ty, None), t.clone()));
                }
            }
        }
        if ctx.has(NON_ICMP) {
            if let Some((_, _, t0)) = es.iter().find(|e| e.0 == 0 && e.2 != default) {
                branches.push((
                    format!("! -p {}", self.fam.proto(self.fam.icmp_proto())),
                    t0.clone(),
                ));
            }
        }
        (branches, default)
    }

    fn code_branches(
        &self,
        ctx: &Ctx,
        es: Vec<(u32, u32, String)>,
        default: String,
    ) -> (Vec<Branch>, String) {
        let mut branches = Vec::new();
        let types = ctx.type_list();
        for (lo, hi, t) in &es {
            if *t == default || !ctx.has(ICMP) {
                continue;
            }
            if types.len() <= ENUM_TYPES && hi - lo < 16 {
                for &ty in &types {
                    for c in *lo..=*hi {
                        branches.push((self.fam.icmp(ty, Some(c as u8)), t.clone()));
                    }
                }
            } else {
                branches.push((self.fam.icmp_code_u32(*lo as u8, *hi as u8), t.clone()));
            }
        }
        if ctx.has(NON_ICMP) {
            if let Some((_, _, t0)) = es.iter().find(|e| e.0 == 0 && e.2 != default) {
                branches.push((
                    format!("! -p {}", self.fam.proto(self.fam.icmp_proto())),
                    t0.clone(),
                ));
            }
        }
        (branches, default)
    }
}
