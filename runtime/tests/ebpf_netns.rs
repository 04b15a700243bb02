//! End to end in network namespaces (`weir_runtime::netns`): a bundle
//! compiled for eBPF is applied to the node's client-facing interface
//! (TCX ingress) and real TCP / UDP / ICMP traffic from the client goes
//! through it; a changed bundle is re-applied under continuous traffic
//! (no allowed connection fails, no denied one gets through); a broken
//! bundle leaves the running generation in force; `detach` removes every
//! pin and the link. Applied on both node links (one generation, one link
//! per interface), a selector service answers real TCP (replies are
//! reverse-translated on the server link).
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ebpf_common::have_root;
use weir_compiler::bundle::{self, BundleInput, Target};
use weir_compiler::check::check_program;
use weir_compiler::ebpf::codegen::{generate, Options};
use weir_compiler::graph;
use weir_compiler::source::MemoryLoader;
use weir_runtime::ebpf::{self, EbpfError, Instance};
use weir_runtime::netns::{Topology, NODE_CLIENT_IF};

const WEB: &str = "10.1.0.10";
const OTHER: &str = "10.1.0.11";
const DB: &str = "10.2.0.20";

const ENDPOINTS: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint other { labels { app: "other" } addr 10.1.0.11 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }
"#;

const POLICY_A: &str = r#"
policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
    allow udp 53 from app == "web"
    deny from any log
  }
}
"#;

const POLICY_B: &str = r#"
policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
    allow tcp 8080 from app == "web"
    deny from any log
  }
}
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Compiles `text` for eBPF and writes the bundle into `dir`.
fn write_bundle(dir: &Path, text: &str) {
    let path = PathBuf::from("policy.weir");
    let loader = MemoryLoader::new().with(&path, text);
    let checked = check_program(std::slice::from_ref(&path), &loader, None);
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    let model = &checked.model;
    let g = graph::build(model);
    let out = generate(model, &g, &Options::default()).unwrap();
    let mut backends = BTreeMap::new();
    backends.insert(Target::Ebpf, out.artifacts());
    let sources = vec![("policy.weir".to_string(), text.to_string())];
    let locate = |_| None;
    let files = bundle::bundle(&BundleInput {
        model,
        graph: &g,
        sources: &sources,
        targets: &[Target::Ebpf],
        locate: &locate,
        backends,
    });
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

const T: Duration = Duration::from_millis(400);

#[test]
fn ebpf_apply_reapply_under_traffic_and_detach() {
    if !have_root("ebpf_apply_reapply_under_traffic_and_detach") {
        return;
    }
    let topo = Arc::new(Topology::new().expect("netns topology"));
    let pid = std::process::id();
    let scratch = std::env::temp_dir().join(format!("weir-ebpf-netns-{pid}"));
    let (a, b, broken) = (scratch.join("a"), scratch.join("b"), scratch.join("broken"));
    write_bundle(&a, &format!("{ENDPOINTS}{POLICY_A}"));
    write_bundle(&b, &format!("{ENDPOINTS}{POLICY_B}"));
    write_bundle(&broken, &format!("{ENDPOINTS}{POLICY_B}"));
    std::fs::write(broken.join("weir.o"), b"not an object").unwrap();

    let mut inst = Instance::new(NODE_CLIENT_IF, Some(topo.node.name()));
    inst.pin_root = PathBuf::from(format!("/sys/fs/bpf/weir-test-{pid}"));
    inst.state_root = scratch.join("state");

    let (web, other, db) = (ip(WEB), ip(OTHER), ip(DB));
    // Without weir everything flows.
    assert!(topo.tcp_connect(web, db, 9999, T), "harness forwards");
    assert!(topo.tcp_connect(other, db, 5432, T));

    // Errors are clear.
    let bad = Instance {
        iface: "no-such-if".into(),
        ..inst.clone()
    };
    match ebpf::apply(&a, &bad) {
        Err(EbpfError::NoInterface { .. }) => {}
        other => panic!("missing interface: {other:?}"),
    }
    assert!(!bad.pin_dir().exists());

    // Generation 1.
    let r = ebpf::apply(&a, &inst).unwrap();
    assert_eq!(r.generation, 1);
    assert!(topo.tcp_connect(web, db, 5432, T), "allowed by rule 1");
    assert!(topo.udp_exchange(web, db, 53, T), "allowed by rule 2");
    assert!(!topo.tcp_connect(web, db, 9999, T), "denied port");
    assert!(!topo.tcp_connect(other, db, 5432, T), "denied peer");
    assert!(!topo.icmp_echo(web, db, T), "icmp denied");
    assert!(!topo.tcp_connect(web, db, 8080, T), "8080 not yet allowed");
    let st = ebpf::status(&inst).unwrap();
    assert!(st.attached && st.generation == 1, "{st:?}");
    let stats = ebpf::stats(&inst).unwrap();
    let count = |stats: &[ebpf::RuleCount], d: &str| {
        stats
            .iter()
            .find(|c| c.description == d)
            .map_or(0, |c| c.packets)
    };
    assert!(count(&stats, "db-in ingress rule #1") >= 1, "{stats:?}");
    assert!(count(&stats, "db-in ingress rule #3") >= 3, "{stats:?}");

    // Re-apply a changed bundle under continuous traffic.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok_fail, denied_pass, rounds) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let spawn = |src: IpAddr, allowed: bool, bad: Arc<AtomicUsize>| {
        let (topo, stop, rounds) = (topo.clone(), stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let t = if allowed {
                    Duration::from_secs(2)
                } else {
                    Duration::from_millis(200)
                };
                if topo.tcp_connect(src, db, 5432, t) != allowed {
                    bad.fetch_add(1, Ordering::SeqCst);
                }
                rounds.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let traffic = [
        spawn(web, true, ok_fail.clone()),
        spawn(other, false, denied_pass.clone()),
    ];
    std::thread::sleep(Duration::from_millis(300));
    let r = ebpf::apply(&b, &inst).unwrap();
    assert_eq!((r.generation, r.previous), (2, Some(1)));
    // A broken bundle is refused; generation 2 keeps running.
    let e = ebpf::apply(&broken, &inst).unwrap_err();
    eprintln!("broken bundle refused: {e}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for t in traffic {
        t.join().unwrap();
    }
    eprintln!(
        "{} rounds under re-apply: {} allowed connections failed, {} denied got through",
        rounds.load(Ordering::SeqCst),
        ok_fail.load(Ordering::SeqCst),
        denied_pass.load(Ordering::SeqCst)
    );
    assert!(rounds.load(Ordering::SeqCst) >= 10);
    assert_eq!(ok_fail.load(Ordering::SeqCst), 0, "allowed connection lost");
    assert_eq!(
        denied_pass.load(Ordering::SeqCst),
        0,
        "denied packet passed"
    );

    // Generation 2 is in force.
    let st = ebpf::status(&inst).unwrap();
    assert!(st.attached && st.generation == 2, "{st:?}");
    assert!(
        !inst.pin_dir().join("gen-1").exists(),
        "old generation retired"
    );
    assert!(topo.tcp_connect(web, db, 8080, T), "8080 allowed now");
    assert!(
        !topo.udp_exchange(web, db, 53, T),
        "udp 53 no longer allowed"
    );
    assert!(topo.tcp_connect(web, db, 5432, T));

    // Detach removes everything; traffic flows again.
    assert!(ebpf::detach(&inst).unwrap());
    assert!(!inst.pin_dir().exists(), "pins removed");
    assert!(!inst.state_dir().exists(), "state removed");
    assert!(topo.tcp_connect(other, db, 5432, T), "no program left");
    assert!(topo.tcp_connect(web, db, 9999, T));
    let out = topo
        .node
        .exec("bpftool", &["net", "show", "dev", NODE_CLIENT_IF])
        .ok();
    if let Some(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("weir_main"), "still attached: {text}");
    }
    assert!(!ebpf::detach(&inst).unwrap(), "second detach finds nothing");
    let _ = std::fs::remove_dir_all(&inst.pin_root);
    let _ = std::fs::remove_dir_all(&scratch);
}

const SERVICE: &str = r#"
endpoint web { labels { app: "web" } addr 10.1.0.10 }
endpoint b1  { labels { app: "b" }   addr 10.2.0.1 }
endpoint b2  { labels { app: "b" }   addr 10.2.0.2 }
service s {
  frontend 10.96.0.1:80/tcp
  backends select app == "b" port 8080
}
"#;

/// `apply` on both node links (repeated `--iface`): one generation, the
/// same program and maps on each link, so replies from a backend (coming
/// in on the server link) are reverse-translated; real TCP from the
/// client to a frontend is answered. `detach` removes every link and pin.
#[test]
fn ebpf_apply_on_both_links_serves_a_selector_service() {
    use weir_runtime::netns::NODE_SERVER_IF;
    if !have_root("ebpf_apply_on_both_links_serves_a_selector_service") {
        return;
    }
    let pid = std::process::id();
    let scratch = std::env::temp_dir().join(format!("weir-ebpf-2if-{pid}"));
    let dir = scratch.join("bundle");
    write_bundle(&dir, SERVICE);
    let topo = Topology::new().unwrap();
    let backends = [ip("10.2.0.1"), ip("10.2.0.2")];
    for b in backends {
        topo.serve_tcp(b, 8080).unwrap();
    }
    let mut inst = Instance::new(NODE_CLIENT_IF, Some(topo.node.name()));
    inst.extra_ifaces = vec![NODE_SERVER_IF.to_string()];
    inst.pin_root = PathBuf::from(format!("/sys/fs/bpf/weir-2if-test-{pid}"));
    inst.state_root = scratch.join("state");

    let a = ebpf::apply(&dir, &inst).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.generation, 1);
    let base = inst.pin_dir();
    assert!(base.join("link").exists());
    assert!(base.join(format!("link-{NODE_SERVER_IF}")).exists());
    let s = ebpf::status(&inst).unwrap();
    assert!(s.attached, "{s:?}");
    assert_eq!(s.ifaces, vec![NODE_CLIENT_IF, NODE_SERVER_IF]);

    let web = ip(WEB);
    let vip = ip("10.96.0.1");
    let probe = |what: &str| {
        for _ in 0..4 {
            let got = topo
                .tcp_probe(web, vip, 80, Duration::from_millis(1500))
                .unwrap_or_else(|| panic!("{what}: {web} → {vip}:80: no answer"));
            assert!(backends.contains(&got), "{what}: {got} is not a backend");
        }
    };
    probe("generation 1");

    // Re-apply: every link moves to generation 2.
    let b = ebpf::apply(&dir, &inst).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.generation, 2);
    assert!(!base.join("gen-1").exists());
    assert!(ebpf::status(&inst).unwrap().attached);
    probe("generation 2");

    // A single-interface instance of the same name keeps working: detach
    // finds both links through the pin directory.
    assert!(ebpf::detach(&Instance {
        extra_ifaces: Vec::new(),
        ..inst.clone()
    })
    .unwrap());
    assert!(!base.exists(), "no pins left");
    assert!(topo
        .tcp_probe(web, vip, 80, Duration::from_millis(400))
        .is_none());
    assert!(!ebpf::detach(&inst).unwrap());
    let _ = std::fs::remove_dir(&inst.pin_root);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// An instance is named by its namespace's inode number, which the kernel
/// gives to a new namespace once the old one is gone (a test that fails
/// before `detach` leaves exactly this behind). What a gone namespace
/// left under the name is not this namespace's: `status` finds nothing
/// applied (not a generation "not on the interface"), its pins go, and
/// `apply` starts afresh. The reuse is reproduced by moving the gone
/// namespace's pins and record to the new namespace's name.
#[test]
fn ebpf_state_of_a_gone_namespace_with_the_same_inode_is_not_ours() {
    if !have_root("ebpf_state_of_a_gone_namespace_with_the_same_inode_is_not_ours") {
        return;
    }
    let pid = std::process::id();
    let scratch = std::env::temp_dir().join(format!("weir-ebpf-reuse-{pid}"));
    let dir = scratch.join("bundle");
    write_bundle(&dir, &format!("{ENDPOINTS}{POLICY_A}"));
    let instance = |topo: &Topology| {
        let mut inst = Instance::new(NODE_CLIENT_IF, Some(topo.node.name()));
        inst.pin_root = PathBuf::from(format!("/sys/fs/bpf/weir-reuse-test-{pid}"));
        inst.state_root = scratch.join("state");
        inst
    };
    let gone = Topology::new().unwrap();
    let old = instance(&gone);
    ebpf::apply(&dir, &old).unwrap_or_else(|e| panic!("{e}"));
    let (old_pins, old_state) = (old.pin_dir(), old.state_dir());
    drop(gone);

    let topo = Topology::new().unwrap();
    let inst = instance(&topo);
    std::fs::rename(&old_pins, inst.pin_dir()).unwrap();
    std::fs::rename(&old_state, inst.state_dir()).unwrap();
    match ebpf::status(&inst) {
        Err(EbpfError::NotApplied { .. }) => {}
        other => panic!("a gone namespace's generation reported here: {other:?}"),
    }
    assert!(!inst.pin_dir().exists(), "its pins are removed");
    let a = ebpf::apply(&dir, &inst).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((a.generation, a.previous), (1, None));
    assert!(ebpf::status(&inst).unwrap().attached);
    assert!(ebpf::detach(&inst).unwrap());
    let _ = std::fs::remove_dir(&inst.pin_root);
    let _ = std::fs::remove_dir_all(&scratch);
}
