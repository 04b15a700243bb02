//! The IPv4 conntrack key a new allowed flow is inserted under (issue
//! 21, `weir_ct4`, `layout::ct::v4`): the final block orders the
//! packet's key canonically and compacts it at the call
//! (`codegen::emit::ct_family`), and must reach the same 16 bytes as the
//! prologue's lookup, or the flow's later packets miss their entry.
//! Checked against the kernel: after real BPF_PROG_TEST_RUN packets, the
//! keys read back from `weir_ct4` are `layout::ct::v4::compact` of the
//! canonical key for a client that is the key's first end and for one
//! that is its second (the order swapped), on both table kinds, with the
//! final block in the entry program and in a tail-called stage (the
//! stack, where the prologue built its key, lost); each flow's reply
//! then passes, and not without its entry.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod bundle_common;
mod ebpf_common;

use std::fmt::Write as _;
use std::net::IpAddr;

use ebpf_common::*;
use weir_compiler::ebpf::codegen::{self, Budget, EbpfOutput, Mode, Options};
use weir_compiler::ebpf::layout::{self, ct, map as names};
use weir_compiler::ebpf::state_tables::{CtTable, StateTables};
use weir_compiler::graph;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Proto, Verdict};
use weir_runtime::ebpf::load::{delete_raw, keys_raw};

const OK: u32 = layout::TC_ACT_OK as u32;
const SHOT: u32 = layout::TC_ACT_SHOT as u32;

/// b (10.2.0.1) takes 8080 from c (10.1.0.1: below b, the key in the
/// packet's order) and d (10.3.0.1: above b, the order swapped); extra
/// ports give the graph something to split into stages.
fn source() -> String {
    let mut s = String::from(
        r#"
endpoint c { labels { app: "c" } addr 10.1.0.1 }
endpoint d { labels { app: "d" } addr 10.3.0.1 }
endpoint b { labels { app: "b" } addr 10.2.0.1 }
policy b-in {
  applies to app == "b"
  ingress {
    allow tcp 8080 from app == "c"
    allow tcp 8080 from app == "d"
"#,
    );
    for port in 9000..9060 {
        let from = if port % 2 == 0 { "c" } else { "d" };
        writeln!(s, "    allow tcp {port} from app == \"{from}\"").unwrap();
    }
    s.push_str("    deny\n  }\n}\n");
    for side in ["c", "d"] {
        writeln!(
            s,
            "policy {side}-in {{\n  applies to app == \"{side}\"\n  ingress {{\n    deny\n  }}\n}}"
        )
        .unwrap();
    }
    s
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn compile(src: &str, kind: CtTable, budget: Budget) -> EbpfOutput {
    let model = model_of_source(src);
    let g = graph::build(&model);
    let opts = Options {
        mode: Mode::Node,
        budget,
        tables: StateTables {
            conntrack: 64,
            translation: 64,
            kind,
        },
        spare_endpoints: 64,
        ..Options::default()
    };
    codegen::generate(&model, &g, &opts).unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn ebpf_ipv4_flow_inserted_under_its_canonical_compact_key() {
    if !have_root("ebpf_ipv4_flow_inserted_under_its_canonical_compact_key") {
        return;
    }
    let src = source();
    let model = model_of_source(&src);
    let interp = Interp::new(&model);
    let b = ip("10.2.0.1");
    // (client, client port, server port)
    let flows: Vec<(Packet, Packet)> = [
        ("10.1.0.1", 41000, 8080),
        ("10.3.0.1", 1000, 8080),
        ("10.1.0.1", 5000, 9002),
    ]
    .into_iter()
    .map(|(client, sport, dport)| {
        let c = ip(client);
        (
            Packet::new(Proto::Tcp, c, sport, b, dport),
            Packet::new(Proto::Tcp, b, dport, c, sport),
        )
    })
    .collect();
    for (f, r) in &flows {
        assert_eq!(interp.evaluate(f).verdict, Verdict::Allow, "{f:?}");
        assert_eq!(interp.evaluate(r).verdict, Verdict::Deny, "{r:?}");
    }
    // The swapped order is exercised: d's key starts with b.
    let k = ct_key(&flows[1].0);
    assert_eq!(&k[..4], &[10, 2, 0, 1], "d → b is stored b first");
    let small = Budget {
        max_slots: 1400,
        max_jumps: 300,
    };
    for (tag, budget) in [("one program", Budget::default()), ("stages", small)] {
        for kind in [CtTable::Hash, CtTable::Lru] {
            let out = compile(&src, kind, budget);
            if tag == "stages" {
                assert!(
                    out.manifest.max_tail_calls >= 1,
                    "expected the final block in a tail-called stage: {}",
                    out.report()
                );
            }
            let gen = load_output(&out);
            let ct4 = gen.ebpf.map(names::CT4).unwrap();
            for (f, _) in &flows {
                assert_eq!(run(&gen, &frame(f)), OK, "{tag} {kind:?}: {f:?}");
            }
            let mut want: Vec<Vec<u8>> = flows
                .iter()
                .map(|(f, _)| ct::v4::compact(&ct_key(f)).to_vec())
                .collect();
            want.sort();
            let mut got = keys_raw(ct4, ct::v4::KEY_SIZE as usize).unwrap();
            got.sort();
            assert_eq!(got, want, "{tag} {kind:?}: weir_ct4 keys");
            for (f, r) in &flows {
                assert_eq!(run(&gen, &frame(r)), OK, "{tag} {kind:?}: reply {r:?}");
                delete_raw(ct4, &ct::v4::compact(&ct_key(f))).unwrap();
                assert_eq!(
                    run(&gen, &frame(r)),
                    SHOT,
                    "{tag} {kind:?}: reply {r:?} without its entry"
                );
            }
        }
    }
}
