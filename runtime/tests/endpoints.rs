//! `weir endpoints`: endpoint churn at run time is a map / ipset update,
//! never a recompile (`weir_runtime::endpoints`).
//!
//! iptables, in a client — node — server netns topology: a new endpoint
//! address is denied before and allowed after the update adds it with
//! labels a rule allows, a new subject endpoint gets its policy, removal
//! denies again — with the same generation and the same rules; an
//! address whose signature no compiled class has is refused; a service
//! whose selector now matches more backends is reported as needing a
//! recompile.
//!
//! eBPF, same topology and program (TCX on the node's client-facing
//! interface): the same policy checks through real TCP, then a backend
//! added to a Maglev selector service becomes reachable and a removed one
//! is no longer chosen (BPF_PROG_TEST_RUN on the pinned entry program) —
//! with the same program id on the link throughout.
//!
//! Both measure the update latency of one endpoint add / remove.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

mod bundle_common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_compiler::bundle::Target;
use weir_compiler::churn::EndpointRec;
use weir_compiler::interp::Packet;
use weir_compiler::model::Proto;
use weir_runtime::endpoints::{self, EndpointsError};
use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::{Topology, NODE_CLIENT_IF};
use weir_runtime::Bundle;

/// `db` is declared in the source (an inventory never removes it); the
/// others come from the inventory file [`INVENTORY`].
const SRC: &str = r#"
inventory "inventory.json"
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }

policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
    deny from any
  }
}

policy other-out {
  applies to app == "other"
  egress {
    allow tcp 443 to { 192.168.0.0/16 }
    allow to any
  }
}

service api {
  frontend 10.96.0.1:80/tcp
  backends select app == "api" port 8080
  balance maglev
}
"#;

const T: Duration = Duration::from_millis(500);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ready(test: &str, programs: &[&str]) -> bool {
    weir_runtime::kernel_test::may_run(test, programs)
}

/// The compile-time inventory of [`SRC`].
const INVENTORY: &str = r#"{ "endpoints": [
  { "name": "web",   "labels": { "app": "web" },   "addrs": ["10.1.0.10"] },
  { "name": "other", "labels": { "app": "other" }, "addrs": ["10.1.0.11"] },
  { "name": "api-1", "labels": { "app": "api" },   "addrs": ["10.3.0.1"] }
] }"#;

/// Compiles `src` for `target` and writes the bundle into `dir`.
fn write_bundle(dir: &Path, src: &str, target: Target) {
    bundle_common::write_source(dir, src, Some(INVENTORY), target, &Default::default());
}

fn ep(name: &str, app: &str, addr: &str) -> EndpointRec {
    EndpointRec {
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ready: true,
        addrs: vec![ip(addr)],
    }
}

/// The compiled inventory.
fn base() -> Vec<EndpointRec> {
    vec![
        ep("web", "web", "10.1.0.10"),
        ep("other", "other", "10.1.0.11"),
        ep("db", "db", "10.2.0.20"),
        ep("api-1", "api", "10.3.0.1"),
    ]
}

fn with(mut v: Vec<EndpointRec>, extra: &[EndpointRec]) -> Vec<EndpointRec> {
    v.extend(extra.iter().cloned());
    v
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn scratch(name: &str) -> PathBuf {
    weir_runtime::kernel_test::state_dir(&format!("endpoints-{name}")).unwrap()
}

/// Our rules as the kernel has them (no counters).
fn our_rules(topo: &Topology) -> String {
    let out = topo.node.exec("iptables-save", &[]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("WEIR"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn iptables_endpoint_churn_updates_sets_only() {
    if !ready(
        "iptables_endpoint_churn_updates_sets_only",
        &["ip", "iptables-restore", "ip6tables-restore", "ipset"],
    ) {
        return;
    }
    let work = scratch("ipt");
    let dir = work.join("bundle");
    write_bundle(&dir, SRC, Target::Iptables);
    let topo = Topology::new().expect("netns topology");
    let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
    let b = Bundle::read(&dir).unwrap();
    let g = rt.apply(&b).unwrap().generation;
    let rules = our_rules(&topo);
    assert!(!rules.is_empty());

    let (web, web2, db, db2) = (
        ip("10.1.0.10"),
        ip("10.1.0.12"),
        ip("10.2.0.20"),
        ip("10.2.0.21"),
    );
    assert!(topo.tcp_connect(web, db, 5432, T), "web → db allowed");
    assert!(!topo.tcp_connect(web2, db, 5432, T), "unknown → db denied");
    assert!(topo.tcp_connect(web, db2, 9999, T), "not yet a subject");

    // Same inventory: nothing to do.
    let r = endpoints::iptables(&rt, &b, &base()).unwrap();
    assert!(r.changes.is_empty() && r.writes == 0, "{r:?}");

    // A partial inventory (only a new web-3) replaces the inventory's
    // endpoints, not `db`, which the source declares: db stays a subject,
    // so web (gone) is denied and web-3 allowed.
    let r = endpoints::iptables(&rt, &b, &[ep("web-3", "web", "10.1.0.12")]).unwrap();
    assert!(r.changes.iter().all(|c| c.endpoint != "db"), "{r:?}");
    assert!(!topo.tcp_connect(web, db, 5432, T), "db is still a subject");
    assert!(topo.tcp_connect(web2, db, 5432, T), "web-3 → db allowed");
    // Changing a declared endpoint through the inventory is refused.
    let moved = vec![ep("db", "db", "10.2.0.21")];
    assert!(matches!(
        endpoints::iptables(&rt, &b, &moved),
        Err(EndpointsError::Refused(_))
    ));
    let r = endpoints::iptables(&rt, &b, &base()).unwrap();
    assert!(topo.tcp_connect(web, db, 5432, T), "web back: allowed");
    assert!(!topo.tcp_connect(web2, db, 5432, T), "web-3 gone: denied");
    assert!(r.changes.iter().all(|c| c.endpoint != "db"), "{r:?}");

    // Add a web replica and a db replica.
    let inv = with(
        base(),
        &[
            ep("web-2", "web", "10.1.0.12"),
            ep("db-2", "db", "10.2.0.21"),
        ],
    );
    let r = endpoints::iptables(&rt, &b, &inv).unwrap();
    assert_eq!(r.changes.len(), 2, "{r:?}");
    assert!(r.needs_recompile.is_empty());
    assert!(
        topo.tcp_connect(web2, db, 5432, T),
        "web-2 → db allowed now"
    );
    assert!(
        !topo.tcp_connect(web2, db, 9999, T),
        "other ports still denied"
    );
    assert!(
        !topo.tcp_connect(web, db2, 9999, T),
        "db-2 is a subject now"
    );
    assert!(topo.tcp_connect(web, db2, 5432, T), "db-2 admits web");
    assert_eq!(rt.read_state().unwrap().unwrap().generation, g);
    assert_eq!(our_rules(&topo), rules, "no rule changed");

    // Remove web-2 again (db-2 stays).
    let inv2 = with(base(), &[ep("db-2", "db", "10.2.0.21")]);
    let r = endpoints::iptables(&rt, &b, &inv2).unwrap();
    assert_eq!(r.changes.len(), 1, "{r:?}");
    assert!(
        !topo.tcp_connect(web2, db, 5432, T),
        "web-2 removed: denied"
    );
    assert!(!topo.tcp_connect(web, db2, 9999, T));

    // Relabel web → other: loses access.
    let mut relabeled = inv2.clone();
    relabeled[0] = ep("web", "other", "10.1.0.10");
    endpoints::iptables(&rt, &b, &relabeled).unwrap();
    assert!(!topo.tcp_connect(web, db, 5432, T), "relabeled: denied");
    endpoints::iptables(&rt, &b, &inv2).unwrap();
    assert!(topo.tcp_connect(web, db, 5432, T), "labels back: allowed");

    // A new combination (web labels inside other-out's set) is refused.
    let bad = with(inv2.clone(), &[ep("odd", "web", "192.168.1.1")]);
    match endpoints::iptables(&rt, &b, &bad) {
        Err(EndpointsError::Refused(r)) => {
            assert!(r[0].contains("`odd` needs a recompile"), "{r:?}")
        }
        other => panic!("expected a refusal: {other:?}"),
    }
    // The program has no IPv6 address, so its ip6tables rules judge
    // every IPv6 address as class 0 and there are no IPv6 sets: an
    // endpoint's IPv6 address cannot be placed and is refused, not
    // silently judged as an address no endpoint owns.
    let v6 = with(inv2.clone(), &[ep("web-6", "web", "fd00::12")]);
    match endpoints::iptables(&rt, &b, &v6) {
        Err(EndpointsError::Refused(r)) => {
            assert!(r[0].contains("compiled with no IPv6 address"), "{r:?}")
        }
        other => panic!("expected a refusal: {other:?}"),
    }
    // A second api backend: the class part applies, the service needs a
    // recompile (DNAT rules).
    let api2 = with(inv2.clone(), &[ep("api-2", "api", "10.3.0.2")]);
    let r = endpoints::iptables(&rt, &b, &api2).unwrap();
    assert_eq!(r.needs_recompile.len(), 1, "{r:?}");
    assert_eq!(r.needs_recompile[0].service, "api");

    // Latency of one add / remove.
    let (mut apply, mut total) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let inv = if i % 2 == 0 {
            with(api2.clone(), &[ep("web-2", "web", "10.1.0.12")])
        } else {
            api2.clone()
        };
        let r = endpoints::iptables(&rt, &b, &inv).unwrap();
        assert_eq!(r.changes.len(), 1);
        apply.push(r.apply_time.as_secs_f64() * 1e3);
        total.push(r.total_time.as_secs_f64() * 1e3);
    }
    eprintln!(
        "iptables endpoint add/remove: median {:.2} ms kernel (ipset restore), {:.2} ms total",
        median(apply),
        median(total)
    );
    assert_eq!(our_rules(&topo), rules, "no rule changed");
    assert_eq!(rt.read_state().unwrap().unwrap().generation, g);
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(&work);
}

/// The program id the pinned link runs.
fn link_prog_id(inst: &weir_runtime::ebpf::Instance) -> u32 {
    use aya::programs::links::{FdLink, PinnedLink};
    let l = PinnedLink::from_pin(inst.pin_dir().join("link")).unwrap();
    FdLink::from(l).info().unwrap().program_id()
}

/// Backends chosen for `n` new flows web → api VIP (BPF_PROG_TEST_RUN on
/// the pinned entry program; the packet comes out DNATed).
fn chosen(prog: &aya::programs::SchedClassifier, sport0: u16, n: u16) -> Vec<IpAddr> {
    use aya::programs::{TestRun, TestRunOptions};
    let mut out = Vec::new();
    for i in 0..n {
        let p = Packet::new(Proto::Tcp, ip("10.1.0.10"), sport0 + i, ip("10.96.0.1"), 80);
        let mut f = ebpf_common::frame(&p);
        ebpf_common::set_checksums(&mut f);
        let mut data = vec![0u8; f.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&f),
                data_out: Some(&mut data),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.return_value, 0, "allowed (TC_ACT_OK)");
        out.push(IpAddr::from([data[30], data[31], data[32], data[33]]));
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn ebpf_endpoint_churn_updates_maps_only() {
    if !ready("ebpf_endpoint_churn_updates_maps_only", &["ip"]) {
        return;
    }
    let work = scratch("ebpf");
    let dir = work.join("bundle");
    write_bundle(&dir, SRC, Target::Ebpf);
    let topo = Topology::new().expect("netns topology");
    let pid = std::process::id();
    let mut inst = weir_runtime::ebpf::Instance::new(NODE_CLIENT_IF, Some(topo.node.name()));
    inst.pin_root = PathBuf::from(format!("/sys/fs/bpf/weir-test-endpoints-{pid}"));
    inst.state_root = work.join("state");
    let applied = weir_runtime::ebpf::apply(&dir, &inst).unwrap();
    let g = applied.generation;
    let prog_id = link_prog_id(&inst);

    let (web, web2, db, db2) = (
        ip("10.1.0.10"),
        ip("10.1.0.12"),
        ip("10.2.0.20"),
        ip("10.2.0.21"),
    );
    assert!(topo.tcp_connect(web, db, 5432, T), "web → db allowed");
    assert!(!topo.tcp_connect(web2, db, 5432, T), "unknown → db denied");
    assert!(topo.tcp_connect(web, db2, 9999, T), "not yet a subject");

    let inv = with(
        base(),
        &[
            ep("web-2", "web", "10.1.0.12"),
            ep("db-2", "db", "10.2.0.21"),
        ],
    );
    let r = endpoints::ebpf(&inst, &dir, &inv).unwrap();
    assert_eq!(r.changes.len(), 2, "{r:?}");
    assert!(r.services.is_empty(), "{r:?}");
    assert!(
        topo.tcp_connect(web2, db, 5432, T),
        "web-2 → db allowed now"
    );
    assert!(!topo.tcp_connect(web2, db, 9999, T), "other ports denied");
    assert!(
        !topo.tcp_connect(web, db2, 9999, T),
        "db-2 is a subject now"
    );
    assert!(topo.tcp_connect(web, db2, 5432, T), "db-2 admits web");

    let inv2 = with(base(), &[ep("db-2", "db", "10.2.0.21")]);
    endpoints::ebpf(&inst, &dir, &inv2).unwrap();
    assert!(
        !topo.tcp_connect(web2, db, 5432, T),
        "web-2 removed: denied"
    );

    let bad = with(inv2.clone(), &[ep("odd", "web", "192.168.1.1")]);
    assert!(matches!(
        endpoints::ebpf(&inst, &dir, &bad),
        Err(EndpointsError::Refused(_))
    ));

    // Services: the pinned entry program, run on test packets.
    let prog = aya::programs::SchedClassifier::from_pin(
        inst.pin_dir()
            .join(format!("gen-{g}"))
            .join("prog_weir_main"),
    )
    .unwrap();
    assert_eq!(chosen(&prog, 20000, 64), vec![ip("10.3.0.1")]);
    let api2 = with(inv2.clone(), &[ep("api-2", "api", "10.3.0.2")]);
    let r = endpoints::ebpf(&inst, &dir, &api2).unwrap();
    assert_eq!(r.services.len(), 1, "{r:?}");
    assert_eq!(
        chosen(&prog, 21000, 64),
        vec![ip("10.3.0.1"), ip("10.3.0.2")],
        "the new backend is chosen"
    );
    let mut only2 = api2.clone();
    only2.retain(|e| e.name != "api-1");
    let r = endpoints::ebpf(&inst, &dir, &only2).unwrap();
    assert_eq!(r.services[0].backends, vec!["10.3.0.2:8080".to_string()]);
    assert_eq!(
        chosen(&prog, 22000, 64),
        vec![ip("10.3.0.2")],
        "the removed backend is no longer chosen"
    );
    let st = weir_runtime::ebpf::status(&inst).unwrap();
    assert_eq!(st.generation, g);
    assert_eq!(st.services.len(), 1);
    assert_eq!(st.services[0].backends, vec!["10.3.0.2:8080 (weight 1)"]);
    // Not ready: no backends → rejected, still no reload.
    let mut unready = only2.clone();
    for e in &mut unready {
        if e.name == "api-2" {
            e.ready = false;
        }
    }
    let r = endpoints::ebpf(&inst, &dir, &unready).unwrap();
    assert!(r.services[0].backends.is_empty());
    endpoints::ebpf(&inst, &dir, &only2).unwrap();

    // Latency of one add / remove.
    let (mut apply, mut total) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let inv = if i % 2 == 0 {
            with(only2.clone(), &[ep("web-2", "web", "10.1.0.12")])
        } else {
            only2.clone()
        };
        let r = endpoints::ebpf(&inst, &dir, &inv).unwrap();
        assert_eq!(r.changes.len(), 1);
        apply.push(r.apply_time.as_secs_f64() * 1e3);
        total.push(r.total_time.as_secs_f64() * 1e3);
    }
    let (mut sapply, mut stotal) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let inv = if i % 2 == 0 {
            with(only2.clone(), &[ep("api-3", "api", "10.3.0.3")])
        } else {
            only2.clone()
        };
        let r = endpoints::ebpf(&inst, &dir, &inv).unwrap();
        assert_eq!(r.services.len(), 1);
        sapply.push(r.apply_time.as_secs_f64() * 1e3);
        stotal.push(r.total_time.as_secs_f64() * 1e3);
    }
    eprintln!(
        "eBPF endpoint add/remove: median {:.3} ms kernel (LPM), {:.2} ms total; with a Maglev backend change: {:.3} ms kernel, {:.2} ms total",
        median(apply),
        median(total),
        median(sapply),
        median(stotal)
    );
    assert_eq!(link_prog_id(&inst), prog_id, "programs never reloaded");
    assert_eq!(weir_runtime::ebpf::status(&inst).unwrap().generation, g);
    weir_runtime::ebpf::detach(&inst).unwrap();
    let _ = std::fs::remove_dir_all(&inst.pin_root);
    let _ = std::fs::remove_dir_all(&work);
}

/// 70,000 web endpoints exceed the compiled sets' capacity (`maxelem
/// 65536`): refused, and nothing is written — the live sets keep their
/// members, no temporary set is left, and the next update applies.
#[test]
fn iptables_update_over_capacity_writes_nothing() {
    if !ready(
        "iptables_update_over_capacity_writes_nothing",
        &["ip", "iptables-restore", "ip6tables-restore", "ipset"],
    ) {
        return;
    }
    let work = scratch("ipt-capacity");
    let dir = work.join("bundle");
    write_bundle(&dir, SRC, Target::Iptables);
    let node =
        weir_runtime::netns::Netns::create(&format!("weir-epcap-{}", std::process::id())).unwrap();
    let rt = Iptables::new(Options::netns(node.name()).with_state_dir(work.join("state")));
    let b = Bundle::read(&dir).unwrap();
    rt.apply(&b).unwrap();
    let sets = || {
        let o = node.exec("ipset", &["save"]).unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let before = sets();
    let mut many = base();
    many.extend((0..70_000u32).map(|i| {
        let a = std::net::Ipv4Addr::from(0x0a40_0000 + i);
        ep(&format!("web-{i}"), "web", &a.to_string())
    }));
    match endpoints::iptables(&rt, &b, &many) {
        Err(EndpointsError::Refused(r)) => {
            assert!(r.iter().any(|m| m.contains("maxelem")), "{r:?}")
        }
        other => panic!("expected a refusal: {other:?}"),
    }
    assert_eq!(sets(), before, "nothing written");
    let r =
        endpoints::iptables(&rt, &b, &with(base(), &[ep("web-2", "web", "10.1.0.12")])).unwrap();
    assert_eq!(r.changes.len(), 1, "{r:?}");
    assert!(rt.status().unwrap().in_force);
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(&work);
}
