//! iptables: a service's backends changed by `weir endpoints` on an
//! applied generation, in place (issue 19/21: backend churn without a
//! recompile; `weir_runtime::iptables::service_chains`).
//!
//! Real TCP in a client — node — server netns topology, to the service's
//! frontend: after each update new connections reach only the current
//! backends (the server that answers names itself), the generation is
//! the same, the frontend's DNAT targets in `iptables-save` are the
//! current backends, and `Iptables::status` finds the kernel equal to its
//! record. An affinity service keeps each remaining backend in its slot
//! (its chain and `-m recent` list) and puts a new one in a free slot;
//! what cannot be done in place (more backends than affinity chains, no
//! backend left) is reported with the reason, and nothing is written for
//! it.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod bundle_common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use weir_compiler::bundle::Target;
use weir_compiler::churn::EndpointRec;
use weir_runtime::bundle::Family;
use weir_runtime::endpoints;
use weir_runtime::iptables::{Iptables, Options, Variant};
use weir_runtime::netns::Topology;
use weir_runtime::Bundle;

const SRC: &str = r#"
inventory "inventory.json"
policy web-in {
  applies to app == "web"
  ingress { allow tcp 8080 from any }
}
service web {
  frontend 10.96.0.1:80/tcp
  backends select app == "web" port 8080
}
service sticky {
  frontend 10.96.0.2:80/tcp
  backends select app == "sticky" port 8080
  affinity client-ip 600s
}
"#;

const INVENTORY: &str = r#"{ "endpoints": [
  { "name": "web-1", "labels": { "app": "web" }, "addrs": ["10.3.0.1"] },
  { "name": "web-2", "labels": { "app": "web" }, "addrs": ["10.3.0.2"] },
  { "name": "s-1", "labels": { "app": "sticky" }, "addrs": ["10.4.0.1"] },
  { "name": "s-2", "labels": { "app": "sticky" }, "addrs": ["10.4.0.2"] }
] }"#;

const T: Duration = Duration::from_millis(500);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn write_bundle(dir: &Path) {
    bundle_common::write_source(
        dir,
        SRC,
        Some(INVENTORY),
        Target::Iptables,
        &Default::default(),
    );
}

fn ep(name: &str, app: &str, addr: &str, ready: bool) -> EndpointRec {
    EndpointRec {
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ready,
        addrs: vec![ip(addr)],
    }
}

/// The servers that answer `n` new connections to `vip:80`, from
/// different client addresses (so affinity does not pin them all).
fn answered(topo: &Topology, vip: &str, n: u8) -> BTreeSet<IpAddr> {
    (0..n)
        .filter_map(|i| topo.tcp_probe(ip(&format!("10.1.0.{}", 10 + i)), ip(vip), 80, T))
        .collect()
}

/// The DNAT targets `iptables-save` shows in `prefix` (web's backends
/// are 10.3.0.x, sticky's 10.4.0.x).
fn dnat_targets(topo: &Topology, v: Variant, prefix: &str) -> BTreeSet<String> {
    let out = topo
        .node
        .exec(&v.save(Family::Ipv4), &["-t", "nat"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("DNAT"))
        .filter_map(|l| l.split("--to-destination ").nth(1))
        .map(|t| t.split_whitespace().next().unwrap().to_string())
        .filter(|t| t.starts_with(prefix))
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<IpAddr> {
    v.iter().map(|s| ip(s)).collect()
}

fn strings(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn in_force(rt: &Iptables) {
    let s = rt.status().unwrap();
    assert!(
        s.in_force && s.families.iter().all(|f| f.difference.is_none()),
        "{s:?}"
    );
}

#[test]
fn iptables_backends_change_in_place() {
    if !weir_runtime::kernel_test::may_run(
        "iptables_backends_change_in_place",
        &["ip", "iptables-restore", "iptables-save", "ipset"],
    ) {
        return;
    }
    in_place(Variant::System);
}

/// The same with the legacy (x_tables) tools, which the benchmarks
/// drive.
#[test]
fn iptables_backends_change_in_place_legacy() {
    if !weir_runtime::kernel_test::may_run(
        "iptables_backends_change_in_place_legacy",
        &["ip", "iptables-restore", "iptables-save", "ipset"],
    ) {
        return;
    }
    if weir_runtime::iptables::exec::find_program("iptables-legacy-restore").is_none() {
        eprintln!("iptables-legacy not installed: skipped");
        return;
    }
    in_place(Variant::Legacy);
}

fn in_place(v: Variant) {
    let work =
        weir_runtime::kernel_test::state_dir(&format!("ipt-svc-churn-{}", v.name())).unwrap();
    let dir = work.join("bundle");
    write_bundle(&dir);
    let topo = Topology::new().expect("netns topology");
    for a in [
        "10.3.0.1", "10.3.0.2", "10.3.0.3", "10.4.0.1", "10.4.0.2", "10.4.0.3", "10.4.0.4",
    ] {
        topo.serve_tcp(ip(a), 8080).unwrap();
    }
    let rt = Iptables::new(
        Options::netns(topo.node.name())
            .with_state_dir(work.join("state"))
            .with_variant(v),
    );
    let b = Bundle::read(&dir).unwrap();
    let g = rt.apply(&b).unwrap().generation;
    let web = |n: &[(&str, &str, bool)]| -> Vec<EndpointRec> {
        n.iter()
            .map(|(name, a, r)| ep(name, "web", a, *r))
            .collect()
    };
    let sticky = vec![
        ep("s-1", "sticky", "10.4.0.1", true),
        ep("s-2", "sticky", "10.4.0.2", true),
    ];
    let inv = |w: Vec<EndpointRec>, s: &[EndpointRec]| -> Vec<EndpointRec> {
        w.into_iter().chain(s.iter().cloned()).collect()
    };
    assert_eq!(
        answered(&topo, "10.96.0.1", 24),
        set(&["10.3.0.1", "10.3.0.2"])
    );

    // web-2 removed: only web-1 answers.
    let one = web(&[("web-1", "10.3.0.1", true)]);
    let r = endpoints::iptables(&rt, &b, &inv(one.clone(), &sticky)).unwrap();
    assert!(r.needs_recompile.is_empty(), "{r:?}");
    assert_eq!(r.services.len(), 1, "{r:?}");
    assert_eq!(r.services[0].backends, vec!["10.3.0.1:8080".to_string()]);
    assert_eq!(answered(&topo, "10.96.0.1", 16), set(&["10.3.0.1"]));
    assert_eq!(dnat_targets(&topo, v, "10.3."), strings(&["10.3.0.1:8080"]));
    in_force(&rt);

    // web-3 added (a new address of web's class): web-1 and web-3.
    let two = web(&[("web-1", "10.3.0.1", true), ("web-3", "10.3.0.3", true)]);
    let r = endpoints::iptables(&rt, &b, &inv(two, &sticky)).unwrap();
    assert!(r.needs_recompile.is_empty(), "{r:?}");
    assert_eq!(
        dnat_targets(&topo, v, "10.3."),
        strings(&["10.3.0.1:8080", "10.3.0.3:8080"])
    );
    assert_eq!(
        answered(&topo, "10.96.0.1", 24),
        set(&["10.3.0.1", "10.3.0.3"])
    );

    // web-1 not ready: web-3 only.
    let three = web(&[("web-1", "10.3.0.1", false), ("web-3", "10.3.0.3", true)]);
    let r = endpoints::iptables(&rt, &b, &inv(three.clone(), &sticky)).unwrap();
    assert!(r.needs_recompile.is_empty(), "{r:?}");
    assert_eq!(answered(&topo, "10.96.0.1", 16), set(&["10.3.0.3"]));
    in_force(&rt);

    // Affinity: s-1 removed, s-3 added: s-2 keeps its slot, s-3 takes
    // s-1's (the generation has two backend chains).
    let s23 = vec![
        ep("s-2", "sticky", "10.4.0.2", true),
        ep("s-3", "sticky", "10.4.0.3", true),
    ];
    let r = endpoints::iptables(&rt, &b, &inv(three.clone(), &s23)).unwrap();
    assert!(r.needs_recompile.is_empty(), "{r:?}");
    assert_eq!(
        dnat_targets(&topo, v, "10.4."),
        strings(&["10.4.0.2:8080", "10.4.0.3:8080"])
    );
    assert_eq!(
        answered(&topo, "10.96.0.2", 24),
        set(&["10.4.0.2", "10.4.0.3"])
    );
    in_force(&rt);

    // A third sticky backend needs a third chain: the full path, said.
    let mut s234 = s23.clone();
    s234.push(ep("s-4", "sticky", "10.4.0.4", true));
    let r = endpoints::iptables(&rt, &b, &inv(three.clone(), &s234)).unwrap();
    assert_eq!(r.needs_recompile.len(), 1, "{r:?}");
    assert!(
        r.needs_recompile[0]
            .why
            .as_deref()
            .unwrap_or("")
            .contains("affinity chains"),
        "{r:?}"
    );
    assert_eq!(
        dnat_targets(&topo, v, "10.4."),
        strings(&["10.4.0.2:8080", "10.4.0.3:8080"])
    );

    // No web backend left: the reject is a filter rule this generation
    // does not have: the full path, said; the chains are unchanged.
    let none = web(&[("web-1", "10.3.0.1", false), ("web-3", "10.3.0.3", false)]);
    let r = endpoints::iptables(&rt, &b, &inv(none, &s23)).unwrap();
    let why: Vec<&str> = r
        .needs_recompile
        .iter()
        .filter_map(|s| s.why.as_deref())
        .collect();
    assert!(why.iter().any(|w| w.contains("no backend left")), "{r:?}");
    assert_eq!(dnat_targets(&topo, v, "10.3."), strings(&["10.3.0.3:8080"]));
    in_force(&rt);

    assert_eq!(rt.read_state().unwrap().unwrap().generation, g);
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(&work);
}
