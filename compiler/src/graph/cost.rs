//! The cost model and the capacity report.
//!
//! Per packet, a back end walks one path from each entry it runs. Costs
//! are counted in **test units** (one compare-and-branch):
//!
//! | node | eBPF | iptables/ipset | cost |
//! |---|---|---|---|
//! | `Test` on proto/port/ICMP | 2–3 instructions (load field, jump) | one rule with a match | 1 |
//! | `Test` on an atom | bit test in the class row loaded once per packet | one `-m set` match | 1 |
//! | `Table` | one map lookup (hash / array / LPM, ~20–40 ns) | one ipset lookup or verdict map | [`TABLE_COST`] |
//! | leaf | counter increment + return | jump to a counter chain | 0 |
//!
//! Plus per packet, outside the graph: two class-map lookups (eBPF: host
//! hash, then an LPM trie of the CIDRs on a miss; iptables: `hash:net`
//! sets) and one service-table lookup. What back ends must size:
//! every table's entries (map `max_entries`, ipset `maxelem`), the class
//! map, the class-row array (classes × ⌈atoms/64⌉ words), the frontend
//! map, backend and Maglev maps. Depth bounds the eBPF verifier's path
//! length; node count bounds program size (and where to split into tail
//! calls).

use super::ir::{Graph, Node, NodeId, TableKey};
use serde::Serialize;
// FxHash: these maps are hot and keyed by ids, nodes and short strings;
// nothing iterates them into output.
use rustc_hash::FxHashMap as HashMap;

/// What one table lookup costs, in tests.
pub const TABLE_COST: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableStat {
    /// Dump number of the node (`nN` in the text dump).
    pub node: usize,
    pub key: TableKey,
    pub entries: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryStat {
    pub entry: &'static str,
    /// Most internal nodes on a path.
    pub max_depth: u32,
    /// Most test units on a path.
    pub max_cost: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capacity {
    pub nodes: usize,
    pub tests: usize,
    pub tables: usize,
    pub leaves: usize,
    pub entries: Vec<EntryStat>,
    pub table_entries_total: usize,
    pub largest_table: usize,
    pub table_stats: Vec<TableStat>,
    pub atoms: usize,
    pub classes: usize,
    pub class_map_entries: usize,
    /// Words of the class → atom-row array (64-bit words).
    pub class_row_words: usize,
    pub provenance_ids: usize,
    pub frontends: usize,
    pub backends: usize,
    pub maglev_slots: usize,
}

/// Longest path (depth, cost) from each node.
fn longest(g: &Graph) -> HashMap<NodeId, (u32, u32)> {
    let mut m: HashMap<NodeId, (u32, u32)> = HashMap::default();
    for n in g.dag.reachable() {
        let node = g.node(n);
        let own = match node {
            Node::Test { .. } => (1, 1),
            Node::Table { .. } => (1, TABLE_COST),
            _ => (0, 0),
        };
        let (d, c) = node
            .children()
            .iter()
            .map(|(_, k)| m[k])
            .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
        m.insert(n, (own.0 + d, own.1 + c));
    }
    m
}

pub fn capacity(g: &Graph) -> Capacity {
    let (order, num) = g.dag.numbering();
    let mut tests = 0;
    let mut leaves = 0;
    let mut table_stats = Vec::new();
    for &n in &order {
        match g.node(n) {
            Node::Test { .. } => tests += 1,
            Node::Table { key, entries, .. } => table_stats.push(TableStat {
                node: num[&n],
                key: *key,
                entries: entries.len(),
            }),
            _ => leaves += 1,
        }
    }
    let lp = longest(g);
    let entries = g
        .dag
        .roots
        .all()
        .iter()
        .map(|&(entry, r)| EntryStat {
            entry,
            max_depth: lp[&r].0,
            max_cost: lp[&r].1,
        })
        .collect();
    let words = g.classes.atoms.len().div_ceil(64);
    Capacity {
        nodes: order.len(),
        tests,
        tables: table_stats.len(),
        leaves,
        entries,
        table_entries_total: table_stats.iter().map(|t| t.entries).sum(),
        largest_table: table_stats.iter().map(|t| t.entries).max().unwrap_or(0),
        table_stats,
        atoms: g.classes.atoms.len(),
        classes: g.classes.len(),
        class_map_entries: g.classes.entries.len(),
        class_row_words: g.classes.len() * words,
        provenance_ids: g.provenance.len(),
        frontends: g.services.frontends.len(),
        backends: g
            .services
            .backend_sets
            .iter()
            .map(|s| s.backends.len())
            .sum(),
        maglev_slots: g
            .services
            .backend_sets
            .iter()
            .map(|s| s.maglev_slots())
            .sum(),
    }
}

impl Capacity {
    /// The human capacity report (`weir compile --report`).
    pub fn report(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "decision graph:");
        let _ = writeln!(
            s,
            "  nodes {} (tests {}, tables {}, leaves {})",
            self.nodes, self.tests, self.tables, self.leaves
        );
        for e in &self.entries {
            let _ = writeln!(
                s,
                "  {:<8} max depth {:>3}, max cost {:>3} test units",
                e.entry, e.max_depth, e.max_cost
            );
        }
        let _ = writeln!(
            s,
            "  table entries {} (largest table {})",
            self.table_entries_total, self.largest_table
        );
        let _ = writeln!(
            s,
            "  atoms {}, classes {}, class-map entries {}, class rows {} words",
            self.atoms, self.classes, self.class_map_entries, self.class_row_words
        );
        let _ = writeln!(
            s,
            "  provenance ids {}, frontends {}, backends {}, maglev slots {}",
            self.provenance_ids, self.frontends, self.backends, self.maglev_slots
        );
        s
    }
}
