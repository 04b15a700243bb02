//! The first apply of the one-table layout (issue 21,
//! `weir_runtime::ebpf::migrate`): a generation of the older layout kept
//! its flows' translations in its own pinned `gen-N/weir_lb_ct`; before
//! the switch they are copied into the shared `weir_ct` as forward
//! entries, so an established translated flow keeps its backend across
//! the upgrade. Driven with BPF_PROG_TEST_RUN and read back from the
//! kernel: an older generation's `weir_lb_ct` (the standalone service
//! object's table of the same layout, pinned where an older generation
//! pinned it) holds a translation to a backend the new program would not
//! choose, beside the flow's `weir_ct` entry as the older program wrote
//! it; after the copy, the client's next packet goes to that backend and
//! is established (no new entry, no new choice). And through `weir
//! apply`: re-applying over a generation that has a pinned `weir_lb_ct`
//! leaves its translation in the shared `weir_ct` as a forward entry.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod bundle_common;
mod ebpf_common;

use std::net::IpAddr;
use std::path::PathBuf;

use ebpf_common::*;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::layout::{self, service as lb};
use weir_compiler::ebpf::service::object::service_object;
use weir_compiler::ebpf::write_object;
use weir_compiler::graph;
use weir_compiler::interp::Packet;
use weir_compiler::model::Proto;
use weir_runtime::ebpf::load::update_raw;
use weir_runtime::ebpf::migrate::lb_ct_to_forward;
use weir_runtime::frames::frame;

const SRC: &str = r#"
service web {
  frontend 10.96.0.1:80/tcp
  backends { 10.2.0.1:8080 }
}
"#;

/// An older generation's translation table pinned at `path` holding
/// 10.1.0.1:40000 → 10.96.0.1:80 translated to 10.2.0.9:9090.
fn pin_old_translations(
    cap: &weir_compiler::ebpf::service::Capacity,
    path: &std::path::Path,
) -> (aya::Ebpf, aya::maps::Map) {
    let old_obj = write_object(&service_object(cap)).unwrap();
    let mut old = aya::Ebpf::load(&old_obj).unwrap();
    let lbm = old.take_map(lb::map::CT).unwrap();
    lbm.pin(path).unwrap();
    update_raw(&lbm, &old_key(), &old_value()).unwrap();
    (old, lbm)
}

/// 10.1.0.1:40000 → 10.96.0.1:80 as `weir_lb_ct`'s key.
fn old_key() -> Vec<u8> {
    let mut key = vec![0u8; lb::tuple::SIZE as usize];
    key[0..16].copy_from_slice(&v4("10.1.0.1", 16));
    key[16..32].copy_from_slice(&v4("10.96.0.1", 16));
    key[32..34].copy_from_slice(&40000u16.to_ne_bytes());
    key[34..36].copy_from_slice(&80u16.to_ne_bytes());
    key[36] = 6;
    key[37] = 4;
    key
}

/// Backend 10.2.0.9:9090 (id 7), service 0, now.
fn old_value() -> Vec<u8> {
    let mut val = vec![0u8; lb::ct::VALUE_SIZE as usize];
    val[0..16].copy_from_slice(&v4("10.2.0.9", 16));
    val[16..18].copy_from_slice(&9090u16.to_ne_bytes());
    val[18] = 4;
    val[20..24].copy_from_slice(&7u32.to_ne_bytes());
    let now = weir_runtime::ebpf::collect::monotonic_ns();
    val[32..40].copy_from_slice(&now.to_ne_bytes());
    val
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(a: &str, len: usize) -> Vec<u8> {
    let IpAddr::V4(a) = ip(a) else { unreachable!() };
    let mut v = a.octets().to_vec();
    v.resize(len, 0);
    v
}

#[test]
fn ebpf_upgrade_copies_translations_into_forward_entries() {
    if !have_root("ebpf_upgrade_copies_translations_into_forward_entries") {
        return;
    }
    let model = model_of_source(SRC);
    let g = graph::build(&model);
    let out = compile(&model, &g, Mode::Node);
    assert!(!out.manifest.maps.iter().any(|m| m.name == lb::map::CT));
    let cap = out.manifest.lb.as_ref().expect("services").capacity;

    weir_runtime::ebpf::pins::ensure_bpffs().unwrap_or_else(|e| panic!("bpffs: {e}"));
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/weir-test-ct-upgrade-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let old_gen = dir.join("gen-1");
    std::fs::create_dir_all(&old_gen).unwrap();

    // The older generation's translation table, pinned as it pinned it:
    // 10.1.0.1:40000 → 10.96.0.1:80 went to 10.2.0.9:9090 (service 0).
    let (old, lbm) = pin_old_translations(&cap, &old_gen.join(lb::map::CT));
    let now = weir_runtime::ebpf::collect::monotonic_ns();

    // The new generation over the shared conntrack map, with the flow's
    // own entry as the older program wrote it (client ↔ backend,
    // translated, the frontend for replies).
    let gen = weir_runtime::ebpf::load(&out.object, &out.manifest, Some(&dir))
        .unwrap_or_else(|e| panic!("{e}"));
    let client_to_backend = Packet::new(Proto::Tcp, ip("10.1.0.1"), 40000, ip("10.2.0.9"), 9090);
    let ck = ct_key(&client_to_backend);
    let client_first = ck[0..4] == [10, 1, 0, 1];
    let mut fv = vec![0u8; layout::ct::VALUE_SIZE as usize];
    let time = (now & !7)
        | layout::ct::TRANSLATED as u64
        | if client_first {
            layout::ct::CLIENT_FIRST as u64
        } else {
            0
        };
    fv[0..8].copy_from_slice(&time.to_ne_bytes());
    fv[8..24].copy_from_slice(&v4("10.96.0.1", 16));
    fv[24..26].copy_from_slice(&80u16.to_ne_bytes());
    fv[28..32].copy_from_slice(&1u32.to_ne_bytes());
    let maps = |n: &str| gen.ebpf.map(n);
    weir_runtime::ebpf::ct_tables::update(maps, &ck, &fv, 0).unwrap();

    assert_eq!(
        lb_ct_to_forward(&old_gen, maps, &out.manifest).unwrap(),
        1,
        "one translation copied"
    );
    assert_eq!(lb_state_len(&gen), (1, 1));
    let p = Packet::new(Proto::Tcp, ip("10.1.0.1"), 40000, ip("10.96.0.1"), 80);
    let r = run_full(&gen, &frame(&p));
    assert_eq!(r.ret, layout::TC_ACT_OK as u32);
    let dst = (
        IpAddr::from([r.data[30], r.data[31], r.data[32], r.data[33]]),
        u16::from_be_bytes([r.data[36], r.data[37]]),
    );
    assert_eq!(dst, (ip("10.2.0.9"), 9090), "the flow's recorded backend");
    assert_eq!(ct_entries(&gen), 2, "established: nothing new written");
    // A copy again adds nothing (never overwrites).
    assert_eq!(lb_ct_to_forward(&old_gen, maps, &out.manifest).unwrap(), 0);

    drop((gen, lbm, old));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ebpf_apply_over_an_older_generation_copies_its_translations() {
    use weir_runtime::netns::Topology;
    if !weir_runtime::kernel_test::may_run(
        "ebpf_apply_over_an_older_generation_copies_its_translations",
        &["ip", "bpftool"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("ebpf-ct-upgrade").unwrap();
    let dir = work.join("bundle");
    bundle_common::write_source(
        &dir,
        SRC,
        None,
        weir_compiler::bundle::Target::Ebpf,
        &Default::default(),
    );
    let topo = Topology::new().expect("netns topology");
    let inst = bundle_common::node_instance(&topo, "upgrade", &work);
    let g1 = weir_runtime::ebpf::apply(&dir, &inst).unwrap().generation;
    // Make generation g1 look like the older layout: a pinned
    // translation table beside its maps.
    let model = model_of_source(SRC);
    let out = compile(&model, &graph::build(&model), Mode::Node);
    let cap = out.manifest.lb.as_ref().expect("services").capacity;
    let old_gen = inst.pin_dir().join(format!("gen-{g1}"));
    let (old, lbm) = pin_old_translations(&cap, &old_gen.join(lb::map::CT));
    let g2 = weir_runtime::ebpf::apply(&dir, &inst).unwrap().generation;
    assert!(g2 > g1);
    // The shared IPv4 conntrack map holds the forward entry.
    let ctm = aya::maps::Map::from_map_data(
        aya::maps::MapData::from_pin(inst.pin_dir().join(layout::map::CT4)).unwrap(),
    )
    .unwrap();
    let p = Packet::new(Proto::Tcp, ip("10.1.0.1"), 40000, ip("10.96.0.1"), 80);
    let fk = layout::ct::v4::compact(&ct_key(&p));
    let v = weir_runtime::ebpf::load::lookup_raw(&ctm, &fk, layout::ct::VALUE_SIZE as usize)
        .unwrap()
        .expect("the translation copied into weir_ct at the apply");
    assert!(is_forward(&v), "a forward entry");
    assert_eq!(&v[8..12], &[10, 2, 0, 9], "its backend");
    assert_eq!(u16::from_ne_bytes([v[24], v[25]]), 9090);
    drop((ctm, lbm, old));
    weir_runtime::ebpf::detach(&inst).unwrap();
}
