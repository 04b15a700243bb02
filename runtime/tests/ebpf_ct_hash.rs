//! The non-LRU per-flow tables (`weir compile --ct-table hash`, issue
//! 21): a program with a tiny preallocated `weir_ct` hash (two entries per
//! translated flow),
//! driven with BPF_PROG_TEST_RUN and read back from the kernel:
//!
//! - a full `weir_ct` denies the next new flow (the interpreter allows
//!   it) and counts it in the `table full` slot of `weir_cnt`, not under
//!   the rule that allowed it; established flows still pass;
//! - a new service flow whose forward entry does not fit (its flow entry
//!   did) is denied the same way and leaves no `weir_ct` entry behind;
//! - an established packet marks its entry seen (flags kept);
//! - the in-kernel collector (`codegen::ct_gc`, one sweep at an injected
//!   clock through `weir_runtime::ebpf::gc::sweep_at`) removes nothing
//!   fresh, removes idle entries and their translations' forward
//!   entries, and then the denied flows pass.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::net::IpAddr;

use ebpf_common::*;
use weir_compiler::ebpf::codegen::{self, Mode, Options};
use weir_compiler::ebpf::layout;
use weir_compiler::ebpf::layout::service::map as lb;
use weir_compiler::ebpf::state_tables::{CtTable, StateTables};
use weir_compiler::graph;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Proto, Verdict};
use weir_runtime::ebpf::collect::monotonic_ns;
use weir_runtime::ebpf::ct_tables;
use weir_runtime::ebpf::gc;
use weir_runtime::ebpf::load::counters;

const SRC: &str = r#"
endpoint c  { labels { app: "c" }  addr 10.1.0.1 }
endpoint b1 { labels { app: "b" }  addr 10.2.0.1 }
endpoint b2 { labels { app: "b" }  addr 10.2.0.2 }
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

const CT: u32 = 24;
/// Translated flows written first (two `weir_ct` entries each).
const SVC: u32 = 8;
const OK: u32 = layout::TC_ACT_OK as u32;
const SHOT: u32 = layout::TC_ACT_SHOT as u32;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ebpf_full_hash_tables_deny_count_and_recover_after_collection() {
    if !have_root("ebpf_full_hash_tables_deny_count_and_recover_after_collection") {
        return;
    }
    let model = model_of_source(SRC);
    let g = graph::build(&model);
    let interp = Interp::new(&model);
    let tables = StateTables {
        conntrack: CT,
        translation: 8,
        kind: CtTable::Hash,
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
    assert_eq!(out.manifest.state_tables, tables);
    // One table per family, each of the declared size (these flows are
    // IPv4: weir_ct4).
    for name in [layout::map::CT, layout::map::CT4] {
        let m = out.manifest.maps.iter().find(|m| m.name == name).unwrap();
        assert_eq!((m.map_type.as_str(), m.max_entries), ("hash", CT));
    }
    // No translation table of its own: forward entries are in weir_ct.
    assert!(!out.manifest.maps.iter().any(|m| m.name == lb::CT));
    let gen = load_output(&out);
    let gen = gen;
    let full_id = g.provenance.len();
    let n = out.manifest.counters + 1;
    let count = |i: usize| -> u64 { counters(&gen.ebpf, n).unwrap()[i] };

    let plain = |sport: u16| Packet::new(Proto::Tcp, ip("10.1.0.1"), sport, ip("10.2.0.1"), 8080);
    let service = |sport: u16| Packet::new(Proto::Tcp, ip("10.1.0.1"), sport, ip("10.96.0.1"), 80);
    let allowed = |p: &Packet| assert_eq!(interp.evaluate(p).verdict, Verdict::Allow, "{p:?}");

    // New service flows: two weir_ct entries each (flow and forward).
    for sport in 1000..1000 + SVC as u16 {
        allowed(&service(sport));
        assert_eq!(run(&gen, &frame(&service(sport))), OK, "service {sport}");
    }
    assert_eq!(lb_state_len(&gen), (SVC as usize, SVC as usize));
    // Plain flows up to one entry short of full.
    for sport in 3000..3000 + (CT - 2 * SVC - 1) as u16 {
        assert_eq!(run(&gen, &frame(&plain(sport))), OK, "plain {sport}");
    }
    assert_eq!(ct_entries(&gen), CT as usize - 1);
    // A service flow now: its flow entry fits, its forward entry does
    // not → denied, counted, and no half-written flow left behind.
    let over = service(1000 + SVC as u16);
    allowed(&over);
    assert_eq!(run(&gen, &frame(&over)), SHOT, "forward entry does not fit");
    assert_eq!(count(full_id), 1);
    assert_eq!(lb_state_len(&gen), (SVC as usize, SVC as usize));
    assert_eq!(ct_entries(&gen), CT as usize - 1, "a half-written flow");
    // One more plain flow fills the table; the next is denied.
    let last = plain(3000 + (CT - 2 * SVC - 1) as u16);
    assert_eq!(run(&gen, &frame(&last)), OK);
    assert_eq!(ct_entries(&gen), CT as usize);
    let denied_before: u64 = (0..full_id).map(count).sum();
    let next = plain(5000);
    allowed(&next);
    assert_eq!(run(&gen, &frame(&next)), SHOT, "conntrack table full");
    assert_eq!(count(full_id), 2);
    // Counted only as `table full`: no provenance counter moved.
    assert_eq!((0..full_id).map(count).sum::<u64>(), denied_before);
    // An established service flow still passes (two hits) and is not
    // judged again.
    assert_eq!(
        run(&gen, &frame(&service(1000))),
        OK,
        "established service flow"
    );
    assert_eq!(count(full_id), 2);
    // Established flows (an entry each) still pass, and mark their entry
    // seen (flags kept).
    // An IPv4 flow: in weir_ct4 (`ct_tables` picks the table).
    let time = |p: &Packet| {
        let v = ct_tables::lookup(|n| gen.ebpf.map(n), &ct_key(p))
            .unwrap()
            .expect("an entry");
        u64::from_ne_bytes(v[..8].try_into().unwrap())
    };
    let seen = layout::ct::SEEN as u64;
    let t0 = time(&plain(3000));
    assert_eq!(t0 & seen, 0, "a new entry is not seen yet");
    assert_eq!(run(&gen, &frame(&plain(3000))), OK);
    assert_eq!(
        time(&plain(3000)),
        t0 | seen,
        "not marked seen, or flags changed"
    );

    // The collector: fresh entries stay; a seen one is stamped with the
    // collector's time, its bit cleared.
    let now0 = monotonic_ns();
    let t = gc::Config::default();
    let c = gc::sweep_at(&gen, t, now0).unwrap();
    let flows = CT as usize - SVC as usize;
    assert_eq!((c.last_visited, c.removed), (CT as u64, 0), "{c:?}");
    let time = |p: &Packet| {
        let v = ct_tables::lookup(|n| gen.ebpf.map(n), &ct_key(p))
            .unwrap()
            .expect("an entry");
        u64::from_ne_bytes(v[..8].try_into().unwrap())
    };
    assert_eq!(time(&plain(3000)), (now0 & !7) | (t0 & 3));
    // One flow busy again; the collector's clock one TCP timeout and
    // 1 ns later (no waiting): every other entry has been idle longer
    // and goes; translations with their flows, at the latest in the
    // sweep after (the walk may meet a forward entry before its flow's).
    assert_eq!(run(&gen, &frame(&plain(3001))), OK);
    let later = now0 + t.tcp.as_nanos() as u64 + 1;
    gc::sweep_at(&gen, t, later).unwrap();
    let c = gc::sweep_at(&gen, t, later).unwrap();
    assert_eq!(c.removed, (flows - 1 + SVC as usize) as u64, "{c:?}");
    assert_eq!(ct_entries(&gen), 1);
    assert_eq!(lb_state_len(&gen), (0, 0));
    // Room again: the denied flows pass now.
    assert_eq!(run(&gen, &frame(&next)), OK);
    assert_eq!(run(&gen, &frame(&over)), OK);
    assert_eq!(count(full_id), 2);
}
