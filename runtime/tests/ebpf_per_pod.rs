//! 10,000 pods, one ingress rule per pod naming one peer pod
//! (`synth::per_pod`, issue 21): refused by the eBPF back end before (one
//! class-table block too large for a stage, E0510), now searched in
//! groups across tail-called stages. Loads the program in the kernel (the
//! verifier accepts every stage) and checks, with BPF_PROG_TEST_RUN, the
//! verdicts and per-rule counters of packets aimed at pods in every group
//! and at every 97th pod against the reference
//! interpreter.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::collections::BTreeMap;

use ebpf_common::*;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::layout;
use weir_compiler::graph;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Proto, Verdict};
use weir_compiler::synth::{endpoint_addr, per_pod};

#[test]
fn ebpf_ten_thousand_one_peer_rules_load_and_agree() {
    if !have_root("ebpf_ten_thousand_one_peer_rules_load_and_agree") {
        return;
    }
    let pods = 10_000;
    let model = per_pod::model(pods);
    let g = graph::build(&model);
    let out = compile(&model, &g, Mode::Node);
    eprintln!("{}", out.report());
    assert!(out.manifest.programs.len() > 1, "expected several stages");
    let gen = load_output(&out);
    let interp = Interp::new(&model);

    // Pods at the edges of the dispatch groups (1,024 branches each) and
    // in the middle: from the allowed peer (port 80 and 81), from another
    // pod, and to an address no policy selects.
    let mut packets = Vec::new();
    // (The graph's leaf packets, `cover::leaf_packets`, take minutes at
    // this size in a debug build: every 97th pod instead.)
    let edges = [0, 1, 1023, 1024, 1025, 2047, 5000, 8191, 9216, 9998, 9999];
    for i in edges.into_iter().chain((0..pods).step_by(97)) {
        let (me, peer) = (endpoint_addr(i), endpoint_addr(per_pod::peer(pods, i)));
        let other = endpoint_addr((i + 7) % pods);
        packets.push(Packet::new(Proto::Tcp, peer, 40000, me, per_pod::PORT));
        packets.push(Packet::new(Proto::Tcp, peer, 40000, me, per_pod::PORT + 1));
        packets.push(Packet::new(Proto::Udp, peer, 40000, me, per_pod::PORT));
        packets.push(Packet::new(Proto::Tcp, other, 40000, me, per_pod::PORT));
        packets.push(Packet::new(
            Proto::Tcp,
            me,
            40000,
            "192.0.2.1".parse().unwrap(),
            443,
        ));
    }

    let (mut allowed, mut bad) = (0, Vec::new());
    for p in &packets {
        let p = normalize(p);
        if p.src.is_ipv4() != p.dst.is_ipv4() {
            continue;
        }
        clear_conntrack(&gen);
        let o = interp.evaluate(&p);
        let mut want = BTreeMap::new();
        for l in &o.logged {
            *want.entry(g.provenance.id(l)).or_insert(0u64) += 1;
        }
        *want.entry(g.provenance.id(&o.decided_by)).or_insert(0) += 1;
        let want_ret = if o.verdict == Verdict::Allow {
            layout::TC_ACT_OK as u32
        } else {
            layout::TC_ACT_SHOT as u32
        };
        let before = counts(&gen);
        let ret = run(&gen, &frame(&p));
        let got: BTreeMap<u32, u64> = before
            .iter()
            .zip(counts(&gen))
            .enumerate()
            .filter(|(_, (b, a))| *a != **b)
            .map(|(i, (b, a))| (i as u32, a - b))
            .collect();
        allowed += usize::from(o.verdict == Verdict::Allow);
        if ret != want_ret || got != want {
            bad.push(format!(
                "{p:?}: want {want_ret} {want:?}, got {ret} {got:?}"
            ));
        }
    }
    eprintln!(
        "per-pod rules: {} packets, {allowed} allowed, {} disagreements",
        packets.len(),
        bad.len()
    );
    assert!(allowed >= 114, "expected the peers' packets allowed");
    assert!(bad.is_empty(), "eBPF disagrees:\n{}", bad.join("\n"));
}
