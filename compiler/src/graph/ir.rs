//! The decision graph: plain data with index ids, a petgraph `DiGraph`
//! underneath.
//!
//! Nodes are immutable once added and always added after their children,
//! so node ids are a topological order (children have smaller ids) and the
//! graph is acyclic by construction; the verifier checks it anyway. A node
//! names its children in its payload; the petgraph edges are derived from
//! the payload when the node is added ([`Builder::add`]), never edited, so
//! the two cannot disagree. Passes build a new graph rather than mutating.
//!
//! Three entry points decide one packet, each in one back-end stage:
//!
//! - `steer`, on the packet as sent → a [`Node::Steer`] leaf (which
//!   steering rule matched first, if any);
//! - `egress`, subject = source class, peer = destination class after
//!   service translation → a [`Node::Verdict`] leaf;
//! - `ingress`, subject = destination class (after translation), peer =
//!   source class → a [`Node::Verdict`] leaf.
//!
//! The service stage is the [`ServiceTable`] (one exact-match lookup on
//! (destination, port, protocol)). The fixed pipeline order — conntrack
//! state, steer/bypass, service, egress, ingress, steering action — is
//! *not* in the graph: it is the stage structure every back end shares
//! (docs/language.md §4), and [`super::eval`] spells it out once.

use super::classes::{AtomId, Classes};
use crate::maglev;
use crate::model::{Backend, Balance, Frontend, Model, Proto, SteerAction, Verdict};
use crate::provenance::ProvenanceTable;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use std::collections::BTreeMap;
// FxHash: these maps are hot and keyed by ids, nodes and short strings;
// nothing iterates them into output.
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

pub type NodeId = NodeIndex<u32>;

/// What an internal test node asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Cond {
    /// The packet's protocol is this one.
    Proto(Proto),
    /// The destination port is in `lo..=hi`.
    DPort {
        lo: u16,
        hi: u16,
    },
    IcmpType(u8),
    IcmpCode(u8),
    /// The source address's class satisfies the atom.
    SrcAtom(AtomId),
    /// The destination address's class satisfies the atom.
    DstAtom(AtomId),
    /// The source and destination addresses belong to the same endpoint
    /// (`self`; see `graph/same_endpoint.rs`): a relation between the
    /// two addresses, not a property of either class, so endpoint churn
    /// updates it as data.
    SameEndpoint,
}

/// The key of a table node: one map / ipset lookup in a back end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TableKey {
    SrcClass,
    DstClass,
    /// IP protocol number (tcp 6, udp 17, sctp 132, icmp 1).
    Proto,
    DPort,
    IcmpType,
    IcmpCode,
}

/// `lo..=hi` of the key → `next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableEntry {
    pub lo: u32,
    pub hi: u32,
    pub next: NodeId,
}

/// Decision leaf of the egress / ingress entries: exactly the fields of
/// the interpreter's `SideDecision` that back ends reproduce.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct VerdictLeaf {
    pub allow: bool,
    /// Provenance id ([`ProvenanceTable`]) of what decided.
    pub decided: u32,
    /// Provenance ids of the log rules passed on the way, then the
    /// deciding rule if it has the `log` flag, in evaluation order.
    pub logged: Vec<u32>,
}

impl VerdictLeaf {
    pub fn verdict(&self) -> Verdict {
        if self.allow {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }
}

/// Leaf of the steer entry: the first matching steering rule, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum SteerLeaf {
    None,
    /// Rule `index` of steer block `steer` (its action is in
    /// [`Graph::steer_actions`]).
    Hit {
        steer: usize,
        index: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    Test {
        cond: Cond,
        then: NodeId,
        els: NodeId,
    },
    Table {
        key: TableKey,
        /// Sorted, disjoint intervals.
        entries: Vec<TableEntry>,
        default: NodeId,
        /// For class-keyed tables built from a decision list of atom tests:
        /// that list (first atom the class satisfies → node, else
        /// `default`), so a runtime can add a row for a class it allocates
        /// (see classes.rs, "Endpoints that appear at run time").
        rule: Option<Vec<(AtomId, NodeId)>>,
    },
    Verdict(VerdictLeaf),
    Steer(SteerLeaf),
}

/// Edge labels (derived from the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Edge {
    Then,
    Else,
    Entry { lo: u32, hi: u32 },
    Default,
}

impl Node {
    /// Children with their edge labels, in payload order. Table `rule`
    /// targets are always also entry targets or the default, so they add
    /// no edges.
    pub fn children(&self) -> Vec<(Edge, NodeId)> {
        match self {
            Node::Test { then, els, .. } => vec![(Edge::Then, *then), (Edge::Else, *els)],
            Node::Table {
                entries, default, ..
            } => {
                let mut v: Vec<(Edge, NodeId)> = entries
                    .iter()
                    .map(|e| (Edge::Entry { lo: e.lo, hi: e.hi }, e.next))
                    .collect();
                v.push((Edge::Default, *default));
                v
            }
            Node::Verdict(_) | Node::Steer(_) => Vec::new(),
        }
    }

    pub fn is_leaf(&self) -> bool {
        matches!(self, Node::Verdict(_) | Node::Steer(_))
    }

    /// A copy with every child id passed through `f`.
    pub fn map_children(&self, mut f: impl FnMut(NodeId) -> NodeId) -> Node {
        match self {
            Node::Test { cond, then, els } => Node::Test {
                cond: *cond,
                then: f(*then),
                els: f(*els),
            },
            Node::Table {
                key,
                entries,
                default,
                rule,
            } => Node::Table {
                key: *key,
                entries: entries
                    .iter()
                    .map(|e| TableEntry {
                        next: f(e.next),
                        ..*e
                    })
                    .collect(),
                default: f(*default),
                rule: rule
                    .as_ref()
                    .map(|r| r.iter().map(|&(a, n)| (a, f(n))).collect()),
            },
            leaf => leaf.clone(),
        }
    }
}

/// The three entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Roots {
    pub steer: NodeId,
    pub egress: NodeId,
    pub ingress: NodeId,
}

impl Roots {
    pub fn all(&self) -> [(&'static str, NodeId); 3] {
        [
            ("steer", self.steer),
            ("egress", self.egress),
            ("ingress", self.ingress),
        ]
    }

    pub fn map(&self, mut f: impl FnMut(NodeId) -> NodeId) -> Roots {
        Roots {
            steer: f(self.steer),
            egress: f(self.egress),
            ingress: f(self.ingress),
        }
    }
}

/// The nodes and entry points: what passes transform.
#[derive(Debug, Clone)]
pub struct Dag {
    pub g: DiGraph<Node, Edge, u32>,
    pub roots: Roots,
}

impl Dag {
    pub fn node(&self, n: NodeId) -> &Node {
        &self.g[n]
    }

    /// Reachable nodes in dump order — depth-first pre-order from the
    /// entries (steer, egress, ingress; children in payload order) — with
    /// their dump numbers (`n12` in graph.txt). Everything that names a
    /// node to a person (the dump, the verifier, `--emit asm`, the
    /// capacity report) uses these numbers, so they match each other.
    pub fn numbering(&self) -> (Vec<NodeId>, std::collections::HashMap<NodeId, usize>) {
        let mut order = Vec::new();
        let mut num = std::collections::HashMap::new();
        let mut stack: Vec<NodeId> = self.roots.all().iter().rev().map(|r| r.1).collect();
        while let Some(n) = stack.pop() {
            if num.contains_key(&n) {
                continue;
            }
            num.insert(n, order.len());
            order.push(n);
            for (_, c) in self.node(n).children().into_iter().rev() {
                if !num.contains_key(&c) {
                    stack.push(c);
                }
            }
        }
        (order, num)
    }

    /// Nodes reachable from the roots, in increasing id order (children
    /// before parents).
    pub fn reachable(&self) -> Vec<NodeId> {
        let mut seen = vec![false; self.g.node_count()];
        let mut stack: Vec<NodeId> = self.roots.all().iter().map(|r| r.1).collect();
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut seen[n.index()], true) {
                continue;
            }
            for (_, c) in self.g[n].children() {
                stack.push(c);
            }
        }
        (0..seen.len())
            .filter(|&i| seen[i])
            .map(NodeIndex::new)
            .collect()
    }

    /// Rebuild the reachable part bottom-up through `f`, which gets the
    /// old node with children already mapped to new ids and adds the
    /// replacement (or returns an existing node) in the new builder.
    pub fn rebuild(&self, hashcons: bool, mut f: impl FnMut(&mut Builder, Node) -> NodeId) -> Dag {
        let mut b = Builder::new(hashcons);
        let mut map: HashMap<NodeId, NodeId> = HashMap::default();
        for n in self.reachable() {
            let node = self.g[n].map_children(|c| map[&c]);
            let id = f(&mut b, node);
            map.insert(n, id);
        }
        let roots = self.roots.map(|r| map[&r]);
        b.finish(roots)
    }
}

/// Adds nodes (children first), optionally hash-consing them.
pub struct Builder {
    g: DiGraph<Node, Edge, u32>,
    intern: Option<HashMap<Node, NodeId>>,
}

impl Builder {
    pub fn new(hashcons: bool) -> Builder {
        Builder {
            g: DiGraph::default(),
            intern: hashcons.then(HashMap::default),
        }
    }

    pub fn add(&mut self, n: Node) -> NodeId {
        if let Some(m) = &self.intern {
            if let Some(&id) = m.get(&n) {
                return id;
            }
        }
        let children = n.children();
        // Copied only when hash-consing keeps it as a key too.
        let id = match &mut self.intern {
            Some(m) => {
                let id = self.g.add_node(n.clone());
                m.insert(n, id);
                id
            }
            None => self.g.add_node(n),
        };
        for (e, c) in children {
            debug_assert!(c < id, "children are added before parents");
            self.g.add_edge(id, c, e);
        }
        id
    }

    pub fn get(&self, n: NodeId) -> &Node {
        &self.g[n]
    }

    pub fn finish(self, roots: Roots) -> Dag {
        Dag { g: self.g, roots }
    }
}

/// A set of usable backends, and whether it is balanced by Maglev. Its
/// Maglev table is computed on first use ([`BackendSet::maglev_table`]):
/// compiling does not need it (the eBPF back end fills its own tables; the
/// iptables back end has no Maglev), only the graph evaluator does.
/// Frontends with the same backends and balancing share one set.
#[derive(Debug, Clone, Serialize)]
pub struct BackendSet {
    pub backends: Vec<Backend>,
    /// Balanced by Maglev.
    pub maglev: bool,
    #[serde(skip)]
    table: std::sync::OnceLock<Vec<u32>>,
}

impl PartialEq for BackendSet {
    fn eq(&self, o: &BackendSet) -> bool {
        self.backends == o.backends && self.maglev == o.maglev
    }
}

impl Eq for BackendSet {}

impl BackendSet {
    pub fn new(backends: Vec<Backend>, maglev: bool) -> BackendSet {
        BackendSet {
            backends,
            maglev,
            table: std::sync::OnceLock::new(),
        }
    }

    /// Maglev slot → index into `backends` (empty for random balancing or
    /// when no backend has a weight), computed once.
    pub fn maglev_table(&self) -> &[u32] {
        if !self.maglev {
            return &[];
        }
        self.table
            .get_or_init(|| maglev::table(&self.backends, maglev::TABLE_SIZE))
    }

    /// `maglev_table().len()` without computing the table.
    pub fn maglev_slots(&self) -> usize {
        if self.maglev && self.backends.iter().any(|b| b.weight > 0) {
            maglev::TABLE_SIZE as usize
        } else {
            0
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrontendEntry {
    pub frontend: Frontend,
    pub service: usize,
    /// Index into [`ServiceTable::backend_sets`].
    pub backends: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceInfo {
    pub name: String,
    pub balance: Balance,
    pub affinity: Option<u32>,
    /// A named target port: backends are resolved per frontend protocol
    /// ([`crate::contract::BackendGroup`]).
    pub per_protocol: bool,
}

/// The service stage: frontend (addr, port, proto) → service and backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ServiceTable {
    pub services: Vec<ServiceInfo>,
    /// Sorted by frontend.
    pub frontends: Vec<FrontendEntry>,
    pub backend_sets: Vec<BackendSet>,
}

impl ServiceTable {
    pub fn build(model: &Model) -> ServiceTable {
        let index = crate::endpoint_index::EndpointIndex::new(&model.endpoints);
        ServiceTable::build_indexed(model, &index)
    }

    /// [`ServiceTable::build`] with `model.endpoints`' label index made
    /// by the caller (the lowering shares one with the classes).
    pub fn build_indexed(
        model: &Model,
        index: &crate::endpoint_index::EndpointIndex<'_>,
    ) -> ServiceTable {
        let mut t = ServiceTable::default();
        let mut sets: BTreeMap<(Vec<Backend>, bool), usize> = BTreeMap::new();
        for (i, s) in model.services.iter().enumerate() {
            t.services.push(ServiceInfo {
                name: s.name.clone(),
                balance: s.balance,
                affinity: s.affinity,
                per_protocol: matches!(
                    s.backends,
                    crate::model::BackendSource::Select {
                        port: crate::model::TargetPort::Named(_),
                        ..
                    }
                ),
            });
            for fe in &s.frontends {
                let backends =
                    crate::interp::backends_of_indexed(s, fe, &model.endpoints, Some(index));
                let maglev = s.balance == Balance::Maglev;
                let next = sets.len();
                let idx = *sets.entry((backends.clone(), maglev)).or_insert_with(|| {
                    t.backend_sets.push(BackendSet::new(backends, maglev));
                    next
                });
                t.frontends.push(FrontendEntry {
                    frontend: *fe,
                    service: i,
                    backends: idx,
                });
            }
        }
        t.frontends.sort_by_key(|f| f.frontend);
        t
    }

    pub fn lookup(
        &self,
        addr: std::net::IpAddr,
        port: u16,
        proto: Proto,
    ) -> Option<&FrontendEntry> {
        let key = Frontend { addr, port, proto };
        self.frontends
            .binary_search_by(|f| f.frontend.cmp(&key))
            .ok()
            .map(|i| &self.frontends[i])
    }
}

/// A compiled decision graph with everything back ends need beside it.
#[derive(Debug, Clone)]
pub struct Graph {
    pub dag: Dag,
    pub classes: Arc<Classes>,
    pub provenance: Arc<ProvenanceTable>,
    pub services: Arc<ServiceTable>,
    /// `steer_actions[steer][index]`.
    pub steer_actions: Arc<Vec<Vec<SteerAction>>>,
}

impl Graph {
    pub fn node(&self, n: NodeId) -> &Node {
        &self.dag.g[n]
    }

    /// The same graph with another node set (after a pass).
    pub fn with_dag(&self, dag: Dag) -> Graph {
        Graph {
            dag,
            classes: self.classes.clone(),
            provenance: self.provenance.clone(),
            services: self.services.clone(),
            steer_actions: self.steer_actions.clone(),
        }
    }
}
