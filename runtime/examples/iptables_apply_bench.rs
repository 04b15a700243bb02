//! Cost of applying a large bundle through the runtime, against the
//! restore of the same rules by hand (the floor: `ipset restore` plus one
//! `iptables-restore` of the bundle's text), and of the paths that follow:
//! re-applying the bundle in force, replacing it with another generation
//! (which also removes the old one), a one-entry endpoint update of a set,
//! and detaching.
//!
//! Run as root:
//! `cargo run --release -p weir-runtime --example iptables_apply_bench`
//! (`SERVICES=N` to change the size, default 10,000; `ONLY_WRITE=1` only
//! writes the two bundles and prints their directory;
//! `WEIR_EXEC_TRACE=1` shows the time of every program the runtime runs).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use weir_compiler::bundle::{bundle, BundleInput, Target};
use weir_compiler::graph;
use weir_compiler::model::{Backend, BackendSource, Balance, Frontend, Model, Proto, Service};
use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::Netns;
use weir_runtime::Bundle;

fn vip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// `n` UDP services of two backends each; `port` tells generations apart.
fn model(n: usize, port: u16) -> Model {
    let backends: Vec<Backend> = ["10.2.0.10", "10.2.0.11"]
        .iter()
        .map(|a| Backend {
            addr: a.parse().unwrap(),
            port,
            weight: 1,
            endpoint: None,
        })
        .collect();
    Model {
        services: (0..n)
            .map(|i| Service {
                name: format!("svc{i:05}"),
                frontends: vec![Frontend {
                    addr: vip(i),
                    port: 53,
                    proto: Proto::Udp,
                }],
                backends: BackendSource::Explicit(backends.clone()),
                balance: Balance::Random,
                affinity: None,
                span: Default::default(),
            })
            .collect(),
        ..Model::default()
    }
}

fn write_bundle(m: &Model, dir: &Path) {
    let g = graph::build(m);
    let art = weir_compiler::iptables::generate(&g, m).expect("random services compile");
    let mut backends = BTreeMap::new();
    backends.insert(Target::Iptables, art);
    let files = bundle(&BundleInput {
        model: m,
        graph: &g,
        sources: &[],
        targets: &[Target::Iptables],
        locate: &|_| None,
        backends,
    });
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("SERVICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let root: PathBuf =
        std::env::temp_dir().join(format!("weir-apply-bench-{}", std::process::id()));
    let (a, b) = (root.join("a"), root.join("b"));
    write_bundle(&model(n, 8080), &a);
    write_bundle(&model(n, 8081), &b);
    if std::env::var_os("ONLY_WRITE").is_some() {
        println!("{}", root.display());
        return;
    }
    let rules = std::fs::read_to_string(a.join("iptables.rules")).unwrap();
    let ipset = std::fs::read_to_string(a.join("ipset.rules")).unwrap();
    println!(
        "{n} services: {} rules, {} chains, {} ipset lines",
        rules.lines().filter(|l| l.starts_with("-A")).count(),
        rules.lines().filter(|l| l.starts_with(':')).count(),
        ipset.lines().count()
    );

    // The floor: the same texts restored by hand into an empty namespace.
    let raw = Netns::create(&format!("weir-apply-raw-{}", std::process::id()))
        .expect("namespace (needs root)");
    let t = Instant::now();
    let o = raw
        .exec_with_input("ipset", &["restore", "-exist"], Some(&ipset))
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw_ipset = secs(t);
    let t = Instant::now();
    let o = raw
        .exec_with_input("iptables-restore", &["--noflush", "-w"], Some(&rules))
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw_rules = secs(t);
    println!("by hand:          ipset restore {raw_ipset:.2}s, iptables-restore {raw_rules:.2}s, total {:.2}s", raw_ipset + raw_rules);
    drop(raw);

    let ns = Netns::create(&format!("weir-apply-rt-{}", std::process::id()))
        .expect("namespace (needs root)");
    let rt = Iptables::new(Options::netns(ns.name()).with_state_dir(root.join("state")));
    let (ba, bb) = (Bundle::read(&a).unwrap(), Bundle::read(&b).unwrap());
    let t = Instant::now();
    let r = rt.apply(&ba).unwrap();
    println!(
        "apply (fresh):    {:.2}s  generation {}",
        secs(t),
        r.generation
    );
    let t = Instant::now();
    let r = rt.apply(&ba).unwrap();
    assert!(r.unchanged);
    println!("re-apply (same):  {:.2}s", secs(t));
    let t = Instant::now();
    let r = rt.apply(&bb).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    println!(
        "apply (replace):  {:.2}s  generation {} (old {:?} removed)",
        secs(t),
        r.generation,
        r.previous
    );
    // The services-only model has no address sets (frontends are matched
    // by rules): time updates of the first set the generation has, if any.
    let set = rt
        .read_state()
        .unwrap()
        .and_then(|st| st.sets.first().map(|s| s.name.clone()));
    if let Some(set) = set {
        let mut upd = Vec::new();
        for i in 0..20 {
            let e = vec![format!("10.9.0.{}", i + 1)];
            let t = Instant::now();
            rt.update_set(&set, &e, &[]).unwrap();
            rt.update_set(&set, &[], &e).unwrap();
            upd.push(secs(t) / 2.0);
        }
        upd.sort_by(|x, y| x.partial_cmp(y).unwrap());
        println!(
            "endpoint update:  {:.1}ms (median of 20 one-entry updates of {set})",
            upd[10] * 1e3
        );
    } else {
        println!("endpoint update:  no address set in this model");
    }
    let t = Instant::now();
    let d = rt.detach().unwrap();
    println!(
        "detach:           {:.2}s  ({} chains, {} sets)",
        secs(t),
        d.chains.len(),
        d.sets.len()
    );
    let _ = std::fs::remove_dir_all(&root);
}
