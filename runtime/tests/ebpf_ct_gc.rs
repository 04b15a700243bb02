//! The in-kernel conntrack collector of a non-LRU `weir_ct`
//! (`codegen::ct_gc`, `weir_runtime::ebpf::gc`; the rules in
//! docs/runtime.md "Non-LRU tables and the collector"), read back from the
//! kernel:
//!
//! - its rules, with the clock injected through the arming program's
//!   test run (no waiting): an idle entry goes one nanosecond after its
//!   protocol's timeout, not at it; TCP's timeout is its own; a seen entry
//!   is stamped with the sweep's time, its bit cleared, flags kept; a
//!   forward entry goes only once past its timeout *and* its flow's entry
//!   is gone;
//! - the budget: a firing stops after its budget and the next resumes
//!   after what it kept; a sweep completes only when the whole table was
//!   walked; arming over a table larger than the budget still reads back
//!   as armed (fails when the read-back wants a completed sweep);
//! - after a plain `weir apply` (no agent) the timer removes idle entries
//!   with no user-space process running, and `weir detach` removes the
//!   collector (its pin, and with its last reference the map and timer).
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod bundle_common;
mod ebpf_common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ebpf_common::*;
use weir_compiler::ebpf::codegen::{self, Mode, Options};
use weir_compiler::ebpf::layout::{self, ct};
use weir_compiler::ebpf::state_tables::{CtTable, StateTables};
use weir_compiler::graph;
use weir_compiler::interp::Packet;
use weir_compiler::model::Proto;
use weir_runtime::ebpf::ct_tables;
use weir_runtime::ebpf::gc;
use weir_runtime::ebpf::load::{delete_raw, lookup_raw, update_raw};

const SRC: &str = r#"
endpoint c  { labels { app: "c" }  addr 10.1.0.1 }
endpoint b1 { labels { app: "b" }  addr 10.2.0.1 }
policy b-in {
  applies to app == "b"
  ingress {
    allow tcp 8080 from app == "c"
    allow udp 53 from app == "c"
    deny
  }
}
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tables() -> StateTables {
    StateTables {
        conntrack: 64,
        translation: 8,
        kind: CtTable::Hash,
    }
}

/// A `weir_ct` value: time word (flags in its low bits), frontend (or,
/// for a forward entry, backend) address and port, service word.
fn value(time: u64, addr: Option<(IpAddr, u16)>, service: u32) -> Vec<u8> {
    let mut v = vec![0u8; ct::VALUE_SIZE as usize];
    v[..8].copy_from_slice(&time.to_ne_bytes());
    if let Some((IpAddr::V4(a), port)) = addr {
        v[ct::FE_ADDR as usize..ct::FE_ADDR as usize + 4].copy_from_slice(&a.octets());
        v[ct::FE_PORT as usize..ct::FE_PORT as usize + 2].copy_from_slice(&port.to_ne_bytes());
    }
    v[ct::SERVICE as usize..ct::SERVICE as usize + 4].copy_from_slice(&service.to_ne_bytes());
    v
}

/// Whether `p`'s source is its canonical key's first end.
fn client_first(p: &Packet) -> bool {
    let IpAddr::V4(a) = p.src else { unreachable!() };
    let k = ct_key(p);
    k[..4] == a.octets() && u16::from_ne_bytes([k[32], k[33]]) == p.sport
}

#[test]
fn ebpf_ct_gc_rules_at_an_injected_clock() {
    if !have_root("ebpf_ct_gc_rules_at_an_injected_clock") {
        return;
    }
    let model = model_of_source(SRC);
    let g = graph::build(&model);
    let out = codegen::generate(
        &model,
        &g,
        &Options {
            mode: Mode::Node,
            tables: tables(),
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let gen = load_output(&out);
    // Each family's entries in its own table (`ct_tables`): the IPv4
    // flows below are in weir_ct4, visited by its own callback.
    let maps = |n: &str| gen.ebpf.map(n);
    let put = |k: &[u8], v: &[u8]| ct_tables::update(maps, k, v, 0).unwrap();
    let cfg = gc::Config {
        budget: 0,
        ..gc::Config::default()
    };
    let (tcp, other) = (cfg.tcp.as_nanos() as u64, cfg.other.as_nanos() as u64);
    let t: u64 = 1 << 40;
    let seen = ct::SEEN as u64;
    let flags = (ct::TRANSLATED | ct::CLIENT_FIRST) as u64;
    let udp = |sport| Packet::new(Proto::Udp, ip("10.1.0.1"), sport, ip("10.2.0.1"), 53);
    let tcp_p = |sport| Packet::new(Proto::Tcp, ip("10.1.0.1"), sport, ip("10.2.0.1"), 8080);
    let (u_idle, t_idle, busy) = (udp(1000), tcp_p(1001), udp(1002));
    put(&ct_key(&u_idle), &value(t, None, 0));
    put(&ct_key(&t_idle), &value(t, None, 0));
    put(&ct_key(&busy), &value(t | seen | flags, None, 0));
    // Forward entries (client ↔ frontend; backend in the value): one
    // whose flow lives, one whose flow is gone, one too young to go.
    let backend = (ip("10.2.0.1"), 8080u16);
    let fwd = |p: &Packet, time: u64| {
        let cf = if client_first(p) {
            ct::CLIENT_FIRST as u64
        } else {
            0
        };
        let svc = 1 | ct::FORWARD as u32;
        put(&ct_key(p), &value(time | cf, Some(backend), svc));
    };
    let to_fe = |proto, sport| Packet::new(proto, ip("10.1.0.1"), sport, ip("10.96.0.1"), 80);
    let (f_live, f_gone, f_young) = (
        to_fe(Proto::Tcp, 2000),
        to_fe(Proto::Udp, 2001),
        to_fe(Proto::Udp, 2002),
    );
    fwd(&f_live, t);
    fwd(&f_gone, t);
    fwd(&f_young, t + other);
    // f_live's flow: client ↔ backend, translated, busy long after.
    let flow = Packet::new(Proto::Tcp, ip("10.1.0.1"), 2000, backend.0, backend.1);
    let flow_cf = if client_first(&flow) { 2 } else { 0 };
    put(
        &ct_key(&flow),
        &value((t + tcp) | 1 | flow_cf, Some((ip("10.96.0.1"), 80)), 1),
    );
    let present = |p: &Packet| ct_tables::lookup(maps, &ct_key(p)).unwrap().is_some();
    let time_of = |p: &Packet| {
        let v = ct_tables::lookup(maps, &ct_key(p))
            .unwrap()
            .expect("an entry");
        u64::from_ne_bytes(v[..8].try_into().unwrap())
    };
    let all = [&u_idle, &t_idle, &busy, &f_live, &f_gone, &f_young, &flow];
    let alive = || all.iter().map(|p| present(p)).collect::<Vec<_>>();

    // At exactly the UDP timeout: nothing goes; the busy entry is stamped.
    let now = t + other;
    let s = gc::sweep_at(&gen, cfg, now).unwrap();
    assert_eq!((s.removed, s.last_visited, s.sweeps), (0, 7, 1), "{s:?}");
    assert_eq!(s.last_sweep_ns, now);
    assert_eq!(alive(), [true; 7]);
    assert_eq!(time_of(&busy), (now & !7) | flags, "stamped, bit cleared");
    // 1 ns later: the idle UDP entry and the forward entry whose flow is
    // gone; TCP's own timeout keeps its entry; the stamped one is fresh.
    let s = gc::sweep_at(&gen, cfg, now + 1).unwrap();
    assert_eq!(s.removed, 2, "{s:?}");
    assert_eq!(alive(), [false, true, true, true, false, true, true]);
    // Past the TCP timeout: the TCP entry, the busy one (idle since its
    // stamp), the young forward entry; f_live stays while its flow is.
    let late = t + tcp + 1;
    let s = gc::sweep_at(&gen, cfg, late).unwrap();
    assert_eq!(s.removed, 5, "{s:?}");
    assert_eq!(alive(), [false, false, false, true, false, false, true]);
    // Its flow gone, the forward entry goes too.
    ct_tables::delete(maps, &ct_key(&flow)).unwrap();
    let s = gc::sweep_at(&gen, cfg, late).unwrap();
    assert_eq!(s.removed, 6, "{s:?}");
    assert_eq!(alive(), [false; 7]);
    assert_eq!(s.sweeps, 4);

    // The budget: 2 a firing. Five fresh entries (kept), three IPv6
    // (weir_ct, walked first) and two IPv4 (weir_ct4): the tables are one
    // sequence; the firings walk 2, 2 + 2, 4 + 1 (the walk resumes after
    // what was kept); only the third completes a sweep.
    let bounded = gc::Config { budget: 2, ..cfg };
    let mixed = |sport: u16| {
        if sport < 3003 {
            Packet::new(Proto::Udp, ip("fd00:1::1"), sport, ip("fd00:2::1"), 53)
        } else {
            udp(sport)
        }
    };
    for sport in 3000..3005 {
        put(&ct_key(&mixed(sport)), &value(late & !7, None, 0));
    }
    let walked = |s: gc::State| (s.last_visited, s.sweeps, s.removed);
    let f = || gc::sweep_at(&gen, bounded, late).unwrap();
    assert_eq!(walked(f()), (2, 4, 6));
    assert_eq!(walked(f()), (4, 4, 6));
    assert_eq!(walked(f()), (5, 5, 6));
    // Five idle ones: each firing removes what it walked, so each resumes
    // at the start: 2, 2, 1 removed, one sweep.
    let later = late + other + 1;
    assert_eq!(
        walked(gc::sweep_at(&gen, bounded, later).unwrap()),
        (2, 5, 8)
    );
    assert_eq!(
        walked(gc::sweep_at(&gen, bounded, later).unwrap()),
        (2, 5, 10)
    );
    assert_eq!(
        walked(gc::sweep_at(&gen, bounded, later).unwrap()),
        (1, 6, 11)
    );
    assert_eq!(ct_all(&gen).len(), 0);

    // Arming (what `weir apply` does) over a table larger than the
    // budget: the run's walk stops at the budget, no sweep completes,
    // and the apply still reads the collector back as armed.
    for sport in 3000..3005 {
        put(&ct_key(&udp(sport)), &value(late & !7, None, 0));
    }
    let s = gc::arm(&gen, bounded).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.last_visited, s.sweeps), (2, 6), "{s:?}");
}

/// The workqueue path without the timer: a kick queues the work, which
/// sweeps in a kernel worker at the kick's injected clock, one budget a
/// firing, re-queueing itself until the sweep is complete.
#[test]
fn ebpf_ct_gc_work_sweeps_without_the_timer_at_an_injected_clock() {
    if !weir_runtime::kernel_test::may_run(
        "ebpf_ct_gc_work_sweeps_without_the_timer_at_an_injected_clock",
        &[],
    ) {
        return;
    }
    let model = model_of_source(SRC);
    let g = graph::build(&model);
    let out = codegen::generate(
        &model,
        &g,
        &Options {
            mode: Mode::Node,
            tables: tables(),
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let gen = load_output(&out);
    // IPv4 flows: in weir_ct4 (`ct_tables`).
    let maps = |n: &str| gen.ebpf.map(n);
    // Armed with an hour's interval: in this test only kicks sweep.
    let cfg = gc::Config {
        interval: Duration::from_secs(3600),
        budget: 2,
        ..gc::Config::default()
    };
    let before = gc::arm_only(&gen, cfg).unwrap_or_else(|e| panic!("{e}"));
    let other = cfg.other.as_nanos() as u64;
    // Five entries idle at the injected time, one fresh at it; the
    // kernel's own clock (far from 2^41) would judge them otherwise.
    let t: u64 = 1 << 41;
    let now = t + other + 1;
    let udp = |sport| Packet::new(Proto::Udp, ip("10.1.0.1"), sport, ip("10.2.0.1"), 53);
    for sport in 5000..5005 {
        ct_tables::update(maps, &ct_key(&udp(sport)), &value(t, None, 0), 0).unwrap();
    }
    let fresh = udp(5005);
    ct_tables::update(maps, &ct_key(&fresh), &value(now & !7, None, 0), 0).unwrap();
    // The kick only queues the work (the worker may be done before the
    // run's read-back).
    gc::kick(&gen, cfg, now).unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let mut s = gc::state(&gen.ebpf).unwrap();
    while s.sweeps == before.sweeps && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        s = gc::state(&gen.ebpf).unwrap();
    }
    assert_eq!(
        s.sweeps,
        before.sweeps + 1,
        "the work completed a sweep: {s:?}"
    );
    assert_eq!(s.last_sweep_ns, now, "at the injected clock");
    assert_eq!(s.removed - before.removed, 5, "{s:?}");
    // Six entries at two a firing: the work re-queued itself.
    assert!(s.firings - before.firings >= 3, "{s:?}");
    let keys: Vec<Vec<u8>> = ct_all(&gen).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![ct_key(&fresh).to_vec()]);
}

/// The kfuncs' BTF ids as the runtime reads them from vmlinux agree with
/// bpftool's reading of the same BTF; a kfunc the kernel lacks is named
/// in the refusal.
#[test]
fn ebpf_ct_gc_kfunc_ids_agree_with_bpftool() {
    if !weir_runtime::kernel_test::may_run("ebpf_ct_gc_kfunc_ids_agree_with_bpftool", &["bpftool"])
    {
        return;
    }
    let names: Vec<&str> = weir_compiler::ebpf::kfunc::KNOWN
        .iter()
        .map(|k| k.name)
        .collect();
    let ids = weir_runtime::ebpf::kfunc::vmlinux_ids(&names).unwrap_or_else(|e| panic!("{e}"));
    let dump = std::process::Command::new("bpftool")
        .args(["btf", "dump", "file", weir_runtime::ebpf::kfunc::VMLINUX])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dump.stdout);
    for n in &names {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("] FUNC '{n}' ")))
            .unwrap_or_else(|| panic!("bpftool shows no FUNC {n}"));
        let id: u32 = line[1..line.find(']').unwrap()].parse().unwrap();
        assert_eq!(ids[*n], id, "{n}");
    }
    let e = weir_runtime::ebpf::kfunc::vmlinux_ids(&["bpf_wq_init", "weir_no_such_kfunc"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("E0555: this kernel has no kernel function `weir_no_such_kfunc`"),
        "{e}"
    );
}

/// Ids of live BPF maps (`bpftool map show`).
fn map_alive(id: u32) -> bool {
    std::process::Command::new("bpftool")
        .args(["map", "show", "id", &id.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn ebpf_ct_gc_timer_collects_after_a_plain_apply_and_detach_removes_it() {
    use weir_runtime::netns::Topology;
    if !weir_runtime::kernel_test::may_run(
        "ebpf_ct_gc_timer_collects_after_a_plain_apply_and_detach_removes_it",
        &["ip", "bpftool"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("ebpf-ct-gc").unwrap();
    let dir = work.join("bundle");
    bundle_common::write_source(
        &dir,
        SRC,
        None,
        weir_compiler::bundle::Target::Ebpf,
        &tables().into(),
    );
    let topo = Topology::new().expect("netns topology");
    let inst = bundle_common::node_instance(&topo, "ctgc", &work);
    let applied = weir_runtime::ebpf::apply(&dir, &inst).unwrap();
    // The apply claims an armed collector: its sweep read back.
    let c = applied.collector.expect("a collector with hash tables");
    assert!(c.sweeps >= 1 && c.last_sweep_ns > 0, "{c:?}");
    assert_eq!(c.interval_ns, 10_000_000_000);
    let pin = inst.pin_dir().join(layout::gc::MAP);
    let gcm = aya::maps::MapData::from_pin(&pin).unwrap();
    let gc_id = gcm.info().unwrap().id();
    drop(gcm);
    let ctm = aya::maps::Map::from_map_data(
        aya::maps::MapData::from_pin(inst.pin_dir().join(layout::map::CT4)).unwrap(),
    )
    .unwrap();
    // IPv4 flows: in the pinned weir_ct4, keys compacted.
    let key4 = |p: &Packet| ct::v4::compact(&ct_key(p));
    // A stale UDP entry (inserted at clock 1 ns) and a fresh one.
    let stale = Packet::new(Proto::Udp, ip("10.1.0.1"), 4000, ip("10.2.0.1"), 53);
    let fresh = Packet::new(Proto::Udp, ip("10.1.0.1"), 4001, ip("10.2.0.1"), 53);
    update_raw(&ctm, &key4(&stale), &value(1, None, 0)).unwrap();
    let now = weir_runtime::ebpf::collect::monotonic_ns();
    update_raw(&ctm, &key4(&fresh), &value(now & !7, None, 0)).unwrap();
    // Re-armed with a short interval, no sweep now: from here only the
    // kernel's timer acts.
    let short = gc::Config {
        interval: Duration::from_millis(50),
        ..gc::Config::default()
    };
    let armed = gc::rearm(&inst, short, false).unwrap();
    let present = |p: &Packet| {
        lookup_raw(&ctm, &key4(p), ct::VALUE_SIZE as usize)
            .unwrap()
            .is_some()
    };
    assert!(present(&stale), "no sweep at the re-arm");
    let start = Instant::now();
    while present(&stale) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!present(&stale), "the timer removed the idle entry");
    assert!(present(&fresh), "a fresh entry stays");
    let s = weir_runtime::ebpf::status(&inst).unwrap();
    let st = s.collector.expect("status shows the collector");
    assert!(
        st.sweeps > armed.sweeps && st.removed > armed.removed,
        "{st:?}"
    );
    drop(ctm);
    // Detach: the pin goes, and with it the map and its timer.
    weir_runtime::ebpf::detach(&inst).unwrap();
    assert!(!pin.exists());
    let start = Instant::now();
    while map_alive(gc_id) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !map_alive(gc_id),
        "map {gc_id} (and its timer) outlived detach"
    );

    // hash → lru by `weir apply`: the LRU generation has no collector,
    // and the pinned one goes (with its timer).
    let c = weir_runtime::ebpf::apply(&dir, &inst).unwrap().collector;
    assert!(c.is_some());
    let gc_id = aya::maps::MapData::from_pin(&pin)
        .unwrap()
        .info()
        .unwrap()
        .id();
    let lru = StateTables {
        kind: CtTable::Lru,
        ..tables()
    };
    bundle_common::write_source(
        &dir,
        SRC,
        None,
        weir_compiler::bundle::Target::Ebpf,
        &lru.into(),
    );
    let applied = weir_runtime::ebpf::apply(&dir, &inst).unwrap();
    assert_eq!(applied.collector, None);
    assert!(!pin.exists(), "the collector's pin outlived the hash table");
    let start = Instant::now();
    while map_alive(gc_id) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!map_alive(gc_id), "map {gc_id} outlived the switch to lru");
    weir_runtime::ebpf::detach(&inst).unwrap();
}

/// How long one firing takes on the default 524,288-entry table at 25 %
/// and 100 % fill (figures for docs/runtime.md; no assertion on time).
/// Run by hand: `cargo test -p weir-runtime --test ebpf_ct_gc -- --ignored
/// --nocapture sweep_time`.
#[test]
#[ignore]
fn ebpf_ct_gc_sweep_time() {
    if !have_root("ebpf_ct_gc_sweep_time") {
        return;
    }
    let model = model_of_source(SRC);
    let g = graph::build(&model);
    let out = codegen::generate(
        &model,
        &g,
        &Options {
            mode: Mode::Node,
            tables: StateTables {
                kind: CtTable::Hash,
                ..StateTables::default()
            },
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let gen = load_output(&out);
    let m = gen.ebpf.map(layout::map::CT4).unwrap();
    let size = StateTables::default().conntrack as usize;
    let t: u64 = 1 << 40;
    let key = |i: usize| {
        let mut k = vec![0u8; ct::KEY_SIZE as usize];
        k[..4].copy_from_slice(&[10, 1, (i >> 8) as u8, i as u8]);
        k[16..20].copy_from_slice(&[10, 2, (i >> 16) as u8, 1]);
        k[32..34].copy_from_slice(&(i as u16).to_ne_bytes());
        k[36] = 17;
        k[37] = 4;
        ct::v4::compact(&k).to_vec()
    };
    for fill in [size / 4, size] {
        let put = |time: u64| {
            for i in 0..fill {
                update_raw(m, &key(i), &value(time, None, 0)).unwrap();
            }
        };
        for (what, time, now) in [
            ("fresh (nothing to do)", t, t + 1),
            ("all seen (stamp)", t | ct::SEEN as u64, t + 1),
            ("all idle (delete)", t, t + (1 << 38)),
        ] {
            put(time);
            for budget in [0, gc::BUDGET] {
                let cfg = gc::Config {
                    budget,
                    ..gc::Config::default()
                };
                let start = gc::state(&gen.ebpf).unwrap().sweeps;
                let (mut firings, mut max, mut total) = (0, 0, 0);
                loop {
                    let s = gc::sweep_at(&gen, cfg, now).unwrap();
                    firings += 1;
                    max = max.max(s.last_duration_ns);
                    total += s.last_duration_ns;
                    if s.sweeps > start || firings > 1000 {
                        break;
                    }
                }
                println!(
                    "fill {fill:>6} {what:<22} budget {budget:>6}: {firings:>3} firing(s), \
                     longest {:.3} ms, total {:.3} ms",
                    max as f64 / 1e6,
                    total as f64 / 1e6
                );
                put(time);
            }
        }
        // The same sweeps by the workqueue (kicked, the test thread and
        // so the worker on CPU 0): each firing's length (the value's
        // longest, reset first) and where CPU 0's time went by the
        // kernel's own accounting (/proc/stat: softirq vs system).
        pin_to_cpu0();
        for (what, time, now) in [
            ("fresh (nothing to do)", t, t + 1),
            ("all idle (delete)", t, t + (1 << 38)),
        ] {
            put_all(m, fill, &key, time);
            let cfg = gc::Config {
                interval: std::time::Duration::from_secs(3600),
                ..gc::Config::default()
            };
            // (A write of the value frees its timer and workqueue:
            // reset first, then arm.)
            reset_max(m_gc(&gen));
            gc::arm_only(&gen, cfg).unwrap();
            let before = gc::state(&gen.ebpf).unwrap();
            let cpu = cpu0_ticks();
            let started = Instant::now();
            gc::kick(&gen, cfg, now).unwrap();
            let mut s = before;
            while s.sweeps == before.sweeps && started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_micros(200));
                s = gc::state(&gen.ebpf).unwrap();
            }
            let wall = started.elapsed();
            let after = cpu0_ticks();
            println!(
                "wq: fill {fill:>6} {what:<22} budget {:>6}: {:>3} firing(s), longest {:.3} ms, \
                 sweep done in {:.1} ms; CPU 0 ticks (1/{} s) softirq +{} system +{}",
                gc::BUDGET,
                s.firings - before.firings,
                s.max_duration_ns as f64 / 1e6,
                wall.as_secs_f64() * 1e3,
                unsafe { libc::sysconf(libc::_SC_CLK_TCK) },
                after.0 - cpu.0,
                after.1 - cpu.1,
            );
        }
        // Packet latency on CPU 0 and CPU 1 (ping over a veth pair,
        // pinned) for 3 s without sweeps, then for 3 s of back-to-back
        // sweeps (nothing to do) by the workqueue on CPU 0.
        if fill == size {
            put_all(m, fill, &key, t);
            let cfg = gc::Config {
                interval: std::time::Duration::from_secs(3600),
                ..gc::Config::default()
            };
            gc::arm_only(&gen, cfg).unwrap();
            let _veth = Veth::new();
            for cpu in ["0", "1"] {
                let quiet = ping(cpu);
                let pinger = std::thread::spawn(move || ping(cpu));
                let start = Instant::now();
                let mut sweeps = 0;
                while start.elapsed() < Duration::from_millis(3000) {
                    let before = gc::state(&gen.ebpf).unwrap().sweeps;
                    gc::kick(&gen, cfg, t + 1).unwrap();
                    while gc::state(&gen.ebpf).unwrap().sweeps == before {
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    sweeps += 1;
                }
                let busy = pinger.join().unwrap();
                println!(
                    "ping pinned to CPU {cpu}: quiet {quiet}; during {sweeps} wq sweeps of {fill}: {busy}"
                );
            }
        }
        for i in 0..fill {
            let _ = delete_raw(m, &key(i));
        }
    }
}

/// A veth pair between two namespaces, 10.99.0.1 and .2.
struct Veth;

impl Veth {
    fn new() -> Veth {
        let sh = |c: &str| {
            let o = std::process::Command::new("sh")
                .args(["-c", c])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{c}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", "gcwq-a"])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", "gcwq-b"])
            .output();
        sh("ip netns add gcwq-a && ip netns add gcwq-b \
            && ip link add gcwq-va netns gcwq-a type veth peer name gcwq-vb netns gcwq-b \
            && ip -n gcwq-a addr add 10.99.0.1/24 dev gcwq-va && ip -n gcwq-a link set gcwq-va up \
            && ip -n gcwq-b addr add 10.99.0.2/24 dev gcwq-vb && ip -n gcwq-b link set gcwq-vb up");
        Veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", "gcwq-a"])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", "gcwq-b"])
            .output();
    }
}

/// 3 s of pings every 2 ms from a process pinned to `cpu`: ping's
/// `rtt min/avg/max/mdev` line.
fn ping(cpu: &str) -> String {
    let o = std::process::Command::new("taskset")
        .args([
            "-c", cpu, "ip", "netns", "exec", "gcwq-a", "ping", "-q", "-i", "0.002", "-w", "3",
        ])
        .arg("10.99.0.2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    text.lines()
        .filter(|l| l.contains("rtt") || l.contains("received"))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn put_all(m: &aya::maps::Map, fill: usize, key: &dyn Fn(usize) -> Vec<u8>, time: u64) {
    for i in 0..fill {
        update_raw(m, &key(i), &value(time, None, 0)).unwrap();
    }
}

fn m_gc(gen: &weir_runtime::ebpf::Generation) -> &aya::maps::Map {
    gen.ebpf.map(layout::gc::MAP).unwrap()
}

/// Zeroes the collector's longest firing (the kernel frees the value's
/// timer and workqueue on the write: arm again after it).
fn reset_max(m: &aya::maps::Map) {
    let mut v = lookup_raw(m, &0u32.to_ne_bytes(), layout::gc::VALUE_SIZE as usize)
        .unwrap()
        .unwrap();
    let at = layout::gc::MAX_DURATION as usize;
    v[at..at + 8].fill(0);
    update_raw(m, &0u32.to_ne_bytes(), &v).unwrap();
}

fn pin_to_cpu0() {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU 0's (softirq, system) ticks from /proc/stat.
fn cpu0_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let line = stat.lines().find(|l| l.starts_with("cpu0 ")).unwrap();
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    (f[6], f[2])
}
