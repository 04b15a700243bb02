//! The per-flow tables when they are full (issue 21): a program compiled
//! with tiny per-flow tables (`StateTables`, what
//! `weir compile --ct-entries/--lb-entries` sets), driven with
//! BPF_PROG_TEST_RUN through four times as many new flows as the tables
//! hold, read back from the kernel:
//!
//! - the tables are the size the manifest declares, and never hold more;
//! - they are LRU: the most recent flows are in, the oldest evicted;
//! - a full table never changes a verdict: every allowed flow is allowed
//!   and translated to a backend, every denied one denied, and an evicted
//!   flow's next packet is decided again as a new flow (same verdict).
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ebpf_common::*;
use weir_compiler::check::check_program;
use weir_compiler::ebpf::codegen::{self, Mode, Options};
use weir_compiler::ebpf::layout;
use weir_compiler::ebpf::state_tables::{CtTable, StateTables};
use weir_compiler::graph::{self, Graph};
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Model, Proto, Verdict};
use weir_compiler::source::MemoryLoader;
use weir_runtime::ebpf::ct_tables;

const SRC: &str = r#"
endpoint c  { labels { app: "c" }  addr 10.1.0.1 }
endpoint b1 { labels { app: "b" }  addr 10.2.0.1 }
endpoint b2 { labels { app: "b" }  addr 10.2.0.2 }
endpoint x  { labels { app: "x" }  addr 10.1.0.9 }
service s {
  frontend 10.96.0.1:80/tcp
  backends select app == "b" port 8080
  balance maglev
}
policy b-in {
  applies to app == "b"
  ingress {
    allow tcp 8080 from app == "c"
    deny
  }
}
"#;

/// Entries of every per-flow table in this test.
const SIZE: u32 = 128;

fn compile_src(src: &str) -> (Model, Graph) {
    let path = PathBuf::from("main.weir");
    let loader = MemoryLoader::new().with(&path, src);
    let checked = check_program(std::slice::from_ref(&path), &loader, None);
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    let g = graph::build(&checked.model);
    (checked.model, g)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn verdict(v: Verdict) -> u32 {
    match v {
        Verdict::Allow => layout::TC_ACT_OK as u32,
        Verdict::Deny => layout::TC_ACT_SHOT as u32,
    }
}

/// The IPv4 destination of an Ethernet + IPv4 frame.
fn dst_of(frame: &[u8]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]))
}

#[test]
fn ebpf_full_state_tables_evict_least_recently_used_and_keep_verdicts() {
    if !have_root("ebpf_full_state_tables_evict_least_recently_used_and_keep_verdicts") {
        return;
    }
    let (model, g) = compile_src(SRC);
    let interp = Interp::new(&model);
    let tables = StateTables {
        conntrack: SIZE,
        translation: SIZE,
        // LRU eviction is what this test is about.
        kind: CtTable::Lru,
    };
    let out = codegen::generate(
        &model,
        &g,
        &Options {
            mode: Mode::Node,
            tables,
            spare_endpoints: 64,
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    // Declared in the manifest, and every per-flow map is that size.
    assert_eq!(out.manifest.state_tables, tables);
    use weir_compiler::ebpf::layout::service::map as lb;
    // No `weir_lb_ct`: translations are forward entries in `weir_ct`.
    assert!(!out.manifest.maps.iter().any(|m| m.name == lb::CT));
    for name in [layout::map::CT, layout::map::CT4, lb::AFF, lb::SK] {
        let m = out.manifest.maps.iter().find(|m| m.name == name);
        let m = m.unwrap_or_else(|| panic!("no map {name}"));
        assert_eq!(
            (m.map_type.as_str(), m.max_entries),
            ("lru_hash", SIZE),
            "{name}"
        );
    }
    let gen = load_output(&out);

    let plain = |sport: u16| Packet::new(Proto::Tcp, ip("10.1.0.1"), sport, ip("10.2.0.1"), 8080);
    let service = |sport: u16| Packet::new(Proto::Tcp, ip("10.1.0.1"), sport, ip("10.96.0.1"), 80);
    let denied = |sport: u16| Packet::new(Proto::Tcp, ip("10.1.0.9"), sport, ip("10.2.0.1"), 8080);
    let backends = [ip("10.2.0.1"), ip("10.2.0.2")];
    let check = |p: &Packet| {
        let want = interp.evaluate(p).verdict;
        let r = run_full(&gen, &frame(p));
        assert_eq!(r.ret, verdict(want), "{p:?}");
        if p.dst == ip("10.96.0.1") {
            assert!(backends.contains(&dst_of(&r.data)), "{p:?} not translated");
        }
    };
    // Four times as many new flows of each kind as the tables hold.
    let flows = 4 * SIZE as u16;
    for sport in 1000..1000 + flows {
        check(&plain(sport));
        check(&service(sport));
        check(&denied(sport));
    }
    // Never more entries than declared (flows and forward entries
    // together); full enough to have evicted.
    let n = ct_entries(&gen);
    assert!(n <= SIZE as usize, "weir_ct: {n} entries > {SIZE}");
    assert!(n >= SIZE as usize / 2, "weir_ct: {n} entries, not filled");
    // LRU: the newest plain flow is there, the oldest evicted.
    let has = |p: &Packet| {
        ct_tables::lookup(|n| gen.ebpf.map(n), &ct_key(p))
            .unwrap()
            .is_some()
    };
    let newest = plain(1000 + flows - 1);
    let oldest = plain(1000);
    assert!(has(&newest));
    assert!(!has(&oldest));
    // An evicted flow is decided again as a new one: same verdicts.
    check(&oldest);
    assert!(has(&oldest));
    check(&service(1000));
    check(&denied(1000));
    assert!(ct_entries(&gen) <= SIZE as usize);
}

/// The conntrack map generations share (pinned once per instance) is
/// resized when a bundle declares another size — not silently kept (aya
/// reuses a pinned map by name whatever its size) — and its entries are
/// carried over.
#[test]
fn ebpf_shared_conntrack_takes_the_declared_size_and_keeps_its_flows() {
    if !have_root("ebpf_shared_conntrack_takes_the_declared_size_and_keeps_its_flows") {
        return;
    }
    let (model, g) = compile_src(SRC);
    let gen_of = |conntrack: u32| {
        codegen::generate(
            &model,
            &g,
            &Options {
                mode: Mode::Node,
                tables: StateTables {
                    conntrack,
                    translation: SIZE,
                    kind: CtTable::Lru,
                },
                spare_endpoints: 64,
                ..Options::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
    };
    weir_runtime::ebpf::pins::ensure_bpffs().unwrap_or_else(|e| panic!("bpffs: {e}"));
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/weir-test-state-tables-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Both families' tables, each of the declared size.
    let max_of = |gen: &weir_runtime::ebpf::Generation| {
        let [m6, m4] = [layout::map::CT, layout::map::CT4].map(|n| {
            weir_runtime::ebpf::load::map_data(gen.ebpf.map(n).unwrap())
                .info()
                .unwrap()
                .max_entries()
        });
        assert_eq!(m6, m4, "both families' conntrack tables");
        m4
    };
    let flow = |sport: u16| Packet::new(Proto::Tcp, ip("10.1.0.1"), sport, ip("10.2.0.1"), 8080);
    let small = gen_of(SIZE);
    let first = weir_runtime::ebpf::load(&small.object, &small.manifest, Some(&dir)).unwrap();
    assert_eq!(max_of(&first), SIZE);
    for sport in 1000..1010 {
        assert_eq!(run(&first, &frame(&flow(sport))), layout::TC_ACT_OK as u32);
    }
    assert_eq!(conntrack_len(&first), 10);
    // Same size: the pinned map itself is reused.
    let again = weir_runtime::ebpf::load(&small.object, &small.manifest, Some(&dir)).unwrap();
    assert_eq!((max_of(&again), conntrack_len(&again)), (SIZE, 10));
    drop(again);
    // Another size: a map of that size, with the flows carried over.
    let big = gen_of(4 * SIZE);
    let second = weir_runtime::ebpf::load(&big.object, &big.manifest, Some(&dir)).unwrap();
    assert_eq!(max_of(&second), 4 * SIZE);
    assert_eq!(conntrack_len(&second), 10);
    assert!(
        ct_tables::lookup(|n| second.ebpf.map(n), &ct_key(&flow(1005)))
            .unwrap()
            .is_some()
    );
    // And the pin now names the new map.
    let third = weir_runtime::ebpf::load(&big.object, &big.manifest, Some(&dir)).unwrap();
    assert_eq!((max_of(&third), conntrack_len(&third)), (4 * SIZE, 10));
    drop((first, second, third));
    let _ = std::fs::remove_dir_all(&dir);
}
