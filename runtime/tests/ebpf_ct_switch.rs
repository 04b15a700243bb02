//! Switching an instance's shared conntrack map between `--ct-table lru`
//! and `--ct-table hash` (issue 21): `weir_ct` is pinned once per
//! instance and reused by every generation, and the runtime
//! (`shared_ct::unpin_if_resized` / `carry_over`) replaces it when the
//! applied bundle declares another kind, carrying its entries over.
//!
//! Each step loads a generation the way `weir apply` does (the instance's
//! pin directory shared), then reads the pinned map's type and size back
//! with `bpftool map show pinned` (not our code), and drives packets with
//! BPF_PROG_TEST_RUN:
//!
//! - the replies of flows allowed under the old kind still pass under the
//!   new one, though the interpreter denies them as new flows (`c` takes
//!   no new flow in): they pass because their entries were carried over;
//!   a reply of a flow never seen is denied;
//! - lru → hash → lru, with a flow added under hash carried back.
//!
//! Needs root and bpftool; skipped without them unless `CI` is set (then
//! it fails).

mod ebpf_common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ebpf_common::*;
use weir_compiler::ebpf::codegen::{self, EbpfOutput, Mode, Options};
use weir_compiler::ebpf::layout;
use weir_compiler::ebpf::state_tables::{CtTable, StateTables};
use weir_compiler::graph;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Model, Proto, Verdict};
use weir_runtime::ebpf::ct_tables;
use weir_runtime::ebpf::Generation;

const SRC: &str = r#"
endpoint c { labels { app: "c" } addr 10.1.0.1 }
endpoint b { labels { app: "b" } addr 10.2.0.1 }
policy b-in {
  applies to app == "b"
  ingress {
    allow tcp 8080 from app == "c"
    deny
  }
}
policy c-in {
  applies to app == "c"
  ingress {
    deny
  }
}
"#;

const SIZE: u32 = 64;
const OK: u32 = layout::TC_ACT_OK as u32;
const SHOT: u32 = layout::TC_ACT_SHOT as u32;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// c → b: allowed, a new conntrack entry.
fn flow(sport: u16) -> Packet {
    Packet::new(Proto::Tcp, ip("10.1.0.1"), sport, ip("10.2.0.1"), 8080)
}

/// Its reply b → c: denied as a new flow, passes as an established one.
fn reply(sport: u16) -> Packet {
    Packet::new(Proto::Tcp, ip("10.2.0.1"), 8080, ip("10.1.0.1"), sport)
}

fn compile(model: &Model, kind: CtTable) -> EbpfOutput {
    let g = graph::build(model);
    let tables = StateTables {
        conntrack: SIZE,
        translation: SIZE,
        kind,
    };
    let opts = Options {
        mode: Mode::Node,
        tables,
        spare_endpoints: 64,
        ..Options::default()
    };
    codegen::generate(model, &g, &opts).unwrap_or_else(|e| panic!("{e:?}"))
}

/// `(type, max_entries)` of the conntrack maps pinned in `dir` (both
/// families' tables, checked alike; their key sizes: 40 bytes for IPv6's
/// `weir_ct`, 16 for IPv4's `weir_ct4`), as bpftool reads them from the
/// kernel.
fn bpftool_maps(dir: &Path) -> (String, u64) {
    let [(t6, n6, k6), (t4, n4, k4)] =
        [layout::map::CT, layout::map::CT4].map(|m| bpftool_map(&dir.join(m)));
    assert_eq!((k6, k4), (40, 16), "conntrack key sizes");
    assert_eq!((&t6, n6), (&t4, n4), "both families' tables alike");
    (t4, n4)
}

/// `(type, max_entries, bytes_key)` of the map pinned at `path`, as
/// bpftool reads it from the kernel.
fn bpftool_map(path: &Path) -> (String, u64, u64) {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(path)
        .output()
        .expect("bpftool runs");
    assert!(out.status.success(), "bpftool: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool -j is JSON");
    (
        v["type"].as_str().expect("a map type").to_string(),
        v["max_entries"].as_u64().expect("max_entries"),
        v["bytes_key"].as_u64().expect("bytes_key"),
    )
}

/// Every flow of `sports` is in the generation's `weir_ct`, and its reply
/// passes (established: counted under provenance 0).
fn established(gen: &Generation, sports: &[u16]) {
    let before = counts(gen)[0];
    for &s in sports {
        assert!(
            ct_tables::lookup(|n| gen.ebpf.map(n), &ct_key(&flow(s)))
                .unwrap()
                .is_some(),
            "flow from port {s} not carried over"
        );
        assert_eq!(run(gen, &frame(&reply(s))), OK, "reply to port {s}");
    }
    assert_eq!(counts(gen)[0] - before, sports.len() as u64);
    // A reply of a flow never seen is decided as new: denied.
    assert_eq!(run(gen, &frame(&reply(9999))), SHOT);
}

#[test]
fn ebpf_shared_conntrack_switches_between_lru_and_hash_keeping_its_flows() {
    let name = "ebpf_shared_conntrack_switches_between_lru_and_hash_keeping_its_flows";
    if !weir_runtime::kernel_test::may_run(name, &["bpftool"]) {
        return;
    }
    let model = model_of_source(SRC);
    // The replies are denied as new flows: only conntrack passes them.
    let interp = Interp::new(&model);
    assert_eq!(interp.evaluate(&flow(1000)).verdict, Verdict::Allow);
    assert_eq!(interp.evaluate(&reply(1000)).verdict, Verdict::Deny);
    let (lru, hash) = (
        compile(&model, CtTable::Lru),
        compile(&model, CtTable::Hash),
    );

    weir_runtime::ebpf::pins::ensure_bpffs().unwrap_or_else(|e| panic!("bpffs: {e}"));
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/weir-test-ct-switch-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let load = |out: &EbpfOutput| {
        weir_runtime::ebpf::load(&out.object, &out.manifest, Some(&dir))
            .unwrap_or_else(|e| panic!("{e}"))
    };

    // LRU: ten flows, their replies pass.
    let first = load(&lru);
    assert_eq!(bpftool_maps(&dir), ("lru_hash".into(), u64::from(SIZE)));
    let sports: Vec<u16> = (1000..1010).collect();
    for &s in &sports {
        assert_eq!(run(&first, &frame(&flow(s))), OK);
    }
    established(&first, &sports);
    assert_eq!(conntrack_len(&first), 10);

    // Hash: the pinned map is replaced by a hash, the flows carried over.
    let second = load(&hash);
    assert_eq!(bpftool_maps(&dir), ("hash".into(), u64::from(SIZE)));
    assert_eq!(conntrack_len(&second), 10);
    established(&second, &sports);
    // A flow allowed under hash.
    assert_eq!(run(&second, &frame(&flow(2000))), OK);

    // Back to LRU, with that flow too.
    let third = load(&lru);
    assert_eq!(bpftool_maps(&dir), ("lru_hash".into(), u64::from(SIZE)));
    assert_eq!(conntrack_len(&third), 11);
    let all: Vec<u16> = sports.iter().copied().chain([2000]).collect();
    established(&third, &all);

    drop((first, second, third));
    let _ = std::fs::remove_dir_all(&dir);
}
