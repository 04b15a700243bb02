//! `self` under endpoint churn: an endpoint added under an `allow from
//! self` policy is an entry write (eBPF `weir_self4`, iptables id set),
//! not a recompile, and after it the new endpoint reaches itself while
//! no other endpoint's `self` matches it.
//!
//! Real TCP through the client — node — server netns topology. A packet
//! from an endpoint to itself crosses the node when the endpoint has one
//! address on each side (`a1` on the client side, `a2` on the server
//! side), so every endpoint here has two.
//!
//! Before `self` was decided in the data path, each endpoint under a
//! `self` policy had an identity class of its own, and adding one was
//! refused ("needs a recompile"): the `add` step below fails there.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod bundle_common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_compiler::bundle::Target;
use weir_compiler::churn::EndpointRec;
use weir_runtime::endpoints;
use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::{Topology, NODE_CLIENT_IF};
use weir_runtime::Bundle;

/// Every endpoint of namespace `x` admits only itself (what a Kubernetes
/// import writes for "a pod cannot block access to itself" under a
/// default-deny NetworkPolicy).
const SRC: &str = r#"
inventory "inventory.json"

policy ns-x {
  applies to ns == "x"
  ingress {
    allow from self
    deny from any
  }
}
"#;

const INVENTORY: &str = r#"{ "endpoints": [
  { "name": "a", "labels": { "ns": "x" }, "addrs": ["10.1.0.31", "10.2.0.31"] },
  { "name": "b", "labels": { "ns": "x" }, "addrs": ["10.1.0.32", "10.2.0.32"] }
] }"#;

const T: Duration = Duration::from_millis(500);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ep(name: &str, addrs: &[&str]) -> EndpointRec {
    EndpointRec {
        name: name.into(),
        labels: [("ns".to_string(), "x".to_string())].into(),
        ready: true,
        addrs: addrs.iter().map(|a| ip(a)).collect(),
    }
}

fn base() -> Vec<EndpointRec> {
    vec![
        ep("a", &["10.1.0.31", "10.2.0.31"]),
        ep("b", &["10.1.0.32", "10.2.0.32"]),
    ]
}

/// Compiles [`SRC`] for `target` into `dir`; returns the class count.
fn write_bundle(dir: &Path, target: Target) -> usize {
    write_bundle_with(dir, target, &Default::default())
}

/// [`write_bundle`] with back-end options.
fn write_bundle_with(dir: &Path, target: Target, opts: &weir_compiler::backends::Options) -> usize {
    bundle_common::write_source(dir, SRC, Some(INVENTORY), target, opts)
        .1
        .classes
        .len()
}

/// The checks, with `update` applying an inventory (the back end's
/// `weir endpoints`) and `kernel` reading the relation back from the
/// kernel with the system's tool (address → its endpoint's value).
fn churn(
    topo: &Topology,
    update: &mut dyn FnMut(&[EndpointRec]) -> Result<endpoints::Report, endpoints::EndpointsError>,
    kernel: &dyn Fn() -> BTreeMap<IpAddr, String>,
) {
    let (a1, a2, b1, b2) = (
        ip("10.1.0.31"),
        ip("10.2.0.31"),
        ip("10.1.0.32"),
        ip("10.2.0.32"),
    );
    let (c1, c2) = (ip("10.1.0.33"), ip("10.2.0.33"));
    assert!(topo.tcp_connect(a1, a2, 8080, T), "a → a: self");
    assert!(topo.tcp_connect(b1, b2, 8080, T), "b → b: self");
    assert!(!topo.tcp_connect(b1, a2, 8080, T), "b → a: not a's self");
    assert!(!topo.tcp_connect(a1, b2, 8080, T), "a → b: not b's self");

    // A pod added to the namespace: an update, not a recompile.
    let mut inv = base();
    inv.push(ep("c", &["10.1.0.33", "10.2.0.33"]));
    let r = update(&inv).unwrap_or_else(|e| panic!("adding c under `self`: {e}"));
    assert_eq!(r.changes.len(), 2, "{r:?}");
    let k = kernel();
    assert!(
        k.contains_key(&c1) && k[&c1] == k[&c2],
        "c's two addresses: {k:?}"
    );
    assert!(
        k[&c1] != k[&a1] && k[&c1] != k[&b1],
        "c is neither a nor b: {k:?}"
    );
    assert!(topo.tcp_connect(c1, c2, 8080, T), "c → c: self");
    assert!(
        !topo.tcp_connect(a1, c2, 8080, T),
        "a → c: a's self does not leak"
    );
    assert!(
        !topo.tcp_connect(c1, a2, 8080, T),
        "c → a: c's self does not leak"
    );
    assert!(topo.tcp_connect(a1, a2, 8080, T), "a → a still");

    // c's server-side address moves to b: it is b's own now, not c's.
    let mut moved = base();
    moved[1] = ep("b", &["10.1.0.32", "10.2.0.32", "10.2.0.33"]);
    moved.push(ep("c", &["10.1.0.33"]));
    update(&moved).unwrap();
    assert!(topo.tcp_connect(b1, c2, 8080, T), "b → its new address");
    assert!(
        !topo.tcp_connect(c1, c2, 8080, T),
        "c → b's address: not self"
    );

    // c goes: its address is no endpoint's, b's moved one stays b's.
    let mut gone = base();
    gone[1] = ep("b", &["10.1.0.32", "10.2.0.32", "10.2.0.33"]);
    update(&gone).unwrap();
    let k = kernel();
    assert!(!k.contains_key(&c1), "c's address gone: {k:?}");
    assert_eq!(k.get(&c2), k.get(&b1), "the moved address is b's: {k:?}");
    assert!(!topo.tcp_connect(c1, c2, 8080, T), "c removed: no self");
    assert!(topo.tcp_connect(b1, b2, 8080, T), "b → b still");
    // And a new pod takes c's old address: its own self only.
    let mut reused = gone.clone();
    reused.push(ep("d", &["10.1.0.33", "10.2.0.34"]));
    update(&reused).unwrap();
    assert!(topo.tcp_connect(c1, ip("10.2.0.34"), 8080, T), "d → d");
    assert!(!topo.tcp_connect(c1, b2, 8080, T), "d → b: not d's self");
}

#[test]
fn iptables_self_churn_is_an_update() {
    if !weir_runtime::kernel_test::may_run(
        "iptables_self_churn_is_an_update",
        &["ip", "iptables-restore", "ip6tables-restore", "ipset"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("endpoints-self-ipt").unwrap();
    let dir = work.join("bundle");
    write_bundle(&dir, Target::Iptables);
    let topo = Topology::new().expect("netns topology");
    let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
    let b = Bundle::read(&dir).unwrap();
    let g = rt.apply(&b).unwrap().generation;
    // `ipset save weir<g>-self`: `add SET ADDR skbmark ID/0x0`.
    let kernel = || {
        let set = format!("weir{g}-self");
        let out = topo.node.exec("ipset", &["save", &set]).unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() == 5 && w[0] == "add").then(|| (ip(w[2]), w[4].to_string()))
            })
            .collect()
    };
    churn(&topo, &mut |inv| endpoints::iptables(&rt, &b, inv), &kernel);
    assert_eq!(rt.read_state().unwrap().unwrap().generation, g);
    assert_self_marks_are_read_back(&topo, &rt, g);
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(&work);
}

/// `weir status` compares the `self` set's marks, not only its
/// addresses: one member's id changed behind weir's back (`ipset -exist
/// add` rewrites the `skbmark` of an existing member) is a difference,
/// and putting it back makes the generation in force again.
fn assert_self_marks_are_read_back(topo: &Topology, rt: &Iptables, g: u32) {
    let set = format!("weir{g}-self");
    assert!(rt.status().unwrap().in_force, "in force before the change");
    let saved = topo.node.exec("ipset", &["save", &set]).unwrap();
    let saved = String::from_utf8_lossy(&saved.stdout).to_string();
    let line = saved
        .lines()
        .find(|l| l.starts_with("add ") && l.contains(" skbmark "))
        .expect("a member with its mark")
        .to_string();
    let w: Vec<&str> = line.split_whitespace().collect();
    let (value, mask) = w[4].split_once('/').unwrap_or((w[4], "0xffffffff"));
    let other = u32::from_str_radix(value.trim_start_matches("0x"), 16).unwrap() ^ 0x1000_0000;
    let changed = format!("{other:#x}/{mask}");
    let set_mark = |mark: &str| {
        let out = topo
            .node
            .exec("ipset", &["-exist", "add", &set, w[2], "skbmark", mark])
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set_mark(&changed);
    let st = rt.status().unwrap();
    assert!(
        !st.in_force && st.sets_difference.is_some(),
        "a changed mark must be a difference: {st:?}"
    );
    set_mark(w[4]);
    assert!(rt.status().unwrap().in_force, "in force again");
}

/// A non-default mask (`weir compile --iptables-self-mark 0x0fff0000`:
/// the SAME bit 0x10000, ids in 0x0ffe0000; kube-proxy's 0x4000 and
/// 0x8000 stay free): the chains use it, and `weir endpoints` encodes the
/// ids it adds with the mask the manifest records. Two endpoints added
/// in one update get ids whose bits differ inside the mask: encoded with
/// the default mask (ids << 12, below 0x10000) both would be 0 there,
/// and each would be the other's `self`.
#[test]
fn iptables_self_churn_with_a_mark_mask() {
    if !weir_runtime::kernel_test::may_run(
        "iptables_self_churn_with_a_mark_mask",
        &["ip", "iptables-restore", "ip6tables-restore", "ipset"],
    ) {
        return;
    }
    const MASK: u32 = 0x0fff_0000;
    const IDS: u32 = 0x0ffe_0000;
    let work = weir_runtime::kernel_test::state_dir("endpoints-self-mask").unwrap();
    let dir = work.join("bundle");
    let mut opts = weir_compiler::backends::Options::default();
    opts.iptables.self_mark = weir_compiler::iptables::self_set::SelfMark::new(MASK).unwrap();
    write_bundle_with(&dir, Target::Iptables, &opts);
    let topo = Topology::new().expect("netns topology");
    let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
    let b = Bundle::read(&dir).unwrap();
    let g = rt.apply(&b).unwrap().generation;
    // The chains as the kernel holds them use the mask.
    let save = topo.node.exec("iptables-save", &["-t", "mangle"]).unwrap();
    let save = String::from_utf8_lossy(&save.stdout).into_owned();
    assert!(save.contains("--set-xmark 0x0/0xfff0000"), "{save}");
    assert!(save.contains("--set-xmark 0x10000/0x10000"), "{save}");
    // Each member's mark value, read back with `ipset save`.
    let kernel = || -> BTreeMap<IpAddr, String> {
        let set = format!("weir{g}-self");
        let out = topo.node.exec("ipset", &["save", &set]).unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() == 5 && w[0] == "add").then(|| (ip(w[2]), w[4].to_string()))
            })
            .collect()
    };
    let in_mask = |k: &BTreeMap<IpAddr, String>| {
        k.values().all(|v| {
            let v = v.split('/').next().unwrap().trim_start_matches("0x");
            let v = u32::from_str_radix(v, 16).unwrap();
            v != 0 && v & !IDS == 0
        })
    };
    assert!(in_mask(&kernel()), "compiled ids: {:?}", kernel());
    churn(&topo, &mut |inv| endpoints::iptables(&rt, &b, inv), &kernel);
    // Two endpoints in one update.
    let (c1, c2, d1, d2) = (
        ip("10.1.0.35"),
        ip("10.2.0.35"),
        ip("10.1.0.36"),
        ip("10.2.0.36"),
    );
    let mut two = base();
    two.push(ep("c", &["10.1.0.35", "10.2.0.35"]));
    two.push(ep("d", &["10.1.0.36", "10.2.0.36"]));
    endpoints::iptables(&rt, &b, &two).unwrap();
    assert!(topo.tcp_connect(c1, c2, 8080, T), "c → c: self");
    assert!(topo.tcp_connect(d1, d2, 8080, T), "d → d: self");
    assert!(!topo.tcp_connect(c1, d2, 8080, T), "c → d: not d's self");
    assert!(!topo.tcp_connect(d1, c2, 8080, T), "d → c: not c's self");
    let k = kernel();
    assert!(in_mask(&k), "ids written by weir endpoints: {k:?}");
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn ebpf_self_churn_is_an_update() {
    if !weir_runtime::kernel_test::may_run("ebpf_self_churn_is_an_update", &["ip", "bpftool"]) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("endpoints-self-ebpf").unwrap();
    let dir = work.join("bundle");
    let classes = write_bundle(&dir, Target::Ebpf);
    // `a` and `b` share one class: no class per endpoint for `self`.
    assert!(classes <= 3, "{classes} classes");
    let topo = Topology::new().expect("netns topology");
    let mut inst = weir_runtime::ebpf::Instance::new(NODE_CLIENT_IF, Some(topo.node.name()));
    inst.pin_root = PathBuf::from(format!(
        "/sys/fs/bpf/weir-test-endpoints-self-{}",
        std::process::id()
    ));
    inst.state_root = work.join("state");
    let g = weir_runtime::ebpf::apply(&dir, &inst).unwrap().generation;
    // `bpftool -j map dump pinned …/weir_self4`: key and value bytes.
    let pinned = inst.pin_dir().join(format!("gen-{g}")).join("weir_self4");
    let kernel = || {
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(&pinned)
            .output()
            .expect("bpftool");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
        let bytes = |x: &serde_json::Value| -> Vec<u8> {
            x.as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
                })
                .collect()
        };
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let k = bytes(&e["key"]);
                let a = IpAddr::from([k[0], k[1], k[2], k[3]]);
                (a, format!("{:?}", bytes(&e["value"])))
            })
            .collect()
    };
    churn(&topo, &mut |inv| endpoints::ebpf(&inst, &dir, inv), &kernel);
    assert_eq!(weir_runtime::ebpf::status(&inst).unwrap().generation, g);
    weir_runtime::ebpf::detach(&inst).unwrap();
    let _ = std::fs::remove_dir_all(&inst.pin_root);
    let _ = std::fs::remove_dir_all(&work);
}
