//! The Kubernetes conformance cases (tests/k8s-conformance/, see
//! k8s_conformance.rs) through the iptables back end with real traffic:
//! each case's program is compiled to a bundle, applied by the runtime in
//! the node namespace of a client — node — server topology, and every
//! cell of its matrix is probed with a real TCP connection or UDP
//! exchange (SCTP probes are left to the interpreter and eBPF: the
//! harness has no SCTP client).
//!
//! A pod is a source in some cells and a destination in others, while the
//! topology puts sources in the client namespace and destinations in the
//! server namespace. So each case runs in 5 rounds: pod `i` is given a
//! distinct 2-element subset `S_i` of the rounds {0..5} (there are 10,
//! for 9 pods), and in round `r` the pods with `r ∈ S_i` are clients and
//! the others servers. Two distinct subsets of the same size each have an
//! element the other lacks, so for every ordered pair (i, j) of distinct
//! pods some round has `i` as a client and `j` as a server (a Sperner
//! family: 5 rounds is the fewest that separates 9 pods both ways). The
//! diagonal (a pod to itself) never crosses the node and is not probed
//! here.
//!
//! The five rounds of a case run at once, each in its own topology, and
//! [`CASES_AT_ONCE`] cases at a time.
//!
//! Needs root; skipped without, unless `CI` is set (then it fails).
//! `WEIR_K8S_CASES=a,b` limits the run to those cases.

mod k8s_common;

mod bundle_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use k8s_common::*;
use weir_compiler::graph::{self, Graph};
use weir_compiler::model::{Model, Proto};
use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::{Topology, NODE_SERVER_IF};
use weir_runtime::Bundle;

const ALLOW_WAIT: Duration = Duration::from_millis(2000);

/// Rounds per case (see the module docs).
const ROUNDS: usize = 5;

/// The rounds in which pod `i` is a client: the `i`-th 2-element subset
/// of `0..ROUNDS` in lexicographic order.
fn round_subset(i: usize) -> [usize; 2] {
    let pairs: Vec<[usize; 2]> = (0..ROUNDS)
        .flat_map(|a| (a + 1..ROUNDS).map(move |b| [a, b]))
        .collect();
    assert!(PODS.len() <= pairs.len(), "more pods than rounds separate");
    pairs[i]
}

/// The bundle `weir compile --target iptables` would write.
fn write_bundle(model: &Model, g: &Graph, dir: &Path) -> Bundle {
    let sources = vec![("policy.weir".to_string(), String::new())];
    bundle_common::write_iptables(model, g, &sources, dir)
}

#[test]
fn k8s_conformance_iptables_traffic() {
    if !weir_runtime::kernel_test::may_run(
        "k8s_conformance_iptables_traffic",
        &["ip", "iptables-restore", "ipset"],
    ) {
        return;
    }
    let only: Option<Vec<String>> = std::env::var("WEIR_K8S_CASES")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let work = std::env::temp_dir().join(format!("weir-k8s-ipt-{}", std::process::id()));
    let names: Vec<String> = cases()
        .into_iter()
        .filter(|n| only.as_ref().is_none_or(|o| o.contains(n)))
        .collect();
    // Cases run CASES_AT_ONCE at a time (each round its own topology).
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..CASES_AT_ONCE {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(name) = names.get(k) else {
                    break;
                };
                let outcome = run_case(name, &work);
                outcomes.lock().unwrap().push(outcome);
            });
        }
    });
    let (mut cases_run, mut probes, mut failures) = (0, 0, Vec::new());
    for (n, f) in outcomes.into_inner().unwrap().into_iter().flatten() {
        cases_run += 1;
        probes += n;
        failures.extend(f);
    }
    failures.sort();
    let _ = std::fs::remove_dir_all(&work);
    eprintln!(
        "{cases_run} cases: {probes} iptables probes with real traffic, {} disagreements",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One probed cell: probe, client pod, server pod, whether it connected.
type Cell = (Probe, usize, usize, bool);

/// Round `round` of a case: pods with `round` in their subset are clients,
/// the others servers; the bundle applied in a fresh topology's node and
/// every (probe, client, server) cell probed with real traffic.
fn run_round(
    name: &str,
    case: &Case,
    b: &Bundle,
    tcp_udp: &[Probe],
    work: &Path,
    round: usize,
) -> Vec<Cell> {
    let (client, server): (Vec<usize>, Vec<usize>) =
        (0..PODS.len()).partition(|&i| round_subset(i).contains(&round));
    if client.is_empty() || server.is_empty() {
        return Vec::new();
    }
    let topo = Topology::new().unwrap();
    let o = topo
        .node
        .exec("ip", &["route", "add", "default", "dev", NODE_SERVER_IF])
        .unwrap();
    assert!(o.status.success());
    let rt = Iptables::new(
        Options::netns(topo.node.name())
            .with_state_dir(work.join(name).join(format!("state{round}"))),
    );
    let r = rt.apply(b).unwrap_or_else(|e| panic!("{name}: apply: {e}"));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let mut cells = Vec::new();
    for p in tcp_udp {
        for &j in &server {
            match p.proto {
                Proto::Tcp => topo.serve_tcp(case.addrs[j], p.port).unwrap(),
                _ => topo.serve_udp(case.addrs[j], p.port).unwrap(),
            }
            for &i in &client {
                cells.push((*p, i, j));
            }
        }
    }
    for &i in &client {
        topo.add_client_addr(case.addrs[i]).unwrap();
    }
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..32 {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(p, i, j)) = cells.get(k) else {
                    break;
                };
                let (src, dst) = (case.addrs[i], case.addrs[j]);
                let wait = if case.expect[&p][&(i, j)] {
                    ALLOW_WAIT
                } else {
                    ALLOW_WAIT / 4
                };
                let answer = match p.proto {
                    Proto::Tcp => topo.tcp_probe(src, dst, p.port, wait),
                    _ => topo.udp_probe(src, dst, p.port, wait),
                };
                results.lock().unwrap().push((p, i, j, answer == Some(dst)));
            });
        }
    });
    results.into_inner().unwrap()
}

/// How many cases probe at once.
const CASES_AT_ONCE: usize = 3;

/// One case through iptables with real traffic: `None` when it has no
/// TCP or UDP probe, else (probes sent, disagreements).
fn run_case(name: &str, work: &Path) -> Option<(usize, Vec<String>)> {
    let mut failures = Vec::new();
    let mut probes = 0;
    let case = load(name);
    let model = case.checked.model_if_ok().unwrap();
    let g = graph::build(model);
    let b = write_bundle(model, &g, &work.join(name).join("bundle"));
    let tcp_udp: Vec<Probe> = case
        .expect
        .keys()
        .copied()
        .filter(|p| p.proto != Proto::Sctp)
        .collect();
    if tcp_udp.is_empty() {
        return None;
    }
    // The rounds run at once, each in its own topology (the runtime's
    // restores wait for the xtables lock).
    let rounds: Vec<Vec<Cell>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..ROUNDS)
            .map(|round| {
                let (case, b, tcp_udp) = (&case, &b, &tcp_udp);
                s.spawn(move || run_round(name, case, b, tcp_udp, work, round))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut got: BTreeMap<Probe, BTreeMap<(usize, usize), bool>> = BTreeMap::new();
    for (p, i, j, ok) in rounds.into_iter().flatten() {
        got.entry(p).or_default().insert((i, j), ok);
        probes += 1;
    }
    for p in &tcp_udp {
        let mut cells = got.remove(p).unwrap_or_default();
        for i in 0..PODS.len() {
            cells.insert((i, i), true);
        }
        let want = &case.expect[p];
        if &cells != want {
            failures.push(format!(
                "{name}: iptables (real traffic), probe {p}:\nexpected\n{}got\n{}",
                show(want, None),
                show(&cells, Some(want))
            ));
        }
    }
    Some((probes, failures))
}
