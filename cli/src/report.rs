//! The capacity report of `weir compile --report`: the decision graph's
//! numbers and, per back end, what it fills (eBPF maps, programs and tail
//! calls; iptables chains, rules and sets). One typed value renders both
//! formats: JSON with plain numbers (docs/json.md,
//! docs/schemas/compile-report.json) and the human text.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use weir_compiler::bundle::{self, Target};
use weir_compiler::driver::Analyzed;
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
/// sections) and its graph.
pub fn build(analyzed: &Analyzed, targets: &[Target], files: &BTreeMap<String, Vec<u8>>) -> Report {
    let manifest: Value = files
        .get(bundle::MANIFEST)
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null);
    let section = |t: Target| manifest.pointer(&format!("/backends/{}", t.name()));
    let mut backends = Backends::default();
    for &t in targets {
        match (t, section(t)) {
            (Target::Ebpf, Some(s)) => backends.ebpf = Some(ebpf(s)),
            (Target::Iptables, Some(s)) => backends.iptables = Some(iptables(s)),
            _ => {}
        }
    }
    Report {
        graph: analyzed.compiled.as_ref().map(|c| capacity(&c.graph)),
        backends,
    }
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn ebpf(s: &Value) -> Ebpf {
    let mut maps: Vec<Map> = list(s, "maps")
        .map(|m| Map {
            name: text(m, "name"),
            kind: text(m, "type"),
            filled: num(m, "filled"),
            max_entries: num(m, "max_entries"),
        })
        .collect();
    maps.sort_by(|a, b| a.name.cmp(&b.name));
    Ebpf {
        maps,
        programs: list(s, "programs")
            .map(|p| Program {
                name: text(p, "name"),
                insns: num(p, "insns"),
            })
            .collect(),
        max_tail_calls: num(s, "max_tail_calls"),
    }
}

fn iptables(s: &Value) -> Iptables {
    Iptables {
        families: list(s, "counts")
            .map(|c| Family {
                family: text(c, "family"),
                chains: num(c, "chains"),
                rules: num(c, "rules"),
                depth: num(c, "depth"),
            })
            .collect(),
        sets: list(s, "sets").count() as u64,
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
