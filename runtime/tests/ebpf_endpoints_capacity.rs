//! `weir endpoints` on the eBPF back end writes all or nothing: an
//! inventory that would overflow the host map (5,000 new endpoints against
//! the compiled headroom of 4,096) is refused before anything is written,
//! and the maps are byte for byte what they were (read back with
//! `bpftool map dump`, not through weir); a fitting update still applies,
//! and traffic follows it.
//!
//! Needs root, `ip` and `bpftool`; skipped without them unless `CI` is set
//! (then it fails).

mod bundle_common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use weir_compiler::bundle::Target;
use weir_compiler::churn::EndpointRec;
use weir_compiler::ebpf::layout::map::HOST4;
use weir_runtime::endpoints::{self, EndpointsError};
use weir_runtime::netns::{Topology, NODE_CLIENT_IF};

const SRC: &str = r#"
endpoint web   { labels { app: "web" }   addr 10.1.0.10 }
endpoint db    { labels { app: "db" }    addr 10.2.0.20 }

policy db-in {
  applies to app == "db"
  ingress {
    allow tcp 5432 from app == "web"
    deny from any
  }
}
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn write_bundle(dir: &Path) {
    bundle_common::write_source(dir, SRC, None, Target::Ebpf, &Default::default());
}

fn ep(name: &str, app: &str, addr: IpAddr) -> EndpointRec {
    EndpointRec {
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ready: true,
        addrs: vec![addr],
    }
}

/// The compiled inventory plus `n` new web endpoints (10.1.1.0 on).
fn inventory(n: u32) -> Vec<EndpointRec> {
    let mut v = vec![
        ep("web", "web", ip("10.1.0.10")),
        ep("db", "db", ip("10.2.0.20")),
    ];
    for i in 0..n {
        let a = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 1, 1, 0)) + i);
        v.push(ep(&format!("web-{i}"), "web", a.into()));
    }
    v
}

/// The host map as the kernel has it (bpftool's dump, sorted).
fn host_map(inst: &weir_runtime::ebpf::Instance, g: u64) -> Vec<String> {
    let path = inst.pin_dir().join(format!("gen-{g}")).join(HOST4);
    let o = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn ebpf_endpoints_over_capacity_write_nothing() {
    if !weir_runtime::kernel_test::may_run(
        "ebpf_endpoints_over_capacity_write_nothing",
        &["ip", "bpftool"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("ebpf-capacity").unwrap();
    let dir = work.join("bundle");
    write_bundle(&dir);
    let topo = Topology::new().expect("netns topology");
    let pid = std::process::id();
    let mut inst = weir_runtime::ebpf::Instance::new(NODE_CLIENT_IF, Some(topo.node.name()));
    inst.pin_root = PathBuf::from(format!("/sys/fs/bpf/weir-test-capacity-{pid}"));
    inst.state_root = work.join("state");
    let g = weir_runtime::ebpf::apply(&dir, &inst).unwrap().generation;
    let before = host_map(&inst, g);

    // 5,000 new hosts; the map has room for the compiled ones + 4,096.
    match endpoints::ebpf(&inst, &dir, &inventory(5_000)) {
        Err(EndpointsError::Refused(why)) => {
            // The entries the capacity check counted (batch lookups) are
            // the ones bpftool dumps.
            let held = format!("{HOST4} holds {} of", before.len());
            assert!(why.iter().any(|w| w.contains(&held)), "{why:?}")
        }
        other => panic!("an overflowing update must be refused: {other:?}"),
    }
    let after = host_map(&inst, g);
    assert_eq!(
        after.len(),
        before.len(),
        "entries written by a refused update"
    );
    assert!(after == before, "entries changed by a refused update");
    let t = Duration::from_millis(400);
    let new_web = ip("10.1.1.5");
    topo.add_client_addr(new_web).unwrap();
    assert!(
        !topo.tcp_connect(new_web, ip("10.2.0.20"), 5432, t),
        "not admitted"
    );

    // A fitting update applies, and traffic follows it.
    let r = endpoints::ebpf(&inst, &dir, &inventory(10)).unwrap();
    assert_eq!(r.changes.len(), 10);
    assert_eq!(host_map(&inst, g).len(), before.len() + 10);
    assert!(
        topo.tcp_connect(new_web, ip("10.2.0.20"), 5432, t),
        "admitted"
    );

    weir_runtime::ebpf::detach(&inst).unwrap();
    assert!(!inst.pin_dir().exists());
    assert!(
        !inst.state_dir().exists(),
        "detach removes the endpoint record too"
    );
    let _ = std::fs::remove_dir_all(&work);
}
