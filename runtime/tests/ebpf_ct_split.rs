//! One conntrack table per family (issue 21: `weir_ct4`, 16-byte keys,
//! for IPv4 flows; `weir_ct` for IPv6 ones), checked against the kernel:
//! - the programs put each family's flows in its own table, keyed as
//!   `layout::ct::v4` says (read back from the maps after real
//!   BPF_PROG_TEST_RUN packets), and an established flow of either
//!   family passes only through its own table's entry;
//! - upgrading an instance whose pinned `weir_ct` holds both families (an
//!   earlier weir's one table of 40-byte keys) moves its IPv4 flows into
//!   `weir_ct4` at the load: their replies pass as established under the
//!   new generation, the IPv6 flows stay in `weir_ct`, and the moved
//!   keys are what the apply removes from `weir_ct` after the switch
//!   (and through `weir apply` in a namespace: removed, read back from
//!   the pins; `weir detach` removes both pins);
//! - the collector's IPv4 callback reads a forward entry's client from
//!   either end of its widened key.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod bundle_common;
mod ebpf_common;

use std::net::IpAddr;
use std::path::PathBuf;

use aya::maps::Map;
use ebpf_common::*;
use weir_compiler::ebpf::codegen::{self, EbpfOutput, Mode, Options};
use weir_compiler::ebpf::layout::{self, ct, map as names};
use weir_compiler::ebpf::state_tables::{CtTable, StateTables};
use weir_compiler::graph;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Proto, Verdict};
use weir_runtime::ebpf::load::{keys_raw, lookup_raw, update_raw};

const SRC: &str = r#"
endpoint c { labels { app: "c" } addr 10.1.0.1 addr fd00:1::1 }
endpoint b { labels { app: "b" } addr 10.2.0.1 addr fd00:2::1 }
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

const OK: u32 = layout::TC_ACT_OK as u32;
const SHOT: u32 = layout::TC_ACT_SHOT as u32;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// c → b (allowed) and its reply b → c (denied as a new flow), IPv4 or
/// IPv6.
fn flow(v6: bool, sport: u16) -> (Packet, Packet) {
    let (c, b) = if v6 {
        (ip("fd00:1::1"), ip("fd00:2::1"))
    } else {
        (ip("10.1.0.1"), ip("10.2.0.1"))
    };
    (
        Packet::new(Proto::Tcp, c, sport, b, 8080),
        Packet::new(Proto::Tcp, b, 8080, c, sport),
    )
}

fn compile(kind: CtTable) -> EbpfOutput {
    let model = model_of_source(SRC);
    let interp = Interp::new(&model);
    for v6 in [false, true] {
        let (f, r) = flow(v6, 1000);
        assert_eq!(interp.evaluate(&f).verdict, Verdict::Allow);
        assert_eq!(interp.evaluate(&r).verdict, Verdict::Deny);
    }
    let g = graph::build(&model);
    let opts = Options {
        mode: Mode::Node,
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

fn keys(m: &Map, size: u32) -> Vec<Vec<u8>> {
    let mut k = keys_raw(m, size as usize).unwrap();
    k.sort();
    k
}

#[test]
fn ebpf_conntrack_one_table_per_family() {
    if !have_root("ebpf_conntrack_one_table_per_family") {
        return;
    }
    for kind in [CtTable::Hash, CtTable::Lru] {
        let out = compile(kind);
        let gen = load_output(&out);
        let (ct6, ct4) = (
            gen.ebpf.map(names::CT).unwrap(),
            gen.ebpf.map(names::CT4).unwrap(),
        );
        for v6 in [false, true] {
            let (f, _) = flow(v6, 2000);
            assert_eq!(run(&gen, &frame(&f)), OK, "{kind:?} v6={v6}");
        }
        // Each flow in its family's table, keyed as the layout says.
        let (f4, r4) = flow(false, 2000);
        let (f6, r6) = flow(true, 2000);
        assert_eq!(
            keys(ct4, ct::v4::KEY_SIZE),
            [ct::v4::compact(&ct_key(&f4)).to_vec()],
            "{kind:?}: weir_ct4"
        );
        assert_eq!(keys(ct6, ct::KEY_SIZE), [ct_key(&f6)], "{kind:?}: weir_ct");
        // Established: the replies pass, through their own table only.
        for (r, m, key) in [
            (&r4, ct4, ct::v4::compact(&ct_key(&f4)).to_vec()),
            (&r6, ct6, ct_key(&f6)),
        ] {
            assert_eq!(run(&gen, &frame(r)), OK, "{kind:?}: {r:?}");
            weir_runtime::ebpf::load::delete_raw(m, &key).unwrap();
            assert_eq!(
                run(&gen, &frame(r)),
                SHOT,
                "{kind:?}: {r:?} without its entry"
            );
        }
        // An IPv4 flow's entry in the IPv6 table (the one table of an
        // earlier weir) does not count.
        let mut v = vec![0u8; ct::VALUE_SIZE as usize];
        v[..8].copy_from_slice(&(weir_runtime::ebpf::collect::monotonic_ns() & !7).to_ne_bytes());
        update_raw(ct6, &ct_key(&f4), &v).unwrap();
        assert_eq!(run(&gen, &frame(&r4)), SHOT, "{kind:?}: in the wrong table");
        update_raw(ct4, &ct::v4::compact(&ct_key(&f4)), &v).unwrap();
        assert_eq!(run(&gen, &frame(&r4)), OK, "{kind:?}: in its table");
    }
}

#[test]
fn ebpf_upgrade_moves_ipv4_flows_into_their_table() {
    if !have_root("ebpf_upgrade_moves_ipv4_flows_into_their_table") {
        return;
    }
    let out = compile(CtTable::Hash);
    weir_runtime::ebpf::pins::ensure_bpffs().unwrap_or_else(|e| panic!("bpffs: {e}"));
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/weir-test-ct-split-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // An earlier weir's instance: one pinned weir_ct (40-byte keys) of
    // the declared definition holding flows of both families, and no
    // weir_ct4. Made by loading the current object and unpinning its
    // weir_ct4.
    let first = weir_runtime::ebpf::load(&out.object, &out.manifest, Some(&dir))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(dir.join(names::CT4)).unwrap();
    let shared = first.ebpf.map(names::CT).unwrap();
    let mut v = vec![0u8; ct::VALUE_SIZE as usize];
    v[..8].copy_from_slice(&(weir_runtime::ebpf::collect::monotonic_ns() & !7).to_ne_bytes());
    let sports: Vec<u16> = (3000..3004).collect();
    for &s in &sports {
        for v6 in [false, true] {
            update_raw(shared, &ct_key(&flow(v6, s).0), &v).unwrap();
        }
    }

    let second = weir_runtime::ebpf::load(&out.object, &out.manifest, Some(&dir))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(dir.join(names::CT4).exists(), "weir_ct4 pinned");
    let (ct6, ct4) = (
        second.ebpf.map(names::CT).unwrap(),
        second.ebpf.map(names::CT4).unwrap(),
    );
    let mut want4: Vec<Vec<u8>> = sports
        .iter()
        .map(|&s| ct::v4::compact(&ct_key(&flow(false, s).0)).to_vec())
        .collect();
    want4.sort();
    assert_eq!(keys(ct4, ct::v4::KEY_SIZE), want4, "IPv4 flows moved");
    for k in &want4 {
        assert_eq!(
            lookup_raw(ct4, k, ct::VALUE_SIZE as usize).unwrap(),
            Some(v.clone()),
            "value kept"
        );
    }
    // The moved keys: what the apply removes from weir_ct after the
    // switch (until then the old generation still looks there).
    let mut moved = second.split_v4.clone();
    moved.sort();
    let mut want_moved: Vec<Vec<u8>> = sports.iter().map(|&s| ct_key(&flow(false, s).0)).collect();
    want_moved.sort();
    assert_eq!(moved, want_moved);
    // Established under the new generation, both families.
    for &s in &sports {
        for v6 in [false, true] {
            assert_eq!(
                run(&second, &frame(&flow(v6, s).1)),
                OK,
                "reply {s} v6={v6}"
            );
        }
    }
    assert_eq!(run(&second, &frame(&flow(false, 9999).1)), SHOT);
    // What the switch's clean-up leaves in weir_ct: the IPv6 flows.
    for k in &second.split_v4 {
        weir_runtime::ebpf::load::delete_raw(ct6, k).unwrap();
    }
    let mut want6: Vec<Vec<u8>> = sports.iter().map(|&s| ct_key(&flow(true, s).0)).collect();
    want6.sort();
    assert_eq!(keys(ct6, ct::KEY_SIZE), want6);

    // A later load over both pins moves nothing.
    let third = weir_runtime::ebpf::load(&out.object, &out.manifest, Some(&dir)).unwrap();
    assert!(third.split_v4.is_empty());
    drop((first, second, third));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The collector's IPv4 callback (`weir_gc_visit4`) reads a forward
/// entry's client end from the widened key whichever end it is: a
/// forward entry past its timeout whose flow (client ↔ backend, in
/// `weir_ct4`) lives stays, one whose flow is gone goes, with the client
/// the key's first end and its second (10.200.0.1 sorts after the
/// frontend 10.96.0.1).
#[test]
fn ebpf_collector_reads_ipv4_forward_entries_from_either_end() {
    use weir_runtime::ebpf::ct_tables;
    use weir_runtime::ebpf::gc;
    if !have_root("ebpf_collector_reads_ipv4_forward_entries_from_either_end") {
        return;
    }
    let out = compile(CtTable::Hash);
    let gen = load_output(&out);
    let maps = |n: &str| gen.ebpf.map(n);
    let cfg = gc::Config {
        budget: 0,
        ..gc::Config::default()
    };
    let t: u64 = 1 << 40;
    let (fe, backend) = ((ip("10.96.0.1"), 80u16), (ip("10.2.0.9"), 9090u16));
    let value = |time: u64, to: (IpAddr, u16), service: u32| {
        let mut v = vec![0u8; ct::VALUE_SIZE as usize];
        v[..8].copy_from_slice(&time.to_ne_bytes());
        let IpAddr::V4(a) = to.0 else { unreachable!() };
        v[ct::FE_ADDR as usize..][..4].copy_from_slice(&a.octets());
        v[ct::FE_PORT as usize..][..2].copy_from_slice(&to.1.to_ne_bytes());
        v[ct::SERVICE as usize..][..4].copy_from_slice(&service.to_ne_bytes());
        v
    };
    // Whether `p`'s source end is its canonical key's first end.
    let src_first = |p: &Packet| {
        let k = ct_key(p);
        let IpAddr::V4(a) = p.src else { unreachable!() };
        k[..4] == a.octets() && u16::from_ne_bytes([k[32], k[33]]) == p.sport
    };
    let mut forwards = Vec::new();
    for (client, sport, flow_lives) in [
        ("10.1.0.1", 5000, true),
        ("10.1.0.1", 5001, false),
        ("10.200.0.1", 5002, true),
        ("10.200.0.1", 5003, false),
    ] {
        let c = ip(client);
        let to_fe = Packet::new(Proto::Udp, c, sport, fe.0, fe.1);
        let cf = if src_first(&to_fe) {
            ct::CLIENT_FIRST as u64
        } else {
            0
        };
        let fwd = value(t | cf, backend, 1 | ct::FORWARD as u32);
        ct_tables::update(maps, &ct_key(&to_fe), &fwd, 0).unwrap();
        if flow_lives {
            let flow = Packet::new(Proto::Udp, c, sport, backend.0, backend.1);
            let cf = if src_first(&flow) {
                ct::CLIENT_FIRST as u64
            } else {
                0
            };
            // Busy long after the forward entry's timeout.
            let late = t + 10 * cfg.other.as_nanos() as u64;
            let v = value(late | ct::TRANSLATED as u64 | cf, fe, 1);
            ct_tables::update(maps, &ct_key(&flow), &v, 0).unwrap();
        }
        forwards.push((to_fe, flow_lives));
    }
    assert!(
        !src_first(&forwards[2].0),
        "a client on the key's second end"
    );
    let now = t + cfg.other.as_nanos() as u64 + 1;
    gc::sweep_at(&gen, cfg, now).unwrap();
    for (p, lives) in &forwards {
        let there = ct_tables::lookup(maps, &ct_key(p)).unwrap().is_some();
        assert_eq!(there, *lives, "forward entry of {p:?}");
    }
}

/// Through `weir apply`: over an instance whose pinned `weir_ct` holds an
/// IPv4 flow (and no `weir_ct4` is pinned, as an earlier weir left it),
/// the apply moves the flow into the pinned `weir_ct4` and, once the new
/// generation runs, removes it from `weir_ct`; an IPv6 flow stays there.
#[test]
fn ebpf_apply_moves_ipv4_flows_out_of_the_shared_table() {
    use weir_runtime::netns::Topology;
    let name = "ebpf_apply_moves_ipv4_flows_out_of_the_shared_table";
    if !weir_runtime::kernel_test::may_run(name, &["ip"]) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("ebpf-ct-split").unwrap();
    let dir = work.join("bundle");
    bundle_common::write_source(
        &dir,
        SRC,
        None,
        weir_compiler::bundle::Target::Ebpf,
        &Default::default(),
    );
    let topo = Topology::new().expect("netns topology");
    let inst = bundle_common::node_instance(&topo, "ct-split-apply", &work);
    weir_runtime::ebpf::apply(&dir, &inst).unwrap();
    let pinned = |n: &str| {
        Map::from_map_data(aya::maps::MapData::from_pin(inst.pin_dir().join(n)).unwrap()).unwrap()
    };
    std::fs::remove_file(inst.pin_dir().join(names::CT4)).unwrap();
    let ct6 = pinned(names::CT);
    let mut v = vec![0u8; ct::VALUE_SIZE as usize];
    v[..8].copy_from_slice(&(weir_runtime::ebpf::collect::monotonic_ns() & !7).to_ne_bytes());
    let (k4, k6) = (ct_key(&flow(false, 4000).0), ct_key(&flow(true, 4000).0));
    update_raw(&ct6, &k4, &v).unwrap();
    update_raw(&ct6, &k6, &v).unwrap();

    weir_runtime::ebpf::apply(&dir, &inst).unwrap();
    let ct4 = pinned(names::CT4);
    assert_eq!(
        keys(&ct4, ct::v4::KEY_SIZE),
        [ct::v4::compact(&k4).to_vec()],
        "the IPv4 flow in weir_ct4"
    );
    // The node's own IPv6 traffic on the link (MLD reports, neighbour
    // discovery) may add entries of its own: what matters is that no IPv4
    // flow is left in weir_ct and the IPv6 flow stayed.
    let left = keys(&ct6, ct::KEY_SIZE);
    assert!(
        left.contains(&k6),
        "the IPv6 flow stayed in weir_ct: {left:?}"
    );
    assert!(
        left.iter().all(|k| k[ct::FAMILY as usize] == 6),
        "only IPv6 flows left in weir_ct: {left:?}"
    );
    drop((ct4, ct6));
    weir_runtime::ebpf::detach(&inst).unwrap();
    for n in [names::CT, names::CT4] {
        assert!(!inst.pin_dir().join(n).exists(), "{n} unpinned by detach");
    }
}
