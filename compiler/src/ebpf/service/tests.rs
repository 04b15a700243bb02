use std::net::IpAddr;
use std::path::PathBuf;

use super::fill::{decode_be, decode_fe, fe_key, maglev_table, slot_key, weighted_slots};
use super::layout::{map, FLAG_AFFINITY, FLAG_MAGLEV, MAGLEV_M};
use super::*;
use crate::driver::analyze;
use crate::flowhash::flow_hash;
use crate::graph::Graph;
use crate::interp::{Interp, Packet};
use crate::model::{Frontend, Model, Proto};
use crate::provenance::Provenance;
use crate::source::MemoryLoader;

pub(crate) fn compile(src: &str) -> (Model, Graph) {
    let loader = MemoryLoader::new().with("main.weir", src);
    let a = analyze(&[PathBuf::from("main.weir")], &loader, None);
    assert!(!a.checked.has_errors(), "{:?}", a.checked.diagnostics);
    (a.checked.model, a.compiled.expect("compiled").graph)
}

const SRC: &str = r#"
service web {
  frontend 10.96.0.1:80/tcp
  frontend 10.96.0.1:53/udp
  backends { 10.1.0.1:8080 weight 3, 10.1.0.2:8080, 10.1.0.3:8080 weight 0 }
}
service db {
  frontend 10.96.0.2:5432/tcp
  backends { 10.2.0.1:5432, 10.2.0.2:5432, 10.2.0.3:5432 }
  balance maglev
  affinity client-ip 1h
}
service empty {
  frontend 10.96.0.3:80/tcp
  backends { 10.3.0.1:80 weight 0 }
}
"#;

fn state(g: &Graph) -> LbState {
    let prov = g.provenance.clone();
    LbState::new(
        &g.services,
        &|s| prov.id(&Provenance::NoBackends { service: s }),
        &Options::default(),
    )
}

fn fe(addr: &str, port: u16, proto: Proto) -> Frontend {
    Frontend {
        addr: addr.parse().unwrap(),
        port,
        proto,
    }
}

#[test]
fn ebpf_service_fill_layout() {
    let (model, g) = compile(SRC);
    let st = state(&g);
    let mut m = MapsModel::default();
    m.apply(&st.initial_ops());
    let web = model.services.iter().position(|s| s.name == "web").unwrap();
    let db = model.services.iter().position(|s| s.name == "db").unwrap();
    let empty = model
        .services
        .iter()
        .position(|s| s.name == "empty")
        .unwrap();

    // Frontends: all four, with their flags.
    assert_eq!(m.maps[map::FE].len(), 4);
    let v = decode_fe(
        m.get(map::FE, &fe_key(&fe("10.96.0.1", 80, Proto::Tcp)))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v.service, web as u32);
    assert_eq!(
        v.count, 4,
        "weights 3 + 1 expanded into slots, weight 0 dropped"
    );
    assert_eq!(v.flags, 0);
    assert_eq!(v.table, u32::MAX);
    let v2 = decode_fe(
        m.get(map::FE, &fe_key(&fe("10.96.0.1", 53, Proto::Udp)))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        v2.set, v.set,
        "frontends of one service and family share a set"
    );
    let d = decode_fe(
        m.get(map::FE, &fe_key(&fe("10.96.0.2", 5432, Proto::Tcp)))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(d.flags, FLAG_MAGLEV | FLAG_AFFINITY);
    assert_eq!(d.affinity_secs, 3600);
    assert_eq!(d.count, 3);
    let e = decode_fe(
        m.get(map::FE, &fe_key(&fe("10.96.0.3", 80, Proto::Tcp)))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(e.count, 0, "no usable backend: reject");
    assert_eq!(
        e.no_backends,
        g.provenance.id(&Provenance::NoBackends { service: empty })
    );

    // Random slots: 10.1.0.1 three times, 10.1.0.2 once.
    let mut seen = Vec::new();
    for s in 0..v.count {
        let (addr, port, _) = decode_be(m.get(map::SLOT, &slot_key(v.set, s)).unwrap()).unwrap();
        assert_eq!(port, 8080);
        seen.push(addr.to_string());
    }
    seen.sort();
    assert_eq!(seen, ["10.1.0.1", "10.1.0.1", "10.1.0.1", "10.1.0.2"]);

    // Maglev table: the interpreter's, for every flow.
    let t = m.get(map::MGL, &d.table.to_ne_bytes()).unwrap();
    assert_eq!(t.len(), MAGLEV_M as usize * 4);
    let interp = Interp::new(&model);
    for sport in 1000..1400u16 {
        let src: IpAddr = format!("172.16.{}.{}", sport % 7, sport % 250)
            .parse()
            .unwrap();
        let p = Packet::new(Proto::Tcp, src, sport, "10.96.0.2".parse().unwrap(), 5432);
        let o = interp.evaluate(&p);
        let want = o.service.unwrap().chosen.unwrap();
        let h = flow_hash(p.src, p.dst, p.sport, p.dport, p.proto);
        let got = m.choose(&fe("10.96.0.2", 5432, Proto::Tcp), h).unwrap();
        assert_eq!(got, (want.addr, want.port));
        assert_eq!(st.pick(db, 4, h).map(|b| (b.addr, b.port)), Some(got));
    }
    // Backends map holds every backend id.
    assert_eq!(m.maps[map::BE].len(), 2 + 3);
    // Every map fits its capacity.
    for def in st.maps() {
        let n = m.maps.get(&def.name).map_or(0, |x| x.len());
        assert!(
            n as u32 <= def.max_entries,
            "{}: {n} > {}",
            def.name,
            def.max_entries
        );
    }
}

#[test]
fn ebpf_service_weighted_slots() {
    let b = |w: u16| Be {
        addr: "10.0.0.1".parse().unwrap(),
        port: 1,
        weight: w,
    };
    assert_eq!(weighted_slots(&[b(2), b(4)]), vec![0, 1, 1]);
    assert_eq!(weighted_slots(&[b(3), b(1)]), vec![0, 0, 0, 1]);
    assert_eq!(weighted_slots(&[b(5)]), vec![0]);
}

#[test]
fn ebpf_service_backend_change_is_a_swap() {
    let (model, g) = compile(SRC);
    let db = model.services.iter().position(|s| s.name == "db").unwrap();
    let mut st = state(&g);
    let mut m = MapsModel::default();
    m.apply(&st.initial_ops());
    let f = fe("10.96.0.2", 5432, Proto::Tcp);
    let before = decode_fe(m.get(map::FE, &fe_key(&f)).unwrap()).unwrap();
    let old_table = m
        .get(map::MGL, &before.table.to_ne_bytes())
        .unwrap()
        .clone();

    // Remove 10.2.0.2, add 10.2.0.9.
    let new: Vec<Be> = ["10.2.0.1", "10.2.0.3", "10.2.0.9"]
        .iter()
        .map(|a| Be {
            addr: a.parse().unwrap(),
            port: 5432,
            weight: 1,
        })
        .collect();
    let ops = st.set_backends(db, 4, new.clone()).unwrap();
    // Order: everything new is written before the frontend flips; old
    // slots are deleted only after.
    let flip = ops.iter().position(|o| o.map() == map::FE).unwrap();
    assert!(ops[..flip]
        .iter()
        .all(|o| matches!(o, MapOp::Update { .. })));
    assert!(ops[..flip].iter().any(|o| o.map() == map::MGL));
    assert!(ops[flip + 1..]
        .iter()
        .all(|o| matches!(o, MapOp::Delete { .. })));
    // The old table is not touched (readers in flight keep a valid view).
    assert!(ops.iter().all(|o| !matches!(o, MapOp::Update { map, key, .. } if map == map::MGL && *key == before.table.to_ne_bytes())));
    m.apply(&ops);
    let after = decode_fe(m.get(map::FE, &fe_key(&f)).unwrap()).unwrap();
    assert_ne!(after.set, before.set);
    assert_ne!(after.table, before.table);
    assert_eq!(
        m.get(map::MGL, &before.table.to_ne_bytes()),
        Some(&old_table)
    );
    // No stale slots of the old set; the removed backend's id is gone.
    for s in 0..before.count {
        assert!(m.get(map::SLOT, &slot_key(before.set, s)).is_none());
    }
    assert!(st
        .backend_id(db, "10.2.0.2".parse().unwrap(), 5432)
        .is_none());
    assert!(st
        .backend_id(db, "10.2.0.1".parse().unwrap(), 5432)
        .is_some());
    // The new table is Maglev over the new candidates.
    let t = m.get(map::MGL, &after.table.to_ne_bytes()).unwrap();
    let want = maglev_table(&new);
    assert_eq!(u32::from_ne_bytes(t[..4].try_into().unwrap()), want[0]);

    // Removing every backend: count 0 (reject), table freed.
    let ops = st.set_backends(db, 4, Vec::new()).unwrap();
    m.apply(&ops);
    let none = decode_fe(m.get(map::FE, &fe_key(&f)).unwrap()).unwrap();
    assert_eq!(none.count, 0);
    // Many swaps in a row never run out of tables (freed ones are reused).
    for i in 0..50u8 {
        let ops = st
            .set_backends(
                db,
                4,
                vec![Be {
                    addr: IpAddr::from([10, 2, 1, i]),
                    port: 1,
                    weight: 1,
                }],
            )
            .unwrap();
        m.apply(&ops);
    }
    let last = decode_fe(m.get(map::FE, &fe_key(&f)).unwrap()).unwrap();
    assert_eq!(last.count, 1);
    assert_eq!(m.maps[map::SLOT].len(), 4 + 1, "web's 4 slots + db's 1");
}

#[test]
fn ebpf_service_maglev_disruption_in_tables() {
    // 10 backends, remove one: ≤ 15% of 10,000 flows move, through the
    // tables the runtime writes.
    let mut src = String::from("service s {\n  frontend 10.96.0.9:80/tcp\n  backends { ");
    src += &(1..=10)
        .map(|i| format!("10.9.0.{i}:80"))
        .collect::<Vec<_>>()
        .join(", ");
    src += " }\n  balance maglev\n}\n";
    let (_, g) = compile(&src);
    let mut st = state(&g);
    let mut m = MapsModel::default();
    m.apply(&st.initial_ops());
    let f = fe("10.96.0.9", 80, Proto::Tcp);
    let flows: Vec<u32> = (0..10_000u32)
        .map(|i| {
            let src = IpAddr::from([172, 16, (i / 250) as u8, (i % 250) as u8]);
            flow_hash(src, f.addr, 20_000 + (i % 40_000) as u16, 80, Proto::Tcp)
        })
        .collect();
    let before: Vec<_> = flows.iter().map(|&h| m.choose(&f, h).unwrap()).collect();
    let fewer: Vec<Be> = (1..=10)
        .filter(|&i| i != 4)
        .map(|i| Be {
            addr: IpAddr::from([10, 9, 0, i]),
            port: 80,
            weight: 1,
        })
        .collect();
    m.apply(&st.set_backends(0, 4, fewer).unwrap());
    let moved = flows
        .iter()
        .zip(&before)
        .filter(|(&h, b)| m.choose(&f, h).unwrap() != **b)
        .count();
    let removed = before
        .iter()
        .filter(|b| b.0 == IpAddr::from([10, 9, 0, 4]))
        .count();
    assert!(moved >= removed);
    assert!(moved <= 1_500, "moved {moved} of 10000");
}

#[test]
fn ebpf_service_programs_assemble() {
    let (_, g) = compile(SRC);
    let st = state(&g);
    let obj = object::service_object(&st.capacity);
    let bytes = crate::ebpf::write_object(&obj).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    // The pipeline's fast path assembles with the pipeline's context.
    let mut a = crate::ebpf::Asm::new();
    let (cont, drop) = (a.new_label("cont"), a.new_label("drop"));
    let env = StageEnv {
        ctx: CtxLayout::pipeline(),
        cont,
        drop,
        reject: RejectCount::Provenance("weir_cnt".into()),
        rejected: None,
        lb_counters: false,
    };
    emit::emit_established_dnat(&mut a, &env, None);
    emit_service_stage(&mut a, &env);
    a.bind(cont);
    a.bind(drop);
    a.push(crate::ebpf::Op::Exit);
    assert!(a.assemble().is_ok());
    let tc = object::tc_program();
    assert!(
        tc.listing().contains("bpf_l4_csum_replace"),
        "l4_csum_replace"
    );
    // The flow hash emitted in BPF matches flowhash.rs: checked by the
    // kernel tests (Maglev choices equal the interpreter's).
}

/// `initial_counts` is what `initial_ops` writes, per map; sets with the
/// same backends (one workload on two ports) get equal tables.
#[test]
fn initial_counts_match_the_ops() {
    let src = format!(
        "{SRC}
service two {{
  frontend 10.96.0.4:80/tcp
  backends {{ 10.2.0.1:5432, 10.2.0.2:5432, 10.2.0.3:5432 }}
  balance maglev
}}
"
    );
    let (_, g) = compile(&src);
    let st = state(&g);
    let ops = st.initial_ops();
    let mut counted: std::collections::BTreeMap<&str, u64> = Default::default();
    for op in &ops {
        assert!(matches!(op, MapOp::Update { .. }));
        let name = [map::BE, map::SLOT, map::MGL, map::FE]
            .into_iter()
            .find(|n| *n == op.map())
            .expect("a service map");
        *counted.entry(name).or_default() += 1;
    }
    assert_eq!(st.initial_counts(), counted);
    let tables: Vec<&Vec<u8>> = ops
        .iter()
        .filter_map(|o| match o {
            MapOp::Update { map: m, value, .. } if m == map::MGL => Some(value),
            _ => None,
        })
        .collect();
    assert_eq!(tables.len(), 2);
    assert_eq!(tables[0], tables[1]);
}

/// A CoreDNS-like service: a named target port on a UDP and a TCP
/// frontend, endpoints whose `dns` port differs per protocol. Each
/// frontend's entry points at its own protocol's backends (a set per
/// [`BackendGroup`]), and a backend change of one group swaps only that
/// group's frontends.
#[test]
fn ebpf_service_named_target_per_protocol() {
    let (model, g) = compile(
        r#"
endpoint dns-a { labels { app: "dns" } addr 10.1.0.53 ports { dns: 53/udp } }
endpoint dns-b { labels { app: "dns" } addr 10.1.0.54 ports { dns: 5353/tcp } }
endpoint dns-c { labels { app: "dns" } addr 10.1.0.55 ports { dns: 1053/udp } }
service kube-dns {
  frontend 10.96.0.10:53/udp
  frontend 10.96.0.10:53/tcp
  backends select app == "dns" port "dns"
}
"#,
    );
    let mut st = state(&g);
    let mut m = MapsModel::default();
    m.apply(&st.initial_ops());
    let (udp, tcp) = (
        fe("10.96.0.10", 53, Proto::Udp),
        fe("10.96.0.10", 53, Proto::Tcp),
    );
    for f in [udp, tcp] {
        let want: Vec<(IpAddr, u16)> =
            crate::interp::backends_of(&model.services[0], &f, &model.endpoints)
                .iter()
                .map(|b| (b.addr, b.port))
                .collect();
        let got: std::collections::BTreeSet<(IpAddr, u16)> =
            (0..64).filter_map(|h| m.choose(&f, h)).collect();
        assert_eq!(got.into_iter().collect::<Vec<_>>(), want, "{f:?}");
    }
    let tcp_group = crate::contract::BackendGroup {
        family: 4,
        proto: Some(6),
    };
    let udp_before = m.get(map::FE, &fe_key(&udp)).unwrap().clone();
    let new = vec![Be {
        addr: "10.1.0.56".parse().unwrap(),
        port: 5353,
        weight: 1,
    }];
    m.apply(&st.set_backends(0, tcp_group, new).unwrap());
    assert_eq!(
        m.choose(&tcp, 7),
        Some(("10.1.0.56".parse().unwrap(), 5353))
    );
    assert_eq!(m.get(map::FE, &fe_key(&udp)), Some(&udp_before));
}
