//! Bundles for the runtime's tests: hand-written rule files sealed with
//! a manifest in the bundle format (`weir_compiler::contract`) so the
//! runtime reads them as it reads a compiled bundle (hashes, hooks,
//! sets) — [`seal`]; or a model compiled by the iptables back end —
//! [`write_iptables`]; or one IPv4 filter ruleset hooked at FORWARD with
//! one set — [`filter_bundle`]. Included by the tests that use it (not
//! every test uses all).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use weir_compiler::bundle::{bundle, BundleInput, Target};
use weir_compiler::contract::{self, iptables as ipt};
use weir_compiler::graph::Graph;
use weir_compiler::model::Model;
use weir_runtime::Bundle;

/// The iptables bundle of `model` (graph `g`; `sources` as the manifest
/// records them), written to `dir` and read back as the runtime reads it.
pub fn write_iptables(
    model: &Model,
    g: &Graph,
    sources: &[(String, String)],
    dir: &Path,
) -> Bundle {
    write_iptables_with(model, g, sources, dir, &Default::default())
}

/// [`write_iptables`] compiled with `opts`.
pub fn write_iptables_with(
    model: &Model,
    g: &Graph,
    sources: &[(String, String)],
    dir: &Path,
    opts: &weir_compiler::iptables::Options,
) -> Bundle {
    let art =
        weir_compiler::iptables::generate_with(g, model, opts).expect("iptables can express it");
    let files = bundle(&BundleInput {
        model,
        graph: g,
        sources,
        targets: &[Target::Iptables],
        locate: &|_| None,
        backends: BTreeMap::from([(Target::Iptables, art)]),
    });
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    Bundle::read(dir).unwrap()
}

/// Writes the manifest of a hand-written bundle in `dir` (its rule files
/// written already): the bundle format (`weir_compiler::contract`) with
/// `hooks` (table, chain, target, family), class sets `sets` (name,
/// family; class 1 of two classes), and the SHA-256 of every file.
pub fn seal(dir: &Path, hooks: &[(&str, &str, &str, &str)], sets: &[(&str, ipt::Family)]) {
    let mut artifacts = std::collections::BTreeMap::new();
    for name in ["iptables.rules", "ip6tables.rules", "ipset.rules"] {
        let bytes = std::fs::read(dir.join(name)).unwrap_or_default();
        std::fs::write(dir.join(name), &bytes).unwrap();
        artifacts.insert(name.to_string(), contract::sha256_hex(&bytes));
    }
    let sets: Vec<ipt::SetEntry> = sets
        .iter()
        .map(|&(name, family)| ipt::SetEntry {
            atom: None,
            class: Some(1),
            classes: vec![1],
            family,
            kind: ipt::SetKind::Class,
            name: name.into(),
            set_type: ipt::SetType::HashNet,
        })
        .collect();
    let m = contract::Manifest {
        artifacts,
        backends: contract::Backends {
            ebpf: None,
            iptables: Some(ipt::IptablesSection {
                classes: 2,
                counts: Vec::new(),
                endpoint_update: String::new(),
                ipv6_class0: false,
                events: None,
                hooks: hooks
                    .iter()
                    .map(|&(table, chain, target, family)| ipt::HookEntry {
                        chain: chain.into(),
                        family: serde_json::from_value(serde_json::json!(family)).unwrap(),
                        table: table.into(),
                        target: target.into(),
                    })
                    .collect(),
                log: ipt::Log {
                    group: None,
                    target: ipt::LogTarget::Log,
                },
                self_mark: weir_compiler::iptables::self_set::DEFAULT_MASK,
                sets,
            }),
        },
        classes: contract::Classes {
            atoms: vec![contract::AtomEntry {
                exclude: None,
                include: None,
                kind: contract::AtomKind::Selector,
                text: Some("all".into()),
                value: weir_compiler::graph::classes::Atom::Sel(weir_compiler::model::Sel::All),
            }],
            endpoint_atom: 0,
            map: Vec::new(),
            rows: vec![vec![0], vec![0]],
            spare_classes: 0,
        },
        endpoints: Vec::new(),
        format_version: contract::FORMAT_VERSION,
        graph: serde_json::Value::Null,
        local_proxies: Vec::new(),
        provenance: Vec::new(),
        services: Vec::new(),
        source_hash: "test".into(),
        sources: Vec::new(),
        targets: vec![contract::Target::Iptables],
    };
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
}

/// Compiles `src` (as `policy.weir`, beside `inventory.json` holding
/// `inventory` when given) for `target` with `opts`, as `weir compile`
/// does (parse, check, graph), and writes the bundle to `dir` (anything
/// there before is removed). Returns the model and its graph.
pub fn write_source(
    dir: &Path,
    src: &str,
    inventory: Option<&str>,
    target: Target,
    opts: &weir_compiler::backends::Options,
) -> (Model, Graph) {
    let path = std::path::PathBuf::from("policy.weir");
    let mut loader = weir_compiler::source::MemoryLoader::new().with(&path, src);
    if let Some(text) = inventory {
        loader = loader.with("inventory.json", text);
    }
    let a = weir_compiler::driver::analyze(std::slice::from_ref(&path), &loader, None);
    assert!(!a.checked.has_errors(), "{:?}", a.checked.diagnostics);
    let model = a.checked.model;
    let g = a
        .compiled
        .expect("a program without errors has a graph")
        .graph;
    let art = weir_compiler::backends::generate_with(target, &model, &g, opts).unwrap();
    let files = bundle(&BundleInput {
        model: &model,
        graph: &g,
        sources: &[("policy.weir".to_string(), src.to_string())],
        targets: &[target],
        locate: &|_| None,
        backends: BTreeMap::from([(target, art)]),
    });
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    (model, g)
}

/// A bundle of the IPv4 filter `rules` (an `iptables-restore` text whose
/// `WEIR-FWD` is the FORWARD hook's target) and one set `weir-a` holding
/// `cidr`; no IPv6 rules.
pub fn filter_bundle(dir: &Path, rules: &str, cidr: &str) -> Bundle {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("ipset.rules"),
        format!("create weir-a hash:net family inet hashsize 64 maxelem 1024\nadd weir-a {cidr}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("iptables.rules"), rules).unwrap();
    std::fs::write(dir.join("ip6tables.rules"), "").unwrap();
    seal(
        dir,
        &[("filter", "FORWARD", "WEIR-FWD", "ipv4")],
        &[("weir-a", ipt::Family::Ipv4)],
    );
    Bundle::read(dir).unwrap()
}

/// An eBPF instance on `topo`'s node interface, pinned under a bpffs
/// directory of its own (`/sys/fs/bpf/weir-test-TAG-PID`) with its
/// state in `work/state`: what the netns apply tests load into.
pub fn node_instance(
    topo: &weir_runtime::netns::Topology,
    tag: &str,
    work: &Path,
) -> weir_runtime::ebpf::Instance {
    let mut inst = weir_runtime::ebpf::Instance::new(
        weir_runtime::netns::NODE_CLIENT_IF,
        Some(topo.node.name()),
    );
    inst.pin_root = format!("/sys/fs/bpf/weir-test-{tag}-{}", std::process::id()).into();
    inst.state_root = work.join("state");
    inst
}
