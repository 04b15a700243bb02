//! The capacity report of `weir compile --report`: the decision graph's
//! numbers and, per back end, what it fills (eBPF maps, programs and tail
//! calls; iptables chains, rules and sets). One typed value renders both
//! formats: JSON with plain numbers (docs/json.md,
//! docs/schemas/compile-report.json) and the human text.

use serde::Serialize;
use std::collections::BTreeMap;
use weir_compiler::bundle::{self, Target};
use weir_compiler::contract::{self, collector::Collector, iptables::IptablesSection};
use weir_compiler::driver::Analyzed;
use weir_compiler::ebpf::codegen::EbpfManifest;
use weir_compiler::ebpf::state_tables::StateTables;
use weir_compiler::graph::cost::{capacity, Capacity};

#[derive(Debug, Serialize)]
pub struct Report {
    pub graph: Option<Capacity>,
    pub backends: Backends,
}

/// Keys only for the back ends compiled.
#[derive(Debug, Default, Serialize)]
pub struct Backends {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ebpf: Option<Ebpf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables: Option<Iptables>,
}

#[derive(Debug, Serialize)]
pub struct Ebpf {
    pub maps: Vec<Map>,
    pub programs: Vec<Program>,
    /// The most tail calls on one packet's path.
    pub max_tail_calls: u64,
    /// The per-flow tables' sizes (`--ct-entries`, `--lb-entries`).
    pub state_tables: StateTables,
    /// The conntrack collector (hash tables only), as the manifest
    /// declares it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collector: Option<Collector>,
}

#[derive(Debug, Serialize)]
pub struct Map {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub filled: u64,
    pub max_entries: u64,
}

#[derive(Debug, Serialize)]
pub struct Program {
    pub name: String,
    pub insns: u64,
}

#[derive(Debug, Serialize)]
pub struct Iptables {
    /// Per address family.
    pub families: Vec<Family>,
    pub sets: u64,
}

#[derive(Debug, Serialize)]
pub struct Family {
    pub family: String,
    pub chains: u64,
    pub rules: u64,
    pub depth: u64,
}

/// The report of a compiled program from its manifest (the back ends'
/// sections, read through the typed contract) and its graph.
pub fn build(analyzed: &Analyzed, targets: &[Target], files: &BTreeMap<String, Vec<u8>>) -> Report {
    let manifest = files
        .get(bundle::MANIFEST)
        .and_then(|b| contract::parse(b).ok());
    let mut backends = Backends::default();
    if let Some(m) = &manifest {
        if targets.contains(&Target::Ebpf) {
            backends.ebpf = m.backends.ebpf.as_ref().map(|e| ebpf(&e.program));
        }
        if targets.contains(&Target::Iptables) {
            backends.iptables = m.backends.iptables.as_ref().map(iptables);
        }
    }
    Report {
        graph: analyzed.compiled.as_ref().map(|c| capacity(&c.graph)),
        backends,
    }
}

fn ebpf(s: &EbpfManifest) -> Ebpf {
    let mut maps: Vec<Map> = s
        .maps
        .iter()
        .map(|m| Map {
            name: m.name.clone(),
            kind: m.map_type.clone(),
            filled: m.filled,
            max_entries: u64::from(m.max_entries),
        })
        .collect();
    maps.sort_by(|a, b| a.name.cmp(&b.name));
    Ebpf {
        maps,
        programs: s
            .programs
            .iter()
            .map(|p| Program {
                name: p.name.clone(),
                insns: p.insns as u64,
            })
            .collect(),
        max_tail_calls: s.max_tail_calls as u64,
        state_tables: s.state_tables,
        collector: s.collector.clone(),
    }
}

fn iptables(s: &IptablesSection) -> Iptables {
    Iptables {
        families: s
            .counts
            .iter()
            .map(|c| Family {
                family: c.family.name().to_string(),
                chains: c.chains as u64,
                rules: c.rules as u64,
                depth: c.depth as u64,
            })
            .collect(),
        sets: s.sets.len() as u64,
    }
}

impl Report {
    /// The human form: the graph's report, then one block per back end.
    pub fn human(&self) -> String {
        let mut out = self
            .graph
            .as_ref()
            .map(Capacity::report)
            .unwrap_or_default();
        if let Some(e) = &self.backends.ebpf {
            out.push_str("ebpf:\n");
            for m in &e.maps {
                out.push_str(&format!(
                    "  map {}: {} filled / {} max\n",
                    m.name, m.filled, m.max_entries
                ));
            }
            for p in &e.programs {
                out.push_str(&format!("  program {}: {} insns\n", p.name, p.insns));
            }
            out.push_str(&format!(
                "  tail calls per packet (most): {}\n",
                e.max_tail_calls
            ));
            out.push_str(&format!(
                "  state tables ({}): conntrack {} entries per family (weir_ct4, weir_ct), translation {} entries\n",
                match e.state_tables.kind {
                    weir_compiler::ebpf::state_tables::CtTable::Lru =>
                        "LRU; full: least recently used evicted",
                    weir_compiler::ebpf::state_tables::CtTable::Hash =>
                        "hash; full: new flows denied, counted table-full",
                },
                e.state_tables.conntrack,
                e.state_tables.translation
            ));
            if let Some(c) = &e.collector {
                out.push_str(&format!(
                    "  conntrack collector: {} (section {}, run at apply): {} insns, state in {}\n",
                    c.program, c.section, c.insns, c.map
                ));
                for cb in &c.callbacks {
                    out.push_str(&format!(
                        "    callback {} ({}): {} insns\n",
                        cb.name, cb.role, cb.insns
                    ));
                }
            }
        }
        if let Some(i) = &self.backends.iptables {
            out.push_str("iptables:\n");
            for f in &i.families {
                out.push_str(&format!(
                    "  {}: {} chains, {} rules, chain depth {}\n",
                    f.family, f.chains, f.rules, f.depth
                ));
            }
            out.push_str(&format!("  ipsets: {}\n", i.sets));
        }
        out
    }
}
