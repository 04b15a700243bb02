//! Readable dumps: a stable text form (for snapshots and `--emit graph`)
//! and Graphviz DOT (`--emit dot`).
//!
//! Nodes are renumbered in depth-first pre-order from the entries (steer,
//! egress, ingress; children in payload order), so the dump does not depend
//! on how a pass happened to allocate ids ([`super::ir::Dag::numbering`],
//! which the verifier and the back ends' provenance use too).

use super::ir::{Cond, Graph, Node, NodeId, SteerLeaf, TableKey};
use crate::flowhash::proto_number;
use crate::model::{Model, Proto, SteerAction};
use crate::provenance::Provenance;
use std::collections::HashMap;
use std::fmt::Write;

fn proto_name(n: u32) -> String {
    for p in crate::model::PROTOS {
        if u32::from(proto_number(p)) == n {
            return crate::graph::dump::pname(p).into();
        }
    }
    n.to_string()
}

pub(crate) fn pname(p: Proto) -> &'static str {
    p.keyword()
}

fn key_name(k: TableKey) -> &'static str {
    match k {
        TableKey::SrcClass => "src class",
        TableKey::DstClass => "dst class",
        TableKey::Proto => "proto",
        TableKey::DPort => "dport",
        TableKey::IcmpType => "icmp type",
        TableKey::IcmpCode => "icmp code",
    }
}

fn range(k: TableKey, lo: u32, hi: u32) -> String {
    let one = |v: u32| match k {
        TableKey::Proto => proto_name(v),
        TableKey::SrcClass | TableKey::DstClass => format!("c{v}"),
        _ => v.to_string(),
    };
    if lo == hi {
        one(lo)
    } else {
        format!("{}..={}", one(lo), one(hi))
    }
}

fn cond_text(c: &Cond) -> String {
    match c {
        Cond::Proto(p) => format!("proto == {}", pname(*p)),
        Cond::DPort { lo, hi } if lo == hi => format!("dport == {lo}"),
        Cond::DPort { lo, hi } => format!("dport in {lo}..={hi}"),
        Cond::IcmpType(t) => format!("icmp type == {t}"),
        Cond::IcmpCode(c) => format!("icmp code == {c}"),
        Cond::SrcAtom(a) => format!("src in a{a}"),
        Cond::DstAtom(a) => format!("dst in a{a}"),
        Cond::SameEndpoint => "src same endpoint as dst".into(),
    }
}

/// How the dump names what the graph refers to by id: provenance and
/// steering rules. A compiled graph names them from its model; a graph
/// parsed from its text ([`super::text`]) keeps the names it was given,
/// so parse → print reproduces the text.
pub trait Names {
    /// `#id description` of a provenance id.
    fn provenance(&self, id: u32) -> String;
    /// `steer NAME rule #k: action` of a steering leaf.
    fn steer(&self, steer: usize, index: usize) -> String;
}

/// A compiled graph's names, from its model.
struct ModelNames<'a> {
    model: &'a Model,
    g: &'a Graph,
}

impl Names for ModelNames<'_> {
    fn provenance(&self, id: u32) -> String {
        let p: Provenance = self.g.provenance.entries[id as usize];
        format!("#{id} {}", p.describe(self.model))
    }

    fn steer(&self, steer: usize, index: usize) -> String {
        let act = match &self.g.steer_actions[steer][index] {
            SteerAction::Redirect { addr, port } => format!("redirect to proxy {addr}:{port}"),
            SteerAction::Mark(m) => format!("mark {m:#x}"),
            SteerAction::Dscp(d) => format!("dscp {d}"),
            SteerAction::Bypass => "bypass".into(),
        };
        format!(
            "steer {} rule #{}: {act}",
            self.model.steers[steer].name,
            index + 1
        )
    }
}

/// One line describing node `n` (children by dump number).
pub(crate) fn node_text(names: &dyn Names, node: &Node, num: &HashMap<NodeId, usize>) -> String {
    let r = |c: &NodeId| format!("n{}", num[c]);
    match node {
        Node::Test { cond, then, els } => {
            format!("if {} then {} else {}", cond_text(cond), r(then), r(els))
        }
        Node::Table {
            key,
            entries,
            default,
            rule,
        } => {
            let es: Vec<String> = entries
                .iter()
                .map(|e| format!("{} -> {}", range(*key, e.lo, e.hi), r(&e.next)))
                .collect();
            let mut s = format!(
                "table {} {{ {} }} default {}",
                key_name(*key),
                es.join(", "),
                r(default)
            );
            if let Some(rule) = rule {
                let rs: Vec<String> = rule
                    .iter()
                    .map(|(a, t)| format!("a{a} -> {}", r(t)))
                    .collect();
                let _ = write!(s, " from [{}]", rs.join(", "));
            }
            s
        }
        Node::Verdict(v) => {
            let mut s = format!(
                "{} by {}",
                if v.allow { "allow" } else { "deny" },
                names.provenance(v.decided)
            );
            if !v.logged.is_empty() {
                let ls: Vec<String> = v.logged.iter().map(|l| format!("#{l}")).collect();
                let _ = write!(s, "; logged [{}]", ls.join(", "));
            }
            s
        }
        Node::Steer(SteerLeaf::None) => "no steering".into(),
        Node::Steer(SteerLeaf::Hit { steer, index }) => names.steer(*steer, *index),
    }
}

/// The text dump: atoms, classes, class map, services, then the nodes.
pub fn text(model: &Model, g: &Graph) -> String {
    let mut s = String::new();
    write_text(model, g, &mut s);
    s
}

/// [`text`] written into `s` as it is made (`graph.txt` goes to the
/// bundle's file this way, never held whole: 29 MB for 100,000
/// one-peer-per-pod rules). Errors of `s` are its own to keep
/// (`bundle::sink::FmtIo`).
pub fn write_text<W: Write>(model: &Model, g: &Graph, s: &mut W) {
    write_parts_text(g.parts(), s);
    write_nodes_text(model, g, s);
}

/// The first part of [`write_text`]: atoms, classes, class map and
/// services, which need only the graph's model-only parts
/// ([`super::parts`]; `weir compile` writes them while the graph is
/// built).
pub fn write_parts_text<W: Write>(parts: super::PartsRef, s: &mut W) {
    let cl = parts.classes;
    let _ = writeln!(s, "# weir decision graph");
    let _ = writeln!(s, "atoms:");
    for (i, a) in cl.atoms.iter().enumerate() {
        let _ = writeln!(s, "  a{i} = {a}");
    }
    let _ = writeln!(s, "classes:");
    for (i, c) in cl.classes.iter().enumerate() {
        let atoms: Vec<String> = c.iter().map(|a| format!("a{a}")).collect();
        let _ = writeln!(s, "  c{i} = {{{}}}", atoms.join(", "));
    }
    let _ = writeln!(s, "class map (longest prefix; no match = c0):");
    for e in &cl.entries {
        let _ = writeln!(s, "  {} -> c{}", e.cidr, e.class);
    }
    let services = parts.services;
    if !services.frontends.is_empty() {
        let _ = writeln!(s, "services:");
        for f in &services.frontends {
            let svc = &services.services[f.service];
            let set = &services.backend_sets[f.backends];
            let bs: Vec<String> = set
                .backends
                .iter()
                .map(|b| format!("{}:{} w{}", b.addr, b.port, b.weight))
                .collect();
            let _ = writeln!(
                s,
                "  {}:{}/{} -> {} ({:?}{}) [{}]",
                f.frontend.addr,
                f.frontend.port,
                pname(f.frontend.proto),
                svc.name,
                svc.balance,
                svc.affinity
                    .map(|a| format!(", affinity {a}s"))
                    .unwrap_or_default(),
                bs.join(", ")
            );
        }
    }
}

/// The rest of [`write_text`]: the entries and the nodes.
pub fn write_nodes_text<W: Write>(model: &Model, g: &Graph, s: &mut W) {
    nodes(s, &g.dag, &ModelNames { model, g });
}

/// The entries and the nodes in dump order, one line each.
pub(crate) fn nodes<W: Write>(s: &mut W, dag: &super::ir::Dag, names: &dyn Names) {
    let (order, num) = dag.numbering();
    for (name, r) in dag.roots.all() {
        let _ = writeln!(s, "entry {name} -> n{}", num[&r]);
    }
    for n in order {
        let _ = writeln!(s, "n{} = {}", num[&n], node_text(names, dag.node(n), &num));
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT.
pub fn dot(model: &Model, g: &Graph) -> String {
    let (order, num) = g.dag.numbering();
    let mut s = String::from("digraph weir {\n  rankdir=TB;\n  node [fontname=\"monospace\"];\n");
    for (name, r) in g.dag.roots.all() {
        let _ = writeln!(s, "  entry_{name} [shape=plaintext, label=\"{name}\"];");
        let _ = writeln!(s, "  entry_{name} -> n{};", num[&r]);
    }
    for &n in &order {
        let node = g.node(n);
        let (shape, label) = match node {
            Node::Test { cond, .. } => ("diamond", cond_text(cond)),
            Node::Table { key, entries, .. } => (
                "box3d",
                format!("table {} ({} entries)", key_name(*key), entries.len()),
            ),
            Node::Verdict(_) | Node::Steer(_) => {
                ("box", node_text(&ModelNames { model, g }, node, &num))
            }
        };
        let _ = writeln!(
            s,
            "  n{} [shape={shape}, label=\"{}\"];",
            num[&n],
            dot_escape(&label)
        );
        for (e, c) in node.children() {
            let l = match e {
                super::ir::Edge::Then => "yes".to_string(),
                super::ir::Edge::Else => "no".to_string(),
                super::ir::Edge::Default => "default".to_string(),
                super::ir::Edge::Entry { lo, hi } => match node {
                    Node::Table { key, .. } => range(*key, lo, hi),
                    _ => String::new(),
                },
            };
            let _ = writeln!(
                s,
                "  n{} -> n{} [label=\"{}\"];",
                num[&n],
                num[&c],
                dot_escape(&l)
            );
        }
    }
    s.push_str("}\n");
    s
}
