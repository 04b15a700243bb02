//! `weir endpoints` on the eBPF back end with a namespaced inventory (as
//! `weir import k8s` and `weir agent` write it: `"namespaces"` after the
//! endpoint list) keeps the text fast path: a pod added in a namespace
//! parses that one object, a namespace relabel parses none and re-places
//! exactly that namespace's endpoints — in the kernel's class map, read
//! back with `bpftool` — and a relabel into a combination no compiled
//! class has is refused ("needs a recompile"), nothing written.
//!
//! Needs root, `ip` and `bpftool`; skipped without them unless `CI` is set
//! (then it fails).

mod bundle_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use weir_compiler::bundle::Target;
use weir_compiler::ebpf::layout::map::HOST4;
use weir_runtime::endpoints::{self, EndpointsError};
use weir_runtime::netns::{Topology, NODE_CLIENT_IF};

const SRC: &str = r#"
inventory "inventory.json"

policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from namespace(team == "a") && app == "web"
    allow tcp 6379 from namespace(env == "prod")
    deny from any
  }
}
"#;

/// db and web-a-1 in namespace a, the `b_pods` web pods in namespace b
/// (labelled `b`); pretty JSON, the namespaces after the list.
fn inventory(b: Value, b_pods: usize) -> String {
    let mut eps = vec![
        json!({"name": "db", "namespace": "a", "labels": {"app": "db"}, "addrs": ["10.2.0.20"]}),
        json!({"name": "web-a-1", "namespace": "a", "labels": {"app": "web"}, "addrs": ["10.1.0.1"]}),
    ];
    for i in 1..=b_pods {
        eps.push(json!({"name": format!("web-b-{i}"), "namespace": "b",
            "labels": {"app": "web"}, "addrs": [format!("10.1.1.{i}")]}));
    }
    let inv = json!({"endpoints": eps, "namespaces": {"a": {"team": "a"}, "b": b}});
    serde_json::to_string_pretty(&inv).unwrap() + "\n"
}

fn write_bundle(dir: &Path) {
    let inv = inventory(json!({"team": "b"}), 2);
    bundle_common::write_source(dir, SRC, Some(&inv), Target::Ebpf, &Default::default());
}

/// The class-map value bpftool reads for an IPv4 address.
fn class_of(map: &Path, addr: &str) -> Option<Vec<String>> {
    let mut cmd = Command::new("bpftool");
    cmd.args(["-j", "map", "lookup", "pinned"])
        .arg(map)
        .arg("key");
    cmd.args(addr.split('.'));
    let o = cmd.output().unwrap();
    if !o.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    v["value"]
        .as_array()
        .map(|a| a.iter().map(|b| b.as_str().unwrap().to_string()).collect())
}

#[test]
fn ebpf_namespaced_inventories_take_the_fast_path() {
    if !weir_runtime::kernel_test::may_run(
        "ebpf_namespaced_inventories_take_the_fast_path",
        &["ip", "bpftool"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("ebpf-namespaces").unwrap();
    let dir = work.join("bundle");
    write_bundle(&dir);
    let topo = Topology::new().expect("netns topology");
    let pid = std::process::id();
    let mut inst = weir_runtime::ebpf::Instance::new(NODE_CLIENT_IF, Some(topo.node.name()));
    inst.pin_root = PathBuf::from(format!("/sys/fs/bpf/weir-test-namespaces-{pid}"));
    inst.state_root = work.join("state");
    let g = weir_runtime::ebpf::apply(&dir, &inst).unwrap().generation;
    let host = inst.pin_dir().join(format!("gen-{g}")).join(HOST4);
    let update = |text: &str| endpoints::ebpf_text(&inst, &dir, text);

    // The compiled inventory: nothing changes (the record built at apply
    // holds the endpoints, not this text: every object is read once).
    let r = update(&inventory(json!({"team": "b"}), 2)).unwrap();
    assert!(r.changes.is_empty(), "{:?}", r.changes);

    // A pod added in namespace b: one object parsed, one address placed.
    let r = update(&inventory(json!({"team": "b"}), 3)).unwrap();
    assert_eq!(r.parsed, 1, "only the new object is parsed");
    assert_eq!(r.changes.len(), 1, "{:?}", r.changes);
    assert_eq!(r.changes[0].endpoint, "web-b-3");
    assert_eq!(class_of(&host, "10.1.1.3"), class_of(&host, "10.1.1.1"));

    // A label no selector reads: no object parsed, no class changes.
    let r = update(&inventory(json!({"team": "b", "owner": "x"}), 3)).unwrap();
    assert_eq!((r.parsed, r.changes.len()), (0, 0), "{:?}", r.changes);

    // Namespace b joins team a: its three pods, and only they, take
    // web-a-1's class, without a recompile.
    let a_class = class_of(&host, "10.1.0.1");
    assert_ne!(class_of(&host, "10.1.1.1"), a_class);
    let r = update(&inventory(json!({"team": "a", "owner": "x"}), 3)).unwrap();
    assert_eq!(r.parsed, 0);
    let mut moved: Vec<&str> = r.changes.iter().map(|c| c.endpoint.as_str()).collect();
    moved.sort();
    assert_eq!(moved, ["web-b-1", "web-b-2", "web-b-3"]);
    for i in 1..=3 {
        assert_eq!(class_of(&host, &format!("10.1.1.{i}")), a_class);
    }
    assert_eq!(r.generation, g, "no new generation");

    // A combination no compiled class has: refused, nothing written.
    let before: Vec<_> = (1..=3)
        .map(|i| class_of(&host, &format!("10.1.1.{i}")))
        .collect();
    match update(&inventory(json!({"team": "a", "env": "prod"}), 3)) {
        Err(EndpointsError::Refused(why)) => {
            assert!(
                why.iter().all(|w| w.contains("needs a recompile")),
                "{why:?}"
            );
            assert_eq!(why.len(), 3, "{why:?}");
        }
        other => panic!("a new class must be refused: {other:?}"),
    }
    let after: Vec<_> = (1..=3)
        .map(|i| class_of(&host, &format!("10.1.1.{i}")))
        .collect();
    assert_eq!(before, after);

    weir_runtime::ebpf::detach(&inst).unwrap();
    let _ = std::fs::remove_dir_all(&work);
}
