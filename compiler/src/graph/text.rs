//! The decision graph's text form, read back: a parser for what
//! [`super::dump::text`] writes (`graph.txt`, `--emit graph`), so that the
//! optimizer passes and the verifier are tested by text fixtures
//! (compiler/tests/graph/*.graph, as Cranelift's filetests), and an
//! internal compiler error's `n12` can be looked up in a dump and fed back.
//!
//! What is structure is parsed: the atoms' and classes' ids, the class
//! rows, the entries, every node (tests, tables with their `from [...]`
//! decision lists, verdicts with provenance and log ids, steering leaves).
//! What a dump derives from the model is kept verbatim and printed back
//! as read: an atom's text, a provenance id's description, a steering
//! rule's name and action, the class-map and services sections. A pass
//! never changes those, so `print(parse(dump))` is the dump itself (tested
//! on every example and generated model).
//!
//! Nodes may appear in any order; ids are assigned children first, as
//! [`Builder`] requires. A reference to an undefined node, a cycle, or a
//! line of no known shape is a [`ParseError`] naming the line.

use super::bits::Bits;
use super::classes::{AtomId, Classes};
use super::dump::{self, Names};
use super::ir::VerdictLeaf;
use super::ir::{Builder, Cond, Dag, Node, NodeId, Roots, SteerLeaf, TableEntry, TableKey};
use crate::model::Proto;
use std::collections::BTreeMap;
use std::fmt::Write;

/// A graph read from its text form.
#[derive(Debug, Clone)]
pub struct GraphText {
    /// Atom id → its text as read (`selector app == "api"`).
    pub atoms: Vec<String>,
    /// Class id → the atoms its addresses satisfy.
    pub classes: Vec<Vec<AtomId>>,
    /// The class-map and services sections, lines as read.
    pub other: Vec<String>,
    pub dag: Dag,
    names: TextNames,
}

/// A parse failure: the 1-based line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The descriptions the text gave, by id.
#[derive(Debug, Clone, Default)]
struct TextNames {
    /// Provenance id → `#id description`.
    provenance: BTreeMap<u32, String>,
    /// Steer block names in order of first appearance (their index).
    steers: Vec<String>,
    /// (steer, rule index) → the whole leaf text.
    steer_rules: BTreeMap<(usize, usize), String>,
}

impl Names for TextNames {
    fn provenance(&self, id: u32) -> String {
        self.provenance
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    }

    fn steer(&self, steer: usize, index: usize) -> String {
        self.steer_rules
            .get(&(steer, index))
            .cloned()
            .unwrap_or_else(|| format!("steer {steer} rule #{}", index + 1))
    }
}

impl GraphText {
    /// The text form, exactly as [`super::dump::text`] lays it out.
    pub fn print(&self) -> String {
        let mut s = String::from("# weir decision graph\n");
        if !self.atoms.is_empty() || !self.classes.is_empty() {
            s.push_str("atoms:\n");
            for (i, a) in self.atoms.iter().enumerate() {
                let _ = writeln!(s, "  a{i} = {a}");
            }
            s.push_str("classes:\n");
            for (i, c) in self.classes.iter().enumerate() {
                let atoms: Vec<String> = c.iter().map(|a| format!("a{a}")).collect();
                let _ = writeln!(s, "  c{i} = {{{}}}", atoms.join(", "));
            }
        }
        for l in &self.other {
            let _ = writeln!(s, "{l}");
        }
        dump::nodes(&mut s, &self.dag, &self.names);
        s
    }

    /// The same text with another node set (after a pass).
    pub fn with_dag(&self, dag: Dag) -> GraphText {
        GraphText {
            dag,
            ..self.clone()
        }
    }

    /// Classes with these rows, for the passes that read them (atoms are
    /// stand-ins in id order; the class map is empty).
    pub fn class_table(&self) -> Classes {
        let rows = self
            .classes
            .iter()
            .map(|c| {
                let mut b = Bits::new();
                for &a in c {
                    b.insert(a as usize);
                }
                b
            })
            .collect();
        Classes::from_rows(self.atoms.len(), rows)
    }

    /// The limits the verifier checks references against: atoms, classes,
    /// provenance ids (one more than the largest described or used), and
    /// the rules of each steer block.
    pub fn bounds(&self) -> super::verify::Bounds {
        let mut prov = self
            .names
            .provenance
            .keys()
            .map(|&k| k + 1)
            .max()
            .unwrap_or(0);
        let mut rules = vec![0; self.names.steers.len()];
        for &(s, i) in self.names.steer_rules.keys() {
            rules[s] = rules[s].max(i + 1);
        }
        for n in self.dag.reachable() {
            if let Node::Verdict(v) = self.dag.node(n) {
                for &id in std::iter::once(&v.decided).chain(&v.logged) {
                    if !self.names.provenance.contains_key(&id) {
                        prov = prov.max(id + 1);
                    }
                }
            }
        }
        super::verify::Bounds {
            atoms: self.atoms.len() as u32,
            classes: self.classes.len() as u32,
            provenance: prov,
            steer_rules: rules,
        }
    }
}

/// A node as read: its payload with each child id standing for its dump
/// number (`nK` → `NodeId::new(K)`) until the node is added.
type RawNode = Node;

/// Every dump number a read node refers to: its children and its table's
/// decision-list targets.
fn referenced(raw: &RawNode) -> Vec<usize> {
    let mut v: Vec<usize> = raw.children().iter().map(|c| c.1.index()).collect();
    if let Node::Table { rule: Some(r), .. } = raw {
        v.extend(r.iter().map(|x| x.1.index()));
    }
    v
}

fn dump_id(k: usize) -> NodeId {
    NodeId::new(k)
}

/// Parses a dump (or a fixture: `;` starts a comment line; the atoms and
/// classes sections are optional).
pub fn parse(text: &str) -> Result<GraphText, ParseError> {
    let mut p = Parser::default();
    for (i, line) in text.lines().enumerate() {
        p.line = i + 1;
        p.line_of(line)?;
    }
    p.finish()
}

#[derive(Default)]
struct Parser {
    line: usize,
    section: Section,
    atoms: Vec<String>,
    classes: Vec<Vec<AtomId>>,
    other: Vec<String>,
    entries: BTreeMap<String, usize>,
    nodes: BTreeMap<usize, (usize, RawNode)>,
    names: TextNames,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Section {
    #[default]
    Top,
    Atoms,
    Classes,
    Other,
}

impl Parser {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }

    fn line_of(&mut self, line: &str) -> Result<(), ParseError> {
        if line.trim().is_empty() || line.starts_with(';') || line.starts_with("# weir") {
            return Ok(());
        }
        match line {
            "atoms:" => self.section = Section::Atoms,
            "classes:" => self.section = Section::Classes,
            _ if line.starts_with("class map") || line == "services:" => {
                self.section = Section::Other;
                self.other.push(line.to_string());
            }
            _ if line.starts_with("  ") => self.section_line(line.trim_start())?,
            _ if line.starts_with("entry ") => self.entry(line)?,
            _ if line.starts_with('n') => self.node(line)?,
            _ => return self.err(format!("unknown line `{line}`")),
        }
        Ok(())
    }

    fn section_line(&mut self, l: &str) -> Result<(), ParseError> {
        match self.section {
            Section::Atoms => {
                let (id, text) = self.definition(l, 'a')?;
                self.expect_next(id, self.atoms.len(), 'a')?;
                self.atoms.push(text.to_string());
            }
            Section::Classes => {
                let (id, text) = self.definition(l, 'c')?;
                self.expect_next(id, self.classes.len(), 'c')?;
                let inner = text
                    .strip_prefix('{')
                    .and_then(|t| t.strip_suffix('}'))
                    .map_or_else(|| self.err(format!("expected {{a…}}, found `{text}`")), Ok)?;
                let atoms = list(inner)
                    .map(|a| self.id(a, 'a'))
                    .collect::<Result<Vec<_>, _>>()?;
                self.classes
                    .push(atoms.into_iter().map(|a| a as AtomId).collect());
            }
            Section::Other => self.other.push(format!("  {l}")),
            Section::Top => return self.err(format!("`{l}` outside a section")),
        }
        Ok(())
    }

    fn definition<'l>(&self, l: &'l str, prefix: char) -> Result<(usize, &'l str), ParseError> {
        let Some((name, text)) = l.split_once(" = ") else {
            return self.err(format!("expected `{prefix}N = …`, found `{l}`"));
        };
        Ok((self.id(name, prefix)?, text))
    }

    fn expect_next(&self, id: usize, want: usize, prefix: char) -> Result<(), ParseError> {
        if id == want {
            Ok(())
        } else {
            self.err(format!("expected {prefix}{want}, found {prefix}{id}"))
        }
    }

    /// `a3` → 3 (for prefix `a`).
    fn id(&self, s: &str, prefix: char) -> Result<usize, ParseError> {
        s.trim()
            .strip_prefix(prefix)
            .and_then(|d| d.parse().ok())
            .map_or_else(|| self.err(format!("expected {prefix}N, found `{s}`")), Ok)
    }

    fn entry(&mut self, l: &str) -> Result<(), ParseError> {
        let rest = &l["entry ".len()..];
        let Some((name, target)) = rest.split_once(" -> ") else {
            return self.err(format!("expected `entry NAME -> nN`, found `{l}`"));
        };
        if !matches!(name, "steer" | "egress" | "ingress") {
            return self.err(format!("unknown entry `{name}`"));
        }
        let n = self.id(target, 'n')?;
        if self.entries.insert(name.to_string(), n).is_some() {
            return self.err(format!("entry {name} given twice"));
        }
        Ok(())
    }

    fn node(&mut self, l: &str) -> Result<(), ParseError> {
        let (id, body) = self.definition(l, 'n')?;
        let raw = self.node_body(body)?;
        if self.nodes.insert(id, (self.line, raw)).is_some() {
            return self.err(format!("n{id} defined twice"));
        }
        Ok(())
    }

    fn node_body(&mut self, b: &str) -> Result<RawNode, ParseError> {
        if let Some(rest) = b.strip_prefix("if ") {
            return self.test(rest);
        }
        if let Some(rest) = b.strip_prefix("table ") {
            return self.table(rest);
        }
        if b == "no steering" {
            return Ok(Node::Steer(SteerLeaf::None));
        }
        if let Some(rest) = b.strip_prefix("steer ") {
            return self.steer(b, rest);
        }
        for (word, allow) in [("allow by ", true), ("deny by ", false)] {
            if let Some(rest) = b.strip_prefix(word) {
                return self.verdict(allow, rest);
            }
        }
        self.err(format!("unknown node `{b}`"))
    }

    fn test(&self, rest: &str) -> Result<RawNode, ParseError> {
        let (cond, branches) = rest
            .split_once(" then ")
            .map_or_else(|| self.err("expected `if COND then nA else nB`"), Ok)?;
        let (then, els) = branches
            .split_once(" else ")
            .map_or_else(|| self.err("expected `then nA else nB`"), Ok)?;
        Ok(Node::Test {
            cond: self.cond(cond)?,
            then: dump_id(self.id(then, 'n')?),
            els: dump_id(self.id(els, 'n')?),
        })
    }

    fn cond(&self, c: &str) -> Result<Cond, ParseError> {
        let num = |s: &str| -> Result<u32, ParseError> {
            s.parse()
                .map_or_else(|_| self.err(format!("expected a number, found `{s}`")), Ok)
        };
        if let Some(p) = c.strip_prefix("proto == ") {
            return proto(p).map_or_else(
                || self.err(format!("unknown protocol `{p}`")),
                |p| Ok(Cond::Proto(p)),
            );
        }
        if let Some(v) = c.strip_prefix("dport == ") {
            let v = u16_of(num(v)?).map_or_else(|| self.err("port out of range"), Ok)?;
            return Ok(Cond::DPort { lo: v, hi: v });
        }
        if let Some(r) = c.strip_prefix("dport in ") {
            let (lo, hi) = r
                .split_once("..=")
                .map_or_else(|| self.err("expected `dport in LO..=HI`"), Ok)?;
            let (lo, hi) = (u16_of(num(lo)?), u16_of(num(hi)?));
            let (Some(lo), Some(hi)) = (lo, hi) else {
                return self.err("port out of range");
            };
            return Ok(Cond::DPort { lo, hi });
        }
        if let Some(v) = c.strip_prefix("icmp type == ") {
            return u8::try_from(num(v)?).map_or_else(
                |_| self.err("icmp type out of range"),
                |t| Ok(Cond::IcmpType(t)),
            );
        }
        if let Some(v) = c.strip_prefix("icmp code == ") {
            return u8::try_from(num(v)?).map_or_else(
                |_| self.err("icmp code out of range"),
                |t| Ok(Cond::IcmpCode(t)),
            );
        }
        if let Some(a) = c.strip_prefix("src in ") {
            return Ok(Cond::SrcAtom(self.id(a, 'a')? as AtomId));
        }
        if c == "src same endpoint as dst" {
            return Ok(Cond::SameEndpoint);
        }
        if let Some(a) = c.strip_prefix("dst in ") {
            return Ok(Cond::DstAtom(self.id(a, 'a')? as AtomId));
        }
        self.err(format!("unknown condition `{c}`"))
    }

    fn table(&self, rest: &str) -> Result<RawNode, ParseError> {
        let key = TABLE_KEYS
            .iter()
            .find(|(name, _)| rest.starts_with(&format!("{name} {{")))
            .map_or_else(|| self.err(format!("unknown table key in `{rest}`")), Ok)?;
        let rest = &rest[key.0.len() + 2..];
        let (body, after) = rest
            .split_once(" } default ")
            .map_or_else(|| self.err("expected `{ … } default nN`"), Ok)?;
        let (default, rule) = match after.split_once(" from [") {
            Some((d, r)) => (
                d,
                Some(
                    r.strip_suffix(']')
                        .map_or_else(|| self.err("unclosed `from [`"), Ok)?,
                ),
            ),
            None => (after, None),
        };
        let mut entries = Vec::new();
        for e in list(body.trim()) {
            let (range, next) = e.split_once(" -> ").map_or_else(
                || self.err(format!("expected `RANGE -> nN`, found `{e}`")),
                Ok,
            )?;
            let (lo, hi) = match range.split_once("..=") {
                Some((lo, hi)) => (self.key_value(key.1, lo)?, self.key_value(key.1, hi)?),
                None => {
                    let v = self.key_value(key.1, range)?;
                    (v, v)
                }
            };
            entries.push(TableEntry {
                lo,
                hi,
                next: dump_id(self.id(next, 'n')?),
            });
        }
        let rule = rule
            .map(|r| {
                list(r)
                    .map(|x| {
                        let (a, n) = x.split_once(" -> ").map_or_else(
                            || self.err(format!("expected `aN -> nM`, found `{x}`")),
                            Ok,
                        )?;
                        Ok((self.id(a, 'a')? as AtomId, dump_id(self.id(n, 'n')?)))
                    })
                    .collect::<Result<Vec<_>, ParseError>>()
            })
            .transpose()?;
        Ok(Node::Table {
            key: key.1,
            entries,
            default: dump_id(self.id(default, 'n')?),
            rule,
        })
    }

    /// One bound of a table entry: `c3` for class keys, a protocol name or
    /// number for protocol keys, a number otherwise.
    fn key_value(&self, key: TableKey, v: &str) -> Result<u32, ParseError> {
        let v = v.trim();
        let parsed = match key {
            TableKey::SrcClass | TableKey::DstClass => return self.id(v, 'c').map(|c| c as u32),
            TableKey::Proto => proto(v).map(|p| u32::from(crate::flowhash::proto_number(p))),
            _ => None,
        };
        parsed
            .or_else(|| v.parse().ok())
            .map_or_else(|| self.err(format!("bad table value `{v}`")), Ok)
    }

    fn verdict(&mut self, allow: bool, rest: &str) -> Result<RawNode, ParseError> {
        let (decided, logged) = match rest.split_once("; logged [") {
            Some((d, l)) => (
                d,
                l.strip_suffix(']')
                    .map_or_else(|| self.err("unclosed `logged [`"), Ok)?,
            ),
            None => (rest, ""),
        };
        let id_text = decided.split(' ').next().unwrap_or_default();
        let id = self.prov_id(id_text)?;
        if decided.len() > id_text.len() {
            self.names.provenance.insert(id, decided.to_string());
        }
        let logged = list(logged)
            .map(|l| self.prov_id(l))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Node::Verdict(VerdictLeaf {
            allow,
            decided: id,
            logged,
        }))
    }

    fn prov_id(&self, s: &str) -> Result<u32, ParseError> {
        s.strip_prefix('#')
            .and_then(|d| d.parse().ok())
            .map_or_else(
                || self.err(format!("expected a provenance id `#N`, found `{s}`")),
                Ok,
            )
    }

    /// `steer NAME rule #K: ACTION`; steer blocks are numbered by first
    /// appearance (the text keeps only their names).
    fn steer(&mut self, whole: &str, rest: &str) -> Result<RawNode, ParseError> {
        let (name, after) = rest
            .split_once(" rule #")
            .map_or_else(|| self.err("expected `steer NAME rule #K: …`"), Ok)?;
        let k: usize = after
            .split(':')
            .next()
            .and_then(|k| k.parse().ok())
            .filter(|&k| k > 0)
            .map_or_else(|| self.err("expected a rule number ≥ 1"), Ok)?;
        let steer = match self.names.steers.iter().position(|s| s == name) {
            Some(i) => i,
            None => {
                self.names.steers.push(name.to_string());
                self.names.steers.len() - 1
            }
        };
        self.names
            .steer_rules
            .insert((steer, k - 1), whole.to_string());
        Ok(Node::Steer(SteerLeaf::Hit {
            steer,
            index: k - 1,
        }))
    }

    /// Adds the nodes children first, then the entries.
    fn finish(self) -> Result<GraphText, ParseError> {
        let mut b = Builder::new(false);
        let mut ids: BTreeMap<usize, NodeId> = BTreeMap::new();
        let mut roots = [NodeId::new(0); 3];
        for (i, name) in ["steer", "egress", "ingress"].iter().enumerate() {
            let Some(&n) = self.entries.get(*name) else {
                return Err(ParseError {
                    line: self.line,
                    message: format!("no `entry {name}`"),
                });
            };
            roots[i] = self.add(n, &mut b, &mut ids)?;
        }
        let dag = b.finish(Roots {
            steer: roots[0],
            egress: roots[1],
            ingress: roots[2],
        });
        Ok(GraphText {
            atoms: self.atoms,
            classes: self.classes,
            other: self.other,
            dag,
            names: self.names,
        })
    }

    /// Adds `n` after its children (iterative: a dump may be deep).
    fn add(
        &self,
        root: usize,
        b: &mut Builder,
        ids: &mut BTreeMap<usize, NodeId>,
    ) -> Result<NodeId, ParseError> {
        // (node, children pushed?)
        let mut stack = vec![(root, false)];
        let mut on_path: BTreeMap<usize, ()> = BTreeMap::new();
        while let Some((n, expanded)) = stack.pop() {
            if ids.contains_key(&n) {
                continue;
            }
            let Some((line, raw)) = self.nodes.get(&n) else {
                return Err(ParseError {
                    line: self.line,
                    message: format!("n{n} is used but not defined"),
                });
            };
            if expanded {
                on_path.remove(&n);
                let node = raw.map_children(|c| ids[&c.index()]);
                ids.insert(n, b.add(node));
                continue;
            }
            if on_path.insert(n, ()).is_some() {
                return Err(ParseError {
                    line: *line,
                    message: format!("n{n} is its own descendant (a cycle)"),
                });
            }
            stack.push((n, true));
            for c in referenced(raw) {
                if !ids.contains_key(&c) {
                    if on_path.contains_key(&c) {
                        return Err(ParseError {
                            line: *line,
                            message: format!("n{n} → n{c} closes a cycle"),
                        });
                    }
                    stack.push((c, false));
                }
            }
        }
        Ok(ids[&root])
    }
}

const TABLE_KEYS: [(&str, TableKey); 6] = [
    ("src class", TableKey::SrcClass),
    ("dst class", TableKey::DstClass),
    ("proto", TableKey::Proto),
    ("dport", TableKey::DPort),
    ("icmp type", TableKey::IcmpType),
    ("icmp code", TableKey::IcmpCode),
];

/// Items of a `, `-separated list (none for an empty one).
fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(", ").map(str::trim).filter(|x| !x.is_empty())
}

fn proto(s: &str) -> Option<Proto> {
    crate::model::PROTOS
        .into_iter()
        .find(|&p| dump::pname(p) == s)
}

fn u16_of(v: u32) -> Option<u16> {
    u16::try_from(v).ok()
}
