//! Endpoint update latency at 1,000 services (the update-latency model of
//! the full benchmark), through `weir_runtime::endpoints::iptables`.
//! Ignored: needs root and takes a while; prints timings.
//! `cargo test --release -p weir-bench --test update_latency_1k -- --ignored --nocapture`

use std::time::Instant;
use weir_bench::iptables::{self as ipt, Scratch};
use weir_compiler::churn;

#[test]
#[ignore]
fn update_latency_1k() {
    let plan = weir_bench::Plan::new(false, 1);
    let params = plan.services_params(1_000, 1);
    let model = weir_compiler::synth::model(&params);
    let graph = weir_compiler::graph::compile(&model);
    let dir = Scratch::new("upd1k");
    let b0 = dir.0.join("b0");
    ipt::write_bundle(&model, &graph.graph, &b0).unwrap();
    let bundle = weir_runtime::Bundle::read(&b0).unwrap();
    let (base, extra) = weir_bench::churn_inventory(&model, &bundle.manifest).unwrap();
    let mut with = base.clone();
    with.push(extra);
    eprintln!("endpoints: {}", base.len());
    let t = Instant::now();
    let view = churn::ClassView::from_manifest(&bundle.manifest);
    eprintln!("ClassView::from_manifest: {:?}", t.elapsed());
    let t = Instant::now();
    let svcs = churn::selector_services(&bundle.manifest);
    eprintln!("selector_services: {:?}", t.elapsed());
    let t = Instant::now();
    let text = serde_json::to_string(&base).unwrap();
    eprintln!(
        "inventory to JSON: {:?} ({} bytes)",
        t.elapsed(),
        text.len()
    );
    let t = Instant::now();
    let _: Vec<churn::EndpointRec> = serde_json::from_str(&text).unwrap();
    eprintln!("inventory from JSON: {:?}", t.elapsed());
    let t = Instant::now();
    let p = churn::plan(&view, &base, &with);
    eprintln!("full plan: {:?} ({} changes)", t.elapsed(), p.changes.len());
    let t = Instant::now();
    let p2 = churn::plan_update(&view, &base, &with);
    eprintln!("plan_update: {:?}", t.elapsed());
    assert_eq!(p.changes, p2.changes);
    let t = Instant::now();
    let mut a = Vec::new();
    for s in &svcs {
        for f in &s.groups {
            a.push(churn::backends_for(s, f, &with));
        }
    }
    eprintln!("backends_for x {} services: {:?}", svcs.len(), t.elapsed());
    let t = Instant::now();
    let idx =
        weir_compiler::endpoint_index::EndpointIndex::from_labels(with.iter().map(|e| &e.labels));
    let mut b = Vec::new();
    for s in &svcs {
        for f in &s.groups {
            b.push(churn::backends_indexed(s, f, &with, &idx));
        }
    }
    eprintln!("backends_indexed: {:?}", t.elapsed());
    assert_eq!(a, b);

    if !weir_bench::is_root() {
        return;
    }
    let topo = weir_runtime::netns::Topology::new().unwrap();
    let state = Scratch::shm("upd1k-state");
    let rt = ipt::runtime(&topo, &state.0, plan.variant);
    ipt::apply(&rt, &b0).unwrap();
    for _ in 0..5 {
        let t = Instant::now();
        let r = weir_runtime::endpoints::iptables(&rt, &bundle, &with).unwrap();
        let add = t.elapsed();
        assert_eq!(r.changes.len(), 1);
        let t = Instant::now();
        weir_runtime::endpoints::iptables(&rt, &bundle, &base).unwrap();
        eprintln!("iptables endpoints: add {add:?} remove {:?}", t.elapsed());
    }
}
